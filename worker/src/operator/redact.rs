//! What `helm-service dead-letters show` prints of a dead-lettered payload: the event with the
//! values under `data.configurationChange.values` hidden (pure).
//!
//! A Keptn `deployment.triggered` event carries the Helm values to merge there, and values are
//! where charts take passwords and tokens; a dead letter keeps the event, so printing it as it
//! is would put those secrets on a terminal or in a ticket. Every leaf value (string, number,
//! boolean, null) under that member prints as `"<redacted>"` while keys, objects and arrays
//! stay, so an operator still sees what was set. `--show-values` prints the payload as it is.
//! Replays never read this: they send the original.
//!
//! The redaction works on the text, token by token, rather than on a parsed value, for three
//! reasons: a record keeps only the first 64 KiB of a larger event, which no parser accepts but
//! whose values still need hiding (the large events are the ones with many values); the rest
//! of the text prints as the sender wrote it (member order, spacing); and a member named twice
//! is hidden at each place it is written (a parsed value keeps only the last). Text that is not
//! JSON as far as it goes is shown only up to the first `configurationChange`.

/// What a hidden value prints as.
pub const REDACTED: &str = "<redacted>";

/// The member whose leaves are hidden: its path of object members from the document's root.
const SECTION: [&str; 3] = ["data", "configurationChange", "values"];

/// The option that shows the payload as it is.
const SHOW_VALUES: &str = "--show-values shows them";

/// A JSON text with the leaves under `data.configurationChange.values` replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redacted {
    /// The text, the same as the input but for the leaves replaced by `"<redacted>"`, and,
    /// when it ends inside a hidden leaf, without that leaf's start.
    pub text: String,
    /// How many leaves were replaced.
    pub values: usize,
    /// Whether the text was one whole JSON document (false: it ended early, e.g. cut).
    pub complete: bool,
}

/// The text is not JSON: something unexpected at byte `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotJson {
    pub at: usize,
}

/// One open object or array.
enum Frame {
    /// An object: the member being read (or last read), and whether a member name comes next.
    Object {
        key: Option<String>,
        awaiting_key: bool,
    },
    Array,
}

/// `text` with every leaf under `data.configurationChange.values` replaced by
/// `"<redacted>"`. A text that ends early (a record's 64 KiB excerpt) is redacted as far as
/// it goes. Not a strict validator: it follows the structure closely enough to know where
/// every value is, and refuses what is not JSON at all.
pub fn redact_text(text: &str) -> Result<Redacted, NotJson> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut stack: Vec<Frame> = Vec::new();
    let mut values = 0;
    let mut root_done = false;
    let mut at = 0;
    let cut_short = |out: String, values| Redacted {
        text: out,
        values,
        complete: false,
    };
    while at < bytes.len() {
        let byte = bytes[at];
        if matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            out.push(char::from(byte));
            at += 1;
            continue;
        }
        if root_done {
            return Err(NotJson { at });
        }
        let awaiting_key = matches!(
            stack.last(),
            Some(Frame::Object {
                awaiting_key: true,
                ..
            })
        );
        match byte {
            b'{' | b'[' if !awaiting_key => {
                stack.push(match byte {
                    b'{' => Frame::Object {
                        key: None,
                        awaiting_key: true,
                    },
                    _ => Frame::Array,
                });
                out.push(char::from(byte));
                at += 1;
            }
            b'}' | b']' => {
                match (stack.pop(), byte) {
                    (Some(Frame::Object { .. }), b'}') | (Some(Frame::Array), b']') => {}
                    _ => return Err(NotJson { at }),
                }
                out.push(char::from(byte));
                at += 1;
                root_done = stack.is_empty();
            }
            b',' => {
                match stack.last_mut() {
                    Some(Frame::Object { awaiting_key, .. }) => *awaiting_key = true,
                    Some(Frame::Array) => {}
                    None => return Err(NotJson { at }),
                }
                out.push(',');
                at += 1;
            }
            b':' if matches!(
                stack.last(),
                Some(Frame::Object {
                    key: Some(_),
                    awaiting_key: false
                })
            ) =>
            {
                out.push(':');
                at += 1;
            }
            b'"' => {
                let Some(end) = string_end(bytes, at) else {
                    // Ends inside the string: a name or a value not hidden shows as far as it
                    // goes, a hidden value not at all.
                    if awaiting_key || !in_section(&stack) {
                        out.push_str(&text[at..]);
                    }
                    return Ok(cut_short(out, values));
                };
                let token = &text[at..end];
                if awaiting_key {
                    let name: String = serde_json::from_str(token).map_err(|_| NotJson { at })?;
                    if let Some(Frame::Object { key, awaiting_key }) = stack.last_mut() {
                        *key = Some(name);
                        *awaiting_key = false;
                    }
                    out.push_str(token);
                } else {
                    values += leaf(&mut out, token, &stack);
                    root_done = stack.is_empty();
                }
                at = end;
            }
            _ if !awaiting_key => {
                let end = bytes[at..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))
                    .map_or(bytes.len(), |length| at + length);
                let token = &text[at..end];
                if end == bytes.len() && !stack.is_empty() {
                    // Ends inside a number or a word (or right after one): it may be cut.
                    if !in_section(&stack) {
                        out.push_str(token);
                    }
                    return Ok(cut_short(out, values));
                }
                if !is_literal(token) {
                    return Err(NotJson { at });
                }
                values += leaf(&mut out, token, &stack);
                root_done = stack.is_empty();
                at = end;
            }
            _ => return Err(NotJson { at }),
        }
    }
    Ok(Redacted {
        text: out,
        values,
        complete: root_done,
    })
}

