//! The messages of the cluster-key handshake that opens every connection (see [`crate::auth`]).

use serde::{Deserialize, Serialize};

/// A random value used once, so that a recorded handshake proves nothing later.
pub type Nonce = [u8; 32];
/// An HMAC-SHA256 tag.
pub type Proof = [u8; 32];

/// connecting peer -> server: the first message on every connection.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub struct AuthHello {
    pub nonce: Nonce,
    /// Whether the peer holds a cluster key (a keyless peer of a keyed cluster is refused
    /// with a message that says where the key is).
    pub keyed: bool,
}

/// server -> connecting peer: the server's nonce, and its proof that it holds the key (None
/// from a server started with `--insecure`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub struct AuthChallenge {
    pub nonce: Nonce,
    pub proof: Option<Proof>,
}
