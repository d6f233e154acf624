//! Audit log: one entry per HTTP request, so tests can assert *how* clients talked to the
//! server (which verbs, in what order, whether writes overlapped), not only the end state.
//!
//! Entries are kept in memory (bounded, oldest dropped first) and, when configured, appended
//! as JSON lines to a file so a process other than the one running kube-sim (e.g. a system
//! test driving the `kube-sim` binary) can read them with [`read_log`].
//!
//! The Kubernetes attributes (verb, namespace, resource, name) are derived from the request
//! line alone, the way the real server's `RequestInfoFactory` does, so that requests rejected
//! by fault injection or routing are described just like served ones.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

/// Default bound of the in-memory log: enough for a long system test, small enough that a
/// forgotten `clear_audit` cannot exhaust memory.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// One HTTP request as the server saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// When the request reached the handler (wall clock, so entries from several processes
    /// can be compared).
    pub at_start: SystemTime,
    /// `at_start + duration`. For watches this is when the response headers were ready, not
    /// when the stream closed.
    pub at_end: SystemTime,
    /// Measured on a monotonic clock.
    pub duration: Duration,
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    pub method: String,
    pub path: String,
    /// The raw query string, without `?` (empty if none).
    pub query: String,
    pub user_agent: String,
    /// HTTP status code of the answer.
    pub code: u16,
    /// Empty for cluster-scoped and non-resource requests.
    pub namespace: String,
    /// Resource plural (e.g. `secrets`); empty for non-resource paths such as `/version`.
    pub resource: String,
    /// e.g. `status` or `scale`; empty if none.
    pub subresource: String,
    /// Object name; empty for collections.
    pub name: String,
}

/// What the request line says about the addressed objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub verb: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

/// Derives the Kubernetes verb and target from method, path and query, following
/// `k8s.io/apiserver/pkg/endpoints/request.RequestInfoFactory`.
pub fn request_info(method: &str, path: &str, query: &str) -> RequestInfo {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut info = RequestInfo::default();
    let rest: &[&str] = match segs.as_slice() {
        ["api", _version, rest @ ..] if !rest.is_empty() => rest,
        ["apis", _group, _version, rest @ ..] if !rest.is_empty() => rest,
        _ => {
            // Non-resource request (/version, /apis, discovery of a group version, ...): the
            // verb is the method's.
            info.verb = method.to_ascii_lowercase();
            return info;
        }
    };
    let mut parts = rest;
    if let ["namespaces", ns, tail @ ..] = parts {
        info.namespace = ns.to_string();
        // `/namespaces/{ns}/status` and `/finalize` are subresources of the namespace itself.
        if !tail.is_empty() && !matches!(tail[0], "status" | "finalize") {
            parts = tail;
        }
    }
    if let Some(r) = parts.first() {
        info.resource = r.to_string();
    }
    if let Some(n) = parts.get(1) {
        info.name = n.to_string();
    }
    if let Some(s) = parts.get(2) {
        info.subresource = s.to_string();
    }
    let watch = form_urlencoded::parse(query.as_bytes())
        .any(|(k, v)| k == "watch" && (v == "true" || v == "1"));
    let has_name = !info.name.is_empty();
    info.verb = match method {
        "GET" | "HEAD" if watch => "watch",
        "GET" | "HEAD" if has_name => "get",
        "GET" | "HEAD" => "list",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" if has_name => "delete",
        "DELETE" => "deletecollection",
        other => {
            return RequestInfo {
                verb: other.to_ascii_lowercase(),
                ..info
            }
        }
    }
    .to_string();
    info
}

