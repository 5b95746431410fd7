//! The networking side of a job process: one actor, served to one client.
//!
//! A background thread owns the job's socket, its link to the worker and a watch on the
//! parent process; the host language's main thread only takes requests from
//! [`JobRuntime::next_request`] and answers with [`JobRuntime::reply`]. So a job busy in user
//! code (holding the GIL for minutes) still answers at the network level and is never mistaken
//! for a dead one.
//!
//! The job ends (next_request returns None) when its client releases it, when its client's
//! connection closes, when its worker goes away, or when its parent process changes.

mod counters;
pub mod files;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;
mod output;

use crate::protocol::Service;
use counters::Counters;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::auth::Auth;
use crate::connection::{self, Inbound, Outbox};
use crate::error::{Error, Result};
use crate::ids;
use crate::logging::Throttle;
use crate::protocol::{
    ActorReply, ActorRequest, CallKind, Encoding, ErrorCode, ErrorReply, FailureKind, FileBundle, InitSpec,
    JobHello, MemoryLimit, Message, Outcome, RemoteFailure,
};
use crate::transport::zmq::ZmqServer;
use crate::transport::PeerId;

/// How often the actor's counters go to the worker, while they change.
const STATS_PERIOD: Duration = Duration::from_secs(1);

/// Where a job finds its worker and its directory (set by the worker in the environment).
#[derive(Debug, Clone)]
pub struct JobConfig {
    pub job_id: String,
    pub worker_address: String,
    pub host: String,
    /// Host to publish in the job's address instead of the bound one.
    pub advertise: Option<String>,
    pub workdir: PathBuf,
    /// The worker's cache of shipped-file bundles.
    pub bundle_dir: Option<PathBuf>,
    /// The file the job's stdout and stderr go to (streamed to the client on request).
    pub log_file: Option<PathBuf>,
    /// The cluster key (from the worker's pipe, see [`crate::key_pipe`]): proven to the worker,
    /// required of clients.
    pub auth: Auth,
}

impl JobConfig {
    pub fn from_env() -> Result<JobConfig> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| {
                Error::Protocol(format!("{name} is not set: a job is started by a parl_rs worker"))
            })
        };
        Ok(JobConfig {
            job_id: var("XPARL_JOB_ID")?,
            worker_address: var("XPARL_WORKER_ADDRESS")?,
            host: var("XPARL_JOB_HOST")?,
            advertise: std::env::var("XPARL_JOB_ADVERTISE").ok().filter(|a| !a.is_empty()),
            workdir: PathBuf::from(var("XPARL_JOB_DIR")?),
            bundle_dir: std::env::var_os("XPARL_BUNDLE_DIR").map(PathBuf::from),
            log_file: std::env::var_os("XPARL_JOB_LOG").map(PathBuf::from),
            auth: Auth::from_key(crate::key_pipe::key_from_parent()?.as_deref()),
        })
    }
}

/// One request for the host language.
#[derive(Debug)]
pub struct JobRequest {
    /// Local id to pass back to [`JobRuntime::reply`].
    pub id: u64,
    /// What is asked; an `Init` carries the actor's options.
    pub kind: CallKind,
    pub name: String,
    pub payload: Vec<Bytes>,
    /// How the payload is written, and how the reply must be.
    pub encoding: Encoding,
    /// Environment variables the host language sets before handling this request, so before
    /// any user code is loaded: for "init", `CUDA_VISIBLE_DEVICES` with the actor's GPU ids
    /// (empty for a CPU actor). Empty for other requests.
    pub env: Vec<(String, String)>,
}

/// What [`JobRuntime::next_request`] found.
#[derive(Debug)]
pub enum Next {
    Request(Box<JobRequest>),
    /// The job must exit: released, its client or worker is gone.
    Exit,
    /// Nothing arrived within the timeout.
    Idle,
}

/// Where the reply to a local request id goes.
struct ReplyTo {
    peer: PeerId,
    request_id: u64,
    /// The actor's `Init`: its answer tells the worker that the actor started.
    init: bool,
}

