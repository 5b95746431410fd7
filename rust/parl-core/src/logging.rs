//! Logging setup and a throttle for messages a hostile peer could trigger at will.

use std::time::{Duration, Instant};

/// Installs a `tracing` subscriber writing to stderr, filtered by `PARL_RS_LOG` (or the given
/// default, e.g. "warn" in user processes, "info" in master and worker processes). Calling it
/// again is harmless.
pub fn init(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PARL_RS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: most of these lines end up in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Lets a log line through at most once per period and counts what it suppressed, so that a
/// flood of garbage cannot flood the log.
pub struct Throttle {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub fn new(period: Duration) -> Throttle {
        Throttle { period, last: None, suppressed: 0 }
    }

    /// Some(number suppressed since the last line) if a line may be logged now.
    pub fn allow(&mut self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    /// [`Throttle::allow`] at the time `now` (for code that is given the time).
    pub fn allow_at(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.period => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_lets_one_line_through_per_period() {
        let mut t = Throttle::new(Duration::from_secs(60));
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        t.last = Some(Instant::now() - Duration::from_secs(61));
        assert_eq!(t.allow(), Some(2));
    }
}
