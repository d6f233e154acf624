//! Metadata-only answers: `Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1`
//! (and `as=PartialObjectMetadata` for one object or a watch).
//!
//! The real server then sends only each object's `metadata`, as kind `PartialObjectMetadata`
//! of `meta.k8s.io/v1`. Clients use it to read labels cheaply: kube-rs's `list_metadata`,
//! `get_metadata` and metadata watchers, client-go's metadata informers (the garbage
//! collector's). The product reads Helm's release records this way, so a Secret's payload
//! must not travel, as on a real cluster.
//!
//! The Accept header may list several media types in order of preference; the first one this
//! server can produce wins (`as=Table` is answered by `table`). When none fits, the full
//! object is sent (a real server would answer 406, but kubectl always offers plain JSON as
//! the last choice anyway).

use axum::http::{header, HeaderMap};
use serde_json::{json, Value};

/// `apiVersion` of the metadata-only kinds.
pub const API_VERSION: &str = "meta.k8s.io/v1";

/// What shape the client asked the answer to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    #[default]
    Full,
    Metadata,
    /// `as=Table` (see `table`), for lists, objects and watches alike.
    Table,
}

/// Picks the view for a request. `list` says whether the answer is a list (then
/// `as=PartialObjectMetadataList` applies) or one object or a watch stream (then
/// `as=PartialObjectMetadata` applies), as on the real server.
pub fn requested(headers: &HeaderMap, list: bool) -> View {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let wanted_kind = if list {
        "PartialObjectMetadataList"
    } else {
        "PartialObjectMetadata"
    };
    for entry in accept.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        if !matches!(media, "application/json" | "*/*" | "application/*" | "") {
            continue;
        }
        let (mut kind, mut group, mut version) = (None, None, None);
        for param in parts {
            match param.split_once('=') {
                Some(("as", v)) => kind = Some(v),
                Some(("g", v)) => group = Some(v),
                Some(("v", v)) => version = Some(v),
                _ => {}
            }
        }
        match kind {
            None => return View::Full,
            Some(k)
                if k == wanted_kind
                    && group == Some("meta.k8s.io")
                    && matches!(version, Some("v1" | "v1beta1")) =>
            {
                return View::Metadata
            }
            Some("Table")
                if group == Some("meta.k8s.io") && matches!(version, Some("v1" | "v1beta1")) =>
            {
                return View::Table
            }
            // The list/object form that does not fit this request.
            Some(_) => continue,
        }
    }
    View::Full
}

/// One object as `PartialObjectMetadata`.
pub fn object(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": API_VERSION,
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A list answer as `PartialObjectMetadataList`.
pub fn list(items: &[Value], resource_version: &str) -> Value {
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": API_VERSION,
        "metadata": {"resourceVersion": resource_version},
        "items": items.iter().map(object).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn the_first_producible_media_type_wins() {
        let list_meta = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
        let one_meta = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
        assert_eq!(requested(&accept(list_meta), true), View::Metadata);
        assert_eq!(requested(&accept(one_meta), false), View::Metadata);
        // The list form does not apply to one object and vice versa.
        assert_eq!(requested(&accept(list_meta), false), View::Full);
        assert_eq!(requested(&accept(one_meta), true), View::Full);
        // kubectl's first choice, a Table.
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
        assert_eq!(requested(&accept(kubectl), true), View::Table);
        assert_eq!(requested(&accept(kubectl), false), View::Table);
        let metadata_then_json = format!("{list_meta}, application/json");
        assert_eq!(
            requested(&accept(&metadata_then_json), true),
            View::Metadata
        );
        assert_eq!(
            requested(&accept(&format!("application/json, {list_meta}")), true),
            View::Full
        );
        assert_eq!(requested(&HeaderMap::new(), true), View::Full);
    }

    #[test]
    fn only_metadata_is_kept() {
        let secret = json!({
            "kind": "Secret", "apiVersion": "v1",
            "metadata": {"name": "s", "labels": {"owner": "helm"}},
            "data": {"release": "c2VjcmV0"}
        });
        let got = list(std::slice::from_ref(&secret), "7");
        assert_eq!(got["kind"], "PartialObjectMetadataList");
        assert_eq!(got["metadata"]["resourceVersion"], "7");
        assert_eq!(
            got["items"][0],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                   "metadata": {"name": "s", "labels": {"owner": "helm"}}})
        );
    }
}
