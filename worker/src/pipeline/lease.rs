//! Taking, keeping and handing back release records (see [`super::release_record`]).
//!
//! Exclusion: a record is taken by a compare-and-swap write naming this task as
//! holder; the holder rewrites it every third of the TTL (so waiters see it alive)
//! and hands it back when done. A holder that stops writing for a TTL (a crashed
//! replica) is taken over, and its progress goes to whoever continues its event.
//!
//! Fairness: inside one replica, tasks for a release queue on a FIFO mutex. Across
//! replicas, a waiter watches the key and retries when it changes; a waiter that has
//! waited a whole TTL claims the release (`holder.next`), and the holder hands it to
//! the claimant instead of freeing it.
//!
//! Cost: a replica remembers the record as it handed it back, so taking a release it
//! used last, or a new one, is one write; handing back is one more.
//!
//! Parking (when enabled with [`ReleaseLeases::with_parking`], see the `parking` module):
//! a task that completed its event keeps the release for this replica's next task on
//! it, so that task takes it without a write.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use chrono::Utc;
use futures::StreamExt;
use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::parking::{AfterTask, Parked, Parking};
use super::release_record::{
    next_action, on_write_conflict, Holder, NextAction, Observed, ReleaseRecord, WriteConflict,
};

#[derive(Debug, Clone, thiserror::Error)]
pub enum LeaseError {
    #[error("release record store unavailable: {0}")]
    Store(String),
    #[error("stopped while waiting for release {0}")]
    Cancelled(String),
    #[error("release {0} was taken over by another worker")]
    Lost(String),
    /// The lease could not be refreshed for [`fence_after`] of its TTL (NATS unreachable
    /// from this replica): the task stops before anybody may take the release over.
    #[error(
        "release {0}: its lease could not be refreshed for two thirds of its TTL (NATS unreachable?); the task was stopped before another worker may take the release over"
    )]
    Fenced(String),
}

/// How long a holder goes on without a successful refresh before it stops its task: two
/// thirds of the TTL, counted from when its last successful write was sent. Nobody takes a
/// release over before it has been silent a whole TTL after that write landed, so the task
/// (and the helm it runs, killed with its process group) ends with a third of the TTL to
/// spare for stopping and for clocks that run apart.
pub fn fence_after(ttl: Duration) -> Duration {
    ttl * 2 / 3
}

/// Between failed refreshes: soon, so a NATS restart shorter than the fence costs nothing.
fn refresh_retry(ttl: Duration) -> Duration {
    (ttl / 18).max(Duration::from_millis(50))
}

/// Hands out leases on release records. One per replica; cheap to clone.
#[derive(Clone)]
pub struct ReleaseLeases {
    /// Shared: a `kv::Store` carries its stream's whole configuration, too much to copy
    /// for every held release.
    store: Arc<kv::Store>,
    ttl: Duration,
    /// Identifies this replica in records, for operators reading the bucket.
    owner: Arc<str>,
    local: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    handed_back: HandedBack,
    parking: Parking,
}

/// Records as this replica last wrote them when handing back, per key.
#[derive(Clone, Default)]
struct HandedBack(Arc<Mutex<HashMap<String, (u64, ReleaseRecord)>>>);

impl HandedBack {
    /// Bounded: cleared when large (a miss costs one round trip, nothing else).
    const MAX_KEYS: usize = 10_000;

    fn take(&self, key: &str) -> Option<(u64, ReleaseRecord)> {
        self.0.lock().expect("record cache lock").remove(key)
    }

    fn remember(&self, key: &str, revision: u64, record: ReleaseRecord) {
        let mut cache = self.0.lock().expect("record cache lock");
        if cache.len() >= Self::MAX_KEYS {
            cache.clear();
        }
        cache.insert(key.to_owned(), (revision, record));
    }
}

/// How an acquisition went, for metrics.
pub struct Acquired {
    pub lease: HeldLease,
    /// Time spent waiting; zero when the release was free.
    pub waited: Duration,
    pub contended: bool,
}

impl ReleaseLeases {
    pub fn new(store: kv::Store, ttl: Duration, owner: String) -> Self {
        ReleaseLeases {
            store: Arc::new(store),
            ttl,
            owner: owner.into(),
            local: Arc::default(),
            handed_back: HandedBack::default(),
            parking: Parking::default(),
        }
    }

