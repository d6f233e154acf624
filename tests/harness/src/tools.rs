//! Where the pinned external tools live.
//!
//! `ops/setup.sh` installs `nats-server`, `helm` and `kubectl` into `<repo>/.tools/bin`. The
//! tests never fall back to whatever happens to be on `PATH`: a different version would make
//! results depend on the machine.

use std::ffi::OsString;
use std::path::PathBuf;

/// The workspace root (two levels above this crate's manifest).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(|tests| tests.parent())
        .map(PathBuf::from)
        .expect("tests/harness has a grandparent directory")
}

/// `<repo>/.tools/bin`.
pub fn tools_bin_dir() -> PathBuf {
    repo_root().join(".tools").join("bin")
}

/// The environment variable that overrides the path of tool `name`: `nats-server` →
/// `NATS_SERVER_BIN`, `helm` → `HELM_BIN`, `kubectl` → `KUBECTL_BIN`.
pub fn override_var(name: &str) -> String {
    let mut var: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    var.push_str("_BIN");
    var
}

/// The path of tool `name`: `$<NAME>_BIN` when set (see [`override_var`]), otherwise
/// `<repo>/.tools/bin/<name>`.
///
/// # Panics
///
/// When the tool is not there, with a message saying to run `ops/setup.sh`.
pub fn tool_path(name: &str) -> PathBuf {
    let var = override_var(name);
    if let Some(path) = std::env::var_os(&var).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{var}={} does not point to a file; unset it to use the pinned {name} from ops/setup.sh",
            path.display()
        );
        return path;
    }
    let path = tools_bin_dir().join(name);
    assert!(
        path.is_file(),
        "{name} is not installed at {}: run `{}` first (it installs the pinned tools into .tools/bin), \
         or set {var} to a {name} binary",
        path.display(),
        repo_root().join("ops/setup.sh").display()
    );
    path
}

/// A `PATH` value with `<repo>/.tools/bin` in front of the current `PATH`, for child processes
/// (such as the worker) that run `helm` or `kubectl` by name.
pub fn path_with_tools() -> OsString {
    let mut dirs = vec![tools_bin_dir()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).expect("PATH entries contain no separator")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_var_names() {
        assert_eq!(override_var("nats-server"), "NATS_SERVER_BIN");
        assert_eq!(override_var("helm"), "HELM_BIN");
    }

    #[test]
    fn repo_root_has_workspace_manifest() {
        assert!(repo_root().join("Cargo.toml").is_file());
        assert!(repo_root().join("ops").is_dir());
    }

    #[test]
    fn path_with_tools_starts_with_tools_bin() {
        let path = path_with_tools();
        let first = std::env::split_paths(&path).next().unwrap();
        assert_eq!(first, tools_bin_dir());
    }
}
