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

use bytes::Bytes;
use thiserror::Error;

/// Identifies one connected peer of a server socket.
pub type PeerId = Bytes;

/// What a socket reports.
#[derive(Debug)]
pub enum SocketEvent {
    /// One multipart message from a peer.
    Frames { peer: PeerId, frames: Vec<Bytes> },
    /// A peer's connection closed (crash, exit, or network loss).
    PeerGone { peer: PeerId },
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
