//! A stub Kubernetes API server on 127.0.0.1 over HTTPS for `serverfirst audit`: captured-looking
//! pods and Services (a fixed set, or any number generated), ReplicaSets, and policy reports it
//! stores.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::routing::get;
use serde_json::{Value, json};

#[path = "../support/stub_api.rs"]
mod https_stub;

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

/// The captured-looking pods: at risk, protected, CNI mode, no sidecar yet, nothing to do.
pub fn pods() -> Vec<Value> {
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
            json!({"sidecar.istio.io/status": STATUS, "traffic.sidecar.istio.io/excludeInboundPorts": "25",
                   "serverfirst.dev/excluded-ports": "25"}),
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

/// Pod `index` of a generated cluster: 100 pods a namespace, ten a ReplicaSet, one pod in ten
/// at risk, one would be patched, one protected, the rest web pods with a sidecar.
pub fn generated_pod(index: usize) -> Value {
    let namespace = format!("team-{:05}", index / 100);
    let replicaset = format!("app-{}-7c9d5b8f6", index / 10 % 10);
    let name = format!("{replicaset}-{index:07}");
    let owners = owner("ReplicaSet", &replicaset);
    let init = json!([{"name": "istio-init", "image": "docker.io/istio/proxyv2:1.24.0", "args": ISTIO_INIT_ARGS}]);
    let injected = json!({"sidecar.istio.io/status": STATUS});
    match index % 10 {
        0 => pod(
            &namespace,
            &name,
            injected,
            owners,
            json!([app(&[("smtp", 25), ("submission", 587)]), proxy()]),
            init,
        ),
        1 => pod(
            &namespace,
            &name,
            json!({}),
            owners,
            json!([app(&[("submission", 587)])]),
            json!([]),
        ),
        2 => pod(
            &namespace,
            &name,
            json!({"sidecar.istio.io/status": STATUS, "traffic.sidecar.istio.io/excludeInboundPorts": "25"}),
            owners,
            json!([app(&[("smtp", 25)]), proxy()]),
            json!([{"name": "istio-init", "args": ["istio-iptables", "-b", "*", "-d", "15090,15021,25,15020"]}]),
        ),
        _ => pod(
            &namespace,
            &name,
            injected,
            owners,
            json!([app(&[("http", 8080)]), proxy()]),
            init,
        ),
    }
}

/// Service `index` of a generated cluster: in namespaces without pods, ten a namespace, each
/// serving submission undeclared (would-patch).
pub fn generated_service(index: usize) -> Value {
    let namespace = format!("idle-{:05}", index / 10);
    service(
        &namespace,
        &format!("relay-{index:07}"),
        "relay",
        json!([{"name": "submission", "port": 587, "protocol": "TCP"}]),
    )
}

#[derive(Clone)]
pub enum PodSource {
    Fixed(Arc<Vec<Value>>),
    /// This many pods, and a tenth as many Services in namespaces without pods.
    Generated(usize),
}

impl PodSource {
    fn len(&self) -> usize {
        match self {
            PodSource::Fixed(pods) => pods.len(),
            PodSource::Generated(count) => *count,
        }
    }

    fn page(&self, start: usize, end: usize) -> Vec<Value> {
        match self {
            PodSource::Fixed(pods) => pods[start..end].to_vec(),
            PodSource::Generated(_) => (start..end).map(generated_pod).collect(),
        }
    }

    fn pods_of(&self, namespace: &str) -> Vec<Value> {
        match self {
            PodSource::Fixed(pods) => pods
                .iter()
                .filter(|pod| pod["metadata"]["namespace"] == namespace)
                .cloned()
                .collect(),
            PodSource::Generated(count) => {
                let Some(index) = namespace
                    .strip_prefix("team-")
                    .and_then(|n| n.parse::<usize>().ok())
                else {
                    return Vec::new();
                };
                let end = (index * 100 + 100).min(*count);
                self.page((index * 100).min(end), end)
            }
        }
    }

    fn service_count(&self) -> usize {
        match self {
            PodSource::Fixed(_) => FIXED_NAMESPACES.iter().map(|ns| services(ns).len()).sum(),
            PodSource::Generated(count) => count / 10,
        }
    }

    /// Services `start..end` of the cluster, in the order the API server lists them: by
    /// namespace, then name.
    fn service_page(&self, start: usize, end: usize) -> Vec<Value> {
        match self {
            PodSource::Fixed(_) => FIXED_NAMESPACES
                .iter()
                .flat_map(|ns| services(ns))
                .skip(start)
                .take(end - start)
                .collect(),
            PodSource::Generated(_) => (start..end).map(generated_service).collect(),
        }
    }

    fn services_of(&self, namespace: &str) -> Vec<Value> {
        match self {
            PodSource::Fixed(_) => services(namespace),
            PodSource::Generated(_) => {
                let Some(index) = namespace
                    .strip_prefix("idle-")
                    .and_then(|n| n.parse::<usize>().ok())
                else {
                    return Vec::new();
                };
                let end = (index * 10 + 10).min(self.service_count());
                self.service_page((index * 10).min(end), end)
            }
        }
    }
}

/// A request the stub answered, for the tests to check.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub query: HashMap<String, String>,
    pub content_type: String,
}

