//! Whose a namespace or a Helm release is, and where helm-service may deploy at all.
//!
//! Keptn names map to Kubernetes names ambiguously: (`shop`, `prod-eu`, `carts`) and
//! (`shop-prod`, `eu`, `carts`) both become release `shop-prod-eu-carts` in namespace
//! `shop-prod-eu`, and names shortened to fit Helm's limit can meet too. Leases are keyed by
//! what is changed (namespace and release), so two such services never run Helm on one
//! release at once; these rules make sure the second one is refused instead of silently
//! taking over the first's release. Every namespace and release helm-service creates carries
//! ownership labels naming its Keptn project and stage (and, on releases, the service); a task
//! may change only what carries its own names or no ownership at all (a release an earlier
//! version installed, which it then labels). Namespaces are stricter, because a cluster's
//! other tenants live in them: protected ones are never touched, and an existing namespace
//! without our labels is adopted only when the operator said so (`--adopt-namespaces`).
//!
//! Pure decisions on labels someone else read; the handlers do the reading and writing.

use std::collections::BTreeMap;
use std::fmt;

use contracts::validate::Target;

use super::naming::ReleaseNames;

/// Label naming the Keptn project of a namespace or release helm-service created.
pub const PROJECT_LABEL: &str = "keptn.sh/project";
/// Label naming the Keptn stage of a namespace or release helm-service created.
pub const STAGE_LABEL: &str = "keptn.sh/stage";
/// Label naming the Keptn service of a release helm-service created.
pub const SERVICE_LABEL: &str = "keptn.sh/service";

/// The namespaces nobody may configure away: the cluster's own and the built-in default.
const BUILT_IN_PROTECTED: [&str; 2] = ["kube-*", "default"];

/// Labels a namespace or Kubernetes object carries.
pub type Labels = BTreeMap<String, String>;

/// The labels that make a namespace `target`'s stage's.
pub fn namespace_labels(target: &Target) -> Labels {
    Labels::from([
        (PROJECT_LABEL.to_owned(), target.project.clone()),
        (STAGE_LABEL.to_owned(), target.stage.clone()),
    ])
}

/// The labels that make a release (both of a service's releases) `target`'s, passed to
/// `helm upgrade --labels` so they are stored with every revision.
pub fn release_labels(target: &Target) -> Labels {
    let mut labels = namespace_labels(target);
    labels.insert(SERVICE_LABEL.to_owned(), target.service.clone());
    labels
}

/// Who a namespace or release belongs to, by its ownership labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub project: String,
    pub stage: String,
    /// Set on releases; namespaces belong to a stage, not to one service.
    pub service: Option<String>,
}

impl Owner {
    /// The owner the labels name; `None` when they carry no project label (not ours, or from
    /// a version that did not label). A project label without a stage label names a stage
    /// nobody has, so it never matches.
    pub fn of(labels: &Labels) -> Option<Owner> {
        let project = labels.get(PROJECT_LABEL)?.clone();
        Some(Owner {
            project,
            stage: labels.get(STAGE_LABEL).cloned().unwrap_or_default(),
            service: labels.get(SERVICE_LABEL).cloned(),
        })
    }

    fn is_stage_of(&self, target: &Target) -> bool {
        self.project == target.project && self.stage == target.stage
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(service) = &self.service {
            write!(f, "service {service} in ")?;
        }
        write!(f, "stage {} of project {}", self.stage, self.project)
    }
}

/// A namespace name, or a prefix of names ending in `*` (`*` alone: every namespace), as
/// `--protected-namespaces` and `--adopt-namespaces` take them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePattern(String);

impl NamespacePattern {
    /// Checks the pattern: lower-case letters, digits and `-`, optionally ending in `*`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let name = text.strip_suffix('*').unwrap_or(text);
        let valid = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid || (name.is_empty() && !text.ends_with('*')) || name.len() > 63 {
            return Err(format!(
                "{text:?} is not a namespace name or a prefix ending in '*' (lower-case letters, \
                 digits and '-')"
            ));
        }
        Ok(NamespacePattern(text.to_owned()))
    }

    pub fn matches(&self, namespace: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => namespace.starts_with(prefix),
            None => namespace == self.0,
        }
    }
}

