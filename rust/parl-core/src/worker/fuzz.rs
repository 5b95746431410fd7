//! The worker's dispatch without sockets or processes, for [`crate::fuzz_support`].
//!
//! The worker's real loop starts a Python process for every slot. Here its spawner is a stub
//! ([`stub_spawn`]) that starts nothing: a job is a `Running` whose kill is reported as a
//! SIGKILL exit, as the OS would report it. Everything else is the real code: the pool
//! (refills after exits), the job socket's dispatch (hellos, memory limits, actors started,
//! garbage), the master's messages (kills, assignments, a lost and restored master) and
//! exits. Retention (a periodic sweep of log folders) touches only the file system and is
//! left out.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::supervisor::{Exited, JobCommand, Running};
use super::{logs, memory, WorkerLoop};
use crate::error::Result;
use crate::fuzz_support::{socket_task, Wire};
use crate::link::{LinkEvent, LinkSender};
use crate::logging::Throttle;
use crate::protocol::{Envelope, ExitCause, JobId, Message, Welcome};
use crate::transport::{PeerId, SocketEvent};

/// The pid of every stub job: above any Linux `pid_max` (2^22), so it names no process even
/// if some path signalled it.
const STUB_PID: u32 = 1 << 30;

/// Stands in for [`super::supervisor::spawn`]: a job with no process.
fn stub_spawn(_command: &JobCommand, job_id: &str, exits: mpsc::UnboundedSender<Exited>) -> Result<Running> {
    let (running, killed) = Running::stub(STUB_PID);
    let job_id = job_id.to_string();
    tokio::spawn(async move {
        if killed.await.is_ok() {
            let status = format!("{} 9 (SIGKILL)", super::supervisor::KILLED_BY_SIGNAL);
            let _ = exits.send(Exited { job_id, status });
        }
    });
    Ok(running)
}

/// A worker's state and its dispatch, fed by the caller.
pub struct Worker {
    state: WorkerLoop,
    wire: Wire,
    to_master: mpsc::UnboundedReceiver<(Message, Vec<Bytes>)>,
    memory: mpsc::UnboundedReceiver<memory::Command>,
    exits: mpsc::UnboundedReceiver<Exited>,
    exits_tx: mpsc::UnboundedSender<Exited>,
    /// Jobs whose memory baseline the worker asked for.
    watched: HashSet<JobId>,
    /// Jobs whose exit the worker reported to the master.
    reported: HashSet<JobId>,
    /// Jobs whose actor's start the worker reported to the master.
    started: HashSet<JobId>,
    /// The cause of each exit reported to the master.
    causes: HashMap<JobId, ExitCause>,
}

impl Worker {
    /// A worker with `cpu_num` CPU slots and `gpus` GPUs, its pool filled with stub jobs. Call
    /// inside [`crate::fuzz_support::block_on`].
    pub fn new(cpu_num: u32, gpus: u32) -> Worker {
        let (jobs_outbox, wire) = socket_task("worker-jobs");
        let (master, to_master) = LinkSender::detached();
        let (memory_tx, memory) = mpsc::unbounded_channel();
        let (exits_tx, exits) = mpsc::unbounded_channel();
        // No path is ever created: the stub spawner writes nothing, and retention is not run.
        let nowhere = PathBuf::from("/nonexistent/parl-rs-fuzz");
        let command = JobCommand {
            python: Vec::new(),
            worker_address: "tcp://127.0.0.1:1".into(),
            host: "127.0.0.1".into(),
            advertise: "127.0.0.1".into(),
            jobs_dir: nowhere.join("jobs"),
            bundle_dir: nowhere.join("bundles"),
            auth: crate::auth::Auth::Insecure,
        };
        let mut state = WorkerLoop {
            worker_id: "w-fuzz".into(),
            pool_size: cpu_num as usize + gpus as usize,
            memory: memory_tx,
            command,
            master,
            jobs_outbox,
            jobs: HashMap::new(),
            exits_tx: exits_tx.clone(),
            next_job: 0,
            spawn_failures: 0,
            start_failures: Throttle::new(Duration::from_secs(60)),
            garbage_log: Throttle::new(Duration::from_secs(5)),
            retention: logs::LogRetention::default(),
            spawn: stub_spawn,
            shutdown: crate::runtime::Shutdown::new(),
        };
        state.fill_pool();
        let (watched, reported, started) = (HashSet::new(), HashSet::new(), HashSet::new());
        let causes = HashMap::new();
        Worker { state, wire, to_master, memory, exits, exits_tx, watched, reported, started, causes }
    }

