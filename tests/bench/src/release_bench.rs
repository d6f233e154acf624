//! Release benchmark (BENCHMARKS.md, "Releases").
//!
//! In one run, against one kube-sim with a 500 ms rollout delay, the production worker
//! (release build, its own process) and the real helm; `--rounds` × `--services` groups,
//! one group at a time. A group is three blue/green services prepared identically through
//! the worker (`deployment.triggered` blue_green_service at v1, then again with image 2.0:
//! primary at v1, canary at v2, all traffic on the canary). Then, in an order rotated per
//! group:
//! (a) the worker promotes the first: `release.triggered` (result pass), publish →
//!     `.finished`;
//! (b) the reference's algorithm replayed on each of the other two with the helm CLI: the
//!     current models read with `helm get`, then four sequential `helm upgrade --install
//!     --wait` (generated release at canary weight 100; primary regenerated from the user
//!     release's Deployment; weight 0; user release scaled to 0 replicas), once with Helm 4's
//!     `--wait=watcher` and once with `--wait=legacy` (Helm 3's 2 s polling, what the
//!     reference's Helm 3 SDK did). Charts and values come from the worker's own library, so
//!     all three deploy the same objects — checked by comparing the releases' manifests.
//!
//! With `--traffic istio,gateway-api,service`, a group also has one service per further
//! traffic layer, deployed and promoted by the same worker in a stage of that layer's name
//! (`--stage-traffic`), inside the same rotation; its promotion time is compared with the
//! Istio service's of the same group (the layer ratio).
//!
//! After the scaling below, with further layers, the next deployment (v3 as the canary) of the
//! Istio service and of each layer's, publish → `.finished`, in a rotated order: with the
//! `service` layer it is held on the primary until its canary is ready (a dry run of the
//! upgrade, the held revision, the switch), which costs helm calls the other layers do not
//! make; reported as the ratio to Istio's and the helm operations.
//!
//! Then the scaling action (`action.triggered` scaling "+1") on the promoted worker service,
//! publish → `.finished`, next to the reference's one upgrade replayed on the twins. Helm
//! operations per task come from the worker's `/metrics`
//! (`helm_service_helm_operation_seconds_count`, before/after each task; tasks run one at a
//! time). The group's releases are uninstalled before the next group. Prints medians; exits
//! non-zero on errors only, never on a missed target.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use benches::finished::Finished;
use benches::stats::{median, millis as ms};
use clap::Parser;
use serde_json::{json, Value};
use system_tests::deploy_env::{
    action_event, deployment_event_in, example_chart, release_event, DeployEnv, Traffic,
    TEST_GATEWAY,
};
use system_tests::events::publish;
use system_tests::worker_process::WorkerProcess;
use worker::deploy::autoscaling;
use worker::deploy::generated::{self, GeneratedModel, GeneratedValues};
use worker::deploy::manifest::{name_of, Manifest};
use worker::deploy::naming::ReleaseNames;
use worker::deploy::plan::{declared_replicas, Action};
use worker::deploy::replicas::{self, ReplicaOverride};
use worker::deploy::KeptnValues;

#[derive(Parser)]
struct Args {
    /// Service pairs per round (one promoted by the worker, its twin by the replay).
    #[arg(long, default_value_t = 8)]
    services: usize,
    /// Rounds; every round prepares fresh services.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Milliseconds kube-sim's pods take to become ready.
    #[arg(long, default_value_t = 500)]
    rollout_delay_ms: u64,
    /// Worker concurrency (only the preparation runs tasks in parallel).
    #[arg(long, default_value_t = 4)]
    concurrency: u32,
    /// Traffic layers whose promotions are measured: `istio` (always; the baseline),
    /// `gateway-api`, `service`, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "istio", value_parser = parse_layer)]
    traffic: Vec<Traffic>,
}

fn parse_layer(text: &str) -> Result<Traffic, String> {
    Traffic::ALL
        .into_iter()
        .find(|layer| layer.flag() == text)
        .ok_or_else(|| format!("{text:?}: use istio, gateway-api or service"))
}

/// The stage a layer's services are deployed in: `dev` for Istio, else the layer's name.
fn stage_of(layer: Traffic) -> &'static str {
    match layer {
        Traffic::Istio => STAGE,
        other => other.flag(),
    }
}

const PROJECT: &str = "shop";
const STAGE: &str = "dev";
const V2: &str = "ghcr.io/example/hello:2.0";
const V3: &str = "ghcr.io/example/hello:3.0";
const WAIT: Duration = Duration::from_secs(300);
/// helm's own deadline in the replay: generous (the reference's SDK calls allowed 3 minutes).
const HELM_TIMEOUT: &str = "5m";

