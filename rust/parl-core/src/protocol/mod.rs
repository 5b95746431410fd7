//! The wire protocol: every message that crosses a socket, and its one codec.
//!
//! A message on the wire is a ZeroMQ multipart message:
//!
//! ```text
//! frame 0      MAGIC (4 bytes) | PROTOCOL_VERSION (u16, little endian) | postcard(Message)
//! frame 1..n   opaque payload frames (pickled user objects, buffers), never copied into frame 0
//! ```
//!
//! Payloads travel as separate frames so that large buffers can later be sent without copies.
//! Both ends use the same [`Message`] enum and the same [`codec`], so the two sides of a socket
//! can never disagree about a layout. The families live in their own files:
//! [`control`] (workers and clients talking to the master), [`call`] (the call envelope: what a
//! client asks of a job), [`actor`] (the rest between clients and jobs, and jobs and their
//! worker) and [`status`] (the cluster report).

pub mod actor;
pub mod auth;
pub mod call;
pub mod codec;
pub mod control;
pub mod stats;
pub mod status;

pub use actor::{ActorReply, FailureKind, FileBundle, Outcome, RemoteFailure, ShippedFile};
pub use auth::{AuthChallenge, AuthHello, Nonce, Proof, Service};
pub use call::{ActorOptions, ActorRequest, ActorResources, CallKind, CodeContext, Encoding, InitSpec};
pub use codec::{decode, encode, DecodeError, Envelope};
pub use control::{
    ActorDeath, ClientHello, ErrorCode, ErrorReply, ExitCause, JobAssignment, JobExit, JobGrant, JobHello,
    JobInfo, JobRequest, MemoryLimit, Welcome, WorkerHello,
};
pub use stats::{ClientStats, JobStats, JobUsage, WorkerStats};
pub use status::{ClientStatus, ClusterStatus, Sessions, WorkerStatus};

use serde::{Deserialize, Serialize};

/// The four bytes every parl_rs frame 0 starts with, so that stray traffic is recognised at once.
pub const MAGIC: [u8; 4] = *b"XPRL";

/// Bumped whenever a message layout changes; peers of another version are refused with an
/// error that names both versions.
pub const PROTOCOL_VERSION: u16 = 7;

/// The class name of a request for a job leased for tasks (not for an actor of the user's).
pub const LEASE_CLASS: &str = "tasks";

/// Identifies a job process (and the actor it serves) across the cluster.
pub type JobId = String;
/// Identifies a worker; chosen by the worker so that it survives reconnects.
pub type WorkerId = String;
/// Identifies a client; chosen by the client so that it survives reconnects.
pub type ClientId = String;

