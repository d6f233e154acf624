//! The release namespace (`<project>-<stage>`) must exist before `helm upgrade --install`, and
//! blue/green needs it labelled `istio-injection=enabled`. Other tools (Istio, policy
//! engines, people) label namespaces too, so we only ever add or correct *our* labels and
//! never write when nothing changes: an unchanged redeploy must not touch the namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

use super::{Cluster, ClusterError};

/// Field manager recorded on our namespace writes, so `kubectl get -o yaml
/// --show-managed-fields` tells operators who set the labels.
const FIELD_MANAGER: &str = "helm-service";

impl Cluster {
    /// Makes sure namespace `name` exists and carries `labels` (other labels are left alone).
    ///
    /// One GET when everything is already in place; a create when missing (losing a create
    /// race to another replica is fine); a JSON merge patch of only the missing or different
    /// labels otherwise. A namespace being deleted is a transient
    /// [`ClusterError::NamespaceTerminating`]: creating into it would fail anyway.
    pub async fn ensure_namespace(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        let api: Api<Namespace> = Api::all(self.client());
        let existing = self
            .call(|| format!("get Namespace {name}"), api.get_opt(name))
            .await?;
        let existing = match existing {
            Some(ns) => ns,
            None => {
                let ns = Namespace {
                    metadata: ObjectMeta {
                        name: Some(name.to_string()),
                        labels: (!labels.is_empty()).then(|| labels.clone()),
                        ..ObjectMeta::default()
                    },
                    ..Namespace::default()
                };
                let params = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PostParams::default()
                };
                match self
                    .call(
                        || format!("create Namespace {name}"),
                        api.create(&params, &ns),
                    )
                    .await
                {
                    Ok(_) => {
                        tracing::info!(namespace = name, "created namespace");
                        return Ok(());
                    }
                    // Another replica (or a person) created it meanwhile: check its labels.
                    Err(e) if e.status_code() == Some(409) => {
                        self.call(|| format!("get Namespace {name}"), api.get(name))
                            .await?
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        if existing
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|phase| phase == "Terminating")
            || existing.metadata.deletion_timestamp.is_some()
        {
            return Err(ClusterError::NamespaceTerminating {
                namespace: name.to_string(),
            });
        }
        let missing = missing_labels(existing.metadata.labels.as_ref(), labels);
        if missing.is_empty() {
            return Ok(());
        }
        let patch = json!({ "metadata": { "labels": missing } });
        self.call(
            || format!("label Namespace {name}"),
            api.patch(
                name,
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PatchParams::default()
                },
                &Patch::Merge(&patch),
            ),
        )
        .await?;
        tracing::info!(namespace = name, labels = ?missing, "labelled namespace");
        Ok(())
    }
}

/// The wanted labels that are absent or carry another value.
fn missing_labels<'a>(
    current: Option<&BTreeMap<String, String>>,
    wanted: &'a BTreeMap<String, String>,
) -> BTreeMap<&'a str, &'a str> {
    wanted
        .iter()
        .filter(|(k, v)| current.and_then(|c| c.get(*k)) != Some(*v))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_absent_or_different_labels_are_missing() {
        let current = map(&[("team", "a"), ("istio-injection", "disabled")]);
        let wanted = map(&[("istio-injection", "enabled"), ("team", "a"), ("x", "1")]);
        let missing = missing_labels(Some(&current), &wanted);
        assert_eq!(
            missing.into_iter().collect::<Vec<_>>(),
            vec![("istio-injection", "enabled"), ("x", "1")]
        );
        assert!(missing_labels(Some(&current), &map(&[("team", "a")])).is_empty());
        assert_eq!(missing_labels(None, &map(&[("a", "b")])).len(), 1);
    }
}
