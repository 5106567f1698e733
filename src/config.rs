//! Validated configuration: the effective catalog, the mode and mesh defaults.
//!
//! Read from the YAML file given to `--config`; every field is optional:
//! ```yaml
//! mode: enforce            # or audit: /mutate answers like /audit (cluster-wide dry run)
//! catalog:
//!   enable: [mysql, lmtp]  # built-in protocols that are off by default
//!   disable: [ldap]
//!   protocols:             # extra protocols (or replacements of built-in ones, by name)
//!     - name: myproto
//!       ports: [7000]
//!       portNames: [myproto]
//!       wire: server-first
//!       enabled: true
//! istio:
//!   # The mesh-wide global.proxy.excludeInboundPorts. A pod annotation replaces it, so it is
//!   # merged into the annotation serverfirst writes when the pod has none.
//!   defaultExcludeInboundPorts: ""
//!   # keep | exclude | auto: server-first ports stay in the mesh where it enforces identity
//!   # (STRICT mTLS, an AuthorizationPolicy) and leave capture elsewhere (auto), always stay, or
//!   # always leave. A pod's serverfirst.dev/mtls annotation overrides it.
//!   mtls: auto
//!   rootNamespace: istio-system  # meshConfig.rootNamespace: where mesh-wide policies live
//! meshes: [istio]          # any of istio, linkerd, kuma, consul; or auto (by the pod's markers)
//! autoFallback: [istio]    # with auto: the meshes for pods that carry no marker
//! outbound:
//!   ports: [submission, 2525]  # outbound exclusions for every pod (numbers or catalog names)
//! ftp:
//!   # Ports and inclusive ranges that are FTP passive data ports wherever they sit beside an FTP
//!   # control port (in a container or a Service), whatever their name or number.
//!   passivePorts: "21100-21110"
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::catalog::{Catalog, Protocol};
use crate::mesh::Mesh;
use crate::mesh::exclusions::{self, Syntax};
use crate::mesh::istio::mtls::MtlsChoice;
use crate::mesh_state::DEFAULT_ROOT_NAMESPACE;
use crate::ports::{PortListError, parse_port_list};

/// What `/mutate` does with a plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Return the patch.
    #[default]
    Enforce,
    /// Never patch; report what would change (warnings, audit annotations, logs).
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

/// Istio-specific settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IstioSettings {
    /// The mesh-wide default exclude list, merged when the pod has no annotation of its own.
    pub default_exclude_inbound_ports: Vec<u16>,
    /// Exclude or keep server-first ports, for pods without `serverfirst.dev/mtls`.
    pub mtls: MtlsChoice,
    /// Istio's `meshConfig.rootNamespace`.
    pub root_namespace: String,
}

impl Default for IstioSettings {
    fn default() -> Self {
        IstioSettings {
            default_exclude_inbound_ports: Vec::new(),
            mtls: MtlsChoice::Auto,
            root_namespace: DEFAULT_ROOT_NAMESPACE.to_string(),
        }
    }
}

/// Namespaces that are never patched, whatever a webhook selector says: Kubernetes' own (as
/// Istio's injector refuses them in code: pkg/kube/inject/initializer.go `IgnoredNamespaces`,
/// checked by `injectRequired` in webhook.go) and serverfirst's own, so that it can never block
/// its own recovery.
pub const SYSTEM_NAMESPACES: [&str; 2] = ["kube-system", "kube-public"];
/// serverfirst's namespace when `POD_NAMESPACE` does not say.
pub const DEFAULT_OWN_NAMESPACE: &str = "serverfirst-system";

/// FTP settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FtpSettings {
    /// Inclusive ranges of passive data ports (a single port is `(p, p)`).
    pub passive_ports: Vec<(u16, u16)>,
}

impl FtpSettings {
    /// `port` is in a configured passive range.
    pub fn is_passive_port(&self, port: u16) -> bool {
        self.passive_ports
            .iter()
            .any(|&(start, end)| (start..=end).contains(&port))
    }
}

/// Which mesh profiles plan for a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSelection {
    /// Always planned for.
    pub explicit: Vec<Mesh>,
    /// Also plan for the meshes whose injection markers the pod carries.
    pub auto: bool,
    /// With `auto`: the meshes for a pod without markers (namespace-level injection leaves none
    /// on the pod, and the review does not carry the namespace's labels).
    pub auto_fallback: Vec<Mesh>,
}

impl Default for MeshSelection {
    fn default() -> Self {
        MeshSelection {
            explicit: vec![Mesh::Istio],
            auto: false,
            auto_fallback: vec![Mesh::Istio],
        }
    }
}

