//! The Helm chart `charts/serverfirst`.
//!
//! - Its metadata and values (always runs): version = appVersion = the crate's, the values named
//!   exactly as documented, each in the schema and described for helm-docs.
//! - With helm, kubectl and kubernetes-validate (`.ci/install-manifest-tools`): `helm lint
//!   --strict`; every mode × certificate source rendered for the oldest and newest Kubernetes and
//!   validated against the Kubernetes schemas; parity with `kubectl kustomize` of each overlay;
//!   the schema's and the templates' refusals; optional APIs declared to an offline render;
//!   `source=helm` across upgrades against a stub API server; `helm package`.
//!
//! Custom resources are not in the Kubernetes schemas: cert-manager's Issuer and Certificate are
//! checked by `check_cert_manager` (as for the overlays), the ServiceMonitor by
//! `check_service_monitor`. When a tool is missing a test says `SKIPPED: <why>` and passes,
//! unless `CI=true` or `SERVERFIRST_REQUIRE_E2E=1`: then it fails.

mod common;
#[path = "support/helm_chart.rs"]
mod helm_chart;
#[path = "support/helm_values.rs"]
mod helm_values;
#[path = "support/manifest_tools.rs"]
mod manifest_tools;
#[path = "support/object_api.rs"]
mod object_api;
#[path = "support/stub_api.rs"]
mod stub_api;

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use helm_chart::*;
use helm_values::{FREE_FORM, KeyTree, described_values};
use manifest_tools::*;
use object_api::ObjectApi;
use serde_json::{Value, json};
use serverfirst::certs::service_dns_names;
use stub_api::StubApi;

const MODES: [&str; 3] = ["namespace-opt-in", "cluster-wide", "cluster-audit"];
const SOURCES: [&str; 3] = ["helm", "cert-manager", "secret"];
/// The schemas every rendering is validated against: the oldest we support, the one after it,
/// and the newest kubernetes-validate ships.
const SCHEMA_VERSIONS: [&str; 3] = ["1.28.0", "1.29.0", "1.37.0"];

// ---------------------------------------------------------------------------------------------
// Pure Rust: the chart as written

#[test]
fn chart_version_is_the_crate_version() {
    let chart = read_yaml(&chart_dir().join("Chart.yaml")).remove(0);
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "serverfirst");
    assert_eq!(
        chart["version"],
        env!("CARGO_PKG_VERSION"),
        "Chart.yaml version"
    );
    assert_eq!(
        chart["appVersion"],
        env!("CARGO_PKG_VERSION"),
        "Chart.yaml appVersion"
    );
}

#[test]
fn values_are_the_documented_ones_and_all_in_the_schema() {
    let values = read_yaml(&chart_dir().join("values.yaml")).remove(0);
    let mut names = Vec::new();
    value_names("", &values, &mut names);
    let expected = [
        "mode",
        "certificates.source",
        "certificates.validityDays",
        "certificates.secretName",
        "certificates.caBundle",
        "image.repository",
        "image.tag",
        "image.pullPolicy",
        "imagePullSecrets",
        "replicaCount",
        "resources",
        "podDisruptionBudget.enabled",
        "priorityClassName",
        "nodeSelector",
        "tolerations",
        "affinity",
        "topologySpreadConstraints",
        "podAnnotations",
        "config",
        "webhook.timeoutSeconds",
        "webhook.failurePolicy",
        "webhook.extraNamespaceSelector",
        "metrics.serviceMonitor.enabled",
        "companions.enabled",
    ];
    assert_eq!(names, expected, "values.yaml");

    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        schema["additionalProperties"], false,
        "unknown top-level keys are refused"
    );
    for name in &names {
        let mut node = &schema;
        for part in name.split('.') {
            node = &node["properties"][part];
            assert!(!node.is_null(), "values.schema.json has no {name}");
        }
    }
}

/// Dotted names of the values, down to the leaves; free-form maps are leaves.
fn value_names(prefix: &str, value: &Value, names: &mut Vec<String>) {
    for (key, child) in value.as_object().expect("a mapping") {
        let name = format!("{prefix}{key}");
        match child {
            Value::Object(map) if !map.is_empty() && !FREE_FORM.contains(&name.as_str()) => {
                value_names(&format!("{name}."), child, names)
            }
            _ => names.push(name),
        }
    }
}

