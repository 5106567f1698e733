//! Istio profile: `traffic.sidecar.istio.io/*` annotations and, for pods injected before we
//! saw them without istio-cni, the `istio-init` container's istio-iptables arguments.
//!
//! istio-iptables semantics (tools/istio-iptables/pkg/capture/run.go): `-b` lists the inbound
//! ports to capture; only when it is `*` does `-d` (excludes) apply. The injector builds `-b`
//! from `includeInboundPorts` and `-d` from `15090,15021,<excludeInboundPorts>,15020`; istio-cni
//! reads the same annotations at network setup. A pod annotation replaces the mesh default.

mod init;
pub mod mtls;

use crate::config::IstioSettings;
use crate::mesh::exclusions::Syntax;
use crate::mesh::{Change, MeshPlan, merge_annotation};
use crate::pod::PodView;
use crate::ports::{PortSet, format_port_list, parse_port_list};
use init::{IstioInit, MeshDefaults};

pub const INCLUDE_INBOUND: &str = "traffic.sidecar.istio.io/includeInboundPorts";
pub const EXCLUDE_INBOUND: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
pub const INJECT: &str = "sidecar.istio.io/inject";
pub const INTERCEPTION_MODE: &str = "sidecar.istio.io/interceptionMode";
pub const EXCLUDE_OUTBOUND: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
const STATUS: &str = "sidecar.istio.io/status";

/// The pod's `sidecar.istio.io/inject` setting as the injector reads it: the label when present
/// (even empty), else the annotation (istio pkg/kube/inject/inject.go, `injectRequired`: "if
/// both are present we prefer the label"; istio-cni's cni/pkg/plugin/plugin.go reads it alike).
/// Values are compared exactly: anything but `true`/`false` falls back to the default policy.
fn inject_setting<'p>(pod: &'p PodView<'_>) -> Option<&'p str> {
    pod.label(INJECT).or_else(|| pod.annotation(INJECT))
}

