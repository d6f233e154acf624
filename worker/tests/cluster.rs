//! The cluster module against an in-process kube-sim: namespaces, Helm's
//! release records, rollout waiting with watches (and its diagnoses), and an API server that
//! is not there. Every await is bounded, so a regression fails instead of hanging.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use kube_sim::{Config, FaultConfig, KubeSim};
use serde_json::json;
use worker::cluster::{Cluster, ClusterError, RolloutFailure, StallCause};

/// Bound for any single step; they take milliseconds here.
const STEP: Duration = Duration::from_secs(30);

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {STEP:?}"))
}

async fn start(config: Config) -> (KubeSim, Cluster) {
    let sim = KubeSim::start(config).await.expect("start kube-sim");
    let cluster = bounded(
        "connect",
        Cluster::connect(Some(sim.kubeconfig_path()), None),
    )
    .await
    .expect("connect");
    (sim, cluster)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn writes(sim: &KubeSim) -> Vec<String> {
    sim.audit()
        .into_iter()
        .filter(|e| e.is_write())
        .map(|e| format!("{} {}", e.verb, e.path))
        .collect()
}

/// `ensure_namespace` deciding as the worker does for a namespace it owns: add the `wanted`
/// labels that are absent or different, refuse nothing.
trait EnsureLabels {
    async fn ensure_labels(
        &self,
        name: &str,
        wanted: &BTreeMap<String, String>,
    ) -> Result<(), worker::cluster::ClusterError>;
}

impl EnsureLabels for Cluster {
    async fn ensure_labels(
        &self,
        name: &str,
        wanted: &BTreeMap<String, String>,
    ) -> Result<(), worker::cluster::ClusterError> {
        let decided = self
            .ensure_namespace(name, |existing| {
                let mut add = wanted.clone();
                if let Some(existing) = existing {
                    add.retain(|key, value| existing.get(key) != Some(value));
                }
                Ok::<_, std::convert::Infallible>(add)
            })
            .await?;
        match decided {
            Ok(()) => Ok(()),
            Err(never) => match never {},
        }
    }
}

async fn create_namespace(cluster: &Cluster, name: &str) {
    bounded(
        "ensure namespace",
        cluster.ensure_labels(name, &BTreeMap::new()),
    )
    .await
    .expect("namespace");
}

fn deployment(name: &str, image: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": image}]}
            }
        }
    }))
    .expect("deployment")
}

async fn create_deployment(cluster: &Cluster, ns: &str, d: &Deployment) {
    let api: Api<Deployment> = Api::namespaced(cluster.client(), ns);
    bounded("create deployment", api.create(&PostParams::default(), d))
        .await
        .expect("create deployment");
}

