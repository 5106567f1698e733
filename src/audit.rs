//! Audit of running pods and Services through the Kubernetes API: which are broken today
//! (`at-risk`), which bypass what the mesh enforces (`exposed`), which serverfirst would change
//! when they are next created or updated, which are fine.
//!
//! Needs only `list` of pods, Services, namespaces, Istio's PeerAuthentications and
//! AuthorizationPolicies and Gateways ([`mesh`], read once first), and `get replicasets` (to name a Deployment
//! instead of its ReplicaSet). Pods are listed in pages (`limit` + `continue`) and audited page by page;
//! a list comes in namespace order, so each namespace's Services are listed and audited once its
//! pods are through, against those pods' labels: memory stays that of one namespace. The
//! Services of namespaces without pods (the ones a new deployment is about to fill) follow, from
//! a paged Service list that skips the namespaces already done: memory holds only their names.

pub mod apply;
pub mod mesh;
pub mod policyreport;

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, OwnerReference};
use kube::api::{Api, ListParams};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::companions::desired;
use crate::config::Config;
use crate::manifests::companions as offline;
use crate::manifests::exposure;
use crate::mesh::service::{ServiceDecision, decide_service, meshes_for_service, waypoint_sniffs};
use crate::mesh::{
    AMBIENT, AmbientPlan, Change, Decision, Mesh, Plan, RECORD_KEY, decide, waypoint_way_out,
};
use crate::mesh_state::{Enforcement, MeshState, waypoint};
use crate::pod::PodView;
use crate::ports::{PortSet, by_reason, parse_port_list, phrase};
use crate::service::ServiceView;

/// The verdict on one running pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditStatus {
    /// Server-first ports present and not captured.
    Protected,
    /// A sidecar is injected and captures a server-first port: clients hang today.
    AtRisk,
    /// A server-first port is excluded from capture while the mesh enforces identity on it:
    /// it bypasses STRICT mTLS or an AuthorizationPolicy.
    Exposed,
    /// No sidecar yet, but serverfirst would change the pod when it is next created.
    WouldPatch,
    /// Nothing server-first, or left alone on purpose.
    NotApplicable,
}

impl AuditStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditStatus::Protected => "protected",
            AuditStatus::AtRisk => "at-risk",
            AuditStatus::Exposed => "exposed",
            AuditStatus::WouldPatch => "would-patch",
            AuditStatus::NotApplicable => "not-applicable",
        }
    }
}

/// The workload that owns a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// What a row is about. Serialised flat into the row, tagged by `kind`, so a row keeps the keys
/// it always had (`namespace`, `pod`) and other kinds can carry their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind")]
pub enum Resource {
    Pod {
        namespace: String,
        pod: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        uid: String,
    },
    Service {
        namespace: String,
        service: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        uid: String,
    },
}

impl Resource {
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::Pod { .. } => "Pod",
            Resource::Service { .. } => "Service",
        }
    }

    pub fn api_version(&self) -> &'static str {
        match self {
            Resource::Pod { .. } | Resource::Service { .. } => "v1",
        }
    }

    pub fn namespace(&self) -> &str {
        match self {
            Resource::Pod { namespace, .. } | Resource::Service { namespace, .. } => namespace,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Resource::Pod { pod, .. } => pod,
            Resource::Service { service, .. } => service,
        }
    }

    fn set_uid(&mut self, value: String) {
        match self {
            Resource::Pod { uid, .. } | Resource::Service { uid, .. } => *uid = value,
        }
    }

    pub fn uid(&self) -> &str {
        match self {
            Resource::Pod { uid, .. } | Resource::Service { uid, .. } => uid,
        }
    }
}

/// One row of the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRow {
    #[serde(flatten)]
    pub resource: Resource,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    pub status: AuditStatus,
    pub ports: Vec<u16>,
    pub sidecar: bool,
    /// The fix only takes effect when the pod is created again.
    pub needs_restart: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// What meshed clients still need (Istio auto-mTLS keeps sending mTLS to excluded ports).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub companion: String,
    /// Ports that stay in the mesh, with why (`STRICT by mail/default`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub kept: BTreeMap<u16, String>,
}

