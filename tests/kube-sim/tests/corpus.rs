//! The chart corpus (`charts/`, see its README) through a user's life cycle with the real
//! helm 4 and kubectl: `install --wait`, `upgrade --wait`, `rollback --wait`, `helm test`,
//! `uninstall`, with `kubectl get` of every kind and `kubectl rollout status` on the
//! workloads — and the knobs that make workloads fail, each against the chart that shows it.

mod common;

use std::time::Duration;

use common::life_cycle::{chart, Release, WAIT};
use common::*;
use kube_sim::Config;

/// Fast pods, so a life cycle takes seconds.
fn quick() -> Config {
    Config {
        rollout_delay: Duration::from_millis(100),
        job_duration: Duration::from_millis(100),
        load_balancer_delay: Duration::from_millis(100),
        ..Config::default()
    }
}

fn jsonpath(c: &Cluster, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let p = format!("jsonpath={path}");
    args.extend_from_slice(&["-n", "demo", "-o", &p]);
    c.kubectl(&args).success()
}

/// `kubectl rollout status` of `what` in `demo`, which must finish within 30 s.
fn rollout_status(c: &Cluster, what: &str) -> String {
    c.kubectl(&["rollout", "status", what, "-n", "demo", "--timeout=30s"])
        .success()
}

/// What `kubectl get` finds in `demo` of `kinds` (`-o name` lines), sorted.
fn names(c: &Cluster, kinds: &str) -> Vec<String> {
    let out = c
        .kubectl(&["get", kinds, "-n", "demo", "-o", "name"])
        .success();
    let mut v: Vec<String> = out.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn database_statefulset_with_claims_through_its_life_cycle() {
    let c = Cluster::start_with(quick());
    let rel = Release::new(&c, "database");
    rel.install(&[]);
    let sts = c.json(&["get", "sts", "rel-database", "-n", "demo", "-o", "json"]);
    let status = &sts["status"];
    assert_eq!(status["readyReplicas"], 3, "{sts:#}");
    assert_eq!(status["availableReplicas"], 3);
    assert_eq!(status["observedGeneration"], sts["metadata"]["generation"]);
    assert_eq!(status["currentRevision"], status["updateRevision"]);
    // Ordered pods with stable names, hostnames and claims bound to provisioned volumes.
    assert_eq!(
        names(&c, "pods"),
        [
            "pod/rel-database-0",
            "pod/rel-database-1",
            "pod/rel-database-2"
        ]
    );
    assert_eq!(
        jsonpath(
            &c,
            &["pod", "rel-database-1"],
            "{.spec.hostname}.{.spec.subdomain}"
        ),
        "rel-database-1.rel-database-headless"
    );
    assert_eq!(
        jsonpath(
            &c,
            &["pvc"],
            "{range .items[*]}{.metadata.name}={.status.phase} {end}"
        ),
        "data-rel-database-0=Bound data-rel-database-1=Bound data-rel-database-2=Bound "
    );
    let pv = c
        .kubectl(&["get", "pv", "-o", "jsonpath={.items[*].spec.claimRef.name}"])
        .success();
    assert_eq!(pv.split_whitespace().count(), 3, "{pv}");
    assert_eq!(
        jsonpath(&c, &["svc", "rel-database-headless"], "{.spec.clusterIP}"),
        "None"
    );
    let rollout = rollout_status(&c, "sts/rel-database");
    assert!(rollout.contains("roll out complete"), "{rollout}");

    // An upgrade changes the template: a rolling update to a new revision.
    let before = jsonpath(&c, &["sts", "rel-database"], "{.status.updateRevision}");
    rel.upgrade(&["--set", "image.tag=16.3"]);
    let sts = c.json(&["get", "sts", "rel-database", "-n", "demo", "-o", "json"]);
    let status = &sts["status"];
    assert_ne!(status["updateRevision"], before.as_str(), "{sts:#}");
    assert_eq!(
        status["currentRevision"], status["updateRevision"],
        "{sts:#}"
    );
    assert_eq!(status["updatedReplicas"], 3, "{sts:#}");
    assert_eq!(status["readyReplicas"], 3, "{sts:#}");
    let images = jsonpath(&c, &["pods"], "{.items[*].spec.containers[0].image}");
    assert_eq!(images, ["registry.example/db:16.3"; 3].join(" "));

    rel.rollback();
    assert_eq!(
        jsonpath(&c, &["sts", "rel-database"], "{.status.updateRevision}"),
        before
    );
    let images = jsonpath(&c, &["pods"], "{.items[*].spec.containers[0].image}");
    assert_eq!(images, ["registry.example/db:16.2"; 3].join(" "));

    // As on a cluster: the claims of volumeClaimTemplates outlive the StatefulSet
    // (retention policy Retain), and so do their volumes; nothing else is left.
    let left = rel.uninstall();
    let (claims, volumes): (Vec<&String>, Vec<&String>) = left
        .iter()
        .partition(|o| o.starts_with("persistentvolumeclaim/"));
    assert_eq!(
        claims,
        [
            "persistentvolumeclaim/data-rel-database-0",
            "persistentvolumeclaim/data-rel-database-1",
            "persistentvolumeclaim/data-rel-database-2",
        ]
    );
    assert_eq!(volumes.len(), 3, "{left:?}");
    assert!(
        volumes
            .iter()
            .all(|v| v.starts_with("persistentvolume/pvc-")),
        "{left:?}"
    );
}

#[test]
fn statefulset_partition_scale_and_rollout_status() {
    let c = Cluster::start_with(quick());
    let rel = Release::new(&c, "database");
    rel.install(&["--set", "replicaCount=2"]);
    // A partition keeps ordinals below it at the old revision.
    c.kubectl(&[
        "patch",
        "sts",
        "rel-database",
        "-n",
        "demo",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":1}},"template":{"spec":{"containers":[{"name":"db","image":"registry.example/db:17"}]}}}}"#,
    ])
    .success();
    let out = rollout_status(&c, "sts/rel-database");
    assert!(
        out.contains("partitioned roll out complete: 1 new pods"),
        "{out}"
    );
    let images = jsonpath(&c, &["pods"], "{.items[*].spec.containers[0].image}");
    assert_eq!(images, "registry.example/db:16.2 registry.example/db:17");
    let status =
        c.json(&["get", "sts", "rel-database", "-n", "demo", "-o", "json"])["status"].clone();
    assert_ne!(
        status["currentRevision"], status["updateRevision"],
        "{status:#}"
    );
    assert_eq!(status["updatedReplicas"], 1, "{status:#}");
    c.kubectl(&["scale", "sts", "rel-database", "-n", "demo", "--replicas=4"])
        .success();
    rollout_status(&c, "sts/rel-database");
    assert_eq!(
        jsonpath(&c, &["sts", "rel-database"], "{.status.readyReplicas}"),
        "4"
    );
    c.kubectl(&["scale", "sts", "rel-database", "-n", "demo", "--replicas=1"])
        .success();
    rollout_status(&c, "sts/rel-database");
    assert_eq!(names(&c, "pods"), ["pod/rel-database-0"]);
}

/// The Jobs in `demo` that turned `Complete` after store revision `since`, with the revision
/// of that write, in the order they completed (hook Jobs deleted since included).
fn completed_jobs(c: &Cluster, since: u64) -> Vec<(String, u64)> {
    let jobs = kube_sim::resources::find("batch", "v1", "jobs").unwrap();
    let (events, _) = c
        .sim()
        .store()
        .events_since(jobs, Some("demo"), since)
        .unwrap();
    let mut out: Vec<(String, u64)> = Vec::new();
    for (_, job, _) in events {
        let complete = job["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Complete"));
        let name = job["metadata"]["name"].as_str().unwrap().to_string();
        if complete && !out.iter().any(|(n, _)| *n == name) {
            let rv = job["metadata"]["resourceVersion"].as_str().unwrap();
            out.push((name, rv.parse().unwrap()));
        }
    }
    out
}

