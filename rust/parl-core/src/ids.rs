//! Identifiers and host facts.

use rand::Rng;

/// A short random id with a prefix, e.g. "w-3f9a1c0b". Random (not a counter) so that ids
/// chosen by different processes never collide and survive reconnects.
pub fn new_id(prefix: &str) -> String {
    let n: u32 = rand::rng().random();
    format!("{prefix}-{n:08x}")
}

/// This machine's host name, or "unknown".
pub fn hostname() -> String {
    hostname::get().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "unknown".into())
}

/// `address` ("host:port" or "tcp://host:port") with its host replaced by `host`: how a
/// socket bound on one interface is published under another name.
pub fn with_host(address: &str, host: &str) -> String {
    let (scheme, rest) = match address.strip_prefix("tcp://") {
        Some(rest) => ("tcp://", rest),
        None => ("", address),
    };
    let port = rest.rsplit_once(':').map_or("", |(_, port)| port);
    format!("{scheme}{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_host_keeps_the_scheme_and_port() {
        assert_eq!(with_host("tcp://0.0.0.0:5000", "10.0.0.7"), "tcp://10.0.0.7:5000");
        assert_eq!(with_host("0.0.0.0:81", "gw.example"), "gw.example:81");
    }
}
