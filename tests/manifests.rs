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

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use serverfirst::certs::service_dns_names;

const OVERLAYS: [&str; 4] = [
    "namespace-opt-in",
    "cluster-wide",
    "cluster-audit",
    "cert-manager",
];
const EXAMPLES: [&str; 2] = ["mox", "smtp-smoke"];

const CONFIGURATION: &str = "0-serverfirst";
const NAMESPACE: &str = "serverfirst-system";
const SERVICE: &str = "serverfirst";
const SECRET: &str = "serverfirst-tls";
/// Istio's injector configurations: `istio-sidecar-injector[-<rev>][-<ns>]` and
/// `istio-revision-tag-<tag>` (mesh-semantics.md §3).
const ISTIO_CONFIGURATIONS: [&str; 3] = [
    "istio-sidecar-injector",
    "istio-revision-tag-default",
    "istio-revision-tag-canary",
];

/// Oldest Kubernetes we support, and the newest that kubernetes-validate (pinned in
/// .ci/install-manifest-tools) ships schemas for.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.28.0", "1.37.0"];
/// Groups whose kinds are not in the Kubernetes schemas; each kind is shape-checked below.
const CUSTOM_GROUPS: [&str; 2] = ["cert-manager.io/", "networking.istio.io/"];

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

// ---------------------------------------------------------------------------------------------
// What every overlay must guarantee

/// One expected webhook: its name, its service path, and the `serverfirst.dev/mode` value its
/// namespaceSelector requires (`None`: every namespace but the excluded ones).
type Expected = (&'static str, &'static str, Option<&'static str>);

fn expected_webhooks(overlay: &str) -> Vec<Expected> {
    let enforce = ("mutate.serverfirst.dev", "/mutate", Some("enforce"));
    let audit = ("audit.serverfirst.dev", "/audit", Some("audit"));
    match overlay {
        "namespace-opt-in" | "cert-manager" => vec![enforce, audit],
        "cluster-wide" => vec![("mutate.serverfirst.dev", "/mutate", None)],
        "cluster-audit" => vec![("audit.serverfirst.dev", "/audit", None)],
        other => panic!("no expectations for overlay {other}: add them to expected_webhooks"),
    }
}

/// Checks the overlay's webhook configuration and the webhook Deployment; returns the
/// configuration.
fn check_overlay<'a>(overlay: &str, objects: &'a [Value]) -> &'a Value {
    let configuration = only(objects, "MutatingWebhookConfiguration", overlay);
    let name = configuration["metadata"]["name"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(name, CONFIGURATION, "{overlay}: configuration name");
    for istio in ISTIO_CONFIGURATIONS {
        // The API server sorts configurations by name as Go strings: byte order.
        assert!(
            name.as_bytes() < istio.as_bytes(),
            "{overlay}: {name:?} must sort before {istio:?} so the annotation is there when Istio's injector runs"
        );
    }

    let webhooks = configuration["webhooks"]
        .as_array()
        .expect("webhooks is a list");
    let expected = expected_webhooks(overlay);
    assert_eq!(
        webhooks.len(),
        expected.len(),
        "{overlay}: number of webhooks"
    );
    for (webhook, (name, path, mode)) in webhooks.iter().zip(expected) {
        let context = format!("{overlay}: webhook {name}");
        assert_eq!(webhook["name"], name, "{context}: name");
        check_webhook_hygiene(&context, webhook);
        assert_eq!(
            webhook["clientConfig"]["service"]["path"], path,
            "{context}: path"
        );

        let selector = &webhook["namespaceSelector"];
        assert!(
            selector.get("matchLabels").is_none(),
            "{context}: use matchExpressions only"
        );
        let expressions = selector["matchExpressions"]
            .as_array()
            .expect("matchExpressions");
        let mut wanted = vec![json!({
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": [NAMESPACE, "kube-system"],
        })];
        if let Some(mode) = mode {
            wanted.push(json!({"key": "serverfirst.dev/mode", "operator": "In", "values": [mode]}));
        }
        assert_eq!(expressions, &wanted, "{context}: namespaceSelector");
    }

    let deployment = only(objects, "Deployment", overlay);
    assert_eq!(
        deployment["metadata"]["namespace"], NAMESPACE,
        "{overlay}: Deployment namespace"
    );
    let pod = &deployment["spec"]["template"];
    assert_eq!(
        pod["metadata"]["labels"]["serverfirst.dev/skip"], "true",
        "{overlay}: the webhook's own pods must opt out"
    );
    let volumes = pod["spec"]["volumes"].as_array().expect("volumes");
    assert!(
        volumes.iter().any(|v| v["secret"]["secretName"] == SECRET),
        "{overlay}: the Deployment mounts the Secret {SECRET}"
    );
    configuration
}

