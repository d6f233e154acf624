//! What the worker does with the Kubernetes API directly, through kube-rs
//! (docs/architecture.md §7.4):
//! the things Helm does not do for us, or does too expensively to do on every event.
//!
//! - [`namespaces`]: create the release namespace and label it (`istio-injection`).
//! - [`helm_storage`]: read Helm's release records (Secrets) without running `helm`, the fast
//!   path of an unchanged redeploy.
//! - [`test_pods`]: the failed `helm test` pods of a release and the ends of their logs.
//! - [`readiness`]: what of a release is waited for and when each kind is ready (pure).
//! - [`rollout`]: wait for it with watches, fail fast on pods that cannot start, and explain
//!   why something did not become ready.
//!
//! Everything hangs off [`Cluster`], a cheap-to-clone handle around one `kube::Client`.
//! Every one-shot request is bounded by [`Cluster::request_timeout`], so a black-holed API
//! server yields a [`ClusterError::Timeout`] instead of a stuck task.

mod diagnosis;
mod error;
pub mod helm_storage;
pub mod namespaces;
pub mod readiness;
pub mod rollout;
pub mod test_pods;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

pub use diagnosis::{pod_problems, ConditionSummary, Diagnosis, PodProblems, StallCause};
pub use error::ClusterError;
pub use helm_storage::{StoredRelease, StoredRevision, TestHook};
pub use rollout::{rollout_status, RolloutFailure, RolloutStatus, WaitLimits};

/// How long a single one-shot API request may take before it counts as a (transient)
/// failure. Real API servers answer in milliseconds; 30 s leaves room for a loaded one.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the cluster is: the flags of `run` and `releases show`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Kubeconfig file for helm and the worker's own API calls; in-cluster credentials
    /// (or ~/.kube/config) when unset.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,

    /// Kubeconfig context to use instead of the current one.
    #[arg(long, env = "KUBE_CONTEXT")]
    pub kube_context: Option<String>,
}

impl ClusterArgs {
    /// A client of the cluster these flags name (see [`Cluster::connect`]).
    pub async fn connect(&self) -> Result<Cluster, ClusterError> {
        Cluster::connect(self.kubeconfig.as_deref(), self.kube_context.as_deref()).await
    }
}

/// A connection to one Kubernetes cluster.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    request_timeout: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Builds a client the way operators expect: an explicit kubeconfig file when given
    /// (`--kubeconfig`), otherwise `$KUBECONFIG` / `~/.kube/config`, otherwise the in-cluster
    /// service account (`kube::Config::infer`). `context` picks a kubeconfig context; it has
    /// no meaning in-cluster, so with a context and no file the kubeconfig must exist.
    ///
    /// No request is made: an unreachable API server shows up on first use, as a transient
    /// [`ClusterError`], so a worker can start before the API server is reachable.
    pub async fn connect(
        kubeconfig: Option<&Path>,
        context: Option<&str>,
    ) -> Result<Cluster, ClusterError> {
        let options = KubeConfigOptions {
            context: context.map(String::from),
            ..KubeConfigOptions::default()
        };
        let config = match (kubeconfig, context) {
            (Some(path), _) => {
                let file = Kubeconfig::read_from(path).map_err(|e| {
                    ClusterError::Config(format!("reading kubeconfig {}: {e}", path.display()))
                })?;
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|e| {
                        ClusterError::Config(format!("using kubeconfig {}: {e}", path.display()))
                    })?
            }
            (None, Some(context)) => {
                kube::Config::from_kubeconfig(&options).await.map_err(|e| {
                    ClusterError::Config(format!(
                        "loading context {context:?} from $KUBECONFIG or ~/.kube/config: {e}"
                    ))
                })?
            }
            (None, None) => kube::Config::infer().await.map_err(|e| {
                ClusterError::Config(format!(
                    "no kubeconfig given and none found ($KUBECONFIG, ~/.kube/config, \
                     in-cluster service account): {e}"
                ))
            })?,
        };
        let client = kube::Client::try_from(config)
            .map_err(|e| ClusterError::Config(format!("building the Kubernetes client: {e}")))?;
        Ok(Cluster::from_client(client))
    }

    /// Wraps an existing client (tests, or a caller that configured kube-rs itself).
    pub fn from_client(client: kube::Client) -> Cluster {
        Cluster {
            client,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Changes the bound on each one-shot request (not on watches, which are long by design).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Cluster {
        self.request_timeout = timeout;
        self
    }

    /// The bound on each one-shot request.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The underlying client (cheap clone), for callers with needs beyond this module, e.g.
    /// Istio objects as dynamic objects.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Runs one API request under the request timeout, naming it in the error.
    async fn call<T>(
        &self,
        action: impl Fn() -> String,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, ClusterError> {
        match tokio::time::timeout(self.request_timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(ClusterError::request(action(), source)),
            Err(_) => Err(ClusterError::Timeout {
                action: action(),
                after: self.request_timeout,
            }),
        }
    }
}
