use super::*;
use crate::codec::ZmqCodec;
use crate::ZmqMessage;

use asynchronous_codec::Encoder;
use futures::{AsyncWrite, SinkExt};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Default)]
struct Recorded {
    bytes: Vec<u8>,
    /// Start address and length of every slice handed to a write.
    slices: Vec<(usize, usize)>,
    calls: usize,
}

/// Accepts at most `limit` bytes per write and, if `pending`, answers every other write
/// with `Pending` first.
struct RecordingWriter {
    recorded: Arc<Mutex<Recorded>>,
    limit: usize,
    pending: bool,
    stall: bool,
}

impl RecordingWriter {
    fn new(limit: usize, pending: bool) -> (Self, Arc<Mutex<Recorded>>) {
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let writer = Self {
            recorded: Arc::clone(&recorded),
            limit,
            pending,
            stall: false,
        };
        (writer, recorded)
    }
}

impl AsyncWrite for RecordingWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.pending {
            self.stall = !self.stall;
            if self.stall {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        let mut recorded = self.recorded.lock();
        recorded.calls += 1;
        let mut room = self.limit;
        for slice in bufs {
            recorded.slices.push((slice.as_ptr() as usize, slice.len()));
            let taken = slice.len().min(room);
            recorded.bytes.extend_from_slice(&slice[..taken]);
            room -= taken;
            if room == 0 {
                break;
            }
        }
        Poll::Ready(Ok(self.limit - room))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What upstream's encoder (which copies every body) puts on the wire.
fn reference_encoding(messages: &[ZmqMessage]) -> Vec<u8> {
    let mut wire = BytesMut::new();
    for message in messages {
        ZmqCodec::new()
            .encode(Message::Message(message.clone()), &mut wire)
            .unwrap();
    }
    wire.to_vec()
}

fn message(frames: &[Bytes]) -> ZmqMessage {
    ZmqMessage::try_from(frames.to_vec()).unwrap()
}

#[crate::async_rt::test]
async fn large_frame_bodies_are_written_from_their_own_memory() {
    let large = Bytes::from(vec![7u8; 1 << 20]);
    let sent = message(&[Bytes::from_static(b"head"), large.clone()]);
    let (writer, recorded) = RecordingWriter::new(usize::MAX, false);
    let mut sink = ZmqFramedWrite::new(Box::new(writer));

    sink.send(Message::Message(sent.clone())).await.unwrap();

    let recorded = recorded.lock();
    assert_eq!(recorded.bytes, reference_encoding(&[sent]));
    // One writev: the staged headers, then the body from where the sender keeps it.
    assert_eq!(recorded.calls, 1);
    assert!(recorded
        .slices
        .contains(&(large.as_ptr() as usize, large.len())));
}

#[crate::async_rt::test]
async fn short_and_pending_writes_keep_wire_order() {
    let messages: Vec<ZmqMessage> = (0..6u8)
        .map(|i| {
            let size = [3, ZERO_COPY_MIN - 1, ZERO_COPY_MIN, 300_001][usize::from(i) % 4];
            message(&[
                Bytes::from(vec![i; 5]),
                Bytes::from(vec![i + 100; size]),
                Bytes::from(vec![i + 200; 300]),
            ])
        })
        .collect();
    for limit in [1, 7, 4096, 70_000] {
        let (writer, recorded) = RecordingWriter::new(limit, true);
        let mut sink = ZmqFramedWrite::new(Box::new(writer));
        for message in &messages {
            sink.feed(Message::Message(message.clone())).await.unwrap();
        }
        sink.flush().await.unwrap();
        assert_eq!(
            recorded.lock().bytes,
            reference_encoding(&messages),
            "limit {limit}"
        );
    }
}

struct DropFlag(Arc<AtomicBool>, Vec<u8>);

impl AsRef<[u8]> for DropFlag {
    fn as_ref(&self) -> &[u8] {
        &self.1
    }
}

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[crate::async_rt::test]
async fn a_written_body_is_released_at_once() {
    // parl_rs lends numpy buffers to frames and waits until they are dropped.
    let dropped = Arc::new(AtomicBool::new(false));
    let body = Bytes::from_owner(DropFlag(Arc::clone(&dropped), vec![1; ZERO_COPY_MIN]));
    let (writer, _recorded) = RecordingWriter::new(usize::MAX, false);
    let mut sink = ZmqFramedWrite::new(Box::new(writer));

    sink.feed(Message::Message(ZmqMessage::from(body)))
        .await
        .unwrap();
    assert!(!dropped.load(Ordering::SeqCst));
    sink.flush().await.unwrap();
    assert!(dropped.load(Ordering::SeqCst));
}

#[test]
fn poll_ready_waits_while_a_high_water_mark_is_queued() {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    for (size, ready) in [(HIGH_WATER_MARK - 16, true), (HIGH_WATER_MARK, false)] {
        let (mut writer, _recorded) = RecordingWriter::new(usize::MAX, true);
        // Stalls on the first write only; later polls would write.
        writer.stall = false;
        let mut sink = ZmqFramedWrite::new(Box::new(writer));
        let mut sink = Pin::new(&mut sink);
        sink.as_mut()
            .start_send(Message::Message(ZmqMessage::from(vec![0u8; size])))
            .unwrap();
        assert_eq!(
            sink.as_mut().poll_ready(&mut cx).is_ready(),
            ready,
            "{size}"
        );
    }
}

struct ClosedWriter;

impl AsyncWrite for ClosedWriter {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(0))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[crate::async_rt::test]
async fn a_writer_that_takes_nothing_is_an_error() {
    let mut sink = ZmqFramedWrite::new(Box::new(ClosedWriter));
    let error = sink
        .send(Message::Message(ZmqMessage::from(vec![1u8; 10])))
        .await
        .unwrap_err();
    assert!(
        matches!(error, crate::codec::CodecError::Io(e) if e.kind() == io::ErrorKind::WriteZero)
    );
}
