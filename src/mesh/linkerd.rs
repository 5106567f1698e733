//! Linkerd profile for pods: inbound server-first ports go into `config.linkerd.io/opaque-ports`,
//! outbound ones into `config.linkerd.io/skip-outbound-ports`. Lists take ports and ranges.
//!
//! Opaque, not skipped, inbound: on an opaque port the pod's own proxy forwards at once, without
//! TLS or protocol detection, so unmeshed clients get the banner at once, while meshed clients
//! keep mTLS through the proxy's inbound port; a port in `skip-inbound-ports` gets no mTLS at
//! all (sources in [`super::linkerd_service`]). What Linkerd reads on the pod (linkerd/linkerd2):
//! - The policy controller decides the pod's inbound protocol from the pod's annotation alone
//!   (`policy-controller/k8s/index/src/inbound/workload.rs`, `Settings::from_metadata`;
//!   `inbound/index.rs`, `default_inbound_server`: opaque, else detect). It reads numbers and
//!   ranges only (`ports.rs`, `parse_portset`): one name makes the whole list invalid, read empty.
//! - The destination controller reads it for clients (`watcher/workload_watcher.go`,
//!   `GetAnnotatedOpaquePorts`), and the injector for the proxy's env
//!   (`pkg/inject/inject.go`): both resolve container port names (`pkg/util/parsing.go`,
//!   `ParseContainerOpaquePorts`, `GetNamedPorts` over init and app containers).
//! - Absent, the injector writes the default `proxy.opaquePorts` the pod's containers declare
//!   (`controller/proxy-injector/webhook.go`; `inject.go`, `FilterPodOpaquePorts`), or the
//!   namespace's annotation (`AppendNamespaceAnnotations`), which serverfirst does not see.
//!
//! Outbound stays skipped: the client's own opaque-ports says nothing about its outbound
//! traffic, which takes the protocol of the destination; a destination outside the cluster gets
//! the egress fallback, 10 s of protocol detection (`policy-controller/grpc/src/outbound.rs`,
//! `fallback`).

use super::linkerd_service::{DEFAULT_OPAQUE_PORTS, OPAQUE_PORTS};
use super::{MeshPlan, Ports, exclusions, merge_annotation};
use crate::pod::PodView;
use crate::ports::PortSet;

pub const SKIP_INBOUND: &str = "config.linkerd.io/skip-inbound-ports";
pub const SKIP_OUTBOUND: &str = "config.linkerd.io/skip-outbound-ports";

const SYNTAX: exclusions::Syntax = exclusions::Syntax::PortsAndRanges;

/// Plans opaque-ports for the inbound ports that `skip-inbound-ports` does not already leave
/// uncaptured, and skip-outbound-ports for the outbound ones.
pub fn plan(pod: &PodView<'_>, ports: &Ports) -> MeshPlan {
    let mut plan = MeshPlan::default();
    let skipped = exclusions::parse(pod.annotation(SKIP_INBOUND).unwrap_or_default(), SYNTAX)
        .unwrap_or_default();
    let inbound: PortSet = ports
        .inbound
        .iter()
        .copied()
        .filter(|&p| !skipped.iter().any(|&(s, e)| (s..=e).contains(&p)))
        .collect();
    plan_opaque(pod, &inbound, &mut plan);
    merge_annotation(pod, SKIP_OUTBOUND, &ports.outbound, SYNTAX, &mut plan);
    plan
}

/// Merges `ports` into the pod's opaque-ports; absent, the value to merge with is the default
/// list's ports the containers declare, as the injector would write it.
fn plan_opaque(pod: &PodView<'_>, ports: &PortSet, plan: &mut MeshPlan) {
    if ports.is_empty() {
        return;
    }
    let (existing, had_names) = match pod.annotation(OPAQUE_PORTS) {
        None => (declared_defaults(pod), false),
        Some(value) => {
            let resolved = with_names_resolved(pod, value);
            match exclusions::parse(&resolved, SYNTAX) {
                Ok(existing) => (existing, resolved != value),
                Err(error) => {
                    plan.warnings.push(format!(
                        "{OPAQUE_PORTS} left unchanged: {error} (Linkerd rejects such a value)"
                    ));
                    return;
                }
            }
        }
    };
    // A name is invalid to the policy controller: a list that had one is written as numbers.
    let value = exclusions::merged(&existing, ports)
        .or_else(|| had_names.then(|| exclusions::canonical(&existing)));
    if let Some(value) = value {
        plan.changes.push(super::Change::SetAnnotation {
            key: OPAQUE_PORTS.to_string(),
            value,
        });
    }
}

/// The pod's container ports (init containers too) that are in Linkerd's default opaque list.
fn declared_defaults(pod: &PodView<'_>) -> Vec<(u16, u16)> {
    container_ports(pod)
        .filter_map(|(_, port)| port)
        .filter(|port| DEFAULT_OPAQUE_PORTS.contains(port))
        .map(|port| (port, port))
        .collect()
}

/// `value` with each container port name replaced by its number, as the injector and the
/// destination controller read it (`GetNamedPorts`: the last container declaring a name wins).
fn with_names_resolved(pod: &PodView<'_>, value: &str) -> String {
    exclusions::with_names_resolved(value, |name| {
        container_ports(pod)
            .filter(|&(port_name, _)| port_name == Some(name))
            .last()
            .and_then(|(_, port)| port)
    })
}

/// (name, number) of every port of the init and app containers, in Linkerd's order.
fn container_ports<'p>(
    pod: &'p PodView<'_>,
) -> impl Iterator<Item = (Option<&'p str>, Option<u16>)> + 'p {
    pod.init_containers()
        .iter()
        .chain(pod.containers())
        .flat_map(|c| c.ports())
        .map(|p| (p.name.as_deref(), p.number()))
}

const INJECT: &str = "linkerd.io/inject";

/// Linkerd reads only the pod's annotation (no label), exactly: `enabled` and `ingress` inject,
/// `disabled` and any other non-empty value leave the pod without a proxy
/// (linkerd2 pkg/inject/report.go, `disabledByAnnotation`, `ValidInjectAnnotationValues`).
pub fn skip_reason(pod: &PodView<'_>) -> Option<&'static str> {
    match pod.annotation(INJECT) {
        None | Some("" | "enabled" | "ingress") => None,
        Some("disabled") => Some("Linkerd injection disabled (linkerd.io/inject: disabled)"),
        Some(_) => {
            Some("Linkerd injection off (linkerd.io/inject has a value Linkerd does not accept)")
        }
    }
}

/// The pod asks for Linkerd's proxy, or already has it.
pub fn injected(pod: &PodView<'_>) -> bool {
    matches!(pod.annotation(INJECT), Some("enabled" | "ingress"))
        || pod.annotation("linkerd.io/proxy-version").is_some()
        || pod.has_container(&["linkerd-proxy"])
}
