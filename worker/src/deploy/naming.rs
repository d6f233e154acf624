//! Kubernetes and Helm names of a Keptn service, as the reference helm-service chose them,
//! and its key in helm-service's own buckets.
//!
//! Names come only from validated Keptn names (`^[a-z][a-z0-9-]*[a-z0-9]$`), so the only
//! thing left to check here is length: a namespace is a DNS label (63 characters) and
//! Helm refuses release names of 53 characters or more of its own storage reasons.

use contracts::validate::Target;
use thiserror::Error;

/// Longest DNS-1123 label: namespaces and most object names.
pub const MAX_LABEL: usize = 63;
/// Release names are kept shorter than this (Helm's limit is 53 characters).
pub const RELEASE_NAME_LIMIT: usize = 53;
/// Suffix of the release holding what helm-service generates (mesh or blue/green objects).
pub const GENERATED_SUFFIX: &str = "-generated";

/// Whether `s` is a DNS-1123 label of at most `max` characters: lower-case letters, digits
/// and `-`, starting and ending with a letter or digit (namespaces, most object names).
pub fn is_dns_label(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A service's own namespace, `keptn.namespace` in its chart's values (after the event's
/// `configurationChange.values`): `None` when unset or empty (the stage's
/// `<project>-<stage>`); an error naming the value when it is no namespace name.
pub fn chart_namespace(values: &serde_json::Value) -> Result<Option<String>, String> {
    match &values["keptn"]["namespace"] {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(name) if name.is_empty() => Ok(None),
        serde_json::Value::String(name) if is_dns_label(name, MAX_LABEL) => Ok(Some(name.clone())),
        other => {
            let shown: String = other.to_string().chars().take(80).collect();
            Err(format!(
                "keptn.namespace {shown} in the chart's values is not a namespace name (lower-case \
                 letters, digits and '-', starting and ending with a letter or digit, at most \
                 {MAX_LABEL} characters)"
            ))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("{0}")]
    Keptn(#[from] contracts::names::NameError),
    #[error(
        "object name {name:?} derived from {source_name:?} is {len} characters long; Kubernetes \
         allows at most {MAX_LABEL}: shorten {source_name:?} in the chart"
    )]
    ObjectNameTooLong {
        name: String,
        source_name: String,
        len: usize,
    },
    #[error(
        "service name {service:?} is refused: its release would be named {release:?}, which \
         is the name of the routing release helm-service generates for the service released as \
         {base:?} (names ending in {GENERATED_SUFFIX:?} are reserved for those); rename the \
         service"
    )]
    ReservedSuffix {
        service: String,
        release: String,
        base: String,
    },
}

/// The key of a service in a stage in helm-service's KV buckets (the inventory, the release
/// records): `<project>.<stage>.<service>`. Validated Keptn names hold only characters KV
/// keys allow, and no `.`.
pub fn service_key(project: &str, stage: &str, service: &str) -> String {
    format!("{project}.{stage}.{service}")
}

/// The names one service in one stage deploys under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseNames {
    /// `<project>-<stage>`.
    pub namespace: String,
    /// The release of the user's chart.
    pub user: String,
    /// The release of the generated chart: `user` plus `-generated`.
    pub generated: String,
}

impl ReleaseNames {
    /// Names for `service` in `stage` of `project`. The user release is
    /// `<project>-<stage>-<service>`; when the generated release name (the longer of the
    /// two) would reach Helm's limit, the project is dropped, then the stage, then the
    /// service is truncated — so both releases always share one base name.
    pub fn new(project: &str, stage: &str, service: &str) -> Result<Self, NameError> {
        let namespace = contracts::names::namespace(project, stage)?;
        contracts::names::validate_keptn_name(contracts::names::NameKind::Service, service)?;
        let names = Self::named(namespace, project, stage, service);
        names.check_not_generated(service)?;
        Ok(names)
    }

