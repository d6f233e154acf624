//! A real `nats-server` with JetStream on a loopback port, owned by one test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use async_nats::jetstream;
use nix::sys::signal::Signal;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::process::{free_port, harness_tempdir, log_stdio, log_tail, send_signal};
use crate::tools::tool_path;

/// How long [`NatsServer::start`] and [`NatsServer::restart`] wait for the server to serve
/// JetStream requests.
pub const READY_DEADLINE: Duration = Duration::from_secs(15);

/// How long [`NatsServer::stop`] waits after SIGTERM before it kills the server.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

const RETRY_INTERVAL: Duration = Duration::from_millis(20);

/// A `nats-server -js` on `127.0.0.1:<port>` with its store and log in a temp dir.
///
/// The port and the store dir stay the same across [`kill`](Self::kill) /
/// [`restart`](Self::restart), so clients reconnect to the same URL and find the same streams.
/// Dropping it kills the server and removes the temp dir (set
/// [`KEEP_DIRS_VAR`](crate::process::KEEP_DIRS_VAR) to keep it).
#[derive(Debug)]
pub struct NatsServer {
    bin: PathBuf,
    extra_args: Vec<String>,
    client: ClientOptions,
    port: u16,
    http_port: u16,
    store_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    // Dropped after `child` (fields drop in order), and Drop stops the server first anyway.
    dir: TempDir,
}

/// The server's configuration file, in its temp dir.
const CONFIG_FILE: &str = "nats-server.conf";

/// JetStream with its store in `store_dir` and an explicit storage size. Without one, the
/// server offers 75% of the disk space free at start, and creating a stream whose size limit
/// exceeds what is left fails (`insufficient storage resources`): the worker's default
/// limits would then depend on how full the test machine's disk happens to be. Limits only
/// reserve space; the tests write little. `extra` (authorization, TLS, accounts, cluster) is
/// appended as it is.
fn write_config(path: &Path, store_dir: &Path, extra: &str) -> anyhow::Result<()> {
    let store_dir = serde_json::to_string(&store_dir.to_string_lossy())?;
    let config = format!(
        "jetstream {{\n  store_dir: {store_dir}\n  max_file_store: 1TB\n  max_memory_store: 1GB\n}}\n{extra}\n"
    );
    std::fs::write(path, config).context("writing the nats-server configuration")
}

/// How the harness's own clients (the readiness probe, [`NatsServer::connect`]) authenticate
/// to a server configured with credentials or TLS.
#[derive(Clone)]
pub struct ClientOptions(Arc<dyn Fn() -> async_nats::ConnectOptions + Send + Sync>);

impl ClientOptions {
    pub fn new(make: impl Fn() -> async_nats::ConnectOptions + Send + Sync + 'static) -> Self {
        ClientOptions(Arc::new(make))
    }

    fn make(&self) -> async_nats::ConnectOptions {
        (self.0)()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions::new(async_nats::ConnectOptions::new)
    }
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientOptions")
    }
}

/// A server's configuration beyond the harness's defaults: text appended to its configuration
/// file, and how the harness's clients connect to it.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    pub extra: String,
    pub client: ClientOptions,
}

