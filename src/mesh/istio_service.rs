//! Istio profile for Services: `appProtocol: tcp` on each server-first port Istio would sniff.
//!
//! Istio's protocol for a Service port is derived exactly as Istio derives it: a port of
//! `pkg/config/kube/conversion.go` (`ConvertProtocol`) and `pkg/config/protocol/instance.go`
//! (`Parse`, `IsHTTP`). istiod calls it with the Service `port` (not the targetPort) in
//! `pilot/pkg/serviceregistry/kube/conversion.go` (`ConvertService`).
//!
//! A port whose protocol comes out `UnsupportedProtocol` is auto-detected: every meshed
//! client's outbound listener sniffs the client's first bytes (`IsHTTPOrSniffed`).

use crate::mesh::service::{ServiceChange, ServiceMeshPlan};
use crate::service::ServiceView;
use crate::service_ports::ServiceFinding;

/// `protocol.Instance`, less the internal HBONE values a Service cannot declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IstioProtocol {
    Grpc,
    GrpcWeb,
    Http,
    HttpProxy,
    Http2,
    Https,
    Tcp,
    Tls,
    Udp,
    Mongo,
    Redis,
    MySql,
    /// Not declared: sniffed.
    Unsupported,
}

/// `wellKnownPorts`: SMTP, DNS, MySQL, MongoDB are TCP when nothing else is said.
const WELL_KNOWN_TCP_PORTS: [u16; 4] = [25, 53, 3306, 27017];

impl IstioProtocol {
    /// `Instance.String()`.
    pub fn as_str(self) -> &'static str {
        match self {
            IstioProtocol::Grpc => "GRPC",
            IstioProtocol::GrpcWeb => "GRPC-Web",
            IstioProtocol::Http => "HTTP",
            IstioProtocol::HttpProxy => "HTTP_PROXY",
            IstioProtocol::Http2 => "HTTP2",
            IstioProtocol::Https => "HTTPS",
            IstioProtocol::Tcp => "TCP",
            IstioProtocol::Tls => "TLS",
            IstioProtocol::Udp => "UDP",
            IstioProtocol::Mongo => "Mongo",
            IstioProtocol::Redis => "Redis",
            IstioProtocol::MySql => "MySQL",
            IstioProtocol::Unsupported => "UnsupportedProtocol",
        }
    }

    /// `Instance.IsHTTP`: proxied by the HTTP connection manager, which waits for a request.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            IstioProtocol::Http
                | IstioProtocol::Http2
                | IstioProtocol::HttpProxy
                | IstioProtocol::Grpc
                | IstioProtocol::GrpcWeb
        )
    }

    /// `Instance.IsUnsupported`: Istio sniffs the port.
    pub fn is_sniffed(self) -> bool {
        self == IstioProtocol::Unsupported
    }
}

/// `protocol.Parse`: case-insensitive. Go lowercases with Unicode rules; no keyword holds a
/// letter that a non-ASCII character lowercases to, so ASCII folding is the same. Its
/// `"DoubleHBONE"` case compares a lowercased string with a mixed-case one and never matches.
fn parse(name: &str) -> IstioProtocol {
    match name.to_ascii_lowercase().as_str() {
        "tcp" => IstioProtocol::Tcp,
        "udp" => IstioProtocol::Udp,
        "grpc" => IstioProtocol::Grpc,
        "grpc-web" => IstioProtocol::GrpcWeb,
        "http" => IstioProtocol::Http,
        "http_proxy" => IstioProtocol::HttpProxy,
        "http2" => IstioProtocol::Http2,
        "https" => IstioProtocol::Https,
        "tls" => IstioProtocol::Tls,
        "mongo" => IstioProtocol::Mongo,
        "redis" => IstioProtocol::Redis,
        "mysql" => IstioProtocol::MySql,
        _ => IstioProtocol::Unsupported,
    }
}

/// `ConvertProtocol(port, portName, proto, appProto)`.
pub fn convert_protocol(
    port: u16,
    port_name: &str,
    protocol: Option<&str>,
    app_protocol: Option<&str>,
) -> IstioProtocol {
    // corev1.ProtocolUDP, compared exactly.
    if protocol == Some("UDP") {
        return IstioProtocol::Udp;
    }
    let mut name = port_name;
    if let Some(app_protocol) = app_protocol {
        name = app_protocol;
        // Kubernetes' standard appProtocol names, for appProtocol only.
        match name {
            "kubernetes.io/h2c" => return IstioProtocol::Http2,
            "kubernetes.io/ws" => return IstioProtocol::Http,
            "kubernetes.io/wss" => return IstioProtocol::Https,
            _ => {}
        }
    }
    // The "grpc-web" prefix, before the cut at the first '-' (strings.EqualFold on 8 bytes).
    if name
        .as_bytes()
        .get(..8)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"grpc-web"))
    {
        return IstioProtocol::GrpcWeb;
    }
    let prefix = name.split_once('-').map_or(name, |(prefix, _)| prefix);
    match parse(prefix) {
        IstioProtocol::Unsupported if WELL_KNOWN_TCP_PORTS.contains(&port) => IstioProtocol::Tcp,
        protocol => protocol,
    }
}

