//! The loopback end-to-end check once per mesh profile: serverfirst (configured for that mesh)
//! patches the mox pod over TLS; a model of the mesh's capture, written here from the mesh's
//! documented annotation (not from serverfirst's code), says which ports its sidecar still
//! captures; a sniffing proxy sits in front of those. The pod as created stalls, the patched pod
//! greets at once.
//!
//! Linkerd, Kuma and Consul capture every inbound port except those listed in one annotation,
//! so that annotation is the whole model. Istio's richer model (include lists, istio-init
//! arguments) is `e2e_loopback.rs` and, with real nat rules, `e2e_netns.rs`. Istio ambient has no
//! per-port exclusion to model: serverfirst only reports such pods.

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

/// Each mesh's exclusion annotation and whether it takes ranges (`a-b`).
const PROFILES: [(Mesh, &str, bool); 3] = [
    (Mesh::Linkerd, "config.linkerd.io/skip-inbound-ports", true),
    (Mesh::Kuma, "traffic.kuma.io/exclude-inbound-ports", false),
    (
        Mesh::Consul,
        "consul.hashicorp.com/transparent-proxy-exclude-inbound-ports",
        false,
    ),
];

/// Captured unless the annotation lists the port (a port or, where allowed, a range holding it).
fn captured(pod: &Value, key: &str, ranges: bool, port: u16) -> bool {
    let list = pod["metadata"]["annotations"][key]
        .as_str()
        .unwrap_or_default();
    let listed = list
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|element| match element.split_once('-').filter(|_| ranges) {
            Some((start, end)) => {
                let (start, end): (u16, u16) = (start.parse().unwrap(), end.parse().unwrap());
                (start..=end).contains(&port)
            }
            None => element.parse::<u16>().expect("a port") == port,
        });
    !listed
}

fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "e2e_profiles: {line}");
}

#[test]
fn the_capture_model_can_fail() {
    let pod = serde_json::json!({"metadata": {"annotations": {"k": "20-30, 587"}}});
    assert!(!captured(&pod, "k", true, 25) && !captured(&pod, "k", true, 587));
    assert!(captured(&pod, "k", true, 465));
    assert!(captured(&serde_json::json!({}), "k", false, 25));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_profile_lets_the_banner_through() {
    let server = MailServer::start().await;
    for (mesh, key, ranges) in PROFILES {
        let config = Config {
            meshes: MeshSelection {
                explicit: vec![mesh],
                ..MeshSelection::default()
            },
            ..Config::default()
        };
        let webhook = TestServer::start(config, Limits::default()).await;
        let created = created_pod();
        let patched = admit(&webhook, &created).await;

        // As created: every server-first port is captured and stalls.
        let front = PodFront::new(|port| captured(&created, key, ranges, port), &server).await;
        let report = probe_port(&front, 25).await;
        assert_eq!(
            report.outcome,
            Outcome::Stall,
            "{mesh:?} as created: {report:?}"
        );

        // As patched: none is, and the banner arrives at once.
        for port in SMTP_PORTS {
            assert!(
                !captured(&patched, key, ranges, port),
                "{mesh:?}: {port} still captured: {patched}"
            );
        }
        assert!(
            captured(&patched, key, ranges, 443),
            "{mesh:?}: https must stay captured"
        );
        let front = PodFront::new(|port| captured(&patched, key, ranges, port), &server).await;
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
