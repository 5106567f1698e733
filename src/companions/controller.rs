//! The companions controller (edge): watches Services, EndpointSlices, pods (metadata only),
//! DestinationRules and namespaces (the selected ones, with a selector); for each Service it asks
//! [`desired`](super::desired) what to write and writes exactly that.
//!
//! - Writes are server-side applies with field manager `serverfirst`; `force` only when the
//!   rule is already serverfirst's (labelled, in the cache), so a rule created by someone else
//!   in the meantime makes the apply fail instead of being taken over.
//! - Deletes carry the cached rule's uid and resourceVersion as preconditions: only the
//!   labelled object that was looked at can go.
//! - Reconcile errors back off per Service with the runtime's [`DefaultBackoff`]; each watch
//!   follows [`crate::watch`]: it relists at once after `410 Gone` and backs off on failures.
//! - On shutdown, reconciles in flight finish (a reconcile still waiting for a cache gives up,
//!   and none waits longer than [`STOP_GRACE`]), then every watch is dropped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, PartialObjectMeta, Patch, PatchParams,
    Preconditions, ResourceExt as _,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, DefaultBackoff, watcher};
use kube::runtime::{PredicateConfig, WatchStreamExt as _};
use kube::{Client, Resource as _};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::desired::{self, PodFacts, RuleView, Scope, ServiceRef, Subject};
use crate::discovery;
use crate::mesh::RECORD_KEY;
use crate::mesh_state::ambient;
use crate::metrics::{CompanionMetrics, ReconcileResult, RuleAction};
use crate::ports::{PortSet, parse_port_list};
use crate::watch::{NoPause, backoff_on_failures};

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "serverfirst";
/// The reporting controller of its Events.
pub const CONTROLLER_NAME: &str = "serverfirst-companions";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const ISTIO_GROUP: &str = "networking.istio.io";
const RULE_KIND: &str = "DestinationRule";
/// Preferred first: `v1` where the cluster serves it (Istio 1.22+), else `v1beta1`.
const RULE_VERSIONS: [&str; 2] = ["v1", "v1beta1"];
/// Events carry at most 1 kB of note; a long pod list is cut.
const MAX_NAMED_PODS: usize = 10;
/// How long reconciles in flight may take to finish after shutdown: a reconcile is a few API
/// calls, and a rollout should not wait out `terminationGracePeriodSeconds`.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot apply DestinationRule {namespace}/{name}: {source}")]
    Apply {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("a watch stopped before it listed its objects")]
    NotListed,
    #[error("cannot delete DestinationRule {namespace}/{name}: {source}")]
    Delete {
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

/// What the controller reads its decisions from: the reflectors' stores.
#[derive(Clone)]
pub struct Stores {
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    pub pods: Store<PartialObjectMeta<Pod>>,
    pub rules: Store<DynamicObject>,
    /// The namespaces in scope (all of them unless `scoped`), with their labels.
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// A namespace selector limits the scope: a namespace it does not select is not in the store.
    pub scoped: bool,
}

impl Stores {
    /// Waits until every store has listed once: deciding on a partial cache could create a rule
    /// beside a foreign one not yet seen, or delete for want of a pod not yet seen.
    async fn wait_until_ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.services.wait_until_ready().await?;
        self.slices.wait_until_ready().await?;
        self.pods.wait_until_ready().await?;
        self.rules.wait_until_ready().await?;
        self.namespaces.wait_until_ready().await?;
        Ok(())
    }
}

/// Everything a reconcile needs.
pub struct Context {
    client: Client,
    rules: ApiResource,
    stores: Stores,
    recorder: Recorder,
    metrics: Arc<CompanionMetrics>,
    conflicts: Mutex<HashSet<ObjectRef<Service>>>,
    backoffs: Mutex<HashMap<ObjectRef<Service>, DefaultBackoff>>,
    /// Cancelled on shutdown.
    shutdown: CancellationToken,
}

impl Context {
    pub fn new(
        client: Client,
        rules: ApiResource,
        stores: Stores,
        instance: Option<String>,
        metrics: Arc<CompanionMetrics>,
        shutdown: CancellationToken,
    ) -> Context {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.to_string(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            rules,
            stores,
            metrics,
            conflicts: Mutex::default(),
            backoffs: Mutex::default(),
            shutdown,
        }
    }
}

/// The DestinationRule API the cluster serves (`v1` preferred), `Ok(None)` when it serves none.
pub async fn discover_rules(client: &Client) -> Result<Option<ApiResource>, kube::Error> {
    discovery::served(client, ISTIO_GROUP, RULE_KIND, &RULE_VERSIONS).await
}

