//! Pure: what `status` and `releases show` say about a release, from its record and the
//! events not answered yet.
//!
//! The release record (`pipeline::release_record`) says who holds a release, whether the
//! holder's replica only keeps it parked, and the progress of events begun (the steps done).
//! Events *waiting* for a release are in no record: a replica holds them in memory, unacked.
//! They are found in the Keptn stream after the consumer's ack floor (everything before it is
//! settled): a handled event there that helm-service has not answered, whose release does not
//! remember it completed, and that is not the one being worked on, waits. An event declined
//! without an answer (an action for another integration) can show there until the ack floor
//! passes it.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use contracts::envelope::KeptnEvent;
use serde::Serialize;

use crate::pipeline::intake::{classify, Intake, OWN_SOURCE};
use crate::pipeline::release_record::{Progress, ReleaseRecord};

/// Who holds a release.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HolderView {
    /// The replica (`host/pid`).
    pub replica: String,
    /// The event it took the release for.
    pub event_id: String,
    pub since: DateTime<Utc>,
    /// Its task is over; the replica keeps the release a moment for its next event on it.
    pub parked: bool,
}

/// What was done for one event begun on a release.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgressView {
    pub event_id: String,
    pub event_type: String,
    /// Times a replica began working on it.
    pub attempts: u32,
    pub started_published: bool,
    /// Steps done, in the order they were done.
    pub steps_done: Vec<String>,
    pub begun_at: Option<DateTime<Utc>>,
}

impl ProgressView {
    fn of(event_id: &str, progress: &Progress) -> Self {
        let mut steps: Vec<_> = progress.steps.iter().collect();
        steps.sort_by_key(|(name, step)| (step.completed_at, name.as_str()));
        ProgressView {
            event_id: event_id.to_owned(),
            event_type: progress.event_type.clone(),
            attempts: progress.attempts,
            started_published: progress.started_published,
            steps_done: steps.into_iter().map(|(name, _)| name.clone()).collect(),
            begun_at: progress.begun_at,
        }
    }

    /// The last step done, if any.
    pub fn last_step(&self) -> Option<&str> {
        self.steps_done.last().map(String::as_str)
    }
}

/// A release record as operators read it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RecordView {
    pub holder: Option<HolderView>,
    /// Handed over to a waiter that waited a whole lease TTL; only it may take it.
    pub reserved_for_waiter: bool,
    /// The event the holder works on now (not when parked).
    pub in_progress: Option<ProgressView>,
    /// Events begun and not completed that nobody works on now (their next delivery
    /// continues them).
    pub interrupted: Vec<ProgressView>,
    /// Completed events remembered for recognising duplicates.
    pub completed_remembered: usize,
}

impl RecordView {
    pub fn of(record: &ReleaseRecord) -> Self {
        let working_on = record
            .holder
            .as_ref()
            .filter(|holder| !holder.parked)
            .map(|holder| holder.event_id.as_str());
        let in_progress = working_on.map(|id| match record.progress.get(id) {
            Some(progress) => ProgressView::of(id, progress),
            // Taken, nothing recorded yet.
            None => ProgressView {
                event_id: id.to_owned(),
                event_type: String::new(),
                attempts: 0,
                started_published: false,
                steps_done: Vec::new(),
                begun_at: None,
            },
        });
        let interrupted = record
            .progress
            .iter()
            .filter(|(id, _)| Some(id.as_str()) != working_on)
            .map(|(id, progress)| ProgressView::of(id, progress))
            .collect();
        RecordView {
            holder: record.holder.as_ref().map(|holder| HolderView {
                replica: holder.owner.clone(),
                event_id: holder.event_id.clone(),
                since: holder.acquired_at,
                parked: holder.parked,
            }),
            reserved_for_waiter: record.reserved.is_some(),
            in_progress,
            interrupted,
            completed_remembered: record.completed.len(),
        }
    }

    /// Anything going on: held for a task (a parked release is idle: its replica merely
    /// keeps it for its next event), reserved, or progress kept.
    pub fn is_busy(&self) -> bool {
        self.holder.as_ref().is_some_and(|holder| !holder.parked)
            || self.reserved_for_waiter
            || self.in_progress.is_some()
            || !self.interrupted.is_empty()
    }
}

/// A handled event in the Keptn stream after the consumer's ack floor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WaitingEvent {
    pub event_id: String,
    pub event_type: String,
    /// Its sequence in the Keptn stream.
    pub sequence: u64,
    /// Delivered to a replica already (else still queued in the consumer).
    pub delivered: bool,
}

/// The Keptn stream after the ack floor, read: handled events by release key, and the ids
/// helm-service answered (`.finished` with their `triggeredid`).
#[derive(Debug, Default)]
pub struct Backlog {
    pub events: BTreeMap<String, Vec<WaitingEvent>>,
    pub answered: HashSet<String>,
}

