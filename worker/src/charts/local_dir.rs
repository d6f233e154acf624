//! Charts as plain files below a directory: `<root>/<project>/<stage>/<service>/helm/<service>.tgz`.
//!
//! For development, air-gapped installations and charts on a mounted volume. The directory may
//! be shared with other people or processes, so links are never followed: a symlink anywhere on
//! the way from the root to a chart is refused rather than read through (it could point at any
//! file the worker can read). Writes go to a temporary file in the same directory and are
//! renamed into place, so a reader never sees half a chart.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    sha256_digest, ChartListing, ChartLocation, ChartStore, ChartStoreError, FetchedFile,
    ProjectName, ReadResult, ServiceFile, SizeCap,
};

/// A chart store on a local directory.
#[derive(Debug, Clone)]
pub struct LocalDirCharts {
    root: PathBuf,
    cap: SizeCap,
}

impl LocalDirCharts {
    /// A store below `root` (created on the first write). `max_bytes` caps fetched archives.
    pub fn new(root: &Path, max_bytes: u64) -> Self {
        Self {
            root: root.to_path_buf(),
            cap: SizeCap::new(max_bytes),
        }
    }

    /// Reads the file `<root>/<name>` (`name` built from checked names); `None` when absent.
    /// Refused early, before it is read, when its size or its stream is over the cap.
    fn read_blocking(&self, name: &str) -> Result<Option<Vec<u8>>, ChartStoreError> {
        let path = self.root.join(name);
        let io_err = |path: &Path, err| io_error(name, path, err);
        match check_no_links(&self.root, &path, name)? {
            Walk::Missing => return Ok(None),
            Walk::Present => {}
        }
        let meta = fs::symlink_metadata(&path).map_err(|err| io_err(&path, err))?;
        if !meta.is_file() {
            return Err(ChartStoreError::Invalid {
                target: name.to_owned(),
                reason: format!("{} is not a regular file", path.display()),
            });
        }
        self.cap.check(&name, meta.len())?;
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(io_err(&path, err)),
        };
        // The path could have been swapped for a link between the look and the open: the
        // opened file must be the one looked at.
        let opened = file.metadata().map_err(|err| io_err(&path, err))?;
        if !same_file(&meta, &opened) {
            return Err(ChartStoreError::Invalid {
                target: name.to_owned(),
                reason: format!("{} changed while being opened", path.display()),
            });
        }
        let mut data = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.take(self.cap.read_limit())
            .read_to_end(&mut data)
            .map_err(|err| io_err(&path, err))?;
        self.cap.check_stream(&name, data.len() as u64)?;
        Ok(Some(data))
    }

    fn store_blocking(&self, at: &ChartLocation, archive: &[u8]) -> Result<(), ChartStoreError> {
        let name = at.object_name();
        let path = self.root.join(&name);
        let Some(dir) = path.parent() else {
            return Err(ChartStoreError::Config {
                reason: format!("{} has no parent directory", path.display()),
            });
        };
        // Refuse links among the directories that exist already, then create the rest
        // (`create_dir_all` would follow a linked directory).
        check_no_links(&self.root, dir, &name)?;
        fs::create_dir_all(dir).map_err(|err| io_error(&name, dir, err))?;
        check_no_links(&self.root, dir, &name)?;
        let mut temp = tempfile::Builder::new()
            .prefix(".chart-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|err| io_error(&name, dir, err))?;
        temp.write_all(archive)
            .and_then(|()| temp.as_file().sync_all())
            .map_err(|err| io_error(&name, temp.path(), err))?;
        // rename(2) replaces a link at the destination itself, never its target.
        temp.persist(&path)
            .map_err(|err| io_error(&name, &path, err.error))?;
        Ok(())
    }

    fn list_blocking(
        &self,
        project: Option<&ProjectName>,
    ) -> Result<Vec<ChartListing>, ChartStoreError> {
        let target = format!("the charts in {}", self.root.display());
        let mut listings = Vec::new();
        let projects = match project {
            Some(project) => vec![project.as_str().to_owned()],
            None => plain_dirs(&self.root, &target)?,
        };
        for project in projects {
            for stage in plain_dirs(&self.root.join(&project), &target)? {
                for service in plain_dirs(&self.root.join(&project).join(&stage), &target)? {
                    let Ok(location) = ChartLocation::new(&project, &stage, &service) else {
                        continue;
                    };
                    if let Some(listing) = self.listing(location)? {
                        listings.push(listing);
                    }
                }
            }
        }
        listings.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(listings)
    }

    /// The listing of one location, `None` when no (plain) chart file is there.
    fn listing(&self, location: ChartLocation) -> Result<Option<ChartListing>, ChartStoreError> {
        let name = location.object_name();
        let path = self.root.join(&name);
        // Charts reached through a link are skipped, as fetch would refuse them.
        match check_no_links(&self.root, &path, &name) {
            Ok(Walk::Present) => {}
            Ok(Walk::Missing) | Err(ChartStoreError::Refused { .. }) => return Ok(None),
            Err(err) => return Err(err),
        }
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return Ok(None),
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(io_error(&name, &path, err)),
        };
        // Charts are capped and small: hashing them is cheap, and the digest tells whether
        // two stages run the same chart.
        let digest = match self.read_blocking(&name) {
            Ok(Some(archive)) => Some(sha256_digest(&archive)),
            _ => None,
        };
        Ok(Some(ChartListing {
            size: meta.len(),
            digest,
            modified: meta.modified().ok().map(DateTime::<Utc>::from),
            location,
        }))
    }
}

