//! What a Service's meshed clients need (pure): the Service ports whose resolved target is
//! excluded from capture on a pod behind them, the DestinationRule that turns TLS off there, and
//! what stands in its way (someone else's rule for the same host, pods that still capture).
//!
//! Istio's auto mTLS picks mTLS per endpoint from the pod's `security.istio.io/tlsMode` label and
//! does not know about excluded ports (istio.io FAQ, "Does auto mTLS work with
//! excludeInboundPorts? No"), so a meshed client sends mTLS to a port that now expects plaintext.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use crate::detect::{SKIP_KEY, is_true};
use crate::ports::PortSet;

/// Label that marks a DestinationRule as serverfirst's own.
pub const MANAGED_BY_KEY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "serverfirst";
/// The DestinationRule API version written when nothing else is known (offline output).
pub const DEFAULT_API_VERSION: &str = "networking.istio.io/v1";

/// The name of the companion DestinationRule of Service `service`.
pub fn rule_name(service: &str) -> String {
    format!("{service}-serverfirst")
}

/// A Service by namespace and name (the namespace may be empty in offline manifests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
}

/// What the decision needs of a pod behind a Service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFacts {
    /// The inbound ports it records as excluded from its sidecar's capture.
    pub excluded: PortSet,
    /// Istio ambient: ztunnel captures every port and serves meshed clients with mTLS, whatever
    /// an old record says (crate::mesh_state::ambient).
    pub ambient: bool,
}

/// A pod behind a Service port: the number the port resolves to on it, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub pod: String,
    pub target: u16,
    pub excluded: PortSet,
    pub ambient: bool,
}

impl Backend {
    fn excludes_target(&self) -> bool {
        !self.ambient && self.excluded.contains(&self.target)
    }
}

/// One Service port and the pods behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub port: u16,
    pub backends: Vec<Backend>,
}

/// A port that some pods behind it exclude and others still capture: with a sidecar
/// (`capturing`) or as ambient pods (`ambient`, which a plaintext client reaches only under
/// PERMISSIVE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mixed {
    pub port: u16,
    pub capturing: Vec<String>,
    pub ambient: Vec<String>,
}

/// The Service ports that need `tls.mode: DISABLE`, and which of them are mixed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclusion {
    pub ports: Vec<u16>,
    pub mixed: Vec<Mixed>,
}

/// A port needs DISABLE as soon as one pod behind it excludes it: a DestinationRule applies to
/// every endpoint of the host, and the pods that still capture it accept plaintext too under
/// PERMISSIVE, while the excluded ones accept nothing else.
pub fn exclusion(ports: &[ServicePort]) -> Exclusion {
    let mut result = Exclusion::default();
    for port in ports {
        if !port.backends.iter().any(Backend::excludes_target) || result.ports.contains(&port.port)
        {
            continue;
        }
        result.ports.push(port.port);
        let others = |ambient: bool| {
            let mut pods: Vec<String> = port
                .backends
                .iter()
                .filter(|b| !b.excludes_target() && b.ambient == ambient)
                .map(|b| b.pod.clone())
                .collect();
            pods.sort();
            pods.dedup();
            pods
        };
        let (capturing, ambient) = (others(false), others(true));
        if !capturing.is_empty() || !ambient.is_empty() {
            result.mixed.push(Mixed {
                port: port.port,
                capturing,
                ambient,
            });
        }
    }
    result.ports.sort_unstable();
    result
}

