//! What the mail end-to-end tests share: their prerequisites, the wait they call a stall, the
//! reference SMTP server's command line and delivery records, the Maildir, and swaks. Needs the
//! `common`, `netns` and `envoy` modules in the including test crate.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::e2e_pods::SMTP_PORTS;
use crate::netns::run_bounded;

pub const BIN: &str = env!("CARGO_BIN_EXE_serverfirst");

/// How long a client waits silently for the banner (probe) or for any reply (swaks, smtplib).
pub const STALL_WAIT_SECS: u64 = 2;
/// The most a banner may take to count as "at once".
pub const AT_ONCE_MS: f64 = 100.0;

const TOOLS: [&str; 8] = [
    "ip",
    "iptables-restore",
    "iptables-save",
    "ss",
    "setpriv",
    "curl",
    "swaks",
    "python3",
];
const INSTALL_HINT: &str =
    "Debian: apt-get install iproute2 iptables util-linux curl swaks python3";

/// Root, the tools and a startable Envoy, else `tool_missing` (a failure under CI) and `false`.
pub fn prerequisites(test: &str, tag: &str) -> bool {
    let missing = crate::netns::missing_prerequisite(tag, &TOOLS, INSTALL_HINT)
        .or_else(crate::envoy::envoy_missing);
    if let Some(why) = missing {
        crate::common::tool_missing(test, &why);
        return false;
    }
    true
}

/// `smtp` (the reference SMTP server, `smtp` being `BIN` run in the pod namespace) on the SMTP
/// ports with a Maildir, logging each connection.
pub fn smtp_server(mut smtp: Command, maildir: &Path) -> Command {
    smtp.args(["--log-format", "json", "smtp", "--hostname", "mx.test"]);
    for port in SMTP_PORTS {
        smtp.args(["--listen", &format!("0.0.0.0:{port}")]);
    }
    smtp.arg("--maildir").arg(maildir);
    smtp.env("RUST_LOG", "serverfirst=debug");
    smtp
}

/// The delivery records in the SMTP server's stdout (from `stdout`), once `expected` are
/// there or five seconds have passed.
pub fn deliveries(stdout: impl Fn() -> String, expected: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let records: Vec<Value> = stdout()
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

/// The messages in the Maildir's `new`.
pub fn maildir_new(maildir: &Path) -> Vec<String> {
    match std::fs::read_dir(maildir.join("new")) {
        Ok(entries) => entries
            .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("message"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// One message from alice to bob with `swaks` (a command for the program, in the namespace
/// and as the user it should run as) to `server:port`.
pub fn swaks(mut command: Command, server: &str, port: u16, subject: &str) -> Output {
    command.args(["--server", server, "--port", &port.to_string()]);
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

pub fn ms(report: &Value, field: &str) -> f64 {
    report[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} in {report}"))
}

pub fn elapsed_ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}
