//! Istio ambient waypoints, the one place ambient mode sniffs, and which objects use them.
//!
//! A waypoint is a `gateway.networking.k8s.io` Gateway of class `istio-waypoint`; the traffic it
//! takes is its `istio.io/waypoint-for` label, `service` when absent (istio/istio
//! `pilot/pkg/serviceregistry/ambient/waypoints.go`, `gatewayToWaypointTransform`). An object
//! uses the waypoint its own `istio.io/use-waypoint` label names, else the one its namespace's
//! label names; `none` on the object opts out (`fetchWaypointForTarget`, `GetUseWaypoint`), with
//! `istio.io/use-waypoint-namespace` for a waypoint in another namespace. A Service uses only a
//! `service` or `all` waypoint (`fetchWaypointForService`), a pod only a `workload` or `all` one
//! (`fetchWaypointForWorkload`).
//!
//! Its listener (`pilot/pkg/networking/core/listener_waypoint.go`, `buildWaypointInternal`)
//! gives a port with no declared protocol a TCP and an HTTP chain behind a protocol matcher and
//! keeps the HTTP inspector on it; it turns the inspector off only for declared ports, and only
//! when no workload is attached: a waypoint that carries workloads' traffic sniffs every port.

use serde::Deserialize;

use super::{LabelLookup, PolicyRef, Raw};

pub const WAYPOINT_CLASS: &str = "istio-waypoint";
pub const WAYPOINT_FOR: &str = "istio.io/waypoint-for";
pub const USE_WAYPOINT: &str = "istio.io/use-waypoint";
pub const USE_WAYPOINT_NAMESPACE: &str = "istio.io/use-waypoint-namespace";

/// The traffic a waypoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaypointFor {
    Service,
    Workload,
    All,
    None,
}

impl WaypointFor {
    fn parse(value: Option<&str>) -> WaypointFor {
        match value {
            Some("workload") => WaypointFor::Workload,
            Some("all") => WaypointFor::All,
            Some("none") => WaypointFor::None,
            // Istio's default, and what it falls back to for a value it does not know.
            _ => WaypointFor::Service,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WaypointFor::Service => "service",
            WaypointFor::Workload => "workload",
            WaypointFor::All => "all",
            WaypointFor::None => "none",
        }
    }

    fn takes_services(self) -> bool {
        matches!(self, WaypointFor::Service | WaypointFor::All)
    }

    fn takes_workloads(self) -> bool {
        matches!(self, WaypointFor::Workload | WaypointFor::All)
    }
}

/// One waypoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waypoint {
    pub gateway: PolicyRef,
    pub waypoint_for: WaypointFor,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    #[serde(default)]
    gateway_class_name: Option<String>,
}

impl Waypoint {
    /// Reads a Gateway; `Ok(None)` for one of another class.
    pub fn from_value(value: &serde_json::Value) -> Result<Option<Waypoint>, String> {
        let raw = Raw::<RawSpec>::read(value)?;
        if raw.spec.gateway_class_name.as_deref() != Some(WAYPOINT_CLASS) {
            return Ok(None);
        }
        let waypoint_for = raw
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(WAYPOINT_FOR))
            .map(String::as_str);
        Ok(Some(Waypoint {
            gateway: raw.metadata.policy_ref(),
            waypoint_for: WaypointFor::parse(waypoint_for),
        }))
    }
}

/// The waypoint an object in `namespace` names, by its own label or else its namespace's:
/// `None` when neither names one or the object opts out.
pub fn named(
    object: &dyn LabelLookup,
    namespace: &str,
    namespace_labels: &dyn LabelLookup,
) -> Option<PolicyRef> {
    // `Some(None)`: the labels opt out; `None`: they say nothing.
    let from = |labels: &dyn LabelLookup| -> Option<Option<PolicyRef>> {
        let name = labels.label(USE_WAYPOINT)?;
        if name == "none" {
            return Some(None);
        }
        let in_namespace = labels.label(USE_WAYPOINT_NAMESPACE).unwrap_or(namespace);
        Some(Some(PolicyRef::new(in_namespace, name)))
    };
    match from(object) {
        Some(own) => own,
        None => from(namespace_labels).flatten(),
    }
}

