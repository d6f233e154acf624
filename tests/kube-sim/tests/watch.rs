//! Watches through the real kubectl: `get -w` (list, then watch from the list's
//! resourceVersion) and raw watch URLs whose streams end at `timeoutSeconds`.

mod common;

use std::time::Duration;

use common::*;

/// Generous: events arrive within milliseconds; this only bounds a failing test.
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn get_watch_sees_added_modified_deleted() {
    let c = Cluster::start();
    c.kubectl(&["create", "namespace", "demo"]).success();
    c.kubectl(&["create", "configmap", "cm", "-n", "demo"])
        .success();
    let w = Streaming::spawn(c.kubectl_command(&[
        "get",
        "configmaps",
        "-n",
        "demo",
        "-w",
        "--output-watch-events",
        "--no-headers",
    ]));
    let first = w.next_line("initial ADDED", EVENT_TIMEOUT);
    assert!(
        first.starts_with("ADDED") && first.contains(" cm "),
        "{first}"
    );
    c.kubectl(&["label", "cm", "cm", "team=blue", "-n", "demo"])
        .success();
    let modified = w.next_line("MODIFIED after label", EVENT_TIMEOUT);
    assert!(modified.starts_with("MODIFIED"), "{modified}");
    c.kubectl(&["delete", "cm", "cm", "-n", "demo"]).success();
    let deleted = w.next_line("DELETED after delete", EVENT_TIMEOUT);
    assert!(deleted.starts_with("DELETED"), "{deleted}");
}

#[test]
fn named_watch_only_reports_that_object() {
    let c = Cluster::start();
    c.kubectl(&["create", "configmap", "one"]).success();
    c.kubectl(&["create", "configmap", "two"]).success();
    let w = Streaming::spawn(c.kubectl_command(&[
        "get",
        "cm",
        "two",
        "-w",
        "-o",
        "jsonpath={.metadata.name} {.metadata.labels.x}{\"\\n\"}",
    ]));
    assert_eq!(w.next_line("initial", EVENT_TIMEOUT), "two ");
    c.kubectl(&["label", "cm", "one", "x=1"]).success();
    c.kubectl(&["label", "cm", "two", "x=2"]).success();
    assert_eq!(w.next_line("label on two", EVENT_TIMEOUT), "two 2");
}

/// One JSON watch event per line of a raw watch that the server ends after `timeoutSeconds`.
fn raw_watch(c: &Cluster, url: &str) -> Vec<serde_json::Value> {
    let out = c.kubectl(&["get", "--raw", url]).success();
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn raw_watch_follows_resource_version_semantics() {
    let c = Cluster::start();
    c.kubectl(&["create", "configmap", "a", "-n", "default"])
        .success();
    c.kubectl(&["label", "configmap", "a", "step=1"]).success();
    let rv = c
        .kubectl(&[
            "get",
            "cm",
            "a",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .success();
    c.kubectl(&["create", "configmap", "b"]).success();
    c.kubectl(&["label", "configmap", "b", "keep=yes"])
        .success();

    // No resourceVersion: synthetic ADDED for what exists, then the stream times out.
    let events = raw_watch(
        &c,
        "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1",
    );
    let names: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["object"]["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        names.contains(&("ADDED", "a")) && names.contains(&("ADDED", "b")),
        "{names:?}"
    );

    // From a resourceVersion: only later writes.
    let later = raw_watch(
        &c,
        &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
    );
    let later: Vec<_> = later
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["object"]["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(later, [("ADDED", "b"), ("MODIFIED", "b")]);

    // Selectors apply; all-namespaces and cluster-scoped URLs work.
    let selected = raw_watch(
        &c,
        "/api/v1/configmaps?watch=true&labelSelector=keep%3Dyes&timeoutSeconds=1",
    );
    assert_eq!(selected.len(), 1, "{selected:?}");
    let namespaces = raw_watch(&c, "/api/v1/namespaces?watch=true&timeoutSeconds=1");
    assert!(namespaces
        .iter()
        .any(|e| e["object"]["metadata"]["name"] == "kube-system"));

    // Bookmarks carry the current resourceVersion; watch-list ends its replay with one.
    let bookmarked = raw_watch(
        &c,
        "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=2",
    );
    let end = bookmarked
        .iter()
        .position(|e| e["type"] == "BOOKMARK")
        .expect("a bookmark");
    assert_eq!(end, 2, "{bookmarked:?}");
    assert_eq!(
        bookmarked[end]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    let current = c.json(&["get", "--raw", "/api/v1/namespaces/default/configmaps"]);
    assert_eq!(
        bookmarked[end]["object"]["metadata"]["resourceVersion"],
        current["metadata"]["resourceVersion"]
    );
    assert!(bookmarked.len() > 3, "periodic bookmarks: {bookmarked:?}");
}

#[test]
fn watch_from_compacted_resource_version_is_gone() {
    let c = Cluster::start();
    let store = c.sim().store().clone();
    let cm = kube_sim::resources::find("", "v1", "configmaps").unwrap();
    store
        .create(
            cm,
            "default",
            serde_json::json!({"metadata": {"name": "churn"}}),
        )
        .unwrap();
    for i in 0..kube_sim::events::HISTORY_LIMIT {
        store
            .modify(cm, "default", "churn", |o| {
                let mut o = o.clone();
                o["data"] = serde_json::json!({"i": i.to_string()});
                Ok(o)
            })
            .unwrap();
    }
    let events = raw_watch(
        &c,
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=2&timeoutSeconds=5",
    );
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 410);
    assert!(events[0]["object"]["message"]
        .as_str()
        .unwrap()
        .starts_with("too old resource version: 2"));
}
