//! CustomResourceDefinitions with the real kubectl: applying a CRD makes its kind servable
//! (discovery, OpenAPI v3, CRUD, patches, server-side apply); deleting it removes the kind
//! and its objects.

mod common;

use common::*;
use serde_json::json;

fn crd() -> serde_json::Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                      "shortNames": ["wd"], "listKind": "WidgetList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}}
            }]
        }
    })
}

fn widget(name: &str, size: u32) -> serde_json::Value {
    json!({
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"size": size, "nested": {"colour": "blue"}},
        "extra": "top-level fields are kept"
    })
}

#[test]
fn crd_makes_custom_kind_servable_until_deleted() {
    let c = Cluster::start();
    let err = c.kubectl(&["get", "widgets"]).failure();
    assert!(
        err.contains("the server doesn't have a resource type"),
        "{err}"
    );

    let crd_file = c.manifest("crd.json", &crd());
    c.kubectl(&["apply", "-f", &crd_file]).success();
    let out = c
        .kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd/widgets.example.com",
            "--timeout=10s",
        ])
        .success();
    assert!(out.contains("condition met"), "{out}");
    let stored = c.json(&["get", "crd", "widgets.example.com", "-o", "json"]);
    assert_eq!(stored["status"]["acceptedNames"]["kind"], "Widget");
    assert_eq!(stored["status"]["storedVersions"], json!(["v1"]));

    let resources = c.kubectl(&["api-resources"]).success();
    let line = resources
        .lines()
        .find(|l| l.starts_with("widgets "))
        .unwrap_or_else(|| panic!("widgets missing:\n{resources}"));
    assert!(
        line.contains("example.com/v1") && line.contains("wd") && line.contains("Widget"),
        "{line}"
    );

    let w1 = c.manifest("w1.json", &widget("one", 1));
    c.kubectl(&["apply", "-f", &w1]).success();
    let w2 = c.manifest("w2.json", &widget("two", 2));
    c.kubectl(&["apply", "--server-side", "-f", &w2]).success();
    let names = c.kubectl(&["get", "widgets", "-o", "name"]).success();
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        vec!["widget.example.com/one", "widget.example.com/two"]
    );
    let one = c.json(&["get", "wd", "one", "-o", "json"]);
    assert_eq!(one["spec"]["nested"]["colour"], "blue");
    assert_eq!(one["extra"], "top-level fields are kept");
    assert_eq!(one["metadata"]["generation"], 1);

    // Merge and JSON patches; strategic merge patch is refused for custom kinds.
    c.kubectl(&[
        "patch",
        "widget",
        "one",
        "--type=merge",
        "-p",
        r#"{"spec":{"size":5}}"#,
    ])
    .success();
    c.kubectl(&[
        "patch",
        "widget",
        "one",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/nested/colour","value":"red"}]"#,
    ])
    .success();
    let one = c.json(&["get", "widget", "one", "-o", "json"]);
    assert_eq!(one["spec"]["size"], 5);
    assert_eq!(one["spec"]["nested"]["colour"], "red");
    assert_eq!(one["metadata"]["generation"], 3);
    let err = c
        .kubectl(&[
            "patch",
            "widget",
            "one",
            "--type=strategic",
            "-p",
            r#"{"spec":{"size":6}}"#,
        ])
        .failure();
    assert!(
        err.contains("UnsupportedMediaType")
            || err.contains("415")
            || err.contains("not supported"),
        "{err}"
    );
    // Server-side apply again updates the object it owns.
    let w2b = c.manifest("w2b.json", &widget("two", 20));
    c.kubectl(&["apply", "--server-side", "-f", &w2b]).success();
    let size = c
        .kubectl(&["get", "widget", "two", "-o", "jsonpath={.spec.size}"])
        .success();
    assert_eq!(size, "20");

    // A watch from before the objects existed replays their history, then times out.
    let rv = stored["metadata"]["resourceVersion"].as_str().unwrap();
    let (code, body) = RawRequest::send(
        c.sim().addr(),
        "GET",
        &format!(
            "/apis/example.com/v1/namespaces/default/widgets?watch=true&resourceVersion={rv}&timeoutSeconds=1"
        ),
        "",
    )
    .finish();
    assert_eq!(code, 200, "{body}");
    let events: Vec<(String, String)> = body
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        events.first(),
        Some(&("ADDED".into(), "one".into())),
        "{body}"
    );
    assert!(
        events.contains(&("MODIFIED".into(), "two".into())),
        "{body}"
    );

    // OpenAPI v3 lists the group version with a permissive schema.
    let root = c.json(&["get", "--raw", "/openapi/v3"]);
    assert!(root["paths"]["apis/example.com/v1"].is_object(), "{root}");
    let doc = c.json(&["get", "--raw", "/openapi/v3/apis/example.com/v1"]);
    let schema = &doc["components"]["schemas"]["com.example.v1.Widget"];
    assert_eq!(
        schema["x-kubernetes-preserve-unknown-fields"], true,
        "{doc}"
    );
    assert!(doc["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"].is_object());

    // Deleting the CRD removes the kind and its objects; re-creating it starts empty.
    c.kubectl(&["delete", "crd", "widgets.example.com"])
        .success();
    // kubectl's discovery cache may still name the type; the list itself is then a 404.
    let err = c.kubectl(&["get", "widgets"]).failure();
    assert!(
        err.contains("the server doesn't have a resource type")
            || err.contains("could not find the requested resource"),
        "{err}"
    );
    let groups = c.json(&["get", "--raw", "/apis"]);
    assert!(!groups.to_string().contains("example.com/v1"), "{groups}");
    let (code, _) = RawRequest::send(
        c.sim().addr(),
        "GET",
        "/apis/example.com/v1/namespaces/default/widgets",
        "",
    )
    .finish();
    assert_eq!(code, 404);
    c.kubectl(&["apply", "-f", &crd_file]).success();
    let names = c.kubectl(&["get", "widgets", "-o", "name"]).success();
    assert_eq!(names.trim(), "", "{names}");
}

