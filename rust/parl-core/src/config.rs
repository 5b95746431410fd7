//! Settings of masters, workers and clients, with their defaults in one place.

use std::path::PathBuf;
use std::time::Duration;

use crate::auth::Auth;
use crate::protocol::Encoding;

/// How often peers beat and how long silence means death. PARL used 10 s / 30 s; parl_rs
/// defaults to 1 s / 5 s, and issue-free peers cost one tiny message per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatConfig {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig { interval: Duration::from_secs(1), timeout: Duration::from_secs(5) }
    }
}

impl HeartbeatConfig {
    /// Builds a config from seconds, keeping the timeout above the interval.
    pub fn from_secs(interval: f64, timeout: f64) -> HeartbeatConfig {
        let interval = Duration::from_secs_f64(interval.max(0.01));
        let timeout = Duration::from_secs_f64(timeout.max(0.02)).max(interval * 2);
        HeartbeatConfig { interval, timeout }
    }
}

/// How long a client waits for a master to answer before `connect` fails.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// "host:port" to bind; port 0 picks a free port.
    pub bind: String,
    pub heartbeat: HeartbeatConfig,
    /// A GPU cluster accepts only GPU workers and GPU actors; a CPU cluster only CPU ones
    /// (PARL's rule: a cluster is one or the other).
    pub gpu_cluster: bool,
    /// "major.minor" of the cluster's Python ("" if unknown): workers of another Python are
    /// refused, and clients compare it with their own.
    pub python_version: String,
    /// "host:port" for the HTTP endpoint (status and logs); None serves none.
    pub http_bind: Option<String>,
    /// The cluster key every peer and HTTP request must prove, or `Insecure`.
    pub auth: Auth,
    /// Where actors are placed (`xparl start --scheme`).
    pub scheme: crate::master::scheduler::Scheme,
    /// The default high-water mark of grants in flight per worker, for workers that do not
    /// set their own (`WorkerConfig::hwm` 0): the most jobs granted on one worker whose actor
    /// has not started yet. 0: unlimited.
    pub hwm: u32,
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// "host:port" of the master.
    pub master: String,
    /// Number of CPU slots.
    pub cpu_num: u32,
    /// GPU ids offered to GPU actors (values for `CUDA_VISIBLE_DEVICES`); a GPU worker offers
    /// no CPU slots. The warm pool holds one job per CPU slot and one per GPU.
    pub gpus: Vec<String>,
    /// Command that starts a Python interpreter for a job, e.g. ["/usr/bin/python3"].
    pub python: Vec<String>,
    /// Where job working directories and logs go.
    pub state_dir: PathBuf,
    /// Interface jobs and the log server bind; None means the one that routes to the master.
    pub host: Option<String>,
    /// Host published to clients for jobs and logs, when it differs from the bound one (NAT, a
    /// wildcard bind, a VPN); None means the bound host (or, for a wildcard, the interface
    /// that routes to the master).
    pub advertise: Option<String>,
    pub connect_timeout: Duration,
    /// "major.minor" of the Python the jobs run ("" if unknown); must match the master's.
    pub python_version: String,
    /// How long ended jobs' logs are kept.
    pub retention: crate::worker::logs::LogRetention,
    /// The cluster key: proven to the master, and required of the jobs' clients.
    pub auth: Auth,
    /// This worker's high-water mark of grants in flight (granted jobs whose actor has not
    /// started yet), sent in its hello; 0: the master's default (`MasterConfig::hwm`).
    pub hwm: u32,
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// "host:port" of the master.
    pub master: String,
    pub connect_timeout: Duration,
    /// Print what each actor writes to stdout/stderr on this process's stdout.
    pub log_to_driver: bool,
    /// The cluster key, proven to the master and to every job.
    pub auth: Auth,
    /// How this client writes its requests' payloads (Python pickle, or the portable pickle of
    /// a native client), and so how its jobs answer.
    pub encoding: Encoding,
}
