//! The master's state and decisions as a plain value: an [`Event`] goes in with the time, the
//! [`Effect`]s come out. No sockets, no clock and no randomness inside (the random schemes
//! draw from a generator seeded by [`CoreConfig::seed`]), so the same events at the same
//! times give the same effects: the fuzz target, the unit tests and the scheduling
//! simulation drive this type directly, and the socket loop ([`super::start`]) is a thin
//! driver around it.
//!
//! The registry (who is here), the queue (who waits) and the scheduler (who serves) are
//! separate modules so each can change alone; this type wires them together.

#[cfg(test)]
mod tests;
mod view;

use std::time::{Duration, Instant};

use crate::config::HeartbeatConfig;
use crate::logging::Throttle;
use crate::protocol::{
    ActorDeath, ClusterStatus, DecodeError, ErrorCode, ErrorReply, JobAssignment, JobExit, JobInfo,
    JobRequest, Message, Sessions, Welcome,
};
use crate::transport::PeerId;
use crate::VERSION;

use super::admission;
use super::monitor::history::WorkerPoint;
use super::monitor::{About, Monitor};
use super::queue::{RequestQueue, Ticket};
use super::registry::{Announced, Peer, Registry};
use super::scheduler::{Placement, Scheduler, Scheme};

/// What the master core is told.
#[derive(Debug)]
pub enum Event {
    /// A message from a peer (decoded, and authenticated by its session).
    Message { peer: PeerId, message: Message },
    /// The peer sent frames that are not a message of this protocol version.
    Malformed { peer: PeerId, error: DecodeError },
    /// The peer's connection closed.
    PeerGone { peer: PeerId },
    /// The liveness tick: peers silent for longer than the heartbeat timeout are dropped.
    Tick,
    /// The cluster is stopped on purpose (`xparl stop`): every worker is told to exit.
    StopCluster,
}

/// What the master core asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send `message` to the peer `to` (ending a job is a `KillJob` to its worker).
    Send { to: PeerId, message: Message },
}

/// Everything the core needs to know about its master, fixed when it starts.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// "host:port" of the master, for the messages that name it.
    pub address: String,
    /// "host:port" of its HTTP endpoint, for the status report.
    pub http_address: Option<String>,
    pub heartbeat: HeartbeatConfig,
    pub gpu_cluster: bool,
    /// "major.minor" of the cluster's Python ("" if unknown).
    pub python_version: String,
    pub scheme: Scheme,
    /// The seed of the random schemes' generator: the master's one source of randomness.
    pub seed: u64,
    /// What the sessions protect, for the status report.
    pub sessions: Sessions,
    /// The largest message the transport accepts, told to every peer that registers.
    pub max_message_size: u64,
    /// The high-water mark of grants in flight of workers that set none (0: no limit).
    pub hwm: u32,
    /// Unix seconds when the master started: the monitor's times are counted from it (the
    /// core reads no clock of its own).
    pub started_unix: f64,
}

impl CoreConfig {
    /// A CPU cluster's master at `address` with the default heartbeats, scheme and limits, no
    /// high-water mark, seed 0, and no session protection reported; change fields as needed.
    pub fn new(address: impl Into<String>) -> CoreConfig {
        CoreConfig {
            address: address.into(),
            http_address: None,
            heartbeat: HeartbeatConfig::default(),
            gpu_cluster: false,
            python_version: String::new(),
            scheme: Scheme::default(),
            seed: 0,
            sessions: Sessions::Insecure,
            max_message_size: crate::transport::zmq::DEFAULT_MAX_MESSAGE_SIZE as u64,
            hwm: 0,
            started_unix: 0.0,
        }
    }
}

/// The master's state: see the module docs.
pub struct MasterCore {
    config: CoreConfig,
    registry: Registry,
    queue: RequestQueue,
    scheduler: Box<dyn Scheduler>,
    garbage_log: Throttle,
    /// What the web monitor shows: events, counters, history.
    monitor: Monitor,
    /// The time of the event being handled.
    now: Instant,
    /// The effects of the event being handled.
    effects: Vec<Effect>,
}

impl MasterCore {
    /// A master with no peers yet; `now` is the time it starts.
    pub fn new(config: CoreConfig, now: Instant) -> MasterCore {
        let scheduler = config.scheme.scheduler(config.seed);
        MasterCore {
            registry: Registry::new(config.hwm),
            queue: RequestQueue::default(),
            scheduler,
            garbage_log: Throttle::new(Duration::from_secs(5)),
            monitor: Monitor::new(now, config.started_unix),
            now,
            effects: Vec::new(),
            config,
        }
    }

