//! The job runtime's dispatch without sockets, for [`crate::fuzz_support`].
//!
//! Everything is the real code: the job's socket task and dispatch (ownership by the first
//! `Init`, requests held while the client ships its files, the bundle cache, release), and the
//! host language's side ([`JobRuntime::next_request`] and [`JobRuntime::reply`]). The files
//! go to a fresh folder of the temp dir, removed when the harness is dropped. Jobs stream
//! their output to the client only with a log file, which the harness does not give (that
//! path is a task following a file every 100 ms).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::counters::Counters;
use super::{JobConfig, JobLoop, JobRuntime, Next, StartNotice};
use crate::fuzz_support::{socket_task, Wire};
use crate::logging::Throttle;
use crate::protocol::{FailureKind, Message, RemoteFailure};
use crate::transport::{PeerId, SocketEvent};

/// A job's state and its dispatch, fed by the caller, with the host language's side.
pub struct Job {
    state: JobLoop,
    runtime: JobRuntime,
    wire: Wire,
    /// The job's link to its worker (it sends the actor's memory limit there, and that its
    /// actor started).
    worker: Wire,
    /// `ActorStarted` messages the job sent its worker so far (at most one).
    started: usize,
    root: PathBuf,
    /// Why the job ended, once it has: its loop would stop, so nothing more is delivered.
    ended: Option<String>,
}

impl Job {
    /// A fresh job; `bundle_cache`: whether its worker has a bundle cache. Call inside
    /// [`crate::fuzz_support::block_on`].
    pub fn new(bundle_cache: bool) -> Job {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("parl-rs-fuzz-job-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let config = JobConfig {
            job_id: "w-fuzz-1".into(),
            worker_address: "tcp://127.0.0.1:1".into(),
            host: "127.0.0.1".into(),
            advertise: None,
            workdir: root.join("work"),
            bundle_dir: bundle_cache.then(|| root.join("bundles")),
            log_file: None,
            auth: crate::auth::Auth::Insecure,
        };
        let (outbox, wire) = socket_task("job");
        let (worker_outbox, worker) = socket_task("job->worker");
        let (requests_tx, requests) = std_mpsc::channel();
        let pending = Arc::new(Mutex::new(HashMap::new()));
        let started = Arc::new(StartNotice::new(worker_outbox.clone(), config.job_id.clone()));
        let counters = Arc::new(Counters::new(worker_outbox.clone(), config.job_id.clone()));
        let state = JobLoop {
            config: config.clone(),
            outbox: outbox.clone(),
            worker: worker_outbox,
            started: started.clone(),
            counters: counters.clone(),
            requests: requests_tx,
            pending: pending.clone(),
            owner: None,
            held: None,
            next_id: 0,
            garbage_log: Throttle::new(Duration::from_secs(5)),
        };
        let runtime =
            JobRuntime { config, requests: Mutex::new(requests), pending, outbox, started, counters };
        Job { state, runtime, wire, worker, started: 0, root, ended: None }
    }

    /// Frames from `peer`, through the socket task into the job's dispatch.
    pub async fn frames(&mut self, peer: PeerId, frames: Vec<Bytes>) {
        if self.ended.is_none() {
            let event = self.wire.deliver(SocketEvent::Frames { peer, frames, digests: Vec::new() }).await;
            self.ended = self.state.on_event(event);
        }
    }

    /// The connection of `peer` closed.
    pub async fn peer_gone(&mut self, peer: PeerId) {
        if self.ended.is_none() {
            let event = self.wire.deliver(SocketEvent::PeerGone { peer }).await;
            self.ended = self.state.on_event(event);
        }
    }

    /// Whether the job has ended (released, or its client's connection closed).
    pub fn ended(&self) -> bool {
        self.ended.is_some()
    }

    /// The host language takes the next request, if one waits: its local id and operation.
    pub fn next_request(&self) -> Option<(u64, &'static str)> {
        match self.runtime.next_request(Duration::ZERO) {
            Next::Request(request) => Some((request.id, request.kind.as_str())),
            Next::Exit | Next::Idle => None,
        }
    }

    /// The host language answers request `id` (a success, or a user exception).
    pub fn reply(&self, id: u64, payload: Vec<Bytes>, failed: bool) {
        let failure = failed.then(|| RemoteFailure {
            kind: FailureKind::User,
            exc_type: "builtins.ValueError".into(),
            message: "fuzz".into(),
            traceback: String::new(),
        });
        self.runtime.reply(id, payload, failure);
    }

    /// How many times the job told its worker that its actor started, as of the last
    /// [`Job::check`].
    pub fn actor_started(&self) -> usize {
        self.started
    }

    /// Panics unless what must hold after any sequence of events holds.
    pub fn check(&mut self) {
        self.wire.check_sent();
        for message in self.worker.take_sent() {
            if let Message::ActorStarted { job_id } = message {
                // The worker forwards it to the master, which frees a grant in flight: once.
                assert_eq!(job_id, self.state.config.job_id, "the job spoke for another job");
                self.started += 1;
                assert_eq!(self.started, 1, "the job said twice that its actor started");
            }
        }
        let owner = self.state.owner.as_ref();
        let pending = self.state.pending.lock().unwrap_or_else(|e| e.into_inner());
        for (id, to) in pending.iter() {
            assert_eq!(Some(&to.peer), owner, "request {id} came from a peer that does not own the job");
        }
        assert!(self.state.held.is_none() || owner.is_some(), "requests held for a job nobody owns");
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
