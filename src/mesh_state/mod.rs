//! Mesh state: the cluster facts a decision needs that the object under review does not carry —
//! namespaces and their labels, PeerAuthentications, AuthorizationPolicies, ambient waypoints.
//!
//! Plain data with lookups, built by one function ([`MeshState::new`]) from objects that the
//! edges bring: `serve`'s reflectors, `audit`'s lists, the documents given to `check`/`render`.
//! [`MeshState::default`] means "no mesh policy known", under which every decision is the one
//! serverfirst made before it knew about policies.

pub mod ambient;
mod authorization;
mod peer_authentication;
pub mod waypoint;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;

use serde::Deserialize;

pub use authorization::{Action, AuthorizationPolicy};
pub use peer_authentication::{EffectiveMtls, MtlsMode, PeerAuthentication};
pub use waypoint::{Waypoint, WaypointFor};

use crate::pod::PodView;

/// The mesh state a long-running process keeps current: readers load a snapshot, the edge that
/// watches the cluster stores a new one.
pub type SharedMeshState = Arc<ArcSwap<MeshState>>;

/// The namespace labels a decision reads (ambient enrolment, sidecar injection, waypoints); a
/// namespace's other labels are not kept.
pub const NAMESPACE_LABELS: [&str; 5] = [
    ambient::DATAPLANE_MODE,
    ambient::INJECTION,
    ambient::REVISION,
    waypoint::USE_WAYPOINT,
    waypoint::USE_WAYPOINT_NAMESPACE,
];

/// Istio's default `meshConfig.rootNamespace`.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// A workload selector's `matchLabels`, or a namespace's labels.
pub type Selector = BTreeMap<String, String>;

/// Where a decision reads an object's labels from.
pub trait LabelLookup {
    fn label(&self, key: &str) -> Option<&str>;
}

impl LabelLookup for Selector {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl LabelLookup for PodView<'_> {
    fn label(&self, key: &str) -> Option<&str> {
        PodView::label(self, key)
    }
}

impl LabelLookup for crate::service::ServiceView<'_> {
    fn label(&self, key: &str) -> Option<&str> {
        crate::service::ServiceView::label(self, key)
    }
}

/// Labels from `key, value` pairs, for tests.
#[cfg(test)]
pub(crate) fn labels(pairs: &[(&str, &str)]) -> Selector {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every `key: value` of `selector` is among `labels` (Istio's `labels.Instance.SubsetOf`).
pub fn selects(selector: &Selector, labels: &dyn LabelLookup) -> bool {
    selector
        .iter()
        .all(|(key, value)| labels.label(key) == Some(value.as_str()))
}

/// A policy by namespace and name, written `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyRef {
    pub namespace: String,
    pub name: String,
}

impl PolicyRef {
    pub fn new(namespace: &str, name: &str) -> PolicyRef {
        PolicyRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.namespace.is_empty() {
            true => f.write_str(&self.name),
            false => write!(f, "{}/{}", self.namespace, self.name),
        }
    }
}

/// Why the mesh enforces identity on a port: only meshed clients with the right identity get
/// through, so taking the port out of the sidecar would open it to everyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enforcement {
    /// The effective PeerAuthentication mode is STRICT, set by this policy.
    Strict(PolicyRef),
    /// An ALLOW, DENY or CUSTOM AuthorizationPolicy applies to the pod's sidecar.
    Authorization(PolicyRef),
}

impl fmt::Display for Enforcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Enforcement::Strict(policy) => write!(f, "STRICT by {policy}"),
            Enforcement::Authorization(policy) => write!(f, "AuthorizationPolicy {policy}"),
        }
    }
}

/// The metadata every mesh-state object is read with.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ObjectMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    creation_timestamp: Option<String>,
    #[serde(default)]
    labels: Option<Selector>,
}

impl ObjectMeta {
    fn policy_ref(&self) -> PolicyRef {
        PolicyRef::new(
            self.namespace.as_deref().unwrap_or_default(),
            self.name.as_deref().unwrap_or_default(),
        )
    }
}

/// A mesh-state object as read: its metadata and its spec (`S`, the fields a kind needs).
#[derive(Deserialize)]
struct Raw<S> {
    metadata: ObjectMeta,
    #[serde(default)]
    spec: S,
}

