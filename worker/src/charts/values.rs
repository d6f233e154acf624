//! Merging Helm values.
//!
//! A deployment event's `configurationChange.values` is layered over the chart's own
//! `values.yaml` the way Helm layers `--values` files: maps merge key by key, recursively, and
//! everything else the overlay says wins outright. Lists are *not* merged element-wise — Helm
//! replaces them too, and a partial list merge would silently keep entries the user meant to
//! drop.

use serde_json::Value;

/// Merges `overlay` into `base` in place.
///
/// Objects merge recursively; any other overlay value (array, string, number, bool, `null`)
/// replaces what `base` had at that place, including a whole object. A `null` in the overlay is
/// kept as `null` (Helm treats it as "unset", which is the chart's business, not ours).
pub fn deep_merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(key) {
                    Some(existing) => deep_merge(existing, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_merge_recursively() {
        let mut base = json!({
            "image": {"repository": "carts", "tag": "0.1.0"},
            "replicaCount": 1,
            "service": {"port": 8080}
        });
        deep_merge(
            &mut base,
            &json!({"image": {"tag": "0.2.0"}, "resources": {"limits": {"cpu": "1"}}}),
        );
        assert_eq!(
            base,
            json!({
                "image": {"repository": "carts", "tag": "0.2.0"},
                "replicaCount": 1,
                "service": {"port": 8080},
                "resources": {"limits": {"cpu": "1"}}
            })
        );
    }

    #[test]
    fn arrays_scalars_and_null_replace() {
        let mut base = json!({
            "list": [1, 2, 3],
            "scalar": "a",
            "object": {"x": 1},
            "gone": {"y": 2}
        });
        deep_merge(
            &mut base,
            &json!({"list": [9], "scalar": {"now": "object"}, "object": "now scalar", "gone": null}),
        );
        assert_eq!(
            base,
            json!({
                "list": [9],
                "scalar": {"now": "object"},
                "object": "now scalar",
                "gone": null
            })
        );
    }

    #[test]
    fn non_object_base_is_replaced_and_empty_overlay_changes_nothing() {
        let mut base = json!(null);
        deep_merge(&mut base, &json!({"a": 1}));
        assert_eq!(base, json!({"a": 1}));

        let before = json!({"a": {"b": [1]}});
        let mut base = before.clone();
        deep_merge(&mut base, &json!({}));
        assert_eq!(base, before);
    }
}
