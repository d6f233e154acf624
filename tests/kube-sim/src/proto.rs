//! Decoding of Kubernetes protobuf request bodies into JSON.
//!
//! client-go's typed clients (1.32+) send built-in objects as `application/vnd.kubernetes.protobuf`
//! — `kubectl create namespace|configmap|secret` does, and so does Helm's Secret release
//! storage — and have no fallback to JSON on `415`. Responses can stay JSON (clients accept
//! both), so only request bodies need decoding. The wire format: magic `k8s\0`, then a
//! `runtime.Unknown` {typeMeta{apiVersion, kind}, raw, contentEncoding, contentType} whose `raw`
//! is the typed message. A small schema table per kind turns the message into the JSON the
//! rest of kube-sim works on; kinds not in the table get a clear 415.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::status::ApiError;

/// How one field is decoded.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    Bool,
    Int,
    /// `metav1.Time` {seconds, nanos} → RFC 3339; zero → omitted.
    Time,
    MapStrStr,
    /// `map<string, bytes>`, values rendered base64 as in JSON.
    MapStrBytes,
    Msg(&'static [Field]),
}

#[derive(Clone, Copy)]
struct Field {
    num: u64,
    name: &'static str,
    ty: Ty,
    repeated: bool,
}

const fn f(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: false,
    }
}

const fn rep(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: true,
    }
}

const OWNER_REFERENCE: &[Field] = &[
    f(1, "kind", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
    f(5, "apiVersion", Ty::Str),
    f(6, "controller", Ty::Bool),
    f(7, "blockOwnerDeletion", Ty::Bool),
];

/// `metav1.ObjectMeta` (managedFields, 17, is dropped: the server records managers itself).
const OBJECT_META: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "generateName", Ty::Str),
    f(3, "namespace", Ty::Str),
    f(4, "selfLink", Ty::Str),
    f(5, "uid", Ty::Str),
    f(6, "resourceVersion", Ty::Str),
    f(7, "generation", Ty::Int),
    f(8, "creationTimestamp", Ty::Time),
    f(9, "deletionTimestamp", Ty::Time),
    f(10, "deletionGracePeriodSeconds", Ty::Int),
    f(11, "labels", Ty::MapStrStr),
    f(12, "annotations", Ty::MapStrStr),
    rep(13, "ownerReferences", Ty::Msg(OWNER_REFERENCE)),
    rep(14, "finalizers", Ty::Str),
];

const OBJECT_REFERENCE: &[Field] = &[
    f(1, "kind", Ty::Str),
    f(2, "namespace", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
    f(5, "apiVersion", Ty::Str),
    f(6, "resourceVersion", Ty::Str),
    f(7, "fieldPath", Ty::Str),
];

const LOCAL_OBJECT_REFERENCE: &[Field] = &[f(1, "name", Ty::Str)];

const NAMESPACE: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(&[rep(1, "finalizers", Ty::Str)])),
    f(3, "status", Ty::Msg(&[f(1, "phase", Ty::Str)])),
];

const CONFIG_MAP: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "data", Ty::MapStrStr),
    f(3, "binaryData", Ty::MapStrBytes),
    f(4, "immutable", Ty::Bool),
];

const SECRET: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "data", Ty::MapStrBytes),
    f(3, "type", Ty::Str),
    f(4, "stringData", Ty::MapStrStr),
    f(5, "immutable", Ty::Bool),
];

const SERVICE_ACCOUNT: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    rep(2, "secrets", Ty::Msg(OBJECT_REFERENCE)),
    rep(3, "imagePullSecrets", Ty::Msg(LOCAL_OBJECT_REFERENCE)),
    f(4, "automountServiceAccountToken", Ty::Bool),
];

const DELETE_OPTIONS: &[Field] = &[
    f(1, "gracePeriodSeconds", Ty::Int),
    f(
        2,
        "preconditions",
        Ty::Msg(&[f(1, "uid", Ty::Str), f(2, "resourceVersion", Ty::Str)]),
    ),
    f(3, "orphanDependents", Ty::Bool),
    f(4, "propagationPolicy", Ty::Str),
    rep(5, "dryRun", Ty::Str),
];

/// Kinds whose protobuf bodies kube-sim understands, by (apiVersion, kind).
fn schema(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Secret") => SECRET,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        ("v1" | "meta.k8s.io/v1", "DeleteOptions") => DELETE_OPTIONS,
        _ => return None,
    })
}

/// The content type client-go uses for protobuf.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

/// A protobuf field as read off the wire.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn malformed() -> ApiError {
    ApiError::bad_request("the protobuf body of the request is malformed")
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, ApiError> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or_else(malformed)?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err(malformed())
}

/// Splits a message into `(field number, value)` pairs.
fn fields(buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, ApiError> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let value = match tag & 7 {
            0 => Wire::Varint(varint(buf, &mut pos)?),
            1 | 5 => {
                pos += if tag & 7 == 1 { 8 } else { 4 };
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|_| malformed())?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or_else(malformed)?;
                let bytes = &buf[pos..end];
                pos = end;
                Wire::Bytes(bytes)
            }
            _ => return Err(malformed()),
        };
        if pos > buf.len() {
            return Err(malformed());
        }
        out.push((tag >> 3, value));
    }
    Ok(out)
}

fn utf8(b: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(b.to_vec()).map_err(|_| malformed())
}

