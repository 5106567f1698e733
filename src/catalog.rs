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
    /// The entry a port name of this protocol with an implicit-TLS suffix (`imap-secure`,
    /// `submission-tls`) stands for: the same protocol wrapped in TLS from the first byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implicit_tls: Option<String>,
}

/// The effective catalog: built-in protocols plus configuration overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Catalog {
    pub protocols: Vec<Protocol>,
}

/// (name, ports, IANA port names, wire, enabled by default, implicit-TLS entry)
type BuiltinEntry = (
    &'static str,
    &'static [u16],
    &'static [&'static str],
    Wire,
    bool,
    Option<&'static str>,
);

const BUILTIN: &[BuiltinEntry] = &[
    (
        "smtp",
        &[25],
        &["smtp"],
        Wire::ServerFirst,
        true,
        Some("submissions"),
    ),
    (
        "submission",
        &[587],
        &["submission"],
        Wire::ServerFirst,
        true,
        Some("submissions"),
    ),
    (
        "submissions",
        &[465],
        &["submissions", "smtps"],
        Wire::ClientFirst,
        true,
        None,
    ),
    (
        "ftp",
        &[21],
        &["ftp"],
        Wire::ServerFirst,
        true,
        Some("ftps"),
    ),
    (
        "ldap",
        &[389],
        &["ldap"],
        Wire::ClientFirst,
        true,
        Some("ldaps"),
    ),
    (
        "pop3",
        &[110],
        &["pop3"],
        Wire::ServerFirst,
        true,
        Some("pop3s"),
    ),
    (
        "imap",
        &[143],
        &["imap"],
        Wire::ServerFirst,
        true,
        Some("imaps"),
    ),
    ("lmtp", &[24], &["lmtp"], Wire::ServerFirst, false, None),
    (
        "nntp",
        &[119],
        &["nntp"],
        Wire::ServerFirst,
        false,
        Some("nntps"),
    ),
    (
        "managesieve",
        &[4190],
        &["sieve", "managesieve"],
        Wire::ServerFirst,
        false,
        None,
    ),
    ("mysql", &[3306], &["mysql"], Wire::ServerFirst, false, None),
    (
        "vnc",
        &[5900],
        &["rfb", "vnc"],
        Wire::ServerFirst,
        false,
        None,
    ),
    ("ldaps", &[636], &["ldaps"], Wire::ClientFirst, false, None),
    ("imaps", &[993], &["imaps"], Wire::ClientFirst, false, None),
    ("pop3s", &[995], &["pop3s"], Wire::ClientFirst, false, None),
    ("ftps", &[990], &["ftps"], Wire::ClientFirst, false, None),
    (
        "nntps",
        &[563],
        &["nntps", "snews"],
        Wire::ClientFirst,
        false,
        None,
    ),
];

/// Istio-style protocol prefixes a port name may carry (`tcp-smtp`).
const NAME_PREFIXES: &[&str] = &["tcp-", "tls-"];

/// Name suffixes that say the port speaks the protocol inside TLS from the first byte
/// (RFC 8314 "implicit TLS"): `imap-secure` is imaps, not imap.
const IMPLICIT_TLS_SUFFIXES: &[&str] = &["tls", "ssl", "secure", "implicit"];

