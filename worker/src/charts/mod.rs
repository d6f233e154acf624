//! The chart store: where users' Helm charts live and how the worker reads them.
//!
//! Keptn keeps a service's chart as `helm/<service>.tgz` of that service in a stage. Where
//! those bytes physically are depends on the installation (docs/architecture.md §7.2), so the handlers see
//! only [`ChartStore`], with three backends:
//!
//! - [`object_store::ObjectStoreCharts`]: a JetStream Object Store bucket, the embedded default
//!   (no other service needed; `helm-service charts push` fills it);
//! - [`resource_service::ResourceServiceCharts`]: Keptn's resource-service HTTP API, for
//!   installations with a Keptn control plane (and `gitCommitID` pinning);
//! - [`local_dir::LocalDirCharts`]: plain files under a directory (development, air-gapped
//!   setups, a mounted volume).
//!
//! A store moves archive bytes only; what is inside is checked by [`archive::Chart`], because
//! every chart is untrusted. Every read is capped ([`SizeCap`]): by [`ChartStore`]'s provided
//! fetches, whatever the backend, and also by a backend before it reads where it learns the
//! size up front or reads a stream, so a huge object cannot exhaust memory either.
//!
//! Errors say whether trying again later can help ([`ChartStoreError::is_transient`]): a store
//! that is down is a reason to hand the event back, a chart that is broken is a reason to answer
//! it with an error a person can act on.

pub mod archive;
pub mod cli;
pub mod config;
pub mod local_dir;
pub mod object_store;
pub mod resource_service;
pub mod values;

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use contracts::names::{validate_keptn_name, NameKind};
use contracts::validate::Target;

pub use archive::{ArchiveError, ArchiveLimits, Chart};
pub use config::{ChartStoreConfig, ChartStoreKind};
pub use values::deep_merge;

/// Where a service's user chart lives: `helm/<service>.tgz` of the service in a stage.
///
/// The three names are checked Keptn names (`^[a-z][a-z0-9-]*[a-z0-9]$`): the fields are
/// private and every constructor checks them, so a backend may build paths, URLs and object
/// names from any location it is given without checking it again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChartLocation {
    project: String,
    stage: String,
    service: String,
}

impl ChartLocation {
    /// A location from three Keptn names, checked.
    pub fn new(project: &str, stage: &str, service: &str) -> Result<Self, ChartStoreError> {
        [
            (NameKind::Project, project),
            (NameKind::Stage, stage),
            (NameKind::Service, service),
        ]
        .into_iter()
        .try_for_each(|(kind, value)| validate_keptn_name(kind, value))
        .map_err(|err| ChartStoreError::Invalid {
            target: format!("chart location {project:?}/{stage:?}/{service:?}"),
            reason: err.to_string(),
        })?;
        Ok(Self {
            project: project.to_owned(),
            stage: stage.to_owned(),
            service: service.to_owned(),
        })
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    pub fn stage(&self) -> &str {
        &self.stage
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// The chart itself: `helm/<service>.tgz` (Keptn's resource URI; a service name is a
    /// safe path component).
    pub fn chart_file(&self) -> ServiceFile {
        ServiceFile {
            location: self.clone(),
            resource_uri: format!("helm/{}.tgz", self.service),
        }
    }

    /// Another file of the service by its path in the service (`helm/endpoints.yaml`),
    /// checked: relative, components of letters, digits, `.`, `_` and `-` only, no `.`/`..`
    /// components. It becomes part of an object name, a file path and a URL, so nothing else
    /// is let through.
    pub fn file(&self, resource_uri: &str) -> Result<ServiceFile, ChartStoreError> {
        let safe = !resource_uri.is_empty()
            && resource_uri.len() <= 255
            && resource_uri.split('/').all(|component| {
                !component.is_empty()
                    && component != "."
                    && component != ".."
                    && component
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            });
        if !safe {
            return Err(ChartStoreError::Invalid {
                target: format!("a file of {}/{}/{}", self.project, self.stage, self.service),
                reason: format!(
                    "resource path {resource_uri:?} is not a plain relative path (letters, \
                     digits, '.', '_', '-' and '/' only, no '..')"
                ),
            });
        }
        Ok(ServiceFile {
            location: self.clone(),
            resource_uri: resource_uri.to_owned(),
        })
    }

    /// `<project>/<stage>/<service>/helm/<service>.tgz`: the object name in the bucket and
    /// the file path below a local chart directory.
    pub fn object_name(&self) -> String {
        self.chart_file().object_name()
    }

    /// The inverse of [`object_name`](Self::object_name): `None` for any other name (foreign
    /// objects in a shared bucket are ignored, not errors).
    pub fn from_object_name(name: &str) -> Option<Self> {
        let mut parts = name.split('/');
        let (project, stage, service, helm, file) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if parts.next().is_some() || helm != "helm" || file != format!("{service}.tgz") {
            return None;
        }
        Self::new(project, stage, service).ok()
    }
}

/// A validated event target names the same three checked Keptn names.
impl From<&Target> for ChartLocation {
    fn from(target: &Target) -> Self {
        Self {
            project: target.project.clone(),
            stage: target.stage.clone(),
            service: target.service.clone(),
        }
    }
}

impl fmt::Display for ChartLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.object_name())
    }
}

