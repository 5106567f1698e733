//! End to end for real, as root: the mesh failure reproduced with the kernel and the real Envoy,
//! configured the way Istio configures a sidecar, and fixed by serverfirst's patch.
//!
//! Every case makes its own pair of network namespaces, `client` and `pod`, joined by a veth pair
//! on a /30 that exists only inside them. In `pod`: the nat rules istio-iptables would write for
//! the pod, derived by the independent Istio model from the pod's annotations or its `istio-init`
//! arguments; Envoy 1.40 as uid/gid 1337 with the `virtualInbound` listener on 15006 that the
//! Istio sidecar model builds from the pod's Service ports, its PeerAuthentication and the mesh's
//! `protocolDetectionTimeout`; the server under test (serverfirst's reference SMTP server on 25
//! and 587, pyftpdlib on 21, a POP3 greeter on 110). From `client`: `serverfirst probe`, swaks,
//! Python's smtplib, lettre and curl (FTP).
//!
//! The cases: the pod as created stalls; the pod serverfirst patched greets at once; Istio 1.7's
//! 100 ms detection timeout delays the banner; passive FTP needs its data ports excluded; a POP3
//! greeting; PeerAuthentication DISABLE leaves a TCP Service port unsniffed (the model's inspector
//! rules seen in the real Envoy); and a control without any proxy.
//!
//! Needs root, `ip`, `iptables-restore`, `ss`, `setpriv`, `curl`, `swaks`, `python3` and Envoy and
//! pyftpdlib from `.ci/install-envoy`: without them the tests skip loudly, or fail when `CI=true`
//! or `SERVERFIRST_REQUIRE_E2E=1`.

mod common;
mod webhook_support;

#[path = "support/e2e_ftp.rs"]
mod e2e_ftp;
#[path = "support/e2e_mail.rs"]
mod e2e_mail;
#[path = "support/e2e_pods.rs"]
mod e2e_pods;
#[path = "support/envoy.rs"]
mod envoy;
#[path = "support/istio_model.rs"]
mod istio_model;
#[path = "support/istio_sidecar.rs"]
mod istio_sidecar;
#[path = "support/netns.rs"]
mod netns;

use std::collections::BTreeMap;
use std::os::fd::AsFd as _;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use e2e_ftp::{
    CURL_TIMED_OUT, FTP_FILE, FTP_FILE_TEXT, ftp_prerequisites, ftp_python, ftp_root, ftp_server,
};
use e2e_mail::{AT_ONCE_MS, BIN, STALL_WAIT_SECS, elapsed_ms, ms, prerequisites};
use e2e_pods::{
    FTP_CONTROL_PORT, FTP_PASSIVE_PORTS, POP3_PORT, SMTP_PORTS, admitted, admitted_shapes,
    container_ports, created_pod, ftp_pod, pop3_pod,
};
use envoy::Envoy;
use istio_model::{IptablesArgs, pod_capture};
use istio_sidecar::{
    INBOUND_PASSTHROUGH_BIND, InboundSidecar, PeerAuthentication, ServicePort, VIRTUAL_INBOUND_PORT,
};
use netns::{CLIENT_ADDR, Daemon, POD_ADDR, Sandbox, run_bounded, say, text};
use serde_json::Value;

const SMTPLIB_SEND: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/e2e/smtplib_send.py"
);
const POP3_BANNER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/e2e/pop3_banner.py"
);

/// The stats of `virtualInbound` (Envoy names listener stats by address).
const VI_CX_TOTAL: &str = "listener.0.0.0.0_15006.downstream_cx_total";
const VI_REMOTE_CLOSE: &str = "listener.0.0.0.0_15006.downstream_listener_filter_remote_close";
const VI_FILTER_TIMEOUT: &str = "listener.0.0.0.0_15006.downstream_pre_cx_timeout";

fn cluster_cx(port: u16) -> String {
    format!("cluster.inbound|{port}||.upstream_cx_total")
}

/// One test bed: the namespaces, Envoy as the pod's sidecar (unless the case has no proxy) and
/// the servers under test.
struct Mesh {
    // Dropped in this order: the processes first, then the namespaces they run in.
    smtp: Option<Daemon>,
    apps: Vec<Daemon>,
    envoy: Option<Envoy>,
    sandbox: Sandbox,
    dir: tempfile::TempDir,
}

