//! `release.triggered` and `rollback.triggered`: promote or roll back a blue/green service.
//!
//! Both observe the service, record a plan (the actions the observed state still needs)
//! and run it step by step through `DeployedService::run_plan`. `direct` and
//! `user_managed` services have nothing to release: the task says so and changes nothing,
//! unless `--rollback-non-bluegreen` is on: then a rollback or a failed release puts their
//! user release back to the revision before the current deployment's (recorded decision
//! `plan`, then step `roll-back-user`).

use std::sync::Arc;

use async_trait::async_trait;
use contracts::data::{DeploymentStrategy, TaskResult};
use serde::{Deserialize, Serialize};

use super::deployed_service::{Deployed, DeployedService, ReleaseHistories};
use super::platform::Platform;
use super::{Decision, Outcome, Steps, TaskError, TaskHandler};
use crate::deploy::plan::{self, Plan, UserRollback};
use crate::pipeline::intake::{Task, TaskPayload};

/// What a blue/green task does to the canary's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    /// The canary's version becomes the primary.
    Promote,
    /// The primary stays; traffic goes back to it.
    RollBack,
}

impl Intent {
    fn verb(self) -> &'static str {
        match self {
            Intent::Promote => "promote",
            Intent::RollBack => "roll back",
        }
    }
}

/// The recorded plan of a release or rollback (step `plan`): a plan, or why there is none.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BlueGreenPlanOutput {
    plan: Option<Plan>,
    note: String,
    /// The rollback of a `direct` or `user_managed` service (`--rollback-non-bluegreen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_rollback: Option<UserRollback>,
}

/// What a task does to a service deployed without blue/green.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NonBlueGreen {
    /// Nothing (the reference's behaviour).
    Unchanged,
    /// Its user release goes back to the revision before the current deployment's.
    RollBack,
}

/// The `release.triggered` handler.
pub struct ReleaseHandler {
    platform: Arc<Platform>,
}

impl ReleaseHandler {
    pub fn new(platform: Arc<Platform>) -> Self {
        ReleaseHandler { platform }
    }
}

#[async_trait]
impl TaskHandler for ReleaseHandler {
    fn decide(&self, task: &Task) -> Decision {
        if task.payload.common().result.is_none() {
            return Decision::Refuse {
                message: "release.triggered carries no result: it needs the evaluation's verdict \
                          (pass or warning to promote, fail to roll back) in data.result"
                    .into(),
            };
        }
        Decision::Accept
    }

    async fn run(&self, task: &Task, steps: &mut Steps<'_>) -> Result<Outcome, TaskError> {
        let TaskPayload::Release { strategy, .. } = &task.payload else {
            return Err(TaskError::misrouted("the release handler", task));
        };
        let result = task.payload.common().result.unwrap_or(TaskResult::Fail);
        let service = DeployedService::located(&self.platform, task).await?;
        if *strategy != DeploymentStrategy::BlueGreenService
            && result == TaskResult::Fail
            && self.platform.settings.rollback_non_blue_green
        {
            let message = blue_green(
                &service,
                Intent::RollBack,
                false,
                NonBlueGreen::RollBack,
                steps,
            )
            .await?;
            return Ok(Outcome::succeeded(result, message));
        }
        if *strategy != DeploymentStrategy::BlueGreenService {
            return Ok(Outcome::succeeded(
                result,
                format!(
                    "{} is deployed with {}: a release changes nothing",
                    service.describe(),
                    strategy.as_str()
                ),
            ));
        }
        let intent = match result {
            TaskResult::Pass | TaskResult::Warning => Intent::Promote,
            TaskResult::Fail => Intent::RollBack,
        };
        let message = blue_green(&service, intent, true, NonBlueGreen::Unchanged, steps).await?;
        Ok(Outcome::succeeded(result, message))
    }
}

/// The `rollback.triggered` handler.
pub struct RollbackHandler {
    platform: Arc<Platform>,
}

impl RollbackHandler {
    pub fn new(platform: Arc<Platform>) -> Self {
        RollbackHandler { platform }
    }
}

#[async_trait]
impl TaskHandler for RollbackHandler {
    async fn run(&self, task: &Task, steps: &mut Steps<'_>) -> Result<Outcome, TaskError> {
        if !matches!(task.payload, TaskPayload::Rollback { .. }) {
            return Err(TaskError::misrouted("the rollback handler", task));
        }
        let service = DeployedService::located(&self.platform, task).await?;
        let plain = if self.platform.settings.rollback_non_blue_green {
            NonBlueGreen::RollBack
        } else {
            NonBlueGreen::Unchanged
        };
        let message = blue_green(&service, Intent::RollBack, false, plain, steps).await?;
        Ok(Outcome::succeeded(TaskResult::Pass, message))
    }
}

/// Decides (recorded step `plan`) and runs the promotion or rollback; the message says
/// what was done. `required`: the event said blue/green, so a service deployed otherwise
/// is an error rather than nothing to do; else `plain` says what happens to it.
async fn blue_green(
    service: &DeployedService<'_>,
    intent: Intent,
    required: bool,
    plain: NonBlueGreen,
    steps: &mut Steps<'_>,
) -> Result<String, TaskError> {
    let planned: BlueGreenPlanOutput = service
        .plan_once(steps, |histories| {
            plan_blue_green(service, histories, intent, required, plain)
        })
        .await?;
    if let Some(UserRollback::To { to, .. }) = planned.user_rollback {
        let revision: u32 = steps
            .step("roll-back-user", || service.roll_back_user(to))
            .await?;
        return Ok(format!("{} (as revision {revision})", planned.note));
    }
    let Some(plan) = planned.plan else {
        return Ok(planned.note);
    };
    service.run_plan(&plan, steps).await?;
    if plan.actions.is_empty() {
        return Ok(planned.note);
    }
    Ok(format!(
        "{} ({})",
        planned.note,
        plan.step_names().join(", ")
    ))
}

