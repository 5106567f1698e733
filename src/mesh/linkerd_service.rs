//! Linkerd profile for Services: `config.linkerd.io/opaque-ports` on the Service, so that
//! meshed clients proxy a server-first port as TCP at once instead of waiting out protocol
//! detection.
//!
//! What Linkerd reads (linkerd/linkerd2, linkerd/linkerd2-proxy):
//! - The Service's annotation decides for clients: the destination controller
//!   (`controller/api/destination/watcher/opaque_ports_watcher.go`, `addService`,
//!   `getServiceOpaquePortsAnnotation`) and the policy controller
//!   (`policy-controller/k8s/index/src/outbound/index.rs`) read it; when it is absent they use
//!   the mesh default `proxy.opaquePorts` (`charts/linkerd-control-plane/values.yaml`:
//!   `25,587,3306,4444,5432,6379,9300,11211`), and when it is present it *replaces* that default.
//!   Elements are Service port numbers, ranges, or Service port names (`parseServiceOpaquePorts`).
//! - The pod's annotation decides for the server's own proxy: the policy controller
//!   (`policy-controller/k8s/index/src/inbound/workload.rs`, `Settings::from_metadata`) and the
//!   destination's endpoint hints (`endpoint_translator.go`, `createWeightedAddr`: opaque
//!   transport to the proxy's inbound port, with mTLS). On an opaque port the inbound proxy
//!   skips TLS and protocol detection and forwards at once (linkerd2-proxy
//!   `linkerd/app/inbound/src/detect.rs`, `push_detect_tls`: `NoServerTls::PortSkipped`), and a
//!   port in `skip-inbound-ports` gets no protocol hint at all, so no mTLS.
//! - Docs: <https://linkerd.io/2/features/protocol-detection/> ("Opaque ports are generally
//!   preferred as they allow Linkerd to provide mTLS, TCP-level metrics, policy").

use crate::mesh::exclusions::{self, Syntax};
use crate::mesh::service::{ServiceChange, ServiceMeshPlan};
use crate::ports::PortSet;
use crate::service::ServiceView;
use crate::service_ports::ServiceFinding;

pub const OPAQUE_PORTS: &str = "config.linkerd.io/opaque-ports";

/// `proxy.opaquePorts`, Linkerd's default opaque list (a mesh may configure another one).
pub const DEFAULT_OPAQUE_PORTS: [u16; 8] = [25, 587, 3306, 4444, 5432, 6379, 9300, 11211];

/// Plans the opaque-ports annotation that covers every server-first Service port, merged with
/// what the Service already has; written anew, it keeps the default ports the Service serves.
pub fn plan(service: &ServiceView<'_>, findings: &[ServiceFinding]) -> ServiceMeshPlan {
    let mut plan = ServiceMeshPlan::default();
    let wanted: PortSet = findings.iter().map(|f| f.port).collect();
    let existing = match service.annotation(OPAQUE_PORTS) {
        None => service
            .ports()
            .iter()
            .filter_map(|p| p.number())
            .filter(|p| DEFAULT_OPAQUE_PORTS.contains(p))
            .map(|p| (p, p))
            .collect(),
        Some(value) => {
            match exclusions::parse(&with_names_resolved(service, value), Syntax::PortsAndRanges) {
                Ok(existing) => existing,
                Err(error) => {
                    plan.warnings.push(format!(
                        "{OPAQUE_PORTS} left unchanged: {error} (Linkerd rejects such a value)"
                    ));
                    return plan;
                }
            }
        }
    };
    if let Some(value) = exclusions::merged(&existing, &wanted) {
        let covered = |port: u16| existing.iter().any(|&(s, e)| (s..=e).contains(&port));
        plan.declared = wanted.iter().copied().filter(|&p| !covered(p)).collect();
        plan.changes.push(ServiceChange::SetAnnotation {
            key: OPAQUE_PORTS.to_string(),
            value,
        });
    }
    plan
}

/// `value` with each Service port name replaced by its number, as Linkerd reads it (`isNamed`).
fn with_names_resolved(service: &ServiceView<'_>, value: &str) -> String {
    exclusions::with_names_resolved(value, |name| {
        service
            .ports()
            .iter()
            .find(|p| p.name() == name)
            .and_then(|p| p.number())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn plan_json(service: Value) -> ServiceMeshPlan {
        let bytes = serde_json::to_vec(&service).unwrap();
        let view = ServiceView::from_json(&bytes).unwrap();
        let config = crate::config::Config::default();
        let detection = crate::service_ports::detect_service(&view, &config).unwrap();
        plan(&view, &detection.findings)
    }

    fn opaque(plan: &ServiceMeshPlan) -> Option<&str> {
        plan.changes.iter().find_map(|change| match change {
            ServiceChange::SetAnnotation { key, value } if key == OPAQUE_PORTS => {
                Some(value.as_str())
            }
            _ => None,
        })
    }

    #[test]
    fn opaque_ports_table() {
        let ports = json!([{"name": "smtp", "port": 25}, {"name": "imap", "port": 143},
                           {"name": "http", "port": 80}, {"name": "pg", "port": 5432}]);
        // (annotations, written value, declared)
        let cases: Vec<(Value, Option<&str>, Vec<u16>)> = vec![
            // Absent: the defaults this Service serves stay opaque.
            (json!({}), Some("25,143,5432"), vec![143]),
            (json!({OPAQUE_PORTS: "25,143"}), None, vec![]),
            (
                json!({OPAQUE_PORTS: "100-200"}),
                Some("25,100-200"),
                vec![25],
            ),
            (json!({OPAQUE_PORTS: "imap, smtp"}), None, vec![]),
            (json!({OPAQUE_PORTS: ""}), Some("25,143"), vec![25, 143]),
        ];
        for (annotations, written, declared) in cases {
            let plan = plan_json(
                json!({"metadata": {"annotations": annotations}, "spec": {"ports": ports}}),
            );
            assert_eq!(opaque(&plan), written, "{annotations}");
            assert_eq!(
                plan.declared.iter().copied().collect::<Vec<_>>(),
                declared,
                "{annotations}"
            );
        }
    }

    #[test]
    fn defaults_cover_smtp_and_submission() {
        let plan = plan_json(
            json!({"spec": {"ports": [{"port": 25}, {"name": "submission", "port": 587}]}}),
        );
        assert!(plan.changes.is_empty());
    }

    #[test]
    fn an_invalid_value_is_left_with_a_warning() {
        let plan = plan_json(
            json!({"metadata": {"annotations": {OPAQUE_PORTS: "gopher"}},
                                    "spec": {"ports": [{"port": 143}]}}),
        );
        assert!(plan.changes.is_empty());
        assert!(plan.warnings[0].starts_with("config.linkerd.io/opaque-ports left unchanged"));
    }
}