/// The revision at which `kind/name` in `demo` was deleted after `since`.
fn deleted_at(c: &Cluster, group: &str, plural: &str, name: &str, since: u64) -> u64 {
    let res = kube_sim::resources::find(group, "v1", plural).unwrap();
    let (events, _) = c
        .sim()
        .store()
        .events_since(res, Some("demo"), since)
        .unwrap();
    events
        .iter()
        .find(|(t, o, _)| {
            *t == kube_sim::events::EventType::Deleted && o["metadata"]["name"] == name
        })
        .and_then(|(_, o, _)| o["metadata"]["resourceVersion"].as_str()?.parse().ok())
        .unwrap_or_else(|| panic!("{plural}/{name} was not deleted"))
}

#[test]
fn hook_jobs_and_helm_test() {
    let c = Cluster::start_with(quick());
    let rel = Release::new(&c, "hooks");
    let names_of =
        |runs: Vec<(String, u64)>| -> Vec<String> { runs.into_iter().map(|r| r.0).collect() };
    let since = c.sim().store().revision();
    rel.install(&[]);
    // The pre-install Job ran to completion and was deleted (hook-succeeded).
    assert_eq!(names_of(completed_jobs(&c, since)), ["rel-api-migrate"]);
    assert_eq!(names(&c, "jobs"), Vec::<String>::new());
    let since = c.sim().store().revision();
    let out = rel.upgrade(&["--set", "image=registry.example/api:2.5"]);
    assert!(out.contains("REVISION: 2"), "{out}");
    // pre-upgrade, then post-upgrade, each completed and deleted.
    assert_eq!(
        names_of(completed_jobs(&c, since)),
        ["rel-api-migrate", "rel-api-notify"]
    );
    assert_eq!(names(&c, "jobs"), Vec::<String>::new());
    let out = rel.test();
    assert!(out.contains("Phase:          Succeeded"), "{out}");
    assert!(
        !names(&c, "pods").contains(&"pod/rel-api-test-connection".to_string()),
        "the test pod is deleted once it succeeded (hook-succeeded)"
    );
    rel.rollback();
    assert_eq!(
        jsonpath(
            &c,
            &["deploy", "rel-api"],
            "{.spec.template.spec.containers[0].image}"
        ),
        "registry.example/api:2.4.1"
    );
    let since = c.sim().store().revision();
    rel.uninstall_clean();
    // pre-delete ran before the release's objects went, post-delete after.
    let runs = completed_jobs(&c, since);
    assert_eq!(names_of(runs.clone()), ["rel-api-drain", "rel-api-cleanup"]);
    let deployment_gone = deleted_at(&c, "apps", "deployments", "rel-api", since);
    assert!(runs[0].1 < deployment_gone, "{runs:?} vs {deployment_gone}");
    assert!(runs[1].1 > deployment_gone, "{runs:?} vs {deployment_gone}");
}

