//! A scheduling simulation: the master's own core (`master::core::MasterCore`: registry,
//! queue, placement scheme, failure detector) driven with the messages a real cluster sends,
//! in simulated time, without sockets or processes. Workers register and offer warm jobs;
//! clients send requests over time and return each job after a random duration; a returned
//! job's worker ends it and starts a warm one in its place (after `respawn_s`); every peer
//! heartbeats each simulated second and the master ticks. Meanwhile workers die (half crash:
//! their connection closes; half go silent: the master notices by the heartbeat timeout) and
//! others join. For each scheme it reports the makespan, the mean and p99 wait, and how
//! evenly the work spread over hosts; it checks the invariants (a grant only ever names a
//! warm job of a live worker, so no slot is counted twice; every request is served once or
//! its actor is reported dead; none waits for ever).
//!
//! Used by `benches/scheduling.rs` (the full size, figures to `benches/results/`) and by
//! `tests-rust/scheduling.rs` (a small size, invariants only).

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parl_core::master::core::{CoreConfig, Effect, Event, MasterCore};
use parl_core::master::scheduler::Scheme;
use parl_core::protocol::{
    ClientHello, ExitCause, JobExit, JobGrant, JobInfo, JobRequest, Message, WorkerHello,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct SimConfig {
    pub workers: usize,
    pub hosts: usize,
    pub max_slots: u32,
    pub requests: usize,
    pub clients: usize,
    /// Requests arrive uniformly over this many simulated seconds.
    pub arrival_s: f64,
    /// Each request runs for 1 s to this many seconds (uniform).
    pub max_duration_s: f64,
    /// Workers that die a third of the way through the arrivals, and as many that join at
    /// half way.
    pub churn: usize,
    /// How long a worker takes to start a warm job in place of one that ended.
    pub respawn_s: f64,
    pub seed: u64,
}

impl SimConfig {
    pub fn full() -> SimConfig {
        SimConfig {
            workers: 50,
            hosts: 12,
            max_slots: 32,
            requests: 20_000,
            clients: 6,
            arrival_s: 600.0,
            max_duration_s: 60.0,
            churn: 5,
            respawn_s: 0.5,
            seed: 2026,
        }
    }

    /// The same cluster at about half its capacity: where placement shows in the balance.
    pub fn half_load() -> SimConfig {
        SimConfig { arrival_s: 1_500.0, ..SimConfig::full() }
    }

    pub fn small() -> SimConfig {
        SimConfig {
            workers: 12,
            hosts: 4,
            max_slots: 8,
            requests: 1_500,
            arrival_s: 120.0,
            churn: 2,
            ..SimConfig::full()
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SchemeResult {
    pub scheme: &'static str,
    pub makespan_s: f64,
    pub mean_wait_s: f64,
    pub p99_wait_s: f64,
    pub max_wait_s: f64,
    /// Busy slot-seconds per host divided by the host's slot-seconds, max over min across
    /// hosts (1.0: perfectly even).
    pub host_balance: f64,
    pub served: usize,
    /// Requests whose actor was reported dead: their worker died under them (or they were
    /// granted by a worker that had died silently and was not yet noticed).
    pub killed: usize,
}

/// A simulated worker: what it told the master, and what it runs.
struct Worker {
    host: usize,
    total: u32,
    alive: bool,
    /// Warm jobs it offered and that were not granted yet.
    warm: HashSet<String>,
    /// Jobs granted to an actor: (client, request).
    running: HashMap<String, (usize, u64)>,
    next_job: usize,
    /// Slot-seconds used, and the time of the last change.
    used_s: f64,
    since: f64,
}

impl Worker {
    fn account(&mut self, now: f64) {
        self.used_s += self.running.len() as f64 * (now - self.since);
        self.since = now;
    }

    fn hello(&self, index: usize) -> WorkerHello {
        WorkerHello {
            worker_id: worker_id(index),
            hostname: format!("host{}", self.host),
            pid: index as u32,
            cpu_num: self.total,
            gpus: Vec::new(),
            version: parl_core::VERSION.into(),
            python_version: String::new(),
            log_address: format!("host{}:1", self.host),
            hwm: 0,
        }
    }

    /// A new warm job, as the worker announces it.
    fn start_job(&mut self, index: usize) -> Message {
        self.next_job += 1;
        let job_id = format!("{}-{}", worker_id(index), self.next_job);
        self.warm.insert(job_id.clone());
        Message::JobReady(JobInfo { job_id, address: "tcp://sim:1".into(), pid: 1 })
    }
}

fn worker_id(index: usize) -> String {
    format!("w{index:03}")
}

fn worker_peer(index: usize) -> Bytes {
    Bytes::from(format!("worker-{index}"))
}

fn client_peer(client: usize) -> Bytes {
    Bytes::from(format!("client-{client}"))
}

/// What happens at a moment of simulated time.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SimEvent {
    /// Every live peer heartbeats, then the master ticks.
    Tick,
    /// A request of (client, request id) arrives.
    Arrive {
        client: usize,
        request: u64,
    },
    /// The client returns the job of its request.
    Finish {
        worker: usize,
        job_id: String,
    },
    /// The worker has a warm job ready in place of one that ended.
    Respawned(usize),
    /// The worker dies; `silent`: its connection stays open (a lost machine), else it closes
    /// (a crashed process).
    WorkerDies {
        worker: usize,
        silent: bool,
    },
    WorkerJoins(usize),
}

/// Simulated time in microseconds (events are ordered exactly).
type Micros = u64;

/// The simulated cluster around a master core.
struct Sim {
    master: MasterCore,
    start: Instant,
    now: f64,
    workers: Vec<Worker>,
    events: BinaryHeap<Reverse<(Micros, SimEvent)>>,
    durations: HashMap<(usize, u64), f64>,
    arrived: HashMap<(usize, u64), f64>,
    waits: Vec<f64>,
    killed: usize,
    /// Jobs their clients returned, until their end is reported.
    returned: HashSet<String>,
    makespan: f64,
    respawn_s: f64,
    clients: usize,
    scheme: &'static str,
}

impl Sim {
    fn at(&mut self, seconds: f64, event: SimEvent) {
        self.events.push(Reverse((micros(seconds), event)));
    }

    /// `peer` sends `message` now; the master's answers are carried out.
    fn send(&mut self, peer: Bytes, message: Message) {
        self.event(Event::Message { peer, message });
    }

    fn event(&mut self, event: Event) {
        let now = self.start + Duration::from_secs_f64(self.now);
        for Effect::Send { to, message } in self.master.handle(event, now) {
            self.deliver(&to, message);
        }
    }

    /// What a simulated peer does with what the master sent it.
    fn deliver(&mut self, to: &Bytes, message: Message) {
        match message {
            Message::JobGranted(grant) => self.granted(to, grant),
            Message::KillJob { job_id, .. } => {
                let index = self.workers.iter().position(|w| w.running.contains_key(&job_id));
                let Some(index) = index.filter(|&i| worker_peer(i) == *to) else { return };
                let w = &mut self.workers[index];
                w.account(self.now);
                w.running.remove(&job_id);
                let exit = JobExit {
                    job_id,
                    status: "was killed".into(),
                    expected: true,
                    cause: ExitCause::Released,
                    calls: 0,
                    failures: 0,
                };
                self.send(worker_peer(index), Message::JobExited(exit));
                self.at(self.now + self.respawn_s, SimEvent::Respawned(index));
            }
            // A returned job's end is reported too; its client ignores it, as a real one does.
            Message::ActorDied(death) => self.killed += usize::from(!self.returned.remove(&death.job_id)),
            Message::RequestFailed { request_id, reason } => {
                panic!("{}: request {request_id} refused: {reason}", self.scheme)
            }
            Message::Error(e) => panic!("{}: the master refused a peer: {}", self.scheme, e.message),
            _ => {}
        }
    }

    fn granted(&mut self, to: &Bytes, grant: JobGrant) {
        let client = (0..).find(|&c| client_peer(c) == *to).expect("a simulated client");
        let index: usize = grant.worker_id[1..].parse().expect("a simulated worker id");
        let scheme = self.scheme;
        let w = &mut self.workers[index];
        // The master may grant a job of a worker that died silently and is not noticed yet:
        // the actor's death is reported when it is.
        assert!(
            w.warm.remove(&grant.job_id) || !w.alive,
            "{scheme}: job {} granted twice, or never offered",
            grant.job_id
        );
        let key = (client, grant.request_id);
        self.waits.push(self.now - self.arrived[&key]);
        if w.alive {
            w.account(self.now);
            w.running.insert(grant.job_id.clone(), key);
            let end = self.now + self.durations[&key];
            self.at(end, SimEvent::Finish { worker: index, job_id: grant.job_id });
        }
    }

    fn step(&mut self, event: SimEvent) {
        match event {
            SimEvent::Tick => {
                for index in 0..self.workers.len() {
                    if self.workers[index].alive {
                        self.send(worker_peer(index), Message::Heartbeat);
                    }
                }
                for client in 0..self.clients {
                    self.send(client_peer(client), Message::Heartbeat);
                }
                self.event(Event::Tick);
                if !self.events.is_empty() {
                    self.at(self.now + 1.0, SimEvent::Tick);
                }
            }
            SimEvent::Arrive { client, request } => {
                self.arrived.insert((client, request), self.now);
                let job = JobRequest {
                    request_id: request,
                    n_cpu: 1,
                    n_gpu: 0,
                    class_name: "Sim".into(),
                    on_worker: None,
                };
                self.send(client_peer(client), Message::RequestJob(job));
            }
            SimEvent::Finish { worker, job_id } => {
                if let Some((client, _)) = self.workers[worker].running.get(&job_id).copied() {
                    self.makespan = self.makespan.max(self.now);
                    self.returned.insert(job_id.clone());
                    self.send(client_peer(client), Message::ReturnJob { job_id });
                }
            }
            SimEvent::Respawned(index) => {
                if self.workers[index].alive {
                    let ready = self.workers[index].start_job(index);
                    self.send(worker_peer(index), ready);
                }
            }
            SimEvent::WorkerDies { worker, silent } => {
                let w = &mut self.workers[worker];
                w.account(self.now);
                w.alive = false;
                w.running.clear();
                w.warm.clear();
                if !silent {
                    self.event(Event::PeerGone { peer: worker_peer(worker) });
                }
            }
            SimEvent::WorkerJoins(index) => self.join(index),
        }
    }

    fn join(&mut self, index: usize) {
        let w = &mut self.workers[index];
        w.alive = true;
        w.since = self.now;
        let hello = w.hello(index);
        self.send(worker_peer(index), Message::RegisterWorker(hello));
        for _ in 0..self.workers[index].total {
            let ready = self.workers[index].start_job(index);
            self.send(worker_peer(index), ready);
        }
    }
}

fn core_config(scheme: Scheme, seed: u64) -> CoreConfig {
    CoreConfig { scheme, seed, ..CoreConfig::new("sim-master:1") }
}

pub fn simulate(config: &SimConfig, scheme: Scheme) -> SchemeResult {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let workers: Vec<Worker> = (0..config.workers + config.churn)
        .map(|i| Worker {
            host: i % config.hosts,
            total: rng.random_range(1..=config.max_slots),
            alive: false,
            warm: HashSet::new(),
            running: HashMap::new(),
            next_job: 0,
            used_s: 0.0,
            since: 0.0,
        })
        .collect();
    let durations: HashMap<(usize, u64), f64> = (0..config.requests)
        .map(|i| ((i % config.clients, i as u64), rng.random_range(1.0..config.max_duration_s)))
        .collect();
    let start = Instant::now();
    let mut sim = Sim {
        master: MasterCore::new(core_config(scheme, config.seed), start),
        start,
        now: 0.0,
        workers,
        events: BinaryHeap::new(),
        durations,
        arrived: HashMap::new(),
        waits: Vec::new(),
        killed: 0,
        returned: HashSet::new(),
        makespan: 0.0,
        respawn_s: config.respawn_s,
        clients: config.clients,
        scheme: scheme.name(),
    };
    for client in 0..config.clients {
        let hello = ClientHello {
            client_id: format!("c{client}"),
            hostname: "sim".into(),
            pid: 1,
            version: parl_core::VERSION.into(),
            script: "sim".into(),
        };
        sim.send(client_peer(client), Message::RegisterClient(hello));
    }
    for index in 0..config.workers {
        sim.join(index);
    }
    for i in 0..config.requests {
        let at = rng.random_range(0.0..config.arrival_s);
        sim.at(at, SimEvent::Arrive { client: i % config.clients, request: i as u64 });
    }
    for dying in 0..config.churn {
        let worker = dying * 7 % config.workers;
        sim.at(config.arrival_s / 3.0, SimEvent::WorkerDies { worker, silent: dying % 2 == 1 });
        sim.at(config.arrival_s / 2.0, SimEvent::WorkerJoins(config.workers + dying));
    }
    sim.at(1.0, SimEvent::Tick);
    while let Some(Reverse((at, event))) = sim.events.pop() {
        sim.now = at as f64 / 1e6;
        sim.step(event);
    }
    let status = sim.master.status();
    assert_eq!(status.pending_requests, 0, "{}: requests never served", scheme.name());
    assert_eq!(sim.waits.len(), config.requests, "{}: every request is served once", scheme.name());
    let makespan = sim.makespan;
    for w in &mut sim.workers {
        if w.alive {
            w.account(makespan);
        }
    }
    let mut waits = sim.waits;
    waits.sort_by(f64::total_cmp);
    SchemeResult {
        scheme: scheme.name(),
        makespan_s: makespan,
        mean_wait_s: waits.iter().sum::<f64>() / waits.len() as f64,
        p99_wait_s: waits[waits.len() * 99 / 100],
        max_wait_s: *waits.last().unwrap_or(&0.0),
        host_balance: host_balance(&sim.workers, makespan),
        served: waits.len(),
        killed: sim.killed,
    }
}

fn micros(seconds: f64) -> Micros {
    Duration::from_secs_f64(seconds).as_micros() as Micros
}

/// Max over min, across hosts, of the share of the host's slot-seconds that were used.
fn host_balance(workers: &[Worker], makespan: f64) -> f64 {
    let mut hosts: BTreeMap<usize, (f64, f64)> = BTreeMap::new();
    for w in workers {
        let entry = hosts.entry(w.host).or_default();
        entry.0 += w.used_s;
        entry.1 += f64::from(w.total) * makespan;
    }
    let shares: Vec<f64> = hosts.values().map(|(used, capacity)| used / capacity.max(1e-9)).collect();
    let max = shares.iter().cloned().fold(0.0, f64::max);
    let min = shares.iter().cloned().fold(f64::INFINITY, f64::min);
    max / min.max(1e-9)
}

pub fn print_table(results: &[SchemeResult]) {
    println!(
        "{:<12}{:>12}{:>12}{:>12}{:>12}{:>14}{:>8}{:>8}",
        "scheme", "makespan s", "mean wait", "p99 wait", "max wait", "host balance", "served", "killed"
    );
    for r in results {
        println!(
            "{:<12}{:>12.1}{:>12.2}{:>12.2}{:>12.2}{:>14.2}{:>8}{:>8}",
            r.scheme,
            r.makespan_s,
            r.mean_wait_s,
            r.p99_wait_s,
            r.max_wait_s,
            r.host_balance,
            r.served,
            r.killed
        );
    }
}
