//! The real Envoy as the sidecar of a test pod: run inside the pod's (or the client's) network
//! namespace as the proxy's uid/gid 1337 (what istio-iptables' `ISTIO_OUTPUT` keys on), from a
//! bootstrap in a directory that uid owns, with the admin interface on 127.0.0.1. Needs the
//! `netns` support module in the including test crate.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::istio_sidecar::ADMIN_PORT;
use crate::netns::{Daemon, Sandbox, on_path, run_bounded, text};

/// The uid and gid Istio's sidecar runs as.
pub const PROXY_UID: u32 = 1337;

/// Where `.ci/install-envoy` puts its tools: `$SERVERFIRST_TOOLS_DIR`, else
/// `/opt/serverfirst-tools`.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("SERVERFIRST_TOOLS_DIR")
        .map_or_else(|| PathBuf::from("/opt/serverfirst-tools"), PathBuf::from)
}

/// The Envoy binary: the tools directory's first, then the one on PATH.
pub fn envoy_binary() -> Option<PathBuf> {
    let installed = tools_dir().join("bin/envoy");
    if installed.is_file() {
        return Some(installed);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("envoy"))
        .find(|candidate| candidate.is_file())
}

/// Why Envoy cannot run here, or `None`: no binary, `--version` fails, or `setpriv` (which
/// drops to the proxy's uid) is missing.
pub fn envoy_missing() -> Option<String> {
    let hint = "run .ci/install-envoy";
    let Some(binary) = envoy_binary() else {
        return Some(format!(
            "no envoy in {}/bin or on PATH ({hint})",
            tools_dir().display()
        ));
    };
    if !on_path("setpriv") {
        return Some("missing setpriv (Debian: util-linux)".to_string());
    }
    let version = Command::new(&binary).arg("--version").output();
    match version {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!("{} --version: {}", binary.display(), text(&output))),
        Err(error) => Some(format!("{} --version: {error} ({hint})", binary.display())),
    }
}

/// A running Envoy in a namespace of the sandbox. Dropping it stops Envoy, then removes its
/// directory.
pub struct Envoy {
    daemon: Daemon,
    namespace: String,
    dir: tempfile::TempDir,
}

impl Envoy {
    /// Starts Envoy with `bootstrap` in `sandbox`'s pod namespace and waits until its admin
    /// interface says `LIVE`.
    pub fn start(sandbox: &Sandbox, bootstrap: &Value) -> Envoy {
        Envoy::start_in(&sandbox.pod, bootstrap)
    }

    /// Starts Envoy with `bootstrap` in `namespace` (the pod's or the client's).
    pub fn start_in(namespace: &str, bootstrap: &Value) -> Envoy {
        let binary = envoy_binary().expect("envoy binary (checked by envoy_missing)");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("bootstrap.json");
        let json = serde_json::to_vec_pretty(bootstrap).expect("bootstrap JSON");
        std::fs::write(&config, json).expect("write the bootstrap");
        for path in [dir.path(), config.as_path()] {
            std::os::unix::fs::chown(path, Some(PROXY_UID), Some(PROXY_UID)).expect("chown");
        }
        let mut command = Sandbox::exec(namespace, "setpriv");
        let id = PROXY_UID.to_string();
        command.args([
            &format!("--reuid={id}"),
            &format!("--regid={id}"),
            "--clear-groups",
            "--",
        ]);
        command.arg(&binary).arg("-c").arg(&config);
        // Several tests run an Envoy each at once: no shared memory for hot restart.
        command.args(["--disable-hot-restart", "--concurrency", "1"]);
        command.args(["--log-level", "warning"]);
        let daemon = Daemon::start("envoy", command, dir.path());
        let mut envoy = Envoy {
            daemon,
            namespace: namespace.to_string(),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            envoy.daemon.assert_running();
            if envoy
                .admin("/ready")
                .is_some_and(|body| body.trim() == "LIVE")
            {
                return envoy;
            }
            assert!(
                Instant::now() < deadline,
                "envoy not ready: {}",
                envoy.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET path` on the admin interface, from inside Envoy's namespace; `None` if it fails.
    pub fn admin(&self, path: &str) -> Option<String> {
        let mut command = Sandbox::exec(&self.namespace, "curl");
        command.args(["-sS", "--fail", "--max-time", "2"]);
        command.arg(format!("http://127.0.0.1:{ADMIN_PORT}{path}"));
        let output = run_bounded(command);
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Every counter and gauge of `/stats`, by name.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        let body = self.admin("/stats").expect("envoy admin /stats");
        body.lines()
            .filter_map(|line| line.split_once(": "))
            .filter_map(|(name, value)| Some((name.to_string(), value.parse().ok()?)))
            .collect()
    }

    /// `/stats` once the sum of the counters `names` reaches `at_least`, or after three seconds.
    pub fn stats_reaching(&self, names: &[&str], at_least: u64) -> BTreeMap<String, u64> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let stats = self.stats();
            let done: u64 = names.iter().filter_map(|n| stats.get(*n)).sum();
            if done >= at_least || Instant::now() > deadline {
                return stats;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn logs(&self) -> String {
        format!("{}{}", self.daemon.stdout(), self.daemon.stderr())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The counters of a `/stats` snapshot that show where connections went, for a report line.
pub fn counters(stats: &BTreeMap<String, u64>, names: &[&str]) -> String {
    names
        .iter()
        .map(|name| format!("{name}={}", stats.get(*name).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The non-zero listener counters and the upstream connection counts of a `/stats` snapshot:
/// where connections went, for a failure message.
pub fn summary(stats: &BTreeMap<String, u64>) -> String {
    stats
        .iter()
        .filter(|&(name, &value)| {
            value > 0
                && (name.starts_with("listener.0.0.0.0_") || name.ends_with(".upstream_cx_total"))
        })
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
}
