//! A stub Kubernetes API server that keeps objects and serves them as kube-apiserver does to a
//! reflector: discovery for the kinds it knows; lists in pages (`limit`, `continue`) with the
//! collection's `resourceVersion`; metadata-only lists and watches for a client that asks for
//! `PartialObjectMetadata` in its `Accept` header; watches from a `resourceVersion`, streamed as
//! newline-delimited `{"type", "object"}` events and held open. A test changes objects while
//! reflectors watch, and can hold a kind's list back to see what waits for it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};

/// A kind the stub serves.
#[derive(Debug, Clone)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub resource: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

impl Kind {
    fn group_version(&self) -> String {
        match self.group {
            "" => self.version.to_string(),
            group => format!("{group}/{}", self.version),
        }
    }

    fn prefix(&self) -> String {
        match self.group {
            "" => format!("/api/{}", self.version),
            group => format!("/apis/{group}/{}", self.version),
        }
    }
}

pub const NAMESPACES: Kind = Kind {
    group: "",
    version: "v1",
    resource: "namespaces",
    kind: "Namespace",
    namespaced: false,
};
pub const PEER_AUTHENTICATIONS: Kind = Kind {
    group: "security.istio.io",
    version: "v1",
    resource: "peerauthentications",
    kind: "PeerAuthentication",
    namespaced: true,
};
pub const AUTHORIZATION_POLICIES: Kind = Kind {
    group: "security.istio.io",
    version: "v1",
    resource: "authorizationpolicies",
    kind: "AuthorizationPolicy",
    namespaced: true,
};

/// One change, as a watch sends it.
#[derive(Debug, Clone)]
struct Change {
    resource_version: u64,
    kind: &'static str,
    event: &'static str,
    object: Value,
}

#[derive(Default)]
struct Store {
    resource_version: u64,
    /// kind → "namespace/name" → object.
    objects: HashMap<&'static str, BTreeMap<String, Value>>,
    log: Vec<Change>,
    /// Kinds whose lists wait until released.
    held: HashSet<&'static str>,
}

#[derive(Clone)]
pub struct ClusterApi {
    kinds: Arc<Vec<Kind>>,
    store: Arc<Mutex<Store>>,
    changes: broadcast::Sender<Change>,
    released: Arc<Notify>,
    /// Every request's path and query, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl ClusterApi {
    pub fn new(kinds: &[Kind]) -> ClusterApi {
        ClusterApi {
            kinds: Arc::new(kinds.to_vec()),
            store: Arc::default(),
            changes: broadcast::channel(65_536).0,
            released: Arc::new(Notify::new()),
            requests: Arc::default(),
        }
    }

    pub fn router(&self) -> Router {
        Router::new().fallback(answer).with_state(self.clone())
    }

    fn kind_of(&self, object: &Value) -> &Kind {
        let kind = object["kind"].as_str().unwrap_or_default();
        self.kinds
            .iter()
            .find(|k| k.kind == kind)
            .unwrap_or_else(|| panic!("the stub does not serve {kind}"))
    }

    /// Creates or replaces `object` (ADDED or MODIFIED to watchers), with a new resourceVersion.
    pub fn apply(&self, object: Value) {
        let kind = self.kind_of(&object).kind;
        let mut store = self.store.lock().unwrap();
        store.resource_version += 1;
        let version = store.resource_version;
        let mut object = object;
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        if object["metadata"]["uid"].is_null() {
            object["metadata"]["uid"] = json!(format!("uid-{}", key(&object)));
        }
        let objects = store.objects.entry(kind).or_default();
        let event = match objects.insert(key(&object), object.clone()) {
            Some(_) => "MODIFIED",
            None => "ADDED",
        };
        let change = Change {
            resource_version: version,
            kind,
            event,
            object,
        };
        store.log.push(change.clone());
        let _ = self.changes.send(change);
    }

