//! `deployment.triggered`: deploy the user's chart and the routing around it.
//!
//! The task observes (chart, inventory, Helm storage, cluster), skips everything when the
//! same chart is already deployed and healthy, and otherwise runs two recorded steps:
//! the user release (upgrade, then wait for the rollout with a watch and run the tests;
//! restore the last good revision when it fails) and the generated release (mesh routing or
//! blue/green), which is where traffic moves to the new canary on every layer: with the
//! `service` layer after a promotion or rollback the user release is deployed *held on the
//! primary* and switched to the canary in that step (`replicas::held_on_primary`).
//! A redelivered event after a crash skips the step that was recorded as done.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use contracts::data::{DeploymentStrategy, TaskResult};
use contracts::validate::Target;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tracing::{info, warn};

use super::deployed_service::{DeployedService, ReleaseHistories};
use super::platform::{private_dir, Platform};
use super::{Outcome, Steps, TaskError, TaskHandler};
use crate::charts::archive::Chart;
use crate::charts::values::deep_merge;
use crate::charts::ChartLocation;
use crate::cluster::readiness::{awaited_in, Awaited, Kind};
use crate::cluster::{test_pods, StoredRevision};
use crate::deploy::generated::{BlueGreenModel, GeneratedModel, MeshModel, Routing};
use crate::deploy::inventory::InventoryEntry;
use crate::deploy::manifest::{lowest_tcp_port, name_of, Manifest};
use crate::deploy::naming::chart_namespace;
use crate::deploy::replicas;
use crate::deploy::traffic::TrafficLayer;
use crate::deploy::uris::{local_uri, Endpoints};
use crate::deploy::KeptnValues;
use crate::helm::ReleaseStatus;
use crate::pipeline::intake::{Task, TaskPayload};

/// Label Istio's sidecar injector looks for; blue/green needs the sidecars.
const ISTIO_INJECTION: (&str, &str) = ("istio-injection", "enabled");

/// The `deployment.triggered` handler.
pub struct DeploymentHandler {
    platform: Arc<Platform>,
}

impl DeploymentHandler {
    pub fn new(platform: Arc<Platform>) -> Self {
        DeploymentHandler { platform }
    }
}

#[async_trait]
impl TaskHandler for DeploymentHandler {
    async fn run(&self, task: &Task, steps: &mut Steps<'_>) -> Result<Outcome, TaskError> {
        let TaskPayload::Deployment { data, strategy, .. } = &task.payload else {
            return Err(TaskError::misrouted("the deployment handler", task));
        };
        let service = DeployedService::of_task(&self.platform, task)?;
        let details = data.deployment.clone().unwrap_or_default();
        let target = service.target;
        let mut deployment = Deployment {
            location: ChartLocation::from(target),
            service,
            strategy: *strategy,
            commit: task.event.git_commit_id().map(str::to_owned),
            values_change: data
                .configuration_change
                .as_ref()
                .map(|change| change.values.clone())
                .unwrap_or_default(),
            triggered_uris: (
                details.deployment_uris_local,
                details.deployment_uris_public,
            ),
            event_id: task.event.id().to_owned(),
        };
        deployment.run(steps).await
    }
}

/// One deployment task, with everything derived from the event.
struct Deployment<'a> {
    /// The releases it changes, and how.
    service: DeployedService<'a>,
    /// Where the service's chart is stored.
    location: ChartLocation,
    strategy: DeploymentStrategy,
    commit: Option<String>,
    values_change: Map<String, Value>,
    /// `(local, public)` URIs of the triggered event: reported when nothing better is known.
    triggered_uris: (Vec<String>, Vec<String>),
    event_id: String,
}

/// The recorded output of the user-release step.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UserStepOutput {
    revision: u32,
    /// Deployments of the user chart (what a rollout waits for).
    deployments: Vec<String>,
    /// The other objects of the user chart that have a readiness (absent in records of
    /// earlier versions).
    #[serde(default)]
    awaited: Vec<Awaited>,
    /// Services of the user chart, for the mesh routing.
    services: Vec<String>,
    main_service: Option<String>,
    main_port: Option<u16>,
    /// The revision keeps the `service` layer's Services on the primary
    /// (`replicas::held_on_primary`): the generated-release step switches them to the canary.
    /// Absent in records of earlier versions.
    #[serde(default)]
    held_on_primary: bool,
}