    /// Handles `event` at time `now` and returns what must be sent. The queue is served after
    /// every event: any event may have made a waiting request servable (a job ready or
    /// returned, GPUs freed, a request or a peer gone), and serving here, once, means no
    /// handler can forget to.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Effect> {
        self.now = now;
        match event {
            Event::Message { peer, message } => {
                self.registry.touch(&peer, now);
                self.dispatch(peer, message);
            }
            Event::Malformed { peer, error } => self.malformed(peer, error),
            // A closed connection is noticed by heartbeats too; acting on it at once is faster.
            Event::PeerGone { peer } => self.peer_gone(&peer),
            Event::Tick => {
                self.expire_silent_peers();
                self.sample_history();
            }
            Event::StopCluster => self.stop_workers(),
        }
        self.serve_queue();
        std::mem::take(&mut self.effects)
    }

    /// What `xparl status` and the HTTP endpoint show.
    pub fn status(&self) -> ClusterStatus {
        ClusterStatus {
            master: self.config.address.clone(),
            version: VERSION.to_string(),
            gpu_cluster: self.config.gpu_cluster,
            workers: self.registry.worker_statuses(),
            clients: self.registry.client_statuses(),
            pending_requests: self.queue.len() as u32,
            http_address: self.config.http_address.clone(),
            scheme: self.scheduler.name().to_string(),
            sessions: self.config.sessions,
        }
    }

    /// "host:port" of the log server that has the log of `job_id` (kept after the job ends).
    pub fn log_location(&self, job_id: &str) -> Option<&str> {
        self.registry.log_location(job_id)
    }

    fn send(&mut self, to: &PeerId, message: Message) {
        self.effects.push(Effect::Send { to: to.clone(), message });
    }

    fn send_to_client(&mut self, client_id: &str, message: Message) {
        if let Some(client) = self.registry.client(client_id) {
            let to = client.peer.clone();
            self.send(&to, message);
        }
    }

    fn malformed(&mut self, peer: PeerId, error: DecodeError) {
        if let Some(suppressed) = self.garbage_log.allow_at(self.now) {
            tracing::warn!("dropped a malformed message: {error} ({suppressed} more suppressed)");
        }
        let code = match error {
            DecodeError::Version { .. } => ErrorCode::UnsupportedVersion,
            _ => ErrorCode::Malformed,
        };
        self.send(&peer, Message::Error(ErrorReply { code, message: error.to_string() }));
    }

    /// The one dispatch of the master's messages.
    fn dispatch(&mut self, peer: PeerId, message: Message) {
        let from = self.registry.peer(&peer).cloned();
        match (message, from) {
            (Message::Heartbeat, Some(_)) => self.send(&peer, Message::Heartbeat),
            (Message::StatusRequest, _) => {
                let status = Message::Status(self.status());
                self.send(&peer, status);
            }
            (Message::RegisterWorker(hello), from) => {
                let id = Peer::Worker(hello.worker_id.clone());
                let refusal = rebinding(from, &id)
                    .or_else(|| admission::refuse_version(&hello.version, "worker"))
                    .or_else(|| admission::refuse_python(&self.config.python_version, &hello.python_version))
                    .or_else(|| {
                        admission::refuse_worker(&hello, self.config.gpu_cluster, &self.config.address)
                    });
                if let Some(message) = refusal {
                    self.refuse(&peer, &format!("worker {} on {}", hello.worker_id, hello.hostname), message);
                    return;
                }
                tracing::info!(
                    "worker {} on {} joined with {} CPUs and GPUs [{}]",
                    hello.worker_id,
                    hello.hostname,
                    hello.cpu_num,
                    hello.gpus.join(",")
                );
                let gpus = hello.gpus.len();
                self.monitor.worker_joined(self.now, &hello.worker_id, &hello.hostname, hello.cpu_num, gpus);
                self.registry.add_worker(peer.clone(), hello, self.now);
                self.send(&peer, Message::Registered(self.welcome()));
                // A request that waited for a worker may never be served (too few GPUs).
                self.refuse_unservable_requests();
            }
            (Message::RegisterClient(hello), from) => {
                let id = Peer::Client(hello.client_id.clone());
                let refusal =
                    rebinding(from, &id).or_else(|| admission::refuse_version(&hello.version, "client"));
                if let Some(message) = refusal {
                    self.refuse(&peer, &format!("client {}", hello.client_id), message);
                    return;
                }
                tracing::info!(
                    "client {} (pid {} on {}) connected",
                    hello.client_id,
                    hello.pid,
                    hello.hostname
                );
                self.monitor.client_joined(
                    self.now,
                    &hello.client_id,
                    &hello.hostname,
                    hello.pid,
                    &hello.script,
                );
                self.registry.add_client(peer.clone(), hello, self.now);
                self.send(&peer, Message::Registered(self.welcome()));
            }
            (Message::JobReady(info), Some(Peer::Worker(worker))) => self.job_ready(&worker, info),
            (Message::JobBusy { info, assignment }, Some(Peer::Worker(worker))) => {
                let job_id = info.job_id.clone();
                let client = assignment.client_id.clone();
                let announced = self.registry.add_busy_job(&worker, info, assignment);
                if announced == Announced::Counted && !self.monitor.actors.contains_key(&job_id) {
                    self.record_busy_job(&worker, &job_id, &client);
                }
                self.end_if_lost(announced, &worker, &job_id);
            }
            (Message::JobExited(exit), Some(Peer::Worker(worker))) => self.job_exited(&worker, exit),
            (Message::ActorStarted { job_id }, Some(Peer::Worker(worker))) => {
                if self.registry.job(&job_id).is_some_and(|job| job.worker == worker) {
                    self.monitor.actor_started(&job_id);
                }
                self.registry.actor_started(&worker, &job_id)
            }
            (Message::WorkerStats(stats), Some(Peer::Worker(worker))) => {
                self.monitor.worker_stats(&worker, stats)
            }
            (Message::ClientStats(stats), Some(Peer::Client(client))) => {
                self.monitor.client_stats(self.now, &client, stats)
            }
            (Message::RequestJob(request), Some(Peer::Client(client))) => {
                self.request_job(&peer, client, request)
            }
            (Message::CancelRequest { request_id }, Some(Peer::Client(client))) => {
                self.queue.cancel(&client, request_id);
            }
            (Message::ReturnJob { job_id }, Some(Peer::Client(client))) => self.return_job(&client, &job_id),
            (Message::Disconnect, Some(Peer::Worker(worker))) => self.drop_worker(&worker, DEPARTED),
            (Message::Disconnect, Some(Peer::Client(client))) => self.drop_client(&client, DEPARTED),
            (message, None) if needs_registration(&message) => {
                let reply = ErrorReply {
                    code: ErrorCode::NotRegistered,
                    message: format!("{} from an unregistered peer; register first", message.kind()),
                };
                self.send(&peer, Message::Error(reply));
            }
            (message, _) => self.send(&peer, Message::unexpected(message.kind(), "master")),
        }
    }

    /// Tells every worker that the cluster is stopped on purpose, so that it ends its jobs
    /// and exits instead of waiting for this master to come back.
    fn stop_workers(&mut self) {
        let workers = self.registry.worker_peers();
        tracing::info!("stopping the cluster: telling its {} workers to exit", workers.len());
        let reason = format!("the master at {} stopped the cluster (xparl stop)", self.config.address);
        for peer in &workers {
            self.send(peer, Message::ClusterStopped { reason: reason.clone() });
        }
    }

    fn welcome(&self) -> Welcome {
        Welcome {
            master_version: VERSION.to_string(),
            python_version: self.config.python_version.clone(),
            heartbeat_interval_ms: self.config.heartbeat.interval.as_millis() as u64,
            heartbeat_timeout_ms: self.config.heartbeat.timeout.as_millis() as u64,
            max_message_size: self.config.max_message_size,
        }
    }

    /// A job that served an actor before the master restarted, for the monitor.
    fn record_busy_job(&mut self, worker_id: &str, job_id: &str, client: &str) {
        let (Some(job), Some(worker)) = (self.registry.job(job_id), self.registry.worker(worker_id)) else {
            return;
        };
        let grant = crate::protocol::JobGrant {
            request_id: 0,
            job_id: job_id.to_string(),
            address: job.info.address.clone(),
            pid: job.info.pid,
            worker_id: worker_id.to_string(),
            hostname: worker.hello.hostname.clone(),
            gpus: job.gpus.clone(),
            log_address: worker.hello.log_address.clone(),
        };
        self.monitor.announced_busy(self.now, &grant, client);
    }

    fn record_refusal(&mut self, client: &str, reason: &str) {
        let about = About { client_id: Some(client), ..About::default() };
        self.monitor.record(
            self.now,
            "request_refused",
            about,
            format!("a request of client {client}: {reason}"),
        );
    }

    /// Turns a peer away with `message`, which is logged here too: the peer may not show it.
    fn refuse(&mut self, peer: &PeerId, who: &str, message: String) {
        tracing::warn!("refused {who}: {message}");
        let text = format!("refused {who}: {message}");
        self.monitor.record(self.now, "registration_refused", About::default(), text);
        self.send(peer, Message::Error(ErrorReply { code: ErrorCode::Rejected, message }));
    }

    fn job_ready(&mut self, worker: &str, info: JobInfo) {
        let job_id = info.job_id.clone();
        let announced = self.registry.add_ready_job(worker, info);
        self.end_if_lost(announced, worker, &job_id);
    }

    /// A worker that was dropped while cut off came back with a job whose actor was declared
    /// dead meanwhile: the job must end, and is never counted (its worker starts a warm job in
    /// its place).
    fn end_if_lost(&mut self, announced: Announced, worker: &str, job_id: &str) {
        if announced == Announced::Lost {
            tracing::info!("worker {worker} came back with job {job_id}, whose actor was declared dead");
            self.kill_job(worker, job_id, "its actor was declared dead while its worker was unreachable");
        }
    }

    fn job_exited(&mut self, worker: &str, exit: JobExit) {
        // Only a job's own worker knows that it ended.
        if self.registry.job(&exit.job_id).is_none_or(|job| job.worker != worker) {
            return;
        }
        let Some(job) = self.registry.remove_job(&exit.job_id) else { return };
        let reason = format!("its job process (pid {}, worker {}) {}", job.info.pid, job.worker, exit.status);
        self.monitor.last_counts(&exit.job_id, exit.calls, exit.failures);
        self.monitor.job_ended(self.now, &exit.job_id, exit.cause.as_str(), reason.clone());
        if let Some(owner) = job.owner {
            let death = ActorDeath { job_id: exit.job_id, reason };
            self.send_to_client(&owner, Message::ActorDied(death));
        }
    }

    fn request_job(&mut self, peer: &PeerId, client: String, request: JobRequest) {
        if let Some(reason) = self.refusal(&request) {
            self.record_refusal(&client, &reason);
            self.send(peer, Message::RequestFailed { request_id: request.request_id, reason });
            return;
        }
        self.queue.push(client, request, self.now);
    }

    /// Why this cluster can never serve `request` (see [`admission`]).
    fn refusal(&self, request: &JobRequest) -> Option<String> {
        let largest = self.registry.largest_worker_gpus();
        admission::refuse_request(request, self.config.gpu_cluster, largest)
            .or_else(|| pinned_to_a_missing_worker(&self.registry, request))
    }

    /// After a worker joined or left, fails the waiting requests that no worker can ever serve.
    fn refuse_unservable_requests(&mut self) {
        let (gpu_cluster, largest) = (self.config.gpu_cluster, self.registry.largest_worker_gpus());
        let registry = &self.registry;
        let refused = self.queue.take_where(|r| {
            admission::refuse_request(r, gpu_cluster, largest)
                .or_else(|| pinned_to_a_missing_worker(registry, r))
        });
        for (pending, reason) in refused {
            self.record_refusal(&pending.client, &reason);
            let failed = Message::RequestFailed { request_id: pending.request.request_id, reason };
            self.send_to_client(&pending.client, failed);
        }
    }

    /// Tells the scheduler about every worker whose load changed since it last heard.
    fn sync_scheduler(&mut self) {
        for worker_id in self.registry.take_changed() {
            match self.registry.load(&worker_id) {
                Some(load) => self.scheduler.update(&load),
                None => self.scheduler.remove(&worker_id),
            }
        }
    }

    /// Grants jobs to waiting requests while jobs that fit them are free: the oldest request
    /// that can be served first. Requests of one kind of demand go in arrival order; a kind
    /// that cannot be served now (two GPUs, say) does not hold up the kinds behind it.
    fn serve_queue(&mut self) {
        while let Some((placement, ticket)) = self.next_servable() {
            let pending = self.queue.take(ticket).expect("a head of the queue");
            let request_id = pending.request.request_id;
            let Some(grant) = self.registry.grant(&placement, &pending.client, request_id) else {
                tracing::warn!("dropped a request of departed client {}", pending.client);
                continue;
            };
            self.scheduler.granted(&placement.worker);
            self.monitor.granted(self.now, &grant, &pending.client, &pending.request.class_name);
            tracing::debug!("granted job {} to client {}", grant.job_id, pending.client);
            let assignment = JobAssignment {
                job_id: grant.job_id.clone(),
                client_id: pending.client.clone(),
                gpus: grant.gpus.clone(),
            };
            if let Some(worker) = self.registry.worker(&grant.worker_id) {
                let to = worker.peer.clone();
                self.send(&to, Message::JobAssigned(assignment));
            }
            self.send_to_client(&pending.client, Message::JobGranted(grant));
        }
    }

    /// The oldest head of a line of the queue that a worker can serve now, and where.
    fn next_servable(&mut self) -> Option<(Placement, Ticket)> {
        self.sync_scheduler();
        let (registry, scheduler) = (&self.registry, &mut self.scheduler);
        let heads = self.queue.heads();
        heads.into_iter().find_map(|(ticket, pending)| {
            let request = &pending.request;
            let placement = match &request.on_worker {
                // Pinned to one worker: no scheme has a choice to make.
                Some(worker) => {
                    registry.load(worker).filter(|l| l.can_serve(request)).map(|l| Placement::on(&l, request))
                }
                None => scheduler.pick(request),
            };
            placement.map(|p| (p, ticket))
        })
    }

    fn return_job(&mut self, client: &str, job_id: &str) {
        let job = self.registry.job(job_id).filter(|j| j.owner.as_deref() == Some(client));
        if let Some(worker) = job.map(|j| j.worker.clone()) {
            self.kill_job(&worker, job_id, "its client returned it");
        }
    }

    fn kill_job(&mut self, worker_id: &str, job_id: &str, reason: &str) {
        if let Some(worker) = self.registry.worker(worker_id) {
            let kill = Message::KillJob { job_id: job_id.to_string(), reason: reason.to_string() };
            let to = worker.peer.clone();
            self.send(&to, kill);
        }
    }

    fn peer_gone(&mut self, peer: &PeerId) {
        match self.registry.peer(peer).cloned() {
            Some(Peer::Worker(id)) => self.drop_worker(&id, "its connection closed"),
            Some(Peer::Client(id)) => self.drop_client(&id, "its connection closed"),
            None => {}
        }
    }

    fn expire_silent_peers(&mut self) {
        let timeout = self.config.heartbeat.timeout;
        let (workers, clients) = self.registry.expired(self.now, timeout);
        let why = format!("no heartbeat for {timeout:?}");
        for id in workers {
            self.drop_worker_for(&id, &why, true);
        }
        for id in clients {
            self.drop_client_for(&id, &why, true);
        }
    }

    /// Samples the values of the monitor's history (counts are added as they happen).
    fn sample_history(&mut self) {
        let statuses = self.registry.worker_statuses();
        let cpu_used = statuses.iter().map(|w| w.cpu_used).sum();
        let actors = self.monitor.actors.values().filter(|a| !a.is_lease()).count() as u32;
        let workers: Vec<(String, WorkerPoint)> = statuses
            .into_iter()
            .map(|status| {
                let usage = self.monitor.workers.get(&status.worker_id).map(|w| w.usage).unwrap_or_default();
                let point = WorkerPoint {
                    cpu_used: status.cpu_used,
                    memory_used: usage.memory_used,
                    load1: usage.load1,
                };
                (status.worker_id, point)
            })
            .collect();
        self.monitor.history.set(self.now, (actors, cpu_used, self.queue.len() as u32), workers);
    }

    fn drop_worker(&mut self, worker_id: &str, why: &str) {
        self.drop_worker_for(worker_id, why, false);
    }

    /// Drops a worker; `silent`: because its heartbeats stopped.
    fn drop_worker_for(&mut self, worker_id: &str, why: &str, silent: bool) {
        let Some(worker) = self.registry.worker(worker_id) else { return };
        let hostname = worker.hello.hostname.clone();
        if why == DEPARTED {
            tracing::info!("worker {worker_id} on {hostname} left");
        } else {
            tracing::warn!("worker {worker_id} on {hostname} lost: {why}");
        }
        let told = (why != DEPARTED).then_some(why);
        self.monitor.worker_gone(self.now, worker_id, &hostname, told, silent);
        for orphan in self.registry.remove_worker(worker_id) {
            let reason = format!("its worker {worker_id} on {hostname} was lost ({why})");
            self.monitor.job_ended(self.now, &orphan.job_id, "worker_lost", reason.clone());
            let death = ActorDeath { job_id: orphan.job_id, reason };
            self.send_to_client(&orphan.owner, Message::ActorDied(death));
        }
        let reason = format!("its worker {worker_id} on {hostname} was lost ({why})");
        self.monitor.end_jobs_of(self.now, worker_id, &reason);
        if !self.queue.is_empty() {
            self.refuse_unservable_requests();
        }
    }

    fn drop_client(&mut self, client_id: &str, why: &str) {
        self.drop_client_for(client_id, why, false);
    }

    /// Drops a client; `silent`: because its heartbeats stopped.
    fn drop_client_for(&mut self, client_id: &str, why: &str, silent: bool) {
        if self.registry.client(client_id).is_none() {
            return;
        }
        tracing::info!("client {client_id} left: {why}");
        self.monitor.client_gone(self.now, client_id, why, why == DEPARTED, silent);
        self.queue.remove_client(client_id);
        for (job_id, worker) in self.registry.remove_client(client_id) {
            self.kill_job(&worker, &job_id, "its client left");
        }
    }
}

