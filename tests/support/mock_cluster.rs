//! A small Kubernetes API server, behind kube's mocked service (tower-test) or on a loopback
//! HTTP port, that keeps collections of objects and answers as kube-apiserver does:
//!
//! - a LIST returns the collection (filtered by an equality `labelSelector`) with the current
//!   resourceVersion; `Accept: ...;as=PartialObjectMetadata` gets `PartialObjectMetadataList`;
//! - a WATCH from resourceVersion `rv` gets the events after `rv` that concern its selector, one
//!   JSON object per line; an object that starts matching the selector is `ADDED`, one that
//!   stops is `DELETED` (k8s.io/apiserver pkg/storage/cacher/cache_watcher.go,
//!   `convertToWatchEvent`). Over HTTP the answer is HTTP 200 at once and a chunked body that
//!   stays open; kube's mocked service cannot stream a body, so there the answer waits for the
//!   first events and ends after them, as a watch reaching its timeout does;
//! - a WATCH from a resourceVersion older than the last compaction gets HTTP 200 and one
//!   `ERROR` event whose object is a `Status` with code 410, reason `Expired`, and the stream
//!   ends (cacher.go, `Cacher.Watch` → `newErrWatcher` for `getAllEventsSinceLocked`'s "too old
//!   resource version");
//! - server-side apply (PATCH, `application/apply-patch+yaml`) stores the object and tells the
//!   watches; DELETE removes it; Events are accepted; discovery serves `networking.istio.io/v1`;
//!   anything else is a 404 `Status`.
//!
//! Every request is recorded with the instant it arrived. Lists of a path can be stalled (never
//! answered, as a slow list in a large cluster) or forbidden (403, as without RBAC).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use http_body_util::BodyExt as _;
use hyper::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower_test::mock::Handle;

pub type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// An answer: status and JSON body (for a watch, one event per line).
struct Reply {
    status: u16,
    body: ReplyBody,
}

enum ReplyBody {
    Full(Vec<u8>),
    /// Chunks until the sender is dropped.
    Stream(mpsc::UnboundedReceiver<Vec<u8>>),
}

type Responder = oneshot::Sender<Reply>;

/// Where an open watch's events go.
enum WatchSink {
    /// One answer with the events, which ends the watch.
    Once(Responder),
    /// The open body of an answer already sent.
    Stream(mpsc::UnboundedSender<Vec<u8>>),
}

impl WatchSink {
    /// Sends `events`; the sink back if the watch stays open.
    fn deliver(self, events: Vec<Value>) -> Option<WatchSink> {
        match self {
            WatchSink::Once(send) => {
                let _ = send.send(watch_reply(events));
                None
            }
            WatchSink::Stream(chunks) => {
                let delivered = chunks.send(event_lines(events)).is_ok();
                delivered.then_some(WatchSink::Stream(chunks))
            }
        }
    }

    /// Ends the watch, as its `timeoutSeconds` does.
    fn end(self) {
        if let WatchSink::Once(send) = self {
            let _ = send.send(watch_reply(Vec::new()));
        }
    }
}

pub const SERVICES: &str = "/api/v1/services";
pub const PODS: &str = "/api/v1/pods";
pub const NAMESPACES: &str = "/api/v1/namespaces";
pub const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
pub const RULES: &str = "/apis/networking.istio.io/v1/destinationrules";

/// (collection path, list kind, apiVersion) of every kind served.
const KINDS: [(&str, &str, &str); 5] = [
    (SERVICES, "ServiceList", "v1"),
    (PODS, "PodList", "v1"),
    (NAMESPACES, "NamespaceList", "v1"),
    (SLICES, "EndpointSliceList", "discovery.k8s.io/v1"),
    (RULES, "DestinationRuleList", "networking.istio.io/v1"),
];

/// One request as the API server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub uri: String,
    pub content_type: String,
    pub accept: String,
    pub body: Value,
    /// The resourceVersion of the list it was answered with, for a list.
    pub answered_version: Option<String>,
}

