//! Running clusters: the embedded `LocalCluster`, the foreground `run_master` / `run_worker`
//! of `xparl`, and `cluster_status`.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use parl_core::config::{HeartbeatConfig, MasterConfig, WorkerConfig};
use parl_core::master::scheduler::Scheme;
use parl_core::protocol::ClusterStatus;
use parl_core::worker::logs::LogRetention;
use parl_core::{ids, node, Auth, LocalCluster};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::to_py;
use crate::wait;

/// A master and one worker inside this process.
#[pyclass(name = "LocalCluster", frozen, module = "parl_rs._core")]
pub struct PyLocalCluster {
    address: String,
    key: Option<String>,
    cluster: Mutex<Option<LocalCluster>>,
}

#[pymethods]
impl PyLocalCluster {
    #[new]
    #[pyo3(signature = (cpu_num, python, host="127.0.0.1".to_string(), port=0))]
    fn new(
        py: Python<'_>,
        cpu_num: u32,
        python: Vec<String>,
        host: String,
        port: u16,
    ) -> PyResult<PyLocalCluster> {
        parl_core::logging::init("warn");
        let state_dir = std::env::temp_dir().join(format!("parl_rs-local-{}", ids::new_id("c")));
        let bind = format!("{host}:{port}");
        let version = python_version(py)?;
        let start = async move { LocalCluster::start(&bind, cpu_num, python, version, state_dir).await };
        let cluster = wait::run(py, start, "starting the local cluster")?.map_err(to_py)?;
        let key = cluster.auth.key().map(|key| key.text().to_string());
        Ok(PyLocalCluster { address: cluster.address.clone(), key, cluster: Mutex::new(Some(cluster)) })
    }

    #[getter]
    fn address(&self) -> &str {
        &self.address
    }

    /// The key generated for this cluster (its clients need it).
    #[getter]
    fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    fn shutdown(&self, py: Python<'_>) -> PyResult<()> {
        let cluster = self.cluster.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut cluster) = cluster {
            wait::run(py, async move { cluster.stop().await }, "stopping the local cluster")?;
        }
        Ok(())
    }
}

/// "major.minor" of this interpreter: the cluster's Python (nodes run the same one as jobs).
pub fn python_version(py: Python<'_>) -> PyResult<String> {
    let info = py.import("sys")?.getattr("version_info")?;
    let major: u32 = info.getattr("major")?.extract()?;
    let minor: u32 = info.getattr("minor")?.extract()?;
    Ok(format!("{major}.{minor}"))
}

/// Builds a runtime for a foreground node; the node owns the process.
fn node_runtime() -> PyResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("cannot start the runtime: {e}")))
}

#[pyfunction]
#[pyo3(signature = (host, port, ready_file=None, heartbeat_interval=1.0, heartbeat_timeout=5.0, http_port=None, gpu_cluster=false, key=None, encrypt=false, scheme="leastload", hwm=0, http_host=None))]
#[allow(clippy::too_many_arguments)]
pub fn run_master(
    py: Python<'_>,
    host: String,
    port: u16,
    ready_file: Option<PathBuf>,
    heartbeat_interval: f64,
    heartbeat_timeout: f64,
    http_port: Option<u16>,
    gpu_cluster: bool,
    key: Option<String>,
    encrypt: bool,
    scheme: &str,
    hwm: u32,
    http_host: Option<String>,
) -> PyResult<()> {
    parl_core::logging::init("info");
    let scheme = Scheme::parse(scheme).map_err(PyValueError::new_err)?;
    let auth = Auth::from_key(key.as_deref());
    match auth.key() {
        Some(key) if encrypt => key.require_encryption(),
        None if encrypt => return Err(PyValueError::new_err("encrypt=True needs a cluster key")),
        _ => {}
    }
    let config = MasterConfig {
        // The monitor listens where the master does unless told otherwise (`--monitor_host`).
        http_bind: http_port
            .map(|http_port| format!("{}:{http_port}", http_host.as_deref().unwrap_or(&host))),
        bind: format!("{host}:{port}"),
        heartbeat: HeartbeatConfig::from_secs(heartbeat_interval, heartbeat_timeout),
        gpu_cluster,
        python_version: python_version(py)?,
        auth,
        scheme,
        hwm,
    };
    let rt = node_runtime()?;
    py.detach(|| rt.block_on(node::run_master(config, ready_file.as_deref()))).map_err(to_py)
}

