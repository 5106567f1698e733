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

pub fn skip_reason(pod: &PodView<'_>) -> Option<&'static str> {
    (pod.annotation(INJECT).map(str::trim) == Some("disabled"))
        .then_some("Linkerd injection disabled (linkerd.io/inject: disabled)")
}

/// The pod asks for Linkerd's proxy, or already has it.
pub fn injected(pod: &PodView<'_>) -> bool {
    matches!(
        pod.annotation(INJECT).map(str::trim),
        Some("enabled" | "ingress")
    ) || pod.annotation("linkerd.io/proxy-version").is_some()
        || pod.has_container(&["linkerd-proxy"])
}
