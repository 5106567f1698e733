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
//! Identity cases: the cluster has a STRICT PeerAuthentication for `mail` and an
//! AuthorizationPolicy that lets only `spiffe://cluster.local/ns/apps/sa/mailer` in, and the
//! server's Envoy is built as istiod builds it under both (the STRICT TCP chain, terminating
//! mTLS, with the network RBAC filter before `tcp_proxy`). The mail server pod is admitted by the
//! webhook knowing those policies (587 kept in the mesh) and knowing nothing (587 excluded, the
//! companion rule making meshed clients send plaintext). Three clients send mail: the mailer
//! through its sidecar, an intruder (another service account) through a sidecar of its own in a
//! third namespace, and a plaintext client from a fourth namespace outside the mesh, straight to
//! the pod's address. Kept: the mailer's mail alone is delivered; excluded: everyone's is.
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
#[path = "support/istio_authz.rs"]
mod istio_authz;
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
    FTP_CONTROL_PORT, SMTP_PORTS, SUBMISSION, admit, admitted_service, created_pod, mail_service,
    manifest_ftp_pod, manifest_ftp_service,
};
use envoy::Envoy;
use istio_model::{EXCLUDE_INBOUND_PORTS, IptablesArgs, pod_capture};
use istio_outbound::{Endpoint, OutboundSidecar, TLS_MODE_LABEL, VIRTUAL_OUTBOUND_PORT};
use istio_sidecar::{InboundSidecar, PeerAuthentication, ServicePort, VIRTUAL_INBOUND_PORT};
use mesh_tls::{MeshCa, spiffe_id};
use netns::{CLIENT_ADDR, Daemon, POD_ADDR, Peer, Sandbox, run_bounded, say, text};
use serde_json::{Value, json};
use serverfirst::config::Config;
use serverfirst::mesh::{KEPT_RECORD_KEY, RECORD_KEY};
use serverfirst::mesh_state::{DEFAULT_ROOT_NAMESPACE, MeshObject, MeshState};
use serverfirst::server::Limits;
use webhook_support::TestServer;

const FIRST_BYTES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/e2e/first_bytes.py"
);

/// The mail Service's cluster IP: routed inside the client namespace only.
const VIP: &str = "10.96.0.10";
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

/// The mail server's Service as its chart writes it.
fn service_as_written() -> Value {
    mail_service()
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
    block_on(admitted_service(service))
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
    webhook_pod_with_sidecar(&pod, MeshState::default())
}

