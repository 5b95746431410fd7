//! The master core driven with plain events and made-up times: no socket, no clock.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{CoreConfig, Effect, Event, MasterCore};
use crate::config::HeartbeatConfig;
use crate::master::scheduler::Scheme;
use crate::protocol::{
    ClientHello, ClientStats, ClusterStatus, ExitCause, JobAssignment, JobExit, JobGrant, JobInfo,
    JobRequest, JobUsage, Message, WorkerHello, WorkerStats,
};
use crate::transport::PeerId;
use crate::VERSION;

fn config(gpu_cluster: bool, scheme: Scheme, seed: u64) -> CoreConfig {
    CoreConfig { gpu_cluster, scheme, seed, ..CoreConfig::new("master:1") }
}

/// A core, the time it has reached, and everything it sent.
struct Master {
    core: MasterCore,
    now: Instant,
    sent: Vec<Effect>,
}

impl Master {
    fn new(gpu_cluster: bool) -> Master {
        Master::with(config(gpu_cluster, Scheme::LeastLoad, 1))
    }

    fn with(config: CoreConfig) -> Master {
        let now = Instant::now();
        Master { core: MasterCore::new(config, now), now, sent: Vec::new() }
    }

    fn event(&mut self, event: Event) -> Vec<Effect> {
        let effects = self.core.handle(event, self.now);
        self.core.check_invariants();
        self.sent.extend(effects.iter().cloned());
        effects
    }

    fn send(&mut self, peer: &PeerId, message: Message) -> Vec<Effect> {
        self.event(Event::Message { peer: peer.clone(), message })
    }

    fn status(&self) -> ClusterStatus {
        self.core.status()
    }

    fn pending(&self) -> u32 {
        self.status().pending_requests
    }

    /// The grants sent so far, in order.
    fn grants(&self) -> Vec<JobGrant> {
        let grant = |effect: &Effect| match effect {
            Effect::Send { message: Message::JobGranted(grant), .. } => Some(grant.clone()),
            _ => None,
        };
        self.sent.iter().filter_map(grant).collect()
    }
}

fn peer(n: u8) -> PeerId {
    Bytes::from(vec![b'p', n])
}

fn client(id: &str) -> Message {
    Message::RegisterClient(ClientHello {
        client_id: id.into(),
        hostname: "h".into(),
        pid: 2,
        version: VERSION.into(),
        script: "train.py".into(),
    })
}

fn worker(id: &str, cpus: u32) -> Message {
    gpu_worker(id, cpus, 0)
}

fn gpu_worker(id: &str, cpus: u32, gpus: u32) -> Message {
    Message::RegisterWorker(WorkerHello {
        worker_id: id.into(),
        hostname: "h".into(),
        pid: 1,
        cpu_num: cpus,
        gpus: (0..gpus).map(|g| g.to_string()).collect(),
        version: VERSION.into(),
        python_version: String::new(),
        log_address: "h:1".into(),
        hwm: 0,
    })
}

fn ready(job_id: &str) -> Message {
    Message::JobReady(JobInfo { job_id: job_id.into(), address: "tcp://h:1".into(), pid: 3 })
}

fn request(request_id: u64, n_gpu: u32) -> Message {
    Message::RequestJob(JobRequest {
        request_id,
        n_cpu: u32::from(n_gpu == 0),
        n_gpu,
        class_name: "A".into(),
        on_worker: None,
    })
}

fn exited(job_id: &str) -> Message {
    Message::JobExited(JobExit {
        job_id: job_id.into(),
        status: "exited with status 0".into(),
        expected: true,
        cause: ExitCause::Released,
        calls: 0,
        failures: 0,
    })
}

/// Found by the master_dispatch fuzz target: a connection registered as one client and then
/// as another left the first bound to nothing (its jobs ended when its heartbeats expired).
#[test]
fn a_connection_registers_as_one_peer_only() {
    let mut master = Master::new(false);
    master.send(&peer(0), client("c0"));
    master.send(&peer(0), client("c0"));
    master.send(&peer(0), client("c3"));
    master.send(&peer(0), worker("w0", 1));
    let status = master.status();
    let clients: Vec<_> = status.clients.iter().map(|c| c.client_id.as_str()).collect();
    assert_eq!((clients, status.workers.len()), (vec!["c0"], 0));
}

