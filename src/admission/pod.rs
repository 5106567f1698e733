//! The pod half of a review: decide on a Pod CREATE and answer with its exclusions.

use super::{Decided, Kind, Outcome, ResponseOut, warning};
use crate::config::{Config, Mode};
use crate::mesh::istio::mtls::{ExcludeReason, Verdict};
use crate::mesh::{AMBIENT, Decision, Plan, decide};
use crate::mesh_state::MeshState;
use crate::patch;
use crate::pod::PodView;
use crate::ports::{format_port_list, phrase};

pub(super) fn review(
    pod: &PodView<'_>,
    namespace: &str,
    mode: Mode,
    config: &Config,
    mesh: &MeshState,
    response: &mut ResponseOut<'_>,
) -> Outcome {
    let decision = decide(pod, namespace, config, mesh);
    response
        .warnings
        .extend(decision.warnings().iter().map(|w| warning(w)));
    // Formatted once: the log line and the audit annotations both carry it.
    let inbound = match &decision {
        Decision::Planned(plan) => format_port_list(plan.excluded()),
        _ => String::new(),
    };
    let outcome = match &decision {
        Decision::Skipped(_) | Decision::Ambient(_) => Outcome::Skipped,
        Decision::NoPorts { .. } => Outcome::NoPorts,
        Decision::Planned(plan) => {
            describe_capture(plan, response);
            match plan.changes.is_empty() {
                true => Outcome::Unchanged,
                false => respond_with_plan(pod, plan, &inbound, mode, response),
            }
        }
    };
    let summary;
    let reason = match &decision {
        Decision::Skipped(reason) => reason,
        Decision::Ambient(_) => AMBIENT,
        Decision::Planned(plan) => {
            summary = plan.capture_summary();
            summary.as_str()
        }
        Decision::NoPorts { .. } => "",
    };
    Decided {
        kind: Kind::Pod,
        name: &pod.display_name(),
        ports: &inbound,
        outcome,
        reason,
        warnings: decision.warnings(),
    }
    .log(namespace, mode);
    outcome
}

/// Where a port stays in the mesh, or leaves it by someone's choice, the answer says which and
/// why; a pod whose ports all leave capture by the rule is answered as it always was.
fn describe_capture(plan: &Plan, response: &mut ResponseOut<'_>) {
    let kept: Vec<u16> = plan.kept().map(|(port, _)| port).collect();
    let by_rule = plan
        .verdicts
        .values()
        .all(|verdict| matches!(verdict, Verdict::Exclude(ExcludeReason::NotEnforced)));
    if by_rule {
        return;
    }
    let summary = plan.capture_summary();
    response.warnings.push(warning(&summary));
    if !kept.is_empty() {
        response
            .audit_annotations
            .insert("kept-inbound-ports", format_port_list(kept));
    }
    response
        .audit_annotations
        .insert("inbound-ports-decision", summary);
}

fn respond_with_plan(
    pod: &PodView<'_>,
    plan: &Plan,
    inbound: &str,
    mode: Mode,
    response: &mut ResponseOut<'_>,
) -> Outcome {
    let patch = patch::build(pod, &plan.changes);
    if let Err(error) = patch::verify(pod, &patch) {
        tracing::error!(pod = %pod.display_name(), %error, "planned patch does not apply; allowing the pod unchanged");
        return Outcome::PatchRejected;
    }
    // A patch that only records kept ports excludes nothing.
    let (inbound, outbound) = match plan.changes_capture() {
        true => (inbound, format_port_list(plan.outbound.iter().copied())),
        false => ("", String::new()),
    };
    let (keys, outcome) = match mode {
        Mode::Enforce => {
            if let Err(outcome) = response.set_patch(&patch) {
                return outcome;
            }
            (
                ["excluded-inbound-ports", "excluded-outbound-ports"],
                Outcome::Patched,
            )
        }
        Mode::Audit => {
            let (inbound_phrase, outbound_phrase) = (
                phrase(plan.excluded()),
                phrase(plan.outbound.iter().copied()),
            );
            let what = match (inbound.is_empty(), outbound.is_empty()) {
                (true, true) => None,
                (false, true) => Some(format!("inbound {inbound_phrase}")),
                (true, false) => Some(format!("outbound {outbound_phrase}")),
                _ => Some(format!(
                    "inbound {inbound_phrase} and outbound {outbound_phrase}"
                )),
            };
            if let Some(what) = what {
                response.warnings.insert(
                    0,
                    warning(&format!("would exclude {what} from sidecar capture")),
                );
            }
            (
                [
                    "would-exclude-inbound-ports",
                    "would-exclude-outbound-ports",
                ],
                Outcome::WouldPatch,
            )
        }
    };
    for (key, ports) in keys.into_iter().zip([inbound.to_string(), outbound]) {
        if !ports.is_empty() {
            response.audit_annotations.insert(key, ports);
        }
    }
    outcome
}
