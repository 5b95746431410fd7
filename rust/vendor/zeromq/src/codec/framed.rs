use crate::codec::ZmqCodec;
use crate::SocketOptions;

use super::error::{CodecError, CodecResult};
use super::framed_write::ZmqFramedWrite;
use super::large_body::LargeBody;
use super::Message;

use asynchronous_codec::Decoder;
use bytes::BytesMut;
use futures::{ready, AsyncRead, AsyncWrite, Stream};

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The read half of a connection.
///
/// parl_rs patch: upstream implemented this for every `AsyncRead`; it is now implemented per
/// type, so that a stream able to read into uninitialised memory can say so.
pub trait FrameableRead: AsyncRead + Unpin + Send + Sync {
    /// Reads into the spare capacity of `buf` (which must have some) without initialising it
    /// first, appending what was read; `None` if this stream cannot (`AsyncRead` needs
    /// initialised memory). Tokio's streams can (`transport/tokio_compat.rs`): a large frame
    /// body is then read into a fresh allocation with no memset at all.
    fn poll_read_spare(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut Vec<u8>,
    ) -> Option<Poll<io::Result<usize>>> {
        None
    }
}

impl<T: AsyncRead + Unpin + Send + Sync> FrameableRead for futures::io::ReadHalf<T> {}

pub trait FrameableWrite: AsyncWrite + Unpin + Send + Sync {}
impl<T> FrameableWrite for T where T: AsyncWrite + Unpin + Send + Sync {}

/// ZMTP framed reader with an adaptive read chunk.
///
/// Starts with a small read chunk and grows only when the transport keeps
/// filling the requested space. This avoids a large default allocation while
/// still reducing read/poll loops for large receive bursts. Short-read
/// recovery reduces initialization and allocation traffic after a burst ends.
pub struct ZmqFramedRead {
    inner: Box<dyn FrameableRead>,
    codec: ZmqCodec,
    buffer: BytesMut,
    read_chunk_size: usize,
    // Configuration is shared; adaptation state belongs to this connection.
    options: Arc<SocketOptions>,
    short_reads: usize,
    /// parl_rs patch: the large frame body being read, if any (see `large_body.rs`).
    large_body: Option<LargeBody>,
}

impl ZmqFramedRead {
    pub(crate) fn new(inner: Box<dyn FrameableRead>, options: Arc<SocketOptions>) -> Self {
        Self {
            inner,
            codec: ZmqCodec::reading_large_bodies_in_caller(&options),
            buffer: BytesMut::with_capacity(options.read_buffer_initial_size),
            read_chunk_size: options.read_buffer_initial_size,
            options,
            short_reads: 0,
            large_body: None,
        }
    }

    /// parl_rs patch: the limit on this connection's messages, which its socket may raise.
    pub(crate) fn message_limit(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        self.codec.message_limit()
    }

