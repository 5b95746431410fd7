use crate::async_rt;
#[cfg(test)]
use crate::codec::ZmqFramedWrite;
use crate::codec::{FramedIo, Message, ZmqFramedRead};
use crate::fair_queue::QueueInner;
use crate::peer_writer::{PeerSender, PeerWriter, SendError};
use crate::util::PeerIdentity;
use crate::{
    MultiPeerBackend, SocketBackend, SocketEvent, SocketOptions, SocketType, ZmqError, ZmqResult,
};

use async_trait::async_trait;
use crossbeam_queue::SegQueue;
use futures::channel::mpsc;
use parking_lot::Mutex;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Sender for notifying reconnection tasks when a peer disconnects.
pub(crate) type DisconnectNotifier = mpsc::Sender<PeerIdentity>;

pub(crate) struct Peer {
    pub(crate) sender: PeerSender,
    /// parl_rs patch: the limit on the messages this peer may send (see
    /// `SocketOptions::first_message_size`).
    message_limit: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct SinglePeer {
    peer_id: PeerIdentity,
    sender: PeerSender,
}

pub(crate) struct GenericSocketBackend {
    pub(crate) peers: scc::HashMap<PeerIdentity, Peer>,
    fair_queue_inner: Option<Arc<Mutex<QueueInner<ZmqFramedRead, PeerIdentity>>>>,
    pub(crate) round_robin: SegQueue<PeerIdentity>,
    socket_type: SocketType,
    socket_options: Arc<SocketOptions>,
    pub(crate) socket_monitor: Mutex<Option<mpsc::Sender<SocketEvent>>>,
    single_peer: Mutex<Option<SinglePeer>>,
    peer_count: AtomicUsize,
    /// Notifiers for reconnection tasks - keyed by `peer_id`
    disconnect_notifiers: Mutex<HashMap<PeerIdentity, DisconnectNotifier>>,
}

impl GenericSocketBackend {
    pub(crate) fn with_options(
        fair_queue_inner: Option<Arc<Mutex<QueueInner<ZmqFramedRead, PeerIdentity>>>>,
        socket_type: SocketType,
        options: SocketOptions,
    ) -> Self {
        Self {
            peers: scc::HashMap::new(),
            fair_queue_inner,
            round_robin: SegQueue::new(),
            socket_type,
            socket_options: Arc::new(options),
            socket_monitor: Mutex::new(None),
            single_peer: Mutex::new(None),
            peer_count: AtomicUsize::new(0),
            disconnect_notifiers: Mutex::new(HashMap::new()),
        }
    }

    /// parl_rs patch: lets `peer_id` (every peer if None) send messages up to
    /// `max_message_size` from now on. Returns how many peers it applied to.
    pub(crate) fn raise_message_limit(&self, peer_id: Option<&PeerIdentity>) -> usize {
        let full = self.socket_options.max_message_size;
        let raise = |peer: &Peer| peer.message_limit.store(full, Ordering::Relaxed);
        match peer_id {
            Some(peer_id) => usize::from(
                self.peers
                    .read_sync(peer_id, |_, peer| raise(peer))
                    .is_some(),
            ),
            None => {
                let mut raised = 0;
                self.peers.iter_sync(|_, peer| {
                    raise(peer);
                    raised += 1;
                    true
                });
                raised
            }
        }
    }

    /// Register a notifier to be called when a peer disconnects.
    ///
    /// Used by reconnection tasks to be notified when they should attempt reconnection.
    #[allow(dead_code)] // Will be used when reconnection is added to more socket types
    pub(crate) fn register_disconnect_notifier(
        &self,
        peer_id: PeerIdentity,
        notifier: DisconnectNotifier,
    ) {
        self.disconnect_notifiers.lock().insert(peer_id, notifier);
    }

    /// Unregister a disconnect notifier for a peer.
    #[allow(dead_code)] // Will be used when reconnection is added to more socket types
    pub(crate) fn unregister_disconnect_notifier(&self, peer_id: &PeerIdentity) {
        self.disconnect_notifiers.lock().remove(peer_id);
    }

    pub(crate) async fn send_round_robin(&self, message: Message) -> ZmqResult<()> {
        self.send_round_robin_now(message)
    }

