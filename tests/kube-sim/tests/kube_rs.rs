//! kube-rs (the Rust client the project's services use) against an in-process kube-sim:
//! typed CRUD, server-side apply, the runtime watcher, dynamic objects of a CRD-like group,
//! and waiting for the Deployment controller through `await_condition`.

use std::future::Future;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PartialObjectMeta,
    Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{wait, watcher, WatchStreamExt};
use kube::Client;
use kube_sim::{Config, KubeSim};
use serde_json::json;

/// Bound for any single step; they take milliseconds here.
const STEP: Duration = Duration::from_secs(30);

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {STEP:?}"))
}

async fn start(config: Config) -> (KubeSim, Client) {
    let sim = KubeSim::start(config).await.expect("start kube-sim");
    let client = client_from_url(&sim);
    (sim, client)
}

/// A client built from the server URL alone (the default namespace is `default`).
fn client_from_url(sim: &KubeSim) -> Client {
    let config = kube::Config::new(sim.url().parse().expect("url"));
    Client::try_from(config).expect("client")
}

fn deployment(name: &str, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}]}
            }
        }
    }))
    .expect("deployment")
}

fn image_of(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap()
}

#[tokio::test]
async fn client_from_kubeconfig_reads_version_and_namespace() {
    let sim = KubeSim::start(Config::default()).await.unwrap();
    let kubeconfig = Kubeconfig::read_from(sim.kubeconfig_path()).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config from kubeconfig");
    assert_eq!(config.default_namespace, "default");
    assert_eq!(
        config.cluster_url.to_string().trim_end_matches('/'),
        sim.url()
    );
    let client = Client::try_from(config).unwrap();
    let version = bounded("apiserver_version", client.apiserver_version())
        .await
        .expect("GET /version");
    assert!(!version.git_version.is_empty(), "{version:?}");
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let list = bounded("list", api.list(&ListParams::default()))
        .await
        .expect("list configmaps");
    assert!(list.metadata.resource_version.is_some());
    sim.shutdown().await;
}

