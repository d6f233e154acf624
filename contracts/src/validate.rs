//! Turning a decoded payload into work the worker may act on.
//!
//! Serde accepts payloads with missing task blocks and unchecked names on purpose (see
//! [`crate::data`]); this module decides what each task needs. It returns the checked values
//! (names that passed [`validate_keptn_name`], a parsed [`DeploymentStrategy`]), so the worker
//! never builds a namespace, release name or path from an unchecked string, and its errors are
//! the message of the `errored`/`fail` finished event.

use crate::data::{
    ActionInfo, ActionTriggeredData, CommonData, DeploymentStrategy, DeploymentTriggeredData,
    ReleaseTriggeredData, RollbackTriggeredData, ServiceDeleteData, StrategyError,
};
use crate::names::{self, validate_keptn_name, NameError, NameKind};

/// Why a payload cannot be acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A project, stage or service name is missing or invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A block or field the task needs is absent.
    #[error("data.{field} is missing: {why}")]
    Missing {
        /// Path inside `data`, e.g. `deployment`.
        field: &'static str,
        /// What the field is needed for.
        why: &'static str,
    },
    /// The deployment strategy is missing or unknown.
    #[error("data.{field}: {source}")]
    Strategy {
        /// Path inside `data`, e.g. `deployment.deploymentstrategy`.
        field: &'static str,
        /// The parse error, which lists the accepted values.
        source: StrategyError,
    },
}

/// A checked project/stage/service triple.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Valid Keptn project name.
    pub project: String,
    /// Valid Keptn stage name.
    pub stage: String,
    /// Valid Keptn service name.
    pub service: String,
}

impl Target {
    /// The Kubernetes namespace `<project>-<stage>` (its length was checked).
    pub fn namespace(&self) -> String {
        format!("{}-{}", self.project, self.stage)
    }
}

/// A checked project/service pair with an optional stage, for service deletion.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceRef {
    /// Valid Keptn project name.
    pub project: String,
    /// Valid Keptn stage name, when the event names one.
    pub stage: Option<String>,
    /// Valid Keptn service name.
    pub service: String,
}

/// What a deployment or release needs: where, and with which strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentTask {
    /// Where.
    pub target: Target,
    /// How.
    pub strategy: DeploymentStrategy,
}

/// What an action needs: where, and the action block.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionTask {
    /// Where.
    pub target: Target,
    /// The action, whose `action` is non-empty.
    pub action: ActionInfo,
}

fn name(kind: NameKind, value: &Option<String>) -> Result<String, NameError> {
    let value = value.as_deref().unwrap_or_default();
    validate_keptn_name(kind, value)?;
    Ok(value.to_owned())
}

impl CommonData {
    /// Checks project, stage and service, and that `<project>-<stage>` fits a namespace.
    pub fn target(&self) -> Result<Target, ValidationError> {
        let project = name(NameKind::Project, &self.project)?;
        let stage = name(NameKind::Stage, &self.stage)?;
        let service = name(NameKind::Service, &self.service)?;
        names::namespace(&project, &stage)?;
        Ok(Target {
            project,
            stage,
            service,
        })
    }
}

fn strategy(
    field: &'static str,
    parsed: Result<DeploymentStrategy, StrategyError>,
) -> Result<DeploymentStrategy, ValidationError> {
    parsed.map_err(|source| ValidationError::Strategy { field, source })
}

impl DeploymentTriggeredData {
    /// Requires valid names and a `deployment` block with a known strategy.
    /// `configurationChange` is optional (absent means "nothing to merge").
    pub fn validate(&self) -> Result<DeploymentTask, ValidationError> {
        let target = self.common.target()?;
        let deployment = self.deployment.as_ref().ok_or(ValidationError::Missing {
            field: "deployment",
            why: "a deployment.triggered event must say how to deploy (deploymentstrategy)",
        })?;
        let strategy = strategy("deployment.deploymentstrategy", deployment.strategy())?;
        Ok(DeploymentTask { target, strategy })
    }
}

impl ReleaseTriggeredData {
    /// Read as the data of a release.triggered event: requires valid names and the `deployment` block of the deployment.finished event with a
    /// known strategy. The evaluation verdict stays in `common.result` for the worker to read.
    pub fn validate(&self) -> Result<DeploymentTask, ValidationError> {
        let target = self.common.target()?;
        let deployment = self.deployment.as_ref().ok_or(ValidationError::Missing {
            field: "deployment",
            why: "a release.triggered event must carry the deployment block of the \
                  deployment.finished event (deploymentstrategy)",
        })?;
        let strategy = strategy("deployment.deploymentstrategy", deployment.strategy())?;
        Ok(DeploymentTask { target, strategy })
    }
}

impl RollbackTriggeredData {
    /// Requires valid names; the spec defines no task block for rollback.
    pub fn validate(&self) -> Result<Target, ValidationError> {
        self.common.target()
    }
}

impl ActionTriggeredData {
    /// Requires valid names and an `action` block with a non-empty `action`.
    ///
    /// Whether the action is one helm-service runs (`scaling`) is the worker's decision; check
    /// `action.action` before validating so other integrations' actions are ignored quietly.
    pub fn validate(&self) -> Result<ActionTask, ValidationError> {
        let target = self.common.target()?;
        let action = match &self.action {
            Some(action) if !action.action.is_empty() => action.clone(),
            _ => {
                return Err(ValidationError::Missing {
                    field: "action.action",
                    why: "an action.triggered event must name the action to run (e.g. scaling)",
                })
            }
        };
        Ok(ActionTask { target, action })
    }
}

