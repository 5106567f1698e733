//! The companions controller against kube's mocked API service (tower-test): for each situation,
//! the exact requests it sends (method, path and query, content type, body), and that nothing
//! is written where serverfirst owns nothing.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper::{Request, Response};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ObjectMeta, PartialObjectMeta};
use kube::client::Body;
use kube::core::PartialObjectMetaExt as _;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::Event;
use kube::{Client, Resource};
use serde_json::{Value, json};
use serverfirst::companions::controller::{self, Context, Stores};
use serverfirst::metrics::{CompanionMetrics, Exposition as _};
use tokio_util::sync::CancellationToken;
use tower_test::mock::{self, Handle};

#[path = "support/mock_cluster.rs"]
mod mock_cluster;

use mock_cluster::{MockCluster, NAMESPACES, PODS, RULES, SERVICES, SLICES};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

const RULES_PATH: &str = "/apis/networking.istio.io/v1/namespaces/mail/destinationrules";

fn rules_api() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "DestinationRule"),
        "destinationrules",
    )
}

fn service() -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "mox", "namespace": "mail", "uid": "3f0c-mox", "resourceVersion": "100"},
        "spec": {"selector": {"app": "mox"}, "ports": [
            {"name": "smtp", "port": 25}, {"name": "http", "port": 80, "targetPort": 8080}]}
    }))
    .unwrap()
}

fn slice(pods: &[&str]) -> EndpointSlice {
    let endpoints: Vec<Value> = pods
        .iter()
        .map(|pod| json!({"addresses": ["10.0.0.7"], "targetRef": {"kind": "Pod", "namespace": "mail", "name": pod}}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "mox-x7k2p", "namespace": "mail", "resourceVersion": "101",
            "labels": {"kubernetes.io/service-name": "mox"}},
        "addressType": "IPv4",
        "ports": [{"name": "smtp", "port": 25, "protocol": "TCP"}, {"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints
    }))
    .unwrap()
}

/// A pod as the metadata-only watch delivers it.
fn pod(name: &str, excluded: Option<&str>) -> PartialObjectMeta<Pod> {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("mail".into()),
        annotations: excluded.map(|ports| {
            [(
                "serverfirst.dev/excluded-ports".to_string(),
                ports.to_string(),
            )]
            .into()
        }),
        ..ObjectMeta::default()
    }
    .into_response_partial()
}

fn rule(value: Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

/// serverfirst's own rule, as the API server returns it.
fn own_rule(ports: &[u16]) -> Value {
    let settings: Vec<Value> = ports
        .iter()
        .map(|p| json!({"port": {"number": p}, "tls": {"mode": "DISABLE"}}))
        .collect();
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "mox-serverfirst", "namespace": "mail", "uid": "77aa-rule", "resourceVersion": "205",
            "labels": {"app.kubernetes.io/managed-by": "serverfirst"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "mox", "uid": "3f0c-mox", "controller": true}]},
        "spec": {"host": "mox", "trafficPolicy": {"portLevelSettings": settings}}
    })
}

/// The apply body serverfirst sends for `ports`.
fn applied(ports: &[u16]) -> Value {
    let mut rule = own_rule(ports);
    let metadata = rule["metadata"].as_object_mut().unwrap();
    metadata.remove("uid");
    metadata.remove("resourceVersion");
    rule
}

struct Cluster {
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
    pods: Vec<PartialObjectMeta<Pod>>,
    rules: Vec<DynamicObject>,
    /// The namespaces a selector selects; `None` without a selector (all in scope).
    namespaces: Option<Vec<&'static str>>,
    /// Labels of the Services' namespace, `mail` (in scope either way).
    mail_labels: Value,
}

impl Cluster {
    fn new(pods: Vec<PartialObjectMeta<Pod>>, rules: Vec<DynamicObject>) -> Cluster {
        let names: Vec<String> = pods
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Cluster {
            services: vec![service()],
            slices: vec![slice(&names)],
            pods,
            rules,
            namespaces: None,
            mail_labels: json!({}),
        }
    }

