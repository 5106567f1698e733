//! Time-to-banner diagnosis of a `host:port`.
//!
//! What an operator does by hand with telnet: connect, wait silently for the server's banner,
//! and if none comes, say something and see whether the banner appears then. A banner that
//! arrives only after the client spoke means something on the path (typically a service-mesh
//! sidecar sniffing the protocol) waits for the client's first bytes: a server-first stall.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The line sent when no banner arrives: `QUIT` is a valid, harmless command in SMTP, FTP, POP3
/// and NNTP (IMAP answers it with a BAD), creates no state, and makes a server that does
/// receive it close the session cleanly once it has sent its banner.
pub const NUDGE: &[u8] = b"QUIT\r\n";

/// The banner line is cut at this many bytes.
const MAX_BANNER: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeOptions {
    /// Limit for resolving and connecting, and for the answer once the probe has spoken.
    pub timeout: Duration,
    /// How long to wait silently for the banner before speaking.
    pub send_after: Duration,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(3),
            send_after: Duration::from_secs(2),
        }
    }
}

/// What the probe saw after connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The server spoke first: the banner arrived without the client sending anything.
    Banner,
    /// The banner arrived only after the probe spoke: a server-first stall.
    Stall,
    /// Nothing arrived, even after the probe spoke.
    Silent,
    /// The connection was closed or reset before any byte arrived.
    Closed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Banner => "banner",
            Self::Stall => "stall",
            Self::Silent => "silent",
            Self::Closed => "closed",
        }
    }
}

/// The result of a probe that connected. Times are measured from the moment the TCP
/// connection was established, except `connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The address that answered.
    pub peer: SocketAddr,
    pub outcome: Outcome,
    /// Time to resolve the name and establish the TCP connection.
    pub connect: Duration,
    /// When the first byte arrived, if any did.
    pub first_byte: Option<Duration>,
    /// When the probe sent [`NUDGE`]; `None` if the banner came first.
    pub sent: Option<Duration>,
    /// The first line received, without its line ending, control characters escaped.
    pub banner: Option<String>,
    /// The error that ended the connection, if one did (for example, a reset).
    pub error: Option<String>,
}

impl ProbeReport {
    /// Time from sending [`NUDGE`] to the first byte, when both happened.
    pub fn first_byte_after_send(&self) -> Option<Duration> {
        Some(self.first_byte?.saturating_sub(self.sent?))
    }
}

/// Why the probe could not connect.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot resolve {target}: {source}")]
    Resolve { target: String, source: io::Error },
    #[error("{target} resolves to no address")]
    NoAddress { target: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("no connection to {target} within {} ms", timeout.as_millis())]
    ConnectTimeout { target: String, timeout: Duration },
}

/// Probes `target` (`host:port`): connects, waits up to `send_after` for a banner, and if none
/// came sends [`NUDGE`] and waits up to `timeout` more.
pub async fn probe(target: &str, options: &ProbeOptions) -> Result<ProbeReport, ProbeError> {
    let started = Instant::now();
    let (mut stream, peer) = tokio::time::timeout(options.timeout, connect(target))
        .await
        .map_err(|_| ProbeError::ConnectTimeout {
            target: target.to_string(),
            timeout: options.timeout,
        })??;
    let connected = Instant::now();
    let mut report = ProbeReport {
        peer,
        outcome: Outcome::Banner,
        connect: connected - started,
        first_byte: None,
        sent: None,
        banner: None,
        error: None,
    };

    let mut received = Vec::new();
    let mut read = read_within(&mut stream, &mut received, options.send_after).await;
    if matches!(read, Read::TimedOut) {
        // Silence: speak, as the client of a client-first protocol would.
        report.sent = Some(connected.elapsed());
        read = match stream.write_all(NUDGE).await {
            Ok(()) => read_within(&mut stream, &mut received, options.timeout).await,
            Err(error) => Read::Failed(error),
        };
    }
    match read {
        Read::Data => {
            report.first_byte = Some(connected.elapsed());
            report.outcome = if report.sent.is_some() {
                Outcome::Stall
            } else {
                Outcome::Banner
            };
            if let Err(error) = read_line(&mut stream, &mut received, options.timeout).await {
                report.error = Some(error.to_string());
            }
            report.banner = Some(banner_line(&received));
        }
        Read::TimedOut => report.outcome = Outcome::Silent,
        Read::Closed => report.outcome = Outcome::Closed,
        Read::Failed(error) => {
            report.outcome = Outcome::Closed;
            report.error = Some(error.to_string());
        }
    }
    let _ = stream.shutdown().await;
    Ok(report)
}

