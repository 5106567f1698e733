//! A small Kubernetes API server, behind kube's mocked service (tower-test) or on a loopback
//! HTTP port, that keeps collections of objects of the kinds in [`KINDS`] (core v1 Services,
//! Pods and Namespaces, EndpointSlices, Istio DestinationRules, PeerAuthentications and
//! AuthorizationPolicies, Gateway API Gateways) and answers as kube-apiserver does:
//!
//! - discovery: `/version`, `/api`, `/apis` and an `APIResourceList` for each group version
//!   ([`kinds`]); any other group version is a 404 `Status`;
//! - a LIST of a collection, across all namespaces or in one, returns the objects (filtered by
//!   an equality `labelSelector`) with the resourceVersion it was read at; `Accept:
//!   ...;as=PartialObjectMetadata` gets `PartialObjectMetadataList`. With `limit` it comes in
//!   pages: `continue` reads the next page at the first page's resourceVersion, and after a
//!   compaction is answered 410 `Expired` with a token for the rest at the latest version
//!   (k8s.io/apiserver pkg/storage/etcd3/store.go, `store.GetList`; errors.go,
//!   `handleCompactedErrorForPaging`; see [`pages`]). A first page always reads the latest:
//!   the list's own `resourceVersion` and `resourceVersionMatch` are not looked at;
//! - a WATCH from resourceVersion `rv` gets the events after `rv` that concern its selector
//!   (and namespace), one JSON object per line; an object that starts matching the selector is
//!   `ADDED`, one that stops or is deleted is `DELETED` (k8s.io/apiserver
//!   pkg/storage/cacher/cache_watcher.go, `convertToWatchEvent`). Over HTTP the answer is HTTP
//!   200 at once and a chunked body that stays open; kube's mocked service cannot stream a
//!   body, so there the answer waits for the first events and ends after them, as a watch
//!   reaching its timeout does;
//! - a WATCH from a resourceVersion older than the last compaction gets HTTP 200 and one
//!   `ERROR` event whose object is a `Status` with code 410, reason `Expired`, and the stream
//!   ends (cacher.go, `Cacher.Watch` → `newErrWatcher` for `getAllEventsSinceLocked`'s "too old
//!   resource version");
//! - server-side apply (PATCH, `application/apply-patch+yaml`) stores the object and tells the
//!   watches; DELETE removes it; Events are accepted; anything else is a 404 `Status`.
//!
//! The test writes and deletes objects as someone else would ([`MockCluster::put`],
//! [`MockCluster::delete`]). Every request is recorded with the instant it arrived. Lists of a
//! collection can be stalled (not answered until released, as a slow list in a large cluster)
//! or forbidden (403, as without RBAC).
#![allow(dead_code)]

#[path = "mock_cluster/kinds.rs"]
pub mod kinds;
#[path = "mock_cluster/pages.rs"]
pub mod pages;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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

// Each test crate uses some of them.
#[allow(unused_imports)]
pub use kinds::{
    AUTHORIZATION_POLICIES, GATEWAYS, KINDS, Kind, NAMESPACES, PEER_AUTHENTICATIONS, PODS, RULES,
    SERVICES, SLICES,
};

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
    key: String,
    old: Option<Value>,
    new: Option<Value>,
}

struct HeldWatch {
    /// The kind's collection across all namespaces, also for a watch in one namespace.
    path: &'static str,
    namespace: Option<String>,
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
    /// Lists of these paths are not answered until released.
    stalled: Vec<&'static str>,
    /// Lists of these paths are forbidden (403), as without RBAC for them.
    forbidden: Vec<&'static str>,
    /// Stalled lists: the index of the request in `seen`, and where its answer goes.
    unanswered: Vec<(usize, Responder)>,
}

/// The running mock API server; stops when dropped.
pub struct MockCluster {
    state: Arc<Mutex<State>>,
    activity: Arc<Notify>,
    task: JoinHandle<()>,
    /// The server's URL, when served over HTTP.
    url: Option<String>,
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
            url: None,
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
                url: Some(url.clone()),
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

    /// From now on, lists of `path` are never answered (until [`MockCluster::release_lists`]).
    pub fn stall_lists(&self, path: &'static str) {
        self.state.lock().unwrap().stalled.push(path);
    }

