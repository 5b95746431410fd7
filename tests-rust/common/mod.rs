//! Helpers for integration tests: a real master and worker on 127.0.0.1 with free ports,
//! whose jobs are the native echo job, and waiting on conditions with deadlines.

#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use parl_core::config::{HeartbeatConfig, MasterConfig, WorkerConfig};
use parl_core::master::{self, MasterHandle};
use parl_core::protocol::ActorOp;
use parl_core::runtime::Shutdown;
use parl_core::worker::{self, WorkerHandle};
use parl_core::{Actor, ActorSpec, Client, ClientConfig};

pub struct TestCluster {
    pub address: String,
    pub http_address: String,
    pub master: Option<MasterHandle>,
    pub worker: Option<WorkerHandle>,
    pub state_dir: PathBuf,
}

pub fn echo_job() -> Vec<String> {
    vec![env!("CARGO_BIN_EXE_parl-echo-job").to_string()]
}

pub fn heartbeat() -> HeartbeatConfig {
    HeartbeatConfig { interval: Duration::from_millis(200), timeout: Duration::from_secs(2) }
}

impl TestCluster {
    pub async fn start(cpu_num: u32) -> TestCluster {
        TestCluster::start_with(cpu_num, Vec::new()).await
    }

    /// A GPU cluster (its master takes only GPU workers) whose worker offers `gpus`.
    pub async fn start_gpu(gpus: &[&str]) -> TestCluster {
        TestCluster::start_with(0, gpus.iter().map(|g| g.to_string()).collect()).await
    }

    async fn start_with(cpu_num: u32, gpus: Vec<String>) -> TestCluster {
        let config = MasterConfig {
            bind: "127.0.0.1:0".into(),
            heartbeat: heartbeat(),
            gpu_cluster: !gpus.is_empty(),
            python_version: String::new(),
            http_bind: Some("127.0.0.1:0".into()),
        };
        let master = master::start(config, Shutdown::new()).await.expect("master starts");
        let state_dir = std::env::temp_dir().join(format!("parl-test-{}", parl_core::ids::new_id("t")));
        let mut cluster = TestCluster {
            address: master.address.clone(),
            http_address: master.http_address.clone().expect("the master serves HTTP"),
            master: Some(master),
            worker: None,
            state_dir,
        };
        cluster.worker = Some(cluster.worker_with(cpu_num, gpus).await.expect("worker starts"));
        cluster
    }

    pub async fn add_worker(&mut self, cpu_num: u32) {
        self.worker = Some(self.worker_with(cpu_num, Vec::new()).await.expect("worker starts"));
    }

    /// Starts a worker for this cluster (the master may refuse it).
    pub async fn worker_with(&self, cpu_num: u32, gpus: Vec<String>) -> parl_core::Result<WorkerHandle> {
        let config = WorkerConfig {
            master: self.address.clone(),
            cpu_num,
            gpus,
            python: echo_job(),
            state_dir: self.state_dir.clone(),
            host: Some("127.0.0.1".into()),
            connect_timeout: Duration::from_secs(5),
            python_version: String::new(),
            retention: Default::default(),
        };
        worker::start(config, Shutdown::new()).await
    }

    pub async fn client(&self) -> Client {
        let config = ClientConfig {
            master: self.address.clone(),
            connect_timeout: Duration::from_secs(5),
            log_to_driver: false,
        };
        Client::connect(config).await.expect("client connects")
    }

    pub async fn stop(mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop().await;
        }
        if let Some(master) = self.master.take() {
            master.stop().await;
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

pub fn spec(timeout: Duration) -> ActorSpec {
    ActorSpec { n_cpu: 1, n_gpu: 0, timeout, class_name: "Echo".into(), max_memory: None }
}

/// Creates an actor on the echo job and initialises it.
pub async fn new_actor(client: &Client) -> Actor {
    let actor = client.create_actor(spec(Duration::from_secs(20))).await.expect("actor created");
    init(&actor).await;
    actor
}

/// Initialises an actor of the echo job.
pub async fn init(actor: &Actor) {
    let reply = actor.request(ActorOp::init(), "Echo", vec![]).await.expect("init");
    assert!(reply.failure.is_none());
}

/// Polls `condition` until it is true or `deadline` passes.
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    while !condition().await {
        assert!(tokio::time::Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a test body with a hard time limit.
pub async fn within<F: Future>(limit: Duration, body: F) -> F::Output {
    tokio::time::timeout(limit, body).await.expect("test exceeded its time limit")
}

/// A plain HTTP/1.0 GET; returns the status line's code and the whole response text.
pub fn http_get(address: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("HTTP server reachable");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let code = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, response)
}
