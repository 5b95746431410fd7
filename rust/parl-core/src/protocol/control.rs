//! Control messages between the master and its workers and clients.

use serde::{Deserialize, Serialize};

use super::{ClientId, JobId, WorkerId};

/// Why a message was refused.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The frames were not a valid message.
    Malformed,
    /// The peer speaks another protocol version.
    UnsupportedVersion,
    /// A valid message that this socket does not accept.
    Unexpected,
    /// The sender must register first (e.g. after a master restart).
    NotRegistered,
    /// Registration refused (e.g. a parl_rs version mismatch).
    Rejected,
}

#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
}

/// A worker introducing itself.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WorkerHello {
    pub worker_id: WorkerId,
    pub hostname: String,
    pub pid: u32,
    pub cpu_num: u32,
    /// GPU ids the worker offers (values for `CUDA_VISIBLE_DEVICES`); empty for a CPU worker.
    /// A GPU worker offers no CPU slots (`cpu_num` is 0), as in PARL.
    pub gpus: Vec<String>,
    /// parl_rs version of the worker.
    pub version: String,
    /// "major.minor" of the Python its jobs run ("" when unknown, e.g. native jobs).
    pub python_version: String,
    /// "host:port" of the worker's HTTP log server.
    pub log_address: String,
    /// The most jobs the master may have granted on this worker whose actor has not started
    /// yet (no `ActorStarted`): a slow or remote worker is not handed a burst it cannot start.
    /// 0: the master's default (`MasterConfig::hwm`).
    pub hwm: u32,
}

/// A client introducing itself.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ClientHello {
    pub client_id: ClientId,
    pub hostname: String,
    pub pid: u32,
    pub version: String,
    /// The program it runs (its script's file name, or "python -c ..."), for the monitor.
    pub script: String,
}

/// The master's answer to a registration: the settings the peer must follow.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Welcome {
    pub master_version: String,
    /// "major.minor" of the cluster's Python ("" when the master does not know).
    pub python_version: String,
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    /// The largest message the master's processes accept (`PARL_RS_MAX_MESSAGE_MB`): clients
    /// refuse larger ones themselves, with an error that says what was too large.
    pub max_message_size: u64,
}

/// A job process announcing itself to its worker.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct JobHello {
    pub job_id: JobId,
    /// "tcp://host:port" where clients reach the job.
    pub address: String,
    pub pid: u32,
}

/// A job telling its worker the memory limit of the actor it now serves (sent when the
/// actor's `Init` arrives, before the class is loaded).
///
/// The worker kills the job once the resident memory of the job and all its descendants
/// exceeds `max_bytes` plus the job's baseline: its own resident memory when it announced
/// itself warm (the interpreter and parl_rs, before any user code). So `max_bytes` is what
/// the user's code may add, as in PARL (`max_memory + init_memory`).
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct MemoryLimit {
    pub job_id: JobId,
    pub max_bytes: u64,
}

/// A warm job the worker offers to the master.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct JobInfo {
    pub job_id: JobId,
    pub address: String,
    pub pid: u32,
}

/// A job process that ended, as its parent (the worker) saw it.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct JobExit {
    pub job_id: JobId,
    /// "exited with status 0", "killed by signal 9 (SIGKILL)", ...
    pub status: String,
    /// Whether the worker meant it to end (a release or a KillJob).
    pub expected: bool,
    pub cause: ExitCause,
    /// The requests it answered, and how many of them failed, as it last said (for the
    /// monitor: its last calls came after the worker's last report).
    pub calls: u64,
    pub failures: u64,
}

/// Why a job ended, as its worker saw it.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExitCause {
    /// Its worker ended it on purpose (the client released it, the master killed it).
    Released,
    /// An uncaught exception of the actor's code ended it (as in PARL).
    Exception,
    /// It used more memory than its `max_memory`.
    MemoryLimit,
    /// A signal killed it (someone else's kill, the OOM killer, a crash).
    Signal,
    /// It exited on its own.
    Exited,
}

impl ExitCause {
    /// The name the monitor's API and metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            ExitCause::Released => "released",
            ExitCause::Exception => "exception",
            ExitCause::MemoryLimit => "memory_limit",
            ExitCause::Signal => "signal",
            ExitCause::Exited => "exited",
        }
    }
}

/// A client asking for a job for one actor.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct JobRequest {
    /// Chosen by the client, unique per client.
    pub request_id: u64,
    pub n_cpu: u32,
    pub n_gpu: u32,
    /// For the master's log and status only.
    pub class_name: String,
    /// Only a job of this worker will do (a task that must run where another one ran: its
    /// `follow`); None: wherever the master's scheme places it.
    pub on_worker: Option<WorkerId>,
}

/// The master's answer to a [`JobRequest`].
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct JobGrant {
    pub request_id: u64,
    pub job_id: JobId,
    pub address: String,
    pub pid: u32,
    pub worker_id: WorkerId,
    pub hostname: String,
    /// The GPU ids reserved for the actor on that worker (empty for a CPU actor); the client
    /// passes them to the job in its `Init`, which sets `CUDA_VISIBLE_DEVICES` to them.
    pub gpus: Vec<String>,
    /// "host:port" of the worker's HTTP log server, where the job's output can be read.
    pub log_address: String,
}

/// Tells a client that the job behind one of its actors is gone.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ActorDeath {
    pub job_id: JobId,
    pub reason: String,
}

/// Which client's actor a job serves, and with which GPUs. The master tells the job's worker
/// at every grant, so that the worker can tell a restarted master (which starts knowing
/// nothing) that the job is not free.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct JobAssignment {
    pub job_id: JobId,
    pub client_id: ClientId,
    pub gpus: Vec<String>,
}
