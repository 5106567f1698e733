//! End to end on 127.0.0.1, without root: serverfirst's webhook (over TLS) patches the mox
//! mail-server pod; an independent model of Istio says which of the pod's ports the sidecar then
//! captures; a sniffing proxy that, like Envoy since Istio 1.8, connects upstream only after the
//! client's first bytes sits in front of the reference SMTP server on exactly those ports, while
//! the others reach the server directly. The pod as created stalls; the patched pod greets at once.
//!
//! The same checks with real nat rules, the real Envoy and third-party clients in network
//! namespaces are in `e2e_netns.rs`.

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
use std::net::SocketAddr;
use std::time::Duration;

use e2e_front::{MailServer, PodFront, STALL_WAIT, probe_port};
use e2e_pods::{SMTP_PORTS, Shape, admitted_shapes, container_ports, created_pod};
use istio_model::{IptablesArgs, pod_capture};
use lettre::message::header::ContentType;
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serverfirst::probe::Outcome;
use smtp_harness::HOSTNAME;

/// The most a banner may take to count as "at once".
const AT_ONCE: Duration = Duration::from_millis(100);
/// Ports the patch must leave captured: client-first TLS, HTTPS and metrics stay in the mesh.
const STAY_MESHED: [u16; 4] = [443, 993, 8010, 2020];

/// Writes a measured figure where it is seen even when the test passes (libtest captures
/// `println!`/`eprintln!` of passing tests, not direct writes to stderr).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "e2e_loopback: {line}");
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn capture_of(pod: &serde_json::Value) -> IptablesArgs {
    pod_capture(pod)
        .expect("Istio accepts the pod")
        .expect("the pod is captured in REDIRECT mode")
}

fn lettre_mailer(addr: SocketAddr, timeout: Duration) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
        .port(addr.port())
        .hello_name(ClientId::Domain("client.test".into()))
        .timeout(Some(timeout))
        .build()
}

