//! Helm's release records, read straight from the cluster instead of through `helm`.
//!
//! Helm 3 and 4 (default `secret` storage driver) keep each revision of a release as a Secret
//! `sh.helm.release.v1.<release>.v<N>` in the release namespace, labelled `owner=helm`,
//! `name=<release>`, `status=<deployed|superseded|failed|pending-install|...>` and
//! `version=<N>`. The labels answer "what is the latest revision and is it deployed" with one
//! metadata-only LIST, which costs a fraction of starting `helm status` (a process, a
//! discovery round, and decoding the gzipped release). That is the fast path of an
//! unchanged redeploy. The release body itself (chart, values, manifest) stays Helm's
//! business: we do not decode it.

use std::io::Read;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::Api;
use serde::Deserialize;
use serde_json::Value;

use super::{Cluster, ClusterError};
use crate::helm::ReleaseRef;

/// The newest revision of a release as Helm recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRevision {
    /// Helm's revision number (`helm history`'s REVISION).
    pub revision: u32,
    /// Helm's status string, e.g. `deployed`, `failed`, `pending-upgrade`.
    pub status: String,
    /// The record's labels: Helm's own (`name`, `owner`, `status`, `version`) and the
    /// release's custom labels (`helm upgrade --labels`), which say whose release it is.
    pub labels: std::collections::BTreeMap<String, String>,
}

impl StoredRevision {
    /// The revision is live and was installed successfully.
    pub fn is_deployed(&self) -> bool {
        self.status == "deployed"
    }

    /// A Helm operation started and has not finished (or its process died): the next
    /// upgrade needs a rollback or `--force`-style recovery first.
    pub fn is_pending(&self) -> bool {
        self.status.starts_with("pending-")
    }
}

/// One revision of a release as Helm stored it: what later tasks plan from.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRelease {
    pub revision: u32,
    pub status: String,
    /// The chart's `name` and `version` (`helm list`'s CHART column) and `appVersion`.
    pub chart_name: String,
    pub chart_version: String,
    pub app_version: String,
    /// The values given at install/upgrade (`helm get values`, without the chart defaults).
    pub config: Value,
    /// The rendered manifest (`helm get manifest`).
    pub manifest: String,
    /// The release's `helm test` hooks (Pods and Jobs the chart runs as tests).
    pub test_hooks: Vec<TestHook>,
    /// Every hook of the revision: its events and its rendered manifest.
    pub hooks: Vec<StoredHook>,
    /// What `helm history` shows in DESCRIPTION, e.g. `Rollback to 3`.
    pub description: String,
}

/// A hook of a release as Helm stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredHook {
    /// `pre-install`, `test`, `pre-delete`, ...
    pub events: Vec<String>,
    pub manifest: String,
}

/// A `helm.sh/hook: test` object of a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestHook {
    pub kind: String,
    pub name: String,
}

/// The parts of Helm's release JSON (`pkg/release/v1`) read here; the rest is ignored.
#[derive(Debug, Deserialize)]
struct ReleaseBody {
    version: u32,
    info: ReleaseInfo,
    #[serde(default)]
    chart: ReleaseChart,
    #[serde(default)]
    config: Option<Value>,
    #[serde(default)]
    manifest: String,
    #[serde(default)]
    hooks: Vec<HookBody>,
}

#[derive(Debug, Deserialize)]
struct HookBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    manifest: String,
}

impl HookBody {
    /// `test` (and Helm 2's `test-success`, which Helm 3 and 4 still run).
    fn is_test(&self) -> bool {
        self.events
            .iter()
            .any(|event| event == "test" || event == "test-success")
    }
}

#[derive(Debug, Deserialize)]
struct ReleaseInfo {
    status: String,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize, Default)]
struct ReleaseChart {
    #[serde(default)]
    metadata: ChartMetadata,
}

#[derive(Debug, Deserialize, Default)]
struct ChartMetadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default, rename = "appVersion")]
    app_version: String,
}

