//! Planning for Services (pure): which protocol declarations change so that a mesh's *client*
//! sidecars stop sniffing a server-first port. The pods' half is [`super::decide`].

use crate::config::{Config, MeshSelection};
use crate::mesh::exclusions::{self, Syntax};
use crate::mesh::{Mesh, istio_service, kuma_service, linkerd_service};
use crate::mesh_state::Waypoint;
use crate::ports::{PortSet, phrase};
use crate::service::ServiceView;
use crate::service_ports::{ServiceDetection, ServiceFinding, detect_service};

/// Annotation serverfirst writes to record the Service ports it declared TCP (Istio
/// `appProtocol: tcp`, Linkerd opaque ports).
pub const DECLARED_KEY: &str = "serverfirst.dev/declared-tcp-ports";

/// One change to the Service, independent of how it is applied (JSON Patch, YAML rendering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceChange {
    /// Set annotation `key` to `value`, creating the annotations map when absent.
    SetAnnotation { key: String, value: String },
    /// Add `appProtocol: value` to `spec.ports[port]`, which has none.
    SetAppProtocol { port: usize, value: String },
}

/// A mesh profile's part of a Service plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceMeshPlan {
    pub changes: Vec<ServiceChange>,
    /// Service ports this plan declares TCP.
    pub declared: PortSet,
    pub warnings: Vec<String>,
}

/// What serverfirst would do with a Service that serves server-first ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePlan {
    pub findings: Vec<ServiceFinding>,
    /// Service ports declared TCP by this plan, ascending.
    pub declared: PortSet,
    /// Empty when the Service is already right.
    pub changes: Vec<ServiceChange>,
    pub warnings: Vec<String>,
}

/// The outcome of looking at one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceDecision {
    /// Left alone on purpose; the reason is for logs and reports.
    Skipped(&'static str),
    /// No server-first port.
    NoPorts,
    Planned(ServicePlan),
}

impl ServiceDecision {
    pub fn changes(&self) -> &[ServiceChange] {
        match self {
            ServiceDecision::Planned(plan) => &plan.changes,
            _ => &[],
        }
    }

    pub fn warnings(&self) -> &[String] {
        match self {
            ServiceDecision::Planned(plan) => &plan.warnings,
            _ => &[],
        }
    }
}

/// The meshes to plan for a Service. A Service carries no injection markers, so `auto` means
/// the fallback meshes.
pub fn meshes_for_service(selection: &MeshSelection) -> Vec<Mesh> {
    let mut meshes = selection.explicit.clone();
    if selection.auto {
        meshes.extend(&selection.auto_fallback);
    }
    meshes.sort_unstable();
    meshes.dedup();
    meshes
}

/// Detects and plans: the one function every entry point uses for a Service in `namespace`.
pub fn decide_service(
    service: &ServiceView<'_>,
    namespace: &str,
    config: &Config,
) -> ServiceDecision {
    if config.is_system_namespace(namespace) {
        return ServiceDecision::Skipped(super::SYSTEM_NAMESPACE);
    }
    let ServiceDetection { findings, warnings } = match detect_service(service, config) {
        Ok(detection) => detection,
        Err(skip) => return ServiceDecision::Skipped(skip.as_str()),
    };
    if findings.is_empty() {
        return ServiceDecision::NoPorts;
    }
    let mut plan = ServiceMeshPlan {
        warnings,
        ..ServiceMeshPlan::default()
    };
    for mesh in meshes_for_service(&config.meshes) {
        let part = match mesh {
            Mesh::Istio => istio_service::plan(service, &findings),
            Mesh::Linkerd => linkerd_service::plan(service, &findings),
            Mesh::Kuma => kuma_service::plan(service, &findings),
            // Consul has no protocol setting on the Kubernetes Service: the protocol is the
            // ServiceDefaults `spec.protocol` (or ProxyDefaults `config.protocol`), `tcp` unless
            // set, and its Envoy does not sniff (hashicorp/consul-k8s
            // `control-plane/api/v1alpha1/servicedefaults_types.go`, `Protocol`, valid
            // tcp/http/http2/grpc; connect-inject reads no appProtocol). Docs:
            // <https://developer.hashicorp.com/consul/docs/connect/config-entries/service-defaults>.
            Mesh::Consul => ServiceMeshPlan::default(),
        };
        plan.changes.extend(part.changes);
        plan.declared.extend(part.declared);
        plan.warnings.extend(part.warnings);
    }
    record_declared(service, &mut plan);
    ServiceDecision::Planned(ServicePlan {
        findings,
        declared: plan.declared,
        changes: plan.changes,
        warnings: plan.warnings,
    })
}

