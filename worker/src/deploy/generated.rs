//! The generated release: the routing (by the stage's traffic layer, `traffic`) and, for
//! blue/green, the primary copy of the service, that helm-service deploys next to the
//! user's chart.
//!
//! The chart itself is a fixed shell printing a manifest string (see `manifest_chart`); every
//! object is computed here, in Rust, from a small model kept in the release's values.
//! So the user's manifest is never re-interpreted as a template (a `{{` in a user's
//! annotation stays text), the objects are unit-testable without Helm, and a later task
//! (promote, roll back, scale) reads the model back from Helm's storage, changes one
//! field and re-renders — the generated release is the single source of truth.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use thiserror::Error;

use super::autoscaling;
use super::manifest::{lowest_tcp_port, name_of, Manifest};
use super::manifest_chart;
use super::naming::{derived_object_name, NameError};
use super::traffic::Backend;
use super::KeptnValues;

pub use super::traffic::Routing;
/// Labels whose values tell primary pods from canary pods.
const SPLIT_LABELS: [&str; 2] = ["app", "app.kubernetes.io/name"];

#[derive(Debug, Error)]
pub enum GenerateError {
    #[error(
        "blue_green_service needs exactly one Deployment and one Service in the chart, so that \
         a primary copy can be generated; the chart renders {deployments} Deployment(s) [{deployment_names}] \
         and {services} Service(s) [{service_names}]: split the chart or use the direct strategy"
    )]
    NotOneDeploymentAndService {
        deployments: usize,
        deployment_names: String,
        services: usize,
        service_names: String,
    },
    #[error(
        "blue_green_service needs the {kind} {name:?} to select its pods by label `app` or \
         `app.kubernetes.io/name` (matchLabels), so that primary and canary pods can be told \
         apart; add one of these labels to the selector and the pod template"
    )]
    NoSplitLabel { kind: &'static str, name: String },
    #[error("{0}")]
    Name(#[from] NameError),
    #[error("the {kind} in the chart has no metadata.name")]
    Unnamed { kind: &'static str },
    #[error("the generated release's values are not helm-service's: {0}")]
    ForeignValues(String),
    #[error("writing the generated objects as YAML: {0}")]
    Yaml(String),
}

/// Values of the generated release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratedValues {
    pub keptn: KeptnValues,
    /// What the objects are computed from.
    pub model: GeneratedModel,
    /// The rendered objects as one YAML manifest (what the chart's template prints).
    /// Absent in releases of earlier versions, which printed an `objects` list instead.
    #[serde(default)]
    pub manifest: String,
}

impl GeneratedValues {
    pub fn new(keptn: KeptnValues, model: GeneratedModel) -> Result<Self, GenerateError> {
        let manifest = manifest_chart::to_manifest(&model.render()?)
            .map_err(|err| GenerateError::Yaml(err.to_string()))?;
        Ok(GeneratedValues {
            keptn,
            model,
            manifest,
        })
    }

    /// Reads the values of a deployed generated release back.
    pub fn from_release_values(values: Value) -> Result<Self, GenerateError> {
        serde_json::from_value(values).map_err(|err| GenerateError::ForeignValues(err.to_string()))
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// What the generated objects are derived from, by strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case")]
pub enum GeneratedModel {
    /// `direct`: routing only — a VirtualService to the user's service and a
    /// DestinationRule per Service of the user release.
    Mesh(MeshModel),
    /// `blue_green_service`: primary Deployment and Service, canary Service, and a
    /// VirtualService weighing the two.
    BlueGreen(BlueGreenModel),
}

impl GeneratedModel {
    pub fn render(&self) -> Result<Vec<Value>, GenerateError> {
        match self {
            GeneratedModel::Mesh(model) => Ok(model.render()),
            GeneratedModel::BlueGreen(model) => model.render(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshModel {
    pub routing: Routing,
    /// Services of the user release.
    pub services: Vec<String>,
    /// The one traffic goes to.
    pub main_service: Option<String>,
    /// Its port (lowest TCP port), which a Gateway API backend names. Absent in models of
    /// earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_port: Option<u16>,
}

impl MeshModel {
    fn render(&self) -> Vec<Value> {
        let main = self.main_service.as_deref().map(|service| Backend {
            service,
            port: self.main_port,
        });
        self.routing.router().direct(&self.services, main)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlueGreenModel {
    pub routing: Routing,
    /// The user's Service (cleaned of server-set fields).
    pub service: Value,
    /// The Deployment the primary copies: the user's at the last promotion (or at the
    /// first deployment).
    pub primary_source: Value,
    /// Percent of traffic to the canary (the user release); the rest goes to primary.
    pub canary_weight: u8,
    /// The user's HorizontalPodAutoscaler of `primary_source`, when the chart has one: the
    /// primary gets a copy targeting it (`deploy::autoscaling`). Absent in models of
    /// earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_hpa_source: Option<Value>,
}

impl BlueGreenModel {
    /// Builds the model from the user release's manifest, enforcing the blue/green rule.
    pub fn from_manifest(
        routing: Routing,
        manifest: &Manifest,
        canary_weight: u8,
    ) -> Result<Self, GenerateError> {
        let deployments = manifest.deployments();
        let services = manifest.services();
        if deployments.len() != 1 || services.len() != 1 {
            let names = |objects: &[&Value]| {
                objects
                    .iter()
                    .map(|object| name_of(object).unwrap_or("?"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(GenerateError::NotOneDeploymentAndService {
                deployments: deployments.len(),
                deployment_names: names(&deployments),
                services: services.len(),
                service_names: names(&services),
            });
        }
        let hpa = name_of(deployments[0])
            .and_then(|name| autoscaling::hpa_of(&manifest.objects, name))
            .map(detached);
        let model = BlueGreenModel {
            routing,
            service: detached(services[0]),
            primary_source: detached(deployments[0]),
            canary_weight,
            primary_hpa_source: hpa,
        };
        model.render()?;
        Ok(model)
    }

    /// Name of the generated primary Deployment.
    pub fn primary_deployment(&self) -> Result<String, GenerateError> {
        let name =
            name_of(&self.primary_source).ok_or(GenerateError::Unnamed { kind: "Deployment" })?;
        Ok(derived_object_name(name, "primary")?)
    }

    /// The primary's copy of the user's HPA (`primary_hpa_source`), named and targeting like
    /// the primary; `None` when the chart has none.
    pub fn primary_hpa(&self) -> Result<Option<Value>, GenerateError> {
        let Some(source) = &self.primary_hpa_source else {
            return Ok(None);
        };
        let name = name_of(source).ok_or(GenerateError::Unnamed {
            kind: "HorizontalPodAutoscaler",
        })?;
        let mut hpa = source.clone();
        hpa["metadata"]["name"] = json!(derived_object_name(name, "primary")?);
        suffix_split_labels(&mut hpa["metadata"]["labels"]);
        hpa["spec"]["scaleTargetRef"]["name"] = json!(self.primary_deployment()?);
        Ok(Some(hpa))
    }

    fn service_name(&self) -> Result<&str, GenerateError> {
        name_of(&self.service).ok_or(GenerateError::Unnamed { kind: "Service" })
    }

    fn render(&self) -> Result<Vec<Value>, GenerateError> {
        let service = self.service_name()?;
        let deployment_name = name_of(&self.primary_source).unwrap_or_default().to_owned();
        let primary_service = derived_object_name(service, "primary")?;
        let canary_service = derived_object_name(service, "canary")?;

        let mut primary = self.primary_source.clone();
        primary["metadata"]["name"] = json!(self.primary_deployment()?);
        suffix_split_labels(&mut primary["metadata"]["labels"]);
        suffix_split_labels(&mut primary["spec"]["template"]["metadata"]["labels"]);
        if !suffix_split_labels(&mut primary["spec"]["selector"]["matchLabels"]) {
            return Err(GenerateError::NoSplitLabel {
                kind: "Deployment",
                name: deployment_name,
            });
        }

        let mut primary_svc = self.service.clone();
        primary_svc["metadata"]["name"] = json!(primary_service);
        suffix_split_labels(&mut primary_svc["metadata"]["labels"]);
        if !suffix_split_labels(&mut primary_svc["spec"]["selector"]) {
            return Err(GenerateError::NoSplitLabel {
                kind: "Service",
                name: service.to_owned(),
            });
        }
        let mut canary_svc = self.service.clone();
        canary_svc["metadata"]["name"] = json!(canary_service);

        // The primary's HPA, unless the primary is at zero (nothing may scale it back).
        let primary_hpa = match self.primary_hpa()? {
            Some(hpa) if primary["spec"]["replicas"].as_u64() != Some(0) => Some(hpa),
            _ => None,
        };

        let port = lowest_tcp_port(&self.service);
        let routing = self.routing.router().blue_green(
            Backend {
                service: &canary_service,
                port,
            },
            Backend {
                service: &primary_service,
                port,
            },
            self.canary_weight,
        );
        let mut objects = vec![primary, primary_svc, canary_svc];
        objects.extend(routing);
        objects.extend(primary_hpa);
        Ok(objects)
    }
}

/// Appends `-primary` to the split labels present in `labels`; whether there was one.
pub(crate) fn suffix_split_labels(labels: &mut Value) -> bool {
    let Some(labels) = labels.as_object_mut() else {
        return false;
    };
    let mut found = false;
    for key in SPLIT_LABELS {
        if let Some(Value::String(value)) = labels.get_mut(key) {
            value.push_str("-primary");
            found = true;
        }
    }
    found
}

/// Undoes [`suffix_split_labels`]: drops the `-primary` suffix of the split labels in
/// `labels` that carry it; whether there was one.
pub(crate) fn unsuffix_split_labels(labels: &mut Value) -> bool {
    let Some(labels) = labels.as_object_mut() else {
        return false;
    };
    let mut found = false;
    for key in SPLIT_LABELS {
        if let Some(Value::String(value)) = labels.get_mut(key) {
            if let Some(stem) = value.strip_suffix("-primary") {
                *value = stem.to_owned();
                found = true;
            }
        }
    }
    found
}

/// A copy of a rendered object without what the server or Helm own: it becomes part of
/// another release, so Helm's ownership annotations and server-set fields must go.
pub fn detached(object: &Value) -> Value {
    let mut metadata = Map::new();
    for key in ["name", "labels", "annotations"] {
        if let Some(value) = object["metadata"].get(key) {
            metadata.insert(key.to_owned(), value.clone());
        }
    }
    if let Some(Value::Object(annotations)) = metadata.get_mut("annotations") {
        annotations.retain(|key, _| {
            !key.starts_with("meta.helm.sh/")
                && key != "kubectl.kubernetes.io/last-applied-configuration"
                && key != "deployment.kubernetes.io/revision"
        });
    }
    let mut spec = object["spec"].clone();
    if object["kind"] == "Service" {
        if let Some(spec) = spec.as_object_mut() {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
            spec.remove("healthCheckNodePort");
        }
        if let Some(ports) = spec["ports"].as_array_mut() {
            for port in ports {
                if let Some(port) = port.as_object_mut() {
                    port.remove("nodePort");
                }
            }
        }
    }
    json!({
        "apiVersion": object["apiVersion"],
        "kind": object["kind"],
        "metadata": metadata,
        "spec": spec,
    })
}

/// Writes the generated chart for release `name` under `dir`; returns the chart directory.
pub fn write_chart(dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    manifest_chart::write(
        dir,
        name,
        (name, "0.1.0", ""),
        "Istio routing (and the blue/green primary) generated by helm-service; do not edit, it \
         is regenerated",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing() -> Routing {
        Routing {
            service: "carts".into(),
            namespace: "shop-dev".into(),
            public_host: "carts.shop-dev.svc.cluster.local".into(),
            gateway: "public-gateway.istio-system".into(),
            traffic: crate::deploy::traffic::TrafficLayer::Istio,
            parent_gateway: None,
        }
    }

    const USER: &str = "
apiVersion: v1
kind: Service
metadata:
  name: carts
  annotations:
    meta.helm.sh/release-name: shop-dev-carts
    note: '{{ not a template }}'
spec:
  type: NodePort
  clusterIP: 10.0.0.3
  selector: {app: carts}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: carts
  labels: {app: carts, tier: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: carts, app.kubernetes.io/name: carts}}
  template:
    metadata: {labels: {app: carts, app.kubernetes.io/name: carts, tier: web}}
    spec: {containers: [{name: carts, image: 'carts:1'}]}
status: {replicas: 2}
";

    fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name} in {objects:#?}"))
    }

    #[test]
    fn blue_green_objects_follow_the_reference_shape() {
        let manifest = Manifest::parse("r", USER).unwrap();
        let model = BlueGreenModel::from_manifest(routing(), &manifest, 100).unwrap();
        let objects = model.render().unwrap();
        assert_eq!(objects.len(), 6);

        let primary = find(&objects, "Deployment", "carts-primary");
        assert_eq!(
            primary["spec"]["selector"]["matchLabels"]["app"],
            "carts-primary"
        );
        assert_eq!(
            primary["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
            "carts-primary"
        );
        assert_eq!(
            primary["spec"]["template"]["metadata"]["labels"]["app"],
            "carts-primary"
        );
        assert_eq!(
            primary["spec"]["template"]["metadata"]["labels"]["tier"],
            "web"
        );
        assert_eq!(primary["spec"]["replicas"], 2);
        assert!(primary.get("status").is_none());

        let primary_svc = find(&objects, "Service", "carts-primary");
        assert_eq!(primary_svc["spec"]["selector"]["app"], "carts-primary");
        assert!(primary_svc["spec"].get("clusterIP").is_none());
        assert!(primary_svc["spec"]["ports"][0].get("nodePort").is_none());
        assert!(primary_svc["metadata"]["annotations"]
            .get("meta.helm.sh/release-name")
            .is_none());
        let canary_svc = find(&objects, "Service", "carts-canary");
        assert_eq!(canary_svc["spec"]["selector"]["app"], "carts");

        let vs = find(&objects, "VirtualService", "carts");
        assert_eq!(
            vs["spec"]["gateways"],
            json!(["public-gateway.istio-system", "mesh"])
        );
        assert_eq!(
            vs["spec"]["hosts"],
            json!(["carts.shop-dev.svc.cluster.local", "carts"])
        );
        let routes = &vs["spec"]["http"][0]["route"];
        assert_eq!(
            routes[0],
            json!({"destination": {"host": "carts-canary.shop-dev.svc.cluster.local"}, "weight": 100})
        );
        assert_eq!(
            routes[1],
            json!({"destination": {"host": "carts-primary.shop-dev.svc.cluster.local"}, "weight": 0})
        );
        let dr = find(&objects, "DestinationRule", "carts-primary");
        assert_eq!(
            dr["spec"]["host"],
            "carts-primary.shop-dev.svc.cluster.local"
        );
        find(&objects, "DestinationRule", "carts-canary");
    }

    #[test]
    fn each_traffic_layer_routes_the_same_primary_and_canary() {
        use crate::deploy::traffic::{GatewayRef, TrafficLayer};
        let manifest = Manifest::parse("r", USER).unwrap();
        let kinds = |traffic| {
            let mut routing = routing();
            routing.traffic = traffic;
            routing.parent_gateway = Some(GatewayRef::parse("gateways/public").unwrap());
            let model = BlueGreenModel::from_manifest(routing, &manifest, 100).unwrap();
            let objects = model.render().unwrap();
            // The primary copy and both Services are the same on every layer.
            find(&objects, "Deployment", "carts-primary");
            find(&objects, "Service", "carts-primary");
            find(&objects, "Service", "carts-canary");
            objects
                .iter()
                .skip(3)
                .map(|o| o["kind"].as_str().unwrap_or_default().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(TrafficLayer::Istio),
            ["DestinationRule", "DestinationRule", "VirtualService"]
        );
        assert_eq!(kinds(TrafficLayer::GatewayApi), ["HTTPRoute"]);
        assert!(kinds(TrafficLayer::Service).is_empty());

        let mut routing = routing();
        routing.traffic = TrafficLayer::GatewayApi;
        let model = BlueGreenModel::from_manifest(routing, &manifest, 100).unwrap();
        let objects = model.render().unwrap();
        let route = find(&objects, "HTTPRoute", "carts");
        // The backends name the Service's port (the user's Service listens on 80).
        assert_eq!(
            route["spec"]["rules"][0]["backendRefs"][0],
            json!({"group": "", "kind": "Service", "name": "carts-canary", "port": 80, "weight": 100})
        );
    }

    #[test]
    fn two_deployments_break_the_blue_green_rule_with_names() {
        let text = format!(
            "{USER}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: carts-db}}\nspec: {{}}\n"
        );
        let manifest = Manifest::parse("r", &text).unwrap();
        let err = BlueGreenModel::from_manifest(routing(), &manifest, 100).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("exactly one Deployment and one Service"),
            "{message}"
        );
        assert!(message.contains("carts, carts-db"), "{message}");
    }

    #[test]
    fn selector_without_split_label_is_refused() {
        let text = USER.replace(
            "selector: {matchLabels: {app: carts, app.kubernetes.io/name: carts}}",
            "selector: {matchLabels: {tier: web}}",
        );
        let manifest = Manifest::parse("r", &text).unwrap();
        let err = BlueGreenModel::from_manifest(routing(), &manifest, 100).unwrap_err();
        assert!(err.to_string().contains("`app`"), "{err}");
    }

    #[test]
    fn values_round_trip_through_the_release() {
        let manifest = Manifest::parse("r", USER).unwrap();
        let model = BlueGreenModel::from_manifest(routing(), &manifest, 100).unwrap();
        let keptn = KeptnValues::new("shop", "dev", "carts", "primary");
        let values = GeneratedValues::new(keptn, GeneratedModel::BlueGreen(model)).unwrap();
        let back = GeneratedValues::from_release_values(values.to_value()).unwrap();
        assert_eq!(back, values);
        assert!(GeneratedValues::from_release_values(json!({"x": 1})).is_err());
    }

    #[test]
    fn mesh_routes_to_the_main_service_with_a_rule_per_service() {
        let model = MeshModel {
            routing: routing(),
            services: vec!["carts".into(), "carts-db".into()],
            main_service: Some("carts".into()),
            main_port: Some(80),
        };
        let objects = GeneratedModel::Mesh(model).render().unwrap();
        find(&objects, "DestinationRule", "carts");
        find(&objects, "DestinationRule", "carts-db");
        let vs = find(&objects, "VirtualService", "carts");
        assert_eq!(
            vs["spec"]["http"][0]["route"][0]["destination"]["host"],
            "carts.shop-dev.svc.cluster.local"
        );
    }

    #[test]
    fn blue_green_primary_gets_a_copy_of_the_users_hpa() {
        let with_hpa = format!(
            "{USER}---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: carts
  labels: {{app: carts}}
  annotations: {{meta.helm.sh/release-name: shop-dev-carts}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: carts}}
  minReplicas: 2
  maxReplicas: 5
"
        );
        let manifest = Manifest::parse("r", &with_hpa).unwrap();
        let mut model = BlueGreenModel::from_manifest(routing(), &manifest, 100).unwrap();
        let objects = model.render().unwrap();
        assert_eq!(objects.len(), 7);
        let hpa = find(&objects, "HorizontalPodAutoscaler", "carts-primary");
        assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "carts-primary");
        assert_eq!(hpa["spec"]["minReplicas"], 2);
        assert_eq!(hpa["metadata"]["labels"]["app"], "carts-primary");
        assert!(hpa["metadata"]["annotations"]
            .get("meta.helm.sh/release-name")
            .is_none());
        // A primary at zero has no HPA to scale it back.
        model.primary_source["spec"]["replicas"] = json!(0);
        assert!(model
            .render()
            .unwrap()
            .iter()
            .all(|o| o["kind"] != "HorizontalPodAutoscaler"));
        // Models of earlier versions (no HPA field) still read.
        let mut old = serde_json::to_value(&model).unwrap();
        old.as_object_mut().unwrap().remove("primary_hpa_source");
        let old: BlueGreenModel = serde_json::from_value(old).unwrap();
        assert_eq!(old.primary_hpa_source, None);
    }
}
