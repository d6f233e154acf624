//! Whether an object a release holds is ready, and whether its pods can still get there: the
//! pure rules behind [`Cluster::wait_until_ready`](super::Cluster::wait_until_ready).
//!
//! Readiness is judged per kind, by the rules operators know (`kubectl rollout status`,
//! Helm's `--wait`, Flux's kstatus):
//! - Deployment: `kubectl rollout status` ([`rollout_status`](super::rollout_status)).
//! - StatefulSet (kstatus): the controller observed the generation; with a partition, the
//!   pods above it are updated; without one, `currentRevision == updateRevision`; every
//!   replica ready, no extra pods left.
//! - DaemonSet (`kubectl rollout status`): every scheduled pod updated and available.
//! - Job: `Complete=True`; `Failed=True` ends the wait (it will not complete by waiting).
//! - PersistentVolumeClaim: `Bound`; `Lost` fails.
//! - Service of type LoadBalancer: an address assigned (`status.loadBalancer.ingress`);
//!   other Services are ready when they exist and are not waited for.
//! - Pod: `Running` with `Ready=True`, or `Succeeded`; `Failed` fails.
//! - Custom resources (any group outside Kubernetes' own): the controller observed the
//!   generation (when it reports one), `Ready` and `Available` conditions `True` where
//!   present, `Stalled=True` fails (kstatus); without conditions ready once they exist.
//!
//! "Fail fast" is decided here too: a pod in a state that does not fix itself
//! ([`hopeless`]: image pull errors, an invalid image name, a container config error, a crash
//! loop past [`CRASH_LOOP_RESTARTS`], unschedulable) gives up the wait once it has been so
//! for `--fail-fast-after`, instead of at the rollout deadline ([`StuckPods`]). Only pods
//! of the workload's newest revision count ([`is_newest_revision`]): an old pod that crash-loops
//! already must not fail the deployment that replaces it.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use super::rollout::{rollout_status, RolloutStatus};

/// Restarts after which a crash loop counts as hopeless: a container that crashed this often
/// right after a deployment is broken, not warming up.
pub const CRASH_LOOP_RESTARTS: i32 = 3;

/// How the readiness of an object is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    Deployment,
    StatefulSet,
    DaemonSet,
    Job,
    PersistentVolumeClaim,
    /// A Service of type LoadBalancer.
    LoadBalancer,
    Pod,
    /// A custom resource: judged by its standard conditions.
    Custom,
}

impl Kind {
    /// Whether the kind runs pods through a selector (whose pods fail fast).
    pub fn has_pods(self) -> bool {
        matches!(
            self,
            Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet | Kind::Job
        )
    }
}

/// One object waited for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Awaited {
    pub kind: Kind,
    /// `apps/v1`, `v1`, `example.com/v1alpha1`.
    pub api_version: String,
    /// The kind as the API names it (`Deployment`, `Service`, `Database`).
    pub kind_name: String,
    pub name: String,
    /// `None`: the release's namespace.
    pub namespace: Option<String>,
}

impl Awaited {
    /// A Deployment of the release's namespace.
    pub fn deployment(name: &str) -> Awaited {
        Awaited {
            kind: Kind::Deployment,
            api_version: "apps/v1".into(),
            kind_name: "Deployment".into(),
            name: name.into(),
            namespace: None,
        }
    }

