//! End to end for real, as root: a client in Istio ambient mode sending mail through a
//! waypoint, the real Envoy configured with the listener istiod builds for the waypoint
//! (`listener_waypoint.go` `buildWaypointInternal`, modelled in `support/istio_waypoint.rs`
//! from the mail Service as written or as serverfirst's webhook returned it, and from the
//! waypoint's `istio.io/waypoint-for`).
//!
//! Every case makes its own network namespaces: the client, the waypoint (Envoy as uid 1337 and
//! the nat rule that hands the client's connections to its listener) and the mail server pod
//! (serverfirst's reference SMTP server), joined through the waypoint's namespace. The client
//! dials what its ztunnel would send to the waypoint (ztunnel `src/proxy/outbound.rs`
//! `build_request`): the Service's VIP when the Service uses the waypoint, the pod's address
//! when only the workload does. A ClusterIP Service's traffic never goes through a
//! workload-only waypoint ("Don't traverse waypoint if traffic was addressed to a service");
//! a client that addresses the pod (a headless Service, a StatefulSet's pod name) does.
//!
//! Cases: a service waypoint with the port declared TCP (as the webhook returned the Service):
//! the banner at once and a transaction with swaks; the same waypoint with the Service as
//! written (port undeclared): no banner within the wait; a workload waypoint, and a waypoint
//! for all traffic, with the port declared: no banner within the wait either, because with
//! workloads attached the HTTP inspector runs on every port. The waits are short; a client
//! that stays silent longer is closed by the waypoint after Envoy's default 15 s listener-filter
//! timeout (`downstream_pre_cx_timeout`), before any connection to the server.
//!
//! Needs what `e2e_meshed_client` needs: root, `ip`, `iptables-restore`, `ss`, `setpriv`,
//! `curl`, `swaks` and Envoy from `.ci/install-envoy`; without them the tests skip loudly, or
//! fail when `CI=true` or `SERVERFIRST_REQUIRE_E2E=1`.

mod common;
mod webhook_support;

#[path = "support/e2e_mail.rs"]
mod e2e_mail;
#[path = "support/e2e_pods.rs"]
mod e2e_pods;
#[path = "support/envoy.rs"]
mod envoy;
#[path = "support/istio_model.rs"]
mod istio_model;
#[path = "support/istio_outbound.rs"]
mod istio_outbound;
#[path = "support/istio_sidecar.rs"]
mod istio_sidecar;
#[path = "support/istio_waypoint.rs"]
mod istio_waypoint;
#[path = "support/netns.rs"]
mod netns;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use e2e_mail::{AT_ONCE_MS, BIN, STALL_WAIT_SECS, elapsed_ms, ms, prerequisites};
use e2e_pods::{SMTP_PORTS, SUBMISSION, admitted_service, mail_service};
use envoy::Envoy;
use istio_waypoint::{ENCAP_CLUSTER, WAYPOINT_PORT, Waypoint, WaypointFor, vip_chain_name};
use netns::{CLIENT_ADDR, Daemon, POD_ADDR, Peer, Sandbox, run_bounded, say, text};
use serde_json::{Value, json};

/// The mail Service's cluster IP: routed to the waypoint inside the client namespace only.
const VIP: &str = "10.96.0.10";
/// The mail server pod's namespace: the first peer of the waypoint's namespace.
const SERVER_PEER: u8 = 1;

/// The mail Service as the test's waypoint sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declared {
    /// As written: `name: submission`, no appProtocol (Istio: auto-detected).
    AsWritten,
    /// As serverfirst's webhook returned it (`appProtocol: tcp`).
    AsPatched,
}

impl Declared {
    fn service(self) -> Value {
        let written = mail_service();
        match self {
            Declared::AsWritten => written,
            Declared::AsPatched => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("runtime");
                let patched = runtime.block_on(admitted_service(&written));
                assert_eq!(
                    patched["spec"]["ports"][0]["appProtocol"], "tcp",
                    "the webhook did not declare {SUBMISSION}: {patched}"
                );
                patched
            }
        }
    }

    fn label(self) -> &'static str {
        match self {
            Declared::AsWritten => "Service as written (submission, no appProtocol)",
            Declared::AsPatched => "Service as patched (appProtocol: tcp)",
        }
    }
}