    /// Creates or replaces each of `objects`, as a fixture does before any watch.
    pub fn apply_all(&self, objects: impl IntoIterator<Item = Value>) {
        for object in objects {
            self.apply(object);
        }
    }

    /// Deletes `object` (by kind, namespace and name; DELETED to watchers).
    pub fn delete(&self, object: &Value) {
        let kind = self.kind_of(object).kind;
        let mut store = self.store.lock().unwrap();
        store.resource_version += 1;
        let version = store.resource_version;
        let Some(mut gone) = store
            .objects
            .get_mut(kind)
            .and_then(|objects| objects.remove(&key(object)))
        else {
            return;
        };
        gone["metadata"]["resourceVersion"] = json!(version.to_string());
        let change = Change {
            resource_version: version,
            kind,
            event: "DELETED",
            object: gone,
        };
        store.log.push(change.clone());
        let _ = self.changes.send(change);
    }

    /// Lists of `kind` wait until [`ClusterApi::release`].
    pub fn hold(&self, kind: &Kind) {
        self.store.lock().unwrap().held.insert(kind.kind);
    }

    pub fn release(&self, kind: &Kind) {
        self.store.lock().unwrap().held.remove(kind.kind);
        self.released.notify_waiters();
    }
}

fn key(object: &Value) -> String {
    format!(
        "{}/{}",
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// What a collection path asks for: the kind, and a namespace or all of them.
fn collection<'k>(kinds: &'k [Kind], path: &str) -> Option<(&'k Kind, Option<String>)> {
    kinds.iter().find_map(|kind| {
        let rest = path.strip_prefix(&kind.prefix())?.strip_prefix('/')?;
        if rest == kind.resource {
            return Some((kind, None));
        }
        let (namespace, resource) = rest.strip_prefix("namespaces/")?.split_once('/')?;
        (kind.namespaced && resource == kind.resource).then(|| (kind, Some(namespace.to_string())))
    })
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%2F", "/")))
        .collect()
}

/// The object as a metadata-only client receives it.
fn partial(object: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
           "metadata": object["metadata"].clone()})
}

async fn answer(State(api): State<ClusterApi>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_string();
    api.requests
        .lock()
        .unwrap()
        .push(format!("{path}?{}", uri.query().unwrap_or_default()));
    if let Some(body) = discovery(&api.kinds, &path) {
        return json_response(StatusCode::OK, body);
    }
    let Some((kind, namespace)) = collection(&api.kinds, &path) else {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                   "message": "the server could not find the requested resource", "code": 404}),
        );
    };
    let metadata_only = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("as=PartialObjectMetadata"));
    let query = query_map(&uri);
    if query.get("watch").map(String::as_str) == Some("true") {
        return watch(&api, kind, namespace, &query, metadata_only);
    }
    // A held list waits for its release.
    loop {
        let released = api.released.notified();
        if !api.store.lock().unwrap().held.contains(kind.kind) {
            break;
        }
        released.await;
    }
    list(&api, kind, namespace.as_deref(), &query, metadata_only)
}

fn list(
    api: &ClusterApi,
    kind: &Kind,
    namespace: Option<&str>,
    query: &HashMap<String, String>,
    metadata_only: bool,
) -> Response {
    let store = api.store.lock().unwrap();
    let items: Vec<&Value> = store
        .objects
        .get(kind.kind)
        .into_iter()
        .flat_map(BTreeMap::values)
        .filter(|o| namespace.is_none_or(|ns| o["metadata"]["namespace"] == ns))
        .collect();
    let start: usize = query
        .get("continue")
        .and_then(|c| c.strip_prefix("from-")?.parse().ok())
        .unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(usize::MAX);
    let end = start.saturating_add(limit).min(items.len());
    let page: Vec<Value> = items[start.min(end)..end]
        .iter()
        .map(|o| match metadata_only {
            true => partial(o),
            false => (*o).clone(),
        })
        .collect();
    let mut metadata = json!({"resourceVersion": store.resource_version.to_string()});
    if end < items.len() {
        metadata["continue"] = json!(format!("from-{end}"));
        metadata["remainingItemCount"] = json!(items.len() - end);
    }
    let (list_kind, api_version) = match metadata_only {
        true => (
            "PartialObjectMetadataList".to_string(),
            "meta.k8s.io/v1".to_string(),
        ),
        false => (format!("{}List", kind.kind), kind.group_version()),
    };
    json_response(
        StatusCode::OK,
        json!({"kind": list_kind, "apiVersion": api_version, "metadata": metadata, "items": page}),
    )
}

