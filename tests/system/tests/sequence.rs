//! A Keptn-like sequence per deployment strategy, end to end (the production binary, real
//! nats-server, real helm, kube-sim): deployment(v1) → release(pass) → deployment(v2) →
//! release(fail), with the cluster checked after every step. Each sequence runs with the
//! worker on Helm 4 (module `helm4`) and on Helm 3 (module `helm3`); every reply of both is
//! checked against the spec's schemas (`Replies`).

use std::time::Duration;

use kube_sim::Config as SimConfig;
use serde_json::{json, Value};
use system_tests::deploy_env::{
    deployment_event, example_chart, pinned_helm, release_event, DeployEnv, Traffic,
};

const WAIT: Duration = Duration::from_secs(90);
const NS: &str = "shop-dev";
const V1: &str = "ghcr.io/example/hello:1.0";
const V2: &str = "ghcr.io/example/hello:2.0";

fn sim() -> SimConfig {
    SimConfig {
        rollout_delay: Duration::from_millis(200),
        ..SimConfig::default()
    }
}

/// A world with the example chart pushed for `service` and one worker running the pinned
/// helm `helm` (`helm`: Helm 4, `helm3`: Helm 3).
async fn world(
    service: &str,
    helm: &str,
) -> anyhow::Result<(DeployEnv, system_tests::worker_process::WorkerProcess)> {
    world_with(service, helm, Traffic::Istio).await
}

/// [`world`] with workers routing with `traffic`.
async fn world_with(
    service: &str,
    helm: &str,
    traffic: Traffic,
) -> anyhow::Result<(DeployEnv, system_tests::worker_process::WorkerProcess)> {
    let env = DeployEnv::start_with(sim(), traffic).await?;
    env.push_chart(("shop", "dev", service), &example_chart())?;
    let spec = env.worker_spec_with_helm(&pinned_helm(helm));
    let worker = env.start_worker(spec, "worker").await?;
    Ok((env, worker))
}

/// deployment.triggered of `service` at `image` (v1: the chart's own), asserting success.
async fn deploy(
    env: &DeployEnv,
    id: &str,
    service: &str,
    strategy: &str,
    image: Option<&str>,
) -> anyhow::Result<Value> {
    let values = image.map_or_else(|| json!({}), |image| json!({ "image": image }));
    let finished = env
        .deploy(&deployment_event(id, service, strategy, values), WAIT)
        .await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    assert_eq!(finished["data"]["result"], "pass", "{finished:#}");
    Ok(finished)
}

/// release.triggered of `service` with `result`, asserting it succeeded and echoes it.
async fn release(
    env: &DeployEnv,
    id: &str,
    service: &str,
    strategy: &str,
    result: &str,
) -> anyhow::Result<Value> {
    let finished = env
        .deploy(&release_event(id, service, strategy, result), WAIT)
        .await?;
    assert_eq!(
        finished["type"], "sh.keptn.event.release.finished",
        "{finished:#}"
    );
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    assert_eq!(finished["data"]["result"], result, "{finished:#}");
    assert_eq!(finished["data"]["service"], service, "{finished:#}");
    Ok(finished)
}

/// Revision counts of the user and generated releases of `service` (0: no such release).
async fn revisions(env: &DeployEnv, service: &str) -> anyhow::Result<(usize, usize)> {
    let releases = env.helm_releases(NS).await?;
    let mut counts = [0; 2];
    let names = [
        format!("shop-dev-{service}"),
        format!("shop-dev-{service}-generated"),
    ];
    for (count, release) in counts.iter_mut().zip(&names) {
        if releases.contains(release) {
            *count = env.helm_history(release, NS).await?.len();
        }
    }
    Ok((counts[0], counts[1]))
}

