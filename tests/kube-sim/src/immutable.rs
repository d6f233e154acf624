//! Update validation of the fields the real API server refuses to change once set, worded as
//! it words them, because clients surface the message as is: `helm upgrade` fails with
//! `cannot patch "db" with kind StatefulSet: StatefulSet.apps "db" is invalid: spec:
//! Forbidden: ...`, and users search for that text.
//!
//! * StatefulSet: only `replicas`, `ordinals`, `template`, `updateStrategy`,
//!   `revisionHistoryLimit`, `persistentVolumeClaimRetentionPolicy` and `minReadySeconds` may
//!   change (so not `volumeClaimTemplates`, `serviceName`, `selector`, `podManagementPolicy`).
//! * Job: `spec.selector`, `spec.template` and `spec.completionMode` are immutable (the
//!   scheduling directives a suspended Job may change are not modelled).
//! * Deployment, ReplicaSet, DaemonSet: `spec.selector` is immutable (apps/v1).
//!
//! The real server prints the Go value of a rejected struct (`core.PodTemplateSpec{ObjectMeta:
//! ...}`, thousands of characters); kube-sim elides it as `core.PodTemplateSpec{...}`.

use serde_json::Value;

use crate::resources::Resource;
use crate::status::ApiError;

/// The StatefulSet spec fields an update may change.
const STATEFULSET_MUTABLE: &[&str] = &[
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

/// `Kind.group` as the server names a type in an Invalid message (`Kind` for core types).
fn qualified_kind(res: &Resource) -> String {
    if res.group.is_empty() {
        res.kind.to_string()
    } else {
        format!("{}.{}", res.kind, res.group)
    }
}

fn spec_field<'a>(obj: &'a Value, field: &str) -> Option<&'a Value> {
    obj.get("spec")?.get(field).filter(|v| !v.is_null())
}

/// The spec without the fields an update may change.
fn frozen_part(spec: Option<&Value>, mutable: &[&str]) -> Value {
    let mut v = spec.cloned().unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.retain(|k, _| !mutable.contains(&k.as_str()));
    }
    v
}

/// Refuses an update from `old` to `new` that changes a field the real server keeps fixed.
pub fn check(res: &Resource, old: &Value, new: &Value, name: &str) -> Result<(), ApiError> {
    let invalid = |msg: String| ApiError::invalid(&qualified_kind(res), name, msg);
    let changed = |field: &str| spec_field(old, field) != spec_field(new, field);
    let selector =
        || "spec.selector: Invalid value: v1.LabelSelector{...}: field is immutable".to_string();
    match (res.group, res.kind) {
        ("apps", "StatefulSet")
            if frozen_part(old.get("spec"), STATEFULSET_MUTABLE)
                != frozen_part(new.get("spec"), STATEFULSET_MUTABLE) =>
        {
            let listed: Vec<String> = STATEFULSET_MUTABLE
                .iter()
                .map(|f| format!("'{f}'"))
                .collect();
            let (last, rest) = listed.split_last().expect("non-empty");
            return Err(invalid(format!(
                "spec: Forbidden: updates to statefulset spec for fields other than {} and {last} are forbidden",
                rest.join(", ")
            )));
        }
        ("batch", "Job") => {
            let mut errors = Vec::new();
            if changed("selector") {
                errors.push(selector());
            }
            if changed("template") {
                errors.push(
                    "spec.template: Invalid value: core.PodTemplateSpec{...}: field is immutable"
                        .to_string(),
                );
            }
            if changed("completionMode") {
                let mode = spec_field(new, "completionMode")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                errors.push(format!(
                    "spec.completionMode: Invalid value: \"{mode}\": field is immutable"
                ));
            }
            if !errors.is_empty() {
                return Err(invalid(aggregate(errors)));
            }
        }
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet") if changed("selector") => {
            return Err(invalid(selector()));
        }
        _ => {}
    }
    Ok(())
}

/// Several field errors as the server joins them: `[a, b]`, or just `a` alone.
fn aggregate(errors: Vec<String>) -> String {
    if errors.len() == 1 {
        errors.into_iter().next().expect("one")
    } else {
        format!("[{}]", errors.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;
    use serde_json::json;

    #[test]
    fn statefulset_claim_templates_are_frozen_but_template_and_replicas_are_not() {
        let sts = resources::find("apps", "v1", "statefulsets").unwrap();
        let old = json!({"spec": {"replicas": 1, "serviceName": "db", "template": {"a": 1},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}}]}});
        let mut scaled = old.clone();
        scaled["spec"]["replicas"] = json!(3);
        scaled["spec"]["template"] = json!({"a": 2});
        assert!(check(sts, &old, &scaled, "db").is_ok());
        let mut grown = old.clone();
        grown["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] =
            json!("2Gi");
        let err = check(sts, &old, &grown, "db").unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(
            err.message,
            "StatefulSet.apps \"db\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
        );
    }

    #[test]
    fn job_template_is_immutable() {
        let job = resources::find("batch", "v1", "jobs").unwrap();
        let old = json!({"spec": {"template": {"spec": {"containers": [{"image": "a"}]}}}});
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("b");
        let err = check(job, &old, &new, "migrate").unwrap_err();
        assert_eq!(
            err.message,
            "Job.batch \"migrate\" is invalid: spec.template: Invalid value: core.PodTemplateSpec{...}: field is immutable"
        );
        let mut labelled = old.clone();
        labelled["metadata"] = json!({"labels": {"x": "y"}});
        assert!(check(job, &old, &labelled, "migrate").is_ok());
    }
}
