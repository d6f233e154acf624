//! The traffic layers end to end (`--traffic istio|gateway-api|service`): blue/green
//! deployments, a rollback and a promotion, and a `direct` deployment, on each layer, with
//! the layer's routing objects checked after every event (`DeployEnv::blue_green_weights`
//! fails when another layer's object exists). With the `service` layer, where the chart's
//! Service is the switch, the Service's Endpoints are checked to hold the pods the switch
//! says. Every reply is checked against the Keptn spec's schemas (`events::Replies`).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Namespace};
use kube::api::Api;
use kube::runtime::wait::await_condition;
use kube_sim::Config as SimConfig;
use serde_json::{json, Value};
use system_tests::deploy_env::{
    deployment_event, example_chart, example_chart_with, release_event, rollback_event, DeployEnv,
    Traffic, BROKEN_CHECK, TEST_POD,
};

const WAIT: Duration = Duration::from_secs(90);
const NS: &str = "shop-dev";
const V1: &str = "ghcr.io/example/hello:1.0";
const V2: &str = "ghcr.io/example/hello:2.0";
const V3: &str = "ghcr.io/example/hello:3.0";

fn sim() -> SimConfig {
    SimConfig {
        rollout_delay: Duration::from_millis(100),
        ..SimConfig::default()
    }
}

fn assert_succeeded(finished: &Value, result: &str) {
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    assert_eq!(finished["data"]["result"], result, "{finished:#}");
}

/// Whether pod `name` belongs to Deployment `owner`: pod names are
/// `<deployment>-<replicaset hash>-<suffix>`, two more dashes.
fn pod_of(owner: &str, name: &str) -> bool {
    name.strip_prefix(owner)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|rest| rest.matches('-').count() == 1)
}

/// Whether `pods` are some pods, all of Deployment `owner`.
fn all_of(owner: &str, pods: &[String]) -> bool {
    !pods.is_empty() && pods.iter().all(|pod| pod_of(owner, pod))
}

/// The pods Endpoints list as ready (the ones a Service sends traffic to).
fn ready_pods(endpoints: &Endpoints) -> Vec<String> {
    endpoints
        .subsets
        .iter()
        .flatten()
        .flat_map(|subset| subset.addresses.iter().flatten())
        .filter_map(|address| address.target_ref.as_ref()?.name.clone())
        .collect()
}

/// With the `service` layer: waits until the Endpoints of Service `hello` hold only pods of
/// Deployment `owner` (`hello` the canary, `hello-primary` the primary), and some.
async fn await_endpoints_of(env: &DeployEnv, owner: &str) -> anyhow::Result<()> {
    if env.traffic != Traffic::Service {
        return Ok(());
    }
    let api = Api::<Endpoints>::namespaced(env.client.clone(), NS);
    let condition = |endpoints: Option<&Endpoints>| {
        let pods = endpoints.map(ready_pods).unwrap_or_default();
        all_of(owner, &pods)
    };
    tokio::time::timeout(WAIT, await_condition(api, "hello", condition))
        .await
        .map_err(|_| anyhow::anyhow!("the Endpoints of hello never held only {owner}'s pods"))??;
    Ok(())
}

