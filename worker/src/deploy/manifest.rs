//! Reading a release's rendered manifest (`helm get manifest`, or the `manifest` field of
//! `helm upgrade -o json`): the objects a chart really deploys, which is what the
//! generated charts and the reported URIs are derived from.

use serde_json::Value;
use thiserror::Error;

#[derive(Debug, Error)]
#[error("the rendered manifest of release {release} is not valid YAML: {detail}")]
pub struct ManifestError {
    pub release: String,
    pub detail: String,
}

/// The Kubernetes objects of one release, in manifest order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest {
    pub objects: Vec<Value>,
}

impl Manifest {
    /// Parses a multi-document YAML manifest; empty documents (helm's `# Source:` only
    /// sections) are skipped.
    pub fn parse(release: &str, text: &str) -> Result<Manifest, ManifestError> {
        let mut objects = Vec::new();
        for document in serde_yaml_ng::Deserializer::from_str(text) {
            let value = <Value as serde::Deserialize>::deserialize(document).map_err(|err| {
                ManifestError {
                    release: release.to_owned(),
                    detail: err.to_string(),
                }
            })?;
            if value.is_object() {
                objects.push(value);
            }
        }
        Ok(Manifest { objects })
    }

    /// Objects of `kind` whose apiVersion is `api_version` (`v1`, `apps/v1`).
    pub fn objects_of<'a>(
        &'a self,
        api_version: &'a str,
        kind: &'a str,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |object| {
            object["kind"].as_str() == Some(kind)
                && object["apiVersion"].as_str() == Some(api_version)
        })
    }

    pub fn deployments(&self) -> Vec<&Value> {
        self.objects_of("apps/v1", "Deployment").collect()
    }

    pub fn services(&self) -> Vec<&Value> {
        self.objects_of("v1", "Service").collect()
    }

    /// Names of the Deployments: what a rollout waits for.
    pub fn deployment_names(&self) -> Vec<String> {
        self.deployments()
            .into_iter()
            .filter_map(|object| name_of(object).map(str::to_owned))
            .collect()
    }

    /// The Service that represents the Keptn service: the one of the same name, else
    /// the first one.
    pub fn main_service(&self, service: &str) -> Option<&Value> {
        let services = self.services();
        services
            .iter()
            .find(|object| name_of(object) == Some(service))
            .or_else(|| services.first())
            .copied()
    }
}

/// `metadata.name` of an object.
pub fn name_of(object: &Value) -> Option<&str> {
    object["metadata"]["name"].as_str()
}

/// The lowest TCP port a Service exposes (a port without protocol is TCP).
pub fn lowest_tcp_port(service: &Value) -> Option<u16> {
    service["spec"]["ports"]
        .as_array()?
        .iter()
        .filter(|port| port["protocol"].as_str().unwrap_or("TCP") == "TCP")
        .filter_map(|port| port["port"].as_u64())
        .filter_map(|port| u16::try_from(port).ok())
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "---
# Source: carts/templates/service.yaml
apiVersion: v1
kind: Service
metadata:
  name: carts-db
spec:
  ports:
  - port: 27017
---
# Source: carts/templates/service.yaml
apiVersion: v1
kind: Service
metadata:
  name: carts
spec:
  ports:
  - port: 9090
    protocol: UDP
  - port: 8080
    protocol: TCP
  - port: 80
---
# Source: carts/templates/empty.yaml
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: carts
";

    #[test]
    fn objects_kinds_and_the_main_service() {
        let manifest = Manifest::parse("r", MANIFEST).unwrap();
        assert_eq!(manifest.objects.len(), 3);
        assert_eq!(manifest.deployment_names(), ["carts"]);
        let main = manifest.main_service("carts").unwrap();
        assert_eq!(name_of(main), Some("carts"));
        assert_eq!(lowest_tcp_port(main), Some(80));
        assert_eq!(
            name_of(manifest.main_service("other").unwrap()),
            Some("carts-db")
        );
    }

    #[test]
    fn invalid_yaml_names_the_release() {
        let err = Manifest::parse("shop-dev-carts", "a: [").unwrap_err();
        assert!(err.to_string().contains("shop-dev-carts"), "{err}");
    }

    #[test]
    fn udp_only_service_has_no_tcp_port() {
        let service = serde_json::json!({"spec": {"ports": [{"port": 53, "protocol": "UDP"}]}});
        assert_eq!(lowest_tcp_port(&service), None);
    }
}
