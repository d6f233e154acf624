//! The operator CLI against a real nats-server, kube-sim, helm and worker: `dead-letters
//! list|show|replay`, `status` and `releases show`.
//!
//! The replay story: a deployment runs out of deliveries because its cause is missing (the
//! cluster's API server answers every request with a server error), is answered errored and
//! dead-lettered; once the cause is fixed, an operator replays it and it finishes once. Its
//! payload is larger than the record's 64 KiB excerpt, so the replay reads the original back
//! from the Keptn stream.
//!
//! `show` hides the Helm values an event carries (they hold secrets) unless `--show-values`,
//! while a replay sends them as they were; `list` shows the newest `--limit` letters and says
//! how many there are; `status` counts the letters never replayed.

use std::process::Output;
use std::time::Duration;

use anyhow::Context as _;
use kube_sim::{Config as SimConfig, FaultConfig};
use serde_json::{json, Value};
use system_tests::deploy_env::{
    deployment_event, example_chart, helm_service_bin, DeployEnv, TOOL_TIMEOUT,
};
use system_tests::env::TestEnv;
use system_tests::events::{publish, publish_raw, triggered};
use system_tests::worker_process::WorkerProcess;
use test_harness::wait::wait_until;

const PROBE_WORKER: &str = env!("CARGO_BIN_EXE_probe-worker");

const DEADLINE: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(50);
const NS: &str = "shop-dev";

/// Runs `helm-service <args> --nats-url <this world's>` and returns its output.
async fn helm_service(env: &impl World, args: &[&str]) -> anyhow::Result<Output> {
    let run = tokio::process::Command::new(helm_service_bin())
        .args(args)
        .args(["--nats-url", &env.nats_url()])
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(TOOL_TIMEOUT, run)
        .await
        .with_context(|| format!("helm-service {args:?} took more than {TOOL_TIMEOUT:?}"))?
        .with_context(|| format!("running helm-service {args:?}"))
}

/// Runs a command that must succeed with `-o json` and returns what it printed.
async fn json_of(env: &impl World, args: &[&str]) -> anyhow::Result<Value> {
    json_with_outcome(env, args, true).await
}

/// Runs a command that must fail (exit 1) with `-o json` and returns what it printed.
async fn json_of_failing(env: &impl World, args: &[&str]) -> anyhow::Result<Value> {
    json_with_outcome(env, args, false).await
}

