//! The release engine: the real `helm` CLI (Helm 4, or Helm 3.14+), driven with argv only.
//!
//! What to run is decided apart from running it: `command_line` builds each helm command
//! line (and its deadline) as a plain value, with the Helm 3/4 differences, and is unit-tested;
//! this module validates the request, runs the built argv and reads the result.
//!
//! Every call runs one helm process in its own process group with a deadline (the whole
//! group is killed when it passes, or when the caller drops the future), captures stdout up to
//! a cap (exceeding it is an error) and the end of stderr, and turns failures into
//! [`HelmError`]s that name the operation, the release and helm's own words, and say whether a
//! retry can help ([`HelmError::is_transient`]). Values reach helm as a file in a private
//! temporary directory (0700, file 0600) removed after the call, never on the command line.
//!
//! The child inherits the worker's environment plus [`HelmConfig::env`] (tests point `HOME`
//! and the `HELM_*_HOME` directories at a temp dir there). Nothing logs the environment;
//! the kubeconfig path is logged, its contents never.
//!
//! Timing: each helm invocation is traced in a `helm` span (field `operation`) and reported
//! with its duration to an optional [`HelmObserver`], which is where metrics hook in.

mod command_line;
mod error;
mod process;
mod recover;
mod release;
mod version;

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};
use tracing::Instrument;

pub use error::{FailureKind, HelmError, Operation};
pub use recover::{Recovery, RecoveryAction};
pub use release::{HistoryEntry, ReleaseRef, ReleaseState, ReleaseStatus, RenderedRelease};
pub use version::HelmVersion;

use crate::deploy::naming::is_dns_label;
use command_line::CommandLine;
use process::{Invocation, RunError};

/// Default deadline of one helm call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Default cap on what one call may print to stdout (manifests of big releases).
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 4 * 1024 * 1024;
/// Default amount of stderr kept (its end).
pub const DEFAULT_MAX_STDERR_BYTES: usize = 64 * 1024;
/// Extra time a waiting helm gets beyond what it was told to wait, so that it can finish its
/// own rollback and write the release record rather than be killed mid-way.
pub const WAIT_GRACE: Duration = Duration::from_secs(30);

/// How to run helm.
#[derive(Clone)]
pub struct HelmConfig {
    /// The helm binary (`--helm-bin` / `HELM_BIN`).
    pub bin: PathBuf,
    /// Passed as `--kubeconfig` when set (`--kubeconfig` / `KUBECONFIG`).
    pub kubeconfig: Option<PathBuf>,
    /// Passed as `--kube-context` when set (`--kube-context` / `KUBE_CONTEXT`).
    pub kube_context: Option<String>,
    /// Deadline of one call unless the call says otherwise.
    pub timeout: Duration,
    /// Cap on stdout; more is [`HelmError::OutputTooLarge`].
    pub max_output_bytes: usize,
    /// How much of the end of stderr is kept.
    pub max_stderr_bytes: usize,
    /// Added to the inherited environment of every helm process.
    pub env: Vec<(String, String)>,
    /// `GOMEMLIMIT` of every helm process, in bytes (over an inherited one): helm is a Go
    /// program, and its garbage collector then works harder rather than grow the heap
    /// past it. `None` leaves helm's own default.
    pub go_memory_limit: Option<u64>,
    /// Most helm processes at once (the memory budget); further calls wait for a slot
    /// before their process starts (and before its deadline runs). `None`: no bound.
    pub max_processes: Option<usize>,
    /// Where the private values directories are made; `None` is the system temp dir.
    pub temp_dir: Option<PathBuf>,
}

impl HelmConfig {
    /// Defaults (5 min per call, 4 MiB stdout, 64 KiB stderr) for the helm at `bin`.
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        Self {
            bin: bin.into(),
            kubeconfig: None,
            kube_context: None,
            timeout: DEFAULT_TIMEOUT,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            max_stderr_bytes: DEFAULT_MAX_STDERR_BYTES,
            env: Vec::new(),
            go_memory_limit: None,
            max_processes: None,
            temp_dir: None,
        }
    }
}

impl Default for HelmConfig {
    /// `helm` from `PATH`.
    fn default() -> Self {
        Self::new("helm")
    }
}

