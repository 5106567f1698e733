//! Any bytes as an AdmissionReview: never a panic; a returned patch applies to the object it was
//! made for, and the patched object needs no further patch.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use serverfirst::admission::review;
use serverfirst::config::{Config, Mode};
use serverfirst::mesh_state::{MeshObject, MeshState};

/// Namespace `mail` STRICT, `web` behind an AuthorizationPolicy for `app: web`: reviews in those
/// namespaces keep ports in the mesh, others exclude them.
fn mesh_state() -> MeshState {
    let objects = [
        serde_json::json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"namespace": "mail", "name": "default"}, "spec": {"mtls": {"mode": "STRICT"}}}),
        serde_json::json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"namespace": "web", "name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}}}}),
    ];
    MeshState::new("istio-system", objects.iter().filter_map(|o| MeshObject::from_value(o)?.ok()))
}

fn patch_of(body: &[u8]) -> Option<json_patch::Patch> {
    let response: Value = serde_json::from_slice(body).expect("responses are JSON");
    let encoded = response["response"]["patch"].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).expect("base64 patch");
    Some(serde_json::from_slice(&bytes).expect("a JSON Patch"))
}

fuzz_target!(|data: &[u8]| {
    let config = Config::default();
    let mesh = mesh_state();
    let Ok(reviewed) = review(data, Mode::Enforce, &config, &mesh) else { return };
    let Some(patch) = patch_of(&reviewed.body) else { return };
    // The review skips fields it does not read without validating them, so accepted input may
    // still not be strict JSON (e.g. bad UTF-8 in an ignored string); such input has no object
    // to apply the patch to here.
    let Ok(mut request) = serde_json::from_slice::<Value>(data) else { return };
    let object = &mut request["request"]["object"];
    json_patch::patch(object, &patch).expect("the patch applies to the object");
    let again = serde_json::to_vec(&request).unwrap();
    let reviewed = review(&again, Mode::Enforce, &config, &mesh).expect("still a valid review");
    assert!(patch_of(&reviewed.body).is_none(), "second pass patched again");
});
