//! The install manifests as kustomize and Helm render them: the tools (`kubectl kustomize`,
//! `kubernetes-validate`, from `.ci/install-manifest-tools`), YAML parsing, and the checks every
//! rendering must pass, whichever tool made it. Needs `mod common;` in the including test crate.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use serverfirst::certs::service_dns_names;

pub const CONFIGURATION: &str = "0-serverfirst";
pub const NAMESPACE: &str = "serverfirst-system";
pub const SERVICE: &str = "serverfirst";
pub const SECRET: &str = "serverfirst-tls";
/// Istio's injector configurations: `istio-sidecar-injector[-<rev>][-<ns>]` and
/// `istio-revision-tag-<tag>` (mesh-semantics.md §3).
pub const ISTIO_CONFIGURATIONS: [&str; 3] = [
    "istio-sidecar-injector",
    "istio-revision-tag-default",
    "istio-revision-tag-canary",
];

/// The opt-in companions controller: its objects' name and the line every overlay has for it.
pub const COMPANIONS: &str = "serverfirst-companions";
pub const COMPANIONS_LINE: &str = "# - ../../components/companions";

/// Oldest Kubernetes we support, and the newest that kubernetes-validate (pinned in
/// .ci/install-manifest-tools) ships schemas for.
pub const KUBERNETES_VERSIONS: [&str; 2] = ["1.28.0", "1.37.0"];
/// Groups whose kinds are not in the Kubernetes schemas; each kind is shape-checked by hand
/// (cert-manager: `check_cert_manager`).
pub const CUSTOM_GROUPS: [&str; 3] = [
    "cert-manager.io/",
    "monitoring.coreos.com/",
    "networking.istio.io/",
];

pub fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

/// One expected webhook: its name, its service path, and the `serverfirst.dev/mode` value its
/// namespaceSelector requires (`None`: every namespace but the excluded ones).
pub type Expected = (&'static str, &'static str, Option<&'static str>);

pub fn expected_webhooks(overlay: &str) -> Vec<Expected> {
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
pub fn check_overlay<'a>(overlay: &str, objects: &'a [Value]) -> &'a Value {
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

    let deployment = named(objects, "Deployment", SERVICE, overlay);
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
    check_webhook_rbac(overlay, objects, pod);
    configuration
}

/// `serve` lists and watches exactly what its mesh state is made of, with its own token, and
/// knows its namespace.
fn check_webhook_rbac(overlay: &str, objects: &[Value], pod: &Value) {
    let role = named(objects, "ClusterRole", SERVICE, overlay);
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": ["security.istio.io"], "resources": ["peerauthentications", "authorizationpolicies"],
             "verbs": ["list", "watch"]},
            {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["gateways"], "verbs": ["list", "watch"]}
        ]),
        "{overlay}: the webhook's role is read-only, on exactly its mesh state"
    );
    let binding = named(objects, "ClusterRoleBinding", SERVICE, overlay);
    assert_eq!(binding["roleRef"]["name"], SERVICE, "{overlay}");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": SERVICE, "namespace": NAMESPACE}]),
        "{overlay}"
    );
    assert_ne!(
        pod["spec"]["automountServiceAccountToken"], false,
        "{overlay}: serve needs its token to read the mesh state"
    );
    let env = &pod["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .into_iter()
            .flatten()
            .any(|e| e["name"] == "POD_NAMESPACE"
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"),
        "{overlay}: POD_NAMESPACE names the namespace never patched"
    );
}

/// What holds for every webhook serverfirst installs, whatever the overlay.
pub fn check_webhook_hygiene(context: &str, webhook: &Value) {
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
        json!([
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "operations": ["CREATE"],
                "scope": "Namespaced",
            },
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["services"],
                "operations": ["CREATE", "UPDATE"],
                "scope": "Namespaced",
            }
        ]),
        "{context}: rules: pods on CREATE, Services on CREATE and UPDATE"
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

/// The caBundle of each webhook of a MutatingWebhookConfiguration (null where there is none).
pub fn ca_bundles(configuration: &Value) -> Vec<&Value> {
    configuration["webhooks"]
        .as_array()
        .expect("webhooks is a list")
        .iter()
        .map(|w| &w["clientConfig"]["caBundle"])
        .collect()
}