    /// The ids of the worker's jobs, sorted.
    pub fn job_ids(&self) -> Vec<JobId> {
        let mut ids: Vec<JobId> = self.state.jobs.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Frames from `peer` on the job socket, through the socket task into its dispatch.
    pub async fn job_socket(&mut self, peer: PeerId, frames: Vec<Bytes>) {
        let event = self.wire.deliver(SocketEvent::Frames { peer, frames, digests: Vec::new() }).await;
        self.state.on_job_socket(event);
    }

    /// The connection of `peer` to the job socket closed.
    pub async fn job_socket_gone(&mut self, peer: PeerId) {
        let event = self.wire.deliver(SocketEvent::PeerGone { peer }).await;
        self.state.on_job_socket(event);
    }

    /// A message from the master.
    pub fn from_master(&mut self, message: Message) {
        let stop = matches!(message, Message::ClusterStopped { .. });
        self.state.on_master(LinkEvent::Message(Envelope { message, payload: Vec::new() }));
        assert!(!stop || self.state.stopping(), "the master stopped the cluster, and the worker stays");
    }

    /// The link lost the master.
    pub fn master_lost(&mut self) {
        self.state.on_master(LinkEvent::Lost("fuzz".into()));
    }

    /// The link registered again with a (restarted) master.
    pub fn master_restored(&mut self) {
        let welcome = Welcome {
            master_version: crate::VERSION.into(),
            python_version: String::new(),
            heartbeat_interval_ms: 1000,
            heartbeat_timeout_ms: 5000,
            max_message_size: 1 << 30,
        };
        self.state.on_master(LinkEvent::Restored(welcome));
    }

    /// The job process `job_id` ended by itself; the worker learns it at the next [`Worker::reap`].
    pub fn job_died(&mut self, job_id: &str, status: &str) {
        let exited = Exited { job_id: job_id.to_string(), status: status.to_string() };
        let _ = self.exits_tx.send(exited);
    }

    /// The memory watch found `job_id` over its limit. (A real violation also names the job's
    /// descendants, which the worker kills by pid: never here.)
    pub fn over_limit(&mut self, job_id: &str) {
        let violation = memory::Violation {
            job_id: job_id.to_string(),
            resident: 300 << 20,
            baseline: 40 << 20,
            max_bytes: 200 << 20,
            descendants: Vec::new(),
        };
        self.state.kill_over_limit(violation);
    }

    /// Hands the worker the exits reported so far (killed stub jobs report theirs once the
    /// runtime runs their tasks).
    pub async fn reap(&mut self) {
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        while let Ok(exited) = self.exits.try_recv() {
            self.state.on_exit(exited);
        }
    }

    /// The pool's refill tick.
    pub fn refill(&mut self) {
        self.state.fill_pool();
    }

    /// How many actors' starts the worker reported to the master, as of the last
    /// [`Worker::check`].
    pub fn actors_started(&self) -> usize {
        self.started.len()
    }

    /// The cause of `job_id`'s exit as the worker reported it, as of the last [`Worker::check`].
    pub fn exit_cause(&self, job_id: &str) -> Option<ExitCause> {
        self.causes.get(job_id).copied()
    }

    /// Panics unless what must hold after any sequence of events holds.
    pub fn check(&mut self) {
        self.wire.check_sent();
        let jobs = &self.state.jobs;
        assert!(jobs.len() <= self.state.pool_size, "{} jobs for {} slots", jobs.len(), self.state.pool_size);
        for (id, job) in jobs {
            assert!(job.peer.is_none() || job.info.is_some(), "job {id} has a connection but no hello");
        }
        while let Ok(command) = self.memory.try_recv() {
            match command {
                // The baseline is the job's size before any actor code: measured once, at its
                // hello. Measured again later, it would let the actor grow past its limit.
                memory::Command::Watch { job_id, .. } => {
                    assert!(self.watched.insert(job_id.clone()), "job {job_id}'s baseline was taken twice")
                }
                memory::Command::Limit { job_id, .. } => {
                    let connected = jobs.get(&job_id).is_some_and(|job| job.peer.is_some());
                    assert!(connected, "a memory limit for job {job_id}, which never said hello");
                }
                memory::Command::Forget { .. } => {}
            }
        }
        while let Ok((message, _)) = self.to_master.try_recv() {
            match message {
                Message::JobExited(exit) => {
                    assert!(!jobs.contains_key(&exit.job_id), "job {} reported ended, but kept", exit.job_id);
                    assert!(self.reported.insert(exit.job_id.clone()), "job {} ended twice", exit.job_id);
                    self.causes.insert(exit.job_id, exit.cause);
                }
                Message::JobReady(info) | Message::JobBusy { info, .. } => {
                    assert!(jobs.contains_key(&info.job_id), "offered unknown job {}", info.job_id);
                }
                Message::ActorStarted { job_id } => {
                    // Only a job that said hello speaks for itself; each report frees a grant.
                    let connected = jobs.get(&job_id).is_some_and(|job| job.peer.is_some());
                    assert!(connected, "job {job_id}'s actor started, but it never said hello");
                    assert!(self.started.insert(job_id.clone()), "job {job_id}'s actor started twice");
                }
                Message::WorkerStats(stats) => {
                    for job in stats.jobs {
                        assert!(jobs.contains_key(&job.job_id), "a report on unknown job {}", job.job_id);
                    }
                }
                other => panic!("the worker sent {} to the master", other.kind()),
            }
        }
    }
}
