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

pub fn skip_reason(pod: &PodView<'_>) -> Option<&'static str> {
    let disabled = |value: Option<&str>| matches!(value.map(str::trim), Some("disabled" | "false"));
    (disabled(pod.label(INJECTION)) || disabled(pod.annotation(INJECTION)))
        .then_some("Kuma injection disabled (kuma.io/sidecar-injection: disabled)")
}

/// The pod asks for Kuma's sidecar, or already has it.
pub fn injected(pod: &PodView<'_>) -> bool {
    let enabled = |value: Option<&str>| matches!(value.map(str::trim), Some("enabled" | "true"));
    enabled(pod.label(INJECTION))
        || enabled(pod.annotation(INJECTION))
        || pod.has_container(&["kuma-sidecar"])
}