impl fmt::Debug for HelmConfig {
    /// Environment values may be credentials: only their names are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HelmConfig")
            .field("bin", &self.bin)
            .field("kubeconfig", &self.kubeconfig)
            .field("kube_context", &self.kube_context)
            .field("timeout", &self.timeout)
            .field("max_output_bytes", &self.max_output_bytes)
            .field("max_stderr_bytes", &self.max_stderr_bytes)
            .field(
                "env",
                &self.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            )
            .field("go_memory_limit", &self.go_memory_limit)
            .field("max_processes", &self.max_processes)
            .field("temp_dir", &self.temp_dir)
            .finish()
    }
}

/// Told about every helm invocation when it ends (metrics: count and duration per operation
/// and outcome; `HelmError::label` makes a bounded outcome label).
pub trait HelmObserver: Send + Sync {
    fn observe(&self, operation: Operation, elapsed: Duration, outcome: Result<(), &HelmError>);

    /// How long a call waited for a helm process slot ([`HelmConfig::max_processes`]).
    fn waited_for_slot(&self, _waited: Duration) {}
}

/// An `upgrade --install` into an existing namespace (never `--create-namespace`: the worker
/// creates and labels namespaces itself).
#[derive(Debug, Clone)]
pub struct UpgradeRequest<'a> {
    pub release: &'a str,
    pub namespace: &'a str,
    /// A chart directory (or packaged `.tgz`) on local disk.
    pub chart_dir: &'a Path,
    /// The values, a JSON object (or null for none). The release gets exactly the chart's
    /// defaults merged with these (`--reset-values`): nothing is carried over from the
    /// previous revision.
    pub values: &'a serde_json::Value,
    /// Wait up to this long for the resources to be ready; `None` does not wait.
    pub wait: Option<Duration>,
    /// On failure, roll back to the previous successful revision (Helm 4
    /// `--rollback-on-failure`, Helm 3 `--atomic`). This implies waiting: with `wait: None`
    /// helm waits up to the call's timeout.
    pub rollback_on_failure: bool,
    /// Deadline for this call instead of `HelmConfig::timeout`. Raised when needed to cover
    /// what helm was told to wait for (twice with rollback on failure) plus [`WAIT_GRACE`].
    pub timeout: Option<Duration>,
    /// What `helm history` shows for the new revision (helm's default when `None`), so
    /// operators can tell helm-service's own revisions (scaled down, promoted) apart.
    pub description: Option<&'a str>,
    /// Custom labels stored with the new revision (`--labels`, Helm 3.13 and newer): whose
    /// release it is. Keys and values must not hold `,` or `=` (validated Keptn names and
    /// label keys do not).
    pub labels: Option<&'a std::collections::BTreeMap<String, String>>,
}

impl<'a> UpgradeRequest<'a> {
    /// No wait, no rollback, the configured timeout.
    pub fn new(
        release: &'a str,
        namespace: &'a str,
        chart_dir: &'a Path,
        values: &'a serde_json::Value,
    ) -> Self {
        Self {
            release,
            namespace,
            chart_dir,
            values,
            wait: None,
            rollback_on_failure: false,
            timeout: None,
            description: None,
            labels: None,
        }
    }
}

/// What `uninstall` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uninstalled {
    Removed,
    /// There was no such release (not an error: the goal is reached).
    NotFound,
}

/// A detected helm, ready to run. Cheap to clone.
#[derive(Clone)]
pub struct Helm {
    config: Arc<HelmConfig>,
    version: HelmVersion,
    observer: Option<Arc<dyn HelmObserver>>,
    /// Permits for [`HelmConfig::max_processes`] helm processes, shared by the clones.
    slots: Option<Arc<Semaphore>>,
}

impl fmt::Debug for Helm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Helm")
            .field("config", &self.config)
            .field("version", &self.version)
            .field("observer", &self.observer.is_some())
            .field("slots", &self.config.max_processes)
            .finish()
    }
}