    pub(crate) async fn send_to_peer(
        &self,
        peer_id: &PeerIdentity,
        message: Message,
    ) -> ZmqResult<()> {
        self.send_to_peer_now(peer_id, message)
    }

    /// parl_rs patch: sends never wait (see `peer_writer`): the message is written on the
    /// calling thread when the connection takes it, else buffered for the peer's writer task.
    pub(crate) fn send_round_robin_now(&self, message: Message) -> ZmqResult<()> {
        let message = match self.send_cached_single_peer(message, None)? {
            None => return Ok(()),
            Some(message) => message,
        };
        // In normal scenario this will always be only 1 iteration
        // There can be special case when peer has disconnected and his id is still in
        // RR queue This happens because SegQueue don't have an api to delete
        // items from queue. So in such case we'll just pop item and skip it if
        // we don't have a matching peer in peers map
        loop {
            let next_peer_id = match self.round_robin.pop() {
                Some(peer) => peer,
                None => match message {
                    Message::Greeting(_) => {
                        return Err(ZmqError::Socket("Sending greeting is not supported"))
                    }
                    Message::Command(_) => {
                        return Err(ZmqError::Socket("Sending commands is not supported"))
                    }
                    Message::Message(m) => {
                        return Err(ZmqError::ReturnToSender {
                            reason: "Not connected to peers. Unable to send messages",
                            message: m,
                        })
                    }
                },
            };
            let Some(sender) = self
                .peers
                .read_sync(&next_peer_id, |_, peer| peer.sender.clone())
            else {
                continue;
            };
            self.send_or_drop_peer(&next_peer_id, &sender, message)?;
            self.round_robin.push(next_peer_id);
            return Ok(());
        }
    }

    pub(crate) fn send_to_peer_now(
        &self,
        peer_id: &PeerIdentity,
        message: Message,
    ) -> ZmqResult<()> {
        let message = match self.send_cached_single_peer(message, Some(peer_id))? {
            None => return Ok(()),
            Some(message) => message,
        };
        match self.peers.read_sync(peer_id, |_, peer| peer.sender.clone()) {
            Some(sender) => self.send_or_drop_peer(peer_id, &sender, message),
            None => Err(ZmqError::Other("Destination client not found by identity")),
        }
    }

    /// Sends through the single-peer cache when it holds the peer; gives the message back
    /// when it does not.
    fn send_cached_single_peer(
        &self,
        message: Message,
        expected_peer_id: Option<&PeerIdentity>,
    ) -> ZmqResult<Option<Message>> {
        if self.peer_count.load(Ordering::Acquire) != 1 {
            return Ok(Some(message));
        }
        let cached = self.single_peer.lock().clone();
        let Some(single_peer) = cached else {
            return Ok(Some(message));
        };
        if expected_peer_id.is_some_and(|expected| single_peer.peer_id != *expected) {
            return Ok(Some(message));
        }
        self.send_or_drop_peer(&single_peer.peer_id, &single_peer.sender, message)?;
        Ok(None)
    }

    fn send_or_drop_peer(
        &self,
        peer_id: &PeerIdentity,
        sender: &PeerSender,
        message: Message,
    ) -> ZmqResult<()> {
        match sender.send(message) {
            Ok(()) => Ok(()),
            Err(SendError::Full) => Err(ZmqError::BufferFull(
                "Failed to send message: the peer's send queue is full",
            )),
            Err(SendError::Closed) => {
                self.peer_disconnected(peer_id);
                Err(ZmqError::Other(
                    "Failed to send message: the peer's connection is closed",
                ))
            }
        }
    }

    fn refresh_single_peer_cache(&self) {
        let peer_count = self.peers.len();
        self.peer_count.store(peer_count, Ordering::Release);

        let mut single_peer = self.single_peer.lock();
        if peer_count == 1 {
            *single_peer = self.peers.begin_sync().map(|peer| SinglePeer {
                peer_id: peer.key().clone(),
                sender: peer.sender.clone(),
            });
        } else {
            *single_peer = None;
        }
    }
}

impl SocketBackend for GenericSocketBackend {
    fn socket_type(&self) -> SocketType {
        self.socket_type
    }

    fn socket_options(&self) -> &Arc<SocketOptions> {
        &self.socket_options
    }

