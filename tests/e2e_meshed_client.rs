//! End to end for real, as root: a meshed *client* sending mail through its own sidecar to the
//! mail Service, with the real Envoy on both sides, configured the way istiod configures them.
//!
//! Every case makes its own pair of network namespaces. In `client`: the nat rules istio-iptables
//! writes for a pod (outbound to 15001, the proxy's uid 1337 exempt), a route to the Service's
//! VIP (an address that exists only there), Envoy as uid 1337 with the outbound listeners and
//! clusters the outbound model builds from the Service object, its endpoint and the
//! DestinationRule for its host; the client application (`serverfirst probe`, swaks) runs under
//! another uid, so its connections are captured. In `pod`: the server pod's nat rules, its Envoy
//! with the `virtualInbound` Istio builds from the same Service (PERMISSIVE, terminating Istio
//! mTLS with a test CA's certificates) and the mail server.
//!
//! Cases: the Service as written (`name: submission`, no appProtocol) and as serverfirst's webhook
//! returned it, each with the server pod patched (port excluded, the client's sidecar sending
//! plaintext as a DestinationRule with `tls.mode: DISABLE` makes it) and with the server pod left
//! captured (`serverfirst.dev/skip`, Istio mTLS between the two sidecars); then auto mTLS to the
//! excluded port without and with the companion DestinationRule.
//!
//! FTP cases: the FTP manifest's Service (`ftp-control` 21, `pasv-start` 21100, `pasv-1` 21101)
//! in front of pyftpdlib, its pod as the webhook returned it (control port and passive range
//! excluded, the companion DestinationRule making the client send plaintext), and curl
//! downloading a file in passive mode through the VIP: as written (21 sniffed: no banner), with
//! only the control port declared (login and PASV work, the data connection is sniffed and the
//! RETR stalls) and as the webhook returned it (the download completes).
//!
//! Needs what `e2e_netns` needs: root, `ip`, `iptables-restore`, `ss`, `setpriv`, `curl`, `swaks`,
//! `python3` and Envoy and pyftpdlib from `.ci/install-envoy`; without them the tests skip loudly,
//! or fail when `CI=true` or `SERVERFIRST_REQUIRE_E2E=1`.

mod common;
mod webhook_support;

#[path = "support/e2e_ftp.rs"]
mod e2e_ftp;
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
#[path = "support/mesh_tls.rs"]
mod mesh_tls;
#[path = "support/netns.rs"]
mod netns;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use e2e_ftp::{
    CURL_TIMED_OUT, FTP_FILE, FTP_FILE_TEXT, ftp_prerequisites, ftp_python, ftp_root, ftp_server,
    passive_port, replies,
};
use e2e_mail::{AT_ONCE_MS, BIN, STALL_WAIT_SECS, elapsed_ms, ms, prerequisites};
use e2e_pods::{
    FTP_CONTROL_PORT, SMTP_PORTS, admit, admit_service, created_pod, manifest_ftp_pod,
    manifest_ftp_service,
};
use envoy::Envoy;
use istio_model::{IptablesArgs, pod_capture};
use istio_outbound::{Endpoint, OutboundSidecar, TLS_MODE_LABEL, VIRTUAL_OUTBOUND_PORT};
use istio_sidecar::{InboundSidecar, ServicePort, VIRTUAL_INBOUND_PORT};
use mesh_tls::{MeshCa, spiffe_id};
use netns::{CLIENT_ADDR, Daemon, POD_ADDR, Sandbox, run_bounded, say, text};
use serde_json::{Value, json};
use serverfirst::config::Config;
use serverfirst::server::Limits;
use webhook_support::TestServer;

const FIRST_BYTES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/e2e/first_bytes.py"
);

/// The mail Service's cluster IP: routed inside the client namespace only.
const VIP: &str = "10.96.0.10";
const SUBMISSION: u16 = 587;
/// The client application's uid and gid: anything but the proxy's 1337.
const APP_UID: u32 = 1000;

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// The mail server's Service as its chart writes it: the port named after its IANA service,
/// which tells Istio nothing (`ConvertProtocol`: auto-detected).
fn service_as_written() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": "mox", "namespace": "mail" },
        "spec": {
            "selector": { "app.kubernetes.io/name": "mox" },
            "ports": [{ "name": "submission", "port": SUBMISSION, "targetPort": SUBMISSION, "protocol": "TCP" }],
        }
    })
}

/// The Service as serverfirst's webhook (default configuration, over TLS) returns it.
fn service_as_patched() -> Value {
    let patched = webhook_service(&service_as_written());
    assert_eq!(
        patched["spec"]["ports"][0]["appProtocol"], "tcp",
        "the webhook did not declare 587: {patched}"
    );
    patched
}

/// `service` as serverfirst's webhook (default configuration, over TLS) returns it.
fn webhook_service(service: &Value) -> Value {
    block_on(async {
        let server = TestServer::start(Config::default(), Limits::default()).await;
        admit_service(&server, service).await
    })
}

/// Where the server pod stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerSide {
    /// Patched by serverfirst: the port is excluded from its sidecar's capture.
    Excluded,
    /// Opted out (`serverfirst.dev/skip`): every port captured, Istio mTLS on the wire.
    Captured,
}

