//! A socket task: the only code that turns frames into [`Message`]s and back.
//!
//! [`spawn_server`] and [`connect`] move a [`FrameSocket`] into its own task, which keeps a
//! receive loop running at all times (the `zeromq` crate only notices dead peers while a
//! receive is pending) and sends whatever the owner queues on the [`Outbox`]. The owner sees
//! typed [`Inbound`] events; a malformed frame is an event for that peer, never an error that
//! stops the socket.
//!
//! Both ends run the cluster-key handshake here ([`crate::auth`]) and then check every message
//! in the session it opened ([`crate::session`]), so no owner ever sees a message that was not
//! sent by the peer that proved it holds the key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::auth::{Auth, Gate, Handshake, Verdict};
use crate::error::{Error, Result};
use crate::logging::Throttle;
use crate::pending::{PendingPeers, HANDSHAKE_DEADLINE};
use crate::protocol::{decode, encode, DecodeError, Envelope, Message, Service};
use crate::session::{Opener, Sealer, Session, SessionError};
use crate::transport::zmq::ZmqClient;
use crate::transport::{Digests, DirectSend, FrameSocket, PeerId, SendNowError, SocketEvent, TransportError};

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
struct Sealers(Mutex<HashMap<Option<PeerId>, Arc<Mutex<Sealer>>>>);

impl Sealers {
    fn get(&self, peer: Option<&PeerId>) -> Option<Arc<Mutex<Sealer>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&peer.cloned()).cloned()
    }

    fn insert(&self, peer: Option<PeerId>, sealer: Sealer) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(peer, Arc::new(Mutex::new(sealer)));
    }

    fn remove(&self, peer: &PeerId) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&Some(peer.clone()));
    }
}