#[tokio::test]
async fn connect_uses_the_given_kubeconfig_and_context() {
    let sim = KubeSim::start(Config::default()).await.unwrap();
    let cluster = bounded(
        "connect",
        Cluster::connect(Some(sim.kubeconfig_path()), Some("kube-sim")),
    )
    .await
    .expect("connect with the kubeconfig's own context");
    assert!(
        bounded("release", cluster.release_revisions("default", "missing"))
            .await
            .unwrap()
            .is_empty()
    );

    let err = bounded(
        "connect",
        Cluster::connect(Some(sim.kubeconfig_path()), Some("no-such-context")),
    )
    .await
    .expect_err("unknown context");
    assert!(matches!(err, ClusterError::Config(_)), "{err:?}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("no-such-context"), "{err}");

    let err = bounded(
        "connect",
        Cluster::connect(Some(Path::new("/nonexistent/kubeconfig")), None),
    )
    .await
    .expect_err("missing kubeconfig");
    assert!(matches!(err, ClusterError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/kubeconfig"), "{err}");
    sim.shutdown().await;
}

#[tokio::test]
async fn namespace_is_created_labelled_and_then_left_alone() {
    let (sim, cluster) = start(Config::default()).await;
    let api: Api<Namespace> = Api::all(cluster.client());
    let wanted = labels(&[("keptn.sh/managed-by", "helm-service")]);

    bounded("create", cluster.ensure_labels("shop-dev", &wanted))
        .await
        .expect("create namespace");
    let ns = bounded("get", api.get("shop-dev")).await.unwrap();
    assert_eq!(
        ns.metadata.labels.as_ref().unwrap()["keptn.sh/managed-by"],
        "helm-service"
    );

    // Someone else labels it; we add ours with a merge patch and keep theirs.
    bounded(
        "foreign label",
        api.patch(
            "shop-dev",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "blue"}}})),
        ),
    )
    .await
    .unwrap();
    let more = labels(&[
        ("keptn.sh/managed-by", "helm-service"),
        ("istio-injection", "enabled"),
    ]);
    sim.clear_audit();
    bounded("label", cluster.ensure_labels("shop-dev", &more))
        .await
        .expect("label namespace");
    let w = writes(&sim);
    assert_eq!(w, vec!["patch /api/v1/namespaces/shop-dev"], "{w:?}");
    let got = bounded("get", api.get("shop-dev"))
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap();
    assert_eq!(got["team"], "blue");
    assert_eq!(got["istio-injection"], "enabled");
    assert_eq!(got["keptn.sh/managed-by"], "helm-service");

    // Nothing to change: one read, no write.
    sim.clear_audit();
    bounded("again", cluster.ensure_labels("shop-dev", &more))
        .await
        .expect("idempotent");
    assert_eq!(writes(&sim), Vec::<String>::new());
    assert_eq!(sim.audit().len(), 1, "{:?}", sim.audit());

    // Two replicas racing to create the same namespace both succeed.
    let (a, b) = bounded("race", async {
        tokio::join!(
            cluster.ensure_labels("shop-prod", &more),
            cluster.ensure_labels("shop-prod", &more)
        )
    })
    .await;
    a.expect("first of the race");
    b.expect("second of the race");
    let got = bounded("get", api.get("shop-prod")).await.unwrap();
    assert_eq!(got.metadata.labels.unwrap()["istio-injection"], "enabled");
    sim.shutdown().await;
}

/// A Secret as Helm's storage driver writes it (the body is irrelevant to us).
fn helm_secret(release: &str, version: u32, status: &str) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "helm.sh/release.v1",
        "metadata": {
            "name": format!("sh.helm.release.v1.{release}.v{version}"),
            "labels": {
                "owner": "helm",
                "name": release,
                "status": status,
                "version": version.to_string(),
            }
        },
        "data": {"release": "SDRzSUFBQUFBQUFBLzZ1dUJRQ1EyZGdWQWdBQUFBPT0="}
    }))
    .unwrap()
}

#[tokio::test]
async fn helm_storage_reads_the_latest_revision_with_one_list() {
    let (sim, cluster) = start(Config::default()).await;
    create_namespace(&cluster, "shop-dev").await;
    let api: Api<Secret> = Api::namespaced(cluster.client(), "shop-dev");
    for s in [
        helm_secret("shop-dev-carts", 1, "superseded"),
        helm_secret("shop-dev-carts", 2, "superseded"),
        // 10 sorts before 2 as text: the revision must be compared as a number.
        helm_secret("shop-dev-carts", 10, "deployed"),
        helm_secret("shop-dev-carts-generated", 11, "failed"),
        helm_secret("other", 12, "pending-upgrade"),
    ] {
        bounded("create secret", api.create(&PostParams::default(), &s))
            .await
            .unwrap();
    }

    sim.clear_audit();
    let latest = bounded(
        "latest",
        cluster.release_revisions("shop-dev", "shop-dev-carts"),
    )
    .await
    .unwrap()
    .pop()
    .expect("release exists");
    assert_eq!(latest.revision, 10);
    assert_eq!(latest.status, "deployed");
    assert!(latest.is_deployed());
    let audit = sim.audit();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].verb, "list");
    assert_eq!(audit[0].resource, "secrets");
    assert!(
        audit[0]
            .query
            .contains("labelSelector=owner%3Dhelm%2Cname%3Dshop-dev-carts"),
        "{audit:?}"
    );

    let all = bounded(
        "all",
        cluster.release_revisions("shop-dev", "shop-dev-carts"),
    )
    .await
    .unwrap();
    assert_eq!(
        all.iter().map(|r| r.revision).collect::<Vec<_>>(),
        vec![1, 2, 10]
    );
    let generated = bounded(
        "generated",
        cluster.release_revisions("shop-dev", "shop-dev-carts-generated"),
    )
    .await
    .unwrap()
    .pop()
    .unwrap();
    assert_eq!(
        (generated.revision, generated.status.as_str()),
        (11, "failed")
    );
    assert_eq!(
        bounded(
            "absent",
            cluster.release_revisions("shop-dev", "never-installed")
        )
        .await
        .unwrap()
        .pop(),
        None
    );
    assert_eq!(
        bounded(
            "absent namespace",
            cluster.release_revisions("nowhere", "shop-dev-carts")
        )
        .await
        .unwrap()
        .pop(),
        None
    );
    sim.shutdown().await;
}

