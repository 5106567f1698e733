//! The install manifests under `manifests/`.
//!
//! - Every overlay keeps the webhook's ordering and hygiene guarantees. Checked in pure Rust on the
//!   YAML as written (a small model of what kustomize does with it, always runs), and again on
//!   what kustomize renders.
//! - Every overlay and example renders with `kubectl kustomize`, and every rendered object of a
//!   built-in kind passes `kubernetes-validate --strict` (offline JSON schemas) for the oldest and
//!   the newest Kubernetes we check. Custom resources (cert-manager's Issuer and Certificate,
//!   Istio's DestinationRule) are not in those schemas: their shape is checked here instead.
//!
//! The tools come from `.ci/install-manifest-tools`. When one is missing the rendering test says
//! `SKIPPED: <why>` and passes, unless `CI=true` or `SERVERFIRST_REQUIRE_E2E=1`: then it fails.

mod common;
#[path = "support/manifest_tools.rs"]
mod manifest_tools;

use std::collections::BTreeSet;
use std::path::Path;

use manifest_tools::*;
use serde_json::{Value, json};

const OVERLAYS: [&str; 4] = [
    "namespace-opt-in",
    "cluster-wide",
    "cluster-audit",
    "cert-manager",
];
const EXAMPLES: [&str; 2] = ["mox", "smtp-smoke"];

// ---------------------------------------------------------------------------------------------
// Pure Rust: the YAML as written

#[test]
fn every_overlay_sorts_before_istio_and_never_intercepts_itself() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(manifests_dir().join("overlays"))
        .expect("manifests/overlays")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let known: BTreeSet<String> = OVERLAYS.iter().map(|s| s.to_string()).collect();
    assert_eq!(on_disk, known, "every overlay is checked, and only those");

    for overlay in OVERLAYS {
        let objects = build(&manifests_dir().join("overlays").join(overlay), Vec::new());
        let configuration = check_overlay(overlay, &objects);
        let injected = &configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"];
        if overlay == "cert-manager" {
            assert_eq!(injected, &format!("{NAMESPACE}/{SECRET}"), "{overlay}");
        } else {
            assert!(
                injected.is_null(),
                "{overlay}: caBundle comes from serverfirst certs"
            );
        }
    }
}

#[test]
fn every_overlay_with_the_companions_line_uncommented() {
    for overlay in OVERLAYS {
        let objects = build_with_companions(overlay);
        check_overlay(overlay, &objects);
        check_companions(overlay, &objects);
    }
}

/// The companions controller as every overlay installs it: its own Deployment with the
/// webhook's securityContext, exactly the RBAC it uses, and in the namespace opt-in installs
/// the webhook's namespace label as its scope.
fn check_companions(overlay: &str, objects: &[Value]) {
    let context = format!("{overlay} with companions");
    let webhook = &named(objects, "Deployment", SERVICE, &context)["spec"]["template"]["spec"];
    let deployment = named(objects, "Deployment", COMPANIONS, &context);
    assert_eq!(deployment["metadata"]["namespace"], NAMESPACE, "{context}");
    let pod = &deployment["spec"]["template"];
    assert_eq!(
        pod["metadata"]["labels"]["serverfirst.dev/skip"], "true",
        "{context}"
    );
    assert_eq!(
        pod["metadata"]["labels"]["sidecar.istio.io/inject"], "false",
        "{context}"
    );
    let spec = &pod["spec"];
    assert_eq!(spec["serviceAccountName"], COMPANIONS, "{context}");
    assert_eq!(
        spec["securityContext"], webhook["securityContext"],
        "{context}: pod securityContext"
    );
    let container = &spec["containers"][0];
    assert_eq!(
        container["securityContext"], webhook["containers"][0]["securityContext"],
        "{context}: container securityContext"
    );
    let args: Vec<&str> = strings(&container["args"]).collect();
    assert_eq!(args[0], "companions", "{context}");
    let selectors: Vec<&&str> = args
        .iter()
        .filter(|a| a.starts_with("--namespace-selector"))
        .collect();
    let opt_in = matches!(overlay, "namespace-opt-in" | "cert-manager");
    let wanted: &[&str] = if opt_in {
        &["--namespace-selector=serverfirst.dev/mode=enforce"]
    } else {
        &[]
    };
    assert_eq!(
        selectors,
        wanted.iter().collect::<Vec<_>>(),
        "{context}: scope"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["port"], "metrics",
            "{context}: {probe}"
        );
    }

    let role = named(objects, "ClusterRole", COMPANIONS, &context);
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": [""], "resources": ["services", "pods", "namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            {"apiGroups": ["networking.istio.io"], "resources": ["destinationrules"],
                "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}
        ]),
        "{context}: exactly the verbs the controller uses"
    );
    let binding = named(objects, "ClusterRoleBinding", COMPANIONS, &context);
    assert_eq!(binding["roleRef"]["name"], COMPANIONS, "{context}");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": COMPANIONS, "namespace": NAMESPACE}]),
        "{context}"
    );
    let account = named(objects, "ServiceAccount", COMPANIONS, &context);
    assert!(
        account.get("automountServiceAccountToken").is_none(),
        "{context}: the controller needs its token"
    );
}

