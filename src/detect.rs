//! Pod view → the server-first ports it exposes (pure).

use crate::config::{Config, resolve_name};
use crate::ftp_passive;
use crate::pod::{ContainerView, PodView};
use crate::ports::{PortSet, format_port_list, parse_nonzero_port_list};

/// Label or annotation: `"true"` leaves the pod alone.
pub const SKIP_KEY: &str = "serverfirst.dev/skip";
/// Annotation: more ports to treat as server-first, e.g. `"2525,10025"`.
pub const EXTRA_PORTS_KEY: &str = "serverfirst.dev/extra-ports";

/// Annotation: outbound ports to take out of capture, numbers or catalog names (`"587,smtp"`).
pub const OUTBOUND_PORTS_KEY: &str = "serverfirst.dev/outbound-ports";

/// Why a port was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The container port's number is a catalog port.
    Number,
    /// The container port's name stands for a catalog protocol.
    Name(String),
    /// An FTP passive data port beside an FTP control port (its name, `""` when unnamed).
    FtpPassive(String),
    /// The pod's `serverfirst.dev/extra-ports` annotation.
    ExtraPorts,
}

/// One server-first port found in the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub port: u16,
    /// Catalog protocol name, `ftp-passive`, or `extra`.
    pub protocol: String,
    /// The container that declares it; empty for the pod annotation.
    pub container: String,
    pub source: Source,
}

/// A port whose number or name is a catalog protocol that is turned off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffPort {
    pub port: u16,
    pub protocol: String,
}

/// What detection found, with notes for the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detection {
    pub findings: Vec<Finding>,
    pub warnings: Vec<String>,
    /// Ports of known protocols that are off, so that a report can say why they are left alone.
    pub off: Vec<OffPort>,
}

impl Detection {
    /// The distinct ports found, ascending.
    pub fn ports(&self) -> PortSet {
        self.findings.iter().map(|f| f.port).collect()
    }

    /// One line per protocol that is off: `3306 is mysql, off by default: `catalog.enable: [mysql]``.
    pub fn off_notes(&self) -> Vec<String> {
        let mut by_protocol: std::collections::BTreeMap<&str, PortSet> = Default::default();
        for off in &self.off {
            by_protocol
                .entry(off.protocol.as_str())
                .or_default()
                .insert(off.port);
        }
        by_protocol
            .into_iter()
            .map(|(protocol, ports)| {
                let ports = format_port_list(ports);
                let verb = if ports.contains(',') { "are" } else { "is" };
                format!("{ports} {verb} {protocol}, off by default: `catalog.enable: [{protocol}]`")
            })
            .collect()
    }
}

/// Why a pod is left alone before detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// `serverfirst.dev/skip: "true"` as label or annotation.
    OptedOut,
    /// Host-network pods share the node's stack; no sidecar captures them.
    HostNetwork,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::OptedOut => "opted out (serverfirst.dev/skip)",
            Skip::HostNetwork => "hostNetwork pod",
        }
    }
}

/// Finds the server-first ports of `pod` by the configured catalog and FTP passive ports, or
/// says why the pod is skipped.
pub fn detect(pod: &PodView<'_>, config: &Config) -> Result<Detection, Skip> {
    if is_true(pod.label(SKIP_KEY)) || is_true(pod.annotation(SKIP_KEY)) {
        return Err(Skip::OptedOut);
    }
    if pod.host_network() {
        return Err(Skip::HostNetwork);
    }
    let mut detection = Detection::default();
    let long_running = pod.containers().iter().chain(
        pod.init_containers()
            .iter()
            .filter(|c| c.is_native_sidecar()),
    );
    for container in long_running {
        detect_container(container, config, &mut detection);
    }
    if let Some(extra) = pod.annotation(EXTRA_PORTS_KEY) {
        match parse_nonzero_port_list(extra) {
            Ok(ports) => detection
                .findings
                .extend(ports.into_iter().map(|port| Finding {
                    port,
                    protocol: "extra".to_string(),
                    container: String::new(),
                    source: Source::ExtraPorts,
                })),
            Err(error) => detection
                .warnings
                .push(format!("{EXTRA_PORTS_KEY} ignored: {error}")),
        }
    }
    Ok(detection)
}

/// Outbound ports to exclude: the configured ones and the pod's `serverfirst.dev/outbound-ports`
/// (an invalid annotation is ignored whole, with a warning).
pub fn outbound_ports(pod: &PodView<'_>, config: &Config, warnings: &mut Vec<String>) -> PortSet {
    let mut ports: PortSet = config.outbound_ports.iter().copied().collect();
    if let Some(value) = pod
        .annotation(OUTBOUND_PORTS_KEY)
        .filter(|v| !v.trim().is_empty())
    {
        let resolved: Option<Vec<Vec<u16>>> = value
            .split(',')
            .map(|entry| resolve_name(entry, &config.catalog))
            .collect();
        match resolved {
            Some(resolved) => ports.extend(resolved.concat()),
            None => warnings.push(format!("{OUTBOUND_PORTS_KEY} ignored: {value:?} is not a list of ports or catalog protocol names")),
        }
    }
    ports
}

