//! PeerAuthentication: the mTLS mode Istio's sidecar enforces on a workload's port, composed
//! exactly as istiod composes it.
//!
//! istio/istio `pilot/pkg/security/authn/policy_applier.go`, `ComposePeerAuthentication` and
//! `GetMutualTLSModeForPort`, over the policies `pilot/pkg/model/authentication.go`
//! `getConfigsForWorkload` selects (the workload's namespace and the root namespace, selector ⊆
//! labels), sorted oldest first by `sortConfigByCreationTime` (creation time, then name, then
//! namespace).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{LabelLookup, PolicyRef, Raw, Selector};

/// `spec.mtls.mode`; `UNSET` (or absent) inherits from the level above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MtlsMode {
    Disable,
    Permissive,
    Strict,
}

impl MtlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Disable => "DISABLE",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Strict => "STRICT",
        }
    }

    /// `None` for `UNSET`; an unknown word is an error (the CRD's enum refuses it).
    fn parse(mode: Option<&str>) -> Result<Option<MtlsMode>, String> {
        match mode.unwrap_or("UNSET") {
            "UNSET" => Ok(None),
            "DISABLE" => Ok(Some(MtlsMode::Disable)),
            "PERMISSIVE" => Ok(Some(MtlsMode::Permissive)),
            "STRICT" => Ok(Some(MtlsMode::Strict)),
            other => Err(format!(
                "unknown mtls mode {other:?} (expected UNSET, DISABLE, PERMISSIVE or STRICT)"
            )),
        }
    }
}

/// One `security.istio.io` PeerAuthentication, as the composition needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAuthentication {
    pub policy: PolicyRef,
    /// RFC 3339 as the API server writes it (UTC, `Z`), so that text order is time order; empty
    /// in offline manifests.
    pub created: String,
    /// `None` (or empty `matchLabels`): namespace level, or mesh level in the root namespace.
    pub selector: Option<Selector>,
    pub mode: Option<MtlsMode>,
    /// `portLevelMtls`, keyed by container port.
    pub port_level: BTreeMap<u16, Option<MtlsMode>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    #[serde(default)]
    selector: Option<RawSelector>,
    #[serde(default)]
    mtls: Option<RawMtls>,
    #[serde(default)]
    port_level_mtls: Option<BTreeMap<String, Option<RawMtls>>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawSelector {
    #[serde(default)]
    pub match_labels: Option<Selector>,
}

impl RawSelector {
    /// A selector that selects something; an empty one is the same as none (Istio tests
    /// `len(spec.Selector.MatchLabels) == 0`).
    pub fn into_selector(this: Option<RawSelector>) -> Option<Selector> {
        this.and_then(|s| s.match_labels).filter(|m| !m.is_empty())
    }
}

#[derive(Deserialize, Default)]
struct RawMtls {
    #[serde(default)]
    mode: Option<String>,
}

impl PeerAuthentication {
    /// Reads a PeerAuthentication object (JSON as the API serves it).
    pub fn from_value(value: &serde_json::Value) -> Result<PeerAuthentication, String> {
        let raw = Raw::<RawSpec>::read(value)?;
        let mode = MtlsMode::parse(raw.spec.mtls.as_ref().and_then(|m| m.mode.as_deref()))?;
        let mut port_level = BTreeMap::new();
        for (port, mtls) in raw.spec.port_level_mtls.unwrap_or_default() {
            let number = port
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("portLevelMtls key {port:?} is not a port"))?;
            let mode = MtlsMode::parse(mtls.as_ref().and_then(|m| m.mode.as_deref()))?;
            port_level.insert(number, mode);
        }
        Ok(PeerAuthentication {
            policy: raw.metadata.policy_ref(),
            created: raw.metadata.creation_timestamp.unwrap_or_default(),
            selector: RawSelector::into_selector(raw.spec.selector),
            mode,
            port_level,
        })
    }

    /// Istio's `configCompareByCreationTime`: oldest first, then by name, then namespace.
    pub(super) fn age_order(&self) -> (&str, &str, &str) {
        (&self.created, &self.policy.name, &self.policy.namespace)
    }
}

/// The mode in force on a port, and the policy that set it (`None`: Istio's default,
/// PERMISSIVE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveMtls {
    pub mode: MtlsMode,
    pub source: Option<PolicyRef>,
}

/// The policies that apply to one workload, one per level (`ComposePeerAuthentication`'s
/// `meshCfg`, `namespaceCfg`, `workloadCfg`): composed once, read per port.
#[derive(Debug, Clone, Copy, Default)]
pub struct Composed<'p> {
    mesh: Option<&'p PeerAuthentication>,
    namespace: Option<&'p PeerAuthentication>,
    workload: Option<&'p PeerAuthentication>,
}