    /// The controller's context over stores holding this cluster, and the mock API server.
    fn context(self) -> (Arc<Context>, ApiHandle, Arc<CompanionMetrics>) {
        fn fill<K>(mut writer: Writer<K>, objects: Vec<K>) -> kube::runtime::reflector::Store<K>
        where
            K: Resource + Clone + 'static,
            K::DynamicType: Clone + Eq + std::hash::Hash,
        {
            writer.apply_watcher_event(&Event::Init);
            for object in objects {
                writer.apply_watcher_event(&Event::InitApply(object));
            }
            writer.apply_watcher_event(&Event::InitDone);
            writer.as_reader()
        }
        let stores = Stores {
            services: fill(Writer::default(), self.services),
            slices: fill(Writer::default(), self.slices),
            pods: fill(Writer::default(), self.pods),
            rules: fill(Writer::new(rules_api()), self.rules),
            scoped: self.namespaces.is_some(),
            namespaces: {
                let names = self.namespaces.unwrap_or_else(|| vec!["mail", "web"]);
                let labels: std::collections::BTreeMap<String, String> =
                    serde_json::from_value(self.mail_labels).unwrap();
                let namespaces: Vec<PartialObjectMeta<Namespace>> = names
                    .into_iter()
                    .map(|name| {
                        ObjectMeta {
                            name: Some(name.into()),
                            labels: (name == "mail").then(|| labels.clone()),
                            ..ObjectMeta::default()
                        }
                        .into_response_partial()
                    })
                    .collect();
                fill(Writer::default(), namespaces)
            },
        };
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let metrics = Arc::new(CompanionMetrics::new());
        let context = Context::new(
            client,
            rules_api(),
            stores,
            Some("companions-0".into()),
            metrics.clone(),
            CancellationToken::new(),
        );
        (Arc::new(context), handle, metrics)
    }
}

/// One request as the API server sees it.
#[derive(Debug)]
struct Seen {
    method: String,
    uri: String,
    content_type: String,
    body: Value,
}

fn header(request: &Request<Body>, name: &str) -> String {
    request
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn next(handle: &mut ApiHandle, response: impl FnOnce(&Value) -> Value) -> Seen {
    let (request, send) = handle.next_request().await.expect("a request");
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let content_type = header(&request, "content-type");
    let bytes = request.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    let answer = response(&body);
    send.send_response(
        Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap(),
    );
    Seen {
        method,
        uri,
        content_type,
        body,
    }
}

/// Runs one reconcile of the Service while the API server answers `answers` requests, then
/// checks that no further request comes.
async fn reconcile(context: Arc<Context>, handle: ApiHandle, answers: usize) -> Vec<Seen> {
    reconcile_service(service(), context, handle, answers).await
}

/// [`reconcile`] of `svc`.
async fn reconcile_service(
    svc: Service,
    context: Arc<Context>,
    mut handle: ApiHandle,
    answers: usize,
) -> Vec<Seen> {
    let server = async move {
        let mut seen = Vec::new();
        for _ in 0..answers {
            // The API server echoes what it is sent, as a create or an apply would.
            seen.push(next(&mut handle, |body| body.clone()).await);
        }
        (seen, handle)
    };
    let svc = Arc::new(svc);
    let both = async { tokio::join!(controller::reconcile(svc, context.clone()), server) };
    let (result, (seen, mut handle)) = tokio::time::timeout(Duration::from_secs(10), both)
        .await
        .unwrap_or_else(|_| panic!("reconcile with {answers} requests did not finish"));
    result.expect("reconcile succeeds");
    drop(context);
    assert!(
        handle.next_request().await.is_none(),
        "no request beyond the expected {answers}"
    );
    seen
}

fn events_path() -> &'static str {
    "/apis/events.k8s.io/v1/namespaces/mail/events?"
}

