//! `metadata.managedFields` and server-side apply.
//!
//! helm 4 installs with server-side apply and `kubectl apply --server-side` relies on its
//! ownership rules, so the sim keeps the record the real server keeps: one entry per manager
//! and operation with the fields it set. An Update (POST/PUT/non-apply PATCH) takes the
//! fields whose values it changed; an Apply owns exactly the fields in its configuration,
//! removes the ones it owned before and no longer sets (unless someone else owns them too),
//! and is refused with a conflict when it would change a value another manager owns —
//! unless forced, which moves ownership. This is a simplification of structured-merge-diff:
//! structure comes from the JSON and the merge-key table, not from OpenAPI schemas.

use serde_json::{json, Value};

use crate::fields::{self, FieldPath, FieldSet};
use crate::patch;
use crate::status::ApiError;

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    fields: FieldSet,
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn read(obj: Option<&Value>) -> Vec<Entry> {
    let Some(list) = obj.and_then(|o| o["metadata"]["managedFields"].as_array()) else {
        return Vec::new();
    };
    list.iter()
        .map(|e| Entry {
            manager: e["manager"].as_str().unwrap_or_default().to_string(),
            operation: e["operation"].as_str().unwrap_or_default().to_string(),
            api_version: e["apiVersion"].as_str().unwrap_or_default().to_string(),
            time: e["time"].as_str().unwrap_or_default().to_string(),
            fields: fields::from_fields_v1(&e["fieldsV1"]),
        })
        .collect()
}

/// Stores the entries on `obj`; managers left owning nothing are dropped, as on the server.
fn write(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields::to_fields_v1(&e.fields),
            })
        })
        .collect();
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let meta = obj["metadata"]
        .as_object_mut()
        .expect("made an object above");
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

/// The entry of `manager` for `operation`, created if missing.
fn entry<'a>(
    entries: &'a mut Vec<Entry>,
    manager: &str,
    operation: &str,
    api_version: &str,
) -> &'a mut Entry {
    let pos = entries
        .iter()
        .position(|e| e.manager == manager && e.operation == operation);
    let i = match pos {
        Some(i) => i,
        None => {
            entries.push(Entry {
                manager: manager.to_string(),
                operation: operation.to_string(),
                api_version: api_version.to_string(),
                time: now(),
                fields: FieldSet::new(),
            });
            entries.len() - 1
        }
    };
    let e = &mut entries[i];
    e.api_version = api_version.to_string();
    e.time = now();
    e
}

/// A path that names a list item (`k:`) rather than a field value.
fn is_item(path: &FieldPath) -> bool {
    path.last().is_some_and(|e| e.starts_with("k:"))
}

/// Records a non-apply write by `manager`: it takes the fields whose values it set or
/// changed; fields the write removed are dropped from every manager. Managed fields a client
/// sent in the body are ignored (the old ones are the record).
pub fn record_update(old: Option<&Value>, new: &mut Value, manager: &str, api_version: &str) {
    let mut entries = read(old);
    let now_fields = fields::fields_of(new);
    let changed: FieldSet = now_fields
        .iter()
        .filter(|p| {
            let before = old.and_then(|o| fields::get(o, p));
            before.is_none() || (!is_item(p) && before != fields::get(new, p))
        })
        .cloned()
        .collect();
    for e in &mut entries {
        e.fields.retain(|p| now_fields.contains(p));
        if e.manager != manager || e.operation != "Update" {
            e.fields.retain(|p| !changed.contains(p));
        }
    }
    if !changed.is_empty() {
        entry(&mut entries, manager, "Update", api_version)
            .fields
            .extend(changed);
    }
    write(new, &entries);
}