impl<S: serde::de::DeserializeOwned + Default> Raw<S> {
    fn read(value: &serde_json::Value) -> Result<Raw<S>, String> {
        Raw::deserialize(value).map_err(|e| e.to_string())
    }
}

/// One object the mesh state is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshObject {
    Namespace { name: String, labels: Selector },
    PeerAuthentication(PeerAuthentication),
    AuthorizationPolicy(AuthorizationPolicy),
    Waypoint(Waypoint),
}

impl MeshObject {
    /// Reads `value` when it is of a kind the mesh state holds (`None` otherwise); the error
    /// names the object and says what is wrong with it.
    pub fn from_value(value: &serde_json::Value) -> Option<Result<MeshObject, String>> {
        let kind = value.get("kind")?.as_str()?;
        let api_version = value
            .get("apiVersion")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
        let object = match (group, kind) {
            ("", "Namespace") => ObjectMeta::deserialize(value.get("metadata")?)
                .map_err(|e| e.to_string())
                .map(|meta| MeshObject::Namespace {
                    name: meta.name.unwrap_or_default(),
                    labels: meta.labels.unwrap_or_default(),
                }),
            ("security.istio.io", "PeerAuthentication") => {
                PeerAuthentication::from_value(value).map(MeshObject::PeerAuthentication)
            }
            ("security.istio.io", "AuthorizationPolicy") => {
                AuthorizationPolicy::from_value(value).map(MeshObject::AuthorizationPolicy)
            }
            // Other Gateways are not the mesh's.
            ("gateway.networking.k8s.io", "Gateway") => match Waypoint::from_value(value) {
                Ok(None) => return None,
                Ok(Some(waypoint)) => Ok(MeshObject::Waypoint(waypoint)),
                Err(error) => Err(error),
            },
            _ => return None,
        };
        Some(object.map_err(|error| {
            let name = value
                .pointer("/metadata/name")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default();
            format!("{kind} {name:?}: {error}")
        }))
    }
}

/// The mesh facts decisions are made against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshState {
    root_namespace: String,
    namespaces: HashMap<String, Selector>,
    /// By namespace, oldest first (Istio's order).
    peer_authentications: HashMap<String, Vec<PeerAuthentication>>,
    /// By namespace, by name.
    authorization_policies: HashMap<String, Vec<AuthorizationPolicy>>,
    waypoints: HashMap<PolicyRef, Waypoint>,
}

impl Default for MeshState {
    fn default() -> Self {
        MeshState::new(DEFAULT_ROOT_NAMESPACE, [])
    }
}

/// How much a mesh state holds, for logs and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub namespaces: usize,
    pub peer_authentications: usize,
    pub authorization_policies: usize,
    pub waypoints: usize,
}

impl MeshState {
    /// The one function that turns objects into a mesh state. `root_namespace` is Istio's
    /// `meshConfig.rootNamespace` (configuration `istio.rootNamespace`).
    pub fn new(root_namespace: &str, objects: impl IntoIterator<Item = MeshObject>) -> MeshState {
        let mut state = MeshState {
            root_namespace: root_namespace.to_string(),
            namespaces: HashMap::new(),
            peer_authentications: HashMap::new(),
            authorization_policies: HashMap::new(),
            waypoints: HashMap::new(),
        };
        for object in objects {
            match object {
                MeshObject::Namespace { name, mut labels } => {
                    labels.retain(|key, _| NAMESPACE_LABELS.contains(&key.as_str()));
                    state.namespaces.insert(name, labels);
                }
                MeshObject::PeerAuthentication(policy) => state
                    .peer_authentications
                    .entry(policy.policy.namespace.clone())
                    .or_default()
                    .push(policy),
                MeshObject::AuthorizationPolicy(policy) => state
                    .authorization_policies
                    .entry(policy.policy.namespace.clone())
                    .or_default()
                    .push(policy),
                MeshObject::Waypoint(waypoint) => {
                    state.waypoints.insert(waypoint.gateway.clone(), waypoint);
                }
            }
        }
        for policies in state.peer_authentications.values_mut() {
            policies.sort_by(|a, b| a.age_order().cmp(&b.age_order()));
        }
        for policies in state.authorization_policies.values_mut() {
            policies.sort_by(|a, b| a.policy.cmp(&b.policy));
        }
        state
    }

