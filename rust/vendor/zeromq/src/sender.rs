//! parl_rs patch: [`SocketSender`], a handle that sends on a DEALER or ROUTER socket from any
//! thread, without waiting and without going through the task that owns the socket.
//!
//! A program whose threads hand every message to a socket task pays a wake-up of the
//! runtime thread per message; with this handle the sending thread writes to the connection
//! itself (see `peer_writer`), and only bytes the kernel cannot take yet are left to the
//! runtime.

use crate::backend::GenericSocketBackend;
use crate::codec::Message;
use crate::util::PeerIdentity;
use crate::{ZmqError, ZmqMessage, ZmqResult};

use std::convert::TryInto;
use std::sync::Arc;

/// Sends on a socket from any thread; cheap to clone. Sends fail once the socket is dropped.
#[derive(Clone)]
pub struct SocketSender {
    backend: Arc<GenericSocketBackend>,
    /// ROUTER: the first frame of a message names the peer. DEALER: round robin.
    routed: bool,
}

impl SocketSender {
    pub(crate) fn new(backend: Arc<GenericSocketBackend>, routed: bool) -> SocketSender {
        SocketSender { backend, routed }
    }

    /// Writes `message` now as far as the connection takes it, and leaves the rest to the
    /// peer's writer task; never waits. Fails if the peer is unknown or gone, or if its
    /// backlog is full (the peer does not read).
    pub fn send(&self, mut message: ZmqMessage) -> ZmqResult<()> {
        if !self.routed {
            return self.backend.send_round_robin_now(Message::Message(message));
        }
        if message.len() <= 1 {
            return Err(ZmqError::Socket(
                "ROUTER send requires at least 2 frames: identity frame + message",
            ));
        }
        let peer_id: PeerIdentity = message.pop_front().expect("two frames").try_into()?;
        self.backend
            .send_to_peer_now(&peer_id, Message::Message(message))
    }
}