/// Tells the worker, once, that the job's actor started (its `Init` was answered, whatever
/// the outcome): the master counts the grants whose actor has not started yet against the
/// worker's high-water mark, and this takes one off. Shared by the job's loop (which answers
/// an `Init` whose files cannot be set up) and the host language's side (which answers the
/// others).
struct StartNotice {
    worker: Outbox,
    job_id: String,
    sent: AtomicBool,
}

impl StartNotice {
    fn new(worker: Outbox, job_id: String) -> StartNotice {
        StartNotice { worker, job_id, sent: AtomicBool::new(false) }
    }

    /// Sent on the worker connection the job said hello on, which is how the worker knows that
    /// the job speaks for itself.
    fn post(&self) {
        if !self.sent.swap(true, Ordering::AcqRel) {
            self.worker.post(&Message::ActorStarted { job_id: self.job_id.clone() });
        }
    }
}

pub struct JobRuntime {
    config: JobConfig,
    // Behind a mutex only so that the runtime can be shared; one thread takes requests.
    requests: Mutex<std_mpsc::Receiver<Option<JobRequest>>>,
    pending: Arc<Mutex<HashMap<u64, ReplyTo>>>,
    outbox: Outbox,
    started: Arc<StartNotice>,
    counters: Arc<Counters>,
}

/// What the job's thread hands the host language's side once its sockets are up.
type Started = (Outbox, Arc<StartNotice>, Arc<Counters>);

impl JobRuntime {
    /// Binds the job's socket, announces the job to its worker and starts serving.
    pub fn start(config: JobConfig) -> Result<JobRuntime> {
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let (requests_tx, requests) = std_mpsc::channel();
        let pending = Arc::new(Mutex::new(HashMap::new()));
        let thread_config = config.clone();
        let thread_pending = pending.clone();
        std::thread::Builder::new()
            .name("parl-rs-job".into())
            .spawn(move || {
                crate::runtime::yield_on_wake();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("cannot build the job runtime");
                // Spawned, not run as the `block_on` future itself: tokio polls the I/O driver
                // once more (an epoll_wait syscall) before it polls a woken `block_on` future,
                // while a woken task runs at once. Every request wakes the serving loop.
                let serving = rt.spawn(serve(thread_config, requests_tx, thread_pending, ready_tx));
                let _ = rt.block_on(serving);
                // Served out: the host language was told to exit. If it is stuck in user code,
                // do not keep the slot busy.
                std::thread::sleep(Duration::from_secs(2));
                // SAFETY: `_exit` ends the process immediately; nothing else is required.
                unsafe { libc::_exit(0) };
            })
            .map_err(|e| Error::io("starting the job thread", e))?;
        let (outbox, started, counters) =
            ready_rx.recv().map_err(|_| Error::Protocol("the job thread died at start".into()))??;
        Ok(JobRuntime { config, requests: Mutex::new(requests), pending, outbox, started, counters })
    }

    /// The actor ends because of the error it just answered with: tells the worker now, so
    /// that the job's exit is known as the exception's doing.
    pub fn ending_on_error(&self) {
        self.counters.ending_on_error();
    }

    pub fn job_id(&self) -> &str {
        &self.config.job_id
    }

    pub fn workdir(&self) -> &PathBuf {
        &self.config.workdir
    }

    /// Waits up to `timeout` for the next request.
    pub fn next_request(&self, timeout: Duration) -> Next {
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        match requests.recv_timeout(timeout) {
            Ok(Some(request)) => Next::Request(Box::new(request)),
            Ok(None) | Err(std_mpsc::RecvTimeoutError::Disconnected) => Next::Exit,
            Err(std_mpsc::RecvTimeoutError::Timeout) => Next::Idle,
        }
    }

