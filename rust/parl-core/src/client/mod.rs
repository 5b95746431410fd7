//! The client: this process's connection to a master and to the jobs of its actors.
//!
//! Creating an actor asks the master for a job (the request waits in the master's queue if no
//! job is free), then connects straight to the job: calls never pass through the master.
//! The master tells the client when a job of one of its actors dies.
//!
//! [`Client::spawn_actor`] does not wait for any of this: the actor takes requests at once and
//! sends them, in order, when its job is connected. [`Client::create_actor`] waits.
//!
//! [`tasks`] runs stateless tasks on jobs leased the same way (each lease is an actor of the
//! host language's task runner).

mod actor;
pub mod counters;
mod driver_output;
pub mod tasks;
pub mod wait_notice;

pub use actor::{Actor, Reply};

use crate::protocol::Service;
use actor::ActorSetup;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::config::ClientConfig;
use crate::connection::{self, Events, Outbox};
use crate::error::{Error, Result};
use crate::link::{self, LinkConfig, LinkEvent, LinkSender};
use crate::protocol::{
    ActorOptions, ClientHello, ClusterStatus, Encoding, FileBundle, JobGrant, JobId, JobRequest, Message,
    ShippedFile, Welcome,
};
use crate::runtime::Shutdown;
use crate::{ids, transport, VERSION};

/// How often a client with waiting creations says so (one line for all of them).
const WAIT_NOTICE_PERIOD: Duration = Duration::from_secs(5);
/// How often the client looks at its waiting creations.
const WAIT_CHECK_PERIOD: Duration = Duration::from_secs(1);

/// A connected client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    client_id: String,
    master: LinkSender,
    welcome: Welcome,
    connect_timeout: Duration,
    /// The cluster key, proven to each job.
    auth: Auth,
    log_to_driver: bool,
    encoding: Encoding,
    /// How many times this client sent its files to a worker (each worker needs them once).
    files_shipped: Arc<AtomicU64>,
    /// Calls and tasks, for the monitor.
    counters: Arc<counters::ClientCounters>,
    state: Mutex<ClientState>,
    next_request: AtomicU64,
    shutdown: Shutdown,
    /// The runtime the client was connected on; actor creations run there, whatever thread
    /// starts them.
    runtime: tokio::runtime::Handle,
}

#[derive(Default)]
struct ClientState {
    /// Creations waiting for the master's answer.
    grants: HashMap<u64, oneshot::Sender<Result<JobGrant>>>,
    /// Live actors, by job id, so the master's death notices reach them.
    actors: HashMap<JobId, Weak<actor::ActorShared>>,
    status_waiters: Vec<oneshot::Sender<ClusterStatus>>,
    bundle: Arc<FileBundle>,
    /// Creations waiting in the master's queue, by request id (for the periodic notice).
    waiting: HashMap<u64, WaitingCreation>,
}

