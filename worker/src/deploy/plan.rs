//! Release, rollback and scaling as plans: pure decisions from observed state.
//!
//! A task observes the deployed state once (Helm's storage of the user and generated
//! releases), picks the actions still needed here, and records the [`Plan`] as its first
//! step. Each action then runs as a recorded step of its own, always computed from the
//! plan's fixed inputs (immutable Helm revisions) and the actions before it — so a
//! redelivered event after a crash continues at the first action not recorded and ends
//! in the same state as an uninterrupted run. Actions already true in the observed state
//! are never planned, which is also what makes a promotion cheaper than the reference's
//! four upgrades.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::autoscaling;
use super::generated::{detached, BlueGreenModel};
use super::replicas::ReplicaOverride;
use super::traffic::TrafficLayer;

/// One change of a plan; each runs as one recorded step named [`Action::step_name`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Route this share of traffic to the canary: an upgrade of the generated release's
    /// routing, or with the `service` layer of the user release's Service selector (all
    /// traffic to the primary at 0, else all to the canary).
    RouteTraffic { canary_weight: u8 },
    /// Upgrade the generated release with the primary copying the user release's
    /// Deployment (of the plan's source revision), and wait for the primary's rollout.
    UpdatePrimary,
    /// Upgrade the generated release with the primary at this many replicas.
    ScalePrimary { replicas: u32 },
    /// Re-deploy the user release's source manifest with these Deployment replicas.
    ScaleUser { replicas: BTreeMap<String, u32> },
}

impl Action {
    /// The step name in the release record, logs and metrics; unique within a plan.
    pub fn step_name(&self) -> &'static str {
        match self {
            Action::RouteTraffic { canary_weight: 100 } => "route-to-canary",
            Action::RouteTraffic { canary_weight: 0 } => "route-to-primary",
            Action::RouteTraffic { .. } => "route-traffic",
            Action::UpdatePrimary => "update-primary",
            Action::ScalePrimary { .. } => "scale-primary",
            Action::ScaleUser { replicas } if replicas.values().all(|&n| n == 0) => {
                "scale-canary-to-zero"
            }
            Action::ScaleUser { .. } => "scale-deployment",
        }
    }

    /// Whether the action changes the user release (else the generated release) when
    /// traffic is routed by `traffic`.
    pub fn on_user_release(&self, traffic: TrafficLayer) -> bool {
        match self {
            Action::ScaleUser { .. } => true,
            Action::RouteTraffic { .. } => traffic.splits_by_selector(),
            Action::UpdatePrimary | Action::ScalePrimary { .. } => false,
        }
    }

    /// What the action does, for `helm history` descriptions and messages.
    pub fn describe(&self) -> String {
        match self {
            Action::RouteTraffic { canary_weight } => format!(
                "route {canary_weight}% of traffic to the canary, {}% to the primary",
                100 - canary_weight.min(&100)
            ),
            Action::UpdatePrimary => "update the primary to the canary's version".into(),
            Action::ScalePrimary { replicas } => {
                format!("scale the primary to {replicas} replicas")
            }
            Action::ScaleUser { replicas } => {
                let parts: Vec<String> = replicas
                    .iter()
                    .map(|(name, count)| format!("{name} to {count}"))
                    .collect();
                format!("scale {}", parts.join(", "))
            }
        }
    }

    /// Applies a generated-release action to the model it upgrades with. `user_deployment`
    /// is the user release's Deployment of the plan's source revision, `user_hpa` its
    /// HorizontalPodAutoscaler there, if any.
    pub fn apply(
        &self,
        model: &mut BlueGreenModel,
        user_deployment: &Value,
        user_hpa: Option<&Value>,
    ) {
        match self {
            Action::RouteTraffic { canary_weight } => model.canary_weight = *canary_weight,
            Action::UpdatePrimary => {
                model.primary_source = detached(user_deployment);
                model.primary_hpa_source = user_hpa.map(detached);
            }
            Action::ScalePrimary { replicas } => {
                model.primary_source["spec"]["replicas"] = Value::from(*replicas);
                // The HPA admits the count (at 0 the primary is rendered without it).
                if let Some(hpa) = model.primary_hpa_source.as_mut().filter(|_| *replicas > 0) {
                    autoscaling::fit(hpa, *replicas);
                }
            }
            Action::ScaleUser { .. } => {}
        }
    }
}

