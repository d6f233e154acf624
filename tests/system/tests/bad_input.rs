//! Hostile input of every kind, one message at a time against a real nats-server: for each,
//! the worker does not panic, the message gets exactly the expected dead letter (reason and
//! words of its detail) or errored `finished` (words of its message, no `started`), and a good
//! event for the same service published right after it finishes within 10 s of its publish.
//!
//! Decisions the cases pin down (docs/architecture.md §3.2):
//! - A control character (line break, NUL, ...) in any CloudEvents attribute makes the message
//!   malformed: CloudEvents strings hold none, and the attributes are copied into replies, logs
//!   and (the `traceparent`) NATS headers. A trace context that is merely not of the W3C
//!   grammar is dropped and the task runs, as the W3C specification asks.
//! - A member named twice at the top level makes the message malformed (which `id` would be
//!   answered?); named twice inside `data`, the event is answered errored naming the member.
//!   Never "last one wins" silently.
//! - Nesting deeper than 128 arrays/objects, numbers beyond f64 and invalid UTF-8 are not JSON
//!   we read: malformed.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use system_tests::env::TestEnv;
use system_tests::events::{publish_raw, triggered};
use system_tests::worker_process::WorkerProcess;
use tokio::time::Instant;

const PROBE_WORKER: &str = env!("CARGO_BIN_EXE_probe-worker");
const PUBLISH_PATIENCE: Duration = Duration::from_secs(30);
/// How long one hostile message and the good event after it may take in all.
const CASE_DEADLINE: Duration = Duration::from_secs(20);
/// How long the good event after a hostile one may take from its publish to its finished.
const GOOD_EVENT_BOUND: Duration = Duration::from_secs(10);
const DEPLOYMENT: &str = "sh.keptn.event.deployment.triggered";
const MAX_EVENT_BYTES: usize = 256 * 1024;
const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
/// `intake::MAX_MESSAGE_BYTES`: the longest reason or detail the worker writes.
const MAX_MESSAGE_BYTES: usize = 1024;

