//! What the FTP end-to-end tests share: pyftpdlib from `.ci/install-envoy` as the FTP server,
//! the file it serves, and curl as the passive-mode client. Needs the `common`, `e2e_pods`,
//! `envoy` and `netns` modules in the including test crate.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::e2e_pods::FTP_CONTROL_PORT;
use crate::netns::run_bounded;

/// The file every FTP server serves, and what it holds.
pub const FTP_FILE: &str = "hello.txt";
pub const FTP_FILE_TEXT: &str = "hello over passive FTP\n";
/// How long curl waits for a whole transfer before it calls it a stall (exit 28).
pub const FTP_MAX_SECS: u64 = 3;
/// curl's exit code for "operation timed out".
pub const CURL_TIMED_OUT: i32 = 28;

/// The Python of `.ci/install-envoy`'s FTP virtualenv, where pyftpdlib is.
pub fn ftp_python() -> PathBuf {
    crate::envoy::tools_dir().join("ftp-venv/bin/python")
}

/// pyftpdlib is installed, else `tool_missing` (a failure under CI) and `false`.
pub fn ftp_prerequisites(test: &str) -> bool {
    if ftp_python().is_file() {
        return true;
    }
    crate::common::tool_missing(
        test,
        &format!("no {} (run .ci/install-envoy)", ftp_python().display()),
    );
    false
}

/// Makes `dir/ftp-root` with [`FTP_FILE`] in it and returns it.
pub fn ftp_root(dir: &Path) -> PathBuf {
    let root = dir.join("ftp-root");
    std::fs::create_dir(&root).expect("ftp root");
    std::fs::write(root.join(FTP_FILE), FTP_FILE_TEXT).expect("file");
    root
}

/// pyftpdlib (`python` being the FTP virtualenv's Python run in the pod namespace) on the control
/// port, serving `root` to user `user`, password `secret`, with its passive ports from the first
/// to the last of `passive`.
pub fn ftp_server(mut python: Command, root: &Path, passive: &[u16]) -> Command {
    let (first, last) = (passive[0], passive[passive.len() - 1]);
    python.args(["-m", "pyftpdlib", "-i", "0.0.0.0"]);
    python.args(["-p", &FTP_CONTROL_PORT.to_string()]);
    python.arg("-d").arg(root);
    python.args(["-r", &format!("{first}-{last}")]);
    python.args(["-u", "user", "-P", "secret"]);
    python
}

/// `curl` (a command for the program, in the namespace and as the user it should run as)
/// fetching `path` from `host` over passive-mode FTP: PASV rather than EPSV, so that the reply
/// (227) shows in the log, and the data connection to `host` whatever address the reply names
/// (the server knows its own address, the client the Service's), as vsftpd's `pasv_address` or
/// curl's default since 7.74 do.
pub fn ftp_get(mut curl: Command, host: &str, path: &str) -> Output {
    curl.args(["-sS", "-v", "--max-time", &FTP_MAX_SECS.to_string()]);
    curl.args(["--disable-epsv", "--ftp-skip-pasv-ip"]);
    curl.arg(format!(
        "ftp://user:secret@{host}:{FTP_CONTROL_PORT}/{path}"
    ));
    run_bounded(curl)
}

/// The FTP replies curl logged (`< 227 Entering passive mode (...)`), in order.
pub fn replies(log: &str) -> Vec<&str> {
    log.lines()
        .filter_map(|line| line.strip_prefix("< "))
        .collect()
}

/// The data port of the first PASV reply in curl's log: `227 ... (h1,h2,h3,h4,p1,p2)`.
pub fn passive_port(log: &str) -> Option<u16> {
    let reply = replies(log).into_iter().find(|r| r.starts_with("227"))?;
    let inside = reply.split_once('(')?.1.split_once(')')?.0;
    let numbers: Vec<u16> = inside
        .split(',')
        .map(|n| n.trim().parse().ok())
        .collect::<Option<_>>()?;
    match numbers[..] {
        [_, _, _, _, high, low] => Some(high * 256 + low),
        _ => None,
    }
}
