//! Per-release leases: never two tasks on one release at the same time, cluster-wide,
//! and no task starved while it waits.
//!
//! A lease is a JetStream KV entry written with compare-and-swap (only one writer of a
//! revision wins), refreshed by its holder every third of the TTL and marked free when
//! the task ends. The bucket's `max_age` is the TTL, so the lease of a crashed replica
//! expires on its own. A replica remembers the revision of its own release, so taking
//! a key it used last is one round trip.
//!
//! Fairness: inside one replica, tasks for a release queue on a FIFO mutex. Across
//! replicas, a waiter watches the key and retries when it changes; a waiter that has
//! waited a whole TTL *claims* the lease by writing its token into the entry (`next`).
//! The holder keeps the claim when it refreshes and, on release, hands the lease over
//! as a reservation for the claimant instead of deleting it, so the replica that just
//! released cannot take it straight back. The decision is a pure function
//! ([`next_action`]) of what the entry says.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease bucket unavailable: {0}")]
    Store(String),
    #[error("stopped while waiting for the lease of {0}")]
    Cancelled(String),
}

/// What a lease entry says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LeaseValue {
    Held {
        /// Unique per acquisition.
        token: String,
        /// The replica (`host/pid`), for operators.
        owner: String,
        /// The event being processed, for operators.
        holder: String,
        acquired_at: DateTime<Utc>,
        /// Token of a starved waiter that gets the lease next.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// Handed over to the waiter with this token; expires like any entry.
    Reserved {
        token: String,
        reserved_at: DateTime<Utc>,
    },
    /// Released. Written instead of a delete so the releaser learns the revision and
    /// its next acquisition of the key takes one round trip.
    Free { released_at: DateTime<Utc> },
}

impl LeaseValue {
    fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("lease values serialize"))
    }
}

/// The state of a lease key as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Absent, deleted or expired; `revision` is what a write must expect.
    Free {
        revision: u64,
    },
    Taken {
        revision: u64,
        value: LeaseValue,
    },
    /// A value this version cannot read (another version's format): wait for it to expire.
    Unreadable,
}

impl Observed {
    fn from_entry(entry: Option<kv::Entry>) -> Observed {
        match entry {
            None => Observed::Free { revision: 0 },
            Some(entry) if entry.operation != kv::Operation::Put => Observed::Free {
                revision: entry.revision,
            },
            Some(entry) => match serde_json::from_slice(&entry.value) {
                Ok(LeaseValue::Free { .. }) => Observed::Free {
                    revision: entry.revision,
                },
                Ok(value) => Observed::Taken {
                    revision: entry.revision,
                    value,
                },
                Err(_) => Observed::Unreadable,
            },
        }
    }
}

/// What a waiter does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextAction {
    /// Write our `Held` value expecting this revision.
    Take {
        revision: u64,
    },
    /// Write this value (the holder's, with our claim) expecting this revision.
    Claim {
        revision: u64,
        value: LeaseValue,
    },
    Wait,
}

/// Decides what a waiter with token `me` does about `observed`. `starving` is true
/// once it has waited a whole TTL.
pub fn next_action(observed: &Observed, me: &str, starving: bool) -> NextAction {
    match observed {
        Observed::Free { revision } => NextAction::Take {
            revision: *revision,
        },
        Observed::Taken {
            revision,
            value: LeaseValue::Reserved { token, .. },
        } if token == me => NextAction::Take {
            revision: *revision,
        },
        Observed::Taken {
            revision,
            value: held @ LeaseValue::Held { next: None, .. },
        } if starving => {
            let mut claimed = held.clone();
            if let LeaseValue::Held { next, .. } = &mut claimed {
                *next = Some(me.to_owned());
            }
            NextAction::Claim {
                revision: *revision,
                value: claimed,
            }
        }
        Observed::Taken { .. } | Observed::Unreadable => NextAction::Wait,
    }
}

/// Hands out release leases. One per replica; cheap to clone.
#[derive(Clone)]
pub struct Leases {
    store: kv::Store,
    ttl: Duration,
    /// Identifies this replica in lease values, for operators reading the bucket.
    owner: Arc<str>,
    local: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Revision of this replica's last write (its release) per key: the revision the
    /// next acquisition of the key most likely has to expect.
    known: KnownRevisions,
}