/// What a task decided to do: the actions, and the revisions they start from. Recorded
/// by the task's first step (`plan`), inside the handler's plan output
/// (`ScalingPlanOutput`, `BlueGreenPlanOutput`) beside the message that reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The generated release's revision whose model the actions start from.
    pub generated_revision: Option<u32>,
    /// The user release's revision its chart rendered (see `replicas`), whose manifest the
    /// actions copy or scale.
    pub user_source_revision: Option<u32>,
    pub actions: Vec<Action>,
    /// The traffic layer the service was deployed with (absent in plans of earlier
    /// versions: Istio).
    #[serde(default)]
    pub traffic: TrafficLayer,
    /// helm-service's override of the user release observed when planning (its latest
    /// revision's marker), which user-release actions build on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_override: Option<ReplicaOverride>,
}

impl Plan {
    /// The override of the user release that user-release action `index` deploys: the one
    /// observed when planning, with the user-release actions up to `index` applied, on
    /// `source_revision` (what the user's chart rendered).
    pub fn user_override_at(&self, index: usize, source_revision: u32) -> ReplicaOverride {
        let mut marker = self
            .user_override
            .clone()
            .filter(|observed| observed.source_revision == source_revision)
            .unwrap_or(ReplicaOverride {
                source_revision,
                replicas: BTreeMap::new(),
                selects_primary: false,
            });
        for action in &self.actions[..=index.min(self.actions.len().saturating_sub(1))] {
            match action {
                Action::ScaleUser { replicas } => marker.replicas.extend(replicas.clone()),
                Action::RouteTraffic { canary_weight } if self.traffic.splits_by_selector() => {
                    marker.selects_primary = *canary_weight == 0;
                }
                _ => {}
            }
        }
        marker
    }

    /// Step names in order, e.g. for logs.
    pub fn step_names(&self) -> Vec<&'static str> {
        self.actions.iter().map(Action::step_name).collect()
    }
}

/// The blue/green state a release or a rollback decides on.
#[derive(Debug, Clone, PartialEq)]
pub struct BlueGreenState {
    /// Current share of traffic on the canary (the user release).
    pub canary_weight: u8,
    /// The primary already copies the user release's Deployment.
    pub primary_is_current: bool,
    /// The canary runs pods (helm-service has not scaled it to zero since it was deployed).
    pub canary_running: bool,
    /// The user release's Deployments: what scaling the canary to zero covers.
    pub canary_deployments: Vec<String>,
}

/// Promotion: the canary's version becomes the primary and takes all traffic; then the
/// canary is scaled to zero. The reference always ran four upgrades; only what the
/// observed state still needs is planned (after a blue/green deployment traffic is on the
/// canary already, so the first upgrade is skipped).
pub fn promote(state: &BlueGreenState) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut weight = state.canary_weight;
    if !state.primary_is_current {
        // Keep users on the canary while the primary's pods are replaced.
        if state.canary_running && weight != 100 {
            actions.push(Action::RouteTraffic { canary_weight: 100 });
            weight = 100;
        }
        actions.push(Action::UpdatePrimary);
    }
    if weight != 0 {
        actions.push(Action::RouteTraffic { canary_weight: 0 });
    }
    if state.canary_running {
        actions.push(scale_canary_to_zero(state));
    }
    actions
}

/// Rollback: all traffic back to the untouched primary, the canary scaled to zero.
pub fn roll_back(state: &BlueGreenState) -> Vec<Action> {
    let mut actions = Vec::new();
    if state.canary_weight != 0 {
        actions.push(Action::RouteTraffic { canary_weight: 0 });
    }
    if state.canary_running {
        actions.push(scale_canary_to_zero(state));
    }
    actions
}

fn scale_canary_to_zero(state: &BlueGreenState) -> Action {
    Action::ScaleUser {
        replicas: state
            .canary_deployments
            .iter()
            .map(|name| (name.clone(), 0))
            .collect(),
    }
}

/// Where rolling back a `direct` or `user_managed` service goes (`--rollback-non-bluegreen`):
/// its user release back to the revision before the current deployment's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum UserRollback {
    /// Roll back to revision `to`, the last good one before deployment revision `deployed`.
    To { to: u32, deployed: u32 },
    /// The latest revision is already a rollback to `to` (Helm's description says so).
    Done { to: u32 },
    /// `deployed` is the release's first good revision: nothing earlier to go back to.
    NothingEarlier { deployed: u32 },
}

/// Helm's description of a revision made by `helm rollback <release> <to>`.
pub fn rollback_description(to: u32) -> String {
    format!("Rollback to {to}")
}

