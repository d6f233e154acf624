//! What `helm-service dead-letters show` prints of a dead-lettered payload: the event with the
//! values under `data.configurationChange.values` hidden (pure).
//!
//! A Keptn `deployment.triggered` event carries the Helm values to merge there, and values are
//! where charts take passwords and tokens; a dead letter keeps the event, so printing it as it
//! is would put those secrets on a terminal or in a ticket. Every leaf value under that member
//! prints as `"<redacted>"` while keys and arrays stay, so an operator still sees what was set.
//! `--show-values` prints the payload as it is. Replays never read this: they send the
//! original.
//!
//! A payload that is JSON is redacted structurally. One that is not (the record keeps only the
//! first 64 KiB of a larger event, or the message was never JSON) cannot be, so it is shown up
//! to the first `configurationChange` and the rest withheld.

use contracts::json::parse_unambiguous;
use serde_json::Value;

/// What a hidden value prints as.
pub const REDACTED: &str = "<redacted>";

/// The member whose leaves are hidden.
const SECTION: [&str; 3] = ["data", "configurationChange", "values"];

/// The option that shows the payload as it is.
const SHOW_VALUES: &str = "--show-values shows them";

/// Replaces every leaf (string, number, boolean, null) under `data.configurationChange.values`
/// of `event` by [`REDACTED`], keeping object keys and array lengths; returns how many were
/// replaced (0 when the member is absent or nothing leads to it, e.g. `data` is a string).
pub fn redact_values(event: &mut Value) -> usize {
    let mut at = event;
    for key in SECTION {
        match at.get_mut(key) {
            Some(inner) => at = inner,
            None => return 0,
        }
    }
    redact_leaves(at)
}

fn redact_leaves(value: &mut Value) -> usize {
    match value {
        Value::Object(members) => members.values_mut().map(redact_leaves).sum(),
        Value::Array(items) => items.iter_mut().map(redact_leaves).sum(),
        leaf => {
            *leaf = Value::String(REDACTED.to_owned());
            1
        }
    }
}

/// A payload as `show` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShownPayload<'a> {
    /// Nothing to hide: the payload as it is.
    AsIs(&'a str),
    /// The event re-encoded (compact, members in name order) with `values` leaves hidden.
    Redacted { text: String, values: usize },
    /// Not a JSON document: the text before the first `configurationChange`, the rest
    /// (`withheld_bytes`) not shown.
    Cut {
        kept: &'a str,
        withheld_bytes: usize,
    },
}

impl ShownPayload<'_> {
    /// The text to print.
    pub fn text(&self) -> &str {
        match self {
            ShownPayload::AsIs(text) => text,
            ShownPayload::Redacted { text, .. } => text,
            ShownPayload::Cut { kept, .. } => kept,
        }
    }

    /// Whether anything of the payload is hidden.
    pub fn is_redacted(&self) -> bool {
        !matches!(self, ShownPayload::AsIs(_))
    }

    /// What was hidden, in a sentence for the text output.
    pub fn note(&self) -> Option<String> {
        match self {
            ShownPayload::AsIs(_) => None,
            ShownPayload::Redacted { values, .. } => Some(format!(
                "{values} value(s) under data.configurationChange.values shown as \"{REDACTED}\" \
                 (re-encoded); {SHOW_VALUES}"
            )),
            ShownPayload::Cut { withheld_bytes, .. } => Some(format!(
                "not a whole JSON document, so its values cannot be picked out: the last \
                 {withheld_bytes} bytes, from configurationChange on, are withheld; {SHOW_VALUES}"
            )),
        }
    }
}

/// `payload` (a record's payload text) with the values under
/// `data.configurationChange.values` hidden.
pub fn shown_payload(payload: &str) -> ShownPayload<'_> {
    // A document that names a member twice is re-encoded even with nothing to hide: its text
    // may hold a repeated member the parsed value dropped.
    let (mut event, unambiguous) = match parse_unambiguous(payload.as_bytes()) {
        Some(event) => (event, true),
        None => match serde_json::from_str::<Value>(payload) {
            Ok(event) => (event, false),
            Err(_) => return cut(payload),
        },
    };
    let values = redact_values(&mut event);
    if values == 0 && unambiguous {
        return ShownPayload::AsIs(payload);
    }
    ShownPayload::Redacted {
        text: event.to_string(),
        values,
    }
}

