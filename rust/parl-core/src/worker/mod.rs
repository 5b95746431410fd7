//! The worker: keeps one warm job process per CPU slot or GPU, offers ready jobs to the
//! master, replaces a job the moment it ends, reports every exit (which the OS tells it at
//! once, as the parent) to the master, and kills jobs over their memory limit ([`memory`]).
//!
//! GPUs are allocated by the master; the worker only announces its GPU ids, and every job
//! starts with `CUDA_VISIBLE_DEVICES=""` until its actor's `Init` brings the granted ids.

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;
pub mod logs;
pub mod memory;
pub mod supervisor;

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::WorkerConfig;
use crate::connection::{self, Inbound, Outbox};
use crate::error::{Error, Result};
use crate::link::{self, LinkConfig, LinkEvent, LinkSender};
use crate::logging::Throttle;
use crate::protocol::stats::{truncated, MAX_ERROR_TEXT};
use crate::protocol::{
    Envelope, ExitCause, JobAssignment, JobExit, JobHello, JobId, JobInfo, JobStats, JobUsage, MemoryLimit,
    Message, WorkerHello, WorkerStats,
};
use crate::runtime::{Service, Shutdown};
use crate::transport::zmq::ZmqServer;
use crate::transport::PeerId;
use crate::{ids, VERSION};

use supervisor::{Exited, JobCommand, Running};

/// A running worker.
pub struct WorkerHandle {
    pub worker_id: String,
    /// "tcp://127.0.0.1:port" of the socket its jobs connect to.
    pub jobs_address: String,
    pub service: Service,
}

impl WorkerHandle {
    /// Stops the worker; its jobs are killed.
    pub async fn stop(self) {
        self.service.stop().await;
    }
}

/// Connects to the master, registers, and starts the warm pool.
pub async fn start(mut config: WorkerConfig, shutdown: Shutdown) -> Result<WorkerHandle> {
    let worker_id = ids::new_id("w");
    if !config.gpus.is_empty() && config.cpu_num > 0 {
        tracing::warn!("a GPU worker offers no CPU slots (as in PARL): ignoring cpu_num={}", config.cpu_num);
        config.cpu_num = 0;
    }
    let host = match &config.host {
        Some(host) => host.clone(),
        None => route_to(&config.master),
    };
    let advertise = match &config.advertise {
        Some(advertise) => advertise.clone(),
        None if host == "0.0.0.0" || host == "::" => route_to(&config.master),
        None => host.clone(),
    };
    let jobs_dir = config.state_dir.join("jobs");
    std::fs::create_dir_all(&jobs_dir)
        .map_err(|e| Error::io(format!("creating {}", jobs_dir.display()), e))?;
    let log_address = ids::with_host(&logs::serve(&host, jobs_dir.clone(), &config.auth).await?, &advertise);
    let (socket, endpoint) = ZmqServer::bind("127.0.0.1:0").await?;
    let (jobs_outbox, jobs_inbound) = connection::spawn_server(
        socket,
        crate::protocol::Service::Worker,
        "worker-jobs".into(),
        config.auth.clone(),
    );
    let hello = Message::RegisterWorker(WorkerHello {
        worker_id: worker_id.clone(),
        hostname: ids::hostname(),
        pid: std::process::id(),
        cpu_num: config.cpu_num,
        gpus: config.gpus.clone(),
        version: VERSION.to_string(),
        python_version: config.python_version.clone(),
        log_address,
        hwm: config.hwm,
    });
    let link_config = LinkConfig {
        address: config.master.clone(),
        connect_timeout: config.connect_timeout,
        hello,
        role: "worker",
        auth: config.auth.clone(),
    };
    let (master, _welcome, master_events) = link::connect(link_config, shutdown.clone()).await?;
    let bundle_dir = config.state_dir.join("bundles");
    let command = JobCommand {
        python: config.python.clone(),
        worker_address: endpoint.clone(),
        host,
        advertise,
        jobs_dir,
        bundle_dir,
        auth: config.auth.clone(),
    };
    tracing::info!(
        "worker {worker_id} registered with {} CPUs and GPUs [{}] at {}",
        config.cpu_num,
        config.gpus.join(","),
        config.master
    );
    let (exits_tx, exits) = mpsc::unbounded_channel();
    let (memory, reports) = memory::spawn(shutdown.clone());
    let state = WorkerLoop {
        worker_id: worker_id.clone(),
        pool_size: config.cpu_num as usize + config.gpus.len(),
        memory,
        command,
        master,
        jobs_outbox,
        jobs: HashMap::new(),
        exits_tx,
        next_job: 0,
        spawn_failures: 0,
        start_failures: Throttle::new(Duration::from_secs(60)),
        garbage_log: Throttle::new(Duration::from_secs(5)),
        retention: config.retention,
        spawn: supervisor::spawn,
        shutdown: shutdown.clone(),
    };
    let task = tokio::spawn(state.run(master_events, jobs_inbound, exits, reports, shutdown.clone()));
    Ok(WorkerHandle { worker_id, jobs_address: endpoint, service: Service::new(shutdown, task) })
}

