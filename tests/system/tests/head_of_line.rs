//! No head-of-line blocking: events waiting for a busy release give their slot to other
//! releases, so a burst on one service does not stall the others on the same replica.

use std::time::{Duration, Instant};

use system_tests::env::TestEnv;
use system_tests::events::{publish, triggered};
use system_tests::worker_process::WorkerProcess;

const PROBE_WORKER: &str = env!("CARGO_BIN_EXE_probe-worker");
const DEADLINE: Duration = Duration::from_secs(90);
/// How long one slow deployment takes.
const STEP: Duration = Duration::from_secs(3);
const WAITING: &str = "helm_service_tasks_waiting";

#[tokio::test]
async fn a_burst_on_one_release_does_not_hold_up_another() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let mut spec = env.worker(PROBE_WORKER);
    spec.concurrency = 2;
    // Long enough that no waiter claims the release by waiting out a TTL.
    spec.lease_ttl = "30s";
    spec.ack_wait = "10s";
    let worker = WorkerProcess::start(spec, env.dir.path(), "worker").await?;

    let step_ms = STEP.as_millis().to_string();
    let slow: Vec<String> = (1..=4)
        .map(|i| format!("5f1c6a2e-0000-4000-8000-0000000a000{i}"))
        .collect();
    for id in &slow {
        let labels = [("probe.step-ms", step_ms.as_str())];
        publish(
            &env.js,
            &triggered("deployment", id, ("sockshop", "dev", "carts"), &labels),
        )
        .await?;
    }
    // The first of them runs, the others wait for its release.
    test_harness::wait::wait_until(
        "the first slow deployment running",
        DEADLINE,
        Duration::from_millis(20),
        || async {
            env.probe_records()
                .iter()
                .any(|r| r.what == "step-start" && r.event_id == slow[0])
                .then_some(())
        },
    )
    .await?;

    let other = "5f1c6a2e-0000-4000-8000-0000000b0001";
    let published = Instant::now();
    publish(
        &env.js,
        &triggered("deployment", other, ("sockshop", "dev", "orders"), &[]),
    )
    .await?;
    let replies = env
        .wait_replies(DEADLINE, |r| !r.of(other, "finished").is_empty())
        .await?;
    let took = published.elapsed();
    assert_eq!(
        replies.of(other, "finished")[0]["data"]["status"],
        "succeeded"
    );
    // Behind the burst it would wait for three slow deployments (about 9s with 2 slots);
    // with a slot of its own it waits for none of them.
    assert!(
        took < STEP,
        "the other service waited {took:?} behind the burst (one slow deployment takes {STEP:?})"
    );
    let still_waiting = slow
        .iter()
        .filter(|id| replies.of(id, "finished").is_empty())
        .count();
    assert!(
        still_waiting >= 2,
        "the other service overtook the burst: {still_waiting} of it unfinished"
    );
    // The burst's unstarted events wait without a slot.
    let waiting = worker.metric(WAITING).await?;
    assert!(
        (1.0..=3.0).contains(&waiting),
        "{waiting} tasks waiting without a slot while {still_waiting} of the burst are unfinished"
    );

    // The burst itself finishes, one at a time.
    let replies = env
        .wait_replies(DEADLINE, |r| {
            slow.iter().all(|id| !r.of(id, "finished").is_empty())
        })
        .await?;
    for id in &slow {
        assert_eq!(replies.of(id, "finished").len(), 1, "{id}");
    }
    let records = env.probe_records();
    let mut spans: Vec<(u64, u64)> = slow
        .iter()
        .map(|id| {
            let at = |what: &str| {
                records
                    .iter()
                    .find(|r| r.what == what && &r.event_id == id)
                    .map(|r| r.at_ns)
                    .expect("recorded")
            };
            (at("begin"), at("end"))
        })
        .collect();
    spans.sort();
    assert!(
        spans.windows(2).all(|w| w[0].1 <= w[1].0),
        "tasks on one release never overlap: {spans:?}"
    );
    // Each waiter took a slot back as its turn came: none waits any more.
    test_harness::wait::wait_until(
        "no task waiting",
        DEADLINE,
        Duration::from_millis(20),
        || async { (worker.metric(WAITING).await.ok()? == 0.0).then_some(()) },
    )
    .await?;
    eprintln!("the other service finished {took:?} after it was published");
    Ok(())
}

/// A waiter takes its slot back before any pull: with every other slot in an idle pull
/// request (which keeps its slots up to the 2s pull expiry) and a lease TTL of 2s, each
/// event of a burst on one release starts right after the one before it ends, and none is
/// fenced or handed back.
#[tokio::test]
async fn a_waiting_task_gets_a_slot_before_idle_pulls_and_keeps_its_lease() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let mut spec = env.worker(PROBE_WORKER);
    spec.concurrency = 2;
    spec.lease_ttl = "2s";
    spec.ack_wait = "3s";
    let worker = WorkerProcess::start(spec, env.dir.path(), "worker").await?;

    let burst: Vec<String> = (1..=4)
        .map(|i| format!("5f1c6a2e-0000-4000-8000-0000000c000{i}"))
        .collect();
    for id in &burst {
        let labels = [("probe.step-ms", "1000")];
        publish(
            &env.js,
            &triggered("deployment", id, ("sockshop", "dev", "carts"), &labels),
        )
        .await?;
    }
    let replies = env
        .wait_replies(DEADLINE, |r| {
            burst.iter().all(|id| !r.of(id, "finished").is_empty())
        })
        .await?;
    for id in &burst {
        let finished = replies.of(id, "finished");
        assert_eq!(finished.len(), 1, "{id}");
        assert_eq!(finished[0]["data"]["status"], "succeeded", "{id}");
    }
    let records = env.probe_records();
    let mut spans: Vec<(u64, u64)> = burst
        .iter()
        .map(|id| {
            let at = |what: &str| {
                let times: Vec<u64> = records
                    .iter()
                    .filter(|r| r.what == what && &r.event_id == id)
                    .map(|r| r.at_ns)
                    .collect();
                assert_eq!(times.len(), 1, "{id} ran once: {what} {times:?}");
                times[0]
            };
            (at("begin"), at("end"))
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        let gap = Duration::from_nanos(pair[1].0.saturating_sub(pair[0].1));
        assert!(
            pair[0].1 <= pair[1].0 && gap < Duration::from_secs(1),
            "the next event starts {gap:?} after the one before it ends (an idle pull keeps a slot up to 2s): {spans:?}"
        );
    }
    let metrics = worker.metrics().await?;
    let naks: f64 = metrics
        .lines()
        .filter(|line| line.starts_with("helm_service_naks_total"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(naks, 0.0, "nothing handed back (fenced, lost):\n{metrics}");
    Ok(())
}