/// What the worker must do with one hostile message.
#[derive(Debug, Clone)]
enum Expect {
    /// A dead letter with this reason, its detail holding these words.
    DeadLetter(&'static str, &'static str),
    /// An errored/fail `finished` answering the event `id`, its message holding these words.
    Errored(String, &'static str),
    /// Valid but for a trace context outside the W3C grammar: it runs (`succeeded`) and its
    /// replies carry the trace context it keeps: (traceparent, tracestate) expected.
    RunsWithTrace(String, Option<&'static str>, Option<&'static str>),
}

struct Case {
    kind: &'static str,
    subject: &'static str,
    payload: Vec<u8>,
    expect: Expect,
}

fn good(id: &str) -> Value {
    triggered("deployment", id, ("sockshop", "dev", "carts"), &[])
}

fn text(value: &Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

/// `good(id)` with `attribute` set to `value` (or removed when `value` is `None`).
fn with_attribute(id: &str, attribute: &str, value: Option<Value>) -> Value {
    let mut event = good(id);
    match value {
        Some(value) => event[attribute] = value,
        None => {
            event.as_object_mut().unwrap().remove(attribute);
        }
    }
    event
}

/// `good(id)` with the member at `path` inside `data` set to `value` (removed for `None`).
fn with_data(id: &str, path: &[&str], value: Option<Value>) -> Value {
    let mut event = good(id);
    let (last, parents) = path.split_last().unwrap();
    let mut at = &mut event["data"];
    for name in parents {
        at = &mut at[*name];
    }
    match value {
        Some(value) => at[*last] = value,
        None => {
            at.as_object_mut().unwrap().remove(*last);
        }
    }
    event
}

/// The JSON text of `event` with `member` spliced in right after the opening brace of the
/// object that `anchor` opens (`""`: the top level), so it is named twice.
fn named_twice(event: &Value, anchor: &str, member: &str) -> Vec<u8> {
    let mut text = event.to_string();
    let at = if anchor.is_empty() {
        1
    } else {
        text.find(anchor).expect("anchor present") + anchor.len()
    };
    text.insert_str(at, &format!("{member},"));
    text.into_bytes()
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
}

fn dead(kind: &'static str, payload: Vec<u8>, reason: &'static str, words: &'static str) -> Case {
    Case {
        kind,
        subject: DEPLOYMENT,
        payload,
        expect: Expect::DeadLetter(reason, words),
    }
}

fn errored(kind: &'static str, event: Value, words: &'static str) -> Case {
    let id = event["id"].as_str().unwrap().to_owned();
    errored_text(kind, &id, text(&event), words)
}

fn errored_text(kind: &'static str, id: &str, payload: Vec<u8>, words: &'static str) -> Case {
    Case {
        kind,
        subject: DEPLOYMENT,
        payload,
        expect: Expect::Errored(id.to_owned(), words),
    }
}

/// The hostile messages that get no answer: a dead letter each.
fn dead_letter_cases() -> Vec<Case> {
    let control = "contains the control character";
    let line_break = |attribute: &'static str, value: String| {
        let event = with_attribute(
            &format!("bad-lf-{attribute}"),
            attribute,
            Some(json!(value)),
        );
        dead(attribute, text(&event), "malformed", control)
    };
    let oversized = |attribute: &'static str| {
        let event = with_attribute(
            &format!("bad-long-{attribute}"),
            attribute,
            Some(json!("x".repeat(1024))),
        );
        (attribute, text(&event))
    };
    let mut invalid_utf8 = text(&good("bad-utf8"));
    let at = invalid_utf8
        .windows(8)
        .position(|w| w == b"sockshop")
        .unwrap();
    invalid_utf8[at + 4] = 0xff;
    let mut deep_data = good("bad-deep-data");
    deep_data["data"] = json!("PLACEHOLDER");
    let deep_data = deep_data
        .to_string()
        .replace("\"PLACEHOLDER\"", &nested(5000))
        .into_bytes();
    let huge_data_number =
        text(&good("bad-huge-number-data")).pipe_replace(b"\"example/carts:0.1\"", b"1e999");
    let mut bad_delete = triggered(
        "service.delete",
        "bad-delete",
        ("Sock Shop", "dev", "carts"),
        &[],
    );
    bad_delete["type"] = json!("sh.keptn.event.service.delete.finished");
    let (long_context, long_context_text) = oversized("shkeptncontext");
    let (long_triggered, long_triggered_text) = oversized("triggeredid");
    let (long_commit, long_commit_text) = oversized("gitcommitid");

