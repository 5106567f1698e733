//! What happens to an accepted message: Maildir (if configured), a log line and a [`Delivery`].

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use super::data::Message;
use super::maildir::{Maildir, UniqueNames};
use super::reply::Reply;
use super::session::Envelope;

/// The record of one accepted message (printed as a JSON line by `serverfirst smtp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Queue id, also the Maildir file name.
    pub id: String,
    /// Reverse-path; empty for `<>`.
    pub from: String,
    pub rcpts: Vec<String>,
    /// Message size in bytes, after dot-unstuffing.
    pub size: usize,
    /// Where the message was stored, if a Maildir is configured.
    pub maildir_path: Option<PathBuf>,
    /// Local address of the listener that accepted the connection.
    pub listener: SocketAddr,
    /// Whether the session was encrypted (STARTTLS or implicit TLS).
    pub tls: bool,
}

/// Where a connection's messages came in.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub listener: SocketAddr,
    pub peer: SocketAddr,
    pub tls: bool,
}

/// Stores accepted messages and reports them.
#[derive(Debug)]
pub struct Deliverer {
    maildir: Option<Maildir>,
    names: UniqueNames,
    max_message_size: usize,
    records: Option<UnboundedSender<Delivery>>,
}

impl Deliverer {
    pub fn new(
        maildir: Option<Maildir>,
        hostname: &str,
        max_message_size: usize,
        records: Option<UnboundedSender<Delivery>>,
    ) -> Self {
        Self {
            maildir,
            names: UniqueNames::new(hostname),
            max_message_size,
            records,
        }
    }

    /// Delivers one message and returns the reply to its data.
    pub async fn deliver(&self, envelope: Envelope, message: Message, origin: Origin) -> Reply {
        let content = match message {
            Message::Complete(content) => content,
            Message::TooBig { size } => {
                tracing::info!(peer = %origin.peer, size, "message rejected: too big");
                return Reply::message_too_big(self.max_message_size);
            }
        };
        let id = self.names.next();
        let size = content.len();
        let maildir_path = match self.store(&id, content).await {
            Ok(path) => path,
            Err(error) => {
                tracing::warn!(peer = %origin.peer, %error, "Maildir delivery failed");
                return Reply::delivery_failed();
            }
        };
        tracing::info!(
            %id, from = %envelope.from, rcpts = ?envelope.rcpts, size,
            peer = %origin.peer, listener = %origin.listener, "message accepted"
        );
        if let Some(records) = &self.records {
            let _ = records.send(Delivery {
                id: id.clone(),
                from: envelope.from,
                rcpts: envelope.rcpts,
                size,
                maildir_path,
                listener: origin.listener,
                tls: origin.tls,
            });
        }
        Reply::queued(&id)
    }

    async fn store(&self, id: &str, content: Vec<u8>) -> io::Result<Option<PathBuf>> {
        let Some(maildir) = self.maildir.clone() else {
            return Ok(None);
        };
        let name = id.to_string();
        tokio::task::spawn_blocking(move || maildir.store(&name, &content))
            .await
            .map_err(io::Error::other)?
            .map(Some)
    }
}
