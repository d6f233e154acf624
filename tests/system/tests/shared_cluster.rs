//! A cluster shared with other Keptn projects and other tenants: Keptn names that map to one
//! Kubernetes name never share a Helm release, protected namespaces are never deployed to,
//! and namespaces helm-service did not create are used only when the operator allows it.
//! The production binary, real nats-server, real helm, kube-sim.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use kube_sim::{AuditEntry, Config as SimConfig};
use serde_json::{json, Value};
use system_tests::deploy_env::{deployment_event, example_chart, service_delete_event, DeployEnv};
use system_tests::events::publish;

const WAIT: Duration = Duration::from_secs(90);

fn sim() -> SimConfig {
    SimConfig {
        rollout_delay: Duration::from_millis(300),
        ..SimConfig::default()
    }
}

/// A deployment of `service` in `stage` of `project`.
fn deployment_of(id: &str, (project, stage, service): (&str, &str, &str), image: &str) -> Value {
    let mut event = deployment_event(id, service, "duplicate", json!({ "image": image }));
    event["data"]["project"] = project.into();
    event["data"]["stage"] = stage.into();
    event
}

fn message(finished: &Value) -> &str {
    finished["data"]["message"].as_str().unwrap_or_default()
}

/// The revisions of `release` whose Helm records were written (updated or deleted by name;
/// creates name the record in their body only) in `audit`.
fn revisions_written(audit: &[AuditEntry], release: &str) -> BTreeSet<String> {
    let prefix = format!("sh.helm.release.v1.{release}.v");
    audit
        .iter()
        .filter(|e| e.is_write() && e.resource == "secrets")
        .filter_map(|e| e.name.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn keptn_names_that_map_to_one_release_never_share_it() -> anyhow::Result<()> {
    let first = ("shop", "prod-eu", "carts");
    let second = ("shop-prod", "eu", "carts");
    let env = DeployEnv::start(sim()).await?;
    env.push_chart(first, &example_chart())?;
    env.push_chart(second, &example_chart())?;
    let _worker = env.start_worker(env.worker_spec(), "worker").await?;

    let deployed = env
        .deploy(&deployment_of("first-1", first, "hello:1"), WAIT)
        .await?;
    assert_eq!(deployed["data"]["status"], "succeeded", "{deployed:#}");

    // The first service's next deployment and the second service's first, at once: both
    // name namespace shop-prod-eu and release shop-prod-eu-carts.
    env.sim.clear_audit();
    publish(&env.env.js, &deployment_of("first-2", first, "hello:2")).await?;
    publish(&env.env.js, &deployment_of("second-1", second, "hello:3")).await?;
    let (upgraded, _) = env.sole_finished("first-2", WAIT).await?;
    let (refused, _) = env.sole_finished("second-1", WAIT).await?;
    assert_eq!(upgraded["data"]["status"], "succeeded", "{upgraded:#}");
    assert_ne!(refused["data"]["status"], "succeeded", "{refused:#}");
    assert_eq!(
        message(&refused),
        "release shop-prod-eu-carts in namespace shop-prod-eu belongs to service carts in \
         stage prod-eu of project shop (its keptn.sh labels), not to service carts in stage eu \
         of project shop-prod: both map to the same Helm release, so helm-service refuses to \
         change it; rename one of the services, or its project or stage",
    );

    // Only one Helm operation touched each release meanwhile: the first service's upgrade to
    // revision 2 (which marks revision 1 superseded); the second service wrote nothing.
    let audit = env.sim.audit();
    for release in ["shop-prod-eu-carts", "shop-prod-eu-carts-generated"] {
        let written = revisions_written(&audit, release);
        assert_eq!(
            written,
            BTreeSet::from(["1".to_owned(), "2".to_owned()]),
            "{release}"
        );
    }
    let history = env
        .helm_history("shop-prod-eu-carts", "shop-prod-eu")
        .await?;
    assert_eq!(history.len(), 2, "{history:?}");
    let labels = env
        .helm(&[
            "get",
            "metadata",
            "shop-prod-eu-carts",
            "-n",
            "shop-prod-eu",
            "-o",
            "json",
        ])
        .await?;
    let labels: Value = serde_json::from_str(&labels)?;
    for (key, value) in [
        ("keptn.sh/project", "shop"),
        ("keptn.sh/stage", "prod-eu"),
        ("keptn.sh/service", "carts"),
    ] {
        assert_eq!(labels["labels"][key], value, "{labels:#}");
    }
    let namespace: Api<Namespace> = Api::all(env.client.clone());
    let namespace = namespace.get("shop-prod-eu").await?;
    let namespace_labels = namespace.metadata.labels.unwrap_or_default();
    assert_eq!(
        namespace_labels.get("keptn.sh/project").map(String::as_str),
        Some("shop")
    );
    assert_eq!(
        namespace_labels.get("keptn.sh/stage").map(String::as_str),
        Some("prod-eu")
    );

    // Deleting the second service finds a release named like its own in stage eu
    // (namespace shop-prod-eu) and leaves it alone.
    let mut delete = service_delete_event("delete-second", "carts", None);
    delete["data"]["project"] = "shop-prod".into();
    let deleted = env.run_report(&delete, WAIT).await?;
    assert_eq!(deleted["data"]["status"], "succeeded", "{deleted:#}");
    assert!(
        message(&deleted).contains(
            "left alone, not this service's to delete: stage eu: release \
             shop-prod-eu-carts-generated in namespace shop-prod-eu belongs to service carts in \
             stage prod-eu of project shop; stage eu: release shop-prod-eu-carts in namespace \
             shop-prod-eu belongs to service carts in stage prod-eu of project shop"
        ),
        "{deleted:#}"
    );
    let releases = env.helm_releases_everywhere().await?;
    for release in ["shop-prod-eu-carts", "shop-prod-eu-carts-generated"] {
        assert!(
            releases.contains(&("shop-prod-eu".to_owned(), release.to_owned())),
            "{release} was removed: {releases:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn protected_and_foreign_namespaces_are_refused_unless_adopted() -> anyhow::Result<()> {
    let env = DeployEnv::start(sim()).await?;
    let system = ("kube", "system", "carts");
    let qa = ("shop", "qa", "carts");
    env.push_chart(system, &example_chart())?;
    env.push_chart(qa, &example_chart())?;
    // Another tenant's namespace, which happens to carry the name of stage qa.
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let foreign = Namespace {
        metadata: ObjectMeta {
            name: Some("shop-qa".into()),
            labels: Some([("team".to_owned(), "payments".to_owned())].into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    namespaces.create(&PostParams::default(), &foreign).await?;
    let worker = env.start_worker(env.worker_spec(), "worker").await?;

    let refused = env
        .deploy(&deployment_of("kube-system", system, "hello:1"), WAIT)
        .await?;
    assert_ne!(refused["data"]["status"], "succeeded", "{refused:#}");
    assert_eq!(
        message(&refused),
        "namespace kube-system of stage system of project kube is protected: it matches \
         kube-*, which helm-service never deploys to (the cluster's own namespaces); use other \
         project or stage names"
    );
    let refused = env
        .deploy(&deployment_of("foreign-1", qa, "hello:1"), WAIT)
        .await?;
    assert_ne!(refused["data"]["status"], "succeeded", "{refused:#}");
    assert!(
        message(&refused).starts_with(
            "namespace shop-qa exists and was not created by helm-service (it has no \
             keptn.sh/project label)"
        ) && message(&refused).ends_with("or allow adopting it with --adopt-namespaces shop-qa"),
        "{refused:#}"
    );
    assert!(
        env.helm_releases_everywhere().await?.is_empty(),
        "nothing may be installed"
    );

    // The operator allows adopting it: the next deployment labels it and deploys.
    drop(worker);
    let mut spec = env.worker_spec();
    spec.extra_args
        .extend(["--adopt-namespaces".into(), "shop-*".into()]);
    let _worker = env.start_worker(spec, "adopting").await?;
    let deployed = env
        .deploy(&deployment_of("foreign-2", qa, "hello:1"), WAIT)
        .await?;
    assert_eq!(deployed["data"]["status"], "succeeded", "{deployed:#}");
    let labels = namespaces
        .get("shop-qa")
        .await?
        .metadata
        .labels
        .unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("payments"));
    assert_eq!(
        labels.get("keptn.sh/project").map(String::as_str),
        Some("shop")
    );
    assert_eq!(labels.get("keptn.sh/stage").map(String::as_str), Some("qa"));
    Ok(())
}