    /// A user release ending in [`GENERATED_SUFFIX`] would be another service's generated
    /// release (`carts-generated` is the routing of `carts`): two services on one Helm
    /// release, under two lease keys. Refused for every task, so it never gets deployed.
    fn check_not_generated(&self, service: &str) -> Result<(), NameError> {
        match self.user.strip_suffix(GENERATED_SUFFIX) {
            Some(base) => Err(NameError::ReservedSuffix {
                service: service.to_owned(),
                release: self.user.clone(),
                base: base.to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// Whether the user release is not the plain `<project>-<stage>-<service>`, so names of
    /// two services may have met in it.
    pub fn is_shortened(&self, target: &Target) -> bool {
        self.user != format!("{}-{}-{}", target.project, target.stage, target.service)
    }

    /// The key of the release lease: `<namespace>.<user release>`, what a task changes, so
    /// every two tasks that could touch one Helm release serialise whatever their Keptn
    /// names (the generated release is `<user>-generated`, and a user release cannot end
    /// like that). Valid names hold only characters KV keys allow, and no `.`.
    pub fn lease_key(&self) -> String {
        format!("{}.{}", self.namespace, self.user)
    }

    /// The same releases in `namespace` (a service's own namespace, [`chart_namespace`]).
    /// Leases stay keyed by the names of the Keptn target (intake's key), not by these, so
    /// every task on the service takes one lease wherever it is deployed.
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        namespace.clone_into(&mut self.namespace);
        self
    }

    /// Names for a validated target, whose names passed the checks [`ReleaseNames::new`]
    /// makes, so nothing is left to refuse.
    pub fn of(target: &Target) -> Self {
        Self::named(
            target.namespace(),
            &target.project,
            &target.stage,
            &target.service,
        )
    }

    fn named(namespace: String, project: &str, stage: &str, service: &str) -> Self {
        let fits = |base: &str| base.len() + GENERATED_SUFFIX.len() < RELEASE_NAME_LIMIT;
        let candidates = [
            format!("{project}-{stage}-{service}"),
            format!("{stage}-{service}"),
            service.to_owned(),
        ];
        let base = match candidates.into_iter().find(|base| fits(base)) {
            Some(base) => base,
            None => {
                let keep = RELEASE_NAME_LIMIT - 1 - GENERATED_SUFFIX.len();
                service[..keep].trim_end_matches('-').to_owned()
            }
        };
        ReleaseNames {
            namespace,
            generated: format!("{base}{GENERATED_SUFFIX}"),
            user: base,
        }
    }
}

/// `<name>-<suffix>` for objects helm-service derives from the user's (e.g.
/// `carts-primary`), refused when it would not be a valid object name.
pub fn derived_object_name(name: &str, suffix: &str) -> Result<String, NameError> {
    let derived = format!("{name}-{suffix}");
    if derived.len() > MAX_LABEL {
        return Err(NameError::ObjectNameTooLong {
            len: derived.len(),
            name: derived,
            source_name: name.to_owned(),
        });
    }
    Ok(derived)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_may_name_its_own_namespace() {
        use serde_json::json;
        assert_eq!(chart_namespace(&json!({})), Ok(None));
        assert_eq!(
            chart_namespace(&json!({"keptn": {"namespace": ""}})),
            Ok(None)
        );
        assert_eq!(
            chart_namespace(&json!({"keptn": {"namespace": "web-shop"}})),
            Ok(Some("web-shop".into()))
        );
        for bad in [
            json!("Web"),
            json!("a.b"),
            json!("-a"),
            json!(3),
            json!("a".repeat(64)),
        ] {
            let err = chart_namespace(&json!({"keptn": {"namespace": bad}})).unwrap_err();
            assert!(err.contains("keptn.namespace"), "{err}");
        }
        let names = ReleaseNames::new("shop", "dev", "carts").unwrap();
        let key = names.lease_key();
        let moved = names.in_namespace("web-shop");
        assert_eq!(moved.namespace, "web-shop");
        assert_eq!(moved.user, "shop-dev-carts");
        assert_ne!(moved.lease_key(), key);
    }

    #[test]
    fn short_names_keep_project_stage_and_service() {
        let names = ReleaseNames::new("sockshop", "dev", "carts").unwrap();
        assert_eq!(names.namespace, "sockshop-dev");
        assert_eq!(names.user, "sockshop-dev-carts");
        assert_eq!(names.generated, "sockshop-dev-carts-generated");
    }

    #[test]
    fn long_names_drop_project_then_stage_then_truncate() {
        let project = "p".repeat(30);
        let names = ReleaseNames::new(&project, "production", "carts").unwrap();
        assert_eq!(names.user, "production-carts");
        let stage = "s".repeat(40);
        let names = ReleaseNames::new("shop", &stage, "carts").unwrap();
        assert_eq!(names.user, "carts");
        let service = format!("{}-x", "a".repeat(41));
        let names = ReleaseNames::new("shop", "dev", &service).unwrap();
        assert_eq!(names.user, "a".repeat(41), "truncated and no trailing dash");
        assert!(names.generated.len() < RELEASE_NAME_LIMIT);
    }

    #[test]
    fn a_validated_target_gets_the_names_of_its_three_names() {
        let target = Target {
            project: "p".repeat(30),
            stage: "production".into(),
            service: "carts".into(),
        };
        let checked = ReleaseNames::new(&target.project, &target.stage, &target.service);
        assert_eq!(ReleaseNames::of(&target), checked.unwrap());
    }

    #[test]
    fn every_release_name_stays_under_the_helm_limit() {
        for len in 1..62 {
            let service = format!("s{}", "v".repeat(len));
            let names = ReleaseNames::new("project", "stage", &service).unwrap();
            assert!(names.generated.len() < RELEASE_NAME_LIMIT, "{names:?}");
            assert!(names.generated.starts_with(&names.user));
            assert!(!names.user.ends_with('-'));
        }
    }

    #[test]
    fn overlong_namespace_is_refused_with_advice() {
        let err = ReleaseNames::new(&"p".repeat(40), &"s".repeat(30), "carts").unwrap_err();
        assert!(err.to_string().contains("at most 63"), "{err}");
        assert!(ReleaseNames::new("shop", "dev", "../x").is_err());
    }

    #[test]
    fn derived_object_names_are_checked() {
        assert_eq!(
            derived_object_name("carts", "primary").unwrap(),
            "carts-primary"
        );
        assert!(derived_object_name(&"c".repeat(60), "primary").is_err());
    }
}
