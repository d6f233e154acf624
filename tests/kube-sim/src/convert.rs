//! Conversion between the served versions of a type whose versions differ in shape, as the
//! real server converts through its internal version: objects are stored in the storage
//! version and converted on every read and write through another one.
//!
//! Only HorizontalPodAutoscaler needs it: stored as `autoscaling/v2`, served also as
//! `autoscaling/v1`, whose single `targetCPUUtilizationPercentage` is the v2 CPU
//! `Utilization` metric. What v1 cannot express travels in the annotations the real
//! conversion uses, so a v1 read-modify-write keeps it: the other metrics in
//! `autoscaling.alpha.kubernetes.io/metrics`, `behavior` in `.../behavior`, and in the status
//! the conditions and current metrics in `.../conditions` and `.../current-metrics`.
//!
//! Types whose versions share one shape (Istio's v1alpha3/v1beta1) need no conversion: they
//! share storage and only `apiVersion` is stamped (see `Store`).

use serde_json::{json, Map, Value};

use crate::resources::{self, Resource};

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";

fn is_hpa_v1(res: &Resource) -> bool {
    res.group == "autoscaling" && res.version == "v1"
}

/// The version objects of `res`'s type are stored in.
pub fn storage(res: &Resource) -> &Resource {
    if is_hpa_v1(res) {
        resources::find("autoscaling", "v2", "horizontalpodautoscalers").expect("v2 in the table")
    } else {
        res
    }
}

/// Whether `m` is the CPU `Utilization` metric v1's target stands for.
fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource"
        && m["resource"]["name"] == "cpu"
        && m["resource"]["target"]["type"] == "Utilization"
}

fn annotations_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    if !obj["metadata"]["annotations"].is_object() {
        obj["metadata"]["annotations"] = json!({});
    }
    obj["metadata"]["annotations"]
        .as_object_mut()
        .expect("set above")
}

/// Takes the annotation `key` out of `obj`, parsed as JSON (an unparsable one is dropped).
fn take_annotation(obj: &mut Value, key: &str) -> Option<Value> {
    let annotations = obj
        .get_mut("metadata")?
        .get_mut("annotations")?
        .as_object_mut()?;
    let raw = annotations.remove(key)?;
    if annotations.is_empty() {
        obj["metadata"]
            .as_object_mut()
            .expect("has annotations")
            .remove("annotations");
    }
    serde_json::from_str(raw.as_str()?).ok()
}

/// `obj` (written through `res`) in the storage version.
pub fn to_storage(res: &Resource, mut obj: Value) -> Value {
    if !is_hpa_v1(res) || !obj.is_object() {
        return obj;
    }
    let mut metrics: Vec<Value> = take_annotation(&mut obj, METRICS)
        .and_then(|m| m.as_array().cloned())
        .unwrap_or_default();
    metrics.retain(|m| !is_cpu_utilization(m));
    let behavior = take_annotation(&mut obj, BEHAVIOR);
    let conditions = take_annotation(&mut obj, CONDITIONS);
    let current_metrics = take_annotation(&mut obj, CURRENT_METRICS);
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        if let Some(target) = spec.remove("targetCPUUtilizationPercentage") {
            if !target.is_null() {
                metrics.insert(
                    0,
                    json!({"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": target}}}),
                );
            }
        }
        if !metrics.is_empty() {
            spec.insert("metrics".into(), json!(metrics));
        }
        if let Some(b) = behavior {
            spec.insert("behavior".into(), b);
        }
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        let cpu = status.remove("currentCPUUtilizationPercentage");
        let mut current: Vec<Value> = current_metrics
            .and_then(|m| m.as_array().cloned())
            .unwrap_or_default();
        if let Some(cpu) = cpu.filter(|c| !c.is_null()) {
            current.retain(|m| m["resource"]["name"] != "cpu");
            current.insert(
                0,
                json!({"type": "Resource", "resource": {"name": "cpu",
                    "current": {"averageUtilization": cpu}}}),
            );
        }
        if !current.is_empty() {
            status.insert("currentMetrics".into(), json!(current));
        }
        if let Some(c) = conditions {
            status.insert("conditions".into(), c);
        }
    }
    obj
}

