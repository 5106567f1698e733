//! Kuma (and Kong Mesh) profile: `traffic.kuma.io/exclude-inbound-ports` /
//! `exclude-outbound-ports`, comma-separated ports.

use super::{AnnotationProfile, exclusions::Syntax};
use crate::pod::PodView;

pub const PROFILE: AnnotationProfile = AnnotationProfile {
    inbound_key: "traffic.kuma.io/exclude-inbound-ports",
    outbound_key: "traffic.kuma.io/exclude-outbound-ports",
    syntax: Syntax::Ports,
};

const INJECTION: &str = "kuma.io/sidecar-injection";

/// Kuma reads the pod's *label* (then the namespace's); the annotation of the same name is not
/// supported and only draws a deprecation warning (kuma pkg/plugins/runtime/k8s/webhooks/
/// injector/precheck.go, `needToInject`; metadata/annotations.go, `PodAnnotationDeprecations`,
/// `GetBooleanWithDefault`: true/yes/enabled, false/no/disabled, exactly).
fn injection_label(pod: &PodView<'_>) -> Option<bool> {
    match pod.label(INJECTION)? {
        "true" | "yes" | "enabled" => Some(true),
        "false" | "no" | "disabled" => Some(false),
        _ => None,
    }
}

pub fn skip_reason(pod: &PodView<'_>) -> Option<&'static str> {
    (injection_label(pod) == Some(false))
        .then_some("Kuma injection disabled (label kuma.io/sidecar-injection: disabled)")
}

/// The pod asks for Kuma's sidecar, or already has it.
pub fn injected(pod: &PodView<'_>) -> bool {
    injection_label(pod) == Some(true) || pod.has_container(&["kuma-sidecar"])
}
