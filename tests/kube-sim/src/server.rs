//! HTTP routing: maps Kubernetes REST paths and verbs onto the store.
//!
//! Paths are parsed by hand rather than with a router table because the API's URL grammar
//! (`/api/v1/namespaces/{ns}` is both an object and the prefix of namespaced collections)
//! depends on the resource table, not on fixed patterns.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

use crate::audit::{self, AuditEntry, AuditLog};
use crate::discovery;
use crate::faults::{Faults, Rejection};
use crate::managed;
use crate::metadata;
use crate::openapi;
use crate::patch;
use crate::proto;
use crate::resources::{self, Resource};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{self, json_response, ApiError};
use crate::store::{Preconditions, Store};
use crate::subresource;
use crate::table;
use crate::watch;

/// Helm release Secrets and ConfigMaps can approach etcd's 1.5 MiB object limit.
const MAX_BODY: usize = 8 * 1024 * 1024;

/// What every request handler shares: the objects, the audit log and the fault knobs.
#[derive(Debug, Clone)]
pub struct Shared {
    pub store: Arc<Store>,
    pub audit: Arc<AuditLog>,
    pub faults: Faults,
    /// The authorization mode, when on (see `authz`).
    pub authz: Option<Arc<crate::authz::Authorizer>>,
}

/// The axum application serving `shared.store`.
pub fn router(shared: Shared) -> Router {
    Router::new()
        .fallback(handle)
        .with_state(shared)
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// Audits every request and applies the fault knobs before routing, so injected faults are
/// indistinguishable from real answers for clients and show up in the audit log alike.
async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at_start = SystemTime::now();
    let started = Instant::now();
    let path = uri.path();
    let query = uri.query().unwrap_or("");
    let info = audit::request_info(method.as_str(), path, query);
    let decision = shared
        .faults
        .decide(method.as_str(), path, &info.resource, &info.name);
    if !decision.delay.is_zero() {
        tokio::time::sleep(decision.delay).await;
    }
    let denied = shared
        .authz
        .as_ref()
        .and_then(|a| a.check(&shared.store, &headers, path, &info).err());
    let response = match (denied, decision.reject) {
        (Some(e), _) => e.into_response(),
        (None, Some(Rejection::Throttle(e))) => {
            let mut r = e.into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        (None, Some(Rejection::Error(e))) => e.into_response(),
        (None, None) => match route(&shared.store, &method, &uri, &headers, &body) {
            Ok(r) => r,
            Err(e) => e.into_response(),
        },
    };
    let duration = started.elapsed();
    tracing::debug!(
        %method,
        %uri,
        accept = header_str(&headers, header::ACCEPT),
        content_type = header_str(&headers, header::CONTENT_TYPE),
        status = response.status().as_u16(),
        "request"
    );
    shared.audit.record(AuditEntry {
        at_start,
        at_end: at_start + duration,
        duration,
        verb: info.verb,
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        user_agent: header_str(&headers, header::USER_AGENT).to_string(),
        code: response.status().as_u16(),
        namespace: info.namespace,
        resource: info.resource,
        subresource: info.subresource,
        name: info.name,
    });
    response
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Query parameters that matter to us.
#[derive(Debug, Default)]
struct Query {
    label_selector: String,
    field_selector: String,
    watch: bool,
    /// `dryRun`: `All` runs a write on a copy of the store (see `Store::simulate`).
    dry_run: Option<String>,
    field_manager: Option<String>,
    /// `propagationPolicy` of a delete (also accepted in the DeleteOptions body).
    propagation_policy: Option<String>,
    force: bool,
    /// `fieldValidation`: `Strict`, `Warn` (the server default) or `Ignore`.
    field_validation: Option<String>,
    /// `includeObject` of a Table answer.
    include_object: Option<String>,
}

fn parse_query(uri: &Uri) -> Query {
    let mut q = Query::default();
    for (k, v) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "labelSelector" => q.label_selector = v.into_owned(),
            "fieldSelector" => q.field_selector = v.into_owned(),
            "watch" => q.watch = v == "true" || v == "1",
            "dryRun" => q.dry_run = Some(v.into_owned()),
            "fieldManager" => q.field_manager = Some(v.into_owned()),
            "propagationPolicy" => q.propagation_policy = Some(v.into_owned()),
            "force" => q.force = v == "true" || v == "1",
            "fieldValidation" => q.field_validation = Some(v.into_owned()),
            "includeObject" => q.include_object = Some(v.into_owned()),
            _ => {}
        }
    }
    q
}

