//! Waiting for what a release holds to become ready, by watching it.
//!
//! The reference polled every 2 s (and waited through Helm's `--wait`); here each object
//! waited for gets a kube-rs watcher (a LIST, then a WATCH from its resourceVersion, narrowed
//! by `metadata.name`), so the wait ends on the status update that makes the last one ready,
//! costs one open stream per object instead of a request every 2 s, and notices a failure
//! (`ProgressDeadlineExceeded`, a failed Job) as soon as its controller reports it rather than
//! at our own deadline. Workloads' pods are watched too (by the workload's selector), so a
//! pod that cannot start (image pull errors, a crash loop, unschedulable) ends the wait after
//! `--fail-fast-after` instead of the rollout deadline.
//!
//! Which objects are waited for and what "ready" means per kind is `readiness` (pure);
//! a Deployment is "rolled out" by `kubectl rollout status`'s rule ([`rollout_status`]), so
//! operators get the answer they would get themselves.
//!
//! When the wait fails, the object's conditions and its pods are read once more to say why
//! (see `diagnosis`).

use std::collections::HashSet;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use serde_json::Value;
use tokio::time::Instant;

use super::diagnosis::{notable_conditions, pod_problems, PodProblems};
use super::readiness::{
    hopeless, is_newest_revision, readiness, Awaited, Kind, PodRevision, Readiness, StuckPods,
};
use super::{Cluster, ClusterError, Diagnosis, StallCause};

/// How many problem pods a diagnosis lists by name (the rest are counted): enough to see a
/// pattern, short enough for an event message.
const MAX_PODS: usize = 3;
/// The bound on reading pods for a diagnosis, so a failure report is not delayed for long by
/// a struggling API server.
const DIAGNOSIS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the watches may keep failing (they retry with backoff) before the wait gives up
/// with the API error instead of waiting for its deadline.
const UNREACHABLE_GRACE: Duration = Duration::from_secs(30);

/// Why [`Cluster::wait_for_rollout`] did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RolloutFailure {
    /// One or more objects did not become ready: one failed, a pod of one could not start
    /// for `--fail-fast-after`, or the wait's deadline passed. Each diagnosis names the
    /// object, its conditions and pod problems.
    #[error("{}", join(.0))]
    NotRolledOut(Vec<Diagnosis>),
    /// The API server could not be asked (unreachable, forbidden, ...): nothing is known
    /// about the rollout itself.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl RolloutFailure {
    /// Whether waiting again may succeed: only for API trouble. A failed rollout needs a
    /// change (image, resources, quota) first.
    pub fn is_transient(&self) -> bool {
        match self {
            RolloutFailure::NotRolledOut(_) => false,
            RolloutFailure::Cluster(e) => e.is_transient(),
        }
    }

    /// The diagnoses of a failed rollout (empty for API trouble).
    pub fn diagnoses(&self) -> &[Diagnosis] {
        match self {
            RolloutFailure::NotRolledOut(d) => d,
            RolloutFailure::Cluster(_) => &[],
        }
    }
}

fn join(diagnoses: &[Diagnosis]) -> String {
    diagnoses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(". ")
}

/// Where one Deployment's rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutStatus {
    /// Rolled out, by `kubectl rollout status`'s rule.
    Complete,
    /// Still going; the text says what it waits for, in kubectl's words.
    InProgress(String),
    /// The controller reports `ProgressDeadlineExceeded` for the current generation: it will
    /// not get better by waiting.
    DeadlineExceeded,
}

/// `kubectl rollout status`'s rule (`DeploymentStatusViewer`), including that a
/// `ProgressDeadlineExceeded` condition counts only once the controller has observed the
/// current generation (a fresh upgrade of a previously failed Deployment is not failed yet).
pub fn rollout_status(deployment: &Deployment) -> RolloutStatus {
    let generation = deployment.metadata.generation.unwrap_or(0);
    let observed = deployment
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .unwrap_or(0);
    let timed_out = deployment
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| {
            c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        });
    if generation <= observed && timed_out {
        return RolloutStatus::DeadlineExceeded;
    }
    match pending(deployment) {
        Some(what) => RolloutStatus::InProgress(what),
        None => RolloutStatus::Complete,
    }
}

