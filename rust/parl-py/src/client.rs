//! `Client`, `ActorHandle` and `RemoteFailure`.

use std::time::Duration;

use parl_core::protocol::{self, ActorOptions, CodeContext, RemoteFailure, ShippedFile};
use parl_core::{Actor, ActorSpec, Auth, Client, ClientConfig};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::to_py;
use crate::frames::Lending;
use crate::pending::PyPendingReply;
use crate::tasks::PyTasks;
use crate::{cluster, frames, wait};
use parl_core::client::tasks::{Limits, TaskSettings, Tasks};

/// Why a request failed inside the job.
#[pyclass(name = "RemoteFailure", frozen, get_all, module = "parl_rs._core")]
pub struct PyRemoteFailure {
    kind: String,
    exc_type: String,
    message: String,
    traceback: String,
}

#[pymethods]
impl PyRemoteFailure {
    fn __repr__(&self) -> String {
        format!(
            "RemoteFailure(kind={:?}, exc_type={:?}, message={:?})",
            self.kind, self.exc_type, self.message
        )
    }
}

impl From<RemoteFailure> for PyRemoteFailure {
    fn from(f: RemoteFailure) -> Self {
        PyRemoteFailure {
            kind: f.kind.as_str().to_string(),
            exc_type: f.exc_type,
            message: f.message,
            traceback: f.traceback,
        }
    }
}

/// `max_memory` in MB (as PARL counts them: 2**20 bytes) as bytes; a positive number or None.
pub(crate) fn max_memory_bytes(max_memory: Option<f64>) -> PyResult<Option<u64>> {
    match max_memory {
        Some(mb) if !(mb.is_finite() && mb > 0.0) => {
            Err(PyValueError::new_err(format!("max_memory must be a positive number of MB, got {mb}")))
        }
        mb => Ok(mb.map(|mb| (mb * 1024.0 * 1024.0) as u64)),
    }
}

/// A duration of `s` seconds: finite and not negative.
pub(crate) fn seconds(s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| PyValueError::new_err(format!("expected seconds >= 0, got {s}")))
}

/// One remote actor. Dropping it releases the actor.
#[pyclass(name = "ActorHandle", frozen, module = "parl_rs._core")]
pub struct PyActorHandle {
    actor: Actor,
}

/// What a request asks of an actor (`parl_core::protocol::CallKind`, without the `Init`'s
/// spec, which the client fills in).
#[pyclass(name = "CallKind", eq, eq_int, hash, frozen, from_py_object, module = "parl_rs._core")]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum PyCallKind {
    Init,
    Method,
    GetAttr,
    SetAttr,
    Task,
}

impl PyCallKind {
    fn to_protocol(self) -> protocol::CallKind {
        match self {
            PyCallKind::Init => protocol::CallKind::init(),
            PyCallKind::Method => protocol::CallKind::Method,
            PyCallKind::GetAttr => protocol::CallKind::GetAttr,
            PyCallKind::SetAttr => protocol::CallKind::SetAttr,
            PyCallKind::Task => protocol::CallKind::Task,
        }
    }

    pub(crate) fn of(kind: &protocol::CallKind) -> PyCallKind {
        match kind {
            protocol::CallKind::Init(_) => PyCallKind::Init,
            protocol::CallKind::Method => PyCallKind::Method,
            protocol::CallKind::GetAttr => PyCallKind::GetAttr,
            protocol::CallKind::SetAttr => PyCallKind::SetAttr,
            protocol::CallKind::Task => PyCallKind::Task,
        }
    }
}

/// An actor's options from Python: `sources` maps a shipped file's path in the job to its
/// path on the client.
pub(crate) fn actor_options(
    keep_alive_on_error: bool,
    max_concurrency: u32,
    sys_path: Vec<String>,
    sources: Vec<(String, String)>,
) -> ActorOptions {
    ActorOptions {
        keep_alive_on_error,
        max_concurrency: max_concurrency.max(1),
        code: CodeContext { sys_path, sources },
    }
}

pub(crate) type RequestResult = (Vec<Py<PyAny>>, Option<PyRemoteFailure>);

#[pymethods]
impl PyActorHandle {
    #[getter]
    fn actor_id(&self) -> Option<&str> {
        self.actor.actor_id()
    }

    #[getter]
    fn class_name(&self) -> &str {
        self.actor.class_name()
    }

    #[getter]
    fn job_address(&self) -> Option<&str> {
        self.actor.grant().map(|g| g.address.as_str())
    }

    #[getter]
    fn worker_id(&self) -> Option<&str> {
        self.actor.grant().map(|g| g.worker_id.as_str())
    }

    #[getter]
    fn hostname(&self) -> Option<&str> {
        self.actor.grant().map(|g| g.hostname.as_str())
    }

    #[getter]
    fn log_address(&self) -> Option<&str> {
        self.actor.grant().map(|g| g.log_address.as_str())
    }

    #[getter]
    fn pid(&self) -> Option<u32> {
        self.actor.grant().map(|g| g.pid)
    }

    #[getter]
    fn gpus(&self) -> Option<Vec<String>> {
        self.actor.gpus().map(<[String]>::to_vec)
    }

    #[getter]
    fn is_alive(&self) -> bool {
        self.actor.is_alive()
    }

