//! Properties of the webhook's answer for arbitrary pods: the patch applies, a second pass
//! changes nothing, and nothing serverfirst does not own is removed or altered.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{Map, Value, json};
use serverfirst::admission::review;
use serverfirst::config::{Config, Mode};
use serverfirst::mesh_state::{MeshObject, MeshState};
use serverfirst::ports::parse_port_list;

const EXCLUDE: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
const INCLUDE: &str = "traffic.sidecar.istio.io/includeInboundPorts";
const RECORD: &str = "serverfirst.dev/excluded-ports";

fn port_list() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("*".to_string()),
        Just(" * ".to_string()),
        prop::collection::vec(
            prop_oneof![
                Just(25u16),
                Just(587),
                Just(15020),
                Just(8080),
                any::<u16>()
            ],
            0..5
        )
        .prop_map(|ports| ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")),
        "[0-9,* a-z-]{0,12}",
    ]
}

fn annotations() -> impl Strategy<Value = Option<Map<String, Value>>> {
    let keys = prop::sample::select(vec![
        EXCLUDE,
        INCLUDE,
        RECORD,
        "serverfirst.dev/extra-ports",
        "sidecar.istio.io/inject",
        "sidecar.istio.io/interceptionMode",
        "serverfirst.dev/skip",
        "app.kubernetes.io/name",
        "x/y~z",
    ]);
    let values = prop_oneof![
        port_list(),
        Just("true".to_string()),
        Just("false".to_string()),
        Just("NONE".to_string())
    ];
    prop::option::of(
        prop::collection::btree_map(keys, values, 0..6).prop_map(|map| {
            map.into_iter()
                .map(|(k, v)| (k.to_string(), Value::String(v)))
                .collect()
        }),
    )
}

fn container_port() -> impl Strategy<Value = Value> {
    let number = prop_oneof![
        Just(21i64),
        Just(25),
        Just(465),
        Just(587),
        Just(143),
        Just(1587),
        Just(30000),
        0i64..70000
    ];
    let name = prop::option::of(prop::sample::select(vec![
        "smtp",
        "tcp-smtp",
        "submission-x",
        "pasv-1",
        "ftp",
        "ftp-data",
        "http",
        "imaps",
        "tls-imap",
    ]));
    let protocol = prop::option::of(prop::sample::select(vec!["TCP", "UDP", "SCTP"]));
    (number, name, protocol).prop_map(|(number, name, protocol)| {
        let mut port = json!({"containerPort": number});
        if let Some(name) = name {
            port["name"] = json!(name);
        }
        if let Some(protocol) = protocol {
            port["protocol"] = json!(protocol);
        }
        port
    })
}

fn container() -> impl Strategy<Value = Value> {
    (prop::collection::vec(container_port(), 0..4), prop::option::of(Just("Always"))).prop_map(|(ports, restart)| {
        let mut container = json!({"name": "c", "image": "i", "ports": ports, "env": [{"name": "A", "value": "b"}]});
        if let Some(restart) = restart { container["restartPolicy"] = json!(restart); }
        container
    })
}

fn istio_init() -> impl Strategy<Value = Value> {
    let flag_value = |flags: &'static [&'static str]| {
        (
            prop::sample::select(flags.to_vec()),
            port_list(),
            any::<bool>(),
        )
    };
    (
        flag_value(&["-b", "--istio-inbound-ports"]),
        prop::option::of(flag_value(&["-d", "--istio-local-exclude-ports"])),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|((b_flag, b, b_eq), d, validation, in_command)| {
            let mut args = vec!["istio-iptables".to_string(), "-p".into(), "15001".into()];
            let mut push = |flag: &str, value: String, joined: bool| match joined {
                true => args.push(format!("{flag}={value}")),
                false => args.extend([flag.to_string(), value]),
            };
            push(b_flag, b, b_eq);
            if let Some((d_flag, d, d_eq)) = d {
                push(d_flag, d, d_eq);
            }
            if validation {
                args.extend([
                    "--run-validation".to_string(),
                    "--skip-rule-apply".to_string(),
                ]);
            }
            // Istio 1.4-1.5 put the call in `command`, later releases in `args`.
            let list = if in_command { "command" } else { "args" };
            json!({"name": if validation { "istio-validation" } else { "istio-init" }, list: args})
        })
}

fn pod() -> impl Strategy<Value = Value> {
    (annotations(), prop::collection::vec(container(), 0..3), prop::collection::vec(prop_oneof![container(), istio_init()], 0..3), any::<bool>(), any::<bool>())
        .prop_map(|(annotations, containers, inits, host_network, with_metadata)| {
            let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
                                 "spec": {"containers": containers, "initContainers": inits, "hostNetwork": host_network && containers_len_odd(&annotations)}});
            if with_metadata {
                let mut metadata = json!({"generateName": "p-", "labels": {"app": "p"}});
                if let Some(annotations) = annotations { metadata["annotations"] = Value::Object(annotations); }
                pod["metadata"] = metadata;
            }
            pod
        })
}