async fn blue_green_life_cycle(traffic: Traffic) -> anyhow::Result<()> {
    let env = DeployEnv::start_with(sim(), traffic).await?;
    env.push_chart(("shop", "dev", "hello"), &example_chart())?;
    let _worker = env.start_worker(env.worker_spec(), "worker").await?;

    // v1, then v2 as the canary: all traffic on the freshly deployed canary.
    for (id, image) in [("d1", V1), ("d2", V2)] {
        let finished = env
            .deploy(
                &deployment_event(id, "hello", "blue_green_service", json!({"image": image})),
                WAIT,
            )
            .await?;
        assert_succeeded(&finished, "pass");
        assert_eq!(
            env.blue_green_weights("hello").await?,
            (100, 0),
            "after {id}"
        );
        assert_eq!(
            env.image_and_replicas(NS, "hello").await?,
            (image.into(), 1)
        );
        assert_eq!(env.image_and_replicas(NS, "hello-primary").await?.0, V1);
        await_endpoints_of(&env, "hello").await?;
    }
    // Sidecars only where Istio routes.
    let namespace = Api::<Namespace>::all(env.client.clone()).get(NS).await?;
    let injection = namespace
        .metadata
        .labels
        .unwrap_or_default()
        .get("istio-injection")
        .cloned();
    assert_eq!(
        injection.as_deref(),
        (traffic == Traffic::Istio).then_some("enabled"),
        "istio-injection with {traffic:?}"
    );

    // The evaluation failed: traffic back to the primary (still v1), the canary down.
    let finished = env
        .deploy(
            &release_event("r1", "hello", "blue_green_service", "fail"),
            WAIT,
        )
        .await?;
    assert_succeeded(&finished, "fail");
    assert_eq!(env.blue_green_weights("hello").await?, (0, 100));
    assert_eq!(env.image_and_replicas(NS, "hello-primary").await?.0, V1);
    assert_eq!(env.image_and_replicas(NS, "hello").await?.1, 0);
    await_endpoints_of(&env, "hello-primary").await?;

    // v3 as the canary, promoted.
    let finished = env
        .deploy(
            &deployment_event("d3", "hello", "blue_green_service", json!({"image": V3})),
            WAIT,
        )
        .await?;
    assert_succeeded(&finished, "pass");
    assert_eq!(env.blue_green_weights("hello").await?, (100, 0));
    assert_eq!(env.image_and_replicas(NS, "hello").await?, (V3.into(), 1));
    await_endpoints_of(&env, "hello").await?;
    let finished = env
        .deploy(
            &release_event("r2", "hello", "blue_green_service", "pass"),
            WAIT,
        )
        .await?;
    assert_succeeded(&finished, "pass");
    let message = finished["data"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("promoted"), "{message}");
    assert_eq!(env.blue_green_weights("hello").await?, (0, 100));
    assert_eq!(env.image_and_replicas(NS, "hello-primary").await?.0, V3);
    assert_eq!(env.image_and_replicas(NS, "hello").await?.1, 0);
    await_endpoints_of(&env, "hello-primary").await?;

    // A rollback now has nothing left to do, on any layer.
    let finished = env.deploy(&rollback_event("b1", "hello"), WAIT).await?;
    assert_succeeded(&finished, "pass");
    let message = finished["data"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("already rolled back"), "{message}");
    assert_eq!(env.blue_green_weights("hello").await?, (0, 100));
    Ok(())
}

#[tokio::test]
async fn blue_green_deploy_roll_back_and_promote_on_istio() -> anyhow::Result<()> {
    blue_green_life_cycle(Traffic::Istio).await
}

#[tokio::test]
async fn blue_green_deploy_roll_back_and_promote_on_gateway_api() -> anyhow::Result<()> {
    blue_green_life_cycle(Traffic::GatewayApi).await
}

#[tokio::test]
async fn blue_green_deploy_roll_back_and_promote_on_service() -> anyhow::Result<()> {
    blue_green_life_cycle(Traffic::Service).await
}

/// `direct`: all traffic to the chart's Service, by each layer's means.
#[tokio::test]
async fn direct_deployments_are_routed_by_each_layer() -> anyhow::Result<()> {
    for traffic in Traffic::ALL {
        let env = DeployEnv::start_with(sim(), traffic).await?;
        env.push_chart(("shop", "dev", "hello"), &example_chart())?;
        let _worker = env.start_worker(env.worker_spec(), "worker").await?;
        let finished = env
            .deploy(&deployment_event("d1", "hello", "direct", json!({})), WAIT)
            .await?;
        assert_succeeded(&finished, "pass");
        let (virtual_service, http_route) = env.routing_objects("hello").await?;
        assert_eq!(
            (virtual_service, http_route),
            (traffic == Traffic::Istio, traffic == Traffic::GatewayApi),
            "{traffic:?}"
        );
        if traffic == Traffic::GatewayApi {
            let route = env
                .gateway_api("HTTPRoute", NS, "hello")
                .await?
                .expect("HTTPRoute");
            assert_eq!(
                route["spec"]["rules"][0]["backendRefs"],
                json!([{"group": "", "kind": "Service", "name": "hello", "port": 80}]),
                "{route:#}"
            );
            assert_eq!(
                route["spec"]["hostnames"],
                json!(["hello.shop-dev.svc.cluster.local"])
            );
        }
        // The reported URIs do not depend on the layer.
        assert_eq!(
            finished["data"]["deployment"]["deploymentURIsLocal"],
            json!(["http://hello.shop-dev:80"]),
            "{finished:#}"
        );
    }
    Ok(())
}

