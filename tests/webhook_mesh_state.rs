//! The webhook deciding with the mesh state its reflectors keep, against the mock cluster
//! (Namespaces, PeerAuthentications and AuthorizationPolicies listed and watched as from
//! kube-apiserver, over loopback HTTP): where the mesh enforces identity on a server-first port (STRICT mTLS, an
//! AuthorizationPolicy on the pod's sidecar) the port stays in the mesh; elsewhere it is excluded
//! as it always was.

mod webhook_support;

#[path = "support/mock_cluster.rs"]
mod mock_cluster;

use std::time::{Duration, Instant};

use base64::Engine as _;
use mock_cluster::new_object;
use mock_cluster::{AUTHORIZATION_POLICIES, MockCluster, NAMESPACES, PEER_AUTHENTICATIONS};
use serde_json::{Value, json};
use serverfirst::config::Config;
use serverfirst::mesh_watch;
use serverfirst::server::Limits;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use webhook_support::TestServer;

const EXCLUDE: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
const KEPT: &str = "serverfirst.dev/kept-ports";
const RECORD: &str = "serverfirst.dev/excluded-ports";

/// The webhook, its reflectors over the mock cluster, and the mock cluster.
struct Setup {
    server: TestServer,
    cluster: MockCluster,
    ready: watch::Receiver<bool>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn client_for(cluster: &MockCluster, dir: &std::path::Path) -> kube::Client {
    let path = cluster.kubeconfig(dir);
    let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Starts the webhook with reflectors over a mock cluster that holds `objects`; `hold` keeps
/// the PeerAuthentication list back until released.
async fn setup(objects: Vec<Value>, hold: bool) -> Setup {
    let (cluster, _) = MockCluster::serve_http(objects).await;
    if hold {
        cluster.stall_lists(PEER_AUTHENTICATIONS);
    }
    let dir = tempfile::tempdir().unwrap();
    let client = client_for(&cluster, dir.path()).await;
    let server = TestServer::start(Config::default(), Limits::default()).await;
    let shutdown = CancellationToken::new();
    let (ready_tx, ready) = watch::channel(false);
    tokio::spawn(mesh_watch::run(
        client,
        "istio-system".into(),
        server.mesh.clone(),
        ready_tx,
        shutdown.clone(),
    ));
    Setup {
        server,
        cluster,
        ready,
        shutdown,
        _dir: dir,
    }
}

impl Setup {
    async fn wait_ready(&mut self) {
        tokio::time::timeout(Duration::from_secs(10), self.ready.wait_for(|r| *r))
            .await
            .expect("the mesh state listed within 10s")
            .unwrap();
    }

    /// The answer to a mox pod (ports 25 and 587, `app: mox`) created in `namespace`.
    async fn review(&self, namespace: &str, annotations: Value) -> Value {
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "6c3f1f0e-5b1a-4d0e-9f55-0d3c6a1b2c3d",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE", "namespace": namespace,
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "mox-", "labels": {"app": "mox"}, "annotations": annotations},
                "spec": {"containers": [{"name": "mox", "image": "r.xmox.nl/mox:v0.0.15", "ports": [
                    {"name": "smtp", "containerPort": 25}, {"name": "submission", "containerPort": 587}]}]}}}});
        let (status, body) = self
            .server
            .post("/mutate", serde_json::to_vec(&review).unwrap())
            .await;
        assert_eq!(status, 200);
        serde_json::from_slice(&body).unwrap()
    }

    /// The annotations of the pod once the answer's patch is applied.
    async fn annotations(&self, namespace: &str, annotations: Value) -> (Value, Value) {
        let response = self.review(namespace, annotations.clone()).await;
        let mut pod = json!({"metadata": {"annotations": annotations}});
        if let Some(patch) = response["response"]["patch"].as_str() {
            let patch = base64::engine::general_purpose::STANDARD
                .decode(patch)
                .unwrap();
            let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
            json_patch::patch(&mut pod, &patch).unwrap();
        }
        (pod["metadata"]["annotations"].clone(), response)
    }
}

/// An Istio policy of the kind at `path`.
fn policy(path: &str, namespace: &str, name: &str, spec: Value) -> Value {
    let mut policy = new_object(path, Some(namespace), name);
    policy["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    policy["spec"] = spec;
    policy
}

fn peer(namespace: &str, name: &str, spec: Value) -> Value {
    policy(PEER_AUTHENTICATIONS, namespace, name, spec)
}

fn authorization(namespace: &str, name: &str, spec: Value) -> Value {
    policy(AUTHORIZATION_POLICIES, namespace, name, spec)
}

fn namespace(name: &str, labels: Value) -> Value {
    let mut namespace = new_object(NAMESPACES, None, name);
    namespace["metadata"]["labels"] = labels;
    namespace
}

fn cluster() -> Vec<Value> {
    let mut objects: Vec<Value> = [
        "strict",
        "permissive",
        "port-level",
        "allowed",
        "allowed-others",
    ]
    .iter()
    .map(|name| namespace(name, json!({"istio-injection": "enabled"})))
    .collect();
    objects.extend([
        peer("istio-system", "default", json!({"mtls": {"mode": "PERMISSIVE"}})),
        peer("strict", "default", json!({"mtls": {"mode": "STRICT"}})),
        peer(
            "port-level",
            "mox",
            json!({"selector": {"matchLabels": {"app": "mox"}},
                   "portLevelMtls": {"587": {"mode": "STRICT"}}}),
        ),
        authorization(
            "allowed",
            "allow-mailer",
            json!({"selector": {"matchLabels": {"app": "mox"}}, "action": "ALLOW",
                   "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/apps/sa/mailer"]}}]}]}),
        ),
        authorization(
            "allowed-others",
            "allow-web",
            json!({"selector": {"matchLabels": {"app": "web"}}, "action": "ALLOW", "rules": [{}]}),
        ),
    ]);
    objects
}

