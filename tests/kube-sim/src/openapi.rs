//! OpenAPI v3 documents, and the server-side field validation derived from them.
//!
//! kubectl 1.34 and helm 4 build their validator from `/openapi/v3` (they only fall back to
//! `/openapi/v2` when v3 answers 404). For each object they look up the `PATCH` operation
//! whose `x-kubernetes-group-version-kind` is the object's kind: when it lists the
//! `fieldValidation` query parameter, the client skips client-side schema validation and sends
//! `fieldValidation=Strict`, leaving unknown fields to the server. So this module serves
//!
//! * `GET /openapi/v3`: `{"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=.."}}}`
//!   for every served group version;
//! * `GET /openapi/v3/{api/v1 | apis/<group>/<version>}`: an OpenAPI 3.0 document with the
//!   resource paths (operations carry `x-kubernetes-action` and
//!   `x-kubernetes-group-version-kind`, `PATCH` lists `fieldValidation`) and
//!   `components.schemas` for the kinds, their lists, `ObjectMeta` and `ListMeta`;
//!
//! and `unknown_fields`, which walks an object against the same schemas so the server can
//! honour `fieldValidation`.
//!
//! Schemas are honest but shallow: the top-level fields of each kind and all of `ObjectMeta`
//! are modelled; nested parts (`spec`, `status`, ...) are `x-kubernetes-preserve-unknown-fields`
//! objects, so valid objects always pass and only misspelt top-level or metadata fields are
//! caught. `PATCH` operations do not advertise `application/strategic-merge-patch+json`: kubectl
//! would then compute strategic merge patches from these schemas, which lack the patch merge
//! keys, instead of from its compiled-in types.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use crate::resources::{self, Resource};

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";

/// One served group version's document, serialized once.
#[derive(Debug)]
struct GvDoc {
    doc: Value,
    hash: String,
}

/// Documents by their path under `/openapi/v3/` (`api/v1`, `apis/apps/v1`).
fn docs() -> &'static BTreeMap<String, GvDoc> {
    static DOCS: OnceLock<BTreeMap<String, GvDoc>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut gvs: Vec<(&str, &str)> = Vec::new();
        for r in resources::RESOURCES {
            if !gvs.contains(&(r.group, r.version)) {
                gvs.push((r.group, r.version));
            }
        }
        gvs.into_iter()
            .map(|(group, version)| {
                let doc = group_version_doc(&[], group, version);
                let hash = fnv_hex(&serde_json::to_vec(&doc).unwrap_or_default());
                (gv_path(group, version), GvDoc { doc, hash })
            })
            .collect()
    })
}

/// `api/v1` or `apis/{group}/{version}`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// A stable content hash (the real server uses SHA-512; clients treat it as opaque).
fn fnv_hex(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut s = String::new();
    let _ = write!(s, "{h:016X}");
    s
}

/// `GET /openapi/v3`: where each group version's document lives.
#[cfg(test)]
pub fn root() -> Value {
    root_with(&[])
}