impl ServiceDeleteData {
    /// Requires valid project and service names; the stage is optional (deletion covers every
    /// stage) but must be valid when present.
    pub fn validate(&self) -> Result<ServiceRef, ValidationError> {
        let project = name(NameKind::Project, &self.common.project)?;
        let service = name(NameKind::Service, &self.common.service)?;
        let stage = match self.common.stage.as_deref() {
            None | Some("") => None,
            Some(stage) => {
                validate_keptn_name(NameKind::Stage, stage)?;
                Some(stage.to_owned())
            }
        };
        Ok(ServiceRef {
            project,
            stage,
            service,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(data: serde_json::Value) -> DeploymentTriggeredData {
        serde_json::from_value(data).unwrap()
    }

    #[test]
    fn deployment_ok() {
        let task = deployment(json!({
            "project": "sockshop", "stage": "dev", "service": "carts",
            "deployment": {"deploymentstrategy": "duplicate"}
        }))
        .validate()
        .unwrap();
        assert_eq!(task.strategy, DeploymentStrategy::BlueGreenService);
        assert_eq!(task.target.namespace(), "sockshop-dev");
        assert_eq!(task.target.service, "carts");
    }

    #[test]
    fn deployment_errors_are_actionable() {
        let err = deployment(json!({"project": "sockshop", "stage": "dev", "service": "carts"}))
            .validate()
            .unwrap_err();
        assert!(matches!(
            err,
            ValidationError::Missing {
                field: "deployment",
                ..
            }
        ));
        assert!(
            err.to_string().starts_with("data.deployment is missing"),
            "{err}"
        );

        let err = deployment(json!({
            "project": "sockshop", "stage": "dev", "service": "carts",
            "deployment": {"deploymentstrategy": "canary"}
        }))
        .validate()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "data.deployment.deploymentstrategy: unknown deployment strategy \"canary\": \
             expected one of direct, blue_green_service (alias duplicate), user_managed"
        );

        let err = deployment(json!({
            "project": "sockshop", "stage": "dev", "service": "Carts_1",
            "deployment": {"deploymentstrategy": "direct"}
        }))
        .validate()
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("service name \"Carts_1\" is invalid"),
            "{err}"
        );

        let err = deployment(json!({"project": "sockshop", "service": "carts"}))
            .validate()
            .unwrap_err();
        assert_eq!(err.to_string(), "stage name is missing");
    }

    #[test]
    fn release_requires_deployment_block() {
        let data: ReleaseTriggeredData = serde_json::from_value(
            json!({"project": "sockshop", "stage": "prod", "service": "carts", "result": "pass"}),
        )
        .unwrap();
        assert!(matches!(
            data.validate(),
            Err(ValidationError::Missing {
                field: "deployment",
                ..
            })
        ));
    }

    #[test]
    fn rollback_checks_names() {
        let data: RollbackTriggeredData =
            serde_json::from_value(json!({"project": "p", "stage": "s", "service": "svc"}))
                .unwrap();
        assert_eq!(data.validate().unwrap().namespace(), "p-s");
        let data: RollbackTriggeredData =
            serde_json::from_value(json!({"project": "p", "stage": "-s", "service": "svc"}))
                .unwrap();
        assert!(data.validate().is_err());
    }

    #[test]
    fn action_requires_action_name() {
        let data: ActionTriggeredData = serde_json::from_value(json!({
            "project": "p", "stage": "s", "service": "svc",
            "action": {"name": "scale", "action": "scaling", "value": "+1"}
        }))
        .unwrap();
        assert_eq!(data.validate().unwrap().action.value, Some(json!("+1")));
        let data: ActionTriggeredData =
            serde_json::from_value(json!({"project": "p", "stage": "s", "service": "svc"}))
                .unwrap();
        assert!(matches!(
            data.validate(),
            Err(ValidationError::Missing {
                field: "action.action",
                ..
            })
        ));
    }

    #[test]
    fn service_delete_stage_is_optional() {
        let data: ServiceDeleteData =
            serde_json::from_value(json!({"project": "p", "service": "svc"})).unwrap();
        assert_eq!(
            data.validate().unwrap(),
            ServiceRef {
                project: "p".into(),
                stage: None,
                service: "svc".into()
            }
        );
        let data: ServiceDeleteData =
            serde_json::from_value(json!({"project": "p", "service": "svc", "stage": "Dev"}))
                .unwrap();
        assert!(data.validate().is_err());
        let data: ServiceDeleteData = serde_json::from_value(json!({"project": "p"})).unwrap();
        assert_eq!(
            data.validate().unwrap_err().to_string(),
            "service name is missing"
        );
    }

    #[test]
    fn namespace_length_is_checked() {
        let data = CommonData {
            project: Some("p".repeat(40)),
            stage: Some("s".repeat(30)),
            service: Some("svc".into()),
            ..CommonData::default()
        };
        assert!(matches!(
            data.target(),
            Err(ValidationError::Name(NameError::NamespaceTooLong { .. }))
        ));
    }
}
