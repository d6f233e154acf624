//! Fencing: a replica cut off from NATS, but not from the cluster, stops its task (and the
//! helm it runs) before its lease may be taken over, and the other replica finishes the event
//! once.
//!
//! Replica A reaches nats-server through a loopback proxy, replica B directly. A takes a
//! deployment whose helm hangs in the cluster (kube-sim latency on Deployments), then the
//! proxy black-holes A's connections: nothing is closed, nothing more arrives, as in a
//! network partition, so A learns of it only from its lease refreshes going unanswered.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use kube_sim::{Config as SimConfig, FaultConfig};
use serde_json::json;
use system_tests::deploy_env::{deployment_event, example_chart, DeployEnv};
use system_tests::worker_process::WorkerProcess;
use test_harness::wait::wait_until;
use test_harness::{ProcessInfo, TcpProxy};

/// The lease TTL of both replicas (`--lease-ttl`). A's last refresh was sent before the
/// partition, so its fence (two thirds of the TTL after that) leaves at least 3s for noticing
/// A's stop on a loaded machine.
const TTL: Duration = Duration::from_secs(9);
const TTL_FLAG: &str = "9s";
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);
const NS: &str = "shop-dev";
const V2: &str = "ghcr.io/example/hello:2.0";
/// What A logs when it fences its task (`pipeline::lease`).
const FENCED: &str = "could not refresh the release lease for two thirds of its TTL";
/// What B logs when it takes the release over from the silent A.
const TOOK_OVER: &str = "took over a release whose holder stopped refreshing it";
/// Deployments a replica answered succeeded (Prometheus sorts the labels by name).
const SUCCEEDED: &str = "helm_service_events_finished_total{result=\"pass\",status=\"succeeded\",type=\"sh.keptn.event.deployment.triggered\"}";

/// The `helm upgrade` that `worker` runs now, if any.
fn helm_upgrade_of(worker: &WorkerProcess) -> Option<ProcessInfo> {
    ProcessInfo::live_children(worker.process.pid())
        .into_iter()
        .find(|p| {
            p.argv.first().is_some_and(|bin| bin.ends_with("/helm"))
                && p.argv.iter().any(|arg| arg == "upgrade")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_partitioned_from_nats_stops_its_helm_before_the_ttl_and_the_other_finishes_once(
) -> anyhow::Result<()> {
    let env = DeployEnv::start(SimConfig::default()).await?;
    env.push_chart(("shop", "dev", "hello"), &example_chart())?;
    let proxy = TcpProxy::to_port(env.env.nats.port()).await?;
    let spec = |nats_url: String| {
        let mut spec = env.worker_spec();
        spec.nats_url = nats_url;
        spec.ack_wait = "2s";
        spec.lease_ttl = TTL_FLAG;
        spec
    };
    let mut a = env.start_worker(spec(proxy.nats_url()), "a").await?;
    assert!(proxy.connections() >= 1, "A connects through the proxy");

    // A's helm will hang in the cluster, as long as the test lets it.
    env.sim.faults().set(FaultConfig {
        latency: Duration::from_secs(300),
        latency_path: Some("/deployments".into()),
        ..FaultConfig::default()
    });
    let id = "d1";
    system_tests::events::publish(
        &env.env.js,
        &deployment_event(id, "hello", "direct", json!({})),
    )
    .await?;
    env.env
        .wait_replies(DEADLINE, |r| r.of(id, "started").len() == 1)
        .await?;
    let helm = wait_until("A's helm upgrade", DEADLINE, POLL, || async {
        helm_upgrade_of(&a)
    })
    .await?;
    // B only now: the event is A's.
    let mut b = env.start_worker(spec(env.env.nats.url()), "b").await?;

    let partitioned = Instant::now();
    proxy.partition();
    anyhow::ensure!(
        !ProcessInfo::live_group(helm.group).is_empty(),
        "A's helm ended before the partition: {helm:?}"
    );
    let fenced = wait_until("A to fence its task", DEADLINE, POLL, || async {
        a.process
            .log()
            .contains(FENCED)
            .then(|| partitioned.elapsed())
    })
    .await?;
    let helm_gone = wait_until("A's helm to be gone", TTL, POLL, || async {
        ProcessInfo::live_group(helm.group)
            .is_empty()
            .then(|| partitioned.elapsed())
    })
    .await
    .with_context(|| {
        format!("A fenced its task {fenced:?} into the partition, but its helm runs on: {helm:?}")
    })?;
    let b_log = b.process.log();
    eprintln!("A fenced its task {fenced:?} after the partition, its helm was gone {helm_gone:?} after it (TTL {TTL:?})");
    assert!(
        fenced < TTL && helm_gone < TTL,
        "A's task ran {fenced:?} and its helm {helm_gone:?} into the partition; B may take over after {TTL:?}:\n{}",
        a.process.log_tail(30)
    );
    assert!(
        !b_log.contains(TOOK_OVER),
        "B took over before A stopped:\n{b_log}"
    );
    assert!(
        helm_upgrade_of(&a).is_none(),
        "A runs helm again: {:?}",
        helm_upgrade_of(&a)
    );
    env.sim.faults().set(FaultConfig::default());

    // B gets the event redelivered, takes the release over once A's lease has run out, and
    // finishes it.
    let (finished, replies) = env.sole_finished(id, DEADLINE).await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    assert_eq!(replies.of(id, "started").len(), 1, "{replies:#?}");
    assert!(
        b.process.log().contains(TOOK_OVER),
        "{}",
        b.process.log_tail(30)
    );
    // Counted just after the reply is published.
    wait_until("B to count its answer", DEADLINE, POLL, || async {
        (b.metric(SUCCEEDED).await.ok()? == 1.0).then_some(())
    })
    .await?;
    assert_eq!(a.metric(SUCCEEDED).await?, 0.0);
    let history = env.helm_history("shop-dev-hello", NS).await?;
    assert_eq!(
        history.last().map(|(_, status)| status.as_str()),
        Some("deployed"),
        "{history:?}"
    );

    // B leaves. Healed, A delivers whatever it buffered during the partition (none of it a
    // second answer), works again, and shuts down cleanly.
    let status = b.process.stop(Duration::from_secs(30)).await?;
    assert!(status.success(), "{status:?}\n{}", b.process.log_tail(30));
    proxy.heal();
    let again = env
        .deploy(
            &deployment_event("d2", "hello", "direct", json!({"image": V2})),
            DEADLINE,
        )
        .await?;
    assert_eq!(again["data"]["status"], "succeeded", "{again:#}");
    assert_eq!(env.image_and_replicas(NS, "hello").await?.0, V2);
    wait_until("A to count its answer", DEADLINE, POLL, || async {
        (a.metric(SUCCEEDED).await.ok()? == 1.0).then_some(())
    })
    .await?;
    let status = a.process.stop(Duration::from_secs(30)).await?;
    assert!(status.success(), "{status:?}\n{}", a.process.log_tail(30));
    let replies = env.env.replies().await?;
    assert_eq!(replies.of(id, "finished").len(), 1, "{replies:#?}");
    assert_eq!(replies.of(id, "started").len(), 1, "{replies:#?}");
    assert!(env.env.dead_letters().await?.is_empty());
    Ok(())
}