/// Group versions served only by `custom` resources, with their documents.
fn custom_docs(custom: &[&'static Resource]) -> BTreeMap<String, GvDoc> {
    let mut out = BTreeMap::new();
    for r in custom {
        let path = gv_path(r.group, r.version);
        if docs().contains_key(&path) || out.contains_key(&path) {
            continue;
        }
        let doc = group_version_doc(custom, r.group, r.version);
        let hash = fnv_hex(&serde_json::to_vec(&doc).unwrap_or_default());
        out.insert(path, GvDoc { doc, hash });
    }
    out
}

/// [`root`] including the group versions of CRD-defined resources.
pub fn root_with(custom: &[&'static Resource]) -> Value {
    let extra = custom_docs(custom);
    let paths: Map<String, Value> = docs()
        .iter()
        .chain(extra.iter())
        .map(|(path, d)| {
            (
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", d.hash)}),
            )
        })
        .collect();
    json!({ "paths": paths })
}

/// [`document`] including the group versions of CRD-defined resources.
pub fn document_with(custom: &[&'static Resource], path: &str) -> Option<Value> {
    let path = path.trim_matches('/');
    if let Some(d) = document(path) {
        return Some(d.clone());
    }
    custom_docs(custom).remove(path).map(|d| d.doc)
}

/// `GET /openapi/v3/{path}`; `None` for a path naming no served group version.
pub fn document(path: &str) -> Option<&'static Value> {
    docs().get(path.trim_matches('/')).map(|d| &d.doc)
}

/// The schema name of a kind, as the real server names it: `io.k8s.api.apps.v1.Deployment`
/// for built-in types, the reversed group for custom ones (`io.istio.networking.v1beta1.X`).
fn schema_name(group: &str, version: &str, kind: &str, builtin: bool) -> String {
    if builtin {
        let g = if group.is_empty() {
            "core"
        } else {
            group.split('.').next().unwrap_or(group)
        };
        format!("io.k8s.api.{g}.{version}.{kind}")
    } else {
        let reversed: Vec<&str> = group.split('.').rev().collect();
        format!("{}.{version}.{kind}", reversed.join("."))
    }
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// An object whose contents are not modelled.
fn open_object() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

fn string() -> Value {
    json!({"type": "string"})
}

fn string_map() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string", "default": ""}})
}

fn open_array() -> Value {
    json!({"type": "array", "items": open_object()})
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

/// The top-level fields of `kind` besides `apiVersion`, `kind` and `metadata`.
fn kind_fields(kind: &str) -> Vec<(&'static str, Value)> {
    let time = || json!({"type": "string", "format": "date-time"});
    match kind {
        "ConfigMap" => vec![
            ("data", string_map()),
            (
                "binaryData",
                json!({"type": "object", "additionalProperties": {"type": "string", "format": "byte"}}),
            ),
            ("immutable", json!({"type": "boolean"})),
        ],
        "Secret" => vec![
            (
                "data",
                json!({"type": "object", "additionalProperties": {"type": "string", "format": "byte"}}),
            ),
            ("stringData", string_map()),
            ("type", string()),
            ("immutable", json!({"type": "boolean"})),
        ],
        "ServiceAccount" => vec![
            ("secrets", open_array()),
            ("imagePullSecrets", open_array()),
            ("automountServiceAccountToken", json!({"type": "boolean"})),
        ],
        "Event" => vec![
            ("action", string()),
            ("count", json!({"type": "integer", "format": "int32"})),
            ("eventTime", time()),
            ("firstTimestamp", time()),
            ("lastTimestamp", time()),
            ("involvedObject", open_object()),
            ("message", string()),
            ("reason", string()),
            ("related", open_object()),
            ("reportingComponent", string()),
            ("reportingInstance", string()),
            ("series", open_object()),
            ("source", open_object()),
            ("type", string()),
        ],
        "Role" => vec![("rules", open_array())],
        "ClusterRole" => vec![("rules", open_array()), ("aggregationRule", open_object())],
        "RoleBinding" | "ClusterRoleBinding" => {
            vec![("roleRef", open_object()), ("subjects", open_array())]
        }
        "Endpoints" => vec![("subsets", open_array())],
        "EndpointSlice" => vec![
            ("addressType", string()),
            ("endpoints", open_array()),
            ("ports", open_array()),
        ],
        "StorageClass" => vec![
            ("provisioner", string()),
            ("parameters", string_map()),
            ("reclaimPolicy", string()),
            ("mountOptions", json!({"type": "array", "items": string()})),
            ("allowVolumeExpansion", json!({"type": "boolean"})),
            ("volumeBindingMode", string()),
            ("allowedTopologies", open_array()),
        ],
        // Kinds whose real schema has a spec and no status.
        "LimitRange" | "IngressClass" | "NetworkPolicy" | "Lease" => {
            vec![("spec", open_object())]
        }
        _ => vec![("spec", open_object()), ("status", open_object())],
    }
}

fn kind_schema(group: &str, version: &str, kind: &str) -> Value {
    let mut props = Map::new();
    props.insert("apiVersion".into(), string());
    props.insert("kind".into(), string());
    props.insert(
        "metadata".into(),
        json!({"allOf": [reference(&format!("{META}.ObjectMeta"))], "default": {}}),
    );
    for (name, schema) in kind_fields(kind) {
        props.insert(name.into(), schema);
    }
    json!({
        "description": format!("{kind} (kube-sim models top-level fields; nested ones are not validated)."),
        "type": "object",
        "properties": props,
        "x-kubernetes-group-version-kind": [gvk(group, version, kind)],
    })
}

fn list_schema(group: &str, version: &str, kind: &str, item: &str) -> Value {
    json!({
        "description": format!("{kind} is a list of {}.", item.rsplit('.').next().unwrap_or(item)),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": string(),
            "kind": string(),
            "metadata": {"allOf": [reference(&format!("{META}.ListMeta"))], "default": {}},
            "items": {"type": "array", "items": {"allOf": [reference(item)], "default": {}}},
        },
        "x-kubernetes-group-version-kind": [gvk(group, version, kind)],
    })
}

fn object_meta() -> Value {
    let int64 = json!({"type": "integer", "format": "int64"});
    let time = json!({"type": "string", "format": "date-time"});
    json!({
        "description": "ObjectMeta is metadata that all persisted resources must have.",
        "type": "object",
        "properties": {
            "annotations": string_map(),
            "creationTimestamp": time,
            "deletionGracePeriodSeconds": int64,
            "deletionTimestamp": time,
            "finalizers": {"type": "array", "items": {"type": "string", "default": ""}},
            "generateName": string(),
            "generation": int64,
            "labels": string_map(),
            "managedFields": open_array(),
            "name": string(),
            "namespace": string(),
            "ownerReferences": open_array(),
            "resourceVersion": string(),
            "selfLink": string(),
            "uid": string(),
        },
    })
}

fn list_meta() -> Value {
    json!({
        "description": "ListMeta describes metadata that synthetic resources must have.",
        "type": "object",
        "properties": {
            "continue": string(),
            "remainingItemCount": {"type": "integer", "format": "int64"},
            "resourceVersion": string(),
            "selfLink": string(),
        },
    })
}

fn param(name: &str, location: &str, schema: Value) -> Value {
    let mut p = json!({"name": name, "in": location, "schema": schema});
    if location == "path" {
        p["required"] = json!(true);
    }
    p
}

fn write_params(with_force: bool) -> Vec<Value> {
    let mut ps = vec![
        param("dryRun", "query", string()),
        param("fieldManager", "query", string()),
        param("fieldValidation", "query", string()),
    ];
    if with_force {
        ps.push(param("force", "query", json!({"type": "boolean"})));
    }
    ps
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

/// One operation: `action` is the `x-kubernetes-action` (`get`, `list`, `post`, `put`,
/// `patch`, `delete`, `deletecollection`).
fn operation(action: &str, kind_gvk: &Value, response: &str, params: Vec<Value>) -> Value {
    let mut op = json!({
        "description": format!("{action} {}", kind_gvk["kind"].as_str().unwrap_or_default()),
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": json_content(reference(response))}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": kind_gvk,
    });
    match action {
        "post" | "put" => {
            op["requestBody"] =
                json!({"required": true, "content": json_content(reference(response))});
        }
        "patch" => {
            let patch = reference(&format!("{META}.Patch"));
            op["requestBody"] = json!({"required": true, "content": {
                "application/apply-patch+yaml": {"schema": patch},
                "application/json-patch+json": {"schema": patch},
                "application/merge-patch+json": {"schema": patch},
            }});
        }
        _ => {}
    }
    op
}

/// The paths of one resource type.
fn resource_paths(r: &Resource, paths: &mut Map<String, Value>, schemas: &mut Map<String, Value>) {
    let item = schema_name(r.group, r.version, r.kind, r.builtin);
    let list = format!("{item}List");
    let kind_gvk = gvk(r.group, r.version, r.kind);
    let base = format!("/{}", gv_path(r.group, r.version));
    let scope = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{base}/{}", r.plural)
    };
    let scope_params = if r.namespaced {
        vec![param("namespace", "path", string())]
    } else {
        vec![]
    };
    let mut collection = json!({
        "parameters": scope_params,
        "get": operation("list", &kind_gvk, &list, vec![]),
        "post": operation("post", &kind_gvk, &item, write_params(false)),
    });
    if r.verbs.contains(&"deletecollection") {
        collection["delete"] = operation(
            "deletecollection",
            &kind_gvk,
            &format!("{META}.Status"),
            vec![],
        );
    }
    paths.insert(scope.clone(), collection);
    let mut object_params = scope_params_with_name(r.namespaced);
    paths.insert(
        format!("{scope}/{{name}}"),
        json!({
            "parameters": object_params.clone(),
            "get": operation("get", &kind_gvk, &item, vec![]),
            "put": operation("put", &kind_gvk, &item, write_params(false)),
            "patch": operation("patch", &kind_gvk, &item, write_params(true)),
            "delete": operation("delete", &kind_gvk, &item, vec![]),
        }),
    );
    if r.namespaced {
        paths.insert(
            format!("{base}/{}", r.plural),
            json!({"get": operation("list", &kind_gvk, &list, vec![])}),
        );
    }
    for sub in r.subresources {
        let (sub_gvk, sub_item) = if *sub == "scale" {
            let name = "io.k8s.api.autoscaling.v1.Scale";
            schemas.insert(name.into(), kind_schema("autoscaling", "v1", "Scale"));
            (gvk("autoscaling", "v1", "Scale"), name.to_string())
        } else {
            (kind_gvk.clone(), item.clone())
        };
        object_params = scope_params_with_name(r.namespaced);
        paths.insert(
            format!("{scope}/{{name}}/{sub}"),
            json!({
                "parameters": object_params,
                "get": operation("get", &sub_gvk, &sub_item, vec![]),
                "put": operation("put", &sub_gvk, &sub_item, write_params(false)),
                "patch": operation("patch", &sub_gvk, &sub_item, write_params(true)),
            }),
        );
    }
    let mut schema = kind_schema(r.group, r.version, r.kind);
    if !resources::RESOURCES.contains(r) {
        // A CRD-defined kind: its schema is not modelled, everything is accepted.
        schema["x-kubernetes-preserve-unknown-fields"] = json!(true);
    }
    schemas.insert(item.clone(), schema);
    schemas.insert(
        list.clone(),
        list_schema(r.group, r.version, &format!("{}List", r.kind), &item),
    );
}

fn scope_params_with_name(namespaced: bool) -> Vec<Value> {
    let mut ps = vec![param("name", "path", string())];
    if namespaced {
        ps.push(param("namespace", "path", string()));
    }
    ps
}

fn group_version_doc(custom: &[&'static Resource], group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for r in resources::in_group_version(custom, group, version) {
        resource_paths(r, &mut paths, &mut schemas);
    }
    schemas.insert(format!("{META}.ObjectMeta"), object_meta());
    schemas.insert(format!("{META}.ListMeta"), list_meta());
    schemas.insert(
        format!("{META}.Patch"),
        json!({"description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.", "type": "object"}),
    );
    schemas.insert(
        format!("{META}.Status"),
        json!({"description": "Status is a return value for calls that don't return other objects.", "type": "object", "x-kubernetes-preserve-unknown-fields": true}),
    );
    let title = if group.is_empty() {
        "Kubernetes".to_string()
    } else {
        group.to_string()
    };
    json!({
        "openapi": "3.0.0",
        "info": {"title": title, "version": "unversioned"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// Fields of `obj` (a `res` object) that its schema does not declare, as dotted paths
/// (`spek`, `metadata.lables`), in document order of the walk. Nested parts the schema leaves
/// open are not inspected.
pub fn unknown_fields(res: &Resource, obj: &Value) -> Vec<String> {
    let Some(doc) = document(&gv_path(res.group, res.version)) else {
        return Vec::new();
    };
    let schemas = &doc["components"]["schemas"];
    let name = schema_name(res.group, res.version, res.kind, res.builtin);
    let mut out = Vec::new();
    walk(schemas, &schemas[&name], obj, "", &mut out);
    out
}

/// Follows `$ref` and single-element `allOf` wrappers to the schema they name.
fn resolve<'a>(schemas: &'a Value, mut schema: &'a Value) -> &'a Value {
    for _ in 0..8 {
        if let Some(r) = schema["$ref"].as_str() {
            schema = &schemas[r.trim_start_matches("#/components/schemas/")];
        } else if let Some([inner]) = schema["allOf"].as_array().map(Vec::as_slice) {
            schema = inner;
        } else {
            break;
        }
    }
    schema
}

fn walk(schemas: &Value, schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    let schema = resolve(schemas, schema);
    if schema["x-kubernetes-preserve-unknown-fields"] == true {
        return;
    }
    match value {
        Value::Object(fields) => {
            let props = schema["properties"].as_object();
            let extra = &schema["additionalProperties"];
            for (key, v) in fields {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match props.and_then(|p| p.get(key)) {
                    Some(s) => walk(schemas, s, v, &child, out),
                    None if extra.is_object() => walk(schemas, extra, v, &child, out),
                    None if props.is_some() => out.push(child),
                    // A bare `type: object` without properties (e.g. `Patch`) is open.
                    None => {}
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, v) in items.iter().enumerate() {
                walk(schemas, &schema["items"], v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_lists_every_group_version_with_a_hash() {
        let root = root();
        let paths = root["paths"].as_object().unwrap();
        assert!(paths.contains_key("api/v1"));
        assert!(paths.contains_key("apis/apps/v1"));
        assert!(paths.contains_key("apis/networking.istio.io/v1alpha3"));
        let url = paths["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap();
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{url}");
        assert_ne!(url, paths["api/v1"]["serverRelativeURL"].as_str().unwrap());
    }

    #[test]
    fn documents_carry_kinds_and_patch_operations() {
        let apps = document("apis/apps/v1").unwrap();
        let dep = &apps["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            dep["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        let patch =
            &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        let names: Vec<&str> = patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"fieldValidation"));
        assert!(document("apis/apps/v2").is_none());
        let istio = document("apis/networking.istio.io/v1beta1").unwrap();
        assert!(
            istio["components"]["schemas"]["io.istio.networking.v1beta1.VirtualService"]
                .is_object()
        );
    }

    #[test]
    fn unknown_fields_are_found_at_the_top_and_in_metadata_only() {
        let dep = resources::find("apps", "v1", "deployments").unwrap();
        let obj = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "lables": {}, "labels": {"a": "b"}},
            "spek": {}, "spec": {"anything": {"goes": 1}},
        });
        assert_eq!(unknown_fields(dep, &obj), vec!["metadata.lables", "spek"]);
        let cm = resources::find("", "v1", "configmaps").unwrap();
        let ok = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}});
        assert!(unknown_fields(cm, &ok).is_empty());
        let bad = json!({"apiVersion": "v1", "kind": "ConfigMap", "spec": {}});
        assert_eq!(unknown_fields(cm, &bad), vec!["spec"]);
    }
}
