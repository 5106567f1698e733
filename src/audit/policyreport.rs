//! Audit rows as policy reports: one report per namespace, named `serverfirst`, one result per
//! row, in the API that policy engines and their UIs read (`wgpolicyk8s.io/v1alpha2`
//! `PolicyReport`) or its successor (`openreports.io/v1alpha1` `Report`).
//!
//! Pure: rows in, reports out. Lists come in namespace order, so a namespace's report is
//! complete when the first row of the next namespace arrives and only one report is held.

use std::collections::{BTreeMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{AuditRow, AuditStatus};
use crate::ports::format_port_list;

/// `metadata.name` of every report serverfirst writes.
pub const REPORT_NAME: &str = "serverfirst";
/// The label that marks the reports serverfirst owns (and may delete).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The label's value, the results' `source` and `policy`, and the server-side apply field manager.
pub const MANAGER: &str = "serverfirst";
/// The results' `rule`.
pub const RULE: &str = "server-first-ports";

/// Which report API to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportApi {
    /// `wgpolicyk8s.io/v1alpha2` `PolicyReport`: `source` on each result only.
    Wgpolicyk8s,
    /// `openreports.io/v1alpha1` `Report`: `source` for the whole report and on each result,
    /// which Policy Reporter groups results by (`ReportResult.source`, reports-api
    /// apis/openreports.io/v1alpha1/report_types.go).
    Openreports,
}

impl ReportApi {
    pub fn group(self) -> &'static str {
        match self {
            ReportApi::Wgpolicyk8s => "wgpolicyk8s.io",
            ReportApi::Openreports => "openreports.io",
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            ReportApi::Wgpolicyk8s => "v1alpha2",
            ReportApi::Openreports => "v1alpha1",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            ReportApi::Wgpolicyk8s => "PolicyReport",
            ReportApi::Openreports => "Report",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            ReportApi::Wgpolicyk8s => "policyreports",
            ReportApi::Openreports => "reports",
        }
    }

    pub fn api_version(self) -> String {
        format!("{}/{}", self.group(), self.version())
    }
}

/// One namespace's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub api_version: String,
    pub kind: &'static str,
    pub metadata: ReportMetadata,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'static str>,
    pub summary: Summary,
    pub results: Vec<ReportResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportMetadata {
    pub name: &'static str,
    pub namespace: String,
    pub labels: BTreeMap<&'static str, &'static str>,
}

/// Results by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub pass: usize,
    pub fail: usize,
    pub warn: usize,
    pub error: usize,
    pub skip: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    Warn,
    Skip,
}

/// How grave a result is (both report APIs accept these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    High,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportResult {
    pub source: &'static str,
    pub policy: &'static str,
    pub rule: &'static str,
    pub result: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    pub message: String,
    pub resources: Vec<ObjectReference>,
    pub properties: BTreeMap<&'static str, String>,
    pub timestamp: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub name: String,
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timestamp {
    pub seconds: i64,
    pub nanos: i32,
}

impl Timestamp {
    pub fn of(time: SystemTime) -> Self {
        let seconds = time
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp { seconds, nanos: 0 }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error(
        "namespace {0} came back after other namespaces; reports need each namespace's objects listed together"
    )]
    OutOfOrder(String),
}

/// Turns a stream of rows into one report per namespace.
pub struct ReportBuilder {
    api: ReportApi,
    show_all: bool,
    timestamp: Timestamp,
    current: Option<Report>,
    seen: HashSet<String>,
}

impl ReportBuilder {
    /// `show_all` adds a `skip` result for each not-applicable row.
    pub fn new(api: ReportApi, show_all: bool, timestamp: Timestamp) -> Self {
        ReportBuilder {
            api,
            show_all,
            timestamp,
            current: None,
            seen: HashSet::new(),
        }
    }