/// Waits until the cluster serves DestinationRules (asking every [`discovery::INTERVAL`]);
/// `None` when `shutdown` comes first.
pub async fn wait_for_rules(client: &Client, shutdown: &CancellationToken) -> Option<ApiResource> {
    let mut served = discovery::wait_until_served(
        client,
        ISTIO_GROUP,
        &[RULE_KIND],
        &RULE_VERSIONS,
        "Istio's CRDs are not installed",
        || {},
        shutdown,
    )
    .await?;
    served.pop()
}

/// Runs the controller until `shutdown`; in-flight reconciles finish first (see [`STOP_GRACE`]).
pub async fn run(
    client: Client,
    rules: ApiResource,
    namespace_selector: Option<String>,
    instance: Option<String>,
    metrics: Arc<CompanionMetrics>,
    shutdown: CancellationToken,
) {
    let config = watcher::Config::default();
    let (services, services_writer) = reflector::store::<Service>();
    // As `Controller::new` does, with this crate's watch policy.
    let service_events =
        backoff_on_failures(watcher(Api::<Service>::all(client.clone()), config.clone()))
            .reflect(services_writer)
            .applied_objects();

    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let slice_events = backoff_on_failures(watcher(
        Api::<EndpointSlice>::all(client.clone()),
        config.clone(),
    ))
    .reflect(slices_writer)
    .touched_objects();

    let (pods, pods_writer) = reflector::store::<PartialObjectMeta<Pod>>();
    let pod_events = backoff_on_failures(watcher(
        Api::<PartialObjectMeta<Pod>>::all(client.clone()),
        config.clone(),
    ))
    .modify(keep_only_what_decides)
    .reflect(pods_writer)
    .touched_objects()
    .predicate_filter(what_decides, PredicateConfig::default());

    let rules_writer = reflector::store::Writer::<DynamicObject>::new(rules.clone());
    let rules_store = rules_writer.as_reader();
    let rule_events = backoff_on_failures(watcher(
        Api::<DynamicObject>::all_with(client.clone(), &rules),
        config.clone(),
    ))
    .reflect(rules_writer)
    .touched_objects();

    // kube-apiserver sends ADDED when a namespace starts to match the selector and DELETED
    // when it stops (k8s.io/apiserver pkg/storage/cacher/cache_watcher.go,
    // `convertToWatchEvent`): either way its Services are reconciled, as they are when its
    // labels (ambient mode) change.
    let (namespaces, namespaces_writer) = reflector::store::<PartialObjectMeta<Namespace>>();
    let namespace_config = match &namespace_selector {
        Some(selector) => watcher::Config::default().labels(selector),
        None => watcher::Config::default(),
    };
    let namespace_events = backoff_on_failures(watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        namespace_config,
    ))
    .modify(|namespace: &mut PartialObjectMeta<Namespace>| {
        namespace.metadata.annotations = None;
        namespace.metadata.managed_fields = None;
    })
    .reflect(namespaces_writer)
    .touched_objects();

    let stores = Stores {
        services: services.clone(),
        slices: slices.clone(),
        pods,
        rules: rules_store,
        namespaces,
        scoped: namespace_selector.is_some(),
    };
    let services_of_namespace = services.clone();
    let controller = Controller::for_stream(service_events, services.clone())
        // Each watch backs off on its own failures; one's error must not pause the others.
        .trigger_backoff(NoPause)
        .watches_stream(slice_events, |slice| service_of_slice(&slice))
        .watches_stream(pod_events, move |pod| services_behind_pod(&slices, &pod))
        .watches_stream_with(rule_events, |rule| services_of_rule(&rule), rules.clone())
        .watches_stream(namespace_events, move |namespace| {
            services_in(&services_of_namespace, &namespace.name_any())
        });
    let context = Arc::new(Context::new(
        client,
        rules,
        stores,
        instance,
        metrics,
        shutdown.clone(),
    ));
    let results = controller
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy, context);
    drive(results, &services, &shutdown).await;
}

type RunResult<T> = Result<T, kube::runtime::controller::Error<Error, watcher::Error>>;