/// The validated configuration every entry point works from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub mode: Mode,
    pub catalog: Catalog,
    pub istio: IstioSettings,
    pub meshes: MeshSelection,
    /// Outbound ports every pod gets excluded (clients of server-first servers outside the mesh).
    pub outbound_ports: Vec<u16>,
    /// The namespace serverfirst runs in (from `POD_NAMESPACE`), never patched.
    pub own_namespace: String,
    pub ftp: FtpSettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::default(),
            catalog: Catalog::builtin(),
            istio: IstioSettings::default(),
            meshes: MeshSelection::default(),
            outbound_ports: Vec::new(),
            own_namespace: DEFAULT_OWN_NAMESPACE.to_string(),
            ftp: FtpSettings::default(),
        }
    }
}

impl Config {
    /// Objects in `namespace` are never patched.
    pub fn is_system_namespace(&self, namespace: &str) -> bool {
        SYSTEM_NAMESPACES.contains(&namespace) || namespace == self.own_namespace
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Yaml(#[from] serde_saphyr::Error),
    #[error("invalid config: catalog.{list} names unknown protocol {name:?}")]
    UnknownProtocol { list: &'static str, name: String },
    #[error("invalid config: protocol {name:?} {problem}")]
    InvalidProtocol { name: String, problem: &'static str },
    #[error(
        "invalid config: protocol {protocol:?} has implicitTls {tls:?}, which is no catalog protocol"
    )]
    UnknownImplicitTls { protocol: String, tls: String },
    #[error("invalid config: istio.defaultExcludeInboundPorts: {0}")]
    DefaultExclude(#[from] PortListError),
    #[error(
        "invalid config: meshes: unknown mesh {0:?} (expected istio, linkerd, kuma, consul or auto)"
    )]
    UnknownMesh(String),
    #[error("invalid config: outbound.ports: {0:?} is neither a port nor a catalog protocol")]
    UnknownOutbound(String),
    #[error("invalid config: istio.rootNamespace is empty")]
    RootNamespace,
    #[error(
        "invalid config: ftp.passivePorts: {0:?} is neither a port nor a range a-b of ports (1-65535)"
    )]
    FtpPassivePorts(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    catalog: RawCatalog,
    #[serde(default)]
    istio: RawIstio,
    #[serde(default)]
    meshes: Option<Vec<String>>,
    #[serde(default)]
    auto_fallback: Option<Vec<Mesh>>,
    #[serde(default)]
    outbound: RawOutbound,
    #[serde(default)]
    ftp: RawFtp,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawFtp {
    #[serde(default)]
    passive_ports: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawOutbound {
    #[serde(default)]
    ports: Vec<PortOrName>,
}

/// A port number or a catalog protocol name.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PortOrName {
    Port(u16),
    Name(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCatalog {
    #[serde(default)]
    enable: Vec<String>,
    #[serde(default)]
    disable: Vec<String>,
    #[serde(default)]
    protocols: Vec<Protocol>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawIstio {
    #[serde(default)]
    default_exclude_inbound_ports: String,
    #[serde(default)]
    mtls: MtlsChoice,
    #[serde(default)]
    root_namespace: Option<String>,
}

impl Config {
    /// Reads and validates a YAML config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_yaml(&text)
    }

    /// Parses and validates YAML config text.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let raw: Option<RawConfig> = serde_saphyr::from_str(text)?;
        Config::from_raw(raw.unwrap_or_default())
    }

    fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let mut catalog = Catalog::builtin();
        for protocol in raw.catalog.protocols {
            validate_protocol(&protocol)?;
            match catalog.get_mut(&protocol.name) {
                Some(existing) => *existing = protocol,
                None => catalog.protocols.push(protocol),
            }
        }
        if let Some((protocol, tls)) = catalog.protocols.iter().find_map(|p| {
            let tls = p.implicit_tls.as_ref()?;
            catalog
                .get(tls)
                .is_none()
                .then(|| (p.name.clone(), tls.clone()))
        }) {
            return Err(ConfigError::UnknownImplicitTls { protocol, tls });
        }
        for (list, names, enabled) in [
            ("enable", &raw.catalog.enable, true),
            ("disable", &raw.catalog.disable, false),
        ] {
            for name in names {
                let protocol =
                    catalog
                        .get_mut(name)
                        .ok_or_else(|| ConfigError::UnknownProtocol {
                            list,
                            name: name.clone(),
                        })?;
                protocol.enabled = enabled;
            }
        }
        let default_exclude_inbound_ports =
            parse_port_list(&raw.istio.default_exclude_inbound_ports)?;
        let meshes = mesh_selection(raw.meshes, raw.auto_fallback)?;
        let outbound_ports = raw
            .outbound
            .ports
            .iter()
            .map(|entry| {
                resolve_port(entry, &catalog)
                    .ok_or_else(|| ConfigError::UnknownOutbound(entry.to_string()))
            })
            .collect::<Result<Vec<Vec<u16>>, _>>()?
            .concat();
        let root_namespace = match raw.istio.root_namespace {
            Some(name) if name.trim().is_empty() => return Err(ConfigError::RootNamespace),
            Some(name) => name.trim().to_string(),
            None => DEFAULT_ROOT_NAMESPACE.to_string(),
        };
        let ftp = FtpSettings {
            passive_ports: passive_ports(&raw.ftp.passive_ports)?,
        };
        Ok(Config {
            mode: raw.mode,
            catalog,
            istio: IstioSettings {
                default_exclude_inbound_ports,
                mtls: raw.istio.mtls,
                root_namespace,
            },
            meshes,
            outbound_ports,
            own_namespace: DEFAULT_OWN_NAMESPACE.to_string(),
            ftp,
        })
    }
}

/// `ftp.passivePorts`: comma-separated ports and inclusive ranges `a-b`, none of them 0.
fn passive_ports(list: &str) -> Result<Vec<(u16, u16)>, ConfigError> {
    let ranges = exclusions::parse(list, Syntax::PortsAndRanges)
        .map_err(|error| ConfigError::FtpPassivePorts(error.element))?;
    match ranges.iter().find(|&&(start, _)| start == 0) {
        Some(&(start, end)) if start == end => Err(ConfigError::FtpPassivePorts("0".into())),
        Some(&(start, end)) => Err(ConfigError::FtpPassivePorts(format!("{start}-{end}"))),
        None => Ok(ranges),
    }
}

fn mesh_selection(
    meshes: Option<Vec<String>>,
    fallback: Option<Vec<Mesh>>,
) -> Result<MeshSelection, ConfigError> {
    let mut selection = MeshSelection::default();
    if let Some(fallback) = fallback {
        selection.auto_fallback = fallback;
    }
    if let Some(names) = meshes {
        selection.explicit.clear();
        for name in names {
            match name.as_str() {
                "auto" => selection.auto = true,
                _ => {
                    let mesh = Mesh::ALL
                        .into_iter()
                        .find(|mesh| mesh.as_str() == name)
                        .ok_or(ConfigError::UnknownMesh(name))?;
                    selection.explicit.push(mesh);
                }
            }
        }
    }
    Ok(selection)
}

impl std::fmt::Display for PortOrName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortOrName::Port(port) => write!(f, "{port}"),
            PortOrName::Name(name) => f.write_str(name),
        }
    }
}

