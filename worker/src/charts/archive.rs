//! Chart archives: reading untrusted ones safely, writing canonical ones.
//!
//! A chart comes from whoever can write to the configuration store, and the worker unpacks it
//! next to its own files and hands it to Helm. So every archive is treated as hostile: sizes are
//! capped *while* inflating (a gzip bomb is stopped after the cap, not after it filled memory),
//! and anything that could write outside the chart directory or surprise Helm — absolute paths,
//! `..`, links, devices, fifos, a second top-level directory — is refused with an error naming
//! the entry, so the person who uploaded it can fix it.
//!
//! Charts are kept in memory ([`Chart`]): they are small (capped), and an in-memory chart can be
//! changed (merged values) and written back as a *canonical* archive — sorted entries, zero
//! mtimes, fixed modes and owners — so the same content always gives the same bytes and the same
//! digest, whoever packed it and whenever.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

/// The chart's metadata file, required at the top of the chart directory.
pub const CHART_YAML: &str = "Chart.yaml";

/// The chart's default values, optional.
pub const VALUES_YAML: &str = "values.yaml";

/// The two magic bytes every gzip stream starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Mode of every file in a canonical archive: what `helm package` gives a plain file.
const CANONICAL_MODE: u32 = 0o644;

/// Size caps applied to every chart read, from an archive or a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Largest archive accepted as stored (gzip'd bytes).
    pub max_compressed: u64,
    /// Largest total of the inflated tar stream (headers and contents), counted while
    /// inflating.
    pub max_uncompressed: u64,
    /// Most tar entries (files, directories, extension headers) accepted.
    pub max_entries: usize,
}

impl Default for ArchiveLimits {
    /// 10 MiB compressed, 50 MiB unpacked, 5000 entries: far above real charts (typically a
    /// few KiB), far below what would hurt a worker with a few hundred MiB of memory.
    fn default() -> Self {
        Self {
            max_compressed: 10 * 1024 * 1024,
            max_uncompressed: 50 * 1024 * 1024,
            max_entries: 5000,
        }
    }
}

/// Why a chart was refused. Every message names the offending entry (or file) where there is
/// one.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("chart archive is {size} bytes, more than the limit of {max} bytes")]
    CompressedTooLarge { size: u64, max: u64 },
    #[error(
        "chart unpacks to more than the limit of {max} bytes (stopped at entry {entry:?}); \
         is it a gzip bomb?"
    )]
    UncompressedTooLarge { max: u64, entry: String },
    #[error("chart has more than the limit of {max} entries (stopped at entry {entry:?})")]
    TooManyEntries { max: usize, entry: String },
    #[error("chart entry {entry:?} has an absolute path; entries must be relative")]
    AbsolutePath { entry: String },
    #[error(
        "chart entry {entry:?} contains a \"..\" component; entries must stay inside the chart"
    )]
    ParentDir { entry: String },
    #[error("chart entry {entry:?} has an unsafe name: {reason}")]
    UnsafePath { entry: String, reason: &'static str },
    #[error("chart entry {entry:?} is a symbolic link (to {target:?}); links are not allowed")]
    Symlink { entry: String, target: String },
    #[error("chart entry {entry:?} is a hard link (to {target:?}); links are not allowed")]
    Hardlink { entry: String, target: String },
    #[error("chart entry {entry:?} is a device file; only files and directories are allowed")]
    Device { entry: String },
    #[error(
        "chart entry {entry:?} is a named pipe (fifo); only files and directories are allowed"
    )]
    Fifo { entry: String },
    #[error(
        "chart entry {entry:?} has unsupported type {kind}; only files and directories are allowed"
    )]
    UnsupportedEntry { entry: String, kind: String },
    #[error(
        "chart has more than one top-level directory ({first:?} and entry {entry:?}); a chart \
         archive holds exactly one directory with Chart.yaml in it"
    )]
    MultipleTopLevel { first: String, entry: String },
    #[error(
        "chart entry {entry:?} is not inside a directory; a chart archive holds exactly one \
         directory with Chart.yaml in it"
    )]
    NotInDirectory { entry: String },
    #[error("chart entry {entry:?} appears more than once")]
    Duplicate { entry: String },
    #[error("chart entry {entry:?} is a file but also used as a directory")]
    Conflict { entry: String },
    #[error("chart archive is empty")]
    Empty,
    #[error("chart has no {CHART_YAML} in its top-level directory {top:?}")]
    MissingChartYaml { top: String },
    #[error("{top}/{CHART_YAML} is invalid: {reason}")]
    InvalidChartYaml { top: String, reason: String },
    #[error("{top}/{VALUES_YAML} is invalid: {reason}")]
    InvalidValues { top: String, reason: String },
    #[error("chart archive is not gzip-compressed (a chart is a .tgz as made by `helm package`)")]
    NotGzip,
    #[error("chart archive is corrupt{}: {reason}", at_entry(.entry))]
    Corrupt {
        entry: Option<String>,
        reason: String,
    },
    #[error("cannot read chart file {}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
}

fn at_entry(entry: &Option<String>) -> String {
    match entry {
        Some(entry) => format!(" at entry {entry:?}"),
        None => String::new(),
    }
}

/// A chart held in memory: its top-level directory name and its files.
///
/// Invariants, upheld by every constructor: the top-level name is one safe path component,
/// every file path is a canonical relative path (`a/b/c`, no `.`/`..`/empty components), no
/// file path is also a directory of another, `Chart.yaml` exists and names the chart.
#[derive(Clone, PartialEq, Eq)]
pub struct Chart {
    top: String,
    files: BTreeMap<String, Vec<u8>>,
    name: String,
    version: String,
}

