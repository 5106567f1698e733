//! The two servers under test, the webhook binary and the floor: started, checked, stopped.

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use bytes::Bytes;
use rustix::process::{Pid, Signal, kill_process};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use serverfirst::config::{Config, Mode};
use serverfirst::mesh_state::MeshState;
use serverfirst::{admission, certs, tls};
use tokio_rustls::TlsConnector;

use crate::load::Conn;
use crate::support::{self, Body, Expect};
use crate::{Cores, FLOOR_FLAG, pin};

/// `/proc/PID/stat` counts CPU time in USER_HZ ticks, 100 per second on Linux.
pub const TICK_US: f64 = 10_000.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Webhook,
    Floor,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Floor => "floor",
        }
    }

    /// A profiler to run the server under, e.g. `valgrind --tool=callgrind`.
    pub fn wrapper(self) -> Option<String> {
        let variable = match self {
            Kind::Webhook => "BENCH_WEBHOOK_WRAPPER",
            Kind::Floor => "BENCH_FLOOR_WRAPPER",
        };
        std::env::var(variable)
            .ok()
            .filter(|w| !w.trim().is_empty())
    }
}

/// What every server of the run shares: certificates, the floor's answer, the client config.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub floor_answer: PathBuf,
    pub tls: TlsConnector,
    pub cores: Cores,
    pub bodies: Vec<Body>,
}

impl Setup {
    pub fn new(cores: Cores) -> anyhow::Result<Setup> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::Builder::new()
            .prefix("serverfirst-bench-")
            .tempdir()?;
        let bundle = certs::generate(&["localhost".into()], 1)?;
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        fs::write(&cert, &bundle.cert_pem)?;
        fs::write(&key, &bundle.key_pem)?;
        let bodies = support::bodies();
        // The floor answers every request with the webhook's answer to the 6 KiB pod.
        let answer = admission::review(
            &bodies[0].bytes,
            Mode::Enforce,
            &Config::default(),
            &MeshState::default(),
        )?;
        let floor_answer = dir.path().join("floor-answer.json");
        fs::write(&floor_answer, &answer.body)?;

        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(bundle.ca_pem.as_bytes()) {
            roots.add(cert?)?;
        }
        let mut config = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Setup {
            dir,
            cert,
            key,
            floor_answer,
            tls: TlsConnector::from(Arc::new(config)),
            cores,
            bodies,
        })
    }
}

