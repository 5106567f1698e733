//! Offline manifests: multi-document YAML or JSON → pod templates of workload kinds, and
//! Services → the same decisions the webhook makes, and the same documents with the changes
//! applied.
//!
//! Documents are split on `---` markers and parsed one by one, so a broken document is reported
//! and the others are still processed. Rendering rewrites only the documents that change; the
//! rest are written back byte for byte (comments included).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Config;
use crate::mesh::service::waypoint_sniffs;
use crate::mesh::service::{ServiceChange, ServiceDecision, decide_service};
use crate::mesh::{Change, Decision, decide};
use crate::mesh_state::{MeshObject, MeshState, Waypoint, waypoint};
use crate::patch;
use crate::pod::PodView;
use crate::service::ServiceView;

pub mod companions;
mod documents;
pub mod exposure;
mod text_edit;

pub use documents::{RawDocument, Unreadable, parse_document, split_documents};

/// Where a pod template sits in an object of `kind`, as JSON pointer tokens.
pub fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => Some(&["spec", "template"]),
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// What one object in a document is, and what serverfirst makes of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectReport {
    /// Index in a `kind: List`'s `items`, if the object came from one.
    pub item: Option<usize>,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A workload: the decision for its pod template.
    Decided(Decision),
    /// A Service: the decision on its ports' protocol declarations, and the waypoint its
    /// traffic passes.
    Service(ServiceDecision, Option<Waypoint>),
    /// A kind without a pod template (Service, ConfigMap, ...).
    NoPodTemplate,
    /// A workload whose template cannot be used; the message says why.
    Invalid(String),
}

/// Decides every object of a parsed document (the items of a `List` one by one).
pub fn check_value(value: &Value, config: &Config, mesh: &MeshState) -> Vec<ObjectReport> {
    objects(value)
        .map(|(item, object)| report(item, object, config, mesh))
        .collect()
}

/// Applies the decisions to a parsed document; returns the reports and whether it changed.
pub fn render_value(
    value: &mut Value,
    config: &Config,
    mesh: &MeshState,
) -> (Vec<ObjectReport>, bool) {
    if is_list(value_kind_of(value))
        && let Some(Value::Array(items)) = value.get_mut("items")
    {
        let mut changed = false;
        let reports = items
            .iter_mut()
            .enumerate()
            .map(|(index, item)| {
                let (report, did_change) = render_object(Some(index), item, config, mesh);
                changed |= did_change;
                report
            })
            .collect();
        return (reports, changed);
    }
    let (report, changed) = render_object(None, value, config, mesh);
    (vec![report], changed)
}

fn value_kind_of(value: &Value) -> &str {
    value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn is_list(kind: &str) -> bool {
    kind == "List" || kind.ends_with("List")
}

fn objects(value: &Value) -> Box<dyn Iterator<Item = (Option<usize>, &Value)> + '_> {
    match value.get("items").and_then(Value::as_array) {
        Some(items) if is_list(value_kind_of(value)) => {
            Box::new(items.iter().enumerate().map(|(i, v)| (Some(i), v)))
        }
        _ => Box::new(std::iter::once((None, value))),
    }
}