    fn shutdown(&self) {
        self.peers.clear_sync();
        self.single_peer.lock().take();
        self.peer_count.store(0, Ordering::Release);
        // Clear fair_queue streams to ensure TCP connections are closed
        // even when reconnect tasks still hold Arc references to the backend
        if let Some(inner) = &self.fair_queue_inner {
            inner.lock().clear();
        }
    }

    fn monitor(&self) -> &Mutex<Option<mpsc::Sender<SocketEvent>>> {
        &self.socket_monitor
    }
}

#[async_trait]
impl MultiPeerBackend for GenericSocketBackend {
    async fn peer_connected(self: Arc<Self>, peer_id: &PeerIdentity, io: FramedIo) {
        let (recv_queue, send_queue) = io.into_parts();
        let (writer, sender) = PeerWriter::new(send_queue);
        let message_limit = recv_queue.message_limit();
        self.peers
            .upsert_async(
                peer_id.clone(),
                Peer {
                    sender,
                    message_limit,
                },
            )
            .await;
        self.refresh_single_peer_cache();
        let writer_backend = self.clone();
        let writer_peer_id = peer_id.clone();
        async_rt::task::spawn(async move {
            if let Err(error) = writer.run().await {
                log::debug!(
                    "Error sending message to peer {:?}: {:?}",
                    writer_peer_id,
                    error
                );
                writer_backend.peer_disconnected(&writer_peer_id);
            }
        });
        self.round_robin.push(peer_id.clone());
        match &self.fair_queue_inner {
            None => {}
            Some(inner) => {
                inner.lock().insert(peer_id.clone(), recv_queue);
            }
        };
    }

