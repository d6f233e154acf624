//! Garbage collection of dependents through `metadata.ownerReferences`, checked with the
//! real kubectl: deleting an owner deletes what it owns (and what those own); with
//! `--cascade=orphan` the dependents stay and lose the reference.

mod common;

use common::*;
use serde_json::json;

fn config_map(name: &str, owner: Option<(&str, &str)>) -> serde_json::Value {
    let mut cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"k": "v"}
    });
    if let Some((owner_name, owner_uid)) = owner {
        cm["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "v1", "kind": "ConfigMap", "name": owner_name, "uid": owner_uid
        }]);
    }
    cm
}

fn create(c: &Cluster, name: &str, owner: Option<(&str, &str)>) -> String {
    let file = c.manifest(&format!("{name}.json"), &config_map(name, owner));
    c.kubectl(&["create", "-f", &file]).success();
    c.kubectl(&["get", "cm", name, "-o", "jsonpath={.metadata.uid}"])
        .success()
}

fn exists(c: &Cluster, name: &str) -> bool {
    c.kubectl(&["get", "cm", name, "--ignore-not-found", "-o", "name"])
        .success()
        .contains(name)
}

#[test]
fn deleting_an_owner_deletes_its_dependents_transitively() {
    let c = Cluster::start();
    let owner = create(&c, "owner", None);
    let child = create(&c, "child", Some(("owner", &owner)));
    create(&c, "grandchild", Some(("child", &child)));
    create(&c, "bystander", None);

    c.kubectl(&["delete", "cm", "owner"]).success();
    assert!(!exists(&c, "child"), "the dependent was not collected");
    assert!(
        !exists(&c, "grandchild"),
        "the dependent's dependent was not collected"
    );
    assert!(exists(&c, "bystander"), "an unrelated object was deleted");
}

#[test]
fn orphan_propagation_keeps_dependents_without_the_reference() {
    let c = Cluster::start();
    let owner = create(&c, "owner", None);
    create(&c, "child", Some(("owner", &owner)));

    c.kubectl(&["delete", "cm", "owner", "--cascade=orphan"])
        .success();
    assert!(exists(&c, "child"), "an orphaned dependent was deleted");
    let refs = c
        .kubectl(&[
            "get",
            "cm",
            "child",
            "-o",
            "jsonpath={.metadata.ownerReferences}",
        ])
        .success();
    assert!(
        refs.trim().is_empty(),
        "the owner reference was kept: {refs}"
    );
}
