//! The pods of the end-to-end tests: the mox mail-server pod of the captured AdmissionReview, as
//! created without serverfirst and as serverfirst's webhook (over real TLS) returns it, in the
//! three shapes serverfirst patches. Needs `mod webhook_support;` and the Istio model in the
//! including test crate.
#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use serverfirst::config::Config;
use serverfirst::server::Limits;

use crate::istio_model::{INCLUDE_INBOUND_PORTS, IptablesArgs};
use crate::webhook_support::TestServer;

const REVIEW: &str = include_str!("../fixtures/review-mail-deployment.json");
/// A Deployment shaped like public vsftpd manifests and its Service as a public vsftpd README
/// publishes it.
const FTP_MANIFEST: &str = include_str!("../fixtures/manifests/real/ftp.yaml");

/// The server-first ports of the mail container (SMTP and submission): plain SMTP, served in the
/// tests by serverfirst's reference SMTP server.
pub const SMTP_PORTS: [u16; 2] = [25, SUBMISSION];
/// The mail Service's port.
pub const SUBMISSION: u16 = 587;

/// A pod as it reaches the webhook, and why it looks like that.
pub struct Shape {
    pub name: &'static str,
    pub pod: Value,
}

/// The pod of the captured review, as created (no annotation of Istio's).
pub fn created_pod() -> Value {
    let review: Value = serde_json::from_str(REVIEW).expect("fixture review");
    review["request"]["object"].clone()
}

/// The FTP control port and the passive data range of the FTP pod.
pub const FTP_CONTROL_PORT: u16 = 21;
pub const FTP_PASSIVE_PORTS: [u16; 2] = [30000, 30001];
/// The POP3 port of the POP3 pod.
pub const POP3_PORT: u16 = 110;

/// The captured review's pod with its containers replaced by one that declares `ports`.
fn pod_with_ports(container: &str, ports: Value) -> Value {
    let mut pod = created_pod();
    pod["spec"]["containers"] =
        json!([{ "name": container, "image": "example.test/app:1", "ports": ports }]);
    pod
}

/// An FTP server pod as created: the named control port and its passive ports, unnamed, which
/// serverfirst takes as passive ports because they sit beside an FTP control port.
pub fn ftp_pod() -> Value {
    let mut ports =
        vec![json!({ "name": "ftp", "containerPort": FTP_CONTROL_PORT, "protocol": "TCP" })];
    // The passive range as public FTP manifests declare it: bare container ports.
    ports.extend(
        FTP_PASSIVE_PORTS
            .iter()
            .map(|port| json!({ "containerPort": port, "protocol": "TCP" })),
    );
    pod_with_ports("ftp", Value::Array(ports))
}

/// The document of `kind` in the FTP manifest.
fn ftp_manifest(kind: &str) -> Value {
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(FTP_MANIFEST).expect("the FTP manifest");
    documents
        .into_iter()
        .find(|document| document["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in the FTP manifest"))
}