    /// parl_rs patch: reads the large frame body the decoder waits for (if it waits for
    /// one) into its own buffer; then hands it to the decoder, which may complete a message.
    fn poll_large_body(&mut self, cx: &mut Context<'_>) -> Poll<CodecResult<Option<Message>>> {
        if self.large_body.is_none() {
            let Some(len) = self.codec.pending_large_body() else {
                return Poll::Ready(Ok(None));
            };
            self.large_body = Some(LargeBody::start(len, &mut self.buffer));
        }
        let body = self.large_body.as_mut().expect("started above");
        while !body.is_complete() {
            if ready!(body.poll_fill(cx, &mut self.inner))? == 0 {
                return Poll::Ready(Err(CodecError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "bytes remaining in stream",
                ))));
            }
        }
        let (body, digest) = self.large_body.take().expect("read above").into_bytes();
        Poll::Ready(Ok(self.codec.finish_body(body, digest)))
    }

    fn poll_read_into_buffer(
        &mut self,
        cx: &mut Context<'_>,
        min_read_size: usize,
    ) -> Poll<io::Result<usize>> {
        let start = self.buffer.len();
        // parl_rs patch: upstream asked for at least the rest of the current frame
        // (`min_read_size`), and `resize` below zeroes all of it before every read. A read
        // returns far less than a large frame, so each read zeroed the whole remainder
        // again: quadratic in the frame size (a 16 MiB frame took ~64 reads, each zeroing
        // up to 16 MiB). The adaptive chunk alone keeps zeroing linear in the bytes read.
        let _ = min_read_size;
        let read_size = self.read_chunk_size.min(self.options.read_buffer_max_size);

        // futures::AsyncRead requires an initialized &mut [u8]. Grow BytesMut
        // first, then trim back to the actual read length so the read path does
        // not need a scratch buffer and a second data copy.
        // The decoder checks frame length + maximum chunk size at the wire
        // boundary, so preparing this slice cannot overflow its length.
        self.buffer.resize(start + read_size, 0);

        match Pin::new(&mut self.inner).poll_read(cx, &mut self.buffer[start..]) {
            Poll::Ready(Ok(bytes_read)) => {
                self.buffer.truncate(start + bytes_read);
                if bytes_read >= read_size
                    && self.read_chunk_size < self.options.read_buffer_max_size
                {
                    self.read_chunk_size =
                        (self.read_chunk_size * 2).min(self.options.read_buffer_max_size);
                }
                if bytes_read > 0 && bytes_read < self.read_chunk_size / 2 {
                    self.short_reads += 1;
                    if self.short_reads == self.options.read_buffer_short_reads {
                        // Confirm short reads before shrinking: an isolated burst tail
                        // otherwise makes the next batch repeatedly grow and shrink.
                        // Leave room above the observation without increasing the chunk.
                        self.read_chunk_size = (bytes_read.next_power_of_two() * 2)
                            .max(self.options.read_buffer_initial_size * 2)
                            .min(self.read_chunk_size);
                        self.short_reads = 0;
                    }
                } else if bytes_read > 0 {
                    self.short_reads = 0;
                }
                Poll::Ready(Ok(bytes_read))
            }
            Poll::Ready(Err(error)) => {
                self.buffer.truncate(start);
                Poll::Ready(Err(error))
            }
            Poll::Pending => {
                self.buffer.truncate(start);
                Poll::Pending
            }
        }
    }
}

impl Stream for ZmqFramedRead {
    type Item = CodecResult<Message>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;

        loop {
            // Consume buffered data first; read from the socket only when the
            // current buffer cannot produce a full message.
            if let Some(item) = this.codec.decode(&mut this.buffer)? {
                return Poll::Ready(Some(Ok(item)));
            }
            // parl_rs patch: a large body is read apart (then decoding resumes).
            if this.codec.pending_large_body().is_some() {
                if let Some(item) = ready!(this.poll_large_body(cx))? {
                    return Poll::Ready(Some(Ok(item)));
                }
                continue;
            }

            let min_read_size = this.codec.bytes_needed(this.buffer.len());
            if ready!(this.poll_read_into_buffer(cx, min_read_size))? > 0 {
                continue;
            }
            // End of stream. The decoder saw this buffer above; give it its one final
            // chance: leftover bytes mean the stream ended with a truncated frame.
            if this.buffer.is_empty() {
                return Poll::Ready(None);
            }
            return match this.codec.decode_eof(&mut this.buffer)? {
                Some(item) => Poll::Ready(Some(Ok(item))),
                None if this.buffer.is_empty() => Poll::Ready(None),
                None => Poll::Ready(Some(Err(CodecError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "bytes remaining in stream",
                ))))),
            };
        }
    }
}

/// Equivalent to [`asynchronous_codec::Framed<T, ZmqCodec>`]
pub struct FramedIo {
    pub read_half: ZmqFramedRead,
    pub write_half: ZmqFramedWrite,
}

impl FramedIo {
    pub fn new(
        read_half: Box<dyn FrameableRead>,
        write_half: Box<dyn FrameableWrite>,
        options: Arc<SocketOptions>,
    ) -> Self {
        let read_half = ZmqFramedRead::new(read_half, options);
        let write_half = ZmqFramedWrite::new(write_half);
        Self {
            read_half,
            write_half,
        }
    }

    pub fn into_parts(self) -> (ZmqFramedRead, ZmqFramedWrite) {
        (self.read_half, self.write_half)
    }
}

#[cfg(test)]
mod tests {
    mod large_body;
    mod read_buffer;
    mod socket_options;

    use super::*;
    use crate::async_rt;
    use crate::codec::ZmqGreeting;

    use bytes::{Bytes, BytesMut};
    use futures::StreamExt;
    use futures::{io::Cursor, AsyncRead};
    use std::io::ErrorKind;
    use std::sync::{Arc, Mutex};

    const INITIAL_READ_CHUNK_SIZE: usize = 128;
    const MAX_READ_CHUNK_SIZE: usize = 64 * 1024;

    struct RecordingReader {
        input: Vec<u8>,
        position: usize,
        requested_sizes: Arc<Mutex<Vec<usize>>>,
    }