impl Outbox {
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

/// The events of one socket task.
pub type Events = mpsc::UnboundedReceiver<Inbound>;

/// Moves a bound server socket of kind `service` into a task that admits only peers that
/// pass the handshake for `auth`, and then only the messages of their sessions; returns its
/// outbox and its stream of events. `label` names it in logs.
pub fn spawn_server<S: FrameSocket>(
    socket: S,
    service: Service,
    label: String,
    auth: Auth,
) -> (Outbox, Events) {
    let sealers = auth.key().map(|_| Arc::new(Sealers::default()));
    let gate = Gate::new(auth, service, label.clone());
    spawn(socket, label, Role::Server(gate), sealers)
}

/// Connects to the server of kind `service` at "host:port", runs the handshake for `auth`
/// (checking that the server holds the key before anything else is sent), and moves the
/// socket into a task that checks every message in the session the handshake opened.
/// `timeout` bounds the connection and the handshake each.
pub async fn connect(
    address: &str,
    service: Service,
    timeout: Duration,
    auth: &Auth,
    label: String,
) -> Result<(Outbox, Events)> {
    let mut socket = ZmqClient::connect(address, timeout).await?;
    let unreachable =
        |reason: String| Error::Transport(TransportError::Connect { address: address.to_string(), reason });
    let shake = Handshake::new(auth, service);
    socket.send(None, encode(&shake.hello(), Vec::new())).await?;
    let answer = match tokio::time::timeout(timeout, first_message(&mut socket)).await {
        Ok(answer) => answer.map_err(unreachable)?,
        Err(_) => {
            return Err(unreachable(format!("connected, but no parl_rs server answered within {timeout:?}")))
        }
    };
    let agreed =
        shake.answer(answer).map_err(|reason| Error::Auth { address: address.to_string(), reason })?;
    if let Some(proof) = agreed.proof {
        socket.send(None, encode(&proof, Vec::new())).await?;
    }
    // The server proved it holds the key (or neither side has one): its replies may be large.
    socket.trust(None);
    let (opener, sealers) = match agreed.session {
        Some(Session { sealer, opener }) => {
            let sealers = Arc::new(Sealers::default());
            sealers.insert(None, sealer);
            (Some(opener), Some(sealers))
        }
        None => (None, None),
    };
    Ok(spawn(socket, label, Role::Client(opener), sealers))
}

/// The first message a freshly connected server sends (the answer to the hello).
async fn first_message(socket: &mut ZmqClient) -> std::result::Result<Message, String> {
    match socket.next_event().await {
        Ok(SocketEvent::Frames { frames, .. }) => match decode(frames) {
            Ok(envelope) => Ok(envelope.message),
            Err(e @ DecodeError::Version { .. }) => Err(e.to_string()),
            Err(e) => Err(format!("not a parl_rs server ({e})")),
        },
        Ok(SocketEvent::PeerGone { .. }) => Err("the connection closed during the handshake".into()),
        Ok(SocketEvent::PeerArrived { .. }) => Err("a client socket reported an arrival".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A socket task without the handshake gate: the fuzz harness drives servers' dispatch
/// directly (the gate has its own tests in `auth`).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn spawn_ungated<S: FrameSocket>(socket: S, label: String) -> (Outbox, Events) {
    spawn(socket, label, Role::Client(None), None)
}

/// Which end of its connections a socket task is.
enum Role {
    /// A server: peers pass the gate's handshake, then each has a session (with a key).
    Server(Gate),
    /// A client of one server, with the receiving half of its session (None without a key).
    Client(Option<Opener>),
}

fn spawn<S: FrameSocket>(
    socket: S,
    label: String,
    role: Role,
    sealers: Option<Arc<Sealers>>,
) -> (Outbox, Events) {
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let outbox = Outbox {
        tx: out_tx,
        direct: socket.direct_sender(),
        label: label.as_str().into(),
        dropped_log: Arc::new(Mutex::new(Throttle::new(Duration::from_secs(10)))),
        sealers: sealers.clone(),
    };
    // Only a keyed server has a handshake to wait for.
    let pending = match &role {
        Role::Server(gate) if gate.keyed() => Some(PendingPeers::new(HANDSHAKE_DEADLINE)),
        _ => None,
    };
    let task = SocketTask {
        socket,
        label,
        role,
        openers: HashMap::new(),
        sealers,
        pending,
        rejections: Throttle::new(Duration::from_secs(10)),
        closures: Throttle::new(Duration::from_secs(10)),
    };
    tokio::spawn(task.run(out_rx, in_tx));
    (outbox, in_rx)
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

struct SocketTask<S> {
    socket: S,
    label: String,
    role: Role,
    /// A server's peers' sessions (receiving halves); the sending halves are in `sealers`.
    openers: HashMap<PeerId, Opener>,
    sealers: Option<Arc<Sealers>>,
    /// A keyed server's connections still in the handshake.
    pending: Option<PendingPeers>,
    /// Peers dropped for a message that failed its session's check, logged at most every 10 s.
    rejections: Throttle,
    /// Connections closed for a late handshake or over the caps, logged at most every 10 s.
    closures: Throttle,
}

impl<S: FrameSocket> SocketTask<S> {
    async fn run(
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
        if !late.is_empty() {
            if let Some(suppressed) = self.closures.allow() {
                tracing::warn!(
                    socket = %self.label,
                    "closed {} connections that did not pass the key handshake within {HANDSHAKE_DEADLINE:?} \
                     ({suppressed} more closures not logged)",
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
            tracing::warn!(
                socket = %self.label,
                "closed a connection whose message failed authentication: {error}; a relay or a \
                 forger without the cluster key? ({suppressed} more not logged)"
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::host_port;
    use crate::transport::zmq::ZmqServer;

    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    /// A current-thread runtime on a thread of its own, like a Python process's I/O thread.
    /// Dropping the sender stops it.
    fn runtime_thread() -> (tokio::runtime::Handle, std::sync::mpsc::Sender<()>) {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            handle_tx.send(rt.handle().clone()).unwrap();
            rt.block_on(async {
                while stop_rx.try_recv() == Err(std::sync::mpsc::TryRecvError::Empty) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        });
        (handle_rx.recv().unwrap(), stop_tx)
    }

    /// A server and a client connected to it, each on a runtime thread of its own.
    struct Pair {
        server: tokio::runtime::Handle,
        client: tokio::runtime::Handle,
        outbox: Outbox,
        _server_outbox: Outbox,
        _replies: Events,
        _stops: [std::sync::mpsc::Sender<()>; 2],
    }

    impl Pair {
        /// The pair, and the server's events.
        fn connect() -> (Pair, Events) {
            let (server, stop_server) = runtime_thread();
            let (address, server_outbox, events) = server.block_on(async {
                let (socket, endpoint) = ZmqServer::bind("127.0.0.1:0").await.unwrap();
                let (outbox, events) = spawn_server(socket, Service::Master, "server".into(), Auth::Insecure);
                (host_port(&endpoint).to_string(), outbox, events)
            });
            let (client, stop_client) = runtime_thread();
            let (outbox, replies) = client
                .block_on(connect(
                    &address,
                    Service::Master,
                    Duration::from_secs(5),
                    &Auth::Insecure,
                    "client".into(),
                ))
                .unwrap();
            let pair = Pair {
                server,
                client,
                outbox,
                _server_outbox: server_outbox,
                _replies: replies,
                _stops: [stop_server, stop_client],
            };
            (pair, events)
        }
    }

    #[test]
    fn a_send_from_another_thread_goes_out_while_the_runtime_thread_is_busy() {
        let (pair, mut events) = Pair::connect();

        // Block the client's runtime thread for 3 s, as a long callback would.
        let (blocking, released) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (started, done) = (blocking.clone(), released.clone());
        pair.client.spawn(async move {
            started.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(3));
            done.store(true, Ordering::SeqCst);
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while !blocking.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the blocking task never ran");
            std::thread::sleep(Duration::from_millis(1));
        }

        assert!(pair.outbox.post(&Message::Release));
        let received =
            pair.server.block_on(async { tokio::time::timeout(Duration::from_secs(2), events.recv()).await });
        // The message arrived while the runtime thread could not have written it.
        assert!(!released.load(Ordering::SeqCst), "arrived only once the runtime thread was free");
        match received {
            Ok(Some(Inbound::Message { envelope, .. })) => {
                assert!(matches!(envelope.message, Message::Release))
            }
            other => panic!("expected the Release, got {other:?}"),
        }
    }

    #[test]
    fn sends_from_another_thread_all_arrive_in_order() {
        let (pair, mut events) = Pair::connect();

        for i in 0..1000u32 {
            assert!(pair.outbox.send(None, &Message::Release, vec![Bytes::from(i.to_string())]));
        }
        for i in 0..1000u32 {
            let received = pair
                .server
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), events.recv()).await });
            match received {
                Ok(Some(Inbound::Message { envelope, .. })) => {
                    assert_eq!(envelope.payload, vec![Bytes::from(i.to_string())], "message {i}")
                }
                other => panic!("message {i}: expected a Release, got {other:?}"),
            }
        }
    }
}