/// What the rollout still waits for, in kubectl's words; `None` when it is complete.
fn pending(deployment: &Deployment) -> Option<String> {
    let generation = deployment.metadata.generation.unwrap_or(0);
    // Stricter than kubectl for objects no controller has touched (not seen on a real server,
    // where the generation starts at 1): they are not rolled out.
    let Some(status) = deployment.status.clone() else {
        return Some("waiting for the Deployment controller to report a status".into());
    };
    if generation > status.observed_generation.unwrap_or(0) {
        return Some(format!(
            "waiting for the Deployment controller to observe generation {generation}"
        ));
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if let Some(wanted) = deployment.spec.as_ref().and_then(|s| s.replicas) {
        if updated < wanted {
            return Some(format!(
                "{updated} of {wanted} new replicas have been updated"
            ));
        }
    }
    if replicas > updated {
        return Some(format!(
            "{} old replicas are pending termination",
            replicas - updated
        ));
    }
    if available < updated {
        return Some(format!(
            "{available} of {updated} updated replicas are available"
        ));
    }
    None
}

/// Limits of one wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitLimits {
    /// When the wait gives up on what is not ready yet (`--rollout-timeout`).
    pub deadline: Duration,
    /// How long a pod may stay in a state that does not fix itself before the wait gives up
    /// (`--fail-fast-after`); `None`: only the deadline ends the wait.
    pub fail_fast_after: Option<Duration>,
}

/// One watched object: what its watcher last reported, and its pods' fail-fast clock.
#[derive(Default)]
struct Watched {
    /// The initial listing is complete, so `current` is known.
    listed: bool,
    /// The object seen during a (re)list, committed at `InitDone`.
    relist: Option<Option<Value>>,
    /// `None`: the object does not exist.
    current: Option<Value>,
    /// Since when this watch has been failing without a success in between, and its latest
    /// error.
    failing: Option<(Instant, ClusterError)>,
    /// Whether its pods are watched already.
    pods_watched: bool,
    /// Its pods (by uid) seen during a (re)list of the pods watch.
    pods_relisted: HashSet<String>,
    /// Its pods (by uid) that are known.
    pods_known: HashSet<String>,
    stuck: StuckPods,
}

impl Watched {
    fn apply(&mut self, event: watcher::Event<DynamicObject>) {
        let value = |o: DynamicObject| serde_json::to_value(o).unwrap_or(Value::Null);
        match event {
            watcher::Event::Init => self.relist = Some(None),
            watcher::Event::InitApply(o) => self.relist = Some(Some(value(o))),
            watcher::Event::InitDone => {
                self.current = self.relist.take().flatten();
                self.listed = true;
            }
            watcher::Event::Apply(o) => self.current = Some(value(o)),
            watcher::Event::Delete(_) => self.current = None,
        }
    }

    /// Feeds a pod watch event into the fail-fast clock.
    fn apply_pod(&mut self, event: watcher::Event<DynamicObject>, now: Instant) {
        let observe = |this: &mut Watched, o: DynamicObject, gone: bool| {
            let uid = o.metadata.uid.clone().unwrap_or_default();
            let name = o.metadata.name.clone().unwrap_or_default();
            let pod = if gone {
                None
            } else {
                serde_json::to_value(o)
                    .ok()
                    .and_then(|v| serde_json::from_value::<Pod>(v).ok())
            };
            let reason = pod.as_ref().and_then(hopeless);
            let revision = pod.as_ref().map(PodRevision::of).unwrap_or_default();
            if gone {
                this.pods_known.remove(&uid);
            } else {
                this.pods_known.insert(uid.clone());
            }
            this.stuck.observe(&uid, &name, revision, reason, now);
            uid
        };
        match event {
            watcher::Event::Init => self.pods_relisted.clear(),
            watcher::Event::InitApply(o) => {
                let uid = observe(self, o, false);
                self.pods_relisted.insert(uid);
            }
            watcher::Event::InitDone => {
                let gone: Vec<String> = self
                    .pods_known
                    .difference(&self.pods_relisted)
                    .cloned()
                    .collect();
                for uid in gone {
                    self.pods_known.remove(&uid);
                    self.stuck
                        .observe(&uid, "", PodRevision::default(), None, now);
                }
            }
            watcher::Event::Apply(o) => {
                observe(self, o, false);
            }
            watcher::Event::Delete(o) => {
                observe(self, o, true);
            }
        }
    }

    /// Takes a failure of this watch: given up on (returned) when it is not transient, when
    /// the watch never listed, or when it has been failing for [`UNREACHABLE_GRACE`];
    /// otherwise remembered while the watcher retries with backoff.
    fn fail(&mut self, error: ClusterError) -> Result<(), ClusterError> {
        let first_failure = self.failing.as_ref().map_or_else(Instant::now, |f| f.0);
        if !error.is_transient() || !self.listed || first_failure.elapsed() >= UNREACHABLE_GRACE {
            return Err(error);
        }
        tracing::debug!(%error, "readiness watch failed; retrying with backoff");
        self.failing = Some((first_failure, error));
        Ok(())
    }

    /// Which of its stuck pods count for fail fast: those of its newest revision, as the
    /// object says now.
    fn counts<'a>(&'a self, awaited: &'a Awaited) -> impl Fn(&PodRevision) -> bool + 'a {
        move |pod| is_newest_revision(awaited.kind, self.current.as_ref(), pod)
    }