/// Writes the leaf `token` (a string or literal as written) at the place `stack` says:
/// hidden in the section. Returns how many were hidden (0 or 1).
fn leaf(out: &mut String, token: &str, stack: &[Frame]) -> usize {
    if in_section(stack) {
        out.push('"');
        out.push_str(REDACTED);
        out.push('"');
        1
    } else {
        out.push_str(token);
        0
    }
}

/// Whether a value read now lies under `data.configurationChange.values`: the open objects'
/// current members begin with its path.
fn in_section(stack: &[Frame]) -> bool {
    stack.len() >= SECTION.len()
        && stack.iter().zip(SECTION).all(
            |(frame, name)| matches!(frame, Frame::Object { key: Some(key), .. } if key == name),
        )
}

/// The index after the closing quote of the string starting at `start`, if it closes.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut at = start + 1;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            b'"' => return Some(at + 1),
            _ => at += 1,
        }
    }
    None
}

/// `true`, `false`, `null` or a JSON number.
fn is_literal(token: &str) -> bool {
    matches!(token, "true" | "false" | "null")
        || serde_json::from_str::<serde_json::Number>(token).is_ok()
}

/// A payload as `show` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShownPayload<'a> {
    /// Nothing to hide: the payload as it is.
    AsIs(&'a str),
    /// `values` leaves hidden (`complete`: the payload is a whole JSON document).
    Redacted {
        text: String,
        values: usize,
        complete: bool,
    },
    /// Not JSON: the text before the first `configurationChange`, the rest (`withheld_bytes`)
    /// not shown.
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
                "{values} value(s) under data.configurationChange.values shown as \"{REDACTED}\"; \
                 {SHOW_VALUES}"
            )),
            ShownPayload::Cut { withheld_bytes, .. } => Some(format!(
                "not JSON, so its values cannot be picked out: the last {withheld_bytes} bytes, \
                 from configurationChange on, are withheld; {SHOW_VALUES}"
            )),
        }
    }
}

