//! Drives each server's real dispatch without sockets, for the fuzz targets in `rust/fuzz`
//! (and the unit tests that replay what they found). Not an API: it exists only with the
//! `fuzzing` feature (and in tests), and is hidden from the docs.
//!
//! Each harness owns a server's state exactly as its loop does ([`Worker`], [`Job`]; the
//! master's core is driven directly, without a harness) and hands it events through the same methods the loop calls. Frames go through
//! the real socket task ([`connection::spawn`]) over a [`FakeSocket`], so they are decoded by
//! the real codec, and what the server sends is checked to decode. Nothing waits on a real
//! timer, nothing binds a port, and no process is started (see [`Worker`]). Everything runs
//! on a current-thread runtime ([`block_on`]), so a run is deterministic and replayable.

use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::connection::{self, Inbound, Outbox};
use crate::protocol::{decode, Message};
use crate::transport::{FrameSocket, PeerId, SocketEvent, TransportError};

pub use crate::job::fuzz::Job;
pub use crate::worker::fuzz::Worker;

/// Runs `future` on a fresh current-thread runtime (with timers, which the socket task uses
/// for its send timeout). Every task left when it returns is dropped with the runtime.
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime")
        .block_on(future)
}

/// Lets the tasks the harness's last step woke run (a socket task sending what the server
/// queued, say).
pub async fn settle() {
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

/// The peer id the harnesses use for peer number `n`.
pub fn peer(n: u8) -> PeerId {
    Bytes::from(vec![b'p', n])
}

/// A socket whose peers are the harness: it yields the events the harness feeds it, and keeps
/// what the server sends.
pub(crate) struct FakeSocket {
    feed: mpsc::UnboundedReceiver<SocketEvent>,
    sent: Arc<Mutex<Vec<Vec<Bytes>>>>,
}

impl FrameSocket for FakeSocket {
    async fn next_event(&mut self) -> Result<SocketEvent, TransportError> {
        self.feed.recv().await.ok_or_else(|| TransportError::Closed("the harness is gone".into()))
    }

    async fn send(&mut self, _peer: Option<PeerId>, frames: Vec<Bytes>) -> Result<(), TransportError> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).push(frames);
        Ok(())
    }
}

/// The harness's end of a [`FakeSocket`] that runs in a real socket task.
pub(crate) struct Wire {
    feed: mpsc::UnboundedSender<SocketEvent>,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    sent: Arc<Mutex<Vec<Vec<Bytes>>>>,
}

/// A socket task over a [`FakeSocket`]: the server's outbox, and the harness's end. Must be
/// called inside a runtime ([`block_on`]).
pub(crate) fn socket_task(label: &str) -> (Outbox, Wire) {
    let (feed, events) = mpsc::unbounded_channel();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let socket = FakeSocket { feed: events, sent: sent.clone() };
    let (outbox, inbound) = connection::spawn_ungated(socket, label.to_string());
    (outbox, Wire { feed, inbound, sent })
}

impl Wire {
    /// Passes `event` through the socket task; returns what the server's loop would receive.
    pub(crate) async fn deliver(&mut self, event: SocketEvent) -> Inbound {
        self.feed.send(event).expect("the socket task runs");
        self.inbound.recv().await.expect("the socket task answers every event")
    }

    /// Checks that everything the server sent so far decodes (a peer must never be sent what
    /// it cannot read), and forgets it.
    pub(crate) fn check_sent(&self) {
        self.take_sent();
    }

    /// What the server sent so far, each checked to decode, and forgotten.
    pub(crate) fn take_sent(&self) -> Vec<Message> {
        let sent = std::mem::take(&mut *self.sent.lock().unwrap_or_else(|e| e.into_inner()));
        let decoded = sent.into_iter().map(|frames| match decode(frames) {
            Ok(envelope) => envelope.message,
            Err(e) => panic!("the server sent a message that does not decode: {e}"),
        });
        decoded.collect()
    }
}
