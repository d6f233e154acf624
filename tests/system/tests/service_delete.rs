//! service.delete.finished end to end: the production binary, real nats-server, real helm,
//! kube-sim. Each test checks the one reply, Helm's releases across namespaces and the
//! inventory.

use std::time::Duration;

use kube_sim::Config as SimConfig;
use serde_json::{json, Value};
use system_tests::deploy_env::{
    deployment_event, deployment_event_in, example_chart, example_chart_with, release_event,
    service_delete_event, DeployEnv,
};
use system_tests::worker_process::{WorkerProcess, WorkerSpec};

const WAIT: Duration = Duration::from_secs(90);

fn sim() -> SimConfig {
    SimConfig {
        rollout_delay: Duration::from_millis(200),
        ..SimConfig::default()
    }
}

fn releases(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut releases: Vec<(String, String)> = list
        .iter()
        .map(|(ns, name)| (ns.to_string(), name.to_string()))
        .collect();
    releases.sort();
    releases
}

fn message(finished: &Value) -> &str {
    finished["data"]["message"].as_str().unwrap_or_default()
}

/// Deploys `(stage, service, strategy)` at once and checks each succeeded.
async fn deploy_all(env: &DeployEnv, targets: &[(&str, &str, &str)]) -> anyhow::Result<()> {
    let events: Vec<Value> = targets
        .iter()
        .map(|(stage, service, strategy)| {
            let id = format!("deploy-{stage}-{service}");
            deployment_event_in(stage, &id, service, strategy, json!({}))
        })
        .collect();
    let finished =
        futures::future::try_join_all(events.iter().map(|event| env.deploy(event, WAIT))).await?;
    for finished in finished {
        anyhow::ensure!(finished["data"]["status"] == "succeeded", "{finished:#}");
    }
    Ok(())
}

/// Waits until the worker has taken in (and ignored) `count` of its own events, so no
/// later reply can be one it still had to answer.
async fn wait_own_events_ignored(worker: &WorkerProcess, count: f64) -> anyhow::Result<f64> {
    test_harness::wait::wait_until(
        "own reports came back and were ignored",
        WAIT,
        Duration::from_millis(50),
        || async {
            let ignored = worker
                .metric("helm_service_events_ignored_total{reason=\"own-source\"}")
                .await
                .ok()?;
            (ignored >= count).then_some(ignored)
        },
    )
    .await
}

#[tokio::test]
async fn deleting_a_service_uninstalls_it_in_every_stage_and_nothing_else() -> anyhow::Result<()> {
    let env = DeployEnv::start(sim()).await?;
    for (stage, service) in [("dev", "hello"), ("staging", "hello"), ("dev", "other")] {
        env.push_chart(("shop", stage, service), &example_chart())?;
    }
    let worker = env.start_worker(env.worker_spec(), "worker").await?;
    deploy_all(
        &env,
        &[
            ("dev", "hello", "direct"),
            ("staging", "hello", "direct"),
            ("dev", "other", "direct"),
        ],
    )
    .await?;
    assert_eq!(env.helm_releases_everywhere().await?.len(), 6);
    assert_eq!(
        env.inventory_keys().await?,
        ["shop.dev.hello", "shop.dev.other", "shop.staging.hello"]
    );

    let finished = env
        .run_report(&service_delete_event("del-1", "hello", None), WAIT)
        .await?;
    let data = &finished["data"];
    assert_eq!(finished["type"], "sh.keptn.event.service.delete.finished");
    assert_eq!(finished["source"], "helm-service");
    assert_eq!(data["status"], "succeeded", "{finished:#}");
    assert_eq!(data["result"], "pass", "{finished:#}");
    assert_eq!(data["project"], "shop");
    assert_eq!(data["service"], "hello");
    assert_eq!(
        message(&finished),
        "deleted service hello of project shop: \
         stage dev: uninstalled shop-dev-hello-generated and shop-dev-hello in namespace shop-dev; \
         stage staging: uninstalled shop-staging-hello-generated and shop-staging-hello in namespace shop-staging"
    );

    assert_eq!(
        env.helm_releases_everywhere().await?,
        releases(&[
            ("shop-dev", "shop-dev-other"),
            ("shop-dev", "shop-dev-other-generated")
        ])
    );
    assert!(env.deployment("shop-dev", "hello").await?.is_none());
    assert!(env.deployment("shop-staging", "hello").await?.is_none());
    assert!(env.deployment("shop-dev", "other").await?.is_some());
    assert!(env
        .istio("VirtualService", "shop-dev", "other")
        .await?
        .is_some());
    assert_eq!(env.inventory_keys().await?, ["shop.dev.other"]);

    // Our reply is on the consumed subject: it comes back, is ignored, and nothing follows.
    assert_eq!(wait_own_events_ignored(&worker, 1.0).await?, 1.0);
    let replies = env.env.replies().await?;
    let reports: Vec<&Value> = replies
        .events
        .iter()
        .filter(|e| e["type"] == "sh.keptn.event.service.delete.finished")
        .collect();
    assert_eq!(reports.len(), 1, "{reports:#?}");
    assert_eq!(reports[0]["triggeredid"], "del-1");
    Ok(())
}

