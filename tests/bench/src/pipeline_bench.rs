//! `pipeline-bench`: the worker's event pipeline against a raw async-nats loop.
//!
//! (a) raw loop: fetch, publish `.started` and `.finished` (each with `Nats-Msg-Id`,
//!     each awaiting its PubAck), ack; `--concurrency` messages at once.
//! (b) the worker (`worker::app::run`, in-process) with a no-op deployment handler and
//!     the same `--concurrency`, events spread over `--releases` releases; and (b')
//!     the same over `--contended-releases` releases.
//! (b-otlp) with `--traces`: (b) with its traces exported over OTLP/gRPC to a receiver in
//!     this process (`test_harness::otlp`); (b) then runs with the exporter installed and
//!     paused (`worker::telemetry::pause_export`), so the two differ only in exporting.
//!
//! Both run against one nats-server, in the same process, interleaved over `--rounds`
//! rounds, each scenario on a freshly created stream; medians are reported. Each
//! scenario has a throughput phase (publish `--events` at once, time to the last
//! `.finished`) and a latency phase (`--latency-events` at `--latency-rate`/s, time
//! from publish to `.started`). Finally the idle RSS of the real `helm-service`
//! binary is read. See BENCHMARKS.md.
//!
//! Exits non-zero on errors only, never on a missed target. A system under test
//! that does not answer every event within `--phase-timeout` is an error; for the
//! worker the message then carries its own counters (received, redeliveries, naks
//! by reason) from its `/metrics`.

mod events;
mod http;
mod load;
mod observer;
mod raw;
mod rss;
mod worker_run;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_nats::jetstream::{self, consumer, stream};
use clap::Parser;
use test_harness::{NatsCluster, NatsServer};

use crate::load::Throughput;
use crate::observer::Observer;
use benches::stats::{cpu_time, median, millis, percentile};

// The worker runs in this process, so it gets the allocator of the production binary
// (`worker/src/main.rs`); the raw loop runs on the same one.
worker::use_mimalloc!();

/// The Keptn stream, as the worker would create it.
const STREAM: &str = "keptn";

#[derive(Debug, Parser)]
#[command(
    name = "pipeline-bench",
    about = "Worker event pipeline vs a raw async-nats loop (see BENCHMARKS.md)"
)]
struct Args {
    /// Measured rounds; each runs every scenario once.
    #[arg(long, env = "BENCH_ROUNDS", default_value_t = 5)]
    rounds: usize,
    /// Events of the throughput phase of each scenario.
    #[arg(long, env = "BENCH_EVENTS", default_value_t = 10_000)]
    events: usize,
    /// Events of the latency phase of each scenario.
    #[arg(long, env = "BENCH_LATENCY_EVENTS", default_value_t = 1000)]
    latency_events: usize,
    /// Publish rate of the latency phase, events per second.
    #[arg(long, env = "BENCH_LATENCY_RATE", default_value_t = 250)]
    latency_rate: u32,
    /// Messages in work at once, for both systems.
    #[arg(long, env = "BENCH_CONCURRENCY", default_value_t = 32)]
    concurrency: u32,
    /// Releases (services) the events of scenario (b) are spread over.
    #[arg(long, env = "BENCH_RELEASES", default_value_t = 1000)]
    releases: usize,
    /// Releases of the extra scenario (b'); 0 skips it.
    #[arg(long, env = "BENCH_CONTENDED_RELEASES", default_value_t = 32)]
    contended_releases: usize,
    /// A helm-service binary for the idle-RSS measurement; by default the bench
    /// builds target/release/helm-service with cargo.
    #[arg(long, env = "BENCH_WORKER_BIN")]
    worker_bin: Option<PathBuf>,
    /// Skip the idle-RSS measurement (and the build it needs).
    #[arg(long)]
    skip_rss: bool,
    /// Skip the uncounted warm-up round.
    #[arg(long)]
    no_warmup: bool,
    /// Add scenario (a2): the raw loop plus a take and a hand-back write of a
    /// per-release KV record per event, the floor of any design with two durable writes
    /// per event.
    #[arg(long, env = "BENCH_RECORD_BASELINE")]
    record_baseline: bool,
    /// Give the raw loops a consumer filtering only the bench's event type, instead of
    /// the worker's five handled types (the method of runs before 2026-11-24).
    #[arg(long)]
    raw_single_filter: bool,
    /// Run only the scenarios of one system (`raw` or `worker`), e.g. to profile one
    /// side with `perf`; no ratios are reported then.
    #[arg(long, value_parser = ["raw", "worker"])]
    only: Option<String>,
    /// Longest wait for the replies of one phase, in seconds.
    #[arg(long, default_value_t = 60)]
    phase_timeout: u64,
    /// Run against a JetStream cluster of this many servers on loopback (0: one server),
    /// with the Keptn stream, the worker's streams and buckets and the raw loop's records at
    /// that many replicas; both systems get the whole seed list.
    #[arg(long, env = "BENCH_CLUSTER", default_value_t = 0)]
    cluster: usize,
    /// Add scenario (b-otlp): the worker of (b) exporting its traces over OTLP/gRPC to a
    /// receiver in this process.
    #[arg(long, env = "BENCH_TRACES")]
    traces: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Raw,
    /// The raw loop with two record writes per event.
    RawWithRecords,
    Worker {
        releases: usize,
        /// Exporting traces (scenario (b-otlp)).
        traced: bool,
    },
}