#[tokio::test]
async fn creates_the_rule_with_a_server_side_apply_without_force() {
    let (context, handle, metrics) =
        Cluster::new(vec![pod("mox-0", Some("25,587"))], vec![]).context();
    let seen = reconcile(context, handle, 1).await;
    assert_eq!(seen[0].method, "PATCH");
    assert_eq!(
        seen[0].uri,
        format!("{RULES_PATH}/mox-serverfirst?&fieldManager=serverfirst")
    );
    assert_eq!(seen[0].content_type, "application/apply-patch+yaml");
    assert_eq!(seen[0].body, applied(&[25]));
    let text = metrics.exposition();
    assert!(
        text.contains(r#"serverfirst_companions_destinationrules_total{action="applied"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"serverfirst_companions_reconciles_total{result="success"} 1"#));
}

#[tokio::test]
async fn updates_its_own_rule_with_force() {
    let (context, handle, _) = Cluster::new(
        vec![pod("mox-0", Some("25,8080"))],
        vec![rule(own_rule(&[25]))],
    )
    .context();
    let seen = reconcile(context, handle, 1).await;
    assert_eq!(seen[0].method, "PATCH");
    assert_eq!(
        seen[0].uri,
        format!("{RULES_PATH}/mox-serverfirst?&force=true&fieldManager=serverfirst")
    );
    assert_eq!(seen[0].content_type, "application/apply-patch+yaml");
    assert_eq!(seen[0].body, applied(&[25, 80]));
}

#[tokio::test]
async fn an_up_to_date_rule_is_left_alone() {
    let (context, handle, _) =
        Cluster::new(vec![pod("mox-0", Some("25"))], vec![rule(own_rule(&[25]))]).context();
    assert!(reconcile(context, handle, 0).await.is_empty());
}

#[tokio::test]
async fn deletes_its_own_rule_when_no_port_is_left_with_preconditions() {
    let (context, handle, metrics) =
        Cluster::new(vec![pod("mox-0", None)], vec![rule(own_rule(&[25]))]).context();
    let seen = reconcile(context, handle, 1).await;
    assert_eq!(seen[0].method, "DELETE");
    assert_eq!(seen[0].uri, format!("{RULES_PATH}/mox-serverfirst?"));
    assert_eq!(
        seen[0].body,
        json!({"preconditions": {"uid": "77aa-rule", "resourceVersion": "205"}})
    );
    assert!(
        metrics
            .exposition()
            .contains(r#"serverfirst_companions_destinationrules_total{action="deleted"} 1"#)
    );
}

/// A pod recreated under STRICT keeps 25 in the mesh: it records `kept-ports`, no exclusion,
/// and meshed clients reach it with mTLS again, so the rule that sent them plaintext goes.
#[tokio::test]
async fn a_pod_recreated_with_its_port_kept_takes_the_rule_away() {
    let mut kept = pod("mox-1", None);
    kept.metadata
        .annotations
        .get_or_insert_default()
        .insert("serverfirst.dev/kept-ports".into(), "25".into());
    let (context, handle, _) = Cluster::new(vec![kept], vec![rule(own_rule(&[25]))]).context();
    let seen = reconcile(context, handle, 1).await;
    assert_eq!(
        (seen[0].method.as_str(), seen[0].uri.as_str()),
        ("DELETE", format!("{RULES_PATH}/mox-serverfirst?").as_str())
    );
}

#[tokio::test]
async fn keeps_its_own_rule_unchanged_when_the_namespace_leaves_the_scope() {
    // The pods still exclude 25 (and now 8080): their meshed clients still need the rule, so it
    // stays as it was, neither updated nor deleted; the owner reference removes it with the
    // Service.
    let mut cluster = Cluster::new(
        vec![pod("mox-0", Some("25,8080"))],
        vec![rule(own_rule(&[25]))],
    );
    cluster.namespaces = Some(vec!["web"]);
    let (context, handle, _) = cluster.context();
    assert!(reconcile(context, handle, 0).await.is_empty());
}

#[tokio::test]
async fn a_skipped_service_loses_its_own_rule() {
    let mut skipped = service();
    skipped.metadata.annotations = Some([("serverfirst.dev/skip".into(), "true".into())].into());
    let mut cluster = Cluster::new(vec![pod("mox-0", Some("25"))], vec![rule(own_rule(&[25]))]);
    cluster.services = vec![skipped.clone()];
    let (context, handle, _) = cluster.context();
    let seen = reconcile_service(skipped, context, handle, 1).await;
    assert_eq!(
        (seen[0].method.as_str(), seen[0].uri.as_str()),
        ("DELETE", format!("{RULES_PATH}/mox-serverfirst?").as_str())
    );
}

#[tokio::test]
async fn a_namespace_in_scope_gets_its_rule() {
    let mut cluster = Cluster::new(vec![pod("mox-0", Some("25"))], vec![]);
    cluster.namespaces = Some(vec!["mail"]);
    let (context, handle, _) = cluster.context();
    let seen = reconcile(context, handle, 1).await;
    assert_eq!(seen[0].body, applied(&[25]));
}

fn foreign_rule() -> DynamicObject {
    rule(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "mox-lb", "namespace": "mail", "uid": "99bb", "resourceVersion": "300"},
        "spec": {"host": "mox.mail.svc.cluster.local", "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}}
    }))
}

fn assert_conflict_event(seen: &Seen) {
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("POST", events_path())
    );
    let event = &seen.body;
    assert_eq!(event["apiVersion"], "events.k8s.io/v1");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "ForeignDestinationRule");
    assert_eq!(event["reportingController"], "serverfirst-companions");
    assert_eq!(event["reportingInstance"], "companions-0");
    assert_eq!(
        event["regarding"],
        json!({"apiVersion": "v1", "kind": "Service", "name": "mox", "namespace": "mail",
            "uid": "3f0c-mox"})
    );
    let note = event["note"].as_str().unwrap();
    assert!(
        note.contains("DestinationRule mox-lb exists")
            && note.contains("tls.mode DISABLE on port 25"),
        "{note}"
    );
}

