//! AdmissionReview v1 in, AdmissionReview v1 out: the webhook's decision without HTTP types.
//!
//! Only the envelope and the small view of the object (a pod or a Service) are parsed; the
//! object's other fields are skipped. The request's kind picks the half that decides:
//! [`pod`] for a Pod CREATE, [`service`] for a Service CREATE or UPDATE. The answer is always
//! `allowed: true`: serverfirst never denies, and any failure of its own (an object it cannot
//! read, a patch that would not apply, a panic while deciding) is answered without a patch.

mod pod;
mod service;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::{Config, Mode};
use crate::mesh_state::MeshState;
use crate::pod::{PodView, borrowed};
use crate::service::ServiceView;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";
/// Kubernetes truncates longer warnings; keep ours whole.
const MAX_WARNING_LEN: usize = 120;

/// A request that is not an AdmissionReview v1: answered with HTTP 400.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("body is not a valid AdmissionReview JSON document: {0}")]
    Invalid(#[from] serde_json::Error),
    #[error("apiVersion must be \"{API_VERSION}\", got {0:?}")]
    ApiVersion(String),
    #[error("kind must be \"{KIND}\", got {0:?}")]
    Kind(String),
    #[error("AdmissionReview has no request")]
    MissingRequest,
    #[error("request.uid is missing or empty")]
    MissingUid,
}

/// What happened to one review, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Enforce: the patch was returned.
    Patched,
    /// Audit: a patch would have been returned.
    WouldPatch,
    /// Server-first ports found and already excluded (or not captured), or already declared
    /// TCP on a Service.
    Unchanged,
    /// No server-first ports.
    NoPorts,
    /// Opted out, hostNetwork, injection disabled, ...
    Skipped,
    /// Neither a Pod CREATE nor a Service CREATE or UPDATE (other kinds, operations,
    /// subresources).
    NotApplicable,
    /// The object could not be read as its kind: allowed unchanged (fail open).
    InvalidObject,
    /// The planned patch did not apply to the object: allowed unchanged (fail open).
    PatchRejected,
    /// Deciding on the object panicked (a bug): allowed unchanged (fail open).
    InternalError,
}

impl Outcome {
    pub const ALL: [Outcome; 9] = [
        Outcome::Patched,
        Outcome::WouldPatch,
        Outcome::Unchanged,
        Outcome::NoPorts,
        Outcome::Skipped,
        Outcome::NotApplicable,
        Outcome::InvalidObject,
        Outcome::PatchRejected,
        Outcome::InternalError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Patched => "patched",
            Outcome::WouldPatch => "would_patch",
            Outcome::Unchanged => "unchanged",
            Outcome::NoPorts => "no_ports",
            Outcome::Skipped => "skipped",
            Outcome::NotApplicable => "not_applicable",
            Outcome::InvalidObject => "invalid_object",
            Outcome::PatchRejected => "patch_rejected",
            Outcome::InternalError => "internal_error",
        }
    }
}

/// The kind of object a review was about, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Pod,
    Service,
    /// Anything else the API server sent (answered `not_applicable`).
    Other,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Pod, Kind::Service, Kind::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pod => "pod",
            Kind::Service => "service",
            Kind::Other => "other",
        }
    }
}

/// The serialised AdmissionReview response and what it decided.
#[derive(Debug)]
pub struct Reviewed {
    pub body: Vec<u8>,
    pub kind: Kind,
    pub outcome: Outcome,
}

/// The envelope, generic over how the object is read: as raw JSON (`&RawValue`), or straight
/// into the pod view in the same pass ([`PodObject`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
struct ReviewIn<'a, O> {
    #[serde(borrow, default, deserialize_with = "borrowed::text")]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed::text")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    request: Option<RequestIn<'a, O>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
struct RequestIn<'a, O> {
    #[serde(borrow, default, deserialize_with = "borrowed::text")]
    uid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<GroupVersionKind<'a>>,
    #[serde(borrow, default, deserialize_with = "borrowed::text")]
    sub_resource: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed::text")]
    operation: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed::text")]
    namespace: Option<Cow<'a, str>>,
    #[serde(default)]
    object: Option<O>,
}

