//! Admission latency and throughput against the transport floor, side by side in one run.
//!
//! `cargo bench --bench admission [-- --rounds N --seconds S --warmup S]` starts the real
//! webhook (`serverfirst serve`) and a floor server (this binary re-executed with
//! `--floor-server`: the same `serve_https` TLS/HTTP stack, a router that reads the body and
//! returns a fixed answer) and drives both with the same in-process load generator: HTTP/1.1
//! keep-alive over rustls, `c` connections each sending one request after another. Servers run
//! on one core and the load generator on another when there are two. Each round starts both
//! servers afresh and runs every scenario on both, alternating which goes first; the table
//! gives medians over rounds and the median of the per-round webhook/floor ratios.
//!
//! Without `--bench` (that is, under `cargo test`) it runs a smoke pass of a few seconds: the
//! same code with tiny durations, asserting nothing about speed, only that every answer is
//! right (status 200, the patch checked from first principles, one log line per decision).

mod support;

use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::routing::post;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustix::process::{Pid, Signal, kill_process};
use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serverfirst::config::{Config, Mode};
use serverfirst::server::{self, Limits};
use serverfirst::tls::{self, CertResolver};
use serverfirst::{admission, certs};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use support::{Body, Expect};

const FLOOR_FLAG: &str = "--floor-server";
const TEST_NAME: &str = "admission_smoke";
/// `/proc/PID/stat` counts CPU time in USER_HZ ticks, 100 per second on Linux.
const TICK_US: f64 = 10_000.0;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(FLOOR_FLAG) {
        return report(floor::main(&args[1..]));
    }
    let options = match Options::parse(&args) {
        Some(options) => options,
        None => return ExitCode::SUCCESS,
    };
    // Detected before pinning this thread narrows what the process may use.
    let cores = Cores::detect();
    let result = pin(cores.load).and_then(|()| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(run(options, cores))
    });
    report(result)
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Clone)]
struct Options {
    full: bool,
    rounds: usize,
    warmup: Duration,
    measure: Duration,
    /// Run only the scenario of this name, e.g. `c=16, 6 KiB` (for profiling).
    only: Option<String>,
}

impl Options {
    /// `None` when there is nothing to run (a libtest-style listing or a filter that excludes
    /// the smoke test).
    fn parse(args: &[String]) -> Option<Options> {
        let full = args.iter().any(|a| a == "--bench");
        if args.iter().any(|a| a == "--list") {
            if !args.iter().any(|a| a == "--ignored") {
                println!("{TEST_NAME}: test");
            }
            return None;
        }
        let mut options = match full {
            true => Options {
                full,
                rounds: 5,
                warmup: Duration::from_millis(500),
                measure: Duration::from_secs(2),
                only: None,
            },
            false => Options {
                full,
                rounds: 1,
                warmup: Duration::ZERO,
                measure: Duration::from_millis(150),
                only: None,
            },
        };
        let seconds = |value: Option<&String>| {
            value
                .and_then(|v| v.parse::<f64>().ok())
                .map(Duration::from_secs_f64)
        };
        let mut filters = Vec::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--rounds" => {
                    if let Some(n) = args.next().and_then(|v| v.parse().ok()) {
                        options.rounds = n;
                    }
                }
                "--seconds" => options.measure = seconds(args.next()).unwrap_or(options.measure),
                "--warmup" => options.warmup = seconds(args.next()).unwrap_or(options.warmup),
                "--only" => options.only = args.next().cloned(),
                other if !other.starts_with('-') => filters.push(other),
                _ => {}
            }
        }
        if !full && !filters.is_empty() && !filters.iter().any(|f| TEST_NAME.contains(f)) {
            return None;
        }
        Some(options)
    }
}

/// The server's core and the load generator's, when the process may use two or more.
#[derive(Debug, Clone, Copy)]
struct Cores {
    /// How many CPUs the process may use.
    allowed: usize,
    server: Option<usize>,
    load: Option<usize>,
}

