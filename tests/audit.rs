//! `serverfirst audit` against a stub Kubernetes API server on 127.0.0.1 over HTTPS: the kube
//! client is real, the PodList pages and ReplicaSets are captured-looking JSON.

#[path = "support/stub_api.rs"]
mod stub_api;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{Uri, header};
use axum::routing::get;
use serde_json::{Value, json};
use stub_api::StubApi;

const ISTIO_INIT_ARGS: &[&str] = &[
    "istio-iptables",
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
    "--log_output_level=default:info",
];

fn owner(kind: &str, name: &str) -> Value {
    json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": format!("uid-{name}"), "controller": true, "blockOwnerDeletion": true}])
}

fn pod(
    namespace: &str,
    name: &str,
    annotations: Value,
    owners: Value,
    containers: Value,
    init: Value,
) -> Value {
    json!({
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"), "resourceVersion": "4711",
                     "creationTimestamp": "2026-11-20T10:12:04Z", "labels": {"app": name}, "annotations": annotations,
                     "ownerReferences": owners},
        "spec": {"containers": containers, "initContainers": init, "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
                 "serviceAccountName": "default", "nodeName": "node-1",
                 "volumes": [{"name": "istio-envoy", "emptyDir": {"medium": "Memory"}}]},
        "status": {"phase": "Running", "podIP": "10.244.1.17", "hostIP": "172.18.0.2", "qosClass": "Burstable"}
    })
}

fn app(ports: &[(&str, u16)]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "containerPort": p, "protocol": "TCP"}))
        .collect();
    json!({"name": "app", "image": "example/app:1", "ports": ports, "resources": {}})
}

