//! `check` and `render` over manifest fixtures: every workload kind, lists, broken documents.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;
use serverfirst::config::Config;
use serverfirst::manifests::{self, Row, Source, Status};
use serverfirst::mesh_state::MeshState;

/// The mesh state one file's documents describe, as `check` and `render` read it.
fn mesh_of(file: &str, text: &str, config: &Config) -> MeshState {
    let source = Source {
        name: file.to_string(),
        text: Ok(text.to_string()),
    };
    manifests::mesh_state(std::slice::from_ref(&source), config)
}

/// `check` of one file, against the mesh state its own documents describe.
fn check_text(file: &str, text: &str, config: &Config) -> Vec<Row> {
    manifests::check_text(file, text, config, &mesh_of(file, text, config))
}

/// `render` of one file, against the mesh state its own documents describe.
fn render_text(file: &str, text: &str, config: &Config) -> (String, Vec<Row>) {
    manifests::render_text(file, text, config, &mesh_of(file, text, config))
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new("tests/fixtures/manifests").join(name)).unwrap()
}

fn summary(rows: &[Row]) -> Vec<(String, String, Status, Vec<u16>)> {
    rows.iter()
        .map(|r| (r.kind.clone(), r.name.clone(), r.status, r.ports.clone()))
        .collect()
}

fn row(
    kind: &str,
    name: &str,
    status: Status,
    ports: &[u16],
) -> (String, String, Status, Vec<u16>) {
    (kind.to_string(), name.to_string(), status, ports.to_vec())
}

#[test]
fn check_finds_the_template_of_every_workload_kind() {
    let rows = check_text(
        "workloads.yaml",
        &fixture("workloads.yaml"),
        &Config::default(),
    );
    assert_eq!(
        summary(&rows),
        [
            row("Pod", "relay", Status::WouldPatch, &[25]),
            row("Deployment", "mox", Status::WouldPatch, &[25, 587]),
            row("StatefulSet", "imap", Status::WouldPatch, &[110, 143]),
            row("DaemonSet", "ftp", Status::WouldPatch, &[21, 30000]),
            row("ReplicaSet", "ldap", Status::WouldPatch, &[389]),
            row("Job", "smoke", Status::WouldPatch, &[2525]),
            row("CronJob", "digest", Status::WouldPatch, &[1587]),
            row(
                "ReplicationController",
                "legacy",
                Status::WouldPatch,
                &[587]
            ),
            row("Service", "mox", Status::Protected, &[25]),
            row("Deployment", "web", Status::NotApplicable, &[]),
        ]
    );
    assert_eq!(
        rows[2].changes[0].value, "110,143,9090",
        "merged with the existing exclude list"
    );
    assert_eq!((rows[1].document, rows[1].line), (2, 13));
    // The Service is decided on too, and listed: 25 is already TCP to Istio.
    assert!(
        !rows[8].without_template && rows[8].changes.is_empty(),
        "{:?}",
        rows[8]
    );
    assert_eq!(manifests::exit_code(&rows), 1);
}

#[test]
fn check_reads_list_items() {
    let rows = check_text("list.yaml", &fixture("list.yaml"), &Config::default());
    assert_eq!(
        summary(&rows),
        [
            row("Pod", "mox-7c9d5b8f6-x2k4q", Status::WouldPatch, &[587]),
            row("Pod", "web-6b7f-abcde", Status::NotApplicable, &[]),
        ]
    );
    assert_eq!((rows[0].item, rows[1].item), (Some(0), Some(1)));
}

#[test]
fn broken_documents_are_reported_and_the_others_still_processed() {
    let rows = check_text(
        "mixed-invalid.yaml",
        &fixture("mixed-invalid.yaml"),
        &Config::default(),
    );
    assert_eq!(rows.len(), 5);
    assert_eq!(
        (rows[0].name.as_str(), rows[0].status),
        ("first", Status::WouldPatch)
    );
    assert_eq!((rows[1].document, rows[1].status), (2, Status::Error));
    assert!(
        rows[1].message.starts_with("invalid YAML at line 12"),
        "{}",
        rows[1].message
    );
    assert_eq!(
        (rows[2].name.as_str(), rows[2].status),
        ("empty", Status::Error)
    );
    assert_eq!(rows[2].message, "pod template has no containers");
    assert_eq!(
        (rows[3].kind.as_str(), rows[3].status),
        ("Widget", Status::NotApplicable)
    );
    assert_eq!(
        (rows[4].name.as_str(), rows[4].status),
        ("last", Status::WouldPatch)
    );
    assert_eq!(manifests::exit_code(&rows), 2);
}

