//! The Deployment and ReplicaSet controllers: a ReplicaSet per pod template, scaled to the
//! Deployment's replicas, older ones scaled to 0 once the new one is available, and the
//! Deployment's status and conditions (including the progress deadline) from them.
//!
//! Simplifications: no surge/unavailability budget (the new ReplicaSet gets all replicas at
//! once; old ones drop to 0 once it is fully available).

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{json, Value};

use super::*;

impl Controller {
    /// Ensures the ReplicaSet for the current template exists with `spec.replicas`, and
    /// scales the older ones to 0 once it is fully available.
    pub(super) fn scale_replica_sets(&mut self, store: &Store, d: &Value, rs: &'static Resource) {
        let ns = s(d, "/metadata/namespace");
        let name = s(d, "/metadata/name");
        let desired = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let template = &d["spec"]["template"];
        let hash = template_hash(template);
        let new_name = format!("{name}-{hash}");
        let owned = owned(store, rs, d, "Deployment");
        let revision_of = |r: &Value| -> i64 {
            s(
                r,
                &format!("/metadata/annotations/{}", REVISION.replace('/', "~1")),
            )
            .parse()
            .unwrap_or(0)
        };
        let max_other = owned
            .iter()
            .filter(|r| s(r, "/metadata/name") != new_name)
            .map(revision_of)
            .max()
            .unwrap_or(0);
        let current = owned.iter().find(|r| s(r, "/metadata/name") == new_name);
        let new_available = match current {
            None => {
                let mut tpl = template.clone();
                tpl["metadata"]["labels"][HASH_LABEL] = json!(hash);
                let mut selector = d["spec"]["selector"].clone();
                selector["matchLabels"][HASH_LABEL] = json!(hash);
                let body = json!({
                    "metadata": {
                        "name": new_name,
                        "labels": tpl["metadata"]["labels"],
                        "annotations": {REVISION: (max_other + 1).to_string()},
                        "ownerReferences": owner_ref(d, "apps/v1", "Deployment"),
                    },
                    "spec": {"replicas": desired, "selector": selector, "template": tpl},
                });
                if let Err(e) = store.create(rs, ns, body) {
                    tracing::warn!(error = %e.message, "creating ReplicaSet {new_name}");
                }
                0
            }
            Some(r) => {
                let needs_revision = revision_of(r) <= max_other;
                if r["spec"]["replicas"].as_i64() != Some(desired) || needs_revision {
                    let _ = store.modify(rs, ns, &new_name, |cur| {
                        let mut out = cur.clone();
                        out["spec"]["replicas"] = json!(desired);
                        if needs_revision {
                            out["metadata"]["annotations"][REVISION] =
                                json!((max_other + 1).to_string());
                        }
                        Ok(out)
                    });
                }
                r["status"]["availableReplicas"].as_i64().unwrap_or(0)
            }
        };
        if new_available < desired {
            return;
        }
        for old in owned.iter().filter(|r| s(r, "/metadata/name") != new_name) {
            if old["spec"]["replicas"].as_i64() != Some(0) {
                let _ = store.modify(rs, ns, s(old, "/metadata/name"), |cur| {
                    let mut out = cur.clone();
                    out["spec"]["replicas"] = json!(0);
                    Ok(out)
                });
            }
        }
    }

