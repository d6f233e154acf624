//! What the Helm task handlers work with: the chart store, the Helm driver, the cluster
//! client and the inventory, built once per process and shared by every task.
//!
//! Errors of these parts become [`TaskError`]s here, once: transient trouble (an API
//! server or NATS that is briefly away) hands the event back for redelivery; anything
//! else is answered as a failed task with the part's own message.

use std::sync::Arc;

use crate::charts::archive::ArchiveLimits;
use crate::charts::{ChartStore, ChartStoreError};
use crate::cluster::{Cluster, ClusterError};
use crate::deploy::inventory::{Inventory, InventoryError};
use crate::deploy::ownership::NamespacePolicy;
use crate::deploy::settings::DeploySettings;
use crate::helm::{Helm, HelmError};
use crate::metrics::Metrics;

use super::TaskError;
use crate::cluster::readiness::Awaited;
use tracing::Instrument;

use crate::cluster::{RolloutFailure, StoredRelease, StoredRevision, WaitLimits};

/// The shared tools of the Helm task handlers.
pub struct Platform {
    pub helm: Helm,
    pub cluster: Cluster,
    pub charts: Arc<dyn ChartStore>,
    pub chart_limits: ArchiveLimits,
    pub inventory: Inventory,
    pub settings: DeploySettings,
    /// Where tasks may deploy (protected namespaces, which may be adopted).
    pub namespaces: NamespacePolicy,
    /// Read `helm/<service>.tgz` at the event's `gitcommitid` (resource-service).
    pub use_commit_id: bool,
    pub metrics: Metrics,
}

impl Platform {
    /// A helm process killed mid-operation leaves its release `pending-*`, and helm then
    /// refuses every later operation. Tasks call this while holding the release's lease, so
    /// nobody else is operating on it: whatever is pending is dead and is recovered here.
    /// Whether anything was recovered (Helm's storage must then be read again).
    pub async fn recover_pending(
        &self,
        namespace: &str,
        release: &str,
        revisions: &[StoredRevision],
    ) -> Result<bool, TaskError> {
        if !revisions.last().is_some_and(StoredRevision::is_pending) {
            return Ok(false);
        }
        // `None`: Helm's own history shows nothing pending (nothing was done).
        let Some(recovery) = self.helm.recover_pending(release, namespace).await? else {
            return Ok(false);
        };
        tracing::warn!(
            release,
            ?recovery,
            "recovered a release left pending by an interrupted helm operation"
        );
        self.metrics.pending_recoveries.inc();
        Ok(true)
    }

    /// Waits (with watches) until `awaited` are ready, one fails, a pod of one cannot start
    /// for `limits.fail_fast_after`, or `limits.deadline` passes; records how long it took.
    pub async fn wait_until_ready(
        &self,
        namespace: &str,
        awaited: &[Awaited],
        limits: WaitLimits,
    ) -> Result<(), RolloutFailure> {
        let started = std::time::Instant::now();
        let span = tracing::info_span!(
            "rollout wait",
            namespace,
            objects = awaited.len(),
            otel.status_code = tracing::field::Empty,
        );
        let result = self
            .cluster
            .wait_until_ready(namespace, awaited, limits)
            .instrument(span.clone())
            .await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        self.metrics
            .record_rollout(result.is_ok(), started.elapsed());
        result
    }

    /// Revision `revision` of `release`, which a recorded plan relies on: its absence is
    /// an error naming it (someone uninstalled the release or pruned its history).
    pub async fn stored_revision(
        &self,
        namespace: &str,
        release: &str,
        revision: u32,
    ) -> Result<StoredRelease, TaskError> {
        self.cluster
            .stored_release(namespace, release, revision)
            .await?
            .ok_or_else(|| {
                TaskError::Failed(format!(
                    "revision {revision} of release {release} in namespace {namespace} is gone from Helm's history (uninstalled or pruned while the task ran)"
                ))
            })
    }
}

/// A private temp directory (0700) for charts and values handed to helm.
pub(super) fn private_dir() -> Result<tempfile::TempDir, TaskError> {
    tempfile::Builder::new()
        .prefix("helm-service-")
        .tempdir()
        .map_err(|err| TaskError::Transient(format!("creating a temp dir: {err}")))
}

impl From<RolloutFailure> for TaskError {
    fn from(failure: RolloutFailure) -> Self {
        classify(failure.is_transient(), failure.to_string())
    }
}

fn classify(transient: bool, message: String) -> TaskError {
    if transient {
        TaskError::Transient(message)
    } else {
        TaskError::Failed(message)
    }
}

impl From<HelmError> for TaskError {
    fn from(err: HelmError) -> Self {
        classify(err.is_transient(), err.to_string())
    }
}

impl From<ClusterError> for TaskError {
    fn from(err: ClusterError) -> Self {
        classify(err.is_transient(), err.to_string())
    }
}

impl From<ChartStoreError> for TaskError {
    fn from(err: ChartStoreError) -> Self {
        classify(err.is_transient(), err.to_string())
    }
}

impl From<InventoryError> for TaskError {
    fn from(err: InventoryError) -> Self {
        classify(
            matches!(err, InventoryError::Unavailable { .. }),
            err.to_string(),
        )
    }
}