/// Found by the master_dispatch fuzz target: the queue was served only when a job became
/// ready or a request came, so a request that waited behind another (FIFO) kept waiting after
/// the one before it was cancelled, its client left, its worker left or GPUs came back, until
/// some unrelated job became ready, or its client gave up. Requests of another kind of demand
/// no longer wait behind one that cannot be served.
#[test]
fn the_queue_is_served_as_soon_as_its_oldest_request_can_be() {
    let (w, c, d) = (peer(0), peer(1), peer(2));
    let mut master = Master::new(true);
    master.send(&w, gpu_worker("w", 0, 2));
    for job in ["j1", "j2", "j3"] {
        master.send(&w, ready(job));
    }
    master.send(&c, client("c"));
    master.send(&d, client("d"));
    master.send(&c, request(1, 1));
    master.send(&c, request(2, 2));
    master.send(&d, request(1, 1));
    assert_eq!(master.pending(), 1, "d's 1-GPU request passes c's 2-GPU one");
    master.send(&c, Message::CancelRequest { request_id: 2 });
    assert_eq!(master.pending(), 0);

    // The same when the request before it leaves with its client, or when GPUs come back.
    master.send(&c, request(3, 1));
    master.send(&d, request(2, 1));
    assert_eq!(master.pending(), 2, "no GPU free");
    master.event(Event::PeerGone { peer: c.clone() });
    master.send(&w, exited("j1"));
    assert_eq!(master.pending(), 0);
}

/// Found by the master_dispatch fuzz target: a request queued before any worker joined waited
/// out its timeout when the workers that joined had too few GPUs (a request is refused at
/// once when it comes after them), and a worker registering again with more GPUs did not
/// serve the queue.
#[test]
fn a_worker_joining_refuses_or_serves_waiting_requests() {
    let (w, c) = (peer(0), peer(1));
    let mut master = Master::new(true);
    master.send(&c, client("c"));
    master.send(&c, request(1, 2));
    assert_eq!(master.pending(), 1, "waits for a worker");
    master.send(&w, gpu_worker("w", 0, 1));
    assert_eq!(master.pending(), 0, "refused: no worker has 2 GPUs");

    master.send(&w, ready("j1"));
    master.send(&w, ready("j2"));
    master.send(&c, request(2, 1));
    master.send(&c, request(3, 1));
    assert_eq!(master.pending(), 1, "the only GPU is taken");
    master.send(&peer(2), gpu_worker("w", 0, 2));
    assert_eq!(master.pending(), 0, "served by the GPU w came back with");
}

/// A worker's second report about a busy job (after a master restart) replaces the first, and
/// the GPUs it no longer holds serve the queue at once.
#[test]
fn a_busy_report_that_frees_gpus_serves_the_queue() {
    let (w, c) = (peer(0), peer(1));
    let busy = |gpus: &[&str]| {
        let info = JobInfo { job_id: "j1".into(), address: "tcp://h:1".into(), pid: 3 };
        let gpus = gpus.iter().map(|g| g.to_string()).collect();
        Message::JobBusy {
            info,
            assignment: JobAssignment { job_id: "j1".into(), client_id: "c".into(), gpus },
        }
    };
    let mut master = Master::new(true);
    master.send(&w, gpu_worker("w", 0, 1));
    master.send(&w, busy(&["0"]));
    master.send(&w, ready("j2"));
    master.send(&c, client("c"));
    master.send(&c, request(1, 1));
    assert_eq!(master.pending(), 1, "j1 holds the only GPU");
    master.send(&w, busy(&[]));
    assert_eq!(master.pending(), 0);
}

/// The placement chooses the GPU ids: the grant, the worker's assignment and the registry
/// agree, and ids come back when their job ends.
#[test]
fn the_placement_chooses_the_gpus_and_the_worker_is_told_the_same() {
    let (w, c) = (peer(0), peer(1));
    let mut master = Master::new(true);
    master.send(&w, gpu_worker("w", 0, 4));
    for job in ["j1", "j2", "j3"] {
        master.send(&w, ready(job));
    }
    master.send(&c, client("c"));
    let effects = master.send(&c, request(1, 2));
    let assigned = effects.iter().find_map(|effect| match effect {
        Effect::Send { to, message: Message::JobAssigned(a) } if *to == w => Some(a.gpus.clone()),
        _ => None,
    });
    assert_eq!(assigned, Some(vec!["0".to_string(), "1".to_string()]));
    master.send(&c, request(2, 2));
    let gpus: Vec<Vec<String>> = master.grants().into_iter().map(|g| g.gpus).collect();
    assert_eq!(gpus, [["0", "1"], ["2", "3"]]);
    master.send(&w, exited("j1"));
    master.send(&c, request(3, 1));
    assert_eq!(master.grants()[2].gpus, ["0"], "the first id that came back");
}