/// What must hold after any sequence of events; the fuzz target checks it after every event.
#[cfg(any(test, feature = "fuzzing"))]
impl MasterCore {
    /// Panics unless the registry is consistent (see [`Registry::check_invariants`]), every
    /// waiting request's client is registered, and no line of the queue waits while a worker
    /// could serve its oldest request now (it would wait for an event that may never come).
    pub fn check_invariants(&self) {
        self.registry.check_invariants();
        for pending in self.queue.iter() {
            assert!(
                self.registry.client(&pending.client).is_some(),
                "request {} of client {} waits, but the client is gone",
                pending.request.request_id,
                pending.client
            );
        }
        // Asked of the registry's loads, not the scheduler: a random scheme's pick would draw.
        let loads = self.registry.loads();
        for (_, head) in self.queue.heads() {
            let pinned = |load: &&super::registry::WorkerLoad| {
                head.request.on_worker.as_ref().is_none_or(|worker| *worker == load.worker_id)
            };
            if let Some(load) = loads.iter().filter(pinned).find(|load| load.can_serve(&head.request)) {
                panic!(
                    "request {} of client {} waits although worker {} can serve it now",
                    head.request.request_id, head.client, load.worker_id
                );
            }
        }
        assert_eq!(self.status().pending_requests as usize, self.queue.len());
    }
}

