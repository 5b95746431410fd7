//! A socket task: the only code that turns frames into [`Message`]s and back.
//!
//! [`spawn`] moves a [`FrameSocket`] into its own task, which keeps a receive loop running at
//! all times (the `zeromq` crate only notices dead peers while a receive is pending) and sends
//! whatever the owner queues on the [`Outbox`]. The owner sees typed [`Inbound`] events; a
//! malformed frame is an event for that peer, never an error that stops the socket.

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::protocol::{decode, encode, DecodeError, Envelope, Message};
use crate::transport::{FrameSocket, PeerId, SocketEvent};

/// How long one send may wait for a slow peer before the message is dropped.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the owner of a socket receives.
#[derive(Debug)]
pub enum Inbound {
    Message {
        peer: PeerId,
        envelope: Envelope,
    },
    /// The peer sent frames that are not a message of this protocol version.
    Malformed {
        peer: PeerId,
        error: DecodeError,
    },
    /// The peer's connection closed.
    PeerGone {
        peer: PeerId,
    },
    /// The socket itself failed; no more events follow.
    Closed {
        reason: String,
    },
}

struct Outgoing {
    peer: Option<PeerId>,
    frames: Vec<Bytes>,
}

/// Queues messages on a socket task. Cheap to clone; the task ends when every clone is dropped.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Outgoing>,
}

impl Outbox {
    /// Queues `message` for `peer` (None on a client socket). Returns false if the socket is gone.
    pub fn send(&self, peer: Option<&PeerId>, message: &Message, payload: Vec<Bytes>) -> bool {
        let frames = encode(message, payload);
        self.tx.send(Outgoing { peer: peer.cloned(), frames }).is_ok()
    }

    /// Queues a message without payload for a server's peer.
    pub fn reply(&self, peer: &PeerId, message: &Message) -> bool {
        self.send(Some(peer), message, Vec::new())
    }

    /// Queues a message without payload on a client socket.
    pub fn post(&self, message: &Message) -> bool {
        self.send(None, message, Vec::new())
    }

    /// Queues raw frames (tests use this to send garbage).
    pub fn send_raw(&self, peer: Option<&PeerId>, frames: Vec<Bytes>) -> bool {
        self.tx.send(Outgoing { peer: peer.cloned(), frames }).is_ok()
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Moves `socket` into a task; returns its outbox and its stream of events. `label` names the
/// socket in logs.
pub fn spawn<S: FrameSocket>(socket: S, label: String) -> (Outbox, mpsc::UnboundedReceiver<Inbound>) {
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    tokio::spawn(run(socket, label, out_rx, in_tx));
    (Outbox { tx: out_tx }, in_rx)
}

async fn run<S: FrameSocket>(
    mut socket: S,
    label: String,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    inbound: mpsc::UnboundedSender<Inbound>,
) {
    loop {
        tokio::select! {
            // Outgoing first: queued messages (a Release, a goodbye) are flushed before the
            // task notices that its owner is gone.
            biased;
            out = outgoing.recv() => {
                let Some(out) = out else { break };
                // A peer that stopped reading fills its queue; waiting for it would stop this
                // socket (and, on a server, every other peer) from being served.
                match tokio::time::timeout(SEND_TIMEOUT, socket.send(out.peer, out.frames)).await {
                    Ok(Ok(())) => {}
                    // A peer that just left is normal; the owner learns it from PeerGone.
                    Ok(Err(e)) => tracing::debug!(socket = %label, "send dropped: {e}"),
                    Err(_) => tracing::warn!(socket = %label, "dropped a message to a peer that does not read"),
                }
            }
            event = socket.next_event() => {
                let event = match event {
                    Ok(SocketEvent::Frames { peer, frames }) => match decode(frames) {
                        Ok(envelope) => Inbound::Message { peer, envelope },
                        Err(error) => Inbound::Malformed { peer, error },
                    },
                    Ok(SocketEvent::PeerGone { peer }) => Inbound::PeerGone { peer },
                    Err(e) => {
                        let _ = inbound.send(Inbound::Closed { reason: e.to_string() });
                        break;
                    }
                };
                if inbound.send(event).is_err() {
                    break;
                }
            }
            _ = inbound.closed() => break,
        }
    }
}
