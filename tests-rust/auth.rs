//! Authentication on every port: the master's, the worker's job socket, each job's, and the
//! HTTP endpoints refuse peers without the cluster key, name the problem to peers with a
//! wrong or missing key, and keep serving the peers that hold it.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{new_actor, within, TestCluster};
use parl_core::connection;
use parl_core::protocol::{self, CallKind, JobHello, Message, Service};
use parl_core::session::Session;
use parl_core::transport::zmq::ZmqClient;
use parl_core::transport::{host_port, FrameSocket, SocketEvent};
use parl_core::{worker, Auth, Error};

const LIMIT: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `message` from a peer that skipped the handshake; returns the server's answer.
async fn unauthenticated(address: &str, message: &Message) -> Message {
    let mut socket = ZmqClient::connect(address, TIMEOUT).await.expect("port reachable");
    socket.send(None, protocol::encode(message, vec![])).await.expect("sent");
    loop {
        let event = tokio::time::timeout(TIMEOUT, socket.next_event()).await.expect("an answer");
        if let SocketEvent::Frames { frames, .. } = event.expect("socket open") {
            return protocol::decode(frames).expect("a parl_rs message").message;
        }
    }
}

fn assert_refused(answer: Message, port: &str) {
    assert!(
        matches!(answer, Message::AuthRefused { ref reason } if reason.contains("before the key handshake")),
        "the {port} accepted a message without the key: {answer:?}"
    );
}

