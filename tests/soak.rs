//! Soak: thousands of mixed good, bad, oversized and slow requests from many connections at once
//! against the real binary. Every good request must get the right answer, nothing may panic,
//! memory must settle, and the server must still answer afterwards.

mod webhook_support;

use webhook_support::SpawnedServe;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

const REVIEW: &str = include_str!("fixtures/review-mail-deployment.json");
const WORKERS: usize = 32;
const REQUESTS_PER_WORKER: usize = 125;
const SLOW_CLIENTS: usize = 16;
const MAX_BODY: usize = 64 * 1024;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn start(log: &std::path::Path) -> SpawnedServe {
    let max_body = MAX_BODY.to_string();
    let args = [
        "--max-body-bytes",
        max_body.as_str(),
        "--header-read-timeout",
        "500ms",
    ];
    SpawnedServe::start(&args, std::fs::File::create(log).unwrap().into())
}

#[derive(Clone, Copy)]
enum Kind {
    Good,
    Bad,
    Oversized,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr, ca_pem: &str) -> Sender {
    let tls = webhook_support::connect_tls(addr, ca_pem, &[b"http/1.1"])
        .await
        .expect("TLS connection");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

#[derive(Default)]
struct Counts {
    good: AtomicUsize,
    bad: AtomicUsize,
    oversized: AtomicUsize,
    failures: AtomicUsize,
}

async fn worker(
    addr: SocketAddr,
    ca_pem: Arc<String>,
    expected: Arc<Vec<u8>>,
    counts: Arc<Counts>,
    seed: usize,
) {
    let mut sender = connect(addr, &ca_pem).await;
    for i in 0..REQUESTS_PER_WORKER {
        let kind = match (seed * 7 + i * 13) % 20 {
            0 => Kind::Oversized,
            1..=3 => Kind::Bad,
            _ => Kind::Good,
        };
        let body = match kind {
            Kind::Good => Bytes::from_static(REVIEW.as_bytes()),
            Kind::Bad => Bytes::from(format!(
                "{{\"apiVersion\": \"admission.k8s.io/v1\", \"kind\": {i}}}"
            )),
            Kind::Oversized => Bytes::from(vec![b' '; MAX_BODY + 1 + i]),
        };
        if sender.ready().await.is_err() {
            sender = connect(addr, &ca_pem).await;
        }
        let request = hyper::Request::post("https://localhost/mutate")
            .body(Full::new(body))
            .unwrap();
        let (status, answer) = match sender.send_request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes().to_vec())
                    .unwrap_or_default();
                (status, body)
            }
            Err(_) => (0, Vec::new()),
        };
        let ok = match kind {
            Kind::Good => status == 200 && answer == *expected,
            Kind::Bad => status == 400,
            Kind::Oversized => status == 413,
        };
        let counter = match kind {
            Kind::Good => &counts.good,
            Kind::Bad => &counts.bad,
            Kind::Oversized => &counts.oversized,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if !ok {
            counts.failures.fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "unexpected answer to a {} request: status {status}",
                ["good", "bad", "oversized"][kind as usize]
            );
        }
        if matches!(kind, Kind::Oversized) || status == 0 {
            // The server closes a connection whose body it refused to read.
            sender = connect(addr, &ca_pem).await;
        }
    }
}

/// Opens a connection and trickles a request header that never completes.
async fn slow_client(addr: SocketAddr, ca_pem: Arc<String>) -> bool {
    let mut tls = webhook_support::connect_tls(addr, &ca_pem, &[b"http/1.1"])
        .await
        .unwrap();
    let _ = tls.write_all(b"POST /mutate HTTP/1.1\r\n").await;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if tls.write_all(b"X-Slow: 1\r\n").await.is_err() {
            return true;
        }
    }
    // Still open after 2 s of trickling: the header timeout (500 ms) did not fire.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut rest),
    )
    .await;
    closed.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_leaves_the_server_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let server = start(&log);
    let pid = server.child.id();
    let ca_pem = Arc::new(server.ca_pem.clone());

    // Warm up, learn the one correct answer, and take the baseline memory.
    let (status, expected) =
        webhook_support::post(server.webhook, &ca_pem, "/mutate", REVIEW.into(), false).await;
    assert_eq!(status, 200);
    let expected = Arc::new(expected);
    let baseline = rss_kib(pid);

    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let slow: Vec<_> = (0..SLOW_CLIENTS)
        .map(|_| tokio::spawn(slow_client(server.webhook, ca_pem.clone())))
        .collect();
    let workers: Vec<_> = (0..WORKERS)
        .map(|seed| {
            tokio::spawn(worker(
                server.webhook,
                ca_pem.clone(),
                expected.clone(),
                counts.clone(),
                seed,
            ))
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let mut slow_cut_off = 0;
    for client in slow {
        slow_cut_off += usize::from(client.await.unwrap());
    }
    let elapsed = started.elapsed();
    let peak = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let peak = peak
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap()
        .to_string();

    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = rss_kib(pid);
    let (status, answer) =
        webhook_support::post(server.webhook, &ca_pem, "/mutate", REVIEW.into(), false).await;
    let log = std::fs::read_to_string(&log).unwrap();

    let (good, bad, oversized, failures) = (
        counts.good.load(Ordering::Relaxed),
        counts.bad.load(Ordering::Relaxed),
        counts.oversized.load(Ordering::Relaxed),
        counts.failures.load(Ordering::Relaxed),
    );
    let _ = writeln!(
        std::io::stderr(),
        "soak: {} requests in {elapsed:.2?} (good {good}, bad {bad}, oversized {oversized}) + {SLOW_CLIENTS} slow clients \
         ({slow_cut_off} cut off); failures = {failures}; RSS {baseline} KiB before, {settled} KiB after, {peak}",
        good + bad + oversized
    );
    assert_eq!(good + bad + oversized, WORKERS * REQUESTS_PER_WORKER);
    assert_eq!(failures, 0);
    assert_eq!(
        slow_cut_off, SLOW_CLIENTS,
        "every slow client is cut off at the header timeout"
    );
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        settled <= baseline + 16 * 1024,
        "RSS did not settle: {baseline} KiB → {settled} KiB"
    );
    assert_eq!(
        (status, answer),
        (200, (*expected).clone()),
        "the server still answers"
    );
}
