//! The StatefulSet controller: pods `<name>-0..n-1` with stable names, hostnames and claims.
//!
//! What clients observe follows the real controller: with `OrderedReady` (the default) pod
//! `i` is created only once pods `0..i` are Running and Ready, and scaling down removes the
//! highest ordinals; each `volumeClaimTemplates` entry becomes a claim `<template>-<name>-<i>`
//! created before its pod (and left behind when the StatefulSet goes, unless
//! `persistentVolumeClaimRetentionPolicy.whenDeleted` is `Delete`); a rolling update replaces
//! pods from the highest ordinal down to `partition`, one at a time, each once the others are
//! ready. The status carries `replicas`, `readyReplicas`, `availableReplicas`,
//! `currentReplicas`, `updatedReplicas`, `currentRevision`/`updateRevision` (`<name>-<hash>`
//! of the template, the hash the Deployment controller uses) and `observedGeneration` —
//! what `kubectl rollout status` and Helm's `--wait` read.
//!
//! Simplifications: no ControllerRevision objects, `minReadySeconds` is ignored (available
//! means ready), `OnDelete` updates nothing by itself, as on a cluster.

use std::time::Instant;

use serde_json::{json, Value};

use super::kubelet::is_ready;
use super::*;

/// Label naming the revision a StatefulSet's (or DaemonSet's) pod was created from.
pub(super) const REVISION_LABEL: &str = "controller-revision-hash";

/// The claim of `template` for pod `pod_name`, and its name.
fn claim(sts: &Value, template: &Value, pod_name: &str) -> (String, Value) {
    let claim_name = format!("{}-{pod_name}", s(template, "/metadata/name"));
    let mut labels = sts["spec"]["selector"]["matchLabels"].clone();
    if let Some(extra) = template["metadata"]["labels"].as_object() {
        for (k, v) in extra {
            labels[k] = v.clone();
        }
    }
    let mut meta = json!({"name": claim_name, "labels": labels});
    if s(
        sts,
        "/spec/persistentVolumeClaimRetentionPolicy/whenDeleted",
    ) == "Delete"
    {
        let mut refs = owner_ref(sts, "apps/v1", "StatefulSet");
        refs[0]["controller"] = json!(false);
        meta["ownerReferences"] = refs;
    }
    if let Some(a) = template["metadata"].get("annotations") {
        meta["annotations"] = a.clone();
    }
    let body = json!({"metadata": meta, "spec": template["spec"]});
    (claim_name, body)
}

