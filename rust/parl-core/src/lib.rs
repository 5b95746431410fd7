//! # parl-core
//!
//! The systems half of parl_rs, with no Python in it: the wire protocol, the master, the
//! worker, the job runtime and the client. The `parl-py` crate binds it to Python; native
//! programs can use the client directly.
//!
//! ## Layout
//! - [`protocol`]: every message, the version, and the one codec both ends use.
//! - [`transport`]: the byte transport behind a small trait (ZeroMQ today).
//! - [`connection`]: socket tasks that turn frames into typed events, in authenticated sessions.
//! - [`auth`]: the cluster key, and the handshake every connection opens with.
//! - [`session`]: the authenticated (optionally encrypted) messages after the handshake.
//! - [`pending`]: deadlines and caps for connections still in the handshake.
//! - [`key_pipe`]: handing the key to a child process through a pipe, not its environment.
//! - [`http`]: the HTTP servers (master endpoint, worker log server), with deadlines and caps.
//! - [`link`]: a worker's or client's connection to the master (heartbeats, reconnects).
//! - [`master`]: the master: its pure core (registry, request queue, placement schemes; events
//!   in, effects out), the socket loop that drives it, and its HTTP endpoint with the web
//!   monitor ([`master::monitor`]: what the core records for it, the JSON API's types, history,
//!   `/metrics` and the embedded page).
//! - [`worker`]: the warm pool of job processes and their supervision.
//! - [`job`]: the networking side of a job process.
//! - [`client`]: creating actors and talking to their jobs; stateless tasks on leased jobs
//!   ([`client::tasks`]: a pure dispatcher core and its driver).
//! - [`local`]: a master and a worker inside one process.
//! - [`node`]: running a master or worker in the foreground until a signal.
//! - [`runtime`]: the per-process background runtime used from non-async code.
//! - `fuzz_support` (feature `fuzzing`, hidden): drives the worker's and the job's real
//!   dispatch without sockets, for the fuzz targets in `rust/fuzz` (the master's core needs
//!   no harness: the targets drive it directly).

pub mod auth;
pub mod client;
pub mod config;
pub mod connection;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz_support;
pub mod http;
pub mod ids;
pub mod job;
pub mod key_pipe;
pub mod link;
pub mod local;
pub mod logging;
pub mod master;
pub mod node;
pub mod pending;
pub mod protocol;
pub mod runtime;
pub mod session;
pub mod transport;
pub mod worker;

pub use auth::{Auth, ClusterKey};
pub use client::{query_status, Actor, ActorSpec, Client, Reply};
pub use config::{ClientConfig, HeartbeatConfig, MasterConfig, WorkerConfig};
pub use error::{Error, Result};
pub use local::LocalCluster;

/// The parl_rs version; masters refuse workers and clients of another version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