    fn peer_disconnected(&self, peer_id: &PeerIdentity) {
        let peer_removed = self.peers.remove_sync(peer_id).is_some();
        self.refresh_single_peer_cache();
        match &self.fair_queue_inner {
            None => {}
            Some(inner) => {
                inner.lock().remove(peer_id);
            }
        };

        if peer_removed {
            if let Some(monitor) = self.monitor().lock().as_mut() {
                let _ = monitor.try_send(SocketEvent::Disconnected(peer_id.clone()));
            }
        }

        // Notify reconnection task if registered
        if let Some(mut notifier) = self.disconnect_notifiers.lock().remove(peer_id) {
            // Use try_send to avoid blocking - if channel is full, the reconnect task
            // will eventually notice the peer is gone
            let _ = notifier.try_send(peer_id.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer_writer::test_writer::{Recorded, TestWriter};
    use crate::ZmqMessage;

    use bytes::Bytes;
    use futures::StreamExt;

    fn message_with_frame(frame: &'static [u8]) -> Message {
        Message::Message(ZmqMessage::from(Bytes::from_static(frame)))
    }

    /// A peer whose connection writes into memory (or fails, or never takes a byte).
    async fn insert_peer_with(
        backend: &GenericSocketBackend,
        peer_id: PeerIdentity,
        writer: TestWriter,
    ) -> PeerIdentity {
        let framed = ZmqFramedWrite::new(Box::new(writer));
        let (writer, sender) = PeerWriter::new(framed);
        async_rt::task::spawn(async move {
            let _ = writer.run().await;
        });
        backend
            .peers
            .upsert_async(
                peer_id.clone(),
                Peer {
                    sender,
                    message_limit: Arc::default(),
                },
            )
            .await;
        backend.refresh_single_peer_cache();
        backend.round_robin.push(peer_id.clone());
        peer_id
    }

    async fn insert_peer(
        backend: &GenericSocketBackend,
        peer_id: &str,
    ) -> (PeerIdentity, Recorded) {
        let (writer, recorded) = TestWriter::recording();
        let peer_id = insert_peer_with(backend, peer_id.parse().expect("peer id"), writer).await;
        (peer_id, recorded)
    }

    #[crate::async_rt::test]
    async fn test_send_round_robin_uses_single_peer_cache() {
        let backend =
            GenericSocketBackend::with_options(None, SocketType::PUSH, SocketOptions::default());
        let (_peer_id, recorded) = insert_peer(&backend, "peer-a").await;

        assert_eq!(1, backend.peer_count.load(Ordering::Acquire));
        assert!(backend.single_peer.lock().is_some());

        backend
            .send_round_robin(message_with_frame(b"payload"))
            .await
            .expect("send through single peer cache");

        assert!(recorded.contains(b"payload"));
    }

    #[crate::async_rt::test]
    async fn test_send_to_peer_uses_single_peer_cache_for_matching_identity() {
        let backend =
            GenericSocketBackend::with_options(None, SocketType::ROUTER, SocketOptions::default());
        let (peer_id, recorded) = insert_peer(&backend, "router-peer").await;

        assert_eq!(
            Some(peer_id.clone()),
            backend
                .single_peer
                .lock()
                .as_ref()
                .map(|peer| peer.peer_id.clone())
        );

        backend
            .send_to_peer(&peer_id, message_with_frame(b"routed"))
            .await
            .expect("send to cached peer");

        assert!(recorded.contains(b"routed"));
    }

    #[crate::async_rt::test]
    async fn test_send_to_peer_routes_by_identity_with_multiple_peers() {
        let backend =
            GenericSocketBackend::with_options(None, SocketType::ROUTER, SocketOptions::default());
        let (_first_peer_id, first) = insert_peer(&backend, "router-peer-a").await;
        let (second_peer_id, second) = insert_peer(&backend, "router-peer-b").await;

        assert_eq!(2, backend.peer_count.load(Ordering::Acquire));
        assert!(backend.single_peer.lock().is_none());

        backend
            .send_to_peer(&second_peer_id, message_with_frame(b"routed-b"))
            .await
            .expect("send to selected peer");

        assert!(!first.contains(b"routed-b"));
        assert!(second.contains(b"routed-b"));
    }

    #[crate::async_rt::test]
    async fn test_send_fails_when_the_peer_does_not_read() {
        let backend =
            GenericSocketBackend::with_options(None, SocketType::PUSH, SocketOptions::default());
        insert_peer_with(
            &backend,
            "stuck".parse().expect("peer id"),
            TestWriter::stuck(),
        )
        .await;

        // The encoder buffers up to its high-water mark, then the backlog fills up.
        let mut error = None;
        for _ in 0..=10 * crate::peer_writer::BACKLOG_CAPACITY {
            if let Err(e) = backend.send_round_robin(message_with_frame(b"x")).await {
                error = Some(e);
                break;
            }
        }

        assert!(matches!(error, Some(ZmqError::BufferFull(_))), "{error:?}");
        // A full peer is not a dead one.
        assert_eq!(1, backend.peer_count.load(Ordering::Acquire));
    }

    #[crate::async_rt::test]
    async fn test_single_peer_cache_is_cleared_when_cached_sender_is_disconnected() {
        let backend =
            GenericSocketBackend::with_options(None, SocketType::PUSH, SocketOptions::default());
        let peer_id: PeerIdentity = "closed-peer".parse().expect("peer id");
        insert_peer_with(&backend, peer_id.clone(), TestWriter::failing()).await;

        // The write that fails is accepted; the connection is then known dead.
        let _ = backend.send_round_robin(message_with_frame(b"lost")).await;
        let error = backend
            .send_round_robin(message_with_frame(b"lost too"))
            .await
            .expect_err("closed cached sender should fail");

        assert!(matches!(error, ZmqError::Other(_)), "{error:?}");
        assert_eq!(0, backend.peer_count.load(Ordering::Acquire));
        assert!(backend.single_peer.lock().is_none());
        assert!(backend.peers.get_async(&peer_id).await.is_none());
    }

    #[crate::async_rt::test]
    async fn test_peer_disconnected_emits_one_monitor_event() {
        let backend =
            GenericSocketBackend::with_options(None, SocketType::ROUTER, SocketOptions::default());
        let (monitor_sender, mut monitor_receiver) = mpsc::channel(8);
        backend.socket_monitor.lock().replace(monitor_sender);
        let (peer_id, _recorded) = insert_peer(&backend, "monitor-peer").await;

        backend.peer_disconnected(&peer_id);

        let event = monitor_receiver.next().await.expect("disconnect event");
        assert!(matches!(
            event,
            SocketEvent::Disconnected(disconnected_peer) if disconnected_peer == peer_id
        ));

        backend.peer_disconnected(&peer_id);
        assert!(monitor_receiver.try_recv().is_err());
    }
}
