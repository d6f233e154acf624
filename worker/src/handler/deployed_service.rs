//! A deployed service: its user and generated releases in one stage, observed from Helm's
//! storage and changed the one way every task changes them (a `helm upgrade` without
//! helm-side wait, then a watched rollout). Release, rollback and scaling change it by
//! running a recorded [`Plan`], one recorded step per action.
//!
//! Shared by every handler that changes a service's releases (deployment, release,
//! rollback, action), so each only decides *what* to do. What lives here once: reading
//! the releases from Helm's storage (after recovering pending ones), the upgrade every
//! task runs, the rollout wait, and running a plan's actions. What only one handler
//! does stays with it: the deployment's restore after a failed upgrade and its manifest
//! read (`helm get manifest`), and service deletion's uninstall.

use std::future::Future;

use contracts::data::DeploymentStrategy;
use contracts::validate::Target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tracing::info;

use super::platform::{private_dir, Platform};
use super::{Steps, TaskError};
use crate::cluster::readiness::Awaited;
use crate::cluster::{RolloutFailure, StoredRelease, StoredRevision, WaitLimits};
use crate::deploy::autoscaling;
use crate::deploy::generated::{self, BlueGreenModel, GeneratedModel, GeneratedValues};
use crate::deploy::manifest::{name_of, Manifest};
use crate::deploy::naming::ReleaseNames;
use crate::deploy::ownership;
use crate::deploy::plan::{Action, BlueGreenState, Plan};
use crate::deploy::replicas::{self, ReplicaOverride};
use crate::deploy::settings::Deadlines;
use crate::deploy::traffic::TrafficLayer;
use crate::deploy::KeptnValues;
use crate::helm::{HelmError, ReleaseState, ReleaseStatus, RenderedRelease, UpgradeRequest};
use crate::pipeline::intake::Task;

/// One service in one stage, with what a task needs to observe and change it: its two
/// releases (user and generated), the stage's deadlines, and the one way each is upgraded.
pub(super) struct DeployedService<'a> {
    pub platform: &'a Platform,
    /// The service and stage, as intake validated them.
    pub target: &'a Target,
    pub names: ReleaseNames,
    pub deadlines: Deadlines,
    /// `<event type> <id>`, named in the `helm history` description of each revision.
    pub cause: String,
}

/// The user release: the revision its chart rendered, and helm-service's replica
/// override when the latest revision is one.
pub(super) struct UserRelease {
    /// Set when the latest revision is helm-service's replica override.
    pub replica_override: Option<ReplicaOverride>,
    /// The revision the user's chart rendered (the latest, or the override's source).
    pub source: UserSource,
}

impl UserRelease {
    /// Current replicas of Deployment `name`: the override's when helm-service set them,
    /// else what the chart rendered.
    pub fn replicas_of(&self, name: &str, deployment: &Value) -> u32 {
        self.replica_override
            .as_ref()
            .and_then(|o| o.replicas.get(name).copied())
            .unwrap_or_else(|| crate::deploy::plan::declared_replicas(deployment))
    }
}

/// A revision of the user release as the user's chart rendered it.
pub(super) struct UserSource {
    pub revision: u32,
    pub manifest: Manifest,
}

impl UserSource {
    fn parse(release: &str, stored: &StoredRelease) -> Result<Self, TaskError> {
        let manifest =
            replicas::chart_rendering(release, stored.revision, &stored.manifest, &stored.config)
                .map_err(|err| TaskError::Failed(err.to_string()))?;
        Ok(UserSource {
            revision: stored.revision,
            manifest,
        })
    }