impl Controller {
    /// Reconciles one StatefulSet; returns when one of its pods will next turn ready.
    pub(super) fn sync_stateful_set(
        &mut self,
        store: &Store,
        name: &ObjectName,
        now: Instant,
    ) -> Option<Instant> {
        let (sets, pod, pvc) = (
            res("apps", "statefulsets"),
            res("", "pods"),
            res("", "persistentvolumeclaims"),
        );
        let sts = store.get(sets, &name.0, &name.1).ok()?;
        let ns = name.0.as_str();
        let spec = &sts["spec"];
        let replicas = spec["replicas"].as_i64().unwrap_or(1).max(0);
        let update_revision = format!("{}-{}", name.1, template_hash(&spec["template"]));
        let ordered = s(&sts, "/spec/podManagementPolicy") != "Parallel";
        let rolling = s(&sts, "/spec/updateStrategy/type") != "OnDelete";
        let partition = spec["updateStrategy"]["rollingUpdate"]["partition"]
            .as_i64()
            .unwrap_or(0);
        let ordinal = |p: &Value| -> Option<i64> {
            s(p, "/metadata/name")
                .strip_prefix(&format!("{}-", name.1))?
                .parse()
                .ok()
        };
        let owned_pods = owned(store, pod, &sts, "StatefulSet");
        let (mut pods, mut wake) = self.run_pods(store, owned_pods, now);
        // Scale down: the highest ordinals go.
        pods.retain(|p| {
            let keep = ordinal(p).is_some_and(|i| i < replicas);
            if !keep {
                self.pod_started.remove(uid(p));
                let _ = store.delete(pod, ns, s(p, "/metadata/name"), &Preconditions::default());
            }
            keep
        });
        pods.sort_by_key(|p| ordinal(p));
        // Create the missing ordinals (in order, each after its predecessors are ready).
        for i in 0..replicas {
            if pods.iter().any(|p| ordinal(p) == Some(i)) {
                continue;
            }
            if ordered && !pods.iter().all(is_ready) {
                break;
            }
            let pod_name = format!("{}-{i}", name.1);
            let template = &spec["template"];
            let mut labels = template["metadata"]["labels"].clone();
            labels[REVISION_LABEL] = json!(update_revision);
            labels["statefulset.kubernetes.io/pod-name"] = json!(pod_name);
            labels["apps.kubernetes.io/pod-index"] = json!(i.to_string());
            let mut pod_spec = template["spec"].clone();
            pod_spec["hostname"] = json!(pod_name);
            if let Some(service) = spec["serviceName"].as_str().filter(|x| !x.is_empty()) {
                pod_spec["subdomain"] = json!(service);
            }
            for t in spec["volumeClaimTemplates"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let (claim_name, body) = claim(&sts, t, &pod_name);
                if store.get(pvc, ns, &claim_name).is_err() {
                    match store.create(pvc, ns, body) {
                        Ok(c) => self.bind_claim(store, &c),
                        Err(e) => tracing::warn!(error = %e.message, "creating claim {claim_name}"),
                    }
                }
                let volume = json!({
                    "name": t["metadata"]["name"],
                    "persistentVolumeClaim": {"claimName": claim_name},
                });
                match pod_spec["volumes"].as_array_mut() {
                    Some(vs) => {
                        vs.retain(|v| v["name"] != t["metadata"]["name"]);
                        vs.push(volume);
                    }
                    None => pod_spec["volumes"] = json!([volume]),
                }
            }
            let mut meta = json!({
                "name": pod_name,
                "labels": labels,
                "ownerReferences": owner_ref(&sts, "apps/v1", "StatefulSet"),
            });
            if let Some(a) = template["metadata"].get("annotations") {
                meta["annotations"] = a.clone();
            }
            if !self.start_pod(
                store,
                ns,
                json!({"metadata": meta, "spec": pod_spec}),
                now,
                &mut pods,
                &mut wake,
            ) {
                break;
            }
            if ordered {
                break;
            }
        }
        pods.sort_by_key(|p| ordinal(p));
        let revision_of = |p: &Value| s(p, "/metadata/labels/controller-revision-hash").to_string();
        // Rolling update: replace the highest outdated ordinal at or above the partition,
        // once every pod is ready.
        let complete_set = pods.len() as i64 == replicas && pods.iter().all(is_ready);
        if rolling && complete_set {
            if let Some(old) = pods
                .iter()
                .rev()
                .find(|p| ordinal(p).unwrap_or(0) >= partition && revision_of(p) != update_revision)
            {
                self.pod_started.remove(uid(old));
                let _ = store.delete(pod, ns, s(old, "/metadata/name"), &Preconditions::default());
                // Recreated at the update revision by the pass this deletion triggers.
                return wake;
            }
        }
        let updated = pods
            .iter()
            .filter(|p| revision_of(p) == update_revision)
            .count() as i64;
        let ready = pods.iter().filter(|p| is_ready(p)).count() as i64;
        let mut current_revision = s(&sts, "/status/currentRevision").to_string();
        if current_revision.is_empty() || (updated == replicas && ready == replicas) {
            current_revision = update_revision.clone();
        }
        let current = pods
            .iter()
            .filter(|p| revision_of(p) == current_revision)
            .count() as i64;
        let mut status = json!({
            "observedGeneration": sts["metadata"]["generation"],
            "replicas": pods.len(),
            "currentRevision": current_revision,
            "updateRevision": update_revision,
            "collisionCount": 0,
            "availableReplicas": ready,
        });
        put_count(&mut status, "readyReplicas", ready);
        put_count(&mut status, "currentReplicas", current);
        put_count(&mut status, "updatedReplicas", updated);
        write_status(store, sets, &sts, status);
        wake
    }
}
