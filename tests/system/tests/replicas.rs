//! Several worker replicas (separate processes) sharing one durable consumer.

use std::time::Duration;

use system_tests::env::TestEnv;
use system_tests::events::{publish, triggered};
use system_tests::probe::overlaps;
use system_tests::worker_process::WorkerProcess;

const PROBE_WORKER: &str = env!("CARGO_BIN_EXE_probe-worker");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_300_events_over_30_releases_without_overlap() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let mut workers = Vec::new();
    for index in 0..3 {
        let mut spec = env.worker(PROBE_WORKER);
        spec.concurrency = 4;
        workers.push(WorkerProcess::start(spec, env.dir.path(), &format!("worker-{index}")).await?);
    }

    let mut ids = Vec::new();
    for index in 0..300 {
        let id = format!("5f1c6a2e-0000-4000-8000-{index:012}");
        let service = format!("svc-{}", index % 30);
        let event = triggered(
            "deployment",
            &id,
            ("sockshop", "dev", &service),
            &[("probe.step-ms", "5")],
        );
        publish(&env.js, &event).await?;
        ids.push(id);
    }

    let replies = env
        .wait_replies(Duration::from_secs(120), |r| r.count("finished") >= 300)
        .await?;
    for id in &ids {
        assert_eq!(replies.of(id, "started").len(), 1, "{id}");
        let finished = replies.of(id, "finished");
        assert_eq!(finished.len(), 1, "{id}");
        assert_eq!(finished[0]["data"]["status"], "succeeded");
    }
    assert_eq!(replies.count("finished"), 300);

    let records = env.probe_records();
    let begins = records.iter().filter(|r| r.what == "begin").count();
    assert_eq!(begins, 300, "every event's handler ran exactly once");
    let overlapping = overlaps(&records);
    assert!(
        overlapping.is_empty(),
        "tasks overlapped on a release: {overlapping:#?}"
    );
    let pids: std::collections::BTreeSet<u32> = records.iter().map(|r| r.pid).collect();
    assert_eq!(pids.len(), 3, "all three replicas took work");
    for worker in &workers {
        assert!(!worker.process.log().contains("panicked"));
    }
    Ok(())
}
