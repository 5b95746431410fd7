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

/// What this process runs, for the monitor: the script of a Python interpreter ("train.py",
/// "-m pkg.main", "-c"), else the program's own file name.
pub fn program() -> String {
    program_of(&std::env::args().collect::<Vec<_>>())
}

fn program_of(args: &[String]) -> String {
    let base = |path: &str| path.rsplit('/').next().unwrap_or(path).to_string();
    let Some(first) = args.first() else { return "unknown".into() };
    if !base(first).starts_with("python") {
        return base(first);
    }
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "-m" => return format!("-m {}", rest.next().map_or("", String::as_str)),
            "-c" => return "-c".into(),
            // Options that take a value.
            "-W" | "-X" => {
                rest.next();
            }
            option if option.starts_with('-') => {}
            script => return base(script),
        }
    }
    base(first)
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
    fn the_program_is_the_script_of_a_python_interpreter() {
        let of = |args: &[&str]| program_of(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        assert_eq!(
            of(&["/usr/bin/python3", "-u", "-X", "dev", "/home/me/train.py", "--lr", "3"]),
            "train.py"
        );
        assert_eq!(of(&["python3.11", "-m", "pkg.main"]), "-m pkg.main");
        assert_eq!(of(&["python", "-c", "print(1)"]), "-c");
        assert_eq!(of(&["python"]), "python");
        assert_eq!(of(&["/opt/bin/native_client", "x"]), "native_client");
        assert_eq!(of(&[]), "unknown");
    }

    #[test]
    fn with_host_keeps_the_scheme_and_port() {
        assert_eq!(with_host("tcp://0.0.0.0:5000", "10.0.0.7"), "tcp://10.0.0.7:5000");
        assert_eq!(with_host("0.0.0.0:81", "gw.example"), "gw.example:81");
    }
}
