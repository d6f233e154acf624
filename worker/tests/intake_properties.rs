//! Property tests of intake and NATS headers: for generated and mutated messages on every
//! subject, the invariants of `support/intake_invariants.rs` hold (no panic; accepted events
//! are addressable with bounded, clean attributes and a valid trace context, their replies
//! round-trip and keep their headers; every reason and detail is bounded and clean).
//!
//! Bounded to a few seconds in `cargo test` (`PROPTEST_CASES` raises the count); the
//! cargo-fuzz targets in `fuzz/` run the same checks for as long as one likes.

#[path = "support/intake_invariants.rs"]
mod intake_invariants;
#[path = "../../contracts/tests/support/strategies.rs"]
mod strategies;

use intake_invariants::{check_classify, check_headers, subjects_cover_every_task, SUBJECTS};
use proptest::prelude::*;
use serde_json::Value;
use strategies::{config, damaged, edited_event, string, template};
use worker::pipeline::intake::Intake;

/// The subject a message arrives on: mostly the one its type names, sometimes another.
fn subject_for(bytes: &[u8], pick: Option<usize>) -> String {
    match pick {
        Some(index) => SUBJECTS[index % SUBJECTS.len()].to_owned(),
        None => serde_json::from_slice::<Value>(bytes)
            .ok()
            .and_then(|v| v.get("type")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| SUBJECTS[0].to_owned()),
    }
}

/// `--max-event-bytes`: the default, or small enough to hit.
fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![4 => Just(512 * 1024), 1 => 0usize..2048]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn edited_events_are_classified_by_the_invariants(
        bytes in edited_event(),
        pick in prop::option::weighted(0.2, any::<usize>()),
        limit in limit(),
    ) {
        check_classify(&subject_for(&bytes, pick), &bytes, limit);
    }

    #[test]
    fn damaged_events_are_classified_by_the_invariants(
        bytes in edited_event().prop_flat_map(damaged),
        pick in prop::option::weighted(0.2, any::<usize>()),
    ) {
        check_classify(&subject_for(&bytes, pick), &bytes, 512 * 1024);
    }

    #[test]
    fn arbitrary_bytes_are_classified_by_the_invariants(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        pick in any::<usize>(),
    ) {
        check_classify(SUBJECTS[pick % SUBJECTS.len()], &bytes, 512 * 1024);
    }

    #[test]
    fn valid_triggered_events_are_accepted(document in template()) {
        let bytes = document.to_string().into_bytes();
        let subject = subject_for(&bytes, None);
        let verdict = check_classify(&subject, &bytes, 512 * 1024);
        if subject.ends_with(".triggered") || subject.ends_with("service.delete.finished") {
            prop_assert!(matches!(verdict, Intake::Accept(_)), "{verdict:?}");
        }
    }

    #[test]
    fn headers_keep_what_nats_carries_and_leave_out_the_rest(
        pairs in prop::collection::vec(
            (
                prop_oneof![
                    Just("traceparent".to_owned()),
                    Just("Content-Type".to_owned()),
                    Just("Nats-Msg-Id".to_owned()),
                    string(),
                ],
                string(),
            ),
            0..6,
        )
    ) {
        check_headers(&pairs);
    }
}

#[test]
fn the_subjects_cover_every_consumed_type() {
    assert!(subjects_cover_every_task());
}