fn text_ok() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok").into_response()
}

fn get_only(method: &Method, body: impl FnOnce() -> Option<Value>) -> Result<Response, ApiError> {
    if method != Method::GET {
        return Err(ApiError::method_not_allowed(method.as_str()));
    }
    body()
        .map(|b| json_response(200, &b))
        .ok_or_else(ApiError::no_route)
}

fn route(
    store: &Arc<Store>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let segs: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let custom = store.custom_resources();
    let custom = custom.as_slice();
    match segs.as_slice() {
        ["version"] => get_only(method, || Some(discovery::version())),
        ["healthz" | "readyz" | "livez", ..] => Ok(text_ok()),
        ["api"] => get_only(method, || Some(discovery::api_versions())),
        ["apis"] => get_only(method, || Some(discovery::api_group_list(custom))),
        ["apis", group] => get_only(method, || discovery::api_group(custom, group)),
        // OpenAPI v3 only: kubectl and helm use v3 when it is served; v2 stays 404.
        ["openapi", "v3"] => get_only(method, || Some(openapi::root_with(custom))),
        ["openapi", "v3", gv @ ..] => {
            get_only(method, || openapi::document_with(custom, &gv.join("/")))
        }
        ["openapi", ..] => Err(ApiError::no_route()),
        ["api", version, rest @ ..] => {
            resource_request(store, method, uri, headers, body, "", version, rest)
        }
        ["apis", group, version, rest @ ..] => {
            resource_request(store, method, uri, headers, body, group, version, rest)
        }
        _ => Err(ApiError::no_route()),
    }
}

/// What a resource URL addresses.
enum Target<'a> {
    /// A collection; `ns` is `None` for "all namespaces", `Some("")` for cluster scope.
    Collection {
        res: &'static Resource,
        ns: Option<&'a str>,
    },
    Object {
        res: &'static Resource,
        ns: &'a str,
        name: &'a str,
    },
    /// `/pods/{name}/log` (`pod_log`).
    PodLog { ns: &'a str, name: &'a str },
    /// `/{name}/status` or `/{name}/scale`.
    Subresource {
        res: &'static Resource,
        ns: &'a str,
        name: &'a str,
        sub: &'a str,
    },
}

fn parse_target<'a>(
    custom: &[&'static Resource],
    group: &str,
    version: &str,
    rest: &[&'a str],
) -> Result<Target<'a>, ApiError> {
    let find = |plural: &str| {
        resources::find_in(custom, group, version, plural).ok_or_else(ApiError::no_route)
    };
    match rest {
        ["namespaces", ns, plural, tail @ ..] if find(plural).is_ok_and(|r| r.namespaced) => {
            let res = find(plural)?;
            match tail {
                [] => Ok(Target::Collection { res, ns: Some(ns) }),
                [name] => Ok(Target::Object { res, ns, name }),
                [name, sub] if res.has_subresource(sub) => {
                    Ok(Target::Subresource { res, ns, name, sub })
                }
                [name, "log"] if res.group.is_empty() && res.plural == "pods" => {
                    Ok(Target::PodLog { ns, name })
                }
                _ => Err(ApiError::no_route()),
            }
        }
        [plural] => {
            let res = find(plural)?;
            let ns = if res.namespaced { None } else { Some("") };
            Ok(Target::Collection { res, ns })
        }
        [plural, name] => {
            let res = find(plural)?;
            if res.namespaced {
                return Err(ApiError::no_route());
            }
            Ok(Target::Object { res, ns: "", name })
        }
        _ => Err(ApiError::no_route()),
    }
}

