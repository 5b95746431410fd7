//! Binding one interface and publishing another (`--host` / `--advertise`): what clients are
//! given for jobs and logs is the advertised host, and it works.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{new_actor, within, TestCluster};
use parl_core::protocol::CallKind;
use parl_core::worker;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_and_logs_are_published_under_the_advertised_host() {
    within(LIMIT, async {
        let mut cluster = TestCluster::start(0).await;
        let mut config = cluster.worker_config(1, Vec::new());
        config.host = Some("0.0.0.0".into());
        config.advertise = Some("localhost".into());
        let advertised = worker::start(config, Default::default()).await.expect("worker starts");
        if let Some(empty) = cluster.worker.replace(advertised) {
            empty.stop().await;
        }
        let client = cluster.client().await;
        let token = cluster.http_token();
        let actor = new_actor(&client).await;
        let grant = actor.grant().expect("connected").clone();
        assert!(grant.address.starts_with("tcp://localhost:"), "{}", grant.address);
        assert!(grant.log_address.starts_with("localhost:"), "{}", grant.log_address);
        let reply = actor.request(CallKind::Method, "echo", vec![Bytes::from_static(b"via localhost")]).await;
        assert_eq!(reply.unwrap().payload, vec![Bytes::from_static(b"via localhost")]);
        let log =
            common::http_get(&grant.log_address, &format!("/get-log?job_id={}", grant.job_id), Some(&token));
        assert_eq!(log.0, 200, "{}", log.1);
        cluster.stop().await;
    })
    .await;
}