/// One test bed: the client, the waypoint and the mail server pod.
struct WaypointBed {
    // Dropped in this order: the processes first, then the namespaces they run in.
    server: Daemon,
    envoy: Envoy,
    // The mail server pod's namespace, kept until the server has stopped.
    _server_pod: Peer,
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    /// Where the client dials: the VIP or the pod's address.
    destination: String,
    /// The cluster of the filter chain the waypoint's matcher picks for the destination's TCP
    /// traffic; its `tcp_proxy` is named after it (`buildWaypointNetworkFilters`).
    cluster: String,
}

impl WaypointBed {
    fn start(tag: &str, waypoint_for: WaypointFor, service: &Value) -> WaypointBed {
        let sandbox = Sandbox::create(tag);
        let dir = tempfile::tempdir().expect("tempdir");
        let server_pod = sandbox.add_peer(SERVER_PEER);
        let pod_addr = server_pod.addr.clone();
        let waypoint = Waypoint::new(waypoint_for)
            .service(service, VIP)
            .expect("the waypoint model")
            .workload(&pod_addr);
        let hostname = istio_waypoint::service_hostname(service).expect("hostname");
        // ztunnel sends Service-addressed traffic to a waypoint that takes Services, and
        // pod-addressed traffic to one that takes workloads: the waypoint's matcher picks
        // `direct-tcp` (cluster `encap`) for the pod's address, the port's TCP chain for the VIP.
        let (destination, cluster) = if waypoint_for == WaypointFor::Workload {
            (pod_addr.clone(), ENCAP_CLUSTER.to_string())
        } else {
            let chain = vip_chain_name("tcp", &hostname, SUBMISSION);
            (VIP.to_string(), chain)
        };
        netns::checked(netns::ip(&[
            "-n",
            &sandbox.client,
            "route",
            "add",
            &format!("{destination}/32"),
            "via",
            POD_ADDR,
        ]));
        sandbox.load_nat(&istio_waypoint::capture_rules(CLIENT_ADDR));
        let bootstrap = istio_sidecar::bootstrap(
            &format!("waypoint~{POD_ADDR}~waypoint.mail~mail.svc.cluster.local"),
            vec![waypoint.listener()],
            waypoint.clusters(&pod_addr),
        );
        let envoy = Envoy::start(&sandbox, &bootstrap);
        let maildir = dir.path().join("Maildir");
        let smtp = e2e_mail::smtp_server(Sandbox::exec(&server_pod.namespace, BIN), &maildir);
        let mut server = Daemon::start("server", smtp, dir.path());
        netns::wait_listening_in(&server_pod.namespace, &SMTP_PORTS, || {
            server.assert_running()
        });
        WaypointBed {
            server,
            envoy,
            _server_pod: server_pod,
            sandbox,
            dir,
            destination,
            cluster,
        }
    }

    /// `serverfirst probe` from the client to the destination's port 587: a silent socket
    /// that waits [`STALL_WAIT_SECS`] for the banner, then says `QUIT`.
    fn probe(&self) -> (i32, Value) {
        let mut command = Sandbox::exec(&self.sandbox.client, BIN);
        command.args(["probe", &format!("{}:{SUBMISSION}", self.destination)]);
        command.args(["-o", "json", "--send-after"]);
        command.args([&format!("{STALL_WAIT_SECS}s"), "--timeout", "3s"]);
        let output = run_bounded(command);
        let report = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("probe JSON ({e}): {}\n{}", text(&output), self.logs()));
        (output.status.code().unwrap_or(-1), report)
    }

    fn swaks(&self, subject: &str) -> Output {
        let swaks = Sandbox::exec(&self.sandbox.client, "swaks");
        e2e_mail::swaks(swaks, &self.destination, SUBMISSION, subject)
    }

    fn maildir(&self) -> PathBuf {
        self.dir.path().join("Maildir")
    }

    /// The counters that say where a connection is in the waypoint: held by the listener
    /// filters (`downstream_pre_cx_active`), closed by the client while held, timed out
    /// there, passed to a filter chain; what the HTTP inspector found; the TCP chain's and
    /// its cluster's connections.
    fn counter_names(&self) -> [String; 9] {
        let listener = format!("listener.0.0.0.0_{WAYPOINT_PORT}");
        [
            format!("{listener}.downstream_pre_cx_active"),
            format!("{listener}.downstream_listener_filter_remote_close"),
            format!("{listener}.downstream_pre_cx_timeout"),
            format!("{listener}.downstream_cx_total"),
            format!("{listener}.no_filter_chain_match"),
            "http_inspector.http_not_found".to_string(),
            "http_inspector.http11_found".to_string(),
            format!("tcp.{}.downstream_cx_total", self.cluster),
            format!("cluster.{}.upstream_cx_total", self.cluster),
        ]
    }

    fn summary(&self, stats: &BTreeMap<String, u64>) -> String {
        let names = self.counter_names();
        envoy::counters(stats, &names.each_ref().map(String::as_str))
    }

    fn logs(&self) -> String {
        format!(
            "waypoint envoy: {}\n{}\nserver:\n{}{}\nwaypoint nat:\n{}",
            envoy::summary(&self.envoy.stats()),
            self.envoy.logs(),
            self.server.stdout(),
            self.server.stderr(),
            self.sandbox.nat_counters()
        )
    }
}

