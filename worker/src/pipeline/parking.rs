//! Parking release records between tasks of one replica (see [`super::lease`]).
//!
//! A task that completed its event does not free the release; its last write keeps
//! this replica as holder, marked `parked`, and the replica keeps the record in
//! memory. A task of this replica that wants the release within `linger` of that
//! write takes it without writing (safe: nobody takes a holder over before it has been
//! silent for a whole TTL, and its first refresh comes a third of a TTL after the
//! parking write); later it takes it with one write, as a free release. So events of
//! one release handled back to back by one replica cost one write each instead of two,
//! and an idle release costs nothing: a parked release is never freed on a timer.
//! Another replica that finds it parked sends the key to the holder's `wake` subject
//! (core NATS) and the holder frees it at once (or, if a task of its own is using it,
//! when that task ends, instead of parking it again); if the holder is gone, the
//! release is taken over after a TTL like any silent holder's. Shutdown frees every
//! parked release.
//!
//! The decisions ([`linger_of`], [`reusable`], [`after_task`], [`evict_oldest`],
//! [`remember_wanted`], [`wake_to_ask`]) are pure and unit-tested; [`Parking`] holds
//! the state and does the NATS I/O. Writing records is the lease's: parked records to
//! free are handed to it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::release_record::{Observed, ReleaseRecord};

/// Bound of the parked records, and of the remembered wake requests.
const MAX_PARKED: usize = 10_000;
/// Core NATS may drop a wake request: a waiter asks again this long after, while the
/// release stays parked at the same revision.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(1);

/// A parked release record: as last written, with this replica as holder.
pub(super) struct Parked {
    pub token: String,
    pub revision: u64,
    pub record: ReleaseRecord,
    pub written_at: Instant,
}

/// How long a parked record is reused without a write; `None`: parking is off.
/// The first refresh of a reused release comes a third of a TTL after the parking
/// write: reusing it later would leave it silent too long.
pub(super) fn linger_of(linger: Duration, ttl: Duration) -> Option<Duration> {
    (!linger.is_zero()).then(|| linger.min(ttl / 3))
}

/// Whether a record parked `parked_for` ago is still this replica's to reuse without a
/// write.
pub(super) fn reusable(parked_for: Duration, linger: Option<Duration>) -> bool {
    linger.is_some_and(|linger| parked_for < linger)
}

/// Facts about a task ending on its release.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TaskEnd {
    /// Another replica asked for the release while the task held it.
    pub wanted: bool,
    /// Shutting down: nothing is parked any more.
    pub closed: bool,
    /// The release was taken over.
    pub lost: bool,
    /// A waiter claimed the release as next holder.
    pub claimed: bool,
}

/// What becomes of a release when its task ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AfterTask {
    /// Kept for this replica, marked parked under its wake subject.
    Park { wake: String },
    /// Freed, or handed to the claimant (or, when lost, nothing is written).
    Free,
}

/// Parks only when parking is on (`wake`: this replica's wake subject) and nobody
/// else has a say: no other replica asked for it, no waiter claimed it, it was not
/// lost and the replica is not shutting down.
pub(super) fn after_task(wake: Option<&str>, end: TaskEnd) -> AfterTask {
    match wake {
        Some(wake) if !(end.wanted || end.closed || end.lost || end.claimed) => AfterTask::Park {
            wake: wake.to_owned(),
        },
        _ => AfterTask::Free,
    }
}

/// Bounds the parked records: beyond `max`, the ones parked longest ago are removed
/// (down to half of `max`) and returned, to be freed.
pub(super) fn evict_oldest(
    parked: &mut HashMap<String, Parked>,
    max: usize,
) -> Vec<(String, Parked)> {
    if parked.len() <= max {
        return Vec::new();
    }
    let mut by_age: Vec<(String, Instant)> = parked
        .iter()
        .map(|(key, p)| (key.clone(), p.written_at))
        .collect();
    by_age.sort_unstable_by_key(|(_, at)| *at);
    let excess = parked.len() - max / 2;
    by_age
        .into_iter()
        .take(excess)
        .filter_map(|(key, _)| parked.remove(&key).map(|p| (key, p)))
        .collect()
}