impl Seen {
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }

    pub fn is_watch(&self) -> bool {
        self.method == "GET" && self.uri.contains("watch=true")
    }

    pub fn is_list(&self) -> bool {
        self.method == "GET" && !self.is_watch()
    }
}

struct Change {
    resource_version: u64,
    path: &'static str,
    old: Option<Value>,
    new: Option<Value>,
}

struct HeldWatch {
    path: &'static str,
    from: u64,
    selector: Vec<(String, String)>,
    metadata_only: bool,
    sink: WatchSink,
}

#[derive(Default)]
struct State {
    /// Watch answers stream (HTTP) rather than end after their events (mocked service).
    streaming: bool,
    resource_version: u64,
    /// Watches from before this resourceVersion are answered with 410.
    compacted: u64,
    objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    changes: Vec<Change>,
    held: Vec<HeldWatch>,
    seen: Vec<Seen>,
    /// Lists of these paths are never answered.
    stalled: Vec<&'static str>,
    /// Lists of these paths are forbidden (403), as without RBAC for them.
    forbidden: Vec<&'static str>,
    never_answered: Vec<Responder>,
}

/// The running mock API server; stops when dropped.
pub struct MockCluster {
    state: Arc<Mutex<State>>,
    activity: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for MockCluster {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockCluster {
    /// Serves kube's mocked service `handle`, starting with `objects` (each with `apiVersion`,
    /// `kind` and metadata).
    pub fn start(mut handle: ApiHandle, objects: Vec<Value>) -> MockCluster {
        let (state, activity) = Self::state(objects, false);
        let (served, notify) = (state.clone(), activity.clone());
        let task = tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect().await.unwrap().to_bytes();
                let reply = receive(
                    &served,
                    &notify,
                    &parts.method,
                    &parts.uri,
                    &parts.headers,
                    &bytes,
                );
                tokio::spawn(async move {
                    if let Ok(Reply {
                        status,
                        body: ReplyBody::Full(body),
                    }) = reply.await
                    {
                        send.send_response(
                            Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Body::from(body))
                                .unwrap(),
                        );
                    }
                });
            }
        });
        MockCluster {
            state,
            activity,
            task,
        }
    }

    /// Serves plain HTTP on 127.0.0.1 (for the binary); returns the server's URL.
    pub async fn serve_http(objects: Vec<Value>) -> (MockCluster, String) {
        let (state, activity) = Self::state(objects, true);
        let (served, notify) = (state.clone(), activity.clone());
        let router = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, bytes: Bytes| {
                let reply = receive(&served, &notify, &method, &uri, &headers, &bytes);
                async move {
                    // A responder dropped unanswered (a stalled list, the test ended): 503.
                    let reply = reply.await.unwrap_or(Reply {
                        status: 503,
                        body: ReplyBody::Full(Vec::new()),
                    });
                    let body = match reply.body {
                        ReplyBody::Full(bytes) => axum::body::Body::from(bytes),
                        ReplyBody::Stream(chunks) => axum::body::Body::from_stream(
                            futures::stream::unfold(chunks, |mut chunks| async move {
                                let chunk = chunks.recv().await?;
                                Some((Ok::<_, std::convert::Infallible>(chunk), chunks))
                            }),
                        ),
                    };
                    Response::builder()
                        .status(reply.status)
                        .header("content-type", "application/json")
                        .body(body)
                        .unwrap()
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        (
            MockCluster {
                state,
                activity,
                task,
            },
            url,
        )
    }

    fn state(objects: Vec<Value>, streaming: bool) -> (Arc<Mutex<State>>, Arc<Notify>) {
        let mut state = State {
            streaming,
            resource_version: 100,
            ..State::default()
        };
        for object in objects {
            state.store(object);
        }
        (Arc::new(Mutex::new(state)), Arc::new(Notify::new()))
    }

    /// From now on, lists of `path` are never answered.
    pub fn stall_lists(&self, path: &'static str) {
        self.state.lock().unwrap().stalled.push(path);
    }

    /// From now on, lists of `path` are answered 403 Forbidden.
    pub fn forbid_lists(&self, path: &'static str) {
        self.state.lock().unwrap().forbidden.push(path);
    }

    /// Creates or replaces `object`, as a write by someone else; watches learn of it.
    pub fn put(&self, object: Value) {
        self.state.lock().unwrap().store(object);
        self.activity.notify_waiters();
    }

    /// Ends every open watch (as its `timeoutSeconds` does) and compacts: a watch resumed from
    /// a resourceVersion seen so far gets `410 Gone`. Returns when it happened.
    pub fn expire_watches(&self) -> Instant {
        let mut state = self.state.lock().unwrap();
        state.resource_version += 1;
        state.compacted = state.resource_version;
        for held in state.held.drain(..) {
            held.sink.end();
        }
        Instant::now()
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Waits until `done` holds for the requests seen, at most `within`.
    pub async fn wait_for<T>(
        &self,
        within: Duration,
        what: &str,
        mut done: impl FnMut(&[Seen]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.activity.notified();
            if let Some(found) = done(&self.state.lock().unwrap().seen) {
                return found;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let seen: Vec<String> = self
                    .seen()
                    .iter()
                    .map(|s| format!("{} {}", s.method, s.uri))
                    .collect();
                panic!("{what}: not within {within:?}; requests: {seen:#?}");
            }
        }
    }

    /// Waits until every path in `paths` has a watch open.
    pub async fn wait_for_watches(&self, paths: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.activity.notified();
            let open: Vec<&str> = self
                .state
                .lock()
                .unwrap()
                .held
                .iter()
                .map(|h| h.path)
                .collect();
            if paths.iter().all(|p| open.contains(p)) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("watches of {paths:?} not all open within {within:?}; open: {open:?}");
            }
        }
    }

    /// The first write (not a GET) after `since`, waiting at most `within`.
    pub async fn write_after(&self, since: Instant, within: Duration) -> Seen {
        self.wait_for(within, "a write", |seen| {
            seen.iter()
                .find(|s| s.method != "GET" && s.at >= since)
                .cloned()
        })
        .await
    }
}