#[allow(clippy::too_many_arguments)]
fn resource_request(
    store: &Arc<Store>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Response, ApiError> {
    let custom = store.custom_resources();
    if rest.is_empty() {
        return get_only(method, || {
            discovery::api_resource_list(&custom, group, version)
        });
    }
    let target = parse_target(&custom, group, version, rest)?;
    let query = parse_query(uri);
    let simulation;
    let store = match query.dry_run.as_deref() {
        None | Some("") => store,
        Some("All") if *method != Method::GET => {
            simulation = Arc::new(store.simulate());
            &simulation
        }
        Some("All") => store,
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "dryRun: Unsupported value: {other:?}: supported values: \"All\""
            )))
        }
    };
    match target {
        Target::Collection { res, ns } => {
            collection(store, method, uri, &query, headers, body, res, ns)
        }
        Target::Object { res, ns, name } if *method == Method::GET && query.watch => {
            // The per-object watch URL is a collection watch narrowed to one name.
            let mut query = query;
            query.field_selector = if query.field_selector.is_empty() {
                format!("metadata.name={name}")
            } else {
                format!("{},metadata.name={name}", query.field_selector)
            };
            let scope = if res.namespaced { Some(ns) } else { Some("") };
            collection(store, method, uri, &query, headers, body, res, scope)
        }
        Target::Object { res, ns, name } => {
            object(store, method, &query, headers, body, res, ns, name)
        }
        Target::Subresource { res, ns, name, sub } => {
            subresource_request(store, method, headers, body, res, ns, name, sub)
        }
        Target::PodLog { ns, name } => {
            if *method != Method::GET {
                return Err(ApiError::method_not_allowed(method.as_str()));
            }
            let pods =
                resources::find_in(&custom, "", "v1", "pods").ok_or_else(ApiError::no_route)?;
            let pod = store.get(pods, ns, name)?;
            let text =
                crate::pod_log::log_of(&pod, &crate::pod_log::LogQuery::parse(uri.query())?)?;
            Ok(([(header::CONTENT_TYPE, "text/plain")], text).into_response())
        }
    }
}

/// The manager a write is recorded under: `fieldManager`, else the User-Agent's program name
/// (what the real server derives, e.g. `kubectl` or `helm`).
fn manager(query: &Query, headers: &HeaderMap) -> String {
    query.field_manager.clone().unwrap_or_else(|| {
        let agent = header_str(headers, header::USER_AGENT);
        let program = agent.split('/').next().unwrap_or("").trim();
        if program.is_empty() {
            "unknown".to_string()
        } else {
            program.chars().take(128).collect()
        }
    })
}

/// Decodes a request body: protobuf from client-go's typed clients, JSON otherwise.
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    if media_type(headers) == proto::CONTENT_TYPE {
        return proto::decode(body);
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request could not be decoded as JSON: {e}"
        ))
    })
}

/// How a write treats fields its schema does not declare (see `openapi::unknown_fields`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

