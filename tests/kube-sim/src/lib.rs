//! kube-sim: a Kubernetes API server emulator on loopback HTTP.
//!
//! No real API server can be installed where the project's tests run, so this crate serves
//! the subset of the Kubernetes REST API that `kubectl`, `helm` and kube-rs use, with the
//! server-side semantics they rely on (resourceVersion concurrency, Status errors, selectors,
//! patch types, discovery). It is tested with the real `kubectl`, not with mocks.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let sim = kube_sim::KubeSim::start(kube_sim::Config::default()).await?;
//! // run `kubectl --kubeconfig <sim.kubeconfig_path()> ...`
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

pub mod audit;
pub mod authz;
pub mod bootstrap;
pub mod cli;
pub mod controller;
pub mod convert;
pub mod defaults;
pub mod discovery;
pub mod events;
pub mod faults;
pub mod fields;
pub mod immutable;
pub mod kubeconfig;
pub mod managed;
pub mod metadata;
pub mod openapi;
pub mod patch;
pub mod pod_log;
pub mod proto;
pub mod resources;
pub mod selector;
pub mod server;
pub mod status;
pub mod store;
pub mod subresource;
pub mod table;
pub mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use audit::{overlapping, AuditEntry, AuditFilter};
pub use faults::{ConflictRule, FaultConfig, Faults};
pub use store::Store;

/// How to start a kube-sim.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Where to write the kubeconfig; `None` writes it into a temp dir owned by the instance.
    pub kubeconfig_path: Option<PathBuf>,
    /// How long every pod takes from creation (or from its claims being bound) to Ready
    /// (see `controller::kubelet`).
    pub rollout_delay: Duration,
    /// Image substrings whose pods never become ready (fault injection for rollout failures),
    /// whatever owns them.
    pub never_ready_images: Vec<String>,
    /// How long a pod that runs to completion (a Job's, a `helm test` pod) runs once ready.
    pub job_duration: Duration,
    /// Image substrings whose run-to-completion pods exit 1, so their Jobs (and `helm test`)
    /// fail.
    pub failing_job_images: Vec<String>,
    /// Claim-name substrings whose PersistentVolumeClaims never bind.
    pub never_bound_claims: Vec<String>,
    /// How long a `type: LoadBalancer` Service waits for `status.loadBalancer.ingress`.
    pub load_balancer_delay: Duration,
    /// Name substrings of LoadBalancer Services that never get an address (`<pending>`).
    pub pending_load_balancers: Vec<String>,
    /// The simulated Nodes (DaemonSets run one pod on each); see `bootstrap`.
    pub nodes: Vec<String>,
    /// The default StorageClass a fresh cluster has (`None`: no class, so claims without one
    /// stay `Pending`).
    pub default_storage_class: Option<String>,
    /// Install the project's Gateway API CRDs (`crds/gateway-api.yaml`: GatewayClass,
    /// Gateway, HTTPRoute) at start, as a cluster with Gateway API has them.
    pub gateway_api: bool,
    /// Further CRD bundles (multi-document YAML files of CustomResourceDefinitions) to
    /// install at start.
    pub crd_bundles: Vec<PathBuf>,
    /// The authorization mode (`authz`): `None` allows every request; `Some(users)` requires
    /// a bearer token of one of `users` or of the built-in admin (the default kubeconfig's)
    /// and evaluates RBAC for everyone but the admin. The kubeconfig gets a context per user.
    pub rbac: Option<Vec<authz::User>>,
    /// Also append every audit entry as a JSON line to this file (truncated at start), for
    /// processes other than this one (see `audit::read_log`).
    pub audit_log_path: Option<PathBuf>,
    /// How many audit entries to keep in memory (oldest dropped first).
    pub audit_capacity: usize,
    /// Initial fault knobs; change them later through `KubeSim::faults`.
    pub faults: FaultConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            kubeconfig_path: None,
            rollout_delay: Duration::from_millis(200),
            never_ready_images: Vec::new(),
            job_duration: Duration::from_millis(200),
            failing_job_images: Vec::new(),
            never_bound_claims: Vec::new(),
            load_balancer_delay: Duration::from_millis(200),
            pending_load_balancers: Vec::new(),
            nodes: vec![bootstrap::DEFAULT_NODE.to_string()],
            default_storage_class: Some(bootstrap::DEFAULT_STORAGE_CLASS.to_string()),
            gateway_api: false,
            rbac: None,
            crd_bundles: Vec::new(),
            audit_log_path: None,
            audit_capacity: audit::DEFAULT_CAPACITY,
            faults: FaultConfig::default(),
        }
    }
}