/// Why Istio itself leaves the pod's inbound traffic alone, if it does.
pub fn skip_reason(pod: &PodView<'_>) -> Option<&'static str> {
    if inject_setting(pod) == Some("false") {
        return Some(match pod.label(INJECT) {
            Some(_) => "sidecar injection disabled (label sidecar.istio.io/inject: false)",
            None => "sidecar injection disabled (annotation sidecar.istio.io/inject: false)",
        });
    }
    // The injection template compares the annotation exactly (`eq ... "NONE"`).
    if pod.annotation(INTERCEPTION_MODE) == Some("NONE") {
        return Some("no traffic interception (sidecar.istio.io/interceptionMode: NONE)");
    }
    None
}

/// The pod asks for Istio's sidecar, or already has it.
pub fn injected(pod: &PodView<'_>) -> bool {
    inject_setting(pod) == Some("true")
        || pod.label("istio.io/rev").is_some()
        || pod.annotation(STATUS).is_some()
        || pod.has_container(&["istio-proxy"])
}

/// Plans the changes that take `inbound` and `outbound` ports out of capture.
pub fn plan(
    pod: &PodView<'_>,
    inbound: &PortSet,
    outbound: &PortSet,
    settings: &IstioSettings,
) -> MeshPlan {
    let mut plan = MeshPlan::default();
    merge_annotation(pod, EXCLUDE_OUTBOUND, outbound, Syntax::Ports, &mut plan);
    if inbound.is_empty() {
        return plan;
    }
    let init = IstioInit::find(pod);
    let defaults = init
        .as_ref()
        .map(|init| init.mesh_defaults(pod))
        .unwrap_or_default();
    plan_annotations(pod, inbound, settings, &defaults, &mut plan);
    if let Some(init) = init {
        init.plan(inbound, &mut plan);
    }
    plan
}

/// The `ports` that the pod as it stands keeps out of capture (excluded, or not in an include
/// list): the ones a plan would not touch.
pub fn uncaptured(pod: &PodView<'_>, ports: &PortSet, settings: &IstioSettings) -> PortSet {
    ports
        .iter()
        .copied()
        .filter(|&port| {
            let plan = plan(pod, &PortSet::from([port]), &PortSet::new(), settings);
            plan.changes.is_empty() && plan.warnings.is_empty()
        })
        .collect()
}

/// What an include list (`includeInboundPorts` or `-b`) means.
#[derive(Debug, Clone)]
enum Include {
    All,
    Nothing,
    Only(Vec<u16>),
}

fn parse_include(value: &str) -> Result<Include, crate::ports::PortListError> {
    match value.trim() {
        "*" => Ok(Include::All),
        "" => Ok(Include::Nothing),
        list => parse_port_list(list).map(Include::Only),
    }
}

/// The annotation change; `defaults` are what an already-rendered istio-init shows of the
/// mesh-wide defaults, carried into the annotation because the annotation replaces them.
fn plan_annotations(
    pod: &PodView<'_>,
    ports: &PortSet,
    settings: &IstioSettings,
    defaults: &MeshDefaults,
    plan: &mut MeshPlan,
) {
    let include = match pod.annotation(INCLUDE_INBOUND).map(parse_include) {
        Some(Err(error)) => return plan.warnings.push(unchanged(INCLUDE_INBOUND, &error)),
        Some(Ok(include)) => Some(include),
        None => defaults.include.clone().map(Include::Only),
    };
    let change = match include {
        Some(Include::Nothing) => return,
        // Istio ignores excludes under an explicit include list: shrink the list instead.
        Some(Include::Only(list)) => without(&list, ports).map(|kept| (INCLUDE_INBOUND, kept)),
        None | Some(Include::All) => {
            let existing = match pod.annotation(EXCLUDE_INBOUND) {
                None => Ok(settings.default_exclude_inbound_ports.clone()),
                Some(value) => parse_port_list(value),
            };
            match existing {
                Ok(mut existing) => {
                    let carried: Vec<u16> = defaults
                        .exclude
                        .iter()
                        .copied()
                        .filter(|p| !existing.contains(p))
                        .collect();
                    existing.extend(carried);
                    with(&existing, ports).map(|merged| (EXCLUDE_INBOUND, merged))
                }
                Err(error) => return plan.warnings.push(unchanged(EXCLUDE_INBOUND, &error)),
            }
        }
    };
    if let Some((key, mut value)) = change {
        value.sort_unstable();
        plan.changes.push(Change::SetAnnotation {
            key: key.to_string(),
            value: format_port_list(value),
        });
    }
}

/// `existing` followed by the missing `ports` (ascending); `None` when nothing is missing.
fn with(existing: &[u16], ports: &PortSet) -> Option<Vec<u16>> {
    let missing: Vec<u16> = ports
        .iter()
        .copied()
        .filter(|p| !existing.contains(p))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mut merged = Vec::with_capacity(existing.len() + missing.len());
    for &port in existing {
        if !merged.contains(&port) {
            merged.push(port);
        }
    }
    merged.extend(missing);
    Some(merged)
}

/// `list` without `ports`, order kept; `None` when it contains none of them.
fn without(list: &[u16], ports: &PortSet) -> Option<Vec<u16>> {
    list.iter().any(|p| ports.contains(p)).then(|| {
        let mut kept: Vec<u16> = Vec::with_capacity(list.len());
        for &port in list.iter().filter(|p| !ports.contains(p)) {
            if !kept.contains(&port) {
                kept.push(port);
            }
        }
        kept
    })
}

fn unchanged(what: &str, error: &crate::ports::PortListError) -> String {
    format!("{what} left unchanged: {error} (Istio rejects such a value)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::InitList;
    use serde_json::{Value, json};

    const SMTP_PORTS: &[u16] = &[25, 587];

    fn plan_for(pod: &Value, settings: &IstioSettings) -> MeshPlan {
        let bytes = serde_json::to_vec(pod).unwrap();
        plan(
            &PodView::from_json(&bytes).unwrap(),
            &SMTP_PORTS.iter().copied().collect(),
            &PortSet::new(),
            settings,
        )
    }

    fn set(key: &str, value: &str) -> Change {
        Change::SetAnnotation {
            key: key.to_string(),
            value: value.to_string(),
        }
    }

    fn pod_with_annotations(annotations: Value) -> Value {
        json!({"metadata": {"annotations": annotations}, "spec": {"containers": [{"name": "app"}]}})
    }

    #[test]
    fn annotation_merge_table() {
        let cases: Vec<(&str, Value, Vec<Change>)> = vec![
            (
                "annotations map absent",
                json!({"spec": {}}),
                vec![set(EXCLUDE_INBOUND, "25,587")],
            ),
            (
                "annotations empty",
                pod_with_annotations(json!({})),
                vec![set(EXCLUDE_INBOUND, "25,587")],
            ),
            (
                "existing exclude list with spaces",
                pod_with_annotations(json!({EXCLUDE_INBOUND: " 9090, 8080 "})),
                vec![set(EXCLUDE_INBOUND, "25,587,8080,9090")],
            ),
            (
                "existing exclude with one of the ports",
                pod_with_annotations(json!({EXCLUDE_INBOUND: "587,15020"})),
                vec![set(EXCLUDE_INBOUND, "25,587,15020")],
            ),
            (
                "already excluded, any order",
                pod_with_annotations(json!({EXCLUDE_INBOUND: "587, 25"})),
                vec![],
            ),
            (
                "empty exclude",
                pod_with_annotations(json!({EXCLUDE_INBOUND: ""})),
                vec![set(EXCLUDE_INBOUND, "25,587")],
            ),
            (
                "include *",
                pod_with_annotations(json!({INCLUDE_INBOUND: "*", EXCLUDE_INBOUND: "9090"})),
                vec![set(EXCLUDE_INBOUND, "25,587,9090")],
            ),
            (
                "include * with spaces",
                pod_with_annotations(json!({INCLUDE_INBOUND: " * "})),
                vec![set(EXCLUDE_INBOUND, "25,587")],
            ),
            (
                "explicit include list containing a server-first port",
                pod_with_annotations(
                    json!({INCLUDE_INBOUND: "8080,587, 9090", EXCLUDE_INBOUND: "1"}),
                ),
                vec![set(INCLUDE_INBOUND, "8080,9090")],
            ),
            (
                "explicit include list of only server-first ports",
                pod_with_annotations(json!({INCLUDE_INBOUND: "25,587"})),
                vec![set(INCLUDE_INBOUND, "")],
            ),
            (
                "explicit include list without them",
                pod_with_annotations(json!({INCLUDE_INBOUND: "8080"})),
                vec![],
            ),
            (
                "include empty: nothing captured",
                pod_with_annotations(json!({INCLUDE_INBOUND: ""})),
                vec![],
            ),
        ];
        for (what, pod, expected) in cases {
            let plan = plan_for(&pod, &IstioSettings::default());
            assert_eq!(plan.changes, expected, "{what}");
            assert!(plan.warnings.is_empty(), "{what}: {:?}", plan.warnings);
        }
    }

    #[test]
    fn invalid_existing_values_are_left_intact_with_a_warning() {
        let cases = [
            json!({EXCLUDE_INBOUND: "25,"}),
            json!({EXCLUDE_INBOUND: "*"}),
            json!({EXCLUDE_INBOUND: "1000-2000"}),
            json!({INCLUDE_INBOUND: "http"}),
        ];
        for annotations in cases {
            let plan = plan_for(
                &pod_with_annotations(annotations.clone()),
                &IstioSettings::default(),
            );
            assert!(plan.changes.is_empty(), "{annotations}");
            assert!(
                plan.warnings[0].contains("left unchanged"),
                "{annotations}: {:?}",
                plan.warnings
            );
        }
    }

    #[test]
    fn mesh_default_is_kept_because_the_annotation_replaces_it() {
        let settings = IstioSettings {
            default_exclude_inbound_ports: vec![9000],
            ..IstioSettings::default()
        };
        let plan = plan_for(&pod_with_annotations(json!({})), &settings);
        assert_eq!(plan.changes, [set(EXCLUDE_INBOUND, "25,587,9000")]);
        let covered = IstioSettings {
            default_exclude_inbound_ports: vec![25, 587],
            ..IstioSettings::default()
        };
        assert!(
            plan_for(&pod_with_annotations(json!({})), &covered)
                .changes
                .is_empty()
        );
        // An annotation of the pod's own wins over the default.
        let plan = plan_for(
            &pod_with_annotations(json!({EXCLUDE_INBOUND: "1"})),
            &settings,
        );
        assert_eq!(plan.changes, [set(EXCLUDE_INBOUND, "1,25,587")]);
    }

    fn injected(init: Value, annotations: Value) -> Value {
        json!({"metadata": {"annotations": annotations},
               "spec": {"initContainers": [{"name": "setup"}, init], "containers": [{"name": "app"}]}})
    }

    fn istio_init(args: &[&str]) -> Value {
        json!({"name": "istio-init", "image": "proxyv2", "args": args})
    }

    const INJECTOR_ARGS: &[&str] = &[
        "istio-iptables",
        "-p",
        "15001",
        "-z",
        "15006",
        "-u",
        "1337",
        "-m",
        "REDIRECT",
        "-i",
        "*",
        "-x",
        "",
        "-b",
        "*",
        "-d",
        "15090,15021,15020",
        "--log_output_level=default:info",
    ];

    #[test]
    fn already_injected_without_cni_amends_istio_init() {
        let pod = injected(istio_init(INJECTOR_ARGS), json!({}));
        let plan = plan_for(&pod, &IstioSettings::default());
        assert_eq!(
            plan.changes,
            [
                set(EXCLUDE_INBOUND, "25,587"),
                Change::ReplaceInitWord {
                    container: 1,
                    list: InitList::Args,
                    index: 16,
                    value: "25,587,15020,15021,15090".into()
                },
            ]
        );
    }

    #[test]
    fn istio_init_argument_forms() {
        let cases: Vec<(&str, Vec<&str>, Vec<Change>)> = vec![
            (
                "-d already has them",
                vec!["istio-iptables", "-b", "*", "-d", "15090,25,587"],
                vec![],
            ),
            (
                "long flags with =",
                vec![
                    "istio-iptables",
                    "--istio-inbound-ports=*",
                    "--istio-local-exclude-ports=15090",
                ],
                vec![Change::ReplaceInitWord {
                    container: 1,
                    list: InitList::Args,
                    index: 2,
                    value: "--istio-local-exclude-ports=25,587,15090".into(),
                }],
            ),
            (
                "no -d",
                vec!["istio-iptables", "-b", "*"],
                vec![Change::AppendInitArgs {
                    container: 1,
                    args: vec!["-d".into(), "25,587".into()],
                }],
            ),
            (
                "explicit -b list from the mesh default: the annotation carries it",
                vec!["istio-iptables", "-b", "587,8080,25", "-d", "15020"],
                vec![
                    set(INCLUDE_INBOUND, "8080"),
                    Change::ReplaceInitWord {
                        container: 1,
                        list: InitList::Args,
                        index: 2,
                        value: "8080".into(),
                    },
                ],
            ),
            (
                "-b empty",
                vec!["istio-iptables", "-b", "", "-d", "15020"],
                vec![],
            ),
            (
                "no -b: no inbound capture",
                vec!["istio-iptables", "-d", "15020"],
                vec![],
            ),
            (
                "last -d wins",
                vec!["istio-iptables", "-b", "*", "-d", "1", "-d", "25,587"],
                vec![],
            ),
        ];
        for (what, args, expected) in cases {
            let pod = injected(istio_init(&args), json!({EXCLUDE_INBOUND: "25,587"}));
            assert_eq!(
                plan_for(&pod, &IstioSettings::default()).changes,
                expected,
                "{what}"
            );
        }
    }

    #[test]
    fn invalid_istio_init_values_warn() {
        let pod = injected(
            istio_init(&["istio-iptables", "-b", "*", "-d", "15090,"]),
            json!({EXCLUDE_INBOUND: "25,587"}),
        );
        let plan = plan_for(&pod, &IstioSettings::default());
        assert!(plan.changes.is_empty());
        assert!(
            plan.warnings[0].starts_with("istio-init -d left unchanged"),
            "{:?}",
            plan.warnings
        );
    }

    #[test]
    fn cni_validation_container_is_not_touched() {
        let validation = json!({"name": "istio-validation", "args": [
            "istio-iptables", "-p", "15001", "-b", "*", "-d", "15090,15021,15020",
            "--run-validation", "--skip-rule-apply"]});
        let pod = injected(
            validation,
            json!({EXCLUDE_INBOUND: "15020", INCLUDE_INBOUND: "*"}),
        );
        assert_eq!(
            plan_for(&pod, &IstioSettings::default()).changes,
            [set(EXCLUDE_INBOUND, "25,587,15020")]
        );
    }

    /// The istio-init container of Istio 1.4 and 1.5 (pkg/kube/inject/testdata/inject/
    /// hello.yaml.injected at 1.4.0): the call is the container's `command`.
    #[test]
    fn istio_init_with_the_call_in_command() {
        let init = json!({"name": "istio-init", "image": "docker.io/istio/proxy_init:1.4.0",
            "command": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
                        "-i", "*", "-x", "", "-b", "*", "-d", "15020"],
            "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}, "runAsUser": 0}});
        let pod = injected(init, json!({EXCLUDE_INBOUND: "15020"}));
        assert_eq!(
            plan_for(&pod, &IstioSettings::default()).changes,
            [
                set(EXCLUDE_INBOUND, "25,587,15020"),
                Change::ReplaceInitWord {
                    container: 1,
                    list: InitList::Command,
                    index: 16,
                    value: "25,587,15020".into()
                },
            ]
        );
    }

    /// Istio 1.3–1.5 wrote `excludeInboundPorts: "15020"` into the pod and `-d 15020`: both
    /// merged values come out ascending, each port once, as every list serverfirst writes.
    #[test]
    fn istio_1_4_pods_get_merged_lists_ascending_without_duplicates() {
        let init = json!({"name": "istio-init", "image": "docker.io/istio/proxy_init:1.4.0",
            "command": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
                        "-i", "*", "-x", "", "-b", "*", "-d", "15020,15020"]});
        let pod = injected(init, json!({EXCLUDE_INBOUND: "15020"}));
        let bytes = serde_json::to_vec(&pod).unwrap();
        let plan = plan(
            &PodView::from_json(&bytes).unwrap(),
            &PortSet::from([587]),
            &PortSet::new(),
            &IstioSettings::default(),
        );
        assert_eq!(
            plan.changes,
            [
                set(EXCLUDE_INBOUND, "587,15020"),
                Change::ReplaceInitWord {
                    container: 1,
                    list: InitList::Command,
                    index: 16,
                    value: "587,15020".into()
                },
            ]
        );
        // An explicit -b list loses the ports and is written the same way.
        let init =
            json!({"name": "istio-init", "args": ["istio-iptables", "-b", "9000,587,8080,9000"]});
        let pod = injected(init, json!({INCLUDE_INBOUND: "9000,587,8080"}));
        assert_eq!(
            plan_for(&pod, &IstioSettings::default()).changes,
            [
                set(INCLUDE_INBOUND, "8080,9000"),
                Change::ReplaceInitWord {
                    container: 1,
                    list: InitList::Args,
                    index: 2,
                    value: "8080,9000".into()
                },
            ]
        );
    }

    /// Istio 1.3 (pilot/pkg/kube/inject/testdata/inject/hello.yaml.injected at 1.3.0): the
    /// `proxy_init` image's entrypoint runs istio-iptables, `args` holds bare flags.
    #[test]
    fn istio_init_with_bare_flags_for_the_image_entrypoint() {
        let init = json!({"name": "istio-init", "image": "docker.io/istio/proxy_init:1.3.0",
            "args": ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*",
                     "-x", "", "-b", "*", "-d", "15020"]});
        let pod = injected(init, json!({EXCLUDE_INBOUND: "15020"}));
        assert_eq!(
            plan_for(&pod, &IstioSettings::default()).changes[1],
            Change::ReplaceInitWord {
                container: 1,
                list: InitList::Args,
                index: 15,
                value: "25,587,15020".into()
            }
        );
        // A container of another name with bare flags is not Istio's.
        let other = json!({"name": "setup-net", "args": ["-b", "*", "-d", "15020"]});
        let pod = injected(other, json!({EXCLUDE_INBOUND: "15020"}));
        assert_eq!(
            plan_for(&pod, &IstioSettings::default()).changes,
            [set(EXCLUDE_INBOUND, "25,587,15020")]
        );
    }

    /// An injected pod whose `-d` shows the mesh-wide `global.proxy.excludeInboundPorts`
    /// (9000,9001): the annotation serverfirst writes replaces that default on re-injection,
    /// so it carries it.
    #[test]
    fn mesh_default_excludes_shown_by_istio_init_survive() {
        let mut args = INJECTOR_ARGS.to_vec();
        args[16] = "15090,15021,9001,9000,15020";
        let pod = injected(istio_init(&args), json!({}));
        let plan = plan_for(&pod, &IstioSettings::default());
        assert_eq!(plan.changes[0], set(EXCLUDE_INBOUND, "25,587,9000,9001"));
        // The pod's own annotation replaced the default: nothing else to carry.
        args[16] = "15090,15021,9000,15020";
        let pod = injected(istio_init(&args), json!({EXCLUDE_INBOUND: "9000"}));
        let plan = plan_for(&pod, &IstioSettings::default());
        assert_eq!(plan.changes[0], set(EXCLUDE_INBOUND, "25,587,9000"));
        // Another status port is the injector's too, not a default.
        args[16] = "15090,15021,15030";
        let pod = injected(
            istio_init(&args),
            json!({"status.sidecar.istio.io/port": "15030"}),
        );
        let plan = plan_for(&pod, &IstioSettings::default());
        assert_eq!(plan.changes[0], set(EXCLUDE_INBOUND, "25,587"));
    }

    #[test]
    fn opt_outs_follow_the_injectors_precedence() {
        let smtp = json!({"containers": [{"ports": [{"containerPort": 25}]}]});
        let cases = [
            (json!({"labels": {INJECT: "false"}}), true),
            (json!({"annotations": {INJECT: "false"}}), true),
            (json!({"labels": {INJECT: "true"}}), false),
            // The label wins when both are there, in either direction.
            (
                json!({"labels": {INJECT: "true"}, "annotations": {INJECT: "false"}}),
                false,
            ),
            (
                json!({"labels": {INJECT: "false"}, "annotations": {INJECT: "true"}}),
                true,
            ),
            // A label present but empty still hides the annotation: default policy.
            (
                json!({"labels": {INJECT: ""}, "annotations": {INJECT: "false"}}),
                false,
            ),
            // Istio compares exactly; " false" is invalid and means the default policy.
            (json!({"labels": {INJECT: " false"}}), false),
            (json!({"annotations": {INTERCEPTION_MODE: "NONE"}}), true),
            (json!({"annotations": {INTERCEPTION_MODE: "TPROXY"}}), false),
            (json!({}), false),
        ];
        for (metadata, skipped) in cases {
            let bytes = serde_json::to_vec(&json!({"metadata": metadata, "spec": smtp})).unwrap();
            let pod = PodView::from_json(&bytes).unwrap();
            assert_eq!(skip_reason(&pod).is_some(), skipped, "{metadata}");
        }
    }

    #[test]
    fn injection_markers_follow_the_same_precedence() {
        let cases = [
            (json!({"labels": {INJECT: "true"}}), true),
            (
                json!({"labels": {INJECT: "false"}, "annotations": {INJECT: "true"}}),
                false,
            ),
            (json!({"annotations": {INJECT: "true"}}), true),
            (json!({"labels": {"istio.io/rev": "canary"}}), true),
        ];
        for (metadata, expected) in cases {
            let bytes = serde_json::to_vec(&json!({"metadata": metadata})).unwrap();
            assert_eq!(
                super::injected(&PodView::from_json(&bytes).unwrap()),
                expected,
                "{metadata}"
            );
        }
    }
}
