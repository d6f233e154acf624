//! Charts in a JetStream Object Store bucket: the embedded default.
//!
//! The worker already depends on NATS, so a bucket there stores charts with no other service to
//! run. Objects are named exactly [`ChartLocation::object_name`]; `helm-service charts push`
//! writes them, the worker reads them and writes back charts whose values an event changed.

use async_nats::jetstream::{self, object_store};
use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::io::AsyncReadExt;

use super::{
    ChartListing, ChartLocation, ChartStore, ChartStoreError, FetchedFile, ProjectName, ReadResult,
    ServiceFile, SizeCap,
};

/// A chart store on a JetStream Object Store bucket.
#[derive(Clone)]
pub struct ObjectStoreCharts {
    bucket: String,
    store: object_store::ObjectStore,
    cap: SizeCap,
}

impl ObjectStoreCharts {
    /// Binds the bucket, creating it when absent (another replica may create it at the same
    /// time: then its bucket is used). `max_bytes` caps fetched archives.
    pub async fn open(
        js: &jetstream::Context,
        bucket: &str,
        max_bytes: u64,
    ) -> Result<Self, ChartStoreError> {
        let target = || format!("bucket {bucket}");
        if bucket.is_empty()
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ChartStoreError::Config {
                reason: format!(
                    "chart bucket name {bucket:?} is invalid: use letters, digits, '-' and '_'"
                ),
            });
        }
        let store = match js.get_object_store(bucket).await {
            Ok(store) => store,
            Err(get_err) => {
                let created = js
                    .create_object_store(object_store::Config {
                        bucket: bucket.to_owned(),
                        description: Some(
                            "helm-service: user Helm charts, <project>/<stage>/<service>/helm/<service>.tgz"
                                .into(),
                        ),
                        storage: jetstream::stream::StorageType::File,
                        ..Default::default()
                    })
                    .await;
                match created {
                    Ok(store) => {
                        tracing::info!(bucket, "created the chart bucket");
                        store
                    }
                    // Lost a creation race, or NATS is away: a second look tells which.
                    Err(create_err) => js.get_object_store(bucket).await.map_err(|_| {
                        ChartStoreError::Unavailable {
                            target: target(),
                            reason: format!(
                                "cannot open ({get_err}) nor create ({create_err}) the bucket"
                            ),
                        }
                    })?,
                }
            }
        };
        Ok(Self {
            bucket: bucket.to_owned(),
            store,
            cap: SizeCap::new(max_bytes),
        })
    }
}

impl ObjectStoreCharts {
    /// Reads one object; `None` when absent. Refused early, before it is read, when its info
    /// or its stream shows it over the cap.
    async fn fetch_object(&self, name: &str) -> Result<Option<Vec<u8>>, ChartStoreError> {
        let unavailable = |err: &dyn std::fmt::Display| ChartStoreError::Unavailable {
            target: name.to_owned(),
            reason: err.to_string(),
        };
        // The size is in the object's info: refuse a huge object before reading a chunk.
        let info = match self.store.info(name).await {
            Ok(info) if info.deleted => return Ok(None),
            Ok(info) => info,
            Err(err) if err.kind() == object_store::InfoErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(unavailable(&err)),
        };
        self.cap.check(&name, info.size as u64)?;
        let object = match self.store.get(name).await {
            Ok(object) => object,
            // Deleted between the two looks.
            Err(err) if err.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(unavailable(&err)),
        };
        // It may also have been replaced by a bigger one: stop one byte past the cap.
        let mut data = Vec::with_capacity(info.size);
        object
            .take(self.cap.read_limit())
            .read_to_end(&mut data)
            .await
            .map_err(|err| unavailable(&err))?;
        self.cap.check_stream(&name, data.len() as u64)?;
        Ok(Some(data))
    }
}

#[async_trait]
impl ChartStore for ObjectStoreCharts {
    fn size_cap(&self) -> SizeCap {
        self.cap
    }

    async fn read(&self, file: &ServiceFile, _commit: Option<&str>) -> ReadResult {
        Ok(self
            .fetch_object(&file.object_name())
            .await?
            .map(FetchedFile::uncommitted))
    }

    async fn write(&self, at: &ChartLocation, archive: &[u8]) -> Result<(), ChartStoreError> {
        let mut reader = archive;
        self.store
            .put(at.object_name().as_str(), &mut reader)
            .await
            .map_err(|err| ChartStoreError::Unavailable {
                target: at.to_string(),
                reason: err.to_string(),
            })?;
        Ok(())
    }

    async fn list(
        &self,
        project: Option<&ProjectName>,
    ) -> Result<Vec<ChartListing>, ChartStoreError> {
        let target = || format!("the charts in bucket {}", self.bucket);
        let unavailable = |err: &dyn std::fmt::Display| ChartStoreError::Unavailable {
            target: target(),
            reason: err.to_string(),
        };
        let mut objects = self.store.list().await.map_err(|err| unavailable(&err))?;
        let mut listings = Vec::new();
        while let Some(info) = objects.next().await {
            let info = info.map_err(|err| unavailable(&err))?;
            let Some(location) = ChartLocation::from_object_name(&info.name) else {
                continue;
            };
            if project.is_some_and(|project| project.as_str() != location.project()) {
                continue;
            }
            let modified = modified_of(&info);
            listings.push(ChartListing {
                location,
                size: info.size as u64,
                digest: info.digest.as_deref().and_then(hex_digest),
                modified,
            });
        }
        listings.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(listings)
    }

    fn describe(&self) -> String {
        format!("JetStream object store bucket {}", self.bucket)
    }
}

/// The object store's digest (`SHA-256=<base64url>`) as `sha256:<hex>`.
fn hex_digest(digest: &str) -> Option<String> {
    let encoded = digest.strip_prefix("SHA-256=")?;
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(encoded)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded))
        .ok()?;
    Some(format!("sha256:{}", hex::encode(raw)))
}

/// The modification time, whichever datetime type async-nats was built with (`time` or
/// `chrono`): both serialize it as RFC 3339.
fn modified_of(info: &object_store::ObjectInfo) -> Option<DateTime<Utc>> {
    let json = serde_json::to_value(info).ok()?;
    let text = json.get("mtime")?.as_str()?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_converted_to_hex() {
        // sha256("") in the object store's format.
        let empty = "SHA-256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=";
        assert_eq!(
            hex_digest(empty).as_deref(),
            Some("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_eq!(hex_digest("MD5=abc"), None);
        assert_eq!(hex_digest("SHA-256=***"), None);
    }
}
