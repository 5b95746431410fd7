//! One actor: the client's connection to the job that runs it.
//!
//! An actor exists before its job does. [`Client::spawn_actor`](super::Client::spawn_actor)
//! returns at once; requests made while the master is still finding a job wait in the actor,
//! in the order they were made, and go out first once the job is connected. They wait as
//! requests, not yet encoded, because the Init among them must carry what only the grant
//! tells: the GPU ids reserved for the job. If the creation fails, every request made on the
//! actor fails with that error.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::connection::{Events, Inbound, Outbox};
use crate::error::{Error, Result};
use crate::protocol::{
    ActorOptions, ActorRequest, ActorResources, CallKind, Encoding, FileBundle, InitSpec, JobGrant, Message,
    Outcome, RemoteFailure,
};
use crate::transport::{check_size, MAX_NAME_LEN};

/// A job that closed its connection may still have its exit reported by the master a moment
/// later, with the exit status; wait this long for that better reason.
const DEATH_NOTICE_GRACE: Duration = Duration::from_millis(300);

/// The answer to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub payload: Vec<Bytes>,
    /// Set when the job reports that the request failed inside it.
    pub failure: Option<RemoteFailure>,
}

/// What runs when a request is answered (or fails). It runs on the I/O thread, so it must not
/// block.
type OnReply = Box<dyn FnOnce(Result<Reply>) + Send>;

/// A handle on one actor. Dropping it releases the actor.
pub struct Actor {
    shared: Arc<ActorShared>,
}

pub(crate) struct ActorShared {
    class_name: String,
    /// Set once the master has granted a job and the client is connected to it.
    grant: OnceLock<JobGrant>,
    /// The job's socket: set with the grant, taken when the actor is released.
    outbox: Mutex<Option<Outbox>>,
    requests: Mutex<Requests>,
    released: AtomicBool,
    next_request: AtomicU64,
    setup: ActorSetup,
    /// `@remote_class(max_memory=...)` in bytes, sent with the Init.
    max_memory: Option<u64>,
    /// Sent with the Init.
    options: ActorOptions,
    /// Cancelled when the actor is released (or its client closes) before it has a job.
    creation: CancellationToken,
    /// Wakes [`Actor::ready`] when the job is connected or the actor ends.
    settled: Notify,
}

#[derive(Default)]
struct Requests {
    /// Waiting for their replies, by request id: failing them in id order keeps completions in
    /// the order the requests were made.
    pending: BTreeMap<u64, OnReply>,
    /// Made before the job was connected, in order; [`ActorShared::connected`] sends them.
    queued: Vec<(ActorRequest, Vec<Bytes>)>,
    /// Why the actor ended; every later request fails at once with it.
    ended: Option<Error>,
}

/// What every actor of a client shares: its files and how its output is shown.
pub(crate) struct ActorSetup {
    pub bundle: Arc<FileBundle>,
    pub log_to_driver: bool,
    /// How requests' payloads are written (the client's).
    pub encoding: Encoding,
    pub files_shipped: Arc<AtomicU64>,
    /// Bytes a request's payload may carry (see [`super::Client::payload_limit`]).
    pub payload_limit: usize,
    pub counters: Arc<super::counters::ClientCounters>,
}

/// Why a request cannot be sent (refused here, rather than by a peer that would close the
/// connection): a name or a payload above the limits.
fn request_too_large(name: &str, payload: &[Bytes], payload_limit: usize) -> Option<String> {
    if name.len() > MAX_NAME_LEN {
        let start: String = name.chars().take(40).collect();
        return Some(format!(
            "the name `{start}...` is {} bytes, above the {} KiB a method or attribute name may have",
            name.len(),
            MAX_NAME_LEN / 1024
        ));
    }
    let size: usize = payload.iter().map(Bytes::len).sum();
    check_size(size, payload_limit, format_args!("the payload of `{name}`"))
}

impl Actor {
    /// An actor without a job yet: requests queue in it until [`ActorShared::connected`].
    pub(crate) fn new(spec: &super::ActorSpec, setup: ActorSetup, creation: CancellationToken) -> Actor {
        let shared = Arc::new(ActorShared {
            class_name: spec.class_name.clone(),
            grant: OnceLock::new(),
            outbox: Mutex::new(None),
            requests: Mutex::new(Requests::default()),
            released: AtomicBool::new(false),
            next_request: AtomicU64::new(1),
            setup,
            max_memory: spec.max_memory,
            options: spec.options.clone(),
            creation,
            settled: Notify::new(),
        });
        Actor { shared }
    }

    pub(crate) fn shared(&self) -> Arc<ActorShared> {
        self.shared.clone()
    }

    /// The job id, once the actor has a job.
    pub fn actor_id(&self) -> Option<&str> {
        self.grant().map(|grant| grant.job_id.as_str())
    }

    /// Where the actor runs, once it has a job.
    pub fn grant(&self) -> Option<&JobGrant> {
        self.shared.grant.get()
    }