#[test]
fn failing_pre_delete_hook_fails_the_uninstall() {
    let c = Cluster::start_with(Config {
        failing_job_images: vec!["api-admin".into()],
        ..quick()
    });
    let rel = Release::new(&c, "hooks");
    rel.install(&[]);
    let err = c
        .helm(&[
            "uninstall",
            "rel",
            "-n",
            "demo",
            "--wait",
            "--timeout",
            "60s",
        ])
        .failure();
    assert!(err.contains("rel-api-drain"), "{err}");
    // The release and its objects stay; the failed hook Job is kept for inspection.
    assert_eq!(names(&c, "deploy"), ["deployment.apps/rel-api"]);
    assert_eq!(
        jsonpath(&c, &["job", "rel-api-drain"], "{.status.failed}"),
        "1"
    );
}

#[test]
fn failing_hook_job_fails_the_install_after_its_backoff_limit() {
    let c = Cluster::start_with(Config {
        failing_job_images: vec!["api-migrate".into()],
        ..quick()
    });
    c.kubectl(&["create", "namespace", "demo"]).success();
    let hooks = chart("hooks");
    let mut args = vec!["install", "rel", hooks.as_str()];
    args.extend_from_slice(WAIT);
    let err = c.helm(&args).failure();
    assert!(err.contains("rel-api-migrate"), "{err}");
    let job = c.json(&["get", "job", "rel-api-migrate", "-n", "demo", "-o", "json"]);
    assert_eq!(
        job["status"]["failed"], 2,
        "backoffLimit 1 allows two pods: {job:#}"
    );
    let failed = job["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .cloned()
        .unwrap_or_else(|| panic!("{job:#}"));
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    assert_eq!(
        jsonpath(&c, &["pods"], "{range .items[*]}{.status.phase} {.status.containerStatuses[0].state.terminated.exitCode};{end}"),
        "Failed 1;Failed 1;"
    );
}

#[test]
fn failing_test_image_fails_helm_test() {
    let c = Cluster::start_with(Config {
        failing_job_images: vec!["curl".into()],
        ..quick()
    });
    Release::new(&c, "hooks").install(&[]);
    let err = c
        .helm(&["test", "rel", "-n", "demo", "--timeout", "60s"])
        .failure();
    assert!(
        err.contains("rel-api-test-connection") && err.to_lowercase().contains("failed"),
        "{err}"
    );
    // The failed test pod's log, as `kubectl logs` reads it (`pod_log`).
    let log = c
        .kubectl(&["logs", "rel-api-test-connection", "-n", "demo"])
        .success();
    assert!(
        log.contains("kube-sim: started registry.example/curl:8 -fsS")
            && log.contains("exited with code 1 (Error)"),
        "{log}"
    );
    let tail = c
        .kubectl(&[
            "logs",
            "rel-api-test-connection",
            "-n",
            "demo",
            "--tail",
            "1",
        ])
        .success();
    assert_eq!(tail.trim(), "kube-sim: exited with code 1 (Error)");
}

#[test]
fn job_pods_run_for_the_configured_time() {
    let run = Duration::from_millis(1500);
    let c = Cluster::start_with(Config {
        rollout_delay: Duration::from_millis(100),
        job_duration: run,
        ..Config::default()
    });
    c.kubectl(&["create", "namespace", "demo"]).success();
    let rev = c.sim().store().revision();
    // `kubectl create job` would send protobuf, which kube-sim decodes for few kinds yet.
    let job = c.manifest(
        "job.json",
        &serde_json::json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "once", "namespace": "demo"},
            "spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "task", "image": "registry.example/task:1"}],
            }}},
        }),
    );
    c.kubectl(&["apply", "-f", &job]).success();
    c.kubectl(&[
        "wait",
        "job/once",
        "-n",
        "demo",
        "--for=condition=Complete",
        "--timeout=60s",
    ])
    .success();
    let jobs = kube_sim::resources::find("batch", "v1", "jobs").unwrap();
    let writes = c
        .sim()
        .store()
        .writes_since(jobs, Some("demo"), rev)
        .unwrap();
    let created = writes.first().unwrap().0;
    let completed = writes
        .iter()
        .find(|(_, j)| j["status"]["completionTime"].is_string())
        .unwrap()
        .0;
    let took = completed - created;
    assert!(
        took >= run,
        "completed after {took:?}, before its pod could have run {run:?}"
    );
}