impl Mesh {
    fn new(tag: &str) -> Mesh {
        Mesh {
            smtp: None,
            apps: Vec::new(),
            envoy: None,
            sandbox: Sandbox::create(tag),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A test bed with Envoy configured as `sidecar`.
    fn with_sidecar(tag: &str, sidecar: &InboundSidecar) -> Mesh {
        let mut mesh = Mesh::new(tag);
        let bootstrap = istio_sidecar::bootstrap(
            &format!("sidecar~{POD_ADDR}~app.e2e~e2e.svc.cluster.local"),
            vec![sidecar.listener()],
            sidecar.clusters(),
        );
        mesh.envoy = Some(Envoy::start(&mesh.sandbox, &bootstrap));
        mesh.wait_listening(&[VIRTUAL_INBOUND_PORT]);
        mesh
    }

    fn envoy(&self) -> &Envoy {
        self.envoy.as_ref().expect("this test bed runs Envoy")
    }

    fn stats(&self) -> BTreeMap<String, u64> {
        self.envoy().stats()
    }

    /// Waits up to 2 s for the sum of Envoy's counters `names` to reach `at_least`; the last
    /// sum and snapshot.
    fn stats_reaching(&self, names: &[&str], at_least: u64) -> (u64, BTreeMap<String, u64>) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let stats = self.stats();
            let sum = names
                .iter()
                .map(|n| stats.get(*n).copied().unwrap_or(0))
                .sum();
            if sum >= at_least || Instant::now() > deadline {
                return (sum, stats);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Connections `virtualInbound` accepted and is done with: passed its listener filters
    /// (`downstream_cx_total`), closed by the client while held there, or released by the
    /// filters' timeout (which then also passes them on).
    fn accepted_reaching(&self, at_least: u64) -> (u64, BTreeMap<String, u64>) {
        self.stats_reaching(&[VI_CX_TOTAL, VI_REMOTE_CLOSE], at_least)
    }

    /// The reference SMTP server on the SMTP ports, with a Maildir.
    fn start_smtp(&mut self) {
        let smtp = e2e_mail::smtp_server(self.sandbox.in_pod(BIN), &self.maildir());
        self.smtp = Some(Daemon::start("smtp", smtp, self.dir.path()));
        self.wait_listening(&SMTP_PORTS);
    }

    fn start_app(&mut self, name: &'static str, command: Command, ports: &[u16]) {
        self.apps
            .push(Daemon::start(name, command, self.dir.path()));
        self.wait_listening(ports);
    }

    fn wait_listening(&mut self, ports: &[u16]) {
        let (smtp, apps) = (&mut self.smtp, &mut self.apps);
        self.sandbox.wait_listening(ports, || {
            for daemon in smtp.iter_mut().chain(apps.iter_mut()) {
                daemon.assert_running();
            }
        });
    }

    fn maildir(&self) -> PathBuf {
        self.dir.path().join("Maildir")
    }

    fn smtp_daemon(&self) -> &Daemon {
        self.smtp.as_ref().expect("the SMTP server runs")
    }

    /// Loads the nat rules the model derives for `capture` and checks the kernel took every one.
    fn capture(&self, capture: &IptablesArgs) {
        let input = capture.restore_input().expect("REDIRECT rules");
        self.sandbox.load_nat(&input);
        let loaded = self.sandbox.nat_counters();
        let count = |text: &str| text.lines().filter(|l| l.contains("-A ")).count();
        assert_eq!(count(&loaded), count(&input), "{loaded}");
    }

    /// Packets (= new connections: nat sees only the first packet of each) that hit the rules of
    /// the pod's nat table that `matches` selects.
    fn packets(&self, matches: impl Fn(&str) -> bool) -> u64 {
        netns::nat_packets(&self.sandbox.nat_counters(), matches)
    }

    /// Inbound connections sent to the proxy, by any rule.
    fn redirected(&self) -> u64 {
        self.packets(|rule| {
            rule.starts_with("-A ISTIO_INBOUND") && rule.ends_with("-j ISTIO_IN_REDIRECT")
        })
    }

    fn returned(&self, port: u16) -> u64 {
        let dport = format!("--dport {port} ");
        self.packets(|rule| {
            rule.starts_with("-A ISTIO_INBOUND")
                && rule.contains(&dport)
                && rule.ends_with("RETURN")
        })
    }

    /// The peers the SMTP server accepted connections from, from its debug log.
    fn smtp_peers(&self) -> Vec<String> {
        self.smtp_daemon()
            .stderr()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|entry| entry["message"] == "connection accepted")
            .filter_map(|entry| entry["peer"].as_str().map(str::to_string))
            .collect()
    }

    /// The delivery records on the SMTP server's stdout, once `expected` are there.
    fn deliveries(&self, expected: usize) -> Vec<Value> {
        e2e_mail::deliveries(|| self.smtp_daemon().stdout(), expected)
    }

    fn maildir_new(&self) -> Vec<String> {
        e2e_mail::maildir_new(&self.maildir())
    }

    /// `serverfirst probe POD_ADDR:port` from the client namespace: exit code and JSON report.
    fn probe(&self, port: u16) -> (i32, Value) {
        self.probe_with(port, &format!("{STALL_WAIT_SECS}s"))
    }

    fn probe_with(&self, port: u16, send_after: &str) -> (i32, Value) {
        let output = self.probe_output(port, send_after, "json");
        let report = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("probe JSON ({e}): {}", text(&output)));
        (output.status.code().unwrap_or(-1), report)
    }

    fn probe_output(&self, port: u16, send_after: &str, format: &str) -> Output {
        let mut command = self.sandbox.in_client(BIN);
        command.args(["probe", &format!("{POD_ADDR}:{port}"), "-o", format]);
        command.args(["--send-after", send_after, "--timeout", "3s"]);
        run_bounded(command)
    }

    fn swaks(&self, port: u16, subject: &str) -> Output {
        e2e_mail::swaks(self.sandbox.in_client("swaks"), POD_ADDR, port, subject)
    }

    fn smtplib(&self, port: u16, subject: &str) -> Output {
        let mut command = self.sandbox.in_client("python3");
        command.args([SMTPLIB_SEND, POD_ADDR, &port.to_string()]);
        command.args([&STALL_WAIT_SECS.to_string(), subject]);
        run_bounded(command)
    }

    /// One message with lettre, sent from a thread that has moved into the client namespace.
    fn lettre(&self, port: u16, subject: &str) -> Result<String, String> {
        use lettre::transport::smtp::extension::ClientId;
        use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

        let namespace = format!("/run/netns/{}", self.sandbox.client);
        let email = Message::builder()
            .from("Frank <frank@example.test>".parse().expect("from"))
            .to("erin@example.test".parse().expect("to"))
            .subject(subject)
            .body("Sent with lettre.".to_string())
            .expect("message");
        let send = move || -> Result<String, String> {
            let file = std::fs::File::open(&namespace).map_err(|e| format!("{namespace}: {e}"))?;
            rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(|e| format!("setns {namespace}: {e}"))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(POD_ADDR)
                    .port(port)
                    .hello_name(ClientId::Domain("client.test".into()))
                    .timeout(Some(Duration::from_secs(STALL_WAIT_SECS)))
                    .build();
                let response = mailer.send(email).await.map_err(|e| e.to_string())?;
                Ok(response.message().collect::<Vec<_>>().join(" "))
            })
        };
        // The thread, and only it, changes namespace; it ends with the send.
        std::thread::spawn(send).join().expect("lettre thread")
    }

    /// `curl` from the client namespace fetching `path` over passive-mode FTP.
    fn ftp_get(&self, path: &str) -> Output {
        e2e_ftp::ftp_get(self.sandbox.in_client("curl"), POD_ADDR, path)
    }

    /// The kernel agrees with the model on every other port of the pod, where nothing listens:
    /// a captured port is answered by Envoy, which connects on only after the client spoke and
    /// then finds nothing (probe exit 1); an excluded one is refused (exit 2).
    fn assert_capture_matches(
        &self,
        name: &str,
        capture: &IptablesArgs,
        pod: &Value,
        serving: &[u16],
    ) {
        for port in container_ports(pod) {
            if serving.contains(&port) {
                continue;
            }
            let (code, report) = self.probe_with(port, "100ms");
            let expected = if capture.captured(port) { 1 } else { 2 };
            assert_eq!(code, expected, "{name}: port {port}: {report}");
        }
    }

    /// What Envoy and the servers logged, for a failure message.
    fn logs(&self) -> String {
        let mut logs = String::new();
        if let Some(envoy) = &self.envoy {
            logs.push_str(&format!("envoy:\n{}\n", envoy.logs()));
        }
        for daemon in self.smtp.iter().chain(self.apps.iter()) {
            logs.push_str(&format!("app:\n{}{}\n", daemon.stdout(), daemon.stderr()));
        }
        logs
    }
}

