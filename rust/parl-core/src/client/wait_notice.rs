//! The line a client logs while actor creations wait for a vacant slot: one line per period
//! for the whole client (not one per creation), saying how many wait, for how long, and who
//! holds the slots, from the master's status.
//!
//! Pure: [`WaitNotice::line`] builds the text from counts, so it is unit-tested here; the
//! client's notice task (in `client/mod.rs`) only gathers the counts and logs the line.

use std::time::Duration;

use crate::protocol::ClusterStatus;

/// What the client knows about its waiting creations.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    /// How many creations wait for the master's grant.
    pub count: usize,
    /// How many of them are leases for tasks, not actors.
    pub leases: usize,
    /// How long the oldest has waited, and its creation timeout.
    pub oldest: Duration,
    pub oldest_timeout: Duration,
    /// Whether any waits for GPUs (a cluster is either a CPU or a GPU cluster).
    pub gpu: bool,
}

/// Everything the line says.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitNotice {
    pub waiting: Waiting,
    /// The cluster's slots as the master reported them; None if it did not answer.
    pub slots: Option<Slots>,
}

/// The cluster's slots of the kind the creations wait for.
#[derive(Debug, Clone, PartialEq)]
pub struct Slots {
    pub total: u32,
    pub used: u32,
    /// Held by this client's actors.
    pub held_here: u32,
    /// Held by other clients: ("pid P on HOST", slots), most first.
    pub others: Vec<(String, u32)>,
}

/// How many other holders the line names.
const NAMED_HOLDERS: usize = 3;

impl Slots {
    /// The slots of the kind `gpu` in `status`, and who holds them (`client_id` is this client).
    pub fn from_status(status: &ClusterStatus, gpu: bool, client_id: &str) -> Slots {
        let (total, used) = if gpu {
            (status.gpu_total(), status.gpu_used())
        } else {
            (status.cpu_total(), status.cpu_used())
        };
        let held = |c: &crate::protocol::ClientStatus| if gpu { c.gpus } else { c.cpus };
        let held_here = status.clients.iter().filter(|c| c.client_id == client_id).map(held).sum();
        let mut others: Vec<(String, u32)> = status
            .clients
            .iter()
            .filter(|c| c.client_id != client_id && held(c) > 0)
            .map(|c| (format!("pid {} on {}", c.pid, c.hostname), held(c)))
            .collect();
        others.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Slots { total, used, held_here, others }
    }
}