#[tokio::test]
async fn a_foreign_rule_for_the_host_is_reported_not_competed_with() {
    let (context, handle, metrics) =
        Cluster::new(vec![pod("mox-0", Some("25"))], vec![foreign_rule()]).context();
    let seen = reconcile(context, handle, 1).await;
    assert_conflict_event(&seen[0]);
    assert!(
        metrics
            .exposition()
            .contains("serverfirst_companions_conflicts 1")
    );
}

#[tokio::test]
async fn a_foreign_rule_appearing_after_ours_deletes_ours_and_is_reported() {
    let (context, handle, metrics) = Cluster::new(
        vec![pod("mox-0", Some("25"))],
        vec![rule(own_rule(&[25])), foreign_rule()],
    )
    .context();
    let seen = reconcile(context, handle, 2).await;
    assert_eq!(
        (seen[0].method.as_str(), seen[0].uri.as_str()),
        ("DELETE", format!("{RULES_PATH}/mox-serverfirst?").as_str())
    );
    assert_conflict_event(&seen[1]);
    assert!(
        metrics
            .exposition()
            .contains("serverfirst_companions_conflicts 1")
    );
}

#[tokio::test]
async fn nothing_is_written_for_a_rule_it_does_not_own() {
    // An unlabelled rule with the companion's name is someone else's: never deleted or
    // patched, whether or not a port needs a rule.
    let unowned = || {
        let mut value = own_rule(&[25]);
        value["metadata"].as_object_mut().unwrap().remove("labels");
        rule(value)
    };
    let (context, handle, _) = Cluster::new(vec![pod("mox-0", None)], vec![unowned()]).context();
    assert!(reconcile(context, handle, 0).await.is_empty());

    // It disables 25 but not 80 (→ 8080), which the pod excludes too: reported, not written.
    let (context, handle, _) =
        Cluster::new(vec![pod("mox-0", Some("25,8080"))], vec![unowned()]).context();
    let seen = reconcile(context, handle, 1).await;
    assert_eq!(
        seen[0].method, "POST",
        "only the Event, no write to the rule"
    );
    assert_eq!(seen[0].uri, events_path());
    assert_eq!(seen[0].body["reason"], "ForeignDestinationRule");
}