/// The recorded output of the generated-release step.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct GeneratedStepOutput {
    revision: Option<u32>,
    /// Deployments of the generated chart (the blue/green primary).
    deployments: Vec<String>,
    /// The user release's revision after the step, when the step wrote one (the switch of a
    /// deployment held on the primary to the canary). Absent in records of earlier versions.
    #[serde(default)]
    user_revision: Option<u32>,
}

impl Deployment<'_> {
    async fn run(&mut self, steps: &mut Steps<'_>) -> Result<Outcome, TaskError> {
        let (chart, commit) = self.prepare_chart().await?;
        self.choose_namespace(&chart).await?;
        let digest = chart.digest();
        // Read once per attempt and shared by every decision below (nothing else changes the
        // releases while we hold the release's lease).
        let stored = self.service.recovered_histories().await?;
        let mut labels = BTreeMap::new();
        if self.strategy == DeploymentStrategy::BlueGreenService && self.traffic().needs_sidecars()
        {
            labels.insert(ISTIO_INJECTION.0.to_owned(), ISTIO_INJECTION.1.to_owned());
        }
        self.service.claim_namespace(&labels).await?;

        if let Some(entry) = self.unchanged(&digest, &stored).await? {
            info!(release = %self.service.names.user, revision = entry.user_revision, "chart and values unchanged and the release is healthy: not running helm");
            self.service.platform.metrics.unchanged_deployments.inc();
            let message = format!(
                "{} is already deployed with this chart and these values (release {} revision {} in namespace {}, healthy): nothing to do",
                self.target().service, entry.user_release, entry.user_revision, entry.namespace
            );
            return Ok(self.outcome(&entry, message));
        }

        // The manifest read by the user step, handed to the generated step without a second
        // helm call (absent when the user step was done by an earlier attempt).
        let mut manifest = None;
        let user: UserStepOutput = steps
            .step("user-release", || {
                self.deploy_user(&chart, &stored, &mut manifest)
            })
            .await?;
        let generated: Option<GeneratedStepOutput> = match self.strategy {
            DeploymentStrategy::UserManaged => None,
            _ => Some(
                steps
                    .step("generated-release", || {
                        self.deploy_generated(&user, manifest.take(), stored.generated_latest())
                    })
                    .await?,
            ),
        };

        let uris = self.uris(&user, commit.as_deref()).await?;
        let entry = self.inventory_entry(digest, &user, generated.as_ref(), uris, commit);
        let user_revision = entry.user_revision;
        self.service
            .platform
            .inventory
            .put(self.target(), &entry)
            .await?;
        let message = format!(
            "deployed chart {} {} as release {} revision {} in namespace {} ({})",
            chart.name(),
            chart.version(),
            self.service.names.user,
            user_revision,
            self.service.names.namespace,
            self.strategy.as_str()
        );
        Ok(self.outcome(&entry, message))
    }

    /// The service's own namespace when its chart names one (`keptn.namespace`), else the
    /// stage's. A service deployed in one namespace is not moved to another: its releases
    /// would stay behind, so the deployment is refused until the service is deleted.
    async fn choose_namespace(&mut self, chart: &Chart) -> Result<(), TaskError> {
        let values = chart
            .values()
            .map_err(|err| TaskError::Failed(format!("cannot read the chart's values: {err}")))?;
        let own = chart_namespace(&values).map_err(TaskError::Failed)?;
        let wanted = own
            .clone()
            .unwrap_or_else(|| self.service.names.namespace.clone());
        let deployed = self.service.platform.inventory.get(self.target()).await?;
        if let Some(entry) = deployed.filter(|entry| entry.user_release == self.service.names.user)
        {
            if entry.namespace != wanted {
                return Err(TaskError::Failed(format!(
                    "{} is deployed in namespace {} and its chart now names namespace {wanted}: \
                     moving a service between namespaces is not supported (its releases would \
                     stay behind); delete the service first, or set keptn.namespace back",
                    self.service.describe(),
                    entry.namespace
                )));
            }
        }
        if let Some(namespace) = own {
            self.service.relocate(&namespace)?;
        }
        Ok(())
    }

    /// What the finished deployment leaves in the inventory: the releases and revisions
    /// it wrote, the chart digest an unchanged redeploy compares, the Deployments whose
    /// readiness says the service is healthy, and what was reported.
    fn inventory_entry(
        &self,
        chart_digest: String,
        user: &UserStepOutput,
        generated: Option<&GeneratedStepOutput>,
        (uris_local, uris_public): (Vec<String>, Vec<String>),
        commit: Option<String>,
    ) -> InventoryEntry {
        let mut deployments = user.deployments.clone();
        if let Some(generated) = generated {
            deployments.extend(generated.deployments.iter().cloned());
        }
        let generated_revision = generated.and_then(|g| g.revision);
        let user_revision = generated
            .and_then(|g| g.user_revision)
            .unwrap_or(user.revision);
        InventoryEntry {
            strategy: self.strategy.as_str().to_owned(),
            traffic: self.traffic_of_entry(),
            namespace: self.service.names.namespace.clone(),
            user_release: self.service.names.user.clone(),
            user_revision,
            generated_release: generated_revision.map(|_| self.service.names.generated.clone()),
            generated_revision,
            chart_digest,
            deployments,
            awaited: user.awaited.clone(),
            uris_local,
            uris_public,
            deployment_names: vec![self.keptn_role().to_owned()],
            git_commit: commit.or_else(|| self.commit.clone()),
            event_id: self.event_id.clone(),
            updated_at: Utc::now(),
        }
    }

    fn target(&self) -> &Target {
        self.service.target
    }

    /// The user chart's role, its `keptn.deployment` value; also the reported deployment name.
    fn keptn_role(&self) -> &'static str {
        match self.strategy {
            DeploymentStrategy::Direct => "direct",
            DeploymentStrategy::BlueGreenService => "canary",
            DeploymentStrategy::UserManaged => "user_managed",
        }
    }

    fn keptn_values(&self, deployment: &str) -> KeptnValues {
        KeptnValues::of(self.target(), deployment)
    }

    /// Loads the user chart and, when the event changes values, merges them in and
    /// stores the chart back so the next deployment starts from it. Merging the same
    /// values twice gives the same chart, so a redelivered event may run this again.
    async fn prepare_chart(&self) -> Result<(Chart, Option<String>), TaskError> {
        let store = &self.service.platform.charts;
        let pin = if self.service.platform.use_commit_id {
            self.commit.as_deref()
        } else {
            None
        };
        let (at, target) = (&self.location, self.target());
        let fetched = store.fetch(at, pin).await?.ok_or_else(|| {
            let Target { project, stage, service } = target;
            TaskError::Failed(format!(
                "no chart for service {service} in stage {stage} of project {project}: expected helm/{service}.tgz in the {}; upload it with `helm-service charts push --project {project} --stage {stage} --service {service} <chart>`",
                store.describe()
            ))
        })?;
        let chart = Chart::from_archive(&fetched.archive, &self.service.platform.chart_limits)
            .map_err(|err| {
                TaskError::Failed(format!(
                    "the chart helm/{}.tgz of service {} in stage {} is not acceptable: {err}",
                    target.service, target.service, target.stage
                ))
            })?;
        if self.values_change.is_empty() {
            return Ok((chart, fetched.commit));
        }
        let mut values = chart.values().map_err(|err| {
            TaskError::Failed(format!("cannot merge configurationChange.values: {err}"))
        })?;
        deep_merge(&mut values, &Value::Object(self.values_change.clone()));
        let merged = chart.with_values(&values);
        if merged.files() != chart.files() {
            store.store(at, &merged.to_archive()).await?;
            info!(chart = %at.object_name(), "stored the chart with the merged values");
        }
        Ok((merged, fetched.commit))
    }

    /// The inventory entry when the deployed state equals what this event asks for and
    /// is healthy: the same chart digest and strategy, the recorded revisions still the
    /// latest and deployed in Helm's storage, and every Deployment ready.
    async fn unchanged(
        &self,
        digest: &str,
        stored: &ReleaseHistories,
    ) -> Result<Option<InventoryEntry>, TaskError> {
        let Some(entry) = self.service.platform.inventory.get(self.target()).await? else {
            return Ok(None);
        };
        let entry_traffic = match (&entry.traffic, self.strategy) {
            (_, DeploymentStrategy::UserManaged) => None,
            (None, _) => Some(TrafficLayer::Istio.as_str().to_owned()),
            (Some(traffic), _) => Some(traffic.clone()),
        };
        if entry.chart_digest != digest
            || entry.strategy != self.strategy.as_str()
            || entry_traffic != self.traffic_of_entry()
        {
            return Ok(None);
        }
        let is_current = |revisions: &[StoredRevision], revision: u32| {
            revisions
                .last()
                .is_some_and(|latest| latest.revision == revision && latest.is_deployed())
        };
        let generated_current = match (&entry.generated_release, entry.generated_revision) {
            (Some(name), Some(revision)) => {
                name == &self.service.names.generated && is_current(&stored.generated, revision)
            }
            _ => true,
        };
        if entry.namespace != self.service.names.namespace
            || entry.user_release != self.service.names.user
            || !is_current(&stored.user, entry.user_revision)
            || !generated_current
        {
            return Ok(None);
        }
        if !self
            .service
            .platform
            .cluster
            .deployments_ready(&entry.namespace, &entry.deployments)
            .await?
            || !self
                .service
                .platform
                .cluster
                .objects_ready(&entry.namespace, &entry.awaited)
                .await?
        {
            return Ok(None);
        }
        Ok(Some(entry))
    }

    /// Upgrades the user release and waits for its rollout; on failure the release goes
    /// back to its last good revision (or away, when it never had one) and the task fails
    /// with the cause.
    async fn deploy_user(
        &self,
        chart: &Chart,
        stored: &ReleaseHistories,
        manifest_out: &mut Option<Manifest>,
    ) -> Result<UserStepOutput, TaskError> {
        let release = &self.service.names.user;
        let last_good = stored.user_last_good();
        let dir = private_dir()?;
        let chart_dir = chart
            .write_to(dir.path())
            .map_err(|err| TaskError::Transient(format!("unpacking the chart: {err}")))?;
        let values = self.keptn_values(self.keptn_role()).to_values();
        let held_on_primary = self.holds_primary(stored).await?;
        let upgraded = if held_on_primary {
            let chart_bytes = chart.files().values().map(Vec::len).sum();
            self.upgrade_held_on_primary(&chart_dir, chart_bytes, &values)
                .await
                .map(|(status, rendering)| (status, Some(rendering)))
        } else {
            self.service
                .upgrade(release, &chart_dir, &values, None)
                .await
                .map(|status| (status, None))
                .map_err(TaskError::from)
        };
        let (status, rendering) = match upgraded {
            Ok(upgraded) => upgraded,
            Err(err) => return Err(self.undo(err, release, last_good).await),
        };
        let manifest = match rendering {
            Some(rendering) => rendering,
            None => self.read_manifest(release).await?,
        };
        if self.strategy == DeploymentStrategy::BlueGreenService {
            if let Err(err) = BlueGreenModel::from_manifest(self.routing(), &manifest, 100) {
                let failed = TaskError::Failed(err.to_string());
                return Err(self.undo(failed, release, last_good).await);
            }
        }
        let deployments = manifest.deployment_names();
        // Everything the release holds that has a readiness, not only its Deployments.
        let awaited = awaited_in(&manifest.objects);
        if let Err(failure) = self.service.wait_until_ready(&awaited).await {
            return Err(self.undo(failure.into(), release, last_good).await);
        }
        if self
            .service
            .platform
            .settings
            .helm_test(&self.target().stage)
        {
            if let Err(failed) = self.run_tests(release, status.revision).await {
                return Err(self.undo(failed, release, last_good).await);
            }
        }
        let main = manifest.main_service(&self.target().service);
        let user = UserStepOutput {
            revision: status.revision,
            deployments,
            awaited: awaited
                .into_iter()
                .filter(|a| a.kind != Kind::Deployment)
                .collect(),
            services: manifest
                .services()
                .into_iter()
                .filter_map(|s| name_of(s).map(str::to_owned))
                .collect(),
            main_service: main.and_then(name_of).map(str::to_owned),
            main_port: main.and_then(lowest_tcp_port),
            held_on_primary,
        };
        *manifest_out = Some(manifest);
        Ok(user)
    }

    /// Whether the deployment keeps the Services on the primary until its canary is ready
    /// and tested: with the `service` layer, when they select the primary now (the latest
    /// user revision is a promotion's or rollback's override) and there is a primary (the
    /// generated release). The chart's own selector is the canary's pods, which the canary at
    /// zero does not have yet; the other layers route in the generated release, after the
    /// rollout.
    async fn holds_primary(&self, stored: &ReleaseHistories) -> Result<bool, TaskError> {
        if self.strategy != DeploymentStrategy::BlueGreenService
            || !self.traffic().splits_by_selector()
            || stored.generated_latest().is_none()
        {
            return Ok(false);
        }
        let latest = self.service.latest_user_override(stored).await?;
        Ok(latest.is_some_and(|marker| marker.selects_primary))
    }

    /// The user release upgraded to what the chart at `chart_dir` renders, with the Services
    /// kept on the primary (`replicas::held_on_primary`): helm renders the upgrade (a dry
    /// run), and the changed manifest is deployed through the override chart. Returns the
    /// new revision's status and what the chart rendered.
    async fn upgrade_held_on_primary(
        &self,
        chart_dir: &std::path::Path,
        chart_bytes: usize,
        values: &Value,
    ) -> Result<(ReleaseStatus, Manifest), TaskError> {
        let release = &self.service.names.user;
        let rendered = self
            .service
            .render(release, chart_dir, chart_bytes, values)
            .await?;
        let held = replicas::held_on_primary(
            release,
            rendered.revision,
            &rendered.manifest,
            &rendered.hooks,
        )
        .map_err(|err| TaskError::Failed(err.to_string()))?;
        let values = replicas::override_values(&held.marker, held.manifest, values);
        let dir = private_dir()?;
        let identity = (
            rendered.chart_name.as_str(),
            rendered.chart_version.as_str(),
            rendered.app_version.as_str(),
        );
        let override_chart = replicas::write_chart(dir.path(), identity)
            .map_err(|err| TaskError::Transient(format!("writing the override chart: {err}")))?;
        let description = format!(
            "helm-service: deploy {}-{} with the Service kept on the primary until the canary is ready ({})",
            rendered.chart_name, rendered.chart_version, self.service.cause
        );
        let status = self
            .service
            .upgrade(release, &override_chart, &values, Some(&description))
            .await?;
        if status.revision != rendered.revision {
            // The marker names the revision helm rendered: another writer got in between, and
            // the revision written names the wrong source. Failed, so it is restored.
            return Err(TaskError::Failed(format!(
                "release {release} got revision {} while helm-service deployed revision {}: \
                 another client changed the release at the same time; deploy again",
                status.revision, rendered.revision
            )));
        }
        info!(release = %release, revision = status.revision, "deployed with the Service kept on the primary until the canary is ready");
        Ok((status, held.rendering))
    }

    /// The test gate (`--helm-test`): `helm test` of the new revision, waiting up to the
    /// stage's rollout deadline. A failure names the failed test pods and the ends of their
    /// logs; the caller restores the release.
    async fn run_tests(&self, release: &str, revision: u32) -> Result<(), TaskError> {
        let platform = self.service.platform;
        let namespace = &self.service.names.namespace;
        let wait = self.service.deadlines.rollout;
        let err = match platform.helm.test(release, namespace, wait).await {
            Ok(()) => {
                info!(release, revision, "helm test passed");
                return Ok(());
            }
            Err(err) if err.is_transient() => return Err(err.into()),
            Err(err) => err,
        };
        // Best effort: the verdict stands without the excerpt.
        let hooks = match platform
            .cluster
            .stored_release(namespace, release, revision)
            .await
        {
            Ok(Some(stored)) => stored.test_hooks,
            _ => Vec::new(),
        };
        let pods = platform
            .cluster
            .failed_test_pods(namespace, &hooks)
            .await
            .unwrap_or_else(|read| {
                warn!(release, error = %read, "reading the failed test pods");
                Vec::new()
            });
        Err(TaskError::Failed(format!(
            "the tests of release {release} revision {revision} failed ({err}){}",
            test_pods::describe(&pods)
        )))
    }

    /// What a failed user-release step answers: a transient error as it is (the event is
    /// handed back and the step runs again); any other failure after `release` is put back
    /// to `last_good`, with the cause and what the restore did.
    async fn undo(&self, err: TaskError, release: &str, last_good: Option<u32>) -> TaskError {
        match err {
            TaskError::Transient(_) => err,
            TaskError::Failed(cause) => {
                let restored = self.restore(release, last_good).await;
                TaskError::Failed(format!("{cause}{restored}"))
            }
        }
    }

    /// Puts `release` back to `last_good` (uninstalls it when there is none) and says
    /// what happened, as the tail of the failure message.
    async fn restore(&self, release: &str, last_good: Option<u32>) -> String {
        let helm = &self.service.platform.helm;
        let namespace = &self.service.names.namespace;
        let result = match last_good {
            Some(revision) => helm
                .rollback(release, namespace, revision, None)
                .await
                .map(|()| {
                    format!(
                        "; release {release} was rolled back to its last good revision {revision}"
                    )
                }),
            None => helm.uninstall(release, namespace, None).await.map(|_| {
                format!("; release {release} had no earlier good revision and was removed")
            }),
        };
        self.service.platform.metrics.restores.inc();
        result.unwrap_or_else(|err| {
            warn!(release, error = %err, "restoring the release failed");
            format!("; restoring release {release} failed too: {err}")
        })
    }

    /// The traffic layer the inventory records: the stage's, unless helm-service routes
    /// nothing (`user_managed`).
    fn traffic_of_entry(&self) -> Option<String> {
        (self.strategy != DeploymentStrategy::UserManaged)
            .then(|| self.traffic().as_str().to_owned())
    }

    /// The traffic layer of the stage (`--traffic`, `--stage-traffic`).
    fn traffic(&self) -> TrafficLayer {
        self.service.platform.settings.traffic(&self.target().stage)
    }

    fn routing(&self) -> Routing {
        let target = self.target();
        let settings = &self.service.platform.settings;
        let traffic = self.traffic();
        Routing {
            service: target.service.clone(),
            namespace: self.service.names.namespace.clone(),
            public_host: settings.ingress.public_host(target),
            gateway: settings.ingress.gateway.clone(),
            traffic,
            parent_gateway: settings
                .gateway()
                .filter(|_| traffic == TrafficLayer::GatewayApi)
                .cloned(),
        }
    }

    /// Installs or updates the generated release: mesh routing for `direct`; for
    /// blue/green the primary copy on first deployment (left untouched later) and the
    /// routing at 100% canary, so the freshly deployed user release takes the traffic.
    async fn deploy_generated(
        &self,
        user: &UserStepOutput,
        manifest: Option<Manifest>,
        latest: Option<u32>,
    ) -> Result<GeneratedStepOutput, TaskError> {
        let release = &self.service.names.generated;
        let exists = latest.is_some();
        let (model, first_install) = match (self.strategy, latest) {
            (DeploymentStrategy::BlueGreenService, Some(revision)) => {
                // Read from Helm's storage: one GET instead of a `helm get values` process.
                let current = self.service.generated_model(revision).await?;
                let GeneratedModel::BlueGreen(mut model) = current else {
                    return Err(TaskError::Failed(format!(
                            "release {release} was generated for another strategy; delete the service's releases before switching it to blue_green_service"
                        )));
                };
                model.canary_weight = 100;
                // The stage's current traffic layer and gateway: a changed setting takes
                // effect here (the user release's Services select the canary now, as 100%
                // canary means on every layer).
                model.routing = self.routing();
                (GeneratedModel::BlueGreen(model), false)
            }
            (DeploymentStrategy::BlueGreenService, None) => {
                let manifest = match manifest {
                    Some(manifest) => manifest,
                    None => self.service.latest_chart_rendering().await?,
                };
                let model = BlueGreenModel::from_manifest(self.routing(), &manifest, 100)
                    .map_err(|err| TaskError::Failed(err.to_string()))?;
                (GeneratedModel::BlueGreen(model), true)
            }
            _ => {
                if user.services.is_empty() {
                    info!(release = %self.service.names.user, "the chart has no Service: no mesh routing generated");
                    return Ok(GeneratedStepOutput {
                        revision: None,
                        deployments: Vec::new(),
                        user_revision: None,
                    });
                }
                let model = MeshModel {
                    routing: self.routing(),
                    services: user.services.clone(),
                    main_service: user.main_service.clone(),
                    main_port: user.main_port,
                };
                (GeneratedModel::Mesh(model), !exists)
            }
        };
        let deployments = match &model {
            GeneratedModel::BlueGreen(model) => vec![model
                .primary_deployment()
                .map_err(|err| TaskError::Failed(err.to_string()))?],
            GeneratedModel::Mesh(_) => Vec::new(),
        };
        let revision = self.service.upgrade_generated(model, None).await?;
        if first_install && !deployments.is_empty() {
            // Failed even when the cause is transient: a redelivery finds the generated
            // release installed (not a first install) and would not wait for the primary
            // again, reporting a deployment whose primary nobody saw ready.
            self.service
                .wait_for_rollout(&deployments)
                .await
                .map_err(|failure| TaskError::Failed(failure.to_string()))?;
        }
        // A deployment held on the primary: its canary is ready and tested, so the Services
        // switch to it now, last, as the routing of the other layers did just above (a
        // failure before this leaves the traffic where it was).
        let user_revision = if user.held_on_primary {
            Some(self.service.switch_to_canary().await?)
        } else {
            None
        };
        Ok(GeneratedStepOutput {
            revision: Some(revision),
            deployments,
            user_revision,
        })
    }

    async fn read_manifest(&self, release: &str) -> Result<Manifest, TaskError> {
        let text = self
            .service
            .platform
            .helm
            .manifest(release, &self.service.names.namespace, None)
            .await?;
        Manifest::parse(release, &text).map_err(|err| TaskError::Failed(err.to_string()))
    }

    /// `(local, public)` URIs to report.
    async fn uris(
        &self,
        user: &UserStepOutput,
        commit: Option<&str>,
    ) -> Result<(Vec<String>, Vec<String>), TaskError> {
        let target = self.target();
        match self.strategy {
            DeploymentStrategy::UserManaged => {
                let endpoints = self
                    .service
                    .platform
                    .charts
                    .fetch_file(&self.location.file("helm/endpoints.yaml")?, commit)
                    .await?;
                match endpoints {
                    Some(bytes) => {
                        let endpoints = Endpoints::parse(&bytes).map_err(TaskError::Failed)?;
                        Ok((endpoints.local, endpoints.public))
                    }
                    None => Ok(self.triggered_uris.clone()),
                }
            }
            _ => match user.main_port {
                Some(port) => Ok((
                    vec![local_uri(
                        &target.service,
                        &self.service.names.namespace,
                        port,
                    )],
                    vec![self.service.platform.settings.ingress.public_uri(target)],
                )),
                None => Ok(self.triggered_uris.clone()),
            },
        }
    }

    fn outcome(&self, entry: &InventoryEntry, message: String) -> Outcome {
        let mut deployment = json!({
            "deploymentstrategy": self.strategy.as_str(),
            "deploymentURIsLocal": entry.uris_local,
            "deploymentURIsPublic": entry.uris_public,
            "deploymentNames": entry.deployment_names,
        });
        if let Some(commit) = entry.git_commit.as_ref().or(self.commit.as_ref()) {
            deployment["gitCommit"] = json!(commit);
        }
        Outcome::succeeded(TaskResult::Pass, message).with_payload("deployment", deployment)
    }
}
