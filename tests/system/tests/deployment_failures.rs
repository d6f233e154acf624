//! deployment.triggered that cannot succeed: each gets a clear errored finished, no
//! panic, and the cluster is left as it was (or at its last good revision).

use std::io::Write;
use std::time::Duration;

use kube_sim::Config as SimConfig;
use serde_json::{json, Value};
use system_tests::deploy_env::{
    deployment_event, example_chart, example_chart_with, image_of, DeployEnv,
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

async fn worker(env: &DeployEnv) -> anyhow::Result<system_tests::worker_process::WorkerProcess> {
    let mut spec = env.worker_spec();
    // A short rollout deadline so a never-ready image fails fast.
    for (i, arg) in spec.extra_args.clone().iter().enumerate() {
        if arg == "--rollout-timeout" {
            spec.extra_args[i + 1] = "3s".into();
        }
    }
    spec.extra_args
        .extend(["--max-chart-bytes".to_owned(), "20000".to_owned()]);
    env.start_worker(spec, "worker").await
}

#[track_caller]
fn assert_errored(finished: &Value, needles: &[&str]) {
    let data = &finished["data"];
    assert_eq!(data["status"], "errored", "{finished:#}");
    assert_eq!(data["result"], "fail", "{finished:#}");
    let message = data["message"].as_str().unwrap_or_default();
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
}

/// A gzip'd tar with one entry of `path`, written with raw header bytes so any path fits.
fn tgz_with_entry(path: &str, content: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    {
        let raw = header.as_old_mut();
        raw.name[..path.len()].copy_from_slice(path.as_bytes());
    }
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, content).unwrap();
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

#[tokio::test]
async fn bad_charts_and_values_are_answered_with_clear_errors() -> anyhow::Result<()> {
    let env = DeployEnv::start(sim()).await?;
    env.push_chart(("shop", "dev", "valued"), &example_chart())?;
    env.put_raw_chart("corrupt", b"this is not a gzip archive".to_vec())
        .await?;
    env.put_raw_chart(
        "traversal",
        tgz_with_entry("hello/../../etc/evil.yaml", b"x: 1"),
    )
    .await?;
    let big: Vec<u8> = (0..40_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    env.put_raw_chart("oversized", big).await?;
    let _worker = worker(&env).await?;

    let finished = env
        .deploy(
            &deployment_event("f-missing", "missing", "direct", json!({})),
            WAIT,
        )
        .await?;
    assert_errored(&finished, &["no chart for service missing", "charts push"]);

    let finished = env
        .deploy(
            &deployment_event("f-corrupt", "corrupt", "direct", json!({})),
            WAIT,
        )
        .await?;
    assert_errored(&finished, &["helm/corrupt.tgz", "not acceptable"]);

    let finished = env
        .deploy(
            &deployment_event("f-traversal", "traversal", "direct", json!({})),
            WAIT,
        )
        .await?;
    assert_errored(&finished, &["helm/traversal.tgz", ".."]);

    let finished = env
        .deploy(
            &deployment_event("f-oversized", "oversized", "direct", json!({})),
            WAIT,
        )
        .await?;
    assert_errored(&finished, &["20000"]);

    let finished = env
        .deploy(
            &deployment_event(
                "f-values",
                "valued",
                "direct",
                json!({"replicaCount": "many"}),
            ),
            WAIT,
        )
        .await?;
    assert_errored(&finished, &["replicaCount"]);
    assert!(
        env.deployment(NS, "valued").await?.is_none(),
        "nothing deployed"
    );
    Ok(())
}

#[tokio::test]
async fn blue_green_refuses_a_chart_with_two_deployments() -> anyhow::Result<()> {
    let env = DeployEnv::start(sim()).await?;
    let dir = tempfile::tempdir()?;
    let chart = example_chart_with(
        dir.path(),
        &[(
            "templates/worker.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: hello-worker\nspec:\n  selector:\n    matchLabels: {app: hello-worker}\n  template:\n    metadata:\n      labels: {app: hello-worker}\n    spec:\n      containers: [{name: w, image: ghcr.io/example/worker:1}]\n",
        )],
    )?;
    env.push_chart(("shop", "dev", "hello"), &chart)?;
    let _worker = worker(&env).await?;

    let finished = env
        .deploy(
            &deployment_event("bg-two", "hello", "blue_green_service", json!({})),
            WAIT,
        )
        .await?;
    assert_errored(
        &finished,
        &[
            "exactly one Deployment and one Service",
            "hello, hello-worker",
        ],
    );
    assert!(env.istio("VirtualService", NS, "hello").await?.is_none());
    assert!(env.deployment(NS, "hello-primary").await?.is_none());
    assert!(
        env.deployment(NS, "hello").await?.is_none(),
        "the refused first install was removed"
    );
    Ok(())
}

#[tokio::test]
async fn never_ready_image_fails_with_the_cause_and_restores_the_last_good_revision(
) -> anyhow::Result<()> {
    let env = DeployEnv::start(sim()).await?;
    env.push_chart(("shop", "dev", "hello"), &example_chart())?;
    let _worker = worker(&env).await?;

    let finished = env
        .deploy(
            &deployment_event("ok-1", "hello", "blue_green_service", json!({})),
            WAIT,
        )
        .await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");

    let finished = env
        .deploy(
            &deployment_event(
                "broken-2",
                "hello",
                "blue_green_service",
                json!({"image": "ghcr.io/example/hello:never-ready"}),
            ),
            WAIT,
        )
        .await?;
    assert_errored(
        &finished,
        &[
            "Deployment hello",
            "ImagePullBackOff",
            "rolled back to its last good revision 1",
        ],
    );
    let history = env.helm_history("shop-dev-hello", NS).await?;
    assert_eq!(
        history.last().map(|h| h.1.as_str()),
        Some("deployed"),
        "{history:?}"
    );
    assert_eq!(
        history.len(),
        3,
        "install, failed upgrade, rollback: {history:?}"
    );
    let user = env.deployment(NS, "hello").await?.expect("user Deployment");
    assert_eq!(
        image_of(&user),
        "ghcr.io/example/hello:1.0",
        "back at the good image"
    );
    let primary = env.deployment(NS, "hello-primary").await?.expect("primary");
    assert_eq!(image_of(&primary), "ghcr.io/example/hello:1.0");
    // The routing still sends traffic to the canary, which is the restored good version;
    // the generated release was not touched by the failed deployment.
    assert_eq!(
        env.helm_history("shop-dev-hello-generated", NS)
            .await?
            .len(),
        1
    );
    Ok(())
}
