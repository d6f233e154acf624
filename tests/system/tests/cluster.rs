//! A three-server JetStream cluster with everything at three replicas (`--replicas 3`): three
//! worker replicas pointed at the seed list work through 300 events over 30 releases while the
//! server leading the Keptn stream is killed (SIGKILL) and restarted, and then every server is
//! restarted in turn. Every event is answered exactly once in the stream, no two operations on
//! a release ever overlap (the probe's log), nothing is lost or dead-lettered.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::HeaderMap;
use system_tests::events::{collect_replies, triggered};
use system_tests::probe::{overlaps, read_log, ProbeRecord};
use system_tests::worker_process::{WorkerProcess, WorkerSpec};
use test_harness::cluster::HEALTHY_DEADLINE;
use test_harness::NatsCluster;

const PROBE_WORKER: &str = env!("CARGO_BIN_EXE_probe-worker");
const EVENTS: usize = 300;
const RELEASES: usize = 30;

fn event_id(index: usize) -> String {
    format!("5f1c6a2e-0000-4000-8000-c1{index:010}")
}

/// Publishes every event with its id as `Nats-Msg-Id` (a publish repeated after a lost ack is
/// dropped by the duplicate window), one every `pace`, retrying through elections.
async fn publish_all(js: jetstream::Context, pace: Duration) -> anyhow::Result<()> {
    for index in 0..EVENTS {
        let id = event_id(index);
        let service = format!("svc-{}", index % RELEASES);
        let event = triggered(
            "deployment",
            &id,
            ("sockshop", "dev", &service),
            &[("probe.step-ms", "100")],
        );
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        let payload = bytes::Bytes::from(event.to_string());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let attempt = async {
                js.publish_with_headers(
                    "sh.keptn.event.deployment.triggered",
                    headers.clone(),
                    payload.clone(),
                )
                .await?
                .await?;
                Ok::<_, anyhow::Error>(())
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(())) => break,
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Ok(Err(err)) => return Err(err.context(format!("publishing {id}"))),
                Err(_) => anyhow::bail!("publishing {id} timed out"),
            }
        }
        tokio::time::sleep(pace).await;
    }
    Ok(())
}

/// Runs of the handler and runs of its steps, each as begin/end records for [`overlaps`].
fn steps_as_runs(records: &[ProbeRecord]) -> Vec<ProbeRecord> {
    records
        .iter()
        .filter_map(|record| {
            let what = match record.what.as_str() {
                "step-start" => "begin",
                "step-done" => "end",
                _ => return None,
            };
            Some(ProbeRecord {
                what: what.into(),
                ..record.clone()
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_an_r3_cluster_survive_a_leader_kill_and_a_rolling_restart(
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut cluster = NatsCluster::start(3).await?;
    let js = cluster.jetstream().await?;
    let dir = tempfile::Builder::new()
        .prefix("helm-service-cluster-")
        .tempdir()?;
    let probe_log = dir.path().join("probe.jsonl");

    let mut workers = Vec::new();
    for index in 0..3 {
        let mut spec = WorkerSpec::new(PROBE_WORKER, &cluster.urls());
        spec.probe_log = Some(probe_log.clone());
        spec.ack_wait = "10s";
        spec.lease_ttl = "10s";
        spec.extra_args = vec!["--replicas".into(), "3".into()];
        workers.push(WorkerProcess::start(spec, dir.path(), &format!("worker-{index}")).await?);
    }
    for stream in ["keptn", "helm-service-dlq", "KV_helm-service-releases"] {
        let info = js.get_stream(stream).await?.info().await?.clone();
        assert_eq!(info.config.num_replicas, 3, "{stream} has three replicas");
    }
    cluster.wait_healthy(&js, HEALTHY_DEADLINE).await?;

    let publisher = tokio::spawn(publish_all(js.clone(), Duration::from_millis(40)));

    // The server leading the Keptn stream dies mid-stream and comes back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = NatsCluster::stream_leader(&js, "keptn").await?;
    let index = cluster.index_of(&leader)?;
    eprintln!(
        "{:?}: killing the keptn stream leader {leader}",
        started.elapsed()
    );
    cluster.server(index).kill().await?;
    // The two others elect a new leader (raft's election timeout is several seconds).
    let new_leader = test_harness::wait_until_ok(
        "a new leader of the keptn stream",
        Duration::from_secs(45),
        Duration::from_millis(100),
        || async {
            let now = NatsCluster::stream_leader(&js, "keptn").await?;
            anyhow::ensure!(now != leader, "still {now}");
            Ok(now)
        },
    )
    .await?;
    eprintln!(
        "{:?}: {new_leader} leads the keptn stream",
        started.elapsed()
    );
    cluster.server(index).restart().await?;
    cluster.wait_healthy(&js, HEALTHY_DEADLINE).await?;
    eprintln!("{:?}: {leader} back, cluster healthy", started.elapsed());

    // Rolling restart: one server at a time, each back and caught up before the next goes.
    for index in 0..cluster.len() {
        cluster.server(index).restart().await?;
        cluster.wait_healthy(&js, HEALTHY_DEADLINE).await?;
        eprintln!(
            "{:?}: n{index} restarted, cluster healthy",
            started.elapsed()
        );
    }
    publisher.await??;

    let (replies, bodies) = collect_replies(&js, Duration::from_secs(90), |r| {
        r.count("finished") >= EVENTS
    })
    .await?;
    eprintln!("{:?}: all {EVENTS} finished", started.elapsed());
    let triggered_ids: Vec<String> = bodies
        .iter()
        .filter(|body| body["type"] == "sh.keptn.event.deployment.triggered")
        .filter_map(|body| body["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        triggered_ids.len(),
        EVENTS,
        "each event is in the stream once"
    );
    for index in 0..EVENTS {
        let id = event_id(index);
        assert_eq!(replies.of(&id, "started").len(), 1, "{id} started once");
        let finished = replies.of(&id, "finished");
        assert_eq!(finished.len(), 1, "{id} finished once");
        assert_eq!(finished[0]["data"]["status"], "succeeded", "{id}");
    }
    assert_eq!(replies.count("finished"), EVENTS);

    let records = read_log(&probe_log);
    let runs = overlaps(&records);
    assert!(
        runs.is_empty(),
        "handler runs overlapped on a release: {runs:#?}"
    );
    let steps = overlaps(&steps_as_runs(&records));
    assert!(
        steps.is_empty(),
        "steps overlapped on a release: {steps:#?}"
    );
    let begins = records.iter().filter(|r| r.what == "begin").count();
    let pids: BTreeSet<u32> = records.iter().map(|r| r.pid).collect();
    eprintln!(
        "{EVENTS} events, {begins} handler runs (more than one: resumed after a failover), \
         {} replicas worked; stream leader {leader} killed, {new_leader} elected",
        pids.len()
    );
    assert!(begins >= EVENTS);
    assert_eq!(pids.len(), 3, "all three replicas took work");
    let dead_letters = test_harness::stream::stream_json(&js, "helm-service-dlq", "").await?;
    assert!(dead_letters.is_empty(), "dead letters: {dead_letters:#?}");
    for worker in &mut workers {
        assert!(
            worker.process.is_running(),
            "{} still runs",
            worker.process.name()
        );
        assert!(!worker.process.log().contains("panicked"));
    }
    Ok(())
}