    /// Turns parking on (see the `parking` module): a release parked less than `linger`
    /// ago (at most a third of the TTL) is reused without a write, and parked releases
    /// are given up when another replica asks on this replica's wake subject, which a
    /// task started here answers. A zero `linger` leaves parking off.
    pub async fn with_parking(
        mut self,
        client: async_nats::Client,
        linger: Duration,
    ) -> Result<Self, LeaseError> {
        let Some((parking, requests)) = Parking::enable(client, linger, self.ttl)
            .await
            .map_err(LeaseError::Store)?
        else {
            return Ok(self);
        };
        self.parking = parking;
        let leases = self.clone();
        tokio::spawn(
            self.parking
                .clone()
                .answer_wake_requests(requests, move |key, parked| {
                    let leases = leases.clone();
                    async move { leases.free_parked(&key, parked).await }
                }),
        );
        Ok(self)
    }

    /// Frees every parked release and parks nothing from now on; for shutdown, so
    /// other replicas need not wait.
    pub async fn free_all_parked(&self) {
        for (key, parked) in self.parking.close() {
            self.free_parked(&key, parked).await;
        }
    }

    /// Writes a parked record back free (or handed to a claimant). A conflict that is
    /// not a claim means the release was taken over meanwhile: nothing to free.
    async fn free_parked(&self, key: &str, parked: Parked) {
        let mut state = (parked.revision, parked.record);
        if let Err(err) = self.write_free(key, &parked.token, &mut state).await {
            debug!(%key, error = %err, "could not free a parked release");
        }
    }

    /// Frees the held record `state` (or hands it to a claimant) in one write and
    /// remembers it as written, for this replica's next take.
    async fn write_free(
        &self,
        key: &str,
        token: &str,
        state: &mut (u64, ReleaseRecord),
    ) -> Result<(), LeaseError> {
        state.1.hand_back();
        write_held(&self.store, key, token, state).await?;
        if state.1.reserved.is_some() {
            debug!(%key, "handed the release to the waiter that claimed it");
        }
        let (revision, record) = std::mem::take(state);
        self.handed_back.remember(key, revision, record);
        Ok(())
    }

    /// Bucket settings: one revision per key; a release's record (and with it the
    /// memory of its completed events) goes `retention` after its last change.
    pub fn bucket_config(bucket: String, retention: Duration) -> kv::Config {
        kv::Config {
            bucket,
            description: "helm-service release records: holder, event progress, completed events"
                .into(),
            history: 1,
            max_age: retention,
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        }
    }

    /// Waits until this task holds release `key`, working on `event_id`.
    pub async fn acquire(
        &self,
        key: &str,
        event_id: &str,
        cancel: &CancellationToken,
    ) -> Result<Acquired, LeaseError> {
        self.acquire_or_wait(key, event_id, cancel, &|| {}).await
    }

    /// [`acquire`](Self::acquire), calling `on_wait` when it has to wait for another task
    /// that holds the release (this replica's or another's), so the caller can give up
    /// what it holds meanwhile (its pool slot). It may be called more than once.
    pub async fn acquire_or_wait(
        &self,
        key: &str,
        event_id: &str,
        cancel: &CancellationToken,
        on_wait: &(dyn Fn() + Sync),
    ) -> Result<Acquired, LeaseError> {
        let started = Instant::now();
        let local_lock = self.local_lock(key);
        let contended_locally = local_lock.try_lock().is_err();
        if contended_locally {
            on_wait();
        }
        let local_guard = tokio::select! {
            guard = local_lock.lock_owned() => guard,
            () = cancel.cancelled() => return Err(LeaseError::Cancelled(key.to_owned())),
        };
        let me = Holder {
            token: uuid::Uuid::new_v4().to_string(),
            owner: self.owner.to_string(),
            event_id: event_id.to_owned(),
            acquired_at: Utc::now(),
            next: None,
            parked: false,
            // Marks records this replica parked (see `next_action`).
            wake: self.parking.wake().map(str::to_owned),
        };
        let mut parked = self.parking.take(key);
        if let Some(parked) = parked.take_if(|p| self.parking.reusable(p)) {
            let lease = self.reuse_parked(key, parked, &me, local_guard);
            return Ok(Acquired {
                lease,
                waited: started.elapsed(),
                contended: contended_locally,
            });
        }
        let fast = self.take_in_one_write(key, parked, &me).await?;
        let ((revision, record), contended) = match fast {
            Some(taken) => (taken, contended_locally),
            None => {
                let (taken, waited_for_holder) =
                    self.wait_and_take(key, &me, cancel, on_wait).await?;
                (taken, contended_locally || waited_for_holder)
            }
        };
        let lease = HeldLease::start(
            self.clone(),
            key.to_owned(),
            me.token,
            (revision, record),
            Instant::now(),
            local_guard,
        );
        Ok(Acquired {
            lease,
            waited: started.elapsed(),
            contended,
        })
    }

