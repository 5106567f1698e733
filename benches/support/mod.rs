//! AdmissionReview bodies for the benchmarks, and an independent check of the webhook's answer.
//!
//! Every body is the review in `tests/fixtures/review-mail-deployment.json` (a Deployment's pod,
//! two containers, mail ports 25, 465 and 587), serialised compactly as the API server sends it
//! and grown to a target size with extra environment variables on the first container.
#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use serverfirst::admission;
use serverfirst::config::{Config, Mode};
use serverfirst::mesh_state::MeshState;

const FIXTURE: &str = include_str!("../../tests/fixtures/review-mail-deployment.json");

/// The ports the fixture's pod exposes that serverfirst excludes.
pub const PORTS: &str = "25,465,587";
const EXCLUDE_KEY: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
const RECORD_KEY: &str = "serverfirst.dev/excluded-ports";

/// What the webhook must answer to a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A JSON Patch that adds both annotations with [`PORTS`] and changes nothing else.
    Patch,
    /// `allowed: true` and nothing else: the pod is already right.
    NoPatch,
}

/// One request body of the benchmarks.
#[derive(Debug, Clone)]
pub struct Body {
    /// Short label for tables and benchmark ids, e.g. `6 KiB`.
    pub name: &'static str,
    pub bytes: Vec<u8>,
    pub expect: Expect,
}

/// The fixture's review as JSON.
pub fn fixture() -> Value {
    serde_json::from_str(FIXTURE).expect("fixture is JSON")
}