#[tokio::test]
async fn mixed_endpoints_get_the_rule_and_an_event_naming_the_capturing_pods() {
    let (context, handle, _) = Cluster::new(
        vec![pod("mox-new", Some("25")), pod("mox-old", None)],
        vec![],
    )
    .context();
    let seen = reconcile(context, handle, 2).await;
    assert_eq!(seen[0].body, applied(&[25]));
    assert_eq!(
        (seen[1].method.as_str(), seen[1].uri.as_str()),
        ("POST", events_path())
    );
    assert_eq!(seen[1].body["reason"], "MixedEndpoints");
    assert_eq!(
        seen[1].body["note"],
        "port 25 is excluded from capture on some pods but not on mox-old; tls.mode DISABLE applies to all of them"
    );
}

/// A pod with Istio's sidecar (the injector's status annotation) and an exclusion record.
fn sidecar_pod(name: &str, excluded: &str) -> PartialObjectMeta<Pod> {
    let mut pod = pod(name, Some(excluded));
    pod.metadata
        .annotations
        .get_or_insert_default()
        .insert("sidecar.istio.io/status".into(), "{}".into());
    pod
}

/// In a namespace labelled `istio.io/dataplane-mode=ambient`, pods without a sidecar are
/// ztunnel's: a record left from before (serverfirst used to patch them) gets them no rule,
/// which would send meshed clients plaintext that ztunnel refuses under STRICT.
#[tokio::test]
async fn a_service_whose_endpoints_are_ambient_pods_gets_no_rule() {
    let mut cluster = Cluster::new(vec![pod("mox-0", Some("25"))], vec![]);
    cluster.mail_labels = json!({"istio.io/dataplane-mode": "ambient"});
    let (context, handle, _) = cluster.context();
    assert!(reconcile(context, handle, 0).await.is_empty());

    // The same pod outside ambient mode gets its rule.
    let (context, handle, _) = Cluster::new(vec![pod("mox-0", Some("25"))], vec![]).context();
    assert_eq!(reconcile(context, handle, 1).await[0].body, applied(&[25]));
}

/// Sidecar and ambient pods behind one Service: the rule the sidecar pod needs, and an Event
/// naming the ambient pods it sends plaintext to.
#[tokio::test]
async fn mixed_sidecar_and_ambient_endpoints_get_the_rule_and_an_event() {
    let mut cluster = Cluster::new(
        vec![sidecar_pod("mox-sidecar", "25"), pod("mox-ambient", None)],
        vec![],
    );
    cluster.mail_labels = json!({"istio.io/dataplane-mode": "ambient"});
    let (context, handle, _) = cluster.context();
    let seen = reconcile(context, handle, 2).await;
    assert_eq!(seen[0].body, applied(&[25]));
    assert_eq!(seen[1].body["reason"], "MixedEndpoints");
    assert_eq!(
        seen[1].body["note"],
        "port 25 is excluded from capture on some pods, but mox-ambient are ambient pods, which ztunnel serves with mTLS: tls.mode DISABLE sends them plaintext, which they refuse under STRICT"
    );
}

#[tokio::test]
async fn a_malformed_record_is_ignored() {
    let (context, handle, _) = Cluster::new(vec![pod("mox-0", Some("25,smtp"))], vec![]).context();
    assert!(reconcile(context, handle, 0).await.is_empty());
}

/// Discovery: `v1` where served, else `v1beta1`, else none.
#[tokio::test]
async fn discovery_prefers_v1_and_falls_back_to_v1beta1() {
    fn resource_list(version: &str) -> Value {
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("networking.istio.io/{version}"),
            "resources": [{"name": "destinationrules", "singularName": "destinationrule", "namespaced": true,
                "kind": "DestinationRule", "verbs": ["get", "list", "watch", "create", "patch", "delete"]}]})
    }
    fn not_found() -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "the server could not find the requested resource"})
    }
    async fn discover(answers: Vec<(u16, Value)>) -> (Option<ApiResource>, Vec<String>) {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let server = async move {
            let mut uris = Vec::new();
            for (status, body) in answers {
                let (request, send) = handle.next_request().await.expect("a request");
                uris.push(request.uri().to_string());
                send.send_response(
                    Response::builder()
                        .status(status)
                        .body(Body::from(serde_json::to_vec(&body).unwrap()))
                        .unwrap(),
                );
            }
            uris
        };
        let (found, uris) = tokio::join!(controller::discover_rules(&client), server);
        (found.expect("discovery answers"), uris)
    }

    let (found, uris) = discover(vec![(200, resource_list("v1"))]).await;
    assert_eq!(found.unwrap().api_version, "networking.istio.io/v1");
    assert_eq!(uris, ["/apis/networking.istio.io/v1"]);

    let (found, uris) = discover(vec![(404, not_found()), (200, resource_list("v1beta1"))]).await;
    assert_eq!(found.unwrap().api_version, "networking.istio.io/v1beta1");
    assert_eq!(
        uris,
        [
            "/apis/networking.istio.io/v1",
            "/apis/networking.istio.io/v1beta1"
        ]
    );

    let (found, _) = discover(vec![(404, not_found()), (404, not_found())]).await;
    assert!(found.is_none());
}

