//! The `helm test` gate (`--helm-test`, per stage `--stage-helm-test`): after the rollout the
//! worker runs the chart's tests; a failing test ends the deployment `fail` with the end of
//! the test pod's log and restores the last good revision. kube-sim runs the test pods and
//! fails those whose image is in `failing_job_images`; their log is what kube-sim's pod log
//! serves. Every reply is checked against the Keptn spec's schemas (`events::Replies`).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube_sim::Config as SimConfig;
use serde_json::json;
use system_tests::deploy_env::{
    deployment_event, example_chart_with, DeployEnv, BROKEN_CHECK, TEST_POD,
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
        job_duration: Duration::from_millis(100),
        failing_job_images: vec![BROKEN_CHECK.into()],
        ..SimConfig::default()
    })
    .await?;
    let chart = example_chart_with(env.env.dir.path(), &[("templates/test.yaml", TEST_POD)])?;
    env.push_chart(("shop", "dev", "hello"), &chart)?;
    let mut spec = env.worker_spec();
    spec.extra_args
        .extend(extra_args.iter().map(|arg| arg.to_string()));
    let worker = env.start_worker(spec, "worker").await?;
    Ok((env, worker))
}

async fn test_pod_phase(env: &DeployEnv) -> anyhow::Result<Option<String>> {
    let pod = Api::<Pod>::namespaced(env.client.clone(), NS)
        .get_opt("hello-test")
        .await?;
    Ok(pod.and_then(|p| p.status?.phase))
}

#[tokio::test]
async fn passing_tests_let_the_deployment_pass_and_failing_ones_restore_it() -> anyhow::Result<()> {
    let (env, _worker) = world(&["--helm-test"]).await?;

    // Tests pass: the deployment succeeds, and the test pod ran to success.
    let finished = env
        .deploy(
            &deployment_event("d1", "hello", "direct", json!({"image": V1})),
            WAIT,
        )
        .await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    assert_eq!(finished["data"]["result"], "pass", "{finished:#}");
    assert_eq!(test_pod_phase(&env).await?.as_deref(), Some("Succeeded"));

    // v2 rolls out, but its test fails: fail, the log's end in the message, v1 restored.
    let finished = env
        .deploy(
            &deployment_event(
                "d2",
                "hello",
                "direct",
                json!({"image": V2, "testImage": BROKEN_CHECK}),
            ),
            WAIT,
        )
        .await?;
    assert_eq!(finished["data"]["status"], "errored", "{finished:#}");
    assert_eq!(finished["data"]["result"], "fail", "{finished:#}");
    let message = finished["data"]["message"].as_str().unwrap_or_default();
    for expected in [
        "the tests of release shop-dev-hello revision 2 failed",
        "test pod hello-test (container check) failed, its log ends:",
        "kube-sim: started ghcr.io/example/broken-check:1 --url http://hello/healthz",
        "kube-sim: exited with code 1 (Error)",
        "rolled back to its last good revision 1",
    ] {
        assert!(message.contains(expected), "{expected:?} in {message}");
    }
    assert_eq!(env.image_and_replicas(NS, "hello").await?.0, V1);
    let history = env.helm_history("shop-dev-hello", NS).await?;
    assert_eq!(
        history
            .last()
            .map(|(revision, status)| (*revision, status.as_str())),
        Some((3, "deployed")),
        "{history:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_gate_is_per_stage() -> anyhow::Result<()> {
    // On everywhere but dev: a failing test does not stop dev's deployment.
    let (env, _worker) = world(&["--helm-test", "--stage-helm-test", "dev=false"]).await?;
    let finished = env
        .deploy(
            &deployment_event("d1", "hello", "direct", json!({"testImage": BROKEN_CHECK})),
            WAIT,
        )
        .await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    assert_eq!(test_pod_phase(&env).await?, None, "no test ran");
    Ok(())
}
