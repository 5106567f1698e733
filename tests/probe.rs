//! `probe` against the reference SMTP server, a protocol-sniffing proxy in front of it, silent
//! and closing listeners, and a closed port; in-process and through the binary's exit codes.

#[path = "support/smtp_harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use harness::{HOSTNAME, TestServer, bind, config};
use serverfirst::probe::{Outcome, ProbeError, ProbeOptions, probe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_serverfirst");

fn quick() -> ProbeOptions {
    ProbeOptions {
        timeout: Duration::from_secs(3),
        send_after: Duration::from_millis(200),
    }
}

/// A proxy that, like a sidecar sniffing the protocol, connects upstream only once the client
/// has sent its first bytes: the server's banner cannot reach a client that waits for it.
async fn sniffing_proxy(upstream: SocketAddr) -> SocketAddr {
    let listener = bind().await;
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut first = vec![0; 1024];
                let n = client.read(&mut first).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                let mut server = TcpStream::connect(upstream).await.expect("upstream");
                server.write_all(&first[..n]).await.expect("forward");
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    addr
}

/// A listener that accepts, then reads and never writes; with `close`, it hangs up at once.
async fn mute_listener(close: bool) -> SocketAddr {
    let listener = bind().await;
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            if close {
                continue;
            }
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = client.read_to_end(&mut sink).await;
            });
        }
    });
    addr
}

/// An address where nothing listens.
async fn closed_port() -> SocketAddr {
    bind().await.local_addr().expect("local addr")
}

async fn run_probe_binary(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .arg("probe")
            .args(args)
            .output()
            .expect("run probe")
    })
    .await
    .expect("probe process")
}

#[tokio::test]
async fn banner_from_the_smtp_server() {
    let server = TestServer::start(config()).await;
    let report = probe(&server.addr.to_string(), &quick())
        .await
        .expect("probe");
    assert_eq!(report.outcome, Outcome::Banner, "{report:?}");
    assert_eq!(report.peer, server.addr);
    assert_eq!(
        report.banner.as_deref(),
        Some(&*format!("220 {HOSTNAME} ESMTP serverfirst"))
    );
    assert_eq!(report.sent, None);
    let first_byte = report.first_byte.expect("first byte");
    assert!(
        first_byte < Duration::from_millis(200),
        "time to first byte {first_byte:?}"
    );
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn stall_behind_a_sniffing_proxy() {
    let server = TestServer::start(config()).await;
    let proxy = sniffing_proxy(server.addr).await;
    let options = quick();
    let report = probe(&proxy.to_string(), &options).await.expect("probe");
    assert_eq!(report.outcome, Outcome::Stall, "{report:?}");
    // Once the probe spoke, the real banner came through.
    assert_eq!(
        report.banner.as_deref(),
        Some(&*format!("220 {HOSTNAME} ESMTP serverfirst"))
    );
    let sent = report.sent.expect("the probe spoke");
    assert!(sent >= options.send_after, "sent at {sent:?}");
    assert!(report.first_byte_after_send().expect("banner after send") < options.timeout);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn silent_listener() {
    let addr = mute_listener(false).await;
    let options = ProbeOptions {
        timeout: Duration::from_millis(300),
        ..quick()
    };
    let report = probe(&addr.to_string(), &options).await.expect("probe");
    assert_eq!(report.outcome, Outcome::Silent, "{report:?}");
    assert!(report.sent.is_some());
    assert_eq!((report.first_byte, report.banner), (None, None));
}

#[tokio::test]
async fn listener_that_hangs_up() {
    let addr = mute_listener(true).await;
    let report = probe(&addr.to_string(), &quick()).await.expect("probe");
    assert_eq!(report.outcome, Outcome::Closed, "{report:?}");
    assert_eq!(report.banner, None);
}

#[tokio::test]
async fn closed_port_is_no_connection() {
    let addr = closed_port().await;
    match probe(&addr.to_string(), &quick()).await {
        Err(ProbeError::Connect {
            addr: failed,
            source,
        }) => {
            assert_eq!(failed, addr);
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        other => panic!("expected a refused connection, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_exit_codes_and_output() {
    let server = TestServer::start(config()).await;
    let proxy = sniffing_proxy(server.addr).await;
    let closed = closed_port().await;

    let ok = run_probe_binary(vec![server.addr.to_string()]).await;
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!(": 220 {HOSTNAME} ESMTP serverfirst")),
        "{stdout}"
    );
    assert!(stdout.contains("ok: the server spoke first"), "{stdout}");

    let args = vec![proxy.to_string(), "--send-after".into(), "200ms".into()];
    let stall = run_probe_binary(args).await;
    let stdout = String::from_utf8_lossy(&stall.stdout);
    assert_eq!(stall.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "server-first stall: something on the path waits for the client to speak \
             (mesh protocol sniffing?)"
        ),
        "{stdout}"
    );
    let annotation = format!(
        "traffic.sidecar.istio.io/excludeInboundPorts: \"{}\"",
        proxy.port()
    );
    assert!(stdout.contains(&annotation), "{stdout}");

    let refused = run_probe_binary(vec![closed.to_string()]).await;
    assert_eq!(refused.status.code(), Some(2));

    let json = run_probe_binary(vec![server.addr.to_string(), "-o".into(), "json".into()]).await;
    assert_eq!(json.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON output");
    assert_eq!(report["outcome"], "banner");
    assert_eq!(report["address"], server.addr.to_string());
    assert!(report["first_byte_ms"].as_f64().is_some(), "{report}");
    server.stop().await.expect("clean stop");
}
