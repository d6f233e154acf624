//! The operator CLI against a real nats-server, kube-sim, helm and worker: `dead-letters
//! list|show|replay` (and, below, `status` and `releases show`).
//!
//! The replay story: a deployment runs out of deliveries because its cause is missing (the
//! cluster's API server answers every request with a server error), is answered errored and
//! dead-lettered; once the cause is fixed, an operator replays it and it finishes once. Its
//! payload is larger than the record's 64 KiB excerpt, so the replay reads the original back
//! from the Keptn stream.

use std::process::Output;
use std::time::Duration;

use anyhow::Context as _;
use kube_sim::{Config as SimConfig, FaultConfig};
use serde_json::{json, Value};
use system_tests::deploy_env::{
    deployment_event, example_chart, helm_service_bin, DeployEnv, TOOL_TIMEOUT,
};
use test_harness::wait::wait_until;

const DEADLINE: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(50);
const NS: &str = "shop-dev";

/// Runs `helm-service <args> --nats-url <this world's>` and returns its output.
async fn helm_service(env: &DeployEnv, args: &[&str]) -> anyhow::Result<Output> {
    let run = tokio::process::Command::new(helm_service_bin())
        .args(args)
        .args(["--nats-url", &env.env.nats.url()])
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(TOOL_TIMEOUT, run)
        .await
        .with_context(|| format!("helm-service {args:?} took more than {TOOL_TIMEOUT:?}"))?
        .with_context(|| format!("running helm-service {args:?}"))
}