/// A stored object as `res`'s version shows it.
pub fn from_storage(res: &Resource, mut obj: Value) -> Value {
    if !is_hpa_v1(res) || !obj.is_object() {
        return obj;
    }
    let mut extra_metrics = Vec::new();
    let mut behavior = None;
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        let metrics = spec
            .remove("metrics")
            .and_then(|m| m.as_array().cloned())
            .unwrap_or_default();
        for m in metrics {
            if is_cpu_utilization(&m) && !spec.contains_key("targetCPUUtilizationPercentage") {
                spec.insert(
                    "targetCPUUtilizationPercentage".into(),
                    m["resource"]["target"]["averageUtilization"].clone(),
                );
            } else {
                extra_metrics.push(m);
            }
        }
        behavior = spec.remove("behavior");
    }
    let mut conditions = None;
    let mut current_extra = Vec::new();
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        let current = status
            .remove("currentMetrics")
            .and_then(|m| m.as_array().cloned())
            .unwrap_or_default();
        for m in current {
            let cpu = m["type"] == "Resource" && m["resource"]["name"] == "cpu";
            match m["resource"]["current"].get("averageUtilization") {
                Some(u) if cpu => {
                    status.insert("currentCPUUtilizationPercentage".into(), u.clone());
                }
                _ => current_extra.push(m),
            }
        }
        conditions = status.remove("conditions");
    }
    for (key, value) in [
        (
            METRICS,
            (!extra_metrics.is_empty()).then(|| json!(extra_metrics)),
        ),
        (BEHAVIOR, behavior.filter(|b| !b.is_null())),
        (CONDITIONS, conditions.filter(|c| !c.is_null())),
        (
            CURRENT_METRICS,
            (!current_extra.is_empty()).then(|| json!(current_extra)),
        ),
    ] {
        if let Some(v) = value {
            annotations_mut(&mut obj).insert(key.into(), json!(v.to_string()));
        }
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1() -> &'static Resource {
        resources::find("autoscaling", "v1", "horizontalpodautoscalers").unwrap()
    }

    #[test]
    fn v1_cpu_target_is_the_v2_cpu_utilization_metric_and_back() {
        let written = json!({"metadata": {"name": "web"}, "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 60}});
        let stored = to_storage(v1(), written.clone());
        assert_eq!(
            stored["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 60}}}])
        );
        assert!(stored["spec"]
            .get("targetCPUUtilizationPercentage")
            .is_none());
        assert_eq!(from_storage(v1(), stored), written);
    }

    #[test]
    fn what_v1_cannot_express_survives_a_v1_round_trip_in_annotations() {
        let memory = json!({"type": "Resource", "resource": {"name": "memory",
            "target": {"type": "AverageValue", "averageValue": "500Mi"}}});
        let stored = json!({"metadata": {"name": "web"}, "spec": {
            "maxReplicas": 5,
            "metrics": [memory, {"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}},
            "status": {"currentReplicas": 2, "desiredReplicas": 2,
                "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "current": {"averageUtilization": 40, "averageValue": "100m"}}}],
                "conditions": [{"type": "AbleToScale", "status": "True"}]}});
        let shown = from_storage(v1(), stored.clone());
        assert_eq!(shown["spec"]["targetCPUUtilizationPercentage"], 70);
        assert_eq!(shown["status"]["currentCPUUtilizationPercentage"], 40);
        let annotations = &shown["metadata"]["annotations"];
        let metrics: Value = serde_json::from_str(annotations[METRICS].as_str().unwrap()).unwrap();
        assert_eq!(metrics, json!([memory]));
        assert!(annotations[BEHAVIOR].is_string());
        assert!(annotations[CONDITIONS].is_string());
        let back = to_storage(v1(), shown);
        assert_eq!(back["spec"]["behavior"], stored["spec"]["behavior"]);
        assert_eq!(back["status"]["conditions"], stored["status"]["conditions"]);
        assert_eq!(back["metadata"].get("annotations"), None);
        let mut metrics = back["spec"]["metrics"].as_array().unwrap().clone();
        metrics.sort_by_key(|m| m["resource"]["name"].to_string());
        assert_eq!(metrics[1], memory);
    }
}