/// The sidecar istiod gives the pod with Istio's defaults (PERMISSIVE, no detection timeout)
/// when a Service exposes each of its container ports under the port's own name.
fn default_sidecar(pod: &Value) -> InboundSidecar {
    InboundSidecar::new().service_ports(ServicePort::for_container_ports(pod))
}

fn capture_of(pod: &Value) -> IptablesArgs {
    pod_capture(pod)
        .expect("Istio accepts the pod")
        .expect("the pod is captured in REDIRECT mode")
}

fn admit(pod: &Value) -> Value {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(admitted(pod))
}

/// Some connections were accepted, every one of them from `source` (an address).
fn assert_all_from(peers: &[String], source: &str) {
    assert!(!peers.is_empty(), "no connection accepted");
    let prefix = format!("{source}:");
    assert!(peers.iter().all(|p| p.starts_with(&prefix)), "{peers:?}");
}

#[test]
fn control_without_a_proxy_greets_at_once() {
    let test = "control_without_a_proxy_greets_at_once";
    if !prerequisites(test, "o") {
        return;
    }
    let mut mesh = Mesh::new("o");
    mesh.start_smtp();
    for port in SMTP_PORTS {
        let (code, report) = mesh.probe(port);
        assert_eq!(code, 0, "{report}\n{}", mesh.logs());
        let first_byte = ms(&report, "first_byte_ms");
        assert!(first_byte < AT_ONCE_MS, "{report}");
        say(&format!(
            "control (no proxy, no nat rules), port {port}: banner {first_byte:.3} ms after connecting"
        ));
    }
    let started = Instant::now();
    let swaks = mesh.swaks(25, "swaks without a mesh");
    assert_eq!(swaks.status.code(), Some(0), "swaks: {}", text(&swaks));
    say(&format!(
        "control: swaks on 25 delivered in {:.0} ms (process start included)",
        elapsed_ms(started)
    ));
    assert_eq!(mesh.deliveries(1).len(), 1);
    assert_all_from(&mesh.smtp_peers(), CLIENT_ADDR);
}

