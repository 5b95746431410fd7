//! The monitor's views of the core: read-only, built from the registry, the queue and the
//! [`Monitor`](super::super::monitor::Monitor) record at the time the driver passes.

use std::collections::HashMap;
use std::time::Instant;

use super::MasterCore;
use crate::master::monitor::{api, ActorRecord, Event, MAX_NAME_TEXT};
use crate::protocol::stats::truncated;
use crate::VERSION;

impl MasterCore {
    /// `GET /api/v1/cluster`.
    pub fn cluster_view(&self, now: Instant) -> api::Cluster {
        let monitor = &self.monitor;
        // (actors, leases) on each worker and of each client.
        let (mut by_worker, mut by_client) =
            (HashMap::<&str, (u32, u32)>::new(), HashMap::<&str, (u32, u32)>::new());
        for actor in monitor.actors.values() {
            let add = |counts: &mut (u32, u32)| match actor.is_lease() {
                true => counts.1 += 1,
                false => counts.0 += 1,
            };
            add(by_worker.entry(&actor.worker_id).or_default());
            add(by_client.entry(&actor.client_id).or_default());
        }
        let workers: Vec<api::Worker> = self
            .registry
            .worker_statuses()
            .into_iter()
            .map(|status| {
                let entry = self.registry.worker(&status.worker_id);
                let record = monitor.workers.get(&status.worker_id);
                let usage = record.map(|r| r.usage).unwrap_or_default();
                let (on_worker, leased) =
                    by_worker.get(status.worker_id.as_str()).copied().unwrap_or_default();
                api::Worker {
                    pid: entry.map_or(0, |w| w.hello.pid),
                    gpus_free: self.registry.free_gpus(&status.worker_id),
                    actors: on_worker,
                    leases: leased,
                    memory_total: usage.memory_total,
                    memory_used: usage.memory_used,
                    load1: usage.load1,
                    joined_at: monitor.unix(record.map_or(monitor.started, |r| r.joined_at)),
                    worker_id: status.worker_id,
                    hostname: status.hostname,
                    cpu_total: status.cpu_total,
                    cpu_used: status.cpu_used,
                    gpu_total: status.gpu_total,
                    gpu_used: status.gpu_used,
                    jobs_ready: status.jobs_ready,
                    starting: status.starting,
                    hwm: status.hwm,
                }
            })
            .collect();
        let clients: Vec<api::Client> = self
            .registry
            .client_statuses()
            .into_iter()
            .map(|status| {
                let record = monitor.clients.get(&status.client_id);
                let connected = record.map_or(monitor.started, |r| r.connected_at);
                let stats = record.map(|r| r.stats).unwrap_or_default();
                let (held, leased) = by_client.get(status.client_id.as_str()).copied().unwrap_or_default();
                let script = self
                    .registry
                    .client(&status.client_id)
                    .map(|c| truncated(&c.hello.script, MAX_NAME_TEXT));
                api::Client {
                    script: script.unwrap_or_default(),
                    connected_at: monitor.unix(connected),
                    uptime_s: now.saturating_duration_since(connected).as_secs_f64(),
                    actors: held,
                    leases: leased,
                    calls: stats.calls,
                    tasks_submitted: stats.tasks_submitted,
                    tasks_done: stats.tasks_done,
                    tasks_failed: stats.tasks_failed,
                    tasks_queued: stats.tasks_queued,
                    client_id: status.client_id,
                    hostname: status.hostname,
                    pid: status.pid,
                    cpus: status.cpus,
                    gpus: status.gpus,
                }
            })
            .collect();
        let mut queue: Vec<api::Waiting> = self
            .queue
            .iter()
            .map(|pending| {
                let request = &pending.request;
                api::Waiting {
                    client_id: pending.client.clone(),
                    request_id: request.request_id,
                    class_name: request.class_name.clone(),
                    n_cpu: request.n_cpu,
                    n_gpu: request.n_gpu,
                    resource: resource(request.n_gpu),
                    on_worker: request.on_worker.clone(),
                    since: monitor.unix(pending.since),
                    waited_s: now.saturating_duration_since(pending.since).as_secs_f64(),
                }
            })
            .collect();
        queue.sort_by(|a, b| a.since.total_cmp(&b.since));
        let totals = api::Totals {
            workers: workers.len() as u32,
            clients: clients.len() as u32,
            cpu_total: workers.iter().map(|w| w.cpu_total).sum(),
            cpu_used: workers.iter().map(|w| w.cpu_used).sum(),
            gpu_total: workers.iter().map(|w| w.gpu_total).sum(),
            gpu_used: workers.iter().map(|w| w.gpu_used).sum(),
            actors: workers.iter().map(|w| w.actors).sum(),
            leases: workers.iter().map(|w| w.leases).sum(),
            waiting: queue.len() as u32,
            calls: monitor.totals.calls,
            tasks_done: monitor.totals.tasks_done,
            tasks_failed: monitor.totals.tasks_failed,
            deaths: monitor.deaths(),
        };
        api::Cluster {
            api_version: api::API_VERSION,
            master: self.config.address.clone(),
            version: VERSION.to_string(),
            now: monitor.unix(now),
            started_at: monitor.started_unix,
            uptime_s: now.saturating_duration_since(monitor.started).as_secs_f64(),
            scheme: self.scheduler.name().to_string(),
            sessions: self.config.sessions,
            gpu_cluster: self.config.gpu_cluster,
            totals,
            workers,
            clients,
            queue,
        }
    }