/// The whole controller on the mocked API: it lists each kind, watches from the list's
/// resourceVersion (pods as metadata only), and applies the rule once the caches are filled.
#[tokio::test]
async fn the_running_controller_lists_watches_and_applies_the_rule() {
    let started = tokio::time::Instant::now();
    let (cluster, run, shutdown, metrics) =
        start_controller(mail_cluster(Some("25")), None, |_| {});
    let write = cluster.write_after(started, Duration::from_secs(10)).await;
    assert_eq!(
        write.uri,
        format!("{RULES_PATH}/mox-serverfirst?&fieldManager=serverfirst")
    );
    assert_eq!(write.content_type, "application/apply-patch+yaml");
    assert_eq!(write.body, applied(&[25]));
    let watched = [SERVICES, SLICES, PODS, RULES];
    cluster
        .wait_for_watches(&watched, Duration::from_secs(10))
        .await;
    stop(run, shutdown).await;

    let seen = cluster.seen();
    let writes: Vec<_> = seen.iter().filter(|s| s.method != "GET").collect();
    assert_eq!(
        writes.len(),
        1,
        "one apply; its own rule then is up to date: {writes:?}"
    );
    for path in watched {
        let list = seen
            .iter()
            .find(|s| s.uri == format!("{path}?&limit=500"))
            .unwrap_or_else(|| panic!("{path} listed in pages: {seen:?}"));
        let version = list.answered_version.as_deref().unwrap();
        let watch = format!(
            "{path}?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion={version}"
        );
        assert!(
            seen.iter().any(|s| s.uri == watch),
            "{path} watched from the list's resourceVersion: {seen:?}"
        );
    }
    let pod_reads: Vec<_> = seen.iter().filter(|s| s.path() == PODS).collect();
    assert!(!pod_reads.is_empty());
    for read in pod_reads {
        assert!(
            read.accept.contains("as=PartialObjectMetadata"),
            "pods as metadata only: {}",
            read.accept
        );
    }
    assert!(
        metrics
            .exposition()
            .contains(r#"serverfirst_companions_destinationrules_total{action="applied"} 1"#)
    );
}

/// A full Pod as the API server stores it (the controller reads it as metadata only).
fn stored_pod(name: &str, excluded: Option<&str>) -> Value {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "mail"}});
    if let Some(ports) = excluded {
        pod["metadata"]["annotations"] = json!({"serverfirst.dev/excluded-ports": ports});
    }
    pod
}

fn stored_namespace(labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mail", "labels": labels}})
}

/// The mox Service with one slice listing `mox-0`, whose pod records `excluded`.
fn mail_cluster(excluded: Option<&str>) -> Vec<Value> {
    vec![
        serde_json::to_value(service()).unwrap(),
        serde_json::to_value(slice(&["mox-0"])).unwrap(),
        stored_pod("mox-0", excluded),
    ]
}

