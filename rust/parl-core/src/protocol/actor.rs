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

/// What a request asks of the actor.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ActorOp {
    /// Build the instance; `name` is the class name. The files are written first.
    Init { files: Vec<ShippedFile> },
    /// Call the method `name`.
    Call,
    /// Read the attribute `name`.
    GetAttr,
    /// Write the attribute `name`.
    SetAttr,
}

impl ActorOp {
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
