//! A real master, worker and job processes on 127.0.0.1, driven through the Rust client.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{new_actor, spec, wait_until, within, TestCluster};
use parl_core::protocol::{CallKind, FailureKind, ShippedFile};
use parl_core::{Client, ClientConfig, Error};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_echo_payload_frames_and_report_failures() {
    within(LIMIT, async {
        let cluster = TestCluster::start(2).await;
        let client = cluster.client().await;
        let actor = new_actor(&client).await;
        let big = Bytes::from(vec![7u8; 4 << 20]);
        let reply = actor
            .request(CallKind::Method, "echo", vec![Bytes::from_static(b"a"), big.clone()])
            .await
            .unwrap();
        assert_eq!(reply.payload, vec![Bytes::from_static(b"a"), big]);
        let failed = actor.request(CallKind::Method, "fail", vec![]).await.unwrap();
        let failure = failed.failure.expect("a failure");
        assert_eq!((failure.kind, failure.exc_type.as_str()), (FailureKind::User, "builtins.ValueError"));
        // A failure inside the job does not end the actor.
        assert!(actor.request(CallKind::Method, "echo", vec![]).await.unwrap().failure.is_none());
        let status = client.status().await.unwrap();
        assert_eq!((status.cpu_total(), status.cpu_used(), status.actors()), (2, 1, 1));
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_on_one_actor_all_get_their_own_reply() {
    within(LIMIT, async {
        let cluster = TestCluster::start(1).await;
        let client = cluster.client().await;
        let actor = std::sync::Arc::new(new_actor(&client).await);
        let mut tasks = Vec::new();
        for t in 0..4u32 {
            let actor = actor.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..100u32 {
                    let body = Bytes::from(format!("{t}-{i}"));
                    let reply = actor.request(CallKind::Method, "echo", vec![body.clone()]).await.unwrap();
                    assert_eq!(reply.payload, vec![body]);
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_actors_run_in_parallel() {
    within(LIMIT, async {
        let cluster = TestCluster::start(2).await;
        let client = cluster.client().await;
        let (a, b) = (new_actor(&client).await, new_actor(&client).await);
        let started = Instant::now();
        let sleep = || vec![Bytes::from_static(b"500")];
        let (ra, rb) = tokio::join!(
            a.request(CallKind::Method, "sleep", sleep()),
            b.request(CallKind::Method, "sleep", sleep())
        );
        ra.unwrap();
        rb.unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_millis(950), "two 0.5 s sleeps took {took:?}");
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_and_releasing_never_runs_out_of_slots() {
    within(LIMIT, async {
        let cluster = TestCluster::start(2).await;
        let client = cluster.client().await;
        for _ in 0..30 {
            let actor = new_actor(&client).await;
            actor.request(CallKind::Method, "echo", vec![]).await.unwrap();
            drop(actor);
        }
        wait_until(Duration::from_secs(10), "slots to return", || async {
            client.status().await.unwrap().cpu_used() == 0
        })
        .await;
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_job_fails_calls_with_its_exit_status_and_the_slot_returns() {
    within(LIMIT, async {
        let cluster = TestCluster::start(1).await;
        let client = cluster.client().await;
        let actor = new_actor(&client).await;
        let pid_reply = actor.request(CallKind::Method, "pid", vec![]).await.unwrap();
        let pid: i32 = std::str::from_utf8(&pid_reply.payload[0]).unwrap().parse().unwrap();
        let in_flight = actor.send_request(CallKind::Method, "sleep", vec![Bytes::from_static(b"10000")]);
        // SAFETY: sending a signal to a child process this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let err = in_flight.await.unwrap().unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::ActorDied { .. }), "{message}");
        assert!(message.contains("SIGKILL"), "{message}");
        let later = actor.request(CallKind::Method, "echo", vec![]).await.unwrap_err();
        assert!(matches!(later, Error::ActorDied { .. }));
        // The slot comes back: a new actor can be made on the 1-CPU worker.
        let again = new_actor(&client).await;
        assert!(again.request(CallKind::Method, "echo", vec![]).await.unwrap().failure.is_none());
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_wait_in_the_queue_and_time_out_with_a_clear_error() {
    within(LIMIT, async {
        let cluster = TestCluster::start(1).await;
        let client = cluster.client().await;
        let held = new_actor(&client).await;
        let err = client.create_actor(spec(Duration::from_millis(300))).await.err().expect("no slot");
        assert!(matches!(err, Error::NoResources { .. }), "{err}");
        // A waiting request is served as soon as the slot is released.
        let waiter = {
            let client = client.clone();
            tokio::spawn(async move { client.create_actor(spec(Duration::from_secs(20))).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held);
        let actor = waiter.await.unwrap().expect("granted after the release");
        actor.request(CallKind::init(), "Echo", vec![]).await.unwrap();
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_client_frees_its_actors_slots() {
    within(LIMIT, async {
        let cluster = TestCluster::start(1).await;
        let observer = cluster.client().await;
        let owner = cluster.client().await;
        let actor = new_actor(&owner).await;
        std::mem::forget(actor); // never released by the owner...
        owner.close(); // ...but the owner leaves
        wait_until(Duration::from_secs(5), "the slot to return", || async {
            observer.status().await.unwrap().cpu_used() == 0
        })
        .await;
        let _fresh = new_actor(&observer).await;
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_closed_port_fails_fast_naming_the_address() {
    within(LIMIT, async {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let address = format!("127.0.0.1:{port}");
        let started = Instant::now();
        let config = ClientConfig {
            master: address.clone(),
            connect_timeout: Duration::from_secs(2),
            log_to_driver: false,
            auth: parl_core::Auth::Insecure,
            encoding: Default::default(),
        };
        let err = Client::connect(config).await.err().expect("no master there");
        assert!(started.elapsed() < Duration::from_secs(4));
        assert!(err.to_string().contains(&address), "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_files_reach_every_job_but_travel_to_a_worker_once() {
    within(LIMIT, async {
        let cluster = TestCluster::start(2).await;
        let client = cluster.client().await;
        let data = vec![42u8; 2 << 20];
        client
            .set_shipped_files(vec![
                ShippedFile { path: "data/blob.bin".into(), data: data.clone() },
                ShippedFile { path: "empty/".into(), data: vec![] },
            ])
            .expect("within the limit");
        for _ in 0..3 {
            let actor = new_actor(&client).await;
            let reply =
                actor.request(CallKind::Method, "read", vec![Bytes::from_static(b"data/blob.bin")]).await;
            assert_eq!(reply.unwrap().payload, vec![Bytes::from(data.clone())]);
            let reply = actor.request(CallKind::Method, "is_dir", vec![Bytes::from_static(b"empty")]).await;
            assert_eq!(reply.unwrap().payload, vec![Bytes::from_static(b"true")]);
        }
        assert_eq!(client.files_shipped(), 1, "the worker caches the files after the first job");
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_served_by_the_worker_and_found_through_the_master() {
    within(LIMIT, async {
        let cluster = TestCluster::start(1).await;
        let client = cluster.client().await;
        let actor = new_actor(&client).await;
        let job = actor.actor_id().expect("connected").to_string();
        let log_server = actor.grant().expect("connected").log_address.clone();
        let master_http = cluster.http_address.clone();
        let token = cluster.http_token();
        let answers = tokio::task::spawn_blocking(move || {
            let get = |address: &str, path: &str| common::http_get(address, path, Some(&token));
            let worker_log = get(&log_server, &format!("/get-log?job_id={job}"));
            let no_id = get(&log_server, "/get-log");
            let unknown = get(&log_server, "/download-log?job_id=nope");
            // A token in the query (a clicked link) is carried through the redirect.
            let redirect =
                common::http_get(&master_http, &format!("/get-log?job_id={job}&token={token}"), None);
            let status = get(&master_http, "/status");
            (worker_log, no_id, unknown, redirect, status, log_server)
        })
        .await
        .unwrap();
        let (worker_log, no_id, unknown, redirect, status, log_server) = answers;
        assert_eq!(worker_log.0, 200, "{}", worker_log.1);
        assert!(worker_log.1.contains("\"log\""), "{}", worker_log.1);
        assert_eq!(no_id.0, 400);
        assert!(no_id.1.contains("No job_id provided"), "{}", no_id.1);
        assert_eq!(unknown.0, 400);
        assert_eq!(redirect.0, 307, "{}", redirect.1);
        assert!(redirect.1.contains(&format!("http://{log_server}/get-log?job_id=")), "{}", redirect.1);
        assert!(redirect.1.contains("&token="), "{}", redirect.1);
        assert_eq!(status.0, 200);
        assert!(status.1.contains("\"cpu_total\":1") || status.1.contains("\"workers\""), "{}", status.1);
        cluster.stop().await;
    })
    .await;
}
