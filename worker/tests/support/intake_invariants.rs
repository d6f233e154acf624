//! What must hold for any message intake classifies, and for any header pairs, whatever the
//! bytes.
//!
//! One definition, run twice: by the property tests (`worker/tests/intake_properties.rs`,
//! part of `cargo test`) and by the cargo-fuzz targets (`fuzz/fuzz_targets/`, which include
//! this file by path). Every check panics on a violation, so a fuzzer reports it as a crash.

#![allow(dead_code)]

use async_nats::header::HeaderValue;
use contracts::data::{Status, TaskResult};
use contracts::envelope::KeptnEvent;
use contracts::names::MAX_NAME_LEN;
use contracts::reply::ReplyBuilder;
use contracts::trace_context::{is_valid_traceparent, is_valid_tracestate};
use worker::nats::publisher::{event_headers, headers};
use worker::pipeline::intake::{
    classify, DeadLetterReason, Intake, TaskKind, MAX_ATTRIBUTE_BYTES, MAX_MESSAGE_BYTES,
    OWN_SOURCE,
};

/// Classifies one message and checks the verdict; returns it.
pub fn check_classify(subject: &str, payload: &[u8], max_event_bytes: usize) -> Intake {
    let verdict = classify(subject, payload, max_event_bytes);
    if payload.len() > max_event_bytes {
        assert!(
            matches!(
                verdict,
                Intake::DeadLetter {
                    reason: DeadLetterReason::TooLarge,
                    ..
                }
            ),
            "an event over the limit is dead-lettered as too large: {verdict:?}"
        );
    }
    match &verdict {
        Intake::Accept(task) => {
            assert_eq!(
                task.kind.event_type(),
                subject,
                "accepted on its own subject"
            );
            check_addressable(&task.event);
            let key = task.release.lease_key();
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)),
                "a release key is built from checked names only: {key:?}"
            );
            if let Some(target) = task.payload.target() {
                for name in [&target.project, &target.stage, &target.service] {
                    check_name(name);
                }
                assert!(target.namespace().len() <= MAX_NAME_LEN);
            }
            check_replies(&task.event);
        }
        Intake::Reject {
            kind,
            event,
            reason,
        } => {
            assert_eq!(kind.event_type(), subject, "rejected on its own subject");
            assert!(
                kind.sends_started(),
                "only triggered tasks are answered errored"
            );
            check_message(reason);
            check_addressable(event);
            check_replies(event);
        }
        Intake::Ignore { .. } => {}
        Intake::DeadLetter { detail, .. } => check_message(detail),
    }
    verdict
}

/// An event intake lets through to an answer: identifying attributes within the limit and
/// clean, a sequence to answer in, and a trace context of the W3C grammar or none.
fn check_addressable(event: &KeptnEvent) {
    assert_ne!(
        event.source(),
        OWN_SOURCE,
        "our own events are never answered"
    );
    let context = event
        .keptn_context()
        .expect("an answered event has a context");
    assert!(!context.is_empty());
    for (name, value) in [
        ("id", Some(event.id())),
        ("shkeptncontext", Some(context)),
        ("triggeredid", event.triggered_id()),
        ("gitcommitid", event.git_commit_id()),
    ] {
        if let Some(value) = value {
            assert!(
                value.len() <= MAX_ATTRIBUTE_BYTES,
                "{name} of {} bytes",
                value.len()
            );
            assert!(!value.chars().any(char::is_control), "{name}: {value:?}");
        }
    }
    if let Some(parent) = event.traceparent() {
        assert!(is_valid_traceparent(parent), "traceparent {parent:?}");
    }
    if let Some(state) = event.tracestate() {
        assert!(
            event.traceparent().is_some(),
            "tracestate without traceparent"
        );
        assert!(is_valid_tracestate(state), "tracestate {state:?}");
    }
}

/// The replies to an answered event: they encode and decode to themselves, their headers
/// keep the trace context (nothing is left out), their id can be a `Nats-Msg-Id`, and when
/// they come back from the stream intake ignores them as our own.
fn check_replies(event: &KeptnEvent) {
    let replies = ReplyBuilder::new(event, OWN_SOURCE).expect("answered events are task events");
    let finished = replies.finished(
        Status::Errored,
        Some(TaskResult::Fail),
        "message",
        serde_json::Map::new(),
    );
    for reply in [replies.started(), finished] {
        let bytes = reply.encode();
        let decoded = KeptnEvent::decode(&bytes).expect("our replies decode");
        assert_eq!(decoded.inner(), reply.inner());
        let built = event_headers(&reply);
        assert_eq!(
            built.get("traceparent").map(HeaderValue::as_str),
            reply.traceparent(),
            "the traceparent header is never left out of a reply"
        );
        assert_eq!(reply.traceparent(), event.traceparent());
        assert!(reply.id().parse::<HeaderValue>().is_ok());
        assert!(
            matches!(
                classify(reply.ty(), &bytes, usize::MAX),
                Intake::Ignore {
                    reason: "own-source"
                }
            ),
            "our own reply is ignored"
        );
    }
}

/// `(name, value)` pairs through [`headers`]: no panic; what NATS can carry is kept (the last
/// value of a name), the rest left out.
pub fn check_headers(pairs: &[(String, String)]) {
    let built = headers(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let carried = |name: &str, value: &str| {
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_graphic() && c != ':')
            && !value.contains(['\r', '\n'])
    };
    for (name, values) in built.iter() {
        let name: &str = name.as_ref();
        let expected = pairs
            .iter()
            .rev()
            .find(|(n, v)| n == name && carried(n, v))
            .map(|(_, v)| v.as_str());
        assert_eq!(values.len(), 1, "{name}");
        assert_eq!(Some(values[0].as_str()), expected, "{name}");
    }
    for (name, value) in pairs {
        if carried(name, value) {
            assert!(built.get(name.as_str()).is_some(), "{name:?} was left out");
        }
    }
}

fn check_name(name: &str) {
    let bytes = name.as_bytes();
    assert!(!bytes.is_empty() && bytes.len() <= MAX_NAME_LEN, "{name:?}");
    assert!(bytes[0].is_ascii_lowercase(), "{name:?}");
    assert!(
        bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-'),
        "{name:?}"
    );
}

/// A reason or detail: not empty, bounded, no control characters.
fn check_message(message: &str) {
    assert!(!message.is_empty());
    assert!(
        message.len() <= MAX_MESSAGE_BYTES,
        "{} bytes",
        message.len()
    );
    assert!(
        !message.chars().any(char::is_control),
        "control character in {message:?}"
    );
}

/// The subjects a message may arrive on: the five consumed, and others.
pub const SUBJECTS: [&str; 8] = [
    "sh.keptn.event.deployment.triggered",
    "sh.keptn.event.release.triggered",
    "sh.keptn.event.rollback.triggered",
    "sh.keptn.event.action.triggered",
    "sh.keptn.event.service.delete.finished",
    "sh.keptn.event.deployment.finished",
    "sh.keptn.event.test.triggered",
    "sh.keptn.events.problem",
];

/// Keeps the import of `TaskKind` honest: every consumed type is among [`SUBJECTS`].
pub fn subjects_cover_every_task() -> bool {
    TaskKind::ALL
        .iter()
        .all(|kind| SUBJECTS.contains(&kind.event_type()))
}