/// Decides a [`UserRollback`] over the release's history (`(revision, status)`, oldest
/// first): `deployed` is the revision the last deployment wrote (the inventory's; the
/// latest good revision when unknown), `latest_description` Helm's description of the latest
/// revision. `None` when the release has no good revision at all.
pub fn user_rollback(
    history: &[(u32, &str)],
    deployed: Option<u32>,
    latest_description: Option<&str>,
) -> Option<UserRollback> {
    let good = |status: &str| status == "deployed" || status == "superseded";
    let deployed = deployed
        .filter(|d| history.iter().any(|(revision, _)| revision == d))
        .or_else(|| {
            history
                .iter()
                .filter(|(_, status)| good(status))
                .map(|(revision, _)| *revision)
                .max()
        })?;
    let Some(to) = history
        .iter()
        .filter(|(revision, status)| *revision < deployed && good(status))
        .map(|(revision, _)| *revision)
        .max()
    else {
        return Some(UserRollback::NothingEarlier { deployed });
    };
    let latest = history.last().map(|(revision, _)| *revision);
    if latest > Some(deployed) && latest_description == Some(rollback_description(to).as_str()) {
        return Some(UserRollback::Done { to });
    }
    Some(UserRollback::To { to, deployed })
}

/// The outcome of a scaling decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scaling {
    pub from: u32,
    pub to: u32,
    /// Why `to` is not `from + delta`, when it is not.
    pub limited: Option<String>,
}

/// `current + delta`, never below zero and never above `max` (`--scaling-max-replicas`, an
/// absolute bound: a remediation that fires again and again must not multiply a service).
/// Adding never removes replicas: a count already above `max` stays as it is.
pub fn scale(current: u32, delta: i64, max: u32) -> Scaling {
    let wanted = i64::from(current).saturating_add(delta);
    let (to, limited) = if wanted < 0 {
        (
            0,
            Some(format!("{current}{delta:+} is below zero: scaled to 0")),
        )
    } else if wanted > i64::from(max) && delta > 0 {
        let to = max.max(current);
        (
            to,
            Some(format!(
                "{current}{delta:+} exceeds the maximum of {max} replicas (--scaling-max-replicas): {}",
                if to == current { format!("stays at {current}") } else { format!("capped at {max}") }
            )),
        )
    } else {
        (u32::try_from(wanted).unwrap_or(max), None)
    };
    Scaling {
        from: current,
        to,
        limited,
    }
}

/// Reads the scaling action's `value`: a signed integer, as a string (`"+1"`, `"-2"`) or a
/// JSON number. The error is the message of the `fail` result.
pub fn scaling_delta(value: Option<&Value>) -> Result<i64, String> {
    let hint =
        "the scaling action needs action.value to be a signed integer such as \"+1\" or \"-2\"";
    match value {
        None | Some(Value::Null) => Err(format!("{hint}; the event has none")),
        Some(Value::Number(number)) => number
            .as_i64()
            .ok_or_else(|| format!("{hint}; got {number}")),
        Some(Value::String(text)) => {
            let trimmed = text.trim();
            let digits = trimmed.strip_prefix('+').unwrap_or(trimmed);
            digits
                .parse::<i64>()
                .map_err(|_| format!("{hint}; got {text:?}"))
        }
        Some(other) => Err(format!("{hint}; got {other}")),
    }
}

