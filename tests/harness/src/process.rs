//! Spawning other binaries (the worker, helm, ...) as real processes for a test.
//!
//! A [`ChildProcess`] writes its stdout and stderr to one log file, can be killed hard
//! (SIGKILL, a crash) or terminated (SIGTERM, a graceful shutdown), and is killed when dropped
//! so that a failing test leaves no process behind.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Set this environment variable to keep the temp dirs of processes and servers (logs, stores)
/// after a test, for debugging; their paths are printed on stderr.
pub const KEEP_DIRS_VAR: &str = "TEST_HARNESS_KEEP_DIRS";

pub(crate) fn keep_dirs() -> bool {
    std::env::var_os(KEEP_DIRS_VAR).is_some_and(|v| !v.is_empty() && v != "0")
}

/// A temp dir for the harness that honours [`KEEP_DIRS_VAR`].
pub(crate) fn harness_tempdir(prefix: &str) -> anyhow::Result<TempDir> {
    let mut dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("creating a temp dir")?;
    if keep_dirs() {
        dir.disable_cleanup(true);
        eprintln!("test-harness: keeping {}", dir.path().display());
    }
    Ok(dir)
}

/// Runs a short-lived command (helm, kubectl, the worker's CLI) to completion with its output
/// captured, killing it and failing when it overruns `timeout`. Blocking: tests whose
/// runtime serves the command (an in-process kube-sim) call it from `spawn_blocking`.
pub fn run_with_timeout(
    command: &mut std::process::Command,
    timeout: Duration,
) -> anyhow::Result<std::process::Output> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {command:?}"))?;
    let pid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(output) => Ok(output?),
        Err(_) => {
            // Not reaped yet (the waiter still blocks in wait), so the pid is still our child.
            let _ = signal::kill(pid, Signal::SIGKILL);
            bail!("{command:?} did not finish within {timeout:?}")
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// Ports already returned by this function in this process are never returned again, so two
/// servers started by parallel tests cannot be handed the same port.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..1000 {
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("binding an ephemeral port on 127.0.0.1");
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("no free loopback port found in 1000 attempts");
}

/// The last `lines` lines of a log file, lossily decoded (empty if the file is unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    const MAX_BYTES: u64 = 64 * 1024;
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(MAX_BYTES);
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sends `sig` to `pid`; a process that is already gone is not an error.
pub(crate) fn send_signal(pid: u32, sig: Signal) -> anyhow::Result<()> {
    let raw = i32::try_from(pid).map_err(|_| anyhow!("pid {pid} out of range"))?;
    match signal::kill(Pid::from_raw(raw), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(err) => Err(anyhow!("sending {sig} to pid {pid}: {err}")),
    }
}

/// A process as `/proc` shows it (Linux), for tests about what a process started and left
/// behind (the helm a worker runs, in its own process group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub parent: u32,
    pub group: u32,
    /// `R`, `S`, `D`, `Z` (a zombie: exited, not reaped yet), ...
    pub state: char,
    /// The command line (empty for a zombie).
    pub argv: Vec<String>,
}

impl ProcessInfo {
    /// Still running: it exists and is not a zombie.
    pub fn is_live(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }

    /// Reads `/proc/<pid>`; `None` when there is no such process (any more).
    pub fn of(pid: u32) -> Option<ProcessInfo> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace();
        let state = fields.next()?.chars().next()?;
        let parent = fields.next()?.parse().ok()?;
        let group = fields.next()?.parse().ok()?;
        let argv = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        Some(ProcessInfo {
            pid,
            parent,
            group,
            state,
            argv,
        })
    }

    /// Every process on the machine (those that vanish while listed are left out).
    pub fn all() -> Vec<ProcessInfo> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .filter_map(ProcessInfo::of)
            .collect()
    }

    /// The live children of `parent`.
    pub fn live_children(parent: u32) -> Vec<ProcessInfo> {
        Self::all()
            .into_iter()
            .filter(|p| p.parent == parent && p.is_live())
            .collect()
    }

    /// The live members of process group `group`.
    pub fn live_group(group: u32) -> Vec<ProcessInfo> {
        Self::all()
            .into_iter()
            .filter(|p| p.group == group && p.is_live())
            .collect()
    }
}

