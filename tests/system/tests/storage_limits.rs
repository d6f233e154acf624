//! Nothing the worker creates grows without bound: the Keptn stream it creates, its dead
//! letters, release records, inventory and chart bucket all carry the size (and age) limits
//! of the flags, and the worker's own ones follow a change of the flags on the next start.

use std::time::Duration;

use async_nats::jetstream;
use kube_sim::Config as SimConfig;
use system_tests::deploy_env::DeployEnv;

const MIB: i64 = 1 << 20;
const DAY: Duration = Duration::from_secs(86_400);

/// `(stream, max_age, max_bytes)` as the server has them.
async fn limits_of(js: &jetstream::Context, stream: &str) -> anyhow::Result<(Duration, i64)> {
    let mut bound = js.get_stream(stream).await?;
    let config = &bound.info().await?.config;
    Ok((config.max_age, config.max_bytes))
}

fn flags(dead_letter_days: u32, mib: i64) -> Vec<String> {
    [
        ("--keptn-stream-max-age", "3d".to_owned()),
        ("--keptn-stream-max-bytes", "100MiB".to_owned()),
        ("--dead-letter-max-age", format!("{dead_letter_days}d")),
        ("--dead-letter-max-bytes", format!("{mib}MiB")),
        ("--release-records-max-bytes", format!("{}MiB", mib + 1)),
        ("--inventory-max-bytes", format!("{}MiB", mib + 2)),
        ("--chart-bucket-max-bytes", format!("{}MiB", mib + 3)),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .collect()
}

/// The worker's own streams and buckets carry what `flags(dead_letter_days, mib)` set
/// (release records also expire after the default --ledger-ttl of 7 days).
async fn assert_own_limits(
    js: &jetstream::Context,
    dead_letter_days: u32,
    mib: i64,
) -> anyhow::Result<()> {
    let expected = [
        ("helm-service-dlq", (dead_letter_days * DAY, mib * MIB)),
        ("KV_helm-service-releases", (7 * DAY, (mib + 1) * MIB)),
        (
            "KV_helm-service-inventory",
            (Duration::ZERO, (mib + 2) * MIB),
        ),
        ("OBJ_helm-service-charts", (Duration::ZERO, (mib + 3) * MIB)),
    ];
    for (stream, limits) in expected {
        assert_eq!(limits_of(js, stream).await?, limits, "{stream}");
    }
    Ok(())
}

#[tokio::test]
async fn every_stream_and_bucket_the_worker_creates_is_limited_and_follows_the_flags(
) -> anyhow::Result<()> {
    let env = DeployEnv::start(SimConfig::default()).await?;
    let js = &env.env.js;
    let mut spec = env.worker_spec();
    spec.extra_args.extend(flags(2, 10));
    let _first = env.start_worker(spec, "first").await?;

    let keptn = (3 * DAY, 100 * MIB);
    assert_eq!(limits_of(js, "keptn").await?, keptn, "Keptn stream");
    assert_own_limits(js, 2, 10).await?;

    // New flags: the worker's own streams and buckets follow at the next start; the Keptn
    // stream, which exists now, is left as it is (a control plane may own it).
    let mut spec = env.worker_spec();
    spec.extra_args.extend(flags(5, 20));
    let _second = env.start_worker(spec, "second").await?;
    assert_eq!(
        limits_of(js, "keptn").await?,
        keptn,
        "Keptn stream untouched"
    );
    assert_own_limits(js, 5, 20).await?;
    Ok(())
}
