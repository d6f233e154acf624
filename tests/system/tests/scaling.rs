//! action.triggered `scaling` end to end: the production binary, real nats-server, real
//! helm, kube-sim. Blue/green services scale their primary, `direct` ones the user
//! Deployment; each scaling is one Helm upgrade; bad values fail, foreign actions get no
//! answer, and a duplicate event scales once.

use std::time::Duration;

use kube_sim::Config as SimConfig;
use serde_json::{json, Value};
use system_tests::deploy_env::{action_event, helm_operations, DeployEnv};
use system_tests::events::publish;

const WAIT: Duration = Duration::from_secs(90);
const NS: &str = "shop-dev";

fn sim() -> SimConfig {
    SimConfig {
        rollout_delay: Duration::from_millis(200),
        ..SimConfig::default()
    }
}

fn message(finished: &Value) -> &str {
    finished["data"]["message"].as_str().unwrap_or_default()
}

/// Asserts the finished event of an action: its type, status, result and project.
fn assert_finished(finished: &Value, status: &str, result: &str) {
    assert_eq!(
        finished["type"], "sh.keptn.event.action.finished",
        "{finished:#}"
    );
    assert_eq!(finished["data"]["status"], status, "{finished:#}");
    assert_eq!(finished["data"]["result"], result, "{finished:#}");
    assert_eq!(finished["data"]["project"], "shop");
    assert_eq!(finished["data"]["stage"], "dev");
}

#[tokio::test]
async fn scaling_a_blue_green_primary_adds_clamps_and_refuses_bad_values() -> anyhow::Result<()> {
    let (env, worker) = DeployEnv::with_hello_deployed(sim(), "blue_green_service", WAIT).await?;
    assert_eq!(env.image_and_replicas(NS, "hello-primary").await?.1, 1);
    let generated = "shop-dev-hello-generated";
    let revisions = env.helm_history(generated, NS).await?.len();

    // +1: one Helm upgrade of the generated release.
    let operations = helm_operations(&worker).await?;
    let finished = env
        .deploy(&action_event("a1", "hello", "scaling", json!("+1")), WAIT)
        .await?;
    assert_finished(&finished, "succeeded", "pass");
    assert!(
        message(&finished).contains("hello-primary from 1 to 2 replicas"),
        "{finished:#}"
    );
    assert_eq!(env.image_and_replicas(NS, "hello-primary").await?.1, 2);
    assert_eq!(
        helm_operations(&worker).await? - operations,
        1.0,
        "one Helm operation for one scaling action"
    );
    let history = env.helm_descriptions(generated, NS).await?;
    assert_eq!(history.len(), revisions + 1, "{history:#?}");
    assert!(
        history.last().is_some_and(|(_, d)| {
            d
            == "helm-service: scale the primary to 2 replicas (sh.keptn.event.action.triggered a1)"
        }),
        "{history:#?}"
    );
    // The canary (user release) is not touched by scaling the primary.
    assert_eq!(env.image_and_replicas(NS, "hello").await?.1, 1);
    assert_eq!(env.helm_history("shop-dev-hello", NS).await?.len(), 1);

    // -1: back.
    let finished = env
        .deploy(&action_event("a2", "hello", "scaling", json!("-1")), WAIT)
        .await?;
    assert_finished(&finished, "succeeded", "pass");
    assert!(
        message(&finished).contains("from 2 to 1 replicas"),
        "{finished:#}"
    );
    assert_eq!(env.image_and_replicas(NS, "hello-primary").await?.1, 1);

    // -100: clamped at zero, and the message says so.
    let finished = env
        .deploy(&action_event("a3", "hello", "scaling", json!("-100")), WAIT)
        .await?;
    assert_finished(&finished, "succeeded", "pass");
    let text = message(&finished);
    assert!(text.contains("from 1 to 0 replicas"), "{finished:#}");
    assert!(text.contains("below zero: scaled to 0"), "{finished:#}");
    assert_eq!(env.image_and_replicas(NS, "hello-primary").await?.1, 0);

    // Not an integer: the action ran and could not do it. Nothing changes.
    let revisions = env.helm_history(generated, NS).await?.len();
    let finished = env
        .deploy(&action_event("a4", "hello", "scaling", json!("abc")), WAIT)
        .await?;
    assert_finished(&finished, "succeeded", "fail");
    let text = message(&finished);
    assert!(
        text.contains("signed integer") && text.contains("\"abc\""),
        "{finished:#}"
    );
    assert_eq!(env.image_and_replicas(NS, "hello-primary").await?.1, 0);
    assert_eq!(env.helm_history(generated, NS).await?.len(), revisions);

    // Another integration's action, then ours on the same release: once ours is answered
    // and the foreign one counted as ignored, the foreign one has had all the answer it
    // will get — none.
    publish(
        &env.env.js,
        &action_event("a5", "hello", "toggle-feature", json!("on")),
    )
    .await?;
    let finished = env
        .deploy(&action_event("a6", "hello", "scaling", json!("+1")), WAIT)
        .await?;
    assert_finished(&finished, "succeeded", "pass");
    assert!(
        message(&finished).contains("from 0 to 1 replicas"),
        "{finished:#}"
    );
    assert_eq!(env.image_and_replicas(NS, "hello-primary").await?.1, 1);
    let ignored = test_harness::wait::wait_until(
        "the foreign action counted as ignored",
        WAIT,
        Duration::from_millis(50),
        || async {
            let count = worker
                .metric("helm_service_events_ignored_total{reason=\"foreign-action\"}")
                .await
                .ok()?;
            (count >= 1.0).then_some(count)
        },
    )
    .await?;
    assert_eq!(ignored, 1.0);
    let replies = env.env.replies().await?;
    assert!(replies.of("a5", "started").is_empty(), "{replies:#?}");
    assert!(replies.of("a5", "finished").is_empty(), "{replies:#?}");
    assert!(
        replies.events.iter().all(|e| e["triggeredid"] != "a5"),
        "{replies:#?}"
    );

    // +0: answered, and no Helm operation at all.
    let operations = helm_operations(&worker).await?;
    let revisions = env.helm_history(generated, NS).await?.len();
    let finished = env
        .deploy(&action_event("a7", "hello", "scaling", json!("+0")), WAIT)
        .await?;
    assert_finished(&finished, "succeeded", "pass");
    assert!(
        message(&finished).contains("hello-primary stays at 1 replicas"),
        "{finished:#}"
    );
    assert_eq!(helm_operations(&worker).await?, operations);
    assert_eq!(env.helm_history(generated, NS).await?.len(), revisions);
    Ok(())
}

