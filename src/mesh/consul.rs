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

/// Consul reads both annotations with Go's `strconv.ParseBool` (consul-k8s control-plane/
/// connect-inject/webhook/mesh_webhook.go, `shouldInject`; common/common.go,
/// `TransparentProxyEnabled`: the pod annotation before the namespace label).
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

pub fn skip_reason(pod: &PodView<'_>) -> Option<&'static str> {
    match pod.annotation(INJECT).map(parse_bool) {
        Some(Some(false)) => {
            return Some("Consul injection disabled (consul.hashicorp.com/connect-inject: false)");
        }
        // An unparsable value fails injection: no sidecar.
        Some(None) => {
            return Some(
                "Consul injection off (consul.hashicorp.com/connect-inject is not a boolean)",
            );
        }
        _ => {}
    }
    // Without transparent proxy nothing is redirected, so nothing is captured.
    (pod.annotation(TRANSPARENT_PROXY).map(parse_bool) == Some(Some(false)))
        .then_some("no Consul traffic redirection (consul.hashicorp.com/transparent-proxy: false)")
}

/// The pod asks for Consul's sidecar, or already has it.
pub fn injected(pod: &PodView<'_>) -> bool {
    pod.annotation(INJECT).and_then(parse_bool) == Some(true)
        || pod.has_container(&["consul-dataplane", "envoy-sidecar"])
}
