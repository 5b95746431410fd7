//! The messages of the cluster-key handshake that opens every connection (see [`crate::auth`]).

use serde::{Deserialize, Serialize};

/// A random value used once, so that a recorded handshake proves nothing later.
pub type Nonce = [u8; 32];
/// An HMAC-SHA256 tag.
pub type Proof = [u8; 32];

/// What a server port serves. A connecting peer names the one it means to reach, and the
/// handshake binds it, so a handshake meant for one kind of server cannot be relayed to another.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub enum Service {
    /// The master (workers, clients and `xparl status` connect to it).
    Master,
    /// A worker's socket for its own jobs.
    Worker,
    /// A job (the client that owns its actor connects to it).
    Job,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Master => "a master",
            Service::Worker => "a worker's job socket",
            Service::Job => "a job",
        }
    }
}

/// connecting peer -> server: the first message on every connection.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub struct AuthHello {
    pub nonce: Nonce,
    /// Whether the peer holds a cluster key (a keyless peer of a keyed cluster is refused
    /// with a message that says where the key is).
    pub keyed: bool,
    /// The kind of server the peer means to reach.
    pub service: Service,
    /// Whether the peer asks for encrypted messages (see [`crate::session`]).
    pub encrypt: bool,
}

/// server -> connecting peer: the server's nonce, and its proof that it holds the key (None
/// from a server started with `--insecure`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub struct AuthChallenge {
    pub nonce: Nonce,
    pub proof: Option<Proof>,
    /// Whether the server asks for encrypted messages; the session encrypts if either side
    /// asked.
    pub encrypt: bool,
}
