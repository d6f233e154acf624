//! Why an object of a release did not become ready, in words a person can act on.
//!
//! "Timed out waiting for the condition" sends an operator to `kubectl describe`; the cause
//! is almost always visible in the object's conditions (progress deadline, quota, a failed
//! Job) or its pods' statuses (image pull back-off, crash loop, OOM kill, unschedulable, an
//! unbound claim). This module
//! turns those objects into one message; gathering them is `rollout`'s job. Everything here
//! is pure, so it is unit-tested over hand-built objects.

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, Pod};
use serde_json::Value;

/// Longest piece of server-provided text quoted in a message (image pull errors can be long).
const MAX_QUOTE: usize = 300;

/// Why an object counts as not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StallCause {
    /// The Deployment controller gave up: `Progressing=False` with reason
    /// `ProgressDeadlineExceeded`, after `spec.progressDeadlineSeconds`.
    ProgressDeadlineExceeded {
        progress_deadline_seconds: Option<i32>,
    },
    /// Our own waiting deadline passed first.
    NotReadyWithin(Duration),
    /// The object reports a state waiting will not fix (a failed Job, a lost claim,
    /// `Stalled`): why.
    Failed(String),
    /// One of its pods has been in a state that does not fix itself for `after`
    /// (`--fail-fast-after`).
    PodStuck {
        pod: String,
        why: String,
        after: Duration,
    },
}

/// One Deployment condition, as `kubectl describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionSummary {
    pub type_: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
}

impl fmt::Display for ConditionSummary {
    /// `Progressing=False (ProgressDeadlineExceeded: ReplicaSet "x" has timed out progressing)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.type_, self.status)?;
        match (self.reason.as_deref(), self.message.as_deref()) {
            (Some(r), Some(m)) if !m.is_empty() => {
                write!(f, " ({r}: {})", clip(m.trim_end_matches('.')))
            }
            (Some(r), _) => write!(f, " ({r})"),
            (None, Some(m)) if !m.is_empty() => write!(f, " ({})", clip(m)),
            _ => Ok(()),
        }
    }
}

/// What is wrong with one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodProblems {
    pub pod: String,
    /// e.g. `container carts waiting: ImagePullBackOff: Back-off pulling image "carts:broken"`.
    pub problems: Vec<String>,
}

impl fmt::Display for PodProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pod {}: {}", self.pod, self.problems.join(", "))
    }
}

/// Everything known about one object that did not become ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub namespace: String,
    /// The kind as the API names it (`Deployment`, `StatefulSet`, `Job`, ...).
    pub kind: String,
    pub name: String,
    pub cause: StallCause,
    /// Where it stands, in `kubectl rollout status` words, e.g. `1 of 2 updated replicas are
    /// available`, or that it does not exist.
    pub progress: Option<String>,
    /// The conditions worth reading (see [`notable_conditions`]).
    pub conditions: Vec<ConditionSummary>,
    /// Pods with something wrong, at most a few.
    pub pods: Vec<PodProblems>,
    /// How many more pods had problems than are listed.
    pub more_pods: usize,
    /// Why pods could not be examined, if they could not.
    pub pods_error: Option<String>,
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} in {} ", self.kind, self.name, self.namespace)?;
        match &self.cause {
            StallCause::ProgressDeadlineExceeded {
                progress_deadline_seconds: Some(s),
            } => write!(f, "exceeded its progress deadline ({s}s)")?,
            StallCause::ProgressDeadlineExceeded { .. } => {
                write!(f, "exceeded its progress deadline")?
            }
            StallCause::NotReadyWithin(d) => {
                write!(f, "did not become ready within {}", go_duration(*d))?
            }
            StallCause::Failed(why) => write!(f, "cannot become ready: {}", clip(why))?,
            StallCause::PodStuck { pod, why, after } => write!(
                f,
                "cannot start its pods: pod {pod} has been {} for {} (--fail-fast-after)",
                clip(why),
                go_duration(*after)
            )?,
        }
        let mut parts: Vec<String> = Vec::new();
        parts.extend(self.progress.clone());
        parts.extend(self.conditions.iter().map(ToString::to_string));
        parts.extend(self.pods.iter().map(ToString::to_string));
        if self.more_pods > 0 {
            let s = if self.more_pods == 1 { "" } else { "s" };
            parts.push(format!("{} more pod{s} with problems", self.more_pods));
        }
        if let Some(e) = &self.pods_error {
            parts.push(format!("pods could not be examined: {e}"));
        }
        if !parts.is_empty() {
            write!(f, ": {}", parts.join("; "))?;
        }
        Ok(())
    }
}

