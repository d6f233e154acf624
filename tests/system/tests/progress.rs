//! Progress reports (`sh.keptn.event.<task>.status.changed`) during a slow rollout: the
//! production binary, real nats-server, real helm, kube-sim with pods ready only seconds
//! after they are created. Every reply collected is checked against the spec's schemas
//! (`Replies`), the reports included. A worker killed mid-rollout: the resumed event's
//! reports repeat under the same ids, and the stream keeps each once.

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

/// A worker killed while it reports a rollout: the redelivered event reaches the same point
/// again and sends the same report under the same id, which the stream's duplicate window
/// drops; the watcher sees it once.
#[tokio::test]
async fn a_resumed_task_repeats_its_reports_under_the_same_ids() -> anyhow::Result<()> {
    let env = DeployEnv::start(SimConfig {
        // Longer than the takeover (ack wait, lease TTL): the resumed attempt waits too.
        rollout_delay: Duration::from_secs(10),
        ..SimConfig::default()
    })
    .await?;
    env.push_chart(("shop", "dev", "hello"), &example_chart())?;
    let mut spec = env.worker_spec();
    spec.ack_wait = "3s";
    spec.extra_args
        .extend(["--progress-interval".into(), "500ms".into()]);
    let mut worker = env.start_worker(spec.clone(), "first").await?;
    let event = deployment_event("resumed", "hello", "direct", json!({}));
    system_tests::events::publish(&env.env.js, &event).await?;
    let rollout = |r: &system_tests::events::Replies| {
        r.of("resumed", "status.changed")
            .iter()
            .any(|e| message(e).starts_with("rollout: "))
    };
    env.env.wait_replies(WAIT, rollout).await?;
    // Counted once its PubAck is back, a moment after it is in the stream; the next report
    // cannot come within the 500 ms interval.
    let sent = "helm_service_status_changed_total{outcome=\"sent\"}";
    let sent_first = test_harness::wait::wait_until(
        "the first report counted",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async { worker.metric(sent).await.ok().filter(|n| *n >= 1.0) },
    )
    .await?;
    worker.process.kill_hard().await?;
    let second = env.start_worker(spec, "second").await?;
    let (finished, replies) = env.sole_finished("resumed", WAIT).await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    let sent_again = second.metric(sent).await?;
    let reports = replies.of("resumed", "status.changed");
    let messages: Vec<&str> = reports.iter().map(|r| message(r)).collect();
    eprintln!(
        "reports: {messages:#?}; sent by the first worker {sent_first}, the second {sent_again}"
    );
    let distinct: HashSet<&str> = messages.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        messages.len(),
        "a report twice: {messages:?}"
    );
    // More were published than the stream holds: the second attempt sent a report of the
    // first again, under the same id, and the duplicate window dropped it.
    assert!(
        sent_first + sent_again > reports.len() as f64,
        "{sent_first} + {sent_again} sent, {} stored",
        reports.len()
    );
    Ok(())
}