/// A request object read as a pod view while the envelope is parsed. Unlike `Option<PodView>`
/// it does not take `null` for absent: a null object fails this read, like any object that is
/// not a pod, and the two-pass read then answers it. Service reviews take the two-pass read.
struct PodObject<'a>(PodView<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for PodObject<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        PodView::deserialize(deserializer).map(PodObject)
    }
}

#[derive(Deserialize)]
struct GroupVersionKind<'a> {
    #[serde(borrow, default)]
    group: Cow<'a, str>,
    #[serde(borrow, default)]
    version: Cow<'a, str>,
    #[serde(borrow, default)]
    kind: Cow<'a, str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    audit_annotations: BTreeMap<&'static str, String>,
}

impl<'a> ResponseOut<'a> {
    fn allowed(uid: &'a str) -> Self {
        ResponseOut {
            uid,
            allowed: true,
            patch_type: None,
            patch: None,
            warnings: Vec::new(),
            audit_annotations: BTreeMap::new(),
        }
    }

    /// Puts `patch` into the answer; `Err` when it cannot be serialised (never expected).
    fn set_patch(&mut self, patch: &json_patch::Patch) -> Result<(), Outcome> {
        let json = serde_json::to_vec(patch).map_err(|error| {
            tracing::error!(%error, "cannot serialise the patch; allowing the object unchanged");
            Outcome::PatchRejected
        })?;
        self.patch_type = Some("JSONPatch");
        self.patch = Some(BASE64.encode(json));
        Ok(())
    }
}

/// What a request asks serverfirst to review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Pod,
    Service,
    /// Answered `not_applicable`.
    None(Kind),
}

/// The object, read as the view of its kind.
enum Object<'a> {
    Pod(PodView<'a>),
    Service(ServiceView<'a>),
}

/// Answers one AdmissionReview request body in `mode`.
///
/// One pass reads the envelope and the pod view together. When that fails (not JSON, not
/// UTF-8, an object that is not a pod, ...), or the request is about a Service, the envelope is
/// read on its own with the object kept raw, and the object read as its kind second, so that
/// every answer, error and log line is that of the two-pass read; a body that one pass reads,
/// the two-pass read reads alike.
pub fn review(
    body: &[u8],
    mode: Mode,
    config: &Config,
    mesh: &MeshState,
) -> Result<Reviewed, RequestError> {
    // Strings skipped inside the object are not checked for UTF-8 by the one-pass read, but
    // are by the raw read of the object: check them all first, once, and read from `str`.
    if let Ok(text) = std::str::from_utf8(body)
        && let Ok(review) = serde_json::from_str::<ReviewIn<'_, PodObject<'_>>>(text)
        && review.request.as_ref().map(target) != Some(Target::Service)
    {
        return answer(review, mode, config, mesh, |_, object| {
            Ok(Object::Pod(object.0))
        });
    }
    review_two_pass(body, mode, config, mesh)
}

/// The envelope with the object kept raw, then the object read as its kind.
fn review_two_pass(
    body: &[u8],
    mode: Mode,
    config: &Config,
    mesh: &MeshState,
) -> Result<Reviewed, RequestError> {
    let review: ReviewIn<'_, &RawValue> = serde_json::from_slice(body)?;
    answer(review, mode, config, mesh, |target, object| {
        let bytes = object.get().as_bytes();
        match target {
            Target::Service => ServiceView::from_json(bytes).map(Object::Service),
            _ => PodView::from_json(bytes).map(Object::Pod),
        }
        .map_err(|e| e.to_string())
    })
}

fn answer<'a, O>(
    review: ReviewIn<'a, O>,
    mode: Mode,
    config: &Config,
    mesh: &MeshState,
    read_object: impl FnOnce(Target, O) -> Result<Object<'a>, String>,
) -> Result<Reviewed, RequestError> {
    let api_version = review.api_version.unwrap_or_default();
    if api_version != API_VERSION {
        return Err(RequestError::ApiVersion(api_version.into_owned()));
    }
    let kind = review.kind.unwrap_or_default();
    if kind != KIND {
        return Err(RequestError::Kind(kind.into_owned()));
    }
    let request = review.request.ok_or(RequestError::MissingRequest)?;
    let target = target(&request);
    let RequestIn {
        uid,
        namespace,
        object,
        ..
    } = request;
    let uid = uid
        .as_deref()
        .filter(|uid| !uid.is_empty())
        .ok_or(RequestError::MissingUid)?;

    let mut response = ResponseOut::allowed(uid);
    let namespace = namespace.as_deref().unwrap_or_default();
    let (kind, outcome) = match target {
        Target::None(kind) => (kind, Outcome::NotApplicable),
        Target::Pod | Target::Service => {
            let kind = match target {
                Target::Service => Kind::Service,
                _ => Kind::Pod,
            };
            let object = match object {
                Some(object) => read_object(target, object),
                None => Err("request.object is missing".to_string()),
            };
            let outcome = match object {
                Ok(object) => review_object(&object, namespace, mode, config, mesh, &mut response),
                Err(error) => {
                    tracing::warn!(namespace, kind = kind.as_str(), %error, "cannot read the object; allowing it unchanged");
                    Outcome::InvalidObject
                }
            };
            (kind, outcome)
        }
    };
    let body = serde_json::to_vec(&ReviewOut {
        api_version: API_VERSION,
        kind: KIND,
        response,
    })?;
    Ok(Reviewed {
        body,
        kind,
        outcome,
    })
}