    fn readiness(&self, awaited: &Awaited) -> Readiness {
        match &self.current {
            Some(object) => readiness(awaited.kind, object),
            None => Readiness::InProgress(format!("the {} does not exist", awaited.kind_name)),
        }
    }
}

/// Which watch an event comes from: the object `i`, or the pods of object `i`.
#[derive(Debug, Clone, Copy)]
enum Source {
    Object(usize),
    Pods(usize),
}

/// The merged watch events of the objects waited for and their pods.
type WatchEvents = stream::SelectAll<
    futures::stream::BoxStream<
        'static,
        (
            Source,
            Result<watcher::Event<DynamicObject>, watcher::Error>,
        ),
    >,
>;

/// Where the watched objects stand together.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Some are not listed yet or still in progress (at the deadline: they did not finish).
    Waiting,
    /// All ready.
    Complete,
    /// These (index, why) report a state that waiting will not fix.
    Failed(Vec<(usize, String)>),
    /// These (index, pod, why) have had a pod in a hopeless state for `--fail-fast-after`.
    Stuck(Vec<(usize, String, String)>),
}

/// The verdict on what the watches last reported at `now`; `Waiting` until every one has
/// listed.
fn evaluate(
    awaited: &[Awaited],
    watched: &[Watched],
    fail_fast_after: Option<Duration>,
    now: Instant,
) -> Verdict {
    if !watched.iter().all(|w| w.listed) {
        return Verdict::Waiting;
    }
    let states: Vec<Readiness> = watched
        .iter()
        .zip(awaited)
        .map(|(w, a)| w.readiness(a))
        .collect();
    if states.iter().all(|s| *s == Readiness::Ready) {
        return Verdict::Complete;
    }
    let failed: Vec<(usize, String)> = states
        .iter()
        .enumerate()
        .filter_map(|(j, s)| match s {
            Readiness::Failed(why) => Some((j, why.clone())),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        return Verdict::Failed(failed);
    }
    let Some(after) = fail_fast_after else {
        return Verdict::Waiting;
    };
    let stuck: Vec<(usize, String, String)> = watched
        .iter()
        .enumerate()
        .filter(|(j, _)| states[*j] != Readiness::Ready)
        .filter_map(|(j, w)| {
            w.stuck
                .expired(now, after, w.counts(&awaited[j]))
                .map(|(pod, why)| (j, pod, why))
        })
        .collect();
    if stuck.is_empty() {
        Verdict::Waiting
    } else {
        Verdict::Stuck(stuck)
    }
}

/// Where a wait stands, as a progress report tells it (`progress::report`): how many of
/// the awaited objects are ready and what the first one not ready waits for, e.g.
/// `rollout: 0 of 1 ready; Deployment hello: 1 of 3 updated replicas are available`.
/// `None` until every watch has listed (nothing is known yet) and once all are ready.
fn progress_of(awaited: &[Awaited], watched: &[Watched]) -> Option<String> {
    if !watched.iter().all(|w| w.listed) {
        return None;
    }
    let states: Vec<Readiness> = watched
        .iter()
        .zip(awaited)
        .map(|(w, a)| w.readiness(a))
        .collect();
    let ready = states.iter().filter(|s| **s == Readiness::Ready).count();
    let (j, what) = states.iter().enumerate().find_map(|(j, s)| match s {
        Readiness::InProgress(what) | Readiness::Failed(what) => Some((j, what)),
        Readiness::Ready => None,
    })?;
    Some(format!(
        "rollout: {ready} of {} ready; {}: {what}",
        awaited.len(),
        awaited[j]
    ))
}

/// The earliest moment a fail-fast clock runs out.
fn next_fail_fast(
    awaited: &[Awaited],
    watched: &[Watched],
    fail_fast_after: Option<Duration>,
) -> Option<Instant> {
    let after = fail_fast_after?;
    watched
        .iter()
        .zip(awaited)
        .filter_map(|(w, a)| w.stuck.due(after, w.counts(a)))
        .min()
}

/// The API resource of an awaited built-in kind (custom kinds are discovered).
fn builtin_resource(awaited: &Awaited) -> Option<ApiResource> {
    let (group, version, plural) = match awaited.kind {
        Kind::Deployment => ("apps", "v1", "deployments"),
        Kind::StatefulSet => ("apps", "v1", "statefulsets"),
        Kind::DaemonSet => ("apps", "v1", "daemonsets"),
        Kind::Job => ("batch", "v1", "jobs"),
        Kind::PersistentVolumeClaim => ("", "v1", "persistentvolumeclaims"),
        Kind::LoadBalancer => ("", "v1", "services"),
        Kind::Pod => ("", "v1", "pods"),
        Kind::Custom => return None,
    };
    let gvk = GroupVersionKind::gvk(group, version, &awaited.kind_name);
    Some(ApiResource::from_gvk_with_plural(&gvk, plural))
}

fn pods_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Pod"), "pods")
}