fn cut(payload: &str) -> ShownPayload<'_> {
    match payload.find("configurationChange") {
        None => ShownPayload::AsIs(payload),
        Some(at) => ShownPayload::Cut {
            kept: &payload[..at],
            withheld_bytes: payload.len() - at,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(values: Value) -> Value {
        json!({
            "id": "e1",
            "type": "sh.keptn.event.deployment.triggered",
            "data": {
                "project": "shop",
                "configurationChange": {"values": values},
                "deployment": {"deploymentstrategy": "direct"}
            }
        })
    }

    #[test]
    fn nested_maps_and_arrays_keep_their_shape_and_lose_their_leaves() {
        let mut event = deployment(json!({
            "image": "carts:1",
            "db": {"password": "hunter2", "port": 5432, "tls": true, "ca": null},
            "tokens": ["t1", {"key": "t2"}, [3]],
            "empty": {},
            "none": []
        }));
        assert_eq!(redact_values(&mut event), 8);
        assert_eq!(
            event["data"]["configurationChange"]["values"],
            json!({
                "image": REDACTED,
                "db": {"password": REDACTED, "port": REDACTED, "tls": REDACTED, "ca": REDACTED},
                "tokens": [REDACTED, {"key": REDACTED}, [REDACTED]],
                "empty": {},
                "none": []
            })
        );
        // Nothing else is touched.
        assert_eq!(event["data"]["project"], "shop");
        assert_eq!(event["data"]["deployment"]["deploymentstrategy"], "direct");
        assert_eq!(event["id"], "e1");
    }

    #[test]
    fn an_absent_section_changes_nothing() {
        for mut event in [
            json!({"id": "e1", "data": {"project": "shop"}}),
            json!({"id": "e1", "data": {"configurationChange": {}}}),
            json!({"id": "e1"}),
            json!({"id": "e1", "values": {"password": "x"}}),
            json!({"id": "e1", "data": {"values": {"password": "x"}}}),
        ] {
            let before = event.clone();
            assert_eq!(redact_values(&mut event), 0, "{before}");
            assert_eq!(event, before);
        }
    }

    #[test]
    fn values_that_are_not_objects_are_leaves_or_lists_of_them() {
        let mut event = deployment(json!("password=hunter2"));
        assert_eq!(redact_values(&mut event), 1);
        assert_eq!(event["data"]["configurationChange"]["values"], REDACTED);
        let mut event = deployment(json!(["a", 1]));
        assert_eq!(redact_values(&mut event), 2);
        assert_eq!(
            event["data"]["configurationChange"]["values"],
            json!([REDACTED, REDACTED])
        );
        // Nothing leads to the section: data, or configurationChange, is not an object.
        for mut event in [
            json!({"data": "configurationChange"}),
            json!({"data": ["x"]}),
            json!({"data": {"configurationChange": "values"}}),
            json!("a string"),
            json!(null),
            json!([{"data": {"configurationChange": {"values": {"a": 1}}}}]),
        ] {
            let before = event.clone();
            assert_eq!(redact_values(&mut event), 0, "{before}");
            assert_eq!(event, before);
        }
    }

    #[test]
    fn a_payload_with_values_is_shown_re_encoded_without_them() {
        let payload = deployment(json!({"db": {"password": "hunter2"}})).to_string();
        let shown = shown_payload(&payload);
        assert!(shown.is_redacted());
        assert!(!shown.text().contains("hunter2"), "{}", shown.text());
        assert!(shown.text().contains(r#""password":"<redacted>""#));
        assert!(shown.note().unwrap().contains("--show-values"));
        assert!(matches!(shown, ShownPayload::Redacted { values: 1, .. }));
    }

    #[test]
    fn a_payload_with_nothing_to_hide_is_shown_as_it_is() {
        for payload in [
            "{ \"id\": \"e1\",  \"data\": {\"project\": \"shop\"} }",
            r#"{"data": {"configurationChange": {"values": {}}}}"#,
            "not an event",
            "",
        ] {
            assert_eq!(shown_payload(payload), ShownPayload::AsIs(payload));
            assert_eq!(shown_payload(payload).note(), None);
        }
    }

    #[test]
    fn a_member_named_twice_is_never_shown_as_written() {
        // serde_json keeps the last `data`: the first, with the password, must not print.
        let payload =
            r#"{"data": {"configurationChange": {"values": {"pw": "hunter2"}}}, "data": {}}"#;
        let shown = shown_payload(payload);
        assert!(shown.is_redacted());
        assert!(!shown.text().contains("hunter2"), "{}", shown.text());
        let payload =
            r#"{"data": {"configurationChange": {"values": {"pw": "a", "pw": "hunter2"}}}}"#;
        let shown = shown_payload(payload);
        assert!(!shown.text().contains("hunter2"), "{}", shown.text());
    }

    #[test]
    fn a_payload_that_is_not_json_is_cut_before_its_values() {
        let whole =
            deployment(json!({"db": {"password": "hunter2"}, "pad": "x".repeat(100)})).to_string();
        let excerpt = &whole[..whole.len() - 20];
        let shown = shown_payload(excerpt);
        let ShownPayload::Cut {
            kept,
            withheld_bytes,
        } = shown.clone()
        else {
            panic!("{shown:?}")
        };
        assert!(!kept.contains("hunter2") && !kept.contains("configurationChange"));
        // Members are in name order here: `configurationChange` comes first in `data`.
        assert_eq!(kept, r#"{"data":{""#);
        assert_eq!(kept.len() + withheld_bytes, excerpt.len());
        assert!(shown.note().unwrap().contains("withheld"));
    }
}
