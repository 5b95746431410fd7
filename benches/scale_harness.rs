//! The master-scale harness: a real master in a child process, and thousands of simulated
//! workers and clients in this process that speak the real protocol over real sockets.
//!
//! Shared by `benches/master_scale.rs` (2,000 workers, 20,000 actors) and
//! `tests-rust/scale.rs` (a small run that asserts behaviour, never timing).
//!
//! - The master runs as `xparl start` runs it ([`master_child_main`]): a current-thread
//!   runtime, default heartbeats (1 s / 5 s), an HTTP endpoint, a cluster key. It is a child
//!   process so that its CPU time, resident memory and thread count can be read from
//!   `/proc/<pid>` alone.
//! - A simulated worker registers over the real link (`parl_core::link`, which heartbeats),
//!   announces warm jobs with `JobReady` (fake jobs: a made-up address, no process, no job
//!   socket), answers `KillJob` with `JobExited` and a fresh `JobReady` (as a worker replaces
//!   a job), records `JobAssigned` and answers that the actor started, and re-announces its
//!   jobs if its link is ever restored.
//! - A simulated client registers over the real link and creates actors the way the client
//!   does at the master (`RequestJob` until `JobGranted`): that round trip is the "actor
//!   creation" latency measured here. It returns actors with `ReturnJob`.
//! - A probe (a registered client on a raw connection) times a heartbeat round trip every
//!   100 ms and a `StatusRequest` every `status_every`, in every phase.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use parl_core::auth::KEY_ENV;
use parl_core::config::{HeartbeatConfig, MasterConfig};
use parl_core::connection::{self, Events, Inbound, Outbox};
use parl_core::link::{self, LinkConfig, LinkEvent, LinkSender};
use parl_core::protocol::{
    ClientHello, ClusterStatus, ExitCause, JobAssignment, JobExit, JobGrant, JobInfo, JobRequest, JobUsage,
    Message, WorkerHello, WorkerStats as UsageReport,
};
use parl_core::runtime::Shutdown;
use parl_core::worker::memory;
use parl_core::{Auth, ClusterKey, VERSION};
use serde::Serialize;
use tokio::sync::{oneshot, watch};

/// Set in the child process: the path of the master's ready file.
pub const MASTER_ENV: &str = "PARL_SCALE_MASTER_READY";

/// How big a run is.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleConfig {
    pub workers: usize,
    /// CPU slots (warm fake jobs) each worker offers.
    pub slots_per_worker: u32,
    /// Actors held at once (at most `workers * slots_per_worker`).
    pub actors: usize,
    pub clients: usize,
    /// Creations each client keeps in flight while the cluster fills.
    pub window: usize,
    /// Creations made one at a time on the idle cluster, before it fills.
    pub idle_samples: usize,
    /// Seconds the full cluster is held with nothing but heartbeats (and the probe).
    pub hold_s: f64,
    /// Seconds of churn: returns and re-creations at `churn_rate` per second.
    pub churn_s: f64,
    pub churn_rate: f64,
    /// Workers connecting at once.
    pub connect_concurrency: usize,
    /// Seconds between the probe's status requests.
    pub status_every_s: f64,
    /// Where the master's log goes.
    #[serde(skip)]
    pub master_log: PathBuf,
}

impl ScaleConfig {
    pub fn slots(&self) -> usize {
        self.workers * self.slots_per_worker as usize
    }
}

// ---------------------------------------------------------------------------------------------
// The master, in a child process.

/// The body of the master's process: a master as `xparl start` runs it (current-thread
/// runtime, default heartbeats, an HTTP endpoint, the cluster key from `XPARL_CLUSTER_KEY`),
/// until SIGTERM. Writes its ready file (address, pid) to `ready`.
pub fn master_child_main(ready: &Path) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of this process: it dies with the harness.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    parl_core::logging::init("info");
    // To see how a master behaves at a lower limit on open files (soft and hard) than it needs.
    if let Some(limit) = std::env::var("PARL_SCALE_MASTER_NOFILE").ok().and_then(|v| v.parse().ok()) {
        let mut rlimit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit read and write the struct we pass.
        unsafe {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut rlimit);
            (rlimit.rlim_cur, rlimit.rlim_max) = (limit, limit);
            libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit);
        }
        eprintln!("master: limit on open files set to {limit}");
    }
    let config = MasterConfig {
        bind: "127.0.0.1:0".into(),
        heartbeat: HeartbeatConfig::default(),
        gpu_cluster: false,
        python_version: String::new(),
        http_bind: Some("127.0.0.1:0".into()),
        auth: Auth::from_key(std::env::var(KEY_ENV).ok().as_deref()),
        scheme: scheme_from_env(),
        hwm: 0,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(parl_core::node::run_master(config, Some(ready))).expect("the master runs");
}

/// The scheme named in `PARL_SCALE_SCHEME` (the default without it).
pub fn scheme_from_env() -> parl_core::master::scheduler::Scheme {
    match std::env::var("PARL_SCALE_SCHEME") {
        Ok(name) => parl_core::master::scheduler::Scheme::parse(&name).expect("PARL_SCALE_SCHEME"),
        Err(_) => Default::default(),
    }
}

