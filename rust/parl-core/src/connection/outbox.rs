//! The sending side of a socket: [`Outbox`], which seals each message in its peer's session
//! and hands it to the transport, from whatever thread sends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::logging::Throttle;
use crate::protocol::{encode, Message};
use crate::session::Sealer;
use crate::transport::{DirectSend, PeerId, SendNowError};

pub(super) struct Outgoing {
    pub(super) peer: Option<PeerId>,
    pub(super) frames: Vec<Bytes>,
}

/// Sends messages on a socket. Cheap to clone; the socket task ends when every clone is
/// dropped.
///
/// When the transport allows it (ZeroMQ does), the calling thread writes the message to the
/// connection itself ([`DirectSend`]): a request sent from a Python thread then costs no
/// wake-up of the runtime thread. Otherwise messages are queued on the socket task.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Outgoing>,
    direct: Option<Arc<dyn DirectSend>>,
    label: Arc<str>,
    /// Messages dropped for a peer that does not read are logged at most every 10 s.
    dropped_log: Arc<Mutex<Throttle>>,
    /// The sending halves of the socket's sessions (None without a key: nothing to seal).
    sealers: Option<Arc<Sealers>>,
}

/// The sending half of each session of a socket: a client's one session under `None`, a
/// server's under each peer's id. The socket task adds and removes them; every clone of the
/// [`Outbox`] seals with them, on whatever thread sends.
#[derive(Default)]
pub(super) struct Sealers(Mutex<HashMap<Option<PeerId>, Arc<Mutex<Sealer>>>>);

impl Sealers {
    fn get(&self, peer: Option<&PeerId>) -> Option<Arc<Mutex<Sealer>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&peer.cloned()).cloned()
    }

    pub(super) fn insert(&self, peer: Option<PeerId>, sealer: Sealer) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(peer, Arc::new(Mutex::new(sealer)));
    }

    pub(super) fn remove(&self, peer: &PeerId) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&Some(peer.clone()));
    }
}

impl Outbox {
    pub(super) fn new(
        tx: mpsc::UnboundedSender<Outgoing>,
        direct: Option<Arc<dyn DirectSend>>,
        label: &str,
        sealers: Option<Arc<Sealers>>,
    ) -> Outbox {
        let dropped_log = Arc::new(Mutex::new(Throttle::new(Duration::from_secs(10))));
        Outbox { tx, direct, label: label.into(), dropped_log, sealers }
    }

    /// Sends `message` to `peer` (None on a client socket); never waits. Returns false if the
    /// socket is gone.
    pub fn send(&self, peer: Option<&PeerId>, message: &Message, payload: Vec<Bytes>) -> bool {
        self.send_raw(peer, encode(message, payload))
    }

    /// Sends a message without payload to a server's peer.
    pub fn reply(&self, peer: &PeerId, message: &Message) -> bool {
        self.send(Some(peer), message, Vec::new())
    }

    /// Sends a message without payload on a client socket.
    pub fn post(&self, message: &Message) -> bool {
        self.send(None, message, Vec::new())
    }

    /// Sends frames as they are, in the peer's session if there is one (tests use this to
    /// send garbage).
    pub fn send_raw(&self, peer: Option<&PeerId>, frames: Vec<Bytes>) -> bool {
        let Some(sealers) = &self.sealers else { return self.transmit(peer, frames).is_ok() };
        let Some(sealer) = sealers.get(peer) else {
            // The peer left (its session went with it); the owner learns it from PeerGone.
            tracing::debug!(socket = %self.label, "send dropped: no session with that peer");
            return !self.tx.is_closed();
        };
        // Sealed and handed to the transport under one lock: the peer checks messages in the
        // order they were sealed.
        let mut sealer = sealer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(direct) =
            self.direct.as_ref().filter(|_| sealer.tags_apart() && worth_overlapping(&frames))
        {
            return self.send_then_tag(direct.as_ref(), peer, frames, &mut sealer);
        }
        match sealer.seal(frames).map(|frames| self.transmit(peer, frames)) {
            Ok(Ok(open)) => open,
            // Never queued: the next message takes its sequence number, so the peer's
            // count stays right.
            Ok(Err(NotSent)) => {
                sealer.forget_last();
                true
            }
            Err(e) => {
                tracing::warn!(socket = %self.label, "send dropped: {e}");
                false
            }
        }
    }

    /// Sends a large message's frames at once and its tag after them: the runtime thread
    /// writes what the connection does not take now while this thread hashes, so the tag
    /// costs little more than the transfer. The caller holds the peer's sealer, so nothing
    /// else is sent to the peer between the two parts.
    fn send_then_tag(
        &self,
        direct: &dyn DirectSend,
        peer: Option<&PeerId>,
        frames: Vec<Bytes>,
        sealer: &mut Sealer,
    ) -> bool {
        if self.tx.is_closed() {
            return false;
        }
        // Clones share the frames' memory; they are dropped before this returns.
        if let Err(e) = direct.send_now(peer, frames.clone(), true) {
            self.dropped(e);
            return true;
        }
        let tag = match sealer.tag(&frames) {
            Ok(tag) => tag,
            Err(e) => {
                // The frames went out without their tag: the peer's check fails on whatever
                // follows, and it closes the connection.
                tracing::warn!(socket = %self.label, "send dropped: {e}");
                return false;
            }
        };
        drop(frames);
        if let Err(e) = direct.send_now(peer, vec![tag], false) {
            // As above: a message without its tag is never accepted.
            self.dropped(e);
        }
        true
    }

    /// Hands frames to the transport: written from this thread if it can, else queued.
    /// Ok(false) if the socket is gone; Err if the message was dropped (and logged).
    fn transmit(&self, peer: Option<&PeerId>, frames: Vec<Bytes>) -> Result<bool, NotSent> {
        let Some(direct) = &self.direct else {
            return Ok(self.tx.send(Outgoing { peer: peer.cloned(), frames }).is_ok());
        };
        if self.tx.is_closed() {
            return Ok(false);
        }
        direct.send_now(peer, frames, false).map(|()| true).map_err(|e| {
            self.dropped(e);
            NotSent
        })
    }

    fn dropped(&self, error: SendNowError) {
        match error {
            // A peer that just left is normal; the owner learns it from PeerGone.
            SendNowError::Gone(e) => tracing::debug!(socket = %self.label, "send dropped: {e}"),
            // Waiting for it would stall the sender (on a server, for every other peer).
            e @ SendNowError::NotReading => {
                let allowed = self.dropped_log.lock().unwrap_or_else(|e| e.into_inner()).allow();
                if let Some(suppressed) = allowed {
                    tracing::warn!(
                        socket = %self.label,
                        "dropped a message: {e}; is that process stuck or stopped? \
                         ({suppressed} more dropped since the last warning)"
                    );
                }
            }
        }
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A message the transport dropped instead of queuing it (see [`Outbox::transmit`]).
struct NotSent;

/// Whether a message is large enough that writing it before its tag is computed pays (its
/// hashing takes ~0.2 ms from here on).
fn worth_overlapping(frames: &[Bytes]) -> bool {
    frames.iter().map(Bytes::len).sum::<usize>() >= 1 << 20
}
