//! The pod half of a review: decide on a Pod CREATE and answer with its exclusions.

use super::{Decided, Kind, Outcome, ResponseOut, warning};
use crate::config::{Config, Mode};
use crate::mesh::{Decision, Plan, decide};
use crate::patch;
use crate::pod::PodView;
use crate::ports::{format_port_list, phrase};

pub(super) fn review(
    pod: &PodView<'_>,
    namespace: &str,
    mode: Mode,
    config: &Config,
    response: &mut ResponseOut<'_>,
) -> Outcome {
    let decision = decide(pod, config);
    response
        .warnings
        .extend(decision.warnings().iter().map(|w| warning(w)));
    // Formatted once: the log line and the audit annotations both carry it.
    let inbound = match &decision {
        Decision::Planned(plan) => format_port_list(plan.ports.iter().copied()),
        _ => String::new(),
    };
    let outcome = match &decision {
        Decision::Skipped(_) => Outcome::Skipped,
        Decision::NoPorts { .. } => Outcome::NoPorts,
        Decision::Planned(plan) if plan.changes.is_empty() => Outcome::Unchanged,
        Decision::Planned(plan) => respond_with_plan(pod, plan, &inbound, mode, response),
    };
    let reason = match &decision {
        Decision::Skipped(reason) => reason,
        _ => "",
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
    let outbound = format_port_list(plan.outbound.iter().copied());
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
                phrase(plan.ports.iter().copied()),
                phrase(plan.outbound.iter().copied()),
            );
            let what = match (inbound.is_empty(), outbound.is_empty()) {
                (false, true) => format!("inbound {inbound_phrase}"),
                (true, false) => format!("outbound {outbound_phrase}"),
                _ => format!("inbound {inbound_phrase} and outbound {outbound_phrase}"),
            };
            response.warnings.insert(
                0,
                warning(&format!("would exclude {what} from sidecar capture")),
            );
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
