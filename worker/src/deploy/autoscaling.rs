//! HorizontalPodAutoscalers in a user's chart, and what helm-service's own replica changes do
//! to them.
//!
//! An HPA owns its Deployment's replica count: a count set behind it is undone at its next
//! sync, and an HPA whose Deployment was scaled to zero is one config change away from
//! scaling it back. So wherever helm-service sets replicas it settles the HPA in the same
//! Helm revision:
//! - blue/green: the primary gets a copy of the user's HPA, targeting `<deployment>-primary`
//!   (`generated`), so the primary autoscales as the canary did;
//! - a Deployment set to 0 replicas (the canary after a release, a primary scaled to 0) has no
//!   HPA in that revision, so nothing scales it back; the next deployment restores the chart's;
//! - a Deployment scaled to N by the scaling action keeps its HPA with bounds that admit N:
//!   `minReplicas` becomes N (the HPA may not go below what the action asked) and
//!   `maxReplicas` at least N ([`fit`]).

use serde_json::Value;

/// Whether `object` is an HPA (any served version) whose target is Deployment `deployment`.
pub fn targets(object: &Value, deployment: &str) -> bool {
    object["kind"] == "HorizontalPodAutoscaler"
        && object["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("autoscaling/"))
        && object["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        && object["spec"]["scaleTargetRef"]["name"] == deployment
}

/// The first HPA among `objects` that targets Deployment `deployment`.
pub fn hpa_of<'a>(objects: &'a [Value], deployment: &str) -> Option<&'a Value> {
    objects.iter().find(|o| targets(o, deployment))
}

/// `(minReplicas, maxReplicas)` of an HPA (`minReplicas` defaults to 1).
pub fn bounds(hpa: &Value) -> (u32, u32) {
    let read = |key: &str| {
        hpa["spec"][key]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
    };
    let min = read("minReplicas").unwrap_or(1);
    (min, read("maxReplicas").unwrap_or(min))
}

/// The bounds an HPA gets when its Deployment is scaled to `replicas` (> 0): at least
/// `replicas` and at most `max(maxReplicas, replicas)`.
pub fn fitted_bounds(hpa: &Value, replicas: u32) -> (u32, u32) {
    let (_, max) = bounds(hpa);
    (replicas, max.max(replicas))
}

/// Sets the bounds of [`fitted_bounds`] on `hpa`.
pub fn fit(hpa: &mut Value, replicas: u32) {
    let (min, max) = fitted_bounds(hpa, replicas);
    hpa["spec"]["minReplicas"] = Value::from(min);
    hpa["spec"]["maxReplicas"] = Value::from(max);
}

/// Settles the HPAs of `objects` for Deployment `deployment` set to `replicas`: gone at 0,
/// fitted otherwise (see the module docs).
pub fn settle(objects: &mut Vec<Value>, deployment: &str, replicas: u32) {
    if replicas == 0 {
        objects.retain(|o| !targets(o, deployment));
        return;
    }
    for hpa in objects.iter_mut().filter(|o| targets(o, deployment)) {
        fit(hpa, replicas);
    }
}

/// What scaling a Deployment to `replicas` does to its HPA `hpa`, for the task's message.
pub fn describe(hpa: &Value, replicas: u32) -> String {
    let name = hpa["metadata"]["name"].as_str().unwrap_or("?");
    if replicas == 0 {
        return format!("its HorizontalPodAutoscaler {name} is removed while it runs no pods");
    }
    let before = bounds(hpa);
    let after = fitted_bounds(hpa, replicas);
    if before == after {
        format!(
            "its HorizontalPodAutoscaler {name} keeps {}..{} replicas",
            after.0, after.1
        )
    } else {
        format!(
            "its HorizontalPodAutoscaler {name} now keeps {}..{} replicas (was {}..{})",
            after.0, after.1, before.0, before.1
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hpa(name: &str, target: &str, min: Option<u32>, max: u32) -> Value {
        let mut spec = json!({
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "maxReplicas": max,
        });
        if let Some(min) = min {
            spec["minReplicas"] = json!(min);
        }
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
               "metadata": {"name": name}, "spec": spec})
    }

    #[test]
    fn finds_the_hpa_of_a_deployment() {
        let objects = vec![
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}),
            hpa("other", "api", Some(1), 3),
            hpa("web", "web", Some(2), 5),
        ];
        assert_eq!(hpa_of(&objects, "web").unwrap()["metadata"]["name"], "web");
        assert!(hpa_of(&objects, "db").is_none());
        let mut v1 = hpa("old", "web", None, 4);
        v1["apiVersion"] = json!("autoscaling/v1");
        assert!(targets(&v1, "web"));
        assert_eq!(bounds(&v1), (1, 4));
    }

    #[test]
    fn scaling_fits_the_bounds_and_zero_removes_the_hpa() {
        let mut h = hpa("web", "web", Some(2), 5);
        assert_eq!(fitted_bounds(&h, 3), (3, 5));
        assert_eq!(fitted_bounds(&h, 8), (8, 8));
        assert_eq!(fitted_bounds(&h, 1), (1, 5));
        assert_eq!(
            describe(&h, 8),
            "its HorizontalPodAutoscaler web now keeps 8..8 replicas (was 2..5)"
        );
        assert_eq!(
            describe(&h, 2),
            "its HorizontalPodAutoscaler web keeps 2..5 replicas"
        );
        fit(&mut h, 8);
        assert_eq!(bounds(&h), (8, 8));

        let mut objects = vec![hpa("web", "web", Some(2), 5), hpa("api", "api", Some(1), 3)];
        settle(&mut objects, "web", 6);
        assert_eq!(bounds(&objects[0]), (6, 6));
        assert_eq!(bounds(&objects[1]), (1, 3));
        settle(&mut objects, "web", 0);
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0]["metadata"]["name"], "api");
    }
}
