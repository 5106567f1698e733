//! Buffered line and data I/O over a plain or TLS TCP stream, with the idle timeout.
//!
//! Replies are queued and written only when the server is about to wait for input, so the
//! replies to pipelined commands go out together (RFC 2920).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::data::{DataDecoder, Message};
use super::reply::Reply;

const READ_CHUNK: usize = 8 * 1024;

/// Why no more input can be read.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed the connection.
    Closed,
    /// Nothing arrived within the idle timeout.
    Timeout,
    /// The server is shutting down.
    Stopped,
    Io(io::Error),
}

/// One command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The line without its line ending.
    Complete(Vec<u8>),
    /// The line exceeded the limit; it was read to its end and dropped.
    TooLong,
}

/// A TCP stream, encrypted or not.
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An accepted connection: the stream, its buffers and its slot under the connection cap.
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Whether the rest of the current command line is being dropped (it is too long).
    discarding: bool,
    idle_timeout: Duration,
    slot: Option<OwnedSemaphorePermit>,
}

impl Connection {
    /// A plain-text connection holding `slot` until it is closed or dropped.
    pub fn plain(stream: TcpStream, idle_timeout: Duration, slot: OwnedSemaphorePermit) -> Self {
        Self::with_stream(Stream::Plain(stream), idle_timeout, Some(slot))
    }

    /// Runs the TLS handshake of an implicit-TLS listener.
    pub async fn accept_tls(
        stream: TcpStream,
        acceptor: &TlsAcceptor,
        idle_timeout: Duration,
        slot: OwnedSemaphorePermit,
    ) -> io::Result<Self> {
        let tls = handshake(acceptor, stream, idle_timeout).await?;
        Ok(Self::with_stream(
            Stream::Tls(Box::new(tls)),
            idle_timeout,
            Some(slot),
        ))
    }

    fn with_stream(
        stream: Stream,
        idle_timeout: Duration,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Self {
            stream,
            input: Vec::with_capacity(READ_CHUNK),
            output: Vec::new(),
            discarding: false,
            idle_timeout,
            slot,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Queues a reply; it is written before the next wait for input, or by [`close`](Self::close).
    pub fn send(&mut self, reply: &Reply) {
        reply.encode(&mut self.output);
    }

    /// Reads one command line of at most `max` bytes, line ending included.
    /// Waiting for input stops early when `stop` is cancelled.
    pub async fn read_line(
        &mut self,
        max: usize,
        stop: &CancellationToken,
    ) -> Result<Line, ReadError> {
        loop {
            if let Some(newline) = self.input.iter().position(|&byte| byte == b'\n') {
                let mut line: Vec<u8> = self.input.drain(..=newline).collect();
                if std::mem::take(&mut self.discarding) || line.len() > max {
                    return Ok(Line::TooLong);
                }
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Line::Complete(line));
            }
            if self.discarding || self.input.len() >= max {
                // Too long already: keep only the knowledge that the line must be dropped.
                self.discarding = true;
                self.input.clear();
            }
            self.fill(stop).await?;
        }
    }

    /// Reads message data up to and including `<CRLF>.<CRLF>`; anything after it stays buffered.
    pub async fn read_data(
        &mut self,
        max_size: usize,
        stop: &CancellationToken,
    ) -> Result<Message, ReadError> {
        let mut decoder = DataDecoder::new(max_size);
        loop {
            if let Some(consumed) = decoder.feed(&self.input) {
                self.input.drain(..consumed);
                return Ok(decoder.finish());
            }
            self.input.clear();
            self.fill(stop).await?;
        }
    }

    /// Upgrades to TLS after the `220` to STARTTLS has been queued.
    pub async fn start_tls(mut self, acceptor: &TlsAcceptor) -> io::Result<Self> {
        self.flush().await?;
        // The TLS connection starts with empty buffers: whatever the client sent after STARTTLS
        // arrived in the clear and must not run inside the TLS session (RFC 3207 §5).
        let Stream::Plain(stream) = self.stream else {
            return Err(io::Error::other("TLS is already active"));
        };
        let tls = handshake(acceptor, stream, self.idle_timeout).await?;
        Ok(Self::with_stream(
            Stream::Tls(Box::new(tls)),
            self.idle_timeout,
            self.slot,
        ))
    }

    /// Writes queued replies, frees the connection slot and closes the stream.
    pub async fn close(mut self) {
        let _ = self.flush().await;
        // Free the slot before the client sees the connection end.
        drop(self.slot.take());
        let _ = tokio::time::timeout(self.idle_timeout, self.stream.shutdown()).await;
    }

    /// Writes the queued replies.
    async fn flush(&mut self) -> io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let write = async {
            self.stream.write_all(&self.output).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.idle_timeout, write).await {
            Ok(result) => {
                self.output.clear();
                result
            }
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
        }
    }

    /// Flushes queued replies, then waits for more input.
    async fn fill(&mut self, stop: &CancellationToken) -> Result<(), ReadError> {
        self.flush().await.map_err(ReadError::Io)?;
        self.input.reserve(READ_CHUNK);
        let read = tokio::time::timeout(self.idle_timeout, self.stream.read_buf(&mut self.input));
        tokio::select! {
            biased;
            () = stop.cancelled() => Err(ReadError::Stopped),
            result = read => match result {
                Err(_) => Err(ReadError::Timeout),
                Ok(Ok(0)) => Err(ReadError::Closed),
                Ok(Ok(_)) => Ok(()),
                Ok(Err(error)) => Err(ReadError::Io(error)),
            },
        }
    }
}

async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    idle_timeout: Duration,
) -> io::Result<TlsStream<TcpStream>> {
    tokio::time::timeout(idle_timeout, acceptor.accept(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}
