//! FTP passive data ports (pure): the one rule that picks, beside an FTP control port, the ports
//! that carry its passive data connections, for container ports and Service ports alike.
//!
//! A download's data connection is server-first: the client connects to the passive port and
//! waits for the file (`RETR`) or the listing (`LIST`), so a sniffing proxy stalls it as it
//! stalls a banner.

use crate::catalog::strip_name_prefix;
use crate::config::Config;
use crate::ports::{PortSet, phrase};

/// The catalog protocol of an FTP control port.
pub const CONTROL_PROTOCOL: &str = "ftp";
/// What a finding of a passive data port names as its protocol.
pub const PROTOCOL: &str = "ftp-passive";

/// Port-name prefixes of FTP passive data ports.
const PREFIXES: &[&str] = &["pasv", "ftp-data"];

/// Passive data ports are dynamic: servers use unprivileged ones (vsftpd `pasv_min_port`,
/// pure-ftpd `-p`, ProFTPD `PassivePorts` all live above 1023 in practice).
const MIN_PORT: u16 = 1024;

/// Port-name words that give a port a protocol of its own, so that it is not an FTP passive
/// port: Istio's protocol prefixes (pkg/config/protocol/instance.go, `Parse`) and the usual
/// names of metrics, health and admin endpoints.
const KNOWN_NAME_WORDS: &[&str] = &[
    "grpc",
    "http",
    "http2",
    "https",
    "tcp",
    "tls",
    "udp",
    "mongo",
    "redis",
    "mysql",
    "hbone",
    "h2c",
    "ws",
    "wss",
    "metrics",
    "monitoring",
    "prometheus",
    "health",
    "healthz",
    "probe",
    "status",
    "admin",
    "debug",
    "web",
    "ssh",
    "dns",
];

/// Name prefixes that mean a protocol even without a `-` (`http8080`, `https`, `metrics2`).
const KNOWN_NAME_PREFIXES: &[&str] = &["http", "grpc", "metrics"];

/// Whether a TCP port beside an FTP control port carries its passive data connections. `names`
/// are the names the port goes by (a container port's name; a Service port's name and its named
/// `targetPort`), `""` when it has none. It does when a name says so (`pasv…`, `ftp-data…` after
/// an Istio `tcp-`/`tls-` prefix), when the number is in the configured `ftp.passivePorts`, or
/// when it is unprivileged, no catalog port, and no name gives it a protocol of its own (real
/// FTP manifests declare their passive range as dozens of bare ports).
pub fn is_passive(number: u16, names: &[&str], config: &Config) -> bool {
    let named_passive = |name: &str| {
        let base = strip_name_prefix(name);
        PREFIXES.iter().any(|prefix| base.starts_with(prefix))
    };
    if names.iter().any(|name| named_passive(name)) || config.ftp.is_passive_port(number) {
        return true;
    }
    number >= MIN_PORT
        && names.iter().all(|name| {
            config.catalog.entry_for(Some(number), name).is_none() && !names_a_protocol(name)
        })
}

/// The operator's note on passive ports found beside `control` in `owner` (`container "vsftpd"`,
/// `Service "ftp"`): `FTP passive data ports 21100,21101 (Service "ftp", beside FTP control
/// port 21)`.
pub fn note(passive: &PortSet, owner: &str, control: &PortSet) -> String {
    format!(
        "FTP passive data {} ({owner}, beside FTP control {})",
        phrase(passive.iter().copied()),
        phrase(control.iter().copied())
    )
}

/// The port name says which protocol the port speaks.
fn names_a_protocol(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let first_word = lower.split('-').next().unwrap_or_default();
    KNOWN_NAME_WORDS.contains(&first_word)
        || KNOWN_NAME_PREFIXES
            .iter()
            .any(|prefix| lower.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_name_by_number_and_by_configuration() {
        let config = Config::default();
        // (number, names, passive)
        let cases: &[(u16, &[&str], bool)] = &[
            (30000, &["pasv-1"], true),
            (20, &["ftp-data"], true),
            (21100, &["tcp-pasv-start"], true),
            (500, &["pasv-low"], true),
            (30000, &[""], true),
            (30000, &["data1"], true),
            (1023, &[""], false),
            (9100, &["metrics"], false),
            (8080, &["http-admin"], false),
            (8443, &["https"], false),
            (9200, &["tcp-health"], false),
            (3306, &[""], false),
            (1587, &["submission"], false),
            // A Service port's name and its named targetPort must both allow it.
            (30000, &["data", "http"], false),
            (30000, &["data", "pasv-1"], true),
        ];
        for &(number, names, expected) in cases {
            assert_eq!(
                is_passive(number, names, &config),
                expected,
                "{number} {names:?}"
            );
        }
    }

    #[test]
    fn the_configured_ports_count_whatever_their_name_or_number() {
        let config = Config::from_yaml("ftp:\n  passivePorts: \"900-901, 21100-21110\"\n").unwrap();
        assert!(is_passive(900, &[""], &config));
        assert!(is_passive(21105, &["tcp-21105"], &config));
        assert!(!is_passive(21105, &["tcp-21105"], &Config::default()));
        assert!(!is_passive(902, &[""], &config));
    }

    #[test]
    fn notes_read_like_ranges() {
        let passive: PortSet = [21100, 21101, 21102, 30000].into();
        assert_eq!(
            note(&passive, "Service \"ftp\"", &[21].into()),
            "FTP passive data ports 21100-21102,30000 (Service \"ftp\", beside FTP control port 21)"
        );
    }
}