    /// Lists of `path` are answered again, the stalled ones at once with what is stored now.
    pub fn release_lists(&self, path: &str) {
        self.state.lock().unwrap().release(path);
        self.activity.notify_waiters();
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

    /// Deletes the stored object of `object`'s kind, namespace and name, as someone else would;
    /// watches get it `DELETED`.
    pub fn delete(&self, object: &Value) {
        let path = kinds::kind_of(object).path;
        let key = key_of(object);
        let removed = self.state.lock().unwrap().remove(path, &key);
        assert!(
            removed.is_some(),
            "the mock cluster holds no {key} in {path}"
        );
        self.activity.notify_waiters();
    }

    /// Writes `dir/kubeconfig` for this server over HTTP: context `stub`, a token user.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let url = self
            .url
            .as_deref()
            .expect("a kubeconfig is for a cluster served over HTTP (serve_http)");
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: stub\nclusters:\n- name: stub\n  cluster:\n    server: {url}\n\
                 users:\n- name: tester\n  user:\n    token: test-token\ncontexts:\n- name: stub\n  context: {{cluster: stub, user: tester}}\n"
            ),
        )
        .unwrap();
        path
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

    /// Waits until `path` has been listed `count` times (a relist after the first list), at most
    /// `within`.
    pub async fn wait_for_lists(&self, path: &str, count: usize, within: Duration) {
        self.wait_for(within, &format!("{count} lists of {path}"), |seen| {
            (seen
                .iter()
                .filter(|s| s.is_list() && s.path() == path)
                .count()
                >= count)
                .then_some(())
        })
        .await;
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
        let path = kinds::kind_of(&object).path;
        self.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        let key = key_of(&object);
        let old = self
            .objects
            .entry(path)
            .or_default()
            .insert(key.clone(), object.clone());
        self.record(path, key, old, Some(object));
    }

    /// Removes the object at `key` of `path`; the change keeps it as it was stored.
    fn remove(&mut self, path: &'static str, key: &str) -> Option<Value> {
        let old = self.objects.entry(path).or_default().remove(key)?;
        self.resource_version += 1;
        self.record(path, key.to_string(), Some(old.clone()), None);
        Some(old)
    }

    fn record(&mut self, path: &'static str, key: String, old: Option<Value>, new: Option<Value>) {
        self.changes.push(Change {
            resource_version: self.resource_version,
            path,
            key,
            old,
            new,
        });
        let held = std::mem::take(&mut self.held);
        for mut watch in held {
            let events = self.events_for(
                watch.path,
                watch.namespace.as_deref(),
                watch.from,
                &watch.selector,
                watch.metadata_only,
            );
            if events.is_empty() {
                self.held.push(watch);
            } else if let Some(sink) = watch.sink.deliver(events) {
                watch.sink = sink;
                watch.from = self.resource_version;
                self.held.push(watch);
            }
        }
    }

    /// The watch events after `from` for a watch of `path` (in `namespace`, if one) with
    /// `selector`.
    fn events_for(
        &self,
        path: &str,
        namespace: Option<&str>,
        from: u64,
        selector: &[(String, String)],
        metadata_only: bool,
    ) -> Vec<Value> {
        let passes = |object: &Option<Value>| {
            object
                .as_ref()
                .is_some_and(|o| in_namespace(o, namespace) && matches_selector(o, selector))
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

    /// Records `seen` and answers it (or keeps it, for a watch or a stalled list).
    fn answer(&mut self, seen: Seen, send: Responder) {
        let path = seen.path().to_string();
        let method = seen.method.clone();
        self.seen.push(seen);
        let index = self.seen.len() - 1;
        if method == "GET" {
            if let Some((kind, namespace)) = kinds::collection(&path) {
                let query = query_of(&self.seen[index].uri);
                if query.get("watch").map(String::as_str) == Some("true") {
                    self.watch(index, kind, namespace, &query, send);
                } else if self.stalled.contains(&kind.path) {
                    self.unanswered.push((index, send));
                } else {
                    let _ = send.send(self.list(index));
                }
                return;
            }
            if let Some(document) = kinds::discovery(&path) {
                let _ = send.send(json_reply(200, &document));
                return;
            }
        }
        if let Some((kind, namespace, name)) = kinds::object(&path) {
            let _ = send.send(self.write(index, kind, &namespace, &name));
            return;
        }
        if method == "POST" && path.starts_with("/apis/events.k8s.io/v1/") {
            let _ = send.send(json_reply(201, &self.seen[index].body));
            return;
        }
        let _ = send.send(not_found(&path));
    }

    /// Opens the watch `self.seen[index]` of `kind` (in `namespace`, if one).
    fn watch(
        &mut self,
        index: usize,
        kind: &'static Kind,
        namespace: Option<String>,
        query: &BTreeMap<String, String>,
        send: Responder,
    ) {
        let metadata_only = self.seen[index].accept.contains("as=PartialObjectMetadata");
        let selector = parse_selector(query.get("labelSelector").map(String::as_str));
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if from < self.compacted {
            let message = format!("too old resource version: {from} ({})", self.compacted);
            // The one event, then the stream ends.
            let error = vec![json!({"type": "ERROR", "object": status(410, "Expired", &message)})];
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
        let events = self.events_for(
            kind.path,
            namespace.as_deref(),
            from,
            &selector,
            metadata_only,
        );
        let sink = if events.is_empty() {
            Some(sink)
        } else {
            sink.deliver(events)
        };
        if let Some(sink) = sink {
            self.held.push(HeldWatch {
                path: kind.path,
                namespace,
                from: self.resource_version,
                selector,
                metadata_only,
                sink,
            });
        }
    }

    /// The answer to the list `self.seen[index]`: a page of the collection as it was at the
    /// resourceVersion the list reads (the latest, or the first page's for a `continue`).
    fn list(&mut self, index: usize) -> Reply {
        let seen = &self.seen[index];
        let path = seen.path().to_string();
        let Some((kind, namespace)) = kinds::collection(&path) else {
            return not_found(&path);
        };
        if self.forbidden.contains(&kind.path) {
            let message = format!("{} is forbidden", kind.path);
            return json_reply(403, &status(403, "Forbidden", &message));
        }
        let query = query_of(&seen.uri);
        let metadata_only = seen.accept.contains("as=PartialObjectMetadata");
        let selector = parse_selector(query.get("labelSelector").map(String::as_str));
        let limit = query
            .get("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|&l| l > 0);
        let (at, start) = match query.get("continue") {
            None => (self.resource_version, String::new()),
            Some(_) if query.get("resourceVersion").is_some_and(|v| v != "0") => {
                return bad_request(
                    "specifying resource version is not allowed when using continue",
                );
            }
            Some(token) => match pages::decode_continue(token) {
                Err(why) => return bad_request(&format!("invalid continue token: {why}")),
                // A negative resourceVersion (-1): the rest at the latest.
                Ok(token) if token.resource_version < 0 => (self.resource_version, token.start),
                Ok(token) if (token.resource_version as u64) < self.compacted => {
                    let mut expired = status(410, "Expired", INCONSISTENT_CONTINUE);
                    expired["metadata"]["continue"] =
                        json!(pages::encode_continue(-1, &token.start));
                    return json_reply(410, &expired);
                }
                Ok(token) => (token.resource_version as u64, token.start),
            },
        };
        let prefix = namespace.map(|ns| format!("{ns}/")).unwrap_or_default();
        let from = start.as_str().max(prefix.as_str());
        let snapshot = self.snapshot(kind.path, at);
        let page = pages::page(
            snapshot
                .range::<str, _>((std::ops::Bound::Included(from), std::ops::Bound::Unbounded))
                .take_while(|(key, _)| key.starts_with(&prefix))
                .map(|(key, object)| (*key, *object)),
            limit,
            |object| matches_selector(object, &selector),
        );
        let items: Vec<Value> = page
            .items
            .iter()
            .map(|o| {
                if metadata_only {
                    partial(o)
                } else {
                    (*o).clone()
                }
            })
            .collect();
        let version = at.to_string();
        let mut metadata = json!({"resourceVersion": version});
        if let Some(next) = &page.next {
            metadata["continue"] = json!(pages::encode_continue(at as i64, next));
            // Counted only without a selector, as `GetList` does.
            if selector.is_empty() {
                metadata["remainingItemCount"] = json!(page.remaining);
            }
        }
        let (list_kind, api_version) = if metadata_only {
            ("PartialObjectMetadataList".to_string(), "meta.k8s.io/v1")
        } else {
            (kind.list_kind(), kind.api_version)
        };
        self.seen[index].answered_version = Some(version);
        json_reply(
            200,
            &json!({"kind": list_kind, "apiVersion": api_version, "metadata": metadata,
                "items": items}),
        )
    }

    /// The collection at `path` as it was at resourceVersion `at`: what is stored now, with the
    /// changes since undone.
    fn snapshot(&self, path: &str, at: u64) -> BTreeMap<&str, &Value> {
        let mut objects: BTreeMap<&str, &Value> = self
            .objects
            .get(path)
            .into_iter()
            .flatten()
            .map(|(key, object)| (key.as_str(), object))
            .collect();
        let since = self
            .changes
            .iter()
            .rev()
            .take_while(|c| c.resource_version > at)
            .filter(|c| c.path == path);
        for change in since {
            match &change.old {
                Some(old) => objects.insert(&change.key, old),
                None => objects.remove(change.key.as_str()),
            };
        }
        objects
    }

    /// Server-side apply or delete of `kind`'s object `name` (in `namespace`).
    fn write(&mut self, index: usize, kind: &'static Kind, namespace: &str, name: &str) -> Reply {
        let seen = &self.seen[index];
        let path = seen.path().to_string();
        let key = format!("{namespace}/{name}");
        match seen.method.as_str() {
            "PATCH" if seen.content_type == "application/apply-patch+yaml" => {
                let mut object = seen.body.clone();
                if (object["apiVersion"].as_str(), object["kind"].as_str())
                    != (Some(kind.api_version), Some(kind.kind))
                {
                    let message = format!("the object is not a {} {}", kind.api_version, kind.kind);
                    return bad_request(&message);
                }
                if kind.namespaced && object["metadata"]["namespace"].is_null() {
                    object["metadata"]["namespace"] = json!(namespace);
                }
                let uid = self
                    .objects
                    .get(kind.path)
                    .and_then(|o| o.get(&key))
                    .map(|o| o["metadata"]["uid"].clone())
                    .unwrap_or_else(|| json!(format!("uid-{name}")));
                object["metadata"]["uid"] = uid;
                self.store(object);
                json_reply(200, &self.objects[kind.path][&key])
            }
            "DELETE" => match self.remove(kind.path, &key) {
                Some(_) => json_reply(
                    200,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Success"}),
                ),
                None => not_found(&path),
            },
            _ => not_found(&path),
        }
    }

    /// Answers the stalled lists of `path` and stops stalling them.
    fn release(&mut self, path: &str) {
        self.stalled.retain(|stalled| *stalled != path);
        let (released, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.unanswered)
            .into_iter()
            .partition(|(index, _)| {
                kinds::collection(self.seen[*index].path()).is_some_and(|(k, _)| k.path == path)
            });
        self.unanswered = still;
        for (index, send) in released {
            let _ = send.send(self.list(index));
        }
    }
}

fn key_of(object: &Value) -> String {
    let meta = &object["metadata"];
    format!(
        "{}/{}",
        meta["namespace"].as_str().unwrap_or_default(),
        meta["name"].as_str().unwrap_or_default()
    )
}

/// A new object of the kind whose collection is `path`: its `apiVersion`, `kind`, and metadata
/// with `name` and, for a namespaced kind, `namespace`.
pub fn new_object(path: &str, namespace: Option<&str>, name: &str) -> Value {
    let kind = kinds::kind_at(path).unwrap_or_else(|| panic!("the mock cluster serves no {path}"));
    assert_eq!(
        namespace.is_some(),
        kind.namespaced,
        "{} is namespaced: {}",
        kind.kind,
        kind.namespaced
    );
    let mut metadata = json!({"name": name});
    if let Some(namespace) = namespace {
        metadata["namespace"] = json!(namespace);
    }
    json!({"apiVersion": kind.api_version, "kind": kind.kind, "metadata": metadata})
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

fn in_namespace(object: &Value, namespace: Option<&str>) -> bool {
    namespace.is_none_or(|ns| object["metadata"]["namespace"] == ns)
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

/// A failure `Status`, as every API error is.
fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": reason, "code": code, "message": message})
}

fn not_found(path: &str) -> Reply {
    json_reply(404, &status(404, "NotFound", &format!("{path} not found")))
}

fn bad_request(message: &str) -> Reply {
    json_reply(400, &status(400, "BadRequest", message))
}

/// k8s.io/apiserver pkg/storage/etcd3/errors.go, `inconsistentContinue`.
const INCONSISTENT_CONTINUE: &str = "The provided continue parameter is too old to display a \
    consistent list result. You can start a new list without the continue parameter, or use the \
    continue token in this response to retrieve the remainder of the results. Continuing with \
    the provided token results in an inconsistent list - objects that were created, modified, \
    or deleted between the time the first chunk was returned and now may show up in the list.";
