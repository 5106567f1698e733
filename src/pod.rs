//! The small view of a Pod (or pod template) that every decision is made from.
//!
//! Deserialised straight from the request bytes: only metadata, `hostNetwork` and the
//! containers' names, ports, args and restart policy are read; strings borrow from the input
//! where they can, and everything else (env, volumes, probes, ...) is skipped unparsed.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

/// Labels or annotations.
pub type StringMap<'a> = BTreeMap<Cow<'a, str>, Cow<'a, str>>;

#[derive(Debug, Default, Clone, Deserialize)]
pub struct PodView<'a> {
    #[serde(borrow, default)]
    pub metadata: Option<MetadataView<'a>>,
    #[serde(borrow, default)]
    pub spec: Option<SpecView<'a>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataView<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub generate_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub namespace: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub labels: Option<StringMap<'a>>,
    /// `None` when the map is absent (or null): a patch must then create it.
    #[serde(borrow, default)]
    pub annotations: Option<StringMap<'a>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecView<'a> {
    #[serde(default)]
    pub host_network: Option<bool>,
    #[serde(borrow, default)]
    pub containers: Option<Vec<ContainerView<'a>>>,
    #[serde(borrow, default)]
    pub init_containers: Option<Vec<ContainerView<'a>>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub ports: Option<Vec<PortView<'a>>>,
    #[serde(borrow, default)]
    pub command: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    pub args: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    pub restart_policy: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortView<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    /// Kept wide so that an out-of-range value is reported, not a parse failure.
    #[serde(default)]
    pub container_port: Option<i64>,
    #[serde(borrow, default)]
    pub protocol: Option<Cow<'a, str>>,
}

impl<'a> PodView<'a> {
    /// Parses the view from a Pod's JSON bytes.
    pub fn from_json(bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        lookup(self.metadata.as_ref()?.labels.as_ref()?, key)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        lookup(self.annotations()?, key)
    }

    /// The annotations map, `None` when absent.
    pub fn annotations(&self) -> Option<&StringMap<'a>> {
        self.metadata.as_ref()?.annotations.as_ref()
    }

    pub fn has_metadata(&self) -> bool {
        self.metadata.is_some()
    }

    /// `name`, or `generateName` followed by `*` for pods not named yet.
    pub fn display_name(&self) -> String {
        let metadata = self.metadata.as_ref();
        match (
            metadata
                .and_then(|m| m.name.as_deref())
                .filter(|n| !n.is_empty()),
            metadata.and_then(|m| m.generate_name.as_deref()),
        ) {
            (Some(name), _) => name.to_string(),
            (None, Some(generate_name)) => format!("{generate_name}*"),
            (None, None) => String::new(),
        }
    }

    pub fn namespace(&self) -> Option<&str> {
        self.metadata.as_ref()?.namespace.as_deref()
    }

    pub fn host_network(&self) -> bool {
        self.spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
    }

    pub fn containers(&self) -> &[ContainerView<'a>] {
        self.spec
            .as_ref()
            .and_then(|s| s.containers.as_deref())
            .unwrap_or_default()
    }

    pub fn init_containers(&self) -> &[ContainerView<'a>] {
        self.spec
            .as_ref()
            .and_then(|s| s.init_containers.as_deref())
            .unwrap_or_default()
    }
}

impl ContainerView<'_> {
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    pub fn ports(&self) -> &[PortView<'_>] {
        self.ports.as_deref().unwrap_or_default()
    }

    pub fn args(&self) -> &[Cow<'_, str>] {
        self.args.as_deref().unwrap_or_default()
    }

    pub fn command(&self) -> &[Cow<'_, str>] {
        self.command.as_deref().unwrap_or_default()
    }

    /// A native sidecar: an init container that keeps running beside the app containers.
    pub fn is_native_sidecar(&self) -> bool {
        self.restart_policy.as_deref() == Some("Always")
    }
}

impl PortView<'_> {
    /// TCP, or protocol unset (Kubernetes' default is TCP).
    pub fn is_tcp(&self) -> bool {
        self.protocol
            .as_deref()
            .is_none_or(|p| p.eq_ignore_ascii_case("TCP"))
    }

    /// The port number when it is a valid TCP port.
    pub fn number(&self) -> Option<u16> {
        self.container_port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|&p| p != 0)
    }
}

fn lookup<'m>(map: &'m StringMap<'_>, key: &str) -> Option<&'m str> {
    map.get(key).map(|value| value.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_what_decisions_need() {
        let json = br#"{
          "apiVersion": "v1", "kind": "Pod",
          "metadata": {"generateName": "mail-7d9f-", "namespace": "mail",
                       "labels": {"app": "mail"}, "annotations": {"a/b": "c\"d"}},
          "spec": {
            "hostNetwork": false,
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{"name": "mox", "image": "mox",
                            "env": [{"name": "X", "value": "y"}],
                            "ports": [{"name": "submission", "containerPort": 587},
                                      {"containerPort": 53, "protocol": "UDP"}]}],
            "initContainers": [{"name": "side", "restartPolicy": "Always", "args": ["-v"]}]
          }
        }"#;
        let pod = PodView::from_json(json).unwrap();
        assert_eq!(pod.display_name(), "mail-7d9f-*");
        assert_eq!(pod.namespace(), Some("mail"));
        assert_eq!(pod.label("app"), Some("mail"));
        assert_eq!(pod.annotation("a/b"), Some("c\"d"));
        let ports = pod.containers()[0].ports();
        assert_eq!((ports[0].number(), ports[0].is_tcp()), (Some(587), true));
        assert_eq!((ports[1].number(), ports[1].is_tcp()), (Some(53), false));
        assert!(pod.init_containers()[0].is_native_sidecar());
        assert_eq!(pod.init_containers()[0].args()[0], "-v");
    }

    #[test]
    fn absent_and_null_parts_are_empty() {
        let pod =
            PodView::from_json(br#"{"metadata": {"annotations": null}, "spec": null}"#).unwrap();
        assert!(pod.annotations().is_none());
        assert!(pod.containers().is_empty());
        assert!(!pod.host_network());
        let pod = PodView::from_json(b"{}").unwrap();
        assert!(!pod.has_metadata());
        assert_eq!(pod.display_name(), "");
    }

    #[test]
    fn out_of_range_ports_are_not_numbers() {
        for port in ["0", "-1", "65536", "99999999999"] {
            let json = format!(
                r#"{{"spec": {{"containers": [{{"ports": [{{"containerPort": {port}}}]}}]}}}}"#
            );
            let pod = PodView::from_json(json.as_bytes()).unwrap();
            assert_eq!(pod.containers()[0].ports()[0].number(), None, "{port}");
        }
    }

    #[test]
    fn wrong_types_are_errors_not_panics() {
        for json in [
            r#"{"spec": {"containers": "x"}}"#,
            r#"{"metadata": {"labels": [1]}}"#,
            "\"pod\"",
            "nul",
        ] {
            assert!(PodView::from_json(json.as_bytes()).is_err(), "{json}");
        }
    }
}