/// Largest decompressed release body accepted (Helm's own limit on a Secret is 1 MiB
/// compressed; a body far beyond that is not one Helm wrote).
const MAX_RELEASE_BODY: u64 = 64 * 1024 * 1024;

/// Decodes the `release` field of a Helm storage Secret: base64 of (usually gzipped) JSON.
fn decode_release(encoded: &[u8]) -> Result<ReleaseBody, String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim_ascii())
        .map_err(|err| format!("not base64: {err}"))?;
    let json = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .take(MAX_RELEASE_BODY)
            .read_to_end(&mut out)
            .map_err(|err| format!("not gzip: {err}"))?;
        out
    } else {
        raw
    };
    serde_json::from_slice(&json).map_err(|err| format!("not a Helm release: {err}"))
}

impl Cluster {
    /// Revision `revision` of `release` in `namespace` with its values and manifest, or `None`
    /// when Helm has no such revision. One GET of the storage Secret.
    pub async fn stored_release(
        &self,
        namespace: &str,
        release: &str,
        revision: u32,
    ) -> Result<Option<StoredRelease>, ClusterError> {
        let api: Api<Secret> = Api::namespaced(self.client(), namespace);
        let name = format!("sh.helm.release.v1.{release}.v{revision}");
        let Some(secret) = self
            .call(
                || format!("get Helm release Secret {name} in {namespace}"),
                api.get_opt(&name),
            )
            .await?
        else {
            return Ok(None);
        };
        let encoded = secret
            .data
            .as_ref()
            .and_then(|data| data.get("release"))
            .ok_or_else(|| ClusterError::Unreadable {
                what: format!("Helm release Secret {name} in {namespace}"),
                reason: "it has no `release` field".into(),
            })?;
        let body = decode_release(&encoded.0).map_err(|reason| ClusterError::Unreadable {
            what: format!("Helm release Secret {name} in {namespace}"),
            reason,
        })?;
        Ok(Some(StoredRelease {
            revision: body.version,
            status: body.info.status,
            description: body.info.description,
            chart_name: body.chart.metadata.name,
            chart_version: body.chart.metadata.version,
            app_version: body.chart.metadata.app_version,
            config: body.config.unwrap_or(Value::Object(Default::default())),
            manifest: body.manifest,
            test_hooks: body
                .hooks
                .iter()
                .filter(|hook| hook.is_test())
                .map(|hook| TestHook {
                    kind: hook.kind.clone(),
                    name: hook.name.clone(),
                })
                .collect(),
            hooks: body
                .hooks
                .into_iter()
                .map(|hook| StoredHook {
                    events: hook.events,
                    manifest: hook.manifest,
                })
                .collect(),
        }))
    }

    /// Every revision Helm keeps of `release` in `namespace` (its `--history-max` window),
    /// oldest first; empty when there is none. One LIST of Secret metadata by label selector;
    /// Secrets whose names or labels do not follow Helm's scheme are ignored.
    pub async fn release_revisions(
        &self,
        namespace: &str,
        release: &str,
    ) -> Result<Vec<StoredRevision>, ClusterError> {
        let api: Api<Secret> = Api::namespaced(self.client(), namespace);
        let params = ListParams::default().labels(&format!("owner=helm,name={release}"));
        let list = self
            .call(
                || format!("list Helm release Secrets of {release} in {namespace}"),
                api.list_metadata(&params),
            )
            .await?;
        let mut revisions: Vec<StoredRevision> = list
            .items
            .iter()
            .filter_map(|item| {
                stored_revision(
                    release,
                    item.metadata.name.as_deref()?,
                    item.metadata.labels.as_ref(),
                )
            })
            .collect();
        revisions.sort_by_key(|r| r.revision);
        revisions.dedup_by_key(|r| r.revision);
        Ok(revisions)
    }
}