impl Backlog {
    /// Reads messages `(sequence, subject, payload)`; those up to `last_delivered` were
    /// delivered.
    pub fn read<'a>(
        messages: impl IntoIterator<Item = (u64, &'a str, &'a [u8])>,
        last_delivered: u64,
    ) -> Self {
        let mut backlog = Backlog::default();
        for (sequence, subject, payload) in messages {
            if subject.ends_with(".finished") {
                if let Ok(event) = KeptnEvent::decode(payload) {
                    if event.source() == OWN_SOURCE {
                        if let Some(triggered) = event.triggered_id() {
                            backlog.answered.insert(triggered.to_owned());
                        }
                        continue;
                    }
                }
            }
            // No size limit here: what the worker would refuse is its business.
            if let Intake::Accept(task) = classify(subject, payload, usize::MAX) {
                backlog
                    .events
                    .entry(task.release.lease_key().to_owned())
                    .or_default()
                    .push(WaitingEvent {
                        event_id: task.event.id().to_owned(),
                        event_type: task.kind.event_type().to_owned(),
                        sequence,
                        delivered: sequence <= last_delivered,
                    });
            }
        }
        backlog
    }

    /// The events waiting for the release `key` whose record reads `record`.
    pub fn waiting_for(&self, key: &str, record: Option<&ReleaseRecord>) -> Vec<WaitingEvent> {
        let working_on = record
            .and_then(|r| r.holder.as_ref())
            .filter(|holder| !holder.parked)
            .map(|holder| holder.event_id.as_str());
        self.events
            .get(key)
            .into_iter()
            .flatten()
            .filter(|event| {
                !self.answered.contains(&event.event_id)
                    && !record.is_some_and(|r| r.is_completed(&event.event_id))
                    && Some(event.event_id.as_str()) != working_on
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::release_record::{Holder, StepRecord};
    use serde_json::json;

    fn triggered(id: &str, service: &str) -> Vec<u8> {
        json!({
            "specversion": "1.0", "id": id, "source": "shipyard-controller",
            "type": "sh.keptn.event.deployment.triggered", "shkeptncontext": "c",
            "data": {"project": "shop", "stage": "dev", "service": service,
                     "deployment": {"deploymentstrategy": "direct"}}
        })
        .to_string()
        .into_bytes()
    }

    fn finished(triggered_id: &str) -> Vec<u8> {
        json!({
            "specversion": "1.0", "id": format!("f-{triggered_id}"), "source": OWN_SOURCE,
            "type": "sh.keptn.event.deployment.finished", "shkeptncontext": "c",
            "triggeredid": triggered_id,
            "data": {"project": "shop", "stage": "dev", "service": "hello", "status": "succeeded", "result": "pass"}
        })
        .to_string()
        .into_bytes()
    }

    const TRIGGERED: &str = "sh.keptn.event.deployment.triggered";
    const KEY: &str = "shop-dev.shop-dev-hello";

    #[test]
    fn waiting_events_are_the_unanswered_ones_not_worked_on() {
        let (a, b, c, d) = (
            triggered("a", "hello"),
            triggered("b", "hello"),
            triggered("c", "hello"),
            triggered("d", "hello"),
        );
        let answered = finished("a");
        let messages = vec![
            (10, TRIGGERED, a.as_slice()),
            (11, TRIGGERED, b.as_slice()),
            (12, TRIGGERED, c.as_slice()),
            (
                13,
                "sh.keptn.event.deployment.finished",
                answered.as_slice(),
            ),
            (14, TRIGGERED, d.as_slice()),
            (15, TRIGGERED, b"not an event".as_slice()),
        ];
        let backlog = Backlog::read(messages, 12);
        let mut record = ReleaseRecord {
            holder: Some(Holder {
                token: "t".into(),
                owner: "host/1".into(),
                event_id: "b".into(),
                acquired_at: Utc::now(),
                next: None,
                parked: false,
                wake: None,
            }),
            ..ReleaseRecord::default()
        };
        record.complete("c");
        let waiting = backlog.waiting_for(KEY, Some(&record));
        let ids: Vec<(&str, bool)> = waiting
            .iter()
            .map(|w| (w.event_id.as_str(), w.delivered))
            .collect();
        // a answered, b in progress, c completed out of order, d queued.
        assert_eq!(ids, [("d", false)]);

        // Parked: the holder's event is over, so b waits like the others.
        record.holder.as_mut().unwrap().parked = true;
        let ids: Vec<String> = backlog
            .waiting_for(KEY, Some(&record))
            .into_iter()
            .map(|w| w.event_id)
            .collect();
        assert_eq!(ids, ["b", "d"]);
        assert!(backlog.waiting_for("other.key", None).is_empty());
    }

    #[test]
    fn the_view_names_the_holder_its_event_and_steps_in_order() {
        let now = Utc::now();
        let mut record = ReleaseRecord {
            holder: Some(Holder {
                token: "t".into(),
                owner: "host/1".into(),
                event_id: "e".into(),
                acquired_at: now,
                next: None,
                parked: false,
                wake: None,
            }),
            ..ReleaseRecord::default()
        };
        let progress = record.progress_mut("e", TRIGGERED);
        progress.attempts = 2;
        for (name, seconds) in [("upgrade", 2), ("namespace", 1)] {
            progress.steps.insert(
                name.into(),
                StepRecord {
                    output: json!(null),
                    completed_at: now + chrono::Duration::seconds(seconds),
                },
            );
        }
        record.progress_mut("old", TRIGGERED);
        let view = RecordView::of(&record);
        assert!(view.is_busy());
        let running = view.in_progress.as_ref().unwrap();
        assert_eq!(running.steps_done, ["namespace", "upgrade"]);
        assert_eq!(running.last_step(), Some("upgrade"));
        assert_eq!(running.attempts, 2);
        assert_eq!(view.interrupted.len(), 1);
        assert_eq!(view.interrupted[0].event_id, "old");

        record.holder.as_mut().unwrap().parked = true;
        record.complete("e");
        assert!(view.is_busy(), "interrupted progress is kept");
        record.complete("old");
        let view = RecordView::of(&record);
        assert!(!view.is_busy(), "parked, nothing in progress: idle");
        assert_eq!(view.completed_remembered, 2);
    }
}
