//! The scaling action (`action.triggered` with `scaling`) adds a delta to the primary
//! Deployment's replicas. The new count goes into the generated chart's values and Helm
//! applies it, so the chart stays the source of truth; this module only reads the current
//! count from the cluster.

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;

use super::{Cluster, ClusterError};

impl Cluster {
    /// The desired replicas (`spec.replicas`) of Deployment `name`; `None` when it does not
    /// exist. An absent field means 1, the API server's default.
    pub async fn deployment_replicas(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<i32>, ClusterError> {
        let api: Api<Deployment> = Api::namespaced(self.client(), namespace);
        let deployment = self
            .call(
                || format!("get Deployment {name} in {namespace}"),
                api.get_opt(name),
            )
            .await?;
        Ok(deployment.map(|d| d.spec.and_then(|s| s.replicas).unwrap_or(1)))
    }
}