/// One file of a service (its chart, `helm/endpoints.yaml`), at a checked location and with a
/// checked path: built only by [`ChartLocation::chart_file`] and [`ChartLocation::file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFile {
    location: ChartLocation,
    resource_uri: String,
}

impl ServiceFile {
    pub fn location(&self) -> &ChartLocation {
        &self.location
    }

    /// The path inside the service, e.g. `helm/endpoints.yaml` (Keptn's resource URI).
    pub fn resource_uri(&self) -> &str {
        &self.resource_uri
    }

    /// `<project>/<stage>/<service>/<resource_uri>`: the object name in the bucket and the file
    /// path below a local chart directory.
    pub fn object_name(&self) -> String {
        let at = &self.location;
        format!(
            "{}/{}/{}/{}",
            at.project, at.stage, at.service, self.resource_uri
        )
    }
}

impl fmt::Display for ServiceFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.object_name())
    }
}

/// A checked Keptn project name: what [`ChartStore::list`] filters by, so a backend may build
/// a path from it without checking it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectName(String);

impl ProjectName {
    pub fn new(name: &str) -> Result<Self, ChartStoreError> {
        validate_keptn_name(NameKind::Project, name).map_err(|err| ChartStoreError::Invalid {
            target: "chart listing".into(),
            reason: err.to_string(),
        })?;
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A file of a service as read from a store.
#[derive(Debug, Clone)]
pub struct FetchedFile {
    pub bytes: bytes::Bytes,
    /// The configuration-store commit the file was read at, when the backend knows it.
    pub commit: Option<String>,
}

impl FetchedFile {
    /// A file of a backend that keeps no commits (object store, local directory).
    pub fn uncommitted(bytes: Vec<u8>) -> Self {
        FetchedFile {
            bytes: bytes.into(),
            commit: None,
        }
    }
}

/// What [`ChartStore::read`] gives: the file as stored, `None` when it is absent.
pub type ReadResult = Result<Option<FetchedFile>, ChartStoreError>;

/// A chart archive as fetched; not yet checked (see [`Chart::from_archive`]).
#[derive(Debug, Clone)]
pub struct FetchedChart {
    pub archive: bytes::Bytes,
    /// The configuration-store commit the chart was read at, when the backend knows it.
    pub commit: Option<String>,
}

/// One chart in a store, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartListing {
    pub location: ChartLocation,
    /// Archive size in bytes.
    pub size: u64,
    /// `sha256:<hex>` of the archive bytes, when the backend knows it cheaply. Charts pushed
    /// with `helm-service charts push` are canonical, so this equals [`Chart::digest`].
    pub digest: Option<String>,
    pub modified: Option<DateTime<Utc>>,
}

/// Why a chart could not be fetched, stored or listed.
#[derive(Debug, thiserror::Error)]
pub enum ChartStoreError {
    /// The store cannot be reached or answered with a server error: retrying later may work.
    #[error("chart store unavailable for {target}: {reason}")]
    Unavailable { target: String, reason: String },
    /// The request or what came back is not acceptable (bad name, undecodable response).
    #[error("invalid chart data for {target}: {reason}")]
    Invalid { target: String, reason: String },
    /// The archive is larger than the configured cap.
    #[error(
        "{target} is {}, more than the limit of {max} bytes (--max-chart-bytes)",
        size.map_or_else(|| "larger".to_owned(), |size| format!("{size} bytes"))
    )]
    TooLarge {
        target: String,
        size: Option<u64>,
        max: u64,
    },
    /// The store refused the request for good (permissions, a missing service, a 4xx answer).
    #[error("chart store refused {target}: {reason}")]
    Refused { target: String, reason: String },
    /// The backend cannot do this at all.
    #[error("{operation} is not supported by the {store}")]
    Unsupported { store: String, operation: String },
    /// The store is configured wrongly (missing directory, bad URL, bad bucket name).
    #[error("chart store misconfigured: {reason}")]
    Config { reason: String },
}

