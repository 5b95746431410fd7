//! The call envelope: what a client asks of a job, defined once for every client (the Python
//! layer through `parl_rs._core`, and native Rust programs through `parl-client`) and for the
//! job that answers.
//!
//! A request is an [`ActorRequest`] in frame 0; its payload follows in frames 1..n, written in
//! the request's [`Encoding`]. What the payload and the reply's payload hold depends on the
//! [`CallKind`]:
//!
//! | kind      | request payload                                   | reply payload                  |
//! |-----------|---------------------------------------------------|--------------------------------|
//! | `Init`    | `(class, args, kwargs)`                           | the method names, sorted       |
//! | `Method`  | `(args, kwargs)`                                  | `(value, methods or None)`     |
//! | `GetAttr` | nothing                                           | `(is_method, value or None)`   |
//! | `SetAttr` | `value`                                           | `methods or None`              |
//! | `Task`    | the function (its first time on this job, else an empty frame), then `(args, kwargs)` | `value` |
//!
//! `class` is a class by value, or `("by_ref", module, qualname, client_file or None)` for one
//! the job imports; a task's function likewise by value or `("by_ref", module, qualname)`.
//! `args` is a tuple or list, `kwargs` a dict with string keys. "methods" is sent again only when
//! instance attributes start or stop shadowing methods.
//!
//! A failure inside the job is not a payload: it is the reply's [`Outcome`](super::Outcome).

use serde::{Deserialize, Serialize};

/// One request on an actor (or on a job leased for tasks): the call envelope.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ActorRequest {
    /// Chosen by the client, unique per actor; echoed in the reply.
    pub request_id: u64,
    pub kind: CallKind,
    /// The method or attribute; the class name for `Init`; the function's id for `Task`.
    pub name: String,
    /// How the payload is written, and how the reply must be.
    pub encoding: Encoding,
}

/// What a request asks of the actor.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum CallKind {
    /// Build the instance. The shipped files are written and the resources set up first. The
    /// client fills the spec in from the actor's options and the job's grant.
    Init(InitSpec),
    /// Call a method.
    Method,
    /// Read an attribute.
    GetAttr,
    /// Write an attribute.
    SetAttr,
    /// Run a stateless task (on a job leased for tasks).
    Task,
}

impl CallKind {
    /// An `Init` to send through a client, which fills in its spec.
    pub fn init() -> CallKind {
        CallKind::Init(InitSpec::default())
    }

    /// How errors name this kind of request.
    pub fn as_str(&self) -> &'static str {
        match self {
            CallKind::Init(_) => "init",
            CallKind::Method => "method",
            CallKind::GetAttr => "getattr",
            CallKind::SetAttr => "setattr",
            CallKind::Task => "task",
        }
    }
}

/// How a request's payload is written, and so how its reply must be written.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// Python's pickle (protocol 5, cloudpickle): any Python object. The first frame is the
    /// pickle stream, the others its out-of-band buffers (numpy arrays travel as frames of
    /// their own). What the Python client sends and is answered in.
    #[default]
    Python,
    /// Pickle that a program without Python reads and writes (`serde-pickle`): one frame,
    /// protocol 3 at most, builtin values only: None, bool, int, float, str, bytes, list,
    /// tuple, dict, set. A native client sends it; the job answers in kind, and a value that has
    /// no such form (a numpy array, an object of a user's class) fails the request with a
    /// `serialize` failure that names its type.
    Portable,
}

impl Encoding {
    pub fn as_str(&self) -> &'static str {
        match self {
            Encoding::Python => "python",
            Encoding::Portable => "portable",
        }
    }
}

/// How the actor is to be set up, sent with its `Init`.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct InitSpec {
    /// Hash of the client's [`FileBundle`](super::FileBundle) ("" when it ships nothing).
    pub bundle: String,
    /// Stream the job's output to the client as it is written.
    pub log_to_driver: bool,
    /// Set up before the user's class is loaded.
    pub resources: ActorResources,
    /// How the actor behaves; read before anything of the user's is unpickled.
    pub options: ActorOptions,
}

/// What the job sets up for its actor before the user's class is loaded.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct ActorResources {
    /// GPU ids the master granted (the job's `CUDA_VISIBLE_DEVICES`); empty for a CPU actor,
    /// which sees no GPU (`CUDA_VISIBLE_DEVICES=""`, as in PARL).
    pub gpus: Vec<String>,
    /// `@remote_class(max_memory=...)` in bytes, enforced by the job's worker (see
    /// [`MemoryLimit`](super::MemoryLimit)); None: unlimited.
    pub max_memory: Option<u64>,
}

/// How an actor behaves, chosen by its client (`@remote_class(...)` in Python).
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ActorOptions {
    /// An exception raised by the actor's code is reported and the actor lives on (PARL ends
    /// the actor: false).
    pub keep_alive_on_error: bool,
    /// Requests served at once (1: one after the other).
    pub max_concurrency: u32,
    /// Where the job finds the client's code.
    pub code: CodeContext,
}

impl Default for ActorOptions {
    fn default() -> ActorOptions {
        ActorOptions { keep_alive_on_error: false, max_concurrency: 1, code: CodeContext::default() }
    }
}

/// Where a job finds its client's code, and how it names the client's files in tracebacks.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct CodeContext {
    /// Entries appended to the job's search path: absolute ones as they are, relative ones
    /// inside the job's directory (among the shipped files).
    pub sys_path: Vec<String>,
    /// Shipped source files: (path in the job's directory, absolute path on the client).
    pub sources: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode, encode, Message};

    #[test]
    fn an_init_envelope_round_trips_with_its_options() {
        let options = ActorOptions {
            keep_alive_on_error: true,
            max_concurrency: 4,
            code: CodeContext {
                sys_path: vec!["lib".into()],
                sources: vec![("a.py".into(), "/x/a.py".into())],
            },
        };
        let request = ActorRequest {
            request_id: 9,
            kind: CallKind::Init(InitSpec { options, ..InitSpec::default() }),
            name: "Sim".into(),
            encoding: Encoding::Portable,
        };
        let frames = encode(&Message::ActorRequest(request.clone()), Vec::new());
        assert_eq!(decode(frames).unwrap().message, Message::ActorRequest(request));
    }
}
