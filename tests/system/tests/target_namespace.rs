//! A service in a namespace of its own (`keptn.namespace` in its chart's values, here set by
//! the event's `configurationChange.values`, which are merged into the stored chart): it is
//! deployed, promoted, scaled and deleted there, under the shared-cluster rules (protected
//! namespaces refused, a namespace of another stage refused, ownership labels set). Every
//! reply is checked against the Keptn spec's schemas.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube_sim::Config as SimConfig;
use serde_json::{json, Value};
use system_tests::deploy_env::{
    action_event, deployment_event, deployment_event_in, example_chart, release_event,
    service_delete_event, DeployEnv,
};

const WAIT: Duration = Duration::from_secs(90);
const OWN: &str = "web-shop";
const V2: &str = "ghcr.io/example/hello:2.0";

fn sim() -> SimConfig {
    SimConfig {
        rollout_delay: Duration::from_millis(100),
        ..SimConfig::default()
    }
}

fn message(finished: &Value) -> &str {
    finished["data"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_service_lives_in_its_own_namespace() -> anyhow::Result<()> {
    let env = DeployEnv::start(sim()).await?;
    env.push_chart(("shop", "dev", "hello"), &example_chart())?;
    let _worker = env.start_worker(env.worker_spec(), "worker").await?;

    let own = json!({"keptn": {"namespace": OWN}});
    let finished = env
        .deploy(
            &deployment_event("d1", "hello", "blue_green_service", own),
            WAIT,
        )
        .await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    assert!(
        message(&finished).contains("in namespace web-shop"),
        "{finished:#}"
    );
    assert_eq!(
        finished["data"]["deployment"]["deploymentURIsLocal"],
        json!(["http://hello.web-shop:80"])
    );
    // Created with the ownership labels; nothing in the stage's namespace.
    let namespace = Api::<Namespace>::all(env.client.clone()).get(OWN).await?;
    let labels = namespace.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("keptn.sh/project").map(String::as_str),
        Some("shop")
    );
    assert_eq!(
        labels.get("keptn.sh/stage").map(String::as_str),
        Some("dev")
    );
    assert!(env.deployment("shop-dev", "hello").await?.is_none());
    assert_eq!(env.image_and_replicas(OWN, "hello-primary").await?.1, 1);
    assert!(env.istio("VirtualService", OWN, "hello").await?.is_some());

    // The chart keeps the merged value: the next deployment goes there too.
    let finished = env
        .deploy(
            &deployment_event("d2", "hello", "blue_green_service", json!({"image": V2})),
            WAIT,
        )
        .await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    assert_eq!(env.image_and_replicas(OWN, "hello").await?.0, V2);

    // Release, rollback and scaling find it there.
    let finished = env
        .deploy(
            &release_event("r1", "hello", "blue_green_service", "pass"),
            WAIT,
        )
        .await?;
    assert!(message(&finished).contains("promoted"), "{finished:#}");
    assert_eq!(env.image_and_replicas(OWN, "hello-primary").await?.0, V2);
    assert_eq!(env.image_and_replicas(OWN, "hello").await?.1, 0);
    let finished = env
        .deploy(&action_event("a1", "hello", "scaling", json!("+1")), WAIT)
        .await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    assert_eq!(env.image_and_replicas(OWN, "hello-primary").await?.1, 2);

    // Moving it elsewhere is refused; its releases stay where they are.
    let moved = env
        .deploy(
            &deployment_event(
                "d3",
                "hello",
                "blue_green_service",
                json!({"keptn": {"namespace": "elsewhere"}}),
            ),
            WAIT,
        )
        .await?;
    assert_eq!(moved["data"]["status"], "errored", "{moved:#}");
    assert!(
        message(&moved).contains("moving a service between namespaces is not supported"),
        "{moved:#}"
    );

    // Deleting the service removes its releases from its namespace.
    let deleted = env
        .run_report(&service_delete_event("x1", "hello", Some("dev")), WAIT)
        .await?;
    assert_eq!(deleted["data"]["status"], "succeeded", "{deleted:#}");
    assert!(env.helm_releases(OWN).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn protected_and_foreign_namespaces_are_refused() -> anyhow::Result<()> {
    let env = DeployEnv::start(sim()).await?;
    for stage in ["dev", "prod"] {
        env.push_chart(("shop", stage, "hello"), &example_chart())?;
    }
    let _worker = env.start_worker(env.worker_spec(), "worker").await?;

    for (id, namespace) in [("p1", "kube-system"), ("p2", "istio-system")] {
        let finished = env
            .deploy(
                &deployment_event(
                    id,
                    "hello",
                    "direct",
                    json!({"keptn": {"namespace": namespace}}),
                ),
                WAIT,
            )
            .await?;
        assert_eq!(finished["data"]["status"], "errored", "{finished:#}");
        assert!(message(&finished).contains(namespace), "{finished:#}");
        assert!(message(&finished).contains("protected"), "{finished:#}");
    }
    let bad = env
        .deploy(
            &deployment_event(
                "p3",
                "hello",
                "direct",
                json!({"keptn": {"namespace": "Web_Shop"}}),
            ),
            WAIT,
        )
        .await?;
    assert_eq!(bad["data"]["status"], "errored", "{bad:#}");
    assert!(message(&bad).contains("keptn.namespace"), "{bad:#}");

    // An existing namespace nobody labelled is not taken over.
    Api::<Namespace>::all(env.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team-x"}}))?,
        )
        .await?;
    let foreign = env
        .deploy(
            &deployment_event(
                "f1",
                "hello",
                "direct",
                json!({"keptn": {"namespace": "team-x"}}),
            ),
            WAIT,
        )
        .await?;
    assert_eq!(foreign["data"]["status"], "errored", "{foreign:#}");
    assert!(message(&foreign).contains("team-x"), "{foreign:#}");

    // One namespace is one stage's: prod may not deploy into dev's.
    let dev = env
        .deploy(
            &deployment_event(
                "s1",
                "hello",
                "direct",
                json!({"keptn": {"namespace": "shared"}}),
            ),
            WAIT,
        )
        .await?;
    assert_eq!(dev["data"]["status"], "succeeded", "{dev:#}");
    let prod = env
        .deploy(
            &deployment_event_in(
                "prod",
                "s2",
                "hello",
                "direct",
                json!({"keptn": {"namespace": "shared"}}),
            ),
            WAIT,
        )
        .await?;
    assert_eq!(prod["data"]["status"], "errored", "{prod:#}");
    assert!(message(&prod).contains("shared"), "{prod:#}");
    Ok(())
}