/// Logs the controller's results until they end; once `shutdown` is cancelled, for at most
/// [`STOP_GRACE`]. Dropping the stream then drops the watches.
async fn drive<T>(
    results: impl futures::Stream<Item = RunResult<T>>,
    services: &Store<Service>,
    shutdown: &CancellationToken,
) {
    let mut results = std::pin::pin!(results);
    let mut stop_by = None;
    loop {
        tokio::select! {
            result = results.next() => match result {
                Some(result) => log_result(result),
                None => return,
            },
            () = shutdown.cancelled(), if stop_by.is_none() => {
                // kube's runner starts no reconcile before the Services are listed, and once
                // shutting down it no longer polls their watch, so it would wait for that list
                // forever (kube-runtime controller/runner.rs, `Runner::poll_next` under
                // `delay_tasks_until`); with nothing in flight there is nothing to wait for.
                if services.wait_until_ready().now_or_never().is_none() {
                    return;
                }
                stop_by = Some(tokio::time::Instant::now() + STOP_GRACE);
            }
            () = sleep_until(stop_by), if stop_by.is_some() => {
                tracing::warn!(grace = ?STOP_GRACE, "reconciles still in flight after the grace period; stopping them");
                return;
            }
        }
    }
}

/// Until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn log_result<T>(result: RunResult<T>) {
    use kube::runtime::controller::Error as ControllerError;
    match result {
        // Logged with its retry delay by `error_policy` and by the watch policy.
        Ok(_) | Err(ControllerError::ReconcilerFailed(..) | ControllerError::QueueError(_)) => {}
        Err(error) => tracing::warn!(%error, "controller error"),
    }
}

/// Pods are held for what decides only, so that the cache stays small in a large cluster: the
/// recorded exclusions, and what says whether the pod is ambient (its dataplane-mode label, and
/// whether Istio's injector ran on it, kept as an empty annotation).
fn keep_only_what_decides(pod: &mut PartialObjectMeta<Pod>) {
    let meta = &mut pod.metadata;
    meta.managed_fields = None;
    meta.owner_references = None;
    if let Some(labels) = meta.labels.as_mut() {
        labels.retain(|key, _| key == ambient::DATAPLANE_MODE);
    }
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| key == RECORD_KEY || key == ambient::SIDECAR_STATUS_KEY);
        if let Some(status) = annotations.get_mut(ambient::SIDECAR_STATUS_KEY) {
            status.clear();
        }
    }
}

/// Only a change of what [`keep_only_what_decides`] keeps matters for a pod.
fn what_decides(pod: &PartialObjectMeta<Pod>) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    pod.annotations().get(RECORD_KEY).hash(&mut hasher);
    pod.annotations()
        .contains_key(ambient::SIDECAR_STATUS_KEY)
        .hash(&mut hasher);
    pod.labels().get(ambient::DATAPLANE_MODE).hash(&mut hasher);
    Some(hasher.finish())
}

fn service_of_slice(slice: &EndpointSlice) -> Option<ObjectRef<Service>> {
    let service = slice.labels().get(SERVICE_NAME_LABEL)?;
    Some(ObjectRef::new(service).within(slice.metadata.namespace.as_deref()?))
}