/// Picks the policies that apply to a workload in `namespace` with `labels`. `policies` are
/// those of the workload's namespace and of the root namespace, each namespace's oldest first.
pub fn compose<'p>(
    root_namespace: &str,
    namespace: &str,
    labels: &dyn LabelLookup,
    policies: impl IntoIterator<Item = &'p PeerAuthentication>,
) -> Composed<'p> {
    let mut composed = Composed::default();
    // The first of each level wins: the input is oldest first, as `ComposePeerAuthentication`
    // keeps the one created `Before` the others.
    for policy in policies {
        let in_root = policy.policy.namespace == root_namespace;
        if !in_root && policy.policy.namespace != namespace {
            continue;
        }
        match &policy.selector {
            None if in_root => {
                composed.mesh.get_or_insert(policy);
            }
            None => {
                composed.namespace.get_or_insert(policy);
            }
            // Workload-level policies in the root namespace are ignored.
            Some(_) if in_root => {}
            Some(selector) if super::selects(selector, labels) => {
                composed.workload.get_or_insert(policy);
            }
            Some(_) => {}
        }
    }
    composed
}

impl Composed<'_> {
    /// The mode for container `port` (`GetMutualTLSModeForPort`): mesh, then namespace, then
    /// workload, each unless UNSET; the workload's `portLevelMtls` last, UNSET there inheriting
    /// the workload's result.
    pub fn mode_for(&self, port: u16) -> EffectiveMtls {
        let (mode, decided_by) = self.decide(port);
        EffectiveMtls {
            mode,
            source: decided_by.map(|policy| policy.clone()),
        }
    }

    /// The mode for `port` and the policy that set it, borrowed: a caller clones only what it
    /// keeps.
    pub fn decide(&self, port: u16) -> (MtlsMode, Option<&PolicyRef>) {
        let mut decided = (MtlsMode::Permissive, None);
        for level in [self.mesh, self.namespace, self.workload]
            .into_iter()
            .flatten()
        {
            if let Some(mode) = level.mode {
                decided = (mode, Some(&level.policy));
            }
        }
        if let Some(policy) = self.workload
            && let Some(Some(mode)) = policy.port_level.get(&port)
        {
            decided = (*mode, Some(&policy.policy));
        }
        decided
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const ROOT: &str = "root-namespace";

    fn policy(namespace: &str, name: &str, created: &str, spec: Value) -> PeerAuthentication {
        PeerAuthentication::from_value(&json!({
            "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"namespace": namespace, "name": name, "creationTimestamp": created},
            "spec": spec}))
        .unwrap()
    }

    fn mode(mode: &str) -> Value {
        json!({"mtls": {"mode": mode}})
    }

    fn foo_selector(extra: Value) -> Value {
        let mut spec = json!({"selector": {"matchLabels": {"app": "foo"}}});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        spec
    }

    /// The mode of port `port` for a workload `app: foo` in `my-ns`, the policies given oldest
    /// first as istiod sorts them.
    fn composed(mut policies: Vec<PeerAuthentication>, port: u16) -> MtlsMode {
        policies.sort_by(|a, b| a.age_order().cmp(&b.age_order()));
        let labels: Selector = [("app".to_string(), "foo".to_string())].into();
        compose(ROOT, "my-ns", &labels, &policies)
            .mode_for(port)
            .mode
    }

    /// The cases of istio/istio `pilot/pkg/security/authn/policy_applier_test.go`
    /// `TestComposePeerAuthentication`, in its order and with its names.
    #[test]
    fn composes_as_istios_own_tests_do() {
        use MtlsMode::*;
        let now = "2026-08-22T19:00:53Z";
        let second_ago = "2026-08-22T19:00:52Z";
        let cases: Vec<(&str, Vec<PeerAuthentication>, u16, MtlsMode)> = vec![
            ("no config", vec![], 80, Permissive),
            (
                "mesh only",
                vec![policy(ROOT, "default", "", mode("STRICT"))],
                80,
                Strict,
            ),
            (
                "mesh vs namespace",
                vec![
                    policy(
                        ROOT,
                        "default",
                        "",
                        json!({"selector": {"matchLabels": {}}, "mtls": {"mode": "STRICT"}}),
                    ),
                    policy("my-ns", "default", "", mode("PERMISSIVE")),
                ],
                80,
                Permissive,
            ),
            (
                "ignore non-emptypb selector in root namespace",
                vec![policy(ROOT, "default", "", foo_selector(mode("STRICT")))],
                80,
                Permissive,
            ),
            (
                "workload vs namespace config",
                vec![
                    policy("my-ns", "default", "", json!({})),
                    policy("my-ns", "foo", "", foo_selector(json!({}))),
                ],
                80,
                Permissive,
            ),
            (
                "workload vs mesh config",
                vec![
                    policy("my-ns", "default", "", mode("PERMISSIVE")),
                    policy(ROOT, "default", "", mode("DISABLE")),
                ],
                80,
                Permissive,
            ),
            (
                "multiple mesh policy",
                vec![
                    policy(ROOT, "now", now, mode("DISABLE")),
                    policy(ROOT, "second ago", second_ago, mode("PERMISSIVE")),
                    policy(ROOT, "second later", second_ago, mode("STRICT")),
                ],
                80,
                Permissive,
            ),
            (
                "multiple namespace policy",
                vec![
                    policy("my-ns", "now", now, mode("DISABLE")),
                    policy("my-ns", "second ago", second_ago, mode("PERMISSIVE")),
                    policy("my-ns", "second later", second_ago, mode("STRICT")),
                ],
                80,
                Permissive,
            ),
            (
                "multiple workload policy",
                vec![
                    policy("my-ns", "now", now, foo_selector(mode("DISABLE"))),
                    policy(
                        "my-ns",
                        "second ago",
                        second_ago,
                        foo_selector(mode("PERMISSIVE")),
                    ),
                    policy(
                        "my-ns",
                        "second later",
                        second_ago,
                        json!({"selector": {"matchLabels": {"stage": "prod"}}, "mtls": {"mode": "STRICT"}}),
                    ),
                ],
                80,
                Permissive,
            ),
            (
                "inheritance: default mesh",
                vec![policy(ROOT, "default", "", mode("UNSET"))],
                80,
                Permissive,
            ),
            (
                "inheritance: mesh to workload",
                vec![
                    policy(ROOT, "default", "", mode("STRICT")),
                    policy("my-ns", "foo", "", foo_selector(json!({}))),
                ],
                80,
                Strict,
            ),
            (
                "inheritance: namespace to workload",
                vec![
                    policy("my-ns", "default", "", mode("STRICT")),
                    policy("my-ns", "foo", "", foo_selector(json!({}))),
                ],
                80,
                Strict,
            ),
            (
                "inheritance: mesh to namespace to workload",
                vec![
                    policy(ROOT, "default", "", mode("STRICT")),
                    policy("my-ns", "default", "", mode("UNSET")),
                    policy("my-ns", "foo", "", foo_selector(json!({}))),
                ],
                80,
                Strict,
            ),
        ];
        for (name, policies, port, expected) in cases {
            assert_eq!(composed(policies, port), expected, "{name}");
        }
        // "port level": a mesh STRICT, and a workload policy with 80 DISABLE, 90 UNSET, 100 {}.
        let port_level = vec![
            policy(ROOT, "default", "", mode("STRICT")),
            policy(
                "my-ns",
                "foo",
                "",
                foo_selector(json!({"portLevelMtls": {
                    "80": {"mode": "DISABLE"}, "90": {"mode": "UNSET"}, "100": {}}})),
            ),
        ];
        for (port, expected) in [(80, Disable), (90, Strict), (100, Strict), (8080, Strict)] {
            assert_eq!(
                composed(port_level.clone(), port),
                expected,
                "port level {port}"
            );
        }
    }

    #[test]
    fn names_the_policy_that_decided() {
        let policies = [
            policy(ROOT, "mesh", "", mode("PERMISSIVE")),
            policy("my-ns", "default", "", mode("STRICT")),
            policy(
                "my-ns",
                "mox",
                "",
                foo_selector(json!({"portLevelMtls": {"25": {"mode": "PERMISSIVE"}}})),
            ),
        ];
        let labels: Selector = [("app".to_string(), "foo".to_string())].into();
        let at = |port| compose(ROOT, "my-ns", &labels, &policies).mode_for(port);
        assert_eq!(
            at(587),
            EffectiveMtls {
                mode: MtlsMode::Strict,
                source: Some(PolicyRef::new("my-ns", "default"))
            }
        );
        assert_eq!(
            at(25),
            EffectiveMtls {
                mode: MtlsMode::Permissive,
                source: Some(PolicyRef::new("my-ns", "mox"))
            }
        );
        // Other namespaces' policies do not count.
        let other = compose(ROOT, "web", &labels, &policies).mode_for(587);
        assert_eq!(other.source, Some(PolicyRef::new(ROOT, "mesh")));
    }

    #[test]
    fn bad_policies_are_errors() {
        for spec in [
            json!({"mtls": {"mode": "SOMETIMES"}}),
            json!({"selector": {"matchLabels": {"app": "x"}}, "portLevelMtls": {"smtp": {"mode": "STRICT"}}}),
            json!({"selector": "x"}),
        ] {
            let value = json!({"metadata": {"namespace": "n", "name": "p"}, "spec": spec});
            assert!(PeerAuthentication::from_value(&value).is_err(), "{value}");
        }
    }
}