fn auth_error(result: parl_core::Result<impl Sized>) -> String {
    match result {
        Err(e @ Error::Auth { .. }) => e.to_string(),
        Err(other) => panic!("expected an authentication error, got {other}"),
        Ok(_) => panic!("expected an authentication error, got a connection"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_socket_refuses_messages_from_peers_without_the_key() {
    within(LIMIT, async {
        let cluster = TestCluster::start(2).await;
        let client = cluster.client().await;
        let actor = new_actor(&client).await;
        let job = host_port(&actor.grant().expect("connected").address).to_string();
        let jobs_socket = host_port(&cluster.worker.as_ref().unwrap().jobs_address).to_string();

        // The master: no registration, no status.
        assert_refused(unauthenticated(&cluster.address, &Message::StatusRequest).await, "master");
        // A job: a Release would end the actor if it were accepted.
        assert_refused(unauthenticated(&job, &Message::Release).await, "job");
        // The worker's job socket: a fake job would take a slot.
        let fake = JobHello { job_id: "fake".into(), address: "tcp://127.0.0.1:1".into(), pid: 1 };
        assert_refused(unauthenticated(&jobs_socket, &Message::JobHello(fake)).await, "worker's job socket");

        let reply = actor.request(CallKind::Method, "echo", vec![Bytes::from_static(b"still mine")]).await;
        assert_eq!(reply.unwrap().payload, vec![Bytes::from_static(b"still mine")]);
        let status = client.status().await.unwrap();
        assert_eq!((status.cpu_total(), status.cpu_used(), status.clients.len()), (2, 1, 1));
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_key_gets_a_clear_error_on_every_socket() {
    within(LIMIT, async {
        let cluster = TestCluster::start(1).await;
        let client = cluster.client().await;
        let actor = new_actor(&client).await;
        let job = host_port(&actor.grant().expect("connected").address).to_string();
        let jobs_socket = host_port(&cluster.worker.as_ref().unwrap().jobs_address).to_string();
        let wrong = Auth::generate();

        let missing = auth_error(cluster.client_with(Auth::Insecure).await);
        assert!(missing.contains(&cluster.address) && missing.contains("requires its key"), "{missing}");
        let bad = auth_error(cluster.client_with(wrong.clone()).await);
        assert!(bad.contains("does not hold this cluster key"), "{bad}");
        let mut config = cluster.worker_config(1, Vec::new());
        config.auth = wrong.clone();
        auth_error(worker::start(config, Default::default()).await);
        auth_error(parl_core::query_status(&cluster.address, TIMEOUT, &wrong).await);
        for (address, service) in [(&job, Service::Job), (&jobs_socket, Service::Worker)] {
            auth_error(connection::connect(address, service, TIMEOUT, &wrong, "wrong".into()).await);
            auth_error(
                connection::connect(address, service, TIMEOUT, &Auth::Insecure, "keyless".into()).await,
            );
        }

        // None of it cost the cluster anything.
        let status = client.status().await.unwrap();
        assert_eq!((status.workers.len(), status.clients.len(), status.cpu_used()), (1, 1, 1));
        assert!(actor.request(CallKind::Method, "echo", vec![]).await.unwrap().failure.is_none());
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_ports_answer_only_requests_with_the_token() {
    within(LIMIT, async {
        let cluster = TestCluster::start(1).await;
        let client = cluster.client().await;
        let actor = new_actor(&client).await;
        let log_path = format!("/get-log?job_id={}", actor.actor_id().expect("connected"));
        let log_server = actor.grant().expect("connected").log_address.clone();
        let (master, token) = (cluster.http_address.clone(), cluster.http_token());
        let wrong = Auth::generate().key().unwrap().http_token();
        let codes = tokio::task::spawn_blocking(move || {
            let mut codes = Vec::new();
            for (address, path) in [(&master, "/status".to_string()), (&log_server, log_path)] {
                codes.push(common::http_get(address, &path, None).0);
                codes.push(common::http_get(address, &path, Some(&wrong)).0);
                let separator = if path.contains('?') { '&' } else { '?' };
                codes.push(common::http_get(address, &format!("{path}{separator}token={wrong}"), None).0);
                codes.push(common::http_get(address, &path, Some(&token)).0);
            }
            codes
        })
        .await
        .unwrap();
        assert_eq!(codes, [401, 401, 401, 200, 401, 401, 401, 200]);
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insecure_cluster_serves_keyless_peers_and_keyed_peers_refuse_it() {
    within(LIMIT, async {
        let cluster = TestCluster::start_with_auth(1, Auth::Insecure).await;
        let client = cluster.client().await;
        let actor = new_actor(&client).await;
        assert!(actor.request(CallKind::Method, "echo", vec![]).await.unwrap().failure.is_none());
        let status = tokio::task::spawn_blocking({
            let master = cluster.http_address.clone();
            move || common::http_get(&master, "/status", None).0
        });
        assert_eq!(status.await.unwrap(), 200);
        let refused = auth_error(cluster.client_with(Auth::generate()).await);
        assert!(refused.contains("--insecure"), "{refused}");
        cluster.stop().await;
    })
    .await;
}

/// A raw DEALER that announces `identity` as its ZeroMQ routing id.
async fn dealer_claiming(address: &str, identity: &str) -> zeromq::DealerSocket {
    use zeromq::Socket;
    let mut options = zeromq::SocketOptions::default();
    options.peer_identity(identity.as_bytes().try_into().unwrap());
    let mut socket = zeromq::DealerSocket::with_options(options);
    socket.connect(&format!("tcp://{address}")).await.expect("connects");
    socket
}

async fn exchange(socket: &mut zeromq::DealerSocket, message: &Message) -> Option<Message> {
    exchange_in(socket, None, message).await
}

/// Sends `message` (in `session` if given: sealed, and the answer opened) and returns the
/// answer, if one comes within 2 s.
async fn exchange_in(
    socket: &mut zeromq::DealerSocket,
    mut session: Option<&mut Session>,
    message: &Message,
) -> Option<Message> {
    use zeromq::{SocketRecv, SocketSend};
    let mut frames = protocol::encode(message, vec![]);
    if let Some(session) = session.as_mut() {
        frames = session.sealer.seal(frames).unwrap();
    }
    socket.send(zeromq::ZmqMessage::try_from(frames).unwrap()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(2), socket.recv()).await.ok()?;
    let mut frames = answer.unwrap().into_vec();
    if let Some(session) = session {
        frames = session.opener.open(frames).expect("the server's answer checks");
    }
    Some(protocol::decode(frames).unwrap().message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_claiming_an_authenticated_peers_identity_gets_nothing() {
    within(LIMIT, async {
        let cluster = TestCluster::start(1).await;
        // The victim authenticates on a connection whose ZeroMQ identity is "victim".
        let mut victim = dealer_claiming(&cluster.address, "victim").await;
        let shake = parl_core::auth::Handshake::new(&cluster.auth, Service::Master);
        let challenge = exchange(&mut victim, &shake.hello()).await.expect("challenge");
        let agreed = shake.answer(challenge).unwrap();
        let proof = agreed.proof.expect("a keyed cluster wants a proof");
        let mut session = agreed.session.expect("a keyed cluster opens a session");
        assert_eq!(exchange(&mut victim, &proof).await, None, "a good proof needs no answer");
        let status = exchange_in(&mut victim, Some(&mut session), &Message::StatusRequest).await;
        assert!(matches!(status, Some(Message::Status(_))));
        // The attacker announces the same identity and skips the handshake.
        let mut attacker = dealer_claiming(&cluster.address, "victim").await;
        let answer = exchange(&mut attacker, &Message::StatusRequest).await.expect("an answer");
        assert!(matches!(answer, Message::AuthRefused { .. }), "took over the session: {answer:?}");
        // The victim's session is intact.
        let status = exchange_in(&mut victim, Some(&mut session), &Message::StatusRequest).await;
        assert!(matches!(status, Some(Message::Status(_))));
        cluster.stop().await;
    })
    .await;
}

/// Waits until the server closes `socket`'s connection; panics on a message or after `limit`.
async fn closed_within(socket: &mut ZmqClient, limit: Duration) {
    let event = tokio::time::timeout(limit, socket.next_event()).await;
    match event {
        Ok(Ok(SocketEvent::PeerGone { .. })) | Ok(Err(_)) => {}
        Ok(Ok(other)) => panic!("expected the connection closed, got {other:?}"),
        Err(_) => panic!("the connection was still open after {limit:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_does_not_pass_the_handshake_in_time_is_closed() {
    use tokio::io::AsyncReadExt;
    within(LIMIT, async {
        let cluster = TestCluster::start(1).await;
        let deadline = parl_core::pending::HANDSHAKE_DEADLINE + Duration::from_secs(3);
        let started = tokio::time::Instant::now();
        // TCP only: not even the ZeroMQ greeting.
        let mut silent = tokio::net::TcpStream::connect(&cluster.address).await.unwrap();
        // The ZeroMQ greeting, then nothing.
        let mut greeted = ZmqClient::connect(&cluster.address, TIMEOUT).await.unwrap();
        // A hello, then no proof.
        let mut halfway = ZmqClient::connect(&cluster.address, TIMEOUT).await.unwrap();
        let shake = parl_core::auth::Handshake::new(&cluster.auth, Service::Master);
        halfway.send(None, protocol::encode(&shake.hello(), vec![])).await.unwrap();
        let Ok(Ok(SocketEvent::Frames { .. })) = tokio::time::timeout(TIMEOUT, halfway.next_event()).await
        else {
            panic!("no challenge")
        };

        closed_within(&mut greeted, deadline).await;
        closed_within(&mut halfway, deadline).await;
        let mut buffer = [0u8; 64];
        let read = tokio::time::timeout(deadline, async {
            // The server's greeting may come first; then the end of the stream.
            loop {
                match silent.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(read.is_ok(), "a connection that sent nothing was still open after {deadline:?}");
        assert!(started.elapsed() >= parl_core::pending::HANDSHAKE_DEADLINE - Duration::from_secs(1));

        // Peers that pass the handshake are never timed out.
        common::still_serves(&cluster).await;
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_in_the_handshake_are_capped_per_address() {
    use parl_core::pending::{HANDSHAKE_DEADLINE, MAX_PENDING_PER_ADDRESS};
    within(LIMIT, async {
        let cluster = TestCluster::start(1).await;
        let client = cluster.client().await;
        let actor = new_actor(&client).await;
        let mut held = Vec::new();
        for _ in 0..MAX_PENDING_PER_ADDRESS {
            held.push(ZmqClient::connect(&cluster.address, TIMEOUT).await.unwrap());
        }
        // One more from the same address is closed at once, long before any deadline.
        let started = tokio::time::Instant::now();
        let mut over = ZmqClient::connect(&cluster.address, TIMEOUT).await.unwrap();
        closed_within(&mut over, Duration::from_secs(2)).await;
        assert!(started.elapsed() < HANDSHAKE_DEADLINE / 2);
        // The peers that hold the key keep being served meanwhile.
        assert!(actor.request(CallKind::Method, "echo", vec![]).await.unwrap().failure.is_none());

        // Once the held connections time out, the address may connect again.
        for socket in &mut held {
            closed_within(socket, HANDSHAKE_DEADLINE + Duration::from_secs(3)).await;
        }
        let status = parl_core::query_status(&cluster.address, TIMEOUT, &cluster.auth).await.unwrap();
        assert_eq!(status.clients.len(), 1);
        cluster.stop().await;
    })
    .await;
}

/// Reads until the server closes the connection; false if it is still open after `limit`.
async fn closed_by_server(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(limit, async { while let Ok(1..) = stream.read(&mut buffer).await {} }).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_ports_close_idle_connections_and_cap_them_per_address() {
    use parl_core::http::{HTTP_HEADER_DEADLINE, MAX_HTTP_CONNECTIONS_PER_ADDRESS};
    use tokio::io::AsyncWriteExt;
    within(LIMIT, async {
        let cluster = TestCluster::start(1).await;
        let address = cluster.http_address.clone();
        let started = tokio::time::Instant::now();
        // One that sends nothing, and one that goes idle after a request (keep-alive).
        let mut silent = tokio::net::TcpStream::connect(&address).await.unwrap();
        let mut kept_alive = tokio::net::TcpStream::connect(&address).await.unwrap();
        let request = format!(
            "GET /status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            cluster.http_token()
        );
        kept_alive.write_all(request.as_bytes()).await.unwrap();
        // Fill the address's cap; one more is closed at once.
        let mut held = Vec::new();
        for _ in 2..MAX_HTTP_CONNECTIONS_PER_ADDRESS {
            held.push(tokio::net::TcpStream::connect(&address).await.unwrap());
        }
        let mut over = tokio::net::TcpStream::connect(&address).await.unwrap();
        assert!(
            closed_by_server(&mut over, Duration::from_secs(2)).await,
            "a connection over the cap stayed open"
        );

        let deadline = HTTP_HEADER_DEADLINE + Duration::from_secs(3);
        assert!(closed_by_server(&mut silent, deadline).await, "a silent connection stayed open");
        assert!(
            closed_by_server(&mut kept_alive, deadline).await,
            "an idle keep-alive connection stayed open"
        );
        for stream in &mut held {
            assert!(closed_by_server(stream, deadline).await);
        }
        assert!(started.elapsed() >= HTTP_HEADER_DEADLINE - Duration::from_secs(1));
        // The port serves again.
        let (master, token) = (cluster.http_address.clone(), cluster.http_token());
        let code = tokio::task::spawn_blocking(move || common::http_get(&master, "/status", Some(&token)).0);
        assert_eq!(code.await.unwrap(), 200);
        cluster.stop().await;
    })
    .await;
}
