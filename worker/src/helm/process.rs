//! Running one child process (helm) with a deadline and capped output.
//!
//! The child gets its own process group so that a timeout (or the caller dropping the future)
//! kills everything it started, not just the leader: helm can run post-renderers and plugins.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};

/// What to run. `args` go to the program as they are: no shell is involved.
#[derive(Debug, Clone)]
pub(crate) struct Invocation {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Added to the inherited environment.
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    pub max_stdout: usize,
    pub max_stderr: usize,
}

/// How a finished process ended and what it printed.
#[derive(Debug)]
pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    /// More than `max_stdout` bytes were printed; `stdout` holds the first `max_stdout`.
    pub stdout_overflow: bool,
    /// The last `max_stderr` bytes (lossily decoded).
    pub stderr: String,
}

#[derive(Debug)]
pub(crate) enum RunError {
    Spawn(std::io::Error),
    /// Killed (with its process group) at the deadline.
    TimedOut,
    /// Reading its output or waiting for it failed; it was killed.
    Io(std::io::Error),
}

/// Kills the child's process group unless the child has been reaped: on timeout, on error
/// and when the future running it is dropped.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // ESRCH (already gone) is fine.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    /// The leader was reaped: its pid may be reused, so never signal it again.
    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `inv` to completion or kills it at its deadline. Completion means the process exited
/// and its stdout and stderr reached end of file: a leftover grandchild holding the pipes
/// open keeps the call going until the deadline kills the group.
pub(crate) async fn run(inv: &Invocation) -> Result<Finished, RunError> {
    let mut cmd = tokio::process::Command::new(&inv.program);
    cmd.args(&inv.args)
        .envs(inv.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(RunError::Spawn)?;
    let mut guard = GroupGuard {
        // With process_group(0) the group id is the child's pid.
        pgid: child.id().map(|id| Pid::from_raw(id as i32)),
    };
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");

    let work = async {
        let (out, err, status) = tokio::join!(
            read_head(stdout, inv.max_stdout),
            read_tail(stderr, inv.max_stderr),
            child.wait()
        );
        (out, err, status)
    };
    // Bound first: the timed-out future (and its borrow of `child`) must be gone before the
    // timeout arm reaps the child.
    let result = tokio::time::timeout(inv.timeout, work).await;
    match result {
        Ok((out, err, status)) => {
            let status = match status {
                Ok(s) => {
                    guard.disarm();
                    s
                }
                Err(e) => return Err(RunError::Io(e)),
            };
            let (stdout, stdout_overflow) = out.map_err(RunError::Io)?;
            let stderr = err.map_err(RunError::Io)?;
            Ok(Finished {
                status,
                stdout,
                stdout_overflow,
                stderr,
            })
        }
        Err(_) => {
            guard.kill();
            // Reap the leader so no zombie stays behind; SIGKILL makes this quick.
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            Err(RunError::TimedOut)
        }
    }
}

/// Reads everything, keeping the first `cap` bytes; the flag says whether more came.
/// Keeps draining past the cap so the child never blocks on a full pipe.
async fn read_head(mut r: impl AsyncRead + Unpin, cap: usize) -> std::io::Result<(Vec<u8>, bool)> {
    let mut kept = Vec::new();
    let mut overflow = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, overflow));
        }
        let room = cap.saturating_sub(kept.len());
        if n > room {
            overflow = true;
        }
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