#[test]
fn webapp_with_hpa_ingress_pdb_and_network_policy() {
    let c = Cluster::start_with(quick());
    let rel = Release::new(&c, "webapp");
    rel.install(&[]);
    assert_eq!(
        names(&c, "sa,hpa,ing,pdb,netpol,deploy,svc,cm"),
        [
            "configmap/rel-webapp",
            "deployment.apps/rel-webapp",
            "horizontalpodautoscaler.autoscaling/rel-webapp",
            "ingress.networking.k8s.io/rel-webapp",
            "networkpolicy.networking.k8s.io/rel-webapp",
            "poddisruptionbudget.policy/rel-webapp",
            "service/rel-webapp",
            "serviceaccount/rel-webapp",
        ]
    );
    // The same HPA through autoscaling/v1.
    let v1 = c.json(&[
        "get",
        "horizontalpodautoscalers.v1.autoscaling",
        "rel-webapp",
        "-n",
        "demo",
        "-o",
        "json",
    ]);
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    let before = jsonpath(
        &c,
        &["deploy", "rel-webapp"],
        "{.spec.template.metadata.annotations.checksum/config}",
    );
    rel.upgrade(&["--set", "config.logLevel=debug"]);
    let after = jsonpath(
        &c,
        &["deploy", "rel-webapp"],
        "{.spec.template.metadata.annotations.checksum/config}",
    );
    assert_ne!(before, after, "the checksum annotation rolls the pods");
    rollout_status(&c, "deploy/rel-webapp");
    rel.rollback();
    rel.uninstall_clean();
}

