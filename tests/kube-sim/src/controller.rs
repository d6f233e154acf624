//! A deployment controller (plus the ReplicaSet controller, kubelet and garbage collector
//! parts it needs), so `kubectl rollout status`, `kubectl scale` and `helm --wait` see
//! Deployments converge the way they do on a cluster.
//!
//! It runs as one tokio task woken by the store's change channel (every write) and by a timer
//! for the next time-driven transition (a pod turning ready after `rollout_delay`, a progress
//! deadline passing) — never by polling. Like an informer, it reads only the writes since its
//! last pass, and only those to the kinds it manages (Deployments, ReplicaSets, Pods), and
//! reconciles only the objects they touch: the Deployment written, the ReplicaSet of a pod
//! written, the Deployment of a ReplicaSet written, and the ones whose timer is due. A
//! Deployment's ReplicaSets and a ReplicaSet's pods come from the store's owner index, so a
//! pass costs what changed, not the size of the cluster (other writes, e.g. Helm's release
//! Secrets, only advance its position in the history). When it falls behind the store's
//! bounded history (or on its first pass) it reconciles everything once.
//!
//! Each reconciliation is level-triggered: it reads the current objects and writes only what
//! differs, and the store drops no-op writes, so the passes that its own writes trigger settle
//! quickly.
//!
//! Simplifications: no surge/unavailability budget (the new ReplicaSet gets all replicas at
//! once; old ones drop to 0 once it is fully available), no pod restarts, no nodes, no events.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::events::EventType;
use crate::resources::{self, Resource};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Preconditions, Store};

/// Annotation carrying the rollout revision on Deployments and their ReplicaSets.
const REVISION: &str = "deployment.kubernetes.io/revision";
/// Label distinguishing the ReplicaSets (and pods) of each pod template.
const HASH_LABEL: &str = "pod-template-hash";
/// `spec.progressDeadlineSeconds` when unset, as defaulted by the real API.
const DEFAULT_PROGRESS_DEADLINE: u64 = 600;

/// What shapes the simulated rollouts.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a pod takes from creation to Ready.
    pub rollout_delay: Duration,
    /// Pods with a container image containing one of these never become ready (their
    /// container waits in `ImagePullBackOff`).
    pub never_ready_images: Vec<String>,
}

/// Starts the controller; it ends when the store closes.
pub fn spawn(store: Arc<Store>, settings: Settings) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(store, settings))
}

async fn run(store: Arc<Store>, settings: Settings) {
    let mut changes = store.subscribe();
    let mut closing = store.closing();
    let mut controller = Controller {
        settings,
        pod_started: HashMap::new(),
        progress_started: HashMap::new(),
        seen: None,
        replica_set_wake: HashMap::new(),
        deployment_wake: HashMap::new(),
    };
    loop {
        changes.borrow_and_update();
        let wake = controller.pass(&store);
        let timer = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = closing.wait_for(|c| *c) => return,
            _ = timer => {}
        }
    }
}

/// Memory a real cluster keeps in pod status and controller caches: when each pod started
/// and when each Deployment's current generation was first seen (its progress clock).
struct Controller {
    settings: Settings,
    /// Pod uid → (start instant, start wall time), for readiness after `rollout_delay`.
    pod_started: HashMap<String, (Instant, DateTime<Utc>)>,
    /// Deployment uid → (generation, when it was first observed).
    progress_started: HashMap<String, (i64, Instant)>,
    /// The store revision whose writes have been handled; `None` before the first pass.
    seen: Option<u64>,
    /// ReplicaSet → when one of its pods turns ready.
    replica_set_wake: HashMap<ObjectName, Instant>,
    /// Deployment → when its rollout's progress deadline passes.
    deployment_wake: HashMap<ObjectName, Instant>,
}

/// `(namespace, name)` of a namespaced object.
type ObjectName = (String, String);

/// What a pass has to look at.
#[derive(Default)]
struct Dirty {
    deployments: BTreeSet<ObjectName>,
    replica_sets: BTreeSet<ObjectName>,
    /// Pods written: their ReplicaSet is reconciled, and they are collected if it is gone.
    pods: BTreeSet<ObjectName>,
}

fn object_name(v: &Value) -> ObjectName {
    (
        s(v, "/metadata/namespace").to_string(),
        s(v, "/metadata/name").to_string(),
    )
}