/// The controller on kube's mocked service, served by a [`MockCluster`] of `objects` that
/// `prepare` may change before the controller's first request.
fn start_controller(
    objects: Vec<Value>,
    namespace_selector: Option<&str>,
    prepare: impl FnOnce(&MockCluster),
) -> (
    MockCluster,
    tokio::task::JoinHandle<()>,
    CancellationToken,
    Arc<CompanionMetrics>,
) {
    let (mock_service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let cluster = MockCluster::start(handle, objects);
    prepare(&cluster);
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(CompanionMetrics::new());
    let run = tokio::spawn(controller::run(
        Client::new(mock_service, "default"),
        rules_api(),
        namespace_selector.map(str::to_string),
        Some("companions-0".into()),
        metrics.clone(),
        shutdown.clone(),
    ));
    (cluster, run, shutdown, metrics)
}

async fn stop(run: tokio::task::JoinHandle<()>, shutdown: CancellationToken) -> Duration {
    let asked = tokio::time::Instant::now();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the controller stops within 10s of shutdown")
        .unwrap();
    asked.elapsed()
}

/// In a real cluster every watch ends after `timeoutSeconds` and, once its resourceVersion is
/// compacted, is answered `410 Gone`; all of them at once, since they started together. Each
/// must relist at once (no backoff: nothing failed), round after round, and a change made while
/// the watches were down must be applied within 10 s of the relist.
#[tokio::test]
async fn after_410_gone_every_watch_relists_at_once_and_a_change_is_applied_within_10s() {
    let watched = [SERVICES, SLICES, PODS, RULES];
    let (cluster, run, shutdown, _) = start_controller(mail_cluster(None), None, |_| {});
    cluster
        .wait_for_watches(&watched, Duration::from_secs(10))
        .await;
    let mut last_expiry = None;
    for round in 1..=3 {
        let expired = cluster.expire_watches();
        if round == 3 {
            // Made while the watches are down: only a relist can see it.
            cluster.put(stored_pod("mox-0", Some("25")));
        }
        cluster
            .wait_for_watches(&watched, Duration::from_secs(120))
            .await;
        let seen = cluster.seen();
        let mut delays = Vec::new();
        for path in watched {
            let gone = seen
                .iter()
                .find(|s| s.at >= expired && s.is_watch() && s.path() == path)
                .unwrap_or_else(|| panic!("{path} watched again after the expiry"));
            let relist = seen
                .iter()
                .find(|s| s.at >= gone.at && s.is_list() && s.path() == path)
                .unwrap_or_else(|| panic!("{path} listed again after 410"));
            delays.push((path, relist.at - gone.at));
        }
        eprintln!("round {round}: 410 → relist {delays:?}");
        for (path, delay) in delays {
            assert!(
                delay < Duration::from_millis(500),
                "round {round}: {path} relisted {delay:?} after its 410, not at once"
            );
        }
        last_expiry = Some(expired);
    }
    let expired = last_expiry.unwrap();
    let seen = cluster.seen();
    let pods_relisted = seen
        .iter()
        .find(|s| s.at >= expired && s.is_list() && s.path() == PODS)
        .unwrap()
        .at;
    let write = cluster.write_after(expired, Duration::from_secs(60)).await;
    let delay = write.at - pods_relisted;
    eprintln!("pods relist → applied rule: {delay:?}");
    assert!(
        delay <= Duration::from_secs(10),
        "the change seen by the relist was applied {delay:?} after it"
    );
    assert_eq!(
        (write.method.as_str(), write.uri.as_str()),
        (
            "PATCH",
            format!("{RULES_PATH}/mox-serverfirst?&fieldManager=serverfirst").as_str()
        )
    );
    assert_eq!(write.body, applied(&[25]));
    stop(run, shutdown).await;
}

/// kube-apiserver sends `ADDED` on a watch with a label selector when an object starts to match
/// it: a namespace labelled into `--namespace-selector` gets its rules within 10 s.
#[tokio::test]
async fn a_namespace_labelled_into_the_selector_gets_its_rules_within_10s() {
    let mut objects = mail_cluster(Some("25"));
    objects.push(stored_namespace(json!({"team": "mail"})));
    let (cluster, run, shutdown, metrics) =
        start_controller(objects, Some("serverfirst.dev/mode=enforce"), |_| {});
    cluster
        .wait_for_watches(
            &[SERVICES, SLICES, PODS, RULES, NAMESPACES],
            Duration::from_secs(10),
        )
        .await;
    // The Service was looked at, out of scope: nothing written.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !metrics
        .exposition()
        .contains(r#"serverfirst_companions_reconciles_total{result="success"} 1"#)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reconcile of the Service"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        cluster.seen().iter().all(|s| s.method == "GET"),
        "nothing written out of scope"
    );

    let labelled = tokio::time::Instant::now();
    cluster.put(stored_namespace(
        json!({"team": "mail", "serverfirst.dev/mode": "enforce"}),
    ));
    let write = cluster.write_after(labelled, Duration::from_secs(60)).await;
    let delay = write.at - labelled;
    eprintln!("namespace label → applied rule: {delay:?}");
    assert!(
        delay <= Duration::from_secs(10),
        "rule applied {delay:?} after the label"
    );
    assert_eq!(write.method, "PATCH");
    assert_eq!(write.body, applied(&[25]));
    stop(run, shutdown).await;
}

/// The same while the watches relist after expiring together (every few minutes): the
/// namespace watch too relists at once, so the label still brings the rules within 10 s.
#[tokio::test]
async fn a_namespace_labelled_while_the_watches_relist_gets_its_rules_within_10s() {
    let mut objects = mail_cluster(Some("25"));
    objects.push(stored_namespace(json!({"team": "mail"})));
    let (cluster, run, shutdown, _) =
        start_controller(objects, Some("serverfirst.dev/mode=enforce"), |_| {});
    let watched = [SERVICES, SLICES, PODS, RULES, NAMESPACES];
    cluster
        .wait_for_watches(&watched, Duration::from_secs(10))
        .await;
    cluster.expire_watches();
    let labelled = tokio::time::Instant::now();
    cluster.put(stored_namespace(
        json!({"team": "mail", "serverfirst.dev/mode": "enforce"}),
    ));
    let write = cluster.write_after(labelled, Duration::from_secs(60)).await;
    let delay = write.at - labelled;
    eprintln!("namespace label while relisting → applied rule: {delay:?}");
    assert!(
        delay <= Duration::from_secs(10),
        "rule applied {delay:?} after the label"
    );
    assert_eq!(write.body, applied(&[25]));
    stop(run, shutdown).await;
}

/// SIGTERM while the pods cannot be listed (403 until RBAC is fixed): the Service's reconcile
/// waits for that cache, which never fills, also not once the runtime stops its watches.
#[tokio::test]
async fn shutdown_while_a_cache_cannot_list_stops_at_once() {
    let (cluster, run, shutdown, _) = start_controller(mail_cluster(Some("25")), None, |cluster| {
        cluster.forbid_lists(PODS)
    });
    // The Services are listed, so the reconcile of mox runs and waits for the pods; the second
    // pod list comes after the watch's backoff, long after that reconcile started.
    cluster
        .wait_for_watches(&[SERVICES, SLICES, RULES], Duration::from_secs(10))
        .await;
    cluster
        .wait_for_lists(PODS, 2, Duration::from_secs(10))
        .await;
    let took = stop(run, shutdown).await;
    eprintln!("shutdown with a cache that cannot list: {took:?}");
    assert!(took < Duration::from_secs(3), "stopped after {took:?}");
    assert!(
        cluster.seen().iter().all(|s| s.method == "GET"),
        "nothing decided on a partial cache"
    );
}

/// SIGTERM before the Services are listed: kube's runner holds everything until that store is
/// ready, and it never will be once the watches stop.
#[tokio::test]
async fn shutdown_before_the_services_are_listed_stops_at_once() {
    let (cluster, run, shutdown, _) = start_controller(mail_cluster(Some("25")), None, |cluster| {
        cluster.stall_lists(SERVICES)
    });
    cluster
        .wait_for_watches(&[SLICES, PODS, RULES], Duration::from_secs(10))
        .await;
    let took = stop(run, shutdown).await;
    eprintln!("shutdown before the Services were listed: {took:?}");
    assert!(took < Duration::from_secs(3), "stopped after {took:?}");
}
