//! What helm reports about a release: its state and its revisions.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A Helm release in a namespace: what a helm command works on (empty for `helm version`),
/// and what a look at Helm's storage in the cluster finds. Sorted by namespace, then release.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ReleaseRef {
    pub namespace: String,
    pub release: String,
}

impl ReleaseRef {
    pub fn new(release: &str, namespace: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            release: release.to_owned(),
        }
    }
}

impl fmt::Display for ReleaseRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.release)
    }
}

/// A release revision's status as helm stores it (`helm history` / `helm status`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReleaseState {
    Deployed,
    Failed,
    PendingInstall,
    PendingUpgrade,
    PendingRollback,
    Superseded,
    Uninstalling,
    Uninstalled,
    /// `unknown`, or a state a newer helm added.
    Unknown(String),
}

impl ReleaseState {
    pub fn parse(s: &str) -> Self {
        match s {
            "deployed" => Self::Deployed,
            "failed" => Self::Failed,
            "pending-install" => Self::PendingInstall,
            "pending-upgrade" => Self::PendingUpgrade,
            "pending-rollback" => Self::PendingRollback,
            "superseded" => Self::Superseded,
            "uninstalling" => Self::Uninstalling,
            "uninstalled" => Self::Uninstalled,
            other => Self::Unknown(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Deployed => "deployed",
            Self::Failed => "failed",
            Self::PendingInstall => "pending-install",
            Self::PendingUpgrade => "pending-upgrade",
            Self::PendingRollback => "pending-rollback",
            Self::Superseded => "superseded",
            Self::Uninstalling => "uninstalling",
            Self::Uninstalled => "uninstalled",
            Self::Unknown(s) => s,
        }
    }

    /// An operation holds the release (helm refuses others with "another operation ... is in
    /// progress").
    pub fn is_pending(&self) -> bool {
        matches!(
            self,
            Self::PendingInstall | Self::PendingUpgrade | Self::PendingRollback
        )
    }

    /// The revision was rolled out completely at some point (a safe rollback target).
    pub fn was_deployed(&self) -> bool {
        matches!(self, Self::Deployed | Self::Superseded)
    }
}

impl fmt::Display for ReleaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ReleaseState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::parse(&String::deserialize(d)?))
    }
}

/// One revision of `helm history -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HistoryEntry {
    pub revision: u32,
    pub status: ReleaseState,
    /// `<chart name>-<chart version>`.
    #[serde(default)]
    pub chart: String,
    #[serde(default)]
    pub app_version: String,
    #[serde(default)]
    pub description: String,
    /// When the revision was last written, as helm prints it (RFC 3339).
    #[serde(default)]
    pub updated: String,
}

/// The latest revision of a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseStatus {
    pub name: String,
    pub namespace: String,
    pub revision: u32,
    pub status: ReleaseState,
    /// `<chart name>-<chart version>`.
    pub chart: String,
    pub app_version: String,
    pub description: String,
    pub updated: String,
}

impl ReleaseStatus {
    pub(crate) fn from_entry(name: &str, namespace: &str, e: HistoryEntry) -> Self {
        Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            revision: e.revision,
            status: e.status,
            chart: e.chart,
            app_version: e.app_version,
            description: e.description,
            updated: e.updated,
        }
    }
}

/// The parts of the release JSON `helm upgrade -o json` prints that make a status.
#[derive(Deserialize)]
struct PrintedRelease {
    version: u32,
    info: PrintedInfo,
    #[serde(default)]
    chart: Option<PrintedChart>,
}

#[derive(Deserialize)]
struct PrintedInfo {
    status: ReleaseState,
    #[serde(default)]
    description: String,
    #[serde(default)]
    last_deployed: String,
}

#[derive(Deserialize)]
struct PrintedChart {
    metadata: PrintedChartMetadata,
}

#[derive(Deserialize)]
struct PrintedChartMetadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default, rename = "appVersion")]
    app_version: String,
}

/// The status in `helm upgrade -o json`'s printout; `None` when it is not readable (the
/// caller then asks `helm history`).
pub(crate) fn parse_upgrade_output(
    name: &str,
    namespace: &str,
    json: &[u8],
) -> Option<ReleaseStatus> {
    let printed: PrintedRelease = serde_json::from_slice(json).ok()?;
    let (chart, app_version) = match printed.chart {
        Some(PrintedChart { metadata }) => (
            format!("{}-{}", metadata.name, metadata.version),
            metadata.app_version,
        ),
        None => (String::new(), String::new()),
    };
    Some(ReleaseStatus {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        revision: printed.version,
        status: printed.info.status,
        chart,
        app_version,
        description: printed.info.description,
        updated: printed.info.last_deployed,
    })
}

/// What an upgrade would deploy (`Helm::render_upgrade`).
#[derive(Clone, PartialEq, Eq)]
pub struct RenderedRelease {
    /// The revision the upgrade would write.
    pub revision: u32,
    /// The objects it would apply, as one multi-document manifest (without the hooks).
    pub manifest: String,
    /// Each hook's manifest, with the `helm.sh/hook` annotations that make it one.
    pub hooks: Vec<String>,
    /// The chart's name, version and app version.
    pub chart_name: String,
    pub chart_version: String,
    pub app_version: String,
}