/// The TCP ports of a Service with the pods its EndpointSlices list behind each, resolved to the
/// number the slice carries (the kube-controller-manager resolves a named `targetPort` per pod,
/// so this is right also when pods name the port differently). `facts_of(pod)` says what a pod
/// of the Service's namespace is.
pub fn service_ports<'s>(
    service: &Service,
    slices: impl IntoIterator<Item = &'s EndpointSlice> + Clone,
    facts_of: impl Fn(&str) -> PodFacts,
) -> Vec<ServicePort> {
    let ports = service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_ref())
        .into_iter()
        .flatten();
    ports
        .filter(|p| is_tcp(p.protocol.as_deref()))
        .filter_map(|port| {
            let number = u16::try_from(port.port).ok()?;
            let name = port.name.as_deref().unwrap_or_default();
            let mut backends: Vec<Backend> = Vec::new();
            for slice in slices.clone() {
                let Some(target) = slice
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| {
                        p.name.as_deref().unwrap_or_default() == name
                            && is_tcp(p.protocol.as_deref())
                    })
                    .and_then(|p| u16::try_from(p.port?).ok())
                else {
                    continue;
                };
                for endpoint in &slice.endpoints {
                    let Some(pod) = endpoint
                        .target_ref
                        .as_ref()
                        .filter(|r| r.kind.as_deref() == Some("Pod"))
                        .and_then(|r| r.name.as_deref())
                    else {
                        continue;
                    };
                    // Dual-stack Services list a pod in one slice per address family.
                    if !backends.iter().any(|b| b.pod == pod && b.target == target) {
                        let PodFacts { excluded, ambient } = facts_of(pod);
                        backends.push(Backend {
                            pod: pod.to_string(),
                            target,
                            excluded,
                            ambient,
                        });
                    }
                }
            }
            Some(ServicePort {
                port: number,
                backends,
            })
        })
        .collect()
}

fn is_tcp(protocol: Option<&str>) -> bool {
    protocol.is_none_or(|p| p == "TCP")
}

/// `serverfirst.dev/skip: "true"` as label or annotation on the Service: no companion for it.
pub fn service_skipped(service: &Service) -> bool {
    let meta = &service.metadata;
    [&meta.labels, &meta.annotations].into_iter().any(|map| {
        is_true(
            map.as_ref()
                .and_then(|m| m.get(SKIP_KEY))
                .map(String::as_str),
        )
    })
}

/// The DestinationRule with `tls.mode: DISABLE` on `ports` for `service`.
///
/// The short host resolves in the rule's own namespace, which is the Service's: no cluster
/// domain is assumed, and a Service without a namespace gets a rule without one, so that
/// `kubectl apply -n` or kustomize's `namespace:` place both together.
pub fn destination_rule(api_version: &str, service: ServiceRef<'_>, ports: &[u16]) -> Value {
    let settings: Vec<Value> = ports
        .iter()
        .map(|p| json!({"port": {"number": p}, "tls": {"mode": "DISABLE"}}))
        .collect();
    let mut metadata = json!({"name": rule_name(service.name)});
    if !service.namespace.is_empty() {
        metadata["namespace"] = json!(service.namespace);
    }
    json!({
        "apiVersion": api_version,
        "kind": "DestinationRule",
        "metadata": metadata,
        "spec": {
            "host": service.name,
            "trafficPolicy": {"portLevelSettings": settings}
        }
    })
}

/// The rule as the controller applies it: labelled as serverfirst's and owned by the Service,
/// so the garbage collector removes it with the Service.
pub fn owned_rule(api_version: &str, service: ServiceRef<'_>, uid: &str, ports: &[u16]) -> Value {
    let mut rule = destination_rule(api_version, service, ports);
    rule["metadata"]["labels"] = json!({MANAGED_BY_KEY: MANAGED_BY});
    rule["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "v1",
        "kind": "Service",
        "name": service.name,
        "uid": uid,
        "controller": true,
    }]);
    rule
}

/// A DestinationRule in the Service's namespace, as the decision needs it.
#[derive(Debug, Clone, Copy)]
pub struct RuleView<'a> {
    pub name: &'a str,
    pub labels: Option<&'a BTreeMap<String, String>>,
    /// The rule's `spec` (`Value::Null` when it has none).
    pub spec: &'a Value,
}

impl<'a> RuleView<'a> {
    pub fn host(&self) -> &'a str {
        self.spec
            .get("host")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// Carries serverfirst's label; only such rules are ever written or deleted.
    pub fn managed(&self) -> bool {
        self.labels
            .and_then(|l| l.get(MANAGED_BY_KEY))
            .is_some_and(|v| v == MANAGED_BY)
    }

