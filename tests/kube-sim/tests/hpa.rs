//! HorizontalPodAutoscaler at autoscaling/v2 and autoscaling/v1, one object converted between
//! them as the real server converts: v1's `targetCPUUtilizationPercentage` is v2's CPU
//! `Utilization` metric, and what v1 cannot express survives a v1 read-modify-write in the
//! `autoscaling.alpha.kubernetes.io/*` annotations — checked with the real kubectl.

mod common;

use common::*;
use serde_json::json;

const V1: &str = "horizontalpodautoscalers.v1.autoscaling";
const V2: &str = "horizontalpodautoscalers.v2.autoscaling";

fn get(c: &Cluster, resource: &str, name: &str) -> serde_json::Value {
    c.json(&["get", resource, name, "-o", "json"])
}

#[test]
fn v2_metrics_read_through_v1_and_a_v1_edit_keeps_them() {
    let c = Cluster::start();
    let memory = json!({"type": "Resource", "resource": {"name": "memory",
        "target": {"type": "AverageValue", "averageValue": "500Mi"}}});
    let hpa = c.manifest(
        "hpa.json",
        &json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 2, "maxReplicas": 6,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 60}}},
                    memory,
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 120}},
            },
        }),
    );
    c.kubectl(&["apply", "-f", &hpa]).success();
    let v1 = get(&c, V1, "web");
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60, "{v1:#}");
    assert!(v1["spec"].get("metrics").is_none(), "{v1:#}");
    let annotations = &v1["metadata"]["annotations"];
    let extra: serde_json::Value = serde_json::from_str(
        annotations["autoscaling.alpha.kubernetes.io/metrics"]
            .as_str()
            .unwrap_or_else(|| panic!("{v1:#}")),
    )
    .unwrap();
    assert_eq!(extra, json!([memory]));
    assert!(annotations["autoscaling.alpha.kubernetes.io/behavior"].is_string());

    // A v1 client changes the CPU target; v2 still has the memory metric and the behavior.
    c.kubectl(&[
        "patch",
        &format!("{V1}/web"),
        "--type=merge",
        "-p",
        r#"{"spec":{"targetCPUUtilizationPercentage":45}}"#,
    ])
    .success();
    let v2 = get(&c, V2, "web");
    assert_eq!(
        v2["spec"]["metrics"],
        json!([
            {"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 45}}},
            memory,
        ]),
        "{v2:#}"
    );
    assert_eq!(
        v2["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        120
    );
    assert!(v2["metadata"]
        .get("annotations")
        .is_none_or(|a| a.get("autoscaling.alpha.kubernetes.io/metrics").is_none()));
    assert_eq!(
        v2["metadata"]["generation"], 2,
        "the v1 edit changed the spec"
    );
}

#[test]
fn v1_target_is_the_v2_cpu_metric_and_defaults_to_80() {
    let c = Cluster::start();
    let hpa = |name: &str, target: Option<u32>| {
        let mut body = json!({
            "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "maxReplicas": 4},
        });
        if let Some(t) = target {
            body["spec"]["targetCPUUtilizationPercentage"] = json!(t);
        }
        c.manifest(&format!("{name}.json"), &body)
    };
    c.kubectl(&["apply", "-f", &hpa("api", Some(70))]).success();
    c.kubectl(&["apply", "-f", &hpa("worker", None)]).success();
    let v2 = get(&c, V2, "api");
    assert_eq!(v2["apiVersion"], "autoscaling/v2");
    assert_eq!(
        v2["spec"]["metrics"],
        json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 70}}}])
    );
    assert_eq!(v2["spec"]["minReplicas"], 1);
    assert!(v2["spec"].get("targetCPUUtilizationPercentage").is_none());
    assert_eq!(
        get(&c, V2, "worker")["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        80
    );
    assert_eq!(
        get(&c, V1, "worker")["spec"]["targetCPUUtilizationPercentage"],
        80
    );
    // Re-applying the same v1 manifest changes nothing.
    let before = get(&c, V1, "api")["metadata"]["resourceVersion"].clone();
    c.kubectl(&["apply", "-f", &hpa("api", Some(70))]).success();
    assert_eq!(get(&c, V1, "api")["metadata"]["resourceVersion"], before);
}
