//! Planning (pure): which annotations and arguments change so a mesh stops capturing the
//! server-first ports found in a pod. One module per mesh profile.

pub mod consul;
pub mod exclusions;
pub mod istio;
pub mod istio_service;
pub mod kuma;
pub mod kuma_service;
pub mod linkerd;
pub mod linkerd_service;
pub mod service;

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::{Config, MeshSelection};
use crate::detect::{Detection, detect, outbound_ports};
use crate::mesh_state::{Enforcement, Enforcer, MeshState, Waypoint, WaypointFor, waypoint};
use crate::pod::PodView;
use crate::ports::{PortSet, by_reason, format_port_list, phrase};
use istio::mtls::{ExcludeReason, KeepReason, MTLS_KEY, Verdict};

/// Annotation serverfirst writes to record the inbound ports it took out of capture; only for
/// meshes that exclude them (Linkerd makes them opaque, still captured: see
/// [`Mesh::excludes_inbound`]).
pub const RECORD_KEY: &str = "serverfirst.dev/excluded-ports";
/// Annotation serverfirst writes to record the outbound ports it took out of capture.
pub const OUTBOUND_RECORD_KEY: &str = "serverfirst.dev/excluded-outbound-ports";
/// Annotation serverfirst writes to record the inbound ports it keeps in the mesh (Istio), where
/// the mesh enforces identity on them.
pub const KEPT_RECORD_KEY: &str = "serverfirst.dev/kept-ports";

/// A service mesh serverfirst writes exclusions for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mesh {
    Istio,
    Linkerd,
    Kuma,
    Consul,
}

impl Mesh {
    pub const ALL: [Mesh; 4] = [Mesh::Istio, Mesh::Linkerd, Mesh::Kuma, Mesh::Consul];

    pub fn as_str(self) -> &'static str {
        match self {
            Mesh::Istio => "istio",
            Mesh::Linkerd => "linkerd",
            Mesh::Kuma => "kuma",
            Mesh::Consul => "consul",
        }
    }

    /// Why this mesh leaves the pod's traffic alone, if it does.
    fn skip_reason(self, pod: &PodView<'_>) -> Option<&'static str> {
        match self {
            Mesh::Istio => istio::skip_reason(pod),
            Mesh::Linkerd => linkerd::skip_reason(pod),
            Mesh::Kuma => kuma::skip_reason(pod),
            Mesh::Consul => consul::skip_reason(pod),
        }
    }

    /// The pod carries this mesh's injection markers (for `meshes: [auto]`).
    pub fn injected(self, pod: &PodView<'_>) -> bool {
        match self {
            Mesh::Istio => istio::injected(pod),
            Mesh::Linkerd => linkerd::injected(pod),
            Mesh::Kuma => kuma::injected(pod),
            Mesh::Consul => consul::injected(pod),
        }
    }

    /// The mesh's plan takes inbound ports out of capture. Linkerd's keeps them captured, as
    /// opaque ports, so serverfirst records no excluded ports for it.
    pub fn excludes_inbound(self) -> bool {
        self != Mesh::Linkerd
    }

    fn plan(self, pod: &PodView<'_>, ports: &Ports, config: &Config) -> MeshPlan {
        match self {
            Mesh::Istio => istio::plan(pod, &ports.inbound, &ports.outbound, &config.istio),
            Mesh::Linkerd => linkerd::plan(pod, ports),
            Mesh::Kuma => kuma::PROFILE.plan(pod, ports),
            Mesh::Consul => consul::PROFILE.plan(pod, ports),
        }
    }
}

/// The meshes to plan for this pod.
pub fn meshes_for(pod: &PodView<'_>, selection: &MeshSelection) -> Vec<Mesh> {
    let mut meshes = selection.explicit.clone();
    if selection.auto {
        meshes.extend(Mesh::ALL.into_iter().filter(|mesh| mesh.injected(pod)));
        if meshes.is_empty() {
            meshes.extend(&selection.auto_fallback);
        }
    }
    meshes.sort_unstable();
    meshes.dedup();
    meshes
}

/// Ports to take out of capture, by direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ports {
    pub inbound: PortSet,
    pub outbound: PortSet,
}

/// A mesh configured by pod annotations alone: one exclusion list per direction.
#[derive(Debug, Clone, Copy)]
pub struct AnnotationProfile {
    pub inbound_key: &'static str,
    pub outbound_key: &'static str,
    pub syntax: exclusions::Syntax,
}

impl AnnotationProfile {
    fn plan(&self, pod: &PodView<'_>, ports: &Ports) -> MeshPlan {
        let mut plan = MeshPlan::default();
        for (key, ports) in [
            (self.inbound_key, &ports.inbound),
            (self.outbound_key, &ports.outbound),
        ] {
            merge_annotation(pod, key, ports, self.syntax, &mut plan);
        }
        plan
    }
}

