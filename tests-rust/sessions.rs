//! Authenticated sessions against an attacker without the key: a relay that forwards a key
//! holder's handshake gets no message of its own accepted, on either side, and a message that
//! is forged, replayed, reordered or cut short after the handshake closes the connection.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{new_actor, within, TestCluster};
use parl_core::auth::Handshake;
use parl_core::connection::{self, Inbound};
use parl_core::protocol::{self, ActorRequest, CallKind, Encoding, Message, Service};
use parl_core::session::Session;
use parl_core::transport::zmq::{ZmqClient, ZmqServer};
use parl_core::transport::{host_port, FrameSocket, PeerId, SocketEvent};
use parl_core::Auth;

const LIMIT: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_secs(5);

/// What a raw connection saw next.
#[derive(Debug)]
enum Seen {
    Frames(Vec<Bytes>),
    /// The other end closed the connection.
    Closed,
}

async fn next_seen<S: FrameSocket>(socket: &mut S) -> (PeerId, Seen) {
    loop {
        let event = tokio::time::timeout(TIMEOUT, socket.next_event()).await.expect("an event within 5 s");
        match event.expect("socket open") {
            SocketEvent::Frames { peer, frames, .. } => return (peer, Seen::Frames(frames)),
            SocketEvent::PeerGone { peer } => return (peer, Seen::Closed),
            SocketEvent::PeerArrived { .. } => {}
        }
    }
}

async fn next_frames<S: FrameSocket>(socket: &mut S) -> (PeerId, Vec<Bytes>) {
    match next_seen(socket).await {
        (peer, Seen::Frames(frames)) => (peer, frames),
        (_, Seen::Closed) => panic!("closed during the handshake"),
    }
}

/// An attacker without the key between a key holder (who connects to `listener`) and a real
/// server (`upstream`): forwards the three handshake messages unchanged, as a relay would.
/// Returns the key holder's peer id on the listener.
async fn relay_handshake(listener: &mut ZmqServer, upstream: &mut ZmqClient) -> PeerId {
    let (holder, hello) = next_frames(listener).await;
    upstream.send(None, hello).await.unwrap();
    let (_, challenge) = next_frames(upstream).await;
    listener.send(Some(holder.clone()), challenge).await.unwrap();
    let (_, proof) = next_frames(listener).await;
    upstream.send(None, proof).await.unwrap();
    holder
}

/// A message the attacker makes up, with a tag of its own (it has no session key).
fn forged(message: &Message, payload: Vec<Bytes>) -> Vec<Bytes> {
    let mut frames = protocol::encode(message, payload);
    frames.push(Bytes::from(rand::random::<[u8; 32]>().to_vec()));
    frames
}