/// helm-docs' convention (its README, "values.yaml metadata"; pkg/helm/comment.go,
/// ParseComment): a description is the comment block on the lines immediately above a key,
/// starting at its last `# --` line, the lines after it appended with a space. Every top-level
/// key and every key an operator sets (down to the free-form maps) has one, written as sentences
/// that stand alone.
#[test]
fn every_value_has_a_helm_docs_description_directly_above_it() {
    let text = std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let keys: KeyTree = serde_saphyr::from_str(&text).expect("values.yaml parses");
    let mut described = Vec::new();
    let mut missing = Vec::new();
    for value in described_values(&text) {
        match value.description {
            Ok(description) => described.push(format!("{}: {description}", value.name)),
            Err(why) => missing.push(format!("{} (line {}): {why}", value.name, value.line)),
        }
    }
    assert!(
        missing.is_empty(),
        "values.yaml: keys without a helm-docs description:\n{}",
        missing.join("\n")
    );
    let top_level: Vec<&String> = keys.0.iter().map(|(key, _)| &key.value).collect();
    let values = read_yaml(&chart_dir().join("values.yaml")).remove(0);
    let expected: Vec<&String> = values.as_object().unwrap().keys().collect();
    assert_eq!(top_level, expected, "every top-level key was checked");
    // helm-docs also reads any other comment line with ` -- ` in it as an old-style
    // `key -- description` (pkg/helm/chart_info.go, valuesDescriptionRegex), and a second one
    // on a `# --` line as the key.
    for (index, line) in lines.iter().enumerate() {
        let comment = line.trim_start();
        let rest = comment.strip_prefix("# --").unwrap_or(comment);
        assert!(
            !comment.starts_with('#') || !rest.contains(" --"),
            "values.yaml line {}: `{line}` reads as a helm-docs key",
            index + 1
        );
    }
    println!("{} values described:", described.len());
    for line in described {
        println!("  {line}");
    }
}

// ---------------------------------------------------------------------------------------------
// With helm

/// A caBundle for certificates.source=secret: base64 of a CA's PEM.
fn any_ca_bundle() -> String {
    BASE64.encode(
        serverfirst::certs::generate(&["x".into()], 1)
            .unwrap()
            .ca_pem,
    )
}

#[test]
fn chart_passes_helm_lint_strict() {
    let Some((helm, _)) = HelmTools::find("helm lint") else {
        return;
    };
    let ca_bundle = any_ca_bundle();
    let chart = chart_dir().display().to_string();
    // `helm lint` cannot be told which APIs the cluster serves, so certificates.source=cert-manager
    // is rendered (with --api-versions) by the next test instead.
    for kube_version in KUBERNETES_VERSIONS {
        for mode in MODES {
            for source in ["helm", "secret"] {
                let mut args = vec!["lint".to_string(), "--strict".into(), chart.clone()];
                args.extend(["--kube-version".into(), kube_version.into()]);
                args.extend(["--set".into(), format!("mode={mode}")]);
                args.extend(source_args(source, &ca_bundle));
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let output = helm.run(&args);
                assert!(output.is_ok(), "helm {args:?}: {output:?}");
                let summary = output.unwrap();
                println!(
                    "helm lint --strict, {mode} × {source} × Kubernetes {kube_version}: {}",
                    summary.lines().last().unwrap_or_default()
                );
            }
        }
    }
}

