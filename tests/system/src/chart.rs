//! The operations chart (`ops/chart/helm-service`) as the real `helm` renders it, read as
//! text (the workspace has no YAML parser), one `---`-separated document at a time: what
//! the static checks of `ops_files.rs` and the memory test, which runs the worker as the
//! chart configures it, read from it.

use std::process::Command;

use test_harness::tools::{repo_root, tool_path};

/// The chart, relative to the repository root.
pub const CHART: &str = "ops/chart/helm-service";

/// Runs the pinned helm with `args` from the repository root, isolated from the user's helm
/// configuration. Returns (success, stdout, stderr).
pub fn helm(args: &[&str]) -> (bool, String, String) {
    let home = tempfile::tempdir().expect("temp dir");
    let output = Command::new(tool_path("helm"))
        .args(args)
        .current_dir(repo_root())
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()
        .expect("helm runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `helm template` of the chart with `extra` arguments; panics with helm's output on failure.
pub fn render(extra: &[&str]) -> String {
    let mut args = vec!["template", "hs", CHART, "--namespace", "keptn"];
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = helm(&args);
    assert!(ok, "helm {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// The documents of a multi-document YAML stream.
pub fn documents(rendered: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in rendered.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else {
            let doc = docs.last_mut().expect("at least one document");
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.into_iter()
        .filter(|doc| doc.lines().any(|l| l.starts_with("kind:")))
        .collect()
}

/// The top-level `kind:` of each document, in order.
pub fn kinds(rendered: &str) -> Vec<String> {
    documents(rendered)
        .iter()
        .filter_map(|doc| {
            doc.lines()
                .find_map(|l| l.strip_prefix("kind:"))
                .map(|k| k.trim().to_owned())
        })
        .collect()
}

/// The one document of `kind`.
pub fn only(rendered: &str, kind: &str) -> String {
    let line = format!("kind: {kind}");
    let mut found: Vec<String> = documents(rendered)
        .into_iter()
        .filter(|doc| doc.lines().any(|l| l == line))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind} in:\n{rendered}"
    );
    found.pop().expect("one document")
}

/// The value of scalar `key` (first occurrence at any depth), without quotes.
pub fn scalar(doc: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}:");
    doc.lines().find_map(|l| {
        l.trim()
            .strip_prefix(&prefix)
            .map(|v| v.trim().trim_matches('"').to_owned())
    })
}

/// The literal `value` of the container environment variable `name`.
pub fn env_value(deployment: &str, name: &str) -> Option<String> {
    let wanted = format!("- name: {name}");
    let mut lines = deployment.lines();
    while let Some(line) = lines.next() {
        if line.trim() == wanted {
            return lines
                .next()
                .and_then(|next| next.trim().strip_prefix("value:"))
                .map(|v| v.trim().trim_matches('"').to_owned());
        }
    }
    None
}

/// The block of `key:` (e.g. `livenessProbe`): the lines indented below it, trimmed.
pub fn block(doc: &str, key: &str) -> String {
    let header = format!("{key}:");
    let mut lines = doc.lines().skip_while(|l| l.trim() != header);
    let Some(first) = lines.next() else {
        panic!("no {key} in:\n{doc}")
    };
    let indent = first.len() - first.trim_start().len();
    lines
        .take_while(|l| l.len() - l.trim_start().len() > indent || l.trim().is_empty())
        .map(|l| format!("{}\n", l.trim()))
        .collect()
}

/// Bytes of a Kubernetes memory quantity: a whole number with an optional binary (`Ki`,
/// `Mi`, `Gi`, `Ti`) or decimal (`k`, `M`, `G`, `T`) suffix. `None` for anything else.
pub fn quantity_bytes(quantity: &str) -> Option<u64> {
    let quantity = quantity.trim();
    let split = quantity
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let factor: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(factor)
}

/// What the chart's defaults give the worker container, as far as memory goes.
#[derive(Debug, Clone)]
pub struct MemoryDefaults {
    /// `resources.limits.memory`, in bytes.
    pub limit_bytes: u64,
    /// `resources.requests.memory`, in bytes.
    pub request_bytes: u64,
    /// The container's literal environment variables (name, value); variables taken from
    /// elsewhere (`valueFrom`) are left out.
    pub env: Vec<(String, String)>,
    /// The Deployment as rendered.
    pub deployment: String,
}

impl MemoryDefaults {
    /// The value of a literal environment variable of the container.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Renders the chart with its default values and reads the container's memory request and
/// limit and its literal environment.
pub fn memory_defaults() -> MemoryDefaults {
    let deployment = only(&render(&[]), "Deployment");
    // `resources:` holds `limits:` and `requests:`, each with `memory: <quantity>`.
    let resources = block(&deployment, "resources");
    let mut section = "";
    let mut memory = std::collections::HashMap::new();
    for line in resources.lines() {
        if let Some(header) = line.strip_suffix(':') {
            section = header;
        } else if let Some(quantity) = line.strip_prefix("memory:") {
            memory.insert(section, quantity.trim().trim_matches('"').to_owned());
        }
    }
    let bytes = |what: &str| {
        let text = memory
            .get(what)
            .unwrap_or_else(|| panic!("no resources.{what}.memory in:\n{resources}"));
        quantity_bytes(text)
            .unwrap_or_else(|| panic!("resources.{what}.memory {text:?} is no quantity"))
    };
    let limit_bytes = bytes("limits");
    let request_bytes = bytes("requests");
    let mut env = Vec::new();
    let mut lines = deployment.lines().map(str::trim).peekable();
    while let Some(line) = lines.next() {
        let Some(name) = line.strip_prefix("- name: ") else {
            continue;
        };
        if let Some(value) = lines.peek().and_then(|next| next.strip_prefix("value:")) {
            env.push((name.to_owned(), value.trim().trim_matches('"').to_owned()));
        }
    }
    MemoryDefaults {
        limit_bytes,
        request_bytes,
        env,
        deployment,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity_bytes("256Mi"), Some(256 << 20));
        assert_eq!(quantity_bytes("1Gi"), Some(1 << 30));
        assert_eq!(quantity_bytes("500M"), Some(500_000_000));
        assert_eq!(quantity_bytes("1048576"), Some(1 << 20));
        assert_eq!(quantity_bytes("1.5Gi"), None);
        assert_eq!(quantity_bytes("256MiB"), None);
    }
}