/// The layer is the stage's setting at the time of a deployment: a worker started with
/// another layer moves a blue/green service over at its next deployment (the old layer's
/// objects go with the generated release's upgrade), and promotes it on the new layer.
#[tokio::test]
async fn a_changed_layer_takes_effect_at_the_next_deployment() -> anyhow::Result<()> {
    let mut env = DeployEnv::start_with(sim(), Traffic::Istio).await?;
    env.push_chart(("shop", "dev", "hello"), &example_chart())?;
    let mut istio = env.start_worker(env.worker_spec(), "istio").await?;
    let finished = env
        .deploy(
            &deployment_event("d1", "hello", "blue_green_service", json!({})),
            WAIT,
        )
        .await?;
    assert_succeeded(&finished, "pass");
    assert_eq!(env.blue_green_weights("hello").await?, (100, 0));
    istio.process.stop(Duration::from_secs(15)).await?;

    env.traffic = Traffic::Service;
    let _service = env.start_worker(env.worker_spec(), "service").await?;
    // The same chart and values: not skipped as unchanged, since the layer changed.
    let finished = env
        .deploy(
            &deployment_event("d2", "hello", "blue_green_service", json!({})),
            WAIT,
        )
        .await?;
    assert_succeeded(&finished, "pass");
    let message = finished["data"]["message"].as_str().unwrap_or_default();
    assert!(!message.contains("nothing to do"), "{message}");
    assert_eq!(env.blue_green_weights("hello").await?, (100, 0));
    assert!(env
        .istio("DestinationRule", NS, "hello-primary")
        .await?
        .is_none());

    let finished = env
        .deploy(
            &release_event("r1", "hello", "blue_green_service", "pass"),
            WAIT,
        )
        .await?;
    assert_succeeded(&finished, "pass");
    assert_eq!(env.blue_green_weights("hello").await?, (0, 100));
    await_endpoints_of(&env, "hello-primary").await?;
    Ok(())
}

/// Every state the Endpoints of Service `hello` go through while it is kept: the ready pods
/// of each version the API server announces (a watch sees every change, in order).
struct EndpointsLog {
    states: std::sync::Arc<std::sync::Mutex<Vec<Vec<String>>>>,
    watch: tokio::task::JoinHandle<()>,
}

impl EndpointsLog {
    /// Starts watching; returns once the current state is in the log.
    async fn start(env: &DeployEnv) -> anyhow::Result<Self> {
        use futures::StreamExt;
        use kube::runtime::{watcher, WatchStreamExt};
        let api = Api::<Endpoints>::namespaced(env.client.clone(), NS);
        let config = watcher::Config::default().fields("metadata.name=hello");
        let states = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let log = states.clone();
        let watch = tokio::spawn(async move {
            let mut first = Some(first_tx);
            let mut stream = std::pin::pin!(watcher(api, config).applied_objects());
            while let Some(event) = stream.next().await {
                let Ok(endpoints) = event else { continue };
                log.lock().unwrap().push(ready_pods(&endpoints));
                if let Some(first) = first.take() {
                    let _ = first.send(());
                }
            }
        });
        tokio::time::timeout(WAIT, first_rx)
            .await
            .map_err(|_| anyhow::anyhow!("the Endpoints of hello were never seen"))??;
        Ok(EndpointsLog { states, watch })
    }

    /// The states seen so far, oldest first; the log starts over.
    fn take(&self) -> Vec<Vec<String>> {
        std::mem::take(&mut *self.states.lock().unwrap())
    }
}

