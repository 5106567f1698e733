//! Drives one [`Session`] over one [`Connection`], from the greeting to the close.

use std::time::Duration;

use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::connection::{Connection, Line, ReadError};
use super::delivery::{Deliverer, Origin};
use super::reply::Reply;
use super::session::{Action, Session, SessionSettings};

/// What every session of a server shares.
pub struct Shared {
    pub settings: SessionSettings,
    pub max_line_length: usize,
    pub idle_timeout: Duration,
    pub acceptor: Option<TlsAcceptor>,
    pub deliverer: Deliverer,
    /// Cancelled at shutdown: sessions waiting between transactions end at once.
    pub shutdown: CancellationToken,
    /// Cancelled when the shutdown grace period is over: every session ends.
    pub abort: CancellationToken,
}

/// Serves one connection. The greeting goes out before anything is read.
pub async fn serve(mut conn: Connection, shared: &Shared, mut origin: Origin) {
    let mut session = if conn.is_tls() {
        Session::new_tls(shared.settings.clone())
    } else {
        Session::new(shared.settings.clone())
    };
    conn.send(&session.greeting());
    loop {
        // Between transactions a session may be stopped at shutdown; inside one it may finish.
        let stop = if session.in_transaction() {
            &shared.abort
        } else {
            &shared.shutdown
        };
        let line = match conn.read_line(shared.max_line_length, stop).await {
            Ok(Line::Complete(line)) => line,
            Ok(Line::TooLong) => {
                conn.send(&Reply::line_too_long());
                continue;
            }
            Err(error) => return end(conn, error, shared, origin).await,
        };
        match session.handle_line(&line) {
            Action::Reply(reply) => conn.send(&reply),
            Action::Close(reply) => {
                conn.send(&reply);
                return conn.close().await;
            }
            Action::ReceiveData(reply) => {
                conn.send(&reply);
                let message = match conn
                    .read_data(shared.settings.max_message_size, &shared.abort)
                    .await
                {
                    Ok(message) => message,
                    Err(error) => return end(conn, error, shared, origin).await,
                };
                let envelope = session.take_envelope().unwrap_or_default();
                conn.send(&shared.deliverer.deliver(envelope, message, origin).await);
            }
            Action::StartTls(reply) => {
                conn.send(&reply);
                // The session offers STARTTLS only when the server has an acceptor.
                let Some(acceptor) = &shared.acceptor else {
                    return conn.close().await;
                };
                conn = match conn.start_tls(acceptor).await {
                    Ok(conn) => conn,
                    Err(error) => {
                        tracing::debug!(peer = %origin.peer, %error, "STARTTLS handshake failed");
                        return;
                    }
                };
                session.tls_started();
                origin.tls = true;
            }
        }
    }
}

async fn end(mut conn: Connection, error: ReadError, shared: &Shared, origin: Origin) {
    let hostname = &shared.settings.hostname;
    match error {
        ReadError::Timeout => {
            tracing::debug!(peer = %origin.peer, "idle timeout");
            conn.send(&Reply::idle_timeout(hostname));
        }
        ReadError::Stopped => conn.send(&Reply::shutting_down(hostname)),
        ReadError::Closed => {}
        ReadError::Io(error) => {
            tracing::debug!(peer = %origin.peer, %error, "connection error");
            return;
        }
    }
    conn.close().await;
}
