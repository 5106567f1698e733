//! End to end for real, as root: the mesh failure reproduced with the kernel and a real sniffing
//! proxy, and fixed by serverfirst's patch.
//!
//! Two network namespaces made per run, `client` and `pod`, joined by a veth pair on a /30 that
//! exists only inside them. In `pod`: the nat rules istio-iptables would write for the pod,
//! derived by the independent Istio model from the pod's annotations or its `istio-init`
//! arguments; HAProxy on 15006 as uid/gid 1337 standing in for Envoy's inbound listener (it waits
//! for the client's first bytes, as Istio >= 1.8 does); serverfirst's reference SMTP server on 25
//! and 587. From `client`: `serverfirst probe`, swaks and Python's smtplib.
//!
//! Needs root, `ip`, `iptables-restore`, `haproxy`, `swaks` and `python3`: without them the tests
//! skip loudly, or fail when `CI=true` or `SERVERFIRST_REQUIRE_E2E=1`.

mod common;
mod webhook_support;

#[path = "support/e2e_pods.rs"]
mod e2e_pods;
#[path = "support/istio_model.rs"]
mod istio_model;

use std::fs::File;
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use e2e_pods::{SMTP_PORTS, admitted_shapes, container_ports, created_pod};
use istio_model::{IptablesArgs, pod_capture};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_serverfirst");
const HAPROXY_CFG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/e2e/haproxy.cfg"
);
const SMTPLIB_SEND: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/e2e/smtplib_send.py"
);

/// The /30 joining the namespaces; it exists only inside them.
const CLIENT_ADDR: &str = "10.201.0.1";
const POD_ADDR: &str = "10.201.0.2";
const PREFIX: u8 = 30;

/// How long a client waits silently for the banner (probe) or for any reply (swaks, smtplib).
const STALL_WAIT_SECS: u64 = 2;
/// The most a banner may take to count as "at once".
const AT_ONCE_MS: f64 = 100.0;
/// Upper bound on any one command, so that a hang fails the test instead of blocking it.
const COMMAND_LIMIT: Duration = Duration::from_secs(15);

const TOOLS: [&str; 7] = [
    "ip",
    "iptables-restore",
    "iptables-save",
    "ss",
    "haproxy",
    "swaks",
    "python3",
];

fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "e2e_netns: {line}");
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Root and every tool, else `tool_missing` (a failure under CI) and `false`.
fn prerequisites(test: &str, tag: &str) -> bool {
    if effective_uid() != Some(0) {
        common::tool_missing(test, "needs root for network namespaces and iptables");
        return false;
    }
    let missing: Vec<&str> = TOOLS.into_iter().filter(|t| !on_path(t)).collect();
    if !missing.is_empty() {
        let why = format!(
            "missing {} (Debian: apt-get install iproute2 iptables haproxy swaks python3)",
            missing.join(", ")
        );
        common::tool_missing(test, &why);
        return false;
    }
    // Root in a container may still lack the capabilities for namespaces.
    let probe = format!("sf-e2e-check-{}{tag}", std::process::id());
    let added = ip(&["netns", "add", &probe]).output();
    if !added.as_ref().is_ok_and(|o| o.status.success()) {
        let why = added.map_or_else(|e| e.to_string(), |o| text(&o));
        common::tool_missing(test, &format!("cannot create a network namespace: {why}"));
        return false;
    }
    let _ = ip(&["netns", "del", &probe]).output();
    static SWEEP: Once = Once::new();
    SWEEP.call_once(sweep_stale_namespaces);
    true
}

/// Deletes the namespaces (and with them their veth ends) of earlier runs whose process is gone:
/// a run killed with SIGKILL cannot clean up after itself.
fn sweep_stale_namespaces() {
    let Ok(listing) = ip(&["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&listing.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = ["sf-e2e-client-", "sf-e2e-pod-", "sf-e2e-check-"]
            .iter()
            .find_map(|prefix| name.strip_prefix(prefix))
        else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
            say(&format!(
                "deleting the namespace {name} of a run that is gone"
            ));
            let _ = ip(&["netns", "del", name]).output();
        }
    }
}

