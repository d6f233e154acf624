//! Helm's release records, read straight from the cluster instead of through `helm`.
//!
//! Helm 3 and 4 (default `secret` storage driver) keep each revision of a release as a Secret
//! `sh.helm.release.v1.<release>.v<N>` in the release namespace, labelled `owner=helm`,
//! `name=<release>`, `status=<deployed|superseded|failed|pending-install|...>` and
//! `version=<N>`. The labels answer "what is the latest revision and is it deployed" with one
//! metadata-only LIST, which costs a fraction of starting `helm status` (a process, a
//! discovery round, and decoding the gzipped release). That is the fast path of an
//! unchanged redeploy. The release body itself (chart, values, manifest) stays Helm's
//! business: we do not decode it.

use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::Api;

use super::{Cluster, ClusterError};

/// The newest revision of a release as Helm recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRevision {
    /// Helm's revision number (`helm history`'s REVISION).
    pub revision: u32,
    /// Helm's status string, e.g. `deployed`, `failed`, `pending-upgrade`.
    pub status: String,
}

impl StoredRevision {
    /// The revision is live and was installed successfully.
    pub fn is_deployed(&self) -> bool {
        self.status == "deployed"
    }

    /// A Helm operation started and has not finished (or its process died): the next
    /// upgrade needs a rollback or `--force`-style recovery first.
    pub fn is_pending(&self) -> bool {
        self.status.starts_with("pending-")
    }
}

impl Cluster {
    /// The highest revision of `release` in `namespace`, or `None` when Helm has no record of
    /// it there. One LIST of Secret metadata by label selector; Secrets whose names or labels
    /// do not follow Helm's scheme are ignored.
    pub async fn latest_release_revision(
        &self,
        namespace: &str,
        release: &str,
    ) -> Result<Option<StoredRevision>, ClusterError> {
        Ok(self.release_revisions(namespace, release).await?.pop())
    }

    /// Every revision Helm keeps of `release` in `namespace` (its `--history-max` window),
    /// oldest first; empty when there is none. Same single LIST as
    /// [`Cluster::latest_release_revision`], for callers that look for the last good one.
    pub async fn release_revisions(
        &self,
        namespace: &str,
        release: &str,
    ) -> Result<Vec<StoredRevision>, ClusterError> {
        let api: Api<Secret> = Api::namespaced(self.client(), namespace);
        let params = ListParams::default().labels(&format!("owner=helm,name={release}"));
        let list = self
            .call(
                || format!("list Helm release Secrets of {release} in {namespace}"),
                api.list_metadata(&params),
            )
            .await?;
        let mut revisions: Vec<StoredRevision> = list
            .items
            .iter()
            .filter_map(|item| {
                stored_revision(
                    release,
                    item.metadata.name.as_deref()?,
                    item.metadata.labels.as_ref(),
                )
            })
            .collect();
        revisions.sort_by_key(|r| r.revision);
        revisions.dedup_by_key(|r| r.revision);
        Ok(revisions)
    }
}

/// Reads one record from its name and labels; `None` when it is not a record of `release`.
fn stored_revision(
    release: &str,
    secret_name: &str,
    labels: Option<&std::collections::BTreeMap<String, String>>,
) -> Option<StoredRevision> {
    let from_name: u32 = secret_name
        .strip_prefix("sh.helm.release.v1.")?
        .strip_prefix(release)?
        .strip_prefix(".v")?
        .parse()
        .ok()?;
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    // Helm writes the same number in both places; the label wins only when it agrees, so a
    // hand-edited label cannot make an old record look like the newest.
    if label("version").is_some_and(|v| v.parse::<u32>().ok() != Some(from_name)) {
        tracing::debug!(
            secret = secret_name,
            "Helm record's version label disagrees with its name"
        );
        return None;
    }
    Some(StoredRevision {
        revision: from_name,
        status: label("status").unwrap_or("unknown").to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn labels(version: &str, status: &str) -> BTreeMap<String, String> {
        [
            ("owner", "helm"),
            ("name", "r"),
            ("version", version),
            ("status", status),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn records_are_read_from_name_and_labels() {
        let got = stored_revision(
            "r",
            "sh.helm.release.v1.r.v12",
            Some(&labels("12", "deployed")),
        );
        assert_eq!(
            got,
            Some(StoredRevision {
                revision: 12,
                status: "deployed".into()
            })
        );
        assert!(got.unwrap().is_deployed());
        // Another release whose name starts with ours, a bad number, a disagreeing label.
        assert_eq!(
            stored_revision("r", "sh.helm.release.v1.r-generated.v1", None),
            None
        );
        assert_eq!(stored_revision("r", "sh.helm.release.v1.r.vx", None), None);
        assert_eq!(
            stored_revision("r", "sh.helm.release.v1.r.v3", Some(&labels("4", "failed"))),
            None
        );
        let pending = stored_revision(
            "r",
            "sh.helm.release.v1.r.v2",
            Some(&labels("2", "pending-upgrade")),
        )
        .unwrap();
        assert!(pending.is_pending() && !pending.is_deployed());
        assert_eq!(
            stored_revision("r", "sh.helm.release.v1.r.v5", None).map(|r| r.status),
            Some("unknown".to_string())
        );
    }
}