/// A watcher of one object (a LIST, then a WATCH narrowed by `metadata.name`).
fn watch_one(
    api: Api<DynamicObject>,
    name: &str,
    source: Source,
) -> futures::stream::BoxStream<
    'static,
    (
        Source,
        Result<watcher::Event<DynamicObject>, watcher::Error>,
    ),
> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    watcher(api, config)
        .default_backoff()
        .map(move |event| (source, event))
        .boxed()
}

/// Applies watch events until the verdict is no longer `Waiting` or `give_up_at` passes
/// (then `Waiting`). A watch of an object that fails for good (see [`Watched::fail`]) or a
/// stream that ends is API trouble; a failing pods watch only weakens fail fast.
async fn follow(
    cluster: &Cluster,
    namespace: &str,
    awaited: &[Awaited],
    events: &mut WatchEvents,
    watched: &mut [Watched],
    limits: WaitLimits,
    give_up_at: Instant,
) -> Result<Verdict, RolloutFailure> {
    loop {
        let wake = next_fail_fast(awaited, watched, limits.fail_fast_after)
            .map_or(give_up_at, |due| due.min(give_up_at));
        let next = match tokio::time::timeout_at(wake, events.next()).await {
            Ok(next) => next,
            Err(_) if Instant::now() >= give_up_at => return Ok(Verdict::Waiting),
            Err(_) => match evaluate(awaited, watched, limits.fail_fast_after, Instant::now()) {
                Verdict::Waiting => continue,
                settled => return Ok(settled),
            },
        };
        let Some((source, event)) = next else {
            return Err(RolloutFailure::Cluster(ClusterError::Protocol {
                action: format!("watch objects in {namespace}"),
                detail: "the watch stream ended".into(),
            }));
        };
        match (source, event) {
            (Source::Object(i), Ok(event)) => {
                watched[i].failing = None;
                watched[i].apply(event);
                if awaited[i].kind == Kind::Pod {
                    // A bare pod is its own fail-fast clock.
                    let now = Instant::now();
                    let pod = watched[i]
                        .current
                        .clone()
                        .and_then(|v| serde_json::from_value::<Pod>(v).ok());
                    let reason = pod.as_ref().and_then(hopeless);
                    watched[i].stuck.observe(
                        &awaited[i].name,
                        &awaited[i].name,
                        PodRevision::default(),
                        reason,
                        now,
                    );
                }
                if limits.fail_fast_after.is_some() && !watched[i].pods_watched {
                    if let Some(selector) = pod_selector(&awaited[i], watched[i].current.as_ref()) {
                        watched[i].pods_watched = true;
                        let ns = awaited[i].namespace.as_deref().unwrap_or(namespace);
                        let api = Api::namespaced_with(cluster.client(), ns, &pods_resource());
                        let config = watcher::Config::default().labels(&selector);
                        events.push(
                            watcher(api, config)
                                .default_backoff()
                                .map(move |event| (Source::Pods(i), event))
                                .boxed(),
                        );
                    }
                }
            }
            (Source::Object(i), Err(e)) => {
                let error = ClusterError::watch(format!("watch {} in {namespace}", awaited[i]), e);
                watched[i].fail(error)?;
                continue;
            }
            (Source::Pods(i), Ok(event)) => watched[i].apply_pod(event, Instant::now()),
            (Source::Pods(i), Err(e)) => {
                tracing::debug!(error = %e, object = %awaited[i], "pods watch failed; retrying with backoff");
                continue;
            }
        }
        if let Some(progress) = progress_of(awaited, watched) {
            crate::progress::report(progress);
        }
        match evaluate(awaited, watched, limits.fail_fast_after, Instant::now()) {
            Verdict::Waiting => {}
            settled => return Ok(settled),
        }
    }
}

/// The label selector of an object's pods, for kinds that run pods through one.
fn pod_selector(awaited: &Awaited, current: Option<&Value>) -> Option<String> {
    if !awaited.kind.has_pods() {
        return None;
    }
    let selector: LabelSelector =
        serde_json::from_value(current?.pointer("/spec/selector")?.clone()).ok()?;
    selector_string(&selector)
}

impl Cluster {
    /// Waits until every Deployment in `deployments` (names in `namespace`) has rolled out,
    /// or `deadline` passes; see [`Cluster::wait_until_ready`] (without fail fast).
    pub async fn wait_for_rollout(
        &self,
        namespace: &str,
        deployments: &[String],
        deadline: Duration,
    ) -> Result<(), RolloutFailure> {
        let awaited: Vec<Awaited> = deployments.iter().map(|d| Awaited::deployment(d)).collect();
        let limits = WaitLimits {
            deadline,
            fail_fast_after: None,
        };
        self.wait_until_ready(namespace, &awaited, limits).await
    }

