//! The web monitor's record of the cluster: what happened (events), what each actor and
//! client did (counters), and the last hour (history). The master core feeds it as it
//! handles events; it decides nothing. The views the HTTP API serves are built from it and
//! from the core's registry and queue ([`super::core::MasterCore::cluster_view`] and the
//! others); `/metrics` from the same numbers ([`metrics`]); the page is [`page`].

pub mod api;
pub mod history;
pub mod metrics;
pub mod page;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Instant;

use crate::protocol::stats::{truncated, MAX_ERROR_TEXT};
use crate::protocol::{ClientStats, JobGrant, JobId, WorkerStats, LEASE_CLASS};

use history::History;

/// Events kept: the oldest go first.
pub const EVENTS_KEPT: usize = 1_000;
/// Ended actors kept for the actors' table.
pub const ENDED_KEPT: usize = 200;
/// The longest class name or script the monitor keeps and shows (peers' text, cut short:
/// 20,000 records or 1,000 events must not hold megabytes each).
pub const MAX_NAME_TEXT: usize = 200;
/// Worker ids remembered to tell a rejoin from a first join.
const SEEN_WORKERS_KEPT: usize = 10_000;

/// One granted job, live or ended.
#[derive(Debug, Clone)]
pub struct ActorRecord {
    pub job_id: JobId,
    pub class_name: String,
    pub client_id: String,
    pub worker_id: String,
    pub hostname: String,
    pub pid: u32,
    pub gpus: Vec<String>,
    pub granted_at: Instant,
    pub started: bool,
    pub calls: u64,
    pub failures: u64,
    pub memory_bytes: Option<u64>,
    pub last_error: Option<String>,
    pub ended_at: Option<Instant>,
    pub cause: Option<&'static str>,
    pub reason: Option<String>,
}

impl ActorRecord {
    pub fn is_lease(&self) -> bool {
        self.class_name == LEASE_CLASS
    }
}

/// A worker's last report.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerUsage {
    pub memory_total: Option<u64>,
    pub memory_used: Option<u64>,
    pub load1: Option<f64>,
}

#[derive(Debug, Clone, Copy)]
pub struct WorkerRecord {
    pub joined_at: Instant,
    pub usage: WorkerUsage,
}

#[derive(Debug, Clone, Copy)]
pub struct ClientRecord {
    pub connected_at: Instant,
    pub stats: ClientStats,
}

/// Counters since the master started.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub calls: u64,
    pub tasks_done: u64,
    pub tasks_failed: u64,
    /// Jobs that ended without being released, by cause.
    pub deaths: BTreeMap<&'static str, u64>,
    /// Peers dropped because their heartbeats stopped: (workers, clients).
    pub silent_workers: u64,
    pub silent_clients: u64,
}

/// One happening, with the time it happened.
#[derive(Debug, Clone)]
pub struct Event {
    pub seq: u64,
    pub at: Instant,
    pub kind: &'static str,
    pub cause: Option<&'static str>,
    pub job_id: Option<String>,
    pub worker_id: Option<String>,
    pub client_id: Option<String>,
    pub message: String,
}

/// A job granted to a client.
struct Granted<'a> {
    grant: &'a JobGrant,
    client_id: &'a str,
    class_name: &'a str,
    started: bool,
}

/// Who an event is about.
#[derive(Debug, Default)]
pub struct About<'a> {
    pub cause: Option<&'static str>,
    pub job_id: Option<&'a str>,
    pub worker_id: Option<&'a str>,
    pub client_id: Option<&'a str>,
}

#[derive(Debug)]
pub struct Monitor {
    pub started: Instant,
    /// Unix seconds at `started` (the driver's wall clock; the core reads none).
    pub started_unix: f64,
    pub actors: HashMap<JobId, ActorRecord>,
    /// Newest last.
    pub ended: VecDeque<ActorRecord>,
    pub events: VecDeque<Event>,
    next_seq: u64,
    pub totals: Totals,
    pub workers: HashMap<String, WorkerRecord>,
    pub clients: HashMap<String, ClientRecord>,
    seen_workers: HashSet<String>,
    seen_order: VecDeque<String>,
    pub history: History,
}

impl Monitor {
    pub fn new(now: Instant, started_unix: f64) -> Monitor {
        Monitor {
            started: now,
            started_unix,
            actors: HashMap::new(),
            ended: VecDeque::new(),
            events: VecDeque::new(),
            next_seq: 1,
            totals: Totals::default(),
            workers: HashMap::new(),
            clients: HashMap::new(),
            seen_workers: HashSet::new(),
            seen_order: VecDeque::new(),
            history: History::new(now),
        }
    }