async fn json_with_outcome(
    env: &impl World,
    args: &[&str],
    succeeds: bool,
) -> anyhow::Result<Value> {
    let mut with_json = args.to_vec();
    with_json.extend(["-o", "json"]);
    let out = helm_service(env, &with_json).await?;
    anyhow::ensure!(
        out.status.success() == succeeds,
        "helm-service {args:?} exited {} (expected {}): {}",
        out.status,
        if succeeds { "success" } else { "failure" },
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "helm-service {args:?} printed no JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A world whose NATS the commands talk to.
trait World {
    fn nats_url(&self) -> String;
}

impl World for DeployEnv {
    fn nats_url(&self) -> String {
        self.env.nats.url()
    }
}

impl World for TestEnv {
    fn nats_url(&self) -> String {
        self.nats.url()
    }
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
    assert_eq!(
        json_of(&env, &["dead-letters", "list"]).await?,
        json!({"letters": [], "total": 0, "omitted": 0})
    );

    // The cause: the cluster's API server fails every request.
    env.sim.faults().set(FaultConfig {
        error_rate: 1.0,
        ..FaultConfig::default()
    });
    // Helm values with a secret, which `show` must not print and the replay must send.
    let values = json!({"db": {"password": "exhausted-s3cret"}});
    let mut event = deployment_event("d-exhausted", "hello", "direct", values.clone());
    // More than the record's excerpt: the replay must find the original in the Keptn stream.
    event["data"]["padding"] = json!("p".repeat(70 * 1024));
    system_tests::events::publish(&env.env.js, &event).await?;
    let (finished, _) = env.sole_finished("d-exhausted", DEADLINE).await?;
    assert_eq!(finished["data"]["status"], "errored", "{finished:#}");
    let message = finished["data"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("gave up after 3 deliveries"), "{message}");

    // A malformed message too, which cannot be replayed.
    publish_raw(
        &env.env.js,
        "sh.keptn.event.deployment.triggered",
        "not an event".into(),
        Duration::from_secs(30),
    )
    .await?;
    let listing = wait_until("two dead letters", DEADLINE, POLL, || async {
        let listing = json_of(&env, &["dead-letters", "list"]).await.ok()?;
        (listing["letters"].as_array()?.len() == 2).then_some(listing)
    })
    .await?;
    assert_eq!(listing["total"], 2, "{listing:#}");
    let listed = &listing["letters"];
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
    assert_eq!(only_exhausted["letters"].as_array().map(Vec::len), Some(1));
    assert_eq!(only_exhausted["total"], 1);

    let table = helm_service(&env, &["dead-letters", "list"]).await?;
    let table = text(&table.stdout);
    eprintln!("dead-letters list:\n{table}");
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains("d-exhausted") && table.contains("gave up after 3"),
        "{table}"
    );

    let shown = json_of(&env, &["dead-letters", "show", &id]).await?;
    assert_eq!(shown[0]["record"]["payload_truncated"], true, "{shown:#}");
    assert_eq!(shown[0]["replay"], Value::Null);
    // The record keeps only the first 64 KiB, which no parser takes: redacted as far as it
    // goes.
    assert_eq!(shown[0]["payload_redacted"], true);
    let payload = shown[0]["record"]["payload"].as_str().unwrap_or_default();
    assert!(!payload.contains("exhausted-s3cret"), "the secret shows");
    assert!(
        payload.contains(r#""values":{"db":{"password":"<redacted>"}}"#),
        "{}",
        &payload[..payload.len().min(300)]
    );
    let revealed = json_of(&env, &["dead-letters", "show", "--show-values", &id]).await?;
    assert_eq!(revealed[0]["payload_redacted"], false, "{revealed:#}");
    let payload = revealed[0]["record"]["payload"]
        .as_str()
        .unwrap_or_default();
    assert!(payload.contains("exhausted-s3cret"));

    // Neither letter was replayed yet.
    let status = json_of(&env, &["status"]).await?;
    assert_eq!(status["dead_letters"], 2, "{status:#}");
    assert_eq!(status["dead_letters_not_replayed"], 2, "{status:#}");

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
    // The replay sent the values as they were, secret included.
    assert_eq!(
        replay_events[0]["data"]["configurationChange"]["values"],
        values
    );
    assert_dead_letter_counts(&env, 2, 1, true).await?;
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
    let listed = json_of(&env, &["dead-letters", "list"]).await?["letters"].clone();
    assert_eq!(listed[0]["replays"], 1);
    assert_eq!(listed[0]["last_replay_event_id"], new_id.as_str());

    // Forced, it is sent again under another id.
    let forced = json_of(&env, &["dead-letters", "replay", "--force", &id]).await?;
    assert_eq!(forced[0]["replay"], 2, "{forced:#}");
    let forced_id = forced[0]["replay_event_id"].as_str().unwrap_or_default();
    assert_ne!(forced_id, new_id);
    let (finished, _) = env.sole_finished(forced_id, DEADLINE).await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");

    // Once the Keptn stream no longer holds the original, a record that keeps only its first
    // 64 KiB cannot be replayed, and says why.
    let source_sequence = shown[0]["record"]["stream_sequence"]
        .as_u64()
        .context("the source sequence")?;
    env.env
        .js
        .get_stream("keptn")
        .await?
        .delete_message(source_sequence)
        .await?;
    let gone = helm_service(&env, &["dead-letters", "replay", "--force", &id]).await?;
    assert!(!gone.status.success());
    let said = text(&gone.stdout);
    assert!(
        said.contains("keeps only the first")
            && said.contains(&format!("sequence {source_sequence}")),
        "{said}"
    );

    // A message that is no event is refused, naming why.
    let refused = helm_service(&env, &["dead-letters", "replay", &malformed]).await?;
    assert!(!refused.status.success());
    let said = text(&refused.stdout);
    assert!(said.contains("not a CloudEvent"), "{said}");
    // And an id that is no dead letter is an error.
    let missing = helm_service(&env, &["dead-letters", "show", "999"]).await?;
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("no dead letter 999"));
    // Replaying several: an id that fails is reported beside the others, each accounted for.
    let mixed = json_of_failing(&env, &["dead-letters", "replay", "999", &malformed]).await?;
    assert_eq!(mixed.as_array().map(Vec::len), Some(2), "{mixed:#}");
    assert!(
        mixed[0]["refused"]
            .as_str()
            .is_some_and(|r| r.contains("no dead letter 999")),
        "{mixed:#}"
    );
    assert!(
        mixed[1]["refused"]
            .as_str()
            .is_some_and(|r| r.contains("not a CloudEvent")),
        "{mixed:#}"
    );
    Ok(())
}

/// The release in `status` output whose key is `key`.
fn release_row<'a>(status: &'a Value, key: &str) -> Option<&'a Value> {
    status["releases"]
        .as_array()?
        .iter()
        .find(|row| row["release"] == key)
}

