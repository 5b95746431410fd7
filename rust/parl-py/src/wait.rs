//! Waiting for Rust work from Python: the GIL is released while waiting, and Ctrl-C
//! (KeyboardInterrupt) still interrupts every wait.

use std::future::Future;
use std::time::{Duration, Instant};

use parl_core::runtime;
use pyo3::exceptions::{PyRuntimeError, PyTimeoutError};
use pyo3::prelude::*;

/// How long one GIL-free wait lasts before checking for signals. Replies that arrive sooner
/// wake the waiter at once; this only bounds how late a Ctrl-C is noticed.
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// Waits, up to `timeout` if given, until `poll` returns a value. `poll` blocks (with the GIL
/// released) for at most the slice it is given. `what` names the wait in a timeout error.
pub fn wait_for<T: Send>(
    py: Python<'_>,
    timeout: Option<Duration>,
    what: &str,
    mut poll: impl FnMut(Duration) -> Option<T> + Send,
) -> PyResult<T> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let slice = match deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()).min(SIGNAL_CHECK),
            None => SIGNAL_CHECK,
        };
        if let Some(value) = py.detach(|| poll(slice)) {
            return Ok(value);
        }
        py.check_signals()?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(PyTimeoutError::new_err(format!(
                "{what} timed out after {:?}",
                timeout.unwrap_or_default()
            )));
        }
    }
}

/// Waits for `rx`, up to `timeout` if given. `what` names the wait in a timeout error.
pub fn wait<T: Send>(
    py: Python<'_>,
    rx: oneshot::Receiver<T>,
    timeout: Option<Duration>,
    what: &str,
) -> PyResult<T> {
    let received = wait_for(py, timeout, what, move |slice| match rx.recv_timeout(slice) {
        Ok(value) => Some(Ok(value)),
        Err(oneshot::RecvTimeoutError::Timeout) => None,
        Err(oneshot::RecvTimeoutError::Disconnected) => Some(Err(())),
    })?;
    received.map_err(|()| PyRuntimeError::new_err(format!("{what}: the parl_rs runtime dropped the request")))
}

/// Runs `future` on the process's background runtime and waits for it. On Ctrl-C the
/// future is cancelled.
pub fn run<F>(py: Python<'_>, future: F, what: &str) -> PyResult<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let task = runtime::handle().spawn(async move {
        let _ = tx.send(future.await);
    });
    wait(py, rx, None, what).inspect_err(|_| task.abort())
}
