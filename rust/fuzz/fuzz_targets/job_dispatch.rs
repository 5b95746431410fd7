//! The job runtime's dispatch on any sequence of events from several clients: inits (with or
//! without files to ship, memory limits, GPUs), calls, shipped bundles (intact or forged),
//! releases, any message, garbage, closed connections; and the host language taking requests
//! and answering them. The real code runs (`parl_core::fuzz_support::Job`: socket task,
//! decoder, `JobLoop::on_event`, the bundle cache in a temp folder, `JobRuntime`). After every
//! event: only the client that owns the job has requests in flight, requests are only held for
//! an owned job, the job tells its worker at most once (under its own id) that its actor
//! started, and everything the job sent decodes.

#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use parl_core::fuzz_support::{block_on, peer, Job};
use parl_core::protocol::{
    encode, ActorRequest, ActorResources, CallKind, Encoding, FileBundle, InitSpec, Message, ShippedFile,
};

#[derive(Arbitrary, Debug)]
struct Input {
    /// Whether the job's worker has a bundle cache.
    bundle_cache: bool,
    /// Bundles the clients may ship, named by index.
    bundles: Vec<Vec<(Path, Vec<u8>)>>,
    ops: Vec<Op>,
}

/// A shipped file's path: mostly plausible ones, sometimes anything (absolute, "..", empty).
#[derive(Arbitrary, Debug)]
enum Path {
    File(u8),
    Nested(u8, u8),
    Folder(u8),
    Any(String),
}

impl Path {
    fn path(self) -> String {
        match self {
            Path::File(n) => format!("f{}.py", n % 4),
            Path::Nested(d, n) => format!("d{}/f{}.py", d % 3, n % 4),
            Path::Folder(d) => format!("d{}/", d % 3),
            Path::Any(path) => path,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// An `Init` naming a bundle (or none), with resources.
    Init {
        peer: u8,
        request_id: u64,
        bundle: Option<u8>,
        log_to_driver: bool,
        max_memory: Option<u64>,
        gpus: u8,
    },
    /// A call, attribute read or write.
    Call {
        peer: u8,
        request_id: u64,
        op: u8,
        name: String,
        payload: Vec<Vec<u8>>,
    },
    /// A client ships a bundle; `forged`: with contents that do not match its hash.
    Ship {
        peer: u8,
        bundle: u8,
        forged: bool,
    },
    Release {
        peer: u8,
    },
    /// Any message, with payload frames.
    Any {
        peer: u8,
        message: Message,
        payload: Vec<Vec<u8>>,
    },
    /// Raw frames.
    Raw {
        peer: u8,
        frames: Vec<Vec<u8>>,
    },
    /// A client's connection closed.
    Gone {
        peer: u8,
    },
    /// The host language takes the next request.
    Take,
    /// The host language answers one of the requests it took (or an id it never had).
    Reply {
        which: u8,
        failed: bool,
        payload: Vec<Vec<u8>>,
    },
}

fn peer_of(n: u8) -> Bytes {
    peer(n % 3)
}

fn frames(payload: Vec<Vec<u8>>) -> Vec<Bytes> {
    payload.into_iter().map(Bytes::from).collect()
}

fuzz_target!(|input: Input| {
    let bundles: Vec<FileBundle> = input
        .bundles
        .into_iter()
        .map(|files| {
            let files = files.into_iter().map(|(path, data)| ShippedFile { path: path.path(), data });
            FileBundle::new(files.collect())
        })
        .collect();
    let bundle = |n: u8| bundles.get(n as usize % bundles.len().max(1)).cloned();
    block_on(async {
        let mut job = Job::new(input.bundle_cache);
        let mut taken = Vec::new();
        for op in input.ops {
            match op {
                Op::Init { peer, request_id, bundle: b, log_to_driver, max_memory, gpus } => {
                    let spec = InitSpec {
                        bundle: b.and_then(bundle).map(|b| b.hash).unwrap_or_default(),
                        log_to_driver,
                        resources: ActorResources {
                            gpus: (0..gpus % 3).map(|g| g.to_string()).collect(),
                            max_memory,
                        },
                        options: Default::default(),
                    };
                    let encoding = Encoding::Python;
                    let request = ActorRequest {
                        request_id,
                        kind: CallKind::Init(spec),
                        name: "Actor".into(),
                        encoding,
                    };
                    job.frames(peer_of(peer), encode(&Message::ActorRequest(request), Vec::new())).await;
                }
                Op::Call { peer, request_id, op, name, payload } => {
                    let kind = [CallKind::Method, CallKind::GetAttr, CallKind::SetAttr, CallKind::Task]
                        [op as usize % 4]
                        .clone();
                    let encoding = if op / 4 % 2 == 0 { Encoding::Python } else { Encoding::Portable };
                    let request = ActorRequest { request_id, kind, name, encoding };
                    job.frames(peer_of(peer), encode(&Message::ActorRequest(request), frames(payload))).await;
                }
                Op::Ship { peer, bundle: b, forged } => {
                    let Some(mut shipped) = bundle(b) else { continue };
                    if forged {
                        shipped
                            .files
                            .push(ShippedFile { path: "evil.py".into(), data: b"import os".to_vec() });
                    }
                    job.frames(peer_of(peer), encode(&Message::ShipFiles(shipped), Vec::new())).await;
                }
                Op::Release { peer } => {
                    job.frames(peer_of(peer), encode(&Message::Release, Vec::new())).await
                }
                Op::Any { peer, message, payload } => {
                    job.frames(peer_of(peer), encode(&message, frames(payload))).await
                }
                Op::Raw { peer, frames: raw } => job.frames(peer_of(peer), frames(raw)).await,
                Op::Gone { peer } => job.peer_gone(peer_of(peer)).await,
                Op::Take => taken.extend(job.next_request().map(|(id, _op)| id)),
                Op::Reply { which, failed, payload } => {
                    let id = taken.get(which as usize).copied().unwrap_or(u64::from(which));
                    job.reply(id, frames(payload), failed);
                }
            }
            job.check();
        }
    });
});
