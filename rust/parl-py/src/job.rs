//! `JobRuntime`: the networking side of a job process, for `parl_rs._job`.

use std::time::{Duration, Instant};

use parl_core::job::{JobConfig, JobRequest, JobRuntime, Next};
use parl_core::protocol::{ActorOptions, CallKind, Encoding, FailureKind, RemoteFailure};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::client::PyCallKind;
use crate::errors::to_py;
use crate::frames::{self, Lending};

/// How long one GIL-free wait for a request lasts before checking for signals.
const SIGNAL_CHECK: Duration = Duration::from_millis(200);

#[pyclass(name = "JobRuntime", frozen, module = "parl_rs._core")]
pub struct PyJobRuntime {
    runtime: JobRuntime,
}

/// One request for `parl_rs._job`: the call envelope, and its payload as Python buffers.
#[pyclass(name = "JobRequest", frozen, get_all, module = "parl_rs._core")]
pub struct PyJobRequest {
    /// To pass back to `JobRuntime.reply`.
    id: u64,
    kind: PyCallKind,
    name: String,
    frames: Vec<Py<PyAny>>,
    /// Environment variables to set before the payload is unpickled (for an `Init`).
    env: Vec<(String, String)>,
    /// The payload is portable pickle (a native client's), and the reply must be too.
    portable: bool,
    /// An `Init`'s actor options, as builtins: `keep_alive_on_error`, `max_concurrency`, and
    /// `code` (`sys_path`, `sources`); None for other requests.
    options: Option<Py<PyDict>>,
}

impl PyJobRequest {
    fn new(py: Python<'_>, request: JobRequest) -> PyResult<PyJobRequest> {
        let options = match &request.kind {
            CallKind::Init(spec) => Some(options_dict(py, &spec.options)?),
            _ => None,
        };
        Ok(PyJobRequest {
            id: request.id,
            kind: PyCallKind::of(&request.kind),
            name: request.name,
            frames: frames::to_python(py, request.payload)?,
            env: request.env,
            portable: request.encoding == Encoding::Portable,
            options,
        })
    }
}

fn options_dict(py: Python<'_>, options: &ActorOptions) -> PyResult<Py<PyDict>> {
    let code = PyDict::new(py);
    code.set_item("sys_path", &options.code.sys_path)?;
    code.set_item(
        "sources",
        options.code.sources.iter().cloned().collect::<std::collections::HashMap<_, _>>(),
    )?;
    let dict = PyDict::new(py);
    dict.set_item("keep_alive_on_error", options.keep_alive_on_error)?;
    dict.set_item("max_concurrency", options.max_concurrency)?;
    dict.set_item("code", code)?;
    Ok(dict.unbind())
}

type Failure = (String, String, String, String);

#[pymethods]
impl PyJobRuntime {
    #[staticmethod]
    fn start(py: Python<'_>) -> PyResult<PyJobRuntime> {
        parl_core::logging::init("warn");
        let config = JobConfig::from_env().map_err(to_py)?;
        let runtime = py.detach(|| JobRuntime::start(config)).map_err(to_py)?;
        Ok(PyJobRuntime { runtime })
    }

    #[getter]
    fn job_id(&self) -> &str {
        self.runtime.job_id()
    }

    #[getter]
    fn workdir(&self) -> String {
        self.runtime.workdir().display().to_string()
    }

    fn next_request(&self, py: Python<'_>) -> PyResult<Option<PyJobRequest>> {
        loop {
            match py.detach(|| self.runtime.next_request(SIGNAL_CHECK)) {
                Next::Request(request) => return PyJobRequest::new(py, *request).map(Some),
                Next::Exit => return Ok(None),
                Next::Idle => py.check_signals()?,
            }
        }
    }

    /// Waits (without the GIL) until the job must exit, at most `timeout` seconds, dropping
    /// the requests that still arrive. An actor that ended on an error waits for its client's
    /// release: the client learns of the end from the error's reply, so the release confirms
    /// that the reply arrived before the process exits.
    fn wait_for_release(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        self.runtime.ending_on_error();
        let timeout = Duration::try_from_secs_f64(timeout)
            .map_err(|_| PyValueError::new_err(format!("invalid timeout {timeout}")))?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            match py.detach(|| self.runtime.next_request(left.min(SIGNAL_CHECK))) {
                Next::Exit => return Ok(()),
                Next::Request(_) | Next::Idle => py.check_signals()?,
            }
        }
    }

    #[pyo3(signature = (request_id, frames, failure=None))]
    fn reply(
        &self,
        py: Python<'_>,
        request_id: u64,
        frames: Vec<Bound<'_, PyAny>>,
        failure: Option<Failure>,
    ) -> PyResult<()> {
        // Lent, then waited for: the actor's next request may change what it returned.
        let (payload, returns) = frames::from_python(&frames, Lending::Lend)?;
        let failure = match failure {
            None => None,
            Some((kind, exc_type, message, traceback)) => {
                let kind = FailureKind::parse(&kind)
                    .ok_or_else(|| PyValueError::new_err(format!("unknown failure kind {kind:?}")))?;
                Some(RemoteFailure { kind, exc_type, message, traceback })
            }
        };
        if frames::is_large(&payload) {
            // This thread writes the reply to the connection itself: without the GIL.
            py.detach(|| self.runtime.reply(request_id, payload, failure));
        } else {
            self.runtime.reply(request_id, payload, failure);
        }
        if returns.any_lent() {
            py.detach(|| returns.wait(Duration::from_secs(10)));
        }
        Ok(())
    }
}
