//! The helm command lines the driver runs, built as plain values.
//!
//! Every flag the worker passes to helm is decided here, by pure functions, so a command line
//! (and what differs between Helm 3 and Helm 4) is read and unit-tested without a helm or a
//! cluster; the driver in `mod.rs` only runs what these return. Each argument is one argv
//! element: nothing goes through a shell, so a value can never become a flag or a command.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use super::{HelmConfig, HelmVersion, ReleaseRef, UpgradeRequest, WAIT_GRACE};

/// One helm invocation as the driver runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommandLine {
    /// The arguments after the global flags ([`with_cluster_flags`] adds those).
    pub args: Vec<OsString>,
    /// The process deadline: covers what helm itself was told to wait for.
    pub timeout: Duration,
    /// helm was told to wait for readiness (shapes how a deadline error is read).
    pub waited: bool,
}

impl CommandLine {
    /// A command that does not wait, with the configured deadline.
    fn read(args: Vec<OsString>, base: Duration) -> Self {
        Self {
            args,
            timeout: base,
            waited: false,
        }
    }
}

/// `helm version --template {{.Version}}`: needs no cluster, so no global flags either.
pub(crate) fn version() -> Vec<OsString> {
    os(&["version", "--template", "{{.Version}}"])
}

/// What helm's environment adds to the worker's: the configured variables, and
/// `GOMEMLIMIT` (in bytes) when a Go memory limit is set, replacing any other.
pub(crate) fn environment(config: &HelmConfig) -> Vec<(String, String)> {
    let mut env = config.env.clone();
    if let Some(limit) = config.go_memory_limit {
        env.retain(|(name, _)| name != "GOMEMLIMIT");
        env.push(("GOMEMLIMIT".into(), limit.to_string()));
    }
    env
}

/// The flags that say which cluster to talk to, in front of the command's own arguments.
pub(crate) fn with_cluster_flags(config: &HelmConfig, args: Vec<OsString>) -> Vec<OsString> {
    let mut argv = Vec::with_capacity(args.len() + 4);
    if let Some(kubeconfig) = &config.kubeconfig {
        argv.push("--kubeconfig".into());
        argv.push(kubeconfig.clone().into_os_string());
    }
    if let Some(context) = &config.kube_context {
        argv.push("--kube-context".into());
        argv.push(context.into());
    }
    argv.extend(args);
    argv
}

/// `helm upgrade --install` of the chart at `chart` (an absolute path) with the values in
/// `values_file`, printing the new release as JSON. `base` is the deadline unless the request
/// has its own.
pub(crate) fn upgrade(
    req: &UpgradeRequest<'_>,
    chart: &Path,
    values_file: &Path,
    version: &HelmVersion,
    base: Duration,
) -> CommandLine {
    let base = req.timeout.unwrap_or(base);
    // Rolling back on failure needs helm to wait: up to the deadline unless told otherwise.
    let wait = req.wait.or(req.rollback_on_failure.then_some(base));
    let mut args = upgrade_of_chart(req, chart, values_file);
    push_wait(&mut args, wait, base, version);
    if req.rollback_on_failure {
        args.push(rollback_on_failure_flag(version).into());
    }
    if let Some(description) = req.description {
        args.push("--description".into());
        args.push(description.into());
    }
    if let Some(labels) = req.labels.filter(|labels| !labels.is_empty()) {
        let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        args.push("--labels".into());
        args.push(pairs.join(",").into());
    }
    args.extend(os(&["--output", "json"]));
    // A failed wait is followed by a rollback that waits again.
    let factor = if req.rollback_on_failure { 2 } else { 1 };
    CommandLine {
        args,
        timeout: deadline(base, wait, factor),
        waited: wait.is_some(),
    }
}