/// Remembers that another replica asked for `key` (not parked now: a task of this
/// replica holds it), forgetting requests older than `ttl`. Anyone on NATS can send
/// requests, so the memory is bounded by `max`: a forgotten request costs its sender
/// one more round (it asks again while the release stays parked).
pub(super) fn remember_wanted(
    wanted: &mut HashMap<String, Instant>,
    key: &str,
    now: Instant,
    ttl: Duration,
    max: usize,
) {
    wanted.retain(|_, at| now.saturating_duration_since(*at) < ttl);
    if wanted.len() >= max {
        wanted.clear();
    }
    wanted.insert(key.to_owned(), now);
}

/// The wake subject a waiter asks the holder of `observed` on, if the record is
/// parked by another replica and the waiter did not ask about this revision within
/// [`ASK_AGAIN_AFTER`] (`last_asked`: revision and time of its last request).
pub(super) fn wake_to_ask<'a>(
    observed: &'a Observed,
    own_wake: &str,
    last_asked: Option<(u64, Instant)>,
    now: Instant,
) -> Option<&'a str> {
    let Some(Ok(record)) = observed.record.as_ref() else {
        return None;
    };
    let wake = record
        .holder
        .as_ref()
        .filter(|holder| holder.parked)
        .and_then(|holder| holder.wake.as_deref())?;
    let asked_recently = last_asked.is_some_and(|(revision, at)| {
        revision == observed.revision && now.saturating_duration_since(at) < ASK_AGAIN_AFTER
    });
    (!asked_recently && wake != own_wake).then_some(wake)
}

/// Releases this replica keeps after their task ended. Cheap to clone; off by default.
#[derive(Clone, Default)]
pub(super) struct Parking {
    /// `None`: parking is off, every task frees its release.
    settings: Option<Arc<ParkingSettings>>,
    state: Arc<Mutex<ParkingState>>,
    /// Set at shutdown: nothing is parked any more.
    closed: Arc<AtomicBool>,
    /// Ends the task that answers wake requests.
    stop: CancellationToken,
}

struct ParkingSettings {
    /// A release parked less than this long ago is reused without a write.
    linger: Duration,
    /// How long a wake request for a busy release is remembered.
    ttl: Duration,
    client: async_nats::Client,
    /// This replica's wake subject.
    wake: String,
}

#[derive(Default)]
struct ParkingState {
    parked: HashMap<String, Parked>,
    /// Keys another replica asked for while a task of this replica held them: freed,
    /// not parked, when that task ends.
    wanted: HashMap<String, Instant>,
}

impl Parking {
    /// Parking with a fresh wake subject of this replica (see [`linger_of`]; `None`
    /// when `linger` is zero), and the wake requests to answer with
    /// [`Parking::answer_wake_requests`].
    pub async fn enable(
        client: async_nats::Client,
        linger: Duration,
        ttl: Duration,
    ) -> Result<Option<(Parking, async_nats::Subscriber)>, String> {
        let Some(linger) = linger_of(linger, ttl) else {
            return Ok(None);
        };
        let wake = format!(
            "helm-service.release-wanted.{}",
            uuid::Uuid::new_v4().simple()
        );
        let requests = client
            .subscribe(wake.clone())
            .await
            .map_err(|err| format!("subscribing to {wake}: {err}"))?;
        let parking = Parking {
            settings: Some(Arc::new(ParkingSettings {
                linger,
                ttl,
                client,
                wake,
            })),
            ..Parking::default()
        };
        Ok(Some((parking, requests)))
    }

    /// This replica's wake subject, when parking is on.
    pub fn wake(&self) -> Option<&str> {
        self.settings
            .as_ref()
            .map(|settings| settings.wake.as_str())
    }

    /// Removes the record parked under `key`.
    pub fn take(&self, key: &str) -> Option<Parked> {
        self.lock().parked.remove(key)
    }

    /// Whether `parked` is recent enough to be reused without a write.
    pub fn reusable(&self, parked: &Parked) -> bool {
        reusable(
            parked.written_at.elapsed(),
            self.settings.as_ref().map(|settings| settings.linger),
        )
    }