    let cases = vec![
        dead("empty body", Vec::new(), "malformed", "not JSON"),
        dead(
            "truncated JSON",
            b"{\"specversion\": \"1.0\", \"id\": ".to_vec(),
            "malformed",
            "not JSON",
        ),
        dead(
            "binary garbage",
            vec![0xff, 0xfe, 0x00, 0x13],
            "malformed",
            "not JSON",
        ),
        dead(
            "invalid UTF-8 in a string",
            invalid_utf8,
            "malformed",
            "not JSON",
        ),
        dead(
            "lone surrogate escape",
            text(&good("bad-surrogate")).pipe_replace(b"\"bad-surrogate\"", b"\"\\ud800\""),
            "malformed",
            "not JSON",
        ),
        dead(
            "array at the top",
            b"[1, 2, 3]".to_vec(),
            "malformed",
            "not an object",
        ),
        dead(
            "null at the top",
            b"null".to_vec(),
            "malformed",
            "not an object",
        ),
        dead(
            "5000-deep nesting at the top",
            format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
            "malformed",
            "recursion limit",
        ),
        dead(
            "5000-deep nesting in data",
            deep_data,
            "malformed",
            "recursion limit",
        ),
        dead(
            "specversion 0.3",
            text(&with_attribute(
                "bad-specversion",
                "specversion",
                Some(json!("0.3")),
            )),
            "malformed",
            "specversion",
        ),
        dead(
            "no id",
            text(&with_attribute("x", "id", None)),
            "malformed",
            "\"id\" is missing",
        ),
        dead(
            "id a number",
            text(&with_attribute("x", "id", Some(json!(7)))),
            "malformed",
            "attribute \"id\" must be a string, found a number",
        ),
        dead(
            "id a huge number",
            text(&good("bad-huge-id")).pipe_replace(b"\"bad-huge-id\"", b"1e400"),
            "malformed",
            "number out of range",
        ),
        dead(
            "huge number in data",
            huge_data_number,
            "malformed",
            "number out of range",
        ),
        dead(
            "id named twice",
            named_twice(&good("bad-twice-id"), "", "\"id\": \"other-id\""),
            "malformed",
            "member \"id\" appears more than once",
        ),
        dead(
            "type named twice",
            named_twice(
                &good("bad-twice-type"),
                "",
                "\"type\": \"sh.keptn.event.release.triggered\"",
            ),
            "malformed",
            "member \"type\" appears more than once",
        ),
        dead(
            "200 KB id (under --max-event-bytes)",
            text(&with_attribute(
                "x",
                "id",
                Some(json!("i".repeat(200 * 1024))),
            )),
            "malformed",
            "attribute id is 204800 bytes long",
        ),
        dead(
            "300 KB id (over --max-event-bytes)",
            text(&with_attribute(
                "x",
                "id",
                Some(json!("i".repeat(300 * 1024))),
            )),
            "too-large",
            "--max-event-bytes",
        ),
        dead(
            long_context,
            long_context_text,
            "malformed",
            "attribute shkeptncontext is 1024 bytes long",
        ),
        dead(
            long_triggered,
            long_triggered_text,
            "malformed",
            "attribute triggeredid is 1024 bytes long",
        ),
        dead(
            long_commit,
            long_commit_text,
            "malformed",
            "attribute gitcommitid is 1024 bytes long",
        ),
        line_break("id", "bad-lf-id\n".to_owned()),
        line_break("shkeptncontext", "a3e5f16d\r\nX-Injected: 1".to_owned()),
        line_break("triggeredid", "t-1\n".to_owned()),
        line_break("gitcommitid", "521747298a\n".to_owned()),
        line_break("traceparent", format!("{PARENT}\r\nX-Injected: 1")),
        line_break("tracestate", "congo=1\r\nX-Injected: 1".to_owned()),
        line_break("source", "shipyard-controller\n".to_owned()),
        line_break("type", format!("{DEPLOYMENT}\n")),
        line_break("datacontenttype", "application/json\n".to_owned()),
        line_break("subject", "carts\r\n".to_owned()),
        line_break("shkeptnspecversion", "0.2.4\n".to_owned()),
        dead(
            "NUL in the id",
            text(&with_attribute("x", "id", Some(json!("bad\u{0}id")))),
            "malformed",
            "U+0000",
        ),
        dead(
            "an object as an extension",
            text(&with_attribute("x", "labels", Some(json!({"a": "b"})))),
            "malformed",
            "extension attribute \"labels\" is an object",
        ),
        dead(
            "data and data_base64",
            text(&with_attribute("x", "data_base64", Some(json!("e30=")))),
            "malformed",
            "both \"data\" and \"data_base64\"",
        ),
        dead(
            "data_base64 not base64",
            text(&with_attribute("x", "data_base64", Some(json!("%%%")))).pipe_remove_data(),
            "malformed",
            "not base64",
        ),
        dead(
            "time not a timestamp",
            text(&with_attribute("x", "time", Some(json!("yesterday")))),
            "malformed",
            "RFC 3339",
        ),
        dead(
            "no shkeptncontext",
            text(&with_attribute("bad-no-context", "shkeptncontext", None)),
            "unaddressable",
            "shkeptncontext",
        ),
        Case {
            kind: "type not the subject",
            subject: "sh.keptn.event.release.triggered",
            payload: text(&good("bad-subject")),
            expect: Expect::DeadLetter("unaddressable", "does not match the subject"),
        },
        Case {
            kind: "invalid service.delete.finished",
            subject: "sh.keptn.event.service.delete.finished",
            payload: text(&bad_delete),
            expect: Expect::DeadLetter("invalid-data", "project name"),
        },
    ];
    // Every attribute that is copied into replies or headers got a line break above.
    for attribute in [
        "id",
        "shkeptncontext",
        "triggeredid",
        "gitcommitid",
        "traceparent",
        "tracestate",
        "source",
        "type",
    ] {
        assert!(cases.iter().any(|c| c.kind == attribute), "{attribute}");
    }
    cases
}

