//! A blue/green deployment, a promotion and a rollback survive the worker dying after any
//! of their steps, on every traffic layer.
//!
//! For each step in turn, a worker started with the hidden test hook
//! `--test-crash-after-step <step>` SIGKILLs itself right after recording that step; a
//! fresh worker then gets the redelivered event. The end state must equal an uncrashed
//! run's, and Helm's history proves no recorded step ran again (each upgrade adds a
//! revision: a repeated step would add one more). The routing objects of the layer are
//! checked after each step's round (`DeployEnv::blue_green_weights`).

use std::time::Duration;

use kube_sim::Config as SimConfig;
use serde_json::json;
use system_tests::deploy_env::{
    deployment_event, example_chart, release_event, DeployEnv, Traffic,
};
use system_tests::worker_process::WorkerSpec;

const WAIT: Duration = Duration::from_secs(90);
const NS: &str = "shop-dev";
const V1: &str = "ghcr.io/example/hello:1.0";
const V2: &str = "ghcr.io/example/hello:2.0";

/// What the release event asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    Promote,
    RollBack,
}

impl Intent {
    /// The steps after a blue/green deployment, in order.
    fn steps(self) -> &'static [&'static str] {
        match self {
            Intent::Promote => &[
                "plan",
                "update-primary",
                "route-to-primary",
                "scale-canary-to-zero",
            ],
            Intent::RollBack => &["plan", "route-to-primary", "scale-canary-to-zero"],
        }
    }

    /// Upgrades the run adds to `(generated, user)` release: the routing switch is an
    /// upgrade of the generated release, or with the `service` layer of the user release.
    fn upgrades(self, traffic: Traffic) -> (usize, usize) {
        let primary = usize::from(self == Intent::Promote);
        match traffic {
            Traffic::Service => (primary, 2),
            _ => (primary + 1, 1),
        }
    }
}

/// Workers that notice a dead holder quickly: short ack wait and lease TTL.
fn quick(mut spec: WorkerSpec) -> WorkerSpec {
    spec.ack_wait = "2s";
    spec.lease_ttl = "2s";
    spec
}

#[tokio::test]
async fn promotion_resumes_after_a_crash_after_each_step_istio() -> anyhow::Result<()> {
    resumes_after_each_step(Traffic::Istio, Intent::Promote).await
}

#[tokio::test]
async fn promotion_resumes_after_a_crash_after_each_step_gateway_api() -> anyhow::Result<()> {
    resumes_after_each_step(Traffic::GatewayApi, Intent::Promote).await
}

#[tokio::test]
async fn promotion_resumes_after_a_crash_after_each_step_service() -> anyhow::Result<()> {
    resumes_after_each_step(Traffic::Service, Intent::Promote).await
}

#[tokio::test]
async fn rollback_resumes_after_a_crash_after_each_step_istio() -> anyhow::Result<()> {
    resumes_after_each_step(Traffic::Istio, Intent::RollBack).await
}

#[tokio::test]
async fn rollback_resumes_after_a_crash_after_each_step_gateway_api() -> anyhow::Result<()> {
    resumes_after_each_step(Traffic::GatewayApi, Intent::RollBack).await
}

#[tokio::test]
async fn rollback_resumes_after_a_crash_after_each_step_service() -> anyhow::Result<()> {
    resumes_after_each_step(Traffic::Service, Intent::RollBack).await
}

#[tokio::test]
async fn blue_green_deployment_resumes_after_a_crash_after_each_step_istio() -> anyhow::Result<()> {
    deployment_resumes_after_each_step(Traffic::Istio).await
}

#[tokio::test]
async fn blue_green_deployment_resumes_after_a_crash_after_each_step_gateway_api(
) -> anyhow::Result<()> {
    deployment_resumes_after_each_step(Traffic::GatewayApi).await
}

#[tokio::test]
async fn blue_green_deployment_resumes_after_a_crash_after_each_step_service() -> anyhow::Result<()>
{
    deployment_resumes_after_each_step(Traffic::Service).await
}