/// A Pod CREATE, or a Service CREATE or UPDATE (never a subresource).
fn target<O>(request: &RequestIn<'_, O>) -> Target {
    let kind = match request.kind.as_ref() {
        Some(gvk) if gvk.group.is_empty() && gvk.version == "v1" => match gvk.kind.as_ref() {
            "Pod" => Kind::Pod,
            "Service" => Kind::Service,
            _ => Kind::Other,
        },
        _ => Kind::Other,
    };
    let is_subresource = request
        .sub_resource
        .as_deref()
        .is_some_and(|s| !s.is_empty());
    match (kind, request.operation.as_deref(), is_subresource) {
        (Kind::Pod, Some("CREATE"), false) => Target::Pod,
        (Kind::Service, Some("CREATE" | "UPDATE"), false) => Target::Service,
        _ => Target::None(kind),
    }
}

fn review_object(
    object: &Object<'_>,
    namespace: &str,
    mode: Mode,
    config: &Config,
    mesh: &MeshState,
    response: &mut ResponseOut<'_>,
) -> Outcome {
    let (kind, name) = match object {
        Object::Pod(pod) => (Kind::Pod, pod.display_name()),
        Object::Service(service) => (Kind::Service, service.display_name()),
    };
    fail_open(kind, &name, namespace, response, |response| match object {
        Object::Pod(pod) => pod::review(pod, namespace, mode, config, mesh, response),
        Object::Service(service) => service::review(service, namespace, mode, config, response),
    })
}

/// Runs `respond`. A panic in it is a bug of ours, and must not block the object's creation:
/// it is then allowed unchanged, whatever `respond` had written into the response.
fn fail_open<'a>(
    kind: Kind,
    name: &str,
    namespace: &str,
    response: &mut ResponseOut<'a>,
    respond: impl FnOnce(&mut ResponseOut<'a>) -> Outcome,
) -> Outcome {
    // Nothing shared is mutated while deciding (the config is read-only), so no state outlives
    // the panic but `response`, which is reset.
    match panic::catch_unwind(AssertUnwindSafe(|| respond(response))) {
        Ok(outcome) => outcome,
        Err(payload) => {
            *response = ResponseOut::allowed(response.uid);
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or_default();
            tracing::error!(
                namespace,
                kind = kind.as_str(),
                name,
                panic = message,
                "deciding on the object panicked; allowing it unchanged"
            );
            Outcome::InternalError
        }
    }
}

