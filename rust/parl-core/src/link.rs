//! The connection of a worker or a client to the master: connect, register, heartbeat, and
//! reconnect after the master is lost.
//!
//! The `zeromq` DEALER never reconnects and has no heartbeats, so this module owns both: it
//! beats every interval the master asked for, declares the master lost after the timeout (or
//! at once when the TCP connection closes), then keeps trying to connect and re-register with
//! the same hello, so a restarted master gets its peers back without anyone's help.

use crate::protocol::Service;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::auth::Auth;
use crate::connection::{self, Inbound, Outbox};
use crate::error::{Error, Result};
use crate::protocol::{DecodeError, Envelope, ErrorCode, ErrorReply, Message, Welcome};
use crate::runtime::Shutdown;
use crate::transport::TransportError;

/// What the owner of a link hears.
#[derive(Debug)]
pub enum LinkEvent {
    /// Any message from the master other than heartbeats.
    Message(Envelope),
    /// The master stopped answering; the link is reconnecting.
    Lost(String),
    /// Registered again after a loss; the owner should re-announce its state.
    Restored(Welcome),
}

/// Sends messages to the master. Messages sent while the master is lost are dropped: callers
/// that need an answer check [`LinkSender::is_connected`] first.
#[derive(Clone)]
pub struct LinkSender {
    tx: mpsc::UnboundedSender<(Message, Vec<Bytes>)>,
    connected: Arc<AtomicBool>,
    address: Arc<str>,
}

impl LinkSender {
    pub fn send(&self, message: Message) {
        self.send_with(message, Vec::new());
    }

    pub fn send_with(&self, message: Message, payload: Vec<Bytes>) {
        let _ = self.tx.send((message, payload));
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub fn address(&self) -> &str {
        &self.address
    }
}

#[cfg(any(test, feature = "fuzzing"))]
impl LinkSender {
    /// A sender with no master behind it: what is sent arrives on the receiver (fuzzing).
    pub(crate) fn detached() -> (LinkSender, mpsc::UnboundedReceiver<(Message, Vec<Bytes>)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let sender = LinkSender { tx, connected: Arc::new(AtomicBool::new(true)), address: "fuzz:0".into() };
        (sender, rx)
    }
}

/// Settings of one link.
pub struct LinkConfig {
    /// "host:port" of the master.
    pub address: String,
    pub connect_timeout: Duration,
    /// The registration message, sent on every (re)connect.
    pub hello: Message,
    /// Names the owner in logs ("worker", "client").
    pub role: &'static str,
    /// The cluster key proven to the master.
    pub auth: Auth,
}

/// Connects and registers once (failing with a clear error), then keeps the link alive in a
/// background task until `shutdown`.
pub async fn connect(
    config: LinkConfig,
    shutdown: Shutdown,
) -> Result<(LinkSender, Welcome, mpsc::UnboundedReceiver<LinkEvent>)> {
    let session = Session::open(&config).await?;
    let welcome = session.welcome.clone();
    let (tx, rx) = mpsc::unbounded_channel();
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let connected = Arc::new(AtomicBool::new(true));
    let sender = LinkSender { tx, connected: connected.clone(), address: config.address.clone().into() };
    tokio::spawn(maintain(config, session, rx, events_tx, connected, shutdown));
    Ok((sender, welcome, events_rx))
}

/// One registered connection.
struct Session {
    outbox: Outbox,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    welcome: Welcome,
}

impl Session {
    async fn open(config: &LinkConfig) -> Result<Session> {
        let refused = |reason: String| Error::Connect { address: config.address.clone(), reason };
        let label = format!("{}->master", config.role);
        let connected = connection::connect(
            &config.address,
            Service::Master,
            config.connect_timeout,
            &config.auth,
            label,
        )
        .await;
        let (outbox, mut inbound) = connected.map_err(|e| match e {
            Error::Transport(TransportError::Connect { reason, .. }) => refused(reason),
            other => other,
        })?;
        outbox.post(&config.hello);
        let answer = tokio::time::timeout(config.connect_timeout, inbound.recv()).await;
        let welcome = match answer {
            Err(_) => return Err(refused("connected, but no parl_rs master answered".into())),
            Ok(None) => return Err(refused("connection closed during registration".into())),
            Ok(Some(event)) => registration_answer(event).map_err(refused)?,
        };
        Ok(Session { outbox, inbound, welcome })
    }
}

fn registration_answer(event: Inbound) -> std::result::Result<Welcome, String> {
    match event {
        Inbound::Message { envelope, .. } => match envelope.message {
            Message::Registered(welcome) => Ok(welcome),
            Message::Error(e) => Err(format!("refused: {}", e.message)),
            other => Err(format!("unexpected answer {} to registration", other.kind())),
        },
        Inbound::Malformed { error: e @ DecodeError::Version { .. }, .. } => Err(e.to_string()),
        Inbound::Malformed { error, .. } => Err(format!("not a parl_rs master ({error})")),
        Inbound::PeerGone { .. } => Err("connection closed during registration".into()),
        Inbound::Closed { reason } => Err(reason),
    }
}

async fn maintain(
    config: LinkConfig,
    mut session: Session,
    mut outgoing: mpsc::UnboundedReceiver<(Message, Vec<Bytes>)>,
    events: mpsc::UnboundedSender<LinkEvent>,
    connected: Arc<AtomicBool>,
    shutdown: Shutdown,
) {
    loop {
        let lost = serve(&mut session, &mut outgoing, &events, &shutdown).await;
        let Some(reason) = lost else {
            session.outbox.post(&Message::Disconnect);
            // Give the socket task a moment to flush the goodbye.
            tokio::time::sleep(Duration::from_millis(20)).await;
            return;
        };
        connected.store(false, Ordering::Release);
        tracing::warn!("{}: lost the master at {}: {reason}; reconnecting", config.role, config.address);
        if events.send(LinkEvent::Lost(reason)).is_err() {
            return;
        }
        let Some(restored) = reconnect(&config, &mut outgoing, &shutdown).await else { return };
        session = restored;
        connected.store(true, Ordering::Release);
        tracing::info!("{}: registered again with the master at {}", config.role, config.address);
        if events.send(LinkEvent::Restored(session.welcome.clone())).is_err() {
            return;
        }
    }
}

/// Serves a session until the master is lost (Some(reason)) or the owner shuts down (None).
async fn serve(
    session: &mut Session,
    outgoing: &mut mpsc::UnboundedReceiver<(Message, Vec<Bytes>)>,
    events: &mpsc::UnboundedSender<LinkEvent>,
    shutdown: &Shutdown,
) -> Option<String> {
    let (interval, timeout) = heartbeat_settings(&session.welcome);
    let mut beat = tokio::time::interval(interval);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            out = outgoing.recv() => {
                let (message, payload) = out?;
                session.outbox.send(None, &message, payload);
            }
            event = session.inbound.recv() => match event {
                Some(Inbound::Message { envelope, .. }) => {
                    last_heard = Instant::now();
                    if let Message::Error(ErrorReply { code: ErrorCode::NotRegistered, .. }) = envelope.message {
                        // The master dropped us (it restarted, or thought us dead): register again.
                        return Some("the master no longer knows this peer".into());
                    }
                    if envelope.message != Message::Heartbeat
                        && events.send(LinkEvent::Message(envelope)).is_err()
                    {
                        return None;
                    }
                }
                Some(Inbound::Malformed { error, .. }) => {
                    tracing::warn!("malformed message from the master: {error}");
                }
                Some(Inbound::PeerGone { .. }) => return Some("connection closed".into()),
                Some(Inbound::Closed { reason }) => return Some(reason),
                None => return Some("socket task ended".into()),
            },
            _ = beat.tick() => {
                if last_heard.elapsed() > timeout {
                    return Some(format!("no heartbeat for {timeout:?}"));
                }
                session.outbox.post(&Message::Heartbeat);
            }
        }
    }
}

