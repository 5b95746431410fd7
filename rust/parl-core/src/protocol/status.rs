//! The cluster report served to `xparl status`, clients and (later) the web monitor.

use serde::{Deserialize, Serialize};

use super::{ClientId, WorkerId};

#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WorkerStatus {
    pub worker_id: WorkerId,
    pub hostname: String,
    pub cpu_total: u32,
    pub cpu_used: u32,
    pub gpu_total: u32,
    pub gpu_used: u32,
    /// Warm jobs ready to take an actor right now.
    pub jobs_ready: u32,
    /// Jobs granted whose actor has not started yet (grants in flight).
    pub starting: u32,
    /// The most grants it may have in flight (its own, or the master's default); 0: no limit.
    pub hwm: u32,
}

#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ClientStatus {
    pub client_id: ClientId,
    pub hostname: String,
    pub pid: u32,
    pub actors: u32,
    /// CPU slots its actors hold (one per CPU actor).
    pub cpus: u32,
    /// GPUs its actors hold.
    pub gpus: u32,
}

/// How the cluster's connections are protected (see [`crate::session`]).
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Sessions {
    /// `--insecure`: no key, nothing checked.
    Insecure,
    /// Every message authenticated under the session's key.
    Authenticated,
    /// Every message encrypted and authenticated (`--encrypt`).
    Encrypted,
}

#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ClusterStatus {
    pub master: String,
    pub version: String,
    /// A GPU cluster (`xparl start --gpu_cluster`) runs only GPU workers and GPU actors.
    pub gpu_cluster: bool,
    pub workers: Vec<WorkerStatus>,
    pub clients: Vec<ClientStatus>,
    pub pending_requests: u32,
    /// "host:port" the master's HTTP endpoint is bound to, if it serves one (the host may be
    /// 0.0.0.0: use the host by which the master was reached).
    pub http_address: Option<String>,
    pub sessions: Sessions,
    /// The placement scheme (`xparl start --scheme`).
    pub scheme: String,
}

impl ClusterStatus {
    pub fn cpu_total(&self) -> u32 {
        self.workers.iter().map(|w| w.cpu_total).sum()
    }

    pub fn cpu_used(&self) -> u32 {
        self.workers.iter().map(|w| w.cpu_used).sum()
    }

    pub fn gpu_total(&self) -> u32 {
        self.workers.iter().map(|w| w.gpu_total).sum()
    }

    pub fn gpu_used(&self) -> u32 {
        self.workers.iter().map(|w| w.gpu_used).sum()
    }

    pub fn actors(&self) -> u32 {
        self.clients.iter().map(|c| c.actors).sum()
    }
}