#[test]
fn container_args_use_options_the_binary_has() {
    let workloads = [
        ("base", manifests_dir().join("base")),
        ("smtp-smoke", manifests_dir().join("examples/smtp-smoke")),
    ];
    let mut deployments: Vec<(&str, Value)> = workloads
        .iter()
        .map(|(name, dir)| {
            (
                *name,
                only(&build(dir, Vec::new()), "Deployment", name).clone(),
            )
        })
        .collect();
    let opted_in = build_with_companions("namespace-opt-in");
    deployments.push((
        "companions",
        named(&opted_in, "Deployment", COMPANIONS, "companions").clone(),
    ));
    for (name, deployment) in &deployments {
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> = strings(&container["args"]).collect();
        let subcommand = args[0];
        let options = common::subcommand_options(subcommand)
            .unwrap_or_else(|| panic!("`serverfirst {subcommand} --help` lists no options"));
        for flag in args.iter().filter(|a| a.starts_with("--")) {
            let flag = flag.split('=').next().unwrap();
            assert!(
                options.iter().any(|o| o == flag),
                "{name}: `serverfirst {subcommand}` has no option {flag} (it has {options:?})"
            );
        }
    }
}

/// A model of `kustomize build` for the features these kustomizations use: `resources` (files and
/// directories), `components`, and JSON 6902 `patches` targeted by kind and name. Any other field
/// fails the test, so the model cannot silently drift from what kustomize does. The certificate
/// component that `serverfirst certs --kustomize` writes (outside manifests/) is skipped: it adds
/// only the Secret and the caBundle, which the rendering test checks.
fn build(dir: &Path, objects: Vec<Value>) -> Vec<Value> {
    let path = dir.join("kustomization.yaml");
    let kustomization = read_yaml(&path).pop().expect("a kustomization");
    build_kustomization(dir, &kustomization, objects)
}

/// [`build`] of an overlay with its companions line uncommented.
fn build_with_companions(overlay: &str) -> Vec<Value> {
    let dir = manifests_dir().join("overlays").join(overlay);
    let text = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    let kustomization = parse_yaml(&uncomment_companions(overlay, &text), overlay)
        .pop()
        .expect("a kustomization");
    build_kustomization(&dir, &kustomization, Vec::new())
}

fn build_kustomization(dir: &Path, kustomization: &Value, mut objects: Vec<Value>) -> Vec<Value> {
    let path = dir.join("kustomization.yaml");
    for key in kustomization.as_object().expect("a mapping").keys() {
        assert!(
            ["apiVersion", "kind", "resources", "components", "patches"].contains(&key.as_str()),
            "{}: `{key}` is not modelled by this test's build(); extend it",
            path.display()
        );
    }
    for resource in strings(&kustomization["resources"]) {
        let resource = common::normalize(&dir.join(resource));
        if resource.is_dir() {
            objects = build(&resource, objects);
        } else {
            objects.extend(read_yaml(&resource));
        }
    }
    for component in strings(&kustomization["components"]) {
        let component = common::normalize(&dir.join(component));
        if component.starts_with(manifests_dir()) {
            objects = build(&component, objects);
        } else {
            assert!(
                component.ends_with("certs/out"),
                "{}: unexpected component {}",
                path.display(),
                component.display()
            );
        }
    }
    for patch in kustomization["patches"].as_array().into_iter().flatten() {
        let target = &patch["target"];
        let operations: json_patch::Patch = match &patch["patch"] {
            Value::String(text) => serde_saphyr::from_str(text).expect("a JSON 6902 patch"),
            _ => panic!(
                "{}: only inline JSON 6902 patches are modelled",
                path.display()
            ),
        };
        let mut matched = 0;
        for object in &mut objects {
            if object["kind"] == target["kind"] && object["metadata"]["name"] == target["name"] {
                json_patch::patch(object, &operations.0)
                    .unwrap_or_else(|e| panic!("{}: patch fails: {e}", path.display()));
                matched += 1;
            }
        }
        // kustomize skips a patch whose target is absent: the opt-in companions Deployment.
        let allowed = if target["name"] == COMPANIONS {
            0..=1
        } else {
            1..=1
        };
        assert!(
            allowed.contains(&matched),
            "{}: patch target {target} matches one object",
            path.display()
        );
    }
    objects
}

