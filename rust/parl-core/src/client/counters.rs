//! The client's counters of calls and tasks, for the monitor: bumped where replies and task
//! outcomes arrive (atomics, no I/O), and sent to the master at most once a second while
//! they change.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Weak;
use std::time::Duration;

use crate::protocol::{ClientStats, Message};

/// How often the counters are sent to the master, while they change.
const REPORT_PERIOD: Duration = Duration::from_secs(1);

#[derive(Default, Debug)]
pub struct ClientCounters {
    calls: AtomicU64,
    tasks_submitted: AtomicU64,
    tasks_done: AtomicU64,
    tasks_failed: AtomicU64,
}

impl ClientCounters {
    /// An actor call was answered (a task's run on a lease is not a call).
    pub fn call_answered(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    pub fn task_submitted(&self) {
        self.tasks_submitted.fetch_add(1, Ordering::Relaxed);
    }

    /// A task finished: its result came, or it failed for good (cancellations included).
    pub fn task_finished(&self, failed: bool) {
        let counter = if failed { &self.tasks_failed } else { &self.tasks_done };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ClientStats {
        let done = self.tasks_done.load(Ordering::Relaxed);
        let failed = self.tasks_failed.load(Ordering::Relaxed);
        let submitted = self.tasks_submitted.load(Ordering::Relaxed);
        ClientStats {
            calls: self.calls.load(Ordering::Relaxed),
            tasks_submitted: submitted,
            tasks_done: done,
            tasks_failed: failed,
            tasks_queued: submitted.saturating_sub(done + failed),
        }
    }
}

/// Sends the client's counters to the master while they change, until the client is gone.
pub(super) async fn report(inner: Weak<super::ClientInner>) {
    let mut sent = ClientStats::default();
    loop {
        tokio::time::sleep(REPORT_PERIOD).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.shutdown.is_cancelled() {
            return;
        }
        let stats = inner.counters.snapshot();
        if stats != sent && inner.master.is_connected() {
            inner.master.send(Message::ClientStats(stats));
            sent = stats;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_tasks_are_the_submitted_ones_not_finished() {
        let counters = ClientCounters::default();
        for _ in 0..5 {
            counters.task_submitted();
        }
        counters.task_finished(false);
        counters.task_finished(true);
        counters.call_answered();
        let stats = counters.snapshot();
        assert_eq!(
            stats,
            ClientStats { calls: 1, tasks_submitted: 5, tasks_done: 1, tasks_failed: 1, tasks_queued: 3 }
        );
    }
}
