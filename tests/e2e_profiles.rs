//! The loopback end-to-end check once per mesh profile: serverfirst (configured for that mesh)
//! patches the mox pod over TLS; a model of the mesh's capture, written here from the mesh's
//! documented annotations (not from serverfirst's code), says which ports its sidecar still
//! sniffs; a sniffing proxy sits in front of those. The pod as created stalls, the patched pod
//! greets at once.
//!
//! Kuma and Consul sniff every inbound port except those listed in one annotation. Linkerd
//! sniffs every inbound port except the opaque ones (the pod's `config.linkerd.io/opaque-ports`,
//! or without it the default `proxy.opaquePorts`) and those in `skip-inbound-ports`. Istio's
//! richer model (include lists, istio-init arguments) is `e2e_loopback.rs` and, with real nat
//! rules, `e2e_netns.rs`. Istio ambient has no per-port exclusion to model: serverfirst only
//! reports such pods.

mod common;
mod webhook_support;

#[path = "support/e2e_front.rs"]
mod e2e_front;
#[path = "support/e2e_pods.rs"]
mod e2e_pods;
#[path = "support/istio_model.rs"]
mod istio_model;
#[path = "support/smtp_harness.rs"]
mod smtp_harness;

use std::io::Write as _;
use std::time::Duration;

use e2e_front::{MailServer, PodFront, probe_port};
use e2e_pods::{SMTP_PORTS, admit, created_pod};
use serde_json::Value;
use serverfirst::config::{Config, MeshSelection};
use serverfirst::mesh::Mesh;
use serverfirst::probe::Outcome;
use serverfirst::server::Limits;
use webhook_support::TestServer;

/// A mesh profile: how the mox pod is created, and which of its ports the mesh sniffs.
struct Profile {
    mesh: Mesh,
    created: fn() -> Value,
    sniffed: fn(&Value, u16) -> bool,
}

const PROFILES: [Profile; 3] = [
    Profile {
        mesh: Mesh::Linkerd,
        created: linkerd_created,
        sniffed: linkerd_sniffed,
    },
    Profile {
        mesh: Mesh::Kuma,
        created: created_pod,
        sniffed: |pod, port| !listed(pod, "traffic.kuma.io/exclude-inbound-ports", false, port),
    },
    Profile {
        mesh: Mesh::Consul,
        created: created_pod,
        sniffed: |pod, port| {
            !listed(
                pod,
                "consul.hashicorp.com/transparent-proxy-exclude-inbound-ports",
                false,
                port,
            )
        },
    },
];

const LINKERD_OPAQUE: &str = "config.linkerd.io/opaque-ports";

/// Linkerd's default `proxy.opaquePorts` (linkerd2 `charts/linkerd-control-plane/values.yaml`).
const LINKERD_DEFAULT_OPAQUE: [u16; 8] = [25, 587, 3306, 4444, 5432, 6379, 9300, 11211];

/// The mox pod with an opaque list of its own (a database port), which replaces Linkerd's
/// default, so 25 and 587 (the ports served here) are sniffed. In plain mox they are opaque by
/// default and only 465 is sniffed (see `linkerd_plain_mox_gets_every_port_opaque`).
fn linkerd_created() -> Value {
    let mut pod = created_pod();
    pod["metadata"]["annotations"][LINKERD_OPAQUE] = "3306".into();
    pod
}

/// Sniffed unless opaque (the pod's list, or without one the default) or skipped. Opaque ports
/// stay with the proxy, which forwards them at once (linkerd2-proxy `inbound/src/detect.rs`).
fn linkerd_sniffed(pod: &Value, port: u16) -> bool {
    let opaque = match pod["metadata"]["annotations"].get(LINKERD_OPAQUE) {
        Some(_) => listed(pod, LINKERD_OPAQUE, true, port),
        None => LINKERD_DEFAULT_OPAQUE.contains(&port),
    };
    !opaque && !listed(pod, "config.linkerd.io/skip-inbound-ports", true, port)
}