/// Stored reports by (plural, namespace, name).
pub type Reports = BTreeMap<(String, String, String), Value>;

#[derive(Clone)]
pub struct Calls {
    pods: PodSource,
    pub list_queries: Arc<Mutex<Vec<HashMap<String, String>>>>,
    pub replicaset_gets: Arc<Mutex<Vec<String>>>,
    /// Namespaces whose Services were listed, in order.
    pub service_lists: Arc<Mutex<Vec<String>>>,
    /// The queries of the lists of Services of all namespaces, in order.
    pub all_service_lists: Arc<Mutex<Vec<HashMap<String, String>>>>,
    /// Listing the Services of all namespaces is forbidden (a role bound per namespace).
    pub forbid_all_services: Arc<AtomicBool>,
    pub report_requests: Arc<Mutex<Vec<Request>>>,
    pub reports: Arc<Mutex<Reports>>,
    /// PeerAuthentications and AuthorizationPolicies (`security.istio.io/v1`); the group is
    /// served only when some are set.
    pub policies: Arc<Mutex<Vec<Value>>>,
}

type JsonResponse = (StatusCode, [(header::HeaderName, &'static str); 1], String);

fn json_response(value: Value) -> JsonResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
}

fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%3D", "=").replace("%2F", "/")))
        .collect()
}

/// The page of a list of `len` items that `query` asks for (`limit`, and `continue` as this stub
/// makes it): the item range and the list's metadata.
fn page_of(query: &HashMap<String, String>, len: usize) -> (std::ops::Range<usize>, Value) {
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(usize::MAX);
    let start: usize = query
        .get("continue")
        .and_then(|c| c.strip_prefix("page-from-"))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let end = start.saturating_add(limit).min(len);
    let mut metadata = json!({"resourceVersion": "4712"});
    if end < len {
        metadata["continue"] = json!(format!("page-from-{end}"));
        metadata["remainingItemCount"] = json!(len - end);
    }
    (start..end, metadata)
}

async fn list_pods(State(calls): State<Calls>, uri: Uri) -> JsonResponse {
    let query = query(&uri);
    calls.list_queries.lock().unwrap().push(query.clone());
    let (range, metadata) = page_of(&query, calls.pods.len());
    pod_list(metadata, calls.pods.page(range.start, range.end))
}

/// The pods of one namespace, paged as the API server pages them.
async fn list_namespace_pods(
    State(calls): State<Calls>,
    Path(namespace): Path<String>,
    uri: Uri,
) -> JsonResponse {
    let query = query(&uri);
    calls.list_queries.lock().unwrap().push(query.clone());
    let pods = calls.pods.pods_of(&namespace);
    let (range, metadata) = page_of(&query, pods.len());
    pod_list(metadata, pods[range].to_vec())
}

fn pod_list(metadata: Value, items: Vec<Value>) -> JsonResponse {
    json_response(
        json!({"kind": "PodList", "apiVersion": "v1", "metadata": metadata, "items": items}),
    )
}

fn service(namespace: &str, name: &str, app: &str, ports: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-svc-{name}"), "resourceVersion": "4714"},
           "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.25", "selector": {"app": app}, "ports": ports}})
}

/// The namespaces of the fixed set that have Services, in name order.
const FIXED_NAMESPACES: [&str; 4] = ["jobs", "mail", "outbox", "web"];

