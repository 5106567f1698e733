//! AuthorizationPolicy: whether one applies to a workload's sidecar.
//!
//! istio/istio `pilot/pkg/model/authorization.go` `ListAuthorizationPolicies` looks in the root
//! namespace and the workload's; `pilot/pkg/model/policyattachment.go`
//! `WorkloadPolicyMatcher.ShouldAttachPolicy` ignores a policy with `targetRef`/`targetRefs` for
//! a workload that is not a gateway, and otherwise attaches it when it has no selector or its
//! `matchLabels` ⊆ the workload's labels. `updateAuthorizationPoliciesResult` sorts them by
//! action; an absent action is `ALLOW` (the proto enum's zero).

use serde::Deserialize;

use super::peer_authentication::RawSelector;
use super::{LabelLookup, PolicyRef, Raw, Selector};

/// `spec.action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    Audit,
    Custom,
}

impl Action {
    /// Allow, deny and custom decide who gets through; audit only logs.
    pub fn enforces(self) -> bool {
        self != Action::Audit
    }
}

/// One `security.istio.io` AuthorizationPolicy, as its scope needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationPolicy {
    pub policy: PolicyRef,
    /// `None`: every workload of its namespace (of the mesh, in the root namespace).
    pub selector: Option<Selector>,
    pub action: Action,
    /// Has `targetRef`/`targetRefs`: for gateways and waypoints, never a sidecar.
    pub targeted: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    #[serde(default)]
    selector: Option<RawSelector>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    target_ref: Option<serde_json::Value>,
    #[serde(default)]
    target_refs: Option<Vec<serde_json::Value>>,
}

impl AuthorizationPolicy {
    /// Reads an AuthorizationPolicy object (JSON as the API serves it).
    pub fn from_value(value: &serde_json::Value) -> Result<AuthorizationPolicy, String> {
        let raw = Raw::<RawSpec>::read(value)?;
        let action = match raw.spec.action.as_deref().unwrap_or("ALLOW") {
            "ALLOW" => Action::Allow,
            "DENY" => Action::Deny,
            "AUDIT" => Action::Audit,
            "CUSTOM" => Action::Custom,
            other => {
                return Err(format!(
                    "unknown action {other:?} (expected ALLOW, DENY, AUDIT or CUSTOM)"
                ));
            }
        };
        let targeted = raw.spec.target_ref.as_ref().is_some_and(|t| !t.is_null())
            || raw.spec.target_refs.as_ref().is_some_and(|t| !t.is_empty());
        Ok(AuthorizationPolicy {
            policy: raw.metadata.policy_ref(),
            // Unlike PeerAuthentication, an empty `matchLabels` is kept: it selects every
            // workload, which is what no selector does too.
            selector: raw.spec.selector.and_then(|s| s.match_labels),
            action,
            targeted,
        })
    }

    /// The policy attaches to the sidecar of a workload with `labels` in `namespace`.
    pub fn applies_to(
        &self,
        root_namespace: &str,
        namespace: &str,
        labels: &dyn LabelLookup,
    ) -> bool {
        let here = self.policy.namespace == namespace || self.policy.namespace == root_namespace;
        here && !self.targeted
            && self
                .selector
                .as_ref()
                .is_none_or(|selector| super::selects(selector, labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn policy(namespace: &str, spec: Value) -> AuthorizationPolicy {
        AuthorizationPolicy::from_value(&json!({
            "metadata": {"namespace": namespace, "name": "p"}, "spec": spec}))
        .unwrap()
    }

    #[test]
    fn scope_table() {
        let mox: Selector = [("app".to_string(), "mox".to_string())].into();
        let cases: Vec<(&str, &str, Value, bool)> = vec![
            ("namespace-wide", "mail", json!({}), true),
            (
                "mesh-wide",
                "istio-system",
                json!({"action": "DENY", "rules": [{}]}),
                true,
            ),
            ("other namespace", "web", json!({}), false),
            (
                "selector matching",
                "mail",
                json!({"selector": {"matchLabels": {"app": "mox"}}}),
                true,
            ),
            (
                "selector matching in the root namespace",
                "istio-system",
                json!({"selector": {"matchLabels": {"app": "mox"}}, "action": "CUSTOM"}),
                true,
            ),
            (
                "selector for other pods",
                "mail",
                json!({"selector": {"matchLabels": {"app": "web"}}}),
                false,
            ),
            (
                "empty matchLabels",
                "mail",
                json!({"selector": {"matchLabels": {}}}),
                true,
            ),
            (
                "targetRef: a gateway's",
                "mail",
                json!({"targetRef": {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}}),
                false,
            ),
            (
                "targetRefs: a waypoint's",
                "mail",
                json!({"targetRefs": [{"kind": "Service", "group": "", "name": "mox"}]}),
                false,
            ),
        ];
        for (what, namespace, spec, applies) in cases {
            assert_eq!(
                policy(namespace, spec).applies_to("istio-system", "mail", &mox),
                applies,
                "{what}"
            );
        }
    }

    #[test]
    fn audit_enforces_nothing() {
        assert!(policy("mail", json!({})).action.enforces());
        assert!(policy("mail", json!({"action": "DENY"})).action.enforces());
        assert!(!policy("mail", json!({"action": "AUDIT"})).action.enforces());
        let bad = json!({"metadata": {"namespace": "m", "name": "p"}, "spec": {"action": "MAYBE"}});
        assert!(AuthorizationPolicy::from_value(&bad).is_err());
    }
}
