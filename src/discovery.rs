//! Optional APIs (Istio's CRDs) and whether the cluster serves them: the first served version of
//! a kind, and a wait that asks again every [`INTERVAL`] and says once that it is not served.

use std::time::Duration;

use kube::Client;
use kube::api::{ApiResource, GroupVersionKind};
use tokio_util::sync::CancellationToken;

/// How often discovery is asked again while an API is not served.
pub const INTERVAL: Duration = Duration::from_secs(30);

/// The API of `kind` in `group` at the first of `versions` the cluster serves; `Ok(None)` when
/// it serves none of them.
pub async fn served(
    client: &Client,
    group: &str,
    kind: &str,
    versions: &[&str],
) -> Result<Option<ApiResource>, kube::Error> {
    for version in versions {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        match kube::discovery::pinned_kind(client, &gvk).await {
            Ok((resource, _)) => return Ok(Some(resource)),
            Err(error) if is_not_served(&error) => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(None)
}

/// Discovery says "not served" as a 404 for the group version, or a list without the kind.
fn is_not_served(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code == 404,
        kube::Error::Discovery(_) => true,
        _ => false,
    }
}

/// Waits until the cluster serves at least one of `kinds` of `group`, asking every
/// [`INTERVAL`]; returns the served ones, or `None` when `shutdown` comes first. `missing`
/// ("Istio's CRDs are not installed") is logged once; `on_absent` is called after each answer
/// that none is served.
pub async fn wait_until_served(
    client: &Client,
    group: &str,
    kinds: &[&str],
    versions: &[&str],
    missing: &str,
    mut on_absent: impl FnMut(),
    shutdown: &CancellationToken,
) -> Option<Vec<ApiResource>> {
    let mut told = false;
    loop {
        let mut found = Vec::new();
        let mut failed = None;
        for kind in kinds {
            match served(client, group, kind, versions).await {
                Ok(Some(resource)) => found.push(resource),
                Ok(None) => {}
                Err(error) => failed = Some(error),
            }
        }
        match failed {
            None if !found.is_empty() => {
                for resource in &found {
                    tracing::info!(api_version = %resource.api_version, kind = %resource.kind, "API found");
                }
                return Some(found);
            }
            None => {
                if !told {
                    told = true;
                    tracing::info!(
                        "the cluster serves no {} API ({group}: {missing}); asking again every 30s",
                        kinds.join(" or ")
                    );
                }
                on_absent();
            }
            Some(error) => tracing::warn!(%error, "API discovery failed; asking again in 30s"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
    }
}
