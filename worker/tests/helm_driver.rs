//! The helm driver against the real helm CLIs, Helm 4 and Helm 3 (`.tools/bin/helm` and
//! `.tools/bin/helm3`, installed by `ops/setup.sh`; every test runs once with each, in the
//! modules `helm4` and `helm3`) and an in-process kube-sim: version detection, the release life cycle,
//! uninstall, timeouts, failure classification, rollback on failure, the recovery of
//! releases a killed helm left pending, and the helm slots and Go memory limit of the
//! memory budget.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube_sim::{FaultConfig, KubeSim};
use serde_json::{json, Value};
use worker::helm::{
    FailureKind, Helm, HelmConfig, HelmError, HelmObserver, Operation, RecoveryAction,
    ReleaseState, Uninstalled, UpgradeRequest,
};

const NS: &str = "demo";
/// Bound on any single wait in these tests.
const BOUND: Duration = Duration::from_secs(60);

/// The pinned helm `name` (`helm`: Helm 4, `helm3`: Helm 3).
fn helm_bin(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.tools/bin")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run ops/setup.sh to install the pinned helm",
        p.display()
    );
    p
}

/// A kube-sim with namespace `demo`, a chart, and a detected driver whose helm keeps its
/// caches in a temp HOME.
struct Env {
    /// The helm binary the driver runs.
    bin: PathBuf,
    sim: KubeSim,
    home: tempfile::TempDir,
    chart: PathBuf,
    helm: Helm,
}

impl Env {
    async fn start(bin: PathBuf) -> Self {
        Self::start_with(bin, kube_sim::Config::default()).await
    }

    async fn start_with(bin: PathBuf, config: kube_sim::Config) -> Self {
        Self::start_configured(bin, config, |_| {}).await
    }

    /// Like [`Env::start_with`], with the driver's configuration adjusted by `adjust`.
    async fn start_configured(
        bin: PathBuf,
        config: kube_sim::Config,
        adjust: impl FnOnce(&mut HelmConfig),
    ) -> Self {
        let sim = KubeSim::start(config).await.expect("start kube-sim");
        let namespaces = kube_sim::resources::find("", "v1", "namespaces").unwrap();
        sim.store()
            .create(namespaces, "", json!({"metadata": {"name": NS}}))
            .expect("create namespace");
        let home = tempfile::tempdir().unwrap();
        let chart = home.path().join("web");
        write_chart(&chart);
        let mut config = HelmConfig::new(bin.clone());
        config.kubeconfig = Some(sim.kubeconfig_path().to_owned());
        config.timeout = BOUND;
        config.env = helm_env(home.path());
        adjust(&mut config);
        let helm = Helm::detect(config).await.expect("detect helm");
        Self {
            bin,
            sim,
            home,
            chart,
            helm,
        }
    }