    /// A release this replica parked moments ago: still ours, taken for `me` without a
    /// write (the next refresh or step writes the new holder details).
    fn reuse_parked(
        &self,
        key: &str,
        mut parked: Parked,
        me: &Holder,
        local_guard: OwnedMutexGuard<()>,
    ) -> HeldLease {
        if let Some(holder) = parked.record.holder.as_mut() {
            holder.event_id.clone_from(&me.event_id);
            holder.acquired_at = me.acquired_at;
            holder.parked = false;
        }
        HeldLease::start(
            self.clone(),
            key.to_owned(),
            parked.token,
            (parked.revision, parked.record),
            parked.written_at,
            local_guard,
        )
    }

    /// The fast path: one write taking a release this replica parked too long ago to reuse
    /// without a write, handed back itself, or that is new, from what this replica knows of
    /// it. `None` when that is not enough (somebody else wrote since, or holds it).
    async fn take_in_one_write(
        &self,
        key: &str,
        parked: Option<Parked>,
        me: &Holder,
    ) -> Result<Option<(u64, ReleaseRecord)>, LeaseError> {
        let guess = match parked {
            Some(Parked {
                revision,
                mut record,
                ..
            }) => {
                record.reserved = None;
                record.holder = Some(me.clone());
                Some((revision, record))
            }
            None => {
                let (revision, known) = self.handed_back.take(key).unwrap_or_default();
                let guess = Observed {
                    revision,
                    record: (revision > 0).then_some(Ok(known)),
                    age: Duration::ZERO,
                    unchanged_for: Duration::ZERO,
                };
                match next_action(&guess, me, self.ttl, false) {
                    NextAction::Take { revision, record } => Some((revision, record)),
                    _ => None,
                }
            }
        };
        let Some((revision, record)) = guess else {
            return Ok(None);
        };
        Ok(self
            .write(key, &record, revision)
            .await?
            .map(|revision| (revision, record)))
    }

