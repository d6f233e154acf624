//! Charts in Keptn's resource-service: the configuration store of a Keptn control plane.
//!
//! API (as the reference helm-service used it):
//! - fetch: `GET {base}/v1/project/{p}/stage/{s}/service/{svc}/resource/helm%2F{svc}.tgz`,
//!   optionally `?gitCommitID=<commit>` to read the chart as of that commit; the answer is
//!   `{"resourceURI": …, "resourceContent": "<base64>", "metadata": {"version": "<commit>"}}`,
//!   404 when there is no such resource (or service);
//! - store: `PUT {base}/v1/project/{p}/stage/{s}/service/{svc}/resource` with
//!   `{"resources": [{"resourceURI": "helm/<svc>.tgz", "resourceContent": "<base64>"}]}`.
//!
//! Listing is not supported: the resource-service lists resources of one known service only, and
//! finding the services needs the shipyard-controller; use Keptn's own tooling for that.
//!
//! The answer's size is checked against the cap from `Content-Length` before the body is read,
//! and the body is read in chunks that stop at the cap, so a misbehaving server cannot make the
//! worker buffer more than about 4/3 of the cap (base64) plus a little JSON.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use crate::secret::{redact_user_info, Secret};

use super::{
    ChartListing, ChartLocation, ChartStore, ChartStoreError, FetchedFile, ProjectName, ReadResult,
    ServiceFile, SizeCap,
};

/// Time limit of every request (connect, send, whole answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Room for the JSON around the base64 content.
const JSON_OVERHEAD: u64 = 64 * 1024;

/// How much of an error answer is quoted in messages.
const ERROR_EXCERPT: usize = 300;

/// Everything but unreserved characters is encoded: the resource URI's `/` must become
/// `%2F` to stay one path segment.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A chart store on Keptn's resource-service.
#[derive(Debug, Clone)]
pub struct ResourceServiceCharts {
    base: reqwest::Url,
    client: reqwest::Client,
    cap: SizeCap,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetResourceResponse {
    #[serde(default)]
    resource_content: Option<String>,
    #[serde(default)]
    metadata: Option<ResourceMetadata>,
}

#[derive(Debug, Deserialize)]
struct ResourceMetadata {
    #[serde(default)]
    version: Option<String>,
}

#[derive(Debug, Serialize)]
struct PutResources<'a> {
    resources: [PutResource<'a>; 1],
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PutResource<'a> {
    #[serde(rename = "resourceURI")]
    resource_uri: &'a str,
    resource_content: String,
}

/// How the worker proves itself to the resource-service, and whom it trusts there.
#[derive(Debug, Clone, Default)]
pub struct ResourceServiceAccess {
    /// Sent as `x-token` on every request, as Keptn's API gateway expects.
    pub token: Option<Secret>,
    /// A PEM bundle of the CA(s) of an https resource-service: then the only ones trusted.
    pub ca_pem: Option<Vec<u8>>,
}

impl ResourceServiceCharts {
    /// A store talking to the resource-service at `base_url` (e.g.
    /// `http://resource-service:8080`). `max_bytes` caps fetched archives.
    pub fn new(base_url: &str, max_bytes: u64) -> Result<Self, ChartStoreError> {
        Self::with_access(base_url, max_bytes, &ResourceServiceAccess::default())
    }

