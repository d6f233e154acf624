//! What a fresh cluster holds besides its namespaces: Nodes for DaemonSets to run on, a
//! default StorageClass for claims to be provisioned from (as kind and minikube clusters
//! have one), and optionally CustomResourceDefinition bundles — such as the project's own
//! Gateway API CRDs (`crds/gateway-api.yaml`) — installed before the first client connects,
//! the way a cluster gets Gateway API.

use serde_json::json;

use crate::resources;
use crate::store::Store;

/// The one Node a default kube-sim has.
pub const DEFAULT_NODE: &str = "kube-sim-node";
/// The default StorageClass's name (kind's is also `standard`).
pub const DEFAULT_STORAGE_CLASS: &str = "standard";
/// The provisioner named by the default StorageClass and the volumes it provisions.
pub const PROVISIONER: &str = "kube-sim.io/hostpath";

/// The project's Gateway API CRDs (GatewayClass, Gateway, HTTPRoute at
/// `gateway.networking.k8s.io/v1`), written for kube-sim after the upstream standard channel.
pub const GATEWAY_API_CRDS: &str = include_str!("../crds/gateway-api.yaml");

/// Creates the CustomResourceDefinitions of a multi-document YAML bundle (documents of other
/// kinds are refused); returns their names.
pub fn install_crds(store: &Store, bundle: &str) -> anyhow::Result<Vec<String>> {
    use serde::Deserialize;
    let crd = resources::find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .expect("CRDs in the table");
    let mut names = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(bundle) {
        let value = serde_json::Value::deserialize(doc)
            .map_err(|e| anyhow::anyhow!("a CRD bundle document is not valid YAML: {e}"))?;
        if value.is_null() {
            continue;
        }
        anyhow::ensure!(
            value["kind"] == "CustomResourceDefinition",
            "a CRD bundle holds only CustomResourceDefinitions, not {}",
            value["kind"]
        );
        let created = store
            .create(crd, "", value)
            .map_err(|e| anyhow::anyhow!("installing a CRD: {e}"))?;
        names.push(
            created["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    Ok(names)
}

/// Creates the Nodes (Ready, labelled with their hostname) and the default StorageClass.
pub fn populate(
    store: &Store,
    nodes: &[String],
    default_storage_class: Option<&str>,
) -> anyhow::Result<()> {
    let node = resources::find("", "v1", "nodes").expect("nodes in the table");
    for name in nodes {
        let created = store.create(
            node,
            "",
            json!({
                "metadata": {"name": name, "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node-role.kubernetes.io/control-plane": "",
                }},
                "spec": {"podCIDR": "10.244.0.0/24"},
            }),
        );
        let created = created.map_err(|e| anyhow::anyhow!("creating node {name}: {e}"))?;
        store
            .modify(node, "", name, |cur| {
                let mut out = cur.clone();
                out["status"] = json!({
                    "conditions": [{
                        "type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "kubelet is posting ready status",
                        "lastHeartbeatTime": created["metadata"]["creationTimestamp"],
                        "lastTransitionTime": created["metadata"]["creationTimestamp"],
                    }],
                    "capacity": {"cpu": "2", "memory": "8Gi", "pods": "110"},
                    "allocatable": {"cpu": "2", "memory": "8Gi", "pods": "110"},
                    "addresses": [{"type": "InternalIP", "address": "10.0.0.1"},
                                  {"type": "Hostname", "address": name}],
                    "nodeInfo": {"kubeletVersion": "v1.34.0", "operatingSystem": "linux",
                                 "architecture": "amd64", "containerRuntimeVersion": "kube-sim"},
                });
                Ok(out)
            })
            .map_err(|e| anyhow::anyhow!("node {name} status: {e}"))?;
    }
    if let Some(name) = default_storage_class {
        let sc = resources::find("storage.k8s.io", "v1", "storageclasses")
            .expect("storage classes in the table");
        store
            .create(
                sc,
                "",
                json!({
                    "metadata": {"name": name, "annotations": {
                        "storageclass.kubernetes.io/is-default-class": "true",
                    }},
                    "provisioner": PROVISIONER,
                }),
            )
            .map_err(|e| anyhow::anyhow!("creating storage class {name}: {e}"))?;
    }
    Ok(())
}