impl fmt::Display for NamespacePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a namespace may not be deployed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protection {
    /// `kube-*` or `default`: always protected.
    BuiltIn(&'static str),
    /// The namespace helm-service itself runs in.
    Own,
    /// A pattern of `--protected-namespaces`.
    Configured(NamespacePattern),
}

impl fmt::Display for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protection::BuiltIn(pattern) => write!(
                f,
                "it matches {pattern}, which helm-service never deploys to (the cluster's own \
                 namespaces)"
            ),
            Protection::Own => f.write_str("it is the namespace helm-service itself runs in"),
            Protection::Configured(pattern) => {
                write!(f, "it matches {pattern} of --protected-namespaces")
            }
        }
    }
}

/// Why a task may not touch a namespace or a release.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnershipError {
    #[error(
        "namespace {namespace} of {wanted} is protected: {rule}; use other project or stage \
         names"
    )]
    Protected {
        namespace: String,
        /// `stage S of project P`.
        wanted: String,
        rule: Protection,
    },
    #[error(
        "namespace {namespace} belongs to {owner} (its {PROJECT_LABEL} and {STAGE_LABEL} \
         labels), not to {wanted}: both map to the same namespace, so helm-service refuses to \
         deploy there; rename the project or stage of one of them"
    )]
    NamespaceOfAnother {
        namespace: String,
        owner: Box<Owner>,
        wanted: String,
    },
    #[error(
        "namespace {namespace} exists and was not created by helm-service (it has no \
         {PROJECT_LABEL} label), so helm-service does not deploy {wanted} into it: label it \
         (kubectl label namespace {namespace} {PROJECT_LABEL}={project} {STAGE_LABEL}={stage}) \
         or allow adopting it with --adopt-namespaces {namespace}"
    )]
    NamespaceNotAdopted {
        namespace: String,
        wanted: String,
        project: String,
        stage: String,
    },
    #[error(
        "release {release} in namespace {namespace} belongs to {owner} (its keptn.sh labels), \
         not to {wanted}: both map to the same Helm release{shortened}, so helm-service \
         refuses to change it; rename one of the services, or its project or stage"
    )]
    ReleaseOfAnother {
        release: String,
        namespace: String,
        owner: Box<Owner>,
        wanted: String,
        /// Set when the release name was shortened to fit Helm's limit.
        shortened: Shortened,
    },
}

/// Says, in a message, that a release name was shortened (empty otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortened(pub bool);

impl fmt::Display for Shortened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 {
            f.write_str(" (its name was shortened to fit Helm's 53-character limit)")
        } else {
            Ok(())
        }
    }
}

/// `stage dev of project shop`, or with the service, for messages.
fn describe_stage(target: &Target) -> String {
    format!("stage {} of project {}", target.stage, target.project)
}

fn describe_service(target: &Target) -> String {
    format!("service {} in {}", target.service, describe_stage(target))
}

/// Where helm-service may deploy: protected namespaces, the namespaces it may adopt, and
/// its own.
#[derive(Debug, Clone, Default)]
pub struct NamespacePolicy {
    /// `--protected-namespaces`, on top of `kube-*` and `default`.
    pub protected: Vec<NamespacePattern>,
    /// `--adopt-namespaces`: existing namespaces without ownership labels that may be used
    /// (and are then labelled).
    pub adopt: Vec<NamespacePattern>,
    /// The namespace the worker runs in, when known.
    pub own: Option<String>,
}

impl NamespacePolicy {
    /// Refuses a protected namespace, naming the rule.
    pub fn check_protected(&self, namespace: &str, target: &Target) -> Result<(), OwnershipError> {
        let rule = BUILT_IN_PROTECTED
            .iter()
            .find(|pattern| NamespacePattern(pattern.to_string()).matches(namespace))
            .map(|pattern| Protection::BuiltIn(pattern))
            .or_else(|| (self.own.as_deref() == Some(namespace)).then_some(Protection::Own))
            .or_else(|| {
                self.protected
                    .iter()
                    .find(|pattern| pattern.matches(namespace))
                    .map(|pattern| Protection::Configured(pattern.clone()))
            });
        match rule {
            None => Ok(()),
            Some(rule) => Err(OwnershipError::Protected {
                namespace: namespace.to_owned(),
                wanted: describe_stage(target),
                rule,
            }),
        }
    }