impl AuditEntry {
    /// Whether the request asked to change state (create, update, patch, delete,
    /// deletecollection).
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }

    /// The JSON-lines form written to the audit file.
    pub fn to_json(&self) -> Value {
        json!({
            "at_start": rfc3339(self.at_start),
            "at_end": rfc3339(self.at_end),
            "duration_ns": u64::try_from(self.duration.as_nanos()).unwrap_or(u64::MAX),
            "verb": self.verb,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "user_agent": self.user_agent,
            "code": self.code,
            "namespace": self.namespace,
            "resource": self.resource,
            "subresource": self.subresource,
            "name": self.name,
        })
    }

    /// Parses one line written by [`AuditEntry::to_json`].
    pub fn from_json(v: &Value) -> anyhow::Result<Self> {
        let s = |k: &str| -> anyhow::Result<String> {
            v[k].as_str()
                .map(String::from)
                .with_context(|| format!("audit entry field {k:?} missing"))
        };
        let time = |k: &str| -> anyhow::Result<SystemTime> {
            let t: DateTime<Utc> = DateTime::parse_from_rfc3339(&s(k)?)
                .with_context(|| format!("audit entry field {k:?} is not RFC 3339"))?
                .into();
            Ok(t.into())
        };
        Ok(Self {
            at_start: time("at_start")?,
            at_end: time("at_end")?,
            duration: Duration::from_nanos(
                v["duration_ns"].as_u64().context("duration_ns missing")?,
            ),
            verb: s("verb")?,
            method: s("method")?,
            path: s("path")?,
            query: s("query")?,
            user_agent: s("user_agent")?,
            code: v["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .context("code missing")?,
            namespace: s("namespace")?,
            resource: s("resource")?,
            subresource: s("subresource")?,
            name: s("name")?,
        })
    }
}

fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Reads an audit file written by a kube-sim (possibly another process, possibly still
/// writing: a partial last line is ignored).
pub fn read_log(path: &Path) -> anyhow::Result<Vec<AuditEntry>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        out.push(AuditEntry::from_json(&v)?);
    }
    Ok(out)
}

/// The in-memory log plus the optional file; shared by all request handlers.
#[derive(Debug)]
pub struct AuditLog {
    capacity: usize,
    entries: Mutex<VecDeque<AuditEntry>>,
    file: Option<Mutex<File>>,
}

impl AuditLog {
    /// `path`, if given, is truncated and then appended to, one JSON object per line.
    pub fn new(capacity: usize, path: Option<&Path>) -> anyhow::Result<Self> {
        let file = path
            .map(|p| File::create(p).with_context(|| format!("creating {}", p.display())))
            .transpose()?
            .map(Mutex::new);
        Ok(Self {
            capacity: capacity.max(1),
            entries: Mutex::new(VecDeque::new()),
            file,
        })
    }

    pub fn record(&self, entry: AuditEntry) {
        if let Some(file) = &self.file {
            let mut line = entry.to_json().to_string();
            line.push('\n');
            // One write per line under the lock, so a reader never sees interleaved lines.
            let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = f.write_all(line.as_bytes()) {
                tracing::warn!(error = %e, "writing the audit log failed");
            }
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() == self.capacity {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// A copy of the entries, oldest first.
    pub fn snapshot(&self) -> Vec<AuditEntry> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.iter().cloned().collect()
    }

    /// Forgets the in-memory entries (the file keeps everything).
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Which entries [`overlapping`] considers, built up by narrowing. An empty filter matches
/// every entry.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub namespace: Option<String>,
    pub resource: Option<String>,
    pub name_prefix: Option<String>,
}

impl AuditFilter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }

    pub fn resource(mut self, plural: impl Into<String>) -> Self {
        self.resource = Some(plural.into());
        self
    }

    /// e.g. `sh.helm.release.v1.<release>.` to select one Helm release's Secrets.
    pub fn name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = Some(prefix.into());
        self
    }

    pub fn matches(&self, e: &AuditEntry) -> bool {
        self.namespace.as_ref().is_none_or(|ns| &e.namespace == ns)
            && self.resource.as_ref().is_none_or(|r| &e.resource == r)
            && self
                .name_prefix
                .as_ref()
                .is_none_or(|p| e.name.starts_with(p.as_str()))
    }
}