/// When kube-sim stored the last of `expected` pods in `ns` as Running (each pod's first such
/// write after store revision `since`). Panics if fewer pods than that ever ran.
fn pods_ready_at(sim: &KubeSim, ns: &str, since: u64, expected: usize) -> Instant {
    let pods = kube_sim::resources::find("", "v1", "pods").expect("pods");
    let mut ready: BTreeMap<String, Instant> = BTreeMap::new();
    for (at, pod) in sim
        .store()
        .writes_since(pods, Some(ns), since)
        .expect("history kept")
    {
        if pod["status"]["phase"] == "Running" {
            let name = pod["metadata"]["name"].as_str().unwrap_or_default();
            ready.entry(name.to_string()).or_insert(at);
        }
    }
    assert_eq!(
        ready.len(),
        expected,
        "not every pod had turned ready when the wait returned: {ready:?}"
    );
    ready.into_values().max().expect("at least one pod")
}

#[tokio::test]
async fn rollout_finishes_shortly_after_the_pods_turn_ready() {
    let delay = Duration::from_millis(800);
    let (sim, cluster) = start(Config {
        rollout_delay: delay,
        ..Config::default()
    })
    .await;
    create_namespace(&cluster, "shop-dev").await;
    let names = vec!["carts".to_string(), "carts-db".to_string()];
    // The clock starts before the Deployments exist: their pods are made after it, so none
    // can be ready before `started + delay`, however late this task runs.
    let since = sim.store().revision();
    let started = Instant::now();
    create_deployment(&cluster, "shop-dev", &deployment("carts", "carts:1", 2)).await;
    create_deployment(&cluster, "shop-dev", &deployment("carts-db", "mongo:7", 1)).await;
    let ready = bounded("ready?", cluster.deployments_ready("shop-dev", &names))
        .await
        .unwrap();
    assert!(
        !ready || started.elapsed() >= delay,
        "pods cannot be ready before the rollout delay: ready after {:?}",
        started.elapsed()
    );

    sim.clear_audit();
    bounded(
        "wait",
        cluster.wait_for_rollout("shop-dev", &names, Duration::from_secs(20)),
    )
    .await
    .expect("rolled out");
    let returned = Instant::now();
    let elapsed = returned - started;
    assert!(
        elapsed >= delay,
        "finished before the pods could be ready: {elapsed:?}"
    );
    // Measured from when kube-sim stored the last pod as ready, not from the creation: on a
    // busy machine the controller's timer may fire late, and that is not the wait's doing.
    let pods_ready = pods_ready_at(&sim, "shop-dev", since, 3);
    assert!(
        returned >= pods_ready,
        "finished {:?} before the last pod was ready",
        pods_ready - returned
    );
    let after_ready = returned - pods_ready;
    eprintln!(
        "rolled out {elapsed:?} after the Deployments were created, {after_ready:?} after the \
         last pod turned ready (pods ready {delay:?} after they start)"
    );
    assert!(
        after_ready < Duration::from_secs(3),
        "a watch should notice the rollout right away, took {after_ready:?} after the pods \
         turned ready"
    );
    // Watches, not polling: one list and one watch per Deployment, no repeated GETs.
    let audit = sim.audit();
    let on_deployments: Vec<_> = audit
        .iter()
        .filter(|e| e.resource == "deployments")
        .map(|e| e.verb.as_str())
        .collect();
    assert_eq!(
        on_deployments.iter().filter(|v| **v == "watch").count(),
        2,
        "{on_deployments:?}"
    );
    assert!(
        on_deployments.iter().all(|v| *v == "list" || *v == "watch"),
        "{on_deployments:?}"
    );
    assert!(on_deployments.len() <= 4, "{on_deployments:?}");

    assert!(
        bounded("ready", cluster.deployments_ready("shop-dev", &names))
            .await
            .unwrap()
    );
    assert!(!bounded(
        "missing is not ready",
        cluster.deployments_ready("shop-dev", &["carts".into(), "nope".into()])
    )
    .await
    .unwrap());
    // Already rolled out: the wait returns on what it lists, without waiting for a change
    // (there is none to come, so that would last until the 20 s deadline). The bound leaves
    // room for a busy machine; it is not a performance claim.
    let again = Instant::now();
    bounded(
        "wait again",
        cluster.wait_for_rollout("shop-dev", &names, Duration::from_secs(20)),
    )
    .await
    .expect("still rolled out");
    assert!(
        again.elapsed() < Duration::from_secs(5),
        "{:?}",
        again.elapsed()
    );
    assert!(bounded(
        "nothing",
        cluster.wait_for_rollout("shop-dev", &[], Duration::ZERO)
    )
    .await
    .is_ok());
    sim.shutdown().await;
}

