//! `--replicas` on a real three-server JetStream cluster: every stream and bucket the worker
//! creates (the Keptn stream, dead letters, release records, inventory, chart bucket) gets that
//! many replicas, and the worker's own are brought in line when the flag changes.

use clap::Parser;
use test_harness::cluster::HEALTHY_DEADLINE;
use test_harness::NatsCluster;
use worker::charts::object_store::ObjectStoreCharts;
use worker::config::{Cli, Command, RunConfig};
use worker::deploy::inventory::Inventory;
use worker::nats::topology::{self, TopologyConfig};

fn run_config(replicas: &str) -> RunConfig {
    match Cli::try_parse_from(["helm-service", "run", "--replicas", replicas])
        .expect("flags parse")
        .command
    {
        Command::Run(config) => *config,
        _ => unreachable!(),
    }
}

/// Binds everything the production worker binds, as `app` does.
async fn bind_all(js: &async_nats::jetstream::Context, config: &RunConfig) -> anyhow::Result<()> {
    let limits = config.limits.limits(config.release_record_ttl);
    let topology_config = TopologyConfig {
        stream: config.stream.clone(),
        consumer: config.consumer.clone(),
        ack_wait: config.ack_wait,
        state_prefix: config.state_prefix.clone(),
        limits,
    };
    topology::bind(js, &topology_config).await?;
    Inventory::open(js, "helm-service-inventory", limits.inventory).await?;
    ObjectStoreCharts::open(js, "helm-service-charts", 1 << 20).await?;
    topology::enforce_limits(js, "OBJ_helm-service-charts", limits.chart_bucket)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(())
}

async fn replicas(js: &async_nats::jetstream::Context, stream: &str) -> anyhow::Result<usize> {
    Ok(js
        .get_stream(stream)
        .await?
        .info()
        .await?
        .config
        .num_replicas)
}

const OWN: [&str; 4] = [
    "helm-service-dlq",
    "KV_helm-service-releases",
    "KV_helm-service-inventory",
    "OBJ_helm-service-charts",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_and_bucket_gets_the_replicas_of_the_flag() -> anyhow::Result<()> {
    let mut cluster = NatsCluster::start(3).await?;
    let js = cluster.jetstream().await?;

    bind_all(&js, &run_config("3")).await?;
    assert_eq!(replicas(&js, "keptn").await?, 3);
    for stream in OWN {
        assert_eq!(replicas(&js, stream).await?, 3, "{stream}");
    }
    cluster.wait_healthy(&js, HEALTHY_DEADLINE).await?;

    // Fewer replicas on the next start: the worker's own follow, the Keptn stream (which a
    // control plane may own) stays as it is.
    bind_all(&js, &run_config("1")).await?;
    assert_eq!(replicas(&js, "keptn").await?, 3);
    for stream in OWN {
        assert_eq!(replicas(&js, stream).await?, 1, "{stream}");
    }
    Ok(())
}