#[test]
fn every_mode_and_certificate_source_renders_and_passes_strict_schema_validation() {
    let Some((helm, tools)) = HelmTools::find("helm template and schema validation") else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let ca_bundle = any_ca_bundle();
    let mut files = Vec::new();
    let mut covered = Vec::new();
    for kube_version in KUBERNETES_VERSIONS {
        for mode in MODES {
            for source in SOURCES {
                let context = format!("{mode} × {source} × Kubernetes {kube_version}");
                let mut args = vec!["--kube-version".to_string(), kube_version.to_string()];
                args.extend(source_args(source, &ca_bundle));
                args.extend(["--set".into(), format!("mode={mode}")]);
                let objects = helm.template(RELEASE, NAMESPACE, &args).unwrap();
                check_rendering(&context, mode, source, &objects, &ca_bundle);
                assert!(
                    companion_objects(&objects).is_empty(),
                    "{context}: companions.enabled=false renders nothing of the controller"
                );
                let name = format!("{mode}-{source}-{kube_version}");
                files.push(write_builtin_kinds(scratch.path(), &name, &objects));
                covered.push(context);
            }

            let context = format!("{mode} × companions.enabled=true × Kubernetes {kube_version}");
            let mut args = vec!["--kube-version".to_string(), kube_version.to_string()];
            args.extend(["--set".into(), format!("mode={mode}")]);
            args.extend(["--set".into(), "companions.enabled=true".into()]);
            let objects = helm.template(RELEASE, NAMESPACE, &args).unwrap();
            check_rendering(&context, mode, "helm", &objects, "");
            let kinds: Vec<&Value> = companion_objects(&objects)
                .iter()
                .map(|o| &o["kind"])
                .collect();
            assert_eq!(
                kinds,
                [
                    "ServiceAccount",
                    "ClusterRole",
                    "ClusterRoleBinding",
                    "Deployment"
                ],
                "{context}: the controller's objects, named {COMPANIONS}"
            );
            let name = format!("{mode}-companions-{kube_version}");
            files.push(write_builtin_kinds(scratch.path(), &name, &objects));
            covered.push(context);
        }

        // Every optional value set at once.
        let context = format!("every option × Kubernetes {kube_version}");
        let mut args = vec!["--kube-version".to_string(), kube_version.to_string()];
        args.extend(["-f".into(), write_every_option(scratch.path())]);
        args.extend([
            "--api-versions".into(),
            "monitoring.coreos.com/v1/ServiceMonitor".into(),
        ]);
        let objects = helm.template(RELEASE, NAMESPACE, &args).unwrap();
        check_rendering(&context, "namespace-opt-in", "helm", &objects, "");
        check_service_monitor(&context, &objects);
        assert!(
            objects.iter().all(|o| o["kind"] != "PodDisruptionBudget"),
            "{context}: podDisruptionBudget.enabled=false"
        );
        let deployment = only(&objects, "Deployment", &context);
        assert_eq!(deployment["spec"]["replicas"], 3, "{context}: replicaCount");
        let configuration = only(&objects, "MutatingWebhookConfiguration", &context);
        for webhook in configuration["webhooks"].as_array().unwrap() {
            assert_eq!(
                webhook["timeoutSeconds"], 3,
                "{context}: webhook.timeoutSeconds"
            );
        }
        let pod = &deployment["spec"]["template"];
        assert_eq!(
            pod["metadata"]["annotations"]["example.com/team"], "mail",
            "{context}"
        );
        assert_eq!(
            pod["spec"]["priorityClassName"], "system-cluster-critical",
            "{context}"
        );
        assert_eq!(
            pod["spec"]["tolerations"][0]["key"], "dedicated",
            "{context}"
        );
        assert_eq!(
            pod["spec"]["nodeSelector"]["kubernetes.io/os"], "linux",
            "{context}"
        );
        assert_eq!(
            pod["spec"]["imagePullSecrets"],
            json!([{"name": "regcred"}]),
            "{context}"
        );
        assert_eq!(
            pod["spec"]["topologySpreadConstraints"][0]["maxSkew"], 1,
            "{context}"
        );
        assert_eq!(
            pod["spec"]["affinity"],
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}}),
            "{context}: affinity replaces the default"
        );
        let container = &pod["spec"]["containers"][0];
        assert_eq!(
            container["image"], "registry.example.com/serverfirst:0.1.0-rc1",
            "{context}"
        );
        assert_eq!(container["imagePullPolicy"], "Always", "{context}");
        assert_eq!(
            container["resources"]["limits"]["memory"], "128Mi",
            "{context}"
        );
        files.push(write_builtin_kinds(
            scratch.path(),
            &format!("every-option-{kube_version}"),
            &objects,
        ));
        covered.push(context);
    }

    for version in SCHEMA_VERSIONS {
        tools.validate(version, &files);
    }
    println!(
        "helm template: {} renderings validated with kubernetes-validate --strict against Kubernetes {}:",
        covered.len(),
        SCHEMA_VERSIONS.join(", ")
    );
    for context in covered {
        println!("  {context}");
    }
    println!(
        "  not schema-checked (custom resources): Issuer, Certificate (check_cert_manager), ServiceMonitor (check_service_monitor)"
    );
}

/// The companions controller's objects: those named after it.
fn companion_objects(objects: &[Value]) -> Vec<&Value> {
    objects
        .iter()
        .filter(|o| o["metadata"]["name"] == COMPANIONS)
        .collect()
}

/// What every rendering must hold, whatever the options: the overlay guarantees for its mode, the
/// certificate source's objects, and no Namespace (the chart does not own it).
fn check_rendering(context: &str, mode: &str, source: &str, objects: &[Value], ca_bundle: &str) {
    let configuration = check_overlay(mode, objects);
    assert!(
        objects.iter().all(|o| o["kind"] != "Namespace"),
        "{context}: the chart does not own its namespace"
    );
    let bundles = ca_bundles(configuration);
    match source {
        "helm" => {
            let secret = only(objects, "Secret", context);
            assert_eq!(secret["metadata"]["name"], SECRET, "{context}");
            assert_eq!(secret["type"], "kubernetes.io/tls", "{context}");
            assert!(
                secret["metadata"]["annotations"][NOT_AFTER].is_string(),
                "{context}: {NOT_AFTER}"
            );
            assert!(
                bundles.iter().all(|b| **b == secret["data"]["ca.crt"]),
                "{context}: caBundle is the Secret's CA"
            );
        }
        "cert-manager" => {
            check_cert_manager(context, objects, configuration);
            assert!(
                bundles.iter().all(|b| b.is_null()),
                "{context}: cainjector sets caBundle"
            );
        }
        "secret" => {
            assert!(
                objects.iter().all(|o| o["kind"] != "Secret"),
                "{context}: the user's Secret"
            );
            assert!(
                bundles.iter().all(|b| **b == ca_bundle),
                "{context}: caBundle as given"
            );
        }
        other => panic!("no certificate source {other}"),
    }
}