    /// What of a rendered manifest object is waited for: `None` for objects that are ready
    /// once they exist (ConfigMaps, RBAC, a ClusterIP Service, an HPA, ...).
    pub fn of_manifest_object(object: &Value) -> Option<Awaited> {
        let api_version = object["apiVersion"].as_str()?;
        let kind_name = object["kind"].as_str()?;
        let name = object["metadata"]["name"].as_str()?;
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
        let kind = match (group, kind_name) {
            ("apps", "Deployment") => Kind::Deployment,
            ("apps", "StatefulSet") => Kind::StatefulSet,
            ("apps", "DaemonSet") => Kind::DaemonSet,
            ("batch", "Job") => Kind::Job,
            ("", "PersistentVolumeClaim") => Kind::PersistentVolumeClaim,
            ("", "Service") if object["spec"]["type"] == "LoadBalancer" => Kind::LoadBalancer,
            ("", "Pod") => Kind::Pod,
            _ if is_custom_group(group) => Kind::Custom,
            _ => return None,
        };
        Some(Awaited {
            kind,
            api_version: api_version.into(),
            kind_name: kind_name.into(),
            name: name.into(),
            namespace: object["metadata"]["namespace"].as_str().map(str::to_owned),
        })
    }
}

impl fmt::Display for Awaited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind_name, self.name)
    }
}

/// Whether `group` is not one of Kubernetes' own API groups.
fn is_custom_group(group: &str) -> bool {
    !(group.is_empty()
        || matches!(group, "apps" | "batch" | "autoscaling" | "policy")
        || group == "k8s.io"
        || group.ends_with(".k8s.io"))
}

/// What the objects of a manifest hold that is waited for, in manifest order.
pub fn awaited_in(objects: &[Value]) -> Vec<Awaited> {
    let mut out: Vec<Awaited> = Vec::new();
    for awaited in objects.iter().filter_map(Awaited::of_manifest_object) {
        if !out.contains(&awaited) {
            out.push(awaited);
        }
    }
    out
}

/// Where one object stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Still going: what it waits for, in the words of `kubectl rollout status`.
    InProgress(String),
    /// It will not become ready by waiting: why.
    Failed(String),
}

/// Where `object` (as the API returned it) stands, by the rules of its kind.
pub fn readiness(kind: Kind, object: &Value) -> Readiness {
    match kind {
        Kind::Deployment => match serde_json::from_value::<Deployment>(object.clone()) {
            Ok(deployment) => match rollout_status(&deployment) {
                RolloutStatus::Complete => Readiness::Ready,
                RolloutStatus::InProgress(what) => Readiness::InProgress(what),
                RolloutStatus::DeadlineExceeded => Readiness::Failed(format!(
                    "exceeded its progress deadline{}",
                    object["spec"]["progressDeadlineSeconds"]
                        .as_i64()
                        .map(|s| format!(" ({s}s)"))
                        .unwrap_or_default()
                )),
            },
            Err(e) => Readiness::InProgress(format!("unreadable Deployment: {e}")),
        },
        Kind::StatefulSet => stateful_set(object),
        Kind::DaemonSet => daemon_set(object),
        Kind::Job => job(object),
        Kind::PersistentVolumeClaim => match object["status"]["phase"].as_str() {
            Some("Bound") => Readiness::Ready,
            Some("Lost") => Readiness::Failed("the claim lost its volume".into()),
            phase => Readiness::InProgress(format!(
                "the claim is {} (not bound to a volume)",
                phase.unwrap_or("Pending")
            )),
        },
        Kind::LoadBalancer => {
            let assigned = object["status"]["loadBalancer"]["ingress"]
                .as_array()
                .is_some_and(|ingress| !ingress.is_empty());
            if assigned {
                Readiness::Ready
            } else {
                Readiness::InProgress("no load balancer address assigned yet".into())
            }
        }
        Kind::Pod => match object["status"]["phase"].as_str() {
            Some("Succeeded") => Readiness::Ready,
            Some("Failed") => Readiness::Failed("the pod failed".into()),
            Some("Running") if condition(object, "Ready") == Some("True") => Readiness::Ready,
            phase => Readiness::InProgress(format!(
                "the pod is {} and not ready",
                phase.unwrap_or("Pending")
            )),
        },
        Kind::Custom => custom(object),
    }
}

fn int(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// `status` of the condition `type_`.
fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a str> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?["status"]
        .as_str()
}

