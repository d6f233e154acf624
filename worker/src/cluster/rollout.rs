//! Waiting for Deployments to roll out, by watching them.
//!
//! The reference polled every 2 s; here each Deployment gets a kube-rs watcher (a LIST, then a
//! WATCH from its resourceVersion, narrowed by `metadata.name`), so the wait ends on the status
//! update that completes the rollout, costs one open stream per Deployment instead of a
//! request every 2 s, and notices a failed rollout (`ProgressDeadlineExceeded`) as soon as the
//! Deployment controller reports it rather than at our own deadline.
//!
//! "Rolled out" is `kubectl rollout status`'s rule, so operators get the answer they would
//! get themselves: the controller has observed the current generation, all replicas are
//! updated, no old replicas are left, and the updated ones are available.
//!
//! When a rollout fails, the Deployment's conditions and its pods are read once more to say
//! why (see `diagnosis`).

use std::time::Duration;

use futures::stream::{self, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ListParams;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::time::Instant;

use super::diagnosis::{notable_conditions, pod_problems, PodProblems};
use super::{Cluster, ClusterError, DeploymentDiagnosis, StallCause};

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
    /// One or more Deployments did not roll out: the progress deadline passed or the wait's
    /// deadline did. Each diagnosis names the Deployment, its conditions and pod problems.
    #[error("{}", join(.0))]
    NotRolledOut(Vec<DeploymentDiagnosis>),
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
    pub fn diagnoses(&self) -> &[DeploymentDiagnosis] {
        match self {
            RolloutFailure::NotRolledOut(d) => d,
            RolloutFailure::Cluster(_) => &[],
        }
    }
}

