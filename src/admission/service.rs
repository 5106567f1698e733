//! The Service half of a review: decide on a Service CREATE or UPDATE and answer with its
//! protocol declarations.

use super::{Decided, Kind, Outcome, ResponseOut, warning};
use crate::config::{Config, Mode};
use crate::mesh::service::{ServiceDecision, ServicePlan, decide_service};
use crate::patch;
use crate::ports::{format_port_list, phrase};
use crate::service::ServiceView;

pub(super) fn review(
    service: &ServiceView<'_>,
    namespace: &str,
    mode: Mode,
    config: &Config,
    response: &mut ResponseOut<'_>,
) -> Outcome {
    let decision = decide_service(service, namespace, config);
    let name = service.display_name();
    response
        .warnings
        .extend(decision.warnings().iter().map(|w| warning(w)));
    let declared = match &decision {
        ServiceDecision::Planned(plan) => format_port_list(plan.declared.iter().copied()),
        _ => String::new(),
    };
    let outcome = match &decision {
        ServiceDecision::Skipped(_) => Outcome::Skipped,
        ServiceDecision::NoPorts => Outcome::NoPorts,
        ServiceDecision::Planned(plan) if plan.changes.is_empty() => Outcome::Unchanged,
        ServiceDecision::Planned(plan) => {
            respond_with_plan(service, plan, &declared, mode, response)
        }
    };
    let reason = match &decision {
        ServiceDecision::Skipped(reason) => reason,
        _ => "",
    };
    Decided {
        kind: Kind::Service,
        name: &name,
        ports: &declared,
        outcome,
        reason,
        warnings: decision.warnings(),
    }
    .log(namespace, mode);
    outcome
}

fn respond_with_plan(
    service: &ServiceView<'_>,
    plan: &ServicePlan,
    declared: &str,
    mode: Mode,
    response: &mut ResponseOut<'_>,
) -> Outcome {
    let patch = patch::build_service(service, &plan.changes);
    if let Err(error) = patch::verify_service(service, &patch) {
        tracing::error!(service = %service.display_name(), %error, "planned patch does not apply; allowing the Service unchanged");
        return Outcome::PatchRejected;
    }
    let (key, outcome) = match mode {
        Mode::Enforce => {
            if let Err(outcome) = response.set_patch(&patch) {
                return outcome;
            }
            ("declared-tcp-ports", Outcome::Patched)
        }
        Mode::Audit => {
            response.warnings.insert(
                0,
                warning(&format!(
                    "would declare Service {} as TCP",
                    phrase(plan.declared.iter().copied())
                )),
            );
            ("would-declare-tcp-ports", Outcome::WouldPatch)
        }
    };
    if !declared.is_empty() {
        response.audit_annotations.insert(key, declared.to_string());
    }
    outcome
}
