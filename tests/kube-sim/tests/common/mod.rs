//! Shared harness for the kube-sim integration tests: an in-process kube-sim per test and the
//! real kubectl (and helm) run against it with timeouts, killed when a test fails.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use std::time::Instant;

use kube_sim::{Config, KubeSim};

pub mod life_cycle;

/// Writes a chart directory: `Chart.yaml` for `name`, and each `(path, content)` below it
/// (template paths like `templates/service.yaml`).
pub fn write_chart(dir: &Path, name: &str, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("Chart.yaml"),
        format!("apiVersion: v2\nname: {name}\nversion: 0.1.0\n"),
    )
    .unwrap();
    for (path, content) in files {
        std::fs::write(dir.join(path), content).unwrap();
    }
}

/// The pinned helm installed by `ops/setup.sh`.
pub fn helm_path() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin/helm");
    assert!(
        p.exists(),
        "{} is missing: run ops/setup.sh to install the pinned helm",
        p.display()
    );
    p
}

/// Upper bound for one kubectl invocation; they take well under a second here.
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);

pub fn kubectl_path() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin/kubectl");
    assert!(
        p.exists(),
        "{} is missing: run ops/setup.sh to install the pinned kubectl",
        p.display()
    );
    p
}

/// Runs `cmd` to completion, killing it and failing the test after `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    test_harness::process::run_with_timeout(&mut cmd, timeout)
        .unwrap_or_else(|err| panic!("{err:#}"))
}

/// What one kubectl run printed.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn success(self) -> String {
        assert!(self.ok, "kubectl failed: {}{}", self.stdout, self.stderr);
        self.stdout
    }

    #[track_caller]
    pub fn failure(self) -> String {
        assert!(!self.ok, "kubectl should have failed: {}", self.stdout);
        self.stderr
    }
}

/// A kube-sim plus an isolated kubectl environment (cache and HOME in a temp dir).
pub struct Cluster {
    sim: Option<KubeSim>,
    runtime: tokio::runtime::Runtime,
    pub home: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Self {
        Self::start_with(Config::default())
    }

    pub fn start_with(config: Config) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let sim = runtime
            .block_on(KubeSim::start(config))
            .expect("start kube-sim");
        Self {
            sim: Some(sim),
            runtime,
            home: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn sim(&self) -> &KubeSim {
        self.sim.as_ref().expect("running")
    }

    /// Waits until `ready` holds for the store, checking after every write (no polling);
    /// fails the test naming `what` after `timeout`.
    #[track_caller]
    pub fn wait_for_store(
        &self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&kube_sim::Store) -> bool,
    ) {
        let store = self.sim().store().clone();
        let mut changes = store.subscribe();
        let waited = self.runtime.block_on(async {
            tokio::time::timeout(timeout, async {
                loop {
                    changes.borrow_and_update();
                    if ready(&store) {
                        return;
                    }
                    if changes.changed().await.is_err() {
                        return;
                    }
                }
            })
            .await
        });
        assert!(waited.is_ok(), "{what}: not within {timeout:?}");
    }

    /// Runs the real helm against this cluster, with its caches in the test's temp home.
    pub fn helm(&self, args: &[&str]) -> Run {
        let home = self.home.path();
        let mut cmd = Command::new(helm_path());
        cmd.arg("--kubeconfig")
            .arg(self.sim().kubeconfig_path())
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", home)
            .env("HELM_CACHE_HOME", home.join("helm-cache"))
            .env("HELM_CONFIG_HOME", home.join("helm-config"))
            .env("HELM_DATA_HOME", home.join("helm-data"));
        let out = run_with_timeout(cmd, KUBECTL_TIMEOUT);
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn kubectl(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(kubectl_path());
        cmd.arg("--kubeconfig")
            .arg(self.sim().kubeconfig_path())
            .arg("--cache-dir")
            .arg(self.home.path().join("cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", self.home.path());
        let out = run_with_timeout(cmd, KUBECTL_TIMEOUT);
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.kubectl(args).success();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    /// Writes a manifest into the temp dir and returns its path.
    pub fn manifest(&self, name: &str, body: &serde_json::Value) -> String {
        let p = self.home.path().join(name);
        std::fs::write(&p, serde_json::to_vec_pretty(body).unwrap()).unwrap();
        p.to_string_lossy().into_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(sim) = self.sim.take() {
            self.runtime.block_on(sim.shutdown());
        }
    }
}

pub fn deployment(image: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "demo", "labels": {"app": "web"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [
                    {"name": "web", "image": image, "ports": [{"containerPort": 80}]},
                    {"name": "side", "image": "busybox:1"}
                ]}
            }
        }
    })
}

/// A long-running child (e.g. `kubectl get -w`) whose stdout lines arrive on a channel, so a
/// test can wait for the next line with a deadline. Killed and reaped on drop.
pub struct Streaming {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Streaming {
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The next line, or a test failure naming `what` after `timeout`.
    #[track_caller]
    pub fn next_line(&self, what: &str, timeout: Duration) -> String {
        self.lines
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("no line ({what}) within {timeout:?}: {e}"))
    }

    /// Waits for the process to exit by itself (e.g. at a server-side timeout).
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process still running after {timeout:?}"
            );
            // Polling a child's exit status has no blocking-with-timeout API in std.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every remaining line until the process closes stdout.
    pub fn rest(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => out.push(l),
                Err(_) => break,
            }
        }
        out
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Cluster {
    /// A kubectl command with this cluster's kubeconfig and isolated HOME, not yet run.
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(kubectl_path());
        cmd.arg("--kubeconfig")
            .arg(self.sim().kubeconfig_path())
            .arg("--cache-dir")
            .arg(self.home.path().join("cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", self.home.path());
        cmd
    }
}

/// A raw HTTP/1.1 request on its own connection, sent at construction and answered by
/// `finish`. Lets a test put several requests in flight at once without a client library.
pub struct RawRequest {
    stream: std::net::TcpStream,
}

impl RawRequest {
    pub fn send(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> Self {
        use std::io::Write;
        let mut stream =
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
        stream
            .set_read_timeout(Some(KUBECTL_TIMEOUT))
            .expect("read timeout");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: raw-test/1.0\r\n\
             Content-Type: application/merge-patch+json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).expect("write head");
        stream.write_all(body.as_bytes()).expect("write body");
        Self { stream }
    }

    /// The status code and the raw response (headers and body).
    pub fn finish(mut self) -> (u16, String) {
        use std::io::Read;
        let mut out = String::new();
        self.stream.read_to_string(&mut out).expect("read response");
        let code = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {out:?}"));
        (code, out)
    }
}
