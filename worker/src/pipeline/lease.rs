//! Per-release leases: never two tasks on one release at the same time, cluster-wide.
//!
//! A lease is a JetStream KV entry created with compare-and-swap (only one creator
//! wins), refreshed by its holder every third of the TTL and deleted when the task
//! ends. The bucket's `max_age` is the TTL, so the lease of a crashed replica expires
//! on its own. Waiters watch the key and retry as soon as it is deleted, and at the
//! latest after one TTL (an expiry leaves no tombstone to watch).
//!
//! Inside one replica, tasks for the same release first queue on a fair (FIFO) local
//! mutex, so they take turns in arrival order instead of racing for the KV entry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease bucket unavailable: {0}")]
    Store(String),
    #[error("stopped while waiting for the lease of {0}")]
    Cancelled(String),
}

/// Hands out release leases. One per replica; cheap to clone.
#[derive(Clone)]
pub struct Leases {
    store: kv::Store,
    ttl: Duration,
    /// Identifies this replica in lease values, for operators reading the bucket.
    owner: Arc<str>,
    local: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// How an acquisition went, for metrics.
pub struct Acquired {
    pub lease: Lease,
    /// Time spent waiting; zero when the lease was free.
    pub waited: Duration,
    pub contended: bool,
}

impl Leases {
    pub fn new(store: kv::Store, ttl: Duration, owner: String) -> Self {
        Leases {
            store,
            ttl,
            owner: owner.into(),
            local: Arc::default(),
        }
    }

    /// Bucket settings: the bucket's max age is the lease TTL.
    pub fn bucket_config(bucket: String, ttl: Duration) -> kv::Config {
        kv::Config {
            bucket,
            description: "helm-service per-release leases".into(),
            history: 1,
            max_age: ttl,
            // File storage: leases must survive a NATS restart, or a holder could lose
            // its lease to a waiter while still running.
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        }
    }

    /// Waits until this task holds the lease for `key`.
    pub async fn acquire(
        &self,
        key: &str,
        holder: &str,
        cancel: &CancellationToken,
    ) -> Result<Acquired, LeaseError> {
        let started = Instant::now();
        let local_lock = self.local_lock(key);
        let contended_locally = local_lock.try_lock().is_err();
        let local_guard = tokio::select! {
            guard = local_lock.lock_owned() => guard,
            () = cancel.cancelled() => return Err(LeaseError::Cancelled(key.to_owned())),
        };
        let value = Bytes::from(
            serde_json::json!({
                "owner": &*self.owner,
                "holder": holder,
                "acquired_at": chrono::Utc::now(),
            })
            .to_string(),
        );
        let mut contended = contended_locally;
        let revision = loop {
            match self.store.create(key, value.clone()).await {
                Ok(revision) => break revision,
                Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => {
                    contended = true;
                    self.wait_for_release(key, cancel).await?;
                }
                Err(err) => return Err(LeaseError::Store(err.to_string())),
            }
        };
        let lease = Lease::start(
            self.store.clone(),
            key.to_owned(),
            value,
            revision,
            self.ttl,
            local_guard,
        );
        Ok(Acquired {
            lease,
            waited: started.elapsed(),
            contended,
        })
    }

    /// Returns when the key was deleted, or after one TTL (expiry leaves no tombstone).
    async fn wait_for_release(
        &self,
        key: &str,
        cancel: &CancellationToken,
    ) -> Result<(), LeaseError> {
        let mut watch = self
            .store
            .watch(key)
            .await
            .map_err(|err| LeaseError::Store(err.to_string()))?;
        let deadline = tokio::time::sleep(self.ttl);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                entry = watch.next() => match entry {
                    Some(Ok(entry)) if entry.operation != kv::Operation::Put => return Ok(()),
                    Some(Ok(_)) => continue,
                    Some(Err(err)) => return Err(LeaseError::Store(err.to_string())),
                    None => return Ok(()),
                },
                () = &mut deadline => return Ok(()),
                () = cancel.cancelled() => return Err(LeaseError::Cancelled(key.to_owned())),
            }
        }
    }

    fn local_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut local = self.local.lock().expect("lease map lock");
        // Forget locks nobody holds or waits for (holders and waiters own a clone),
        // so the map stays as small as the set of busy releases.
        local.retain(|_, lock| Arc::strong_count(lock) > 1);
        local.entry(key.to_owned()).or_default().clone()
    }
}

/// A held lease. Refreshed in the background until [`Lease::release`]; `lost()` fires
/// if a refresh finds that somebody else owns the key (this replica stalled past the
/// TTL), and the task must then stop.
pub struct Lease {
    store: kv::Store,
    key: String,
    revision: Arc<AtomicU64>,
    lost: CancellationToken,
    refresher: tokio::task::JoinHandle<()>,
    _local: OwnedMutexGuard<()>,
}

impl Lease {
    fn start(
        store: kv::Store,
        key: String,
        value: Bytes,
        revision: u64,
        ttl: Duration,
        local: OwnedMutexGuard<()>,
    ) -> Lease {
        let revision = Arc::new(AtomicU64::new(revision));
        let lost = CancellationToken::new();
        let refresher = tokio::spawn(refresh(
            store.clone(),
            key.clone(),
            value,
            revision.clone(),
            ttl,
            lost.clone(),
        ));
        Lease {
            store,
            key,
            revision,
            lost,
            refresher,
            _local: local,
        }
    }

    /// Fires when the lease was lost.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Deletes the lease, unless somebody else has taken it meanwhile.
    pub async fn release(self) {
        self.refresher.abort();
        let revision = self.revision.load(Ordering::SeqCst);
        if let Err(err) = self
            .store
            .delete_expect_revision(self.key.as_str(), Some(revision))
            .await
        {
            // It expires by itself within one TTL.
            warn!(key = %self.key, error = %err, "could not release lease");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

async fn refresh(
    store: kv::Store,
    key: String,
    value: Bytes,
    revision: Arc<AtomicU64>,
    ttl: Duration,
    lost: CancellationToken,
) {
    let period = ttl / 3;
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        interval.tick().await;
        let current = revision.load(Ordering::SeqCst);
        match store.update(key.as_str(), value.clone(), current).await {
            Ok(next) => {
                revision.store(next, Ordering::SeqCst);
                debug!(%key, revision = next, "lease refreshed");
            }
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                warn!(%key, "lease lost: another worker holds it now");
                lost.cancel();
                return;
            }
            // Transient (NATS restarting): try again next period; the lease is only
            // lost if the TTL passes without a successful refresh.
            Err(err) => warn!(%key, error = %err, "lease refresh failed, retrying"),
        }
    }
}
