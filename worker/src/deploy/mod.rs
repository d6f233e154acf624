//! The deployment domain: how a Keptn service becomes Helm releases and routing (Istio,
//! Gateway API or plain Services: `traffic`).
//!
//! Pure pieces (names, URIs, manifests, plans, the generated charts) are unit-tested here
//! without Helm or a cluster; the task handlers in `handler` put them together with the
//! chart store, the Helm driver and the cluster client. The exception is `inventory`,
//! which reads and writes its JetStream KV bucket itself.

pub mod autoscaling;
pub mod generated;
pub mod inventory;
pub mod manifest;
pub mod manifest_chart;
pub mod naming;
pub mod ownership;
pub mod plan;
pub mod replicas;
pub mod settings;
pub mod traffic;
pub mod uris;

use contracts::validate::Target;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The `keptn.*` values injected into every upgrade, so charts can label and configure
/// themselves by project, stage, service and role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptnValues {
    pub project: String,
    pub stage: String,
    pub service: String,
    /// `direct`, `canary` (user chart under blue/green), `primary` (generated chart) or
    /// `user_managed`.
    pub deployment: String,
}

impl KeptnValues {
    /// The values of `deployment` (see [`KeptnValues::deployment`]) of a validated target.
    pub fn of(target: &Target, deployment: &str) -> Self {
        Self::new(&target.project, &target.stage, &target.service, deployment)
    }

    pub fn new(project: &str, stage: &str, service: &str, deployment: &str) -> Self {
        KeptnValues {
            project: project.to_owned(),
            stage: stage.to_owned(),
            service: service.to_owned(),
            deployment: deployment.to_owned(),
        }
    }

    /// `{"keptn": {...}}`, the values file handed to helm for the user chart.
    pub fn to_values(&self) -> Value {
        json!({ "keptn": self })
    }
}

/// A target with the given names, for unit tests of the pure pieces (real targets come from
/// validation).
#[cfg(test)]
pub(crate) fn test_target(project: &str, stage: &str, service: &str) -> Target {
    Target {
        project: project.into(),
        stage: stage.into(),
        service: service.into(),
    }
}
