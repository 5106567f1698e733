//! An independent model of how istiod translates the AuthorizationPolicies that select a sidecar
//! into the RBAC filters of its inbound chains, for the end-to-end tests, following
//! istio/istio's `pilot/pkg/security/authz`.
//!
//! Modelled: actions ALLOW and DENY (`builder/builder.go` `build`: one filter per action, DENY
//! before ALLOW, each holding every policy's rules named `ns[<ns>]-policy[<name>]-rule[<i>]`, a
//! policy without rules matching nothing), rules with `from.source.principals` and
//! `notPrincipals` (`model/model.go` `New` and `Generate`, `model/generator.go`
//! `srcPrincipalGenerator`: matched on the peer certificate's identity, `spiffe://` prepended),
//! the network filter of TCP chains (`buildTCP`: stat prefix `tcp.`) and the HTTP filter of HTTP
//! chains (`buildHTTP`), both as a sidecar gets them (`UseFilterState` off, so `authenticated`
//! principals). Not modelled, and refused with an error rather than dropped: `to`, `when`, the
//! other source fields, AUDIT and CUSTOM, dry-run and trust domain aliases.
#![allow(dead_code)]

use serde_json::{Value, json};

use crate::istio_sidecar::RbacFilters;

/// `model.RBACTCPFilterStatPrefix`: the network filter's counters are `tcp.rbac.allowed` and
/// `tcp.rbac.denied`.
pub const TCP_STAT_PREFIX: &str = "tcp.";
/// `pkg/spiffe/spiffe.go` `URIPrefix`.
const SPIFFE_PREFIX: &str = "spiffe://";

/// The RBAC filters istiod puts on a sidecar's inbound chains for `policies` (AuthorizationPolicy
/// objects, each already known to select the workload).
pub fn rbac_filters(policies: &[Value]) -> Result<RbacFilters, String> {
    let mut filters = RbacFilters::default();
    for action in ["DENY", "ALLOW"] {
        let mut rules = serde_json::Map::new();
        for policy in policies {
            if policy_action(policy)? == action {
                rules.extend(policy_rules(policy)?);
            }
        }
        if rules.is_empty() {
            continue;
        }
        let rules = json!({ "action": action, "policies": rules });
        filters.network.push(json!({
            "name": "envoy.filters.network.rbac",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
                "stat_prefix": TCP_STAT_PREFIX,
                "rules": rules,
            }
        }));
        filters.http.push(json!({
            "name": "envoy.filters.http.rbac",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                "rules": rules,
            }
        }));
    }
    Ok(filters)
}

/// `spec.action`, ALLOW when absent.
fn policy_action(policy: &Value) -> Result<&str, String> {
    match policy.pointer("/spec/action").and_then(Value::as_str) {
        None => Ok("ALLOW"),
        Some(action @ ("ALLOW" | "DENY")) => Ok(action),
        Some(other) => Err(format!("action {other} is not modelled")),
    }
}

/// The named Envoy policies of one AuthorizationPolicy.
fn policy_rules(policy: &Value) -> Result<Vec<(String, Value)>, String> {
    let text = |pointer: &str| policy.pointer(pointer).and_then(Value::as_str);
    let namespace = text("/metadata/namespace").ok_or("a policy without a namespace")?;
    let name = text("/metadata/name").ok_or("a policy without a name")?;
    if policy
        .pointer("/metadata/annotations/istio.io~1dry-run")
        .is_some()
    {
        return Err(format!("{namespace}/{name}: dry-run is not modelled"));
    }
    let key = |index: usize| format!("ns[{namespace}]-policy[{name}]-rule[{index}]");
    let rules = policy
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if rules.is_empty() {
        // builder.go rbacPolicyMatchNever: a policy without rules matches nothing.
        let never = json!({
            "permissions": [{ "not_rule": { "any": true } }],
            "principals": [{ "not_id": { "any": true } }],
        });
        return Ok(vec![(key(0), never)]);
    }
    rules
        .iter()
        .enumerate()
        .map(|(index, rule)| Ok((key(index), envoy_policy(rule)?)))
        .collect::<Result<_, String>>()
        .map_err(|error| format!("{namespace}/{name}: {error}"))
}

/// `model.Generate` for one rule: any permission (no `to`), one principal per `from` entry.
fn envoy_policy(rule: &Value) -> Result<Value, String> {
    for field in ["to", "when"] {
        if rule.get(field).is_some() {
            return Err(format!("rule field {field:?} is not modelled"));
        }
    }
    let sources: Vec<Value> = match rule.get("from") {
        None => vec![json!({ "and_ids": { "ids": [{ "any": true }] } })],
        Some(from) => from
            .as_array()
            .ok_or("rule field \"from\" is not a list")?
            .iter()
            .map(|entry| source_principal(&entry["source"]))
            .collect::<Result<_, String>>()?,
    };
    Ok(json!({
        "permissions": [{ "and_rules": { "rules": [{ "any": true }] } }],
        "principals": sources,
    }))
}