/// Merges `ports` into the list annotation `key`; an invalid existing value is left as it is,
/// with a warning.
pub(crate) fn merge_annotation(
    pod: &PodView<'_>,
    key: &str,
    ports: &PortSet,
    syntax: exclusions::Syntax,
    plan: &mut MeshPlan,
) {
    if ports.is_empty() {
        return;
    }
    match exclusions::parse(pod.annotation(key).unwrap_or_default(), syntax) {
        Ok(existing) => {
            if let Some(value) = exclusions::merged(&existing, ports) {
                plan.changes.push(Change::SetAnnotation {
                    key: key.to_string(),
                    value,
                });
            }
        }
        Err(error) => plan.warnings.push(format!(
            "{key} left unchanged: {error} (the mesh rejects such a value)"
        )),
    }
}

/// One change to the pod, independent of how it is applied (JSON Patch, YAML rendering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Set annotation `key` to `value`, creating the annotations map when absent.
    SetAnnotation { key: String, value: String },
    /// Replace word `index` of init container `container`'s `command` or `args`.
    ReplaceInitWord {
        container: usize,
        list: InitList,
        index: usize,
        value: String,
    },
    /// Append arguments to init container `container`.
    AppendInitArgs { container: usize, args: Vec<String> },
}

/// The two lists a container's command line is made of (argv = `command` + `args`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitList {
    Command,
    Args,
}

impl InitList {
    pub fn field(self) -> &'static str {
        match self {
            InitList::Command => "command",
            InitList::Args => "args",
        }
    }
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
    /// Outbound ports to take out of capture (from config and `serverfirst.dev/outbound-ports`).
    pub outbound: PortSet,
    /// Istio sidecar only: exclude or keep, per inbound port.
    pub verdicts: BTreeMap<u16, Verdict>,
    /// Ports that the pod as it stands keeps out of capture although the mesh enforces identity
    /// on them: they bypass mTLS and AuthorizationPolicy.
    pub exposed: BTreeMap<u16, Enforcement>,
    /// Empty when the pod is already right (or nothing is captured).
    pub changes: Vec<Change>,
    pub warnings: Vec<String>,
}

impl Plan {
    /// The inbound ports serverfirst takes (or took) out of capture.
    pub fn excluded(&self) -> PortSet {
        self.ports
            .iter()
            .copied()
            .filter(|port| !matches!(self.verdicts.get(port), Some(Verdict::Keep(_))))
            .collect()
    }

    /// The inbound ports that stay in the mesh, with why.
    pub fn kept(&self) -> impl Iterator<Item = (u16, &KeepReason)> {
        self.verdicts
            .iter()
            .filter_map(|(&port, verdict)| match verdict {
                Verdict::Keep(reason) => Some((port, reason)),
                Verdict::Exclude(_) => None,
            })
    }

    /// The changes that alter what is captured (records aside): what makes a running pod at
    /// risk, or a template to be patched.
    pub fn changes_capture(&self) -> bool {
        self.changes.iter().any(|change| {
            !matches!(change, Change::SetAnnotation { key, .. } if RECORD_KEYS.contains(&key.as_str()))
        })
    }

