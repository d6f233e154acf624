//! The release record: one JetStream KV entry per release that is at once its lease
//! (who works on it now), the progress of the events being worked on (replies
//! published, steps done), and the memory of the events completed on it.
//!
//! Keeping all three in one entry makes a task cost two writes (take, hand back) and
//! makes every write compare-and-swap on the whole state of the release. Duplicates
//! of an event always name the same release, so the release's memory of completed
//! events is where a duplicate is recognised. This module is pure: the decisions
//! about a record ([`next_action`] for a waiter, [`on_write_conflict`] for a holder)
//! are unit-tested without a server.
//!
//! One word per state of a waiter's turn: a waiter that has waited a whole TTL *claims*
//! the release ([`NextAction::Claim`] writes its token into [`Holder::next`]); when the
//! holder hands back, the claim becomes a *reservation* ([`ReleaseRecord::reserved`]),
//! which only the claimant may take.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Completed events remembered per release (besides the record's age limit).
pub const COMPLETED_MEMORY: usize = 64;
/// Interrupted events whose progress is kept per release.
pub const PROGRESS_MEMORY: usize = 16;

/// The state of one release.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    /// Who works on the release now; `None` when it is free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<Holder>,
    /// Handed over to a waiter that claimed it (see [`Holder::next`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved: Option<Reservation>,
    /// Progress of events begun and not completed, by event id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub progress: BTreeMap<String, Progress>,
    /// Events completed on this release, oldest first.
    #[serde(default, skip_serializing_if = "CompletedEvents::is_empty")]
    pub completed: CompletedEvents,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Unique per acquisition.
    pub token: String,
    /// The replica (`host/pid`), for operators.
    pub owner: String,
    /// The event being worked on, for operators.
    pub event_id: String,
    pub acquired_at: DateTime<Utc>,
    /// Token of a waiter that waited a whole TTL and gets the release next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// The holder's task is over and its replica keeps the release for a moment, for
    /// its next event on it (see the `parking` module docs); a waiter asks for it on
    /// `wake`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parked: bool,
    /// Core NATS subject on which the holder's replica gives a parked release up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub token: String,
    pub at: DateTime<Utc>,
}

/// What has been done for one event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub event_type: String,
    /// Times a replica began working on the event.
    pub attempts: u32,
    /// The `.started` event was published.
    #[serde(default)]
    pub started_published: bool,
    /// Steps completed, with the output each returned.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub steps: BTreeMap<String, StepRecord>,
    pub begun_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub output: serde_json::Value,
    pub completed_at: DateTime<Utc>,
}

/// The events completed on a release, oldest first, as fingerprints of their ids.
///
/// The record is rewritten on every take and hand-back, so this memory is kept small
/// and cheap to copy: each id is remembered as the first 8 bytes of its SHA-256 (a
/// false match would need a second preimage of 64 bits, not a chance collision), and
/// the list is written as one string of 16-hex-digit fingerprints. Records written
/// before (a list of `[id, unix seconds]` pairs) still read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompletedEvents(VecDeque<u64>);

impl CompletedEvents {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many completed events are remembered.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn contains(&self, event_id: &str) -> bool {
        self.0.contains(&fingerprint(event_id))
    }

    /// Remembers `event_id` (once), forgetting the oldest beyond [`COMPLETED_MEMORY`].
    fn insert(&mut self, event_id: &str) {
        let print = fingerprint(event_id);
        if self.0.contains(&print) {
            return;
        }
        if self.0.len() >= COMPLETED_MEMORY {
            self.0.pop_front();
        }
        self.0.push_back(print);
    }
}

fn fingerprint(event_id: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(event_id.as_bytes());
    u64::from_be_bytes(
        digest[..8]
            .try_into()
            .expect("a SHA-256 digest has 32 bytes"),
    )
}

impl Serialize for CompletedEvents {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use std::fmt::Write as _;
        let mut packed = String::with_capacity(self.0.len() * 16);
        for print in &self.0 {
            write!(packed, "{print:016x}").expect("writing to a String cannot fail");
        }
        serializer.serialize_str(&packed)
    }
}

impl<'de> Deserialize<'de> for CompletedEvents {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Packed(String),
            /// The first format: `[[id, unix seconds], ...]`.
            Pairs(Vec<(String, i64)>),
        }
        let prints = match Wire::deserialize(deserializer)? {
            Wire::Packed(packed) => {
                if packed.len() % 16 != 0 || !packed.is_ascii() {
                    return Err(serde::de::Error::custom(
                        "completed events: not a string of 16-hex-digit fingerprints",
                    ));
                }
                (0..packed.len())
                    .step_by(16)
                    .map(|at| u64::from_str_radix(&packed[at..at + 16], 16))
                    .collect::<Result<VecDeque<u64>, _>>()
                    .map_err(serde::de::Error::custom)?
            }
            Wire::Pairs(pairs) => pairs.iter().map(|(id, _)| fingerprint(id)).collect(),
        };
        Ok(CompletedEvents(prints))
    }
}

