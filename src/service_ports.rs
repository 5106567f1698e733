//! Service view → the Service ports that serve a server-first protocol (pure).
//!
//! The same rule as for container ports, applied to each number and name a Service port
//! carries: `port` and a numeric `targetPort` by number, `name` and a named `targetPort` by the
//! IANA name rules. Client-first entries need nothing on a Service: the client speaks first and
//! a sniffing proxy completes its detection. Beside an FTP control port, the Service's FTP
//! passive data ports count too, by the rule container ports follow ([`crate::ftp_passive`]).

use crate::catalog::{Catalog, Wire};
use crate::config::Config;
use crate::detect::{SKIP_KEY, Skip};
use crate::ftp_passive;
use crate::ports::PortSet;
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
    /// An FTP passive data port beside an FTP control port (its name, `""` when unnamed).
    FtpPassive(String),
}

/// One Service port that serves a server-first protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFinding {
    /// Index in `spec.ports`.
    pub index: usize,
    /// The Service `port`.
    pub port: u16,
    /// Catalog protocol name, or `ftp-passive`.
    pub protocol: String,
    pub source: ServiceSource,
}

/// What detection found on a Service, with notes for the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceDetection {
    pub findings: Vec<ServiceFinding>,
    pub warnings: Vec<String>,
}

/// Finds the server-first ports of `service` by the configured catalog and FTP passive ports, or
/// says why it is skipped.
pub fn detect_service(
    service: &ServiceView<'_>,
    config: &Config,
) -> Result<ServiceDetection, Skip> {
    let opted_out =
        |value: Option<&str>| value.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if opted_out(service.label(SKIP_KEY)) || opted_out(service.annotation(SKIP_KEY)) {
        return Err(Skip::OptedOut);
    }
    let mut detection = ServiceDetection {
        findings: service
            .ports()
            .iter()
            .enumerate()
            .filter_map(|(index, port)| finding(index, port, &config.catalog))
            .collect(),
        warnings: Vec::new(),
    };
    detect_ftp_passive(service, config, &mut detection);
    Ok(detection)
}

