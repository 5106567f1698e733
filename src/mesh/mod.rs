//! Planning (pure): which annotations and arguments change so a mesh stops capturing the
//! server-first ports found in a pod. One module per mesh profile; Istio first.

pub mod istio;

use crate::config::Config;
use crate::detect::{Detection, detect};
use crate::pod::PodView;
use crate::ports::{PortSet, format_port_list};

/// Annotation serverfirst writes to record the ports it took out of capture.
pub const RECORD_KEY: &str = "serverfirst.dev/excluded-ports";

/// One change to the pod, independent of how it is applied (JSON Patch, YAML rendering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Set annotation `key` to `value`, creating the annotations map when absent.
    SetAnnotation { key: String, value: String },
    /// Replace argument `arg` of init container `container`.
    ReplaceInitArg {
        container: usize,
        arg: usize,
        value: String,
    },
    /// Append arguments to init container `container`.
    AppendInitArgs { container: usize, args: Vec<String> },
}

/// A mesh profile's part of a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshPlan {
    pub changes: Vec<Change>,
    pub warnings: Vec<String>,
}

/// What serverfirst would do with a pod that exposes server-first ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub detection: Detection,
    /// The server-first ports found, ascending.
    pub ports: PortSet,
    /// Empty when the pod is already right (or nothing is captured).
    pub changes: Vec<Change>,
    pub warnings: Vec<String>,
}

/// The outcome of looking at one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Left alone on purpose; the reason is for logs and reports.
    Skipped(&'static str),
    /// Nothing server-first found.
    NoPorts {
        warnings: Vec<String>,
    },
    Planned(Plan),
}

impl Decision {
    /// The changes to apply, if any.
    pub fn changes(&self) -> &[Change] {
        match self {
            Decision::Planned(plan) => &plan.changes,
            _ => &[],
        }
    }

    pub fn warnings(&self) -> &[String] {
        match self {
            Decision::Planned(plan) => &plan.warnings,
            Decision::NoPorts { warnings } => warnings,
            Decision::Skipped(_) => &[],
        }
    }
}

/// Detects and plans: the one function every entry point (webhook, audit, check, render) uses.
pub fn decide(pod: &PodView<'_>, config: &Config) -> Decision {
    let detection = match detect(pod, &config.catalog) {
        Ok(detection) => detection,
        Err(skip) => return Decision::Skipped(skip.as_str()),
    };
    if let Some(reason) = istio::skip_reason(pod) {
        return Decision::Skipped(reason);
    }
    let ports = detection.ports();
    if ports.is_empty() {
        return Decision::NoPorts {
            warnings: detection.warnings,
        };
    }
    let mesh = istio::plan(pod, &ports, &config.istio);
    let mut changes = mesh.changes;
    let record = format_port_list(ports.iter().copied());
    if !changes.is_empty() && pod.annotation(RECORD_KEY) != Some(record.as_str()) {
        changes.push(Change::SetAnnotation {
            key: RECORD_KEY.to_string(),
            value: record,
        });
    }
    let mut warnings = detection.warnings.clone();
    warnings.extend(mesh.warnings);
    Decision::Planned(Plan {
        detection,
        ports,
        changes,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decide_json(pod: serde_json::Value) -> Decision {
        let bytes = serde_json::to_vec(&pod).unwrap();
        decide(&PodView::from_json(&bytes).unwrap(), &Config::default())
    }

    #[test]
    fn records_the_ports_with_the_exclusion() {
        let decision = decide_json(json!({"metadata": {}, "spec": {"containers": [{"ports": [
            {"containerPort": 587}, {"containerPort": 25}]}]}}));
        assert_eq!(
            decision.changes(),
            [
                Change::SetAnnotation {
                    key: istio::EXCLUDE_INBOUND.into(),
                    value: "25,587".into()
                },
                Change::SetAnnotation {
                    key: RECORD_KEY.into(),
                    value: "25,587".into()
                },
            ]
        );
    }

    #[test]
    fn no_record_without_a_change() {
        let decision = decide_json(json!({
            "metadata": {"annotations": {istio::EXCLUDE_INBOUND: "25"}},
            "spec": {"containers": [{"ports": [{"containerPort": 25}]}]}}));
        assert!(matches!(decision, Decision::Planned(_)));
        assert!(decision.changes().is_empty());
    }

    #[test]
    fn skips_and_empty_pods() {
        assert_eq!(
            decide_json(json!({"spec": {"containers": [{"ports": [{"containerPort": 80}]}]}})),
            Decision::NoPorts { warnings: vec![] }
        );
        assert!(matches!(
            decide_json(
                json!({"metadata": {"labels": {"sidecar.istio.io/inject": "false"}},
                               "spec": {"containers": [{"ports": [{"containerPort": 25}]}]}})
            ),
            Decision::Skipped(_)
        ));
    }
}