impl WaitNotice {
    /// The line to log.
    pub fn line(&self) -> String {
        let w = &self.waiting;
        let kind = if w.gpu { "GPU" } else { "CPU" };
        let what = match (w.leases, w.count) {
            (0, 1) => "actor creation",
            (0, _) => "actor creations",
            (1, 1) => "task lease",
            (l, c) if l == c => "task leases",
            _ => "actor creations and task leases",
        };
        let creations = format!("{} {what} wait{}", w.count, if w.count == 1 { "s" } else { "" });
        let head = format!(
            "{creations} for a vacant {kind} (the oldest for {} s of its {} s timeout)",
            w.oldest.as_secs(),
            w.oldest_timeout.as_secs()
        );
        let Some(slots) = &self.slots else {
            return format!("{head}; the master did not report who holds the {kind}s");
        };
        let plural = |n: u32| if n == 1 { format!("1 {kind}") } else { format!("{n} {kind}s") };
        if slots.total == 0 {
            return format!("{head}: the cluster has no {kind}; add a worker (xparl connect)");
        }
        if slots.held_here >= slots.total {
            return format!(
                "{head}: this process holds all {} of the cluster; release an actor or add a worker",
                plural(slots.total)
            );
        }
        if slots.used < slots.total {
            return format!(
                "{head}: {} of the cluster's {} are in use; the free ones have no warm job yet",
                slots.used,
                plural(slots.total)
            );
        }
        let mut holders = Vec::new();
        if slots.held_here > 0 {
            holders.push(format!("{} by this process", slots.held_here));
        }
        for (who, n) in slots.others.iter().take(NAMED_HOLDERS) {
            holders.push(format!("{n} by {who}"));
        }
        let unnamed = slots.others.len().saturating_sub(NAMED_HOLDERS);
        if unnamed > 0 {
            let rest: u32 = slots.others.iter().skip(NAMED_HOLDERS).map(|(_, n)| n).sum();
            holders.push(format!("{rest} by {unnamed} more clients"));
        }
        format!("{head}: all {} of the cluster are in use ({})", plural(slots.total), holders.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ClientStatus, WorkerStatus};

    fn waiting(count: usize) -> Waiting {
        Waiting {
            count,
            leases: 0,
            oldest: Duration::from_secs(12),
            oldest_timeout: Duration::from_secs(30),
            gpu: false,
        }
    }

    fn notice(count: usize, slots: Option<Slots>) -> String {
        WaitNotice { waiting: waiting(count), slots }.line()
    }

    fn slots(total: u32, used: u32, held_here: u32, others: &[(&str, u32)]) -> Option<Slots> {
        let others = others.iter().map(|(who, n)| (who.to_string(), *n)).collect();
        Some(Slots { total, used, held_here, others })
    }

    #[test]
    fn a_process_holding_every_slot_is_told_plainly() {
        assert_eq!(
            notice(8, slots(4, 4, 4, &[])),
            "8 actor creations wait for a vacant CPU (the oldest for 12 s of its 30 s timeout): \
             this process holds all 4 CPUs of the cluster; release an actor or add a worker"
        );
    }

    #[test]
    fn other_holders_are_named_most_first_and_the_rest_counted() {
        let others =
            [("pid 7 on a", 3), ("pid 8 on b", 2), ("pid 9 on c", 1), ("pid 10 on d", 1), ("pid 11 on e", 1)];
        assert_eq!(
            notice(1, slots(10, 10, 2, &others)),
            "1 actor creation waits for a vacant CPU (the oldest for 12 s of its 30 s timeout): \
             all 10 CPUs of the cluster are in use (2 by this process, 3 by pid 7 on a, 2 by pid 8 on b, \
             1 by pid 9 on c, 2 by 2 more clients)"
        );
    }

    #[test]
    fn no_slots_free_slots_and_no_status_each_say_so() {
        assert!(
            notice(2, slots(0, 0, 0, &[])).ends_with("the cluster has no CPU; add a worker (xparl connect)")
        );
        assert!(notice(2, slots(4, 3, 3, &[]))
            .ends_with("3 of the cluster's 4 CPUs are in use; the free ones have no warm job yet"));
        assert!(notice(2, None).ends_with("; the master did not report who holds the CPUs"));
        let gpu = WaitNotice { waiting: Waiting { gpu: true, ..waiting(1) }, slots: slots(1, 1, 1, &[]) };
        assert!(gpu.line().contains("this process holds all 1 GPU of the cluster"), "{}", gpu.line());
    }

    #[test]
    fn slots_come_from_the_status_by_kind_and_holder() {
        let worker = |cpus, gpus| WorkerStatus {
            worker_id: "w".into(),
            hostname: "h".into(),
            cpu_total: cpus,
            cpu_used: cpus,
            gpu_total: gpus,
            gpu_used: 0,
            jobs_ready: 0,
            starting: 0,
            hwm: 0,
        };
        let client = |id: &str, pid, cpus| ClientStatus {
            client_id: id.into(),
            hostname: "h".into(),
            pid,
            actors: cpus,
            cpus,
            gpus: 0,
        };
        let status = ClusterStatus {
            master: "m:1".into(),
            version: String::new(),
            gpu_cluster: false,
            workers: vec![worker(3, 0)],
            clients: vec![client("me", 1, 1), client("other", 2, 2), client("idle", 3, 0)],
            pending_requests: 0,
            http_address: None,
            sessions: crate::protocol::Sessions::Authenticated,
            scheme: "leastload".into(),
        };
        let slots = Slots::from_status(&status, false, "me");
        assert_eq!(slots, Slots { total: 3, used: 3, held_here: 1, others: vec![("pid 2 on h".into(), 2)] });
    }

    #[test]
    fn leases_for_tasks_are_named_as_such() {
        let line = |leases, count| {
            let notice = WaitNotice { waiting: Waiting { leases, ..waiting(count) }, slots: None };
            notice.line()
        };
        assert!(line(1, 1).starts_with("1 task lease waits for a vacant CPU"), "{}", line(1, 1));
        assert!(line(3, 3).starts_with("3 task leases wait"), "{}", line(3, 3));
        assert!(line(1, 3).starts_with("3 actor creations and task leases wait"), "{}", line(1, 3));
        assert!(line(0, 2).starts_with("2 actor creations wait"), "{}", line(0, 2));
    }
}
