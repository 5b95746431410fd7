//! What jobs, workers and clients report now and then for the monitor: counters and usage,
//! never decisions. The master only records them (see [`crate::master::monitor`]).

use serde::{Deserialize, Serialize};

use super::JobId;

/// The longest error text a report carries; longer ones are cut (a report is not a log).
pub const MAX_ERROR_TEXT: usize = 500;

/// A job telling its worker how its actor is doing: at most once a second while it changes,
/// and at once when an error ends the actor.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct JobStats {
    pub job_id: JobId,
    /// Requests answered, failed ones included.
    pub calls: u64,
    /// Requests whose answer was an error.
    pub failures: u64,
    /// The last error, "module.Type: message" (at most [`MAX_ERROR_TEXT`] bytes).
    pub last_error: Option<String>,
    /// The actor ends because of that error (an uncaught exception ends an actor, as in PARL).
    pub ending_on_error: bool,
}

/// One job in a [`WorkerStats`].
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct JobUsage {
    pub job_id: JobId,
    /// Resident memory of the job and all its descendants; None if it could not be read.
    pub memory_bytes: Option<u64>,
    pub calls: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

/// A worker's report to the master, every couple of seconds: its machine and its jobs.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct WorkerStats {
    pub memory_total: u64,
    pub memory_used: u64,
    /// The one-minute load average.
    pub load1: f64,
    /// The jobs it runs that have announced themselves.
    pub jobs: Vec<JobUsage>,
}

/// A client's counters since it started, sent to the master at most once a second while they
/// change.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientStats {
    /// Actor calls answered (methods, attribute reads and writes).
    pub calls: u64,
    pub tasks_submitted: u64,
    pub tasks_done: u64,
    pub tasks_failed: u64,
    /// Tasks submitted and not finished yet.
    pub tasks_queued: u64,
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub fn truncated(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(truncated("short", 10), "short");
        assert_eq!(truncated("abcdef", 3), "abc…");
        // "é" is two bytes: a cut inside it moves back before it.
        assert_eq!(truncated("aé", 2), "a…");
    }
}
