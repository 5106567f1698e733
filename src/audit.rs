//! Audit of running pods through the Kubernetes API: which are broken today (`at-risk`),
//! which serverfirst would change when they are next created, which are fine.
//!
//! Needs only `list pods` and `get replicasets` (to name a Deployment instead of its
//! ReplicaSet). Pods are listed in pages (`limit` + `continue`).

use std::collections::HashMap;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::config::Config;
use crate::mesh::{Change, Decision, RECORD_KEY, decide};
use crate::pod::PodView;
use crate::ports::format_port_list;

/// The verdict on one running pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditStatus {
    /// Server-first ports present and not captured.
    Protected,
    /// A sidecar is injected and captures a server-first port: clients hang today.
    AtRisk,
    /// No sidecar yet, but serverfirst would change the pod when it is next created.
    WouldPatch,
    /// Nothing server-first, or left alone on purpose.
    NotApplicable,
}

impl AuditStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditStatus::Protected => "protected",
            AuditStatus::AtRisk => "at-risk",
            AuditStatus::WouldPatch => "would-patch",
            AuditStatus::NotApplicable => "not-applicable",
        }
    }
}

/// The workload that owns a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

/// One row of the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodAudit {
    pub namespace: String,
    pub pod: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    pub status: AuditStatus,
    pub ports: Vec<u16>,
    pub sidecar: bool,
    /// The fix only takes effect when the pod is created again.
    pub needs_restart: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// What meshed clients still need (Istio auto-mTLS keeps sending mTLS to excluded ports).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub companion: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot list pods: {0}")]
    List(String),
}

/// Classifies one pod (pure): the same decision the webhook makes, plus what it means for a pod
/// that is already running.
pub fn classify(pod: &PodView<'_>, config: &Config) -> PodAudit {
    let sidecar = has_sidecar(pod);
    let mut audit = PodAudit {
        namespace: pod.namespace().unwrap_or_default().to_string(),
        pod: pod.display_name(),
        owner: None,
        status: AuditStatus::NotApplicable,
        ports: Vec::new(),
        sidecar,
        needs_restart: false,
        fix: String::new(),
        reason: String::new(),
        warnings: Vec::new(),
        companion: String::new(),
    };
    let decision = decide(pod, config);
    audit.warnings = decision.warnings().to_vec();
    match decision {
        Decision::Skipped(reason) => audit.reason = reason.to_string(),
        Decision::NoPorts { .. } => audit.reason = "no server-first ports".to_string(),
        Decision::Planned(plan) => {
            audit.ports = plan.ports.iter().copied().collect();
            let annotation = plan.changes.iter().find_map(|change| match change {
                Change::SetAnnotation { key, value } if key != RECORD_KEY => {
                    Some(format!("{key}: \"{value}\""))
                }
                _ => None,
            });
            audit.status = match (plan.changes.is_empty(), sidecar) {
                (true, _) => AuditStatus::Protected,
                (false, true) => AuditStatus::AtRisk,
                (false, false) => AuditStatus::WouldPatch,
            };
            audit.needs_restart = audit.status == AuditStatus::AtRisk;
            let istio =
                crate::mesh::meshes_for(pod, &config.meshes).contains(&crate::mesh::Mesh::Istio);
            if istio && !plan.ports.is_empty() {
                audit.companion = format!(
                    "meshed clients need a DestinationRule with tls.mode DISABLE for port {} on each Service in front of this pod (`serverfirst render --companions` writes them)",
                    format_port_list(plan.ports.iter().copied())
                );
            }
            audit.fix = match audit.status {
                AuditStatus::AtRisk => match annotation {
                    Some(annotation) => format!("recreate the pod with serverfirst installed, or set {annotation} in its template"),
                    None => "recreate the pod with serverfirst installed (its istio-init rules predate the exclusion)".to_string(),
                },
                AuditStatus::WouldPatch => format!(
                    "serverfirst excludes {} when the pod is next created",
                    format_port_list(audit.ports.iter().copied())
                ),
                _ => String::new(),
            };
        }
    }
    audit
}

/// An Istio sidecar runs in the pod (as a container or a native sidecar).
fn has_sidecar(pod: &PodView<'_>) -> bool {
    pod.annotation("sidecar.istio.io/status").is_some() || pod.has_container(&["istio-proxy"])
}

/// Lists pods (all namespaces when `namespace` is `None`) page by page, calling `progress` with
/// the running count, and audits each one.
pub async fn audit(
    client: kube::Client,
    namespace: Option<&str>,
    page_size: u32,
    config: &Config,
    mut progress: impl FnMut(usize),
) -> Result<Vec<PodAudit>, AuditError> {
    let pods: Api<Pod> = match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    let mut owners = OwnerResolver {
        client,
        cache: HashMap::new(),
    };
    let mut audits = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(page_size);
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let page = pods
            .list(&params)
            .await
            .map_err(|error| AuditError::List(root_cause(&error)))?;
        for pod in &page.items {
            let json =
                serde_json::to_vec(pod).map_err(|error| AuditError::List(error.to_string()))?;
            let view =
                PodView::from_json(&json).map_err(|error| AuditError::List(error.to_string()))?;
            let mut audit = classify(&view, config);
            audit.owner = owners
                .resolve(&audit.namespace, pod.metadata.owner_references.as_deref())
                .await;
            if let Some(restart) = restart_command(&audit) {
                audit.fix = format!("{restart}; {}", audit.fix);
            }
            audits.push(audit);
        }
        progress(audits.len());
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(audits);
        }
    }
}