    /// Takes the release once `next_action` allows; also says whether it had to wait
    /// for another holder (a merely stale guess of the revision is no contention).
    async fn wait_and_take(
        &self,
        key: &str,
        me: &Holder,
        cancel: &CancellationToken,
        on_wait: &(dyn Fn() + Sync),
    ) -> Result<((u64, ReleaseRecord), bool), LeaseError> {
        let waiting_since = Instant::now();
        let mut waited_for_holder = false;
        let mut seen = SeenRevision::default();
        let mut observed = self.observe(key, &mut seen).await?;
        // Opened only once somebody else really holds the release: a watch is a
        // consumer on the server, too costly for a merely stale guess.
        let mut watch: Option<kv::Watch> = None;
        let mut watch_failed = false;
        let mut last_asked = None;
        loop {
            self.parking
                .ask_to_free(key, &observed, &mut last_asked)
                .await;
            let starving = waiting_since.elapsed() >= self.ttl;
            match next_action(&observed, me, self.ttl, starving) {
                NextAction::Take { revision, record } => {
                    if let Some(taken) = self.write(key, &record, revision).await? {
                        if observed
                            .record
                            .as_ref()
                            .is_some_and(|r| r.as_ref().is_ok_and(|r| r.holder.is_some()))
                        {
                            warn!(%key, "took over a release whose holder stopped refreshing it");
                        }
                        return Ok(((taken, record), waited_for_holder));
                    }
                    observed = self.observe(key, &mut seen).await?;
                    continue;
                }
                NextAction::Claim { revision, record } => {
                    if self.write(key, &record, revision).await?.is_some() {
                        info!(%key, waited = ?waiting_since.elapsed(), "claimed the release as next holder");
                    }
                }
                NextAction::Wait => {}
            }
            if !waited_for_holder {
                waited_for_holder = true;
                on_wait();
            }
            if watch.is_none() && !watch_failed {
                match self.store.watch(key).await {
                    Ok(opened) => {
                        watch = Some(opened);
                        // Look again: a change before the watch began would be missed.
                        observed = self.observe(key, &mut seen).await?;
                        continue;
                    }
                    Err(err) => {
                        warn!(%key, error = %err, "cannot watch the release; polling instead");
                        watch_failed = true;
                    }
                }
            }
            // A crashed holder leaves nothing to watch, and starving needs a clock:
            // look again at least this often (often, when polling).
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
                    Some(Ok(_)) => self.observe(key, &mut seen).await?,
                    Some(Err(err)) => return Err(LeaseError::Store(err.to_string())),
                    None => return Err(LeaseError::Store(format!("watch of release {key} ended"))),
                },
                () = tokio::time::sleep(recheck) => self.observe(key, &mut seen).await?,
                () = cancel.cancelled() => return Err(LeaseError::Cancelled(key.to_owned())),
            };
        }
    }

    async fn observe(&self, key: &str, seen: &mut SeenRevision) -> Result<Observed, LeaseError> {
        let entry = self
            .store
            .entry(key)
            .await
            .map_err(|err| LeaseError::Store(err.to_string()))?;
        Ok(match entry {
            None => Observed {
                revision: 0,
                record: None,
                age: Duration::ZERO,
                unchanged_for: seen.unchanged_for(0),
            },
            Some(entry) => {
                let written_ns = entry.created.unix_timestamp_nanos();
                let now_ns = i128::from(Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX));
                let age = Duration::from_nanos(u64::try_from(now_ns - written_ns).unwrap_or(0));
                let record = (entry.operation == kv::Operation::Put).then(|| {
                    serde_json::from_slice::<ReleaseRecord>(&entry.value)
                        .map_err(|err| err.to_string())
                });
                Observed {
                    revision: entry.revision,
                    record,
                    age,
                    unchanged_for: seen.unchanged_for(entry.revision),
                }
            }
        })
    }

    /// Writes `record` expecting `revision`: the new revision, or `None` when
    /// somebody else wrote first.
    async fn write(
        &self,
        key: &str,
        record: &ReleaseRecord,
        revision: u64,
    ) -> Result<Option<u64>, LeaseError> {
        match self.store.update(key, record.encode(), revision).await {
            Ok(revision) => Ok(Some(revision)),
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(err) => Err(LeaseError::Store(err.to_string())),
        }
    }

    fn local_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut local = self.local.lock().expect("release lock map");
        // Forget locks nobody holds or waits for (holders and waiters own a clone),
        // so the map stays as small as the set of busy releases.
        local.retain(|_, lock| Arc::strong_count(lock) > 1);
        local.entry(key.to_owned()).or_default().clone()
    }
}

/// How long a waiter has seen the same revision, by its own clock.
#[derive(Default)]
struct SeenRevision {
    revision: Option<u64>,
    since: Option<Instant>,
}

impl SeenRevision {
    fn unchanged_for(&mut self, revision: u64) -> Duration {
        if self.revision != Some(revision) {
            self.revision = Some(revision);
            self.since = Some(Instant::now());
        }
        self.since.map(|since| since.elapsed()).unwrap_or_default()
    }
}

/// The revision to expect and the record to write next.
type HeldState = Arc<tokio::sync::Mutex<(u64, ReleaseRecord)>>;

/// A held release, until handed back. [`HeldLease::keep_fresh`] must run alongside
/// the work; `lost()` fires if a write finds somebody else holding it (this replica
/// stalled past the TTL), and the task must then stop.
pub struct HeldLease {
    leases: ReleaseLeases,
    key: String,
    token: String,
    state: HeldState,
    written_at: Instant,
    lost: CancellationToken,
    /// Set with `lost` when the lease was fenced rather than taken over.
    fenced: AtomicBool,
    _local: OwnedMutexGuard<()>,
}

