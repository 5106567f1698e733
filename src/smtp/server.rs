//! Accept loops, the connection cap and graceful shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::SmtpConfig;
use super::connection::Connection;
use super::delivery::{Deliverer, Origin};
use super::error::SmtpError;
use super::handler::{self, Shared};
use super::maildir::Maildir;
use super::reply::Reply;
use super::session::SessionSettings;

/// After the grace period, how long sessions get to send their `421` before being dropped.
const ABORT_LINGER: Duration = Duration::from_secs(1);
/// How long a client refused by the connection cap gets to read its `421`.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed accept (for example, out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A bound listener and how its connections start.
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
    implicit_tls: bool,
}

impl Listener {
    /// SMTP in the clear, with STARTTLS offered when the server has a certificate.
    pub fn plain(listener: TcpListener) -> Self {
        Self {
            listener,
            implicit_tls: false,
        }
    }

    /// TLS from the first byte (RFC 8314, usually port 465); the server needs a certificate.
    pub fn implicit_tls(listener: TcpListener) -> Self {
        Self {
            listener,
            implicit_tls: true,
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn is_implicit_tls(&self) -> bool {
        self.implicit_tls
    }
}

/// Serves SMTP on `listeners` until `shutdown` is cancelled.
///
/// At shutdown the listeners close at once, sessions waiting between transactions get
/// `421` and end, and sessions inside a transaction get `config.shutdown_grace` to finish.
/// Returns when every session has ended.
pub async fn run(
    listeners: Vec<Listener>,
    config: SmtpConfig,
    shutdown: CancellationToken,
) -> Result<(), SmtpError> {
    let shared = Arc::new(shared(&listeners, &config, shutdown.clone())?);
    let slots = Arc::new(Semaphore::new(config.limits.max_connections));
    let sessions = TaskTracker::new();

    let mut accept_loops = JoinSet::new();
    for listener in listeners {
        let address = listener.local_addr().map_err(SmtpError::Listener)?;
        tracing::info!(%address, implicit_tls = listener.implicit_tls, "SMTP listening");
        accept_loops.spawn(accept_loop(
            listener,
            address,
            Arc::clone(&shared),
            Arc::clone(&slots),
            sessions.clone(),
        ));
    }
    while accept_loops.join_next().await.is_some() {}

    sessions.close();
    if tokio::time::timeout(config.shutdown_grace, sessions.wait())
        .await
        .is_err()
    {
        tracing::info!(
            sessions = sessions.len(),
            "grace period over, closing sessions"
        );
        shared.abort.cancel();
        sessions.wait().await;
    }
    Ok(())
}

fn shared(
    listeners: &[Listener],
    config: &SmtpConfig,
    shutdown: CancellationToken,
) -> Result<Shared, SmtpError> {
    if listeners.iter().any(Listener::is_implicit_tls) && config.tls.is_none() {
        return Err(SmtpError::ImplicitTlsWithoutCertificate);
    }
    let maildir = config
        .maildir
        .as_ref()
        .map(|path| {
            Maildir::create(path).map_err(|source| SmtpError::Maildir {
                path: path.clone(),
                source,
            })
        })
        .transpose()?;
    let limits = &config.limits;
    Ok(Shared {
        settings: SessionSettings {
            hostname: config.hostname.clone(),
            max_message_size: limits.max_message_size,
            max_recipients: limits.max_recipients,
            starttls: config.tls.is_some(),
        },
        max_line_length: limits.max_line_length,
        idle_timeout: limits.idle_timeout,
        acceptor: config.tls.clone().map(TlsAcceptor::from),
        deliverer: Deliverer::new(
            maildir,
            &config.hostname,
            limits.max_message_size,
            config.deliveries.clone(),
        ),
        abort: CancellationToken::new(),
        shutdown,
    })
}

async fn accept_loop(
    listener: Listener,
    address: SocketAddr,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    sessions: TaskTracker,
) {
    let idle_timeout = shared.idle_timeout;
    loop {
        let (stream, peer) = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = listener.listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%address, %error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, "connection cap reached, refusing");
            if !listener.implicit_tls {
                let hostname = shared.settings.hostname.clone();
                sessions.spawn(refuse(stream, hostname));
            }
            continue;
        };
        let shared = Arc::clone(&shared);
        let implicit_tls = listener.implicit_tls;
        sessions.spawn(async move {
            let origin = Origin {
                listener: address,
                peer,
                tls: implicit_tls,
            };
            let session = async {
                tracing::debug!(%peer, %address, "connection accepted");
                let conn = if implicit_tls {
                    let Some(acceptor) = &shared.acceptor else {
                        return;
                    };
                    match Connection::accept_tls(stream, acceptor, idle_timeout, slot).await {
                        Ok(conn) => conn,
                        Err(error) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return;
                        }
                    }
                } else {
                    Connection::plain(stream, idle_timeout, slot)
                };
                handler::serve(conn, &shared, origin).await;
                tracing::debug!(%peer, "connection closed");
            };
            let aborted = async {
                shared.abort.cancelled().await;
                tokio::time::sleep(ABORT_LINGER).await;
            };
            tokio::select! {
                () = session => {}
                () = aborted => {}
            }
        });
    }
}

/// Tells a client over the connection cap to come back later, then closes.
async fn refuse(mut stream: TcpStream, hostname: String) {
    let mut reply = Vec::new();
    Reply::too_many_connections(&hostname).encode(&mut reply);
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        stream.write_all(&reply).await?;
        stream.shutdown().await
    })
    .await;
}
