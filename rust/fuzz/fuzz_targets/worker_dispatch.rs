//! The worker's dispatch on any sequence of events: its job socket (hellos, memory limits and
//! actors started from its jobs, or from anyone else, any message, garbage, closed
//! connections), its master's messages (kills, assignments, anything; the master lost and
//! restored), and its jobs' exits.
//!
//! The worker's real loop starts a Python process per slot; this must never start one (it
//! would be slow, and a fuzzed run must not leave processes behind), so
//! `parl_core::fuzz_support::Worker` replaces only the spawner with a stub: a job is a handle
//! whose kill is reported as a SIGKILL exit. Everything else is the real code (pool refills,
//! dispatch, exits). After every event the harness checks that the pool never exceeds its
//! slots, a job's memory baseline is taken once, a limit is only set for a job that said
//! hello, an actor's start is reported once and only for a job that said hello, exits are
//! reported once, and everything sent on the job socket decodes.

#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use parl_core::fuzz_support::{block_on, peer, Worker};
use parl_core::protocol::{encode, JobAssignment, JobHello, MemoryLimit, Message};

#[derive(Arbitrary, Debug)]
struct Input {
    cpu_num: u8,
    gpus: u8,
    ops: Vec<Op>,
}

/// `job` picks one of the worker's current jobs, or (one value in n+1) a job it does not have.
#[derive(Arbitrary, Debug)]
enum Op {
    /// A job announces itself on the job socket (from any connection).
    Hello {
        peer: u8,
        job: u8,
        pid: u32,
    },
    /// A job sets its actor's memory limit (from any connection).
    Limit {
        peer: u8,
        job: u8,
        max_bytes: u64,
    },
    /// A job says its actor started (from any connection).
    Started {
        peer: u8,
        job: u8,
    },
    /// Any message on the job socket, with payload frames.
    Any {
        peer: u8,
        message: Message,
        payload: Vec<Vec<u8>>,
    },
    /// Raw frames on the job socket.
    Raw {
        peer: u8,
        frames: Vec<Vec<u8>>,
    },
    /// A connection to the job socket closed.
    Gone {
        peer: u8,
    },
    /// The master ends a job.
    Kill {
        job: u8,
    },
    /// The master granted a job to a client's actor.
    Assign {
        job: u8,
        client: u8,
        gpus: u8,
    },
    /// Any message from the master.
    FromMaster(Message),
    MasterLost,
    MasterRestored,
    /// A job process ends by itself.
    Died {
        job: u8,
    },
    /// The memory watch finds a job over its limit.
    OverLimit {
        job: u8,
    },
    /// The worker learns of the exits so far (killed jobs included).
    Reap,
    /// The pool's refill tick.
    Refill,
}

fn job_id(worker: &Worker, n: u8) -> String {
    let ids = worker.job_ids();
    ids.get(n as usize % (ids.len() + 1)).cloned().unwrap_or_else(|| "w-fuzz-unknown".to_string())
}

fn peer_of(n: u8) -> Bytes {
    peer(n % 4)
}

fuzz_target!(|input: Input| {
    block_on(async {
        let mut worker = Worker::new(u32::from(input.cpu_num % 5), u32::from(input.gpus % 3));
        for op in input.ops {
            match op {
                Op::Hello { peer, job, pid } => {
                    let hello =
                        JobHello { job_id: job_id(&worker, job), address: "tcp://127.0.0.1:9".into(), pid };
                    worker.job_socket(peer_of(peer), encode(&Message::JobHello(hello), Vec::new())).await;
                }
                Op::Limit { peer, job, max_bytes } => {
                    let limit = MemoryLimit { job_id: job_id(&worker, job), max_bytes };
                    worker.job_socket(peer_of(peer), encode(&Message::MemoryLimit(limit), Vec::new())).await;
                }
                Op::Started { peer, job } => {
                    let started = Message::ActorStarted { job_id: job_id(&worker, job) };
                    worker.job_socket(peer_of(peer), encode(&started, Vec::new())).await;
                }
                Op::Any { peer, message, payload } => {
                    let payload = payload.into_iter().map(Bytes::from).collect();
                    worker.job_socket(peer_of(peer), encode(&message, payload)).await;
                }
                Op::Raw { peer, frames } => {
                    worker.job_socket(peer_of(peer), frames.into_iter().map(Bytes::from).collect()).await;
                }
                Op::Gone { peer } => worker.job_socket_gone(peer_of(peer)).await,
                Op::Kill { job } => {
                    let job_id = job_id(&worker, job);
                    worker.from_master(Message::KillJob { job_id, reason: "its client left".into() });
                }
                Op::Assign { job, client, gpus } => {
                    let assignment = JobAssignment {
                        job_id: job_id(&worker, job),
                        client_id: format!("c{}", client % 3),
                        gpus: (0..gpus % 3).map(|g| g.to_string()).collect(),
                    };
                    worker.from_master(Message::JobAssigned(assignment));
                }
                Op::FromMaster(message) => worker.from_master(message),
                Op::MasterLost => worker.master_lost(),
                Op::MasterRestored => worker.master_restored(),
                Op::Died { job } => {
                    let job_id = job_id(&worker, job);
                    worker.job_died(&job_id, "exited with status 1");
                }
                Op::OverLimit { job } => {
                    let job_id = job_id(&worker, job);
                    worker.over_limit(&job_id);
                }
                Op::Reap => worker.reap().await,
                Op::Refill => worker.refill(),
            }
            worker.check();
        }
    });
});
