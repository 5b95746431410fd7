//! parl_rs patch: a `futures::AsyncWrite` view of a tokio writer that keeps vectored writes.
//!
//! `tokio_util::compat::Compat` implements only `poll_write` of `futures::AsyncWrite`, so a
//! vectored write through it falls back to the trait's default, which writes the first
//! non-empty slice only: one syscall per queued segment instead of one `writev` for all of
//! them (see `codec/framed_write.rs`, which writes large frames from their own memory).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Forwards every `futures::AsyncWrite` method, vectored writes included, to a tokio writer.
pub(crate) struct VectoredCompat<W>(pub(crate) W);

impl<W: tokio::io::AsyncWrite + Unpin> futures::AsyncWrite for VectoredCompat<W> {
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
    use futures::AsyncWriteExt;

    #[crate::async_rt::test]
    async fn vectored_writes_reach_the_tokio_writer_in_one_call() {
        let (client, mut server) = tokio::io::duplex(1024);
        let (_, write) = tokio::io::split(client);
        let mut writer = VectoredCompat(write);
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