/// The mail server pod as the webhook returned it, with the label Istio's injector adds to a
/// pod it gives a sidecar (auto mTLS keys on it).
fn server_pod(side: ServerSide) -> Value {
    let mut pod = created_pod();
    if side == ServerSide::Captured {
        pod["metadata"]["labels"]["serverfirst.dev/skip"] = json!("true");
    }
    webhook_pod_with_sidecar(&pod)
}

/// `pod` as the webhook (default configuration) returned it, with the label Istio's injector
/// adds.
fn webhook_pod_with_sidecar(pod: &Value) -> Value {
    let mut pod = block_on(async {
        let server = TestServer::start(Config::default(), Limits::default()).await;
        admit(&server, pod).await
    });
    pod["metadata"]["labels"][TLS_MODE_LABEL] = json!("istio");
    pod
}

fn capture_of(pod: &Value) -> IptablesArgs {
    pod_capture(pod)
        .expect("Istio accepts the pod")
        .expect("the pod is captured in REDIRECT mode")
}

/// What a case runs against: the Service istiod sees, the server pod and the DestinationRule
/// istiod finds for the Service's host.
struct Setup {
    service: Value,
    pod: Value,
    destination_rule: Option<Value>,
}

/// One test bed: both namespaces, both Envoys and the mail server.
struct MeshedClient {
    // Dropped in this order: the processes first, then the namespaces they run in.
    server: Option<Daemon>,
    client_envoy: Envoy,
    server_envoy: Envoy,
    outbound: OutboundSidecar,
    setup: Setup,
    sandbox: Sandbox,
    _ca: MeshCa,
    dir: tempfile::TempDir,
}

impl MeshedClient {
    fn start(tag: &str, setup: Setup) -> MeshedClient {
        let mut mesh = MeshedClient::with_sidecars(tag, setup);
        mesh.start_server(false);
        mesh.wait_listening(&SMTP_PORTS);
        mesh
    }

    /// Both namespaces with their nat rules and both Envoys, before any server runs.
    fn with_sidecars(tag: &str, setup: Setup) -> MeshedClient {
        let sandbox = Sandbox::create(tag);
        let dir = tempfile::tempdir().expect("tempdir");
        // The VIP exists only as a route in the client namespace; nat sends it to 15001.
        let vip = format!("{VIP}/32");
        netns::checked(netns::ip(&[
            "-n",
            &sandbox.client,
            "route",
            "add",
            &vip,
            "via",
            POD_ADDR,
        ]));
        // The client pod: injected with the mesh defaults, nothing excluded.
        let client_pod = json!({ "metadata": { "annotations": {} }, "spec": {} });
        let client_capture = capture_of(&client_pod);
        netns::load_nat_in(
            &sandbox.client,
            &client_capture.restore_input().expect("REDIRECT rules"),
        );
        sandbox.load_nat(&capture_of(&setup.pod).restore_input().expect("rules"));

        let ca = MeshCa::new();
        let server_id = spiffe_id("mail", "mox");
        let server_tls = ca.workload("server", &server_id);
        let client_tls = ca.workload("client", &spiffe_id("client", "app"));

        let ports = ServicePort::of_service(&setup.service).expect("Service ports");
        let inbound = InboundSidecar::new().service_ports(ports).mtls(server_tls);
        let server_bootstrap = istio_sidecar::bootstrap(
            &format!("sidecar~{POD_ADDR}~mox.mail~mail.svc.cluster.local"),
            vec![inbound.listener()],
            inbound.clusters(),
        );
        let server_envoy = Envoy::start(&sandbox, &server_bootstrap);

        let tls_mode = setup.pod["metadata"]["labels"][TLS_MODE_LABEL]
            .as_str()
            .map(str::to_string);
        let outbound = OutboundSidecar::for_service(&setup.service, VIP)
            .expect("outbound model")
            .endpoint(Endpoint {
                address: POD_ADDR.to_string(),
                tls_mode,
            })
            .destination_rule(setup.destination_rule.clone())
            .mtls(client_tls, &[&server_id]);
        let client_bootstrap = istio_sidecar::bootstrap(
            &format!("sidecar~{CLIENT_ADDR}~app.client~client.svc.cluster.local"),
            outbound.listeners(),
            outbound.clusters().expect("outbound clusters"),
        );
        let client_envoy = Envoy::start_in(&sandbox.client, &client_bootstrap);

        let mesh = MeshedClient {
            server: None,
            client_envoy,
            server_envoy,
            outbound,
            setup,
            sandbox,
            _ca: ca,
            dir,
        };
        let mut listening = Command::new("ip");
        listening.args(["netns", "exec", &mesh.sandbox.client, "ss", "-Hltn"]);
        let client_listening = text(&run_bounded(listening));
        assert!(
            client_listening.contains(&format!(":{VIRTUAL_OUTBOUND_PORT} ")),
            "{client_listening}"
        );
        mesh
    }

    fn start_server(&mut self, recorder: bool) {
        let command = if recorder {
            let mut python = self.sandbox.in_pod("python3");
            python.args([FIRST_BYTES, &SUBMISSION.to_string()]);
            python
        } else {
            e2e_mail::smtp_server(self.sandbox.in_pod(BIN), &self.maildir())
        };
        self.server = Some(Daemon::start("server", command, self.dir.path()));
    }

