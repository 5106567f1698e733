//! The HTTPS webhook listener and the plain-HTTP health/metrics listener.
//!
//! Servers take a bound listener and a shutdown token, so tests bind port 0 and never sleep.
//! The webhook's accept loop is our own (tokio-rustls + hyper) so that every limit is explicit:
//! connection cap, TLS handshake timeout, header read timeout, HTTP/2 stream cap, body size
//! and per-request deadline; shutdown stops accepting and lets in-flight requests finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{self, RequestError};
use crate::config::{Config, Mode};
use crate::mesh_state::SharedMeshState;
use crate::metrics::{Exposition, Metrics, Rejection};

/// Resource limits of the webhook listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Larger bodies get 413. Pods are capped by etcd at ~1.5 MiB; reviews carry one object.
    pub max_body_bytes: usize,
    /// Connections beyond this wait in the listen backlog.
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    /// Body read plus answer; well under the webhook configuration's `timeoutSeconds`.
    pub request_timeout: Duration,
    pub http2_max_concurrent_streams: u32,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 3 * 1024 * 1024,
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(3),
            http2_max_concurrent_streams: 64,
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

#[derive(Debug, Clone)]
struct WebhookState {
    config: Arc<Config>,
    mesh: SharedMeshState,
    metrics: Arc<Metrics>,
    max_body_bytes: usize,
}

/// `POST /mutate` and `POST /audit`. Each review reads the mesh state current when it arrives.
pub fn webhook_router(
    config: Arc<Config>,
    mesh: SharedMeshState,
    metrics: Arc<Metrics>,
    limits: &Limits,
) -> Router {
    let state = WebhookState {
        config,
        mesh,
        metrics,
        max_body_bytes: limits.max_body_bytes,
    };
    Router::new()
        .route("/mutate", post(mutate))
        .route("/audit", post(audit))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            deadline,
        ))
        .with_state(state)
}

async fn mutate(
    State(state): State<WebhookState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // `mode: audit` turns /mutate into a cluster-wide dry run.
    let mode = state.config.mode;
    answer(&state, "mutate", mode, body)
}

async fn audit(State(state): State<WebhookState>, body: Result<Bytes, BytesRejection>) -> Response {
    answer(&state, "audit", Mode::Audit, body)
}

fn answer(
    state: &WebhookState,
    endpoint: &'static str,
    mode: Mode,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                state.metrics.rejected(Rejection::BodyTooLarge);
                let message = format!(
                    "request body exceeds the limit of {} bytes",
                    state.max_body_bytes
                );
                return error_response(status, &message);
            }
            state.metrics.rejected(Rejection::InvalidRequest);
            return error_response(status, &rejection.body_text());
        }
    };
    // A snapshot: no lock is held, and a rebuild of the state never waits on this review.
    let mesh = state.mesh.load();
    match admission::review(&body, mode, &state.config, &mesh) {
        Ok(reviewed) => {
            state
                .metrics
                .review(endpoint, reviewed.kind, mode, reviewed.outcome);
            ([(header::CONTENT_TYPE, "application/json")], reviewed.body).into_response()
        }
        Err(error) => {
            let rejection = match error {
                RequestError::Invalid(ref e) if e.is_io() => Rejection::Internal,
                _ => Rejection::InvalidRequest,
            };
            state.metrics.rejected(rejection);
            tracing::warn!(endpoint, %error, "rejected a request that is not an AdmissionReview v1");
            error_response(StatusCode::BAD_REQUEST, &error.to_string())
        }
    }
}

fn error_response(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({"error": message}).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error_response(StatusCode::REQUEST_TIMEOUT, "request not completed in time"),
    }
}

/// Serves `router` over TLS on `listener` until `shutdown`, then drains in-flight requests.
pub async fn serve_https(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let handshakes = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        let limits = limits.clone();
        handshakes.spawn(async move {
            let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => return tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let io = TokioIo::new(tls);
            let service = TowerToHyperService::new(router);
            let result = if http2 {
                let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                builder
                    .timer(TokioTimer::new())
                    .max_concurrent_streams(limits.http2_max_concurrent_streams);
                watcher.watch(builder.serve_connection(io, service)).await
            } else {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_read_timeout);
                watcher.watch(builder.serve_connection(io, service)).await
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    handshakes.close();
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; dropping remaining connections");
    }
}

/// Liveness/readiness and metrics for the kubelet and Prometheus, on plain HTTP.
pub fn health_router<M: Exposition>(metrics: Arc<M>, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::Acquire);
                async move {
                    match ready {
                        true => (StatusCode::OK, "ok"),
                        false => (StatusCode::SERVICE_UNAVAILABLE, "not ready"),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let text = metrics.exposition();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
}

/// How long the plain listener waits for its connections after shutdown.
pub const PLAIN_DRAIN: Duration = Duration::from_secs(1);

/// Serves `router` on plain HTTP until `shutdown`, then waits at most [`PLAIN_DRAIN`] for the
/// connections: axum's graceful shutdown waits for every one (axum serve/mod.rs,
/// `WithGracefulShutdown`) and hyper closes only idle ones (hyper proto/h1/conn.rs,
/// `Conn::disable_keep_alive`), so a client that sent half a request would hold the exit.
pub async fn serve_plain(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let serving =
        axum::serve(listener, router).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let drained = async {
        shutdown.cancelled().await;
        tokio::time::sleep(PLAIN_DRAIN).await;
    };
    tokio::select! {
        served = serving => served,
        () = drained => {
            tracing::warn!(grace = ?PLAIN_DRAIN, "health connections still open; closing them");
            Ok(())
        }
    }
}

/// Binds a TCP listener with a message that names the address.
pub async fn bind(addr: SocketAddr, what: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("cannot listen on {addr} for {what}: {error}"),
        )
    })
}