fn detect_container(container: &ContainerView<'_>, config: &Config, detection: &mut Detection) {
    let first = detection.findings.len();
    let tcp_ports = || container.ports().iter().filter(|p| p.is_tcp());
    for port in tcp_ports() {
        let Some(number) = port.number() else {
            continue;
        };
        let name = port.name.as_deref().unwrap_or_default();
        let Some(protocol) = config.catalog.entry_for(Some(number), name) else {
            continue;
        };
        if !protocol.enabled {
            detection.off.push(OffPort {
                port: number,
                protocol: protocol.name.clone(),
            });
            continue;
        }
        let by_number = protocol.ports.contains(&number);
        detection.findings.push(Finding {
            port: number,
            protocol: protocol.name.clone(),
            container: container.name().to_string(),
            source: match by_number {
                true => Source::Number,
                false => Source::Name(name.to_string()),
            },
        });
    }
    let control: PortSet = detection.findings[first..]
        .iter()
        .filter(|f| f.protocol == ftp_passive::CONTROL_PROTOCOL)
        .map(|f| f.port)
        .collect();
    if control.is_empty() {
        return;
    }
    let found: PortSet = detection.findings.iter().map(|f| f.port).collect();
    let mut passive = PortSet::new();
    for port in tcp_ports() {
        let Some(number) = port.number() else {
            continue;
        };
        let name = port.name.as_deref().unwrap_or_default();
        if !found.contains(&number)
            && ftp_passive::is_passive(number, &[name], config)
            && passive.insert(number)
        {
            detection.findings.push(Finding {
                port: number,
                protocol: ftp_passive::PROTOCOL.to_string(),
                container: container.name().to_string(),
                source: Source::FtpPassive(name.to_string()),
            });
        }
    }
    if !passive.is_empty() {
        let owner = format!("container {:?}", container.name());
        detection
            .warnings
            .push(ftp_passive::note(&passive, &owner, &control));
    }
}

