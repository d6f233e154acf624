//! `service.delete.finished`: a service was deleted from a Keptn project, so what helm-service
//! deployed of it goes too — the user and the generated release in every stage.
//!
//! The task holds the lease `<project>._.<service>` (all stages). It first finds the stages
//! (recorded step `stages`): the inventory's, plus the ones where Helm's records in the cluster
//! show a release named the way helm-service names this service's releases, because the
//! inventory can miss some (a lost entry, a deployment killed before it wrote one). Then each
//! stage is one recorded step `uninstall-<stage>`, run while also holding that stage's release
//! lease (`<namespace>.<release>`), so it never overlaps a deployment, release or scaling of
//! the service there, and a redelivered event skips the stages already done. A release that
//! carries the service's name but another service's ownership labels (two Keptn names that
//! map to one Kubernetes name), and anything in a protected namespace, is left alone and
//! named in the report. A stage that fails does not stop the others; the report names what
//! was removed and what was not.
//!
//! The event is itself a report, so the pipeline sends no `.started`; our answer is a
//! `service.delete.finished` from source `helm-service`, which intake ignores when it comes
//! back to us.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use contracts::data::TaskResult;
use contracts::names::{validate_keptn_name, NameKind};
use contracts::validate::Target;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::platform::Platform;
use super::{Outcome, Steps, TaskError, TaskHandler};
use crate::deploy::inventory::InventoryError;
use crate::deploy::naming::ReleaseNames;
use crate::deploy::ownership;
use crate::helm::{ReleaseRef, Uninstalled};
use crate::pipeline::intake::{ReleaseKey, Task, TaskPayload};

/// The `service.delete.finished` handler.
pub struct ServiceDeleteHandler {
    platform: Arc<Platform>,
}

impl ServiceDeleteHandler {
    pub fn new(platform: Arc<Platform>) -> Self {
        ServiceDeleteHandler { platform }
    }
}

/// The recorded stage list: a redelivered event works through the same stages and reports
/// all of them, including the ones an earlier attempt removed (which nothing shows any more).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Discovered {
    stages: Vec<String>,
    /// Set when Helm's records could not be searched cluster-wide (not allowed to list
    /// Secrets in all namespaces): only the inventory's stages were considered.
    cluster_unsearched: Option<String>,
}

/// The recorded output of one stage's step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StageRemoval {
    namespace: String,
    /// Releases uninstalled, generated before user (traffic routing goes before its target).
    uninstalled: Vec<String>,
    /// Whether the stage's inventory entry existed and was removed.
    inventory_entry: bool,
    /// Why releases named like the service's were not uninstalled: another service's (by
    /// their ownership labels), or in a protected namespace.
    #[serde(default)]
    left_alone: Vec<String>,
}

/// How one stage ended in this attempt.
enum StageEnd {
    Removed(StageRemoval),
    Failed(String),
    /// Worth another delivery (API server or NATS briefly away, shutdown).
    Transient(String),
}

#[async_trait]
impl TaskHandler for ServiceDeleteHandler {
    async fn run(&self, task: &Task, steps: &mut Steps<'_>) -> Result<Outcome, TaskError> {
        let TaskPayload::ServiceDelete { service: key, .. } = &task.payload else {
            return Err(TaskError::misrouted("the service delete handler", task));
        };
        let deletion = Deletion {
            platform: &self.platform,
            project: &key.project,
            service: &key.service,
            // A named stage is the task's own lease: taking it again would wait on ourselves.
            stage_lease_held: key.stage.is_some(),
        };
        let discovered = match &key.stage {
            Some(stage) => Discovered {
                stages: vec![stage.clone()],
                cluster_unsearched: None,
            },
            None => steps.step("stages", || deletion.discover()).await?,
        };
        info!(stages = ?discovered.stages, "deleting the service's releases");
        let mut ends = Vec::with_capacity(discovered.stages.len());
        for stage in &discovered.stages {
            ends.push((
                stage.as_str(),
                deletion.remove_stage_once(stage, steps).await,
            ));
        }
        let transient: Vec<String> = ends
            .iter()
            .filter_map(|(stage, end)| match end {
                StageEnd::Transient(why) => Some(format!("stage {stage}: {why}")),
                _ => None,
            })
            .collect();
        if !transient.is_empty() {
            // The stages done are recorded; the next delivery does only the rest.
            return Err(TaskError::Transient(transient.join("; ")));
        }
        Ok(report(
            &key.project,
            &key.service,
            key.stage.as_deref(),
            &discovered,
            &ends,
        ))
    }
}

