//! `--dry-run=server` (`dryRun=All`) through the real kubectl: every write is checked and
//! answered but leaves the stored objects, and their resourceVersions, untouched.

mod common;

use common::*;

#[test]
fn server_dry_run_validates_without_storing() {
    let c = Cluster::start();
    let out = c
        .kubectl(&[
            "create",
            "configmap",
            "ghost",
            "--from-literal=a=b",
            "--dry-run=server",
        ])
        .success();
    assert_eq!(out.trim(), "configmap/ghost created (server dry run)");
    let err = c.kubectl(&["get", "cm", "ghost"]).failure();
    assert!(err.contains("NotFound"), "{err}");
    // Validation still runs.
    let err = c
        .kubectl(&["create", "configmap", "Bad_Name", "--dry-run=server"])
        .failure();
    assert!(err.contains("Invalid"), "{err}");

    c.kubectl(&["create", "configmap", "real"]).success();
    let rv = || {
        c.kubectl(&[
            "get",
            "cm",
            "real",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .success()
    };
    let before = rv();
    c.kubectl(&["label", "cm", "real", "x=y", "--dry-run=server"])
        .success();
    c.kubectl(&["delete", "cm", "real", "--dry-run=server"])
        .success();
    let applied = c.manifest(
        "real.json",
        &serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "real", "namespace": "default"},
            "data": {"k": "v"}
        }),
    );
    c.kubectl(&[
        "apply",
        "--server-side",
        "--validate=false",
        "--dry-run=server",
        "-f",
        &applied,
    ])
    .success();
    let obj = c.json(&["get", "cm", "real", "-o", "json"]);
    assert!(obj["metadata"].get("labels").is_none(), "{obj}");
    assert!(obj.get("data").is_none(), "{obj}");
    assert_eq!(rv(), before);
}