/// A counter of a `/stats` snapshot.
fn stat(stats: &BTreeMap<String, u64>, name: &str) -> u64 {
    stats.get(name).copied().unwrap_or(0)
}

/// The waypoint `waypoint_for` in front of the mail Service `declared`: the banner at once and
/// a delivered message for a service waypoint and the declared port, else no banner within the
/// probe's wait.
fn waypoint_case(test: &str, tag: &str, waypoint_for: WaypointFor, declared: Declared) {
    if !prerequisites(test, tag) {
        return;
    }
    let service = declared.service();
    let bed = WaypointBed::start(tag, waypoint_for, &service);
    let greets = waypoint_for == WaypointFor::Service && declared == Declared::AsPatched;
    let label = format!(
        "waypoint-for {}, {}, client to {}:{SUBMISSION}",
        waypoint_for.label(),
        declared.label(),
        bed.destination
    );
    let names = bed.counter_names();
    let [
        held,
        remote_close,
        timed_out,
        passed,
        no_chain,
        not_http,
        http11,
        chain,
        upstream,
    ] = names.each_ref().map(String::as_str);

    // The waypoint's counters half-way through the probe's silent wait.
    let ((code, report), during) = std::thread::scope(|scope| {
        let probe = scope.spawn(|| bed.probe());
        std::thread::sleep(Duration::from_millis(STALL_WAIT_SECS * 500));
        let during = bed.envoy.stats();
        (probe.join().expect("probe"), during)
    });
    let logs = || bed.logs();
    if greets {
        assert_eq!(code, 0, "{report}\n{}", logs());
        assert_eq!(report["outcome"], "banner", "{report}\n{}", logs());
        let first_byte = ms(&report, "first_byte_ms");
        assert!(first_byte < AT_ONCE_MS, "{report}");
        let started = Instant::now();
        let swaks = bed.swaks(&format!("{tag} through the waypoint"));
        let swaks_took = elapsed_ms(started);
        assert_eq!(
            swaks.status.code(),
            Some(0),
            "swaks: {}\n{}",
            text(&swaks),
            logs()
        );
        let records = e2e_mail::deliveries(|| bed.server.stdout(), 1);
        assert_eq!(records.len(), 1, "{records:?}\n{}", logs());
        assert_eq!(records[0]["rcpts"], json!(["bob@example.test"]));
        assert_eq!(e2e_mail::maildir_new(&bed.maildir()).len(), 1);
        let stats = bed.envoy.stats_reaching(&[chain], 2);
        let summary = bed.summary(&stats);
        // Both connections went straight to the port's TCP chain, the HTTP inspector off.
        assert_eq!(stat(&during, held), 0, "{}", bed.summary(&during));
        assert_eq!(stat(&stats, chain), 2, "{summary}");
        assert_eq!(stat(&stats, upstream), 2, "{summary}");
        assert_eq!(
            stat(&stats, not_http) + stat(&stats, http11),
            0,
            "{summary}"
        );
        say(&format!(
            "{label}: probe banner {first_byte:.3} ms after connecting; swaks exit 0 in \
             {swaks_took:.0} ms (process start included), delivered to {}",
            records[0]["rcpts"]
        ));
        say(&format!("{label}: waypoint Envoy: {summary}"));
    } else {
        assert_eq!(code, 1, "{report}\n{}", logs());
        assert_eq!(report["outcome"], "stall", "{report}\n{}", logs());
        let sent = ms(&report, "sent_ms");
        assert!(sent >= (STALL_WAIT_SECS * 1000) as f64, "{report}");
        // Half-way through the wait the connection sat in the waypoint's listener filters,
        // nothing had gone upstream yet, and Envoy had not given up on it.
        assert_eq!(stat(&during, held), 1, "{}", bed.summary(&during));
        assert_eq!(stat(&during, upstream), 0, "{}", bed.summary(&during));
        assert_eq!(stat(&during, timed_out), 0, "{}", bed.summary(&during));
        // The probe's QUIT is no HTTP: the application-protocol matcher's TCP side took it,
        // and only then did the waypoint connect to the server.
        let stats = bed.envoy.stats_reaching(&[upstream], 1);
        let summary = bed.summary(&stats);
        assert_eq!(stat(&stats, not_http), 1, "{summary}");
        assert_eq!(stat(&stats, chain), 1, "{summary}");
        assert_eq!(stat(&stats, upstream), 1, "{summary}");
        let records = e2e_mail::deliveries(|| bed.server.stdout(), 0);
        assert!(records.is_empty(), "{records:?}");
        say(&format!(
            "{label}: half-way through the probe's wait, waypoint Envoy: {}",
            bed.summary(&during)
        ));
        say(&format!(
            "{label}: no banner in {sent:.0} ms (probe exit 1); the 220 came {:.1} ms after \
             the probe spoke; waypoint Envoy: {summary}",
            ms(&report, "first_byte_after_send_ms")
        ));
    }
    let stats = bed.envoy.stats();
    assert_eq!(stat(&stats, remote_close), 0, "{}", bed.summary(&stats));
    assert_eq!(stat(&stats, no_chain), 0, "{}", bed.summary(&stats));
    assert!(stat(&stats, passed) >= 1, "{}", bed.summary(&stats));
    // The client's connections all reached the waypoint: nothing went around it.
    let redirected = netns::nat_packets(&bed.sandbox.nat_counters(), |rule| {
        rule.ends_with(&format!("-j REDIRECT --to-ports {WAYPOINT_PORT}"))
    });
    let connections = if greets { 2 } else { 1 };
    assert_eq!(redirected, connections, "{}", bed.sandbox.nat_counters());
}