/// What holds for every webhook serverfirst installs, whatever the overlay.
fn check_webhook_hygiene(context: &str, webhook: &Value) {
    assert_eq!(webhook["sideEffects"], "None", "{context}: sideEffects");
    assert_eq!(
        webhook["failurePolicy"], "Ignore",
        "{context}: must fail open"
    );
    assert_eq!(
        webhook["reinvocationPolicy"], "IfNeeded",
        "{context}: reinvocationPolicy"
    );
    assert_eq!(
        webhook["matchPolicy"], "Equivalent",
        "{context}: matchPolicy"
    );
    assert_eq!(
        webhook["admissionReviewVersions"],
        json!(["v1"]),
        "{context}"
    );
    let timeout = webhook["timeoutSeconds"]
        .as_u64()
        .expect("timeoutSeconds is set");
    assert!(
        (1..=5).contains(&timeout),
        "{context}: timeoutSeconds {timeout} must stay small"
    );
    assert_eq!(
        webhook["rules"],
        json!([{
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "operations": ["CREATE"],
            "scope": "Namespaced",
        }]),
        "{context}: rules"
    );
    let service = &webhook["clientConfig"]["service"];
    assert_eq!(service["name"], SERVICE, "{context}: service name");
    assert_eq!(
        service["namespace"], NAMESPACE,
        "{context}: service namespace"
    );
    assert_eq!(service["port"], 443, "{context}: service port");
    assert!(
        webhook["clientConfig"].get("url").is_none(),
        "{context}: no url"
    );
    assert_eq!(
        webhook["objectSelector"],
        json!({"matchExpressions": [
            {"key": "serverfirst.dev/skip", "operator": "NotIn", "values": ["true"]}
        ]}),
        "{context}: objectSelector must exclude serverfirst.dev/skip=true"
    );
}