/// Revisions this replica wrote last, per key. Bounded: cleared when it grows large
/// (a miss costs one extra round trip, nothing else).
#[derive(Clone, Default)]
struct KnownRevisions(Arc<Mutex<HashMap<String, u64>>>);

impl KnownRevisions {
    const MAX_KEYS: usize = 10_000;

    fn take(&self, key: &str) -> u64 {
        self.0
            .lock()
            .expect("revision cache lock")
            .remove(key)
            .unwrap_or(0)
    }

    fn remember(&self, key: &str, revision: u64) {
        let mut known = self.0.lock().expect("revision cache lock");
        if known.len() >= Self::MAX_KEYS {
            known.clear();
        }
        known.insert(key.to_owned(), revision);
    }
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
            known: KnownRevisions::default(),
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
        let token = uuid::Uuid::new_v4().to_string();
        let held = LeaseValue::Held {
            token: token.clone(),
            owner: self.owner.to_string(),
            holder: holder.to_owned(),
            acquired_at: Utc::now(),
            next: None,
        };
        // Fast path: the key is free and was last released by us, or never used.
        let (revision, contended) = match self.write(key, &held, self.known.take(key)).await? {
            Some(revision) => (revision, contended_locally),
            None => (self.wait_and_take(key, &held, &token, cancel).await?, true),
        };
        let lease = Lease::start(
            self.store.clone(),
            key.to_owned(),
            held,
            revision,
            self.ttl,
            local_guard,
            self.known.clone(),
        );
        Ok(Acquired {
            lease,
            waited: started.elapsed(),
            contended,
        })
    }

    async fn wait_and_take(
        &self,
        key: &str,
        held: &LeaseValue,
        token: &str,
        cancel: &CancellationToken,
    ) -> Result<u64, LeaseError> {
        let waiting_since = Instant::now();
        let mut observed = self.observe(key).await?;
        // Opened only once somebody else really holds the key: a watch is a consumer
        // on the server, too costly for the free-but-stale-revision case.
        let mut watch: Option<kv::Watch> = None;
        let mut watch_failed = false;
        loop {
            let starving = waiting_since.elapsed() >= self.ttl;
            match next_action(&observed, token, starving) {
                NextAction::Take { revision } => {
                    if let Some(taken) = self.write(key, held, revision).await? {
                        return Ok(taken);
                    }
                    observed = self.observe(key).await?;
                    continue;
                }
                NextAction::Claim { revision, value } => {
                    if self.write(key, &value, revision).await?.is_some() {
                        info!(%key, waited = ?waiting_since.elapsed(), "claimed the lease as next holder");
                    }
                }
                NextAction::Wait => {}
            }
            if watch.is_none() && !watch_failed {
                match self.store.watch(key).await {
                    Ok(opened) => {
                        watch = Some(opened);
                        // Look again: a change before the watch began would be missed.
                        observed = self.observe(key).await?;
                        continue;
                    }
                    Err(err) => {
                        warn!(%key, error = %err, "cannot watch the lease; polling instead");
                        watch_failed = true;
                    }
                }
            }
            // Expiry leaves no tombstone to watch, and starving needs a clock: look
            // again at least this often (often, when polling).
            let recheck = if watch.is_some() {
                self.ttl / 3
            } else {
                (self.ttl / 3).min(Duration::from_millis(100))
            };
            let change = async {
                match watch.as_mut() {
                    Some(watch) => watch.next().await,
                    None => std::future::pending().await,
                }
            };
            observed = tokio::select! {
                entry = change => match entry {
                    Some(Ok(entry)) => Observed::from_entry(Some(entry)),
                    Some(Err(err)) => return Err(LeaseError::Store(err.to_string())),
                    None => return Err(LeaseError::Store(format!("watch of lease {key} ended"))),
                },
                () = tokio::time::sleep(recheck) => self.observe(key).await?,
                () = cancel.cancelled() => return Err(LeaseError::Cancelled(key.to_owned())),
            };
        }
    }

    async fn observe(&self, key: &str) -> Result<Observed, LeaseError> {
        let entry = self
            .store
            .entry(key)
            .await
            .map_err(|err| LeaseError::Store(err.to_string()))?;
        Ok(Observed::from_entry(entry))
    }

    /// Writes `value` expecting `revision`: the new revision, or `None` when somebody
    /// else wrote first.
    async fn write(
        &self,
        key: &str,
        value: &LeaseValue,
        revision: u64,
    ) -> Result<Option<u64>, LeaseError> {
        match self.store.update(key, value.encode(), revision).await {
            Ok(revision) => Ok(Some(revision)),
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(err) => Err(LeaseError::Store(err.to_string())),
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

/// The holder's view of its entry: the revision to expect and the value to write
/// (which may carry a waiter's claim).
type HeldState = Arc<Mutex<(u64, LeaseValue)>>;

/// A held lease. Refreshed in the background until [`Lease::release`]; `lost()` fires
/// if a refresh finds that somebody else owns the key (this replica stalled past the
/// TTL), and the task must then stop.
pub struct Lease {
    store: kv::Store,
    key: String,
    state: HeldState,
    lost: CancellationToken,
    stop_refreshing: CancellationToken,
    refresher: Option<tokio::task::JoinHandle<()>>,
    known: KnownRevisions,
    _local: OwnedMutexGuard<()>,
}

impl Lease {
    fn start(
        store: kv::Store,
        key: String,
        value: LeaseValue,
        revision: u64,
        ttl: Duration,
        local: OwnedMutexGuard<()>,
        known: KnownRevisions,
    ) -> Lease {
        let state: HeldState = Arc::new(Mutex::new((revision, value)));
        let lost = CancellationToken::new();
        let stop_refreshing = CancellationToken::new();
        let refresher = tokio::spawn(refresh(
            store.clone(),
            key.clone(),
            state.clone(),
            ttl,
            lost.clone(),
            stop_refreshing.clone(),
        ));
        Lease {
            store,
            key,
            state,
            lost,
            stop_refreshing,
            refresher: Some(refresher),
            known,
            _local: local,
        }
    }

    /// Fires when the lease was lost.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Ends the lease: hands it to a waiter that claimed it, or marks it free.
    /// Leaves it alone if somebody else owns it by now.
    pub async fn release(mut self) {
        self.stop_refreshing.cancel();
        if let Some(refresher) = self.refresher.take() {
            // Let an update in flight land, so the revision below is current.
            let _ = refresher.await;
        }
        if self.lost.is_cancelled() {
            return;
        }
        for _ in 0..3 {
            let (revision, value) = self.state.lock().expect("lease state lock").clone();
            let LeaseValue::Held { next, .. } = &value else {
                return;
            };
            let released = match next {
                Some(token) => {
                    debug!(key = %self.key, "handing the lease to the waiter that claimed it");
                    LeaseValue::Reserved {
                        token: token.clone(),
                        reserved_at: Utc::now(),
                    }
                }
                None => LeaseValue::Free {
                    released_at: Utc::now(),
                },
            };
            match self
                .store
                .update(self.key.as_str(), released.encode(), revision)
                .await
            {
                Ok(written) => {
                    if matches!(released, LeaseValue::Free { .. }) {
                        self.known.remember(&self.key, written);
                    }
                    return;
                }
                // A claim may have landed since the last refresh: adopt it and retry.
                Err(err) => {
                    if !adopt_if_ours(&self.store, &self.key, &self.state).await {
                        warn!(key = %self.key, error = %err, "could not release lease; it expires by itself");
                        return;
                    }
                }
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop_refreshing.cancel();
    }
}

/// Re-reads the entry after a failed write; if it is still this holder's (a waiter
/// added its claim), takes its revision and value. False when the lease is not ours.
async fn adopt_if_ours(store: &kv::Store, key: &str, state: &HeldState) -> bool {
    let Ok(entry) = store.entry(key).await else {
        return false;
    };
    let ours = match &state.lock().expect("lease state lock").1 {
        LeaseValue::Held { token, .. } => token.clone(),
        LeaseValue::Reserved { .. } | LeaseValue::Free { .. } => return false,
    };
    match Observed::from_entry(entry) {
        Observed::Taken {
            revision,
            value: value @ LeaseValue::Held { .. },
        } if matches!(&value, LeaseValue::Held { token, .. } if *token == ours) => {
            *state.lock().expect("lease state lock") = (revision, value);
            true
        }
        _ => false,
    }
}

async fn refresh(
    store: kv::Store,
    key: String,
    state: HeldState,
    ttl: Duration,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    let period = ttl / 3;
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut warned = false;
    loop {
        tokio::select! {
            _ = interval.tick() => {},
            () = stop.cancelled() => return,
        }
        let (revision, value) = state.lock().expect("lease state lock").clone();
        match store.update(key.as_str(), value.encode(), revision).await {
            Ok(next) => {
                state.lock().expect("lease state lock").0 = next;
                warned = false;
            }
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                if adopt_if_ours(&store, &key, &state).await {
                    debug!(%key, "a waiter claimed the lease; it gets it next");
                    continue;
                }
                warn!(%key, "lease lost: another worker holds it now");
                lost.cancel();
                return;
            }
            // Transient (NATS restarting): try again next period; the lease is only
            // lost if the TTL passes without a successful refresh.
            Err(err) => {
                if !std::mem::replace(&mut warned, true) {
                    warn!(%key, error = %err, "lease refresh failed, retrying");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(token: &str, next: Option<&str>) -> LeaseValue {
        LeaseValue::Held {
            token: token.into(),
            owner: "host/1".into(),
            holder: "event".into(),
            acquired_at: Utc::now(),
            next: next.map(str::to_owned),
        }
    }

    #[test]
    fn a_free_key_is_taken_at_its_revision() {
        assert_eq!(
            next_action(&Observed::Free { revision: 7 }, "me", false),
            NextAction::Take { revision: 7 }
        );
    }

    #[test]
    fn a_held_key_is_waited_for_until_starving_then_claimed_once() {
        let taken = Observed::Taken {
            revision: 3,
            value: held("other", None),
        };
        assert_eq!(next_action(&taken, "me", false), NextAction::Wait);
        assert_eq!(
            next_action(&taken, "me", true),
            NextAction::Claim {
                revision: 3,
                value: held_with_next(&taken, "me")
            }
        );
        let claimed_by_someone = Observed::Taken {
            revision: 4,
            value: held("other", Some("third")),
        };
        assert_eq!(
            next_action(&claimed_by_someone, "me", true),
            NextAction::Wait
        );
    }

    fn held_with_next(observed: &Observed, me: &str) -> LeaseValue {
        let Observed::Taken {
            value:
                LeaseValue::Held {
                    token,
                    owner,
                    holder,
                    acquired_at,
                    ..
                },
            ..
        } = observed
        else {
            unreachable!()
        };
        LeaseValue::Held {
            token: token.clone(),
            owner: owner.clone(),
            holder: holder.clone(),
            acquired_at: *acquired_at,
            next: Some(me.to_owned()),
        }
    }

    #[test]
    fn a_reservation_is_only_for_its_claimant() {
        let reserved = Observed::Taken {
            revision: 9,
            value: LeaseValue::Reserved {
                token: "me".into(),
                reserved_at: Utc::now(),
            },
        };
        assert_eq!(
            next_action(&reserved, "me", false),
            NextAction::Take { revision: 9 }
        );
        assert_eq!(
            next_action(&reserved, "someone-else", true),
            NextAction::Wait
        );
        assert_eq!(
            next_action(&Observed::Unreadable, "me", true),
            NextAction::Wait
        );
    }

    #[test]
    fn values_round_trip_in_a_readable_format() {
        let value = held("t", Some("n"));
        let text = String::from_utf8(value.encode().to_vec()).unwrap();
        assert!(text.contains("\"state\":\"held\""), "{text}");
        assert_eq!(serde_json::from_str::<LeaseValue>(&text).unwrap(), value);
    }
}