    fn wait_listening(&mut self, ports: &[u16]) {
        let server = &mut self.server;
        self.sandbox.wait_listening(ports, || {
            server.iter_mut().for_each(Daemon::assert_running);
        });
    }

    fn maildir(&self) -> PathBuf {
        self.dir.path().join("Maildir")
    }

    fn server_output(&self) -> String {
        self.server.as_ref().map(Daemon::stdout).unwrap_or_default()
    }

    /// `program` in the client namespace as the application's uid, so its connections are
    /// captured by the client's nat rules.
    fn as_app(&self, program: &str) -> Command {
        let mut command = self.sandbox.in_client("setpriv");
        let id = APP_UID.to_string();
        command.args([
            &format!("--reuid={id}"),
            &format!("--regid={id}"),
            "--clear-groups",
            "--",
            program,
        ]);
        command
    }

    /// `serverfirst probe VIP:587` from the client application: exit code and JSON report.
    fn probe(&self) -> (i32, Value) {
        let mut command = self.as_app(BIN);
        command.args(["probe", &format!("{VIP}:{SUBMISSION}"), "-o", "json"]);
        command.args([
            "--send-after",
            &format!("{STALL_WAIT_SECS}s"),
            "--timeout",
            "3s",
        ]);
        let output = run_bounded(command);
        let report = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("probe JSON ({e}): {}\n{}", text(&output), self.logs()));
        (output.status.code().unwrap_or(-1), report)
    }

    fn swaks(&self, subject: &str) -> Output {
        e2e_mail::swaks(self.as_app("swaks"), VIP, SUBMISSION, subject)
    }

    fn deliveries(&self, expected: usize) -> Vec<Value> {
        e2e_mail::deliveries(|| self.server_output(), expected)
    }

    fn maildir_new(&self) -> Vec<String> {
        e2e_mail::maildir_new(&self.maildir())
    }

    /// The client Envoy's counters for the Service port's listener and cluster, once the
    /// connections `done` (closed while held, or passed on) reach `at_least`.
    fn client_counters(&self, at_least: u64) -> BTreeMap<String, u64> {
        let names = self.client_counter_names();
        self.client_stats_reaching(&[&names[1], &names[2]], at_least)
    }

    /// The client Envoy's `/stats` once the sum of its counters `names` reaches `at_least`, or
    /// after three seconds.
    fn client_stats_reaching(&self, names: &[&str], at_least: u64) -> BTreeMap<String, u64> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let stats = self.client_envoy.stats();
            let done = names.iter().map(|n| stat(&stats, n)).sum::<u64>();
            if done >= at_least || Instant::now() > deadline {
                return stats;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where a connection is in the client's Envoy: taken from 15001, held by the port
    /// listener's filters (`downstream_pre_cx_active`, then `..._remote_close` when the client
    /// gave up), passed to a filter chain (`downstream_cx_total`), connected upstream, TLS.
    fn client_counter_names(&self) -> Vec<String> {
        self.port_counter_names(SUBMISSION)
    }

    /// [`Self::client_counter_names`] for Service port `port`.
    fn port_counter_names(&self, port: u16) -> Vec<String> {
        let listener = format!("listener.{}", self.outbound.listener_name(port));
        let cluster = format!("cluster.{}", self.outbound.cluster_name(port));
        vec![
            format!("{listener}.downstream_pre_cx_active"),
            format!("{listener}.downstream_listener_filter_remote_close"),
            format!("{listener}.downstream_cx_total"),
            format!("{cluster}.upstream_cx_total"),
            format!("{cluster}.ssl.handshake"),
            format!("{cluster}.ssl.connection_error"),
            format!("{cluster}.upstream_cx_destroy_remote"),
        ]
    }

    /// New connections (nat sees the first packet of each) that the client namespace's
    /// `ISTIO_OUTPUT` sent to the proxy, and that it let out as the proxy's own.
    fn client_nat(&self) -> (u64, u64) {
        let counters = netns::nat_counters_in(&self.sandbox.client);
        let packets = |rule: &str| -> u64 {
            counters
                .lines()
                .filter_map(|line| line.strip_prefix('['))
                .filter_map(|line| line.split_once("] "))
                .filter(|(_, r)| *r == rule)
                .filter_map(|(counts, _)| counts.split_once(':')?.0.parse::<u64>().ok())
                .sum()
        };
        let proxy_uid = envoy::PROXY_UID;
        (
            packets("-A ISTIO_OUTPUT -j ISTIO_REDIRECT"),
            packets(&format!(
                "-A ISTIO_OUTPUT -m owner --uid-owner {proxy_uid} -j RETURN"
            )),
        )
    }

    fn client_summary(&self, stats: &BTreeMap<String, u64>) -> String {
        let names = self.client_counter_names();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        envoy::counters(stats, &names)
    }

    fn server_summary(&self) -> String {
        let stats = self.server_envoy.stats();
        let listener = format!("listener.0.0.0.0_{VIRTUAL_INBOUND_PORT}");
        envoy::counters(
            &stats,
            &[
                &format!("{listener}.downstream_cx_total"),
                &format!("{listener}.ssl.handshake"),
                &format!("cluster.inbound|{SUBMISSION}||.upstream_cx_total"),
            ],
        )
    }

    fn logs(&self) -> String {
        let nonzero = |envoy: &Envoy| {
            let stats = envoy.stats();
            stats
                .iter()
                .filter(|&(n, &v)| {
                    v > 0 && (n.starts_with("listener.") || n.starts_with("cluster.outbound"))
                })
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut logs = format!(
            "client envoy: {}\n{}\nserver envoy: {}\n{}\n",
            nonzero(&self.client_envoy),
            self.client_envoy.logs(),
            nonzero(&self.server_envoy),
            self.server_envoy.logs()
        );
        if let Some(server) = &self.server {
            logs.push_str(&format!(
                "server:\n{}{}\n",
                server.stdout(),
                server.stderr()
            ));
        }
        logs
    }
}

/// A counter of a `/stats` snapshot; Envoy lists the TLS ones only for TLS clusters.
fn stat(stats: &BTreeMap<String, u64>, name: &str) -> u64 {
    stats.get(name).copied().unwrap_or(0)
}

/// The DestinationRule that disables mTLS to the excluded port, as the companion controller's
/// pure decision (shared with `check`/`render --companions`) writes it for the Service and the
/// patched pod behind it.
fn companion_rule(service: &Value, pod: &Value) -> Value {
    let rules = companions::rules(service, pod, POD_ADDR);
    assert_eq!(rules.len(), 1, "{rules:?}");
    rules[0].clone()
}

mod companions {
    //! The companion controller's pure decision on the objects of a case: the Service, the
    //! EndpointSlice Kubernetes publishes for it (the pod behind the port, the number the port
    //! resolves to on it) and the ports the webhook recorded as excluded on that pod.
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::{Value, json};
    use serverfirst::companions::desired::{self, ServiceRef, Subject};
    use serverfirst::mesh::RECORD_KEY;
    use serverfirst::ports::{PortSet, parse_port_list};

    /// The server pod as the API server names it once created from its `generateName`.
    const POD_NAME: &str = "mox-7c9d5b8f6-x2k4q";

    pub fn rules(service: &Value, pod: &Value, pod_addr: &str) -> Vec<Value> {
        let record = pod["metadata"]["annotations"][RECORD_KEY]
            .as_str()
            .unwrap_or_default();
        let excluded: PortSet = parse_port_list(record)
            .expect("the webhook's port record")
            .into_iter()
            .collect();
        let (name, namespace) = (
            service["metadata"]["name"].as_str().expect("a name"),
            service["metadata"]["namespace"]
                .as_str()
                .expect("a namespace"),
        );
        // The endpoints controller names each slice port like the Service port and gives the
        // number the targetPort resolves to on the pod (numeric targetPorts here).
        let ports: Vec<Value> = service["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| json!({"name": p["name"], "port": p["targetPort"], "protocol": "TCP"}))
            .collect();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-x7k2p"), "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [pod_addr], "conditions": {"ready": true},
                           "targetRef": {"kind": "Pod", "name": POD_NAME, "namespace": namespace}}],
            "ports": ports,
        }))
        .expect("an EndpointSlice");
        let typed: Service = serde_json::from_value(service.clone()).expect("a Service");
        let ports = desired::service_ports(&typed, [&slice], |pod| match pod == POD_NAME {
            true => excluded.clone(),
            false => PortSet::new(),
        });
        let subject = Subject {
            service: ServiceRef { namespace, name },
            uid: "uid-svc-mox",
            scope: desired::Scope::Managed,
        };
        desired::desired(desired::DEFAULT_API_VERSION, subject, &ports, &[])
            .apply
            .into_iter()
            .collect()
    }
}

