//! The wire envelope: one structured-mode CloudEvent 1.0 JSON document per NATS message.
//!
//! [`KeptnEvent`] wraps `cloudevents::Event` and adds what the SDK leaves open:
//!
//! - Decoding is strict where Keptn is strict: only `specversion` `"1.0"` (the SDK would also
//!   take `0.3`), non-empty `id`, `source` and `type`, and errors that name the attribute, so a
//!   poison message goes to the dead letter with a reason a person can act on.
//! - Strict where the CloudEvents type system is and the SDK is not: no string attribute or
//!   extension may hold a control character (U+0000–U+001F, U+007F–U+009F), so a line break
//!   can never travel from an event into a reply, a log line or a NATS header.
//! - A member named twice is refused, never resolved by guessing (the private `json` module):
//!   at the top level the document is not a usable event (`id` twice: which one is answered?);
//!   inside `data` the event stays addressable and [`KeptnEvent::typed_data`] fails naming the
//!   member, so the sender gets an errored answer instead of silence.
//! - Keptn's extensions (`shkeptncontext`, `triggeredid`, ...) get named accessors.
//! - `data` reads as JSON even when a sender put the JSON object into a string (the Keptn spec
//!   allows `data` of type string), and typed decoding names the path of a bad field.
//! - Encoding is deterministic: attributes in CloudEvents order, then extensions sorted by name,
//!   then `data`. The SDK keeps extensions in a `HashMap`, so without this two encodings of the
//!   same event could differ byte for byte.
//!
//! Re-encoding a decoded event gives the same JSON document except for these documented
//! canonicalisations: `null` attributes and extensions are dropped, `time` is written in UTC
//! (RFC 3339, `Z`), and `data_base64` holding JSON under a JSON `datacontenttype` becomes `data`.

use cloudevents::event::{Data, ExtensionValue};
use cloudevents::{AttributesReader, Event};
use serde::de::DeserializeOwned;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::data::DataError;
use crate::event_type::{EventType, EventTypeError};
use crate::json::{self, Duplicate};

/// The Keptn spec version helm-service writes into `shkeptnspecversion`.
pub const KEPTN_SPEC_VERSION: &str = "0.2.4";

/// The only CloudEvents spec version accepted.
pub const CLOUDEVENTS_SPEC_VERSION: &str = "1.0";

/// `datacontenttype` of every event helm-service writes.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// Extension: ties the events of one sequence together.
pub const EXT_KEPTN_CONTEXT: &str = "shkeptncontext";
/// Extension: on `.started`/`.finished`, the id of the `.triggered` event answered.
pub const EXT_TRIGGERED_ID: &str = "triggeredid";
/// Extension: the configuration commit the sequence works on.
pub const EXT_GIT_COMMIT_ID: &str = "gitcommitid";
/// Extension: the Keptn spec version of the event.
pub const EXT_KEPTN_SPEC_VERSION: &str = "shkeptnspecversion";
/// Extension: W3C trace context.
pub const EXT_TRACEPARENT: &str = "traceparent";
/// Extension: W3C trace state.
pub const EXT_TRACESTATE: &str = "tracestate";
/// Extension: on an event an operator sent again (`helm-service dead-letters replay`), the id
/// of the event it replays.
pub const EXT_REPLAY_OF: &str = "replayof";

/// Why a message is not a usable CloudEvent.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not JSON at all.
    #[error("message is not JSON ({0}): expected a structured-mode CloudEvent 1.0 JSON document")]
    NotJson(#[source] serde_json::Error),
    /// The bytes are JSON, but not an object.
    #[error(
        "message is JSON but not an object: expected a structured-mode CloudEvent 1.0 JSON object"
    )]
    NotAnObject,
    /// `specversion` is something other than `"1.0"`.
    #[error("unsupported CloudEvents specversion {0:?}: only \"1.0\" is accepted")]
    SpecVersion(String),
    /// A required attribute is absent, `null` or empty.
    #[error("required CloudEvents attribute \"{0}\" is missing or empty")]
    MissingAttribute(&'static str),
    /// Anything else that makes the document an invalid CloudEvent.
    #[error("invalid CloudEvent: {0}")]
    Invalid(String),
}

/// A decoded Keptn CloudEvent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptnEvent {
    event: Event,
    /// A member named twice inside `data` (its path relative to `data`), which makes
    /// [`KeptnEvent::typed_data`] fail.
    data_duplicate: Option<Duplicate>,
}

/// Context attributes of CloudEvents 1.0 and their rank in the encoded document.
const ATTRIBUTE_ORDER: [&str; 8] = [
    "specversion",
    "id",
    "type",
    "source",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
];

const REQUIRED_ATTRIBUTES: [&str; 3] = ["id", "source", "type"];
const OPTIONAL_STRING_ATTRIBUTES: [&str; 4] = ["datacontenttype", "dataschema", "subject", "time"];
const DATA_MEMBERS: [&str; 2] = ["data", "data_base64"];

