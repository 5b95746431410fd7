//! The master: registers workers and clients, queues requests for jobs, hands out warm jobs,
//! and notices dead peers by their heartbeats.
//!
//! One task owns all state (no locks): it selects over the socket's events, a liveness tick
//! and shutdown, and every message goes through the single [`MasterLoop::dispatch`] match.
//! The registry (who is here), the queue (who waits) and the scheduler (who serves) are
//! separate modules so each can change alone.

pub mod admission;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;
pub mod http;
pub mod queue;
pub mod registry;
pub mod scheduler;

use std::time::Instant;

use tokio::sync::mpsc;

use crate::config::MasterConfig;
use crate::connection::{self, Inbound, Outbox};
use crate::error::Result;
use crate::logging::Throttle;
use crate::protocol::{
    ActorDeath, ClusterStatus, Envelope, ErrorCode, ErrorReply, JobAssignment, JobExit, JobInfo, JobRequest,
    Message, Sessions, Welcome, WorkerId,
};
use crate::runtime::{Service, Shutdown};
use crate::transport::zmq::ZmqServer;
use crate::transport::{host_port, PeerId};
use crate::VERSION;

use queue::{RequestQueue, Ticket};
use registry::{Announced, Peer, Registry};
use scheduler::Scheduler;

/// A running master.
pub struct MasterHandle {
    /// "host:port" the master is bound to.
    pub address: String,
    /// "host:port" of its HTTP endpoint (status, logs), if it serves one.
    pub http_address: Option<String>,
    pub service: Service,
    /// Cancelled to stop the whole cluster: see [`MasterHandle::stop_cluster`].
    stop_cluster: Shutdown,
}

impl MasterHandle {
    /// Stops the master alone and waits for its loop to end. Its workers keep reconnecting,
    /// as after a crash, so a master restarted on the same port gets them back.
    pub async fn stop(self) {
        self.service.stop().await;
    }

    /// Stops the cluster on purpose (`xparl stop`): tells every connected worker to end its
    /// jobs and exit, then stops the master.
    pub async fn stop_cluster(self) {
        self.stop_cluster.cancel();
        self.service.join().await;
    }

    /// The token that [`MasterHandle::stop_cluster`] cancels, for a driver that must react to
    /// a signal while someone else holds the handle.
    pub fn cluster_stopper(&self) -> Shutdown {
        self.stop_cluster.clone()
    }
}

/// How long a stopping master gives its goodbyes to leave before it closes its socket.
const GOODBYE_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// Binds the master's port and starts its loop. Fails if the port cannot be bound.
pub async fn start(config: MasterConfig, shutdown: Shutdown) -> Result<MasterHandle> {
    let (socket, endpoint) = ZmqServer::bind(&config.bind).await?;
    let address = host_port(&endpoint).to_string();
    let (outbox, inbound) = connection::spawn_server(
        socket,
        crate::protocol::Service::Master,
        "master".into(),
        config.auth.clone(),
    );
    tracing::info!("master listening on {address}");
    let (queries_tx, queries) = mpsc::unbounded_channel();
    let http_address = match &config.http_bind {
        Some(bind) => Some(http::serve(bind, queries_tx, &config.auth).await?),
        None => None,
    };
    let mut state = MasterLoop::new(config, address.clone(), outbox);
    state.http_address = http_address.clone();
    let stop_cluster = Shutdown::new();
    let task = tokio::spawn(state.run(inbound, queries, shutdown.clone(), stop_cluster.clone()));
    let service = Service::new(shutdown, task);
    Ok(MasterHandle { address, http_address, service, stop_cluster })
}

struct MasterLoop {
    config: MasterConfig,
    address: String,
    outbox: Outbox,
    registry: Registry,
    queue: RequestQueue,
    scheduler: Box<dyn Scheduler>,
    garbage_log: Throttle,
    /// "host:port" of the HTTP endpoint, for the status report.
    http_address: Option<String>,
}

impl MasterLoop {
    /// A master with no peers yet, sending on `outbox`.
    fn new(config: MasterConfig, address: String, outbox: Outbox) -> MasterLoop {
        // The random schemes' seed is the master's one source of randomness.
        let scheduler = config.scheme.scheduler(rand::random());
        MasterLoop {
            config,
            address,
            outbox,
            registry: Registry::default(),
            queue: RequestQueue::default(),
            scheduler,
            garbage_log: Throttle::new(std::time::Duration::from_secs(5)),
            http_address: None,
        }
    }

