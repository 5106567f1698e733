//! Companion objects a user needs beside an exclusion. Under Istio auto-mTLS, meshed clients
//! keep sending mTLS to a port the server's sidecar no longer captures ("Does auto mTLS work
//! with excludeInboundPorts? No"), so each Service in front of an excluded port needs a
//! DestinationRule that turns TLS off for that port.
//!
//! This is the offline reading of manifests (a workload's pod template stands for its pods);
//! which ports need the rule and the rule itself come from [`crate::companions::desired`].

use std::collections::BTreeMap;

use serde_json::Value;

use crate::companions::desired;
use crate::ports::{PortSet, phrase};

/// A pod template whose inbound server-first ports serverfirst excludes or keeps.
#[derive(Debug, Clone)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Container port name → number, for Services that target ports by name.
    pub named_ports: BTreeMap<String, u16>,
    pub excluded: PortSet,
    /// Ports kept in the mesh, with why (`STRICT by mail/default`).
    pub kept: BTreeMap<u16, String>,
}

/// A Service: what it selects and which ports it forwards where.
#[derive(Debug, Clone)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub selector: BTreeMap<String, String>,
    /// (service port, target port: number or name; absent means the same number)
    pub ports: Vec<(u16, Option<Value>)>,
    /// `LoadBalancer` or `NodePort`: the Service is for clients outside the cluster too.
    pub outside_type: Option<String>,
}

impl Workload {
    /// The workload `object` whose pod `template` gets `excluded` taken out of capture and
    /// `kept` in the mesh.
    pub fn new(
        object: &Value,
        template: &Value,
        excluded: PortSet,
        kept: BTreeMap<u16, String>,
    ) -> Workload {
        let named_ports = template
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("ports")?.as_array())
            .flatten()
            .filter_map(|p| {
                Some((
                    p.get("name")?.as_str()?.to_string(),
                    u16::try_from(p.get("containerPort")?.as_u64()?).ok()?,
                ))
            })
            .collect();
        Workload {
            namespace: text(object.pointer("/metadata/namespace")),
            name: text(object.pointer("/metadata/name")),
            labels: string_map(template.pointer("/metadata/labels")),
            named_ports,
            excluded,
            kept,
        }
    }
}

