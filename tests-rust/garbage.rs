//! Hostile input: random TCP bytes and well-formed ZeroMQ messages with garbage frames, sent to
//! the master's port and to a job's port, never stop the cluster from serving.

mod common;

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use common::{new_actor, within, TestCluster};
use parl_core::connection::{self, Inbound};
use parl_core::protocol::{self, CallKind, ClientHello, ErrorCode, Message, Service};
use parl_core::Auth;
use rand::{Rng, SeedableRng};

const LIMIT: Duration = Duration::from_secs(60);

fn random_bytes(rng: &mut rand::rngs::StdRng, max: usize) -> Vec<u8> {
    let len = rng.random_range(1..max);
    (0..len).map(|_| rng.random()).collect()
}

/// Raw TCP connections that send random bytes (some starting like a ZMTP greeting).
fn spray_tcp(address: &str, rng: &mut rand::rngs::StdRng) {
    for i in 0..50 {
        let Ok(mut stream) = std::net::TcpStream::connect(address) else { continue };
        let mut bytes = random_bytes(rng, 512);
        if i % 2 == 0 {
            let mut greeting = vec![0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 0];
            greeting.append(&mut bytes);
            bytes = greeting;
        }
        let _ = stream.write_all(&bytes);
    }
}

/// Well-formed ZeroMQ messages whose frames are garbage, from a peer that holds the key (the
/// worst case: its messages reach the server's dispatch); returns the replies' error codes.
async fn spray_frames(
    address: &str,
    service: Service,
    auth: &Auth,
    rng: &mut rand::rngs::StdRng,
) -> Vec<ErrorCode> {
    let (outbox, mut inbound) =
        connection::connect(address, service, Duration::from_secs(5), auth, "garbage".into()).await.unwrap();
    let mut valid_header = protocol::encode(&Message::Heartbeat, vec![])[0].to_vec();
    valid_header.truncate(6);
    for i in 0..300 {
        let mut frame = random_bytes(rng, 200);
        if i % 3 == 0 {
            frame.splice(0..0, valid_header.iter().copied());
        }
        outbox.send_raw(None, vec![Bytes::from(frame), Bytes::from(random_bytes(rng, 50))]);
    }
    let mut codes = Vec::new();
    while let Ok(Some(Inbound::Message { envelope, .. })) =
        tokio::time::timeout(Duration::from_millis(500), inbound.recv()).await
    {
        if let Message::Error(e) = envelope.message {
            codes.push(e.code);
        }
    }
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_master_and_job_ports_leaves_the_cluster_serving() {
    within(LIMIT, async {
        let cluster = TestCluster::start(2).await;
        let client = cluster.client().await;
        let actor = new_actor(&client).await;
        let job = parl_core::transport::host_port(&actor.grant().expect("connected").address).to_string();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);

        spray_tcp(&cluster.address, &mut rng);
        spray_tcp(&job, &mut rng);
        let master_codes = spray_frames(&cluster.address, Service::Master, &cluster.auth, &mut rng).await;
        let job_codes = spray_frames(&job, Service::Job, &cluster.auth, &mut rng).await;
        assert!(!master_codes.is_empty(), "the master answers garbage with errors");
        assert!(!job_codes.is_empty(), "the job answers garbage with errors");

        // The hit job still serves its actor, and the master still creates actors.
        let reply = actor.request(CallKind::Method, "echo", vec![Bytes::from_static(b"ok")]).await.unwrap();
        assert_eq!(reply.payload, vec![Bytes::from_static(b"ok")]);
        let other = new_actor(&client).await;
        assert!(other.request(CallKind::Method, "echo", vec![]).await.unwrap().failure.is_none());
        cluster.stop().await;
    })
    .await;
}

/// A ZMTP 3.0 greeting (NULL mechanism) followed by one frame header whose 8-byte length
/// field claims about 2^62 bytes: 73 bytes that once aborted a process.
fn huge_frame_claim() -> Vec<u8> {
    let mut bytes = vec![0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 0];
    bytes.extend_from_slice(b"NULL");
    bytes.resize(64, 0);
    bytes.push(0x02); // a long frame
    bytes.extend_from_slice(&0x3fff_ffff_ffff_ffffu64.to_be_bytes());
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_claiming_huge_sizes_are_refused_without_allocating() {
    within(LIMIT, async {
        let cluster = TestCluster::start(1).await;
        let client = cluster.client().await;
        let actor = new_actor(&client).await;
        let job = parl_core::transport::host_port(&actor.grant().expect("connected").address).to_string();
        let mut streams = Vec::new();
        for address in [&cluster.address, &job] {
            for _ in 0..20 {
                let mut stream = std::net::TcpStream::connect(address).unwrap();
                stream.write_all(&huge_frame_claim()).unwrap();
                streams.push(stream); // held open: the claim stays pending
            }
        }
        let reply = actor.request(CallKind::Method, "echo", vec![Bytes::from_static(b"ok")]).await.unwrap();
        assert_eq!(reply.payload, vec![Bytes::from_static(b"ok")]);
        assert_eq!(client.status().await.unwrap().cpu_total(), 1);
        drop(streams);
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_refuses_another_version_with_a_clear_error() {
    within(LIMIT, async {
        let cluster = TestCluster::start(1).await;
        let (outbox, mut inbound) = connection::connect(
            &cluster.address,
            Service::Master,
            Duration::from_secs(5),
            &cluster.auth,
            "old-client".into(),
        )
        .await
        .unwrap();
        let hello = ClientHello {
            client_id: "c-old".into(),
            hostname: "h".into(),
            pid: 1,
            version: "0.0.1".into(),
            script: "old.py".into(),
        };
        outbox.post(&Message::RegisterClient(hello));
        let Some(Inbound::Message { envelope, .. }) = inbound.recv().await else { panic!("no answer") };
        let Message::Error(e) = envelope.message else { panic!("not refused") };
        assert_eq!(e.code, ErrorCode::Rejected);
        assert!(e.message.contains("0.0.1") && e.message.contains(parl_core::VERSION), "{}", e.message);
        // A message from an unregistered peer is refused, not a crash.
        outbox.post(&Message::RequestJob(protocol::JobRequest {
            request_id: 1,
            n_cpu: 1,
            n_gpu: 0,
            class_name: "X".into(),
            on_worker: None,
        }));
        let Some(Inbound::Message { envelope, .. }) = inbound.recv().await else { panic!("no answer") };
        assert!(matches!(envelope.message, Message::Error(ref e) if e.code == ErrorCode::NotRegistered));
        cluster.stop().await;
    })
    .await;
}