/// Pairs of write requests (create/update/patch/delete/deletecollection) accepted by `filter`
/// whose `[at_start, at_end]` intervals overlap, i.e. that the server handled concurrently.
/// Intervals that merely touch do not count. Rejected writes (4xx/5xx) are included: they
/// still show that two clients raced; filter on `code` to exclude them.
pub fn overlapping(
    entries: &[AuditEntry],
    filter: impl Fn(&AuditEntry) -> bool,
) -> Vec<(AuditEntry, AuditEntry)> {
    let mut writes: Vec<&AuditEntry> = entries
        .iter()
        .filter(|e| e.is_write() && filter(e))
        .collect();
    writes.sort_by_key(|e| e.at_start);
    let mut pairs = Vec::new();
    for (i, a) in writes.iter().enumerate() {
        // Sorted by start: every later entry starting before `a` ends overlaps it.
        for b in writes[i + 1..].iter().take_while(|b| b.at_start < a.at_end) {
            pairs.push(((*a).clone(), (*b).clone()));
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(verb: &str, name: &str, start_ms: u64, end_ms: u64) -> AuditEntry {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        AuditEntry {
            at_start: base + Duration::from_millis(start_ms),
            at_end: base + Duration::from_millis(end_ms),
            duration: Duration::from_millis(end_ms - start_ms),
            verb: verb.into(),
            method: "PUT".into(),
            path: format!("/api/v1/namespaces/demo/secrets/{name}"),
            query: String::new(),
            user_agent: "helm/v4".into(),
            code: 200,
            namespace: "demo".into(),
            resource: "secrets".into(),
            subresource: String::new(),
            name: name.into(),
        }
    }

    #[test]
    fn verbs_follow_kubernetes_naming() {
        let v = |m: &str, p: &str, q: &str| request_info(m, p, q);
        assert_eq!(v("GET", "/api/v1/namespaces/d/pods", "").verb, "list");
        assert_eq!(v("GET", "/api/v1/namespaces/d/pods/x", "").verb, "get");
        assert_eq!(v("GET", "/api/v1/pods", "watch=true").verb, "watch");
        assert_eq!(
            v("GET", "/api/v1/namespaces/d/pods/x", "watch=1").verb,
            "watch"
        );
        assert_eq!(v("POST", "/api/v1/namespaces/d/pods", "").verb, "create");
        assert_eq!(v("PUT", "/api/v1/namespaces/d/pods/x", "").verb, "update");
        assert_eq!(v("PATCH", "/api/v1/namespaces/d/pods/x", "").verb, "patch");
        assert_eq!(
            v("DELETE", "/api/v1/namespaces/d/pods/x", "").verb,
            "delete"
        );
        assert_eq!(
            v("DELETE", "/api/v1/namespaces/d/pods", "").verb,
            "deletecollection"
        );
        assert_eq!(v("GET", "/version", "").verb, "get");
        assert_eq!(v("GET", "/apis/apps/v1", "").verb, "get");
        assert_eq!(v("GET", "/apis/apps/v1", "").resource, "");

        let ns = v("GET", "/api/v1/namespaces/d", "");
        assert_eq!(
            (ns.resource.as_str(), ns.name.as_str()),
            ("namespaces", "d")
        );
        let scale = v(
            "PATCH",
            "/apis/apps/v1/namespaces/d/deployments/w/scale",
            "",
        );
        assert_eq!(scale.namespace, "d");
        assert_eq!(scale.resource, "deployments");
        assert_eq!(scale.name, "w");
        assert_eq!(scale.subresource, "scale");
        let cluster = v(
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin",
            "",
        );
        assert_eq!(cluster.namespace, "");
        assert_eq!(cluster.name, "admin");
    }

    #[test]
    fn overlap_finds_concurrent_writes_only() {
        let entries = vec![
            entry("update", "sh.helm.release.v1.r.v1", 0, 100),
            entry("create", "sh.helm.release.v1.r.v2", 50, 150),
            // Touches the previous one's end: sequential.
            entry("update", "sh.helm.release.v1.r.v2", 150, 200),
            // Reads never count.
            entry("get", "sh.helm.release.v1.r.v2", 160, 170),
            // Another release overlapping is filtered out.
            entry("update", "sh.helm.release.v1.other.v1", 160, 170),
        ];
        let f = AuditFilter::new()
            .namespace("demo")
            .name_prefix("sh.helm.release.v1.r.");
        let pairs = overlapping(&entries, |e| f.matches(e));
        assert_eq!(pairs.len(), 1, "{pairs:?}");
        assert_eq!(pairs[0].0.name, "sh.helm.release.v1.r.v1");
        assert_eq!(pairs[0].1.name, "sh.helm.release.v1.r.v2");
        assert!(overlapping(&entries[2..], |e| f.matches(e)).is_empty());
    }

    #[test]
    fn json_lines_round_trip_and_log_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::new(2, Some(&path)).unwrap();
        for i in 0..3 {
            log.record(entry("update", &format!("n{i}"), i * 10, i * 10 + 5));
        }
        let mem = log.snapshot();
        assert_eq!(mem.len(), 2);
        assert_eq!(mem[0].name, "n1");
        let file = read_log(&path).unwrap();
        assert_eq!(file.len(), 3);
        assert_eq!(file[2], mem[1]);
        log.clear();
        assert!(log.snapshot().is_empty());
    }
}
