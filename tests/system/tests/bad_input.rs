//! Bad input of every kind: no panic, each message gets a dead letter or an errored
//! finished as appropriate, and good events keep flowing around them.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use system_tests::env::TestEnv;
use system_tests::events::{publish, publish_raw, triggered};
use system_tests::worker_process::WorkerProcess;

const PROBE_WORKER: &str = env!("CARGO_BIN_EXE_probe-worker");
const DEADLINE: Duration = Duration::from_secs(30);
const DEPLOYMENT: &str = "sh.keptn.event.deployment.triggered";
const MAX_EVENT_BYTES: usize = 64 * 1024;

fn good(id: &str) -> Value {
    triggered("deployment", id, ("sockshop", "dev", "carts"), &[])
}

/// Messages that cannot be answered: (subject, payload, expected dead-letter reason).
fn undeliverable() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut wrong_specversion = good("bad-specversion");
    wrong_specversion["specversion"] = json!("0.3");
    let mut missing_id = good("x");
    missing_id.as_object_mut().unwrap().remove("id");
    let mut no_context = good("bad-no-context");
    no_context.as_object_mut().unwrap().remove("shkeptncontext");
    let mut huge = good("bad-huge");
    huge["data"]["configurationChange"]["values"]["blob"] = json!("x".repeat(MAX_EVENT_BYTES + 1));
    let mut bad_delete = triggered(
        "service.delete",
        "bad-delete",
        ("Sock Shop", "dev", "carts"),
        &[],
    );
    bad_delete["type"] = json!("sh.keptn.event.service.delete.finished");
    let oversized = |attribute: &str| {
        let mut event = good(&format!("bad-long-{attribute}"));
        event[attribute] = json!("x".repeat(1024));
        (DEPLOYMENT, event.to_string().into_bytes(), "malformed")
    };
    vec![
        oversized("id"),
        oversized("shkeptncontext"),
        oversized("triggeredid"),
        oversized("gitcommitid"),
        (
            DEPLOYMENT,
            b"{\"specversion\": \"1.0\", \"id\": ".to_vec(),
            "malformed",
        ),
        (DEPLOYMENT, vec![0xff, 0xfe, 0x00, 0x13], "malformed"),
        (DEPLOYMENT, b"[1, 2, 3]".to_vec(), "malformed"),
        (
            DEPLOYMENT,
            wrong_specversion.to_string().into_bytes(),
            "malformed",
        ),
        (DEPLOYMENT, missing_id.to_string().into_bytes(), "malformed"),
        (
            DEPLOYMENT,
            no_context.to_string().into_bytes(),
            "unaddressable",
        ),
        (
            "sh.keptn.event.release.triggered",
            good("bad-subject").to_string().into_bytes(),
            "unaddressable",
        ),
        (DEPLOYMENT, huge.to_string().into_bytes(), "too-large"),
        (
            "sh.keptn.event.service.delete.finished",
            bad_delete.to_string().into_bytes(),
            "invalid-data",
        ),
    ]
}

/// Addressable events with invalid data: (event, words the errored message must hold).
fn answerable() -> Vec<(Value, &'static str)> {
    let mut missing_data = good("bad-missing-data");
    missing_data.as_object_mut().unwrap().remove("data");
    let bad_name = triggered(
        "deployment",
        "bad-name",
        ("sockshop", "dev", "Carts_1"),
        &[],
    );
    let mut unknown_strategy = good("bad-strategy");
    unknown_strategy["data"]["deployment"]["deploymentstrategy"] = json!("canary");
    let mut wrong_type = good("bad-type");
    wrong_type["data"]["deployment"]["deploymentURIsLocal"] = json!("http://not-a-list");
    let mut labels_not_strings = good("bad-labels");
    labels_not_strings["data"]["labels"] = json!({"a": 1});
    let mut no_stage = good("bad-no-stage");
    no_stage["data"].as_object_mut().unwrap().remove("stage");
    let mut no_strategy_block = good("bad-no-deployment");
    no_strategy_block["data"]
        .as_object_mut()
        .unwrap()
        .remove("deployment");
    let mut long_namespace = good("bad-long-namespace");
    long_namespace["data"]["project"] = json!("p".repeat(40));
    long_namespace["data"]["stage"] = json!("s".repeat(40));
    vec![
        (missing_data, "data"),
        (bad_name, "service name \"Carts_1\" is invalid"),
        (unknown_strategy, "unknown deployment strategy \"canary\""),
        (wrong_type, "deploymentURIsLocal"),
        (labels_not_strings, "labels"),
        (no_stage, "stage"),
        (no_strategy_block, "deploymentstrategy"),
        (long_namespace, "63"),
    ]
}

