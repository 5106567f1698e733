//! Service view → the Service ports that serve a server-first protocol (pure).
//!
//! The same rule as for container ports, applied to each number and name a Service port
//! carries: `port` and a numeric `targetPort` by number, `name` and a named `targetPort` by the
//! IANA name rules. Client-first entries need nothing on a Service: the client speaks first and
//! a sniffing proxy completes its detection.

use crate::catalog::{Catalog, Wire};
use crate::detect::{SKIP_KEY, Skip};
use crate::service::{ServicePortView, ServiceView};

/// Why a Service port was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceSource {
    /// The Service `port` is a catalog port.
    Port,
    /// The numeric `targetPort` is a catalog port.
    TargetPort(u16),
    /// The port's `name` stands for a catalog protocol.
    Name(String),
    /// The named `targetPort` stands for a catalog protocol.
    TargetPortName(String),
}

/// One Service port that serves a server-first protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFinding {
    /// Index in `spec.ports`.
    pub index: usize,
    /// The Service `port`.
    pub port: u16,
    /// Catalog protocol name.
    pub protocol: String,
    pub source: ServiceSource,
}

/// Finds the server-first ports of `service`, or says why it is skipped.
pub fn detect_service(
    service: &ServiceView<'_>,
    catalog: &Catalog,
) -> Result<Vec<ServiceFinding>, Skip> {
    let opted_out =
        |value: Option<&str>| value.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if opted_out(service.label(SKIP_KEY)) || opted_out(service.annotation(SKIP_KEY)) {
        return Err(Skip::OptedOut);
    }
    Ok(service
        .ports()
        .iter()
        .enumerate()
        .filter_map(|(index, port)| finding(index, port, catalog))
        .collect())
}

fn finding(index: usize, port: &ServicePortView<'_>, catalog: &Catalog) -> Option<ServiceFinding> {
    let number = port.number().filter(|_| port.is_tcp())?;
    let name = port.name();
    let server_first = |by_number: Option<u16>, by_name: &str| {
        catalog
            .entry_for(by_number, by_name)
            .filter(|p| p.enabled && p.wire == Wire::ServerFirst)
    };
    // The number decides when it is an entry's port; the name only on other numbers.
    let by_number_or_name = |by_number: u16, source: ServiceSource| {
        server_first(Some(by_number), name).map(|entry| match entry.ports.contains(&by_number) {
            true => (entry, source),
            false => (entry, ServiceSource::Name(name.to_string())),
        })
    };
    let target_number = port.target_port.as_ref().and(port.target_number());
    let (entry, source) = by_number_or_name(number, ServiceSource::Port)
        .or_else(|| {
            target_number
                .and_then(|target| by_number_or_name(target, ServiceSource::TargetPort(target)))
        })
        .or_else(|| {
            let target = port.target_name()?;
            server_first(None, target)
                .map(|entry| (entry, ServiceSource::TargetPortName(target.to_string())))
        })?;
    Some(ServiceFinding {
        index,
        port: number,
        protocol: entry.name.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn found(ports: Value) -> Vec<(u16, String, ServiceSource)> {
        let bytes = serde_json::to_vec(&json!({"spec": {"ports": ports}})).unwrap();
        let service = ServiceView::from_json(&bytes).unwrap();
        detect_service(&service, &Catalog::builtin())
            .unwrap()
            .into_iter()
            .map(|f| (f.port, f.protocol, f.source))
            .collect()
    }

    #[test]
    fn service_ports_table() {
        use ServiceSource::*;
        type Case<'a> = (&'a str, Value, Vec<(u16, &'a str, ServiceSource)>);
        let cases: Vec<Case> = vec![
            (
                "by port",
                json!([{"port": 587}]),
                vec![(587, "submission", Port)],
            ),
            (
                "by numeric targetPort",
                json!([{"port": 2587, "targetPort": 587}]),
                vec![(2587, "submission", TargetPort(587))],
            ),
            (
                "by name on another number",
                json!([{"name": "imap", "port": 1143}]),
                vec![(1143, "imap", Name("imap".into()))],
            ),
            (
                "by named targetPort",
                json!([{"name": "mail", "port": 8025, "targetPort": "smtp"}]),
                vec![(8025, "smtp", TargetPortName("smtp".into()))],
            ),
            (
                "istio prefix and suffix",
                json!([{"name": "tcp-pop3-2", "port": 1110}]),
                vec![(1110, "pop3", Name("tcp-pop3-2".into()))],
            ),
            (
                "UDP never counts",
                json!([{"port": 25, "protocol": "UDP"}]),
                vec![],
            ),
            (
                "SCTP",
                json!([{"name": "smtp", "port": 25, "protocol": "SCTP"}]),
                vec![],
            ),
            (
                "client-first by number",
                json!([{"port": 465}, {"port": 389}]),
                vec![],
            ),
            (
                "client-first number decides over a server-first name",
                json!([{"name": "smtp", "port": 465, "targetPort": 465}]),
                vec![],
            ),
            (
                "disabled entry",
                json!([{"port": 3306}, {"name": "nntp", "port": 1119}]),
                vec![],
            ),
            (
                "implicit-TLS suffix means the TLS entry",
                json!([{"name": "imap-tls", "port": 1143}, {"name": "smtp-implicit", "port": 2465}]),
                vec![],
            ),
            (
                "unrelated",
                json!([{"name": "http", "port": 80, "targetPort": 8080}]),
                vec![],
            ),
            (
                "invalid number",
                json!([{"name": "smtp", "port": 70000}]),
                vec![],
            ),
        ];
        for (what, ports, expected) in cases {
            let expected: Vec<_> = expected
                .into_iter()
                .map(|(p, name, source)| (p, name.to_string(), source))
                .collect();
            assert_eq!(found(ports), expected, "{what}");
        }
    }

    #[test]
    fn records_the_index_of_each_port() {
        let bytes = br#"{"spec": {"ports": [{"name": "http", "port": 80}, {"port": 110}]}}"#;
        let service = ServiceView::from_json(bytes).unwrap();
        let findings = detect_service(&service, &Catalog::builtin()).unwrap();
        assert_eq!(findings.len(), 1);
        assert_eq!((findings[0].index, findings[0].port), (1, 110));
    }

    #[test]
    fn opt_out_by_label_or_annotation() {
        for metadata in [
            json!({"labels": {SKIP_KEY: "true"}}),
            json!({"annotations": {SKIP_KEY: "True"}}),
        ] {
            let bytes = serde_json::to_vec(
                &json!({"metadata": metadata, "spec": {"ports": [{"port": 25}]}}),
            )
            .unwrap();
            let service = ServiceView::from_json(&bytes).unwrap();
            assert_eq!(
                detect_service(&service, &Catalog::builtin()),
                Err(Skip::OptedOut),
                "{metadata}"
            );
        }
    }
}
