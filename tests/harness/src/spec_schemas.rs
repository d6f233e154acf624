//! The JSON schemas of the Keptn CloudEvents spec, read at test time from the spec itself, and
//! the check every reply of helm-service has to pass.
//!
//! The spec (`keptn-spec-cloudevents.md`) is not part of this repository: it sits beside the
//! clone, in `../shared/reference/` (`KEPTN_SPEC` names another file). Each event type's
//! section holds its data schema in a `<summary>Json Schema of <type></summary>` block followed
//! by a fenced `json` block; the first fenced block of the document is the envelope
//! (`"sh.keptn.event": {...}`). Both are compiled with the `jsonschema` crate as the draft-04
//! schemas they declare.
//!
//! What is checked, and the deliberate deviations (each is what the spec's own example events
//! do, or what the spec leaves open):
//! - `data` against the schema of the reply's type, exactly as written (`additionalProperties:
//!   false` included: a reply with a field the spec does not know fails).
//! - The envelope against the spec's envelope schema, except that (1) `additionalProperties`
//!   is not enforced, since the spec's examples carry `datacontenttype`, a CloudEvents
//!   attribute the envelope schema does not list, and we add the W3C trace context; (2)
//!   `gitcommitid` is required only when the answered event had one (a reply echoes it, it
//!   does not make one up); (3) `format` is not asserted (ids are whatever the sender used,
//!   and `gitcommitid` is a git hash although declared `uuid`).
//! - `sh.keptn.event.service.delete.finished` has no section in the spec; it is checked
//!   against the service task's finished schema (`service.create.finished`, the common fields
//!   only), so a report with a field nobody defined fails.
//! - `sh.keptn.event.rollback.status.changed` and `sh.keptn.event.action.status.changed`
//!   have no section either (the spec defines `status.changed` for every task but writes out
//!   only some); they are checked against `deployment.status.changed`, which has exactly the
//!   common fields, like every `status.changed` schema the spec has.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use jsonschema::Validator;
use serde_json::Value;

use crate::keptn_spec::{keptn_spec, KeptnSpec};

/// Types the spec has no schema for, and the schema they are checked against.
const SUBSTITUTES: [(&str, &str); 3] = [
    (
        "sh.keptn.event.service.delete.finished",
        "sh.keptn.event.service.create.finished",
    ),
    (
        "sh.keptn.event.rollback.status.changed",
        "sh.keptn.event.deployment.status.changed",
    ),
    (
        "sh.keptn.event.action.status.changed",
        "sh.keptn.event.deployment.status.changed",
    ),
];

/// The compiled schemas of the spec.
pub struct SpecSchemas {
    /// The envelope schema, and the same without `gitcommitid` required.
    envelope: Validator,
    envelope_without_commit: Validator,
    data: HashMap<String, Validator>,
}

/// The schemas of the spec ([`keptn_spec`]), compiled once per test process.
///
/// # Panics
///
/// When the spec cannot be read or a schema in it does not compile: every reply check
/// depends on them, and a test must not pass without checking.
pub fn spec_schemas() -> &'static SpecSchemas {
    static SCHEMAS: OnceLock<SpecSchemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        SpecSchemas::compile(keptn_spec())
            .unwrap_or_else(|e| panic!("{}: {e}", crate::keptn_spec::spec_path().display()))
    })
}

/// Fails the test unless `event` (a reply as JSON) is valid by the spec's schemas; see the
/// module docs for what is checked.
///
/// # Panics
///
/// With every violation listed, when it is not valid.
///
/// Each reply (by `id` and `time`) is checked once per process: test helpers hand the same
/// growing list of replies over after every new message.
pub fn assert_conformant(event: &Value) {
    static CHECKED: Mutex<Option<HashSet<(String, String)>>> = Mutex::new(None);
    let key = (
        event["id"].as_str().unwrap_or_default().to_owned(),
        event["time"].as_str().unwrap_or_default().to_owned(),
    );
    if let Ok(mut checked) = CHECKED.lock() {
        if !checked.get_or_insert_with(HashSet::new).insert(key) {
            return;
        }
    }
    if let Err(violations) = spec_schemas().check(event) {
        panic!("reply does not conform to the Keptn spec: {violations}\nreply: {event:#}");
    }
}

impl SpecSchemas {
    /// Parses the spec's markdown and compiles its schemas.
    pub fn parse(spec: &str) -> Result<SpecSchemas, String> {
        Self::compile(&crate::keptn_spec::parse(spec)?)
    }