/// Observes the service in Helm's storage and plans the promotion or rollback: the actions
/// the observed state still needs, or why there are none.
async fn plan_blue_green(
    service: &DeployedService<'_>,
    histories: ReleaseHistories,
    intent: Intent,
    required: bool,
    plain: NonBlueGreen,
) -> Result<BlueGreenPlanOutput, TaskError> {
    let who = service.describe();
    let observed = service.observe(&histories).await?;
    if plain == NonBlueGreen::RollBack && !required {
        if let Deployed::Plain { strategy, .. } = &observed {
            return plan_user_rollback(service, &histories, *strategy).await;
        }
    }
    let (generated_revision, model, user) = match observed {
        Deployed::BlueGreen {
            generated_revision,
            model,
            user,
        } => (generated_revision, model, user),
        Deployed::Nothing if required => {
            return Err(TaskError::Failed(format!(
                "cannot {} {who}: it is not deployed (no release {} in namespace {}); deploy it with blue_green_service first",
                intent.verb(),
                service.names.user,
                service.names.namespace
            )))
        }
        Deployed::Nothing => {
            return Ok(BlueGreenPlanOutput {
                plan: None,
                note: format!("{who} is not deployed: nothing to roll back"),
                user_rollback: None,
            })
        }
        other => {
            let strategy = other.strategy().map_or("none", DeploymentStrategy::as_str);
            if required {
                return Err(TaskError::Failed(format!(
                    "cannot {} {who}: the event says blue_green_service but the service is deployed with {strategy} (no blue/green release {}); deploy it with blue_green_service first",
                    intent.verb(),
                    service.names.generated
                )));
            }
            return Ok(BlueGreenPlanOutput {
                plan: None,
                note: format!(
                    "{who} is deployed with {strategy}: only blue_green_service deployments are rolled back, nothing changed"
                ),
                user_rollback: None,
            });
        }
    };
    let state = service.blue_green_state(&model, &user)?;
    let actions = match intent {
        Intent::Promote => plan::promote(&state),
        Intent::RollBack => plan::roll_back(&state),
    };
    let note = match (intent, actions.is_empty()) {
        (Intent::Promote, true) => {
            format!("{who} is already promoted: the primary runs the canary's version and takes all traffic")
        }
        (Intent::RollBack, true) => {
            format!("{who} is already rolled back: the primary takes all traffic and the canary is scaled to 0")
        }
        (Intent::Promote, false) => format!(
            "promoted {who}: the primary runs the canary's version and takes 100% of traffic, the canary is scaled to 0"
        ),
        (Intent::RollBack, false) => format!(
            "rolled back {who}: the primary (previous version) takes 100% of traffic, the canary is scaled to 0"
        ),
    };
    Ok(BlueGreenPlanOutput {
        plan: Some(Plan {
            generated_revision: Some(generated_revision),
            user_source_revision: Some(user.source.revision),
            actions,
            traffic: model.routing.traffic,
            user_override: user.replica_override.clone(),
        }),
        note,
        user_rollback: None,
    })
}

/// Decides the rollback of a `direct` or `user_managed` service: its user release back to
/// the revision before the one its last deployment wrote (the inventory's), unless the
/// latest revision is that rollback already.
async fn plan_user_rollback(
    service: &DeployedService<'_>,
    histories: &ReleaseHistories,
    strategy: DeploymentStrategy,
) -> Result<BlueGreenPlanOutput, TaskError> {
    let who = service.describe();
    let release = &service.names.user;
    let entry = service.platform.inventory.get(service.target).await?;
    let deployed = entry
        .filter(|entry| {
            &entry.user_release == release && entry.namespace == service.names.namespace
        })
        .map(|entry| entry.user_revision);
    let latest_description = match histories.user.last() {
        Some(latest) => service
            .platform
            .stored_revision(&service.names.namespace, release, latest.revision)
            .await
            .map(|stored| stored.description)
            .ok(),
        None => None,
    };
    let history: Vec<(u32, &str)> = histories
        .user
        .iter()
        .map(|r| (r.revision, r.status.as_str()))
        .collect();
    let decision = plan::user_rollback(&history, deployed, latest_description.as_deref());
    let note = match &decision {
        None => format!("{who} ({}) has no good revision of release {release}: nothing to roll back", strategy.as_str()),
        Some(UserRollback::NothingEarlier { deployed }) => format!(
            "{who} ({}) has no revision of release {release} before revision {deployed}, its current deployment: nothing to roll back to",
            strategy.as_str()
        ),
        Some(UserRollback::Done { to }) => format!(
            "{who} ({}) is already rolled back: release {release} runs revision {to} again",
            strategy.as_str()
        ),
        Some(UserRollback::To { to, deployed }) => format!(
            "rolled back {who} ({}): release {release} went back from revision {deployed} to revision {to}",
            strategy.as_str()
        ),
    };
    Ok(BlueGreenPlanOutput {
        plan: None,
        note,
        user_rollback: decision,
    })
}