    /// Waits until every object in `awaited` is ready by the rules of its kind
    /// ([`readiness`]), `namespace` being the one of objects that name none.
    ///
    /// Ends as soon as the last one is ready; fails as soon as one reports a state waiting
    /// will not fix (a progress deadline exceeded, a failed Job, a lost claim, `Stalled`), or
    /// a pod of one not ready has been hopeless ([`hopeless`]) for
    /// `limits.fail_fast_after`, or at `limits.deadline`, with a diagnosis of each object
    /// concerned. An object that does not exist is waited for (it may be created
    /// meanwhile) and reported as missing at the deadline. API trouble is a
    /// [`RolloutFailure::Cluster`], never a diagnosis: a watch that cannot start fails at
    /// once (a first LIST that hangs, at the deadline); once started, watches retry with
    /// backoff and give up after 30 s of continuous failure, or at the deadline.
    pub async fn wait_until_ready(
        &self,
        namespace: &str,
        awaited: &[Awaited],
        limits: WaitLimits,
    ) -> Result<(), RolloutFailure> {
        let started = Instant::now();
        let mut awaited: Vec<Awaited> = awaited.to_vec();
        awaited.sort_by(|a, b| (&a.kind_name, &a.name).cmp(&(&b.kind_name, &b.name)));
        awaited.dedup();
        if awaited.is_empty() {
            return Ok(());
        }
        let mut events = stream::select_all(Vec::new());
        for (i, a) in awaited.iter().enumerate() {
            let ns = a.namespace.as_deref().unwrap_or(namespace);
            let api = self.api_of(a, ns).await?;
            events.push(watch_one(api, &a.name, Source::Object(i)));
        }
        let mut watched: Vec<Watched> = awaited.iter().map(|_| Watched::default()).collect();
        let verdict = follow(
            self,
            namespace,
            &awaited,
            &mut events,
            &mut watched,
            limits,
            started + limits.deadline,
        )
        .await;
        // The watches are closed before a diagnosis reads anything else.
        drop(events);
        match verdict? {
            Verdict::Complete => {
                tracing::info!(
                    namespace,
                    objects = ?awaited.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    elapsed = ?started.elapsed(),
                    "everything ready"
                );
                Ok(())
            }
            Verdict::Failed(failed) => {
                let mut diagnoses = Vec::new();
                for (j, why) in failed {
                    let cause = match awaited[j].kind {
                        Kind::Deployment => StallCause::ProgressDeadlineExceeded {
                            progress_deadline_seconds: watched[j]
                                .current
                                .as_ref()
                                .and_then(|d| d.pointer("/spec/progressDeadlineSeconds"))
                                .and_then(Value::as_i64)
                                .and_then(|s| i32::try_from(s).ok()),
                        },
                        _ => StallCause::Failed(why),
                    };
                    diagnoses.push(
                        self.diagnose(namespace, &awaited[j], watched[j].current.as_ref(), cause)
                            .await,
                    );
                }
                Err(self.failed(diagnoses))
            }
            Verdict::Stuck(stuck) => {
                let after = limits.fail_fast_after.unwrap_or_default();
                let mut diagnoses = Vec::new();
                for (j, pod, why) in stuck {
                    let cause = StallCause::PodStuck { pod, why, after };
                    diagnoses.push(
                        self.diagnose(namespace, &awaited[j], watched[j].current.as_ref(), cause)
                            .await,
                    );
                }
                Err(self.failed(diagnoses))
            }
            Verdict::Waiting => Err(self
                .diagnose_at_deadline(namespace, &awaited, &mut watched, limits.deadline)
                .await),
        }
    }

    /// The API of an awaited object's kind in `namespace` (or cluster-wide, for a custom
    /// kind the API server says is cluster-scoped); custom kinds are discovered.
    async fn api_of(
        &self,
        awaited: &Awaited,
        namespace: &str,
    ) -> Result<Api<DynamicObject>, ClusterError> {
        if let Some(resource) = builtin_resource(awaited) {
            return Ok(Api::namespaced_with(self.client(), namespace, &resource));
        }
        let (group, version) = awaited
            .api_version
            .rsplit_once('/')
            .unwrap_or(("", awaited.api_version.as_str()));
        let gvk = GroupVersionKind::gvk(group, version, &awaited.kind_name);
        let (resource, capabilities) = self
            .call(
                || format!("discover {} {}", awaited.api_version, awaited.kind_name),
                kube::discovery::pinned_kind(&self.client(), &gvk),
            )
            .await?;
        Ok(match capabilities.scope {
            kube::discovery::Scope::Cluster => Api::all_with(self.client(), &resource),
            kube::discovery::Scope::Namespaced => {
                Api::namespaced_with(self.client(), namespace, &resource)
            }
        })
    }