fn report(item: Option<usize>, object: &Value, config: &Config, mesh: &MeshState) -> ObjectReport {
    let kind = value_kind_of(object).to_string();
    let metadata = object.get("metadata");
    let field = |key: &str| {
        metadata
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let verdict = match template_path(&kind) {
        None if kind == "Service" => match ServiceView::deserialize(object) {
            Ok(service) => {
                let namespace = field("namespace");
                let waypoint = mesh
                    .waypoint(&namespace, &service, waypoint::Client::Service)
                    .cloned();
                Verdict::Service(decide_service(&service, &namespace, config), waypoint)
            }
            Err(error) => Verdict::Invalid(format!("not a valid Service: {error}")),
        },
        // A policy that does not read is an error to show, not a document to skip.
        None => match MeshObject::from_value(object) {
            Some(Err(message)) => Verdict::Invalid(message),
            _ => Verdict::NoPodTemplate,
        },
        Some(path) => match template(object, path) {
            Err(message) => Verdict::Invalid(message),
            Ok(template) => match PodView::deserialize(template) {
                Ok(pod) => Verdict::Decided(decide(&pod, &field("namespace"), config, mesh)),
                Err(error) => {
                    Verdict::Invalid(format!("pod template is not a valid pod spec: {error}"))
                }
            },
        },
    };
    ObjectReport {
        item,
        kind,
        namespace: field("namespace"),
        name: field("name"),
        verdict,
    }
}

fn template<'v>(object: &'v Value, path: &[&str]) -> Result<&'v Value, String> {
    let mut current = object;
    for token in path {
        current = current
            .get(token)
            .ok_or_else(|| format!("no {} in this {}", path.join("."), value_kind_of(object)))?;
    }
    let containers = current
        .pointer("/spec/containers")
        .and_then(Value::as_array);
    match containers {
        Some(containers) if !containers.is_empty() => Ok(current),
        _ => Err("pod template has no containers".to_string()),
    }
}

fn render_object(
    item: Option<usize>,
    object: &mut Value,
    config: &Config,
    mesh: &MeshState,
) -> (ObjectReport, bool) {
    let report = report(item, object, config, mesh);
    let applied = match &report.verdict {
        Verdict::Decided(decision) if !decision.changes().is_empty() => {
            let path = template_path(&report.kind).unwrap_or_default();
            let pointer: String = path.iter().map(|token| format!("/{token}")).collect();
            let Some(template) = object.pointer_mut(&pointer) else {
                return (report, false);
            };
            match PodView::deserialize(&*template) {
                Ok(pod) => {
                    let patch = patch::build(&pod, decision.changes());
                    drop(pod);
                    json_patch::patch(template, &patch.0).map_err(|e| e.to_string())
                }
                Err(error) => Err(error.to_string()),
            }
        }
        Verdict::Service(decision, _) if !decision.changes().is_empty() => {
            match ServiceView::deserialize(&*object) {
                Ok(service) => {
                    let patch = patch::build_service(&service, decision.changes());
                    drop(service);
                    json_patch::patch(object, &patch.0).map_err(|e| e.to_string())
                }
                Err(error) => Err(error.to_string()),
            }
        }
        _ => return (report, false),
    };
    match applied {
        Ok(()) => (report, true),
        Err(error) => {
            let report = ObjectReport {
                verdict: Verdict::Invalid(format!("cannot apply the change: {error}")),
                ..report
            };
            (report, false)
        }
    }
}

/// One row of a `check`/`render` report: an object of a document, or a document's error.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub file: String,
    /// 1-based position of the document in its file.
    pub document: usize,
    /// Line the document starts on.
    pub line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub status: Status,
    pub ports: Vec<u16>,
    pub changes: Vec<AnnotationOut>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Why ports that look like a known protocol are left alone (it is off).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The object has no pod template (ConfigMap, Secret, RBAC, ...): counted, listed only on
    /// request.
    #[serde(skip)]
    pub without_template: bool,
    /// Objects the user still needs beside the exclusion (see [`companions`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub companions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnnotationOut {
    pub annotation: String,
    pub value: String,
}

/// The verdict on one pod template, in the words every report uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Server-first ports present, and not captured or kept in the mesh where it enforces
    /// identity.
    Protected,
    /// A server-first port is excluded from capture where the mesh enforces identity on it.
    Exposed,
    /// A waypoint sniffs a server-first port: clients would hang.
    AtRisk,
    /// serverfirst would change it.
    WouldPatch,
    /// Nothing server-first, skipped on purpose, or no pod template.
    NotApplicable,
    /// The document or template could not be used.
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Protected => "protected",
            Status::Exposed => "exposed",
            Status::AtRisk => "at-risk",
            Status::WouldPatch => "would-patch",
            Status::NotApplicable => "not-applicable",
            Status::Error => "error",
        }
    }
}