    /// One phrase naming the kept and the excluded ports and why: `ports 25,587 kept (STRICT
    /// by mail/default); port 143 excluded (no identity enforced)`. Empty without Istio verdicts.
    pub fn capture_summary(&self) -> String {
        let groups = by_reason(self.verdicts.iter().map(|(&port, verdict)| {
            let group = match verdict {
                Verdict::Keep(reason) => format!("kept ({reason})"),
                Verdict::Exclude(reason) => format!("excluded ({reason})"),
            };
            (port, group)
        }));
        // Kept first, then excluded.
        let mut parts: Vec<(bool, String)> = groups
            .into_iter()
            .map(|(group, ports)| {
                (
                    group.starts_with("excluded"),
                    format!("{} {group}", phrase(ports)),
                )
            })
            .collect();
        parts.sort();
        parts
            .into_iter()
            .map(|(_, part)| part)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The records serverfirst writes; changing only these changes nothing about capture.
const RECORD_KEYS: [&str; 3] = [RECORD_KEY, OUTBOUND_RECORD_KEY, KEPT_RECORD_KEY];

/// An Istio ambient pod: ztunnel captures it and never waits for a client's first bytes, so it
/// is left alone. Only a waypoint its traffic passes can sniff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmbientPlan {
    /// The server-first ports found, ascending.
    pub ports: PortSet,
    /// The waypoint that the pod's own traffic passes (a `workload` or `all` one): it sniffs
    /// every port of the workloads it carries.
    pub waypoint: Option<Waypoint>,
    pub warnings: Vec<String>,
}

/// Why an ambient pod is left alone.
pub const AMBIENT: &str = "ambient: ztunnel does not inspect traffic";

/// What to do about a waypoint that sniffs a server-first port: the two ways out.
pub fn waypoint_way_out(ports: &str) -> String {
    format!(
        "send {ports} through a service waypoint (istio.io/waypoint-for: service) with the Service port declared TCP, or set {}: none on the workload",
        crate::mesh_state::waypoint::USE_WAYPOINT
    )
}

/// The outcome of looking at one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Left alone on purpose; the reason is for logs and reports.
    Skipped(&'static str),
    /// An Istio ambient pod, left alone ([`AMBIENT`]).
    Ambient(AmbientPlan),
    /// Nothing server-first found.
    NoPorts {
        warnings: Vec<String>,
        /// Why ports that look like a known protocol were left alone (it is off).
        notes: Vec<String>,
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

    /// Informational lines for reports: ports of known protocols that are off.
    pub fn notes(&self) -> Vec<String> {
        match self {
            Decision::Planned(plan) => plan.detection.off_notes(),
            Decision::NoPorts { notes, .. } => notes.clone(),
            Decision::Skipped(_) | Decision::Ambient(_) => Vec::new(),
        }
    }

    pub fn warnings(&self) -> &[String] {
        match self {
            Decision::Planned(plan) => &plan.warnings,
            Decision::NoPorts { warnings, .. } => warnings,
            Decision::Ambient(plan) => &plan.warnings,
            Decision::Skipped(_) => &[],
        }
    }
}

/// Why a pod or Service in a system namespace is left alone.
pub const SYSTEM_NAMESPACE: &str =
    "system namespace (kube-system, kube-public and serverfirst's own are never patched)";

/// Detects and plans: the one function every entry point (webhook, audit, check, render) uses.
/// `namespace` is the pod's (the request's, for a pod not yet named); `mesh` the mesh facts
/// known about the cluster.
pub fn decide(pod: &PodView<'_>, namespace: &str, config: &Config, mesh: &MeshState) -> Decision {
    if config.is_system_namespace(namespace) {
        return Decision::Skipped(SYSTEM_NAMESPACE);
    }
    let detection = match detect(pod, config) {
        Ok(detection) => detection,
        Err(skip) => return Decision::Skipped(skip.as_str()),
    };
    let mut warnings = detection.warnings.clone();
    let ports = Ports {
        inbound: detection.ports(),
        outbound: outbound_ports(pod, config, &mut warnings),
    };
    let meshes = meshes_for(pod, &config.meshes);
    let ambient = meshes.contains(&Mesh::Istio) && mesh.is_ambient(namespace, pod);
    let active: Vec<Mesh> = meshes
        .iter()
        .copied()
        .filter(|mesh| mesh.skip_reason(pod).is_none())
        .filter(|&mesh| !(ambient && mesh == Mesh::Istio))
        .collect();
    if active.is_empty() && ambient {
        return Decision::Ambient(ambient_plan(
            pod,
            namespace,
            detection.ports(),
            mesh,
            warnings,
        ));
    }
    if active.is_empty()
        && let Some(reason) = meshes.first().and_then(|mesh| mesh.skip_reason(pod))
    {
        return Decision::Skipped(reason);
    }
    if ports.inbound.is_empty() && ports.outbound.is_empty() {
        return Decision::NoPorts {
            warnings,
            notes: detection.off_notes(),
        };
    }
    let istio = active.contains(&Mesh::Istio);
    // Composed once for the pod, read per port.
    let enforcer = mesh.enforcer(namespace, pod);
    let verdicts = match istio {
        true => istio_verdicts(pod, &ports.inbound, config, &enforcer, &mut warnings),
        false => BTreeMap::new(),
    };
    let kept: PortSet = verdicts
        .iter()
        .filter(|(_, verdict)| matches!(verdict, Verdict::Keep(_)))
        .map(|(&port, _)| port)
        .collect();
    let mut changes = Vec::new();
    let excluded: PortSet = ports.inbound.difference(&kept).copied().collect();
    let excludes = active.iter().any(|mesh| mesh.excludes_inbound());
    for &mesh in &active {
        let inbound = match mesh {
            Mesh::Istio => excluded.clone(),
            _ => ports.inbound.clone(),
        };
        let plan = mesh.plan(
            pod,
            &Ports {
                inbound,
                outbound: ports.outbound.clone(),
            },
            config,
        );
        changes.extend(plan.changes);
        warnings.extend(plan.warnings);
    }
    let exposed = match istio {
        true => exposed(pod, &ports.inbound, config, &enforcer, &mut warnings),
        false => BTreeMap::new(),
    };
    if !changes.is_empty() {
        let excluded = if excludes { excluded } else { PortSet::new() };
        record(pod, RECORD_KEY, &excluded, &mut changes);
        record(pod, OUTBOUND_RECORD_KEY, &ports.outbound, &mut changes);
    }
    // Kept ports the pod's author has not excluded already: the record says they stay.
    let kept = kept
        .difference(&exposed.keys().copied().collect())
        .copied()
        .collect();
    record(pod, KEPT_RECORD_KEY, &kept, &mut changes);
    Decision::Planned(Plan {
        detection,
        ports: ports.inbound,
        outbound: ports.outbound,
        verdicts,
        exposed,
        changes,
        warnings,
    })
}

/// An ambient pod's plan: nothing to change, and the waypoint that sniffs its ports, if one does.
fn ambient_plan(
    pod: &PodView<'_>,
    namespace: &str,
    ports: PortSet,
    mesh: &MeshState,
    mut warnings: Vec<String>,
) -> AmbientPlan {
    let waypoint = mesh
        .waypoint(namespace, pod, waypoint::Client::Workload)
        .filter(|_| !ports.is_empty())
        .cloned();
    if let Some(waypoint) = &waypoint {
        let ports = phrase(ports.iter().copied());
        // ztunnel sends traffic addressed to a Service past a workload-only waypoint (istio/
        // ztunnel src/proxy/outbound.rs, `build_request`): only clients that address the pod
        // itself pass it.
        let whose = match waypoint.waypoint_for {
            WaypointFor::Workload => {
                " for clients that address the pod itself (a headless Service, a StatefulSet pod's name)"
            }
            _ => "",
        };
        warnings.push(format!(
            "{ports} pass waypoint {} (istio.io/waypoint-for: {}){whose}, which sniffs every port of the workloads it carries: {}",
            waypoint.gateway,
            waypoint.waypoint_for.as_str(),
            waypoint_way_out(&ports)
        ));
    }
    AmbientPlan {
        ports,
        waypoint,
        warnings,
    }
}

/// Sets record `key` to `ports` (ascending) unless it says so already or there is nothing to say.
fn record(pod: &PodView<'_>, key: &str, ports: &PortSet, changes: &mut Vec<Change>) {
    let value = format_port_list(ports.iter().copied());
    if !ports.is_empty() && pod.annotation(key) != Some(value.as_str()) {
        changes.push(Change::SetAnnotation {
            key: key.to_string(),
            value,
        });
    }
}

/// Exclude or keep, per inbound port of an Istio sidecar pod, with the warnings an operator
/// needs about a forced choice.
fn istio_verdicts(
    pod: &PodView<'_>,
    inbound: &PortSet,
    config: &Config,
    enforcer: &Enforcer<'_>,
    warnings: &mut Vec<String>,
) -> BTreeMap<u16, Verdict> {
    let choice = istio::mtls::choice(pod.annotation(MTLS_KEY), config.istio.mtls, warnings);
    let verdicts: BTreeMap<u16, Verdict> = inbound
        .iter()
        .map(|&port| {
            (
                port,
                istio::mtls::verdict(choice, enforcer.enforcement(port)),
            )
        })
        .collect();
    let forced_keep: PortSet = verdicts
        .iter()
        .filter(|(_, verdict)| matches!(verdict, Verdict::Keep(KeepReason::Forced(_))))
        .map(|(&port, _)| port)
        .collect();
    let bypassing = by_reason(
        verdicts
            .iter()
            .filter_map(|(&port, verdict)| match verdict {
                Verdict::Exclude(ExcludeReason::Forced {
                    bypasses: Some(enforcement),
                    ..
                }) => Some((port, enforcement)),
                _ => None,
            }),
    );
    if !forced_keep.is_empty() {
        warnings.push(format!(
            "{} kept in the mesh by {} although nothing enforces identity there (PERMISSIVE): plaintext clients from outside the mesh will hang",
            phrase(forced_keep),
            choice.1
        ));
    }
    for (enforcement, ports) in bypassing {
        warnings.push(format!(
            "{} excluded by {} although the mesh enforces identity there ({enforcement}): the {} bypass mTLS and AuthorizationPolicy",
            phrase(ports.iter().copied()),
            choice.1,
            if ports.len() == 1 { "port will" } else { "ports will" }
        ));
    }
    verdicts
}

/// The inbound ports the pod keeps out of capture already while the mesh enforces identity on
/// them; its author's choice stands, and is named.
fn exposed(
    pod: &PodView<'_>,
    inbound: &PortSet,
    config: &Config,
    enforcer: &Enforcer<'_>,
    warnings: &mut Vec<String>,
) -> BTreeMap<u16, Enforcement> {
    let mut exposed: BTreeMap<u16, Enforcement> = inbound
        .iter()
        .filter_map(|&port| Some((port, enforcer.enforcement(port)?)))
        .collect();
    // Whether a port is out of capture takes a plan of its own: asked only where it matters.
    let enforced: PortSet = exposed.keys().copied().collect();
    let uncaptured = istio::uncaptured(pod, &enforced, &config.istio);
    exposed.retain(|port, _| uncaptured.contains(port));
    for (enforcement, ports) in by_reason(exposed.iter().map(|(&port, e)| (port, e))) {
        warnings.push(format!(
            "{} already excluded from capture by the pod although the mesh enforces identity there ({enforcement}): {} mTLS and AuthorizationPolicy",
            phrase(ports.iter().copied()),
            if ports.len() == 1 { "it bypasses" } else { "they bypass" }
        ));
    }
    exposed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decide_json(pod: serde_json::Value) -> Decision {
        let bytes = serde_json::to_vec(&pod).unwrap();
        decide(
            &PodView::from_json(&bytes).unwrap(),
            "mail",
            &Config::default(),
            &MeshState::default(),
        )
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
            Decision::NoPorts {
                warnings: vec![],
                notes: vec![]
            }
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

#[cfg(test)]
mod mtls_tests {
    use super::*;
    use crate::mesh::istio::mtls::MtlsChoice;
    use crate::mesh_state::MeshObject;
    use serde_json::{Value, json};

    /// `mail` STRICT by namespace; `web` PERMISSIVE with an AuthorizationPolicy for `app: web`.
    fn mesh() -> MeshState {
        let objects = [
            json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                   "metadata": {"namespace": "mail", "name": "default"}, "spec": {"mtls": {"mode": "STRICT"}}}),
            json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                   "metadata": {"namespace": "web", "name": "allow-web"},
                   "spec": {"selector": {"matchLabels": {"app": "web"}}}}),
        ];
        MeshState::new(
            "istio-system",
            objects
                .iter()
                .map(|o| MeshObject::from_value(o).unwrap().unwrap()),
        )
    }