/// How the replay's `helm upgrade` waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Helm 4's default `--wait`: kstatus through watches, done as soon as all is ready.
    Watcher,
    /// Helm 3's waiter (`--wait=legacy`), which the reference's Helm 3 SDK used: polls
    /// every 2 s.
    Legacy,
}

impl Wait {
    const ALL: [Wait; 2] = [Wait::Watcher, Wait::Legacy];

    fn flag(self) -> &'static str {
        match self {
            Wait::Watcher => "--wait=watcher",
            Wait::Legacy => "--wait=legacy",
        }
    }

    /// Service name prefix of this replay's twins.
    fn prefix(self) -> &'static str {
        match self {
            Wait::Watcher => "rw",
            Wait::Legacy => "rl",
        }
    }
}

/// Every sample of the worker's `/metrics`, by name with labels.
async fn metrics(worker: &WorkerProcess) -> anyhow::Result<HashMap<String, f64>> {
    let text = worker.metrics().await?;
    Ok(text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect())
}

/// What one task changed in the worker's counters.
#[derive(Debug, Default)]
struct Delta {
    /// helm CLI calls, by operation.
    helm_ops: BTreeMap<String, f64>,
    /// Seconds spent in helm CLI calls.
    helm_seconds: f64,
    /// Seconds spent waiting for rollouts.
    rollout_seconds: f64,
    /// Seconds per completed step.
    steps: BTreeMap<String, f64>,
}

impl Delta {
    fn between(before: &HashMap<String, f64>, after: &HashMap<String, f64>) -> Delta {
        let mut delta = Delta::default();
        for (key, value) in after {
            let diff = value - before.get(key).copied().unwrap_or(0.0);
            if diff == 0.0 {
                continue;
            }
            let label = |name: &str| {
                key.split_once(&format!("{name}=\""))
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map(|(value, _)| value.to_owned())
                    .unwrap_or_default()
            };
            if key.starts_with("helm_service_helm_operation_seconds_count{") {
                *delta.helm_ops.entry(label("operation")).or_default() += diff;
            } else if key.starts_with("helm_service_helm_operation_seconds_sum{") {
                delta.helm_seconds += diff;
            } else if key.starts_with("helm_service_rollout_seconds_sum") {
                delta.rollout_seconds += diff;
            } else if key.starts_with("helm_service_step_seconds_sum{") {
                *delta.steps.entry(label("step")).or_default() += diff;
            }
        }
        delta
    }

    fn helm_total(&self) -> f64 {
        self.helm_ops.values().sum()
    }
}

fn names(service: &str) -> anyhow::Result<ReleaseNames> {
    names_in(STAGE, service)
}

fn names_in(stage: &str, service: &str) -> anyhow::Result<ReleaseNames> {
    Ok(ReleaseNames::new(PROJECT, stage, service)?)
}

/// `helm upgrade --install --wait` of `chart` with `values`, as the reference ran each step.
async fn upgrade_wait(
    env: &DeployEnv,
    release: &str,
    namespace: &str,
    chart: &Path,
    values: &Value,
    wait: Wait,
) -> anyhow::Result<Duration> {
    let values_file = chart.with_extension("values.json");
    std::fs::write(&values_file, serde_json::to_vec(values)?)?;
    let started = Instant::now();
    env.helm(&[
        "upgrade",
        "--install",
        release,
        &chart.display().to_string(),
        "--namespace",
        namespace,
        "--reset-values",
        "--values",
        &values_file.display().to_string(),
        wait.flag(),
        "--timeout",
        HELM_TIMEOUT,
    ])
    .await?;
    Ok(started.elapsed())
}

/// Upgrades the generated release of `service` with `model`, waiting.
async fn upgrade_generated(
    env: &DeployEnv,
    service: &str,
    model: &generated::BlueGreenModel,
    dir: &Path,
    wait: Wait,
) -> anyhow::Result<Duration> {
    let names = names(service)?;
    let keptn = KeptnValues::new(PROJECT, STAGE, service, "primary");
    let values = GeneratedValues::new(keptn, GeneratedModel::BlueGreen(model.clone()))?;
    let chart = generated::write_chart(dir, &names.generated)?;
    upgrade_wait(
        env,
        &names.generated,
        &names.namespace,
        &chart,
        &values.to_value(),
        wait,
    )
    .await
}

/// The blue/green model in the generated release's values (`helm get values`).
async fn read_model(env: &DeployEnv, service: &str) -> anyhow::Result<generated::BlueGreenModel> {
    let names = names(service)?;
    let text = env
        .helm(&[
            "get",
            "values",
            &names.generated,
            "--namespace",
            &names.namespace,
            "--output",
            "json",
        ])
        .await?;
    let values = GeneratedValues::from_release_values(serde_json::from_str(&text)?)?;
    match values.model {
        GeneratedModel::BlueGreen(model) => Ok(model),
        GeneratedModel::Mesh(_) => bail!("{} is not blue/green", names.generated),
    }
}

