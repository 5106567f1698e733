//! The small view of a Service that every decision is made from.
//!
//! Like the pod view: deserialised straight from the request bytes, only metadata and the
//! ports' name, protocol, port, targetPort and appProtocol are read; strings borrow from the
//! input where they can, and everything else (selector, clusterIP, status, ...) is skipped.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

use crate::pod::{MetadataView, borrowed};

#[derive(Debug, Default, Clone, Deserialize)]
pub struct ServiceView<'a> {
    #[serde(borrow, default)]
    pub metadata: Option<MetadataView<'a>>,
    #[serde(borrow, default)]
    pub spec: Option<ServiceSpecView<'a>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct ServiceSpecView<'a> {
    #[serde(borrow, default)]
    pub ports: Option<Vec<ServicePortView<'a>>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePortView<'a> {
    #[serde(borrow, default, deserialize_with = "borrowed::text")]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed::text")]
    pub protocol: Option<Cow<'a, str>>,
    /// Kept wide so that an out-of-range value is reported, not a parse failure.
    #[serde(default)]
    pub port: Option<i64>,
    #[serde(borrow, default)]
    pub target_port: Option<TargetPort<'a>>,
    #[serde(borrow, default, deserialize_with = "borrowed::text")]
    pub app_protocol: Option<Cow<'a, str>>,
}

/// `targetPort`: a number, or the name of a container port (an IntOrString).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort<'a> {
    Number(i64),
    Name(Cow<'a, str>),
}

impl<'a> ServiceView<'a> {
    /// Parses the view from a Service's JSON bytes.
    pub fn from_json(bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.label(key)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.annotation(key)
    }

    pub fn namespace(&self) -> Option<&str> {
        self.metadata.as_ref()?.namespace.as_deref()
    }

    pub fn display_name(&self) -> String {
        self.metadata
            .as_ref()
            .map(MetadataView::display_name)
            .unwrap_or_default()
    }

    pub fn ports(&self) -> &[ServicePortView<'a>] {
        self.spec
            .as_ref()
            .and_then(|s| s.ports.as_deref())
            .unwrap_or_default()
    }
}

impl ServicePortView<'_> {
    /// TCP, or protocol unset (Kubernetes' default is TCP).
    pub fn is_tcp(&self) -> bool {
        self.protocol
            .as_deref()
            .is_none_or(|p| p.eq_ignore_ascii_case("TCP"))
    }

    /// `port` when it is a valid port number.
    pub fn number(&self) -> Option<u16> {
        self.port.and_then(valid_port)
    }

    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    /// `targetPort` when it is a valid number; absent means the same as `port`.
    pub fn target_number(&self) -> Option<u16> {
        match &self.target_port {
            None => self.number(),
            Some(TargetPort::Number(number)) => valid_port(*number),
            Some(TargetPort::Name(_)) => None,
        }
    }

    /// `targetPort` when it names a container port.
    pub fn target_name(&self) -> Option<&str> {
        match &self.target_port {
            Some(TargetPort::Name(name)) => Some(name),
            _ => None,
        }
    }
}

fn valid_port(number: i64) -> Option<u16> {
    u16::try_from(number).ok().filter(|&p| p != 0)
}

impl<'de: 'a, 'a> Deserialize<'de> for TargetPort<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TargetPortVisitor(std::marker::PhantomData))
    }
}

struct TargetPortVisitor<'a>(std::marker::PhantomData<TargetPort<'a>>);

impl<'de: 'a, 'a> Visitor<'de> for TargetPortVisitor<'a> {
    type Value = TargetPort<'a>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a port number or a port name")
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(TargetPort::Number(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        // Beyond i64 is no port either; keep it out of range rather than fail the read.
        Ok(TargetPort::Number(i64::try_from(value).unwrap_or(i64::MAX)))
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(TargetPort::Name(Cow::Borrowed(value)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(TargetPort::Name(Cow::Owned(value.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_what_decisions_need() {
        let json = br#"{
          "apiVersion": "v1", "kind": "Service",
          "metadata": {"name": "mox", "namespace": "mail", "labels": {"app": "mail"},
                       "annotations": {"a/b": "c"}},
          "spec": {
            "selector": {"app": "mox"}, "clusterIP": "10.0.0.7", "type": "ClusterIP",
            "ports": [
              {"name": "submission", "port": 587, "targetPort": "submission"},
              {"name": "tcp-smtp", "port": 25, "targetPort": 2525, "protocol": "TCP"},
              {"port": 53, "protocol": "UDP", "appProtocol": "dns"},
              {"port": 143}
            ]
          },
          "status": {"loadBalancer": {}}
        }"#;
        let service = ServiceView::from_json(json).unwrap();
        assert_eq!(service.display_name(), "mox");
        assert_eq!(service.label("app"), Some("mail"));
        assert_eq!(service.annotation("a/b"), Some("c"));
        let ports = service.ports();
        assert_eq!(ports.len(), 4);
        assert_eq!(
            (ports[0].number(), ports[0].target_number()),
            (Some(587), None)
        );
        assert_eq!(ports[0].target_name(), Some("submission"));
        assert_eq!(
            (ports[1].number(), ports[1].target_number()),
            (Some(25), Some(2525))
        );
        assert!(ports[1].is_tcp() && !ports[2].is_tcp() && ports[3].is_tcp());
        assert_eq!(ports[2].app_protocol.as_deref(), Some("dns"));
        assert_eq!(ports[3].target_number(), Some(143), "absent: same as port");
        assert_eq!(ports[3].name(), "");
    }

    #[test]
    fn strings_borrow_from_the_input() {
        let json = br#"{"spec": {"ports": [{"name": "smtp", "port": 25, "targetPort": "smtp",
                                            "appProtocol": "tcp", "protocol": "TCP"}]}}"#;
        let service = ServiceView::from_json(json).unwrap();
        let port = &service.ports()[0];
        for text in [
            port.name.as_ref().unwrap(),
            port.protocol.as_ref().unwrap(),
            port.app_protocol.as_ref().unwrap(),
        ] {
            assert!(matches!(text, Cow::Borrowed(_)), "{text:?} was copied");
        }
        assert!(matches!(
            port.target_port,
            Some(TargetPort::Name(Cow::Borrowed("smtp")))
        ));
    }

    #[test]
    fn out_of_range_ports_are_not_numbers() {
        for port in ["0", "-1", "65536", "99999999999"] {
            let json =
                format!(r#"{{"spec": {{"ports": [{{"port": {port}, "targetPort": {port}}}]}}}}"#);
            let service = ServiceView::from_json(json.as_bytes()).unwrap();
            let view = &service.ports()[0];
            assert_eq!(
                (view.number(), view.target_number()),
                (None, None),
                "{port}"
            );
        }
    }

    #[test]
    fn absent_parts_are_empty_and_wrong_types_are_errors() {
        let service = ServiceView::from_json(br#"{"spec": null}"#).unwrap();
        assert!(service.ports().is_empty());
        assert_eq!(service.display_name(), "");
        for json in [
            r#"{"spec": {"ports": "x"}}"#,
            r#"{"spec": {"ports": [{"targetPort": true}]}}"#,
            r#"{"spec": {"ports": [{"targetPort": 1.5}]}}"#,
            r#"{"spec": {"ports": [{"port": "25"}]}}"#,
            "\"service\"",
        ] {
            assert!(ServiceView::from_json(json.as_bytes()).is_err(), "{json}");
        }
    }
}