/// Why a connection registered as `bound` may not register as `wanted`, or None. A connection
/// that registered as one worker or client and then as another would leave the first unbound
/// until its heartbeats expired, then take its jobs down. (A reconnecting peer comes on a new
/// connection; the same registration again is accepted.)
fn rebinding(bound: Option<Peer>, wanted: &Peer) -> Option<String> {
    let bound = bound.filter(|bound| bound != wanted)?;
    let name = |p: &Peer| match p {
        Peer::Worker(id) => format!("worker {id}"),
        Peer::Client(id) => format!("client {id}"),
    };
    Some(format!(
        "this connection is registered as {} already, and cannot register as {}",
        name(&bound),
        name(wanted)
    ))
}

/// Why `request` can never be served if the one worker it must run on is not registered.
fn pinned_to_a_missing_worker(registry: &Registry, request: &JobRequest) -> Option<String> {
    let worker = request.on_worker.as_ref()?;
    registry.worker(worker).is_none().then(|| {
        format!(
            "`{}` must run on worker {worker}, which is not in the cluster (it left or was lost)",
            request.class_name
        )
    })
}

/// Why a peer that said goodbye is dropped (an expected departure, logged quietly).
const DEPARTED: &str = "it disconnected";

/// Messages that only a registered worker or client may send.
fn needs_registration(message: &Message) -> bool {
    matches!(
        message,
        Message::Heartbeat
            | Message::JobReady(_)
            | Message::JobBusy { .. }
            | Message::JobExited(_)
            | Message::ActorStarted { .. }
            | Message::WorkerStats(_)
            | Message::ClientStats(_)
            | Message::RequestJob(_)
            | Message::CancelRequest { .. }
            | Message::ReturnJob { .. }
            | Message::Disconnect
    )
}