/// Every message of the protocol. New variants go at the end: postcard encodes the index.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Message {
    /// Liveness, both directions between the master and its workers and clients.
    Heartbeat,
    /// The peer's last message could not be handled.
    Error(ErrorReply),

    /// worker -> master: register (or re-register after a reconnect).
    RegisterWorker(WorkerHello),
    /// master -> worker or client: registration accepted.
    Registered(Welcome),
    /// worker -> master: a warm job is ready to serve an actor.
    JobReady(JobInfo),
    /// worker -> master: a job process has ended.
    JobExited(JobExit),
    /// master -> worker: end this job (its client is gone or returned it).
    KillJob { job_id: JobId, reason: String },

    /// client -> master: register.
    RegisterClient(ClientHello),
    /// client -> master: reserve a job for a new actor; answered by `JobGranted` or
    /// `RequestFailed`, possibly much later (the request waits in the master's queue).
    RequestJob(JobRequest),
    /// client -> master: the client stopped waiting for this request.
    CancelRequest { request_id: u64 },
    /// client -> master: the client will not use this granted job after all.
    ReturnJob { job_id: JobId },
    /// master -> client: a job is reserved for the request.
    JobGranted(JobGrant),
    /// master -> client: the request can never be satisfied.
    RequestFailed { request_id: u64, reason: String },
    /// master -> client: the job behind one of its actors has ended.
    ActorDied(ActorDeath),
    /// anyone -> master: report the cluster's state (needs no registration).
    StatusRequest,
    /// master -> requester: the cluster's state.
    Status(ClusterStatus),
    /// worker or client -> master: leaving on purpose.
    Disconnect,

    /// job -> its worker: the job's socket is bound and Python is ready.
    JobHello(JobHello),
    /// client -> job: one request on the actor; payload frames follow.
    ActorRequest(ActorRequest),
    /// job -> client: the answer to one request; payload frames follow.
    ActorReply(ActorReply),
    /// client -> job: the actor is released; the job exits.
    Release,
    /// job -> client: the worker has not cached this bundle yet; send it with `ShipFiles`.
    NeedFiles { hash: String },
    /// client -> job: the bundle a job asked for.
    ShipFiles(FileBundle),
    /// job -> client: output the job wrote (when the client asked for `log_to_driver`).
    JobOutput {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// job -> its worker: enforce this memory limit on the job (its actor's `max_memory`).
    MemoryLimit(MemoryLimit),
    /// master -> worker: a job was granted to a client's actor.
    JobAssigned(JobAssignment),
    /// worker -> a (restarted) master: this job already serves a client's actor.
    JobBusy { info: JobInfo, assignment: JobAssignment },

    /// connecting peer -> any server: opens the cluster-key handshake.
    AuthHello(AuthHello),
    /// server -> connecting peer: its nonce and its proof of the key.
    AuthChallenge(AuthChallenge),
    /// connecting peer -> server: its proof of the key; nothing else is accepted before it.
    AuthProof { proof: Proof },
    /// server -> peer: the handshake failed, or a message came before it; says why.
    AuthRefused { reason: String },

    /// master -> worker: the cluster is being stopped on purpose (`xparl stop` on the master's
    /// machine): end every job and exit, rather than wait for a master that will not come
    /// back. A master that crashes or is killed sends nothing, and its workers keep
    /// reconnecting, so a restarted master gets them back.
    ClusterStopped { reason: String },

    /// job -> its worker, then worker -> master: the actor of this job is constructed (its
    /// `Init` was answered, successfully or not). Sent once per job. The master counts the
    /// jobs it granted whose actor has not started yet against the worker's high-water mark
    /// ([`WorkerHello::hwm`]); this takes one off.
    ActorStarted { job_id: JobId },
    /// Job -> worker: its actor's counters (for the monitor).
    JobStats(JobStats),
    /// Worker -> master: its machine's and its jobs' usage (for the monitor).
    WorkerStats(WorkerStats),
    /// Client -> master: its counters of calls and tasks (for the monitor).
    ClientStats(ClientStats),
}

impl Message {
    /// A short name for logs (never the payload).
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Heartbeat => "Heartbeat",
            Message::Error(_) => "Error",
            Message::RegisterWorker(_) => "RegisterWorker",
            Message::Registered(_) => "Registered",
            Message::JobReady(_) => "JobReady",
            Message::JobExited(_) => "JobExited",
            Message::KillJob { .. } => "KillJob",
            Message::RegisterClient(_) => "RegisterClient",
            Message::RequestJob(_) => "RequestJob",
            Message::CancelRequest { .. } => "CancelRequest",
            Message::ReturnJob { .. } => "ReturnJob",
            Message::JobGranted(_) => "JobGranted",
            Message::RequestFailed { .. } => "RequestFailed",
            Message::ActorDied(_) => "ActorDied",
            Message::StatusRequest => "StatusRequest",
            Message::Status(_) => "Status",
            Message::Disconnect => "Disconnect",
            Message::JobHello(_) => "JobHello",
            Message::ActorRequest(_) => "ActorRequest",
            Message::ActorReply(_) => "ActorReply",
            Message::Release => "Release",
            Message::NeedFiles { .. } => "NeedFiles",
            Message::ShipFiles(_) => "ShipFiles",
            Message::JobOutput { .. } => "JobOutput",
            Message::MemoryLimit(_) => "MemoryLimit",
            Message::JobAssigned(_) => "JobAssigned",
            Message::JobBusy { .. } => "JobBusy",
            Message::AuthHello(_) => "AuthHello",
            Message::AuthChallenge(_) => "AuthChallenge",
            Message::AuthProof { .. } => "AuthProof",
            Message::AuthRefused { .. } => "AuthRefused",
            Message::ClusterStopped { .. } => "ClusterStopped",
            Message::ActorStarted { .. } => "ActorStarted",
            Message::JobStats(_) => "JobStats",
            Message::WorkerStats(_) => "WorkerStats",
            Message::ClientStats(_) => "ClientStats",
        }
    }

    /// The reply to a message that this socket does not handle.
    pub fn unexpected(kind: &str, socket: &str) -> Message {
        Message::Error(ErrorReply {
            code: ErrorCode::Unexpected,
            message: format!("{kind} is not accepted by the {socket}"),
        })
    }
}