    /// Unix seconds at `at`.
    pub fn unix(&self, at: Instant) -> f64 {
        self.started_unix + at.saturating_duration_since(self.started).as_secs_f64()
    }

    pub fn record(&mut self, now: Instant, kind: &'static str, about: About<'_>, message: String) {
        let own = |s: Option<&str>| s.map(str::to_string);
        self.events.push_back(Event {
            seq: self.next_seq,
            at: now,
            kind,
            cause: about.cause,
            job_id: own(about.job_id),
            worker_id: own(about.worker_id),
            client_id: own(about.client_id),
            // Built from peers' text (a refusal quotes a class name): kept short.
            message: truncated(&message, 4 * MAX_NAME_TEXT),
        });
        self.next_seq += 1;
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
    }

    pub fn granted(&mut self, now: Instant, grant: &JobGrant, client_id: &str, class_name: &str) {
        let job = Granted { grant, client_id, class_name, started: false };
        self.adopt(now, job);
    }

    /// A job that served an actor before the master restarted (its worker says so).
    pub fn announced_busy(&mut self, now: Instant, grant: &JobGrant, client_id: &str) {
        let job =
            Granted { grant, client_id, class_name: "(granted before a master restart)", started: true };
        self.adopt(now, job);
    }

    fn adopt(&mut self, now: Instant, job: Granted<'_>) {
        let grant = job.grant;
        let record = ActorRecord {
            job_id: grant.job_id.clone(),
            class_name: truncated(job.class_name, MAX_NAME_TEXT),
            client_id: job.client_id.to_string(),
            worker_id: grant.worker_id.clone(),
            hostname: grant.hostname.clone(),
            pid: grant.pid,
            gpus: grant.gpus.clone(),
            granted_at: now,
            started: job.started,
            calls: 0,
            failures: 0,
            memory_bytes: None,
            last_error: None,
            ended_at: None,
            cause: None,
            reason: None,
        };
        self.actors.insert(grant.job_id.clone(), record);
    }

    pub fn actor_started(&mut self, job_id: &str) {
        if let Some(actor) = self.actors.get_mut(job_id) {
            actor.started = true;
        }
    }

    /// A job's counters as it last said them (they only grow: an older report is ignored).
    pub fn last_counts(&mut self, job_id: &str, calls: u64, failures: u64) {
        if let Some(actor) = self.actors.get_mut(job_id) {
            actor.calls = actor.calls.max(calls);
            actor.failures = actor.failures.max(failures.min(calls));
        }
    }

    /// A granted job ended: released on purpose, or died of `cause` (told in `reason`).
    pub fn job_ended(&mut self, now: Instant, job_id: &str, cause: &'static str, reason: String) {
        let Some(mut actor) = self.actors.remove(job_id) else { return };
        if cause != "released" {
            *self.totals.deaths.entry(cause).or_default() += 1;
            self.history.count(now, |point| point.deaths += 1);
            let about = About {
                cause: Some(cause),
                job_id: Some(job_id),
                worker_id: Some(&actor.worker_id),
                client_id: Some(&actor.client_id),
            };
            let message = format!("{} {job_id}: {reason}", actor.class_name);
            self.record(now, "job_died", about, message);
        }
        actor.ended_at = Some(now);
        actor.cause = Some(cause);
        actor.reason = Some(reason);
        self.ended.push_back(actor);
        while self.ended.len() > ENDED_KEPT {
            self.ended.pop_front();
        }
    }

    /// Every job still recorded on a worker that is gone ended with it.
    pub fn end_jobs_of(&mut self, now: Instant, worker_id: &str, reason: &str) {
        let mut gone: Vec<JobId> =
            self.actors.values().filter(|a| a.worker_id == worker_id).map(|a| a.job_id.clone()).collect();
        gone.sort();
        for job_id in gone {
            self.job_ended(now, &job_id, "worker_lost", reason.to_string());
        }
    }