#[test]
fn crd_names_are_validated() {
    let c = Cluster::start();
    let mut bad = crd();
    bad["metadata"]["name"] = json!("gadgets.example.com");
    let f = c.manifest("bad.json", &bad);
    let err = c.kubectl(&["apply", "-f", &f]).failure();
    assert!(err.contains("must be spec.names.plural"), "{err}");
    let err = c.kubectl(&["get", "widgets"]).failure();
    assert!(
        err.contains("the server doesn't have a resource type"),
        "{err}"
    );
}

#[test]
fn gateway_api_crds_are_installed_at_start_and_serve_their_kinds() {
    let c = Cluster::start_with(kube_sim::Config {
        gateway_api: true,
        ..kube_sim::Config::default()
    });
    let crds = c.kubectl(&["get", "crd", "-o", "name"]).success();
    assert_eq!(
        crds.lines().collect::<Vec<_>>(),
        [
            "customresourcedefinition.apiextensions.k8s.io/gatewayclasses.gateway.networking.k8s.io",
            "customresourcedefinition.apiextensions.k8s.io/gateways.gateway.networking.k8s.io",
            "customresourcedefinition.apiextensions.k8s.io/httproutes.gateway.networking.k8s.io",
        ]
    );
    let kinds = c
        .kubectl(&[
            "api-resources",
            "--api-group=gateway.networking.k8s.io",
            "-o",
            "wide",
        ])
        .success();
    for expected in ["gatewayclasses", "gc", "gateways", "gtw", "httproutes"] {
        assert!(kinds.contains(expected), "{expected} in {kinds}");
    }
    let objects = [
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
               "metadata": {"name": "sim"}, "spec": {"controllerName": "example.com/gateway"}}),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": "edge", "namespace": "default"},
               "spec": {"gatewayClassName": "sim",
                        "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
               "metadata": {"name": "web", "namespace": "default"},
               "spec": {"parentRefs": [{"name": "edge"}], "hostnames": ["web.example"],
                        "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}}),
    ];
    for (i, o) in objects.iter().enumerate() {
        let f = c.manifest(&format!("gateway-{i}.json"), o);
        c.kubectl(&["apply", "-f", &f]).success();
    }
    let names = c
        .kubectl(&["get", "gc,gtw,httproute", "-A", "-o", "name"])
        .success();
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        [
            "gatewayclass.gateway.networking.k8s.io/sim",
            "gateway.gateway.networking.k8s.io/edge",
            "httproute.gateway.networking.k8s.io/web",
        ]
    );
}

#[test]
fn without_the_knob_there_is_no_gateway_api() {
    let c = Cluster::start();
    let err = c.kubectl(&["get", "httproutes"]).failure();
    assert!(
        err.contains("the server doesn't have a resource type"),
        "{err}"
    );
}
