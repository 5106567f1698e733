use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::companions::controller;
use crate::metrics::CompanionMetrics;
use crate::server;

#[derive(Debug, clap::Args)]
pub struct CompanionsArgs {
    /// Only Services in namespaces matching this label selector get companion rules, e.g.
    /// `serverfirst.dev/mode=enforce` (default: every namespace).
    #[arg(long)]
    namespace_selector: Option<String>,
    /// kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the in-cluster config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// kubeconfig context to use (default: the current context).
    #[arg(long)]
    context: Option<String>,
    /// Address of the plain-HTTP /healthz, /readyz and /metrics listener.
    #[arg(long, default_value = "0.0.0.0:9090")]
    metrics_listen: SocketAddr,
    /// This replica's name in the Events it publishes (the downward API's metadata.name).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
}

pub async fn run(args: CompanionsArgs) -> anyhow::Result<ExitCode> {
    let client = match super::kube_client(args.kubeconfig.as_deref(), args.context.as_deref()).await
    {
        Ok(client) => client,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(2));
        }
    };
    let metrics = Arc::new(CompanionMetrics::new());
    let shutdown = CancellationToken::new();
    let health_listener = server::bind(args.metrics_listen, "health and metrics").await?;
    // Ready from the start: with no Istio CRDs there is nothing to do, and that is no fault.
    let ready = Arc::new(AtomicBool::new(true));
    let health = tokio::spawn(server::serve_plain(
        health_listener,
        server::health_router(metrics.clone(), ready.clone()),
        shutdown.clone(),
    ));
    tokio::spawn(super::serve::cancel_on_signal(shutdown.clone()));
    tracing::info!(
        metrics = %args.metrics_listen,
        namespace_selector = args.namespace_selector.as_deref().unwrap_or("(every namespace)"),
        "starting the companions controller"
    );
    if let Some(rules) = controller::wait_for_rules(&client, &shutdown).await {
        controller::run(
            client,
            rules,
            args.namespace_selector,
            args.instance,
            metrics,
            shutdown.clone(),
        )
        .await;
    }
    ready.store(false, Ordering::Release);
    shutdown.cancel();
    health.await?.context("health listener failed")?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
