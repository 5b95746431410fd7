//! parl_rs patch: tokio streams as the `futures` I/O traits the codec uses, without losing
//! what `tokio_util::compat::Compat` loses.
//!
//! - Writes: `Compat` implements only `poll_write`, so a vectored write through it fell back
//!   to the trait's default, which writes the first non-empty slice only: one syscall per
//!   queued segment instead of one `writev` (see `codec/framed_write.rs`, which writes large
//!   frames from their own memory).
//! - Reads: `futures::AsyncRead` needs initialised memory; tokio's `ReadBuf` does not. A large
//!   frame body is read into a fresh allocation of its own (`codec/large_body.rs`); zeroing
//!   that first cost as much CPU as the kernel's copy into it.

use crate::codec::FrameableRead;

use futures::ready;
use tokio::io::ReadBuf;

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A tokio reader as a `futures::AsyncRead` that can read into uninitialised memory.
pub(crate) struct TokioRead<R>(pub(crate) R);

impl<R: tokio::io::AsyncRead + Unpin> futures::AsyncRead for TokioRead<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut buf = ReadBuf::new(buf);
        ready!(Pin::new(&mut self.0).poll_read(cx, &mut buf))?;
        Poll::Ready(Ok(buf.filled().len()))
    }
}

impl<R: tokio::io::AsyncRead + Unpin + Send + Sync> FrameableRead for TokioRead<R> {
    fn poll_read_spare(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
    ) -> Option<Poll<io::Result<usize>>> {
        let mut spare = ReadBuf::uninit(buf.spare_capacity_mut());
        match Pin::new(&mut self.0).poll_read(cx, &mut spare) {
            Poll::Ready(Ok(())) => {}
            other => return Some(other.map_ok(|()| 0)),
        }
        let read = spare.filled().len();
        // SAFETY: `ReadBuf` guarantees that its filled part, the first `read` bytes of the
        // spare capacity, was written by the reader.
        unsafe { buf.set_len(buf.len() + read) };
        Some(Poll::Ready(Ok(read)))
    }
}

/// A tokio writer as a `futures::AsyncWrite`, vectored writes included.
pub(crate) struct TokioWrite<W>(pub(crate) W);

impl<W: tokio::io::AsyncWrite + Unpin> futures::AsyncWrite for TokioWrite<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{AsyncReadExt, AsyncWriteExt};

    #[crate::async_rt::test]
    async fn reads_fill_uninitialised_spare_capacity() {
        let (client, mut server) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut server, b"abcdef")
            .await
            .unwrap();
        let mut reader = TokioRead(client);
        let mut buf = Vec::with_capacity(4);
        buf.push(b'>');
        let read = futures::future::poll_fn(|cx| {
            Pin::new(&mut reader)
                .poll_read_spare(cx, &mut buf)
                .expect("tokio streams read into spare capacity")
        })
        .await
        .unwrap();
        assert_eq!((read, &buf[..]), (3, &b">abc"[..]));
        let mut rest = [0u8; 3];
        reader.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"def");
    }

    #[crate::async_rt::test]
    async fn vectored_writes_reach_the_tokio_writer_in_one_call() {
        let (client, mut server) = tokio::io::duplex(1024);
        let (_, write) = tokio::io::split(client);
        let mut writer = TokioWrite(write);
        let written = writer
            .write_vectored(&[IoSlice::new(b"ab"), IoSlice::new(b"cd")])
            .await
            .unwrap();
        // Compat's default would have written "ab" only.
        assert_eq!(written, 4);
        let mut received = [0u8; 4];
        tokio::io::AsyncReadExt::read_exact(&mut server, &mut received)
            .await
            .unwrap();
        assert_eq!(&received, b"abcd");
    }
}
