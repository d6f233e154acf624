//! The chart helm-service writes itself: one template printing a manifest handed over as a
//! string value.
//!
//! Both the generated release (routing and the blue/green primary) and the replica
//! overrides of a user release deploy objects computed in Rust. Passing them as one string
//! keeps them exact: nothing in them is read as a template (a `{{` in a user's annotation
//! stays text), and numbers stay what they were (objects passed as values would go through
//! Helm's float64 numbers and `toYaml`, which prints 1000000 as `1e+06`).

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

/// Values key of the manifest string.
pub const MANIFEST_KEY: &str = "manifest";

/// `objects` as one multi-document YAML manifest.
pub fn to_manifest(objects: &[Value]) -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(object)?);
    }
    Ok(out)
}

/// Writes the chart under `dir/<dir_name>`, named `name` at `version`, with `description`
/// in `Chart.yaml`; returns the chart directory.
pub fn write(
    dir: &Path,
    dir_name: &str,
    name: &str,
    version: &str,
    description: &str,
) -> std::io::Result<PathBuf> {
    #[derive(Serialize)]
    struct ChartYaml<'a> {
        #[serde(rename = "apiVersion")]
        api_version: &'a str,
        name: &'a str,
        version: &'a str,
        description: &'a str,
    }
    let chart = dir.join(dir_name);
    std::fs::create_dir_all(chart.join("templates"))?;
    let meta = ChartYaml {
        api_version: "v2",
        name,
        version,
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
        assert!(text.contains("n: 1000000"), "{text}");
        assert!(text.contains("{{ x }}"), "{text}");
        assert_eq!(text.matches("---\n").count(), 2);
    }

    #[test]
    fn chart_prints_the_manifest_value() {
        let dir = tempfile::tempdir().unwrap();
        let chart = write(dir.path(), "c", "carts", "1.2.3", "d").unwrap();
        let meta = std::fs::read_to_string(chart.join("Chart.yaml")).unwrap();
        assert!(meta.contains("name: carts") && meta.contains("version: 1.2.3"));
        let template = std::fs::read_to_string(chart.join("templates/manifest.yaml")).unwrap();
        assert_eq!(template, "{{ .Values.manifest }}\n");
    }
}
