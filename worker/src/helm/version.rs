//! Which helm we drive: its version, and whether the worker can drive it. The flags that
//! differ between Helm 3 and Helm 4 are spelled in `command_line`.

use std::fmt;

/// A helm release version as printed by `helm version --template '{{.Version}}'`
/// (`v4.1.4`, `v3.14.2`, `v4.0.0-rc.1+abc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelmVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// What helm printed, trimmed (keeps a pre-release or build suffix for logs).
    pub raw: String,
}

/// The oldest Helm 3 we accept: 3.14 is the oldest with the flags and JSON output we rely on
/// and still receives fixes in distributions.
pub const MIN_HELM3_MINOR: u64 = 14;

impl HelmVersion {
    /// Parses helm's version string; `None` when it is not `vMAJOR.MINOR.PATCH[...]`.
    pub fn parse(text: &str) -> Option<Self> {
        let raw = text.trim();
        let core = raw.strip_prefix('v').unwrap_or(raw);
        // Drop `-pre` / `+build`: they don't change which flags exist.
        let core = core.split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let mut num = || -> Option<u64> {
            let p = parts.next()?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        let (major, minor, patch) = (num()?, num()?, num()?);
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            major,
            minor,
            patch,
            raw: raw.to_owned(),
        })
    }

    /// Why this version cannot be driven, or `None` when it can (Helm 4, Helm 3.14+).
    pub fn unsupported_reason(&self) -> Option<String> {
        match self.major {
            4 => None,
            3 if self.minor >= MIN_HELM3_MINOR => None,
            3 => Some(format!(
                "Helm 3 older than 3.{MIN_HELM3_MINOR} is not supported; install Helm 4 or Helm 3.{MIN_HELM3_MINOR}+"
            )),
            m if m > 4 => Some(format!(
                "Helm {m} is newer than this worker knows (its flags may differ); use Helm 4"
            )),
            _ => Some("only Helm 4 and Helm 3.14+ are supported".to_owned()),
        }
    }

    pub fn is_v4(&self) -> bool {
        self.major >= 4
    }
}

impl fmt::Display for HelmVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_and_prerelease_versions() {
        let v = HelmVersion::parse("v4.1.4\n").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (4, 1, 4));
        assert_eq!(v.to_string(), "v4.1.4");
        let v = HelmVersion::parse("v3.14.0-rc.1+g1234").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (3, 14, 0));
        assert_eq!(v.raw, "v3.14.0-rc.1+g1234");
        assert!(HelmVersion::parse("3.15.2").is_some());
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "v4",
            "v4.1",
            "v4.x.1",
            "<no value>",
            "v4.1.4.5",
            "Error: unknown flag",
        ] {
            assert!(HelmVersion::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn supported_range() {
        let ok = |s: &str| {
            HelmVersion::parse(s)
                .unwrap()
                .unsupported_reason()
                .is_none()
        };
        assert!(ok("v4.0.0"));
        assert!(ok("v4.1.4"));
        assert!(ok("v3.14.0"));
        assert!(ok("v3.19.1"));
        assert!(!ok("v3.13.3"));
        assert!(!ok("v2.17.0"));
        assert!(!ok("v5.0.0"));
    }
}