/// Timings of one replayed promotion.
struct Replay {
    total: Duration,
    /// The three `helm get` reads.
    reads: Duration,
    /// The four upgrades, in order.
    upgrades: [Duration; 4],
}

/// The reference's promotion of `service`, replayed with the helm CLI.
async fn replay_promotion(
    env: &DeployEnv,
    service: &str,
    dir: &Path,
    wait: Wait,
) -> anyhow::Result<Replay> {
    let names = names(service)?;
    let ns = names.namespace.as_str();
    let started = Instant::now();
    // Read the current state: the generated release's model, the user release's manifest
    // (the Deployment the primary copies and the objects the canary's scale-down keeps)
    // and its chart name, version and revision.
    let mut model = read_model(env, service).await?;
    let manifest_text = env
        .helm(&["get", "manifest", &names.user, "--namespace", ns])
        .await?;
    let metadata: Value = serde_json::from_str(
        &env.helm(&[
            "get",
            "metadata",
            &names.user,
            "--namespace",
            ns,
            "--output",
            "json",
        ])
        .await?,
    )?;
    let manifest = Manifest::parse(&names.user, &manifest_text)?;
    let [deployment] = manifest.deployments()[..] else {
        bail!("{} has not exactly one Deployment", names.user);
    };
    let deployment = deployment.clone();
    // The example chart has no HPA; the replay copies what the worker would.
    let hpa = name_of(&deployment)
        .and_then(|name| autoscaling::hpa_of(&manifest.objects, name))
        .cloned();
    let reads = started.elapsed();

    // (1) all traffic to the canary.
    Action::RouteTraffic { canary_weight: 100 }.apply(&mut model, &deployment, hpa.as_ref());
    let route_canary = upgrade_generated(env, service, &model, &dir.join("1"), wait).await?;
    // (2) the primary regenerated from the user release's Deployment.
    Action::UpdatePrimary.apply(&mut model, &deployment, hpa.as_ref());
    let update_primary = upgrade_generated(env, service, &model, &dir.join("2"), wait).await?;
    // (3) all traffic to the primary.
    Action::RouteTraffic { canary_weight: 0 }.apply(&mut model, &deployment, hpa.as_ref());
    let route_primary = upgrade_generated(env, service, &model, &dir.join("3"), wait).await?;
    // (4) the user release (the canary) scaled to 0 replicas.
    let revision = metadata["revision"]
        .as_u64()
        .and_then(|r| u32::try_from(r).ok())
        .context("helm get metadata: no revision")?;
    let name = name_of(&deployment).unwrap_or_default().to_owned();
    let zero = BTreeMap::from([(name, 0)]);
    let scaled = replicas::with_replicas(&names.user, revision, &manifest_text, &zero)?;
    let marker = ReplicaOverride {
        source_revision: revision,
        replicas: zero,
        selects_primary: false,
    };
    let source_config = KeptnValues::new(PROJECT, STAGE, service, "canary").to_values();
    let values = replicas::override_values(&marker, scaled, &source_config);
    let text = |key: &str| metadata[key].as_str().unwrap_or_default();
    let chart = replicas::write_chart(
        &dir.join("4"),
        (text("chart"), text("version"), text("appVersion")),
    )?;
    let scale_canary = upgrade_wait(env, &names.user, ns, &chart, &values, wait).await?;
    Ok(Replay {
        total: started.elapsed(),
        reads,
        upgrades: [route_canary, update_primary, route_primary, scale_canary],
    })
}

/// The reference's scaling action on `service` (primary + `delta`), replayed: read the
/// model, one `helm upgrade --wait`. Returns (total, the upgrade).
async fn replay_scaling(
    env: &DeployEnv,
    service: &str,
    delta: u32,
    dir: &Path,
    wait: Wait,
) -> anyhow::Result<(Duration, Duration)> {
    let started = Instant::now();
    let mut model = read_model(env, service).await?;
    let replicas = declared_replicas(&model.primary_source) + delta;
    Action::ScalePrimary { replicas }.apply(&mut model, &Value::Null, None);
    let upgrade = upgrade_generated(env, service, &model, dir, wait).await?;
    Ok((started.elapsed(), upgrade))
}