#[test]
fn pod_as_created_stalls_behind_envoy() {
    let test = "pod_as_created_stalls_behind_envoy";
    if !prerequisites(test, "a") {
        return;
    }
    let pod = created_pod();
    let capture = capture_of(&pod);
    for port in SMTP_PORTS {
        assert!(capture.captured(port), "port {port}");
    }
    let mut mesh = Mesh::with_sidecar("a", &default_sidecar(&pod));
    mesh.start_smtp();
    mesh.capture(&capture);

    // The clients at once: each waits STALL_WAIT_SECS for the greeting.
    let ((code, report), probe_text, swaks, smtplib) = std::thread::scope(|scope| {
        let probe = scope.spawn(|| mesh.probe(25));
        let probe_text =
            scope.spawn(|| mesh.probe_output(587, &format!("{STALL_WAIT_SECS}s"), "text"));
        let swaks = scope.spawn(|| mesh.swaks(25, "swaks through the created pod"));
        let smtplib = scope.spawn(|| mesh.smtplib(587, "smtplib through the created pod"));
        (
            probe.join().expect("probe"),
            probe_text.join().expect("probe"),
            swaks.join().expect("swaks"),
            smtplib.join().expect("smtplib"),
        )
    });
    let logs = mesh.logs();
    assert_eq!(code, 1, "probe exit code: {report}\n{logs}");
    assert_eq!(report["outcome"], "stall", "{report}\n{logs}");
    let sent = ms(&report, "sent_ms");
    let after = ms(&report, "first_byte_after_send_ms");
    assert!(sent >= (STALL_WAIT_SECS * 1000) as f64, "{report}");
    assert!(after < 1000.0, "{report}");
    assert_eq!(report["banner"], "220 mx.test ESMTP serverfirst");
    say(&format!(
        "case 1, pod as created, port 25 (captured, Service port TCP): no banner in {sent:.0} ms; \
         the 220 came {after:.1} ms after the probe spoke"
    ));
    let probe_text_out = String::from_utf8_lossy(&probe_text.stdout).into_owned();
    assert_eq!(probe_text.status.code(), Some(1), "{}", text(&probe_text));
    assert!(
        probe_text_out.contains("server-first stall"),
        "{probe_text_out}"
    );
    say(&format!(
        "case 6, serverfirst probe {POD_ADDR}:587 on the created pod: exit 1, {}",
        probe_text_out
            .lines()
            .find(|l| l.contains("server-first stall"))
            .unwrap_or_default()
            .trim()
    ));

    // swaks: 21 is "error reading the initial banner" (here: timed out waiting for it).
    assert_eq!(swaks.status.code(), Some(21), "swaks: {}", text(&swaks));
    assert_eq!(
        smtplib.status.code(),
        Some(3),
        "smtplib: {}",
        text(&smtplib)
    );
    say(&format!(
        "case 1: swaks exit 21 and smtplib timed out after {STALL_WAIT_SECS} s waiting for the greeting"
    ));

    // Envoy held every connection in its listener filters. A client that gave up without a
    // byte shows only as a remote close there (Envoy counts a connection in downstream_cx_total
    // once its listener filters are done); the probes reached the app after speaking.
    let (accepted, stats) = mesh.accepted_reaching(4);
    assert_eq!(accepted, 4, "{}", envoy::summary(&stats));
    assert!(stats[VI_REMOTE_CLOSE] >= 1, "{}", envoy::summary(&stats));
    assert!(stats[&cluster_cx(25)] >= 1, "{}", envoy::summary(&stats));
    assert!(stats[&cluster_cx(587)] >= 1, "{}", envoy::summary(&stats));
    say(&format!(
        "case 1, Envoy: {}",
        envoy::counters(
            &stats,
            &[
                VI_CX_TOTAL,
                VI_REMOTE_CLOSE,
                VI_FILTER_TIMEOUT,
                &cluster_cx(25),
                &cluster_cx(587)
            ]
        )
    ));

    mesh.assert_capture_matches("pod as created", &capture, &pod, &SMTP_PORTS);
    assert!(mesh.deliveries(0).is_empty(), "no mail can have arrived");
    assert!(mesh.maildir_new().is_empty());
    // Every connection went through the proxy; the application only ever saw the proxy.
    assert!(mesh.redirected() >= 4, "{}", mesh.sandbox.nat_counters());
    assert_all_from(&mesh.smtp_peers(), INBOUND_PASSTHROUGH_BIND);
}