/// Addressable events with invalid data: an errored `finished` each.
fn errored_cases() -> Vec<Case> {
    let mut cases = vec![
        errored(
            "no data",
            with_attribute("bad-no-data", "data", None),
            "event has no data",
        ),
        errored(
            "data null",
            with_attribute("bad-data-null", "data", Some(Value::Null)),
            "event has no data",
        ),
        errored(
            "data an array",
            with_attribute("bad-data-array", "data", Some(json!([1, 2]))),
            "data: invalid type: sequence",
        ),
        errored(
            "data a plain string",
            with_attribute("bad-data-string", "data", Some(json!("hello"))),
            "data: invalid type: string",
        ),
        errored(
            "deployment null",
            with_data("bad-deployment-null", &["deployment"], Some(Value::Null)),
            "data.deployment is missing",
        ),
        errored(
            "deployment an array",
            with_data("bad-deployment-array", &["deployment"], Some(json!([]))),
            "data.deployment: invalid type: sequence",
        ),
        errored(
            "values an array",
            with_data(
                "bad-values-array",
                &["configurationChange", "values"],
                Some(json!([1])),
            ),
            "data.configurationChange.values: invalid sequence, expected a map",
        ),
        errored(
            "values a string holding a secret",
            with_data(
                "bad-values-secret",
                &["configurationChange", "values"],
                Some(json!("password: hunter2")),
            ),
            // Not quoted: the wording names only the type.
            "data.configurationChange.values: invalid string, expected a map (the value is not shown",
        ),
        errored(
            "project a number",
            with_data("bad-project-number", &["project"], Some(json!(5))),
            "data.project: invalid type: integer `5`, expected a string",
        ),
        errored(
            "project a huge number",
            with_data(
                "bad-project-huge",
                &["project"],
                Some(json!(123456789012345678901234567890.0_f64)),
            ),
            "data.project: invalid type: floating point",
        ),
        errored(
            "deploymentstrategy a number",
            with_data(
                "bad-strategy-number",
                &["deployment", "deploymentstrategy"],
                Some(json!(1)),
            ),
            "data.deployment.deploymentstrategy: invalid type: integer `1`",
        ),
        errored_text(
            "project named twice in data",
            "bad-twice-project",
            named_twice(
                &good("bad-twice-project"),
                "\"data\":{",
                "\"project\": \"other\"",
            ),
            "data.project: member \"project\" appears more than once",
        ),
        errored_text(
            "deploymentstrategy named twice",
            "bad-twice-strategy",
            named_twice(
                &good("bad-twice-strategy"),
                "\"deployment\":{",
                "\"deploymentstrategy\": \"user_managed\"",
            ),
            "data.deployment.deploymentstrategy: member",
        ),
        errored(
            "data a string of JSON naming a member twice",
            with_attribute(
                "bad-twice-embedded",
                "data",
                Some(json!(
                    r#"{"project": "sockshop", "project": "x", "stage": "dev", "service": "carts"}"#
                )),
            ),
            "data.project: member",
        ),
        errored(
            "NUL in the project",
            with_data(
                "bad-nul-project",
                &["project"],
                Some(json!("sock\u{0}shop")),
            ),
            "project name \"sock\\0shop\" is invalid",
        ),
        errored(
            "line break in the service",
            with_data("bad-lf-service", &["service"], Some(json!("carts\n"))),
            "service name \"carts\\n\" is invalid",
        ),
        errored(
            "invalid service name",
            with_data("bad-name", &["service"], Some(json!("Carts_1"))),
            "service name \"Carts_1\" is invalid",
        ),
        errored(
            "100 KB project name",
            with_data(
                "bad-long-project",
                &["project"],
                Some(json!("p".repeat(100 * 1024))),
            ),
            "at most 63",
        ),
        errored(
            "200 KB string where a list belongs",
            with_data(
                "bad-long-uris",
                &["deployment", "deploymentURIsLocal"],
                Some(json!("u".repeat(200 * 1024))),
            ),
            "expected a sequence",
        ),
        errored(
            "unknown strategy",
            with_data(
                "bad-strategy",
                &["deployment", "deploymentstrategy"],
                Some(json!("canary")),
            ),
            "unknown deployment strategy \"canary\"",
        ),
        errored(
            "labels not strings",
            with_data("bad-labels", &["labels"], Some(json!({"a": 1}))),
            "data.labels.a",
        ),
        errored(
            "unknown status",
            with_data("bad-status", &["status"], Some(json!("done"))),
            "invalid status \"done\"",
        ),
        errored(
            "no stage",
            with_data("bad-no-stage", &["stage"], None),
            "stage name is missing",
        ),
        errored(
            "no deployment block",
            with_data("bad-no-deployment", &["deployment"], None),
            "data.deployment is missing",
        ),
    ];
    let mut long_namespace = good("bad-long-namespace");
    long_namespace["data"]["project"] = json!("p".repeat(40));
    long_namespace["data"]["stage"] = json!("s".repeat(40));
    cases.push(errored("namespace too long", long_namespace, "63"));
    cases
}