/// A service waypoint does not inspect a port every one of its Services declares: the banner
/// arrives at once and swaks delivers.
#[test]
fn a_service_waypoint_greets_at_once_on_the_port_the_webhook_declared() {
    let test = "a_service_waypoint_greets_at_once_on_the_port_the_webhook_declared";
    waypoint_case(test, "wa", WaypointFor::Service, Declared::AsPatched);
}

/// The same waypoint with the Service as written sniffs the port: no banner until the client
/// speaks.
#[test]
fn a_service_waypoint_holds_the_banner_of_an_undeclared_port() {
    let test = "a_service_waypoint_holds_the_banner_of_an_undeclared_port";
    waypoint_case(test, "wb", WaypointFor::Service, Declared::AsWritten);
}

/// A workload waypoint inspects every port, declared or not: no banner until the client speaks.
#[test]
fn a_workload_waypoint_holds_the_banner_of_a_declared_port() {
    let test = "a_workload_waypoint_holds_the_banner_of_a_declared_port";
    waypoint_case(test, "wc", WaypointFor::Workload, Declared::AsPatched);
}

/// A waypoint for all traffic has the workload attached too: even the Service's VIP, its port
/// declared, gets no banner until the client speaks.
#[test]
fn an_all_traffic_waypoint_holds_the_banner_of_a_declared_port() {
    let test = "an_all_traffic_waypoint_holds_the_banner_of_a_declared_port";
    waypoint_case(test, "wd", WaypointFor::All, Declared::AsPatched);
}
