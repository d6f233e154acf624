//! The Keptn event contract spoken by helm-service.
//!
//! Everything that crosses the wire lives here, so the worker never touches raw JSON and the
//! rules of the contract (which event types exist, what a valid Keptn name is, what a reply must
//! carry) are written down once and tested against the examples of the Keptn specification.
//!
//! - [`envelope`]: the structured-mode CloudEvent 1.0 JSON document ([`envelope::KeptnEvent`]).
//! - [`event_type`]: `sh.keptn.event.<task>.<phase>` types ([`event_type::EventType`],
//!   [`event_type::Phase`]).
//! - [`data`]: the `data` payloads of the events helm-service handles.
//! - [`validate`]: the checks that turn a decoded payload into work the worker may act on.
//! - [`names`]: Keptn project, stage and service names.
//! - [`reply`]: `.started` and `.finished` events with deterministic ids.
//! - [`trace_context`]: the W3C `traceparent` / `tracestate` grammar.
//!
//! Items are named by their module (`contracts::envelope::KeptnEvent`), never from the crate
//! root: the module says which part of the contract an item belongs to, and one item keeps one
//! path.

pub mod data;
pub mod envelope;
pub mod event_type;
mod json;
pub mod names;
pub mod reply;
pub mod trace_context;
pub mod validate;

/// A value from an event, as error messages show it: quoted and escaped like Rust's `{:?}`
/// (so a line break or NUL in it cannot break a log line or a reply), and cut after 64
/// characters (a 100 KB name is shown by its start, not copied into every message).
pub(crate) fn quoted(value: &str) -> String {
    const SHOWN_CHARS: usize = 64;
    match value.char_indices().nth(SHOWN_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &value[..cut], value.len()),
    }
}