#[tokio::test]
async fn ports_stay_in_the_mesh_where_it_enforces_identity() {
    let mut setup = setup(cluster(), false).await;
    setup.wait_ready().await;

    // STRICT for the namespace: both kept, nothing excluded, the record says so.
    let (annotations, response) = setup.annotations("strict", json!({})).await;
    assert_eq!(annotations, json!({KEPT: "25,587"}), "{response}");
    assert_eq!(
        response["response"]["auditAnnotations"]["inbound-ports-decision"],
        "ports 25,587 kept (STRICT by strict/default)"
    );

    // PERMISSIVE: excluded as always, with the answer serverfirst always gave.
    let (annotations, response) = setup.annotations("permissive", json!({})).await;
    assert_eq!(
        annotations,
        json!({EXCLUDE: "25,587", RECORD: "25,587"}),
        "{response}"
    );
    assert!(response["response"].get("warnings").is_none(), "{response}");

    // portLevelMtls {587: STRICT} on the workload: 587 kept, 25 excluded.
    let (annotations, _) = setup.annotations("port-level", json!({})).await;
    assert_eq!(
        annotations,
        json!({EXCLUDE: "25", RECORD: "25", KEPT: "587"})
    );

    // An AuthorizationPolicy selecting the pod keeps both; one for other pods does not.
    let (annotations, response) = setup.annotations("allowed", json!({})).await;
    assert_eq!(annotations, json!({KEPT: "25,587"}));
    assert_eq!(
        response["response"]["auditAnnotations"]["inbound-ports-decision"],
        "ports 25,587 kept (AuthorizationPolicy allowed/allow-mailer)"
    );
    let (annotations, _) = setup.annotations("allowed-others", json!({})).await;
    assert_eq!(annotations, json!({EXCLUDE: "25,587", RECORD: "25,587"}));

    // The operator's override under STRICT: excluded, and told what it bypasses.
    let forced = json!({"serverfirst.dev/mtls": "exclude"});
    let (annotations, response) = setup.annotations("strict", forced.clone()).await;
    let mut expected = forced.clone();
    expected[EXCLUDE] = json!("25,587");
    expected[RECORD] = json!("25,587");
    assert_eq!(annotations, expected);
    let warnings = response["response"]["warnings"].to_string();
    assert!(
        warnings.contains("ports 25,587 excluded by annotation although the mesh enforces identity there (STRICT by strict/default)"),
        "{warnings}"
    );
}

#[tokio::test]
async fn a_policy_created_later_changes_the_next_decision() {
    let mut setup = setup(cluster(), false).await;
    setup.wait_ready().await;
    let (annotations, _) = setup.annotations("permissive", json!({})).await;
    assert_eq!(annotations[EXCLUDE], "25,587");

    let created = Instant::now();
    setup.cluster.put(peer(
        "permissive",
        "default",
        json!({"mtls": {"mode": "STRICT"}}),
    ));
    loop {
        let (annotations, _) = setup.annotations("permissive", json!({})).await;
        if annotations == json!({KEPT: "25,587"}) {
            break;
        }
        assert!(
            created.elapsed() < Duration::from_secs(10),
            "the new STRICT policy not applied within 10s: {annotations}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "policy created → decision changed in {} ms",
        created.elapsed().as_millis()
    );

    setup
        .cluster
        .delete(&peer("permissive", "default", json!({})));
    let deleted = Instant::now();
    loop {
        let (annotations, _) = setup.annotations("permissive", json!({})).await;
        if annotations[EXCLUDE] == "25,587" {
            break;
        }
        assert!(
            deleted.elapsed() < Duration::from_secs(10),
            "the deleted policy still applies after 10s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn not_ready_until_every_reflector_has_listed() {
    let mut setup = setup(cluster(), true).await;
    // Everything else is listed and watched; the PeerAuthentications' list waits.
    setup
        .cluster
        .wait_for_watches(
            &[NAMESPACES, AUTHORIZATION_POLICIES],
            Duration::from_secs(10),
        )
        .await;
    setup
        .cluster
        .wait_for(
            Duration::from_secs(10),
            "the PeerAuthentications listed",
            |seen| {
                seen.iter()
                    .any(|s| s.is_list() && s.path() == PEER_AUTHENTICATIONS)
                    .then_some(())
            },
        )
        .await;
    let early = tokio::time::timeout(
        Duration::from_millis(300),
        setup.ready.wait_for(|ready| *ready),
    )
    .await
    .is_ok();
    assert!(!early, "ready before the PeerAuthentications were listed");
    setup.cluster.release_lists(PEER_AUTHENTICATIONS);
    setup.wait_ready().await;
    let (annotations, _) = setup.annotations("strict", json!({})).await;
    assert_eq!(annotations, json!({KEPT: "25,587"}));
}