/// Opens `path` for appending, for a child's stdout and stderr.
pub(crate) fn log_stdio(path: &Path) -> anyhow::Result<(Stdio, Stdio)> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening log file {}", path.display()))?;
    let err = file
        .try_clone()
        .context("duplicating the log file handle")?;
    Ok((Stdio::from(file), Stdio::from(err)))
}

/// How to start a [`ChildProcess`]; see [`ChildProcess::builder`].
#[derive(Debug, Clone)]
pub struct ProcessBuilder {
    program: PathBuf,
    name: String,
    args: Vec<OsString>,
    envs: Vec<(OsString, Option<OsString>)>,
    env_clear: bool,
    current_dir: Option<PathBuf>,
    log_path: Option<PathBuf>,
}

impl ProcessBuilder {
    /// A builder for `program` (a path, or a name looked up on `PATH`).
    pub fn new(program: impl Into<PathBuf>) -> Self {
        let program = program.into();
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| program.display().to_string());
        Self {
            program,
            name,
            args: Vec::new(),
            envs: Vec::new(),
            env_clear: false,
            current_dir: None,
            log_path: None,
        }
    }

    /// A label used in messages and in the default log file name (default: the program's file
    /// name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the child (it inherits the rest of the test's
    /// environment unless [`env_clear`](Self::env_clear) is called).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.envs.push((key.as_ref().to_owned(), None));
        self
    }

    /// Starts the child with an empty environment plus what [`env`](Self::env) sets.
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Appends stdout and stderr to this file (default: `<name>.log` in a temp dir owned by
    /// the [`ChildProcess`]). Appending lets a restarted process share one log.
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_path = Some(path.into());
        self
    }

    /// Starts the process. Needs a tokio runtime.
    pub fn spawn(self) -> anyhow::Result<ChildProcess> {
        let (log_dir, log_path) = match self.log_path {
            Some(path) => (None, path),
            None => {
                let dir = harness_tempdir(&format!("{}-", sanitize(&self.name)))?;
                let path = dir.path().join(format!("{}.log", sanitize(&self.name)));
                (Some(dir), path)
            }
        };
        let (stdout, stderr) = log_stdio(&log_path)?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true);
        if self.env_clear {
            cmd.env_clear();
        }
        for (key, value) in &self.envs {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        if let Some(dir) = &self.current_dir {
            cmd.current_dir(dir);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {} ({})", self.name, self.program.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("{} exited before its pid was read", self.name))?;
        Ok(ChildProcess {
            name: self.name,
            pid,
            child,
            status: None,
            log_path,
            _log_dir: log_dir,
        })
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A running (or exited) child process whose output goes to a log file. Killed (SIGKILL) on
/// drop.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    pid: u32,
    child: Child,
    status: Option<ExitStatus>,
    log_path: PathBuf,
    // Dropped after `child`; only present when the log lives in a temp dir of our own.
    _log_dir: Option<TempDir>,
}

impl ChildProcess {
    /// Starts describing a process to spawn.
    pub fn builder(program: impl Into<PathBuf>) -> ProcessBuilder {
        ProcessBuilder::new(program)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole log so far, lossily decoded.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }

    /// The exit status if the process has exited (reaping it), `None` while it runs.
    pub fn try_exit_status(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .with_context(|| format!("checking whether {} exited", self.name))?;
        }
        Ok(self.status)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.try_exit_status(), Ok(None))
    }

    /// Sends `sig` unless the process has already been reaped (its pid may be reused).
    pub fn signal(&mut self, sig: Signal) -> anyhow::Result<()> {
        if self.try_exit_status()?.is_some() {
            return Ok(());
        }
        send_signal(self.pid, sig)
    }

    /// Sends SIGTERM (a graceful shutdown request) and returns without waiting; see
    /// [`wait_exit`](Self::wait_exit).
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// Kills the process with SIGKILL, like a crash or an OOM kill, and waits for it to exit.
    pub async fn kill_hard(&mut self) -> anyhow::Result<ExitStatus> {
        self.signal(Signal::SIGKILL)?;
        self.wait_exit(Duration::from_secs(10)).await
    }

    /// Waits for the process to exit, failing (and leaving it running) after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => {
                self.status = Some(status);
                Ok(status)
            }
            Ok(Err(err)) => Err(err).with_context(|| format!("waiting for {}", self.name)),
            Err(_) => bail!(
                "{} (pid {}) did not exit within {timeout:?}; log tail:\n{}",
                self.name,
                self.pid,
                self.log_tail(30)
            ),
        }
    }

    /// SIGTERM, then SIGKILL if the process has not exited after `grace`.
    pub async fn stop(&mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        self.terminate()?;
        match self.wait_exit(grace).await {
            Ok(status) => Ok(status),
            Err(_) => self.kill_hard().await,
        }
    }

    /// Waits until the log contains `needle`. Fails early, with the log tail, if the process
    /// exits first.
    pub async fn wait_for_log(&mut self, needle: &str, deadline: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + deadline;
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.try_exit_status()? {
                // One last look: the line may have been written just before exiting.
                if self.log().contains(needle) {
                    return Ok(());
                }
                bail!(
                    "{} exited ({status}) before logging {needle:?}; log tail:\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            if Instant::now() >= end {
                bail!(
                    "{} did not log {needle:?} within {deadline:?}; log tail:\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test-harness: {} (pid {}) log tail ({}):\n{}",
                self.name,
                self.pid,
                self.log_path.display(),
                self.log_tail(40)
            );
        }
        // kill_on_drop sends SIGKILL and tokio reaps the child in the background.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let ports: HashSet<u16> = (0..50).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 50);
    }

    #[tokio::test]
    async fn captures_output_env_and_exit_status() {
        let mut p = ChildProcess::builder("/bin/sh")
            .args(["-c", "echo out-$GREETING; echo err >&2; exit 3"])
            .env("GREETING", "hello")
            .spawn()
            .unwrap();
        let status = p.wait_exit(Duration::from_secs(5)).await.unwrap();
        assert_eq!(status.code(), Some(3));
        let log = p.log();
        assert!(log.contains("out-hello") && log.contains("err"), "{log}");
    }

    #[tokio::test]
    async fn kill_hard_and_terminate() {
        use std::os::unix::process::ExitStatusExt;

        let mut p = ChildProcess::builder("/bin/sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(p.is_running());
        let status = p.kill_hard().await.unwrap();
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
        assert!(!p.is_running());
        // Signalling a reaped process is a no-op, not an error.
        p.terminate().unwrap();

        let mut p = ChildProcess::builder("/bin/sleep")
            .arg("30")
            .spawn()
            .unwrap();
        p.terminate().unwrap();
        let status = p.wait_exit(Duration::from_secs(5)).await.unwrap();
        assert_eq!(status.signal(), Some(Signal::SIGTERM as i32));
    }

    #[tokio::test]
    async fn wait_for_log_fails_fast_when_process_exits() {
        let mut p = ChildProcess::builder("/bin/sh")
            .args(["-c", "echo starting; exit 1"])
            .spawn()
            .unwrap();
        p.wait_for_log("starting", Duration::from_secs(5))
            .await
            .unwrap();
        let err = p
            .wait_for_log("ready", Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("exited"), "{err}");
    }

    #[tokio::test]
    async fn process_info_sees_a_child_its_group_and_its_end() {
        let mut child = tokio::process::Command::new("/bin/sleep")
            .arg("30")
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let me = std::process::id();
        let info = ProcessInfo::live_children(me)
            .into_iter()
            .find(|p| p.pid == pid)
            .expect("the child is listed");
        assert_eq!(info.argv, ["/bin/sleep", "30"]);
        assert_eq!(info.group, pid, "leads its own group");
        assert!(info.is_live());
        // The group holds just the child. Compare pids, not whole readings: the state is a
        // moment's (a sleeping child shows 'D' for an instant while the disk is busy).
        let group: Vec<_> = ProcessInfo::live_group(pid).iter().map(|p| p.pid).collect();
        assert_eq!(group, [info.pid]);

        child.start_kill().unwrap();
        child.wait().await.unwrap();
        assert_eq!(ProcessInfo::of(pid), None, "reaped");
        assert!(ProcessInfo::live_group(pid).is_empty());
    }
}