/// One deletion task, with what it works on.
struct Deletion<'a> {
    platform: &'a Platform,
    project: &'a str,
    service: &'a str,
    stage_lease_held: bool,
}

impl Deletion<'_> {
    /// The service in `stage`: the checked project and service names, and a stage the
    /// inventory or Helm's records named.
    fn target(&self, stage: &str) -> Target {
        Target {
            project: self.project.to_owned(),
            stage: stage.to_owned(),
            service: self.service.to_owned(),
        }
    }

    /// The stages to clear: the inventory's, plus those where the cluster shows a release of
    /// the service (when we may list Helm's records in all namespaces).
    async fn discover(&self) -> Result<Discovered, TaskError> {
        let mut stages: BTreeSet<String> = self
            .platform
            .inventory
            .stage_names_of(self.project, self.service)
            .await?
            .into_iter()
            .collect();
        let mut cluster_unsearched = None;
        match self
            .platform
            .cluster
            .helm_releases_in_all_namespaces()
            .await
        {
            Ok(releases) => {
                stages.extend(stages_with_releases(self.project, self.service, &releases))
            }
            Err(err) if err.status_code() == Some(403) => {
                warn!(error = %err, "not allowed to list Helm's release records in all namespaces: deleting in the stages the inventory knows only; grant list on secrets cluster-wide to find the others");
                cluster_unsearched = Some(err.to_string());
            }
            Err(err) => return Err(err.into()),
        }
        Ok(Discovered {
            stages: stages.into_iter().collect(),
            cluster_unsearched,
        })
    }

    /// Step `uninstall-<stage>`, unless an earlier attempt recorded it: the stage's releases
    /// uninstalled while holding its release lease. Only a completed stage is recorded, so a
    /// failed one is tried again by a later delivery.
    async fn remove_stage_once(&self, stage: &str, steps: &mut Steps<'_>) -> StageEnd {
        let names = match ReleaseNames::new(self.project, stage, self.service) {
            Ok(names) => names,
            Err(err) => return StageEnd::Failed(err.to_string()),
        };
        let leases = steps.leases();
        // The key a deployment, release or scaling of the service in `stage` holds.
        let lease = ReleaseKey::of(&names);
        let recorded = steps
            .step(&format!("uninstall-{stage}"), || async {
                if self.stage_lease_held {
                    self.remove_stage(stage, &names).await
                } else {
                    leases
                        .exclusive(lease.lease_key(), self.remove_stage(stage, &names))
                        .await
                }
            })
            .await;
        match recorded {
            Ok(removal) => StageEnd::Removed(removal),
            Err(TaskError::Failed(why)) => StageEnd::Failed(why),
            Err(TaskError::Transient(why)) => StageEnd::Transient(why),
        }
    }

    /// Uninstalls the generated and the user release of the service in `stage` (absent ones
    /// are fine) and removes its inventory entry. Releases of another service that carry the
    /// same names (their ownership labels say whose they are) and anything in a protected
    /// namespace are left alone.
    ///
    /// A release left `pending-*` by a killed helm needs no recovery first: `helm uninstall`
    /// (Helm 3 and 4) refuses only a release that is already uninstalled, and removes the
    /// objects of the latest revision whatever its status.
    async fn remove_stage(
        &self,
        stage: &str,
        names: &ReleaseNames,
    ) -> Result<StageRemoval, TaskError> {
        let target = self.target(stage);
        let inventory = &self.platform.inventory;
        let (inventory_entry, names) = match inventory.get(&target).await {
            // A service deployed in its own namespace (`keptn.namespace`) is removed there.
            Ok(Some(entry)) => match entry.own_namespace(names) {
                Some(namespace) => (true, names.clone().in_namespace(namespace)),
                None => (true, names.clone()),
            },
            Ok(None) => (false, names.clone()),
            // Unreadable by this version, but its key says whose it is: it goes too.
            Err(InventoryError::Corrupt { .. }) => (true, names.clone()),
            Err(err) => return Err(err.into()),
        };
        let names = &names;
        let mut uninstalled = Vec::new();
        let mut left_alone = Vec::new();
        match self
            .platform
            .namespaces
            .check_protected(&names.namespace, &target)
        {
            Err(protected) => left_alone.push(protected.to_string()),
            Ok(()) => {
                for release in [&names.generated, &names.user] {
                    match self.uninstall_if_ours(names, release, &target).await? {
                        Ok(true) => uninstalled.push(release.clone()),
                        Ok(false) => {}
                        Err(why) => left_alone.push(why),
                    }
                }
            }
        }
        if inventory_entry {
            inventory.delete(&target).await?;
        }
        Ok(StageRemoval {
            namespace: names.namespace.clone(),
            uninstalled,
            inventory_entry,
            left_alone,
        })
    }

    /// Uninstalls `release` unless its latest revision belongs to another service: whether
    /// it was there to uninstall, or why it was left alone.
    async fn uninstall_if_ours(
        &self,
        names: &ReleaseNames,
        release: &str,
        target: &Target,
    ) -> Result<Result<bool, String>, TaskError> {
        let namespace = &names.namespace;
        let history = self
            .platform
            .cluster
            .release_revisions(namespace, release)
            .await?;
        let latest = history.last().map(|revision| &revision.labels);
        if let Some(owner) = ownership::foreign_owner(latest, target) {
            warn!(release, namespace = %namespace, %owner, "not uninstalling another service's release that carries this service's name");
            return Ok(Err(format!(
                "release {release} in namespace {namespace} belongs to {owner}"
            )));
        }
        let found = self
            .platform
            .helm
            .uninstall(release, namespace, None)
            .await?;
        if found == Uninstalled::Removed {
            info!(release, namespace = %namespace, "uninstalled");
        }
        Ok(Ok(found == Uninstalled::Removed))
    }
}