/// Reads everything, keeping the last `cap` bytes (the end of helm's stderr has the error).
async fn read_tail(mut r: impl AsyncRead + Unpin, cap: usize) -> std::io::Result<String> {
    let mut kept: Vec<u8> = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        // Trim in batches rather than on every read.
        if kept.len() > cap.saturating_mul(2).max(cap + buf.len()) {
            kept.drain(..kept.len() - cap);
            truncated = true;
        }
    }
    if kept.len() > cap {
        kept.drain(..kept.len() - cap);
        truncated = true;
    }
    let text = String::from_utf8_lossy(&kept);
    Ok(if truncated {
        format!("[… earlier output dropped]{text}")
    } else {
        text.into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn inv(program: &str, args: &[&str], timeout: Duration) -> Invocation {
        Invocation {
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            env: vec![("HELM_DRIVER_TEST".into(), "1".into())],
            timeout,
            max_stdout: 1024,
            max_stderr: 64,
        }
    }

    #[tokio::test]
    async fn captures_output_and_status() {
        let f = run(&inv(
            "sh",
            &[
                "-c",
                "echo out; echo err >&2; echo $HELM_DRIVER_TEST; exit 3",
            ],
            Duration::from_secs(10),
        ))
        .await
        .unwrap();
        assert_eq!(f.status.code(), Some(3));
        assert_eq!(f.stdout, b"out\n1\n");
        assert!(!f.stdout_overflow);
        assert_eq!(f.stderr, "err\n");
    }

    #[tokio::test]
    async fn caps_stdout_and_keeps_the_end_of_stderr() {
        let f = run(&inv(
            "sh",
            &[
                "-c",
                "head -c 100000 /dev/zero; i=0; while [ $i -lt 200 ]; do echo \"line $i\" >&2; i=$((i+1)); done",
            ],
            Duration::from_secs(10),
        ))
        .await
        .unwrap();
        assert!(f.status.success());
        assert!(f.stdout_overflow);
        assert_eq!(f.stdout.len(), 1024);
        assert!(f.stderr.ends_with("line 199\n"), "{}", f.stderr);
        assert!(f.stderr.starts_with("[… earlier output dropped]"));
        assert!(f.stderr.len() <= 64 + "[… earlier output dropped]".len());
    }

    /// A grandchild in the same group dies with the leader at the deadline. The deadline
    /// must pass after the script started the grandchild and wrote its pid; on a busy
    /// machine `sh` may not get there in time, which tests nothing, so the call is repeated
    /// with a longer deadline.
    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let mut timeout = Duration::from_millis(300);
        loop {
            let dir = tempfile::tempdir().unwrap();
            let pidfile = dir.path().join("pid");
            let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
            let started = Instant::now();
            let err = run(&inv("sh", &["-c", &script], timeout))
                .await
                .unwrap_err();
            assert!(matches!(err, RunError::TimedOut), "{err:?}");
            assert!(started.elapsed() < timeout + Duration::from_secs(5));
            if written_pid(&pidfile).is_some() {
                assert_grandchild_gone(&pidfile, "the timeout").await;
                return;
            }
            assert!(
                timeout < Duration::from_secs(20),
                "the script never started its grandchild"
            );
            timeout *= 4;
        }
    }

    /// Dropping the future (the caller gave up) kills the group too.
    #[tokio::test]
    async fn dropping_the_call_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let call = inv("sh", &["-c", &script], Duration::from_secs(60));
        let mut fut = Box::pin(run(&call));
        // Drive the call until the grandchild exists, then drop it mid-way.
        let deadline = Instant::now() + Duration::from_secs(30);
        while written_pid(&pidfile).is_none() {
            assert!(Instant::now() < deadline, "script never started");
            let _ = tokio::time::timeout(Duration::from_millis(20), fut.as_mut()).await;
        }
        drop(fut);
        assert_grandchild_gone(&pidfile, "the dropped call").await;
    }

    /// The pid the script wrote to `pidfile`, once it is there in full.
    fn written_pid(pidfile: &std::path::Path) -> Option<i32> {
        let text = std::fs::read_to_string(pidfile).ok()?;
        text.ends_with('\n').then(|| text.trim().parse().ok())?
    }

    /// Waits (bounded) until the process whose pid the script wrote to `pidfile` is gone:
    /// the orphan is reparented and reaped by init, which may take a moment.
    async fn assert_grandchild_gone(pidfile: &std::path::Path, after: &str) {
        let pid = written_pid(pidfile).expect("the script wrote the grandchild's pid");
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) {
            assert!(
                Instant::now() < deadline,
                "grandchild {pid} survived {after}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Running (not a zombie waiting for its parent).
    fn alive(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
            Err(_) => false,
        }
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let err = run(&inv(
            "/nonexistent/helm",
            &["version"],
            Duration::from_secs(1),
        ))
        .await
        .unwrap_err();
        assert!(matches!(err, RunError::Spawn(_)));
    }
}
