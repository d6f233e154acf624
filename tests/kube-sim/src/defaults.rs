//! Defaulting: the fields the real API server fills in when a client leaves them out.
//!
//! Clients read them back and depend on them: `kubectl rollout status` refuses a StatefulSet
//! or DaemonSet whose `spec.updateStrategy.type` is not `RollingUpdate`, and Helm's status
//! checks read `spec.updateStrategy.rollingUpdate.partition`. Defaults are applied on every
//! write (create, update, patch, apply), as decoding does on the real server, so a write that
//! omits a defaulted field is a no-op rather than a change. Only the kinds whose controllers
//! kube-sim simulates, and only the fields those controllers or clients read, are defaulted.

use serde_json::{json, Map, Value};

use crate::resources::Resource;

/// Sets `obj[key]` to `value` when absent (or null); creates `obj` as an object if needed.
fn or_insert(obj: &mut Value, key: &str, value: Value) {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    if obj.get(key).is_none_or(Value::is_null) {
        obj[key] = value;
    }
}

/// `spec.updateStrategy` of StatefulSets and DaemonSets: `RollingUpdate` unless set, and
/// for a rolling update the `rollingUpdate` fields given.
fn rolling_update(spec: &mut Value, fields: &[(&str, Value)]) {
    or_insert(spec, "updateStrategy", json!({"type": "RollingUpdate"}));
    let strategy = &mut spec["updateStrategy"];
    or_insert(strategy, "type", json!("RollingUpdate"));
    if strategy["type"] == "RollingUpdate" {
        or_insert(strategy, "rollingUpdate", json!({}));
        for (k, v) in fields {
            or_insert(&mut strategy["rollingUpdate"], k, v.clone());
        }
    }
}

/// Fills in the defaults of `res`'s kind in `obj` (in place; other kinds are left alone).
pub fn apply(res: &Resource, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    match (res.group, res.kind) {
        ("apps", "Deployment") => {
            // An HPA-managed chart leaves replicas out; the real server stores 1, which
            // `kubectl get` (READY 1/1) and clients read back.
            or_insert(&mut obj["spec"], "replicas", json!(1));
        }
        ("apps", "StatefulSet") => {
            let spec = &mut obj["spec"];
            or_insert(spec, "replicas", json!(1));
            or_insert(spec, "podManagementPolicy", json!("OrderedReady"));
            or_insert(spec, "revisionHistoryLimit", json!(10));
            or_insert(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            rolling_update(spec, &[("partition", json!(0))]);
        }
        ("apps", "DaemonSet") => {
            let spec = &mut obj["spec"];
            or_insert(spec, "revisionHistoryLimit", json!(10));
            rolling_update(
                spec,
                &[("maxUnavailable", json!(1)), ("maxSurge", json!(0))],
            );
        }
        ("batch", "Job") => {
            let spec = &mut obj["spec"];
            let both_unset = spec.get("completions").is_none_or(Value::is_null)
                && spec.get("parallelism").is_none_or(Value::is_null);
            if both_unset {
                or_insert(spec, "completions", json!(1));
            }
            or_insert(spec, "parallelism", json!(1));
            or_insert(spec, "backoffLimit", json!(6));
            or_insert(spec, "completionMode", json!("NonIndexed"));
            or_insert(spec, "suspend", json!(false));
        }
        ("batch", "CronJob") => {
            let spec = &mut obj["spec"];
            or_insert(spec, "concurrencyPolicy", json!("Allow"));
            or_insert(spec, "suspend", json!(false));
            or_insert(spec, "successfulJobsHistoryLimit", json!(3));
            or_insert(spec, "failedJobsHistoryLimit", json!(1));
        }
        ("", "PersistentVolumeClaim") => {
            or_insert(&mut obj["spec"], "volumeMode", json!("Filesystem"));
            or_insert(obj, "status", json!({"phase": "Pending"}));
        }
        ("", "Service") => {
            or_insert(obj, "status", json!({"loadBalancer": {}}));
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            // Defaulted in the storage version (autoscaling/v2): a v1 object without a CPU
            // target reads back with the 80% every HPA without metrics gets.
            let spec = &mut obj["spec"];
            or_insert(spec, "minReplicas", json!(1));
            let no_metrics = spec["metrics"].as_array().is_none_or(Vec::is_empty);
            if no_metrics {
                spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80}}}]);
            }
        }
        ("storage.k8s.io", "StorageClass") => {
            or_insert(obj, "reclaimPolicy", json!("Delete"));
            or_insert(obj, "volumeBindingMode", json!("Immediate"));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;

    #[test]
    fn statefulset_gets_a_rolling_update_with_partition_zero_and_keeps_what_is_set() {
        let sts = resources::find("apps", "v1", "statefulsets").unwrap();
        let mut obj = json!({"spec": {"serviceName": "db"}});
        apply(sts, &mut obj);
        assert_eq!(obj["spec"]["updateStrategy"]["type"], "RollingUpdate");
        assert_eq!(
            obj["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
            0
        );
        assert_eq!(obj["spec"]["replicas"], 1);
        let mut on_delete =
            json!({"spec": {"replicas": 3, "updateStrategy": {"type": "OnDelete"}}});
        apply(sts, &mut on_delete);
        assert_eq!(on_delete["spec"]["replicas"], 3);
        assert!(on_delete["spec"]["updateStrategy"]
            .get("rollingUpdate")
            .is_none());
    }

    #[test]
    fn job_completions_default_only_when_parallelism_is_unset_too() {
        let job = resources::find("batch", "v1", "jobs").unwrap();
        let mut obj = json!({"spec": {"template": {"spec": {"containers": []}}}});
        apply(job, &mut obj);
        assert_eq!(obj["spec"]["completions"], 1);
        assert_eq!(obj["spec"]["backoffLimit"], 6);
        let mut work_queue = json!({"spec": {"parallelism": 2, "template": {"spec": {}}}});
        apply(job, &mut work_queue);
        assert!(work_queue["spec"].get("completions").is_none());
    }
}