/// `service carts of project sockshop`, for messages.
fn who(project: &str, service: &str) -> String {
    format!("service {service} of project {project}")
}

/// The finished event: succeeded when every stage is clear (also when there was nothing to
/// delete), errored naming the failed stages and what was removed otherwise.
fn report(
    project: &str,
    service: &str,
    named_stage: Option<&str>,
    discovered: &Discovered,
    ends: &[(&str, StageEnd)],
) -> Outcome {
    let who = who(project, service);
    let mut removed = Vec::new();
    let mut failed = Vec::new();
    let mut left_alone = Vec::new();
    for (stage, end) in ends {
        if let StageEnd::Removed(removal) = end {
            left_alone.extend(
                removal
                    .left_alone
                    .iter()
                    .map(|why| format!("stage {stage}: {why}")),
            );
        }
        match end {
            StageEnd::Removed(removal) if !removal.uninstalled.is_empty() => {
                removed.push(format!(
                    "stage {stage}: uninstalled {} in namespace {}",
                    removal.uninstalled.join(" and "),
                    removal.namespace
                ));
            }
            StageEnd::Removed(removal) if removal.inventory_entry => removed.push(format!(
                "stage {stage}: no release left in namespace {}, inventory entry removed",
                removal.namespace
            )),
            StageEnd::Removed(_) => {}
            StageEnd::Failed(why) | StageEnd::Transient(why) => {
                failed.push(format!("stage {stage}: {why}"));
            }
        }
    }
    let unsearched = discovered
        .cluster_unsearched
        .as_ref()
        .map(|why| {
            format!(
                " (only the stages in helm-service's inventory were checked, because listing Helm's release records in all namespaces failed: {why}; allow helm-service to list secrets cluster-wide to find releases the inventory does not know)"
            )
        })
        .unwrap_or_default();
    let left_alone = if left_alone.is_empty() {
        String::new()
    } else {
        format!(
            " (left alone, not this service's to delete: {})",
            left_alone.join("; ")
        )
    };
    let unsearched = format!("{left_alone}{unsearched}");
    if !failed.is_empty() {
        let removed = if removed.is_empty() {
            "nothing was removed".to_owned()
        } else {
            format!("removed: {}", removed.join("; "))
        };
        return Outcome::errored(format!(
            "could not delete everything of {who}: {}; {removed}{unsearched}. The releases of the failed stages are still installed: fix the cause, then delete the service again or run helm uninstall on them",
            failed.join("; ")
        ));
    }
    if removed.is_empty() {
        let message = match named_stage {
            Some(stage) => match ReleaseNames::new(project, stage, service) {
                Ok(names) => format!(
                    "{who} is not deployed in stage {stage} (no release {} or {} of it in namespace {}, no inventory entry): nothing to delete{unsearched}",
                    names.user, names.generated, names.namespace
                ),
                Err(_) => format!("{who} is not deployed in stage {stage}: nothing to delete{unsearched}"),
            },
            None => format!(
                "{who} is not deployed in any stage (no Helm release of it and no inventory entry): nothing to delete{unsearched}"
            ),
        };
        return Outcome::succeeded(TaskResult::Pass, message);
    }
    Outcome::succeeded(
        TaskResult::Pass,
        format!("deleted {who}: {}{unsearched}", removed.join("; ")),
    )
}