/// A server process under test; killed when dropped.
pub struct Server {
    pub kind: Kind,
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
    /// Requests answered with 200 since the start, measured or not.
    pub answered: u64,
    pub ready: Duration,
    pub idle_rss_kib: u64,
    /// The anonymous part (heap, stacks) of the idle RSS; the rest is the binary's mapped
    /// pages.
    pub idle_anon_kib: u64,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub async fn start(kind: Kind, setup: &Setup, round: usize) -> anyhow::Result<Server> {
        let addr = free_port()?;
        let mut command = match kind {
            Kind::Webhook => {
                let mut command = wrapped(Path::new(env!("CARGO_BIN_EXE_serverfirst")), kind);
                command
                    .arg("serve")
                    .arg("--listen")
                    .arg(addr.to_string())
                    .arg("--metrics-listen")
                    .arg(free_port()?.to_string())
                    .env_remove("RUST_LOG")
                    // As deployed (manifests/base/deployment.yaml).
                    .env("SERVERFIRST_LOG_FORMAT", "json");
                command
            }
            Kind::Floor => {
                let mut command = wrapped(&std::env::current_exe()?, kind);
                command
                    .args([FLOOR_FLAG, "--listen", &addr.to_string(), "--answer"])
                    .arg(&setup.floor_answer);
                command
            }
        };
        command
            .arg("--tls-cert")
            .arg(&setup.cert)
            .arg("--tls-key")
            .arg(&setup.key);
        let log = setup
            .dir
            .path()
            .join(format!("{}-{round}.log", kind.name()));
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log)?);
        // The child inherits the spawning thread's affinity.
        pin(setup.cores.server)?;
        let started = Instant::now();
        let spawned = command.spawn();
        pin(setup.cores.load)?;
        let mut server = Server {
            kind,
            child: spawned.with_context(|| format!("cannot start the {}", kind.name()))?,
            addr,
            log,
            answered: 0,
            ready: Duration::ZERO,
            idle_rss_kib: 0,
            idle_anon_kib: 0,
        };
        // Ready: the first request over a fresh connection is answered.
        let body = Bytes::from(setup.bodies[0].bytes.clone());
        loop {
            let attempt = async {
                let mut conn = Conn::open(addr, &setup.tls).await?;
                conn.post(body.clone()).await
            };
            match attempt.await {
                Ok((200, _)) => break,
                Ok((status, answer)) => bail!(
                    "{} answered {status}: {}",
                    kind.name(),
                    String::from_utf8_lossy(&answer)
                ),
                Err(error) => {
                    if let Some(status) = server.child.try_wait()? {
                        bail!("{} exited ({status}): {}", kind.name(), server.log_tail());
                    }
                    if started.elapsed() > Duration::from_secs(20) {
                        bail!("{} not ready after 20 s: {error:#}", kind.name());
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        server.ready = started.elapsed();
        server.answered += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.idle_rss_kib = proc_status_kib(server.pid(), "VmRSS")?;
        server.idle_anon_kib = proc_status_kib(server.pid(), "RssAnon")?;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or_default().to_string()
    }

    /// The answer this server gives to `body`, checked from first principles for the webhook.
    pub async fn expected(&mut self, setup: &Setup, body: &Body) -> anyhow::Result<Bytes> {
        let mut conn = Conn::open(self.addr, &setup.tls).await?;
        let (status, answer) = conn.post(Bytes::from(body.bytes.clone())).await?;
        ensure!(
            status == 200,
            "{} answered {status} to the {} pod",
            self.kind.name(),
            body.name
        );
        self.answered += 1;
        match self.kind {
            Kind::Webhook => support::check_answer(&body.bytes, &answer, body.expect)
                .map_err(|e| anyhow!("wrong answer to the {} pod: {e}", body.name))?,
            Kind::Floor => ensure!(
                answer == fs::read(&setup.floor_answer)?,
                "the floor's answer is not its fixed answer"
            ),
        }
        Ok(answer)
    }

    /// Stops the server with SIGTERM, as the kubelet does; for the webhook, checks one log
    /// line per admission decision.
    pub fn stop(mut self, expects: &[Expect]) -> anyhow::Result<()> {
        let pid = Pid::from_raw(self.pid() as i32).ok_or_else(|| anyhow!("no pid"))?;
        kill_process(pid, Signal::TERM)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            ensure!(
                Instant::now() < deadline,
                "{} still running 30 s after SIGTERM",
                self.kind.name()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // Under a profiler the log holds the profiler's lines too.
        if self.kind == Kind::Floor || self.kind.wrapper().is_some() {
            return Ok(());
        }
        let log = fs::read_to_string(&self.log)?;
        let mut decisions = 0;
        let mut actions: Vec<String> = Vec::new();
        for line in log.lines() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                bail!("log line is not JSON: {line}");
            };
            if event["message"] != "admission decision" {
                continue;
            }
            decisions += 1;
            let action = event["action"].as_str().unwrap_or_default();
            let expected = (event["namespace"] == "mail")
                && (event["kind"] == "pod")
                && (event["name"] == "mox-7c9d5b8f6-*")
                && (event["ports"] == support::PORTS)
                && (event["mode"] == "enforce")
                && matches!(action, "patched" | "unchanged");
            ensure!(expected, "unexpected admission decision log line: {line}");
            if !actions.iter().any(|a| a == action) {
                actions.push(action.to_string());
            }
        }
        ensure!(
            decisions == self.answered,
            "{decisions} admission decisions logged for {} answers",
            self.answered
        );
        for expect in expects {
            let action = match expect {
                Expect::Patch => "patched",
                Expect::NoPatch => "unchanged",
            };
            ensure!(
                actions.iter().any(|a| a == action),
                "no admission decision logged with action {action}"
            );
        }
        fs::remove_file(&self.log)?;
        Ok(())
    }
}

/// `program`, run under the profiler named by the kind's wrapper variable, if set.
fn wrapped(program: &Path, kind: Kind) -> Command {
    let wrapper = kind.wrapper().unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    match words.next() {
        Some(profiler) => {
            let mut command = Command::new(profiler);
            command.args(words).arg(program);
            command
        }
        None => Command::new(program),
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// `utime + stime` of process `pid` (all its threads), in ticks.
pub fn cpu_ticks(pid: &str) -> anyhow::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which ends with the last ')': state is field 3.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> { Ok(fields[n - 3].parse()?) };
    Ok(field(14)? + field(15)?)
}

pub fn proc_status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no {key} in /proc/{pid}/status"))
}

/// Resets the peak RSS (VmHWM) of `pid` to its current RSS.
pub fn reset_peak_rss(pid: u32) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}
