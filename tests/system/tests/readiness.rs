//! Readiness of everything a release holds, and fail fast: the kube-sim chart corpus deployed
//! through `deployment.triggered` passes only once every workload is ready; a failing Job, a
//! claim that never binds and a broken image in a StatefulSet end the task errored, naming
//! the object and why, and the release is restored.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use kube::api::Api;
use kube_sim::Config as SimConfig;
use serde_json::{json, Value};
use system_tests::deploy_env::{
    deployment_event, example_chart_with, pinned_helm, workspace_root, DeployEnv, CONFIG_COMMIT,
};
use system_tests::worker_process::{WorkerProcess, WorkerSpec};

const WAIT: Duration = Duration::from_secs(90);
const NS: &str = "shop-dev";

fn corpus_chart(name: &str) -> PathBuf {
    workspace_root().join("tests/kube-sim/charts").join(name)
}

/// The test world's worker spec with `args` set (a flag already there gets the new value)
/// and, with `defaults`, without the shortened rollout deadline of `worker_spec`.
fn spec_with(env: &DeployEnv, args: &[(&str, &str)], defaults: bool) -> WorkerSpec {
    let mut spec = env.worker_spec();
    if defaults {
        if let Some(i) = spec
            .extra_args
            .iter()
            .position(|a| a == "--rollout-timeout")
        {
            spec.extra_args.drain(i..i + 2);
        }
    }
    for (flag, value) in args {
        match spec.extra_args.iter().position(|a| a == flag) {
            Some(i) => spec.extra_args[i + 1] = (*value).to_owned(),
            None => spec
                .extra_args
                .extend([(*flag).to_owned(), (*value).to_owned()]),
        }
    }
    spec
}

async fn worker(env: &DeployEnv, args: &[(&str, &str)]) -> anyhow::Result<WorkerProcess> {
    env.start_worker(spec_with(env, args, false), "worker")
        .await
}

#[track_caller]
fn assert_errored(finished: &Value, needles: &[&str]) {
    let data = &finished["data"];
    assert_eq!(data["status"], "errored", "{finished:#}");
    assert_eq!(data["result"], "fail", "{finished:#}");
    // Errored replies still carry the deployment block the spec requires.
    assert_eq!(
        data["deployment"]["gitCommit"], CONFIG_COMMIT,
        "{finished:#}"
    );
    let message = data["message"].as_str().unwrap_or_default();
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
}

#[track_caller]
fn assert_succeeded(finished: &Value) {
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    assert_eq!(finished["data"]["result"], "pass", "{finished:#}");
}

async fn stateful_set_ready(env: &DeployEnv, name: &str) -> anyhow::Result<(i32, i32)> {
    let api: Api<StatefulSet> = Api::namespaced(env.client.clone(), NS);
    let sts = api.get(name).await?;
    let wanted = sts.spec.and_then(|s| s.replicas).unwrap_or(1);
    let ready = sts.status.and_then(|s| s.ready_replicas).unwrap_or(0);
    Ok((ready, wanted))
}

