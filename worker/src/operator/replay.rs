//! Pure decisions of `helm-service dead-letters replay`: which replay this is, its event id,
//! the event sent, and the mark that remembers it.
//!
//! A replay republishes the original event under a new id, so the worker runs it as a new
//! task: the old id cannot be reused, because a task given up after `--max-deliveries` was
//! answered (errored) and is recorded completed in its release record, where a redelivery of
//! it is suppressed as a duplicate. The new id is UUID v5 of the old id and the replay's
//! number, and it is published with `Nats-Msg-Id` = that id: a replay repeated (the command
//! run twice at once, or again after it crashed before marking the letter) sends the same id,
//! which the stream's duplicate window drops and the release record recognises. The event
//! names the one it replays in the `replayof` extension; `shkeptncontext` and the trace
//! context stay, so Keptn sees it in the same sequence.

use chrono::{DateTime, Utc};
use contracts::envelope::KeptnEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Namespace of replay ids. Fixed forever: a replay repeated after an upgrade must get the
/// same id.
pub const REPLAY_ID_NAMESPACE: Uuid = Uuid::from_u128(0x7b2e_41c0_9d3a_4f5e_8c61_0a9d_52f3_e7b4);

/// Event ids a mark keeps (the latest), so a mark stays small however often it is forced.
pub const MARK_EVENT_IDS: usize = 16;

/// The id of replay number `replay` (1, 2, ...) of event `original_id`: UUID v5 of
/// `"{original_id}/replay/{replay}"` in [`REPLAY_ID_NAMESPACE`].
pub fn replay_id(original_id: &str, replay: u32) -> String {
    Uuid::new_v5(
        &REPLAY_ID_NAMESPACE,
        format!("{original_id}/replay/{replay}").as_bytes(),
    )
    .to_string()
}

/// What is remembered of a dead letter's replays (JSON in the `<prefix>-dlq-replays` bucket,
/// keyed by the letter's sequence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayMark {
    /// How often it was replayed.
    pub replays: u32,
    /// The ids of the events sent, oldest first (the latest [`MARK_EVENT_IDS`]).
    pub event_ids: Vec<String>,
    pub last_replayed_at: DateTime<Utc>,
}

impl ReplayMark {
    /// The mark after a replay that sent `event_id`.
    pub fn after(previous: Option<&ReplayMark>, event_id: String, at: DateTime<Utc>) -> Self {
        let mut event_ids = previous.map(|m| m.event_ids.clone()).unwrap_or_default();
        event_ids.push(event_id);
        let excess = event_ids.len().saturating_sub(MARK_EVENT_IDS);
        event_ids.drain(..excess);
        ReplayMark {
            replays: previous.map_or(0, |m| m.replays) + 1,
            event_ids,
            last_replayed_at: at,
        }
    }

    /// The id of the last event sent.
    pub fn last_event_id(&self) -> &str {
        self.event_ids.last().map_or("", String::as_str)
    }
}

/// Why a dead letter is not replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "replayed already ({replays} time(s), last as event {last_event_id} at {at}); \
         --force replays it again"
    )]
    AlreadyReplayed {
        replays: u32,
        last_event_id: String,
        at: DateTime<Utc>,
    },
    #[error("its payload is not a CloudEvent ({0}): replaying it would only dead-letter it again")]
    NotAnEvent(String),
    #[error(
        "its data names a member twice: sending it again would keep one of them silently; \
         correct the event and send it with `helm-service send`"
    )]
    MemberTwice,
    #[error(
        "it came on subject {subject}, not on its type {event_type}: replaying it would only \
         dead-letter it again"
    )]
    SubjectNotType { subject: String, event_type: String },
    #[error(
        "the record keeps only the first {excerpt} of {bytes} bytes, and the source stream \
         {stream} no longer holds the original (sequence {sequence}): {why}"
    )]
    PayloadGone {
        excerpt: usize,
        bytes: usize,
        stream: String,
        sequence: u64,
        why: String,
    },
}

/// The number of the next replay of a letter marked `mark`: refused when it was replayed
/// before, unless forced.
pub fn next_replay(mark: Option<&ReplayMark>, force: bool) -> Result<u32, Refusal> {
    match mark {
        None => Ok(1),
        Some(mark) if force => Ok(mark.replays + 1),
        Some(mark) => Err(Refusal::AlreadyReplayed {
            replays: mark.replays,
            last_event_id: mark.last_event_id().to_owned(),
            at: mark.last_replayed_at,
        }),
    }
}

