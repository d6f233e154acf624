//! The traffic layer: how requests reach a service, and how blue/green moves them between
//! the canary (the user release) and the primary (the generated copy).
//!
//! One interface, [`Router`], with three implementations chosen per stage by `--traffic`:
//! - `istio`: a VirtualService weighing `<svc>-canary` against `<svc>-primary`, and a
//!   DestinationRule per Service (the reference's routing; the default);
//! - `gateway-api`: an HTTPRoute attached to `--gateway` with weighted `backendRefs`;
//! - `service`: no routing objects at all. The user chart's Service `<svc>` is what
//!   clients call; its selector picks the canary's pods (as the chart renders it) or the
//!   primary's (the split labels suffixed `-primary`, as the generated primary carries
//!   them). Promotion and rollback switch it by re-deploying the user release's manifest
//!   with the selector changed (see `replicas`), so the split is all or nothing.
//!
//! The layer is recorded in the generated release's model ([`Routing::traffic`]), so a
//! release or rollback acts on the layer the service was deployed with; a changed setting
//! takes effect at the next deployment.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::generated::{suffix_split_labels, unsuffix_split_labels};
use super::naming::is_dns_label;

/// Istio networking API of the generated objects: served by every Istio since 1.8.
pub const ISTIO_API_VERSION: &str = "networking.istio.io/v1beta1";
/// Gateway API of the generated HTTPRoute (the standard channel's v1).
pub const GATEWAY_API_VERSION: &str = "gateway.networking.k8s.io/v1";

/// Which traffic layer routes a stage's services.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrafficLayer {
    /// Istio VirtualService and DestinationRules.
    #[default]
    Istio,
    /// A Gateway API HTTPRoute attached to `--gateway`.
    GatewayApi,
    /// No mesh: the chart's Service selects the canary's or the primary's pods.
    Service,
}

impl TrafficLayer {
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficLayer::Istio => "istio",
            TrafficLayer::GatewayApi => "gateway-api",
            TrafficLayer::Service => "service",
        }
    }

    /// Whether the stage's namespace needs Istio's sidecars (`istio-injection`).
    pub fn needs_sidecars(self) -> bool {
        self == TrafficLayer::Istio
    }

    /// Whether the blue/green split is the selector of the user release's Service (a
    /// user-release change) rather than routing objects of the generated release.
    pub fn splits_by_selector(self) -> bool {
        self == TrafficLayer::Service
    }

    /// The share of traffic on the canary as observed: the generated model's weight, or with
    /// the `service` layer where the user release's Service selector points (an override
    /// that `selects_primary`: none; the chart's own selector: all).
    pub fn canary_weight(self, model_weight: u8, selects_primary: bool) -> u8 {
        match (self.splits_by_selector(), selects_primary) {
            (false, _) => model_weight,
            (true, true) => 0,
            (true, false) => 100,
        }
    }

    /// Parses a `--traffic` value.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "istio" => Ok(TrafficLayer::Istio),
            "gateway-api" => Ok(TrafficLayer::GatewayApi),
            "service" => Ok(TrafficLayer::Service),
            other => Err(format!(
                "{other:?} is not a traffic layer: use istio, gateway-api or service"
            )),
        }
    }
}

impl fmt::Display for TrafficLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Gateway an HTTPRoute attaches to (`--gateway NAMESPACE/NAME`), checked as Kubernetes
/// names before it reaches a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayRef {
    pub namespace: String,
    pub name: String,
}

impl GatewayRef {
    /// `NAMESPACE/NAME`: a namespace (DNS-1123 label) and a Gateway name (DNS-1123
    /// subdomain).
    pub fn parse(text: &str) -> Result<Self, String> {
        let hint = "expected NAMESPACE/NAME of a Gateway, e.g. gateways/public (lower-case \
                    letters, digits, '-'; the name may have '.')";
        let (namespace, name) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{text:?}: {hint}"))?;
        let name_ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|part| is_dns_label(part, 63));
        if !is_dns_label(namespace, 63) || !name_ok {
            return Err(format!("{text:?}: {hint}"));
        }
        Ok(GatewayRef {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for GatewayRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where a service's generated routing is reachable, and by which layer; part of the
/// generated release's model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routing {
    /// The Keptn service: the route's name and in-mesh host.
    pub service: String,
    pub namespace: String,
    /// Host of the public URI.
    pub public_host: String,
    /// Istio gateway for traffic from outside the mesh.
    pub gateway: String,
    /// The layer (absent in models of earlier versions: Istio, all they knew).
    #[serde(default)]
    pub traffic: TrafficLayer,
    /// The Gateway API parent of the HTTPRoute (`gateway-api` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_gateway: Option<GatewayRef>,
}

impl Routing {
    /// The layer's implementation of [`Router`].
    pub fn router(&self) -> Box<dyn Router + '_> {
        match self.traffic {
            TrafficLayer::Istio => Box::new(Istio(self)),
            TrafficLayer::GatewayApi => Box::new(GatewayApi(self)),
            TrafficLayer::Service => Box::new(ServiceSelector),
        }
    }
}

/// A Service traffic is sent to, with the port a route names (Gateway API requires one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend<'a> {
    pub service: &'a str,
    pub port: Option<u16>,
}