    /// Creates or deletes the ReplicaSet's pods, plays kubelet for their status, and writes
    /// the ReplicaSet's status. Returns when a pod will next turn ready.
    pub(super) fn sync_pods(
        &mut self,
        store: &Store,
        r: &Value,
        rs: &'static Resource,
        pod: &'static Resource,
        now: Instant,
    ) -> Option<Instant> {
        let ns = s(r, "/metadata/namespace");
        let rs_name = s(r, "/metadata/name");
        let desired = r["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
        let mut pods = owned(store, pod, r, "ReplicaSet");
        while pods.len() < desired {
            let template = &r["spec"]["template"];
            let body = json!({
                "metadata": {
                    "generateName": format!("{rs_name}-"),
                    "labels": template["metadata"]["labels"],
                    "ownerReferences": owner_ref(r, "apps/v1", "ReplicaSet"),
                },
                "spec": template["spec"],
            });
            match store.create(pod, ns, body) {
                Ok(p) => pods.push(p),
                Err(e) => {
                    tracing::warn!(error = %e.message, "creating a pod of {rs_name}");
                    break;
                }
            }
        }
        // Scale down the not-ready pods first, then the newest.
        let (mut pods, wake) = self.run_pods(store, pods, now);
        pods.sort_by_key(|p| (kubelet::is_ready(p), std::cmp::Reverse(self.started(p).0)));
        while pods.len() > desired {
            let p = pods.remove(0);
            self.pod_started.remove(uid(&p));
            let _ = store.delete(pod, ns, s(&p, "/metadata/name"), &Preconditions::default());
        }
        let ready = pods.iter().filter(|p| kubelet::is_ready(p)).count() as i64;
        let mut status = json!({
            "replicas": pods.len(),
            "observedGeneration": r["metadata"]["generation"],
        });
        put_count(&mut status, "fullyLabeledReplicas", pods.len() as i64);
        put_count(&mut status, "readyReplicas", ready);
        put_count(&mut status, "availableReplicas", ready);
        write_status(store, rs, r, status);
        wake
    }

    /// Writes the Deployment's status from its ReplicaSets; returns when the progress
    /// deadline will pass for an unfinished rollout.
    pub(super) fn deployment_status(
        &mut self,
        store: &Store,
        d: &Value,
        replica_sets: &[Value],
        now: Instant,
    ) -> Option<Instant> {
        let ns = s(d, "/metadata/namespace");
        let name = s(d, "/metadata/name");
        let generation = d["metadata"]["generation"].as_i64().unwrap_or(1);
        let desired = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let new_name = format!("{name}-{}", template_hash(&d["spec"]["template"]));
        let owned: Vec<&Value> = replica_sets
            .iter()
            .filter(|r| controller_uid(r, "Deployment") == Some(uid(d)))
            .collect();
        let new_rs = owned.iter().find(|r| s(r, "/metadata/name") == new_name);
        let count = |r: &Value, f: &str| r["status"][f].as_i64().unwrap_or(0);
        let sum = |f: &str| owned.iter().map(|r| count(r, f)).sum::<i64>();
        let replicas = sum("replicas");
        let updated = new_rs.map_or(0, |r| count(r, "replicas"));
        let ready = sum("readyReplicas");
        let available = sum("availableReplicas");
        let new_available = new_rs.map_or(0, |r| count(r, "availableReplicas"));

        let entry = self
            .progress_started
            .entry(uid(d).to_string())
            .or_insert((generation, now));
        if entry.0 != generation {
            *entry = (generation, now);
        }
        let progress_start = entry.1;
        let deadline = Duration::from_secs(
            d["spec"]["progressDeadlineSeconds"]
                .as_u64()
                .unwrap_or(DEFAULT_PROGRESS_DEADLINE),
        );
        let complete = updated == desired && replicas == desired && new_available >= desired;
        let mut wake = None;
        let (p_status, p_reason, p_message) = if complete {
            (
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            )
        } else if now >= progress_start + deadline {
            (
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{new_name}\" has timed out progressing."),
            )
        } else {
            wake = Some(progress_start + deadline);
            (
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing."),
            )
        };
        // maxUnavailable defaults to 25%, rounded down.
        let min_available = desired - desired / 4;
        let (a_status, a_reason, a_message) = if available >= min_available {
            (
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        } else {
            (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        };
        let old_conditions = d["status"]["conditions"].as_array().cloned();
        let condition = |kind: &str, status: &str, reason: &str, message: &str| {
            let old = old_conditions
                .iter()
                .flatten()
                .find(|c| c["type"] == kind)
                .cloned();
            let stamp = now_string(Utc::now());
            let same_status = old.as_ref().is_some_and(|o| o["status"] == status);
            let same = same_status
                && old
                    .as_ref()
                    .is_some_and(|o| o["reason"] == reason && o["message"] == message);
            let pick = |field: &str, keep: bool| {
                old.as_ref()
                    .filter(|_| keep)
                    .map_or(json!(stamp), |o| o[field].clone())
            };
            json!({
                "type": kind,
                "status": status,
                "lastUpdateTime": pick("lastUpdateTime", same),
                "lastTransitionTime": pick("lastTransitionTime", same_status),
                "reason": reason,
                "message": message,
            })
        };
        let mut status = json!({
            "observedGeneration": generation,
            "conditions": [
                condition("Available", a_status, a_reason, a_message),
                condition("Progressing", p_status, p_reason, &p_message),
            ],
        });
        put_count(&mut status, "replicas", replicas);
        put_count(&mut status, "updatedReplicas", updated);
        put_count(&mut status, "readyReplicas", ready);
        put_count(&mut status, "availableReplicas", available);
        put_count(
            &mut status,
            "unavailableReplicas",
            (desired.max(replicas) - available).max(0),
        );
        let revision = new_rs.map(|r| {
            s(
                r,
                &format!("/metadata/annotations/{}", REVISION.replace('/', "~1")),
            )
            .to_string()
        });
        let revision_changed = revision.as_ref().is_some_and(|rev| {
            s(
                d,
                &format!("/metadata/annotations/{}", REVISION.replace('/', "~1")),
            ) != rev
        });
        if d.get("status") != Some(&status) || revision_changed {
            let _ = store.modify(res("apps", "deployments"), ns, name, |cur| {
                let mut out = cur.clone();
                out["status"] = status;
                if let Some(rev) = revision.filter(|_| revision_changed) {
                    out["metadata"]["annotations"][REVISION] = json!(rev);
                }
                Ok(out)
            });
        }
        wake
    }
}