/// `None` when the controller has observed the current generation.
fn unobserved(object: &Value, what: &str) -> Option<Readiness> {
    let generation = int(object, "/metadata/generation");
    let observed = int(object, "/status/observedGeneration");
    (generation > observed).then(|| {
        Readiness::InProgress(format!(
            "waiting for the {what} controller to observe generation {generation}"
        ))
    })
}

fn stateful_set(object: &Value) -> Readiness {
    if object.get("status").is_none_or(Value::is_null) {
        return Readiness::InProgress("waiting for the StatefulSet controller to report".into());
    }
    if let Some(waiting) = unobserved(object, "StatefulSet") {
        return waiting;
    }
    let wanted = object
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let ready = int(object, "/status/readyReplicas");
    let updated = int(object, "/status/updatedReplicas");
    let replicas = int(object, "/status/replicas");
    let on_delete = object["spec"]["updateStrategy"]["type"] == "OnDelete";
    let partition = int(object, "/spec/updateStrategy/rollingUpdate/partition");
    if !on_delete {
        if partition > 0 {
            let due = (wanted - partition).max(0);
            if updated < due {
                return Readiness::InProgress(format!(
                    "{updated} of {due} pods above partition {partition} updated"
                ));
            }
        } else {
            let current = object["status"]["currentRevision"].as_str();
            let update = object["status"]["updateRevision"].as_str();
            if current != update {
                return Readiness::InProgress(format!(
                    "{updated} of {wanted} pods updated to revision {}",
                    update.unwrap_or("?")
                ));
            }
        }
    }
    if ready < wanted {
        return Readiness::InProgress(format!("{ready} of {wanted} pods ready"));
    }
    if replicas > wanted {
        return Readiness::InProgress(format!(
            "{} extra pods pending termination",
            replicas - wanted
        ));
    }
    Readiness::Ready
}

fn daemon_set(object: &Value) -> Readiness {
    if object.get("status").is_none_or(Value::is_null) {
        return Readiness::InProgress("waiting for the DaemonSet controller to report".into());
    }
    if let Some(waiting) = unobserved(object, "DaemonSet") {
        return waiting;
    }
    if object["spec"]["updateStrategy"]["type"] == "OnDelete" {
        return Readiness::Ready;
    }
    let desired = int(object, "/status/desiredNumberScheduled");
    let updated = int(object, "/status/updatedNumberScheduled");
    let available = int(object, "/status/numberAvailable");
    if updated < desired {
        return Readiness::InProgress(format!("{updated} of {desired} updated pods scheduled"));
    }
    if available < desired {
        return Readiness::InProgress(format!("{available} of {desired} updated pods available"));
    }
    Readiness::Ready
}

