//! The Keptn event contract spoken by helm-service.
//!
//! Everything that crosses the wire lives here, so the worker never touches raw JSON and the
//! rules of the contract (which event types exist, what a valid Keptn name is, what a reply must
//! carry) are written down once and tested against the examples of the Keptn specification.
//!
//! - [`envelope`]: the structured-mode CloudEvent 1.0 JSON document ([`KeptnEvent`]).
//! - [`event_type`]: `sh.keptn.event.<task>.<phase>` types ([`EventType`], [`Phase`]).
//! - [`data`]: the `data` payloads of the events helm-service handles.
//! - [`validate`]: the checks that turn a decoded payload into work the worker may act on.
//! - [`names`]: Keptn project, stage and service names.
//! - [`reply`]: `.started` and `.finished` events with deterministic ids.

pub mod data;
pub mod envelope;
pub mod event_type;
pub mod names;
pub mod reply;
pub mod validate;

pub use envelope::{DataError, DecodeError, KeptnEvent, KEPTN_SPEC_VERSION};
pub use event_type::{EventType, EventTypeError, Phase, KEPTN_EVENT_PREFIX};
pub use names::{validate_keptn_name, NameError, NameKind};
pub use reply::{reply_id, ReplyBuilder};
pub use validate::ValidationError;