fn watch(
    api: &ClusterApi,
    kind: &Kind,
    namespace: Option<String>,
    query: &HashMap<String, String>,
    metadata_only: bool,
) -> Response {
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Subscribe before reading the log, so that no change falls between the two.
    let live = api.changes.subscribe();
    let replay: Vec<Change> = api
        .store
        .lock()
        .unwrap()
        .log
        .iter()
        .filter(|c| c.resource_version > from)
        .cloned()
        .collect();
    let last_replayed = replay.last().map_or(from, |c| c.resource_version);
    let wanted = {
        let kind = kind.kind;
        move |change: &Change| {
            change.kind == kind
                && namespace
                    .as_deref()
                    .is_none_or(|ns| change.object["metadata"]["namespace"] == ns)
        }
    };
    let encode = move |change: Change| -> Result<Bytes, Infallible> {
        let object = match metadata_only {
            true => partial(&change.object),
            false => change.object,
        };
        let mut line = json!({"type": change.event, "object": object}).to_string();
        line.push('\n');
        Ok(Bytes::from(line))
    };
    let wanted_live = wanted.clone();
    let replayed = futures::stream::iter(replay.into_iter().filter(wanted));
    let live = tokio_stream_of(live).filter(move |c| {
        futures::future::ready(c.resource_version > last_replayed && wanted_live(c))
    });
    let body = Body::from_stream(replayed.chain(live).map(encode));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap()
}

/// The changes a broadcast receiver gets, as a stream (lagging receivers skip, as a real watch
/// would then be answered 410 and relist; tests keep well under the channel's capacity).
fn tokio_stream_of(receiver: broadcast::Receiver<Change>) -> impl futures::Stream<Item = Change> {
    futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(change) => return Some((change, receiver)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

fn discovery(kinds: &[Kind], path: &str) -> Option<Value> {
    match path {
        "/version" => Some(json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0"})),
        "/api" => Some(json!({"kind": "APIVersions", "versions": ["v1"]})),
        "/apis" => {
            let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for kind in kinds.iter().filter(|k| !k.group.is_empty()) {
                let versions = groups.entry(kind.group).or_default();
                if !versions.contains(&kind.version) {
                    versions.push(kind.version);
                }
            }
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|(group, versions)| {
                    let versions: Vec<Value> = versions
                        .iter()
                        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
                        .collect();
                    json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
                })
                .collect();
            Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        _ => {
            let served: Vec<&Kind> = kinds.iter().filter(|k| k.prefix() == path).collect();
            let first = served.first()?;
            let resources: Vec<Value> = served
                .iter()
                .map(|k| {
                    json!({"name": k.resource, "singularName": k.kind.to_lowercase(),
                           "namespaced": k.namespaced, "kind": k.kind,
                           "verbs": ["get", "list", "watch"]})
                })
                .collect();
            Some(json!({"kind": "APIResourceList", "apiVersion": "v1",
                        "groupVersion": first.group_version(), "resources": resources}))
        }
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A Namespace object.
pub fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "labels": labels}})
}

/// A `security.istio.io/v1` object of `kind` in `namespace`.
pub fn istio_policy(kind: &Kind, namespace: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": kind.group_version(), "kind": kind.kind,
           "metadata": {"namespace": namespace, "name": name,
                        "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": spec})
}
