//! The network-namespace test bed of the end-to-end tests: a `client` and a `pod` namespace
//! joined by a veth pair on a /30 that exists only inside them, background processes started in
//! them, and bounded command runs. Every namespace, veth and process is removed by its Drop guard,
//! also when a test fails.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// The /30 joining the namespaces; it exists only inside them.
pub const CLIENT_ADDR: &str = "10.201.0.1";
pub const POD_ADDR: &str = "10.201.0.2";
const PREFIX: u8 = 30;

/// Upper bound on any one command, so that a hang fails the test instead of blocking it.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(15);

pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "e2e_netns: {line}");
}

pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Why the namespace test bed cannot run here (not root, a tool of `tools` missing from PATH,
/// namespaces refused), or `None` when it can. `install_hint` says how to get the tools.
pub fn missing_prerequisite(tag: &str, tools: &[&str], install_hint: &str) -> Option<String> {
    if effective_uid() != Some(0) {
        return Some("needs root for network namespaces and iptables".to_string());
    }
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if !missing.is_empty() {
        return Some(format!("missing {} ({install_hint})", missing.join(", ")));
    }
    // Root in a container may still lack the capabilities for namespaces.
    let probe = format!("sf-e2e-check-{}{tag}", std::process::id());
    let added = ip(&["netns", "add", &probe]).output();
    if !added.as_ref().is_ok_and(|o| o.status.success()) {
        let why = added.map_or_else(|e| e.to_string(), |o| text(&o));
        return Some(format!("cannot create a network namespace: {why}"));
    }
    let _ = ip(&["netns", "del", &probe]).output();
    static SWEEP: Once = Once::new();
    SWEEP.call_once(sweep_stale_namespaces);
    None
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
        let Some(rest) = [
            "sf-e2e-client-",
            "sf-e2e-pod-",
            "sf-e2e-peer-",
            "sf-e2e-check-",
        ]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix)) else {
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
pub fn run_bounded(mut command: Command) -> Output {
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

pub fn checked(command: Command) -> Output {
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

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The two namespaces and the veth pair, named after the test process and a tag. Dropping it
/// deletes the veth (namespace teardown is asynchronous; a left-over veth breaks the next run)
/// and both namespaces, also when the test fails.
pub struct Sandbox {
    pub client: String,
    pub pod: String,
    /// The test process and the tag: what every name of this sandbox is made from.
    id: String,
    veth_client: String,
    veth_pod: String,
    created: Vec<String>,
}

impl Sandbox {
    pub fn create(tag: &str) -> Sandbox {
        let id = format!("{}{tag}", std::process::id());
        let mut sandbox = Sandbox {
            client: format!("sf-e2e-client-{id}"),
            pod: format!("sf-e2e-pod-{id}"),
            id: id.clone(),
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
    pub fn exec(namespace: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", namespace, program]);
        command
    }

    pub fn in_pod(&self, program: &str) -> Command {
        Sandbox::exec(&self.pod, program)
    }

    pub fn in_client(&self, program: &str) -> Command {
        Sandbox::exec(&self.client, program)
    }

    /// Replaces the pod namespace's nat table (and its counters) with `restore_input`.
    pub fn load_nat(&self, restore_input: &str) {
        load_nat_in(&self.pod, restore_input);
    }

    /// `iptables-save -c -t nat` of the pod namespace.
    pub fn nat_counters(&self) -> String {
        nat_counters_in(&self.pod)
    }

    /// Waits up to 10 s for `ports` to listen in the pod namespace, calling `check_daemons`
    /// (which fails when a server has exited) while it waits.
    pub fn wait_listening(&self, ports: &[u16], check_daemons: impl FnMut()) {
        wait_listening_in(&self.pod, ports, check_daemons);
    }

    pub fn listening(&self, ports: &[u16]) -> bool {
        listening_in(&self.pod, ports)
    }
}

/// [`Sandbox::wait_listening`] in any namespace.
pub fn wait_listening_in(namespace: &str, ports: &[u16], mut check_daemons: impl FnMut()) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listening_in(namespace, ports) {
        check_daemons();
        assert!(
            Instant::now() < deadline,
            "listeners not up in {namespace}: {ports:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether every one of `ports` has a TCP listener in `namespace`.
pub fn listening_in(namespace: &str, ports: &[u16]) -> bool {
    let mut command = Sandbox::exec(namespace, "ss");
    command.args(["-Hltn"]);
    let listing = String::from_utf8_lossy(&run_bounded(command).stdout).into_owned();
    ports
        .iter()
        .all(|port| listing.contains(&format!(":{port} ")))
}

/// A further namespace joined to the pod namespace by a veth pair of its own, on a /30 of its
/// own that exists only inside the two, its default route through the pod's end: another client
/// pod, or a machine outside the mesh. Dropping it deletes the veth and the namespace; drop it
/// before the [`Sandbox`].
pub struct Peer {
    pub namespace: String,
    /// The peer's own address.
    pub addr: String,
    pod: String,
    veth_pod: String,
}

impl Sandbox {
    /// Peer `index` (1 to 63) on `10.201.0.<4 index>/30`, the /30 after the client's.
    pub fn add_peer(&self, index: u8) -> Peer {
        assert!((1..64).contains(&index), "peer index {index}");
        let base = 4 * index;
        let peer = Peer {
            namespace: format!("sf-e2e-peer-{}-{index}", self.id),
            addr: format!("10.201.0.{}", base + 1),
            pod: self.pod.clone(),
            veth_pod: format!("sfr{}{index}", self.id),
        };
        let veth_peer = format!("sfq{}{index}", self.id);
        assert!(peer.veth_pod.len() <= 15, "{}", peer.veth_pod);
        checked(ip(&["netns", "add", &peer.namespace]));
        checked(ip(&[
            "link",
            "add",
            &veth_peer,
            "netns",
            &peer.namespace,
            "type",
            "veth",
            "peer",
            "name",
            &peer.veth_pod,
            "netns",
            &self.pod,
        ]));
        let pod_end = format!("10.201.0.{}", base + 2);
        for (namespace, veth, addr) in [
            (&peer.namespace, &veth_peer, &peer.addr),
            (&self.pod, &peer.veth_pod, &pod_end),
        ] {
            checked(ip(&["-n", namespace, "link", "set", "lo", "up"]));
            let cidr = format!("{addr}/{PREFIX}");
            checked(ip(&["-n", namespace, "addr", "add", &cidr, "dev", veth]));
            checked(ip(&["-n", namespace, "link", "set", veth, "up"]));
        }
        checked(ip(&[
            "-n",
            &peer.namespace,
            "route",
            "add",
            "default",
            "via",
            &pod_end,
        ]));
        peer
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        for mut command in [
            ip(&["-n", &self.pod, "link", "del", &self.veth_pod]),
            ip(&["netns", "del", &self.namespace]),
        ] {
            match command.output() {
                Ok(output) if output.status.success() => {}
                Ok(output) => say(&format!("cleanup {command:?}: {}", text(&output))),
                Err(error) => say(&format!("cleanup {command:?}: {error}")),
            }
        }
    }
}

/// Replaces `namespace`'s nat table (and its counters) with `restore_input`.
pub fn load_nat_in(namespace: &str, restore_input: &str) {
    let mut command = Sandbox::exec(namespace, "iptables-restore");
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

/// `iptables-save -c -t nat` of `namespace`.
pub fn nat_counters_in(namespace: &str) -> String {
    let mut command = Sandbox::exec(namespace, "iptables-save");
    command.args(["-c", "-t", "nat"]);
    String::from_utf8(checked(command).stdout).expect("UTF-8")
}

/// Packets (= new connections: nat sees only the first packet of each) that hit the rules of
/// `counters` (from [`nat_counters_in`]) that `matches` selects.
pub fn nat_packets(counters: &str, matches: impl Fn(&str) -> bool) -> u64 {
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

pub fn ip(args: &[&str]) -> Command {
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
pub struct Daemon {
    name: &'static str,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Daemon {
    pub fn start(name: &'static str, mut command: Command, dir: &Path) -> Daemon {
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

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn assert_running(&mut self) {
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