/// `review` with environment variables added to its pod's first container until its compact
/// serialisation is at least `target` bytes (and less than one variable more).
pub fn grown(review: &Value, target: usize) -> Vec<u8> {
    let mut review = review.clone();
    let base = serde_json::to_vec(&review).expect("serialise").len();
    let env = review["request"]["object"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .expect("first container has env");
    let mut size = base;
    let mut n = 0usize;
    while size < target {
        let var = json!({"name": format!("BENCH_VAR_{n:06}"), "value": format!("value-{n:06}-abcdefghijklmnopqrstuvwxyz")});
        size += serde_json::to_vec(&var).expect("serialise").len() + 1;
        env.push(var);
        n += 1;
    }
    serde_json::to_vec(&review).expect("serialise")
}

/// `review` with its pod changed as the webhook's own patch changes it: needs no patch.
pub fn already_patched(review_bytes: &[u8]) -> Vec<u8> {
    let answer = admission::review(
        review_bytes,
        Mode::Enforce,
        &Config::default(),
        &MeshState::default(),
    )
    .expect("fixture is a valid review");
    let answer: Value = serde_json::from_slice(&answer.body).expect("answer is JSON");
    let patch = decoded_patch(&answer).expect("fixture needs a patch");
    let mut review: Value = serde_json::from_slice(review_bytes).expect("review is JSON");
    json_patch::patch(&mut review["request"]["object"], &patch).expect("patch applies");
    serde_json::to_vec(&review).expect("serialise")
}

/// The benchmark bodies: 6 KiB (needs a patch), the same pod already patched, 64 KiB, 1 MiB.
pub fn bodies() -> Vec<Body> {
    let review = fixture();
    let six = grown(&review, 6 * 1024);
    let unchanged = already_patched(&six);
    vec![
        Body {
            name: "6 KiB",
            bytes: six,
            expect: Expect::Patch,
        },
        Body {
            name: "6 KiB patched",
            bytes: unchanged,
            expect: Expect::NoPatch,
        },
        Body {
            name: "64 KiB",
            bytes: grown(&review, 64 * 1024),
            expect: Expect::Patch,
        },
        Body {
            name: "1 MiB",
            bytes: grown(&review, 1024 * 1024),
            expect: Expect::Patch,
        },
    ]
}

fn decoded_patch(answer: &Value) -> Result<json_patch::Patch, String> {
    let encoded = answer["response"]["patch"]
        .as_str()
        .ok_or("answer has no response.patch")?;
    let json = BASE64
        .decode(encoded)
        .map_err(|e| format!("patch is not base64: {e}"))?;
    serde_json::from_slice(&json).map_err(|e| format!("patch is not a JSON Patch: {e}"))
}

/// Checks the webhook's `answer` to `request` from first principles: the envelope, the uid,
/// and for [`Expect::Patch`] that the patch applied to the request's pod adds exactly the two
/// annotations with [`PORTS`].
pub fn check_answer(request: &[u8], answer: &[u8], expect: Expect) -> Result<(), String> {
    let request: Value = serde_json::from_slice(request).map_err(|e| e.to_string())?;
    let answer: Value =
        serde_json::from_slice(answer).map_err(|e| format!("answer is not JSON: {e}"))?;
    if answer["apiVersion"] != "admission.k8s.io/v1" || answer["kind"] != "AdmissionReview" {
        return Err(format!("not an AdmissionReview v1: {answer}"));
    }
    let uid = &request["request"]["uid"];
    let response = &answer["response"];
    if &response["uid"] != uid || response["allowed"] != true {
        return Err(format!("uid not echoed or not allowed: {response}"));
    }
    match expect {
        Expect::NoPatch => match *response == json!({"uid": uid, "allowed": true}) {
            true => Ok(()),
            false => Err(format!("expected no patch, got {response}")),
        },
        Expect::Patch => {
            if response["patchType"] != "JSONPatch"
                || response["auditAnnotations"]["excluded-inbound-ports"] != PORTS
            {
                return Err(format!("expected a JSONPatch for {PORTS}, got {response}"));
            }
            let original = &request["request"]["object"];
            let mut patched = original.clone();
            json_patch::patch(&mut patched, &decoded_patch(&answer)?)
                .map_err(|e| format!("patch does not apply: {e}"))?;
            let annotations = patched["metadata"]["annotations"]
                .as_object_mut()
                .ok_or("patched pod has no annotations")?;
            for key in [EXCLUDE_KEY, RECORD_KEY] {
                if annotations.remove(key) != Some(Value::String(PORTS.into())) {
                    return Err(format!("patched pod lacks {key}: {PORTS}"));
                }
            }
            match &patched == original {
                true => Ok(()),
                false => Err("the patch changes more than the two annotations".into()),
            }
        }
    }
}

/// A mesh state as large as the cost figures quote: 10,000 namespaces, 1,000 PeerAuthentications
/// and 1,000 AuthorizationPolicies. Ten of each are in the fixture's namespace with selectors that
/// do not match its pod, so a decision reads them all and still excludes [`PORTS`].
pub fn large_mesh_state() -> MeshState {
    use serverfirst::mesh_state::MeshObject;
    let namespace = fixture()["request"]["namespace"]
        .as_str()
        .expect("fixture has a namespace")
        .to_string();
    let mut objects = Vec::new();
    for n in 0..10_000 {
        objects.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": format!("team-{n:05}"),
            "labels": {"kubernetes.io/metadata.name": format!("team-{n:05}"), "istio-injection": "enabled"}}}));
    }
    for n in 0..1_000 {
        let (policy_namespace, selector) = match n < 10 {
            true => (
                namespace.clone(),
                json!({"matchLabels": {"app": format!("other-{n}")}}),
            ),
            false => (format!("team-{n:05}"), Value::Null),
        };
        objects.push(
            json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"namespace": policy_namespace, "name": format!("pa-{n}"),
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"selector": selector, "mtls": {"mode": "STRICT"}}}),
        );
        objects.push(
            json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"namespace": policy_namespace, "name": format!("ap-{n}")},
            "spec": {"selector": selector, "action": "ALLOW", "rules": [{}]}}),
        );
    }
    MeshState::new(
        "istio-system",
        objects.iter().map(|o| {
            MeshObject::from_value(o)
                .expect("a mesh object")
                .expect("valid")
        }),
    )
}
