//! The release namespace (`<project>-<stage>`) must exist before `helm upgrade --install`,
//! carry the ownership labels of its Keptn stage (see [`crate::deploy::ownership`], which
//! decides), and for blue/green be labelled `istio-injection=enabled`. Other tools (Istio,
//! policy engines, people) label namespaces too, so we only ever add or correct *our* labels
//! and never write when nothing changes: an unchanged redeploy must not touch the namespace.

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
    /// Makes sure namespace `name` exists and carries the labels `labels_to_add` asks for,
    /// given the namespace's current labels (`None`: it does not exist yet). That decision
    /// may refuse the namespace (someone else's, protected): then nothing is written and
    /// the refusal comes back as the inner error.
    ///
    /// One GET when everything is already in place; a create when missing (losing a create
    /// race to another replica is fine: the winner's namespace is judged instead); a JSON
    /// merge patch of only the labels asked for otherwise, so other tools' labels stay. A
    /// namespace being deleted is a transient [`ClusterError::NamespaceTerminating`]:
    /// creating into it would fail anyway.
    pub async fn ensure_namespace<E>(
        &self,
        name: &str,
        labels_to_add: impl Fn(Option<&BTreeMap<String, String>>) -> Result<BTreeMap<String, String>, E>,
    ) -> Result<Result<(), E>, ClusterError> {
        let api: Api<Namespace> = Api::all(self.client());
        let existing = self
            .call(|| format!("get Namespace {name}"), api.get_opt(name))
            .await?;
        let existing = match existing {
            Some(ns) => ns,
            None => {
                let labels = match labels_to_add(None) {
                    Ok(labels) => labels,
                    Err(refused) => return Ok(Err(refused)),
                };
                let ns = Namespace {
                    metadata: ObjectMeta {
                        name: Some(name.to_string()),
                        labels: (!labels.is_empty()).then_some(labels),
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
                        return Ok(Ok(()));
                    }
                    // Another replica (or a person) created it meanwhile: judge theirs.
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
        let missing = match labels_to_add(Some(&existing.metadata.labels.unwrap_or_default())) {
            Ok(missing) => missing,
            Err(refused) => return Ok(Err(refused)),
        };
        if missing.is_empty() {
            return Ok(Ok(()));
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
        Ok(Ok(()))
    }
}