    pub fn root_namespace(&self) -> &str {
        &self.root_namespace
    }

    pub fn counts(&self) -> Counts {
        Counts {
            namespaces: self.namespaces.len(),
            peer_authentications: self.peer_authentications.values().map(Vec::len).sum(),
            authorization_policies: self.authorization_policies.values().map(Vec::len).sum(),
            waypoints: self.waypoints.len(),
        }
    }

    /// The labels of `namespace`; none when it is not known.
    fn labels_of(&self, namespace: &str) -> &Selector {
        self.namespaces
            .get(namespace)
            .unwrap_or_else(|| ambient::no_labels())
    }

    /// istio-cni captures `pod` of `namespace` for ztunnel ([`ambient`]).
    pub fn is_ambient(&self, namespace: &str, pod: &PodView<'_>) -> bool {
        ambient::is_ambient(&ambient::facts(pod), self.labels_of(namespace))
    }

    /// The waypoint that `client` traffic to an object (a pod or a Service with `labels`) of
    /// `namespace` passes, if any ([`waypoint`]).
    pub fn waypoint(
        &self,
        namespace: &str,
        labels: &dyn LabelLookup,
        client: waypoint::Client,
    ) -> Option<&Waypoint> {
        let named = waypoint::named(labels, namespace, self.labels_of(namespace))?;
        self.waypoints
            .get(&named)
            .filter(|waypoint| waypoint::takes(waypoint, client))
    }

    /// The labels of `namespace`, when it is known.
    pub fn namespace_labels(&self, namespace: &str) -> Option<&Selector> {
        self.namespaces.get(namespace)
    }

    /// What the mesh enforces on a workload with `labels` in `namespace`: its PeerAuthentications
    /// composed and its AuthorizationPolicies looked up once, read per port.
    pub fn enforcer(&self, namespace: &str, labels: &dyn LabelLookup) -> Enforcer<'_> {
        // Each level is read from one namespace's list, which is oldest first: no merge needed.
        let of = |ns: &str| self.peer_authentications.get(ns).into_iter().flatten();
        let root = (namespace != self.root_namespace).then(|| of(&self.root_namespace));
        let policies = of(namespace).chain(root.into_iter().flatten());
        Enforcer {
            peer_authentication: peer_authentication::compose(
                &self.root_namespace,
                namespace,
                labels,
                policies,
            ),
            authorization: self.enforcing_authorization(namespace, labels),
        }
    }

    /// The PeerAuthentication mode Istio's sidecar enforces on container `port` of a workload.
    pub fn effective_mtls(
        &self,
        namespace: &str,
        labels: &dyn LabelLookup,
        port: u16,
    ) -> EffectiveMtls {
        self.enforcer(namespace, labels)
            .peer_authentication
            .mode_for(port)
    }

    /// The first enforcing AuthorizationPolicy that attaches to the workload's sidecar: its own
    /// namespace's before the root namespace's, by name.
    pub fn enforcing_authorization(
        &self,
        namespace: &str,
        labels: &dyn LabelLookup,
    ) -> Option<&PolicyRef> {
        [namespace, self.root_namespace.as_str()]
            .into_iter()
            .filter_map(|ns| self.authorization_policies.get(ns))
            .flatten()
            .find(|p| p.action.enforces() && p.applies_to(&self.root_namespace, namespace, labels))
            .map(|p| &p.policy)
    }

    /// Why the mesh enforces identity on container `port` of a workload, if it does.
    pub fn enforcement(
        &self,
        namespace: &str,
        labels: &dyn LabelLookup,
        port: u16,
    ) -> Option<Enforcement> {
        self.enforcer(namespace, labels).enforcement(port)
    }
}

/// The mesh's policies on one workload ([`MeshState::enforcer`]).
#[derive(Debug, Clone, Copy)]
pub struct Enforcer<'m> {
    peer_authentication: peer_authentication::Composed<'m>,
    authorization: Option<&'m PolicyRef>,
}