    /// Adds a row; returns the previous namespace's report when the row starts a new namespace
    /// (a namespace with nothing to report gives none).
    pub fn push(&mut self, row: &AuditRow) -> Result<Option<Report>, ReportError> {
        let namespace = row.resource.namespace();
        let mut finished = None;
        if self.current.as_ref().map(|r| r.metadata.namespace.as_str()) != Some(namespace) {
            if !self.seen.insert(namespace.to_string()) {
                return Err(ReportError::OutOfOrder(namespace.to_string()));
            }
            finished = self.current.replace(self.empty_report(namespace));
        }
        if let (Some(result), Some(report)) = (self.result(row), self.current.as_mut()) {
            count(&mut report.summary, result.result);
            report.results.push(result);
        }
        Ok(finished.filter(|r| !r.results.is_empty()))
    }

    /// The last namespace's report.
    pub fn finish(&mut self) -> Option<Report> {
        self.current.take().filter(|r| !r.results.is_empty())
    }

    fn empty_report(&self, namespace: &str) -> Report {
        Report {
            api_version: self.api.api_version(),
            kind: self.api.kind(),
            metadata: ReportMetadata {
                name: REPORT_NAME,
                namespace: namespace.to_string(),
                labels: BTreeMap::from([(MANAGED_BY_LABEL, MANAGER)]),
            },
            source: (self.api == ReportApi::Openreports).then_some(MANAGER),
            summary: Summary::default(),
            results: Vec::new(),
        }
    }

    fn result(&self, row: &AuditRow) -> Option<ReportResult> {
        let (outcome, message) = match row.status {
            AuditStatus::AtRisk | AuditStatus::Exposed => (Outcome::Fail, row.fix.clone()),
            AuditStatus::WouldPatch => (Outcome::Warn, row.fix.clone()),
            AuditStatus::Protected if !row.kept.is_empty() => (Outcome::Pass, row.reason.clone()),
            AuditStatus::Protected => (
                Outcome::Pass,
                format!(
                    "server-first ports {} are not captured by the sidecar",
                    format_port_list(row.ports.iter().copied())
                ),
            ),
            AuditStatus::NotApplicable if self.show_all => (Outcome::Skip, row.reason.clone()),
            AuditStatus::NotApplicable => return None,
        };
        let mut properties = BTreeMap::new();
        if !row.ports.is_empty() {
            properties.insert("ports", format_port_list(row.ports.iter().copied()));
        }
        if let Some(owner) = &row.owner {
            properties.insert("owner", owner.to_string());
        }
        properties.insert(
            "restart",
            if row.needs_restart { "yes" } else { "no" }.to_string(),
        );
        if !row.companion.is_empty() {
            properties.insert("companion", row.companion.clone());
        }
        Some(ReportResult {
            source: MANAGER,
            policy: MANAGER,
            rule: RULE,
            result: outcome,
            // A port open to anyone where the operator asked for identity.
            severity: (row.status == AuditStatus::Exposed).then_some(Severity::High),
            message,
            resources: vec![ObjectReference {
                api_version: row.resource.api_version(),
                kind: row.resource.kind(),
                name: row.resource.name().to_string(),
                namespace: row.resource.namespace().to_string(),
                uid: row.resource.uid().to_string(),
            }],
            properties,
            timestamp: self.timestamp,
        })
    }
}

fn count(summary: &mut Summary, outcome: Outcome) {
    match outcome {
        Outcome::Pass => summary.pass += 1,
        Outcome::Fail => summary.fail += 1,
        Outcome::Warn => summary.warn += 1,
        Outcome::Skip => summary.skip += 1,
    }
}