#[tokio::test]
async fn deleting_a_named_stage_leaves_the_other_stages() -> anyhow::Result<()> {
    let env = DeployEnv::start(sim()).await?;
    for stage in ["dev", "staging"] {
        env.push_chart(("shop", stage, "hello"), &example_chart())?;
    }
    let _worker = env.start_worker(env.worker_spec(), "worker").await?;
    deploy_all(
        &env,
        &[
            ("dev", "hello", "user_managed"),
            ("staging", "hello", "user_managed"),
        ],
    )
    .await?;

    let finished = env
        .run_report(
            &service_delete_event("del-staging", "hello", Some("staging")),
            WAIT,
        )
        .await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    assert_eq!(finished["data"]["stage"], "staging");
    assert_eq!(
        message(&finished),
        "deleted service hello of project shop: stage staging: uninstalled shop-staging-hello in namespace shop-staging"
    );
    assert_eq!(
        env.helm_releases_everywhere().await?,
        releases(&[("shop-dev", "shop-dev-hello")])
    );
    assert_eq!(env.inventory_keys().await?, ["shop.dev.hello"]);
    Ok(())
}

/// A worker that notices a dead holder quickly: short ack wait and lease TTL.
fn quick(mut spec: WorkerSpec) -> WorkerSpec {
    spec.ack_wait = "2s";
    spec.lease_ttl = "2s";
    spec
}