impl HeldLease {
    /// `written_at`: when the record was last written, which the first refresh
    /// counts from.
    fn start(
        leases: ReleaseLeases,
        key: String,
        token: String,
        state: (u64, ReleaseRecord),
        written_at: Instant,
        local: OwnedMutexGuard<()>,
    ) -> HeldLease {
        HeldLease {
            leases,
            key,
            token,
            state: Arc::new(tokio::sync::Mutex::new(state)),
            written_at,
            lost: CancellationToken::new(),
            fenced: AtomicBool::new(false),
            _local: local,
        }
    }

    /// Rewrites the record every third of the TTL, so waiters see the holder alive.
    /// Run it alongside the work (it never returns). If a write finds the release taken
    /// over, or no write has succeeded for [`fence_after`] of the TTL, `lost()` fires and
    /// it stops writing. A failed write is retried soon, not a period later.
    pub async fn keep_fresh(&self) -> std::convert::Infallible {
        let ttl = self.leases.ttl;
        let period = ttl / 3;
        let mut last_sent = tokio::time::Instant::from_std(self.written_at);
        let mut next_write = last_sent + period;
        let mut warned = false;
        loop {
            let fence_at = last_sent + fence_after(ttl);
            // One timer while all is well (the next refresh is due before the fence); a
            // task shorter than a third of the TTL never sets another.
            tokio::time::sleep_until(next_write.min(fence_at)).await;
            let attempt = async {
                let mut held = self.state.lock().await;
                let sent = tokio::time::Instant::now();
                write_held(&self.leases.store, &self.key, &self.token, &mut held)
                    .await
                    .map(|()| sent)
            };
            match tokio::time::timeout_at(fence_at, attempt).await {
                Ok(Ok(sent)) => {
                    warned = false;
                    last_sent = sent;
                    next_write = sent + period;
                }
                Ok(Err(LeaseError::Lost(_))) => {
                    warn!(key = %self.key, "release lost: another worker took it over");
                    self.lost.cancel();
                    return std::future::pending().await;
                }
                // Transient (NATS restarting): try again soon; the fence decides when
                // it has been too long.
                Ok(Err(err)) => {
                    if !std::mem::replace(&mut warned, true) {
                        warn!(key = %self.key, error = %err, "refreshing the release failed, retrying");
                    }
                    next_write = tokio::time::Instant::now() + refresh_retry(ttl);
                }
                Err(_fence) => {
                    warn!(key = %self.key, since_last_refresh = ?last_sent.elapsed(), "could not refresh the release lease for two thirds of its TTL: stopping the task before another worker may take the release over");
                    self.fenced.store(true, Ordering::SeqCst);
                    self.lost.cancel();
                    return std::future::pending().await;
                }
            }
        }
    }

    /// Fires when the release was taken over.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Runs `work` while holding the release: the record is kept fresh alongside it, and
    /// the work is stopped (`LeaseError::Lost`) when the release is taken over, since
    /// somebody else may then be doing the same work.
    pub async fn hold_while<T>(&self, work: impl Future<Output = T>) -> Result<T, LeaseError> {
        let lost = self.lost();
        tokio::select! {
            result = work => Ok(result),
            never = self.keep_fresh() => match never {},
            () = lost.cancelled() => Err(self.lost_error()),
        }
    }

    /// Why `lost()` fired: fenced (this replica could not refresh) or taken over.
    fn lost_error(&self) -> LeaseError {
        if self.fenced.load(Ordering::SeqCst) {
            LeaseError::Fenced(self.key.clone())
        } else {
            LeaseError::Lost(self.key.clone())
        }
    }

    /// Reads the record as held.
    pub async fn read<R>(&self, look: impl FnOnce(&ReleaseRecord) -> R) -> R {
        look(&self.state.lock().await.1)
    }

    /// Changes the record in memory only; the next write (a step, a refresh, the
    /// hand-back) persists it.
    pub async fn change(&self, change: impl FnOnce(&mut ReleaseRecord)) {
        change(&mut self.state.lock().await.1);
    }