fn map_entry(b: &[u8], bytes_value: bool) -> Result<(String, Value), ApiError> {
    let mut key = String::new();
    let mut value = json!("");
    for (num, w) in fields(b)? {
        match (num, w) {
            (1, Wire::Bytes(k)) => key = utf8(k)?,
            (2, Wire::Bytes(v)) if bytes_value => {
                value = json!(base64::engine::general_purpose::STANDARD.encode(v))
            }
            (2, Wire::Bytes(v)) => value = json!(utf8(v)?),
            _ => {}
        }
    }
    Ok((key, value))
}

fn time(b: &[u8]) -> Result<Value, ApiError> {
    let mut seconds = 0i64;
    for (num, w) in fields(b)? {
        if let (1, Wire::Varint(v)) = (num, w) {
            seconds = v as i64;
        }
    }
    if seconds == 0 {
        return Ok(Value::Null);
    }
    let t = chrono::DateTime::from_timestamp(seconds, 0).ok_or_else(malformed)?;
    Ok(json!(t.format("%Y-%m-%dT%H:%M:%SZ").to_string()))
}

/// Decodes one message with `schema`. Unknown fields are skipped; empty strings, zero times
/// and empty messages are left out, as Go's `omitempty` JSON would.
fn message(buf: &[u8], schema: &[Field]) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    for (num, w) in fields(buf)? {
        let Some(field) = schema.iter().find(|f| f.num == num) else {
            continue;
        };
        let value = match (field.ty, w) {
            (Ty::Str, Wire::Bytes(b)) => json!(utf8(b)?),
            (Ty::Bool, Wire::Varint(v)) => json!(v != 0),
            (Ty::Int, Wire::Varint(v)) => json!(v as i64),
            (Ty::Time, Wire::Bytes(b)) => time(b)?,
            (Ty::MapStrStr | Ty::MapStrBytes, Wire::Bytes(b)) => {
                let (k, v) = map_entry(b, matches!(field.ty, Ty::MapStrBytes))?;
                let entry = out.entry(field.name).or_insert_with(|| json!({}));
                if let Some(m) = entry.as_object_mut() {
                    m.insert(k, v);
                }
                continue;
            }
            (Ty::Msg(inner), Wire::Bytes(b)) => Value::Object(message(b, inner)?),
            _ => return Err(malformed()),
        };
        let empty = match &value {
            Value::Null => true,
            Value::String(s) => s.is_empty() && !field.repeated,
            Value::Object(m) => m.is_empty() && !field.repeated,
            _ => false,
        };
        if field.repeated {
            let list = out.entry(field.name).or_insert_with(|| json!([]));
            if let Some(a) = list.as_array_mut() {
                a.push(value);
            }
        } else if !empty {
            out.insert(field.name.into(), value);
        }
    }
    Ok(out)
}

/// Decodes a `k8s\0`-framed protobuf body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let rest = body.strip_prefix(MAGIC).ok_or_else(|| {
        ApiError::bad_request("the protobuf body does not start with the Kubernetes magic number")
    })?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (num, w) in fields(rest)? {
        match (num, w) {
            (1, Wire::Bytes(tm)) => {
                for (n, v) in fields(tm)? {
                    match (n, v) {
                        (1, Wire::Bytes(s)) => api_version = utf8(s)?,
                        (2, Wire::Bytes(s)) => kind = utf8(s)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    let schema = schema(&api_version, &kind)
        .ok_or_else(|| ApiError::unsupported_protobuf(&format!("{api_version}, Kind={kind}")))?;
    let mut obj = message(raw, schema)?;
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(num: u64, wire: u8) -> u8 {
        ((num << 3) as u8) | wire
    }

    fn len_field(num: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![tag(num, 2), payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut tm = len_field(1, api_version.as_bytes());
        tm.extend(len_field(2, kind.as_bytes()));
        let mut body = MAGIC.to_vec();
        body.extend(len_field(1, &tm));
        body.extend(len_field(2, raw));
        body
    }

    #[test]
    fn decodes_a_configmap() {
        let mut label = len_field(1, b"team");
        label.extend(len_field(2, b"blue"));
        let mut meta = len_field(1, b"cm");
        meta.extend(len_field(2, b""));
        meta.extend(len_field(8, &[]));
        meta.extend(len_field(11, &label));
        let mut data = len_field(1, b"a");
        data.extend(len_field(2, b"b"));
        let mut bin = len_field(1, b"k");
        bin.extend(len_field(2, &[0, 1, 2]));
        let mut raw = len_field(1, &meta);
        raw.extend(len_field(2, &data));
        raw.extend(len_field(3, &bin));
        raw.extend([tag(4, 0), 1]);
        raw.extend([tag(15, 0), 5]); // unknown field: skipped
        let obj = decode(&envelope("v1", "ConfigMap", &raw)).unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "cm", "labels": {"team": "blue"}},
                   "data": {"a": "b"}, "binaryData": {"k": "AAEC"}, "immutable": true})
        );
    }

    #[test]
    fn rejects_unknown_kinds_and_garbage() {
        let e = decode(&envelope("apps/v1", "Deployment", &[])).unwrap_err();
        assert_eq!(e.code, 415);
        assert_eq!(decode(b"{}").unwrap_err().code, 400);
        let mut truncated = envelope("v1", "ConfigMap", &len_field(1, b"xx"));
        truncated.truncate(truncated.len() - 1);
        assert_eq!(decode(&truncated).unwrap_err().code, 400);
    }
}