impl Row {
    fn new(file: &str, document: usize, line: usize) -> Row {
        Row {
            file: file.to_string(),
            document,
            line,
            item: None,
            kind: String::new(),
            namespace: String::new(),
            name: String::new(),
            status: Status::Error,
            ports: Vec::new(),
            changes: Vec::new(),
            message: String::new(),
            warnings: Vec::new(),
            notes: Vec::new(),
            without_template: false,
            companions: Vec::new(),
        }
    }

    /// A file that could not be read at all.
    pub fn unreadable(file: &str, message: String) -> Row {
        Row::error(file, 0, 0, message)
    }

    fn error(file: &str, document: usize, line: usize, message: String) -> Row {
        Row {
            message,
            ..Row::new(file, document, line)
        }
    }

    fn unparsable(file: &str, document: usize, line: usize, unreadable: Unreadable) -> Row {
        Row {
            kind: unreadable.kind,
            name: unreadable.name,
            ..Row::error(file, document, line, unreadable.message)
        }
    }

    fn from_report(file: &str, document: usize, line: usize, report: ObjectReport) -> Row {
        let mut row = Row {
            item: report.item,
            kind: report.kind,
            namespace: report.namespace,
            name: report.name,
            ..Row::new(file, document, line)
        };
        match report.verdict {
            Verdict::NoPodTemplate => {
                row.status = Status::NotApplicable;
                row.without_template = true;
                row.message = format!(
                    "kind {} has no pod template",
                    if row.kind.is_empty() {
                        "(none)"
                    } else {
                        &row.kind
                    }
                );
            }
            Verdict::Invalid(message) => row.message = message,
            Verdict::Service(decision, waypoint) => row.set_service_decision(decision, waypoint),
            Verdict::Decided(decision) => {
                row.warnings = decision.warnings().to_vec();
                row.notes = decision.notes();
                match decision {
                    Decision::Skipped(reason) => {
                        row.status = Status::NotApplicable;
                        row.message = reason.to_string();
                    }
                    Decision::Ambient(plan) => {
                        row.ports = plan.ports.iter().copied().collect();
                        row.status = match plan.waypoint {
                            Some(_) => Status::AtRisk,
                            None => Status::NotApplicable,
                        };
                        row.message = crate::mesh::AMBIENT.to_string();
                    }
                    Decision::NoPorts { .. } => {
                        row.status = Status::NotApplicable;
                        row.message = match row.notes.is_empty() {
                            true => "no server-first ports".to_string(),
                            false => std::mem::take(&mut row.notes).join("; "),
                        };
                    }
                    Decision::Planned(plan) => {
                        row.ports = plan.ports.iter().copied().collect();
                        row.status = match (plan.exposed.is_empty(), plan.changes.is_empty()) {
                            (false, _) => Status::Exposed,
                            (true, true) => Status::Protected,
                            (true, false) => Status::WouldPatch,
                        };
                        let kept = plan.capture_summary();
                        if plan.kept().next().is_some() {
                            row.notes.push(kept);
                        }
                        row.changes = plan
                            .changes
                            .iter()
                            .filter_map(|change| match change {
                                Change::SetAnnotation { key, value } => Some(AnnotationOut {
                                    annotation: key.clone(),
                                    value: value.clone(),
                                }),
                                _ => None,
                            })
                            .collect();
                    }
                }
            }
        }
        row
    }
}

impl Row {
    /// `waypoint`: the one traffic to the Service passes, which sniffs its undeclared ports.
    fn set_service_decision(&mut self, decision: ServiceDecision, waypoint: Option<Waypoint>) {
        self.warnings = decision.warnings().to_vec();
        self.status = Status::NotApplicable;
        match decision {
            ServiceDecision::Skipped(reason) => self.message = reason.to_string(),
            ServiceDecision::NoPorts => self.message = "no server-first ports".to_string(),
            ServiceDecision::Planned(plan) => {
                let ports: crate::ports::PortSet = plan.findings.iter().map(|f| f.port).collect();
                self.ports = ports.into_iter().collect();
                self.status = match (plan.changes.is_empty(), &waypoint) {
                    (true, _) => Status::Protected,
                    (false, Some(waypoint)) => {
                        self.warnings
                            .push(waypoint_sniffs(waypoint, &plan.declared));
                        Status::AtRisk
                    }
                    (false, None) => Status::WouldPatch,
                };
                self.changes = plan.changes.iter().map(AnnotationOut::from).collect();
            }
        }
    }
}