impl Catalog {
    /// The built-in catalog with its default enablement.
    pub fn builtin() -> Self {
        let protocols = BUILTIN
            .iter()
            .map(
                |&(name, ports, port_names, wire, enabled, implicit_tls)| Protocol {
                    name: name.to_string(),
                    ports: ports.to_vec(),
                    port_names: port_names.iter().map(|n| n.to_string()).collect(),
                    wire,
                    enabled,
                    implicit_tls: implicit_tls.map(str::to_string),
                },
            )
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

    /// The entry that decides what a TCP port is, enabled or not (callers check `enabled`).
    ///
    /// Number before name: when `number` is any entry's port, that entry decides, whatever the
    /// port is called. Only on other numbers does the name count: an IANA name, optionally with
    /// an Istio `tcp-`/`tls-` prefix and a `-<suffix>` (`submission-local`, `tcp-smtp-2`); an
    /// implicit-TLS suffix (`imap-secure`, `pop3-ssl`) means the protocol's implicit-TLS entry.
    pub fn entry_for(&self, number: Option<u16>, name: &str) -> Option<&Protocol> {
        if let Some(number) = number
            && let Some(entry) = self.preferring_enabled(|p| p.ports.contains(&number))
        {
            return Some(entry);
        }
        self.by_name(name)
    }

    /// The entry a port name stands for (see [`Catalog::entry_for`]), enabled or not.
    pub fn by_name(&self, port_name: &str) -> Option<&Protocol> {
        let base = strip_name_prefix(port_name);
        let entry = self.preferring_enabled(|p| {
            p.port_names
                .iter()
                .any(|name| suffix_of(base, name).is_some())
        })?;
        let name = entry
            .port_names
            .iter()
            .find_map(|name| suffix_of(base, name))?;
        let implicit_tls = name
            .split('-')
            .any(|word| IMPLICIT_TLS_SUFFIXES.contains(&word));
        match (implicit_tls, &entry.implicit_tls) {
            (false, _) => Some(entry),
            (true, Some(tls)) => self.get(tls),
            // A TLS-wrapped port of a protocol without an implicit-TLS entry: unknown.
            (true, None) => None,
        }
    }

    /// The first entry that `matches`, an enabled one before a disabled one.
    fn preferring_enabled(&self, matches: impl Fn(&Protocol) -> bool) -> Option<&Protocol> {
        let mut candidates = self.protocols.iter().filter(|p| matches(p));
        let first = candidates.next()?;
        match first.enabled {
            true => Some(first),
            false => candidates.find(|p| p.enabled).or(Some(first)),
        }
    }
}

/// `port_name` without an Istio protocol prefix.
pub fn strip_name_prefix(port_name: &str) -> &str {
    NAME_PREFIXES
        .iter()
        .find_map(|prefix| port_name.strip_prefix(prefix))
        .unwrap_or(port_name)
}

/// What follows `name` in `base` (`""` or `"-local"`), when `base` is `name` with a suffix.
fn suffix_of<'b>(base: &'b str, name: &str) -> Option<&'b str> {
    base.strip_prefix(name)
        .filter(|rest| rest.is_empty() || rest.starts_with('-'))
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
            "nntps",
        ] {
            assert!(
                !catalog.get(off).unwrap().enabled,
                "{off} must be off by default"
            );
        }
    }

    fn entry(catalog: &Catalog, number: Option<u16>, name: &str) -> Option<(String, bool)> {
        catalog
            .entry_for(number, name)
            .map(|p| (p.name.clone(), p.enabled))
    }

    #[test]
    fn the_number_decides_before_the_name() {
        let catalog = Catalog::builtin();
        let cases: &[(Option<u16>, &str, Option<(&str, bool)>)] = &[
            (Some(587), "", Some(("submission", true))),
            (Some(465), "", Some(("submissions", true))),
            (Some(3306), "", Some(("mysql", false))),
            (Some(8080), "", None),
            // A real mail server's IMAPS port: the number says imaps, whatever the name.
            (Some(993), "imap-secure", Some(("imaps", false))),
            (Some(993), "imap", Some(("imaps", false))),
            (Some(25), "http", Some(("smtp", true))),
            (Some(143), "imaps", Some(("imap", true))),
            // Other numbers: the name decides.
            (Some(1587), "submission", Some(("submission", true))),
            (Some(10993), "imap-secure", Some(("imaps", false))),
            (Some(10143), "imap", Some(("imap", true))),
            (None, "smtp", Some(("smtp", true))),
        ];
        for &(number, name, expected) in cases {
            assert_eq!(
                entry(&catalog, number, name),
                expected.map(|(n, e)| (n.to_string(), e)),
                "{number:?} {name}"
            );
        }
    }

    #[test]
    fn port_names_with_prefix_and_suffix() {
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
            ("imaps", Some("imaps")),
            ("smtp-starttls", Some("smtp")),
            ("smtpx", None),
            ("http-smtp", None),
            ("xsmtp", None),
            ("http", None),
            ("", None),
        ];
        for (name, expected) in cases {
            assert_eq!(
                catalog.by_name(name).map(|p| p.name.as_str()),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn implicit_tls_suffixes_mean_the_tls_entry() {
        let catalog = Catalog::builtin();
        let cases = [
            ("imap-secure", Some("imaps")),
            ("imap-tls", Some("imaps")),
            ("pop3-ssl", Some("pop3s")),
            ("submission-implicit", Some("submissions")),
            ("smtp-tls", Some("submissions")),
            ("tcp-ldap-secure", Some("ldaps")),
            ("ftp-ssl-2", Some("ftps")),
            ("imap-secure-internal", Some("imaps")),
            // No implicit-TLS entry to stand for: not a known protocol.
            ("lmtp-tls", None),
            ("mysql-ssl", None),
        ];
        for (name, expected) in cases {
            assert_eq!(
                catalog.by_name(name).map(|p| p.name.as_str()),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn an_enabled_entry_wins_over_a_disabled_one_on_the_same_port() {
        let mut catalog = Catalog::builtin();
        catalog.get_mut("smtp").unwrap().enabled = false;
        catalog.protocols.push(Protocol {
            name: "relay".into(),
            ports: vec![25],
            port_names: vec!["relay".into()],
            wire: Wire::ServerFirst,
            enabled: true,
            implicit_tls: None,
        });
        assert_eq!(catalog.entry_for(Some(25), "").unwrap().name, "relay");
    }
}