    pub fn worker_joined(&mut self, now: Instant, worker_id: &str, hostname: &str, cpus: u32, gpus: usize) {
        let kind = if self.seen_workers.contains(worker_id) { "worker_rejoined" } else { "worker_joined" };
        if self.seen_workers.insert(worker_id.to_string()) {
            self.seen_order.push_back(worker_id.to_string());
            if self.seen_order.len() > SEEN_WORKERS_KEPT {
                let oldest = self.seen_order.pop_front().expect("not empty");
                self.seen_workers.remove(&oldest);
            }
        }
        let record = WorkerRecord { joined_at: now, usage: WorkerUsage::default() };
        self.workers.insert(worker_id.to_string(), record);
        let about = About { worker_id: Some(worker_id), ..About::default() };
        let message = format!("worker {worker_id} on {hostname}: {cpus} CPUs, {gpus} GPUs");
        self.record(now, kind, about, message);
    }

    /// A worker is gone: it said goodbye (`silent` false, `why` None), its connection closed,
    /// or its heartbeats stopped (`silent`).
    pub fn worker_gone(
        &mut self,
        now: Instant,
        worker_id: &str,
        hostname: &str,
        why: Option<&str>,
        silent: bool,
    ) {
        self.workers.remove(worker_id);
        if silent {
            self.totals.silent_workers += 1;
        }
        let (kind, cause) = match (why, silent) {
            (None, _) => ("worker_left", None),
            (Some(_), true) => ("worker_lost", Some("heartbeat")),
            (Some(_), false) => ("worker_lost", Some("disconnected")),
        };
        let about = About { cause, worker_id: Some(worker_id), ..About::default() };
        let message = match why {
            Some(why) => format!("worker {worker_id} on {hostname} lost: {why}"),
            None => format!("worker {worker_id} on {hostname} left"),
        };
        self.record(now, kind, about, message);
    }

    pub fn client_joined(&mut self, now: Instant, client_id: &str, hostname: &str, pid: u32, script: &str) {
        let record = ClientRecord { connected_at: now, stats: ClientStats::default() };
        self.clients.insert(client_id.to_string(), record);
        let about = About { client_id: Some(client_id), ..About::default() };
        let script = truncated(script, MAX_NAME_TEXT);
        let message = format!("client {client_id} ({script}, pid {pid} on {hostname}) connected");
        self.record(now, "client_joined", about, message);
    }

    pub fn client_gone(&mut self, now: Instant, client_id: &str, why: &str, departed: bool, silent: bool) {
        self.clients.remove(client_id);
        if silent {
            self.totals.silent_clients += 1;
        }
        let kind = if departed { "client_left" } else { "client_lost" };
        let about = About { client_id: Some(client_id), ..About::default() };
        self.record(now, kind, about, format!("client {client_id} left: {why}"));
    }

    /// A worker's report: its machine's usage, and its jobs' (only jobs granted on that worker).
    pub fn worker_stats(&mut self, worker_id: &str, stats: WorkerStats) {
        let Some(worker) = self.workers.get_mut(worker_id) else { return };
        worker.usage = WorkerUsage {
            memory_total: Some(stats.memory_total),
            memory_used: Some(stats.memory_used.min(stats.memory_total)),
            load1: Some(stats.load1).filter(|load| load.is_finite() && *load >= 0.0),
        };
        for job in stats.jobs {
            let Some(actor) = self.actors.get_mut(&job.job_id).filter(|a| a.worker_id == worker_id) else {
                continue;
            };
            actor.calls = job.calls;
            actor.failures = job.failures.min(job.calls);
            actor.memory_bytes = job.memory_bytes;
            actor.last_error = job.last_error.map(|error| truncated(&error, MAX_ERROR_TEXT));
        }
    }

    /// A client's counters: what grew since its last report is added to the totals.
    pub fn client_stats(&mut self, now: Instant, client_id: &str, stats: ClientStats) {
        let Some(client) = self.clients.get_mut(client_id) else { return };
        let before = std::mem::replace(&mut client.stats, stats);
        let grown = |now: u64, then: u64| now.saturating_sub(then);
        let calls = grown(stats.calls, before.calls);
        let done = grown(stats.tasks_done, before.tasks_done);
        let failed = grown(stats.tasks_failed, before.tasks_failed);
        self.totals.calls = self.totals.calls.saturating_add(calls);
        self.totals.tasks_done = self.totals.tasks_done.saturating_add(done);
        self.totals.tasks_failed = self.totals.tasks_failed.saturating_add(failed);
        self.history.count(now, |point| {
            point.calls = point.calls.saturating_add(calls);
            point.tasks_done = point.tasks_done.saturating_add(done);
            point.tasks_failed = point.tasks_failed.saturating_add(failed);
        });
    }

    pub fn deaths(&self) -> u64 {
        self.totals.deaths.values().sum()
    }
}