impl KeptnEvent {
    /// Decodes a structured-mode CloudEvent 1.0 JSON document.
    pub fn decode(bytes: &[u8]) -> Result<KeptnEvent, DecodeError> {
        let parsed = json::parse(bytes).map_err(DecodeError::NotJson)?;
        let Value::Object(map) = parsed.value else {
            return Err(DecodeError::NotAnObject);
        };
        let duplicate = parsed.duplicate;
        if let Some(duplicate) = duplicate.as_ref().filter(|d| d.parents.is_empty()) {
            return Err(DecodeError::Invalid(format!(
                "member {:?} appears more than once in the event: JSON members must be unique, \
                 and which one counts would be a guess; send it once",
                duplicate.key
            )));
        }
        check_document(&map)?;
        let (event, base64_duplicate) = event_from_checked(map)?;
        let data_duplicate = match duplicate {
            Some(Duplicate { mut parents, key })
                if parents.first().is_some_and(|p| p == "data") =>
            {
                parents.remove(0);
                Some(Duplicate { parents, key })
            }
            // Only `data` can hold objects in a document `check_document` accepted.
            Some(other) => {
                return Err(DecodeError::Invalid(format!(
                    "member {:?} appears more than once",
                    other.path()
                )))
            }
            None => base64_duplicate,
        };
        Ok(KeptnEvent {
            event,
            data_duplicate,
        })
    }

    /// Wraps an event this crate built itself (known to be valid).
    pub(crate) fn from_valid(event: Event) -> KeptnEvent {
        KeptnEvent {
            event,
            data_duplicate: None,
        }
    }

    /// Encodes the event as structured-mode CloudEvent JSON, deterministically ordered.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&Canonical(&self.event))
            .expect("a CloudEvent always serializes to JSON: its map keys are strings")
    }

    /// The SDK event.
    pub fn inner(&self) -> &Event {
        &self.event
    }

    /// `id`.
    pub fn id(&self) -> &str {
        self.event.id()
    }

    /// `type`, e.g. `sh.keptn.event.deployment.triggered`.
    pub fn ty(&self) -> &str {
        self.event.ty()
    }

    /// `type` parsed as a Keptn task event type.
    pub fn event_type(&self) -> Result<EventType, EventTypeError> {
        EventType::parse(self.ty())
    }

    /// `source`, e.g. `helm-service`.
    pub fn source(&self) -> &str {
        self.event.source()
    }

    /// `time`, when the sender set it.
    pub fn time(&self) -> Option<&chrono::DateTime<chrono::Utc>> {
        self.event.time()
    }

    /// `datacontenttype`, when set (absent means JSON).
    pub fn datacontenttype(&self) -> Option<&str> {
        self.event.datacontenttype()
    }

    /// A string extension; `None` when absent or not a string.
    pub fn extension_str(&self, name: &str) -> Option<&str> {
        match self.event.extension(name)? {
            ExtensionValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// `shkeptncontext`: the sequence this event belongs to.
    pub fn keptn_context(&self) -> Option<&str> {
        self.extension_str(EXT_KEPTN_CONTEXT)
    }

    /// `triggeredid`: on `.started`/`.finished`, the id of the `.triggered` event.
    pub fn triggered_id(&self) -> Option<&str> {
        self.extension_str(EXT_TRIGGERED_ID)
    }

    /// `gitcommitid`: the configuration commit to work on.
    pub fn git_commit_id(&self) -> Option<&str> {
        self.extension_str(EXT_GIT_COMMIT_ID)
    }

    /// `shkeptnspecversion`.
    pub fn keptn_spec_version(&self) -> Option<&str> {
        self.extension_str(EXT_KEPTN_SPEC_VERSION)
    }

    /// `traceparent` (W3C trace context).
    pub fn traceparent(&self) -> Option<&str> {
        self.extension_str(EXT_TRACEPARENT)
    }

    /// `tracestate` (W3C trace context).
    pub fn tracestate(&self) -> Option<&str> {
        self.extension_str(EXT_TRACESTATE)
    }

    /// The event sent again under `new_id`, naming this one in [`EXT_REPLAY_OF`]; everything
    /// else (type, context, data, trace context) as it was. `None` when `data` names a member
    /// twice: encoding it again would silently keep one of them, so it is not replayed.
    pub fn replay_as(&self, new_id: &str) -> Option<KeptnEvent> {
        if self.data_duplicate.is_some() {
            return None;
        }
        use cloudevents::event::AttributesWriter;
        let mut event = self.event.clone();
        event.set_id(new_id);
        event.set_extension(EXT_REPLAY_OF, self.id().to_owned());
        Some(KeptnEvent::from_valid(event))
    }

    /// Removes an extension attribute (e.g. a `traceparent` that fails its grammar), so
    /// nothing built from the event echoes it.
    pub fn remove_extension(&mut self, name: &str) {
        self.event.remove_extension(name);
    }

    /// `data` as JSON; `None` when there is no data, it is `null`, or it is binary that is not
    /// JSON.
    ///
    /// A string whose content is a JSON object (the spec allows `data` of type string) reads as
    /// that object; any other string reads as a JSON string.
    ///
    /// Borrowed when `data` is already JSON (the usual case): reading a few fields then
    /// costs no copy of the whole payload.
    ///
    /// A member named twice reads as its last occurrence here (as in Go's `encoding/json`);
    /// only [`KeptnEvent::typed_data`], which decides what the worker does, refuses it.
    pub fn data_json(&self) -> Option<Cow<'_, Value>> {
        self.data_value().ok().map(|(value, _)| value)
    }

    /// `data` decoded into a payload type; the error names the path of the offending field,
    /// e.g. `data.deployment.deploymentURIsLocal: invalid type: string "x", expected a sequence`.
    ///
    /// A member named twice anywhere in `data` fails too (`data.project: member "project"
    /// appears more than once ...`), whatever the payload type.
    pub fn typed_data<T: DeserializeOwned>(&self) -> Result<T, DataError> {
        let (value, duplicate) = self.data_value()?;
        if let Some(duplicate) = duplicate {
            return Err(DataError::Invalid {
                path: crate::data::shown_path(&duplicate.path()),
                message: format!(
                    "member {:?} appears more than once: JSON members must be unique, and \
                     which one counts would be a guess; send it once",
                    duplicate.key
                ),
            });
        }
        crate::data::from_value(value.as_ref())
    }

    /// `data` as JSON, and a member it names twice (path relative to `data`).
    fn data_value(&self) -> Result<(Cow<'_, Value>, Option<Duplicate>), DataError> {
        match self.event.data() {
            None | Some(Data::Json(Value::Null)) => Err(DataError::Missing),
            Some(Data::Json(Value::String(s))) | Some(Data::String(s)) => Ok(embedded_json(s)),
            Some(Data::Json(v)) => Ok((Cow::Borrowed(v), self.data_duplicate.clone())),
            Some(Data::Binary(bytes)) => match json::parse(bytes) {
                Ok(json::Parsed {
                    value: Value::Null, ..
                }) => Err(DataError::Missing),
                Ok(parsed) => Ok((Cow::Owned(parsed.value), parsed.duplicate)),
                Err(e) => Err(DataError::NotJson(e.to_string())),
            },
        }
    }
}