/// The Services of the fixed set, in front of some of its pods (whose `app` label is their
/// name): an undeclared submission port in front of an injected pod (at risk), SMTP on 25
/// (TCP to Istio already: protected), submission in front of a pod without a sidecar yet. In
/// `outbox`, which has no pods yet: submission undeclared, and declared with appProtocol.
pub fn services(namespace: &str) -> Vec<Value> {
    let service = |name: &str, app: &str, ports: Value| service(namespace, name, app, ports);
    match namespace {
        "mail" => vec![
            service(
                "mox",
                "mox-7c9d5b8f6-x2k4q",
                json!([{"name": "smtp", "port": 25, "targetPort": 25, "protocol": "TCP"},
                       {"name": "submission", "port": 587, "targetPort": "submission", "protocol": "TCP"}]),
            ),
            service(
                "relay",
                "relay-0",
                json!([{"name": "smtp", "port": 25, "targetPort": 25, "protocol": "TCP"}]),
            ),
        ],
        "jobs" => vec![service(
            "digest",
            "digest-29123456-q7k2m",
            json!([{"name": "submission", "port": 587, "protocol": "TCP"}]),
        )],
        "web" => vec![service(
            "nginx",
            "nginx",
            json!([{"name": "http", "port": 80, "protocol": "TCP"}]),
        )],
        "outbox" => vec![
            service(
                "postfix",
                "postfix",
                json!([{"name": "submission", "port": 587, "protocol": "TCP"}]),
            ),
            service(
                "postfix-tcp",
                "postfix",
                json!([{"name": "submission", "port": 587, "protocol": "TCP", "appProtocol": "tcp"}]),
            ),
        ],
        _ => Vec::new(),
    }
}

/// The Services of one namespace, paged as the API server pages them.
async fn list_services(
    State(calls): State<Calls>,
    Path(namespace): Path<String>,
    uri: Uri,
) -> JsonResponse {
    calls.service_lists.lock().unwrap().push(namespace.clone());
    let items = calls.pods.services_of(&namespace);
    let (range, metadata) = page_of(&query(&uri), items.len());
    service_list(metadata, items[range].to_vec())
}

/// The Services of all namespaces, paged as the API server pages them.
async fn list_all_services(State(calls): State<Calls>, uri: Uri) -> JsonResponse {
    let query = query(&uri);
    calls.all_service_lists.lock().unwrap().push(query.clone());
    if calls.forbid_all_services.load(Ordering::SeqCst) {
        return (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "services is forbidden: User \"system:serviceaccount:serverfirst-system:serverfirst-audit\" cannot list resource \"services\" in API group \"\" at the cluster scope",
                   "reason": "Forbidden", "details": {"kind": "services"}, "code": 403})
            .to_string(),
        );
    }
    let (range, metadata) = page_of(&query, calls.pods.service_count());
    service_list(metadata, calls.pods.service_page(range.start, range.end))
}

fn service_list(metadata: Value, items: Vec<Value>) -> JsonResponse {
    json_response(
        json!({"kind": "ServiceList", "apiVersion": "v1", "metadata": metadata, "items": items}),
    )
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

fn record(calls: &Calls, method: &'static str, uri: &Uri, headers: &HeaderMap) {
    calls.report_requests.lock().unwrap().push(Request {
        method,
        path: uri.path().to_string(),
        query: query(uri),
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    });
}

async fn apply_report(
    State(calls): State<Calls>,
    Path((_group, _version, namespace, plural, name)): Path<(
        String,
        String,
        String,
        String,
        String,
    )>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> JsonResponse {
    record(&calls, "PATCH", &uri, &headers);
    let Ok(report) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            "{}".into(),
        );
    };
    calls
        .reports
        .lock()
        .unwrap()
        .insert((plural, namespace, name), report.clone());
    json_response(report)
}

async fn delete_report(
    State(calls): State<Calls>,
    Path((_group, _version, namespace, plural, name)): Path<(
        String,
        String,
        String,
        String,
        String,
    )>,
    uri: Uri,
    headers: HeaderMap,
) -> JsonResponse {
    record(&calls, "DELETE", &uri, &headers);
    let removed = calls
        .reports
        .lock()
        .unwrap()
        .remove(&(plural, namespace, name));
    match removed {
        Some(report) => json_response(report),
        None => (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "application/json")],
                 json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}).to_string()),
    }
}

