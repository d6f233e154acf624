//! Blue/green with a HorizontalPodAutoscaler in the user's chart (the corpus' `webapp`):
//! after promotion a copy of the HPA targets the primary, the canary stays at zero with no
//! HPA that could scale it back, all traffic goes to the primary, and the scaling action
//! moves the primary's HPA bounds with the count it sets.

use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::Api;
use kube_sim::Config as SimConfig;
use serde_json::json;
use system_tests::deploy_env::{
    action_event, deployment_event, release_event, workspace_root, DeployEnv,
};

const WAIT: Duration = Duration::from_secs(90);
const NS: &str = "shop-dev";
/// The chart's Deployment, Service and HPA are all named `<release>-webapp`.
const CANARY: &str = "shop-dev-web-webapp";
const PRIMARY: &str = "shop-dev-web-webapp-primary";

/// `(name, target, minReplicas, maxReplicas)` of every HPA in the namespace.
async fn hpas(env: &DeployEnv) -> anyhow::Result<Vec<(String, String, i32, i32)>> {
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(env.client.clone(), NS);
    let mut out: Vec<(String, String, i32, i32)> = api
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .map(|h| {
            let spec = h.spec.unwrap_or_default();
            (
                h.metadata.name.unwrap_or_default(),
                spec.scale_target_ref.name,
                spec.min_replicas.unwrap_or(1),
                spec.max_replicas,
            )
        })
        .collect();
    out.sort();
    Ok(out)
}

#[tokio::test]
async fn blue_green_with_an_hpa_promotes_to_an_autoscaled_primary() -> anyhow::Result<()> {
    let env = DeployEnv::start(SimConfig::default()).await?;
    env.push_chart(
        ("shop", "dev", "web"),
        &workspace_root().join("tests/kube-sim/charts/webapp"),
    )?;
    let _worker = env.start_worker(env.worker_spec(), "worker").await?;
    let strategy = "blue_green_service";

    let deployed = env
        .deploy(&deployment_event("d1", "web", strategy, json!({})), WAIT)
        .await?;
    assert_eq!(deployed["data"]["status"], "succeeded", "{deployed:#}");
    // The canary autoscales by the chart's HPA, the primary by its copy.
    assert_eq!(
        hpas(&env).await?,
        vec![
            (CANARY.into(), CANARY.into(), 2, 5),
            (PRIMARY.into(), PRIMARY.into(), 2, 5),
        ]
    );

    let released = env
        .deploy(&release_event("r1", "web", strategy, "pass"), WAIT)
        .await?;
    assert_eq!(released["data"]["status"], "succeeded", "{released:#}");
    // The canary is at zero and nothing may scale it back: its HPA is gone with it.
    assert_eq!(env.image_and_replicas(NS, CANARY).await?.1, 0);
    assert_eq!(
        hpas(&env).await?,
        vec![(PRIMARY.into(), PRIMARY.into(), 2, 5)]
    );
    let routes = env.routes("web").await?;
    let weight = |suffix: &str| {
        routes
            .iter()
            .find(|(host, _)| host.starts_with(&format!("{CANARY}-{suffix}.")))
            .map_or(0, |(_, w)| *w)
    };
    assert_eq!(
        (weight("canary"), weight("primary")),
        (0, 100),
        "{routes:?}"
    );

    // Scaling the primary past its HPA's maximum moves the bounds with it, and says so.
    let scaled = env
        .deploy(&action_event("a1", "web", "scaling", json!("+5")), WAIT)
        .await?;
    let message = scaled["data"]["message"].as_str().unwrap_or_default();
    assert_eq!(scaled["data"]["result"], "pass", "{scaled:#}");
    assert!(
        message.contains(&format!(
            "its HorizontalPodAutoscaler {PRIMARY} now keeps 6..6 replicas (was 2..5)"
        )),
        "{message}"
    );
    assert_eq!(env.image_and_replicas(NS, PRIMARY).await?.1, 6);
    assert_eq!(
        hpas(&env).await?,
        vec![(PRIMARY.into(), PRIMARY.into(), 6, 6)]
    );
    Ok(())
}
