//! The `istio-init` container of a pod that Istio injected before serverfirst saw it (no
//! istio-cni): its istio-iptables flags decide what is captured, so they are amended in place,
//! and they show which mesh-wide defaults the injector used.
//!
//! Istio knows the container by its name, `istio-init` (pkg/kube/inject/inject.go,
//! `InitContainerName`), whatever the call looks like across releases:
//! - 1.6 and later: `args: [istio-iptables, -p, 15001, ...]`;
//! - 1.4–1.5: `command: [istio-iptables, -p, 15001, ...]`;
//! - 1.3: the `proxy_init` image's entrypoint runs the script, `args` holds bare flags.
//!
//! Under istio-cni the init container is `istio-validation` (`--run-validation
//! --skip-rule-apply`): it applies nothing, and the CNI plugin reads the annotations instead.

use super::{Include, parse_include, unchanged, with, without};
use crate::mesh::{Change, InitList, MeshPlan};
use crate::pod::{ContainerView, PodView};
use crate::ports::{PortSet, format_port_list, parse_port_list};

/// A merged flag value as every list serverfirst writes: ascending, each port once (the order of
/// `-d` and `-b` does not matter to istio-iptables, which writes one rule per port).
fn ascending(ports: Vec<u16>) -> String {
    format_port_list(ports.into_iter().collect::<PortSet>())
}

const NAME: &str = "istio-init";
const INCLUDE_FLAGS: &[&str] = &["-b", "--istio-inbound-ports"];
const EXCLUDE_FLAGS: &[&str] = &["-d", "--istio-local-exclude-ports"];
/// What the injector always puts into `-d` around the pod's own excludes: Envoy's Prometheus
/// and health ports before them, the status port after (injection-template.yaml).
const ALWAYS_EXCLUDED: &[u16] = &[15090, 15021];
const STATUS_PORT_KEY: &str = "status.sidecar.istio.io/port";
const DEFAULT_STATUS_PORT: u16 = 15020;

/// One word of the container's command line, and where it sits.
struct Word<'p> {
    list: InitList,
    index: usize,
    text: &'p str,
}

/// The pod's rule-applying istio-init container and its istio-iptables flags.
pub(super) struct IstioInit<'p> {
    container: usize,
    /// The words after `istio-iptables` (or all of them when the image's entrypoint runs it).
    flags: Vec<Word<'p>>,
}

/// Where a flag's value sits: its own word, or `flag=value` in one word.
struct FlagValue<'p> {
    list: InitList,
    index: usize,
    flag: Option<&'static str>,
    value: &'p str,
}

impl FlagValue<'_> {
    fn replaced(&self, container: usize, value: String) -> Change {
        Change::ReplaceInitWord {
            container,
            list: self.list,
            index: self.index,
            value: match self.flag {
                Some(flag) => format!("{flag}={value}"),
                None => value,
            },
        }
    }
}

/// Mesh-wide defaults the injector rendered into the flags: a pod annotation replaces them, so
/// an annotation serverfirst writes must carry them to survive a later re-injection.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct MeshDefaults {
    /// `global.proxy.excludeInboundPorts`: the `-d` ports the pod's own annotation does not give.
    pub exclude: Vec<u16>,
    /// `global.proxy.includeInboundPorts` when it is a list and the pod has no annotation.
    pub include: Option<Vec<u16>>,
}