/// A port number (not 0), or the ports of a catalog protocol, enabled or not.
pub fn resolve_port(entry: &PortOrName, catalog: &Catalog) -> Option<Vec<u16>> {
    match entry {
        PortOrName::Port(0) => None,
        PortOrName::Port(port) => Some(vec![*port]),
        PortOrName::Name(name) => resolve_name(name, catalog),
    }
}

/// `text` as a port number (not 0) or a catalog protocol name, enabled or not.
pub fn resolve_name(text: &str, catalog: &Catalog) -> Option<Vec<u16>> {
    match text.trim().parse::<u16>() {
        Ok(0) => None,
        Ok(port) => Some(vec![port]),
        Err(_) => catalog
            .get(text.trim())
            .map(|protocol| protocol.ports.clone()),
    }
}

fn validate_protocol(protocol: &Protocol) -> Result<(), ConfigError> {
    let problem = if protocol.name.is_empty() {
        Some("has an empty name")
    } else if protocol.ports.is_empty() && protocol.port_names.is_empty() {
        Some("has neither ports nor portNames")
    } else if protocol.ports.contains(&0) {
        Some("lists port 0")
    } else if protocol.port_names.iter().any(String::is_empty) {
        Some("lists an empty port name")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(ConfigError::InvalidProtocol {
            name: protocol.name.clone(),
            problem,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Wire;

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::from_yaml("").unwrap(), Config::default());
        assert_eq!(Config::from_yaml("{}").unwrap(), Config::default());
    }

    #[test]
    fn enables_disables_and_adds_protocols() {
        let config = Config::from_yaml(
            "mode: audit\n\
             catalog:\n  enable: [mysql]\n  disable: [ldap]\n  protocols:\n\
             \x20   - {name: myproto, ports: [7000], portNames: [myproto], wire: server-first, enabled: true}\n\
             istio:\n  defaultExcludeInboundPorts: \"9000, 9001\"\n",
        )
        .unwrap();
        assert_eq!(config.mode, Mode::Audit);
        assert!(config.catalog.get("mysql").unwrap().enabled);
        assert!(!config.catalog.get("ldap").unwrap().enabled);
        let custom = config.catalog.get("myproto").unwrap();
        assert_eq!(
            (custom.ports.as_slice(), custom.wire),
            (&[7000][..], Wire::ServerFirst)
        );
        assert_eq!(config.istio.default_exclude_inbound_ports, [9000, 9001]);
    }

    #[test]
    fn replaces_a_builtin_protocol_by_name() {
        let config = Config::from_yaml(
            "catalog:\n  protocols:\n  - {name: smtp, ports: [25, 2525], portNames: [smtp], wire: server-first, enabled: true}\n",
        )
        .unwrap();
        assert_eq!(config.catalog.get("smtp").unwrap().ports, [25, 2525]);
        assert_eq!(
            config.catalog.protocols.len(),
            Catalog::builtin().protocols.len()
        );
    }

    #[test]
    fn meshes_and_outbound_ports() {
        let config = Config::from_yaml("meshes: [linkerd, auto]\nautoFallback: [kuma]\noutbound:\n  ports: [submission, 2525, \"smtp\"]\n").unwrap();
        assert_eq!(
            config.meshes,
            MeshSelection {
                explicit: vec![Mesh::Linkerd],
                auto: true,
                auto_fallback: vec![Mesh::Kuma]
            }
        );
        assert_eq!(config.outbound_ports, [587, 2525, 25]);
        assert_eq!(Config::default().meshes.explicit, [Mesh::Istio]);
        for (yaml, expected) in [
            ("meshes: [cilium]\n", "unknown mesh \"cilium\""),
            ("outbound:\n  ports: [gopher]\n", "\"gopher\" is neither"),
            ("outbound:\n  ports: [0]\n", "\"0\" is neither"),
        ] {
            let error = Config::from_yaml(yaml).unwrap_err().to_string();
            assert!(error.contains(expected), "{yaml}: {error}");
        }
    }

    #[test]
    fn ftp_passive_ports_are_ports_and_inclusive_ranges() {
        let config = Config::from_yaml("ftp:\n  passivePorts: \"21100-21110, 30000\"\n").unwrap();
        assert_eq!(config.ftp.passive_ports, [(21100, 21110), (30000, 30000)]);
        for (port, passive) in [(21100, true), (21110, true), (30000, true), (21111, false)] {
            assert_eq!(config.ftp.is_passive_port(port), passive, "{port}");
        }
        assert!(Config::default().ftp.passive_ports.is_empty());
        for (value, element) in [
            ("21110-21100", "21110-21100"),
            ("0", "0"),
            ("0-10", "0-10"),
            ("21100-", "21100-"),
            ("pasv", "pasv"),
            ("21100,,21101", ""),
            ("65536", "65536"),
        ] {
            let yaml = format!("ftp:\n  passivePorts: \"{value}\"\n");
            let error = Config::from_yaml(&yaml).unwrap_err().to_string();
            assert!(
                error.contains(&format!("ftp.passivePorts: {element:?} is neither")),
                "{value}: {error}"
            );
        }
        let error = Config::from_yaml("ftp:\n  range: \"1-2\"\n").unwrap_err();
        assert!(error.to_string().starts_with("invalid config"), "{error}");
    }

    #[test]
    fn rejects_bad_configs_with_clear_messages() {
        let cases = [
            (
                "catalog:\n  enable: [gopher]\n",
                "catalog.enable names unknown protocol \"gopher\"",
            ),
            ("mode: sometimes\n", "invalid config"),
            ("unknownKey: 1\n", "invalid config"),
            (
                "istio:\n  defaultExcludeInboundPorts: \"1-2\"\n",
                "defaultExcludeInboundPorts",
            ),
            (
                "catalog:\n  protocols:\n  - {name: x, ports: [0], portNames: [], wire: server-first, enabled: true}\n",
                "protocol \"x\" lists port 0",
            ),
            (
                "catalog:\n  protocols:\n  - {name: x, ports: [7], portNames: [x], wire: server-first, enabled: true, implicitTls: xs}\n",
                "protocol \"x\" has implicitTls \"xs\", which is no catalog protocol",
            ),
        ];
        for (yaml, expected) in cases {
            let error = Config::from_yaml(yaml).unwrap_err().to_string();
            assert!(error.contains(expected), "{yaml:?}: {error}");
        }
    }
}