struct Scenario {
    key: &'static str,
    system: System,
}

impl Scenario {
    fn label(&self) -> String {
        match self.system {
            System::Raw => "(a) raw async-nats loop".into(),
            System::RawWithRecords => "(a2) raw loop + 2 record writes per event".into(),
            System::Worker {
                releases,
                traced: false,
            } => format!("{} worker, {releases} releases", self.key),
            System::Worker {
                releases,
                traced: true,
            } => format!(
                "{} worker exporting traces (OTLP/gRPC), {releases} releases",
                self.key
            ),
        }
    }
}

/// What one scenario measured.
struct Sample {
    throughput: Throughput,
    latencies: Vec<Duration>,
    bench_cpu_per_event: Option<Duration>,
    server_cpu_per_event: Option<Duration>,
    /// Messages into / out of nats-server per event (its `/varz` counters).
    server_msgs_per_event: Option<(f64, f64)>,
}

impl Sample {
    fn p(&self, p: f64) -> Duration {
        percentile(&self.latencies, p).unwrap_or_default()
    }
}

struct Ctx {
    args: Args,
    url: String,
    /// Every server's pid and monitoring port (one, or the cluster's).
    server_pids: Vec<u32>,
    monitor_ports: Vec<u16>,
    /// Replicas of the streams and buckets: the cluster's size, or 1.
    replicas: usize,
    js: jetstream::Context,
    observer: Observer,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // The exporter reads the standard variables, which must be set before any thread runs.
    let otlp_port = args.traces.then(test_harness::free_port);
    if let Some(port) = otlp_port {
        // SAFETY: no other thread exists yet.
        unsafe {
            std::env::set_var(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{port}"),
            );
            std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
            std::env::set_var("OTEL_SERVICE_NAME", "pipeline-bench");
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("pipeline-bench failed: cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, otlp_port)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pipeline-bench failed: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, otlp_port: Option<u16>) -> anyhow::Result<()> {
    // With --traces, the worker's own telemetry (logs and the OTLP exporter) and a receiver.
    let (_telemetry, receiver) = match otlp_port {
        Some(port) => {
            let receiver = test_harness::otlp::OtlpReceiver::counting_on(
                test_harness::otlp::Transport::Grpc,
                port,
            )
            .await?;
            let telemetry = worker::telemetry::init_with(worker::config::LogFormat::Text, "error")
                .map_err(anyhow::Error::msg)?;
            (Some(telemetry), Some(receiver))
        }
        None => {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .try_init();
            (None, None)
        }
    };
    if args.rounds == 0 || args.events == 0 || args.latency_events == 0 {
        bail!("--rounds, --events and --latency-events must be at least 1");
    }

    // Build first, so cargo never runs alongside a measurement.
    let worker_bin = match (&args.worker_bin, args.skip_rss) {
        (_, true) => None,
        (Some(path), false) => Some(path.clone()),
        (None, false) => Some(rss::build_worker_binary().await?),
    };

    let servers = Servers::start(args.cluster).await?;
    let url = servers.url();
    let client = NatsServer::connect_options()
        .name("bench-load")
        .connect(url.split(',').collect::<Vec<_>>().as_slice())
        .await
        .context("connecting the load generator")?;
    let ctx = Ctx {
        url: url.clone(),
        server_pids: servers.pids(),
        monitor_ports: servers.monitor_ports(),
        replicas: args.cluster.max(1),
        js: jetstream::new(client),
        observer: Observer::start(&url).await?,
        args,
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "pipeline-bench: nats-server {url} (replicas {}), {cores} cores, {} rounds; throughput phase {} events, latency phase {} events at {}/s; concurrency {}",
        ctx.replicas, ctx.args.rounds, ctx.args.events, ctx.args.latency_events, ctx.args.latency_rate, ctx.args.concurrency
    );

    let mut scenarios = vec![
        Scenario {
            key: "(a)",
            system: System::Raw,
        },
        Scenario {
            key: "(b)",
            system: System::Worker {
                releases: ctx.args.releases,
                traced: false,
            },
        },
    ];
    if ctx.args.record_baseline {
        scenarios.insert(
            1,
            Scenario {
                key: "(a2)",
                system: System::RawWithRecords,
            },
        );
    }
    if ctx.args.contended_releases > 0 {
        scenarios.push(Scenario {
            key: "(b')",
            system: System::Worker {
                releases: ctx.args.contended_releases,
                traced: false,
            },
        });
    }
    if ctx.args.traces {
        scenarios.push(Scenario {
            key: "(b-otlp)",
            system: System::Worker {
                releases: ctx.args.releases,
                traced: true,
            },
        });
    }

    if let Some(only) = &ctx.args.only {
        scenarios.retain(|s| {
            matches!(
                (only.as_str(), s.system),
                ("raw", System::Raw | System::RawWithRecords) | ("worker", System::Worker { .. })
            )
        });
    }

    if !ctx.args.no_warmup {
        let events = (ctx.args.events / 5).max(1);
        println!("warm-up (not counted): {events} events per scenario");
        for (index, scenario) in scenarios.iter().enumerate() {
            run_scenario(
                &ctx,
                scenario,
                0,
                index,
                events,
                50.min(ctx.args.latency_events),
            )
            .await?;
        }
    }

    let mut samples: Vec<Vec<Sample>> = scenarios.iter().map(|_| Vec::new()).collect();
    for round in 1..=ctx.args.rounds {
        // Alternate the order so slow drift of the shared machine hits both sides.
        let mut order: Vec<usize> = (0..scenarios.len()).collect();
        if round % 2 == 0 {
            order.reverse();
        }
        for index in order {
            let sample = run_scenario(
                &ctx,
                &scenarios[index],
                round,
                index,
                ctx.args.events,
                ctx.args.latency_events,
            )
            .await?;
            samples[index].push(sample);
        }
    }

    let memory = match &worker_bin {
        Some(binary) => {
            let memory =
                rss::idle_worker_memory(binary, &url, Duration::from_secs(3), false).await?;
            if ctx.args.traces {
                let traced =
                    rss::idle_worker_memory(binary, &url, Duration::from_secs(3), true).await?;
                println!(
                    "idle helm-service RSS exporting traces (OTLP/gRPC): {:.1} MiB (VmHWM {:.1} MiB); without: {:.1} MiB",
                    traced.rss_kib as f64 / 1024.0,
                    traced.hwm_kib as f64 / 1024.0,
                    memory.rss_kib as f64 / 1024.0,
                );
            }
            Some(memory)
        }
        None => None,
    };

    report(&ctx, &scenarios, &samples, memory);
    if let Some(receiver) = &receiver {
        report_traces(&scenarios, &samples, receiver);
    }
    drop(servers);
    Ok(())
}

/// The server or cluster the bench runs against.
enum Servers {
    One(Box<NatsServer>),
    Cluster(NatsCluster),
}

impl Servers {
    async fn start(cluster: usize) -> anyhow::Result<Servers> {
        Ok(match cluster {
            0 => Servers::One(Box::new(
                NatsServer::start().await.context("starting nats-server")?,
            )),
            size => Servers::Cluster(
                NatsCluster::start(size)
                    .await
                    .context("starting the nats-server cluster")?,
            ),
        })
    }

    fn all(&self) -> Vec<&NatsServer> {
        match self {
            Servers::One(server) => vec![server],
            Servers::Cluster(cluster) => cluster.servers().iter().collect(),
        }
    }

    /// The URL, or the cluster's seed list.
    fn url(&self) -> String {
        match self {
            Servers::One(server) => server.url(),
            Servers::Cluster(cluster) => cluster.urls(),
        }
    }

    fn pids(&self) -> Vec<u32> {
        self.all()
            .iter()
            .filter_map(|server| server.pid())
            .collect()
    }

    fn monitor_ports(&self) -> Vec<u16> {
        self.all()
            .iter()
            .filter_map(|server| server.monitor_url().rsplit(':').next()?.parse().ok())
            .collect()
    }
}

/// CPU time of all servers together.
fn servers_cpu(pids: &[u32]) -> Option<Duration> {
    pids.iter().map(|pid| cpu_time(*pid)).sum()
}

/// Runs one scenario on a fresh stream: start the system, throughput phase, drain,
/// latency phase, drain, stop, clean up.
async fn run_scenario(
    ctx: &Ctx,
    scenario: &Scenario,
    round: usize,
    index: usize,
    events: usize,
    latency_events: usize,
) -> anyhow::Result<Sample> {
    let timeout = Duration::from_secs(ctx.args.phase_timeout);
    let concurrency = ctx.args.concurrency;
    recreate_stream(&ctx.js, ctx.replicas).await?;
    let consumer = format!("bench-r{round}-s{index}");
    let state_prefix = format!("bench-r{round}-s{index}");

    enum Running {
        Raw(raw::RawLoop),
        Worker(worker_run::InProcessWorker),
    }
    let (running, releases) = match scenario.system {
        System::Raw | System::RawWithRecords => {
            let bucket = format!("{state_prefix}-raw-records");
            let records = (scenario.system == System::RawWithRecords).then_some(bucket.as_str());
            (
                Running::Raw(
                    raw::RawLoop::start(
                        &ctx.url,
                        STREAM,
                        &consumer,
                        concurrency as usize,
                        records,
                        ctx.args.raw_single_filter,
                    )
                    .await?,
                ),
                ctx.args.releases,
            )
        }
        System::Worker { releases, traced } => {
            worker::telemetry::pause_export(!traced);
            let spec = worker_run::WorkerSpec {
                nats_url: &ctx.url,
                stream: STREAM,
                consumer: &consumer,
                state_prefix: &state_prefix,
                concurrency,
                replicas: ctx.replicas,
            };
            (
                Running::Worker(worker_run::InProcessWorker::start(&spec).await?),
                releases,
            )
        }
    };
    let label = scenario.label();
    let worker_port = match &running {
        Running::Worker(worker) => Some(worker.http_port),
        Running::Raw(_) => None,
    };
    let failed = |err: anyhow::Error| {
        let label = label.clone();
        async move {
            let counters = match worker_port {
                Some(port) => format!(" ({})", worker_run::counters(port).await),
                None => String::new(),
            };
            err.context(format!("{label}, round {round}{counters}"))
        }
    };

    let batch = events::batch(events, releases, 0);
    let bench_cpu = cpu_time(std::process::id());
    let server_cpu = servers_cpu(&ctx.server_pids);
    let msgs_before = server_msgs(&ctx.monitor_ports).await;
    let throughput = match load::throughput(&ctx.js, &ctx.observer, batch, timeout).await {
        Ok(throughput) => throughput,
        Err(err) => return Err(failed(err).await),
    };
    let per_event = |before: Option<Duration>, after: Option<Duration>| match (before, after) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before) / events as u32),
        _ => None,
    };
    let bench_cpu_per_event = per_event(bench_cpu, cpu_time(std::process::id()));
    let server_cpu_per_event = per_event(server_cpu, servers_cpu(&ctx.server_pids));
    let server_msgs_per_event = match (msgs_before, server_msgs(&ctx.monitor_ports).await) {
        (Some((in0, out0)), Some((in1, out1))) => Some((
            in1.saturating_sub(in0) as f64 / events as f64,
            out1.saturating_sub(out0) as f64 / events as f64,
        )),
        _ => None,
    };
    if let Err(err) = drain(&ctx.js, &consumer, timeout).await {
        return Err(failed(err).await);
    }

