//! One set of manifests — workloads, their Services, and the Namespace, PeerAuthentications and
//! AuthorizationPolicy they run under — decided by the webhook (over HTTPS, its mesh state made
//! from the policies) and by `check` and `render` (reading the same directory): the decisions are
//! the same, kept ports get no companion DestinationRule, and a LoadBalancer in front of a kept
//! port is warned about.

mod webhook_support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Value, json};
use serverfirst::config::Config;
use serverfirst::manifests::{parse_document, split_documents};
use serverfirst::mesh_state::{MeshObject, MeshState};
use serverfirst::server::Limits;
use webhook_support::TestServer;

const DIR: &str = "tests/fixtures/manifests/mtls";

fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(Path::new(DIR).join(file)).unwrap();
    split_documents(&text)
        .iter()
        .filter_map(|d| parse_document(d).unwrap())
        .collect()
}

fn serverfirst(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_serverfirst"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// The pod template of a workload, and where it sits in the object.
fn template(object: &Value) -> (&'static str, Value) {
    let pointer = match object["kind"].as_str().unwrap() {
        "CronJob" => "/spec/jobTemplate/spec/template",
        _ => "/spec/template",
    };
    (pointer, object.pointer(pointer).unwrap().clone())
}

/// The annotations the webhook leaves on a pod created from `object`'s template.
async fn admitted(server: &TestServer, object: &Value) -> Value {
    let (_, mut pod) = template(object);
    let namespace = object["metadata"]["namespace"].as_str().unwrap();
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "5d0e3c1a-8f3b-4c1e-9a77-6f2d1b0c4e88",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE", "namespace": namespace, "object": pod.clone()}});
    let (status, body) = server
        .post("/mutate", serde_json::to_vec(&review).unwrap())
        .await;
    assert_eq!(status, 200);
    let response: Value = serde_json::from_slice(&body).unwrap();
    if let Some(patch) = response["response"]["patch"].as_str() {
        let patch = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        json_patch::patch(&mut pod, &patch).unwrap();
    }
    pod["metadata"]["annotations"].clone()
}

#[tokio::test]
async fn check_render_and_the_webhook_decide_alike_under_the_same_policies() {
    let policies = documents("policies.yaml");
    let workloads: Vec<Value> = documents("workloads.yaml")
        .into_iter()
        .filter(|o| o["kind"] != "Service")
        .collect();
    let server = TestServer::start(Config::default(), Limits::default()).await;
    let state = MeshState::new(
        "istio-system",
        policies
            .iter()
            .filter_map(|o| MeshObject::from_value(o)?.ok()),
    );
    server.mesh.store(Arc::new(state));

    let (_, rendered, _) = serverfirst(&["render", "-f", DIR]);
    let rendered: Vec<Value> = split_documents(&rendered)
        .iter()
        .filter_map(|d| parse_document(d).unwrap())
        .collect();
    let (code, checked, stderr) = serverfirst(&["check", "-f", DIR, "-o", "json"]);
    assert_eq!(code, 1, "something to change\n{stderr}");
    let rows: Vec<Value> = serde_json::from_str(&checked).unwrap();

    let mut decided = Vec::new();
    for object in &workloads {
        let name = object["metadata"]["name"].as_str().unwrap();
        let webhook = admitted(&server, object).await;
        let from_render = rendered
            .iter()
            .find(|o| o["kind"] == object["kind"] && o["metadata"]["name"] == name)
            .unwrap();
        let (pointer, _) = template(object);
        let render = &from_render.pointer(pointer).unwrap()["metadata"]["annotations"];
        assert_eq!(
            render, &webhook,
            "{name}: render writes what the webhook patches"
        );
        let row = rows
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name}: no row in {checked}"));
        let changes: serde_json::Map<String, Value> = row["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["annotation"].as_str().unwrap().to_string(),
                    c["value"].clone(),
                )
            })
            .collect();
        assert_eq!(
            Value::Object(changes),
            webhook,
            "{name}: check says what the webhook does"
        );
        decided.push((name, webhook));
    }
    assert_eq!(
        decided,
        [
            ("mox", json!({"serverfirst.dev/kept-ports": "25,587"})),
            (
                "relay",
                json!({"traffic.sidecar.istio.io/excludeInboundPorts": "25",
                       "serverfirst.dev/excluded-ports": "25", "serverfirst.dev/kept-ports": "587"})
            ),
            ("smarthost", json!({"serverfirst.dev/kept-ports": "587"})),
            (
                "digest",
                json!({"traffic.sidecar.istio.io/excludeInboundPorts": "25",
                       "serverfirst.dev/excluded-ports": "25"})
            ),
        ]
    );

    // The LoadBalancer in front of mox offers ports kept under STRICT: said on its row.
    let service = rows
        .iter()
        .find(|r| r["kind"] == "Service" && r["name"] == "mox")
        .unwrap();
    let warnings = service["warnings"].to_string();
    assert!(
        warnings.contains("LoadBalancer port 25 (and 1 more) reaches port 25 of mox, kept in the mesh (STRICT by mail/default): clients outside the mesh are refused"),
        "{service:#}"
    );
    let mox = rows.iter().find(|r| r["name"] == "mox").unwrap();
    assert_eq!(
        mox["notes"],
        json!(["ports 25,587 kept (STRICT by mail/default)"])
    );

    // Companion rules only where a port is excluded: relay's 25, not mox's kept ports.
    let (_, with_companions, _) = serverfirst(&["render", "-f", DIR, "--companions"]);
    let rules: Vec<Value> = split_documents(&with_companions)
        .iter()
        .filter_map(|d| parse_document(d).unwrap())
        .filter(|o| o["kind"] == "DestinationRule")
        .collect();
    assert_eq!(rules.len(), 1, "{rules:#?}");
    assert_eq!(rules[0]["spec"]["host"], "relay");
    assert_eq!(
        rules[0]["spec"]["trafficPolicy"]["portLevelSettings"],
        json!([{"port": {"number": 25}, "tls": {"mode": "DISABLE"}}])
    );
}

/// A template that already excludes a port the mesh enforces identity on is exposed: `check`
/// exits 1 and says what the port bypasses.
#[test]
fn a_template_excluding_a_port_under_strict_is_exposed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(DIR).join("policies.yaml"),
        dir.path().join("policies.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("mox.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: mox\n  namespace: mail\n  annotations:\n    traffic.sidecar.istio.io/excludeInboundPorts: \"587\"\nspec:\n  containers:\n    - name: mox\n      ports:\n        - containerPort: 25\n        - containerPort: 587\n",
    )
    .unwrap();
    let (code, stdout, stderr) =
        serverfirst(&["check", "-f", dir.path().to_str().unwrap(), "-o", "json"]);
    assert_eq!(code, 1, "{stderr}");
    let rows: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    let mox = rows.iter().find(|r| r["name"] == "mox").unwrap();
    assert_eq!(mox["status"], "exposed", "{mox:#}");
    assert!(
        mox["warnings"].to_string().contains("port 587 already excluded from capture by the pod although the mesh enforces identity there (STRICT by mail/default)"),
        "{mox:#}"
    );
    assert!(stderr.contains("1 exposed"), "{stderr}");
}
