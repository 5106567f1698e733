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
    #[serde(borrow, default, deserialize_with = "borrowed::text")]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed::text")]
    pub generate_name: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed::text")]
    pub namespace: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed::map")]
    pub labels: Option<StringMap<'a>>,
    /// `None` when the map is absent (or null): a patch must then create it.
    #[serde(borrow, default, deserialize_with = "borrowed::map")]
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
    #[serde(borrow, default, deserialize_with = "borrowed::text")]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub ports: Option<Vec<PortView<'a>>>,
    #[serde(borrow, default, deserialize_with = "borrowed::list")]
    pub command: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default, deserialize_with = "borrowed::list")]
    pub args: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default, deserialize_with = "borrowed::text")]
    pub restart_policy: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortView<'a> {
    #[serde(borrow, default, deserialize_with = "borrowed::text")]
    pub name: Option<Cow<'a, str>>,
    /// Kept wide so that an out-of-range value is reported, not a parse failure.
    #[serde(default)]
    pub container_port: Option<i64>,
    #[serde(borrow, default, deserialize_with = "borrowed::text")]
    pub protocol: Option<Cow<'a, str>>,
}

impl<'a> PodView<'a> {
    /// Parses the view from a Pod's JSON bytes.
    pub fn from_json(bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.label(key)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.annotation(key)
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
        self.metadata
            .as_ref()
            .map(MetadataView::display_name)
            .unwrap_or_default()
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

    /// A container or init container (native sidecars are init containers) has one of `names`.
    pub fn has_container(&self, names: &[&str]) -> bool {
        self.containers()
            .iter()
            .chain(self.init_containers())
            .any(|c| names.contains(&c.name()))
    }
}

impl MetadataView<'_> {
    pub fn label(&self, key: &str) -> Option<&str> {
        lookup(self.labels.as_ref()?, key)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        lookup(self.annotations.as_ref()?, key)
    }

    /// `name`, or `generateName` followed by `*` for objects not named yet.
    pub fn display_name(&self) -> String {
        match (
            self.name.as_deref().filter(|n| !n.is_empty()),
            self.generate_name.as_deref(),
        ) {
            (Some(name), _) => name.to_string(),
            (None, Some(generate_name)) => format!("{generate_name}*"),
            (None, None) => String::new(),
        }
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

/// Deserialisers that borrow strings from the input (copying only those with escapes). serde
/// borrows only for a field whose type is exactly `Cow<str>`: inside an `Option`, a `Vec` or a
/// map, a `Cow` is always an owned copy, one allocation per string.
pub(crate) mod borrowed {
    use std::borrow::Cow;
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{MapAccess, Visitor};
    use serde::{Deserialize, Deserializer};

    use super::StringMap;

    #[derive(Deserialize)]
    #[serde(transparent)]
    struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

    pub fn text<'de: 'a, 'a, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Cow<'a, str>>, D::Error> {
        Ok(Option::<Text<'a>>::deserialize(deserializer)?.map(|text| text.0))
    }

    pub fn list<'de: 'a, 'a, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<Cow<'a, str>>>, D::Error> {
        let list = Option::<Vec<Text<'a>>>::deserialize(deserializer)?;
        Ok(list.map(|list| list.into_iter().map(|text| text.0).collect()))
    }

    pub fn map<'de: 'a, 'a, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<StringMap<'a>>, D::Error> {
        Ok(Option::<Entries<'a>>::deserialize(deserializer)?.map(|entries| entries.0))
    }

    struct Entries<'a>(StringMap<'a>);

    impl<'de: 'a, 'a> Deserialize<'de> for Entries<'a> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_map(EntriesVisitor(PhantomData))
        }
    }

    struct EntriesVisitor<'a>(PhantomData<Entries<'a>>);

    impl<'de: 'a, 'a> Visitor<'de> for EntriesVisitor<'a> {
        type Value = Entries<'a>;

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            formatter.write_str("a map of strings")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let mut map = StringMap::new();
            // Later duplicates win, as in a `BTreeMap`'s own deserialisation.
            while let Some((key, value)) = access.next_entry::<Text<'a>, Text<'a>>()? {
                map.insert(key.0, value.0);
            }
            Ok(Entries(map))
        }
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
    fn strings_borrow_from_the_input_unless_escaped() {
        let json = br#"{"metadata": {"name": "mox", "labels": {"app": "mail"},
                                     "annotations": {"a": "b", "c": "d\"e"}},
                        "spec": {"containers": [{"name": "mox", "args": ["-v"],
                                                 "ports": [{"name": "smtp", "protocol": "TCP"}]}]}}"#;
        let pod = PodView::from_json(json).unwrap();
        let metadata = pod.metadata.as_ref().unwrap();
        let annotations = pod.annotations().unwrap();
        let container = &pod.containers()[0];
        let port = &container.ports()[0];
        let borrowed = [
            metadata.name.as_ref().unwrap(),
            metadata.labels.as_ref().unwrap().keys().next().unwrap(),
            metadata.labels.as_ref().unwrap().values().next().unwrap(),
            annotations.keys().next().unwrap(),
            annotations.values().next().unwrap(),
            container.name.as_ref().unwrap(),
            &container.args()[0],
            port.name.as_ref().unwrap(),
            port.protocol.as_ref().unwrap(),
        ];
        for text in borrowed {
            assert!(matches!(text, Cow::Borrowed(_)), "{text:?} was copied");
        }
        assert!(matches!(&annotations["c"], Cow::Owned(value) if value == "d\"e"));
    }

    #[test]
    fn duplicate_keys_keep_the_last_value() {
        let pod = PodView::from_json(br#"{"metadata": {"labels": {"a": "1", "a": "2"}}}"#).unwrap();
        assert_eq!(pod.label("a"), Some("2"));
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