/// Fails unless the worker's and the replay's services run the same objects: both
/// releases' manifests are equal once the service names are swapped.
async fn same_objects(env: &DeployEnv, worker: &str, replay: &str) -> anyhow::Result<()> {
    let (w, r) = (names(worker)?, names(replay)?);
    for (wr, rr) in [(&w.generated, &r.generated), (&w.user, &r.user)] {
        let get = |release: &str| {
            let release = release.to_owned();
            let ns = w.namespace.clone();
            async move {
                env.helm(&["get", "manifest", &release, "--namespace", &ns])
                    .await
            }
        };
        let ours = get(wr).await?;
        let theirs = get(rr).await?.replace(replay, worker);
        ensure!(
            ours == theirs,
            "{wr} and {rr} differ:\n--- worker\n{ours}\n--- replay\n{theirs}"
        );
    }
    Ok(())
}

/// Spot checks of a promoted service: primary at v2, canary at 0 replicas, all traffic on
/// the primary.
async fn promoted(env: &DeployEnv, service: &str) -> anyhow::Result<()> {
    let ns = names(service)?.namespace;
    let primary = env
        .deployment(&ns, &format!("{service}-primary"))
        .await?
        .context("no primary")?;
    ensure!(
        system_tests::deploy_env::image_of(&primary) == V2,
        "{service}: primary not at v2"
    );
    let canary = env.deployment(&ns, service).await?.context("no canary")?;
    ensure!(
        canary.spec.and_then(|s| s.replicas) == Some(0),
        "{service}: canary not scaled to 0"
    );
    let vs = env
        .istio("VirtualService", &ns, service)
        .await?
        .context("no VirtualService")?;
    let routes = &vs["spec"]["http"][0]["route"];
    ensure!(
        routes[0]["weight"] == 0 && routes[1]["weight"] == 100,
        "{service}: routes {routes}"
    );
    Ok(())
}

/// Spot checks of a service promoted on `layer` (not Istio): primary at v2, canary at 0
/// replicas, all traffic on the primary by the layer's means.
async fn promoted_on(env: &DeployEnv, layer: Traffic, service: &str) -> anyhow::Result<()> {
    let ns = names_in(stage_of(layer), service)?.namespace;
    let primary = env
        .deployment(&ns, &format!("{service}-primary"))
        .await?
        .context("no primary")?;
    ensure!(
        system_tests::deploy_env::image_of(&primary) == V2,
        "{service}: primary not at v2"
    );
    let canary = env.deployment(&ns, service).await?.context("no canary")?;
    ensure!(
        canary.spec.and_then(|s| s.replicas) == Some(0),
        "{service}: canary not scaled to 0"
    );
    match layer {
        Traffic::GatewayApi => {
            let route = env
                .gateway_api("HTTPRoute", &ns, service)
                .await?
                .context("no HTTPRoute")?;
            let backends = &route["spec"]["rules"][0]["backendRefs"];
            ensure!(
                backends[0]["weight"] == 0
                    && backends[1]["weight"] == 100
                    && route["spec"]["parentRefs"][0]["name"] == TEST_GATEWAY.1,
                "{service}: HTTPRoute {route}"
            );
        }
        Traffic::Service => {
            let object = env
                .object(("", "v1", "Service"), &ns, service)
                .await?
                .context("no Service")?;
            let app = &object["spec"]["selector"]["app"];
            ensure!(
                *app == format!("{service}-primary").as_str(),
                "{service}: the Service selects {app}"
            );
        }
        Traffic::Istio => bail!("promoted() checks Istio services"),
    }
    Ok(())
}