/// One YAML document (`---` first).
pub fn yaml_document(report: &Report) -> Result<String, serde_saphyr::SerializeError> {
    Ok(format!("---\n{}", serde_saphyr::to_string(report)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Owner, Resource};

    fn row(namespace: &str, name: &str, status: AuditStatus) -> AuditRow {
        AuditRow {
            resource: Resource::Pod {
                namespace: namespace.into(),
                pod: name.into(),
                uid: format!("uid-{name}"),
            },
            owner: Some(Owner {
                kind: "Deployment".into(),
                name: "mox".into(),
            }),
            status,
            ports: if status == AuditStatus::NotApplicable {
                vec![]
            } else {
                vec![25, 465, 587]
            },
            sidecar: true,
            needs_restart: status == AuditStatus::AtRisk,
            fix: format!("fix {name}"),
            reason: "no server-first ports".into(),
            warnings: vec![],
            companion: String::new(),
            kept: Default::default(),
        }
    }

    fn build(api: ReportApi, show_all: bool, rows: &[AuditRow]) -> Vec<Report> {
        let mut builder = ReportBuilder::new(
            api,
            show_all,
            Timestamp {
                seconds: 7,
                nanos: 0,
            },
        );
        let mut reports: Vec<Report> = rows
            .iter()
            .filter_map(|row| builder.push(row).unwrap())
            .collect();
        reports.extend(builder.finish());
        reports
    }

    #[test]
    fn one_report_per_namespace_with_counts() {
        let rows = [
            row("mail", "a", AuditStatus::AtRisk),
            row("mail", "b", AuditStatus::Protected),
            row("mail", "c", AuditStatus::NotApplicable),
            row("quiet", "d", AuditStatus::NotApplicable),
            row("jobs", "e", AuditStatus::WouldPatch),
        ];
        let reports = build(ReportApi::Wgpolicyk8s, false, &rows);
        let namespaces: Vec<&str> = reports
            .iter()
            .map(|r| r.metadata.namespace.as_str())
            .collect();
        assert_eq!(namespaces, ["mail", "jobs"], "nothing to report in quiet");
        assert_eq!(
            reports[0].summary,
            Summary {
                pass: 1,
                fail: 1,
                ..Summary::default()
            }
        );
        let outcomes: Vec<Outcome> = reports[0].results.iter().map(|r| r.result).collect();
        assert_eq!(outcomes, [Outcome::Fail, Outcome::Pass]);
        let fail = &reports[0].results[0];
        assert_eq!(fail.message, "fix a");
        assert_eq!(fail.source, "serverfirst");
        assert_eq!(fail.properties["ports"], "25,465,587");
        assert_eq!(fail.properties["owner"], "Deployment/mox");
        assert_eq!(fail.properties["restart"], "yes");
        assert_eq!(fail.resources[0].uid, "uid-a");
        assert_eq!(reports[0].source, None);
        assert_eq!(reports[1].results[0].result, Outcome::Warn);

        let all = build(ReportApi::Wgpolicyk8s, true, &rows);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].summary.skip, 1);
        assert_eq!(all[1].results[0].message, "no server-first ports");
    }

    #[test]
    fn openreports_has_its_source_at_the_top_and_on_every_result() {
        let reports = build(
            ReportApi::Openreports,
            false,
            &[
                row("mail", "a", AuditStatus::AtRisk),
                row("mail", "b", AuditStatus::WouldPatch),
            ],
        );
        assert_eq!(reports[0].source, Some("serverfirst"));
        let sources: Vec<&str> = reports[0].results.iter().map(|r| r.source).collect();
        assert_eq!(sources, ["serverfirst", "serverfirst"]);
        assert_eq!(reports[0].api_version, "openreports.io/v1alpha1");
        assert_eq!(reports[0].kind, "Report");
    }

    #[test]
    fn a_namespace_listed_twice_is_an_error() {
        let mut builder =
            ReportBuilder::new(ReportApi::Wgpolicyk8s, false, Timestamp::of(UNIX_EPOCH));
        builder.push(&row("a", "1", AuditStatus::AtRisk)).unwrap();
        builder.push(&row("b", "2", AuditStatus::AtRisk)).unwrap();
        assert_eq!(
            builder.push(&row("a", "3", AuditStatus::AtRisk)),
            Err(ReportError::OutOfOrder("a".into()))
        );
    }
}
