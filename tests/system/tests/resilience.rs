//! Crashes, restarts and long tasks: nothing lost, nothing applied twice.

use std::time::Duration;

use system_tests::env::TestEnv;
use system_tests::events::{publish, triggered};
use system_tests::probe::ProbeRecord;
use system_tests::worker_process::WorkerProcess;
use test_harness::wait::wait_until;

const PROBE_WORKER: &str = env!("CARGO_BIN_EXE_probe-worker");
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(25);

/// Waits until the probe has begun `runs` handler runs (across all workers).
async fn wait_for_runs(env: &TestEnv, runs: usize, what: &str) -> anyhow::Result<()> {
    wait_until(what, DEADLINE, POLL, || async {
        let begun = env
            .probe_records()
            .iter()
            .filter(|r| r.what == "begin")
            .count();
        (begun >= runs).then_some(())
    })
    .await
}

fn count(records: &[ProbeRecord], what: &str, event: &str, step: Option<u32>) -> usize {
    records
        .iter()
        .filter(|r| r.what == what && r.event_id == event && r.step == step)
        .count()
}

#[tokio::test]
async fn a_worker_killed_mid_task_is_resumed_elsewhere_without_repeating_steps(
) -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let mut spec = env.worker(PROBE_WORKER);
    spec.ack_wait = "2s";
    spec.lease_ttl = "2s";
    let mut doomed = WorkerProcess::start(spec.clone(), env.dir.path(), "doomed").await?;

    let id = "5f1c6a2e-0000-4000-8000-00000000c001";
    let event = triggered(
        "deployment",
        id,
        ("sockshop", "dev", "carts"),
        &[("probe.steps", "3"), ("probe.step-ms", "700")],
    );
    publish(&env.js, &event).await?;
    // Step 1 starting means step 0 is recorded in the ledger.
    wait_until("step 1 to start", DEADLINE, POLL, || async {
        (count(&env.probe_records(), "step-start", id, Some(1)) == 1).then_some(())
    })
    .await?;
    doomed.process.kill_hard().await?;
    let killed_at = env.probe_records().len();

    let _survivor = WorkerProcess::start(spec, env.dir.path(), "survivor").await?;
    let replies = env
        .wait_replies(DEADLINE, |r| !r.of(id, "finished").is_empty())
        .await?;
    assert_eq!(replies.of(id, "started").len(), 1, "{replies:#?}");
    let finished = replies.of(id, "finished");
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["data"]["status"], "succeeded");

    let records = env.probe_records();
    let after_kill = &records[killed_at..];
    assert_eq!(count(&records, "step-done", id, Some(0)), 1, "{records:#?}");
    assert_eq!(
        count(after_kill, "step-start", id, Some(0)),
        0,
        "a recorded step ran again: {records:#?}"
    );
    assert_eq!(count(&records, "step-done", id, Some(1)), 1, "{records:#?}");
    assert_eq!(count(&records, "step-done", id, Some(2)), 1, "{records:#?}");
    assert!(after_kill.iter().all(|r| r.pid != doomed.process.pid()));
    Ok(())
}

#[tokio::test]
async fn nats_killed_and_restarted_mid_run_loses_no_event() -> anyhow::Result<()> {
    let mut env = TestEnv::start().await?;
    let mut spec = env.worker(PROBE_WORKER);
    spec.ack_wait = "3s";
    spec.lease_ttl = "3s";
    let worker = WorkerProcess::start(spec, env.dir.path(), "worker").await?;

    let event = |index: usize| {
        let id = format!("5f1c6a2e-0000-4000-8000-{index:012}");
        let service = format!("svc-{}", index % 6);
        triggered(
            "deployment",
            &id,
            ("sockshop", "dev", &service),
            &[("probe.step-ms", "20")],
        )
    };
    for index in 0..60 {
        publish(&env.js, &event(index)).await?;
    }
    env.wait_replies(DEADLINE, |r| r.count("finished") >= 15)
        .await?;
    env.nats.kill().await?;
    env.nats.restart().await?;
    for index in 60..100 {
        publish(&env.js, &event(index)).await?;
    }
    let replies = env
        .wait_replies(Duration::from_secs(120), |r| r.count("finished") >= 100)
        .await?;
    for index in 0..100 {
        let id = event(index)["id"].as_str().unwrap().to_owned();
        assert_eq!(replies.of(&id, "finished").len(), 1, "{id}");
        assert_eq!(replies.of(&id, "started").len(), 1, "{id}");
    }
    assert_eq!(replies.count("finished"), 100);
    assert!(!worker.process.log().contains("panicked"));
    Ok(())
}

