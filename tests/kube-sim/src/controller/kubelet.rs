//! The kubelet's part: the status a pod reports as it is scheduled, pulls, runs and (for
//! pods that run to completion) exits.
//!
//! Every status derives from the instant the controller first saw the pod and the settings,
//! so recomputing it gives the same value (and no write). The phases:
//!
//! * waiting for its PersistentVolumeClaims: `Pending`, `PodScheduled=False`
//!   (`Unschedulable`), no clock started; a pod marked `Unschedulable` by anyone else (a
//!   test playing a scheduler) is left as it is, never started;
//! * an image listed in `never_ready_images`: `Pending` forever, `ImagePullBackOff`;
//! * before `rollout_delay`: `Pending`, `ContainerCreating`;
//! * then `Running` and `Ready`; a pod that runs to completion (restart policy `Never` or
//!   `OnFailure`, or owned by a Job) stays so for `job_duration`, then ends `Succeeded`
//!   (exit 0) or, for an image listed in `failing_job_images`, `Failed` (exit 1).
//!
//! `OnFailure` pods are treated like `Never` ones: a failed container does not restart in place.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::*;

/// What the kubelet reports for one pod, and when that will next change by itself.
pub(super) struct PodState {
    pub status: Value,
    pub wake: Option<Instant>,
}

/// A pod's phase as the owners count it.
pub(super) fn phase(p: &Value) -> &str {
    s(p, "/status/phase")
}

/// Whether a pod reports the `Ready` condition `True`.
pub(super) fn is_ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

impl Controller {
    pub(super) fn started(&mut self, p: &Value) -> (Instant, DateTime<Utc>) {
        *self
            .pod_started
            .entry(uid(p).to_string())
            .or_insert_with(|| (Instant::now(), Utc::now()))
    }