#[tokio::test]
async fn rollout_waits_for_a_new_generation_after_an_upgrade() {
    let delay = Duration::from_millis(300);
    let (sim, cluster) = start(Config {
        rollout_delay: delay,
        ..Config::default()
    })
    .await;
    create_namespace(&cluster, "shop-dev").await;
    let names = vec!["carts".to_string()];
    create_deployment(&cluster, "shop-dev", &deployment("carts", "carts:1", 1)).await;
    bounded(
        "first rollout",
        cluster.wait_for_rollout("shop-dev", &names, Duration::from_secs(20)),
    )
    .await
    .unwrap();

    // A new image: the old pods are ready, the new ones are not yet. The clock starts before
    // the patch: the new pods are made after it, so they cannot be ready before `delay` has
    // passed on it, however late this task gets to run after the patch.
    let api: Api<Deployment> = Api::namespaced(cluster.client(), "shop-dev");
    let started = Instant::now();
    bounded(
        "upgrade",
        api.patch(
            "carts",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "carts", "image": "carts:2"}
            ]}}}})),
        ),
    )
    .await
    .unwrap();
    bounded(
        "second rollout",
        cluster.wait_for_rollout("shop-dev", &names, Duration::from_secs(20)),
    )
    .await
    .unwrap();
    assert!(
        started.elapsed() >= delay,
        "returned before the new pods could be ready: {:?}",
        started.elapsed()
    );
    let d = bounded("get", api.get("carts")).await.unwrap();
    let status = d.status.unwrap();
    assert_eq!(status.observed_generation, d.metadata.generation);
    assert_eq!(status.updated_replicas, Some(1));
    sim.shutdown().await;
}

fn never_ready() -> Config {
    Config {
        rollout_delay: Duration::from_millis(100),
        never_ready_images: vec!["broken".into()],
        ..Config::default()
    }
}

