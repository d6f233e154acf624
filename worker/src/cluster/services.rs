//! The deployment URI Keptn's tests call next is `http://<service>.<namespace>:<port>`, where
//! the port is the lowest TCP port of the user release's Service (the reference behaviour).
//! We read the Service rather than parse the chart, because values can change the port.

use k8s_openapi::api::core::v1::Service;
use kube::Api;

use super::{Cluster, ClusterError};

/// One port of a Service, as far as callers need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortInfo {
    /// The port's name, if it has one (required when a Service has several).
    pub name: Option<String>,
    /// The port the Service listens on.
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`; the API's default `TCP` when the field is absent.
    pub protocol: String,
    /// e.g. `http` or `kubernetes.io/h2c`, when declared.
    pub app_protocol: Option<String>,
}

impl ServicePortInfo {
    pub fn is_tcp(&self) -> bool {
        self.protocol == "TCP"
    }
}

impl Cluster {
    /// The ports of Service `name` in `namespace`; `None` when there is no such Service.
    /// Ports outside 1–65535 (impossible on a real server) are skipped rather than trusted.
    pub async fn service_ports(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Vec<ServicePortInfo>>, ClusterError> {
        let api: Api<Service> = Api::namespaced(self.client(), namespace);
        let service = self
            .call(
                || format!("get Service {name} in {namespace}"),
                api.get_opt(name),
            )
            .await?;
        Ok(service.map(|s| ports_of(&s)))
    }

    /// The lowest TCP port of Service `name`; `None` when the Service does not exist or has
    /// no TCP port.
    pub async fn lowest_tcp_port(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<u16>, ClusterError> {
        let ports = self.service_ports(namespace, name).await?;
        Ok(ports.and_then(|p| lowest_tcp(&p)))
    }
}

fn ports_of(service: &Service) -> Vec<ServicePortInfo> {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok().filter(|&n| n != 0)?;
            Some(ServicePortInfo {
                name: p.name.clone(),
                port,
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect()
}

/// The lowest TCP port among `ports`.
pub fn lowest_tcp(ports: &[ServicePortInfo]) -> Option<u16> {
    ports.iter().filter(|p| p.is_tcp()).map(|p| p.port).min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn protocol_defaults_to_tcp_and_bad_ports_are_skipped() {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "s"},
            "spec": {"ports": [
                {"port": 53, "protocol": "UDP"},
                {"port": 8080},
                {"port": 70000, "protocol": "TCP"},
                {"port": 9090, "protocol": "TCP", "name": "metrics"},
            ]}
        }))
        .unwrap();
        let ports = ports_of(&service);
        assert_eq!(ports.len(), 3);
        assert_eq!(ports[1].protocol, "TCP");
        assert_eq!(lowest_tcp(&ports), Some(8080));
        assert_eq!(ports_of(&Service::default()), vec![]);
    }
}
