//! [`FrameSocket`] over the `zeromq` crate: ROUTER for servers, DEALER for clients.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::StreamExt;
use zeromq::{
    DealerSocket, RouterSocket, Socket, SocketEvent as ZmqEvent, SocketOptions, SocketRecv, SocketSend,
    SocketSender, ZmqError, ZmqMessage,
};

use super::{tcp_endpoint, DirectSend, FrameSocket, PeerId, SendNowError, SocketEvent, TransportError};
use crate::logging::Throttle;

/// The largest message a peer may send (all frames together); a peer that announces a larger
/// one is disconnected before anything is allocated. `PARL_RS_MAX_MESSAGE_MB` overrides it.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 << 30;

/// The message size limit in force (the default, or `PARL_RS_MAX_MESSAGE_MB`).
pub fn max_message_size() -> usize {
    std::env::var("PARL_RS_MAX_MESSAGE_MB")
        .ok()
        .and_then(|mb| mb.parse::<usize>().ok())
        .map(|mb| mb.saturating_mul(1 << 20))
        .unwrap_or(DEFAULT_MAX_MESSAGE_SIZE)
}

fn socket_options() -> SocketOptions {
    let mut options = SocketOptions::default();
    options.max_message_size(max_message_size());
    // Until the handshake passes (see `FrameSocket::trust`).
    options.first_message_size(super::PRE_AUTH_MESSAGE_LIMIT);
    // Reads start at 128 bytes (cheap for thousands of idle peers) and double while they
    // fill up, to 1 MiB: large payloads need few syscalls.
    options.read_buffer(128, 1 << 20, 2);
    options
}

/// A bound ROUTER socket: many peers, each message tagged with its peer.
pub struct ZmqServer {
    socket: RouterSocket,
    // The crate reports disconnects only through the monitor, and only while `recv` is polled.
    monitor: mpsc::Receiver<ZmqEvent>,
    /// Connections refused for want of file descriptors are logged, at most every 10 s.
    accept_log: Throttle,
}

impl ZmqServer {
    /// Binds "host:port" (port 0 picks a free one). Returns the socket and the bound
    /// "tcp://host:port".
    pub async fn bind(address: &str) -> Result<(ZmqServer, String), TransportError> {
        let mut options = socket_options();
        // A connection that sends nothing is closed: it must not hold a descriptor for ever.
        options.accept_handshake_timeout(crate::pending::HANDSHAKE_DEADLINE);
        let mut socket = RouterSocket::with_options(options);
        let monitor = socket.monitor();
        let endpoint = socket
            .bind(&tcp_endpoint(address))
            .await
            .map_err(|e| TransportError::Bind { address: address.to_string(), reason: e.to_string() })?;
        let accept_log = Throttle::new(Duration::from_secs(10));
        Ok((ZmqServer { socket, monitor, accept_log }, endpoint.to_string()))
    }
}

impl FrameSocket for ZmqServer {
    async fn next_event(&mut self) -> Result<SocketEvent, TransportError> {
        loop {
            tokio::select! {
                message = self.socket.recv() => {
                    let message = message.map_err(|e| TransportError::Closed(e.to_string()))?;
                    // Frame 0 is the peer's id.
                    let digests = (1..message.len()).map(|index| message.digest(index)).collect();
                    let mut frames = message.into_vec();
                    if frames.is_empty() {
                        continue;
                    }
                    let peer = frames.remove(0);
                    return Ok(SocketEvent::Frames { peer, frames, digests });
                }
                Some(event) = self.monitor.next() => match event {
                    ZmqEvent::Disconnected(peer) => return Ok(SocketEvent::PeerGone { peer: peer.into() }),
                    ZmqEvent::Accepted(endpoint, peer) => {
                        let address = match endpoint {
                            zeromq::Endpoint::Tcp(host, _) => host.to_string(),
                            other => other.to_string(),
                        };
                        return Ok(SocketEvent::PeerArrived { peer: peer.into(), address });
                    }
                    ZmqEvent::AcceptFailed(ZmqError::Network(e)) if out_of_descriptors(&e) => {
                        if let Some(suppressed) = self.accept_log.allow() {
                            tracing::warn!(
                                "cannot accept connections: {e}; new peers wait until descriptors free up. \
                                 Raise the limit on open files (ulimit -n; each worker and client holds one) \
                                 ({suppressed} more not logged)"
                            );
                        }
                    }
                    _ => {}
                },
            }
        }
    }

