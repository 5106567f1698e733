//! The load generator: keep-alive HTTP/1.1 connections over rustls, each sending one request
//! after another and checking every answer.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context as _, bail};
use axum::http::header;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::Options;
use crate::servers::{Server, Setup, TICK_US, cpu_ticks, proc_status_kib, reset_peak_rss};

/// A keep-alive HTTP/1.1 connection over TLS.
pub struct Conn {
    pub sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn open(addr: SocketAddr, tls: &TlsConnector) -> anyhow::Result<Conn> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let stream = tls.connect(ServerName::try_from("localhost")?, tcp).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn { sender })
    }

    pub async fn post(&mut self, body: Bytes) -> anyhow::Result<(u16, Bytes)> {
        self.sender.ready().await?;
        let request = hyper::Request::post("/mutate")
            .header(header::HOST, "localhost")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// One scenario on one server, over the measured window.
#[derive(Debug, Clone)]
pub struct Sample {
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub cpu_us: f64,
    pub server_util: f64,
    pub load_util: f64,
    pub peak_rss_kib: u64,
}

struct ConnResult {
    histogram: Histogram<u64>,
    answered: u64,
    error: Option<String>,
}

async fn connection_loop(
    mut conn: Conn,
    body: Bytes,
    expected: Bytes,
    window: (Instant, Instant),
) -> ConnResult {
    let mut histogram = Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("bounds");
    let (mut answered, mut error) = (0, None);
    while Instant::now() < window.1 || answered == 0 {
        let begin = Instant::now();
        match conn.post(body.clone()).await {
            Ok((200, answer)) if answer == expected => {
                let end = Instant::now();
                answered += 1;
                if end >= window.0 && end < window.1 {
                    let nanos = end.duration_since(begin).as_nanos();
                    histogram.saturating_record(u64::try_from(nanos).unwrap_or(u64::MAX));
                }
            }
            Ok((status, answer)) => {
                error = Some(format!(
                    "status {status}, answer {}",
                    String::from_utf8_lossy(&answer[..answer.len().min(300)])
                ));
                break;
            }
            Err(e) => {
                error = Some(format!("{e:#}"));
                break;
            }
        }
    }
    ConnResult {
        histogram,
        answered,
        error,
    }
}

/// Drives `server` with `conns` connections posting `body`, each answer compared with
/// `expected`; warm-up first, then the measured window.
pub async fn drive(
    server: &mut Server,
    setup: &Setup,
    options: &Options,
    body: Bytes,
    expected: Bytes,
    conns: usize,
) -> anyhow::Result<Sample> {
    let pid = server.pid().to_string();
    let mut opened = Vec::with_capacity(conns);
    for _ in 0..conns {
        opened.push(Conn::open(server.addr, &setup.tls).await?);
    }
    let has_peak = reset_peak_rss(server.pid());
    let begin = Instant::now();
    let window = (
        begin + options.warmup,
        begin + options.warmup + options.measure,
    );
    let tasks: Vec<_> = opened
        .into_iter()
        .map(|conn| {
            tokio::spawn(connection_loop(
                conn,
                body.clone(),
                expected.clone(),
                window,
            ))
        })
        .collect();
    tokio::time::sleep_until(window.0.into()).await;
    let (server0, load0, at0) = (cpu_ticks(&pid)?, cpu_ticks("self")?, Instant::now());
    tokio::time::sleep_until(window.1.into()).await;
    let (server1, load1, at1) = (cpu_ticks(&pid)?, cpu_ticks("self")?, Instant::now());
    let mut histogram = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)?;
    for task in tasks {
        let result = task.await?;
        server.answered += result.answered;
        if let Some(error) = result.error {
            bail!("{}: {error}", server.kind.name());
        }
        histogram.add(&result.histogram)?;
    }
    let peak_rss_kib = match has_peak {
        true => proc_status_kib(server.pid(), "VmHWM")?,
        false => 0,
    };
    let seconds = at1.duration_since(at0).as_secs_f64();
    let requests = histogram.len();
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1e6;
    Ok(Sample {
        requests,
        rps: requests as f64 / seconds,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        cpu_us: (server1 - server0) as f64 * TICK_US / requests.max(1) as f64,
        server_util: (server1 - server0) as f64 * TICK_US / 1e6 / seconds,
        load_util: (load1 - load0) as f64 * TICK_US / 1e6 / seconds,
        peak_rss_kib,
    })
}