impl Cores {
    fn detect() -> Cores {
        let allowed: Vec<usize> = sched_getaffinity(None)
            .map(|set| (0..CpuSet::MAX_CPU).filter(|&i| set.is_set(i)).collect())
            .unwrap_or_default();
        let (server, load) = match allowed.as_slice() {
            [server, load, ..] => (Some(*server), Some(*load)),
            _ => (None, None),
        };
        Cores {
            allowed: allowed.len(),
            server,
            load,
        }
    }
}

/// Pins the calling thread (and what it spawns from now on) to `cpu`.
fn pin(cpu: Option<usize>) -> anyhow::Result<()> {
    if let Some(cpu) = cpu {
        let mut set = CpuSet::new();
        set.set(cpu);
        sched_setaffinity(None, &set).with_context(|| format!("cannot pin to CPU {cpu}"))?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Webhook,
    Floor,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Floor => "floor",
        }
    }

    /// A profiler to run the server under, e.g. `valgrind --tool=callgrind`.
    fn wrapper(self) -> Option<String> {
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
struct Setup {
    dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    floor_answer: PathBuf,
    tls: TlsConnector,
    cores: Cores,
    bodies: Vec<Body>,
}

impl Setup {
    fn new(cores: Cores) -> anyhow::Result<Setup> {
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
        let answer = admission::review(&bodies[0].bytes, Mode::Enforce, &Config::default())?;
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

/// A keep-alive HTTP/1.1 connection over TLS.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(addr: SocketAddr, tls: &TlsConnector) -> anyhow::Result<Conn> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let stream = tls.connect(ServerName::try_from("localhost")?, tcp).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn { sender })
    }

    async fn post(&mut self, body: Bytes) -> anyhow::Result<(u16, Bytes)> {
        self.sender.ready().await?;
        let request = hyper::Request::post("/mutate")
            .header(header::HOST, "localhost")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// A server process under test; killed when dropped.
struct Server {
    kind: Kind,
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    /// Requests answered with 200 since the start, measured or not.
    answered: u64,
    ready: Duration,
    idle_rss_kib: u64,
    /// The anonymous part (heap, stacks) of the idle RSS; the rest is the binary's mapped
    /// pages.
    idle_anon_kib: u64,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(kind: Kind, setup: &Setup, round: usize) -> anyhow::Result<Server> {
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

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or_default().to_string()
    }

    /// The answer this server gives to `body`, checked from first principles for the webhook.
    async fn expected(&mut self, setup: &Setup, body: &Body) -> anyhow::Result<Bytes> {
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
    fn stop(mut self, expects: &[Expect]) -> anyhow::Result<()> {
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
                && (event["pod"] == "mox-7c9d5b8f6-*")
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
fn cpu_ticks(pid: &str) -> anyhow::Result<u64> {
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

fn proc_status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no {key} in /proc/{pid}/status"))
}

/// Resets the peak RSS (VmHWM) of `pid` to its current RSS.
fn reset_peak_rss(pid: u32) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// One scenario on one server, over the measured window.
#[derive(Debug, Clone)]
struct Sample {
    requests: u64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
    server_util: f64,
    load_util: f64,
    peak_rss_kib: u64,
}

struct ConnResult {
    histogram: Histogram<u64>,
    answered: u64,
    error: Option<String>,
}

async fn connection_loop(
    mut conn: Conn,
    body: Bytes,
    expected: Bytes,
    window: (Instant, Instant),
) -> ConnResult {
    let mut histogram = Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("bounds");
    let (mut answered, mut error) = (0, None);
    while Instant::now() < window.1 || answered == 0 {
        let begin = Instant::now();
        match conn.post(body.clone()).await {
            Ok((200, answer)) if answer == expected => {
                let end = Instant::now();
                answered += 1;
                if end >= window.0 && end < window.1 {
                    let nanos = end.duration_since(begin).as_nanos();
                    histogram.saturating_record(u64::try_from(nanos).unwrap_or(u64::MAX));
                }
            }
            Ok((status, answer)) => {
                error = Some(format!(
                    "status {status}, answer {}",
                    String::from_utf8_lossy(&answer[..answer.len().min(300)])
                ));
                break;
            }
            Err(e) => {
                error = Some(format!("{e:#}"));
                break;
            }
        }
    }
    ConnResult {
        histogram,
        answered,
        error,
    }
}

/// Drives `server` with `conns` connections posting `body`, each answer compared with
/// `expected`; warm-up first, then the measured window.
async fn drive(
    server: &mut Server,
    setup: &Setup,
    options: &Options,
    body: Bytes,
    expected: Bytes,
    conns: usize,
) -> anyhow::Result<Sample> {
    let pid = server.pid().to_string();
    let mut opened = Vec::with_capacity(conns);
    for _ in 0..conns {
        opened.push(Conn::open(server.addr, &setup.tls).await?);
    }
    let has_peak = reset_peak_rss(server.pid());
    let begin = Instant::now();
    let window = (
        begin + options.warmup,
        begin + options.warmup + options.measure,
    );
    let tasks: Vec<_> = opened
        .into_iter()
        .map(|conn| {
            tokio::spawn(connection_loop(
                conn,
                body.clone(),
                expected.clone(),
                window,
            ))
        })
        .collect();
    tokio::time::sleep_until(window.0.into()).await;
    let (server0, load0, at0) = (cpu_ticks(&pid)?, cpu_ticks("self")?, Instant::now());
    tokio::time::sleep_until(window.1.into()).await;
    let (server1, load1, at1) = (cpu_ticks(&pid)?, cpu_ticks("self")?, Instant::now());
    let mut histogram = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)?;
    for task in tasks {
        let result = task.await?;
        server.answered += result.answered;
        if let Some(error) = result.error {
            bail!("{}: {error}", server.kind.name());
        }
        histogram.add(&result.histogram)?;
    }
    let peak_rss_kib = match has_peak {
        true => proc_status_kib(server.pid(), "VmHWM")?,
        false => 0,
    };
    let seconds = at1.duration_since(at0).as_secs_f64();
    let requests = histogram.len();
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1e6;
    Ok(Sample {
        requests,
        rps: requests as f64 / seconds,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        cpu_us: (server1 - server0) as f64 * TICK_US / requests.max(1) as f64,
        server_util: (server1 - server0) as f64 * TICK_US / 1e6 / seconds,
        load_util: (load1 - load0) as f64 * TICK_US / 1e6 / seconds,
        peak_rss_kib,
    })
}

struct Scenario {
    name: String,
    body: usize,
    conns: usize,
}

fn scenarios(bodies: &[Body]) -> Vec<Scenario> {
    let scenario = |body: usize, conns: usize| Scenario {
        name: format!("c={conns}, {}", bodies[body].name),
        body,
        conns,
    };
    vec![
        scenario(0, 1),
        scenario(0, 16),
        scenario(0, 64),
        scenario(1, 16),
        scenario(1, 1),
        scenario(2, 1),
        scenario(3, 1),
    ]
}

/// Every sample of the run: `[scenario][round]`, per server.
#[derive(Default)]
struct Results {
    webhook: Vec<Vec<Sample>>,
    floor: Vec<Vec<Sample>>,
    /// (time to ready, idle RSS, its anonymous part) per round.
    webhook_start: Vec<(Duration, u64, u64)>,
    floor_start: Vec<(Duration, u64, u64)>,
}

async fn run(options: Options, cores: Cores) -> anyhow::Result<()> {
    let setup = Setup::new(cores)?;
    let mut scenarios = scenarios(&setup.bodies);
    let every_scenario = scenarios.len();
    if let Some(only) = &options.only {
        scenarios.retain(|s| &s.name == only);
    }
    let mut results = Results {
        webhook: vec![Vec::new(); scenarios.len()],
        floor: vec![Vec::new(); scenarios.len()],
        ..Results::default()
    };
    let started = Instant::now();
    for round in 0..options.rounds {
        let order = match round % 2 {
            0 => [Kind::Floor, Kind::Webhook],
            _ => [Kind::Webhook, Kind::Floor],
        };
        let mut servers = Vec::new();
        for kind in order {
            servers.push(Server::start(kind, &setup, round).await?);
        }
        servers.sort_by_key(|s| s.kind == Kind::Floor);
        let [mut webhook, mut floor]: [Server; 2] = servers
            .try_into()
            .map_err(|_| anyhow!("two servers expected"))?;
        results
            .webhook_start
            .push((webhook.ready, webhook.idle_rss_kib, webhook.idle_anon_kib));
        results
            .floor_start
            .push((floor.ready, floor.idle_rss_kib, floor.idle_anon_kib));
        let mut expected = Vec::new();
        for body in &setup.bodies {
            expected.push((
                webhook.expected(&setup, body).await?,
                floor.expected(&setup, body).await?,
            ));
        }
        for (index, scenario) in scenarios.iter().enumerate() {
            let body = Bytes::from(setup.bodies[scenario.body].bytes.clone());
            let (for_webhook, for_floor) = expected[scenario.body].clone();
            let webhook_first = (round + index) % 2 == 1;
            for step in 0..2 {
                let (server, answer, samples) = match (step == 0) == webhook_first {
                    true => (&mut webhook, &for_webhook, &mut results.webhook),
                    false => (&mut floor, &for_floor, &mut results.floor),
                };
                let sample = drive(
                    server,
                    &setup,
                    &options,
                    body.clone(),
                    answer.clone(),
                    scenario.conns,
                )
                .await
                .with_context(|| format!("{} on {}", scenario.name, server.kind.name()))?;
                samples[index].push(sample);
            }
        }
        let expects: Vec<Expect> = setup.bodies.iter().map(|b| b.expect).collect();
        webhook.stop(&expects)?;
        floor.stop(&expects)?;
        if options.full {
            eprintln!(
                "round {}/{} done ({:.0} s)",
                round + 1,
                options.rounds,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let table = render(&options, &setup, &scenarios, &results, every_scenario);
    match options.full {
        true => print!("{table}"),
        false => {
            let answered: u64 = results.webhook.iter().flatten().map(|s| s.requests).sum();
            println!(
                "{TEST_NAME}: webhook and floor answered every request correctly \
                 ({} scenarios, {answered} measured webhook answers, {:.1} s)",
                scenarios.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() % 2 {
        0 => (values[mid - 1] + values[mid]) / 2.0,
        _ => values[mid],
    }
}

/// The median of `metric` over rounds, and the median of the per-round webhook/floor ratios.
fn summary(webhook: &[Sample], floor: &[Sample], metric: fn(&Sample) -> f64) -> [f64; 3] {
    let ratios = webhook
        .iter()
        .zip(floor)
        .map(|(w, f)| metric(w) / metric(f))
        .collect();
    [
        median(webhook.iter().map(metric).collect()),
        median(floor.iter().map(metric).collect()),
        median(ratios),
    ]
}

/// One column of the table: its heading and how it is read off a sample.
type Metric = (&'static str, fn(&Sample) -> f64);

const METRICS: [Metric; 5] = [
    ("req/s", |s| s.rps),
    ("p50 ms", |s| s.p50_ms),
    ("p99 ms", |s| s.p99_ms),
    ("CPU µs/req", |s| s.cpu_us),
    ("peak RSS MiB", |s| s.peak_rss_kib as f64 / 1024.0),
];

fn number(value: f64) -> String {
    match value {
        v if v.is_nan() => "-".into(),
        v if v >= 1000.0 => format!("{v:.0}"),
        v if v >= 10.0 => format!("{v:.1}"),
        v => format!("{v:.2}"),
    }
}

fn machine(cpus: usize) -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}, {cpus} CPUs, Linux {}", kernel.trim())
}

fn render(
    options: &Options,
    setup: &Setup,
    scenarios: &[Scenario],
    results: &Results,
    every_scenario: usize,
) -> String {
    let mut out = String::new();
    let today = time::OffsetDateTime::now_utc().date();
    let pinning = match (setup.cores.server, setup.cores.load) {
        (Some(server), Some(load)) => {
            format!("servers on CPU {server}, load generator on CPU {load}")
        }
        _ => "not pinned (fewer than 2 CPUs)".into(),
    };
    let _ = writeln!(
        out,
        "serverfirst admission benchmark, {today}, {}\n{pinning}; {} rounds of {:.1} s warm-up + {:.1} s \
         measured per scenario and server, A/B alternated; medians over rounds, ratio = median of \
         per-round webhook/floor\n",
        machine(setup.cores.allowed),
        options.rounds,
        options.warmup.as_secs_f64(),
        options.measure.as_secs_f64(),
    );
    let headings: Vec<&str> = METRICS.iter().map(|(heading, _)| *heading).collect();
    let _ = writeln!(
        out,
        "| scenario | server | {} | server CPU | load CPU |\n|---|---|{}--:|--:|",
        headings.join(" | "),
        "--:|".repeat(headings.len())
    );
    for (index, scenario) in scenarios.iter().enumerate() {
        let (webhook, floor) = (&results.webhook[index], &results.floor[index]);
        let cells: Vec<[f64; 3]> = METRICS
            .iter()
            .map(|(_, metric)| summary(webhook, floor, *metric))
            .collect();
        let util = |samples: &[Sample], f: fn(&Sample) -> f64| {
            format!("{:.0}%", median(samples.iter().map(f).collect()) * 100.0)
        };
        for (row, name) in ["webhook", "floor", "ratio"].iter().enumerate() {
            let label = match row {
                0 => format!(
                    "{} ({:.1} KiB)",
                    scenario.name,
                    setup.bodies[scenario.body].bytes.len() as f64 / 1024.0
                ),
                _ => String::new(),
            };
            let values: Vec<String> = cells
                .iter()
                .map(|c| match row {
                    2 => format!("{:.2}×", c[2]),
                    _ => number(c[row]),
                })
                .collect();
            let (server_util, load_util) = match row {
                0 => (
                    util(webhook, |s| s.server_util),
                    util(webhook, |s| s.load_util),
                ),
                1 => (util(floor, |s| s.server_util), util(floor, |s| s.load_util)),
                _ => (String::new(), String::new()),
            };
            let _ = writeln!(
                out,
                "| {label} | {name} | {} | {server_util} | {load_util} |",
                values.join(" | ")
            );
        }
    }
    let start = |samples: &[(Duration, u64, u64)]| {
        [
            median(samples.iter().map(|s| s.0.as_secs_f64() * 1e3).collect()),
            median(samples.iter().map(|s| s.1 as f64 / 1024.0).collect()),
            median(samples.iter().map(|s| s.2 as f64 / 1024.0).collect()),
        ]
    };
    let webhook_start = start(&results.webhook_start);
    let _ = writeln!(
        out,
        "\n| startup | time to ready ms | idle RSS MiB | of which anonymous MiB |\n|---|--:|--:|--:|"
    );
    for (name, row) in [
        ("webhook", webhook_start),
        ("floor", start(&results.floor_start)),
    ] {
        let cells: Vec<String> = row.iter().map(|&v| number(v)).collect();
        let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
    }
    let [webhook_ready, webhook_idle, _] = webhook_start;
    if scenarios.len() == every_scenario {
        out.push_str(&targets(scenarios, results, webhook_ready, webhook_idle));
    }
    out
}

/// The targets against this run's figures.
fn targets(scenarios: &[Scenario], results: &Results, ready_ms: f64, idle_mib: f64) -> String {
    let find = |body: usize, conns: usize| {
        scenarios
            .iter()
            .position(|s| s.body == body && s.conns == conns)
            .expect("scenario")
    };
    let get = |index: usize, metric: usize| {
        summary(
            &results.webhook[index],
            &results.floor[index],
            METRICS[metric].1,
        )
    };
    let (c1, c16, c64) = (find(0, 1), find(0, 16), find(0, 64));
    let (unchanged16, unchanged1) = (find(1, 16), find(1, 1));
    let (kib64, mib1) = (find(2, 1), find(3, 1));
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let mut lines = Vec::new();
    for (name, index) in [("c=16", c16), ("c=64", c64)] {
        let ratio = get(index, 0)[2];
        lines.push(format!(
            "throughput {name}: {ratio:.2}× the floor (target ≥ 0.50, stretch 0.67): {}",
            verdict(ratio >= 0.5)
        ));
    }
    let p99 = get(c16, 2)[2];
    lines.push(format!(
        "p99 c=16: {p99:.2}× the floor (target ≤ 2): {}",
        verdict(p99 <= 2.0)
    ));
    let cpu = get(c16, 3)[2];
    lines.push(format!(
        "CPU per request c=16: {cpu:.2}× the floor (target ≤ 2): {}",
        verdict(cpu <= 2.0)
    ));
    let (patched, unchanged) = (get(c16, 3)[0], get(unchanged16, 3)[0]);
    lines.push(format!(
        "no-patch pod c=16: {} µs/req vs {} µs/req for the pod that needs one: {}",
        number(unchanged),
        number(patched),
        verdict(unchanged <= patched * 1.05)
    ));
    let scale: Vec<String> = [c1, kib64, mib1]
        .iter()
        .map(|&i| format!("{} ms / {} µs", number(get(i, 1)[0]), number(get(i, 3)[0])))
        .collect();
    lines.push(format!(
        "size scaling c=1, p50 / CPU per request, 6 KiB → 64 KiB → 1 MiB: {} \
         (no-patch 6 KiB: {} µs)",
        scale.join(" → "),
        number(get(unchanged1, 3)[0])
    ));
    let big = get(mib1, 2)[0];
    lines.push(format!(
        "1 MiB review p99 at c=1: {} ms (target < 5): {}",
        number(big),
        verdict(big < 5.0)
    ));
    let peak = get(c64, 4)[0];
    lines.push(format!(
        "peak RSS c=64: {} MiB (target ≤ 16): {}",
        number(peak),
        verdict(peak <= 16.0)
    ));
    lines.push(format!(
        "idle RSS: {} MiB (target ≤ 8): {}; ready in {} ms (target ≤ 50): {}",
        number(idle_mib),
        verdict(idle_mib <= 8.0),
        number(ready_ms),
        verdict(ready_ms <= 50.0)
    ));
    let mut out = String::from("\nTargets (webhook):\n");
    for line in lines {
        let _ = writeln!(out, "- {line}");
    }
    out
}

/// The floor server: `serve_https` with a router that reads the body and returns a fixed
/// answer, parsing nothing.
mod floor {
    use super::*;

    pub fn main(args: &[String]) -> anyhow::Result<()> {
        let value = |flag: &str| -> anyhow::Result<&String> {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .ok_or_else(|| anyhow!("floor server: {flag} is required"))
        };
        let listen: SocketAddr = value("--listen")?.parse()?;
        let (cert, key) = (value("--tls-cert")?, value("--tls-key")?);
        let answer = Bytes::from(fs::read(value("--answer")?)?);
        let _ = rustls::crypto::ring::default_provider().install_default();
        // The same runtime as the webhook binary's.
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve(listen, Path::new(cert), Path::new(key), answer))
    }

    async fn serve(
        listen: SocketAddr,
        cert: &Path,
        key: &Path,
        answer: Bytes,
    ) -> anyhow::Result<()> {
        let key = tls::certified_key(&fs::read(cert)?, &fs::read(key)?)?;
        let config = Arc::new(tls::server_config(Arc::new(CertResolver::new(key)), None)?);
        let listener = server::bind(listen, "the floor server").await?;
        let limits = Limits::default();
        let router = Router::new()
            .route(
                "/mutate",
                post(move |_body: Bytes| {
                    let answer = answer.clone();
                    async move { ([(header::CONTENT_TYPE, "application/json")], answer) }
                }),
            )
            .layer(DefaultBodyLimit::max(limits.max_body_bytes));
        server::serve_https(listener, config, router, limits, CancellationToken::new()).await;
        Ok(())
    }
}