/// Keeps hostNetwork pods rare without a second strategy.
fn containers_len_odd(annotations: &Option<Map<String, Value>>) -> bool {
    annotations.as_ref().is_some_and(|a| a.len() % 2 == 1)
}

fn answer(pod: &Value) -> Option<json_patch::Patch> {
    answer_under(pod, &MeshState::default())
}

/// Ports on which the mesh state of [`strict_ports_state`] enforces identity for `app: p`.
const STRICT_PORTS: [u16; 4] = [25, 143, 587, 30000];

/// A workload PeerAuthentication in `n` for `app: p` (the generated pods' label): STRICT on
/// [`STRICT_PORTS`], PERMISSIVE elsewhere.
fn strict_ports_state() -> MeshState {
    let port_level: Map<String, Value> = STRICT_PORTS
        .iter()
        .map(|port| (port.to_string(), json!({"mode": "STRICT"})))
        .collect();
    let policy = json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"namespace": "n", "name": "p"},
        "spec": {"selector": {"matchLabels": {"app": "p"}}, "portLevelMtls": port_level}});
    MeshState::new(
        "istio-system",
        [MeshObject::from_value(&policy).unwrap().unwrap()],
    )
}

fn answer_under(pod: &Value, mesh: &MeshState) -> Option<json_patch::Patch> {
    let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE", "namespace": "n", "object": pod}});
    let reviewed = review(
        &serde_json::to_vec(&body).unwrap(),
        Mode::Enforce,
        &Config::default(),
        mesh,
    )
    .expect("valid review");
    let response: Value = serde_json::from_slice(&reviewed.body).unwrap();
    assert_eq!(response["response"]["allowed"], true);
    let patch = response["response"]["patch"].as_str()?;
    Some(
        serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(patch)
                .unwrap(),
        )
        .unwrap(),
    )
}

fn annotation<'v>(pod: &'v Value, key: &str) -> Option<&'v str> {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// The last value of flag `short`/`long` of the pod's istio-init container.
fn istio_init_flag<'v>(pod: &'v Value, short: &str, long: &str) -> Option<&'v str> {
    let init = pod
        .pointer("/spec/initContainers")?
        .as_array()?
        .iter()
        .find(|c| c["name"] == "istio-init")?;
    let list = init.get("args").or_else(|| init.get("command"))?;
    let args: Vec<&str> = list.as_array()?.iter().filter_map(Value::as_str).collect();
    args.iter()
        .enumerate()
        .rev()
        .find_map(|(at, arg)| match *arg {
            flag if flag == short || flag == long => args.get(at + 1).copied(),
            _ => arg
                .strip_prefix(&format!("{long}="))
                .or_else(|| arg.strip_prefix(&format!("{short}="))),
        })
}

/// The `-b` port list of the pod's istio-init container, when it is an explicit list.
fn istio_init_include(pod: &Value) -> Option<BTreeSet<u16>> {
    match istio_init_flag(pod, "-b", "--istio-inbound-ports")?.trim() {
        "*" | "" => None,
        list => port_set(Some(list)),
    }
}

fn port_set(value: Option<&str>) -> Option<BTreeSet<u16>> {
    parse_port_list(value.unwrap_or_default())
        .ok()
        .map(|ports| ports.into_iter().collect())
}

const CASES: u32 = 2000;