/// Server-side apply of `applied` by `manager` onto `current` (`None`: the object is
/// created). Returns the object to store, managed fields included.
pub fn apply(
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    api_version: &str,
    force: bool,
    plural: &str,
    name: &str,
) -> Result<Value, ApiError> {
    let mut entries = read(current);
    let base = current.cloned().unwrap_or_else(|| json!({}));
    let applied_fields = fields::fields_of(applied);

    // (manager as conflict messages print it, field) pairs.
    let mut conflicts: Vec<(String, FieldPath)> = Vec::new();
    for p in applied_fields.iter().filter(|p| !is_item(p)) {
        let Some(now) = fields::get(&base, p) else {
            continue;
        };
        if Some(now) == fields::get(applied, p) {
            continue;
        }
        for e in entries.iter().filter(|e| e.manager != manager) {
            if e.fields.contains(p) {
                let who = if e.operation == "Update" {
                    format!("{:?} using {} at {}", e.manager, e.api_version, e.time)
                } else {
                    format!("{:?}", e.manager)
                };
                conflicts.push((who, p.clone()));
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            let described: Vec<(String, String)> = conflicts
                .iter()
                .map(|(m, p)| (m.clone(), fields::display(p)))
                .collect();
            return Err(ApiError::apply_conflicts(plural, name, &described));
        }
        for e in entries.iter_mut().filter(|e| e.manager != manager) {
            e.fields.retain(|p| !conflicts.iter().any(|(_, c)| c == p));
        }
    }

    let previous = entries
        .iter()
        .find(|e| e.manager == manager && e.operation == "Apply")
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut merged = base;
    let mut config = applied.clone();
    if let Some(m) = config["metadata"].as_object_mut() {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    patch::strategic_merge_patch(&mut merged, &config);
    // Deepest paths first, so a removed item's fields go before the item.
    let dropped: Vec<&FieldPath> = previous.difference(&applied_fields).collect();
    for p in dropped.into_iter().rev() {
        let shared = entries.iter().any(|e| {
            !(e.manager == manager && e.operation == "Apply")
                && e.fields.iter().any(|f| f.starts_with(p))
        });
        if !shared {
            fields::remove(&mut merged, p);
        }
    }
    entry(&mut entries, manager, "Apply", api_version).fields = applied_fields;
    write(&mut merged, &entries);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data})
    }

    fn owners(obj: &Value) -> Vec<(String, String)> {
        obj["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["manager"].as_str().unwrap().to_string(),
                    e["operation"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn apply_owns_removes_and_conflicts() {
        let first = apply(
            None,
            &cm(json!({"a": "1", "b": "2"})),
            "m1",
            "v1",
            false,
            "configmaps",
            "c",
        )
        .unwrap();
        assert_eq!(first["data"], json!({"a": "1", "b": "2"}));
        assert_eq!(owners(&first), [("m1".into(), "Apply".into())]);
        assert_eq!(
            first["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:data": {"f:a": {}, "f:b": {}}})
        );

        // Dropping `b` from the config removes it.
        let second = apply(
            Some(&first),
            &cm(json!({"a": "1"})),
            "m1",
            "v1",
            false,
            "configmaps",
            "c",
        )
        .unwrap();
        assert_eq!(second["data"], json!({"a": "1"}));

        // Another manager setting the same value shares it; a different value conflicts.
        let shared = apply(
            Some(&second),
            &cm(json!({"a": "1"})),
            "m2",
            "v1",
            false,
            "configmaps",
            "c",
        )
        .unwrap();
        assert_eq!(owners(&shared).len(), 2);
        let err = apply(
            Some(&shared),
            &cm(json!({"a": "9"})),
            "m3",
            "v1",
            false,
            "configmaps",
            "c",
        )
        .unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(err.causes.len(), 2);
        assert_eq!(err.causes[0]["field"], ".data.a");
        assert!(
            err.message.starts_with("Apply failed with 2 conflicts"),
            "{}",
            err.message
        );

        // Forcing takes the field from both.
        let forced = apply(
            Some(&shared),
            &cm(json!({"a": "9"})),
            "m3",
            "v1",
            true,
            "configmaps",
            "c",
        )
        .unwrap();
        assert_eq!(forced["data"]["a"], "9");
        assert_eq!(owners(&forced), [("m3".into(), "Apply".into())]);
    }

    #[test]
    fn updates_take_the_fields_they_change() {
        let applied = apply(
            None,
            &cm(json!({"a": "1"})),
            "helm",
            "v1",
            false,
            "configmaps",
            "c",
        )
        .unwrap();
        let mut edited = applied.clone();
        edited["data"]["a"] = json!("2");
        edited["data"]["z"] = json!("3");
        record_update(Some(&applied), &mut edited, "kubectl-edit", "v1");
        assert_eq!(owners(&edited), [("kubectl-edit".into(), "Update".into())]);
        let err = apply(
            Some(&edited),
            &cm(json!({"a": "1"})),
            "helm",
            "v1",
            false,
            "configmaps",
            "c",
        )
        .unwrap_err();
        assert!(
            err.message
                .contains("conflict with \"kubectl-edit\" using v1 at "),
            "{}",
            err.message
        );
    }
}
