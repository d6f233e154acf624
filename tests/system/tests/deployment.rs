//! deployment.triggered end to end: the production binary, real nats-server, real helm,
//! kube-sim. Each test checks the finished event, the cluster, and Helm's history.

use std::time::Duration;

use kube_sim::Config as SimConfig;
use serde_json::{json, Value};
use system_tests::deploy_env::{
    deployment_event, example_chart, image_of, DeployEnv, CONFIG_COMMIT,
};

const WAIT: Duration = Duration::from_secs(90);
const NS: &str = "shop-dev";

fn sim() -> SimConfig {
    SimConfig {
        rollout_delay: Duration::from_millis(200),
        never_ready_images: vec!["never-ready".into()],
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn direct_deploys_user_chart_and_mesh_then_upgrades_then_skips_unchanged(
) -> anyhow::Result<()> {
    let env = DeployEnv::start(sim()).await?;
    env.push_chart(("shop", "dev", "hello"), &example_chart())?;
    let worker = env.start_worker(env.worker_spec(), "worker").await?;

    let finished = env
        .deploy(&deployment_event("d-1", "hello", "direct", json!({})), WAIT)
        .await?;
    let data = &finished["data"];
    assert_eq!(data["status"], "succeeded", "{finished:#}");
    assert_eq!(data["result"], "pass");
    assert_eq!(
        data["deployment"],
        json!({
            "deploymentstrategy": "direct",
            "deploymentURIsLocal": ["http://hello.shop-dev:80"],
            "deploymentURIsPublic": ["http://hello.shop-dev.svc.cluster.local:80"],
            "deploymentNames": ["direct"],
            "gitCommit": CONFIG_COMMIT,
        })
    );
    let user = env.deployment(NS, "hello").await?.expect("user Deployment");
    assert_eq!(image_of(&user), "ghcr.io/example/hello:1.0");
    let vs = env
        .istio("VirtualService", NS, "hello")
        .await?
        .expect("VirtualService");
    assert_eq!(
        vs["spec"]["hosts"],
        json!(["hello.shop-dev.svc.cluster.local", "hello"])
    );
    assert_eq!(
        vs["spec"]["gateways"],
        json!(["public-gateway.istio-system", "mesh"])
    );
    assert_eq!(
        vs["spec"]["http"][0]["route"][0]["destination"]["host"],
        "hello.shop-dev.svc.cluster.local"
    );
    assert!(env.istio("DestinationRule", NS, "hello").await?.is_some());
    assert_eq!(
        env.helm_history("shop-dev-hello", NS).await?,
        [(1, "deployed".to_owned())]
    );
    assert_eq!(
        env.helm_history("shop-dev-hello-generated", NS)
            .await?
            .len(),
        1
    );

    // A new image: merged into the stored chart, user release at revision 2.
    let finished = env
        .deploy(
            &deployment_event(
                "d-2",
                "hello",
                "direct",
                json!({"image": "ghcr.io/example/hello:1.1"}),
            ),
            WAIT,
        )
        .await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    let user = env.deployment(NS, "hello").await?.expect("user Deployment");
    assert_eq!(image_of(&user), "ghcr.io/example/hello:1.1");
    let history = env.helm_history("shop-dev-hello", NS).await?;
    assert_eq!(
        history.last(),
        Some(&(2, "deployed".to_owned())),
        "{history:?}"
    );
    let listing = std::process::Command::new(system_tests::deploy_env::helm_service_bin())
        .args(["charts", "--nats-url", &env.env.nats.url(), "list"])
        .output()?;
    assert!(String::from_utf8_lossy(&listing.stdout).contains("shop/dev/hello"));
    let stored_values = env
        .helm(&[
            "get",
            "values",
            "shop-dev-hello",
            "-n",
            NS,
            "--all",
            "-o",
            "json",
        ])
        .await?;
    let stored_values: Value = serde_json::from_str(&stored_values)?;
    assert_eq!(
        stored_values["image"], "ghcr.io/example/hello:1.1",
        "merged into the chart"
    );
    assert_eq!(stored_values["keptn"]["deployment"], "direct");

    // The same again: nothing runs, same URIs.
    let before = worker
        .metric("helm_service_helm_operation_seconds_count{operation=\"upgrade\",outcome=\"ok\"}")
        .await?;
    let finished = env
        .deploy(
            &deployment_event(
                "d-3",
                "hello",
                "direct",
                json!({"image": "ghcr.io/example/hello:1.1"}),
            ),
            WAIT,
        )
        .await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    assert!(
        finished["data"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing to do"),
        "{finished:#}"
    );
    assert_eq!(
        finished["data"]["deployment"]["deploymentURIsLocal"],
        json!(["http://hello.shop-dev:80"])
    );
    assert_eq!(env.helm_history("shop-dev-hello", NS).await?.len(), 2);
    assert_eq!(
        worker
            .metric("helm_service_unchanged_deployments_total")
            .await?,
        1.0
    );
    let after = worker
        .metric("helm_service_helm_operation_seconds_count{operation=\"upgrade\",outcome=\"ok\"}")
        .await?;
    assert_eq!(before, after, "no helm upgrade for an unchanged deployment");
    Ok(())
}

#[tokio::test]
async fn blue_green_routes_all_traffic_to_the_canary_and_keeps_primary() -> anyhow::Result<()> {
    let env = DeployEnv::start(sim()).await?;
    env.push_chart(("shop", "dev", "hello"), &example_chart())?;
    let _worker = env.start_worker(env.worker_spec(), "worker").await?;

    let finished = env
        .deploy(
            &deployment_event("bg-1", "hello", "blue_green_service", json!({})),
            WAIT,
        )
        .await?;
    let data = &finished["data"];
    assert_eq!(data["status"], "succeeded", "{finished:#}");
    assert_eq!(
        data["deployment"]["deploymentstrategy"],
        "blue_green_service"
    );
    assert_eq!(data["deployment"]["deploymentNames"], json!(["canary"]));
    assert_eq!(
        data["deployment"]["deploymentURIsLocal"],
        json!(["http://hello.shop-dev:80"])
    );

    let vs = env
        .istio("VirtualService", NS, "hello")
        .await?
        .expect("VirtualService");
    assert_eq!(
        vs["spec"]["http"][0]["route"],
        json!([
            {"destination": {"host": "hello-canary.shop-dev.svc.cluster.local"}, "weight": 100},
            {"destination": {"host": "hello-primary.shop-dev.svc.cluster.local"}, "weight": 0},
        ])
    );
    assert!(env
        .istio("DestinationRule", NS, "hello-primary")
        .await?
        .is_some());
    assert!(env
        .istio("DestinationRule", NS, "hello-canary")
        .await?
        .is_some());
    let primary = env.deployment(NS, "hello-primary").await?.expect("primary");
    assert_eq!(image_of(&primary), "ghcr.io/example/hello:1.0");
    let ns = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(env.client.clone())
        .get(NS)
        .await?;
    assert_eq!(
        ns.metadata
            .labels
            .unwrap_or_default()
            .get("istio-injection")
            .map(String::as_str),
        Some("enabled")
    );

    let finished = env
        .deploy(
            &deployment_event(
                "bg-2",
                "hello",
                "blue_green_service",
                json!({"image": "ghcr.io/example/hello:2.0"}),
            ),
            WAIT,
        )
        .await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    let user = env.deployment(NS, "hello").await?.expect("canary");
    assert_eq!(image_of(&user), "ghcr.io/example/hello:2.0");
    let primary = env.deployment(NS, "hello-primary").await?.expect("primary");
    assert_eq!(
        image_of(&primary),
        "ghcr.io/example/hello:1.0",
        "primary untouched"
    );
    assert_eq!(env.helm_history("shop-dev-hello", NS).await?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn user_managed_deploys_only_the_chart_and_reports_declared_endpoints() -> anyhow::Result<()>
{
    let env = DeployEnv::start(sim()).await?;
    env.push_chart(("shop", "dev", "hello"), &example_chart())?;
    let store = env.env.js.get_object_store("helm-service-charts").await?;
    let mut endpoints: &[u8] =
        b"deploymentURIsLocal: [\"http://hello.internal:8080\"]\ndeploymentURIsPublic: [\"https://hello.example.com\"]\n";
    store
        .put("shop/dev/hello/helm/endpoints.yaml", &mut endpoints)
        .await?;
    let _worker = env.start_worker(env.worker_spec(), "worker").await?;

    let finished = env
        .deploy(
            &deployment_event("um-1", "hello", "user_managed", json!({})),
            WAIT,
        )
        .await?;
    let data = &finished["data"];
    assert_eq!(data["status"], "succeeded", "{finished:#}");
    assert_eq!(
        data["deployment"],
        json!({
            "deploymentstrategy": "user_managed",
            "deploymentURIsLocal": ["http://hello.internal:8080"],
            "deploymentURIsPublic": ["https://hello.example.com"],
            "deploymentNames": ["user_managed"],
            "gitCommit": CONFIG_COMMIT,
        })
    );
    assert!(env.deployment(NS, "hello").await?.is_some());
    assert!(
        env.istio("VirtualService", NS, "hello").await?.is_none(),
        "nothing generated"
    );
    let values: Value = serde_json::from_str(
        &env.helm(&["get", "values", "shop-dev-hello", "-n", NS, "-o", "json"])
            .await?,
    )?;
    assert_eq!(values["keptn"]["deployment"], "user_managed");
    Ok(())
}