/// The routing objects of the generated release, one implementation per layer.
pub trait Router {
    /// Routing of a `direct` service: everything to `main`; `services` are all the
    /// Services of the user release.
    fn direct(&self, services: &[String], main: Option<Backend<'_>>) -> Vec<Value>;

    /// Routing of a blue/green service: `canary_weight` percent to `canary`, the rest to
    /// `primary`.
    fn blue_green(
        &self,
        canary: Backend<'_>,
        primary: Backend<'_>,
        canary_weight: u8,
    ) -> Vec<Value>;
}

/// `istio`: VirtualService and DestinationRules.
struct Istio<'a>(&'a Routing);

impl Istio<'_> {
    fn virtual_service(&self, routes: Vec<Value>) -> Value {
        let routing = &self.0;
        json!({
            "apiVersion": ISTIO_API_VERSION,
            "kind": "VirtualService",
            "metadata": {"name": routing.service},
            "spec": {
                "hosts": [routing.public_host, routing.service],
                "gateways": [routing.gateway, "mesh"],
                "http": [{"route": routes}],
            }
        })
    }

    fn destination_rule(&self, service: &str) -> Value {
        json!({
            "apiVersion": ISTIO_API_VERSION,
            "kind": "DestinationRule",
            "metadata": {"name": service},
            "spec": {"host": fqdn(service, &self.0.namespace)},
        })
    }
}

impl Router for Istio<'_> {
    fn direct(&self, services: &[String], main: Option<Backend<'_>>) -> Vec<Value> {
        let mut objects: Vec<Value> = services
            .iter()
            .map(|service| self.destination_rule(service))
            .collect();
        if let Some(main) = main {
            let route = json!({"destination": {"host": fqdn(main.service, &self.0.namespace)}});
            objects.push(self.virtual_service(vec![route]));
        }
        objects
    }

    fn blue_green(
        &self,
        canary: Backend<'_>,
        primary: Backend<'_>,
        canary_weight: u8,
    ) -> Vec<Value> {
        let namespace = &self.0.namespace;
        let canary_weight = u64::from(canary_weight.min(100));
        let routes = vec![
            json!({"destination": {"host": fqdn(canary.service, namespace)}, "weight": canary_weight}),
            json!({"destination": {"host": fqdn(primary.service, namespace)}, "weight": 100 - canary_weight}),
        ];
        vec![
            self.destination_rule(primary.service),
            self.destination_rule(canary.service),
            self.virtual_service(routes),
        ]
    }
}

/// `gateway-api`: one HTTPRoute named like the service.
struct GatewayApi<'a>(&'a Routing);

impl GatewayApi<'_> {
    fn http_route(&self, backends: Vec<Value>) -> Value {
        let routing = &self.0;
        let mut spec = json!({"rules": [{"backendRefs": backends}]});
        if let Some(parent) = &routing.parent_gateway {
            spec["parentRefs"] = json!([{
                "group": "gateway.networking.k8s.io",
                "kind": "Gateway",
                "namespace": parent.namespace,
                "name": parent.name,
            }]);
        }
        // Gateway API hostnames are DNS names (no IP addresses, no ports).
        if is_hostname(&routing.public_host) {
            spec["hostnames"] = json!([routing.public_host]);
        }
        json!({
            "apiVersion": GATEWAY_API_VERSION,
            "kind": "HTTPRoute",
            "metadata": {"name": routing.service},
            "spec": spec,
        })
    }
}

fn backend_ref(backend: Backend<'_>, weight: Option<u8>) -> Value {
    let mut object = json!({"group": "", "kind": "Service", "name": backend.service});
    if let Some(port) = backend.port {
        object["port"] = json!(port);
    }
    if let Some(weight) = weight {
        object["weight"] = json!(weight.min(100));
    }
    object
}