impl FieldValidation {
    fn of(query: &Query) -> Result<Self, ApiError> {
        match query.field_validation.as_deref() {
            None | Some("") | Some("Warn") => Ok(Self::Warn),
            Some("Strict") => Ok(Self::Strict),
            Some("Ignore") => Ok(Self::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }

    /// Checks `obj` (the object a create, update or patch would store): `Strict` fails with
    /// the real server's strict decoding error, `Warn` returns one warning per unknown field.
    /// Unknown fields are kept in the stored object (the real server prunes them).
    fn check(self, res: &Resource, obj: &Value) -> Result<Vec<String>, ApiError> {
        if self == Self::Ignore {
            return Ok(Vec::new());
        }
        let unknown = openapi::unknown_fields(res, obj);
        if unknown.is_empty() {
            return Ok(Vec::new());
        }
        let listed: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field {f:?}"))
            .collect();
        if self == Self::Strict {
            return Err(ApiError::bad_request(format!(
                "{kind} in version {version:?} cannot be handled as a {kind}: strict decoding error: {}",
                listed.join(", "),
                kind = res.kind,
                version = res.version,
            )));
        }
        Ok(listed)
    }

    /// Server-side apply reports unknown fields the way structured-merge-diff does.
    fn check_apply(
        self,
        res: &Resource,
        ns: &str,
        name: &str,
        obj: &Value,
    ) -> Result<Vec<String>, ApiError> {
        if self == Self::Ignore {
            return Ok(Vec::new());
        }
        let unknown = openapi::unknown_fields(res, obj);
        if unknown.is_empty() {
            return Ok(Vec::new());
        }
        let listed: Vec<String> = unknown
            .iter()
            .map(|f| format!(".{f}: field not declared in schema"))
            .collect();
        if self == Self::Strict {
            let at = if ns.is_empty() {
                name.to_string()
            } else {
                format!("{ns}/{name}")
            };
            return Err(ApiError::bad_request(format!(
                "failed to create typed patch object ({at}; {}, Kind={}): {}",
                res.api_version(),
                res.kind,
                listed.join("\n")
            )));
        }
        Ok(listed)
    }
}

/// Adds `Warning: 299 - "..."` headers, which kubectl prints as `Warning: ...`.
fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    response
}

#[allow(clippy::too_many_arguments)]
fn collection(
    store: &Arc<Store>,
    method: &Method,
    uri: &Uri,
    query: &Query,
    headers: &HeaderMap,
    body: &[u8],
    res: &'static Resource,
    ns: Option<&str>,
) -> Result<Response, ApiError> {
    let list = |store: &Store| {
        let labels = LabelSelector::parse(&query.label_selector)
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(&query.field_selector).map_err(ApiError::bad_request)?;
        let scope = ns.filter(|n| !n.is_empty());
        store.list(res, scope, &labels, &fields)
    };
    match *method {
        Method::GET if query.watch => {
            let labels = LabelSelector::parse(&query.label_selector)
                .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
            let fields =
                FieldSelector::parse(&query.field_selector).map_err(ApiError::bad_request)?;
            let mut params = watch::WatchParams::parse(uri.query().unwrap_or(""))?;
            params.view = metadata::requested(headers, false);
            params.include = table::Include::parse(query.include_object.as_deref());
            let scope = ns.filter(|n| !n.is_empty());
            watch::start(store.clone(), res, scope, labels, fields, &params)
        }
        Method::GET => {
            let (items, revision) = list(store)?;
            match metadata::requested(headers, true) {
                metadata::View::Metadata => {
                    return Ok(json_response(
                        200,
                        &metadata::list(&items, &revision.to_string()),
                    ))
                }
                metadata::View::Table => {
                    let include = table::Include::parse(query.include_object.as_deref());
                    let printer = table::Printer::new(store, res, include);
                    return Ok(json_response(
                        200,
                        &printer.table(&items, &revision.to_string()),
                    ));
                }
                metadata::View::Full => {}
            }
            Ok(json_response(
                200,
                &json!({
                    "kind": format!("{}List", res.kind),
                    "apiVersion": res.api_version(),
                    "metadata": {"resourceVersion": revision.to_string()},
                    "items": items,
                }),
            ))
        }
        Method::POST => {
            let ns = ns.ok_or_else(|| ApiError::method_not_allowed("POST"))?;
            let mut obj = parse_body(headers, body)?;
            let warnings = FieldValidation::of(query)?.check(res, &obj)?;
            subresource::keep_status(res, None, &mut obj);
            managed::record_update(None, &mut obj, &manager(query, headers), &res.api_version());
            let created = store.create(res, ns, obj)?;
            Ok(with_warnings(json_response(201, &created), &warnings))
        }
        Method::DELETE if res.verbs.contains(&"deletecollection") => {
            let (items, _) = list(store)?;
            let mut deleted = Vec::new();
            for item in items {
                let name = item["metadata"]["name"].as_str().unwrap_or_default();
                let item_ns = item["metadata"]["namespace"].as_str().unwrap_or_default();
                // Concurrently deleted objects are simply skipped, as on the real server.
                if let Ok(gone) = store.delete(res, item_ns, name, &Preconditions::default()) {
                    deleted.push(gone);
                }
            }
            Ok(json_response(
                200,
                &json!({
                    "kind": format!("{}List", res.kind),
                    "apiVersion": res.api_version(),
                    "metadata": {"resourceVersion": store.revision().to_string()},
                    "items": deleted,
                }),
            ))
        }
        _ => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

/// The server-side apply patch type (the body is YAML or JSON).
const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// PATCH with `application/apply-patch+yaml`: creates the object when absent (201) or applies
/// onto it (200), with ownership and conflicts as `managed::apply` decides.
fn server_side_apply(
    store: &Store,
    query: &Query,
    body: &[u8],
    res: &'static Resource,
    ns: &str,
    name: &str,
) -> Result<Response, ApiError> {
    let Some(manager) = query.field_manager.as_deref().filter(|m| !m.is_empty()) else {
        return Err(ApiError::unprocessable(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    };
    // JSON is the YAML subset kubectl and helm send; block-style YAML is not parsed yet.
    let applied: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "kube-sim only accepts the JSON form of apply-patch+yaml bodies: {e}"
        ))
    })?;
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "the apply configuration is not an object",
        ));
    }
    let warnings = FieldValidation::of(query)?.check_apply(res, ns, name, &applied)?;
    let (obj, created) = store.upsert(res, ns, name, |current| {
        let mut out = managed::apply(
            current,
            &applied,
            manager,
            &res.api_version(),
            query.force,
            res.plural,
            name,
        )?;
        subresource::keep_status(res, current, &mut out);
        Ok(out)
    })?;
    Ok(with_warnings(
        json_response(if created { 201 } else { 200 }, &obj),
        &warnings,
    ))
}