/// A string holding a JSON object reads as the object; anything else stays a string.
fn embedded_json(s: &str) -> (Cow<'_, Value>, Option<Duplicate>) {
    match json::parse(s.as_bytes()) {
        Ok(
            parsed @ json::Parsed {
                value: Value::Object(_),
                ..
            },
        ) => (Cow::Owned(parsed.value), parsed.duplicate),
        _ => (Cow::Owned(Value::String(s.to_owned())), None),
    }
}

/// The canonical encoding: the context attributes in CloudEvents order (as the SDK writes
/// them), the extensions sorted by name, then `data` or `data_base64`. Written straight
/// from the event, without an intermediate JSON tree.
struct Canonical<'a>(&'a Event);

impl Serialize for Canonical<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let event = self.0;
        let mut extensions: Vec<(&str, &ExtensionValue)> = event.iter_extensions().collect();
        extensions.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("specversion", CLOUDEVENTS_SPEC_VERSION)?;
        map.serialize_entry("id", event.id())?;
        map.serialize_entry("type", event.ty())?;
        map.serialize_entry("source", event.source())?;
        if let Some(datacontenttype) = event.datacontenttype() {
            map.serialize_entry("datacontenttype", datacontenttype)?;
        }
        if let Some(dataschema) = event.dataschema() {
            map.serialize_entry("dataschema", dataschema)?;
        }
        if let Some(subject) = event.subject() {
            map.serialize_entry("subject", subject)?;
        }
        if let Some(time) = event.time() {
            map.serialize_entry("time", time)?;
        }
        for (name, value) in extensions {
            map.serialize_entry(name, value)?;
        }
        match event.data() {
            Some(Data::Json(value)) => map.serialize_entry("data", value)?,
            Some(Data::String(text)) => map.serialize_entry("data", text)?,
            Some(Data::Binary(bytes)) => {
                use base64::Engine as _;
                let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
                map.serialize_entry("data_base64", &encoded)?
            }
            None => {}
        }
        map.end()
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks what the SDK does not check, or reports without naming the attribute.
fn check_document(map: &Map<String, Value>) -> Result<(), DecodeError> {
    match map.get("specversion") {
        None | Some(Value::Null) => return Err(DecodeError::MissingAttribute("specversion")),
        Some(Value::String(v)) if v == CLOUDEVENTS_SPEC_VERSION => {}
        Some(Value::String(v)) => return Err(DecodeError::SpecVersion(v.clone())),
        Some(other) => return Err(DecodeError::SpecVersion(other.to_string())),
    }
    for name in REQUIRED_ATTRIBUTES {
        match map.get(name) {
            None | Some(Value::Null) => return Err(DecodeError::MissingAttribute(name)),
            Some(Value::String(s)) if s.trim().is_empty() => {
                return Err(DecodeError::MissingAttribute(name))
            }
            Some(Value::String(_)) => {}
            Some(other) => {
                return Err(DecodeError::Invalid(format!(
                    "attribute \"{name}\" must be a string, found {}",
                    json_kind(other)
                )))
            }
        }
    }
    for name in OPTIONAL_STRING_ATTRIBUTES {
        match map.get(name) {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(other) => {
                return Err(DecodeError::Invalid(format!(
                    "attribute \"{name}\" must be a string, found {}",
                    json_kind(other)
                )))
            }
        }
    }
    for (name, value) in map {
        let Value::String(text) = value else { continue };
        if DATA_MEMBERS.contains(&name.as_str()) {
            continue;
        }
        if let Some(control) = text.chars().find(|c| c.is_control()) {
            return Err(DecodeError::Invalid(format!(
                "attribute {name:?} contains the control character U+{:04X}: CloudEvents \
                 string attributes must not contain control characters (U+0000-U+001F, \
                 U+007F-U+009F)",
                u32::from(control)
            )));
        }
    }
    if let Some(Value::String(time)) = map.get("time") {
        chrono::DateTime::parse_from_rfc3339(time).map_err(|e| {
            DecodeError::Invalid(format!(
                "attribute \"time\" is not an RFC 3339 timestamp (\"{time}\"): {e}"
            ))
        })?;
    }
    if DATA_MEMBERS.iter().all(|m| map.get(*m).is_some()) {
        return Err(DecodeError::Invalid(
            "both \"data\" and \"data_base64\" are present: send only one".to_owned(),
        ));
    }
    for (name, value) in map {
        if ATTRIBUTE_ORDER.contains(&name.as_str()) || DATA_MEMBERS.contains(&name.as_str()) {
            continue;
        }
        let valid = match value {
            Value::Null | Value::Bool(_) | Value::String(_) => true,
            Value::Number(n) => n.is_i64(),
            Value::Array(_) | Value::Object(_) => false,
        };
        if !valid {
            return Err(DecodeError::Invalid(format!(
                "extension attribute {name:?} is {}: CloudEvents extension values must be \
                 strings, booleans or integers",
                json_kind(value)
            )));
        }
    }
    Ok(())
}