/// Who sends traffic through a waypoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// Traffic to a Service (its VIP).
    Service,
    /// Traffic to a pod (its address).
    Workload,
}

/// The waypoint takes `client`'s traffic.
pub fn takes(waypoint: &Waypoint, client: Client) -> bool {
    match client {
        Client::Service => waypoint.waypoint_for.takes_services(),
        Client::Workload => waypoint.waypoint_for.takes_workloads(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh_state::Selector;
    use crate::mesh_state::labels;
    use serde_json::json;

    #[test]
    fn reads_waypoints_and_only_them() {
        let gateway = |class: &str, labels: serde_json::Value| {
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                   "metadata": {"namespace": "mail", "name": "waypoint", "labels": labels},
                   "spec": {"gatewayClassName": class, "listeners": [
                       {"name": "mesh", "port": 15008, "protocol": "HBONE"}]}})
        };
        let read = |value| {
            Waypoint::from_value(&value)
                .unwrap()
                .map(|w| w.waypoint_for)
        };
        assert_eq!(
            read(gateway(WAYPOINT_CLASS, json!({}))),
            Some(WaypointFor::Service)
        );
        assert_eq!(
            read(gateway(WAYPOINT_CLASS, json!({WAYPOINT_FOR: "workload"}))),
            Some(WaypointFor::Workload)
        );
        assert_eq!(
            read(gateway(WAYPOINT_CLASS, json!({WAYPOINT_FOR: "all"}))),
            Some(WaypointFor::All)
        );
        assert_eq!(read(gateway("istio", json!({}))), None);
    }

    /// `use-waypoint` on the object wins over its namespace's; `none` on the object opts out.
    #[test]
    fn which_waypoint_an_object_names() {
        let namespace = labels(&[(USE_WAYPOINT, "mail-waypoint")]);
        let cases: Vec<(&str, Selector, Selector, Option<PolicyRef>)> = vec![
            (
                "namespace's",
                labels(&[]),
                namespace.clone(),
                Some(PolicyRef::new("mail", "mail-waypoint")),
            ),
            (
                "object's own wins",
                labels(&[(USE_WAYPOINT, "mox-waypoint")]),
                namespace.clone(),
                Some(PolicyRef::new("mail", "mox-waypoint")),
            ),
            (
                "object opts out",
                labels(&[(USE_WAYPOINT, "none")]),
                namespace.clone(),
                None,
            ),
            (
                "namespace none",
                labels(&[]),
                labels(&[(USE_WAYPOINT, "none")]),
                None,
            ),
            ("neither", labels(&[]), labels(&[]), None),
            (
                "in another namespace",
                labels(&[
                    (USE_WAYPOINT, "shared"),
                    (USE_WAYPOINT_NAMESPACE, "istio-waypoints"),
                ]),
                labels(&[]),
                Some(PolicyRef::new("istio-waypoints", "shared")),
            ),
        ];
        for (what, object, namespace_labels, expected) in cases {
            assert_eq!(
                named(&object, "mail", &namespace_labels),
                expected,
                "{what}"
            );
        }
    }

    #[test]
    fn services_use_service_waypoints_and_pods_workload_ones() {
        let waypoint = |waypoint_for| Waypoint {
            gateway: PolicyRef::new("mail", "w"),
            waypoint_for,
        };
        use WaypointFor::*;
        for (kind, service, workload) in [
            (Service, true, false),
            (Workload, false, true),
            (All, true, true),
            (None, false, false),
        ] {
            assert_eq!(takes(&waypoint(kind), Client::Service), service, "{kind:?}");
            assert_eq!(
                takes(&waypoint(kind), Client::Workload),
                workload,
                "{kind:?}"
            );
        }
    }
}
