//! Deployments converging under kube-sim's controller, observed only through the real
//! kubectl (`rollout status`, `scale`, `get`) and helm 4 (`--wait`).

mod common;

use std::time::Duration;

use common::*;
use kube_sim::Config;

/// A cluster whose pods turn ready quickly and whose `broken` images never do.
fn cluster() -> Cluster {
    Cluster::start_with(Config {
        rollout_delay: Duration::from_millis(100),
        never_ready_images: vec!["broken".into()],
        ..Config::default()
    })
}

fn apply(c: &Cluster, image: &str, deadline_seconds: Option<u64>) {
    let mut d = deployment(image);
    if let Some(s) = deadline_seconds {
        d["spec"]["progressDeadlineSeconds"] = serde_json::json!(s);
    }
    let path = c.manifest("web.json", &d);
    c.kubectl(&["apply", "--validate=false", "-f", &path])
        .success();
}

fn rollout_status(c: &Cluster) -> Run {
    c.kubectl(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "demo",
        "--timeout=20s",
    ])
}

fn names(c: &Cluster, what: &str) -> Vec<String> {
    let out = c
        .kubectl(&["get", what, "-n", "demo", "-l", "app=web", "-o", "name"])
        .success();
    out.lines().map(String::from).collect()
}

#[test]
fn rollout_status_succeeds_and_objects_are_owned() {
    let c = cluster();
    c.kubectl(&["create", "namespace", "demo"]).success();
    apply(&c, "nginx:1", None);
    let out = rollout_status(&c).success();
    assert!(out.contains("successfully rolled out"), "{out}");

    let d = c.json(&["get", "deploy", "web", "-n", "demo", "-o", "json"]);
    let st = &d["status"];
    assert_eq!(st["observedGeneration"], d["metadata"]["generation"]);
    for f in [
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
    ] {
        assert_eq!(st[f], 1, "{f}: {st}");
    }
    let progressing = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap();
    assert_eq!(progressing["reason"], "NewReplicaSetAvailable");

    let rs = c.json(&["get", "rs", "-n", "demo", "-l", "app=web", "-o", "json"]);
    let rs = &rs["items"][0];
    let hash = rs["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap();
    assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));
    assert_eq!(
        rs["metadata"]["ownerReferences"][0]["uid"],
        d["metadata"]["uid"]
    );
    assert_eq!(rs["metadata"]["ownerReferences"][0]["controller"], true);
    let pod = c.json(&["get", "pods", "-n", "demo", "-l", "app=web", "-o", "json"]);
    let pod = &pod["items"][0];
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(
        pod["metadata"]["ownerReferences"][0]["uid"],
        rs["metadata"]["uid"]
    );

    // Deleting the Deployment takes its ReplicaSets and pods with it.
    c.kubectl(&["delete", "deploy", "web", "-n", "demo", "--wait=false"])
        .success();
    let left = c
        .kubectl(&["get", "rs,pods", "-n", "demo", "-o", "name"])
        .success();
    // The controller cascades on the delete's change notification; wait for it via kubectl.
    if !left.trim().is_empty() {
        c.kubectl(&[
            "wait",
            "--for=delete",
            "pods,rs",
            "--all",
            "-n",
            "demo",
            "--timeout=10s",
        ])
        .success();
    }
}

#[test]
fn scale_subresource_and_status_split() {
    let c = cluster();
    c.kubectl(&["create", "namespace", "demo"]).success();
    apply(&c, "nginx:1", None);
    rollout_status(&c).success();

    let out = c
        .kubectl(&["scale", "deployment", "web", "-n", "demo", "--replicas=3"])
        .success();
    assert!(out.contains("deployment.apps/web scaled"), "{out}");
    rollout_status(&c).success();
    assert_eq!(names(&c, "pods").len(), 3);
    let scale = c.json(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/demo/deployments/web/scale",
    ]);
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["replicas"], 3);
    assert_eq!(scale["status"]["selector"], "app=web");

    // Writes to the main resource keep the stored status; /status keeps the spec.
    c.kubectl(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "demo",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":42}}"#,
    ])
    .success();
    let d = c.json(&["get", "deploy", "web", "-n", "demo", "-o", "json"]);
    assert_eq!(d["status"]["replicas"], 3);
    let patched = c
        .kubectl(&[
            "patch",
            "deploy",
            "web",
            "-n",
            "demo",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":7},"status":{"collisionCount":1}}"#,
            "-o",
            "json",
        ])
        .success();
    let patched: serde_json::Value = serde_json::from_str(&patched).unwrap();
    assert_eq!(patched["spec"]["replicas"], 3);
    assert_eq!(patched["status"]["collisionCount"], 1);

    let apps = c.json(&["get", "--raw", "/apis/apps/v1"]);
    let listed: Vec<&str> = apps["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(listed.contains(&"deployments/status"), "{listed:?}");
    assert!(listed.contains(&"deployments/scale"), "{listed:?}");

    c.kubectl(&["scale", "deployment", "web", "-n", "demo", "--replicas=1"])
        .success();
    rollout_status(&c).success();
    assert_eq!(names(&c, "pods").len(), 1);
}

#[test]
fn new_image_rolls_out_to_a_new_replica_set() {
    let c = cluster();
    c.kubectl(&["create", "namespace", "demo"]).success();
    apply(&c, "nginx:1", None);
    rollout_status(&c).success();
    apply(&c, "nginx:2", None);
    rollout_status(&c).success();

    let rs = c.json(&["get", "rs", "-n", "demo", "-l", "app=web", "-o", "json"]);
    let items = rs["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{rs}");
    let image = |r: &serde_json::Value| {
        r["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let new = items.iter().find(|r| image(r) == "nginx:2").unwrap();
    let old = items.iter().find(|r| image(r) == "nginx:1").unwrap();
    assert_eq!(new["spec"]["replicas"], 1);
    assert_eq!(old["spec"]["replicas"], 0);
    assert_eq!(
        new["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let pods = c.json(&["get", "pods", "-n", "demo", "-l", "app=web", "-o", "json"]);
    let pods = pods["items"].as_array().unwrap();
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0]["spec"]["containers"][0]["image"], "nginx:2");
}

#[test]
fn never_ready_image_exceeds_the_progress_deadline() {
    let c = cluster();
    c.kubectl(&["create", "namespace", "demo"]).success();
    apply(&c, "registry.example/broken:1", Some(2));
    let err = rollout_status(&c).failure();
    assert!(
        err.contains("deployment \"web\" exceeded its progress deadline"),
        "{err}"
    );
    let pod = c.json(&["get", "pods", "-n", "demo", "-l", "app=web", "-o", "json"]);
    let status = &pod["items"][0]["status"];
    assert_eq!(status["phase"], "Pending");
    let waiting = status["containerStatuses"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|c| c["state"]["waiting"].as_object())
        .unwrap()
        .clone();
    assert_eq!(waiting["reason"], "ImagePullBackOff");
    assert!(waiting["message"].as_str().unwrap().contains("broken:1"));
}