async fn connect(target: &str) -> Result<(TcpStream, SocketAddr), ProbeError> {
    let addrs = tokio::net::lookup_host(target)
        .await
        .map_err(|source| ProbeError::Resolve {
            target: target.to_string(),
            source,
        })?;
    let mut last_error = ProbeError::NoAddress {
        target: target.to_string(),
    };
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok((stream, addr)),
            Err(source) => last_error = ProbeError::Connect { addr, source },
        }
    }
    Err(last_error)
}

enum Read {
    Data,
    TimedOut,
    Closed,
    Failed(io::Error),
}

/// Waits up to `limit` for bytes and appends them to `buffer`.
async fn read_within(stream: &mut TcpStream, buffer: &mut Vec<u8>, limit: Duration) -> Read {
    match tokio::time::timeout(limit, read_some(stream, buffer)).await {
        Err(_) => Read::TimedOut,
        Ok(Ok(0)) => Read::Closed,
        Ok(Ok(_)) => Read::Data,
        Ok(Err(error)) => Read::Failed(error),
    }
}

/// Reads what is available into `buffer`; `Ok(0)` at end of stream.
async fn read_some(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> io::Result<usize> {
    buffer.reserve(MAX_BANNER);
    stream.read_buf(buffer).await
}

/// Reads until the first line is complete, [`MAX_BANNER`] bytes, the end of the stream, or
/// `limit` has passed.
async fn read_line(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    limit: Duration,
) -> io::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    while !buffer.contains(&b'\n') && buffer.len() < MAX_BANNER {
        match tokio::time::timeout_at(deadline, read_some(stream, buffer)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(error),
        }
    }
    Ok(())
}

/// The first line of `received`, without its line ending, printable.
fn banner_line(received: &[u8]) -> String {
    let end = received
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(received.len())
        .min(MAX_BANNER);
    let line = received[..end]
        .strip_suffix(b"\r")
        .unwrap_or(&received[..end]);
    String::from_utf8_lossy(line)
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_line_is_the_first_line_made_printable() {
        assert_eq!(banner_line(b"220 mx ESMTP\r\n250 more\r\n"), "220 mx ESMTP");
        assert_eq!(banner_line(b"+OK ready\n"), "+OK ready");
        assert_eq!(banner_line(b"partial"), "partial");
        assert_eq!(banner_line(b"\x1b[31mred\x00\r\n"), "\\u{1b}[31mred\\u{0}");
        assert_eq!(banner_line(b"\xff220"), "\u{fffd}220");
        assert_eq!(banner_line(&[b'x'; 2000]).len(), MAX_BANNER);
    }

    #[test]
    fn time_after_send() {
        let report = ProbeReport {
            peer: "127.0.0.1:25".parse().expect("addr"),
            outcome: Outcome::Stall,
            connect: Duration::ZERO,
            first_byte: Some(Duration::from_millis(2100)),
            sent: Some(Duration::from_millis(2000)),
            banner: None,
            error: None,
        };
        assert_eq!(
            report.first_byte_after_send(),
            Some(Duration::from_millis(100))
        );
        let banner = ProbeReport {
            outcome: Outcome::Banner,
            sent: None,
            ..report
        };
        assert_eq!(banner.first_byte_after_send(), None);
    }
}
