//! Each fault knob changes what real kubectl experiences.

mod common;

use std::time::Duration;

use common::*;
use kube_sim::faults::INJECTED;
use kube_sim::{ConflictRule, FaultConfig};

fn cluster_with_configmap() -> Cluster {
    let c = Cluster::start();
    c.kubectl(&["create", "namespace", "demo"]).success();
    c.kubectl(&[
        "create",
        "configmap",
        "cm1",
        "-n",
        "demo",
        "--from-literal=k=v",
    ])
    .success();
    c
}

const CM1: &str = "/api/v1/namespaces/demo/configmaps/cm1";

#[test]
fn latency_shows_in_audited_durations_of_matching_paths_only() {
    let c = cluster_with_configmap();
    let latency = Duration::from_millis(300);
    c.sim().faults().set(FaultConfig {
        latency,
        latency_path: Some("/configmaps/cm1".into()),
        ..FaultConfig::default()
    });
    c.sim().clear_audit();
    c.kubectl(&["get", "configmap", "cm1", "-n", "demo"])
        .success();
    let entries = c.sim().audit();
    let slow: Vec<_> = entries.iter().filter(|e| e.path == CM1).collect();
    assert!(!slow.is_empty(), "{entries:#?}");
    for e in &slow {
        assert!(e.duration >= latency, "{e:?}");
        assert!(e.at_end.duration_since(e.at_start).unwrap() >= latency);
    }
    // Discovery is not delayed (its handler takes microseconds).
    let fast = entries
        .iter()
        .find(|e| e.path == "/api")
        .expect("discovery");
    assert!(fast.duration < latency, "{fast:?}");
}

#[test]
fn kubectl_retries_throttled_requests_and_succeeds() {
    let c = cluster_with_configmap();
    c.sim().faults().set(FaultConfig {
        throttle_rate: 0.5,
        error_path: Some("/configmaps/cm1".into()),
        seed: 1,
        ..FaultConfig::default()
    });
    c.sim().clear_audit();
    let out = c
        .kubectl(&["get", "configmap", "cm1", "-n", "demo", "-o", "name"])
        .success();
    assert_eq!(out.trim(), "configmap/cm1");
    let codes: Vec<u16> = c
        .sim()
        .audit()
        .iter()
        .filter(|e| e.path == CM1)
        .map(|e| e.code)
        .collect();
    // Seed 1 throttles the first attempt and lets the second through; kubectl waited for Retry-After and tried again.
    assert_eq!(codes.first(), Some(&429), "{codes:?}");
    assert_eq!(codes.last(), Some(&200), "{codes:?}");
}

#[test]
fn server_errors_fail_kubectl_with_the_servers_message() {
    let c = cluster_with_configmap();
    c.sim().faults().set(FaultConfig {
        error_rate: 1.0,
        error_path: Some("/configmaps/cm1".into()),
        ..FaultConfig::default()
    });
    let err = c
        .kubectl(&["get", "configmap", "cm1", "-n", "demo"])
        .failure();
    assert!(err.contains(INJECTED), "{err}");
    assert!(
        err.contains("(InternalError)") || err.contains("(ServiceUnavailable)"),
        "{err}"
    );
    // Other paths are untouched.
    c.kubectl(&["get", "namespace", "demo"]).success();
    // Turning the knob off at runtime restores service.
    c.sim().faults().set(FaultConfig::default());
    c.kubectl(&["get", "configmap", "cm1", "-n", "demo"])
        .success();
}

#[test]
fn forced_conflicts_fail_replace_until_exhausted() {
    let c = cluster_with_configmap();
    let file = c.manifest(
        "cm1.json",
        &serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cm1", "namespace": "demo"},
            "data": {"k": "new"},
        }),
    );
    c.sim().faults().set(FaultConfig {
        conflicts: vec![ConflictRule {
            path_contains: "/configmaps/cm1".into(),
            remaining: 2,
        }],
        ..FaultConfig::default()
    });
    for attempt in 0..2 {
        let err = c
            .kubectl(&["replace", "--validate=false", "-f", &file])
            .failure();
        assert!(err.contains("(Conflict)"), "attempt {attempt}: {err}");
        assert!(err.contains(INJECTED), "attempt {attempt}: {err}");
    }
    // Reads were never refused.
    c.kubectl(&["get", "configmap", "cm1", "-n", "demo"])
        .success();
    c.kubectl(&["replace", "--validate=false", "-f", &file])
        .success();
    assert_eq!(c.sim().faults().get().conflicts[0].remaining, 0);
    let cm = c.json(&["get", "configmap", "cm1", "-n", "demo", "-o", "json"]);
    assert_eq!(cm["data"]["k"], "new");
}