#[tokio::test]
async fn the_chart_corpus_passes_only_once_every_workload_is_ready() -> anyhow::Result<()> {
    let env = DeployEnv::start(SimConfig::default()).await?;
    let _worker = worker(&env, &[]).await?;
    // (chart, service, strategy): blue/green where the chart has one Deployment and one
    // Service (hooks), user_managed for the node agent and the web app.
    let cases = [
        ("database", "db", "direct"),
        ("hooks", "api", "blue_green_service"),
        ("webapp", "web", "user_managed"),
        ("agent", "agent", "user_managed"),
    ];
    for (i, (chart, service, strategy)) in cases.into_iter().enumerate() {
        env.push_chart(("shop", "dev", service), &corpus_chart(chart))?;
        let values = match chart {
            "database" => json!({"replicaCount": 2}),
            _ => json!({}),
        };
        let event = deployment_event(&format!("c{i}"), service, strategy, values);
        let finished = env.deploy(&event, WAIT).await?;
        assert_succeeded(&finished);
        match chart {
            "database" => assert_eq!(
                stateful_set_ready(&env, "shop-dev-db-database").await?,
                (2, 2)
            ),
            "agent" => {
                let api: Api<DaemonSet> = Api::namespaced(env.client.clone(), NS);
                let status = api
                    .get("shop-dev-agent-agent")
                    .await?
                    .status
                    .expect("status");
                assert_eq!(
                    status.number_available,
                    Some(status.desired_number_scheduled)
                );
            }
            _ => {}
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_stateful_set_ready_late_finishes_late() -> anyhow::Result<()> {
    let delay = Duration::from_secs(4);
    let env = DeployEnv::start(SimConfig {
        rollout_delay: delay,
        ..SimConfig::default()
    })
    .await?;
    env.push_chart(("shop", "dev", "db"), &corpus_chart("database"))?;
    let _worker = worker(&env, &[]).await?;
    let started = Instant::now();
    let finished = env
        .deploy(
            &deployment_event("late", "db", "direct", json!({"replicaCount": 1})),
            WAIT,
        )
        .await?;
    let elapsed = started.elapsed();
    assert_succeeded(&finished);
    eprintln!("finished after {elapsed:?} (pods ready {delay:?} after creation)");
    // Its only workload is a StatefulSet: before, it passed as soon as helm returned.
    assert!(
        elapsed >= delay,
        "finished before the pod could be ready: {elapsed:?}"
    );
    assert_eq!(
        stateful_set_ready(&env, "shop-dev-db-database").await?,
        (1, 1)
    );
    Ok(())
}

#[tokio::test]
async fn a_failing_hook_job_fails_the_deployment_naming_it() -> anyhow::Result<()> {
    failing_hook_job("helm").await
}

/// Helm runs hooks itself, and Helm 3 and 4 word their failure differently.
#[tokio::test]
async fn a_failing_hook_job_fails_the_deployment_naming_it_on_helm_3() -> anyhow::Result<()> {
    failing_hook_job("helm3").await
}

async fn failing_hook_job(helm: &str) -> anyhow::Result<()> {
    let env = DeployEnv::start(SimConfig {
        failing_job_images: vec!["api-migrate".into()],
        ..SimConfig::default()
    })
    .await?;
    env.push_chart(("shop", "dev", "api"), &corpus_chart("hooks"))?;
    let spec = env.worker_spec_with_helm(&pinned_helm(helm));
    let _worker = env.start_worker(spec, "worker").await?;
    let finished = env
        .deploy(&deployment_event("hook", "api", "direct", json!({})), WAIT)
        .await?;
    assert_errored(&finished, &["api-api-migrate"]);
    Ok(())
}

#[tokio::test]
async fn a_failing_job_of_the_chart_fails_the_deployment_naming_it() -> anyhow::Result<()> {
    let env = DeployEnv::start(SimConfig {
        failing_job_images: vec!["seed-broken".into()],
        ..SimConfig::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let job = "apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-seed
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: seed
          image: registry.example/seed-broken:1
";
    let chart = example_chart_with(dir.path(), &[("templates/job.yaml", job)])?;
    env.push_chart(("shop", "dev", "hello"), &chart)?;
    let _worker = worker(&env, &[]).await?;
    let finished = env
        .deploy(&deployment_event("job", "hello", "direct", json!({})), WAIT)
        .await?;
    assert_errored(
        &finished,
        &[
            "Job shop-dev-hello-seed in shop-dev cannot become ready: the Job failed",
            "release shop-dev-hello had no earlier good revision and was removed",
        ],
    );
    assert!(env.helm_releases(NS).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_claim_that_never_binds_fails_the_deployment_naming_it() -> anyhow::Result<()> {
    let env = DeployEnv::start(SimConfig {
        never_bound_claims: vec!["data-shop-dev-db-database".into()],
        ..SimConfig::default()
    })
    .await?;
    env.push_chart(("shop", "dev", "db"), &corpus_chart("database"))?;
    let _worker = worker(&env, &[("--fail-fast-after", "2s")]).await?;
    let finished = env
        .deploy(
            &deployment_event("claim", "db", "direct", json!({"replicaCount": 1})),
            WAIT,
        )
        .await?;
    assert_errored(
        &finished,
        &[
            "StatefulSet shop-dev-db-database in shop-dev cannot start its pods: pod shop-dev-db-database-0 has been Unschedulable",
            "claim data-shop-dev-db-database-0 is Pending (not bound)",
            "release shop-dev-db had no earlier good revision and was removed",
        ],
    );
    Ok(())
}

#[tokio::test]
async fn a_broken_image_in_a_stateful_set_fails_within_90s_with_defaults() -> anyhow::Result<()> {
    let env = DeployEnv::start(SimConfig {
        never_ready_images: vec!["broken".into()],
        ..SimConfig::default()
    })
    .await?;
    env.push_chart(("shop", "dev", "db"), &corpus_chart("database"))?;
    // The defaults: --rollout-timeout 5m, --fail-fast-after 60s.
    let _worker = env
        .start_worker(spec_with(&env, &[], true), "worker")
        .await?;
    let good = env
        .deploy(
            &deployment_event("good", "db", "direct", json!({"replicaCount": 1})),
            WAIT,
        )
        .await?;
    assert_succeeded(&good);
    let started = Instant::now();
    let finished = env
        .deploy(
            &deployment_event(
                "broken",
                "db",
                "direct",
                json!({"image": {"tag": "broken"}}),
            ),
            Duration::from_secs(120),
        )
        .await?;
    let elapsed = started.elapsed();
    eprintln!(
        "broken image reported after {elapsed:?}: {}",
        finished["data"]["message"]
    );
    assert_errored(
        &finished,
        &[
            "StatefulSet shop-dev-db-database in shop-dev cannot start its pods",
            "ImagePullBackOff",
            "release shop-dev-db was rolled back to its last good revision 1",
        ],
    );
    assert!(elapsed <= Duration::from_secs(90), "{elapsed:?}");
    let history = env
        .helm(&["history", "shop-dev-db", "-n", NS, "-o", "json"])
        .await?;
    let history: Vec<Value> = serde_json::from_str(&history)?;
    let last = history.last().expect("revisions");
    assert_eq!(last["status"], "deployed", "{history:#?}");
    assert!(
        last["description"]
            .as_str()
            .unwrap_or_default()
            .contains("Rollback to 1"),
        "{history:#?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_unchanged_redeploy_checks_the_stateful_set_too() -> anyhow::Result<()> {
    let env = DeployEnv::start(SimConfig::default()).await?;
    env.push_chart(("shop", "dev", "db"), &corpus_chart("database"))?;
    let _worker = worker(&env, &[]).await?;
    let values = json!({"replicaCount": 1});
    let first = env
        .deploy(
            &deployment_event("u1", "db", "direct", values.clone()),
            WAIT,
        )
        .await?;
    assert_succeeded(&first);
    let again = env
        .deploy(
            &deployment_event("u2", "db", "direct", values.clone()),
            WAIT,
        )
        .await?;
    let message = again["data"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("nothing to do"), "{message}");
    // Its only workload goes away behind Helm's back: not healthy, so helm runs again.
    let api: Api<StatefulSet> = Api::namespaced(env.client.clone(), NS);
    api.delete("shop-dev-db-database", &Default::default())
        .await?;
    let repaired = env
        .deploy(&deployment_event("u3", "db", "direct", values), WAIT)
        .await?;
    assert_succeeded(&repaired);
    let message = repaired["data"]["message"].as_str().unwrap_or_default();
    assert!(!message.contains("nothing to do"), "{message}");
    assert_eq!(
        stateful_set_ready(&env, "shop-dev-db-database").await?,
        (1, 1)
    );
    Ok(())
}

/// A `type: LoadBalancer` Service beside the example chart's Deployment.
const LOAD_BALANCER: &str = "apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}-public
spec:
  type: LoadBalancer
  selector:
    app.kubernetes.io/name: hello
  ports:
    - port: 80
      targetPort: 8080
";

#[tokio::test]
async fn a_load_balancer_is_ready_once_it_has_an_address() -> anyhow::Result<()> {
    let delay = Duration::from_secs(3);
    let env = DeployEnv::start(SimConfig {
        load_balancer_delay: delay,
        ..SimConfig::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let chart = example_chart_with(dir.path(), &[("templates/public.yaml", LOAD_BALANCER)])?;
    env.push_chart(("shop", "dev", "hello"), &chart)?;
    let _worker = worker(&env, &[]).await?;
    let started = Instant::now();
    let finished = env
        .deploy(&deployment_event("lb", "hello", "direct", json!({})), WAIT)
        .await?;
    let elapsed = started.elapsed();
    assert_succeeded(&finished);
    eprintln!("finished after {elapsed:?} (address assigned {delay:?} after creation)");
    assert!(
        elapsed >= delay,
        "finished before the load balancer had an address: {elapsed:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_load_balancer_without_an_address_fails_the_deployment_naming_it() -> anyhow::Result<()> {
    let env = DeployEnv::start(SimConfig {
        pending_load_balancers: vec!["hello-public".into()],
        ..SimConfig::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let chart = example_chart_with(dir.path(), &[("templates/public.yaml", LOAD_BALANCER)])?;
    env.push_chart(("shop", "dev", "hello"), &chart)?;
    let _worker = worker(&env, &[("--rollout-timeout", "5s")]).await?;
    let finished = env
        .deploy(&deployment_event("lb", "hello", "direct", json!({})), WAIT)
        .await?;
    assert_errored(
        &finished,
        &[
            "shop-dev-hello-public",
            "no load balancer address assigned yet",
            "release shop-dev-hello had no earlier good revision and was removed",
        ],
    );
    assert!(env.helm_releases(NS).await?.is_empty());
    Ok(())
}
