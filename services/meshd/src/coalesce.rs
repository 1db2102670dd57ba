//! [`Coalescing`]: an accepted connection whose writes are gathered and sent together.
//!
//! With thousands of streams multiplexed on a connection, a publication makes every stream
//! task hand one small DATA frame to the connection, and each hand-over wakes the
//! connection's task, which tokio runs right after the stream task that woke it. Without
//! this wrapper each run flushes, so the connection writes one frame per system call: on
//! loopback the call also does the receiver's TCP work, and it was a third of meshd's CPU
//! in the 10,000-stream benchmark.
//!
//! Here writes land in a buffer, and the first flush of a buffered write yields once (the
//! task wakes itself and returns `Pending`, which tokio schedules behind the tasks already
//! waiting): the stream tasks woken by the same publication add their frames meanwhile,
//! and the next flush sends them all in one call. An idle connection pays one scheduling
//! round (microseconds) per flush; the buffer never holds more than [`LIMIT`] bytes, and
//! larger writes go straight through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Most bytes held before they are written out.
pub const LIMIT: usize = 64 * 1024;
/// Largest buffer capacity kept once the buffer is empty.
const KEEP: usize = 8 * 1024;

/// A connection with coalesced writes (see the module docs).
#[derive(Debug)]
pub struct Coalescing<T> {
    inner: T,
    buffer: BytesMut,
    /// The pending flush already yielded once.
    yielded: bool,
}

impl<T> Coalescing<T> {
    /// `inner`, with its writes coalesced.
    pub fn new(inner: T) -> Self {
        Self { inner, buffer: BytesMut::new(), yielded: false }
    }
}

impl<T: AsyncWrite + Unpin> Coalescing<T> {
    /// Writes the whole buffer to the connection.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.buffer.is_empty() {
            let written = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buffer))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.buffer.advance(written);
        }
        if self.buffer.capacity() > KEEP {
            // A burst grew it: an idle connection does not keep the memory.
            self.buffer = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalescing<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalescing<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.buffer.len() + data.len() > LIMIT {
            ready!(this.poll_drain(cx))?;
            if data.len() >= LIMIT {
                return Pin::new(&mut this.inner).poll_write(cx, data);
            }
        }
        this.buffer.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let total: usize = slices.iter().map(|slice| slice.len()).sum();
        if this.buffer.len() + total > LIMIT {
            ready!(this.poll_drain(cx))?;
            if total >= LIMIT {
                return Pin::new(&mut this.inner).poll_write_vectored(cx, slices);
            }
        }
        for slice in slices {
            this.buffer.extend_from_slice(slice);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.buffer.is_empty() && !this.yielded {
            // Let the tasks already woken add their writes first.
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_drain(cx))?;
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<T: Connected> Connected for Coalescing<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn writes_wait_for_the_flush_and_arrive_whole_and_in_order() {
        let (client, mut server) = tokio::io::duplex(4 * LIMIT);
        let mut writer = Coalescing::new(client);
        writer.write_all(b"first ").await.unwrap();
        writer.write_all(b"second").await.unwrap();
        let mut probe = [0u8; 1];
        let early = tokio::time::timeout(std::time::Duration::ZERO, server.read(&mut probe)).await;
        assert!(early.is_err(), "nothing is written before a flush");
        writer.flush().await.unwrap();
        let mut received = [0u8; 12];
        server.read_exact(&mut received).await.unwrap();
        assert_eq!(&received, b"first second");

        // Larger than the buffer: written through, after what was buffered.
        let large = vec![7u8; LIMIT + 10];
        writer.write_all(b"x").await.unwrap();
        writer.write_all(&large).await.unwrap();
        writer.flush().await.unwrap();
        let mut received = vec![0u8; LIMIT + 11];
        server.read_exact(&mut received).await.unwrap();
        assert_eq!(received[0], b'x');
        assert!(received[1..].iter().all(|byte| *byte == 7));
        writer.shutdown().await.unwrap();
        assert_eq!(server.read(&mut probe).await.unwrap(), 0, "shut down after the buffer");
    }

    #[tokio::test]
    async fn a_narrow_connection_gets_every_byte_in_order_through_partial_and_vectored_writes() {
        // 16 bytes at a time: every drain writes in parts and waits for the reader.
        let (client, mut server) = tokio::io::duplex(16);
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            server.read_to_end(&mut received).await.unwrap();
            received
        });
        let mut writer = Coalescing::new(client);
        let mut expected = Vec::new();
        for round in 0..200u32 {
            let head = format!("frame {round}:");
            let body = vec![(round % 251) as u8; (round as usize * 97) % 3000];
            let slices = [io::IoSlice::new(head.as_bytes()), io::IoSlice::new(&body)];
            let mut written = 0;
            while written < head.len() + body.len() {
                // write_vectored may take part of the slices only when the buffer is full.
                let all: Vec<u8> = [head.as_bytes(), &body].concat();
                written += if written == 0 {
                    writer.write_vectored(&slices).await.unwrap()
                } else {
                    writer.write(&all[written..]).await.unwrap()
                };
            }
            expected.extend_from_slice(head.as_bytes());
            expected.extend_from_slice(&body);
            if round % 7 == 0 {
                writer.flush().await.unwrap();
            }
        }
        let large = vec![9u8; 3 * LIMIT];
        writer.write_all(&large).await.unwrap();
        expected.extend_from_slice(&large);
        writer.shutdown().await.unwrap();
        assert!(writer.buffer.capacity() <= KEEP, "an idle connection keeps no burst-sized buffer");
        assert_eq!(reader.await.unwrap(), expected);
    }
}
