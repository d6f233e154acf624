//! The audit log as seen through real kubectl requests, and the overlap helper on crafted
//! concurrent and sequential writes.

mod common;

use std::time::Duration;

use common::*;
use kube_sim::{overlapping, AuditEntry, AuditFilter, Config, FaultConfig};

fn configmap(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "demo"},
        "data": {"k": "v"},
    })
}

/// The entries addressing configmaps, as (verb, name, code).
fn configmap_calls(entries: &[AuditEntry]) -> Vec<(String, String, u16)> {
    entries
        .iter()
        .filter(|e| e.resource == "configmaps")
        .map(|e| (e.verb.clone(), e.name.clone(), e.code))
        .collect()
}

#[test]
fn kubectl_requests_carry_kubernetes_verbs() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("audit.jsonl");
    let c = Cluster::start_with(Config {
        audit_log_path: Some(log_path.clone()),
        ..Config::default()
    });
    c.kubectl(&["create", "namespace", "demo"]).success();
    c.sim().clear_audit();

    let file = c.manifest("cm.json", &configmap("cm1"));
    c.kubectl(&["create", "--validate=false", "-f", &file])
        .success();
    c.kubectl(&["get", "configmap", "cm1", "-n", "demo"])
        .success();
    c.kubectl(&["get", "configmaps", "-n", "demo"]).success();
    c.kubectl(&["replace", "--validate=false", "-f", &file])
        .success();
    c.kubectl(&["label", "configmap", "cm1", "-n", "demo", "a=b"])
        .success();
    c.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/demo/configmaps?watch=true&timeoutSeconds=1",
    ])
    .success();
    c.kubectl(&["delete", "configmap", "cm1", "-n", "demo"])
        .success();
    c.kubectl(&["delete", "--raw", "/api/v1/namespaces/demo/configmaps"])
        .success();

    let entries = c.sim().audit();
    let calls = configmap_calls(&entries);
    let cm = |verb: &str, name: &str, code: u16| (verb.to_string(), name.to_string(), code);
    for expected in [
        cm("create", "", 201),
        cm("get", "cm1", 200),
        cm("list", "", 200),
        cm("update", "cm1", 200),
        cm("patch", "cm1", 200),
        cm("watch", "", 200),
        cm("delete", "cm1", 200),
        cm("deletecollection", "", 200),
    ] {
        assert!(calls.contains(&expected), "{expected:?} not in {calls:?}");
    }
    let create = entries.iter().find(|e| e.verb == "create").unwrap();
    assert_eq!(create.method, "POST");
    assert_eq!(create.path, "/api/v1/namespaces/demo/configmaps");
    assert_eq!(create.namespace, "demo");
    assert!(create.user_agent.starts_with("kubectl"), "{create:?}");
    assert!(create.at_start <= create.at_end);
    let watch = entries.iter().find(|e| e.verb == "watch").unwrap();
    assert!(watch.query.contains("timeoutSeconds=1"), "{watch:?}");
    // Discovery is recorded too, under the method's verb.
    assert!(entries.iter().any(|e| e.path == "/api" && e.verb == "get"));
    assert!(entries
        .iter()
        .any(|e| e.path == "/apis/apps/v1" && e.verb == "get" && e.resource.is_empty()));

    // The file holds everything since start (clear_audit only empties memory), in order.
    let from_file = kube_sim::audit::read_log(&log_path).unwrap();
    assert!(from_file.len() > entries.len());
    assert_eq!(&from_file[from_file.len() - entries.len()..], &entries[..]);
}

/// Two clients patch the same object while the server holds each request for a while: the
/// helper reports the pair. The same writes one after the other report nothing.
#[test]
fn overlap_helper_separates_concurrent_from_sequential_writes() {
    let c = Cluster::start();
    c.kubectl(&["create", "namespace", "demo"]).success();
    let file = c.manifest("cm.json", &configmap("shared"));
    c.kubectl(&["create", "--validate=false", "-f", &file])
        .success();
    c.kubectl(&[
        "create",
        "--validate=false",
        "-f",
        &c.manifest("o.json", &configmap("other")),
    ])
    .success();
    c.sim().faults().set(FaultConfig {
        latency: Duration::from_millis(500),
        latency_path: Some("/configmaps/".into()),
        ..FaultConfig::default()
    });
    let path = "/api/v1/namespaces/demo/configmaps/shared";
    let filter = AuditFilter::new()
        .namespace("demo")
        .resource("configmaps")
        .name_prefix("shared");

    // Concurrent: both requests are on the wire before either answer is read.
    c.sim().clear_audit();
    let a = RawRequest::send(c.sim().addr(), "PATCH", path, r#"{"data":{"a":"1"}}"#);
    let b = RawRequest::send(c.sim().addr(), "PATCH", path, r#"{"data":{"b":"2"}}"#);
    // A write on another object at the same time is outside the filter.
    let o = RawRequest::send(
        c.sim().addr(),
        "PATCH",
        "/api/v1/namespaces/demo/configmaps/other",
        r#"{"data":{"o":"3"}}"#,
    );
    for r in [a, b, o] {
        assert_eq!(r.finish().0, 200);
    }
    let pairs = overlapping(&c.sim().audit(), |e| filter.matches(e));
    assert_eq!(pairs.len(), 1, "{pairs:#?}");
    assert_eq!(pairs[0].0.name, "shared");
    assert_eq!(pairs[0].1.verb, "patch");
    // Without the filter, `other` overlaps both.
    assert_eq!(overlapping(&c.sim().audit(), |_| true).len(), 3);

    // Sequential: the second write starts after the first answered, with a real client too.
    c.sim().clear_audit();
    assert_eq!(
        RawRequest::send(c.sim().addr(), "PATCH", path, r#"{"data":{"c":"3"}}"#)
            .finish()
            .0,
        200
    );
    c.kubectl(&["replace", "--validate=false", "-f", &file])
        .success();
    c.kubectl(&["label", "configmap", "shared", "-n", "demo", "x=y"])
        .success();
    let entries = c.sim().audit();
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.is_write() && filter.matches(e))
            .count(),
        3
    );
    let pairs = overlapping(&entries, |e| filter.matches(e));
    assert!(pairs.is_empty(), "{pairs:#?}");
}
