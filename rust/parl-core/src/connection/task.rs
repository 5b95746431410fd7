//! The socket task: receives frames, runs a server's handshakes, checks every message in its
//! session, and closes connections that fail a check, miss the handshake deadline or exceed
//! the caps.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::outbox::{Outgoing, Sealers};
use super::Inbound;
use crate::auth::{Gate, Verdict};
use crate::logging::Throttle;
use crate::pending::{PendingPeers, HANDSHAKE_DEADLINE, MAX_PENDING, MAX_PENDING_PER_ADDRESS};
use crate::protocol::{decode, encode, Service};
use crate::session::{Opener, Session, SessionError};
use crate::transport::{Digests, FrameSocket, PeerId, SocketEvent};

/// How long one send may wait for a slow peer before the message is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Which end of its connections a socket task is.
pub(super) enum Role {
    /// A server: peers pass the gate's handshake, then each has a session (with a key).
    Server(Gate),
    /// A client of one server, with the receiving half of its session (None without a key).
    Client(Option<Opener>),
}

/// What the socket task does after one event.
enum Next {
    /// Hand this to the owner.
    Deliver(Inbound),
    /// Nothing for the owner.
    Skip,
    /// The socket is done (a client's session broke): tell the owner why and stop.
    Stop(String),
}

pub(super) struct SocketTask<S> {
    socket: S,
    label: String,
    role: Role,
    /// A server's peers' sessions (receiving halves); the sending halves are in `sealers`.
    openers: HashMap<PeerId, Opener>,
    sealers: Option<Arc<Sealers>>,
    /// A keyed server's connections still in the handshake.
    pending: Option<PendingPeers>,
    /// Each connected peer's remote address (keyed servers), to name it in warnings.
    addresses: HashMap<PeerId, String>,
    /// Peers dropped for a message that failed its session's check, logged at most every 10 s.
    rejections: Throttle,
    /// Connections closed for a late handshake or over the caps, logged at most every 10 s.
    closures: Throttle,
}

impl<S: FrameSocket> SocketTask<S> {
    pub(super) fn new(socket: S, label: String, role: Role, sealers: Option<Arc<Sealers>>) -> SocketTask<S> {
        // Only a keyed server has a handshake to wait for.
        let pending = match &role {
            Role::Server(gate) if gate.keyed() => {
                let per_address = match gate.service() {
                    Service::Worker => MAX_PENDING,
                    Service::Master | Service::Job => MAX_PENDING_PER_ADDRESS,
                };
                Some(PendingPeers::new(HANDSHAKE_DEADLINE, per_address))
            }
            _ => None,
        };
        SocketTask {
            socket,
            label,
            role,
            openers: HashMap::new(),
            sealers,
            pending,
            addresses: HashMap::new(),
            rejections: Throttle::new(Duration::from_secs(10)),
            closures: Throttle::new(Duration::from_secs(10)),
        }
    }

