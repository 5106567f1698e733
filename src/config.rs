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
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::catalog::{Catalog, Protocol};
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IstioSettings {
    /// The mesh-wide default exclude list, merged when the pod has no annotation of its own.
    pub default_exclude_inbound_ports: Vec<u16>,
}

/// The validated configuration every entry point works from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub mode: Mode,
    pub catalog: Catalog,
    pub istio: IstioSettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::default(),
            catalog: Catalog::builtin(),
            istio: IstioSettings::default(),
        }
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
    #[error("invalid config: istio.defaultExcludeInboundPorts: {0}")]
    DefaultExclude(#[from] PortListError),
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
        Ok(Config {
            mode: raw.mode,
            catalog,
            istio: IstioSettings {
                default_exclude_inbound_ports,
            },
        })
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
        ];
        for (yaml, expected) in cases {
            let error = Config::from_yaml(yaml).unwrap_err().to_string();
            assert!(error.contains(expected), "{yaml:?}: {error}");
        }
    }
}
