//! The catalog of protocols serverfirst knows: ports, IANA port names and who speaks first.

use serde::{Deserialize, Serialize};

/// Which side sends the first bytes on a fresh connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Wire {
    /// The server greets first (SMTP `220`, IMAP `* OK`): a sniffing proxy stalls it.
    ServerFirst,
    /// The client sends first (implicit TLS, LDAP); listed because operators ask for them.
    ClientFirst,
}

impl Wire {
    pub fn as_str(self) -> &'static str {
        match self {
            Wire::ServerFirst => "server-first",
            Wire::ClientFirst => "client-first",
        }
    }
}

/// One protocol of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Protocol {
    pub name: String,
    pub ports: Vec<u16>,
    /// IANA service names a `containerPort.name` may carry for this protocol.
    pub port_names: Vec<String>,
    pub wire: Wire,
    pub enabled: bool,
}

/// The effective catalog: built-in protocols plus configuration overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Catalog {
    pub protocols: Vec<Protocol>,
}

/// (name, ports, IANA port names, wire, enabled by default)
type BuiltinEntry = (
    &'static str,
    &'static [u16],
    &'static [&'static str],
    Wire,
    bool,
);

const BUILTIN: &[BuiltinEntry] = &[
    ("smtp", &[25], &["smtp"], Wire::ServerFirst, true),
    (
        "submission",
        &[587],
        &["submission"],
        Wire::ServerFirst,
        true,
    ),
    (
        "submissions",
        &[465],
        &["submissions", "smtps"],
        Wire::ClientFirst,
        true,
    ),
    ("ftp", &[21], &["ftp"], Wire::ServerFirst, true),
    ("ldap", &[389], &["ldap"], Wire::ClientFirst, true),
    ("pop3", &[110], &["pop3"], Wire::ServerFirst, true),
    ("imap", &[143], &["imap"], Wire::ServerFirst, true),
    ("lmtp", &[24], &["lmtp"], Wire::ServerFirst, false),
    ("nntp", &[119], &["nntp"], Wire::ServerFirst, false),
    (
        "managesieve",
        &[4190],
        &["sieve", "managesieve"],
        Wire::ServerFirst,
        false,
    ),
    ("mysql", &[3306], &["mysql"], Wire::ServerFirst, false),
    ("vnc", &[5900], &["rfb", "vnc"], Wire::ServerFirst, false),
    ("ldaps", &[636], &["ldaps"], Wire::ClientFirst, false),
    ("imaps", &[993], &["imaps"], Wire::ClientFirst, false),
    ("pop3s", &[995], &["pop3s"], Wire::ClientFirst, false),
    ("ftps", &[990], &["ftps"], Wire::ClientFirst, false),
];

/// Istio-style protocol prefixes a port name may carry (`tcp-smtp`).
const NAME_PREFIXES: &[&str] = &["tcp-", "tls-"];

impl Catalog {
    /// The built-in catalog with its default enablement.
    pub fn builtin() -> Self {
        let protocols = BUILTIN
            .iter()
            .map(|&(name, ports, port_names, wire, enabled)| Protocol {
                name: name.to_string(),
                ports: ports.to_vec(),
                port_names: port_names.iter().map(|n| n.to_string()).collect(),
                wire,
                enabled,
            })
            .collect();
        Catalog { protocols }
    }

    pub fn get(&self, name: &str) -> Option<&Protocol> {
        self.protocols.iter().find(|p| p.name == name)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Protocol> {
        self.protocols.iter_mut().find(|p| p.name == name)
    }

    pub fn enabled(&self) -> impl Iterator<Item = &Protocol> {
        self.protocols.iter().filter(|p| p.enabled)
    }

    /// The enabled protocol whose default ports include `port`.
    pub fn by_port(&self, port: u16) -> Option<&Protocol> {
        self.enabled().find(|p| p.ports.contains(&port))
    }

    /// The enabled protocol a container port name stands for: an IANA name, optionally with an
    /// Istio `tcp-`/`tls-` prefix and/or a `-<suffix>` (`submission-local`, `tcp-smtp-2`).
    pub fn by_port_name(&self, port_name: &str) -> Option<&Protocol> {
        let base = strip_name_prefix(port_name);
        self.enabled()
            .find(|p| p.port_names.iter().any(|name| name_matches(base, name)))
    }
}

/// `port_name` without an Istio protocol prefix.
pub fn strip_name_prefix(port_name: &str) -> &str {
    NAME_PREFIXES
        .iter()
        .find_map(|prefix| port_name.strip_prefix(prefix))
        .unwrap_or(port_name)
}

fn name_matches(base: &str, name: &str) -> bool {
    base.strip_prefix(name)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_enablement_matches_the_documented_set() {
        let catalog = Catalog::builtin();
        let enabled: Vec<&str> = catalog.enabled().map(|p| p.name.as_str()).collect();
        assert_eq!(
            enabled,
            [
                "smtp",
                "submission",
                "submissions",
                "ftp",
                "ldap",
                "pop3",
                "imap"
            ]
        );
        let mut enabled_ports: Vec<u16> = catalog.enabled().flat_map(|p| p.ports.clone()).collect();
        enabled_ports.sort_unstable();
        assert_eq!(enabled_ports, [21, 25, 110, 143, 389, 465, 587]);
        for off in [
            "lmtp",
            "nntp",
            "managesieve",
            "mysql",
            "vnc",
            "ldaps",
            "imaps",
            "pop3s",
            "ftps",
        ] {
            assert!(
                !catalog.get(off).unwrap().enabled,
                "{off} must be off by default"
            );
        }
    }

    #[test]
    fn matches_ports_by_number_only_when_enabled() {
        let catalog = Catalog::builtin();
        assert_eq!(catalog.by_port(587).unwrap().name, "submission");
        assert_eq!(catalog.by_port(465).unwrap().name, "submissions");
        assert!(catalog.by_port(3306).is_none(), "mysql is off by default");
        assert!(catalog.by_port(8080).is_none());
    }

    #[test]
    fn matches_port_names_with_prefix_and_suffix() {
        let catalog = Catalog::builtin();
        let cases = [
            ("smtp", Some("smtp")),
            ("tcp-smtp", Some("smtp")),
            ("tls-submission", Some("submission")),
            ("submission", Some("submission")),
            ("submission-lcl", Some("submission")),
            ("tcp-smtp-2", Some("smtp")),
            ("submissions", Some("submissions")),
            ("smtps", Some("submissions")),
            ("imap", Some("imap")),
            ("imaps", None),
            ("smtpx", None),
            ("http-smtp", None),
            ("xsmtp", None),
            ("http", None),
            ("", None),
        ];
        for (name, expected) in cases {
            assert_eq!(
                catalog.by_port_name(name).map(|p| p.name.as_str()),
                expected,
                "{name}"
            );
        }
    }
}
