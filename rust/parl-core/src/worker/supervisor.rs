//! Starts job processes and learns of their exits from the OS, at once, as their parent.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};

use crate::auth::{Auth, KEY_ENV};
use crate::error::{Error, Result};
use crate::key_pipe::KeyPipe;
use crate::protocol::JobId;

/// How to start a job process.
#[derive(Debug, Clone)]
pub struct JobCommand {
    /// Interpreter command, e.g. ["/usr/bin/python3"]; "-m parl_rs._job" is appended.
    pub python: Vec<String>,
    /// "tcp://127.0.0.1:port" of the worker's job socket.
    pub worker_address: String,
    /// Address the job binds and advertises to clients.
    pub host: String,
    /// Host published to clients in the job's address.
    pub advertise: String,
    /// Parent of every job's directory.
    pub jobs_dir: PathBuf,
    /// The worker's cache of shipped-file bundles.
    pub bundle_dir: PathBuf,
    /// The cluster key jobs prove to the worker and require of clients.
    pub auth: Auth,
}

/// A job process that ended.
#[derive(Debug)]
pub struct Exited {
    pub job_id: JobId,
    pub status: String,
}

/// A live job process: dropping `kill` kills nothing; sending on it does.
pub struct Running {
    pub pid: u32,
    kill: Option<oneshot::Sender<()>>,
}

impl Running {
    /// Kills the process (SIGKILL). Its exit is reported like any other.
    pub fn kill(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
    }
}

#[cfg(any(test, feature = "fuzzing"))]
impl Running {
    /// A job with no process behind it (the fuzz harness): its kill arrives on the receiver.
    pub(crate) fn stub(pid: u32) -> (Running, oneshot::Receiver<()>) {
        let (kill, killed) = oneshot::channel();
        (Running { pid, kill: Some(kill) }, killed)
    }
}

/// The directory of one job: `work/` is its working directory, `output.log` its stdout+stderr.
pub fn job_dir(jobs_dir: &Path, job_id: &str) -> PathBuf {
    jobs_dir.join(job_id)
}

/// Starts one job process; its exit will arrive on `exits`. A job that cannot be started
/// (out of descriptors, say) leaves no folder behind.
pub fn spawn(command: &JobCommand, job_id: &str, exits: mpsc::UnboundedSender<Exited>) -> Result<Running> {
    let dir = job_dir(&command.jobs_dir, job_id);
    let started = start(command, job_id, &dir, exits);
    if started.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    started
}

fn start(
    command: &JobCommand,
    job_id: &str,
    dir: &Path,
    exits: mpsc::UnboundedSender<Exited>,
) -> Result<Running> {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).map_err(|e| Error::io(format!("creating {}", work.display()), e))?;
    let log_path = dir.join("output.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| Error::io(format!("creating {}", log_path.display()), e))?;
    let log_err = log.try_clone().map_err(|e| Error::io("duplicating the job log", e))?;
    let (program, args) = command
        .python
        .split_first()
        .ok_or_else(|| Error::io("starting a job", std::io::Error::other("empty python command")))?;
    let mut process = Command::new(program);
    process.env_remove(KEY_ENV);
    // The key goes through a pipe only the job inherits: the job runs the user's code, which
    // must not find the key in its environment (nor in `/proc/<pid>/environ`).
    let key_pipe = command.auth.key().map(KeyPipe::new).transpose()?;
    if let Some(pipe) = &key_pipe {
        pipe.pass_to(&mut process);
    }
    let mut child = process
        .args(args)
        .args(["-m", "parl_rs._job"])
        .env("XPARL", "True")
        .env("XPARL_JOB_ID", job_id)
        .env("XPARL_WORKER_ADDRESS", &command.worker_address)
        .env("XPARL_JOB_HOST", &command.host)
        .env("XPARL_JOB_ADVERTISE", &command.advertise)
        .env("XPARL_JOB_DIR", &work)
        // No GPU until the actor's Init brings the ids the master granted (PARL's rule too).
        .env("CUDA_VISIBLE_DEVICES", "")
        .env("XPARL_JOB_LOG", &log_path)
        .env("XPARL_BUNDLE_DIR", &command.bundle_dir)
        // Unbuffered, so a job killed mid-run still leaves everything it printed in its log.
        .env("PYTHONUNBUFFERED", "1")
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::io(format!("starting a job with {program:?}"), e))?;
    drop(key_pipe); // the job has its copy of the pipe; the worker's is closed
    let pid = child.id().unwrap_or(0);
    let (kill_tx, kill_rx) = oneshot::channel();
    let job_id = job_id.to_string();
    tokio::spawn(async move {
        let status = tokio::select! {
            status = child.wait() => status,
            _ = kill_rx => {
                let _ = child.start_kill();
                child.wait().await
            }
        };
        let status = match status {
            Ok(status) => describe(status),
            Err(e) => format!("could not be waited for: {e}"),
        };
        // Its working files are no longer needed; its log stays for the user to read.
        let _ = std::fs::remove_dir_all(&work);
        let _ = exits.send(Exited { job_id, status });
    });
    Ok(Running { pid, kill: Some(kill_tx) })
}

/// What [`describe`] says of a process that exited with status 0.
pub const CLEAN_EXIT: &str = "exited with status 0";

/// How [`describe`] starts the status of a process a signal killed.
pub const KILLED_BY_SIGNAL: &str = "was killed by signal";

/// "exited with status 1", "was killed by signal 9 (SIGKILL)".
pub fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(signal) => format!("{KILLED_BY_SIGNAL} {signal} ({})", signal_name(signal)),
        None => "ended".to_string(),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGINT => "SIGINT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_are_described_for_people() {
        assert_eq!(describe(ExitStatus::from_raw(0)), "exited with status 0");
        assert_eq!(describe(ExitStatus::from_raw(1 << 8)), "exited with status 1");
        assert_eq!(describe(ExitStatus::from_raw(9)), "was killed by signal 9 (SIGKILL)");
        assert_eq!(describe(ExitStatus::from_raw(11)), "was killed by signal 11 (SIGSEGV)");
    }

    #[tokio::test]
    async fn a_job_that_cannot_start_leaves_no_folder() {
        let root = std::env::temp_dir().join(format!("parl-spawn-{}", std::process::id()));
        let command = JobCommand {
            python: vec!["/nonexistent/python".into()],
            worker_address: "tcp://127.0.0.1:1".into(),
            host: "127.0.0.1".into(),
            advertise: "127.0.0.1".into(),
            jobs_dir: root.join("jobs"),
            bundle_dir: root.join("bundles"),
            auth: Auth::generate(),
        };
        let (exits, _) = mpsc::unbounded_channel();
        let error = spawn(&command, "w-1-1", exits).err().expect("no such interpreter");
        assert!(error.to_string().contains("/nonexistent/python"), "{error}");
        assert!(!job_dir(&command.jobs_dir, "w-1-1").exists(), "the failed job's folder stayed");
        let _ = std::fs::remove_dir_all(root);
    }
}