    impl RecordingReader {
        fn new(input: Vec<u8>, requested_sizes: Arc<Mutex<Vec<usize>>>) -> Self {
            Self {
                input,
                position: 0,
                requested_sizes,
            }
        }
    }

    impl FrameableRead for Cursor<Vec<u8>> {}
    impl FrameableRead for RecordingReader {}

    impl AsyncRead for RecordingReader {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buffer: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            self.requested_sizes.lock().unwrap().push(buffer.len());

            let remaining = self.input.len() - self.position;
            if remaining == 0 {
                return Poll::Ready(Ok(0));
            }

            let bytes_read = remaining.min(buffer.len());
            let end = self.position + bytes_read;
            buffer[..bytes_read].copy_from_slice(&self.input[self.position..end]);
            self.position = end;

            Poll::Ready(Ok(bytes_read))
        }
    }

    fn encoded_stream(frames: &[&[u8]]) -> Vec<u8> {
        let mut bytes = BytesMut::from(ZmqGreeting::default());
        for frame in frames {
            if frame.len() > u8::MAX as usize {
                bytes.extend_from_slice(&[0b0000_0010]);
                bytes.extend_from_slice(&(frame.len() as u64).to_be_bytes());
            } else {
                bytes.extend_from_slice(&[0, frame.len() as u8]);
            }
            bytes.extend_from_slice(frame);
        }
        bytes.to_vec()
    }

    #[async_rt::test]
    async fn test_zmq_framed_read_yields_buffered_messages_before_reading_more() {
        let input = encoded_stream(&[b"first", b"second"]);
        let mut reader = ZmqFramedRead::new(
            Box::new(Cursor::new(input)),
            Arc::new(SocketOptions::default()),
        );

        assert!(matches!(
            reader.next().await,
            Some(Ok(Message::Greeting(_)))
        ));

        let first = reader
            .next()
            .await
            .expect("first message")
            .expect("decode first");
        let Message::Message(first) = first else {
            panic!("unexpected first frame type");
        };
        assert_eq!(first.get(0), Some(&Bytes::from_static(b"first")));

        let second = reader
            .next()
            .await
            .expect("second message")
            .expect("decode second");
        let Message::Message(second) = second else {
            panic!("unexpected second frame type");
        };
        assert_eq!(second.get(0), Some(&Bytes::from_static(b"second")));

        assert!(reader.next().await.is_none());
    }

    #[async_rt::test]
    async fn test_zmq_framed_read_reports_truncated_frame_at_eof() {
        let mut input = BytesMut::from(ZmqGreeting::default()).to_vec();
        input.extend_from_slice(&[0, 5, b'a']);
        let mut reader = ZmqFramedRead::new(
            Box::new(Cursor::new(input)),
            Arc::new(SocketOptions::default()),
        );

        assert!(matches!(
            reader.next().await,
            Some(Ok(Message::Greeting(_)))
        ));

        let error = reader
            .next()
            .await
            .expect("truncated frame should produce an item")
            .expect_err("truncated frame should fail");
        match error {
            CodecError::Io(error) => assert_eq!(error.kind(), ErrorKind::UnexpectedEof),
            other => panic!("unexpected error type: {other:?}"),
        }
    }

    // parl_rs patch: upstream asked for the rest of the frame after the first read
    // ([128, 545] here); reads now ask for the adaptive chunk, doubling while they fill.
    #[async_rt::test]
    async fn test_zmq_framed_read_grows_its_reads_while_they_fill() {
        let frame = vec![b'a'; 600];
        let requested_sizes = Arc::new(Mutex::new(Vec::new()));
        let input = encoded_stream(&[&frame]);
        let mut reader = ZmqFramedRead::new(
            Box::new(RecordingReader::new(input, Arc::clone(&requested_sizes))),
            Arc::new(SocketOptions::default()),
        );

        assert!(matches!(
            reader.next().await,
            Some(Ok(Message::Greeting(_)))
        ));

        let message = reader
            .next()
            .await
            .expect("message")
            .expect("decode message");
        let Message::Message(message) = message else {
            panic!("unexpected message type");
        };
        assert_eq!(message.get(0), Some(&Bytes::copy_from_slice(&frame)));

        assert_eq!(
            *requested_sizes.lock().unwrap(),
            vec![
                INITIAL_READ_CHUNK_SIZE,
                2 * INITIAL_READ_CHUNK_SIZE,
                4 * INITIAL_READ_CHUNK_SIZE
            ]
        );
    }
}
