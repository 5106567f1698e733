//! `serverfirst companions` as an operator runs it, against a loopback API server: without
//! Istio CRDs it stays ready, says so once, serves its metrics, and stops on SIGTERM; with them
//! it writes the rule, and SIGTERM stops it within seconds also while a health request or a
//! cache is unfinished.

mod webhook_support;

#[path = "support/mock_cluster.rs"]
mod mock_cluster;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{StatusCode, Uri};
use mock_cluster::{MockCluster, PODS, SERVICES};
use serde_json::{Value, json};
use webhook_support::free_port;

/// Kills the controller by PID when the test ends, also on failure.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every path is 404 (no `networking.istio.io`); the requested paths are recorded.
async fn stub_api() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let router = Router::new().fallback(move |uri: Uri| {
        recorded.lock().unwrap().push(uri.path().to_string());
        async {
            let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "NotFound", "code": 404, "message": "the server could not find the requested resource"});
            (StatusCode::NOT_FOUND, [("content-type", "application/json")], status.to_string())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{addr}"), seen)
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

#[tokio::test(flavor = "multi_thread")]
async fn without_istio_crds_it_stays_ready_and_stops_on_sigterm() {
    let (server, seen) = stub_api().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: stub\nclusters:\n- name: stub\n  cluster:\n    server: {server}\n\
         users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: stub\n  context: {{cluster: stub, user: u}}\n"
    )).unwrap();
    let metrics_port = free_port();
    let log = dir.path().join("stderr");
    let mut child = Spawned(
        Command::new(env!("CARGO_BIN_EXE_serverfirst"))
            .args(["companions", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let asked = seen
            .lock()
            .unwrap()
            .iter()
            .any(|p| p == "/apis/networking.istio.io/v1beta1");
        let ready = get(metrics_port, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200"));
        if asked && ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready, or discovery not asked, within 10s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        seen.lock().unwrap()[..2],
        [
            "/apis/networking.istio.io/v1",
            "/apis/networking.istio.io/v1beta1"
        ]
    );
    let metrics = get(metrics_port, "/metrics").unwrap();
    assert!(
        metrics.contains("serverfirst_companions_conflicts 0"),
        "{metrics}"
    );
    assert!(metrics.contains(r#"serverfirst_companions_reconciles_total{result="success"} 0"#));
    assert!(
        get(metrics_port, "/healthz")
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "no exit within 10s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(exit.code(), Some(0));
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        stderr.matches("serves no DestinationRule API").count(),
        1,
        "said once: {stderr}"
    );
    assert!(stderr.contains("stopped"), "{stderr}");
}

#[test]
fn a_missing_kubeconfig_is_one_clear_line_and_exit_2() {
    let output = Command::new(env!("CARGO_BIN_EXE_serverfirst"))
        .args(["companions", "--kubeconfig", "/nonexistent/kubeconfig"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: kubeconfig /nonexistent/kubeconfig: "),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// The mox Service in `mail`, one EndpointSlice behind it, and its pod recording port 25 as
/// excluded.
fn mail_objects() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "mox", "namespace": "mail", "uid": "3f0c-mox"},
            "spec": {"selector": {"app": "mox"}, "ports": [{"name": "smtp", "port": 25}]}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "mox-x7k2p", "namespace": "mail",
                "labels": {"kubernetes.io/service-name": "mox"}},
            "addressType": "IPv4", "ports": [{"name": "smtp", "port": 25, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.0.0.7"],
                "targetRef": {"kind": "Pod", "namespace": "mail", "name": "mox-0"}}]}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mox-0", "namespace": "mail",
            "annotations": {"serverfirst.dev/excluded-ports": "25"}}}),
    ]
}

/// The controller against `server`, its metrics on `metrics_port`, stderr in `dir/stderr`.
fn spawn_companions(dir: &std::path::Path, server: &str, metrics_port: u16) -> Spawned {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: stub\nclusters:\n- name: stub\n  cluster:\n    server: {server}\n\
         users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: stub\n  context: {{cluster: stub, user: u}}\n"
    )).unwrap();
    Spawned(
        Command::new(env!("CARGO_BIN_EXE_serverfirst"))
            .args(["companions", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// Sends SIGTERM and returns the exit code and how long the process took to exit (at most 10s).
async fn terminate(child: &mut Spawned) -> (Option<i32>, Duration) {
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let sent = Instant::now();
    loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            return (exit.code(), sent.elapsed());
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "no exit within 10s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A client that opened a connection to the health listener and sent half of its first request
/// (a probe or scraper caught mid-request): the graceful shutdown must not wait for it.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_0_within_seconds_while_a_health_request_is_half_sent() {
    let (cluster, server) = MockCluster::serve_http(mail_objects()).await;
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let started = tokio::time::Instant::now();
    let mut child = spawn_companions(dir.path(), &server, metrics_port);
    let write = cluster.write_after(started, Duration::from_secs(20)).await;
    assert_eq!(
        write.method, "PATCH",
        "the controller runs and writes the rule"
    );

    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
    write!(stalled, "GET /metrics HTTP/1.1\r\nHost: x\r\n").unwrap();
    // Connections are accepted in order: once a later one is answered, the stalled one is the
    // listener's too.
    let answered = get(metrics_port, "/healthz").expect("the health listener answers");
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");

    let (code, took) = terminate(&mut child).await;
    eprintln!("SIGTERM → exit with a half-sent health request: {took:?}");
    assert_eq!(code, Some(0));
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after SIGTERM"
    );
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert!(stderr.contains("stopped"), "{stderr}");
    drop(stalled);
}

/// The pods cannot be listed (403): the Service's reconcile waits for that cache, and SIGTERM
/// must still end the process within seconds.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_0_within_seconds_while_a_cache_cannot_list() {
    let (cluster, server) = MockCluster::serve_http(mail_objects()).await;
    cluster.forbid_lists(PODS);
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_companions(dir.path(), &server, free_port());
    cluster
        .wait_for_watches(&[SERVICES], Duration::from_secs(20))
        .await;
    cluster
        .wait_for_lists(PODS, 2, Duration::from_secs(20))
        .await;

    let (code, took) = terminate(&mut child).await;
    eprintln!("SIGTERM → exit with a cache that cannot list: {took:?}");
    assert_eq!(code, Some(0));
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after SIGTERM"
    );
    assert!(
        cluster.seen().iter().all(|s| s.method == "GET"),
        "nothing written on a partial cache"
    );
}
