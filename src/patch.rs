//! Plan → RFC 6902 JSON Patch (pure), and its check against the object it will be applied to:
//! pods and Services.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use serde_json::{Map, Value};

use crate::mesh::service::ServiceChange;
use crate::mesh::{Change, InitList};
use crate::pod::{MetadataView, PodView};
use crate::service::ServiceView;

/// Builds the patch that applies `changes` to `pod` (paths relative to the pod's root).
///
/// Annotation keys are escaped (`/` → `~1`); an absent annotations map (or metadata) is
/// created whole in one operation, since RFC 6902 `add` cannot create intermediate members.
pub fn build(pod: &PodView<'_>, changes: &[Change]) -> Patch {
    let mut ops = Vec::with_capacity(changes.len());
    let mut annotations = Annotations::new(pod.metadata.as_ref());
    for change in changes {
        match change {
            Change::SetAnnotation { key, value } => annotations.set(key, value, &mut ops),
            Change::ReplaceInitWord {
                container,
                list,
                index,
                value,
            } => {
                let path = init_list_path(*container, *list).with_trailing_token(*index);
                ops.push(PatchOperation::Replace(ReplaceOperation {
                    path,
                    value: Value::String(value.clone()),
                }));
            }
            Change::AppendInitArgs { container, args } => {
                let has_args = pod
                    .init_containers()
                    .get(*container)
                    .is_some_and(|c| c.args.is_some());
                if has_args {
                    for arg in args {
                        let path =
                            init_list_path(*container, InitList::Args).with_trailing_token("-");
                        ops.push(PatchOperation::Add(AddOperation {
                            path,
                            value: Value::String(arg.clone()),
                        }));
                    }
                } else {
                    let value = Value::Array(args.iter().cloned().map(Value::String).collect());
                    ops.push(PatchOperation::Add(AddOperation {
                        path: init_list_path(*container, InitList::Args),
                        value,
                    }));
                }
            }
        }
    }
    annotations.finish(&mut ops);
    Patch(ops)
}

/// Builds the patch that applies `changes` to `service` (paths relative to its root).
pub fn build_service(service: &ServiceView<'_>, changes: &[ServiceChange]) -> Patch {
    let mut ops = Vec::with_capacity(changes.len());
    let mut annotations = Annotations::new(service.metadata.as_ref());
    for change in changes {
        match change {
            ServiceChange::SetAnnotation { key, value } => annotations.set(key, value, &mut ops),
            ServiceChange::SetAppProtocol { port, value } => {
                ops.push(PatchOperation::Add(AddOperation {
                    path: PointerBuf::from_tokens(["spec", "ports"])
                        .with_trailing_token(*port)
                        .with_trailing_token("appProtocol"),
                    value: Value::String(value.clone()),
                }))
            }
        }
    }
    annotations.finish(&mut ops);
    Patch(ops)
}

/// Annotation operations on one object: one per key on an existing map, or the whole map
/// (and metadata) created in one operation, since RFC 6902 `add` cannot create intermediate
/// members.
struct Annotations<'v, 'a> {
    metadata: Option<&'v MetadataView<'a>>,
    created: Map<String, Value>,
}

impl<'v, 'a> Annotations<'v, 'a> {
    fn new(metadata: Option<&'v MetadataView<'a>>) -> Self {
        Annotations {
            metadata,
            created: Map::new(),
        }
    }

    fn set(&mut self, key: &str, value: &str, ops: &mut Vec<PatchOperation>) {
        let value = Value::String(value.to_string());
        match self.metadata.and_then(|m| m.annotations.as_ref()) {
            None => {
                self.created.insert(key.to_string(), value);
            }
            Some(existing) => {
                let path = PointerBuf::from_tokens(["metadata", "annotations", key]);
                ops.push(match existing.contains_key(key) {
                    true => PatchOperation::Replace(ReplaceOperation { path, value }),
                    false => PatchOperation::Add(AddOperation { path, value }),
                });
            }
        }
    }

    /// Puts the creation of the map, if any, first.
    fn finish(self, ops: &mut Vec<PatchOperation>) {
        if self.created.is_empty() {
            return;
        }
        let (path, value) = match self.metadata {
            Some(_) => (
                PointerBuf::from_tokens(["metadata", "annotations"]),
                Value::Object(self.created),
            ),
            None => {
                let metadata =
                    Map::from_iter([("annotations".to_string(), Value::Object(self.created))]);
                (
                    PointerBuf::from_tokens(["metadata"]),
                    Value::Object(metadata),
                )
            }
        };
        ops.insert(0, PatchOperation::Add(AddOperation { path, value }));
    }
}