fn init_request() -> Message {
    Message::ActorRequest(ActorRequest {
        request_id: 1,
        kind: CallKind::init(),
        name: "Echo".into(),
        encoding: Encoding::Python,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_relay_between_a_key_holder_and_a_job_gets_nothing_run() {
    within(LIMIT, async {
        let cluster = TestCluster::start(1).await;
        let client = cluster.client().await;
        // A job granted to its owner, not yet initialised: the relay's target.
        let actor = client.create_actor(common::spec(Duration::from_secs(20))).await.expect("granted");
        let job = host_port(&actor.grant().expect("connected").address).to_string();

        for tag in ["a made-up tag", "no tag"] {
            let (mut listener, endpoint) = ZmqServer::bind("127.0.0.1:0").await.unwrap();
            let relay_address = host_port(&endpoint).to_string();
            let mut upstream = ZmqClient::connect(&job, TIMEOUT).await.unwrap();
            // A key holder connects to the relay, believing it to be the job.
            let auth = cluster.auth.clone();
            let holder = tokio::spawn(async move {
                connection::connect(&relay_address, Service::Job, TIMEOUT, &auth, "holder".into()).await
            });
            relay_handshake(&mut listener, &mut upstream).await;
            let (_holder_outbox, _holder_events) =
                holder.await.unwrap().expect("the holder's handshake passed");

            // The relay now sends its own Init (in Python, a pickle the job would load).
            let mut frames = forged(&init_request(), vec![Bytes::from_static(b"a pickle")]);
            if tag == "no tag" {
                frames.pop();
            }
            upstream.send(None, frames).await.unwrap();
            match next_seen(&mut upstream).await {
                (_, Seen::Closed) => {}
                (_, Seen::Frames(frames)) => {
                    panic!("with {tag}, the job answered the relay: {:?}", protocol::decode(frames))
                }
            }
        }

        // The job never ran the relay's Init: its owner initialises it now, and uses it.
        common::init(&actor).await;
        let reply = actor.request(CallKind::Method, "echo", vec![Bytes::from_static(b"mine")]).await.unwrap();
        assert_eq!(reply.payload, vec![Bytes::from_static(b"mine")]);
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_fake_master_relaying_to_the_real_one_gets_nothing_to_its_victim() {
    within(LIMIT, async {
        let cluster = TestCluster::start(1).await;
        let (mut listener, endpoint) = ZmqServer::bind("127.0.0.1:0").await.unwrap();
        let fake_master = host_port(&endpoint).to_string();
        let mut upstream = ZmqClient::connect(&cluster.address, TIMEOUT).await.unwrap();
        let auth = cluster.auth.clone();
        let victim = tokio::spawn(async move {
            connection::connect(&fake_master, Service::Master, TIMEOUT, &auth, "victim".into()).await
        });
        let victim_peer = relay_handshake(&mut listener, &mut upstream).await;
        let (_victim_outbox, mut victim_events) =
            victim.await.unwrap().expect("the victim's handshake passed");

        // The fake master answers its victim with a message of its own: a grant of a "job"
        // that would be itself, or anything whose payload the victim would unpickle.
        let reply =
            Message::ActorReply(protocol::ActorReply { request_id: 1, outcome: protocol::Outcome::Ok });
        listener
            .send(Some(victim_peer), forged(&reply, vec![Bytes::from_static(b"a pickle")]))
            .await
            .unwrap();
        let event = tokio::time::timeout(TIMEOUT, victim_events.recv()).await.expect("an event within 5 s");
        match event {
            Some(Inbound::Closed { reason }) => {
                assert!(reason.contains("failed authentication"), "{reason}")
            }
            other => panic!("the victim took the fake master's message: {other:?}"),
        }
        cluster.stop().await;
    })
    .await;
}

/// A peer that passed the handshake on a raw socket, to send what a correct peer never would.
struct RawPeer {
    socket: ZmqClient,
    session: Session,
}

impl RawPeer {
    async fn connect(address: &str, auth: &Auth) -> RawPeer {
        let mut socket = ZmqClient::connect(address, TIMEOUT).await.unwrap();
        let shake = Handshake::new(auth, Service::Master);
        socket.send(None, protocol::encode(&shake.hello(), vec![])).await.unwrap();
        let (_, challenge) = next_frames(&mut socket).await;
        let agreed = shake.answer(protocol::decode(challenge).unwrap().message).unwrap();
        socket.send(None, protocol::encode(&agreed.proof.unwrap(), vec![])).await.unwrap();
        RawPeer { socket, session: agreed.session.expect("a keyed cluster opens a session") }
    }

    fn seal(&mut self, message: &Message, payload: Vec<Bytes>) -> Vec<Bytes> {
        self.session.sealer.seal(protocol::encode(message, payload)).unwrap()
    }

    /// The master's answer to a status request sent as `frames`, or None if it closed the
    /// connection instead.
    async fn status_answer(&mut self, frames: Vec<Bytes>) -> Option<Message> {
        self.socket.send(None, frames).await.unwrap();
        match next_seen(&mut self.socket).await {
            (_, Seen::Frames(frames)) => {
                Some(protocol::decode(self.session.opener.open(frames).unwrap()).unwrap().message)
            }
            (_, Seen::Closed) => None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_replayed_reordered_or_truncated_message_closes_the_connection() {
    within(LIMIT, async {
        let cluster = TestCluster::start(1).await;
        let status = Message::StatusRequest;
        let payload = || vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")];

        // The control: a correct peer gets its answers.
        let mut peer = RawPeer::connect(&cluster.address, &cluster.auth).await;
        let frames = peer.seal(&status, payload());
        assert!(matches!(peer.status_answer(frames).await, Some(Message::Status(_))));

        // Forged: one byte of a payload frame changed.
        let mut peer = RawPeer::connect(&cluster.address, &cluster.auth).await;
        let mut frames = peer.seal(&status, payload());
        frames[1] = Bytes::from_static(b"One");
        assert_eq!(peer.status_answer(frames).await, None, "a forged message was answered");

        // Replayed: the same sealed message twice.
        let mut peer = RawPeer::connect(&cluster.address, &cluster.auth).await;
        let frames = peer.seal(&status, payload());
        assert!(peer.status_answer(frames.clone()).await.is_some());
        assert_eq!(peer.status_answer(frames).await, None, "a replayed message was answered");

        // Reordered: the second message sent first.
        let mut peer = RawPeer::connect(&cluster.address, &cluster.auth).await;
        let _first = peer.seal(&status, payload());
        let second = peer.seal(&status, payload());
        assert_eq!(peer.status_answer(second).await, None, "a reordered message was answered");

        // Truncated: the last payload frame dropped (the tag stays last).
        let mut peer = RawPeer::connect(&cluster.address, &cluster.auth).await;
        let mut frames = peer.seal(&status, payload());
        frames.remove(2);
        assert_eq!(peer.status_answer(frames).await, None, "a truncated message was answered");

        // Reflected: a message the master sent, sent back to it.
        let mut peer = RawPeer::connect(&cluster.address, &cluster.auth).await;
        let frames = peer.seal(&status, vec![]);
        peer.socket.send(None, frames).await.unwrap();
        let (_, Seen::Frames(answer)) = next_seen(&mut peer.socket).await else { panic!("no answer") };
        assert_eq!(peer.status_answer(answer).await, None, "a reflected message was answered");

        // None of it cost the cluster anything.
        common::still_serves(&cluster).await;
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payloads_sent_before_their_tag_arrive_whole_and_in_order() {
    within(LIMIT, async {
        let cluster = TestCluster::start(1).await;
        let client = cluster.client().await;
        let actor = new_actor(&client).await;
        // Frames of 3 MiB and 70 KiB (both hashed apart), then small messages in between.
        for round in 0..5u8 {
            let big = Bytes::from(vec![round; 3 << 20]);
            let medium = Bytes::from(vec![round.wrapping_add(1); 70 << 10]);
            let payload = vec![big, Bytes::from_static(b"small"), medium];
            let reply = actor.request(CallKind::Method, "echo", payload.clone()).await.unwrap();
            assert_eq!(reply.payload, payload, "round {round}");
            let small = vec![Bytes::from(vec![round])];
            assert_eq!(actor.request(CallKind::Method, "echo", small.clone()).await.unwrap().payload, small);
        }
        cluster.stop().await;
    })
    .await;
}

/// A TCP proxy to `upstream` that records every byte it carries, both ways.
async fn recording_proxy(upstream: &str) -> (String, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (upstream, recorded) = (upstream.to_string(), seen.clone());
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(&upstream).await else { continue };
            let (inbound, outbound) = (inbound.into_split(), outbound.into_split());
            for (mut from, mut to) in [(inbound.0, outbound.1), (outbound.0, inbound.1)] {
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = from.read(&mut buffer).await {
                        recorded.lock().unwrap().extend_from_slice(&buffer[..n]);
                        if to.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
    });
    (address, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypting_master_makes_its_clients_encrypt_so_the_wire_shows_nothing() {
    within(LIMIT, async {
        for encrypt in [false, true] {
            let auth = Auth::generate();
            if encrypt {
                auth.key().unwrap().require_encryption();
            }
            let cluster = TestCluster::start_with_auth(1, auth).await;
            let (proxy, seen) = recording_proxy(&cluster.address).await;
            // The client holds the key, and is not told to encrypt: it learns it from the master.
            let client_auth = Auth::from_key(Some(cluster.auth.key().unwrap().text()));
            let config = parl_core::ClientConfig {
                master: proxy,
                connect_timeout: TIMEOUT,
                log_to_driver: false,
                auth: client_auth.clone(),
                encoding: Default::default(),
            };
            let client = parl_core::Client::connect(config).await.expect("connects through the proxy");
            let mut spec = common::spec(Duration::from_secs(20));
            spec.class_name = "SecretSimulatorClass".into();
            let actor = client.create_actor(spec).await.expect("created");
            common::init(&actor).await;
            let reply =
                actor.request(CallKind::Method, "echo", vec![Bytes::from_static(b"x")]).await.unwrap();
            assert_eq!(reply.payload, vec![Bytes::from_static(b"x")]);
            assert_eq!(client_auth.key().unwrap().encrypts(), encrypt);

            let wire = seen.lock().unwrap().clone();
            let readable = wire.windows(20).any(|w| w == b"SecretSimulatorClass");
            assert_eq!(
                readable, !encrypt,
                "encrypt={encrypt}: the class name readable on the wire: {readable}"
            );
            drop(client);
            cluster.stop().await;
        }
    })
    .await;
}
