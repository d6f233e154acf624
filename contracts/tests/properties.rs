//! Property tests of event decoding: for generated and mutated documents, the invariants of
//! `support/event_invariants.rs` hold (no panic; what is accepted has clean attributes,
//! round-trips and validates only Kubernetes-safe names; every error message is clean).
//!
//! Bounded to a few seconds in `cargo test` (`PROPTEST_CASES` raises the count for a longer
//! local run); the cargo-fuzz targets in `fuzz/` run the same checks for as long as one likes.

#[path = "support/event_invariants.rs"]
mod event_invariants;
#[path = "support/strategies.rs"]
mod strategies;

use event_invariants::{check_decode, check_message, check_name};
use proptest::prelude::*;
use strategies::{config, damaged, edited_event, json_value, string, template};

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_decode(&bytes);
    }

    #[test]
    fn arbitrary_json_is_judged_by_the_invariants(value in json_value()) {
        check_decode(value.to_string().as_bytes());
    }

    #[test]
    fn edited_events_are_judged_by_the_invariants(bytes in edited_event()) {
        check_decode(&bytes);
    }

    #[test]
    fn damaged_events_are_judged_by_the_invariants(
        bytes in edited_event().prop_flat_map(damaged)
    ) {
        check_decode(&bytes);
    }

    #[test]
    fn unedited_events_are_accepted_and_round_trip(document in template()) {
        let event = check_decode(document.to_string().as_bytes());
        prop_assert!(event.is_some());
    }

    #[test]
    fn a_name_that_validates_is_kubernetes_safe(name in string()) {
        use contracts::names::{validate_keptn_name, NameKind};
        match validate_keptn_name(NameKind::Service, &name) {
            Ok(()) => check_name(&name),
            Err(err) => check_message(&err.to_string()),
        }
    }
}
