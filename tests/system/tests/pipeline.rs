//! The event pipeline end to end with one worker process and a real nats-server:
//! replies, duplicates, not-implemented answers, ignored and declined events.

use std::time::Duration;

use system_tests::env::TestEnv;
use system_tests::events::{publish, triggered};
use system_tests::worker_process::{http_get, WorkerProcess};

const PROBE_WORKER: &str = env!("CARGO_BIN_EXE_probe-worker");
const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_triggered_event_published_three_times_is_answered_and_applied_once() -> anyhow::Result<()>
{
    let env = TestEnv::start().await?;
    let worker = WorkerProcess::start(env.worker(PROBE_WORKER), env.dir.path(), "worker").await?;

    let event = triggered(
        "deployment",
        "5f1c6a2e-0000-4000-8000-000000000001",
        ("sockshop", "dev", "carts"),
        &[("probe.steps", "2"), ("team", "blue")],
    );
    for _ in 0..3 {
        publish(&env.js, &event).await?;
    }
    // All three copies have been taken and settled once two were suppressed.
    test_harness::wait::wait_until(
        "two duplicates suppressed",
        DEADLINE,
        Duration::from_millis(50),
        || async {
            let suppressed = worker
                .metric("helm_service_duplicates_suppressed_total")
                .await
                .ok()?;
            (suppressed >= 2.0).then_some(())
        },
    )
    .await?;

    let replies = env.replies().await?;
    let id = event["id"].as_str().unwrap();
    assert_eq!(replies.of(id, "started").len(), 1, "{replies:#?}");
    let finished = replies.of(id, "finished");
    assert_eq!(finished.len(), 1, "{replies:#?}");
    let finished = finished[0];
    assert_eq!(finished["type"], "sh.keptn.event.deployment.finished");
    assert_eq!(finished["source"], "helm-service");
    assert_eq!(finished["shkeptncontext"], event["shkeptncontext"]);
    assert_eq!(finished["data"]["status"], "succeeded");
    assert_eq!(finished["data"]["result"], "pass");
    assert_eq!(finished["data"]["project"], "sockshop");
    assert_eq!(finished["data"]["stage"], "dev");
    assert_eq!(finished["data"]["service"], "carts");
    assert_eq!(finished["data"]["labels"]["team"], "blue");
    assert_eq!(finished["data"]["message"], "probe ran 2 steps");

    let records = env.probe_records();
    let count = |what: &str| records.iter().filter(|r| r.what == what).count();
    assert_eq!(
        count("begin"),
        1,
        "the handler ran more than once: {records:#?}"
    );
    assert_eq!(count("step-done"), 2, "{records:#?}");
    Ok(())
}

#[tokio::test]
async fn a_handled_type_without_a_handler_is_answered_not_implemented() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let _worker = WorkerProcess::start(env.worker(PROBE_WORKER), env.dir.path(), "worker").await?;
    let event = triggered(
        "rollback",
        "5f1c6a2e-0000-4000-8000-000000000002",
        ("sockshop", "dev", "carts"),
        &[],
    );
    publish(&env.js, &event).await?;
    let id = event["id"].as_str().unwrap();
    let replies = env
        .wait_replies(DEADLINE, |r| !r.of(id, "finished").is_empty())
        .await?;
    let finished = replies.of(id, "finished")[0];
    assert_eq!(finished["type"], "sh.keptn.event.rollback.finished");
    assert_eq!(finished["data"]["status"], "errored");
    assert_eq!(finished["data"]["result"], "fail");
    let message = finished["data"]["message"].as_str().unwrap();
    assert!(message.contains("not implemented"), "{message}");
    assert!(
        replies.of(id, "started").is_empty(),
        "no started for a refused task"
    );
    Ok(())
}

#[tokio::test]
async fn own_events_and_declined_tasks_get_no_reply() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let worker = WorkerProcess::start(env.worker(PROBE_WORKER), env.dir.path(), "worker").await?;

    let mut own = triggered("deployment", "own-1", ("sockshop", "dev", "carts"), &[]);
    own["source"] = "helm-service".into();
    let declined = triggered(
        "action",
        "declined-1",
        ("sockshop", "dev", "carts"),
        &[("probe.decline", "yes")],
    );
    publish(&env.js, &own).await?;
    publish(&env.js, &declined).await?;

    test_harness::wait::wait_until(
        "both ignored",
        DEADLINE,
        Duration::from_millis(50),
        || async {
            let own = worker
                .metric("helm_service_events_ignored_total{reason=\"own-source\"}")
                .await
                .ok()?;
            let declined = worker
                .metric("helm_service_events_ignored_total{reason=\"probe-declined\"}")
                .await
                .ok()?;
            (own == 1.0 && declined == 1.0).then_some(())
        },
    )
    .await?;
    let replies = env.replies().await?;
    assert!(
        replies.events.is_empty(),
        "nothing must be answered: {replies:#?}"
    );
    assert!(env.probe_records().is_empty());
    Ok(())
}

#[tokio::test]
async fn operators_get_metrics_health_and_readiness() -> anyhow::Result<()> {
    let mut env = TestEnv::start().await?;
    let worker = WorkerProcess::start(env.worker(PROBE_WORKER), env.dir.path(), "worker").await?;
    assert_eq!(http_get(worker.http_port, "/healthz").await?.0, 200);
    assert_eq!(http_get(worker.http_port, "/readyz").await?.0, 200);
    let metrics = worker.metrics().await?;
    for name in [
        "helm_service_tasks_in_flight",
        "helm_service_pool_capacity 4",
        "helm_service_duplicates_suppressed_total",
        "helm_service_lease_waits_total",
        "helm_service_consumer_pending",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    // Without NATS the worker is alive but not ready.
    env.nats.kill().await?;
    test_harness::wait::wait_until(
        "readyz turns 503",
        DEADLINE,
        Duration::from_millis(50),
        || async {
            let (status, body) = http_get(worker.http_port, "/readyz").await.ok()?;
            (status == 503).then_some(body)
        },
    )
    .await?;
    assert_eq!(http_get(worker.http_port, "/healthz").await?.0, 200);
    Ok(())
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_and_name_the_event() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let mut spec = env.worker(PROBE_WORKER);
    spec.extra_args = vec!["--log-format".into(), "json".into()];
    let worker = WorkerProcess::start(spec, env.dir.path(), "worker").await?;
    let id = "5f1c6a2e-0000-4000-8000-0000000010g1";
    publish(
        &env.js,
        &triggered("deployment", id, ("sockshop", "dev", "carts"), &[]),
    )
    .await?;
    env.wait_replies(DEADLINE, |r| !r.of(id, "finished").is_empty())
        .await?;

    // The worker logs the line right after the reply is acknowledged: wait for it.
    let log = test_harness::wait::wait_until(
        "the finished log line",
        DEADLINE,
        Duration::from_millis(20),
        || async {
            let log = worker.process.log();
            log.contains("\"message\":\"finished\"").then_some(log)
        },
    )
    .await?;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"))
        })
        .collect();
    assert!(lines
        .iter()
        .all(|l| l["level"].is_string() && l["timestamp"].is_string()));
    let finished = lines
        .iter()
        .find(|l| l["message"] == "finished")
        .unwrap_or_else(|| panic!("no finished log line in:\n{log}"));
    assert_eq!(finished["status"], "succeeded");
    assert_eq!(finished["reply"], "probe ran 1 steps");
    assert_eq!(
        finished["span"]["id"], id,
        "the line names the event: {finished:#}"
    );
    Ok(())
}