impl Enforcer<'_> {
    /// Why the mesh enforces identity on container `port`, if it does: STRICT mTLS first, else
    /// an AuthorizationPolicy on the workload's sidecar.
    pub fn enforcement(&self, port: u16) -> Option<Enforcement> {
        if let (MtlsMode::Strict, Some(source)) = self.peer_authentication.decide(port) {
            return Some(Enforcement::Strict(source.clone()));
        }
        self.authorization
            .map(|policy| Enforcement::Authorization(policy.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn state(objects: &[Value]) -> MeshState {
        MeshState::new(
            DEFAULT_ROOT_NAMESPACE,
            objects
                .iter()
                .map(|o| MeshObject::from_value(o).unwrap().unwrap()),
        )
    }

    fn pa(namespace: &str, name: &str, spec: Value) -> Value {
        json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
               "metadata": {"namespace": namespace, "name": name}, "spec": spec})
    }

    fn ap(namespace: &str, name: &str, spec: Value) -> Value {
        json!({"apiVersion": "security.istio.io/v1beta1", "kind": "AuthorizationPolicy",
               "metadata": {"namespace": namespace, "name": name}, "spec": spec})
    }

    #[test]
    fn reads_the_kinds_it_holds_and_ignores_others() {
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "mail", "labels": {"istio-injection": "enabled"}}});
        assert_eq!(
            MeshObject::from_value(&namespace),
            Some(Ok(MeshObject::Namespace {
                name: "mail".into(),
                labels: [("istio-injection".to_string(), "enabled".to_string())].into()
            }))
        );
        for other in [
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}}),
            json!({"apiVersion": "other.io/v1", "kind": "PeerAuthentication"}),
            json!({"kind": 7}),
        ] {
            assert_eq!(MeshObject::from_value(&other), None, "{other}");
        }
        let bad = pa("mail", "broken", json!({"mtls": {"mode": "ON"}}));
        let error = MeshObject::from_value(&bad).unwrap().unwrap_err();
        assert!(
            error.starts_with("PeerAuthentication \"broken\": unknown mtls mode \"ON\""),
            "{error}"
        );
    }

    #[test]
    fn enforcement_prefers_strict_and_names_the_policy() {
        let mox: Selector = [("app".to_string(), "mox".to_string())].into();
        let state = state(&[
            pa("mail", "default", json!({"mtls": {"mode": "STRICT"}})),
            pa(
                "mail",
                "mox",
                json!({"selector": {"matchLabels": {"app": "mox"}}, "portLevelMtls": {"25": {"mode": "PERMISSIVE"}}}),
            ),
            ap(
                "mail",
                "allow-mailer",
                json!({"selector": {"matchLabels": {"app": "mox"}}}),
            ),
            ap("mail", "audit-all", json!({"action": "AUDIT"})),
        ]);
        assert_eq!(
            state.enforcement("mail", &mox, 587),
            Some(Enforcement::Strict(PolicyRef::new("mail", "default")))
        );
        assert_eq!(
            state.enforcement("mail", &mox, 25).map(|e| e.to_string()),
            Some("AuthorizationPolicy mail/allow-mailer".to_string())
        );
        let web: Selector = [("app".to_string(), "web".to_string())].into();
        assert_eq!(
            state.enforcement("mail", &web, 587).map(|e| e.to_string()),
            Some("STRICT by mail/default".to_string())
        );
        assert_eq!(state.enforcement("other", &mox, 587), None);
        assert_eq!(MeshState::default().enforcement("mail", &mox, 587), None);
    }

    #[test]
    fn the_root_namespace_is_configurable() {
        let mox = Selector::new();
        let objects = [pa(
            "mesh-root",
            "default",
            json!({"mtls": {"mode": "STRICT"}}),
        )];
        let configured = MeshState::new(
            "mesh-root",
            objects
                .iter()
                .map(|o| MeshObject::from_value(o).unwrap().unwrap()),
        );
        assert_eq!(
            configured.effective_mtls("mail", &mox, 25).mode,
            MtlsMode::Strict
        );
        // In istio-system's view, mesh-root is just another namespace.
        assert_eq!(
            state(&objects).effective_mtls("mail", &mox, 25).mode,
            MtlsMode::Permissive
        );
    }
}