/// The annotation `key` lists the port (a port or, where allowed, a range holding it).
fn listed(pod: &Value, key: &str, ranges: bool, port: u16) -> bool {
    let list = pod["metadata"]["annotations"][key]
        .as_str()
        .unwrap_or_default();
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|element| match element.split_once('-').filter(|_| ranges) {
            Some((start, end)) => {
                let (start, end): (u16, u16) = (start.parse().unwrap(), end.parse().unwrap());
                (start..=end).contains(&port)
            }
            None => element.parse::<u16>().expect("a port") == port,
        })
}

fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "e2e_profiles: {line}");
}

#[test]
fn the_capture_models_can_fail() {
    let pod = serde_json::json!({"metadata": {"annotations": {"k": "20-30, 587"}}});
    assert!(listed(&pod, "k", true, 25) && listed(&pod, "k", true, 587));
    assert!(!listed(&pod, "k", true, 465));
    assert!(!listed(&serde_json::json!({}), "k", false, 25));

    let bare = serde_json::json!({"metadata": {}});
    assert!(!linkerd_sniffed(&bare, 25) && linkerd_sniffed(&bare, 465));
    let own = serde_json::json!({"metadata": {"annotations": {LINKERD_OPAQUE: "100-200"}}});
    assert!(linkerd_sniffed(&own, 25) && !linkerd_sniffed(&own, 143));
    let skipped = serde_json::json!({"metadata": {"annotations": {
        LINKERD_OPAQUE: "", "config.linkerd.io/skip-inbound-ports": "25"}}});
    assert!(!linkerd_sniffed(&skipped, 25) && linkerd_sniffed(&skipped, 587));
}

fn config_for(mesh: Mesh) -> Config {
    Config {
        meshes: MeshSelection {
            explicit: vec![mesh],
            ..MeshSelection::default()
        },
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_profile_lets_the_banner_through() {
    let server = MailServer::start().await;
    for Profile {
        mesh,
        created,
        sniffed,
    } in PROFILES
    {
        let webhook = TestServer::start(config_for(mesh), Limits::default()).await;
        let created = created();
        let patched = admit(&webhook, &created).await;

        // As created: every server-first port is sniffed and stalls.
        for port in SMTP_PORTS {
            assert!(sniffed(&created, port), "{mesh:?} as created: {port}");
        }
        let front = PodFront::new(|port| sniffed(&created, port), &server).await;
        let report = probe_port(&front, 25).await;
        assert_eq!(
            report.outcome,
            Outcome::Stall,
            "{mesh:?} as created: {report:?}"
        );

        // As patched: none is, and the banner arrives at once.
        for port in SMTP_PORTS {
            assert!(
                !sniffed(&patched, port),
                "{mesh:?}: {port} still sniffed: {patched}"
            );
        }
        assert!(sniffed(&patched, 443), "{mesh:?}: https must stay sniffed");
        let front = PodFront::new(|port| sniffed(&patched, port), &server).await;
        for port in SMTP_PORTS {
            let report = probe_port(&front, port).await;
            assert_eq!(
                report.outcome,
                Outcome::Banner,
                "{mesh:?} patched, port {port}: {report:?}"
            );
            let first_byte = report.first_byte.expect("a banner");
            assert!(
                first_byte < Duration::from_millis(100),
                "{mesh:?}: {first_byte:?}"
            );
            say(&format!(
                "{mesh:?} patched, port {port}: banner after {:.2} ms",
                first_byte.as_secs_f64() * 1e3
            ));
        }
    }
    server.stop().await;
}

/// Plain mox under Linkerd: 25 and 587 are opaque by default, 465 is sniffed. The list
/// serverfirst writes replaces the default: 465 joins it and 25 and 587 stay opaque.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linkerd_plain_mox_gets_every_port_opaque() {
    let webhook = TestServer::start(config_for(Mesh::Linkerd), Limits::default()).await;
    let created = created_pod();
    assert!(linkerd_sniffed(&created, 465));
    for port in SMTP_PORTS {
        assert!(!linkerd_sniffed(&created, port), "as created: {port}");
    }
    let patched = admit(&webhook, &created).await;
    for port in [25, 465, 587] {
        assert!(!linkerd_sniffed(&patched, port), "{port}: {patched}");
    }
    assert!(linkerd_sniffed(&patched, 443));
}