/// Events that are fine but for their trace context, which would break NATS headers: the
/// broken attributes are dropped, the task runs. (traceparent, tracestate)
fn broken_trace_context() -> Vec<(Value, &'static str)> {
    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let cases = [
        ("broken-parent-lf", format!("{PARENT}\n"), "congo=1"),
        (
            "broken-parent-crlf",
            format!("{PARENT}\r\nX-Injected: 1"),
            "congo=1",
        ),
        (
            "broken-state-lf",
            PARENT.to_owned(),
            "congo=1\nX-Injected: 1",
        ),
        ("broken-parent-garbage", "not a trace".to_owned(), "congo=1"),
    ];
    cases
        .into_iter()
        .map(|(id, parent, state)| {
            let mut event = good(id);
            event["traceparent"] = json!(parent);
            event["tracestate"] = json!(state);
            (event, id)
        })
        .collect()
}

#[tokio::test]
async fn every_kind_of_bad_input_is_dead_lettered_or_answered_and_good_events_flow(
) -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let mut spec = env.worker(PROBE_WORKER);
    spec.extra_args = vec!["--max-event-bytes".into(), MAX_EVENT_BYTES.to_string()];
    let mut worker = WorkerProcess::start(spec, env.dir.path(), "worker").await?;

    let undeliverable = undeliverable();
    let answerable = answerable();
    let mut good_ids = Vec::new();
    for (index, (subject, payload, _)) in undeliverable.iter().enumerate() {
        publish_raw(&env.js, subject, Bytes::from(payload.clone()), DEADLINE).await?;
        let id = format!("good-{index}");
        publish(&env.js, &good(&id)).await?;
        good_ids.push(id);
    }
    for (event, _) in &answerable {
        publish(&env.js, event).await?;
    }
    let broken_trace = broken_trace_context();
    for (event, id) in &broken_trace {
        publish(&env.js, event).await?;
        good_ids.push((*id).to_owned());
    }

    let answered_ids: Vec<String> = answerable
        .iter()
        .map(|(e, _)| e["id"].as_str().unwrap().to_owned())
        .collect();
    let replies = env
        .wait_replies(DEADLINE, |r| {
            good_ids
                .iter()
                .chain(&answered_ids)
                .all(|id| !r.of(id, "finished").is_empty())
        })
        .await?;
    for id in &good_ids {
        let finished = replies.of(id, "finished");
        assert_eq!(finished.len(), 1);
        assert_eq!(
            finished[0]["data"]["status"], "succeeded",
            "{id}: {:#}",
            finished[0]
        );
    }
    for (_, id) in &broken_trace {
        for reply in replies
            .of(id, "started")
            .iter()
            .chain(&replies.of(id, "finished"))
        {
            let echoed = reply.get("traceparent").or_else(|| reply.get("tracestate"));
            assert!(
                id.starts_with("broken-state") || echoed.is_none(),
                "{id}: a broken trace context must not be echoed: {reply:#}"
            );
            assert!(reply.get("tracestate").is_none(), "{id}: {reply:#}");
        }
    }
    for (event, words) in &answerable {
        let id = event["id"].as_str().unwrap();
        let finished = replies.of(id, "finished");
        assert_eq!(finished.len(), 1, "{id}");
        assert_eq!(finished[0]["data"]["status"], "errored", "{id}");
        assert_eq!(finished[0]["data"]["result"], "fail", "{id}");
        let message = finished[0]["data"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(words),
            "{id}: message {message:?} should mention {words:?}"
        );
        assert!(
            replies.of(id, "started").is_empty(),
            "{id}: invalid events get no started"
        );
    }

    let letters = test_harness::wait::wait_until(
        "all dead letters",
        DEADLINE,
        Duration::from_millis(50),
        || async {
            let letters = env.dead_letters().await.ok()?;
            (letters.len() >= undeliverable.len()).then_some(letters)
        },
    )
    .await?;
    assert_eq!(letters.len(), undeliverable.len(), "{letters:#?}");
    let mut expected: Vec<&str> = undeliverable.iter().map(|(_, _, reason)| *reason).collect();
    let mut actual: Vec<&str> = letters
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    expected.sort();
    actual.sort();
    assert_eq!(actual, expected);
    for letter in &letters {
        assert!(!letter["detail"].as_str().unwrap().is_empty(), "{letter:#}");
        assert!(letter["stream_sequence"].as_u64().unwrap() > 0);
    }
    let huge = letters.iter().find(|l| l["reason"] == "too-large").unwrap();
    assert_eq!(huge["payload_truncated"], true);
    assert!(huge["detail"]
        .as_str()
        .unwrap()
        .contains("--max-event-bytes"));

    assert!(
        worker.process.is_running(),
        "the worker must survive bad input"
    );
    assert!(
        !worker.process.log().contains("panicked"),
        "{}",
        worker.process.log_tail(50)
    );
    Ok(())
}