    /// The failure once the wait's deadline passed: API trouble if a watch was failing or never
    /// listed, else a diagnosis of each object not ready.
    async fn diagnose_at_deadline(
        &self,
        namespace: &str,
        awaited: &[Awaited],
        watched: &mut [Watched],
        deadline: Duration,
    ) -> RolloutFailure {
        if let Some((_, error)) = watched.iter_mut().find_map(|w| w.failing.take()) {
            return error.into();
        }
        // A watch whose first LIST never answered: the API server, not the rollout, failed.
        if let Some(j) = watched.iter().position(|w| !w.listed) {
            return ClusterError::Timeout {
                action: format!("watch {} in {namespace}", awaited[j]),
                after: deadline,
            }
            .into();
        }
        let mut diagnoses = Vec::new();
        for (j, w) in watched.iter().enumerate() {
            if w.readiness(&awaited[j]) == Readiness::Ready {
                continue;
            }
            let cause = StallCause::NotReadyWithin(deadline);
            diagnoses.push(
                self.diagnose(namespace, &awaited[j], w.current.as_ref(), cause)
                    .await,
            );
        }
        self.failed(diagnoses)
    }

    fn failed(&self, diagnoses: Vec<Diagnosis>) -> RolloutFailure {
        let failure = RolloutFailure::NotRolledOut(diagnoses);
        tracing::warn!(error = %failure, "not ready");
        failure
    }

    /// Whether every Deployment in `deployments` is rolled out right now, by the same rule as
    /// [`Cluster::wait_for_rollout`]; a missing Deployment is not. One GET per Deployment,
    /// concurrently: the check of the unchanged-redeploy fast path.
    pub async fn deployments_ready(
        &self,
        namespace: &str,
        deployments: &[String],
    ) -> Result<bool, ClusterError> {
        let api: Api<Deployment> = Api::namespaced(self.client(), namespace);
        let reads = deployments.iter().map(|name| {
            self.call(
                move || format!("get Deployment {name} in {namespace}"),
                api.get_opt(name),
            )
        });
        let found = futures::future::try_join_all(reads).await?;
        Ok(found
            .iter()
            .all(|d| d.as_ref().map(rollout_status) == Some(RolloutStatus::Complete)))
    }

    /// Whether every object in `awaited` is ready right now, by the rules of
    /// [`Cluster::wait_until_ready`]; a missing one is not. One GET per object, concurrently
    /// (custom kinds: a discovery request first): the other half of the unchanged-redeploy
    /// check, beside [`Cluster::deployments_ready`].
    pub async fn objects_ready(
        &self,
        namespace: &str,
        awaited: &[Awaited],
    ) -> Result<bool, ClusterError> {
        let reads = awaited.iter().map(|a| async move {
            let ns = a.namespace.as_deref().unwrap_or(namespace);
            let api = self.api_of(a, ns).await?;
            let found = self
                .call(|| format!("get {a} in {ns}"), api.get_opt(&a.name))
                .await?;
            Ok::<bool, ClusterError>(found.is_some_and(|o| {
                serde_json::to_value(o).is_ok_and(|v| readiness(a.kind, &v) == Readiness::Ready)
            }))
        });
        let ready = futures::future::try_join_all(reads).await?;
        Ok(ready.into_iter().all(|r| r))
    }