impl NatsServer {
    /// Starts a server on free ports and waits until JetStream answers.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_args(&[]).await
    }

    /// Like [`start`](Self::start), passing extra command-line arguments to `nats-server`
    /// (kept for restarts).
    pub async fn start_with_args(extra_args: &[&str]) -> anyhow::Result<Self> {
        let mut server = Self::prepare(free_port(), ServerConfig::default())?;
        server.extra_args = extra_args.iter().map(|a| a.to_string()).collect();
        server.spawn_until_ready().await?;
        Ok(server)
    }

    /// Starts a server with `config` (credentials, TLS, ...) and waits until JetStream answers
    /// the harness's client made with `config.client`.
    pub async fn start_configured(config: ServerConfig) -> anyhow::Result<Self> {
        let mut server = Self::prepare(free_port(), config)?;
        server.spawn_until_ready().await?;
        Ok(server)
    }

    /// Replaces the server's configuration (and how the harness's clients connect) for its next
    /// start: e.g. rotated credentials, then [`restart`](Self::restart).
    pub fn reconfigure(&mut self, config: ServerConfig) -> anyhow::Result<()> {
        write_config(
            &self.dir.path().join(CONFIG_FILE),
            &self.store_dir,
            &config.extra,
        )?;
        self.client = config.client;
        Ok(())
    }

    /// Replaces the configuration like [`reconfigure`](Self::reconfigure) and has the running
    /// server apply it without a restart (SIGHUP, what `nats-server --signal reload` sends),
    /// as operators rotate credentials; returns once the server logged the reload. The server
    /// closes the connections of users whose credentials changed.
    pub async fn reload(&mut self, config: ServerConfig) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .context("reloading a nats-server that is not running")?;
        let log_start = std::fs::metadata(&self.log_path)
            .map(|m| m.len())
            .unwrap_or(0);
        self.reconfigure(config)?;
        send_signal(pid, Signal::SIGHUP)?;
        // Ok when the server reloaded, its error when it refused the new configuration.
        crate::wait::wait_until(
            "nats-server to reload its configuration",
            READY_DEADLINE,
            RETRY_INTERVAL,
            || async {
                let since = read_from(&self.log_path, log_start);
                if since.contains("Reloaded server configuration") {
                    return Some(Ok(()));
                }
                since
                    .lines()
                    .find(|line| line.contains("Failed to reload"))
                    .map(|line| Err(anyhow!("{line}")))
            },
        )
        .await?
    }

    /// A server on `port` with its temp dir and configuration written, not started yet.
    pub(crate) fn prepare(port: u16, config: ServerConfig) -> anyhow::Result<Self> {
        let bin = tool_path("nats-server");
        let dir = harness_tempdir("nats-")?;
        let store_dir = dir.path().join("store");
        std::fs::create_dir_all(&store_dir).context("creating the JetStream store dir")?;
        write_config(&dir.path().join(CONFIG_FILE), &store_dir, &config.extra)?;
        Ok(Self {
            bin,
            extra_args: Vec::new(),
            client: config.client,
            port,
            http_port: free_port(),
            store_dir,
            log_path: dir.path().join("nats-server.log"),
            child: None,
            dir,
        })
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP monitoring endpoint, e.g. `<monitor_url>/jsz` (handy when debugging).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The JetStream store dir (`-sd`); the same across restarts.
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// The server's stdout and stderr, appended across restarts.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }

    /// The temp dir holding the store and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The pid while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Connect options suited to tests: a short connect timeout and fast reconnects (at most
    /// 100 ms apart) so that clients come back quickly after [`restart`](Self::restart).
    pub fn connect_options() -> async_nats::ConnectOptions {
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64).saturating_mul(10).min(100))
            })
    }

    /// A client connected like [`connect_options`](Self::connect_options), with the
    /// credentials and TLS settings of the server's [`ServerConfig::client`].
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        self.client
            .make()
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64).saturating_mul(10).min(100))
            })
            .connect(self.url())
            .await
            .with_context(|| format!("connecting to {}", self.url()))
    }

    /// A JetStream context on a new client (reach the client with `.client()`).
    pub async fn jetstream(&self) -> anyhow::Result<jetstream::Context> {
        Ok(jetstream::new(self.connect().await?))
    }

    /// Kills the server with SIGKILL (no flush, no goodbye to clients) and waits for it to
    /// exit. Does nothing if it is not running.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill().ok();
            child
                .wait()
                .await
                .context("waiting for nats-server to die")?;
        }
        Ok(())
    }

    /// Stops the server gracefully (SIGTERM), killing it if it takes longer than
    /// [`STOP_GRACE`]. Does nothing if it is not running.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            send_signal(pid, Signal::SIGTERM)?;
        }
        match tokio::time::timeout(STOP_GRACE, child.wait()).await {
            Ok(status) => {
                status.context("waiting for nats-server to stop")?;
            }
            Err(_) => {
                child.start_kill().ok();
                child
                    .wait()
                    .await
                    .context("waiting for nats-server to die")?;
            }
        }
        Ok(())
    }

    /// Starts the server again on the same port with the same store dir and waits until
    /// JetStream answers. A server still running is first stopped gracefully; call
    /// [`kill`](Self::kill) before for a crash.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.spawn_until_ready().await
    }

    fn spawn(&self) -> anyhow::Result<Child> {
        let (stdout, stderr) = log_stdio(&self.log_path)?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-m")
            .arg(self.http_port.to_string())
            .arg("-c")
            .arg(self.dir.path().join(CONFIG_FILE))
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true);
        cmd.spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))
    }

    /// Spawns the server and waits for readiness. If it exits at once because a port is still
    /// taken (just after a kill), spawns it again until the deadline.
    pub(crate) async fn spawn_until_ready(&mut self) -> anyhow::Result<()> {
        let end = Instant::now() + READY_DEADLINE;
        loop {
            let log_start = std::fs::metadata(&self.log_path)
                .map(|m| m.len())
                .unwrap_or(0);
            let mut child = self.spawn()?;
            match wait_ready(&mut child, &self.url(), &self.client, end).await {
                Ok(()) => {
                    self.child = Some(child);
                    return Ok(());
                }
                Err(Probe::Exited(status)) => {
                    let since = read_from(&self.log_path, log_start);
                    if since.contains("address already in use") && Instant::now() < end {
                        tokio::time::sleep(RETRY_INTERVAL).await;
                        continue;
                    }
                    bail!(
                        "nats-server exited during startup ({status}) on port {}; log tail ({}):\n{}",
                        self.port,
                        self.log_path.display(),
                        self.log_tail(30)
                    );
                }
                Err(Probe::TimedOut(last)) => {
                    child.start_kill().ok();
                    let _ = child.wait().await;
                    bail!(
                        "nats-server on port {} did not serve JetStream within {READY_DEADLINE:?} \
                         (last error: {last:#}); log tail ({}):\n{}",
                        self.port,
                        self.log_path.display(),
                        self.log_tail(30)
                    );
                }
            }
        }
    }
}