    /// Answers the request with local id `id`.
    pub fn reply(&self, id: u64, mut payload: Vec<Bytes>, mut failure: Option<RemoteFailure>) {
        let Some(to) = self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) else {
            return;
        };
        if let Some(why) = crate::transport::check_payload_size(&payload, "the result") {
            // Sent as it is, the client's socket would refuse it and drop the connection.
            payload.clear();
            let exc_type = "parl_rs.exceptions.MessageTooLargeError".to_string();
            failure = Some(RemoteFailure {
                kind: FailureKind::Serialize,
                exc_type,
                message: why,
                traceback: String::new(),
            });
        }
        self.counters.answered(failure.as_ref());
        let outcome = match failure {
            None => Outcome::Ok,
            Some(failure) => Outcome::Failed(failure),
        };
        let reply = Message::ActorReply(ActorReply { request_id: to.request_id, outcome });
        self.outbox.send(Some(&to.peer), &reply, payload);
        if to.init {
            self.started.post();
        }
    }
}

async fn serve(
    config: JobConfig,
    requests: std_mpsc::Sender<Option<JobRequest>>,
    pending: Arc<Mutex<HashMap<u64, ReplyTo>>>,
    ready: std_mpsc::Sender<Result<Started>>,
) {
    let started = start_sockets(&config).await;
    let (outbox, inbound, worker_link) = match started {
        Ok(parts) => parts,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let started = Arc::new(StartNotice::new(worker_link.0.clone(), config.job_id.clone()));
    let counters = Arc::new(Counters::new(worker_link.0.clone(), config.job_id.clone()));
    let _ = ready.send(Ok((outbox.clone(), started.clone(), counters.clone())));
    let mut job = JobLoop {
        config,
        outbox,
        worker: worker_link.0.clone(),
        started,
        counters,
        requests,
        pending,
        owner: None,
        held: None,
        next_id: 0,
        garbage_log: Throttle::new(Duration::from_secs(5)),
    };
    let why = job.run(inbound, worker_link).await;
    tracing::debug!("job {} ends: {why}", job.config.job_id);
    // The calls since the last report, before the host language exits: the worker reports
    // them with the job's exit.
    job.counters.send_if_changed();
    let _ = job.requests.send(None);
}

/// The job's own socket, and its link to the worker (kept open: its closing tells the job
/// that the worker is gone).
type Sockets = (Outbox, mpsc::UnboundedReceiver<Inbound>, (Outbox, mpsc::UnboundedReceiver<Inbound>));

async fn start_sockets(config: &JobConfig) -> Result<Sockets> {
    let (socket, endpoint) = ZmqServer::bind(&format!("{}:0", config.host)).await?;
    let (outbox, inbound) =
        connection::spawn_server(socket, Service::Job, format!("job {}", config.job_id), config.auth.clone());
    let worker_link = connection::connect(
        &config.worker_address,
        Service::Worker,
        Duration::from_secs(10),
        &config.auth,
        "job->worker".into(),
    );
    let (worker_outbox, worker_inbound) = worker_link.await?;
    let address = match &config.advertise {
        Some(advertise) => ids::with_host(&endpoint, advertise),
        None => endpoint,
    };
    let hello = JobHello { job_id: config.job_id.clone(), address, pid: std::process::id() };
    worker_outbox.post(&Message::JobHello(hello));
    Ok((outbox, inbound, (worker_outbox, worker_inbound)))
}

struct JobLoop {
    config: JobConfig,
    outbox: Outbox,
    /// The link to the worker (for the actor's memory limit).
    worker: Outbox,
    started: Arc<StartNotice>,
    counters: Arc<Counters>,
    requests: std_mpsc::Sender<Option<JobRequest>>,
    pending: Arc<Mutex<HashMap<u64, ReplyTo>>>,
    /// The client peer that initialised the actor; only it may use the job.
    owner: Option<PeerId>,
    /// Requests held, in order, while the job waits for its client's files.
    held: Option<Vec<(ActorRequest, Vec<Bytes>)>>,
    next_id: u64,
    garbage_log: Throttle,
}

impl JobLoop {
    /// Serves until the job must end; returns why.
    async fn run(
        &mut self,
        mut inbound: mpsc::UnboundedReceiver<Inbound>,
        (_worker_outbox, mut worker): (Outbox, mpsc::UnboundedReceiver<Inbound>),
    ) -> String {
        let parent = std::os::unix::process::parent_id();
        let mut watch = tokio::time::interval(Duration::from_millis(200));
        let mut report = tokio::time::interval(STATS_PERIOD);
        loop {
            tokio::select! {
                event = inbound.recv() => match event {
                    Some(event) => {
                        if let Some(why) = self.on_event(event) {
                            return why;
                        }
                    }
                    None => return "the job socket closed".into(),
                },
                event = worker.recv() => match event {
                    Some(Inbound::PeerGone { .. }) | Some(Inbound::Closed { .. }) | None => {
                        return "the worker is gone".into();
                    }
                    Some(_) => {}
                },
                _ = watch.tick() => {
                    if std::os::unix::process::parent_id() != parent {
                        return "the worker process died".into();
                    }
                }
                _ = report.tick() => self.counters.send_if_changed(),
            }
        }
    }

    fn on_event(&mut self, event: Inbound) -> Option<String> {
        match event {
            Inbound::Message { peer, envelope } => self.dispatch(peer, envelope.message, envelope.payload),
            Inbound::Malformed { peer, error } => {
                self.refuse(&peer, ErrorCode::Malformed, error.to_string());
                None
            }
            Inbound::PeerGone { peer } if self.owner.as_ref() == Some(&peer) => {
                Some("the client's connection closed".into())
            }
            Inbound::PeerGone { .. } => None,
            Inbound::Closed { reason } => Some(format!("the job socket failed: {reason}")),
        }
    }

    /// The one dispatch of the job's socket.
    fn dispatch(&mut self, peer: PeerId, message: Message, payload: Vec<Bytes>) -> Option<String> {
        match message {
            Message::ActorRequest(request) => {
                if !self.accept_peer(&peer, &request) {
                    let why = "this job serves another client's actor".to_string();
                    self.reject(&peer, request.request_id, why);
                    return None;
                }
                self.forward(peer, request, payload);
                None
            }
            Message::ShipFiles(bundle) if self.owner.as_ref() == Some(&peer) => {
                self.receive_files(peer, bundle);
                None
            }
            Message::Release if self.owner.as_ref() == Some(&peer) => Some("the actor was released".into()),
            // Granted, and given back before its first request: nobody owns it yet, and without
            // this it would hold its slot (and GPUs) until its client left.
            Message::Release if self.owner.is_none() => Some("the actor was released before its init".into()),
            Message::Release => {
                self.refuse(&peer, ErrorCode::Rejected, "only the actor's client may release it".into());
                None
            }
            other => {
                self.refuse(
                    &peer,
                    ErrorCode::Unexpected,
                    format!("{} is not accepted by a job", other.kind()),
                );
                None
            }
        }
    }

    /// The first client to initialise the job owns it.
    fn accept_peer(&mut self, peer: &PeerId, request: &ActorRequest) -> bool {
        match (&self.owner, &request.kind) {
            (None, CallKind::Init(_)) => {
                self.owner = Some(peer.clone());
                true
            }
            (Some(owner), _) => owner == peer,
            (None, _) => false,
        }
    }

    /// Passes a request to the host language, unless it must wait for the shipped files.
    fn forward(&mut self, peer: PeerId, request: ActorRequest, payload: Vec<Bytes>) {
        if let Some(held) = &mut self.held {
            held.push((request, payload));
            return;
        }
        if let CallKind::Init(spec) = &request.kind {
            match self.restore_files(&spec.bundle) {
                Ok(true) => {}
                Ok(false) => {
                    let hash = spec.bundle.clone();
                    self.held = Some(vec![(request, payload)]);
                    self.outbox.reply(&peer, &Message::NeedFiles { hash });
                    return;
                }
                Err(e) => {
                    self.reject_owned(&peer, &request, e.to_string());
                    return;
                }
            }
        }
        let env = match &request.kind {
            CallKind::Init(spec) => self.set_up_actor(&peer, spec),
            _ => Vec::new(),
        };
        self.next_id += 1;
        let id = self.next_id;
        let init = matches!(request.kind, CallKind::Init(_));
        let to = ReplyTo { peer, request_id: request.request_id, init };
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(id, to);
        let ActorRequest { kind, name, encoding, .. } = request;
        let _ = self.requests.send(Some(JobRequest { id, kind, name, payload, encoding, env }));
    }

    /// Sets up what the actor needs besides its files. Done when the Init is finally handed to
    /// the host language, not when it arrives: an Init held for its files passes `forward`
    /// twice, and must not stream the output twice nor send its memory limit twice. Returns
    /// the environment the actor's class is loaded in.
    fn set_up_actor(&self, peer: &PeerId, spec: &InitSpec) -> Vec<(String, String)> {
        if spec.log_to_driver {
            if let Some(log_file) = &self.config.log_file {
                output::stream(log_file.clone(), self.outbox.clone(), peer.clone());
            }
        }
        if let Some(max_bytes) = spec.resources.max_memory {
            let limit = MemoryLimit { job_id: self.config.job_id.clone(), max_bytes };
            self.worker.post(&Message::MemoryLimit(limit));
        }
        vec![("CUDA_VISIBLE_DEVICES".to_string(), spec.resources.gpus.join(","))]
    }

    /// Puts the named bundle into the working directory from the worker's cache. False if the
    /// worker does not have it yet.
    fn restore_files(&self, hash: &str) -> Result<bool> {
        match (&self.config.bundle_dir, hash) {
            (_, "") => Ok(true),
            (Some(dir), hash) => files::BundleCache::new(dir.clone()).restore(hash, &self.config.workdir),
            (None, _) => Ok(false),
        }
    }

    /// The client sent the files this job asked for: cache them, then serve what was held.
    fn receive_files(&mut self, peer: PeerId, bundle: FileBundle) {
        let Some(held) = self.held.take() else { return };
        let stored = if !bundle.is_intact() {
            Err(Error::Protocol("the shipped files do not match their hash".into()))
        } else {
            match &self.config.bundle_dir {
                Some(dir) => files::BundleCache::new(dir.clone()).store(&bundle),
                None => Ok(()),
            }
            .and_then(|()| files::write_all(&self.config.workdir, &bundle.files))
        };
        for (mut request, payload) in held {
            match &stored {
                Err(e) => self.reject_owned(&peer, &request, format!("cannot set up the job's files: {e}")),
                Ok(()) => {
                    // The files are in place now: the init must not ask again.
                    if let CallKind::Init(spec) = &mut request.kind {
                        spec.bundle.clear();
                    }
                    self.forward(peer.clone(), request, payload);
                }
            }
        }
    }

    /// Rejects a request of the job's owner. Its `Init` rejected is an `Init` answered: the
    /// actor will not start, and the grant must not stay in flight.
    fn reject_owned(&self, peer: &PeerId, request: &ActorRequest, why: String) {
        self.reject(peer, request.request_id, why);
        if matches!(request.kind, CallKind::Init(_)) {
            self.started.post();
        }
    }

    fn reject(&self, peer: &PeerId, request_id: u64, why: String) {
        let reply = Message::ActorReply(ActorReply { request_id, outcome: Outcome::Rejected(why) });
        self.outbox.reply(peer, &reply);
    }

    fn refuse(&mut self, peer: &PeerId, code: ErrorCode, message: String) {
        if let Some(n) = self.garbage_log.allow() {
            tracing::warn!("job {}: refused a message: {message} ({n} more suppressed)", self.config.job_id);
        }
        self.outbox.reply(peer, &Message::Error(ErrorReply { code, message }));
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::fuzz::Job;
    use crate::fuzz_support::{block_on, peer, settle};
    use crate::protocol::{
        encode, ActorRequest, CallKind, Encoding, FileBundle, InitSpec, Message, ShippedFile,
    };

    fn request(request_id: u64, kind: CallKind) -> Vec<Bytes> {
        let request = ActorRequest { request_id, kind, name: "A".into(), encoding: Encoding::Python };
        encode(&Message::ActorRequest(request), Vec::new())
    }

    /// What the job_dispatch fuzz target builds on: an init that waits for its files, other
    /// clients turned away, the host language's side, and the release.
    #[test]
    fn the_fuzz_harness_drives_a_whole_actor_life() {
        block_on(async {
            let (client, other) = (peer(0), peer(1));
            let bundle = FileBundle::new(vec![ShippedFile { path: "m.py".into(), data: b"x = 1".to_vec() }]);
            let mut job = Job::new(true);
            let init = CallKind::Init(InitSpec { bundle: bundle.hash.clone(), ..InitSpec::default() });
            job.frames(client.clone(), request(1, init)).await;
            job.frames(client.clone(), request(2, CallKind::Method)).await;
            job.frames(other.clone(), request(1, CallKind::Method)).await;
            job.frames(other.clone(), encode(&Message::Release, Vec::new())).await;
            job.check();
            assert_eq!(job.next_request(), None, "both wait for the files");
            job.frames(client.clone(), encode(&Message::ShipFiles(bundle), Vec::new())).await;
            job.check();
            assert_eq!(job.next_request(), Some((1, "init")));
            assert_eq!(job.next_request(), Some((2, "method")));
            job.reply(1, Vec::new(), false);
            job.reply(2, vec![Bytes::from_static(b"result")], true);
            job.check();
            assert!(!job.ended());
            job.frames(client, encode(&Message::Release, Vec::new())).await;
            assert!(job.ended());
        });
    }

    /// The master frees a grant in flight when the actor starts: the worker hears it once,
    /// when the Init is answered, and not for other requests nor a second Init.
    #[test]
    fn the_job_says_once_that_its_actor_started_when_the_init_is_answered() {
        block_on(async {
            let client = peer(0);
            let mut job = Job::new(false);
            job.frames(client.clone(), request(1, CallKind::Init(InitSpec::default()))).await;
            job.frames(client.clone(), request(2, CallKind::Method)).await;
            settle().await;
            job.check();
            assert_eq!(job.next_request(), Some((1, "init")));
            assert_eq!(job.next_request(), Some((2, "method")));
            settle().await;
            job.check();
            assert_eq!(job.actor_started(), 0, "the init is not answered yet");
            job.reply(1, Vec::new(), true);
            settle().await;
            job.check();
            assert_eq!(job.actor_started(), 1, "a failed init is answered too");
            job.reply(2, Vec::new(), false);
            job.frames(client, request(3, CallKind::Init(InitSpec::default()))).await;
            assert_eq!(job.next_request(), Some((3, "init")));
            job.reply(3, Vec::new(), false);
            settle().await;
            job.check(); // panics on a second ActorStarted
            assert_eq!(job.actor_started(), 1);
        });
    }

    /// An Init rejected by the job itself (its files cannot be set up) is answered as well; an
    /// Init of another client, turned away, is not the actor's.
    #[test]
    fn a_rejected_init_of_the_owner_counts_and_another_clients_does_not() {
        block_on(async {
            let (client, other) = (peer(0), peer(1));
            let bundle = FileBundle::new(vec![ShippedFile { path: "m.py".into(), data: b"x = 1".to_vec() }]);
            let mut job = Job::new(true);
            let init = || CallKind::Init(InitSpec { bundle: bundle.hash.clone(), ..InitSpec::default() });
            job.frames(client.clone(), request(1, init())).await;
            job.frames(other, request(1, init())).await;
            settle().await;
            job.check();
            assert_eq!(job.actor_started(), 0, "another client's init was turned away");
            let mut forged = bundle.clone();
            forged.files[0].data = b"import os".to_vec();
            job.frames(client, encode(&Message::ShipFiles(forged), Vec::new())).await;
            settle().await;
            job.check();
            assert_eq!(job.next_request(), None, "the init was rejected");
            assert_eq!(job.actor_started(), 1);
        });
    }
}