/// The command that recreates an at-risk pod through its workload.
fn restart_command(audit: &PodAudit) -> Option<String> {
    let owner = audit.owner.as_ref().filter(|_| audit.needs_restart)?;
    let kind = match owner.kind.as_str() {
        "Deployment" => "deployment",
        "StatefulSet" => "statefulset",
        "DaemonSet" => "daemonset",
        _ => return None,
    };
    Some(format!(
        "kubectl -n {} rollout restart {kind}/{}",
        audit.namespace, owner.name
    ))
}

/// Names the workload behind a pod, looking ReplicaSets up once each.
struct OwnerResolver {
    client: kube::Client,
    cache: HashMap<(String, String), Option<Owner>>,
}

impl OwnerResolver {
    async fn resolve(
        &mut self,
        namespace: &str,
        references: Option<&[OwnerReference]>,
    ) -> Option<Owner> {
        let controller = controller_of(references)?;
        if controller.kind != "ReplicaSet" {
            return Some(controller);
        }
        let key = (namespace.to_string(), controller.name.clone());
        if let Some(cached) = self.cache.get(&key) {
            return cached.clone().or(Some(controller));
        }
        let replicasets: Api<ReplicaSet> = Api::namespaced(self.client.clone(), namespace);
        let deployment = match replicasets.get(&controller.name).await {
            Ok(replicaset) => controller_of(replicaset.metadata.owner_references.as_deref()),
            Err(error) => {
                // Without `get replicasets` the ReplicaSet itself is the best name we have.
                tracing::debug!(%error, replicaset = %controller.name, "cannot resolve the ReplicaSet's owner");
                None
            }
        };
        self.cache.insert(key, deployment.clone());
        deployment.or(Some(controller))
    }
}

fn controller_of(references: Option<&[OwnerReference]>) -> Option<Owner> {
    let reference = references?.iter().find(|r| r.controller == Some(true))?;
    Some(Owner {
        kind: reference.kind.clone(),
        name: reference.name.clone(),
    })
}

/// The innermost cause of an error, on one line: what the operator can act on.
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut messages = vec![error.to_string()];
    let mut current = error.source();
    while let Some(source) = current {
        messages.push(source.to_string());
        current = source.source();
    }
    messages.dedup();
    let message = match messages.as_slice() {
        [only] => only.clone(),
        [first, .., last] if first.contains(last.as_str()) => first.clone(),
        [first, .., last] => format!("{first}: {last}"),
        [] => String::new(),
    };
    message.replace('\n', " ")
}

/// Exit code of `audit`: 1 when anything is at risk, else 0.
pub fn exit_code(audits: &[PodAudit]) -> u8 {
    u8::from(audits.iter().any(|a| a.status == AuditStatus::AtRisk))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn classify_json(pod: serde_json::Value) -> PodAudit {
        let bytes = serde_json::to_vec(&pod).unwrap();
        classify(&PodView::from_json(&bytes).unwrap(), &Config::default())
    }

    #[test]
    fn statuses() {
        let smtp = json!([{"name": "app", "ports": [{"containerPort": 25}]}]);
        let injected =
            json!([{"name": "app", "ports": [{"containerPort": 25}]}, {"name": "istio-proxy"}]);
        let at_risk = classify_json(
            json!({"metadata": {"name": "a", "namespace": "m"}, "spec": {"containers": injected}}),
        );
        assert_eq!(
            (at_risk.status, at_risk.needs_restart, at_risk.sidecar),
            (AuditStatus::AtRisk, true, true)
        );
        assert!(
            at_risk
                .fix
                .contains("traffic.sidecar.istio.io/excludeInboundPorts: \"25\""),
            "{}",
            at_risk.fix
        );

        let protected = classify_json(
            json!({"metadata": {"annotations": {"traffic.sidecar.istio.io/excludeInboundPorts": "25"}},
                                             "spec": {"containers": injected}}),
        );
        assert_eq!(protected.status, AuditStatus::Protected);

        let would = classify_json(json!({"spec": {"containers": smtp}}));
        assert_eq!(
            (would.status, would.needs_restart),
            (AuditStatus::WouldPatch, false)
        );

        let none = classify_json(
            json!({"spec": {"containers": [{"name": "web", "ports": [{"containerPort": 80}]}]}}),
        );
        assert_eq!(
            (none.status, none.reason.as_str()),
            (AuditStatus::NotApplicable, "no server-first ports")
        );
    }

    #[test]
    fn root_cause_is_one_line() {
        let inner = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        let outer = std::io::Error::other(inner);
        assert_eq!(root_cause(&outer), "Connection refused (os error 111)");
    }
}
