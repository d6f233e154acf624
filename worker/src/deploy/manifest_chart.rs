//! The chart helm-service writes itself: one template printing a manifest handed over as a
//! string value.
//!
//! Both the generated release (routing and the blue/green primary) and the replica
//! overrides of a user release deploy objects computed in Rust. Passing them as one string
//! keeps them exact: nothing in them is read as a template (a `{{` in a user's annotation
//! stays text), and numbers stay what they were (objects passed as values would go through
//! Helm's float64 numbers and `toYaml`, which prints 1000000 as `1e+06`).
//!
//! Each object is written as JSON, which is YAML too: Helm and the API server read manifests
//! as YAML 1.1, where an unquoted `yes`, `on`, `y` or `1_000` is a boolean or a number, and a
//! YAML writer for 1.2 leaves such strings unquoted. JSON quotes every string.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

/// Values key of the manifest string.
pub const MANIFEST_KEY: &str = "manifest";

/// `objects` as one multi-document manifest, each document an indented JSON object.
pub fn to_manifest(objects: &[Value]) -> Result<String, serde_json::Error> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_json::to_string_pretty(object)?);
        out.push('\n');
    }
    Ok(out)
}

/// Writes the chart under `dir/<dir_name>`, named `name` at `version` (and `app_version`
/// unless empty), with `description` in `Chart.yaml`; returns the chart directory.
pub fn write(
    dir: &Path,
    dir_name: &str,
    (name, version, app_version): (&str, &str, &str),
    description: &str,
) -> std::io::Result<PathBuf> {
    #[derive(Serialize)]
    struct ChartYaml<'a> {
        #[serde(rename = "apiVersion")]
        api_version: &'a str,
        name: &'a str,
        version: &'a str,
        #[serde(rename = "appVersion", skip_serializing_if = "str::is_empty")]
        app_version: &'a str,
        description: &'a str,
    }
    let chart = dir.join(dir_name);
    std::fs::create_dir_all(chart.join("templates"))?;
    let meta = ChartYaml {
        api_version: "v2",
        name,
        version,
        app_version,
        description,
    };
    let yaml = serde_yaml_ng::to_string(&meta).map_err(std::io::Error::other)?;
    std::fs::write(chart.join("Chart.yaml"), yaml)?;
    std::fs::write(chart.join("values.yaml"), format!("{MANIFEST_KEY}: \"\"\n"))?;
    std::fs::write(
        chart.join("templates/manifest.yaml"),
        format!("{{{{ .Values.{MANIFEST_KEY} }}}}\n"),
    )?;
    Ok(chart)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn manifest_keeps_numbers_and_template_text() {
        let objects = [
            json!({"kind": "A", "n": 1000000, "note": "{{ x }}"}),
            json!({"kind": "B"}),
        ];
        let text = to_manifest(&objects).unwrap();
        assert!(text.contains("\"n\": 1000000"), "{text}");
        assert!(text.contains("{{ x }}"), "{text}");
        assert_eq!(text.matches("---\n").count(), 2);
    }

    #[test]
    fn strings_yaml_1_1_would_read_as_booleans_or_numbers_stay_strings() {
        let tricky = [
            "yes", "on", "off", "y", "n", "no", "1_000", "0x1F", "~", "1e3", ".inf",
        ];
        let object = json!({"kind": "ConfigMap", "data": tricky});
        let text = to_manifest(std::slice::from_ref(&object)).unwrap();
        for value in tricky {
            assert!(
                text.contains(&format!("\"{value}\"")),
                "{value} unquoted in {text}"
            );
        }
        // Read back (as the worker reads stored manifests) it is the same object.
        let parsed = crate::deploy::manifest::Manifest::parse("r", &text).unwrap();
        assert_eq!(parsed.objects, [object]);
    }

    #[test]
    fn chart_prints_the_manifest_value() {
        let dir = tempfile::tempdir().unwrap();
        let chart = write(dir.path(), "c", ("carts", "1.2.3", ""), "d").unwrap();
        let meta = std::fs::read_to_string(chart.join("Chart.yaml")).unwrap();
        assert!(meta.contains("name: carts") && meta.contains("version: 1.2.3"));
        assert!(!meta.contains("appVersion"), "{meta}");
        let chart = write(dir.path(), "d", ("carts", "1.2.3", "2.0"), "d").unwrap();
        let meta = std::fs::read_to_string(chart.join("Chart.yaml")).unwrap();
        assert!(meta.contains("appVersion: '2.0'"), "{meta}");
        let template = std::fs::read_to_string(chart.join("templates/manifest.yaml")).unwrap();
        assert_eq!(template, "{{ .Values.manifest }}\n");
    }
}