impl State {
    fn store(&mut self, mut object: Value) {
        let path = collection_of(&object);
        self.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        let key = key_of(&object);
        let old = self
            .objects
            .entry(path)
            .or_default()
            .insert(key, object.clone());
        self.record(path, old, Some(object));
    }

    fn remove(&mut self, path: &'static str, key: &str) -> Option<Value> {
        let mut old = self.objects.entry(path).or_default().remove(key)?;
        self.resource_version += 1;
        old["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        self.record(path, Some(old.clone()), None);
        Some(old)
    }

    fn record(&mut self, path: &'static str, old: Option<Value>, new: Option<Value>) {
        self.changes.push(Change {
            resource_version: self.resource_version,
            path,
            old,
            new,
        });
        let held = std::mem::take(&mut self.held);
        for mut watch in held {
            let events =
                self.events_for(watch.path, watch.from, &watch.selector, watch.metadata_only);
            if events.is_empty() {
                self.held.push(watch);
            } else if let Some(sink) = watch.sink.deliver(events) {
                watch.sink = sink;
                watch.from = self.resource_version;
                self.held.push(watch);
            }
        }
    }

    /// The watch events after `from` for a watch of `path` with `selector`.
    fn events_for(
        &self,
        path: &str,
        from: u64,
        selector: &[(String, String)],
        metadata_only: bool,
    ) -> Vec<Value> {
        let passes = |object: &Option<Value>| {
            object
                .as_ref()
                .is_some_and(|o| matches_selector(o, selector))
        };
        self.changes
            .iter()
            .filter(|c| c.path == path && c.resource_version > from)
            .filter_map(|change| {
                let (was, is) = (passes(&change.old), passes(&change.new));
                let (kind, object) = match (was, is) {
                    (false, true) => ("ADDED", change.new.as_ref()?),
                    (true, true) => ("MODIFIED", change.new.as_ref()?),
                    // The object as it was, at the event's resourceVersion.
                    (true, false) => ("DELETED", change.old.as_ref()?),
                    (false, false) => return None,
                };
                let mut object = object.clone();
                object["metadata"]["resourceVersion"] = json!(change.resource_version.to_string());
                let object = if metadata_only {
                    partial(&object)
                } else {
                    object
                };
                Some(json!({"type": kind, "object": object}))
            })
            .collect()
    }

    fn answer(&mut self, seen: Seen, send: Responder) {
        let query = query_of(&seen.uri);
        let path = seen.path().to_string();
        let metadata_only = seen.accept.contains("as=PartialObjectMetadata");
        self.seen.push(seen.clone());
        if seen.method == "GET"
            && let Some(&(collection, list_kind, api_version)) = KINDS.iter().find(|k| k.0 == path)
        {
            let selector = parse_selector(query.get("labelSelector").map(String::as_str));
            if query.get("watch").map(String::as_str) == Some("true") {
                let from: u64 = query
                    .get("resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if from < self.compacted {
                    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "reason": "Expired", "code": 410,
                        "message": format!("too old resource version: {from} ({})", self.compacted)});
                    // The one event, then the stream ends.
                    let error = vec![json!({"type": "ERROR", "object": status})];
                    let _ = send.send(watch_reply(error));
                    return;
                }
                let sink = if self.streaming {
                    let (chunks, body) = mpsc::unbounded_channel();
                    let _ = send.send(Reply {
                        status: 200,
                        body: ReplyBody::Stream(body),
                    });
                    WatchSink::Stream(chunks)
                } else {
                    WatchSink::Once(send)
                };
                let events = self.events_for(collection, from, &selector, metadata_only);
                let sink = if events.is_empty() {
                    Some(sink)
                } else {
                    sink.deliver(events)
                };
                if let Some(sink) = sink {
                    self.held.push(HeldWatch {
                        path: collection,
                        from: self.resource_version,
                        selector,
                        metadata_only,
                        sink,
                    });
                }
                return;
            }
            if self.stalled.contains(&collection) {
                self.never_answered.push(send);
                return;
            }
            if self.forbidden.contains(&collection) {
                let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "Forbidden", "code": 403,
                    "message": format!("{collection} is forbidden")});
                let _ = send.send(json_reply(403, &status));
                return;
            }
            let items: Vec<Value> = self
                .objects
                .get(collection)
                .into_iter()
                .flat_map(|objects| objects.values())
                .filter(|o| matches_selector(o, &selector))
                .map(|o| if metadata_only { partial(o) } else { o.clone() })
                .collect();
            let (list_kind, api_version) = if metadata_only {
                ("PartialObjectMetadataList", "meta.k8s.io/v1")
            } else {
                (list_kind, api_version)
            };
            let version = self.resource_version.to_string();
            if let Some(seen) = self.seen.last_mut() {
                seen.answered_version = Some(version.clone());
            }
            let list = json!({"kind": list_kind, "apiVersion": api_version,
                "metadata": {"resourceVersion": version}, "items": items});
            let _ = send.send(json_reply(200, &list));
            return;
        }
        if let Some((collection, namespace, name)) = object_of(&path) {
            match seen.method.as_str() {
                "PATCH" if seen.content_type == "application/apply-patch+yaml" => {
                    let mut object = seen.body.clone();
                    let key = format!("{namespace}/{name}");
                    let uid = self
                        .objects
                        .get(collection)
                        .and_then(|o| o.get(&key))
                        .map(|o| o["metadata"]["uid"].clone())
                        .unwrap_or_else(|| json!(format!("uid-{name}")));
                    object["metadata"]["uid"] = uid;
                    self.store(object);
                    let stored = self.objects[collection][&key].clone();
                    let _ = send.send(json_reply(200, &stored));
                }
                "DELETE" => match self.remove(collection, &format!("{namespace}/{name}")) {
                    Some(_) => {
                        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Success"});
                        let _ = send.send(json_reply(200, &status));
                    }
                    None => {
                        let _ = send.send(not_found(&path));
                    }
                },
                _ => {
                    let _ = send.send(not_found(&path));
                }
            }
            return;
        }
        if seen.method == "GET" && path == "/apis/networking.istio.io/v1" {
            let resources = json!({"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": "networking.istio.io/v1", "resources": [{"name": "destinationrules",
                "singularName": "destinationrule", "namespaced": true, "kind": "DestinationRule",
                "verbs": ["get", "list", "watch", "create", "patch", "delete"]}]});
            let _ = send.send(json_reply(200, &resources));
            return;
        }
        if seen.method == "POST" && path.starts_with("/apis/events.k8s.io/v1/") {
            let _ = send.send(json_reply(201, &seen.body));
            return;
        }
        let _ = send.send(not_found(&path));
    }
}