impl<'p> IstioInit<'p> {
    pub fn find(pod: &'p PodView<'_>) -> Option<IstioInit<'p>> {
        pod.init_containers()
            .iter()
            .enumerate()
            .find_map(|(index, container)| IstioInit::of(index, container))
    }

    fn of(container: usize, init: &'p ContainerView<'_>) -> Option<IstioInit<'p>> {
        let words: Vec<Word<'p>> = [
            (InitList::Command, init.command()),
            (InitList::Args, init.args()),
        ]
        .into_iter()
        .flat_map(|(list, words)| {
            words.iter().enumerate().map(move |(index, text)| Word {
                list,
                index,
                text: text.as_ref(),
            })
        })
        .collect();
        let call = words.iter().position(|w| {
            w.text.ends_with("istio-iptables") || w.text.ends_with("istio-iptables.sh")
        });
        if call.is_none() && init.name() != NAME {
            return None;
        }
        if words
            .iter()
            .any(|w| w.text == "--skip-rule-apply" || w.text == "--run-validation")
        {
            return None;
        }
        let flags = words
            .into_iter()
            .skip(call.map_or(0, |at| at + 1))
            .collect();
        Some(IstioInit { container, flags })
    }

    /// The last occurrence of a flag wins, as with cobra/pflag (and getopts in 1.3's script).
    fn flag(&self, names: &[&'static str]) -> Option<FlagValue<'p>> {
        let mut found = None;
        for (at, word) in self.flags.iter().enumerate() {
            if names.contains(&word.text) {
                if let Some(value) = self.flags.get(at + 1) {
                    found = Some(FlagValue {
                        list: value.list,
                        index: value.index,
                        flag: None,
                        value: value.text,
                    });
                }
            } else if let Some((flag, value)) = word.text.split_once('=')
                && let Some(name) = names.iter().find(|name| **name == flag)
            {
                found = Some(FlagValue {
                    list: word.list,
                    index: word.index,
                    flag: Some(name),
                    value,
                });
            }
        }
        found
    }

    pub fn mesh_defaults(&self, pod: &PodView<'_>) -> MeshDefaults {
        let include = match (
            pod.annotation(super::INCLUDE_INBOUND),
            self.flag(INCLUDE_FLAGS),
        ) {
            (None, Some(flag)) => match parse_include(flag.value) {
                Ok(Include::Only(list)) => Some(list),
                _ => None,
            },
            _ => None,
        };
        let own: Vec<u16> = pod
            .annotation(super::EXCLUDE_INBOUND)
            .and_then(|value| parse_port_list(value).ok())
            .unwrap_or_default();
        let status_port = pod
            .annotation(STATUS_PORT_KEY)
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(DEFAULT_STATUS_PORT);
        let mut exclude: Vec<u16> = self
            .flag(EXCLUDE_FLAGS)
            .and_then(|flag| parse_port_list(flag.value).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| !ALWAYS_EXCLUDED.contains(p) && *p != status_port && !own.contains(p))
            .collect();
        exclude.sort_unstable();
        exclude.dedup();
        MeshDefaults { exclude, include }
    }

    /// Amends `-b` (an explicit list loses the ports) or `-d` (gains them) in place.
    pub fn plan(&self, ports: &PortSet, plan: &mut MeshPlan) {
        // Without -b istio-iptables captures no inbound ports.
        let Some(include) = self.flag(INCLUDE_FLAGS) else {
            return;
        };
        match parse_include(include.value) {
            Err(error) => plan.warnings.push(unchanged("istio-init -b", &error)),
            Ok(Include::Nothing) => {}
            Ok(Include::Only(list)) => {
                if let Some(kept) = without(&list, ports) {
                    plan.changes
                        .push(include.replaced(self.container, ascending(kept)));
                }
            }
            Ok(Include::All) => match self.flag(EXCLUDE_FLAGS) {
                None => plan.changes.push(Change::AppendInitArgs {
                    container: self.container,
                    args: vec!["-d".to_string(), format_port_list(ports.iter().copied())],
                }),
                Some(exclude) => match parse_port_list(exclude.value) {
                    Ok(existing) => {
                        if let Some(merged) = with(&existing, ports) {
                            plan.changes
                                .push(exclude.replaced(self.container, ascending(merged)));
                        }
                    }
                    Err(error) => plan.warnings.push(unchanged("istio-init -d", &error)),
                },
            },
        }
    }
}