impl Router for GatewayApi<'_> {
    fn direct(&self, _services: &[String], main: Option<Backend<'_>>) -> Vec<Value> {
        // A Service backend needs a port: without one there is nothing to route to.
        match main.filter(|main| main.port.is_some()) {
            Some(main) => vec![self.http_route(vec![backend_ref(main, None)])],
            None => Vec::new(),
        }
    }

    fn blue_green(
        &self,
        canary: Backend<'_>,
        primary: Backend<'_>,
        canary_weight: u8,
    ) -> Vec<Value> {
        let canary_weight = canary_weight.min(100);
        vec![self.http_route(vec![
            backend_ref(canary, Some(canary_weight)),
            backend_ref(primary, Some(100 - canary_weight)),
        ])]
    }
}

/// `service`: nothing to generate; the split is the user Service's selector
/// ([`select_primary`]).
struct ServiceSelector;

impl Router for ServiceSelector {
    fn direct(&self, _services: &[String], _main: Option<Backend<'_>>) -> Vec<Value> {
        Vec::new()
    }

    fn blue_green(&self, _: Backend<'_>, _: Backend<'_>, _: u8) -> Vec<Value> {
        Vec::new()
    }
}

/// The `service` layer's switch to the primary: every Service of a user manifest that
/// selects by a split label (`app`, `app.kubernetes.io/name`) selects the primary's pods
/// instead, whose labels carry the `-primary` suffix. Returns how many were switched.
pub fn select_primary(objects: &mut [Value]) -> usize {
    switched_services(objects)
        .map(|service| suffix_split_labels(&mut service["spec"]["selector"]))
        .filter(|&switched| switched)
        .count()
}

/// Undoes [`select_primary`] on a manifest it was applied to, giving back what the chart
/// rendered (exactly: a selector the chart itself ended in `-primary` was suffixed twice).
/// Returns how many Services were switched back.
pub fn select_canary(objects: &mut [Value]) -> usize {
    switched_services(objects)
        .map(|service| unsuffix_split_labels(&mut service["spec"]["selector"]))
        .filter(|&switched| switched)
        .count()
}

/// The Services whose selector is the `service` layer's switch.
fn switched_services(objects: &mut [Value]) -> impl Iterator<Item = &mut Value> {
    objects
        .iter_mut()
        .filter(|object| object["kind"] == "Service" && object["apiVersion"] == "v1")
        .filter(|service| service["spec"]["type"] != "ExternalName")
}

/// The cluster DNS name of a Service.
pub fn fqdn(service: &str, namespace: &str) -> String {
    format!("{service}.{namespace}.svc.cluster.local")
}