impl ClientInner {
    fn state(&self) -> std::sync::MutexGuard<'_, ClientState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Client {
    /// Connects to the master and registers.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        let client_id = ids::new_id("c");
        let hello = Message::RegisterClient(ClientHello {
            client_id: client_id.clone(),
            hostname: ids::hostname(),
            pid: std::process::id(),
            version: VERSION.to_string(),
            script: ids::program(),
        });
        let shutdown = Shutdown::new();
        let link_config = LinkConfig {
            address: config.master.clone(),
            connect_timeout: config.connect_timeout,
            hello,
            role: "client",
            auth: config.auth.clone(),
        };
        let (master, welcome, events) = link::connect(link_config, shutdown.clone()).await?;
        let inner = Arc::new(ClientInner {
            client_id,
            master,
            welcome,
            connect_timeout: config.connect_timeout,
            auth: config.auth.clone(),
            log_to_driver: config.log_to_driver,
            encoding: config.encoding,
            files_shipped: Arc::new(AtomicU64::new(0)),
            counters: Arc::default(),
            state: Mutex::new(ClientState::default()),
            next_request: AtomicU64::new(1),
            shutdown,
            runtime: tokio::runtime::Handle::current(),
        });
        tokio::spawn(listen(Arc::downgrade(&inner), events));
        tokio::spawn(notify_waits(Arc::downgrade(&inner)));
        tokio::spawn(counters::report(Arc::downgrade(&inner)));
        Ok(Client { inner })
    }

    /// The cluster key this client proves.
    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    pub fn master_address(&self) -> &str {
        self.inner.master.address()
    }

    pub fn master_version(&self) -> &str {
        &self.inner.welcome.master_version
    }

    pub fn master_python(&self) -> &str {
        &self.inner.welcome.python_version
    }

    /// Files written into each new job's working directory before its actor is built. They
    /// travel to each worker once; its jobs then take them from the worker's cache. Fails
    /// with [`Error::TooLarge`] if together they are above the cluster's message limit.
    pub fn set_shipped_files(&self, files: Vec<ShippedFile>) -> Result<()> {
        let size: usize = files.iter().map(|file| file.path.len() + file.data.len()).sum();
        let what = format_args!(
            "the {} files shipped to every job (the *.py files next to the script, and distributed_files)",
            files.len()
        );
        if let Some(why) = transport::check_size(size, self.payload_limit(), what) {
            return Err(Error::TooLarge(why));
        }
        let bundle = if files.is_empty() { FileBundle::default() } else { FileBundle::new(files) };
        self.inner.state().bundle = Arc::new(bundle);
        Ok(())
    }

    /// Bytes a request may carry: the smaller of this process's message limit and the
    /// cluster's (learnt when registering), less room for the message's header.
    pub fn payload_limit(&self) -> usize {
        let cluster = usize::try_from(self.inner.welcome.max_message_size).unwrap_or(usize::MAX);
        transport::payload_limit_of(transport::zmq::max_message_size().min(cluster))
    }

    /// Calls and tasks so far (what the master's monitor shows of this client).
    pub fn counters(&self) -> &counters::ClientCounters {
        &self.inner.counters
    }

    /// How many times the files were sent to a worker.
    pub fn files_shipped(&self) -> u64 {
        self.inner.files_shipped.load(Ordering::Relaxed)
    }

    /// Creates an actor without waiting: the master's grant, the connection to the job and
    /// the requests made meanwhile all follow in the background (see [`Actor::submit`]).
    /// The creation waits in the master's queue up to `spec.timeout`; if it fails, so does
    /// every request made on the actor. Callable from any thread.
    pub fn spawn_actor(&self, spec: ActorSpec) -> Actor {
        let setup = ActorSetup {
            bundle: self.inner.state().bundle.clone(),
            log_to_driver: self.inner.log_to_driver,
            encoding: self.inner.encoding,
            files_shipped: self.inner.files_shipped.clone(),
            payload_limit: self.payload_limit(),
            counters: self.inner.counters.clone(),
        };
        let creation = self.inner.shutdown.child_token();
        let actor = Actor::new(&spec, setup, creation);
        self.inner.runtime.spawn(establish(self.clone(), spec, actor.shared()));
        actor
    }

    /// Creates an actor and waits until it is connected to its job.
    pub async fn create_actor(&self, spec: ActorSpec) -> Result<Actor> {
        let actor = self.spawn_actor(spec);
        actor.ready().await?;
        Ok(actor)
    }

    /// Reserves a job and connects to it. Gives the job back if `cancel` fires first.
    async fn open_job(
        &self,
        spec: &ActorSpec,
        cancel: &CancellationToken,
    ) -> Result<(JobGrant, (Outbox, Events))> {
        let grant = self.request_job(spec, cancel).await?;
        let socket = tokio::select! {
            socket = self.connect_job(&grant) => socket,
            _ = cancel.cancelled() => Err(Error::Shutdown),
        };
        match socket {
            Ok(socket) => Ok((grant, socket)),
            Err(e) => {
                self.inner.master.send(Message::ReturnJob { job_id: grant.job_id });
                Err(e)
            }
        }
    }

    /// Connects to a granted job (the handshake proves the key both ways).
    async fn connect_job(&self, grant: &JobGrant) -> Result<(Outbox, Events)> {
        let label = format!("actor {}", grant.job_id);
        connection::connect(&grant.address, Service::Job, self.inner.connect_timeout, &self.inner.auth, label)
            .await
    }

    /// Asks the master for a job; waits in its queue up to `spec.timeout`, or until `cancel`.
    async fn request_job(&self, spec: &ActorSpec, cancel: &CancellationToken) -> Result<JobGrant> {
        let inner = &self.inner;
        if !inner.master.is_connected() {
            return Err(Error::MasterUnavailable(inner.master.address().to_string()));
        }
        let request_id = inner.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = oneshot::channel();
        inner.state().grants.insert(request_id, tx);
        if !inner.master.is_connected() {
            // Lost just now: the loss already failed the waiters, but not this one.
            inner.state().grants.remove(&request_id);
            return Err(Error::MasterUnavailable(inner.master.address().to_string()));
        }
        let request = JobRequest {
            request_id,
            n_cpu: spec.n_cpu,
            n_gpu: spec.n_gpu,
            class_name: spec.class_name.clone(),
            on_worker: spec.on_worker.clone(),
        };
        inner.master.send(Message::RequestJob(request));
        let _waiting = WaitingEntry::new(inner, request_id, spec);
        let deadline = tokio::time::Instant::now() + spec.timeout;
        let resource = if spec.n_gpu > 0 { "GPU" } else { "CPU" };
        let gave_up = tokio::select! {
            answer = &mut rx => {
                return match answer {
                    Ok(answer) => answer,
                    Err(_) => Err(Error::Shutdown),
                };
            }
            _ = tokio::time::sleep_until(deadline) => Error::NoResources {
                class_name: spec.class_name.clone(),
                resource,
                waited: spec.timeout,
            },
            _ = cancel.cancelled() => Error::Shutdown,
        };
        inner.master.send(Message::CancelRequest { request_id });
        inner.state().grants.remove(&request_id);
        Err(gave_up)
    }

    /// The cluster's status as the master sees it.
    pub async fn status(&self) -> Result<ClusterStatus> {
        let (tx, rx) = oneshot::channel();
        self.inner.state().status_waiters.push(tx);
        self.inner.master.send(Message::StatusRequest);
        let after = self.inner.connect_timeout;
        match tokio::time::timeout(after, rx).await {
            Ok(Ok(status)) => Ok(status),
            _ => Err(Error::Timeout { what: "the status request".into(), after }),
        }
    }

    /// Releases every actor and leaves the master. Idempotent.
    pub fn close(&self) {
        // Cancel first: an actor still connecting sees it and gives its job back, so no actor
        // can connect after the drain below.
        self.inner.shutdown.cancel();
        let actors: Vec<_> = self.inner.state().actors.drain().collect();
        for (_, actor) in actors {
            if let Some(actor) = actor.upgrade() {
                actor.release();
            }
        }
    }
}