impl Helm {
    /// Runs `helm version` and checks it is Helm 4 or Helm 3.14+; anything else (or a helm
    /// that does not run) is an error worth stopping start-up for.
    pub async fn detect(config: HelmConfig) -> Result<Helm, HelmError> {
        let config = Arc::new(config);
        let target = ReleaseRef::default();
        let unsupported = |found: String, reason: String| HelmError::UnsupportedVersion {
            bin: config.bin.clone(),
            found,
            reason,
        };
        let inv = Invocation {
            program: config.bin.clone(),
            args: command_line::version(),
            env: command_line::environment(&config),
            timeout: config.timeout,
            max_stdout: 4096,
            max_stderr: config.max_stderr_bytes,
        };
        let finished = match process::run(&inv).await {
            Ok(f) => f,
            Err(RunError::Spawn(source)) => {
                return Err(HelmError::Spawn {
                    bin: config.bin.clone(),
                    operation: Operation::Version,
                    target,
                    source,
                })
            }
            Err(RunError::TimedOut) => {
                return Err(HelmError::TimedOut {
                    operation: Operation::Version,
                    target,
                    after: config.timeout,
                })
            }
            Err(RunError::Io(e)) => {
                return Err(unsupported(
                    String::new(),
                    format!("reading its output: {e}"),
                ))
            }
        };
        let stdout = String::from_utf8_lossy(&finished.stdout).trim().to_owned();
        if !finished.status.success() {
            return Err(unsupported(
                stdout,
                format!(
                    "`helm version` failed ({}): {}",
                    finished.status,
                    error::stderr_tail(&finished.stderr)
                ),
            ));
        }
        let version = HelmVersion::parse(&stdout).ok_or_else(|| {
            unsupported(
                stdout.clone(),
                format!("`helm version` printed {stdout:?}, not a version like v4.1.4"),
            )
        })?;
        if let Some(reason) = version.unsupported_reason() {
            return Err(unsupported(stdout, format!("found {version}: {reason}")));
        }
        tracing::info!(
            helm = %config.bin.display(),
            version = %version,
            kubeconfig = config.kubeconfig.as_ref().map(|p| p.display().to_string()),
            kube_context = config.kube_context.as_deref(),
            "helm detected"
        );
        let slots = config
            .max_processes
            .map(|n| Arc::new(Semaphore::new(n.clamp(1, Semaphore::MAX_PERMITS))));
        Ok(Helm {
            config,
            version,
            observer: None,
            slots,
        })
    }

