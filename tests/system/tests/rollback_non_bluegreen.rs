//! Rolling back `direct` and `user_managed` services (`--rollback-non-bluegreen`): a
//! `rollback.triggered` or a `release.triggered` with result fail puts the user release back
//! to the revision before the current deployment's; without the flag nothing changes, as in
//! the reference. Every reply is checked against the Keptn spec's schemas.

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

async fn world(
    extra_args: &[&str],
) -> anyhow::Result<(DeployEnv, system_tests::worker_process::WorkerProcess)> {
    let env = DeployEnv::start(SimConfig {
        rollout_delay: Duration::from_millis(100),
        ..SimConfig::default()
    })
    .await?;
    env.push_chart(("shop", "dev", "hello"), &example_chart())?;
    let mut spec = env.worker_spec();
    spec.extra_args
        .extend(extra_args.iter().map(|arg| arg.to_string()));
    let worker = env.start_worker(spec, "worker").await?;
    Ok((env, worker))
}

/// v1, then v2, with `strategy`.
async fn v1_then_v2(env: &DeployEnv, strategy: &str) -> anyhow::Result<()> {
    for (id, image) in [("d1", V1), ("d2", V2)] {
        let finished = env
            .deploy(
                &deployment_event(id, "hello", strategy, json!({"image": image})),
                WAIT,
            )
            .await?;
        anyhow::ensure!(finished["data"]["status"] == "succeeded", "{finished:#}");
    }
    Ok(())
}

fn message(finished: &Value) -> &str {
    finished["data"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn user_managed_rolls_back_to_the_revision_before_the_deployment() -> anyhow::Result<()> {
    let (env, _worker) = world(&["--rollback-non-bluegreen"]).await?;
    v1_then_v2(&env, "user_managed").await?;

    let finished = env.deploy(&rollback_event("b1", "hello"), WAIT).await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    assert_eq!(finished["data"]["result"], "pass", "{finished:#}");
    assert!(
        message(&finished).contains("went back from revision 2 to revision 1 (as revision 3)"),
        "{finished:#}"
    );
    assert_eq!(env.image_and_replicas(NS, "hello").await?, (V1.into(), 1));
    let descriptions = env.helm_descriptions("shop-dev-hello", NS).await?;
    assert_eq!(descriptions.len(), 3, "{descriptions:?}");
    assert_eq!(descriptions[2].1, "Rollback to 1");

    // Another rollback of the same deployment: done already, no new revision.
    let again = env.deploy(&rollback_event("b2", "hello"), WAIT).await?;
    assert_eq!(again["data"]["status"], "succeeded", "{again:#}");
    assert!(message(&again).contains("already rolled back"), "{again:#}");
    assert_eq!(env.helm_history("shop-dev-hello", NS).await?.len(), 3);

    // The next deployment is a deployment like any other, and can be rolled back again.
    let finished = env
        .deploy(
            &deployment_event("d3", "hello", "user_managed", json!({"image": V2})),
            WAIT,
        )
        .await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    let finished = env.deploy(&rollback_event("b3", "hello"), WAIT).await?;
    assert!(
        message(&finished).contains("went back from revision 4 to revision 3"),
        "{finished:#}"
    );
    assert_eq!(env.image_and_replicas(NS, "hello").await?.0, V1);
    Ok(())
}

#[tokio::test]
async fn a_failed_release_of_a_direct_service_rolls_it_back() -> anyhow::Result<()> {
    let (env, _worker) = world(&["--rollback-non-bluegreen"]).await?;
    v1_then_v2(&env, "direct").await?;
    // A passed release changes nothing.
    let passed = env
        .deploy(&release_event("r1", "hello", "direct", "pass"), WAIT)
        .await?;
    assert!(
        message(&passed).contains("a release changes nothing"),
        "{passed:#}"
    );
    assert_eq!(env.image_and_replicas(NS, "hello").await?.0, V2);

    let failed = env
        .deploy(&release_event("r2", "hello", "direct", "fail"), WAIT)
        .await?;
    assert_eq!(failed["data"]["status"], "succeeded", "{failed:#}");
    assert_eq!(failed["data"]["result"], "fail", "{failed:#}");
    assert!(message(&failed).contains("rolled back"), "{failed:#}");
    assert_eq!(env.image_and_replicas(NS, "hello").await?.0, V1);
    // The mesh routing stays as it was.
    assert!(env.istio("VirtualService", NS, "hello").await?.is_some());
    Ok(())
}

#[tokio::test]
async fn without_the_flag_nothing_is_rolled_back() -> anyhow::Result<()> {
    let (env, _worker) = world(&[]).await?;
    v1_then_v2(&env, "user_managed").await?;
    let finished = env.deploy(&rollback_event("b1", "hello"), WAIT).await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    assert!(
        message(&finished).contains("nothing changed"),
        "{finished:#}"
    );
    let failed = env
        .deploy(&release_event("r1", "hello", "user_managed", "fail"), WAIT)
        .await?;
    assert!(message(&failed).contains("changes nothing"), "{failed:#}");
    assert_eq!(env.image_and_replicas(NS, "hello").await?.0, V2);
    assert_eq!(env.helm_history("shop-dev-hello", NS).await?.len(), 2);
    Ok(())
}

/// A worker killed right after recording the rollback's decision: the redelivery rolls
/// back once.
#[tokio::test]
async fn a_rollback_resumes_after_a_crash_after_its_plan() -> anyhow::Result<()> {
    let (env, mut worker) = world(&["--rollback-non-bluegreen"]).await?;
    v1_then_v2(&env, "user_managed").await?;
    worker.process.stop(Duration::from_secs(15)).await?;

    let quick = |mut spec: system_tests::worker_process::WorkerSpec| {
        spec.ack_wait = "2s";
        spec.lease_ttl = "2s";
        spec.extra_args.push("--rollback-non-bluegreen".into());
        spec
    };
    let mut spec = quick(env.worker_spec());
    spec.extra_args
        .extend(["--test-crash-after-step".into(), "plan".into()]);
    let mut crashing = env.start_worker(spec, "crash").await?;
    system_tests::events::publish(&env.env.js, &rollback_event("b1", "hello")).await?;
    crashing.process.wait_exit(WAIT).await?;

    let resumed = env.start_worker(quick(env.worker_spec()), "resume").await?;
    let (finished, _) = env.sole_finished("b1", WAIT).await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    assert_eq!(env.image_and_replicas(NS, "hello").await?.0, V1);
    assert_eq!(env.helm_history("shop-dev-hello", NS).await?.len(), 3);
    assert_eq!(
        resumed
            .metric("helm_service_steps_skipped_total{step=\"plan\"}")
            .await?,
        1.0
    );
    Ok(())
}
