//! The Keptn CloudEvents spec as the tests read it: its envelope schema, the JSON schema of each
//! event type's `data` and its example events, parsed at test time from
//! `keptn-spec-cloudevents.md`, which sits beside the clone in `../shared/reference/`
//! (`KEPTN_SPEC` names another file). The spec is read, never copied into the project, so the
//! tests hold the code to the spec's own text. One parser for the one document: the contract's
//! example tests, the reply schema checks ([`crate::spec_schemas`]) and the fuzz seeds
//! (`fuzz/seed.py`, the same rules in Python) read it the same way.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

/// Overrides where the spec is read from (a path to the markdown file).
pub const SPEC_PATH_ENV: &str = "KEPTN_SPEC";

/// One "Example Cloud Event" of the spec, as written there.
pub struct SpecExample {
    /// The event's `type`, e.g. `sh.keptn.event.deployment.triggered`.
    pub event_type: String,
    /// The JSON text of the example.
    pub bytes: Vec<u8>,
    /// The same, parsed.
    pub json: Value,
}

/// What the tests take from the spec.
pub struct KeptnSpec {
    /// The schema of every event's envelope (the document's first ```json block, written there
    /// as the member `"sh.keptn.event": {...}`).
    pub envelope_schema: Value,
    /// The JSON schema of each event type's `data`, by event type.
    pub data_schemas: BTreeMap<String, Value>,
    /// Every example event, in the spec's order.
    pub examples: Vec<SpecExample>,
}

impl KeptnSpec {
    /// The first example of `event_type`.
    ///
    /// # Panics
    ///
    /// When the spec has none: a test asked for an example the spec does not give.
    pub fn example(&self, event_type: &str) -> &SpecExample {
        self.examples
            .iter()
            .find(|e| e.event_type == event_type)
            .unwrap_or_else(|| panic!("the Keptn spec has no example of {event_type}"))
    }
}

/// Where the spec is read from: `$KEPTN_SPEC`, else `<repo>/../shared/reference/...`.
pub fn spec_path() -> PathBuf {
    match std::env::var_os(SPEC_PATH_ENV) {
        Some(path) => PathBuf::from(path),
        None => crate::tools::repo_root().join("../shared/reference/keptn-spec-cloudevents.md"),
    }
}

/// The spec, read and parsed once per test process.
///
/// # Panics
///
/// When the spec cannot be read or parsed: every test that uses it checks against it, and a
/// test must not pass without checking.
pub fn keptn_spec() -> &'static KeptnSpec {
    static SPEC: OnceLock<KeptnSpec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = spec_path();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "the Keptn spec is needed here: {}: {e} (put ../shared/ beside the clone or set \
                 {SPEC_PATH_ENV} to its path)",
                path.display()
            )
        });
        parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    })
}

/// What the next ```json block of the document is.
#[derive(Clone, PartialEq)]
enum Pending {
    Nothing,
    Envelope,
    Example,
    Schema(String),
}

/// Parses the markdown: the first ```json block is the envelope schema; a block after a
/// `##### Example Cloud Event` heading is an example; one inside
/// `<details><summary>Json Schema of TYPE</summary>` is TYPE's data schema.
pub fn parse(text: &str) -> Result<KeptnSpec, String> {
    let mut spec = KeptnSpec {
        envelope_schema: Value::Null,
        data_schemas: BTreeMap::new(),
        examples: Vec::new(),
    };
    let mut pending = Pending::Envelope;
    let mut lines = text.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        let line = line.trim();
        if line == "##### Example Cloud Event" {
            pending = Pending::Example;
        } else if let Some(rest) = line.strip_prefix("<details><summary>Json Schema of ") {
            let event_type = rest.trim_end_matches("</summary>").trim();
            pending = Pending::Schema(event_type.to_owned());
        } else if line.starts_with("```json") && pending != Pending::Nothing {
            let block: Vec<&str> = lines
                .by_ref()
                .map(|(_, l)| l)
                .take_while(|l| l.trim() != "```")
                .collect();
            let block = block.join("\n");
            let parse_block = |text: &str| -> Result<Value, String> {
                serde_json::from_str(text)
                    .map_err(|e| format!("the json block after line {}: {e}", number + 1))
            };
            if pending == Pending::Envelope {
                pending = Pending::Nothing;
                let member = parse_block(&format!("{{{block}}}"))?;
                spec.envelope_schema = member
                    .get("sh.keptn.event")
                    .cloned()
                    .ok_or("the first json block (the envelope) is not named sh.keptn.event")?;
                continue;
            }
            let json = parse_block(&block)?;
            match std::mem::replace(&mut pending, Pending::Nothing) {
                Pending::Example => {
                    let event_type = json["type"]
                        .as_str()
                        .ok_or_else(|| {
                            format!("the example after line {} has no type", number + 1)
                        })?
                        .to_owned();
                    spec.examples.push(SpecExample {
                        event_type,
                        bytes: block.into_bytes(),
                        json,
                    });
                }
                Pending::Schema(event_type) => {
                    spec.data_schemas.insert(event_type, json);
                }
                Pending::Nothing | Pending::Envelope => unreachable!("checked above"),
            }
        }
    }
    if spec.envelope_schema.is_null() {
        return Err("no envelope schema (the first ```json block) in the spec".into());
    }
    if spec.data_schemas.is_empty() {
        return Err("no data schemas found".into());
    }
    Ok(spec)
}
