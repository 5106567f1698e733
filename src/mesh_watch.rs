//! Keeps a [`MeshState`] current from the cluster (edge): Namespaces as metadata only, and the
//! objects of [`MESH_APIS`] where the cluster serves them (`security.istio.io`
//! PeerAuthentications and AuthorizationPolicies, `gateway.networking.k8s.io` Gateways for the
//! waypoints; `v1` where served, else `v1beta1`), each in a kube reflector.
//!
//! Decisions never wait on this: after every batch of changes a new state is built from the
//! stores and swapped in whole, and a review reads whichever state is current. Where Istio's or
//! the Gateway API's CRDs are not installed their objects are none, said once, and discovery is
//! asked again every [`discovery::INTERVAL`], as the companions controller does.

use std::collections::HashSet;
use std::sync::Arc;

use futures::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::discovery;
use crate::mesh_state::{MeshObject, MeshState, NAMESPACE_LABELS, SharedMeshState};
use crate::watch::backoff_on_failures;

/// An API the mesh state is read from where the cluster serves it.
pub struct OptionalApi {
    pub group: &'static str,
    pub kinds: &'static [&'static str],
    /// Preferred first.
    pub versions: &'static [&'static str],
    /// What it means when the cluster does not serve it.
    pub missing: &'static str,
}

/// Istio's security policies (`v1` from Istio 1.22), and the Gateway API's Gateways (waypoints).
pub const MESH_APIS: [OptionalApi; 2] = [
    OptionalApi {
        group: "security.istio.io",
        kinds: &["PeerAuthentication", "AuthorizationPolicy"],
        versions: &["v1", "v1beta1"],
        missing: "Istio's CRDs are not installed: no mesh policy applies",
    },
    OptionalApi {
        group: "gateway.networking.k8s.io",
        kinds: &["Gateway"],
        versions: &["v1", "v1beta1"],
        missing: "the Gateway API's CRDs are not installed: no waypoint",
    },
];

/// The objects of one kind, and the API they were read from (list items may come without their
/// type).
type Reflected = (ApiResource, Store<DynamicObject>);

/// The stores the state is built from.
#[derive(Clone)]
struct Stores {
    namespaces: Store<PartialObjectMeta<Namespace>>,
    /// The objects of [`MESH_APIS`], once their APIs are found.
    optional: Arc<std::sync::Mutex<Vec<Reflected>>>,
}

/// Watches the cluster and keeps `state` current until `shutdown`. `ready` turns true once every
/// reflector has listed once (or the policies' API is known not to be served).
pub async fn run(
    client: Client,
    root_namespace: String,
    state: SharedMeshState,
    ready: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let changed = Arc::new(Notify::new());
    let (namespaces, writer) = reflector::store::<PartialObjectMeta<Namespace>>();
    let namespace_events = backoff_on_failures(watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default(),
    ))
    // Labels are all a decision reads of a namespace: the cache stays small in large clusters.
    .modify(|namespace: &mut PartialObjectMeta<Namespace>| {
        namespace.metadata.annotations = None;
        namespace.metadata.managed_fields = None;
        namespace.metadata.owner_references = None;
        if let Some(labels) = namespace.metadata.labels.as_mut() {
            labels.retain(|key, _| NAMESPACE_LABELS.contains(&key.as_str()));
        }
    })
    .reflect(writer);
    let stores = Stores {
        namespaces: namespaces.clone(),
        optional: Arc::default(),
    };
    let tasks = tokio_util::task::TaskTracker::new();
    tasks.spawn(drain(namespace_events, changed.clone(), shutdown.clone()));

    let optional_known: Vec<watch::Receiver<bool>> = MESH_APIS
        .iter()
        .map(|api| {
            let (known, known_rx) = watch::channel(false);
            tasks.spawn(watch_optional(
                api,
                client.clone(),
                stores.clone(),
                changed.clone(),
                known,
                tasks.clone(),
                shutdown.clone(),
            ));
            known_rx
        })
        .collect();

    let builder = tasks.spawn(rebuild(
        root_namespace,
        stores,
        state,
        changed,
        optional_known,
        ready,
        shutdown.clone(),
    ));
    let _ = builder.await;
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
}

/// Polls a reflected watch stream until `shutdown`, telling `changed` after each event that
/// changes the store: a relist replaces it whole at its end (kube-runtime
/// `Writer::apply_watcher_event`, `InitDone`), so the objects it streams before that change
/// nothing yet. Errors are logged and paced by the stream's policy ([`crate::watch`]).
async fn drain<S, K>(stream: S, changed: Arc<Notify>, shutdown: CancellationToken)
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let mut stream = std::pin::pin!(stream);
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = stream.next() => next,
        };
        match next {
            None => return,
            Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) | Some(Err(_)) => {}
            Some(Ok(_)) => changed.notify_one(),
        }
    }
}

