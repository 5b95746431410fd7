//! Actors that take requests before they have a job (`Client::spawn_actor`): requests queue in
//! order, pipeline, and fail together when the creation fails or is cancelled.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{new_actor, spec, wait_until, within, TestCluster};
use parl_core::protocol::CallKind;
use parl_core::{Actor, Error, Reply};

const LIMIT: Duration = Duration::from_secs(60);

type Replies = Arc<Mutex<Vec<parl_core::Result<Reply>>>>;

/// Submits an echo of each number in `range`; replies land in `replies` in completion order.
fn submit_echoes(actor: &Actor, range: std::ops::Range<u32>, replies: &Replies) {
    for i in range {
        let replies = replies.clone();
        let body = Bytes::from(i.to_string());
        actor.submit(CallKind::Method, "echo", vec![body], move |reply| {
            replies.lock().unwrap().push(reply);
        });
    }
}

fn echoed(reply: &parl_core::Result<Reply>) -> u32 {
    let reply = reply.as_ref().expect("a reply");
    std::str::from_utf8(&reply.payload[0]).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_made_before_the_grant_and_after_go_out_in_order() {
    within(LIMIT, async {
        let cluster = TestCluster::start(1).await;
        let client = cluster.client().await;
        let held = new_actor(&client).await;
        // No slot is free: the actor exists, has no job, and takes requests anyway.
        let actor = client.spawn_actor(spec(Duration::from_secs(20)));
        assert!(actor.actor_id().is_none() && actor.is_alive());
        let replies = Replies::default();
        let init = actor.send_request(CallKind::init(), "Echo", vec![]);
        submit_echoes(&actor, 0..500, &replies);
        assert!(replies.lock().unwrap().is_empty());
        drop(held);
        assert!(init.await.unwrap().unwrap().failure.is_none());
        actor.ready().await.unwrap();
        assert!(actor.actor_id().is_some());
        // Pipelined behind the queued ones, without waiting for any reply.
        submit_echoes(&actor, 500..1000, &replies);
        wait_until(Duration::from_secs(30), "1000 replies", || async {
            replies.lock().unwrap().len() == 1000
        })
        .await;
        let order: Vec<u32> = replies.lock().unwrap().iter().map(echoed).collect();
        assert_eq!(order, (0..1000).collect::<Vec<_>>());
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_creation_fails_every_queued_and_later_request() {
    within(LIMIT, async {
        let cluster = TestCluster::start(1).await;
        let client = cluster.client().await;
        let _held = new_actor(&client).await;
        let actor = client.spawn_actor(spec(Duration::from_millis(300)));
        let queued: Vec<_> = (0..3).map(|_| actor.send_request(CallKind::Method, "echo", vec![])).collect();
        for rx in queued {
            let err = rx.await.unwrap().unwrap_err();
            assert!(matches!(err, Error::NoResources { .. }), "{err}");
        }
        assert!(matches!(actor.ready().await, Err(Error::NoResources { .. })));
        assert!(!actor.is_alive());
        let later = actor.request(CallKind::Method, "echo", vec![]).await.unwrap_err();
        assert!(matches!(later, Error::NoResources { .. }), "{later}");
        cluster.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releasing_before_the_grant_cancels_the_creation() {
    within(LIMIT, async {
        let cluster = TestCluster::start(1).await;
        let client = cluster.client().await;
        let held = new_actor(&client).await;
        let actor = client.spawn_actor(spec(Duration::from_secs(20)));
        let queued = actor.send_request(CallKind::Method, "echo", vec![]);
        wait_until(Duration::from_secs(5), "the request to reach the master's queue", || async {
            client.status().await.unwrap().pending_requests == 1
        })
        .await;
        actor.release();
        let err = queued.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::ActorDied { .. }) && err.to_string().contains("released"), "{err}");
        wait_until(Duration::from_secs(5), "the master to drop the request", || async {
            client.status().await.unwrap().pending_requests == 0
        })
        .await;
        // The released creation took nothing: the freed slot goes to the next actor.
        drop(held);
        let next = new_actor(&client).await;
        assert!(next.request(CallKind::Method, "echo", vec![]).await.unwrap().failure.is_none());
        assert_eq!(client.status().await.unwrap().cpu_used(), 1);
        cluster.stop().await;
    })
    .await;
}
