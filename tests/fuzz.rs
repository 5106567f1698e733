//! Runs every cargo-fuzz target (fuzz/fuzz_targets) for a bounded time: 60 s each under CI, or
//! `SERVERFIRST_FUZZ_SECONDS` when set. cargo-fuzz uses nightly-only flags; on a stable
//! toolchain `RUSTC_BOOTSTRAP=1` allows them.

mod common;

use std::io::Write as _;
use std::process::Command;

const TARGETS: &[&str] = &["admission_review", "port_list", "smtp_session"];
const TEST: &str = "fuzz_targets_run_clean_for_a_bounded_time";

fn seconds() -> Option<u64> {
    if let Some(seconds) = std::env::var("SERVERFIRST_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return Some(seconds);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("SERVERFIRST_REQUIRE_E2E").is_ok_and(|v| v == "1");
    ci.then_some(60)
}

#[test]
fn fuzz_targets_run_clean_for_a_bounded_time() {
    let Some(seconds) = seconds() else {
        return common::skipped(
            TEST,
            "fuzzing runs under CI=true, or with SERVERFIRST_FUZZ_SECONDS=N",
        );
    };
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        return common::tool_missing(
            TEST,
            "cargo-fuzz is not installed (cargo install cargo-fuzz)",
        );
    }
    let root = env!("CARGO_MANIFEST_DIR");
    for target in TARGETS {
        let scratch = tempfile::tempdir().unwrap();
        let seeds = format!("{root}/fuzz/corpus/{target}");
        let output = Command::new("cargo")
            .current_dir(root)
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", target])
            // New inputs go to the scratch corpus; the committed seeds are only read.
            .arg(scratch.path())
            .arg(&seeds)
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-rss_limit_mb=2048",
                "-print_final_stats=1",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "fuzz target {target} failed:\n{}",
            tail(&stderr, 60)
        );
        let runs = stderr
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .map_or("?".to_string(), |n| n.trim().to_string());
        let _ = writeln!(
            std::io::stderr(),
            "fuzz: {target}: {runs} runs in {seconds} s, 0 crashes"
        );
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
