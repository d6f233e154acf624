//! The URIs a deployment reports in its `.finished` event, so tests and quality gates
//! that follow in the Keptn sequence know where to reach the service.

use contracts::validate::Target;
use serde::Deserialize;

/// How the service is reached from outside the mesh (the reference's environment
/// variables of the same names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingress {
    /// `${INGRESS_PROTOCOL}://${SERVICE}.${PROJECT}-${STAGE}.${INGRESS_HOSTNAME_SUFFIX}:${INGRESS_PORT}`
    /// unless the operator sets `HOSTNAME_TEMPLATE`.
    pub hostname_template: String,
    pub protocol: String,
    pub hostname_suffix: String,
    pub port: u16,
    /// Istio gateway the generated VirtualServices bind to, besides `mesh`.
    pub gateway: String,
}

impl Ingress {
    pub const DEFAULT_TEMPLATE: &'static str =
        "${INGRESS_PROTOCOL}://${SERVICE}.${PROJECT}-${STAGE}.${INGRESS_HOSTNAME_SUFFIX}:${INGRESS_PORT}";

    /// The public URI of the service in its stage.
    pub fn public_uri(&self, target: &Target) -> String {
        let port = self.port.to_string();
        let variables = [
            ("INGRESS_PROTOCOL", self.protocol.as_str()),
            ("INGRESS_HOSTNAME_SUFFIX", self.hostname_suffix.as_str()),
            ("INGRESS_PORT", port.as_str()),
            ("PROJECT", target.project.as_str()),
            ("STAGE", target.stage.as_str()),
            ("SERVICE", target.service.as_str()),
        ];
        let mut uri = self.hostname_template.clone();
        for (name, value) in variables {
            uri = uri.replace(&format!("${{{name}}}"), value);
        }
        uri
    }

    /// The host part of the public URI: what the generated VirtualService answers for.
    pub fn public_host(&self, target: &Target) -> String {
        host_of(&self.public_uri(target)).to_owned()
    }
}

impl Default for Ingress {
    fn default() -> Self {
        Ingress {
            hostname_template: Self::DEFAULT_TEMPLATE.to_owned(),
            protocol: "http".into(),
            hostname_suffix: "svc.cluster.local".into(),
            port: 80,
            gateway: "public-gateway.istio-system".into(),
        }
    }
}

/// `host` of `scheme://host:port/path`.
fn host_of(uri: &str) -> &str {
    let rest = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    authority.split(':').next().unwrap_or(authority)
}

/// The cluster-internal URI: `http://<service>.<namespace>:<port>`.
pub fn local_uri(service: &str, namespace: &str, port: u16) -> String {
    format!("http://{service}.{namespace}:{port}")
}

/// `helm/endpoints.yaml` of a user-managed service: the URIs the user declares, since
/// helm-service cannot know where a chart it does not shape is reachable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Endpoints {
    #[serde(rename = "deploymentURIsLocal", default)]
    pub local: Vec<String>,
    #[serde(rename = "deploymentURIsPublic", default)]
    pub public: Vec<String>,
}

impl Endpoints {
    pub fn parse(yaml: &[u8]) -> Result<Endpoints, String> {
        serde_yaml_ng::from_slice::<Option<Endpoints>>(yaml)
            .map(Option::unwrap_or_default)
            .map_err(|err| {
                format!(
                    "helm/endpoints.yaml is invalid: {err} (expected deploymentURIsLocal and \
                     deploymentURIsPublic lists of URIs)"
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::test_target as target;

    #[test]
    fn default_public_uri_matches_the_reference() {
        let ingress = Ingress::default();
        assert_eq!(
            ingress.public_uri(&target("sockshop", "dev", "carts")),
            "http://carts.sockshop-dev.svc.cluster.local:80"
        );
        assert_eq!(
            ingress.public_host(&target("sockshop", "dev", "carts")),
            "carts.sockshop-dev.svc.cluster.local"
        );
        assert_eq!(
            local_uri("carts", "sockshop-dev", 8080),
            "http://carts.sockshop-dev:8080"
        );
    }

    #[test]
    fn custom_template_and_ingress() {
        let ingress = Ingress {
            hostname_template:
                "${INGRESS_PROTOCOL}://${SERVICE}-${STAGE}.${PROJECT}.${INGRESS_HOSTNAME_SUFFIX}"
                    .into(),
            protocol: "https".into(),
            hostname_suffix: "example.com".into(),
            port: 443,
            gateway: "gw".into(),
        };
        assert_eq!(
            ingress.public_uri(&target("shop", "prod", "carts")),
            "https://carts-prod.shop.example.com"
        );
        assert_eq!(
            ingress.public_host(&target("shop", "prod", "carts")),
            "carts-prod.shop.example.com"
        );
    }

    #[test]
    fn endpoints_file_parses_and_reports_errors() {
        let endpoints = Endpoints::parse(
            b"deploymentURIsLocal:\n  - http://a.b:1\ndeploymentURIsPublic:\n  - https://a.example\n",
        )
        .unwrap();
        assert_eq!(endpoints.local, ["http://a.b:1"]);
        assert_eq!(endpoints.public, ["https://a.example"]);
        assert_eq!(Endpoints::parse(b"").unwrap(), Endpoints::default());
        assert!(Endpoints::parse(b"deploymentURIsLocal: 5")
            .unwrap_err()
            .contains("endpoints.yaml"));
    }
}