/// Time is an input: peers silent past the heartbeat timeout are dropped by the tick at that
/// (made-up) time, not before, and their clients are told their actors died.
#[test]
fn the_tick_drops_peers_by_the_time_it_is_given() {
    let (w, c) = (peer(0), peer(1));
    let mut master = Master::new(false);
    master.send(&w, worker("w", 1));
    master.send(&w, ready("j1"));
    master.send(&c, client("c"));
    master.send(&c, request(1, 0));
    let timeout = HeartbeatConfig::default().timeout;
    master.now += timeout;
    master.send(&c, Message::Heartbeat);
    assert!(master.event(Event::Tick).is_empty(), "exactly the timeout is not yet past it");
    master.now += Duration::from_millis(1);
    let effects = master.event(Event::Tick);
    let died =
        |effect: &Effect| matches!(effect, Effect::Send { to, message: Message::ActorDied(_) } if *to == c);
    assert!(effects.iter().any(died), "{effects:?}");
    let status = master.status();
    assert_eq!((status.workers.len(), status.clients.len()), (0, 1), "the client spoke within the timeout");
}

/// Randomness is an input: a random scheme with the same seed, given the same events, makes
/// the same placements (and the effects are the same, in the same order).
#[test]
fn the_same_events_and_seed_give_the_same_effects() {
    let run = |seed: u64| {
        let mut master = Master::with(config(false, Scheme::PlainRandom, seed));
        master.send(&peer(9), client("c"));
        for n in 0..8u8 {
            master.send(&peer(n), worker(&format!("w{n}"), 4));
            for j in 0..4 {
                master.send(&peer(n), ready(&format!("w{n}-{j}")));
            }
        }
        for request_id in 0..16 {
            master.send(&peer(9), request(request_id, 0));
        }
        master.event(Event::PeerGone { peer: peer(9) });
        master.sent
    };
    assert_eq!(run(7), run(7));
    let workers = |sent: Vec<Effect>| -> Vec<String> {
        sent.into_iter()
            .filter_map(|effect| match effect {
                Effect::Send { message: Message::JobGranted(grant), .. } => Some(grant.worker_id),
                _ => None,
            })
            .collect()
    };
    assert_ne!(workers(run(7)), workers(run(8)), "another seed, other draws");
}

