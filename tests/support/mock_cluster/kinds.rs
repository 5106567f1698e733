//! The kinds the mock cluster serves, where their collections and objects live, and the
//! discovery documents that announce them, as kube-apiserver's unaggregated discovery answers
//! (k8s.io/apiserver pkg/endpoints/discovery: legacy.go for `/api`, root.go `rootAPIsHandler`
//! for `/apis`, version.go `APIVersionHandler` for each group version's `APIResourceList`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

pub const SERVICES: &str = "/api/v1/services";
pub const PODS: &str = "/api/v1/pods";
pub const NAMESPACES: &str = "/api/v1/namespaces";
pub const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
pub const RULES: &str = "/apis/networking.istio.io/v1/destinationrules";
pub const PEER_AUTHENTICATIONS: &str = "/apis/security.istio.io/v1/peerauthentications";
pub const AUTHORIZATION_POLICIES: &str = "/apis/security.istio.io/v1/authorizationpolicies";
pub const GATEWAYS: &str = "/apis/gateway.networking.k8s.io/v1/gateways";

/// A kind the mock cluster serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The collection across all namespaces: `<group version path>/<resource>`.
    pub path: &'static str,
    pub api_version: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

impl Kind {
    const fn new(path: &'static str, api_version: &'static str, kind: &'static str) -> Kind {
        Kind {
            path,
            api_version,
            kind,
            namespaced: true,
        }
    }

    /// `/api/v1` or `/apis/<group>/<version>`.
    pub fn group_version_path(&self) -> &'static str {
        self.path.rsplit_once('/').unwrap().0
    }

    /// The plural resource name, as in the path.
    pub fn resource(&self) -> &'static str {
        self.path.rsplit_once('/').unwrap().1
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// `""` for the core group.
    fn group(&self) -> &'static str {
        self.api_version
            .rsplit_once('/')
            .map_or("", |(group, _)| group)
    }
}

/// Every kind served.
pub const KINDS: [Kind; 8] = [
    Kind::new(SERVICES, "v1", "Service"),
    Kind::new(PODS, "v1", "Pod"),
    Kind {
        namespaced: false,
        ..Kind::new(NAMESPACES, "v1", "Namespace")
    },
    Kind::new(SLICES, "discovery.k8s.io/v1", "EndpointSlice"),
    Kind::new(RULES, "networking.istio.io/v1", "DestinationRule"),
    Kind::new(
        PEER_AUTHENTICATIONS,
        "security.istio.io/v1",
        "PeerAuthentication",
    ),
    Kind::new(
        AUTHORIZATION_POLICIES,
        "security.istio.io/v1",
        "AuthorizationPolicy",
    ),
    Kind::new(GATEWAYS, "gateway.networking.k8s.io/v1", "Gateway"),
];

/// The kind whose collection is `path` (across all namespaces).
pub fn kind_at(path: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.path == path)
}

/// The kind of `object`, by its `apiVersion` and `kind`; a test that stores anything else is
/// wrong, and told so.
pub fn kind_of(object: &Value) -> &'static Kind {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    KINDS
        .iter()
        .find(|k| k.api_version == api_version && k.kind == kind)
        .unwrap_or_else(|| panic!("the mock cluster does not serve {api_version} {kind}"))
}

/// A collection request: `<kind path>` (all namespaces) or
/// `<group version path>/namespaces/<namespace>/<resource>` (one).
pub fn collection(path: &str) -> Option<(&'static Kind, Option<String>)> {
    KINDS.iter().find_map(|kind| {
        if path == kind.path {
            return Some((kind, None));
        }
        let rest = path
            .strip_prefix(kind.group_version_path())?
            .strip_prefix("/namespaces/")?;
        let (namespace, resource) = rest.split_once('/')?;
        (kind.namespaced && resource == kind.resource() && !namespace.is_empty())
            .then(|| (kind, Some(namespace.to_string())))
    })
}

/// An object request: `<group version path>/namespaces/<namespace>/<resource>/<name>`, or
/// `<kind path>/<name>` for a cluster-scoped kind → (kind, namespace, name).
pub fn object(path: &str) -> Option<(&'static Kind, String, String)> {
    KINDS.iter().find_map(|kind| {
        let rest = path
            .strip_prefix(kind.group_version_path())?
            .strip_prefix('/')?;
        let segments: Vec<&str> = rest.split('/').collect();
        match (kind.namespaced, segments.as_slice()) {
            (true, ["namespaces", namespace, resource, name]) if *resource == kind.resource() => {
                Some((kind, namespace.to_string(), name.to_string()))
            }
            (false, [resource, name]) if *resource == kind.resource() => {
                Some((kind, String::new(), name.to_string()))
            }
            _ => None,
        }
    })
}

/// The discovery document at `path`, if it is one.
pub fn discovery(path: &str) -> Option<Value> {
    match path {
        "/version" => Some(json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0"})),
        "/api" => Some(json!({"kind": "APIVersions", "versions": ["v1"]})),
        "/apis" => {
            let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for kind in KINDS.iter().filter(|k| !k.group().is_empty()) {
                let versions = groups.entry(kind.group()).or_default();
                if !versions.contains(&kind.api_version) {
                    versions.push(kind.api_version);
                }
            }
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|(group, versions)| {
                    let versions: Vec<Value> = versions
                        .iter()
                        .map(|gv| {
                            let version = gv.rsplit_once('/').unwrap().1;
                            json!({"groupVersion": gv, "version": version})
                        })
                        .collect();
                    json!({"name": group, "versions": versions,
                        "preferredVersion": versions[0]})
                })
                .collect();
            Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        _ => {
            let served: Vec<&Kind> = KINDS
                .iter()
                .filter(|k| k.group_version_path() == path)
                .collect();
            let resources: Vec<Value> = served
                .iter()
                .map(|k| {
                    json!({"name": k.resource(), "singularName": k.kind.to_lowercase(),
                        "namespaced": k.namespaced, "kind": k.kind,
                        "verbs": ["get", "list", "watch", "create", "patch", "delete"]})
                })
                .collect();
            Some(json!({"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": served.first()?.api_version, "resources": resources}))
        }
    }
}