/// The controlling owner of `kind` (same namespace, as owner references are).
fn controller_ref(v: &Value, kind: &str) -> Option<ObjectName> {
    let name = v
        .pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o["controller"] == json!(true) && o["kind"] == kind)?["name"]
        .as_str()?;
    Some((s(v, "/metadata/namespace").to_string(), name.to_string()))
}

fn res(group: &str, plural: &str) -> &'static Resource {
    let version = "v1";
    resources::find(group, version, plural).expect("in the resource table")
}

fn list(store: &Store, r: &Resource) -> Vec<Value> {
    store
        .list(
            r,
            None,
            &LabelSelector::default(),
            &FieldSelector::default(),
        )
        .map(|(items, _)| items)
        .unwrap_or_default()
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn uid(v: &Value) -> &str {
    s(v, "/metadata/uid")
}

/// The uid of the object's controlling owner of `kind`, if any.
fn controller_uid<'a>(v: &'a Value, kind: &str) -> Option<&'a str> {
    v.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o["controller"] == json!(true) && o["kind"] == kind)
        .and_then(|o| o["uid"].as_str())
}

/// The objects of `r` that `owner` controls (its `kind` owner reference is the controller).
fn owned(store: &Store, r: &Resource, owner: &Value, kind: &str) -> Vec<Value> {
    store
        .owned_by(r, s(owner, "/metadata/namespace"), uid(owner))
        .into_iter()
        .filter(|o| controller_uid(o, kind) == Some(uid(owner)))
        .collect()
}

/// Whether `v`'s controlling owner of type `owner` is gone: no object of that name in the
/// namespace, or one with another uid (what the garbage collector checks).
fn owner_gone(store: &Store, v: &Value, owner: &Resource) -> bool {
    let Some(owner_uid) = controller_uid(v, owner.kind) else {
        return false;
    };
    let Some((ns, name)) = controller_ref(v, owner.kind) else {
        return false;
    };
    store
        .get(owner, &ns, &name)
        .map_or(true, |o| uid(&o) != owner_uid)
}

fn owner_ref(owner: &Value, api_version: &str, kind: &str) -> Value {
    json!([{
        "apiVersion": api_version,
        "kind": kind,
        "name": s(owner, "/metadata/name"),
        "uid": uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    }])
}

fn now_string(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The template hash as the real controller spells it: FNV-1a 32 of the template, printed in
/// decimal and mapped onto the "safe" alphabet that avoids vowels and look-alike digits.
pub fn template_hash(template: &Value) -> String {
    let mut t = template.clone();
    if let Some(l) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove(HASH_LABEL);
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in t.to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHABET[b as usize % ALPHABET.len()] as char)
        .collect()
}