#[test]
fn pod_patched_by_serverfirst_greets_at_once() {
    let test = "pod_patched_by_serverfirst_greets_at_once";
    if !prerequisites(test, "b") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let shapes = runtime.block_on(admitted_shapes());
    drop(runtime);
    let mut mesh = Mesh::with_sidecar("b", &default_sidecar(&created_pod()));
    mesh.start_smtp();

    for (shape, pod) in &shapes {
        let name = shape.name;
        let capture = capture_of(pod);
        for port in SMTP_PORTS {
            assert!(
                !capture.captured(port),
                "{name}: port {port} still captured"
            );
        }
        // The rules come from the patched pod; the model finds them where Istio would.
        mesh.capture(&capture);
        let before = mesh.stats();
        for port in SMTP_PORTS {
            let (code, report) = mesh.probe(port);
            assert_eq!(code, 0, "{name} {port}: {report}\n{}", mesh.logs());
            assert_eq!(report["outcome"], "banner", "{report}");
            let first_byte = ms(&report, "first_byte_ms");
            assert!(first_byte < AT_ONCE_MS, "{name} {port}: {report}");
            say(&format!(
                "case 2 and 6, patched pod ({name}), port {port} (excluded): probe exit 0, banner \
                 {first_byte:.3} ms after connecting"
            ));
            if capture.include_inbound_ports == "*" {
                // Under the wildcard, the exclusion is a RETURN rule of its own, and it was hit.
                assert_eq!(mesh.returned(port), 1, "{}", mesh.sandbox.nat_counters());
            }
        }
        assert_eq!(mesh.redirected(), 0, "{}", mesh.sandbox.nat_counters());
        assert_eq!(
            mesh.stats()[VI_CX_TOTAL],
            before[VI_CX_TOTAL],
            "Envoy saw a connection"
        );
        mesh.assert_capture_matches(name, &capture, pod, &SMTP_PORTS);
    }

    // The pod as serverfirst patches it at creation: a full transaction with each client.
    let (shape, pod) = &shapes[0];
    assert_eq!(shape.name, "annotations");
    mesh.capture(&capture_of(pod));
    let before = mesh.stats();
    let started = Instant::now();
    let swaks = mesh.swaks(25, "swaks through the patched pod");
    let swaks_took = elapsed_ms(started);
    assert_eq!(swaks.status.code(), Some(0), "swaks: {}", text(&swaks));
    let started = Instant::now();
    let smtplib = mesh.smtplib(587, "smtplib through the patched pod");
    let smtplib_took = elapsed_ms(started);
    assert_eq!(
        smtplib.status.code(),
        Some(0),
        "smtplib: {}",
        text(&smtplib)
    );
    let started = Instant::now();
    let lettre = mesh.lettre(25, "lettre through the patched pod");
    let lettre_took = elapsed_ms(started);
    let lettre = lettre.unwrap_or_else(|e| panic!("lettre: {e}\n{}", mesh.logs()));
    say(&format!(
        "case 2: swaks on 25 took {swaks_took:.0} ms, smtplib on 587 {smtplib_took:.0} ms \
         (process start included), lettre on 25 {lettre_took:.0} ms ({lettre})"
    ));

    let records = mesh.deliveries(3);
    assert_eq!(records.len(), 3, "{records:?}\n{}", mesh.logs());
    let delivered: Vec<(String, Value)> = records
        .iter()
        .map(|r| {
            (
                r["listener"].as_str().unwrap_or_default().to_string(),
                r["rcpts"].clone(),
            )
        })
        .collect();
    assert_eq!(
        delivered,
        [
            (
                "0.0.0.0:25".to_string(),
                serde_json::json!(["bob@example.test"])
            ),
            (
                "0.0.0.0:587".to_string(),
                serde_json::json!(["dave@example.test"])
            ),
            (
                "0.0.0.0:25".to_string(),
                serde_json::json!(["erin@example.test"])
            ),
        ]
    );
    let messages = mesh.maildir_new();
    assert_eq!(messages.len(), 3);
    for subject in [
        "Subject: swaks through the patched pod",
        "Subject: smtplib through the patched pod",
        "Subject: lettre through the patched pod",
    ] {
        assert!(
            messages.iter().any(|m| m.contains(subject)),
            "{subject}: {messages:?}"
        );
    }
    assert_eq!(mesh.redirected(), 0, "{}", mesh.sandbox.nat_counters());
    let stats = mesh.stats();
    assert_eq!(
        stats[VI_CX_TOTAL], before[VI_CX_TOTAL],
        "Envoy saw a connection"
    );
    assert_eq!(stats[&cluster_cx(25)], 0, "{}", envoy::summary(&stats));
    assert_eq!(stats[&cluster_cx(587)], 0, "{}", envoy::summary(&stats));
    let names = [
        VI_CX_TOTAL,
        VI_REMOTE_CLOSE,
        &cluster_cx(25),
        &cluster_cx(587),
    ];
    say(&format!(
        "case 2, Envoy before the three deliveries: {}; after: {} (the earlier connections are the \
         probes of the pod's other, still captured ports)",
        envoy::counters(&before, &names),
        envoy::counters(&stats, &names)
    ));
    // Straight from the client: the server saw the client's own address, never the proxy's.
    let peers = mesh.smtp_peers();
    assert!(!peers.is_empty());
    assert!(
        peers
            .iter()
            .all(|p| p.starts_with(&format!("{CLIENT_ADDR}:"))),
        "{peers:?}"
    );
}

