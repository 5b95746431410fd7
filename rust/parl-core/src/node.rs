//! Running a master or a worker in the foreground of a process (what `xparl start` and
//! `xparl connect` launch): start, write a ready file, serve until SIGTERM or SIGINT.

use std::path::Path;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::{MasterConfig, WorkerConfig};
use crate::error::{Error, Result};
use crate::runtime::{Service, Shutdown};
use crate::{master, worker};

/// Runs a master until a termination signal, which stops the whole cluster: the master tells
/// its workers to exit (`xparl stop` sends the signal). A master that is killed (SIGKILL) or
/// crashes tells nobody, and its workers wait for it to come back.
pub async fn run_master(config: MasterConfig, ready_file: Option<&Path>) -> Result<()> {
    raise_open_files_limit();
    let shutdown = Shutdown::new();
    let handle = master::start(config, shutdown.clone()).await?;
    let ready = serde_json::json!({
        "address": handle.address,
        "http_address": handle.http_address,
        "pid": std::process::id(),
    });
    write_ready(ready_file, &ready)?;
    wait_for_signal(&handle.cluster_stopper()).await?;
    handle.stop_cluster().await;
    shutdown.cancel();
    Ok(())
}

/// Runs a worker until a termination signal.
pub async fn run_worker(config: WorkerConfig, ready_file: Option<&Path>) -> Result<()> {
    let shutdown = Shutdown::new();
    let handle = worker::start(config, shutdown.clone()).await?;
    let ready = serde_json::json!({ "worker_id": handle.worker_id, "pid": std::process::id() });
    serve_until_signal(handle.service, shutdown, ready_file, ready).await
}

/// A master holds one socket per worker and client, and Linux starts processes with a soft
/// limit of 1024 open files: lift it to the hard limit, so that thousands of peers can connect.
/// (The master starts no processes, which would inherit it.)
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 || limit.rlim_cur >= limit.rlim_max {
        return;
    }
    let soft = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
        tracing::info!(
            "raised the limit on open files from {soft} to {} (one per worker and client)",
            limit.rlim_cur
        );
    } else {
        tracing::warn!(
            "the limit on open files is {soft}: the master takes about that many workers and clients"
        );
    }
}

/// Announces readiness, then serves until a signal and stops the service.
async fn serve_until_signal(
    service: Service,
    shutdown: Shutdown,
    ready_file: Option<&Path>,
    ready: serde_json::Value,
) -> Result<()> {
    write_ready(ready_file, &ready)?;
    wait_for_signal(&shutdown).await?;
    service.stop().await;
    Ok(())
}

async fn wait_for_signal(shutdown: &Shutdown) -> Result<()> {
    let mut term = signal(SignalKind::terminate()).map_err(|e| Error::io("installing SIGTERM handler", e))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Error::io("installing SIGINT handler", e))?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        _ = shutdown.cancelled() => {}
    }
    shutdown.cancel();
    Ok(())
}

/// Writes the ready file atomically (write, then rename), so a reader never sees half of it.
fn write_ready(path: Option<&Path>, content: &serde_json::Value) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content.to_string())
        .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}