    /// `lend`: the caller will not change the frames' buffers until the reply (a synchronous
    /// call), so large ones are sent without a copy.
    #[pyo3(signature = (kind, name, frames, lend=false))]
    fn submit(
        &self,
        py: Python<'_>,
        kind: PyCallKind,
        name: &str,
        frames: Vec<Bound<'_, PyAny>>,
        lend: bool,
    ) -> PyResult<PyPendingReply> {
        let lending = if lend { Lending::Lend } else { Lending::Copy };
        let (payload, _returns) = frames::from_python(&frames, lending)?;
        let kind = kind.to_protocol();
        if frames::is_large(&payload) {
            return Ok(py.detach(|| PyPendingReply::submit(&self.actor, kind, name, payload)));
        }
        Ok(PyPendingReply::submit(&self.actor, kind, name, payload))
    }

    #[pyo3(signature = (kind, name, frames, timeout=None))]
    fn request(
        &self,
        py: Python<'_>,
        kind: PyCallKind,
        name: &str,
        frames: Vec<Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<RequestResult> {
        self.submit(py, kind, name, frames, true)?.wait(py, timeout)
    }

    fn release(&self) {
        self.actor.release();
    }

    fn __repr__(&self) -> String {
        match self.actor.grant() {
            Some(grant) => {
                format!("<ActorHandle {} on {} ({})>", grant.job_id, grant.hostname, grant.address)
            }
            None => format!("<ActorHandle of `{}`, waiting for a job>", self.actor.class_name()),
        }
    }
}

/// This process's connection to a master.
#[pyclass(name = "Client", frozen, module = "parl_rs._core")]
pub struct PyClient {
    client: Client,
}

#[pymethods]
impl PyClient {
    #[staticmethod]
    #[pyo3(signature = (address, connect_timeout=5.0, log_to_driver=false, key=None))]
    fn connect(
        py: Python<'_>,
        address: String,
        connect_timeout: f64,
        log_to_driver: bool,
        key: Option<String>,
    ) -> PyResult<PyClient> {
        parl_core::logging::init("warn");
        let config = ClientConfig {
            master: address,
            connect_timeout: Duration::from_secs_f64(connect_timeout),
            log_to_driver,
            auth: Auth::from_key(key.as_deref()),
            encoding: protocol::Encoding::Python,
        };
        let client = wait::run(py, Client::connect(config), "connecting to the master")?.map_err(to_py)?;
        Ok(PyClient { client })
    }

    /// The token the cluster's HTTP ports (status, logs) require; None for an insecure cluster.
    #[getter]
    fn http_token(&self) -> Option<String> {
        self.client.auth().key().map(|key| key.http_token())
    }

    #[getter]
    fn client_id(&self) -> &str {
        self.client.client_id()
    }

    #[getter]
    fn master_address(&self) -> &str {
        self.client.master_address()
    }

    #[getter]
    fn master_version(&self) -> &str {
        self.client.master_version()
    }

    #[getter]
    fn master_python(&self) -> &str {
        self.client.master_python()
    }

    #[getter]
    fn files_shipped(&self) -> u64 {
        self.client.files_shipped()
    }

    fn set_shipped_files(&self, files: Vec<(String, Vec<u8>)>) -> PyResult<()> {
        let files = files.into_iter().map(|(path, data)| ShippedFile { path, data }).collect();
        self.client.set_shipped_files(files).map_err(to_py)
    }

    /// A new actor; its `Init` carries the options (`sources`: a shipped file's path in the job
    /// -> its path on the client).
    #[pyo3(signature = (n_cpu=1, n_gpu=0, timeout=300.0, class_name=String::new(), max_memory=None, keep_alive_on_error=false, max_concurrency=1, sys_path=Vec::new(), sources=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn create_actor(
        &self,
        n_cpu: u32,
        n_gpu: u32,
        timeout: f64,
        class_name: String,
        max_memory: Option<f64>,
        keep_alive_on_error: bool,
        max_concurrency: u32,
        sys_path: Vec<String>,
        sources: Vec<(String, String)>,
    ) -> PyResult<PyActorHandle> {
        let max_memory = max_memory_bytes(max_memory)?;
        let timeout = Duration::from_secs_f64(timeout.max(0.0));
        let options = actor_options(keep_alive_on_error, max_concurrency, sys_path, sources);
        let spec = ActorSpec { n_cpu, n_gpu, timeout, class_name, max_memory, on_worker: None, options };
        Ok(PyActorHandle { actor: self.client.spawn_actor(spec) })
    }

    /// The task dispatcher of this client (see `parl_rs.tasks`): leased jobs find the client's
    /// code through `sys_path` and `sources` (as for `create_actor`).
    #[pyo3(signature = (sys_path=Vec::new(), sources=Vec::new(), create_timeout=300.0, idle_return=0.5))]
    fn tasks(
        &self,
        sys_path: Vec<String>,
        sources: Vec<(String, String)>,
        create_timeout: f64,
        idle_return: f64,
    ) -> PyResult<PyTasks> {
        let limits = Limits { idle_return: seconds(idle_return)?, ..Limits::default() };
        let runner_options = actor_options(true, 1, sys_path, sources);
        let settings = TaskSettings { runner_options, create_timeout: seconds(create_timeout)?, limits };
        Ok(PyTasks::new(Tasks::start(&self.client, settings)))
    }

    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.client.clone();
        let status = wait::run(py, async move { client.status().await }, "the status request")?;
        cluster::status_to_python(py, &status.map_err(to_py)?)
    }

    fn close(&self) {
        self.client.close();
    }

    fn __repr__(&self) -> String {
        format!("<Client {} connected to {}>", self.client.client_id(), self.client.master_address())
    }
}

impl Drop for PyClient {
    fn drop(&mut self) {
        self.client.close();
    }
}
