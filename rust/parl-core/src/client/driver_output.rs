//! Printing actors' output on the driver's stdout (`log_to_driver`).
//!
//! The lines arrive on the client's I/O thread, which must never block: a driver whose stdout
//! is a pipe nobody reads would otherwise stall every call. So the I/O thread only queues
//! lines (a bounded queue; when it is full, lines are dropped and counted), and one printer
//! thread per process writes them.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::OnceLock;

/// Lines waiting for the printer, at most.
const QUEUE_LINES: usize = 10_000;

struct Printer {
    lines: SyncSender<String>,
    dropped: AtomicU64,
}

fn printer() -> &'static Printer {
    static PRINTER: OnceLock<Printer> = OnceLock::new();
    PRINTER.get_or_init(|| {
        let (lines, queue) = sync_channel::<String>(QUEUE_LINES);
        let spawned = std::thread::Builder::new().name("parl_rs-log-to-driver".into()).spawn(move || {
            for line in queue {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the log_to_driver printer: {e}");
        }
        Printer { lines, dropped: AtomicU64::new(0) }
    })
}

/// Queues `data` (a job's output) for printing, each line prefixed with `prefix`. Never blocks.
pub fn print(prefix: &str, data: &[u8]) {
    let printer = printer();
    for line in String::from_utf8_lossy(data).lines() {
        let mut text = format!("{prefix} {line}");
        let dropped = printer.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            text = format!("[parl_rs: {dropped} lines of actors' output dropped: stdout is not read fast enough]\n{text}");
        }
        match printer.lines.try_send(text) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                printer.dropped.fetch_add(1 + dropped, Ordering::Relaxed);
            }
        }
    }
}