/// A blue/green deployment of v2 over a promoted v1 (the canary at zero, traffic on the
/// primary) whose worker dies after each of its steps: until the generated-release step
/// traffic stays on the primary, and the redelivery ends in the same state as an uncrashed
/// run (canary v2 taking all traffic, primary v1) with every step run once.
async fn deployment_resumes_after_each_step(traffic: Traffic) -> anyhow::Result<()> {
    let env = DeployEnv::start_with(
        SimConfig {
            rollout_delay: Duration::from_millis(100),
            ..SimConfig::default()
        },
        traffic,
    )
    .await?;
    const STEPS: [&str; 2] = ["user-release", "generated-release"];
    for (index, crash_step) in STEPS.iter().enumerate() {
        let service = format!("deploy{index}");
        let svc = service.as_str();
        env.push_chart(("shop", "dev", svc), &example_chart())?;
        let mut worker = env
            .start_worker(quick(env.worker_spec()), &format!("{svc}-deploy"))
            .await?;
        let first = deployment_event(&format!("{svc}-d1"), svc, "blue_green_service", json!({}));
        let finished = env.deploy(&first, WAIT).await?;
        anyhow::ensure!(finished["data"]["status"] == "succeeded", "{finished:#}");
        let promotion = release_event(&format!("{svc}-r1"), svc, "blue_green_service", "pass");
        let finished = env.deploy(&promotion, WAIT).await?;
        anyhow::ensure!(finished["data"]["status"] == "succeeded", "{finished:#}");
        assert_eq!(env.blue_green_weights(svc).await?, (0, 100), "promoted");
        worker.process.stop(Duration::from_secs(15)).await?;

        let mut spec = quick(env.worker_spec());
        spec.extra_args
            .extend(["--test-crash-after-step".into(), crash_step.to_string()]);
        let mut crashing = env.start_worker(spec, &format!("{svc}-crash")).await?;
        let id = format!("{svc}-d2");
        system_tests::events::publish(
            &env.env.js,
            &deployment_event(&id, svc, "blue_green_service", json!({"image": V2})),
        )
        .await?;
        let status = crashing.process.wait_exit(WAIT).await?;
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "after {crash_step}: {status:?}");
        // The canary is switched to in the generated-release step, on every layer.
        let routed = if *crash_step == "user-release" {
            (0, 100)
        } else {
            (100, 0)
        };
        assert_eq!(
            env.blue_green_weights(svc).await?,
            routed,
            "right after a crash after {crash_step}"
        );

        let resumed = env
            .start_worker(quick(env.worker_spec()), &format!("{svc}-resume"))
            .await?;
        let (finished, _) = env.sole_finished(&id, WAIT).await?;
        assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
        assert_eq!(env.image_and_replicas(NS, svc).await?, (V2.into(), 1));
        assert_eq!(
            env.image_and_replicas(NS, &format!("{svc}-primary"))
                .await?
                .0,
            V1
        );
        assert_eq!(
            env.blue_green_weights(svc).await?,
            (100, 0),
            "after a crash after {crash_step}"
        );
        // Every step ran once: the revisions of the deployment, the promotion (with the
        // `service` layer two user-release overrides, else the generated release's routing
        // and the user release's scale-down) and the second deployment (with the `service`
        // layer the user release held on the primary, then switched to the canary).
        let (user, generated) = match traffic {
            Traffic::Service => (1 + 2 + 2, 1 + 1),
            _ => (1 + 1 + 1, 1 + 1 + 1),
        };
        for (release, revisions) in [
            (format!("shop-dev-{svc}"), user),
            (format!("shop-dev-{svc}-generated"), generated),
        ] {
            let history = env.helm_history(&release, NS).await?;
            assert_eq!(
                history.len(),
                revisions,
                "{release} after {crash_step}: {history:?}"
            );
        }
        for (position, step) in STEPS.iter().enumerate() {
            let skipped = resumed
                .metric(&format!(
                    "helm_service_steps_skipped_total{{step=\"{step}\"}}"
                ))
                .await?;
            assert_eq!(
                skipped,
                if position <= index { 1.0 } else { 0.0 },
                "{step} after a crash after {crash_step}"
            );
        }
        drop(resumed);
    }
    Ok(())
}