/// A case of the meshed client against the Service as written (`patched: false`) or as
/// patched, with the server pod on `side`: stalls as written, greets at once and delivers mail
/// as patched.
fn meshed_client_case(test: &str, tag: &str, side: ServerSide, patched: bool) {
    if !prerequisites(test, tag) {
        return;
    }
    let service = if patched {
        service_as_patched()
    } else {
        service_as_written()
    };
    let pod = server_pod(side);
    let capture = capture_of(&pod);
    assert_eq!(
        capture.captured(SUBMISSION),
        side == ServerSide::Captured,
        "{capture:?}"
    );
    // Plaintext to the excluded port needs the companion rule; mTLS needs nothing.
    let destination_rule = (side == ServerSide::Excluded).then(|| companion_rule(&service, &pod));
    let setup = Setup {
        service: service.clone(),
        pod,
        destination_rule,
    };
    let mesh = MeshedClient::start(tag, setup);
    let expected_mode = (side == ServerSide::Excluded).then(|| "DISABLE".to_string());
    assert_eq!(mesh.outbound.tls_mode(SUBMISSION), expected_mode);
    let label = format!(
        "Service {}, server pod {}",
        if patched {
            "as patched (appProtocol: tcp)"
        } else {
            "as written (submission, no appProtocol)"
        },
        match side {
            ServerSide::Excluded => "patched (587 excluded), client sends plaintext (DR DISABLE)",
            ServerSide::Captured => "captured (serverfirst.dev/skip), Istio mTLS",
        }
    );

    let listener = format!("listener.{}", mesh.outbound.listener_name(SUBMISSION));
    let cluster = format!("cluster.{}", mesh.outbound.cluster_name(SUBMISSION));
    // Both Envoys' counters half-way through the probe's silent wait: where the connection is.
    let ((code, report), during, server_during) = std::thread::scope(|scope| {
        let probe = scope.spawn(|| mesh.probe());
        std::thread::sleep(Duration::from_millis(STALL_WAIT_SECS * 500));
        let during = mesh.client_envoy.stats();
        let server_during = mesh.server_summary();
        (probe.join().expect("probe"), during, server_during)
    });
    let held = stat(&during, &format!("{listener}.downstream_pre_cx_active"));
    let upstream_during = stat(&during, &format!("{cluster}.upstream_cx_total"));
    let started = Instant::now();
    let swaks = mesh.swaks(&format!("{tag} through the client's sidecar"));
    let swaks_took = elapsed_ms(started);
    let stats = mesh.client_counters(2);
    let counters = mesh.client_summary(&stats);
    let logs = || mesh.logs();
    if patched {
        assert_eq!(code, 0, "{report}\n{}", logs());
        assert_eq!(report["outcome"], "banner", "{report}");
        let first_byte = ms(&report, "first_byte_ms");
        assert!(first_byte < AT_ONCE_MS, "{report}");
        assert_eq!(
            swaks.status.code(),
            Some(0),
            "swaks: {}\n{}",
            text(&swaks),
            logs()
        );
        let records = mesh.deliveries(1);
        assert_eq!(records.len(), 1, "{records:?}\n{}", logs());
        assert_eq!(records[0]["rcpts"], json!(["bob@example.test"]));
        assert_eq!(mesh.maildir_new().len(), 1);
        // Nothing was held: both connections went straight to a filter chain and upstream.
        assert_eq!(held, 0, "{}", mesh.client_summary(&during));
        assert_eq!(
            stat(&stats, &format!("{listener}.downstream_cx_total")),
            2,
            "{counters}"
        );
        assert_eq!(
            stat(&stats, &format!("{cluster}.upstream_cx_total")),
            2,
            "{counters}"
        );
        say(&format!(
            "{label}: probe banner {first_byte:.3} ms after connecting; swaks exit 0 in \
             {swaks_took:.0} ms (process start included), delivered to {}",
            records[0]["rcpts"]
        ));
    } else {
        assert_eq!(code, 1, "{report}\n{}", logs());
        assert_eq!(report["outcome"], "stall", "{report}\n{}", logs());
        let sent = ms(&report, "sent_ms");
        assert!(sent >= (STALL_WAIT_SECS * 1000) as f64, "{report}");
        // swaks: 21 is "error reading the initial banner" (here: timed out waiting for it).
        assert_eq!(swaks.status.code(), Some(21), "swaks: {}", text(&swaks));
        assert!(mesh.deliveries(0).is_empty(), "no mail can have arrived");
        // Half-way through the wait the probe's connection sat in the port listener's HTTP
        // inspector, and nothing had gone upstream: the client's own sidecar held it.
        assert_eq!(held, 1, "{}", mesh.client_summary(&during));
        assert_eq!(upstream_during, 0, "{}", mesh.client_summary(&during));
        say(&format!(
            "{label}: half-way through the probe's wait, client Envoy: {}; server Envoy: \
             {server_during}",
            mesh.client_summary(&during)
        ));
        say(&format!(
            "{label}: no banner in {sent:.0} ms (probe exit 1, the 220 came {:.1} ms after it \
             spoke); swaks exit 21 after {swaks_took:.0} ms",
            ms(&report, "first_byte_after_send_ms")
        ));
    }
    let tls_handshakes = stat(&stats, &format!("{cluster}.ssl.handshake"));
    match side {
        ServerSide::Excluded => assert_eq!(tls_handshakes, 0, "{counters}"),
        ServerSide::Captured => assert!(tls_handshakes >= 1, "{counters}"),
    }
    // The application's two connections went to 15001, the proxy's own went out as they were.
    let (redirected, proxy_own) = mesh.client_nat();
    assert_eq!(
        redirected,
        2,
        "{}",
        netns::nat_counters_in(&mesh.sandbox.client)
    );
    assert_eq!(
        proxy_own,
        2,
        "{}",
        netns::nat_counters_in(&mesh.sandbox.client)
    );
    say(&format!(
        "{label}: client nat: {redirected} connections of uid {APP_UID} redirected to \
         {VIRTUAL_OUTBOUND_PORT}, {proxy_own} of the proxy's let out; client Envoy: {counters}"
    ));
    say(&format!("{label}: server Envoy: {}", mesh.server_summary()));
}

