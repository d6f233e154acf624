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
use crate::deploy::settings::DeploySettings;
use crate::helm::{Helm, HelmError};
use crate::metrics::Metrics;

use super::TaskError;

/// The shared tools of the Helm task handlers.
pub struct Platform {
    pub helm: Helm,
    pub cluster: Cluster,
    pub charts: Arc<dyn ChartStore>,
    pub chart_limits: ArchiveLimits,
    pub inventory: Inventory,
    pub settings: DeploySettings,
    /// Read `helm/<service>.tgz` at the event's `gitcommitid` (resource-service).
    pub use_commit_id: bool,
    pub metrics: Metrics,
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

/// Helm call durations on `/metrics`, by operation and outcome (`ok` or the error kind).
impl crate::helm::HelmObserver for Metrics {
    fn observe(
        &self,
        operation: crate::helm::Operation,
        elapsed: std::time::Duration,
        outcome: Result<(), &HelmError>,
    ) {
        let outcome = match outcome {
            Ok(()) => "ok",
            Err(err) => err.label(),
        };
        self.helm_operation_seconds
            .with_label_values(&[operation.as_str(), outcome])
            .observe(elapsed.as_secs_f64());
    }
}
