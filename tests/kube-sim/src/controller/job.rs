//! The Job controller: runs a Job's pods to completion and reports it `Complete` or `Failed`.
//!
//! Helm waits for hook Jobs to complete and for `helm test` pods to succeed, and its status
//! checks read the conditions and counters written here: `active`, `ready`, `succeeded`,
//! `failed`, `startTime`, `completionTime`, and the `SuccessCriteriaMet`/`Complete` or
//! `FailureTarget`/`Failed` condition pairs of Kubernetes 1.31+. Up to `parallelism` pods run
//! at once until `completions` have succeeded (with `completions` unset, the first success
//! completes the Job); a failed pod is replaced until more than `backoffLimit` have failed.
//!
//! Simplifications: failed pods are replaced at once (no exponential back-off), no
//! `activeDeadlineSeconds`, `podFailurePolicy`, indexed completions or TTL after finishing;
//! `suspend: true` runs no pods.

use std::time::Instant;

use chrono::Utc;
use serde_json::{json, Value};

use super::kubelet::{is_ready, phase};
use super::*;

/// Labels the real Job controller puts on its pods (both the legacy and the prefixed form).
fn pod_labels(job: &Value) -> Value {
    let mut labels = job["spec"]["template"]["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    let name = s(job, "/metadata/name");
    for (k, v) in [
        ("batch.kubernetes.io/controller-uid", uid(job)),
        ("batch.kubernetes.io/job-name", name),
        ("controller-uid", uid(job)),
        ("job-name", name),
    ] {
        labels[k] = json!(v);
    }
    labels
}

/// Whether the Job already carries a `True` condition of `kind`.
fn has_condition(job: &Value, kind: &str) -> bool {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == kind && c["status"] == "True")
        })
}

fn condition(kind: &str, reason: &str, message: &str, at: &str) -> Value {
    json!({
        "type": kind,
        "status": "True",
        "lastProbeTime": at,
        "lastTransitionTime": at,
        "reason": reason,
        "message": message,
    })
}

impl Controller {
    /// Reconciles one Job; returns when one of its pods will next change by itself.
    pub(super) fn sync_job(
        &mut self,
        store: &Store,
        name: &ObjectName,
        now: Instant,
    ) -> Option<Instant> {
        let (jobs, pod) = (res("batch", "jobs"), res("", "pods"));
        let job = store.get(jobs, &name.0, &name.1).ok()?;
        let ns = name.0.as_str();
        let pods = owned(store, pod, &job, "Job");
        let finished = has_condition(&job, "Complete") || has_condition(&job, "Failed");
        let (pods, mut wake) = self.run_pods(store, pods, now);
        let count = |p: &str| pods.iter().filter(|x| phase(x) == p).count() as i64;
        let (succeeded, failed) = (count("Succeeded"), count("Failed"));
        let mut active: Vec<&Value> = pods
            .iter()
            .filter(|p| !matches!(phase(p), "Succeeded" | "Failed"))
            .collect();
        let spec = &job["spec"];
        let parallelism = spec["parallelism"].as_i64().unwrap_or(1).max(0);
        let completions = spec["completions"].as_i64();
        let backoff_limit = spec["backoffLimit"].as_i64().unwrap_or(6);
        let suspended = spec["suspend"] == json!(true);
        let stamp = now_string(Utc::now());
        let mut status = job["status"].clone();
        if !status.is_object() {
            status = json!({});
        }
        let mut conditions: Vec<Value> =
            status["conditions"].as_array().cloned().unwrap_or_default();
        let done_now = if finished {
            None
        } else if failed > backoff_limit {
            Some((
                "FailureTarget",
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ))
        } else if completions.map_or(succeeded > 0 && active.is_empty(), |c| succeeded >= c) {
            Some((
                "SuccessCriteriaMet",
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ))
        } else {
            None
        };
        if let Some((target, terminal, reason, message)) = done_now {
            conditions.push(condition(target, reason, message, &stamp));
            conditions.push(condition(terminal, reason, message, &stamp));
            if terminal == "Complete" {
                status["completionTime"] = json!(stamp);
            }
        }
        let finished = finished || done_now.is_some();
        if finished || suspended {
            // A finished (or suspended) Job stops what still runs.
            for p in active.drain(..) {
                self.pod_started.remove(uid(p));
                let _ = store.delete(pod, ns, s(p, "/metadata/name"), &Preconditions::default());
            }
            wake = None;
        } else {
            let want = completions.map_or(parallelism, |c| parallelism.min(c - succeeded));
            let mut created = 0;
            while (active.len() as i64) + created < want {
                let body = json!({
                    "metadata": {
                        "generateName": format!("{}-", name.1),
                        "labels": pod_labels(&job),
                        "ownerReferences": owner_ref(&job, "batch/v1", "Job"),
                    },
                    "spec": spec["template"]["spec"],
                });
                if let Err(e) = store.create(pod, ns, body) {
                    tracing::warn!(error = %e.message, "creating a pod of Job {}", name.1);
                    break;
                }
                created += 1;
            }
            if status.get("startTime").is_none() {
                status["startTime"] = json!(stamp);
            }
            status["active"] = json!(active.len() as i64 + created);
        }
        if finished || suspended {
            if let Some(o) = status.as_object_mut() {
                o.remove("active");
            }
        }
        status["ready"] = json!(active.iter().filter(|p| is_ready(p)).count());
        status["terminating"] = json!(0);
        status["uncountedTerminatedPods"] = json!({});
        for (field, n) in [("succeeded", succeeded), ("failed", failed)] {
            match status.as_object_mut() {
                Some(o) if n == 0 => {
                    o.remove(field);
                }
                _ => status[field] = json!(n),
            }
        }
        if !conditions.is_empty() {
            status["conditions"] = json!(conditions);
        }
        write_status(store, jobs, &job, status);
        wake
    }
}
