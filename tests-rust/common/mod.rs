//! Helpers for integration tests: a real master and worker on 127.0.0.1 with free ports,
//! whose jobs are the native echo job, and waiting on conditions with deadlines.

#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use parl_core::config::{HeartbeatConfig, MasterConfig, WorkerConfig};
use parl_core::master::{self, MasterHandle};
use parl_core::protocol::CallKind;
use parl_core::runtime::Shutdown;
use parl_core::worker::{self, WorkerHandle};
use parl_core::{Actor, ActorSpec, Auth, Client, ClientConfig};

pub struct TestCluster {
    pub address: String,
    pub http_address: String,
    pub master: Option<MasterHandle>,
    pub worker: Option<WorkerHandle>,
    pub state_dir: PathBuf,
    /// The cluster's key (a fresh random one per test cluster).
    pub auth: Auth,
}

pub fn echo_job() -> Vec<String> {
    vec![env!("CARGO_BIN_EXE_parl-echo-job").to_string()]
}

pub fn heartbeat() -> HeartbeatConfig {
    HeartbeatConfig { interval: Duration::from_millis(200), timeout: Duration::from_secs(2) }
}

impl TestCluster {
    pub async fn start(cpu_num: u32) -> TestCluster {
        TestCluster::start_with(cpu_num, Vec::new(), Auth::generate()).await
    }

    /// A cluster whose nodes all use `auth` (e.g. `Auth::Insecure`).
    pub async fn start_with_auth(cpu_num: u32, auth: Auth) -> TestCluster {
        TestCluster::start_with(cpu_num, Vec::new(), auth).await
    }

    /// A GPU cluster (its master takes only GPU workers) whose worker offers `gpus`.
    pub async fn start_gpu(gpus: &[&str]) -> TestCluster {
        TestCluster::start_with(0, gpus.iter().map(|g| g.to_string()).collect(), Auth::generate()).await
    }

    async fn start_with(cpu_num: u32, gpus: Vec<String>, auth: Auth) -> TestCluster {
        let config = MasterConfig {
            bind: "127.0.0.1:0".into(),
            heartbeat: heartbeat(),
            gpu_cluster: !gpus.is_empty(),
            python_version: String::new(),
            http_bind: Some("127.0.0.1:0".into()),
            auth: auth.clone(),
            scheme: Default::default(),
            hwm: 0,
        };
        let master = master::start(config, Shutdown::new()).await.expect("master starts");
        let state_dir = std::env::temp_dir().join(format!("parl-test-{}", parl_core::ids::new_id("t")));
        let mut cluster = TestCluster {
            address: master.address.clone(),
            http_address: master.http_address.clone().expect("the master serves HTTP"),
            master: Some(master),
            worker: None,
            state_dir,
            auth,
        };
        cluster.worker = Some(cluster.worker_with(cpu_num, gpus).await.expect("worker starts"));
        cluster
    }

    pub async fn add_worker(&mut self, cpu_num: u32) {
        self.worker = Some(self.worker_with(cpu_num, Vec::new()).await.expect("worker starts"));
    }

    /// Starts a worker for this cluster (the master may refuse it).
    pub async fn worker_with(&self, cpu_num: u32, gpus: Vec<String>) -> parl_core::Result<WorkerHandle> {
        worker::start(self.worker_config(cpu_num, gpus), Shutdown::new()).await
    }

    /// The configuration of a worker for this cluster, whose jobs are the echo job.
    pub fn worker_config(&self, cpu_num: u32, gpus: Vec<String>) -> WorkerConfig {
        WorkerConfig {
            master: self.address.clone(),
            cpu_num,
            gpus,
            python: echo_job(),
            state_dir: self.state_dir.clone(),
            host: Some("127.0.0.1".into()),
            advertise: None,
            connect_timeout: Duration::from_secs(5),
            python_version: String::new(),
            retention: Default::default(),
            auth: self.auth.clone(),
            hwm: 0,
        }
    }

    pub async fn client(&self) -> Client {
        self.client_with(self.auth.clone()).await.expect("client connects")
    }

    /// A client that proves `auth` (the master may refuse it).
    pub async fn client_with(&self, auth: Auth) -> parl_core::Result<Client> {
        let config = ClientConfig {
            master: self.address.clone(),
            connect_timeout: Duration::from_secs(5),
            log_to_driver: false,
            auth,
            encoding: Default::default(),
        };
        Client::connect(config).await
    }

    /// The token the cluster's HTTP ports require.
    pub fn http_token(&self) -> String {
        self.auth.key().expect("test clusters have a key").http_token()
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
    ActorSpec {
        n_cpu: 1,
        n_gpu: 0,
        timeout,
        class_name: "Echo".into(),
        max_memory: None,
        on_worker: None,
        options: Default::default(),
    }
}

/// Checks that the cluster still serves: a new client creates an actor and calls it.
pub async fn still_serves(cluster: &TestCluster) {
    let client = cluster.client().await;
    let actor = new_actor(&client).await;
    let reply = actor.request(CallKind::Method, "echo", vec![]).await.expect("the call is answered");
    assert!(reply.failure.is_none());
}

/// Creates an actor on the echo job and initialises it.
pub async fn new_actor(client: &Client) -> Actor {
    let actor = client.create_actor(spec(Duration::from_secs(20))).await.expect("actor created");
    init(&actor).await;
    actor
}

/// Initialises an actor of the echo job.
pub async fn init(actor: &Actor) {
    let reply = actor.request(CallKind::init(), "Echo", vec![]).await.expect("init");
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

/// A plain HTTP/1.0 GET, with `token` as a bearer token; returns the status line's code and
/// the whole response text.
pub fn http_get(address: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("HTTP server reachable");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n{auth}\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let code = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, response)
}
