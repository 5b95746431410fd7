//! `parl_rs._core`: the Python binding of parl-core.
//!
//! Every binding converts its arguments, releases the GIL around the Rust work, and converts
//! the result; errors are mapped onto `parl_rs.exceptions` in one place ([`errors`]).
//!
//! ## Layout
//! - [`wait`]: blocking on Rust work with the GIL released and Ctrl-C honoured.
//! - [`errors`]: parl-core errors to Python exceptions.
//! - [`frames`]: payload frames between Python buffers and Rust, without copies where safe.
//! - [`client`]: `Client`, `ActorHandle`, `CallKind`, `RemoteFailure`.
//! - [`pending`]: `PendingReply`, `CompletionQueue`: replies Python waits for or is told about.
//! - [`tasks`]: `TaskDispatcher`: stateless tasks on leased jobs.
//! - [`cluster`]: `LocalCluster`, `run_master`, `run_worker`, `cluster_status`,
//!   `http_token`, `key_from_parent`.
//! - [`job`]: `JobRuntime`, the networking side of a job process, and its `JobRequest`.

mod client;
mod cluster;
mod errors;
mod frames;
mod job;
mod pending;
mod tasks;
mod wait;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", parl_core::VERSION)?;
    m.add("PROTOCOL_VERSION", parl_core::protocol::PROTOCOL_VERSION)?;
    m.add_class::<client::PyClient>()?;
    m.add_class::<client::PyActorHandle>()?;
    m.add_class::<client::PyCallKind>()?;
    m.add_class::<job::PyJobRequest>()?;
    m.add_class::<client::PyRemoteFailure>()?;
    m.add_class::<pending::PyPendingReply>()?;
    m.add_class::<frames::PyFrame>()?;
    m.add_class::<pending::PyCompletionQueue>()?;
    m.add_class::<tasks::PyTasks>()?;
    m.add_class::<cluster::PyLocalCluster>()?;
    m.add_class::<job::PyJobRuntime>()?;
    m.add_function(wrap_pyfunction!(cluster::run_master, m)?)?;
    m.add_function(wrap_pyfunction!(cluster::schemes, m)?)?;
    m.add_function(wrap_pyfunction!(cluster::run_worker, m)?)?;
    m.add_function(wrap_pyfunction!(cluster::cluster_status, m)?)?;
    m.add_function(wrap_pyfunction!(cluster::http_token, m)?)?;
    m.add_function(wrap_pyfunction!(cluster::key_from_parent, m)?)?;
    Ok(())
}
