//! The kubeconfig clients use to reach kube-sim.
//!
//! Written as JSON (a YAML superset kubectl, helm and kube-rs all read), with a bearer token so
//! clients take their ordinary authenticated code path. kube-sim ignores it unless the
//! authorization mode is on (`authz`); then it is the admin's, and every other user gets a
//! context of their name (`kubectl --context alice`, `helm --kube-context alice`) that acts
//! as them through impersonation (client-go sends no token over plain HTTP; see `authz`).

use std::path::Path;

use serde_json::{json, Value};

use crate::authz::User;

/// Name of the cluster, user and context.
pub const NAME: &str = "kube-sim";
/// The bearer token in the kubeconfig; kube-sim does not check it.
pub const TOKEN: &str = "kube-sim-token";

/// A kubeconfig pointing at `server` (e.g. `http://127.0.0.1:12345`), with a context for
/// each of `users` besides the default one.
pub fn kubeconfig(server: &str, users: &[User]) -> Value {
    let mut config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": NAME, "cluster": {"server": server}}],
        "users": [{"name": NAME, "user": {"token": TOKEN}}],
        "contexts": [{"name": NAME, "context": {"cluster": NAME, "user": NAME, "namespace": "default"}}],
        "current-context": NAME,
        "preferences": {},
    });
    for u in users {
        config["users"]
            .as_array_mut()
            .expect("an array")
            .push(json!({"name": u.name, "user": {"token": u.token, "as": u.name, "as-groups": u.groups}}));
        config["contexts"]
            .as_array_mut()
            .expect("an array")
            .push(json!({"name": u.name, "context": {"cluster": NAME, "user": u.name, "namespace": "default"}}));
    }
    config
}

/// Writes the kubeconfig atomically (temp file + rename), so a client polling for the file
/// never reads half of it; mode 0600 like kubectl's own.
pub fn write(path: &Path, server: &str, users: &[User]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer_pretty(&mut tmp, &kubeconfig(server, users))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