#[test]
fn protocol_detection_timeout_of_istio_1_7_delays_the_banner() {
    let test = "protocol_detection_timeout_of_istio_1_7_delays_the_banner";
    if !prerequisites(test, "c") {
        return;
    }
    let pod = created_pod();
    let timeout = Duration::from_millis(100);
    let sidecar = default_sidecar(&pod).protocol_detection_timeout(timeout);
    let mut mesh = Mesh::with_sidecar("c", &sidecar);
    mesh.start_smtp();
    mesh.capture(&capture_of(&pod));

    let (code, report) = mesh.probe(25);
    assert_eq!(code, 0, "{report}\n{}", mesh.logs());
    let first_byte = ms(&report, "first_byte_ms");
    // Envoy's timer starts at accept, after the probe's connect; a loaded machine only adds.
    assert!(first_byte >= 90.0, "{report}");
    assert!(first_byte < 1500.0, "{report}");
    let swaks = mesh.swaks(25, "swaks behind a 100ms detection timeout");
    assert_eq!(swaks.status.code(), Some(0), "swaks: {}", text(&swaks));
    let (timeouts, stats) = mesh.stats_reaching(&[VI_FILTER_TIMEOUT], 2);
    assert!(timeouts >= 2, "{}", envoy::summary(&stats));
    assert!(stats[&cluster_cx(25)] >= 2, "{}", envoy::summary(&stats));
    say(&format!(
        "case 3, protocolDetectionTimeout 100ms, port 25 captured: banner {first_byte:.1} ms after \
         connecting, swaks exit 0; Envoy: {}",
        envoy::counters(&stats, &[VI_CX_TOTAL, VI_FILTER_TIMEOUT, &cluster_cx(25)])
    ));
    assert_all_from(&mesh.smtp_peers(), INBOUND_PASSTHROUGH_BIND);
}