#[test]
fn render_adds_the_annotations_and_is_idempotent() {
    let config = Config::default();
    for name in [
        "workloads.yaml",
        "list.yaml",
        "mixed-invalid.yaml",
        "deployment.json",
    ] {
        let original = fixture(name);
        let (rendered, _) = render_text(name, &original, &config);
        let rows = check_text(name, &rendered, &config);
        assert!(
            rows.iter().all(|r| r.status != Status::WouldPatch),
            "{name}: {rows:#?}"
        );
        let (again, _) = render_text(name, &rendered, &config);
        assert_eq!(
            again, rendered,
            "{name}: render of a rendered file changes nothing"
        );
    }
}

#[test]
fn render_keeps_comments_and_untouched_documents_byte_for_byte() {
    let original = fixture("workloads.yaml");
    let (rendered, _) = render_text("workloads.yaml", &original, &Config::default());
    assert!(
        rendered
            .starts_with("# Every workload kind with a pod template, plus kinds without one.\n")
    );
    assert!(rendered.contains("        - name: mox  # the mail server\n"));
    assert!(rendered.contains(
        "      annotations:\n        traffic.sidecar.istio.io/excludeInboundPorts: \"25,587\"\n"
    ));
    let untouched = original
        .split("---\n")
        .filter(|d| d.contains("kind: Service") || d.contains("name: web"))
        .collect::<Vec<_>>();
    for document in untouched {
        assert!(
            rendered.contains(document),
            "document rewritten:\n{document}"
        );
    }
    // Same document order.
    let kinds = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("kind: "))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(&rendered), kinds(&original));
}

#[test]
fn render_keeps_json_as_json_and_shrinks_an_include_list() {
    let (rendered, _) = render_text(
        "deployment.json",
        &fixture("deployment.json"),
        &Config::default(),
    );
    let value: Value = serde_json::from_str(&rendered).unwrap();
    let annotations = &value["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        annotations["traffic.sidecar.istio.io/includeInboundPorts"],
        "8025"
    );
    assert_eq!(annotations["serverfirst.dev/excluded-ports"], "1025");
}

#[test]
fn render_leaves_broken_documents_as_they_were() {
    let original = fixture("mixed-invalid.yaml");
    let (rendered, rows) = render_text("mixed-invalid.yaml", &original, &Config::default());
    assert!(rendered.contains("metadata: {name: broken\nspec: [unclosed\n"));
    assert!(rows.iter().any(|r| r.status == Status::Error));
}

fn serverfirst(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_serverfirst"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn cli_exit_codes_and_formats() {
    let (code, stdout, _) = serverfirst(
        &[
            "check",
            "-f",
            "tests/fixtures/manifests/workloads.yaml",
            "-o",
            "json",
        ],
        None,
    );
    assert_eq!(code, 1);
    let rows: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(rows[1]["status"], "would-patch");
    assert_eq!(rows[1]["file"], "tests/fixtures/manifests/workloads.yaml");

    let (code, stdout, stderr) = serverfirst(&["check", "-f", "tests/fixtures/manifests"], None);
    assert_eq!(code, 2, "a directory with a broken file");
    assert!(
        stdout.contains("tests/fixtures/manifests/mixed-invalid.yaml:8"),
        "{stdout}"
    );
    assert!(stderr.contains("errors"), "{stderr}");

    let (code, rendered, _) = serverfirst(&["render", "-f", "-"], Some(&fixture("workloads.yaml")));
    assert_eq!(code, 0);
    let (code, _, _) = serverfirst(&["check", "-f", "-"], Some(&rendered));
    assert_eq!(code, 0, "rendered manifests need nothing more");

    let (code, _, stderr) = serverfirst(&["check", "-f", "/nonexistent.yaml"], None);
    assert_eq!(code, 2);
    assert!(stderr.contains("1 errors"), "{stderr}");
}

#[test]
fn render_in_place_rewrites_only_files_that_change() {
    let dir = tempfile::tempdir().unwrap();
    let changed = dir.path().join("mail.yaml");
    let unchanged = dir.path().join("web.yaml");
    std::fs::write(&changed, fixture("workloads.yaml")).unwrap();
    let web = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: w, image: nginx}]}\n";
    std::fs::write(&unchanged, web).unwrap();
    let (code, stdout, _) = serverfirst(
        &["render", "--in-place", "-f", dir.path().to_str().unwrap()],
        None,
    );
    assert_eq!((code, stdout.as_str()), (0, ""));
    assert!(
        std::fs::read_to_string(&changed)
            .unwrap()
            .contains("serverfirst.dev/excluded-ports")
    );
    assert_eq!(std::fs::read_to_string(&unchanged).unwrap(), web);
}