#[test]
fn agent_daemonset_on_every_node_with_rbac_and_cronjob() {
    let c = Cluster::start_with(Config {
        nodes: vec!["node-a".into(), "node-b".into(), "node-c".into()],
        ..quick()
    });
    let rel = Release::new(&c, "agent");
    rel.install(&[]);
    let ds = c.json(&["get", "ds", "rel-agent", "-n", "demo", "-o", "json"]);
    let st = &ds["status"];
    assert_eq!(st["desiredNumberScheduled"], 3, "{ds:#}");
    assert_eq!(st["numberReady"], 3, "{ds:#}");
    assert_eq!(st["updatedNumberScheduled"], 3, "{ds:#}");
    assert_eq!(
        jsonpath(&c, &["pods"], "{.items[*].spec.nodeName}")
            .split_whitespace()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>(),
        ["node-a", "node-b", "node-c"]
    );
    rel.upgrade(&["--set", "image=registry.example/node-agent:0.6.0"]);
    let out = rollout_status(&c, "ds/rel-agent");
    assert!(out.contains("successfully rolled out"), "{out}");
    assert_eq!(
        jsonpath(&c, &["pods"], "{.items[*].spec.containers[0].image}"),
        ["registry.example/node-agent:0.6.0"; 3].join(" ")
    );
    for kind in ["cronjob", "role", "rolebinding", "lease", "sa"] {
        assert_eq!(names(&c, kind).len(), 1, "{kind}");
    }
    let cluster_wide = c
        .kubectl(&["get", "clusterrole,clusterrolebinding", "-o", "name"])
        .success();
    assert_eq!(
        cluster_wide.lines().collect::<Vec<_>>(),
        [
            "clusterrole.rbac.authorization.k8s.io/rel-agent",
            "clusterrolebinding.rbac.authorization.k8s.io/rel-agent"
        ]
    );
    rel.rollback();
    rel.uninstall_clean();
}

#[test]
fn never_bound_claim_keeps_the_statefulset_waiting() {
    let c = Cluster::start_with(Config {
        never_bound_claims: vec!["data-rel-database-0".into()],
        ..quick()
    });
    c.kubectl(&["create", "namespace", "demo"]).success();
    let db = chart("database");
    let err = c
        .helm(&[
            "install",
            "rel",
            &db,
            "-n",
            "demo",
            "--wait",
            "--timeout",
            "3s",
        ])
        .failure();
    assert!(err.contains("rel-database"), "{err}");
    assert_eq!(
        jsonpath(&c, &["pvc", "data-rel-database-0"], "{.status.phase}"),
        "Pending"
    );
    let pod = c.json(&["get", "pod", "rel-database-0", "-n", "demo", "-o", "json"]);
    assert_eq!(pod["status"]["phase"], "Pending");
    assert_eq!(
        pod["status"]["conditions"][0]["reason"], "Unschedulable",
        "{pod:#}"
    );
    // OrderedReady: the next ordinal waits for the first.
    assert_eq!(names(&c, "pods"), ["pod/rel-database-0"]);
}