    let batch = events::batch(latency_events, releases, events);
    let latencies = match load::latency(
        &ctx.js,
        &ctx.observer,
        batch,
        ctx.args.latency_rate,
        timeout,
    )
    .await
    {
        Ok(latencies) => latencies,
        Err(err) => return Err(failed(err).await),
    };
    if let Err(err) = drain(&ctx.js, &consumer, timeout).await {
        return Err(failed(err).await);
    }
    let tally = ctx.observer.take_tally();
    let counters = match worker_port {
        Some(port) => format!("; worker counters: {}", worker_run::counters(port).await),
        None => String::new(),
    };

    let stop_note = match running {
        Running::Raw(raw_loop) => {
            let errors = raw_loop.stop().await?;
            if errors > 0 {
                bail!("{label}, round {round}: {errors} messages failed in the raw loop");
            }
            if scenario.system == System::RawWithRecords {
                ctx.js
                    .delete_key_value(format!("{state_prefix}-raw-records"))
                    .await
                    .context("deleting the raw loop's record bucket")?;
            }
            String::new()
        }
        Running::Worker(worker) => {
            let took = worker.stop().await?;
            check_no_dead_letters(&ctx.js, &state_prefix).await?;
            for bucket in ["releases"] {
                ctx.js
                    .delete_key_value(format!("{state_prefix}-{bucket}"))
                    .await
                    .with_context(|| format!("deleting the {bucket} bucket"))?;
            }
            ctx.js
                .delete_stream(format!("{state_prefix}-dlq"))
                .await
                .context("deleting the dead-letter stream")?;
            format!(", stop {:.1}s", took.as_secs_f64())
        }
    };
    if tally.duplicates > 0 || tally.unreadable > 0 {
        println!(
            "  note: {} duplicate and {} unreadable replies seen",
            tally.duplicates, tally.unreadable
        );
    }

