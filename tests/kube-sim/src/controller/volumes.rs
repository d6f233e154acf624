//! The PersistentVolume controller and a dynamic provisioner: a claim naming an existing
//! StorageClass (or, without a class, when a default StorageClass exists) gets a generated
//! volume `pvc-<claim uid>` and both turn `Bound`; deleting the claim deletes the volume
//! (reclaim policy `Delete`, the default) or marks it `Released` (`Retain`).
//!
//! Without a matching class, or for a claim named in `never_bound_claims`, the claim stays
//! `Pending` and the pods mounting it unschedulable (see `kubelet`), as on a cluster without
//! a provisioner. When a claim changes, the workloads of the pods mounting it are looked at
//! again.
//!
//! Simplifications: the default class is filled in by this controller rather than by
//! admission, `WaitForFirstConsumer` binds at once like `Immediate`, no capacity checks.

use serde_json::{json, Value};

use super::*;

const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

impl Controller {
    /// Binds the written claims, reclaims the volumes of deleted ones, and marks the owners
    /// of pods mounting a written claim dirty.
    pub(super) fn sync_claims(&mut self, store: &Store, dirty: &mut Dirty) {
        let (pvc, pv, pod) = (
            res("", "persistentvolumeclaims"),
            res("", "persistentvolumes"),
            res("", "pods"),
        );
        for c in std::mem::take(&mut dirty.deleted_claims) {
            let volume = format!("pvc-{}", uid(&c));
            let Ok(v) = store.get(pv, "", &volume) else {
                continue;
            };
            if s(&v, "/spec/persistentVolumeReclaimPolicy") == "Retain" {
                let _ = store.modify(pv, "", &volume, |cur| {
                    let mut out = cur.clone();
                    out["status"] = json!({"phase": "Released"});
                    Ok(out)
                });
            } else {
                let _ = store.delete(pv, "", &volume, &Preconditions::default());
            }
        }
        if dirty.all_claims {
            dirty
                .claims
                .extend(list(store, pvc).iter().map(object_name));
        }
        if !dirty.claims.is_empty() {
            // Pods mounting a changed claim may be schedulable (or blocked) now.
            self.settled.clear();
        }
        for (ns, name) in std::mem::take(&mut dirty.claims) {
            if let Ok(c) = store.get(pvc, &ns, &name) {
                self.bind_claim(store, &c);
            }
            let users = store
                .list(
                    pod,
                    Some(&ns),
                    &LabelSelector::default(),
                    &FieldSelector::default(),
                )
                .map(|(items, _)| items)
                .unwrap_or_default();
            for p in users.iter().filter(|p| mounts(p, &name)) {
                match pod_owner(p) {
                    Some((kind, owner)) => dirty.add(kind, owner),
                    None => dirty.add(Kind::Pod, object_name(p)),
                }
            }
        }
    }

    /// Provisions a volume for `claim` and binds both, if its class allows it.
    pub(super) fn bind_claim(&self, store: &Store, claim: &Value) {
        let (pvc, pv, sc) = (
            res("", "persistentvolumeclaims"),
            res("", "persistentvolumes"),
            res("storage.k8s.io", "storageclasses"),
        );
        let ns = s(claim, "/metadata/namespace");
        let name = s(claim, "/metadata/name");
        if s(claim, "/status/phase") == "Bound" {
            return;
        }
        if self
            .settings
            .never_bound_claims
            .iter()
            .any(|n| name.contains(n.as_str()))
        {
            return;
        }
        let class = match claim
            .pointer("/spec/storageClassName")
            .and_then(Value::as_str)
        {
            Some(c) => store.get(sc, "", c).ok(),
            None => list(store, sc).into_iter().find(|c| {
                c.pointer(&format!(
                    "/metadata/annotations/{}",
                    DEFAULT_CLASS.replace('/', "~1")
                )) == Some(&json!("true"))
            }),
        };
        let Some(class) = class else {
            return;
        };
        let class_name = s(&class, "/metadata/name").to_string();
        let provisioner = s(&class, "/provisioner").to_string();
        let volume = format!("pvc-{}", uid(claim));
        let capacity = claim["spec"]["resources"]["requests"]["storage"].clone();
        let access = claim["spec"]["accessModes"].clone();
        let body = json!({
            "metadata": {
                "name": volume,
                "annotations": {"pv.kubernetes.io/provisioned-by": provisioner},
                "finalizers": ["kubernetes.io/pv-protection"],
            },
            "spec": {
                "capacity": {"storage": capacity},
                "accessModes": access,
                "persistentVolumeReclaimPolicy": class["reclaimPolicy"].as_str().unwrap_or("Delete"),
                "storageClassName": class_name,
                "volumeMode": claim["spec"]["volumeMode"].as_str().unwrap_or("Filesystem"),
                "hostPath": {"path": format!("/var/lib/kube-sim/volumes/{volume}"), "type": ""},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": ns,
                    "name": name,
                    "uid": uid(claim),
                },
            },
        });
        if store.get(pv, "", &volume).is_err() {
            match store.create(pv, "", body) {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e.message, "provisioning {volume}");
                    return;
                }
            }
        }
        let _ = store.modify(pv, "", &volume, |cur| {
            let mut out = cur.clone();
            out["status"] = json!({"phase": "Bound"});
            Ok(out)
        });
        let _ = store.modify(pvc, ns, name, |cur| {
            let mut out = cur.clone();
            out["spec"]["volumeName"] = json!(volume);
            out["spec"]["storageClassName"] = json!(class_name);
            let annotations = &mut out["metadata"]["annotations"];
            if !annotations.is_object() {
                *annotations = json!({});
            }
            annotations["pv.kubernetes.io/bind-completed"] = json!("yes");
            annotations["pv.kubernetes.io/bound-by-controller"] = json!("yes");
            annotations["volume.kubernetes.io/storage-provisioner"] = json!(provisioner);
            out["status"] = json!({
                "phase": "Bound",
                "accessModes": access,
                "capacity": {"storage": capacity},
            });
            Ok(out)
        });
    }
}

/// Whether pod `p` mounts the claim `claim` (in its own namespace).
fn mounts(p: &Value, claim: &str) -> bool {
    p.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .is_some_and(|vs| {
            vs.iter().any(|v| {
                v.pointer("/persistentVolumeClaim/claimName")
                    .and_then(Value::as_str)
                    == Some(claim)
            })
        })
}