    fn decide_in(namespace: &str, pod: &Value, config: &Config) -> Decision {
        let bytes = serde_json::to_vec(pod).unwrap();
        decide(
            &PodView::from_json(&bytes).unwrap(),
            namespace,
            config,
            &mesh(),
        )
    }

    fn mox(labels: Value, annotations: Value) -> Value {
        json!({"metadata": {"labels": labels, "annotations": annotations},
               "spec": {"containers": [{"name": "mox", "ports": [
                   {"containerPort": 25}, {"containerPort": 587}]}]}})
    }

    fn set(key: &str, value: &str) -> Change {
        Change::SetAnnotation {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn keep_or_exclude_table() {
        let exclude =
            |ports: &str| vec![set(istio::EXCLUDE_INBOUND, ports), set(RECORD_KEY, ports)];
        let cases: Vec<(&str, &str, Value, Value, Vec<Change>)> = vec![
            (
                "STRICT namespace",
                "mail",
                json!({}),
                json!({}),
                vec![set(KEPT_RECORD_KEY, "25,587")],
            ),
            (
                "no policy",
                "other",
                json!({}),
                json!({}),
                exclude("25,587"),
            ),
            (
                "AuthorizationPolicy selecting the pod",
                "web",
                json!({"app": "web"}),
                json!({}),
                vec![set(KEPT_RECORD_KEY, "25,587")],
            ),
            (
                "AuthorizationPolicy for other pods",
                "web",
                json!({"app": "mox"}),
                json!({}),
                exclude("25,587"),
            ),
            (
                "annotation exclude under STRICT",
                "mail",
                json!({}),
                json!({MTLS_KEY: "exclude"}),
                exclude("25,587"),
            ),
            (
                "annotation keep under PERMISSIVE",
                "other",
                json!({}),
                json!({MTLS_KEY: "keep"}),
                vec![set(KEPT_RECORD_KEY, "25,587")],
            ),
            (
                "already recorded",
                "mail",
                json!({}),
                json!({KEPT_RECORD_KEY: "25,587"}),
                vec![],
            ),
            // The author's exclusion of 587 stands: 25 stays kept, 587 is named as exposed.
            (
                "author's exclusion under STRICT",
                "mail",
                json!({}),
                json!({istio::EXCLUDE_INBOUND: "587"}),
                vec![set(KEPT_RECORD_KEY, "25")],
            ),
        ];
        for (what, namespace, labels, annotations, expected) in cases {
            let decision = decide_in(namespace, &mox(labels, annotations), &Config::default());
            assert_eq!(decision.changes(), expected, "{what}");
        }
    }

    #[test]
    fn forced_choices_and_exposed_ports_are_warned_about() {
        let warnings = |namespace: &str, annotations: Value| {
            decide_in(namespace, &mox(json!({}), annotations), &Config::default())
                .warnings()
                .to_vec()
        };
        assert_eq!(
            warnings("mail", json!({MTLS_KEY: "exclude"})),
            [
                "ports 25,587 excluded by annotation although the mesh enforces identity there (STRICT by mail/default): the ports will bypass mTLS and AuthorizationPolicy"
            ]
        );
        assert_eq!(
            warnings("other", json!({MTLS_KEY: "keep"})),
            [
                "ports 25,587 kept in the mesh by annotation although nothing enforces identity there (PERMISSIVE): plaintext clients from outside the mesh will hang"
            ]
        );
        assert_eq!(
            warnings("mail", json!({istio::EXCLUDE_INBOUND: "587"})),
            [
                "port 587 already excluded from capture by the pod although the mesh enforces identity there (STRICT by mail/default): it bypasses mTLS and AuthorizationPolicy"
            ]
        );
        assert!(warnings("other", json!({})).is_empty());
        let Decision::Planned(plan) = decide_in(
            "mail",
            &mox(json!({}), json!({istio::EXCLUDE_INBOUND: "587"})),
            &Config::default(),
        ) else {
            panic!("planned");
        };
        assert_eq!(plan.exposed.keys().copied().collect::<Vec<_>>(), [587]);
        assert_eq!(
            plan.capture_summary(),
            "ports 25,587 kept (STRICT by mail/default)"
        );
    }

    #[test]
    fn the_configuration_sets_the_default_choice() {
        let mut config = Config::default();
        config.istio.mtls = MtlsChoice::Exclude;
        let decision = decide_in("mail", &mox(json!({}), json!({})), &config);
        assert_eq!(decision.changes()[0], set(istio::EXCLUDE_INBOUND, "25,587"));
        assert!(decision.warnings()[0].contains("by configuration istio.mtls"));
        // The pod's `auto` brings the rule back.
        let decision = decide_in("mail", &mox(json!({}), json!({MTLS_KEY: "auto"})), &config);
        assert_eq!(decision.changes(), [set(KEPT_RECORD_KEY, "25,587")]);
    }

    #[test]
    fn system_namespaces_are_never_planned() {
        let mut config = Config::default();
        config.own_namespace = "mail-ops".into();
        for namespace in ["kube-system", "kube-public", "mail-ops"] {
            assert_eq!(
                decide_in(namespace, &mox(json!({}), json!({})), &config),
                Decision::Skipped(SYSTEM_NAMESPACE),
                "{namespace}"
            );
        }
        assert!(matches!(
            decide_in("serverfirst-system", &mox(json!({}), json!({})), &config),
            Decision::Planned(_)
        ));
        assert!(matches!(
            decide_in(
                "serverfirst-system",
                &mox(json!({}), json!({})),
                &Config::default()
            ),
            Decision::Skipped(_)
        ));
    }
}

#[cfg(test)]
mod profile_tests {
    use super::*;
    use crate::patch;
    use serde_json::{Value, json};

    fn config(meshes: &[Mesh]) -> Config {
        Config {
            meshes: MeshSelection {
                explicit: meshes.to_vec(),
                ..MeshSelection::default()
            },
            ..Config::default()
        }
    }

    fn pod(annotations: Option<Value>) -> Value {
        let mut pod = json!({"metadata": {"name": "mail"}, "spec": {"containers": [{"name": "app", "ports": [
            {"containerPort": 587}, {"containerPort": 25}]}]}});
        if let Some(annotations) = annotations {
            pod["metadata"]["annotations"] = annotations;
        }
        pod
    }

    fn decide_value(pod: &Value, config: &Config) -> Decision {
        let bytes = serde_json::to_vec(pod).unwrap();
        decide(
            &PodView::from_json(&bytes).unwrap(),
            "mail",
            config,
            &MeshState::default(),
        )
    }

    /// The pod after applying the decision's patch.
    fn applied(pod: &Value, config: &Config) -> Value {
        let bytes = serde_json::to_vec(pod).unwrap();
        let view = PodView::from_json(&bytes).unwrap();
        let mut patched = pod.clone();
        json_patch::patch(
            &mut patched,
            &patch::build(
                &view,
                decide(&view, "mail", config, &MeshState::default()).changes(),
            )
            .0,
        )
        .unwrap();
        patched
    }

    #[test]
    fn annotation_profiles_merge_like_istio() {
        for (mesh, key) in [
            (Mesh::Kuma, kuma::PROFILE.inbound_key),
            (Mesh::Consul, consul::PROFILE.inbound_key),
        ] {
            let config = config(&[mesh]);
            let cases: Vec<(Option<Value>, Option<&str>)> = vec![
                (None, Some("25,587")),
                (Some(json!({})), Some("25,587")),
                (Some(json!({key: "9090, 8080"})), Some("25,587,8080,9090")),
                (Some(json!({key: "587,25"})), None),
            ];
            for (annotations, expected) in cases {
                let pod = pod(annotations.clone());
                let patched = applied(&pod, &config);
                assert_eq!(
                    patched["metadata"]["annotations"][key].as_str(),
                    expected.or(annotations.as_ref().and_then(|a| a[key].as_str())),
                    "{mesh:?} {annotations:?}"
                );
                assert!(
                    decide_value(&patched, &config).changes().is_empty(),
                    "{mesh:?}: second pass changes nothing"
                );
            }
            let invalid = pod(Some(json!({key: "25,"})));
            let decision = decide_value(&invalid, &config);
            assert!(decision.changes().is_empty(), "{mesh:?}");
            assert!(
                decision.warnings()[0].starts_with(&format!("{key} left unchanged")),
                "{:?}",
                decision.warnings()
            );
        }
    }

    /// Linkerd's pod plan: opaque-ports merged with what Linkerd reads today (the annotation, or
    /// absent, the default ports the containers declare); no excluded-ports record.
    #[test]
    fn linkerd_pod_plan_table() {
        use linkerd_service::OPAQUE_PORTS;
        let config = config(&[Mesh::Linkerd]);
        let numbered = |ports: &[u16]| -> Value {
            ports.iter().map(|&p| json!({"containerPort": p})).collect()
        };
        let named =
            json!([{"name": "smtp", "containerPort": 25}, {"name": "imap", "containerPort": 143}]);
        // (container ports, annotations, opaque-ports written, a warning)
        let cases: Vec<(Value, Value, Option<&str>, bool)> = vec![
            (numbered(&[25, 587]), json!({}), None, false),
            (
                numbered(&[25, 80, 110, 143, 3306]),
                json!({}),
                Some("25,110,143,3306"),
                false,
            ),
            (
                numbered(&[25, 143]),
                json!({OPAQUE_PORTS: "8080"}),
                Some("25,143,8080"),
                false,
            ),
            (
                numbered(&[143]),
                json!({OPAQUE_PORTS: "100-200"}),
                None,
                false,
            ),
            (
                numbered(&[143]),
                json!({OPAQUE_PORTS: "gopher"}),
                None,
                true,
            ),
            (numbered(&[143]), json!({OPAQUE_PORTS: "143,"}), None, true),
            // Names resolve to container ports and are written as numbers, which the policy
            // controller reads.
            (
                named.clone(),
                json!({OPAQUE_PORTS: "imap, smtp"}),
                Some("25,143"),
                false,
            ),
            (named, json!({OPAQUE_PORTS: "imap"}), Some("25,143"), false),
            // Skipped ports are not captured at all: left as they are.
            (
                numbered(&[25, 110, 143]),
                json!({linkerd::SKIP_INBOUND: "100-150"}),
                None,
                false,
            ),
            (
                numbered(&[25, 110, 143]),
                json!({linkerd::SKIP_INBOUND: "143"}),
                Some("25,110"),
                false,
            ),
        ];
        for (ports, annotations, written, warned) in cases {
            let pod = json!({"metadata": {"annotations": annotations},
                             "spec": {"containers": [{"name": "app", "ports": ports}]}});
            let decision = decide_value(&pod, &config);
            assert!(matches!(decision, Decision::Planned(_)), "{pod}");
            let expected: Vec<Change> = written
                .map(|value| Change::SetAnnotation {
                    key: OPAQUE_PORTS.into(),
                    value: value.into(),
                })
                .into_iter()
                .collect();
            assert_eq!(decision.changes(), expected, "{annotations}");
            assert_eq!(
                decision
                    .warnings()
                    .iter()
                    .any(|w| w.starts_with(OPAQUE_PORTS)),
                warned,
                "{annotations}: {:?}",
                decision.warnings()
            );
            let patched = applied(&pod, &config);
            assert!(
                decide_value(&patched, &config).changes().is_empty(),
                "{annotations}: second pass changes nothing"
            );
        }
    }

    #[test]
    fn linkerd_keeps_ranges_that_cover_the_ports() {
        let key = linkerd_service::OPAQUE_PORTS;
        let config = config(&[Mesh::Linkerd]);
        let covered = pod(Some(json!({key: "20-30,500-600"})));
        assert!(decide_value(&covered, &config).changes().is_empty());
        let partly = pod(Some(json!({key: "20-30"})));
        assert_eq!(
            applied(&partly, &config)["metadata"]["annotations"][key],
            "20-30,587"
        );
        // Ranges are not Kuma syntax.
        let kuma = pod(Some(json!({kuma::PROFILE.inbound_key: "20-30"})));
        assert!(
            !decide_value(&kuma, &self::config(&[Mesh::Kuma]))
                .warnings()
                .is_empty()
        );
    }

    /// Each mesh's own reading of its opt-out: which of label and annotation counts, and which
    /// values (see the profiles' `skip_reason`).
    #[test]
    fn each_profile_honours_its_opt_outs_as_the_mesh_reads_them() {
        let cases = [
            (
                Mesh::Linkerd,
                json!({}),
                json!({"linkerd.io/inject": "disabled"}),
                true,
            ),
            (
                Mesh::Linkerd,
                json!({}),
                json!({"linkerd.io/inject": "false"}),
                true,
            ),
            (
                Mesh::Linkerd,
                json!({}),
                json!({"linkerd.io/inject": "enabled"}),
                false,
            ),
            (
                Mesh::Linkerd,
                json!({"linkerd.io/inject": "disabled"}),
                json!({}),
                false,
            ),
            (
                Mesh::Kuma,
                json!({"kuma.io/sidecar-injection": "disabled"}),
                json!({}),
                true,
            ),
            (
                Mesh::Kuma,
                json!({"kuma.io/sidecar-injection": "no"}),
                json!({}),
                true,
            ),
            (
                Mesh::Kuma,
                json!({}),
                json!({"kuma.io/sidecar-injection": "disabled"}),
                false,
            ),
            (
                Mesh::Kuma,
                json!({"kuma.io/sidecar-injection": "enabled"}),
                json!({"kuma.io/sidecar-injection": "disabled"}),
                false,
            ),
            (
                Mesh::Consul,
                json!({}),
                json!({"consul.hashicorp.com/connect-inject": "false"}),
                true,
            ),
            (
                Mesh::Consul,
                json!({}),
                json!({"consul.hashicorp.com/connect-inject": "0"}),
                true,
            ),
            (
                Mesh::Consul,
                json!({}),
                json!({"consul.hashicorp.com/connect-inject": "T"}),
                false,
            ),
            (
                Mesh::Consul,
                json!({"consul.hashicorp.com/connect-inject": "false"}),
                json!({}),
                false,
            ),
            (
                Mesh::Consul,
                json!({}),
                json!({"consul.hashicorp.com/transparent-proxy": "false"}),
                true,
            ),
            (
                Mesh::Istio,
                json!({}),
                json!({"sidecar.istio.io/inject": "false"}),
                true,
            ),
            (
                Mesh::Istio,
                json!({"sidecar.istio.io/inject": "false"}),
                json!({}),
                true,
            ),
            (
                Mesh::Istio,
                json!({"sidecar.istio.io/inject": "true"}),
                json!({"sidecar.istio.io/inject": "false"}),
                false,
            ),
        ];
        for (mesh, labels, annotations, skipped) in cases {
            let mut pod = pod(Some(annotations.clone()));
            pod["metadata"]["labels"] = labels.clone();
            let decision = decide_value(&pod, &config(&[mesh]));
            assert_eq!(
                matches!(decision, Decision::Skipped(_)),
                skipped,
                "{mesh:?} labels {labels} annotations {annotations}: {decision:?}"
            );
        }
    }

    #[test]
    fn several_meshes_at_once() {
        let patched = applied(
            &pod(None),
            &config(&[Mesh::Istio, Mesh::Linkerd, Mesh::Kuma, Mesh::Consul]),
        );
        let annotations = &patched["metadata"]["annotations"];
        for key in [
            istio::EXCLUDE_INBOUND,
            kuma::PROFILE.inbound_key,
            consul::PROFILE.inbound_key,
            RECORD_KEY,
        ] {
            assert_eq!(annotations[key], "25,587", "{key}");
        }
        // 25 and 587 are opaque by Linkerd's default, which a written annotation would replace.
        assert!(
            annotations.get(linkerd_service::OPAQUE_PORTS).is_none(),
            "{annotations}"
        );
    }

    #[test]
    fn auto_follows_the_pods_markers() {
        let auto = Config {
            meshes: MeshSelection {
                explicit: vec![],
                auto: true,
                auto_fallback: vec![Mesh::Istio],
            },
            ..Config::default()
        };
        let mut linkerd_pod = pod(Some(json!({"linkerd.io/inject": "enabled"})));
        linkerd_pod["spec"]["containers"][0]["ports"] =
            json!([{"containerPort": 587}, {"containerPort": 25}, {"containerPort": 143}]);
        let patched = applied(&linkerd_pod, &auto);
        let annotations = &patched["metadata"]["annotations"];
        assert_eq!(annotations[linkerd_service::OPAQUE_PORTS], "25,143,587");
        assert!(annotations.get(istio::EXCLUDE_INBOUND).is_none());
        assert!(
            annotations.get(RECORD_KEY).is_none(),
            "opaque ports are not excluded: {annotations}"
        );
        // No marker: the fallback.
        let patched = applied(&pod(None), &auto);
        assert_eq!(
            patched["metadata"]["annotations"][istio::EXCLUDE_INBOUND],
            "25,587"
        );
    }

    #[test]
    fn outbound_ports_from_config_and_annotation() {
        let mut config = config(&[Mesh::Istio, Mesh::Linkerd, Mesh::Kuma, Mesh::Consul]);
        config.outbound_ports = vec![2525];
        let client = json!({"metadata": {"annotations": {crate::detect::OUTBOUND_PORTS_KEY: "submission, 465"}},
                            "spec": {"containers": [{"name": "app"}]}});
        let patched = applied(&client, &config);
        let annotations = &patched["metadata"]["annotations"];
        for key in [
            istio::EXCLUDE_OUTBOUND,
            linkerd::SKIP_OUTBOUND,
            kuma::PROFILE.outbound_key,
            consul::PROFILE.outbound_key,
            OUTBOUND_RECORD_KEY,
        ] {
            assert_eq!(annotations[key], "465,587,2525", "{key}");
        }
        assert!(
            annotations.get(RECORD_KEY).is_none(),
            "no inbound ports, no inbound record"
        );
        assert!(decide_value(&patched, &config).changes().is_empty());

        let bad = json!({"metadata": {"annotations": {crate::detect::OUTBOUND_PORTS_KEY: "gopher"}}, "spec": {"containers": [{"name": "app"}]}});
        let decision = decide_value(&bad, &Config::default());
        assert!(matches!(decision, Decision::NoPorts { .. }));
        assert!(decision.warnings()[0].contains("serverfirst.dev/outbound-ports ignored"));
    }

    #[test]
    fn ambient_pods_are_left_alone() {
        let mut ambient = pod(None);
        ambient["metadata"]["labels"] = json!({"istio.io/dataplane-mode": "ambient"});
        let decision = decide_value(&ambient, &Config::default());
        assert_eq!(
            decision,
            Decision::Ambient(AmbientPlan {
                ports: [25, 587].into_iter().collect(),
                waypoint: None,
                warnings: vec![]
            })
        );
        // Not Istio's business: other meshes still plan.
        let kuma = decide_value(&ambient, &config(&[Mesh::Istio, Mesh::Kuma]));
        assert!(matches!(kuma, Decision::Planned(_)), "{kuma:?}");
    }
}