    async fn run(
        mut self,
        mut inbound: mpsc::UnboundedReceiver<Inbound>,
        mut queries: mpsc::UnboundedReceiver<http::HttpQuery>,
        shutdown: Shutdown,
        stop_cluster: Shutdown,
    ) {
        let mut tick = tokio::time::interval(self.config.heartbeat.interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = stop_cluster.cancelled() => {
                    self.stop_workers();
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(GOODBYE_GRACE) => {}
                    }
                    break;
                }
                event = inbound.recv() => match event {
                    Some(event) => self.on_event(event),
                    None => break,
                },
                Some(query) = queries.recv() => self.answer(query),
                _ = tick.tick() => self.expire_silent_peers(Instant::now()),
            }
        }
        tracing::info!("master at {} stopped", self.address);
    }

    /// Handles one socket event, then serves the queue: any event may have made the oldest
    /// request servable (a job ready or returned, GPUs freed, a request or a peer gone), and
    /// serving here, once, means no handler can forget to.
    fn on_event(&mut self, event: Inbound) {
        self.handle_event(event);
        self.serve_queue();
    }

    fn handle_event(&mut self, event: Inbound) {
        match event {
            Inbound::Message { peer, envelope } => {
                self.registry.touch(&peer, Instant::now());
                self.dispatch(peer, envelope);
            }
            Inbound::Malformed { peer, error } => {
                if let Some(suppressed) = self.garbage_log.allow() {
                    tracing::warn!("dropped a malformed message: {error} ({suppressed} more suppressed)");
                }
                let code = match error {
                    crate::protocol::DecodeError::Version { .. } => ErrorCode::UnsupportedVersion,
                    _ => ErrorCode::Malformed,
                };
                self.outbox.reply(&peer, &Message::Error(ErrorReply { code, message: error.to_string() }));
            }
            // A closed connection is noticed by heartbeats too; acting on it at once is faster.
            Inbound::PeerGone { peer } => self.peer_gone(&peer),
            Inbound::Closed { reason } => tracing::error!("master socket failed: {reason}"),
        }
    }

    /// The one dispatch of the master's socket.
    fn dispatch(&mut self, peer: PeerId, envelope: Envelope) {
        let from = self.registry.peer(&peer).cloned();
        match (envelope.message, from) {
            (Message::Heartbeat, Some(_)) => {
                self.outbox.reply(&peer, &Message::Heartbeat);
            }
            (Message::StatusRequest, _) => {
                let status = Message::Status(self.status());
                self.outbox.reply(&peer, &status);
            }
            (Message::RegisterWorker(hello), from) => {
                if self.refuse_rebinding(&peer, from, Peer::Worker(hello.worker_id.clone()))
                    || self.refuse_version(&peer, &hello.version, "worker")
                    || self.refuse_python(&peer, &hello.python_version)
                {
                    return;
                }
                if let Some(message) =
                    admission::refuse_worker(&hello, self.config.gpu_cluster, &self.address)
                {
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
                self.registry.add_worker(peer.clone(), hello, Instant::now());
                self.outbox.reply(&peer, &Message::Registered(self.welcome()));
                // A request that waited for a worker may never be served (too few GPUs).
                self.refuse_unservable_requests();
            }
            (Message::RegisterClient(hello), from) => {
                if self.refuse_rebinding(&peer, from, Peer::Client(hello.client_id.clone()))
                    || self.refuse_version(&peer, &hello.version, "client")
                {
                    return;
                }
                tracing::info!(
                    "client {} (pid {} on {}) connected",
                    hello.client_id,
                    hello.pid,
                    hello.hostname
                );
                self.registry.add_client(peer.clone(), hello, Instant::now());
                self.outbox.reply(&peer, &Message::Registered(self.welcome()));
            }
            (Message::JobReady(info), Some(Peer::Worker(worker))) => self.job_ready(&worker, info),
            (Message::JobBusy { info, assignment }, Some(Peer::Worker(worker))) => {
                let job_id = info.job_id.clone();
                let announced = self.registry.add_busy_job(&worker, info, assignment);
                self.end_if_lost(announced, &worker, &job_id);
            }
            (Message::JobExited(exit), Some(Peer::Worker(worker))) => self.job_exited(&worker, exit),
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
                self.outbox.reply(&peer, &Message::Error(reply));
            }
            (message, _) => {
                self.outbox.reply(&peer, &Message::unexpected(message.kind(), "master"));
            }
        }
    }

    /// Tells every worker that the cluster is stopped on purpose, so that it ends its jobs
    /// and exits instead of waiting for this master to come back.
    fn stop_workers(&mut self) {
        let workers = self.registry.worker_peers();
        tracing::info!("stopping the cluster: telling its {} workers to exit", workers.len());
        let stopped = Message::ClusterStopped {
            reason: format!("the master at {} stopped the cluster (xparl stop)", self.address),
        };
        for peer in &workers {
            self.outbox.reply(peer, &stopped);
        }
    }

    /// Answers a question of the HTTP endpoint.
    fn answer(&self, query: http::HttpQuery) {
        match query {
            http::HttpQuery::Status(reply) => {
                let _ = reply.send(self.status());
            }
            http::HttpQuery::LogLocation { job_id, reply } => {
                let _ = reply.send(self.registry.log_location(&job_id).map(str::to_string));
            }
        }
    }

    fn welcome(&self) -> Welcome {
        Welcome {
            master_version: VERSION.to_string(),
            python_version: self.config.python_version.clone(),
            heartbeat_interval_ms: self.config.heartbeat.interval.as_millis() as u64,
            heartbeat_timeout_ms: self.config.heartbeat.timeout.as_millis() as u64,
            max_message_size: crate::transport::zmq::max_message_size() as u64,
        }
    }

    /// Refuses a connection that registered as one worker or client and now registers as
    /// another: the first would linger unbound until its heartbeats expired, then take its
    /// jobs down. (A reconnecting peer comes on a new connection; the same registration again
    /// is accepted.)
    fn refuse_rebinding(&self, peer: &PeerId, bound: Option<Peer>, wanted: Peer) -> bool {
        match bound {
            Some(bound) if bound != wanted => {
                let name = |p: &Peer| match p {
                    Peer::Worker(id) => format!("worker {id}"),
                    Peer::Client(id) => format!("client {id}"),
                };
                let message = format!(
                    "this connection is registered as {} already, and cannot register as {}",
                    name(&bound),
                    name(&wanted)
                );
                self.refuse(peer, "a registration", message);
                true
            }
            _ => false,
        }
    }

    /// Refuses a peer of another parl_rs version (the pickled payloads would not match).
    fn refuse_version(&self, peer: &PeerId, version: &str, role: &str) -> bool {
        if version == VERSION {
            return false;
        }
        let message =
            format!("parl_rs version mismatch: the master runs {VERSION}, this {role} runs {version}");
        self.refuse(peer, &format!("a {role}"), message);
        true
    }

    /// Refuses a worker whose jobs run another Python: pickles do not cross Python versions.
    fn refuse_python(&self, peer: &PeerId, python: &str) -> bool {
        let ours = &self.config.python_version;
        if ours.is_empty() || python.is_empty() || ours == python {
            return false;
        }
        let message = format!("Python version mismatch: the master's cluster runs Python {ours}, this worker's jobs run Python {python}");
        self.refuse(peer, "a worker", message);
        true
    }

    /// Turns a peer away with `message`, which is logged here too: the peer may not show it.
    fn refuse(&self, peer: &PeerId, who: &str, message: String) {
        tracing::warn!("refused {who}: {message}");
        self.outbox.reply(peer, &Message::Error(ErrorReply { code: ErrorCode::Rejected, message }));
    }

    fn job_ready(&mut self, worker: &str, info: JobInfo) {
        let job_id = info.job_id.clone();
        let announced = self.registry.add_ready_job(worker, info);
        self.end_if_lost(announced, worker, &job_id);
    }

    /// A worker that was dropped while cut off came back with a job whose actor was declared
    /// dead meanwhile: the job must end, and is never counted (its worker starts a warm job in
    /// its place).
    fn end_if_lost(&self, announced: Announced, worker: &str, job_id: &str) {
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
        if let Some(owner) = job.owner {
            let reason =
                format!("its job process (pid {}, worker {}) {}", job.info.pid, job.worker, exit.status);
            let death = ActorDeath { job_id: exit.job_id, reason };
            self.send_to_client(&owner, &Message::ActorDied(death));
        }
    }

    fn request_job(&mut self, peer: &PeerId, client: String, request: JobRequest) {
        if let Some(reason) = self.refusal(&request) {
            let failed = Message::RequestFailed { request_id: request.request_id, reason };
            self.outbox.reply(peer, &failed);
            return;
        }
        self.queue.push(client, request, Instant::now());
    }

    /// Why this cluster can never serve `request` (see [`admission`]).
    fn refusal(&self, request: &JobRequest) -> Option<String> {
        let largest = self.registry.largest_worker_gpus();
        admission::refuse_request(request, self.config.gpu_cluster, largest)
    }

    /// After a worker left, fails the waiting requests that no remaining worker can ever serve.
    fn refuse_unservable_requests(&mut self) {
        let (gpu_cluster, largest) = (self.config.gpu_cluster, self.registry.largest_worker_gpus());
        let refused = self.queue.take_where(|r| admission::refuse_request(r, gpu_cluster, largest));
        for (pending, reason) in refused {
            let failed = Message::RequestFailed { request_id: pending.request.request_id, reason };
            self.send_to_client(&pending.client, &failed);
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

    /// Grants jobs to waiting requests while jobs that fit them are free (after every event
    /// and tick: see [`MasterLoop::on_event`]): the oldest request that can be served first.
    /// Requests of one kind of demand go in arrival order; a kind that cannot be served now
    /// (two GPUs, say) does not hold up the kinds behind it.
    fn serve_queue(&mut self) {
        while let Some((worker, ticket)) = self.next_servable() {
            let pending = self.queue.take(ticket).expect("a head of the queue");
            let request_id = pending.request.request_id;
            match self.registry.grant(&worker, &pending.client, request_id, pending.request.n_gpu) {
                Some(grant) => {
                    self.scheduler.granted(&worker);
                    tracing::debug!("granted job {} to client {}", grant.job_id, pending.client);
                    let assignment = JobAssignment {
                        job_id: grant.job_id.clone(),
                        client_id: pending.client.clone(),
                        gpus: grant.gpus.clone(),
                    };
                    if let Some(worker) = self.registry.worker(&grant.worker_id) {
                        self.outbox.reply(&worker.peer, &Message::JobAssigned(assignment));
                    }
                    self.send_to_client(&pending.client, &Message::JobGranted(grant));
                }
                None => tracing::warn!("dropped a request of departed client {}", pending.client),
            }
        }
    }

    /// The oldest head of a line of the queue that a worker can serve now, and that worker.
    fn next_servable(&mut self) -> Option<(WorkerId, Ticket)> {
        self.sync_scheduler();
        let heads = self.queue.heads();
        heads
            .into_iter()
            .find_map(|(ticket, pending)| self.scheduler.pick(&pending.request).map(|w| (w, ticket)))
    }

    fn return_job(&mut self, client: &str, job_id: &str) {
        let owned = self.registry.job(job_id).is_some_and(|j| j.owner.as_deref() == Some(client));
        if owned {
            let worker = self.registry.job(job_id).map(|j| j.worker.clone()).unwrap_or_default();
            self.kill_job(&worker, job_id, "its client returned it");
        }
    }

    fn kill_job(&self, worker_id: &str, job_id: &str, reason: &str) {
        if let Some(worker) = self.registry.worker(worker_id) {
            let kill = Message::KillJob { job_id: job_id.to_string(), reason: reason.to_string() };
            self.outbox.reply(&worker.peer, &kill);
        }
    }

    fn send_to_client(&self, client_id: &str, message: &Message) {
        if let Some(client) = self.registry.client(client_id) {
            self.outbox.reply(&client.peer, message);
        }
    }

    fn peer_gone(&mut self, peer: &PeerId) {
        match self.registry.peer(peer).cloned() {
            Some(Peer::Worker(id)) => self.drop_worker(&id, "its connection closed"),
            Some(Peer::Client(id)) => self.drop_client(&id, "its connection closed"),
            None => {}
        }
    }

    fn expire_silent_peers(&mut self, now: Instant) {
        let timeout = self.config.heartbeat.timeout;
        let (workers, clients) = self.registry.expired(now, timeout);
        let why = format!("no heartbeat for {timeout:?}");
        for id in workers {
            self.drop_worker(&id, &why);
        }
        for id in clients {
            self.drop_client(&id, &why);
        }
        self.serve_queue();
    }

    fn drop_worker(&mut self, worker_id: &str, why: &str) {
        let Some(worker) = self.registry.worker(worker_id) else { return };
        let hostname = worker.hello.hostname.clone();
        if why == DEPARTED {
            tracing::info!("worker {worker_id} on {hostname} left");
        } else {
            tracing::warn!("worker {worker_id} on {hostname} lost: {why}");
        }
        for orphan in self.registry.remove_worker(worker_id) {
            let reason = format!("its worker {worker_id} on {hostname} was lost ({why})");
            let death = ActorDeath { job_id: orphan.job_id, reason };
            self.send_to_client(&orphan.owner, &Message::ActorDied(death));
        }
        if !self.queue.is_empty() {
            self.refuse_unservable_requests();
        }
    }

    fn drop_client(&mut self, client_id: &str, why: &str) {
        if self.registry.client(client_id).is_none() {
            return;
        }
        tracing::info!("client {client_id} left: {why}");
        self.queue.remove_client(client_id);
        for (job_id, worker) in self.registry.remove_client(client_id) {
            self.kill_job(&worker, &job_id, "its client left");
        }
    }

    fn status(&self) -> ClusterStatus {
        ClusterStatus {
            master: self.address.clone(),
            version: VERSION.to_string(),
            gpu_cluster: self.config.gpu_cluster,
            workers: self.registry.worker_statuses(),
            clients: self.registry.client_statuses(),
            pending_requests: self.queue.len() as u32,
            http_address: self.http_address.clone(),
            scheme: self.scheduler.name().to_string(),
            sessions: match self.config.auth.key() {
                None => Sessions::Insecure,
                Some(key) if key.encrypts() => Sessions::Encrypted,
                Some(_) => Sessions::Authenticated,
            },
        }
    }
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
            | Message::RequestJob(_)
            | Message::CancelRequest { .. }
            | Message::ReturnJob { .. }
            | Message::Disconnect
    )
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::fuzz::Master;
    use crate::fuzz_support::{block_on, peer};
    use crate::protocol::{encode, ClientHello, JobAssignment, JobInfo, JobRequest, Message, WorkerHello};
    use crate::VERSION;

    fn client(id: &str) -> Vec<Bytes> {
        let hello =
            ClientHello { client_id: id.into(), hostname: "h".into(), pid: 2, version: VERSION.into() };
        encode(&Message::RegisterClient(hello), Vec::new())
    }

    fn worker(id: &str, cpus: u32) -> Vec<Bytes> {
        gpu_worker(id, cpus, 0)
    }

    fn gpu_worker(id: &str, cpus: u32, gpus: u32) -> Vec<Bytes> {
        let hello = WorkerHello {
            worker_id: id.into(),
            hostname: "h".into(),
            pid: 1,
            cpu_num: cpus,
            gpus: (0..gpus).map(|g| g.to_string()).collect(),
            version: VERSION.into(),
            python_version: String::new(),
            log_address: "h:1".into(),
        };
        encode(&Message::RegisterWorker(hello), Vec::new())
    }

    /// Found by the master_dispatch fuzz target: a connection registered as one client and then
    /// as another left the first bound to nothing (its jobs ended when its heartbeats expired).
    #[test]
    fn a_connection_registers_as_one_peer_only() {
        block_on(async {
            let mut master = Master::new(false, "");
            master.frames(peer(0), client("c0")).await;
            master.frames(peer(0), client("c0")).await;
            master.frames(peer(0), client("c3")).await;
            master.frames(peer(0), worker("w0", 1)).await;
            master.check();
            let status = master.status();
            let clients: Vec<_> = status.clients.iter().map(|c| c.client_id.as_str()).collect();
            assert_eq!((clients, status.workers.len()), (vec!["c0"], 0));
        });
    }

    fn send(message: Message) -> Vec<Bytes> {
        encode(&message, Vec::new())
    }

    fn ready(job_id: &str) -> Vec<Bytes> {
        send(Message::JobReady(JobInfo { job_id: job_id.into(), address: "tcp://h:1".into(), pid: 3 }))
    }

    fn request(request_id: u64, n_gpu: u32) -> Vec<Bytes> {
        send(Message::RequestJob(JobRequest { request_id, n_cpu: 0, n_gpu, class_name: "A".into() }))
    }

    /// Found by the master_dispatch fuzz target: the queue was served only when a job became
    /// ready or a request came, so a request that waited behind another (FIFO) kept waiting
    /// after the one before it was cancelled, its client left, its worker left or GPUs came
    /// back, until some unrelated job became ready, or its client gave up. Requests of
    /// another kind of demand no longer wait behind one that cannot be served.
    #[test]
    fn the_queue_is_served_as_soon_as_its_oldest_request_can_be() {
        block_on(async {
            let (w, c, d) = (peer(0), peer(1), peer(2));
            let mut master = Master::new(true, "");
            master.frames(w.clone(), gpu_worker("w", 0, 2)).await;
            for job in ["j1", "j2", "j3"] {
                master.frames(w.clone(), ready(job)).await;
            }
            master.frames(c.clone(), client("c")).await;
            master.frames(d.clone(), client("d")).await;
            master.frames(c.clone(), request(1, 1)).await;
            master.frames(c.clone(), request(2, 2)).await;
            master.frames(d.clone(), request(1, 1)).await;
            master.check();
            assert_eq!(master.status().pending_requests, 1, "d's 1-GPU request passes c's 2-GPU one");
            master.frames(c.clone(), send(Message::CancelRequest { request_id: 2 })).await;
            master.check();
            assert_eq!(master.status().pending_requests, 0);

            // The same when the request before it leaves with its client, or when GPUs come back.
            master.frames(c.clone(), request(3, 1)).await;
            master.frames(d.clone(), request(2, 1)).await;
            assert_eq!(master.status().pending_requests, 2, "no GPU free");
            master.peer_gone(c.clone()).await;
            master.check();
            master
                .frames(
                    w.clone(),
                    send(Message::JobExited(crate::protocol::JobExit {
                        job_id: "j1".into(),
                        status: "exited with status 0".into(),
                        expected: true,
                    })),
                )
                .await;
            master.check();
            assert_eq!(master.status().pending_requests, 0);
        });
    }

    /// Found by the master_dispatch fuzz target: a request queued before any worker joined
    /// waited out its timeout when the workers that joined had too few GPUs (a request is
    /// refused at once when it comes after them), and a worker registering again with more
    /// GPUs did not serve the queue.
    #[test]
    fn a_worker_joining_refuses_or_serves_waiting_requests() {
        block_on(async {
            let (w, c) = (peer(0), peer(1));
            let mut master = Master::new(true, "");
            master.frames(c.clone(), client("c")).await;
            master.frames(c.clone(), request(1, 2)).await;
            assert_eq!(master.status().pending_requests, 1, "waits for a worker");
            master.frames(w.clone(), gpu_worker("w", 0, 1)).await;
            master.check();
            assert_eq!(master.status().pending_requests, 0, "refused: no worker has 2 GPUs");

            master.frames(w.clone(), ready("j1")).await;
            master.frames(w.clone(), ready("j2")).await;
            master.frames(c.clone(), request(2, 1)).await;
            master.frames(c.clone(), request(3, 1)).await;
            assert_eq!(master.status().pending_requests, 1, "the only GPU is taken");
            master.frames(peer(2), gpu_worker("w", 0, 2)).await;
            master.check();
            assert_eq!(master.status().pending_requests, 0, "served by the GPU w came back with");
        });
    }

    /// A worker's second report about a busy job (after a master restart) replaces the first,
    /// and the GPUs it no longer holds serve the queue at once.
    #[test]
    fn a_busy_report_that_frees_gpus_serves_the_queue() {
        block_on(async {
            let (w, c) = (peer(0), peer(1));
            let busy = |gpus: &[&str]| {
                let info = JobInfo { job_id: "j1".into(), address: "tcp://h:1".into(), pid: 3 };
                let gpus = gpus.iter().map(|g| g.to_string()).collect();
                let assignment = JobAssignment { job_id: "j1".into(), client_id: "c".into(), gpus };
                send(Message::JobBusy { info, assignment })
            };
            let mut master = Master::new(true, "");
            master.frames(w.clone(), gpu_worker("w", 0, 1)).await;
            master.frames(w.clone(), busy(&["0"])).await;
            master.frames(w.clone(), ready("j2")).await;
            master.frames(c.clone(), client("c")).await;
            master.frames(c.clone(), request(1, 1)).await;
            assert_eq!(master.status().pending_requests, 1, "j1 holds the only GPU");
            master.frames(w.clone(), busy(&[])).await;
            master.check();
            assert_eq!(master.status().pending_requests, 0);
        });
    }
}