/// Valid events whose trace context is outside the W3C grammar (without control
/// characters): the bad part is dropped, the task runs.
fn trace_cases() -> Vec<Case> {
    let runs = |kind: &'static str,
                id: &str,
                parent: &str,
                state: &str,
                kept: (Option<&'static str>, Option<&'static str>)| {
        let mut event = good(id);
        event["traceparent"] = json!(parent);
        event["tracestate"] = json!(state);
        Case {
            kind,
            subject: DEPLOYMENT,
            payload: text(&event),
            expect: Expect::RunsWithTrace(id.to_owned(), kept.0, kept.1),
        }
    };
    vec![
        runs(
            "traceparent not a trace",
            "trace-garbage",
            "not a trace",
            "congo=1",
            (None, None),
        ),
        runs(
            "traceparent in upper case",
            "trace-upper",
            &PARENT.to_uppercase(),
            "congo=1",
            (None, None),
        ),
        runs(
            "tracestate of a bad member",
            "trace-bad-state",
            PARENT,
            "congo=a=b",
            (Some(PARENT), None),
        ),
    ]
}

/// Byte-level edits for building payloads.
trait Splice {
    fn pipe_replace(self, from: &[u8], to: &[u8]) -> Vec<u8>;
    fn pipe_remove_data(self) -> Vec<u8>;
}

impl Splice for Vec<u8> {
    fn pipe_replace(self, from: &[u8], to: &[u8]) -> Vec<u8> {
        let at = self
            .windows(from.len())
            .position(|w| w == from)
            .expect("text to replace is present");
        let mut out = self[..at].to_vec();
        out.extend_from_slice(to);
        out.extend_from_slice(&self[at + from.len()..]);
        out
    }

    /// Drops the `data` member, so `data_base64` is alone.
    fn pipe_remove_data(self) -> Vec<u8> {
        let mut value: Value = serde_json::from_slice(&self).unwrap();
        value.as_object_mut().unwrap().remove("data");
        text(&value)
    }
}

