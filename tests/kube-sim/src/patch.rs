//! The three PATCH flavours clients send.
//!
//! - JSON merge patch (RFC 7386, `application/merge-patch+json`): `kubectl label`, `kubectl
//!   patch --type merge`, client-side apply of custom resources.
//! - JSON patch (RFC 6902, `application/json-patch+json`): `kubectl patch --type json`.
//! - Strategic merge patch (`application/strategic-merge-patch+json`): kubectl's default for
//!   built-in kinds (`kubectl patch`, client-side `kubectl apply`). Simplified here: merge-patch
//!   semantics, plus merging of well-known lists by their merge key (containers by `name`, ...),
//!   the `$patch: delete|replace` directives, `$setElementOrder/<list>` and `$retainKeys`.

use serde_json::{Map, Value};

/// RFC 7386: objects merge recursively, `null` deletes, everything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target_map = target.as_object_mut().expect("made an object above");
    for (k, v) in patch_map {
        if v.is_null() {
            target_map.remove(k);
        } else {
            merge_patch(target_map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Why a JSON patch could not be applied; becomes a 422/400 Status on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("the patch is not a JSON array of operations")]
    NotAnArray,
    #[error("invalid operation {0}")]
    BadOperation(String),
    #[error("the path {0:?} does not exist")]
    MissingPath(String),
    #[error("testing value {path:?} failed")]
    TestFailed { path: String },
}

/// Decodes a JSON pointer (RFC 6901) into reference tokens.
fn pointer_tokens(pointer: &str) -> Result<Vec<String>, PatchError> {
    if pointer.is_empty() {
        return Ok(vec![]);
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| PatchError::BadOperation(format!("path {pointer:?} must start with '/'")))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn array_index(token: &str, len: usize, allow_end: bool, path: &str) -> Result<usize, PatchError> {
    if allow_end && token == "-" {
        return Ok(len);
    }
    let i: usize = token
        .parse()
        .map_err(|_| PatchError::MissingPath(path.to_string()))?;
    if i > len || (!allow_end && i == len) {
        return Err(PatchError::MissingPath(path.to_string()));
    }
    Ok(i)
}

/// The parent container of the pointer's target, and the last token.
fn parent_mut<'a>(doc: &'a mut Value, path: &str) -> Result<(&'a mut Value, String), PatchError> {
    let mut tokens = pointer_tokens(path)?;
    let last = tokens
        .pop()
        .ok_or_else(|| PatchError::BadOperation("cannot operate on the whole document".into()))?;
    let mut cur = doc;
    for t in &tokens {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => {
                let i = array_index(t, a.len(), false, path)?;
                a.get_mut(i)
            }
            _ => None,
        }
        .ok_or_else(|| PatchError::MissingPath(path.to_string()))?;
    }
    Ok((cur, last))
}

fn get_at(doc: &Value, path: &str) -> Result<Value, PatchError> {
    let mut cur = doc;
    for t in pointer_tokens(path)? {
        cur = match cur {
            Value::Object(m) => m.get(&t),
            Value::Array(a) => a.get(array_index(&t, a.len(), false, path)?),
            _ => None,
        }
        .ok_or_else(|| PatchError::MissingPath(path.to_string()))?;
    }
    Ok(cur.clone())
}

fn add_at(doc: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = parent_mut(doc, path)?;
    match parent {
        Value::Object(m) => {
            m.insert(last, value);
        }
        Value::Array(a) => {
            let i = array_index(&last, a.len(), true, path)?;
            a.insert(i, value);
        }
        _ => return Err(PatchError::MissingPath(path.to_string())),
    }
    Ok(())
}

fn remove_at(doc: &mut Value, path: &str) -> Result<Value, PatchError> {
    let (parent, last) = parent_mut(doc, path)?;
    match parent {
        Value::Object(m) => m
            .remove(&last)
            .ok_or_else(|| PatchError::MissingPath(path.to_string())),
        Value::Array(a) => {
            let i = array_index(&last, a.len(), false, path)?;
            Ok(a.remove(i))
        }
        _ => Err(PatchError::MissingPath(path.to_string())),
    }
}

