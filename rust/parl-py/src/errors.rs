//! parl-core errors mapped onto the exception classes of `parl_rs.exceptions`, in one place.

use parl_core::client::tasks::TaskFailure;
use parl_core::transport::TransportError;
use parl_core::Error;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTimeoutError};
use pyo3::prelude::*;

/// Builds an exception of `parl_rs.exceptions.<name>` with positional `args`.
fn parl_exception(name: &str, args: &[String]) -> PyErr {
    exception_of("parl_rs.exceptions", name, args)
}

/// Builds an exception of `<module>.<name>` with positional `args`.
fn exception_of(module: &str, name: &str, args: &[String]) -> PyErr {
    Python::attach(|py| {
        let class = py.import(module).and_then(|m| m.getattr(name));
        let args = pyo3::types::PyTuple::new(py, args);
        match class.and_then(|class| class.call1(args?)) {
            Ok(instance) => PyErr::from_value(instance),
            Err(e) => e,
        }
    })
}

/// Maps an error of any call that is not about one actor.
pub fn to_py(error: Error) -> PyErr {
    let message = error.to_string();
    match error {
        Error::Connect { .. } | Error::MasterUnavailable(_) => parl_exception("ConnectError", &[message]),
        Error::Auth { .. } => parl_exception("AuthenticationError", &[message]),
        Error::Transport(TransportError::Connect { .. }) => parl_exception("ConnectError", &[message]),
        Error::Transport(TransportError::Bind { .. }) | Error::Io { .. } => PyOSError::new_err(message),
        Error::NoResources { .. } | Error::Refused(_) => parl_exception("ResourceError", &[message]),
        Error::ActorDied { .. } => parl_exception("ActorDiedError", &["<unknown>".to_string(), message]),
        Error::Timeout { .. } => PyTimeoutError::new_err(message),
        Error::Protocol(_) | Error::Transport(_) => parl_exception("ProtocolError", &[message]),
        Error::TooLarge(_) => parl_exception("MessageTooLargeError", &[message]),
        Error::Shutdown => PyRuntimeError::new_err(message),
        Error::Task(failure) => task_error(failure, message),
    }
}

/// A task that ended without its function's result.
fn task_error(failure: TaskFailure, message: String) -> PyErr {
    match failure {
        TaskFailure::Attempts { attempts, .. } => Python::attach(|py| {
            let attempts: Vec<(String, String, String, String)> = attempts
                .into_iter()
                .map(|a| (a.place.worker_id, a.place.hostname, a.place.job_id, a.what))
                .collect();
            let class = py.import("parl_rs.exceptions").and_then(|m| m.getattr("TaskError"));
            match class.and_then(|class| class.call1((message, attempts))) {
                Ok(instance) => PyErr::from_value(instance),
                Err(e) => e,
            }
        }),
        TaskFailure::Dependency { .. } | TaskFailure::Follow { .. } => {
            parl_exception("DependencyError", &[message])
        }
        TaskFailure::NoLease { .. } => parl_exception("ResourceError", &[message]),
        TaskFailure::Cancelled { .. } => exception_of("concurrent.futures", "CancelledError", &[message]),
    }
}

/// Maps an error of a request to an actor; `func_name` is the method or attribute involved.
pub fn actor_error(error: Error, func_name: &str) -> PyErr {
    match error {
        Error::ActorDied { .. } => {
            parl_exception("ActorDiedError", &[func_name.to_string(), error.to_string()])
        }
        other => to_py(other),
    }
}