#[tokio::test]
async fn a_task_three_times_longer_than_the_ack_wait_is_not_redelivered() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let mut spec = env.worker(PROBE_WORKER);
    spec.ack_wait = "1s";
    let worker = WorkerProcess::start(spec, env.dir.path(), "worker").await?;
    let id = "5f1c6a2e-0000-4000-8000-00000000a001";
    let event = triggered(
        "deployment",
        id,
        ("sockshop", "dev", "carts"),
        &[("probe.step-ms", "3500")],
    );
    publish(&env.js, &event).await?;
    let replies = env
        .wait_replies(DEADLINE, |r| !r.of(id, "finished").is_empty())
        .await?;
    assert_eq!(replies.of(id, "finished").len(), 1);
    let records = env.probe_records();
    assert_eq!(count(&records, "begin", id, None), 1, "{records:#?}");
    let redelivered = worker
        .metric("helm_service_redeliveries_total{type=\"sh.keptn.event.deployment.triggered\"}")
        .await?;
    assert_eq!(redelivered, 0.0, "the long task was redelivered");
    Ok(())
}

#[tokio::test]
async fn sigterm_lets_in_flight_tasks_finish_and_loses_nothing() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let spec = env.worker(PROBE_WORKER);
    let mut first = WorkerProcess::start(spec.clone(), env.dir.path(), "first").await?;
    let ids: Vec<String> = (0..8)
        .map(|i| format!("5f1c6a2e-0000-4000-8000-00000000d{i:03}"))
        .collect();
    for (index, id) in ids.iter().enumerate() {
        let service = format!("svc-{index}");
        publish(
            &env.js,
            &triggered(
                "deployment",
                id,
                ("sockshop", "dev", &service),
                &[("probe.step-ms", "800")],
            ),
        )
        .await?;
    }
    // Concurrency 4: four tasks are in flight when the signal comes.
    wait_for_runs(&env, 4, "four tasks in flight").await?;
    first.process.terminate()?;
    let status = first.process.wait_exit(Duration::from_secs(20)).await?;
    assert!(
        status.success(),
        "clean exit after draining: {status:?}\n{}",
        first.process.log_tail(30)
    );
    let records = env.probe_records();
    let finished_by_first: Vec<_> = records.iter().filter(|r| r.what == "end").collect();
    assert!(
        finished_by_first.len() >= 4,
        "in-flight tasks finished before exit: {records:#?}"
    );

    let _second = WorkerProcess::start(spec, env.dir.path(), "second").await?;
    let replies = env
        .wait_replies(DEADLINE, |r| {
            ids.iter().all(|id| !r.of(id, "finished").is_empty())
        })
        .await?;
    let records = env.probe_records();
    for id in &ids {
        assert_eq!(replies.of(id, "finished").len(), 1, "{id}");
        assert_eq!(
            count(&records, "begin", id, None),
            1,
            "{id} ran twice: {records:#?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn tasks_outliving_the_grace_period_are_handed_back_and_finished_once() -> anyhow::Result<()>
{
    let env = TestEnv::start().await?;
    let mut spec = env.worker(PROBE_WORKER);
    spec.shutdown_grace = "1s";
    let mut first = WorkerProcess::start(spec.clone(), env.dir.path(), "first").await?;
    let ids: Vec<String> = (0..2)
        .map(|i| format!("5f1c6a2e-0000-4000-8000-00000000e{i:03}"))
        .collect();
    for (index, id) in ids.iter().enumerate() {
        let service = format!("svc-{index}");
        let labels = [("probe.steps", "2"), ("probe.step-ms", "1500")];
        publish(
            &env.js,
            &triggered("deployment", id, ("sockshop", "dev", &service), &labels),
        )
        .await?;
    }
    wait_for_runs(&env, 2, "both tasks in flight").await?;
    first.process.terminate()?;
    let status = first.process.wait_exit(Duration::from_secs(20)).await?;
    assert!(status.success(), "{status:?}");
    assert!(
        first.process.log().contains("grace period over"),
        "{}",
        first.process.log_tail(30)
    );

    let _second = WorkerProcess::start(spec, env.dir.path(), "second").await?;
    let replies = env
        .wait_replies(DEADLINE, |r| {
            ids.iter().all(|id| !r.of(id, "finished").is_empty())
        })
        .await?;
    let records = env.probe_records();
    for id in &ids {
        assert_eq!(replies.of(id, "finished").len(), 1, "{id}");
        assert_eq!(replies.of(id, "started").len(), 1, "{id}");
        assert_eq!(
            count(&records, "step-done", id, Some(1)),
            1,
            "{id}: {records:#?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_task_failing_transiently_is_retried_then_given_up_with_an_answer() -> anyhow::Result<()>
{
    let env = TestEnv::start().await?;
    let mut spec = env.worker(PROBE_WORKER);
    spec.extra_args = vec!["--max-deliveries".into(), "3".into()];
    let worker = WorkerProcess::start(spec, env.dir.path(), "worker").await?;
    let id = "5f1c6a2e-0000-4000-8000-00000000f001";
    let labels = [("probe.transient", "cluster unreachable")];
    publish(
        &env.js,
        &triggered("deployment", id, ("sockshop", "dev", "carts"), &labels),
    )
    .await?;

    let replies = env
        .wait_replies(DEADLINE, |r| !r.of(id, "finished").is_empty())
        .await?;
    let finished = replies.of(id, "finished");
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["data"]["status"], "errored");
    let message = finished[0]["data"]["message"].as_str().unwrap();
    assert!(message.contains("gave up after 4 deliveries"), "{message}");
    assert_eq!(
        replies.of(id, "started").len(),
        1,
        "started once across all attempts"
    );
    assert_eq!(
        count(&env.probe_records(), "begin", id, None),
        3,
        "three attempts, then no more"
    );

    let letters = env.dead_letters().await?;
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0]["reason"], "exhausted");
    assert_eq!(letters[0]["event_id"], id);
    let naks = worker
        .metric("helm_service_naks_total{reason=\"transient\"}")
        .await?;
    assert_eq!(naks, 3.0);
    Ok(())
}

/// A handler that panics (a bug) must not strand its message, its release or the in-flight
/// gauge: each panic hands the message back at once and frees the release, so another event
/// of the same service runs meanwhile, and after --max-deliveries the event is answered and
/// dead-lettered like any failing task.
#[tokio::test]
async fn a_panicking_task_is_handed_back_frees_its_release_and_is_given_up_with_an_answer(
) -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let mut spec = env.worker(PROBE_WORKER);
    spec.extra_args = vec!["--max-deliveries".into(), "2".into()];
    let mut worker = WorkerProcess::start(spec, env.dir.path(), "worker").await?;
    let service = ("sockshop", "dev", "carts");
    let bug = "5f1c6a2e-0000-4000-8000-00000000f101";
    let labels = [("probe.panic", "index out of bounds")];
    publish(&env.js, &triggered("deployment", bug, service, &labels)).await?;
    wait_until("the first panic", DEADLINE, POLL, || async {
        let panics = worker.metric("helm_service_task_panics_total").await.ok()?;
        (panics >= 1.0).then_some(())
    })
    .await?;

    // The release was handed back with the message: a good event of the same service does
    // not wait out the lease TTL (30s) behind it.
    let good = "5f1c6a2e-0000-4000-8000-00000000f102";
    publish(&env.js, &triggered("deployment", good, service, &[])).await?;
    let published = std::time::Instant::now();
    let replies = env
        .wait_replies(DEADLINE, |r| !r.of(good, "finished").is_empty())
        .await?;
    let waited = published.elapsed();
    assert_eq!(
        replies.of(good, "finished")[0]["data"]["status"],
        "succeeded"
    );
    assert!(
        waited < Duration::from_secs(15),
        "the good event waited {waited:?}: the panicking task kept the release"
    );

    let replies = env
        .wait_replies(DEADLINE, |r| !r.of(bug, "finished").is_empty())
        .await?;
    let finished = replies.of(bug, "finished");
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["data"]["status"], "errored");
    let message = finished[0]["data"]["message"].as_str().unwrap();
    assert!(message.contains("gave up after 3 deliveries"), "{message}");
    assert_eq!(replies.of(bug, "started").len(), 1, "started once");
    assert_eq!(
        count(&env.probe_records(), "begin", bug, None),
        2,
        "two attempts panicked, the third gave up without running"
    );
    let letters = env.dead_letters().await?;
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0]["reason"], "exhausted");
    assert_eq!(letters[0]["event_id"], bug);

    assert_eq!(worker.metric("helm_service_task_panics_total").await?, 2.0);
    assert_eq!(
        worker
            .metric("helm_service_naks_total{reason=\"panic\"}")
            .await?,
        2.0
    );
    wait_until("no task in flight", DEADLINE, POLL, || async {
        let in_flight = worker.metric("helm_service_tasks_in_flight").await.ok()?;
        (in_flight == 0.0).then_some(())
    })
    .await?;
    assert!(
        worker.process.is_running(),
        "the worker survives the panics"
    );
    assert!(
        worker
            .process
            .log()
            .contains("probe.panic: index out of bounds"),
        "the panic is logged: {}",
        worker.process.log_tail(30)
    );
    Ok(())
}

/// Shutdown frees the releases this replica keeps parked; with NATS gone that cannot
/// work, and it must not keep the process from exiting.
#[tokio::test]
async fn sigterm_with_nats_gone_still_exits() -> anyhow::Result<()> {
    let mut env = TestEnv::start().await?;
    let spec = env.worker(PROBE_WORKER);
    let mut worker = WorkerProcess::start(spec, env.dir.path(), "worker").await?;
    let id = "5f1c6a2e-0000-4000-8000-0000000000e1";
    publish(
        &env.js,
        &triggered("deployment", id, ("sockshop", "dev", "carts"), &[]),
    )
    .await?;
    // Finished, so the worker keeps the release parked.
    env.wait_replies(DEADLINE, |r| !r.of(id, "finished").is_empty())
        .await?;
    env.nats.kill().await?;
    let asked = std::time::Instant::now();
    worker.process.terminate()?;
    let status = worker.process.wait_exit(Duration::from_secs(60)).await?;
    eprintln!("exited {:?} after SIGTERM", asked.elapsed());
    assert!(
        status.success(),
        "exit after SIGTERM with NATS gone: {status:?}\n{}",
        worker.process.log_tail(30)
    );
    Ok(())
}