async fn list_reports(
    State(calls): State<Calls>,
    Path((group, version, plural)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> JsonResponse {
    record(&calls, "GET", &uri, &headers);
    let selector = query(&uri)
        .get("labelSelector")
        .cloned()
        .unwrap_or_default();
    let (key, value) = selector.split_once('=').unwrap_or_default();
    let items: Vec<Value> = calls
        .reports
        .lock()
        .unwrap()
        .iter()
        .filter(|((p, _, _), report)| *p == plural && report["metadata"]["labels"][key] == value)
        .map(|(_, report)| report.clone())
        .collect();
    json_response(
        json!({"apiVersion": format!("{group}/{version}"), "kind": "List",
                         "metadata": {"resourceVersion": "4713"}, "items": items}),
    )
}

/// The namespaces the pods and Services live in, metadata only (as `list_metadata` asks).
async fn list_namespaces() -> JsonResponse {
    let items: Vec<Value> = ["jobs", "mail", "outbox", "web"]
        .iter()
        .map(|name| json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                           "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}}))
        .collect();
    json_response(
        json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                         "metadata": {"resourceVersion": "4712"}, "items": items}),
    )
}

fn not_found() -> JsonResponse {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
               "message": "the server could not find the requested resource", "code": 404})
        .to_string(),
    )
}

/// Discovery of `security.istio.io/v1`: served once policies are set (Istio's CRDs installed).
async fn security_resources(State(calls): State<Calls>) -> JsonResponse {
    if calls.policies.lock().unwrap().is_empty() {
        return not_found();
    }
    let resources: Vec<Value> = [
        ("peerauthentications", "PeerAuthentication"),
        ("authorizationpolicies", "AuthorizationPolicy"),
    ]
    .iter()
    .map(|(name, kind)| {
        json!({"name": name, "singularName": kind.to_lowercase(), "namespaced": true,
                               "kind": kind, "verbs": ["get", "list", "watch"]})
    })
    .collect();
    json_response(json!({"kind": "APIResourceList", "apiVersion": "v1",
                         "groupVersion": "security.istio.io/v1", "resources": resources}))
}

async fn list_security_policies(
    State(calls): State<Calls>,
    Path(plural): Path<String>,
) -> JsonResponse {
    let kind = match plural.as_str() {
        "peerauthentications" => "PeerAuthentication",
        "authorizationpolicies" => "AuthorizationPolicy",
        _ => return not_found(),
    };
    let items: Vec<Value> = calls
        .policies
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == kind)
        .cloned()
        .collect();
    json_response(
        json!({"kind": format!("{kind}List"), "apiVersion": "security.istio.io/v1",
                         "metadata": {"resourceVersion": "4714"}, "items": items}),
    )
}

pub struct StubApi {
    pub addr: SocketAddr,
    pub ca_pem: String,
    pub calls: Calls,
    /// Serves until dropped.
    _server: https_stub::StubApi,
}

pub async fn stub_api() -> StubApi {
    stub_api_with(PodSource::Fixed(Arc::new(pods()))).await
}

pub async fn stub_api_with(pods: PodSource) -> StubApi {
    let calls = Calls {
        pods,
        list_queries: Arc::default(),
        replicaset_gets: Arc::default(),
        service_lists: Arc::default(),
        all_service_lists: Arc::default(),
        forbid_all_services: Arc::default(),
        report_requests: Arc::default(),
        reports: Arc::default(),
        policies: Arc::default(),
    };
    let router = Router::new()
        .route("/api/v1/pods", get(list_pods))
        .route("/api/v1/services", get(list_all_services))
        .route(
            "/api/v1/namespaces/{namespace}/pods",
            get(list_namespace_pods),
        )
        .route(
            "/api/v1/namespaces/{namespace}/services",
            get(list_services),
        )
        .route(
            "/apis/apps/v1/namespaces/{namespace}/replicasets/{name}",
            get(get_replicaset),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}",
            axum::routing::patch(apply_report).delete(delete_report),
        )
        .route("/apis/{group}/{version}/{plural}", get(list_reports))
        .route("/api/v1/namespaces", get(list_namespaces))
        .route("/apis/security.istio.io/v1", get(security_resources))
        .route(
            "/apis/security.istio.io/v1/{plural}",
            get(list_security_policies),
        )
        .with_state(calls.clone());
    let server = https_stub::StubApi::start(router).await;
    StubApi {
        addr: server.server.addr,
        ca_pem: server.ca_pem.clone(),
        calls,
        _server: server,
    }
}

impl StubApi {
    /// A kubeconfig for this stub in `dir`: context `stub` (namespace `mail`) and the current
    /// context `other` (namespace `nowhere`).
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        kubeconfig(dir, &format!("https://{}", self.addr), &self.ca_pem)
    }
}

pub fn kubeconfig(dir: &std::path::Path, server: &str, ca_pem: &str) -> std::path::PathBuf {
    https_stub::kubeconfig(
        dir,
        server,
        ca_pem,
        "other",
        &[("stub", "mail"), ("other", "nowhere")],
    )
}
