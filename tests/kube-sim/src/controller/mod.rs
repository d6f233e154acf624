//! The controllers (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, the PersistentVolume
//! binder, Endpoints/EndpointSlices, load balancers) plus the kubelet and garbage collector parts they need, so `kubectl rollout
//! status`, `kubectl scale`, `helm --wait`, Helm hooks and `helm test` see workloads converge
//! (or fail) the way they do on a cluster. One submodule per controller; this one holds the
//! loop that drives them and what they share.
//!
//! It runs as one task on a thread of its own (see `spawn`), woken by the store's change
//! channel (every write) and by a timer for the next time-driven transition (a pod turning ready after `rollout_delay`, a Job's pod
//! exiting after `job_duration`, a progress deadline passing) — never by polling. Like an
//! informer, it reads only the writes since its last pass, and only those to the kinds it
//! manages, and reconciles only the objects they touch: the workload written, the owner of a
//! pod written, the users of a claim written, and the ones whose timer is due. A workload's
//! dependents come from the store's owner index, so a pass costs what changed, not the size of
//! the cluster (other writes, e.g. Helm's release Secrets, only advance its position in the
//! history). When it falls behind the store's bounded history (or on its first pass) it
//! reconciles everything once.
//!
//! Each reconciliation is level-triggered: it reads the current objects and writes only what
//! differs, and the store drops no-op writes, so the passes that its own writes trigger settle
//! quickly.
//!
//! Simplifications: no pod restarts or crash loops, no scheduling beyond DaemonSet node
//! placement and claim binding, no events, no ControllerRevision objects (revisions are the
//! template hash), deletions are immediate (no graceful termination).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

mod daemonset;
mod deployment;
mod endpoints;
mod job;
mod kubelet;
mod load_balancer;
mod statefulset;
mod volumes;

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
    /// How long a pod takes from creation (or from its claims being bound) to Ready.
    pub rollout_delay: Duration,
    /// Pods with a container image containing one of these never become ready (their
    /// container waits in `ImagePullBackOff`), whatever owns them.
    pub never_ready_images: Vec<String>,
    /// How long a pod that runs to completion (a Job's, a `helm test` pod) runs once ready.
    pub job_duration: Duration,
    /// Pods that run to completion with an image containing one of these exit 1 (`Failed`),
    /// so their Jobs retry up to `backoffLimit` and then fail.
    pub failing_job_images: Vec<String>,
    /// PersistentVolumeClaims whose name contains one of these never bind (no volume can be
    /// provisioned), so the pods mounting them stay unschedulable.
    pub never_bound_claims: Vec<String>,
    /// How long a `type: LoadBalancer` Service waits for its ingress address.
    pub load_balancer_delay: Duration,
    /// Services of `type: LoadBalancer` whose name contains one of these never get an
    /// address.
    pub pending_load_balancers: Vec<String>,
}

/// Starts the controller; it ends when the store closes. Its passes are synchronous work
/// (a 300-pod StatefulSet's pass reads and writes hundreds of objects), so it runs on an OS
/// thread of its own with its own single-threaded runtime rather than on a worker serving
/// requests: a long pass delays no request except where both touch the store's lock, and the
/// server's runtime never waits for it to shut down.
pub fn spawn(
    store: Arc<Store>,
    settings: Settings,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("kube-sim-controller".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => rt.block_on(run(store, settings)),
                Err(e) => tracing::error!(error = %e, "kube-sim controller runtime"),
            }
        })
}

