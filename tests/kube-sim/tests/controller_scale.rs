//! The controller's cost follows what changed, not how big the cluster is: a Deployment's
//! rollout (create → complete) must take about as long with hundreds of unrelated Deployments
//! and Secrets in the cluster, and a client busy writing Secrets, as in an empty cluster.
//!
//! Measured as a ratio within one test (same machine, same moment), so it holds on slow or
//! shared runners; the rollout delay makes the baseline a real rollout, not a near-zero time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_sim::resources::{self, Resource};
use kube_sim::{Config, KubeSim, Store};
use serde_json::{json, Value};

const ROLLOUT_DELAY: Duration = Duration::from_millis(300);
const UNRELATED: usize = 300;
const SAMPLES: usize = 3;
/// Generous: the loaded cluster may be slower, but not by a factor that grows with its size.
const MAX_RATIO: f64 = 3.0;

fn res(group: &str, plural: &str) -> &'static Resource {
    resources::find(group, "v1", plural).expect("in the resource table")
}

fn deployment(name: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1"}]},
            },
        },
    })
}

/// What `kubectl rollout status` waits for.
fn rolled_out(d: &Value) -> bool {
    let st = &d["status"];
    st["observedGeneration"] == d["metadata"]["generation"]
        && st["availableReplicas"] == 1
        && st["updatedReplicas"] == 1
        && st["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable")
}

fn create_namespace(store: &Store, name: &str) {
    store
        .create(
            res("", "namespaces"),
            "",
            json!({"metadata": {"name": name}}),
        )
        .unwrap();
}

/// Creates one Deployment and waits (bounded) until it has rolled out; returns the time taken.
async fn rollout(store: &Store, ns: &str, name: &str) -> Duration {
    let deploy = res("apps", "deployments");
    let mut changes = store.subscribe();
    let start = Instant::now();
    store.create(deploy, ns, deployment(name)).unwrap();
    let deadline = start + Duration::from_secs(30);
    loop {
        changes.borrow_and_update();
        if rolled_out(&store.get(deploy, ns, name).unwrap()) {
            return start.elapsed();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{ns}/{name} did not roll out within 30 s");
        let _ = tokio::time::timeout(left, changes.changed()).await;
    }
}

/// Median rollout time of fresh Deployments in `ns`, while another client keeps rewriting a
/// Secret (as helm does with its release records).
async fn median_rollout(store: &Arc<Store>, ns: &str) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let secrets = res("", "secrets");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                store
                    .upsert(secrets, "busy", "release", |_| {
                        Ok(json!({"metadata": {"name": "release"}, "data": {"n": n.to_string()}}))
                    })
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut times = Vec::new();
    for i in 0..SAMPLES {
        times.push(rollout(store, ns, &format!("probe-{i}")).await);
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    times.sort();
    times[SAMPLES / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_latency_does_not_grow_with_unrelated_objects() {
    let sim = KubeSim::start(Config {
        rollout_delay: ROLLOUT_DELAY,
        ..Config::default()
    })
    .await
    .unwrap();
    let store = sim.store().clone();
    for ns in ["busy", "empty-probe", "loaded-probe", "unrelated"] {
        create_namespace(&store, ns);
    }

    let empty = median_rollout(&store, "empty-probe").await;

    // 300 rolled-out Deployments (each with its ReplicaSet and pod) and 300 Secrets the size
    // of small Helm release records.
    let payload = "x".repeat(4096);
    for i in 0..UNRELATED {
        store
            .create(
                res("", "secrets"),
                "unrelated",
                json!({"metadata": {"name": format!("s-{i}")}, "data": {"release": payload}}),
            )
            .unwrap();
        store
            .create(
                res("apps", "deployments"),
                "unrelated",
                deployment(&format!("d-{i}")),
            )
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (items, _) = store
            .list(
                res("apps", "deployments"),
                Some("unrelated"),
                &Default::default(),
                &Default::default(),
            )
            .unwrap();
        if items.iter().all(rolled_out) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the unrelated Deployments did not roll out within 180 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let loaded = median_rollout(&store, "loaded-probe").await;
    let ratio = loaded.as_secs_f64() / empty.as_secs_f64();
    eprintln!(
        "rollout median: empty cluster {empty:?}, with {UNRELATED} Deployments + {UNRELATED} Secrets {loaded:?}, ratio {ratio:.2}"
    );
    assert!(
        ratio < MAX_RATIO,
        "rollout took {loaded:?} with {UNRELATED} unrelated Deployments and Secrets vs {empty:?} in an empty cluster (ratio {ratio:.2}, bound {MAX_RATIO})"
    );
    sim.shutdown().await;
}

/// The controller reacts to the pod written, not to a periodic full pass: a deleted pod is
/// replaced, and a pod written with a dangling ReplicaSet reference is collected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_writes_are_reconciled() {
    let sim = KubeSim::start(Config {
        rollout_delay: Duration::from_millis(50),
        ..Config::default()
    })
    .await
    .unwrap();
    let store = sim.store().clone();
    create_namespace(&store, "demo");
    rollout(&store, "demo", "web").await;
    let pods = res("", "pods");
    let list = |store: &Store| {
        store
            .list(pods, Some("demo"), &Default::default(), &Default::default())
            .unwrap()
            .0
    };
    let before = list(&store);
    assert_eq!(before.len(), 1);
    let first = before[0]["metadata"]["name"].as_str().unwrap().to_string();
    let owner = before[0]["metadata"]["ownerReferences"].clone();
    store
        .delete(pods, "demo", &first, &Default::default())
        .unwrap();
    let mut dangling = owner.clone();
    dangling[0]["uid"] = json!("00000000-0000-0000-0000-000000000000");
    store
        .create(
            pods,
            "demo",
            json!({
                "metadata": {"name": "stray", "ownerReferences": dangling},
                "spec": {"containers": [{"name": "app", "image": "nginx:1"}]},
            }),
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now: Vec<Value> = list(&store);
        let names: Vec<&str> = now
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap())
            .collect();
        let replaced = names.len() == 1 && names[0] != first && names[0] != "stray";
        if replaced && now[0]["status"]["phase"] == "Running" {
            assert_eq!(now[0]["metadata"]["ownerReferences"], owner);
            break;
        }
        assert!(Instant::now() < deadline, "pods: {names:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sim.shutdown().await;
}