/// Reads one record from its name and labels; `None` when it is not a record of `release`.
fn stored_revision(
    release: &str,
    secret_name: &str,
    labels: Option<&std::collections::BTreeMap<String, String>>,
) -> Option<StoredRevision> {
    let from_name: u32 = secret_name
        .strip_prefix("sh.helm.release.v1.")?
        .strip_prefix(release)?
        .strip_prefix(".v")?
        .parse()
        .ok()?;
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    // Helm writes the same number in both places; the label wins only when it agrees, so a
    // hand-edited label cannot make an old record look like the newest.
    if label("version").is_some_and(|v| v.parse::<u32>().ok() != Some(from_name)) {
        tracing::debug!(
            secret = secret_name,
            "Helm record's version label disagrees with its name"
        );
        return None;
    }
    Some(StoredRevision {
        revision: from_name,
        status: label("status").unwrap_or("unknown").to_string(),
        labels: labels.cloned().unwrap_or_default(),
    })
}

/// Records per page of [`Cluster::helm_releases_in_all_namespaces`]: however many releases a
/// cluster keeps, one answer stays small.
const RELEASE_LIST_PAGE: u32 = 500;
/// Bound on those pages, against a server that never stops handing out continue tokens.
const MAX_RELEASE_LIST_PAGES: usize = 1_000;

impl Cluster {
    /// Every release Helm keeps records of, in every namespace, each once, sorted. Metadata-only
    /// LISTs (paged) of the Secrets labelled `owner=helm` across namespaces: a service's releases
    /// in stages nobody told us about are found without running `helm list -A`.
    ///
    /// Needs the permission to list Secrets cluster-wide. A refusal (403) comes back as the
    /// [`ClusterError`] it is ([`ClusterError::status_code`]), so callers can do without.
    pub async fn helm_releases_in_all_namespaces(&self) -> Result<Vec<ReleaseRef>, ClusterError> {
        let api: Api<Secret> = Api::all(self.client());
        let action = || "list Helm release Secrets in all namespaces".to_owned();
        let mut found = std::collections::BTreeSet::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_RELEASE_LIST_PAGES {
            let mut params = ListParams::default()
                .labels("owner=helm")
                .limit(RELEASE_LIST_PAGE);
            if let Some(token) = &token {
                params = params.continue_token(token);
            }
            let page = self.call(action, api.list_metadata(&params)).await?;
            found.extend(
                page.items
                    .iter()
                    .filter_map(|item| release_ref(&item.metadata)),
            );
            token = page.metadata.continue_.filter(|t| !t.is_empty());
            if token.is_none() {
                return Ok(found.into_iter().collect());
            }
        }
        Err(ClusterError::Protocol {
            action: action(),
            detail: format!(
                "the server still had more after {MAX_RELEASE_LIST_PAGES} pages of {RELEASE_LIST_PAGE}"
            ),
        })
    }
}