fn job(object: &Value) -> Readiness {
    let reason_of = |type_: &str| {
        object["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
            .map(|c| {
                let reason = c["reason"].as_str().unwrap_or("");
                let message = c["message"].as_str().unwrap_or("");
                match (reason.is_empty(), message.is_empty()) {
                    (false, false) => format!("{reason}: {message}"),
                    (false, true) => reason.to_owned(),
                    _ => message.to_owned(),
                }
            })
    };
    if condition(object, "Failed") == Some("True") {
        let why = reason_of("Failed").unwrap_or_default();
        return Readiness::Failed(if why.is_empty() {
            "the Job failed".into()
        } else {
            format!("the Job failed ({why})")
        });
    }
    if condition(object, "Complete") == Some("True") {
        return Readiness::Ready;
    }
    let completions = object
        .pointer("/spec/completions")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    Readiness::InProgress(format!(
        "{} of {completions} completions, {} active, {} failed",
        int(object, "/status/succeeded"),
        int(object, "/status/active"),
        int(object, "/status/failed"),
    ))
}

fn custom(object: &Value) -> Readiness {
    if object.pointer("/status/observedGeneration").is_some() {
        if let Some(waiting) = unobserved(object, "resource's") {
            return waiting;
        }
    }
    let conditions = object["status"]["conditions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let text = |c: &Value| {
        let mut out = format!(
            "{}={}",
            c["type"].as_str().unwrap_or("?"),
            c["status"].as_str().unwrap_or("?")
        );
        for part in [&c["reason"], &c["message"]] {
            if let Some(p) = part.as_str().filter(|p| !p.is_empty()) {
                out.push_str(": ");
                out.push_str(p);
            }
        }
        out
    };
    if let Some(stalled) = conditions
        .iter()
        .find(|c| c["type"] == "Stalled" && c["status"] == "True")
    {
        return Readiness::Failed(text(stalled));
    }
    for type_ in ["Ready", "Available"] {
        if let Some(c) = conditions.iter().find(|c| c["type"] == type_) {
            if c["status"] != "True" {
                return Readiness::InProgress(text(c));
            }
        }
    }
    Readiness::Ready
}

/// Why `pod` will not start by waiting, if it will not: a container waiting on an image pull
/// error, an invalid image name or a container config error, crash-looping after
/// [`CRASH_LOOP_RESTARTS`] restarts or more, or the pod unschedulable. `None` for a pod
/// that is fine, still starting, or terminating.
pub fn hopeless(pod: &Pod) -> Option<String> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        if c.reason.as_deref() == Some("Unschedulable") {
            return Some(match c.message.as_deref() {
                Some(m) if !m.is_empty() => format!("Unschedulable: {m}"),
                _ => "Unschedulable".into(),
            });
        }
    }
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for c in containers {
        let Some(waiting) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = waiting.reason.as_deref().unwrap_or_default();
        let stuck = match reason {
            "ErrImagePull"
            | "ImagePullBackOff"
            | "InvalidImageName"
            | "CreateContainerConfigError" => true,
            "CrashLoopBackOff" => c.restart_count >= CRASH_LOOP_RESTARTS,
            _ => false,
        };
        if stuck {
            return Some(format!("container {} {reason}", c.name));
        }
    }
    None
}

/// Which revision of its workload a pod was made for, as the workload controllers mark their
/// pods: the owning ReplicaSet of a Deployment's pod, `controller-revision-hash` (StatefulSet,
/// DaemonSet) and `pod-template-generation` (DaemonSet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRevision {
    owner: Option<String>,
    controller_revision: Option<String>,
    template_generation: Option<String>,
}

impl PodRevision {
    pub fn of(pod: &Pod) -> PodRevision {
        let label = |key: &str| pod.metadata.labels.as_ref()?.get(key).cloned();
        PodRevision {
            owner: pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| o.name.clone()),
            controller_revision: label("controller-revision-hash"),
            template_generation: label("pod-template-generation"),
        }
    }
}

/// Whether a pod of `workload` (of `kind`; `None` while not seen yet) was made for its newest
/// revision, so that its fail-fast clock counts. Where the workload does not tell (no
/// revision in its status yet, a pod without the mark, other kinds), the pod counts.
/// - Deployment: the pod's ReplicaSet is the one the `Progressing` condition names (the
///   Deployment controller writes `ReplicaSet "<name>" is progressing.` and `... has
///   successfully progressed.` for the newest one);
/// - StatefulSet: `controller-revision-hash` is `status.updateRevision`;
/// - DaemonSet: `pod-template-generation` is the DaemonSet's `metadata.generation`.
pub fn is_newest_revision(kind: Kind, workload: Option<&Value>, pod: &PodRevision) -> bool {
    let Some(workload) = workload else {
        return true;
    };
    let same = |ours: &Option<String>, theirs: Option<String>| match (ours, theirs) {
        (Some(ours), Some(theirs)) => *ours == theirs,
        _ => true,
    };
    match kind {
        Kind::Deployment => same(&pod.owner, newest_replica_set(workload)),
        Kind::StatefulSet => same(
            &pod.controller_revision,
            workload
                .pointer("/status/updateRevision")
                .and_then(Value::as_str)
                .map(str::to_owned),
        ),
        Kind::DaemonSet => same(
            &pod.template_generation,
            workload
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .map(|g| g.to_string()),
        ),
        _ => true,
    }
}

