//! Any bytes as the `data` member of an otherwise valid event, so the fuzzer spends its time
//! on payload decoding and validation rather than on the envelope.
#![no_main]

#[path = "../../contracts/tests/support/event_invariants.rs"]
mod event_invariants;

const HEAD: &[u8] = br#"{"specversion":"1.0","id":"c4d3a334-6cb9-4e8c-a372-7e0b45942f53","source":"shipyard-controller","type":"sh.keptn.event.deployment.triggered","shkeptncontext":"a3e5f16d-8888-4720-82c7-6995062905c1","data":"#;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut document = Vec::with_capacity(HEAD.len() + data.len() + 1);
    document.extend_from_slice(HEAD);
    document.extend_from_slice(data);
    document.push(b'}');
    event_invariants::check_decode(&document);
});
