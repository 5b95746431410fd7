//! The byte transport under the protocol, behind one small trait.
//!
//! The rest of the crate never names ZeroMQ: it sees [`FrameSocket`]s that produce
//! [`SocketEvent`]s and send frames. [`zmq`] implements it with the pure-Rust `zeromq` crate;
//! libzmq (or raw TCP) could be swapped in by implementing the same trait.
//!
//! What the `zeromq` crate does not do, the framework does above this layer: heartbeats,
//! reconnects (a DEALER never reconnects by itself), and acknowledgements.

pub mod zmq;

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;

/// Identifies one connected peer of a server socket.
pub type PeerId = Bytes;

/// Hashes of a message's frames by index, where the transport computed them.
pub type Digests = Vec<Option<[u8; 32]>>;

/// What a socket reports.
#[derive(Debug)]
pub enum SocketEvent {
    /// One multipart message from a peer. `digests[i]`, if there, is frame i's BLAKE3 hash,
    /// computed while it arrived (see [`crate::session::frame_digest`]); often empty.
    Frames { peer: PeerId, frames: Vec<Bytes>, digests: Digests },
    /// A peer's connection closed (crash, exit, or network loss).
    PeerGone { peer: PeerId },
    /// A server accepted a connection from `address` (the remote host); its messages follow.
    PeerArrived { peer: PeerId, address: String },
}

#[derive(Debug, Clone, Error)]
pub enum TransportError {
    #[error("cannot bind {address}: {reason}")]
    Bind { address: String, reason: String },
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("socket closed: {0}")]
    Closed(String),
    #[error("send failed: {0}")]
    Send(String),
}

/// A socket carrying multipart messages: a server (many peers) or a client (one peer).
pub trait FrameSocket: Send + 'static {
    /// The next event. Must be cancel-safe: it is polled inside `select!`.
    fn next_event(&mut self) -> impl Future<Output = Result<SocketEvent, TransportError>> + Send;

    /// Sends frames to `peer` (servers) or to the one peer (clients; `peer` is ignored).
    fn send(
        &mut self,
        peer: Option<PeerId>,
        frames: Vec<Bytes>,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// A handle that sends on this socket from any thread without waiting, if the transport
    /// has one (see [`DirectSend`]).
    fn direct_sender(&self) -> Option<Arc<dyn DirectSend>> {
        None
    }

    /// `peer` (a client's one peer if None) passed the handshake: it may send messages of any
    /// size up to the message limit from now on. Until then a peer may send only small ones
    /// ([`PRE_AUTH_MESSAGE_LIMIT`]), so that one that proved nothing makes this process
    /// buffer next to nothing.
    fn trust(&mut self, _peer: Option<&PeerId>) {}

    /// Closes a server's connection to `peer` (one that failed authentication); its
    /// `PeerGone` follows. A client closes its one connection by being dropped.
    fn disconnect(&mut self, _peer: &PeerId) {}
}

/// The largest message a peer may send before it has passed the handshake: the handshake's
/// messages take about 100 bytes.
pub const PRE_AUTH_MESSAGE_LIMIT: usize = 16 * 1024;

/// Sends on a socket from the calling thread, without a hop to the task that owns the socket:
/// a request's thread writes it to the connection itself, which saves waking the runtime
/// thread on every message. Never waits: what the connection cannot take now is finished by
/// the transport in the background, in order.
pub trait DirectSend: Send + Sync {
    /// Sends frames to `peer` (servers) or to the one peer (clients; `peer` is ignored).
    /// With `more_follows`, the next frames sent to that peer complete the same message (the
    /// caller sends nothing else to it in between).
    fn send_now(
        &self,
        peer: Option<&PeerId>,
        frames: Vec<Bytes>,
        more_follows: bool,
    ) -> Result<(), SendNowError>;
}

/// Why [`DirectSend::send_now`] dropped a message.
#[derive(Debug, Clone, Error)]
pub enum SendNowError {
    /// The peer stopped reading and its backlog is full.
    #[error("the peer does not read (its send backlog is full)")]
    NotReading,
    /// The peer left or never was; its owner learns that from `PeerGone`.
    #[error("{0}")]
    Gone(String),
}

/// Turns "host:port" (or "tcp://host:port") into a TCP endpoint string.
pub fn tcp_endpoint(address: &str) -> String {
    if address.starts_with("tcp://") {
        address.to_string()
    } else {
        format!("tcp://{address}")
    }
}

/// Turns "tcp://host:port" into "host:port".
pub fn host_port(endpoint: &str) -> &str {
    endpoint.strip_prefix("tcp://").unwrap_or(endpoint)
}

/// Room kept in every message for its header (frame 0: the message itself, with names).
pub const HEADER_ROOM: usize = 64 * 1024;

/// The longest method or attribute name a request may carry (it travels in frame 0).
pub const MAX_NAME_LEN: usize = 16 * 1024;

/// Bytes a message may carry in payload frames: the transport's limit, less room for the
/// message's own header. A payload above it gets a clear error where it is sent, instead of
/// a peer that silently drops the connection.
pub fn payload_limit() -> usize {
    payload_limit_of(zmq::max_message_size())
}

/// Bytes a message may carry in payload frames under a message size limit of `max_message`.
pub fn payload_limit_of(max_message: usize) -> usize {
    max_message.saturating_sub(HEADER_ROOM)
}

/// An error message if `payload` is above [`payload_limit`]; `what` names it for the user.
pub fn check_payload_size(payload: &[bytes::Bytes], what: impl std::fmt::Display) -> Option<String> {
    let size: usize = payload.iter().map(|frame| frame.len()).sum();
    check_size(size, payload_limit(), what)
}

/// An error message if `size` bytes are above `limit`; `what` names them for the user.
pub fn check_size(size: usize, limit: usize, what: impl std::fmt::Display) -> Option<String> {
    (size > limit).then(|| {
        format!(
            "{what} is {:.1} MB, above the {:.1} MB message limit: send less per call, or raise \
             PARL_RS_MAX_MESSAGE_MB on every machine of the cluster",
            size as f64 / 1048576.0,
            limit as f64 / 1048576.0
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_above_the_limit_get_a_message_that_says_what_to_do() {
        let small = vec![bytes::Bytes::from(vec![0u8; 1024])];
        assert_eq!(check_payload_size(&small, "x"), None);
        let huge = vec![bytes::Bytes::from(vec![0u8; 1024]); payload_limit() / 1024 + 1];
        let why = check_payload_size(&huge, "the payload of `f`").expect("too large");
        assert!(why.contains("the payload of `f`") && why.contains("PARL_RS_MAX_MESSAGE_MB"), "{why}");
    }
}