/// `helm upgrade --install --dry-run=server` of the chart at `chart`: what that upgrade
/// would deploy, printed as the release JSON (its revision, manifest and hooks) and neither
/// stored nor applied. Rendered as the real upgrade renders: against the cluster's
/// capabilities, with `lookup` answered by the cluster, at the next revision number.
pub(crate) fn render(
    req: &UpgradeRequest<'_>,
    chart: &Path,
    values_file: &Path,
    base: Duration,
) -> CommandLine {
    let mut args = upgrade_of_chart(req, chart, values_file);
    args.extend(os(&["--dry-run=server", "--output", "json"]));
    CommandLine::read(args, req.timeout.unwrap_or(base))
}

/// The start every upgrade line shares: release, chart, namespace and exactly these values.
fn upgrade_of_chart(req: &UpgradeRequest<'_>, chart: &Path, values_file: &Path) -> Vec<OsString> {
    let mut args = os(&["upgrade", "--install", req.release]);
    args.push(chart.into());
    args.extend(os(&["--namespace", req.namespace, "--reset-values"]));
    args.push("--values".into());
    args.push(values_file.into());
    args
}

/// `helm rollback` to `revision`, waiting up to `wait` for readiness when given.
pub(crate) fn rollback(
    target: &ReleaseRef,
    revision: u32,
    wait: Option<Duration>,
    version: &HelmVersion,
    base: Duration,
) -> CommandLine {
    let args = os(&[
        "rollback",
        &target.release,
        &revision.to_string(),
        "--namespace",
        &target.namespace,
    ]);
    waiting(args, wait, base, version)
}

/// `helm uninstall`, waiting up to `wait` for the objects to be gone when given.
pub(crate) fn uninstall(
    target: &ReleaseRef,
    wait: Option<Duration>,
    version: &HelmVersion,
    base: Duration,
) -> CommandLine {
    let args = os(&[
        "uninstall",
        &target.release,
        "--namespace",
        &target.namespace,
    ]);
    waiting(args, wait, base, version)
}

/// `helm history` as JSON, the latest `max` revisions when given.
pub(crate) fn history(target: &ReleaseRef, max: Option<u32>, base: Duration) -> CommandLine {
    let mut args = os(&[
        "history",
        &target.release,
        "--namespace",
        &target.namespace,
        "-o",
        "json",
    ]);
    if let Some(max) = max {
        args.extend(os(&["--max", &max.to_string()]));
    }
    CommandLine::read(args, base)
}

/// `helm get manifest` of the latest (or the given) revision.
pub(crate) fn manifest(target: &ReleaseRef, revision: Option<u32>, base: Duration) -> CommandLine {
    let mut args = os(&[
        "get",
        "manifest",
        &target.release,
        "--namespace",
        &target.namespace,
    ]);
    push_revision(&mut args, revision);
    CommandLine::read(args, base)
}

/// `helm test`: runs the release's test hooks and waits up to `wait` for them.
pub(crate) fn test(target: &ReleaseRef, wait: Duration, base: Duration) -> CommandLine {
    let mut args = os(&["test", &target.release, "--namespace", &target.namespace]);
    args.extend(os(&["--timeout", &go_duration(wait)]));
    CommandLine {
        args,
        timeout: deadline(base, Some(wait), 1),
        waited: true,
    }
}

/// A command that may wait once (no rollback after it): `args` and the wait flags.
fn waiting(
    mut args: Vec<OsString>,
    wait: Option<Duration>,
    base: Duration,
    version: &HelmVersion,
) -> CommandLine {
    push_wait(&mut args, wait, base, version);
    CommandLine {
        args,
        timeout: deadline(base, wait, 1),
        waited: wait.is_some(),
    }
}

/// `--timeout` (what helm waits, or the deadline when it does not wait) and the wait flag.
fn push_wait(args: &mut Vec<OsString>, wait: Option<Duration>, base: Duration, v: &HelmVersion) {
    args.extend(os(&["--timeout", &go_duration(wait.unwrap_or(base))]));
    if wait.is_some() {
        args.push(wait_flag(v).into());
    }
}

