//! Errors of the helm driver, worded for an operator, and their classification into "retry
//! later" and "fail the task".

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::ReleaseRef;

/// One kind of helm invocation; the name labels logs, traces and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Version,
    Upgrade,
    Render,
    Status,
    History,
    Manifest,
    Rollback,
    Uninstall,
    Test,
}

impl Operation {
    /// Stable metric label: `version`, `upgrade`, `render`, `status`, `history`, `manifest`,
    /// `rollback`, `uninstall`, `test`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Version => "version",
            Self::Upgrade => "upgrade",
            Self::Render => "render",
            Self::Status => "status",
            Self::History => "history",
            Self::Manifest => "manifest",
            Self::Rollback => "rollback",
            Self::Uninstall => "uninstall",
            Self::Test => "test",
        }
    }

    /// The helm command line it stands for, for messages.
    fn command(self) -> &'static str {
        match self {
            Self::Version => "helm version",
            Self::Upgrade => "helm upgrade --install",
            Self::Render => "helm upgrade --install --dry-run=server",
            Self::Status => "helm status",
            Self::History => "helm history",
            Self::Manifest => "helm get manifest",
            Self::Rollback => "helm rollback",
            Self::Uninstall => "helm uninstall",
            Self::Test => "helm test",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.command())
    }
}

/// "helm upgrade --install of release demo/rel", or "helm version" (whose release is empty).
fn what(operation: &Operation, target: &ReleaseRef) -> String {
    if target.release.is_empty() {
        operation.to_string()
    } else {
        format!("{operation} of release {target}")
    }
}

/// Why a helm command that ran to completion failed, as far as its message tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The API server was unreachable, slow, overloaded or contended: retrying may succeed.
    Transient,
    /// helm waited and the resources did not become ready (a bad image, a crashing pod, a
    /// rollout that took longer than allowed). Retrying the same chart is unlikely to help.
    Rollout,
    /// Everything else: template and values errors, invalid charts, rejected objects,
    /// permissions. Retrying the same input gives the same answer.
    Permanent,
}

#[derive(Debug, thiserror::Error)]
pub enum HelmError {
    #[error("{bin} is not a usable helm: {reason}")]
    UnsupportedVersion {
        bin: PathBuf,
        /// What `helm version` printed (or its error).
        found: String,
        reason: String,
    },

    #[error("cannot run {bin} for {}: {source}", what(.operation, .target))]
    Spawn {
        bin: PathBuf,
        operation: Operation,
        target: ReleaseRef,
        #[source]
        source: std::io::Error,
    },

    /// Refused before running helm (a name helm would misread, values that are no map).
    #[error("{} refused: {reason}", what(.operation, .target))]
    InvalidRequest {
        operation: Operation,
        target: ReleaseRef,
        reason: String,
    },

    /// Preparing the private values directory failed.
    #[error("{}: cannot prepare the values file: {source}", what(.operation, .target))]
    Io {
        operation: Operation,
        target: ReleaseRef,
        #[source]
        source: std::io::Error,
    },

    /// helm did not finish in time and was killed with its whole process group. A mutating
    /// operation may have left the release pending: recover it before retrying.
    #[error("{} did not finish within {after:?}; helm was killed", what(.operation, .target))]
    TimedOut {
        operation: Operation,
        target: ReleaseRef,
        after: Duration,
    },

    #[error("{}: release not found", what(.operation, .target))]
    ReleaseNotFound {
        operation: Operation,
        target: ReleaseRef,
    },

    /// A helm that held the release died or is still running; with the release's lease held,
    /// it died: `Helm::recover_pending` clears it.
    #[error("{}: another helm operation is in progress on the release (a pending install/upgrade/rollback): {}", what(.operation, .target), stderr_tail(.stderr))]
    OperationInProgress {
        operation: Operation,
        target: ReleaseRef,
        stderr: String,
    },

    #[error("{} failed{}: {}", what(.operation, .target), exit_suffix(.exit_code), stderr_tail(.stderr))]
    Failed {
        operation: Operation,
        target: ReleaseRef,
        exit_code: Option<i32>,
        /// helm's stderr, the last `max_stderr_bytes` of it.
        stderr: String,
        kind: FailureKind,
    },

    #[error("{} printed more than {limit} bytes; raise the output limit if the release is that large", what(.operation, .target))]
    OutputTooLarge {
        operation: Operation,
        target: ReleaseRef,
        limit: usize,
    },

    #[error("{}: cannot understand helm's output: {message}", what(.operation, .target))]
    Parse {
        operation: Operation,
        target: ReleaseRef,
        message: String,
    },
}