impl From<&ServiceChange> for AnnotationOut {
    /// A port's field is named by its path: `spec.ports[1].appProtocol`.
    fn from(change: &ServiceChange) -> Self {
        let (annotation, value) = match change {
            ServiceChange::SetAnnotation { key, value } => (key.clone(), value),
            ServiceChange::SetAppProtocol { port, value } => {
                (format!("spec.ports[{port}].appProtocol"), value)
            }
        };
        AnnotationOut {
            annotation,
            value: value.clone(),
        }
    }
}

/// Reports every document of one file (or stdin) named `file`.
pub fn check_text(file: &str, text: &str, config: &Config, mesh: &MeshState) -> Vec<Row> {
    let mut rows = Vec::new();
    for (index, document) in split_documents(text).into_iter().enumerate() {
        match parse_document(&document) {
            Ok(None) => {}
            Ok(Some(value)) => rows.extend(
                check_value(&value, config, mesh)
                    .into_iter()
                    .map(|r| Row::from_report(file, index + 1, document.line, r)),
            ),
            Err(unreadable) => {
                rows.push(Row::unparsable(file, index + 1, document.line, unreadable))
            }
        }
    }
    rows
}

/// Renders one file: the same documents, each changed one rewritten with the changes applied.
pub fn render_text(
    file: &str,
    text: &str,
    config: &Config,
    mesh: &MeshState,
) -> (String, Vec<Row>) {
    let mut out = String::with_capacity(text.len() + 256);
    let mut rows = Vec::new();
    for (index, document) in split_documents(text).into_iter().enumerate() {
        let mut value = match parse_document(&document) {
            Ok(Some(value)) => value,
            Ok(None) => {
                out.push_str(document.text);
                continue;
            }
            Err(unreadable) => {
                rows.push(Row::unparsable(file, index + 1, document.line, unreadable));
                out.push_str(document.text);
                continue;
            }
        };
        let (reports, changed) = render_value(&mut value, config, mesh);
        let rewritten = changed.then(|| match edit_text(&document, &value, &reports) {
            Some(edited) => Ok(edited),
            None => serialize_like(document.text, &value),
        });
        rows.extend(
            reports
                .into_iter()
                .map(|r| Row::from_report(file, index + 1, document.line, r)),
        );
        match rewritten {
            Some(Ok(rewritten)) => out.push_str(&rewritten),
            Some(Err(message)) => {
                rows.push(Row::error(file, index + 1, document.line, message));
                out.push_str(document.text);
            }
            None => out.push_str(document.text),
        }
    }
    (out, rows)
}

