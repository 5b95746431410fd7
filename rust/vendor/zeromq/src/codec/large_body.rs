//! parl_rs patch: a large frame body read into an allocation of its own.
//!
//! Upstream read every frame into the connection's shared read buffer and split the body off
//! it, so a large body shared its allocation with the buffer (a receiver could never own it
//! alone) and each new large frame regrew that buffer. A body of `LARGE_BODY_MIN` bytes or
//! more is now read straight into a buffer of exactly its length, which becomes a uniquely
//! owned `Bytes` (`Bytes::try_into_mut` succeeds on it). Only the part that had already
//! arrived in the shared buffer with the frame header is copied.
//!
//! Each part is hashed (BLAKE3) right after it arrives, while the peer is still sending the
//! rest: parl_rs authenticates messages with a tag over the hashes of their large frames, and
//! this hashing then overlaps the transfer instead of following it.

use super::framed::FrameableRead;
use super::zmq_codec::MAX_PREALLOCATION;

use bytes::{Buf, Bytes, BytesMut};
use futures::ready;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

pub(crate) struct LargeBody {
    /// The body's memory: `..filled` received, `filled..len()` zeroed but not yet received
    /// (only for streams that cannot read into uninitialised memory), the rest of the
    /// capacity uninitialised. The capacity is at most `MAX_PREALLOCATION` beyond what has
    /// been received, so a peer announcing 2^62 bytes and sending none costs nothing.
    data: Vec<u8>,
    /// Bytes received.
    filled: usize,
    /// The body's length, from the frame header (already checked against the message limit).
    len: usize,
    /// BLAKE3 of `..filled`.
    hasher: blake3::Hasher,
}

impl LargeBody {
    /// Starts a body of `len` bytes with what of it is already in `buffered`.
    pub(crate) fn start(len: usize, buffered: &mut BytesMut) -> Self {
        let filled = buffered.len().min(len);
        let mut data = Vec::with_capacity(len.min(filled + MAX_PREALLOCATION));
        data.extend_from_slice(&buffered[..filled]);
        buffered.advance(filled);
        let mut hasher = blake3::Hasher::new();
        hasher.update(&data);
        Self {
            data,
            filled,
            len,
            hasher,
        }
    }

    /// Counts `read` more bytes as received, and hashes them.
    fn received(&mut self, read: usize) {
        self.hasher
            .update(&self.data[self.filled..self.filled + read]);
        self.filled += read;
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.filled == self.len
    }

    /// One read of the rest of the body, straight into its buffer; `Ok(0)` at end of stream.
    pub(crate) fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut Box<dyn FrameableRead>,
    ) -> Poll<io::Result<usize>> {
        let mut reader = Pin::new(&mut **reader);
        if self.filled == self.data.len() {
            if self.data.len() == self.data.capacity() {
                self.data
                    .reserve_exact((self.len - self.filled).min(MAX_PREALLOCATION));
            }
            if let Some(read) = reader.as_mut().poll_read_spare(cx, &mut self.data) {
                let read = ready!(read)?;
                self.received(read);
                return Poll::Ready(Ok(read));
            }
            // `AsyncRead` needs initialised memory: zero the rest of the allocation, once.
            self.data.resize(self.data.capacity(), 0);
        }
        let read = ready!(reader.poll_read(cx, &mut self.data[self.filled..]))?;
        self.received(read);
        Poll::Ready(Ok(read))
    }

    /// The complete body, and its BLAKE3 hash.
    pub(crate) fn into_bytes(mut self) -> (Bytes, [u8; 32]) {
        debug_assert!(self.is_complete());
        self.data.truncate(self.filled);
        (Bytes::from(self.data), *self.hasher.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    fn fill(body: &mut LargeBody, reader: &mut Box<dyn FrameableRead>) -> usize {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        match body.poll_fill(&mut cx, reader) {
            Poll::Ready(Ok(read)) => read,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_body_takes_its_buffered_part_and_reads_the_rest_into_its_own_memory() {
        let mut buffered = BytesMut::from(&b"abcd"[..]);
        let mut body = LargeBody::start(10, &mut buffered);
        assert!(buffered.is_empty());
        let mut reader: Box<dyn FrameableRead> = Box::new(Cursor::new(b"efghijMORE".to_vec()));
        assert_eq!(fill(&mut body, &mut reader), 6);
        assert!(body.is_complete());
        let (bytes, digest) = body.into_bytes();
        assert_eq!(&bytes[..], b"abcdefghij");
        assert_eq!(digest, *blake3::hash(b"abcdefghij").as_bytes());
        // Uniquely owned: a receiver may turn it into writable memory without a copy.
        assert!(bytes.is_unique());
        assert!(bytes.try_into_mut().is_ok());
    }

    #[test]
    fn a_body_leaves_the_next_frame_in_the_buffer() {
        let mut buffered = BytesMut::from(&b"abcdefghijNEXT"[..]);
        let body = LargeBody::start(10, &mut buffered);
        assert_eq!(&buffered[..], b"NEXT");
        assert!(body.is_complete());
        assert_eq!(&body.into_bytes().0[..], b"abcdefghij");
    }

    #[test]
    fn a_huge_announced_body_allocates_only_what_arrives_plus_the_cap() {
        let mut buffered = BytesMut::from(&[1u8; 100][..]);
        let mut body = LargeBody::start(1 << 62, &mut buffered);
        assert_eq!(body.data.capacity(), 100 + MAX_PREALLOCATION);
        body.data.resize(body.data.capacity(), 1);
        body.filled = body.data.len();
        let mut reader: Box<dyn FrameableRead> = Box::new(Cursor::new(vec![2u8; 10]));
        assert_eq!(fill(&mut body, &mut reader), 10);
        assert_eq!(body.data.capacity(), 100 + 2 * MAX_PREALLOCATION);
        assert!(!body.is_complete());
    }
}