#[test]
fn check_and_render_give_the_destination_rule_meshed_clients_need() {
    let (code, stdout, _) = serverfirst(
        &["check", "-f", "manifests/examples/mox", "-o", "json"],
        None,
    );
    assert_eq!(code, 1);
    let rows: Value = serde_json::from_str(&stdout).unwrap();
    let deployment = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "Deployment")
        .unwrap();
    let advice = deployment["companions"][0].as_str().unwrap();
    assert!(
        advice.contains(
            "DestinationRule mox-serverfirst (host mox, tls.mode DISABLE on ports 25,465,587)"
        ),
        "{advice}"
    );

    let (code, rendered, _) = serverfirst(
        &["render", "--companions", "-f", "manifests/examples/mox"],
        None,
    );
    assert_eq!(code, 0);
    let companion = rendered
        .split("# Companion for meshed clients (Istio auto-mTLS)\n")
        .nth(1)
        .expect("a companion document");
    let rule: Value = serde_saphyr::from_str(companion).unwrap();
    assert_eq!(rule["kind"], "DestinationRule");
    assert_eq!(
        rule["spec"]["trafficPolicy"]["portLevelSettings"][1],
        serde_json::json!({"port": {"number": 465}, "tls": {"mode": "DISABLE"}})
    );
}

/// Manifests shaped like public ones (a docker-mailserver Deployment opening with a comment
/// block, an FTP server with a bare passive range), as `check` prints them.
#[test]
fn check_reports_real_manifests_in_the_operators_terms() {
    let (code, stdout, stderr) = serverfirst(
        &[
            "check",
            "-f",
            "tests/fixtures/manifests/real/mailserver.yaml",
        ],
        None,
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    // The comment block before the first `---` is part of document 1: the ConfigMap.
    let deployment = stdout
        .lines()
        .find(|l| l.contains("Deployment"))
        .expect("a Deployment row");
    assert!(
        deployment.contains(":13 ") && deployment.contains("  2  "),
        "{deployment}"
    );
    assert!(deployment.contains("25,465,587"), "{deployment}");
    // 993 named imap-implicit and 10993 named imap-secure are IMAPS, 4190 ManageSieve: off.
    assert!(
        stdout.contains("note: tests/fixtures/manifests/real/mailserver.yaml:13 (document 2): 993,10993 are imaps, off by default: `catalog.enable: [imaps]`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("4190 is managesieve, off by default"),
        "{stdout}"
    );
    // The ConfigMap is counted, not listed; --show-all lists it.
    assert!(!stdout.contains("ConfigMap"), "{stdout}");
    assert!(
        stderr.contains("3 objects: 2 would-patch, 0 protected, 1 not-applicable, 0 errors (1 of them without a pod template)"),
        "{stderr}"
    );
    let (_, all, _) = serverfirst(
        &[
            "check",
            "--show-all",
            "-f",
            "tests/fixtures/manifests/real/mailserver.yaml",
        ],
        None,
    );
    assert!(
        all.lines()
            .any(|l| l.contains(":1 ") && l.contains("ConfigMap")),
        "{all}"
    );

    // The Service has no namespace: its companion has none either, and the short host.
    let advice = stdout
        .lines()
        .find(|l| l.starts_with("companion:"))
        .expect("advice");
    assert!(
        advice.contains("DestinationRule mailserver-serverfirst (host mailserver, tls.mode DISABLE on ports 25,465,587)"),
        "{advice}"
    );
    let (_, rendered, _) = serverfirst(
        &[
            "render",
            "--companions",
            "-f",
            "tests/fixtures/manifests/real/mailserver.yaml",
        ],
        None,
    );
    let rule: Value = serde_saphyr::from_str(
        rendered
            .split("# Companion for meshed clients (Istio auto-mTLS)\n")
            .nth(1)
            .expect("a companion"),
    )
    .unwrap();
    assert_eq!(
        rule["metadata"],
        serde_json::json!({"name": "mailserver-serverfirst"})
    );
    assert_eq!(rule["spec"]["host"], "mailserver");
}

#[test]
fn check_names_the_ftp_passive_ports() {
    let rows = check_text("ftp.yaml", &fixture("real/ftp.yaml"), &Config::default());
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0].ports,
        [21, 21100, 21101, 21102, 21103, 21104],
        "{rows:#?}"
    );
    assert_eq!(
        rows[0].warnings,
        ["FTP passive data ports 21100-21104 (container \"vsftpd\", beside FTP control port 21)"]
    );
}

