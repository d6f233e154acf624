//! Memory benchmark (BENCHMARKS.md, "Memory of the pod").
//!
//! What a pod's memory limit has to hold is the worker *and* its helm children. Against one
//! kube-sim, the production worker (release build, its own process) deploys `c` distinct
//! services at once (direct strategy, the example chart, a new image each time so helm
//! really upgrades) with `--concurrency c`, while a sampler reads the worker's process tree
//! from `/proc` every `--interval-ms` (`system_tests::process_tree`: peaks of the summed RSS,
//! PSS and anonymous memory, each process's own peak RSS, and the HWM bound).
//!
//! Every batch runs on a fresh worker (its own peak RSS is then the batch's), started with
//! the variant's environment (e.g. `HELM_GOMEMLIMIT=off`, or `GOGC=50`, which the helm
//! children inherit). Levels are `--concurrency` plus the chart's default
//! (`MAX_CONCURRENT_TASKS` of the rendered chart); services are installed once per level
//! before the measured rounds, and within a round the variants run in an order rotated per
//! level and round, so drift on the shared machine hits each evenly. Prints medians over
//! the rounds; exits non-zero on errors only.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use benches::finished::Finished;
use benches::stats::median;
use clap::Parser;
use serde_json::json;
use system_tests::chart;
use system_tests::deploy_env::{
    deployment_event, example_chart, example_chart_with, small_storage_limits, DeployEnv,
};
use system_tests::events::publish;
use system_tests::process_tree::{mib, ProcessTreeSampler, Sampling, TreeMemory};
use system_tests::worker_process::WorkerProcess;

#[derive(Parser)]
struct Args {
    /// Concurrency levels (the chart's default is added).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    concurrency: Vec<u32>,
    /// Measured rounds per level and variant.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Sampling interval of the process tree, milliseconds.
    #[arg(long, default_value_t = 10)]
    interval_ms: u64,
    /// Read PSS on every this many samples (0: never); it costs 0.3 to 2 ms per helm.
    #[arg(long, default_value_t = 5)]
    pss_every: u32,
    /// Milliseconds kube-sim's pods take to become ready.
    #[arg(long, default_value_t = 200)]
    rollout_delay_ms: u64,
    /// ConfigMaps of 4 KiB added to the example chart (a bigger release for helm to
    /// render, diff and store); 0 deploys the example chart as it is.
    #[arg(long, default_value_t = 0)]
    configmaps: usize,
    /// A variant: `NAME` or `NAME=VAR=VALUE,VAR=VALUE` (environment of the worker, which
    /// its helm children inherit). Repeat to compare; default: the worker's defaults.
    #[arg(long = "variant")]
    variants: Vec<String>,
}

const WAIT: Duration = Duration::from_secs(300);

/// A worker environment to measure.
#[derive(Debug, Clone)]
struct Variant {
    name: String,
    env: Vec<(String, String)>,
}