/// `/apis/<g>/<v>/namespaces/<ns>/<resource>/<name>` → (collection, namespace, name).
fn object_of(path: &str) -> Option<(&'static str, String, String)> {
    let (prefix, name) = path.rsplit_once('/')?;
    let (prefix, resource) = prefix.rsplit_once('/')?;
    let (prefix, namespace) = prefix.rsplit_once('/')?;
    let prefix = prefix.strip_suffix("/namespaces")?;
    let collection = format!("{prefix}/{resource}");
    let &(collection, ..) = KINDS.iter().find(|k| k.0 == collection)?;
    Some((collection, namespace.to_string(), name.to_string()))
}

fn collection_of(object: &Value) -> &'static str {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let list_kind = format!("{}List", object["kind"].as_str().unwrap_or_default());
    KINDS
        .iter()
        .find(|k| k.1 == list_kind && k.2 == api_version)
        .unwrap_or_else(|| panic!("the mock cluster does not serve {api_version} {list_kind}"))
        .0
}

fn key_of(object: &Value) -> String {
    let meta = &object["metadata"];
    format!(
        "{}/{}",
        meta["namespace"].as_str().unwrap_or_default(),
        meta["name"].as_str().unwrap_or_default()
    )
}

/// The object as a metadata-only request gets it.
fn partial(object: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
        "metadata": object["metadata"].clone()})
}

