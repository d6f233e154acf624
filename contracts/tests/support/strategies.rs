//! Generators of event documents for the property tests: arbitrary JSON with the member
//! names that matter, valid events of every kind helm-service reads, edits of them (values of
//! the wrong type, control characters, huge strings, members named twice) and byte damage.
//!
//! Shared by `contracts/tests/properties.rs` and `worker/tests/intake_properties.rs`.

#![allow(dead_code)]

use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Cases per property: few enough that the whole file runs in a few seconds on a loaded
/// machine, unless `PROPTEST_CASES` says otherwise.
pub fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Member names worth hitting: the attributes, Keptn's extensions and data fields.
const KEYS: &[&str] = &[
    "specversion",
    "id",
    "type",
    "source",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
    "data",
    "data_base64",
    "shkeptncontext",
    "triggeredid",
    "gitcommitid",
    "shkeptnspecversion",
    "traceparent",
    "tracestate",
    "project",
    "stage",
    "service",
    "labels",
    "status",
    "result",
    "message",
    "deployment",
    "deploymentstrategy",
    "deploymentURIsLocal",
    "deploymentURIsPublic",
    "deploymentNames",
    "gitCommit",
    "configurationChange",
    "values",
    "action",
    "name",
    "value",
    "problem",
];

/// Strings that matter here: names, strategies, statuses, trace contexts, control
/// characters, non-ASCII, long ones; and arbitrary Unicode.
pub fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "", " ", "1.0", "0.3", "sockshop", "dev", "carts", "Carts_1", "a", "-", "a-", "1a",
            "direct", "duplicate", "blue_green_service", "user_managed", "canary", "scaling",
            "succeeded", "errored", "pass", "fail", "\n", "a\r\nb", "\u{0}", "\u{7f}", "\u{85}",
            "é", "\u{2028}", "application/json", "text/plain", "2021-06-01T10:00:00Z",
            "not a time", "https://example.com/s", "helm-service", "shipyard-controller",
            "sh.keptn.event.deployment.triggered", "sh.keptn.event.action.triggered",
            "sh.keptn.event.service.delete.finished",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "congo=t61rcWkgMzE",
            "{\"project\": \"p\", \"project\": \"q\"}", "eyJwcm9qZWN0IjoicCJ9",
        ])
        .prop_map(str::to_owned),
        2 => "[a-z0-9-]{0,70}",
        2 => any::<String>(),
        1 => (any::<char>(), 60usize..300).prop_map(|(c, n)| c.to_string().repeat(n)),
    ]
}

pub fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => string(),
    ]
}

pub fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        string().prop_map(Value::String),
    ]
}

/// Arbitrary JSON, a few levels deep, with the interesting member names.
pub fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A valid event of each kind helm-service reads.
pub fn template() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        "deployment.triggered",
        "release.triggered",
        "rollback.triggered",
        "action.triggered",
        "service.delete.finished",
        "deployment.finished",
    ])
    .prop_map(|kind| {
        json!({
            "specversion": "1.0",
            "id": "c4d3a334-6cb9-4e8c-a372-7e0b45942f53",
            "source": "shipyard-controller",
            "type": format!("sh.keptn.event.{kind}"),
            "datacontenttype": "application/json",
            "time": "2026-11-24T10:00:00Z",
            "shkeptncontext": "a3e5f16d-8888-4720-82c7-6995062905c1",
            "triggeredid": "7b4a1f0e-1111-4c1a-9d55-2f7d6a1c0001",
            "gitcommitid": "521747298a3790fde1710f3aa2d03b55020575aa",
            "shkeptnspecversion": "0.2.4",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "congo=t61rcWkgMzE",
            "data": {
                "project": "sockshop", "stage": "dev", "service": "carts",
                "labels": {"owner": "team-a"},
                "result": "pass", "status": "succeeded",
                "configurationChange": {"values": {"image": "carts:0.1", "replicas": 2}},
                "deployment": {
                    "deploymentstrategy": "duplicate",
                    "deploymentURIsLocal": ["http://carts.sockshop-dev"],
                    "deploymentNames": ["canary"],
                    "gitCommit": "abc"
                },
                "action": {"name": "scale", "action": "scaling", "value": "+1"},
                "problem": {"problemTitle": "cpu", "rootCause": "load"}
            }
        })
    })
}

/// One change to a document: set or remove a member at the top level, in `data` or in a
/// block of `data`.
#[derive(Debug, Clone)]
pub enum Edit {
    Set(Vec<String>, Value),
    Remove(Vec<String>),
}

pub fn path() -> impl Strategy<Value = Vec<String>> {
    let parent = prop::sample::select(vec![
        vec![],
        vec!["data"],
        vec!["data", "deployment"],
        vec!["data", "action"],
        vec!["data", "configurationChange"],
        vec!["data", "labels"],
    ]);
    (parent, key()).prop_map(|(parent, key)| {
        let mut path: Vec<String> = parent.into_iter().map(str::to_owned).collect();
        path.push(key);
        path
    })
}

pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (path(), json_value()).prop_map(|(p, v)| Edit::Set(p, v)),
        1 => path().prop_map(Edit::Remove),
    ]
}

pub fn apply(document: &mut Value, edit: &Edit) {
    let (path, value) = match edit {
        Edit::Set(path, value) => (path, Some(value)),
        Edit::Remove(path) => (path, None),
    };
    let (last, parents) = path.split_last().expect("paths are not empty");
    let mut at = document;
    for name in parents {
        match at.get_mut(name) {
            Some(next) => at = next,
            None => return,
        }
    }
    let Some(object) = at.as_object_mut() else {
        return;
    };
    match value {
        Some(value) => {
            object.insert(last.clone(), value.clone());
        }
        None => {
            object.remove(last);
        }
    }
}

/// A valid event with a few edits, as text; sometimes with one member repeated (which
/// `Value` cannot hold, so it is spliced into the text).
pub fn edited_event() -> impl Strategy<Value = Vec<u8>> {
    (
        template(),
        prop::collection::vec(edit(), 0..5),
        prop::option::of((
            prop::sample::select(vec!["", "\"data\":{"]),
            key(),
            json_value(),
        )),
    )
        .prop_map(|(mut document, edits, repeat)| {
            for edit in &edits {
                apply(&mut document, edit);
            }
            let mut text = document.to_string();
            if let Some((inside, key, value)) = repeat {
                let member = format!("{}:{},", Value::String(key), value);
                let at = if inside.is_empty() {
                    Some(1)
                } else {
                    text.find(inside).map(|i| i + inside.len())
                };
                if let Some(at) = at {
                    text.insert_str(at, &member);
                }
            }
            text.into_bytes()
        })
}

/// Byte-level damage to a document: cut it, overwrite a byte, or insert bytes.
pub fn damaged(bytes: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = bytes.len().max(1);
    (
        0..len,
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 0..4),
        0..3u8,
    )
        .prop_map(move |(at, byte, insert, how)| {
            let mut bytes = bytes.clone();
            let at = at.min(bytes.len());
            match how {
                0 => bytes.truncate(at),
                1 if at < bytes.len() => bytes[at] = byte,
                _ => {
                    let tail = bytes.split_off(at);
                    bytes.extend(insert);
                    bytes.extend(tail);
                }
            }
            bytes
        })
}
