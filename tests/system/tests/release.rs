//! release.triggered and rollback.triggered end to end: the production binary, real
//! nats-server, real helm, kube-sim. Each test checks the finished event, the Deployments,
//! the VirtualService weights and Helm's history.

use std::time::Duration;

use kube_sim::Config as SimConfig;
use serde_json::{json, Value};
use system_tests::deploy_env::{
    deployment_event, example_chart, release_event, rollback_event, DeployEnv,
};

const WAIT: Duration = Duration::from_secs(90);
const NS: &str = "shop-dev";
const V1: &str = "ghcr.io/example/hello:1.0";
const V2: &str = "ghcr.io/example/hello:2.0";

fn sim() -> SimConfig {
    SimConfig {
        rollout_delay: Duration::from_millis(200),
        ..SimConfig::default()
    }
}

async fn weights(env: &DeployEnv) -> anyhow::Result<(u64, u64)> {
    env.blue_green_weights("hello").await
}

async fn deployment(env: &DeployEnv, name: &str) -> anyhow::Result<(String, i32)> {
    env.image_and_replicas(NS, name).await
}

/// A blue/green service at v1 (promoted) with v2 deployed as the canary.
async fn canary_v2(env: &DeployEnv) -> anyhow::Result<()> {
    let v1 = env
        .deploy(
            &deployment_event("d1", "hello", "blue_green_service", json!({})),
            WAIT,
        )
        .await?;
    anyhow::ensure!(v1["data"]["status"] == "succeeded", "{v1:#}");
    let v2 = env
        .deploy(
            &deployment_event("d2", "hello", "blue_green_service", json!({"image": V2})),
            WAIT,
        )
        .await?;
    anyhow::ensure!(v2["data"]["status"] == "succeeded", "{v2:#}");
    Ok(())
}

fn assert_finished(finished: &Value, status: &str, result: &str) {
    assert_eq!(finished["data"]["status"], status, "{finished:#}");
    assert_eq!(finished["data"]["result"], result, "{finished:#}");
    assert_eq!(finished["data"]["project"], "shop");
}

#[tokio::test]
async fn release_pass_promotes_the_canary() -> anyhow::Result<()> {
    let env = DeployEnv::start(sim()).await?;
    env.push_chart(("shop", "dev", "hello"), &example_chart())?;
    let _worker = env.start_worker(env.worker_spec(), "worker").await?;
    canary_v2(&env).await?;
    assert_eq!(weights(&env).await?, (100, 0));

    let finished = env
        .deploy(
            &release_event("r1", "hello", "blue_green_service", "pass"),
            WAIT,
        )
        .await?;
    assert_finished(&finished, "succeeded", "pass");
    let message = finished["data"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("promoted"), "{message}");

    assert_eq!(deployment(&env, "hello-primary").await?.0, V2);
    assert_eq!(weights(&env).await?, (0, 100));
    assert_eq!(deployment(&env, "hello").await?, (V2.to_owned(), 0));
    // Three upgrades: traffic was on the canary already, so no first switch.
    let generated = env.helm_history("shop-dev-hello-generated", NS).await?;
    assert_eq!(generated.len(), 4, "{generated:#?}");
    let user = env.helm_history("shop-dev-hello", NS).await?;
    assert_eq!(user.len(), 3, "{user:#?}");
    let descriptions = env.helm_descriptions("shop-dev-hello", NS).await?;
    assert_eq!(
        descriptions[2].1, "helm-service: scale hello to 0 (sh.keptn.event.release.triggered r1)",
        "{descriptions:?}"
    );

    // The same verdict again (another event): already promoted, nothing changes.
    let again = env
        .deploy(
            &release_event("r2", "hello", "blue_green_service", "warning"),
            WAIT,
        )
        .await?;
    assert_finished(&again, "succeeded", "warning");
    assert!(
        again["data"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("already promoted"),
        "{again:#}"
    );
    assert_eq!(env.helm_history("shop-dev-hello", NS).await?.len(), 3);
    Ok(())
}

#[tokio::test]
async fn release_fail_and_rollback_keep_the_primary() -> anyhow::Result<()> {
    let env = DeployEnv::start(sim()).await?;
    env.push_chart(("shop", "dev", "hello"), &example_chart())?;
    let _worker = env.start_worker(env.worker_spec(), "worker").await?;
    canary_v2(&env).await?;

    let finished = env
        .deploy(
            &release_event("r1", "hello", "blue_green_service", "fail"),
            WAIT,
        )
        .await?;
    assert_finished(&finished, "succeeded", "fail");
    assert_eq!(deployment(&env, "hello-primary").await?.0, V1);
    assert_eq!(weights(&env).await?, (0, 100));
    assert_eq!(deployment(&env, "hello").await?.1, 0);

    // A new canary, rolled back by rollback.triggered.
    let v3 = env
        .deploy(
            &deployment_event(
                "d3",
                "hello",
                "blue_green_service",
                json!({"image": "ghcr.io/example/hello:3.0"}),
            ),
            WAIT,
        )
        .await?;
    assert_eq!(v3["data"]["status"], "succeeded", "{v3:#}");
    assert_eq!(weights(&env).await?, (100, 0));
    assert!(deployment(&env, "hello").await?.1 > 0, "canary back up");

    let finished = env.deploy(&rollback_event("rb1", "hello"), WAIT).await?;
    assert_finished(&finished, "succeeded", "pass");
    assert_eq!(deployment(&env, "hello-primary").await?.0, V1);
    assert_eq!(weights(&env).await?, (0, 100));
    assert_eq!(deployment(&env, "hello").await?.1, 0);
    Ok(())
}

#[tokio::test]
async fn release_of_direct_changes_nothing_and_of_nothing_deployed_errs() -> anyhow::Result<()> {
    let (env, _worker) = DeployEnv::with_hello_deployed(sim(), "direct", WAIT).await?;

    let finished = env
        .deploy(&release_event("r1", "hello", "direct", "warning"), WAIT)
        .await?;
    assert_finished(&finished, "succeeded", "warning");
    assert_eq!(env.helm_history("shop-dev-hello", NS).await?.len(), 1);
    assert_eq!(
        env.helm_history("shop-dev-hello-generated", NS)
            .await?
            .len(),
        1
    );

    // A blue/green release of a service never deployed: errored, with what to do.
    let finished = env
        .deploy(
            &release_event("r2", "other", "blue_green_service", "pass"),
            WAIT,
        )
        .await?;
    assert_finished(&finished, "errored", "fail");
    assert!(
        finished["data"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not deployed"),
        "{finished:#}"
    );
    Ok(())
}
