//! `action.triggered` with `scaling`: the remediation that adds `action.value` replicas.
//!
//! Blue/green services scale their primary (the generated release); `direct` and
//! `user_managed` services scale the user release's Deployment through a replica override.
//! The target count is decided once and recorded (step `plan`), so a redelivered event
//! never adds the value twice; applying it is one Helm upgrade.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use contracts::data::TaskResult;
use serde::{Deserialize, Serialize};

use super::deployed_service::{Deployed, DeployedService, ReleaseHistories};
use super::platform::Platform;
use super::{Decision, Outcome, Steps, TaskError, TaskHandler};
use crate::deploy::autoscaling;
use crate::deploy::manifest::name_of;
use crate::deploy::plan::{self, Action, Plan, Scaling};
use crate::pipeline::intake::{is_foreign_action, Task, TaskPayload};

/// The recorded plan of a scaling action (step `plan`), with the message that reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ScalingPlanOutput {
    plan: Plan,
    note: String,
}

/// The `action.triggered` handler (scaling only).
pub struct ActionHandler {
    platform: Arc<Platform>,
}

impl ActionHandler {
    pub fn new(platform: Arc<Platform>) -> Self {
        ActionHandler { platform }
    }
}

#[async_trait]
impl TaskHandler for ActionHandler {
    fn decide(&self, task: &Task) -> Decision {
        match &task.payload {
            TaskPayload::Action { data, .. } if !is_foreign_action(data) => Decision::Accept,
            _ => Decision::Decline {
                reason: "foreign-action",
            },
        }
    }

    async fn run(&self, task: &Task, steps: &mut Steps<'_>) -> Result<Outcome, TaskError> {
        let TaskPayload::Action { data, .. } = &task.payload else {
            return Err(TaskError::misrouted("the action handler", task));
        };
        let value = data.action.as_ref().and_then(|a| a.value.as_ref());
        let delta = match plan::scaling_delta(value) {
            Ok(delta) => delta,
            // The action ran and could not do what was asked: succeeded, fail, as the
            // reference answered it (docs/architecture.md §6.3).
            Err(why) => return Ok(Outcome::succeeded(TaskResult::Fail, why)),
        };
        let service = DeployedService::located(&self.platform, task).await?;
        let planned: ScalingPlanOutput = service
            .plan_once(steps, |histories| plan_scaling(&service, histories, delta))
            .await?;
        service.run_plan(&planned.plan, steps).await?;
        Ok(Outcome::succeeded(TaskResult::Pass, planned.note))
    }
}

/// Observes the service in Helm's storage and plans the scaling: the target count, and
/// the action that reaches it (none when it is already there).
async fn plan_scaling(
    service: &DeployedService<'_>,
    histories: ReleaseHistories,
    delta: i64,
) -> Result<ScalingPlanOutput, TaskError> {
    let max = service.platform.settings.scaling_max_replicas;
    let who = service.describe();
    let (plan, target, scaling, hpa) = match service.observe(&histories).await? {
        Deployed::Nothing => {
            return Err(TaskError::Failed(format!(
                "cannot scale {who}: it is not deployed (no release {} in namespace {})",
                service.names.user, service.names.namespace
            )))
        }
        Deployed::BlueGreen {
            generated_revision,
            model,
            user,
        } => {
            let primary = model
                .primary_deployment()
                .map_err(|err| TaskError::Failed(err.to_string()))?;
            let scaling = plan::scale(plan::declared_replicas(&model.primary_source), delta, max);
            let actions = if scaling.to == scaling.from {
                Vec::new()
            } else {
                vec![Action::ScalePrimary {
                    replicas: scaling.to,
                }]
            };
            let plan = Plan {
                generated_revision: Some(generated_revision),
                user_source_revision: Some(user.source.revision),
                actions,
                traffic: model.routing.traffic,
                user_override: user.replica_override.clone(),
            };
            let hpa = model
                .primary_hpa()
                .map_err(|err| TaskError::Failed(err.to_string()))?;
            (plan, primary, scaling, hpa)
        }
        Deployed::Plain { user, .. } => {
            let deployment = user.source.main_deployment(&service.target.service)?;
            let name = name_of(deployment).unwrap_or_default().to_owned();
            let scaling = plan::scale(user.replicas_of(&name, deployment), delta, max);
            let actions = if scaling.to == scaling.from {
                Vec::new()
            } else {
                vec![Action::ScaleUser {
                    replicas: BTreeMap::from([(name.clone(), scaling.to)]),
                }]
            };
            let plan = Plan {
                generated_revision: None,
                user_source_revision: Some(user.source.revision),
                actions,
                traffic: Default::default(),
                user_override: user.replica_override.clone(),
            };
            let hpa = autoscaling::hpa_of(&user.source.manifest.objects, &name).cloned();
            (plan, name, scaling, hpa)
        }
    };
    let mut note = describe(&who, &target, &scaling);
    // The HPA is settled in the same revision (`deploy::autoscaling`); say how.
    if let Some(hpa) = hpa.filter(|_| scaling.to != scaling.from) {
        note.push_str(&format!("; {}", autoscaling::describe(&hpa, scaling.to)));
    }
    Ok(ScalingPlanOutput { plan, note })
}

fn describe(who: &str, deployment: &str, scaling: &Scaling) -> String {
    let Scaling { from, to, limited } = scaling;
    let mut note = if from == to {
        format!("{who}: Deployment {deployment} stays at {to} replicas")
    } else {
        format!("scaled {who}: Deployment {deployment} from {from} to {to} replicas")
    };
    if let Some(limited) = limited {
        note.push_str(&format!(" ({limited})"));
    }
    note
}
