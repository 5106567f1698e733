//! The webhook over real TLS on 127.0.0.1: real AdmissionReview v1 bodies in, patches out.

mod webhook_support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use serverfirst::certs;
use serverfirst::config::{Config, Mode};
use serverfirst::metrics::Metrics;
use serverfirst::server::Limits;
use serverfirst::tls::{self, CertFiles};
use webhook_support::{TestServer, post, served_certificate};

const REVIEW: &str = include_str!("fixtures/review-mail-deployment.json");

fn review() -> Value {
    serde_json::from_str(REVIEW).unwrap()
}

fn patch_of(response: &Value) -> Option<json_patch::Patch> {
    let encoded = response["response"]["patch"].as_str()?;
    assert_eq!(response["response"]["patchType"], "JSONPatch");
    Some(serde_json::from_slice(&BASE64.decode(encoded).unwrap()).unwrap())
}

async fn post_json(server: &TestServer, path: &str, body: &Value) -> Value {
    let (status, bytes) = server.post(path, serde_json::to_vec(body).unwrap()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn mutate_patch_applied_to_the_request_object_yields_the_expected_pod() {
    let server = TestServer::start(Config::default(), Limits::default()).await;
    let request = review();
    let response = post_json(&server, "/mutate", &request).await;
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(response["kind"], "AdmissionReview");
    assert_eq!(response["response"]["uid"], request["request"]["uid"]);
    assert_eq!(response["response"]["allowed"], true);

    let mut pod = request["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch_of(&response).expect("a patch")).unwrap();
    let mut expected = request["request"]["object"].clone();
    let annotations = expected["metadata"]["annotations"].as_object_mut().unwrap();
    annotations.insert(
        "traffic.sidecar.istio.io/excludeInboundPorts".into(),
        json!("25,465,587"),
    );
    annotations.insert("serverfirst.dev/excluded-ports".into(), json!("25,465,587"));
    assert_eq!(pod, expected);

    // Reinvocation with the patched pod: nothing more to do.
    let mut again = request.clone();
    again["request"]["object"] = pod;
    let response = post_json(&server, "/mutate", &again).await;
    assert!(patch_of(&response).is_none(), "{response}");
}

#[tokio::test]
async fn mutate_merges_with_existing_annotations_and_creates_missing_map() {
    let server = TestServer::start(Config::default(), Limits::default()).await;
    let mut request = review();
    let object = &mut request["request"]["object"];
    object["metadata"]["annotations"] =
        json!({"traffic.sidecar.istio.io/excludeInboundPorts": "9090, 8080"});
    let response = post_json(&server, "/mutate", &request).await;
    let mut pod = request["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch_of(&response).unwrap()).unwrap();
    assert_eq!(
        pod["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeInboundPorts"],
        "25,465,587,8080,9090"
    );

    request["request"]["object"]["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    let response = post_json(&server, "/mutate", &request).await;
    let mut pod = request["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch_of(&response).unwrap()).unwrap();
    assert_eq!(
        pod["metadata"]["annotations"]["serverfirst.dev/excluded-ports"],
        "25,465,587"
    );
}

#[tokio::test]
async fn already_injected_pod_gets_istio_init_amended() {
    let server = TestServer::start(Config::default(), Limits::default()).await;
    let mut request = review();
    request["request"]["object"]["spec"]["initContainers"] = json!([{
        "name": "istio-init", "image": "docker.io/istio/proxyv2:1.24.0",
        "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*",
                 "-x", "", "-b", "*", "-d", "15090,15021,15020", "--log_output_level=default:info"]}]);
    let response = post_json(&server, "/mutate", &request).await;
    let mut pod = request["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch_of(&response).unwrap()).unwrap();
    assert_eq!(
        pod["spec"]["initContainers"][0]["args"][16],
        "25,465,587,15020,15021,15090"
    );
}

/// An injected pod as Istio renders it (istio-init, istio-proxy, the status annotation) whose
/// label says `sidecar.istio.io/inject: "true"` and annotation `"false"`: Istio follows the
/// label, so the sidecar is there and the ports must be excluded.
#[tokio::test]
async fn injected_pod_whose_label_and_annotation_disagree_is_patched() {
    let server = TestServer::start(Config::default(), Limits::default()).await;
    let mut request = review();
    let pod = &mut request["request"]["object"];
    pod["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("true");
    pod["metadata"]["annotations"] = json!({
        "sidecar.istio.io/inject": "false",
        "sidecar.istio.io/status": "{\"initContainers\":[\"istio-init\"],\"containers\":[\"istio-proxy\"],\"volumes\":[\"workload-socket\",\"credential-socket\",\"workload-certs\",\"istio-envoy\",\"istio-data\",\"istio-podinfo\",\"istio-token\",\"istiod-ca-cert\"],\"imagePullSecrets\":null,\"revision\":\"default\"}",
        "istio.io/rev": "default",
        "kubectl.kubernetes.io/default-container": "mox",
        "prometheus.io/path": "/stats/prometheus",
        "prometheus.io/port": "15020",
        "prometheus.io/scrape": "true"
    });
    pod["spec"]["initContainers"] = json!([{
        "name": "istio-init", "image": "gcr.io/istio-testing/proxyv2:latest",
        "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*",
                 "-x", "", "-b", "*", "-d", "15090,15021,15020", "--log_output_level=default:info"],
        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
                            "privileged": false, "readOnlyRootFilesystem": false, "runAsGroup": 0, "runAsNonRoot": false, "runAsUser": 0}}]);
    pod["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "istio-proxy", "image": "gcr.io/istio-testing/proxyv2:latest",
                     "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local"],
                     "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}]}));
    let response = post_json(&server, "/mutate", &request).await;
    let mut pod = request["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch_of(&response).expect("a patch")).unwrap();
    assert_eq!(
        pod["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeInboundPorts"],
        "25,465,587"
    );
    assert_eq!(
        pod["spec"]["initContainers"][0]["args"][16],
        "25,465,587,15020,15021,15090"
    );
}

#[tokio::test]
async fn audit_endpoint_and_audit_mode_never_patch() {
    let server = TestServer::start(Config::default(), Limits::default()).await;
    let response = post_json(&server, "/audit", &review()).await;
    assert!(patch_of(&response).is_none());
    assert_eq!(
        response["response"]["warnings"],
        json!(["serverfirst: would exclude inbound ports 25,465,587 from sidecar capture"])
    );
    assert_eq!(
        response["response"]["auditAnnotations"],
        json!({"would-exclude-inbound-ports": "25,465,587"})
    );

    let audit_config = Config {
        mode: Mode::Audit,
        ..Config::default()
    };
    let server = TestServer::start(audit_config, Limits::default()).await;
    let response = post_json(&server, "/mutate", &review()).await;
    assert!(patch_of(&response).is_none());
    assert!(server.metrics.encode().contains(r#"serverfirst_admission_reviews_total{endpoint="mutate",kind="pod",mode="audit",outcome="would_patch"} 1"#));
}

#[tokio::test]
async fn http2_gets_the_same_answer() {
    let server = TestServer::start(Config::default(), Limits::default()).await;
    let body = bytes::Bytes::from(REVIEW);
    let (status1, body1) = post(
        server.addr,
        &server.bundle.ca_pem,
        "/mutate",
        body.clone(),
        false,
    )
    .await;
    let (status2, body2) = post(server.addr, &server.bundle.ca_pem, "/mutate", body, true).await;
    assert_eq!((status1, status2), (200, 200));
    assert_eq!(body1, body2);
}

#[tokio::test]
async fn malformed_bodies_get_400_with_a_json_error_and_oversize_gets_413() {
    let limits = Limits {
        max_body_bytes: 64 * 1024,
        ..Limits::default()
    };
    let server = TestServer::start(Config::default(), limits).await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"this is not json".to_vec(), "not a valid AdmissionReview"),
        (br#"{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "1"}}"#.to_vec(), "apiVersion"),
        (br#"{"apiVersion": "admission.k8s.io/v1", "kind": "Pod"}"#.to_vec(), "kind must be"),
        (br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#.to_vec(), "no request"),
        (Vec::new(), "not a valid AdmissionReview"),
    ];
    for (body, expected) in cases {
        let (status, bytes) = server.post("/mutate", body).await;
        assert_eq!(status, 400);
        let error: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(
            error["error"].as_str().unwrap().contains(expected),
            "{error}"
        );
    }
    let (status, bytes) = server.post("/mutate", vec![b' '; 64 * 1024 + 1]).await;
    assert_eq!(status, 413);
    let error: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("exceeds the limit of 65536 bytes"),
        "{error}"
    );
    let metrics = server.metrics.encode();
    assert!(
        metrics.contains(r#"serverfirst_rejected_requests_total{reason="invalid_request"} 5"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"serverfirst_rejected_requests_total{reason="body_too_large"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn default_body_limit_is_three_mebibytes() {
    let server = TestServer::start(Config::default(), Limits::default()).await;
    let (status, _) = server
        .post("/mutate", vec![b' '; 3 * 1024 * 1024 + 1])
        .await;
    assert_eq!(status, 413);
    // Just under the limit is read and judged on its content.
    let (status, _) = server.post("/mutate", vec![b' '; 3 * 1024 * 1024]).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn rotated_certificate_is_served_on_the_next_handshake_and_a_bad_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let server = TestServer::start(Config::default(), Limits::default()).await;
    std::fs::write(&cert_path, &server.bundle.cert_pem).unwrap();
    std::fs::write(&key_path, &server.bundle.key_pem).unwrap();
    let (files, _) = CertFiles::load(cert_path.clone(), key_path.clone()).unwrap();
    let metrics = std::sync::Arc::new(Metrics::new());
    tokio::spawn(tls::watch(
        files,
        server.resolver.clone(),
        Duration::from_millis(20),
        metrics.clone(),
        server.shutdown.clone(),
    ));
    let first = served_certificate(server.addr, &server.bundle.ca_pem)
        .await
        .unwrap();

    // A new pair from a new CA, swapped in the way the kubelet does: a new directory, then
    // an atomic rename of the symlink the files are read through.
    let rotated = certs::generate(&["localhost".into()], 1).unwrap();
    let data = dir.path().join("..2026_11_28");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("tls.crt"), &rotated.cert_pem).unwrap();
    std::fs::write(data.join("tls.key"), &rotated.key_pem).unwrap();
    std::os::unix::fs::symlink(&data, dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    std::fs::remove_file(&cert_path).unwrap();
    std::fs::remove_file(&key_path).unwrap();
    std::os::unix::fs::symlink("..data/tls.crt", &cert_path).unwrap();
    std::os::unix::fs::symlink("..data/tls.key", &key_path).unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match served_certificate(server.addr, &rotated.ca_pem).await {
            Ok(der) if !der.is_empty() && der != first => break,
            _ if Instant::now() > deadline => panic!("rotated certificate not served within 5s"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    // The old CA no longer verifies the server; the new one does, and requests work.
    assert!(
        served_certificate(server.addr, &server.bundle.ca_pem)
            .await
            .is_err()
    );
    let (status, _) = post(
        server.addr,
        &rotated.ca_pem,
        "/mutate",
        REVIEW.into(),
        false,
    )
    .await;
    assert_eq!(status, 200);

    // A broken pair is counted and the rotated one keeps serving.
    std::fs::write(data.join("tls.key"), "not a key").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !metrics
        .encode()
        .contains(r#"serverfirst_tls_reloads_total{result="failure"} 1"#)
    {
        assert!(
            Instant::now() < deadline,
            "bad reload not counted: {}",
            metrics.encode()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        served_certificate(server.addr, &rotated.ca_pem)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn shutdown_stops_accepting_and_returns() {
    let mut server = TestServer::start(Config::default(), Limits::default()).await;
    let (status, _) = server.post("/mutate", REVIEW).await;
    assert_eq!(status, 200);
    server.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), &mut server.task)
        .await
        .expect("server stops")
        .unwrap();
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}

fn service_review(operation: &str, service: Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "9a4f2f9e-1d8b-4f55-8c3e-5b1f6f0d2a77",
        "kind": {"group": "", "version": "v1", "kind": "Service"},
        "resource": {"group": "", "version": "v1", "resource": "services"},
        "requestKind": {"group": "", "version": "v1", "kind": "Service"},
        "name": "mox", "namespace": "mail", "operation": operation,
        "userInfo": {"username": "kubernetes-admin", "groups": ["system:authenticated"]},
        "object": service, "oldObject": null, "dryRun": false,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}}})
}

fn mail_service() -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "mox", "namespace": "mail", "labels": {"app": "mox"}},
           "spec": {"selector": {"app": "mox"}, "type": "ClusterIP", "ports": [
               {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
               {"name": "smtp", "port": 25, "targetPort": 25, "protocol": "TCP"},
               {"name": "submission", "port": 587, "targetPort": "submission", "protocol": "TCP"}]}})
}

/// `service` after the webhook's answer to `operation`.
async fn reviewed_service(server: &TestServer, operation: &str, service: &Value) -> Value {
    let response = post_json(
        server,
        "/mutate",
        &service_review(operation, service.clone()),
    )
    .await;
    assert_eq!(response["response"]["allowed"], true);
    let mut patched = service.clone();
    if let Some(patch) = patch_of(&response) {
        json_patch::patch(&mut patched, &patch).unwrap();
    }
    patched
}

#[tokio::test]
async fn service_create_and_update_declare_server_first_ports_once() {
    let server = TestServer::start(Config::default(), Limits::default()).await;
    let created = reviewed_service(&server, "CREATE", &mail_service()).await;
    let mut expected = mail_service();
    expected["metadata"]["annotations"] = json!({"serverfirst.dev/declared-tcp-ports": "587"});
    // 25 is one of Istio's well-known TCP ports: already TCP, left alone.
    expected["spec"]["ports"][2]["appProtocol"] = json!("tcp");
    assert_eq!(created, expected);

    // An unchanged Service (an UPDATE of labels, or reinvocation) gets no patch.
    let mut relabelled = created.clone();
    relabelled["metadata"]["labels"]["tier"] = json!("mail");
    let response = post_json(&server, "/mutate", &service_review("UPDATE", relabelled)).await;
    assert!(patch_of(&response).is_none(), "{response}");

    // A port added on UPDATE is declared, and the record merged.
    let mut grown = created.clone();
    grown["spec"]["ports"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "imap", "port": 143, "protocol": "TCP"}));
    let updated = reviewed_service(&server, "UPDATE", &grown).await;
    assert_eq!(updated["spec"]["ports"][3]["appProtocol"], "tcp");
    assert_eq!(updated["spec"]["ports"][2]["appProtocol"], "tcp");
    assert!(updated["spec"]["ports"][0].get("appProtocol").is_none());
    assert_eq!(
        updated["metadata"]["annotations"]["serverfirst.dev/declared-tcp-ports"],
        "143,587"
    );

    let metrics = server.metrics.encode();
    for (outcome, count) in [("patched", 2), ("unchanged", 1)] {
        let series = format!(
            r#"serverfirst_admission_reviews_total{{endpoint="mutate",kind="service",mode="enforce",outcome="{outcome}"}} {count}"#
        );
        assert!(metrics.contains(&series), "{series}\n{metrics}");
    }
}

#[tokio::test]
async fn service_audit_answers_with_warnings_and_audit_annotations_only() {
    let server = TestServer::start(Config::default(), Limits::default()).await;
    let mut service = mail_service();
    service["spec"]["ports"][1]["appProtocol"] = json!("smtp");
    service["spec"]["ports"][1]["port"] = json!(2525);
    let response = post_json(&server, "/audit", &service_review("CREATE", service)).await;
    assert!(patch_of(&response).is_none());
    assert_eq!(
        response["response"]["warnings"],
        json!([
            "serverfirst: would declare Service port 587 as TCP",
            "serverfirst: port 2525 (smtp): Istio does not know appProtocol \"smtp\" and sniffs it; set tcp"
        ])
    );
    assert_eq!(
        response["response"]["auditAnnotations"],
        json!({"would-declare-tcp-ports": "587"})
    );
    assert!(server.metrics.encode().contains(
        r#"serverfirst_admission_reviews_total{endpoint="audit",kind="service",mode="audit",outcome="would_patch"} 1"#
    ));
}

/// Defence in depth: whatever a hand-edited namespace selector lets through, pods and Services in
/// kube-system, kube-public and serverfirst's own namespace are allowed unchanged and counted as
/// skipped.
#[tokio::test]
async fn system_and_own_namespaces_are_never_patched() {
    let mut config = Config::default();
    config.own_namespace = "mail-ops".into();
    let server = TestServer::start(config, Limits::default()).await;
    for namespace in ["kube-system", "kube-public", "mail-ops"] {
        let mut pod = review();
        pod["request"]["namespace"] = json!(namespace);
        let mut service = service_review("CREATE", mail_service());
        service["request"]["namespace"] = json!(namespace);
        for body in [pod, service] {
            let response = post_json(&server, "/mutate", &body).await;
            assert_eq!(
                response["response"],
                json!({"uid": body["request"]["uid"], "allowed": true}),
                "{namespace}"
            );
        }
    }
    let metrics = server.metrics.encode();
    for kind in ["pod", "service"] {
        let series = format!(
            r#"serverfirst_admission_reviews_total{{endpoint="mutate",kind="{kind}",mode="enforce",outcome="skipped"}} 3"#
        );
        assert!(metrics.contains(&series), "{series}\n{metrics}");
    }
    // serverfirst-system is an ordinary namespace when serverfirst runs elsewhere.
    let mut pod = review();
    pod["request"]["namespace"] = json!("serverfirst-system");
    assert!(patch_of(&post_json(&server, "/mutate", &pod).await).is_some());
}

/// A mox pod in a namespace labelled `istio.io/dataplane-mode=ambient` is ztunnel's: no
/// sidecar annotations, no record, counted as skipped; the same pod in a plain namespace gets
/// the exclusions as always.
#[tokio::test]
async fn ambient_pods_are_left_alone_and_sidecar_pods_patched() {
    use serverfirst::mesh_state::{MeshObject, MeshState};
    let server = TestServer::start(Config::default(), Limits::default()).await;
    let namespaces = [
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "mail", "labels": {"istio.io/dataplane-mode": "ambient"}}}),
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "plain", "labels": {"istio-injection": "enabled"}}}),
    ];
    server.mesh.store(std::sync::Arc::new(MeshState::new(
        "istio-system",
        namespaces
            .iter()
            .map(|n| MeshObject::from_value(n).unwrap().unwrap()),
    )));
    // The fixture is a mox pod in `mail`.
    let ambient = post_json(&server, "/mutate", &review()).await;
    assert_eq!(
        ambient["response"],
        json!({"uid": review()["request"]["uid"], "allowed": true})
    );
    let mut plain = review();
    plain["request"]["namespace"] = json!("plain");
    let response = post_json(&server, "/mutate", &plain).await;
    let mut pod = plain["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch_of(&response).expect("a patch")).unwrap();
    assert_eq!(
        pod["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeInboundPorts"],
        "25,465,587"
    );
    let metrics = server.metrics.encode();
    for (outcome, count) in [("skipped", 1), ("patched", 1)] {
        let series = format!(
            r#"serverfirst_admission_reviews_total{{endpoint="mutate",kind="pod",mode="enforce",outcome="{outcome}"}} {count}"#
        );
        assert!(metrics.contains(&series), "{series}\n{metrics}");
    }
}