#[test]
fn patch_applies_is_idempotent_and_touches_only_what_it_owns() {
    let config = ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let patched_pods = AtomicUsize::new(0);
    let result = TestRunner::new(config).run(&pod(), |pod| {
        let Some(patch) = answer(&pod) else {
            return Ok(());
        };
        patched_pods.fetch_add(1, Ordering::Relaxed);
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &patch)
            .expect("the patch applies to the object it was made for");
        prop_assert!(
            answer(&patched).is_none(),
            "second pass patched again: {patched}"
        );

        // Annotations serverfirst does not own are untouched.
        let before = pod
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let after = patched
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (key, value) in &before {
            if ![EXCLUDE, INCLUDE, RECORD].contains(&key.as_str()) {
                prop_assert_eq!(after.get(key), Some(value), "annotation {} altered", key);
            }
        }
        // An explicit `-b` of a rendered istio-init is the mesh-wide include default; the
        // include annotation that replaces it on re-injection may be written.
        let init_include = istio_init_include(&pod);
        for key in after.keys() {
            prop_assert!(
                before.contains_key(key)
                    || [EXCLUDE, RECORD].contains(&key.as_str())
                    || (key == INCLUDE && init_include.is_some()),
                "annotation {} added",
                key
            );
        }
        // Documented merges only: excludes grow, explicit includes shrink.
        if annotation(&pod, EXCLUDE) != annotation(&patched, EXCLUDE) {
            let (old, new) = (
                port_set(annotation(&pod, EXCLUDE)),
                port_set(annotation(&patched, EXCLUDE)),
            );
            let new = new.expect("serverfirst writes valid port lists");
            prop_assert!(old.is_some(), "rewrote an invalid exclude list");
            prop_assert!(old.unwrap().is_subset(&new));
        }
        if annotation(&pod, INCLUDE) != annotation(&patched, INCLUDE) {
            let old = match annotation(&pod, INCLUDE) {
                Some(value) => port_set(Some(value)),
                None => init_include.clone(),
            };
            let new = port_set(annotation(&patched, INCLUDE));
            prop_assert!(
                new.expect("valid")
                    .is_subset(&old.expect("was a valid list"))
            );
        }
        // Nothing outside metadata.annotations and istio-init's args changes.
        let mut rest_before = pod.clone();
        let mut rest_after = patched.clone();
        for value in [&mut rest_before, &mut rest_after] {
            if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
                metadata.remove("annotations");
            }
            if let Some(inits) = value
                .pointer_mut("/spec/initContainers")
                .and_then(Value::as_array_mut)
            {
                for init in inits.iter_mut().filter(|c| c["name"] == "istio-init") {
                    let init = init.as_object_mut().unwrap();
                    init.remove("args");
                    init.remove("command");
                }
            }
        }
        if pod.get("metadata").is_none() {
            rest_after.as_object_mut().unwrap().remove("metadata");
        }
        prop_assert_eq!(rest_before, rest_after);
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    // Straight to stderr: libtest captures `println!` of passing tests, and CI shows the count.
    let _ = writeln!(
        std::io::stderr(),
        "properties: {CASES} generated pods, {} of them patched; failures = 0",
        patched_pods.load(Ordering::Relaxed)
    );
}

/// Never take away security the operator switched on: where the mesh enforces identity on a
/// port, the webhook never takes it out of capture (no new exclude, no narrower include list),
/// its record names only such ports, and its patch is still idempotent.
#[test]
fn a_port_the_mesh_enforces_identity_on_never_leaves_capture() {
    let config = ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mesh = strict_ports_state();
    let kept_pods = AtomicUsize::new(0);
    let result = TestRunner::new(config).run(&pod(), |pod| {
        let Some(patch) = answer_under(&pod, &mesh) else {
            return Ok(());
        };
        // The policy selects `app: p`: pods generated without metadata have no labels.
        let strict: BTreeSet<u16> = match pod.pointer("/metadata/labels/app") {
            Some(app) if app == "p" => STRICT_PORTS.into_iter().collect(),
            _ => BTreeSet::new(),
        };
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &patch).expect("the patch applies");
        prop_assert!(answer_under(&patched, &mesh).is_none(), "patched again");
        let grown = |key: &str| -> BTreeSet<u16> {
            let old = port_set(annotation(&pod, key)).unwrap_or_default();
            let new = port_set(annotation(&patched, key)).unwrap_or_default();
            new.difference(&old).copied().collect()
        };
        // A rendered istio-init's `-d` shows the mesh-wide excludes, which the annotation
        // carries: those ports were out of capture already.
        let shown = port_set(istio_init_flag(&pod, "-d", "--istio-local-exclude-ports"))
            .unwrap_or_default();
        let newly_excluded: BTreeSet<u16> = grown(EXCLUDE).difference(&shown).copied().collect();
        prop_assert!(
            newly_excluded.is_disjoint(&strict),
            "excluded {:?} under STRICT",
            newly_excluded
        );
        if annotation(&pod, INCLUDE) != annotation(&patched, INCLUDE) {
            let old = port_set(annotation(&pod, INCLUDE)).unwrap_or_default();
            let new = port_set(annotation(&patched, INCLUDE)).unwrap_or_default();
            let dropped: BTreeSet<u16> = old.difference(&new).copied().collect();
            prop_assert!(dropped.is_disjoint(&strict), "uncaptured {:?}", dropped);
        }
        if let Some(kept) = port_set(annotation(&patched, "serverfirst.dev/kept-ports")) {
            kept_pods.fetch_add(1, Ordering::Relaxed);
            prop_assert!(kept.is_subset(&strict), "kept {:?}", kept);
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let kept = kept_pods.load(Ordering::Relaxed);
    let _ = writeln!(
        std::io::stderr(),
        "properties: {CASES} generated pods under STRICT ports, {kept} of them with kept ports; failures = 0"
    );
    assert!(kept > 0, "the strategy never reached a kept port");
}