    /// Collects what is known about an object that is not ready: where it stands, its
    /// conditions, its pods' problems (and the claims they wait for). Never fails: what
    /// cannot be read is said in the diagnosis.
    async fn diagnose(
        &self,
        namespace: &str,
        awaited: &Awaited,
        current: Option<&Value>,
        cause: StallCause,
    ) -> Diagnosis {
        let ns = awaited.namespace.as_deref().unwrap_or(namespace);
        let mut diagnosis = Diagnosis {
            namespace: ns.to_string(),
            kind: awaited.kind_name.clone(),
            name: awaited.name.clone(),
            cause,
            progress: None,
            conditions: Vec::new(),
            pods: Vec::new(),
            more_pods: 0,
            pods_error: None,
        };
        let Some(object) = current else {
            diagnosis.progress = Some(format!("the {} does not exist", awaited.kind_name));
            return diagnosis;
        };
        diagnosis.progress = match readiness(awaited.kind, object) {
            Readiness::InProgress(what) => Some(what),
            // A Deployment past its progress deadline still says how far it got.
            _ if awaited.kind == Kind::Deployment => {
                serde_json::from_value::<Deployment>(object.clone())
                    .ok()
                    .and_then(|d| pending(&d))
            }
            _ => None,
        };
        diagnosis.conditions = notable_conditions(object);
        let quick = self
            .clone()
            .with_request_timeout(self.request_timeout().min(DIAGNOSIS_TIMEOUT));
        let pods: Api<Pod> = Api::namespaced(self.client(), ns);
        let listed = match (awaited.kind, pod_selector(awaited, Some(object))) {
            (Kind::Pod, _) => serde_json::from_value::<Pod>(object.clone())
                .map(|p| vec![p])
                .map_err(|e| e.to_string()),
            (_, Some(selector)) => {
                let params = ListParams::default().labels(&selector);
                quick
                    .call(
                        || format!("list pods of {awaited} in {ns}"),
                        pods.list(&params),
                    )
                    .await
                    .map(|list| list.items)
                    .map_err(|e| e.to_string())
            }
            _ => return diagnosis,
        };
        match listed {
            Ok(items) => {
                let mut troubled = Vec::new();
                for p in &items {
                    let mut problems = pod_problems(p);
                    if problems.is_empty() {
                        continue;
                    }
                    problems.extend(quick.unbound_claims(ns, p).await);
                    troubled.push(PodProblems {
                        pod: p.metadata.name.clone().unwrap_or_default(),
                        problems,
                    });
                }
                diagnosis.more_pods = troubled.len().saturating_sub(MAX_PODS);
                troubled.truncate(MAX_PODS);
                diagnosis.pods = troubled;
            }
            Err(e) => diagnosis.pods_error = Some(e),
        }
        diagnosis
    }

    /// `claim <name> is <phase> (not bound)` for each claim `pod` mounts that is not bound
    /// (a pod's scheduling message does not always name it).
    async fn unbound_claims(&self, namespace: &str, pod: &Pod) -> Vec<String> {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client(), namespace);
        let mut out = Vec::new();
        let names = pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.clone());
        for name in names {
            let read = self
                .call(
                    || format!("get PersistentVolumeClaim {name} in {namespace}"),
                    claims.get_opt(&name),
                )
                .await;
            let phase = match read {
                Ok(Some(claim)) => claim
                    .status
                    .and_then(|s| s.phase)
                    .unwrap_or_else(|| "Pending".into()),
                Ok(None) => "missing".into(),
                Err(_) => continue,
            };
            if phase != "Bound" {
                out.push(format!("claim {name} is {phase} (not bound)"));
            }
        }
        out
    }
}

