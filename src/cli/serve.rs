use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::certs;
use crate::config::Mode;
use crate::mesh_state::{MeshState, SharedMeshState};
use crate::mesh_watch;
use crate::metrics::Metrics;
use crate::server::{self, Limits};
use crate::tls::{self, CertFiles, CertResolver};

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("certificate").required(true).args(["tls_cert", "self_signed"]))]
pub struct ServeArgs {
    /// Address of the HTTPS webhook listener.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Serving certificate chain (PEM); reloaded when the file changes.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key of the serving certificate (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Generate an in-memory certificate for localhost and print its CA (PEM) on stdout.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    self_signed: bool,
    /// Address of the plain-HTTP /healthz, /readyz and /metrics listener.
    #[arg(long, default_value = "0.0.0.0:9090")]
    metrics_listen: SocketAddr,
    /// YAML configuration file (catalog overrides, mode, mesh defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override the configured mode; `audit` makes /mutate a dry run too.
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// How often the certificate files are checked for changes.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    tls_reload_interval: Duration,
    /// Require client certificates signed by this CA (PEM), e.g. the API server's.
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Read the mesh state (namespaces, Istio PeerAuthentications and AuthorizationPolicies)
    /// from the cluster, so that ports stay in the mesh where it enforces identity: `auto` does
    /// when a cluster is configured, `off` never does.
    #[arg(long, value_enum, default_value_t = MeshStateArg::Auto)]
    mesh_state: MeshStateArg,
    /// kubeconfig file for the mesh state (default: $KUBECONFIG, ~/.kube/config, or the
    /// in-cluster config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// kubeconfig context to use (default: the current context).
    #[arg(long)]
    context: Option<String>,
    #[command(flatten)]
    limits: LimitArgs,
}

/// Resource limits; each default is safe for a webhook in front of every pod creation.
#[derive(Debug, clap::Args)]
struct LimitArgs {
    /// Larger request bodies get HTTP 413.
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Connections served at once; more wait in the listen backlog.
    #[arg(long, default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// A client that does not complete the TLS handshake in time is disconnected.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    tls_handshake_timeout: Duration,
    /// HTTP/1.1: a request's headers must arrive within this time (also closes idle keep-alive
    /// connections after it).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    header_read_timeout: Duration,
    /// Reading the body and answering; keep it under the webhook's timeoutSeconds (5s).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// HTTP/2: concurrent streams per connection.
    #[arg(long, default_value_t = Limits::default().http2_max_concurrent_streams)]
    http2_max_concurrent_streams: u32,
    /// How long shutdown waits for requests in flight.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
}