fn strings(list: &Value) -> impl Iterator<Item = &str> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|v| v.as_str().expect("a path"))
}

// ---------------------------------------------------------------------------------------------
// With the tools: what kustomize renders, validated against the Kubernetes schemas

#[test]
fn overlays_and_examples_render_and_pass_strict_schema_validation() {
    let Some(tools) = Tools::find() else { return };

    let scratch = tempfile::tempdir().unwrap();
    let (manifests, component, ca_bundle) = manifests_with_certificates(scratch.path());

    let rendered_dir = scratch.path().join("rendered");
    std::fs::create_dir(&rendered_dir).unwrap();
    let mut files = Vec::new();

    for overlay in OVERLAYS {
        let objects = tools.kustomize(&manifests.join("overlays").join(overlay));
        let configuration = check_overlay(overlay, &objects);
        for object in &objects {
            let annotations = &object["metadata"]["annotations"];
            assert!(
                annotations["config.kubernetes.io/local-config"].is_null(),
                "{overlay}: a build-only object leaked into the output: {}",
                object["metadata"]["name"]
            );
        }
        let bundles = ca_bundles(configuration);
        if overlay == "cert-manager" {
            assert!(
                bundles.iter().all(|b| b.is_null()),
                "{overlay}: cainjector sets caBundle"
            );
            check_cert_manager(overlay, &objects, configuration);
        } else {
            assert!(
                bundles.iter().all(|b| **b == ca_bundle),
                "{overlay}: caBundle of every webhook"
            );
            check_generated_secret(overlay, &objects, &component);
        }
        files.push(write_builtin_kinds(&rendered_dir, overlay, &objects));
    }

    for example in EXAMPLES {
        let objects = tools.kustomize(&manifests.join("examples").join(example));
        check_example(example, &objects);
        files.push(write_builtin_kinds(&rendered_dir, example, &objects));
    }

    // Again with the companions line of each overlay uncommented.
    for overlay in OVERLAYS {
        let dir = manifests.join("overlays").join(overlay);
        enable_companions(&dir);
        let objects = tools.kustomize(&dir);
        check_overlay(overlay, &objects);
        check_companions(overlay, &objects);
        let name = format!("{overlay}-companions");
        files.push(write_builtin_kinds(&rendered_dir, &name, &objects));
    }

    let audit = tools.kustomize(&manifests.join("audit"));
    check_audit_rbac(&audit);
    files.push(write_builtin_kinds(&rendered_dir, "audit", &audit));
    let nightly = tools.kustomize(&manifests.join("audit").join("nightly"));
    check_nightly_audit(&nightly);
    files.push(write_builtin_kinds(
        &rendered_dir,
        "audit-nightly",
        &nightly,
    ));

    for version in KUBERNETES_VERSIONS {
        tools.validate(version, &files);
    }
}

