//! `serverfirst serve`'s memory with a large mesh state: its peak RSS once its reflectors have
//! listed 10,000 Namespaces (metadata only) and 1,000 each of PeerAuthentication and
//! AuthorizationPolicy from the mock cluster and a few reviews are answered, and again after
//! every watch expired and relisted (as after a compaction; `SERVERFIRST_SERVE_RELISTS` times,
//! 1 by default), against the same binary with an empty cluster. `SERVERFIRST_SERVE_BIN`
//! measures another build (release).

mod webhook_support;

#[path = "support/mock_cluster.rs"]
mod mock_cluster;

use std::process::Stdio;
use std::time::Duration;

use mock_cluster::new_object;
use mock_cluster::{AUTHORIZATION_POLICIES, MockCluster, NAMESPACES, PEER_AUTHENTICATIONS};
use serde_json::{Value, json};
use webhook_support::SpawnedServe;

const NAMESPACE_COUNT: usize = 10_000;
const POLICY_COUNT: usize = 1_000;
const REVIEW: &str = include_str!("fixtures/review-mail-deployment.json");

fn namespace_name(i: usize) -> String {
    format!("ns-{i:05}")
}

/// kubectl's copy of what it applied, which the API server returns with the object.
fn last_applied(object: &Value) -> Value {
    let mut applied = object.clone();
    applied["metadata"]
        .as_object_mut()
        .unwrap()
        .retain(|key, _| ["name", "namespace", "labels"].contains(&key.as_str()));
    json!({"kubectl.kubernetes.io/last-applied-configuration": applied.to_string()})
}

/// A Namespace as a real cluster stores it: a few labels, kubectl's annotation, managed fields.
fn namespace(i: usize) -> Value {
    let name = namespace_name(i);
    let mut namespace = new_object(NAMESPACES, None, &name);
    namespace["metadata"]["labels"] = json!({"kubernetes.io/metadata.name": name,
        "istio-injection": "enabled", "team": format!("team-{}", i % 100)});
    namespace["metadata"]["annotations"] = last_applied(&namespace);
    namespace["metadata"]["uid"] = json!(format!("0b7f6a52-3c1d-4e8f-9a2b-{i:012}"));
    namespace["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    namespace["metadata"]["managedFields"] = json!([{"manager": "kubectl-client-side-apply",
        "operation": "Update", "apiVersion": "v1", "time": "2026-01-01T00:00:00Z",
        "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:annotations": {".": {},
            "f:kubectl.kubernetes.io/last-applied-configuration": {}},
            "f:labels": {".": {}, "f:istio-injection": {}, "f:team": {}}}}}]);
    namespace["spec"] = json!({"finalizers": ["kubernetes"]});
    namespace["status"] = json!({"phase": "Active"});
    namespace
}

fn policy(path: &str, namespace: &str, name: &str, spec: Value) -> Value {
    let mut policy = new_object(path, Some(namespace), name);
    policy["spec"] = spec;
    policy["metadata"]["annotations"] = last_applied(&policy);
    policy["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    policy
}

/// Policy `i` of each kind: PeerAuthentications in every tenth namespace from `ns-00000`
/// (namespace-wide STRICT for even `i`, STRICT on port 587 of the mox pods for odd), and
/// AuthorizationPolicies selecting the mox pods in every tenth from `ns-00005`.
fn policies(i: usize) -> [Value; 2] {
    let peer = if i.is_multiple_of(2) {
        policy(
            PEER_AUTHENTICATIONS,
            &namespace_name(i * 10),
            "default",
            json!({"mtls": {"mode": "STRICT"}}),
        )
    } else {
        policy(
            PEER_AUTHENTICATIONS,
            &namespace_name(i * 10),
            "mox-submission",
            json!({"selector": {"matchLabels": {"app.kubernetes.io/name": "mox"}},
                "mtls": {"mode": "PERMISSIVE"}, "portLevelMtls": {"587": {"mode": "STRICT"}}}),
        )
    };
    let authorization = policy(
        AUTHORIZATION_POLICIES,
        &namespace_name(i * 10 + 5),
        "allow-mailer",
        json!({"selector": {"matchLabels": {"app.kubernetes.io/name": "mox"}}, "action": "ALLOW",
            "rules": [{"from": [{"source": {"principals": [
                format!("cluster.local/ns/apps/sa/mailer-{i}")]}}],
                "to": [{"operation": {"ports": ["25", "587"]}}]}]}),
    );
    [peer, authorization]
}

fn large_cluster() -> Vec<Value> {
    let mut objects: Vec<Value> = (0..NAMESPACE_COUNT).map(namespace).collect();
    objects.extend((0..POLICY_COUNT).flat_map(policies));
    objects
}

/// The fixture's mox pod created in `namespace`: the answer's `inbound-ports-decision`, or
/// what it excludes when there is none.
async fn decision(server: &SpawnedServe, namespace: &str) -> String {
    let mut review: Value = serde_json::from_str(REVIEW).unwrap();
    review["request"]["namespace"] = json!(namespace);
    review["request"]["object"]["metadata"]["namespace"] = json!(namespace);
    let (status, body) = webhook_support::post(
        server.webhook,
        &server.ca_pem,
        "/mutate",
        serde_json::to_vec(&review).unwrap().into(),
        false,
    )
    .await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let response = &answer["response"];
    assert_eq!(response["allowed"], true, "{answer}");
    match response["auditAnnotations"]["inbound-ports-decision"].as_str() {
        Some(decision) => decision.to_string(),
        None => {
            assert!(
                response["patch"].is_string(),
                "neither kept nor excluded: {answer}"
            );
            "excluded".to_string()
        }
    }
}

/// The process's peak resident set size (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status:\n{status}"))
}