/// The flag that makes helm wait until the release's resources are ready.
fn wait_flag(version: &HelmVersion) -> &'static str {
    if version.is_v4() {
        // Helm 4's default (`hookOnly`) does not wait for resources; `watcher` follows
        // kstatus readiness through watches.
        "--wait=watcher"
    } else {
        "--wait"
    }
}

/// The flag that rolls a failed upgrade back to the previous successful release.
fn rollback_on_failure_flag(version: &HelmVersion) -> &'static str {
    if version.is_v4() {
        "--rollback-on-failure"
    } else {
        "--atomic"
    }
}

fn push_revision(args: &mut Vec<OsString>, revision: Option<u32>) {
    if let Some(rev) = revision {
        args.push("--revision".into());
        args.push(rev.to_string().into());
    }
}

/// The process deadline: the call's timeout, raised to cover helm's own wait (`factor`
/// times: a rollback after a failed wait waits again) plus a grace period.
fn deadline(base: Duration, wait: Option<Duration>, factor: u32) -> Duration {
    match wait {
        Some(w) => base.max(w.saturating_mul(factor).saturating_add(WAIT_GRACE)),
        None => base,
    }
}

/// A Go duration helm's `--timeout` accepts.
fn go_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(300);

    fn v4() -> HelmVersion {
        HelmVersion::parse("v4.1.4").unwrap()
    }

    fn v3() -> HelmVersion {
        HelmVersion::parse("v3.16.0").unwrap()
    }

    fn target() -> ReleaseRef {
        ReleaseRef::new("rel", "ns")
    }

    fn text(args: &[OsString]) -> Vec<&str> {
        args.iter().map(|a| a.to_str().unwrap()).collect()
    }

    fn some_values() -> serde_json::Value {
        serde_json::json!({"replicaCount": 2})
    }

    fn upgrade_of(req: &UpgradeRequest<'_>, version: &HelmVersion) -> CommandLine {
        upgrade(
            req,
            Path::new("/charts/carts"),
            Path::new("/tmp/v/values.json"),
            version,
            BASE,
        )
    }

    #[test]
    fn flags_per_major() {
        assert_eq!(wait_flag(&v4()), "--wait=watcher");
        assert_eq!(rollback_on_failure_flag(&v4()), "--rollback-on-failure");
        assert_eq!(wait_flag(&v3()), "--wait");
        assert_eq!(rollback_on_failure_flag(&v3()), "--atomic");
    }

    #[test]
    fn upgrade_without_waiting() {
        let values = some_values();
        let req = UpgradeRequest::new("rel", "ns", Path::new("carts"), &values);
        let line = upgrade_of(&req, &v4());
        assert_eq!(
            text(&line.args),
            [
                "upgrade",
                "--install",
                "rel",
                "/charts/carts",
                "--namespace",
                "ns",
                "--reset-values",
                "--values",
                "/tmp/v/values.json",
                "--timeout",
                "300000ms",
                "--output",
                "json"
            ]
        );
        assert_eq!((line.timeout, line.waited), (BASE, false));
        assert_eq!(upgrade_of(&req, &v3()), line, "no wait: the same on Helm 3");
    }

    #[test]
    fn render_is_a_server_side_dry_run_that_never_waits() {
        let values = some_values();
        let req = UpgradeRequest {
            wait: Some(Duration::from_secs(60)),
            description: Some("kept on the primary"),
            ..UpgradeRequest::new("rel", "ns", Path::new("carts"), &values)
        };
        let line = render(
            &req,
            Path::new("/charts/carts"),
            Path::new("/tmp/v/values.json"),
            BASE,
        );
        assert_eq!(
            text(&line.args),
            [
                "upgrade",
                "--install",
                "rel",
                "/charts/carts",
                "--namespace",
                "ns",
                "--reset-values",
                "--values",
                "/tmp/v/values.json",
                "--dry-run=server",
                "--output",
                "json"
            ]
        );
        assert_eq!((line.timeout, line.waited), (BASE, false));
    }

    #[test]
    fn upgrade_waiting_with_rollback_and_description() {
        let values = some_values();
        let req = UpgradeRequest {
            wait: Some(Duration::from_secs(60)),
            rollback_on_failure: true,
            timeout: Some(Duration::from_secs(90)),
            description: Some("scaled down"),
            ..UpgradeRequest::new("rel", "ns", Path::new("carts"), &values)
        };
        let tail = |line: &CommandLine| text(&line.args)[9..].join(" ");
        let line = upgrade_of(&req, &v4());
        assert_eq!(
            tail(&line),
            "--timeout 60000ms --wait=watcher --rollback-on-failure --description scaled down \
             --output json"
        );
        // Twice the wait (the rollback waits again) plus the grace, over the 90 s timeout.
        assert_eq!(line.timeout, Duration::from_secs(150));
        assert!(line.waited);
        let line = upgrade_of(&req, &v3());
        assert_eq!(
            tail(&line),
            "--timeout 60000ms --wait --atomic --description scaled down --output json"
        );
        // The description is one argument, whatever it holds.
        assert_eq!(text(&line.args)[14], "scaled down");
    }

    #[test]
    fn upgrade_labels_the_release() {
        let values = some_values();
        let labels = std::collections::BTreeMap::from([
            ("keptn.sh/service".to_owned(), "carts".to_owned()),
            ("keptn.sh/project".to_owned(), "shop".to_owned()),
        ]);
        let req = UpgradeRequest {
            labels: Some(&labels),
            ..UpgradeRequest::new("rel", "ns", Path::new("carts"), &values)
        };
        let line = upgrade_of(&req, &v4());
        let args = text(&line.args);
        let at = args
            .iter()
            .position(|a| *a == "--labels")
            .expect("--labels");
        assert_eq!(args[at + 1], "keptn.sh/project=shop,keptn.sh/service=carts");
        let empty = std::collections::BTreeMap::new();
        let req = UpgradeRequest {
            labels: Some(&empty),
            ..req
        };
        let line = upgrade_of(&req, &v4());
        assert!(!text(&line.args).contains(&"--labels"));
    }

    #[test]
    fn upgrade_rolling_back_waits_up_to_the_deadline() {
        let values = some_values();
        let req = UpgradeRequest {
            rollback_on_failure: true,
            ..UpgradeRequest::new("rel", "ns", Path::new("carts"), &values)
        };
        let line = upgrade_of(&req, &v4());
        let args = text(&line.args);
        assert_eq!(
            args[9..13],
            [
                "--timeout",
                "300000ms",
                "--wait=watcher",
                "--rollback-on-failure"
            ]
        );
        assert_eq!(line.timeout, BASE * 2 + WAIT_GRACE);
        assert!(line.waited);
    }

    #[test]
    fn test_lines_wait_for_the_tests() {
        let line = test(&target(), Duration::from_secs(60), BASE);
        assert_eq!(
            text(&line.args),
            ["test", "rel", "--namespace", "ns", "--timeout", "60000ms"]
        );
        // The process deadline covers helm's own wait.
        assert_eq!(line.timeout, BASE);
        assert!(line.waited);
        let long = test(&target(), Duration::from_secs(600), BASE);
        assert_eq!(long.timeout, Duration::from_secs(600) + WAIT_GRACE);
    }

    #[test]
    fn rollback_lines() {
        let line = rollback(&target(), 3, None, &v4(), BASE);
        assert_eq!(
            text(&line.args),
            [
                "rollback",
                "rel",
                "3",
                "--namespace",
                "ns",
                "--timeout",
                "300000ms"
            ]
        );
        assert_eq!((line.timeout, line.waited), (BASE, false));
        let wait = Some(Duration::from_secs(600));
        let line = rollback(&target(), 3, wait, &v4(), BASE);
        assert_eq!(
            text(&line.args)[5..],
            ["--timeout", "600000ms", "--wait=watcher"]
        );
        assert_eq!(line.timeout, Duration::from_secs(600) + WAIT_GRACE);
        assert!(line.waited);
        let line = rollback(&target(), 3, wait, &v3(), BASE);
        assert_eq!(text(&line.args)[5..], ["--timeout", "600000ms", "--wait"]);
    }

    #[test]
    fn uninstall_lines() {
        let line = uninstall(&target(), None, &v4(), BASE);
        assert_eq!(
            text(&line.args),
            [
                "uninstall",
                "rel",
                "--namespace",
                "ns",
                "--timeout",
                "300000ms"
            ]
        );
        assert_eq!((line.timeout, line.waited), (BASE, false));
        let wait = Some(Duration::from_secs(10));
        let line = uninstall(&target(), wait, &v4(), BASE);
        assert_eq!(
            text(&line.args)[4..],
            ["--timeout", "10000ms", "--wait=watcher"]
        );
        assert_eq!(line.timeout, BASE, "the deadline already covers the wait");
        assert!(line.waited);
        let line = uninstall(&target(), wait, &v3(), BASE);
        assert_eq!(text(&line.args)[4..], ["--timeout", "10000ms", "--wait"]);
    }

    #[test]
    fn read_lines() {
        let line = history(&target(), Some(1), BASE);
        assert_eq!(
            text(&line.args),
            [
                "history",
                "rel",
                "--namespace",
                "ns",
                "-o",
                "json",
                "--max",
                "1"
            ]
        );
        assert_eq!((line.timeout, line.waited), (BASE, false));
        assert_eq!(
            text(&history(&target(), None, BASE).args),
            ["history", "rel", "--namespace", "ns", "-o", "json"]
        );
        assert_eq!(
            text(&manifest(&target(), None, BASE).args),
            ["get", "manifest", "rel", "--namespace", "ns"]
        );
        assert_eq!(
            text(&manifest(&target(), Some(4), BASE).args),
            [
                "get",
                "manifest",
                "rel",
                "--namespace",
                "ns",
                "--revision",
                "4"
            ]
        );
        assert_eq!(text(&version()), ["version", "--template", "{{.Version}}"]);
    }

    #[test]
    fn cluster_flags_come_first() {
        let mut config = HelmConfig::new("helm");
        let args = os(&["history", "rel"]);
        assert_eq!(with_cluster_flags(&config, args.clone()), args);
        config.kubeconfig = Some("/home/w/.kube/config".into());
        config.kube_context = Some("kind-a".into());
        assert_eq!(
            text(&with_cluster_flags(&config, args)),
            [
                "--kubeconfig",
                "/home/w/.kube/config",
                "--kube-context",
                "kind-a",
                "history",
                "rel"
            ]
        );
    }

    #[test]
    fn a_go_memory_limit_reaches_helm_over_any_other() {
        let mut config = HelmConfig::new("helm");
        config.env = vec![
            ("HOME".into(), "/tmp".into()),
            ("GOMEMLIMIT".into(), "1GiB".into()),
        ];
        assert_eq!(environment(&config), config.env);
        config.go_memory_limit = Some(32 << 20);
        assert_eq!(
            environment(&config),
            [
                ("HOME".to_owned(), "/tmp".to_owned()),
                ("GOMEMLIMIT".to_owned(), "33554432".to_owned())
            ]
        );
    }

    #[test]
    fn deadlines_cover_helms_own_wait() {
        let s = Duration::from_secs;
        assert_eq!(deadline(s(300), None, 1), s(300));
        assert_eq!(deadline(s(300), Some(s(60)), 2), s(300));
        assert_eq!(deadline(s(60), Some(s(60)), 2), s(150));
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(go_duration(Duration::ZERO), "1ms");
    }
}