    /// The labels to add to namespace `namespace` (`existing`: its labels, `None` when it
    /// does not exist yet) so that it is `target`'s stage's and carries `extra` (e.g.
    /// `istio-injection`): everything for a new namespace, only what is absent or different
    /// otherwise (nothing when all is in place). Refused when it belongs to another stage, or
    /// exists without ownership labels and may not be adopted.
    pub fn labels_to_add(
        &self,
        namespace: &str,
        existing: Option<&Labels>,
        target: &Target,
        extra: &Labels,
    ) -> Result<Labels, OwnershipError> {
        let mut wanted = namespace_labels(target);
        wanted.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        let Some(existing) = existing else {
            return Ok(wanted);
        };
        match Owner::of(existing) {
            Some(owner) if owner.is_stage_of(target) => {}
            Some(owner) => {
                return Err(OwnershipError::NamespaceOfAnother {
                    namespace: namespace.to_owned(),
                    owner: Box::new(owner),
                    wanted: describe_stage(target),
                })
            }
            None if self.adopt.iter().any(|pattern| pattern.matches(namespace)) => {
                tracing::info!(
                    namespace,
                    "adopting a namespace helm-service did not create (--adopt-namespaces)"
                );
            }
            None => {
                return Err(OwnershipError::NamespaceNotAdopted {
                    namespace: namespace.to_owned(),
                    wanted: describe_stage(target),
                    project: target.project.clone(),
                    stage: target.stage.clone(),
                })
            }
        }
        wanted.retain(|key, value| existing.get(key) != Some(value));
        Ok(wanted)
    }
}

/// Refuses to change `release` (one of `names`) when its latest revision's labels
/// (`latest`) say it belongs to another service. A release without ownership labels (an
/// earlier version's) is the target's by its name, and gets labelled by the next upgrade.
pub fn check_release(
    names: &ReleaseNames,
    release: &str,
    latest: Option<&Labels>,
    target: &Target,
) -> Result<(), OwnershipError> {
    let Some(owner) = foreign_owner(latest, target) else {
        return Ok(());
    };
    Err(OwnershipError::ReleaseOfAnother {
        release: release.to_owned(),
        namespace: names.namespace.clone(),
        owner: Box::new(owner),
        wanted: describe_service(target),
        shortened: Shortened(names.is_shortened(target)),
    })
}