impl AuditRow {
    /// A row not decided yet: not applicable, nothing found.
    fn new(resource: Resource, sidecar: bool) -> AuditRow {
        AuditRow {
            resource,
            owner: None,
            status: AuditStatus::NotApplicable,
            ports: Vec::new(),
            sidecar,
            needs_restart: false,
            fix: String::new(),
            reason: String::new(),
            warnings: Vec::new(),
            companion: String::new(),
            kept: BTreeMap::new(),
        }
    }
}

/// How many rows had each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub at_risk: usize,
    pub exposed: usize,
    pub would_patch: usize,
    pub protected: usize,
    pub not_applicable: usize,
}

impl Tally {
    pub fn add(&mut self, status: AuditStatus) {
        match status {
            AuditStatus::AtRisk => self.at_risk += 1,
            AuditStatus::Exposed => self.exposed += 1,
            AuditStatus::WouldPatch => self.would_patch += 1,
            AuditStatus::Protected => self.protected += 1,
            AuditStatus::NotApplicable => self.not_applicable += 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot list pods: {0}")]
    List(String),
    #[error("cannot list the Services of namespace {namespace}: {message}")]
    ListServices { namespace: String, message: String },
    #[error("cannot list the Services of all namespaces: {0}")]
    ListAllServices(String),
    /// A kind the mesh state is made of (namespaces, Istio policies).
    #[error("cannot list {what}: {message}")]
    ListMesh { what: String, message: String },
}

/// Classifies one pod (pure): the same decision the webhook makes, plus what it means for a pod
/// that is already running.
pub fn classify(pod: &PodView<'_>, config: &Config, mesh: &MeshState) -> AuditRow {
    let sidecar = has_sidecar(pod);
    let mut audit = AuditRow::new(
        Resource::Pod {
            namespace: pod.namespace().unwrap_or_default().to_string(),
            pod: pod.display_name(),
            uid: String::new(),
        },
        sidecar,
    );
    let decision = decide(pod, pod.namespace().unwrap_or_default(), config, mesh);
    audit.warnings = decision.warnings().to_vec();
    match decision {
        Decision::Skipped(reason) => audit.reason = reason.to_string(),
        Decision::NoPorts { .. } => audit.reason = "no server-first ports".to_string(),
        Decision::Planned(plan) => classify_plan(pod, config, &plan, &mut audit),
        Decision::Ambient(plan) => classify_ambient(&plan, &mut audit),
    }
    audit
}

/// An ambient pod is fine unless a waypoint that sniffs carries its traffic; the waypoint takes
/// a label change, not a restart.
fn classify_ambient(plan: &AmbientPlan, audit: &mut AuditRow) {
    audit.ports = plan.ports.iter().copied().collect();
    audit.reason = AMBIENT.to_string();
    if let Some(waypoint) = &plan.waypoint {
        audit.status = AuditStatus::AtRisk;
        audit.reason = format!(
            "its traffic passes waypoint {} (istio.io/waypoint-for: {}), which sniffs every port",
            waypoint.gateway,
            waypoint.waypoint_for.as_str()
        );
        audit.fix = waypoint_way_out(&phrase(plan.ports.iter().copied()));
    }
}

/// What a plan means for a pod that is already running.
fn classify_plan(pod: &PodView<'_>, config: &Config, plan: &Plan, audit: &mut AuditRow) {
    let sidecar = audit.sidecar;
    audit.ports = plan.ports.iter().copied().collect();
    audit.kept = plan
        .kept()
        .filter(|(port, _)| !plan.exposed.contains_key(port))
        .map(|(port, reason)| (port, reason.to_string()))
        .collect();
    let annotation = plan.changes.iter().find_map(|change| match change {
        Change::SetAnnotation { key, value } if !key.starts_with("serverfirst.dev/") => {
            Some(format!("{key}: \"{value}\""))
        }
        _ => None,
    });
    audit.status = match (plan.changes_capture(), sidecar) {
        // Bypassing what the mesh enforces is worse than a stalled banner: it is reported first.
        _ if sidecar && !plan.exposed.is_empty() => AuditStatus::Exposed,
        (false, _) => AuditStatus::Protected,
        (true, true) => AuditStatus::AtRisk,
        (true, false) => AuditStatus::WouldPatch,
    };
    audit.needs_restart = matches!(audit.status, AuditStatus::AtRisk | AuditStatus::Exposed);
    let istio = crate::mesh::meshes_for(pod, &config.meshes).contains(&Mesh::Istio);
    let excluded = plan.excluded();
    if istio && !excluded.is_empty() {
        audit.companion = format!(
            "meshed clients need a DestinationRule with tls.mode DISABLE for {} on each Service in front of this pod (`serverfirst companions` keeps them; `serverfirst render --companions` writes them)",
            phrase(excluded.iter().copied())
        );
    }
    if !audit.kept.is_empty() {
        audit.reason = format!(
            "{}; meshed clients reach them with mTLS once their Service ports are declared TCP",
            kept_phrase(&audit.kept)
        );
    }
    audit.fix = match audit.status {
        AuditStatus::Exposed => exposed_fix(pod, &plan.exposed),
        AuditStatus::AtRisk => match annotation {
            Some(annotation) => format!(
                "recreate the pod with serverfirst installed, or set {annotation} in its template"
            ),
            None => "recreate the pod with serverfirst installed (its istio-init rules predate the exclusion)".to_string(),
        },
        AuditStatus::WouldPatch => format!(
            "serverfirst excludes {} when the pod is next created",
            phrase(excluded)
        ),
        _ => String::new(),
    };
}

/// `ports 25,587 kept in the mesh (STRICT by mail/default)`, one group per reason.
fn kept_phrase(kept: &BTreeMap<u16, String>) -> String {
    by_reason(kept.iter().map(|(&port, reason)| (port, reason)))
        .into_iter()
        .map(|(reason, ports)| format!("{} kept in the mesh ({reason})", phrase(ports)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// How to close the hole: the exclusion serverfirst wrote goes with a new pod; one the pod's own
/// template carries has to be taken out of it.
fn exposed_fix(pod: &PodView<'_>, exposed: &BTreeMap<u16, Enforcement>) -> String {
    let recorded: PortSet = pod
        .annotation(RECORD_KEY)
        .and_then(|record| parse_port_list(record).ok())
        .unwrap_or_default()
        .into_iter()
        .collect();
    let bypassed = by_reason(
        exposed
            .iter()
            .map(|(&port, enforcement)| (port, enforcement)),
    )
    .iter()
    .map(|(enforcement, ports)| format!("{} bypass {enforcement}", phrase(ports.iter().copied())))
    .collect::<Vec<_>>()
    .join("; ");
    let all_recorded = exposed.keys().all(|port| recorded.contains(port));
    match all_recorded {
        true => format!(
            "{bypassed}: recreate the pod with serverfirst installed, which keeps them in the mesh"
        ),
        false => format!(
            "{bypassed}: remove them from the exclusions in the pod's template (traffic.sidecar.istio.io/excludeInboundPorts) and recreate the pod"
        ),
    }
}

/// A pod of the Service's namespace as far as the Service audit needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectablePod {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub sidecar: bool,
    /// The inbound ports the webhook recorded as excluded (`serverfirst.dev/excluded-ports`).
    pub excluded: PortSet,
    /// Container port name → number, for Services that target ports by name.
    pub named_ports: BTreeMap<String, u16>,
    /// The ports the pod keeps in the mesh, with why (its row's `kept`).
    pub kept: BTreeMap<u16, String>,
}

impl SelectablePod {
    pub fn of(pod: &PodView<'_>) -> SelectablePod {
        let labels = pod
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .map(|labels| {
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let excluded = pod
            .annotation(RECORD_KEY)
            .and_then(|record| parse_port_list(record).ok())
            .unwrap_or_default()
            .into_iter()
            .collect();
        let named_ports = pod
            .containers()
            .iter()
            .chain(pod.init_containers())
            .flat_map(|c| c.ports())
            .filter_map(|p| Some((p.name.as_deref()?.to_string(), p.number()?)))
            .collect();
        SelectablePod {
            name: pod.display_name(),
            labels,
            sidecar: has_sidecar(pod),
            excluded,
            named_ports,
            kept: BTreeMap::new(),
        }
    }

    fn workload(&self, namespace: &str) -> offline::Workload {
        offline::Workload {
            namespace: namespace.to_string(),
            name: self.name.clone(),
            labels: self.labels.clone(),
            named_ports: self.named_ports.clone(),
            excluded: self.excluded.clone(),
            kept: self.kept.clone(),
        }
    }
}

/// What meshed clients of `service` still need: the companion DestinationRule for the ports
/// its pods have excluded, decided by the pure companions core (as `check` and the controller
/// do), or nothing.
pub fn service_companion(service: &offline::Service, pods: &[SelectablePod]) -> String {
    let ports: PortSet = pods
        .iter()
        .filter(|pod| !pod.excluded.is_empty())
        .flat_map(|pod| {
            offline::destination_rules(
                &pod.workload(&service.namespace),
                std::slice::from_ref(service),
            )
        })
        .flat_map(|rule| {
            rule.pointer("/spec/trafficPolicy/portLevelSettings")
                .and_then(serde_json::Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|setting| setting.pointer("/port/number")?.as_u64())
        .filter_map(|port| u16::try_from(port).ok())
        .collect();
    if ports.is_empty() {
        return String::new();
    }
    let reference = desired::ServiceRef {
        namespace: &service.namespace,
        name: &service.name,
    };
    let ports: Vec<u16> = ports.into_iter().collect();
    offline::advice(&desired::destination_rule(
        desired::DEFAULT_API_VERSION,
        reference,
        &ports,
    ))
}

/// Classifies one Service (pure) against the pods of its namespace: the same decision the
/// webhook makes for a Service. At risk when a selected pod has a sidecar (its clients are
/// meshed too, and Istio sniffs the undeclared port on them), would-patch when no selected pod
/// has one yet, protected when already declared.
pub fn classify_service(
    service: &ServiceView<'_>,
    selector: &BTreeMap<String, String>,
    pods: &[SelectablePod],
    config: &Config,
    mesh: &MeshState,
) -> AuditRow {
    let selected: Vec<&SelectablePod> = match selector.is_empty() {
        true => Vec::new(),
        false => pods
            .iter()
            .filter(|pod| selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v)))
            .collect(),
    };
    let sidecar = selected.iter().any(|pod| pod.sidecar);
    let mut audit = AuditRow::new(
        Resource::Service {
            namespace: service.namespace().unwrap_or_default().to_string(),
            service: service.display_name(),
            uid: String::new(),
        },
        sidecar,
    );
    let namespace = service.namespace().unwrap_or_default();
    let decision = decide_service(service, namespace, config);
    let waypoint = mesh.waypoint(namespace, service, waypoint::Client::Service);
    audit.warnings = decision.warnings().to_vec();
    match decision {
        ServiceDecision::Skipped(reason) => audit.reason = reason.to_string(),
        ServiceDecision::NoPorts => audit.reason = "no server-first ports".to_string(),
        ServiceDecision::Planned(plan) => {
            audit.ports = match plan.changes.is_empty() {
                true => plan.findings.iter().map(|f| f.port).collect::<PortSet>(),
                false => plan.declared.clone(),
            }
            .into_iter()
            .collect();
            audit.status = match (plan.changes.is_empty(), sidecar || waypoint.is_some()) {
                (true, _) => AuditStatus::Protected,
                (false, true) => AuditStatus::AtRisk,
                (false, false) => AuditStatus::WouldPatch,
            };
            let declare = phrase(plan.declared.iter().copied());
            audit.fix = match (audit.status, waypoint) {
                (AuditStatus::AtRisk, Some(waypoint)) => waypoint_sniffs(waypoint, &plan.declared),
                (AuditStatus::AtRisk, None) => format!(
                    "meshed clients sniff Service {declare}: set appProtocol: tcp, or update the Service with serverfirst installed (it reviews Service updates)"
                ),
                (AuditStatus::WouldPatch, _) => format!(
                    "serverfirst declares Service {declare} TCP when the Service is next created or updated"
                ),
                _ => String::new(),
            };
        }
    }
    audit
}

/// An Istio sidecar runs in the pod (as a container or a native sidecar).
fn has_sidecar(pod: &PodView<'_>) -> bool {
    pod.annotation("sidecar.istio.io/status").is_some() || pod.has_container(&["istio-proxy"])
}

/// One page of audited rows and where the listing stands.
#[derive(Debug)]
pub struct Page {
    pub rows: Vec<AuditRow>,
    pub progress: Progress,
}

/// Where a paged listing stands after a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Objects listed so far.
    pub listed: usize,
    /// Pages received so far.
    pub pages: usize,
    /// The server's `remainingItemCount` after this page, when it gives one.
    pub remaining: Option<u64>,
    /// The last page has arrived.
    pub complete: bool,
}

impl Progress {
    /// The whole count, when the server said how many remain.
    pub fn total(&self) -> Option<u64> {
        self.remaining
            .map(|remaining| self.listed as u64 + remaining)
    }
}

/// Lists pods (all namespaces when `namespace` is `None`) one page at a time and audits each
/// page, then the Services of the namespaces that had no pods, so memory stays that of one page
/// whatever the size of the cluster.
pub struct Auditor<'c> {
    client: kube::Client,
    /// The audited namespace, `None` for all of them.
    scope: Option<String>,
    /// `/api/v1/pods` or `/api/v1/namespaces/NS/pods`.
    url_path: String,
    owners: OwnerResolver,
    page_size: u32,
    config: &'c Config,
    token: Option<String>,
    progress: Progress,
    /// The namespace whose pods are being listed, for its Services.
    namespace: NamespacePods,
    /// Namespaces whose Services were audited with their pods.
    audited: HashSet<String>,
    /// Where the Services of namespaces without pods are being listed, once the pods are done.
    podless: PodlessServices,
    /// Services are listed (until the API forbids it).
    services: bool,
    /// Istio is planned for: Services get their companion DestinationRule advice.
    istio: bool,
    /// The mesh facts the decisions are made against.
    mesh: MeshState,
}

impl<'c> Auditor<'c> {
    /// Audits against `mesh`, the mesh state of the cluster ([`mesh::read`]).
    pub fn new(
        client: kube::Client,
        namespace: Option<&str>,
        page_size: u32,
        config: &'c Config,
        mesh: MeshState,
    ) -> Self {
        Auditor {
            scope: namespace.map(str::to_string),
            url_path: <Pod as kube::Resource>::url_path(&(), namespace),
            owners: OwnerResolver::new(client.clone()),
            client,
            page_size: page_size.max(1),
            config,
            token: None,
            progress: Progress {
                listed: 0,
                pages: 0,
                remaining: None,
                complete: false,
            },
            namespace: NamespacePods::default(),
            audited: HashSet::new(),
            podless: PodlessServices::Pending,
            services: true,
            istio: meshes_for_service(&config.meshes).contains(&Mesh::Istio),
            mesh,
        }
    }

    /// The next page of rows, or `None` after the last one.
    pub async fn next_page(&mut self) -> Result<Option<Page>, AuditError> {
        if !self.progress.complete {
            return self.next_pod_page().await.map(Some);
        }
        let rows = match std::mem::replace(&mut self.podless, PodlessServices::Done) {
            PodlessServices::Done => return Ok(None),
            PodlessServices::Pending => self.podless_services(None).await?,
            PodlessServices::Continue(token) => self.podless_services(Some(token)).await?,
        };
        Ok(Some(Page {
            rows,
            progress: self.progress,
        }))
    }

    /// The next page of pods, with the Services of each namespace they finish.
    async fn next_pod_page(&mut self) -> Result<Page, AuditError> {
        let mut params = ListParams::default().limit(self.page_size);
        if let Some(token) = &self.token {
            params = params.continue_token(token);
        }
        let request = kube::core::Request::new(&self.url_path)
            .list(&params)
            .map_err(|error| AuditError::List(root_cause(&error)))?;
        let body = self
            .client
            .request_text(request)
            .await
            .map_err(|error| AuditError::List(root_cause(&error)))?;
        let page: RawList<'_> = serde_json::from_str(&body)
            .map_err(|error| AuditError::List(format!("the PodList does not parse: {error}")))?;
        let mut rows = Vec::with_capacity(page.items.len());
        for pod in &page.items {
            let (row, selectable) = self.audit_pod(pod).await?;
            if row.resource.namespace() != self.namespace.name {
                rows.extend(self.audit_services().await?);
                self.namespace = NamespacePods {
                    name: row.resource.namespace().to_string(),
                    pods: Vec::new(),
                };
            }
            self.namespace.pods.push(selectable);
            rows.push(row);
        }
        self.progress.listed += page.items.len();
        self.progress.pages += 1;
        self.progress.remaining = page
            .metadata
            .remaining_item_count
            .and_then(|count| u64::try_from(count).ok());
        self.token = page.metadata.continue_.filter(|t| !t.is_empty());
        self.progress.complete = self.token.is_none();
        if self.progress.complete {
            rows.extend(self.audit_services().await?);
        }
        Ok(Page {
            rows,
            progress: self.progress,
        })
    }

    /// The pod's row, and what its namespace's Services need of it.
    async fn audit_pod(&mut self, pod: &RawValue) -> Result<(AuditRow, SelectablePod), AuditError> {
        let unreadable =
            |error: serde_json::Error| AuditError::List(format!("a pod does not parse: {error}"));
        let view = PodView::from_json(pod.get().as_bytes()).map_err(unreadable)?;
        let identity: PodIdentity = serde_json::from_str(pod.get()).map_err(unreadable)?;

        let mut audit = classify(&view, self.config, &self.mesh);
        audit.resource.set_uid(identity.metadata.uid);
        audit.owner = self
            .owners
            .resolve(
                audit.resource.namespace(),
                Some(&identity.metadata.owner_references),
            )
            .await;
        if let Some(restart) = restart_command(&audit) {
            audit.fix = format!("{restart}; {}", audit.fix);
        }
        let mut selectable = SelectablePod {
            kept: audit.kept.clone(),
            ..SelectablePod::of(&view)
        };
        // An ambient pod's record (written before serverfirst knew it was ambient) excludes
        // nothing: ztunnel captures every port.
        if self.mesh.is_ambient(audit.resource.namespace(), &view) {
            selectable.excluded.clear();
        }
        Ok((audit, selectable))
    }
}

/// The pods of the namespace being listed, for its Services.
#[derive(Debug, Default)]
struct NamespacePods {
    name: String,
    pods: Vec<SelectablePod>,
}

/// Where the listing of the Services of namespaces without pods stands.
#[derive(Debug)]
enum PodlessServices {
    Pending,
    /// More pages, from this `continue` token.
    Continue(String),
    Done,
}

impl Auditor<'_> {
    /// The rows of the finished namespace's Services. Without `list services` (an older audit
    /// role) the pods are still audited: said once, then Services are left out.
    async fn audit_services(&mut self) -> Result<Vec<AuditRow>, AuditError> {
        let namespace = std::mem::take(&mut self.namespace);
        if namespace.name.is_empty() || !self.services {
            return Ok(Vec::new());
        }
        self.audited.insert(namespace.name.clone());
        let failed = |message: String| AuditError::ListServices {
            namespace: namespace.name.clone(),
            message,
        };
        let url_path = <Service as kube::Resource>::url_path(&(), Some(&namespace.name));
        let listed = self
            .list_services(
                &url_path,
                &ListParams::default(),
                &failed,
                "auditing pods only",
            )
            .await?;
        let Some(body) = listed else {
            return Ok(Vec::new());
        };
        let list: RawList<'_> = serde_json::from_str(&body)
            .map_err(|error| failed(format!("the ServiceList does not parse: {error}")))?;
        self.service_rows(&list.items, &namespace.pods, |_| false, &failed)
    }

    /// One page of the Services of the namespaces that had no pods (of the audited namespace, if
    /// it had none), decided as Services with no pod selected yet. The list is of all Services;
    /// those of namespaces already audited are skipped.
    async fn podless_services(
        &mut self,
        token: Option<String>,
    ) -> Result<Vec<AuditRow>, AuditError> {
        let scope = self.scope.clone();
        if !self.services || scope.as_ref().is_some_and(|ns| self.audited.contains(ns)) {
            return Ok(Vec::new());
        }
        let failed = |message: String| match &scope {
            Some(namespace) => AuditError::ListServices {
                namespace: namespace.clone(),
                message,
            },
            None => AuditError::ListAllServices(message),
        };
        let url_path = <Service as kube::Resource>::url_path(&(), scope.as_deref());
        let mut params = ListParams::default().limit(self.page_size);
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let consequence = "the Services of namespaces without pods are left out";
        let listed = self
            .list_services(&url_path, &params, &failed, consequence)
            .await?;
        let Some(body) = listed else {
            return Ok(Vec::new());
        };
        let list: RawList<'_> = serde_json::from_str(&body)
            .map_err(|error| failed(format!("the ServiceList does not parse: {error}")))?;
        if let Some(next) = list.metadata.continue_.as_ref().filter(|t| !t.is_empty()) {
            self.podless = PodlessServices::Continue(next.clone());
        }
        let audited = &self.audited;
        self.service_rows(&list.items, &[], |ns| audited.contains(ns), &failed)
    }

    /// A Service list's body, or `None` when the API forbids it: said once, with its
    /// `consequence`, and Services are left out from then on.
    async fn list_services(
        &mut self,
        url_path: &str,
        params: &ListParams,
        failed: &dyn Fn(String) -> AuditError,
        consequence: &str,
    ) -> Result<Option<String>, AuditError> {
        let request = kube::core::Request::new(url_path)
            .list(params)
            .map_err(|error| failed(root_cause(&error)))?;
        match self.client.request_text(request).await {
            Ok(body) => Ok(Some(body)),
            Err(kube::Error::Api(status)) if status.code == 403 => {
                tracing::warn!(url_path, "cannot list services (forbidden); {consequence}");
                eprintln!("warning: cannot list services (forbidden): {consequence}");
                self.services = false;
                Ok(None)
            }
            Err(error) => Err(failed(root_cause(&error))),
        }
    }

    /// The rows of listed Services, decided against `pods` (those of their namespace), except
    /// those of the namespaces `skip` names.
    fn service_rows(
        &self,
        items: &[&RawValue],
        pods: &[SelectablePod],
        skip: impl Fn(&str) -> bool,
        failed: &dyn Fn(String) -> AuditError,
    ) -> Result<Vec<AuditRow>, AuditError> {
        let mut rows = Vec::with_capacity(items.len());
        for item in items {
            let unreadable =
                |error: serde_json::Error| failed(format!("a Service does not parse: {error}"));
            let view = ServiceView::from_json(item.get().as_bytes()).map_err(unreadable)?;
            if skip(view.namespace().unwrap_or_default()) {
                continue;
            }
            let identity: ServiceIdentity = serde_json::from_str(item.get()).map_err(unreadable)?;
            let mut row = classify_service(
                &view,
                &identity.spec.selector,
                pods,
                self.config,
                &self.mesh,
            );
            row.resource.set_uid(identity.metadata.uid);
            if !pods.is_empty()
                && let Ok(value) = serde_json::from_str::<serde_json::Value>(item.get())
                && let Some(service) = offline::Service::from_value(&value)
            {
                if self.istio {
                    row.companion = service_companion(&service, pods);
                }
                row.warnings.extend(pods.iter().filter_map(|pod| {
                    exposure::outside_clients_refused(&service, &pod.workload(&service.namespace))
                }));
            }
            rows.push(row);
        }
        Ok(rows)
    }
}

/// What a Service row needs besides what [`ServiceView`] reads.
#[derive(Deserialize)]
struct ServiceIdentity {
    #[serde(default)]
    metadata: PodIdentityMeta,
    #[serde(default)]
    spec: ServiceIdentitySpec,
}

#[derive(Deserialize, Default)]
struct ServiceIdentitySpec {
    #[serde(default)]
    selector: BTreeMap<String, String>,
}

/// A list page with its items left as JSON text: each is read once, by its view, instead of
/// being built as a typed object first.
#[derive(Deserialize)]
struct RawList<'a> {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(borrow, default)]
    items: Vec<&'a RawValue>,
}

/// What a row needs of a pod besides what [`PodView`] reads.
#[derive(Deserialize)]
struct PodIdentity {
    #[serde(default)]
    metadata: PodIdentityMeta,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodIdentityMeta {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    owner_references: Vec<OwnerReference>,
}

/// The command that recreates an at-risk pod through its workload.
fn restart_command(audit: &AuditRow) -> Option<String> {
    let owner = audit.owner.as_ref().filter(|_| audit.needs_restart)?;
    let kind = match owner.kind.as_str() {
        "Deployment" => "deployment",
        "StatefulSet" => "statefulset",
        "DaemonSet" => "daemonset",
        _ => return None,
    };
    Some(format!(
        "kubectl -n {} rollout restart {kind}/{}",
        audit.resource.namespace(),
        owner.name
    ))
}

/// Names the workload behind a pod, looking ReplicaSets up once each. Lists come in namespace
/// order, so the cache holds one namespace at a time and stays small.
struct OwnerResolver {
    client: kube::Client,
    namespace: String,
    cache: HashMap<String, Option<Owner>>,
}

impl OwnerResolver {
    fn new(client: kube::Client) -> Self {
        OwnerResolver {
            client,
            namespace: String::new(),
            cache: HashMap::new(),
        }
    }

    async fn resolve(
        &mut self,
        namespace: &str,
        references: Option<&[OwnerReference]>,
    ) -> Option<Owner> {
        let controller = controller_of(references)?;
        if controller.kind != "ReplicaSet" {
            return Some(controller);
        }
        if self.namespace != namespace {
            self.cache.clear();
            namespace.clone_into(&mut self.namespace);
        }
        if let Some(cached) = self.cache.get(&controller.name) {
            return cached.clone().or(Some(controller));
        }
        let replicasets: Api<ReplicaSet> = Api::namespaced(self.client.clone(), namespace);
        let deployment = match replicasets.get(&controller.name).await {
            Ok(replicaset) => controller_of(replicaset.metadata.owner_references.as_deref()),
            Err(error) => {
                // Without `get replicasets` the ReplicaSet itself is the best name we have.
                tracing::debug!(%error, replicaset = %controller.name, "cannot resolve the ReplicaSet's owner");
                None
            }
        };
        self.cache
            .insert(controller.name.clone(), deployment.clone());
        deployment.or(Some(controller))
    }
}

fn controller_of(references: Option<&[OwnerReference]>) -> Option<Owner> {
    let reference = references?.iter().find(|r| r.controller == Some(true))?;
    Some(Owner {
        kind: reference.kind.clone(),
        name: reference.name.clone(),
    })
}

/// The innermost cause of an error, on one line: what the operator can act on.
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut messages = vec![error.to_string()];
    let mut current = error.source();
    while let Some(source) = current {
        messages.push(source.to_string());
        current = source.source();
    }
    messages.dedup();
    let message = match messages.as_slice() {
        [only] => only.clone(),
        [first, .., last] if first.contains(last.as_str()) => first.clone(),
        [first, .., last] => format!("{first}: {last}"),
        [] => String::new(),
    };
    message.replace('\n', " ")
}

/// Exit code of `audit`: 1 when anything is at risk or exposed, else 0.
pub fn exit_code(tally: &Tally) -> u8 {
    u8::from(tally.at_risk > 0 || tally.exposed > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn classify_json(pod: serde_json::Value) -> AuditRow {
        let bytes = serde_json::to_vec(&pod).unwrap();
        classify(
            &PodView::from_json(&bytes).unwrap(),
            &Config::default(),
            &MeshState::default(),
        )
    }

    #[test]
    fn statuses() {
        let smtp = json!([{"name": "app", "ports": [{"containerPort": 25}]}]);
        let injected =
            json!([{"name": "app", "ports": [{"containerPort": 25}]}, {"name": "istio-proxy"}]);
        let at_risk = classify_json(
            json!({"metadata": {"name": "a", "namespace": "m"}, "spec": {"containers": injected}}),
        );
        assert_eq!(
            (at_risk.status, at_risk.needs_restart, at_risk.sidecar),
            (AuditStatus::AtRisk, true, true)
        );
        assert!(
            at_risk
                .fix
                .contains("traffic.sidecar.istio.io/excludeInboundPorts: \"25\""),
            "{}",
            at_risk.fix
        );

        let protected = classify_json(
            json!({"metadata": {"annotations": {"traffic.sidecar.istio.io/excludeInboundPorts": "25"}},
                                             "spec": {"containers": injected}}),
        );
        assert_eq!(protected.status, AuditStatus::Protected);

        let would = classify_json(json!({"spec": {"containers": smtp}}));
        assert_eq!(
            (would.status, would.needs_restart),
            (AuditStatus::WouldPatch, false)
        );

        let none = classify_json(
            json!({"spec": {"containers": [{"name": "web", "ports": [{"containerPort": 80}]}]}}),
        );
        assert_eq!(
            (none.status, none.reason.as_str()),
            (AuditStatus::NotApplicable, "no server-first ports")
        );
    }

    #[test]
    fn root_cause_is_one_line() {
        let inner = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        let outer = std::io::Error::other(inner);
        assert_eq!(root_cause(&outer), "Connection refused (os error 111)");
    }
}