/// Deploys every `(stage, service)` through the worker: blue/green at v1, then the v2
/// canary.
async fn prepare(
    env: &DeployEnv,
    finished: &Finished,
    services: &[(&str, String)],
) -> anyhow::Result<()> {
    for (stage, service) in services {
        env.push_chart((PROJECT, stage, service), &example_chart())?;
    }
    for (step, values) in [("v1", json!({})), ("v2", json!({"image": V2}))] {
        let mut ids = Vec::new();
        for (stage, service) in services {
            let id = format!("prep-{step}-{service}");
            let event =
                deployment_event_in(stage, &id, service, "blue_green_service", values.clone());
            publish(&env.env.js, &event).await?;
            ids.push(id);
        }
        for id in &ids {
            let (_, reply) = finished.wait(id, WAIT).await?;
            ensure!(
                reply["data"]["status"] == "succeeded",
                "preparing {id}: {reply:#}"
            );
        }
    }
    Ok(())
}
/// Samples of one replay variant, in milliseconds.
/// Uninstalls the services' releases, so kube-sim holds only the group being measured (its
/// controller reconciles every object on each change: a growing store slows every rollout).
async fn teardown(env: &DeployEnv, services: &[(&str, String)]) -> anyhow::Result<()> {
    let mut by_namespace: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (stage, service) in services {
        let names = names_in(stage, service)?;
        by_namespace
            .entry(names.namespace)
            .or_default()
            .extend([names.user, names.generated]);
    }
    for (namespace, releases) in by_namespace {
        let mut args = vec!["uninstall".to_owned()];
        args.extend(releases);
        args.extend(["--namespace".into(), namespace]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        env.helm(&args).await?;
    }
    Ok(())
}

#[derive(Default)]
struct ReplaySamples {
    promote: Vec<f64>,
    reads: Vec<f64>,
    upgrades: [Vec<f64>; 4],
    /// Worker time / replay time of the same group.
    ratio: Vec<f64>,
    scale: Vec<f64>,
    scale_upgrade: Vec<f64>,
}

/// Samples of the worker, in milliseconds (helm operations as counts).
#[derive(Default)]
struct WorkerSamples {
    promote: Vec<f64>,
    promote_helm_ops: Vec<f64>,
    promote_helm_by_op: BTreeMap<String, Vec<f64>>,
    promote_helm_ms: Vec<f64>,
    promote_rollout_ms: Vec<f64>,
    promote_steps: BTreeMap<String, Vec<f64>>,
    scale: Vec<f64>,
    scale_helm_ops: Vec<f64>,
    scale_helm_by_op: BTreeMap<String, Vec<f64>>,
    scale_helm_ms: Vec<f64>,
    /// Promotions on the further traffic layers, by layer name.
    layer_promote: BTreeMap<&'static str, Vec<f64>>,
    /// Per group: the layer's promotion / the Istio service's.
    layer_ratio: BTreeMap<&'static str, Vec<f64>>,
    /// The next deployment after a promotion, by layer name (`istio` too).
    redeploy: BTreeMap<&'static str, Vec<f64>>,
    redeploy_helm_by_op: BTreeMap<&'static str, BTreeMap<String, Vec<f64>>>,
    /// Per group: the layer's next deployment / the Istio service's.
    redeploy_ratio: BTreeMap<&'static str, Vec<f64>>,
}

/// `median (min–max)`.
fn summary(values: &[f64]) -> String {
    if values.is_empty() {
        return "-".into();
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.0} ({min:.0}–{max:.0})", median(values))
}

/// Who runs a task of one group: the worker (on the Istio service, or on a further traffic
/// layer's) or a replay.
#[derive(Debug, Clone, Copy)]
enum Side {
    Worker,
    Layer(Traffic),
    Replay(Wait),
}

/// The sides in an order rotated by `k`, so drift hits each side evenly: the worker, the
/// further `layers` and the two replays.
fn rotated(k: usize, layers: &[Traffic]) -> Vec<Side> {
    let mut sides = vec![Side::Worker];
    sides.extend(layers.iter().map(|&layer| Side::Layer(layer)));
    sides.extend([Side::Replay(Wait::Watcher), Side::Replay(Wait::Legacy)]);
    let n = sides.len();
    sides.rotate_left(k % n);
    sides
}

/// What every measurement runs against.
struct Bench<'a> {
    env: &'a DeployEnv,
    finished: &'a Finished,
    worker: &'a WorkerProcess,
    /// Where the replay writes its charts and values.
    work_dir: &'a Path,
}

/// One prepared group: the worker's service, one twin per replay variant, and one service
/// per further traffic layer.
struct Group {
    worker: String,
    twins: [String; 2],
    layers: Vec<(Traffic, String)>,
}

impl Group {
    /// Every service as `(stage, service)`.
    fn services(&self) -> Vec<(&'static str, String)> {
        std::iter::once(&self.worker)
            .chain(&self.twins)
            .map(|service| (STAGE, service.clone()))
            .chain(
                self.layers
                    .iter()
                    .map(|(layer, service)| (stage_of(*layer), service.clone())),
            )
            .collect()
    }
}