    let sample = Sample {
        throughput,
        latencies,
        bench_cpu_per_event,
        server_cpu_per_event,
        server_msgs_per_event,
    };
    let cpu = |d: Option<Duration>| d.map_or("n/a".into(), |d| format!("{:.3}", millis(d)));
    let msgs =
        server_msgs_per_event.map_or("n/a".into(), |(i, o)| format!("{i:.1} in / {o:.1} out"));
    println!(
        "{} {label}: {:.0} events/s ({} in {:.2}s, publishing took {:.2}s); started latency p50 {:.2} ms, p99 {:.2} ms; CPU ms/event bench {} nats {}; nats msgs/event {msgs}{stop_note}{counters}",
        if round == 0 { "warm-up".to_owned() } else { format!("round {round}") },
        throughput.events_per_second(),
        throughput.events,
        throughput.elapsed.as_secs_f64(),
        throughput.publish_elapsed.as_secs_f64(),
        millis(sample.p(50.0)),
        millis(sample.p(99.0)),
        cpu(bench_cpu_per_event),
        cpu(server_cpu_per_event),
    );
    Ok(sample)
}

/// nats-server's message counters `(in_msgs, out_msgs)` from `/varz`, summed over the
/// servers (in a cluster, also the messages between them).
async fn server_msgs(monitor_ports: &[u16]) -> Option<(u64, u64)> {
    let mut total = (0, 0);
    for port in monitor_ports {
        let (status, body) = http::get(*port, "/varz").await.ok()?;
        if status != 200 {
            return None;
        }
        let varz: serde_json::Value = serde_json::from_str(&body).ok()?;
        total.0 += varz["in_msgs"].as_u64()?;
        total.1 += varz["out_msgs"].as_u64()?;
    }
    (!monitor_ports.is_empty()).then_some(total)
}