impl ChartStoreError {
    /// Whether the same request may succeed later without anyone changing anything: the
    /// caller hands the event back instead of answering it with an error.
    pub fn is_transient(&self) -> bool {
        matches!(self, ChartStoreError::Unavailable { .. })
    }
}

/// Where user charts are kept. Implementations move archive bytes; they do not inspect them.
#[async_trait]
pub trait ChartStore: Send + Sync + 'static {
    /// The largest file this store reads or keeps (`--max-chart-bytes`).
    fn size_cap(&self) -> SizeCap;

    /// One file of a service, as stored: `Ok(None)` when it is absent. `commit` pins a
    /// configuration-store commit (resource-service only; other backends ignore it). The one
    /// way a backend reads; callers use [`fetch`](Self::fetch) and
    /// [`fetch_file`](Self::fetch_file), which refuse a file over the [`size_cap`](Self::size_cap)
    /// whatever the backend returned. A backend that learns the size before reading, or reads
    /// a stream, refuses earlier through the same [`SizeCap`], so it never holds a huge file.
    async fn read(&self, file: &ServiceFile, commit: Option<&str>) -> ReadResult;

    /// The chart at that location; `Ok(None)` when there is none. `commit` as for
    /// [`read`](Self::read).
    async fn fetch(
        &self,
        at: &ChartLocation,
        commit: Option<&str>,
    ) -> Result<Option<FetchedChart>, ChartStoreError> {
        Ok(read_capped(self, &at.chart_file(), commit)
            .await?
            .map(|fetched| FetchedChart {
                archive: fetched.bytes,
                commit: fetched.commit,
            }))
    }

    /// Another file of a service (e.g. `helm/endpoints.yaml`, which tells user-managed
    /// deployments' URIs; see [`ChartLocation::file`]); `Ok(None)` when it is absent.
    async fn fetch_file(
        &self,
        file: &ServiceFile,
        commit: Option<&str>,
    ) -> Result<Option<bytes::Bytes>, ChartStoreError> {
        Ok(read_capped(self, file, commit)
            .await?
            .map(|fetched| fetched.bytes))
    }

    /// Writes (creates or replaces) the archive at that location, as given: the one way a
    /// backend writes; callers use [`store`](Self::store), which refuses an archive over the
    /// [`size_cap`](Self::size_cap) first.
    async fn write(&self, at: &ChartLocation, archive: &[u8]) -> Result<(), ChartStoreError>;

    /// Stores (creates or replaces) the archive at that location. An archive over the cap is
    /// refused: what a store keeps, it must be able to fetch.
    async fn store(&self, at: &ChartLocation, archive: &[u8]) -> Result<(), ChartStoreError> {
        self.size_cap().check(at, archive.len() as u64)?;
        self.write(at, archive).await
    }

    /// The charts in the store, sorted by location; only those of `project` when given.
    async fn list(
        &self,
        project: Option<&ProjectName>,
    ) -> Result<Vec<ChartListing>, ChartStoreError>;

    /// For logs, e.g. "JetStream object store bucket helm-service-charts"; never credentials.
    fn describe(&self) -> String;
}

