//! Kubernetes `Status` bodies: the error shape every client decodes.
//!
//! kubectl prints `Error from server (NotFound): <message>` from `reason` and `message`, and
//! client-go maps `reason`/`code` to typed errors (`IsNotFound`, `IsConflict`, ...), so the
//! wording follows the real API server's.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// A failed API call, rendered as a `Status` object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason} ({code}): {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `details` of the Status: the object's name and the resource plural (`kind` in Status
    /// details is the plural, as on the real server).
    pub details: Option<Box<Details>>,
    /// `details.causes`: which fields failed and why (server-side apply conflicts).
    pub causes: Vec<Value>,
}

/// The object a failure is about, as a Status's `details` names it.
#[derive(Debug, Clone, PartialEq)]
pub struct Details {
    pub name: String,
    /// The resource plural.
    pub kind: String,
    /// The API group (Forbidden answers name it).
    pub group: Option<String>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        Self {
            code,
            reason,
            message,
            details: None,
            causes: Vec::new(),
        }
    }

    fn with_details(mut self, plural: &str, name: &str) -> Self {
        self.details = Some(Box::new(Details {
            name: name.to_string(),
            kind: plural.to_string(),
            group: None,
        }));
        self
    }

    /// `<plural> "<name>" not found` — also used for a missing namespace (`namespaces "x"`).
    pub fn not_found(plural: &str, group: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(plural, group)),
        )
        .with_details(plural, name)
    }

    /// A URL that names no resource at all.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
        )
    }

    pub fn already_exists(plural: &str, group: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(plural, group)),
        )
        .with_details(plural, name)
    }

    /// Optimistic-concurrency failure (stale `resourceVersion` or failed precondition).
    pub fn conflict(plural: &str, group: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(plural, group)
            ),
        )
        .with_details(plural, name)
    }

    /// A watch from a resourceVersion the history no longer holds; clients relist.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message.into())
    }

    /// Server-side apply refused because other managers own fields it would change. The
    /// message and causes follow the real server (apimachinery's `NewConflictError`), since
    /// kubectl prints them; `conflicts` holds (manager as the server prints it — `"helm"`, or
    /// `"kubectl-edit" using v1 at <time>` for Update managers —, `.field.path`) pairs.
    pub fn apply_conflicts(plural: &str, name: &str, conflicts: &[(String, String)]) -> Self {
        let message = if let [(manager, field)] = conflicts {
            format!("Apply failed with 1 conflict: conflict with {manager}: {field}")
        } else {
            let mut managers: Vec<&String> = conflicts.iter().map(|(m, _)| m).collect();
            managers.sort();
            managers.dedup();
            let mut lines = Vec::new();
            for manager in managers {
                lines.push(format!("conflicts with {manager}:"));
                for (_, field) in conflicts.iter().filter(|(m, _)| m == manager) {
                    lines.push(format!("- {field}"));
                }
            }
            format!(
                "Apply failed with {} conflicts: {}",
                conflicts.len(),
                lines.join("\n")
            )
        };
        let mut e = Self::new(409, "Conflict", message).with_details(plural, name);
        e.causes = conflicts
            .iter()
            .map(|(manager, field)| {
                json!({
                    "type": "FieldManagerConflict",
                    "message": format!("conflict with {manager}"),
                    "field": field,
                })
            })
            .collect();
        e
    }

    /// `500 InternalError` (injected by `faults`).
    pub fn internal_error(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message.into())
    }

    /// `503 ServiceUnavailable` (injected by `faults`).
    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message.into())
    }

    /// `429 TooManyRequests`; the caller adds the `Retry-After` header clients wait on.
    pub fn too_many_requests(message: impl Into<String>) -> Self {
        Self::new(429, "TooManyRequests", message.into())
    }

    /// `401 Unauthorized`: no or an unknown bearer token (authorization mode, `authz`).
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized".into())
    }

    /// `403 Forbidden` with the authorizer's message; details name the resource as the real
    /// server's do (`kind` is the plural, `group` the API group).
    pub fn forbidden(plural: &str, group: &str, name: &str, message: String) -> Self {
        let mut e = Self::new(403, "Forbidden", message).with_details(plural, name);
        if let Some(d) = e.details.as_mut() {
            d.group = (!group.is_empty()).then(|| group.to_string());
        }
        e
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into())
    }

    /// Validation failure (`422 Invalid`), e.g. a missing name.
    pub fn invalid(kind: &str, name: &str, message: impl Into<String>) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {}", message.into()),
        )
    }

    /// A well-formed request the server cannot apply (e.g. a failing JSON patch `test`).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message.into())
    }

    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type:?})"),
        )
    }

    /// A protobuf body of a kind whose schema kube-sim does not carry yet.
    pub fn unsupported_protobuf(type_name: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("kube-sim cannot decode protobuf for {type_name} yet; send application/json"),
        )
    }

    /// The Status object as JSON.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = json!({ "name": d.name, "kind": d.kind });
            if let Some(group) = &d.group {
                s["details"]["group"] = json!(group);
            }
        }
        if !self.causes.is_empty() {
            s["details"]["causes"] = json!(self.causes);
        }
        s
    }
}

/// `configmaps` or `deployments.apps`, as the real server names a resource in messages.
fn qualified(plural: &str, group: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

/// A successful `Status` (what DELETE returns for most types).
pub fn success(plural: &str, group: &str, name: &str, uid: &str) -> Value {
    let mut details = json!({ "name": name, "kind": plural, "uid": uid });
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}

/// A JSON response with the content type clients expect (`application/json`, never the
/// aggregated-discovery type, so clients fall back to legacy discovery).
pub fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        bytes,
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.code, &self.to_status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_matches_real_wording() {
        let e = ApiError::not_found("deployments", "apps", "web");
        let s = e.to_status();
        assert_eq!(s["message"], "deployments.apps \"web\" not found");
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["code"], 404);
        assert_eq!(s["details"]["kind"], "deployments");
        let ns = ApiError::not_found("namespaces", "", "x").to_status();
        assert_eq!(ns["message"], "namespaces \"x\" not found");
    }
}