fn services_behind_pod(
    slices: &Store<EndpointSlice>,
    pod: &PartialObjectMeta<Pod>,
) -> Vec<ObjectRef<Service>> {
    let (Some(namespace), Some(name)) = (pod.namespace(), pod.metadata.name.as_deref()) else {
        return Vec::new();
    };
    slices
        .state()
        .iter()
        .filter(|slice| slice.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .filter(|slice| {
            slice.endpoints.iter().any(|e| {
                e.target_ref
                    .as_ref()
                    .is_some_and(|r| r.name.as_deref() == Some(name))
            })
        })
        .filter_map(|slice| service_of_slice(slice))
        .collect()
}

fn services_of_rule(rule: &DynamicObject) -> Vec<ObjectRef<Service>> {
    let Some(namespace) = rule.metadata.namespace.as_deref() else {
        return Vec::new();
    };
    let host = rule
        .data
        .pointer("/spec/host")
        .and_then(Value::as_str)
        .unwrap_or_default();
    desired::services_of_rule(&rule.name_any(), host, namespace)
        .into_iter()
        .map(|service| ObjectRef::new(service).within(namespace))
        .collect()
}

fn services_in(services: &Store<Service>, namespace: &str) -> Vec<ObjectRef<Service>> {
    services
        .state()
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// Brings the Service's companion rule in step with what [`desired::desired`] says, once every
/// cache has listed; on shutdown before that, decides nothing.
pub async fn reconcile(service: Arc<Service>, context: Arc<Context>) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(service.as_ref());
    let listed = tokio::select! {
        listed = context.stores.wait_until_ready() => listed,
        // Shutting down, the runtime no longer polls the watches that would fill the caches
        // (kube-runtime controller/mod.rs, `Controller::run`: `take_until` on the triggers).
        () = context.shutdown.cancelled() => {
            tracing::debug!(service = %key, "shutting down before every cache listed; nothing decided");
            return Ok(Action::await_change());
        }
    };
    let result = match listed {
        Ok(()) => reconcile_service(&service, &context).await,
        Err(_) => Err(Error::NotListed),
    };
    context.metrics.reconciled(match result {
        Ok(()) => ReconcileResult::Success,
        Err(_) => ReconcileResult::Error,
    });
    if result.is_ok()
        && let Ok(mut backoffs) = context.backoffs.lock()
    {
        backoffs.remove(&key);
    }
    result.map(|()| Action::await_change())
}

/// Tries again after the runtime's exponential backoff, per Service.
pub fn error_policy(service: Arc<Service>, error: &Error, context: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(service.as_ref());
    let delay = context
        .backoffs
        .lock()
        .ok()
        .and_then(|mut backoffs| backoffs.entry(key).or_default().next())
        .unwrap_or(Duration::from_secs(30));
    tracing::warn!(%error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile_service(service: &Service, context: &Context) -> Result<(), Error> {
    let (Some(namespace), Some(name)) = (
        service.metadata.namespace.as_deref(),
        service.metadata.name.as_deref(),
    ) else {
        tracing::warn!("skipping a Service without namespace or name");
        return Ok(());
    };
    if service.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the owned rule with the Service.
        return Ok(());
    }
    let stores = &context.stores;
    let namespace_meta = stores
        .namespaces
        .get(&ObjectRef::<PartialObjectMeta<Namespace>>::new(namespace));
    let selected = !stores.scoped || namespace_meta.is_some();
    let scope = if !selected {
        Scope::Unselected
    } else if desired::service_skipped(service) {
        Scope::Skipped
    } else {
        Scope::Managed
    };
    let slices: Vec<Arc<EndpointSlice>> = stores
        .slices
        .state()
        .into_iter()
        .filter(|s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.labels().get(SERVICE_NAME_LABEL).map(String::as_str) == Some(name)
        })
        .collect();
    let namespace_labels = namespace_meta
        .as_ref()
        .and_then(|meta| meta.metadata.labels.as_ref());
    let ports = desired::service_ports(service, slices.iter().map(Arc::as_ref), |pod| {
        pod_facts(&stores.pods, namespace, namespace_labels, pod)
    });
    let rules: Vec<Arc<DynamicObject>> = stores
        .rules
        .state()
        .into_iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some(namespace))
        .collect();
    let views: Vec<RuleView<'_>> = rules
        .iter()
        .map(|rule| RuleView {
            name: rule.metadata.name.as_deref().unwrap_or_default(),
            labels: rule.metadata.labels.as_ref(),
            spec: rule.data.get("spec").unwrap_or(&Value::Null),
        })
        .collect();
    let service_ref = ServiceRef { namespace, name };
    let subject = Subject {
        service: service_ref,
        uid: service.metadata.uid.as_deref().unwrap_or_default(),
        scope,
    };
    let wanted = desired::desired(&context.rules.api_version, subject, &ports, &views);

    let api =
        Api::<DynamicObject>::namespaced_with(context.client.clone(), namespace, &context.rules);
    let reference = service.object_ref(&());
    if let Some(rule_name) = &wanted.delete {
        let own = rules
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(rule_name.as_str()));
        let params = DeleteParams {
            preconditions: own.map(|rule| Preconditions {
                uid: rule.metadata.uid.clone(),
                resource_version: rule.metadata.resource_version.clone(),
            }),
            ..DeleteParams::default()
        };
        match api.delete(rule_name, &params).await {
            Ok(_) => {
                context.metrics.rule(RuleAction::Deleted);
                tracing::info!(namespace, service = name, rule = %rule_name, "deleted DestinationRule");
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(Error::Delete {
                    namespace: namespace.to_string(),
                    name: rule_name.clone(),
                    source,
                });
            }
        }
    }
    if let Some(rule) = &wanted.apply {
        let rule_name = desired::rule_name(name);
        let ours_already = views.iter().any(|r| r.name == rule_name && r.managed());
        let mut params = PatchParams::apply(FIELD_MANAGER);
        params.force = ours_already;
        api.patch(&rule_name, &params, &Patch::Apply(rule))
            .await
            .map_err(|source| Error::Apply {
                namespace: namespace.to_string(),
                name: rule_name.clone(),
                source,
            })?;
        context.metrics.rule(RuleAction::Applied);
        tracing::info!(namespace, service = name, rule = %rule_name, "applied DestinationRule");
    }
    record_conflict(context, service, wanted.conflict.is_some());
    if let Some(conflict) = &wanted.conflict {
        let ports = crate::ports::format_port_list(conflict.lacking.iter().copied());
        let foreign = conflict.foreign.join(", ");
        tracing::warn!(
            namespace, service = name, foreign = %foreign, ports = %ports,
            "another DestinationRule exists for the Service's host; not writing {}", desired::rule_name(name)
        );
        let note = format!(
            "DestinationRule {foreign} exists for this Service's host, so serverfirst does not create {}; meshed clients need tls.mode DISABLE on port {ports} (excluded from sidecar capture): add it to {foreign}",
            desired::rule_name(name)
        );
        publish(context, &reference, "ForeignDestinationRule", "Skip", note).await;
    }
    for mixed in &wanted.mixed {
        if !mixed.capturing.is_empty() {
            let note = format!(
                "port {} is excluded from capture on some pods but not on {}; tls.mode DISABLE applies to all of them",
                mixed.port,
                named_pods(&mixed.capturing)
            );
            publish(context, &reference, "MixedEndpoints", "Apply", note).await;
        }
        if !mixed.ambient.is_empty() {
            let note = format!(
                "port {} is excluded from capture on some pods, but {} are ambient pods, which ztunnel serves with mTLS: tls.mode DISABLE sends them plaintext, which they refuse under STRICT",
                mixed.port,
                named_pods(&mixed.ambient)
            );
            publish(context, &reference, "MixedEndpoints", "Apply", note).await;
        }
    }
    Ok(())
}