/// A backend's read with the cap applied: the one place a file over it is refused, whatever
/// the backend checked on its own.
async fn read_capped<S: ChartStore + ?Sized>(
    store: &S,
    file: &ServiceFile,
    commit: Option<&str>,
) -> ReadResult {
    let fetched = store.read(file, commit).await?;
    if let Some(fetched) = &fetched {
        store.size_cap().check(file, fetched.bytes.len() as u64)?;
    }
    Ok(fetched)
}

/// The largest file a chart store reads or keeps, in bytes (`--max-chart-bytes`).
///
/// [`ChartStore::fetch`] and [`ChartStore::fetch_file`] apply it to whatever a backend read;
/// a backend applies it besides before reading where it can (a size it is told up front, a
/// stream it stops at [`read_limit`](Self::read_limit)), so that a huge file is refused
/// without being held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeCap {
    max_bytes: u64,
}

impl SizeCap {
    pub fn new(max_bytes: u64) -> Self {
        Self { max_bytes }
    }

    pub fn max_bytes(self) -> u64 {
        self.max_bytes
    }

    /// Refuses a file of a known `size` over the cap.
    pub fn check(self, target: &dyn fmt::Display, size: u64) -> Result<(), ChartStoreError> {
        if size > self.max_bytes {
            return Err(self.too_large(target, Some(size)));
        }
        Ok(())
    }

    /// How many bytes a streaming read takes at most: one past the cap, so a read that got
    /// this many knows the file is over the cap without reading the rest.
    pub fn read_limit(self) -> u64 {
        self.max_bytes.saturating_add(1)
    }

    /// Refuses a read that stopped at [`read_limit`](Self::read_limit): the file is over the
    /// cap, by how much is unknown.
    pub fn check_stream(self, target: &dyn fmt::Display, read: u64) -> Result<(), ChartStoreError> {
        if read > self.max_bytes {
            return Err(self.too_large(target, None));
        }
        Ok(())
    }

    /// The error for a file over the cap; `size` when it is known.
    pub fn too_large(self, target: &dyn fmt::Display, size: Option<u64>) -> ChartStoreError {
        ChartStoreError::TooLarge {
            target: target.to_string(),
            size,
            max: self.max_bytes,
        }
    }
}