#[test]
fn claims_wait_for_a_storage_class() {
    let c = Cluster::start_with(Config {
        default_storage_class: None,
        ..quick()
    });
    c.kubectl(&["create", "namespace", "demo"]).success();
    let claim = c.manifest(
        "claim.json",
        &serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "demo"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}},
        }),
    );
    c.kubectl(&["apply", "-f", &claim]).success();
    assert_eq!(jsonpath(&c, &["pvc", "data"], "{.status.phase}"), "Pending");
    let class = c.manifest(
        "class.json",
        &serde_json::json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "fast", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "example.com/fast",
        }),
    );
    c.kubectl(&["apply", "-f", &class]).success();
    c.kubectl(&[
        "wait",
        "pvc/data",
        "-n",
        "demo",
        "--for=jsonpath={.status.phase}=Bound",
        "--timeout=30s",
    ])
    .success();
    let volume = jsonpath(&c, &["pvc", "data"], "{.spec.volumeName}");
    let pv = c.json(&["get", "pv", &volume, "-o", "json"]);
    assert_eq!(pv["spec"]["capacity"]["storage"], "2Gi");
    assert_eq!(pv["spec"]["storageClassName"], "fast");
    assert_eq!(pv["status"]["phase"], "Bound");
    c.kubectl(&["delete", "pvc", "data", "-n", "demo"])
        .success();
    c.kubectl(&[
        "wait",
        &format!("pv/{volume}"),
        "--for=delete",
        "--timeout=30s",
    ])
    .success();
}

#[test]
fn never_ready_image_stalls_a_statefulset_rollout() {
    let c = Cluster::start_with(Config {
        never_ready_images: vec!["db:broken".into()],
        ..quick()
    });
    let rel = Release::new(&c, "database");
    rel.install(&["--set", "replicaCount=2"]);
    let db = rel.chart.clone();
    let err = c
        .helm(&[
            "upgrade",
            "rel",
            &db,
            "-n",
            "demo",
            "--set",
            "replicaCount=2",
            "--set",
            "image.tag=broken",
            "--wait",
            "--timeout",
            "3s",
        ])
        .failure();
    assert!(err.contains("rel-database"), "{err}");
    // The highest ordinal was replaced first and never turned ready; the other waits.
    let images = jsonpath(&c, &["pods"], "{.items[*].spec.containers[0].image}");
    assert_eq!(
        images,
        "registry.example/db:16.2 registry.example/db:broken"
    );
    let out = c
        .kubectl(&[
            "rollout",
            "status",
            "sts/rel-database",
            "-n",
            "demo",
            "--timeout=2s",
        ])
        .failure();
    assert!(out.contains("timed out"), "{out}");
}

#[test]
fn upgrading_an_immutable_statefulset_field_fails_as_on_a_cluster() {
    let c = Cluster::start_with(quick());
    let rel = Release::new(&c, "database");
    rel.install(&["--set", "replicaCount=1"]);
    let err = rel.upgrade_fails(&["--set", "replicaCount=1", "--set", "persistence.size=2Gi"]);
    assert!(
        err.contains(
            "StatefulSet.apps \"rel-database\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
        ),
        "{err}"
    );
    assert_eq!(rel.last_revision()["status"], "failed");
    // What may change still does.
    rel.upgrade(&["--set", "replicaCount=2"]);
}

#[test]
fn upgrading_a_job_template_fails_as_on_a_cluster() {
    let c = Cluster::start_with(quick());
    let dir = c.home.path().join("batch");
    write_chart(
        &dir,
        "batch",
        &[(
            "templates/job.yaml",
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ .Release.Name }}-import\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: import\n          image: registry.example/import:{{ .Values.tag }}\n",
        )],
    );
    let dir = dir.to_string_lossy().into_owned();
    let rel = Release::new(&c, &dir);
    rel.install(&["--set", "tag=1"]);
    let err = rel.upgrade_fails(&["--set", "tag=2"]);
    assert!(
        err.contains(
            "Job.batch \"rel-import\" is invalid: spec.template: Invalid value: core.PodTemplateSpec{...}: field is immutable"
        ),
        "{err}"
    );
}

