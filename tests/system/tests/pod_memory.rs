//! The pod's memory under the chart's own defaults: the worker, configured as the chart
//! configures it (its concurrency, helm's memory limit, the container's memory limit as its
//! budget), deploys as many distinct services at once as the chart's concurrency, twice
//! (installs, then upgrades), while a sampler reads its process tree — the worker and its
//! helm children — from `/proc`. The tree's peak stays under 80% of the chart's memory limit.
//!
//! Two figures are held to that, both counting every helm at its whole resident size (its
//! share of helm's code included, which the kernel really charges to the pod once):
//! - the sampled peak: per sample, the sum of each live process's own peak RSS (`VmHWM`), so
//!   a helm that grew and exited between two samples is not missed;
//! - the worst case: the worker's peak plus as many of the largest helm as the worker runs at
//!   once, which holds however the helms happened to overlap on a busy machine.

use std::time::Duration;

use kube_sim::Config as SimConfig;
use serde_json::json;
use system_tests::chart;
use system_tests::deploy_env::{deployment_event, example_chart, small_storage_limits, DeployEnv};
use system_tests::events::publish;
use system_tests::process_tree::{mib, ProcessTreeSampler, Sampling};

/// Per batch of deployments.
const WAIT: Duration = Duration::from_secs(180);
/// How much of the limit the peak may use: the rest is room for charts larger than the
/// example, a heavier kernel share, and what the sampler cannot see.
const MOST_OF_LIMIT: f64 = 0.8;

#[tokio::test]
async fn the_chart_defaults_keep_their_concurrency_within_their_memory_limit() -> anyhow::Result<()>
{
    let defaults = chart::memory_defaults();
    let setting = |name: &str| {
        defaults
            .env(name)
            .unwrap_or_else(|| panic!("the chart sets no {name}"))
            .to_owned()
    };
    let concurrency: u32 = setting("MAX_CONCURRENT_TASKS").parse()?;
    let helm_memory_limit = setting("HELM_MEMORY_LIMIT");
    let limit_kib = defaults.limit_bytes / 1024;

    let env = DeployEnv::start(SimConfig::default()).await?;
    let services: Vec<String> = (1..=concurrency).map(|i| format!("mem-{i}")).collect();
    for service in &services {
        env.push_chart(("shop", "dev", service), &example_chart())?;
    }
    let mut spec = env.worker_spec();
    spec.concurrency = concurrency;
    spec.extra_args.extend(small_storage_limits());
    spec.env.extend([
        ("HELM_MEMORY_LIMIT".to_owned(), helm_memory_limit.clone()),
        // What the downward API hands the container: its memory limit in bytes.
        ("MEMORY_BUDGET".to_owned(), defaults.limit_bytes.to_string()),
    ]);
    let worker = env.start_worker(spec, "worker").await?;
    let slots = worker.metric("helm_service_helm_slots").await?;
    assert_eq!(
        slots,
        f64::from(concurrency),
        "the chart's memory limit must hold a helm process per task of its concurrency"
    );

    // No PSS: reading it costs the busy machine more than the figure is worth here.
    let sampler = ProcessTreeSampler::start(
        worker.process.pid(),
        Sampling {
            interval: Duration::from_millis(20),
            pss_every: 0,
        },
    );
    for (round, values) in [
        ("install", json!({})),
        ("upgrade", json!({"image": "ghcr.io/example/hello:2.0"})),
    ] {
        let mut ids = Vec::new();
        for service in &services {
            let id = format!("{round}-{service}");
            let event = deployment_event(&id, service, "direct", values.clone());
            publish(&env.env.js, &event).await?;
            ids.push(id);
        }
        env.all_succeeded(&ids, WAIT).await?;
    }
    let memory = sampler.finish();

    let helm = memory.largest_child("helm");
    let helms = memory.count("helm");
    // Two helm upgrades per deployment ran; a sampler starved by a busy machine may miss
    // some, never all.
    assert!(
        helms >= services.len(),
        "the sampler saw {helms} helm processes: {:?}",
        memory.descendants
    );
    assert!(helm.hwm > 0 && memory.root.hwm > 0, "{memory:?}");
    let sampled = memory.peak.hwm;
    let worst = memory.root.hwm + u64::from(concurrency) * helm.hwm;
    let share = |kib: u64| kib as f64 / limit_kib as f64;
    eprintln!(
        "chart defaults: concurrency {concurrency}, HELM_MEMORY_LIMIT {helm_memory_limit}, memory limit {:.0} MiB (request {:.0} MiB)",
        mib(limit_kib),
        mib(defaults.request_bytes / 1024)
    );
    eprintln!(
        "process tree over {} samples every {:?} ({helms} helm processes, at most {} processes at once):",
        memory.samples, memory.interval, memory.most_processes
    );
    eprintln!(
        "  peak, sum of each live process's peak RSS: {:.1} MiB = {:.0}% of the limit, margin {:.1} MiB (sum of current RSS {:.1} MiB)",
        mib(sampled),
        100.0 * share(sampled),
        mib(limit_kib.saturating_sub(sampled)),
        mib(memory.peak.rss)
    );
    eprintln!(
        "  worst case, worker {:.1} MiB + {concurrency} x largest helm {:.1} MiB: {:.1} MiB = {:.0}% of the limit, margin {:.1} MiB",
        mib(memory.root.hwm),
        mib(helm.hwm),
        mib(worst),
        100.0 * share(worst),
        mib(limit_kib.saturating_sub(worst))
    );
    for (what, kib) in [("sampled peak", sampled), ("worst case", worst)] {
        assert!(
            share(kib) <= MOST_OF_LIMIT,
            "{what} {:.1} MiB is over {:.0}% of the chart's memory limit of {:.0} MiB",
            mib(kib),
            100.0 * MOST_OF_LIMIT,
            mib(limit_kib)
        );
    }
    Ok(())
}