/// The stages where `releases` (Helm's records across the cluster) hold a release of
/// `service`: in namespace `<project>-<stage>` for a valid stage name, named as
/// [`ReleaseNames`] names the user or the generated release there.
fn stages_with_releases(project: &str, service: &str, releases: &[ReleaseRef]) -> BTreeSet<String> {
    let prefix = format!("{project}-");
    releases
        .iter()
        .filter_map(|location| {
            let stage = location.namespace.strip_prefix(&prefix)?;
            validate_keptn_name(NameKind::Stage, stage).ok()?;
            let names = ReleaseNames::new(project, stage, service).ok()?;
            (location.release == names.user || location.release == names.generated)
                .then(|| stage.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(namespace: &str, release: &str) -> ReleaseRef {
        ReleaseRef {
            namespace: namespace.into(),
            release: release.into(),
        }
    }

    fn stages(project: &str, service: &str, releases: &[ReleaseRef]) -> Vec<String> {
        stages_with_releases(project, service, releases)
            .into_iter()
            .collect()
    }

    #[test]
    fn stages_are_found_from_the_service_releases_only() {
        let releases = [
            at("shop-dev", "shop-dev-hello"),
            at("shop-dev", "shop-dev-hello-generated"),
            at("shop-staging", "shop-staging-hello-generated"),
            at("shop-dev", "shop-dev-other"),
            at("shop-prod", "shop-prod-other"),
            at("shop-prod", "shop-prod-hello-db"),
            at("other-dev", "other-dev-hello"),
            at("shop", "shop-hello"),
            at("kube-system", "hello"),
        ];
        assert_eq!(stages("shop", "hello", &releases), ["dev", "staging"]);
        assert_eq!(stages("shop", "other", &releases), ["dev", "prod"]);
        assert!(stages("shop", "missing", &releases).is_empty());
        assert!(stages("shop", "hello", &[]).is_empty());
    }

    #[test]
    fn shortened_release_names_are_recognised() {
        // Long names drop the project (see `ReleaseNames::new`): the release is
        // `<stage>-<service>` in namespace `<project>-<stage>`.
        let project = "p".repeat(30);
        let names = ReleaseNames::new(&project, "production", "carts").unwrap();
        assert_eq!(names.user, "production-carts");
        let namespace = format!("{project}-production");
        assert_eq!(
            stages(&project, "carts", &[at(&namespace, &names.generated)]),
            ["production"]
        );
        // The same name in another project's namespace is not ours.
        assert!(stages(&project, "carts", &[at("shop-production", &names.user)]).is_empty());
    }

    fn discovered(stages: &[&str], unsearched: Option<&str>) -> Discovered {
        Discovered {
            stages: stages.iter().map(|s| s.to_string()).collect(),
            cluster_unsearched: unsearched.map(str::to_owned),
        }
    }

    fn removed(namespace: &str, releases: &[&str], inventory_entry: bool) -> StageEnd {
        StageEnd::Removed(StageRemoval {
            namespace: namespace.into(),
            uninstalled: releases.iter().map(|r| r.to_string()).collect(),
            inventory_entry,
            left_alone: Vec::new(),
        })
    }

    #[test]
    fn releases_left_alone_are_named() {
        let kept = StageEnd::Removed(StageRemoval {
            namespace: "shop-prod-eu".into(),
            uninstalled: Vec::new(),
            inventory_entry: false,
            left_alone: vec![
                "release shop-prod-eu-carts in namespace shop-prod-eu belongs to service carts \
                 in stage prod-eu of project shop"
                    .into(),
            ],
        });
        let outcome = report(
            "shop-prod",
            "carts",
            Some("eu"),
            &discovered(&["eu"], None),
            &[("eu", kept)],
        );
        assert_eq!(outcome.status, contracts::data::Status::Succeeded);
        assert!(
            outcome.message.ends_with(
                "nothing to delete (left alone, not this service's to delete: stage eu: release \
                 shop-prod-eu-carts in namespace shop-prod-eu belongs to service carts in stage \
                 prod-eu of project shop)"
            ),
            "{}",
            outcome.message
        );
    }

    #[test]
    fn a_full_deletion_names_what_was_uninstalled() {
        let ends = [
            (
                "dev",
                removed(
                    "shop-dev",
                    &["shop-dev-hello-generated", "shop-dev-hello"],
                    true,
                ),
            ),
            ("qa", removed("shop-qa", &[], true)),
            ("staging", removed("shop-staging", &[], false)),
        ];
        let outcome = report(
            "shop",
            "hello",
            None,
            &discovered(&["dev", "qa", "staging"], None),
            &ends,
        );
        assert_eq!(outcome.status, contracts::data::Status::Succeeded);
        assert_eq!(outcome.result, Some(TaskResult::Pass));
        assert_eq!(
            outcome.message,
            "deleted service hello of project shop: stage dev: uninstalled shop-dev-hello-generated and shop-dev-hello in namespace shop-dev; stage qa: no release left in namespace shop-qa, inventory entry removed"
        );
    }

    #[test]
    fn nothing_deployed_is_a_success_that_says_so() {
        let outcome = report("shop", "ghost", None, &discovered(&[], None), &[]);
        assert_eq!(outcome.status, contracts::data::Status::Succeeded);
        assert_eq!(outcome.result, Some(TaskResult::Pass));
        assert!(
            outcome.message.contains("is not deployed in any stage"),
            "{}",
            outcome.message
        );
        let ends = [("dev", removed("shop-dev", &[], false))];
        let outcome = report(
            "shop",
            "ghost",
            Some("dev"),
            &discovered(&["dev"], None),
            &ends,
        );
        assert_eq!(outcome.result, Some(TaskResult::Pass));
        assert_eq!(
            outcome.message,
            "service ghost of project shop is not deployed in stage dev (no release shop-dev-ghost or shop-dev-ghost-generated of it in namespace shop-dev, no inventory entry): nothing to delete"
        );
        // Without the cluster's view the message says what was not checked, and how to fix it.
        let outcome = report(
            "shop",
            "ghost",
            None,
            &discovered(&[], Some("Kubernetes API: list: 403 Forbidden")),
            &[],
        );
        assert!(
            outcome.message.contains("403 Forbidden")
                && outcome.message.contains("list secrets cluster-wide"),
            "{}",
            outcome.message
        );
    }

    #[test]
    fn a_failed_stage_makes_the_task_errored_and_keeps_what_was_removed() {
        let ends = [
            ("dev", removed("shop-dev", &["shop-dev-hello"], true)),
            (
                "staging",
                StageEnd::Failed("helm uninstall shop-staging-hello failed: boom".into()),
            ),
        ];
        let outcome = report(
            "shop",
            "hello",
            None,
            &discovered(&["dev", "staging"], None),
            &ends,
        );
        assert_eq!(outcome.status, contracts::data::Status::Errored);
        assert_eq!(outcome.result, Some(TaskResult::Fail));
        let message = &outcome.message;
        assert!(
            message.starts_with(
                "could not delete everything of service hello of project shop: stage staging: helm uninstall shop-staging-hello failed: boom; removed: stage dev: uninstalled shop-dev-hello in namespace shop-dev"
            ),
            "{message}"
        );
        assert!(message.contains("fix the cause"), "{message}");
    }

    #[test]
    fn namespaces_without_a_valid_stage_are_ignored() {
        for namespace in ["shop-", "shop-Dev", "shop--x", "shop-dev-"] {
            let release = format!("{namespace}-hello");
            assert!(
                stages("shop", "hello", &[at(namespace, &release)]).is_empty(),
                "{namespace}"
            );
        }
    }
}