/// What a pod of `namespace` (with `namespace_labels`) is: the inbound ports it records as
/// excluded (a malformed record is logged and ignored), and whether it is ambient.
fn pod_facts(
    pods: &Store<PartialObjectMeta<Pod>>,
    namespace: &str,
    namespace_labels: Option<&BTreeMap<String, String>>,
    pod: &str,
) -> PodFacts {
    let Some(pod_meta) = pods.get(&ObjectRef::new(pod).within(namespace)) else {
        return PodFacts::default();
    };
    let labels = pod_meta.metadata.labels.clone().unwrap_or_default();
    // A running pod: its sidecar is there or not. Host-network pods are never endpoints with
    // a record (serverfirst leaves them alone), so their spec is not needed here.
    let ambient = ambient::is_ambient(
        &ambient::PodFacts {
            labels: &labels,
            host_network: false,
            injected: pod_meta
                .annotations()
                .contains_key(ambient::SIDECAR_STATUS_KEY),
            before_injection: false,
        },
        namespace_labels.unwrap_or_else(|| ambient::no_labels()),
    );
    let excluded = match pod_meta
        .annotations()
        .get(RECORD_KEY)
        .map(|r| parse_port_list(r))
    {
        None => PortSet::new(),
        Some(Ok(ports)) => ports.into_iter().collect(),
        Some(Err(error)) => {
            tracing::warn!(namespace, pod, %error, "ignoring a malformed {RECORD_KEY}");
            PortSet::new()
        }
    };
    PodFacts { excluded, ambient }
}

fn named_pods(pods: &[String]) -> String {
    let mut text = pods
        .iter()
        .take(MAX_NAMED_PODS)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if pods.len() > MAX_NAMED_PODS {
        text.push_str(&format!(" and {} more", pods.len() - MAX_NAMED_PODS));
    }
    text
}

fn record_conflict(context: &Context, service: &Service, conflict: bool) {
    let Ok(mut conflicts) = context.conflicts.lock() else {
        return;
    };
    let key = ObjectRef::from_obj(service);
    if conflict {
        conflicts.insert(key);
    } else {
        conflicts.remove(&key);
    }
    // Services deleted since count no more.
    conflicts.retain(|key| context.stores.services.get(key).is_some());
    context.metrics.set_conflicts(conflicts.len());
}

/// Events are for people: a failure to publish one is logged, not retried.
async fn publish(
    context: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_: EventType::Warning,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(error) = context.recorder.publish(&event, reference).await {
        tracing::warn!(%error, reason, "cannot publish an Event");
    }
}
