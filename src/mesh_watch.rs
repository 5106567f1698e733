//! Keeps a [`MeshState`] current from the cluster (edge): Namespaces as metadata only, and
//! `security.istio.io` PeerAuthentications and AuthorizationPolicies (`v1` where the cluster
//! serves it, else `v1beta1`), each in a kube reflector.
//!
//! Decisions never wait on this: after every batch of changes a new state is built from the
//! stores and swapped in whole, and a review reads whichever state is current. Where Istio's
//! CRDs are not installed the policies are empty, said once, and discovery asked again every
//! [`discovery::INTERVAL`], as the companions controller does.

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
use crate::mesh_state::{MeshObject, MeshState, SharedMeshState};
use crate::watch::backoff_on_failures;

pub const SECURITY_GROUP: &str = "security.istio.io";
/// Preferred first: `v1` where the cluster serves it (Istio 1.22+), else `v1beta1`.
pub const SECURITY_VERSIONS: [&str; 2] = ["v1", "v1beta1"];
pub const POLICY_KINDS: [&str; 2] = ["PeerAuthentication", "AuthorizationPolicy"];

/// The stores the state is built from.
#[derive(Clone)]
struct Stores {
    namespaces: Store<PartialObjectMeta<Namespace>>,
    /// PeerAuthentications and AuthorizationPolicies, once their APIs are found.
    policies: Arc<std::sync::Mutex<Vec<(ApiResource, Store<DynamicObject>)>>>,
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
    })
    .reflect(writer);
    let stores = Stores {
        namespaces: namespaces.clone(),
        policies: Arc::default(),
    };
    let tasks = tokio_util::task::TaskTracker::new();
    tasks.spawn(drain(namespace_events, changed.clone(), shutdown.clone()));

    let policies_ready = {
        let (client, stores, changed, shutdown, tasks) = (
            client.clone(),
            stores.clone(),
            changed.clone(),
            shutdown.clone(),
            tasks.clone(),
        );
        let (known, ready_rx) = watch::channel(false);
        tasks.spawn(watch_policies(
            client,
            stores,
            changed,
            known,
            tasks.clone(),
            shutdown,
        ));
        ready_rx
    };

    let builder = tasks.spawn(rebuild(
        root_namespace,
        stores,
        state,
        changed,
        policies_ready,
        ready,
        shutdown.clone(),
    ));
    let _ = builder.await;
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
}

/// Polls a reflected watch stream until `shutdown`, telling `changed` after each event. Errors
/// are logged and paced by the stream's policy ([`crate::watch`]).
async fn drain<S, T>(stream: S, changed: Arc<Notify>, shutdown: CancellationToken)
where
    S: Stream<Item = Result<T, watcher::Error>> + Send,
{
    let mut stream = std::pin::pin!(stream);
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = stream.next() => next,
        };
        match next {
            None => return,
            Some(Ok(_)) => changed.notify_one(),
            Some(Err(_)) => {}
        }
    }
}

/// Finds the policies' APIs (asking again every [`discovery::INTERVAL`] while none is served),
/// then reflects each kind. `known` turns true once it is settled whether there is anything to
/// wait for.
async fn watch_policies(
    client: Client,
    stores: Stores,
    changed: Arc<Notify>,
    known: watch::Sender<bool>,
    tasks: tokio_util::task::TaskTracker,
    shutdown: CancellationToken,
) {
    let Some(resources) = discovery::wait_until_served(
        &client,
        SECURITY_GROUP,
        &POLICY_KINDS,
        &SECURITY_VERSIONS,
        "Istio's CRDs are not installed: no mesh policy applies",
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
        tracing::info!(api_version = %resource.api_version, kind = %resource.kind, "watching mesh policies");
        let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
        readers.push((resource.clone(), writer.as_reader()));
        let events = backoff_on_failures(watcher(
            Api::<DynamicObject>::all_with(client.clone(), &resource),
            watcher::Config::default(),
        ))
        .modify(|policy: &mut DynamicObject| {
            // kubectl's last-applied copy can be larger than the policy itself.
            policy.metadata.annotations = None;
            policy.metadata.managed_fields = None;
        })
        .reflect(writer);
        tasks.spawn(drain(events, changed.clone(), shutdown.clone()));
    }
    for (_, reader) in &readers {
        if reader.wait_until_ready().await.is_err() {
            return;
        }
    }
    if let Ok(mut policies) = stores.policies.lock() {
        *policies = readers;
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
    mut policies_known: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let listed = async {
        stores.namespaces.wait_until_ready().await.is_ok()
            && policies_known.wait_for(|known| *known).await.is_ok()
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
    let policies: Vec<(ApiResource, Arc<DynamicObject>)> = stores
        .policies
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
    let policies = policies.into_iter().filter_map(|(resource, policy)| {
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
    MeshState::new(root_namespace, namespaces.chain(policies))
}