fn ids(events: &Value) -> Vec<String> {
    events
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn status_shows_the_holder_its_event_and_step_and_the_events_waiting() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let _worker = WorkerProcess::start(env.worker(PROBE_WORKER), env.dir.path(), "worker").await?;
    let idle = json_of(&env, &["status"]).await?;
    assert_eq!(idle["releases"], json!([]), "{idle:#}");
    assert_eq!(idle["consumer"]["ack_pending"], 0);
    assert_eq!(idle["dead_letters"], 0);
    assert_eq!(idle["dead_letters_not_replayed"], 0);

    let service = ("sockshop", "dev", "carts");
    let key = "sockshop-dev.sockshop-dev-carts";
    let slow = triggered(
        "deployment",
        "s-slow",
        service,
        &[("probe.steps", "2"), ("probe.step-ms", "8000")],
    );
    publish(&env.js, &slow).await?;
    // Its first step done: the second runs for 8 s.
    wait_until("the first step done", DEADLINE, POLL, || async {
        env.probe_records()
            .iter()
            .any(|r| r.what == "step-done" && r.event_id == "s-slow")
            .then_some(())
    })
    .await?;
    for id in ["w1", "w2"] {
        publish(&env.js, &triggered("deployment", id, service, &[])).await?;
    }
    let status = wait_until(
        "the release busy with s-slow, w1 and w2 waiting",
        DEADLINE,
        POLL,
        || async {
            let status = json_of(&env, &["status"]).await.ok()?;
            let row = release_row(&status, key)?;
            let delivered = row["waiting"]
                .as_array()?
                .iter()
                .all(|w| w["delivered"] == true);
            (row["in_progress"]["steps_done"] == json!(["probe-step-0"])
                && ids(&row["waiting"]) == ["w1", "w2"]
                && delivered)
                .then_some(status)
        },
    )
    .await?;
    let row = release_row(&status, key).context("the row")?;
    assert_eq!(row["in_progress"]["event_id"], "s-slow", "{status:#}");
    assert_eq!(row["holder"]["event_id"], "s-slow");
    assert_eq!(row["holder"]["parked"], false);
    assert_eq!(row["in_progress"]["started_published"], true);
    assert_eq!(status["consumer"]["ack_pending"], 3, "{status:#}");
    assert_eq!(status["consumer"]["pending"], 0);

    let table = text(&helm_service(&env, &["status"]).await?.stdout);
    eprintln!("status:\n{table}");
    assert!(table.starts_with("RELEASE"), "{table}");
    for shown in [
        key,
        "running",
        "s-slow",
        "probe-step-0",
        "2: w1, w2",
        "3 ack pending",
        "dead letters: 0 (0 not replayed)",
    ] {
        assert!(table.contains(shown), "{shown:?} not in\n{table}");
    }

    // All answered: nothing busy (the release may stay parked, which is idle).
    env.wait_replies(DEADLINE, |r| r.count("finished") == 3)
        .await?;
    let last = std::sync::Mutex::new(Value::Null);
    let settled = wait_until("nothing busy", DEADLINE, POLL, || async {
        let status = json_of(&env, &["status"]).await.ok()?;
        *last.lock().unwrap() = status.clone();
        (status["releases"] == json!([]) && status["consumer"]["ack_pending"] == 0)
            .then_some(status)
    })
    .await
    .with_context(|| format!("last status: {:#}", last.lock().unwrap()))?;
    assert_eq!(
        settled["consumer"]["ack_floor"],
        settled["consumer"]["last_delivered"]
    );
    let all = json_of(&env, &["status", "--all"]).await?;
    let row = release_row(&all, key).context("--all lists idle releases")?;
    assert_eq!(row["completed_remembered"], 3, "{all:#}");
    assert_eq!(row["in_progress"], Value::Null);
    Ok(())
}