impl ReleaseRecord {
    pub fn is_completed(&self, event_id: &str) -> bool {
        self.completed.contains(event_id)
    }

    /// The progress of `event_id`, created on first use; bounded, oldest dropped.
    pub fn progress_mut(&mut self, event_id: &str, event_type: &str) -> &mut Progress {
        if !self.progress.contains_key(event_id) && self.progress.len() >= PROGRESS_MEMORY {
            let oldest = self
                .progress
                .iter()
                .min_by_key(|(_, p)| p.begun_at)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                self.progress.remove(&oldest);
            }
        }
        self.progress
            .entry(event_id.to_owned())
            .or_insert_with(|| Progress {
                event_type: event_type.to_owned(),
                begun_at: Some(Utc::now()),
                ..Progress::default()
            })
    }

    /// Marks an event completed: its progress is dropped, its id remembered.
    pub fn complete(&mut self, event_id: &str) {
        self.progress.remove(event_id);
        self.completed.insert(event_id);
    }

    /// Frees the release, or hands it to the waiter that claimed it.
    pub fn hand_back(&mut self) {
        let next = self.holder.take().and_then(|holder| holder.next);
        self.reserved = next.map(|token| Reservation {
            token,
            at: Utc::now(),
        });
    }

    pub fn encode(&self) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec(self).expect("release records serialize"))
    }
}

/// A record as a waiter sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// What a write must expect (0: the key never existed or expired).
    pub revision: u64,
    /// `None` when absent or deleted; `Err` when written by a format this version
    /// cannot read.
    pub record: Option<Result<ReleaseRecord, String>>,
    /// Time since the entry was written, by the server's clock.
    pub age: Duration,
    /// Time this waiter has seen this same revision, by its own clock: a holder that
    /// refreshes never lets it reach the TTL, whatever the clocks say.
    pub unchanged_for: Duration,
}

/// What a waiter does next.
#[derive(Debug, Clone, PartialEq)]
pub enum NextAction {
    /// Write this record (with us as holder) expecting this revision.
    Take {
        revision: u64,
        record: ReleaseRecord,
    },
    /// Write this record (the holder's, with our claim) expecting this revision.
    Claim {
        revision: u64,
        record: ReleaseRecord,
    },
    Wait,
}

/// Decides what the waiter `me` (becoming `holder` when it takes) does about
/// `observed`. `starving`: it has waited a whole TTL.
pub fn next_action(
    observed: &Observed,
    holder: &Holder,
    ttl: Duration,
    starving: bool,
) -> NextAction {
    let take = |mut record: ReleaseRecord| {
        record.reserved = None;
        record.holder = Some(holder.clone());
        NextAction::Take {
            revision: observed.revision,
            record,
        }
    };
    // A holder that stopped refreshing (crashed) is gone after one TTL: by the
    // server's timestamps, or by our own observation if clocks disagree.
    let silent = observed.age >= ttl || observed.unchanged_for >= ttl;
    match &observed.record {
        None => take(ReleaseRecord::default()),
        // Another version's record: it cannot be merged; take over once it is stale.
        Some(Err(_)) if silent => take(ReleaseRecord::default()),
        Some(Err(_)) => NextAction::Wait,
        Some(Ok(record)) => match (&record.holder, &record.reserved) {
            (None, None) => take(record.clone()),
            (None, Some(reservation)) if reservation.token == holder.token || silent => {
                take(record.clone())
            }
            (None, Some(_)) => NextAction::Wait,
            (Some(_), _) if silent => take(record.clone()),
            // Parked by this same replica (its wake subject is unique to it) and no
            // longer kept in its memory: still ours to take.
            (Some(current), _)
                if current.parked && current.wake.is_some() && current.wake == holder.wake =>
            {
                take(record.clone())
            }
            (Some(current), _) if starving && current.next.is_none() => {
                let mut claimed = record.clone();
                if let Some(current) = claimed.holder.as_mut() {
                    current.next = Some(holder.token.clone());
                }
                NextAction::Claim {
                    revision: observed.revision,
                    record: claimed,
                }
            }
            (Some(_), _) => NextAction::Wait,
        },
    }
}

/// What a holder does when its compare-and-swap write found the record changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteConflict {
    /// Still ours: write again (expecting the current revision).
    Retry,
    /// Somebody else holds the release (it was taken over) or it is gone.
    Lost,
}