/// A creation waiting in the master's queue.
struct WaitingCreation {
    since: Instant,
    timeout: Duration,
    gpu: bool,
    /// A lease for tasks, not an actor.
    lease: bool,
}

/// A creation's entry on the client's waiting board, removed however the wait ends.
struct WaitingEntry<'a> {
    inner: &'a ClientInner,
    request_id: u64,
}

impl<'a> WaitingEntry<'a> {
    fn new(inner: &'a ClientInner, request_id: u64, spec: &ActorSpec) -> WaitingEntry<'a> {
        let entry = WaitingCreation {
            since: Instant::now(),
            timeout: spec.timeout,
            gpu: spec.n_gpu > 0,
            lease: spec.class_name == tasks::LEASE_CLASS,
        };
        inner.state().waiting.insert(request_id, entry);
        WaitingEntry { inner, request_id }
    }
}

impl Drop for WaitingEntry<'_> {
    fn drop(&mut self) {
        self.inner.state().waiting.remove(&self.request_id);
    }
}

/// While creations wait for a slot, logs one line per period for all of them, saying who
/// holds the slots (PARL, and parl_rs before, logged one line per waiting creation).
async fn notify_waits(inner: Weak<ClientInner>) {
    // Checked every second, so that the first line comes about WAIT_NOTICE_PERIOD after the
    // oldest creation started waiting, and later lines at most once per period.
    let mut last_notice: Option<Instant> = None;
    loop {
        tokio::time::sleep(WAIT_CHECK_PERIOD).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.shutdown.is_cancelled() {
            return;
        }
        let Some(waiting) = inner.state().waiting_summary() else { continue };
        let quiet_for = last_notice.map_or(Duration::MAX, |at| at.elapsed());
        if waiting.oldest < WAIT_NOTICE_PERIOD || quiet_for < WAIT_NOTICE_PERIOD {
            continue;
        }
        last_notice = Some(Instant::now());
        let client = Client { inner };
        let slots = match client.inner.master.is_connected() {
            true => client.status().await.ok(),
            false => None,
        };
        let slots = slots.map(|s| wait_notice::Slots::from_status(&s, waiting.gpu, client.client_id()));
        tracing::warn!("{}", wait_notice::WaitNotice { waiting, slots }.line());
    }
}

impl ClientState {
    /// The waiting creations in counts, or None if none waits.
    fn waiting_summary(&self) -> Option<wait_notice::Waiting> {
        let oldest = self.waiting.values().min_by_key(|w| w.since)?;
        Some(wait_notice::Waiting {
            count: self.waiting.len(),
            leases: self.waiting.values().filter(|w| w.lease).count(),
            oldest: oldest.since.elapsed(),
            oldest_timeout: oldest.timeout,
            gpu: self.waiting.values().any(|w| w.gpu),
        })
    }
}