    /// Changes the record and writes it.
    pub async fn save(&self, change: impl FnOnce(&mut ReleaseRecord)) -> Result<(), LeaseError> {
        let mut state = self.state.lock().await;
        change(&mut state.1);
        write_held(&self.leases.store, &self.key, &self.token, &mut state).await
    }

    /// Applies `change` and writes it, keeping the release parked for this replica's
    /// next task on it when parking is on and nobody else asked for it; otherwise the
    /// same as [`HeldLease::hand_back`].
    pub async fn park(self, change: impl FnOnce(&mut ReleaseRecord)) -> Result<(), LeaseError> {
        let mut state = self.state.lock().await;
        change(&mut state.1);
        let claimed = state.1.holder.as_ref().is_some_and(|h| h.next.is_some());
        let parking = &self.leases.parking;
        let AfterTask::Park { wake } =
            parking.after_task(&self.key, self.lost.is_cancelled(), claimed)
        else {
            drop(state);
            return self.hand_back(|_| {}).await;
        };
        if let Some(holder) = state.1.holder.as_mut() {
            holder.parked = true;
            holder.wake = Some(wake);
        }
        write_held(&self.leases.store, &self.key, &self.token, &mut state).await?;
        // A claim that landed meanwhile was adopted by the write: honour it.
        if state.1.holder.as_ref().is_none_or(|h| h.next.is_some()) {
            drop(state);
            return self.hand_back(|_| {}).await;
        }
        let (revision, record) = std::mem::take(&mut *state);
        drop(state);
        let parked = Parked {
            token: self.token.clone(),
            revision,
            record,
            written_at: Instant::now(),
        };
        for (key, parked) in parking.park(self.key.clone(), parked) {
            self.leases.free_parked(&key, parked).await;
        }
        Ok(())
    }

    /// Hands the release back unchanged after work that did not complete (its progress
    /// stays in the record for the next attempt). A failure is only logged: the release is
    /// then taken over once its TTL passes.
    pub async fn hand_back_unchanged(self) {
        let key = self.key.clone();
        if let Err(err) = self.hand_back(|_| {}).await {
            warn!(release = %key, error = %err, "could not hand the release back; it is taken over after its TTL");
        }
    }

    /// Applies `change`, then frees the release (or hands it to a claimant) in the
    /// same write. Nothing is written if the release was lost or fenced: a fenced holder
    /// leaves the release to run out its TTL, which is the time its stopped helm gets to
    /// be gone before anybody else works on the release.
    pub async fn hand_back(
        self,
        change: impl FnOnce(&mut ReleaseRecord),
    ) -> Result<(), LeaseError> {
        if self.lost.is_cancelled() {
            return Err(self.lost_error());
        }
        let mut state = self.state.lock().await;
        change(&mut state.1);
        self.leases
            .write_free(&self.key, &self.token, &mut state)
            .await
    }
}

/// Writes the held record. A conflict means a waiter added its claim (adopted, and
/// the write retried) or somebody took the release over (lost).
async fn write_held(
    store: &kv::Store,
    key: &str,
    token: &str,
    state: &mut (u64, ReleaseRecord),
) -> Result<(), LeaseError> {
    for _ in 0..4 {
        match store.update(key, state.1.encode(), state.0).await {
            Ok(revision) => {
                state.0 = revision;
                return Ok(());
            }
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                let entry = store
                    .entry(key)
                    .await
                    .map_err(|err| LeaseError::Store(err.to_string()))?;
                let current = entry
                    .filter(|e| e.operation == kv::Operation::Put)
                    .and_then(|e| {
                        let record = serde_json::from_slice::<ReleaseRecord>(&e.value).ok()?;
                        Some((e.revision, record))
                    });
                let (revision, record) = current.unzip();
                match (on_write_conflict(&mut state.1, token, record), revision) {
                    (WriteConflict::Retry, Some(revision)) => state.0 = revision,
                    _ => return Err(LeaseError::Lost(key.to_owned())),
                }
            }
            Err(err) => return Err(LeaseError::Store(err.to_string())),
        }
    }
    Err(LeaseError::Store(format!(
        "release {key}: writes keep conflicting"
    )))
}