/// `spec.replicas` of a Deployment object (absent means 1, the API server's default).
pub fn declared_replicas(deployment: &Value) -> u32 {
    deployment["spec"]["replicas"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(weight: u8, primary_current: bool, running: bool) -> BlueGreenState {
        BlueGreenState {
            canary_weight: weight,
            primary_is_current: primary_current,
            canary_running: running,
            canary_deployments: vec!["carts".into()],
        }
    }

    fn names(actions: &[Action]) -> Vec<&'static str> {
        actions.iter().map(Action::step_name).collect()
    }

    #[test]
    fn promotion_after_a_deployment_skips_the_first_switch() {
        assert_eq!(
            names(&promote(&state(100, false, true))),
            ["update-primary", "route-to-primary", "scale-canary-to-zero"]
        );
    }

    #[test]
    fn promotion_routes_to_the_canary_first_when_it_is_not() {
        assert_eq!(
            names(&promote(&state(30, false, true))),
            [
                "route-to-canary",
                "update-primary",
                "route-to-primary",
                "scale-canary-to-zero"
            ]
        );
    }

    #[test]
    fn promotion_of_a_released_service_does_nothing() {
        assert!(promote(&state(0, true, false)).is_empty());
        // Traffic left on a scaled-down canary is moved back; nothing else.
        assert_eq!(
            names(&promote(&state(100, true, false))),
            ["route-to-primary"]
        );
        // A canary already scaled down is never routed to.
        assert_eq!(names(&promote(&state(0, false, false))), ["update-primary"]);
    }

    #[test]
    fn rollback_leaves_the_primary_alone() {
        assert_eq!(
            names(&roll_back(&state(100, false, true))),
            ["route-to-primary", "scale-canary-to-zero"]
        );
        assert!(roll_back(&state(0, false, false)).is_empty());
    }

    #[test]
    fn actions_fold_into_the_model() {
        let mut model = BlueGreenModel {
            routing: crate::deploy::generated::Routing {
                service: "carts".into(),
                namespace: "shop-dev".into(),
                public_host: "h".into(),
                gateway: "g".into(),
                traffic: crate::deploy::traffic::TrafficLayer::Istio,
                parent_gateway: None,
            },
            service: json!({}),
            primary_source: json!({"metadata": {"name": "carts"}, "spec": {"replicas": 1}}),
            canary_weight: 100,
            primary_hpa_source: None,
        };
        let user = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "carts", "annotations": {"meta.helm.sh/release-name": "x"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"image": "carts:2"}]}}}});
        let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "carts", "annotations": {"meta.helm.sh/release-name": "x"}},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "carts"},
                     "minReplicas": 2, "maxReplicas": 4}});
        Action::UpdatePrimary.apply(&mut model, &user, Some(&hpa));
        assert_eq!(model.primary_source["spec"]["replicas"], 2);
        let copied = model.primary_hpa_source.clone().expect("the HPA is copied");
        assert!(copied["metadata"]["annotations"]
            .get("meta.helm.sh/release-name")
            .is_none());
        assert!(model.primary_source["metadata"]["annotations"]
            .get("meta.helm.sh/release-name")
            .is_none());
        Action::RouteTraffic { canary_weight: 0 }.apply(&mut model, &user, Some(&hpa));
        assert_eq!(model.canary_weight, 0);
        Action::ScalePrimary { replicas: 5 }.apply(&mut model, &user, Some(&hpa));
        assert_eq!(model.primary_source["spec"]["replicas"], 5);
        // The primary's HPA admits the new count.
        let hpa = model.primary_hpa_source.as_ref().unwrap();
        assert_eq!(autoscaling::bounds(hpa), (5, 5));
        Action::ScalePrimary { replicas: 0 }.apply(&mut model, &user, None);
        assert_eq!(
            autoscaling::bounds(model.primary_hpa_source.as_ref().unwrap()),
            (5, 5)
        );
    }

    #[test]
    fn user_rollbacks_go_to_the_revision_before_the_deployment() {
        let history = [
            (1, "superseded"),
            (2, "failed"),
            (3, "superseded"),
            (4, "deployed"),
        ];
        assert_eq!(
            user_rollback(&history, Some(4), Some("Upgrade complete")),
            Some(UserRollback::To { to: 3, deployed: 4 })
        );
        // Failed revisions are skipped.
        let history = [(1, "superseded"), (2, "failed"), (3, "deployed")];
        assert_eq!(
            user_rollback(&history, Some(3), None),
            Some(UserRollback::To { to: 1, deployed: 3 })
        );
        // Rolled back already: the latest revision is Helm's rollback to that revision.
        let history = [(1, "superseded"), (2, "superseded"), (3, "deployed")];
        assert_eq!(
            user_rollback(&history, Some(2), Some("Rollback to 1")),
            Some(UserRollback::Done { to: 1 })
        );
        // A later revision of another kind (a scaling override) is rolled back too.
        assert_eq!(
            user_rollback(&history, Some(2), Some("helm-service: scale carts to 3")),
            Some(UserRollback::To { to: 1, deployed: 2 })
        );
        // Unknown deployment (no inventory entry, or its revision is gone): the latest good.
        assert_eq!(
            user_rollback(&history, None, None),
            Some(UserRollback::To { to: 2, deployed: 3 })
        );
        assert_eq!(
            user_rollback(&history, Some(9), None),
            Some(UserRollback::To { to: 2, deployed: 3 })
        );
        assert_eq!(
            user_rollback(&[(1, "deployed")], Some(1), None),
            Some(UserRollback::NothingEarlier { deployed: 1 })
        );
        assert_eq!(user_rollback(&[(1, "failed")], None, None), None);
        assert_eq!(user_rollback(&[], None, None), None);
    }

    #[test]
    fn scaling_clamps_and_caps() {
        const MAX: u32 = 50;
        assert_eq!(scale(2, 1, MAX).to, 3);
        assert_eq!(scale(2, -1, MAX).to, 1);
        let zero = scale(2, -100, MAX);
        assert_eq!(zero.to, 0);
        assert!(zero.limited.unwrap().contains("below zero"));
        let capped = scale(2, 1000, MAX);
        assert_eq!(capped.to, MAX);
        assert!(capped.limited.unwrap().contains("capped at 50"));
        // Again and again: never past the bound.
        assert_eq!(scale(capped.to, 1000, MAX).to, MAX);
        assert_eq!(scale(0, 3, MAX).to, 3);
        assert_eq!(scale(2, 10, 5).to, 5);
        assert_eq!(scale(2, i64::MAX, MAX).to, MAX);
        assert_eq!(scale(2, i64::MIN, MAX).to, 0);
        // Above the bound already (set by hand, or a lower bound configured later): adding
        // leaves it, removing still works.
        let above = scale(80, 1, MAX);
        assert_eq!(above.to, 80);
        assert!(above.limited.unwrap().contains("stays at 80"));
        assert_eq!(scale(80, -1, MAX).to, 79);
    }

    #[test]
    fn scaling_values_are_signed_integers() {
        assert_eq!(scaling_delta(Some(&json!("+1"))), Ok(1));
        assert_eq!(scaling_delta(Some(&json!("-100"))), Ok(-100));
        assert_eq!(scaling_delta(Some(&json!(2))), Ok(2));
        let err = scaling_delta(Some(&json!("abc"))).unwrap_err();
        assert!(
            err.contains("\"abc\"") && err.contains("signed integer"),
            "{err}"
        );
        assert!(scaling_delta(None).unwrap_err().contains("has none"));
        assert!(scaling_delta(Some(&json!(1.5))).is_err());
        assert!(scaling_delta(Some(&json!("1.5"))).is_err());
    }

    #[test]
    fn plans_record_as_json() {
        let plan = Plan {
            generated_revision: Some(3),
            user_source_revision: Some(2),
            actions: promote(&state(100, false, true)),
            traffic: TrafficLayer::Service,
            user_override: None,
        };
        let back: Plan = serde_json::from_value(serde_json::to_value(&plan).unwrap()).unwrap();
        assert_eq!(back, plan);
        assert_eq!(declared_replicas(&json!({"spec": {}})), 1);
        // Plans recorded by earlier versions are Istio's, without an observed override.
        let mut old = serde_json::to_value(&plan).unwrap();
        old.as_object_mut().unwrap().remove("traffic");
        let old: Plan = serde_json::from_value(old).unwrap();
        assert_eq!(old.traffic, TrafficLayer::Istio);
    }

    #[test]
    fn user_release_actions_build_on_the_observed_override() {
        let mut plan = Plan {
            generated_revision: Some(3),
            user_source_revision: Some(2),
            actions: promote(&state(100, false, true)),
            traffic: TrafficLayer::Service,
            user_override: None,
        };
        // update-primary, route-to-primary, scale-canary-to-zero
        assert!(!plan.actions[0].on_user_release(plan.traffic));
        assert!(plan.actions[1].on_user_release(plan.traffic));
        let routed = plan.user_override_at(1, 2);
        assert!(routed.selects_primary && routed.replicas.is_empty());
        let scaled = plan.user_override_at(2, 2);
        assert!(scaled.selects_primary && scaled.is_scaled_to_zero());
        // Istio routes in the generated release: the user release only scales.
        plan.traffic = TrafficLayer::Istio;
        assert!(!plan.actions[1].on_user_release(plan.traffic));
        assert!(!plan.user_override_at(2, 2).selects_primary);
        // A canary scaled down earlier stays down when traffic moves.
        plan.traffic = TrafficLayer::Service;
        plan.actions = promote(&state(100, true, false));
        plan.user_override = Some(ReplicaOverride {
            source_revision: 2,
            replicas: BTreeMap::from([("carts".into(), 0)]),
            selects_primary: false,
        });
        let moved = plan.user_override_at(0, 2);
        assert!(moved.selects_primary && moved.is_scaled_to_zero());
        // An override of another source revision is not built on.
        assert!(plan.user_override_at(0, 5).replicas.is_empty());
    }
}