    /// The release's only Deployment, or the one named like the service; what the blue/green
    /// primary copies and what scaling a `direct` service changes.
    pub fn main_deployment(&self, service: &str) -> Result<&Value, TaskError> {
        let deployments = self.manifest.deployments();
        if let [only] = deployments.as_slice() {
            return Ok(only);
        }
        if let Some(named) = deployments.iter().find(|d| name_of(d) == Some(service)) {
            return Ok(named);
        }
        let names: Vec<&str> = deployments.iter().filter_map(|d| name_of(d)).collect();
        Err(TaskError::Failed(format!(
            "the service's release (revision {}) has {} Deployments [{}] and none is named \
             {service}: cannot tell which one to change",
            self.revision,
            deployments.len(),
            names.join(", ")
        )))
    }
}

/// What is deployed for the service in the stage.
pub(super) enum Deployed {
    /// No user release.
    Nothing,
    /// A user release without generated blue/green objects: `direct` (mesh routing) or
    /// `user_managed` (no generated release).
    Plain {
        strategy: DeploymentStrategy,
        user: UserRelease,
    },
    BlueGreen {
        generated_revision: u32,
        /// Boxed: it holds whole objects (Deployment, Service, HPA).
        model: Box<BlueGreenModel>,
        user: UserRelease,
    },
}

impl Deployed {
    pub fn strategy(&self) -> Option<DeploymentStrategy> {
        match self {
            Deployed::Nothing => None,
            Deployed::Plain { strategy, .. } => Some(*strategy),
            Deployed::BlueGreen { .. } => Some(DeploymentStrategy::BlueGreenService),
        }
    }
}

impl<'a> DeployedService<'a> {
    /// The service of a task that names one stage (deployment, release, rollback, action),
    /// by the names intake validated.
    /// Refused when the stage's namespace is protected, before anything reads or changes
    /// it.
    pub fn of_task(platform: &'a Platform, task: &'a Task) -> Result<Self, TaskError> {
        let target = task
            .payload
            .target()
            .ok_or_else(|| TaskError::misrouted("a handler of one stage", task))?;
        let names = ReleaseNames::of(target);
        platform
            .namespaces
            .check_protected(&names.namespace, target)
            .map_err(|refused| TaskError::Failed(refused.to_string()))?;
        Ok(DeployedService {
            platform,
            deadlines: platform.settings.deadlines(&target.stage),
            cause: format!("{} {}", task.kind.event_type(), task.event.id()),
            names,
            target,
        })
    }

    /// The service of a task on a deployed service (release, rollback, action): like
    /// [`DeployedService::of_task`], in the namespace its last deployment used when that was
    /// its own (`keptn.namespace`, recorded in the inventory).
    pub async fn located(platform: &'a Platform, task: &'a Task) -> Result<Self, TaskError> {
        let mut service = Self::of_task(platform, task)?;
        if let Some(entry) = platform.inventory.get(service.target).await? {
            if let Some(namespace) = entry.own_namespace(&service.names) {
                service.relocate(namespace)?;
            }
        }
        Ok(service)
    }

    /// Moves the service's releases to `namespace` (its own, `keptn.namespace`); refused
    /// when the namespace is protected, before anything reads or changes it.
    pub fn relocate(&mut self, namespace: &str) -> Result<(), TaskError> {
        self.platform
            .namespaces
            .check_protected(namespace, self.target)
            .map_err(|refused| TaskError::Failed(refused.to_string()))?;
        self.names = self.names.clone().in_namespace(namespace);
        Ok(())
    }

    /// Makes sure the stage's namespace exists, is the stage's (created, or adopted when
    /// allowed, with its ownership labels) and carries `extra` labels; refused when it
    /// belongs to another stage or may not be adopted.
    pub async fn claim_namespace(&self, extra: &ownership::Labels) -> Result<(), TaskError> {
        let namespace = &self.names.namespace;
        let policy = &self.platform.namespaces;
        self.platform
            .cluster
            .ensure_namespace(namespace, |existing| {
                policy.labels_to_add(namespace, existing, self.target, extra)
            })
            .await?
            .map_err(|refused| TaskError::Failed(refused.to_string()))
    }