/// The pod of the FTP manifest's Deployment as created: its container's ports (the named
/// control port, the passive range as bare ports, metrics).
pub fn manifest_ftp_pod() -> Value {
    let deployment = ftp_manifest("Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let name = container["name"].as_str().expect("a container name");
    pod_with_ports(name, container["ports"].clone())
}

/// The FTP manifest's Service as written: `ftp-control` 21, `pasv-start` 21100, `pasv-1` 21101,
/// no appProtocol.
pub fn manifest_ftp_service() -> Value {
    ftp_manifest("Service")
}

/// A POP3 server pod as created.
pub fn pop3_pod() -> Value {
    pod_with_ports(
        "pop3",
        json!([{ "name": "pop3", "containerPort": POP3_PORT, "protocol": "TCP" }]),
    )
}

/// Every `containerPort` of the pod's containers.
pub fn container_ports(pod: &Value) -> Vec<u16> {
    let containers = pod["spec"]["containers"].as_array().expect("containers");
    containers
        .iter()
        .filter_map(|c| c["ports"].as_array())
        .flatten()
        .filter_map(|p| p["containerPort"].as_u64())
        .map(|p| u16::try_from(p).expect("port"))
        .collect()
}

/// The three shapes serverfirst patches: plain (it adds `excludeInboundPorts`), with an explicit
/// `includeInboundPorts` list (it shrinks the list), and already injected (it amends the
/// `istio-init` container Istio rendered).
pub fn shapes() -> Vec<Shape> {
    let plain = created_pod();

    let mut include_list = created_pod();
    include_list["metadata"]["annotations"][INCLUDE_INBOUND_PORTS] = json!("25,587,443,993");

    let mut injected = created_pod();
    let rendered = IptablesArgs::from_annotations(&injected)
        .expect("valid annotations")
        .expect("REDIRECT mode");
    let mut args = vec!["istio-iptables".to_string()];
    args.extend(rendered.to_args());
    args.push("--log_output_level=default:info".to_string());
    injected["spec"]["initContainers"] = json!([{
        "name": "istio-init",
        "image": "docker.io/istio/proxyv2:1.24.0",
        "args": args,
    }]);
    injected["metadata"]["annotations"]["sidecar.istio.io/status"] =
        json!(r#"{"initContainers":["istio-init"],"containers":["istio-proxy"]}"#);

    vec![
        Shape {
            name: "annotations",
            pod: plain,
        },
        Shape {
            name: "includeInboundPorts list",
            pod: include_list,
        },
        Shape {
            name: "already injected istio-init",
            pod: injected,
        },
    ]
}

/// Sends `pod` to serverfirst's webhook (`/mutate`, HTTPS on 127.0.0.1) in the captured review
/// and returns the pod with the returned JSON patch applied.
pub async fn admit(server: &TestServer, pod: &Value) -> Value {
    let mut review: Value = serde_json::from_str(REVIEW).expect("fixture review");
    review["request"]["object"] = pod.clone();
    mutate(server, &review).await
}

/// The mail server's Service as its chart writes it: the port named after its IANA service,
/// which tells Istio nothing (`ConvertProtocol`: auto-detected).
pub fn mail_service() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": "mox", "namespace": "mail" },
        "spec": {
            "selector": { "app.kubernetes.io/name": "mox" },
            "ports": [{ "name": "submission", "port": SUBMISSION, "targetPort": SUBMISSION, "protocol": "TCP" }],
        }
    })
}

/// Sends a Service CREATE to the webhook and returns the Service with the patch applied.
pub async fn admit_service(server: &TestServer, service: &Value) -> Value {
    let kind = json!({ "group": "", "version": "v1", "kind": "Service" });
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0c5d8a0e-6f0b-4d8e-9d1a-2f9b7c3e4a51",
            "kind": kind,
            "resource": { "group": "", "version": "v1", "resource": "services" },
            "requestKind": kind,
            "name": service["metadata"]["name"],
            "namespace": service["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": { "username": "kubernetes-admin", "groups": ["system:authenticated"] },
            "object": service,
            "oldObject": null,
            "dryRun": false,
            "options": { "apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions" },
        }
    });
    mutate(server, &review).await
}

/// The object of `review` with the JSON patch of the webhook's answer to it applied.
async fn mutate(server: &TestServer, review: &Value) -> Value {
    let (status, body) = server
        .post("/mutate", serde_json::to_vec(review).expect("review JSON"))
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let response: Value = serde_json::from_slice(&body).expect("AdmissionReview JSON");
    assert_eq!(response["response"]["allowed"], true, "{response}");
    let mut patched = review["request"]["object"].clone();
    if let Some(encoded) = response["response"]["patch"].as_str() {
        assert_eq!(response["response"]["patchType"], "JSONPatch");
        let patch: json_patch::Patch =
            serde_json::from_slice(&BASE64.decode(encoded).expect("base64")).expect("patch");
        json_patch::patch(&mut patched, &patch).expect("patch applies");
    }
    patched
}

/// Starts the webhook with its default configuration and admits every shape: each shape as sent,
/// with the pod serverfirst returned.
pub async fn admitted_shapes() -> Vec<(Shape, Value)> {
    let server = TestServer::start(Config::default(), Limits::default()).await;
    let mut admitted = Vec::new();
    for shape in shapes() {
        let pod = admit(&server, &shape.pod).await;
        admitted.push((shape, pod));
    }
    admitted
}

/// The Service serverfirst's webhook (default configuration) returns for `service`.
pub async fn admitted_service(service: &Value) -> Value {
    let server = TestServer::start(Config::default(), Limits::default()).await;
    admit_service(&server, service).await
}

/// The pod serverfirst's webhook (default configuration) returns for `pod`.
pub async fn admitted(pod: &Value) -> Value {
    let server = TestServer::start(Config::default(), Limits::default()).await;
    admit(&server, pod).await
}
