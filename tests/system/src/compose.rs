//! docker-compose.yml read as data, for the tests that check it (`ops_files`) and rehearse it
//! without a container daemon (`compose`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;
use test_harness::tools::repo_root;

/// docker-compose.yml as JSON.
pub fn load() -> Value {
    let path = repo_root().join("docker-compose.yml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).expect("docker-compose.yml is YAML")
}

/// The stages of a Dockerfile: `FROM <image> AS <name>`.
pub fn dockerfile_stages(dockerfile: &str) -> BTreeSet<String> {
    dockerfile
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [from, _, as_, name]
                    if from.eq_ignore_ascii_case("FROM") && as_.eq_ignore_ascii_case("AS") =>
                {
                    Some((*name).to_owned())
                }
                _ => None,
            }
        })
        .collect()
}

/// A list of strings (an exec-form `command` or `test`).
pub fn strings(value: &Value, what: &str) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{what} is not an exec-form list: {value}"))
        .iter()
        .map(|item| {
            item.as_str()
                .unwrap_or_else(|| panic!("{what}: {item} is not a string"))
                .to_owned()
        })
        .collect()
}

/// The repository file mounted at `path` in `service` (a bind mount `./src:dst[:ro]` holding
/// it), if any.
pub fn mounted_source(service: &Value, path: &str) -> Option<PathBuf> {
    service["volumes"].as_array()?.iter().find_map(|volume| {
        let mut parts = volume.as_str()?.split(':');
        let (source, target) = (parts.next()?, parts.next()?);
        let relative = source.strip_prefix("./")?;
        let rest = path.strip_prefix(target)?;
        let source = repo_root().join(relative);
        match rest.strip_prefix('/') {
            _ if rest.is_empty() => Some(source),
            Some(below) => Some(source.join(below)),
            None => None,
        }
    })
}