/// What a waypoint does to `undeclared` server-first ports of a Service whose traffic it carries,
/// and the ways out.
pub fn waypoint_sniffs(waypoint: &Waypoint, undeclared: &PortSet) -> String {
    format!(
        "traffic to Service {} passes waypoint {} (istio.io/waypoint-for: {}), which sniffs ports with no declared protocol: set appProtocol: tcp (serverfirst does when the Service is next created or updated), or set {}: none on the Service",
        phrase(undeclared.iter().copied()),
        waypoint.gateway,
        waypoint.waypoint_for.as_str(),
        crate::mesh_state::waypoint::USE_WAYPOINT
    )
}

/// Merges the declared ports into [`DECLARED_KEY`]; an unreadable value is replaced, since
/// only serverfirst writes it.
fn record_declared(service: &ServiceView<'_>, plan: &mut ServiceMeshPlan) {
    if plan.declared.is_empty() {
        return;
    }
    let existing = service.annotation(DECLARED_KEY).unwrap_or_default();
    let value = match exclusions::parse(existing, Syntax::Ports) {
        Ok(existing) => exclusions::merged(&existing, &plan.declared),
        Err(error) => {
            plan.warnings
                .push(format!("{DECLARED_KEY} rewritten: {error}"));
            exclusions::merged(&[], &plan.declared)
        }
    };
    if let Some(value) = value {
        plan.changes.push(ServiceChange::SetAnnotation {
            key: DECLARED_KEY.to_string(),
            value,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn decide_json(service: &Value) -> ServiceDecision {
        let bytes = serde_json::to_vec(service).unwrap();
        decide_service(
            &ServiceView::from_json(&bytes).unwrap(),
            "mail",
            &Config::default(),
        )
    }

    #[test]
    fn declares_and_records_sniffed_ports() {
        let service = json!({"metadata": {"name": "mox"}, "spec": {"ports": [
            {"name": "http", "port": 80},
            {"name": "submission", "port": 587},
            {"name": "imap", "port": 143, "targetPort": "imap"},
            {"name": "smtp", "port": 25}]}});
        assert_eq!(
            decide_json(&service).changes(),
            [
                ServiceChange::SetAppProtocol {
                    port: 1,
                    value: "tcp".into()
                },
                ServiceChange::SetAppProtocol {
                    port: 2,
                    value: "tcp".into()
                },
                ServiceChange::SetAnnotation {
                    key: DECLARED_KEY.into(),
                    value: "143,587".into()
                },
            ]
        );
    }

    #[test]
    fn merges_the_record_and_leaves_right_services_alone() {
        let service = json!({"metadata": {"annotations": {DECLARED_KEY: "587"}}, "spec": {"ports": [
            {"name": "submission", "port": 587, "appProtocol": "tcp"},
            {"name": "pop3", "port": 110}]}});
        assert_eq!(
            decide_json(&service).changes()[1],
            ServiceChange::SetAnnotation {
                key: DECLARED_KEY.into(),
                value: "110,587".into()
            }
        );
        let right = json!({"metadata": {"annotations": {DECLARED_KEY: "110,587"}}, "spec": {"ports": [
            {"name": "submission", "port": 587, "appProtocol": "tcp"},
            {"name": "tcp-pop3", "port": 110}]}});
        let decision = decide_json(&right);
        assert!(matches!(decision, ServiceDecision::Planned(_)));
        assert!(decision.changes().is_empty());
        let bad_record = json!({"metadata": {"annotations": {DECLARED_KEY: "x"}}, "spec": {"ports": [{"port": 110}]}});
        let decision = decide_json(&bad_record);
        assert_eq!(
            decision.changes()[1],
            ServiceChange::SetAnnotation {
                key: DECLARED_KEY.into(),
                value: "110".into()
            }
        );
        assert!(decision.warnings()[0].starts_with("serverfirst.dev/declared-tcp-ports rewritten"));
    }

    #[test]
    fn skipped_and_empty_services() {
        assert_eq!(
            decide_json(&json!({"spec": {"ports": [{"name": "http", "port": 80}]}})),
            ServiceDecision::NoPorts
        );
        assert!(matches!(
            decide_json(
                &json!({"metadata": {"labels": {"serverfirst.dev/skip": "true"}},
                                "spec": {"ports": [{"port": 587}]}})
            ),
            ServiceDecision::Skipped(_)
        ));
    }

    #[test]
    fn auto_plans_for_the_fallback_meshes() {
        let selection = MeshSelection {
            explicit: vec![Mesh::Kuma],
            auto: true,
            auto_fallback: vec![Mesh::Istio, Mesh::Kuma],
        };
        assert_eq!(meshes_for_service(&selection), [Mesh::Istio, Mesh::Kuma]);
    }
    /// The public vsftpd Service: 21 and its passive ports, declared each mesh's way, with the
    /// note naming the passive ports.
    #[test]
    fn ftp_passive_ports_are_declared_beside_the_control_port() {
        let service = json!({"metadata": {"name": "vsftpd"}, "spec": {"ports": [
            {"name": "ftp-control", "port": 21, "targetPort": 21},
            {"name": "pasv-start", "port": 21100, "targetPort": 21100},
            {"name": "pasv-1", "port": 21101, "targetPort": 21101}]}});
        let bytes = serde_json::to_vec(&service).unwrap();
        let view = ServiceView::from_json(&bytes).unwrap();
        let note =
            "FTP passive data ports 21100,21101 (Service \"vsftpd\", beside FTP control port 21)";
        let config = |mesh: Mesh| Config {
            meshes: MeshSelection {
                explicit: vec![mesh],
                auto: false,
                auto_fallback: vec![],
            },
            ..Config::default()
        };
        let record = ServiceChange::SetAnnotation {
            key: DECLARED_KEY.into(),
            value: "21,21100,21101".into(),
        };
        let tcp = |port: usize| ServiceChange::SetAppProtocol {
            port,
            value: "tcp".into(),
        };
        let istio = decide_service(&view, "ftp", &config(Mesh::Istio));
        assert_eq!(istio.changes(), [tcp(0), tcp(1), tcp(2), record.clone()]);
        assert_eq!(istio.warnings(), [note]);
        let linkerd = decide_service(&view, "ftp", &config(Mesh::Linkerd));
        assert_eq!(
            linkerd.changes(),
            [
                ServiceChange::SetAnnotation {
                    key: linkerd_service::OPAQUE_PORTS.into(),
                    value: "21,21100,21101".into()
                },
                record
            ]
        );
        // Kuma proxies every port as TCP unless told otherwise: nothing to write.
        let kuma = decide_service(&view, "ftp", &config(Mesh::Kuma));
        assert!(kuma.changes().is_empty());
        assert_eq!(kuma.warnings(), [note]);
    }

    #[test]
    fn each_mesh_declares_its_way() {
        let service = json!({"spec": {"ports": [{"name": "imap", "port": 143}, {"port": 25}]}});
        let bytes = serde_json::to_vec(&service).unwrap();
        let view = ServiceView::from_json(&bytes).unwrap();
        let config = |mesh: Mesh| Config {
            meshes: MeshSelection {
                explicit: vec![mesh],
                auto: false,
                auto_fallback: vec![],
            },
            ..Config::default()
        };
        let record = |value: &str| ServiceChange::SetAnnotation {
            key: DECLARED_KEY.into(),
            value: value.into(),
        };
        assert_eq!(
            decide_service(&view, "mail", &config(Mesh::Linkerd)).changes(),
            [
                ServiceChange::SetAnnotation {
                    key: linkerd_service::OPAQUE_PORTS.into(),
                    value: "25,143".into()
                },
                record("143"),
            ]
        );
        for mesh in [Mesh::Kuma, Mesh::Consul] {
            let decision = decide_service(&view, "mail", &config(mesh));
            assert!(matches!(decision, ServiceDecision::Planned(_)), "{mesh:?}");
            assert!(decision.changes().is_empty(), "{mesh:?}");
        }
    }
}
