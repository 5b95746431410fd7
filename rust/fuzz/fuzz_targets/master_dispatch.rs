//! The master core on any sequence of events from several peers: well-formed messages whose
//! ids refer to each other (workers, their jobs, clients and their requests), any message of
//! the protocol, raw garbage frames, closed connections, and the liveness tick at a time that
//! moves on. The real code runs: frames go through the real decoder (as the socket task does)
//! into `parl_core::master::core::MasterCore`, the master's whole state and dispatch, with the
//! scheme and its seed drawn by the fuzzer. After every event the core's invariants are
//! checked (no slot counted twice, no job lost, no GPU held twice, the queue served whenever
//! it can be...), and everything the master sends must encode and decode. No panic, whatever
//! the peers send.

#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use parl_core::master::core::{CoreConfig, Effect, Event, MasterCore};
use parl_core::master::scheduler::Scheme;
use parl_core::protocol::{
    decode, encode, ClientHello, ClientStats, ExitCause, JobAssignment, JobExit, JobInfo, JobRequest,
    JobUsage, Message, WorkerHello, WorkerStats,
};

#[derive(Arbitrary, Debug)]
struct Input {
    gpu_cluster: bool,
    /// The placement scheme (an index into `Scheme::ALL`) and its seed.
    scheme: u8,
    seed: u64,
    /// The master's default high-water mark (0: none).
    hwm: u8,
    /// The cluster's Python: "", "3.11" or "3.12".
    python: u8,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// A well-formed message whose ids come from small sets, so that messages meet.
    Send { peer: u8, message: Msg },
    /// Any message of the protocol, with payload frames.
    Any { peer: u8, message: Message, payload: Vec<Vec<u8>> },
    /// Raw frames: garbage, truncated headers, other versions.
    Raw { peer: u8, frames: Vec<Vec<u8>> },
    /// The peer's connection closed.
    Gone { peer: u8 },
    /// The liveness tick; `expire`: as if every peer had been silent past the timeout.
    Tick { expire: bool },
    /// The cluster is stopped on purpose.
    StopCluster,
    /// The HTTP endpoint asks for the status.
    Status,
    /// The HTTP endpoint asks where a job's log is.
    LogLocation { job: u8 },
    /// The monitor's views and metrics (of job `job`, events after `after`).
    Monitor { job: u8, after: u8 },
}

#[derive(Arbitrary, Debug)]
enum Msg {
    Heartbeat,
    StatusRequest,
    Disconnect,
    RegisterWorker {
        worker: u8,
        cpus: u8,
        gpus: u8,
        same_version: bool,
        python: u8,
        hwm: u8,
    },
    RegisterClient {
        client: u8,
        same_version: bool,
    },
    JobReady {
        job: u8,
    },
    JobBusy {
        job: u8,
        client: u8,
        gpus: Vec<u8>,
    },
    JobExited {
        job: u8,
        expected: bool,
        cause: ExitCause,
    },
    /// A worker's report on its jobs `j{n % 8}` (any counters, any text).
    WorkerStats {
        memory_total: u64,
        memory_used: u64,
        load1: f64,
        jobs: Vec<(u8, Option<u64>, u64, u64, Option<String>)>,
    },
    ClientStats(ClientStats),
    ActorStarted {
        job: u8,
    },
    /// `pinned`: only worker `w{pinned % 5}` will do (w4 never registers).
    RequestJob {
        request: u8,
        n_gpu: u8,
        pinned: Option<u8>,
    },
    CancelRequest {
        request: u8,
    },
    ReturnJob {
        job: u8,
    },
}

fn python(n: u8) -> String {
    ["", "3.11", "3.12"][n as usize % 3].to_string()
}

fn version(same: bool) -> String {
    if same {
        parl_core::VERSION.to_string()
    } else {
        "0.0.1".to_string()
    }
}

fn job(n: u8) -> String {
    format!("j{}", n % 8)
}

fn gpu(n: u8) -> String {
    (n % 9).to_string()
}