fn proxy() -> Value {
    json!({"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.0", "args": ["proxy", "sidecar"],
           "ports": [{"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}]})
}

const STATUS: &str =
    r#"{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["istio-envoy"]}"#;

fn pods() -> Vec<Value> {
    vec![
        // Injected without istio-cni, 25 and 587 captured: what the operator in our story had.
        pod(
            "mail",
            "mox-7c9d5b8f6-x2k4q",
            json!({"sidecar.istio.io/status": STATUS}),
            owner("ReplicaSet", "mox-7c9d5b8f6"),
            json!([
                app(&[("smtp", 25), ("submission", 587), ("https", 443)]),
                proxy()
            ]),
            json!([{"name": "istio-init", "image": "docker.io/istio/proxyv2:1.24.0", "args": ISTIO_INIT_ARGS}]),
        ),
        pod(
            "mail",
            "mox-7c9d5b8f6-p9z8w",
            json!({"sidecar.istio.io/status": STATUS}),
            owner("ReplicaSet", "mox-7c9d5b8f6"),
            json!([app(&[("smtp", 25), ("submission", 587)]), proxy()]),
            json!([{"name": "istio-init", "image": "docker.io/istio/proxyv2:1.24.0", "args": ISTIO_INIT_ARGS}]),
        ),
        // Injected, and the exclusion reached istio-init: protected.
        pod(
            "mail",
            "relay-0",
            json!({"sidecar.istio.io/status": STATUS, "traffic.sidecar.istio.io/excludeInboundPorts": "25"}),
            owner("StatefulSet", "relay"),
            json!([app(&[("smtp", 25)]), proxy()]),
            json!([{"name": "istio-init", "args": ["istio-iptables", "-b", "*", "-d", "15090,15021,25,15020"]}]),
        ),
        // istio-cni: the annotations are what counts, and 143 is not excluded.
        pod(
            "mail",
            "dovecot-5f6d7c8b9-abcde",
            json!({"sidecar.istio.io/status": STATUS, "traffic.sidecar.istio.io/excludeInboundPorts": "15020",
                   "traffic.sidecar.istio.io/includeInboundPorts": "*"}),
            owner("ReplicaSet", "dovecot-5f6d7c8b9"),
            json!([app(&[("imap", 143)]), proxy()]),
            json!([{"name": "istio-validation", "args": ["istio-iptables", "-b", "*", "-d", "15090,15021,15020", "--run-validation", "--skip-rule-apply"]}]),
        ),
        // No sidecar yet.
        pod(
            "jobs",
            "digest-29123456-q7k2m",
            json!({}),
            json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "digest-29123456", "uid": "j", "controller": true}]),
            json!([app(&[("submission", 587)])]),
            json!([]),
        ),
        pod(
            "web",
            "nginx",
            json!({}),
            json!([]),
            json!([app(&[("http", 80)])]),
            json!([]),
        ),
    ]
}

#[derive(Clone, Default)]
struct Calls {
    list_queries: Arc<Mutex<Vec<HashMap<String, String>>>>,
    replicaset_gets: Arc<Mutex<Vec<String>>>,
}

type JsonResponse = ([(header::HeaderName, &'static str); 1], String);

fn json_response(value: Value) -> JsonResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
}

async fn list_pods(State(calls): State<Calls>, uri: Uri) -> JsonResponse {
    let query: HashMap<String, String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    calls.list_queries.lock().unwrap().push(query.clone());
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(usize::MAX);
    let start: usize = query
        .get("continue")
        .and_then(|c| c.strip_prefix("page-from-"))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let all = pods();
    let end = (start + limit).min(all.len());
    let continue_token = if end < all.len() {
        format!("page-from-{end}")
    } else {
        String::new()
    };
    json_response(json!({"kind": "PodList", "apiVersion": "v1",
                         "metadata": {"resourceVersion": "4712", "continue": continue_token},
                         "items": all[start..end]}))
}

async fn get_replicaset(
    State(calls): State<Calls>,
    Path((namespace, name)): Path<(String, String)>,
) -> JsonResponse {
    calls.replicaset_gets.lock().unwrap().push(name.clone());
    let deployment = name
        .rsplit_once('-')
        .map(|(d, _)| d.to_string())
        .unwrap_or_default();
    json_response(json!({"kind": "ReplicaSet", "apiVersion": "apps/v1",
                      "metadata": {"name": name, "namespace": namespace, "ownerReferences": owner("Deployment", &deployment)},
                      "spec": {"replicas": 2, "selector": {"matchLabels": {"app": deployment}}}}))
}

/// The stub API server with the pods and ReplicaSets above, and what it was asked.
async fn audit_api() -> (StubApi, Calls) {
    let calls = Calls::default();
    let router = Router::new()
        .route("/api/v1/pods", get(list_pods))
        .route(
            "/apis/apps/v1/namespaces/{namespace}/replicasets/{name}",
            get(get_replicaset),
        )
        .with_state(calls.clone());
    (StubApi::start(router).await, calls)
}

/// Contexts `stub` (namespace mail) and `other` (namespace nowhere, the current one).
fn kubeconfig(dir: &std::path::Path, server: &str, ca_pem: &str) -> std::path::PathBuf {
    stub_api::kubeconfig(
        dir,
        server,
        ca_pem,
        "other",
        &[("stub", "mail"), ("other", "nowhere")],
    )
}

async fn run_audit(kubeconfig: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_serverfirst"));
    command
        .arg("audit")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST");
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test]
async fn audit_reports_each_pod_with_its_owner_across_pages() {
    let (api, calls) = audit_api().await;
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &api.url(), &api.ca_pem);
    let (code, stdout, stderr) = run_audit(
        &config,
        &["-A", "-o", "json", "--context", "stub", "--page-size", "2"],
    )
    .await;
    assert_eq!(code, 1, "at-risk pods make the exit code 1\n{stderr}");
    let rows: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    let summary: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|r| {
            let owner = r
                .get("owner")
                .map(|o| {
                    format!(
                        "{}/{}",
                        o["kind"].as_str().unwrap(),
                        o["name"].as_str().unwrap()
                    )
                })
                .unwrap_or_default();
            (
                r["pod"].as_str().unwrap().into(),
                owner,
                r["status"].as_str().unwrap().into(),
                serde_json::to_string(&r["ports"]).unwrap(),
            )
        })
        .collect();
    let expected = [
        (
            "mox-7c9d5b8f6-x2k4q",
            "Deployment/mox",
            "at-risk",
            "[25,587]",
        ),
        (
            "mox-7c9d5b8f6-p9z8w",
            "Deployment/mox",
            "at-risk",
            "[25,587]",
        ),
        ("relay-0", "StatefulSet/relay", "protected", "[25]"),
        (
            "dovecot-5f6d7c8b9-abcde",
            "Deployment/dovecot",
            "at-risk",
            "[143]",
        ),
        (
            "digest-29123456-q7k2m",
            "Job/digest-29123456",
            "would-patch",
            "[587]",
        ),
        ("nginx", "", "not-applicable", "[]"),
    ];
    let expected: Vec<(String, String, String, String)> = expected
        .iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
        .collect();
    assert_eq!(summary, expected);
    assert_eq!(rows[0]["needsRestart"], true);
    assert_eq!(rows[0]["sidecar"], true);
    let fix = rows[0]["fix"].as_str().unwrap();
    assert!(
        fix.starts_with("kubectl -n mail rollout restart deployment/mox; "),
        "{fix}"
    );
    assert!(
        fix.contains("traffic.sidecar.istio.io/excludeInboundPorts: \"25,587\""),
        "{fix}"
    );
    assert!(
        rows[3]["fix"].as_str().unwrap().contains("\"143,15020\""),
        "CNI mode: the annotation is the fix"
    );
    assert_eq!(rows[4]["needsRestart"], false);

    // Three pages of two; each ReplicaSet fetched once.
    let queries = calls.list_queries.lock().unwrap().clone();
    assert_eq!(queries.len(), 3, "{queries:?}");
    assert!(
        queries
            .iter()
            .all(|q| q.get("limit").map(String::as_str) == Some("2"))
    );
    assert_eq!(
        queries[1].get("continue").map(String::as_str),
        Some("page-from-2")
    );
    let mut gets = calls.replicaset_gets.lock().unwrap().clone();
    gets.sort();
    assert_eq!(gets, ["dovecot-5f6d7c8b9", "mox-7c9d5b8f6"]);
    assert!(stderr.contains("listed 6 pods"), "{stderr}");
}

#[tokio::test]
async fn audit_table_is_aligned() {
    let (api, _) = audit_api().await;
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &api.url(), &api.ca_pem);
    let (code, stdout, _) = run_audit(&config, &["--all-namespaces", "--context", "stub"]).await;
    assert_eq!(code, 1);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("NAMESPACE  POD"), "{stdout}");
    let status_column = lines[0].find("STATUS").unwrap();
    assert_eq!(
        &lines[1][status_column..status_column + 7],
        "at-risk",
        "{stdout}"
    );
    println!("{stdout}");
}

#[tokio::test]
async fn unreachable_api_server_is_one_clear_line_and_exit_2() {
    let (api, _) = audit_api().await;
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = kubeconfig(dir.path(), &format!("https://{closed}"), &api.ca_pem);
    let (code, stdout, stderr) = run_audit(&config, &["-A", "--context", "stub"]).await;
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("cannot list pods"), "{stderr}");
    assert!(!stderr.contains("panicked"));

    let (code, _, stderr) = run_audit(&config, &["-A", "--context", "missing"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("missing"), "{stderr}");
}