/// One `from.source`: `principals` or-ed, then `notPrincipals` negated, all and-ed.
fn source_principal(source: &Value) -> Result<Value, String> {
    let empty = serde_json::Map::new();
    let fields = match source {
        Value::Null => &empty,
        source => source.as_object().ok_or("a source that is not an object")?,
    };
    let mut ids = Vec::new();
    for (field, value) in fields {
        let names = value
            .as_array()
            .ok_or_else(|| format!("source field {field:?} is not a list"))?;
        let or = json!({ "or_ids": { "ids": names.iter().map(authenticated).collect::<Result<Vec<_>, _>>()? } });
        match field.as_str() {
            "principals" => ids.insert(0, or),
            "notPrincipals" => ids.push(json!({ "not_id": or })),
            other => return Err(format!("source field {other:?} is not modelled")),
        }
    }
    if ids.is_empty() {
        ids.push(json!({ "any": true }));
    }
    Ok(json!({ "and_ids": { "ids": ids } }))
}

/// `srcPrincipalGenerator` and `matcher.StringMatcherWithPrefix`: the peer's principal, exactly,
/// by prefix (`name*`) or any (`*`).
fn authenticated(name: &Value) -> Result<Value, String> {
    let name = name.as_str().ok_or("a principal that is not a string")?;
    let matcher = if name == "*" {
        json!({ "safe_regex": { "regex": ".+" } })
    } else if name.starts_with('*') {
        return Err(format!(
            "principal {name:?}: suffix matches are not modelled"
        ));
    } else if let Some(prefix) = name.strip_suffix('*') {
        json!({ "prefix": format!("{SPIFFE_PREFIX}{prefix}") })
    } else {
        json!({ "exact": format!("{SPIFFE_PREFIX}{name}") })
    };
    Ok(json!({ "authenticated": { "principal_name": matcher } }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(action: Option<&str>, rules: Value) -> Value {
        let mut spec = json!({ "selector": { "matchLabels": { "app": "mox" } }, "rules": rules });
        if let Some(action) = action {
            spec["action"] = json!(action);
        }
        json!({
            "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": { "namespace": "mail", "name": "allow-mailer" }, "spec": spec,
        })
    }

    /// The shape of Istio's `builder/testdata/tcp/allow-both-http-tcp-out.yaml`, for a rule
    /// that names principals and no port.
    #[test]
    fn an_allow_policy_on_principals_becomes_one_network_filter() {
        let allow = policy(
            None,
            json!([{ "from": [{ "source": { "principals": ["cluster.local/ns/apps/sa/mailer"] } }] }]),
        );
        let filters = rbac_filters(&[allow]).unwrap();
        assert_eq!(filters.network.len(), 1);
        let config = &filters.network[0]["typed_config"];
        assert_eq!(filters.network[0]["name"], "envoy.filters.network.rbac");
        assert_eq!(config["stat_prefix"], "tcp.");
        assert_eq!(
            config["rules"],
            json!({ "action": "ALLOW", "policies": { "ns[mail]-policy[allow-mailer]-rule[0]": {
                "permissions": [{ "and_rules": { "rules": [{ "any": true }] } }],
                "principals": [{ "and_ids": { "ids": [{ "or_ids": { "ids": [
                    { "authenticated": { "principal_name": { "exact": "spiffe://cluster.local/ns/apps/sa/mailer" } } }
                ] } }] } }],
            } } })
        );
        assert_eq!(filters.http[0]["typed_config"]["rules"], config["rules"]);
    }

    #[test]
    fn deny_comes_before_allow_and_empty_rules_match_nothing() {
        let deny = policy(
            Some("DENY"),
            json!([{ "from": [{ "source": { "notPrincipals": ["cluster.local/ns/apps/*"] } }] }]),
        );
        let allow_nothing = policy(Some("ALLOW"), json!([]));
        let filters = rbac_filters(&[allow_nothing, deny]).unwrap();
        let actions: Vec<&Value> = filters
            .network
            .iter()
            .map(|f| &f["typed_config"]["rules"]["action"])
            .collect();
        assert_eq!(actions, ["DENY", "ALLOW"]);
        let denied = &filters.network[0]["typed_config"]["rules"]["policies"]["ns[mail]-policy[allow-mailer]-rule[0]"]
            ["principals"][0];
        assert_eq!(
            denied["and_ids"]["ids"][0]["not_id"]["or_ids"]["ids"][0]["authenticated"]["principal_name"],
            json!({ "prefix": "spiffe://cluster.local/ns/apps/" })
        );
        let never = &filters.network[1]["typed_config"]["rules"]["policies"]["ns[mail]-policy[allow-mailer]-rule[0]"];
        assert_eq!(never["principals"], json!([{ "not_id": { "any": true } }]));
    }

    #[test]
    fn what_is_not_modelled_is_an_error() {
        let cases = [
            policy(Some("CUSTOM"), json!([{}])),
            policy(
                None,
                json!([{ "to": [{ "operation": { "ports": ["587"] } }] }]),
            ),
            policy(
                None,
                json!([{ "from": [{ "source": { "namespaces": ["apps"] } }] }]),
            ),
            policy(
                None,
                json!([{ "from": [{ "source": { "principals": ["*/sa/mailer"] } }] }]),
            ),
        ];
        for case in cases {
            assert!(rbac_filters(&[case.clone()]).is_err(), "{case}");
        }
    }
}