/// The document with its changes made by editing lines (comments kept), when that yields
/// exactly `expected`.
fn edit_text(
    document: &RawDocument<'_>,
    expected: &Value,
    reports: &[ObjectReport],
) -> Option<String> {
    let [
        ObjectReport {
            item: None,
            kind,
            verdict,
            ..
        },
    ] = reports
    else {
        return None;
    };
    let edited = match verdict {
        Verdict::Decided(decision) => {
            let annotations = decision
                .changes()
                .iter()
                .map(|change| match change {
                    Change::SetAnnotation { key, value } => Some((key.as_str(), value.as_str())),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            let metadata_path: Vec<&str> = template_path(kind)?
                .iter()
                .copied()
                .chain(["metadata"])
                .collect();
            text_edit::set_annotations(document.text, &metadata_path, &annotations)?
        }
        Verdict::Service(decision, _) => {
            let mut annotations = Vec::new();
            let mut port_fields = Vec::new();
            for change in decision.changes() {
                match change {
                    ServiceChange::SetAnnotation { key, value } => {
                        annotations.push((key.as_str(), value.as_str()))
                    }
                    ServiceChange::SetAppProtocol { port, value } => {
                        port_fields.push((*port, "appProtocol", value.as_str()))
                    }
                }
            }
            let mut edited = document.text.to_string();
            if !port_fields.is_empty() {
                edited =
                    text_edit::set_list_item_fields(&edited, &["spec", "ports"], &port_fields)?;
            }
            if !annotations.is_empty() {
                edited = text_edit::set_annotations(&edited, &["metadata"], &annotations)?;
            }
            edited
        }
        _ => return None,
    };
    let reparsed = parse_document(&RawDocument {
        line: document.line,
        text: &edited,
    })
    .ok()??;
    (reparsed == *expected).then_some(edited)
}

/// Serialises `value` as the original document was written: JSON stays JSON, YAML keeps its
/// `---` marker.
fn serialize_like(original: &str, value: &Value) -> Result<String, String> {
    let body = original
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("---"));
    if body.is_some_and(|l| l.starts_with('{') || l.starts_with('[')) {
        return serde_json::to_string_pretty(value)
            .map(|json| json + "\n")
            .map_err(|e| e.to_string());
    }
    let yaml = serde_saphyr::to_string(value).map_err(|e| format!("cannot write YAML: {e}"))?;
    let marker = original
        .lines()
        .find(|l| l.starts_with("---"))
        .map(|l| format!("{}\n", l.trim_end()));
    Ok(marker.unwrap_or_default() + &yaml)
}

/// A file (or stdin) to read manifests from.
#[derive(Debug)]
pub struct Source {
    pub name: String,
    pub text: Result<String, String>,
}

/// The manifests at `path`: a file, every `.yaml`/`.yml`/`.json` below a directory (sorted),
/// or standard input for `-`.
pub fn read_sources(path: &Path) -> Vec<Source> {
    if path == Path::new("-") {
        let mut text = String::new();
        let text = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map(|_| text)
            .map_err(|e| format!("cannot read standard input: {e}"));
        return vec![Source {
            name: "-".to_string(),
            text,
        }];
    }
    let mut files = Vec::new();
    if path.is_dir() {
        collect_files(path, &mut files);
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    files
        .into_iter()
        .map(|file| Source {
            name: file.display().to_string(),
            text: std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display())),
        })
        .collect()
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        files.push(dir.to_path_buf());
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, files);
        } else if path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            files.push(path);
        }
    }
}

/// The mesh state the documents describe: their Namespaces, PeerAuthentications and
/// AuthorizationPolicies (any that do not read are reported by `check_text`). Objects without a
/// namespace are taken to share one, the one they will be applied to.
pub fn mesh_state(sources: &[Source], config: &Config) -> MeshState {
    let mut found = Vec::new();
    for text in sources
        .iter()
        .filter_map(|source| source.text.as_ref().ok())
    {
        for document in split_documents(text) {
            let Ok(Some(value)) = parse_document(&document) else {
                continue;
            };
            found.extend(
                objects(&value).filter_map(|(_, object)| MeshObject::from_value(object)?.ok()),
            );
        }
    }
    MeshState::new(&config.istio.root_namespace, found)
}

/// Finds the Services (in any readable source) in front of each workload's excluded ports, adds
/// the advice to the workload's rows and returns the DestinationRules. Istio only: other meshes
/// do not send mTLS to a port their proxy skips.
pub fn attach_companions(
    rows: &mut [Row],
    sources: &[Source],
    config: &Config,
    mesh: &MeshState,
) -> Vec<Value> {
    use crate::mesh::Mesh;
    if !config.meshes.explicit.contains(&Mesh::Istio) && !config.meshes.auto {
        return Vec::new();
    }
    let (services, workloads) = services_and_workloads(sources, config, mesh);
    let services: Vec<companions::Service> = services.into_iter().map(|(_, s)| s).collect();
    let mut rules = Vec::new();
    for (at, workload) in workloads {
        let found = companions::destination_rules(&workload, &services);
        let advice: Vec<String> = found.iter().map(companions::advice).collect();
        for row in rows.iter_mut().filter(|row| at.is(row)) {
            row.companions.extend(advice.iter().cloned());
        }
        rules.extend(found);
    }
    rules
}