impl Service {
    /// Reads a Service object; `None` for anything else or a Service without a selector.
    pub fn from_value(value: &Value) -> Option<Service> {
        (value.get("kind")?.as_str()? == "Service").then_some(())?;
        let selector = string_map(value.pointer("/spec/selector"));
        if selector.is_empty() {
            return None;
        }
        let ports = value
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map(|ports| {
                ports
                    .iter()
                    .filter(|p| {
                        p.get("protocol")
                            .and_then(Value::as_str)
                            .is_none_or(|proto| proto == "TCP")
                    })
                    .filter_map(|p| {
                        Some((
                            u16::try_from(p.get("port")?.as_u64()?).ok()?,
                            p.get("targetPort").cloned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let outside_type = value
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .filter(|kind| ["LoadBalancer", "NodePort"].contains(kind))
            .map(str::to_string);
        Some(Service {
            namespace: text(value.pointer("/metadata/namespace")),
            name: text(value.pointer("/metadata/name")),
            selector,
            ports,
            outside_type,
        })
    }

    /// This Service's ports with the workload behind each (when it selects it), resolved to the
    /// container port number they forward to.
    pub(crate) fn ports_to(&self, workload: &Workload) -> Vec<desired::ServicePort> {
        let selects = self.namespace == workload.namespace
            && self
                .selector
                .iter()
                .all(|(k, v)| workload.labels.get(k) == Some(v));
        self.ports
            .iter()
            .map(|(port, target)| {
                let target_port = match target {
                    None => Some(*port),
                    Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                    Some(Value::String(name)) => workload
                        .named_ports
                        .get(name)
                        .copied()
                        .or_else(|| name.parse().ok()),
                    Some(_) => None,
                };
                let backends = target_port
                    .filter(|_| selects)
                    // Ambient templates are not workloads here: they exclude nothing.
                    .map(|target| desired::Backend {
                        pod: workload.name.clone(),
                        target,
                        excluded: workload.excluded.clone(),
                        ambient: false,
                    });
                desired::ServicePort {
                    port: *port,
                    backends: backends.into_iter().collect(),
                }
            })
            .collect()
    }
}

fn text(value: Option<&Value>) -> String {
    value
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The string entries of a JSON object (labels, a selector); other values are left out.
fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// One DestinationRule per Service that forwards to an excluded port: TLS off on those ports.
pub fn destination_rules(workload: &Workload, services: &[Service]) -> Vec<Value> {
    services
        .iter()
        .filter_map(|service| {
            let ports = desired::exclusion(&service.ports_to(workload)).ports;
            let service = desired::ServiceRef {
                namespace: &service.namespace,
                name: &service.name,
            };
            (!ports.is_empty())
                .then(|| desired::destination_rule(desired::DEFAULT_API_VERSION, service, &ports))
        })
        .collect()
}

/// One line of advice for a DestinationRule.
pub fn advice(rule: &Value) -> String {
    let ports = rule
        .pointer("/spec/trafficPolicy/portLevelSettings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.pointer("/port/number")?.as_u64())
        .filter_map(|port| u16::try_from(port).ok());
    format!(
        "meshed clients need DestinationRule {} (host {}, tls.mode DISABLE on {}): Istio auto-mTLS does not know the port is excluded",
        text(rule.pointer("/metadata/name")),
        text(rule.pointer("/spec/host")),
        phrase(ports)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn workload() -> Workload {
        Workload {
            namespace: "mail".into(),
            name: "mox".into(),
            labels: BTreeMap::from([("app".into(), "mox".into()), ("tier".into(), "mail".into())]),
            named_ports: BTreeMap::from([("submission".into(), 587)]),
            excluded: [25, 587].into_iter().collect(),
            kept: BTreeMap::new(),
        }
    }

    #[test]
    fn one_rule_per_service_that_forwards_to_an_excluded_port() {
        let service = Service::from_value(&json!({"kind": "Service", "metadata": {"name": "mox", "namespace": "mail"},
            "spec": {"selector": {"app": "mox"}, "ports": [
                {"name": "smtp", "port": 25}, {"name": "sub", "port": 1587, "targetPort": "submission"},
                {"name": "https", "port": 443, "targetPort": 8443}, {"name": "dns", "port": 25, "protocol": "UDP"}]}}))
        .unwrap();
        let rules = destination_rules(&workload(), &[service]);
        assert_eq!(
            rules,
            [json!({
            "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "mox-serverfirst", "namespace": "mail"},
            "spec": {"host": "mox", "trafficPolicy": {"portLevelSettings": [
                {"port": {"number": 25}, "tls": {"mode": "DISABLE"}},
                {"port": {"number": 1587}, "tls": {"mode": "DISABLE"}}]}}})]
        );
        assert!(
            advice(&rules[0])
                .contains("mox-serverfirst (host mox, tls.mode DISABLE on ports 25,1587)")
        );
    }

    #[test]
    fn a_service_without_a_namespace_gets_a_rule_without_one() {
        let workload = Workload {
            namespace: String::new(),
            ..workload()
        };
        let service = Service::from_value(&json!({"kind": "Service", "metadata": {"name": "mox"},
            "spec": {"selector": {"app": "mox"}, "ports": [{"port": 25}]}}))
        .unwrap();
        let rules = destination_rules(&workload, &[service]);
        assert_eq!(rules[0]["metadata"], json!({"name": "mox-serverfirst"}));
        assert_eq!(rules[0]["spec"]["host"], "mox");
    }

    #[test]
    fn services_that_do_not_select_the_workload_get_nothing() {
        for spec in [
            json!({"selector": {"app": "web"}, "ports": [{"port": 25}]}),
            json!({"selector": {"app": "mox"}, "ports": [{"port": 80, "targetPort": 8080}]}),
        ] {
            let service = Service::from_value(&json!({"kind": "Service", "metadata": {"name": "s", "namespace": "mail"}, "spec": spec})).unwrap();
            assert!(destination_rules(&workload(), &[service]).is_empty());
        }
        let other_namespace = Service::from_value(
            &json!({"kind": "Service", "metadata": {"name": "s", "namespace": "web"},
            "spec": {"selector": {"app": "mox"}, "ports": [{"port": 25}]}}),
        )
        .unwrap();
        assert!(destination_rules(&workload(), &[other_namespace]).is_empty());
        assert!(
            Service::from_value(&json!({"kind": "Service", "spec": {"ports": [{"port": 25}]}}))
                .is_none(),
            "no selector"
        );
    }
}