impl fmt::Debug for Chart {
    /// Names and sizes only: chart contents would flood logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chart")
            .field("top", &self.top)
            .field("name", &self.name)
            .field("version", &self.version)
            .field(
                "files",
                &self
                    .files
                    .iter()
                    .map(|(path, data)| (path.as_str(), data.len()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Chart {
    /// Reads a gzip'd tar (as `helm package` makes: one top-level directory holding
    /// `Chart.yaml`), refusing anything unsafe or over `limits`.
    pub fn from_archive(bytes: &[u8], limits: &ArchiveLimits) -> Result<Chart, ArchiveError> {
        let size = bytes.len() as u64;
        if size > limits.max_compressed {
            return Err(ArchiveError::CompressedTooLarge {
                size,
                max: limits.max_compressed,
            });
        }
        if !bytes.starts_with(&GZIP_MAGIC) {
            return Err(ArchiveError::NotGzip);
        }
        let inflated = Cell::new(0u64);
        let tripped = Cell::new(false);
        let reader = CappedReader {
            inner: GzDecoder::new(bytes),
            count: &inflated,
            tripped: &tripped,
            max: limits.max_uncompressed,
        };
        let mut archive = tar::Archive::new(reader);
        // The entry being read, for messages; `None` before the first one.
        let mut current: Option<String> = None;
        // An I/O error from the tar reader is either our cap (the reader says so) or
        // corrupt data.
        let fail = |err: io::Error, current: &Option<String>| {
            if tripped.get() {
                ArchiveError::UncompressedTooLarge {
                    max: limits.max_uncompressed,
                    entry: current.clone().unwrap_or_else(|| "(first header)".into()),
                }
            } else {
                ArchiveError::Corrupt {
                    entry: current.clone(),
                    reason: err.to_string(),
                }
            }
        };
        let mut collector = Collector::new(limits);
        let entries = archive.entries().map_err(|err| fail(err, &current))?;
        for entry in entries {
            let mut entry = entry.map_err(|err| fail(err, &current))?;
            let name = match String::from_utf8(entry.path_bytes().into_owned()) {
                Ok(name) => name,
                Err(err) => {
                    return Err(ArchiveError::UnsafePath {
                        entry: String::from_utf8_lossy(err.as_bytes()).into_owned(),
                        reason: "the name is not valid UTF-8",
                    })
                }
            };
            current = Some(name.clone());
            collector.count(&name)?;
            let kind = entry.header().entry_type();
            let link_target = || {
                entry
                    .link_name_bytes()
                    .map(|target| String::from_utf8_lossy(&target).into_owned())
                    .unwrap_or_default()
            };
            match kind {
                EntryType::Regular | EntryType::Continuous => {
                    let relative = collector.file_path(&name)?;
                    let size = entry.size();
                    collector.reserve(&name, size)?;
                    let mut data = Vec::new();
                    (&mut entry)
                        .take(size)
                        .read_to_end(&mut data)
                        .map_err(|err| fail(err, &current))?;
                    collector.add_file(&name, relative, data)?;
                }
                EntryType::Directory => collector.add_dir(&name)?,
                // `git archive` puts a global PAX header (the commit id) first; it
                // describes, it does not create anything.
                EntryType::XGlobalHeader => {}
                EntryType::Symlink => {
                    return Err(ArchiveError::Symlink {
                        target: link_target(),
                        entry: name,
                    })
                }
                EntryType::Link => {
                    return Err(ArchiveError::Hardlink {
                        target: link_target(),
                        entry: name,
                    })
                }
                EntryType::Char | EntryType::Block => {
                    return Err(ArchiveError::Device { entry: name })
                }
                EntryType::Fifo => return Err(ArchiveError::Fifo { entry: name }),
                other => {
                    return Err(ArchiveError::UnsupportedEntry {
                        entry: name,
                        kind: format!("{other:?}"),
                    })
                }
            }
        }
        collector.finish()
    }

    /// Reads a chart directory (for `helm-service charts push`). The top-level name is the
    /// chart's name from `Chart.yaml`, as `helm package` does. Symbolic links, devices, fifos
    /// and sockets are refused; every file is included (`.helmignore` is not applied).
    pub fn from_dir(path: &Path, limits: &ArchiveLimits) -> Result<Chart, ArchiveError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ArchiveError::Io { path, source }
        };
        let mut files = BTreeMap::new();
        let mut entries = 0usize;
        let mut unpacked = 0u64;
        // Directories still to read, as (absolute path, relative name).
        let mut pending = vec![(path.to_path_buf(), String::new())];
        while let Some((dir, relative_dir)) = pending.pop() {
            let mut children = fs::read_dir(&dir)
                .map_err(io_err(&dir))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(io_err(&dir))?;
            children.sort_by_key(|child| child.file_name());
            for child in children {
                let child_path = child.path();
                let Some(file_name) = child.file_name().to_str().map(str::to_owned) else {
                    return Err(ArchiveError::UnsafePath {
                        entry: child_path.display().to_string(),
                        reason: "the name is not valid UTF-8",
                    });
                };
                let relative = if relative_dir.is_empty() {
                    file_name
                } else {
                    format!("{relative_dir}/{file_name}")
                };
                entries += 1;
                if entries > limits.max_entries {
                    return Err(ArchiveError::TooManyEntries {
                        max: limits.max_entries,
                        entry: relative,
                    });
                }
                // Never follow a link: inspect the entry itself.
                let meta = fs::symlink_metadata(&child_path).map_err(io_err(&child_path))?;
                let kind = meta.file_type();
                if kind.is_symlink() {
                    let target = fs::read_link(&child_path)
                        .map(|target| target.display().to_string())
                        .unwrap_or_default();
                    return Err(ArchiveError::Symlink {
                        entry: relative,
                        target,
                    });
                }
                if kind.is_dir() {
                    pending.push((child_path, relative));
                    continue;
                }
                if !kind.is_file() {
                    return Err(special_file_error(relative, &kind));
                }
                let remaining = limits.max_uncompressed.saturating_sub(unpacked);
                if meta.len() > remaining {
                    return Err(ArchiveError::UncompressedTooLarge {
                        max: limits.max_uncompressed,
                        entry: relative,
                    });
                }
                let mut data = Vec::new();
                // The file may grow between stat and read: read at most one byte more
                // than the budget to notice.
                fs::File::open(&child_path)
                    .and_then(|file| file.take(remaining + 1).read_to_end(&mut data))
                    .map_err(io_err(&child_path))?;
                unpacked += data.len() as u64;
                if unpacked > limits.max_uncompressed {
                    return Err(ArchiveError::UncompressedTooLarge {
                        max: limits.max_uncompressed,
                        entry: relative,
                    });
                }
                files.insert(relative, data);
            }
        }
        let display = path.display().to_string();
        let Some(chart_yaml) = files.get(CHART_YAML) else {
            return Err(ArchiveError::MissingChartYaml { top: display });
        };
        let (name, _) = parse_chart_yaml(&display, chart_yaml)?;
        if let Err(reason) = check_component(&name) {
            return Err(ArchiveError::InvalidChartYaml {
                top: display,
                reason: format!("the chart name {name:?} cannot be a directory name: {reason}"),
            });
        }
        Chart::from_files(&name, files)
    }

    /// Builds a chart from files given by relative path (e.g. a chart the worker generates),
    /// with the same checks as an archive's entries: each path canonical and relative, a
    /// `Chart.yaml` naming the chart.
    pub fn from_files(top: &str, files: BTreeMap<String, Vec<u8>>) -> Result<Chart, ArchiveError> {
        if let Err(reason) = check_component(top) {
            return Err(ArchiveError::UnsafePath {
                entry: top.to_owned(),
                reason,
            });
        }
        for path in files.keys() {
            let entry = format!("{top}/{path}");
            let components = split_entry(&entry)?;
            // Non-canonical spellings (`a//b`, `./a`, trailing `/`) would make two keys
            // name one file.
            if components.len() < 2 || components[1..].join("/") != *path {
                return Err(ArchiveError::UnsafePath {
                    entry,
                    reason: "the path is not in canonical form (a/b/c)",
                });
            }
        }
        finish_chart(top.to_owned(), files, &BTreeSet::new())
    }

    /// The chart's name from `Chart.yaml`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The chart's version from `Chart.yaml` (empty when it has none).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// All files, by path relative to the top-level directory, sorted.
    pub fn files(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.files
    }

    /// The chart's `values.yaml` as JSON: an empty object when there is none (or it is empty).
    /// Anything but a mapping at the top is an error, as it is for Helm.
    pub fn values(&self) -> Result<serde_json::Value, ArchiveError> {
        let invalid = |reason: String| ArchiveError::InvalidValues {
            top: self.top.clone(),
            reason,
        };
        let Some(bytes) = self.files.get(VALUES_YAML) else {
            return Ok(serde_json::Value::Object(Default::default()));
        };
        let value: serde_json::Value =
            serde_yaml_ng::from_slice(bytes).map_err(|err| invalid(err.to_string()))?;
        match value {
            serde_json::Value::Null => Ok(serde_json::Value::Object(Default::default())),
            serde_json::Value::Object(_) => Ok(value),
            other => Err(invalid(format!(
                "the top level must be a mapping of keys to values, not {}",
                json_kind(&other)
            ))),
        }
    }

    /// A copy of this chart whose `values.yaml` is `values`, written as YAML.
    pub fn with_values(&self, values: &serde_json::Value) -> Chart {
        // YAML is what people expect to read; JSON is valid YAML, so it is a safe
        // fallback should the YAML writer ever refuse a value.
        let text = serde_yaml_ng::to_string(values).unwrap_or_else(|_| values.to_string());
        let mut chart = self.clone();
        // A directory named values.yaml would now clash with the file Helm reads.
        let below = format!("{VALUES_YAML}/");
        chart.files.retain(|path, _| !path.starts_with(&below));
        chart
            .files
            .insert(VALUES_YAML.to_owned(), text.into_bytes());
        chart
    }

    /// The canonical archive: gzip'd tar of the files under the top-level directory, sorted,
    /// each with mtime 0, mode 0644, uid/gid 0 and no owner names, no directory entries. The
    /// same chart content always gives the same bytes.
    pub fn to_archive(&self) -> Vec<u8> {
        // Paths were validated on construction and the sink is memory: writing cannot fail.
        self.write_archive()
            .expect("writing a validated chart into memory cannot fail")
    }

    fn write_archive(&self) -> io::Result<Vec<u8>> {
        let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
        for (path, data) in &self.files {
            let mut header = Header::new_gnu();
            header.set_entry_type(EntryType::Regular);
            header.set_mode(CANONICAL_MODE);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_size(data.len() as u64);
            builder.append_data(&mut header, format!("{}/{path}", self.top), data.as_slice())?;
        }
        builder.into_inner()?.finish()
    }

    /// `sha256:<hex>` of the canonical archive: identifies the chart content.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(self.to_archive())))
    }

    /// Unpacks the chart into `dir/<top-level name>` and returns that path (what `helm
    /// upgrade` takes). Files are created new: nothing existing is overwritten or followed, so
    /// `dir` should be a fresh (temporary) directory.
    pub fn write_to(&self, dir: &Path) -> Result<PathBuf, io::Error> {
        let root = dir.join(&self.top);
        fs::create_dir_all(&root)?;
        for (path, data) in &self.files {
            let target = root.join(path);
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)?;
            }
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)?;
            file.write_all(data)?;
        }
        Ok(root)
    }
}