    /// Reports every helm invocation to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn HelmObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn version(&self) -> &HelmVersion {
        &self.version
    }

    /// `helm upgrade --install`, then the release's new status — read from the JSON helm
    /// prints (`-o json`), so an upgrade is one helm process; `helm history` only when that
    /// output was too large to keep.
    pub async fn upgrade_install(
        &self,
        req: &UpgradeRequest<'_>,
    ) -> Result<ReleaseStatus, HelmError> {
        let op = Operation::Upgrade;
        let (target, chart, values) = self.upgrade_inputs(op, req)?;
        let line = command_line::upgrade(
            req,
            &chart,
            &values.path(),
            &self.version,
            self.config.timeout,
        );
        let printed = match self.call(op, &target, line).await {
            Ok(out) => release::parse_upgrade_output(req.release, req.namespace, &out),
            // The upgrade went through; only its printout was over the cap.
            Err(HelmError::OutputTooLarge { .. }) => None,
            Err(e) => return Err(e),
        };
        drop(values);
        if let Some(status) = printed {
            return Ok(status);
        }
        self.status(req.release, req.namespace)
            .await?
            .ok_or_else(|| HelmError::Parse {
                operation: Operation::Status,
                target,
                message: "the release is gone right after its upgrade succeeded".into(),
            })
    }

    /// What `helm upgrade --install` of `req` would deploy, rendered by helm against the
    /// cluster (`--dry-run=server`) and neither stored nor applied: the revision it would
    /// write, the manifest and the hooks. A caller that must change what a chart renders
    /// before it is applied deploys the changed manifest instead (`deploy::manifest_chart`).
    ///
    /// The printout holds the whole chart too (its files, base64), so the output cap is
    /// raised by twice `chart_bytes`, the chart's size.
    pub async fn render_upgrade(
        &self,
        req: &UpgradeRequest<'_>,
        chart_bytes: usize,
    ) -> Result<RenderedRelease, HelmError> {
        let op = Operation::Render;
        let (target, chart, values) = self.upgrade_inputs(op, req)?;
        let line = command_line::render(req, &chart, &values.path(), self.config.timeout);
        let cap = (self.config.max_output_bytes).saturating_add(chart_bytes.saturating_mul(2));
        let out = self.call_capped(op, &target, line, cap).await?;
        drop(values);
        release::parse_rendered(&out).map_err(|e| HelmError::Parse {
            operation: op,
            target,
            message: e.to_string(),
        })
    }

    /// The checked release, the chart's absolute path and the values written to a private
    /// file, as every `helm upgrade` line takes them.
    fn upgrade_inputs(
        &self,
        op: Operation,
        req: &UpgradeRequest<'_>,
    ) -> Result<(ReleaseRef, PathBuf, ValuesFile), HelmError> {
        let target = checked_target(op, req.release, req.namespace)?;
        let invalid = |reason: String| HelmError::InvalidRequest {
            operation: op,
            target: target.clone(),
            reason,
        };
        if !(req.values.is_object() || req.values.is_null()) {
            return Err(invalid(
                "values must be a JSON object (a map of value names)".into(),
            ));
        }
        let chart = std::path::absolute(req.chart_dir)
            .map_err(|e| invalid(format!("chart path {}: {e}", req.chart_dir.display())))?;
        let values =
            ValuesFile::write(self.config.temp_dir.as_deref(), req.values).map_err(|source| {
                HelmError::Io {
                    operation: op,
                    target: target.clone(),
                    source,
                }
            })?;
        Ok((target, chart, values))
    }

    /// The latest revision of the release; `None` when there is no such release.
    ///
    /// Read from `helm history --max 1` rather than `helm status -o json`: Helm 4's status
    /// fetches every object of the release and prints the values (which may hold
    /// credentials) and the manifest, none of which this needs; history has the revision,
    /// state, chart and description in the same JSON on Helm 3 and 4.
    pub async fn status(
        &self,
        release: &str,
        namespace: &str,
    ) -> Result<Option<ReleaseStatus>, HelmError> {
        let target = ReleaseRef::new(release, namespace);
        let entries = self.history_of(Operation::Status, &target, Some(1)).await?;
        Ok(entries
            .into_iter()
            .max_by_key(|e| e.revision)
            .map(|e| ReleaseStatus::from_entry(release, namespace, e)))
    }

    /// Every revision helm keeps, oldest first; empty when there is no such release.
    pub async fn history(
        &self,
        release: &str,
        namespace: &str,
    ) -> Result<Vec<HistoryEntry>, HelmError> {
        let target = ReleaseRef::new(release, namespace);
        self.history_of(Operation::History, &target, None).await
    }

    async fn history_of(
        &self,
        op: Operation,
        target: &ReleaseRef,
        max: Option<u32>,
    ) -> Result<Vec<HistoryEntry>, HelmError> {
        validate(op, target)?;
        let line = command_line::history(target, max, self.config.timeout);
        let out = match self.call(op, target, line).await {
            Ok(out) => out,
            Err(HelmError::ReleaseNotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let text = utf8(op, target, out)?;
        release::parse_history(&text).map_err(|e| HelmError::Parse {
            operation: op,
            target: target.clone(),
            message: format!("{e} in {}", excerpt(&text)),
        })
    }

    /// The rendered manifest of the latest (or the given) revision.
    pub async fn manifest(
        &self,
        release: &str,
        namespace: &str,
        revision: Option<u32>,
    ) -> Result<String, HelmError> {
        let op = Operation::Manifest;
        let target = checked_target(op, release, namespace)?;
        let line = command_line::manifest(&target, revision, self.config.timeout);
        let out = self.call(op, &target, line).await?;
        utf8(op, &target, out)
    }

    /// `helm rollback` to `revision` (a new revision with its manifest and values),
    /// optionally waiting for readiness.
    pub async fn rollback(
        &self,
        release: &str,
        namespace: &str,
        revision: u32,
        wait: Option<Duration>,
    ) -> Result<(), HelmError> {
        let op = Operation::Rollback;
        let target = checked_target(op, release, namespace)?;
        let line =
            command_line::rollback(&target, revision, wait, &self.version, self.config.timeout);
        self.call(op, &target, line).await?;
        Ok(())
    }

    /// `helm test`: runs the release's test hooks, waiting up to `wait` for them; an error
    /// when a test fails (helm's message names the pod) or does not finish in time.
    pub async fn test(
        &self,
        release: &str,
        namespace: &str,
        wait: Duration,
    ) -> Result<(), HelmError> {
        let op = Operation::Test;
        let target = checked_target(op, release, namespace)?;
        let line = command_line::test(&target, wait, self.config.timeout);
        self.call(op, &target, line).await?;
        Ok(())
    }

    /// `helm uninstall`, optionally waiting until the objects are gone. A release that does
    /// not exist is [`Uninstalled::NotFound`], not an error.
    pub async fn uninstall(
        &self,
        release: &str,
        namespace: &str,
        wait: Option<Duration>,
    ) -> Result<Uninstalled, HelmError> {
        let op = Operation::Uninstall;
        let target = checked_target(op, release, namespace)?;
        let line = command_line::uninstall(&target, wait, &self.version, self.config.timeout);
        let result = self.call(op, &target, line).await;
        match result {
            Ok(_) => Ok(Uninstalled::Removed),
            Err(HelmError::ReleaseNotFound { .. }) => Ok(Uninstalled::NotFound),
            Err(e) => Err(e),
        }
    }

    /// Recovers a release left `pending-install` / `pending-upgrade` / `pending-rollback` by a
    /// helm that died (see the `recover` module for the rules); `None` when the latest
    /// revision is not pending or there is no release.
    ///
    /// Call it only while holding the release's lease: a pending revision is then known to
    /// belong to a dead helm. A live helm's revision would be overwritten.
    pub async fn recover_pending(
        &self,
        release: &str,
        namespace: &str,
    ) -> Result<Option<Recovery>, HelmError> {
        let history = self.history(release, namespace).await?;
        let Some(plan) = recover::plan(&history) else {
            return Ok(None);
        };
        let action = match plan.step {
            recover::RecoveryStep::Rollback(to_revision) => {
                self.rollback(release, namespace, to_revision, None).await?;
                let status = self.status(release, namespace).await?;
                RecoveryAction::RolledBack {
                    to_revision,
                    new_revision: status.map(|s| s.revision).unwrap_or_default(),
                }
            }
            recover::RecoveryStep::Uninstall => {
                self.uninstall(release, namespace, None).await?;
                RecoveryAction::Uninstalled
            }
        };
        let recovery = Recovery {
            release: release.to_owned(),
            namespace: namespace.to_owned(),
            pending_revision: plan.pending_revision,
            pending_state: plan.pending_state,
            action,
        };
        // Info, not warn: the caller decides how loudly to report it (and counts it).
        tracing::info!(
            release,
            namespace,
            pending_revision = recovery.pending_revision,
            pending_state = %recovery.pending_state,
            "{recovery}"
        );
        Ok(Some(recovery))
    }

    /// Runs one helm command; stdout on success.
    async fn call(
        &self,
        operation: Operation,
        target: &ReleaseRef,
        line: CommandLine,
    ) -> Result<Vec<u8>, HelmError> {
        self.call_capped(operation, target, line, self.config.max_output_bytes)
            .await
    }

    /// [`Helm::call`] keeping up to `max_output` bytes of stdout.
    async fn call_capped(
        &self,
        operation: Operation,
        target: &ReleaseRef,
        line: CommandLine,
        max_output: usize,
    ) -> Result<Vec<u8>, HelmError> {
        // What helm did, for logs and traces; never its arguments (values may hold secrets).
        let span = tracing::info_span!(
            "helm",
            otel.name = %format!("helm {}", operation.as_str()),
            operation = operation.as_str(),
            release = %target.release,
            namespace = %target.namespace,
            otel.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let recorded = span.clone();
        async {
            let _slot = self.slot().await;
            let started = Instant::now();
            let result = self.run(operation, target, line, max_output).await;
            let elapsed = started.elapsed();
            match &result {
                Ok(_) => tracing::debug!(elapsed_ms = elapsed.as_millis() as u64, "helm finished"),
                Err(e) => {
                    recorded.record("otel.status_code", "ERROR");
                    recorded.record("error.type", e.label());
                    tracing::debug!(
                        elapsed_ms = elapsed.as_millis() as u64,
                        outcome = e.label(),
                        error = %e,
                        "helm failed"
                    )
                }
            }
            if let Some(observer) = &self.observer {
                observer.observe(operation, elapsed, result.as_ref().map(|_| ()));
            }
            result
        }
        .instrument(span)
        .await
    }

    /// A helm process slot, once one is free (`None` without a bound); reports the wait.
    async fn slot(&self) -> Option<SemaphorePermit<'_>> {
        let slots = self.slots.as_ref()?;
        let asked = Instant::now();
        // Never closed, so never an error.
        let permit = slots.acquire().await.ok();
        if let Some(observer) = &self.observer {
            observer.waited_for_slot(asked.elapsed());
        }
        permit
    }

    async fn run(
        &self,
        operation: Operation,
        target: &ReleaseRef,
        line: CommandLine,
        max_output: usize,
    ) -> Result<Vec<u8>, HelmError> {
        let CommandLine {
            args,
            timeout,
            waited,
        } = line;
        let inv = Invocation {
            program: self.config.bin.clone(),
            args: command_line::with_cluster_flags(&self.config, args),
            env: command_line::environment(&self.config),
            timeout,
            max_stdout: max_output,
            max_stderr: self.config.max_stderr_bytes,
        };
        let finished = match process::run(&inv).await {
            Ok(f) => f,
            Err(RunError::Spawn(source)) => {
                return Err(HelmError::Spawn {
                    bin: self.config.bin.clone(),
                    operation,
                    target: target.clone(),
                    source,
                })
            }
            Err(RunError::TimedOut) => {
                return Err(HelmError::TimedOut {
                    operation,
                    target: target.clone(),
                    after: timeout,
                })
            }
            Err(RunError::Io(source)) => {
                return Err(HelmError::Io {
                    operation,
                    target: target.clone(),
                    source,
                })
            }
        };
        if !finished.status.success() {
            let stderr = finished.stderr;
            let target = target.clone();
            return Err(if error::is_operation_in_progress(&stderr) {
                HelmError::OperationInProgress {
                    operation,
                    target,
                    stderr,
                }
            } else if error::is_release_not_found(&stderr) {
                HelmError::ReleaseNotFound { operation, target }
            } else {
                HelmError::Failed {
                    operation,
                    target,
                    exit_code: finished.status.code(),
                    kind: error::classify(&stderr, waited),
                    stderr,
                }
            });
        }
        if finished.stdout_overflow {
            return Err(HelmError::OutputTooLarge {
                operation,
                target: target.clone(),
                limit: self.config.max_output_bytes,
            });
        }
        Ok(finished.stdout)
    }
}

/// The values as a file only this process can read, in a directory removed on drop.
struct ValuesFile {
    dir: tempfile::TempDir,
}

impl ValuesFile {
    fn write(parent: Option<&Path>, values: &serde_json::Value) -> std::io::Result<Self> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("helm-values-");
        let dir = match parent {
            Some(p) => builder.tempdir_in(p)?,
            None => builder.tempdir()?,
        };
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        let this = Self { dir };
        let body = if values.is_null() {
            b"{}".to_vec()
        } else {
            serde_json::to_vec(values).map_err(std::io::Error::other)?
        };
        // JSON is YAML, so helm reads it as a values file as it is.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(this.path())?;
        file.write_all(&body)?;
        file.sync_all()?;
        Ok(this)
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("values.json")
    }
}