/// The one object of `kind` named `name`.
pub fn named<'a>(objects: &'a [Value], kind: &str, name: &str, context: &str) -> &'a Value {
    let found: Vec<_> = objects
        .iter()
        .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "{context}: expected one {kind} {name}");
    found[0]
}

pub fn only<'a>(objects: &'a [Value], kind: &str, context: &str) -> &'a Value {
    let found: Vec<_> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(
        found.len(),
        1,
        "{context}: expected one {kind}, found {}",
        found.len()
    );
    found[0]
}

pub fn read_yaml(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_yaml(&text, &path.display().to_string())
}

pub fn parse_yaml(text: &str, context: &str) -> Vec<Value> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(text)
        .unwrap_or_else(|e| panic!("{context}: invalid YAML: {e}"));
    documents.into_iter().filter(|d| !d.is_null()).collect()
}

/// Custom resources of the cert-manager overlay, checked by hand (not in the Kubernetes schemas).
pub fn check_cert_manager(overlay: &str, objects: &[Value], configuration: &Value) {
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

/// Writes the objects the Kubernetes schemas know (JSON documents, which are YAML) for
/// kubernetes-validate; custom resources must be of a group in CUSTOM_GROUPS.
pub fn write_builtin_kinds(dir: &Path, name: &str, objects: &[Value]) -> PathBuf {
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

pub fn copy_dir(from: &Path, to: &Path) {
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

pub struct Tools {
    pub kubectl: PathBuf,
    pub kubernetes_validate: PathBuf,
}

impl Tools {
    /// Finds both tools, or reports why not: a failure when they are required, else a skip.
    pub fn find() -> Option<Tools> {
        match Tools::locate() {
            Ok(tools) => Some(tools),
            Err(why) => {
                let why = format!("{why} (install with .ci/install-manifest-tools)");
                crate::common::tool_missing("rendering and schema validation", &why);
                None
            }
        }
    }

    /// Both tools, or why not.
    pub fn locate() -> Result<Tools, String> {
        let kubectl = locate("kubectl", "SERVERFIRST_KUBECTL")?;
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
        let kubernetes_validate = locate("kubernetes-validate", "SERVERFIRST_KUBERNETES_VALIDATE")?;
        run_ok(Command::new(&kubernetes_validate).arg("--version"))?;
        Ok(Tools {
            kubectl,
            kubernetes_validate,
        })
    }

    pub fn kustomize(&self, dir: &Path) -> Vec<Value> {
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

    pub fn validate(&self, version: &str, files: &[PathBuf]) {
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
pub fn locate(name: &str, env_var: &str) -> Result<PathBuf, String> {
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

pub fn run_ok(command: &mut Command) -> Result<String, String> {
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

/// A copy of `manifests/` under `scratch`, with a freshly generated certificate component at
/// `certs/out` beside it, where the overlays expect it. Returns the copy, the component and the
/// caBundle (`serverfirst certs --kustomize` prints it).
pub fn manifests_with_certificates(scratch: &Path) -> (PathBuf, PathBuf, String) {
    let manifests = scratch.join("manifests");
    copy_dir(&manifests_dir(), &manifests);
    let component = scratch.join("certs").join("out");
    let output = Command::new(crate::common::BIN)
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
    (manifests, component, ca_bundle)
}

/// The overlay's kustomization with its one companions line uncommented.
pub fn uncomment_companions(overlay: &str, text: &str) -> String {
    assert_eq!(
        text.lines().filter(|l| l.trim() == COMPANIONS_LINE).count(),
        1,
        "{overlay}: one commented-out line `{COMPANIONS_LINE}` turns the companions controller on"
    );
    text.replace(COMPANIONS_LINE, &COMPANIONS_LINE[2..])
}

/// Uncomments the companions line of the overlay in `dir` (a copy: see
/// [`manifests_with_certificates`]), as a user turns the controller on.
pub fn enable_companions(dir: &Path) {
    let path = dir.join("kustomization.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let overlay = dir.display().to_string();
    std::fs::write(&path, uncomment_companions(&overlay, &text)).unwrap();
}