    /// The GPU ids reserved for this actor (its `CUDA_VISIBLE_DEVICES`), once it has a job;
    /// empty for a CPU actor.
    pub fn gpus(&self) -> Option<&[String]> {
        self.grant().map(|grant| grant.gpus.as_slice())
    }

    pub fn class_name(&self) -> &str {
        &self.shared.class_name
    }

    /// False once the actor ended: released, dead, or its creation failed.
    pub fn is_alive(&self) -> bool {
        self.shared.ended().is_none()
    }

    /// Waits until the actor has a job and is connected to it; the creation's error if that
    /// failed (or the actor was released first).
    pub async fn ready(&self) -> Result<()> {
        loop {
            let settled = self.shared.settled.notified();
            if self.shared.grant.get().is_some() {
                return Ok(());
            }
            if let Some(error) = self.shared.ended() {
                return Err(error);
            }
            settled.await;
        }
    }

    /// Sends a request; `on_reply` receives its reply, or the error that ended the actor.
    /// For `Init`, the client fills in the spec (see [`ActorShared::send`]).
    ///
    /// Never blocks and works from any thread, in or out of the runtime. Requests go to the
    /// job in the order they are made, including those made before the job is connected.
    /// `on_reply` runs on the I/O thread (or right here if the actor has already ended) and
    /// must not block.
    pub fn submit(
        &self,
        kind: CallKind,
        name: &str,
        payload: Vec<Bytes>,
        on_reply: impl FnOnce(Result<Reply>) + Send + 'static,
    ) {
        let shared = &self.shared;
        if let Some(why) = request_too_large(name, &payload, shared.setup.payload_limit) {
            return on_reply(Err(Error::TooLarge(why)));
        }
        let request_id = shared.next_request.fetch_add(1, Ordering::Relaxed);
        let request =
            ActorRequest { request_id, kind, name: name.to_string(), encoding: shared.setup.encoding };
        let grant = {
            // Checked and queued under one lock, so an ending actor fails this request too and
            // a connecting one sends it after those queued before it.
            let mut requests = shared.requests();
            if let Some(error) = requests.ended.clone() {
                drop(requests);
                on_reply(Err(error));
                return;
            }
            requests.pending.insert(request_id, Box::new(on_reply));
            match shared.grant.get() {
                Some(grant) => grant,
                None => return requests.queued.push((request, payload)),
            }
        };
        let sent = shared.outbox().is_some_and(|outbox| shared.send(&outbox, grant, request, payload));
        if !sent {
            shared.mark_dead("its connection is closed".into());
        }
    }

    /// Sends a request; the returned receiver yields the reply. See [`Actor::submit`].
    pub fn send_request(
        &self,
        kind: CallKind,
        name: &str,
        payload: Vec<Bytes>,
    ) -> oneshot::Receiver<Result<Reply>> {
        let (tx, rx) = oneshot::channel();
        self.submit(kind, name, payload, move |reply| {
            let _ = tx.send(reply);
        });
        rx
    }

    /// Sends a request and waits for the reply.
    pub async fn request(&self, kind: CallKind, name: &str, payload: Vec<Bytes>) -> Result<Reply> {
        let rx = self.send_request(kind, name, payload);
        rx.await.unwrap_or_else(|_| Err(Error::Shutdown))
    }

