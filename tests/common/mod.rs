//! Helpers shared by the integration tests that run the serverfirst binary or external tools.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_serverfirst");

/// Says loudly that a test did not run, and why. Written straight to stderr: libtest hides what a
/// passing test prints through `eprintln!`.
pub fn skipped(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "\nSKIPPED: {test}: {why}\n");
}

/// A tool the test needs is missing: a failure when `CI=true` or `SERVERFIRST_REQUIRE_E2E=1`,
/// else a loud skip.
#[allow(dead_code)] // not every test crate uses it
pub fn tool_missing(test: &str, why: &str) {
    let required = std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("SERVERFIRST_REQUIRE_E2E").is_ok_and(|v| v == "1");
    if required {
        panic!("{test}: required tool missing (CI=true or SERVERFIRST_REQUIRE_E2E=1): {why}");
    }
    skipped(test, why);
}

/// The long options `serverfirst <subcommand> --help` lists, or `None` while the subcommand is
/// still a stub (no options of its own).
pub fn subcommand_options(subcommand: &str) -> Option<Vec<String>> {
    let output = Command::new(BIN)
        .args([subcommand, "--help"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "serverfirst {subcommand} --help failed"
    );
    let help = String::from_utf8(output.stdout).unwrap();
    let options: Vec<String> = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '<' || c == '[')
        .filter(|word| word.starts_with("--") && word.len() > 2)
        .filter(|word| !["--help", "--version", "--log-format"].contains(word))
        .map(str::to_string)
        .collect();
    (!options.is_empty()).then_some(options)
}

/// `a/b/../c` → `a/c`, resolved as text (as a browser resolves a relative link, or kustomize a
/// relative resource), without touching the file system: the target may not exist.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}