/// What the worker has published so far: replies by the id they answer, dead letters by
/// the stream sequence of their message.
#[derive(Default)]
struct Seen {
    finished: HashMap<String, Vec<(Instant, Value)>>,
    started: HashMap<String, Vec<Value>>,
    letters: HashMap<u64, Value>,
}

impl Seen {
    fn take(&mut self, at: Instant, subject: &str, payload: &[u8]) {
        let Ok(body) = serde_json::from_slice::<Value>(payload) else {
            return;
        };
        if subject.starts_with("helm-service.dlq.") {
            if let Some(sequence) = body["stream_sequence"].as_u64() {
                self.letters.insert(sequence, body);
            }
            return;
        }
        if body["source"] != "helm-service" {
            return;
        }
        test_harness::spec_schemas::assert_conformant(&body);
        let Some(answered) = body["triggeredid"].as_str().map(str::to_owned) else {
            return;
        };
        if subject.ends_with(".finished") {
            self.finished.entry(answered).or_default().push((at, body));
        } else if subject.ends_with(".started") {
            self.started.entry(answered).or_default().push(body);
        }
    }
}

#[tokio::test]
async fn every_kind_of_hostile_input_is_dead_lettered_or_answered_and_good_events_flow(
) -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let mut spec = env.worker(PROBE_WORKER);
    spec.extra_args = vec![
        "--max-event-bytes".into(),
        MAX_EVENT_BYTES.to_string(),
        // Small stream and bucket limits: JetStream reserves them against free disk, and this
        // test should not depend on the machine having the default 15 GiB to spare.
        "--keptn-stream-max-bytes".into(),
        "256MiB".into(),
        "--chart-bucket-max-bytes".into(),
        "64MiB".into(),
    ];
    let mut worker = WorkerProcess::start(spec, env.dir.path(), "worker").await?;

    // Everything the worker publishes, as it is published, stamped on arrival.
    let client = env.nats.connect().await?;
    let replies = client.subscribe("sh.keptn.event.>").await?;
    let letters = client.subscribe("helm-service.dlq.>").await?;
    client.flush().await?;
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
    let collector = tokio::spawn(async move {
        let mut both = futures::stream::select(replies, letters);
        while let Some(message) = both.next().await {
            let arrived = (Instant::now(), message.subject.to_string(), message.payload);
            if sender.send(arrived).is_err() {
                break;
            }
        }
    });
    let mut seen = Seen::default();

    let dead_letter_cases = dead_letter_cases();
    let errored_cases = errored_cases();
    let trace_cases = trace_cases();
    let cases: Vec<&Case> = dead_letter_cases
        .iter()
        .chain(&errored_cases)
        .chain(&trace_cases)
        .collect();
    let started_at = Instant::now();
    let mut slowest = Duration::ZERO;
    for (index, case) in cases.iter().enumerate() {
        let sequence = publish_raw(
            &env.js,
            case.subject,
            Bytes::from(case.payload.clone()),
            PUBLISH_PATIENCE,
        )
        .await?;
        let good_id = format!("good-after-{index}");
        let published = Instant::now();
        publish_raw(
            &env.js,
            DEPLOYMENT,
            Bytes::from(text(&good(&good_id))),
            PUBLISH_PATIENCE,
        )
        .await?;

        let hostile_id = match &case.expect {
            Expect::DeadLetter(..) => None,
            Expect::Errored(id, _) | Expect::RunsWithTrace(id, ..) => Some(id.clone()),
        };
        let deadline = published + CASE_DEADLINE;
        loop {
            let good_done = seen.finished.contains_key(&good_id);
            let hostile_done = match &hostile_id {
                Some(id) => seen.finished.contains_key(id),
                None => seen.letters.contains_key(&sequence),
            };
            if good_done && hostile_done {
                break;
            }
            match tokio::time::timeout_at(deadline, received.recv()).await {
                Ok(Some((at, subject, payload))) => seen.take(at, &subject, &payload),
                Ok(None) => anyhow::bail!("the subscriptions ended"),
                Err(_) => anyhow::bail!(
                    "case {index} ({}): after {CASE_DEADLINE:?} the good event finished: \
                     {good_done}, the hostile one was settled: {hostile_done}\n{}",
                    case.kind,
                    worker.process.log_tail(30)
                ),
            }
        }

        let (finished_at, finished) = &seen.finished[&good_id][0];
        let took = finished_at.duration_since(published);
        slowest = slowest.max(took);
        assert!(
            took <= GOOD_EVENT_BOUND,
            "case {index} ({}): the good event after it took {took:?}",
            case.kind
        );
        assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
        check_outcome(index, case, sequence, &seen);
        assert!(
            worker.process.is_running() && !worker.process.log().contains("panicked"),
            "case {index} ({}): the worker must neither panic nor die:\n{}",
            case.kind,
            worker.process.log_tail(40)
        );
    }
    eprintln!(
        "{} hostile kinds ({} dead letters, {} errored answers, {} tolerated trace contexts) in \
         {:?}; slowest good event after one: {slowest:?}",
        cases.len(),
        dead_letter_cases.len(),
        errored_cases.len(),
        trace_cases.len(),
        started_at.elapsed()
    );
    assert!(cases.len() >= 20);

    // Nothing else reached the dead-letter stream, and no answer went out twice.
    let stored = env.dead_letters().await?;
    assert_eq!(stored.len(), dead_letter_cases.len(), "{stored:#?}");
    for (id, finished) in &seen.finished {
        assert_eq!(finished.len(), 1, "{id} answered twice");
    }
    assert_eq!(
        worker
            .metric("helm_service_task_panics_total")
            .await
            .unwrap_or(0.0),
        0.0
    );
    collector.abort();
    Ok(())
}