    /// Releases the actor: its job exits and its slot returns to the pool; a creation still
    /// waiting for a job is cancelled. Requests still waiting fail. Idempotent, never blocks.
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
    fn requests(&self) -> std::sync::MutexGuard<'_, Requests> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn outbox(&self) -> Option<Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn ended(&self) -> Option<Error> {
        self.requests().ended.clone()
    }

    pub(crate) fn creation(&self) -> &CancellationToken {
        &self.creation
    }

    /// Names the actor in logs: its job id, or its class before it has a job.
    fn label(&self) -> String {
        match self.grant.get() {
            Some(grant) => grant.job_id.clone(),
            None => format!("of `{}`", self.class_name),
        }
    }

    fn died(&self, reason: String) -> Error {
        let (actor_id, hostname) = match self.grant.get() {
            Some(grant) => (grant.job_id.clone(), grant.hostname.clone()),
            None => (format!("of `{}`", self.class_name), "(no job yet)".to_string()),
        };
        Error::ActorDied { actor_id, hostname, reason }
    }

    /// The job is granted and connected: start its socket and send what was queued first.
    /// False if the actor ended meanwhile: the job then has seen no request.
    pub(crate) fn connected(self: &Arc<Self>, grant: JobGrant, socket: (Outbox, Events)) -> bool {
        let inbound = {
            // Under the requests lock: a request made meanwhile either is among the queued ones
            // or, seeing the grant, goes out after them.
            let mut requests = self.requests();
            if requests.ended.is_some() {
                return false;
            }
            let (outbox, inbound) = socket;
            for (request, payload) in std::mem::take(&mut requests.queued) {
                self.send(&outbox, &grant, request, payload);
            }
            *self.outbox.lock().unwrap_or_else(|e| e.into_inner()) = Some(outbox);
            let _ = self.grant.set(grant);
            inbound
        };
        tokio::spawn(receive_replies(Arc::downgrade(self), inbound));
        self.settled.notify_waiters();
        true
    }

    /// Sends one request to the job. An Init gets its spec here, where the grant is known:
    /// the files' bundle hash, `log_to_driver`, the actor's resources (the GPU ids the master
    /// reserved for this job, the memory limit) and its options. False if the socket is gone.
    fn send(
        &self,
        outbox: &Outbox,
        grant: &JobGrant,
        mut request: ActorRequest,
        payload: Vec<Bytes>,
    ) -> bool {
        if let CallKind::Init(spec) = &mut request.kind {
            *spec = InitSpec {
                bundle: self.setup.bundle.hash.clone(),
                log_to_driver: self.setup.log_to_driver,
                resources: ActorResources { gpus: grant.gpus.clone(), max_memory: self.max_memory },
                options: self.options.clone(),
            };
        }
        outbox.send(None, &Message::ActorRequest(request), payload)
    }

    /// No job could be had: every request, queued or later, fails with `error`.
    pub(crate) fn creation_failed(&self, error: Error) {
        self.fail_all(error);
        self.released.store(true, Ordering::Release);
    }

    pub(crate) fn release(&self) {
        self.end("it was released".into());
    }

    /// Fails its requests with `reason` and closes the connection to its job, which then exits
    /// if it still runs. Idempotent.
    pub(crate) fn end(&self, reason: String) {
        self.mark_dead(reason);
        self.creation.cancel();
        if self.released.swap(true, Ordering::AcqRel) {
            return;
        }
        // Dropping the outbox lets the socket task flush the Release, then close; the job also
        // exits when its client's connection closes, so the release cannot get lost. Without a
        // job yet there is no outbox: the cancelled creation gives the job back.
        if let Some(outbox) = self.outbox.lock().unwrap_or_else(|e| e.into_inner()).take() {
            outbox.post(&Message::Release);
        }
    }

    /// Fails every waiting request and all later ones with `reason`. The first reason sticks.
    pub(crate) fn mark_dead(&self, reason: String) {
        self.fail_all(self.died(reason));
    }

    /// Fails every waiting request, in the order they were made, and all later ones with
    /// `error`. The first error sticks.
    fn fail_all(&self, error: Error) {
        let waiting = {
            let mut requests = self.requests();
            if requests.ended.is_some() {
                return;
            }
            requests.ended = Some(error.clone());
            requests.queued.clear();
            std::mem::take(&mut requests.pending)
        };
        self.settled.notify_waiters();
        for (_, on_reply) in waiting {
            on_reply(Err(error.clone()));
        }
    }

    /// Sends the client's files to a job whose worker has not cached them yet.
    fn ship_files(&self, hash: &str) {
        let bundle = &self.setup.bundle;
        if bundle.hash != hash {
            tracing::warn!("job {} asked for unknown files {hash}", self.label());
            return;
        }
        if let Some(outbox) = self.outbox() {
            outbox.post(&Message::ShipFiles(bundle.as_ref().clone()));
            self.setup.files_shipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Prints the job's output lines, each prefixed with the actor it came from.
    fn print_output(&self, data: &[u8]) {
        let Some(grant) = self.grant.get() else { return };
        super::driver_output::print(&format!("[actor {} on {}]", grant.job_id, grant.hostname), data);
    }

    fn complete(&self, request_id: u64, reply: Result<Reply>) {
        let on_reply = self.requests().pending.remove(&request_id);
        if let Some(on_reply) = on_reply {
            // A lease's runs are tasks, which its dispatcher counts.
            if reply.is_ok() && self.class_name != crate::protocol::LEASE_CLASS {
                self.setup.counters.call_answered();
            }
            on_reply(reply);
        }
    }
}

/// The one dispatch of an actor's socket.
async fn receive_replies(
    shared: std::sync::Weak<ActorShared>,
    mut inbound: mpsc::UnboundedReceiver<Inbound>,
) {
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
                Message::Error(e) => tracing::warn!("job {} reported: {}", actor.label(), e.message),
                other => tracing::warn!("unexpected {} from job {}", other.kind(), actor.label()),
            },
            Inbound::Malformed { error, .. } => {
                tracing::warn!("malformed reply from job {}: {error}", actor.label())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_payloads_above_the_limits_are_refused_with_what_was_too_large() {
        let payload = vec![Bytes::from(vec![0u8; 1000])];
        assert_eq!(request_too_large("step", &payload, 1000), None);
        let why = request_too_large("step", &payload, 999).expect("too large");
        assert!(why.contains("the payload of `step`") && why.contains("PARL_RS_MAX_MESSAGE_MB"), "{why}");
        let long = "m".repeat(MAX_NAME_LEN + 1);
        let why = request_too_large(&long, &[], usize::MAX).expect("too long");
        assert!(why.contains("bytes, above the 16 KiB") && why.len() < 200, "{why}");
    }
}