/// Counts the bytes coming out of the decompressor and fails once they pass `max`, so inflating
/// stops at the cap. Count and verdict live outside (`Cell`s) so the caller can tell this
/// failure from corrupt data after the tar reader wrapped the error.
struct CappedReader<'a, R> {
    inner: R,
    count: &'a Cell<u64>,
    tripped: &'a Cell<bool>,
    max: u64,
}

impl<R: Read> Read for CappedReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.count.get() > self.max {
            self.tripped.set(true);
            return Err(io::Error::other("chart size limit reached"));
        }
        // Never ask for more than one byte past the cap.
        let room = self.max + 1 - self.count.get();
        let len = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let read = self.inner.read(&mut buf[..len])?;
        self.count.set(self.count.get() + read as u64);
        if self.count.get() > self.max {
            self.tripped.set(true);
            return Err(io::Error::other("chart size limit reached"));
        }
        Ok(read)
    }
}

/// Gathers an archive's entries and checks their layout.
struct Collector<'a> {
    limits: &'a ArchiveLimits,
    entries: usize,
    unpacked: u64,
    top: Option<String>,
    files: BTreeMap<String, Vec<u8>>,
    dirs: BTreeSet<String>,
}

impl<'a> Collector<'a> {
    fn new(limits: &'a ArchiveLimits) -> Self {
        Self {
            limits,
            entries: 0,
            unpacked: 0,
            top: None,
            files: BTreeMap::new(),
            dirs: BTreeSet::new(),
        }
    }

