//! Writes policy reports through the Kubernetes API: server-side apply with field manager
//! `serverfirst`, then deletes the reports serverfirst labelled in namespaces that have nothing
//! left to report. Needs `create`, `patch`, `list` and `delete` on the report resource.

use std::collections::HashSet;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};

use super::policyreport::{MANAGED_BY_LABEL, MANAGER, REPORT_NAME, Report, ReportApi};
use super::root_cause;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot apply {kind} {namespace}/{REPORT_NAME}: {message}")]
    Apply {
        kind: &'static str,
        namespace: String,
        message: String,
    },
    #[error("cannot list {plural}.{group}: {message}")]
    List {
        plural: &'static str,
        group: &'static str,
        message: String,
    },
    #[error("cannot delete {kind} {namespace}/{name}: {message}")]
    Delete {
        kind: &'static str,
        namespace: String,
        name: String,
        message: String,
    },
}

/// Applies one namespace's report at a time and remembers which namespaces got one.
pub struct ReportApplier {
    client: kube::Client,
    api: ReportApi,
    resource: ApiResource,
    /// The audited namespace, `None` for all of them: reports are pruned only there.
    scope: Option<String>,
    written: HashSet<String>,
}

impl ReportApplier {
    pub fn new(client: kube::Client, api: ReportApi, scope: Option<&str>) -> Self {
        let resource = ApiResource {
            group: api.group().to_string(),
            version: api.version().to_string(),
            api_version: api.api_version(),
            kind: api.kind().to_string(),
            plural: api.plural().to_string(),
        };
        ReportApplier {
            client,
            api,
            resource,
            scope: scope.map(str::to_string),
            written: HashSet::new(),
        }
    }

    /// Server-side apply of `report` (forced: serverfirst owns every field it writes).
    pub async fn apply(&mut self, report: &Report) -> Result<(), ApplyError> {
        let namespace = &report.metadata.namespace;
        let reports: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &self.resource);
        reports
            .patch(
                REPORT_NAME,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(report),
            )
            .await
            .map_err(|error| ApplyError::Apply {
                kind: self.api.kind(),
                namespace: namespace.clone(),
                message: root_cause(&error),
            })?;
        self.written.insert(namespace.clone());
        Ok(())
    }

    /// Deletes serverfirst's reports in the namespaces that got none this run; returns those
    /// namespaces. Call only after a complete audit.
    pub async fn prune(&self) -> Result<Vec<String>, ApplyError> {
        let reports: Api<DynamicObject> = match &self.scope {
            Some(namespace) => Api::namespaced_with(self.client.clone(), namespace, &self.resource),
            None => Api::all_with(self.client.clone(), &self.resource),
        };
        let selector = format!("{MANAGED_BY_LABEL}={MANAGER}");
        let mut stale = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut params = ListParams::default().labels(&selector).limit(500);
            if let Some(token) = &token {
                params = params.continue_token(token);
            }
            let page = reports
                .list(&params)
                .await
                .map_err(|error| ApplyError::List {
                    plural: self.api.plural(),
                    group: self.api.group(),
                    message: root_cause(&error),
                })?;
            for report in page.items {
                let name = report.metadata.name.unwrap_or_default();
                let namespace = report.metadata.namespace.unwrap_or_default();
                if name == REPORT_NAME && !self.written.contains(&namespace) {
                    stale.push(namespace);
                }
            }
            token = page.metadata.continue_.filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
        for namespace in &stale {
            let reports: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), namespace, &self.resource);
            reports
                .delete(REPORT_NAME, &DeleteParams::default())
                .await
                .map_err(|error| ApplyError::Delete {
                    kind: self.api.kind(),
                    namespace: namespace.clone(),
                    name: REPORT_NAME.to_string(),
                    message: root_cause(&error),
                })?;
        }
        Ok(stale)
    }
}
