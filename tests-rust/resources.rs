//! Memory limits and GPU slots on real masters, workers and (native echo) job processes.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{init, new_actor, spec, wait_until, within, TestCluster};
use parl_core::protocol::{CallKind, ShippedFile};
use parl_core::{Actor, ActorSpec, Client, Error};

const LIMIT: Duration = Duration::from_secs(60);

fn gpu_spec(n_gpu: u32) -> ActorSpec {
    ActorSpec { n_cpu: 0, n_gpu, ..spec(Duration::from_secs(20)) }
}

async fn call(actor: &Actor, method: &str, arg: &str) -> Result<Vec<Bytes>, Error> {
    let reply = actor.request(CallKind::Method, method, vec![Bytes::from(arg.to_string())]).await?;
    assert!(reply.failure.is_none(), "{method} failed: {:?}", reply.failure);
    Ok(reply.payload)
}

async fn visible_gpus(actor: &Actor) -> String {
    let payload = call(actor, "gpus", "").await.expect("gpus answers");
    String::from_utf8(payload[0].to_vec()).unwrap()
}

/// Creates and initialises an actor that its worker kills past `max_memory_mb`.
async fn limited_actor(client: &Client, max_memory_mb: u64) -> Actor {
    let spec = ActorSpec { max_memory: Some(max_memory_mb << 20), ..spec(Duration::from_secs(20)) };
    let actor = client.create_actor(spec).await.expect("actor created");
    init(&actor).await;
    actor
}

