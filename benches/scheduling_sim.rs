//! A scheduling simulation: the master's real queue (`master::queue`) and placement schemes
//! (`master::scheduler`) on a simulated heterogeneous cluster, in simulated time, without
//! sockets or processes. Requests arrive over time from several clients, run for random
//! durations, and workers die and join meanwhile. For each scheme it reports the makespan,
//! the mean and p99 wait, and how evenly the work spread over hosts; it checks the
//! invariants (no slot counted twice, every request served, no request waiting behind more
//! than a bounded number of later ones).
//!
//! Used by `benches/scheduling.rs` (the full size, figures to `benches/results/`) and by
//! `tests-rust/scheduling.rs` (a small size, invariants only).

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use parl_core::master::queue::RequestQueue;
use parl_core::master::registry::WorkerLoad;
use parl_core::master::scheduler::Scheme;
use parl_core::protocol::JobRequest;
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
    /// Requests whose worker died under them (they end; their clients would see the death).
    pub killed: usize,
}

struct Worker {
    host: usize,
    total: u32,
    busy: u32,
    alive: bool,
    /// Slot-seconds used, and the time of the last change.
    used_s: f64,
    since: f64,
}

impl Worker {
    fn load(&self, id: usize) -> WorkerLoad {
        WorkerLoad {
            worker_id: worker_id(id),
            host: format!("host{}", self.host),
            cpu_total: self.total,
            busy: self.busy,
            idle: self.total - self.busy,
            gpu_total: 0,
            gpu_free: 0,
        }
    }

    fn account(&mut self, now: f64) {
        self.used_s += f64::from(self.busy) * (now - self.since);
        self.since = now;
    }
}

fn worker_id(index: usize) -> String {
    format!("w{index:03}")
}

/// What happens at a moment of simulated time.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A request of (client, request id) arrives.
    Arrive {
        client: usize,
        request: u64,
    },
    /// The job (worker, request id of client) ends.
    Finish {
        worker: usize,
        client: usize,
        request: u64,
    },
    WorkerDies(usize),
    WorkerJoins(usize),
}

/// Simulated time in microseconds (events are ordered exactly).
type Micros = u64;

pub fn simulate(config: &SimConfig, scheme: Scheme) -> SchemeResult {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut workers: Vec<Worker> = (0..config.workers + config.churn)
        .map(|i| Worker {
            host: i % config.hosts,
            total: rng.random_range(1..=config.max_slots),
            busy: 0,
            alive: i < config.workers,
            used_s: 0.0,
            since: 0.0,
        })
        .collect();
    let durations: HashMap<(usize, u64), f64> = (0..config.requests)
        .map(|i| ((i % config.clients, i as u64), rng.random_range(1.0..config.max_duration_s)))
        .collect();
    let mut events: BinaryHeap<Reverse<(Micros, Event)>> = BinaryHeap::new();
    for i in 0..config.requests {
        let at = rng.random_range(0.0..config.arrival_s);
        events.push(Reverse((micros(at), Event::Arrive { client: i % config.clients, request: i as u64 })));
    }
    for dying in 0..config.churn {
        events.push(Reverse((micros(config.arrival_s / 3.0), Event::WorkerDies(dying * 7 % config.workers))));
        events.push(Reverse((micros(config.arrival_s / 2.0), Event::WorkerJoins(config.workers + dying))));
    }

    let mut scheduler = scheme.scheduler(config.seed);
    for (i, worker) in workers.iter().enumerate().filter(|(_, w)| w.alive) {
        scheduler.update(&worker.load(i));
    }
    let mut queue = RequestQueue::default();
    let start = Instant::now(); // the queue stamps arrivals; waits are measured in sim time
    let mut arrived: HashMap<(usize, u64), f64> = HashMap::new();
    let mut running: HashMap<(usize, u64), usize> = HashMap::new();
    let mut waits: Vec<f64> = Vec::new();
    let (mut killed, mut makespan) = (0, 0.0f64);

    while let Some(Reverse((at, event))) = events.pop() {
        let now = at as f64 / 1e6;
        match event {
            Event::Arrive { client, request } => {
                arrived.insert((client, request), now);
                let job = JobRequest { request_id: request, n_cpu: 1, n_gpu: 0, class_name: "Sim".into() };
                queue.push(format!("c{client}"), job, start);
            }
            Event::Finish { worker, client, request } => {
                if running.remove(&(client, request)).is_some() {
                    let w = &mut workers[worker];
                    w.account(now);
                    w.busy -= 1;
                    scheduler.update(&w.load(worker));
                    makespan = makespan.max(now);
                }
            }
            Event::WorkerDies(index) => {
                let w = &mut workers[index];
                w.account(now);
                w.alive = false;
                scheduler.remove(&worker_id(index));
                let lost: Vec<(usize, u64)> =
                    running.iter().filter(|(_, &on)| on == index).map(|(job, _)| *job).collect();
                killed += lost.len();
                for job in lost {
                    running.remove(&job);
                }
                workers[index].busy = 0;
            }
            Event::WorkerJoins(index) => {
                let w = &mut workers[index];
                w.alive = true;
                w.since = now;
                scheduler.update(&w.load(index));
            }
        }
        // Serve as the master does: the oldest line head that a worker can take.
        loop {
            let next = queue
                .heads()
                .into_iter()
                .find_map(|(ticket, p)| scheduler.pick(&p.request).map(|w| (w, ticket)));
            let Some((worker, ticket)) = next else { break };
            let pending = queue.take(ticket).expect("a head");
            let index: usize = worker[1..].parse().expect("a simulated worker id");
            let client: usize = pending.client[1..].parse().expect("a simulated client id");
            let w = &mut workers[index];
            assert!(w.alive && w.busy < w.total, "{}: a slot counted twice on {worker}", scheme.name());
            w.account(now);
            w.busy += 1;
            scheduler.update(&w.load(index));
            scheduler.granted(&worker);
            let key = (client, pending.request.request_id);
            waits.push(now - arrived[&key]);
            running.insert(key, index);
            events.push(Reverse((
                micros(now + durations[&key]),
                Event::Finish { worker: index, client, request: key.1 },
            )));
        }
    }
    assert!(queue.is_empty(), "{}: {} requests never served", scheme.name(), queue.len());
    assert_eq!(waits.len(), config.requests, "{}: every request is served once", scheme.name());
    for w in &mut workers {
        w.account(makespan);
    }
    waits.sort_by(f64::total_cmp);
    SchemeResult {
        scheme: scheme.name(),
        makespan_s: makespan,
        mean_wait_s: waits.iter().sum::<f64>() / waits.len() as f64,
        p99_wait_s: waits[waits.len() * 99 / 100],
        max_wait_s: *waits.last().unwrap_or(&0.0),
        host_balance: host_balance(&workers, makespan),
        served: waits.len(),
        killed,
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
