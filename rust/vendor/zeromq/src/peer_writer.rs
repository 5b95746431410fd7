//! parl_rs patch: the sending side of one peer connection, shared by every sender and the
//! peer's writer task.
//!
//! Upstream queued every message on a channel to a writer task, so a send from a thread
//! outside the runtime always woke the runtime thread, which then wrote to the socket: two
//! context switches per message on the latency path of a request/reply. Here a sender on any
//! thread encodes and writes at once when the connection can take the bytes. Whatever the
//! kernel cannot take yet stays buffered, and the writer task finishes it when the socket
//! becomes writable again (the socket wakes that task, never the sender). Messages are
//! written in the order their `send` calls took the lock.

use crate::codec::{CodecError, Message, ZmqFramedWrite};

use futures::task::noop_waker_ref;
use futures::Sink;
use parking_lot::Mutex;

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// Messages a peer may have waiting before sends to it fail with [`SendError::Full`]
/// (upstream's channel capacity).
pub(crate) const BACKLOG_CAPACITY: usize = 100_000;

/// Why a message was not accepted (it is dropped).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The peer does not read: its backlog is full.
    Full,
    /// The connection failed or was closed.
    Closed,
}

struct WriterState {
    framed: Pin<Box<ZmqFramedWrite>>,
    /// Accepted messages not yet encoded (the encoder's buffer was above its high-water mark).
    backlog: VecDeque<Message>,
    /// `framed` holds encoded bytes not yet written.
    unflushed: bool,
    /// The writer task; the socket wakes it when it can take more bytes.
    task: Option<Waker>,
    /// A write failed: the connection is dead.
    broken: bool,
    /// That write's error, until the task reports it.
    failure: Option<CodecError>,
    /// Every sender is gone: the task ends once everything is written.
    closed: bool,
}

impl WriterState {
    /// Encodes and writes as much as the connection takes now.
    fn pump(&mut self, cx: &mut Context<'_>) {
        if self.broken {
            return;
        }
        if let Err(error) = self.try_pump(cx) {
            self.broken = true;
            self.failure = Some(error);
            self.backlog.clear();
        }
    }

    fn try_pump(&mut self, cx: &mut Context<'_>) -> Result<(), CodecError> {
        while !self.backlog.is_empty() {
            match self.framed.as_mut().poll_ready(cx) {
                Poll::Ready(ready) => ready?,
                Poll::Pending => return Ok(()),
            }
            let message = self.backlog.pop_front().expect("checked non-empty");
            self.framed.as_mut().start_send(message)?;
            self.unflushed = true;
        }
        if self.unflushed {
            if let Poll::Ready(flushed) = self.framed.as_mut().poll_flush(cx) {
                flushed?;
                self.unflushed = false;
            }
        }
        Ok(())
    }

    fn idle(&self) -> bool {
        self.backlog.is_empty() && !self.unflushed
    }
}

/// One peer's writer. Cloned handles ([`PeerSender`]) send; [`PeerWriter::run`] is the task.
pub(crate) struct PeerWriter {
    state: Mutex<WriterState>,
    senders: AtomicUsize,
}

impl PeerWriter {
    /// The writer of a new connection and its first sender handle.
    pub(crate) fn new(framed: ZmqFramedWrite) -> (Arc<PeerWriter>, PeerSender) {
        let writer = Arc::new(PeerWriter {
            state: Mutex::new(WriterState {
                framed: Box::pin(framed),
                backlog: VecDeque::new(),
                unflushed: false,
                task: None,
                broken: false,
                failure: None,
                closed: false,
            }),
            senders: AtomicUsize::new(1),
        });
        let sender = PeerSender {
            writer: writer.clone(),
        };
        (writer, sender)
    }

    /// The writer task: writes what senders left buffered whenever the socket can take it.
    /// Ends with the connection's first write error, or with Ok once every sender is gone
    /// and everything was written.
    pub(crate) async fn run(self: Arc<Self>) -> Result<(), CodecError> {
        poll_fn(|cx| {
            let mut state = self.state.lock();
            if !state
                .task
                .as_ref()
                .is_some_and(|task| task.will_wake(cx.waker()))
            {
                state.task = Some(cx.waker().clone());
            }
            state.pump(cx);
            if let Some(error) = state.failure.take() {
                return Poll::Ready(Err(error));
            }
            if state.closed && state.idle() {
                return Poll::Ready(Ok(()));
            }
            Poll::Pending
        })
        .await
    }

    fn send(&self, message: Message) -> Result<(), SendError> {
        let mut state = self.state.lock();
        if state.broken || state.closed {
            return Err(SendError::Closed);
        }
        if state.backlog.len() >= BACKLOG_CAPACITY {
            return Err(SendError::Full);
        }
        state.backlog.push_back(message);
        // Bytes the socket cannot take now are finished by the task, so the socket must
        // wake the task, not this caller. Before the task's first poll there is no waker yet;
        // that first poll pumps anyway.
        let task = state.task.take();
        let waker = task.as_ref().unwrap_or_else(|| noop_waker_ref());
        state.pump(&mut Context::from_waker(waker));
        // The task reports a write error (the socket then drops the peer).
        let wake = task.as_ref().filter(|_| state.failure.is_some()).cloned();
        state.task = task;
        drop(state);
        if let Some(task) = wake {
            task.wake();
        }
        Ok(())
    }

    fn sender_dropped(&self) {
        if self.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            let task = {
                let mut state = self.state.lock();
                state.closed = true;
                state.task.clone()
            };
            if let Some(task) = task {
                task.wake();
            }
        }
    }
}

/// A handle that sends to one peer from any thread; see the module comment.
pub(crate) struct PeerSender {
    writer: Arc<PeerWriter>,
}