/// Plans `appProtocol: tcp` for each of the `findings` that Istio would sniff. An existing
/// appProtocol is never changed: one Istio does not know, or an HTTP-family protocol, gets a
/// warning instead.
pub fn plan(service: &ServiceView<'_>, findings: &[ServiceFinding]) -> ServiceMeshPlan {
    let mut plan = ServiceMeshPlan::default();
    for finding in findings {
        let Some(port) = service.ports().get(finding.index) else {
            continue;
        };
        let app_protocol = port.app_protocol.as_deref();
        let protocol = convert_protocol(
            finding.port,
            port.name(),
            port.protocol.as_deref(),
            app_protocol,
        );
        let what = format!("port {} ({})", finding.port, finding.protocol);
        match (protocol, app_protocol) {
            (IstioProtocol::Unsupported, None) => {
                plan.changes.push(ServiceChange::SetAppProtocol {
                    port: finding.index,
                    value: "tcp".to_string(),
                });
                plan.declared.insert(finding.port);
            }
            (IstioProtocol::Unsupported, Some(app_protocol)) => plan.warnings.push(format!(
                "{what}: Istio does not know appProtocol {app_protocol:?} and sniffs it; set tcp"
            )),
            (protocol, _) if protocol.is_http() => {
                let declared_by = match app_protocol {
                    Some(app_protocol) => format!("appProtocol {app_protocol:?}"),
                    None => format!("name {:?}", port.name()),
                };
                plan.warnings.push(format!(
                    "{what}: Istio proxies it as {} ({declared_by}), the banner never arrives; use tcp",
                    protocol.as_str()
                ));
            }
            _ => {}
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use IstioProtocol::*;

    #[test]
    fn convert_protocol_cases() {
        // (port, name, protocol, appProtocol, expected); the first ones are Istio's own
        // TestConvertProtocol cases (pkg/config/kube/conversion_test.go).
        type Case<'a> = (
            u16,
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            IstioProtocol,
        );
        let cases: &[Case] = &[
            (0, "", None, None, Unsupported),
            (0, "", Some("UDP"), None, Udp),
            (0, "http-something", None, None, Http),
            (0, "http-something", None, Some("https"), Https),
            (0, "something-httpx", None, Some("https"), Https),
            (0, "grpc-web-x", None, None, GrpcWeb),
            (0, "grpcweb-x", None, None, Unsupported),
            (3306, "random-name", None, None, Tcp),
            (3306, "random-name", None, Some("kubernetes.io/h2c"), Http2),
            // Server-first names Istio does not know: sniffed.
            (587, "submission", None, None, Unsupported),
            (143, "imap", Some("TCP"), None, Unsupported),
            (110, "pop3", None, None, Unsupported),
            (21, "ftp", None, None, Unsupported),
            // Known prefixes, any case.
            (587, "tcp-submission", None, None, Tcp),
            (587, "TCP-submission", None, None, Tcp),
            (587, "tls-submission", None, None, Tls),
            (587, "mysql", None, None, MySql),
            (587, "http2-x", None, None, Http2),
            (587, "http_proxy", None, None, HttpProxy),
            (587, "grpc", None, None, Grpc),
            (587, "GRPC-WEB", None, None, GrpcWeb),
            (587, "mongo-1", None, None, Mongo),
            (587, "redis", None, None, Redis),
            (587, "doublehbone", None, None, Unsupported),
            // appProtocol wins over the name, also when Istio does not know it.
            (587, "tcp-submission", None, Some("smtp"), Unsupported),
            (587, "submission", None, Some("tcp"), Tcp),
            (587, "submission", None, Some("http"), Http),
            (587, "submission", None, Some("kubernetes.io/ws"), Http),
            (587, "submission", None, Some("kubernetes.io/wss"), Https),
            // Kubernetes' names only count as appProtocol.
            (587, "kubernetes.io/h2c", None, None, Unsupported),
            // Well-known ports, matched on the Service port only.
            (25, "smtp", None, None, Tcp),
            (53, "", None, None, Tcp),
            (27017, "db", None, None, Tcp),
            (25, "smtp", None, Some("smtp"), Tcp),
            (25, "http", None, None, Http),
            (2525, "smtp", None, None, Unsupported),
            (25, "", Some("UDP"), None, Udp),
            // SCTP is not UDP: the name decides.
            (25, "sctp", Some("SCTP"), None, Tcp),
        ];
        for &(port, name, protocol, app_protocol, expected) in cases {
            assert_eq!(
                convert_protocol(port, name, protocol, app_protocol),
                expected,
                "ConvertProtocol({port}, {name:?}, {protocol:?}, {app_protocol:?})"
            );
        }
    }

    #[test]
    fn families() {
        assert!(Http.is_http() && Grpc.is_http() && GrpcWeb.is_http() && HttpProxy.is_http());
        assert!(!Https.is_http() && !Tcp.is_http() && !Unsupported.is_http());
        assert!(Unsupported.is_sniffed() && !Tcp.is_sniffed());
        assert_eq!(Unsupported.as_str(), "UnsupportedProtocol");
    }
    fn plan_json(ports: serde_json::Value) -> ServiceMeshPlan {
        let bytes = serde_json::to_vec(&serde_json::json!({"spec": {"ports": ports}})).unwrap();
        let service = ServiceView::from_json(&bytes).unwrap();
        let config = crate::config::Config::default();
        let detection = crate::service_ports::detect_service(&service, &config).unwrap();
        plan(&service, &detection.findings)
    }

    #[test]
    fn plan_table() {
        use serde_json::json;
        // (what, ports, declared Service ports, warning starts)
        let cases: Vec<(&str, serde_json::Value, Vec<u16>, Vec<&str>)> = vec![
            (
                "named submission",
                json!([{"name": "submission", "port": 587}]),
                vec![587],
                vec![],
            ),
            ("no name", json!([{"port": 143}]), vec![143], vec![]),
            (
                "named targetPort",
                json!([{"name": "mail", "port": 8110, "targetPort": "pop3"}]),
                vec![8110],
                vec![],
            ),
            (
                "2525 -> 25 is sniffed",
                json!([{"name": "smtp", "port": 2525, "targetPort": 25}]),
                vec![2525],
                vec![],
            ),
            (
                "25 -> 587 is not",
                json!([{"name": "submission", "port": 25, "targetPort": 587}]),
                vec![],
                vec![],
            ),
            (
                "tcp- prefix",
                json!([{"name": "tcp-submission", "port": 587}]),
                vec![],
                vec![],
            ),
            (
                "appProtocol tcp",
                json!([{"name": "submission", "port": 587, "appProtocol": "tcp"}]),
                vec![],
                vec![],
            ),
            (
                "UDP",
                json!([{"name": "submission", "port": 587, "protocol": "UDP"}]),
                vec![],
                vec![],
            ),
            (
                "unknown appProtocol is left, with a warning",
                json!([{"name": "submission", "port": 587, "appProtocol": "smtp"}]),
                vec![],
                vec!["port 587 (submission): Istio does not know appProtocol \"smtp\""],
            ),
            (
                "HTTP appProtocol is left, with a warning",
                json!([{"name": "imap", "port": 143, "appProtocol": "http"}]),
                vec![],
                vec!["port 143 (imap): Istio proxies it as HTTP (appProtocol \"http\")"],
            ),
            (
                "HTTP by name on a server-first number",
                json!([{"name": "http-mail", "port": 110}]),
                vec![],
                vec!["port 110 (pop3): Istio proxies it as HTTP (name \"http-mail\")"],
            ),
            (
                "not server-first",
                json!([{"name": "http", "port": 80}, {"port": 465}]),
                vec![],
                vec![],
            ),
        ];
        for (what, ports, declared, warnings) in cases {
            let plan = plan_json(ports);
            assert_eq!(
                plan.declared.iter().copied().collect::<Vec<_>>(),
                declared,
                "{what}"
            );
            assert_eq!(plan.changes.len(), declared.len(), "{what}");
            assert_eq!(
                plan.warnings.len(),
                warnings.len(),
                "{what}: {:?}",
                plan.warnings
            );
            for (warning, start) in plan.warnings.iter().zip(warnings) {
                assert!(warning.starts_with(start), "{what}: {warning}");
            }
        }
    }

    #[test]
    fn writes_app_protocol_on_the_right_index() {
        let plan = plan_json(
            serde_json::json!([{"name": "http", "port": 80}, {"name": "ftp", "port": 21}]),
        );
        assert_eq!(
            plan.changes,
            [ServiceChange::SetAppProtocol {
                port: 1,
                value: "tcp".into()
            }]
        );
    }
}
