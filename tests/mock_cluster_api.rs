//! The mock cluster (tests/support/mock_cluster.rs) through kube's own client over loopback
//! HTTP, for what the other tests rely on it to do as kube-apiserver does: discovery of every
//! kind it serves, lists in pages at one resourceVersion, lists in one namespace, deletes seen by
//! watches, and stalled lists answered once released.

#[path = "support/mock_cluster.rs"]
mod mock_cluster;

use std::time::Duration;

use futures::TryStreamExt as _;
use http_body_util::BodyExt as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, WatchEvent, WatchParams};
use kube::discovery::Discovery;
use kube::{Client, ResourceExt as _};
use mock_cluster::{KINDS, MockCluster, NAMESPACES, PEER_AUTHENTICATIONS, new_object};
use serde_json::{Value, json};

async fn client(cluster: &MockCluster, dir: &std::path::Path) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(cluster.kubeconfig(dir)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

fn namespace(name: &str, team: &str) -> Value {
    let mut namespace = new_object(NAMESPACES, None, name);
    namespace["metadata"]["labels"] = json!({"team": team});
    namespace
}

fn peer_authentication(namespace: &str, name: &str) -> Value {
    let mut policy = new_object(PEER_AUTHENTICATIONS, Some(namespace), name);
    policy["spec"] = json!({"mtls": {"mode": "STRICT"}});
    policy
}

fn names<K: kube::Resource>(objects: &[K]) -> Vec<String> {
    objects
        .iter()
        .map(|o| o.meta().name.clone().unwrap())
        .collect()
}

/// A GET as kube sends it, answered as it came: status and JSON body.
async fn get(client: &Client, uri: &str) -> (u16, Value) {
    let request = hyper::Request::get(uri)
        .body(kube::client::Body::from(Vec::new()))
        .unwrap();
    let response = client.send(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn discovery_finds_every_kind_served() {
    let (cluster, _) = MockCluster::serve_http(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let discovery = Discovery::new(client(&cluster, dir.path()).await)
        .run()
        .await
        .expect("discovery of /api, /apis and every group version");
    for kind in KINDS {
        let (group, version) = kind.api_version.rsplit_once('/').unwrap_or(("", "v1"));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind.kind);
        let (resource, capabilities) = discovery
            .resolve_gvk(&gvk)
            .unwrap_or_else(|| panic!("{gvk:?} not discovered"));
        assert_eq!(resource.plural, kind.resource());
        let scope = match kind.namespaced {
            true => kube::discovery::Scope::Namespaced,
            false => kube::discovery::Scope::Cluster,
        };
        assert_eq!(capabilities.scope, scope, "{gvk:?}");
    }
    let missing = kube::api::GroupVersionKind::gvk("networking.istio.io", "v1beta1", "Gateway");
    assert!(discovery.resolve_gvk(&missing).is_none());
}

/// Pages read the collection as it was at the first page's resourceVersion, whatever changes
/// meanwhile; the count of what remains is given without a selector only.
#[tokio::test]
async fn pages_read_one_resource_version() {
    let objects = (0..7)
        .map(|i| namespace(&format!("ns-{i}"), if i % 2 == 0 { "even" } else { "odd" }))
        .collect();
    let (cluster, _) = MockCluster::serve_http(objects).await;
    let dir = tempfile::tempdir().unwrap();
    let api: Api<Namespace> = Api::all(client(&cluster, dir.path()).await);

    let first = api.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(names(&first.items), ["ns-0", "ns-1", "ns-2"]);
    assert_eq!(first.metadata.remaining_item_count, Some(4));
    let version = first.metadata.resource_version.clone().unwrap();
    // Changes after the first page: the rest of the list does not see them.
    cluster.put(namespace("ns-3", "changed"));
    cluster.delete(&namespace("ns-4", "even"));
    cluster.put(namespace("ns-10", "new"));

    let mut listed = names(&first.items);
    let mut token = first.metadata.continue_.clone().unwrap();
    loop {
        let page = api
            .list(&ListParams::default().limit(3).continue_token(&token))
            .await
            .unwrap();
        assert_eq!(page.metadata.resource_version.as_deref(), Some(&*version));
        for object in &page.items {
            if object.name_any() == "ns-3" {
                assert_eq!(object.labels()["team"], "odd", "ns-3 as it was");
            }
        }
        listed.extend(names(&page.items));
        match page.metadata.continue_.clone().filter(|t| !t.is_empty()) {
            Some(next) => token = next,
            None => break,
        }
    }
    let expected: Vec<String> = (0..7).map(|i| format!("ns-{i}")).collect();
    assert_eq!(listed, expected);

    let now = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        names(&now.items),
        ["ns-0", "ns-1", "ns-10", "ns-2", "ns-3", "ns-5", "ns-6"]
    );

    let odd = api
        .list(&ListParams::default().limit(2).labels("team=odd"))
        .await
        .unwrap();
    assert_eq!(names(&odd.items), ["ns-1", "ns-5"]);
    assert!(odd.metadata.continue_.is_some(), "keys remain after ns-5");
    assert_eq!(odd.metadata.remaining_item_count, None);
}

/// A continue token older than a compaction: 410 `Expired` with a token for the rest at the
/// latest resourceVersion; a token that does not read: 400.
#[tokio::test]
async fn a_compacted_continue_is_410_with_a_token_for_the_rest() {
    let objects = (0..4).map(|i| namespace(&format!("ns-{i}"), "t")).collect();
    let (cluster, _) = MockCluster::serve_http(objects).await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(&cluster, dir.path()).await;
    let (status, first) = get(&client, &format!("{NAMESPACES}?limit=2")).await;
    assert_eq!(status, 200);
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    cluster.expire_watches();

    let (status, expired) = get(&client, &format!("{NAMESPACES}?limit=2&continue={token}")).await;
    assert_eq!(status, 410, "{expired}");
    assert_eq!(
        (&expired["kind"], &expired["reason"], &expired["code"]),
        (&json!("Status"), &json!("Expired"), &json!(410))
    );
    let rest = expired["metadata"]["continue"].as_str().unwrap();
    let (status, rest) = get(&client, &format!("{NAMESPACES}?limit=2&continue={rest}")).await;
    assert_eq!(status, 200, "{rest}");
    let rest: Vec<&str> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(rest, ["ns-2", "ns-3"]);

    let (status, invalid) = get(&client, &format!("{NAMESPACES}?limit=2&continue=x")).await;
    assert_eq!((status, &invalid["reason"]), (400, &json!("BadRequest")));
}

/// Lists and watches in one namespace see only it; a delete by the test reaches the watch as
/// `DELETED`.
#[tokio::test]
async fn a_namespace_scoped_watch_sees_the_delete() {
    let objects = vec![
        peer_authentication("mail", "default"),
        peer_authentication("mail", "mox"),
        peer_authentication("web", "default"),
    ];
    let (cluster, _) = MockCluster::serve_http(objects).await;
    let dir = tempfile::tempdir().unwrap();
    let resource = ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("security.istio.io", "v1", "PeerAuthentication"),
        "peerauthentications",
    );
    let api: Api<DynamicObject> =
        Api::namespaced_with(client(&cluster, dir.path()).await, "mail", &resource);
    let listed = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&listed.items), ["default", "mox"]);
    let version = listed.metadata.resource_version.unwrap();
    let events = api.watch(&WatchParams::default(), &version).await.unwrap();
    let mut events = std::pin::pin!(events);

    cluster.put(peer_authentication("web", "other"));
    cluster.delete(&peer_authentication("mail", "mox"));
    let event = tokio::time::timeout(Duration::from_secs(10), events.try_next())
        .await
        .expect("an event within 10s")
        .unwrap()
        .unwrap();
    match event {
        WatchEvent::Deleted(object) => {
            assert_eq!(
                (object.name_any(), object.namespace()),
                ("mox".into(), Some("mail".into()))
            )
        }
        other => panic!("not the delete in mail: {other:?}"),
    }
}

/// A stalled list is answered once released, with what is stored then.
#[tokio::test]
async fn a_stalled_list_is_answered_once_released() {
    let (cluster, _) = MockCluster::serve_http(vec![namespace("mail", "t")]).await;
    cluster.stall_lists(NAMESPACES);
    let dir = tempfile::tempdir().unwrap();
    let api: Api<Namespace> = Api::all(client(&cluster, dir.path()).await);
    let list = tokio::spawn(async move { api.list(&ListParams::default()).await });
    cluster
        .wait_for(Duration::from_secs(10), "the list", |seen| {
            seen.iter().any(|s| s.is_list()).then_some(())
        })
        .await;
    cluster.put(namespace("web", "t"));
    assert!(!list.is_finished(), "a stalled list is not answered");
    cluster.release_lists(NAMESPACES);
    let listed = tokio::time::timeout(Duration::from_secs(10), list)
        .await
        .expect("answered within 10s of the release")
        .unwrap()
        .unwrap();
    assert_eq!(names(&listed.items), ["mail", "web"]);
    let lists = cluster.seen().iter().filter(|s| s.is_list()).count();
    assert_eq!(lists, 1, "one list request, answered late");
}
