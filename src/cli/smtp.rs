use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::builder::TypedValueParser as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::smtp::{self, Limits, Listener, SmtpConfig};

/// Serves SMTP on every listener until SIGINT or SIGTERM, then exits 0.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Each accepted message is printed on stdout as one JSON line:
  {\"id\":..,\"from\":..,\"rcpts\":[..],\"size\":..,\"maildir_path\":..|null,\"listener\":\"ADDR\",\"tls\":..}
Logs go to stderr. On SIGINT/SIGTERM the listeners close, idle sessions get 421, sessions
inside a transaction get --shutdown-grace to finish, and the process exits 0.

Example: serverfirst smtp --listen 0.0.0.0:25 --listen 0.0.0.0:587 --listen-tls 0.0.0.0:465 \\
           --tls-cert tls.crt --tls-key tls.key --maildir /var/mail/test")]
#[command(group(clap::ArgGroup::new("listeners").required(true).multiple(true).args(["listen", "listen_tls"])))]
pub struct SmtpArgs {
    /// Plain SMTP listener (e.g. 0.0.0.0:25, 0.0.0.0:587); STARTTLS is offered when
    /// --tls-cert/--tls-key are given. Repeat for several addresses.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,

    /// Implicit-TLS listener (SMTPS, RFC 8314, e.g. 0.0.0.0:465): TLS from the first byte,
    /// the banner comes after the handshake. Needs --tls-cert/--tls-key. Repeatable.
    #[arg(long, value_name = "ADDR")]
    listen_tls: Vec<SocketAddr>,

    /// Name in the greeting `220 <hostname> ESMTP serverfirst`.
    #[arg(long, env = "HOSTNAME", default_value = "localhost")]
    hostname: String,

    /// PEM certificate chain (leaf first) for STARTTLS and implicit TLS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key matching --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Deliver accepted messages to this Maildir (tmp/ then new/); without it they are
    /// counted and dropped.
    #[arg(long, value_name = "DIR")]
    maildir: Option<PathBuf>,

    #[command(flatten)]
    limits: Box<LimitArgs>,
}

/// Limits, boxed to keep the subcommand enum small.
#[derive(Debug, clap::Args)]
struct LimitArgs {
    /// Longest command line in bytes, CRLF included (longer: 500).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_line_length,
          value_parser = clap::value_parser!(u32).range(16..).map(|v| v as usize))]
    max_line_length: usize,

    /// Largest message in bytes (advertised as SIZE; larger: 552).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_message_size)]
    max_message_size: usize,

    /// Most recipients per message (more: 452).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_recipients,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    max_recipients: usize,

    /// Close a session with 421 after this long without input, e.g. 30s, 5m.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,

    /// Most sessions at once over all listeners (more: 421 and close).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_connections,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    max_connections: usize,

    /// At SIGINT/SIGTERM, how long sessions inside a transaction may take to finish.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
}

pub async fn run(args: SmtpArgs) -> anyhow::Result<ExitCode> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(smtp::load_tls_config(cert, key)?),
        _ => None,
    };
    if !args.listen_tls.is_empty() && tls.is_none() {
        anyhow::bail!("--listen-tls needs --tls-cert and --tls-key");
    }

    let mut listeners = Vec::new();
    for address in &args.listen {
        listeners.push(Listener::plain(bind(*address).await?));
    }
    for address in &args.listen_tls {
        listeners.push(Listener::implicit_tls(bind(*address).await?));
    }

    let (records, mut deliveries) = mpsc::unbounded_channel();
    let config = SmtpConfig {
        hostname: args.hostname,
        limits: Limits {
            max_line_length: args.limits.max_line_length,
            max_message_size: args.limits.max_message_size,
            max_recipients: args.limits.max_recipients,
            idle_timeout: args.limits.idle_timeout,
            max_connections: args.limits.max_connections,
        },
        tls,
        maildir: args.maildir,
        deliveries: Some(records),
        shutdown_grace: args.limits.shutdown_grace,
    };

    let printer = tokio::spawn(async move {
        let mut count: u64 = 0;
        while let Some(delivery) = deliveries.recv().await {
            count += 1;
            let line = serde_json::to_string(&delivery).unwrap_or_default();
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
        }
        count
    });

    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(cancel_on_signal(shutdown.clone()));
    let served = smtp::run(listeners, config, shutdown).await;
    signals.abort();
    // The server has dropped its sender: the printer ends once every record is out.
    let accepted = printer.await.unwrap_or_default();
    served?;
    tracing::info!(accepted, "SMTP server stopped");
    Ok(ExitCode::SUCCESS)
}

async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut interrupt, mut terminate) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(interrupt), Ok(terminate)) => (interrupt, terminate),
        (Err(error), _) | (_, Err(error)) => {
            tracing::error!(%error, "cannot install signal handlers");
            return;
        }
    };
    let name = tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    };
    tracing::info!(signal = name, "shutting down");
    shutdown.cancel();
}