#[tokio::test]
async fn never_ready_image_fails_fast_on_the_progress_deadline() {
    let (sim, cluster) = start(never_ready()).await;
    create_namespace(&cluster, "shop-dev").await;
    let mut d = deployment("carts", "registry.example/carts:broken", 2);
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(1);
    create_deployment(&cluster, "shop-dev", &d).await;
    create_deployment(&cluster, "shop-dev", &deployment("front", "front:1", 1)).await;

    let started = Instant::now();
    let deadline = Duration::from_secs(60);
    let err = bounded(
        "wait",
        cluster.wait_for_rollout("shop-dev", &["front".into(), "carts".into()], deadline),
    )
    .await
    .expect_err("the rollout cannot succeed");
    let elapsed = started.elapsed();
    eprintln!("failed after {elapsed:?} (progressDeadlineSeconds 1, deadline {deadline:?}): {err}");
    assert!(
        elapsed < Duration::from_secs(10),
        "should fail on ProgressDeadlineExceeded, not at the {deadline:?} deadline: {elapsed:?}"
    );
    assert!(!err.is_transient());
    let diagnoses = err.diagnoses();
    assert_eq!(diagnoses.len(), 1, "{err}");
    assert_eq!(diagnoses[0].name, "carts");
    assert_eq!(
        diagnoses[0].cause,
        StallCause::ProgressDeadlineExceeded {
            progress_deadline_seconds: Some(1)
        }
    );
    assert_eq!(diagnoses[0].pods.len(), 2, "{err}");
    let message = err.to_string();
    for part in [
        "Deployment carts in shop-dev exceeded its progress deadline (1s)",
        "Progressing=False (ProgressDeadlineExceeded: ReplicaSet \"carts-",
        "0 of 2 updated replicas are available",
        "pod carts-",
        "container carts waiting: ImagePullBackOff: Back-off pulling image \"registry.example/carts:broken\"",
    ] {
        assert!(message.contains(part), "{part:?} missing in: {message}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn rollout_fails_at_the_deadline_with_a_diagnosis() {
    let (sim, cluster) = start(never_ready()).await;
    create_namespace(&cluster, "shop-dev").await;
    // The default progress deadline (600 s) is far away: only our deadline ends the wait.
    create_deployment(
        &cluster,
        "shop-dev",
        &deployment("carts", "carts:broken", 1),
    )
    .await;
    let deadline = Duration::from_millis(1500);
    let started = Instant::now();
    let err = bounded(
        "wait",
        cluster.wait_for_rollout("shop-dev", &["carts".into(), "ghost".into()], deadline),
    )
    .await
    .expect_err("not ready in time");
    let elapsed = started.elapsed();
    eprintln!("failed after {elapsed:?} (deadline {deadline:?}): {err}");
    assert!(elapsed >= deadline, "{elapsed:?}");
    assert!(elapsed < deadline + Duration::from_secs(3), "{elapsed:?}");
    let RolloutFailure::NotRolledOut(diagnoses) = &err else {
        panic!("expected a rollout diagnosis, got {err:?}");
    };
    assert_eq!(diagnoses.len(), 2, "{err}");
    let message = err.to_string();
    for part in [
        "Deployment carts in shop-dev did not become ready within 1.5s",
        "0 of 1 updated replicas are available",
        "Progressing=True (ReplicaSetUpdated",
        "container carts waiting: ImagePullBackOff",
        "Deployment ghost in shop-dev did not become ready within 1.5s: the Deployment does not exist",
    ] {
        assert!(message.contains(part), "{part:?} missing in: {message}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn unschedulable_pod_is_part_of_the_diagnosis() {
    // kube-sim has no scheduler: the pod is made by hand with the status a scheduler gives
    // a pod that fits no node.
    let (sim, cluster) = start(Config {
        rollout_delay: Duration::from_secs(3600),
        ..Config::default()
    })
    .await;
    create_namespace(&cluster, "shop-dev").await;
    create_deployment(&cluster, "shop-dev", &deployment("carts", "carts:1", 1)).await;
    // What the scheduler writes for a pod no node can take. kube-sim serves no `pods/status`
    // (nothing but its own controller writes pod status), so the pod goes into its store.
    let pods = kube_sim::resources::find("", "v1", "pods").expect("pods");
    sim.store()
        .create(
            pods,
            "shop-dev",
            json!({
                "metadata": {"name": "carts-big", "labels": {"app": "carts"}},
                "spec": {"containers": [{"name": "carts", "image": "carts:1"}]},
                "status": {"phase": "Pending", "conditions": [{
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient cpu."
                }]}
            }),
        )
        .expect("create pod");

    let err = bounded(
        "wait",
        cluster.wait_for_rollout("shop-dev", &["carts".into()], Duration::from_millis(500)),
    )
    .await
    .expect_err("not ready");
    let message = err.to_string();
    assert!(
        message.contains(
            "pod carts-big: not scheduled: Unschedulable: 0/3 nodes are available: 3 Insufficient cpu."
        ),
        "{message}"
    );
    assert!(
        message.contains("container carts waiting: ContainerCreating"),
        "{message}"
    );
    sim.shutdown().await;
}

/// A kubeconfig pointing at `url`, in a temp dir kept alive by the caller.
fn kubeconfig_for(url: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig.json");
    kube_sim::kubeconfig::write(&path, url, &[]).unwrap();
    (dir, path)
}

#[tokio::test]
async fn unreachable_api_is_a_transient_cluster_error() {
    // A port nobody listens on: connections are refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (_dir, path) = kubeconfig_for(&format!("http://127.0.0.1:{port}"));
    let cluster = bounded("connect", Cluster::connect(Some(&path), None))
        .await
        .expect("connect makes no request");

    let err = bounded("ns", cluster.ensure_labels("a", &BTreeMap::new()))
        .await
        .expect_err("refused");
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("get Namespace a"), "{err}");
    let err = bounded("helm", cluster.release_revisions("a", "b"))
        .await
        .expect_err("refused");
    assert!(err.is_transient(), "{err:?}");
    let err = bounded("ready", cluster.deployments_ready("a", &["b".into()]))
        .await
        .expect_err("refused");
    assert!(err.is_transient(), "{err:?}");

    let started = Instant::now();
    let err = bounded(
        "wait",
        cluster.wait_for_rollout("a", &["b".into()], Duration::from_secs(60)),
    )
    .await
    .expect_err("refused");
    assert!(
        matches!(err, RolloutFailure::Cluster(_)),
        "API trouble is not a rollout diagnosis: {err:?}"
    );
    assert!(err.is_transient(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn silent_api_times_out_instead_of_hanging() {
    // Accepts connections (the kernel does) but never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (_dir, path) = kubeconfig_for(&format!("http://{}", listener.local_addr().unwrap()));
    let cluster = bounded("connect", Cluster::connect(Some(&path), None))
        .await
        .unwrap()
        .with_request_timeout(Duration::from_millis(300));
    let err = bounded("helm", cluster.release_revisions("a", "b"))
        .await
        .expect_err("no answer");
    assert!(matches!(err, ClusterError::Timeout { .. }), "{err:?}");
    assert!(err.is_transient());

    let started = Instant::now();
    let err = bounded(
        "wait",
        cluster.wait_for_rollout("a", &["b".into()], Duration::from_millis(800)),
    )
    .await
    .expect_err("no answer");
    assert!(
        matches!(err, RolloutFailure::Cluster(ClusterError::Timeout { .. })),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(listener);
}

#[tokio::test]
async fn server_errors_are_transient_and_client_errors_are_not() {
    let (sim, cluster) = start(Config::default()).await;
    sim.faults().set(FaultConfig {
        error_rate: 1.0,
        ..FaultConfig::default()
    });
    let err = bounded("ns", cluster.ensure_labels("a", &BTreeMap::new()))
        .await
        .expect_err("injected 5xx");
    assert!(err.is_transient(), "{err:?}");
    assert!(matches!(err.status_code(), Some(500 | 503)), "{err:?}");
    sim.faults().set(FaultConfig::default());

    // An invalid name is the caller's fault: 422 from the server, not worth retrying.
    let err = bounded("ns", cluster.ensure_labels("Not_A_Name", &BTreeMap::new()))
        .await
        .expect_err("invalid name");
    assert!(!err.is_transient(), "{err:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_pod_that_cannot_start_fails_the_wait_after_fail_fast_after() {
    use worker::cluster::readiness::Awaited;
    use worker::cluster::WaitLimits;
    let (sim, cluster) = start(never_ready()).await;
    create_namespace(&cluster, "shop-dev").await;
    // The default progress deadline (600 s) and the wait's deadline are far away.
    create_deployment(
        &cluster,
        "shop-dev",
        &deployment("carts", "carts:broken", 1),
    )
    .await;
    let after = Duration::from_secs(1);
    let started = Instant::now();
    let err = bounded(
        "wait",
        cluster.wait_until_ready(
            "shop-dev",
            &[Awaited::deployment("carts")],
            WaitLimits {
                deadline: Duration::from_secs(60),
                fail_fast_after: Some(after),
            },
        ),
    )
    .await
    .expect_err("the pod cannot start");
    let elapsed = started.elapsed();
    eprintln!("failed after {elapsed:?}: {err}");
    assert!(elapsed >= after, "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    assert!(!err.is_transient());
    assert!(
        matches!(err.diagnoses()[0].cause, StallCause::PodStuck { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    for part in [
        "Deployment carts in shop-dev cannot start its pods: pod carts-",
        "has been container carts ImagePullBackOff for 1s (--fail-fast-after)",
        "0 of 1 updated replicas are available",
    ] {
        assert!(message.contains(part), "{part:?} missing in: {message}");
    }
    // Off: only the deadline ends the wait.
    let started = Instant::now();
    let err = bounded(
        "wait",
        cluster.wait_until_ready(
            "shop-dev",
            &[Awaited::deployment("carts")],
            WaitLimits {
                deadline: Duration::from_secs(2),
                fail_fast_after: None,
            },
        ),
    )
    .await
    .expect_err("not ready");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(
        matches!(err.diagnoses()[0].cause, StallCause::NotReadyWithin(_)),
        "{err:?}"
    );
    sim.shutdown().await;
}