    async fn send(&mut self, peer: Option<PeerId>, frames: Vec<Bytes>) -> Result<(), TransportError> {
        let peer = peer.ok_or_else(|| TransportError::Send("a server send needs a peer".into()))?;
        let mut message = ZmqMessage::from(peer);
        for frame in frames {
            message.push_back(frame);
        }
        self.socket.send(message).await.map_err(|e| TransportError::Send(e.to_string()))
    }

    fn direct_sender(&self) -> Option<Arc<dyn DirectSend>> {
        Some(Arc::new(ZmqDirect { sender: self.socket.sender(), routed: true }))
    }

    fn trust(&mut self, peer: Option<&PeerId>) {
        if let Some(peer) = peer.and_then(|peer| zeromq::util::PeerIdentity::try_from(peer.clone()).ok()) {
            self.socket.raise_message_limit(&peer);
        }
    }

    fn disconnect(&mut self, peer: &PeerId) {
        if let Ok(peer) = zeromq::util::PeerIdentity::try_from(peer.clone()) {
            self.socket.disconnect_peer(&peer);
        }
    }
}

/// EMFILE or ENFILE: this process (or the system) has no file descriptor left.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// A connected DEALER socket: exactly one peer. It never reconnects by itself.
pub struct ZmqClient {
    socket: DealerSocket,
    monitor: mpsc::Receiver<ZmqEvent>,
    peer: PeerId,
}

impl ZmqClient {
    /// Connects to "host:port", giving up after `timeout` (the crate would otherwise wait for
    /// a listener for 30 s).
    pub async fn connect(address: &str, timeout: Duration) -> Result<ZmqClient, TransportError> {
        let mut options = socket_options();
        options.connect_timeout(timeout);
        let mut socket = DealerSocket::with_options(options);
        let monitor = socket.monitor();
        let endpoint = tcp_endpoint(address);
        let connect_error = |reason: String| TransportError::Connect { address: address.to_string(), reason };
        // The handshake itself can hang on a peer that accepts TCP but never answers ZMTP.
        match tokio::time::timeout(timeout, socket.connect(&endpoint)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(connect_error(e.to_string())),
            Err(_) => return Err(connect_error(format!("no answer within {timeout:?}"))),
        }
        Ok(ZmqClient { socket, monitor, peer: Bytes::from_static(b"peer") })
    }
}

impl FrameSocket for ZmqClient {
    async fn next_event(&mut self) -> Result<SocketEvent, TransportError> {
        loop {
            tokio::select! {
                message = self.socket.recv() => {
                    let message = message.map_err(|e| TransportError::Closed(e.to_string()))?;
                    let digests = (0..message.len()).map(|index| message.digest(index)).collect();
                    return Ok(SocketEvent::Frames { peer: self.peer.clone(), frames: message.into_vec(), digests });
                }
                Some(event) = self.monitor.next() => {
                    if let ZmqEvent::Disconnected(_) = event {
                        return Ok(SocketEvent::PeerGone { peer: self.peer.clone() });
                    }
                }
            }
        }
    }

    async fn send(&mut self, _peer: Option<PeerId>, frames: Vec<Bytes>) -> Result<(), TransportError> {
        let message = ZmqMessage::try_from(frames)
            .map_err(|_| TransportError::Send("cannot send an empty message".into()))?;
        self.socket.send(message).await.map_err(|e| TransportError::Send(e.to_string()))
    }

    fn direct_sender(&self) -> Option<Arc<dyn DirectSend>> {
        Some(Arc::new(ZmqDirect { sender: self.socket.sender(), routed: false }))
    }

    fn trust(&mut self, _peer: Option<&PeerId>) {
        self.socket.raise_message_limit();
    }
}

/// [`DirectSend`] through the crate's [`SocketSender`].
struct ZmqDirect {
    sender: SocketSender,
    /// A server: messages start with the peer's id.
    routed: bool,
}

impl DirectSend for ZmqDirect {
    fn send_now(
        &self,
        peer: Option<&PeerId>,
        frames: Vec<Bytes>,
        more_follows: bool,
    ) -> Result<(), SendNowError> {
        let mut message = match (self.routed, peer) {
            (true, Some(peer)) => {
                let mut message = ZmqMessage::from(peer.clone());
                for frame in frames {
                    message.push_back(frame);
                }
                message
            }
            (true, None) => return Err(SendNowError::Gone("a server send needs a peer".into())),
            (false, _) => ZmqMessage::try_from(frames)
                .map_err(|_| SendNowError::Gone("cannot send an empty message".into()))?,
        };
        if more_follows {
            message.set_continued();
        }
        self.sender.send(message).map_err(|e| match e {
            ZmqError::BufferFull(_) => SendNowError::NotReading,
            other => SendNowError::Gone(other.to_string()),
        })
    }
}
