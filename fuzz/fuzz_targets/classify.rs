//! Any message on any subject through `pipeline::intake::classify`, with the checks of
//! `worker/tests/support/intake_invariants.rs` (verdicts, bounded clean messages, replies
//! and their headers). The first byte picks the subject and whether `--max-event-bytes` is
//! the default or small; the rest is the message body.
#![no_main]

#[path = "../../worker/tests/support/intake_invariants.rs"]
mod intake_invariants;

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let Some((&selector, payload)) = input.split_first() else {
        return;
    };
    let subjects = &intake_invariants::SUBJECTS;
    let subject = subjects[usize::from(selector & 0x0f) % subjects.len()];
    let limit = if selector & 0x80 != 0 {
        256
    } else {
        512 * 1024
    };
    intake_invariants::check_classify(subject, payload, limit);
});