async fn promote_group(
    bench: &Bench<'_>,
    group: &Group,
    k: usize,
    ws: &mut WorkerSamples,
    rs: &mut [ReplaySamples; 2],
) -> anyhow::Result<()> {
    let Bench {
        env,
        finished,
        worker,
        work_dir,
    } = *bench;
    let wk = &group.worker;
    let mut worker_ms = 0.0;
    let mut replays: [Option<Replay>; 2] = [None, None];
    let layers: Vec<Traffic> = group.layers.iter().map(|(layer, _)| *layer).collect();
    let mut layer_ms: Vec<(Traffic, &str, f64)> = Vec::new();
    for side in rotated(k, &layers) {
        match side {
            Side::Layer(layer) => {
                let service = group
                    .layers
                    .iter()
                    .find(|(l, _)| *l == layer)
                    .map(|(_, s)| s.as_str())
                    .context("layer service")?;
                let mut event = release_event(
                    &format!("rel-{service}"),
                    service,
                    "blue_green_service",
                    "pass",
                );
                event["data"]["stage"] = stage_of(layer).into();
                let (elapsed, reply) = finished.run(env, &event, "pass", WAIT).await?;
                ensure!(
                    reply["data"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("promoted")),
                    "{reply:#}"
                );
                layer_ms.push((layer, service, ms(elapsed)));
            }
            Side::Worker => {
                let before = metrics(worker).await?;
                let event = release_event(&format!("rel-{wk}"), wk, "blue_green_service", "pass");
                let (elapsed, reply) = finished.run(env, &event, "pass", WAIT).await?;
                let delta = Delta::between(&before, &metrics(worker).await?);
                ensure!(
                    reply["data"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("promoted")),
                    "{reply:#}"
                );
                worker_ms = ms(elapsed);
                ws.promote.push(worker_ms);
                ws.promote_helm_ops.push(delta.helm_total());
                for (op, n) in &delta.helm_ops {
                    ws.promote_helm_by_op
                        .entry(op.clone())
                        .or_default()
                        .push(*n);
                }
                ws.promote_helm_ms.push(delta.helm_seconds * 1000.0);
                ws.promote_rollout_ms.push(delta.rollout_seconds * 1000.0);
                for (step, secs) in &delta.steps {
                    ws.promote_steps
                        .entry(step.clone())
                        .or_default()
                        .push(secs * 1000.0);
                }
            }
            Side::Replay(wait) => {
                let v = wait as usize;
                let twin = &group.twins[v];
                let dir = work_dir.join(format!("promote-{twin}"));
                replays[v] = Some(replay_promotion(env, twin, &dir, wait).await?);
            }
        }
    }
    promoted(env, wk).await?;
    let mut line = format!("  promote {wk}: worker {worker_ms:.0} ms");
    for (layer, service, elapsed) in layer_ms {
        promoted_on(env, layer, service).await?;
        ws.layer_promote
            .entry(layer.flag())
            .or_default()
            .push(elapsed);
        ws.layer_ratio
            .entry(layer.flag())
            .or_default()
            .push(elapsed / worker_ms);
        line.push_str(&format!("; {service} ({}) {elapsed:.0} ms", layer.flag()));
    }
    for wait in Wait::ALL {
        let v = wait as usize;
        let twin = &group.twins[v];
        let replay = replays[v].take().context("replay ran")?;
        promoted(env, twin).await?;
        same_objects(env, wk, twin).await?;
        let samples = &mut rs[v];
        samples.promote.push(ms(replay.total));
        samples.reads.push(ms(replay.reads));
        for (step, upgrade) in replay.upgrades.iter().enumerate() {
            samples.upgrades[step].push(ms(*upgrade));
        }
        samples.ratio.push(worker_ms / ms(replay.total));
        line.push_str(&format!(
            "; {twin} {:.0} ms (reads {:.0}, upgrades {:?})",
            ms(replay.total),
            ms(replay.reads),
            replay.upgrades.map(|d| ms(d).round())
        ));
    }
    eprintln!("{line}");
    Ok(())
}

/// The next deployment (v3 as the canary) of the group's promoted Istio service and of each
/// further layer's, in an order rotated by `k`.
async fn redeploy_group(
    bench: &Bench<'_>,
    group: &Group,
    k: usize,
    ws: &mut WorkerSamples,
) -> anyhow::Result<()> {
    let Bench {
        env,
        finished,
        worker,
        ..
    } = *bench;
    let mut sides: Vec<(Traffic, &str, &str)> =
        std::iter::once((Traffic::Istio, STAGE, group.worker.as_str()))
            .chain(
                group
                    .layers
                    .iter()
                    .map(|(layer, service)| (*layer, stage_of(*layer), service.as_str())),
            )
            .collect();
    let n = sides.len();
    sides.rotate_left(k % n);
    let mut elapsed_by_layer = BTreeMap::new();
    for (layer, stage, service) in sides {
        let before = metrics(worker).await?;
        let id = format!("redeploy-{service}");
        let event = deployment_event_in(
            stage,
            &id,
            service,
            "blue_green_service",
            json!({"image": V3}),
        );
        let (elapsed, _) = finished.run(env, &event, "pass", WAIT).await?;
        let delta = Delta::between(&before, &metrics(worker).await?);
        let by_op = ws.redeploy_helm_by_op.entry(layer.flag()).or_default();
        for (op, count) in &delta.helm_ops {
            by_op.entry(op.clone()).or_default().push(*count);
        }
        ws.redeploy
            .entry(layer.flag())
            .or_default()
            .push(ms(elapsed));
        elapsed_by_layer.insert(layer.flag(), ms(elapsed));
    }
    let istio = elapsed_by_layer[Traffic::Istio.flag()];
    let mut line = format!("  redeploy {}: istio {istio:.0} ms", group.worker);
    for (layer, elapsed) in elapsed_by_layer
        .iter()
        .filter(|(layer, _)| **layer != Traffic::Istio.flag())
    {
        ws.redeploy_ratio
            .entry(layer)
            .or_default()
            .push(elapsed / istio);
        line.push_str(&format!("; {layer} {elapsed:.0} ms"));
    }
    eprintln!("{line}");
    Ok(())
}