/// Warns on each `LoadBalancer` or `NodePort` Service that offers a port its workloads keep in
/// the mesh: clients outside the mesh are refused there ([`exposure`]).
pub fn attach_exposure_warnings(
    rows: &mut [Row],
    sources: &[Source],
    config: &Config,
    mesh: &MeshState,
) {
    let (services, workloads) = services_and_workloads(sources, config, mesh);
    for (at, service) in services {
        let warnings: Vec<String> = workloads
            .iter()
            .filter_map(|(_, workload)| exposure::outside_clients_refused(&service, workload))
            .collect();
        for row in rows.iter_mut().filter(|row| at.is(row)) {
            row.warnings.extend(warnings.iter().cloned());
        }
    }
}

/// Where an object sits among the sources: file, document, item of a `List`.
struct Place<'s> {
    file: &'s str,
    document: usize,
    item: Option<usize>,
}

impl Place<'_> {
    fn is(&self, row: &Row) -> bool {
        row.file == self.file && row.document == self.document && row.item == self.item
    }
}

/// The Services (with a selector) and the workloads with server-first ports of every readable
/// source, with where each sits.
#[allow(clippy::type_complexity)]
fn services_and_workloads<'s>(
    sources: &'s [Source],
    config: &Config,
    mesh: &MeshState,
) -> (
    Vec<(Place<'s>, companions::Service)>,
    Vec<(Place<'s>, companions::Workload)>,
) {
    let mut services = Vec::new();
    let mut workloads = Vec::new();
    for source in sources {
        let (file, Ok(text)) = (source.name.as_str(), &source.text) else {
            continue;
        };
        for (index, document) in split_documents(text).into_iter().enumerate() {
            let Ok(Some(value)) = parse_document(&document) else {
                continue;
            };
            for (item, object) in objects(&value) {
                let at = Place {
                    file,
                    document: index + 1,
                    item,
                };
                match companions::Service::from_value(object) {
                    Some(service) => services.push((at, service)),
                    None => {
                        if let Some(workload) = workload(object, config, mesh) {
                            workloads.push((at, workload));
                        }
                    }
                }
            }
        }
    }
    (services, workloads)
}

/// The workload view of an object whose pod template has server-first ports excluded or kept.
fn workload(object: &Value, config: &Config, mesh: &MeshState) -> Option<companions::Workload> {
    let template = template(object, template_path(value_kind_of(object))?).ok()?;
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let pod = PodView::deserialize(template).ok()?;
    let Decision::Planned(plan) = decide(&pod, namespace, config, mesh) else {
        return None;
    };
    let excluded = plan.excluded();
    let kept: BTreeMap<u16, String> = plan
        .kept()
        .filter(|(port, _)| !plan.exposed.contains_key(port))
        .map(|(port, reason)| (port, reason.to_string()))
        .collect();
    (!excluded.is_empty() || !kept.is_empty())
        .then(|| companions::Workload::new(object, template, excluded, kept))
}

/// Exit code of `check`/`render`: 2 on errors, 1 when something needs a change or is exposed,
/// else 0.
pub fn exit_code(rows: &[Row]) -> u8 {
    if rows.iter().any(|r| r.status == Status::Error) {
        2
    } else if rows.iter().any(|r| {
        matches!(
            r.status,
            Status::WouldPatch | Status::Exposed | Status::AtRisk
        )
    }) {
        1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_paths_by_kind() {
        assert_eq!(template_path("Pod"), Some(&[][..]));
        assert_eq!(
            template_path("CronJob"),
            Some(&["spec", "jobTemplate", "spec", "template"][..])
        );
        assert_eq!(template_path("Service"), None);
    }
}