/// `pod` as the webhook (default configuration, deciding with `mesh`) returned it, with the
/// label Istio's injector adds.
fn webhook_pod_with_sidecar(pod: &Value, mesh: MeshState) -> Value {
    let mut pod = block_on(async {
        let server = TestServer::start(Config::default(), Limits::default()).await;
        server.mesh.store(std::sync::Arc::new(mesh));
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

/// What a case runs against: the Service istiod sees, the server pod, the DestinationRule
/// istiod finds for the Service's host, the policies on the server's sidecar and who the client
/// is.
struct Setup {
    service: Value,
    pod: Value,
    destination_rule: Option<Value>,
    /// The server sidecar's PeerAuthentication mode.
    server_mtls: PeerAuthentication,
    /// The AuthorizationPolicies that select the server pod.
    authorization: Vec<Value>,
    /// The client pod's namespace and service account: its SPIFFE identity.
    client_account: (&'static str, &'static str),
}

impl Setup {
    /// Istio's defaults: PERMISSIVE, no AuthorizationPolicy; any client.
    fn permissive(service: Value, pod: Value, destination_rule: Option<Value>) -> Setup {
        Setup {
            service,
            pod,
            destination_rule,
            server_mtls: PeerAuthentication::Permissive,
            authorization: Vec::new(),
            client_account: ("client", "app"),
        }
    }
}

/// The SPIFFE identity of the mail server's pod (service account `mox` in `mail`).
fn server_id() -> String {
    spiffe_id("mail", "mox")
}

/// A meshed client pod's sidecar: the nat rules the injector writes for a pod with nothing
/// excluded, and Envoy with the outbound configuration istiod pushes for the case's Service,
/// holding the certificate of `account` from the mesh CA.
struct ClientSidecar {
    envoy: Envoy,
    outbound: OutboundSidecar,
}

impl ClientSidecar {
    /// In `namespace`, whose address is `addr`.
    fn start(
        namespace: &str,
        addr: &str,
        setup: &Setup,
        ca: &MeshCa,
        (account_namespace, account): (&str, &str),
    ) -> ClientSidecar {
        let client_pod = json!({ "metadata": { "annotations": {} }, "spec": {} });
        let capture = capture_of(&client_pod);
        netns::load_nat_in(namespace, &capture.restore_input().expect("REDIRECT rules"));
        let identity = ca.workload(
            &format!("{account_namespace}-{account}"),
            &spiffe_id(account_namespace, account),
        );
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
            .mtls(identity, &[&server_id()]);
        let bootstrap = istio_sidecar::bootstrap(
            &format!(
                "sidecar~{addr}~{account}.{account_namespace}~{account_namespace}.svc.cluster.local"
            ),
            outbound.listeners(),
            outbound.clusters().expect("outbound clusters"),
        );
        let envoy = Envoy::start_in(namespace, &bootstrap);
        let mut listening = Sandbox::exec(namespace, "ss");
        listening.arg("-Hltn");
        let listening = text(&run_bounded(listening));
        assert!(
            listening.contains(&format!(":{VIRTUAL_OUTBOUND_PORT} ")),
            "{listening}"
        );
        ClientSidecar { envoy, outbound }
    }
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
    ca: MeshCa,
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
        sandbox.load_nat(&capture_of(&setup.pod).restore_input().expect("rules"));

        let ca = MeshCa::new();
        let server_tls = ca.workload("server", &server_id());
        let ports = ServicePort::of_service(&setup.service).expect("Service ports");
        let rbac = istio_authz::rbac_filters(&setup.authorization).expect("the RBAC model");
        let inbound = InboundSidecar::new()
            .service_ports(ports)
            .peer_authentication(setup.server_mtls)
            .mtls(server_tls)
            .rbac(rbac);
        let server_bootstrap = istio_sidecar::bootstrap(
            &format!("sidecar~{POD_ADDR}~mox.mail~mail.svc.cluster.local"),
            vec![inbound.listener()],
            inbound.clusters(),
        );
        let server_envoy = Envoy::start(&sandbox, &server_bootstrap);
        let client = ClientSidecar::start(
            &sandbox.client,
            CLIENT_ADDR,
            &setup,
            &ca,
            setup.client_account,
        );
        MeshedClient {
            server: None,
            client_envoy: client.envoy,
            server_envoy,
            outbound: client.outbound,
            setup,
            sandbox,
            ca,
            dir,
        }
    }

    /// Another meshed client pod, in peer namespace `index`, with the identity of `account`.
    fn meshed_peer(&self, index: u8, account: (&'static str, &'static str)) -> PeerClient {
        let peer = self.sandbox.add_peer(index);
        let sidecar =
            ClientSidecar::start(&peer.namespace, &peer.addr, &self.setup, &self.ca, account);
        PeerClient {
            sidecar,
            account,
            peer,
        }
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

    /// `program` in the client namespace as the application's uid.
    fn as_app(&self, program: &str) -> Command {
        app_in(&self.sandbox.client, program)
    }

    /// `serverfirst probe VIP:587` from the client application: exit code and JSON report.
    fn probe(&self) -> (i32, Value) {
        self.probe_with(self.as_app(BIN), VIP)
    }

    /// `serverfirst probe <host>:587` run by `command` (the binary in some namespace).
    fn probe_with(&self, mut command: Command, host: &str) -> (i32, Value) {
        command.args(["probe", &format!("{host}:{SUBMISSION}"), "-o", "json"]);
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
        self.client_envoy.stats_reaching(names, at_least)
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
        let packets = |rule: &str| netns::nat_packets(&counters, |r| r == rule);
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

/// `program` in `namespace` as the application's uid, so that its connections are captured by
/// the namespace's nat rules, if it has any.
fn app_in(namespace: &str, program: &str) -> Command {
    let mut command = Sandbox::exec(namespace, "setpriv");
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

/// What the server said to swaks and how swaks ended, from its transcript, for a report line.
fn swaks_replies(swaks: &Output) -> String {
    text(swaks)
        .lines()
        .filter(|l| l.starts_with("***") || l.starts_with('<'))
        .collect::<Vec<_>>()
        .join(" | ")
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
        let ports = desired::service_ports(&typed, [&slice], |pod| desired::PodFacts {
            excluded: match pod == POD_NAME {
                true => excluded.clone(),
                false => PortSet::new(),
            },
            ambient: false,
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
    let setup = Setup::permissive(service.clone(), pod, destination_rule);
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
    let setup = Setup::permissive(service, pod, destination_rule);
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
    say(&format!(
        "auto mTLS, no DestinationRule, 587 excluded: probe exit {code}, outcome {} (connected in \
         {:.1} ms, then closed without a byte); swaks exit {:?}: {}",
        report["outcome"],
        ms(&report, "connect_ms"),
        swaks.status.code(),
        swaks_replies(&swaks)
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

/// The meshed client the AuthorizationPolicy lets in, and one it leaves out (same namespace,
/// another service account).
const MAILER: (&str, &str) = ("apps", "mailer");
const INTRUDER: (&str, &str) = ("apps", "intruder");
/// The server-first ports of the mail server pod: SMTP, submissions, submission.
const SERVER_FIRST: &str = "25,465,587";
/// The peer namespaces of the identity cases: the intruder's pod and a machine outside the mesh.
const INTRUDER_PEER: u8 = 1;
const OUTSIDE_PEER: u8 = 2;

/// The `mail` namespace's PeerAuthentication: STRICT for every workload in it.
fn strict_mail() -> Value {
    json!({
        "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": { "namespace": "mail", "name": "default" },
        "spec": { "mtls": { "mode": "STRICT" } },
    })
}

/// Only [`MAILER`] may talk to the mail server pod.
fn allow_mailer() -> Value {
    let (namespace, account) = MAILER;
    let principal = format!("cluster.local/ns/{namespace}/sa/{account}");
    json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": { "namespace": "mail", "name": "allow-mailer" },
        "spec": {
            "selector": { "matchLabels": { "app.kubernetes.io/name": "mox" } },
            "action": "ALLOW",
            "rules": [{ "from": [{ "source": { "principals": [principal] } }] }],
        },
    })
}

/// What the webhook knows of the mesh when it admits the server pod; the cluster holds
/// [`strict_mail`] and [`allow_mailer`] either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// Its mesh state holds both policies: serverfirst keeps [`SERVER_FIRST`] in the mesh.
    Policies,
    /// No mesh state: serverfirst excludes them, as it did before it read policies.
    Nothing,
}

impl Known {
    fn mesh_state(self) -> MeshState {
        let objects = match self {
            Known::Policies => vec![strict_mail(), allow_mailer()],
            Known::Nothing => Vec::new(),
        };
        let objects = objects.iter().map(|object| {
            MeshObject::from_value(object)
                .expect("a kind the mesh state holds")
                .expect("a valid policy")
        });
        MeshState::new(DEFAULT_ROOT_NAMESPACE, objects)
    }
}

/// Another client pod of an identity case: its namespace and its sidecar.
struct PeerClient {
    // The sidecar stops before its namespace goes.
    sidecar: ClientSidecar,
    account: (&'static str, &'static str),
    peer: Peer,
}

/// One client's two tries: the probe's silent wait for the banner, then a message with swaks.
struct Attempt {
    who: String,
    probe_code: i32,
    probe: Value,
    swaks: Output,
    swaks_ms: f64,
}

impl Attempt {
    /// `serverfirst probe` and swaks to `host`:587, run in `namespace` as the application.
    fn run(mesh: &MeshedClient, who: &str, namespace: &str, host: &str) -> Attempt {
        let (probe_code, probe) = mesh.probe_with(app_in(namespace, BIN), host);
        let started = Instant::now();
        let swaks = e2e_mail::swaks(app_in(namespace, "swaks"), host, SUBMISSION, who);
        Attempt {
            who: who.to_string(),
            probe_code,
            probe,
            swaks,
            swaks_ms: elapsed_ms(started),
        }
    }

    fn delivered_at_once(&self, logs: impl Fn() -> String) -> f64 {
        assert_eq!(
            self.probe_code,
            0,
            "{}: {}\n{}",
            self.who,
            self.probe,
            logs()
        );
        assert_eq!(
            self.probe["outcome"], "banner",
            "{}: {}",
            self.who, self.probe
        );
        let first_byte = ms(&self.probe, "first_byte_ms");
        assert!(first_byte < AT_ONCE_MS, "{}: {}", self.who, self.probe);
        assert_eq!(
            self.swaks.status.code(),
            Some(0),
            "{}: swaks: {}\n{}",
            self.who,
            text(&self.swaks),
            logs()
        );
        first_byte
    }

    /// How the probe and swaks ended, for a report line.
    fn summary(&self) -> String {
        let field = |name: &str| {
            self.probe[name]
                .as_f64()
                .map_or("-".to_string(), |v| format!("{v:.3} ms"))
        };
        format!(
            "{}: probe exit {} outcome {} (first byte {}, spoke at {}); swaks exit {:?} after \
             {:.0} ms: {}",
            self.who,
            self.probe_code,
            self.probe["outcome"],
            field("first_byte_ms"),
            field("sent_ms"),
            self.swaks.status.code(),
            self.swaks_ms,
            swaks_replies(&self.swaks)
        )
    }
}

/// The subjects of the messages in the Maildir, sorted.
fn delivered_subjects(mesh: &MeshedClient) -> Vec<String> {
    let mut subjects: Vec<String> = mesh
        .maildir_new()
        .iter()
        .filter_map(|message| {
            message
                .lines()
                .find_map(|line| line.strip_prefix("Subject: "))
                .map(str::to_string)
        })
        .collect();
    subjects.sort();
    subjects
}

/// The mail server pod as the webhook admits it knowing `known`, and the companion rule the
/// controller derives for it behind `service`, if any.
fn identity_server_pod(service: &Value, known: Known) -> (Value, Option<Value>) {
    let pod = webhook_pod_with_sidecar(&created_pod(), known.mesh_state());
    let annotations = &pod["metadata"]["annotations"];
    let capture = capture_of(&pod);
    let rules = companions::rules(service, &pod, POD_ADDR);
    match known {
        Known::Policies => {
            assert_eq!(annotations[KEPT_RECORD_KEY], SERVER_FIRST, "{annotations}");
            for key in [EXCLUDE_INBOUND_PORTS, RECORD_KEY] {
                assert!(annotations.get(key).is_none(), "{key}: {annotations}");
            }
            assert!(capture.captured(SUBMISSION), "{capture:?}");
            // Nothing excluded, so no companion rule: meshed clients keep auto mTLS.
            assert!(rules.is_empty(), "{rules:?}");
        }
        Known::Nothing => {
            assert_eq!(annotations[RECORD_KEY], SERVER_FIRST, "{annotations}");
            assert!(annotations.get(KEPT_RECORD_KEY).is_none(), "{annotations}");
            assert!(!capture.captured(SUBMISSION), "{capture:?}");
            assert_eq!(rules.len(), 1, "{rules:?}");
        }
    }
    (pod, rules.into_iter().next())
}

/// The mail server pod as the webhook admits it knowing `known`, behind the Service as patched,
/// in a cluster with [`strict_mail`] and [`allow_mailer`]: its sidecar built as istiod builds it
/// under both (the STRICT TCP chain, the RBAC filter). Three clients send mail: the mailer and
/// the intruder through their own sidecars, each with its own identity from the mesh CA, and a
/// plaintext client from outside the mesh straight to the pod's address. Kept: the mailer's mail
/// alone is delivered. Excluded: everyone's is; the server's Envoy never sees a connection.
fn identity_case(test: &str, tag: &str, known: Known) {
    if !prerequisites(test, tag) {
        return;
    }
    let service = service_as_patched();
    let (pod, destination_rule) = identity_server_pod(&service, known);
    let setup = Setup {
        service,
        pod,
        destination_rule,
        server_mtls: PeerAuthentication::Strict,
        authorization: vec![allow_mailer()],
        client_account: MAILER,
    };
    let label = match known {
        Known::Policies => "kept (STRICT + AuthorizationPolicy known)",
        Known::Nothing => "excluded (no mesh state)",
    };
    let mesh = MeshedClient::start(tag, setup);
    let intruder = mesh.meshed_peer(INTRUDER_PEER, INTRUDER);
    let outside = mesh.sandbox.add_peer(OUTSIDE_PEER);
    say(&format!(
        "{label}: mailer {} from {CLIENT_ADDR}, intruder {} from {}, plaintext from {}",
        spiffe_id(MAILER.0, MAILER.1),
        spiffe_id(intruder.account.0, intruder.account.1),
        intruder.peer.addr,
        outside.addr
    ));
    let expected_mode = (known == Known::Nothing).then(|| "DISABLE".to_string());
    assert_eq!(mesh.outbound.tls_mode(SUBMISSION), expected_mode);
    assert_eq!(
        intruder.sidecar.outbound.tls_mode(SUBMISSION),
        expected_mode
    );

    let mailer = Attempt::run(&mesh, "mailer", &mesh.sandbox.client, VIP);
    let intruding = Attempt::run(&mesh, "intruder", &intruder.peer.namespace, VIP);
    let plaintext = Attempt::run(&mesh, "outside the mesh", &outside.namespace, POD_ADDR);

    let listener = format!("listener.0.0.0.0_{VIRTUAL_INBOUND_PORT}");
    let allowed = format!("{}rbac.allowed", istio_authz::TCP_STAT_PREFIX);
    let denied = format!("{}rbac.denied", istio_authz::TCP_STAT_PREFIX);
    let no_chain = format!("{listener}.no_filter_chain_match");
    let gave_up = format!("{listener}.downstream_listener_filter_remote_close");
    let handshakes = format!("{listener}.ssl.handshake");
    let upstream = format!("cluster.inbound|{SUBMISSION}||.upstream_cx_total");
    let server_names = [
        allowed.as_str(),
        denied.as_str(),
        &format!("{listener}.downstream_cx_total"),
        &handshakes,
        &no_chain,
        &gave_up,
        &upstream,
    ];
    let client_cluster = format!("cluster.{}", mesh.outbound.cluster_name(SUBMISSION));
    let client_handshakes = format!("{client_cluster}.ssl.handshake");
    let client_names = [
        format!("{client_cluster}.upstream_cx_total"),
        client_handshakes.clone(),
        format!("{client_cluster}.upstream_cx_destroy_remote"),
    ];
    let client_names: Vec<&str> = client_names.iter().map(String::as_str).collect();
    let sidecars = [
        ("mailer", &mesh.client_envoy),
        ("intruder", &intruder.sidecar.envoy),
    ];
    let client_stats: Vec<(&str, BTreeMap<String, u64>)> = sidecars
        .iter()
        .map(|(who, envoy)| (*who, envoy.stats()))
        .collect();
    let nat = mesh.sandbox.nat_counters();
    let dport = format!("--dport {SUBMISSION} ");
    let returned = netns::nat_packets(&nat, |rule| {
        rule.starts_with("-A ISTIO_INBOUND") && rule.contains(&dport) && rule.ends_with("RETURN")
    });
    let redirected = netns::nat_packets(&nat, |rule| {
        rule.starts_with("-A ISTIO_INBOUND") && rule.ends_with("-j ISTIO_IN_REDIRECT")
    });
    let logs = || mesh.logs();
    for attempt in [&mailer, &intruding, &plaintext] {
        say(&format!("{label}: {}", attempt.summary()));
    }
    let mailer_banner = mailer.delivered_at_once(logs);
    let subjects = delivered_subjects(&mesh);
    let stats;
    match known {
        Known::Policies => {
            // Both sidecars completed mTLS with a valid identity; the policy refused one.
            for (who, stats) in &client_stats {
                let counters = envoy::counters(stats, &client_names);
                assert_eq!(stat(stats, &client_handshakes), 2, "{who}: {counters}");
            }
            assert_ne!(
                intruding.swaks.status.code(),
                Some(0),
                "{}",
                intruding.summary()
            );
            // It may see the banner: tcp_proxy connects upstream at once and RBAC decides at the
            // first bytes (envoyproxy/envoy#9023). Nothing it said reached the server: no reply
            // to its EHLO.
            assert!(
                !text(&intruding.swaks).contains("<-  250"),
                "{}",
                intruding.summary()
            );
            // Plaintext waits in the TLS inspector (listener_inbound.go buildInboundListener:
            // protocolDetectionTimeout, 0s) until it speaks, then matches no chain: STRICT has
            // the TLS chain only (filterchain_options.go inboundStrictTCPFilterChainMatchOptions).
            assert_ne!(
                plaintext.probe["outcome"],
                "banner",
                "{}",
                plaintext.summary()
            );
            assert_eq!(
                plaintext.swaks.status.code(),
                Some(21),
                "{}",
                plaintext.summary()
            );
            stats = mesh
                .server_envoy
                .stats_reaching(&[&allowed, &denied, &no_chain, &gave_up], 6);
            let counters = envoy::counters(&stats, &server_names);
            // Network RBAC decides at a connection's first data or end of stream
            // (rbac_filter.cc, RoleBasedAccessControlFilter::onData): the probe's close after
            // the banner counts as well as swaks' session.
            assert_eq!(
                stat(&stats, &allowed),
                2,
                "the mailer's connections: {counters}"
            );
            assert_eq!(
                stat(&stats, &denied),
                2,
                "the intruder's connections: {counters}"
            );
            assert_eq!(
                stat(&stats, &handshakes),
                4,
                "both meshed clients: {counters}"
            );
            assert_eq!(
                stat(&stats, &no_chain) + stat(&stats, &gave_up),
                2,
                "the plaintext client's two connections: {counters}"
            );
            assert_eq!((redirected, returned), (6, 0), "{nat}");
            assert_eq!(subjects, ["mailer"], "{}", logs());
            assert_eq!(mesh.deliveries(1).len(), 1, "{}", logs());
        }
        Known::Nothing => {
            intruding.delivered_at_once(logs);
            plaintext.delivered_at_once(logs);
            // The companion rule: plaintext from both sidecars.
            for (who, stats) in &client_stats {
                let counters = envoy::counters(stats, &client_names);
                assert_eq!(stat(stats, &client_handshakes), 0, "{who}: {counters}");
            }
            stats = mesh.server_envoy.stats();
            let counters = envoy::counters(&stats, &server_names);
            for name in server_names {
                assert_eq!(stat(&stats, name), 0, "no Envoy on the path: {counters}");
            }
            assert_eq!((redirected, returned), (0, 6), "{nat}");
            assert_eq!(
                subjects,
                ["intruder", "mailer", "outside the mesh"],
                "{}",
                logs()
            );
            assert_eq!(mesh.deliveries(3).len(), 3, "{}", logs());
        }
    }
    say(&format!(
        "{label}: mailer banner {mailer_banner:.3} ms after connecting; delivered: {subjects:?}"
    ));
    say(&format!(
        "{label}: server Envoy: {}",
        envoy::counters(&stats, &server_names)
    ));
    say(&format!(
        "{label}: pod nat: {redirected} connections redirected to {VIRTUAL_INBOUND_PORT}, \
         {returned} let through to {SUBMISSION}"
    ));
    for (who, stats) in &client_stats {
        say(&format!(
            "{label}: {who}'s sidecar: {}",
            envoy::counters(stats, &client_names)
        ));
    }
}

/// Kept in the mesh: the mailer's mail is delivered at once; the intruder's sidecar completes
/// mTLS but RBAC denies it; the plaintext client never reaches a filter chain.
#[test]
fn a_kept_port_delivers_only_the_allowed_meshed_clients_mail() {
    let test = "a_kept_port_delivers_only_the_allowed_meshed_clients_mail";
    identity_case(test, "ka", Known::Policies);
}

/// Excluded, as serverfirst decided before it read policies: the intruder's mail and the
/// plaintext client's are delivered too, past STRICT and the AuthorizationPolicy.
#[test]
fn an_excluded_port_delivers_everyones_mail_past_the_policies() {
    let test = "an_excluded_port_delivers_everyones_mail_past_the_policies";
    identity_case(test, "kb", Known::Nothing);
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
    let pod = webhook_pod_with_sidecar(&manifest_ftp_pod(), MeshState::default());
    let capture = capture_of(&pod);
    for port in std::iter::once(FTP_CONTROL_PORT).chain(passive.iter().copied()) {
        assert!(!capture.captured(port), "server pod: {port}: {capture:?}");
    }
    let destination_rule = Some(companion_rule(&service, &pod));
    let setup = Setup::permissive(service.clone(), pod, destination_rule);
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
