//! The master: registers workers and clients, queues requests for jobs, hands out warm jobs,
//! and notices dead peers by their heartbeats.
//!
//! Its state and every decision are the [`core::MasterCore`]: events in, effects out, with
//! the time as an input. This module is the driver around it: one task owns the core (no
//! locks) and selects over the socket's events, a liveness tick, HTTP queries and shutdown.

pub mod admission;
pub mod core;
pub mod http;
mod log_proxy;
pub mod monitor;
pub mod queue;
pub mod registry;
pub mod scheduler;

use std::time::Instant;

use tokio::sync::mpsc;

use self::core::{CoreConfig, Effect, Event, MasterCore};
use crate::config::MasterConfig;
use crate::connection::{self, Inbound, Outbox};
use crate::error::Result;
use crate::protocol::Sessions;
use crate::runtime::{Service, Shutdown};
use crate::transport::host_port;
use crate::transport::zmq::ZmqServer;

/// A running master.
pub struct MasterHandle {
    /// "host:port" the master is bound to.
    pub address: String,
    /// "host:port" of its HTTP endpoint (status, logs), if it serves one.
    pub http_address: Option<String>,
    pub service: Service,
    /// Cancelled to stop the whole cluster: see [`MasterHandle::stop_cluster`].
    stop_cluster: Shutdown,
}

impl MasterHandle {
    /// Stops the master alone and waits for its loop to end. Its workers keep reconnecting,
    /// as after a crash, so a master restarted on the same port gets them back.
    pub async fn stop(self) {
        self.service.stop().await;
    }

    /// Stops the cluster on purpose (`xparl stop`): tells every connected worker to end its
    /// jobs and exit, then stops the master.
    pub async fn stop_cluster(self) {
        self.stop_cluster.cancel();
        self.service.join().await;
    }

    /// The token that [`MasterHandle::stop_cluster`] cancels, for a driver that must react to
    /// a signal while someone else holds the handle.
    pub fn cluster_stopper(&self) -> Shutdown {
        self.stop_cluster.clone()
    }
}

/// How long a stopping master gives its goodbyes to leave before it closes its socket.
const GOODBYE_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// Binds the master's port and starts its loop. Fails if the port cannot be bound.
pub async fn start(config: MasterConfig, shutdown: Shutdown) -> Result<MasterHandle> {
    let (socket, endpoint) = ZmqServer::bind(&config.bind).await?;
    let address = host_port(&endpoint).to_string();
    let (outbox, inbound) = connection::spawn_server(
        socket,
        crate::protocol::Service::Master,
        "master".into(),
        config.auth.clone(),
    );
    tracing::info!("master listening on {address}");
    let (queries_tx, queries) = mpsc::unbounded_channel();
    let http_address = match &config.http_bind {
        Some(bind) => Some(http::serve(bind, queries_tx, &config.auth).await?),
        None => None,
    };
    let state = MasterLoop::new(config, address.clone(), http_address.clone(), outbox);
    let stop_cluster = Shutdown::new();
    let task = tokio::spawn(state.run(inbound, queries, shutdown.clone(), stop_cluster.clone()));
    let service = Service::new(shutdown, task);
    Ok(MasterHandle { address, http_address, service, stop_cluster })
}

/// The driver around the [`MasterCore`]: turns socket events, ticks and HTTP queries into
/// core events (with the time) and sends the effects.
struct MasterLoop {
    core: MasterCore,
    address: String,
    outbox: Outbox,
    heartbeat_interval: std::time::Duration,
}

impl MasterLoop {
    fn new(
        config: MasterConfig,
        address: String,
        http_address: Option<String>,
        outbox: Outbox,
    ) -> MasterLoop {
        let core_config = CoreConfig {
            address: address.clone(),
            http_address,
            heartbeat: config.heartbeat,
            gpu_cluster: config.gpu_cluster,
            python_version: config.python_version.clone(),
            scheme: config.scheme,
            seed: rand::random(),
            sessions: match config.auth.key() {
                None => Sessions::Insecure,
                Some(key) if key.encrypts() => Sessions::Encrypted,
                Some(_) => Sessions::Authenticated,
            },
            max_message_size: crate::transport::zmq::max_message_size() as u64,
            hwm: config.hwm,
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |since| since.as_secs_f64()),
        };
        MasterLoop {
            core: MasterCore::new(core_config, Instant::now()),
            address,
            outbox,
            heartbeat_interval: config.heartbeat.interval,
        }
    }

    async fn run(
        mut self,
        mut inbound: mpsc::UnboundedReceiver<Inbound>,
        mut queries: mpsc::UnboundedReceiver<http::Read>,
        shutdown: Shutdown,
        stop_cluster: Shutdown,
    ) {
        let mut tick = tokio::time::interval(self.heartbeat_interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = stop_cluster.cancelled() => {
                    self.handle(Event::StopCluster);
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(GOODBYE_GRACE) => {}
                    }
                    break;
                }
                event = inbound.recv() => match event {
                    Some(Inbound::Message { peer, envelope }) => {
                        self.handle(Event::Message { peer, message: envelope.message })
                    }
                    Some(Inbound::Malformed { peer, error }) => self.handle(Event::Malformed { peer, error }),
                    Some(Inbound::PeerGone { peer }) => self.handle(Event::PeerGone { peer }),
                    Some(Inbound::Closed { reason }) => tracing::error!("master socket failed: {reason}"),
                    None => break,
                },
                Some(read) = queries.recv() => read(&mut self.core, Instant::now()),
                _ = tick.tick() => self.handle(Event::Tick),
            }
        }
        tracing::info!("master at {} stopped", self.address);
    }

    /// Hands `event` to the core now, and sends what it asks.
    fn handle(&mut self, event: Event) {
        for effect in self.core.handle(event, Instant::now()) {
            match effect {
                Effect::Send { to, message } => {
                    self.outbox.reply(&to, &message);
                }
            }
        }
    }
}
