//! The Keptn CloudEvents spec as the tests read it: its example events and the JSON schemas of
//! their `data`, parsed at test time from `shared/reference/keptn-spec-cloudevents.md`, which
//! sits beside the checkout (`../shared/`). The spec is read, never copied into the project, so
//! the tests always hold the code to the spec's own text.
//!
//! Shared by the contracts tests and the system tests (`#[path]` includes): one parser for the
//! one document.
#![allow(dead_code)] // each including test uses a different part

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The spec's file inside the `shared/` folder beside the checkout.
const SPEC_IN_SHARED: &str = "shared/reference/keptn-spec-cloudevents.md";

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
    /// Every example event, in the spec's order.
    pub examples: Vec<SpecExample>,
    /// The JSON schema of each event type's `data`, by event type.
    pub data_schemas: BTreeMap<String, Value>,
}

/// Where the spec is: `$KEPTN_SPEC`, else the nearest ancestor of `manifest_dir` holding
/// `shared/reference/keptn-spec-cloudevents.md` (the checkout's parent on a developer's machine
/// and in CI).
pub fn spec_path(manifest_dir: &Path) -> PathBuf {
    if let Some(path) = std::env::var_os(SPEC_PATH_ENV) {
        return PathBuf::from(path);
    }
    manifest_dir
        .ancestors()
        .map(|dir| dir.join(SPEC_IN_SHARED))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the Keptn spec ({SPEC_IN_SHARED}) is not beside the checkout of {}; \
                 put ../shared/ next to it or set {SPEC_PATH_ENV}",
                manifest_dir.display()
            )
        })
}

/// Reads and parses the spec found by [`spec_path`].
pub fn load(manifest_dir: &Path) -> KeptnSpec {
    let path = spec_path(manifest_dir);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What the next ```json block of the document is.
#[derive(Clone, PartialEq)]
enum Pending {
    Nothing,
    Example,
    Schema(String),
}

/// Parses the markdown: a ```json block after a `##### Example Cloud Event` heading is an
/// example; one inside `<details><summary>Json Schema of TYPE</summary>` is TYPE's data schema.
pub fn parse(text: &str) -> Result<KeptnSpec, String> {
    let mut spec = KeptnSpec {
        examples: Vec::new(),
        data_schemas: BTreeMap::new(),
    };
    let mut pending = Pending::Nothing;
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
            let json: Value = serde_json::from_str(&block)
                .map_err(|e| format!("the json block after line {}: {e}", number + 1))?;
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
                Pending::Nothing => unreachable!("checked above"),
            }
        }
    }
    Ok(spec)
}
