//! Candidate (b): the real worker pipeline, in-process, with a no-op handler.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_trait::async_trait;
use clap::Parser as _;
use contracts::data::TaskResult;
use tokio_util::sync::CancellationToken;
use worker::config::{Cli, Command};
use worker::handler::{Outcome, Registry, Steps, TaskError, TaskHandler};
use worker::pipeline::intake::{Task, TaskKind};

use crate::http::{get, get_status};

/// Answers every task at once: `succeeded`/`pass`, no steps, no payload.
pub struct NoOp;

#[async_trait]
impl TaskHandler for NoOp {
    async fn run(&self, _task: &Task, _steps: &mut Steps<'_>) -> Result<Outcome, TaskError> {
        Ok(Outcome::succeeded(TaskResult::Pass, ""))
    }
}

/// Settings of one in-process worker.
pub struct WorkerSpec<'a> {
    pub nats_url: &'a str,
    pub stream: &'a str,
    pub consumer: &'a str,
    pub state_prefix: &'a str,
    pub concurrency: u32,
    /// `--replicas`: the servers of the cluster (1 on one server).
    pub replicas: usize,
}

/// `worker::app::run` on a task of the bench's runtime.
pub struct InProcessWorker {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Port of its `/metrics`, `/readyz`.
    pub http_port: u16,
}

impl InProcessWorker {
    /// Starts the worker and waits until its `/readyz` answers 200 (stream, consumer
    /// and buckets bound).
    pub async fn start(spec: &WorkerSpec<'_>) -> anyhow::Result<InProcessWorker> {
        let port = test_harness::free_port();
        let http_addr = format!("127.0.0.1:{port}");
        let concurrency = spec.concurrency.to_string();
        let replicas = spec.replicas.to_string();
        let cli = Cli::try_parse_from([
            "helm-service",
            "run",
            "--nats-url",
            spec.nats_url,
            "--stream",
            spec.stream,
            "--consumer",
            spec.consumer,
            "--state-prefix",
            spec.state_prefix,
            "--concurrency",
            &concurrency,
            "--http-addr",
            &http_addr,
            "--replicas",
            &replicas,
        ])
        .context("building the worker configuration")?;
        let Command::Run(config) = cli.command else {
            bail!("expected the run subcommand");
        };
        let registry = Registry::new().with(TaskKind::Deployment, NoOp);
        let shutdown = CancellationToken::new();
        let mut task = tokio::spawn(worker::app::run(*config, registry, shutdown.clone()));

        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if task.is_finished() {
                let result = (&mut task).await.context("worker task panicked")?;
                bail!("the worker stopped during start-up: {result:?}");
            }
            if matches!(get_status(port, "/readyz").await, Ok(200)) {
                break;
            }
            if Instant::now() >= end {
                shutdown.cancel();
                bail!("the in-process worker was not ready within 30s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(InProcessWorker {
            shutdown,
            task,
            http_port: port,
        })
    }

    /// Graceful shutdown, as on SIGTERM. Returns how long it took.
    pub async fn stop(self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(60), self.task).await {
            Ok(joined) => joined.context("worker task panicked")??,
            Err(_) => bail!("the in-process worker did not stop within 60s"),
        }
        Ok(started.elapsed())
    }
}

/// A one-line summary of the worker's own counters from its `/metrics`: what it
/// received and finished, and how often it handed events back and why.
pub async fn counters(port: u16) -> String {
    let text = match get(port, "/metrics").await {
        Ok((200, text)) => text,
        Ok((status, _)) => return format!("/metrics answered {status}"),
        Err(err) => return format!("/metrics unreadable: {err:#}"),
    };
    let samples: Vec<(&str, f64)> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series, value.parse().ok()?))
        })
        .collect();
    let total = |name: &str| -> u64 {
        samples
            .iter()
            .filter(|(series, _)| series.split('{').next() == Some(name))
            .map(|(_, value)| *value as u64)
            .sum()
    };
    let naks: Vec<String> = samples
        .iter()
        .filter(|(series, _)| series.starts_with("helm_service_naks_total{"))
        .map(|(series, value)| {
            let reason = series
                .split("reason=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("?");
            format!("{reason}={value}")
        })
        .collect();
    format!(
        "received {}, finished {}, redeliveries {}, lease waits {}, naks {}{}",
        total("helm_service_events_received_total"),
        total("helm_service_events_finished_total"),
        total("helm_service_redeliveries_total"),
        total("helm_service_lease_waits_total"),
        total("helm_service_naks_total"),
        if naks.is_empty() {
            String::new()
        } else {
            format!(" ({})", naks.join(", "))
        },
    )
}