/// Sizes only: the manifest may hold rendered Secrets.
impl fmt::Debug for RenderedRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenderedRelease")
            .field("revision", &self.revision)
            .field("manifest_bytes", &self.manifest.len())
            .field("hooks", &self.hooks.len())
            .field("chart_name", &self.chart_name)
            .field("chart_version", &self.chart_version)
            .field("app_version", &self.app_version)
            .finish()
    }
}

/// Parses the release JSON of a dry run (`helm upgrade --dry-run=server -o json`).
pub(crate) fn parse_rendered(json: &[u8]) -> Result<RenderedRelease, serde_json::Error> {
    #[derive(Deserialize)]
    struct Printed {
        version: u32,
        #[serde(default)]
        manifest: String,
        #[serde(default)]
        hooks: Option<Vec<PrintedHook>>,
        #[serde(default)]
        chart: Option<PrintedChart>,
    }
    #[derive(Deserialize)]
    struct PrintedHook {
        manifest: String,
    }
    let printed: Printed = serde_json::from_slice(json)?;
    let metadata = printed.chart.map(|chart| chart.metadata);
    let (chart_name, chart_version, app_version) = metadata
        .map(|m| (m.name, m.version, m.app_version))
        .unwrap_or_default();
    Ok(RenderedRelease {
        revision: printed.version,
        manifest: printed.manifest,
        hooks: printed
            .hooks
            .unwrap_or_default()
            .into_iter()
            .map(|hook| hook.manifest)
            .collect(),
        chart_name,
        chart_version,
        app_version,
    })
}

/// Parses `helm history -o json`, oldest revision first.
pub(crate) fn parse_history(json: &str) -> Result<Vec<HistoryEntry>, serde_json::Error> {
    let trimmed = json.trim();
    if trimmed.is_empty() || trimmed == "null" {
        return Ok(Vec::new());
    }
    let mut entries: Vec<HistoryEntry> = serde_json::from_str(trimmed)?;
    entries.sort_by_key(|e| e.revision);
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_helm4_history() {
        let json = r#"[{"revision":2,"updated":"2026-11-24T04:56:12Z","status":"pending-upgrade","chart":"tiny-0.1.0","app_version":"","description":"Preparing upgrade"},
            {"revision":1,"updated":"2026-11-24T04:56:04.388Z","status":"deployed","chart":"tiny-0.1.0","app_version":"1.0","description":"Install complete"}]"#;
        let h = parse_history(json).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].revision, 1);
        assert_eq!(h[0].status, ReleaseState::Deployed);
        assert_eq!(h[0].app_version, "1.0");
        assert_eq!(h[1].status, ReleaseState::PendingUpgrade);
        assert!(h[1].status.is_pending());
        assert_eq!(parse_history("null\n").unwrap(), vec![]);
    }

    #[test]
    fn upgrade_printout_gives_the_status() {
        let json = br#"{"name":"t1","info":{"first_deployed":"2026-11-24T04:56:04Z","last_deployed":"2026-11-24T04:56:04Z","description":"Upgrade complete","status":"deployed"},
            "chart":{"metadata":{"name":"hello","version":"0.1.0","appVersion":"1.0"},"templates":[]},"manifest":"---","version":3,"namespace":"ns","apply_method":"ssa"}"#;
        let status = parse_upgrade_output("t1", "ns", json).unwrap();
        assert_eq!(status.revision, 3);
        assert_eq!(status.status, ReleaseState::Deployed);
        assert_eq!(status.chart, "hello-0.1.0");
        assert_eq!(status.app_version, "1.0");
        assert_eq!(status.description, "Upgrade complete");
        assert!(parse_upgrade_output("t1", "ns", b"Release \"t1\" has been upgraded").is_none());
    }

    #[test]
    fn a_dry_run_gives_the_manifest_and_the_hooks() {
        let json = br#"{"name":"t1","version":4,"info":{"status":"pending-upgrade"},
            "chart":{"metadata":{"name":"hello","version":"0.1.0","appVersion":"1.0"}},
            "manifest":"---\nkind: Service\n",
            "hooks":[{"name":"t","kind":"Pod","manifest":"kind: Pod\n","events":["test"]}]}"#;
        let rendered = parse_rendered(json).unwrap();
        assert_eq!(rendered.revision, 4);
        assert_eq!(rendered.manifest, "---\nkind: Service\n");
        assert_eq!(rendered.hooks, ["kind: Pod\n"]);
        assert_eq!(
            (
                rendered.chart_name.as_str(),
                rendered.chart_version.as_str()
            ),
            ("hello", "0.1.0")
        );
        assert_eq!(rendered.app_version, "1.0");
        // A chart without hooks prints none (Helm 3 omits the key).
        let bare = parse_rendered(br#"{"version":2,"manifest":""}"#).unwrap();
        assert!(bare.hooks.is_empty() && bare.chart_name.is_empty());
        assert!(parse_rendered(b"Release \"t1\" has been upgraded").is_err());
    }

    #[test]
    fn unknown_states_survive() {
        let s = ReleaseState::parse("paused");
        assert_eq!(s, ReleaseState::Unknown("paused".into()));
        assert_eq!(s.to_string(), "paused");
        for known in [
            "deployed",
            "failed",
            "pending-install",
            "pending-upgrade",
            "pending-rollback",
            "superseded",
            "uninstalling",
            "uninstalled",
        ] {
            assert_eq!(ReleaseState::parse(known).as_str(), known);
        }
    }
}