    /// Like [`new`](Self::new), with a token and a private CA.
    pub fn with_access(
        base_url: &str,
        max_bytes: u64,
        access: &ResourceServiceAccess,
    ) -> Result<Self, ChartStoreError> {
        let config = |reason: String| ChartStoreError::Config { reason };
        let shown = redact_user_info(base_url);
        let mut base = reqwest::Url::parse(base_url)
            .map_err(|err| config(format!("resource-service URL {shown:?}: {err}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(config(format!(
                "resource-service URL {shown:?} must be an http:// or https:// URL"
            )));
        }
        // Paths are appended below the base's own path.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10));
        if let Some(token) = &access.token {
            let mut value =
                reqwest::header::HeaderValue::from_str(token.expose()).map_err(|_| {
                    config("the resource-service token is not a valid HTTP header value".into())
                })?;
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert("x-token", value);
            builder = builder.default_headers(headers);
        }
        if let Some(pem) = &access.ca_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|err| config(format!("--resource-service-ca: {err}")))?;
            if roots.is_empty() {
                return Err(config(
                    "--resource-service-ca holds no PEM certificate".into(),
                ));
            }
            builder = roots
                .into_iter()
                .fold(builder.tls_built_in_root_certs(false), |builder, root| {
                    builder.add_root_certificate(root)
                });
        }
        let client = builder
            .build()
            .map_err(|err| config(format!("cannot build the HTTP client: {err}")))?;
        Ok(Self {
            base,
            client,
            cap: SizeCap::new(max_bytes),
        })
    }

    /// `{base}/v1/project/{p}/stage/{s}/service/{svc}/resource`.
    fn resources_url(&self, at: &ChartLocation) -> Result<reqwest::Url, ChartStoreError> {
        let path = format!(
            "v1/project/{}/stage/{}/service/{}/resource",
            segment(at.project()),
            segment(at.stage()),
            segment(at.service())
        );
        self.base
            .join(&path)
            .map_err(|err| ChartStoreError::Config {
                reason: format!("cannot build the resource-service URL for {at}: {err}"),
            })
    }

    /// The base URL without credentials, for messages.
    fn base_for_humans(&self) -> String {
        let mut base = self.base.clone();
        let _ = base.set_username("");
        let _ = base.set_password(None);
        base.set_query(None);
        base.to_string()
    }

    /// Largest body accepted for a fetch: base64 of the cap plus JSON.
    fn max_body(&self) -> u64 {
        self.cap.max_bytes().div_ceil(3).saturating_mul(4) + JSON_OVERHEAD
    }
}

#[async_trait]
impl ChartStore for ResourceServiceCharts {
    fn size_cap(&self) -> SizeCap {
        self.cap
    }

    /// GETs one resource of the service; `None` on 404. The commit is the one the
    /// resource-service read it at. A body too large for a file within the cap is refused
    /// before it is all read; the decoded file is left to the provided fetches' cap.
    async fn read(&self, file: &ServiceFile, commit: Option<&str>) -> ReadResult {
        let target = file.object_name();
        let mut url = self.resources_url(file.location())?;
        // Appended already encoded: the URI's `/` must stay `%2F`, one path segment.
        url.set_path(&format!("{}/{}", url.path(), segment(file.resource_uri())));
        if let Some(commit) = commit {
            url.query_pairs_mut().append_pair("gitCommitID", commit);
        }
        let mut response = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|err| request_failed(&target, err))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(status_error(&target, status, response).await);
        }
        let body = read_body(&target, &mut response, self.max_body(), self.cap).await?;
        let answer: GetResourceResponse =
            serde_json::from_slice(&body).map_err(|err| ChartStoreError::Invalid {
                target: target.clone(),
                reason: format!("the resource-service answer is not the expected JSON: {err}"),
            })?;
        let content = answer.resource_content.unwrap_or_default();
        let data = base64::engine::general_purpose::STANDARD
            .decode(content.trim())
            .map_err(|err| ChartStoreError::Invalid {
                target: target.clone(),
                reason: format!("resourceContent is not base64: {err}"),
            })?;
        let version = answer
            .metadata
            .and_then(|metadata| metadata.version)
            .filter(|version| !version.is_empty());
        Ok(Some(FetchedFile {
            bytes: data.into(),
            commit: version,
        }))
    }

    async fn write(&self, at: &ChartLocation, archive: &[u8]) -> Result<(), ChartStoreError> {
        let chart = at.chart_file();
        let body = PutResources {
            resources: [PutResource {
                resource_uri: chart.resource_uri(),
                resource_content: base64::engine::general_purpose::STANDARD.encode(archive),
            }],
        };
        let response = self
            .client
            .put(self.resources_url(at)?)
            .json(&body)
            .send()
            .await
            .map_err(|err| request_failed(&at.to_string(), err))?;
        let status = response.status();
        if !status.is_success() {
            return Err(status_error(&at.to_string(), status, response).await);
        }
        Ok(())
    }

    async fn list(
        &self,
        _project: Option<&ProjectName>,
    ) -> Result<Vec<ChartListing>, ChartStoreError> {
        Err(ChartStoreError::Unsupported {
            store: self.describe(),
            operation: "listing charts".into(),
        })
    }

    fn describe(&self) -> String {
        format!("Keptn resource-service at {}", self.base_for_humans())
    }
}