fn message(subject: &str) -> Message {
    Message::builder()
        .from("Alice <alice@example.test>".parse().expect("from"))
        .to("bob@example.test".parse().expect("to"))
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body("Sent through the pod's server-first port.\r\n".to_string())
        .expect("message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_pod_stalls_on_every_server_first_port() {
    let pod = created_pod();
    let capture = capture_of(&pod);
    for port in container_ports(&pod) {
        assert!(capture.captured(port), "port {port} of the created pod");
    }
    let mut server = MailServer::start().await;
    let front = PodFront::new(|port| capture.captured(port), &server).await;

    let (r25, r587) = tokio::join!(probe_port(&front, 25), probe_port(&front, 587));
    for (port, report) in [(25, r25), (587, r587)] {
        assert_eq!(report.outcome, Outcome::Stall, "port {port}: {report:?}");
        let sent = report.sent.expect("the probe had to speak");
        assert!(sent >= STALL_WAIT, "port {port}: spoke at {sent:?}");
        let after = report.first_byte_after_send().expect("banner once spoken");
        assert!(after < Duration::from_secs(1), "port {port}: {after:?}");
        assert_eq!(
            report.banner.as_deref(),
            Some(&*format!("220 {HOSTNAME} ESMTP serverfirst"))
        );
        assert_eq!(front.upstream_connections(port), 1, "port {port}");
        say(&format!(
            "pod as created, port {port} (captured): no byte in {:.0} ms; banner {:.1} ms after \
             the client spoke",
            ms(sent),
            ms(after)
        ));
    }

    // A real client waits for the greeting, as SMTP clients must. lettre's own timeout covers
    // only connecting, so without a limit of ours it would wait as long as the proxy: forever.
    let mailer = lettre_mailer(front.addrs[&25], STALL_WAIT);
    let send = mailer.send(message("never sent"));
    let waited = tokio::time::timeout(2 * STALL_WAIT, send).await;
    assert!(waited.is_err(), "lettre got an answer: {waited:?}");
    say(&format!(
        "pod as created: lettre still waiting for the greeting after {:.0} ms",
        ms(2 * STALL_WAIT)
    ));
    assert!(server.nothing_delivered(), "no mail can have arrived");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patched_pod_greets_at_once_in_every_shape() {
    let server = MailServer::start().await;
    for (Shape { name, pod: sent }, pod) in admitted_shapes().await {
        let before = capture_of(&sent);
        let after = capture_of(&pod);
        for port in SMTP_PORTS {
            assert!(before.captured(port), "{name}: port {port} captured before");
            assert!(!after.captured(port), "{name}: port {port} still captured");
        }
        for port in container_ports(&pod) {
            assert!(
                !after.captured(port) || before.captured(port),
                "{name}: the patch captured port {port}"
            );
        }
        for port in STAY_MESHED {
            assert_eq!(
                after.captured(port),
                before.captured(port),
                "{name}: port {port} must stay as it was"
            );
        }

        let front = PodFront::new(|port| after.captured(port), &server).await;
        for port in SMTP_PORTS {
            let report = probe_port(&front, port).await;
            assert_eq!(report.outcome, Outcome::Banner, "{name} {port}: {report:?}");
            let first_byte = report.first_byte.expect("banner");
            assert!(first_byte < AT_ONCE, "{name} {port}: {first_byte:?}");
            say(&format!(
                "patched pod ({name}), port {port} (excluded): banner {:.3} ms after connecting",
                ms(first_byte)
            ));
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_delivers_through_the_patched_pod() {
    let shapes = admitted_shapes().await;
    let pod = &shapes[0].1;
    assert_eq!(
        pod["metadata"]["annotations"][istio_model::EXCLUDE_INBOUND_PORTS],
        "25,465,587"
    );
    let mut server = MailServer::start().await;
    let front = PodFront::new(|port| capture_of(pod).captured(port), &server).await;
    assert!(front.proxies.is_empty(), "no SMTP port may stay captured");

    let started = std::time::Instant::now();
    let response = lettre_mailer(front.addrs[&25], Duration::from_secs(10))
        .send(message("through the patched pod"))
        .await
        .expect("lettre sends through port 25");
    let took = started.elapsed();
    assert!(response.is_positive(), "{response:?}");
    let delivery = server
        .servers
        .get_mut(&25)
        .expect("port 25")
        .next_delivery()
        .await;
    assert_eq!(delivery.rcpts, ["bob@example.test"]);
    assert_eq!(delivery.listener, server.app(25));
    let stored = delivery.maildir_path.expect("stored in the Maildir");
    assert!(stored.starts_with(server.maildir.path().join("new")));
    let text = std::fs::read_to_string(&stored).expect("read the message");
    assert!(text.contains("Subject: through the patched pod"), "{text}");
    say(&format!(
        "lettre transaction through the patched pod's port 25: {:.1} ms",
        ms(took)
    ));
    server.stop().await;
}

/// Unit tests of the Istio model: it must be able to fail, so each expectation is written out.
mod model {
    use serde_json::json;

    use crate::istio_model::*;

    fn pod(annotations: serde_json::Value) -> serde_json::Value {
        json!({"metadata": {"annotations": annotations}, "spec": {"containers": []}})
    }

    /// A command line's words, split at single spaces; `''` is an empty word.
    fn words(line: &str) -> Vec<String> {
        let word = |w: &str| {
            if w == "''" {
                String::new()
            } else {
                w.to_string()
            }
        };
        line.split(' ').map(word).collect()
    }

    #[test]
    fn injector_defaults_capture_every_port_but_istios_own() {
        let args = IptablesArgs::from_annotations(&pod(json!({})))
            .unwrap()
            .unwrap();
        assert_eq!(args.source, Source::Annotations);
        assert_eq!(
            args.to_args(),
            words("-p 15001 -z 15006 -u 1337 -m REDIRECT -i * -x '' -b * -d 15090,15021,15020")
        );
        for port in [25, 80, 587, 15006] {
            assert!(args.captured(port), "{port}");
        }
        for port in [15008, 15020, 15021, 15090] {
            assert!(!args.captured(port), "{port}");
        }
    }

    #[test]
    fn annotations_render_like_istios_traffic_annotations_golden() {
        let args = IptablesArgs::from_annotations(&pod(json!({
            INCLUDE_INBOUND_PORTS: "1,2,3",
            EXCLUDE_INBOUND_PORTS: "4,5,6",
            EXCLUDE_OUTBOUND_PORTS: "7,8,9",
            INCLUDE_OUTBOUND_IP_RANGES: "127.0.0.1/24,10.96.0.1/24",
            EXCLUDE_OUTBOUND_IP_RANGES: "10.96.0.2/24,10.96.0.3/24",
        })))
        .unwrap()
        .unwrap();
        assert_eq!(
            args.to_args(),
            words(
                "-p 15001 -z 15006 -u 1337 -m REDIRECT -i 127.0.0.1/24,10.96.0.1/24 -x 10.96.0.2/24,10.96.0.3/24 -b 1,2,3 -d 15090,15021,4,5,6,15020 -o 7,8,9"
            )
        );
        // An explicit list captures exactly its ports; -d does not matter then.
        assert!(args.captured(1) && args.captured(3));
        assert!(!args.captured(4) && !args.captured(25));
    }

    #[test]
    fn exclusion_only_applies_to_the_wildcard() {
        let exclude = |include: Option<&str>| {
            let mut annotations = json!({EXCLUDE_INBOUND_PORTS: "25, 587"});
            if let Some(include) = include {
                annotations[INCLUDE_INBOUND_PORTS] = json!(include);
            }
            IptablesArgs::from_annotations(&pod(annotations))
                .unwrap()
                .unwrap()
        };
        let wildcard = exclude(None);
        assert_eq!(wildcard.exclude_inbound_ports, "15090,15021,25,587,15020");
        assert!(!wildcard.captured(25) && !wildcard.captured(587) && wildcard.captured(465));
        let list = exclude(Some("25,443"));
        assert!(list.captured(25) && list.captured(443) && !list.captured(587));
        let none = exclude(Some(""));
        assert!(!none.captured(443) && !none.captured(25));
    }

    #[test]
    fn status_port_is_not_added_twice() {
        let args = IptablesArgs::from_annotations(&pod(json!({EXCLUDE_INBOUND_PORTS: "15020,25"})))
            .unwrap()
            .unwrap();
        assert_eq!(args.exclude_inbound_ports, "15090,15021,15020,25");
    }

    #[test]
    fn invalid_port_lists_and_no_interception() {
        for bad in ["25,", "1000-2000", "*", "smtp"] {
            let result = IptablesArgs::from_annotations(&pod(json!({EXCLUDE_INBOUND_PORTS: bad})));
            assert!(result.is_err(), "{bad:?} must be rejected");
        }
        let none = IptablesArgs::from_annotations(&pod(json!({INTERCEPTION_MODE: "NONE"})));
        assert_eq!(none, Ok(None));
    }

    #[test]
    fn istio_init_args_win_over_annotations() {
        let mut injected = pod(json!({EXCLUDE_INBOUND_PORTS: "25"}));
        injected["spec"]["initContainers"] = json!([{"name": "istio-init", "args": [
            "istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
            "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020",
            "--log_output_level=default:info"]}]);
        let args = pod_capture(&injected).unwrap().unwrap();
        assert_eq!(args.source, Source::IstioInit);
        assert_eq!(args.proxy_gid, "1337");
        assert!(
            args.captured(25),
            "istio-init was rendered before the annotation"
        );

        // istio-cni's validation container applies nothing: the annotations decide.
        injected["spec"]["initContainers"] = json!([{"name": "istio-validation", "args": [
            "istio-iptables", "-b", "*", "-d", "15090,15021,15020",
            "--run-validation", "--skip-rule-apply"]}]);
        let args = pod_capture(&injected).unwrap().unwrap();
        assert_eq!(args.source, Source::Annotations);
        assert!(!args.captured(25));

        let unknown = IptablesArgs::parse(&words("-b * -k eth1"));
        assert!(unknown.is_err());
        let missing = IptablesArgs::parse(&words("-b"));
        assert!(missing.is_err());
    }

    #[test]
    fn nat_rules_for_an_excluding_wildcard() {
        let args = IptablesArgs::from_annotations(&pod(json!({EXCLUDE_INBOUND_PORTS: "25"})))
            .unwrap()
            .unwrap();
        let expected = "\
*nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 25 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
";
        assert_eq!(args.restore_input().unwrap(), expected);
    }

    #[test]
    fn nat_rules_for_an_include_list_and_outbound_settings() {
        let args = IptablesArgs::parse(&words(concat!(
            "-p 15001 -z 15006 -u 1337 -m REDIRECT -i '' -x 10.0.0.0/8 ",
            "-b 32000,31000 -d 15090,15021,25,15020 -o 7 -q 9"
        )))
        .unwrap();
        let rules = args.nat_rules().unwrap();
        let inbound: Vec<&str> = rules
            .iter()
            .map(String::as_str)
            .filter(|r| r.starts_with("-A ISTIO_INBOUND") || r.starts_with("-A PREROUTING"))
            .collect();
        assert_eq!(
            inbound,
            [
                "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
                "-A PREROUTING -p tcp -j ISTIO_INBOUND",
                "-A ISTIO_INBOUND -p tcp --dport 32000 -j ISTIO_IN_REDIRECT",
                "-A ISTIO_INBOUND -p tcp --dport 31000 -j ISTIO_IN_REDIRECT",
            ]
        );
        let output: Vec<&str> = rules
            .iter()
            .map(String::as_str)
            .filter(|r| r.starts_with("-A ISTIO_OUTPUT") && !r.contains("-owner"))
            .collect();
        assert_eq!(
            output,
            [
                "-A ISTIO_OUTPUT -p tcp --dport 7 -j RETURN",
                "-A ISTIO_OUTPUT -p udp --dport 7 -j RETURN",
                "-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN",
                "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
                "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j RETURN",
                "-A ISTIO_OUTPUT -p tcp --dport 9 -j ISTIO_REDIRECT",
            ]
        );

        let nothing = IptablesArgs::parse(&words("-u 1337 -b '' -i ''")).unwrap();
        let rules = nothing.nat_rules().unwrap();
        assert!(!rules.iter().any(|r| r.contains("PREROUTING")), "{rules:?}");
        assert!(!rules.iter().any(|r| r.ends_with("-j ISTIO_REDIRECT")));

        let tproxy = IptablesArgs::parse(&words("-m TPROXY -b *")).unwrap();
        assert!(tproxy.nat_rules().is_err());
        assert!(tproxy.captured(25));
    }
}
