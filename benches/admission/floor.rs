//! The floor server: `serve_https` with a router that reads the body and returns a fixed
//! answer, parsing nothing.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::anyhow;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::routing::post;
use bytes::Bytes;
use serverfirst::server::{self, Limits};
use serverfirst::tls::{self, CertResolver};
use tokio_util::sync::CancellationToken;

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let value = |flag: &str| -> anyhow::Result<&String> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .ok_or_else(|| anyhow!("floor server: {flag} is required"))
    };
    let listen: SocketAddr = value("--listen")?.parse()?;
    let (cert, key) = (value("--tls-cert")?, value("--tls-key")?);
    let answer = Bytes::from(fs::read(value("--answer")?)?);
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The same runtime as the webhook binary's.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(listen, Path::new(cert), Path::new(key), answer))
}

async fn serve(listen: SocketAddr, cert: &Path, key: &Path, answer: Bytes) -> anyhow::Result<()> {
    let key = tls::certified_key(&fs::read(cert)?, &fs::read(key)?)?;
    let config = Arc::new(tls::server_config(Arc::new(CertResolver::new(key)), None)?);
    let listener = server::bind(listen, "the floor server").await?;
    let limits = Limits::default();
    let router = Router::new()
        .route(
            "/mutate",
            post(move |_body: Bytes| {
                let answer = answer.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], answer) }
            }),
        )
        .layer(DefaultBodyLimit::max(limits.max_body_bytes));
    server::serve_https(listener, config, router, limits, CancellationToken::new()).await;
    Ok(())
}