impl HelmError {
    /// Worth retrying later (with the same input): the API server was unreachable, slow,
    /// overloaded or contended, helm timed out, or a dead helm left the release pending.
    /// Template, values, chart and rollout failures are not.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::TimedOut { .. } | Self::OperationInProgress { .. } => true,
            Self::Failed { kind, .. } => *kind == FailureKind::Transient,
            _ => false,
        }
    }

    /// A short stable label for metrics: `unsupported_version`, `spawn`, `invalid_request`,
    /// `io`, `timed_out`, `not_found`, `in_progress`, `transient`, `rollout`, `failed`,
    /// `output_too_large`, `parse`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::UnsupportedVersion { .. } => "unsupported_version",
            Self::Spawn { .. } => "spawn",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::Io { .. } => "io",
            Self::TimedOut { .. } => "timed_out",
            Self::ReleaseNotFound { .. } => "not_found",
            Self::OperationInProgress { .. } => "in_progress",
            Self::Failed { kind, .. } => match kind {
                FailureKind::Transient => "transient",
                FailureKind::Rollout => "rollout",
                FailureKind::Permanent => "failed",
            },
            Self::OutputTooLarge { .. } => "output_too_large",
            Self::Parse { .. } => "parse",
        }
    }

    /// helm's stderr when it ran and failed.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            Self::Failed { stderr, .. } | Self::OperationInProgress { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

fn exit_suffix(code: &Option<i32>) -> String {
    match code {
        Some(c) => format!(" (exit code {c})"),
        None => " (killed by a signal)".to_owned(),
    }
}

/// The part of helm's stderr worth a person's attention: from its last `Error:` line on (helm
/// 4 logs warnings before it), else the last lines; at most ~2000 characters, on one line.
pub(crate) fn stderr_tail(stderr: &str) -> String {
    const MAX_LINES: usize = 12;
    const MAX_CHARS: usize = 2000;
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines
        .iter()
        .rposition(|l| l.starts_with("Error:"))
        .unwrap_or(0)
        .max(lines.len().saturating_sub(MAX_LINES));
    let text = lines[start..].join(" | ");
    let text = text.strip_prefix("Error: ").unwrap_or(&text);
    if text.is_empty() {
        return "helm printed no error message".to_owned();
    }
    let count = text.chars().count();
    if count <= MAX_CHARS {
        text.to_owned()
    } else {
        let skip = count - MAX_CHARS;
        format!("…{}", text.chars().skip(skip).collect::<String>())
    }
}

/// helm's message when the latest revision is pending.
pub(crate) fn is_operation_in_progress(stderr: &str) -> bool {
    stderr.contains("another operation (install/upgrade/rollback) is in progress")
}

/// helm's message for a release (or a revision of it) that does not exist.
pub(crate) fn is_release_not_found(stderr: &str) -> bool {
    stderr.contains("release: not found")
}

/// Sorts a failure by helm's message. helm loses the HTTP status of API errors and keeps only
/// the message, so this goes by text: first rollout failures (they mention deadlines too),
/// then configuration and permission problems, then the network and server-side symptoms.
pub(crate) fn classify(stderr: &str, waited: bool) -> FailureKind {
    let s = stderr.to_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| s.contains(n));

    // helm 4 (kstatus watcher): "resource Deployment/ns/x not ready. status: InProgress ...
    // context deadline exceeded"; helm 3: "timed out waiting for the condition", or a bare
    // "context deadline exceeded" once --wait was given.
    if any(&[
        " not ready. status:",
        "timed out waiting for the condition",
        "progressdeadlineexceeded",
        "has been rolled back due to",
        "release failed, and has been rolled back",
    ]) || (waited && s.contains("context deadline exceeded") && !any(TRANSPORT))
    {
        return FailureKind::Rollout;
    }
    if any(&[
        "invalid configuration",
        "forbidden",
        "unauthorized",
        "certificate signed by unknown authority",
        "x509:",
        "no such host",
    ]) {
        return FailureKind::Permanent;
    }
    if any(TRANSPORT) || any(SERVER_SIDE) || s.contains("context deadline exceeded") {
        return FailureKind::Transient;
    }
    FailureKind::Permanent
}

/// Network symptoms between helm and the API server.
const TRANSPORT: &[&str] = &[
    "connection refused",
    "connection reset",
    "broken pipe",
    "i/o timeout",
    "tls handshake timeout",
    "unexpected eof",
    "http2: client connection lost",
    "no route to host",
    "network is unreachable",
    "timeout awaiting response headers",
    "request canceled",
    "client rate limiter",
];

