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
//! Parking (when enabled with [`ReleaseLeases::with_parking`]): a task that completed its
//! event does not free the release; its last write keeps this replica as holder,
//! marked `parked`, and the replica keeps the record in memory. A task of this
//! replica that wants the release within `linger` of that write takes it without
//! writing (safe: nobody takes a holder over before it has been silent for a whole
//! TTL, and its first refresh comes a third of a TTL after the parking write); later
//! it takes it with one write, as a free release. So events of one release handled
//! back to back by one replica cost one write each instead of two, and an idle
//! release costs nothing: a parked release is never freed on a timer. Another replica
//! that finds it parked sends the key to the holder's `wake` subject (core NATS) and
//! the holder frees it at once (or, if a task of its own is using it, when that task
//! ends, instead of parking it again); if the holder is gone, the release is taken
//! over after a TTL like any silent holder's. Shutdown frees every parked release.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use chrono::Utc;
use futures::StreamExt;
use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::release_record::{
    next_action, Holder, NextAction, Observed, ReleaseRecord, Reservation,
};

#[derive(Debug, Clone, thiserror::Error)]
pub enum LeaseError {
    #[error("release record store unavailable: {0}")]
    Store(String),
    #[error("stopped while waiting for release {0}")]
    Cancelled(String),
    #[error("release {0} was taken over by another worker")]
    Lost(String),
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

/// Release records this replica keeps after their task ended (see the module docs).
#[derive(Clone, Default)]
struct Parking {
    /// `None`: parking is off, every task frees its release.
    settings: Option<Arc<ParkingSettings>>,
    parked: Arc<Mutex<HashMap<String, Parked>>>,
    /// Keys another replica asked for while a task of this replica held them: freed,
    /// not parked, when that task ends.
    wanted: Arc<Mutex<HashMap<String, Instant>>>,
    /// Set at shutdown: nothing is parked any more.
    closed: Arc<AtomicBool>,
    /// Ends the task that answers wake requests.
    stop: CancellationToken,
}

struct ParkingSettings {
    /// A release parked less than this long ago is reused without a write.
    linger: Duration,
    client: async_nats::Client,
    /// This replica's wake subject.
    wake: String,
}

/// A parked release: the record as last written, with this replica as holder.
struct Parked {
    token: String,
    revision: u64,
    record: ReleaseRecord,
    written_at: Instant,
}

impl Parking {
    const MAX_PARKED: usize = 10_000;

    fn take(&self, key: &str) -> Option<Parked> {
        self.parked.lock().expect("parking lock").remove(key)
    }

    /// Whether `parked` is recent enough to be reused without a write.
    fn reusable(&self, parked: &Parked) -> bool {
        self.settings
            .as_ref()
            .is_some_and(|settings| parked.written_at.elapsed() < settings.linger)
    }

    /// Parks a release. Bounded: beyond [`Parking::MAX_PARKED`] the releases parked
    /// longest ago are returned, to be freed.
    fn insert(&self, key: String, parked: Parked) -> Vec<(String, Parked)> {
        let mut map = self.parked.lock().expect("parking lock");
        map.insert(key, parked);
        let mut evicted = Vec::new();
        if map.len() > Self::MAX_PARKED {
            let mut by_age: Vec<(String, Instant)> =
                map.iter().map(|(k, p)| (k.clone(), p.written_at)).collect();
            by_age.sort_unstable_by_key(|(_, at)| *at);
            for (key, _) in by_age.into_iter().take(map.len() - Self::MAX_PARKED / 2) {
                if let Some(parked) = map.remove(&key) {
                    evicted.push((key, parked));
                }
            }
        }
        evicted
    }

    /// The wake subject to park `key` under, when a task ending on it may park it;
    /// forgets a request for it.
    fn wake_to_park(&self, key: &str) -> Option<String> {
        let wanted = self.wanted.lock().expect("parking lock").remove(key);
        let settings = self.settings.as_ref()?;
        (wanted.is_none() && !self.closed.load(Ordering::SeqCst)).then(|| settings.wake.clone())
    }
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

    /// Turns parking on (see the module docs): a release parked less than `linger`
    /// ago (at most a third of the TTL) is reused without a write, and parked releases
    /// are given up when another replica asks on this replica's wake subject, which a
    /// task started here answers. A zero `linger` leaves parking off.
    pub async fn with_parking(
        mut self,
        client: async_nats::Client,
        linger: Duration,
    ) -> Result<Self, LeaseError> {
        if linger.is_zero() {
            return Ok(self);
        }
        // The first refresh of a reused release comes a third of a TTL after the
        // parking write: reusing it later would leave it silent too long.
        let linger = linger.min(self.ttl / 3);
        let wake = format!(
            "helm-service.release-wanted.{}",
            uuid::Uuid::new_v4().simple()
        );
        let requests = client
            .subscribe(wake.clone())
            .await
            .map_err(|err| LeaseError::Store(format!("subscribing to {wake}: {err}")))?;
        self.parking.settings = Some(Arc::new(ParkingSettings {
            linger,
            client,
            wake,
        }));
        tokio::spawn(self.clone().answer_wake_requests(requests));
        Ok(self)
    }