#[async_trait]
impl ChartStore for LocalDirCharts {
    fn size_cap(&self) -> SizeCap {
        self.cap
    }

    async fn read(&self, file: &ServiceFile, _commit: Option<&str>) -> ReadResult {
        let (store, name) = (self.clone(), file.object_name());
        let data = blocking(move || store.read_blocking(&name)).await?;
        Ok(data.map(FetchedFile::uncommitted))
    }

    async fn write(&self, at: &ChartLocation, archive: &[u8]) -> Result<(), ChartStoreError> {
        let (store, at, archive) = (self.clone(), at.clone(), archive.to_vec());
        blocking(move || store.store_blocking(&at, &archive)).await
    }

    async fn list(
        &self,
        project: Option<&ProjectName>,
    ) -> Result<Vec<ChartListing>, ChartStoreError> {
        let (store, project) = (self.clone(), project.cloned());
        blocking(move || store.list_blocking(project.as_ref())).await
    }

    fn describe(&self) -> String {
        format!("local chart directory {}", self.root.display())
    }
}

/// Runs file-system work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ChartStoreError> + Send + 'static,
) -> Result<T, ChartStoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| ChartStoreError::Unavailable {
            target: "local chart directory".into(),
            reason: format!("file-system task failed: {err}"),
        })?
}

enum Walk {
    Present,
    Missing,
}

/// Looks at every path component from `root` (exclusive) down to `path`: none may be a
/// symbolic link. `Missing` when one does not exist (nothing below it can).
fn check_no_links(root: &Path, path: &Path, target: &str) -> Result<Walk, ChartStoreError> {
    let Ok(relative) = path.strip_prefix(root) else {
        return Err(ChartStoreError::Invalid {
            target: target.to_owned(),
            reason: format!("{} is outside {}", path.display(), root.display()),
        });
    };
    let mut current = root.to_path_buf();
    for component in relative.components() {
        current.push(component);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(ChartStoreError::Refused {
                    target: target.to_owned(),
                    reason: format!(
                        "{} is a symbolic link; links in the chart directory are not followed",
                        current.display()
                    ),
                })
            }
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Walk::Missing),
            Err(err) => return Err(io_error(target, &current, err)),
        }
    }
    Ok(Walk::Present)
}

/// Sub-directories (not links) of `dir` with valid Keptn names; none when `dir` is absent.
fn plain_dirs(dir: &Path, target: &str) -> Result<Vec<String>, ChartStoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => {
            return Err(ChartStoreError::Unavailable {
                target: target.to_owned(),
                reason: format!("cannot read {}: {err}", dir.display()),
            })
        }
    };
    let mut names = Vec::new();
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if kind.is_dir() && !kind.is_symlink() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(unix)]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.len() == b.len() && b.is_file()
}

/// Permission problems need a person; anything else (a full disk, a flaky mount) may pass.
fn io_error(target: &str, path: &Path, err: io::Error) -> ChartStoreError {
    let reason = format!("{}: {err}", path.display());
    if err.kind() == io::ErrorKind::PermissionDenied {
        ChartStoreError::Refused {
            target: target.to_owned(),
            reason,
        }
    } else {
        ChartStoreError::Unavailable {
            target: target.to_owned(),
            reason,
        }
    }
}