/// Stopping the cluster tells every worker, and nobody else.
#[test]
fn stopping_the_cluster_tells_every_worker() {
    let mut master = Master::new(false);
    master.send(&peer(0), worker("w0", 1));
    master.send(&peer(1), worker("w1", 1));
    master.send(&peer(2), client("c"));
    let told: Vec<PeerId> = master
        .event(Event::StopCluster)
        .into_iter()
        .map(|effect| match effect {
            Effect::Send { to, message: Message::ClusterStopped { .. } } => to,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(told.len(), 2);
    assert!(told.contains(&peer(0)) && told.contains(&peer(1)));
}

/// A worker's high-water mark: with one grant in flight, the next request waits until the
/// worker says that actor started; every scheme honours it.
#[test]
fn a_request_waits_for_the_worker_below_its_high_water_mark() {
    for scheme in Scheme::ALL {
        let (w, c) = (peer(0), peer(1));
        let mut master = Master::with(CoreConfig { hwm: 1, ..config(false, scheme, 3) });
        master.send(&w, worker("w", 3));
        for job in ["j1", "j2", "j3"] {
            master.send(&w, ready(job));
        }
        master.send(&c, client("c"));
        master.send(&c, request(1, 0));
        master.send(&c, request(2, 0));
        assert_eq!((master.grants().len(), master.pending()), (1, 1), "{}", scheme.name());
        let first = master.grants()[0].job_id.clone();
        master.send(&c, Message::ActorStarted { job_id: first.clone() });
        assert_eq!(master.pending(), 1, "{}: a client cannot say it", scheme.name());
        master.send(&w, Message::ActorStarted { job_id: first });
        assert_eq!((master.grants().len(), master.pending()), (2, 0), "{}", scheme.name());
        let status = master.status();
        assert_eq!((status.workers[0].starting, status.workers[0].hwm), (1, 1));
    }
}

fn pinned(request_id: u64, worker: &str) -> Message {
    Message::RequestJob(JobRequest {
        request_id,
        n_cpu: 1,
        n_gpu: 0,
        class_name: "A".into(),
        on_worker: Some(worker.into()),
    })
}

fn refused(effects: &[Effect]) -> Vec<String> {
    let reason = |effect: &Effect| match effect {
        Effect::Send { message: Message::RequestFailed { reason, .. }, .. } => Some(reason.clone()),
        _ => None,
    };
    effects.iter().filter_map(reason).collect()
}

/// A request pinned to a worker (a task's `follow`) is served by that worker only, waits for
/// it while it is busy, and is refused when it is not, or no longer, in the cluster.
#[test]
fn a_pinned_request_is_served_by_its_worker_only_and_refused_when_it_is_gone() {
    let (a, b, c) = (peer(0), peer(1), peer(2));
    let mut master = Master::new(false);
    master.send(&a, worker("wa", 1));
    master.send(&a, ready("a1"));
    master.send(&b, worker("wb", 2));
    master.send(&b, ready("b1"));
    master.send(&c, client("c"));
    master.send(&c, pinned(1, "wa"));
    master.send(&c, pinned(2, "wa"));
    let workers: Vec<String> = master.grants().into_iter().map(|g| g.worker_id).collect();
    assert_eq!((workers, master.pending()), (vec!["wa".to_string()], 1), "wb is free but not wa");
    let why = refused(&master.send(&c, pinned(3, "gone")));
    assert!(why[0].contains("worker gone, which is not in the cluster"), "{why:?}");
    let why = refused(&master.event(Event::PeerGone { peer: a.clone() }));
    assert!(why[0].contains("worker wa"), "the waiting one is refused with its worker: {why:?}");
    assert_eq!(master.pending(), 0);
}

fn died(job_id: &str, cause: ExitCause) -> Message {
    Message::JobExited(JobExit {
        job_id: job_id.into(),
        status: "was killed by signal 9 (SIGKILL)".into(),
        expected: false,
        cause,
        calls: 9,
        failures: 0,
    })
}

fn usage(jobs: &[(&str, u64, u64)]) -> Message {
    let jobs = jobs
        .iter()
        .map(|(job_id, calls, failures)| JobUsage {
            job_id: job_id.to_string(),
            memory_bytes: Some(50 << 20),
            calls: *calls,
            failures: *failures,
            last_error: (*failures > 0).then(|| "builtins.ValueError: bad".to_string()),
        })
        .collect();
    Message::WorkerStats(WorkerStats { memory_total: 8 << 30, memory_used: 2 << 30, load1: 0.5, jobs })
}

/// The monitor's views follow grants, starts, reports, deaths and counters, with the times
/// the core was given; a worker reports only on its own jobs.
#[test]
fn the_monitor_sees_grants_reports_deaths_and_counters() {
    let mut m = Master::with(CoreConfig { started_unix: 1_000.0, ..config(false, Scheme::LeastLoad, 1) });
    let (w1, w2, c) = (peer(1), peer(2), peer(3));
    m.send(&w1, worker("w1", 2));
    m.send(&w2, worker("w2", 1));
    for (from, job) in [(&w1, "w1-1"), (&w1, "w1-2"), (&w2, "w2-1")] {
        m.send(from, ready(job));
    }
    m.send(&c, client("c1"));
    for id in 1..=3 {
        m.send(&c, request(id, 0));
    }
    let jobs: Vec<String> = m.grants().into_iter().map(|g| g.job_id).collect();
    assert_eq!(jobs.len(), 3);
    m.send(&w1, Message::ActorStarted { job_id: "w1-1".into() });
    m.now += Duration::from_secs(5);
    m.send(&w1, usage(&[("w1-1", 7, 1), ("w2-1", 99, 0)]));
    m.send(&w2, died("w2-1", ExitCause::Signal));
    let stats = ClientStats { calls: 7, tasks_submitted: 4, tasks_done: 3, tasks_failed: 1, tasks_queued: 0 };
    m.send(&c, Message::ClientStats(stats));
    m.event(Event::Tick);

    let view = m.core.cluster_view(m.now);
    assert_eq!((view.started_at, view.now, view.uptime_s), (1_000.0, 1_005.0, 5.0));
    let t = &view.totals;
    assert_eq!((t.workers, t.clients, t.cpu_total, t.cpu_used, t.actors), (2, 1, 3, 2, 2));
    assert_eq!((t.calls, t.tasks_done, t.tasks_failed, t.deaths), (7, 3, 1, 1));
    assert_eq!(view.workers[0].memory_used, Some(2 << 30));
    assert_eq!(view.workers[1].memory_used, None, "w2 sent no report");
    assert_eq!(view.clients[0].script, "train.py");
    assert_eq!(view.clients[0].uptime_s, 5.0);

    let actors = m.core.actors_view(m.now).actors;
    let state = |job: &str| actors.iter().find(|a| a.job_id == job).map(|a| (a.state.clone(), a.calls));
    assert_eq!(state("w1-1"), Some(("running".into(), 7)));
    assert_eq!(state("w1-2"), Some(("starting".into(), 0)));
    // w1 reported on w2's job: ignored. w2-1 died of a signal, its last count with its exit.
    assert_eq!(state("w2-1"), Some(("ended".into(), 9)));
    let dead = m.core.actor_view("w2-1", m.now).unwrap();
    assert_eq!(dead.cause.as_deref(), Some("signal"));
    assert_eq!(actors[0].last_error.as_deref(), Some("builtins.ValueError: bad"));

    let events = m.core.events_view(0);
    let kinds: Vec<&str> = events.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["worker_joined", "worker_joined", "client_joined", "job_died"]);
    assert_eq!(events.events[3].cause.as_deref(), Some("signal"));
    assert!(m.core.events_view(events.next).events.is_empty());

    let history = m.core.history_view(m.now);
    assert_eq!(history.cluster.calls.iter().sum::<u64>(), 7);
    assert_eq!(history.cluster.deaths.iter().sum::<u64>(), 1);
    assert_eq!(history.cluster.actors.last(), Some(&2));
    assert_eq!(history.workers["w1"].cpu_used.last(), Some(&Some(2)));

    let text = crate::master::monitor::metrics::encode(&view, m.core.monitor_totals()).unwrap();
    for line in [
        "parl_rs_cpu_slots{state=\"used\"} 2",
        "parl_rs_job_deaths_total{cause=\"signal\"} 1",
        "parl_rs_tasks_total{outcome=\"done\"} 3",
        "parl_rs_calls_total 7",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} is not in\n{text}");
    }
}