/// Allocates 200 MB in the actor and returns the error its caller gets when the worker kills it.
async fn allocate_until_killed(actor: &Actor) -> Error {
    // The kill may land during the allocation or during the next call.
    match call(actor, "alloc", "200").await {
        Err(died) => died,
        Ok(_) => call(actor, "sleep", "10000").await.expect_err("the worker kills the job"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_over_its_memory_limit_is_killed_and_its_caller_told_why() {
    within(LIMIT, async {
        let cluster = TestCluster::start(1).await;
        let client = cluster.client().await;
        let actor = limited_actor(&client, 64).await;
        // Under the limit, held across many polls (the job sleeps, not the test): undisturbed.
        call(&actor, "alloc", "16").await.unwrap();
        call(&actor, "sleep", "700").await.unwrap();
        assert!(actor.is_alive());

        let started = Instant::now();
        let died = allocate_until_killed(&actor).await;
        let took = started.elapsed();
        println!("memory kill reported {took:?} after the allocation started");
        let message = died.to_string();
        assert!(matches!(died, Error::ActorDied { .. }), "{message}");
        assert!(message.contains("exceeded its memory limit (max_memory=64 MB"), "{message}");
        assert!(
            message.contains("MB resident, children included") && message.contains("SIGKILL"),
            "{message}"
        );
        assert!(took < Duration::from_secs(3), "took {took:?}");

        // The only slot is back: a new actor works.
        let next = new_actor(&client).await;
        assert_eq!(call(&next, "echo", "hi").await.unwrap(), vec![Bytes::from("hi")]);
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_actors_get_free_ids_of_one_worker_and_give_them_back() {
    within(LIMIT, async {
        let cluster = TestCluster::start_gpu(&["0", "1"]).await;
        let client = cluster.client().await;
        let (a, b) = (
            client.create_actor(gpu_spec(1)).await.unwrap(),
            client.create_actor(gpu_spec(1)).await.unwrap(),
        );
        init(&a).await;
        init(&b).await;
        let mut seen = [visible_gpus(&a).await, visible_gpus(&b).await];
        seen.sort();
        assert_eq!(seen, ["0", "1"]);
        assert_eq!(a.gpus().expect("connected").len(), 1);
        let status = client.status().await.unwrap();
        assert_eq!((status.gpu_total(), status.gpu_used(), status.cpu_used()), (2, 2, 0));

        drop((a, b));
        wait_until(Duration::from_secs(10), "the GPUs to come back", || async {
            client.status().await.unwrap().gpu_used() == 0
        })
        .await;
        let both = client.create_actor(gpu_spec(2)).await.unwrap();
        init(&both).await;
        assert_eq!(visible_gpus(&both).await, "0,1");
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_cannot_fit_yet_does_not_hold_up_one_that_fits() {
    within(LIMIT, async {
        let cluster = TestCluster::start_gpu(&["0", "1"]).await;
        let client = cluster.client().await;
        let holder = client.create_actor(gpu_spec(1)).await.unwrap();
        // Two GPUs: one is taken, so this waits (first in the queue)...
        let waiting = client.spawn_actor(gpu_spec(2));
        wait_until(Duration::from_secs(10), "the 2-GPU request to wait", || async {
            client.status().await.unwrap().pending_requests == 1
        })
        .await;
        // ...and a 1-GPU request behind it is served by the free GPU (it would otherwise wait
        // for the holder, which stays, until its 20 s creation timeout).
        let behind = client.create_actor(gpu_spec(1)).await.expect("served");
        assert_eq!(client.status().await.unwrap().gpu_used(), 2);
        // Once both 1-GPU actors are gone, the 2-GPU request gets both GPUs.
        // (Neither was initialised: a job given back before its first request is free again.)
        drop((holder, behind));
        waiting.ready().await.expect("served once two GPUs were free");
        init(&waiting).await;
        assert_eq!(visible_gpus(&waiting).await, "0,1");
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_cluster_refuses_what_it_can_never_serve_at_once() {
    within(LIMIT, async {
        let cluster = TestCluster::start_gpu(&["0", "1"]).await;
        let client = cluster.client().await;
        for (spec, expected) in [
            (gpu_spec(3), "n_gpu=3 GPUs, but the largest worker of this cluster has 2"),
            (gpu_spec(9), "at most 8"),
            (spec(Duration::from_secs(20)), "is a CPU actor, but this is a GPU cluster"),
        ] {
            let asked = Instant::now();
            let refused = client.create_actor(spec).await.err().expect("refused");
            assert!(matches!(refused, Error::Refused(_)), "{refused}");
            assert!(refused.to_string().contains(expected), "{refused}");
            assert!(asked.elapsed() < Duration::from_secs(2), "refused after {:?}", asked.elapsed());
        }
        let cpu_worker = cluster.worker_with(2, Vec::new()).await.err().expect("a CPU worker is refused");
        assert!(cpu_worker.to_string().contains("is a GPU cluster"), "{cpu_worker}");
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_cluster_refuses_gpu_actors_and_workers_and_hides_gpus_from_cpu_actors() {
    within(LIMIT, async {
        let cluster = TestCluster::start(1).await;
        let client = cluster.client().await;
        let refused = client.create_actor(gpu_spec(1)).await.err().expect("refused");
        assert!(refused.to_string().contains("this is a CPU cluster"), "{refused}");
        let gpu_worker =
            cluster.worker_with(0, vec!["0".into()]).await.err().expect("a GPU worker is refused");
        assert!(gpu_worker.to_string().contains("is a CPU cluster"), "{gpu_worker}");
        let actor = new_actor(&client).await;
        assert_eq!(visible_gpus(&actor).await, "");
        cluster.stop().await;
    })
    .await;
}

/// The job holds an Init until its client's files reach the worker; the Init then still sets
/// up the actor's GPUs and memory limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_held_for_its_files_still_gets_its_gpus_and_memory_limit() {
    within(LIMIT, async {
        let cluster = TestCluster::start_gpu(&["0"]).await;
        let client = cluster.client().await;
        let files = vec![ShippedFile { path: "data.txt".into(), data: b"shipped".to_vec() }];
        client.set_shipped_files(files).expect("within the limit");
        let actor =
            client.create_actor(ActorSpec { max_memory: Some(64 << 20), ..gpu_spec(1) }).await.unwrap();
        init(&actor).await;
        assert_eq!(client.files_shipped(), 1, "the job asked for the files");
        assert_eq!(call(&actor, "read", "data.txt").await.unwrap(), vec![Bytes::from("shipped")]);
        assert_eq!(visible_gpus(&actor).await, "0");
        let died = allocate_until_killed(&actor).await.to_string();
        assert!(died.contains("exceeded its memory limit (max_memory=64 MB"), "{died}");
        cluster.stop().await;
    })
    .await;
}

/// A spawned actor takes its Init before it has a job; the Init still carries the GPU id the
/// master grants later, and the memory limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_queued_before_the_grant_gets_the_granted_gpu_and_memory_limit() {
    within(LIMIT, async {
        let cluster = TestCluster::start_gpu(&["0", "1"]).await;
        let client = cluster.client().await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let actor = client.create_actor(gpu_spec(1)).await.unwrap();
            init(&actor).await;
            held.push(actor);
        }
        let spawned = client.spawn_actor(ActorSpec { max_memory: Some(64 << 20), ..gpu_spec(1) });
        let init = spawned.send_request(CallKind::init(), "Echo", vec![]);
        let gpus = spawned.send_request(CallKind::Method, "gpus", vec![Bytes::new()]);
        assert!(spawned.gpus().is_none(), "every GPU is taken: no grant yet");
        // Free GPU "1" (whichever actor holds it): the queued Init must name that one.
        let holder = held.iter().position(|a| a.gpus() == Some(&["1".to_string()][..])).unwrap();
        drop(held.remove(holder));
        assert!(init.await.unwrap().unwrap().failure.is_none());
        assert_eq!(gpus.await.unwrap().unwrap().payload, vec![Bytes::from("1")]);
        assert_eq!(spawned.gpus(), Some(&["1".to_string()][..]));
        let died = allocate_until_killed(&spawned).await.to_string();
        assert!(died.contains("exceeded its memory limit (max_memory=64 MB"), "{died}");
        cluster.stop().await;
    })
    .await;
}
