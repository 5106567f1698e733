//! `serverfirst audit` against a stub Kubernetes API server on 127.0.0.1 over HTTPS: the kube
//! client is real, the PodList pages and ReplicaSets are captured-looking JSON.

mod audit_support;
mod common;

use std::process::Command;

use audit_support::{PodSource, kubeconfig, stub_api, stub_api_with};
use serde_json::{Value, json};

async fn run_audit(kubeconfig: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_serverfirst"));
    command
        .arg("audit")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST");
    run(command).await
}

async fn run(mut command: Command) -> (i32, String, String) {
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test]
async fn audit_reports_each_pod_with_its_owner_across_pages() {
    let api = stub_api().await;
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &format!("https://{}", api.addr), &api.ca_pem);
    let (code, stdout, stderr) = run_audit(
        &config,
        &["-A", "-o", "json", "--context", "stub", "--page-size", "2"],
    )
    .await;
    assert_eq!(code, 1, "at-risk pods make the exit code 1\n{stderr}");
    let all: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    // Each namespace's Services follow its pods, decided against their labels.
    let services: Vec<(&str, &str, &str, String)> = all
        .iter()
        .filter(|r| r["kind"] == "Service")
        .map(|r| {
            (
                r["namespace"].as_str().unwrap(),
                r["service"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
                serde_json::to_string(&r["ports"]).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        services,
        [
            ("mail", "mox", "at-risk", "[587]".to_string()),
            ("mail", "relay", "protected", "[25]".to_string()),
            ("jobs", "digest", "would-patch", "[587]".to_string()),
            ("web", "nginx", "not-applicable", "[]".to_string()),
            // outbox has no pods: its Services come last.
            ("outbox", "postfix", "would-patch", "[587]".to_string()),
            ("outbox", "postfix-tcp", "protected", "[587]".to_string()),
        ],
        "{stdout}"
    );
    let mox = all.iter().find(|r| r["service"] == "mox").unwrap();
    assert!(
        mox["fix"]
            .as_str()
            .unwrap()
            .starts_with("meshed clients sniff Service port 587: set appProtocol: tcp"),
        "{mox}"
    );
    assert_eq!(mox["uid"], "uid-svc-mox");
    assert!(
        mox.get("companion").is_none(),
        "no pod behind mox excludes a port: {mox}"
    );
    // relay-0 excludes 25 (serverfirst recorded it): its Service needs the companion rule.
    let relay = all.iter().find(|r| r["service"] == "relay").unwrap();
    assert_eq!(
        relay["companion"],
        "meshed clients need DestinationRule relay-serverfirst (host relay, tls.mode DISABLE on port 25): Istio auto-mTLS does not know the port is excluded"
    );
    assert_eq!(
        *api.calls.service_lists.lock().unwrap(),
        ["mail", "jobs", "web"]
    );
    let rows: Vec<Value> = all.into_iter().filter(|r| r["kind"] == "Pod").collect();
    let summary: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|r| {
            let owner = r
                .get("owner")
                .map(|o| {
                    format!(
                        "{}/{}",
                        o["kind"].as_str().unwrap(),
                        o["name"].as_str().unwrap()
                    )
                })
                .unwrap_or_default();
            (
                r["pod"].as_str().unwrap().into(),
                owner,
                r["status"].as_str().unwrap().into(),
                serde_json::to_string(&r["ports"]).unwrap(),
            )
        })
        .collect();
    let expected = [
        (
            "mox-7c9d5b8f6-x2k4q",
            "Deployment/mox",
            "at-risk",
            "[25,587]",
        ),
        (
            "mox-7c9d5b8f6-p9z8w",
            "Deployment/mox",
            "at-risk",
            "[25,587]",
        ),
        ("relay-0", "StatefulSet/relay", "protected", "[25]"),
        (
            "dovecot-5f6d7c8b9-abcde",
            "Deployment/dovecot",
            "at-risk",
            "[143]",
        ),
        (
            "digest-29123456-q7k2m",
            "Job/digest-29123456",
            "would-patch",
            "[587]",
        ),
        ("nginx", "", "not-applicable", "[]"),
    ];
    let expected: Vec<(String, String, String, String)> = expected
        .iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
        .collect();
    assert_eq!(summary, expected);
    assert_eq!(rows[0]["needsRestart"], true);
    assert_eq!(rows[0]["sidecar"], true);
    let fix = rows[0]["fix"].as_str().unwrap();
    assert!(
        fix.starts_with("kubectl -n mail rollout restart deployment/mox; "),
        "{fix}"
    );
    assert!(
        fix.contains("traffic.sidecar.istio.io/excludeInboundPorts: \"25,587\""),
        "{fix}"
    );
    assert!(
        rows[3]["fix"].as_str().unwrap().contains("\"143,15020\""),
        "CNI mode: the annotation is the fix"
    );
    assert_eq!(rows[4]["needsRestart"], false);

    // Three pages of two; each ReplicaSet fetched once.
    let queries = api.calls.list_queries.lock().unwrap().clone();
    assert_eq!(queries.len(), 3, "{queries:?}");
    assert!(
        queries
            .iter()
            .all(|q| q.get("limit").map(String::as_str) == Some("2"))
    );
    assert_eq!(
        queries[1].get("continue").map(String::as_str),
        Some("page-from-2")
    );
    let mut gets = api.calls.replicaset_gets.lock().unwrap().clone();
    gets.sort();
    assert_eq!(gets, ["dovecot-5f6d7c8b9", "mox-7c9d5b8f6"]);
    assert!(stderr.contains("listed 6 pods"), "{stderr}");
}

/// A Service in a namespace without pods is the one a new deployment is about to fill: listed,
/// would-patch when serverfirst would declare a port, protected when already declared. With
/// `-A` from a paged list of all Services that skips the namespaces audited with their pods;
/// with `-n` from the namespace's own list, only when it had no pods.
#[tokio::test]
async fn services_of_namespaces_without_pods_are_listed() {
    let api = stub_api().await;
    let dir = tempfile::tempdir().unwrap();
    let config = api.kubeconfig(dir.path());
    let service_rows = |stdout: &str| -> Vec<(String, String, String, String)> {
        stdout
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter(|row| row["kind"] == "Service")
            .map(|row| {
                let text = |key: &str| row[key].as_str().unwrap_or_default().to_string();
                (
                    text("namespace"),
                    text("service"),
                    text("status"),
                    text("fix"),
                )
            })
            .collect()
    };
    let outbox = [
        (
            "outbox".to_string(),
            "postfix".to_string(),
            "would-patch".to_string(),
            "serverfirst declares Service port 587 TCP when the Service is next created or updated"
                .to_string(),
        ),
        (
            "outbox".to_string(),
            "postfix-tcp".to_string(),
            "protected".to_string(),
            String::new(),
        ),
    ];

    let args = ["-A", "-o", "ndjson", "-q", "--context", "stub"];
    let (code, stdout, stderr) =
        run_audit(&config, &[&args[..], &["--page-size", "2"]].concat()).await;
    assert_eq!(code, 1, "{stderr}");
    let rows = service_rows(&stdout);
    let namespaces: Vec<&str> = rows.iter().map(|(ns, ..)| ns.as_str()).collect();
    assert_eq!(
        namespaces,
        ["mail", "mail", "jobs", "web", "outbox", "outbox"],
        "each Service once, those of namespaces with pods after their pods\n{stdout}"
    );
    assert_eq!(rows[4..], outbox, "{stdout}");
    assert_eq!(
        *api.calls.service_lists.lock().unwrap(),
        ["mail", "jobs", "web"],
        "namespaces with pods: their own lists, as before"
    );
    let pages = api.calls.all_service_lists.lock().unwrap().clone();
    let continues: Vec<Option<&str>> = pages
        .iter()
        .map(|q| q.get("continue").map(String::as_str))
        .collect();
    assert_eq!(
        continues,
        [None, Some("page-from-2"), Some("page-from-4")],
        "the six Services of all namespaces, in pages of two"
    );
    assert!(
        pages
            .iter()
            .all(|q| q.get("limit").map(String::as_str) == Some("2"))
    );

    // -n of a namespace without pods: its Services, from its own list.
    let (code, stdout, stderr) = run_audit(
        &config,
        &["-n", "outbox", "-o", "ndjson", "-q", "--context", "stub"],
    )
    .await;
    assert_eq!(code, 0, "nothing at risk\n{stderr}");
    assert_eq!(service_rows(&stdout), outbox, "{stdout}");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");

    // -n of a namespace with pods: its Services with them, and no second list.
    api.calls.service_lists.lock().unwrap().clear();
    let (_, stdout, stderr) = run_audit(
        &config,
        &["-n", "jobs", "-o", "ndjson", "-q", "--context", "stub"],
    )
    .await;
    let rows = service_rows(&stdout);
    assert_eq!(rows.len(), 1, "{stdout}\n{stderr}");
    assert_eq!(
        (rows[0].1.as_str(), rows[0].2.as_str()),
        ("digest", "would-patch")
    );
    assert_eq!(*api.calls.service_lists.lock().unwrap(), ["jobs"]);
    assert_eq!(
        api.calls.all_service_lists.lock().unwrap().len(),
        3,
        "-n lists no Services of all namespaces"
    );
}

/// An audit role bound per namespace cannot list the Services of all namespaces: the audit says
/// so once and goes on, with the Services of the namespaces that had pods.
#[tokio::test]
async fn services_of_namespaces_without_pods_forbidden_are_a_warning() {
    let api = stub_api().await;
    api.calls
        .forbid_all_services
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let config = api.kubeconfig(dir.path());
    let (code, stdout, stderr) =
        run_audit(&config, &["-A", "-o", "ndjson", "-q", "--context", "stub"]).await;
    assert_eq!(code, 1, "pods at risk, no error\n{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("warning:"))
        .collect();
    assert_eq!(
        warnings,
        [
            "warning: cannot list services (forbidden): the Services of namespaces without pods are left out"
        ],
        "{stderr}"
    );
    let namespaces: Vec<String> = stdout
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|row| row["kind"] == "Service")
        .map(|row| row["namespace"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(namespaces, ["mail", "mail", "jobs", "web"], "{stdout}");
    assert_eq!(api.calls.all_service_lists.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn audit_table_is_aligned() {
    let api = stub_api().await;
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &format!("https://{}", api.addr), &api.ca_pem);
    let (code, stdout, _) = run_audit(&config, &["--all-namespaces", "--context", "stub"]).await;
    assert_eq!(code, 1);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("NAMESPACE  NAME"), "{stdout}");
    let status_column = lines[0].find("STATUS").unwrap();
    assert_eq!(
        &lines[1][status_column..status_column + 7],
        "at-risk",
        "{stdout}"
    );
    println!("{stdout}");
}

#[tokio::test]
async fn unreachable_api_server_is_one_clear_line_and_exit_2() {
    let api = stub_api().await;
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = kubeconfig(dir.path(), &format!("https://{closed}"), &api.ca_pem);
    let (code, stdout, stderr) = run_audit(&config, &["-A", "--context", "stub"]).await;
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    // The mesh state is read first: its first list is the one that fails.
    assert!(errors[0].contains("cannot list namespaces"), "{stderr}");
    assert!(!stderr.contains("panicked"));

    let (code, _, stderr) = run_audit(&config, &["-A", "--context", "missing"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("missing"), "{stderr}");
}

/// The OpenAPI schema of `version` in the CRD `file` under tests/fixtures/reports, closed the
/// way the API server prunes: a field the schema does not name would be dropped silently, so here
/// it is an error.
fn crd_validator(file: &str, version: &str) -> jsonschema::Validator {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reports")
        .join(file);
    let crd: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let versions = crd["spec"]["versions"].as_array().unwrap();
    let served = versions
        .iter()
        .find(|v| v["name"] == version)
        .unwrap_or_else(|| panic!("{file} has no version {version}"));
    let mut schema = served["schema"]["openAPIV3Schema"].clone();
    close(&mut schema);
    jsonschema::validator_for(&schema).unwrap()
}

fn close(schema: &mut Value) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    if object.contains_key("properties")
        && !object.contains_key("additionalProperties")
        && !object.contains_key("x-kubernetes-preserve-unknown-fields")
    {
        object.insert("additionalProperties".into(), json!(false));
    }
    for (key, value) in object.iter_mut() {
        match key.as_str() {
            "properties" => value
                .as_object_mut()
                .into_iter()
                .flatten()
                .for_each(|(_, v)| close(v)),
            "items" | "additionalProperties" => close(value),
            _ => {}
        }
    }
}

fn schema_errors(validator: &jsonschema::Validator, document: &Value) -> Vec<String> {
    validator
        .iter_errors(document)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn reports(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

#[tokio::test]
async fn policyreport_per_namespace_validates_against_the_crd() {
    let api = stub_api().await;
    let dir = tempfile::tempdir().unwrap();
    let config = api.kubeconfig(dir.path());
    let (code, stdout, stderr) = run_audit(
        &config,
        &[
            "-A",
            "-o",
            "policyreport",
            "--context",
            "stub",
            "--page-size",
            "2",
        ],
    )
    .await;
    assert_eq!(
        code, 1,
        "without --apply the exit codes are audit's\n{stderr}"
    );
    println!("{stdout}");
    let documents = reports(&stdout);
    let validator = crd_validator("wgpolicyk8s.io_policyreports.yaml", "v1alpha2");
    for document in &documents {
        assert_eq!(
            schema_errors(&validator, document),
            Vec::<String>::new(),
            "{document:#}"
        );
    }
    let namespaces: Vec<&str> = documents
        .iter()
        .map(|d| d["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(
        namespaces,
        ["mail", "jobs", "outbox"],
        "web has nothing to report"
    );
    let mail = &documents[0];
    assert_eq!(mail["apiVersion"], "wgpolicyk8s.io/v1alpha2");
    assert_eq!(mail["kind"], "PolicyReport");
    assert_eq!(mail["metadata"]["name"], "serverfirst");
    assert_eq!(
        mail["metadata"]["labels"],
        json!({"app.kubernetes.io/managed-by": "serverfirst"})
    );
    assert!(
        mail.get("source").is_none(),
        "v1alpha2 has source per result"
    );
    assert_eq!(
        mail["summary"],
        json!({"pass": 2, "fail": 4, "warn": 0, "error": 0, "skip": 0})
    );
    let outcomes: Vec<&str> = mail["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["fail", "fail", "pass", "fail", "fail", "pass"]);
    assert_eq!(
        mail["results"][4]["resources"],
        json!([{"apiVersion": "v1", "kind": "Service", "name": "mox", "namespace": "mail", "uid": "uid-svc-mox"}])
    );
    let first = &mail["results"][0];
    for (key, value) in [
        ("source", "serverfirst"),
        ("policy", "serverfirst"),
        ("rule", "server-first-ports"),
    ] {
        assert_eq!(first[key], value, "{key}");
    }
    assert_eq!(
        first["resources"],
        json!([{"apiVersion": "v1", "kind": "Pod", "name": "mox-7c9d5b8f6-x2k4q", "namespace": "mail", "uid": "uid-mox-7c9d5b8f6-x2k4q"}])
    );
    assert_eq!(
        first["properties"],
        json!({"companion": first["properties"]["companion"], "owner": "Deployment/mox", "ports": "25,587", "restart": "yes"})
    );
    assert!(
        first["message"]
            .as_str()
            .unwrap()
            .starts_with("kubectl -n mail rollout restart deployment/mox; "),
        "{first}"
    );
    // jobs: the pod without a sidecar yet and the Service in front of it.
    assert_eq!(documents[1]["summary"]["warn"], 2);
    // outbox, without pods: a Service to declare, and one declared.
    assert_eq!(
        documents[2]["summary"],
        json!({"pass": 1, "fail": 0, "warn": 1, "error": 0, "skip": 0})
    );

    // The closed schema is what catches a field in the wrong place.
    let mut misplaced = mail.clone();
    misplaced["source"] = json!("serverfirst");
    assert!(
        !schema_errors(&validator, &misplaced).is_empty(),
        "a top-level source must not pass"
    );

    let (_, stdout, _) = run_audit(
        &config,
        &[
            "-A",
            "-o",
            "policyreport",
            "--show-all",
            "--context",
            "stub",
            "-q",
        ],
    )
    .await;
    let documents = reports(&stdout);
    assert_eq!(documents.len(), 4);
    // web: the nginx pod and its Service.
    assert_eq!(documents[2]["summary"]["skip"], 2);
    assert_eq!(
        documents[2]["results"][0]["message"],
        "no server-first ports"
    );
    assert!(
        documents
            .iter()
            .all(|d| schema_errors(&validator, d).is_empty())
    );
}

/// Policy Reporter groups results by `source`; an OpenReports result has its own
/// (`ReportResult.source`, which overrides the report's).
#[tokio::test]
async fn openreports_results_each_carry_source_serverfirst() {
    let api = stub_api().await;
    let dir = tempfile::tempdir().unwrap();
    let config = api.kubeconfig(dir.path());
    let (code, stdout, stderr) = run_audit(
        &config,
        &[
            "-A",
            "-o",
            "policyreport",
            "--report-api",
            "openreports",
            "--context",
            "stub",
        ],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    let documents = reports(&stdout);
    assert_eq!(documents.len(), 3);
    let validator = crd_validator("openreports.io_reports.yaml", "v1alpha1");
    let wgpolicy = crd_validator("wgpolicyk8s.io_policyreports.yaml", "v1alpha2");
    for document in &documents {
        assert_eq!(
            schema_errors(&validator, document),
            Vec::<String>::new(),
            "{document:#}"
        );
        assert_eq!(document["apiVersion"], "openreports.io/v1alpha1");
        assert_eq!(document["kind"], "Report");
        assert_eq!(document["source"], "serverfirst");
        let results = document["results"].as_array().unwrap();
        assert!(!results.is_empty(), "{document:#}");
        for result in results {
            assert_eq!(result["source"], "serverfirst", "{result:#}");
        }
        assert!(
            !schema_errors(&wgpolicy, document).is_empty(),
            "not a v1alpha2 PolicyReport"
        );
    }
}

#[tokio::test]
async fn apply_writes_reports_by_server_side_apply_and_deletes_stale_ones() {
    let api = stub_api().await;
    let dir = tempfile::tempdir().unwrap();
    let config = api.kubeconfig(dir.path());
    let stored = |namespace: &str, labels: Value| {
        json!({"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
               "metadata": {"name": "serverfirst", "namespace": namespace, "labels": labels}, "results": []})
    };
    {
        let mut reports = api.calls.reports.lock().unwrap();
        for (namespace, labels) in [
            (
                "gone",
                json!({"app.kubernetes.io/managed-by": "serverfirst"}),
            ),
            (
                "mail",
                json!({"app.kubernetes.io/managed-by": "serverfirst"}),
            ),
            ("theirs", json!({"app.kubernetes.io/managed-by": "kyverno"})),
        ] {
            reports.insert(
                (
                    "policyreports".into(),
                    namespace.into(),
                    "serverfirst".into(),
                ),
                stored(namespace, labels),
            );
        }
    }
    let (code, stdout, stderr) = run_audit(
        &config,
        &["-A", "-o", "policyreport", "--apply", "--context", "stub"],
    )
    .await;
    assert_eq!(
        code, 0,
        "with --apply the reports carry the findings\n{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("deleted gone/serverfirst"), "{stderr}");

    let kept: Vec<String> = api
        .calls
        .reports
        .lock()
        .unwrap()
        .keys()
        .map(|(_, ns, _)| ns.clone())
        .collect();
    assert_eq!(kept, ["jobs", "mail", "outbox", "theirs"]);
    let validator = crd_validator("wgpolicyk8s.io_policyreports.yaml", "v1alpha2");
    let mail = api.calls.reports.lock().unwrap()[&(
        "policyreports".to_string(),
        "mail".to_string(),
        "serverfirst".to_string(),
    )]
        .clone();
    assert_eq!(schema_errors(&validator, &mail), Vec::<String>::new());
    assert_eq!(mail["summary"]["fail"], 4);

    let requests = api.calls.report_requests.lock().unwrap().clone();
    let summary: Vec<(&str, &str)> = requests
        .iter()
        .map(|r| (r.method, r.path.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "PATCH",
                "/apis/wgpolicyk8s.io/v1alpha2/namespaces/mail/policyreports/serverfirst"
            ),
            (
                "PATCH",
                "/apis/wgpolicyk8s.io/v1alpha2/namespaces/jobs/policyreports/serverfirst"
            ),
            (
                "PATCH",
                "/apis/wgpolicyk8s.io/v1alpha2/namespaces/outbox/policyreports/serverfirst"
            ),
            ("GET", "/apis/wgpolicyk8s.io/v1alpha2/policyreports"),
            (
                "DELETE",
                "/apis/wgpolicyk8s.io/v1alpha2/namespaces/gone/policyreports/serverfirst"
            ),
        ]
    );
    for patch in requests.iter().filter(|r| r.method == "PATCH") {
        assert_eq!(patch.content_type, "application/apply-patch+yaml");
        assert_eq!(
            patch.query.get("fieldManager").map(String::as_str),
            Some("serverfirst")
        );
        assert_eq!(patch.query.get("force").map(String::as_str), Some("true"));
    }
    assert_eq!(
        requests[3].query.get("labelSelector").map(String::as_str),
        Some("app.kubernetes.io/managed-by=serverfirst")
    );

    let (code, _, stderr) = run_audit(
        &config,
        &[
            "-A",
            "-o",
            "policyreport",
            "--apply",
            "--fail-on-risk",
            "--context",
            "stub",
        ],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");

    let (code, _, stderr) = run_audit(&config, &["-A", "--apply", "--context", "stub"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("-o policyreport"), "{stderr}");
}

#[tokio::test]
async fn ndjson_rows_and_progress_by_tenths_of_the_remaining_count() {
    let api = stub_api().await;
    let dir = tempfile::tempdir().unwrap();
    let config = api.kubeconfig(dir.path());
    let (code, stdout, stderr) = run_audit(
        &config,
        &[
            "-A",
            "-o",
            "ndjson",
            "--context",
            "stub",
            "--page-size",
            "1",
        ],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    let rows: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 12);
    assert_eq!(
        rows.iter().filter(|r| r["kind"] == "Pod").count(),
        6,
        "{stdout}"
    );
    assert_eq!(rows[0]["pod"], "mox-7c9d5b8f6-x2k4q");
    // Non-TTY stderr: a line as each tenth is passed (six pages of one pass five of them), then
    // the closing line.
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 6, "{stderr}");
    assert!(
        lines[0].starts_with("listed 1 of 6 pods (16%), 1 page,"),
        "{stderr}"
    );
    assert!(lines[4].starts_with("listed 5 of 6 pods (83%)"), "{stderr}");
    assert!(
        lines[5].starts_with("listed 6 pods in 6 pages, "),
        "{stderr}"
    );

    let (_, _, stderr) = run_audit(
        &config,
        &["-A", "-o", "ndjson", "--context", "stub", "--quiet"],
    )
    .await;
    assert_eq!(stderr, "");
}

#[tokio::test]
async fn kubectl_plugin_name_kubectl_flags_and_help() {
    let api = stub_api().await;
    let dir = tempfile::tempdir().unwrap();
    let config = api.kubeconfig(dir.path());
    let bin = tempfile::tempdir().unwrap();
    let plugin = bin.path().join("kubectl-serverfirst");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_serverfirst"), &plugin).unwrap();

    let mut command = Command::new(&plugin);
    command.args(["audit", "--help"]);
    let (code, help, _) = run(command).await;
    assert_eq!(code, 0);
    assert!(
        help.contains("Usage: kubectl serverfirst audit [OPTIONS]"),
        "{help}"
    );
    for flag in [
        "--kubeconfig <KUBECONFIG>",
        "--context <CONTEXT>",
        "-n, --namespace <NAMESPACE>",
    ] {
        assert!(help.contains(flag), "{flag}\n{help}");
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_serverfirst"));
    command.args(["audit", "--help"]);
    let (_, help, _) = run(command).await;
    assert!(
        help.contains("Usage: serverfirst audit [OPTIONS]"),
        "{help}"
    );

    // --kubeconfig instead of $KUBECONFIG; -n picks the namespace.
    let mut command = Command::new(&plugin);
    command
        .args([
            "audit",
            "-A",
            "-o",
            "json",
            "--context",
            "stub",
            "--kubeconfig",
        ])
        .arg(&config)
        .env_remove("KUBECONFIG")
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST");
    let (code, stdout, stderr) = run(command).await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Vec<Value>>(&stdout).unwrap().len(),
        12
    );

    let mut command = Command::new(&plugin);
    command
        .args(["audit", "--context", "missing", "--kubeconfig"])
        .arg(&config)
        .env_remove("KUBERNETES_SERVICE_HOST");
    let (code, _, stderr) = run(command).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("missing"), "{stderr}");

    // kubectl finds the plugin on PATH and passes the arguments on.
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        common::tool_missing(
            "kubectl_plugin_name_kubectl_flags_and_help",
            "kubectl is not installed",
        );
        return;
    }
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("kubectl");
    command
        .args([
            "serverfirst",
            "audit",
            "-A",
            "-o",
            "ndjson",
            "-q",
            "--context",
            "stub",
            "--kubeconfig",
        ])
        .arg(&config)
        .env("PATH", path)
        .env_remove("KUBERNETES_SERVICE_HOST");
    let (code, stdout, stderr) = run(command).await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stdout.lines().count(), 12, "{stdout}");
}

/// Peak RSS of `serverfirst audit -A -o FORMAT` over a generated cluster (and a tenth as many
/// Services in namespaces without pods), by `/usr/bin/time -v`, at a tenth of the pods and at all
/// of them: flat in cluster size, and (release builds, whose
/// figures docs/src/audit.md gives) at most 32 MiB. SERVERFIRST_AUDIT_PODS sets the pod count (default
/// 10,000), SERVERFIRST_AUDIT_BIN another binary to measure, SERVERFIRST_AUDIT_OUTPUTS the
/// formats (default all four).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_memory_stays_flat_in_cluster_size() {
    const TEST: &str = "audit_memory_stays_flat_in_cluster_size";
    const LIMIT_KIB: u64 = 32 * 1024;
    // Collecting every row grew by about 1 KiB a pod (9 MiB from 1,000 to 10,000 pods).
    const GROWTH_KIB: u64 = 4 * 1024;
    if !std::path::Path::new("/usr/bin/time").exists() {
        common::tool_missing(TEST, "/usr/bin/time (GNU time) is not installed");
        return;
    }
    let pods: usize = std::env::var("SERVERFIRST_AUDIT_PODS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let own_binary = env!("CARGO_BIN_EXE_serverfirst").to_string();
    let bin = std::env::var("SERVERFIRST_AUDIT_BIN").unwrap_or(own_binary.clone());
    let outputs = std::env::var("SERVERFIRST_AUDIT_OUTPUTS")
        .unwrap_or("table,json,ndjson,policyreport".into());
    let dir = tempfile::tempdir().unwrap();
    let mut peaks: Vec<(String, usize, u64)> = Vec::new();
    for count in [pods / 10, pods] {
        let api = stub_api_with(PodSource::Generated(count)).await;
        let config = api.kubeconfig(dir.path());
        for output in outputs.split(',') {
            let stdout_path = dir.path().join(format!("audit.{output}"));
            let mut command = Command::new("/usr/bin/time");
            command
                .args(["-v", &bin, "audit", "-A", "-o", output, "--context", "stub"])
                .env("KUBECONFIG", &config)
                .env_remove("KUBERNETES_SERVICE_HOST")
                .stdout(std::fs::File::create(&stdout_path).unwrap());
            let (code, _, stderr) = run(command).await;
            assert_eq!(code, 1, "pods at risk: exit 1\n{stderr}");
            let field = |name: &str| {
                stderr
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(name))
                    .unwrap_or_else(|| panic!("no {name} in\n{stderr}"))
                    .trim()
                    .to_string()
            };
            let peak_kib: u64 = field("Maximum resident set size (kbytes):")
                .parse()
                .unwrap();
            let elapsed = field("Elapsed (wall clock) time (h:mm:ss or m:ss):");
            let written = std::fs::metadata(&stdout_path).unwrap().len();
            println!(
                "/usr/bin/time -v {bin} audit -A -o {output} --context stub  # {count} pods: peak RSS {:.1} MiB, {elapsed} elapsed, {written} bytes written",
                peak_kib as f64 / 1024.0
            );
            assert!(
                written > count as u64 * 20,
                "{output}: the rows were written"
            );
            if bin == own_binary && count >= 5_000 {
                let progress = stderr.lines().filter(|l| l.starts_with("listed ")).count();
                assert_eq!(progress, 10, "nine tenths and the closing line\n{stderr}");
            }
            if bin == own_binary && output == "ndjson" {
                let written = std::fs::read_to_string(&stdout_path).unwrap();
                let services = written
                    .lines()
                    .filter(|l| l.starts_with(r#"{"kind":"Service""#))
                    .count();
                assert_eq!(
                    services,
                    count / 10,
                    "the Services without pods were listed"
                );
            }
            peaks.push((output.to_string(), count, peak_kib));
        }
    }
    for (output, count, peak_kib) in &peaks {
        let (_, _, smaller) = peaks
            .iter()
            .find(|(o, c, _)| o == output && *c == pods / 10)
            .unwrap();
        assert!(
            peak_kib.saturating_sub(*smaller) <= GROWTH_KIB,
            "-o {output}: peak RSS grew from {smaller} KiB to {peak_kib} KiB at {count} pods"
        );
        if !cfg!(debug_assertions) {
            assert!(
                *peak_kib <= LIMIT_KIB,
                "-o {output}: peak RSS {peak_kib} KiB over {LIMIT_KIB} KiB"
            );
        }
    }
}

/// With STRICT mTLS in `mail` (read from the cluster like the pods), captured mail ports are
/// protected by staying in the mesh, and a port some earlier decision excluded is exposed: it
/// bypasses STRICT. In a PolicyReport that is a `fail` of severity `high`.
#[tokio::test]
async fn under_strict_mtls_captured_ports_are_kept_and_excluded_ones_exposed() {
    let api = stub_api().await;
    api.calls.policies.lock().unwrap().extend([
        json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
               "metadata": {"namespace": "mail", "name": "default", "creationTimestamp": "2026-11-01T08:00:00Z"},
               "spec": {"mtls": {"mode": "STRICT"}}}),
        json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
               "metadata": {"namespace": "web", "name": "allow-nothing"}, "spec": {"action": "AUDIT"}}),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let config = api.kubeconfig(dir.path());
    let (code, stdout, stderr) =
        run_audit(&config, &["-A", "-o", "json", "--context", "stub"]).await;
    assert_eq!(code, 1, "an exposed pod makes the exit code 1\n{stderr}");
    let rows: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    let pod = |name: &str| {
        rows.iter()
            .find(|r| r["pod"] == name)
            .unwrap_or_else(|| panic!("no row for {name}: {stdout}"))
    };
    let mox = pod("mox-7c9d5b8f6-x2k4q");
    assert_eq!(mox["status"], "protected", "{mox:#}");
    assert_eq!(
        mox["kept"],
        json!({"25": "STRICT by mail/default", "587": "STRICT by mail/default"})
    );
    assert!(
        mox["reason"]
            .as_str()
            .unwrap()
            .starts_with("ports 25,587 kept in the mesh (STRICT by mail/default)"),
        "{mox:#}"
    );
    assert!(
        mox.get("companion").is_none(),
        "no rule for kept ports: {mox:#}"
    );
    let relay = pod("relay-0");
    assert_eq!(relay["status"], "exposed", "{relay:#}");
    assert_eq!(relay["needsRestart"], true);
    assert_eq!(
        relay["fix"],
        "kubectl -n mail rollout restart statefulset/relay; port 25 bypass STRICT by mail/default: recreate the pod with serverfirst installed, which keeps them in the mesh"
    );
    assert_eq!(pod("dovecot-5f6d7c8b9-abcde")["status"], "protected");
    // Outside `mail` nothing enforces identity (an AUDIT policy enforces nothing): as before.
    assert_eq!(pod("digest-29123456-q7k2m")["status"], "would-patch");

    let (_, stdout, _) = run_audit(
        &config,
        &["-n", "mail", "-o", "policyreport", "--context", "stub"],
    )
    .await;
    let documents = reports(&stdout);
    let validator = crd_validator("wgpolicyk8s.io_policyreports.yaml", "v1alpha2");
    assert_eq!(
        schema_errors(&validator, &documents[0]),
        Vec::<String>::new()
    );
    let relay = documents[0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"][0]["name"] == "relay-0")
        .unwrap();
    assert_eq!(
        (&relay["result"], &relay["severity"]),
        (&json!("fail"), &json!("high"))
    );
}