/// The name of a Deployment's newest ReplicaSet, from its `Progressing` condition's message.
fn newest_replica_set(deployment: &Value) -> Option<String> {
    let message = deployment
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Progressing")?["message"]
        .as_str()?;
    let quoted = message.strip_prefix("ReplicaSet \"")?;
    Some(quoted[..quoted.find('"')?].to_owned())
}

/// The pods of one wait that are in a hopeless state, and since when: the fail-fast clock.
/// A pod's clock starts when it is first seen hopeless and stops when it is not any more
/// (recovered, deleted, replaced). Which clocks count is asked when they are read, with the
/// workload as it is then ([`is_newest_revision`]): a pod seen before the workload named its
/// new revision is judged by the newer word.
#[derive(Debug, Default)]
pub struct StuckPods {
    by_uid: HashMap<String, StuckPod>,
}

#[derive(Debug)]
struct StuckPod {
    since: Instant,
    name: String,
    reason: String,
    revision: PodRevision,
}

impl StuckPods {
    /// Takes the state of pod `uid` at `now`: `reason` from [`hopeless`], `None` when it is
    /// fine or gone.
    pub fn observe(
        &mut self,
        uid: &str,
        name: &str,
        revision: PodRevision,
        reason: Option<String>,
        now: Instant,
    ) {
        match reason {
            Some(reason) => {
                let entry = self
                    .by_uid
                    .entry(uid.to_owned())
                    .or_insert_with(|| StuckPod {
                        since: now,
                        name: name.to_owned(),
                        reason: String::new(),
                        revision: PodRevision::default(),
                    });
                entry.reason = reason;
                entry.revision = revision;
            }
            None => {
                self.by_uid.remove(uid);
            }
        }
    }

    /// When the first counting pod's clock runs out, with `after` as the limit.
    pub fn due(&self, after: Duration, counts: impl Fn(&PodRevision) -> bool) -> Option<Instant> {
        self.by_uid
            .values()
            .filter(|p| counts(&p.revision))
            .map(|p| p.since + after)
            .min()
    }

