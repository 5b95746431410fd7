//! `/metrics`: the cluster view's numbers in the Prometheus text format (version 0.0.4),
//! encoded by the `prometheus` crate. A fresh registry per scrape: the numbers are the
//! master's own counters, read at that moment, not instruments updated along the way.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::{api, Totals};

/// The content type of the answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric of `cluster` and `totals`, as Prometheus text.
pub fn encode(cluster: &api::Cluster, totals: &Totals) -> prometheus::Result<String> {
    let registry = Registry::new();
    let register = |collector: Box<dyn Collector>| registry.register(collector);
    let t = &cluster.totals;

    let info = IntGaugeVec::new(
        Opts::new("parl_rs_info", "The master: its version, scheme and address (always 1)."),
        &["version", "scheme", "master"],
    )?;
    info.with_label_values(&[&cluster.version, &cluster.scheme, &cluster.master]).set(1);
    register(Box::new(info))?;
    let uptime = Gauge::new("parl_rs_uptime_seconds", "Seconds since the master started.")?;
    uptime.set(cluster.uptime_s);
    register(Box::new(uptime))?;
    for (name, help, value) in [
        ("parl_rs_workers", "Workers connected.", t.workers),
        ("parl_rs_clients", "Clients connected.", t.clients),
        ("parl_rs_actors", "Actors (jobs granted to clients for an actor).", t.actors),
        ("parl_rs_leases", "Jobs leased to clients for their tasks.", t.leases),
    ] {
        let gauge = IntGauge::new(name, help)?;
        gauge.set(i64::from(value));
        register(Box::new(gauge))?;
    }
    for (name, help, used, total) in [
        ("parl_rs_cpu_slots", "CPU slots of the workers, used or vacant.", t.cpu_used, t.cpu_total),
        ("parl_rs_gpu_slots", "GPUs of the workers, used or vacant.", t.gpu_used, t.gpu_total),
    ] {
        let slots = IntGaugeVec::new(Opts::new(name, help), &["state"])?;
        slots.with_label_values(&["used"]).set(i64::from(used));
        slots.with_label_values(&["vacant"]).set(i64::from(total.saturating_sub(used)));
        register(Box::new(slots))?;
    }
    let queue = IntGaugeVec::new(
        Opts::new("parl_rs_queue_length", "Requests waiting for a job, by the resource they wait for."),
        &["resource"],
    )?;
    queue.with_label_values(&["cpu"]).set(0);
    for waiting in &cluster.queue {
        queue.with_label_values(&[&waiting.resource]).inc();
    }
    register(Box::new(queue))?;

    let calls = IntCounter::new("parl_rs_calls_total", "Actor calls answered, as the clients report them.")?;
    calls.inc_by(totals.calls);
    register(Box::new(calls))?;
    let tasks =
        IntCounterVec::new(Opts::new("parl_rs_tasks_total", "Tasks finished, by outcome."), &["outcome"])?;
    tasks.with_label_values(&["done"]).inc_by(totals.tasks_done);
    tasks.with_label_values(&["failed"]).inc_by(totals.tasks_failed);
    register(Box::new(tasks))?;
    let deaths = IntCounterVec::new(
        Opts::new("parl_rs_job_deaths_total", "Jobs that ended without being released, by cause."),
        &["cause"],
    )?;
    for cause in ["exception", "memory_limit", "signal", "exited", "worker_lost"] {
        deaths.with_label_values(&[cause]).inc_by(totals.deaths.get(cause).copied().unwrap_or(0));
    }
    register(Box::new(deaths))?;
    let missed = IntCounterVec::new(
        Opts::new("parl_rs_heartbeats_missed_total", "Peers dropped because their heartbeats stopped."),
        &["peer"],
    )?;
    missed.with_label_values(&["worker"]).inc_by(totals.silent_workers);
    missed.with_label_values(&["client"]).inc_by(totals.silent_clients);
    register(Box::new(missed))?;

    let memory = GaugeVec::new(
        Opts::new("parl_rs_worker_memory_bytes", "Memory of each worker's machine, used or total."),
        &["worker", "hostname", "state"],
    )?;
    let load = GaugeVec::new(
        Opts::new("parl_rs_worker_load1", "One-minute load average of each worker's machine."),
        &["worker", "hostname"],
    )?;
    for worker in &cluster.workers {
        let (id, host) = (worker.worker_id.as_str(), worker.hostname.as_str());
        if let (Some(used), Some(total)) = (worker.memory_used, worker.memory_total) {
            memory.with_label_values(&[id, host, "used"]).set(used as f64);
            memory.with_label_values(&[id, host, "total"]).set(total as f64);
        }
        if let Some(load1) = worker.load1 {
            load.with_label_values(&[id, host]).set(load1);
        }
    }
    register(Box::new(memory))?;
    register(Box::new(load))?;

    let mut text = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut text)?;
    String::from_utf8(text).map_err(|e| prometheus::Error::Msg(e.to_string()))
}