/// A peer's long names are cut before the monitor keeps or shows them.
#[test]
fn the_monitor_keeps_peers_names_short() {
    use crate::master::monitor::MAX_NAME_TEXT;
    let mut m = Master::new(false);
    let (w, c) = (peer(1), peer(2));
    m.send(&w, worker("w1", 1));
    m.send(&w, ready("w1-1"));
    let long = "x".repeat(100_000);
    m.send(
        &c,
        Message::RegisterClient(ClientHello {
            client_id: "c1".into(),
            hostname: "h".into(),
            pid: 2,
            version: VERSION.into(),
            script: long.clone(),
        }),
    );
    let mut asked = JobRequest { request_id: 1, n_cpu: 1, n_gpu: 0, class_name: long, on_worker: None };
    asked.class_name.push('!');
    m.send(&c, Message::RequestJob(asked));
    let view = m.core.cluster_view(m.now);
    assert!(view.clients[0].script.len() <= MAX_NAME_TEXT + 3);
    assert!(m.core.actors_view(m.now).actors[0].class_name.len() <= MAX_NAME_TEXT + 3);
    assert!(m.core.events_view(0).events.iter().all(|e| e.message.len() < 1_000));
}

/// A client's counters add to the totals only what grew, and stay counted after it leaves;
/// the events say who left and who was lost.
#[test]
fn counters_outlive_their_client_and_departures_are_events() {
    let mut m = Master::new(false);
    let (w, c) = (peer(1), peer(2));
    m.send(&w, worker("w1", 1));
    m.send(&c, client("c1"));
    let stats = |calls| ClientStats { calls, ..ClientStats::default() };
    m.send(&c, Message::ClientStats(stats(5)));
    m.send(&c, Message::ClientStats(stats(8)));
    m.send(&c, Message::ClientStats(stats(2))); // never taken off
    m.send(&c, Message::Disconnect);
    m.event(Event::PeerGone { peer: w });
    assert_eq!(m.core.cluster_view(m.now).totals.calls, 8);
    let kinds: Vec<String> = m.core.events_view(0).events.into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["worker_joined", "client_joined", "client_left", "worker_lost"]);
}