    /// Compiles the envelope and each type's data schema.
    pub fn compile(spec: &KeptnSpec) -> Result<SpecSchemas, String> {
        let mut envelope = spec.envelope_schema.clone();
        if let Some(schema) = envelope.as_object_mut() {
            schema.remove("additionalProperties");
            schema.insert(
                "$schema".into(),
                "http://json-schema.org/draft-04/schema#".into(),
            );
        }
        let mut without_commit = envelope.clone();
        if let Some(Value::Array(required)) = without_commit.get_mut("required") {
            required.retain(|r| r != "gitcommitid");
        }
        let envelope_without_commit =
            compile(&without_commit).map_err(|e| format!("envelope schema: {e}"))?;
        let envelope = compile(&envelope).map_err(|e| format!("envelope schema: {e}"))?;
        let data = spec
            .data_schemas
            .iter()
            .map(|(ty, schema)| {
                Ok((
                    ty.clone(),
                    compile(schema).map_err(|e| format!("{ty}: {e}"))?,
                ))
            })
            .collect::<Result<HashMap<_, _>, String>>()?;
        Ok(SpecSchemas {
            envelope,
            envelope_without_commit,
            data,
        })
    }

    /// The types the spec has a data schema for.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.data.keys().map(String::as_str)
    }

    /// Every violation of `event`'s data (not its envelope), one per line; `Ok` when there is
    /// none.
    pub fn check_data(&self, event: &Value) -> Result<(), String> {
        let ty = event["type"].as_str().unwrap_or_default();
        let schema_type = SUBSTITUTES
            .iter()
            .find(|(of, _)| *of == ty)
            .map_or(ty, |(_, with)| with);
        let violations: Vec<String> = match self.data.get(schema_type) {
            Some(validator) => validator
                .iter_errors(&event["data"])
                .map(|e| format!("data{}: {e}", e.instance_path()))
                .collect(),
            None => vec![format!("the spec has no schema for type {ty:?}")],
        };
        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations.join("\n"))
        }
    }

    /// Every violation of `event`, one per line; `Ok` when there is none.
    pub fn check(&self, event: &Value) -> Result<(), String> {
        let mut violations = Vec::new();
        let envelope = if event.get("gitcommitid").is_some() {
            &self.envelope
        } else {
            &self.envelope_without_commit
        };
        violations.extend(
            envelope
                .iter_errors(event)
                .map(|e| format!("envelope {}: {e}", e.instance_path())),
        );
        if let Err(data) = self.check_data(event) {
            violations.push(data);
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations.join("\n"))
        }
    }
}

/// Draft-04 validation without format assertions (see the module docs).
fn compile(schema: &Value) -> Result<Validator, String> {
    jsonschema::draft4::options()
        .should_validate_formats(false)
        .build(schema)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPEC: &str = r#"
intro
```json
"sh.keptn.event": {
  "required": ["data", "id", "type", "gitcommitid"],
  "properties": {"id": {"type": "string", "minLength": 1}},
  "additionalProperties": false,
  "type": "object"
}
```
<details><summary>Json Schema of sh.keptn.event.x.finished</summary>
```json
{"$schema": "http://json-schema.org/draft-04/schema#",
 "properties": {"x": {"required": ["gitCommit"]}}, "required": ["x"],
 "additionalProperties": false, "type": "object"}
```
<details><summary>Json Schema of sh.keptn.event.service.create.finished</summary>
```json
{"properties": {"status": {"enum": ["succeeded"]}}, "additionalProperties": false,
 "type": "object"}
```
"#;

    #[test]
    fn checks_envelope_and_data_with_the_documented_deviations() {
        let schemas = SpecSchemas::parse(SPEC).unwrap();
        let mut types: Vec<&str> = schemas.types().collect();
        types.sort_unstable();
        assert_eq!(
            types,
            [
                "sh.keptn.event.service.create.finished",
                "sh.keptn.event.x.finished"
            ]
        );
        let good = json!({"id": "1", "type": "sh.keptn.event.x.finished",
                          "datacontenttype": "application/json",
                          "data": {"x": {"gitCommit": ""}}});
        assert_eq!(schemas.check(&good), Ok(()));
        let errors = schemas
            .check(&json!({"id": "", "type": "sh.keptn.event.x.finished",
                           "gitcommitid": "abc", "data": {"x": {}, "y": 1}}))
            .unwrap_err();
        assert_eq!(errors.lines().count(), 3, "{errors}");
        assert!(errors.contains("envelope /id"), "{errors}");
        assert!(errors.contains("gitCommit"), "{errors}");
        let delete = json!({"id": "1", "type": "sh.keptn.event.service.delete.finished",
                            "data": {"status": "succeeded", "deployment": {}}});
        assert!(schemas.check(&delete).unwrap_err().contains("deployment"));
        let unknown = json!({"id": "1", "type": "sh.keptn.event.y.finished", "data": {}});
        assert!(schemas.check(&unknown).unwrap_err().contains("no schema"));
    }
}