fn segment(text: &str) -> String {
    utf8_percent_encode(text, PATH_SEGMENT).to_string()
}

/// Connection trouble and timeouts pass; a request that cannot even be built does not.
fn request_failed(target: &str, err: reqwest::Error) -> ChartStoreError {
    // reqwest's messages name the URL.
    let reason = redact_user_info(&format!(
        "resource-service request failed: {}",
        error_chain(&err)
    ));
    if err.is_builder() {
        ChartStoreError::Config { reason }
    } else {
        ChartStoreError::Unavailable {
            target: target.to_owned(),
            reason,
        }
    }
}

/// reqwest's top-level message hides the cause ("error sending request"): add the sources.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// 5xx, 408 and 429 are worth retrying; other answers need a person.
async fn status_error(
    target: &str,
    status: StatusCode,
    mut response: reqwest::Response,
) -> ChartStoreError {
    let excerpt = read_excerpt(&mut response).await;
    let reason = if excerpt.is_empty() {
        format!("resource-service answered {status}")
    } else {
        format!("resource-service answered {status}: {excerpt}")
    };
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        ChartStoreError::Unavailable {
            target: target.to_owned(),
            reason,
        }
    } else {
        ChartStoreError::Refused {
            target: target.to_owned(),
            reason,
        }
    }
}

/// The start of an error answer (Keptn sends `{"code":…, "message":…}`), one line.
async fn read_excerpt(response: &mut reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < ERROR_EXCERPT {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(ERROR_EXCERPT)
        .collect();
    text.trim().to_owned()
}

/// Reads the body, refusing it by `Content-Length` first and stopping at `max_body` bytes
/// (the body of a file over `cap`: how much over is unknown).
async fn read_body(
    target: &str,
    response: &mut reqwest::Response,
    max_body: u64,
    cap: SizeCap,
) -> Result<Vec<u8>, ChartStoreError> {
    let too_large = || cap.too_large(&target, None);
    if let Some(length) = response.content_length() {
        if length > max_body {
            return Err(too_large());
        }
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| request_failed(target, err))?
    {
        if body.len() as u64 + chunk.len() as u64 > max_body {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_built_below_the_base() {
        let store = ResourceServiceCharts::new("http://rs:8080/api", 10).unwrap();
        let at = ChartLocation::new("sockshop", "dev", "carts").unwrap();
        assert_eq!(
            store.resources_url(&at).unwrap().as_str(),
            "http://rs:8080/api/v1/project/sockshop/stage/dev/service/carts/resource"
        );
        assert_eq!(segment("helm/carts.tgz"), "helm%2Fcarts.tgz");
        assert!(ResourceServiceCharts::new("ftp://rs", 10).is_err());
        assert!(ResourceServiceCharts::new("not a url", 10).is_err());
    }

    #[test]
    fn description_hides_credentials() {
        let store = ResourceServiceCharts::new("http://user:secret@rs:8080", 10).unwrap();
        assert!(!store.describe().contains("secret"), "{}", store.describe());
        assert!(store.describe().contains("rs:8080"), "{}", store.describe());
    }
}