impl PeerSender {
    /// Queues `message` and writes as much as the connection takes now, without waiting.
    pub(crate) fn send(&self, message: Message) -> Result<(), SendError> {
        self.writer.send(message)
    }
}

impl Clone for PeerSender {
    fn clone(&self) -> Self {
        self.writer.senders.fetch_add(1, Ordering::AcqRel);
        PeerSender {
            writer: self.writer.clone(),
        }
    }
}

impl Drop for PeerSender {
    fn drop(&mut self) {
        self.writer.sender_dropped();
    }
}

#[cfg(test)]
pub(crate) mod test_writer {
    //! In-memory connections for tests: one that takes everything, one that takes nothing
    //! until opened, one that fails.

    use futures::AsyncWrite;
    use parking_lot::Mutex;

    use std::io;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};
    use std::thread::ThreadId;

    #[derive(Default)]
    struct Shared {
        bytes: Vec<u8>,
        /// Whether writes are taken (a closed gate answers Pending).
        open: bool,
        waiting: Option<Waker>,
        /// The threads that wrote.
        writers: Vec<ThreadId>,
    }

    /// What a [`TestWriter`] received.
    #[derive(Clone, Default)]
    pub(crate) struct Recorded(Arc<Mutex<Shared>>);

    impl Recorded {
        pub(crate) fn contains(&self, needle: &[u8]) -> bool {
            self.position(needle).is_some()
        }

        pub(crate) fn position(&self, needle: &[u8]) -> Option<usize> {
            self.0
                .lock()
                .bytes
                .windows(needle.len())
                .position(|w| w == needle)
        }

        pub(crate) fn writer_threads(&self) -> Vec<ThreadId> {
            self.0.lock().writers.clone()
        }

        /// Lets writes through and wakes the task that waits to write.
        pub(crate) fn open(&self) {
            let waiting = {
                let mut shared = self.0.lock();
                shared.open = true;
                shared.waiting.take()
            };
            if let Some(waker) = waiting {
                waker.wake();
            }
        }
    }

    pub(crate) struct TestWriter {
        recorded: Recorded,
        fail: bool,
    }

    impl TestWriter {
        pub(crate) fn recording() -> (TestWriter, Recorded) {
            let recorded = Recorded::default();
            recorded.0.lock().open = true;
            let writer = TestWriter {
                recorded: recorded.clone(),
                fail: false,
            };
            (writer, recorded)
        }

        /// Takes nothing until `Recorded::open`.
        pub(crate) fn gated() -> (TestWriter, Recorded) {
            let recorded = Recorded::default();
            let writer = TestWriter {
                recorded: recorded.clone(),
                fail: false,
            };
            (writer, recorded)
        }

        pub(crate) fn stuck() -> TestWriter {
            Self::gated().0
        }

        pub(crate) fn failing() -> TestWriter {
            TestWriter {
                recorded: Recorded::default(),
                fail: true,
            }
        }
    }

    impl AsyncWrite for TestWriter {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.fail {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone")));
            }
            let mut shared = self.recorded.0.lock();
            if !shared.open {
                shared.waiting = Some(cx.waker().clone());
                return Poll::Pending;
            }
            shared.bytes.extend_from_slice(buf);
            shared.writers.push(std::thread::current().id());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_writer::TestWriter;
    use super::*;
    use crate::async_rt;
    use crate::ZmqMessage;

    use bytes::Bytes;

    use std::time::Duration;

    fn message(frame: &'static [u8]) -> Message {
        Message::Message(ZmqMessage::from(Bytes::from_static(frame)))
    }

    fn writer(test_writer: TestWriter) -> (Arc<PeerWriter>, PeerSender) {
        PeerWriter::new(ZmqFramedWrite::new(Box::new(test_writer)))
    }

    #[test]
    fn a_send_writes_on_the_calling_thread_without_the_writer_task() {
        let (test_writer, recorded) = TestWriter::recording();
        let (_writer, sender) = writer(test_writer);

        // No task runs at all here: the bytes can only have been written by `send` itself.
        let thread = std::thread::spawn(move || {
            sender.send(message(b"first")).expect("send");
            sender.send(message(b"second")).expect("send");
            std::thread::current().id()
        })
        .join()
        .expect("sender thread");

        assert!(recorded.contains(b"first") && recorded.contains(b"second"));
        assert!(recorded.writer_threads().iter().all(|t| *t == thread));
    }

    #[async_rt::test]
    async fn what_the_connection_cannot_take_now_the_task_writes_later_in_order() {
        let (test_writer, recorded) = TestWriter::gated();
        let (writer, sender) = writer(test_writer);
        let task = async_rt::task::spawn(writer.run());
        // Let the task register itself with the connection.
        async_rt::task::sleep(Duration::from_millis(10)).await;

        sender.send(message(b"one")).expect("send");
        sender.send(message(b"two")).expect("send");
        assert!(!recorded.contains(b"one"));

        recorded.open();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !recorded.contains(b"two") {
            assert!(std::time::Instant::now() < deadline, "the task never wrote");
            async_rt::task::sleep(Duration::from_millis(1)).await;
        }
        assert!(recorded.position(b"one") < recorded.position(b"two"));

        // Every sender gone and everything written: the task ends.
        drop(sender);
        task.await.expect("task").expect("no write error");
    }

    #[async_rt::test]
    async fn a_write_error_ends_the_task_with_it_and_refuses_later_sends() {
        let (writer, sender) = writer(TestWriter::failing());
        let task = async_rt::task::spawn(writer.run());

        sender
            .send(message(b"lost"))
            .expect("accepted before the failure is known");
        assert!(task.await.expect("task").is_err());
        assert_eq!(sender.send(message(b"later")), Err(SendError::Closed));
    }
}