/// `payload` (a record's payload text, possibly cut) with the values under
/// `data.configurationChange.values` hidden.
pub fn shown_payload(payload: &str) -> ShownPayload<'_> {
    match redact_text(payload) {
        Ok(redacted) if redacted.values == 0 => ShownPayload::AsIs(payload),
        Ok(redacted) => ShownPayload::Redacted {
            text: redacted.text,
            values: redacted.values,
            complete: redacted.complete,
        },
        Err(_) => match payload.find("configurationChange") {
            None => ShownPayload::AsIs(payload),
            Some(at) => ShownPayload::Cut {
                kept: &payload[..at],
                withheld_bytes: payload.len() - at,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

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

    /// The redacted text of `event` (encoded compactly and pretty), parsed back, checking
    /// that both encodings agree.
    fn redacted(event: &Value) -> (Value, usize) {
        let compact = redact_text(&event.to_string()).unwrap();
        let pretty = redact_text(&serde_json::to_string_pretty(event).unwrap()).unwrap();
        assert!(compact.complete && pretty.complete);
        assert_eq!(compact.values, pretty.values);
        let parsed: Value = serde_json::from_str(&compact.text).unwrap();
        assert_eq!(parsed, serde_json::from_str::<Value>(&pretty.text).unwrap());
        (parsed, compact.values)
    }

    #[test]
    fn nested_maps_and_arrays_keep_their_shape_and_lose_their_leaves() {
        let event = deployment(json!({
            "image": "carts:1",
            "db": {"password": "hunter2", "port": 5432, "tls": true, "ca": null, "w": -1.5e3},
            "tokens": ["t1", {"key": "t\"2\\\\"}, [3, []]],
            "empty": {},
            "none": []
        }));
        let (shown, values) = redacted(&event);
        assert_eq!(values, 9);
        assert_eq!(
            shown["data"]["configurationChange"]["values"],
            json!({
                "image": REDACTED,
                "db": {
                    "password": REDACTED, "port": REDACTED, "tls": REDACTED, "ca": REDACTED,
                    "w": REDACTED
                },
                "tokens": [REDACTED, {"key": REDACTED}, [REDACTED, []]],
                "empty": {},
                "none": []
            })
        );
        // Nothing else is touched.
        let mut rest = shown.clone();
        rest["data"]["configurationChange"]["values"] = json!(null);
        let mut expected = event.clone();
        expected["data"]["configurationChange"]["values"] = json!(null);
        assert_eq!(rest, expected);
    }

    #[test]
    fn an_absent_section_changes_nothing() {
        for event in [
            json!({"id": "e1", "data": {"project": "shop"}}),
            json!({"id": "e1", "data": {"configurationChange": {}}}),
            json!({"id": "e1", "data": {"configurationChange": {"value": "x"}}}),
            json!({"id": "e1"}),
            json!({"id": "e1", "values": {"password": "x"}}),
            json!({"id": "e1", "data": {"values": {"password": "x"}}}),
            json!({"configurationChange": {"values": {"password": "x"}}}),
            json!({"x": {"data": {"configurationChange": {"values": {"password": "x"}}}}}),
        ] {
            let text = event.to_string();
            let shown = redact_text(&text).unwrap();
            assert_eq!((shown.text.as_str(), shown.values), (text.as_str(), 0));
            assert_eq!(shown_payload(&text), ShownPayload::AsIs(&text));
        }
    }

    #[test]
    fn values_that_are_not_objects_are_leaves_or_lists_of_them() {
        let (shown, values) = redacted(&deployment(json!("password=hunter2")));
        assert_eq!(values, 1);
        assert_eq!(shown["data"]["configurationChange"]["values"], REDACTED);
        let (shown, values) = redacted(&deployment(json!(["a", 1, null])));
        assert_eq!(values, 3);
        assert_eq!(
            shown["data"]["configurationChange"]["values"],
            json!([REDACTED, REDACTED, REDACTED])
        );
        // Nothing leads to the section: data, or configurationChange, is not an object, or
        // the document is not one.
        for event in [
            json!({"data": "configurationChange"}),
            json!({"data": ["x", {"configurationChange": {"values": {"a": 1}}}]}),
            json!({"data": {"configurationChange": "values"}}),
            json!({"data": {"configurationChange": [{"values": {"a": 1}}]}}),
            json!("a string"),
            json!(12),
            json!(null),
            json!([{"data": {"configurationChange": {"values": {"a": 1}}}}]),
        ] {
            let text = event.to_string();
            let shown = redact_text(&text).unwrap();
            assert_eq!((shown.text.as_str(), shown.values), (text.as_str(), 0));
            assert!(shown.complete, "{text}");
        }
    }

    #[test]
    fn the_text_keeps_its_order_and_spacing() {
        let text =
            "{ \"id\": \"e1\",\n  \"data\": {\"project\": \"shop\", \"configurationChange\": \
                    {\"values\": {\"b\": 2, \"a\": \"x\"}}} }";
        assert_eq!(
            redact_text(text).unwrap().text,
            "{ \"id\": \"e1\",\n  \"data\": {\"project\": \"shop\", \"configurationChange\": \
             {\"values\": {\"b\": \"<redacted>\", \"a\": \"<redacted>\"}}} }"
        );
    }

    #[test]
    fn a_member_named_twice_is_hidden_wherever_it_is_written() {
        // serde_json would keep only the last `data` or `pw`.
        for text in [
            r#"{"data": {"configurationChange": {"values": {"pw": "hunter2"}}}, "data": {}}"#,
            r#"{"data": {"configurationChange": {"values": {"pw": "hunter2", "pw": "a"}}}}"#,
            r#"{"data": {"configurationChange": {"values": {"pw": "hunter2"}, "values": 1}}}"#,
        ] {
            let shown = shown_payload(text);
            assert!(shown.is_redacted());
            assert!(!shown.text().contains("hunter2"), "{}", shown.text());
        }
        // A name written with escapes is still that name.
        let text = r#"{"\u0064ata": {"configurationChange": {"values": {"pw": "hunter2"}}}}"#;
        assert!(!shown_payload(text).text().contains("hunter2"));
    }

    #[test]
    fn a_payload_cut_short_is_redacted_as_far_as_it_goes() {
        let whole = deployment(json!({"db": {"password": "hunter2", "port": 5432}})).to_string();
        let secret_at = whole.find("hunter2").unwrap();
        let port_at = whole.find("5432").unwrap();
        // Cut everywhere: inside the secret, inside the number, inside names, at the end.
        for cut in 1..whole.len() {
            let excerpt = &whole[..cut];
            let shown = redact_text(excerpt).unwrap_or_else(|e| panic!("{excerpt}: {e:?}"));
            assert!(!shown.complete, "{excerpt}");
            for secret in ["hunter2", "hunter", "h", "5432", "543", "5"] {
                let inside = shown
                    .text
                    .find("configurationChange")
                    .map_or("", |at| &shown.text[at..]);
                assert!(
                    !inside.contains(&format!("\"{secret}"))
                        && !inside.contains(&format!(":{secret}")),
                    "{secret} in {}",
                    shown.text
                );
            }
            if cut > port_at + 4 {
                assert_eq!(shown.values, 2, "{excerpt}");
            } else if cut > secret_at + 7 {
                assert_eq!(shown.values, 1, "{excerpt}");
            }
        }
        let excerpt = &whole[..whole.len() - 10];
        let ShownPayload::Redacted {
            text,
            values,
            complete,
        } = shown_payload(excerpt)
        else {
            panic!("redacted")
        };
        assert_eq!((values, complete), (2, false));
        assert!(text.contains(r#""db":{"password":"<redacted>","port":"<redacted>"}"#));
        assert!(text.contains(r#""id":"e1""#), "the rest shows: {text}");
    }

    #[test]
    fn a_payload_that_is_not_json_shows_nothing_from_configuration_change_on() {
        for text in ["not an event", "", "{\"a\": tru e}", "{\"a\" 1}"] {
            assert_eq!(shown_payload(text), ShownPayload::AsIs(text), "{text:?}");
        }
        assert!(redact_text("not an event").is_err());
        assert!(redact_text("{\"a\":1}}").is_err());
        assert!(redact_text("{\"a\":1} 2").is_err());
        assert!(redact_text("[1}").is_err());
        let text =
            "oops {\"data\": {\"configurationChange\": {\"values\": {\"pw\": \"hunter2\"}}}}";
        let shown = shown_payload(text);
        assert_eq!(shown.text(), "oops {\"data\": {\"");
        assert!(shown.note().unwrap().contains("withheld"));
        assert!(shown.note().unwrap().contains("--show-values"));
    }

    #[test]
    fn a_payload_with_values_notes_what_was_hidden() {
        let text = deployment(json!({"db": {"password": "hunter2"}})).to_string();
        let shown = shown_payload(&text);
        assert!(shown.is_redacted());
        assert!(!shown.text().contains("hunter2"), "{}", shown.text());
        let note = shown.note().unwrap();
        assert!(
            note.starts_with("1 value(s)") && note.contains("--show-values"),
            "{note}"
        );
    }
}