    fn count(&mut self, entry: &str) -> Result<(), ArchiveError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                max: self.limits.max_entries,
                entry: entry.to_owned(),
            });
        }
        Ok(())
    }

    /// Refuses a file whose declared size alone passes the cap, before reading it.
    fn reserve(&mut self, entry: &str, size: u64) -> Result<(), ArchiveError> {
        match self.unpacked.checked_add(size) {
            Some(total) if total <= self.limits.max_uncompressed => {
                self.unpacked = total;
                Ok(())
            }
            _ => Err(ArchiveError::UncompressedTooLarge {
                max: self.limits.max_uncompressed,
                entry: entry.to_owned(),
            }),
        }
    }

    /// Checks the entry's path and the single top-level directory; returns the path below
    /// it (`None` for the top-level directory itself or a `./` entry).
    fn place(&mut self, entry: &str) -> Result<Option<String>, ArchiveError> {
        let components = split_entry(entry)?;
        let Some((top, rest)) = components.split_first() else {
            return Ok(None);
        };
        match &self.top {
            None => self.top = Some((*top).to_owned()),
            Some(first) if first != top => {
                return Err(ArchiveError::MultipleTopLevel {
                    first: first.clone(),
                    entry: entry.to_owned(),
                })
            }
            Some(_) => {}
        }
        Ok((!rest.is_empty()).then(|| rest.join("/")))
    }

    fn file_path(&mut self, entry: &str) -> Result<String, ArchiveError> {
        self.place(entry)?
            .ok_or_else(|| ArchiveError::NotInDirectory {
                entry: entry.to_owned(),
            })
    }

    fn add_file(
        &mut self,
        entry: &str,
        relative: String,
        data: Vec<u8>,
    ) -> Result<(), ArchiveError> {
        if self.files.insert(relative, data).is_some() {
            return Err(ArchiveError::Duplicate {
                entry: entry.to_owned(),
            });
        }
        Ok(())
    }

    fn add_dir(&mut self, entry: &str) -> Result<(), ArchiveError> {
        if let Some(relative) = self.place(entry)? {
            self.dirs.insert(relative);
        }
        Ok(())
    }

    fn finish(self) -> Result<Chart, ArchiveError> {
        let Some(top) = self.top else {
            return Err(ArchiveError::Empty);
        };
        finish_chart(top, self.files, &self.dirs)
    }
}

/// The checks that need the whole chart: no path both file and directory, `Chart.yaml` there
/// and readable.
fn finish_chart(
    top: String,
    files: BTreeMap<String, Vec<u8>>,
    dirs: &BTreeSet<String>,
) -> Result<Chart, ArchiveError> {
    for path in files.keys() {
        let below = format!("{path}/");
        let used_as_dir = dirs.contains(path)
            || files
                .range(below.clone()..)
                .next()
                .is_some_and(|(next, _)| next.starts_with(&below));
        if used_as_dir {
            return Err(ArchiveError::Conflict {
                entry: format!("{top}/{path}"),
            });
        }
    }
    let Some(chart_yaml) = files.get(CHART_YAML) else {
        return Err(ArchiveError::MissingChartYaml { top });
    };
    let (name, version) = parse_chart_yaml(&top, chart_yaml)?;
    Ok(Chart {
        top,
        files,
        name,
        version,
    })
}

/// Name and version from `Chart.yaml`. A name is required (Helm refuses a chart without one);
/// a version is kept as text, numbers included, since YAML reads `version: 1.0` as a number.
fn parse_chart_yaml(top: &str, bytes: &[u8]) -> Result<(String, String), ArchiveError> {
    let invalid = |reason: String| ArchiveError::InvalidChartYaml {
        top: top.to_owned(),
        reason,
    };
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_slice(bytes).map_err(|err| invalid(err.to_string()))?;
    if !value.is_mapping() {
        return Err(invalid("the top level must be a mapping".into()));
    }
    let text = |key: &str| match value.get(key) {
        Some(serde_yaml_ng::Value::String(text)) => Some(text.clone()),
        Some(serde_yaml_ng::Value::Number(number)) => Some(number.to_string()),
        _ => None,
    };
    let name = text("name")
        .filter(|name| !name.is_empty())
        .ok_or_else(|| invalid("it has no name (a chart needs `name: <chart name>`)".into()))?;
    Ok((name, text("version").unwrap_or_default()))
}

/// Splits an entry name into its components, refusing anything that could leave the chart
/// directory. `.` and empty components (`a//b`, trailing `/`) are dropped.
fn split_entry(entry: &str) -> Result<Vec<&str>, ArchiveError> {
    let unsafe_path = |reason| ArchiveError::UnsafePath {
        entry: entry.to_owned(),
        reason,
    };
    if entry.contains('\0') {
        return Err(unsafe_path("the name contains a NUL byte"));
    }
    // On Windows `\` separates paths: `a\..\..\x` would escape there.
    if entry.contains('\\') {
        return Err(unsafe_path("the name contains a backslash"));
    }
    if entry.starts_with('/') {
        return Err(ArchiveError::AbsolutePath {
            entry: entry.to_owned(),
        });
    }
    let mut components = Vec::new();
    for component in entry.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                return Err(ArchiveError::ParentDir {
                    entry: entry.to_owned(),
                })
            }
            other => components.push(other),
        }
    }
    Ok(components)
}