/// API server answers that mean "not now": 429, 5xx, etcd trouble, optimistic-lock conflicts.
const SERVER_SIDE: &[&str] = &[
    "too many requests",
    "try again later",
    "the server is currently unable to handle the request",
    "an error on the server",
    "internal error",
    "service unavailable",
    "the server was unable to return a response in the time allotted",
    "etcdserver:",
    "gateway timeout",
    "bad gateway",
    "the object has been modified",
    "another operation (install/upgrade/rollback) is in progress",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> ReleaseRef {
        ReleaseRef {
            release: "rel".into(),
            namespace: "demo".into(),
        }
    }

    #[test]
    fn classifies_helm_messages() {
        use FailureKind::*;
        let cases: &[(&str, bool, FailureKind)] = &[
            ("Error: kubernetes cluster unreachable: Get \"http://127.0.0.1:1/version\": dial tcp 127.0.0.1:1: connect: connection refused", false, Transient),
            ("Error: kubernetes cluster unreachable: the server has received too many requests and has asked us to try again later", false, Transient),
            ("Error: kubernetes cluster unreachable: an error on the server (\"unknown\") has prevented the request from succeeding", false, Transient),
            ("Error: query: failed to query with labels: Internal error occurred: etcd", false, Transient),
            ("Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress", false, Transient),
            ("Error: UPGRADE FAILED: context deadline exceeded", false, Transient),
            ("Error: UPGRADE FAILED: context deadline exceeded", true, Rollout),
            ("Error: UPGRADE FAILED: Get \"https://k/api\": dial tcp: i/o timeout\ncontext deadline exceeded", true, Transient),
            ("level=WARN msg=\"upgrade failed\"\nError: UPGRADE FAILED: resource Deployment/demo/w-web not ready. status: InProgress, message: Pending termination: 1\ncontext deadline exceeded", true, Rollout),
            ("Error: UPGRADE FAILED: release w failed, and has been rolled back due to rollback-on-failure being set: resource Deployment/demo/w-web not ready. status: InProgress", true, Rollout),
            ("Error: UPGRADE FAILED: execution error at (web/templates/bad.yaml:1:6): boom", false, Permanent),
            ("Error: UPGRADE FAILED: web/templates/bad.yaml:1:13\n  executing \"web/templates/bad.yaml\" at <.Values.nope.deeper>:\n    nil pointer evaluating interface {}.deeper", false, Permanent),
            ("Error: values don't meet the specifications of the schema(s)", false, Permanent),
            ("Error: create: failed to create: namespaces \"nonexist\" not found", false, Permanent),
            ("Error: kubernetes cluster unreachable: invalid configuration: no configuration has been provided", false, Permanent),
            ("Error: secrets is forbidden: User \"x\" cannot list resource \"secrets\"", false, Permanent),
        ];
        for (stderr, waited, want) in cases {
            assert_eq!(classify(stderr, *waited), *want, "{stderr}");
        }
    }

    #[test]
    fn tail_starts_at_the_last_error_line() {
        let stderr = "level=WARN msg=\"upgrade failed\" name=w\nError: UPGRADE FAILED: resource not ready\ncontext deadline exceeded\n";
        assert_eq!(
            stderr_tail(stderr),
            "UPGRADE FAILED: resource not ready | context deadline exceeded"
        );
        assert_eq!(stderr_tail(""), "helm printed no error message");
        let long = "x".repeat(5000);
        let t = stderr_tail(&long);
        assert!(t.starts_with('…') && t.chars().count() == 2001, "{t}");
        let many: String = (0..50).map(|i| format!("line {i}\n")).collect();
        assert!(stderr_tail(&many).starts_with("line 38 | "));
    }

    #[test]
    fn messages_name_operation_release_and_helms_words() {
        let e = HelmError::Failed {
            operation: Operation::Upgrade,
            target: target(),
            exit_code: Some(1),
            stderr: "Error: UPGRADE FAILED: execution error at (web/templates/x.yaml:1:6): boom\n"
                .into(),
            kind: FailureKind::Permanent,
        };
        assert_eq!(
            e.to_string(),
            "helm upgrade --install of release demo/rel failed (exit code 1): UPGRADE FAILED: execution error at (web/templates/x.yaml:1:6): boom"
        );
        assert!(!e.is_transient());
        assert_eq!(e.label(), "failed");
        let e = HelmError::TimedOut {
            operation: Operation::Status,
            target: target(),
            after: Duration::from_millis(500),
        };
        assert!(e.is_transient());
        assert_eq!(
            e.to_string(),
            "helm status of release demo/rel did not finish within 500ms; helm was killed"
        );
    }
}