#[tokio::test]
async fn scaling_a_direct_service_is_one_helm_revision_and_a_duplicate_scales_once(
) -> anyhow::Result<()> {
    let (env, worker) = DeployEnv::with_hello_deployed(sim(), "direct", WAIT).await?;
    let user = "shop-dev-hello";
    assert_eq!(env.helm_history(user, NS).await?.len(), 1);
    let generated = env.helm_history("shop-dev-hello-generated", NS).await?;

    let operations = helm_operations(&worker).await?;
    let finished = env
        .deploy(&action_event("a1", "hello", "scaling", json!("+1")), WAIT)
        .await?;
    assert_finished(&finished, "succeeded", "pass");
    assert!(
        message(&finished).contains("Deployment hello from 1 to 2 replicas"),
        "{finished:#}"
    );
    let (image, replicas) = env.image_and_replicas(NS, "hello").await?;
    assert_eq!(replicas, 2);
    assert_eq!(image, "ghcr.io/example/hello:1.0", "same version");
    assert_eq!(
        helm_operations(&worker).await? - operations,
        1.0,
        "one Helm operation for one scaling action"
    );
    let history = env.helm_descriptions(user, NS).await?;
    assert_eq!(history.len(), 2, "one new revision: {history:#?}");
    assert!(
        history[1].1.starts_with("helm-service:"),
        "described as ours: {history:#?}"
    );
    assert!(
        history[1]
            .1
            .contains("(sh.keptn.event.action.triggered a1)"),
        "{history:#?}"
    );
    // The mesh routing is not touched.
    assert_eq!(
        env.helm_history("shop-dev-hello-generated", NS).await?,
        generated
    );

    // The same event twice: answered once, applied once.
    let duplicated = action_event("a2", "hello", "scaling", json!("+1"));
    publish(&env.env.js, &duplicated).await?;
    let finished = env.deploy(&duplicated, WAIT).await?;
    assert_finished(&finished, "succeeded", "pass");
    test_harness::wait::wait_until(
        "the second copy suppressed",
        WAIT,
        Duration::from_millis(50),
        || async {
            let suppressed = worker
                .metric("helm_service_duplicates_suppressed_total")
                .await
                .ok()?;
            (suppressed >= 1.0).then_some(())
        },
    )
    .await?;
    let replies = env.env.replies().await?;
    assert_eq!(replies.of("a2", "started").len(), 1, "{replies:#?}");
    assert_eq!(replies.of("a2", "finished").len(), 1, "{replies:#?}");
    assert_eq!(env.image_and_replicas(NS, "hello").await?.1, 3);
    assert_eq!(env.helm_history(user, NS).await?.len(), 3);

    // A service that was never deployed: errored, saying so.
    let finished = env
        .deploy(&action_event("a3", "other", "scaling", json!("+1")), WAIT)
        .await?;
    assert_finished(&finished, "errored", "fail");
    assert!(message(&finished).contains("not deployed"), "{finished:#}");
    Ok(())
}

/// A remediation that fires again and again with a huge value (a runaway rule) never takes a
/// service past the default bound of --scaling-max-replicas.
#[tokio::test]
async fn repeated_huge_scaling_stays_within_the_default_bound() -> anyhow::Result<()> {
    let (env, _worker) = DeployEnv::with_hello_deployed(sim(), "direct", WAIT).await?;
    let bound = worker::config::DEFAULT_SCALING_MAX_REPLICAS;
    for index in 0..3 {
        let id = format!("huge-{index}");
        let finished = env
            .deploy(&action_event(&id, "hello", "scaling", json!("+1000")), WAIT)
            .await?;
        assert_finished(&finished, "succeeded", "pass");
        assert!(
            message(&finished).contains(&format!("maximum of {bound} replicas")),
            "{finished:#}"
        );
        let replicas = env.image_and_replicas(NS, "hello").await?.1;
        assert_eq!(i64::from(replicas), i64::from(bound), "after {id}");
    }
    Ok(())
}
