//! The master dies and comes back on the same address: existing actors keep working while it
//! is gone, new ones are refused clearly, and the restarted master gets the whole cluster back
//! (workers and clients re-register by themselves) without counting a busy slot as free.

mod common;

use std::time::Duration;

use common::{heartbeat, new_actor, spec, wait_until, within, TestCluster};
use parl_core::config::MasterConfig;
use parl_core::master;
use parl_core::protocol::CallKind;
use parl_core::runtime::Shutdown;
use parl_core::Error;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_master_gets_the_cluster_back_without_double_counting() {
    within(LIMIT, async {
        let mut cluster = TestCluster::start(2).await;
        let client = cluster.client().await;
        let busy = new_actor(&client).await;

        cluster.master.take().expect("a master").stop().await;
        // Existing actors talk to their jobs directly: they keep working.
        assert!(busy.request(CallKind::Method, "echo", vec![]).await.unwrap().failure.is_none());
        // A new actor needs the master: refused with a clear error once the loss is noticed.
        wait_until(Duration::from_secs(10), "the client to notice", || async {
            matches!(
                client.create_actor(spec(Duration::from_millis(200))).await,
                Err(Error::MasterUnavailable(_))
            )
        })
        .await;

        let config = MasterConfig {
            bind: cluster.address.clone(),
            heartbeat: heartbeat(),
            gpu_cluster: false,
            python_version: String::new(),
            http_bind: None,
            auth: cluster.auth.clone(),
            scheme: Default::default(),
            hwm: 0,
        };
        cluster.master = Some(master::start(config, Shutdown::new()).await.expect("restarts"));
        wait_until(Duration::from_secs(15), "the worker and client to rejoin", || async {
            client.status().await.is_ok_and(|s| s.cpu_total() == 2 && s.cpu_used() == 1 && s.actors() == 1)
        })
        .await;

        // One slot is free, one serves `busy`: exactly one more actor fits.
        let second = new_actor(&client).await;
        let third = client.create_actor(spec(Duration::from_millis(500))).await;
        assert!(matches!(third, Err(Error::NoResources { .. })), "the busy job must not be granted");
        for actor in [&busy, &second] {
            assert!(actor.request(CallKind::Method, "echo", vec![]).await.unwrap().failure.is_none());
        }
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creation_waiting_in_a_dead_masters_queue_fails_at_once() {
    within(LIMIT, async {
        let mut cluster = TestCluster::start(1).await;
        let client = cluster.client().await;
        let _held = new_actor(&client).await;
        let waiting = {
            let client = client.clone();
            tokio::spawn(async move { client.create_actor(spec(Duration::from_secs(30))).await })
        };
        wait_until(Duration::from_secs(5), "the request to queue", || async {
            client.status().await.is_ok_and(|s| s.pending_requests == 1)
        })
        .await;
        let stopped = std::time::Instant::now();
        cluster.master.take().expect("a master").stop().await;
        let outcome = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        let outcome = outcome.expect("failed at once, not after its 30 s timeout").unwrap();
        assert!(matches!(outcome, Err(Error::MasterUnavailable(_))), "{:?}", outcome.err());
        assert!(stopped.elapsed() < Duration::from_secs(5));
        cluster.stop().await;
    })
    .await;
}

/// `xparl stop` on the master's machine stops the workers on other machines too: a master
/// stopped on purpose tells its workers, which end their jobs and exit. (A master that merely
/// dies tells nobody: see the test above, where the worker waits and rejoins.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_stopping_the_cluster_makes_its_workers_exit() {
    within(LIMIT, async {
        let mut cluster = TestCluster::start(1).await;
        let client = cluster.client().await;
        let actor = new_actor(&client).await;
        let worker = cluster.worker.take().expect("a worker");
        cluster.master.take().expect("a master").stop_cluster().await;
        tokio::time::timeout(Duration::from_secs(5), worker.service.join())
            .await
            .expect("the worker exits when its master stops the cluster");
        // Its job ended with it.
        wait_until(Duration::from_secs(5), "the actor's job to end", || async {
            actor.request(CallKind::Method, "echo", vec![]).await.is_err()
                || actor.request(CallKind::Method, "echo", vec![]).await.is_ok_and(|r| r.failure.is_some())
        })
        .await;
        cluster.stop().await;
    })
    .await;
}