/// Peak RSS in KiB: once listed, and after the relists.
struct Peaks {
    listed: u64,
    relisted: u64,
}

/// Runs `binary serve` against a mock cluster of `objects` until ready, asks `expected`'s
/// decisions, has every watch expire and relist `relists` times, asking again after each, and
/// returns its peak RSS.
async fn measure(
    binary: &str,
    objects: Vec<Value>,
    expected: &[(&str, &str)],
    relists: usize,
) -> Peaks {
    let (cluster, _) = MockCluster::serve_http(objects).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = cluster.kubeconfig(dir.path());
    let log = dir.path().join("stderr");
    let server = SpawnedServe::start_binary(
        binary,
        &["--kubeconfig", kubeconfig.to_str().unwrap()],
        &[("RUST_LOG", "warn")],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    tokio::task::block_in_place(|| server.wait_ready(Duration::from_secs(120)));
    let ask = || async {
        for (namespace, wanted) in expected {
            let decision = decision(&server, namespace).await;
            assert!(
                decision.contains(wanted),
                "{namespace}: {decision:?}, not {wanted:?}\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
    };
    ask().await;
    let listed = peak_rss_kib(server.child.id());

    // A relist fills a second map beside the store and swaps it in once complete
    // (kube-runtime reflector/store.rs, `Writer::apply_watcher_event`: `InitApply`, `InitDone`).
    let watched = [NAMESPACES, PEER_AUTHENTICATIONS, AUTHORIZATION_POLICIES];
    for _ in 0..relists {
        cluster
            .wait_for_watches(&watched, Duration::from_secs(30))
            .await;
        let expired = cluster.expire_watches();
        cluster
            .wait_for_watches(&watched, Duration::from_secs(60))
            .await;
        let relisted = cluster
            .seen()
            .iter()
            .any(|s| s.at >= expired && s.is_list() && s.path() == NAMESPACES);
        assert!(relisted, "the namespaces were listed again");
        ask().await;
    }
    let peaks = Peaks {
        listed,
        relisted: peak_rss_kib(server.child.id()),
    };
    let namespace_reads: Vec<_> = cluster
        .seen()
        .into_iter()
        .filter(|s| s.path() == NAMESPACES)
        .collect();
    assert!(!namespace_reads.is_empty(), "the namespaces were read");
    for read in namespace_reads {
        assert!(
            read.accept.contains("as=PartialObjectMetadata"),
            "namespaces as metadata only: {} {}",
            read.uri,
            read.accept
        );
    }
    peaks
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_memory_with_a_large_mesh_state() {
    // Measured: the listed state adds about 51 MiB (debug and release builds alike).
    const GROWTH_KIB: u64 = 64 * 1024;
    // The Deployment's 64Mi (manifests/base/deployment.yaml) does not hold this cluster: a
    // release build peaks at about 67 MiB once listed, 89-107 MiB after one relist, 120-141
    // MiB over 16. 160Mi is the limit proposed for it.
    const LIMIT_KIB: u64 = 160 * 1024;
    let own_binary = env!("CARGO_BIN_EXE_serverfirst");
    let binary = std::env::var("SERVERFIRST_SERVE_BIN").unwrap_or(own_binary.to_string());
    let relists: usize = std::env::var("SERVERFIRST_SERVE_RELISTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);

    let empty = measure(&binary, Vec::new(), &[("ns-00000", "excluded")], relists).await;
    let last = POLICY_COUNT - 1;
    let (strict, port_level, allowed) = (
        namespace_name((last - 1) * 10),
        namespace_name(last * 10),
        namespace_name(last * 10 + 5),
    );
    let large = measure(
        &binary,
        large_cluster(),
        &[
            ("ns-00000", "kept (STRICT by ns-00000/default)"),
            (&strict, &format!("kept (STRICT by {strict}/default)")),
            (&port_level, "587 kept"),
            (
                &allowed,
                &format!("kept (AuthorizationPolicy {allowed}/allow-mailer)"),
            ),
            ("ns-00001", "excluded"),
        ],
        relists,
    )
    .await;
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    println!(
        "{binary} serve --kubeconfig <mock cluster>: peak RSS (VmHWM) listed / after \
         {relists} relist(s): {} / {} with an empty cluster; {} / {} with {NAMESPACE_COUNT} \
         namespaces, {POLICY_COUNT} PeerAuthentications and {POLICY_COUNT} \
         AuthorizationPolicies (+{} listed)",
        mib(empty.listed),
        mib(empty.relisted),
        mib(large.listed),
        mib(large.relisted),
        mib(large.listed.saturating_sub(empty.listed)),
    );
    assert!(
        large.listed.saturating_sub(empty.listed) <= GROWTH_KIB,
        "the listed mesh state grew the peak RSS from {} KiB to {} KiB",
        empty.listed,
        large.listed
    );
    assert!(
        large.relisted <= LIMIT_KIB,
        "peak RSS {} KiB after {relists} relist(s), over {LIMIT_KIB} KiB",
        large.relisted
    );
}