/// Decides about a conflicting write of the holder `token`. `ours`: the record it
/// meant to write (its holder already cleared when handing back); `current`: the
/// record as stored now (`None`: deleted or unreadable). If `current` still names us
/// as holder, the change was a waiter adding its claim, which `ours` adopts: kept for
/// the hand-back while still holding, turned into the reservation when handing back.
pub fn on_write_conflict(
    ours: &mut ReleaseRecord,
    token: &str,
    current: Option<ReleaseRecord>,
) -> WriteConflict {
    let Some(theirs) = current
        .and_then(|current| current.holder)
        .filter(|holder| holder.token == token)
    else {
        return WriteConflict::Lost;
    };
    match ours.holder.as_mut() {
        // Still holding: keep the claim for the hand-back.
        Some(ours) => ours.next = theirs.next,
        // Handing back: the claim that landed meanwhile turns into the reservation.
        None => {
            if let Some(next) = theirs.next {
                ours.reserved = Some(Reservation {
                    token: next,
                    at: Utc::now(),
                });
            }
        }
    }
    WriteConflict::Retry
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(30);

    fn holder(token: &str) -> Holder {
        Holder {
            token: token.into(),
            owner: "host/1".into(),
            event_id: format!("event-of-{token}"),
            acquired_at: Utc::now(),
            next: None,
            parked: false,
            wake: None,
        }
    }

    fn observed(record: Option<ReleaseRecord>) -> Observed {
        Observed {
            revision: 5,
            record: record.map(Ok),
            age: Duration::from_secs(1),
            unchanged_for: Duration::ZERO,
        }
    }

    fn held_by(token: &str) -> ReleaseRecord {
        ReleaseRecord {
            holder: Some(holder(token)),
            ..ReleaseRecord::default()
        }
    }

    #[test]
    fn absent_and_free_records_are_taken_keeping_their_memory() {
        let me = holder("me");
        assert!(matches!(
            next_action(&observed(None), &me, TTL, false),
            NextAction::Take { revision: 5, .. }
        ));
        let mut free = ReleaseRecord::default();
        free.complete("old");
        let NextAction::Take { record, .. } = next_action(&observed(Some(free)), &me, TTL, false)
        else {
            panic!("free record not taken")
        };
        assert!(
            record.is_completed("old"),
            "memory of completed events is kept"
        );
        assert_eq!(record.holder.unwrap().token, "me");
    }

    #[test]
    fn a_live_holder_is_waited_for_then_claimed_once_when_starving() {
        let me = holder("me");
        let busy = observed(Some(held_by("other")));
        assert_eq!(next_action(&busy, &me, TTL, false), NextAction::Wait);
        let NextAction::Claim { record, .. } = next_action(&busy, &me, TTL, true) else {
            panic!("no claim when starving")
        };
        assert_eq!(record.holder.as_ref().unwrap().token, "other");
        assert_eq!(record.holder.as_ref().unwrap().next.as_deref(), Some("me"));
        let claimed = observed(Some(record));
        assert_eq!(
            next_action(&claimed, &holder("third"), TTL, true),
            NextAction::Wait
        );
    }

    #[test]
    fn a_silent_holder_is_taken_over_with_its_progress() {
        let me = holder("me");
        let mut record = held_by("crashed");
        record.progress_mut("e1", "t").steps.insert(
            "step-1".into(),
            StepRecord {
                output: serde_json::json!(1),
                completed_at: Utc::now(),
            },
        );
        let mut stale = observed(Some(record.clone()));
        stale.unchanged_for = TTL;
        let NextAction::Take { record: taken, .. } = next_action(&stale, &me, TTL, false) else {
            panic!("silent holder not taken over")
        };
        assert!(taken.progress["e1"].steps.contains_key("step-1"));
        let mut old_by_server_clock = observed(Some(record));
        old_by_server_clock.age = TTL;
        assert!(matches!(
            next_action(&old_by_server_clock, &me, TTL, false),
            NextAction::Take { .. }
        ));
    }

    #[test]
    fn a_reservation_is_for_its_claimant_until_it_goes_stale() {
        let mut record = held_by("holder");
        record.holder.as_mut().unwrap().next = Some("me".into());
        record.hand_back();
        assert!(record.holder.is_none());
        let reserved = observed(Some(record));
        assert!(matches!(
            next_action(&reserved, &holder("me"), TTL, false),
            NextAction::Take { .. }
        ));
        assert_eq!(
            next_action(&reserved, &holder("other"), TTL, true),
            NextAction::Wait
        );
        let mut stale = reserved.clone();
        stale.unchanged_for = TTL;
        assert!(matches!(
            next_action(&stale, &holder("other"), TTL, false),
            NextAction::Take { .. }
        ));
    }

    #[test]
    fn a_parked_record_is_free_only_for_the_replica_that_parked_it() {
        let mut parked = held_by("earlier-task");
        if let Some(h) = parked.holder.as_mut() {
            h.parked = true;
            h.wake = Some("wake.replica-a".into());
        }
        let observed = observed(Some(parked));
        let mut same_replica = holder("me");
        same_replica.wake = Some("wake.replica-a".into());
        assert!(matches!(
            next_action(&observed, &same_replica, TTL, false),
            NextAction::Take { .. }
        ));
        let mut other_replica = holder("other");
        other_replica.wake = Some("wake.replica-b".into());
        assert_eq!(
            next_action(&observed, &other_replica, TTL, false),
            NextAction::Wait
        );
        assert_eq!(
            next_action(&observed, &holder("no-parking"), TTL, false),
            NextAction::Wait
        );
    }

    #[test]
    fn a_holder_whose_write_conflicts_with_a_claim_adopts_it() {
        let mut claimed = held_by("me");
        claimed.holder.as_mut().unwrap().next = Some("waiter".into());
        let mut still_holding = held_by("me");
        still_holding.complete("e1");
        assert_eq!(
            on_write_conflict(&mut still_holding, "me", Some(claimed.clone())),
            WriteConflict::Retry
        );
        let holder = still_holding.holder.as_ref().unwrap();
        assert_eq!(holder.next.as_deref(), Some("waiter"));
        assert!(still_holding.is_completed("e1"), "our changes are kept");
        assert_eq!(still_holding.reserved, None);

        let mut handing_back = held_by("me");
        handing_back.hand_back();
        assert_eq!(
            on_write_conflict(&mut handing_back, "me", Some(claimed)),
            WriteConflict::Retry
        );
        assert_eq!(handing_back.holder, None);
        assert_eq!(handing_back.reserved.unwrap().token, "waiter");
    }

    #[test]
    fn a_holder_whose_write_conflicts_without_a_claim_writes_again_unchanged() {
        let mut handing_back = held_by("me");
        handing_back.hand_back();
        let before = handing_back.clone();
        assert_eq!(
            on_write_conflict(&mut handing_back, "me", Some(held_by("me"))),
            WriteConflict::Retry
        );
        assert_eq!(handing_back, before);
    }

    #[test]
    fn a_holder_whose_write_finds_another_holder_or_none_has_lost() {
        let mut ours = held_by("me");
        assert_eq!(
            on_write_conflict(&mut ours, "me", Some(held_by("other"))),
            WriteConflict::Lost
        );
        assert_eq!(
            on_write_conflict(&mut ours, "me", Some(ReleaseRecord::default())),
            WriteConflict::Lost
        );
        assert_eq!(
            on_write_conflict(&mut ours, "me", None),
            WriteConflict::Lost
        );
    }

    #[test]
    fn unreadable_records_are_waited_out() {
        let mut unreadable = observed(None);
        unreadable.record = Some(Err("bad".into()));
        assert_eq!(
            next_action(&unreadable, &holder("me"), TTL, false),
            NextAction::Wait
        );
        unreadable.age = TTL;
        assert!(matches!(
            next_action(&unreadable, &holder("me"), TTL, false),
            NextAction::Take { .. }
        ));
    }

    #[test]
    fn memories_are_bounded() {
        let mut record = ReleaseRecord::default();
        for i in 0..COMPLETED_MEMORY + 5 {
            record.complete(&format!("e{i}"));
        }
        assert_eq!(record.completed.0.len(), COMPLETED_MEMORY);
        assert!(!record.is_completed("e0"));
        assert!(record.is_completed(&format!("e{}", COMPLETED_MEMORY + 4)));
        for i in 0..PROGRESS_MEMORY + 3 {
            record.progress_mut(&format!("p{i}"), "t");
        }
        assert_eq!(record.progress.len(), PROGRESS_MEMORY);
        record.complete("p10");
        assert!(!record.progress.contains_key("p10"));
    }

    #[test]
    fn records_of_the_first_format_still_read() {
        let old = serde_json::json!({
            "completed": [["e1", 1_700_000_000], ["e2", 1_700_000_001]]
        });
        let record: ReleaseRecord = serde_json::from_value(old).unwrap();
        assert!(record.is_completed("e1") && record.is_completed("e2"));
        assert!(!record.is_completed("e3"));
        let packed = serde_json::to_value(&record).unwrap();
        assert_eq!(packed["completed"].as_str().unwrap().len(), 32);
        let unreadable = serde_json::json!({"completed": "xyz"});
        assert!(serde_json::from_value::<ReleaseRecord>(unreadable).is_err());
    }

    #[test]
    fn records_round_trip_as_json() {
        let mut record = held_by("me");
        record
            .progress_mut("e", "sh.keptn.event.deployment.triggered")
            .started_published = true;
        record.complete("done");
        let decoded: ReleaseRecord = serde_json::from_slice(&record.encode()).unwrap();
        assert_eq!(decoded, record);
    }
}