#[test]
fn umbrella_chart_with_a_subchart_and_a_load_balancer() {
    let c = Cluster::start_with(quick());
    let rel = Release::new(&c, "umbrella");
    rel.install(&[]);
    assert_eq!(
        names(&c, "deploy"),
        [
            "deployment.apps/rel-cache",
            "deployment.apps/rel-storefront"
        ]
    );
    assert_eq!(
        jsonpath(
            &c,
            &["deploy", "rel-cache"],
            "{.spec.template.spec.containers[0].image}"
        ),
        "registry.example/cache:7.2",
        "the subchart sees the parent's globals"
    );
    assert_eq!(
        jsonpath(&c, &["cm", "rel-storefront"], "{.data.CACHE_URL}"),
        "redis://rel-cache:6379"
    );
    c.kubectl(&[
        "wait",
        "svc/rel-storefront",
        "-n",
        "demo",
        "--for=jsonpath={.status.loadBalancer.ingress[0].ipMode}=VIP",
        "--timeout=30s",
    ])
    .success();
    rel.upgrade(&["--set", "cache.replicaCount=2"]);
    assert_eq!(
        jsonpath(&c, &["deploy", "rel-cache"], "{.status.readyReplicas}"),
        "2"
    );
    rel.upgrade(&["--set", "cache.enabled=false"]);
    assert_eq!(names(&c, "deploy"), ["deployment.apps/rel-storefront"]);
    rel.rollback();
    assert_eq!(
        jsonpath(&c, &["deploy", "rel-cache"], "{.status.readyReplicas}"),
        "1"
    );
    rel.uninstall_clean();
}

#[test]
fn chart_with_a_crd_in_crds_and_a_custom_resource() {
    let c = Cluster::start_with(quick());
    let rel = Release::new(&c, "operator");
    rel.install(&[]);
    let schedule = c.json(&["get", "bks", "rel-nightly", "-n", "demo", "-o", "json"]);
    assert_eq!(schedule["apiVersion"], "backup.example.com/v1alpha1");
    assert_eq!(schedule["spec"]["retentionDays"], 7);
    rel.upgrade(&["--set", "schedule.retention=14"]);
    assert_eq!(
        jsonpath(
            &c,
            &["backupschedule", "rel-nightly"],
            "{.spec.retentionDays}"
        ),
        "14"
    );
    rel.rollback();
    assert_eq!(
        jsonpath(
            &c,
            &["backupschedule", "rel-nightly"],
            "{.spec.retentionDays}"
        ),
        "7"
    );
    // Helm never deletes what crds/ installed: the definition stays, as on a cluster.
    assert_eq!(
        rel.uninstall(),
        ["customresourcedefinition.apiextensions.k8s.io/backupschedules.backup.example.com"]
    );
}

#[test]
fn helm_2_format_chart_with_requirements_yaml() {
    let c = Cluster::start_with(quick());
    let rel = Release::new(&c, "legacy");
    rel.install(&[]);
    let chart = c.helm(&["show", "chart", &rel.chart]).success();
    assert!(chart.starts_with("apiVersion: v1"), "{chart}");
    assert_eq!(
        names(&c, "deploy,svc"),
        [
            "deployment.apps/rel-exporter",
            "deployment.apps/rel-legacy",
            "service/rel-exporter"
        ]
    );
    // The requirements.yaml condition turns the dependency off.
    rel.upgrade(&["--set", "exporter.enabled=false"]);
    assert_eq!(names(&c, "deploy,svc"), ["deployment.apps/rel-legacy"]);
    rel.rollback();
    assert_eq!(names(&c, "deploy").len(), 2);
    rel.uninstall_clean();
}