fn only<'a>(objects: &'a [Value], kind: &str, context: &str) -> &'a Value {
    let found: Vec<_> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(
        found.len(),
        1,
        "{context}: expected one {kind}, found {}",
        found.len()
    );
    found[0]
}

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
fn container_args_use_options_the_binary_has() {
    let workloads = [
        ("base", manifests_dir().join("base")),
        ("smtp-smoke", manifests_dir().join("examples/smtp-smoke")),
    ];
    for (name, dir) in workloads {
        let objects = build(&dir, Vec::new());
        let deployment = only(&objects, "Deployment", name);
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
fn build(dir: &Path, mut objects: Vec<Value>) -> Vec<Value> {
    let path = dir.join("kustomization.yaml");
    let kustomization = read_yaml(&path).pop().expect("a kustomization");
    for key in kustomization.as_object().expect("a mapping").keys() {
        assert!(
            ["apiVersion", "kind", "resources", "components", "patches"].contains(&key.as_str()),
            "{}: `{key}` is not modelled by this test's build(); extend it",
            path.display()
        );
    }
    for resource in strings(&kustomization["resources"]) {
        let resource = normalize(&dir.join(resource));
        if resource.is_dir() {
            objects = build(&resource, objects);
        } else {
            objects.extend(read_yaml(&resource));
        }
    }
    for component in strings(&kustomization["components"]) {
        let component = normalize(&dir.join(component));
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
        assert_eq!(
            matched,
            1,
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

/// `a/b/../c` → `a/c`, without touching the file system (the target may not exist).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn read_yaml(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_yaml(&text, &path.display().to_string())
}

fn parse_yaml(text: &str, context: &str) -> Vec<Value> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(text)
        .unwrap_or_else(|e| panic!("{context}: invalid YAML: {e}"));
    documents.into_iter().filter(|d| !d.is_null()).collect()
}

// ---------------------------------------------------------------------------------------------
// With the tools: what kustomize renders, validated against the Kubernetes schemas

#[test]
fn overlays_and_examples_render_and_pass_strict_schema_validation() {
    let Some(tools) = Tools::find() else { return };

    // Render from a copy, with a freshly generated certificate component at certs/out beside it,
    // where the overlays expect it.
    let scratch = tempfile::tempdir().unwrap();
    let manifests = scratch.path().join("manifests");
    copy_dir(&manifests_dir(), &manifests);
    let component = scratch.path().join("certs").join("out");
    let output = Command::new(common::BIN)
        .arg("certs")
        .arg("--kustomize")
        .arg(&component)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "serverfirst certs: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ca_bundle = String::from_utf8(output.stdout).unwrap().trim().to_string();

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
        let bundles: Vec<&Value> = configuration["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| &w["clientConfig"]["caBundle"])
            .collect();
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

/// The audit Job's role grants exactly `list pods` and `get replicasets`.
fn check_audit_rbac(objects: &[Value]) {
    let role = only(objects, "ClusterRole", "audit");
    assert_eq!(
        role["rules"],
        serde_json::json!([
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
            {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get"]}
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

/// Custom resources of the cert-manager overlay, checked by hand (not in the Kubernetes schemas).
fn check_cert_manager(overlay: &str, objects: &[Value], configuration: &Value) {
    assert!(
        objects.iter().all(|o| o["kind"] != "Secret"),
        "{overlay}: cert-manager writes the Secret"
    );
    let issuer = only(objects, "Issuer", overlay);
    assert_eq!(issuer["apiVersion"], "cert-manager.io/v1");
    assert_eq!(issuer["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        issuer["spec"],
        json!({"selfSigned": {}}),
        "{overlay}: Issuer spec"
    );

    let certificate = only(objects, "Certificate", overlay);
    assert_eq!(certificate["apiVersion"], "cert-manager.io/v1");
    let name = certificate["metadata"]["name"].as_str().unwrap();
    let namespace = certificate["metadata"]["namespace"].as_str().unwrap();
    assert_eq!(
        configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("{namespace}/{name}"),
        "{overlay}: inject-ca-from names the Certificate"
    );
    let spec = certificate["spec"].as_object().unwrap();
    let allowed = [
        "secretName",
        "dnsNames",
        "duration",
        "renewBefore",
        "privateKey",
        "usages",
        "issuerRef",
    ];
    for key in spec.keys() {
        assert!(
            allowed.contains(&key.as_str()),
            "{overlay}: unexpected Certificate field {key}"
        );
    }
    assert_eq!(
        spec["secretName"], SECRET,
        "{overlay}: the Secret the Deployment mounts"
    );
    assert_eq!(
        spec["dnsNames"],
        json!(service_dns_names(SERVICE, NAMESPACE)),
        "{overlay}"
    );
    assert_eq!(
        spec["issuerRef"],
        json!({"kind": "Issuer", "name": issuer["metadata"]["name"], "group": "cert-manager.io"}),
        "{overlay}: issuerRef"
    );
    for duration in ["duration", "renewBefore"] {
        let value = spec[duration].as_str().unwrap_or_default();
        assert!(
            value.ends_with('h') && value[..value.len() - 1].parse::<u32>().is_ok(),
            "{duration}: {value}"
        );
    }
    assert!(
        spec["usages"]
            .as_array()
            .unwrap()
            .contains(&json!("server auth"))
    );
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

/// Writes the objects the Kubernetes schemas know (JSON documents, which are YAML) for
/// kubernetes-validate; custom resources must be of a group in CUSTOM_GROUPS.
fn write_builtin_kinds(dir: &Path, name: &str, objects: &[Value]) -> PathBuf {
    let builtin: Vec<String> = objects
        .iter()
        .filter(|o| {
            let api_version = o["apiVersion"].as_str().unwrap_or_default();
            !CUSTOM_GROUPS
                .iter()
                .any(|group| api_version.starts_with(group))
        })
        .map(|o| serde_json::to_string_pretty(o).unwrap())
        .collect();
    assert!(!builtin.is_empty(), "{name}: nothing to validate");
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, builtin.join("\n---\n")).unwrap();
    path
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

struct Tools {
    kubectl: PathBuf,
    kubernetes_validate: PathBuf,
}

impl Tools {
    /// Finds both tools, or reports why not: a failure when they are required, else a skip.
    fn find() -> Option<Tools> {
        let found = locate("kubectl", "SERVERFIRST_KUBECTL").and_then(|kubectl| {
            let version = run_ok(Command::new(&kubectl).args(["version", "--client"]))?;
            let kustomize = version
                .lines()
                .find_map(|l| l.strip_prefix("Kustomize Version: v"))
                .ok_or_else(|| format!("{} has no built-in kustomize", kubectl.display()))?;
            if kustomize
                .split('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok())
                .unwrap_or(0)
                < 5
            {
                return Err(format!(
                    "{} has kustomize v{kustomize}, v5 or later needed",
                    kubectl.display()
                ));
            }
            let kubernetes_validate =
                locate("kubernetes-validate", "SERVERFIRST_KUBERNETES_VALIDATE")?;
            run_ok(Command::new(&kubernetes_validate).arg("--version"))?;
            Ok(Tools {
                kubectl,
                kubernetes_validate,
            })
        });
        match found {
            Ok(tools) => Some(tools),
            Err(why) => {
                let why = format!("{why} (install with .ci/install-manifest-tools)");
                common::tool_missing("rendering and schema validation", &why);
                None
            }
        }
    }

    fn kustomize(&self, dir: &Path) -> Vec<Value> {
        let output = Command::new(&self.kubectl)
            .arg("kustomize")
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "kubectl kustomize {}: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        parse_yaml(
            &String::from_utf8(output.stdout).unwrap(),
            &dir.display().to_string(),
        )
    }

    fn validate(&self, version: &str, files: &[PathBuf]) {
        let output = Command::new(&self.kubernetes_validate)
            .args(["--strict", "--kubernetes-version", version])
            .args(files)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        // A kind without a schema is only a warning to kubernetes-validate; here it is an error,
        // since every custom resource is filtered out beforehand and checked by hand.
        assert!(
            output.status.success() && !report.contains("ERROR") && !report.contains("WARN"),
            "kubernetes-validate --strict for Kubernetes {version}:\n{report}"
        );
        let passed = report
            .lines()
            .filter(|l| l.contains(" passed for resource "))
            .count();
        assert!(
            passed >= files.len(),
            "kubernetes-validate checked too little:\n{report}"
        );
    }
}

/// The tool from `env_var`, else `$SERVERFIRST_TOOLS_DIR/bin` (default /opt/serverfirst-tools,
/// where .ci/install-manifest-tools puts it), else PATH.
fn locate(name: &str, env_var: &str) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(path));
    }
    let tools_dir = std::env::var_os("SERVERFIRST_TOOLS_DIR")
        .unwrap_or_else(|| "/opt/serverfirst-tools".into());
    let installed = Path::new(&tools_dir).join("bin").join(name);
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::iter::once(installed)
        .chain(std::env::split_paths(&path).map(|dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("{name} not found"))
}

fn run_ok(command: &mut Command) -> Result<String, String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