/// The master's heartbeat settings, unless this process overrides them with
/// `PARL_RS_HEARTBEAT_INTERVAL` / `PARL_RS_HEARTBEAT_TIMEOUT` (seconds), e.g. a client on a
/// slow link that needs a longer timeout than the cluster's.
fn heartbeat_settings(welcome: &Welcome) -> (Duration, Duration) {
    let seconds = |name: &str| std::env::var(name).ok()?.parse::<f64>().ok().filter(|s| *s > 0.0);
    let interval = seconds("PARL_RS_HEARTBEAT_INTERVAL").map(Duration::from_secs_f64);
    let timeout = seconds("PARL_RS_HEARTBEAT_TIMEOUT").map(Duration::from_secs_f64);
    let interval = interval
        .unwrap_or(Duration::from_millis(welcome.heartbeat_interval_ms))
        .max(Duration::from_millis(10));
    let timeout = timeout.unwrap_or(Duration::from_millis(welcome.heartbeat_timeout_ms)).max(interval * 2);
    (interval, timeout)
}

/// Tries to connect and register again, with backoff, until it works or shutdown.
async fn reconnect(
    config: &LinkConfig,
    outgoing: &mut mpsc::UnboundedReceiver<(Message, Vec<Bytes>)>,
    shutdown: &Shutdown,
) -> Option<Session> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = Session::open(config);
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            session = attempt => match session {
                Ok(session) => return Some(session),
                // A master with another key is worth a warning: it will never take us back.
                Err(e @ Error::Auth { .. }) => tracing::warn!("{}: {e}", config.role),
                Err(e) => tracing::debug!("{}: reconnect failed: {e}", config.role),
            },
        }
        // Drop what the owner sent meanwhile: the master that would have answered is gone.
        while outgoing.try_recv().is_ok() {}
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(jittered(backoff, rand::random())) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// A wait of between half of `backoff` and all of it, as `unit` (in [0, 1)) says: workers
/// and clients that lost a master together do not all come back at the same instants (2,000
/// workers at a restarted master).
fn jittered(backoff: Duration, unit: f64) -> Duration {
    backoff.mul_f64(0.5 + unit.clamp(0.0, 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_waits_are_spread_over_the_upper_half_of_the_backoff() {
        let backoff = Duration::from_millis(800);
        assert_eq!(jittered(backoff, 0.0), Duration::from_millis(400));
        assert_eq!(jittered(backoff, 0.5), Duration::from_millis(600));
        assert!(jittered(backoff, 0.999) <= backoff);
        // 2,000 workers that lost the master together come back over the whole window.
        let waits: std::collections::BTreeSet<u128> =
            (0..2000).map(|_| jittered(backoff, rand::random()).as_millis()).collect();
        assert!(waits.len() > 300, "only {} distinct waits", waits.len());
    }
}