/// Finds `api` (asking again every [`discovery::INTERVAL`] while none of its kinds is served),
/// then reflects each kind. `known` turns true once it is settled whether there is anything to
/// wait for.
async fn watch_optional(
    api: &'static OptionalApi,
    client: Client,
    stores: Stores,
    changed: Arc<Notify>,
    known: watch::Sender<bool>,
    tasks: tokio_util::task::TaskTracker,
    shutdown: CancellationToken,
) {
    let Some(resources) = discovery::wait_until_served(
        &client,
        api.group,
        api.kinds,
        api.versions,
        api.missing,
        || {
            known.send_replace(true);
        },
        &shutdown,
    )
    .await
    else {
        return;
    };
    let mut readers = Vec::new();
    for resource in resources {
        tracing::info!(api_version = %resource.api_version, kind = %resource.kind, "watching for the mesh state");
        let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
        readers.push((resource.clone(), writer.as_reader()));
        let events = backoff_on_failures(watcher(
            Api::<DynamicObject>::all_with(client.clone(), &resource),
            watcher::Config::default(),
        ))
        .modify(|object: &mut DynamicObject| {
            // kubectl's last-applied copy can be larger than the object itself.
            object.metadata.annotations = None;
            object.metadata.managed_fields = None;
            // A Gateway's status changes with every address and condition: not read.
            if let Some(data) = object.data.as_object_mut() {
                data.remove("status");
            }
        })
        .reflect(writer);
        tasks.spawn(drain(events, changed.clone(), shutdown.clone()));
    }
    for (_, reader) in &readers {
        if reader.wait_until_ready().await.is_err() {
            return;
        }
    }
    if let Ok(mut optional) = stores.optional.lock() {
        optional.extend(readers);
    }
    changed.notify_one();
    known.send_replace(true);
}

/// Builds a new state after every batch of changes, once every store has listed; marks the
/// webhook ready after the first.
async fn rebuild(
    root_namespace: String,
    stores: Stores,
    state: SharedMeshState,
    changed: Arc<Notify>,
    optional_known: Vec<watch::Receiver<bool>>,
    ready: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let listed = async {
        if stores.namespaces.wait_until_ready().await.is_err() {
            return false;
        }
        for mut known in optional_known {
            if known.wait_for(|known| *known).await.is_err() {
                return false;
            }
        }
        true
    };
    let listed = tokio::select! {
        _ = shutdown.cancelled() => return,
        listed = listed => listed,
    };
    if !listed {
        return;
    }
    let mut logged = HashSet::new();
    loop {
        let built = build(&root_namespace, &stores, &mut logged);
        let counts = built.counts();
        state.store(Arc::new(built));
        if !*ready.borrow() {
            tracing::info!(
                namespaces = counts.namespaces,
                peer_authentications = counts.peer_authentications,
                authorization_policies = counts.authorization_policies,
                "mesh state listed"
            );
            ready.send_replace(true);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changed.notified() => {}
        }
    }
}

/// The state the stores hold now. A policy that does not read is left out, logged once per
/// version.
fn build(root_namespace: &str, stores: &Stores, logged: &mut HashSet<String>) -> MeshState {
    let namespaces = stores
        .namespaces
        .state()
        .into_iter()
        .map(|namespace| MeshObject::Namespace {
            name: namespace.metadata.name.clone().unwrap_or_default(),
            labels: namespace.metadata.labels.clone().unwrap_or_default(),
        });
    let optional: Vec<(ApiResource, Arc<DynamicObject>)> = stores
        .optional
        .lock()
        .map(|stores| {
            stores
                .iter()
                .flat_map(|(resource, store)| {
                    store.state().into_iter().map(|p| (resource.clone(), p))
                })
                .collect()
        })
        .unwrap_or_default();
    let optional = optional.into_iter().filter_map(|(resource, policy)| {
        let mut value = serde_json::to_value(policy.as_ref()).ok()?;
        // List items may come without their type; the store knows it.
        value["apiVersion"] = resource.api_version.clone().into();
        value["kind"] = resource.kind.clone().into();
        match MeshObject::from_value(&value)? {
            Ok(object) => Some(object),
            Err(error) => {
                let version = format!(
                    "{}/{}",
                    policy.metadata.uid.as_deref().unwrap_or_default(),
                    policy
                        .metadata
                        .resource_version
                        .as_deref()
                        .unwrap_or_default()
                );
                if logged.insert(version) {
                    tracing::warn!(
                        namespace = policy.metadata.namespace.as_deref().unwrap_or_default(),
                        %error,
                        "ignoring a mesh policy that does not read"
                    );
                }
                None
            }
        }
    });
    MeshState::new(root_namespace, namespaces.chain(optional))
}