/// The master's child process; killed (by its pid) when dropped.
struct MasterProcess {
    child: Child,
    pid: u32,
    address: String,
    log: PathBuf,
}

impl MasterProcess {
    /// Starts `command` as the master (it must call [`master_child_main`]) and waits for it to
    /// be ready.
    fn start(mut command: Command, key: &str, log: &Path) -> MasterProcess {
        let ready = log.with_extension("ready.json");
        let _ = std::fs::remove_file(&ready);
        let out = std::fs::File::create(log).expect("master log file");
        command
            .env(MASTER_ENV, &ready)
            .env(KEY_ENV, key)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out);
        let mut child = command.spawn().expect("the master process starts");
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let value: serde_json::Value = serde_json::from_str(&text).expect("ready file is JSON");
                let address = value["address"].as_str().expect("address").to_string();
                let pid = child.id();
                return MasterProcess { child, pid, address, log: log.to_path_buf() };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the master exited at start ({status}); see {}", log.display());
            }
            assert!(Instant::now() < end, "the master did not start; see {}", log.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn sample(&self) -> ProcSample {
        ProcSample::of(self.pid)
    }

    /// SIGTERM, then SIGKILL after 10 s.
    fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MasterProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU time, resident memory and threads of a process, from /proc.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcSample {
    /// user + system CPU seconds since the process started.
    pub cpu_s: f64,
    pub rss_mib: f64,
    pub threads: u32,
    /// Open file descriptors (sockets included).
    pub fds: u32,
}

impl ProcSample {
    pub fn of(pid: u32) -> ProcSample {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start at field 3.
        let fields: Vec<&str> =
            stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
        // SAFETY: sysconf has no side effects.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let cpu_s = (ticks(11) + ticks(12)) / hz;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u32);
        ProcSample { cpu_s, rss_mib: field("VmRSS:") as f64 / 1024.0, threads: field("Threads:") as u32, fds }
    }
}

/// CPU seconds (user + system) this process has used.
fn own_cpu_s() -> f64 {
    ProcSample::of(std::process::id()).cpu_s
}

/// Raises this process's soft limit on open files to `needed` (at most the hard limit); every
/// simulated peer holds one socket here and one in the master, which inherits the limit.
/// Returns what it did.
pub fn raise_fd_limit(needed: u64) -> String {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write and read the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return "open files: getrlimit failed; limit unchanged".into();
    }
    let (soft, hard) = (limit.rlim_cur, limit.rlim_max);
    if soft >= needed {
        return format!("open files: soft limit {soft} (hard {hard}) >= {needed} needed; unchanged");
    }
    let wanted = needed.min(hard);
    limit.rlim_cur = wanted;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return format!("open files: could not raise the soft limit {soft} to {wanted}");
    }
    let short = if wanted < needed {
        format!("; the hard limit {hard} is below the {needed} needed")
    } else {
        String::new()
    };
    format!("open files: raised the soft limit from {soft} to {wanted} (hard {hard}){short}")
}

// ---------------------------------------------------------------------------------------------
// Simulated workers.

/// What the simulated workers saw; all zero but `kills` in a healthy run.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub registered: AtomicU64,
    /// Links that lost the master (dropped for silence, or a closed connection).
    pub lost: AtomicU64,
    pub restored: AtomicU64,
    pub kills: AtomicU64,
    /// KillJob or JobAssigned for a job the worker does not have.
    pub unknown_job: AtomicU64,
    /// JobAssigned for a job already assigned: a slot counted twice.
    pub double_assigned: AtomicU64,
    pub unexpected: AtomicU64,
}

async fn start_worker(
    index: usize,
    address: String,
    auth: Auth,
    slots: u32,
    stats: Arc<WorkerStats>,
    shutdown: Shutdown,
) -> Result<(), String> {
    let worker_id = format!("sim-w{index:05}");
    let hello = Message::RegisterWorker(WorkerHello {
        worker_id: worker_id.clone(),
        hostname: "sim".into(),
        pid: std::process::id(),
        cpu_num: slots,
        gpus: Vec::new(),
        version: VERSION.to_string(),
        python_version: String::new(),
        log_address: "127.0.0.1:9".into(),
        hwm: 0,
    });
    let config =
        LinkConfig { address, connect_timeout: Duration::from_secs(30), hello, role: "worker", auth };
    let (link, _welcome, events) = link::connect(config, shutdown).await.map_err(|e| e.to_string())?;
    stats.registered.fetch_add(1, Ordering::Relaxed);
    let mut worker = SimWorker { id: worker_id, link, jobs: HashMap::new(), next_job: 0, stats };
    for _ in 0..slots {
        worker.new_job();
    }
    tokio::spawn(worker.run(events));
    Ok(())
}

struct SimWorker {
    id: String,
    link: LinkSender,
    /// Its fake jobs, with the assignment the master announced for each.
    jobs: HashMap<String, Option<JobAssignment>>,
    next_job: u64,
    stats: Arc<WorkerStats>,
}

