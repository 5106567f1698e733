//! Exclude or keep: whether an Istio sidecar port leaves capture, or stays in the mesh with its
//! mTLS and AuthorizationPolicy.
//!
//! A port kept in the mesh and declared TCP on its Service works for every meshed client: the
//! client's sidecar starts the TLS handshake at once, so the server's TLS inspector has bytes and
//! the banner flows, under PERMISSIVE and STRICT alike (istio/istio
//! `tests/integration/pilot/common/routing.go`, `serverFirstTestCases`). Only plaintext clients
//! from outside the mesh need the exclusion, and where the mesh enforces identity the operator has
//! refused those already: excluding the port there would only open a hole.

use std::fmt;

use serde::Deserialize;

use crate::mesh_state::Enforcement;

/// Pod annotation: `keep`, `exclude` or `auto` (the rule; the default).
pub const MTLS_KEY: &str = "serverfirst.dev/mtls";

/// An operator's choice for a pod's ports (annotation) or every pod (`istio.mtls`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MtlsChoice {
    #[default]
    Auto,
    Keep,
    Exclude,
}

impl MtlsChoice {
    pub fn parse(text: &str) -> Option<MtlsChoice> {
        match text.trim() {
            "auto" => Some(MtlsChoice::Auto),
            "keep" => Some(MtlsChoice::Keep),
            "exclude" => Some(MtlsChoice::Exclude),
            _ => None,
        }
    }
}

/// Who forced a choice instead of the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forced {
    /// The pod's `serverfirst.dev/mtls`.
    Annotation,
    /// The configuration's `istio.mtls`.
    Configuration,
}

impl fmt::Display for Forced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Forced::Annotation => "annotation",
            Forced::Configuration => "configuration istio.mtls",
        })
    }
}

/// The decision for one port, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Stays captured: mTLS and AuthorizationPolicy keep applying.
    Keep(KeepReason),
    /// Leaves capture, so that plaintext clients from outside the mesh get the banner.
    Exclude(ExcludeReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepReason {
    /// The mesh enforces identity on the port.
    Enforced(Enforcement),
    /// Forced while nothing is enforced: plaintext clients from outside the mesh will hang.
    Forced(Forced),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExcludeReason {
    /// PERMISSIVE (or DISABLE) and no AuthorizationPolicy: nothing is lost.
    NotEnforced,
    /// Forced; `bypasses` is what the port now escapes, if anything.
    Forced {
        by: Forced,
        bypasses: Option<Enforcement>,
    },
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::Enforced(enforcement) => enforcement.fmt(f),
            KeepReason::Forced(by) => by.fmt(f),
        }
    }
}

impl fmt::Display for ExcludeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExcludeReason::NotEnforced => f.write_str("no identity enforced"),
            ExcludeReason::Forced { by, .. } => by.fmt(f),
        }
    }
}

/// The choice that applies to a pod: its annotation, else the configuration; an annotation
/// that is not a choice is ignored with a warning.
pub fn choice(
    annotation: Option<&str>,
    configured: MtlsChoice,
    warnings: &mut Vec<String>,
) -> (MtlsChoice, Forced) {
    match annotation.map(|value| (value, MtlsChoice::parse(value))) {
        Some((_, Some(choice))) if choice != MtlsChoice::Auto => (choice, Forced::Annotation),
        Some((_, Some(_))) => (MtlsChoice::Auto, Forced::Annotation),
        Some((value, None)) => {
            warnings.push(format!(
                "{MTLS_KEY} ignored: {value:?} is not keep, exclude or auto"
            ));
            (configured, Forced::Configuration)
        }
        None => (configured, Forced::Configuration),
    }
}

/// Decides a port on which the mesh enforces `enforcement` (if anything).
pub fn verdict((choice, by): (MtlsChoice, Forced), enforcement: Option<Enforcement>) -> Verdict {
    match (choice, enforcement) {
        (MtlsChoice::Exclude, bypasses) => Verdict::Exclude(ExcludeReason::Forced { by, bypasses }),
        (_, Some(enforcement)) => Verdict::Keep(KeepReason::Enforced(enforcement)),
        (MtlsChoice::Keep, None) => Verdict::Keep(KeepReason::Forced(by)),
        (MtlsChoice::Auto, None) => Verdict::Exclude(ExcludeReason::NotEnforced),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh_state::{MeshObject, MeshState, PolicyRef, Selector};
    use serde_json::json;

    fn strict_mail() -> MeshState {
        let policy = json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"namespace": "mail", "name": "default"}, "spec": {"mtls": {"mode": "STRICT"}}});
        MeshState::new(
            "istio-system",
            [MeshObject::from_value(&policy).unwrap().unwrap()],
        )
    }

    #[test]
    fn verdict_table() {
        let labels = Selector::new();
        let strict = Enforcement::Strict(PolicyRef::new("mail", "default"));
        let cases = [
            (
                MtlsChoice::Auto,
                "mail",
                Verdict::Keep(KeepReason::Enforced(strict.clone())),
            ),
            (
                MtlsChoice::Auto,
                "web",
                Verdict::Exclude(ExcludeReason::NotEnforced),
            ),
            (
                MtlsChoice::Keep,
                "web",
                Verdict::Keep(KeepReason::Forced(Forced::Annotation)),
            ),
            (
                MtlsChoice::Keep,
                "mail",
                Verdict::Keep(KeepReason::Enforced(strict.clone())),
            ),
            (
                MtlsChoice::Exclude,
                "mail",
                Verdict::Exclude(ExcludeReason::Forced {
                    by: Forced::Annotation,
                    bypasses: Some(strict),
                }),
            ),
            (
                MtlsChoice::Exclude,
                "web",
                Verdict::Exclude(ExcludeReason::Forced {
                    by: Forced::Annotation,
                    bypasses: None,
                }),
            ),
        ];
        for (choice, namespace, expected) in cases {
            let enforcement = strict_mail().enforcement(namespace, &labels, 25);
            assert_eq!(
                verdict((choice, Forced::Annotation), enforcement),
                expected,
                "{choice:?} in {namespace}"
            );
        }
    }

    #[test]
    fn the_annotation_wins_over_the_configuration() {
        let mut warnings = Vec::new();
        assert_eq!(
            choice(Some("exclude"), MtlsChoice::Keep, &mut warnings),
            (MtlsChoice::Exclude, Forced::Annotation)
        );
        assert_eq!(
            choice(Some(" keep "), MtlsChoice::Auto, &mut warnings),
            (MtlsChoice::Keep, Forced::Annotation)
        );
        // `auto` on the pod undoes a forced configuration.
        assert_eq!(
            choice(Some("auto"), MtlsChoice::Exclude, &mut warnings),
            (MtlsChoice::Auto, Forced::Annotation)
        );
        assert_eq!(
            choice(None, MtlsChoice::Keep, &mut warnings),
            (MtlsChoice::Keep, Forced::Configuration)
        );
        assert!(warnings.is_empty());
        assert_eq!(
            choice(Some("sometimes"), MtlsChoice::Keep, &mut warnings),
            (MtlsChoice::Keep, Forced::Configuration)
        );
        assert_eq!(
            warnings,
            ["serverfirst.dev/mtls ignored: \"sometimes\" is not keep, exclude or auto"]
        );
    }
}
