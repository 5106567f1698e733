//! Plan → RFC 6902 JSON Patch (pure), and its check against the object it will be applied to.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use serde_json::{Map, Value};

use crate::mesh::{Change, InitList};
use crate::pod::PodView;

/// Builds the patch that applies `changes` to `pod` (paths relative to the pod's root).
///
/// Annotation keys are escaped (`/` → `~1`); an absent annotations map (or metadata) is
/// created whole in one operation, since RFC 6902 `add` cannot create intermediate members.
pub fn build(pod: &PodView<'_>, changes: &[Change]) -> Patch {
    let mut ops = Vec::with_capacity(changes.len());
    let mut new_annotations = Map::new();
    for change in changes {
        match change {
            Change::SetAnnotation { key, value } => match pod.annotations() {
                None => {
                    new_annotations.insert(key.clone(), Value::String(value.clone()));
                }
                Some(existing) => {
                    let path = PointerBuf::from_tokens(["metadata", "annotations", key.as_str()]);
                    let value = Value::String(value.clone());
                    ops.push(match existing.contains_key(key.as_str()) {
                        true => PatchOperation::Replace(ReplaceOperation { path, value }),
                        false => PatchOperation::Add(AddOperation { path, value }),
                    });
                }
            },
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
    if !new_annotations.is_empty() {
        let (path, value) = match pod.has_metadata() {
            true => (
                PointerBuf::from_tokens(["metadata", "annotations"]),
                Value::Object(new_annotations),
            ),
            false => {
                let metadata =
                    Map::from_iter([("annotations".to_string(), Value::Object(new_annotations))]);
                (
                    PointerBuf::from_tokens(["metadata"]),
                    Value::Object(metadata),
                )
            }
        };
        ops.insert(0, PatchOperation::Add(AddOperation { path, value }));
    }
    Patch(ops)
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
    let mut root = Map::new();
    if let Some(metadata) = &pod.metadata {
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
}