/// What one decision on an object was, for its log line.
struct Decided<'a> {
    kind: Kind,
    name: &'a str,
    /// The ports the answer is about, as a list.
    ports: &'a str,
    outcome: Outcome,
    reason: &'a str,
    warnings: &'a [String],
}

impl Decided<'_> {
    /// The one log line per decision on an object.
    fn log(&self, namespace: &str, mode: Mode) {
        // What the answer warns about (FTP passive ports, values left alone) is in the log too.
        let warnings = self.warnings.join("; ");
        tracing::info!(
            namespace,
            kind = self.kind.as_str(),
            name = self.name,
            ports = self.ports,
            action = self.outcome.as_str(),
            mode = mode.as_str(),
            reason = self.reason,
            warnings,
            "admission decision"
        );
    }
}

/// `serverfirst: <text>`, cut to the length Kubernetes keeps.
fn warning(text: &str) -> String {
    let mut warning = format!("serverfirst: {text}");
    if warning.len() > MAX_WARNING_LEN {
        let mut cut = MAX_WARNING_LEN - '…'.len_utf8();
        while !warning.is_char_boundary(cut) {
            cut -= 1;
        }
        warning.truncate(cut);
        warning.push('…');
    }
    warning
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn review_json(body: &Value, mode: Mode) -> (Value, Outcome) {
        let reviewed = review(
            &serde_json::to_vec(body).unwrap(),
            mode,
            &Config::default(),
            &MeshState::default(),
        )
        .unwrap();
        (
            serde_json::from_slice(&reviewed.body).unwrap(),
            reviewed.outcome,
        )
    }

    fn pod_review(object: Value) -> Value {
        json!({"apiVersion": API_VERSION, "kind": KIND, "request": {
            "uid": "0df28fbd-5f5f-11e8-bc74-36e6bb280816",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE", "namespace": "mail", "object": object}})
    }

    fn smtp_pod() -> Value {
        json!({"metadata": {"generateName": "mox-"}, "spec": {"containers": [{"name": "mox", "ports": [{"containerPort": 587}]}]}})
    }

    #[test]
    fn a_panic_while_deciding_allows_the_pod_unchanged() {
        let mut response = ResponseOut::allowed("705ab4f5-6393-11e8-b7cc-42010a800002");
        let outcome = fail_open(Kind::Pod, "mox", "mail", &mut response, |response| {
            response.warnings.push(warning("half-written"));
            response.patch_type = Some("JSONPatch");
            response.patch = Some(BASE64.encode("[]"));
            panic!("a bug while deciding");
        });
        assert_eq!(outcome, Outcome::InternalError);
        assert_eq!(
            serde_json::to_value(&response).unwrap(),
            json!({"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": true})
        );

        let mut response = ResponseOut::allowed("705ab4f5-6393-11e8-b7cc-42010a800002");
        let outcome = fail_open(Kind::Service, "mox", "mail", &mut response, |_| {
            Outcome::NoPorts
        });
        assert_eq!(outcome, Outcome::NoPorts);
    }

    fn decoded_patch(response: &Value) -> Value {
        let patch = BASE64
            .decode(response["response"]["patch"].as_str().unwrap())
            .unwrap();
        serde_json::from_slice(&patch).unwrap()
    }

    #[test]
    fn enforce_returns_a_patch_and_echoes_the_uid() {
        let (response, outcome) = review_json(&pod_review(smtp_pod()), Mode::Enforce);
        assert_eq!(outcome, Outcome::Patched);
        assert_eq!(response["apiVersion"], API_VERSION);
        assert_eq!(response["kind"], KIND);
        assert_eq!(
            response["response"]["uid"],
            "0df28fbd-5f5f-11e8-bc74-36e6bb280816"
        );
        assert_eq!(response["response"]["allowed"], true);
        assert_eq!(response["response"]["patchType"], "JSONPatch");
        assert_eq!(
            decoded_patch(&response),
            json!([{"op": "add", "path": "/metadata/annotations", "value": {
            "traffic.sidecar.istio.io/excludeInboundPorts": "587", "serverfirst.dev/excluded-ports": "587"}}])
        );
        assert_eq!(
            response["response"]["auditAnnotations"]["excluded-inbound-ports"],
            "587"
        );
    }

    #[test]
    fn audit_never_patches_and_says_what_it_would_do() {
        let (response, outcome) = review_json(&pod_review(smtp_pod()), Mode::Audit);
        assert_eq!(outcome, Outcome::WouldPatch);
        assert!(response["response"].get("patch").is_none());
        assert!(response["response"].get("patchType").is_none());
        assert_eq!(
            response["response"]["warnings"][0],
            "serverfirst: would exclude inbound port 587 from sidecar capture"
        );
        assert_eq!(
            response["response"]["auditAnnotations"]["would-exclude-inbound-ports"],
            "587"
        );
    }

    #[test]
    fn no_patch_when_nothing_to_change() {
        for object in [
            json!({"spec": {"containers": [{"ports": [{"containerPort": 8080}]}]}}),
            json!({"metadata": {"annotations": {"traffic.sidecar.istio.io/excludeInboundPorts": "587"}},
                   "spec": {"containers": [{"ports": [{"containerPort": 587}]}]}}),
        ] {
            let (response, _) = review_json(&pod_review(object), Mode::Enforce);
            assert_eq!(
                response["response"],
                json!({"uid": "0df28fbd-5f5f-11e8-bc74-36e6bb280816", "allowed": true})
            );
        }
    }

    #[test]
    fn other_objects_and_operations_are_not_applicable() {
        let mut update = pod_review(smtp_pod());
        update["request"]["operation"] = json!("UPDATE");
        let mut deployment = pod_review(smtp_pod());
        deployment["request"]["kind"] =
            json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        let mut subresource = pod_review(smtp_pod());
        subresource["request"]["subResource"] = json!("ephemeralcontainers");
        for body in [update, deployment, subresource] {
            let (response, outcome) = review_json(&body, Mode::Enforce);
            assert_eq!(outcome, Outcome::NotApplicable);
            assert!(response["response"].get("patch").is_none());
        }
    }

    #[test]
    fn dry_run_gets_the_same_answer() {
        let mut dry_run = pod_review(smtp_pod());
        dry_run["request"]["dryRun"] = json!(true);
        assert_eq!(
            review_json(&dry_run, Mode::Enforce),
            review_json(&pod_review(smtp_pod()), Mode::Enforce)
        );
    }

    #[test]
    fn unreadable_objects_fail_open() {
        for object in [
            json!({"spec": {"containers": "nope"}}),
            Value::Null,
            json!(42),
        ] {
            let (response, outcome) = review_json(&pod_review(object.clone()), Mode::Enforce);
            assert_eq!(outcome, Outcome::InvalidObject, "{object}");
            assert_eq!(response["response"]["allowed"], true);
            assert!(response["response"].get("patch").is_none());
        }
    }

    #[test]
    fn bad_requests_are_errors_that_say_what_is_wrong() {
        let cases: [(&[u8], &str); 6] = [
            (b"not json", "not a valid AdmissionReview"),
            (br#"{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "x"}}"#, "apiVersion must be"),
            (br#"{"apiVersion": "admission.k8s.io/v1", "kind": "Pod", "request": {"uid": "x"}}"#, "kind must be"),
            (br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#, "no request"),
            (br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}"#, "uid is missing"),
            (br#"{"apiVersion": 1}"#, "not a valid AdmissionReview"),
        ];
        for (body, expected) in cases {
            let error = review(
                body,
                Mode::Enforce,
                &Config::default(),
                &MeshState::default(),
            )
            .unwrap_err()
            .to_string();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn one_pass_answers_as_two_passes_do() {
        let fixture: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/review-mail-deployment.json"
        ))
        .unwrap();
        let with = |pointer: &str, value: Value| {
            let mut review = fixture.clone();
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            let parent = review.pointer_mut(parent).unwrap().as_object_mut().unwrap();
            parent.insert(key.to_string(), value);
            serde_json::to_vec(&review).unwrap()
        };
        let fixture_bytes = serde_json::to_vec(&fixture).unwrap();
        // Arrays nested `depth` deep at `pointer`, around serde_json's recursion limit.
        let nested = |pointer: &str, depth: usize| {
            let body = String::from_utf8(with(pointer, json!("NESTED"))).unwrap();
            let value = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            body.replace("\"NESTED\"", &value).into_bytes()
        };
        let image = br#""r.xmox.nl/mox:v0.0.15""#;
        let bad_utf8_in = |needle: &[u8]| {
            let at = fixture_bytes
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap();
            let mut body = fixture_bytes.clone();
            body[at + 2] = 0xff;
            body
        };
        let mut bodies = vec![
            fixture_bytes.clone(),
            with("/request/object", Value::Null),
            with("/request/object", json!({"spec": {"containers": "nope"}})),
            with("/request/object", json!([1, 2])),
            with("/request/object/metadata/generateName", json!("mo\u{e9}x-\n\"")),
            with("/request/object/metadata/labels", json!({"serverfirst.dev/skip": "true"})),
            with("/request/object/spec/hostNetwork", json!("yes")),
            with("/request/kind/kind", json!("Deployment")),
            with("/request/operation", json!("UPDATE")),
            serde_json::to_vec(&service_review("CREATE", mail_service())).unwrap(),
            serde_json::to_vec(&service_review("UPDATE", json!({"spec": {"ports": [{"port": 587}]}}))).unwrap(),
            with("/request/uid", json!(7)),
            bad_utf8_in(image),
            bad_utf8_in(b"\"system:serviceaccounts\""),
            br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE", "object": {"metadata": {}, "metadata": {}}}}"#.to_vec(),
        ];
        for depth in 120..=128 {
            bodies.push(nested("/request/userInfo", depth));
            bodies.push(nested("/request/object/spec/volumes", depth));
            bodies.push(nested("/request/object/metadata/ownerReferences", depth));
        }
        let mut deployment = with("/request/kind/kind", json!("Deployment"));
        let at = deployment.iter().position(|&b| b == b'[').unwrap();
        deployment.insert(at + 1, 0xfe);
        bodies.push(deployment);
        for (index, body) in bodies.iter().enumerate() {
            for mode in [Mode::Enforce, Mode::Audit] {
                let (config, mesh) = (Config::default(), MeshState::default());
                let one = review(body, mode, &config, &mesh);
                let two = review_two_pass(body, mode, &config, &mesh);
                match (one, two) {
                    (Ok(one), Ok(two)) => {
                        assert_eq!((one.outcome, one.body), (two.outcome, two.body), "{index}")
                    }
                    (Err(one), Err(two)) => {
                        assert_eq!(one.to_string(), two.to_string(), "{index}")
                    }
                    (one, two) => panic!("body {index}: {one:?} but {two:?}"),
                }
            }
        }
    }

    #[test]
    fn ftp_passive_ports_are_named_in_the_answer() {
        let mut ports = vec![json!({"name": "ftp", "containerPort": 21})];
        ports.extend((30000..30004).map(|port| json!({"containerPort": port})));
        let ftp = json!({"metadata": {"name": "ftp"}, "spec": {"containers": [{"name": "vsftpd", "ports": ports}]}});
        for mode in [Mode::Enforce, Mode::Audit] {
            let (response, _) = review_json(&pod_review(ftp.clone()), mode);
            let warnings = response["response"]["warnings"].as_array().unwrap();
            assert!(
                warnings.iter().any(|w| w
                    == "serverfirst: FTP passive data ports 30000-30003 (container \"vsftpd\", beside FTP control port 21)"),
                "{mode:?}: {warnings:?}"
            );
        }
    }

    #[test]
    fn warnings_are_cut_to_kubernetes_limit() {
        let long = warning(&"é".repeat(200));
        assert!(long.len() <= MAX_WARNING_LEN);
        assert!(long.ends_with('…'));
        assert_eq!(warning("short"), "serverfirst: short");
    }
    fn service_review(operation: &str, object: Value) -> Value {
        json!({"apiVersion": API_VERSION, "kind": KIND, "request": {
            "uid": "3b6bc6e5-8c1a-4a7e-9d7c-2f4a1f0c7e11",
            "kind": {"group": "", "version": "v1", "kind": "Service"},
            "resource": {"group": "", "version": "v1", "resource": "services"},
            "operation": operation, "namespace": "mail", "object": object}})
    }

    fn mail_service() -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mox", "namespace": "mail"},
               "spec": {"selector": {"app": "mox"}, "ports": [
                   {"name": "http", "port": 80, "targetPort": 8080},
                   {"name": "submission", "port": 587, "targetPort": "submission"}]}})
    }

    #[test]
    fn services_get_their_ports_declared_on_create_and_update() {
        for operation in ["CREATE", "UPDATE"] {
            let (response, outcome) =
                review_json(&service_review(operation, mail_service()), Mode::Enforce);
            assert_eq!(outcome, Outcome::Patched, "{operation}");
            assert_eq!(
                decoded_patch(&response),
                json!([
                    {"op": "add", "path": "/metadata/annotations", "value": {"serverfirst.dev/declared-tcp-ports": "587"}},
                    {"op": "add", "path": "/spec/ports/1/appProtocol", "value": "tcp"}
                ]),
                "{operation}"
            );
            assert_eq!(
                response["response"]["auditAnnotations"],
                json!({"declared-tcp-ports": "587"})
            );
        }
        let reviewed = review(
            &serde_json::to_vec(&service_review("CREATE", mail_service())).unwrap(),
            Mode::Enforce,
            &Config::default(),
            &MeshState::default(),
        )
        .unwrap();
        assert_eq!(reviewed.kind, Kind::Service);
    }

    #[test]
    fn service_audit_warns_and_never_patches() {
        let mut service = mail_service();
        service["spec"]["ports"][0] = json!({"name": "imap", "port": 143, "appProtocol": "smtp"});
        let (response, outcome) = review_json(&service_review("CREATE", service), Mode::Audit);
        assert_eq!(outcome, Outcome::WouldPatch);
        assert!(response["response"].get("patch").is_none());
        assert_eq!(
            response["response"]["warnings"],
            json!([
                "serverfirst: would declare Service port 587 as TCP",
                "serverfirst: port 143 (imap): Istio does not know appProtocol \"smtp\" and sniffs it; set tcp"
            ])
        );
        assert_eq!(
            response["response"]["auditAnnotations"],
            json!({"would-declare-tcp-ports": "587"})
        );
    }

    #[test]
    fn services_not_reviewed_or_left_alone() {
        let mut delete = service_review("DELETE", mail_service());
        delete["request"]["object"] = Value::Null;
        let mut status = service_review("UPDATE", mail_service());
        status["request"]["subResource"] = json!("status");
        for body in [delete, status] {
            assert_eq!(review_json(&body, Mode::Enforce).1, Outcome::NotApplicable);
        }
        let mut skipped = mail_service();
        skipped["metadata"]["annotations"] = json!({"serverfirst.dev/skip": "true"});
        let (response, outcome) = review_json(&service_review("UPDATE", skipped), Mode::Enforce);
        assert_eq!(outcome, Outcome::Skipped);
        assert!(response["response"].get("patch").is_none());
        let (_, outcome) = review_json(
            &service_review("CREATE", json!({"spec": {"ports": "x"}})),
            Mode::Enforce,
        );
        assert_eq!(outcome, Outcome::InvalidObject);
    }

    #[test]
    fn kinds_are_told_apart() {
        let kind_of = |body: &Value| {
            review(
                &serde_json::to_vec(body).unwrap(),
                Mode::Enforce,
                &Config::default(),
                &MeshState::default(),
            )
            .unwrap()
            .kind
        };
        assert_eq!(kind_of(&pod_review(smtp_pod())), Kind::Pod);
        let mut update = pod_review(smtp_pod());
        update["request"]["operation"] = json!("UPDATE");
        assert_eq!(kind_of(&update), Kind::Pod);
        let mut deployment = pod_review(smtp_pod());
        deployment["request"]["kind"] =
            json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        assert_eq!(kind_of(&deployment), Kind::Other);
    }
}