    /// `GET /api/v1/actors`: the live jobs granted to clients, then the ended ones, newest
    /// first.
    pub fn actors_view(&self, now: Instant) -> api::Actors {
        let mut live: Vec<&ActorRecord> = self.monitor.actors.values().collect();
        live.sort_by(|a, b| a.granted_at.cmp(&b.granted_at).then_with(|| a.job_id.cmp(&b.job_id)));
        let ended = self.monitor.ended.iter().rev();
        let actors = live.into_iter().chain(ended).map(|record| self.actor_of(record, now)).collect();
        api::Actors { api_version: api::API_VERSION, actors }
    }

    /// `GET /api/v1/actors/{job_id}`.
    pub fn actor_view(&self, job_id: &str, now: Instant) -> Option<api::Actor> {
        let record = self.monitor.actors.get(job_id);
        let record = record.or_else(|| self.monitor.ended.iter().rev().find(|a| a.job_id == job_id))?;
        Some(self.actor_of(record, now))
    }

    fn actor_of(&self, record: &ActorRecord, now: Instant) -> api::Actor {
        let monitor = &self.monitor;
        let state = match (record.ended_at, record.started) {
            (Some(_), _) => "ended",
            (None, true) => "running",
            (None, false) => "starting",
        };
        let until = record.ended_at.unwrap_or(now);
        api::Actor {
            job_id: record.job_id.clone(),
            class_name: record.class_name.clone(),
            kind: if record.is_lease() { "lease" } else { "actor" }.into(),
            state: state.into(),
            client_id: record.client_id.clone(),
            worker_id: record.worker_id.clone(),
            hostname: record.hostname.clone(),
            pid: record.pid,
            gpus: record.gpus.clone(),
            started_at: monitor.unix(record.granted_at),
            age_s: until.saturating_duration_since(record.granted_at).as_secs_f64(),
            calls: record.calls,
            failures: record.failures,
            memory_bytes: record.memory_bytes.filter(|_| record.ended_at.is_none()),
            last_error: record.last_error.clone(),
            ended_at: record.ended_at.map(|at| monitor.unix(at)),
            cause: record.cause.map(str::to_string),
            reason: record.reason.clone(),
        }
    }

    /// `GET /api/v1/events?after=SEQ`.
    pub fn events_view(&self, after: u64) -> api::Events {
        let monitor = &self.monitor;
        let event_of = |event: &Event| api::Event {
            seq: event.seq,
            time: monitor.unix(event.at),
            kind: event.kind.into(),
            cause: event.cause.map(str::to_string),
            job_id: event.job_id.clone(),
            worker_id: event.worker_id.clone(),
            client_id: event.client_id.clone(),
            message: event.message.clone(),
        };
        let events: Vec<api::Event> = monitor.events.iter().filter(|e| e.seq > after).map(event_of).collect();
        let next = monitor.events.back().map_or(after, |e| e.seq.max(after));
        api::Events { api_version: api::API_VERSION, next, events }
    }

    /// `GET /api/v1/history`.
    pub fn history_view(&mut self, now: Instant) -> api::History {
        let end = self.monitor.unix(now);
        self.monitor.history.view(now, end)
    }

    /// The counters behind `/metrics` that the cluster view does not carry.
    pub fn monitor_totals(&self) -> &crate::master::monitor::Totals {
        &self.monitor.totals
    }
}

/// The line of the queue a request waits in: "cpu" or "gpu:N".
fn resource(n_gpu: u32) -> String {
    match n_gpu {
        0 => "cpu".into(),
        n => format!("gpu:{n}"),
    }
}
