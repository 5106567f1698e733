//! The mesh state as `audit` reads it: one paged list of each kind its decisions need
//! (namespaces as metadata only; the kinds of [`MESH_APIS`] where the cluster serves them). What
//! it may not list is said once, and decided without.

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, ObjectList};
use serde::de::DeserializeOwned;

use super::{AuditError, root_cause};
use crate::config::Config;
use crate::discovery;
use crate::mesh_state::{MeshObject, MeshState};
use crate::mesh_watch::MESH_APIS;

const PAGE: u32 = 500;

/// Lists the objects of the mesh state and builds it.
pub async fn read(client: &Client, config: &Config) -> Result<MeshState, AuditError> {
    let mut objects = Vec::new();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let listed = all_pages("namespaces", |params| {
        let namespaces = namespaces.clone();
        async move { namespaces.list_metadata(&params).await }
    })
    .await?;
    objects.extend(
        listed
            .into_iter()
            .flatten()
            .map(|namespace| MeshObject::Namespace {
                name: namespace.metadata.name.unwrap_or_default(),
                labels: namespace.metadata.labels.unwrap_or_default(),
            }),
    );
    let kinds = MESH_APIS
        .iter()
        .flat_map(|api| api.kinds.iter().map(move |kind| (api, *kind)));
    for (api, kind) in kinds {
        let Some(resource) = discovery::served(client, api.group, kind, api.versions)
            .await
            .map_err(|error| AuditError::ListMesh {
                what: format!("the API of {kind}"),
                message: root_cause(&error),
            })?
        else {
            continue;
        };
        let listed = all_pages(&resource.plural, |params| {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            async move { api.list(&params).await }
        })
        .await?;
        for object in listed.into_iter().flatten() {
            let Ok(mut value) = serde_json::to_value(&object) else {
                continue;
            };
            value["apiVersion"] = resource.api_version.clone().into();
            value["kind"] = resource.kind.clone().into();
            match MeshObject::from_value(&value) {
                Some(Ok(object)) => objects.push(object),
                Some(Err(error)) => {
                    eprintln!("warning: ignoring a mesh object that does not read: {error}")
                }
                None => {}
            }
        }
    }
    Ok(MeshState::new(&config.istio.root_namespace, objects))
}

/// Every page of a list; `None` when the API forbids it (said once on stderr).
async fn all_pages<K, F, Fut>(what: &str, list: F) -> Result<Option<Vec<K>>, AuditError>
where
    K: Clone + DeserializeOwned,
    F: Fn(ListParams) -> Fut,
    Fut: Future<Output = kube::Result<ObjectList<K>>>,
{
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(PAGE);
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        match list(params).await {
            Ok(page) => {
                items.extend(page.items);
                token = page.metadata.continue_.filter(|t| !t.is_empty());
                if token.is_none() {
                    return Ok(Some(items));
                }
            }
            Err(kube::Error::Api(status)) if status.code == 403 => {
                tracing::warn!(what, "cannot list (forbidden); deciding without");
                eprintln!("warning: cannot list {what} (forbidden): decisions assume none");
                return Ok(None);
            }
            Err(error) => {
                return Err(AuditError::ListMesh {
                    what: what.to_string(),
                    message: root_cause(&error),
                });
            }
        }
    }
}
