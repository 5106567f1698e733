//! Kept ports that a Service offers outside the cluster. A `LoadBalancer` or `NodePort` Service is
//! meant for clients outside the mesh, and where serverfirst keeps a port in the mesh (STRICT,
//! an AuthorizationPolicy) those clients are refused: say so, and name the two ways to let them
//! in. Used by `check` on manifests and by `audit` on the cluster.

use super::companions::{Service, Workload};
use crate::mesh::istio::mtls::MTLS_KEY;

/// The warning for `service` when it offers a port that `workload` keeps in the mesh.
pub fn outside_clients_refused(service: &Service, workload: &Workload) -> Option<String> {
    let kind = service.outside_type.as_deref()?;
    let kept: Vec<(u16, u16, &str)> = service
        .ports_to(workload)
        .into_iter()
        .flat_map(|port| {
            port.backends.into_iter().filter_map(move |backend| {
                let reason = workload.kept.get(&backend.target)?;
                Some((port.port, backend.target, reason.as_str()))
            })
        })
        .collect();
    let (port, target, reason) = kept.first()?;
    let more = match kept.len() {
        1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    Some(format!(
        "{kind} port {port}{more} reaches port {target} of {}, kept in the mesh ({reason}): clients outside the mesh are refused; to let them in, give that workload a PeerAuthentication with portLevelMtls {{{target}: PERMISSIVE}} (serverfirst then excludes the port) or set {MTLS_KEY}: exclude on its pods",
        workload.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn workload() -> Workload {
        Workload {
            namespace: "mail".into(),
            name: "mox".into(),
            labels: [("app".to_string(), "mox".to_string())].into(),
            named_ports: [("submission".to_string(), 587)].into(),
            excluded: Default::default(),
            kept: [(25, "STRICT by mail/default".to_string())].into(),
        }
    }

    fn service(kind: &str) -> Service {
        Service::from_value(&json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "mail", "namespace": "mail"},
            "spec": {"type": kind, "selector": {"app": "mox"}, "ports": [
                {"name": "smtp", "port": 2525, "targetPort": 25}, {"name": "http", "port": 80}]}}))
        .unwrap()
    }

    #[test]
    fn only_services_for_outside_clients_that_reach_a_kept_port() {
        let warning = outside_clients_refused(&service("LoadBalancer"), &workload()).unwrap();
        assert!(
            warning.starts_with(
                "LoadBalancer port 2525 reaches port 25 of mox, kept in the mesh (STRICT by mail/default): clients outside the mesh are refused"
            ),
            "{warning}"
        );
        assert!(
            warning.contains("portLevelMtls {25: PERMISSIVE}"),
            "{warning}"
        );
        assert!(outside_clients_refused(&service("NodePort"), &workload()).is_some());
        assert!(outside_clients_refused(&service("ClusterIP"), &workload()).is_none());
        let mut elsewhere = workload();
        elsewhere.namespace = "web".into();
        assert!(outside_clients_refused(&service("LoadBalancer"), &elsewhere).is_none());
        let mut excluded = workload();
        excluded.kept.clear();
        assert!(outside_clients_refused(&service("LoadBalancer"), &excluded).is_none());
    }
}