async fn run(store: Arc<Store>, settings: Settings) {
    let mut changes = store.subscribe();
    let mut closing = store.closing();
    let mut controller = Controller {
        settings,
        pod_started: HashMap::new(),
        progress_started: HashMap::new(),
        seen: None,
        claim_blocked: HashSet::new(),
        settled: HashMap::new(),
        lb_requested: HashMap::new(),
        wake: HashMap::new(),
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
pub(crate) struct Controller {
    settings: Settings,
    /// Pod uid → (start instant, start wall time), for readiness after `rollout_delay`.
    pod_started: HashMap<String, (Instant, DateTime<Utc>)>,
    /// Deployment uid → (generation, when it was first observed).
    progress_started: HashMap<String, (i64, Instant)>,
    /// The store revision whose writes have been handled; `None` before the first pass.
    seen: Option<u64>,
    /// Pods this kubelet marked unschedulable (waiting for claims). A pod marked so by anyone
    /// else — a test playing a scheduler that found no fitting node — is left as it is.
    claim_blocked: HashSet<String>,
    /// Pod uid → the resourceVersion the kubelet last computed its status at and when that
    /// status next changes by itself (`None`: never). A pod written by nobody since and not
    /// yet due is skipped, so a pass over a 300-pod workload does not recompute 300 statuses.
    /// Cleared when a claim changes (the one input that is not the pod or the clock).
    settled: HashMap<String, (String, Option<Instant>)>,
    /// LoadBalancer Service uid → when its load balancer was first asked for.
    lb_requested: HashMap<String, Instant>,
    /// When each object next changes by itself: a workload when one of its pods turns ready
    /// or exits, a Deployment when its progress deadline passes, a bare pod when it does.
    wake: HashMap<(Kind, ObjectName), Instant>,
}

/// The objects a pass reconciles, by the controller that owns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    /// A Service (its load balancer and endpoints).
    Service,
    /// A pod without a controlling owner kube-sim simulates (e.g. a `helm test` pod).
    Pod,
}

/// The storages whose writes a pass reads, in the order `note` indexes them.
const WATCHED: &[(&str, &str)] = &[
    ("apps", "deployments"),
    ("apps", "replicasets"),
    ("", "pods"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("batch", "jobs"),
    ("", "persistentvolumeclaims"),
    ("storage.k8s.io", "storageclasses"),
    ("", "nodes"),
    ("", "services"),
];

/// `(namespace, name)` of a namespaced object.
type ObjectName = (String, String);

/// What a pass has to look at.
#[derive(Default)]
struct Dirty {
    /// Workloads (and bare pods) to reconcile.
    objects: BTreeSet<(Kind, ObjectName)>,
    /// Pods written: their owner is reconciled, and they are collected if it is gone.
    pods: BTreeSet<ObjectName>,
    /// Claims written: bound if they can be, and the pods mounting them looked at again.
    claims: BTreeSet<ObjectName>,
    /// Claims deleted: their provisioned volumes are reclaimed.
    deleted_claims: Vec<Value>,
    /// A StorageClass was written: every pending claim may now bind.
    all_claims: bool,
    /// A Node was written: every DaemonSet's placement may change.
    all_daemon_sets: bool,
    /// Namespaces where a pod or Service was written: their endpoints are recomputed.
    endpoint_namespaces: BTreeSet<String>,
    /// Services deleted: their Endpoints go.
    deleted_services: Vec<Value>,
}

impl Dirty {
    fn add(&mut self, kind: Kind, name: ObjectName) {
        self.objects.insert((kind, name));
    }

    /// The dirty objects of one kind.
    fn of(&self, kind: Kind) -> Vec<ObjectName> {
        self.objects
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| n.clone())
            .collect()
    }
}

/// The kind of workload that controls a pod, and its name.
fn pod_owner(p: &Value) -> Option<(Kind, ObjectName)> {
    [
        ("ReplicaSet", Kind::ReplicaSet),
        ("StatefulSet", Kind::StatefulSet),
        ("DaemonSet", Kind::DaemonSet),
        ("Job", Kind::Job),
    ]
    .into_iter()
    .find_map(|(owner, kind)| controller_ref(p, owner).map(|n| (kind, n)))
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

/// Writes `status` to `current` (an object of `r`) unless it already carries it.
fn write_status(store: &Store, r: &Resource, current: &Value, status: Value) {
    if current.get("status") == Some(&status) {
        return;
    }
    let (ns, name) = object_name(current);
    let _ = store.modify(r, &ns, &name, |cur| {
        let mut out = cur.clone();
        out["status"] = status;
        Ok(out)
    });
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
        let watched: Vec<&'static Resource> = WATCHED.iter().map(|(g, p)| res(g, p)).collect();
        let mut dirty = Dirty::default();
        match self.seen.map(|rev| store.changes_since(&watched, rev)) {
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
                self.seen = Some(store.revision());
                for (i, r) in watched.iter().enumerate() {
                    for o in list(store, r) {
                        self.note(&mut dirty, i, EventType::Modified, &o);
                    }
                }
            }
        }
        let now = Instant::now();
        self.wake.retain(|key, at| {
            let due = *at <= now;
            if due {
                dirty.objects.insert(key.clone());
            }
            !due
        });
        self.reconcile(store, dirty, now);
        self.wake.values().min().copied()
    }

    /// Marks what one write to `WATCHED[kind]` makes stale.
    fn note(&mut self, dirty: &mut Dirty, kind: usize, event: EventType, object: &Value) {
        let deleted = event == EventType::Deleted;
        let name = object_name(object);
        match kind {
            0 => {
                if deleted {
                    self.progress_started.remove(uid(object));
                }
                dirty.add(Kind::Deployment, name);
            }
            1 => {
                dirty.add(Kind::ReplicaSet, name);
                if let Some(d) = controller_ref(object, "Deployment") {
                    dirty.add(Kind::Deployment, d);
                }
            }
            2 => {
                if deleted {
                    self.pod_started.remove(uid(object));
                    self.claim_blocked.remove(uid(object));
                    self.settled.remove(uid(object));
                }
                dirty.endpoint_namespaces.insert(name.0.clone());
                dirty.pods.insert(name.clone());
                match pod_owner(object) {
                    Some((kind, owner)) => dirty.add(kind, owner),
                    None if !deleted => dirty.add(Kind::Pod, name),
                    None => {}
                }
            }
            3 => dirty.add(Kind::StatefulSet, name),
            4 => dirty.add(Kind::DaemonSet, name),
            5 => dirty.add(Kind::Job, name),
            6 => {
                if deleted {
                    dirty.deleted_claims.push(object.clone());
                }
                dirty.claims.insert(name);
            }
            7 => dirty.all_claims = true,
            8 => dirty.all_daemon_sets = true,
            _ => {
                if deleted {
                    self.lb_requested.remove(uid(object));
                    dirty.deleted_services.push(object.clone());
                }
                dirty.endpoint_namespaces.insert(name.0.clone());
                dirty.add(Kind::Service, name);
            }
        }
    }

    /// Reconciles what `dirty` names: garbage first, then claims, then each workload (a
    /// Deployment's ReplicaSets before their pods), and the status of every Deployment
    /// involved.
    fn reconcile(&mut self, store: &Store, mut dirty: Dirty, now: Instant) {
        let (deploy, rs, pod) = (
            res("apps", "deployments"),
            res("apps", "replicasets"),
            res("", "pods"),
        );
        self.collect_garbage(store, &dirty);
        self.sync_claims(store, &mut dirty);
        if dirty.all_daemon_sets {
            for d in list(store, res("apps", "daemonsets")) {
                dirty.add(Kind::DaemonSet, object_name(&d));
            }
        }
        for name in dirty.of(Kind::Deployment) {
            let Ok(d) = store.get(deploy, &name.0, &name.1) else {
                self.wake.remove(&(Kind::Deployment, name));
                continue;
            };
            self.scale_replica_sets(store, &d, rs);
            for r in owned(store, rs, &d, "Deployment") {
                dirty.add(Kind::ReplicaSet, object_name(&r));
            }
        }
        let mut status_of: BTreeSet<ObjectName> = dirty.of(Kind::Deployment).into_iter().collect();
        for (kind, name) in std::mem::take(&mut dirty.objects) {
            let wake = match kind {
                Kind::Deployment => continue,
                Kind::ReplicaSet => match store.get(rs, &name.0, &name.1) {
                    Ok(obj) => {
                        status_of.extend(controller_ref(&obj, "Deployment"));
                        self.sync_pods(store, &obj, rs, pod, now)
                    }
                    Err(_) => None,
                },
                Kind::StatefulSet => self.sync_stateful_set(store, &name, now),
                Kind::DaemonSet => self.sync_daemon_set(store, &name, now),
                Kind::Job => self.sync_job(store, &name, now),
                Kind::Service => self.sync_load_balancer(store, &name, now),
                Kind::Pod => match store.get(pod, &name.0, &name.1) {
                    Ok(p) if pod_owner(&p).is_none() => self.run_pods(store, vec![p], now).1,
                    _ => None,
                },
            };
            match wake {
                Some(at) => self.wake.insert((kind, name), at),
                None => self.wake.remove(&(kind, name)),
            };
        }
        for svc in std::mem::take(&mut dirty.deleted_services) {
            self.drop_endpoints(store, &svc);
        }
        // After the workloads, so the pods they just wrote are listed.
        for ns in std::mem::take(&mut dirty.endpoint_namespaces) {
            self.sync_endpoints_in(store, &ns);
        }
        for d in status_of {
            let Ok(obj) = store.get(deploy, &d.0, &d.1) else {
                self.wake.remove(&(Kind::Deployment, d));
                continue;
            };
            let replica_sets = owned(store, rs, &obj, "Deployment");
            match self.deployment_status(store, &obj, &replica_sets, now) {
                Some(at) => self.wake.insert((Kind::Deployment, d), at),
                None => self.wake.remove(&(Kind::Deployment, d)),
            };
        }
    }

    /// Deletes the written ReplicaSets whose Deployment is gone and the written pods whose
    /// controlling workload is gone (the garbage collector's cascading delete, done at once
    /// rather than in the background). Deleting an owner through the API cascades in the
    /// store; this catches dependents written with a dangling owner reference.
    fn collect_garbage(&mut self, store: &Store, dirty: &Dirty) {
        let (deploy, rs, pod) = (
            res("apps", "deployments"),
            res("apps", "replicasets"),
            res("", "pods"),
        );
        for (_, (ns, name)) in dirty.objects.iter().filter(|(k, _)| *k == Kind::ReplicaSet) {
            if let Ok(r) = store.get(rs, ns, name) {
                if owner_gone(store, &r, deploy) {
                    let _ = store.delete(rs, ns, name, &Preconditions::default());
                }
            }
        }
        let owners = [
            res("apps", "replicasets"),
            res("apps", "statefulsets"),
            res("apps", "daemonsets"),
            res("batch", "jobs"),
        ];
        for (ns, name) in &dirty.pods {
            if let Ok(p) = store.get(pod, ns, name) {
                if owners.iter().any(|o| owner_gone(store, &p, o)) {
                    self.pod_started.remove(uid(&p));
                    let _ = store.delete(pod, ns, name, &Preconditions::default());
                }
            }
        }
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