    /// The first container image containing one of `patterns`.
    fn image_matching<'a>(p: &'a Value, patterns: &[String]) -> Option<&'a str> {
        p.pointer("/spec/containers")?
            .as_array()?
            .iter()
            .filter_map(|c| c["image"].as_str())
            .find(|image| patterns.iter().any(|bad| image.contains(bad.as_str())))
    }

    /// The first PersistentVolumeClaim the pod mounts that is not `Bound` (or does not exist).
    fn unbound_claim(store: &Store, p: &Value) -> Option<String> {
        let pvc = res("", "persistentvolumeclaims");
        let ns = s(p, "/metadata/namespace");
        p.pointer("/spec/volumes")?
            .as_array()?
            .iter()
            .filter_map(|v| v.pointer("/persistentVolumeClaim/claimName")?.as_str())
            .find(|claim| {
                store
                    .get(pvc, ns, claim)
                    .map_or(true, |c| s(&c, "/status/phase") != "Bound")
            })
            .map(str::to_string)
    }

    /// Whether the pod's containers exit rather than restart (Job pods, `helm test` pods).
    fn runs_to_completion(p: &Value) -> bool {
        matches!(s(p, "/spec/restartPolicy"), "Never" | "OnFailure")
            || controller_uid(p, "Job").is_some()
    }

    /// Computes each pod's status and writes the ones that changed; returns the pods as they
    /// now are and when one of them will next change by itself.
    pub(super) fn run_pods(
        &mut self,
        store: &Store,
        pods: Vec<Value>,
        now: Instant,
    ) -> (Vec<Value>, Option<Instant>) {
        let pod = res("", "pods");
        let mut wake = None;
        let mut out = Vec::with_capacity(pods.len());
        for mut p in pods {
            let rv = s(&p, "/metadata/resourceVersion");
            if let Some((seen, next)) = self.settled.get(uid(&p)) {
                if seen == rv && next.is_none_or(|t| now < t) {
                    if let Some(at) = next {
                        wake = min_instant(wake, *at);
                    }
                    out.push(p);
                    continue;
                }
            }
            let state = self.pod_status(store, &p, now);
            if let Some(at) = state.wake {
                wake = min_instant(wake, at);
            }
            if p.get("status") != Some(&state.status) {
                let ns = s(&p, "/metadata/namespace").to_string();
                let name = s(&p, "/metadata/name").to_string();
                let status = state.status.clone();
                if let Ok(written) = store.modify(pod, &ns, &name, |cur| {
                    let mut o = cur.clone();
                    o["status"] = status;
                    Ok(o)
                }) {
                    p = written;
                }
            }
            self.settled.insert(
                uid(&p).to_string(),
                (s(&p, "/metadata/resourceVersion").to_string(), state.wake),
            );
            out.push(p);
        }
        (out, wake)
    }

    /// Creates a workload's pod from `body` and runs it: appends it to `pods` and folds its
    /// next transition into `wake`. `false` (logged) when the store refused it.
    pub(super) fn start_pod(
        &mut self,
        store: &Store,
        ns: &str,
        body: Value,
        now: Instant,
        pods: &mut Vec<Value>,
        wake: &mut Option<Instant>,
    ) -> bool {
        match store.create(res("", "pods"), ns, body) {
            Ok(p) => {
                let (mut started, at) = self.run_pods(store, vec![p], now);
                if let Some(at) = at {
                    *wake = min_instant(*wake, at);
                }
                pods.append(&mut started);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e.message, "creating a pod in {ns}");
                false
            }
        }
    }

    /// What a kubelet would report for `p` now (see the module documentation). Timestamps
    /// derive from the start time, so recomputing gives the same status.
    pub(super) fn pod_status(&mut self, store: &Store, p: &Value, now: Instant) -> PodState {
        let unschedulable = p
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["type"] == "PodScheduled"
                        && c["status"] == "False"
                        && c["reason"] == "Unschedulable"
                })
            });
        if unschedulable && !self.claim_blocked.contains(uid(p)) {
            // Another scheduler found no node for it: it never starts.
            return PodState {
                status: p["status"].clone(),
                wake: None,
            };
        }
        if let Some(claim) = Self::unbound_claim(store, p) {
            self.claim_blocked.insert(uid(p).to_string());
            // Not scheduled: the clock starts when the claims are bound.
            let status = json!({
                "phase": "Pending",
                "conditions": [{
                    "type": "PodScheduled", "status": "False", "lastProbeTime": null,
                    "lastTransitionTime": s(p, "/metadata/creationTimestamp"),
                    "reason": "Unschedulable",
                    "message": format!("0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims (claim \"{claim}\"). preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."),
                }],
                "qosClass": "BestEffort",
            });
            return PodState { status, wake: None };
        }
        self.claim_blocked.remove(uid(p));
        let (started, wall) = self.started(p);
        let delay = self.settings.rollout_delay;
        let ready_at = started + delay;
        let ready_wall = wall + chrono::Duration::from_std(delay).unwrap_or_default();
        let run = self.settings.job_duration;
        let done_at = ready_at + run;
        let done_wall = ready_wall + chrono::Duration::from_std(run).unwrap_or_default();
        let blocked = Self::image_matching(p, &self.settings.never_ready_images).map(String::from);
        let completes = Self::runs_to_completion(p);
        let failing =
            completes && Self::image_matching(p, &self.settings.failing_job_images).is_some();
        let done = completes && blocked.is_none() && now >= done_at;
        let ready = blocked.is_none() && now >= ready_at && !done;
        let containers: Vec<Value> = p["spec"]["containers"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|c| {
                let image = c["image"].as_str().unwrap_or_default();
                let state = if done {
                    let (code, reason) = if failing { (1, "Error") } else { (0, "Completed") };
                    json!({"terminated": {
                        "exitCode": code,
                        "reason": reason,
                        "startedAt": now_string(ready_wall),
                        "finishedAt": now_string(done_wall),
                    }})
                } else if ready {
                    json!({"running": {"startedAt": now_string(ready_wall)}})
                } else if blocked.as_deref() == Some(image) {
                    json!({"waiting": {
                        "reason": "ImagePullBackOff",
                        "message": format!("Back-off pulling image \"{image}\": ErrImagePull: image is listed in kube-sim's never_ready_images"),
                    }})
                } else {
                    json!({"waiting": {"reason": "ContainerCreating"}})
                };
                json!({
                    "name": c["name"],
                    "image": image,
                    "imageID": "",
                    "ready": ready,
                    "started": ready,
                    "restartCount": 0,
                    "state": state,
                })
            })
            .collect();
        let flag = if ready { "True" } else { "False" };
        let since = now_string(if done {
            done_wall
        } else if ready {
            ready_wall
        } else {
            wall
        });
        let mut ready_condition = json!({
            "type": "Ready", "status": flag, "lastProbeTime": null,
            "lastTransitionTime": since,
        });
        if done {
            ready_condition["reason"] = json!(if failing { "PodFailed" } else { "PodCompleted" });
        } else if !ready {
            ready_condition["reason"] = json!("ContainersNotReady");
            ready_condition["message"] = json!("containers with unready status");
        }
        let mut containers_ready = ready_condition.clone();
        containers_ready["type"] = json!("ContainersReady");
        let phase = match (done, failing, ready) {
            (true, true, _) => "Failed",
            (true, false, _) => "Succeeded",
            (false, _, true) => "Running",
            _ => "Pending",
        };
        let octet = s(p, "/metadata/name").bytes().map(u32::from).sum::<u32>() % 250 + 2;
        let status = json!({
            "phase": phase,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                 "lastTransitionTime": now_string(wall)},
                containers_ready,
                ready_condition,
            ],
            "hostIP": "10.0.0.1",
            "podIP": format!("10.244.0.{octet}"),
            "startTime": now_string(wall),
            "qosClass": "BestEffort",
            "containerStatuses": containers,
        });
        let wake = match () {
            _ if blocked.is_some() || done => None,
            _ if !ready => Some(ready_at),
            _ if completes => Some(done_at),
            _ => None,
        };
        PodState { status, wake }
    }
}