#[test]
fn service_as_written_stalls_a_meshed_client_of_an_excluded_port() {
    let test = "service_as_written_stalls_a_meshed_client_of_an_excluded_port";
    meshed_client_case(test, "ma", ServerSide::Excluded, false);
}

#[test]
fn service_as_patched_greets_a_meshed_client_of_an_excluded_port() {
    let test = "service_as_patched_greets_a_meshed_client_of_an_excluded_port";
    meshed_client_case(test, "mb", ServerSide::Excluded, true);
}

#[test]
fn service_as_written_stalls_a_meshed_client_over_mtls() {
    let test = "service_as_written_stalls_a_meshed_client_over_mtls";
    meshed_client_case(test, "mc", ServerSide::Captured, false);
}

#[test]
fn service_as_patched_greets_a_meshed_client_over_mtls() {
    let test = "service_as_patched_greets_a_meshed_client_over_mtls";
    meshed_client_case(test, "md", ServerSide::Captured, true);
}

/// The Service as patched and the server pod patched (587 excluded), with the companion rule
/// the companions core derives for them or without any rule; the client's Envoy does auto mTLS
/// to the pod, which has a sidecar.
fn excluded_port_mesh(tag: &str, with_companion: bool) -> MeshedClient {
    let service = service_as_patched();
    let pod = server_pod(ServerSide::Excluded);
    assert!(!capture_of(&pod).captured(SUBMISSION));
    let destination_rule = with_companion.then(|| companion_rule(&service, &pod));
    let setup = Setup {
        service,
        pod,
        destination_rule,
    };
    MeshedClient::start(tag, setup)
}