    pub(super) async fn run(
        mut self,
        mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
        inbound: mpsc::UnboundedSender<Inbound>,
    ) {
        // Late handshakes are looked for once a second, only while there are any.
        let mut deadlines = tokio::time::interval(Duration::from_secs(1));
        deadlines.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Outgoing first: queued messages (a Release, a goodbye) are flushed before the
                // task notices that its owner is gone.
                biased;
                out = outgoing.recv() => {
                    let Some(out) = out else { break };
                    // A peer that stopped reading fills its queue; waiting for it would stop this
                    // socket (and, on a server, every other peer) from being served.
                    match tokio::time::timeout(SEND_TIMEOUT, self.socket.send(out.peer, out.frames)).await {
                        Ok(Ok(())) => {}
                        // A peer that just left is normal; the owner learns it from PeerGone.
                        Ok(Err(e)) => tracing::debug!(socket = %self.label, "send dropped: {e}"),
                        Err(_) => tracing::warn!(socket = %self.label, "dropped a message to a peer that does not read"),
                    }
                }
                event = self.socket.next_event() => {
                    let next = match event {
                        Ok(SocketEvent::Frames { peer, frames, digests }) => self.on_frames(peer, frames, &digests).await,
                        Ok(SocketEvent::PeerGone { peer }) => {
                            self.forget(&peer);
                            Next::Deliver(Inbound::PeerGone { peer })
                        }
                        Ok(SocketEvent::PeerArrived { peer, address }) => self.arrived(peer, address),
                        Err(e) => Next::Stop(e.to_string()),
                    };
                    match next {
                        Next::Deliver(event) => {
                            if inbound.send(event).is_err() {
                                break;
                            }
                        }
                        Next::Skip => {}
                        Next::Stop(reason) => {
                            let _ = inbound.send(Inbound::Closed { reason });
                            break;
                        }
                    }
                }
                _ = deadlines.tick(), if self.pending.as_ref().is_some_and(|p| !p.is_empty()) => {
                    self.close_late_handshakes();
                }
                _ = inbound.closed() => break,
            }
        }
    }

    /// A keyed server's new connection: counted until it passes the handshake, or closed at
    /// once if there are too many such already.
    fn arrived(&mut self, peer: PeerId, address: String) -> Next {
        let Some(pending) = self.pending.as_mut() else { return Next::Skip };
        self.addresses.insert(peer.clone(), address.clone());
        if let Err(refusal) = pending.arrive(peer.clone(), address, std::time::Instant::now()) {
            if let Some(suppressed) = self.closures.allow() {
                tracing::warn!(
                    socket = %self.label,
                    "closed a new connection at once: {refusal} ({suppressed} more closures not logged)"
                );
            }
            self.socket.disconnect(&peer);
        }
        Next::Skip
    }

    fn close_late_handshakes(&mut self) {
        let Some(pending) = self.pending.as_mut() else { return };
        let late = pending.expired(std::time::Instant::now());
        if let Some(first) = late.first() {
            if let Some(suppressed) = self.closures.allow() {
                let from = self.addresses.get(first).map_or("?", String::as_str);
                tracing::warn!(
                    socket = %self.label,
                    "closed {} connections (the first from {from}) that did not pass the key handshake \
                     within {HANDSHAKE_DEADLINE:?} ({suppressed} more closures not logged)",
                    late.len()
                );
            }
        }
        for peer in late {
            self.forget(&peer);
            self.socket.disconnect(&peer);
        }
    }

    async fn on_frames(&mut self, peer: PeerId, frames: Vec<Bytes>, digests: &Digests) -> Next {
        let opened = match &mut self.role {
            Role::Client(Some(opener)) => opener.open_digested(frames, digests),
            // No key: nothing to check.
            Role::Client(None) => Ok(frames),
            Role::Server(_) => match self.openers.get_mut(&peer) {
                Some(opener) => opener.open_digested(frames, digests),
                None => return self.before_session(peer, frames).await,
            },
        };
        match opened {
            Ok(frames) => match decode(frames) {
                Ok(envelope) => Next::Deliver(Inbound::Message { peer, envelope }),
                // Garbage carries nothing to run; the owner answers it like any peer's.
                Err(error) => Next::Deliver(Inbound::Malformed { peer, error }),
            },
            Err(error) => self.reject(peer, error),
        }
    }

    /// A server's message from a peer without a session: the handshake, or (insecure) anything.
    async fn before_session(&mut self, peer: PeerId, frames: Vec<Bytes>) -> Next {
        let Role::Server(gate) = &mut self.role else { unreachable!("only servers have a gate") };
        let envelope = match decode(frames) {
            Ok(envelope) => envelope,
            Err(error) => return Next::Deliver(Inbound::Malformed { peer, error }),
        };
        let answer = match gate.inspect(&peer, &envelope.message) {
            Verdict::Pass => return Next::Deliver(Inbound::Message { peer, envelope }),
            Verdict::Consumed => return Next::Skip,
            Verdict::Answer(answer) => Some(answer),
            Verdict::Trusted { answer, session } => {
                self.socket.trust(Some(&peer));
                if let Some(pending) = self.pending.as_mut() {
                    pending.settle(&peer);
                }
                if let (Some(Session { sealer, opener }), Some(sealers)) = (session, &self.sealers) {
                    sealers.insert(Some(peer.clone()), sealer);
                    self.openers.insert(peer.clone(), opener);
                }
                answer
            }
        };
        if let Some(answer) = answer {
            let frames = encode(&answer, Vec::new());
            let _ = tokio::time::timeout(SEND_TIMEOUT, self.socket.send(Some(peer), frames)).await;
        }
        Next::Skip
    }

    /// A message failed its session's check: it is dropped unread and the connection closed.
    fn reject(&mut self, peer: PeerId, error: SessionError) -> Next {
        if let Some(suppressed) = self.rejections.allow() {
            let from = self.addresses.get(&peer).map_or(String::new(), |address| format!(" from {address}"));
            tracing::warn!(
                socket = %self.label,
                "closed a connection{from} whose message failed authentication: {error}; a relay \
                 or a forger without the cluster key? ({suppressed} more not logged)"
            );
        }
        match self.role {
            Role::Client(_) => Next::Stop(format!("the server's message failed authentication: {error}")),
            Role::Server(_) => {
                self.forget(&peer);
                self.socket.disconnect(&peer);
                Next::Skip
            }
        }
    }

    fn forget(&mut self, peer: &PeerId) {
        self.openers.remove(peer);
        self.addresses.remove(peer);
        if let Some(pending) = self.pending.as_mut() {
            pending.settle(peer);
        }
        if let Some(sealers) = &self.sealers {
            sealers.remove(peer);
        }
        if let Role::Server(gate) = &mut self.role {
            gate.forget(peer);
        }
    }
}