impl From<&LimitArgs> for Limits {
    fn from(args: &LimitArgs) -> Limits {
        Limits {
            max_body_bytes: args.max_body_bytes,
            max_connections: args.max_connections.max(1),
            handshake_timeout: args.tls_handshake_timeout,
            header_read_timeout: args.header_read_timeout,
            request_timeout: args.request_timeout,
            http2_max_concurrent_streams: args.http2_max_concurrent_streams.max(1),
            shutdown_grace: args.shutdown_grace,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MeshStateArg {
    Auto,
    Off,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Enforce,
    Audit,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = super::load_config(args.config.as_deref())?;
    if let Some(mode) = args.mode {
        config.mode = match mode {
            ModeArg::Enforce => Mode::Enforce,
            ModeArg::Audit => Mode::Audit,
        };
    }
    if let Ok(namespace) = std::env::var("POD_NAMESPACE")
        && !namespace.trim().is_empty()
    {
        config.own_namespace = namespace.trim().to_string();
    }
    let client = match mesh_state_client(&args).await {
        Ok(client) => client,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(2));
        }
    };
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();

    let (resolver, files, generated_ca) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let (files, key) = CertFiles::load(cert.clone(), key.clone()).with_context(|| {
                format!("cannot load the serving certificate {}", cert.display())
            })?;
            (Arc::new(CertResolver::new(key)), Some(files), None)
        }
        _ => {
            let names = ["localhost", "127.0.0.1", "::1"].map(String::from);
            let bundle = certs::generate(&names, 365)
                .context("cannot generate a self-signed certificate")?;
            let key = tls::certified_key(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes())?;
            (Arc::new(CertResolver::new(key)), None, Some(bundle.ca_pem))
        }
    };
    tls::report_expiry(&resolver.current(), &metrics);
    let client_ca = match &args.client_ca {
        Some(path) => Some(tls::client_ca_roots(path)?),
        None => None,
    };
    let tls_config = Arc::new(tls::server_config(resolver.clone(), client_ca)?);

    let webhook_listener = server::bind(args.listen, "the webhook").await?;
    let health_listener = server::bind(args.metrics_listen, "health and metrics").await?;
    let ready = Arc::new(AtomicBool::new(false));
    if let Some(ca_pem) = generated_ca {
        // Printed once listening, so a script that reads it can connect at once.
        print!("{ca_pem}");
        std::io::Write::flush(&mut std::io::stdout())?;
    }

    let health = tokio::spawn(server::serve_plain(
        health_listener,
        server::health_router(metrics.clone(), ready.clone()),
        shutdown.clone(),
    ));
    if let Some(files) = files {
        tokio::spawn(tls::watch(
            files,
            resolver,
            args.tls_reload_interval,
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    let mesh: SharedMeshState = Arc::new(ArcSwap::from_pointee(MeshState::new(
        &config.istio.root_namespace,
        [],
    )));
    let (mesh_ready, mut mesh_listed) = watch::channel(client.is_none());
    let mesh_watch = client.map(|client| {
        tokio::spawn(mesh_watch::run(
            client,
            config.istio.root_namespace.clone(),
            mesh.clone(),
            mesh_ready,
            shutdown.clone(),
        ))
    });
    // Ready once the mesh state has listed: until then a decision could open a port the mesh
    // protects, and the API server admits pods unchanged while serverfirst is not ready.
    tokio::spawn({
        let (ready, shutdown) = (ready.clone(), shutdown.clone());
        async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                listed = mesh_listed.wait_for(|listed| *listed) => {
                    if listed.is_ok() && !shutdown.is_cancelled() {
                        ready.store(true, Ordering::Release);
                    }
                }
            }
        }
    });

    let limits = Limits::from(&args.limits);
    let router = server::webhook_router(Arc::new(config.clone()), mesh, metrics, &limits);
    tracing::info!(
        listen = %webhook_listener.local_addr()?,
        metrics = %args.metrics_listen,
        mode = config.mode.as_str(),
        "serving admission webhook"
    );
    let https = server::serve_https(
        webhook_listener,
        tls_config,
        router,
        limits,
        shutdown.clone(),
    );
    https.await;
    ready.store(false, Ordering::Release);
    shutdown.cancel();
    if let Some(mesh_watch) = mesh_watch {
        mesh_watch.await?;
    }
    health.await?.context("health listener failed")?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Cancels `shutdown` on SIGTERM (kubelet) or SIGINT (terminal).
pub(super) async fn cancel_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => tracing::info!("SIGTERM: finishing in-flight work"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: finishing in-flight work"),
        _ = shutdown.cancelled() => {}
    }
    shutdown.cancel();
}

/// The client that reads the mesh state, or `None` when it is off or no cluster is configured at
/// all (a webhook run on a laptop decides as if no mesh policy existed, and says so once).
async fn mesh_state_client(args: &ServeArgs) -> Result<Option<kube::Client>, String> {
    if args.mesh_state == MeshStateArg::Off {
        tracing::info!("mesh state off (--mesh-state off): decisions assume no mesh policy");
        return Ok(None);
    }
    if args.kubeconfig.is_none() && args.context.is_none() && !super::cluster_configured() {
        tracing::info!(
            "no cluster configured (no kubeconfig, not in a pod): decisions assume no mesh policy"
        );
        return Ok(None);
    }
    super::kube_client(args.kubeconfig.as_deref(), args.context.as_deref())
        .await
        .map(Some)
}