/// Whether `name` can be used as one directory name.
fn check_component(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name == "." || name == ".." {
        return Err("it must be a plain name");
    }
    if name.contains(['/', '\\', '\0']) {
        return Err("it must not contain '/', '\\' or NUL");
    }
    Ok(())
}

#[cfg(unix)]
fn special_file_error(entry: String, kind: &fs::FileType) -> ArchiveError {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_char_device() || kind.is_block_device() {
        ArchiveError::Device { entry }
    } else if kind.is_fifo() {
        ArchiveError::Fifo { entry }
    } else if kind.is_socket() {
        ArchiveError::UnsupportedEntry {
            entry,
            kind: "socket".into(),
        }
    } else {
        ArchiveError::UnsupportedEntry {
            entry,
            kind: "special file".into(),
        }
    }
}

#[cfg(not(unix))]
fn special_file_error(entry: String, _kind: &fs::FileType) -> ArchiveError {
    ArchiveError::UnsupportedEntry {
        entry,
        kind: "special file".into(),
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, Instant};

    const CHART_YAML_TEXT: &[u8] = b"apiVersion: v2\nname: carts\nversion: 0.1.0\n";

    /// One tar entry, written with raw header fields so that names the `tar` crate would
    /// refuse to write (`../x`, `/etc/passwd`) can be crafted.
    struct Raw<'a> {
        name: &'a str,
        kind: EntryType,
        data: &'a [u8],
        link: &'a str,
        mode: u32,
        mtime: u64,
    }

    fn file<'a>(name: &'a str, data: &'a [u8]) -> Raw<'a> {
        Raw {
            name,
            kind: EntryType::Regular,
            data,
            link: "",
            mode: 0o644,
            mtime: 1_700_000_000,
        }
    }

    fn special<'a>(name: &'a str, kind: EntryType, link: &'a str) -> Raw<'a> {
        Raw {
            name,
            kind,
            data: b"",
            link,
            mode: 0o777,
            mtime: 0,
        }
    }

    fn raw_header(entry: &Raw<'_>) -> Header {
        let mut header = Header::new_gnu();
        let old = header.as_old_mut();
        old.name[..entry.name.len()].copy_from_slice(entry.name.as_bytes());
        old.linkname[..entry.link.len()].copy_from_slice(entry.link.as_bytes());
        header.set_entry_type(entry.kind);
        header.set_size(entry.data.len() as u64);
        header.set_mode(entry.mode);
        header.set_mtime(entry.mtime);
        header.set_cksum();
        header
    }

    fn tgz(entries: &[Raw<'_>]) -> Vec<u8> {
        let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
        for entry in entries {
            builder.append(&raw_header(entry), entry.data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    fn read(entries: &[Raw<'_>]) -> Result<Chart, ArchiveError> {
        Chart::from_archive(&tgz(entries), &ArchiveLimits::default())
    }

    fn carts() -> Vec<Raw<'static>> {
        vec![
            file("carts/Chart.yaml", CHART_YAML_TEXT),
            file(
                "carts/values.yaml",
                b"replicaCount: 1\nimage:\n  tag: 0.1.0\n",
            ),
            file("carts/templates/deployment.yaml", b"kind: Deployment\n"),
        ]
    }

    #[test]
    fn reads_a_chart_as_helm_packages_it() {
        let chart = read(&carts()).unwrap();
        assert_eq!(chart.top, "carts");
        assert_eq!(chart.name(), "carts");
        assert_eq!(chart.version(), "0.1.0");
        assert_eq!(
            chart.files().keys().collect::<Vec<_>>(),
            ["Chart.yaml", "templates/deployment.yaml", "values.yaml"]
        );
        assert_eq!(
            chart.files.get("templates/deployment.yaml"),
            Some(&b"kind: Deployment\n".to_vec())
        );
        assert_eq!(
            chart.values().unwrap(),
            json!({"replicaCount": 1, "image": {"tag": "0.1.0"}})
        );
    }

    #[test]
    fn accepts_directory_entries_dot_prefixes_and_git_archive_headers() {
        let chart = read(&[
            special("pax_global_header", EntryType::XGlobalHeader, ""),
            special("./", EntryType::Directory, ""),
            special("./carts/", EntryType::Directory, ""),
            special("./carts/templates/", EntryType::Directory, ""),
            file("./carts/Chart.yaml", CHART_YAML_TEXT),
            file("./carts/templates/svc.yaml", b"kind: Service\n"),
        ])
        .unwrap();
        assert_eq!(chart.top, "carts");
        assert_eq!(
            chart.files().keys().collect::<Vec<_>>(),
            ["Chart.yaml", "templates/svc.yaml"]
        );
    }

    /// Runs a malicious archive and checks the error kind and that the message names the
    /// entry.
    fn refused(entries: &[Raw<'_>], names: &str) -> ArchiveError {
        let err = read(entries).unwrap_err();
        assert!(
            err.to_string().contains(names),
            "message {:?} should name {names:?}",
            err.to_string()
        );
        err
    }

    #[test]
    fn refuses_parent_dir_components() {
        for name in [
            "../x",
            "carts/../../x",
            "carts/templates/../../../etc/cron.d/x",
        ] {
            let mut entries = carts();
            entries.push(file(name, b"pwned"));
            let err = refused(&entries, name);
            assert!(matches!(err, ArchiveError::ParentDir { .. }), "{err:?}");
        }
    }

    #[test]
    fn refuses_absolute_paths() {
        let mut entries = carts();
        entries.push(file("/etc/passwd", b"root::0:0::/:/bin/sh\n"));
        let err = refused(&entries, "/etc/passwd");
        assert!(matches!(err, ArchiveError::AbsolutePath { .. }), "{err:?}");
    }

    #[test]
    fn refuses_links_devices_and_fifos() {
        type Expect = fn(&ArchiveError) -> bool;
        let cases: [(Raw<'_>, Expect); 5] = [
            (
                special("carts/templates/x.yaml", EntryType::Symlink, "/etc/passwd"),
                |e| matches!(e, ArchiveError::Symlink { target, .. } if target == "/etc/passwd"),
            ),
            (
                special(
                    "carts/templates/y.yaml",
                    EntryType::Link,
                    "carts/Chart.yaml",
                ),
                |e| matches!(e, ArchiveError::Hardlink { target, .. } if target == "carts/Chart.yaml"),
            ),
            (special("carts/tty", EntryType::Char, ""), |e| {
                matches!(e, ArchiveError::Device { .. })
            }),
            (special("carts/disk", EntryType::Block, ""), |e| {
                matches!(e, ArchiveError::Device { .. })
            }),
            (special("carts/pipe", EntryType::Fifo, ""), |e| {
                matches!(e, ArchiveError::Fifo { .. })
            }),
        ];
        for (entry, expected) in cases {
            let name = entry.name;
            let mut entries = carts();
            entries.push(entry);
            let err = refused(&entries, name);
            assert!(expected(&err), "{name}: {err:?}");
        }
    }

    #[test]
    fn refuses_a_second_top_level_directory_and_loose_files() {
        let mut entries = carts();
        entries.push(file("other/Chart.yaml", CHART_YAML_TEXT));
        let err = refused(&entries, "other/Chart.yaml");
        assert!(
            matches!(err, ArchiveError::MultipleTopLevel { .. }),
            "{err:?}"
        );

        let err = refused(&[file("Chart.yaml", CHART_YAML_TEXT)], "Chart.yaml");
        assert!(
            matches!(err, ArchiveError::NotInDirectory { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn refuses_a_chart_without_chart_yaml() {
        let err = refused(
            &[
                file("carts/values.yaml", b"a: 1\n"),
                file("carts/templates/Chart.yaml", CHART_YAML_TEXT),
            ],
            "carts",
        );
        assert!(
            matches!(err, ArchiveError::MissingChartYaml { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("Chart.yaml"), "{err}");

        let err = refused(
            &[file("carts/Chart.yaml", b"version: 1\n")],
            "carts/Chart.yaml",
        );
        assert!(
            matches!(err, ArchiveError::InvalidChartYaml { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("no name"), "{err}");

        let err = refused(
            &[file("carts/Chart.yaml", b"name: [unclosed\n")],
            "Chart.yaml",
        );
        assert!(
            matches!(err, ArchiveError::InvalidChartYaml { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn refuses_duplicates_conflicts_and_odd_names() {
        let mut entries = carts();
        entries.push(file("carts/values.yaml", b"sneaky: true\n"));
        let err = refused(&entries, "carts/values.yaml");
        assert!(matches!(err, ArchiveError::Duplicate { .. }), "{err:?}");

        let mut entries = carts();
        entries.push(file("carts/templates/deployment.yaml/x", b""));
        let err = refused(&entries, "carts/templates/deployment.yaml");
        assert!(matches!(err, ArchiveError::Conflict { .. }), "{err:?}");

        let mut entries = carts();
        entries.push(file("carts/..\\..\\x", b""));
        let err = refused(&entries, "backslash");
        assert!(matches!(err, ArchiveError::UnsafePath { .. }), "{err:?}");
    }

    #[test]
    fn refuses_what_is_not_a_tgz() {
        let limits = ArchiveLimits::default();
        let err = Chart::from_archive(b"PK\x03\x04 a zip file", &limits).unwrap_err();
        assert!(matches!(err, ArchiveError::NotGzip), "{err:?}");

        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(&[0x55; 1024]).unwrap();
        let err = Chart::from_archive(&gz.finish().unwrap(), &limits).unwrap_err();
        assert!(matches!(err, ArchiveError::Corrupt { .. }), "{err:?}");

        let whole = tgz(&carts());
        let err = Chart::from_archive(&whole[..whole.len() / 2], &limits).unwrap_err();
        assert!(matches!(err, ArchiveError::Corrupt { .. }), "{err:?}");

        let err = Chart::from_archive(&tgz(&[]), &limits).unwrap_err();
        assert!(matches!(err, ArchiveError::Empty), "{err:?}");
    }

    #[test]
    fn enforces_the_limits() {
        let archive = tgz(&carts());
        let tight = ArchiveLimits {
            max_compressed: archive.len() as u64 - 1,
            ..ArchiveLimits::default()
        };
        let err = Chart::from_archive(&archive, &tight).unwrap_err();
        assert!(
            matches!(err, ArchiveError::CompressedTooLarge { .. }),
            "{err:?}"
        );

        let tight = ArchiveLimits {
            max_entries: 2,
            ..ArchiveLimits::default()
        };
        let err = Chart::from_archive(&archive, &tight).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::TooManyEntries { entry, .. } if entry == "carts/templates/deployment.yaml"),
            "{err:?}"
        );

        // Declared size over the budget: refused before reading the content.
        let big = vec![b'x'; 8 * 1024];
        let mut entries = carts();
        entries.push(file("carts/templates/big.yaml", &big));
        let tight = ArchiveLimits {
            max_uncompressed: 8 * 1024,
            ..ArchiveLimits::default()
        };
        let err = Chart::from_archive(&tgz(&entries), &tight).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::UncompressedTooLarge { entry, .. } if entry == "carts/templates/big.yaml"),
            "{err:?}"
        );
    }

    /// A tar entry of `kind` carrying `total` bytes of zeros (200 MiB compress to a few hundred
    /// KiB). It is built by repeating one independently decodable deflate block (each ends
    /// with a full flush), so the test does not spend seconds compressing 200 MiB. The gzip
    /// trailer is deliberately wrong: a reader that inflated everything before checking sizes
    /// would report corruption, not the size.
    fn gzip_bomb(name: &str, kind: EntryType, total: u64) -> Vec<u8> {
        use flate2::{Compress, FlushCompress};
        const CHUNK: usize = 1024 * 1024;
        let mut header = Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(kind);
        header.set_size(total);
        header.set_mode(0o644);
        header.set_cksum();

        let deflate = |input: &[u8]| {
            let mut compress = Compress::new(Compression::best(), false);
            let mut out = Vec::with_capacity(input.len() / 100 + 1024);
            compress
                .compress_vec(input, &mut out, FlushCompress::Full)
                .unwrap();
            assert_eq!(
                compress.total_in(),
                input.len() as u64,
                "one call takes all"
            );
            out
        };
        let mut first = header.as_bytes().to_vec();
        first.resize(CHUNK, 0);
        let first_block = deflate(&first);
        let zero_block = deflate(&vec![0u8; CHUNK]);

        // gzip header: magic, deflate, no flags, mtime 0, no extra flags, unknown OS.
        let mut bomb = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
        bomb.extend_from_slice(&first_block);
        for _ in 1..(total / CHUNK as u64) {
            bomb.extend_from_slice(&zero_block);
        }
        // Final empty stored block, then a bogus CRC and length.
        bomb.extend_from_slice(&[0x01, 0x00, 0x00, 0xff, 0xff]);
        bomb.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0]);
        bomb
    }

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn the_bomb_construction_inflates() {
        // With room for it all, only the bogus trailer (or the short data) fails it…
        let small = gzip_bomb("carts/templates/", EntryType::Directory, 4 * MIB);
        let roomy = ArchiveLimits {
            max_uncompressed: 64 * MIB,
            ..ArchiveLimits::default()
        };
        let err = Chart::from_archive(&small, &roomy).unwrap_err();
        assert!(matches!(err, ArchiveError::Corrupt { .. }), "{err:?}");
        // …and it really inflates past 2 MiB (a directory's size is not reserved up front,
        // so this is the streaming count at work).
        let below = ArchiveLimits {
            max_uncompressed: 2 * MIB,
            ..ArchiveLimits::default()
        };
        let err = Chart::from_archive(&small, &below).unwrap_err();
        assert!(
            matches!(err, ArchiveError::UncompressedTooLarge { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn stops_gzip_bombs_at_the_cap() {
        // Bulk where no file size announces it: data of a directory entry (skipped by the
        // tar reader) and a GNU long name (read into memory by the tar reader).
        for (name, kind, names) in [
            ("carts/templates/", EntryType::Directory, "carts/templates/"),
            ("././@LongLink", EntryType::GNULongName, "(first header)"),
        ] {
            let bomb = gzip_bomb(name, kind, 200 * MIB);
            assert!(
                bomb.len() < 2 * MIB as usize,
                "bomb is {} bytes",
                bomb.len()
            );
            let started = Instant::now();
            let err = Chart::from_archive(&bomb, &ArchiveLimits::default()).unwrap_err();
            let took = started.elapsed();
            assert!(
                matches!(&err, ArchiveError::UncompressedTooLarge { entry, max } if entry == names && *max == 50 * MIB),
                "{kind:?}: {err:?}"
            );
            assert!(err.to_string().contains(names), "{err}");
            assert!(took < Duration::from_secs(20), "{kind:?} took {took:?}");

            // With a small cap it stops almost at once.
            let tiny = ArchiveLimits {
                max_uncompressed: MIB,
                ..ArchiveLimits::default()
            };
            let started = Instant::now();
            let err = Chart::from_archive(&bomb, &tiny).unwrap_err();
            assert!(
                matches!(err, ArchiveError::UncompressedTooLarge { .. }),
                "{err:?}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{:?}",
                started.elapsed()
            );
        }

        // A file announcing 200 MiB is refused from its header, before any of it is read.
        let bomb = gzip_bomb("carts/bomb.yaml", EntryType::Regular, 200 * MIB);
        let err = Chart::from_archive(&bomb, &ArchiveLimits::default()).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::UncompressedTooLarge { entry, .. } if entry == "carts/bomb.yaml"),
            "{err:?}"
        );
    }

    #[test]
    fn canonical_archives_are_deterministic() {
        let chart = read(&carts()).unwrap();
        // Same content, other order, other mtimes and modes.
        let mut shuffled = carts();
        shuffled.reverse();
        for entry in &mut shuffled {
            entry.mtime = 42;
            entry.mode = 0o600;
        }
        let other = read(&shuffled).unwrap();
        assert_ne!(tgz(&carts()), tgz(&shuffled));
        assert_eq!(chart, other);
        assert_eq!(chart.to_archive(), other.to_archive());
        assert_eq!(chart.to_archive(), chart.to_archive());
        assert_eq!(chart.digest(), other.digest());
        assert!(chart.digest().starts_with("sha256:"));
        assert_eq!(chart.digest().len(), "sha256:".len() + 64);

        // The canonical archive reads back to the same chart, with fixed metadata.
        let archive = chart.to_archive();
        assert_eq!(
            Chart::from_archive(&archive, &ArchiveLimits::default()).unwrap(),
            chart
        );
        let mut tar = tar::Archive::new(GzDecoder::new(archive.as_slice()));
        for entry in tar.entries().unwrap() {
            let entry = entry.unwrap();
            let header = entry.header();
            assert_eq!(header.mtime().unwrap(), 0);
            assert_eq!(header.mode().unwrap(), 0o644);
            assert_eq!(header.uid().unwrap(), 0);
            assert_eq!(header.gid().unwrap(), 0);
            assert!(entry.path().unwrap().starts_with("carts"));
        }

        let changed = chart.with_values(&json!({"replicaCount": 2}));
        assert_ne!(changed.digest(), chart.digest());
    }

    #[test]
    fn long_paths_survive_the_round_trip() {
        let long = format!("carts/templates/{}/x.yaml", "d".repeat(150));
        let mut entries = carts();
        let name = long.clone();
        // Too long for the raw header: write it with the crate's GNU long-name support.
        let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
        for entry in entries.drain(..) {
            builder.append(&raw_header(&entry), entry.data).unwrap();
        }
        let mut header = Header::new_gnu();
        header.set_size(3);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, &name, &b"a: 1"[..3])
            .unwrap();
        let archive = builder.into_inner().unwrap().finish().unwrap();
        let chart = Chart::from_archive(&archive, &ArchiveLimits::default()).unwrap();
        let relative = long.strip_prefix("carts/").unwrap();
        assert_eq!(chart.files.get(relative), Some(&b"a: ".to_vec()));
        let again = Chart::from_archive(&chart.to_archive(), &ArchiveLimits::default()).unwrap();
        assert_eq!(again, chart);
    }

    #[test]
    fn values_merge_round_trip() {
        let chart = read(&carts()).unwrap();
        let mut values = chart.values().unwrap();
        crate::charts::values::deep_merge(
            &mut values,
            &json!({"image": {"tag": "0.2.0"}, "env": [{"name": "A", "value": "1"}]}),
        );
        let merged = chart.with_values(&values);
        let reread = Chart::from_archive(&merged.to_archive(), &ArchiveLimits::default()).unwrap();
        assert_eq!(
            reread.values().unwrap(),
            json!({
                "replicaCount": 1,
                "image": {"tag": "0.2.0"},
                "env": [{"name": "A", "value": "1"}]
            })
        );
        // Other files are untouched.
        assert_eq!(
            reread.files.get("Chart.yaml"),
            chart.files.get("Chart.yaml")
        );
        assert_eq!(
            reread.files.get("templates/deployment.yaml"),
            chart.files.get("templates/deployment.yaml")
        );
        // Merging the same values again changes nothing (a redelivered event is harmless).
        let mut again = reread.values().unwrap();
        crate::charts::values::deep_merge(&mut again, &json!({"image": {"tag": "0.2.0"}}));
        assert_eq!(reread.with_values(&again).digest(), reread.digest());
    }

    #[test]
    fn values_edge_cases() {
        let without = read(&[file("carts/Chart.yaml", CHART_YAML_TEXT)]).unwrap();
        assert_eq!(without.values().unwrap(), json!({}));

        let empty = read(&[
            file("carts/Chart.yaml", CHART_YAML_TEXT),
            file("carts/values.yaml", b"# nothing yet\n"),
        ])
        .unwrap();
        assert_eq!(empty.values().unwrap(), json!({}));

        let broken = read(&[
            file("carts/Chart.yaml", CHART_YAML_TEXT),
            file("carts/values.yaml", b"image: {tag: [\n"),
        ])
        .unwrap();
        let err = broken.values().unwrap_err();
        assert!(matches!(err, ArchiveError::InvalidValues { .. }), "{err:?}");
        assert!(err.to_string().contains("carts/values.yaml"), "{err}");

        let list = read(&[
            file("carts/Chart.yaml", CHART_YAML_TEXT),
            file("carts/values.yaml", b"- a\n- b\n"),
        ])
        .unwrap();
        let err = list.values().unwrap_err();
        assert!(err.to_string().contains("mapping"), "{err}");
    }

    #[test]
    fn numeric_versions_are_text() {
        let chart = read(&[file("carts/Chart.yaml", b"name: carts\nversion: 1.0\n")]).unwrap();
        assert_eq!(chart.version(), "1.0");
    }

    #[test]
    fn reads_a_directory_and_refuses_links_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("some-checkout");
        fs::create_dir_all(root.join("templates")).unwrap();
        fs::write(root.join("Chart.yaml"), CHART_YAML_TEXT).unwrap();
        fs::write(root.join("values.yaml"), b"replicaCount: 1\n").unwrap();
        fs::write(
            root.join("templates/deployment.yaml"),
            b"kind: Deployment\n",
        )
        .unwrap();
        let chart = Chart::from_dir(&root, &ArchiveLimits::default()).unwrap();
        // Named after the chart, like `helm package`, not after the directory.
        assert_eq!(chart.top, "carts");
        assert_eq!(
            chart.files().keys().collect::<Vec<_>>(),
            ["Chart.yaml", "templates/deployment.yaml", "values.yaml"]
        );
        // Same content as the packaged chart.
        assert_eq!(chart.values().unwrap(), json!({"replicaCount": 1}));

        let tight = ArchiveLimits {
            max_uncompressed: 50,
            ..ArchiveLimits::default()
        };
        let err = Chart::from_dir(&root, &tight).unwrap_err();
        assert!(
            matches!(err, ArchiveError::UncompressedTooLarge { .. }),
            "{err:?}"
        );

        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc/passwd", root.join("templates/passwd.yaml")).unwrap();
            let err = Chart::from_dir(&root, &ArchiveLimits::default()).unwrap_err();
            assert!(
                matches!(&err, ArchiveError::Symlink { entry, target } if entry == "templates/passwd.yaml" && target == "/etc/passwd"),
                "{err:?}"
            );
        }

        let empty = tempfile::tempdir().unwrap();
        let err = Chart::from_dir(empty.path(), &ArchiveLimits::default()).unwrap_err();
        assert!(
            matches!(err, ArchiveError::MissingChartYaml { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn writes_the_chart_out_for_helm() {
        let chart = read(&carts()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = chart.write_to(dir.path()).unwrap();
        assert_eq!(path, dir.path().join("carts"));
        for (relative, data) in chart.files() {
            assert_eq!(&fs::read(path.join(relative)).unwrap(), data, "{relative}");
        }
        // Nothing existing is overwritten.
        assert!(chart.write_to(dir.path()).is_err());
    }

    #[test]
    fn from_files_checks_paths() {
        let mut files = BTreeMap::new();
        files.insert("Chart.yaml".to_owned(), CHART_YAML_TEXT.to_vec());
        assert!(Chart::from_files("carts-generated", files.clone()).is_ok());
        for bad in ["../x", "/x", "a//b", "./a", "a/", "a/../b"] {
            let mut files = files.clone();
            files.insert(bad.to_owned(), Vec::new());
            assert!(Chart::from_files("carts", files).is_err(), "{bad:?}");
        }
        assert!(Chart::from_files("..", files.clone()).is_err());
        assert!(Chart::from_files("a/b", files).is_err());
    }
}