fn init_list_path(container: usize, list: InitList) -> PointerBuf {
    PointerBuf::from_tokens(["spec", "initContainers"])
        .with_trailing_token(container)
        .with_trailing_token(list.field())
}

/// Checks that every operation of `patch` applies to the object `pod` was read from, by
/// applying it to a copy of just the parts it touches: metadata.annotations and the init
/// containers' command and args. Cheap whatever the pod's size.
pub fn verify(pod: &PodView<'_>, patch: &Patch) -> Result<Value, json_patch::PatchError> {
    let mut skeleton = skeleton(pod);
    json_patch::patch(&mut skeleton, &patch.0)?;
    Ok(skeleton)
}

/// The parts of the pod a patch may touch, as JSON.
pub fn skeleton(pod: &PodView<'_>) -> Value {
    let mut root = metadata_skeleton(pod.metadata.as_ref());
    if let Some(inits) = pod.spec.as_ref().and_then(|s| s.init_containers.as_ref()) {
        let inits = inits
            .iter()
            .map(|init| {
                let mut container = Map::new();
                for (list, words) in [
                    (InitList::Command, &init.command),
                    (InitList::Args, &init.args),
                ] {
                    if let Some(words) = words {
                        let words = words.iter().map(|w| Value::String(w.to_string())).collect();
                        container.insert(list.field().to_string(), Value::Array(words));
                    }
                }
                Value::Object(container)
            })
            .collect();
        let spec = Map::from_iter([("initContainers".to_string(), Value::Array(inits))]);
        root.insert("spec".to_string(), Value::Object(spec));
    }
    Value::Object(root)
}

/// Checks that every operation of `patch` applies to the Service `service` was read from, on a
/// copy of the parts it touches: metadata.annotations and each port's appProtocol.
pub fn verify_service(
    service: &ServiceView<'_>,
    patch: &Patch,
) -> Result<Value, json_patch::PatchError> {
    let mut root = metadata_skeleton(service.metadata.as_ref());
    if let Some(ports) = service.spec.as_ref().and_then(|s| s.ports.as_ref()) {
        let ports = ports
            .iter()
            .map(|port| {
                let mut view = Map::new();
                if let Some(app_protocol) = &port.app_protocol {
                    view.insert(
                        "appProtocol".to_string(),
                        Value::String(app_protocol.to_string()),
                    );
                }
                Value::Object(view)
            })
            .collect();
        let spec = Map::from_iter([("ports".to_string(), Value::Array(ports))]);
        root.insert("spec".to_string(), Value::Object(spec));
    }
    let mut skeleton = Value::Object(root);
    json_patch::patch(&mut skeleton, &patch.0)?;
    Ok(skeleton)
}