/// The placement schemes a master can run (`run_master(scheme=...)`), the default first.
#[pyfunction]
pub fn schemes() -> Vec<&'static str> {
    Scheme::ALL.iter().map(|scheme| scheme.name()).collect()
}

#[pyfunction]
#[pyo3(signature = (master_address, cpu_num, python, state_dir, ready_file=None, host=None, connect_timeout=5.0, gpus=Vec::new(), advertise=None, key=None, hwm=0))]
#[allow(clippy::too_many_arguments)]
pub fn run_worker(
    py: Python<'_>,
    master_address: String,
    cpu_num: u32,
    python: Vec<String>,
    state_dir: PathBuf,
    ready_file: Option<PathBuf>,
    host: Option<String>,
    connect_timeout: f64,
    gpus: Vec<String>,
    advertise: Option<String>,
    key: Option<String>,
    hwm: u32,
) -> PyResult<()> {
    parl_core::logging::init("info");
    let config = WorkerConfig {
        master: master_address,
        cpu_num,
        gpus,
        python,
        state_dir,
        host,
        advertise,
        connect_timeout: Duration::from_secs_f64(connect_timeout),
        python_version: python_version(py)?,
        retention: LogRetention::from_env(),
        auth: Auth::from_key(key.as_deref()),
        hwm,
    };
    let rt = node_runtime()?;
    py.detach(|| rt.block_on(node::run_worker(config, ready_file.as_deref()))).map_err(to_py)
}

#[pyfunction]
#[pyo3(signature = (address, timeout=5.0, key=None))]
pub fn cluster_status<'py>(
    py: Python<'py>,
    address: String,
    timeout: f64,
    key: Option<String>,
) -> PyResult<Bound<'py, PyAny>> {
    let timeout = Duration::from_secs_f64(timeout);
    let auth = Auth::from_key(key.as_deref());
    let query = async move { parl_core::query_status(&address, timeout, &auth).await };
    let status = wait::run(py, query, "the status request")?;
    status_to_python(py, &status.map_err(to_py)?)
}

/// The token the HTTP ports of the cluster with `key` require (`?token=` or a bearer header),
/// so that `xparl` can print links that work.
#[pyfunction]
pub fn http_token(key: &str) -> Option<String> {
    parl_core::ClusterKey::new(key).map(|key| key.http_token())
}

/// The cluster key this process's parent passed (see `parl_core::key_pipe`): read once from the
/// pipe named in `XPARL_KEY_FD`, else from `XPARL_CLUSTER_KEY`; None if neither is set.
#[pyfunction]
pub fn key_from_parent() -> PyResult<Option<String>> {
    parl_core::key_pipe::key_from_parent().map_err(to_py)
}

/// The status as a Python dict, with the vacant counts and the totals added.
pub fn status_to_python<'py>(py: Python<'py>, status: &ClusterStatus) -> PyResult<Bound<'py, PyAny>> {
    let mut value = serde_json::to_value(status).expect("the status serializes");
    let workers = value["workers"].as_array_mut().expect("workers is a list");
    for worker in workers {
        for kind in ["cpu", "gpu"] {
            let count = |what: &str| worker[format!("{kind}_{what}")].as_u64().unwrap_or(0);
            let vacant = count("total").saturating_sub(count("used"));
            worker[format!("{kind}_vacant")] = vacant.into();
        }
    }
    value["cpu_total"] = status.cpu_total().into();
    value["cpu_used"] = status.cpu_used().into();
    value["cpu_vacant"] = status.cpu_total().saturating_sub(status.cpu_used()).into();
    value["gpu_total"] = status.gpu_total().into();
    value["gpu_used"] = status.gpu_used().into();
    value["gpu_vacant"] = status.gpu_total().saturating_sub(status.gpu_used()).into();
    value["actors"] = status.actors().into();
    py.import("json")?.call_method1("loads", (value.to_string(),))
}