#[tokio::test]
async fn releases_show_gives_the_record_the_inventory_and_the_helm_revisions() -> anyhow::Result<()>
{
    let (env, _worker) =
        DeployEnv::with_hello_deployed(SimConfig::default(), "direct", DEADLINE).await?;
    let kubeconfig = env.sim.kubeconfig_path().display().to_string();
    let show = [
        "releases",
        "show",
        "--project",
        "shop",
        "--stage",
        "dev",
        "--service",
        "hello",
        "--kubeconfig",
        &kubeconfig,
    ];
    let report = json_of(&env, &show).await?;
    assert_eq!(report["namespace"], NS, "{report:#}");
    assert_eq!(report["release_key"], "shop-dev.shop-dev-hello");
    assert_eq!(report["record"]["completed_remembered"], 1);
    assert_eq!(report["inventory"]["event_id"], "d1");
    assert_eq!(report["inventory"]["strategy"], "direct");
    assert_eq!(report["helm_error"], Value::Null);
    assert_eq!(report["helm"][0]["release"], "shop-dev-hello");
    assert_eq!(
        report["helm"][0]["revisions"],
        json!([{"revision": 1, "status": "deployed"}])
    );

    let table = text(&helm_service(&env, &show).await?.stdout);
    eprintln!("releases show:\n{table}");
    for shown in [
        "strategy direct",
        "shop-dev-hello: 1 deployed",
        "by event d1",
    ] {
        assert!(table.contains(shown), "{shown:?} not in\n{table}");
    }

    // A service never deployed: nothing known, not an error.
    let unknown = json_of(
        &env,
        &[
            "releases",
            "show",
            "--project",
            "shop",
            "--stage",
            "dev",
            "--service",
            "other",
            "--kubeconfig",
            &kubeconfig,
        ],
    )
    .await?;
    assert_eq!(unknown["record"], Value::Null, "{unknown:#}");
    assert_eq!(unknown["inventory"], Value::Null);
    assert_eq!(unknown["helm"][0]["revisions"], json!([]));
    // A name that cannot be a service is refused before anything is read.
    let refused = helm_service(
        &env,
        &[
            "releases",
            "show",
            "--project",
            "shop",
            "--stage",
            "dev",
            "--service",
            "Bad_Name",
        ],
    )
    .await?;
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("Bad_Name"),
        "{}",
        text(&refused.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn releases_show_finds_a_service_in_its_own_namespace() -> anyhow::Result<()> {
    let env = DeployEnv::start(SimConfig::default()).await?;
    env.push_chart(("shop", "dev", "hello"), &example_chart())?;
    let _worker = env.start_worker(env.worker_spec(), "worker").await?;
    let own = json!({"keptn": {"namespace": "web-shop"}});
    let finished = env
        .deploy(&deployment_event("d1", "hello", "direct", own), DEADLINE)
        .await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");

    let kubeconfig = env.sim.kubeconfig_path().display().to_string();
    let report = json_of(
        &env,
        &[
            "releases",
            "show",
            "--project",
            "shop",
            "--stage",
            "dev",
            "--service",
            "hello",
            "--kubeconfig",
            &kubeconfig,
        ],
    )
    .await?;
    // Where the inventory says the releases are, not the stage's namespace; the record stays
    // under the Keptn names.
    assert_eq!(report["namespace"], "web-shop", "{report:#}");
    assert_eq!(report["release_key"], "shop-dev.shop-dev-hello");
    assert_eq!(report["inventory"]["namespace"], "web-shop");
    assert_eq!(
        report["helm"][0]["revisions"],
        json!([{"revision": 1, "status": "deployed"}]),
        "{report:#}"
    );
    Ok(())
}

/// The ids of the letters of a `dead-letters list -o json`.
fn letter_ids(listing: &Value) -> Vec<u64> {
    listing["letters"]
        .as_array()
        .map(|letters| letters.iter().filter_map(|l| l["id"].as_u64()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn show_hides_helm_values_list_gives_the_newest_and_status_counts_the_unreplayed(
) -> anyhow::Result<()> {
    const SECRET: &str = "pr0be-s3cret";
    const TOKEN: &str = "t0ken-s3cret";
    let env = TestEnv::start().await?;
    let mut spec = env.worker(PROBE_WORKER);
    spec.extra_args
        .extend(["--max-deliveries".to_owned(), "1".to_owned()]);
    let _worker = WorkerProcess::start(spec, env.dir.path(), "worker").await?;

    // A deployment that fails until it is given up: dead-lettered whole, with Helm values
    // that hold secrets; then five messages that are no events.
    let mut event = triggered(
        "deployment",
        "v-secret",
        ("sockshop", "dev", "carts"),
        &[("probe.transient", "the cluster is away")],
    );
    let values =
        json!({"db": {"password": SECRET, "port": 5432}, "tokens": [TOKEN], "image": "carts:1"});
    event["data"]["configurationChange"] = json!({ "values": values });
    publish(&env.js, &event).await?;
    wait_until("the deployment dead-lettered", DEADLINE, POLL, || async {
        let listing = json_of(&env, &["dead-letters", "list"]).await.ok()?;
        (listing["total"] == 1).then_some(())
    })
    .await?;
    for n in 1..=5 {
        publish_raw(
            &env.js,
            "sh.keptn.event.deployment.triggered",
            format!("not an event {n}").into(),
            Duration::from_secs(30),
        )
        .await?;
    }
    let all = wait_until("six dead letters", DEADLINE, POLL, || async {
        let listing = json_of(&env, &["dead-letters", "list"]).await.ok()?;
        (listing["total"] == 6).then_some(listing)
    })
    .await?;
    assert_eq!(all["omitted"], 0, "{all:#}");
    let ids = letter_ids(&all);
    assert_eq!(ids.len(), 6, "{all:#}");
    let exhausted = &all["letters"][0];
    assert_eq!(
        (&exhausted["reason"], &exhausted["event_id"]),
        (&json!("exhausted"), &json!("v-secret")),
        "{all:#}"
    );
    let id = ids[0].to_string();

    // `show` hides every value under data.configurationChange.values, keeping its shape.
    let shown = json_of(&env, &["dead-letters", "show", &id]).await?;
    assert_eq!(shown[0]["payload_redacted"], true, "{shown:#}");
    let payload = shown[0]["record"]["payload"].as_str().unwrap_or_default();
    assert!(
        !payload.contains(SECRET) && !payload.contains(TOKEN),
        "{payload}"
    );
    let shown_event: Value = serde_json::from_str(payload).context("the shown payload")?;
    assert_eq!(
        shown_event["data"]["configurationChange"]["values"],
        json!({"db": {"password": "<redacted>", "port": "<redacted>"}, "tokens": ["<redacted>"], "image": "<redacted>"})
    );
    assert_eq!(shown_event["id"], "v-secret");
    assert_eq!(shown_event["data"]["service"], "carts");
    let said = text(
        &helm_service(&env, &["dead-letters", "show", &id])
            .await?
            .stdout,
    );
    eprintln!("dead-letters show:\n{said}");
    assert!(!said.contains(SECRET) && !said.contains(TOKEN), "{said}");
    assert!(
        said.contains("<redacted>") && said.contains("--show-values"),
        "{said}"
    );
    // `--show-values` prints it as it is.
    let revealed = json_of(&env, &["dead-letters", "show", "--show-values", &id]).await?;
    assert_eq!(revealed[0]["payload_redacted"], false, "{revealed:#}");
    let payload = revealed[0]["record"]["payload"]
        .as_str()
        .unwrap_or_default();
    let revealed_event: Value = serde_json::from_str(payload)?;
    assert_eq!(
        revealed_event["data"]["configurationChange"]["values"],
        values
    );
    let said = text(
        &helm_service(&env, &["dead-letters", "show", "--show-values", &id])
            .await?
            .stdout,
    );
    assert!(said.contains(SECRET), "{said}");
    let help = text(
        &helm_service(&env, &["dead-letters", "show", "--help"])
            .await?
            .stdout,
    );
    assert!(
        help.contains("--show-values") && help.contains("secrets"),
        "{help}"
    );

    // `list --limit` gives the newest, oldest first, and says how many there are.
    let newest = json_of(&env, &["dead-letters", "list", "--limit", "2"]).await?;
    assert_eq!(letter_ids(&newest), ids[4..], "{newest:#}");
    assert_eq!(
        (&newest["total"], &newest["omitted"]),
        (&json!(6), &json!(4))
    );
    let said = text(
        &helm_service(&env, &["dead-letters", "list", "--limit", "2"])
            .await?
            .stdout,
    );
    eprintln!("dead-letters list --limit 2:\n{said}");
    assert!(
        said.contains("showing the newest 2 of 6; use --limit 0 for all"),
        "{said}"
    );
    let said = text(&helm_service(&env, &["dead-letters", "list"]).await?.stdout);
    assert!(!said.contains("showing the newest"), "all listed: {said}");
    // A letter deleted between the newest ones: the gap is passed over, still two listed.
    env.js
        .get_stream("helm-service-dlq")
        .await?
        .delete_message(ids[4])
        .await?;
    let newest = json_of(&env, &["dead-letters", "list", "--limit", "2"]).await?;
    assert_eq!(letter_ids(&newest), [ids[3], ids[5]], "{newest:#}");
    assert_eq!(newest["total"], 5);
    let malformed = [ids[1], ids[2], ids[3], ids[5]];
    let newest_malformed = json_of(
        &env,
        &[
            "dead-letters",
            "list",
            "--reason",
            "malformed",
            "--limit",
            "3",
        ],
    )
    .await?;
    assert_eq!(
        letter_ids(&newest_malformed),
        malformed[malformed.len() - 3..],
        "{newest_malformed:#}"
    );
    assert_eq!(newest_malformed["total"], malformed.len());
    let everything = json_of(&env, &["dead-letters", "list", "--limit", "0"]).await?;
    assert_eq!(everything["letters"].as_array().map(Vec::len), Some(5));
    assert_eq!(everything["omitted"], 0);

    // `status` counts the letters never replayed, before and after a replay.
    assert_dead_letter_counts(&env, 5, 5, false).await?;
    let replayed = json_of(&env, &["dead-letters", "replay", &id]).await?;
    assert_eq!(replayed[0]["replayed"], true, "{replayed:#}");
    let new_id = replayed[0]["replay_event_id"]
        .as_str()
        .context("the replay's id")?
        .to_owned();
    // The replay sends the values as they were.
    let stored = test_harness::stream::stream_json(&env.js, "keptn", "").await?;
    let sent: Vec<&Value> = stored.iter().filter(|e| e["id"] == new_id).collect();
    assert_eq!(sent.len(), 1, "published once");
    assert_eq!(sent[0]["data"]["configurationChange"]["values"], values);
    // Its cause is not fixed: the replay is given up too, a new letter, not replayed.
    wait_until("the replay dead-lettered", DEADLINE, POLL, || async {
        let listing = json_of(&env, &["dead-letters", "list"]).await.ok()?;
        (listing["total"] == 6).then_some(())
    })
    .await?;
    assert_dead_letter_counts(&env, 6, 5, true).await?;
    Ok(())
}

/// `status` counts `total` dead letters, `not_replayed` of them never replayed (in its JSON,
/// and with `said` in its text too).
async fn assert_dead_letter_counts(
    env: &impl World,
    total: u64,
    not_replayed: u64,
    said: bool,
) -> anyhow::Result<()> {
    let status = json_of(env, &["status"]).await?;
    assert_eq!(
        (
            &status["dead_letters"],
            &status["dead_letters_not_replayed"]
        ),
        (&json!(total), &json!(not_replayed)),
        "{status:#}"
    );
    if said {
        let said = text(&helm_service(env, &["status"]).await?.stdout);
        let expected = format!("dead letters: {total} ({not_replayed} not replayed)");
        assert!(said.contains(&expected), "{said}");
    }
    Ok(())
}
