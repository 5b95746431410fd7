//! What can go wrong, typed: each error names what failed (the method, attribute, task or
//! class) and why.

use std::fmt;
use std::time::Duration;

pub use parl_core::client::tasks::TaskFailure;
pub use parl_core::protocol::FailureKind;

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Python code raised. Unless the actor was created with `keep_alive_on_error`, an
    /// exception raised by its code has also ended the actor (as in PARL): later calls fail
    /// with [`Error::ActorDied`].
    #[error("{}", remote_text(.what, .exc_type, .message, .traceback))]
    Remote {
        /// The method, attribute, task or `__init__`.
        what: String,
        /// Which stage failed in the job: the user's code, a missing attribute, or reading the
        /// arguments.
        kind: FailureKind,
        /// The Python exception's qualified type name, e.g. `builtins.ValueError`.
        exc_type: String,
        message: String,
        /// The remote traceback, as Python prints it ("" when there is none).
        traceback: String,
    },
    /// The result has no portable form (a numpy array, an object of a user's class): only
    /// None, bool, int, float, str, bytes, list, tuple, dict and set reach a native client. The
    /// message names the value's Python type and where it is. The actor lives on.
    #[error("{message}")]
    NotPortable { what: String, message: String },
    /// The actor's job is gone: it exited (an exception ended it, `sys.exit`, a crash), was
    /// killed (its memory limit, a signal), its worker was lost, or it was released.
    #[error("actor {actor} on {host} is dead: {reason}")]
    ActorDied { actor: String, host: String, reason: String },
    /// No answer within the time given to [`Call::timeout`](crate::Call::timeout). The call
    /// itself is not stopped.
    #[error("`{what}` did not finish within {after:?}")]
    Timeout { what: String, after: Duration },
    /// The Rust value cannot be written as pickle (e.g. a map with keys pickle cannot have).
    #[error("cannot encode {what} as pickle: {source}")]
    Encode {
        what: String,
        #[source]
        source: serde_pickle::Error,
    },
    /// The Python value does not fit the Rust type asked for.
    #[error("cannot read the result of `{what}` as {rust_type}: {source}")]
    Decode {
        what: String,
        rust_type: &'static str,
        #[source]
        source: serde_pickle::Error,
    },
    /// A task failed without an exception of its function: every attempt was lost (its job
    /// crashed or timed out, its worker was lost), a dependency failed, or no job could be
    /// leased for it.
    #[error(transparent)]
    Task(TaskFailure),
    /// A bad argument to this crate (a class name not of the form `module:Class`, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// The cluster: connecting, the key, a creation the cluster cannot serve or that waited too
    /// long for a slot, a payload above the message limit.
    #[error(transparent)]
    Cluster(parl_core::Error),
}

fn remote_text(what: &str, exc_type: &str, message: &str, traceback: &str) -> impl fmt::Display {
    let traceback = traceback.trim_end();
    if traceback.is_empty() {
        format!("`{what}` raised {exc_type}: {message}")
    } else {
        format!("`{what}` raised {exc_type}: {message}\n\nremote traceback:\n{traceback}")
    }
}

impl From<parl_core::Error> for Error {
    fn from(error: parl_core::Error) -> Error {
        match error {
            parl_core::Error::ActorDied { actor_id, hostname, reason } => {
                Error::ActorDied { actor: actor_id, host: hostname, reason }
            }
            parl_core::Error::Task(failure) => Error::Task(failure),
            other => Error::Cluster(other),
        }
    }
}

impl Error {
    /// The failure a job reported for `what`.
    pub(crate) fn remote(what: &str, failure: parl_core::protocol::RemoteFailure) -> Error {
        if failure.kind == FailureKind::NotPortable {
            return Error::NotPortable { what: what.to_string(), message: failure.message };
        }
        Error::Remote {
            what: what.to_string(),
            kind: failure.kind,
            exc_type: failure.exc_type,
            message: failure.message,
            traceback: failure.traceback,
        }
    }

    /// The Python exception's type name, for a [`Error::Remote`].
    pub fn exc_type(&self) -> Option<&str> {
        match self {
            Error::Remote { exc_type, .. } => Some(exc_type),
            _ => None,
        }
    }
}
