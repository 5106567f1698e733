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

#[path = "../support/mod.rs"]
mod support;

mod floor;
mod load;
mod report;
mod servers;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

use load::{Sample, drive};
use report::render;
use servers::{Kind, Server, Setup};
use support::{Body, Expect};

const FLOOR_FLAG: &str = "--floor-server";
const TEST_NAME: &str = "admission_smoke";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(FLOOR_FLAG) {
        return exit_code(floor::main(&args[1..]));
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
    exit_code(result)
}

fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub full: bool,
    pub rounds: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// Run only the scenario of this name, e.g. `c=16, 6 KiB` (for profiling).
    pub only: Option<String>,
}

impl Options {
    /// `None` when there is nothing to run (a libtest-style listing or a filter that excludes
    /// the smoke test).
    pub fn parse(args: &[String]) -> Option<Options> {
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
pub struct Cores {
    /// How many CPUs the process may use.
    pub allowed: usize,
    pub server: Option<usize>,
    pub load: Option<usize>,
}

impl Cores {
    pub fn detect() -> Cores {
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

pub struct Scenario {
    pub name: String,
    pub body: usize,
    pub conns: usize,
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
pub struct Results {
    pub webhook: Vec<Vec<Sample>>,
    pub floor: Vec<Vec<Sample>>,
    /// (time to ready, idle RSS, its anonymous part) per round.
    pub webhook_start: Vec<(Duration, u64, u64)>,
    pub floor_start: Vec<(Duration, u64, u64)>,
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