#[tokio::test]
async fn a_deletion_killed_after_one_stage_resumes_with_the_next() -> anyhow::Result<()> {
    let env = DeployEnv::start(sim()).await?;
    for stage in ["dev", "staging"] {
        env.push_chart(("shop", stage, "hello"), &example_chart())?;
    }
    let mut worker = env.start_worker(env.worker_spec(), "deploy").await?;
    deploy_all(
        &env,
        &[
            ("dev", "hello", "user_managed"),
            ("staging", "hello", "user_managed"),
        ],
    )
    .await?;
    worker.process.stop(Duration::from_secs(15)).await?;

    // Dies (SIGKILL) right after recording that stage dev is done.
    let mut spec = quick(env.worker_spec());
    spec.extra_args
        .extend(["--test-crash-after-step".into(), "uninstall-dev".into()]);
    let mut crashing = env.start_worker(spec, "crash").await?;
    let event = service_delete_event("del-crash", "hello", None);
    system_tests::events::publish(&env.env.js, &event).await?;
    let status = crashing.process.wait_exit(WAIT).await?;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "{}",
        crashing.process.log_tail(20)
    );
    assert_eq!(
        env.helm_releases_everywhere().await?,
        releases(&[("shop-staging", "shop-staging-hello")])
    );

    // The redelivery finishes the other stage and reports both, without redoing dev.
    let resumed = env.start_worker(quick(env.worker_spec()), "resume").await?;
    let (finished, _) = env.sole_finished("del-crash", WAIT).await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    assert_eq!(
        message(&finished),
        "deleted service hello of project shop: \
         stage dev: uninstalled shop-dev-hello in namespace shop-dev; \
         stage staging: uninstalled shop-staging-hello in namespace shop-staging"
    );
    assert!(env.helm_releases_everywhere().await?.is_empty());
    assert!(env.inventory_keys().await?.is_empty());
    for (step, skipped, completed) in [
        ("stages", 1.0, 0.0),
        ("uninstall-dev", 1.0, 0.0),
        ("uninstall-staging", 0.0, 1.0),
    ] {
        let metric = |kind: &str| format!("helm_service_steps_{kind}_total{{step=\"{step}\"}}");
        assert_eq!(
            (
                resumed.metric(&metric("skipped")).await?,
                resumed.metric(&metric("completed")).await?
            ),
            (skipped, completed),
            "{step}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn deleting_a_service_that_was_never_deployed_succeeds_and_says_so() -> anyhow::Result<()> {
    let env = DeployEnv::start(sim()).await?;
    let worker = env.start_worker(env.worker_spec(), "worker").await?;

    let finished = env
        .run_report(&service_delete_event("del-ghost", "ghost", None), WAIT)
        .await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    assert_eq!(finished["data"]["result"], "pass", "{finished:#}");
    assert_eq!(
        message(&finished),
        "service ghost of project shop is not deployed in any stage (no Helm release of it and no inventory entry): nothing to delete"
    );

    let finished = env
        .run_report(
            &service_delete_event("del-ghost-dev", "ghost", Some("dev")),
            WAIT,
        )
        .await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    assert_eq!(finished["data"]["result"], "pass", "{finished:#}");
    assert!(
        message(&finished).contains("is not deployed in stage dev"),
        "{finished:#}"
    );
    assert_eq!(wait_own_events_ignored(&worker, 2.0).await?, 2.0);
    assert_eq!(env.env.replies().await?.events.len(), 2);
    Ok(())
}

/// A deletion that has to wait for a stage's release lends its slot out like any task waiting
/// for a release, so the deployment ahead of it on that release gets a slot to run in once it
/// holds the release. Replica B has one slot: its deployment waits for the release replica A
/// holds (lending the slot), the deletion takes the slot and waits for the deployment; when
/// A is done, the deployment holds the release and needs a slot. Had the deletion kept the
/// slot, each would wait for the other for ever.
#[tokio::test]
async fn a_deletion_waiting_for_a_stage_lends_its_slot_to_the_deployment_holding_it(
) -> anyhow::Result<()> {
    let env = DeployEnv::start(SimConfig {
        rollout_delay: Duration::from_secs(4),
        ..SimConfig::default()
    })
    .await?;
    env.push_chart(("shop", "dev", "hello"), &example_chart())?;
    let one_slot = |mut spec: WorkerSpec| {
        spec.concurrency = 1;
        spec
    };
    let a = env.start_worker(one_slot(env.worker_spec()), "a").await?;
    deploy_all(&env, &[("dev", "hello", "direct")]).await?;

    // A's one slot is busy with a slow upgrade (its pods take 4s, longer than B takes to
    // start): A pulls nothing more, so the next events all go to B.
    let image = |tag: &str| json!({ "image": format!("ghcr.io/example/hello:{tag}") });
    let on_a = deployment_event_in("dev", "upgrade-on-a", "hello", "direct", image("2.0"));
    system_tests::events::publish(&env.env.js, &on_a).await?;
    env.env
        .wait_replies(WAIT, |r| !r.of("upgrade-on-a", "started").is_empty())
        .await?;
    let b = env.start_worker(one_slot(env.worker_spec()), "b").await?;
    // Tasks on B waiting for a release without a slot.
    let waiting = |count: f64| {
        let b = &b;
        async move {
            test_harness::wait::wait_until(
                "tasks waiting on B",
                WAIT,
                Duration::from_millis(20),
                || async {
                    let waiting = b.metric("helm_service_tasks_waiting").await.ok()?;
                    (waiting == count).then_some(())
                },
            )
            .await
        }
    };
    let on_b = deployment_event_in("dev", "upgrade-on-b", "hello", "direct", image("3.0"));
    system_tests::events::publish(&env.env.js, &on_b).await?;
    waiting(1.0).await?;
    let delete = service_delete_event("del-behind", "hello", None);
    system_tests::events::publish(&env.env.js, &delete).await?;
    waiting(2.0).await?;

    let (finished, replies) = env.sole_finished("del-behind", WAIT).await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    for upgrade in ["upgrade-on-a", "upgrade-on-b"] {
        let finished = replies.of(upgrade, "finished");
        assert_eq!(finished.len(), 1, "{upgrade} finished before the deletion");
        assert_eq!(finished[0]["data"]["status"], "succeeded", "{upgrade}");
    }
    assert!(env.helm_releases_everywhere().await?.is_empty());
    assert!(env.inventory_keys().await?.is_empty());
    assert_eq!(
        a.metric(
            "helm_service_events_received_total{type=\"sh.keptn.event.deployment.triggered\"}"
        )
        .await?,
        2.0
    );
    Ok(())
}

/// A pre-delete hook of the chart: a Job kept after it ran, so the test can see it did.
const DRAIN_HOOK: &str = r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Values.keptn.service }}-drain
  annotations:
    "helm.sh/hook": pre-delete
    "helm.sh/hook-delete-policy": before-hook-creation
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: drain
          image: ghcr.io/example/drain:1