/// The conditions of an object worth showing: `Progressing` always; `ReplicaFailure`,
/// `Failed` and `Stalled` when true (quota, admission webhooks, a failed Job); any other
/// (`Available`, `Ready`, `Complete`, ...) when not true.
pub(crate) fn notable_conditions(object: &Value) -> Vec<ConditionSummary> {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let mut out: Vec<ConditionSummary> = object["status"]["conditions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|c| {
            let status = c["status"].as_str().unwrap_or_default();
            match c["type"].as_str().unwrap_or_default() {
                "Progressing" => true,
                "ReplicaFailure" | "Failed" | "Stalled" => status == "True",
                _ => status != "True",
            }
        })
        .map(|c| ConditionSummary {
            type_: c["type"].as_str().unwrap_or_default().to_owned(),
            status: c["status"].as_str().unwrap_or_default().to_owned(),
            reason: text(&c["reason"]),
            message: text(&c["message"]),
        })
        .collect();
    // The most telling first.
    out.sort_by_key(|c| match c.type_.as_str() {
        "ReplicaFailure" | "Failed" | "Stalled" => 0,
        "Progressing" => 1,
        _ => 2,
    });
    out
}

/// What is wrong with `pod`, in the order a person would check: eviction or failure,
/// scheduling, init containers, containers. Empty for a healthy or terminating pod.
pub fn pod_problems(pod: &Pod) -> Vec<String> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if status.phase.as_deref() == Some("Failed") {
        out.push(with_detail(
            "failed",
            status.reason.as_deref(),
            status.message.as_deref(),
        ));
    }
    let conditions = status.conditions.as_deref().unwrap_or_default();
    if let Some(c) = conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        out.push(with_detail(
            "not scheduled",
            c.reason.as_deref(),
            c.message.as_deref(),
        ));
    }
    for c in status
        .init_container_statuses
        .as_deref()
        .unwrap_or_default()
    {
        container_problem(&mut out, "init container", c, true);
    }
    for c in status.container_statuses.as_deref().unwrap_or_default() {
        container_problem(&mut out, "container", c, false);
    }
    if out.is_empty() && status.phase.as_deref() != Some("Succeeded") {
        if let Some(c) = conditions
            .iter()
            .find(|c| c.type_ == "Ready" && c.status == "False")
        {
            out.push(with_detail(
                "not ready",
                c.reason.as_deref(),
                c.message.as_deref(),
            ));
        }
    }
    out
}

fn container_problem(out: &mut Vec<String>, what: &str, c: &ContainerStatus, init: bool) {
    let name = &c.name;
    let restarts = match c.restart_count {
        0 => String::new(),
        1 => " (restarted once)".into(),
        n => format!(" (restarted {n} times)"),
    };
    match c.state.as_ref() {
        Some(ContainerState {
            waiting: Some(w), ..
        }) => {
            let mut text = with_detail(
                &format!("{what} {name} waiting"),
                w.reason.as_deref(),
                w.message.as_deref(),
            );
            // A crash loop's cause is in the last termination (OOMKilled, Error + exit code).
            if let Some(t) = c.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
                text.push_str(&format!(
                    " (last exit: {}, exit code {})",
                    t.reason.as_deref().unwrap_or("terminated"),
                    t.exit_code
                ));
            }
            text.push_str(&restarts);
            out.push(text);
        }
        Some(ContainerState {
            terminated: Some(t),
            ..
        }) => {
            // A finished init container is what should happen.
            if init && t.exit_code == 0 {
                return;
            }
            let head = format!(
                "{what} {name} terminated: {} (exit code {})",
                t.reason.as_deref().unwrap_or("Terminated"),
                t.exit_code
            );
            let mut text = match t.message.as_deref().filter(|m| !m.is_empty()) {
                Some(m) => format!("{head}: {}", clip(m)),
                None => head,
            };
            text.push_str(&restarts);
            out.push(text);
        }
        Some(ContainerState {
            running: Some(_), ..
        }) if !c.ready && !init => {
            out.push(format!("{what} {name} running but not ready{restarts}"));
        }
        _ => {}
    }
}

