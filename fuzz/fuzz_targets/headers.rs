//! Any `(name, value)` pairs through `nats::publisher::headers`: never a panic, what NATS can
//! carry kept, the rest left out. Pairs are NUL-separated: `name\0value\0name\0value...`.
#![no_main]

#[path = "../../worker/tests/support/intake_invariants.rs"]
mod intake_invariants;

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    let parts: Vec<&str> = text.split('\0').collect();
    let pairs: Vec<(String, String)> = parts
        .chunks(2)
        .map(|pair| {
            (
                pair[0].to_owned(),
                pair.get(1).copied().unwrap_or("").to_owned(),
            )
        })
        .collect();
    intake_invariants::check_headers(&pairs);
});