/// Only the user release exists for `service`: no generated release, mesh objects or primary.
async fn nothing_generated(env: &DeployEnv, service: &str) -> anyhow::Result<()> {
    assert_eq!(
        env.helm_releases(NS).await?,
        [format!("shop-dev-{service}")],
        "only the user release"
    );
    assert!(env.istio("VirtualService", NS, service).await?.is_none());
    assert!(env.istio("DestinationRule", NS, service).await?.is_none());
    let primary = format!("{service}-primary");
    assert!(env.deployment(NS, &primary).await?.is_none());
    Ok(())
}

async fn blue_green_sequence_promotes_then_rolls_back(helm: &str) -> anyhow::Result<()> {
    blue_green_sequence(helm, Traffic::Istio).await
}

/// With the `service` layer the second deployment is held on the primary until its canary
/// is ready (a dry run of the upgrade, deployed through the override chart): on each Helm.
async fn blue_green_sequence_on_the_service_layer(helm: &str) -> anyhow::Result<()> {
    blue_green_sequence(helm, Traffic::Service).await
}

async fn blue_green_sequence(helm: &str, traffic: Traffic) -> anyhow::Result<()> {
    const SVC: &str = "bluegreen";
    const PRIMARY: &str = "bluegreen-primary";
    let (env, _worker) = world_with(SVC, helm, traffic).await?;
    let strategy = "blue_green_service";

    // deployment(v1): the canary runs v1 and takes all traffic.
    let finished = deploy(&env, "d1", SVC, strategy, None).await?;
    assert_eq!(
        finished["data"]["deployment"]["deploymentNames"],
        json!(["canary"])
    );
    let (image, replicas) = env.image_and_replicas(NS, SVC).await?;
    assert_eq!(image, V1);
    assert!(replicas > 0, "the canary runs");
    assert_eq!(env.blue_green_weights(SVC).await?, (100, 0));
    assert!(
        env.deployment(NS, PRIMARY).await?.is_some(),
        "primary generated"
    );

    // release(pass): promoted; the primary runs v1 and takes all traffic, canary at 0.
    release(&env, "r1", SVC, strategy, "pass").await?;
    let (image, replicas) = env.image_and_replicas(NS, PRIMARY).await?;
    assert_eq!(image, V1);
    assert!(replicas > 0, "the primary runs");
    assert_eq!(env.blue_green_weights(SVC).await?, (0, 100));
    assert_eq!(env.image_and_replicas(NS, SVC).await?, (V1.to_owned(), 0));

    // deployment(v2): the canary is back up at v2 and takes all traffic; primary still v1.
    deploy(&env, "d2", SVC, strategy, Some(V2)).await?;
    if traffic == Traffic::Service {
        // Held on the primary, then switched: the last two revisions of the user release.
        let descriptions = env.helm_descriptions("shop-dev-bluegreen", NS).await?;
        let last: Vec<&str> = descriptions
            .iter()
            .rev()
            .take(2)
            .map(|(_, description)| description.as_str())
            .collect();
        assert!(
            last[1].contains("kept on the primary") && last[0].contains("route 100%"),
            "{descriptions:?}"
        );
    }
    let (image, replicas) = env.image_and_replicas(NS, SVC).await?;
    assert_eq!(image, V2);
    assert!(replicas > 0, "the canary runs again");
    assert_eq!(env.blue_green_weights(SVC).await?, (100, 0));
    assert_eq!(env.image_and_replicas(NS, PRIMARY).await?.0, V1);

    // release(fail): rolled back; the primary (v1) takes all traffic, canary at 0.
    release(&env, "r2", SVC, strategy, "fail").await?;
    let (image, replicas) = env.image_and_replicas(NS, PRIMARY).await?;
    assert_eq!(image, V1);
    assert!(replicas > 0, "the primary runs");
    assert_eq!(env.blue_green_weights(SVC).await?, (0, 100));
    assert_eq!(env.image_and_replicas(NS, SVC).await?, (V2.to_owned(), 0));
    Ok(())
}

