//! Kuma profile for Services: nothing to write, since Kuma never sniffs; a server-first port
//! declared HTTP is warned about.
//!
//! Kuma takes a Service port's protocol from `appProtocol` when it is one Kuma knows, else from
//! the Service annotation `<port>.service.kuma.io/protocol`, else `tcp`
//! (kumahq/kuma `pkg/plugins/runtime/k8s/controllers/inbound_converter.go`, `ProtocolTagFor`;
//! known values in `pkg/core/metadata/protocol.go`, `ParseProtocol`; MeshService ports default
//! to `tcp` too, `meshservice_controller.go`). A `tcp` port is proxied as TCP at once by the
//! client's sidecar, so writing `<port>.service.kuma.io/protocol: tcp` would change nothing.
//! Docs: <https://kuma.io/docs/2.0.x/policies/protocol-support-in-kuma/>.

use crate::mesh::service::ServiceMeshPlan;
use crate::service::ServiceView;
use crate::service_ports::ServiceFinding;

/// `ParseProtocol`'s values.
const KNOWN: [&str; 6] = ["http", "http2", "tcp", "tls", "grpc", "mysql"];
const HTTP_BASED: [&str; 3] = ["http", "http2", "grpc"];

/// `ProtocolTagFor`: the protocol Kuma gives Service port `index`.
pub fn protocol_tag(service: &ServiceView<'_>, index: usize) -> String {
    let Some(port) = service.ports().get(index) else {
        return "tcp".to_string();
    };
    let known = |value: &str| KNOWN.contains(&value.to_ascii_lowercase().as_str());
    let from_app_protocol = port.app_protocol.as_deref().filter(|v| known(v));
    let from_annotation = || {
        let key = format!("{}.service.kuma.io/protocol", port.port.unwrap_or_default());
        service.annotation(&key).map(str::to_string)
    };
    let value = from_app_protocol
        .map(str::to_string)
        .or_else(from_annotation)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "tcp".to_string());
    value.to_lowercase()
}

/// Warns about server-first ports Kuma proxies as HTTP.
pub fn plan(service: &ServiceView<'_>, findings: &[ServiceFinding]) -> ServiceMeshPlan {
    let mut plan = ServiceMeshPlan::default();
    for finding in findings {
        let protocol = protocol_tag(service, finding.index);
        if HTTP_BASED.contains(&protocol.as_str()) {
            plan.warnings.push(format!(
                "port {} ({}): Kuma proxies it as {protocol}, the banner never arrives; use tcp",
                finding.port, finding.protocol
            ));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn protocol_tag_follows_kuma() {
        let service = json!({"metadata": {"annotations": {
            "587.service.kuma.io/protocol": "HTTP", "143.service.kuma.io/protocol": "http"}},
            "spec": {"ports": [
                {"port": 587},
                {"port": 143, "appProtocol": "tcp"},
                {"port": 110, "appProtocol": "pop3"},
                {"port": 21},
                {"port": 25, "appProtocol": "GRPC"}]}});
        let bytes = serde_json::to_vec(&service).unwrap();
        let view = ServiceView::from_json(&bytes).unwrap();
        let tags: Vec<String> = (0..5).map(|i| protocol_tag(&view, i)).collect();
        assert_eq!(tags, ["http", "tcp", "tcp", "tcp", "grpc"]);
        let config = crate::config::Config::default();
        let detection = crate::service_ports::detect_service(&view, &config).unwrap();
        let plan = plan(&view, &detection.findings);
        assert!(plan.changes.is_empty());
        assert_eq!(plan.warnings.len(), 2, "{:?}", plan.warnings);
        assert!(plan.warnings[0].starts_with("port 587 (submission): Kuma proxies it as http"));
        assert!(plan.warnings[1].starts_with("port 25 (smtp): Kuma proxies it as grpc"));
    }
}