/// A DNS name as Gateway API takes it in `hostnames`: labels, at least one letter.
fn is_hostname(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| is_dns_label(label, 63))
        && host.bytes().any(|b| b.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing(traffic: TrafficLayer) -> Routing {
        Routing {
            service: "carts".into(),
            namespace: "shop-dev".into(),
            public_host: "carts.shop-dev.example.com".into(),
            gateway: "public-gateway.istio-system".into(),
            traffic,
            parent_gateway: Some(GatewayRef::parse("gateways/public").unwrap()),
        }
    }

    const CANARY: Backend<'static> = Backend {
        service: "carts-canary",
        port: Some(80),
    };
    const PRIMARY: Backend<'static> = Backend {
        service: "carts-primary",
        port: Some(80),
    };

    #[test]
    fn gateway_api_weighs_canary_and_primary_backends() {
        let routing = routing(TrafficLayer::GatewayApi);
        let objects = routing.router().blue_green(CANARY, PRIMARY, 30);
        assert_eq!(objects.len(), 1);
        let route = &objects[0];
        assert_eq!(route["apiVersion"], GATEWAY_API_VERSION);
        assert_eq!(route["kind"], "HTTPRoute");
        assert_eq!(route["metadata"]["name"], "carts");
        assert_eq!(
            route["spec"]["parentRefs"],
            json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "gateways", "name": "public"}])
        );
        assert_eq!(
            route["spec"]["hostnames"],
            json!(["carts.shop-dev.example.com"])
        );
        assert_eq!(
            route["spec"]["rules"][0]["backendRefs"],
            json!([
                {"group": "", "kind": "Service", "name": "carts-canary", "port": 80, "weight": 30},
                {"group": "", "kind": "Service", "name": "carts-primary", "port": 80, "weight": 70},
            ])
        );
        // An IP address is no Gateway API hostname: the route matches any host then.
        let mut by_ip = routing.clone();
        by_ip.public_host = "10.0.0.1".into();
        let objects = by_ip.router().blue_green(CANARY, PRIMARY, 100);
        assert!(objects[0]["spec"].get("hostnames").is_none());
    }

    #[test]
    fn gateway_api_direct_routes_to_the_main_service_when_it_has_a_port() {
        let routing = routing(TrafficLayer::GatewayApi);
        let main = Backend {
            service: "carts",
            port: Some(8080),
        };
        let objects = routing.router().direct(&["carts".into()], Some(main));
        assert_eq!(
            objects[0]["spec"]["rules"][0]["backendRefs"],
            json!([{"group": "", "kind": "Service", "name": "carts", "port": 8080}])
        );
        let portless = Backend {
            service: "carts",
            port: None,
        };
        assert!(routing.router().direct(&[], Some(portless)).is_empty());
    }

    #[test]
    fn istio_renders_rules_and_a_weighted_virtual_service() {
        let routing = routing(TrafficLayer::Istio);
        let objects = routing.router().blue_green(CANARY, PRIMARY, 100);
        let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            ["DestinationRule", "DestinationRule", "VirtualService"]
        );
        assert_eq!(objects[2]["spec"]["http"][0]["route"][1]["weight"], 0);
    }

    #[test]
    fn the_service_layer_generates_no_routing_and_switches_selectors() {
        let routing = routing(TrafficLayer::Service);
        assert!(routing.router().blue_green(CANARY, PRIMARY, 0).is_empty());
        assert!(routing.router().direct(&["carts".into()], None).is_empty());
        let mut objects = vec![
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "carts"},
                   "spec": {"selector": {"app": "carts", "tier": "web"}}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "carts"},
                   "spec": {"selector": {"matchLabels": {"app": "carts"}}}}),
        ];
        assert_eq!(select_primary(&mut objects), 1);
        assert_eq!(
            objects[0]["spec"]["selector"],
            json!({"app": "carts-primary", "tier": "web"})
        );
        // The Deployment is the canary's: untouched.
        assert_eq!(
            objects[1]["spec"]["selector"]["matchLabels"]["app"],
            "carts"
        );
    }

    #[test]
    fn selecting_the_canary_undoes_selecting_the_primary() {
        let rendered = vec![
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "carts"},
                   "spec": {"selector": {"app.kubernetes.io/name": "carts", "tier": "web"}}}),
            // A chart whose own selector ends like the switch: suffixed twice, undone once.
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
                   "spec": {"selector": {"app": "db-primary"}}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
                   "spec": {"type": "ExternalName", "selector": {"app": "ext-primary"}}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bare"},
                   "spec": {"selector": {"role": "web"}}}),
        ];
        let mut objects = rendered.clone();
        assert_eq!(select_primary(&mut objects), 2);
        assert_eq!(objects[1]["spec"]["selector"]["app"], "db-primary-primary");
        assert_eq!(select_canary(&mut objects), 2);
        assert_eq!(objects, rendered);
    }

    #[test]
    fn the_observed_weight_is_the_selectors_with_the_service_layer() {
        assert_eq!(TrafficLayer::Istio.canary_weight(30, true), 30);
        assert_eq!(TrafficLayer::GatewayApi.canary_weight(100, false), 100);
        assert_eq!(TrafficLayer::Service.canary_weight(100, true), 0);
        assert_eq!(TrafficLayer::Service.canary_weight(0, false), 100);
    }

    #[test]
    fn gateways_are_checked_names() {
        let gateway = GatewayRef::parse("gateways/public.web").unwrap();
        assert_eq!(gateway.to_string(), "gateways/public.web");
        for bad in [
            "public",
            "/public",
            "gateways/",
            "Gateways/public",
            "gate ways/public",
            "gateways/public/x",
            "gateways/-public",
            "gateways/pub\"lic",
            "kube.system/public",
        ] {
            assert!(GatewayRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn layers_parse_and_models_of_earlier_versions_are_istio() {
        assert_eq!(
            TrafficLayer::parse("gateway-api"),
            Ok(TrafficLayer::GatewayApi)
        );
        assert!(TrafficLayer::parse("linkerd").is_err());
        let old = json!({"service": "carts", "namespace": "shop-dev",
                         "public_host": "h", "gateway": "g"});
        let routing: Routing = serde_json::from_value(old).unwrap();
        assert_eq!(routing.traffic, TrafficLayer::Istio);
        assert_eq!(routing.parent_gateway, None);
    }
}