    fn is_own(&self, service: ServiceRef<'_>) -> bool {
        self.managed() && self.name == rule_name(service.name)
    }

    /// Someone else's rule that competes with the companion: one for the same host, or an
    /// unlabelled one that has the companion's name.
    fn competes(&self, service: ServiceRef<'_>) -> bool {
        !self.is_own(service)
            && (names_service(self.host(), service) || self.name == rule_name(service.name))
    }

    /// The ports this rule sets to `tls.mode: DISABLE`, `None` when it disables TLS on all.
    fn disabled_ports(&self) -> Option<PortSet> {
        let policy = self.spec.get("trafficPolicy").unwrap_or(&Value::Null);
        if is_disable(policy) {
            return None;
        }
        Some(
            policy
                .get("portLevelSettings")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|s| is_disable(s))
                .filter_map(|s| u16::try_from(s.pointer("/port/number")?.as_u64()?).ok())
                .collect(),
        )
    }
}

fn is_disable(policy: &Value) -> bool {
    policy.pointer("/tls/mode").and_then(Value::as_str) == Some("DISABLE")
}

/// `host` names `service` from a rule in the Service's own namespace: `<svc>`, `<svc>.<ns>`,
/// `<svc>.<ns>.svc` or `<svc>.<ns>.svc.<cluster domain>`. Wildcards are not followed.
pub fn names_service(host: &str, service: ServiceRef<'_>) -> bool {
    let Some(rest) = host.strip_prefix(service.name) else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let Some(rest) = rest
        .strip_prefix('.')
        .and_then(|r| r.strip_prefix(service.namespace))
    else {
        return false;
    };
    match rest {
        "" | ".svc" => !service.namespace.is_empty(),
        _ => rest
            .strip_prefix(".svc.")
            .is_some_and(|domain| !domain.is_empty() && !service.namespace.is_empty()),
    }
}

/// The Service names that a rule in its namespace may concern: the companion's Service by the
/// rule's name, and the Service its host names (for re-checking when a rule changes).
pub fn services_of_rule<'r>(name: &'r str, host: &'r str, namespace: &str) -> Vec<&'r str> {
    let mut names = Vec::new();
    if let Some(service) = name.strip_suffix("-serverfirst").filter(|s| !s.is_empty()) {
        names.push(service);
    }
    let short = host.split('.').next().unwrap_or_default();
    if !short.is_empty()
        && short != "*"
        && names_service(
            host,
            ServiceRef {
                namespace,
                name: short,
            },
        )
        && !names.contains(&short)
    {
        names.push(short);
    }
    names
}

/// Someone else's rules for the Service's host, and the needed ports they do not disable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub foreign: Vec<String>,
    pub lacking: Vec<u16>,
}

/// What to do for one Service.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Desired {
    /// The rule to server-side apply (absent when the one in the cluster is already right).
    pub apply: Option<Value>,
    /// serverfirst's own rule to delete.
    pub delete: Option<String>,
    /// A foreign rule stands where the companion would; report it.
    pub conflict: Option<Conflict>,
    /// Ports the rule disables although some pods still capture them; report those pods.
    pub mixed: Vec<Mixed>,
}

/// Whether serverfirst looks after a Service's companion rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Its namespace is selected and it does not opt out: the rule follows its pods.
    Managed,
    /// It opts out (`serverfirst.dev/skip`): a rule serverfirst wrote goes.
    Skipped,
    /// Its namespace is not (or no longer) selected: a rule serverfirst wrote stays as it is.
    /// Its pods keep their exclusions until they are recreated, so their meshed clients still
    /// need it; the owner reference still removes it with the Service.
    Unselected,
}

/// The Service as the decision sees it.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub service: ServiceRef<'a>,
    pub uid: &'a str,
    pub scope: Scope,
}

