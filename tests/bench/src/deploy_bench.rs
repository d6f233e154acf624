//! Deployment benchmark (BENCHMARKS.md, "Deployments").
//!
//! In one run, against one kube-sim with a 500 ms rollout delay:
//! (a) 40 services deployed through the worker (direct strategy, the example chart,
//!     concurrency 4), from publishing the 40 events to the last `.finished`;
//! (b) the same 40 with a sequential loop of `helm upgrade --install --wait`, what an
//!     operator's script would do;
//! (c) per service, a real upgrade (new image) and then an unchanged redeploy, each
//!     timed from publish to the `time` stamped on its `.finished`, sequentially.
//! Prints the wall times, the ratio (a)/(b) and the median ratio (c) unchanged/upgrade.

use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use system_tests::deploy_env::{deployment_event, example_chart, helm_bin, DeployEnv};
use system_tests::events::publish;

#[derive(Parser)]
struct Args {
    /// Services deployed in (a) and (b).
    #[arg(long, default_value_t = 40)]
    services: usize,
    /// Worker concurrency.
    #[arg(long, default_value_t = 4)]
    concurrency: u32,
    /// Services used for the upgrade/unchanged comparison (c).
    #[arg(long, default_value_t = 10)]
    unchanged_samples: usize,
}

const WAIT: Duration = Duration::from_secs(600);

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Seconds from `published_at` to the time the worker stamped on its `.finished` reply: what
/// the user waits for, without the bench's own reading of the stream (which grows with every
/// event the run has published).
fn publish_to_reply(
    published_at: chrono::DateTime<chrono::Utc>,
    finished: &serde_json::Value,
) -> anyhow::Result<f64> {
    let time = finished["time"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the reply has no time: {finished:#}"))?;
    let replied_at = chrono::DateTime::parse_from_rfc3339(time)?;
    Ok((replied_at.with_timezone(&chrono::Utc) - published_at)
        .to_std()
        .map_err(|_| anyhow::anyhow!("the reply's time {time} is before the publish"))?
        .as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let env = DeployEnv::start(kube_sim::Config {
        rollout_delay: Duration::from_millis(500),
        ..kube_sim::Config::default()
    })
    .await?;
    let services: Vec<String> = (1..=args.services).map(|i| format!("svc-{i:02}")).collect();
    for service in &services {
        env.push_chart(("shop", "dev", service), &example_chart())?;
    }
    let mut spec = env.worker_spec();
    spec.concurrency = args.concurrency;
    let _worker = env.start_worker(spec, "bench-worker").await?;

    // (a) the worker.
    let started = Instant::now();
    let mut ids = Vec::new();
    for service in &services {
        let id = format!("bench-{service}");
        publish(
            &env.env.js,
            &deployment_event(&id, service, "direct", json!({})),
        )
        .await?;
        ids.push(id);
    }
    env.all_succeeded(&ids, WAIT).await?;
    let worker_wall = started.elapsed();

    // (b) the sequential helm loop, into its own namespace.
    let chart_dir = env.env.dir.path().join("packaged");
    std::fs::create_dir_all(&chart_dir)?;
    env.helm(&[
        "package",
        &example_chart().display().to_string(),
        "-d",
        &chart_dir.display().to_string(),
    ])
    .await?;
    let chart = chart_dir.join("hello-0.1.0.tgz").display().to_string();
    let started = Instant::now();
    for service in &services {
        let release = format!("loop-{service}");
        let service_value = format!("keptn.service={service}");
        env.helm(&[
            "upgrade",
            "--install",
            &release,
            &chart,
            "-n",
            "loop",
            "--create-namespace",
            "--wait",
            "--timeout",
            "5m",
            "--set",
            &service_value,
        ])
        .await?;
    }
    let loop_wall = started.elapsed();
    let _ = helm_bin();

    // (c) a real upgrade vs an unchanged redeploy, per service.
    let mut upgrade = Vec::new();
    let mut unchanged = Vec::new();
    // The same, as the bench's client saw it: until it read the `.finished` back, which
    // includes opening a consumer and reading the stream from its start.
    let mut upgrade_seen = Vec::new();
    let mut unchanged_seen = Vec::new();
    for service in services.iter().take(args.unchanged_samples) {
        let values = json!({"image": "ghcr.io/example/hello:2.0"});
        for (round, times, seen) in [
            ("up", &mut upgrade, &mut upgrade_seen),
            ("same", &mut unchanged, &mut unchanged_seen),
        ] {
            let event = deployment_event(
                &format!("{round}-{service}"),
                service,
                "direct",
                values.clone(),
            );
            let published_at = chrono::Utc::now();
            let started = Instant::now();
            let finished = env.deploy(&event, WAIT).await?;
            seen.push(started.elapsed().as_secs_f64());
            anyhow::ensure!(finished["data"]["status"] == "succeeded", "{finished:#}");
            times.push(publish_to_reply(published_at, &finished)?);
        }
    }
    let upgrade_median = median(upgrade);
    let unchanged_median = median(unchanged);

    println!(
        "deployments: {} services, worker concurrency {}, kube-sim rollout delay 500 ms",
        args.services, args.concurrency
    );
    println!(
        "  (a) worker wall time:          {:>8.2} s",
        worker_wall.as_secs_f64()
    );
    println!(
        "  (b) sequential helm loop:      {:>8.2} s",
        loop_wall.as_secs_f64()
    );
    println!(
        "  ratio (a)/(b):                 {:>8.2}   (target <= 0.60)",
        worker_wall.as_secs_f64() / loop_wall.as_secs_f64()
    );
    println!(
        "  (c) real upgrade, median:      {:>8.1} ms ({} samples)",
        upgrade_median * 1000.0,
        args.unchanged_samples
    );
    println!(
        "      unchanged redeploy, median:{:>8.1} ms",
        unchanged_median * 1000.0
    );
    println!(
        "      ratio unchanged/upgrade:   {:>8.3}   (target <= 0.05)",
        unchanged_median / upgrade_median
    );
    let (upgrade_seen, unchanged_seen) = (median(upgrade_seen), median(unchanged_seen));
    println!(
        "      as the client saw them:    upgrade {:.1} ms, unchanged {:.1} ms, ratio {:.3} (reading the stream included)",
        upgrade_seen * 1000.0,
        unchanged_seen * 1000.0,
        unchanged_seen / upgrade_seen
    );
    Ok(())
}