impl Msg {
    fn message(self) -> Message {
        match self {
            Msg::Heartbeat => Message::Heartbeat,
            Msg::StatusRequest => Message::StatusRequest,
            Msg::Disconnect => Message::Disconnect,
            Msg::RegisterWorker { worker, cpus, gpus, same_version, python: py, hwm } => {
                Message::RegisterWorker(WorkerHello {
                    worker_id: format!("w{}", worker % 4),
                    hostname: "host".into(),
                    pid: 1,
                    cpu_num: u32::from(cpus % 5),
                    gpus: (0..gpus % 10).map(gpu).collect(),
                    version: version(same_version),
                    python_version: python(py),
                    log_address: format!("host:{}", worker % 4),
                    hwm: u32::from(hwm % 4),
                })
            }
            Msg::RegisterClient { client, same_version } => Message::RegisterClient(ClientHello {
                client_id: format!("c{}", client % 4),
                hostname: "host".into(),
                pid: 2,
                version: version(same_version),
                script: "train.py".into(),
            }),
            Msg::JobReady { job: j } => Message::JobReady(info(j)),
            Msg::JobBusy { job: j, client, gpus } => Message::JobBusy {
                info: info(j),
                assignment: JobAssignment {
                    job_id: job(j),
                    client_id: format!("c{}", client % 4),
                    gpus: gpus.into_iter().take(10).map(gpu).collect(),
                },
            },
            Msg::JobExited { job: j, expected, cause } => Message::JobExited(JobExit {
                job_id: job(j),
                status: "exited with status 0".into(),
                expected,
                cause,
                calls: u64::from(j),
                failures: u64::from(expected),
            }),
            Msg::WorkerStats { memory_total, memory_used, load1, jobs } => {
                Message::WorkerStats(WorkerStats {
                    memory_total,
                    memory_used,
                    load1,
                    jobs: jobs
                        .into_iter()
                        .map(|(j, memory_bytes, calls, failures, last_error)| JobUsage {
                            job_id: job(j),
                            memory_bytes,
                            calls,
                            failures,
                            last_error,
                        })
                        .collect(),
                })
            }
            Msg::ClientStats(stats) => Message::ClientStats(stats),
            Msg::RequestJob { request, n_gpu, pinned } => Message::RequestJob(JobRequest {
                request_id: u64::from(request % 8),
                n_cpu: u32::from(n_gpu == 0),
                n_gpu: u32::from(n_gpu % 10),
                class_name: "Actor".into(),
                on_worker: pinned.map(|w| format!("w{}", w % 5)),
            }),
            Msg::ActorStarted { job: j } => Message::ActorStarted { job_id: job(j) },
            Msg::CancelRequest { request } => Message::CancelRequest { request_id: u64::from(request % 8) },
            Msg::ReturnJob { job: j } => Message::ReturnJob { job_id: job(j) },
        }
    }
}

fn info(j: u8) -> JobInfo {
    JobInfo { job_id: job(j), address: format!("tcp://host:{}", 1000 + u32::from(j % 8)), pid: 3 }
}

/// Peers 0..6: enough for several workers and clients, and for re-registrations under a new
/// connection.
fn peer_of(n: u8) -> Bytes {
    Bytes::from(vec![b'p', n % 6])
}

fn frames(payload: Vec<Vec<u8>>) -> Vec<Bytes> {
    payload.into_iter().map(Bytes::from).collect()
}

/// What the master's socket task hands its loop for these frames.
fn received(peer: Bytes, frames: Vec<Bytes>) -> Event {
    match decode(frames) {
        Ok(envelope) => Event::Message { peer, message: envelope.message },
        Err(error) => Event::Malformed { peer, error },
    }
}

fn config(input: &Input) -> CoreConfig {
    CoreConfig {
        gpu_cluster: input.gpu_cluster,
        python_version: python(input.python),
        scheme: Scheme::ALL[input.scheme as usize % Scheme::ALL.len()],
        seed: input.seed,
        hwm: u32::from(input.hwm % 4),
        ..CoreConfig::new("fuzz-master:1")
    }
}

/// A peer must never be sent what it cannot read.
fn check_sent(effects: Vec<Effect>) {
    for Effect::Send { message, .. } in effects {
        if let Err(e) = decode(encode(&message, Vec::new())) {
            panic!("the master sent a {} that does not decode: {e}", message.kind());
        }
    }
}

fuzz_target!(|input: Input| {
    let mut now = Instant::now();
    let mut master = MasterCore::new(config(&input), now);
    for op in input.ops {
        // Time moves on between events; an expiring tick comes long after the last event.
        now += Duration::from_millis(1);
        let event = match op {
            Op::Send { peer, message } => received(peer_of(peer), encode(&message.message(), Vec::new())),
            Op::Any { peer, message, payload } => received(peer_of(peer), encode(&message, frames(payload))),
            Op::Raw { peer, frames: raw } => received(peer_of(peer), frames(raw)),
            Op::Gone { peer } => Event::PeerGone { peer: peer_of(peer) },
            Op::Tick { expire } => {
                if expire {
                    now += Duration::from_secs(3600);
                }
                Event::Tick
            }
            Op::StopCluster => Event::StopCluster,
            Op::Status => {
                let _ = master.status();
                continue;
            }
            Op::LogLocation { job: j } => {
                let _ = master.log_location(&job(j));
                continue;
            }
            Op::Monitor { job: j, after } => {
                let cluster = master.cluster_view(now);
                let actors = master.actors_view(now);
                let _ = master.actor_view(&job(j), now);
                let _ = master.events_view(u64::from(after));
                let _ = master.history_view(now);
                let metrics = parl_core::master::monitor::metrics::encode(&cluster, master.monitor_totals());
                assert!(metrics.is_ok(), "the metrics must encode: {metrics:?}");
                // Everything the page reads must be valid JSON.
                serde_json::to_string(&cluster).expect("the cluster view is JSON");
                serde_json::to_string(&actors).expect("the actors view is JSON");
                continue;
            }
        };
        check_sent(master.handle(event, now));
        master.check_invariants();
    }
});
