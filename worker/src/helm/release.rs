//! What helm reports about a release: its state and its revisions.

use std::fmt;

use serde::{Deserialize, Deserializer};

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
