//! The monitor's JSON API, version 1 (`/api/v1/...`): the answers' types, one per endpoint.
//! Documented in `docs/monitor-api.md`. Versioned apart from the wire protocol: fields are
//! only ever added here; removing or redefining one means `/api/v2/`.

use serde::{Deserialize, Serialize};

/// Carried by every answer as `api_version`.
pub const API_VERSION: u32 = 1;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Cluster {
    pub api_version: u32,
    pub master: String,
    pub version: String,
    pub now: f64,
    pub started_at: f64,
    pub uptime_s: f64,
    pub scheme: String,
    pub sessions: crate::protocol::Sessions,
    pub gpu_cluster: bool,
    pub totals: Totals,
    pub workers: Vec<Worker>,
    pub clients: Vec<Client>,
    pub queue: Vec<Waiting>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Totals {
    pub workers: u32,
    pub clients: u32,
    pub cpu_total: u32,
    pub cpu_used: u32,
    pub gpu_total: u32,
    pub gpu_used: u32,
    pub actors: u32,
    pub leases: u32,
    pub waiting: u32,
    pub calls: u64,
    pub tasks_done: u64,
    pub tasks_failed: u64,
    pub deaths: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Worker {
    pub worker_id: String,
    pub hostname: String,
    pub pid: u32,
    pub cpu_total: u32,
    pub cpu_used: u32,
    pub gpu_total: u32,
    pub gpu_used: u32,
    pub gpus_free: Vec<String>,
    pub jobs_ready: u32,
    pub starting: u32,
    pub hwm: u32,
    pub actors: u32,
    pub leases: u32,
    pub memory_total: Option<u64>,
    pub memory_used: Option<u64>,
    pub load1: Option<f64>,
    pub joined_at: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Client {
    pub client_id: String,
    pub hostname: String,
    pub pid: u32,
    pub script: String,
    pub connected_at: f64,
    pub uptime_s: f64,
    pub actors: u32,
    pub leases: u32,
    pub cpus: u32,
    pub gpus: u32,
    pub calls: u64,
    pub tasks_submitted: u64,
    pub tasks_done: u64,
    pub tasks_failed: u64,
    pub tasks_queued: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Waiting {
    pub client_id: String,
    pub request_id: u64,
    pub class_name: String,
    pub n_cpu: u32,
    pub n_gpu: u32,
    /// "cpu" or "gpu:N".
    pub resource: String,
    pub on_worker: Option<String>,
    pub since: f64,
    pub waited_s: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Actors {
    pub api_version: u32,
    pub actors: Vec<Actor>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Actor {
    pub job_id: String,
    pub class_name: String,
    /// "actor", or "lease" for a job that runs its client's tasks.
    pub kind: String,
    /// "starting", "running" or "ended".
    pub state: String,
    pub client_id: String,
    pub worker_id: String,
    pub hostname: String,
    pub pid: u32,
    pub gpus: Vec<String>,
    pub started_at: f64,
    pub age_s: f64,
    pub calls: u64,
    pub failures: u64,
    pub memory_bytes: Option<u64>,
    pub last_error: Option<String>,
    pub ended_at: Option<f64>,
    pub cause: Option<String>,
    pub reason: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Events {
    pub api_version: u32,
    /// Ask again with `after=next` for what is new.
    pub next: u64,
    pub events: Vec<Event>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Event {
    pub seq: u64,
    pub time: f64,
    pub kind: String,
    pub cause: Option<String>,
    pub job_id: Option<String>,
    pub worker_id: Option<String>,
    pub client_id: Option<String>,
    pub message: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct History {
    pub api_version: u32,
    pub interval_s: f64,
    pub end: f64,
    pub cluster: ClusterSeries,
    pub workers: std::collections::BTreeMap<String, WorkerSeries>,
}

/// Counts within each interval (calls, tasks, deaths) or values at its end (the others).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct ClusterSeries {
    pub calls: Vec<u64>,
    pub tasks_done: Vec<u64>,
    pub tasks_failed: Vec<u64>,
    pub deaths: Vec<u64>,
    pub actors: Vec<u32>,
    pub cpu_used: Vec<u32>,
    pub waiting: Vec<u32>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct WorkerSeries {
    pub cpu_used: Vec<Option<u32>>,
    pub memory_used: Vec<Option<u64>>,
    pub load1: Vec<Option<f64>>,
}
