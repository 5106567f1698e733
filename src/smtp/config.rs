//! Server configuration: identity, limits, TLS, where accepted messages go.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use super::delivery::Delivery;

/// Resource limits; every one has a default that suits a small reference server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest command line in bytes, CRLF included (RFC 5321 §4.5.3.1.6 text line: 1000).
    pub max_line_length: usize,
    /// Largest message in bytes after dot-unstuffing (advertised as `SIZE`).
    pub max_message_size: usize,
    /// Most recipients in one transaction (RFC 5321 §4.5.3.1.8 minimum: 100).
    pub max_recipients: usize,
    /// How long the server waits for the client (a command, data, a handshake, a write).
    pub idle_timeout: Duration,
    /// Most sessions served at once, over all listeners; others get `421` and are closed.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line_length: 1000,
            max_message_size: 10 * 1024 * 1024,
            max_recipients: 100,
            idle_timeout: Duration::from_secs(5 * 60),
            max_connections: 256,
        }
    }
}

/// Everything [`run`](super::run) needs besides its listeners and shutdown signal.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Name in the greeting (`220 <hostname> ESMTP serverfirst`) and replies.
    pub hostname: String,
    pub limits: Limits,
    /// Enables STARTTLS on plain listeners and is required by implicit-TLS listeners.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Maildir to deliver accepted messages to (created if missing); `None` counts and drops them.
    pub maildir: Option<PathBuf>,
    /// Receives a record of every accepted message, before the client gets its `250`.
    pub deliveries: Option<UnboundedSender<Delivery>>,
    /// After shutdown, how long sessions in the middle of a transaction may take to finish.
    pub shutdown_grace: Duration,
}

impl SmtpConfig {
    /// A configuration with default limits, no TLS, no Maildir and no delivery records.
    pub fn new(hostname: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            limits: Limits::default(),
            tls: None,
            maildir: None,
            deliveries: None,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}
