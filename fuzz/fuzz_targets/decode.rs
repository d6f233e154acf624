//! Any bytes as a whole NATS message body: `KeptnEvent::decode`, and for what it accepts the
//! round trip, every payload type and its validation (`contracts/tests/support/event_invariants.rs`).
#![no_main]

#[path = "../../contracts/tests/support/event_invariants.rs"]
mod event_invariants;

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    event_invariants::check_decode(bytes);
});