#[tokio::test]
async fn typed_deployment_crud() {
    let (sim, client) = start(Config::default()).await;
    let api: Api<Deployment> = Api::namespaced(client, "default");

    let created = bounded(
        "create",
        api.create(&PostParams::default(), &deployment("web", "nginx:1.25")),
    )
    .await
    .expect("create");
    let uid = created.metadata.uid.clone().expect("uid assigned");
    assert!(created.metadata.resource_version.is_some());

    // Creating it again is a 409 AlreadyExists that kube-rs decodes as a Status.
    let err = bounded(
        "create again",
        api.create(&PostParams::default(), &deployment("web", "nginx:1.25")),
    )
    .await
    .expect_err("duplicate create");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409, "{s:?}");
            assert_eq!(s.reason, "AlreadyExists", "{s:?}");
        }
        other => panic!("expected an API error, got {other:?}"),
    }

    // The controller writes the status until the rollout completes (on its own thread, as on
    // a cluster); a read-modify-write that raced it would rightly conflict.
    bounded(
        "rollout",
        wait::await_condition(
            api.clone(),
            "web",
            wait::conditions::is_deployment_completed(),
        ),
    )
    .await
    .expect("rollout");
    let got = bounded("get", api.get("web")).await.expect("get");
    assert_eq!(got.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(image_of(&got), "nginx:1.25");

    let list = bounded("list", api.list(&ListParams::default().labels("app=web")))
        .await
        .expect("list");
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].metadata.name.as_deref(), Some("web"));

    // Replace with the resourceVersion we read: accepted; again with the stale one: 409.
    let mut changed = got.clone();
    changed
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .image = Some("nginx:1.26".into());
    let replaced = bounded(
        "replace",
        api.replace("web", &PostParams::default(), &changed),
    )
    .await
    .expect("replace");
    assert_eq!(image_of(&replaced), "nginx:1.26");
    assert_ne!(
        replaced.metadata.resource_version,
        got.metadata.resource_version
    );
    let err = bounded(
        "stale replace",
        api.replace("web", &PostParams::default(), &changed),
    )
    .await
    .expect_err("stale resourceVersion");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );

    bounded("delete", api.delete("web", &DeleteParams::default()))
        .await
        .expect("delete");
    let err = bounded("get deleted", api.get("web"))
        .await
        .expect_err("gone");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"),
        "{err:?}"
    );
    assert!(bounded("get_opt", api.get_opt("web"))
        .await
        .unwrap()
        .is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn server_side_apply_creates_then_updates_with_field_manager() {
    let (sim, client) = start(Config::default()).await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    let params = PatchParams::apply("test").force();

    let first = bounded(
        "apply create",
        api.patch(
            "applied",
            &params,
            &Patch::Apply(deployment("applied", "nginx:1.25")),
        ),
    )
    .await
    .expect("apply (create)");
    assert_eq!(image_of(&first), "nginx:1.25");
    let managers: Vec<_> = first
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| (m.manager.clone(), m.operation.clone()))
        .collect();
    assert!(
        managers.contains(&(Some("test".into()), Some("Apply".into()))),
        "{managers:?}"
    );

    // A partial apply (only what this manager owns) from a JSON value also works.
    let second = bounded(
        "apply update",
        api.patch(
            "applied",
            &params,
            &Patch::Apply(json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "applied", "labels": {"app": "applied"}},
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": "applied"}},
                    "template": {
                        "metadata": {"labels": {"app": "applied"}},
                        "spec": {"containers": [{"name": "main", "image": "nginx:1.27"}]}
                    }
                }
            })),
        ),
    )
    .await
    .expect("apply (update)");
    assert_eq!(image_of(&second), "nginx:1.27");
    assert_eq!(second.spec.as_ref().unwrap().replicas, Some(3));
    assert_eq!(second.metadata.uid, first.metadata.uid);

    // A merge patch from another manager, then the applier's dry run leaves the object as is.
    bounded(
        "merge patch",
        api.patch(
            "applied",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"note": "merged"}}})),
        ),
    )
    .await
    .expect("merge patch");
    let dry = bounded(
        "apply dry run",
        api.patch(
            "applied",
            &PatchParams::apply("test").force().dry_run(),
            &Patch::Apply(deployment("applied", "nginx:9")),
        ),
    )
    .await
    .expect("dry-run apply");
    assert_eq!(image_of(&dry), "nginx:9");
    let now = bounded("get", api.get("applied")).await.unwrap();
    assert_eq!(image_of(&now), "nginx:1.27");
    assert_eq!(
        now.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("note"))
            .map(String::as_str),
        Some("merged")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn runtime_watcher_sees_changes_after_start() {
    let (sim, client) = start(Config::default()).await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let cm = |value: &str| -> ConfigMap {
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "watched"},
            "data": {"k": value}
        }))
        .unwrap()
    };
    bounded("create", api.create(&PostParams::default(), &cm("before")))
        .await
        .expect("create before watch");

    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    // The initial state: Init, the existing object, InitDone.
    let mut initial = Vec::new();
    loop {
        let ev = bounded("initial events", events.try_next())
            .await
            .expect("watcher error")
            .expect("stream ended");
        match ev {
            watcher::Event::Init => {}
            watcher::Event::InitApply(o) => initial.push(o.data.unwrap_or_default()["k"].clone()),
            watcher::Event::InitDone => break,
            other => panic!("unexpected event before InitDone: {other:?}"),
        }
    }
    assert_eq!(initial, vec!["before".to_string()]);

    // A change made after the watcher has caught up arrives as Apply, then a delete as Delete.
    bounded(
        "patch",
        api.patch(
            "watched",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "after"}})),
        ),
    )
    .await
    .expect("patch");
    match bounded("apply event", events.try_next()).await {
        Ok(Some(watcher::Event::Apply(o))) => {
            assert_eq!(o.data.unwrap_or_default()["k"], "after");
        }
        other => panic!("expected Apply, got {other:?}"),
    }
    bounded("delete", api.delete("watched", &DeleteParams::default()))
        .await
        .expect("delete");
    match bounded("delete event", events.try_next()).await {
        Ok(Some(watcher::Event::Delete(o))) => {
            assert_eq!(o.metadata.name.as_deref(), Some("watched"));
        }
        other => panic!("expected Delete, got {other:?}"),
    }
    drop(events);
    sim.shutdown().await;
}