/// How often old job logs are looked for.
const RETENTION_PERIOD: Duration = Duration::from_secs(60);

/// The local address that routes to `master` ("host:port"), which jobs bind and advertise.
/// Asking the OS for the route avoids PARL's guess through 8.8.8.8, which picked VPN or
/// proxy interfaces.
fn route_to(master: &str) -> String {
    use std::net::{ToSocketAddrs, UdpSocket};
    let local = master.to_socket_addrs().ok().and_then(|mut addrs| addrs.next()).and_then(|addr| {
        let socket = UdpSocket::bind(("0.0.0.0", 0)).ok()?;
        socket.connect(addr).ok()?;
        socket.local_addr().ok()
    });
    local.map(|a| a.ip().to_string()).unwrap_or_else(|| "127.0.0.1".to_string())
}

struct Job {
    process: Running,
    /// Set once the job announced itself (and was offered to the master).
    info: Option<JobInfo>,
    /// The job's connection to the worker's job socket, known from its hello.
    peer: Option<PeerId>,
    /// The worker killed it on purpose.
    killed: bool,
    /// Why the worker killed it, when its caller must hear why (e.g. over its memory limit).
    kill_reason: Option<String>,
    /// The client's actor it serves, as the master said when it granted the job.
    assignment: Option<JobAssignment>,
    /// The job said its actor started (and the master was told).
    started: bool,
    /// What the job last said of its actor's calls and errors.
    stats: JobStats,
}

/// Starts one job process ([`supervisor::spawn`]; the fuzz harness's stub starts none).
type Spawn = fn(&JobCommand, &str, mpsc::UnboundedSender<Exited>) -> Result<Running>;

struct WorkerLoop {
    worker_id: String,
    /// Warm jobs to keep: one per CPU slot and one per GPU.
    pool_size: usize,
    memory: mpsc::UnboundedSender<memory::Command>,
    command: JobCommand,
    master: LinkSender,
    jobs_outbox: Outbox,
    jobs: HashMap<JobId, Job>,
    exits_tx: mpsc::UnboundedSender<Exited>,
    next_job: u64,
    /// Consecutive jobs that died before announcing themselves (e.g. a broken interpreter).
    spawn_failures: u32,
    /// Jobs that could not be started (no descriptor, no memory, a full disk), logged at
    /// most every minute: the refill retries every 500 ms.
    start_failures: Throttle,
    garbage_log: Throttle,
    retention: logs::LogRetention,
    spawn: Spawn,
    /// Cancelled when the master stops the cluster: the worker's loop ends, killing its jobs.
    shutdown: Shutdown,
}

