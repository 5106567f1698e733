//! Routes for a stub Kubernetes API that serves a fixed set of objects: version, discovery for the
//! kinds serverfirst installs, and GET of each object by its path (404 Status otherwise). Enough
//! for a client that maps kinds through discovery and reads objects, as `helm template
//! --dry-run=server` does for `lookup` and for its ownership check. Records every path asked for.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// (group, version, resource, kind, namespaced) of every kind the stub knows.
const KINDS: [(&str, &str, &str, &str, bool); 13] = [
    ("", "v1", "configmaps", "ConfigMap", true),
    ("", "v1", "namespaces", "Namespace", false),
    ("", "v1", "secrets", "Secret", true),
    ("", "v1", "serviceaccounts", "ServiceAccount", true),
    ("", "v1", "services", "Service", true),
    (
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        false,
    ),
    ("apps", "v1", "deployments", "Deployment", true),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
    ),
    ("cert-manager.io", "v1", "certificates", "Certificate", true),
    ("cert-manager.io", "v1", "issuers", "Issuer", true),
    (
        "monitoring.coreos.com",
        "v1",
        "servicemonitors",
        "ServiceMonitor",
        true,
    ),
    (
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
    ),
];

#[derive(Clone, Default)]
pub struct ObjectApi {
    objects: Arc<Mutex<BTreeMap<String, Value>>>,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl ObjectApi {
    /// Serves `objects` (replacing what was served before).
    pub fn serve(&self, objects: &[Value]) {
        let mut served = self.objects.lock().unwrap();
        served.clear();
        for object in objects {
            served.insert(object_path(object), object.clone());
        }
    }

    pub fn router(&self) -> Router {
        Router::new().fallback(answer).with_state(self.clone())
    }
}

/// The API path of `object`; panics on a kind the stub does not know (add it to KINDS).
pub fn object_path(object: &Value) -> String {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let &(_, _, resource, _, namespaced) = KINDS
        .iter()
        .find(|k| (k.0, k.1, k.3) == (group, version, kind))
        .unwrap_or_else(|| panic!("the stub API does not know {api_version} {kind}"));
    let prefix = group_version_path(group, version);
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    match object["metadata"]["namespace"].as_str() {
        Some(namespace) if namespaced => {
            format!("{prefix}/namespaces/{namespace}/{resource}/{name}")
        }
        _ => format!("{prefix}/{resource}/{name}"),
    }
}

fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    }
}

async fn answer(State(api): State<ObjectApi>, uri: Uri) -> Response {
    let path = uri.path().to_string();
    api.requests.lock().unwrap().push(path.clone());
    let body = match path.as_str() {
        "/version" => Some(
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"}),
        ),
        "/api" => Some(
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
        ),
        "/apis" => Some(api_groups()),
        _ => resource_list(&path).or_else(|| api.objects.lock().unwrap().get(&path).cloned()),
    };
    match body {
        Some(body) => json_response(StatusCode::OK, body),
        None => json_response(
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                   "message": format!("{path} not found"), "code": 404}),
        ),
    }
}

fn api_groups() -> Value {
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (group, version, ..) in KINDS.iter().filter(|k| !k.0.is_empty()) {
        let versions = groups.entry(group).or_default();
        if !versions.contains(version) {
            versions.push(version);
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
                .collect();
            json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// The APIResourceList of a group version path, if it is one.
fn resource_list(path: &str) -> Option<Value> {
    let kinds: Vec<_> = KINDS
        .iter()
        .filter(|(group, version, ..)| group_version_path(group, version) == path)
        .collect();
    let &&(group, version, ..) = kinds.first()?;
    let resources: Vec<Value> = kinds
        .iter()
        .map(|(_, _, resource, kind, namespaced)| {
            json!({"name": resource, "singularName": kind.to_lowercase(), "namespaced": namespaced,
                   "kind": kind, "verbs": ["get", "list", "create", "update", "patch", "delete"]})
        })
        .collect();
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