/// The owner the labels of a release's latest revision (`latest`) name, when that is not
/// `target`'s service: who a release a task must leave alone belongs to.
pub fn foreign_owner(latest: Option<&Labels>, target: &Target) -> Option<Owner> {
    let owner = latest.and_then(Owner::of)?;
    let ours = owner.is_stage_of(target) && owner.service.as_deref() == Some(&target.service);
    (!ours).then_some(owner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::test_target as target;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn patterns(list: &[&str]) -> Vec<NamespacePattern> {
        list.iter()
            .map(|p| NamespacePattern::parse(p).unwrap())
            .collect()
    }

    #[test]
    fn patterns_match_names_and_prefixes() {
        let exact = NamespacePattern::parse("monitoring").unwrap();
        assert!(exact.matches("monitoring"));
        assert!(!exact.matches("monitoring-2"));
        let prefix = NamespacePattern::parse(" istio-*").unwrap();
        assert!(prefix.matches("istio-system"));
        assert!(!prefix.matches("istio"));
        assert!(NamespacePattern::parse("*").unwrap().matches("anything"));
        for bad in ["", "Kube", "a*b", "a b", "ns/x", "**"] {
            assert!(NamespacePattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn protected_namespaces_name_their_rule() {
        let policy = NamespacePolicy {
            protected: patterns(&["istio-*", "payments"]),
            own: Some("keptn-ops".into()),
            ..NamespacePolicy::default()
        };
        let err = policy
            .check_protected("kube-system", &target("kube", "system", "x"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "namespace kube-system of stage system of project kube is protected: it matches \
             kube-*, which helm-service never deploys to (the cluster's own namespaces); use \
             other project or stage names"
        );
        let own = policy.check_protected("keptn-ops", &target("keptn", "ops", "x"));
        assert!(matches!(
            own,
            Err(OwnershipError::Protected {
                rule: Protection::Own,
                ..
            })
        ));
        let configured = policy
            .check_protected("istio-system", &target("istio", "system", "x"))
            .unwrap_err();
        assert!(
            configured
                .to_string()
                .contains("it matches istio-* of --protected-namespaces"),
            "{configured}"
        );
        assert!(policy
            .check_protected("shop-dev", &target("shop", "dev", "x"))
            .is_ok());
        assert!(NamespacePolicy::default()
            .check_protected("default", &target("d", "e", "x"))
            .is_err());
    }

    #[test]
    fn a_new_namespace_gets_ownership_and_extra_labels() {
        let extra = labels(&[("istio-injection", "enabled")]);
        let added = NamespacePolicy::default()
            .labels_to_add("shop-dev", None, &target("shop", "dev", "carts"), &extra)
            .unwrap();
        assert_eq!(
            added,
            labels(&[
                ("istio-injection", "enabled"),
                (PROJECT_LABEL, "shop"),
                (STAGE_LABEL, "dev")
            ])
        );
    }

    #[test]
    fn an_owned_namespace_gets_only_what_is_missing() {
        let existing = labels(&[(PROJECT_LABEL, "shop"), (STAGE_LABEL, "dev"), ("team", "a")]);
        let policy = NamespacePolicy::default();
        let t = target("shop", "dev", "carts");
        assert!(policy
            .labels_to_add("shop-dev", Some(&existing), &t, &Labels::new())
            .unwrap()
            .is_empty());
        let extra = labels(&[("istio-injection", "enabled")]);
        assert_eq!(
            policy
                .labels_to_add("shop-dev", Some(&existing), &t, &extra)
                .unwrap(),
            extra
        );
    }

    #[test]
    fn a_namespace_of_another_stage_is_refused() {
        // (shop, prod-eu) created it; (shop-prod, eu) maps to the same name.
        let existing = labels(&[(PROJECT_LABEL, "shop"), (STAGE_LABEL, "prod-eu")]);
        let err = NamespacePolicy::default()
            .labels_to_add(
                "shop-prod-eu",
                Some(&existing),
                &target("shop-prod", "eu", "carts"),
                &Labels::new(),
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "namespace shop-prod-eu belongs to stage prod-eu of project shop (its \
             keptn.sh/project and keptn.sh/stage labels), not to stage eu of project shop-prod: \
             both map to the same namespace, so helm-service refuses to deploy there; rename \
             the project or stage of one of them"
        );
    }

    #[test]
    fn an_unlabelled_namespace_is_adopted_only_when_allowed() {
        let existing = labels(&[("team", "a")]);
        let t = target("shop", "dev", "carts");
        let err = NamespacePolicy::default()
            .labels_to_add("shop-dev", Some(&existing), &t, &Labels::new())
            .unwrap_err();
        assert!(
            matches!(err, OwnershipError::NamespaceNotAdopted { .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(
                "kubectl label namespace shop-dev keptn.sh/project=shop keptn.sh/stage=dev"
            ),
            "{err}"
        );
        assert!(err.to_string().contains("--adopt-namespaces shop-dev"));
        let adopting = NamespacePolicy {
            adopt: patterns(&["shop-*"]),
            ..NamespacePolicy::default()
        };
        assert_eq!(
            adopting
                .labels_to_add("shop-dev", Some(&existing), &t, &Labels::new())
                .unwrap(),
            namespace_labels(&t)
        );
    }

    #[test]
    fn releases_of_other_services_are_refused() {
        let first = target("shop", "prod-eu", "carts");
        let second = target("shop-prod", "eu", "carts");
        let names = ReleaseNames::of(&second);
        assert_eq!(names.user, ReleaseNames::of(&first).user);
        let owned = release_labels(&first);
        assert!(check_release(&names, &names.user, Some(&owned), &first).is_ok());
        assert!(check_release(&names, &names.user, None, &second).is_ok());
        assert!(check_release(&names, &names.user, Some(&Labels::new()), &second).is_ok());
        let err = check_release(&names, &names.user, Some(&owned), &second).unwrap_err();
        assert_eq!(
            err.to_string(),
            "release shop-prod-eu-carts in namespace shop-prod-eu belongs to service carts in \
             stage prod-eu of project shop (its keptn.sh labels), not to service carts in stage \
             eu of project shop-prod: both map to the same Helm release, so helm-service \
             refuses to change it; rename one of the services, or its project or stage"
        );
    }

    #[test]
    fn shortened_names_that_meet_are_refused_and_said_so() {
        let long = |tail: &str| format!("{}{tail}", "s".repeat(50));
        let first = target("shop", "dev", &long("-aaa"));
        let second = target("shop", "dev", &long("-bbb"));
        let names = ReleaseNames::of(&second);
        assert_eq!(names.user, ReleaseNames::of(&first).user);
        let err =
            check_release(&names, &names.user, Some(&release_labels(&first)), &second).unwrap_err();
        assert!(
            err.to_string()
                .contains("(its name was shortened to fit Helm's 53-character limit)"),
            "{err}"
        );
    }
}
