//! Istio ambient mode in `check`: pods of an ambient namespace are left alone (ztunnel never
//! waits for a client's first bytes), and a server-first port is at risk only where its traffic
//! passes a waypoint that sniffs it — a `workload` or `all` waypoint the pod uses, or a
//! `service` (or `all`) waypoint the Service uses while the port has no declared protocol.

use serde_json::{Value, json};
use serverfirst::config::Config;
use serverfirst::manifests::{self, Source, Status};

const USE: &str = "istio.io/use-waypoint";

fn waypoint(name: &str, waypoint_for: Option<&str>) -> Value {
    let mut labels = json!({});
    if let Some(kind) = waypoint_for {
        labels["istio.io/waypoint-for"] = json!(kind);
    }
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
           "metadata": {"name": name, "namespace": "mail", "labels": labels},
           "spec": {"gatewayClassName": "istio-waypoint",
                    "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}})
}

/// The statuses `check` gives the Deployment and the Service of mox in an ambient `mail`.
fn statuses(
    namespace: Value,
    pod_labels: Value,
    service_labels: Value,
    app_protocol: Option<&str>,
) -> (Status, Status) {
    let mut submission = json!({"name": "submission", "port": 587, "targetPort": 587});
    if let Some(protocol) = app_protocol {
        submission["appProtocol"] = json!(protocol);
    }
    let mut labels = json!({"istio.io/dataplane-mode": "ambient"});
    labels
        .as_object_mut()
        .unwrap()
        .extend(namespace.as_object().unwrap().clone());
    let mut template_labels = json!({"app": "mox"});
    template_labels
        .as_object_mut()
        .unwrap()
        .extend(pod_labels.as_object().unwrap().clone());
    let documents = [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mail", "labels": labels}}),
        waypoint("service-waypoint", None),
        waypoint("workload-waypoint", Some("workload")),
        waypoint("all-waypoint", Some("all")),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mox", "namespace": "mail"},
               "spec": {"selector": {"matchLabels": {"app": "mox"}}, "template": {
                   "metadata": {"labels": template_labels},
                   "spec": {"containers": [{"name": "mox", "ports": [{"containerPort": 587}]}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "mox", "namespace": "mail", "labels": service_labels},
               "spec": {"selector": {"app": "mox"}, "ports": [submission]}}),
    ];
    let text: String = documents
        .iter()
        .map(|d| format!("---\n{}\n", serde_json::to_string(d).unwrap()))
        .collect();
    let source = Source {
        name: "mail.yaml".into(),
        text: Ok(text.clone()),
    };
    let config = Config::default();
    let mesh = manifests::mesh_state(std::slice::from_ref(&source), &config);
    let rows = manifests::check_text("mail.yaml", &text, &config, &mesh);
    let status = |kind: &str| rows.iter().find(|r| r.kind == kind).unwrap().status;
    (status("Deployment"), status("Service"))
}

#[test]
fn waypoint_rule_table() {
    use Status::*;
    let none = json!({});
    let uses = |name: &str| json!({USE: name});
    // (what, namespace labels, pod labels, Service labels, Service appProtocol, pods, Service)
    let cases: Vec<(&str, Value, Value, Value, Option<&str>, Status, Status)> = vec![
        (
            "no waypoint: ztunnel only",
            none.clone(),
            none.clone(),
            none.clone(),
            None,
            NotApplicable,
            WouldPatch,
        ),
        (
            "service waypoint for the namespace, port undeclared",
            uses("service-waypoint"),
            none.clone(),
            none.clone(),
            None,
            NotApplicable,
            AtRisk,
        ),
        (
            "service waypoint for the namespace, port declared TCP",
            uses("service-waypoint"),
            none.clone(),
            none.clone(),
            Some("tcp"),
            NotApplicable,
            Protected,
        ),
        (
            "service waypoint on the Service only",
            none.clone(),
            none.clone(),
            uses("service-waypoint"),
            None,
            NotApplicable,
            AtRisk,
        ),
        (
            "workload waypoint on the pod, port declared",
            none.clone(),
            uses("workload-waypoint"),
            none.clone(),
            Some("tcp"),
            AtRisk,
            Protected,
        ),
        (
            "workload waypoint for the namespace: Services do not use it",
            uses("workload-waypoint"),
            none.clone(),
            none.clone(),
            None,
            AtRisk,
            WouldPatch,
        ),
        (
            "all waypoint for the namespace",
            uses("all-waypoint"),
            none.clone(),
            none.clone(),
            None,
            AtRisk,
            AtRisk,
        ),
        (
            "pod opts out of the namespace's waypoint",
            uses("all-waypoint"),
            uses("none"),
            none.clone(),
            Some("tcp"),
            NotApplicable,
            Protected,
        ),
        (
            "Service opts out of the namespace's waypoint",
            uses("service-waypoint"),
            none.clone(),
            uses("none"),
            None,
            NotApplicable,
            WouldPatch,
        ),
        (
            "a waypoint that does not exist",
            uses("gone"),
            none.clone(),
            none.clone(),
            None,
            NotApplicable,
            WouldPatch,
        ),
    ];
    for (what, namespace, pod, service, app_protocol, pods, services) in cases {
        assert_eq!(
            statuses(namespace, pod, service, app_protocol),
            (pods, services),
            "{what}"
        );
    }
}

/// The rows say why, and what to do.
#[test]
fn at_risk_rows_name_the_waypoint_and_the_ways_out() {
    let text = [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mail",
               "labels": {"istio.io/dataplane-mode": "ambient", USE: "all-waypoint"}}}),
        waypoint("all-waypoint", Some("all")),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mox", "namespace": "mail", "labels": {"app": "mox"}},
               "spec": {"containers": [{"name": "mox", "ports": [{"containerPort": 25}, {"containerPort": 587}]}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mox", "namespace": "mail"},
               "spec": {"selector": {"app": "mox"}, "ports": [{"name": "submission", "port": 587}]}}),
    ]
    .iter()
    .map(|d| format!("---\n{}\n", serde_json::to_string(d).unwrap()))
    .collect::<String>();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mail.yaml");
    std::fs::write(&path, text).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_serverfirst"))
        .args(["check", "-o", "json", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let rows: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    let pod = rows.iter().find(|r| r["kind"] == "Pod").unwrap();
    assert_eq!(pod["status"], "at-risk");
    assert_eq!(pod["message"], "ambient: ztunnel does not inspect traffic");
    assert_eq!(
        pod["warnings"][0],
        "ports 25,587 pass waypoint mail/all-waypoint (istio.io/waypoint-for: all), which sniffs every port of the workloads it carries: send ports 25,587 through a service waypoint (istio.io/waypoint-for: service) with the Service port declared TCP, or set istio.io/use-waypoint: none on the workload"
    );
    assert!(
        pod["changes"].as_array().unwrap().is_empty(),
        "no sidecar annotations: {pod:#}"
    );
    let service = rows.iter().find(|r| r["kind"] == "Service").unwrap();
    assert_eq!(service["status"], "at-risk");
    assert!(
        service["warnings"].to_string().contains("traffic to Service port 587 passes waypoint mail/all-waypoint (istio.io/waypoint-for: all), which sniffs ports with no declared protocol"),
        "{service:#}"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("2 at-risk"));
}