#[test]
fn lookup_keeps_a_generated_secret_and_capabilities_pick_api_versions() {
    let c = Cluster::start_with(quick());
    let rel = Release::new(&c, "lookup");
    rel.install(&[]);
    let password = || jsonpath(&c, &["secret", "rel-notes"], "{.data.password}");
    let first = password();
    assert_eq!(first.len(), 32, "24 characters, base64: {first}");
    rel.upgrade(&["--set", "replicaCount=3"]);
    assert_eq!(
        password(),
        first,
        "lookup found the Secret and kept its password"
    );
    assert_eq!(
        names(&c, "pdb,hpa"),
        [
            "horizontalpodautoscaler.autoscaling/rel-notes",
            "poddisruptionbudget.policy/rel-notes"
        ],
        "policy/v1 and autoscaling/v2 are served; monitoring.coreos.com is not"
    );
    rel.rollback();
    assert_eq!(password(), first);
    rel.uninstall_clean();
}

#[test]
fn cronjob_with_role_binding_and_a_test_job() {
    let c = Cluster::start_with(quick());
    let rel = Release::new(&c, "cron");
    rel.install(&[]);
    assert_eq!(
        names(&c, "cronjob,sa,role,rolebinding"),
        [
            "cronjob.batch/rel-report",
            "role.rbac.authorization.k8s.io/rel-reporter",
            "rolebinding.rbac.authorization.k8s.io/rel-reporter",
            "serviceaccount/rel-reporter",
        ]
    );
    let out = rel.test();
    assert!(
        out.contains("rel-check") && out.contains("Succeeded"),
        "{out}"
    );
    rel.upgrade(&["--set", "schedule=0 * * * *"]);
    assert_eq!(
        jsonpath(&c, &["cronjob", "rel-report"], "{.spec.schedule}"),
        "0 * * * *"
    );
    rel.rollback();
    assert_eq!(
        jsonpath(&c, &["cronjob", "rel-report"], "{.spec.schedule}"),
        "*/30 * * * *"
    );
    rel.uninstall_clean();
}

#[test]
fn failing_test_job_fails_helm_test() {
    let c = Cluster::start_with(Config {
        failing_job_images: vec!["reporter-check".into()],
        ..quick()
    });
    Release::new(&c, "cron").install(&[]);
    let err = c
        .helm(&["test", "rel", "-n", "demo", "--timeout", "60s"])
        .failure();
    assert!(err.contains("rel-check"), "{err}");
    let job = c.json(&["get", "job", "rel-check", "-n", "demo", "-o", "json"]);
    assert_eq!(job["status"]["failed"], 1, "{job:#}");
}

#[test]
fn gateway_api_httproute_when_the_cluster_has_it() {
    let c = Cluster::start_with(Config {
        gateway_api: true,
        ..quick()
    });
    let rel = Release::new(&c, "gateway");
    rel.install(&[]);
    assert_eq!(
        names(&c, "gateway,httproute,ingress"),
        [
            "gateway.gateway.networking.k8s.io/edge",
            "httproute.gateway.networking.k8s.io/rel-docs"
        ]
    );
    rel.upgrade(&["--set", "hostname=docs.example.org"]);
    assert_eq!(
        jsonpath(&c, &["httproute", "rel-docs"], "{.spec.hostnames[0]}"),
        "docs.example.org"
    );
    rel.rollback();
    assert_eq!(
        jsonpath(&c, &["httproute", "rel-docs"], "{.spec.hostnames[0]}"),
        "docs.example.com"
    );
    rel.uninstall_clean();

    // Without Gateway API the same chart falls back to an Ingress.
    let plain = Cluster::start_with(quick());
    Release::new(&plain, "gateway").install(&[]);
    assert_eq!(
        names(&plain, "ingress"),
        ["ingress.networking.k8s.io/rel-docs"]
    );
}