fn utf8(op: Operation, target: &ReleaseRef, out: Vec<u8>) -> Result<String, HelmError> {
    String::from_utf8(out).map_err(|e| HelmError::Parse {
        operation: op,
        target: target.clone(),
        message: format!("not UTF-8: {e}"),
    })
}

/// The start of unexpected output, for a parse error.
fn excerpt(text: &str) -> String {
    let t: String = text.chars().take(200).collect();
    if t.len() < text.len() {
        format!("{t:?}…")
    } else {
        format!("{t:?}")
    }
}

/// The target of an operation, checked before anything runs (see [`validate`]).
fn checked_target(
    operation: Operation,
    release: &str,
    namespace: &str,
) -> Result<ReleaseRef, HelmError> {
    let target = ReleaseRef::new(release, namespace);
    validate(operation, &target)?;
    Ok(target)
}

/// Refuses names helm would misread (a leading `-` is a flag) or reject anyway, before
/// anything runs: release names as helm validates them (DNS-1123 subdomain, at most 53
/// characters), namespaces as DNS-1123 labels.
fn validate(operation: Operation, target: &ReleaseRef) -> Result<(), HelmError> {
    let reason = if !is_release_name(&target.release) {
        Some(format!(
            "{:?} is not a valid release name (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, at most 53 characters)",
            target.release
        ))
    } else if !is_dns_label(&target.namespace, 63) {
        Some(format!(
            "{:?} is not a valid namespace (lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)",
            target.namespace
        ))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(HelmError::InvalidRequest {
            operation,
            target: target.clone(),
            reason,
        }),
        None => Ok(()),
    }
}

