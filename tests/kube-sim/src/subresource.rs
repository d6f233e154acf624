//! The `status` and `scale` subresources, and the status/spec split they imply.
//!
//! On a real server a type with a status subresource has two writers: users own `spec` (the
//! main resource ignores `status` in their writes) and controllers own `status` (the `/status`
//! endpoint ignores everything else). `kubectl scale` and autoscalers use `/scale`, an
//! `autoscaling/v1` Scale view of `spec.replicas`. kube-sim keeps the same split so that its
//! own deployment controller and clients cannot overwrite each other's half.

use serde_json::{json, Value};

use crate::resources::Resource;
use crate::status::ApiError;

/// For writes to the main resource: the stored status wins over the body's (dropped on create),
/// as the registry's `PrepareForCreate`/`PrepareForUpdate` do for types with `/status`.
pub fn keep_status(res: &Resource, current: Option<&Value>, new: &mut Value) {
    if !res.has_subresource("status") {
        return;
    }
    let Some(obj) = new.as_object_mut() else {
        return;
    };
    match current.and_then(|c| c.get("status")) {
        Some(s) => {
            obj.insert("status".into(), s.clone());
        }
        None => {
            obj.remove("status");
        }
    }
}

/// For writes to `/status`: the current object with only `status` taken from `new`. The
/// body's resourceVersion is kept so a stale status update still conflicts.
pub fn only_status(current: &Value, new: &Value) -> Value {
    let mut out = current.clone();
    match new.get("status") {
        Some(s) => out["status"] = s.clone(),
        None => {
            if let Some(o) = out.as_object_mut() {
                o.remove("status");
            }
        }
    }
    if let Some(rv) = new.pointer("/metadata/resourceVersion") {
        out["metadata"]["resourceVersion"] = rv.clone();
    }
    out
}

/// `matchLabels` (and simple `matchExpressions`) as a label selector string, the form Scale's
/// `status.selector` carries.
fn selector_string(selector: &Value) -> String {
    let mut parts: Vec<String> = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    for e in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        parts.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    parts.join(",")
}

/// The `autoscaling/v1` Scale view of a Deployment or ReplicaSet.
pub fn scale_of(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let mut metadata = json!({});
    for f in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta.get(f) {
            metadata[f] = v.clone();
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {
            "replicas": obj["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector_string(&obj["spec"]["selector"]),
        },
    })
}

/// Writes a Scale's `spec.replicas` back into the object (and its resourceVersion, for the
/// optimistic-concurrency check the store makes).
pub fn with_scale(current: &Value, scale: &Value) -> Result<Value, ApiError> {
    let replicas = scale
        .pointer("/spec/replicas")
        .map(|r| r.as_i64().filter(|n| *n >= 0))
        .unwrap_or(Some(0))
        .ok_or_else(|| {
            ApiError::unprocessable(format!(
                "Scale.autoscaling \"{}\" is invalid: spec.replicas: Invalid value: {}: must be greater than or equal to 0",
                current["metadata"]["name"].as_str().unwrap_or_default(),
                scale["spec"]["replicas"]
            ))
        })?;
    let mut out = current.clone();
    out["spec"]["replicas"] = json!(replicas);
    if let Some(rv) = scale
        .pointer("/metadata/resourceVersion")
        .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
    {
        out["metadata"]["resourceVersion"] = rv.clone();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_round_trip_and_status_split() {
        let d = json!({
            "metadata": {"name": "web", "namespace": "demo", "resourceVersion": "7"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": 2},
        });
        let s = scale_of(&d);
        assert_eq!(s["status"]["selector"], "app=web");
        assert_eq!(s["spec"]["replicas"], 2);
        let mut s2 = s.clone();
        s2["spec"]["replicas"] = json!(5);
        assert_eq!(with_scale(&d, &s2).unwrap()["spec"]["replicas"], 5);
        s2["spec"]["replicas"] = json!(-1);
        assert_eq!(with_scale(&d, &s2).unwrap_err().code, 422);

        let mut body = d.clone();
        body["spec"]["replicas"] = json!(9);
        body["status"] = json!({"replicas": 1});
        let st = only_status(&d, &body);
        assert_eq!(st["spec"]["replicas"], 2);
        assert_eq!(st["status"]["replicas"], 1);
    }
}