/// Deletes the Keptn stream (and with it the consumers of the last scenario) and
/// creates it again with the worker's settings.
async fn recreate_stream(js: &jetstream::Context, replicas: usize) -> anyhow::Result<()> {
    if js.get_stream(STREAM).await.is_ok() {
        js.delete_stream(STREAM)
            .await
            .context("deleting the stream")?;
    }
    let config = stream::Config {
        name: STREAM.into(),
        subjects: vec!["sh.keptn.>".into()],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        num_replicas: replicas,
        ..Default::default()
    };
    // In a cluster a peer may still be removing the deleted stream's store ("error creating
    // store for stream"): try again for a while.
    let mut attempts = 0;
    loop {
        match js.create_stream(config.clone()).await {
            Ok(_) => return Ok(()),
            Err(err) if attempts < 40 => {
                attempts += 1;
                eprintln!("creating the stream failed ({err}), retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(err) => return Err(err).context("creating the stream"),
        }
    }
}

/// Waits until the consumer has nothing pending and nothing unacknowledged.
async fn drain(js: &jetstream::Context, name: &str, timeout: Duration) -> anyhow::Result<()> {
    let mut consumer: consumer::PullConsumer = js
        .get_consumer_from_stream(name, STREAM)
        .await
        .with_context(|| format!("getting consumer {name}"))?;
    let end = Instant::now() + timeout;
    loop {
        let info = consumer.info().await.context("reading consumer info")?;
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return Ok(());
        }
        if Instant::now() >= end {
            bail!(
                "consumer {name} still has {} pending and {} unacknowledged messages after {timeout:?}",
                info.num_pending,
                info.num_ack_pending
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn check_no_dead_letters(js: &jetstream::Context, state_prefix: &str) -> anyhow::Result<()> {
    let mut dlq = js
        .get_stream(format!("{state_prefix}-dlq"))
        .await
        .context("getting the dead-letter stream")?;
    let messages = dlq
        .info()
        .await
        .context("reading the dead-letter stream")?
        .state
        .messages;
    if messages > 0 {
        bail!("the worker dead-lettered {messages} messages");
    }
    Ok(())
}

/// (b-otlp) against (b): the cost of exporting traces, and what reached the receiver.
fn report_traces(
    scenarios: &[Scenario],
    samples: &[Vec<Sample>],
    receiver: &test_harness::otlp::OtlpReceiver,
) {
    let index = |key: &str| scenarios.iter().position(|s| s.key == key);
    let (Some(plain), Some(traced)) = (index("(b)"), index("(b-otlp)")) else {
        return;
    };
    let eps = |runs: &[Sample]| {
        median(
            &runs
                .iter()
                .map(|s| s.throughput.events_per_second())
                .collect::<Vec<_>>(),
        )
    };
    let p99 = |runs: &[Sample]| median(&runs.iter().map(|s| millis(s.p(99.0))).collect::<Vec<_>>());
    let ratio = eps(&samples[traced]) / eps(&samples[plain]);
    let per_round: Vec<f64> = samples[traced]
        .iter()
        .zip(&samples[plain])
        .map(|(t, p)| t.throughput.events_per_second() / p.throughput.events_per_second())
        .collect();
    println!(
        "(b-otlp) / (b): throughput {ratio:.2}× (target ≥ 0.90: {}), median of per-round ratios {:.2}× (per round: {}), dispatch p99 {:.2}×",
        if ratio >= 0.9 { "met" } else { "MISSED" },
        median(&per_round),
        per_round
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        p99(&samples[traced]) / p99(&samples[plain]),
    );
    let dropped: u64 = ["queue_full", "export_failed", "shut_down"]
        .iter()
        .map(|reason| {
            worker::telemetry::export::SPANS_DROPPED
                .with_label_values(&[reason])
                .get()
        })
        .sum();
    println!(
        "    spans: {} exported, {} received by the receiver in {} requests, {dropped} dropped",
        worker::telemetry::export::SPANS_EXPORTED.get(),
        receiver.span_count(),
        receiver.requests(),
    );
}

fn report(
    ctx: &Ctx,
    scenarios: &[Scenario],
    samples: &[Vec<Sample>],
    memory: Option<rss::IdleMemory>,
) {
    struct Row {
        eps: f64,
        eps_min: f64,
        eps_max: f64,
        p50: f64,
        p99: f64,
        pooled_p99: f64,
        bench_cpu: f64,
        server_cpu: f64,
        msgs_in: f64,
        msgs_out: f64,
    }
    let rows: Vec<Row> = samples
        .iter()
        .map(|runs| {
            let eps: Vec<f64> = runs
                .iter()
                .map(|s| s.throughput.events_per_second())
                .collect();
            let pooled: Vec<Duration> = runs
                .iter()
                .flat_map(|s| s.latencies.iter().copied())
                .collect();
            let cpu = |f: fn(&Sample) -> Option<Duration>| {
                median(&runs.iter().filter_map(f).map(millis).collect::<Vec<_>>())
            };
            Row {
                eps: median(&eps),
                eps_min: eps.iter().copied().fold(f64::INFINITY, f64::min),
                eps_max: eps.iter().copied().fold(0.0, f64::max),
                p50: median(&runs.iter().map(|s| millis(s.p(50.0))).collect::<Vec<_>>()),
                p99: median(&runs.iter().map(|s| millis(s.p(99.0))).collect::<Vec<_>>()),
                pooled_p99: millis(percentile(&pooled, 99.0).unwrap_or_default()),
                bench_cpu: cpu(|s| s.bench_cpu_per_event),
                server_cpu: cpu(|s| s.server_cpu_per_event),
                msgs_in: median(
                    &runs
                        .iter()
                        .filter_map(|s| s.server_msgs_per_event.map(|m| m.0))
                        .collect::<Vec<_>>(),
                ),
                msgs_out: median(
                    &runs
                        .iter()
                        .filter_map(|s| s.server_msgs_per_event.map(|m| m.1))
                        .collect::<Vec<_>>(),
                ),
            }
        })
        .collect();

    println!();
    println!(
        "Medians over {} rounds (concurrency {}, {} events per throughput phase, {} per latency phase at {}/s):",
        ctx.args.rounds, ctx.args.concurrency, ctx.args.events, ctx.args.latency_events, ctx.args.latency_rate
    );
    println!();
    println!("| system | events/s (min–max) | dispatch p50 ms | dispatch p99 ms | p99 all rounds pooled ms | CPU ms/event: bench process | CPU ms/event: nats-server | nats msgs/event in / out |");
    println!("|---|---|---|---|---|---|---|---|");
    for (scenario, row) in scenarios.iter().zip(&rows) {
        println!(
            "| {} | {:.0} ({:.0}–{:.0}) | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} | {:.1} / {:.1} |",
            scenario.label(),
            row.eps,
            row.eps_min,
            row.eps_max,
            row.p50,
            row.p99,
            row.pooled_p99,
            row.bench_cpu,
            row.server_cpu,
            row.msgs_in,
            row.msgs_out
        );
    }
    println!();
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let with_baseline = scenarios.first().is_some_and(|s| s.system == System::Raw);
    let raw = &rows[0];
    for (index, (scenario, row)) in scenarios
        .iter()
        .zip(&rows)
        .enumerate()
        .skip(1)
        .filter(|_| with_baseline)
    {
        let throughput_ratio = row.eps / raw.eps;
        let p99_ratio = row.p99 / raw.p99;
        // The same ratios taken round by round (each round ran both back to back).
        let paired = |f: &dyn Fn(&Sample) -> f64| {
            let ratios: Vec<f64> = samples[index]
                .iter()
                .zip(&samples[0])
                .map(|(candidate, baseline)| f(candidate) / f(baseline))
                .collect();
            median(&ratios)
        };
        if scenario.system == System::RawWithRecords {
            println!(
                "{} / (a): throughput {:.2}×, dispatch p99 {:.2}× (the floor of two durable writes per event)",
                scenario.key, throughput_ratio, p99_ratio,
            );
            continue;
        }
        println!(
            "{} / (a): throughput {:.2}× (target ≥ 0.50: {}), dispatch p99 {:.2}× (target ≤ 2.00: {}), p50 {:.2}×",
            scenario.key,
            throughput_ratio,
            verdict(throughput_ratio >= 0.5),
            p99_ratio,
            verdict(p99_ratio <= 2.0),
            row.p50 / raw.p50,
        );
        println!(
            "    cross-checks: median of per-round ratios: throughput {:.2}×, p99 {:.2}×; pooled p99 {:.2}×",
            paired(&|s| s.throughput.events_per_second()),
            paired(&|s| millis(s.p(99.0))),
            row.pooled_p99 / raw.pooled_p99,
        );
    }
    match memory {
        Some(memory) => {
            let mib = memory.rss_kib as f64 / 1024.0;
            println!(
                "idle helm-service RSS: {mib:.1} MiB (VmHWM {:.1} MiB; target ≤ 20 MiB: {})",
                memory.hwm_kib as f64 / 1024.0,
                verdict(mib <= 20.0)
            );
        }
        None => println!("idle helm-service RSS: skipped (--skip-rss)"),
    }
}