/// `{"metadata": {"annotations": ...}}` as far as the object has them.
fn metadata_skeleton(metadata: Option<&MetadataView<'_>>) -> Map<String, Value> {
    let mut root = Map::new();
    if let Some(metadata) = metadata {
        let mut meta = Map::new();
        if let Some(annotations) = &metadata.annotations {
            let map = annotations
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect();
            meta.insert("annotations".to_string(), Value::Object(map));
        }
        root.insert("metadata".to_string(), Value::Object(meta));
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch_json(pod: &Value, changes: &[Change]) -> Value {
        let bytes = serde_json::to_vec(pod).unwrap();
        let view = PodView::from_json(&bytes).unwrap();
        let patch = build(&view, changes);
        verify(&view, &patch).expect("patch applies");
        serde_json::to_value(&patch).unwrap()
    }

    fn set(key: &str, value: &str) -> Change {
        Change::SetAnnotation {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn creates_the_annotations_map_when_absent() {
        let ops = patch_json(
            &json!({"metadata": {"name": "p"}}),
            &[set("a/b", "1"), set("c", "2")],
        );
        assert_eq!(
            ops,
            json!([{"op": "add", "path": "/metadata/annotations", "value": {"a/b": "1", "c": "2"}}])
        );
    }

    #[test]
    fn creates_metadata_when_absent() {
        let ops = patch_json(&json!({"spec": {}}), &[set("a", "1")]);
        assert_eq!(
            ops,
            json!([{"op": "add", "path": "/metadata", "value": {"annotations": {"a": "1"}}}])
        );
    }

    #[test]
    fn escapes_slashes_and_tildes_in_keys() {
        let pod = json!({"metadata": {"annotations": {"x~y/z": "old"}}});
        let ops = patch_json(
            &pod,
            &[
                set("traffic.sidecar.istio.io/excludeInboundPorts", "25"),
                set("x~y/z", "new"),
            ],
        );
        assert_eq!(
            ops,
            json!([
                {"op": "add", "path": "/metadata/annotations/traffic.sidecar.istio.io~1excludeInboundPorts", "value": "25"},
                {"op": "replace", "path": "/metadata/annotations/x~0y~1z", "value": "new"},
            ])
        );
    }

    #[test]
    fn init_container_args() {
        let pod = json!({"spec": {"initContainers": [{"name": "a"}, {"name": "istio-init", "args": ["-b", "*", "-d", "1"]}]}});
        let ops = patch_json(
            &pod,
            &[
                Change::ReplaceInitWord {
                    container: 1,
                    list: InitList::Args,
                    index: 3,
                    value: "1,25".into(),
                },
                Change::AppendInitArgs {
                    container: 1,
                    args: vec!["-x".into(), "y".into()],
                },
                Change::AppendInitArgs {
                    container: 0,
                    args: vec!["-d".into(), "25".into()],
                },
            ],
        );
        assert_eq!(
            ops,
            json!([
                {"op": "replace", "path": "/spec/initContainers/1/args/3", "value": "1,25"},
                {"op": "add", "path": "/spec/initContainers/1/args/-", "value": "-x"},
                {"op": "add", "path": "/spec/initContainers/1/args/-", "value": "y"},
                {"op": "add", "path": "/spec/initContainers/0/args", "value": ["-d", "25"]},
            ])
        );
    }

    #[test]
    fn init_container_command_words() {
        let pod = json!({"spec": {"initContainers": [{"name": "istio-init",
            "command": ["istio-iptables", "-b", "*", "-d", "15020"]}]}});
        let ops = patch_json(
            &pod,
            &[Change::ReplaceInitWord {
                container: 0,
                list: InitList::Command,
                index: 4,
                value: "15020,25".into(),
            }],
        );
        assert_eq!(
            ops,
            json!([{"op": "replace", "path": "/spec/initContainers/0/command/4", "value": "15020,25"}])
        );
    }

    #[test]
    fn verification_rejects_operations_that_do_not_apply() {
        let bytes = br#"{"spec": {"initContainers": [{"args": ["-b"]}]}}"#;
        let view = PodView::from_json(bytes).unwrap();
        for change in [
            Change::ReplaceInitWord {
                container: 0,
                list: InitList::Args,
                index: 5,
                value: "x".into(),
            },
            Change::ReplaceInitWord {
                container: 0,
                list: InitList::Command,
                index: 0,
                value: "x".into(),
            },
            Change::ReplaceInitWord {
                container: 3,
                list: InitList::Args,
                index: 0,
                value: "x".into(),
            },
        ] {
            assert!(
                verify(&view, &build(&view, std::slice::from_ref(&change))).is_err(),
                "{change:?}"
            );
        }
    }
    #[test]
    fn service_app_protocol_and_record() {
        let service = json!({"metadata": {"name": "mox"}, "spec": {"ports": [
            {"name": "http", "port": 80, "appProtocol": "http"}, {"name": "submission", "port": 587}]}});
        let bytes = serde_json::to_vec(&service).unwrap();
        let view = ServiceView::from_json(&bytes).unwrap();
        let changes = [
            ServiceChange::SetAppProtocol {
                port: 1,
                value: "tcp".into(),
            },
            ServiceChange::SetAnnotation {
                key: "serverfirst.dev/declared-tcp-ports".into(),
                value: "587".into(),
            },
        ];
        let patch = build_service(&view, &changes);
        let applied = verify_service(&view, &patch).expect("patch applies");
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            json!([
                {"op": "add", "path": "/metadata/annotations", "value": {"serverfirst.dev/declared-tcp-ports": "587"}},
                {"op": "add", "path": "/spec/ports/1/appProtocol", "value": "tcp"},
            ])
        );
        assert_eq!(
            applied["spec"]["ports"],
            json!([{"appProtocol": "http"}, {"appProtocol": "tcp"}])
        );
        let mut patched = service.clone();
        json_patch::patch(&mut patched, &patch.0).unwrap();
        assert_eq!(
            patched["spec"]["ports"][1],
            json!({"name": "submission", "port": 587, "appProtocol": "tcp"})
        );
    }

    #[test]
    fn service_verification_rejects_a_port_that_is_not_there() {
        let view = ServiceView::from_json(br#"{"spec": {"ports": [{"port": 25}]}}"#).unwrap();
        let patch = build_service(
            &view,
            &[ServiceChange::SetAppProtocol {
                port: 3,
                value: "tcp".into(),
            }],
        );
        assert!(verify_service(&view, &patch).is_err());
        let no_ports = ServiceView::from_json(br#"{"spec": {}}"#).unwrap();
        assert!(verify_service(&no_ports, &patch).is_err());
    }
}
