//! Consul profile: `consul.hashicorp.com/transparent-proxy-exclude-inbound-ports` /
//! `-exclude-outbound-ports`, comma-separated ports, applied in transparent-proxy mode.

use super::{AnnotationProfile, exclusions::Syntax};
use crate::pod::PodView;

pub const PROFILE: AnnotationProfile = AnnotationProfile {
    inbound_key: "consul.hashicorp.com/transparent-proxy-exclude-inbound-ports",
    outbound_key: "consul.hashicorp.com/transparent-proxy-exclude-outbound-ports",
    syntax: Syntax::Ports,
};

const INJECT: &str = "consul.hashicorp.com/connect-inject";
const TRANSPARENT_PROXY: &str = "consul.hashicorp.com/transparent-proxy";

pub fn skip_reason(pod: &PodView<'_>) -> Option<&'static str> {
    if pod.annotation(INJECT).map(str::trim) == Some("false") {
        return Some("Consul injection disabled (consul.hashicorp.com/connect-inject: false)");
    }
    // Without transparent proxy nothing is redirected, so nothing is captured.
    (pod.annotation(TRANSPARENT_PROXY).map(str::trim) == Some("false"))
        .then_some("no Consul traffic redirection (consul.hashicorp.com/transparent-proxy: false)")
}

/// The pod asks for Consul's sidecar, or already has it.
pub fn injected(pod: &PodView<'_>) -> bool {
    pod.annotation(INJECT).map(str::trim) == Some("true")
        || pod.has_container(&["consul-dataplane", "envoy-sidecar"])
}