pub(crate) fn is_true(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ports_of(pod: serde_json::Value) -> Result<Vec<u16>, Skip> {
        let bytes = serde_json::to_vec(&pod).unwrap();
        let view = PodView::from_json(&bytes).unwrap();
        detect(&view, &Config::default()).map(|d| d.ports().into_iter().collect())
    }

    fn with_ports(ports: serde_json::Value) -> serde_json::Value {
        json!({"spec": {"containers": [{"name": "app", "ports": ports}]}})
    }

    #[test]
    fn container_ports_table() {
        let cases: Vec<(&str, serde_json::Value, Vec<u16>)> = vec![
            ("by number", json!([{"containerPort": 25}]), vec![25]),
            (
                "every enabled default",
                json!([
                {"containerPort": 21}, {"containerPort": 25}, {"containerPort": 110},
                {"containerPort": 143}, {"containerPort": 389}, {"containerPort": 465},
                {"containerPort": 587}]),
                vec![21, 25, 110, 143, 389, 465, 587],
            ),
            (
                "off by default",
                json!([{"containerPort": 3306}, {"containerPort": 993}]),
                vec![],
            ),
            (
                "explicit TCP",
                json!([{"containerPort": 587, "protocol": "TCP"}]),
                vec![587],
            ),
            (
                "UDP never counts",
                json!([{"containerPort": 25, "protocol": "UDP"}]),
                vec![],
            ),
            (
                "UDP named smtp",
                json!([{"name": "smtp", "containerPort": 2525, "protocol": "UDP"}]),
                vec![],
            ),
            (
                "SCTP",
                json!([{"containerPort": 25, "protocol": "SCTP"}]),
                vec![],
            ),
            (
                "named port on a non-standard number",
                json!([{"name": "submission", "containerPort": 1587}]),
                vec![1587],
            ),
            (
                "istio prefix",
                json!([{"name": "tcp-smtp", "containerPort": 2525}]),
                vec![2525],
            ),
            (
                "suffix",
                json!([{"name": "smtp-internal", "containerPort": 10025}]),
                vec![10025],
            ),
            (
                "unrelated name",
                json!([{"name": "http", "containerPort": 8080}]),
                vec![],
            ),
            (
                "client-first name off",
                json!([{"name": "imaps", "containerPort": 1993}]),
                vec![],
            ),
            (
                "invalid number",
                json!([{"name": "smtp", "containerPort": 70000}]),
                vec![],
            ),
            (
                "duplicates",
                json!([{"containerPort": 25}, {"name": "smtp", "containerPort": 25}]),
                vec![25],
            ),
        ];
        for (what, ports, expected) in cases {
            assert_eq!(ports_of(with_ports(ports)).unwrap(), expected, "{what}");
        }
    }

    #[test]
    fn native_sidecars_count_and_ordinary_init_containers_do_not() {
        let pod = json!({"spec": {
        "containers": [{"name": "app"}],
        "initContainers": [
            {"name": "migrate", "ports": [{"containerPort": 25}]},
            {"name": "relay", "restartPolicy": "Always", "ports": [{"containerPort": 587}]}
        ]}});
        assert_eq!(ports_of(pod).unwrap(), [587]);
    }

    #[test]
    fn ftp_passive_ports_only_beside_an_ftp_control_port() {
        let ftp = json!([
            {"name": "ftp", "containerPort": 21},
            {"name": "pasv-1", "containerPort": 30000},
            {"name": "tcp-pasv2", "containerPort": 30001},
            {"name": "ftp-data", "containerPort": 20},
            {"name": "pasv-udp", "containerPort": 30002, "protocol": "UDP"},
            {"name": "http", "containerPort": 8080}
        ]);
        assert_eq!(ports_of(with_ports(ftp)).unwrap(), [20, 21, 30000, 30001]);
        let no_control =
            json!([{"name": "pasv-1", "containerPort": 30000}, {"containerPort": 30001}]);
        assert_eq!(ports_of(with_ports(no_control)).unwrap(), Vec::<u16>::new());
        let other_container = json!({"spec": {"containers": [
            {"name": "ftp", "ports": [{"containerPort": 21}]},
            {"name": "web", "ports": [{"name": "pasv-1", "containerPort": 30000}, {"containerPort": 30001}]}
        ]}});
        assert_eq!(ports_of(other_container).unwrap(), [21]);
    }

    #[test]
    fn configured_passive_ports_count_beside_an_ftp_control_port() {
        let ports = json!([
            {"name": "ftp", "containerPort": 21},
            {"name": "tcp-data", "containerPort": 21100},
            {"name": "http-data", "containerPort": 21101},
            {"name": "tcp-other", "containerPort": 21200}
        ]);
        let bytes = serde_json::to_vec(&with_ports(ports)).unwrap();
        let pod = PodView::from_json(&bytes).unwrap();
        let found = |config: &Config| -> Vec<u16> {
            detect(&pod, config).unwrap().ports().into_iter().collect()
        };
        assert_eq!(found(&Config::default()), [21]);
        let config = Config::from_yaml("ftp:\n  passivePorts: \"21100-21110\"\n").unwrap();
        assert_eq!(found(&config), [21, 21100, 21101]);
        let detection = detect(&pod, &config).unwrap();
        assert_eq!(
            detection.warnings,
            ["FTP passive data ports 21100,21101 (container \"app\", beside FTP control port 21)"]
        );
        // Without a control port the range means nothing.
        let lone = json!([{"name": "tcp-data", "containerPort": 21100}]);
        let bytes = serde_json::to_vec(&with_ports(lone)).unwrap();
        let pod = PodView::from_json(&bytes).unwrap();
        assert!(detect(&pod, &config).unwrap().findings.is_empty());
    }

    /// Shaped like public FTP manifests (e.g. a vsftpd or pure-ftpd Deployment): the passive
    /// range is declared as bare container ports, or with names of its own.
    #[test]
    fn unnamed_and_unknown_ports_beside_ftp_are_passive_ports() {
        let mut ports = vec![
            json!({"name": "ftp", "containerPort": 21, "protocol": "TCP"}),
            json!({"name": "metrics", "containerPort": 9100}),
            json!({"name": "http-admin", "containerPort": 8080}),
            json!({"name": "https", "containerPort": 8443}),
            json!({"name": "grpc", "containerPort": 9090}),
            json!({"name": "tcp-health", "containerPort": 9200}),
            json!({"containerPort": 3306}),
            json!({"containerPort": 30010, "protocol": "UDP"}),
            json!({"name": "data1", "containerPort": 30100}),
            json!({"containerPort": 990}),
            json!({"containerPort": 1023}),
        ];
        for port in 30000..30010 {
            ports.push(json!({"containerPort": port, "protocol": "TCP"}));
        }
        let pod = json!({"metadata": {"name": "ftp"}, "spec": {"containers": [
            {"name": "vsftpd", "image": "fauria/vsftpd", "ports": ports}]}});
        let bytes = serde_json::to_vec(&pod).unwrap();
        let detection = detect(&PodView::from_json(&bytes).unwrap(), &Config::default()).unwrap();
        let mut expected: Vec<u16> = vec![21];
        expected.extend(30000..30010);
        expected.push(30100);
        assert_eq!(detection.ports().into_iter().collect::<Vec<_>>(), expected);
        let passive = detection
            .findings
            .iter()
            .filter(|f| f.protocol == "ftp-passive")
            .count();
        assert_eq!(passive, 11);
        assert_eq!(
            detection.warnings,
            [
                "FTP passive data ports 30000-30009,30100 (container \"vsftpd\", beside FTP control port 21)"
            ]
        );
        assert_eq!(
            detection.off_notes(),
            [
                "990 is ftps, off by default: `catalog.enable: [ftps]`",
                "3306 is mysql, off by default: `catalog.enable: [mysql]`"
            ]
        );
    }

    /// A real mail server's ports: 993 named `imap-secure` is IMAPS (client-first, off), not IMAP.
    #[test]
    fn implicit_tls_ports_are_not_taken_for_their_plain_protocol() {
        let pod = with_ports(json!([
            {"name": "smtp", "containerPort": 25},
            {"name": "submission", "containerPort": 587},
            {"name": "imap", "containerPort": 143},
            {"name": "imap-secure", "containerPort": 993},
            {"name": "pop3-ssl", "containerPort": 1995},
            {"name": "imap-tls", "containerPort": 10993}
        ]));
        let bytes = serde_json::to_vec(&pod).unwrap();
        let detection = detect(&PodView::from_json(&bytes).unwrap(), &Config::default()).unwrap();
        assert_eq!(
            detection.ports().into_iter().collect::<Vec<_>>(),
            [25, 143, 587]
        );
        assert_eq!(
            detection.off_notes(),
            [
                "993,10993 are imaps, off by default: `catalog.enable: [imaps]`",
                "1995 is pop3s, off by default: `catalog.enable: [pop3s]`"
            ]
        );
    }

    #[test]
    fn extra_ports_annotation() {
        let pod = json!({"metadata": {"annotations": {EXTRA_PORTS_KEY: "2525, 10025"}},
                         "spec": {"containers": [{"ports": [{"containerPort": 25}]}]}});
        assert_eq!(ports_of(pod).unwrap(), [25, 2525, 10025]);

        let bad = json!({"metadata": {"annotations": {EXTRA_PORTS_KEY: "2525,x"}},
                         "spec": {"containers": [{"ports": [{"containerPort": 25}]}]}});
        let bytes = serde_json::to_vec(&bad).unwrap();
        let detection = detect(&PodView::from_json(&bytes).unwrap(), &Config::default()).unwrap();
        assert_eq!(detection.ports().into_iter().collect::<Vec<_>>(), [25]);
        assert!(detection.warnings[0].contains("serverfirst.dev/extra-ports ignored"));
    }

    #[test]
    fn skip_variants() {
        let smtp = json!([{"containerPort": 25}]);
        let cases = [
            (json!({"labels": {SKIP_KEY: "true"}}), Some(Skip::OptedOut)),
            (
                json!({"annotations": {SKIP_KEY: "true"}}),
                Some(Skip::OptedOut),
            ),
            (
                json!({"annotations": {SKIP_KEY: "True"}}),
                Some(Skip::OptedOut),
            ),
            (json!({"annotations": {SKIP_KEY: "false"}}), None),
            (json!({"labels": {SKIP_KEY: "no"}}), None),
        ];
        for (metadata, expected) in cases {
            let pod = json!({"metadata": metadata, "spec": {"containers": [{"ports": smtp}]}});
            assert_eq!(ports_of(pod.clone()).err(), expected, "{pod}");
        }
        let host = json!({"spec": {"hostNetwork": true, "containers": [{"ports": smtp}]}});
        assert_eq!(ports_of(host).err(), Some(Skip::HostNetwork));
    }

    #[test]
    fn records_how_each_port_was_found() {
        let pod = json!({"spec": {"containers": [{"name": "mox", "ports": [
            {"name": "smtp", "containerPort": 25}, {"name": "submission", "containerPort": 1587}]}]}});
        let bytes = serde_json::to_vec(&pod).unwrap();
        let detection = detect(&PodView::from_json(&bytes).unwrap(), &Config::default()).unwrap();
        assert_eq!(detection.findings[0].source, Source::Number);
        assert_eq!(
            detection.findings[1].source,
            Source::Name("submission".into())
        );
        assert_eq!(detection.findings[1].container, "mox");
        assert_eq!(detection.findings[1].protocol, "submission");
    }
}