impl WorkerLoop {
    async fn run(
        mut self,
        mut master_events: mpsc::UnboundedReceiver<LinkEvent>,
        mut jobs_inbound: mpsc::UnboundedReceiver<Inbound>,
        mut exits: mpsc::UnboundedReceiver<Exited>,
        mut reports: mpsc::UnboundedReceiver<memory::Report>,
        shutdown: Shutdown,
    ) {
        self.fill_pool();
        let mut refill = tokio::time::interval(Duration::from_millis(500));
        let mut retention = tokio::time::interval(RETENTION_PERIOD);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(event) = master_events.recv() => self.on_master(event),
                Some(event) = jobs_inbound.recv() => self.on_job_socket(event),
                Some(exited) = exits.recv() => self.on_exit(exited),
                Some(report) = reports.recv() => match report {
                    memory::Report::OverLimit(violation) => self.kill_over_limit(violation),
                    memory::Report::Usage(usage) => self.report_usage(usage),
                },
                _ = refill.tick() => self.fill_pool(),
                _ = retention.tick() => self.enforce_retention(),
            }
        }
        for job in self.jobs.values_mut() {
            job.process.kill();
        }
        // Let the wait tasks reap the children before the runtime goes away.
        tokio::time::sleep(Duration::from_millis(50)).await;
        tracing::info!("worker {} stopped", self.worker_id);
    }

    /// Starts jobs until every slot has one. After repeated early deaths it waits for the
    /// refill tick instead of spinning (the log says why the jobs die).
    fn fill_pool(&mut self) {
        if self.spawn_failures >= 3 && self.jobs.len() < self.pool_size {
            // Slow retry: at most one job per refill tick while jobs keep dying at start.
            self.spawn_one();
            return;
        }
        while self.jobs.len() < self.pool_size {
            if !self.spawn_one() {
                break;
            }
        }
    }

    fn spawn_one(&mut self) -> bool {
        self.next_job += 1;
        let job_id = format!("{}-{}", self.worker_id, self.next_job);
        match (self.spawn)(&self.command, &job_id, self.exits_tx.clone()) {
            Ok(process) => {
                let job = Job {
                    process,
                    info: None,
                    peer: None,
                    killed: false,
                    kill_reason: None,
                    assignment: None,
                    started: false,
                    stats: JobStats::default(),
                };
                self.jobs.insert(job_id, job);
                true
            }
            Err(e) => {
                if let Some(suppressed) = self.start_failures.allow() {
                    tracing::error!(
                        "cannot start a job: {e}; the jobs running go on, and starting is retried \
                         ({suppressed} more failures not logged)"
                    );
                }
                false
            }
        }
    }

    /// Removes old logs and bundles in the background (it only reads and deletes files).
    fn enforce_retention(&self) {
        let live: std::collections::HashSet<String> = self.jobs.keys().cloned().collect();
        let dirs = [self.command.jobs_dir.clone(), self.command.bundle_dir.clone()];
        let retention = self.retention;
        tokio::task::spawn_blocking(move || {
            logs::enforce_retention(&[dirs[0].as_path(), dirs[1].as_path()], &live, retention)
        });
    }

    fn on_master(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Message(envelope) => self.dispatch_master(envelope),
            LinkEvent::Lost(reason) => tracing::warn!("master lost ({reason}); jobs keep running"),
            LinkEvent::Restored(_) => {
                // A restarted master knows nothing: tell it which jobs are free and which
                // already serve an actor, so that no slot is counted twice.
                for job in self.jobs.values() {
                    let Some(info) = job.info.clone() else { continue };
                    match job.assignment.clone() {
                        Some(assignment) => self.master.send(Message::JobBusy { info, assignment }),
                        None => self.master.send(Message::JobReady(info)),
                    }
                }
            }
        }
    }

    /// The one dispatch of messages from the master.
    fn dispatch_master(&mut self, envelope: Envelope) {
        match envelope.message {
            Message::KillJob { job_id, reason } => {
                if let Some(job) = self.jobs.get_mut(&job_id) {
                    tracing::info!("killing job {job_id}: {reason}");
                    job.killed = true;
                    job.process.kill();
                }
            }
            Message::JobAssigned(assignment) => {
                if let Some(job) = self.jobs.get_mut(&assignment.job_id) {
                    job.assignment = Some(assignment);
                }
            }
            Message::ClusterStopped { reason } => {
                tracing::warn!(
                    "{reason}: worker {} ends its {} jobs and exits",
                    self.worker_id,
                    self.jobs.len()
                );
                self.shutdown.cancel();
            }
            Message::Error(e) => tracing::warn!("the master reported: {}", e.message),
            other => tracing::warn!("unexpected {} from the master", other.kind()),
        }
    }

    /// Whether the master told this worker to exit.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn stopping(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// The one dispatch of the worker's job socket.
    fn on_job_socket(&mut self, event: Inbound) {
        match event {
            Inbound::Message { envelope, peer } => match envelope.message {
                Message::JobHello(hello) => self.job_hello(peer, hello),
                Message::MemoryLimit(limit) => self.memory_limit(&peer, limit),
                Message::ActorStarted { job_id } => self.actor_started(&peer, job_id),
                Message::JobStats(stats) => self.job_stats(&peer, stats),
                other => self.refuse(&peer, other.kind()),
            },
            Inbound::Malformed { peer, error } => self.refuse(&peer, &error.to_string()),
            Inbound::PeerGone { .. } => {}
            Inbound::Closed { reason } => tracing::error!("worker job socket failed: {reason}"),
        }
    }

    fn refuse(&mut self, peer: &PeerId, what: &str) {
        if let Some(n) = self.garbage_log.allow() {
            tracing::warn!("job socket: dropped {what} ({n} more suppressed)");
        }
        self.jobs_outbox.reply(peer, &Message::unexpected(what, "worker's job socket"));
    }

    fn job_hello(&mut self, peer: PeerId, hello: JobHello) {
        let Some(job) = self.jobs.get_mut(&hello.job_id) else {
            tracing::warn!("ignored a hello from unknown job {}", hello.job_id);
            return;
        };
        if job.info.is_some() {
            // A job says hello once. Another hello (from anyone: the actor's own code can
            // reach this socket) must not re-take its memory baseline, which would let the
            // actor grow past its limit, nor take over its connection.
            self.refuse(&peer, "a second JobHello for the same job");
            return;
        }
        self.spawn_failures = 0;
        // The pid the OS gave the worker, not the one the hello claims.
        let pid = job.process.pid;
        let _ = self.memory.send(memory::Command::Watch { job_id: hello.job_id.clone(), pid });
        let info = JobInfo { job_id: hello.job_id, address: hello.address, pid: hello.pid };
        job.info = Some(info.clone());
        job.peer = Some(peer);
        self.master.send(Message::JobReady(info));
    }

    /// A job's actor set `max_memory`: only the job itself may say so, over its own connection.
    fn memory_limit(&mut self, peer: &PeerId, limit: MemoryLimit) {
        let own = self.jobs.get(&limit.job_id).is_some_and(|job| job.peer.as_ref() == Some(peer));
        if !own {
            self.refuse(peer, "MemoryLimit for another job");
            return;
        }
        tracing::debug!("job {} may use {} bytes beyond its baseline", limit.job_id, limit.max_bytes);
        let _ = self.memory.send(memory::Command::Limit { job_id: limit.job_id, max_bytes: limit.max_bytes });
    }

    /// A job's actor started. Only the job itself may say so, over its own connection (the
    /// actor's code can reach this socket too, and must not free another job's grant), and
    /// the master hears it once per job: each one frees a grant in flight on this worker.
    fn actor_started(&mut self, peer: &PeerId, job_id: JobId) {
        if self.is_late(&job_id, "ActorStarted") {
            return;
        }
        let Some(job) = self.jobs.get_mut(&job_id).filter(|job| job.peer.as_ref() == Some(peer)) else {
            self.refuse(peer, "ActorStarted for another job");
            return;
        };
        if std::mem::replace(&mut job.started, true) {
            self.refuse(peer, "a second ActorStarted for the same job");
            return;
        }
        self.master.send(Message::ActorStarted { job_id });
    }

    /// A job's counters: only the job itself may report them, over its own connection.
    fn job_stats(&mut self, peer: &PeerId, mut stats: JobStats) {
        if self.is_late(&stats.job_id, "JobStats") {
            return;
        }
        let Some(job) = self.jobs.get_mut(&stats.job_id).filter(|job| job.peer.as_ref() == Some(peer)) else {
            self.refuse(peer, "JobStats for another job");
            return;
        };
        stats.last_error = stats.last_error.map(|error| truncated(&error, MAX_ERROR_TEXT));
        job.stats = stats;
    }

    /// True for a report of a job this worker no longer has: a job's last message may arrive
    /// after its exit was reaped. Nothing to do, and no refusal: it names no other live job.
    fn is_late(&self, job_id: &str, what: &str) -> bool {
        let late = !self.jobs.contains_key(job_id);
        if late {
            tracing::debug!("{what} of job {job_id}, which has ended: dropped");
        }
        late
    }

    /// Passes the machine's and the jobs' usage on to the master, with each job's counters.
    fn report_usage(&mut self, usage: memory::Usage) {
        let jobs = self
            .jobs
            .values()
            .filter_map(|job| {
                let info = job.info.as_ref()?;
                Some(JobUsage {
                    job_id: info.job_id.clone(),
                    memory_bytes: usage.jobs.get(&info.job_id).copied(),
                    calls: job.stats.calls,
                    failures: job.stats.failures,
                    last_error: job.stats.last_error.clone(),
                })
            })
            .collect();
        let stats = WorkerStats {
            memory_total: usage.memory_total,
            memory_used: usage.memory_used,
            load1: usage.load1,
            jobs,
        };
        self.master.send(Message::WorkerStats(stats));
    }

    /// Kills a job over its memory limit, and what it started; its exit tells the caller why.
    fn kill_over_limit(&mut self, violation: memory::Violation) {
        let Some(job) = self.jobs.get_mut(&violation.job_id) else { return };
        let reason = violation.describe();
        tracing::warn!("killing job {}: it {reason}", violation.job_id);
        job.killed = true;
        job.kill_reason = Some(reason);
        job.process.kill();
        for pid in violation.descendants {
            // SAFETY: kill(2) has no memory effects; these pids were the job's descendants
            // a moment ago and are killed together with it.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }

    fn on_exit(&mut self, exited: Exited) {
        let Some(job) = self.jobs.remove(&exited.job_id) else { return };
        if job.info.is_none() && !job.killed {
            self.spawn_failures += 1;
            let log = supervisor::job_dir(&self.command.jobs_dir, &exited.job_id).join("output.log");
            tracing::error!(
                "job {} {} before it was ready; see {}",
                exited.job_id,
                exited.status,
                log.display()
            );
        }
        let _ = self.memory.send(memory::Command::Forget { job_id: exited.job_id.clone() });
        let cause = exit_cause(&job, &exited.status);
        let (status, expected) = match (job.kill_reason, &job.stats.last_error) {
            // Killed for the actor's own doing: its caller must hear the reason.
            (Some(reason), _) => (format!("{reason}; it {}", exited.status), false),
            (None, Some(error)) if cause == ExitCause::Exception => {
                (format!("{} after its code raised {error}", exited.status), false)
            }
            (None, _) => (exited.status, job.killed),
        };
        let (calls, failures) = (job.stats.calls, job.stats.failures);
        let exit = JobExit { job_id: exited.job_id, status, expected, cause, calls, failures };
        self.master.send(Message::JobExited(exit));
        // While jobs keep dying at start, only the refill tick starts new ones.
        if self.spawn_failures < 3 {
            self.fill_pool();
        }
    }
}

/// Why `job` ended, given its exit `status` ("was killed by signal 9 (SIGKILL)", ...). A job
/// exits cleanly (status 0) when its client releases it or leaves, so a clean exit that no
/// error caused counts as a release.
fn exit_cause(job: &Job, status: &str) -> ExitCause {
    if job.kill_reason.is_some() {
        ExitCause::MemoryLimit
    } else if job.stats.ending_on_error {
        ExitCause::Exception
    } else if job.killed || status == supervisor::CLEAN_EXIT {
        ExitCause::Released
    } else if status.starts_with(supervisor::KILLED_BY_SIGNAL) {
        ExitCause::Signal
    } else {
        ExitCause::Exited
    }
}

impl std::fmt::Debug for WorkerLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WorkerLoop({}, {} jobs)", self.worker_id, self.jobs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::fuzz::Worker;
    use crate::fuzz_support::{block_on, peer};
    use crate::protocol::{encode, ExitCause, JobHello, JobStats, Message};

    fn started(job_id: &str) -> Vec<bytes::Bytes> {
        encode(&Message::ActorStarted { job_id: job_id.into() }, Vec::new())
    }

    fn hello(job_id: &str) -> Vec<bytes::Bytes> {
        let hello = JobHello { job_id: job_id.into(), address: "tcp://127.0.0.1:9".into(), pid: 7 };
        encode(&Message::JobHello(hello), Vec::new())
    }

    fn ending_on_error(job_id: &str) -> Vec<bytes::Bytes> {
        let stats = JobStats {
            job_id: job_id.into(),
            calls: 3,
            failures: 1,
            last_error: Some("builtins.ValueError: bad seed".into()),
            ending_on_error: true,
        };
        encode(&Message::JobStats(stats), Vec::new())
    }

    /// Each exit tells the master its cause: the actor's own error (said by the job itself,
    /// never by another), a clean exit (a release), a signal, a crash, the memory limit.
    #[test]
    fn a_jobs_exit_carries_its_cause() {
        block_on(async {
            let mut worker = Worker::new(5, 0);
            let ids = worker.job_ids();
            for (n, id) in ids.iter().enumerate() {
                worker.job_socket(peer(n as u8), hello(id)).await;
            }
            worker.job_socket(peer(0), ending_on_error(&ids[0])).await;
            worker.job_socket(peer(0), ending_on_error(&ids[1])).await; // not job 0's to say
            worker.check();
            worker.job_died(&ids[0], "exited with status 0");
            worker.job_died(&ids[1], "exited with status 0");
            worker.job_died(&ids[2], "was killed by signal 9 (SIGKILL)");
            worker.job_died(&ids[3], "exited with status 1");
            worker.over_limit(&ids[4]);
            worker.reap().await;
            worker.check();
            let causes: Vec<_> = ids.iter().map(|id| worker.exit_cause(id)).collect();
            let expected = [
                ExitCause::Exception,
                ExitCause::Released,
                ExitCause::Signal,
                ExitCause::Exited,
                ExitCause::MemoryLimit,
            ];
            assert_eq!(causes, expected.map(Some));
        });
    }

    /// Found by the worker_dispatch fuzz target: a second hello for a job (from any connection)
    /// took its memory baseline again, so an actor could grow past its limit.
    #[test]
    fn a_job_says_hello_once() {
        block_on(async {
            let mut worker = Worker::new(1, 0);
            let job = worker.job_ids()[0].clone();
            worker.job_socket(peer(0), hello(&job)).await;
            worker.check();
            worker.job_socket(peer(1), hello(&job)).await;
            worker.job_socket(peer(0), hello(&job)).await;
            worker.check();
        });
    }

    /// Each ActorStarted frees a grant in flight at the master: only the connection that said
    /// hello for the job may send it (not another job, nor the actor's code on a connection
    /// of its own), and the master hears it once.
    #[test]
    fn only_the_job_itself_says_its_actor_started_and_the_master_hears_it_once() {
        block_on(async {
            let mut worker = Worker::new(2, 0);
            let (a, b) = (worker.job_ids()[0].clone(), worker.job_ids()[1].clone());
            worker.job_socket(peer(0), started(&a)).await;
            worker.check();
            assert_eq!(worker.actors_started(), 0, "before its hello, nobody speaks for the job");
            worker.job_socket(peer(0), hello(&a)).await;
            worker.job_socket(peer(1), hello(&b)).await;
            worker.job_socket(peer(1), started(&a)).await;
            worker.job_socket(peer(2), started(&a)).await;
            worker.job_socket(peer(0), started("w-fuzz-unknown")).await;
            worker.check();
            assert_eq!(worker.actors_started(), 0, "a job spoke for another");
            worker.job_socket(peer(0), started(&a)).await;
            worker.job_socket(peer(0), started(&a)).await;
            worker.check(); // panics on a second ActorStarted for a job
            assert_eq!(worker.actors_started(), 1);
            worker.job_socket(peer(1), started(&b)).await;
            worker.check();
            assert_eq!(worker.actors_started(), 2);
        });
    }
}
