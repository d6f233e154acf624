//! Resident memory of an idle `helm-service` process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use test_harness::ChildProcess;

use crate::http::get_status;

/// Builds `target/release/helm-service` with the cargo that runs the bench (a no-op
/// when it is up to date) and returns its path.
pub async fn build_worker_binary() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = test_harness::repo_root();
    eprintln!("building the helm-service binary (cargo build --release -p helm-service --bin helm-service)");
    let status = tokio::process::Command::new(&cargo)
        .args([
            "build",
            "--release",
            "-p",
            "helm-service",
            "--bin",
            "helm-service",
        ])
        .current_dir(&root)
        .status()
        .await
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p helm-service failed ({status})");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let target = if target.is_relative() {
        root.join(target)
    } else {
        target
    };
    Ok(target.join("release").join("helm-service"))
}

/// Memory of the idle worker.
#[derive(Debug, Clone, Copy)]
pub struct IdleMemory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

/// Starts `binary run --nats-url <url>` with default settings (own state prefix) and
/// its production handlers, for which a kube-sim stands in for the cluster (helm must
/// be on `PATH`: `ops/setup.sh`), waits until `/readyz` says 200, lets it sit for
/// `settle`, and reads its VmRSS and VmHWM from `/proc/<pid>/status`. The worker exports
/// traces only with `traces` (and the bench's `OTEL_*` environment, `--traces`).
pub async fn idle_worker_memory(
    binary: &Path,
    nats_url: &str,
    settle: Duration,
    traces: bool,
) -> anyhow::Result<IdleMemory> {
    let port = test_harness::free_port();
    let cluster = kube_sim::KubeSim::start(kube_sim::Config::default()).await?;
    let kubeconfig = cluster.kubeconfig_path().to_string_lossy().into_owned();
    let mut builder = ChildProcess::builder(binary);
    if !traces {
        builder = builder
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    }
    let mut process = builder
        .name("helm-service-idle")
        .args(["run", "--nats-url", nats_url, "--kubeconfig", &kubeconfig])
        .args(["--http-addr", &format!("127.0.0.1:{port}")])
        .args(["--state-prefix", "bench-idle", "--consumer", "bench-idle"])
        .spawn()?;
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = process.try_exit_status()? {
            bail!(
                "helm-service exited ({status}) before it was ready; log tail:\n{}",
                process.log_tail(20)
            );
        }
        if matches!(get_status(port, "/readyz").await, Ok(200)) {
            break;
        }
        if Instant::now() >= end {
            bail!(
                "helm-service was not ready within 30s; log tail:\n{}",
                process.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(settle).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", process.pid()))
        .context("reading /proc/<pid>/status of the worker")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .with_context(|| format!("no {name} in /proc/<pid>/status"))
    };
    let memory = IdleMemory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    };
    process.stop(Duration::from_secs(30)).await?;
    Ok(memory)
}