fn is_release_name(s: &str) -> bool {
    s.len() <= 53 && s.split('.').all(|part| is_dns_label(part, 53))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "demo-dev-carts", "x.y-z", "a1"] {
            assert!(is_release_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-rel",
            "--set=x",
            "Rel",
            "a..b",
            "rel-",
            "a_b",
            &"a".repeat(54),
        ] {
            assert!(!is_release_name(bad), "{bad}");
        }
        assert!(is_dns_label("demo-dev", 63));
        assert!(!is_dns_label("demo.dev", 63));
        let err = validate(Operation::Status, &ReleaseRef::new("-x", "demo")).unwrap_err();
        assert!(matches!(err, HelmError::InvalidRequest { .. }));
        assert!(!err.is_transient());
    }

    #[test]
    fn values_file_is_private_and_removed() {
        let values = serde_json::json!({"image": "nginx:1", "nested": {"a": [1, 2]}});
        let f = ValuesFile::write(None, &values).unwrap();
        let path = f.path();
        let dir = f.dir.path().to_owned();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&path), 0o600);
        let back: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, values);
        drop(f);
        assert!(!dir.exists());
        let f = ValuesFile::write(None, &serde_json::Value::Null).unwrap();
        assert_eq!(std::fs::read(f.path()).unwrap(), b"{}");
    }

    #[test]
    fn config_debug_hides_env_values() {
        let mut c = HelmConfig::new("/usr/bin/helm");
        c.env
            .push(("AWS_SECRET_ACCESS_KEY".into(), "hunter2".into()));
        let s = format!("{c:?}");
        assert!(
            s.contains("AWS_SECRET_ACCESS_KEY") && !s.contains("hunter2"),
            "{s}"
        );
    }

    #[tokio::test]
    async fn detect_reports_a_missing_binary() {
        let err = Helm::detect(HelmConfig::new("/nonexistent/helm"))
            .await
            .unwrap_err();
        assert!(matches!(err, HelmError::Spawn { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/helm"), "{err}");
    }

    /// A fake "helm" that prints an old version is refused with the reason.
    #[tokio::test]
    async fn detect_refuses_old_helm() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("helm");
        let detect_with = |script: &str| {
            std::fs::write(&fake, script).unwrap();
            std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
            let fake = fake.clone();
            async move {
                // Another test thread forking while the script was open for writing makes
                // exec fail with ETXTBSY until that child execs, which a busy machine can
                // delay: retry that, bounded (10 s).
                for _ in 0..500 {
                    match Helm::detect(HelmConfig::new(&fake)).await {
                        Err(HelmError::Spawn { source, .. })
                            if source.raw_os_error() == Some(nix::libc::ETXTBSY) =>
                        {
                            tokio::time::sleep(Duration::from_millis(20)).await
                        }
                        other => return other.unwrap_err(),
                    }
                }
                panic!("{} stayed busy", fake.display());
            }
        };
        let err = detect_with("#!/bin/sh\necho v3.12.3\n").await;
        assert!(matches!(err, HelmError::UnsupportedVersion { .. }), "{err}");
        assert!(err.to_string().contains("3.14"), "{err}");
        let err = detect_with("#!/bin/sh\necho 'Error: boom' >&2; exit 1\n").await;
        assert!(err.to_string().contains("boom"), "{err}");
    }
}