/// RFC 6902: add, remove, replace, move, copy, test. Atomic: on error `doc` is unchanged.
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let ops = patch.as_array().ok_or(PatchError::NotAnArray)?;
    let mut work = doc.clone();
    for op in ops {
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| PatchError::BadOperation(op.to_string()))?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| PatchError::BadOperation(op.to_string()))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| PatchError::BadOperation(format!("{name} needs a value: {op}")))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| PatchError::BadOperation(format!("{name} needs from: {op}")))
        };
        match name {
            "add" => add_at(&mut work, path, value()?)?,
            "remove" => {
                remove_at(&mut work, path)?;
            }
            "replace" => {
                get_at(&work, path)?;
                if path.is_empty() {
                    work = value()?;
                } else {
                    remove_at(&mut work, path)?;
                    add_at(&mut work, path, value()?)?;
                }
            }
            "move" => {
                let v = remove_at(&mut work, from()?)?;
                add_at(&mut work, path, v)?;
            }
            "copy" => {
                let v = get_at(&work, from()?)?;
                add_at(&mut work, path, v)?;
            }
            "test" => {
                if get_at(&work, path)? != value()? {
                    return Err(PatchError::TestFailed {
                        path: path.to_string(),
                    });
                }
            }
            other => return Err(PatchError::BadOperation(format!("unknown op {other:?}"))),
        }
    }
    *doc = work;
    Ok(())
}

/// The merge key of a list field in built-in types, by field name. A field-name table is a
/// simplification of the per-type schema: it holds for the fields charts actually use.
/// `ports` is keyed by `containerPort` in containers and by `port` in Services, so the key is
/// chosen by what the patch elements carry.
pub(crate) fn merge_key(field: &str, elements: &[Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "conditions" => Some(if field == "conditions" {
            "type"
        } else {
            "name"
        }),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "hostAliases" => Some("ip"),
        "ports" => {
            if elements.iter().any(|e| e.get("containerPort").is_some()) {
                Some("containerPort")
            } else {
                Some("port")
            }
        }
        _ => None,
    }
}

/// Strategic merge patch (see the module doc for what is covered).
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replacement = patch.clone();
        strip_directives(&mut replacement);
        *target = replacement;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target_map = target.as_object_mut().expect("made an object above");
    let mut orders: Vec<(String, Vec<Value>)> = Vec::new();
    for (k, v) in patch_map {
        if let Some(list) = k.strip_prefix("$setElementOrder/") {
            if let Value::Array(order) = v {
                orders.push((list.to_string(), order.clone()));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            target_map.remove(k);
            continue;
        }
        match (
            v,
            merge_key(k, v.as_array().map(Vec::as_slice).unwrap_or(&[])),
        ) {
            (Value::Array(patch_list), Some(key)) => {
                let existing = target_map.entry(k.clone()).or_insert(Value::Array(vec![]));
                if !existing.is_array() {
                    *existing = Value::Array(vec![]);
                }
                merge_list(existing.as_array_mut().expect("array"), patch_list, key);
            }
            _ => strategic_merge_patch(target_map.entry(k.clone()).or_insert(Value::Null), v),
        }
    }
    for (list, order) in orders {
        if let Some(Value::Array(items)) = target_map.get_mut(&list) {
            let key = merge_key(&list, &order).unwrap_or("name");
            reorder(items, &order, key);
        }
    }
    if let Some(Value::Array(retain)) = patch_map.get("$retainKeys") {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        target_map.retain(|k, _| keep.contains(&k.as_str()));
    }
}

/// Merges list elements by `key`; `$patch: delete` elements remove their match.
fn merge_list(existing: &mut Vec<Value>, patch: &[Value], key: &str) {
    for p in patch {
        let id = p.get(key);
        let pos = id.and_then(|id| existing.iter().position(|e| e.get(key) == Some(id)));
        let delete = p.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                existing.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge_patch(&mut existing[i], p),
            (None, false) => {
                let mut fresh = p.clone();
                strip_directives(&mut fresh);
                existing.push(fresh);
            }
        }
    }
}

