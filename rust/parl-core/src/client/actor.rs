//! One actor: the client's connection to the job that runs it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::connection::{self, Inbound, Outbox};
use crate::error::{Error, Result};
use crate::protocol::{
    ActorOp, ActorRequest, ActorResources, FileBundle, InitSpec, JobGrant, Message, Outcome, RemoteFailure,
};
use crate::transport::zmq::ZmqClient;

/// A job that closed its connection may still have its exit reported by the master a moment
/// later, with the exit status; wait this long for that better reason.
const DEATH_NOTICE_GRACE: Duration = Duration::from_millis(300);

/// The answer to one request.
#[derive(Debug)]
pub struct Reply {
    pub payload: Vec<Bytes>,
    /// Set when the job reports that the request failed inside it.
    pub failure: Option<RemoteFailure>,
}

type ReplySlot = oneshot::Sender<Result<Reply>>;

/// A handle on one actor. Dropping it releases the actor.
pub struct Actor {
    shared: Arc<ActorShared>,
}

pub(crate) struct ActorShared {
    grant: JobGrant,
    outbox: Mutex<Option<Outbox>>,
    pending: Mutex<HashMap<u64, ReplySlot>>,
    dead: Mutex<Option<String>>,
    released: AtomicBool,
    next_request: AtomicU64,
    setup: ActorSetup,
    /// `max_memory` in bytes, sent with the Init.
    max_memory: Option<u64>,
}

/// What every actor of a client shares: its files and how its output is shown.
pub(crate) struct ActorSetup {
    pub bundle: Arc<FileBundle>,
    pub log_to_driver: bool,
    pub files_shipped: Arc<AtomicU64>,
}

impl Actor {
    /// Starts serving a connected job socket.
    pub(crate) fn start(
        socket: ZmqClient,
        grant: JobGrant,
        setup: ActorSetup,
        max_memory: Option<u64>,
    ) -> Actor {
        let (outbox, inbound) = connection::spawn(socket, format!("actor {}", grant.job_id));
        let shared = Arc::new(ActorShared {
            grant,
            outbox: Mutex::new(Some(outbox)),
            pending: Mutex::new(HashMap::new()),
            dead: Mutex::new(None),
            released: AtomicBool::new(false),
            next_request: AtomicU64::new(1),
            setup,
            max_memory,
        });
        tokio::spawn(receive_replies(Arc::downgrade(&shared), inbound));
        Actor { shared }
    }

    pub(crate) fn downgrade(&self) -> Weak<ActorShared> {
        Arc::downgrade(&self.shared)
    }

    pub fn actor_id(&self) -> &str {
        &self.shared.grant.job_id
    }

    pub fn grant(&self) -> &JobGrant {
        &self.shared.grant
    }

    pub fn is_alive(&self) -> bool {
        self.shared.dead_reason().is_none()
    }

    /// The GPU ids reserved for this actor (its `CUDA_VISIBLE_DEVICES`); empty for a CPU actor.
    pub fn gpus(&self) -> &[String] {
        &self.shared.grant.gpus
    }

    /// Sends a request; the returned receiver yields the reply. For `Init`, the client fills in
    /// the spec: its files' bundle hash, `log_to_driver` and the actor's resources (GPU ids,
    /// memory limit). Usable from any thread, in or out of the runtime: sending never blocks.
    pub fn send_request(
        &self,
        op: ActorOp,
        name: &str,
        payload: Vec<Bytes>,
    ) -> oneshot::Receiver<Result<Reply>> {
        let (tx, rx) = oneshot::channel();
        let shared = &self.shared;
        if let Some(reason) = shared.dead_reason() {
            let _ = tx.send(Err(shared.died(reason)));
            return rx;
        }
        let op = match op {
            ActorOp::Init(_) => ActorOp::Init(InitSpec {
                bundle: shared.setup.bundle.hash.clone(),
                log_to_driver: shared.setup.log_to_driver,
                resources: ActorResources { gpus: shared.grant.gpus.clone(), max_memory: shared.max_memory },
            }),
            op => op,
        };
        let request_id = shared.next_request.fetch_add(1, Ordering::Relaxed);
        shared.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(request_id, tx);
        let request = Message::ActorRequest(ActorRequest { request_id, op, name: name.to_string() });
        let sent = shared.outbox().is_some_and(|o| o.send(None, &request, payload));
        if !sent {
            shared.mark_dead("its connection is closed".into());
        }
        rx
    }

    /// Sends a request and waits for the reply.
    pub async fn request(&self, op: ActorOp, name: &str, payload: Vec<Bytes>) -> Result<Reply> {
        let rx = self.send_request(op, name, payload);
        rx.await.unwrap_or_else(|_| Err(Error::Shutdown))
    }