/// Builds the SDK event from a document [`check_document`] accepted, moving its values
/// into place. Does what the SDK's own deserializer does for a 1.0 document (same
/// attributes, `data` rules and extensions), without rebuilding the JSON tree three
/// more times on the way, which made decoding the costliest step of the pipeline.
fn event_from_checked(
    mut map: Map<String, Value>,
) -> Result<(Event, Option<Duplicate>), DecodeError> {
    use cloudevents::event::AttributesWriter;
    use cloudevents::{EventBuilder as _, EventBuilderV10};

    fn take_string(map: &mut Map<String, Value>, name: &str) -> Option<String> {
        match map.remove(name) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    map.remove("specversion");
    // The builder, not `Event::default()`: that makes a random id and reads the host
    // name, per event, only to be overwritten.
    let mut event = EventBuilderV10::new()
        .id(take_string(&mut map, "id").unwrap_or_default())
        .ty(take_string(&mut map, "type").unwrap_or_default())
        .source(take_string(&mut map, "source").unwrap_or_default())
        .build()
        .map_err(|e| DecodeError::Invalid(e.to_string()))?;
    let datacontenttype = take_string(&mut map, "datacontenttype");
    let dataschema = take_string(&mut map, "dataschema")
        .map(|schema| {
            url::Url::parse(&schema).map_err(|e| {
                DecodeError::Invalid(format!(
                    "attribute \"dataschema\" is not a URL (\"{schema}\"): {e}"
                ))
            })
        })
        .transpose()?;
    event.set_dataschema(dataschema);
    event.set_subject(take_string(&mut map, "subject"));
    let time = take_string(&mut map, "time")
        .and_then(|time| chrono::DateTime::parse_from_rfc3339(&time).ok())
        .map(|time| time.with_timezone(&chrono::Utc));
    event.set_time(time);

    let is_json = {
        let ct = datacontenttype.as_deref().unwrap_or(JSON_CONTENT_TYPE);
        ct.starts_with("application/json") || ct.starts_with("text/json") || ct.ends_with("+json")
    };
    let base64_bytes = |value: Value| -> Result<Vec<u8>, DecodeError> {
        use base64::Engine as _;
        let Value::String(text) = value else {
            return Err(DecodeError::Invalid(format!(
                "\"data_base64\" must be a string, found {}",
                json_kind(&value)
            )));
        };
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| DecodeError::Invalid(format!("\"data_base64\" is not base64: {e}")))
    };
    let mut base64_duplicate = None;
    let data = match (map.remove("data"), map.remove("data_base64")) {
        (Some(data), None) if is_json => Some(Data::Json(data)),
        (Some(Value::String(text)), None) => Some(Data::String(text)),
        (Some(other), None) => {
            return Err(DecodeError::Invalid(format!(
                "\"data\" must be a string under datacontenttype {:?}, found {}",
                datacontenttype.as_deref().unwrap_or_default(),
                json_kind(&other)
            )))
        }
        (None, Some(encoded)) => {
            let bytes = base64_bytes(encoded)?;
            match json::parse(&bytes) {
                Ok(parsed) if is_json => {
                    base64_duplicate = parsed.duplicate;
                    Some(Data::Json(parsed.value))
                }
                _ => Some(Data::Binary(bytes)),
            }
        }
        (None, None) => None,
        (Some(_), Some(_)) => unreachable!("check_document refuses data with data_base64"),
    };
    event.set_datacontenttype(datacontenttype);
    if let Some(data) = data {
        event.set_data_unchecked(data);
    }
    for (name, value) in map {
        let value = match value {
            Value::Null => continue,
            Value::String(s) => ExtensionValue::String(s),
            Value::Bool(b) => ExtensionValue::Boolean(b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => ExtensionValue::Integer(i),
                None => unreachable!("check_document refuses non-integer extensions"),
            },
            Value::Array(_) | Value::Object(_) => {
                unreachable!("check_document refuses structured extensions")
            }
        };
        event.set_extension(&name, value);
    }
    Ok((event, base64_duplicate))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Documents that exercise every attribute, extension kind and `data` rule.
    fn edge_case_documents() -> Vec<Value> {
        vec![
            json!({
                "specversion": "1.0", "id": "1", "type": "sh.keptn.event.deployment.triggered",
                "source": "shipyard-controller", "time": "2021-01-02T10:00:00.123+02:00",
                "datacontenttype": "application/json", "subject": "s",
                "dataschema": "https://example.com/schema", "shkeptncontext": "ctx",
                "alpha": 5, "beta": true, "nothing": null, "gitcommitid": "abc",
                "data": {"project": "p", "b": [1, 2.5, "x"], "a": {"n": null}}
            }),
            json!({"specversion": "1.0", "id": "2", "type": "t", "source": "s",
                "datacontenttype": "application/octet-stream", "data_base64": "aGVsbG8="}),
            json!({"specversion": "1.0", "id": "3", "type": "t", "source": "s",
                "data_base64": "eyJhIjogMX0="}),
            json!({"specversion": "1.0", "id": "4", "type": "t", "source": "s",
                "data_base64": "aGVsbG8="}),
            json!({"specversion": "1.0", "id": "5", "type": "t", "source": "s",
                "datacontenttype": "text/plain", "data": "plain"}),
            json!({"specversion": "1.0", "id": "6", "type": "t", "source": "s", "data": null}),
            json!({"specversion": "1.0", "id": "7", "type": "t", "source": "s",
                "data": "{\"project\": \"p\"}", "datacontenttype": "application/cloudevents+json"}),
            json!({"specversion": "1.0", "id": "8", "type": "t", "source": "s", "time": null,
                "subject": null}),
        ]
    }

    #[test]
    fn a_replay_has_a_new_id_names_the_old_one_and_keeps_the_rest() {
        let original = json!({
            "specversion": "1.0", "id": "old", "type": "sh.keptn.event.deployment.triggered",
            "source": "shipyard-controller", "shkeptncontext": "ctx", "traceparent": "tp",
            "replayof": "older", "data": {"project": "p"}
        });
        let event = KeptnEvent::decode(&serde_json::to_vec(&original).unwrap()).unwrap();
        let replay = event.replay_as("new").unwrap();
        let decoded: Value = serde_json::from_slice(&replay.encode()).unwrap();
        let mut expected = original;
        expected["id"] = json!("new");
        expected["replayof"] = json!("old");
        assert_eq!(decoded, expected);

        let twice =
            br#"{"specversion":"1.0","id":"x","type":"t","source":"s","data":{"a":1,"a":2}}"#;
        let event = KeptnEvent::decode(twice).unwrap();
        assert!(
            event.replay_as("new").is_none(),
            "a member named twice is not re-encoded"
        );
    }

    #[test]
    fn direct_decoding_matches_the_sdk_deserializer() {
        for document in edge_case_documents() {
            let bytes = serde_json::to_vec(&document).unwrap();
            let direct = KeptnEvent::decode(&bytes).unwrap();
            let sdk: Event = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(direct.inner(), &sdk, "{document}");
        }
        for refused in [
            json!({"specversion": "1.0", "id": "e", "type": "t", "source": "s",
                "datacontenttype": "text/plain", "data": {"a": 1}}),
            json!({"specversion": "1.0", "id": "e", "type": "t", "source": "s",
                "data_base64": "%%%"}),
            json!({"specversion": "1.0", "id": "e", "type": "t", "source": "s",
                "dataschema": "not a url"}),
        ] {
            let bytes = serde_json::to_vec(&refused).unwrap();
            assert!(KeptnEvent::decode(&bytes).is_err(), "{refused}");
            assert!(
                serde_json::from_slice::<Event>(&bytes).is_err(),
                "{refused}"
            );
        }
    }

    fn base() -> Value {
        json!({
            "specversion": "1.0",
            "id": "c4d3a334-6cb9-4e8c-a372-7e0b45942f53",
            "source": "shipyard-controller",
            "type": "sh.keptn.event.deployment.triggered",
            "datacontenttype": "application/json",
            "data": {"project": "sockshop", "stage": "dev", "service": "carts"},
            "shkeptncontext": "a3e5f16d-8888-4720-82c7-6995062905c1",
            "gitcommitid": "521747298a3790fde1710f3aa2d03b55020575aa",
            "shkeptnspecversion": "0.2.4",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "congo=t61rcWkgMzE"
        })
    }

    /// The encoding as it was first written (a JSON tree sorted by member rank), kept
    /// as the reference the direct encoder must match byte for byte.
    fn encode_through_a_tree(event: &KeptnEvent) -> Vec<u8> {
        let rank = |name: &str| {
            ATTRIBUTE_ORDER
                .iter()
                .position(|a| *a == name)
                .unwrap_or(ATTRIBUTE_ORDER.len() + usize::from(DATA_MEMBERS.contains(&name)))
        };
        let Value::Object(map) = serde_json::to_value(event.inner()).unwrap() else {
            unreachable!()
        };
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        entries.sort_by(|(a, _), (b, _)| (rank(a), *a).cmp(&(rank(b), *b)));
        let mut bytes = b"{".to_vec();
        for (index, (k, v)) in entries.into_iter().enumerate() {
            if index > 0 {
                bytes.push(b',');
            }
            bytes.extend(serde_json::to_vec(k).unwrap());
            bytes.push(b':');
            bytes.extend(serde_json::to_vec(v).unwrap());
        }
        bytes.push(b'}');
        bytes
    }

    #[test]
    fn direct_encoding_matches_the_sorted_tree_encoding() {
        for document in edge_case_documents() {
            let event = decode(&document).unwrap();
            assert_eq!(
                String::from_utf8(event.encode()).unwrap(),
                String::from_utf8(encode_through_a_tree(&event)).unwrap()
            );
        }
    }

    fn decode(v: &Value) -> Result<KeptnEvent, DecodeError> {
        KeptnEvent::decode(&serde_json::to_vec(v).unwrap())
    }

    fn with(mut v: Value, key: &str, value: Value) -> Value {
        v.as_object_mut().unwrap().insert(key.to_owned(), value);
        v
    }

    fn without(mut v: Value, key: &str) -> Value {
        v.as_object_mut().unwrap().remove(key);
        v
    }

    #[test]
    fn accessors_read_keptn_extensions() {
        let ev = decode(&with(base(), "triggeredid", json!("t-1"))).unwrap();
        assert_eq!(ev.id(), "c4d3a334-6cb9-4e8c-a372-7e0b45942f53");
        assert_eq!(ev.ty(), "sh.keptn.event.deployment.triggered");
        assert_eq!(ev.source(), "shipyard-controller");
        assert_eq!(ev.time(), None);
        assert_eq!(
            ev.keptn_context(),
            Some("a3e5f16d-8888-4720-82c7-6995062905c1")
        );
        assert_eq!(ev.triggered_id(), Some("t-1"));
        assert_eq!(
            ev.git_commit_id(),
            Some("521747298a3790fde1710f3aa2d03b55020575aa")
        );
        assert_eq!(ev.keptn_spec_version(), Some("0.2.4"));
        assert!(ev.traceparent().unwrap().starts_with("00-0af7"));
        assert_eq!(ev.tracestate(), Some("congo=t61rcWkgMzE"));
        assert_eq!(ev.event_type().unwrap().task, "deployment");
        assert_eq!(ev.inner().id(), ev.id());
    }

    #[test]
    fn time_is_parsed() {
        let ev = decode(&with(base(), "time", json!("2021-06-01T10:00:00.5+02:00"))).unwrap();
        assert_eq!(
            ev.time().unwrap().to_rfc3339(),
            "2021-06-01T08:00:00.500+00:00"
        );
        let err = decode(&with(base(), "time", json!("yesterday"))).unwrap_err();
        assert!(matches!(err, DecodeError::Invalid(_)), "{err:?}");
        assert!(err.to_string().contains("\"time\""), "{err}");
    }

    #[test]
    fn rejects_spec_version_0_3() {
        let err = decode(&with(base(), "specversion", json!("0.3"))).unwrap_err();
        assert!(
            matches!(&err, DecodeError::SpecVersion(v) if v == "0.3"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "unsupported CloudEvents specversion \"0.3\": only \"1.0\" is accepted"
        );
        let err = decode(&with(base(), "specversion", json!(1.0))).unwrap_err();
        assert!(matches!(err, DecodeError::SpecVersion(_)), "{err:?}");
        let err = decode(&without(base(), "specversion")).unwrap_err();
        assert!(
            matches!(err, DecodeError::MissingAttribute("specversion")),
            "{err:?}"
        );
    }

    #[test]
    fn rejects_missing_or_empty_required_attributes() {
        for name in ["id", "source", "type"] {
            let err = decode(&without(base(), name)).unwrap_err();
            assert!(
                matches!(err, DecodeError::MissingAttribute(n) if n == name),
                "{name}: {err:?}"
            );
            let err = decode(&with(base(), name, json!(""))).unwrap_err();
            assert!(
                matches!(err, DecodeError::MissingAttribute(n) if n == name),
                "{name}: {err:?}"
            );
            let err = decode(&with(base(), name, Value::Null)).unwrap_err();
            assert!(
                matches!(err, DecodeError::MissingAttribute(n) if n == name),
                "{name}: {err:?}"
            );
        }
        assert_eq!(
            decode(&without(base(), "id")).unwrap_err().to_string(),
            "required CloudEvents attribute \"id\" is missing or empty"
        );
        let err = decode(&with(base(), "id", json!(42))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid CloudEvent: attribute \"id\" must be a string, found a number"
        );
    }

    #[test]
    fn rejects_non_json_and_non_objects() {
        let err = KeptnEvent::decode(b"not json").unwrap_err();
        assert!(matches!(err, DecodeError::NotJson(_)), "{err:?}");
        assert!(err.to_string().starts_with("message is not JSON"), "{err}");
        let err = KeptnEvent::decode(b"[1,2]").unwrap_err();
        assert!(matches!(err, DecodeError::NotAnObject), "{err:?}");
        let err = KeptnEvent::decode(b"\"x\"").unwrap_err();
        assert!(matches!(err, DecodeError::NotAnObject), "{err:?}");
        let err = KeptnEvent::decode(b"").unwrap_err();
        assert!(matches!(err, DecodeError::NotJson(_)), "{err:?}");
    }

    #[test]
    fn rejects_structured_extension_values() {
        let err = decode(&with(base(), "labels", json!({"a": "b"}))).unwrap_err();
        assert!(matches!(err, DecodeError::Invalid(_)), "{err:?}");
        assert!(err.to_string().contains("\"labels\" is an object"), "{err}");
        let err = decode(&with(base(), "ratio", json!(0.5))).unwrap_err();
        assert!(matches!(err, DecodeError::Invalid(_)), "{err:?}");
        // Integers and booleans are valid extension values.
        let ev = decode(&with(with(base(), "count", json!(3)), "flag", json!(true))).unwrap();
        assert_eq!(ev.extension_str("count"), None);
        assert_eq!(
            ev.inner().extension("count"),
            Some(&ExtensionValue::Integer(3))
        );
    }

    #[test]
    fn rejects_control_characters_in_every_string_attribute() {
        for (name, value) in [
            ("id", "a\nb"),
            ("source", "shipyard\r\nX-Injected: 1"),
            ("type", "sh.keptn.event.deployment.triggered\n"),
            ("subject", "\u{0}"),
            ("datacontenttype", "application/json\u{7f}"),
            ("shkeptncontext", "ctx\n"),
            ("triggeredid", "\u{85}"),
            ("gitcommitid", "abc\t"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\n",
            ),
            ("tracestate", "congo=1\r\n"),
            ("anyextension", "x\u{1b}[31m"),
        ] {
            let err = decode(&with(base(), name, json!(value))).unwrap_err();
            assert!(matches!(err, DecodeError::Invalid(_)), "{name}: {err:?}");
            let message = err.to_string();
            assert!(
                message.starts_with(&format!(
                    "invalid CloudEvent: attribute \"{name}\" contains the control character U+"
                )),
                "{message}"
            );
            assert!(!message.chars().any(char::is_control), "{message:?}");
        }
        // Inside data, control characters are data (a message may have line breaks).
        let ev = decode(&with(base(), "data", json!({"message": "line\nbreak"}))).unwrap();
        assert_eq!(ev.data_json().unwrap()["message"], "line\nbreak");
        // Non-ASCII that is not a control character is fine.
        assert!(decode(&with(base(), "source", json!("shipyard-é-\u{2028}"))).is_ok());
    }

    #[test]
    fn a_member_named_twice_at_the_top_level_is_refused() {
        let text = r#"{"specversion": "1.0", "id": "a", "type": "t", "source": "s", "id": "b"}"#;
        let err = KeptnEvent::decode(text.as_bytes()).unwrap_err();
        assert!(matches!(err, DecodeError::Invalid(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "invalid CloudEvent: member \"id\" appears more than once in the event: JSON \
             members must be unique, and which one counts would be a guess; send it once"
        );
        // Even when data repeats a member first.
        let text = r#"{"specversion": "1.0", "data": {"p": 1, "p": 2}, "id": "a", "type": "t",
            "source": "s", "source": "s"}"#;
        let err = KeptnEvent::decode(text.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("member \"source\""), "{err}");
    }

    #[test]
    fn a_member_named_twice_in_data_fails_typed_data_naming_it() {
        let expected = |path: &str, key: &str| {
            format!(
                "data.{path}: member \"{key}\" appears more than once: JSON members must be \
                 unique, and which one counts would be a guess; send it once"
            )
        };
        let text = r#"{"specversion": "1.0", "id": "a", "type": "t", "source": "s",
            "data": {"project": "a", "stage": "dev", "project": "b"}}"#;
        let ev = KeptnEvent::decode(text.as_bytes()).unwrap();
        let err = ev.typed_data::<crate::data::CommonData>().unwrap_err();
        assert_eq!(err.to_string(), expected("project", "project"));
        // The last one is what data_json shows (the reply copies it, as Go would read it).
        assert_eq!(ev.data_json().unwrap()["project"], "b");

        let text = r#"{"specversion": "1.0", "id": "a", "type": "t", "source": "s",
            "data": {"deployment": {"deploymentstrategy": "direct", "deploymentstrategy": "x"}}}"#;
        let ev = KeptnEvent::decode(text.as_bytes()).unwrap();
        let err = ev
            .typed_data::<crate::data::DeploymentTriggeredData>()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            expected("deployment.deploymentstrategy", "deploymentstrategy")
        );

        // data as a string holding JSON, and as base64.
        let ev = decode(&with(
            base(),
            "data",
            json!(r#"{"service": "a", "service": "b"}"#),
        ))
        .unwrap();
        let err = ev.typed_data::<crate::data::CommonData>().unwrap_err();
        assert_eq!(err.to_string(), expected("service", "service"));
        use base64::Engine as _;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(r#"{"stage": 1, "stage": 2}"#);
        let ev = decode(&with(
            without(base(), "data"),
            "data_base64",
            json!(encoded),
        ))
        .unwrap();
        let err = ev.typed_data::<crate::data::CommonData>().unwrap_err();
        assert_eq!(err.to_string(), expected("stage", "stage"));

        // Found by the `data` fuzz target: the path of a member named twice showed a line
        // break in its name raw.
        let text = r#"{"specversion": "1.0", "id": "a", "type": "t", "source": "s",
            "data": {"servic\ne": "a", "servic\ne": "b"}}"#;
        let ev = KeptnEvent::decode(text.as_bytes()).unwrap();
        let err = ev.typed_data::<crate::data::CommonData>().unwrap_err();
        assert_eq!(err.to_string(), expected("servic\\ne", "servic\\ne"));
        assert!(!err.to_string().chars().any(char::is_control), "{err}");
    }

    #[test]
    fn floats_survive_a_round_trip_exactly() {
        // Found by the property tests: without serde_json's float_roundtrip, re-reading an
        // encoded event could change the last digit of a float in data.
        let ev = decode(&with(
            base(),
            "data",
            json!({"values": 1.3075770669438154e-183}),
        ))
        .unwrap();
        let again = KeptnEvent::decode(&ev.encode()).unwrap();
        assert_eq!(again, ev);
        assert_eq!(again.encode(), ev.encode());
    }

    #[test]
    fn rejects_data_and_data_base64_together() {
        let err = decode(&with(base(), "data_base64", json!("e30="))).unwrap_err();
        assert!(matches!(err, DecodeError::Invalid(_)), "{err:?}");
    }

    #[test]
    fn encode_round_trips_and_is_ordered() {
        let original = with(base(), "time", json!("2021-06-01T08:00:00Z"));
        let ev = decode(&original).unwrap();
        let bytes = ev.encode();
        let back: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, original);
        let text = String::from_utf8(bytes.clone()).unwrap();
        let pos = |k: &str| text.find(&format!("\"{k}\":")).unwrap();
        assert!(pos("specversion") < pos("id"));
        assert!(pos("id") < pos("type"));
        assert!(pos("type") < pos("source"));
        assert!(pos("time") < pos("gitcommitid"));
        assert!(pos("gitcommitid") < pos("shkeptncontext"));
        assert!(pos("tracestate") < pos("data"));
        // Same event, same bytes.
        assert_eq!(decode(&back).unwrap().encode(), bytes);
        assert_eq!(KeptnEvent::decode(&bytes).unwrap(), ev);
    }

    #[test]
    fn data_as_json_string_is_accepted() {
        let inner = json!({"project": "sockshop", "stage": "dev", "service": "carts"});
        let ev = decode(&with(base(), "data", json!(inner.to_string()))).unwrap();
        assert_eq!(ev.data_json().as_deref(), Some(&inner));
        let common: crate::data::CommonData = ev.typed_data().unwrap();
        assert_eq!(common.service.as_deref(), Some("carts"));

        // The same with a non-JSON content type, where the SDK keeps data as a string.
        let ev = decode(&with(
            with(base(), "datacontenttype", json!("text/plain")),
            "data",
            json!(inner.to_string()),
        ))
        .unwrap();
        assert_eq!(ev.data_json().as_deref(), Some(&inner));

        // A string that is not a JSON object stays a string.
        let ev = decode(&with(base(), "data", json!("hello"))).unwrap();
        assert_eq!(ev.data_json().as_deref(), Some(&json!("hello")));
        let err = ev.typed_data::<crate::data::CommonData>().unwrap_err();
        assert!(
            err.to_string().starts_with("data: invalid type: string"),
            "{err}"
        );
    }

    #[test]
    fn data_base64_json_is_read() {
        // base64 of {"project":"p"}
        let ev = decode(&with(
            without(base(), "data"),
            "data_base64",
            json!("eyJwcm9qZWN0IjoicCJ9"),
        ))
        .unwrap();
        assert_eq!(ev.data_json().as_deref(), Some(&json!({"project": "p"})));
    }

    #[test]
    fn missing_data() {
        let ev = decode(&without(base(), "data")).unwrap();
        assert_eq!(ev.data_json(), None);
        assert_eq!(
            ev.typed_data::<crate::data::CommonData>(),
            Err(DataError::Missing)
        );
        let ev = decode(&with(base(), "data", Value::Null)).unwrap();
        assert_eq!(
            ev.typed_data::<crate::data::CommonData>(),
            Err(DataError::Missing)
        );
    }

    #[test]
    fn typed_data_error_names_the_path() {
        let ev = decode(&with(
            base(),
            "data",
            json!({
                "project": "sockshop",
                "deployment": {"deploymentstrategy": "direct", "deploymentURIsLocal": "x"}
            }),
        ))
        .unwrap();
        let err = ev
            .typed_data::<crate::data::DeploymentTriggeredData>()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "data.deployment.deploymentURIsLocal: invalid type: string \"x\", expected a sequence"
        );
        assert!(
            matches!(err, DataError::Invalid { ref path, .. } if path == "deployment.deploymentURIsLocal")
        );

        let ev = decode(&with(
            base(),
            "data",
            json!({"action": {"name": "n", "action": 5}}),
        ))
        .unwrap();
        let err = ev
            .typed_data::<crate::data::ActionTriggeredData>()
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("data.action.action: invalid type: integer `5`"),
            "{err}"
        );
    }

    #[test]
    fn typed_data_error_for_common_fields_names_the_value() {
        // Serde loses paths inside flattened fields; `from_value` recovers them.
        let cases = [
            (
                json!({"status": "done"}),
                "data.status: invalid status \"done\": expected one of succeeded, errored, \
                 unknown, aborted",
            ),
            (
                json!({"project": 5}),
                "data.project: invalid type: integer `5`, expected a string",
            ),
            (
                json!({"labels": {"team": 1}}),
                "data.labels.team: invalid type: integer `1`, expected a string",
            ),
        ];
        for (data, expected) in cases {
            let ev = decode(&with(base(), "data", data)).unwrap();
            let err = ev
                .typed_data::<crate::data::DeploymentTriggeredData>()
                .unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
        let ev = decode(&with(base(), "data", json!([1]))).unwrap();
        let err = ev
            .typed_data::<crate::data::DeploymentTriggeredData>()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "data: invalid type: sequence, expected struct DeploymentTriggeredData"
        );
    }
}