impl Variant {
    fn parse(text: &str) -> anyhow::Result<Variant> {
        let (name, env) = text.split_once('=').unwrap_or((text, ""));
        let env = env
            .split(',')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair
                    .split_once('=')
                    .with_context(|| format!("{pair:?} in variant {text:?}: expected VAR=VALUE"))?;
                Ok((key.to_owned(), value.to_owned()))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Variant {
            name: name.to_owned(),
            env,
        })
    }

    fn describe(&self) -> String {
        if self.env.is_empty() {
            return "worker defaults".into();
        }
        self.env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// One batch: `c` deployments at once on a fresh worker.
struct Batch {
    memory: TreeMemory,
    /// Publish of the batch → last `.finished`.
    wall: Duration,
    /// Mean publish → `.finished` of its deployments.
    mean_latency: Duration,
    /// Mean time of one helm process (the worker's histogram).
    mean_helm: Duration,
    helm_calls: f64,
    /// helm processes the worker ran at once (its memory budget).
    slots: f64,
    /// Mean wait of a helm call for a slot.
    mean_slot_wait: Duration,
}

fn services(c: u32) -> Vec<String> {
    (1..=c).map(|i| format!("m{c}-{i}")).collect()
}

/// Sum and count of `helm_service_helm_operation_seconds` over all operations and outcomes.
async fn helm_seconds(worker: &WorkerProcess) -> anyhow::Result<(f64, f64)> {
    let text = worker.metrics().await?;
    let total = |series: &str| -> f64 {
        text.lines()
            .filter(|line| line.starts_with(series))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    Ok((
        total("helm_service_helm_operation_seconds_sum"),
        total("helm_service_helm_operation_seconds_count"),
    ))
}

async fn run_batch(
    env: &DeployEnv,
    finished: &Finished,
    variant: &Variant,
    c: u32,
    tag: &str,
    sampling: Sampling,
) -> anyhow::Result<Batch> {
    let mut spec = env.worker_spec();
    spec.concurrency = c;
    spec.extra_args.extend(small_storage_limits());
    spec.env.extend(variant.env.iter().cloned());
    let mut worker = env
        .start_worker(spec, &format!("worker-{}-{tag}", variant.name))
        .await?;
    let sampler = ProcessTreeSampler::start(worker.process.pid(), sampling);
    let started = Instant::now();
    let mut ids = Vec::new();
    for service in services(c) {
        let id = format!("{}-{tag}-{service}", variant.name);
        let values = json!({"image": format!("ghcr.io/example/hello:{tag}")});
        publish(
            &env.env.js,
            &deployment_event(&id, &service, "direct", values),
        )
        .await?;
        ids.push(id);
    }
    let mut latencies = Vec::new();
    for id in &ids {
        let (at, reply) = finished.wait(id, WAIT).await?;
        ensure!(
            reply["data"]["status"] == "succeeded",
            "{id} did not succeed: {reply:#}"
        );
        latencies.push(at.duration_since(started));
    }
    let memory = sampler.finish();
    let wall = latencies.iter().copied().max().unwrap_or_default();
    let (helm_sum, helm_count) = helm_seconds(&worker).await?;
    let slots = worker.metric("helm_service_helm_slots").await?;
    let slot_wait = worker
        .metric("helm_service_helm_slot_wait_seconds_sum")
        .await?;
    ensure!(
        helm_count > 0.0,
        "{tag}: no helm call (an unchanged redeploy?)"
    );
    worker.process.stop(Duration::from_secs(30)).await?;
    Ok(Batch {
        memory,
        wall,
        mean_latency: latencies.iter().sum::<Duration>() / c,
        mean_helm: Duration::from_secs_f64(helm_sum / helm_count.max(1.0)),
        helm_calls: helm_count,
        slots,
        mean_slot_wait: Duration::from_secs_f64(slot_wait / helm_count.max(1.0)),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let variants: Vec<Variant> = if args.variants.is_empty() {
        vec![Variant::parse("defaults")?]
    } else {
        args.variants
            .iter()
            .map(|v| Variant::parse(v))
            .collect::<anyhow::Result<_>>()?
    };
    let defaults = chart::memory_defaults();
    let chart_concurrency: u32 = defaults
        .env("MAX_CONCURRENT_TASKS")
        .context("the chart sets no MAX_CONCURRENT_TASKS")?
        .parse()?;
    let mut levels = args.concurrency.clone();
    levels.push(chart_concurrency);
    levels.sort_unstable();
    levels.dedup();
    let sampling = Sampling {
        interval: Duration::from_millis(args.interval_ms),
        pss_every: args.pss_every,
    };

    let env = DeployEnv::start(kube_sim::Config {
        rollout_delay: Duration::from_millis(args.rollout_delay_ms),
        ..kube_sim::Config::default()
    })
    .await?;
    let finished = Finished::start(&env.env.nats.url()).await?;
    let chart = if args.configmaps == 0 {
        example_chart()
    } else {
        let bulk = format!(
            "{{{{- range $i := until {} }}}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{{{ $.Values.keptn.service }}}}-bulk-{{{{ $i }}}}\ndata:\n  payload: {{{{ printf \"%d-%s\" $i (repeat 4096 \"x\") | quote }}}}\n{{{{- end }}}}\n",
            args.configmaps
        );
        example_chart_with(
            &env.env.dir.path().join("bulk"),
            &[("templates/bulk.yaml", &bulk)],
        )?
    };
    for &c in &levels {
        for service in services(c) {
            env.push_chart(("shop", "dev", &service), &chart)?;
        }
        // Installs: the measured rounds upgrade.
        run_batch(
            &env,
            &finished,
            &variants[0],
            c,
            &format!("install-c{c}"),
            sampling,
        )
        .await?;
    }

    let mut results: BTreeMap<(usize, u32), Vec<Batch>> = BTreeMap::new();
    for round in 1..=args.rounds {
        for (l, &c) in levels.iter().enumerate() {
            for k in 0..variants.len() {
                let v = (k + round + l) % variants.len();
                // A new image per batch: the same one again would be an unchanged redeploy,
                // answered without helm.
                let tag = format!("r{round}-c{c}-{}", variants[v].name);
                let batch = run_batch(&env, &finished, &variants[v], c, &tag, sampling).await?;
                let helm = batch.memory.largest_child("helm");
                eprintln!(
                    "round {round} c={c} {}: tree RSS peak {:.1} MiB (PSS {:.1}, anon {:.1}), worker {:.1}, largest helm {:.1} (anon {:.1}, PSS {:.1}; {} helms, {} calls), wall {} ms, helm call {} ms (CPU {} ms)",
                    variants[v].name,
                    mib(batch.memory.peak.rss),
                    mib(batch.memory.peak.pss),
                    mib(batch.memory.peak.anon),
                    mib(batch.memory.root.hwm),
                    mib(helm.hwm),
                    mib(helm.anon),
                    mib(helm.pss),
                    batch.memory.count("helm"),
                    batch.helm_calls,
                    batch.wall.as_millis(),
                    batch.mean_helm.as_millis(),
                    batch.memory.mean_child_cpu("helm").as_millis()
                );
                results.entry((v, c)).or_default().push(batch);
            }
        }
    }
    let dead = env.env.dead_letters().await?;
    ensure!(dead.is_empty(), "dead letters: {dead:#?}");
    report(
        &args,
        &variants,
        &levels,
        chart_concurrency,
        &defaults,
        &results,
    );
    Ok(())
}

fn report(
    args: &Args,
    variants: &[Variant],
    levels: &[u32],
    chart_concurrency: u32,
    defaults: &chart::MemoryDefaults,
    results: &BTreeMap<(usize, u32), Vec<Batch>>,
) {
    let chart = match args.configmaps {
        0 => "example chart".to_owned(),
        n => format!("example chart + {n} ConfigMaps of 4 KiB"),
    };
    println!(
        "memory of the process tree: c deployments at once (direct, {chart}, upgrades), {} rounds, kube-sim rollout delay {} ms, sampled every {} ms (PSS every {} samples)",
        args.rounds, args.rollout_delay_ms, args.interval_ms, args.pss_every
    );
    println!(
        "chart defaults: concurrency {chart_concurrency}, memory request {:.0} MiB, limit {:.0} MiB",
        defaults.request_bytes as f64 / f64::from(1 << 20),
        defaults.limit_bytes as f64 / f64::from(1 << 20)
    );
    println!("medians over rounds, MiB (max in brackets); times in ms");
    for (v, variant) in variants.iter().enumerate() {
        println!("variant {}: {}", variant.name, variant.describe());
        println!(
            "   c | tree RSS       | tree PSS | tree anon | HWM bound      | worker | largest helm   | its anon | helms | wall  | latency | helm call | its CPU | slots | slot wait"
        );
        for &c in levels {
            let Some(batches) = results.get(&(v, c)) else {
                continue;
            };
            let of = |f: &dyn Fn(&Batch) -> f64| -> Vec<f64> { batches.iter().map(f).collect() };
            let with_max = |values: Vec<f64>| {
                let max = values.iter().copied().fold(0.0, f64::max);
                format!("{:6.1} [{:5.1}]", median(&values), max)
            };
            let rss = of(&|b| mib(b.memory.peak.rss));
            let pss = of(&|b| mib(b.memory.peak.pss));
            let anon = of(&|b| mib(b.memory.peak.anon));
            let bound = of(&|b| mib(b.memory.peak.hwm));
            let worker = of(&|b| mib(b.memory.root.hwm));
            let helm = of(&|b| mib(b.memory.largest_child("helm").hwm));
            let helm_anon = of(&|b| mib(b.memory.largest_child("helm").anon));
            let helms = of(&|b| b.memory.count("helm") as f64);
            let wall = of(&|b| b.wall.as_secs_f64() * 1000.0);
            let latency = of(&|b| b.mean_latency.as_secs_f64() * 1000.0);
            let helm_call = of(&|b| b.mean_helm.as_secs_f64() * 1000.0);
            let helm_cpu = of(&|b| b.memory.mean_child_cpu("helm").as_secs_f64() * 1000.0);
            let slots = of(&|b| b.slots);
            let slot_wait = of(&|b| b.mean_slot_wait.as_secs_f64() * 1000.0);
            println!(
                "{c:>4} | {} | {:8.1} | {:9.1} | {} | {:6.1} | {} | {:8.1} | {:5.0} | {:5.0} | {:7.0} | {:9.0} | {:7.0} | {:5.0} | {:9.0}",
                with_max(rss),
                median(&pss),
                median(&anon),
                with_max(bound),
                median(&worker),
                with_max(helm),
                median(&helm_anon),
                median(&helms),
                median(&wall),
                median(&latency),
                median(&helm_call),
                median(&helm_cpu),
                median(&slots),
                median(&slot_wait),
            );
        }
    }
    let (samples, cost): (Vec<f64>, Vec<f64>) = results
        .values()
        .flatten()
        .map(|b| {
            (
                b.memory.samples as f64,
                b.memory.sample_cost.as_secs_f64() * 1e6,
            )
        })
        .unzip();
    let calls: Vec<f64> = results.values().flatten().map(|b| b.helm_calls).collect();
    println!(
        "samples per batch {:.0} (median), one sample took {:.0} µs (median); helm calls per batch median {:.0}",
        median(&samples),
        median(&cost),
        median(&calls)
    );
}