/// Auto mTLS to the excluded port, without the companion rule: the client's Envoy sends a TLS
/// ClientHello to a mail server that greets in plaintext, the handshake fails and the client
/// application sees its connection closed without a banner.
#[test]
fn auto_mtls_to_an_excluded_port_fails_without_the_companion_rule() {
    let test = "auto_mtls_to_an_excluded_port_fails_without_the_companion_rule";
    if !prerequisites(test, "me") {
        return;
    }
    let mut mesh = excluded_port_mesh("me", false);
    assert_eq!(mesh.outbound.tls_mode(SUBMISSION), None);

    let (code, report) = mesh.probe();
    let swaks = mesh.swaks("auto mTLS to the excluded port");
    let stats = mesh.client_counters(2);
    let counters = mesh.client_summary(&stats);
    let cluster = format!("cluster.{}", mesh.outbound.cluster_name(SUBMISSION));
    assert_ne!(code, 0, "{report}\n{}", mesh.logs());
    assert_ne!(report["outcome"], "banner", "{report}");
    assert!(report["banner"].is_null(), "{report}");
    assert_ne!(swaks.status.code(), Some(0), "swaks: {}", text(&swaks));
    assert!(mesh.deliveries(0).is_empty(), "no mail can have arrived");
    assert!(
        stat(&stats, &format!("{cluster}.ssl.connection_error")) >= 2,
        "{counters}\n{}",
        mesh.logs()
    );
    let swaks_said = text(&swaks);
    say(&format!(
        "auto mTLS, no DestinationRule, 587 excluded: probe exit {code}, outcome {} (connected in \
         {:.1} ms, then closed without a byte); swaks exit {:?}: {}",
        report["outcome"],
        ms(&report, "connect_ms"),
        swaks.status.code(),
        swaks_said
            .lines()
            .filter(|l| l.starts_with("***") || l.starts_with("<"))
            .collect::<Vec<_>>()
            .join(" | ")
    ));
    say(&format!(
        "auto mTLS, no DestinationRule: client Envoy: {counters}"
    ));

    // What the mail server's port receives first: the recorder in the server's place.
    mesh.server = None;
    mesh.start_server(true);
    mesh.wait_listening(&[SUBMISSION]);
    let (code, report) = mesh.probe();
    assert_ne!(code, 0, "{report}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let record: Value = loop {
        if let Some(line) = mesh.server_output().lines().next() {
            break serde_json::from_str(line).expect("recorder JSON");
        }
        assert!(
            Instant::now() < deadline,
            "no connection recorded\n{}",
            mesh.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(record["client_hello"], true, "{record}");
    assert_eq!(
        record["alpn"],
        json!(["istio-peer-exchange", "istio"]),
        "{record}"
    );
    assert_eq!(
        record["sni"],
        mesh.outbound.mtls_sni(SUBMISSION),
        "{record}"
    );
    assert!(
        record["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with(&format!("{CLIENT_ADDR}:"))),
        "{record}"
    );
    say(&format!(
        "auto mTLS, no DestinationRule: the server's port received first {} (a TLS ClientHello, \
         ALPN {}, SNI {})",
        record["first_bytes"], record["alpn"], record["sni"]
    ));
}

/// The same, with the DestinationRule the companions core derives: plaintext to the excluded
/// port, the banner at once and the mail delivered.
#[test]
fn the_companion_rule_turns_auto_mtls_off_for_the_excluded_port() {
    let test = "the_companion_rule_turns_auto_mtls_off_for_the_excluded_port";
    if !prerequisites(test, "mf") {
        return;
    }
    let mesh = excluded_port_mesh("mf", true);
    let rule = mesh
        .setup
        .destination_rule
        .clone()
        .expect("the companion rule");
    assert_eq!(rule["metadata"]["name"], "mox-serverfirst", "{rule}");
    assert_eq!(rule["spec"]["host"], "mox", "{rule}");
    assert_eq!(
        mesh.outbound.tls_mode(SUBMISSION).as_deref(),
        Some("DISABLE")
    );

    let (code, report) = mesh.probe();
    assert_eq!(code, 0, "{report}\n{}", mesh.logs());
    let first_byte = ms(&report, "first_byte_ms");
    assert!(first_byte < AT_ONCE_MS, "{report}");
    let swaks = mesh.swaks("plaintext to the excluded port");
    assert_eq!(swaks.status.code(), Some(0), "swaks: {}", text(&swaks));
    assert_eq!(mesh.deliveries(1).len(), 1, "{}", mesh.logs());
    let stats = mesh.client_counters(2);
    let counters = mesh.client_summary(&stats);
    let cluster = format!("cluster.{}", mesh.outbound.cluster_name(SUBMISSION));
    assert_eq!(
        stat(&stats, &format!("{cluster}.upstream_cx_total")),
        2,
        "{counters}"
    );
    assert_eq!(
        stat(&stats, &format!("{cluster}.ssl.handshake")),
        0,
        "{counters}"
    );
    say(&format!(
        "companion DestinationRule {}: probe banner {first_byte:.3} ms, swaks exit 0, delivered",
        rule["spec"]
    ));
    say(&format!(
        "companion DestinationRule: client Envoy: {counters}"
    ));
}

/// The FTP Service a case's client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FtpService {
    /// As the public manifest has it: nothing declared, every port sniffed.
    AsWritten,
    /// With `appProtocol: tcp` on the control port alone.
    ControlOnly,
    /// As serverfirst's webhook returned it.
    AsPatched,
}

impl FtpService {
    fn object(self) -> Value {
        let written = manifest_ftp_service();
        match self {
            FtpService::AsWritten => written,
            FtpService::ControlOnly => {
                let mut service = written;
                let ports = service["spec"]["ports"].as_array_mut().expect("ports");
                let control = ports
                    .iter_mut()
                    .find(|p| p["port"] == FTP_CONTROL_PORT)
                    .expect("the control port");
                control["appProtocol"] = json!("tcp");
                service
            }
            FtpService::AsPatched => webhook_service(&written),
        }
    }

    fn label(self) -> &'static str {
        match self {
            FtpService::AsWritten => "FTP Service as written (ftp-control, pasv-start, pasv-1)",
            FtpService::ControlOnly => "FTP Service with appProtocol tcp on 21 only",
            FtpService::AsPatched => "FTP Service as the webhook returned it",
        }
    }
}

/// The Service ports of `service` other than the control port: the passive ports.
fn passive_ports(service: &Value) -> Vec<u16> {
    let ports = service["spec"]["ports"].as_array().expect("ports");
    ports
        .iter()
        .filter_map(|p| p["port"].as_u64())
        .map(|p| u16::try_from(p).expect("port"))
        .filter(|&p| p != FTP_CONTROL_PORT)
        .collect()
}

impl MeshedClient {
    /// pyftpdlib in the server's place, handing out the passive ports `passive`.
    fn start_ftp_server(&mut self, passive: &[u16]) {
        let root = ftp_root(self.dir.path());
        let python = self.sandbox.in_pod(&ftp_python().to_string_lossy());
        let command = ftp_server(python, &root, passive);
        self.server = Some(Daemon::start("ftpd", command, self.dir.path()));
        self.wait_listening(&[FTP_CONTROL_PORT]);
    }

    /// curl, as the client application, downloading `path` in passive mode from the VIP. Its
    /// data connection goes to the VIP too: istiod binds a TCP or auto-detected Service port's
    /// listener to the VIP (`pilot/pkg/networking/core/listener.go`,
    /// `buildSidecarOutboundListener`), so one to the pod address of the 227 reply would take
    /// `virtualOutbound`'s passthrough instead, as it does in a cluster.
    fn ftp_get(&self, path: &str) -> Output {
        e2e_ftp::ftp_get(self.as_app("curl"), VIP, path)
    }

    /// For each of `ports`, the connections its listener's filters held until the client gave
    /// up, passed to a filter chain, and connected upstream: for a report line.
    fn ports_summary(&self, stats: &BTreeMap<String, u64>, ports: &[u16]) -> String {
        let names: Vec<String> = ports
            .iter()
            .flat_map(|&port| {
                self.port_counter_names(port)
                    .drain(1..4)
                    .collect::<Vec<_>>()
            })
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        envoy::counters(stats, &names)
    }
}

/// curl downloads a file through its own sidecar from the FTP Service `variant`, the server pod
/// as the webhook returned it: stalls as written (no banner) and with only 21 declared (the
/// RETR), completes as patched.
fn meshed_ftp_case(test: &str, tag: &str, variant: FtpService) {
    if !prerequisites(test, tag) || !ftp_prerequisites(test) {
        return;
    }
    let service = variant.object();
    let passive = passive_ports(&service);
    assert_eq!(passive, [21100, 21101], "{service}");
    let pod = webhook_pod_with_sidecar(&manifest_ftp_pod());
    let capture = capture_of(&pod);
    for port in std::iter::once(FTP_CONTROL_PORT).chain(passive.iter().copied()) {
        assert!(!capture.captured(port), "server pod: {port}: {capture:?}");
    }
    let setup = Setup {
        destination_rule: Some(companion_rule(&service, &pod)),
        service: service.clone(),
        pod,
    };
    let mut mesh = MeshedClient::with_sidecars(tag, setup);
    for port in std::iter::once(FTP_CONTROL_PORT).chain(passive.iter().copied()) {
        assert_eq!(mesh.outbound.tls_mode(port).as_deref(), Some("DISABLE"));
    }
    mesh.start_ftp_server(&passive);

    let started = Instant::now();
    let download = mesh.ftp_get(FTP_FILE);
    let took = elapsed_ms(started);
    let log = text(&download);
    let said = replies(&log);
    let code = download.status.code();
    let label = variant.label();
    let ports: Vec<u16> = std::iter::once(FTP_CONTROL_PORT)
        .chain(passive.iter().copied())
        .collect();
    let names = |port: u16| mesh.port_counter_names(port);
    // [pre_cx_active, listener_filter_remote_close, downstream_cx_total, upstream_cx_total, ..]
    let control = names(FTP_CONTROL_PORT);
    let stat_of = |stats: &BTreeMap<String, u64>, index: usize| -> u64 {
        passive.iter().map(|&p| stat(stats, &names(p)[index])).sum()
    };
    let (redirected, _) = mesh.client_nat();
    let logs = || mesh.logs();
    match variant {
        FtpService::AsWritten => {
            assert_eq!(code, Some(CURL_TIMED_OUT), "{log}\n{}", logs());
            assert!(said.is_empty(), "the banner arrived: {log}");
            let stats = mesh.client_stats_reaching(&[&control[1]], 1);
            let summary = mesh.ports_summary(&stats, &ports);
            // The control connection sat in the port listener's HTTP inspector until curl gave up.
            assert_eq!(stat(&stats, &control[1]), 1, "{summary}");
            assert_eq!(stat(&stats, &control[3]), 0, "{summary}");
            assert_eq!(
                redirected,
                1,
                "{}",
                netns::nat_counters_in(&mesh.sandbox.client)
            );
            say(&format!(
                "{label}: curl exit {} after {took:.0} ms, no banner (no reply at all); client \
                 Envoy: {summary}",
                CURL_TIMED_OUT
            ));
        }
        FtpService::ControlOnly => {
            assert_eq!(code, Some(CURL_TIMED_OUT), "{log}\n{}", logs());
            for reply in ["220", "230", "227"] {
                assert!(
                    said.iter().any(|r| r.starts_with(reply)),
                    "no {reply}: {log}"
                );
            }
            // pyftpdlib answers the RETR with 150 and waits for the data connection to arrive.
            assert!(
                !said.iter().any(|r| r.starts_with("226")),
                "the transfer completed: {log}"
            );
            assert!(download.stdout.is_empty(), "{log}");
            let data_port = passive_port(&log).expect("a PASV reply with a port");
            assert!(passive.contains(&data_port), "{data_port}: {log}");
            let data = names(data_port);
            let stats = mesh.client_stats_reaching(&[&data[1]], 1);
            let summary = mesh.ports_summary(&stats, &ports);
            // Login on 21 at once; the data connection held by the HTTP inspector, never upstream.
            assert_eq!(stat(&stats, &control[3]), 1, "{summary}");
            assert_eq!(stat(&stats, &data[1]), 1, "{summary}");
            assert_eq!(stat_of(&stats, 3), 0, "{summary}");
            assert_eq!(
                redirected,
                2,
                "{}",
                netns::nat_counters_in(&mesh.sandbox.client)
            );
            say(&format!(
                "{label}: curl exit {CURL_TIMED_OUT} after {took:.0} ms; replies: {}; no byte of \
                 the file came (the data connection to {data_port} held by the client's \
                 sidecar); client Envoy: {summary}",
                said.join(" | ")
            ));
        }
        FtpService::AsPatched => {
            assert_eq!(code, Some(0), "RETR through {service}:\n{log}\n{}", logs());
            assert_eq!(String::from_utf8_lossy(&download.stdout), FTP_FILE_TEXT);
            assert!(said.iter().any(|r| r.starts_with("226")), "{log}");
            let data_port = passive_port(&log).expect("a PASV reply with a port");
            let stats = mesh.client_stats_reaching(&[&names(data_port)[3]], 1);
            let summary = mesh.ports_summary(&stats, &ports);
            // Both connections went straight to a TCP chain and upstream, nothing was held.
            assert_eq!(stat(&stats, &control[3]), 1, "{summary}");
            assert_eq!(stat_of(&stats, 3), 1, "{summary}");
            assert_eq!(stat_of(&stats, 1), 0, "{summary}");
            assert_eq!(
                redirected,
                2,
                "{}",
                netns::nat_counters_in(&mesh.sandbox.client)
            );
            for port in service["spec"]["ports"].as_array().expect("ports") {
                assert_eq!(port["appProtocol"], "tcp", "{service}");
            }
            say(&format!(
                "{label} (appProtocol tcp on {}): curl exit 0 in {took:.0} ms (process start \
                 included), {:?} downloaded; replies: {}; client Envoy: {summary}",
                ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                FTP_FILE_TEXT.trim_end(),
                said.join(" | ")
            ));
        }
    }
}

#[test]
fn ftp_service_as_written_stalls_a_meshed_client_before_the_banner() {
    let test = "ftp_service_as_written_stalls_a_meshed_client_before_the_banner";
    meshed_ftp_case(test, "fa", FtpService::AsWritten);
}

#[test]
fn ftp_service_with_only_the_control_port_declared_stalls_the_retr() {
    let test = "ftp_service_with_only_the_control_port_declared_stalls_the_retr";
    meshed_ftp_case(test, "fb", FtpService::ControlOnly);
}

#[test]
fn ftp_service_as_patched_lets_a_meshed_client_download() {
    let test = "ftp_service_as_patched_lets_a_meshed_client_download";
    meshed_ftp_case(test, "fc", FtpService::AsPatched);
}