impl SimWorker {
    fn info(&self, job_id: &str) -> JobInfo {
        JobInfo { job_id: job_id.to_string(), address: format!("tcp://127.0.0.1:9/{job_id}"), pid: 0 }
    }

    /// A warm job, offered to the master.
    fn new_job(&mut self) {
        self.next_job += 1;
        let job_id = format!("{}-j{}", self.id, self.next_job);
        self.link.send(Message::JobReady(self.info(&job_id)));
        self.jobs.insert(job_id, None);
    }

    /// Reports usage as a real worker does (every 2 s, each job with its counters), and
    /// answers the master.
    async fn run(mut self, mut events: tokio::sync::mpsc::UnboundedReceiver<LinkEvent>) {
        let mut report = tokio::time::interval(memory::USAGE_PERIOD);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.on_event(event),
                    None => return,
                },
                _ = report.tick() => self.report_usage(),
            }
        }
    }

    /// What a worker reports to the master about its machine and its jobs.
    fn report_usage(&self) {
        let jobs = self
            .jobs
            .keys()
            .map(|job_id| JobUsage {
                job_id: job_id.clone(),
                memory_bytes: Some(60 << 20),
                calls: 10,
                failures: 0,
                last_error: None,
            })
            .collect();
        let usage = UsageReport { memory_total: 64 << 30, memory_used: 8 << 30, load1: 1.5, jobs };
        self.link.send(Message::WorkerStats(usage));
    }

    fn on_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Message(envelope) => match envelope.message {
                Message::KillJob { job_id, .. } => {
                    if self.jobs.remove(&job_id).is_none() {
                        self.stats.unknown_job.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    self.stats.kills.fetch_add(1, Ordering::Relaxed);
                    let status = "exited with status 0".to_string();
                    let (cause, calls, failures) = (ExitCause::Released, 0, 0);
                    let exit = JobExit { job_id, status, expected: true, cause, calls, failures };
                    self.link.send(Message::JobExited(exit));
                    self.new_job();
                }
                Message::JobAssigned(assignment) => match self.jobs.get_mut(&assignment.job_id) {
                    Some(Some(_)) => {
                        self.stats.double_assigned.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(slot) => {
                        // The simulated actor starts at once, and says so as a job does.
                        let job_id = assignment.job_id.clone();
                        *slot = Some(assignment);
                        self.link.send(Message::ActorStarted { job_id });
                    }
                    None => {
                        self.stats.unknown_job.fetch_add(1, Ordering::Relaxed);
                    }
                },
                other => {
                    eprintln!("worker {}: unexpected {other:?}", self.id);
                    self.stats.unexpected.fetch_add(1, Ordering::Relaxed);
                }
            },
            LinkEvent::Lost(_) => {
                self.stats.lost.fetch_add(1, Ordering::Relaxed);
            }
            LinkEvent::Restored(_) => {
                // What a real worker does: tell the master which jobs are free and busy.
                self.stats.restored.fetch_add(1, Ordering::Relaxed);
                for (job_id, assignment) in &self.jobs {
                    let info = self.info(job_id);
                    match assignment.clone() {
                        Some(assignment) => self.link.send(Message::JobBusy { info, assignment }),
                        None => self.link.send(Message::JobReady(info)),
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Simulated clients.

#[derive(Debug, Default)]
pub struct ClientStats {
    pub lost: AtomicU64,
    pub refused: AtomicU64,
    pub timed_out: AtomicU64,
    pub actor_died: AtomicU64,
    /// Grants nobody waited for (returned at once).
    pub stray_grants: AtomicU64,
    /// A job granted while another actor still held it: a slot counted twice.
    pub duplicate_grants: AtomicU64,
    pub returns: AtomicU64,
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<(JobGrant, Instant)>>>>;

/// Every job an actor holds, over all clients.
type Held = Arc<Mutex<HashSet<String>>>;

struct SimClient {
    me: std::sync::Weak<SimClient>,
    link: LinkSender,
    waiting: Waiters,
    next_request: AtomicU64,
    /// The jobs of this client's actors.
    actors: Mutex<Vec<String>>,
    /// Jobs it returned: the master reports their exit (`ActorDied`), which is expected.
    returned: Arc<Mutex<HashSet<String>>>,
    held: Held,
    stats: Arc<ClientStats>,
}

impl SimClient {
    async fn connect(
        index: usize,
        address: String,
        auth: Auth,
        held: Held,
        stats: Arc<ClientStats>,
        shutdown: Shutdown,
    ) -> Result<Arc<SimClient>, String> {
        let hello = Message::RegisterClient(ClientHello {
            client_id: format!("sim-c{index:03}"),
            hostname: "sim".into(),
            pid: std::process::id(),
            version: VERSION.to_string(),
            script: "harness".into(),
        });
        let config =
            LinkConfig { address, connect_timeout: Duration::from_secs(30), hello, role: "client", auth };
        let (link, _welcome, mut events) =
            link::connect(config, shutdown).await.map_err(|e| e.to_string())?;
        let waiting: Waiters = Arc::default();
        let returned: Arc<Mutex<HashSet<String>>> = Arc::default();
        let client = Arc::new_cyclic(|me: &std::sync::Weak<SimClient>| SimClient {
            me: me.clone(),
            returned: returned.clone(),
            link: link.clone(),
            waiting: waiting.clone(),
            next_request: AtomicU64::new(1),
            actors: Mutex::new(Vec::new()),
            held,
            stats: stats.clone(),
        });
        let me = client.me.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let message = match event {
                    LinkEvent::Message(envelope) => envelope.message,
                    LinkEvent::Lost(_) => {
                        stats.lost.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    LinkEvent::Restored(_) => continue,
                };
                match message {
                    Message::JobGranted(grant) => {
                        let at = Instant::now();
                        let waiter = waiting.lock().unwrap().remove(&grant.request_id);
                        match waiter {
                            Some(waiter) => {
                                if let Err((grant, _)) = waiter.send((grant, at)) {
                                    link.send(Message::ReturnJob { job_id: grant.job_id });
                                }
                            }
                            None => {
                                stats.stray_grants.fetch_add(1, Ordering::Relaxed);
                                link.send(Message::ReturnJob { job_id: grant.job_id });
                            }
                        }
                    }
                    Message::RequestFailed { request_id, .. } => {
                        stats.refused.fetch_add(1, Ordering::Relaxed);
                        waiting.lock().unwrap().remove(&request_id);
                    }
                    // The end of a job it returned is expected; any other is an actor lost
                    // (its worker was dropped), which no longer holds its job.
                    Message::ActorDied(death) if !returned.lock().unwrap().remove(&death.job_id) => {
                        stats.actor_died.fetch_add(1, Ordering::Relaxed);
                        if let Some(client) = me.upgrade() {
                            client.forget(&death.job_id);
                        }
                    }
                    _ => {}
                }
            }
        });
        Ok(client)
    }

    /// Creates an actor at the master: `RequestJob` until `JobGranted`. Returns the latency.
    async fn create(&self, timeout: Duration) -> Option<Duration> {
        let request_id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap().insert(request_id, tx);
        let request =
            JobRequest { request_id, n_cpu: 1, n_gpu: 0, class_name: "Sim".into(), on_worker: None };
        let sent = Instant::now();
        self.link.send(Message::RequestJob(request));
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok((grant, at))) => {
                if !self.held.lock().unwrap().insert(grant.job_id.clone()) {
                    self.stats.duplicate_grants.fetch_add(1, Ordering::Relaxed);
                }
                self.actors.lock().unwrap().push(grant.job_id);
                Some(at.saturating_duration_since(sent))
            }
            Ok(Err(_)) => None,
            Err(_) => {
                self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                self.waiting.lock().unwrap().remove(&request_id);
                self.link.send(Message::CancelRequest { request_id });
                None
            }
        }
    }

    /// Drops an actor whose job the master reported lost.
    fn forget(&self, job_id: &str) {
        self.actors.lock().unwrap().retain(|j| j != job_id);
        self.held.lock().unwrap().remove(job_id);
    }

    /// Returns one of its actors' jobs (a random one); false if it holds none.
    fn release_one(&self) -> bool {
        let job_id = {
            let mut actors = self.actors.lock().unwrap();
            if actors.is_empty() {
                return false;
            }
            let i = rand::random_range(0..actors.len());
            actors.swap_remove(i)
        };
        self.held.lock().unwrap().remove(&job_id);
        self.returned.lock().unwrap().insert(job_id.clone());
        self.stats.returns.fetch_add(1, Ordering::Relaxed);
        self.link.send(Message::ReturnJob { job_id });
        true
    }
}

// ---------------------------------------------------------------------------------------------
// The probe: heartbeat and status round trips, all the time.

#[derive(Debug, Default)]
struct PhaseSamples {
    heartbeat: Vec<Duration>,
    status: Vec<Duration>,
}

#[derive(Clone)]
struct ProbeShared {
    phase: Arc<Mutex<&'static str>>,
    samples: Arc<Mutex<HashMap<&'static str, PhaseSamples>>>,
    /// Round trips that got no answer within 10 s.
    timeouts: Arc<AtomicU64>,
}

impl ProbeShared {
    fn set_phase(&self, phase: &'static str) {
        *self.phase.lock().unwrap() = phase;
    }

    fn record(&self, status: bool, rtt: Duration) {
        let phase = *self.phase.lock().unwrap();
        let mut samples = self.samples.lock().unwrap();
        let entry = samples.entry(phase).or_default();
        if status {
            entry.status.push(rtt);
        } else {
            entry.heartbeat.push(rtt);
        }
    }

    fn take(&self, phase: &str) -> PhaseSamples {
        self.samples.lock().unwrap().remove(phase).unwrap_or_default()
    }
}

struct Probe {
    outbox: Outbox,
    inbound: Events,
}

impl Probe {
    async fn open(address: &str, auth: &Auth) -> Probe {
        let (outbox, inbound) = connection::connect(
            address,
            parl_core::protocol::Service::Master,
            Duration::from_secs(10),
            auth,
            "probe".into(),
        )
        .await
        .expect("the probe connects");
        let mut probe = Probe { outbox, inbound };
        let hello = Message::RegisterClient(ClientHello {
            client_id: "scale-probe".into(),
            hostname: "sim".into(),
            pid: std::process::id(),
            version: VERSION.to_string(),
            script: "harness".into(),
        });
        probe.round_trip(&hello, |m| matches!(m, Message::Registered(_))).await.expect("the probe registers");
        probe
    }

    /// Sends `message` and waits for the answer `wanted` picks; None after 10 s.
    async fn round_trip(
        &mut self,
        message: &Message,
        wanted: fn(&Message) -> bool,
    ) -> Option<(Message, Duration)> {
        let sent = Instant::now();
        self.outbox.post(message);
        let end = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(end, self.inbound.recv()).await {
                Ok(Some(Inbound::Message { envelope, .. })) if wanted(&envelope.message) => {
                    return Some((envelope.message, sent.elapsed()));
                }
                Ok(Some(Inbound::Message { .. })) | Ok(Some(Inbound::Malformed { .. })) => continue,
                _ => return None,
            }
        }
    }

    /// Runs until `shutdown`: a heartbeat every 100 ms, a status request every `status_every`,
    /// whose answer is published on `latest`.
    async fn run(
        mut self,
        shared: ProbeShared,
        status_every: Duration,
        latest: watch::Sender<Option<Arc<ClusterStatus>>>,
        shutdown: Shutdown,
    ) {
        let mut beat = tokio::time::interval(Duration::from_millis(100));
        let mut last_status = Instant::now() - status_every;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = beat.tick() => {}
            }
            match self.round_trip(&Message::Heartbeat, |m| *m == Message::Heartbeat).await {
                Some((_, rtt)) => shared.record(false, rtt),
                None => {
                    shared.timeouts.fetch_add(1, Ordering::Relaxed);
                }
            }
            if last_status.elapsed() >= status_every {
                last_status = Instant::now();
                match self.round_trip(&Message::StatusRequest, |m| matches!(m, Message::Status(_))).await {
                    Some((Message::Status(status), rtt)) => {
                        shared.record(true, rtt);
                        latest.send_replace(Some(Arc::new(status)));
                    }
                    _ => {
                        shared.timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// Waits for a status, asked for after this call, for which `done` holds (None after `timeout`).
async fn wait_status(
    latest: &mut watch::Receiver<Option<Arc<ClusterStatus>>>,
    timeout: Duration,
    done: impl Fn(&ClusterStatus) -> bool,
) -> Option<Arc<ClusterStatus>> {
    let end = tokio::time::Instant::now() + timeout;
    latest.borrow_and_update();
    loop {
        if tokio::time::timeout_at(end, latest.changed()).await.is_err() {
            return None;
        }
        if let Some(status) = latest.borrow_and_update().clone() {
            if done(&status) {
                return Some(status);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The report.

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub fn of(samples: &[Duration]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        Latency {
            count: ms.len(),
            p50_ms: round(at(0.50)),
            p90_ms: round(at(0.90)),
            p99_ms: round(at(0.99)),
            max_ms: round(ms[ms.len() - 1]),
            mean_ms: round(ms.iter().sum::<f64>() / ms.len() as f64),
        }
    }

    fn line(&self) -> String {
        format!(
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})",
            self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms, self.count
        )
    }
}

/// One phase: what it did, how long the master took to answer, and its CPU use.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phase {
    pub seconds: f64,
    /// Actor creations (RequestJob -> JobGranted) made in this phase.
    pub grant: Latency,
    pub heartbeat_rtt: Latency,
    pub status_rtt: Latency,
    pub master_cpu_s: f64,
    /// Master CPU use over the phase, in % of one core.
    pub master_cpu_percent: f64,
    /// Master CPU time per actor creation in this phase (heartbeats included), in µs: the
    /// figure least disturbed by other work on the machine.
    pub master_cpu_us_per_grant: f64,
    pub harness_cpu_s: f64,
}

/// The master process at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub moment: &'static str,
    pub workers: usize,
    pub actors: usize,
    pub threads: u32,
    pub rss_mib: f64,
    pub fds: u32,
    pub cpu_s: f64,
}

/// Conditions a healthy run meets; the test asserts them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Checks {
    /// Every actor asked for was granted.
    pub all_actors_granted: bool,
    pub workers_registered: usize,
    pub workers_in_status: usize,
    pub worker_links_lost: u64,
    pub client_links_lost: u64,
    /// Requests refused, timed out, or granted to nobody.
    pub failed_requests: u64,
    /// A job granted to two live actors, or assigned twice: a slot counted twice.
    pub slots_counted_twice: u64,
    /// KillJob / JobAssigned for jobs the worker does not have.
    pub unknown_jobs: u64,
    /// Messages a worker did not expect (errors included).
    pub unexpected_messages: u64,
    /// Actors the master reported dead that their client had not returned.
    pub actors_died: u64,
    /// Status after settling: CPU slots in use equal the actors held, and every worker's used
    /// and ready slots add up to its total.
    pub status_consistent: bool,
    /// The master's threads with every worker connected, minus with no peer.
    pub thread_growth: i64,
    /// Workers or clients the master's log says it lost.
    pub peers_lost_in_master_log: usize,
    pub probe_timeouts: u64,
}

impl Checks {
    pub fn healthy(&self) -> bool {
        self.all_actors_granted
            && self.workers_registered == self.workers_in_status
            && self.worker_links_lost == 0
            && self.client_links_lost == 0
            && self.failed_requests == 0
            && self.slots_counted_twice == 0
            && self.unknown_jobs == 0
            && self.unexpected_messages == 0
            && self.actors_died == 0
            && self.status_consistent
            && self.thread_growth == 0
            && self.peers_lost_in_master_log == 0
            && self.probe_timeouts == 0
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub config: ScaleConfig,
    pub machine: serde_json::Value,
    pub fd_limit: String,
    pub workers_reached: usize,
    pub slots: usize,
    pub actors_reached: usize,
    pub connect_workers_s: f64,
    /// Sequential creations on a cluster with every worker connected and no other request.
    pub idle: Phase,
    /// Creations while the cluster fills to `actors`.
    pub fill: Phase,
    pub fill_grants_per_s: f64,
    /// The full cluster, nothing but heartbeats.
    pub hold: Phase,
    /// Returns and re-creations at `churn_rate` per second on the full cluster.
    pub churn: Phase,
    pub churn_returns: u64,
    pub snapshots: Vec<Snapshot>,
    /// (RSS with `actors` actors - RSS with no peer) / (actors / 1000).
    pub rss_mib_per_1000_actors: f64,
    /// (RSS with `actors` actors - RSS with every worker but no actor) / (actors / 1000).
    pub rss_mib_per_1000_actors_marginal: f64,
    pub rss_kib_per_worker: f64,
    pub checks: Checks,
}

// ---------------------------------------------------------------------------------------------
// The run.

/// Runs the harness: starts the master with `master_command` (which must call
/// [`master_child_main`]), then the simulated cluster. Prints progress as it goes.
pub fn run(config: &ScaleConfig, master_command: Command) -> Report {
    let fd_limit = raise_fd_limit((config.workers + config.clients) as u64 + 256);
    println!("{fd_limit}");
    let key = ClusterKey::generate();
    let master = MasterProcess::start(master_command, &key, &config.master_log);
    println!("master pid {} at {} (log: {})", master.pid, master.address, master.log.display());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let auth = Auth::from_key(Some(&key));
    let mut report = runtime.block_on(drive(config, &master, auth));
    report.fd_limit = fd_limit;
    runtime.shutdown_timeout(Duration::from_secs(5));
    master.stop();
    report
}

/// Measures one phase around `body`.
struct PhaseClock {
    start: Instant,
    master_cpu: f64,
    own_cpu: f64,
}

impl PhaseClock {
    fn start(master: &MasterProcess) -> PhaseClock {
        PhaseClock { start: Instant::now(), master_cpu: master.sample().cpu_s, own_cpu: own_cpu_s() }
    }

    fn finish(self, master: &MasterProcess, probe: &ProbeShared, name: &str, grants: &[Duration]) -> Phase {
        let seconds = self.start.elapsed().as_secs_f64();
        let master_cpu_s = master.sample().cpu_s - self.master_cpu;
        let samples = probe.take(name);
        Phase {
            seconds: round3(seconds),
            grant: Latency::of(grants),
            heartbeat_rtt: Latency::of(&samples.heartbeat),
            status_rtt: Latency::of(&samples.status),
            master_cpu_s: round3(master_cpu_s),
            master_cpu_percent: round3(100.0 * master_cpu_s / seconds.max(1e-9)),
            master_cpu_us_per_grant: if grants.is_empty() {
                0.0
            } else {
                round3(master_cpu_s * 1e6 / grants.len() as f64)
            },
            harness_cpu_s: round3(own_cpu_s() - self.own_cpu),
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn snapshot(master: &MasterProcess, moment: &'static str, workers: usize, actors: usize) -> Snapshot {
    let s = master.sample();
    Snapshot {
        moment,
        workers,
        actors,
        threads: s.threads,
        rss_mib: round3(s.rss_mib),
        fds: s.fds,
        cpu_s: round3(s.cpu_s),
    }
}

fn print_phase(name: &str, phase: &Phase) {
    println!(
        "  {name}: {:.1} s, master CPU {:.2} s ({:.1}% of a core), harness CPU {:.2} s",
        phase.seconds, phase.master_cpu_s, phase.master_cpu_percent, phase.harness_cpu_s
    );
    if phase.grant.count > 0 {
        println!("    actor creation (RequestJob -> JobGranted): {}", phase.grant.line());
        println!("    master CPU per creation: {:.0} µs", phase.master_cpu_us_per_grant);
    }
    println!("    heartbeat round trip: {}", phase.heartbeat_rtt.line());
    println!("    StatusRequest round trip: {}", phase.status_rtt.line());
}

async fn drive(config: &ScaleConfig, master: &MasterProcess, auth: Auth) -> Report {
    let shutdown = Shutdown::new();
    let address = master.address.clone();
    let mut snapshots = Vec::new();
    // Let the master finish starting (its HTTP server, its first tick) before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    snapshots.push(snapshot(master, "no peer", 0, 0));

    let probe_shared = ProbeShared {
        phase: Arc::new(Mutex::new("connect")),
        samples: Arc::default(),
        timeouts: Arc::default(),
    };
    let (latest_tx, mut latest) = watch::channel(None);
    let probe = Probe::open(&address, &auth).await;
    let status_every = Duration::from_secs_f64(config.status_every_s);
    tokio::spawn(probe.run(probe_shared.clone(), status_every, latest_tx, shutdown.clone()));

    // Workers.
    let worker_stats = Arc::new(WorkerStats::default());
    let clock = PhaseClock::start(master);
    let connected = futures::stream::iter(0..config.workers)
        .map(|i| {
            start_worker(
                i,
                address.clone(),
                auth.clone(),
                config.slots_per_worker,
                worker_stats.clone(),
                shutdown.clone(),
            )
        })
        .buffer_unordered(config.connect_concurrency)
        .collect::<Vec<_>>()
        .await;
    let failures: Vec<_> = connected.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{} workers failed to register, e.g.: {}", failures.len(), failures[0]);
    let slots = config.slots();
    let all_ready = wait_status(&mut latest, Duration::from_secs(120), |s| {
        s.workers.len() == config.workers
            && s.workers.iter().map(|w| w.jobs_ready as usize).sum::<usize>() == slots
    })
    .await;
    assert!(all_ready.is_some(), "the master did not see every worker and warm job within 120 s");
    let connect = clock.finish(master, &probe_shared, "connect", &[]);
    println!(
        "connected {} simulated workers ({} slots) in {:.1} s; master CPU {:.2} s",
        config.workers, slots, connect.seconds, connect.master_cpu_s
    );
    snapshots.push(snapshot(master, "workers, no actor", config.workers, 0));

    // Clients.
    let held: Held = Arc::default();
    let client_stats = Arc::new(ClientStats::default());
    let mut clients = Vec::new();
    for i in 0..config.clients {
        let client = SimClient::connect(
            i,
            address.clone(),
            auth.clone(),
            held.clone(),
            client_stats.clone(),
            shutdown.clone(),
        )
        .await
        .expect("a simulated client connects");
        clients.push(client);
    }
    let create_timeout = Duration::from_secs(60);

    // Idle: one creation at a time.
    probe_shared.set_phase("idle");
    let clock = PhaseClock::start(master);
    let mut idle_grants = Vec::new();
    for _ in 0..config.idle_samples.min(config.actors) {
        if let Some(latency) = clients[0].create(create_timeout).await {
            idle_grants.push(latency);
        }
    }
    let idle = clock.finish(master, &probe_shared, "idle", &idle_grants);
    print_phase("idle cluster, one creation at a time", &idle);

    // Fill: every client keeps `window` creations in flight until `actors` are held.
    probe_shared.set_phase("fill");
    let clock = PhaseClock::start(master);
    let remaining = Arc::new(AtomicUsize::new(config.actors - idle_grants.len()));
    let fill_grants = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for client in &clients {
        for _ in 0..config.window {
            let (client, remaining, grants) = (client.clone(), remaining.clone(), fill_grants.clone());
            tasks.spawn(async move {
                while remaining
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                    .is_ok()
                {
                    if let Some(latency) = client.create(create_timeout).await {
                        grants.lock().unwrap().push(latency);
                    }
                }
            });
        }
    }
    while tasks.join_next().await.is_some() {}
    let fill_grants = std::mem::take(&mut *fill_grants.lock().unwrap());
    let fill = clock.finish(master, &probe_shared, "fill", &fill_grants);
    let fill_grants_per_s = round3(fill_grants.len() as f64 / fill.seconds.max(1e-9));
    let actors_reached = held.lock().unwrap().len();
    print_phase(&format!("filling to {} actors ({fill_grants_per_s:.0} grants/s)", config.actors), &fill);

    // Hold: the full cluster, nothing but heartbeats.
    probe_shared.set_phase("hold");
    let clock = PhaseClock::start(master);
    tokio::time::sleep(Duration::from_secs_f64(config.hold_s)).await;
    let hold = clock.finish(master, &probe_shared, "hold", &[]);
    print_phase(&format!("holding {actors_reached} actors, heartbeats only"), &hold);
    snapshots.push(snapshot(master, "workers and actors", config.workers, actors_reached));

    // Churn: return a random actor and create one, `churn_rate` times a second.
    probe_shared.set_phase("churn");
    let clock = PhaseClock::start(master);
    let churn_grants = Arc::new(Mutex::new(Vec::new()));
    let returns_before = client_stats.returns.load(Ordering::Relaxed);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / config.churn_rate.max(1e-3)));
    let churn_end = Instant::now() + Duration::from_secs_f64(config.churn_s);
    let mut next_client = 0;
    while Instant::now() < churn_end {
        tick.tick().await;
        let client = clients[next_client % clients.len()].clone();
        next_client += 1;
        if client.release_one() {
            let grants = churn_grants.clone();
            tasks.spawn(async move {
                if let Some(latency) = client.create(create_timeout).await {
                    grants.lock().unwrap().push(latency);
                }
            });
        }
    }
    while tasks.join_next().await.is_some() {}
    let churn_grants = std::mem::take(&mut *churn_grants.lock().unwrap());
    let churn = clock.finish(master, &probe_shared, "churn", &churn_grants);
    let churn_returns = client_stats.returns.load(Ordering::Relaxed) - returns_before;
    print_phase(
        &format!("churn: {churn_returns} returns and re-creations at {:.0}/s", config.churn_rate),
        &churn,
    );

    // Settle, and check the master's books against ours.
    probe_shared.set_phase("settle");
    let held_now = held.lock().unwrap().len();
    let settled = wait_status(&mut latest, Duration::from_secs(30), |s| {
        s.cpu_used() as usize == held_now
            && s.workers.iter().map(|w| w.jobs_ready as usize).sum::<usize>() == slots - held_now
    })
    .await;
    let status = match settled.clone() {
        Some(status) => status,
        None => wait_status(&mut latest, Duration::from_secs(30), |_| true).await.expect("a status"),
    };
    let status_consistent = settled.is_some()
        && status.actors() as usize == held_now
        && status.pending_requests == 0
        && status.workers.iter().all(|w| w.cpu_used + w.jobs_ready == w.cpu_total);
    snapshots.push(snapshot(master, "after churn", config.workers, held_now));
    // Drops the master logged before anyone said goodbye.
    let log = std::fs::read_to_string(&master.log).unwrap_or_default();
    let peers_lost_in_master_log =
        log.lines().filter(|l| l.contains(" lost: ") || l.contains(" left: no heartbeat")).count();

    let ws = &worker_stats;
    let cs = &client_stats;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let threads =
        |moment: &str| snapshots.iter().find(|s| s.moment == moment).map_or(0, |s| s.threads as i64);
    let rss = |moment: &str| snapshots.iter().find(|s| s.moment == moment).map_or(0.0, |s| s.rss_mib);
    let thousands = (actors_reached as f64 / 1000.0).max(1e-9);
    let checks = Checks {
        all_actors_granted: actors_reached == config.actors,
        workers_registered: load(&ws.registered) as usize,
        workers_in_status: status.workers.len(),
        worker_links_lost: load(&ws.lost) + load(&ws.restored),
        client_links_lost: load(&cs.lost),
        failed_requests: load(&cs.refused) + load(&cs.timed_out) + load(&cs.stray_grants),
        slots_counted_twice: load(&cs.duplicate_grants) + load(&ws.double_assigned),
        unknown_jobs: load(&ws.unknown_job),
        unexpected_messages: load(&ws.unexpected),
        actors_died: load(&cs.actor_died),
        status_consistent,
        thread_growth: threads("workers and actors").max(threads("workers, no actor")) - threads("no peer"),
        peers_lost_in_master_log,
        probe_timeouts: load(&probe_shared.timeouts),
    };
    shutdown.cancel();
    // Let the links say goodbye.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Report {
        config: config.clone(),
        machine: machine(),
        fd_limit: String::new(),
        workers_reached: status.workers.len(),
        slots,
        actors_reached,
        connect_workers_s: connect.seconds,
        idle,
        fill,
        fill_grants_per_s,
        hold,
        churn,
        churn_returns,
        rss_mib_per_1000_actors: round3((rss("workers and actors") - rss("no peer")) / thousands),
        rss_mib_per_1000_actors_marginal: round3(
            (rss("workers and actors") - rss("workers, no actor")) / thousands,
        ),
        rss_kib_per_worker: round3(
            (rss("workers, no actor") - rss("no peer")) * 1024.0 / (config.workers as f64).max(1.0),
        ),
        snapshots,
        checks,
    }
}

fn machine() -> serde_json::Value {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    serde_json::json!({
        "cpus": cpus,
        "cpu_model": model,
        "loadavg_at_end": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "note": "the master, the simulated peers and the harness share these CPUs (and other users' work)",
    })
}

/// Prints the report's summary (the phases were printed as they ran).
pub fn print_summary(report: &Report) {
    println!("master process (pid-level, /proc):");
    for s in &report.snapshots {
        println!(
            "  {:<20} workers {:>5}  actors {:>6}  threads {:>2}  RSS {:>8.1} MiB  fds {:>5}  CPU {:>7.2} s",
            s.moment, s.workers, s.actors, s.threads, s.rss_mib, s.fds, s.cpu_s
        );
    }
    println!(
        "  RSS per 1,000 actors: {:.2} MiB (from no peer), {:.2} MiB (beyond the workers); {:.1} KiB per worker",
        report.rss_mib_per_1000_actors, report.rss_mib_per_1000_actors_marginal, report.rss_kib_per_worker
    );
    println!("checks: {:?}", report.checks);
    println!("healthy: {}", report.checks.healthy());
}