/// A running kube-sim. Dropping it stops the server (the task is aborted); `shutdown` stops it
/// gracefully and waits.
#[derive(Debug)]
pub struct KubeSim {
    addr: SocketAddr,
    store: Arc<Store>,
    audit: Arc<audit::AuditLog>,
    faults: Faults,
    kubeconfig_path: PathBuf,
    /// The authorization mode's users (their kubeconfig contexts).
    users: Vec<authz::User>,
    /// Keeps the default kubeconfig's directory alive as long as the server.
    _tempdir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// The controllers' thread (see `controller::spawn`).
    controller: Option<std::thread::JoinHandle<()>>,
}

impl KubeSim {
    /// Binds, writes the kubeconfig and starts serving. Returns once the socket accepts
    /// connections, so callers need no readiness polling.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let (tempdir, kubeconfig_path) = match config.kubeconfig_path {
            Some(p) => (None, p),
            None => {
                let dir = tempfile::Builder::new().prefix("kube-sim-").tempdir()?;
                let p = dir.path().join("kubeconfig.json");
                (Some(dir), p)
            }
        };
        let url = format!("http://{addr}");
        let users = config.rbac.clone().unwrap_or_default();
        kubeconfig::write(&kubeconfig_path, &url, &users)
            .with_context(|| format!("writing kubeconfig {}", kubeconfig_path.display()))?;
        let store = Arc::new(Store::new());
        bootstrap::populate(
            &store,
            &config.nodes,
            config.default_storage_class.as_deref(),
        )?;
        if config.gateway_api {
            bootstrap::install_crds(&store, bootstrap::GATEWAY_API_CRDS)
                .context("installing the Gateway API CRDs")?;
        }
        for bundle in &config.crd_bundles {
            let text = std::fs::read_to_string(bundle)
                .with_context(|| format!("reading CRD bundle {}", bundle.display()))?;
            bootstrap::install_crds(&store, &text)
                .with_context(|| format!("installing CRD bundle {}", bundle.display()))?;
        }
        let audit = Arc::new(audit::AuditLog::new(
            config.audit_capacity,
            config.audit_log_path.as_deref(),
        )?);
        let faults = Faults::new(config.faults);
        let app = server::router(server::Shared {
            store: store.clone(),
            audit: audit.clone(),
            faults: faults.clone(),
            authz: config
                .rbac
                .map(|users| Arc::new(authz::Authorizer::new(users, kubeconfig::TOKEN))),
        });
        let controller = controller::spawn(
            store.clone(),
            controller::Settings {
                rollout_delay: config.rollout_delay,
                never_ready_images: config.never_ready_images,
                job_duration: config.job_duration,
                failing_job_images: config.failing_job_images,
                never_bound_claims: config.never_bound_claims,
                load_balancer_delay: config.load_balancer_delay,
                pending_load_balancers: config.pending_load_balancers,
            },
        )
        .context("starting the controller thread")?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "kube-sim server failed");
            }
        });
        tracing::info!(%url, kubeconfig = %kubeconfig_path.display(), "kube-sim listening");
        Ok(Self {
            addr,
            store,
            audit,
            faults,
            kubeconfig_path,
            users,
            _tempdir: tempdir,
            stop: Some(stop),
            task: Some(task),
            controller: Some(controller),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The kubeconfig written at start.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// Writes another copy of the kubeconfig (e.g. where a child process expects it).
    pub fn write_kubeconfig(&self, path: &Path) -> anyhow::Result<()> {
        kubeconfig::write(path, &self.url(), &self.users)
            .with_context(|| format!("writing kubeconfig {}", path.display()))
    }

    /// Direct access to the objects, for tests that arrange or inspect state.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// A snapshot of the audit log, oldest first (bounded by `Config::audit_capacity`).
    pub fn audit(&self) -> Vec<AuditEntry> {
        self.audit.snapshot()
    }

    /// Forgets the in-memory audit entries, e.g. after arranging state, so assertions see
    /// only the requests under test. The audit file is not truncated.
    pub fn clear_audit(&self) {
        self.audit.clear();
    }

    /// The fault knobs, changeable while the server runs.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Stops accepting connections, lets in-flight requests finish, and waits.
    pub async fn shutdown(mut self) {
        // Open watches would otherwise keep graceful shutdown waiting forever.
        self.store.close();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(controller) = self.controller.take() {
            // The store is closed: the controller's loop ends at its next wake-up.
            let _ = tokio::task::spawn_blocking(move || controller.join()).await;
        }
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        self.store.close();
        if let Some(task) = self.task.take() {
            task.abort();
        }
        // The controller thread ends by itself now that the store is closed.
        drop(self.controller.take());
    }
}