/// The release one Helm storage Secret belongs to (`sh.helm.release.v1.<release>.v<N>` in the
/// release namespace); `None` for Secrets that do not follow Helm's scheme, or whose `name`
/// label disagrees with their name.
fn release_ref(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<ReleaseRef> {
    let namespace = meta.namespace.as_deref().filter(|ns| !ns.is_empty())?;
    let (release, revision) = meta
        .name
        .as_deref()?
        .strip_prefix("sh.helm.release.v1.")?
        .rsplit_once(".v")?;
    revision.parse::<u32>().ok()?;
    let label = meta.labels.as_ref().and_then(|labels| labels.get("name"));
    if release.is_empty() || label.is_some_and(|name| name != release) {
        return None;
    }
    Some(ReleaseRef {
        namespace: namespace.to_owned(),
        release: release.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn labels(version: &str, status: &str) -> BTreeMap<String, String> {
        [
            ("owner", "helm"),
            ("name", "r"),
            ("version", version),
            ("status", status),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn release_bodies_decode_gzipped_or_plain() {
        use std::io::Write;
        let json = serde_json::json!({
            "name": "r", "version": 3, "namespace": "ns",
            "info": {"status": "deployed", "description": "Upgrade complete"},
            "chart": {"metadata": {"name": "hello", "version": "0.1.0"}, "templates": []},
            "config": {"keptn": {"stage": "dev"}},
            "manifest": "---\nkind: Service\n"
        })
        .to_string();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(json.as_bytes()).unwrap();
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        for encoded in [b64(&gz.finish().unwrap()), b64(json.as_bytes())] {
            let body = decode_release(encoded.as_bytes()).unwrap();
            assert_eq!(body.version, 3);
            assert_eq!(body.info.status, "deployed");
            assert_eq!(body.chart.metadata.name, "hello");
            assert_eq!(body.config.unwrap()["keptn"]["stage"], "dev");
            assert!(body.manifest.contains("kind: Service"));
        }
        assert!(decode_release(b"%%%").unwrap_err().contains("base64"));
        assert!(decode_release(b64(br#"{"x": 1}"#).as_bytes())
            .unwrap_err()
            .contains("not a Helm release"));
    }

    #[test]
    fn release_refs_come_from_helm_storage_secrets_only() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        let meta = |namespace: Option<&str>, name: &str, label: Option<&str>| ObjectMeta {
            namespace: namespace.map(str::to_owned),
            name: Some(name.to_owned()),
            labels: label.map(|l| BTreeMap::from([("name".to_owned(), l.to_owned())])),
            ..ObjectMeta::default()
        };
        assert_eq!(
            release_ref(&meta(
                Some("shop-dev"),
                "sh.helm.release.v1.shop-dev-hello.v3",
                Some("shop-dev-hello")
            )),
            Some(ReleaseRef {
                namespace: "shop-dev".into(),
                release: "shop-dev-hello".into()
            })
        );
        // Release names may hold dots; the revision is the last `.v<N>`.
        assert_eq!(
            release_ref(&meta(Some("ns"), "sh.helm.release.v1.a.v2.v10", None)).map(|l| l.release),
            Some("a.v2".to_owned())
        );
        for (namespace, name, label) in [
            (None, "sh.helm.release.v1.r.v1", None),
            (Some("ns"), "sh.helm.release.v1.r.vx", None),
            (Some("ns"), "my-secret", None),
            (Some("ns"), "sh.helm.release.v1..v1", None),
            (Some("ns"), "sh.helm.release.v1.r.v1", Some("other")),
        ] {
            assert_eq!(release_ref(&meta(namespace, name, label)), None, "{name}");
        }
    }

    #[test]
    fn records_are_read_from_name_and_labels() {
        let got = stored_revision(
            "r",
            "sh.helm.release.v1.r.v12",
            Some(&labels("12", "deployed")),
        );
        assert_eq!(
            got,
            Some(StoredRevision {
                revision: 12,
                status: "deployed".into(),
                labels: labels("12", "deployed"),
            })
        );
        assert!(got.unwrap().is_deployed());
        // Another release whose name starts with ours, a bad number, a disagreeing label.
        assert_eq!(
            stored_revision("r", "sh.helm.release.v1.r-generated.v1", None),
            None
        );
        assert_eq!(stored_revision("r", "sh.helm.release.v1.r.vx", None), None);
        assert_eq!(
            stored_revision("r", "sh.helm.release.v1.r.v3", Some(&labels("4", "failed"))),
            None
        );
        let pending = stored_revision(
            "r",
            "sh.helm.release.v1.r.v2",
            Some(&labels("2", "pending-upgrade")),
        )
        .unwrap();
        assert!(pending.is_pending() && !pending.is_deployed());
        assert_eq!(
            stored_revision("r", "sh.helm.release.v1.r.v5", None).map(|r| r.status),
            Some("unknown".to_string())
        );
    }
}
