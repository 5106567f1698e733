//! The table: medians over rounds, per-round ratios, and the targets.

use std::fmt::Write as _;
use std::fs;
use std::time::Duration;

use crate::load::Sample;
use crate::servers::Setup;
use crate::{Options, Results, Scenario};

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

pub fn render(
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