/// The ServiceMonitor (not in the Kubernetes schemas): the fields the Prometheus Operator's CRD
/// requires and uses, pointing at the Service's metrics port.
fn check_service_monitor(context: &str, objects: &[Value]) {
    let monitor = only(objects, "ServiceMonitor", context);
    assert_eq!(
        monitor["apiVersion"], "monitoring.coreos.com/v1",
        "{context}"
    );
    assert_eq!(monitor["metadata"]["namespace"], NAMESPACE, "{context}");
    let spec = monitor["spec"].as_object().unwrap();
    for key in spec.keys() {
        assert!(
            ["selector", "endpoints"].contains(&key.as_str()),
            "{context}: ServiceMonitor {key}"
        );
    }
    let service = only(objects, "Service", context);
    let labels = service["metadata"]["labels"].as_object().unwrap();
    for (key, value) in spec["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            labels.get(key),
            Some(value),
            "{context}: the selector matches the Service"
        );
    }
    let port = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .unwrap_or_else(|| panic!("{context}: the Service has a metrics port"));
    assert_eq!(port["port"], 9090, "{context}");
    assert_eq!(port["targetPort"], "metrics", "{context}");
    assert_eq!(
        spec["endpoints"],
        json!([{"port": "metrics", "path": "/metrics", "scheme": "http"}]),
        "{context}: endpoints"
    );
}

fn write_every_option(dir: &Path) -> String {
    let path = dir.join("every-option.yaml");
    std::fs::write(
        &path,
        r#"image: {repository: registry.example.com/serverfirst, tag: 0.1.0-rc1, pullPolicy: Always}
imagePullSecrets: [{name: regcred}]
replicaCount: 3
resources: {requests: {cpu: 50m, memory: 64Mi}, limits: {memory: 128Mi}}
podDisruptionBudget: {enabled: false}
priorityClassName: system-cluster-critical
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: webhooks, effect: NoSchedule}]
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions: [{key: kubernetes.io/arch, operator: In, values: [amd64]}]
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector: {matchLabels: {app.kubernetes.io/name: serverfirst}}
podAnnotations: {example.com/team: mail}
config:
  meshes: [istio]
  outbound: {ports: [submission]}
