//! The `serverfirst serve` binary as an operator runs it: README command, signals, bad flags.

mod webhook_support;

use webhook_support::SpawnedServe;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REVIEW: &str = include_str!("fixtures/review-mail-deployment.json");

fn start_self_signed() -> SpawnedServe {
    let server = SpawnedServe::start(&[], Stdio::null());
    server.wait_ready(Duration::from_secs(10));
    server
}

#[tokio::test]
async fn self_signed_serve_answers_with_a_patch() {
    let server = start_self_signed();
    let (status, body) = webhook_support::post(
        server.webhook,
        &server.ca_pem,
        "/mutate",
        REVIEW.into(),
        false,
    )
    .await;
    assert_eq!(status, 200);
    let response: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(response["response"]["patchType"], "JSONPatch");
}

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_and_exits_zero() {
    let mut server = start_self_signed();
    let mut tls = webhook_support::connect_tls(server.webhook, &server.ca_pem, &[b"http/1.1"])
        .await
        .unwrap();
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        REVIEW.len()
    );
    let (first, rest) = REVIEW.as_bytes().split_at(REVIEW.len() / 2);
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(first).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // No new connections once shutdown began.
    assert!(
        webhook_support::connect_tls(server.webhook, &server.ca_pem, &[])
            .await
            .is_err()
    );

    tls.write_all(rest).await.unwrap();
    tls.flush().await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("JSONPatch"), "{response}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn bad_flags_and_files_give_a_clear_error_and_exit_2() {
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "serve",
                "--self-signed",
                "--client-ca",
                "/nonexistent/ca.crt",
            ],
            "/nonexistent/ca.crt",
        ),
        (&["serve"], "--tls-cert"),
        (
            &[
                "serve",
                "--tls-cert",
                "/nonexistent/tls.crt",
                "--tls-key",
                "/nonexistent/tls.key",
            ],
            "/nonexistent/tls.crt",
        ),
        (
            &[
                "serve",
                "--self-signed",
                "--config",
                "/nonexistent/config.yaml",
            ],
            "/nonexistent/config.yaml",
        ),
    ];
    for (args, expected) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_serverfirst"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// `POD_NAMESPACE` (the downward API in the chart and overlays) names serverfirst's own namespace,
/// which is never patched; on a machine with no cluster configured it says once that decisions
/// assume no mesh policy.
#[tokio::test]
async fn its_own_namespace_is_never_patched_and_no_cluster_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let server = SpawnedServe::start_with_env(
        &[],
        &[("POD_NAMESPACE", "mail"), ("RUST_LOG", "info")],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    server.wait_ready(Duration::from_secs(10));
    // The fixture's review is for namespace `mail`.
    let (status, body) = webhook_support::post(
        server.webhook,
        &server.ca_pem,
        "/mutate",
        REVIEW.into(),
        false,
    )
    .await;
    assert_eq!(status, 200);
    let response: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(response["response"].get("patch").is_none(), "{response}");
    drop(server);
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        stderr.matches("no cluster configured").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("system namespace"), "{stderr}");
}