async fn scale_group(
    bench: &Bench<'_>,
    group: &Group,
    k: usize,
    ws: &mut WorkerSamples,
    rs: &mut [ReplaySamples; 2],
) -> anyhow::Result<()> {
    let Bench {
        env,
        finished,
        worker,
        work_dir,
    } = *bench;
    let wk = &group.worker;
    for side in rotated(k, &[]) {
        match side {
            Side::Layer(_) => {}
            Side::Worker => {
                let before = metrics(worker).await?;
                let event = action_event(&format!("scale-{wk}"), wk, "scaling", json!("+1"));
                let (elapsed, reply) = finished.run(env, &event, "pass", WAIT).await?;
                let delta = Delta::between(&before, &metrics(worker).await?);
                ensure!(
                    reply["data"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("from 1 to 2")),
                    "{reply:#}"
                );
                ws.scale.push(ms(elapsed));
                ws.scale_helm_ops.push(delta.helm_total());
                for (op, n) in &delta.helm_ops {
                    ws.scale_helm_by_op.entry(op.clone()).or_default().push(*n);
                }
                ws.scale_helm_ms.push(delta.helm_seconds * 1000.0);
            }
            Side::Replay(wait) => {
                let v = wait as usize;
                let twin = &group.twins[v];
                let dir = work_dir.join(format!("scale-{twin}"));
                let (total, upgrade) = replay_scaling(env, twin, 1, &dir, wait).await?;
                rs[v].scale.push(ms(total));
                rs[v].scale_upgrade.push(ms(upgrade));
            }
        }
    }
    let primary = env
        .deployment(&names(wk)?.namespace, &format!("{wk}-primary"))
        .await?
        .context("no primary")?;
    ensure!(
        primary.spec.and_then(|s| s.replicas) == Some(2),
        "{wk}: primary not at 2 replicas"
    );
    for twin in &group.twins {
        same_objects(env, wk, twin).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let layers: Vec<Traffic> = Traffic::ALL
        .into_iter()
        .filter(|layer| *layer != Traffic::Istio && args.traffic.contains(layer))
        .collect();
    let env = DeployEnv::start(kube_sim::Config {
        rollout_delay: Duration::from_millis(args.rollout_delay_ms),
        gateway_api: layers.contains(&Traffic::GatewayApi),
        ..kube_sim::Config::default()
    })
    .await?;
    let finished = Finished::start(&env.env.nats.url()).await?;
    let mut spec = env.worker_spec();
    spec.concurrency = args.concurrency;
    for layer in &layers {
        spec.extra_args.extend([
            "--stage-traffic".into(),
            format!("{}={}", stage_of(*layer), layer.flag()),
        ]);
    }
    if layers.contains(&Traffic::GatewayApi) {
        spec.extra_args.extend([
            "--gateway".into(),
            format!("{}/{}", TEST_GATEWAY.0, TEST_GATEWAY.1),
        ]);
    }
    let worker = env.start_worker(spec, "bench-worker").await?;
    let work_dir = env.env.dir.path().join("replay");
    let bench = Bench {
        env: &env,
        finished: &finished,
        worker: &worker,
        work_dir: &work_dir,
    };
    let mut ws = WorkerSamples::default();
    let mut rs: [ReplaySamples; 2] = Default::default();

    let mut k = 0;
    for round in 1..=args.rounds {
        let groups: Vec<Group> = (1..=args.services)
            .map(|i| Group {
                worker: format!("wk-{round}-{i:02}"),
                twins: Wait::ALL.map(|w| format!("{}-{round}-{i:02}", w.prefix())),
                layers: layers
                    .iter()
                    .map(|layer| {
                        let prefix = match layer {
                            Traffic::GatewayApi => "wg",
                            _ => "wv",
                        };
                        (*layer, format!("{prefix}-{round}-{i:02}"))
                    })
                    .collect(),
            })
            .collect();
        for group in &groups {
            let services = group.services();
            prepare(&env, &finished, &services).await?;
            promote_group(&bench, group, k, &mut ws, &mut rs).await?;
            scale_group(&bench, group, k + 1, &mut ws, &mut rs).await?;
            if !layers.is_empty() {
                redeploy_group(&bench, group, k, &mut ws).await?;
            }
            k += 1;
            teardown(&env, &services).await?;
        }
        eprintln!(
            "round {round}: promotion medians so far: worker {:.0} ms, replay {} {:.0} ms, {} {:.0} ms",
            median(&ws.promote),
            Wait::Watcher.flag(),
            median(&rs[0].promote),
            Wait::Legacy.flag(),
            median(&rs[1].promote)
        );
    }
    let dead = env.env.dead_letters().await?;
    ensure!(dead.is_empty(), "dead letters: {dead:#?}");
    report(&args, &ws, &rs);
    Ok(())
}

fn report(args: &Args, ws: &WorkerSamples, rs: &[ReplaySamples; 2]) {
    let per_op = |by_op: &BTreeMap<String, Vec<f64>>| {
        by_op
            .iter()
            .map(|(op, n)| format!("{op} {}", median(n)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let distinct = |values: &[f64]| {
        let mut seen: Vec<String> = values.iter().map(|n| n.to_string()).collect();
        seen.sort();
        seen.dedup();
        seen.join("/")
    };
    println!(
        "releases: {} rounds x {} services, kube-sim rollout delay {} ms; median (min–max) of {} samples, ms",
        args.rounds,
        args.services,
        args.rollout_delay_ms,
        ws.promote.len()
    );
    println!("promotion (release.triggered, result pass), publish -> finished:");
    println!(
        "  (a) worker                                {}",
        summary(&ws.promote)
    );
    println!(
        "      helm operations                       {} (seen {}; {})",
        median(&ws.promote_helm_ops),
        distinct(&ws.promote_helm_ops),
        per_op(&ws.promote_helm_by_op)
    );
    println!(
        "      in helm / watching the rollout        {} / {}",
        summary(&ws.promote_helm_ms),
        summary(&ws.promote_rollout_ms)
    );
    for (step, values) in &ws.promote_steps {
        println!("      step {step:<32} {}", summary(values));
    }
    for wait in Wait::ALL {
        let r = &rs[wait as usize];
        println!(
            "  (b) reference replayed, helm {:<15}  {}",
            wait.flag(),
            summary(&r.promote)
        );
        println!(
            "      3 helm get reads                      {}",
            summary(&r.reads)
        );
        for (step, label) in [
            "upgrade 1: weight 100",
            "upgrade 2: regenerate primary",
            "upgrade 3: weight 0",
            "upgrade 4: canary to 0",
        ]
        .iter()
        .enumerate()
        {
            println!("      {label:<37} {}", summary(&r.upgrades[step]));
        }
        let without_reads: Vec<f64> = r
            .promote
            .iter()
            .zip(&r.reads)
            .map(|(total, reads)| total - reads)
            .collect();
        println!(
            "      ratio (a)/(b) of medians              {:.2}  (target <= 0.60; per-group median {:.2}; (b) without its reads {:.2})",
            median(&ws.promote) / median(&r.promote),
            median(&r.ratio),
            median(&ws.promote) / median(&without_reads)
        );
    }
    for (layer, values) in &ws.layer_promote {
        println!("  (a) worker on {layer:<28} {}", summary(values));
        println!(
            "      ratio to istio: of medians {:.2}, per-group median {:.2}  (target <= 1.10)",
            median(values) / median(&ws.promote),
            median(ws.layer_ratio.get(layer).map_or(&[][..], Vec::as_slice))
        );
    }
    if !ws.redeploy_ratio.is_empty() {
        println!(
            "the next deployment after the promotion (v3 as the canary), publish -> finished:"
        );
    }
    for (layer, values) in ws.redeploy.iter().filter(|_| !ws.redeploy_ratio.is_empty()) {
        println!(
            "  worker on {layer:<32} {}  helm operations {}",
            summary(values),
            per_op(&ws.redeploy_helm_by_op[layer])
        );
        if let Some(ratios) = ws.redeploy_ratio.get(layer) {
            println!(
                "      ratio to istio: of medians {:.2}, per-group median {:.2}",
                median(values) / median(&ws.redeploy[Traffic::Istio.flag()]),
                median(ratios)
            );
        }
    }
    println!("scaling (action.triggered scaling \"+1\", promoted primary 1 -> 2 replicas), publish -> finished:");
    println!(
        "  worker                                    {}",
        summary(&ws.scale)
    );
    println!(
        "      helm operations                       {} (seen {}; {})  (target <= 1)",
        median(&ws.scale_helm_ops),
        distinct(&ws.scale_helm_ops),
        per_op(&ws.scale_helm_by_op)
    );
    println!(
        "      in helm                               {}",
        summary(&ws.scale_helm_ms)
    );
    for wait in Wait::ALL {
        let r = &rs[wait as usize];
        println!(
            "  reference replayed, helm {:<15}      {}  (its one upgrade {})",
            wait.flag(),
            summary(&r.scale),
            summary(&r.scale_upgrade)
        );
    }
}