/// Runs `command` to completion within [`COMMAND_LIMIT`], killing it past that.
fn run_bounded(mut command: Command) -> Output {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {description}: {e}"));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + COMMAND_LIMIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{description} still running after {COMMAND_LIMIT:?}; killed");
            }
            Err(e) => panic!("wait for {description}: {e}"),
        }
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn checked(command: Command) -> Output {
    let description = format!("{command:?}");
    let output = run_bounded(command);
    assert!(
        output.status.success(),
        "{description} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The two namespaces and the veth pair, named after the test process and a tag. Dropping it
/// deletes the veth (namespace teardown is asynchronous; a left-over veth breaks the next run)
/// and both namespaces, also when the test fails.
struct Sandbox {
    client: String,
    pod: String,
    veth_client: String,
    veth_pod: String,
    created: Vec<String>,
}

impl Sandbox {
    fn create(tag: &str) -> Sandbox {
        let id = format!("{}{tag}", std::process::id());
        let mut sandbox = Sandbox {
            client: format!("sf-e2e-client-{id}"),
            pod: format!("sf-e2e-pod-{id}"),
            // Interface names have at most 15 bytes.
            veth_client: format!("sfc{id}"),
            veth_pod: format!("sfp{id}"),
            created: Vec::new(),
        };
        assert!(sandbox.veth_pod.len() <= 15, "{}", sandbox.veth_pod);
        for namespace in [sandbox.client.clone(), sandbox.pod.clone()] {
            checked(ip(&["netns", "add", &namespace]));
            sandbox.created.push(namespace);
        }
        let (client, pod) = (sandbox.client.clone(), sandbox.pod.clone());
        let (veth_client, veth_pod) = (sandbox.veth_client.clone(), sandbox.veth_pod.clone());
        // Both ends are created inside the namespaces: nothing appears in the host's.
        checked(ip(&[
            "link",
            "add",
            &veth_client,
            "netns",
            &client,
            "type",
            "veth",
            "peer",
            "name",
            &veth_pod,
            "netns",
            &pod,
        ]));
        for (namespace, veth, addr) in [
            (&client, &veth_client, CLIENT_ADDR),
            (&pod, &veth_pod, POD_ADDR),
        ] {
            checked(ip(&["-n", namespace, "link", "set", "lo", "up"]));
            let cidr = format!("{addr}/{PREFIX}");
            checked(ip(&["-n", namespace, "addr", "add", &cidr, "dev", veth]));
            checked(ip(&["-n", namespace, "link", "set", veth, "up"]));
        }
        sandbox
    }

    /// `command` run inside `namespace`; `ip netns exec` execs it, so its PID is the command's.
    fn exec(namespace: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", namespace, program]);
        command
    }

    fn in_pod(&self, program: &str) -> Command {
        Sandbox::exec(&self.pod, program)
    }

    fn in_client(&self, program: &str) -> Command {
        Sandbox::exec(&self.client, program)
    }

    /// Replaces the pod namespace's nat table (and its counters) with `restore_input`.
    fn load_nat(&self, restore_input: &str) {
        let mut command = self.in_pod("iptables-restore");
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("iptables-restore");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(restore_input.as_bytes())
            .expect("write the rules");
        let output = child.wait_with_output().expect("iptables-restore");
        assert!(
            output.status.success(),
            "iptables-restore rejected the model's rules: {}\n{restore_input}",
            text(&output)
        );
    }

    /// `iptables-save -c -t nat` of the pod namespace.
    fn nat_counters(&self) -> String {
        let mut command = self.in_pod("iptables-save");
        command.args(["-c", "-t", "nat"]);
        String::from_utf8(checked(command).stdout).expect("UTF-8")
    }

    fn listening(&self, ports: &[u16]) -> bool {
        let mut command = self.in_pod("ss");
        command.args(["-Hltn"]);
        let listing = String::from_utf8_lossy(&run_bounded(command).stdout).into_owned();
        ports
            .iter()
            .all(|port| listing.contains(&format!(":{port} ")))
    }
}

fn ip(args: &[&str]) -> Command {
    let mut command = Command::new("ip");
    command.args(args);
    command
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let mut commands = vec![ip(&["-n", &self.pod, "link", "del", &self.veth_pod])];
        for namespace in self.created.iter().rev() {
            commands.push(ip(&["netns", "del", namespace]));
        }
        for mut command in commands {
            match command.output() {
                Ok(output) if output.status.success() => {}
                Ok(output) => say(&format!("cleanup {command:?}: {}", text(&output))),
                Err(error) => say(&format!("cleanup {command:?}: {error}")),
            }
        }
    }
}

/// A background process in a namespace, with stdout and stderr in files. Dropping it stops it:
/// SIGTERM by its PID, SIGKILL if it is still there after two seconds.
struct Daemon {
    name: &'static str,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Daemon {
    fn start(name: &'static str, mut command: Command, dir: &Path) -> Daemon {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let child = command
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("stdout file"))
            .stderr(File::create(&stderr).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Daemon {
            name,
            child,
            stdout,
            stderr,
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}): {}{}",
                self.name,
                self.stdout(),
                self.stderr()
            );
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The whole test bed: namespaces, HAProxy and the SMTP server in `pod`.
struct Mesh {
    // Dropped in this order: the processes first, then the namespaces they run in.
    smtp: Daemon,
    haproxy: Daemon,
    sandbox: Sandbox,
    maildir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mesh {
    fn start(tag: &str) -> Mesh {
        let dir = tempfile::tempdir().expect("tempdir");
        let maildir = dir.path().join("Maildir");
        let sandbox = Sandbox::create(tag);

        let mut haproxy = sandbox.in_pod("haproxy");
        haproxy.args(["-db", "-f", HAPROXY_CFG]);
        let haproxy = Daemon::start("haproxy", haproxy, dir.path());

        let mut smtp = sandbox.in_pod(BIN);
        smtp.args(["--log-format", "json", "smtp", "--hostname", "mx.test"]);
        for port in SMTP_PORTS {
            smtp.args(["--listen", &format!("0.0.0.0:{port}")]);
        }
        smtp.arg("--maildir").arg(&maildir);
        smtp.env("RUST_LOG", "serverfirst=debug");
        let smtp = Daemon::start("smtp", smtp, dir.path());

        let mut mesh = Mesh {
            smtp,
            haproxy,
            sandbox,
            maildir,
            _dir: dir,
        };
        let mut ports = SMTP_PORTS.to_vec();
        ports.push(istio_model::INBOUND_CAPTURE_PORT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !mesh.sandbox.listening(&ports) {
            mesh.haproxy.assert_running();
            mesh.smtp.assert_running();
            assert!(Instant::now() < deadline, "listeners not up: {ports:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        mesh
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
        let counters = self.sandbox.nat_counters();
        counters
            .lines()
            .filter_map(|line| line.strip_prefix('['))
            .filter_map(|line| line.split_once("] "))
            .filter(|(_, rule)| matches(rule))
            .map(|(counts, _)| {
                let (packets, _) = counts.split_once(':').expect("[packets:bytes]");
                packets.parse::<u64>().expect("packets")
            })
            .sum()
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
        self.smtp
            .stderr()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|entry| entry["message"] == "connection accepted")
            .filter_map(|entry| entry["peer"].as_str().map(str::to_string))
            .collect()
    }

    /// The delivery records on the SMTP server's stdout, once `expected` are there.
    fn deliveries(&self, expected: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let records: Vec<Value> = self
                .smtp
                .stdout()
                .split_inclusive('\n')
                .filter(|line| line.ends_with('\n')) // a line still being written waits
                .map(|line| serde_json::from_str(line).expect("JSON delivery record"))
                .collect();
            if records.len() >= expected || Instant::now() > deadline {
                return records;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn maildir_new(&self) -> Vec<String> {
        match std::fs::read_dir(self.maildir.join("new")) {
            Ok(entries) => entries
                .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("message"))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// `serverfirst probe POD_ADDR:port` from the client namespace: exit code and JSON report.
    fn probe(&self, port: u16) -> (i32, Value) {
        self.probe_with(port, &format!("{STALL_WAIT_SECS}s"))
    }

    fn probe_with(&self, port: u16, send_after: &str) -> (i32, Value) {
        let mut command = self.sandbox.in_client(BIN);
        command.args(["probe", &format!("{POD_ADDR}:{port}"), "-o", "json"]);
        command.args(["--send-after", send_after, "--timeout", "3s"]);
        let output = run_bounded(command);
        let report = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("probe JSON ({e}): {}", text(&output)));
        (output.status.code().unwrap_or(-1), report)
    }

    fn swaks(&self, port: u16, subject: &str) -> Output {
        let mut command = self.sandbox.in_client("swaks");
        command.args(["--server", POD_ADDR, "--port", &port.to_string()]);
        command.args(["--from", "alice@example.test", "--to", "bob@example.test"]);
        command.args([
            "--helo",
            "client.test",
            "--timeout",
            &STALL_WAIT_SECS.to_string(),
        ]);
        command.args(["--header", &format!("Subject: {subject}")]);
        command.args(["--body", "Sent with swaks."]);
        run_bounded(command)
    }

    fn smtplib(&self, port: u16, subject: &str) -> Output {
        let mut command = self.sandbox.in_client("python3");
        command.args([SMTPLIB_SEND, POD_ADDR, &port.to_string()]);
        command.args([&STALL_WAIT_SECS.to_string(), subject]);
        run_bounded(command)
    }

    /// The kernel agrees with the model on every other port of the pod, where nothing listens:
    /// a captured port is answered by the proxy, which connects on only after the client spoke
    /// and then finds nothing (probe exit 1, closed); an excluded one is refused (exit 2).
    fn assert_capture_matches(&self, name: &str, capture: &IptablesArgs, pod: &Value) {
        for port in container_ports(pod) {
            if SMTP_PORTS.contains(&port) {
                continue;
            }
            let (code, report) = self.probe_with(port, "100ms");
            let expected = if capture.captured(port) { 1 } else { 2 };
            assert_eq!(code, expected, "{name}: port {port}: {report}");
        }
    }

    /// What HAProxy and the SMTP server logged, for a failure message.
    fn logs(&self) -> String {
        format!(
            "haproxy:\n{}{}\nsmtp:\n{}",
            self.haproxy.stdout(),
            self.haproxy.stderr(),
            self.smtp.stderr()
        )
    }
}

fn capture_of(pod: &Value) -> IptablesArgs {
    pod_capture(pod)
        .expect("Istio accepts the pod")
        .expect("the pod is captured in REDIRECT mode")
}

fn ms(report: &Value, field: &str) -> f64 {
    report[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} in {report}"))
}

#[test]
fn pod_as_created_stalls_behind_the_sidecar_capture() {
    let test = "pod_as_created_stalls_behind_the_sidecar_capture";
    if !prerequisites(test, "a") {
        return;
    }
    let pod = created_pod();
    let capture = capture_of(&pod);
    for port in SMTP_PORTS {
        assert!(capture.captured(port), "port {port}");
    }
    let mesh = Mesh::start("a");
    mesh.capture(&capture);

    // The three clients at once: each waits STALL_WAIT_SECS for the greeting.
    let ((code, report), swaks, smtplib) = std::thread::scope(|scope| {
        let probe = scope.spawn(|| mesh.probe(25));
        let swaks = scope.spawn(|| mesh.swaks(25, "swaks through the created pod"));
        let smtplib = scope.spawn(|| mesh.smtplib(587, "smtplib through the created pod"));
        (
            probe.join().expect("probe"),
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
        "pod as created, port 25 (captured): no banner in {sent:.0} ms; the 220 came {after:.1} \
         ms after the probe spoke"
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
        "pod as created: swaks exit 21 and smtplib timed out after {STALL_WAIT_SECS} s waiting \
         for the greeting"
    ));

    mesh.assert_capture_matches("pod as created", &capture, &pod);
    assert!(mesh.deliveries(0).is_empty(), "no mail can have arrived");
    assert!(mesh.maildir_new().is_empty());
    // Every connection went through the proxy; the application only ever saw the proxy.
    assert!(mesh.redirected() >= 3, "{}", mesh.sandbox.nat_counters());
    let peers = mesh.smtp_peers();
    assert!(!peers.is_empty(), "the probe's QUIT got through: {logs}");
    assert!(
        peers.iter().all(|peer| peer.starts_with("127.0.0.6:")),
        "{peers:?}"
    );
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
    let mesh = Mesh::start("b");

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
        for port in SMTP_PORTS {
            let (code, report) = mesh.probe(port);
            assert_eq!(code, 0, "{name} {port}: {report}\n{}", mesh.logs());
            assert_eq!(report["outcome"], "banner", "{report}");
            let first_byte = ms(&report, "first_byte_ms");
            assert!(first_byte < AT_ONCE_MS, "{name} {port}: {report}");
            say(&format!(
                "patched pod ({name}), port {port} (excluded): banner {first_byte:.3} ms after connecting"
            ));
            if capture.include_inbound_ports == "*" {
                // Under the wildcard, the exclusion is a RETURN rule of its own, and it was hit.
                assert_eq!(mesh.returned(port), 1, "{}", mesh.sandbox.nat_counters());
            }
        }
        assert_eq!(mesh.redirected(), 0, "{}", mesh.sandbox.nat_counters());
        mesh.assert_capture_matches(name, &capture, pod);
    }

    // The pod as serverfirst patches it at creation: a full transaction with each client.
    let (shape, pod) = &shapes[0];
    assert_eq!(shape.name, "annotations");
    mesh.capture(&capture_of(pod));
    let started = Instant::now();
    let swaks = mesh.swaks(25, "swaks through the patched pod");
    let swaks_took = started.elapsed();
    assert_eq!(swaks.status.code(), Some(0), "swaks: {}", text(&swaks));
    let started = Instant::now();
    let smtplib = mesh.smtplib(587, "smtplib through the patched pod");
    let smtplib_took = started.elapsed();
    assert_eq!(
        smtplib.status.code(),
        Some(0),
        "smtplib: {}",
        text(&smtplib)
    );
    say(&format!(
        "patched pod: swaks on 25 took {:.0} ms, smtplib on 587 {:.0} ms (process start included)",
        swaks_took.as_secs_f64() * 1e3,
        smtplib_took.as_secs_f64() * 1e3
    ));

    let records = mesh.deliveries(2);
    assert_eq!(records.len(), 2, "{records:?}\n{}", mesh.logs());
    assert_eq!(records[0]["listener"], "0.0.0.0:25");
    assert_eq!(records[0]["rcpts"], serde_json::json!(["bob@example.test"]));
    assert_eq!(records[1]["listener"], "0.0.0.0:587");
    assert_eq!(
        records[1]["rcpts"],
        serde_json::json!(["dave@example.test"])
    );
    let messages = mesh.maildir_new();
    assert_eq!(messages.len(), 2);
    for subject in [
        "Subject: swaks through the patched pod",
        "Subject: smtplib through the patched pod",
    ] {
        assert!(
            messages.iter().any(|m| m.contains(subject)),
            "{subject}: {messages:?}"
        );
    }
    assert_eq!(mesh.redirected(), 0, "{}", mesh.sandbox.nat_counters());
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