fn join(diagnoses: &[DeploymentDiagnosis]) -> String {
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

/// One watched Deployment: what its watcher last reported.
#[derive(Default)]
struct Watched {
    /// The initial listing is complete, so `current` is known.
    listed: bool,
    /// The object seen during a (re)list, committed at `InitDone`.
    relist: Option<Option<Deployment>>,
    /// `None`: the Deployment does not exist.
    current: Option<Deployment>,
    /// Since when this watch has been failing without a success in between, and its latest
    /// error.
    failing: Option<(Instant, ClusterError)>,
}

impl Watched {
    fn apply(&mut self, event: watcher::Event<Deployment>) {
        match event {
            watcher::Event::Init => self.relist = Some(None),
            watcher::Event::InitApply(d) => self.relist = Some(Some(d)),
            watcher::Event::InitDone => {
                self.current = self.relist.take().flatten();
                self.listed = true;
            }
            watcher::Event::Apply(d) => self.current = Some(d),
            watcher::Event::Delete(_) => self.current = None,
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
        tracing::debug!(%error, "rollout watch failed; retrying with backoff");
        self.failing = Some((first_failure, error));
        Ok(())
    }

    fn status(&self) -> RolloutStatus {
        match &self.current {
            Some(d) => rollout_status(d),
            None => RolloutStatus::InProgress("the Deployment does not exist".into()),
        }
    }
}

/// The merged watch events of the Deployments waited for, tagged with their index.
type DeploymentEvents = stream::SelectAll<
    futures::stream::BoxStream<
        'static,
        (usize, Result<watcher::Event<Deployment>, watcher::Error>),
    >,
>;

/// Where the watched Deployments stand together.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Some are not listed yet or still rolling out (at the deadline: they did not finish).
    Waiting,
    /// All rolled out.
    Complete,
    /// These (indexes) report `ProgressDeadlineExceeded`: waiting longer will not help.
    ProgressDeadlineExceeded(Vec<usize>),
}

/// The verdict on what the watches last reported; `Waiting` until every one has listed.
fn evaluate(watched: &[Watched]) -> Verdict {
    if !watched.iter().all(|w| w.listed) {
        return Verdict::Waiting;
    }
    let statuses: Vec<RolloutStatus> = watched.iter().map(Watched::status).collect();
    if statuses.iter().all(|s| *s == RolloutStatus::Complete) {
        return Verdict::Complete;
    }
    let exceeded: Vec<usize> = (0..statuses.len())
        .filter(|&j| statuses[j] == RolloutStatus::DeadlineExceeded)
        .collect();
    if exceeded.is_empty() {
        Verdict::Waiting
    } else {
        Verdict::ProgressDeadlineExceeded(exceeded)
    }
}

/// Applies watch events until the verdict is no longer `Waiting` or `give_up_at` passes
/// (then `Waiting`). A watch that fails for good (see [`Watched::fail`]) or a stream that
/// ends is API trouble.
async fn follow(
    events: &mut DeploymentEvents,
    watched: &mut [Watched],
    namespace: &str,
    names: &[&str],
    give_up_at: Instant,
) -> Result<Verdict, RolloutFailure> {
    loop {
        let Ok(next) = tokio::time::timeout_at(give_up_at, events.next()).await else {
            return Ok(Verdict::Waiting);
        };
        let Some((i, event)) = next else {
            return Err(RolloutFailure::Cluster(ClusterError::Protocol {
                action: format!("watch Deployments in {namespace}"),
                detail: "the watch stream ended".into(),
            }));
        };
        match event {
            Ok(event) => {
                watched[i].failing = None;
                watched[i].apply(event);
            }
            Err(e) => {
                let error =
                    ClusterError::watch(format!("watch Deployment {} in {namespace}", names[i]), e);
                watched[i].fail(error)?;
                continue;
            }
        }
        match evaluate(watched) {
            Verdict::Waiting => {}
            settled => return Ok(settled),
        }
    }
}

impl Cluster {
    /// Waits until every Deployment in `deployments` (names in `namespace`) has rolled out.
    ///
    /// Ends as soon as the last one completes; fails as soon as one reports
    /// `ProgressDeadlineExceeded`, or at `deadline` with a diagnosis of each unfinished
    /// Deployment. A Deployment that does not exist is waited for (it may be created
    /// meanwhile) and reported as missing at the deadline. API trouble is a
    /// [`RolloutFailure::Cluster`], never a rollout diagnosis: a watch that cannot start fails
    /// at once (a first LIST that hangs, at the deadline); once started, watches retry with
    /// backoff and give up after 30 s of continuous failure, or at the deadline.
    pub async fn wait_for_rollout(
        &self,
        namespace: &str,
        deployments: &[String],
        deadline: Duration,
    ) -> Result<(), RolloutFailure> {
        let started = Instant::now();
        let mut names: Vec<&str> = deployments.iter().map(String::as_str).collect();
        names.sort_unstable();
        names.dedup();
        if names.is_empty() {
            return Ok(());
        }
        let mut events = self.watch_deployments(namespace, &names);
        let mut watched: Vec<Watched> = names.iter().map(|_| Watched::default()).collect();
        let verdict = follow(
            &mut events,
            &mut watched,
            namespace,
            &names,
            started + deadline,
        )
        .await;
        // The watches are closed before a diagnosis reads anything else.
        drop(events);
        match verdict? {
            Verdict::Complete => {
                tracing::info!(
                    namespace,
                    deployments = ?names,
                    elapsed = ?started.elapsed(),
                    "rollout complete"
                );
                Ok(())
            }
            Verdict::ProgressDeadlineExceeded(exceeded) => Err(self
                .diagnose_progress_deadline(namespace, &names, &watched, exceeded)
                .await),
            Verdict::Waiting => Err(self
                .diagnose_at_deadline(namespace, &names, &mut watched, deadline)
                .await),
        }
    }

    /// One watcher per Deployment (a LIST, then a WATCH narrowed by `metadata.name`), merged
    /// into one stream of events tagged with the Deployment's index in `names`.
    fn watch_deployments(&self, namespace: &str, names: &[&str]) -> DeploymentEvents {
        let api: Api<Deployment> = Api::namespaced(self.client(), namespace);
        stream::select_all(names.iter().enumerate().map(|(i, name)| {
            let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
            watcher(api.clone(), config)
                .default_backoff()
                .map(move |event| (i, event))
                .boxed()
        }))
    }

    /// The failure of Deployments whose controller reported `ProgressDeadlineExceeded`
    /// (`exceeded`: their indexes), each diagnosed.
    async fn diagnose_progress_deadline(
        &self,
        namespace: &str,
        names: &[&str],
        watched: &[Watched],
        exceeded: Vec<usize>,
    ) -> RolloutFailure {
        let mut diagnoses = Vec::new();
        for j in exceeded {
            let current = watched[j].current.as_ref();
            let cause = StallCause::ProgressDeadlineExceeded {
                progress_deadline_seconds: current
                    .and_then(|d| d.spec.as_ref())
                    .and_then(|s| s.progress_deadline_seconds),
            };
            diagnoses.push(self.diagnose(namespace, names[j], current, cause).await);
        }
        self.failed(diagnoses)
    }

    /// The failure once the wait's deadline passed: API trouble if a watch was failing or never
    /// listed, else a diagnosis of each Deployment not rolled out.
    async fn diagnose_at_deadline(
        &self,
        namespace: &str,
        names: &[&str],
        watched: &mut [Watched],
        deadline: Duration,
    ) -> RolloutFailure {
        if let Some((_, error)) = watched.iter_mut().find_map(|w| w.failing.take()) {
            return error.into();
        }
        // A watch whose first LIST never answered: the API server, not the rollout, failed.
        if let Some(j) = watched.iter().position(|w| !w.listed) {
            return ClusterError::Timeout {
                action: format!("watch Deployment {} in {namespace}", names[j]),
                after: deadline,
            }
            .into();
        }
        let mut diagnoses = Vec::new();
        for (j, w) in watched.iter().enumerate() {
            if w.status() == RolloutStatus::Complete {
                continue;
            }
            let cause = StallCause::NotReadyWithin(deadline);
            diagnoses.push(
                self.diagnose(namespace, names[j], w.current.as_ref(), cause)
                    .await,
            );
        }
        self.failed(diagnoses)
    }

    fn failed(&self, diagnoses: Vec<DeploymentDiagnosis>) -> RolloutFailure {
        let failure = RolloutFailure::NotRolledOut(diagnoses);
        tracing::warn!(error = %failure, "rollout failed");
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

    /// Collects what is known about a Deployment that did not roll out. Never fails: what
    /// cannot be read is said in the diagnosis.
    async fn diagnose(
        &self,
        namespace: &str,
        name: &str,
        deployment: Option<&Deployment>,
        cause: StallCause,
    ) -> DeploymentDiagnosis {
        let mut diagnosis = DeploymentDiagnosis {
            namespace: namespace.to_string(),
            deployment: name.to_string(),
            cause,
            progress: None,
            conditions: Vec::new(),
            pods: Vec::new(),
            more_pods: 0,
            pods_error: None,
        };
        let Some(deployment) = deployment else {
            diagnosis.progress = Some("the Deployment does not exist".into());
            return diagnosis;
        };
        diagnosis.progress = pending(deployment);
        diagnosis.conditions = notable_conditions(deployment);
        let Some(selector) = deployment
            .spec
            .as_ref()
            .and_then(|s| selector_string(&s.selector))
        else {
            return diagnosis;
        };
        let pods: Api<Pod> = Api::namespaced(self.client(), namespace);
        let params = ListParams::default().labels(&selector);
        let listed = self
            .clone()
            .with_request_timeout(self.request_timeout().min(DIAGNOSIS_TIMEOUT))
            .call(
                || format!("list pods of Deployment {name} in {namespace}"),
                pods.list(&params),
            )
            .await;
        match listed {
            Ok(list) => {
                let mut troubled = list.items.iter().filter_map(|p| {
                    let problems = pod_problems(p);
                    (!problems.is_empty()).then(|| PodProblems {
                        pod: p.metadata.name.clone().unwrap_or_default(),
                        problems,
                    })
                });
                diagnosis.pods = troubled.by_ref().take(MAX_PODS).collect();
                diagnosis.more_pods = troubled.count();
            }
            Err(e) => diagnosis.pods_error = Some(e.to_string()),
        }
        diagnosis
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
    fn verdict_waits_for_every_listing_and_stops_on_a_progress_deadline() {
        let listed = |current: Option<Deployment>| Watched {
            listed: true,
            current,
            ..Watched::default()
        };
        let done = || {
            Some(deployment(
                1,
                1,
                json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                       "availableReplicas": 1}),
            ))
        };
        let exceeded = || {
            Some(deployment(
                1,
                1,
                json!({"observedGeneration": 1, "replicas": 1, "conditions": [{
                    "type": "Progressing", "status": "False",
                    "reason": "ProgressDeadlineExceeded"}]}),
            ))
        };
        assert_eq!(
            evaluate(&[listed(done()), listed(done())]),
            Verdict::Complete
        );
        // A watch that has not listed yet tells nothing, even when the others are done.
        assert_eq!(
            evaluate(&[listed(done()), Watched::default()]),
            Verdict::Waiting
        );
        // A missing Deployment is waited for.
        assert_eq!(evaluate(&[listed(done()), listed(None)]), Verdict::Waiting);
        assert_eq!(
            evaluate(&[listed(exceeded()), listed(None), listed(exceeded())]),
            Verdict::ProgressDeadlineExceeded(vec![0, 2])
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