/// Equality requirements `k=v,k2=v2` (the only form the tests use).
fn parse_selector(selector: Option<&str>) -> Vec<(String, String)> {
    selector
        .into_iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
        .map(|requirement| {
            let (key, value) = requirement.split_once('=').unwrap_or_else(|| {
                panic!("the mock cluster knows only k=v selectors: {requirement}")
            });
            (key.to_string(), value.to_string())
        })
        .collect()
}

fn matches_selector(object: &Value, selector: &[(String, String)]) -> bool {
    selector
        .iter()
        .all(|(key, value)| object["metadata"]["labels"][key].as_str() == Some(value.as_str()))
}

fn query_of(uri: &str) -> BTreeMap<String, String> {
    uri.split_once('?')
        .map(|(_, query)| query)
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_string(), percent_decode(value)))
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// Records the request and asks the state for its answer.
fn receive(
    state: &Mutex<State>,
    activity: &Notify,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> oneshot::Receiver<Reply> {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    let seen = Seen {
        at: Instant::now(),
        method: method.to_string(),
        uri: uri.to_string(),
        content_type: header("content-type"),
        accept: header("accept"),
        body: serde_json::from_slice(body).unwrap_or(Value::Null),
        answered_version: None,
    };
    let (send, reply) = oneshot::channel();
    state.lock().unwrap().answer(seen, send);
    activity.notify_waiters();
    reply
}

/// Watch events, one JSON object per line.
fn event_lines(events: Vec<Value>) -> Vec<u8> {
    let mut lines = Vec::new();
    for event in events {
        lines.extend(serde_json::to_vec(&event).unwrap());
        lines.push(b'\n');
    }
    lines
}

/// A watch answer that ends after `events`: HTTP 200, one JSON event per line.
fn watch_reply(events: Vec<Value>) -> Reply {
    Reply {
        status: 200,
        body: ReplyBody::Full(event_lines(events)),
    }
}

fn json_reply(status: u16, body: &Value) -> Reply {
    Reply {
        status,
        body: ReplyBody::Full(serde_json::to_vec(body).unwrap()),
    }
}

fn not_found(path: &str) -> Reply {
    json_reply(
        404,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "reason": "NotFound", "code": 404, "message": format!("{path} not found")}),
    )
}
