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

mod outbox;
mod task;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

pub use outbox::Outbox;
use outbox::Sealers;
use task::{Role, SocketTask};

use crate::auth::{Auth, Gate, Handshake};
use crate::error::{Error, Result};
use crate::protocol::{decode, encode, DecodeError, Envelope, Message, Service};
use crate::session::Session;
use crate::transport::zmq::ZmqClient;
use crate::transport::{FrameSocket, PeerId, SocketEvent, TransportError};

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

fn spawn<S: FrameSocket>(
    socket: S,
    label: String,
    role: Role,
    sealers: Option<Arc<Sealers>>,
) -> (Outbox, Events) {
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let outbox = Outbox::new(out_tx, socket.direct_sender(), &label, sealers.clone());
    let task = SocketTask::new(socket, label, role, sealers);
    tokio::spawn(task.run(out_rx, in_tx));
    (outbox, in_rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::host_port;
    use crate::transport::zmq::ZmqServer;
    use bytes::Bytes;

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