"#;

/// After a promotion the user release's latest revision is helm-service's own (the canary
/// scaled to zero); deleting the service still runs the chart's pre-delete hook, which that
/// revision keeps from the chart's.
#[tokio::test]
async fn deleting_a_promoted_service_runs_the_charts_pre_delete_hook() -> anyhow::Result<()> {
    let env = DeployEnv::start(SimConfig {
        job_duration: Duration::from_millis(100),
        ..sim()
    })
    .await?;
    let chart = example_chart_with(env.env.dir.path(), &[("templates/drain.yaml", DRAIN_HOOK)])?;
    env.push_chart(("shop", "dev", "hello"), &chart)?;
    let _worker = env.start_worker(env.worker_spec(), "worker").await?;
    let deployment = deployment_event("d1", "hello", "blue_green_service", json!({}));
    let finished = env.deploy(&deployment, WAIT).await?;
    anyhow::ensure!(finished["data"]["status"] == "succeeded", "{finished:#}");
    let promotion = release_event("r1", "hello", "blue_green_service", "pass");
    let finished = env.deploy(&promotion, WAIT).await?;
    anyhow::ensure!(finished["data"]["status"] == "succeeded", "{finished:#}");
    let descriptions = env.helm_descriptions("shop-dev-hello", "shop-dev").await?;
    let latest = descriptions.last().map(|(_, d)| d.as_str()).unwrap_or("");
    assert!(
        latest.starts_with("helm-service: scale"),
        "{descriptions:?}"
    );
    let drain = ("batch", "v1", "Job");
    assert!(env
        .object(drain, "shop-dev", "hello-drain")
        .await?
        .is_none());

    let finished = env
        .run_report(&service_delete_event("del", "hello", Some("dev")), WAIT)
        .await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    assert!(env.helm_releases_everywhere().await?.is_empty());
    let job = env.object(drain, "shop-dev", "hello-drain").await?;
    assert!(job.is_some(), "the pre-delete hook did not run");
    Ok(())
}