    /// The counting pod (name, reason) whose clock ran out by `now`, the longest stuck first.
    pub fn expired(
        &self,
        now: Instant,
        after: Duration,
        counts: impl Fn(&PodRevision) -> bool,
    ) -> Option<(String, String)> {
        self.by_uid
            .values()
            .filter(|p| p.since + after <= now && counts(&p.revision))
            .min_by_key(|p| (p.since, p.name.clone()))
            .map(|p| (p.name.clone(), p.reason.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sts(spec: Value, status: Value) -> Value {
        json!({"metadata": {"name": "db", "generation": 2}, "spec": spec, "status": status})
    }

    #[test]
    fn manifest_objects_that_are_waited_for() {
        let objects = vec![
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"},
                   "spec": {"type": "LoadBalancer"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
            json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                   "metadata": {"name": "h"}}),
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                   "metadata": {"name": "i"}}),
            json!({"apiVersion": "example.com/v1", "kind": "Database",
                   "metadata": {"name": "x", "namespace": "other"}}),
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}}),
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}}),
            json!({"kind": "Job", "metadata": {"name": "no-version"}}),
        ];
        let awaited: Vec<(Kind, String, Option<String>)> = awaited_in(&objects)
            .into_iter()
            .map(|a| (a.kind, a.name, a.namespace))
            .collect();
        assert_eq!(
            awaited,
            vec![
                (Kind::StatefulSet, "db".into(), None),
                (Kind::LoadBalancer, "lb".into(), None),
                (Kind::Custom, "x".into(), Some("other".into())),
                (Kind::Job, "j".into(), None),
            ]
        );
    }

    #[test]
    fn stateful_set_by_kstatus_rules() {
        let spec = json!({"replicas": 2});
        let done = json!({"observedGeneration": 2, "replicas": 2, "readyReplicas": 2,
                          "updatedReplicas": 2, "currentReplicas": 2,
                          "currentRevision": "db-2", "updateRevision": "db-2"});
        assert_eq!(
            readiness(Kind::StatefulSet, &sts(spec.clone(), done.clone())),
            Readiness::Ready
        );
        let mut unobserved = done.clone();
        unobserved["observedGeneration"] = json!(1);
        assert!(matches!(
            readiness(Kind::StatefulSet, &sts(spec.clone(), unobserved)),
            Readiness::InProgress(m) if m.contains("observe generation 2")
        ));
        let mut rolling = done.clone();
        rolling["currentRevision"] = json!("db-1");
        rolling["updatedReplicas"] = json!(1);
        assert_eq!(
            readiness(Kind::StatefulSet, &sts(spec.clone(), rolling.clone())),
            Readiness::InProgress("1 of 2 pods updated to revision db-2".into())
        );
        // Partitioned at 1: only the pod above the partition must be updated; the revisions
        // differ for good.
        let partitioned = json!({"replicas": 2, "updateStrategy": {"type": "RollingUpdate",
                                 "rollingUpdate": {"partition": 1}}});
        assert_eq!(
            readiness(
                Kind::StatefulSet,
                &sts(partitioned.clone(), rolling.clone())
            ),
            Readiness::Ready
        );
        rolling["updatedReplicas"] = json!(0);
        assert!(matches!(
            readiness(Kind::StatefulSet, &sts(partitioned, rolling)),
            Readiness::InProgress(m) if m.contains("0 of 1 pods above partition 1")
        ));
        let mut late = done.clone();
        late["readyReplicas"] = json!(1);
        assert_eq!(
            readiness(Kind::StatefulSet, &sts(spec.clone(), late)),
            Readiness::InProgress("1 of 2 pods ready".into())
        );
        assert!(matches!(
            readiness(Kind::StatefulSet, &json!({"metadata": {"name": "db"}})),
            Readiness::InProgress(_)
        ));
    }

    #[test]
    fn daemon_set_job_claim_service_pod() {
        let ds = |status: Value| json!({"metadata": {"generation": 1}, "status": status});
        assert_eq!(
            readiness(
                Kind::DaemonSet,
                &ds(json!({"observedGeneration": 1,
                "desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberAvailable": 2}))
            ),
            Readiness::Ready
        );
        assert_eq!(
            readiness(
                Kind::DaemonSet,
                &ds(json!({"observedGeneration": 1,
                "desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberAvailable": 1}))
            ),
            Readiness::InProgress("1 of 2 updated pods available".into())
        );
        let job = |conditions: Value| {
            json!({"spec": {"completions": 1},
            "status": {"active": 1, "conditions": conditions}})
        };
        assert!(matches!(
            readiness(Kind::Job, &job(json!([]))),
            Readiness::InProgress(_)
        ));
        assert_eq!(
            readiness(
                Kind::Job,
                &job(json!([{"type": "Complete", "status": "True"}]))
            ),
            Readiness::Ready
        );
        assert_eq!(
            readiness(Kind::Job, &job(json!([{"type": "Failed", "status": "True",
                "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]))),
            Readiness::Failed("the Job failed (BackoffLimitExceeded: Job has reached the specified backoff limit)".into())
        );
        let claim = |phase: &str| json!({"status": {"phase": phase}});
        assert_eq!(
            readiness(Kind::PersistentVolumeClaim, &claim("Bound")),
            Readiness::Ready
        );
        assert!(matches!(
            readiness(Kind::PersistentVolumeClaim, &claim("Pending")),
            Readiness::InProgress(_)
        ));
        assert!(matches!(
            readiness(Kind::PersistentVolumeClaim, &claim("Lost")),
            Readiness::Failed(_)
        ));
        assert!(matches!(
            readiness(Kind::LoadBalancer, &json!({"status": {"loadBalancer": {}}})),
            Readiness::InProgress(_)
        ));
        assert_eq!(
            readiness(
                Kind::LoadBalancer,
                &json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.9"}]}}})
            ),
            Readiness::Ready
        );
        let pod = |phase: &str, ready: &str| {
            json!({"status": {"phase": phase,
            "conditions": [{"type": "Ready", "status": ready}]}})
        };
        assert_eq!(
            readiness(Kind::Pod, &pod("Running", "True")),
            Readiness::Ready
        );
        assert_eq!(
            readiness(Kind::Pod, &pod("Succeeded", "False")),
            Readiness::Ready
        );
        assert!(matches!(
            readiness(Kind::Pod, &pod("Running", "False")),
            Readiness::InProgress(_)
        ));
        assert!(matches!(
            readiness(Kind::Pod, &pod("Failed", "False")),
            Readiness::Failed(_)
        ));
    }

    #[test]
    fn custom_resources_by_their_conditions() {
        let cr = |status: Value| json!({"metadata": {"generation": 3}, "status": status});
        assert_eq!(
            readiness(Kind::Custom, &json!({"metadata": {}})),
            Readiness::Ready
        );
        assert_eq!(
            readiness(
                Kind::Custom,
                &cr(json!({"conditions": [{"type": "Ready", "status": "False",
                "reason": "Provisioning"}]}))
            ),
            Readiness::InProgress("Ready=False: Provisioning".into())
        );
        assert!(matches!(
            readiness(
                Kind::Custom,
                &cr(json!({"observedGeneration": 2,
                "conditions": [{"type": "Ready", "status": "True"}]}))
            ),
            Readiness::InProgress(_)
        ));
        assert_eq!(
            readiness(
                Kind::Custom,
                &cr(json!({"observedGeneration": 3, "conditions": [
                {"type": "Ready", "status": "True"}, {"type": "Available", "status": "True"}]}))
            ),
            Readiness::Ready
        );
        assert_eq!(
            readiness(
                Kind::Custom,
                &cr(json!({"conditions": [{"type": "Stalled", "status": "True",
                "reason": "InvalidSpec", "message": "size must be positive"}]}))
            ),
            Readiness::Failed("Stalled=True: InvalidSpec: size must be positive".into())
        );
    }

    fn pod(status: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    fn waiting(reason: &str, restarts: i32) -> Pod {
        pod(
            json!({"containerStatuses": [{"name": "app", "image": "a", "imageID": "",
            "ready": false, "restartCount": restarts,
            "state": {"waiting": {"reason": reason}}}]}),
        )
    }

    #[test]
    fn hopeless_pods() {
        for reason in [
            "ErrImagePull",
            "ImagePullBackOff",
            "InvalidImageName",
            "CreateContainerConfigError",
        ] {
            assert_eq!(
                hopeless(&waiting(reason, 0)),
                Some(format!("container app {reason}"))
            );
        }
        assert_eq!(
            hopeless(&waiting("CrashLoopBackOff", CRASH_LOOP_RESTARTS - 1)),
            None
        );
        assert_eq!(
            hopeless(&waiting("CrashLoopBackOff", CRASH_LOOP_RESTARTS)),
            Some("container app CrashLoopBackOff".into())
        );
        assert_eq!(hopeless(&waiting("ContainerCreating", 0)), None);
        let unschedulable = pod(
            json!({"conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/3 nodes are available"}]}),
        );
        assert_eq!(
            hopeless(&unschedulable),
            Some("Unschedulable: 0/3 nodes are available".into())
        );
        let mut terminating = waiting("ImagePullBackOff", 0);
        terminating.metadata.deletion_timestamp =
            Some(serde_json::from_value(json!("2025-01-01T00:00:00Z")).unwrap());
        assert_eq!(hopeless(&terminating), None);
    }

    #[test]
    fn fail_fast_clock_per_pod() {
        let after = Duration::from_secs(60);
        let t0 = Instant::now();
        let all = |_: &PodRevision| true;
        let rev = PodRevision::default;
        let mut stuck = StuckPods::default();
        assert_eq!(stuck.due(after, all), None);
        stuck.observe(
            "u1",
            "p1",
            rev(),
            Some("container a ImagePullBackOff".into()),
            t0,
        );
        // Seen again later: the clock keeps its start.
        stuck.observe(
            "u1",
            "p1",
            rev(),
            Some("container a ErrImagePull".into()),
            t0 + Duration::from_secs(30),
        );
        assert_eq!(stuck.due(after, all), Some(t0 + after));
        assert_eq!(
            stuck.expired(t0 + Duration::from_secs(59), after, all),
            None
        );
        assert_eq!(
            stuck.expired(t0 + after, after, all),
            Some(("p1".into(), "container a ErrImagePull".into()))
        );
        // A pod that does not count has no clock that runs out.
        assert_eq!(stuck.due(after, |_| false), None);
        assert_eq!(stuck.expired(t0 + after, after, |_| false), None);
        // Recovered: the clock stops; stuck again: it starts over.
        stuck.observe("u1", "p1", rev(), None, t0 + Duration::from_secs(61));
        assert_eq!(stuck.due(after, all), None);
        stuck.observe(
            "u1",
            "p1",
            rev(),
            Some("x".into()),
            t0 + Duration::from_secs(62),
        );
        assert_eq!(
            stuck.expired(t0 + Duration::from_secs(100), after, all),
            None
        );
    }

    fn pod_of(owner: &str, labels: Value) -> PodRevision {
        PodRevision::of(
            &serde_json::from_value(json!({"metadata": {
                "name": "p", "labels": labels,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": owner, "uid": "u", "controller": true}],
            }}))
            .unwrap(),
        )
    }

    #[test]
    fn only_pods_of_the_newest_revision_count() {
        let deployment = json!({"status": {"conditions": [
            {"type": "Available", "status": "True", "message": "Deployment has minimum availability."},
            {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
             "message": "ReplicaSet \"web-7c9d\" is progressing."},
        ]}});
        let new = pod_of("web-7c9d", json!({"pod-template-hash": "7c9d"}));
        let old = pod_of("web-55f0", json!({"pod-template-hash": "55f0"}));
        assert!(is_newest_revision(
            Kind::Deployment,
            Some(&deployment),
            &new
        ));
        assert!(!is_newest_revision(
            Kind::Deployment,
            Some(&deployment),
            &old
        ));
        // Before the controller named a ReplicaSet, or before the Deployment was seen: counts.
        assert!(is_newest_revision(Kind::Deployment, Some(&json!({})), &old));
        assert!(is_newest_revision(Kind::Deployment, None, &old));

        let sts = json!({"status": {"currentRevision": "db-1", "updateRevision": "db-2"}});
        let updated = pod_of("db", json!({"controller-revision-hash": "db-2"}));
        let outdated = pod_of("db", json!({"controller-revision-hash": "db-1"}));
        assert!(is_newest_revision(Kind::StatefulSet, Some(&sts), &updated));
        assert!(!is_newest_revision(
            Kind::StatefulSet,
            Some(&sts),
            &outdated
        ));

        let ds = json!({"metadata": {"generation": 3}});
        let current = pod_of("agent", json!({"pod-template-generation": "3"}));
        let earlier = pod_of("agent", json!({"pod-template-generation": "2"}));
        assert!(is_newest_revision(Kind::DaemonSet, Some(&ds), &current));
        assert!(!is_newest_revision(Kind::DaemonSet, Some(&ds), &earlier));
        // A pod without the mark counts.
        assert!(is_newest_revision(
            Kind::DaemonSet,
            Some(&ds),
            &pod_of("agent", json!({}))
        ));
        // Jobs and bare pods: every pod counts.
        assert!(is_newest_revision(Kind::Job, Some(&sts), &outdated));
    }
}
