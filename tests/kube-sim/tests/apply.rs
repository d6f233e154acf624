//! Server-side apply through the real kubectl: create, update, ownership conflicts between
//! field managers, forced takeover, and the managedFields record.

mod common;

use common::*;

/// kubectl's client-side validation needs OpenAPI, which kube-sim does not serve yet.
const NO_VALIDATION: &str = "--validate=false";

#[test]
fn server_side_apply_creates_updates_and_reports_conflicts() {
    let c = Cluster::start();
    c.kubectl(&["create", "namespace", "demo"]).success();
    let v1 = c.manifest("web-v1.json", &deployment("nginx:1"));
    let out = c
        .kubectl(&["apply", "--server-side", NO_VALIDATION, "-f", &v1])
        .success();
    assert_eq!(out.trim(), "deployment.apps/web serverside-applied");
    let v2 = c.manifest("web-v2.json", &deployment("nginx:2"));
    let out = c
        .kubectl(&["apply", "--server-side", NO_VALIDATION, "-f", &v2])
        .success();
    assert_eq!(out.trim(), "deployment.apps/web serverside-applied");
    let image = "jsonpath={.spec.template.spec.containers[0].image}";
    let get_image = || {
        c.kubectl(&["get", "deploy", "web", "-n", "demo", "-o", image])
            .success()
    };
    assert_eq!(get_image(), "nginx:2");

    // Another manager changing a field kubectl owns: a conflict naming kubectl.
    let v3 = c.manifest("web-v3.json", &deployment("nginx:3"));
    let err = c
        .kubectl(&[
            "apply",
            "--server-side",
            NO_VALIDATION,
            "--field-manager",
            "ops",
            "-f",
            &v3,
        ])
        .failure();
    assert!(
        err.contains(
            "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.template.spec.containers[name=\"web\"].image"
        ),
        "{err}"
    );
    assert_eq!(get_image(), "nginx:2");
    c.kubectl(&[
        "apply",
        "--server-side",
        NO_VALIDATION,
        "--field-manager",
        "ops",
        "--force-conflicts",
        "-f",
        &v3,
    ])
    .success();
    assert_eq!(get_image(), "nginx:3");

    let obj = c.json(&[
        "get",
        "deploy",
        "web",
        "-n",
        "demo",
        "-o",
        "json",
        "--show-managed-fields",
    ]);
    let managers: Vec<(&str, &str)> = obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["manager"].as_str().unwrap(),
                e["operation"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(managers, [("kubectl", "Apply"), ("ops", "Apply")]);
    let web = "k:{\"name\":\"web\"}";
    let containers = |i: usize| {
        obj["metadata"]["managedFields"][i]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]
            ["f:containers"][web]
            .clone()
    };
    assert!(containers(0).get("f:image").is_none(), "taken over by ops");
    assert_eq!(containers(1)["f:image"], serde_json::json!({}));
    assert_eq!(containers(0)["f:name"], serde_json::json!({}));
    let yaml = c
        .kubectl(&[
            "get",
            "deploy",
            "web",
            "-n",
            "demo",
            "-o",
            "yaml",
            "--show-managed-fields",
        ])
        .success();
    assert!(
        yaml.contains("manager: ops") && yaml.contains("fieldsType: FieldsV1"),
        "{yaml}"
    );
}

#[test]
fn apply_removes_fields_the_manager_dropped_and_records_updates() {
    let c = Cluster::start();
    let with_sidecar = c.manifest(
        "a.json",
        &serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cfg", "namespace": "default", "labels": {"tier": "web"}},
            "data": {"a": "1", "b": "2"}
        }),
    );
    c.kubectl(&["apply", "--server-side", NO_VALIDATION, "-f", &with_sidecar])
        .success();
    // An imperative label is an Update by `kubectl-label`, kept when apply drops its own.
    c.kubectl(&["label", "cm", "cfg", "extra=yes"]).success();
    let smaller = c.manifest(
        "b.json",
        &serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cfg", "namespace": "default"},
            "data": {"a": "1"}
        }),
    );
    c.kubectl(&["apply", "--server-side", NO_VALIDATION, "-f", &smaller])
        .success();
    let obj = c.json(&["get", "cm", "cfg", "-o", "json", "--show-managed-fields"]);
    assert_eq!(obj["data"], serde_json::json!({"a": "1"}));
    assert_eq!(
        obj["metadata"]["labels"],
        serde_json::json!({"extra": "yes"})
    );
    let label_entry = obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "kubectl-label")
        .expect("kubectl-label entry");
    assert_eq!(label_entry["operation"], "Update");
    assert_eq!(
        label_entry["fieldsV1"],
        serde_json::json!({"f:metadata": {"f:labels": {"f:extra": {}}}})
    );

    // Apply into a namespace that does not exist fails like a create would.
    let elsewhere = c.manifest(
        "c.json",
        &serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cfg", "namespace": "nowhere"}
        }),
    );
    let err = c
        .kubectl(&["apply", "--server-side", NO_VALIDATION, "-f", &elsewhere])
        .failure();
    assert!(err.contains("namespaces \"nowhere\" not found"), "{err}");
}