    /// `carts in stage dev of project shop`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} in stage {} of project {}",
            self.target.service, self.target.stage, self.target.project
        )
    }

    /// Every attempt recovers releases a killed helm left pending (a redelivery after a
    /// crash mid-upgrade finds one whether or not its plan was recorded), then `plan` runs
    /// once on the recovered histories: its output is the recorded step `plan`, which a
    /// redelivered event reads back.
    pub async fn plan_once<T, F, Fut>(&self, steps: &mut Steps<'_>, plan: F) -> Result<T, TaskError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(ReleaseHistories) -> Fut,
        Fut: Future<Output = Result<T, TaskError>>,
    {
        let histories = self.recovered_histories().await?;
        steps.step("plan", || plan(histories)).await
    }

    /// What is deployed: the latest revision of each release in `histories` (see
    /// [`DeployedService::recovered_histories`]), read from Helm's storage.
    pub async fn observe(&self, histories: &ReleaseHistories) -> Result<Deployed, TaskError> {
        let Some(latest) = self.latest(&self.names.user, &histories.user).await? else {
            return Ok(Deployed::Nothing);
        };
        let user = self.user_release(latest).await?;
        let generated = self
            .latest(&self.names.generated, &histories.generated)
            .await?;
        let Some(generated) = generated else {
            return Ok(Deployed::Plain {
                strategy: DeploymentStrategy::UserManaged,
                user,
            });
        };
        Ok(
            match generated_model_of(&self.names.generated, generated.config)? {
                GeneratedModel::BlueGreen(model) => Deployed::BlueGreen {
                    generated_revision: generated.revision,
                    model: Box::new(model),
                    user,
                },
                GeneratedModel::Mesh(_) => Deployed::Plain {
                    strategy: DeploymentStrategy::Direct,
                    user,
                },
            },
        )
    }

    /// The newest revision of `history` (of `release`) with its body; `None` when the
    /// release has none.
    async fn latest(
        &self,
        release: &str,
        history: &[StoredRevision],
    ) -> Result<Option<StoredRelease>, TaskError> {
        let Some(latest) = history.last() else {
            return Ok(None);
        };
        Ok(self
            .platform
            .cluster
            .stored_release(&self.names.namespace, release, latest.revision)
            .await?)
    }

    async fn user_release(&self, latest: StoredRelease) -> Result<UserRelease, TaskError> {
        let replica_override = ReplicaOverride::of(&latest.config);
        let source = match &replica_override {
            Some(marker) => self.user_source(marker.source_revision).await?,
            None => UserSource::parse(&self.names.user, &latest)?,
        };
        Ok(UserRelease {
            source,
            replica_override,
        })
    }

    /// Revision `revision` of the user release, which a recorded plan relies on.
    async fn user_source(&self, revision: u32) -> Result<UserSource, TaskError> {
        let (namespace, release) = (&self.names.namespace, &self.names.user);
        let stored = self
            .platform
            .stored_revision(namespace, release, revision)
            .await?;
        UserSource::parse(release, &stored)
    }

    /// The blue/green state a release or rollback decides on.
    pub fn blue_green_state(
        &self,
        model: &BlueGreenModel,
        user: &UserRelease,
    ) -> Result<BlueGreenState, TaskError> {
        let deployment = user.source.main_deployment(&self.target.service)?;
        let canary_weight = model.routing.traffic.canary_weight(
            model.canary_weight,
            user.replica_override
                .as_ref()
                .is_some_and(|o| o.selects_primary),
        );
        Ok(BlueGreenState {
            canary_weight,
            primary_is_current: model.primary_source == generated::detached(deployment),
            canary_running: !user
                .replica_override
                .as_ref()
                .is_some_and(ReplicaOverride::is_scaled_to_zero),
            canary_deployments: user.source.manifest.deployment_names(),
        })
    }

    /// Runs each action of `plan` as a recorded step; a redelivered event skips the ones
    /// recorded before, and every action is computed from the plan alone.
    pub async fn run_plan(&self, plan: &Plan, steps: &mut Steps<'_>) -> Result<(), TaskError> {
        info!(steps = ?plan.step_names(), "running the plan");
        for index in 0..plan.actions.len() {
            let action = &plan.actions[index];
            steps
                .step(action.step_name(), || self.execute(plan, index))
                .await?;
        }
        Ok(())
    }

    /// The histories of both releases in Helm's storage (one metadata LIST each), after
    /// recovering either release a killed helm left pending (then they are read again).
    /// Tasks call it while holding the release's lease, so nothing else changes the
    /// releases until they are done.
    pub async fn recovered_histories(&self) -> Result<ReleaseHistories, TaskError> {
        let histories = self.release_histories().await?;
        if self.recover_pending(&histories).await? {
            return self.release_histories().await;
        }
        Ok(histories)
    }

    /// Refused when the latest revision of either release says it belongs to another
    /// service (see [`ownership::check_release`]): nothing is recovered or changed then.
    async fn release_histories(&self) -> Result<ReleaseHistories, TaskError> {
        let cluster = &self.platform.cluster;
        let namespace = &self.names.namespace;
        let histories = ReleaseHistories {
            user: cluster
                .release_revisions(namespace, &self.names.user)
                .await?,
            generated: cluster
                .release_revisions(namespace, &self.names.generated)
                .await?,
        };
        for (release, history) in [
            (&self.names.user, &histories.user),
            (&self.names.generated, &histories.generated),
        ] {
            let latest = history.last().map(|revision| &revision.labels);
            ownership::check_release(&self.names, release, latest, self.target)
                .map_err(|refused| TaskError::Failed(refused.to_string()))?;
        }
        Ok(histories)
    }

    /// Recovers either release when a killed helm left it pending; whether anything was
    /// recovered.
    async fn recover_pending(&self, histories: &ReleaseHistories) -> Result<bool, TaskError> {
        let namespace = &self.names.namespace;
        let user = self
            .platform
            .recover_pending(namespace, &self.names.user, &histories.user)
            .await?;
        let generated = self
            .platform
            .recover_pending(namespace, &self.names.generated, &histories.generated)
            .await?;
        Ok(user || generated)
    }

    /// Waits (with watches) until `deployments` are rolled out; see
    /// [`DeployedService::wait_until_ready`].
    pub async fn wait_for_rollout(&self, deployments: &[String]) -> Result<(), RolloutFailure> {
        let awaited: Vec<Awaited> = deployments.iter().map(|d| Awaited::deployment(d)).collect();
        self.wait_until_ready(&awaited).await
    }

    /// Waits (with watches) until `awaited` are ready, with the stage's rollout deadline and
    /// fail-fast setting.
    pub async fn wait_until_ready(&self, awaited: &[Awaited]) -> Result<(), RolloutFailure> {
        let limits = WaitLimits {
            deadline: self.deadlines.rollout,
            fail_fast_after: self.deadlines.fail_fast_after,
        };
        self.platform
            .wait_until_ready(&self.names.namespace, awaited, limits)
            .await
    }

    /// One `helm upgrade --install` of `release` as every task runs it: helm neither waits
    /// nor rolls back on its own, because the tasks watch rollouts themselves and decide what
    /// a failure undoes; the stage's helm deadline bounds the call. `description` is what
    /// `helm history` shows for the new revision.
    pub async fn upgrade(
        &self,
        release: &str,
        chart_dir: &std::path::Path,
        values: &Value,
        description: Option<&str>,
    ) -> Result<ReleaseStatus, HelmError> {
        let labels = ownership::release_labels(self.target);
        self.platform
            .helm
            .upgrade_install(&UpgradeRequest {
                timeout: Some(self.deadlines.helm),
                description,
                labels: Some(&labels),
                ..UpgradeRequest::new(release, &self.names.namespace, chart_dir, values)
            })
            .await
    }

    /// What [`DeployedService::upgrade`] of `release` to the chart at `chart_dir` (of
    /// `chart_bytes` bytes) would deploy, rendered by helm against the cluster and applied
    /// nowhere.
    pub async fn render(
        &self,
        release: &str,
        chart_dir: &std::path::Path,
        chart_bytes: usize,
        values: &Value,
    ) -> Result<RenderedRelease, HelmError> {
        let req = UpgradeRequest {
            timeout: Some(self.deadlines.helm),
            ..UpgradeRequest::new(release, &self.names.namespace, chart_dir, values)
        };
        self.platform.helm.render_upgrade(&req, chart_bytes).await
    }

    /// What the user's chart rendered for the user release's latest revision (see
    /// `replicas::chart_rendering`), read from Helm's storage.
    pub async fn latest_chart_rendering(&self) -> Result<Manifest, TaskError> {
        let latest = self.latest_user_revision().await?;
        Ok(UserSource::parse(&self.names.user, &latest)?.manifest)
    }

    /// The user release's latest revision as Helm's storage holds it now (read afresh: the
    /// task itself may have written it); an error when the release is gone.
    async fn latest_user_revision(&self) -> Result<StoredRelease, TaskError> {
        let (namespace, release) = (&self.names.namespace, &self.names.user);
        let history = self
            .platform
            .cluster
            .release_revisions(namespace, release)
            .await?;
        let latest = self.latest(release, &history).await?.ok_or_else(|| {
            TaskError::Failed(format!(
                "release {release} in namespace {namespace} is gone: it was removed while being deployed"
            ))
        })?;
        Ok(latest)
    }

    /// helm-service's override of the user release in its latest revision (of `histories`),
    /// if that revision is one.
    pub async fn latest_user_override(
        &self,
        histories: &ReleaseHistories,
    ) -> Result<Option<ReplicaOverride>, TaskError> {
        let latest = self.latest(&self.names.user, &histories.user).await?;
        Ok(latest.and_then(|latest| ReplicaOverride::of(&latest.config)))
    }

    /// The model revision `revision` of the generated release was upgraded with (its values
    /// record it), read from Helm's storage.
    pub async fn generated_model(&self, revision: u32) -> Result<GeneratedModel, TaskError> {
        let (namespace, release) = (&self.names.namespace, &self.names.generated);
        let stored = self
            .platform
            .stored_revision(namespace, release, revision)
            .await?;
        generated_model_of(release, stored.config)
    }

    /// Upgrades the generated release to `model`: the generated chart, with the model and
    /// what it renders as values. Which model is the caller's decision (a deployment's
    /// routing, a plan's actions); the revision written is returned.
    pub async fn upgrade_generated(
        &self,
        model: GeneratedModel,
        description: Option<&str>,
    ) -> Result<u32, TaskError> {
        let release = &self.names.generated;
        let keptn = KeptnValues::of(self.target, "primary");
        let values =
            GeneratedValues::new(keptn, model).map_err(|err| TaskError::Failed(err.to_string()))?;
        let dir = private_dir()?;
        let chart_dir = generated::write_chart(dir.path(), release)
            .map_err(|err| TaskError::Transient(format!("writing the generated chart: {err}")))?;
        let status = self
            .upgrade(release, &chart_dir, &values.to_value(), description)
            .await?;
        Ok(status.revision)
    }

    /// Action `index` of `plan`: the generated release upgraded with the base model and the
    /// actions up to this one applied, or the user release re-deployed with replicas.
    async fn execute(&self, plan: &Plan, index: usize) -> Result<u32, TaskError> {
        let action = &plan.actions[index];
        info!(step = action.step_name(), "{}", action.describe());
        if action.on_user_release(plan.traffic) {
            let source = plan.user_source_revision.ok_or_else(|| {
                TaskError::Failed(
                    "internal error: a plan changing the user release without a user revision"
                        .into(),
                )
            })?;
            return self.upgrade_user_override(plan, index, source).await;
        }
        self.apply_to_generated(plan, index).await
    }

    /// The generated release upgraded with the plan's base model and its actions up to
    /// `index` applied.
    async fn apply_to_generated(&self, plan: &Plan, index: usize) -> Result<u32, TaskError> {
        let release = &self.names.generated;
        let internal = |what: &str| TaskError::Failed(format!("internal error: {what}"));
        let base_revision = plan
            .generated_revision
            .ok_or_else(|| internal("a blue/green plan without a generated revision"))?;
        let base = self.generated_model(base_revision).await?;
        let GeneratedModel::BlueGreen(mut model) = base else {
            return Err(TaskError::Failed(format!(
                "release {release} holds no blue/green objects (revision {base_revision})"
            )));
        };
        let applied = &plan.actions[..=index];
        let (user_deployment, user_hpa) = if applied.contains(&Action::UpdatePrimary) {
            let source = plan
                .user_source_revision
                .ok_or_else(|| internal("a promotion without a user revision"))?;
            let source = self.user_source(source).await?;
            let deployment = source.main_deployment(&self.target.service)?.clone();
            let hpa = name_of(&deployment)
                .and_then(|name| autoscaling::hpa_of(&source.manifest.objects, name))
                .cloned();
            (deployment, hpa)
        } else {
            (Value::Null, None)
        };
        for action in applied.iter().filter(|a| !a.on_user_release(plan.traffic)) {
            action.apply(&mut model, &user_deployment, user_hpa.as_ref());
        }
        let primary = model
            .primary_deployment()
            .map_err(|err| TaskError::Failed(err.to_string()))?;
        let action = &plan.actions[index];
        let description = self.description(action);
        let revision = self
            .upgrade_generated(GeneratedModel::BlueGreen(model), Some(&description))
            .await?;
        let waits = match action {
            Action::UpdatePrimary => true,
            Action::ScalePrimary { replicas } => *replicas > 0,
            _ => false,
        };
        if waits {
            self.wait_for_rollout(&[primary]).await.map_err(|err| match TaskError::from(err) {
                TaskError::Failed(why) if *action == Action::UpdatePrimary => TaskError::Failed(
                    format!("the primary did not roll out the canary's version: {why}; traffic stays where it was (on the canary after a blue/green deployment), fix the cause and release again"),
                ),
                other => other,
            })?;
        }
        Ok(revision)
    }

    /// The user release re-deployed from its source revision as user-release action
    /// `index` of `plan` leaves it (replicas, and with the `service` layer the Service's
    /// selector: `Plan::user_override_at`), with the source's tests and deletion hooks
    /// (`replicas::LASTING_HOOK_EVENTS`); waits for the Deployments it runs.
    async fn upgrade_user_override(
        &self,
        plan: &Plan,
        index: usize,
        source_revision: u32,
    ) -> Result<u32, TaskError> {
        let action = &plan.actions[index];
        let marker = plan.user_override_at(index, source_revision);
        let (namespace, release) = (&self.names.namespace, &self.names.user);
        let source = self
            .platform
            .stored_revision(namespace, release, source_revision)
            .await?;
        let manifest =
            replicas::chart_rendering(release, source_revision, &source.manifest, &source.config)
                .and_then(|rendering| {
                    let hooks = source
                        .hooks
                        .iter()
                        .map(|hook| (hook.events.as_slice(), hook.manifest.as_str()));
                    replicas::with_override(release, rendering, &marker, hooks)
                })
                .map_err(|err| TaskError::Failed(err.to_string()))?;
        let values = replicas::override_values(&marker, manifest, &source.config);
        let dir = private_dir()?;
        let chart_dir = replicas::write_chart(
            dir.path(),
            (
                &source.chart_name,
                &source.chart_version,
                &source.app_version,
            ),
        )
        .map_err(|err| TaskError::Transient(format!("writing the override chart: {err}")))?;
        let description = self.description(action);
        let revision = self
            .upgrade(release, &chart_dir, &values, Some(&description))
            .await?
            .revision;
        // Only a scaling action waits: a selector switch starts no pods.
        let Action::ScaleUser { replicas } = action else {
            return Ok(revision);
        };
        let running: Vec<String> = replicas
            .iter()
            .filter(|(_, &count)| count > 0)
            .map(|(name, _)| name.clone())
            .collect();
        if !running.is_empty() {
            self.wait_for_rollout(&running).await?;
        }
        Ok(revision)
    }

    /// With the `service` layer: the user release's Services switched to the canary when
    /// its latest revision selects the primary (a deployment held on the primary,
    /// `replicas::held_on_primary`), as the override of that revision's source with the
    /// selector back. Returns the user release's latest revision afterwards; a switch made
    /// and deployed before (a redelivered event) is not made again, one that failed is.
    pub async fn switch_to_canary(&self) -> Result<u32, TaskError> {
        let latest = self.latest_user_revision().await?;
        let switched = |marker: &ReplicaOverride| {
            !marker.selects_primary && latest.status == ReleaseState::Deployed.as_str()
        };
        let Some(marker) = ReplicaOverride::of(&latest.config).filter(|m| !switched(m)) else {
            return Ok(latest.revision);
        };
        let source = marker.source_revision;
        let plan = Plan {
            generated_revision: None,
            user_source_revision: Some(source),
            actions: vec![Action::RouteTraffic { canary_weight: 100 }],
            traffic: TrafficLayer::Service,
            user_override: Some(marker),
        };
        self.upgrade_user_override(&plan, 0, source).await
    }

    /// The user release rolled back to revision `to` (`helm rollback`, a new revision with
    /// its manifest and values), then waited for like a deployment: everything of that
    /// revision that has a readiness. Returns the revision written.
    pub async fn roll_back_user(&self, to: u32) -> Result<u32, TaskError> {
        let (namespace, release) = (&self.names.namespace, &self.names.user);
        info!(release = %release, to, "rolling the user release back");
        self.platform
            .helm
            .rollback(release, namespace, to, None)
            .await?;
        let target = self.user_source(to).await?;
        let awaited = crate::cluster::readiness::awaited_in(&target.manifest.objects);
        self.wait_until_ready(&awaited).await?;
        let written = self
            .platform
            .cluster
            .release_revisions(namespace, release)
            .await?
            .last()
            .map_or(to, |latest| latest.revision);
        Ok(written)
    }

    /// What `helm history` shows for a revision written by `action`: helm-service, what it
    /// did and the event that asked for it.
    fn description(&self, action: &Action) -> String {
        format!("helm-service: {} ({})", action.describe(), self.cause)
    }
}

/// The model recorded in the values of the generated release `release`.
fn generated_model_of(release: &str, values: Value) -> Result<GeneratedModel, TaskError> {
    GeneratedValues::from_release_values(values)
        .map(|values| values.model)
        .map_err(|err| TaskError::Failed(format!("release {release}: {err}")))
}

/// The revisions Helm keeps of the user and the generated release, oldest first.
pub(super) struct ReleaseHistories {
    pub user: Vec<StoredRevision>,
    pub generated: Vec<StoredRevision>,
}

impl ReleaseHistories {
    /// The newest revision of the user release that was ever fully deployed: where a
    /// failed upgrade goes back to.
    pub fn user_last_good(&self) -> Option<u32> {
        self.user
            .iter()
            .filter(|r| r.status == "deployed" || r.status == "superseded")
            .map(|r| r.revision)
            .max()
    }

    /// The generated release's newest revision, when it exists.
    pub fn generated_latest(&self) -> Option<u32> {
        self.generated.last().map(|r| r.revision)
    }
}