fn min_instant(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// Sets the numeric fields the real API omits when zero.
fn put_count(status: &mut Value, field: &str, n: i64) {
    if n != 0 {
        status[field] = json!(n);
    }
}

impl Controller {
    /// Handles the writes since the last pass and the timers that are due; returns when the
    /// next time-driven change is due.
    fn pass(&mut self, store: &Store) -> Option<Instant> {
        let (deploy, rs, pod) = (
            res("apps", "deployments"),
            res("apps", "replicasets"),
            res("", "pods"),
        );
        let mut dirty = Dirty::default();
        match self
            .seen
            .map(|rev| store.changes_since(&[deploy, rs, pod], rev))
        {
            Some(Ok((changes, revision))) => {
                self.seen = Some(revision);
                for (kind, event, object, previous) in changes {
                    self.note(&mut dirty, kind, event, &object);
                    if let Some(previous) = previous {
                        self.note(&mut dirty, kind, EventType::Modified, &previous);
                    }
                }
            }
            // First pass, or behind the kept history: look at everything once.
            _ => {
                let (deployments, revision) = store
                    .list(
                        deploy,
                        None,
                        &LabelSelector::default(),
                        &FieldSelector::default(),
                    )
                    .unwrap_or_default();
                self.seen = Some(revision);
                dirty
                    .deployments
                    .extend(deployments.iter().map(object_name));
                dirty
                    .replica_sets
                    .extend(list(store, rs).iter().map(object_name));
                dirty.pods.extend(list(store, pod).iter().map(object_name));
            }
        }
        let now = Instant::now();
        self.replica_set_wake.retain(|r, at| {
            let due = *at <= now;
            if due {
                dirty.replica_sets.insert(r.clone());
            }
            !due
        });
        self.deployment_wake.retain(|d, at| {
            let due = *at <= now;
            if due {
                dirty.deployments.insert(d.clone());
            }
            !due
        });
        self.reconcile(store, dirty, deploy, rs, pod, now);
        self.replica_set_wake
            .values()
            .chain(self.deployment_wake.values())
            .min()
            .copied()
    }

    /// Marks what one write (`kind` indexes deployments, replicasets, pods) makes stale.
    fn note(&mut self, dirty: &mut Dirty, kind: usize, event: EventType, object: &Value) {
        let deleted = event == EventType::Deleted;
        match kind {
            0 => {
                if deleted {
                    self.progress_started.remove(uid(object));
                }
                dirty.deployments.insert(object_name(object));
            }
            1 => {
                dirty.replica_sets.insert(object_name(object));
                dirty
                    .deployments
                    .extend(controller_ref(object, "Deployment"));
            }
            _ => {
                if deleted {
                    self.pod_started.remove(uid(object));
                }
                dirty.pods.insert(object_name(object));
                dirty
                    .replica_sets
                    .extend(controller_ref(object, "ReplicaSet"));
            }
        }
    }

    /// Reconciles what `dirty` names: garbage first, then each Deployment's ReplicaSets, each
    /// ReplicaSet's pods, and the status of every Deployment involved.
    fn reconcile(
        &mut self,
        store: &Store,
        mut dirty: Dirty,
        deploy: &'static Resource,
        rs: &'static Resource,
        pod: &'static Resource,
        now: Instant,
    ) {
        self.collect_garbage(store, &dirty, deploy, rs, pod);
        for (ns, name) in &dirty.deployments {
            let Ok(d) = store.get(deploy, ns, name) else {
                self.deployment_wake.remove(&(ns.clone(), name.clone()));
                continue;
            };
            self.scale_replica_sets(store, &d, rs);
            dirty
                .replica_sets
                .extend(owned(store, rs, &d, "Deployment").iter().map(object_name));
        }
        let mut status_of = dirty.deployments;
        for r in &dirty.replica_sets {
            let Ok(obj) = store.get(rs, &r.0, &r.1) else {
                self.replica_set_wake.remove(r);
                continue;
            };
            match self.sync_pods(store, &obj, rs, pod, now) {
                Some(at) => self.replica_set_wake.insert(r.clone(), at),
                None => self.replica_set_wake.remove(r),
            };
            status_of.extend(controller_ref(&obj, "Deployment"));
        }
        for d in &status_of {
            let Ok(obj) = store.get(deploy, &d.0, &d.1) else {
                self.deployment_wake.remove(d);
                continue;
            };
            let replica_sets = owned(store, rs, &obj, "Deployment");
            match self.deployment_status(store, &obj, &replica_sets, now) {
                Some(at) => self.deployment_wake.insert(d.clone(), at),
                None => self.deployment_wake.remove(d),
            };
        }
    }

    /// Deletes the written ReplicaSets whose Deployment is gone and the written pods whose
    /// ReplicaSet is gone (the garbage collector's cascading delete, done at once rather than
    /// in the background). Deleting an owner through the API cascades in the store; this
    /// catches dependents written with a dangling owner reference.
    fn collect_garbage(
        &mut self,
        store: &Store,
        dirty: &Dirty,
        deploy: &Resource,
        rs: &'static Resource,
        pod: &'static Resource,
    ) {
        for (ns, name) in &dirty.replica_sets {
            if let Ok(r) = store.get(rs, ns, name) {
                if owner_gone(store, &r, deploy) {
                    let _ = store.delete(rs, ns, name, &Preconditions::default());
                }
            }
        }
        for (ns, name) in &dirty.pods {
            if let Ok(p) = store.get(pod, ns, name) {
                if owner_gone(store, &p, rs) {
                    self.pod_started.remove(uid(&p));
                    let _ = store.delete(pod, ns, name, &Preconditions::default());
                }
            }
        }
    }

    /// Ensures the ReplicaSet for the current template exists with `spec.replicas`, and
    /// scales the older ones to 0 once it is fully available.
    fn scale_replica_sets(&mut self, store: &Store, d: &Value, rs: &'static Resource) {
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
    fn sync_pods(
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
        pods.sort_by_key(|p| (self.is_ready(p, now), std::cmp::Reverse(self.started(p).0)));
        while pods.len() > desired {
            let p = pods.remove(0);
            self.pod_started.remove(uid(&p));
            let _ = store.delete(pod, ns, s(&p, "/metadata/name"), &Preconditions::default());
        }
        let mut wake = None;
        let mut ready = 0;
        for p in &pods {
            let (status, at) = self.pod_status(p, now);
            if let Some(at) = at {
                wake = min_instant(wake, at);
            }
            if status["phase"] == "Running" {
                ready += 1;
            }
            if p.get("status") != Some(&status) {
                let _ = store.modify(pod, ns, s(p, "/metadata/name"), |cur| {
                    let mut out = cur.clone();
                    out["status"] = status;
                    Ok(out)
                });
            }
        }
        let mut status = json!({
            "replicas": pods.len(),
            "observedGeneration": r["metadata"]["generation"],
        });
        put_count(&mut status, "fullyLabeledReplicas", pods.len() as i64);
        put_count(&mut status, "readyReplicas", ready);
        put_count(&mut status, "availableReplicas", ready);
        if r.get("status") != Some(&status) {
            let _ = store.modify(rs, ns, rs_name, |cur| {
                let mut out = cur.clone();
                out["status"] = status;
                Ok(out)
            });
        }
        wake
    }

    fn started(&mut self, p: &Value) -> (Instant, DateTime<Utc>) {
        *self
            .pod_started
            .entry(uid(p).to_string())
            .or_insert_with(|| (Instant::now(), Utc::now()))
    }

    fn blocked_image<'a>(&self, p: &'a Value) -> Option<&'a str> {
        p.pointer("/spec/containers")?
            .as_array()?
            .iter()
            .filter_map(|c| c["image"].as_str())
            .find(|image| {
                self.settings
                    .never_ready_images
                    .iter()
                    .any(|bad| image.contains(bad.as_str()))
            })
    }

    fn is_ready(&mut self, p: &Value, now: Instant) -> bool {
        self.pod_status(p, now).0["phase"] == "Running"
    }

    /// What a kubelet would report: Pending with waiting containers until `rollout_delay`
    /// has passed, then Running and Ready — or, for a never-ready image, Pending forever with
    /// `ImagePullBackOff` so clients can show the root cause. Timestamps derive from the start
    /// time, so recomputing gives the same status and no write.
    fn pod_status(&mut self, p: &Value, now: Instant) -> (Value, Option<Instant>) {
        let (started, wall) = self.started(p);
        let ready_at = started + self.settings.rollout_delay;
        let ready_wall =
            wall + chrono::Duration::from_std(self.settings.rollout_delay).unwrap_or_default();
        let blocked = self.blocked_image(p).map(String::from);
        let ready = blocked.is_none() && now >= ready_at;
        let containers: Vec<Value> = p["spec"]["containers"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|c| {
                let image = c["image"].as_str().unwrap_or_default();
                let state = if ready {
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
        let ready_since = now_string(if ready { ready_wall } else { wall });
        let mut ready_condition = json!({
            "type": "Ready", "status": flag, "lastProbeTime": null,
            "lastTransitionTime": ready_since,
        });
        if !ready {
            ready_condition["reason"] = json!("ContainersNotReady");
            ready_condition["message"] = json!("containers with unready status");
        }
        let octet = s(p, "/metadata/name").bytes().map(u32::from).sum::<u32>() % 250 + 2;
        let status = json!({
            "phase": if ready { "Running" } else { "Pending" },
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                 "lastTransitionTime": now_string(wall)},
                {"type": "ContainersReady", "status": flag, "lastProbeTime": null,
                 "lastTransitionTime": ready_since},
                ready_condition,
            ],
            "hostIP": "10.0.0.1",
            "podIP": format!("10.244.0.{octet}"),
            "startTime": now_string(wall),
            "qosClass": "BestEffort",
            "containerStatuses": containers,
        });
        let wake = (blocked.is_none() && !ready).then_some(ready_at);
        (status, wake)
    }

    /// Writes the Deployment's status from its ReplicaSets; returns when the progress
    /// deadline will pass for an unfinished rollout.
    fn deployment_status(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_hash_ignores_its_own_label_and_uses_the_safe_alphabet() {
        let a = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}});
        let mut b = a.clone();
        b["metadata"]["labels"][HASH_LABEL] = json!("x");
        assert_eq!(template_hash(&a), template_hash(&b));
        let h = template_hash(&a);
        assert!(h.len() >= 6 && h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        let mut c = a.clone();
        c["spec"]["containers"] = json!([{"name": "x", "image": "nginx:2"}]);
        assert_ne!(template_hash(&a), template_hash(&c));
    }
}
