//! `TaskDispatcher`: the binding of a client's task dispatcher (`parl_core::client::tasks`).

use parl_core::client::tasks::{LeaseKind, TaskOptions, TaskSubmission, Tasks};
use parl_core::Error;
use pyo3::prelude::*;

use crate::client::{max_memory_bytes, seconds};
use crate::errors::to_py;
use crate::frames::{self, Lending};
use crate::pending::PyPendingReply;

/// Queues stateless tasks of one client; each reply is a `PendingReply`.
#[pyclass(name = "TaskDispatcher", frozen, module = "parl_rs._core")]
pub struct PyTasks {
    tasks: Tasks,
}

impl PyTasks {
    pub fn new(tasks: Tasks) -> PyTasks {
        PyTasks { tasks }
    }
}

#[pymethods]
impl PyTasks {
    /// Makes the function `function` known: `pickled` goes to each leased job once.
    fn define(&self, function: u64, pickled: Vec<u8>) {
        self.tasks.define(function, pickled.into());
    }

    /// Queues a task of `function` (named `name` in errors) with the pickled arguments
    /// `frames`; returns its id and its reply. Never blocks.
    #[pyo3(signature = (function, name, frames, timeout=None, retries=0, retry_exceptions=false, hwm=1, n_gpu=0, max_memory=None, after=Vec::new(), follow=None))]
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        function: u64,
        name: &str,
        frames: Vec<Bound<'_, PyAny>>,
        timeout: Option<f64>,
        retries: u32,
        retry_exceptions: bool,
        hwm: u32,
        n_gpu: u32,
        max_memory: Option<f64>,
        after: Vec<u64>,
        follow: Option<u64>,
    ) -> PyResult<(u64, PyPendingReply)> {
        let (payload, _) = frames::from_python(&frames, Lending::Copy)?;
        let kind = LeaseKind { n_gpu, max_memory: max_memory_bytes(max_memory)?, on_worker: None };
        let timeout = timeout.map(seconds).transpose()?;
        let options = TaskOptions { timeout, retries, retry_exceptions, hwm: hwm.max(1), kind };
        let task = TaskSubmission { function, name: name.to_string(), payload, options, after, follow };
        let (pending, fill) = PyPendingReply::waiting(name);
        let on_done = move |result: Result<_, _>| fill(result.map_err(Error::Task));
        let id = self.tasks.submit(task, on_done).map_err(to_py)?;
        Ok((id, pending))
    }

    /// Cancels a task: a queued one never runs; a running one is stopped (its job is killed).
    fn cancel(&self, task: u64) {
        self.tasks.cancel(task);
    }
}