enum Probe {
    Exited(std::process::ExitStatus),
    TimedOut(anyhow::Error),
}

/// Polls until a TCP connect, a NATS connect and a JetStream account-info request succeed.
async fn wait_ready(
    child: &mut Child,
    url: &str,
    client: &ClientOptions,
    end: Instant,
) -> Result<(), Probe> {
    let addr = url.trim_start_matches("nats://").to_string();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Probe::Exited(status));
        }
        let remaining = end.saturating_duration_since(Instant::now());
        let last = match tokio::time::timeout(remaining, probe(&addr, url, client)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(err)) => err,
            Err(_) => anyhow!("probe still running at the deadline"),
        };
        if Instant::now() >= end {
            // The server may have died while we probed; report that rather than a timeout.
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Probe::Exited(status));
            }
            return Err(Probe::TimedOut(last));
        }
        tokio::time::sleep(RETRY_INTERVAL).await;
    }
}

async fn probe(addr: &str, url: &str, client: &ClientOptions) -> anyhow::Result<()> {
    // A cheap check first, so that the common "not listening yet" case costs no NATS client.
    drop(
        TcpStream::connect(addr)
            .await
            .with_context(|| format!("TCP connect to {addr}"))?,
    );
    let client = client
        .make()
        .connection_timeout(Duration::from_secs(2))
        .connect(url)
        .await
        .with_context(|| format!("NATS connect to {url}"))?;
    let js = jetstream::new(client.clone());
    let result = js
        .query_account()
        .await
        .map(|_| ())
        .context("JetStream account info");
    let _ = client.drain().await;
    result
}

fn read_from(path: &Path, offset: u64) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(b.get(offset as usize..).unwrap_or_default()).into_owned())
        .unwrap_or_default()
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test-harness: nats-server on port {} log tail ({}):\n{}",
                self.port,
                self.log_path.display(),
                self.log_tail(40)
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            // Reap it before the temp dir goes, so that a dying server cannot write into a
            // half-removed store. Bounded: SIGKILL is not ignorable.
            let end = std::time::Instant::now() + Duration::from_secs(2);
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < end {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}