    /// Frees every parked release and parks nothing from now on; for shutdown, so
    /// other replicas need not wait.
    pub async fn unpark_all(&self) {
        self.parking.closed.store(true, Ordering::SeqCst);
        self.parking.stop.cancel();
        let all: Vec<(String, Parked)> = self
            .parking
            .parked
            .lock()
            .expect("parking lock")
            .drain()
            .collect();
        for (key, parked) in all {
            self.free_parked(&key, parked).await;
        }
    }

    async fn answer_wake_requests(self, mut requests: async_nats::Subscriber) {
        loop {
            let request = tokio::select! {
                request = requests.next() => match request {
                    Some(request) => request,
                    None => return,
                },
                () = self.parking.stop.cancelled() => return,
            };
            let Ok(key) = std::str::from_utf8(&request.payload) else {
                continue;
            };
            match self.parking.take(key) {
                Some(parked) => {
                    debug!(%key, "another replica asked for a parked release");
                    self.free_parked(key, parked).await;
                }
                None => {
                    let mut wanted = self.parking.wanted.lock().expect("parking lock");
                    let ttl = self.ttl;
                    wanted.retain(|_, at| at.elapsed() < ttl);
                    // Anyone on NATS can send requests: keep the memory bounded. A
                    // forgotten request costs its sender one more round (it asks again
                    // while the release stays parked).
                    if wanted.len() >= Parking::MAX_PARKED {
                        wanted.clear();
                    }
                    wanted.insert(key.to_owned(), Instant::now());
                }
            }
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
        let started = Instant::now();
        let local_lock = self.local_lock(key);
        let contended_locally = local_lock.try_lock().is_err();
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
            wake: self.parking.settings.as_ref().map(|s| s.wake.clone()),
        };
        let mut parked = self.parking.take(key);
        if let Some(mut parked) = parked.take_if(|p| self.parking.reusable(p)) {
            // Parked by this replica moments ago: still ours, no write needed.
            if let Some(holder) = parked.record.holder.as_mut() {
                holder.event_id = me.event_id;
                holder.acquired_at = me.acquired_at;
                holder.parked = false;
            }
            let lease = HeldLease::start(
                self.clone(),
                key.to_owned(),
                parked.token,
                (parked.revision, parked.record),
                parked.written_at,
                local_guard,
            );
            return Ok(Acquired {
                lease,
                waited: started.elapsed(),
                contended: contended_locally,
            });
        }
        // Fast path: parked by this replica too long ago to reuse without a write, as
        // this replica handed it back, or new.
        let fast = match parked {
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
                match next_action(&guess, &me, self.ttl, false) {
                    NextAction::Take { revision, record } => Some((revision, record)),
                    _ => None,
                }
            }
        };
        let fast = match fast {
            Some((revision, record)) => self
                .write(key, &record, revision)
                .await?
                .map(|revision| (revision, record)),
            None => None,
        };
        let ((revision, record), contended) = match fast {
            Some(taken) => (taken, contended_locally),
            None => {
                let (taken, waited_for_holder) = self.wait_and_take(key, &me, cancel).await?;
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

    /// Takes the release once `next_action` allows; also says whether it had to wait
    /// for another holder (a merely stale guess of the revision is no contention).
    async fn wait_and_take(
        &self,
        key: &str,
        me: &Holder,
        cancel: &CancellationToken,
    ) -> Result<((u64, ReleaseRecord), bool), LeaseError> {
        let waiting_since = Instant::now();
        let mut waited_for_holder = false;
        let mut seen = SeenRevision::default();
        let mut observed = self.observe(key, &mut seen).await?;
        // Opened only once somebody else really holds the release: a watch is a
        // consumer on the server, too costly for a merely stale guess.
        let mut watch: Option<kv::Watch> = None;
        let mut watch_failed = false;
        let mut woken_at_revision = None;
        loop {
            self.wake_parked_holder(key, &observed, &mut woken_at_revision)
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
            waited_for_holder = true;
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

    /// Asks the replica that parked `key` to give it up.
    async fn wake_parked_holder(
        &self,
        key: &str,
        observed: &Observed,
        woken_at_revision: &mut Option<(u64, Instant)>,
    ) {
        let Some(settings) = self.parking.settings.as_ref() else {
            return;
        };
        let Some(Ok(record)) = observed.record.as_ref() else {
            return;
        };
        let Some(wake) = record
            .holder
            .as_ref()
            .filter(|holder| holder.parked)
            .and_then(|holder| holder.wake.as_ref())
        else {
            return;
        };
        // Core NATS may drop a request: ask again now and then while it stays parked.
        let asked_recently = woken_at_revision.as_ref().is_some_and(|(revision, at)| {
            *revision == observed.revision && at.elapsed() < Duration::from_secs(1)
        });
        if asked_recently || *wake == settings.wake {
            return;
        }
        *woken_at_revision = Some((observed.revision, Instant::now()));
        if let Err(err) = settings
            .client
            .publish(wake.clone(), bytes::Bytes::from(key.to_owned()))
            .await
        {
            debug!(%key, error = %err, "could not ask for a parked release; waiting for it");
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
            _local: local,
        }
    }

    /// Rewrites the record every third of the TTL, so waiters see the holder alive.
    /// Run it alongside the work (it never returns); if a write finds the release
    /// taken over, `lost()` fires and it stops writing.
    pub async fn keep_fresh(&self) -> std::convert::Infallible {
        let period = self.leases.ttl / 3;
        let first = tokio::time::Instant::from_std(self.written_at) + period;
        let mut interval = tokio::time::interval_at(first, period);
        let mut warned = false;
        loop {
            interval.tick().await;
            let mut held = self.state.lock().await;
            match write_held(&self.leases.store, &self.key, &self.token, &mut held).await {
                Ok(()) => warned = false,
                Err(LeaseError::Lost(_)) => {
                    warn!(key = %self.key, "release lost: another worker took it over");
                    self.lost.cancel();
                    drop(held);
                    return std::future::pending().await;
                }
                // Transient (NATS restarting): try again next period; the release is
                // only taken over if a whole TTL passes without a write.
                Err(err) => {
                    if !std::mem::replace(&mut warned, true) {
                        warn!(key = %self.key, error = %err, "refreshing the release failed, retrying");
                    }
                }
            }
        }
    }

    /// Fires when the release was taken over.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
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
        let wake = match self.leases.parking.wake_to_park(&self.key) {
            Some(wake) if !self.lost.is_cancelled() => wake,
            _ => return self.hand_back(change).await,
        };
        let mut state = self.state.lock().await;
        change(&mut state.1);
        let claimed = state.1.holder.as_ref().is_some_and(|h| h.next.is_some());
        if !claimed {
            if let Some(holder) = state.1.holder.as_mut() {
                holder.parked = true;
                holder.wake = Some(wake);
            }
            write_held(&self.leases.store, &self.key, &self.token, &mut state).await?;
            // A claim that landed meanwhile was adopted by the write: honour it.
            if state.1.holder.as_ref().is_some_and(|h| h.next.is_none()) {
                let (revision, record) = std::mem::take(&mut *state);
                drop(state);
                let evicted = self.leases.parking.insert(
                    self.key.clone(),
                    Parked {
                        token: self.token.clone(),
                        revision,
                        record,
                        written_at: Instant::now(),
                    },
                );
                for (key, parked) in evicted {
                    self.leases.free_parked(&key, parked).await;
                }
                return Ok(());
            }
        }
        drop(state);
        self.hand_back(|_| {}).await
    }

    /// Applies `change`, then frees the release (or hands it to a claimant) in the
    /// same write. Nothing is written if the release was lost.
    pub async fn hand_back(
        self,
        change: impl FnOnce(&mut ReleaseRecord),
    ) -> Result<(), LeaseError> {
        if self.lost.is_cancelled() {
            return Err(LeaseError::Lost(self.key.clone()));
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
                match current {
                    Some((revision, record))
                        if record.holder.as_ref().is_some_and(|h| h.token == token) =>
                    {
                        match (state.1.holder.as_mut(), record.holder) {
                            // Still holding: keep the claim for the hand-back.
                            (Some(ours), Some(theirs)) => ours.next = theirs.next,
                            // Handing back (our holder is already cleared): the claim
                            // that landed meanwhile turns into the reservation.
                            (None, Some(theirs)) => {
                                if let Some(next) = theirs.next {
                                    state.1.reserved = Some(Reservation {
                                        token: next,
                                        at: Utc::now(),
                                    });
                                }
                            }
                            _ => {}
                        }
                        state.0 = revision;
                    }
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