    fn request<'a>(&'a self, release: &'a str, values: &'a Value) -> UpgradeRequest<'a> {
        UpgradeRequest::new(release, NS, &self.chart, values)
    }

    async fn install(&self, release: &str, values: Value) -> worker::helm::ReleaseStatus {
        self.helm
            .upgrade_install(&self.request(release, &values))
            .await
            .unwrap_or_else(|e| panic!("upgrade {release}: {e}"))
    }

    fn get(&self, plural: &str, name: &str) -> Option<Value> {
        let res = kube_sim::resources::find(
            if plural == "deployments" { "apps" } else { "" },
            "v1",
            plural,
        )
        .unwrap();
        self.sim.store().get(res, NS, name).ok()
    }

    fn greeting(&self, release: &str) -> String {
        let cm = self
            .get("configmaps", &format!("{release}-cfg"))
            .expect("configmap");
        cm["data"]["greeting"].as_str().unwrap().to_owned()
    }

    /// A helm command run outside the driver (the "crashing" helm of the recovery tests).
    fn raw_helm(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(self.sim.kubeconfig_path())
            .args(args)
            .envs(helm_env(self.home.path()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// `helm get values -o json` of `release`, run directly (the worker never reads values
    /// back): what the release was given, or with `all` the computed values (chart defaults
    /// merged); no supplied values are an empty object.
    async fn values(&self, release: &str, revision: Option<u32>, all: bool) -> Value {
        let revision = revision.map(|r| r.to_string());
        let mut args = vec!["get", "values", release, "-n", NS, "-o", "json"];
        if all {
            args.push("--all");
        }
        if let Some(revision) = &revision {
            args.extend(["--revision", revision.as_str()]);
        }
        let mut cmd = self.raw_helm(&args);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let out = tokio::time::timeout(BOUND, cmd.output())
            .await
            .expect("helm get values within the bound")
            .expect("helm runs");
        assert!(
            out.status.success(),
            "helm get values: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        match serde_json::from_slice(&out.stdout).expect("values as JSON") {
            Value::Null => json!({}),
            values => values,
        }
    }

    /// Waits (event-driven, bounded) until helm's storage Secret of `release` revision `rev`
    /// carries the `status` label `status`.
    async fn wait_for_revision_status(&self, release: &str, rev: u32, status: &str) {
        let secrets = kube_sim::resources::find("", "v1", "secrets").unwrap();
        let name = format!("sh.helm.release.v1.{release}.v{rev}");
        let store = self.sim.store();
        let mut changes = store.subscribe();
        let found = tokio::time::timeout(BOUND, async {
            loop {
                if let Ok(secret) = store.get(secrets, NS, &name) {
                    if secret["metadata"]["labels"]["status"] == status {
                        return;
                    }
                }
                changes.changed().await.expect("kube-sim store open");
            }
        })
        .await;
        assert!(found.is_ok(), "{name} never reached status {status}");
    }
}

fn helm_env(home: &Path) -> Vec<(String, String)> {
    let p = |sub: &str| home.join(sub).to_string_lossy().into_owned();
    vec![
        ("HOME".into(), home.to_string_lossy().into_owned()),
        ("HELM_CACHE_HOME".into(), p("helm-cache")),
        ("HELM_CONFIG_HOME".into(), p("helm-config")),
        ("HELM_DATA_HOME".into(), p("helm-data")),
    ]
}

/// A ConfigMap (greeting from values), a Deployment (image from values) and a Service; the
/// template fails on purpose when `explode` is set.
fn write_chart(dir: &Path) {
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    let files = [
        ("Chart.yaml", "apiVersion: v2\nname: web\nversion: 0.1.0\nappVersion: \"1.0\"\n"),
        ("values.yaml", "greeting: hello\nimage: nginx:1\nreplicas: 1\n"),
        (
            "templates/configmap.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cfg\ndata:\n  greeting: {{ .Values.greeting | quote }}\n",
        ),
        (
            "templates/deployment.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}-web\nspec:\n  replicas: {{ .Values.replicas }}\n  selector:\n    matchLabels:\n      app: {{ .Release.Name }}\n  template:\n    metadata:\n      labels:\n        app: {{ .Release.Name }}\n    spec:\n      containers:\n      - name: web\n        image: {{ .Values.image }}\n        ports:\n        - containerPort: 8080\n",
        ),
        (
            "templates/service.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}-svc\nspec:\n  selector:\n    app: {{ .Release.Name }}\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n",
        ),
        (
            "templates/explode.yaml",
            "{{- if .Values.explode }}{{ fail \"explode was set: this chart refuses to render\" }}{{- end }}\n",
        ),
    ];
    for (path, body) in files {
        std::fs::write(dir.join(path), body).unwrap();
    }
}

/// Records the operation names the driver reports.
#[derive(Default)]
struct Recorder(Mutex<Vec<(Operation, bool)>>);

impl HelmObserver for Recorder {
    fn observe(&self, operation: Operation, _elapsed: Duration, outcome: Result<(), &HelmError>) {
        self.0.lock().unwrap().push((operation, outcome.is_ok()));
    }
}

/// When each helm process ran (from the report at its end) and how long calls waited for a
/// helm slot.
#[derive(Default)]
struct Timeline {
    ran: Mutex<Vec<(Instant, Instant)>>,
    slot_waits: Mutex<Vec<Duration>>,
}

impl HelmObserver for Timeline {
    fn observe(&self, _operation: Operation, elapsed: Duration, _outcome: Result<(), &HelmError>) {
        let end = Instant::now();
        self.ran.lock().unwrap().push((end - elapsed, end));
    }

    fn waited_for_slot(&self, waited: Duration) {
        self.slot_waits.lock().unwrap().push(waited);
    }
}

/// The parent pid of process `pid`, from `/proc/<pid>/stat`.
fn parent_of(pid: &str) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Live processes (not zombies) whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let path = entry.path();
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(path.join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if cmdline.contains(needle) && !zombie {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

async fn detects_the_installed_helm(bin: PathBuf) {
    let expected_major = if bin.ends_with("helm3") { 3 } else { 4 };
    let env = Env::start(bin).await;
    let v = env.helm.version();
    assert!(
        v.major == 4 || (v.major == 3 && v.minor >= 14),
        "unexpected helm {v}"
    );
    assert_eq!(v.major, expected_major, "{v:?}");
    assert_eq!(
        v.to_string(),
        format!("v{}.{}.{}", v.major, v.minor, v.patch)
    );
    assert!(v.raw.starts_with(&v.to_string()), "{v:?}");
}

async fn release_life_cycle(bin: PathBuf) {
    let recorder = Arc::new(Recorder::default());
    let mut env = Env::start(bin).await;
    env.helm = env.helm.clone().with_observer(recorder.clone());
    let helm = &env.helm;

    assert_eq!(helm.status("rel", NS).await.unwrap(), None);
    assert!(helm.history("rel", NS).await.unwrap().is_empty());

    // Install, waiting for the Deployment to be ready.
    let v1 = json!({"greeting": "one"});
    let mut req = env.request("rel", &v1);
    req.wait = Some(Duration::from_secs(30));
    let st = helm.upgrade_install(&req).await.unwrap();
    assert_eq!((st.revision, &st.status), (1, &ReleaseState::Deployed));
    assert_eq!((st.name.as_str(), st.namespace.as_str()), ("rel", NS));
    assert_eq!(st.chart, "web-0.1.0");
    assert_eq!(st.app_version, "1.0");
    assert_eq!(st.description, "Install complete");
    assert_eq!(env.greeting("rel"), "one");
    let deploy = env.get("deployments", "rel-web").unwrap();
    assert_eq!(deploy["status"]["readyReplicas"], 1, "{deploy}");

    // Upgrade with changed values.
    let v2 = json!({"greeting": "two", "nested": {"list": [1, 2], "flag": true}});
    let st = env.install("rel", v2.clone()).await;
    assert_eq!((st.revision, &st.status), (2, &ReleaseState::Deployed));
    assert_eq!(env.greeting("rel"), "two");
    assert_eq!(helm.status("rel", NS).await.unwrap(), Some(st));

    let history = helm.history("rel", NS).await.unwrap();
    let states: Vec<_> = history
        .iter()
        .map(|h| (h.revision, h.status.clone()))
        .collect();
    assert_eq!(
        states,
        [(1, ReleaseState::Superseded), (2, ReleaseState::Deployed)]
    );
    assert!(history.iter().all(|h| !h.updated.is_empty()));

    let manifest = helm.manifest("rel", NS, None).await.unwrap();
    for needle in [
        "kind: ConfigMap",
        "name: rel-cfg",
        "greeting: \"two\"",
        "kind: Deployment",
        "name: rel-web",
        "kind: Service",
        "name: rel-svc",
    ] {
        assert!(manifest.contains(needle), "{needle} not in {manifest}");
    }
    let old = helm.manifest("rel", NS, Some(1)).await.unwrap();
    assert!(old.contains("greeting: \"one\""), "{old}");

    // Values round-trip, per revision, and computed with the chart defaults.
    assert_eq!(env.values("rel", None, false).await, v2);
    assert_eq!(env.values("rel", Some(1), false).await, v1);
    let all = env.values("rel", None, true).await;
    assert_eq!(all["image"], "nginx:1");
    assert_eq!(all["greeting"], "two");
    assert_eq!(all["nested"]["list"], json!([1, 2]));

    // Rollback to 1 makes revision 3 with revision 1's content.
    helm.rollback("rel", NS, 1, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    let st = helm.status("rel", NS).await.unwrap().unwrap();
    assert_eq!((st.revision, &st.status), (3, &ReleaseState::Deployed));
    assert_eq!(st.description, "Rollback to 1");
    assert_eq!(env.greeting("rel"), "one");
    assert_eq!(env.values("rel", None, false).await, v1);
    assert_eq!(helm.history("rel", NS).await.unwrap().len(), 3);

    // Upgrading with no values resets to the chart's defaults (nothing carried over).
    let st = env.install("rel", Value::Null).await;
    assert_eq!(st.revision, 4);
    assert_eq!(env.greeting("rel"), "hello");
    assert_eq!(env.values("rel", None, false).await, json!({}));

    // Reads of what does not exist.
    let err = helm.manifest("rel", NS, Some(42)).await.unwrap_err();
    assert!(matches!(err, HelmError::ReleaseNotFound { .. }), "{err}");
    let err = helm.manifest("nope", NS, None).await.unwrap_err();
    assert!(err.to_string().contains("demo/nope"), "{err}");
    let err = helm.rollback("rel", NS, 42, None).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(
        err.to_string()
            .contains("helm rollback of release demo/rel"),
        "{err}"
    );

    let ops: Vec<&str> = recorder
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|(op, _)| op.as_str())
        .collect();
    for op in ["upgrade", "status", "history", "manifest", "rollback"] {
        assert!(ops.contains(&op), "{op} not observed in {ops:?}");
    }
}

/// A dry run of an upgrade shows what it would deploy (the next revision, the manifest and
/// the hooks) and changes nothing: no revision is stored, no object applied.
async fn render_shows_an_upgrade_without_applying_it(bin: PathBuf) {
    let recorder = Arc::new(Recorder::default());
    let mut env = Env::start(bin).await;
    env.helm = env.helm.clone().with_observer(recorder.clone());
    std::fs::write(
        env.chart.join("templates/test.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {{ .Release.Name }}-test\n  annotations:\n    helm.sh/hook: test\nspec:\n  restartPolicy: Never\n  containers:\n  - name: check\n    image: busybox:1\n",
    )
    .unwrap();
    env.install("rel", json!({"greeting": "one"})).await;

    let two = json!({"greeting": "two"});
    let rendered = env
        .helm
        .render_upgrade(&env.request("rel", &two), 0)
        .await
        .unwrap();
    assert_eq!(rendered.revision, 2);
    assert!(
        rendered.manifest.contains("greeting: \"two\""),
        "{}",
        rendered.manifest
    );
    assert!(
        rendered.manifest.contains("kind: Service"),
        "{}",
        rendered.manifest
    );
    assert_eq!(rendered.hooks.len(), 1, "{:?}", rendered.hooks);
    assert!(
        rendered.hooks[0].contains("name: rel-test"),
        "{:?}",
        rendered.hooks
    );
    // Hooks are not part of the manifest (the held deployment appends them once).
    assert!(
        !rendered.manifest.contains("rel-test"),
        "{}",
        rendered.manifest
    );
    assert_eq!(
        (
            rendered.chart_name.as_str(),
            rendered.chart_version.as_str()
        ),
        ("web", "0.1.0")
    );
    // Nothing happened.
    assert_eq!(env.helm.history("rel", NS).await.unwrap().len(), 1);
    assert_eq!(env.greeting("rel"), "one");

    // A chart that does not render fails as the upgrade would, naming the dry run.
    let explode = json!({"explode": true});
    let err = env
        .helm
        .render_upgrade(&env.request("rel", &explode), 0)
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("explode was set"), "{err}");
    assert!(err.to_string().contains("--dry-run=server"), "{err}");
    let renders = recorder
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(op, _)| *op == Operation::Render)
        .count();
    assert_eq!(renders, 2);
}

async fn uninstall_twice_reports_not_found(bin: PathBuf) {
    let env = Env::start(bin).await;
    env.install("gone", json!({})).await;
    assert!(env.get("configmaps", "gone-cfg").is_some());
    let first = env
        .helm
        .uninstall("gone", NS, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(first, Uninstalled::Removed);
    assert!(env.get("configmaps", "gone-cfg").is_none());
    assert!(env.get("services", "gone-svc").is_none());
    assert_eq!(env.helm.status("gone", NS).await.unwrap(), None);
    let second = env.helm.uninstall("gone", NS, None).await.unwrap();
    assert_eq!(second, Uninstalled::NotFound);
}

async fn timeout_kills_helm_promptly(bin: PathBuf) {
    let env = Env::start(bin).await;
    env.sim.faults().set(FaultConfig {
        latency: Duration::from_secs(10),
        ..FaultConfig::default()
    });
    let values = json!({"greeting": "slow"});
    let mut req = env.request("slow-release-xyz", &values);
    let limit = Duration::from_millis(500);
    req.timeout = Some(limit);
    let started = Instant::now();
    let err = env.helm.upgrade_install(&req).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, HelmError::TimedOut { operation: Operation::Upgrade, after, .. } if after == limit),
        "{err}"
    );
    assert!(err.is_transient());
    assert!(took < Duration::from_secs(3), "returned after {took:?}");
    assert!(
        err.to_string().contains(
            "helm upgrade --install of release demo/slow-release-xyz did not finish within 500ms"
        ),
        "{err}"
    );
    let left = processes_mentioning("slow-release-xyz");
    assert!(left.is_empty(), "helm survived: {left:?}");
}

async fn template_error_is_a_permanent_failure_with_helms_message(bin: PathBuf) {
    let env = Env::start(bin).await;
    let values = json!({"explode": true});
    let err = env
        .helm
        .upgrade_install(&env.request("bad", &values))
        .await
        .unwrap_err();
    match &err {
        HelmError::Failed {
            operation,
            kind,
            exit_code,
            stderr,
            ..
        } => {
            assert_eq!(*operation, Operation::Upgrade);
            assert_eq!(*kind, FailureKind::Permanent);
            assert_eq!(*exit_code, Some(1));
            assert!(stderr.contains("explode was set"), "{stderr}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(!err.is_transient());
    let msg = err.to_string();
    assert!(
        msg.starts_with("helm upgrade --install of release demo/bad failed (exit code 1): ")
            && msg.contains("explode was set: this chart refuses to render"),
        "{msg}"
    );
    // Nothing was recorded for a chart that does not render.
    assert_eq!(env.helm.status("bad", NS).await.unwrap(), None);

    // Refused before helm runs.
    let err = env
        .helm
        .upgrade_install(&env.request("bad", &json!(["not", "a", "map"])))
        .await
        .unwrap_err();
    assert!(matches!(err, HelmError::InvalidRequest { .. }), "{err}");
    let err = env.helm.status("--all", NS).await.unwrap_err();
    assert!(matches!(err, HelmError::InvalidRequest { .. }), "{err}");
}

async fn failed_rollout_rolls_back_to_the_previous_revision(bin: PathBuf) {
    let env = Env::start_with(
        bin,
        kube_sim::Config {
            never_ready_images: vec!["broken".into()],
            rollout_delay: Duration::from_millis(200),
            ..kube_sim::Config::default()
        },
    )
    .await;
    let good = json!({"image": "nginx:1"});
    let mut req = env.request("roll", &good);
    req.wait = Some(Duration::from_secs(30));
    req.rollback_on_failure = true;
    let st = env.helm.upgrade_install(&req).await.unwrap();
    assert_eq!((st.revision, &st.status), (1, &ReleaseState::Deployed));

    let bad = json!({"image": "registry.example/broken:2", "greeting": "bad"});
    let mut req = env.request("roll", &bad);
    req.wait = Some(Duration::from_secs(3));
    req.rollback_on_failure = true;
    let started = Instant::now();
    let err = env.helm.upgrade_install(&req).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        matches!(
            err,
            HelmError::Failed {
                kind: FailureKind::Rollout,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_transient());
    // Helm 4 (kstatus) names what did not become ready; Helm 3 says only "context deadline
    // exceeded" (one reason the worker watches rollouts itself).
    if env.helm.version().major >= 4 {
        assert!(err.to_string().contains("roll-web"), "{err}");
    } else {
        assert!(
            err.to_string().contains("context deadline exceeded"),
            "{err}"
        );
    }

    let st = env.helm.status("roll", NS).await.unwrap().unwrap();
    assert_eq!(
        (st.revision, &st.status),
        (3, &ReleaseState::Deployed),
        "{st:?}"
    );
    let history = env.helm.history("roll", NS).await.unwrap();
    assert_eq!(history[1].status, ReleaseState::Failed);
    let deploy = env.get("deployments", "roll-web").unwrap();
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1"
    );
    assert_eq!(env.greeting("roll"), "hello");
}

async fn recovers_a_release_left_pending_upgrade(bin: PathBuf) {
    let env = Env::start(bin).await;
    env.install("stuck", json!({"greeting": "one"})).await;

    // A helm upgrade that hangs on ConfigMap requests, killed once its revision is pending.
    env.sim.faults().set(FaultConfig {
        latency: Duration::from_secs(1),
        latency_path: Some("/configmaps".into()),
        ..FaultConfig::default()
    });
    let chart = env.chart.to_string_lossy().into_owned();
    let mut crashing = env
        .raw_helm(&[
            "upgrade",
            "--install",
            "stuck",
            &chart,
            "-n",
            NS,
            "--set",
            "greeting=two",
        ])
        .spawn()
        .unwrap();
    env.wait_for_revision_status("stuck", 2, "pending-upgrade")
        .await;
    crashing.start_kill().unwrap();
    crashing.wait().await.unwrap();

    let st = env.helm.status("stuck", NS).await.unwrap().unwrap();
    assert_eq!(
        (st.revision, &st.status),
        (2, &ReleaseState::PendingUpgrade)
    );
    let values = json!({"greeting": "three"});
    let err = env
        .helm
        .upgrade_install(&env.request("stuck", &values))
        .await
        .unwrap_err();
    assert!(
        matches!(err, HelmError::OperationInProgress { .. }) && err.is_transient(),
        "{err}"
    );

    let recovery = env
        .helm
        .recover_pending("stuck", NS)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recovery.pending_revision, 2);
    assert_eq!(recovery.pending_state, ReleaseState::PendingUpgrade);
    assert_eq!(
        recovery.action,
        RecoveryAction::RolledBack {
            to_revision: 1,
            new_revision: 3
        }
    );
    env.sim.faults().set(FaultConfig::default());
    let st = env.helm.status("stuck", NS).await.unwrap().unwrap();
    assert_eq!((st.revision, &st.status), (3, &ReleaseState::Deployed));
    assert_eq!(env.helm.recover_pending("stuck", NS).await.unwrap(), None);

    let st = env.install("stuck", values).await;
    assert_eq!((st.revision, &st.status), (4, &ReleaseState::Deployed));
    assert_eq!(env.greeting("stuck"), "three");
    // Nothing pending any more, even though helm keeps revision 2's stale state.
    assert_eq!(env.helm.recover_pending("stuck", NS).await.unwrap(), None);
}

async fn recovers_a_release_left_pending_install(bin: PathBuf) {
    let env = Env::start(bin).await;
    env.sim.faults().set(FaultConfig {
        latency: Duration::from_secs(1),
        latency_path: Some("/configmaps".into()),
        ..FaultConfig::default()
    });
    let chart = env.chart.to_string_lossy().into_owned();
    let mut crashing = env
        .raw_helm(&["upgrade", "--install", "fresh", &chart, "-n", NS])
        .spawn()
        .unwrap();
    env.wait_for_revision_status("fresh", 1, "pending-install")
        .await;
    crashing.start_kill().unwrap();
    crashing.wait().await.unwrap();

    let recovery = env
        .helm
        .recover_pending("fresh", NS)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recovery.pending_revision, 1);
    assert_eq!(recovery.pending_state, ReleaseState::PendingInstall);
    assert_eq!(recovery.action, RecoveryAction::Uninstalled);
    assert!(recovery.to_string().contains("uninstalled"), "{recovery}");
    env.sim.faults().set(FaultConfig::default());
    assert_eq!(env.helm.status("fresh", NS).await.unwrap(), None);

    let st = env.install("fresh", json!({"greeting": "again"})).await;
    assert_eq!((st.revision, &st.status), (1, &ReleaseState::Deployed));
    assert_eq!(env.greeting("fresh"), "again");
}

/// With one helm slot (the memory budget), two calls at once run their helm processes one
/// after the other, the second waiting for the slot; each helm gets the Go memory limit.
async fn one_helm_slot_runs_helm_processes_one_at_a_time_each_with_its_go_memory_limit(
    bin: PathBuf,
) {
    let env = Env::start_configured(bin, kube_sim::Config::default(), |config| {
        config.max_processes = Some(1);
        config.go_memory_limit = Some(32 << 20);
    })
    .await;
    let timeline = Arc::new(Timeline::default());
    let helm = env.helm.clone().with_observer(timeline.clone());
    // Applying a ConfigMap takes a second: long enough to overlap, were both let run.
    env.sim.faults().set(FaultConfig {
        latency: Duration::from_secs(1),
        latency_path: Some("/configmaps".into()),
        ..FaultConfig::default()
    });
    let (a, b) = (json!({"greeting": "a"}), json!({"greeting": "b"}));
    let (first, second) = (env.request("slot-a", &a), env.request("slot-b", &b));
    let environ = async {
        // A helm process exists from its spawn to its end; there is no event to await.
        let end = Instant::now() + BOUND;
        loop {
            // This test's own helm: a child of this process.
            let pid = processes_mentioning("slot-")
                .iter()
                .filter_map(|line| line.split(':').next().map(str::to_owned))
                .find(|pid| parent_of(pid) == Some(std::process::id()));
            if let Some(environ) =
                pid.and_then(|pid| std::fs::read(format!("/proc/{pid}/environ")).ok())
            {
                if !environ.is_empty() {
                    return String::from_utf8_lossy(&environ).replace('\0', "\n");
                }
            }
            assert!(Instant::now() < end, "no helm process seen");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (r1, r2, environ) = tokio::join!(
        helm.upgrade_install(&first),
        helm.upgrade_install(&second),
        environ
    );
    r1.unwrap();
    r2.unwrap();
    assert!(
        environ.lines().any(|l| l == "GOMEMLIMIT=33554432"),
        "helm's environment: {environ}"
    );
    let ran = timeline.ran.lock().unwrap().clone();
    assert_eq!(ran.len(), 2, "{ran:?}");
    let (x, y) = (ran[0], ran[1]);
    assert!(
        x.1 <= y.0 || y.1 <= x.0,
        "the helm processes overlapped: {ran:?}"
    );
    let waits = timeline.slot_waits.lock().unwrap().clone();
    assert_eq!(waits.len(), 2, "{waits:?}");
    let longest = waits.iter().max().copied().unwrap_or_default();
    assert!(
        longest >= Duration::from_secs(1),
        "one call waited for the other's helm (with its one-second apply): {waits:?}"
    );
}

/// Each test, once with Helm 4 and once with Helm 3.
macro_rules! with_each_helm {
    ($($name:ident),* $(,)?) => {
        mod helm4 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::helm_bin("helm")).await
                }
            )*
        }
        mod helm3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::helm_bin("helm3")).await
                }
            )*
        }
    };
}

with_each_helm!(
    detects_the_installed_helm,
    release_life_cycle,
    render_shows_an_upgrade_without_applying_it,
    uninstall_twice_reports_not_found,
    timeout_kills_helm_promptly,
    template_error_is_a_permanent_failure_with_helms_message,
    failed_rollout_rolls_back_to_the_previous_revision,
    recovers_a_release_left_pending_upgrade,
    recovers_a_release_left_pending_install,
    one_helm_slot_runs_helm_processes_one_at_a_time_each_with_its_go_memory_limit,
);