/// A Deployment's `spec.selector` as a label selector query; `None` when it is empty (which
/// would select every pod of the namespace) or uses an operator we do not know.
fn selector_string(selector: &LabelSelector) -> Option<String> {
    let mut terms: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default().join(",");
        terms.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            _ => return None,
        });
    }
    (!terms.is_empty()).then(|| terms.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(spec_replicas: i32, generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "d", "generation": generation},
            "spec": {
                "replicas": spec_replicas,
                "selector": {"matchLabels": {"app": "d"}},
                "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": []}}
            },
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn progress_tells_how_many_are_ready_and_what_the_first_other_waits_for() {
        let awaited = [Awaited::deployment("a"), Awaited::deployment("b")];
        let listed = |status: Value| Watched {
            listed: true,
            current: Some(serde_json::to_value(deployment(3, 1, status)).unwrap()),
            ..Watched::default()
        };
        let done = || {
            listed(
                json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3,
                          "availableReplicas": 3}),
            )
        };
        let two_of_three = listed(json!({"observedGeneration": 1, "replicas": 3,
                                         "updatedReplicas": 3, "availableReplicas": 2}));
        assert_eq!(
            progress_of(&awaited, &[done(), two_of_three]).as_deref(),
            Some("rollout: 1 of 2 ready; Deployment b: 2 of 3 updated replicas are available")
        );
        assert_eq!(progress_of(&awaited, &[done(), done()]), None);
        assert_eq!(progress_of(&awaited, &[done(), Watched::default()]), None);
    }

    #[test]
    fn verdict_waits_for_every_listing_and_stops_on_failures_and_stuck_pods() {
        let awaited = [Awaited::deployment("a"), Awaited::deployment("b")];
        let listed = |current: Option<Value>| Watched {
            listed: true,
            current,
            ..Watched::default()
        };
        let object = |d: Deployment| Some(serde_json::to_value(d).unwrap());
        let done = || {
            object(deployment(
                1,
                1,
                json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                       "availableReplicas": 1}),
            ))
        };
        let exceeded = || {
            object(deployment(
                1,
                1,
                json!({"observedGeneration": 1, "replicas": 1, "conditions": [{
                    "type": "Progressing", "status": "False",
                    "reason": "ProgressDeadlineExceeded"}]}),
            ))
        };
        let t0 = Instant::now();
        let after = Some(Duration::from_secs(60));
        assert_eq!(
            evaluate(&awaited, &[listed(done()), listed(done())], after, t0),
            Verdict::Complete
        );
        // A watch that has not listed yet tells nothing, even when the others are done.
        assert_eq!(
            evaluate(&awaited, &[listed(done()), Watched::default()], after, t0),
            Verdict::Waiting
        );
        // A missing object is waited for.
        assert_eq!(
            evaluate(&awaited, &[listed(done()), listed(None)], after, t0),
            Verdict::Waiting
        );
        assert_eq!(
            evaluate(&awaited, &[listed(exceeded()), listed(None)], after, t0),
            Verdict::Failed(vec![(0, "exceeded its progress deadline".into())])
        );
        // A hopeless pod of an object not ready ends the wait once its clock ran out, and
        // only with fail fast on.
        let mut stuck = listed(None);
        stuck.stuck.observe(
            "u1",
            "b-1",
            PodRevision::default(),
            Some("container b ImagePullBackOff".into()),
            t0,
        );
        let watched = [listed(done()), stuck];
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            evaluate(&awaited, &watched, after, t0 + Duration::from_secs(59)),
            Verdict::Waiting
        );
        assert_eq!(
            evaluate(&awaited, &watched, after, later),
            Verdict::Stuck(vec![(
                1,
                "b-1".into(),
                "container b ImagePullBackOff".into()
            )])
        );
        assert_eq!(evaluate(&awaited, &watched, None, later), Verdict::Waiting);
        assert_eq!(next_fail_fast(&awaited, &watched, after), Some(later));
        // Ready despite a stuck pod (an old one, say): ready wins.
        let [first, mut second] = watched;
        second.current = done();
        assert_eq!(
            evaluate(&awaited, &[first, second], after, later),
            Verdict::Complete
        );
    }

    #[test]
    fn kubectl_rollout_rule() {
        let done = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
                          "availableReplicas": 2});
        assert_eq!(
            rollout_status(&deployment(2, 2, done.clone())),
            RolloutStatus::Complete
        );
        // Not yet observed: even a complete-looking status does not count.
        assert!(matches!(
            rollout_status(&deployment(2, 3, done)),
            RolloutStatus::InProgress(m) if m.contains("observe generation 3")
        ));
        assert_eq!(
            rollout_status(&deployment(
                2,
                1,
                json!({"observedGeneration": 1, "replicas": 2,
                "updatedReplicas": 1, "availableReplicas": 2})
            )),
            RolloutStatus::InProgress("1 of 2 new replicas have been updated".into())
        );
        assert_eq!(
            rollout_status(&deployment(
                2,
                1,
                json!({"observedGeneration": 1, "replicas": 3,
                "updatedReplicas": 2, "availableReplicas": 3})
            )),
            RolloutStatus::InProgress("1 old replicas are pending termination".into())
        );
        assert_eq!(
            rollout_status(&deployment(
                2,
                1,
                json!({"observedGeneration": 1, "replicas": 2,
                "updatedReplicas": 2, "availableReplicas": 1})
            )),
            RolloutStatus::InProgress("1 of 2 updated replicas are available".into())
        );
        // Scaled to zero is rolled out.
        assert_eq!(
            rollout_status(&deployment(0, 1, json!({"observedGeneration": 1}))),
            RolloutStatus::Complete
        );
        assert!(matches!(
            rollout_status(&Deployment::default()),
            RolloutStatus::InProgress(_)
        ));
    }

    #[test]
    fn progress_deadline_counts_only_for_the_observed_generation() {
        let failed = json!({"observedGeneration": 1, "replicas": 1, "conditions": [{
            "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
            "message": "ReplicaSet \"d-1\" has timed out progressing."}]});
        assert_eq!(
            rollout_status(&deployment(1, 1, failed.clone())),
            RolloutStatus::DeadlineExceeded
        );
        assert!(matches!(
            rollout_status(&deployment(1, 2, failed)),
            RolloutStatus::InProgress(_)
        ));
    }

    #[test]
    fn selectors_become_queries() {
        let s: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "carts", "tier": "web"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["a", "b"]},
                {"key": "x", "operator": "NotIn", "values": ["c"]},
                {"key": "y", "operator": "Exists"},
                {"key": "z", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        assert_eq!(
            selector_string(&s).as_deref(),
            Some("app=carts,tier=web,env in (a,b),x notin (c),y,!z")
        );
        assert_eq!(selector_string(&LabelSelector::default()), None);
        let odd: LabelSelector = serde_json::from_value(json!({
            "matchExpressions": [{"key": "k", "operator": "Gt", "values": ["1"]}]
        }))
        .unwrap();
        assert_eq!(selector_string(&odd), None);
    }
}
