//! The DaemonSet controller: one pod per simulated Node that the pod template's
//! `nodeSelector` matches, bound to it by `spec.nodeName`.
//!
//! The status carries what `kubectl rollout status` and Helm's `--wait` read:
//! `desiredNumberScheduled`, `currentNumberScheduled`, `numberReady`, `numberAvailable`,
//! `numberUnavailable`, `updatedNumberScheduled`, `numberMisscheduled` and
//! `observedGeneration`. A rolling update replaces one outdated pod at a time
//! (`maxUnavailable: 1`), each once every pod is ready; `OnDelete` replaces nothing.
//!
//! Simplifications: taints and tolerations, affinity and `maxSurge` are ignored.

use std::time::Instant;

use serde_json::{json, Value};

use super::kubelet::is_ready;
use super::statefulset::REVISION_LABEL;
use super::*;

/// Whether `node`'s labels satisfy the pod template's `nodeSelector`.
fn selects(template: &Value, node: &Value) -> bool {
    let labels = crate::store::labels(node);
    template["spec"]["nodeSelector"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
}

impl Controller {
    /// Reconciles one DaemonSet; returns when one of its pods will next turn ready.
    pub(super) fn sync_daemon_set(
        &mut self,
        store: &Store,
        name: &ObjectName,
        now: Instant,
    ) -> Option<Instant> {
        let (sets, pod, node) = (res("apps", "daemonsets"), res("", "pods"), res("", "nodes"));
        let ds = store.get(sets, &name.0, &name.1).ok()?;
        let ns = name.0.as_str();
        let template = &ds["spec"]["template"];
        let hash = template_hash(template);
        let nodes: Vec<String> = list(store, node)
            .iter()
            .filter(|n| selects(template, n))
            .map(|n| s(n, "/metadata/name").to_string())
            .collect();
        let owned_pods = owned(store, pod, &ds, "DaemonSet");
        let (mut pods, mut wake) = self.run_pods(store, owned_pods, now);
        // Pods on nodes that are gone or no longer selected, and duplicates, go.
        let mut placed: Vec<String> = Vec::new();
        pods.retain(|p| {
            let on = s(p, "/spec/nodeName").to_string();
            let keep = nodes.contains(&on) && !placed.contains(&on);
            if keep {
                placed.push(on);
            } else {
                self.pod_started.remove(uid(p));
                let _ = store.delete(pod, ns, s(p, "/metadata/name"), &Preconditions::default());
            }
            keep
        });
        for n in nodes.iter().filter(|n| !placed.contains(n)) {
            let mut labels = template["metadata"]["labels"].clone();
            labels[REVISION_LABEL] = json!(hash);
            labels["pod-template-generation"] = json!(ds["metadata"]["generation"]
                .as_i64()
                .unwrap_or(1)
                .to_string());
            let mut pod_spec = template["spec"].clone();
            pod_spec["nodeName"] = json!(n);
            let body = json!({
                "metadata": {
                    "generateName": format!("{}-", name.1),
                    "labels": labels,
                    "ownerReferences": owner_ref(&ds, "apps/v1", "DaemonSet"),
                },
                "spec": pod_spec,
            });
            if !self.start_pod(store, ns, body, now, &mut pods, &mut wake) {
                break;
            }
        }
        let revision_of = |p: &Value| s(p, "/metadata/labels/controller-revision-hash").to_string();
        let rolling = s(&ds, "/spec/updateStrategy/type") != "OnDelete";
        if rolling && pods.iter().all(is_ready) {
            if let Some(old) = pods.iter().find(|p| revision_of(p) != hash) {
                self.pod_started.remove(uid(old));
                let _ = store.delete(pod, ns, s(old, "/metadata/name"), &Preconditions::default());
                // Replaced by the pass this deletion triggers.
                return wake;
            }
        }
        let desired = nodes.len() as i64;
        let ready = pods.iter().filter(|p| is_ready(p)).count() as i64;
        let updated = pods.iter().filter(|p| revision_of(p) == hash).count() as i64;
        let mut status = json!({
            "observedGeneration": ds["metadata"]["generation"],
            "desiredNumberScheduled": desired,
            "currentNumberScheduled": pods.len(),
            "numberMisscheduled": 0,
            "numberReady": ready,
        });
        put_count(&mut status, "numberAvailable", ready);
        put_count(&mut status, "numberUnavailable", desired - ready);
        put_count(&mut status, "updatedNumberScheduled", updated);
        write_status(store, sets, &ds, status);
        wake
    }
}