#[tokio::test]
async fn runtime_watcher_streaming_list_and_applied_objects() {
    let (sim, client) = start(Config::default()).await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    bounded(
        "create",
        api.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "s1"}})).unwrap(),
        ),
    )
    .await
    .unwrap();
    // The watch-list strategy: one `watch=true&sendInitialEvents=true` request.
    let config = watcher::Config::default().streaming_lists();
    let mut objects = watcher(api.clone(), config).applied_objects().boxed();
    let first = bounded("initial object", objects.try_next())
        .await
        .expect("watcher error")
        .expect("stream ended");
    assert_eq!(first.metadata.name.as_deref(), Some("s1"));
    bounded(
        "create s2",
        api.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "s2"}})).unwrap(),
        ),
    )
    .await
    .unwrap();
    let second = bounded("new object", objects.try_next())
        .await
        .expect("watcher error")
        .expect("stream ended");
    assert_eq!(second.metadata.name.as_deref(), Some("s2"));
    drop(objects);
    let watches: Vec<_> = sim
        .audit()
        .into_iter()
        .filter(|e| e.verb == "watch" && e.resource == "configmaps")
        .collect();
    assert!(
        watches
            .iter()
            .any(|e| e.query.contains("sendInitialEvents=true") && e.code == 200),
        "{watches:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn dynamic_virtual_service_create_get_list() {
    let (sim, client) = start(Config::default()).await;
    let gvk = GroupVersionKind::gvk("networking.istio.io", "v1beta1", "VirtualService");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "virtualservices");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let mut vs = DynamicObject::new("reviews", &ar);
    vs.data = json!({
        "spec": {
            "hosts": ["reviews"],
            "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 100}]}]
        }
    });
    let created = bounded("create", api.create(&PostParams::default(), &vs))
        .await
        .expect("create VirtualService");
    assert!(created.metadata.uid.is_some());
    let got = bounded("get", api.get("reviews")).await.expect("get");
    assert_eq!(got.types.as_ref().unwrap().kind, "VirtualService");
    assert_eq!(
        got.types.as_ref().unwrap().api_version,
        "networking.istio.io/v1beta1"
    );
    assert_eq!(got.data["spec"]["hosts"], json!(["reviews"]));
    assert_eq!(
        got.data["spec"]["http"][0]["route"][0]["weight"],
        json!(100)
    );

    // Also via discovery, the way generic controllers find the plural.
    let discovery = bounded("discovery", kube::Discovery::new(client).run())
        .await
        .expect("discovery");
    let (found, caps) = discovery
        .resolve_gvk(&gvk)
        .expect("VirtualService discovered");
    assert_eq!(found.plural, "virtualservices");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    let list = bounded("list", api.list(&ListParams::default()))
        .await
        .expect("list");
    assert_eq!(list.items.len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn deployment_status_after_controller_converges() {
    let (sim, client) = start(Config {
        rollout_delay: Duration::from_millis(50),
        ..Config::default()
    })
    .await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    bounded(
        "create",
        api.create(&PostParams::default(), &deployment("ready", "nginx:1.25")),
    )
    .await
    .expect("create");
    let done = bounded(
        "await_condition",
        wait::await_condition(
            api.clone(),
            "ready",
            wait::conditions::is_deployment_completed(),
        ),
    )
    .await
    .expect("await_condition");
    assert!(done.is_some());
    let d = bounded("get_status", api.get_status("ready"))
        .await
        .expect("get_status");
    let status = d.status.expect("status");
    assert_eq!(status.ready_replicas, Some(2), "{status:?}");
    assert_eq!(status.available_replicas, Some(2), "{status:?}");
    assert_eq!(status.updated_replicas, Some(2), "{status:?}");
    assert_eq!(status.observed_generation, d.metadata.generation);
    let audit = sim.audit();
    assert!(
        audit
            .iter()
            .any(|e| e.verb == "get" && e.subresource == "status" && e.code == 200),
        "no GET .../status in the audit log"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn metadata_only_list_get_and_watch() {
    let (sim, client) = start(Config::default()).await;
    let api: Api<Secret> = Api::default_namespaced(client);
    let secret = |name: &str| -> Secret {
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": {"owner": "helm"}},
            "data": {"release": "cGF5bG9hZA=="}
        }))
        .unwrap()
    };
    bounded("create", api.create(&PostParams::default(), &secret("a")))
        .await
        .expect("create");

    // kube-rs asks for `as=PartialObjectMetadataList`: the answer has that kind and the
    // items carry labels but no data.
    let list = bounded(
        "list_metadata",
        api.list_metadata(&ListParams::default().labels("owner=helm")),
    )
    .await
    .expect("list_metadata");
    assert_eq!(list.types.kind, "PartialObjectMetadataList");
    assert_eq!(list.types.api_version, "meta.k8s.io/v1");
    assert_eq!(list.items.len(), 1);
    let item = &list.items[0];
    assert_eq!(
        item.types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );
    assert_eq!(item.metadata.labels.as_ref().unwrap()["owner"], "helm");
    assert!(item.metadata.resource_version.is_some());

    let one = bounded("get_metadata", api.get_metadata("a"))
        .await
        .expect("get_metadata");
    assert_eq!(
        one.types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );
    assert_eq!(one.metadata.name.as_deref(), Some("a"));

    // kube 5: an `Api` of `PartialObjectMeta` watches with metadata-only requests.
    let meta_api: Api<PartialObjectMeta<Secret>> = Api::default_namespaced(client_from_url(&sim));
    let mut events = watcher(meta_api, watcher::Config::default())
        .applied_objects()
        .boxed();
    let first = bounded("initial", events.try_next())
        .await
        .expect("watcher error")
        .expect("stream ended");
    assert_eq!(
        first.types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );
    bounded("create b", api.create(&PostParams::default(), &secret("b")))
        .await
        .expect("create b");
    let second = bounded("added", events.try_next())
        .await
        .expect("watcher error")
        .expect("stream ended");
    assert_eq!(second.metadata.name.as_deref(), Some("b"));
    assert_eq!(
        second.types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );
    drop(events);

    // A plain client still gets whole objects.
    let full = bounded("get", api.get("a")).await.expect("get");
    assert!(full.data.is_some_and(|d| d.contains_key("release")));
    sim.shutdown().await;
}