    /// Releases the actor: its job exits and its slot returns to the pool. Idempotent.
    pub fn release(&self) {
        self.shared.release();
    }
}

impl Drop for Actor {
    fn drop(&mut self) {
        self.shared.release();
    }
}

impl ActorShared {
    fn outbox(&self) -> Option<Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn dead_reason(&self) -> Option<String> {
        self.dead.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn died(&self, reason: String) -> Error {
        Error::ActorDied {
            actor_id: self.grant.job_id.clone(),
            hostname: self.grant.hostname.clone(),
            reason,
        }
    }

    pub(crate) fn release(&self) {
        self.end("it was released".into());
    }

    /// Fails its requests with `reason` and closes the connection to its job, which then exits
    /// if it still runs. Idempotent.
    pub(crate) fn end(&self, reason: String) {
        self.mark_dead(reason);
        if self.released.swap(true, Ordering::AcqRel) {
            return;
        }
        // Dropping the outbox lets the socket task flush the Release, then close; the job also
        // exits when its client's connection closes, so the release cannot get lost.
        if let Some(outbox) = self.outbox.lock().unwrap_or_else(|e| e.into_inner()).take() {
            outbox.post(&Message::Release);
        }
    }

    /// Fails every waiting request and all later ones with `reason`. The first reason sticks.
    pub(crate) fn mark_dead(&self, reason: String) {
        {
            let mut dead = self.dead.lock().unwrap_or_else(|e| e.into_inner());
            if dead.is_some() {
                return;
            }
            *dead = Some(reason.clone());
        }
        let waiting: Vec<_> = self.pending.lock().unwrap_or_else(|e| e.into_inner()).drain().collect();
        for (_, slot) in waiting {
            let _ = slot.send(Err(self.died(reason.clone())));
        }
    }

    /// Sends the client's files to a job whose worker has not cached them yet.
    fn ship_files(&self, hash: &str) {
        let bundle = &self.setup.bundle;
        if bundle.hash != hash {
            tracing::warn!("job {} asked for unknown files {hash}", self.grant.job_id);
            return;
        }
        if let Some(outbox) = self.outbox() {
            outbox.post(&Message::ShipFiles(bundle.as_ref().clone()));
            self.setup.files_shipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Prints the job's output lines, each prefixed with the actor it came from.
    fn print_output(&self, data: &[u8]) {
        use std::io::Write;
        let text = String::from_utf8_lossy(data);
        let mut out = std::io::stdout().lock();
        for line in text.lines() {
            let _ = writeln!(out, "[actor {} on {}] {line}", self.grant.job_id, self.grant.hostname);
        }
        let _ = out.flush();
    }

    fn complete(&self, request_id: u64, reply: Result<Reply>) {
        let slot = self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&request_id);
        if let Some(slot) = slot {
            let _ = slot.send(reply);
        }
    }
}

/// The one dispatch of an actor's socket.
async fn receive_replies(shared: Weak<ActorShared>, mut inbound: mpsc::UnboundedReceiver<Inbound>) {
    while let Some(event) = inbound.recv().await {
        let Some(actor) = shared.upgrade() else { return };
        match event {
            Inbound::Message { envelope, .. } => match envelope.message {
                Message::ActorReply(reply) => {
                    let result = match reply.outcome {
                        Outcome::Ok => Ok(Reply { payload: envelope.payload, failure: None }),
                        Outcome::Failed(failure) => {
                            Ok(Reply { payload: envelope.payload, failure: Some(failure) })
                        }
                        Outcome::Rejected(why) => {
                            Err(Error::Protocol(format!("the job refused the request: {why}")))
                        }
                    };
                    actor.complete(reply.request_id, result);
                }
                Message::NeedFiles { hash } => actor.ship_files(&hash),
                Message::JobOutput { data } => actor.print_output(&data),
                Message::Error(e) => tracing::warn!("job {} reported: {}", actor.grant.job_id, e.message),
                other => tracing::warn!("unexpected {} from job {}", other.kind(), actor.grant.job_id),
            },
            Inbound::Malformed { error, .. } => {
                tracing::warn!("malformed reply from job {}: {error}", actor.grant.job_id)
            }
            Inbound::PeerGone { .. } | Inbound::Closed { .. } => {
                drop(actor);
                tokio::time::sleep(DEATH_NOTICE_GRACE).await;
                if let Some(actor) = shared.upgrade() {
                    actor.mark_dead("the connection to its job closed".into());
                }
                return;
            }
        }
    }
}