/// The public vsftpd Service (`ftp-control` 21, `pasv-start` 21100, `pasv-1` 21101): its passive
/// ports are declared TCP beside the control port, and named as the pod's are.
#[test]
fn the_ftp_services_passive_ports_are_declared_tcp() {
    let config = Config::default();
    let rows = check_text("ftp.yaml", &fixture("real/ftp.yaml"), &config);
    let service = &rows[1];
    assert_eq!(
        (
            service.kind.as_str(),
            service.status,
            service.ports.as_slice()
        ),
        ("Service", Status::WouldPatch, &[21, 21100, 21101][..]),
        "{rows:#?}"
    );
    let changes: Vec<(&str, &str)> = service
        .changes
        .iter()
        .map(|c| (c.annotation.as_str(), c.value.as_str()))
        .collect();
    assert_eq!(
        changes,
        [
            ("spec.ports[0].appProtocol", "tcp"),
            ("spec.ports[1].appProtocol", "tcp"),
            ("spec.ports[2].appProtocol", "tcp"),
            ("serverfirst.dev/declared-tcp-ports", "21,21100,21101"),
        ]
    );
    assert_eq!(
        service.warnings,
        ["FTP passive data ports 21100,21101 (Service \"ftp\", beside FTP control port 21)"]
    );
    let (rendered, _) = render_text("ftp.yaml", &fixture("real/ftp.yaml"), &config);
    let again = check_text("ftp.yaml", &rendered, &config);
    assert_eq!(again[1].status, Status::Protected, "{again:#?}");
}

#[test]
fn an_unparsable_document_is_named_and_explained() {
    let (code, stdout, _) = serverfirst(
        &[
            "check",
            "-f",
            "tests/fixtures/manifests/real/broken.yaml",
            "-o",
            "json",
        ],
        None,
    );
    assert_eq!(code, 2);
    let rows: Value = serde_json::from_str(&stdout).unwrap();
    let row = &rows[0];
    assert_eq!(
        (row["kind"].as_str(), row["name"].as_str()),
        (Some("Deployment"), Some("relay"))
    );
    assert_eq!(
        row["message"],
        "invalid YAML at line 7, column 5: key \"app\" appears twice in the same mapping"
    );
}

#[test]
fn a_port_of_a_protocol_that_is_off_is_named_in_the_row() {
    let pod = "kind: Pod\nmetadata:\n  name: db\nspec:\n  containers:\n  - name: mysql\n    ports:\n    - containerPort: 3306\n";
    let rows = check_text("db.yaml", pod, &Config::default());
    assert_eq!(rows[0].status, Status::NotApplicable);
    assert_eq!(
        rows[0].message,
        "3306 is mysql, off by default: `catalog.enable: [mysql]`"
    );
}

#[test]
fn check_and_render_declare_service_ports_keeping_comments() {
    let service = "\
# The mail front door.
apiVersion: v1
kind: Service
metadata:
  name: mox # MTA
  namespace: mail
spec:
  selector:
    app: mox
  ports:
    # Mail submission, sniffed by meshed clients as written.
    - name: submission
      port: 587
      targetPort: submission
    - name: http
      port: 80
    - name: imap
      port: 143
      appProtocol: smtp
";
    let config = Config::default();
    let rows = check_text("svc.yaml", service, &config);
    assert_eq!(
        summary(&rows),
        [row("Service", "mox", Status::WouldPatch, &[143, 587])]
    );
    let changes: Vec<(&str, &str)> = rows[0]
        .changes
        .iter()
        .map(|c| (c.annotation.as_str(), c.value.as_str()))
        .collect();
    assert_eq!(
        changes,
        [
            ("spec.ports[0].appProtocol", "tcp"),
            ("serverfirst.dev/declared-tcp-ports", "587")
        ]
    );
    assert!(
        rows[0].warnings[0]
            .starts_with("port 143 (imap): Istio does not know appProtocol \"smtp\""),
        "{:?}",
        rows[0].warnings
    );

    let (rendered, _) = render_text("svc.yaml", service, &config);
    let expected = service
        .replace(
            "  namespace: mail\n",
            "  namespace: mail\n  annotations:\n    serverfirst.dev/declared-tcp-ports: \"587\"\n",
        )
        .replace(
            "      targetPort: submission\n",
            "      targetPort: submission\n      appProtocol: tcp\n",
        );
    assert_eq!(rendered, expected);
    let rows = check_text("svc.yaml", &rendered, &config);
    assert_eq!(
        summary(&rows),
        [row("Service", "mox", Status::Protected, &[143, 587])]
    );
    assert_eq!(render_text("svc.yaml", &rendered, &config).0, rendered);
}
