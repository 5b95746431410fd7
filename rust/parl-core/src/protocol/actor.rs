//! Messages between a client and the job that runs one of its actors.
//!
//! The payload of a request or reply (pickled arguments, return values, exceptions) is carried
//! in the frames after frame 0 and is opaque to Rust: the Python layer owns its layout.

use serde::{Deserialize, Serialize};

/// A file the client ships to every job's working directory.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ShippedFile {
    /// Relative path, '/'-separated; never absolute, never with "..".
    pub path: String,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// What the job sets up for its actor before the user's class is loaded.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct ActorResources {
    /// GPU ids the master granted (the job's `CUDA_VISIBLE_DEVICES`); empty for a CPU actor,
    /// which sees no GPU (`CUDA_VISIBLE_DEVICES=""`, as in PARL).
    pub gpus: Vec<String>,
    /// `@remote_class(max_memory=...)` in bytes, enforced by the job's worker (see
    /// [`MemoryLimit`](super::MemoryLimit)); None: unlimited.
    pub max_memory: Option<u64>,
}

/// What a request asks of the actor.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ActorOp {
    /// Build the instance; `name` is the class name. The files are written and the resources
    /// set up first. The client fills both in from its settings and the job's grant.
    Init { files: Vec<ShippedFile>, resources: ActorResources },
    /// Call the method `name`.
    Call,
    /// Read the attribute `name`.
    GetAttr,
    /// Write the attribute `name`.
    SetAttr,
}

impl ActorOp {
    /// An `Init` to send through a client, which fills in its files and the actor's resources.
    pub fn init() -> ActorOp {
        ActorOp::Init { files: Vec::new(), resources: ActorResources::default() }
    }

    /// The name the host language uses for this operation.
    pub fn as_str(&self) -> &'static str {
        match self {
            ActorOp::Init { .. } => "init",
            ActorOp::Call => "call",
            ActorOp::GetAttr => "getattr",
            ActorOp::SetAttr => "setattr",
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ActorRequest {
    /// Chosen by the client, unique per actor; echoed in the reply.
    pub request_id: u64,
    pub op: ActorOp,
    pub name: String,
}

/// Which stage of a request failed inside the job.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The user's code raised.
    User,
    /// Reading an attribute raised AttributeError.
    Attribute,
    /// The job could not serialize the result.
    Serialize,
    /// The job could not deserialize the arguments.
    Deserialize,
}

impl FailureKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureKind::User => "user",
            FailureKind::Attribute => "attribute",
            FailureKind::Serialize => "serialize",
            FailureKind::Deserialize => "deserialize",
        }
    }

    pub fn parse(kind: &str) -> Option<FailureKind> {
        Some(match kind {
            "user" => FailureKind::User,
            "attribute" => FailureKind::Attribute,
            "serialize" => FailureKind::Serialize,
            "deserialize" => FailureKind::Deserialize,
            _ => return None,
        })
    }
}

/// A failure inside the job: the remote exception, described for the caller.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RemoteFailure {
    pub kind: FailureKind,
    /// Qualified name of the exception class, e.g. "builtins.ValueError".
    pub exc_type: String,
    pub message: String,
    pub traceback: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Outcome {
    Ok,
    Failed(RemoteFailure),
    /// The job could not take the request at all (e.g. a call before init).
    Rejected(String),
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ActorReply {
    pub request_id: u64,
    pub outcome: Outcome,
}