webhook: {timeoutSeconds: 3}
metrics: {serviceMonitor: {enabled: true}}
"#,
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn chart_renders_what_each_overlay_installs() {
    let Some((helm, tools)) = HelmTools::find("chart and overlay parity") else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let (manifests, _, ca_bundle) = manifests_with_certificates(scratch.path());
    let cases = [
        ("namespace-opt-in", "namespace-opt-in", "secret"),
        ("cluster-wide", "cluster-wide", "secret"),
        ("cluster-audit", "cluster-audit", "secret"),
        ("cert-manager", "namespace-opt-in", "cert-manager"),
    ];
    let mut failures = Vec::new();
    // As installed, then with each overlay's companions line uncommented.
    for companions in [false, true] {
        for (overlay, mode, source) in cases {
            let dir = manifests.join("overlays").join(overlay);
            if companions {
                enable_companions(&dir);
            }
            let kustomized = tools.kustomize(&dir);
            let mut args = source_args(source, &ca_bundle);
            args.extend(["--set".into(), format!("mode={mode}")]);
            args.extend(["--set".into(), format!("companions.enabled={companions}")]);
            let charted = helm.template(RELEASE, NAMESPACE, &args).unwrap();
            let differences = parity_differences(&kustomized, &charted);
            let case = format!(
                "overlay {overlay}{} = chart mode={mode} certificates.source={source} companions.enabled={companions}",
                if companions { " with companions" } else { "" }
            );
            println!(
                "parity: {case}: {} objects compared, {} differences",
                by_identity(&kustomized).len(),
                differences.len()
            );
            if !differences.is_empty() {
                failures.push(format!("{case}:\n{}", differences.join("\n")));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "the chart and the overlays differ:\n{}",
        failures.join("\n\n")
    );
}

/// Objects by (kind, namespace, name), the Namespace and Secrets aside (the chart owns neither
/// with `certificates.source=secret`).
fn by_identity(objects: &[Value]) -> BTreeMap<String, Value> {
    objects
        .iter()
        .filter(|o| o["kind"] != "Namespace" && o["kind"] != "Secret")
        .map(|o| {
            let meta = &o["metadata"];
            let key = format!(
                "{} {}/{}",
                o["kind"].as_str().unwrap_or_default(),
                meta["namespace"].as_str().unwrap_or("-"),
                meta["name"].as_str().unwrap_or_default()
            );
            (key, o.clone())
        })
        .collect()
}

/// Every difference between the overlay's objects and the chart's, one readable line each. The
/// chart may add labels (Helm's own); everything else must be equal, field by field.
fn parity_differences(kustomized: &[Value], charted: &[Value]) -> Vec<String> {
    let kustomized = by_identity(kustomized);
    let mut charted = by_identity(charted);
    let mut differences = Vec::new();
    for (key, expected) in &kustomized {
        let Some(mut actual) = charted.remove(key) else {
            differences.push(format!("  {key}: only in the overlay"));
            continue;
        };
        for labels in ["/metadata/labels", "/spec/template/metadata/labels"] {
            let wanted = expected.pointer(labels).cloned().unwrap_or(Value::Null);
            let Some(found) = actual.pointer_mut(labels) else {
                if !wanted.is_null() {
                    differences.push(format!("  {key} {labels}: missing, overlay has {wanted}"));
                }
                continue;
            };
            for (name, value) in wanted.as_object().into_iter().flatten() {
                if found.get(name) != Some(value) {
                    differences.push(format!(
                        "  {key} {labels}/{name}: overlay {value}, chart {}",
                        found.get(name).unwrap_or(&Value::Null)
                    ));
                }
            }
            *found = wanted;
        }
        for operation in json_patch::diff(expected, &actual).0 {
            let path = operation.path().to_string();
            let before = expected
                .pointer(&path)
                .map_or("(absent)".into(), Value::to_string);
            let after = actual
                .pointer(&path)
                .map_or("(absent)".into(), Value::to_string);
            differences.push(format!("  {key} {path}: overlay {before}, chart {after}"));
        }
    }
    for key in charted.keys() {
        differences.push(format!("  {key}: only in the chart"));
    }
    differences
}

#[test]
fn schema_refuses_wrong_values_naming_the_field() {
    let Some((helm, _)) = HelmTools::find("values schema") else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let cases = [
        ("mode: bogus\n", "at '/mode'"),
        (
            "replicaCount: \"two\"\n",
            "at '/replicaCount': got string, want integer",
        ),
        ("bogus: 1\n", "'bogus' not allowed"),
        ("config: {mode: audit}\n", "at '/config/mode'"),
        (
            "certificates: {source: vault}\n",
            "at '/certificates/source'",
        ),
        (
            "webhook: {failurePolicy: Never}\n",
            "at '/webhook/failurePolicy'",
        ),
        (
            "webhook: {extraNamespaceSelector: {matchLabel: {a: b}}}\n",
            "'matchLabel' not allowed",
        ),
        ("companions: {enable: true}\n", "'enable' not allowed"),
        (
            "companions: {enabled: \"yes\"}\n",
            "at '/companions/enabled': got string, want boolean",
        ),
    ];
    for (values, named) in cases {
        let file = scratch.path().join("values.yaml");
        std::fs::write(&file, values).unwrap();
        let error = helm
            .template(
                RELEASE,
                NAMESPACE,
                &["-f".into(), file.display().to_string()],
            )
            .expect_err(values);
        assert!(
            error.contains("values don't meet the specifications of the schema")
                && error.contains(named),
            "{values:?} must be refused naming the field ({named}):\n{error}"
        );
        println!(
            "refused {:?}: {}",
            values.trim(),
            error
                .lines()
                .filter(|l| l.contains("at '"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}

#[test]
fn missing_apis_and_values_fail_with_their_name() {
    let Some((helm, _)) = HelmTools::find("template failures") else {
        return;
    };
    let set = |assignments: &[&str]| -> Vec<String> {
        assignments
            .iter()
            .flat_map(|a| ["--set".to_string(), a.to_string()])
            .collect()
    };
    let pem = any_ca_bundle();
    let cases = [
        (
            set(&["certificates.source=cert-manager"]),
            "needs the API cert-manager.io/v1",
        ),
        (
            set(&["metrics.serviceMonitor.enabled=true"]),
            "needs the API monitoring.coreos.com/v1 (ServiceMonitor)",
        ),
        (
            set(&[
                "certificates.source=secret",
                &format!("certificates.caBundle={pem}"),
            ]),
            "certificates.secretName is required",
        ),
        (
            set(&[
                "certificates.source=secret",
                "certificates.secretName=mine",
                "certificates.caBundle=Zm9v",
            ]),
            "certificates.caBundle must be base64 of the CA's PEM",
        ),
        (
            set(&["certificates.source=secret", "certificates.secretName=mine"]),
            "certificates.caBundle (base64 of the CA's PEM) is required",
        ),
        (
            vec!["--kube-version".into(), "1.27.0".into()],
            "kubeVersion",
        ),
    ];
    for (args, named) in cases {
        let error = helm.template(RELEASE, NAMESPACE, &args).expect_err(named);
        assert!(
            error.contains(named),
            "{args:?} must fail naming {named:?}:\n{error}"
        );
        println!(
            "fails {}: {}",
            args.iter()
                .map(|a| if a.len() > 40 {
                    format!("{}…", &a[..40])
                } else {
                    a.clone()
                })
                .collect::<Vec<_>>()
                .join(" "),
            error.lines().next().unwrap_or_default()
        );
    }
    // With the APIs served, the same values render.
    let served = [
        "--api-versions",
        "cert-manager.io/v1/Issuer",
        "--api-versions",
        "cert-manager.io/v1/Certificate",
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
    ];
    let mut args: Vec<String> = served.iter().map(|s| s.to_string()).collect();
    args.extend(set(&[
        "certificates.source=cert-manager",
        "metrics.serviceMonitor.enabled=true",
    ]));
    let objects = helm.template(RELEASE, NAMESPACE, &args).unwrap();
    only(&objects, "Certificate", "served APIs");
    only(&objects, "ServiceMonitor", "served APIs");
}

/// `helm template` has no cluster to ask: `--api-versions` declares what it would serve, either
/// as group/version or kind-qualified (a live cluster's discovery gives both). A render that
/// declares neither fails with a message naming the flag that makes it work, and what to install.
#[test]
fn optional_apis_render_offline_declared_by_group_version_or_by_kind() {
    let Some((helm, _)) = HelmTools::find("offline rendering of optional APIs") else {
        return;
    };
    let features = [
        (
            "certificates.source=cert-manager",
            "cert-manager.io/v1",
            &["Issuer", "Certificate"][..],
            "Install cert-manager first",
        ),
        (
            "metrics.serviceMonitor.enabled=true",
            "monitoring.coreos.com/v1",
            &["ServiceMonitor"][..],
            "Install the Prometheus Operator's CRDs first",
        ),
    ];
    for (value, group_version, kinds, install) in features {
        let render = |api_versions: &[String]| {
            let mut args = vec!["--set".to_string(), value.to_string()];
            for api in api_versions {
                args.extend(["--api-versions".to_string(), api.clone()]);
            }
            helm.template(RELEASE, NAMESPACE, &args)
        };
        let renders = |api_versions: &[String]| {
            let context = format!("{value} with --api-versions {api_versions:?}");
            let objects = render(api_versions).unwrap_or_else(|e| panic!("{context}:\n{e}"));
            match kinds {
                ["ServiceMonitor"] => check_service_monitor(&context, &objects),
                _ => check_cert_manager(
                    &context,
                    &objects,
                    only(&objects, "MutatingWebhookConfiguration", &context),
                ),
            }
            println!("{context}: renders");
        };
        let kind_qualified: Vec<String> = kinds
            .iter()
            .map(|kind| format!("{group_version}/{kind}"))
            .collect();
        renders(&[group_version.to_string()]);
        renders(&kind_qualified);

        let error = render(&[]).expect_err(value);
        for named in [
            format!("{value} needs the API {group_version}"),
            install.to_string(),
            format!("pass --api-versions {group_version} to helm template"),
        ] {
            assert!(error.contains(&named), "{value}: {named:?} in\n{error}");
        }
        println!(
            "{value}, no --api-versions: {}",
            error.lines().next().unwrap_or_default()
        );
        // What the message says to pass is what renders.
        let flag = error
            .split("--api-versions ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap();
        renders(&[flag.to_string()]);

        // Kind-qualified, every kind is needed: the message names the missing ones.
        if let [first, .., last] = kinds {
            let error = render(&[format!("{group_version}/{first}")]).expect_err(value);
            assert!(
                error.contains(&format!("needs the API {group_version} ({last})")),
                "{value}, only {first} declared: {error}"
            );
        }
    }
}

#[test]
fn options_shape_the_webhook_and_the_pod() {
    let Some((helm, _)) = HelmTools::find("chart options") else {
        return;
    };

    // extraNamespaceSelector: ANDed, after the mode's own expressions, in every webhook.
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("values.yaml");
    std::fs::write(
        &file,
        "webhook:\n  extraNamespaceSelector:\n    matchLabels: {team: mail}\n    matchExpressions: [{key: tier, operator: NotIn, values: [test]}]\n",
    )
    .unwrap();
    let extra = [
        json!({"key": "team", "operator": "In", "values": ["mail"]}),
        json!({"key": "tier", "operator": "NotIn", "values": ["test"]}),
    ];
    for mode in MODES {
        let args = vec![
            "-f".into(),
            file.display().to_string(),
            "--set".into(),
            format!("mode={mode}"),
        ];
        let objects = helm.template(RELEASE, NAMESPACE, &args).unwrap();
        let configuration = only(&objects, "MutatingWebhookConfiguration", mode);
        for webhook in configuration["webhooks"].as_array().unwrap() {
            let expressions = webhook["namespaceSelector"]["matchExpressions"]
                .as_array()
                .unwrap();
            assert_eq!(
                expressions[0],
                json!({"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [NAMESPACE, "kube-system"]}),
                "{mode}: the exclusion comes first and stays"
            );
            let mode_expressions = if mode == "namespace-opt-in" { 2 } else { 1 };
            assert_eq!(
                &expressions[mode_expressions..],
                &extra,
                "{mode}: extraNamespaceSelector"
            );
            assert!(
                webhook["namespaceSelector"].get("matchLabels").is_none(),
                "{mode}"
            );
        }
    }

    // webhook.failurePolicy reaches every webhook.
    let args = ["--set".to_string(), "webhook.failurePolicy=Fail".into()];
    let objects = helm.template(RELEASE, NAMESPACE, &args).unwrap();
    let configuration = only(&objects, "MutatingWebhookConfiguration", "failurePolicy");
    for webhook in configuration["webhooks"].as_array().unwrap() {
        assert_eq!(webhook["failurePolicy"], "Fail", "webhook.failurePolicy");
    }

    // The defaults: no ConfigMap, no --config, only the https port on the Service.
    let objects = helm.template(RELEASE, NAMESPACE, &[]).unwrap();
    assert!(
        objects.iter().all(|o| o["kind"] != "ConfigMap"),
        "no config, no ConfigMap"
    );
    let args = container_args(&objects);
    assert!(!args.contains(&"--config".to_string()), "{args:?}");
    let service = only(&objects, "Service", "defaults");
    assert_eq!(
        service["spec"]["ports"].as_array().unwrap().len(),
        1,
        "{service}"
    );

    // config: a ConfigMap the binary accepts, mounted and passed with --config.
    let config = "config:\n  meshes: [istio, linkerd]\n  catalog: {enable: [lmtp]}\n  outbound: {ports: [submission]}\n";
    std::fs::write(&file, config).unwrap();
    let objects = helm
        .template(
            RELEASE,
            NAMESPACE,
            &["-f".into(), file.display().to_string()],
        )
        .unwrap();
    let config_map = only(&objects, "ConfigMap", "config");
    let rendered = config_map["data"]["config.yaml"].as_str().unwrap();
    let config_file = scratch.path().join("config.yaml");
    std::fs::write(&config_file, rendered).unwrap();
    let output = std::process::Command::new(common::BIN)
        .args(["catalog", "-o", "json", "--config"])
        .arg(&config_file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "serverfirst catalog --config:\n{rendered}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("lmtp"),
        "the configuration took effect"
    );
    let args = container_args(&objects);
    let at = args.iter().position(|a| a == "--config").expect("--config");
    let deployment = only(&objects, "Deployment", "config");
    let pod = &deployment["spec"]["template"]["spec"];
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "config")
        .expect("config mount");
    assert_eq!(
        format!("{}/config.yaml", mount["mountPath"].as_str().unwrap()),
        args[at + 1]
    );
    assert!(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["configMap"]["name"] == config_map["metadata"]["name"]),
        "the ConfigMap is the volume"
    );
    let options = common::subcommand_options("serve").expect("serve options");
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            options.contains(flag),
            "`serverfirst serve` has no option {flag}"
        );
    }

    // Another release name and namespace: every name and reference follows.
    let objects = helm.template("mail-webhook", "ops", &[]).unwrap();
    let configuration = only(
        &objects,
        "MutatingWebhookConfiguration",
        "release mail-webhook",
    );
    assert_eq!(
        configuration["metadata"]["name"],
        "0-mail-webhook-serverfirst"
    );
    let service = only(&objects, "Service", "release mail-webhook");
    let secret = only(&objects, "Secret", "release mail-webhook");
    for webhook in configuration["webhooks"].as_array().unwrap() {
        assert_eq!(
            webhook["clientConfig"]["service"]["name"],
            service["metadata"]["name"]
        );
        assert_eq!(webhook["clientConfig"]["service"]["namespace"], "ops");
        assert_eq!(
            webhook["namespaceSelector"]["matchExpressions"][0]["values"],
            json!(["ops", "kube-system"])
        );
    }
    let pod = &only(&objects, "Deployment", "release mail-webhook")["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"],
        secret["metadata"]["name"]
    );
    assert_eq!(
        pod["serviceAccountName"],
        only(&objects, "ServiceAccount", "sa")["metadata"]["name"]
    );
    let certificate = HelmCertificate::from_secret(secret);
    assert_eq!(
        certificate.dns_names(),
        service_dns_names("mail-webhook-serverfirst", "ops")
    );

    // Released into kube-system, the exclusion names it once.
    let objects = helm.template(RELEASE, "kube-system", &[]).unwrap();
    let configuration = only(&objects, "MutatingWebhookConfiguration", "kube-system");
    assert_eq!(
        configuration["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["kube-system"])
    );
}

fn container_args(objects: &[Value]) -> Vec<String> {
    let deployment = only(objects, "Deployment", "args");
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_certificate_is_kept_across_upgrades_and_renewed_near_expiry() {
    let Some((helm, _)) = HelmTools::find("source=helm upgrade") else {
        return;
    };
    let helm = std::sync::Arc::new(helm);

    // The install: no cluster, a new CA.
    let first = helm.template(RELEASE, NAMESPACE, &[]).unwrap();
    let installed = HelmCertificate::from_objects(&first);
    installed.check_fresh("install");
    installed.check_serves().await;

    // The cluster after `helm install`, on a stub API server.
    let objects = ObjectApi::default();
    let api = StubApi::start(objects.router()).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path(), "stub", &[("stub", "default")]);
    let upgrade = |served: Vec<Value>| {
        objects.serve(&as_installed(&served));
        render_against(&helm, &kubeconfig, Vec::new())
    };

    let second = upgrade(first.clone()).await;
    let secret_path = format!("/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}");
    assert!(
        objects.requests.lock().unwrap().contains(&secret_path),
        "the chart looks up its Secret"
    );
    let kept = HelmCertificate::from_objects(&second);
    assert_eq!(
        kept.secret_data, installed.secret_data,
        "upgrade keeps the Secret"
    );
    assert_eq!(kept.not_after, installed.not_after, "and its not-after");
    assert_eq!(kept.ca_bundle, installed.ca_bundle, "and the caBundle");
    println!(
        "upgrade, not-after {}: Secret and caBundle kept",
        installed.not_after
    );

    // Expiry recorded in 40 days: still kept. In 10 days, or not recorded: renewed.
    for (days, renewed) in [(Some(40), false), (Some(10), true), (None, true)] {
        let mut served = first.clone();
        let secret = served.iter_mut().find(|o| o["kind"] == "Secret").unwrap();
        let annotations = secret["metadata"]["annotations"].as_object_mut().unwrap();
        match days {
            Some(days) => {
                annotations.insert(NOT_AFTER.into(), json!(rfc3339_in_days(days)));
            }
            None => {
                annotations.remove(NOT_AFTER);
            }
        }
        let context = match days {
            Some(days) => format!("not-after in {days} days"),
            None => "no not-after recorded".to_string(),
        };
        let next = HelmCertificate::from_objects(&upgrade(served).await);
        if !renewed {
            assert_eq!(next.secret_data, installed.secret_data, "{context}: kept");
            assert_eq!(next.ca_bundle, installed.ca_bundle, "{context}: kept");
            println!("upgrade, {context}: kept");
            continue;
        }
        for file in ["ca.crt", "tls.crt", "tls.key"] {
            assert_ne!(
                next.secret_data[file], installed.secret_data[file],
                "{context}: {file} renewed"
            );
        }
        next.check_fresh(&context);
        // The new caBundle trusts the new CA and, until every replica has reloaded, the old one.
        let bundle = String::from_utf8(BASE64.decode(&next.ca_bundle).unwrap()).unwrap();
        assert_eq!(
            bundle,
            format!("{}{}", next.ca_pem(), installed.ca_pem()),
            "{context}: caBundle"
        );
        next.check_serves().await;
        installed.check_served_with(&next.ca_bundle).await;
        println!(
            "upgrade, {context}: renewed, new not-after {}, caBundle new CA + previous CA",
            next.not_after
        );
    }
}

/// `helm template --dry-run=server` off the runtime's threads (the stub API server runs on them).
async fn render_against(
    helm: &std::sync::Arc<Helm>,
    kubeconfig: &Path,
    args: Vec<String>,
) -> Vec<Value> {
    let helm = helm.clone();
    let kubeconfig = kubeconfig.to_path_buf();
    tokio::task::spawn_blocking(move || {
        helm.template_against(&kubeconfig, RELEASE, NAMESPACE, &args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_apis_are_found_in_the_clusters_discovery() {
    let Some((helm, _)) = HelmTools::find("capabilities from discovery") else {
        return;
    };
    let helm = std::sync::Arc::new(helm);
    let api = StubApi::start(ObjectApi::default().router()).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path(), "stub", &[("stub", "default")]);
    // The stub's discovery lists cert-manager.io/v1 and monitoring.coreos.com/v1.
    let args = [
        "certificates.source=cert-manager",
        "metrics.serviceMonitor.enabled=true",
    ]
    .iter()
    .flat_map(|a| ["--set".to_string(), a.to_string()])
    .collect();
    let objects = render_against(&helm, &kubeconfig, args).await;
    let configuration = only(&objects, "MutatingWebhookConfiguration", "discovery");
    check_cert_manager("discovery", &objects, configuration);
    check_service_monitor("discovery", &objects);
}

/// The objects as `helm install` leaves them in the cluster: with Helm's ownership metadata,
/// which `helm upgrade` (and `helm template --dry-run=server`) checks before it takes them over.
fn as_installed(objects: &[Value]) -> Vec<Value> {
    objects
        .iter()
        .cloned()
        .map(|mut object| {
            let metadata = object["metadata"].as_object_mut().unwrap();
            let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
            annotations["meta.helm.sh/release-name"] = json!(RELEASE);
            annotations["meta.helm.sh/release-namespace"] = json!(NAMESPACE);
            metadata.entry("labels").or_insert_with(|| json!({}))["app.kubernetes.io/managed-by"] =
                json!("Helm");
            object
        })
        .collect()
}

#[test]
fn helm_package_produces_the_versioned_archive() {
    let Some((helm, _)) = HelmTools::find("helm package") else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let output = helm
        .run(&[
            "package",
            &chart_dir().display().to_string(),
            "-d",
            &out.path().display().to_string(),
        ])
        .unwrap();
    let archive = out
        .path()
        .join(format!("serverfirst-{}.tgz", env!("CARGO_PKG_VERSION")));
    assert!(archive.is_file(), "{output}");
    let listed: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    // The archive is the whole chart: it lints and its schema still refuses bad values.
    helm.run(&["lint", "--strict", &archive.display().to_string()])
        .unwrap();
    let refused = helm.run(&[
        "template",
        "x",
        &archive.display().to_string(),
        "--set",
        "mode=bogus",
    ]);
    assert!(
        refused.is_err_and(|e| e.contains("at '/mode'")),
        "the packaged schema"
    );
    println!("{}", output.trim());
}