/// `head: Reason: message`, leaving out what is absent.
fn with_detail(head: &str, reason: Option<&str>, message: Option<&str>) -> String {
    let mut text = head.to_string();
    for part in [reason, message].into_iter().flatten() {
        if !part.is_empty() {
            text.push_str(": ");
            text.push_str(&clip(part));
        }
    }
    text
}

/// At most [`MAX_QUOTE`] characters of server text, on one line.
fn clip(text: &str) -> String {
    let one_line = text.trim().replace(['\n', '\r'], " ");
    match one_line.char_indices().nth(MAX_QUOTE) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

/// A duration the way Go (kubectl, helm, Keptn's Go services) prints it: `300ms`, `1.5s`,
/// `5m0s`, `1h0m0s`. Millisecond precision.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let hours = ms / 3_600_000;
    let minutes = ms / 60_000 % 60;
    let sec_ms = ms % 60_000;
    let seconds = if sec_ms.is_multiple_of(1000) {
        format!("{}s", sec_ms / 1000)
    } else {
        let frac = format!("{:03}", sec_ms % 1000);
        format!("{}.{}s", sec_ms / 1000, frac.trim_end_matches('0'))
    };
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}")
    } else {
        seconds
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(2)), "2s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_secs(3725)), "1h2m5s");
        assert_eq!(go_duration(Duration::from_millis(61_250)), "1m1.25s");
    }

    #[test]
    fn image_pull_back_off_is_reported_with_its_message() {
        let p = pod(json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"},
                           {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
            "containerStatuses": [{
                "name": "carts", "image": "carts:broken", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff",
                                      "message": "Back-off pulling image \"carts:broken\""}}
            }]
        }));
        assert_eq!(
            pod_problems(&p),
            vec![
                "container carts waiting: ImagePullBackOff: Back-off pulling image \"carts:broken\""
                    .to_string()
            ]
        );
    }

    #[test]
    fn unschedulable_pod_is_reported() {
        let p = pod(json!({
            "phase": "Pending",
            "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient cpu."
            }]
        }));
        assert_eq!(
            pod_problems(&p),
            vec![
                "not scheduled: Unschedulable: 0/3 nodes are available: 3 Insufficient cpu."
                    .to_string()
            ]
        );
    }

    #[test]
    fn crash_loop_names_the_last_termination() {
        let p = pod(json!({
            "phase": "Running",
            "initContainerStatuses": [{
                "name": "init", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}
            }],
            "containerStatuses": [{
                "name": "app", "image": "a", "imageID": "", "ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff",
                                      "message": "back-off 1m20s restarting failed container"}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
            }, {
                "name": "sidecar", "image": "s", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"running": {}}
            }, {
                "name": "job", "image": "j", "imageID": "", "ready": false, "restartCount": 1,
                "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": "boom\n"}}
            }]
        }));
        assert_eq!(
            pod_problems(&p),
            vec![
                "container app waiting: CrashLoopBackOff: back-off 1m20s restarting failed \
                 container (last exit: OOMKilled, exit code 137) (restarted 4 times)"
                    .to_string(),
                "container sidecar running but not ready".to_string(),
                "container job terminated: Error (exit code 1): boom (restarted once)".to_string(),
            ]
        );
    }

    #[test]
    fn healthy_evicted_and_terminating_pods() {
        let healthy = pod(json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "a", "image": "a", "imageID": "", "ready": true,
                                   "restartCount": 0, "state": {"running": {}}}]
        }));
        assert!(pod_problems(&healthy).is_empty());
        let evicted = pod(json!({
            "phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: memory."
        }));
        assert_eq!(
            pod_problems(&evicted),
            vec!["failed: Evicted: The node was low on resource: memory.".to_string()]
        );
        let terminating: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "deletionTimestamp": "2025-01-01T00:00:00Z"},
            "status": {"phase": "Failed", "reason": "Evicted"}
        }))
        .unwrap();
        assert!(pod_problems(&terminating).is_empty());
        assert!(pod_problems(&Pod::default()).is_empty());
    }

    #[test]
    fn diagnosis_reads_as_one_message() {
        let d = Diagnosis {
            namespace: "sockshop-dev".into(),
            kind: "Deployment".into(),
            name: "carts".into(),
            cause: StallCause::NotReadyWithin(Duration::from_secs(300)),
            progress: None,
            conditions: vec![ConditionSummary {
                type_: "Progressing".into(),
                status: "False".into(),
                reason: Some("ProgressDeadlineExceeded".into()),
                message: Some("ReplicaSet \"carts-5d8f\" has timed out progressing.".into()),
            }],
            pods: vec![PodProblems {
                pod: "carts-5d8f-abcde".into(),
                problems: vec![
                    "container carts waiting: ImagePullBackOff: Back-off pulling image \"carts:broken\""
                        .into(),
                ],
            }],
            more_pods: 0,
            pods_error: None,
        };
        assert_eq!(
            d.to_string(),
            "Deployment carts in sockshop-dev did not become ready within 5m0s: \
             Progressing=False (ProgressDeadlineExceeded: ReplicaSet \"carts-5d8f\" has timed \
             out progressing); pod carts-5d8f-abcde: container carts waiting: ImagePullBackOff: \
             Back-off pulling image \"carts:broken\""
        );
        let fast = Diagnosis {
            cause: StallCause::ProgressDeadlineExceeded {
                progress_deadline_seconds: Some(60),
            },
            progress: Some("0 of 2 updated replicas are available".into()),
            conditions: vec![],
            pods: vec![],
            more_pods: 2,
            pods_error: Some("timed out".into()),
            ..d
        };
        assert_eq!(
            fast.to_string(),
            "Deployment carts in sockshop-dev exceeded its progress deadline (60s): 0 of 2 \
             updated replicas are available; 2 more pods with problems; pods could not be \
             examined: timed out"
        );
    }

    #[test]
    fn long_messages_are_clipped() {
        let long = "x".repeat(1000);
        assert_eq!(clip(&long).chars().count(), MAX_QUOTE + 1);
        assert_eq!(clip(" a\nb "), "a b");
    }

    #[test]
    fn other_kinds_and_causes_read_as_one_message() {
        let d = Diagnosis {
            namespace: "shop-dev".into(),
            kind: "StatefulSet".into(),
            name: "db".into(),
            cause: StallCause::PodStuck {
                pod: "db-0".into(),
                why: "container db ImagePullBackOff".into(),
                after: Duration::from_secs(60),
            },
            progress: Some("0 of 1 pods ready".into()),
            conditions: vec![],
            pods: vec![PodProblems {
                pod: "db-0".into(),
                problems: vec!["claim data-db-0 is Pending (not bound)".into()],
            }],
            more_pods: 0,
            pods_error: None,
        };
        assert_eq!(
            d.to_string(),
            "StatefulSet db in shop-dev cannot start its pods: pod db-0 has been container db \
             ImagePullBackOff for 1m0s (--fail-fast-after): 0 of 1 pods ready; pod db-0: claim \
             data-db-0 is Pending (not bound)"
        );
        let job = Diagnosis {
            kind: "Job".into(),
            name: "migrate".into(),
            cause: StallCause::Failed("the Job failed (BackoffLimitExceeded)".into()),
            progress: None,
            pods: vec![],
            ..d
        };
        assert_eq!(
            job.to_string(),
            "Job migrate in shop-dev cannot become ready: the Job failed (BackoffLimitExceeded)"
        );
    }

    #[test]
    fn notable_conditions_of_any_kind() {
        let object = serde_json::json!({"status": {"conditions": [
            {"type": "Available", "status": "True"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            {"type": "Ready", "status": "False", "reason": "Provisioning"},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"},
            {"type": "Stalled", "status": "False"}
        ]}});
        let shown: Vec<String> = notable_conditions(&object)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            [
                "Failed=True (BackoffLimitExceeded)",
                "Progressing=True (NewReplicaSetAvailable)",
                "Ready=False (Provisioning)"
            ]
        );
    }
}
