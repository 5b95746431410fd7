//! The actor's counters for the monitor: kept by the host language's thread as it answers
//! (atomics and a short lock, no I/O), sent to the worker by the job's loop at most once a
//! second while they change, and at once when an error ends the actor (the worker classifies
//! the job's exit by it).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::connection::Outbox;
use crate::protocol::stats::{truncated, MAX_ERROR_TEXT};
use crate::protocol::{JobStats, Message, RemoteFailure};

pub(crate) struct Counters {
    worker: Outbox,
    job_id: String,
    calls: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
    ending_on_error: AtomicBool,
    /// The number of calls last sent: nothing is sent while it is unchanged.
    sent_calls: AtomicU64,
}

impl Counters {
    pub(crate) fn new(worker: Outbox, job_id: String) -> Counters {
        Counters {
            worker,
            job_id,
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
            ending_on_error: AtomicBool::new(false),
            sent_calls: AtomicU64::new(0),
        }
    }

    /// A request was answered, with `failure` if it raised.
    pub(crate) fn answered(&self, failure: Option<&RemoteFailure>) {
        if let Some(failure) = failure {
            let text = format!("{}: {}", failure.exc_type, failure.message);
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(truncated(&text, MAX_ERROR_TEXT));
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.calls.fetch_add(1, Ordering::Release);
    }

    /// The last error ends the actor: the worker hears it now, before the process exits.
    pub(crate) fn ending_on_error(&self) {
        self.ending_on_error.store(true, Ordering::Release);
        self.send();
    }

    /// Sends the counters if calls were answered since they were last sent.
    pub(crate) fn send_if_changed(&self) {
        if self.calls.load(Ordering::Acquire) != self.sent_calls.load(Ordering::Relaxed) {
            self.send();
        }
    }

    fn send(&self) {
        let stats = self.snapshot();
        self.sent_calls.store(stats.calls, Ordering::Relaxed);
        self.worker.post(&Message::JobStats(stats));
    }

    fn snapshot(&self) -> JobStats {
        JobStats {
            job_id: self.job_id.clone(),
            calls: self.calls.load(Ordering::Acquire),
            failures: self.failures.load(Ordering::Relaxed),
            last_error: self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            ending_on_error: self.ending_on_error.load(Ordering::Acquire),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FailureKind;

    #[test]
    fn failures_count_and_keep_the_last_error_cut_short() {
        crate::fuzz_support::block_on(async { failures_count() });
    }

    fn failures_count() {
        let (worker, _wire) = crate::fuzz_support::socket_task("job->worker");
        let counters = Counters::new(worker, "j".into());
        counters.answered(None);
        let failure = RemoteFailure {
            kind: FailureKind::User,
            exc_type: "builtins.ValueError".into(),
            message: "x".repeat(2 * MAX_ERROR_TEXT),
            traceback: String::new(),
        };
        counters.answered(Some(&failure));
        let stats = counters.snapshot();
        assert_eq!((stats.calls, stats.failures, stats.ending_on_error), (2, 1, false));
        let error = stats.last_error.unwrap();
        assert!(
            error.starts_with("builtins.ValueError: xxx") && error.len() <= MAX_ERROR_TEXT + 3,
            "{error}"
        );
    }
}