async fn resumes_after_each_step(traffic: Traffic, intent: Intent) -> anyhow::Result<()> {
    let env = DeployEnv::start_with(
        SimConfig {
            rollout_delay: Duration::from_millis(100),
            ..SimConfig::default()
        },
        traffic,
    )
    .await?;
    let steps = intent.steps();
    let (result, primary_image) = match intent {
        Intent::Promote => ("pass", V2),
        Intent::RollBack => ("fail", V1),
    };

    for (index, crash_step) in steps.iter().enumerate() {
        let service = format!("crash{index}");
        let svc = service.as_str();
        env.push_chart(("shop", "dev", svc), &example_chart())?;

        // A blue/green service at v1 with canary v2, deployed by a normal worker.
        let mut worker = env
            .start_worker(quick(env.worker_spec()), &format!("{svc}-deploy"))
            .await?;
        for (id, values) in [("d1", json!({})), ("d2", json!({"image": V2}))] {
            let event = deployment_event(&format!("{svc}-{id}"), svc, "blue_green_service", values);
            let finished = env.deploy(&event, WAIT).await?;
            anyhow::ensure!(finished["data"]["status"] == "succeeded", "{finished:#}");
            assert_eq!(env.blue_green_weights(svc).await?, (100, 0), "after {id}");
        }
        worker.process.stop(Duration::from_secs(15)).await?;

        // A worker that dies right after recording `crash_step`.
        let mut spec = quick(env.worker_spec());
        spec.extra_args
            .extend(["--test-crash-after-step".into(), crash_step.to_string()]);
        let mut crashing = env.start_worker(spec, &format!("{svc}-crash")).await?;
        let release_id = format!("{svc}-r1");
        system_tests::events::publish(
            &env.env.js,
            &release_event(&release_id, svc, "blue_green_service", result),
        )
        .await?;
        let status = crashing.process.wait_exit(WAIT).await?;
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "worker should SIGKILL itself after {crash_step}: {status:?}\n{}",
            crashing.process.log_tail(20)
        );
        let replies = env.env.replies().await?;
        assert!(
            replies.of(&release_id, "finished").is_empty(),
            "no finished before the crash"
        );

        // The redelivery goes to a fresh worker.
        let resumed = env
            .start_worker(quick(env.worker_spec()), &format!("{svc}-resume"))
            .await?;
        let (finished, replies) = env.sole_finished(&release_id, WAIT).await?;
        assert_eq!(replies.of(&release_id, "started").len(), 1);
        assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
        assert_eq!(finished["data"]["result"], result);

        // The same end state as an uncrashed run...
        let primary = env
            .image_and_replicas(NS, &format!("{svc}-primary"))
            .await?;
        assert_eq!(primary.0, primary_image, "after a crash after {crash_step}");
        assert_eq!(
            env.image_and_replicas(NS, svc).await?.1,
            0,
            "canary replicas"
        );
        assert_eq!(
            env.blue_green_weights(svc).await?,
            (0, 100),
            "after a crash after {crash_step}"
        );

        // ...reached with every step run once: 2 deployments of each release and the
        // run's upgrades.
        let (generated_upgrades, user_upgrades) = intent.upgrades(traffic);
        let generated = env
            .helm_history(&format!("shop-dev-{svc}-generated"), NS)
            .await?;
        assert_eq!(
            generated.len(),
            2 + generated_upgrades,
            "after {crash_step}: {generated:?}"
        );
        let user = env.helm_history(&format!("shop-dev-{svc}"), NS).await?;
        assert_eq!(
            user.len(),
            2 + user_upgrades,
            "after {crash_step}: {user:?}"
        );

        // The resumed worker skipped what was recorded and ran only the rest.
        for (position, step) in steps.iter().enumerate() {
            let skipped = resumed
                .metric(&format!(
                    "helm_service_steps_skipped_total{{step=\"{step}\"}}"
                ))
                .await?;
            let completed = resumed
                .metric(&format!(
                    "helm_service_steps_completed_total{{step=\"{step}\"}}"
                ))
                .await?;
            if position <= index {
                assert_eq!(
                    (skipped, completed),
                    (1.0, 0.0),
                    "{step} after crash at {crash_step}"
                );
            } else {
                assert_eq!(
                    (skipped, completed),
                    (0.0, 1.0),
                    "{step} after crash at {crash_step}"
                );
            }
        }
        drop(resumed);
    }
    Ok(())
}

/// A worker killed during a promotion's helm upgrade leaves the release `pending-upgrade`;
/// the redelivery (whose plan was recorded before) recovers it and completes the promotion.
#[tokio::test]
async fn promotion_recovers_a_release_left_pending_mid_plan() -> anyhow::Result<()> {
    let env = DeployEnv::start(SimConfig {
        rollout_delay: Duration::from_millis(100),
        ..SimConfig::default()
    })
    .await?;
    let svc = "hello";
    env.push_chart(("shop", "dev", svc), &example_chart())?;
    let mut worker = env.start_worker(quick(env.worker_spec()), "deploy").await?;
    for (id, values) in [("d1", json!({})), ("d2", json!({"image": V2}))] {
        let finished = env
            .deploy(
                &deployment_event(id, svc, "blue_green_service", values),
                WAIT,
            )
            .await?;
        anyhow::ensure!(finished["data"]["status"] == "succeeded", "{finished:#}");
    }
    worker.process.stop(Duration::from_secs(15)).await?;

    // The plan is recorded, then the worker dies...
    let mut spec = quick(env.worker_spec());
    spec.extra_args
        .extend(["--test-crash-after-step".into(), "plan".into()]);
    let mut crashing = env.start_worker(spec, "crash").await?;
    system_tests::events::publish(
        &env.env.js,
        &release_event("r1", svc, "blue_green_service", "pass"),
    )
    .await?;
    crashing.process.wait_exit(WAIT).await?;
    // ...and so does a helm upgrade of the user release it was running.
    env.leave_pending_upgrade("shop-dev-hello", "image=ghcr.io/example/hello:half")
        .await?;

    let resumed = env.start_worker(quick(env.worker_spec()), "resume").await?;
    let (finished, _) = env.sole_finished("r1", WAIT).await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    assert_eq!(
        resumed
            .metric("helm_service_pending_recoveries_total")
            .await?,
        1.0
    );
    assert_eq!(env.image_and_replicas(NS, "hello-primary").await?.0, V2);
    assert_eq!(env.image_and_replicas(NS, svc).await?.1, 0);
    assert_eq!(env.blue_green_weights(svc).await?, (0, 100));
    let user = env.helm_history("shop-dev-hello", NS).await?;
    assert_eq!(
        user.last().map(|(_, status)| status.as_str()),
        Some("deployed"),
        "{user:?}"
    );
    Ok(())
}