/// Decides what to write for `subject`, given its `ports` and the DestinationRules of its
/// namespace.
pub fn desired(
    api_version: &str,
    subject: Subject<'_>,
    ports: &[ServicePort],
    rules: &[RuleView<'_>],
) -> Desired {
    let service = subject.service;
    let own = rules.iter().find(|r| r.is_own(service));
    let exclusion = match subject.scope {
        Scope::Managed => exclusion(ports),
        Scope::Skipped => Exclusion::default(),
        Scope::Unselected => return Desired::default(),
    };
    let foreign: Vec<&RuleView<'_>> = rules.iter().filter(|r| r.competes(service)).collect();
    let mut result = Desired {
        delete: own.map(|r| r.name.to_string()),
        ..Desired::default()
    };
    if exclusion.ports.is_empty() {
        return result;
    }
    if !foreign.is_empty() {
        let lacking: Vec<u16> = exclusion
            .ports
            .iter()
            .copied()
            .filter(|port| {
                foreign
                    .iter()
                    .any(|r| r.disabled_ports().is_some_and(|d| !d.contains(port)))
            })
            .collect();
        let mut names: Vec<String> = foreign.iter().map(|r| r.name.to_string()).collect();
        names.sort();
        result.conflict = (!lacking.is_empty()).then_some(Conflict {
            foreign: names,
            lacking,
        });
        return result;
    }
    let rule = owned_rule(api_version, service, subject.uid, &exclusion.ports);
    result.delete = None;
    result.apply = own.is_none_or(|r| *r.spec != rule["spec"]).then_some(rule);
    result.mixed = exclusion.mixed;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = DEFAULT_API_VERSION;

    fn service(name: &str, ports: Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "mail", "uid": format!("uid-{name}")},
            "spec": {"selector": {"app": "mox"}, "ports": ports}
        }))
        .unwrap()
    }

    /// An EndpointSlice of `service` with `ports` (name, number) and the pods behind it.
    fn slice(service: &str, ports: &[(&str, u16)], pods: &[&str]) -> EndpointSlice {
        let ports: Vec<Value> = ports
            .iter()
            .map(|(name, port)| json!({"name": name, "port": port, "protocol": "TCP"}))
            .collect();
        let endpoints: Vec<Value> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                json!({"addresses": [format!("10.0.0.{}", i + 1)],
                "targetRef": {"kind": "Pod", "namespace": "mail", "name": pod}})
            })
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": format!("{service}-abcde"), "namespace": "mail",
                "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": ports, "endpoints": endpoints
        }))
        .unwrap()
    }

    /// Pods `mox-a` and `mox-b` exclude 25 and 587; `web` excludes nothing; `ztunnel-a` is an
    /// ambient pod whose old record says 25 and 587.
    fn excluded_of(pod: &str) -> PodFacts {
        let excluded = match pod {
            "mox-a" | "mox-b" | "ztunnel-a" => [25, 587].into_iter().collect(),
            _ => PortSet::new(),
        };
        PodFacts {
            excluded,
            ambient: pod.starts_with("ztunnel"),
        }
    }

    fn subject(service: &Service) -> Subject<'_> {
        Subject {
            service: ServiceRef {
                namespace: "mail",
                name: service.metadata.name.as_deref().unwrap(),
            },
            uid: service.metadata.uid.as_deref().unwrap(),
            scope: Scope::Managed,
        }
    }

    fn decide(service: &Service, slices: &[EndpointSlice], rules: &[RuleView<'_>]) -> Desired {
        let ports = service_ports(service, slices, excluded_of);
        desired(V1, subject(service), &ports, rules)
    }

    fn applied_ports(desired: &Desired) -> Vec<u64> {
        let rule = desired.apply.as_ref().expect("a rule to apply");
        rule["spec"]["trafficPolicy"]["portLevelSettings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                assert_eq!(s["tls"]["mode"], "DISABLE");
                s["port"]["number"].as_u64().unwrap()
            })
            .collect()
    }

    fn own_labels() -> BTreeMap<String, String> {
        BTreeMap::from([(MANAGED_BY_KEY.to_string(), MANAGED_BY.to_string())])
    }

    #[test]
    fn named_and_numbered_target_ports_resolve_through_the_endpoint_slices() {
        // Service port 1587 targets the pod port named `submission`, 2525 targets 25 by number;
        // only the slice knows that `submission` is 587 on these pods.
        let svc = service(
            "mox",
            json!([{"name": "sub", "port": 1587, "targetPort": "submission"},
                   {"name": "relay", "port": 2525, "targetPort": 25},
                   {"name": "https", "port": 443, "targetPort": 8443}]),
        );
        let slices = [slice(
            "mox",
            &[("sub", 587), ("relay", 25), ("https", 8443)],
            &["mox-a"],
        )];
        let desired = decide(&svc, &slices, &[]);
        assert_eq!(applied_ports(&desired), [1587, 2525]);
        let rule = desired.apply.unwrap();
        assert_eq!(
            rule,
            json!({
                "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                "metadata": {"name": "mox-serverfirst", "namespace": "mail",
                    "labels": {"app.kubernetes.io/managed-by": "serverfirst"},
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "mox",
                        "uid": "uid-mox", "controller": true}]},
                "spec": {"host": "mox", "trafficPolicy": {"portLevelSettings": [
                    {"port": {"number": 1587}, "tls": {"mode": "DISABLE"}},
                    {"port": {"number": 2525}, "tls": {"mode": "DISABLE"}}]}}
            })
        );
        assert!(desired.mixed.is_empty() && desired.conflict.is_none());
    }

    #[test]
    fn a_named_target_port_that_resolves_elsewhere_is_not_excluded() {
        // The same Service definition, but these pods give `submission` the number 2587.
        let svc = service(
            "mox",
            json!([{"name": "sub", "port": 1587, "targetPort": "submission"}]),
        );
        let slices = [slice("mox", &[("sub", 2587)], &["mox-a"])];
        assert_eq!(decide(&svc, &slices, &[]), Desired::default());
    }

    #[test]
    fn every_service_that_selects_the_pod_gets_its_own_rule() {
        let (smtp, submission) = (
            service("smtp", json!([{"name": "smtp", "port": 25}])),
            service("submission", json!([{"port": 587}])),
        );
        let smtp_desired = decide(&smtp, &[slice("smtp", &[("smtp", 25)], &["mox-a"])], &[]);
        let submission_desired = decide(
            &submission,
            &[slice("submission", &[("", 587)], &["mox-a"])],
            &[],
        );
        assert_eq!(applied_ports(&smtp_desired), [25]);
        assert_eq!(applied_ports(&submission_desired), [587]);
        assert_eq!(
            submission_desired.apply.unwrap()["metadata"]["name"],
            "submission-serverfirst"
        );
    }

    #[test]
    fn a_pod_no_service_selects_gets_no_rule() {
        // mox-a excludes 25, but the only Service's slices list another pod.
        let svc = service("web", json!([{"port": 25}]));
        let ports = service_ports(&svc, &[slice("web", &[("", 25)], &["web"])], excluded_of);
        assert_eq!(ports[0].backends[0].pod, "web");
        assert_eq!(desired(V1, subject(&svc), &ports, &[]), Desired::default());
        // A Service without endpoints has nobody behind it either.
        assert_eq!(decide(&svc, &[], &[]), Desired::default());
    }

    #[test]
    fn partly_excluded_ports_are_disabled_and_the_capturing_pods_named() {
        let svc = service(
            "mox",
            json!([{"name": "smtp", "port": 25}, {"name": "http", "port": 80}]),
        );
        // Mid-rollout: mox-a excludes 25, web (an old pod) does not; and dual-stack lists
        // mox-a twice.
        let slices = [
            slice("mox", &[("smtp", 25), ("http", 80)], &["mox-a", "web"]),
            slice("mox", &[("smtp", 25), ("http", 80)], &["mox-a"]),
        ];
        let desired = decide(&svc, &slices, &[]);
        assert_eq!(applied_ports(&desired), [25]);
        assert_eq!(
            desired.mixed,
            [Mixed {
                port: 25,
                capturing: vec!["web".into()],
                ambient: vec![],
            }]
        );
    }

    /// Ambient pods' ports are ztunnel's: no rule for a port only they serve, whatever an old
    /// record says; beside a pod that excludes it, the rule is written and they are named.
    #[test]
    fn ambient_pods_get_no_rule_and_are_named_beside_excluding_ones() {
        let svc = service("mox", json!([{"name": "smtp", "port": 25}]));
        let only_ambient = [slice("mox", &[("smtp", 25)], &["ztunnel-a"])];
        assert_eq!(decide(&svc, &only_ambient, &[]), Desired::default());
        let mixed = [slice("mox", &[("smtp", 25)], &["mox-a", "ztunnel-a"])];
        let desired = decide(&svc, &mixed, &[]);
        assert_eq!(applied_ports(&desired), [25]);
        assert_eq!(
            desired.mixed,
            [Mixed {
                port: 25,
                capturing: vec![],
                ambient: vec!["ztunnel-a".into()],
            }]
        );
    }

    #[test]
    fn a_foreign_rule_for_the_host_blocks_the_companion_and_is_reported() {
        let svc = service(
            "mox",
            json!([{"name": "smtp", "port": 25}, {"name": "sub", "port": 587}]),
        );
        let slices = [slice("mox", &[("smtp", 25), ("sub", 587)], &["mox-a"])];
        let spec = json!({"host": "mox.mail.svc.cluster.local", "trafficPolicy": {"portLevelSettings": [
            {"port": {"number": 587}, "tls": {"mode": "DISABLE"}}]}});
        let foreign = RuleView {
            name: "mox-tls",
            labels: None,
            spec: &spec,
        };
        let desired = decide(&svc, &slices, &[foreign]);
        assert_eq!(
            desired,
            Desired {
                conflict: Some(Conflict {
                    foreign: vec!["mox-tls".into()],
                    lacking: vec![25]
                }),
                ..Desired::default()
            }
        );
        // A foreign rule that already disables every needed port lacks nothing.
        let covering = json!({"host": "mox", "trafficPolicy": {"tls": {"mode": "DISABLE"}}});
        let covering = RuleView {
            name: "mox-plain",
            labels: None,
            spec: &covering,
        };
        assert_eq!(decide(&svc, &slices, &[covering]), Desired::default());
    }

    #[test]
    fn an_unlabelled_rule_with_the_companions_name_is_foreign() {
        let svc = service("mox", json!([{"port": 25}]));
        let slices = [slice("mox", &[("", 25)], &["mox-a"])];
        let spec = json!({"host": "elsewhere"});
        let squatter = RuleView {
            name: "mox-serverfirst",
            labels: None,
            spec: &spec,
        };
        let desired = decide(&svc, &slices, &[squatter]);
        assert_eq!(desired.apply, None);
        assert_eq!(
            desired.delete, None,
            "never delete a rule without the label"
        );
        assert_eq!(desired.conflict.unwrap().foreign, ["mox-serverfirst"]);
    }

    #[test]
    fn a_foreign_rule_appearing_after_ours_deletes_ours() {
        let svc = service("mox", json!([{"port": 25}]));
        let slices = [slice("mox", &[("", 25)], &["mox-a"])];
        let ours = decide(&svc, &slices, &[]).apply.unwrap();
        let labels = own_labels();
        let own = RuleView {
            name: "mox-serverfirst",
            labels: Some(&labels),
            spec: &ours["spec"],
        };
        assert_eq!(
            decide(&svc, &slices, &[own]),
            Desired::default(),
            "up to date: nothing"
        );

        let spec = json!({"host": "mox.mail"});
        let foreign = RuleView {
            name: "mox-lb",
            labels: None,
            spec: &spec,
        };
        let desired = decide(&svc, &slices, &[own, foreign]);
        assert_eq!(desired.apply, None);
        assert_eq!(desired.delete.as_deref(), Some("mox-serverfirst"));
        assert_eq!(
            desired.conflict,
            Some(Conflict {
                foreign: vec!["mox-lb".into()],
                lacking: vec![25]
            })
        );
    }

    #[test]
    fn a_changed_rule_is_applied_again_and_an_empty_or_skipped_one_deleted() {
        let svc = service(
            "mox",
            json!([{"name": "smtp", "port": 25}, {"name": "sub", "port": 587}]),
        );
        // Pods no longer serve 587: only 25 is left.
        let slices = [slice("mox", &[("smtp", 25)], &["mox-a"])];
        let stale = json!({"host": "mox", "trafficPolicy": {"portLevelSettings": [
            {"port": {"number": 25}, "tls": {"mode": "DISABLE"}}, {"port": {"number": 587}, "tls": {"mode": "DISABLE"}}]}});
        let labels = own_labels();
        let own = RuleView {
            name: "mox-serverfirst",
            labels: Some(&labels),
            spec: &stale,
        };
        assert_eq!(applied_ports(&decide(&svc, &slices, &[own])), [25]);

        let nobody_excludes = [slice("mox", &[("smtp", 25)], &["web"])];
        assert_eq!(
            desired_delete(&decide(&svc, &nobody_excludes, &[own])),
            Some("mox-serverfirst")
        );

        let ports = service_ports(&svc, &slices, excluded_of);
        let skipped = Subject {
            scope: Scope::Skipped,
            ..subject(&svc)
        };
        assert_eq!(
            desired_delete(&desired(V1, skipped, &ports, &[own])),
            Some("mox-serverfirst")
        );
    }

    #[test]
    fn an_unselected_namespace_keeps_the_rule_as_it_is() {
        // The pods still exclude 25 and 587 and the rule lacks 587: in scope it would be updated;
        // out of scope it is neither updated nor deleted, and nothing is reported.
        let svc = service(
            "mox",
            json!([{"name": "smtp", "port": 25}, {"name": "sub", "port": 587}]),
        );
        let slices = [slice(
            "mox",
            &[("smtp", 25), ("sub", 587)],
            &["mox-a", "web"],
        )];
        let stale = json!({"host": "mox", "trafficPolicy": {"portLevelSettings": [
            {"port": {"number": 25}, "tls": {"mode": "DISABLE"}}]}});
        let labels = own_labels();
        let own = RuleView {
            name: "mox-serverfirst",
            labels: Some(&labels),
            spec: &stale,
        };
        let ports = service_ports(&svc, &slices, excluded_of);
        let managed = desired(V1, subject(&svc), &ports, &[own]);
        assert_eq!(applied_ports(&managed), [25, 587]);
        assert!(!managed.mixed.is_empty());
        let unselected = Subject {
            scope: Scope::Unselected,
            ..subject(&svc)
        };
        assert_eq!(desired(V1, unselected, &ports, &[own]), Desired::default());
    }

    fn desired_delete(desired: &Desired) -> Option<&str> {
        assert!(desired.apply.is_none());
        desired.delete.as_deref()
    }

    #[test]
    fn hosts_that_name_the_service() {
        let mox = ServiceRef {
            namespace: "mail",
            name: "mox",
        };
        for host in [
            "mox",
            "mox.mail",
            "mox.mail.svc",
            "mox.mail.svc.cluster.local",
            "mox.mail.svc.corp",
        ] {
            assert!(names_service(host, mox), "{host}");
        }
        for host in [
            "moxy",
            "mox.web",
            "mox.mail.svc.",
            "mox.mailer",
            "*.mail.svc.cluster.local",
            "mox.mail.cluster",
            "",
        ] {
            assert!(!names_service(host, mox), "{host}");
        }
        assert_eq!(
            services_of_rule("mox-serverfirst", "relay.mail", "mail"),
            ["mox", "relay"]
        );
        assert_eq!(
            services_of_rule("x", "*.mail.svc.cluster.local", "mail"),
            Vec::<&str>::new()
        );
        assert_eq!(
            services_of_rule("x", "mox.other", "mail"),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn a_skipped_service_has_no_companion() {
        let mut svc = service("mox", json!([{"port": 25}]));
        assert!(!service_skipped(&svc));
        svc.metadata.annotations = Some(BTreeMap::from([(SKIP_KEY.into(), "true".into())]));
        assert!(service_skipped(&svc));
    }
}
