//! The crate's one error type. Expected states (a peer leaving, a request still waiting) are
//! values elsewhere; these are the failures a caller must hear about.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::transport::TransportError;

/// Cloneable: an actor whose creation failed gives the same error to every request queued on it.
#[derive(Debug, Clone, Error)]
pub enum Error {
    #[error(transparent)]
    Transport(#[from] TransportError),

    #[error("cannot connect to the parl_rs master at {address}: {reason}")]
    Connect { address: String, reason: String },

    /// The cluster-key handshake failed: the reason says which side lacks the key.
    #[error("authentication with {address} failed: {reason}")]
    Auth { address: String, reason: String },

    #[error(
        "no vacant {resource} in the cluster for `{class_name}` after waiting {waited:?}; \
         add computation resources (xparl connect --address MASTER) or release actors"
    )]
    NoResources { class_name: String, resource: &'static str, waited: Duration },

    #[error("the master refused the request: {0}")]
    Refused(String),

    #[error("actor {actor_id} on {hostname} is dead: {reason}")]
    ActorDied { actor_id: String, hostname: String, reason: String },

    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },

    #[error("protocol error: {0}")]
    Protocol(String),

    /// A payload above the message size limit (the message says how to raise it).
    #[error("{0}")]
    TooLarge(String),

    #[error("the connection to the master at {0} is down; try again once the master is back")]
    MasterUnavailable(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: Arc<std::io::Error>,
    },

    /// A stateless task that ended without its function's result (see
    /// [`crate::client::tasks`]).
    #[error(transparent)]
    Task(#[from] crate::client::tasks::TaskFailure),

    #[error("parl_rs runtime is shut down")]
    Shutdown,
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { context: context.into(), source: Arc::new(source) }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
