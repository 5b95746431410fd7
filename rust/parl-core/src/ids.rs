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
