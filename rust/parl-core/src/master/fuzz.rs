//! The master's dispatch without a socket, for [`crate::fuzz_support`].

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::http::HttpQuery;
use super::MasterLoop;
use crate::config::{HeartbeatConfig, MasterConfig};
use crate::fuzz_support::{socket_task, Wire};
use crate::protocol::ClusterStatus;
use crate::transport::{PeerId, SocketEvent};

/// A master's state and its dispatch ([`MasterLoop::on_event`]), fed by the caller.
pub struct Master {
    state: MasterLoop,
    wire: Wire,
}

impl Master {
    /// A master of a CPU or a GPU cluster whose Python is `python_version` ("" if unknown),
    /// with the default heartbeat settings. Call inside [`crate::fuzz_support::block_on`].
    pub fn new(gpu_cluster: bool, python_version: &str) -> Master {
        let (outbox, wire) = socket_task("master");
        let config = MasterConfig {
            bind: "127.0.0.1:0".into(),
            heartbeat: HeartbeatConfig::default(),
            gpu_cluster,
            python_version: python_version.into(),
            http_bind: None,
            auth: crate::auth::Auth::Insecure,
            scheme: Default::default(),
        };
        Master { state: MasterLoop::new(config, "fuzz-master:1".into(), outbox), wire }
    }

    /// Frames from `peer`, through the socket task (decoding) into the master's dispatch.
    pub async fn frames(&mut self, peer: PeerId, frames: Vec<Bytes>) {
        let event = self.wire.deliver(SocketEvent::Frames { peer, frames, digests: Vec::new() }).await;
        self.state.on_event(event);
    }

    /// The connection of `peer` closed.
    pub async fn peer_gone(&mut self, peer: PeerId) {
        let event = self.wire.deliver(SocketEvent::PeerGone { peer }).await;
        self.state.on_event(event);
    }

    /// The liveness tick, as if `later` had passed since now (no real time passes in a run):
    /// past the heartbeat timeout (5 s), every peer is dropped.
    pub fn expire_silent_peers(&mut self, later: Duration) {
        self.state.expire_silent_peers(Instant::now() + later);
    }

    /// What the HTTP endpoint's `/status` shows.
    pub fn status(&self) -> ClusterStatus {
        let (reply, mut answer) = oneshot::channel();
        self.state.answer(HttpQuery::Status(reply));
        answer.try_recv().expect("the master answers at once")
    }

    /// Where the HTTP endpoint redirects a request for the log of `job_id`.
    pub fn log_location(&self, job_id: &str) -> Option<String> {
        let (reply, mut answer) = oneshot::channel();
        self.state.answer(HttpQuery::LogLocation { job_id: job_id.to_string(), reply });
        answer.try_recv().expect("the master answers at once")
    }

    /// Panics unless what must hold after any sequence of events holds.
    pub fn check(&mut self) {
        self.wire.check_sent();
        let state = &mut self.state;
        state.registry.check_invariants();
        for pending in state.queue.iter() {
            assert!(
                state.registry.client(&pending.client).is_some(),
                "request {} of client {} waits, but the client is gone",
                pending.request.request_id,
                pending.client
            );
        }
        // The queue is served whenever it can be: no line's oldest request can be served now
        // (otherwise it waits for an event that may never come, until the client gives up).
        state.sync_scheduler();
        for (_, head) in state.queue.heads() {
            if let Some(worker) = state.scheduler.pick(&head.request) {
                panic!(
                    "request {} of client {} waits although worker {worker} can serve it now",
                    head.request.request_id, head.client
                );
            }
        }
        let status = self.status();
        assert_eq!(status.pending_requests as usize, self.state.queue.len());
    }
}