async fn direct_sequence_upgrades_in_place_and_releases_change_nothing(
    helm: &str,
) -> anyhow::Result<()> {
    const SVC: &str = "plain";
    let (env, _worker) = world(SVC, helm).await?;
    let strategy = "direct";
    let mesh_route = || vec![(format!("{SVC}.shop-dev.svc.cluster.local"), 100)];

    // deployment(v1): the user Deployment runs v1; the VirtualService routes to it.
    let finished = deploy(&env, "d1", SVC, strategy, None).await?;
    assert_eq!(
        finished["data"]["deployment"]["deploymentNames"],
        json!(["direct"])
    );
    let (image, replicas) = env.image_and_replicas(NS, SVC).await?;
    assert_eq!(image, V1);
    assert!(replicas > 0);
    assert_eq!(env.routes(SVC).await?, mesh_route());
    assert!(env
        .deployment(NS, &format!("{SVC}-primary"))
        .await?
        .is_none());

    // release(pass): nothing applied.
    let before = revisions(&env, SVC).await?;
    assert_eq!(before, (1, 1));
    release(&env, "r1", SVC, strategy, "pass").await?;
    assert_eq!(revisions(&env, SVC).await?, before);
    assert_eq!(env.image_and_replicas(NS, SVC).await?.0, V1);

    // deployment(v2): upgraded in place.
    deploy(&env, "d2", SVC, strategy, Some(V2)).await?;
    let (image, replicas) = env.image_and_replicas(NS, SVC).await?;
    assert_eq!(image, V2);
    assert!(replicas > 0);
    assert_eq!(env.routes(SVC).await?, mesh_route());
    let before = revisions(&env, SVC).await?;
    assert_eq!(before.0, 2, "one new user revision");

    // release(fail): still nothing applied — direct has nothing to roll back to.
    release(&env, "r2", SVC, strategy, "fail").await?;
    assert_eq!(revisions(&env, SVC).await?, before);
    let (image, replicas) = env.image_and_replicas(NS, SVC).await?;
    assert_eq!(image, V2);
    assert!(replicas > 0);
    assert_eq!(env.routes(SVC).await?, mesh_route());
    Ok(())
}

async fn user_managed_sequence_deploys_only_the_chart(helm: &str) -> anyhow::Result<()> {
    const SVC: &str = "managed";
    let (env, _worker) = world(SVC, helm).await?;
    let strategy = "user_managed";
    let finished = deploy(&env, "d1", SVC, strategy, None).await?;
    assert_eq!(
        finished["data"]["deployment"]["deploymentNames"],
        json!(["user_managed"])
    );
    assert_eq!(env.image_and_replicas(NS, SVC).await?.0, V1);
    nothing_generated(&env, SVC).await?;

    release(&env, "r1", SVC, strategy, "pass").await?;
    assert_eq!(revisions(&env, SVC).await?, (1, 0));
    assert_eq!(env.image_and_replicas(NS, SVC).await?.0, V1);

    deploy(&env, "d2", SVC, strategy, Some(V2)).await?;
    let (image, replicas) = env.image_and_replicas(NS, SVC).await?;
    assert_eq!(image, V2);
    assert!(replicas > 0);
    assert_eq!(revisions(&env, SVC).await?, (2, 0));
    nothing_generated(&env, SVC).await?;

    release(&env, "r2", SVC, strategy, "fail").await?;
    assert_eq!(revisions(&env, SVC).await?, (2, 0));
    let (image, replicas) = env.image_and_replicas(NS, SVC).await?;
    assert_eq!(image, V2);
    assert!(replicas > 0);
    nothing_generated(&env, SVC).await?;
    Ok(())
}

/// Each sequence with the worker on Helm 4 and on Helm 3.
macro_rules! with_each_helm {
    ($($name:ident),* $(,)?) => {
        mod helm4 {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    super::$name("helm").await
                }
            )*
        }
        mod helm3 {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    super::$name("helm3").await
                }
            )*
        }
    };
}

with_each_helm!(
    blue_green_sequence_promotes_then_rolls_back,
    blue_green_sequence_on_the_service_layer,
    direct_sequence_upgrades_in_place_and_releases_change_nothing,
    user_managed_sequence_deploys_only_the_chart,
);