/// Adds the Service's FTP passive data ports when it also serves an FTP control port: the other
/// TCP ports that [`ftp_passive::is_passive`] takes, by the Service `port` and the names the
/// port goes by (its `name` and a named `targetPort`).
fn detect_ftp_passive(
    service: &ServiceView<'_>,
    config: &Config,
    detection: &mut ServiceDetection,
) {
    let control: PortSet = detection
        .findings
        .iter()
        .filter(|f| f.protocol == ftp_passive::CONTROL_PROTOCOL)
        .map(|f| f.port)
        .collect();
    if control.is_empty() {
        return;
    }
    let found: PortSet = detection.findings.iter().map(|f| f.port).collect();
    let mut passive = PortSet::new();
    for (index, port) in service.ports().iter().enumerate() {
        let Some(number) = port.number().filter(|_| port.is_tcp()) else {
            continue;
        };
        let mut names = vec![port.name()];
        names.extend(port.target_name());
        if !found.contains(&number)
            && ftp_passive::is_passive(number, &names, config)
            && passive.insert(number)
        {
            detection.findings.push(ServiceFinding {
                index,
                port: number,
                protocol: ftp_passive::PROTOCOL.to_string(),
                source: ServiceSource::FtpPassive(port.name().to_string()),
            });
        }
    }
    if !passive.is_empty() {
        let owner = format!("Service {:?}", service.display_name());
        detection
            .warnings
            .push(ftp_passive::note(&passive, &owner, &control));
    }
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
        detect_service(&service, &Config::default())
            .unwrap()
            .findings
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

    /// The Service of a public vsftpd README: the control port and two passive ports, named.
    #[test]
    fn ftp_passive_service_ports_beside_an_ftp_control_port_are_found() {
        use ServiceSource::*;
        let service = json!({"metadata": {"name": "vsftpd"}, "spec": {"ports": [
            {"name": "ftp-control", "port": 21, "targetPort": 21, "protocol": "TCP"},
            {"name": "pasv-start", "port": 21100, "targetPort": 21100, "protocol": "TCP"},
            {"name": "pasv-1", "port": 21101, "targetPort": 21101, "protocol": "TCP"}]}});
        let bytes = serde_json::to_vec(&service).unwrap();
        let detection =
            detect_service(&ServiceView::from_json(&bytes).unwrap(), &Config::default()).unwrap();
        let found: Vec<_> = detection
            .findings
            .iter()
            .map(|f| (f.index, f.port, f.protocol.as_str(), f.source.clone()))
            .collect();
        assert_eq!(
            found,
            [
                (0, 21, "ftp", Port),
                (1, 21100, "ftp-passive", FtpPassive("pasv-start".into())),
                (2, 21101, "ftp-passive", FtpPassive("pasv-1".into())),
            ]
        );
        assert_eq!(
            detection.warnings,
            ["FTP passive data ports 21100,21101 (Service \"vsftpd\", beside FTP control port 21)"]
        );
    }

    #[test]
    fn ftp_passive_service_ports_table() {
        let passive = |f: &(u16, String, ServiceSource)| f.1 == "ftp-passive";
        // (what, ports, passive ports found)
        let cases: Vec<(&str, Value, Vec<u16>)> = vec![
            (
                "no control port",
                json!([{"name": "pasv-start", "port": 21100}, {"name": "data", "port": 30000}]),
                vec![],
            ),
            (
                "control by name on another number; unnamed and unknown names; not a protocol",
                json!([
                    {"name": "ftp", "port": 2121},
                    {"name": "data", "port": 30000},
                    {"port": 30001},
                    {"name": "metrics", "port": 9100},
                    {"name": "http", "port": 8080},
                    {"name": "tcp-health", "port": 9200},
                    {"name": "low", "port": 990},
                    {"name": "pasv-udp", "port": 30002, "protocol": "UDP"},
                    {"name": "data-web", "port": 30003, "targetPort": "http"}
                ]),
                vec![30000, 30001],
            ),
            (
                "control by targetPort; ftp-data and an Istio prefix",
                json!([
                    {"name": "control", "port": 2121, "targetPort": 21},
                    {"name": "ftp-data", "port": 20},
                    {"name": "tcp-pasv-1", "port": 40000},
                    {"name": "data", "port": 1000, "targetPort": "pasv-2"}
                ]),
                vec![40000, 1000],
            ),
            (
                "a catalog port is never passive",
                json!([{"name": "ftp", "port": 21}, {"name": "data", "port": 3306}]),
                vec![],
            ),
        ];
        for (what, ports, expected) in cases {
            let passive: Vec<u16> = found(ports)
                .iter()
                .filter(|f| passive(f))
                .map(|f| f.0)
                .collect();
            assert_eq!(passive, expected, "{what}");
        }
    }

    #[test]
    fn configured_passive_ports_and_a_disabled_ftp_entry() {
        let ports = json!([
            {"name": "ftp", "port": 21},
            {"name": "tcp-data", "port": 21105},
            {"name": "http-files", "port": 21106}
        ]);
        let bytes = serde_json::to_vec(&json!({"spec": {"ports": ports}})).unwrap();
        let service = ServiceView::from_json(&bytes).unwrap();
        let ports_of = |config: &Config| -> Vec<u16> {
            let detection = detect_service(&service, config).unwrap();
            detection.findings.iter().map(|f| f.port).collect()
        };
        assert_eq!(ports_of(&Config::default()), [21]);
        let ranged = Config::from_yaml("ftp:\n  passivePorts: \"21100-21110\"\n").unwrap();
        assert_eq!(ports_of(&ranged), [21, 21105, 21106]);
        let off = Config::from_yaml(
            "catalog:\n  disable: [ftp]\nftp:\n  passivePorts: \"21100-21110\"\n",
        )
        .unwrap();
        assert_eq!(ports_of(&off), Vec::<u16>::new());
    }

    #[test]
    fn records_the_index_of_each_port() {
        let bytes = br#"{"spec": {"ports": [{"name": "http", "port": 80}, {"port": 110}]}}"#;
        let service = ServiceView::from_json(bytes).unwrap();
        let findings = detect_service(&service, &Config::default())
            .unwrap()
            .findings;
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
                detect_service(&service, &Config::default()),
                Err(Skip::OptedOut),
                "{metadata}"
            );
        }
    }
}
