//! The inventory: what helm-service deployed, per project/stage/service, in JetStream KV.
//!
//! Release, rollback, scaling and service deletion need to know which strategy a service
//! was deployed with and which releases exist; an unchanged redeploy needs the chart
//! digest and revisions of the last deployment. Helm's own storage holds releases but not
//! the Keptn view (strategy, URIs), and reading it means running helm.

use async_nats::jetstream::{self, kv};
use chrono::{DateTime, Utc};
use contracts::validate::Target;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::naming::{service_key, ReleaseNames};
use crate::cluster::readiness::Awaited;
use crate::nats::topology::{self, Limit};

#[derive(Debug, Error)]
pub enum InventoryError {
    #[error("inventory bucket {bucket}: {reason}")]
    Unavailable { bucket: String, reason: String },
    #[error("inventory entry {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
}

/// What the last successful deployment of a service in a stage left in the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryEntry {
    /// Wire value of the strategy (`direct`, `blue_green_service`, `user_managed`).
    pub strategy: String,
    /// The traffic layer routing it (`istio`, `gateway-api`, `service`); none for
    /// `user_managed`, and absent in entries of earlier versions (which were Istio's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<String>,
    pub namespace: String,
    pub user_release: String,
    pub user_revision: u32,
    /// The generated release, for strategies that have one.
    pub generated_release: Option<String>,
    pub generated_revision: Option<u32>,
    /// `sha256:` digest of the user chart as deployed (values merged in).
    pub chart_digest: String,
    /// Deployments whose readiness says the service is healthy (user and primary).
    pub deployments: Vec<String>,
    /// The other objects of the user release that have a readiness (StatefulSets, Jobs,
    /// claims, ...: `cluster::readiness`), checked too before an unchanged redeploy is
    /// skipped. Absent in entries of earlier versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub awaited: Vec<Awaited>,
    #[serde(rename = "deploymentURIsLocal")]
    pub uris_local: Vec<String>,
    #[serde(rename = "deploymentURIsPublic")]
    pub uris_public: Vec<String>,
    #[serde(rename = "deploymentNames")]
    pub deployment_names: Vec<String>,
    pub git_commit: Option<String>,
    /// The deployment.triggered event that made this state.
    pub event_id: String,
    pub updated_at: DateTime<Utc>,
}

impl InventoryEntry {
    /// The namespace of the service's releases when its last deployment put them in one of
    /// its own (`keptn.namespace`) rather than the stage's `names.namespace`: where every task
    /// and the operator CLI find them.
    pub fn own_namespace(&self, names: &ReleaseNames) -> Option<&str> {
        (self.user_release == names.user && self.namespace != names.namespace)
            .then_some(self.namespace.as_str())
    }
}

/// The inventory bucket.
#[derive(Clone)]
pub struct Inventory {
    store: kv::Store,
    bucket: String,
}

impl Inventory {
    /// Opens (creating when absent) the bucket `name`.
    /// Opens (or creates) the bucket, within `limit`.
    pub async fn open(
        js: &jetstream::Context,
        name: &str,
        limit: Limit,
    ) -> Result<Inventory, InventoryError> {
        let config = kv::Config {
            bucket: name.to_owned(),
            description: "helm-service: what is deployed, per project.stage.service".into(),
            history: 5,
            max_age: limit.max_age,
            max_bytes: limit.max_bytes,
            num_replicas: limit.replicas,
            ..Default::default()
        };
        let unavailable = |reason: String| InventoryError::Unavailable {
            bucket: name.to_owned(),
            reason,
        };
        let store = topology::open_bucket(js, config)
            .await
            .map_err(|err| unavailable(err.to_string()))?;
        topology::enforce_limits(js, &store.stream_name, limit)
            .await
            .map_err(unavailable)?;
        Ok(Inventory {
            store,
            bucket: name.to_owned(),
        })
    }

    /// The bucket `name` when it exists, as it is (for reading: nothing is created or
    /// changed).
    pub async fn existing(
        js: &jetstream::Context,
        name: &str,
    ) -> Result<Option<Inventory>, InventoryError> {
        match crate::nats::topology::existing_bucket(js, name).await {
            Ok(store) => Ok(store.map(|store| Inventory {
                store,
                bucket: name.to_owned(),
            })),
            Err(err) => Err(InventoryError::Unavailable {
                bucket: name.to_owned(),
                reason: err.to_string(),
            }),
        }
    }

    /// The entry's key (see [`service_key`]).
    fn key(target: &Target) -> String {
        service_key(&target.project, &target.stage, &target.service)
    }

    fn unavailable(&self, err: impl std::fmt::Display) -> InventoryError {
        InventoryError::Unavailable {
            bucket: self.bucket.clone(),
            reason: err.to_string(),
        }
    }

    pub async fn get(&self, target: &Target) -> Result<Option<InventoryEntry>, InventoryError> {
        let key = Self::key(target);
        let Some(bytes) = self
            .store
            .get(&key)
            .await
            .map_err(|e| self.unavailable(e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| InventoryError::Corrupt {
                key,
                reason: err.to_string(),
            })
    }

    pub async fn put(&self, target: &Target, entry: &InventoryEntry) -> Result<(), InventoryError> {
        let bytes = serde_json::to_vec(entry).map_err(|e| self.unavailable(e))?;
        self.store
            .put(Self::key(target), bytes.into())
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(())
    }

    pub async fn delete(&self, target: &Target) -> Result<(), InventoryError> {
        self.store
            .delete(Self::key(target))
            .await
            .map_err(|e| self.unavailable(e))
    }

    /// The stages with an entry of a service of a project, without reading the entries: an
    /// entry this version cannot read still names its stage (service deletion relies on it).
    pub async fn stage_names_of(
        &self,
        project: &str,
        service: &str,
    ) -> Result<Vec<String>, InventoryError> {
        let keys: Vec<String> = self
            .store
            .keys()
            .await
            .map_err(|e| self.unavailable(e))?
            .try_collect()
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(keys
            .iter()
            .filter_map(|key| {
                let mut parts = key.splitn(3, '.');
                let (p, stage, s) = (parts.next()?, parts.next()?, parts.next()?);
                (p == project && s == service).then(|| stage.to_owned())
            })
            .collect())
    }
}