/// What a new actor needs.
#[derive(Debug, Clone)]
pub struct ActorSpec {
    pub n_cpu: u32,
    /// GPUs, all on one worker; the master refuses a request that can never be served.
    pub n_gpu: u32,
    pub timeout: Duration,
    pub class_name: String,
    /// `@remote_class(max_memory=...)` in bytes: what the actor may use beyond its job's
    /// baseline before its worker kills it. None: unlimited.
    pub max_memory: Option<u64>,
    /// Only a job of this worker will do (a task's `follow`); None: the master's scheme places it.
    pub on_worker: Option<String>,
    /// Sent to the job with the actor's `Init`.
    pub options: ActorOptions,
}

/// Gets `actor` a job and connects to it; the actor then sends what was queued meanwhile.
async fn establish(client: Client, spec: ActorSpec, actor: Arc<actor::ActorShared>) {
    let cancel = actor.creation().clone();
    match client.open_job(&spec, &cancel).await {
        Ok((grant, socket)) => {
            let job_id = grant.job_id.clone();
            client.inner.state().actors.insert(job_id.clone(), Arc::downgrade(&actor));
            if cancel.is_cancelled() || !actor.connected(grant, socket) {
                // Released, or its client closed, while connecting: the job has seen no
                // request, so it can serve another.
                client.inner.state().actors.remove(&job_id);
                client.inner.master.send(Message::ReturnJob { job_id });
                actor.end("its client was closed before it had a job".into());
            }
        }
        // A release already ended the actor; otherwise the client is closing.
        Err(_) if cancel.is_cancelled() => actor.end("its client was closed before it had a job".into()),
        Err(error) => actor.creation_failed(error),
    }
}

/// Routes the master's messages to the waiting creations and the live actors.
async fn listen(inner: Weak<ClientInner>, mut events: mpsc::UnboundedReceiver<LinkEvent>) {
    while let Some(event) = events.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        match event {
            LinkEvent::Message(envelope) => on_master_message(&inner, envelope.message),
            LinkEvent::Lost(reason) => {
                tracing::warn!("lost the master ({reason}); existing actors keep working");
                // Requests waiting in the lost master's queue will never be answered (a
                // restarted master does not know them): fail them now, clearly.
                let waiting: Vec<_> = inner.state().grants.drain().collect();
                for (_, waiter) in waiting {
                    let _ = waiter.send(Err(Error::MasterUnavailable(inner.master.address().to_string())));
                }
            }
            LinkEvent::Restored(_) => tracing::info!("reconnected to the master"),
        }
    }
}

/// The one dispatch of the client's master socket.
fn on_master_message(inner: &ClientInner, message: Message) {
    match message {
        Message::JobGranted(grant) => {
            let waiter = inner.state().grants.remove(&grant.request_id);
            match waiter {
                Some(waiter) => {
                    if let Err(unsent) = waiter.send(Ok(grant)) {
                        // The creation gave up a moment ago: hand the job back.
                        if let Ok(grant) = unsent.into_inner() {
                            inner.master.send(Message::ReturnJob { job_id: grant.job_id });
                        }
                    }
                }
                None => inner.master.send(Message::ReturnJob { job_id: grant.job_id }),
            }
        }
        Message::RequestFailed { request_id, reason } => {
            if let Some(waiter) = inner.state().grants.remove(&request_id) {
                let _ = waiter.send(Err(Error::Refused(reason)));
            }
        }
        Message::ActorDied(death) => {
            let actor = inner.state().actors.remove(&death.job_id).and_then(|a| a.upgrade());
            if let Some(actor) = actor {
                actor.end(death.reason);
            }
        }
        Message::Status(status) => {
            for waiter in inner.state().status_waiters.drain(..) {
                let _ = waiter.send(status.clone());
            }
        }
        Message::Error(e) => tracing::warn!("the master reported: {}", e.message),
        other => tracing::warn!("unexpected {} from the master", other.kind()),
    }
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Asks the master at `address` for its status without registering (for `xparl status`).
pub async fn query_status(address: &str, timeout: Duration, auth: &Auth) -> Result<ClusterStatus> {
    let unreachable = |reason: String| Error::Connect { address: address.to_string(), reason };
    let (outbox, mut inbound) =
        connection::connect(address, Service::Master, timeout, auth, "status".into()).await?;
    outbox.post(&Message::StatusRequest);
    let answer = tokio::time::timeout(timeout, inbound.recv()).await;
    match answer {
        Ok(Some(crate::connection::Inbound::Message { envelope, .. })) => match envelope.message {
            Message::Status(status) => Ok(status),
            other => Err(unreachable(format!("unexpected answer {}", other.kind()))),
        },
        Ok(Some(crate::connection::Inbound::Malformed { error, .. })) => {
            Err(unreachable(format!("not a parl_rs master ({error})")))
        }
        Ok(_) => Err(unreachable("the connection closed".into())),
        Err(_) => Err(unreachable(format!("no answer within {timeout:?}"))),
    }
}
