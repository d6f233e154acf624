//! Worker replicas as separate OS processes, the way they run in production.

use std::path::{Path, PathBuf};
use std::time::Duration;

use test_harness::process::{free_port, ChildProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Settings of one worker process.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub binary: PathBuf,
    pub nats_url: String,
    pub concurrency: u32,
    pub ack_wait: &'static str,
    pub lease_ttl: &'static str,
    pub shutdown_grace: &'static str,
    pub probe_log: Option<PathBuf>,
    pub extra_args: Vec<String>,
    /// Extra environment variables of the process.
    pub env: Vec<(String, String)>,
}

impl WorkerSpec {
    pub fn new(binary: impl Into<PathBuf>, nats_url: &str) -> Self {
        WorkerSpec {
            binary: binary.into(),
            nats_url: nats_url.to_owned(),
            concurrency: 4,
            ack_wait: "5s",
            lease_ttl: "3s",
            shutdown_grace: "10s",
            probe_log: None,
            extra_args: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// A running worker process; killed when dropped.
pub struct WorkerProcess {
    pub process: ChildProcess,
    pub http_port: u16,
    pub spec: WorkerSpec,
}

impl WorkerProcess {
    /// Starts a worker and waits until `/readyz` says it is bound.
    pub async fn start(
        spec: WorkerSpec,
        log_dir: &Path,
        name: &str,
    ) -> anyhow::Result<WorkerProcess> {
        let http_port = free_port();
        let mut builder = ChildProcess::builder(&spec.binary)
            .name(name)
            .arg("run")
            .args(["--nats-url", &spec.nats_url])
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
            .args(["--concurrency", &spec.concurrency.to_string()])
            .args(["--ack-wait", spec.ack_wait])
            .args(["--lease-ttl", spec.lease_ttl])
            .args(["--shutdown-grace", spec.shutdown_grace])
            .args(&spec.extra_args)
            .env("RUST_LOG", "info,async_nats=warn")
            // Set after the default, so a spec's own RUST_LOG wins.
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .log_file(log_dir.join(format!("{name}.log")));
        if let Some(probe_log) = &spec.probe_log {
            builder = builder.env("PROBE_LOG", probe_log);
        }
        let process = builder.spawn()?;
        let mut worker = WorkerProcess {
            process,
            http_port,
            spec,
        };
        worker.wait_ready(Duration::from_secs(20)).await?;
        Ok(worker)
    }

    /// Starts the same spec again (after a kill), on a new HTTP port.
    pub async fn restart(&mut self, log_dir: &Path, name: &str) -> anyhow::Result<()> {
        *self = WorkerProcess::start(self.spec.clone(), log_dir, name).await?;
        Ok(())
    }

    pub async fn wait_ready(&mut self, deadline: Duration) -> anyhow::Result<()> {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            if let Ok((200, _)) = http_get(self.http_port, "/readyz").await {
                return Ok(());
            }
            if !self.process.is_running() {
                anyhow::bail!(
                    "worker {} exited before it was ready:\n{}",
                    self.process.name(),
                    self.process.log_tail(40)
                );
            }
            if tokio::time::Instant::now() > end {
                anyhow::bail!(
                    "worker {} not ready after {deadline:?}:\n{}",
                    self.process.name(),
                    self.process.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let (status, body) = http_get(self.http_port, "/metrics").await?;
        anyhow::ensure!(status == 200, "/metrics answered {status}");
        Ok(body)
    }

    /// The value of one sample in `/metrics`, e.g.
    /// `helm_service_duplicates_suppressed_total` (0 when absent).
    pub async fn metric(&self, sample: &str) -> anyhow::Result<f64> {
        let text = self.metrics().await?;
        Ok(text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == sample).then(|| value.parse().ok()).flatten()
            })
            .unwrap_or(0.0))
    }
}

/// A minimal HTTP/1.0 GET on loopback: status and body.
pub async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("not an HTTP response: {response:?}"))?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        Ok::<_, anyhow::Error>((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| anyhow::anyhow!("GET {path} timed out"))?
}
