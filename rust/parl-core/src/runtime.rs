//! The background tokio runtime of a process that is not async itself (a Python program, a
//! job). One per process, on a dedicated thread; a forked child gets a fresh one, because the
//! parent's runtime thread does not exist in the child.

use std::future::Future;
use std::sync::{Mutex, OnceLock};
use std::thread;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

struct ProcessRuntime {
    pid: u32,
    handle: Handle,
}

static RUNTIME: OnceLock<Mutex<Option<ProcessRuntime>>> = OnceLock::new();

/// The handle of this process's background runtime, started on first use.
///
/// The runtime is current-thread: all socket I/O happens on one thread, which measured
/// faster than a multi-threaded runtime for this kind of traffic (fewer thread hand-offs).
pub fn handle() -> Handle {
    let cell = RUNTIME.get_or_init(|| Mutex::new(None));
    let mut guard = cell.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    match guard.as_ref() {
        Some(rt) if rt.pid == pid => rt.handle.clone(),
        _ => {
            let handle = start_thread();
            *guard = Some(ProcessRuntime { pid, handle: handle.clone() });
            handle
        }
    }
}

fn start_thread() -> Handle {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::Builder::new()
        .name("parl-rs-io".into())
        .spawn(move || {
            yield_on_wake();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cannot build the tokio runtime");
            let _ = tx.send(rt.handle().clone());
            // Drive I/O and timers for the life of the process.
            rt.block_on(std::future::pending::<()>());
        })
        .expect("cannot start the parl_rs I/O thread");
    rx.recv().expect("the parl_rs I/O thread died at start")
}

/// Makes the calling thread (an I/O thread) wait for the CPU rather than preempt the thread
/// that woke it (SCHED_BATCH). Its wake-ups come from a thread that is about to sleep (a caller
/// that just sent a request waits for the reply): preempting it costs a context switch each
/// way on a busy CPU, for nothing.
pub fn yield_on_wake() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall on the calling thread (pid 0) with a valid parameter.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
}

/// Runs `future` on the background runtime and blocks the calling (non-runtime) thread until
/// it completes.
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    handle().spawn(async move {
        let _ = tx.send(future.await);
    });
    rx.recv().expect("the parl_rs runtime dropped a task")
}

/// A token cancelled on shutdown, shared by every long-lived loop of a component.
pub type Shutdown = CancellationToken;

/// A running component (master, worker): its main task and the token that stops it.
pub struct Service {
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl Service {
    pub fn new(shutdown: Shutdown, task: tokio::task::JoinHandle<()>) -> Service {
        Service { shutdown, task }
    }

    /// Stops the component and waits for its main task to end.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Waits until the component stops by itself or through its token.
    pub async fn join(self) {
        let _ = self.task.await;
    }
}