/// The audit Job's role grants exactly `list` of pods, Services, namespaces, Istio's security
/// policies and Gateways, and `get replicasets`.
fn check_audit_rbac(objects: &[Value]) {
    let role = only(objects, "ClusterRole", "audit");
    assert_eq!(
        role["rules"],
        serde_json::json!([
            {"apiGroups": [""], "resources": ["pods", "services", "namespaces"], "verbs": ["list"]},
            {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get"]},
            {"apiGroups": ["security.istio.io"], "resources": ["peerauthentications", "authorizationpolicies"],
             "verbs": ["list"]},
            {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["gateways"], "verbs": ["list"]}
        ]),
        "audit: least privilege"
    );
    let job = only(objects, "Job", "audit");
    let args = &job["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(args[0], "audit", "audit: the Job runs `serverfirst audit`");
}

/// The nightly CronJob writes PolicyReports: the read role plus exactly create, patch, list and
/// delete on policyreports, bound to the same ServiceAccount.
fn check_nightly_audit(objects: &[Value]) {
    let role = |name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("audit nightly: no ClusterRole {name}"))
    };
    assert_eq!(
        role("serverfirst-audit-reports")["rules"],
        serde_json::json!([{"apiGroups": ["wgpolicyk8s.io"], "resources": ["policyreports"],
                            "verbs": ["create", "patch", "list", "delete"]}]),
        "audit nightly: least privilege on reports"
    );
    assert_eq!(
        role("serverfirst-audit")["rules"][0]["verbs"],
        serde_json::json!(["list"])
    );
    for binding in objects.iter().filter(|o| o["kind"] == "ClusterRoleBinding") {
        assert_eq!(
            binding["subjects"],
            serde_json::json!([{"kind": "ServiceAccount", "name": "serverfirst-audit", "namespace": NAMESPACE}])
        );
    }
    assert!(
        objects.iter().all(|o| o["kind"] != "Job"),
        "audit nightly: no one-shot Job"
    );
    let cronjob = only(objects, "CronJob", "audit nightly");
    let container = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["args"],
        serde_json::json!(["audit", "-A", "-o", "policyreport", "--apply"])
    );
    assert!(
        container["resources"]["limits"]["memory"].is_string(),
        "audit nightly: a memory limit"
    );
}

fn check_generated_secret(overlay: &str, objects: &[Value], component: &Path) {
    use base64::Engine as _;
    let secret = only(objects, "Secret", overlay);
    assert_eq!(
        secret["metadata"]["name"], SECRET,
        "{overlay}: Secret name (no hash suffix)"
    );
    assert_eq!(secret["metadata"]["namespace"], NAMESPACE, "{overlay}");
    assert_eq!(
        secret["type"], "kubernetes.io/tls",
        "{overlay}: Secret type"
    );
    for file in ["tls.crt", "tls.key", "ca.crt"] {
        let data = secret["data"][file]
            .as_str()
            .unwrap_or_else(|| panic!("{overlay}: {file}"));
        // kustomize folds long base64 into lines; the API server's decoder skips the newlines.
        let data: String = data.split_whitespace().collect();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        assert_eq!(
            decoded,
            std::fs::read(component.join(file)).unwrap(),
            "{overlay}: {file}"
        );
    }
}

/// The examples: meshed, enforced namespaces; IANA container port names; client-side mTLS off for
/// the server-first ports.
fn check_example(example: &str, objects: &[Value]) {
    let namespace = only(objects, "Namespace", example);
    let labels = &namespace["metadata"]["labels"];
    assert_eq!(labels["serverfirst.dev/mode"], "enforce", "{example}");
    assert_eq!(labels["istio-injection"], "enabled", "{example}");

    let iana = [
        ("smtp", 25),
        ("submissions", 465),
        ("submission", 587),
        ("imaps", 993),
        ("https", 443),
    ];
    let deployment = only(objects, "Deployment", example);
    for container in deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
    {
        for port in container["ports"].as_array().unwrap() {
            let entry = (
                port["name"].as_str().unwrap(),
                port["containerPort"].as_u64().unwrap(),
            );
            assert!(
                iana.iter().any(|&(name, number)| (name, number) == entry),
                "{example}: port {entry:?} is not named per IANA"
            );
        }
    }

    let service = only(objects, "Service", example);
    let rule = only(objects, "DestinationRule", example);
    assert_eq!(rule["apiVersion"], "networking.istio.io/v1", "{example}");
    let host = format!(
        "{}.{}.svc.cluster.local",
        service["metadata"]["name"].as_str().unwrap(),
        service["metadata"]["namespace"].as_str().unwrap()
    );
    assert_eq!(
        rule["spec"]["host"], host,
        "{example}: DestinationRule host"
    );
    let service_ports: Vec<&Value> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["port"])
        .collect();
    let settings = rule["spec"]["trafficPolicy"]["portLevelSettings"]
        .as_array()
        .unwrap();
    let mut ports = Vec::new();
    for setting in settings {
        assert_eq!(setting["tls"], json!({"mode": "DISABLE"}), "{example}");
        let number = &setting["port"]["number"];
        assert!(
            service_ports.contains(&number),
            "{example}: port {number} is on the Service"
        );
        ports.push(number.as_u64().unwrap());
    }
    assert_eq!(ports, [25, 587], "{example}: the server-first ports");
}