/// The hostile message of `case` (stream sequence `sequence`) got what it should.
fn check_outcome(index: usize, case: &Case, sequence: u64, seen: &Seen) {
    let name = format!("case {index} ({})", case.kind);
    match &case.expect {
        Expect::DeadLetter(reason, words) => {
            let letter = &seen.letters[&sequence];
            assert_eq!(letter["reason"], *reason, "{name}: {letter:#}");
            let detail = letter["detail"].as_str().unwrap();
            assert!(
                detail.contains(words),
                "{name}: detail {detail:?} should mention {words:?}"
            );
            assert_clean(&name, detail);
            assert_eq!(letter["subject"], case.subject, "{name}");
            assert_eq!(
                letter["payload_bytes"].as_u64(),
                Some(case.payload.len() as u64),
                "{name}"
            );
        }
        Expect::Errored(id, words) => {
            let finished = &seen.finished[id];
            assert_eq!(finished.len(), 1, "{name}");
            let reply = &finished[0].1;
            assert_eq!(reply["data"]["status"], "errored", "{name}: {reply:#}");
            assert_eq!(reply["data"]["result"], "fail", "{name}");
            let message = reply["data"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains(words),
                "{name}: message {message:?} should mention {words:?}"
            );
            assert_clean(&name, message);
            assert!(
                !seen.started.contains_key(id),
                "{name}: invalid events get no started"
            );
        }
        Expect::RunsWithTrace(id, parent, state) => {
            let finished = &seen.finished[id];
            let reply = &finished[0].1;
            assert_eq!(reply["data"]["status"], "succeeded", "{name}: {reply:#}");
            for reply in seen.started[id].iter().chain([reply]) {
                assert_eq!(reply["traceparent"].as_str(), *parent, "{name}: {reply:#}");
                assert_eq!(reply["tracestate"].as_str(), *state, "{name}: {reply:#}");
            }
        }
    }
}

/// A message shown to people: bounded, one line.
fn assert_clean(name: &str, message: &str) {
    assert!(
        message.len() <= MAX_MESSAGE_BYTES,
        "{name}: {} bytes",
        message.len()
    );
    assert!(
        !message.chars().any(char::is_control),
        "{name}: control character in {message:?}"
    );
}