/// Runs a command that must succeed with `-o json` and returns what it printed.
async fn json_of(env: &DeployEnv, args: &[&str]) -> anyhow::Result<Value> {
    let mut with_json = args.to_vec();
    with_json.extend(["-o", "json"]);
    let out = helm_service(env, &with_json).await?;
    anyhow::ensure!(
        out.status.success(),
        "helm-service {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "helm-service {args:?} printed no JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn an_exhausted_deployment_is_replayed_once_its_cause_is_fixed_and_finishes_once(
) -> anyhow::Result<()> {
    let env = DeployEnv::start(SimConfig {
        rollout_delay: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await?;
    env.push_chart(("shop", "dev", "hello"), &example_chart())?;
    let mut spec = env.worker_spec();
    spec.extra_args
        .extend(["--max-deliveries".to_owned(), "2".to_owned()]);
    let _worker = env.start_worker(spec, "worker").await?;

    // Nothing dead yet: an empty list, not an error.
    assert_eq!(json_of(&env, &["dead-letters", "list"]).await?, json!([]));

    // The cause: the cluster's API server fails every request.
    env.sim.faults().set(FaultConfig {
        error_rate: 1.0,
        ..FaultConfig::default()
    });
    let mut event = deployment_event("d-exhausted", "hello", "direct", json!({}));
    // More than the record's excerpt: the replay must find the original in the Keptn stream.
    event["data"]["padding"] = json!("p".repeat(70 * 1024));
    system_tests::events::publish(&env.env.js, &event).await?;
    let (finished, _) = env.sole_finished("d-exhausted", DEADLINE).await?;
    assert_eq!(finished["data"]["status"], "errored", "{finished:#}");
    let message = finished["data"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("gave up after 3 deliveries"), "{message}");

    // A malformed message too, which cannot be replayed.
    system_tests::events::publish_raw(
        &env.env.js,
        "sh.keptn.event.deployment.triggered",
        "not an event".into(),
        Duration::from_secs(30),
    )
    .await?;
    let listed = wait_until("two dead letters", DEADLINE, POLL, || async {
        let listed = json_of(&env, &["dead-letters", "list"]).await.ok()?;
        (listed.as_array()?.len() == 2).then_some(listed)
    })
    .await?;
    let exhausted = &listed[0];
    assert_eq!(exhausted["reason"], "exhausted", "{listed:#}");
    assert_eq!(exhausted["event_id"], "d-exhausted");
    assert_eq!(exhausted["subject"], "sh.keptn.event.deployment.triggered");
    assert_eq!(exhausted["replays"], 0);
    assert_eq!(listed[1]["reason"], "malformed", "{listed:#}");
    let id = exhausted["id"]
        .as_u64()
        .context("a numeric id")?
        .to_string();
    let malformed = listed[1]["id"]
        .as_u64()
        .context("a numeric id")?
        .to_string();
    let only_exhausted = json_of(&env, &["dead-letters", "list", "--reason", "exhausted"]).await?;
    assert_eq!(only_exhausted.as_array().map(Vec::len), Some(1));

    let table = helm_service(&env, &["dead-letters", "list"]).await?;
    let table = text(&table.stdout);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains("d-exhausted") && table.contains("gave up after 3"),
        "{table}"
    );

    let shown = json_of(&env, &["dead-letters", "show", &id]).await?;
    assert_eq!(shown[0]["record"]["payload_truncated"], true, "{shown:#}");
    assert_eq!(shown[0]["replay"], Value::Null);

    // The cause fixed, the operator replays it.
    env.sim.faults().set(FaultConfig::default());
    let replayed = json_of(&env, &["dead-letters", "replay", &id]).await?;
    assert_eq!(replayed[0]["replayed"], true, "{replayed:#}");
    assert_eq!(replayed[0]["event_id"], "d-exhausted");
    assert_eq!(replayed[0]["replay"], 1);
    let new_id = replayed[0]["replay_event_id"]
        .as_str()
        .context("the replay's event id")?
        .to_owned();
    let (finished, replies) = env.sole_finished(&new_id, DEADLINE).await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    assert_eq!(replies.of(&new_id, "started").len(), 1);
    assert_eq!(
        env.helm_history("shop-dev-hello", NS).await?.len(),
        1,
        "deployed once"
    );
    let stored = test_harness::stream::stream_json(&env.env.js, "keptn", "").await?;
    let replay_events: Vec<&Value> = stored.iter().filter(|e| e["id"] == new_id).collect();
    assert_eq!(replay_events.len(), 1, "published once");
    assert_eq!(replay_events[0]["replayof"], "d-exhausted");
    assert_eq!(
        replay_events[0]["data"]["padding"],
        event["data"]["padding"]
    );
    assert_eq!(replay_events[0]["shkeptncontext"], event["shkeptncontext"]);

    // A second replay is refused without --force, and sends nothing.
    let again = helm_service(&env, &["dead-letters", "replay", &id]).await?;
    assert!(!again.status.success(), "a second replay is refused");
    let said = text(&again.stdout) + &text(&again.stderr);
    assert!(
        said.contains("replayed already") && said.contains("--force"),
        "{said}"
    );
    assert!(said.contains(&new_id), "names the earlier replay: {said}");
    let shown = json_of(&env, &["dead-letters", "show", &id]).await?;
    assert_eq!(shown[0]["replay"]["replays"], 1, "{shown:#}");
    assert_eq!(shown[0]["replay"]["event_ids"], json!([new_id]));
    let listed = json_of(&env, &["dead-letters", "list"]).await?;
    assert_eq!(listed[0]["replays"], 1);
    assert_eq!(listed[0]["last_replay_event_id"], new_id.as_str());

    // Forced, it is sent again under another id.
    let forced = json_of(&env, &["dead-letters", "replay", "--force", &id]).await?;
    assert_eq!(forced[0]["replay"], 2, "{forced:#}");
    let forced_id = forced[0]["replay_event_id"].as_str().unwrap_or_default();
    assert_ne!(forced_id, new_id);
    let (finished, _) = env.sole_finished(forced_id, DEADLINE).await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");

    // A message that is no event is refused, naming why.
    let refused = helm_service(&env, &["dead-letters", "replay", &malformed]).await?;
    assert!(!refused.status.success());
    let said = text(&refused.stdout);
    assert!(said.contains("not a CloudEvent"), "{said}");
    // And an id that is no dead letter is an error.
    let missing = helm_service(&env, &["dead-letters", "show", "999"]).await?;
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("no dead letter 999"));
    Ok(())
}
