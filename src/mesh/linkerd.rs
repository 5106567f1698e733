//! Linkerd profile: `config.linkerd.io/skip-inbound-ports` / `skip-outbound-ports`, read by the
//! proxy injector when it renders linkerd-init (or by linkerd-cni). Lists take ports and ranges.
//!
//! Skipping, not `opaque-ports`: opaque ports keep the proxy (and mTLS) but only help meshed
//! clients; an unmeshed client (the internet through a load balancer) still waits out Linkerd's
//! 10 s protocol detection before the banner.

use super::{AnnotationProfile, exclusions::Syntax};
use crate::pod::PodView;

pub const PROFILE: AnnotationProfile = AnnotationProfile {
    inbound_key: "config.linkerd.io/skip-inbound-ports",
    outbound_key: "config.linkerd.io/skip-outbound-ports",
    syntax: Syntax::PortsAndRanges,
};

const INJECT: &str = "linkerd.io/inject";

/// Linkerd reads only the pod's annotation (no label), exactly: `enabled` and `ingress` inject,
/// `disabled` and any other non-empty value leave the pod without a proxy
/// (linkerd2 pkg/inject/report.go, `disabledByAnnotation`, `ValidInjectAnnotationValues`).
pub fn skip_reason(pod: &PodView<'_>) -> Option<&'static str> {
    match pod.annotation(INJECT) {
        None | Some("" | "enabled" | "ingress") => None,
        Some("disabled") => Some("Linkerd injection disabled (linkerd.io/inject: disabled)"),
        Some(_) => {
            Some("Linkerd injection off (linkerd.io/inject has a value Linkerd does not accept)")
        }
    }
}

/// The pod asks for Linkerd's proxy, or already has it.
pub fn injected(pod: &PodView<'_>) -> bool {
    matches!(pod.annotation(INJECT), Some("enabled" | "ingress"))
        || pod.annotation("linkerd.io/proxy-version").is_some()
        || pod.has_container(&["linkerd-proxy"])
}
