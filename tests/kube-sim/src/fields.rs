//! Field sets: which fields of an object a manager owns, in the `FieldsV1` notation of
//! `metadata.managedFields` (`{"f:spec":{"f:replicas":{}}}`, list items as
//! `k:{"name":"web"}`, `"."` for a node that is owned itself and has owned children).
//!
//! Server-side apply decides conflicts and removals on these sets. Without per-type schemas,
//! structure is read off the JSON: maps are walked field by field, lists with a known merge
//! key (see `patch::merge_key`) item by item, and every other list is one atomic value.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::patch::merge_key;

/// One field's path: elements are `f:<field>` or `k:<json key object>`.
pub type FieldPath = Vec<String>;

/// A set of owned fields.
pub type FieldSet = BTreeSet<FieldPath>;

/// Metadata the server owns or that identifies the object: never tracked as owned fields.
const UNTRACKED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

/// The fields `obj` sets (apiVersion, kind, status and server-owned metadata excluded).
pub fn fields_of(obj: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(top) = obj.as_object() else {
        return out;
    };
    let mut prefix = Vec::new();
    for (k, v) in top {
        match k.as_str() {
            "apiVersion" | "kind" | "status" => {}
            "metadata" => {
                if let Some(m) = v.as_object() {
                    prefix.push("f:metadata".to_string());
                    for (mk, mv) in m {
                        if !UNTRACKED_META.contains(&mk.as_str()) {
                            walk_field(mk, mv, &mut prefix, &mut out);
                        }
                    }
                    prefix.pop();
                }
            }
            _ => walk_field(k, v, &mut prefix, &mut out),
        }
    }
    out
}

/// The `k:` element naming a list item by its merge key.
fn item_element(key: &str, item: &Value) -> Option<String> {
    let id = item.get(key)?;
    Some(format!("k:{}", json!({ key: id })))
}

fn walk_field(name: &str, v: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
    prefix.push(format!("f:{name}"));
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                walk_field(k, child, prefix, out);
            }
        }
        Value::Array(items) if !items.is_empty() => match merge_key(name, items) {
            Some(key) if items.iter().all(|i| i.get(key).is_some()) => {
                for item in items {
                    let element = item_element(key, item).expect("checked above");
                    prefix.push(element);
                    out.insert(prefix.clone());
                    if let Some(m) = item.as_object() {
                        for (k, child) in m {
                            walk_field(k, child, prefix, out);
                        }
                    }
                    prefix.pop();
                }
            }
            _ => {
                out.insert(prefix.clone());
            }
        },
        _ => {
            out.insert(prefix.clone());
        }
    }
    prefix.pop();
}

/// Renders a set as a `fieldsV1` object.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for element in path {
            node = node
                .entry(element.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("only objects are inserted");
        }
    }
    for path in set {
        let mut node = &mut root;
        for element in path {
            node = node[element].as_object_mut().expect("built above");
        }
        if !node.is_empty() {
            node.insert(".".into(), json!({}));
        }
    }
    Value::Object(root)
}

/// Parses a `fieldsV1` object (unknown shapes are skipped rather than refused).
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn walk(v: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        for (k, child) in m {
            if k == "." {
                out.insert(prefix.clone());
                continue;
            }
            prefix.push(k.clone());
            if child.as_object().is_some_and(Map::is_empty) {
                out.insert(prefix.clone());
            } else {
                walk(child, prefix, out);
            }
            prefix.pop();
        }
    }
    let mut out = FieldSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// Whether a list item matches a `k:` element's key object.
fn item_matches(item: &Value, key: &Map<String, Value>) -> bool {
    key.iter().all(|(k, v)| item.get(k) == Some(v))
}

fn parse_key(element: &str) -> Option<Map<String, Value>> {
    serde_json::from_str::<Value>(element.strip_prefix("k:")?)
        .ok()?
        .as_object()
        .cloned()
}

/// The value at `path`, if present.
pub fn get<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for element in path {
        cur = if let Some(f) = element.strip_prefix("f:") {
            cur.get(f)?
        } else {
            let key = parse_key(element)?;
            cur.as_array()?.iter().find(|i| item_matches(i, &key))?
        };
    }
    Some(cur)
}

/// Removes the field or list item at `path`; absent paths are ignored.
pub fn remove(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for element in parents {
        let next = if let Some(f) = element.strip_prefix("f:") {
            cur.get_mut(f)
        } else {
            let Some(key) = parse_key(element) else {
                return;
            };
            cur.as_array_mut()
                .and_then(|a| a.iter_mut().find(|i| item_matches(i, &key)))
        };
        let Some(next) = next else { return };
        cur = next;
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let (Some(key), Some(items)) = (parse_key(last), cur.as_array_mut()) {
        items.retain(|i| !item_matches(i, &key));
    }
}

/// `.spec.template.spec.containers[name="web"].image`, as conflict messages name fields.
pub fn display(path: &[String]) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(f) = element.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(key) = parse_key(element) {
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_through_fields_v1() {
        let obj = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:1", "args": ["a"]}
            ]}}},
            "status": {"replicas": 1}
        });
        let set = fields_of(&obj);
        let v1 = to_fields_v1(&set);
        assert_eq!(v1["f:metadata"]["f:labels"]["f:app"], json!({}));
        assert!(v1["f:metadata"].get("f:name").is_none());
        assert!(v1.get("f:status").is_none());
        let item = &v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
        assert_eq!(item["."], json!({}));
        assert_eq!(item["f:image"], json!({}));
        assert_eq!(item["f:args"], json!({}));
        assert_eq!(from_fields_v1(&v1), set);

        let image: FieldPath = [
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            "k:{\"name\":\"web\"}",
            "f:image",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(get(&obj, &image), Some(&json!("nginx:1")));
        assert_eq!(
            display(&image),
            ".spec.template.spec.containers[name=\"web\"].image"
        );
        let mut removed = obj.clone();
        remove(&mut removed, &image[..5]);
        assert_eq!(removed["spec"]["template"]["spec"]["containers"], json!([]));
    }
}