impl Drop for EndpointsLog {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

/// The `service` layer after a promotion (canary at zero, the Service on the primary): a
/// deployment keeps the Service on the primary while its canary rolls out (slowly here) and
/// is tested, and switches it only then, so the Service never runs out of ready endpoints;
/// a deployment whose tests fail never puts traffic on its canary.
#[tokio::test]
async fn service_layer_switches_to_a_new_canary_only_once_it_is_ready_and_tested(
) -> anyhow::Result<()> {
    let env = DeployEnv::start_with(
        SimConfig {
            rollout_delay: Duration::from_millis(1500),
            job_duration: Duration::from_millis(300),
            failing_job_images: vec![BROKEN_CHECK.into()],
            ..SimConfig::default()
        },
        Traffic::Service,
    )
    .await?;
    let chart = example_chart_with(env.env.dir.path(), &[("templates/test.yaml", TEST_POD)])?;
    env.push_chart(("shop", "dev", "hello"), &chart)?;
    let mut spec = env.worker_spec();
    spec.extra_args.push("--helm-test".into());
    let _worker = env.start_worker(spec, "worker").await?;
    let event = |id: &str, image: &str, test_image: Option<&str>| {
        let mut values = json!({"image": image});
        if let Some(test_image) = test_image {
            values["testImage"] = json!(test_image);
        }
        deployment_event(id, "hello", "blue_green_service", values)
    };

    // v1, promoted: the canary at zero, the Service on the primary.
    assert_succeeded(&env.deploy(&event("d1", V1, None), WAIT).await?, "pass");
    let release = release_event("r1", "hello", "blue_green_service", "pass");
    assert_succeeded(&env.deploy(&release, WAIT).await?, "pass");
    await_endpoints_of(&env, "hello-primary").await?;

    // v2: the primary's pods until the canary's are ready and tested, then the canary's.
    let log = EndpointsLog::start(&env).await?;
    let finished = env.deploy(&event("d2", V2, None), WAIT).await?;
    assert_succeeded(&finished, "pass");
    await_endpoints_of(&env, "hello").await?;
    let states = log.take();
    assert!(
        states.iter().all(|pods| !pods.is_empty()),
        "the Service ran out of ready endpoints during the deployment: {states:?}"
    );
    let switch = states
        .iter()
        .position(|pods| !all_of("hello-primary", pods))
        .expect("the Service never left the primary");
    assert!(
        states[switch..].iter().all(|pods| all_of("hello", pods)),
        "after the switch only the canary's pods: {states:?}"
    );
    assert_eq!(env.image_and_replicas(NS, "hello").await?, (V2.into(), 1));
    assert_eq!(env.blue_green_weights("hello").await?, (100, 0));
    let message = finished["data"]["message"].as_str().unwrap_or_default();
    let history = env.helm_history("shop-dev-hello", NS).await?;
    let latest = history.last().map(|(revision, _)| *revision).unwrap_or(0);
    assert!(
        message.contains(&format!("revision {latest} ")),
        "the message names the latest revision {latest}: {message}"
    );

    // The revisions helm-service wrote (the switch here, the scale-down after a promotion)
    // keep the chart's tests: `helm test` of the release still finds them.
    let tests_kept = || async {
        let hooks = env
            .helm(&["get", "hooks", "shop-dev-hello", "-n", NS])
            .await?;
        anyhow::Ok(hooks.contains("hello-test"))
    };
    assert!(tests_kept().await?, "the switch kept the test hook");

    // Promoted again, then v3 whose tests fail: the Service never leaves the primary.
    let release = release_event("r2", "hello", "blue_green_service", "pass");
    assert_succeeded(&env.deploy(&release, WAIT).await?, "pass");
    assert!(tests_kept().await?, "the scale-down kept the test hook");
    await_endpoints_of(&env, "hello-primary").await?;
    log.take();
    let finished = env
        .deploy(&event("d3", V3, Some(BROKEN_CHECK)), WAIT)
        .await?;
    assert_eq!(finished["data"]["result"], "fail", "{finished:#}");
    let states = log.take();
    assert!(
        states.iter().all(|pods| all_of("hello-primary", pods)),
        "traffic left the primary for a canary that failed its tests: {states:?}"
    );
    assert_eq!(env.blue_green_weights("hello").await?, (0, 100));
    assert_eq!(env.image_and_replicas(NS, "hello").await?.1, 0);
    assert_eq!(env.image_and_replicas(NS, "hello-primary").await?.0, V2);
    Ok(())
}