#[test]
fn ftp_passive_download_needs_the_passive_ports_excluded() {
    let test = "ftp_passive_download_needs_the_passive_ports_excluded";
    if !prerequisites(test, "d") || !ftp_prerequisites(test) {
        return;
    }
    let created = ftp_pod();
    let patched = admit(&created);
    let capture = capture_of(&patched);
    assert!(!capture.captured(FTP_CONTROL_PORT), "{capture:?}");
    for port in FTP_PASSIVE_PORTS {
        assert!(!capture.captured(port), "passive port {port}: {capture:?}");
    }
    // The same answer without the passive ports: only the control port is excluded.
    let passive: Vec<String> = FTP_PASSIVE_PORTS.iter().map(u16::to_string).collect();
    let mut control_only = capture.clone();
    control_only.exclude_inbound_ports = capture
        .exclude_inbound_ports
        .split(',')
        .filter(|port| !passive.iter().any(|p| p == port))
        .collect::<Vec<_>>()
        .join(",");
    assert!(!control_only.captured(FTP_CONTROL_PORT));
    assert!(FTP_PASSIVE_PORTS.iter().all(|&p| control_only.captured(p)));

    let mut mesh = Mesh::with_sidecar("d", &default_sidecar(&created));
    let root = ftp_root(mesh.dir.path());
    let python = mesh.sandbox.in_pod(&ftp_python().to_string_lossy());
    let ftpd = ftp_server(python, &root, &FTP_PASSIVE_PORTS);
    mesh.start_app("ftpd", ftpd, &[FTP_CONTROL_PORT]);

    mesh.capture(&capture);
    let (code, report) = mesh.probe(FTP_CONTROL_PORT);
    assert_eq!(code, 0, "{report}\n{}", mesh.logs());
    let banner_ms = ms(&report, "first_byte_ms");
    assert!(banner_ms < AT_ONCE_MS, "{report}");
    let started = Instant::now();
    let list = mesh.ftp_get("");
    let list_took = elapsed_ms(started);
    assert_eq!(
        list.status.code(),
        Some(0),
        "LIST: {}\n{}",
        text(&list),
        mesh.logs()
    );
    assert!(
        String::from_utf8_lossy(&list.stdout).contains(FTP_FILE),
        "{}",
        text(&list)
    );
    let started = Instant::now();
    let retr = mesh.ftp_get(FTP_FILE);
    let retr_took = elapsed_ms(started);
    assert_eq!(
        retr.status.code(),
        Some(0),
        "RETR: {}\n{}",
        text(&retr),
        mesh.logs()
    );
    assert_eq!(String::from_utf8_lossy(&retr.stdout), FTP_FILE_TEXT);
    let stats = mesh.stats();
    assert_eq!(stats[VI_CX_TOTAL], 0, "{}", envoy::summary(&stats));
    say(&format!(
        "case 4, FTP pod patched (exclusions from the webhook: {}): banner {banner_ms:.3} ms, \
         login + PASV + LIST {list_took:.0} ms, RETR {retr_took:.0} ms (curl start included); \
         Envoy: {}",
        capture.exclude_inbound_ports,
        envoy::counters(&stats, &[VI_CX_TOTAL])
    ));

    mesh.capture(&control_only);
    let started = Instant::now();
    let stalled = mesh.ftp_get(FTP_FILE);
    let stalled_took = elapsed_ms(started);
    let log = text(&stalled);
    // curl's "operation timed out", after a login that worked on the excluded port 21.
    assert_eq!(stalled.status.code(), Some(CURL_TIMED_OUT), "{log}");
    assert!(log.contains("< 230"), "no login: {log}");
    assert!(log.contains("< 227"), "no PASV answer: {log}");
    let (accepted, stats) = mesh.accepted_reaching(1);
    assert_eq!(accepted, 1, "{}", envoy::summary(&stats));
    assert_eq!(stats[VI_REMOTE_CLOSE], 1, "{}", envoy::summary(&stats));
    let data_cx: u64 = FTP_PASSIVE_PORTS
        .iter()
        .map(|&p| stats[&cluster_cx(p)])
        .sum();
    assert_eq!(data_cx, 0, "Envoy connected to a passive port: {stats:?}");
    say(&format!(
        "case 4, only 21 excluded ({}): login 230 and PASV 227 on 21, then the download stalled \
         (curl exit 28 after {stalled_took:.0} ms); Envoy: {}",
        control_only.exclude_inbound_ports,
        envoy::counters(
            &stats,
            &[
                VI_CX_TOTAL,
                VI_REMOTE_CLOSE,
                &cluster_cx(FTP_PASSIVE_PORTS[0]),
                &cluster_cx(FTP_PASSIVE_PORTS[1])
            ]
        )
    ));
}

