//! The kubeconfig clients use to reach kube-sim.
//!
//! Written as JSON (a YAML superset kubectl, helm and kube-rs all read), with a dummy bearer
//! token so clients take their ordinary authenticated code path; kube-sim ignores it.

use std::path::Path;

use serde_json::{json, Value};

/// Name of the cluster, user and context.
pub const NAME: &str = "kube-sim";
/// The bearer token in the kubeconfig; kube-sim does not check it.
pub const TOKEN: &str = "kube-sim-token";

/// A kubeconfig pointing at `server` (e.g. `http://127.0.0.1:12345`).
pub fn kubeconfig(server: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": NAME, "cluster": {"server": server}}],
        "users": [{"name": NAME, "user": {"token": TOKEN}}],
        "contexts": [{"name": NAME, "context": {"cluster": NAME, "user": NAME, "namespace": "default"}}],
        "current-context": NAME,
        "preferences": {},
    })
}

/// Writes the kubeconfig atomically (temp file + rename), so a client polling for the file
/// never reads half of it; mode 0600 like kubectl's own.
pub fn write(path: &Path, server: &str) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer_pretty(&mut tmp, &kubeconfig(server))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
