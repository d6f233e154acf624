//! Operator settings of the deployment tasks, resolved: how long Helm calls and rollouts may
//! take (per stage: dev fast, production slow), how the reported URIs and the generated
//! routing are shaped and by which traffic layer (per stage too), and the cap of the scaling
//! action. `config` parses the flags and builds these; nothing here knows about flags.

use std::collections::BTreeMap;
use std::time::Duration;

use super::traffic::{GatewayRef, TrafficLayer};
use super::uris::Ingress;

/// Deadlines of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub helm: Duration,
    pub rollout: Duration,
    /// How long a pod may stay in a state that does not fix itself before the rollout is
    /// given up (`None`: off, only `rollout` ends the wait).
    pub fail_fast_after: Option<Duration>,
}

/// The resolved settings the handlers read.
#[derive(Debug, Clone)]
pub struct DeploySettings {
    pub ingress: Ingress,
    helm_timeout: Duration,
    rollout_timeout: Duration,
    stage_helm: BTreeMap<String, Duration>,
    stage_rollout: BTreeMap<String, Duration>,
    fail_fast_after: Option<Duration>,
    stage_fail_fast: BTreeMap<String, Option<Duration>>,
    /// Most replicas the scaling action sets, however often it is asked to add more.
    pub scaling_max_replicas: u32,
    traffic: Traffic,
    helm_test: PerStage<bool>,
    /// `rollback.triggered` and a failed release roll `direct` and `user_managed` services'
    /// releases back (the reference changed nothing for them).
    pub rollback_non_blue_green: bool,
}

/// A setting with per-stage overrides.
#[derive(Debug, Clone, Default)]
pub struct PerStage<T> {
    pub default: T,
    pub stage: BTreeMap<String, T>,
}

impl<T: Copy> PerStage<T> {
    /// `stage`'s override, else the default.
    pub fn of(&self, stage: &str) -> T {
        self.stage.get(stage).copied().unwrap_or(self.default)
    }
}

/// How traffic is routed: the layer (per stage) and the Gateway API parent.
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    pub layer: PerStage<TrafficLayer>,
    /// The Gateway HTTPRoutes attach to (`gateway-api`).
    pub gateway: Option<GatewayRef>,
}

impl Traffic {
    /// Every layer some stage may use needs what it needs: `gateway-api` a Gateway.
    pub fn check(&self) -> Result<(), String> {
        let uses_gateway_api = self.layer.default == TrafficLayer::GatewayApi
            || self
                .layer
                .stage
                .values()
                .any(|&l| l == TrafficLayer::GatewayApi);
        if uses_gateway_api && self.gateway.is_none() {
            return Err(
                "the gateway-api traffic layer needs --gateway NAMESPACE/NAME (GATEWAY): the \
                 Gateway its HTTPRoutes attach to"
                    .into(),
            );
        }
        Ok(())
    }
}

impl DeploySettings {
    /// `defaults` apply to every stage without an override of its own in `stage`.
    pub fn new(
        ingress: Ingress,
        defaults: Deadlines,
        stage: StageDeadlines,
        scaling_max_replicas: u32,
    ) -> Self {
        DeploySettings {
            ingress,
            helm_timeout: defaults.helm,
            rollout_timeout: defaults.rollout,
            stage_helm: stage.helm,
            stage_rollout: stage.rollout,
            fail_fast_after: defaults.fail_fast_after,
            stage_fail_fast: stage.fail_fast_after,
            scaling_max_replicas,
            traffic: Traffic::default(),
            helm_test: PerStage::default(),
            rollback_non_blue_green: false,
        }
    }

    /// These settings running `helm test` after a deployment's rollout where `helm_test`
    /// says so.
    pub fn with_helm_test(mut self, helm_test: PerStage<bool>) -> Self {
        self.helm_test = helm_test;
        self
    }

    /// These settings rolling back `direct` and `user_managed` services when `on`.
    pub fn with_rollback_non_blue_green(mut self, on: bool) -> Self {
        self.rollback_non_blue_green = on;
        self
    }

    /// Whether a deployment in `stage` runs the chart's tests (`helm test`) after its
    /// rollout, as a gate.
    pub fn helm_test(&self, stage: &str) -> bool {
        self.helm_test.of(stage)
    }

    /// These settings routing traffic with `traffic`.
    pub fn with_traffic(mut self, traffic: Traffic) -> Self {
        self.traffic = traffic;
        self
    }

    /// The traffic layer of `stage`: its override, else the default.
    pub fn traffic(&self, stage: &str) -> TrafficLayer {
        self.traffic.layer.of(stage)
    }

    /// The Gateway API parent of generated HTTPRoutes.
    pub fn gateway(&self) -> Option<&GatewayRef> {
        self.traffic.gateway.as_ref()
    }

    /// The deadlines for `stage`: its override, else the default.
    pub fn deadlines(&self, stage: &str) -> Deadlines {
        Deadlines {
            helm: self
                .stage_helm
                .get(stage)
                .copied()
                .unwrap_or(self.helm_timeout),
            rollout: self
                .stage_rollout
                .get(stage)
                .copied()
                .unwrap_or(self.rollout_timeout),
            fail_fast_after: self
                .stage_fail_fast
                .get(stage)
                .copied()
                .unwrap_or(self.fail_fast_after),
        }
    }
}

/// Per-stage overrides of [`Deadlines`].
#[derive(Debug, Clone, Default)]
pub struct StageDeadlines {
    pub helm: BTreeMap<String, Duration>,
    pub rollout: BTreeMap<String, Duration>,
    /// `None` turns fail fast off in that stage.
    pub fail_fast_after: BTreeMap<String, Option<Duration>>,
}