/// Orders items as `$setElementOrder` lists them; items it does not list keep their relative
/// order after the listed ones.
fn reorder(items: &mut [Value], order: &[Value], key: &str) {
    let rank = |v: &Value| {
        let id = v.get(key);
        order
            .iter()
            .position(|o| o.get(key).is_some() && o.get(key) == id)
            .unwrap_or(usize::MAX)
    };
    items.sort_by_key(rank);
}

/// Removes `$`-directives from a value that is inserted as-is.
fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386_examples() {
        // Cases from RFC 7386 appendix A.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (mut target, patch, want) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want, "patch {patch}");
        }
    }

    #[test]
    fn json_patch_operations() {
        let mut doc = json!({"data": {"a": "b"}, "list": [1, 2]});
        json_patch(
            &mut doc,
            &json!([
                {"op": "test", "path": "/data/a", "value": "b"},
                {"op": "replace", "path": "/data/a", "value": "c"},
                {"op": "add", "path": "/data/x~1y", "value": "slash"},
                {"op": "add", "path": "/list/-", "value": 3},
                {"op": "add", "path": "/list/0", "value": 0},
                {"op": "remove", "path": "/list/1"},
                {"op": "copy", "from": "/data/a", "path": "/copied"},
                {"op": "move", "from": "/copied", "path": "/moved"}
            ]),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"data": {"a": "c", "x/y": "slash"}, "list": [0, 2, 3], "moved": "c"})
        );
    }

    #[test]
    fn json_patch_is_atomic_and_reports_failures() {
        let mut doc = json!({"a": 1});
        let before = doc.clone();
        let err = json_patch(
            &mut doc,
            &json!([{"op": "replace", "path": "/a", "value": 2}, {"op": "test", "path": "/a", "value": 1}]),
        )
        .unwrap_err();
        assert_eq!(err, PatchError::TestFailed { path: "/a".into() });
        assert_eq!(doc, before);
        assert!(matches!(
            json_patch(&mut doc, &json!([{"op": "remove", "path": "/nope"}])),
            Err(PatchError::MissingPath(_))
        ));
        assert!(matches!(
            json_patch(
                &mut doc,
                &json!([{"op": "replace", "path": "/nope", "value": 1}])
            ),
            Err(PatchError::MissingPath(_))
        ));
        assert_eq!(
            json_patch(&mut doc, &json!({})),
            Err(PatchError::NotAnArray)
        );
        assert!(matches!(
            json_patch(&mut doc, &json!([{"op": "frobnicate", "path": "/a"}])),
            Err(PatchError::BadOperation(_))
        ));
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut dep = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80}],
             "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "side", "image": "busybox"}
        ]}}}});
        // The shape kubectl's client-side apply sends.
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "side"}, {"name": "web"}],
            "containers": [{"name": "web", "image": "nginx:1.26",
                "$setElementOrder/env": [{"name": "A"}, {"name": "C"}],
                "env": [{"name": "B", "$patch": "delete"}, {"name": "C", "value": "3"}]}]
        }}}});
        strategic_merge_patch(&mut dep, &patch);
        assert_eq!(
            dep,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "side", "image": "busybox"},
                {"name": "web", "image": "nginx:1.26", "ports": [{"containerPort": 80}],
                 "env": [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}]}
            ]}}}})
        );
    }

    #[test]
    fn strategic_replaces_unkeyed_lists_and_honours_directives() {
        let mut obj = json!({"spec": {"args": ["a", "b"], "strategy": {"type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1}}, "sel": {"x": "1"}}});
        strategic_merge_patch(
            &mut obj,
            &json!({"spec": {"args": ["c"], "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
                "sel": {"$patch": "replace", "y": "2"}}}),
        );
        assert_eq!(
            obj,
            json!({"spec": {"args": ["c"], "strategy": {"type": "Recreate"}, "sel": {"y": "2"}}})
        );
        let mut svc = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}]}});
        strategic_merge_patch(
            &mut svc,
            &json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}}),
        );
        assert_eq!(
            svc,
            json!({"spec": {"ports": [{"port": 80, "name": "http", "targetPort": 8080}, {"port": 443}]}})
        );
    }
}