#[test]
fn pop3_banner_on_the_patched_pod() {
    let test = "pop3_banner_on_the_patched_pod";
    if !prerequisites(test, "e") {
        return;
    }
    let created = pop3_pod();
    let patched = admit(&created);
    let mut mesh = Mesh::with_sidecar("e", &default_sidecar(&created));
    let mut greeter = mesh.sandbox.in_pod("python3");
    greeter.args([POP3_BANNER, &POP3_PORT.to_string()]);
    mesh.start_app("pop3", greeter, &[POP3_PORT]);

    mesh.capture(&capture_of(&created));
    let (code, report) = mesh.probe(POP3_PORT);
    assert_eq!(code, 1, "{report}\n{}", mesh.logs());
    assert_eq!(report["banner"], "+OK POP3 ready", "{report}");
    let sent = ms(&report, "sent_ms");
    say(&format!(
        "case 5, POP3 pod as created, port 110 captured: no banner in {sent:.0} ms, then {}",
        report["banner"]
    ));

    let capture = capture_of(&patched);
    assert!(!capture.captured(POP3_PORT), "{capture:?}");
    mesh.capture(&capture);
    let before = mesh.stats();
    let (code, report) = mesh.probe(POP3_PORT);
    assert_eq!(code, 0, "{report}\n{}", mesh.logs());
    assert_eq!(report["banner"], "+OK POP3 ready", "{report}");
    let first_byte = ms(&report, "first_byte_ms");
    assert!(first_byte < AT_ONCE_MS, "{report}");
    let stats = mesh.stats();
    assert_eq!(
        stats[VI_CX_TOTAL],
        before[VI_CX_TOTAL],
        "{}",
        envoy::summary(&stats)
    );
    say(&format!(
        "case 5, POP3 pod patched, port 110 excluded: banner {first_byte:.3} ms after connecting; \
         Envoy: {} (the one connection is the created pod's)",
        envoy::counters(&stats, &[VI_CX_TOTAL, &cluster_cx(POP3_PORT)])
    ));
    let peers: Vec<String> = mesh.apps[0].stdout().lines().map(str::to_string).collect();
    assert_eq!(peers.len(), 2, "{peers:?}");
    assert_all_from(&peers[..1], INBOUND_PASSTHROUGH_BIND);
    assert_all_from(&peers[1..], CLIENT_ADDR);
}

#[test]
fn without_mtls_a_tcp_service_port_is_not_sniffed() {
    let test = "without_mtls_a_tcp_service_port_is_not_sniffed";
    if !prerequisites(test, "f") {
        return;
    }
    // PeerAuthentication DISABLE: no `tls` chain on any port, so no TLS inspector; the HTTP
    // inspector runs only where a chain matches an HTTP ALPN: on 587 (protocol sniffed, the name
    // `submission` says nothing), not on 25 (TCP, a well-known port).
    let pod = created_pod();
    let sidecar = default_sidecar(&pod).peer_authentication(PeerAuthentication::Disable);
    let mut mesh = Mesh::with_sidecar("f", &sidecar);
    mesh.start_smtp();
    let capture = capture_of(&pod);
    mesh.capture(&capture);
    let ((code_25, report_25), (code_587, report_587)) = std::thread::scope(|scope| {
        let smtp = scope.spawn(|| mesh.probe(25));
        let submission = scope.spawn(|| mesh.probe(587));
        (
            smtp.join().expect("probe"),
            submission.join().expect("probe"),
        )
    });
    assert_eq!(code_25, 0, "{report_25}\n{}", mesh.logs());
    let first_byte = ms(&report_25, "first_byte_ms");
    assert!(first_byte < AT_ONCE_MS, "{report_25}");
    assert_eq!(code_587, 1, "{report_587}");
    let stats = mesh.stats();
    assert_eq!(stats[&cluster_cx(25)], 1, "{}", envoy::summary(&stats));
    assert_all_from(&mesh.smtp_peers(), INBOUND_PASSTHROUGH_BIND);
    say(&format!(
        "PeerAuthentication DISABLE, both ports captured: 25 (TCP) banner {first_byte:.3} ms through \
         Envoy, 587 (sniffed) no banner in {:.0} ms; Envoy: {}",
        ms(&report_587, "sent_ms"),
        envoy::counters(&stats, &[VI_CX_TOTAL, &cluster_cx(25), &cluster_cx(587)])
    ));
}
