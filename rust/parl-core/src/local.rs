//! A master and one worker inside the calling process: the zero-setup cluster that
//! `parl_rs.connect()` with no address starts.

use std::path::PathBuf;
use std::time::Duration;

use crate::auth::Auth;
use crate::config::{HeartbeatConfig, MasterConfig, WorkerConfig, DEFAULT_CONNECT_TIMEOUT};
use crate::error::Result;
use crate::master::{self, MasterHandle};
use crate::runtime::Shutdown;
use crate::worker::logs::LogRetention;
use crate::worker::{self, WorkerHandle};

pub struct LocalCluster {
    pub address: String,
    /// A key made for this cluster alone: its clients use it, nobody else can.
    pub auth: Auth,
    master: Option<MasterHandle>,
    worker: Option<WorkerHandle>,
    shutdown: Shutdown,
    state_dir: PathBuf,
}

impl LocalCluster {
    /// Starts the master on `bind` ("127.0.0.1:0" for a free port) and a worker with
    /// `cpu_num` slots whose jobs run `python` (of version `python_version`, "major.minor").
    pub async fn start(
        bind: &str,
        cpu_num: u32,
        python: Vec<String>,
        python_version: String,
        state_dir: PathBuf,
    ) -> Result<LocalCluster> {
        let shutdown = Shutdown::new();
        let auth = Auth::generate();
        let master_config = MasterConfig {
            bind: bind.to_string(),
            heartbeat: HeartbeatConfig::default(),
            gpu_cluster: false,
            python_version: python_version.clone(),
            http_bind: Some(format!("{}:0", bind.rsplit_once(':').map_or(bind, |(host, _)| host))),
            auth: auth.clone(),
            scheme: Default::default(),
            hwm: 0,
        };
        let master = master::start(master_config, shutdown.child_token()).await?;
        let worker_config = WorkerConfig {
            master: master.address.clone(),
            cpu_num,
            gpus: Vec::new(),
            python,
            state_dir: state_dir.clone(),
            host: Some("127.0.0.1".into()),
            advertise: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            python_version,
            retention: LogRetention::from_env(),
            auth: auth.clone(),
            hwm: 0,
        };
        let worker = match worker::start(worker_config, shutdown.child_token()).await {
            Ok(worker) => worker,
            Err(e) => {
                master.stop().await;
                return Err(e);
            }
        };
        Ok(LocalCluster {
            address: master.address.clone(),
            auth,
            master: Some(master),
            worker: Some(worker),
            shutdown,
            state_dir,
        })
    }

    /// Stops the worker (killing its jobs), then the master, and removes the state directory.
    pub async fn stop(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop().await;
        }
        if let Some(master) = self.master.take() {
            master.stop().await;
        }
        self.shutdown.cancel();
        // Give killed jobs' wait tasks a moment, then clean up.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}