/// `sha256:<hex>` of some bytes, the digest format used throughout.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_name_round_trips() {
        let location = ChartLocation::new("sockshop", "dev", "carts").unwrap();
        assert_eq!(location.object_name(), "sockshop/dev/carts/helm/carts.tgz");
        assert_eq!(location.to_string(), "sockshop/dev/carts/helm/carts.tgz");
        assert_eq!(
            ChartLocation::from_object_name(&location.object_name()),
            Some(location)
        );
        for foreign in [
            "sockshop/dev/carts/helm/other.tgz",
            "sockshop/dev/carts/helm/carts.tgz/x",
            "sockshop/dev/carts/chart/carts.tgz",
            "Sockshop/dev/carts/helm/carts.tgz",
            "sockshop/dev",
            "",
        ] {
            assert_eq!(ChartLocation::from_object_name(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn resource_uris_are_checked() {
        let at = ChartLocation::new("sockshop", "dev", "carts").unwrap();
        for good in ["helm/endpoints.yaml", "helm/carts.tgz", "a", "a/b_c-d.e"] {
            assert!(at.file(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "helm/../x",
            "..",
            "./a",
            "a//b",
            "a/",
            "a\\b",
            "a b",
            "a%2F",
            "helm/é",
        ] {
            assert!(at.file(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            at.file("helm/endpoints.yaml").unwrap().object_name(),
            "sockshop/dev/carts/helm/endpoints.yaml"
        );
        assert_eq!(at.chart_file(), at.file("helm/carts.tgz").unwrap());
    }

    /// A backend that checks no size at all.
    struct Careless(usize);

    #[async_trait]
    impl ChartStore for Careless {
        fn size_cap(&self) -> SizeCap {
            SizeCap::new(10)
        }
        async fn read(&self, _file: &ServiceFile, _commit: Option<&str>) -> ReadResult {
            Ok(Some(FetchedFile::uncommitted(vec![0; self.0])))
        }
        async fn write(&self, _at: &ChartLocation, _archive: &[u8]) -> Result<(), ChartStoreError> {
            unreachable!()
        }
        async fn list(
            &self,
            _project: Option<&ProjectName>,
        ) -> Result<Vec<ChartListing>, ChartStoreError> {
            unreachable!()
        }
        fn describe(&self) -> String {
            "careless".into()
        }
    }

    /// The error for 11 bytes against [`Careless`]'s cap of 10.
    #[track_caller]
    fn assert_eleven_of_ten(err: &ChartStoreError) {
        assert!(
            matches!(
                err,
                ChartStoreError::TooLarge {
                    size: Some(11),
                    max: 10,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn fetches_are_capped_whatever_the_backend_read() {
        let at = ChartLocation::new("sockshop", "dev", "carts").unwrap();
        let err = Careless(11).fetch(&at, None).await.unwrap_err();
        assert_eleven_of_ten(&err);
        assert_eq!(
            err.to_string(),
            "sockshop/dev/carts/helm/carts.tgz is 11 bytes, more than the limit of 10 bytes \
             (--max-chart-bytes)"
        );
        let file = at.file("helm/endpoints.yaml").unwrap();
        let err = Careless(11).fetch_file(&file, None).await.unwrap_err();
        assert!(matches!(err, ChartStoreError::TooLarge { .. }), "{err:?}");
        assert_eq!(
            Careless(10)
                .fetch(&at, None)
                .await
                .unwrap()
                .unwrap()
                .archive
                .len(),
            10
        );
        assert_eq!(
            Careless(10)
                .fetch_file(&file, None)
                .await
                .unwrap()
                .unwrap()
                .len(),
            10
        );
    }

    #[tokio::test]
    async fn stores_are_capped_before_the_backend_writes() {
        let at = ChartLocation::new("sockshop", "dev", "carts").unwrap();
        // Careless::write panics: the cap refuses the archive before it.
        let err = Careless(0).store(&at, &[0; 11]).await.unwrap_err();
        assert_eleven_of_ten(&err);
    }

    #[test]
    fn size_cap_refuses_known_sizes_and_streams_past_it() {
        let cap = SizeCap::new(10);
        assert!(cap.check(&"x", 10).is_ok());
        assert!(matches!(
            cap.check(&"x", 11),
            Err(ChartStoreError::TooLarge { size: Some(11), .. })
        ));
        assert_eq!(cap.read_limit(), 11);
        assert!(cap.check_stream(&"x", 10).is_ok());
        let err = cap.check_stream(&"x", 11).unwrap_err();
        assert!(
            matches!(err, ChartStoreError::TooLarge { size: None, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "x is larger, more than the limit of 10 bytes (--max-chart-bytes)"
        );
    }

    #[test]
    fn project_filters_are_checked() {
        assert_eq!(ProjectName::new("sockshop").unwrap().as_str(), "sockshop");
        let err = ProjectName::new("../x").unwrap_err();
        assert!(matches!(err, ChartStoreError::Invalid { .. }), "{err:?}");
        assert!(err.to_string().contains("project name \"../x\""), "{err}");
    }

    #[test]
    fn bad_names_are_refused() {
        let err = ChartLocation::new("sockshop", "../dev", "carts").unwrap_err();
        assert!(matches!(err, ChartStoreError::Invalid { .. }), "{err:?}");
        assert!(err.to_string().contains("stage name \"../dev\""), "{err}");
        assert!(!err.is_transient());
    }
}