/// The event replay number `replay` sends for the original `payload`, which came on
/// `subject`: sent on the same subject, which must be its type (as intake requires).
pub fn replay_event(subject: &str, payload: &[u8], replay: u32) -> Result<KeptnEvent, Refusal> {
    let original =
        KeptnEvent::decode(payload).map_err(|err| Refusal::NotAnEvent(err.to_string()))?;
    if original.ty() != subject {
        return Err(Refusal::SubjectNotType {
            subject: subject.to_owned(),
            event_type: original.ty().to_owned(),
        });
    }
    original
        .replay_as(&replay_id(original.id(), replay))
        .ok_or(Refusal::MemberTwice)
}

/// How many of the `letters` dead letters have never been replayed: the stream holds sequences
/// `first..=last` but for the `deleted` ones, and `marked` are the letters with a replay mark.
/// A mark can outlive its letter (the stream dropped it for space, or it was deleted), so only
/// the marks of letters still there count.
pub fn not_replayed(letters: u64, first: u64, last: u64, deleted: &[u64], marked: &[u64]) -> u64 {
    if letters == 0 {
        return 0;
    }
    let replayed = marked
        .iter()
        .filter(|&&id| (first..=last).contains(&id) && !deleted.contains(&id))
        .count() as u64;
    letters.saturating_sub(replayed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &[u8] = br#"{"specversion":"1.0","id":"e1","type":"sh.keptn.event.deployment.triggered","source":"shipyard","shkeptncontext":"c","data":{"project":"p"}}"#;

    #[test]
    fn replay_ids_are_deterministic_per_event_and_number() {
        assert_eq!(replay_id("e1", 1), replay_id("e1", 1));
        assert_ne!(replay_id("e1", 1), replay_id("e1", 2));
        assert_ne!(replay_id("e1", 1), replay_id("e2", 1));
        assert_eq!(
            replay_id("e1", 1),
            Uuid::new_v5(&REPLAY_ID_NAMESPACE, b"e1/replay/1").to_string()
        );
    }

    #[test]
    fn a_second_replay_is_refused_unless_forced() {
        let at = Utc::now();
        assert_eq!(next_replay(None, false), Ok(1));
        let mark = ReplayMark::after(None, replay_id("e1", 1), at);
        assert_eq!(mark.replays, 1);
        let refused = next_replay(Some(&mark), false).unwrap_err();
        assert!(refused.to_string().contains("--force"), "{refused}");
        assert!(refused.to_string().contains(&replay_id("e1", 1)));
        assert_eq!(next_replay(Some(&mark), true), Ok(2));
    }

    #[test]
    fn marks_keep_count_and_the_latest_ids() {
        let mut mark = None;
        for n in 1..=20 {
            mark = Some(ReplayMark::after(
                mark.as_ref(),
                format!("id-{n}"),
                Utc::now(),
            ));
        }
        let mark = mark.unwrap();
        assert_eq!(mark.replays, 20);
        assert_eq!(mark.event_ids.len(), MARK_EVENT_IDS);
        assert_eq!(mark.last_event_id(), "id-20");
        assert_eq!(mark.event_ids[0], "id-5");
    }

    #[test]
    fn only_marks_of_letters_still_there_count_as_replayed() {
        // Letters 1..=10, 4 deleted: 9 letters; 2 and 7 replayed.
        assert_eq!(not_replayed(9, 1, 10, &[4], &[2, 7]), 7);
        // Marks of letters gone: expired before 5, deleted 4, never there 11.
        assert_eq!(not_replayed(6, 5, 10, &[], &[1, 3, 6, 11]), 5);
        assert_eq!(not_replayed(9, 1, 10, &[4], &[4]), 9);
        // No letters (an empty stream's first sequence is past its last).
        assert_eq!(not_replayed(0, 11, 10, &[], &[3]), 0);
        assert_eq!(not_replayed(3, 1, 3, &[], &[]), 3);
        assert_eq!(not_replayed(2, 1, 3, &[2], &[1, 3]), 0);
    }

    #[test]
    fn the_replayed_event_has_the_new_id_and_names_the_old() {
        const SUBJECT: &str = "sh.keptn.event.deployment.triggered";
        let event = replay_event(SUBJECT, EVENT, 2).unwrap();
        assert_eq!(event.id(), replay_id("e1", 2));
        assert_eq!(event.extension_str("replayof"), Some("e1"));
        assert_eq!(event.keptn_context(), Some("c"));
        assert!(matches!(
            replay_event(SUBJECT, b"not json", 1),
            Err(Refusal::NotAnEvent(_))
        ));
        // Published elsewhere than its type: never sent to another subject.
        assert!(matches!(
            replay_event("sh.keptn.event.release.triggered", EVENT, 1),
            Err(Refusal::SubjectNotType { .. })
        ));
    }
}
