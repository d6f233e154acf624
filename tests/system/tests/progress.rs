//! Progress reports (`sh.keptn.event.<task>.status.changed`) during a slow rollout: the
//! production binary, real nats-server, real helm, kube-sim with pods ready only seconds
//! after they are created. Every reply collected is checked against the spec's schemas
//! (`Replies`), the reports included.

use std::collections::HashSet;
use std::time::Duration;

use kube_sim::Config as SimConfig;
use serde_json::{json, Value};
use system_tests::deploy_env::{deployment_event, example_chart, DeployEnv};

const WAIT: Duration = Duration::from_secs(90);
/// How long pods take to be ready: many report intervals.
const ROLLOUT_DELAY: Duration = Duration::from_secs(4);

async fn env() -> anyhow::Result<DeployEnv> {
    let env = DeployEnv::start(SimConfig {
        rollout_delay: ROLLOUT_DELAY,
        ..SimConfig::default()
    })
    .await?;
    env.push_chart(("shop", "dev", "hello"), &example_chart())?;
    Ok(env)
}

fn message(event: &Value) -> &str {
    event["data"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_slow_rollout_is_reported_while_it_runs_rate_limited_and_before_finished(
) -> anyhow::Result<()> {
    let env = env().await?;
    let mut spec = env.worker_spec();
    spec.extra_args
        .extend(["--progress-interval".into(), "500ms".into()]);
    let _worker = env.start_worker(spec, "worker").await?;

    let event = deployment_event("slow", "hello", "direct", json!({"replicaCount": 2}));
    let finished = env.deploy(&event, WAIT).await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");

    let replies = env.env.replies().await?;
    let reports = replies.of("slow", "status.changed");
    let messages: Vec<&str> = reports.iter().map(|r| message(r)).collect();
    eprintln!("reports: {messages:#?}");
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("rollout: 0 of 1 ready; Deployment hello: ")),
        "the rollout's progress is reported while pods are not ready: {messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.starts_with("step ")),
        "step boundaries are reported: {messages:?}"
    );
    for report in &reports {
        assert_eq!(report["type"], "sh.keptn.event.deployment.status.changed");
        assert_eq!(report["data"]["status"], "succeeded");
        assert_eq!(report["data"]["project"], "shop");
        assert_eq!(report["shkeptncontext"], event["shkeptncontext"]);
    }
    let ids: HashSet<&str> = reports.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids.len(), reports.len(), "one id per report");
    // Rate-limited: the rollout takes ROLLOUT_DELAY, reports come at most every 500 ms.
    let bound = (ROLLOUT_DELAY.as_millis() / 500) as usize + 6;
    assert!(
        reports.len() <= bound,
        "{} reports, at most {bound} expected",
        reports.len()
    );
    // All before `.finished`, in stream order.
    let position = |id: &str| replies.events.iter().position(|e| e["id"] == id);
    let finished_at = position(finished["id"].as_str().unwrap_or_default()).unwrap();
    let started_at = position(replies.of("slow", "started")[0]["id"].as_str().unwrap()).unwrap();
    for id in &ids {
        let at = position(id).unwrap();
        assert!(
            started_at < at && at < finished_at,
            "report {id} between started and finished"
        );
    }
    Ok(())
}

#[tokio::test]
async fn reports_can_be_turned_off() -> anyhow::Result<()> {
    let env = env().await?;
    let mut spec = env.worker_spec();
    spec.env.push(("PROGRESS_EVENTS".into(), "false".into()));
    spec.extra_args
        .extend(["--progress-interval".into(), "500ms".into()]);
    let _worker = env.start_worker(spec, "worker").await?;
    let finished = env
        .deploy(
            &deployment_event("quiet", "hello", "direct", json!({})),
            WAIT,
        )
        .await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    let replies = env.env.replies().await?;
    assert_eq!(replies.count("status.changed"), 0, "{:#?}", replies.events);
    Ok(())
}