    /// What becomes of the release `key` whose task ends (see [`after_task`]); a
    /// request for it is forgotten either way.
    pub fn after_task(&self, key: &str, lost: bool, claimed: bool) -> AfterTask {
        let wanted = self.lock().wanted.remove(key).is_some();
        let end = TaskEnd {
            wanted,
            closed: self.closed.load(Ordering::SeqCst),
            lost,
            claimed,
        };
        after_task(self.wake(), end)
    }

    /// Parks a record; returns the records evicted to stay bounded, to be freed.
    pub fn park(&self, key: String, parked: Parked) -> Vec<(String, Parked)> {
        let mut state = self.lock();
        state.parked.insert(key, parked);
        evict_oldest(&mut state.parked, MAX_PARKED)
    }

    /// Parks nothing from now on, stops answering wake requests and returns every
    /// parked record, to be freed.
    pub fn close(&self) -> Vec<(String, Parked)> {
        self.closed.store(true, Ordering::SeqCst);
        self.stop.cancel();
        self.lock().parked.drain().collect()
    }

    /// Answers the wake requests of other replicas until [`Parking::close`]: a parked
    /// release is handed to `free` at once; one a task of this replica holds is
    /// remembered as wanted, so that task frees it instead of parking it.
    pub async fn answer_wake_requests<F, Fut>(self, mut requests: async_nats::Subscriber, free: F)
    where
        F: Fn(String, Parked) -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            let request = tokio::select! {
                request = requests.next() => match request {
                    Some(request) => request,
                    None => return,
                },
                () = self.stop.cancelled() => return,
            };
            let Ok(key) = std::str::from_utf8(&request.payload) else {
                continue;
            };
            match self.take(key) {
                Some(parked) => {
                    debug!(%key, "another replica asked for a parked release");
                    free(key.to_owned(), parked).await;
                }
                None => {
                    let ttl = self.settings.as_ref().map_or(Duration::ZERO, |s| s.ttl);
                    let mut state = self.lock();
                    remember_wanted(&mut state.wanted, key, Instant::now(), ttl, MAX_PARKED);
                }
            }
        }
    }

    /// Asks the replica that parked the `observed` record of `key` to give it up (see
    /// [`wake_to_ask`]); `last_asked` remembers the request.
    pub async fn ask_to_free(
        &self,
        key: &str,
        observed: &Observed,
        last_asked: &mut Option<(u64, Instant)>,
    ) {
        let Some(settings) = self.settings.as_ref() else {
            return;
        };
        let now = Instant::now();
        let Some(wake) = wake_to_ask(observed, &settings.wake, *last_asked, now) else {
            return;
        };
        *last_asked = Some((observed.revision, now));
        if let Err(err) = settings
            .client
            .publish(wake.to_owned(), bytes::Bytes::from(key.to_owned()))
            .await
        {
            debug!(%key, error = %err, "could not ask for a parked release; waiting for it");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ParkingState> {
        self.state.lock().expect("parking lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::release_record::Holder;

    const TTL: Duration = Duration::from_secs(30);

    #[test]
    fn linger_is_off_at_zero_and_at_most_a_third_of_the_ttl() {
        assert_eq!(linger_of(Duration::ZERO, TTL), None);
        assert_eq!(
            linger_of(Duration::from_secs(2), TTL),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            linger_of(Duration::from_secs(60), TTL),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn a_parked_record_is_reused_only_within_the_linger() {
        let linger = Some(Duration::from_secs(2));
        assert!(reusable(Duration::from_millis(1999), linger));
        assert!(!reusable(Duration::from_secs(2), linger));
        assert!(!reusable(Duration::ZERO, None), "parking off");
    }

    #[test]
    fn a_task_parks_its_release_only_when_nobody_else_has_a_say() {
        let wake = Some("wake.a");
        let parks = AfterTask::Park {
            wake: "wake.a".into(),
        };
        assert_eq!(after_task(wake, TaskEnd::default()), parks);
        assert_eq!(after_task(None, TaskEnd::default()), AfterTask::Free);
        let each: [fn(&mut TaskEnd); 4] = [
            |end| end.wanted = true,
            |end| end.closed = true,
            |end| end.lost = true,
            |end| end.claimed = true,
        ];
        for set in each {
            let mut end = TaskEnd::default();
            set(&mut end);
            assert_eq!(after_task(wake, end), AfterTask::Free, "{end:?}");
        }
    }

    fn parked_at(written_at: Instant) -> Parked {
        Parked {
            token: "t".into(),
            revision: 1,
            record: ReleaseRecord::default(),
            written_at,
        }
    }

    #[test]
    fn a_full_parking_evicts_the_records_parked_longest_ago() {
        let start = Instant::now();
        let mut parked: HashMap<String, Parked> = (0..4u64)
            .map(|i| (format!("k{i}"), parked_at(start + Duration::from_secs(i))))
            .collect();
        assert!(
            evict_oldest(&mut parked, 4).is_empty(),
            "not over the bound"
        );
        parked.insert("k4".into(), parked_at(start + Duration::from_secs(4)));
        let mut evicted: Vec<String> = evict_oldest(&mut parked, 4)
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        evicted.sort();
        assert_eq!(evicted, ["k0", "k1", "k2"]);
        let mut kept: Vec<&String> = parked.keys().collect();
        kept.sort();
        assert_eq!(kept, ["k3", "k4"]);
    }

    #[test]
    fn wake_requests_for_busy_releases_are_remembered_for_a_ttl_and_bounded() {
        let start = Instant::now();
        let mut wanted = HashMap::new();
        remember_wanted(&mut wanted, "a", start, TTL, 3);
        remember_wanted(&mut wanted, "b", start + TTL / 2, TTL, 3);
        remember_wanted(&mut wanted, "c", start + TTL, TTL, 3);
        assert!(!wanted.contains_key("a"), "older than a TTL: forgotten");
        assert!(wanted.contains_key("b") && wanted.contains_key("c"));
        remember_wanted(&mut wanted, "d", start + TTL, TTL, 3);
        remember_wanted(&mut wanted, "e", start + TTL, TTL, 3);
        assert_eq!(
            wanted.keys().collect::<Vec<_>>(),
            ["e"],
            "cleared when full"
        );
    }

    fn parked_record(wake: &str) -> Observed {
        let record = ReleaseRecord {
            holder: Some(Holder {
                token: "holder".into(),
                owner: "host/1".into(),
                event_id: "e".into(),
                acquired_at: chrono::Utc::now(),
                next: None,
                parked: true,
                wake: Some(wake.into()),
            }),
            ..ReleaseRecord::default()
        };
        Observed {
            revision: 7,
            record: Some(Ok(record)),
            age: Duration::ZERO,
            unchanged_for: Duration::ZERO,
        }
    }

    #[test]
    fn a_waiter_asks_another_replica_for_a_parked_record_again_only_after_a_while() {
        let now = Instant::now();
        let observed = parked_record("wake.a");
        assert_eq!(wake_to_ask(&observed, "wake.b", None, now), Some("wake.a"));
        assert_eq!(
            wake_to_ask(&observed, "wake.a", None, now),
            None,
            "its own wake subject"
        );
        let just_asked = Some((7, now));
        let later = now + ASK_AGAIN_AFTER;
        assert_eq!(wake_to_ask(&observed, "wake.b", just_asked, now), None);
        assert_eq!(
            wake_to_ask(&observed, "wake.b", just_asked, later),
            Some("wake.a")
        );
        assert_eq!(
            wake_to_ask(&observed, "wake.b", Some((6, now)), now),
            Some("wake.a"),
            "a new revision is asked about at once"
        );
    }

    #[test]
    fn a_waiter_asks_nobody_about_records_that_are_not_parked() {
        let now = Instant::now();
        let mut busy = parked_record("wake.a");
        if let Some(Ok(record)) = busy.record.as_mut() {
            record.holder.as_mut().unwrap().parked = false;
        }
        assert_eq!(wake_to_ask(&busy, "wake.b", None, now), None);
        let mut unreadable = parked_record("wake.a");
        unreadable.record = Some(Err("bad".into()));
        assert_eq!(wake_to_ask(&unreadable, "wake.b", None, now), None);
        let mut absent = parked_record("wake.a");
        absent.record = None;
        assert_eq!(wake_to_ask(&absent, "wake.b", None, now), None);
    }
}
