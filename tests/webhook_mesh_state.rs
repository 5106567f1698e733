//! The webhook deciding with the mesh state its reflectors keep, against a stub API server that
//! serves Namespaces, PeerAuthentications and AuthorizationPolicies for list and watch as
//! kube-apiserver does: where the mesh enforces identity on a server-first port (STRICT mTLS, an
//! AuthorizationPolicy on the pod's sidecar) the port stays in the mesh; elsewhere it is excluded
//! as it always was.

mod webhook_support;

#[path = "support/cluster_api.rs"]
mod cluster_api;
#[path = "support/stub_api.rs"]
mod stub_api;

use std::time::{Duration, Instant};

use base64::Engine as _;
use cluster_api::{AUTHORIZATION_POLICIES, ClusterApi, NAMESPACES, PEER_AUTHENTICATIONS};
use cluster_api::{istio_policy, namespace};
use serde_json::{Value, json};
use serverfirst::config::Config;
use serverfirst::mesh_watch;
use serverfirst::server::Limits;
use stub_api::StubApi;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use webhook_support::TestServer;

const EXCLUDE: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
const KEPT: &str = "serverfirst.dev/kept-ports";
const RECORD: &str = "serverfirst.dev/excluded-ports";

/// The webhook, its reflectors over the stub, and the stub.
struct Setup {
    server: TestServer,
    api: ClusterApi,
    ready: watch::Receiver<bool>,
    shutdown: CancellationToken,
    _stub: StubApi,
    _dir: tempfile::TempDir,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn client_for(stub: &StubApi, dir: &std::path::Path) -> kube::Client {
    let path = stub.kubeconfig(dir, "stub", &[("stub", "default")]);
    let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Starts the webhook with reflectors over a stub that holds `objects`; `hold` keeps the
/// PeerAuthentication list back until released.
async fn setup(objects: Vec<Value>, hold: bool) -> Setup {
    let api = ClusterApi::new(&[NAMESPACES, PEER_AUTHENTICATIONS, AUTHORIZATION_POLICIES]);
    api.apply_all(objects);
    if hold {
        api.hold(&PEER_AUTHENTICATIONS);
    }
    let stub = StubApi::start(api.router()).await;
    let dir = tempfile::tempdir().unwrap();
    let client = client_for(&stub, dir.path()).await;
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
        api,
        ready,
        shutdown,
        _stub: stub,
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

fn peer(namespace: &str, name: &str, spec: Value) -> Value {
    istio_policy(&PEER_AUTHENTICATIONS, namespace, name, spec)
}

fn authorization(namespace: &str, name: &str, spec: Value) -> Value {
    istio_policy(&AUTHORIZATION_POLICIES, namespace, name, spec)
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
    setup.api.apply(peer(
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

    setup.api.delete(&peer("permissive", "default", json!({})));
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
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !*setup.ready.borrow(),
        "ready before the PeerAuthentications were listed"
    );
    let listed = setup
        .api
        .requests
        .lock()
        .unwrap()
        .iter()
        .any(|r| r.starts_with("/api/v1/namespaces?"));
    assert!(listed, "the namespaces are listed meanwhile");
    setup.api.release(&PEER_AUTHENTICATIONS);
    setup.wait_ready().await;
    let (annotations, _) = setup.annotations("strict", json!({})).await;
    assert_eq!(annotations, json!({KEPT: "25,587"}));
}