/// Other patch media types served.
const PATCH_TYPES: &[&str] = &[
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
];

/// Strips parameters such as `; charset=utf-8` from a media type.
fn media_type(headers: &HeaderMap) -> String {
    header_str(headers, header::CONTENT_TYPE)
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn apply_patch(
    res: &Resource,
    content_type: &str,
    current: &Value,
    patch_doc: &Value,
) -> Result<Value, ApiError> {
    let mut out = current.clone();
    match content_type {
        "application/merge-patch+json" => patch::merge_patch(&mut out, patch_doc),
        "application/json-patch+json" => patch::json_patch(&mut out, patch_doc).map_err(|e| {
            ApiError::unprocessable(format!(
                "the server rejected our request due to an error in our request: {e}"
            ))
        })?,
        "application/strategic-merge-patch+json" if res.builtin => {
            patch::strategic_merge_patch(&mut out, patch_doc)
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn object(
    store: &Store,
    method: &Method,
    query: &Query,
    headers: &HeaderMap,
    body: &[u8],
    res: &'static Resource,
    ns: &str,
    name: &str,
) -> Result<Response, ApiError> {
    match *method {
        Method::GET => {
            let obj = store.get(res, ns, name)?;
            match metadata::requested(headers, false) {
                metadata::View::Metadata => Ok(json_response(200, &metadata::object(&obj))),
                metadata::View::Table => {
                    let include = table::Include::parse(query.include_object.as_deref());
                    let printer = table::Printer::new(store, res, include);
                    let rv = obj["metadata"]["resourceVersion"].as_str().unwrap_or("");
                    Ok(json_response(
                        200,
                        &printer.table(std::slice::from_ref(&obj), rv),
                    ))
                }
                metadata::View::Full => Ok(json_response(200, &obj)),
            }
        }
        Method::PUT => {
            let obj = parse_body(headers, body)?;
            let warnings = FieldValidation::of(query)?.check(res, &obj)?;
            let who = manager(query, headers);
            let updated = store.modify(res, ns, name, |current| {
                let mut new = obj;
                subresource::keep_status(res, Some(current), &mut new);
                managed::record_update(Some(current), &mut new, &who, &res.api_version());
                Ok(new)
            })?;
            Ok(with_warnings(json_response(200, &updated), &warnings))
        }
        Method::PATCH if media_type(headers) == APPLY_PATCH => {
            server_side_apply(store, query, body, res, ns, name)
        }
        Method::PATCH => {
            let content_type = media_type(headers);
            if !PATCH_TYPES.contains(&content_type.as_str())
                || (content_type == "application/strategic-merge-patch+json" && !res.builtin)
            {
                return Err(ApiError::unsupported_media_type(&content_type));
            }
            let patch_doc: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
            let who = manager(query, headers);
            let validation = FieldValidation::of(query)?;
            let mut warnings = Vec::new();
            let patched = store.modify(res, ns, name, |current| {
                let mut new = apply_patch(res, &content_type, current, &patch_doc)?;
                // The patched object, as the real server decodes it: unknown fields the
                // patch introduced (or the object already had) are reported.
                warnings = validation.check(res, &new)?;
                subresource::keep_status(res, Some(current), &mut new);
                managed::record_update(Some(current), &mut new, &who, &res.api_version());
                Ok(new)
            })?;
            Ok(with_warnings(json_response(200, &patched), &warnings))
        }
        Method::DELETE => {
            let options = if body.iter().all(u8::is_ascii_whitespace) {
                Value::Null
            } else {
                parse_body(headers, body)?
            };
            let policy = options["propagationPolicy"]
                .as_str()
                .map(String::from)
                .or_else(|| query.propagation_policy.clone());
            let pre = Preconditions {
                uid: options["preconditions"]["uid"].as_str().map(String::from),
                resource_version: options["preconditions"]["resourceVersion"]
                    .as_str()
                    .map(String::from),
                orphan_dependents: policy.as_deref() == Some("Orphan")
                    || options["orphanDependents"] == Value::Bool(true),
            };
            // kubectl sends a delete's dry run in the DeleteOptions body, not the query.
            let dry_run = options["dryRun"]
                .as_array()
                .is_some_and(|d| d.iter().any(|v| v == "All"));
            let gone = if dry_run {
                store.simulate().delete(res, ns, name, &pre)?
            } else {
                store.delete(res, ns, name, &pre)?
            };
            // Namespaces and pods answer with the object (they finalize gracefully on a real
            // cluster); other types with a Success Status.
            if matches!(res.plural, "namespaces" | "pods") {
                Ok(json_response(200, &gone))
            } else {
                let uid = gone["metadata"]["uid"].as_str().unwrap_or_default();
                Ok(json_response(
                    200,
                    &status::success(res.plural, res.group, name, uid),
                ))
            }
        }
        _ => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

/// `GET/PUT/PATCH .../{name}/status` and `.../{name}/scale` (see `subresource`). Patches to
/// `/scale` apply to the Scale view, as on the real server.
#[allow(clippy::too_many_arguments)]
fn subresource_request(
    store: &Store,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
    res: &'static Resource,
    ns: &str,
    name: &str,
    sub: &str,
) -> Result<Response, ApiError> {
    let view = |obj: &Value| {
        if sub == "scale" {
            subresource::scale_of(obj)
        } else {
            obj.clone()
        }
    };
    let write_back = |current: &Value, new_view: &Value| {
        if sub == "scale" {
            subresource::with_scale(current, new_view)
        } else {
            Ok(subresource::only_status(current, new_view))
        }
    };
    let updated = match *method {
        Method::GET => store.get(res, ns, name)?,
        Method::PUT => {
            let new_view = parse_body(headers, body)?;
            store.modify(res, ns, name, |current| write_back(current, &new_view))?
        }
        Method::PATCH => {
            let content_type = media_type(headers);
            if !PATCH_TYPES.contains(&content_type.as_str()) {
                return Err(ApiError::unsupported_media_type(&content_type));
            }
            let patch_doc: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
            store.modify(res, ns, name, |current| {
                let patched = apply_patch(res, &content_type, &view(current), &patch_doc)?;
                write_back(current, &patched)
            })?
        }
        _ => return Err(ApiError::method_not_allowed(method.as_str())),
    };
    Ok(json_response(200, &view(&updated)))
}
