//! parl_rs patch: the ZMTP frame writer (upstream used `asynchronous_codec::FramedWrite`).
//!
//! Upstream encoded every message into one `BytesMut`, copying each frame body there before
//! writing it: a 16 MiB frame cost a 16 MiB memcpy, plus the buffer's growth and page faults.
//! Here headers and small frames are still coalesced into one staging buffer (a burst of
//! small messages stays one write), but a large frame body is queued as its own `Bytes`
//! segment and written straight from its memory with vectored writes. A segment is dropped
//! as soon as it is written, which is what returns a buffer lent by the sender.

use super::error::CodecResult;
use super::zmq_codec::frame_header;
use super::{FrameableWrite, Message};

use bytes::{Buf, Bytes, BytesMut};
use futures::{ready, AsyncWrite, Sink};

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Frame bodies from this size on are written from their own memory. Below it, copying into
/// the staging buffer costs less than an extra slice per write.
pub(crate) const ZERO_COPY_MIN: usize = 64 * 1024;

/// `poll_ready` writes until fewer bytes than this are queued, as upstream's `FramedWrite`
/// did (2^17: about 60% of a default TCP send buffer). This bounds what a sender can queue
/// beyond the message it just handed over.
const HIGH_WATER_MARK: usize = 128 * 1024;

/// Slices per vectored write; far below any IOV_MAX (1024 on Linux).
const MAX_SLICES: usize = 64;

/// A `Sink` of ZMTP [`Message`]s over a byte stream.
pub struct ZmqFramedWrite {
    inner: Box<dyn FrameableWrite>,
    /// Bytes to write before `staging`, in wire order: sealed staging chunks and large frame
    /// bodies.
    segments: VecDeque<Bytes>,
    /// Total length of `segments`.
    segments_len: usize,
    /// Headers and small frames encoded since the last segment.
    staging: BytesMut,
}

impl ZmqFramedWrite {
    pub(crate) fn new(inner: Box<dyn FrameableWrite>) -> Self {
        Self {
            inner,
            segments: VecDeque::new(),
            segments_len: 0,
            staging: BytesMut::with_capacity(8 * 1024),
        }
    }

    fn queued_len(&self) -> usize {
        self.segments_len + self.staging.len()
    }

    fn encode(&mut self, message: Message) {
        match message {
            Message::Greeting(greeting) => self.staging.unsplit(greeting.into()),
            Message::Command(command) => self.staging.unsplit(command.into()),
            Message::Message(message) => {
                let continued = message.is_continued();
                let frames = message.into_vecdeque();
                let count = frames.len();
                for (index, frame) in frames.into_iter().enumerate() {
                    let more = index + 1 < count || continued;
                    let (header, header_len) = frame_header(frame.len(), more);
                    self.staging.extend_from_slice(&header[..header_len]);
                    if frame.len() >= ZERO_COPY_MIN {
                        self.seal_staging();
                        self.push_segment(frame);
                    } else {
                        self.staging.extend_from_slice(&frame);
                    }
                }
            }
        }
    }

    /// Moves what is staged into the segment queue, so that what follows keeps wire order.
    fn seal_staging(&mut self) {
        if !self.staging.is_empty() {
            let chunk = self.staging.split().freeze();
            self.push_segment(chunk);
        }
    }

    fn push_segment(&mut self, segment: Bytes) {
        self.segments_len += segment.len();
        self.segments.push_back(segment);
    }

    /// One vectored write of what is queued; returns once some bytes were written.
    fn poll_write_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let mut count = 0;
        for segment in self.segments.iter().take(MAX_SLICES) {
            slices[count] = IoSlice::new(segment);
            count += 1;
        }
        if count < MAX_SLICES && !self.staging.is_empty() {
            slices[count] = IoSlice::new(&self.staging);
            count += 1;
        }
        let written = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, &slices[..count]))?;
        if written == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.consume(written);
        Poll::Ready(Ok(()))
    }

    /// Drops the first `written` queued bytes: whole segments (releasing their memory at
    /// once), then the front of a partly written one or of the staging buffer.
    fn consume(&mut self, mut written: usize) {
        while written > 0 {
            match self.segments.front_mut() {
                Some(front) if written >= front.len() => {
                    written -= front.len();
                    self.segments_len -= front.len();
                    self.segments.pop_front();
                }
                Some(front) => {
                    front.advance(written);
                    self.segments_len -= written;
                    written = 0;
                }
                None => {
                    self.staging.advance(written);
                    written = 0;
                }
            }
        }
    }
}

impl Sink<Message> for ZmqFramedWrite {
    type Error = super::CodecError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CodecResult<()>> {
        let this = self.get_mut();
        while this.queued_len() >= HIGH_WATER_MARK {
            ready!(this.poll_write_queued(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> CodecResult<()> {
        self.get_mut().encode(message);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CodecResult<()>> {
        let this = self.get_mut();
        while this.queued_len() > 0 {
            ready!(this.poll_write_queued(cx))?;
        }
        Poll::Ready(Ok(ready!(Pin::new(&mut this.inner).poll_flush(cx))?))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CodecResult<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Poll::Ready(Ok(ready!(Pin::new(&mut self.inner).poll_close(cx))?))
    }
}

#[cfg(test)]
mod tests;
