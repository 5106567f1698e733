//! The Service half of a review: decide on a Service CREATE or UPDATE and answer with its
//! protocol declarations.

use super::{Kind, Outcome, ResponseOut, log_decision, warning};
use crate::config::{Config, Mode};
use crate::mesh::service::{ServiceDecision, ServicePlan, decide_service};
use crate::patch;
use crate::ports::format_port_list;
use crate::service::ServiceView;

pub(super) fn review(
    service: &ServiceView<'_>,
    namespace: &str,
    mode: Mode,
    config: &Config,
    response: &mut ResponseOut<'_>,
) -> Outcome {
    let decision = decide_service(service, config);
    let name = service.display_name();
    for text in decision.warnings() {
        // An operator needs these in the log too: the warning only reaches whoever applied it.
        tracing::warn!(namespace, service = %name, warning = %text, "service port left as declared");
        response.warnings.push(warning(text));
    }
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
    log_decision(
        Kind::Service,
        &name,
        namespace,
        &declared,
        outcome,
        mode,
        reason,
    );
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
                    "would declare Service ports {declared} as TCP (appProtocol: tcp)"
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
