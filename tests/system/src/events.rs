//! Building, publishing and reading back Keptn events.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use serde_json::{json, Value};

/// A triggered event of `task` for `project/stage/service`, with `labels`.
pub fn triggered(
    task: &str,
    id: &str,
    release: (&str, &str, &str),
    labels: &[(&str, &str)],
) -> Value {
    let (project, stage, service) = release;
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let mut data = json!({
        "project": project,
        "stage": stage,
        "service": service,
        "labels": labels,
    });
    match task {
        "deployment" => {
            data["configurationChange"] = json!({"values": {"image": "example/carts:0.1"}});
            data["deployment"] = json!({"deploymentstrategy": "direct", "deploymentURIsLocal": []});
        }
        "release" => {
            data["result"] = json!("pass");
            data["deployment"] = json!({
                "deploymentstrategy": "blue_green_service",
                "deploymentURIsLocal": [],
                "deploymentNames": ["canary"],
                "gitCommit": "abc"
            });
        }
        "action" => {
            data["action"] = json!({"name": "scale", "action": "scaling", "value": "+1"});
            data["problem"] = json!({"problemTitle": "cpu", "rootCause": "load"});
        }
        _ => {}
    }
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "shipyard-controller",
        "type": format!("sh.keptn.event.{task}.triggered"),
        "datacontenttype": "application/json",
        "time": "2026-11-24T10:00:00Z",
        "shkeptncontext": "a3e5f16d-8888-4720-82c7-6995062905c1",
        "data": data,
    })
}

/// Publishes raw bytes on `subject` and waits for the stream's ack, retrying while
/// the server is unavailable (tests restart it) for up to `patience`.
pub async fn publish_raw(
    js: &jetstream::Context,
    subject: &str,
    payload: Bytes,
    patience: Duration,
) -> anyhow::Result<u64> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let attempt = async {
            let ack = js.publish(subject.to_owned(), payload.clone()).await?;
            Ok::<_, anyhow::Error>(ack.await?.sequence)
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(sequence)) => return Ok(sequence),
            Ok(Err(err)) if tokio::time::Instant::now() < deadline => {
                eprintln!("publish to {subject} failed ({err}), retrying");
            }
            Err(_) if tokio::time::Instant::now() < deadline => {
                eprintln!("publish to {subject} timed out, retrying");
            }
            Ok(Err(err)) => return Err(err.context(format!("publishing to {subject}"))),
            Err(_) => anyhow::bail!("publishing to {subject} timed out"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes an event on the subject of its own type.
pub async fn publish(js: &jetstream::Context, event: &Value) -> anyhow::Result<u64> {
    let subject = event["type"]
        .as_str()
        .expect("events have a type")
        .to_owned();
    publish_raw(
        js,
        &subject,
        Bytes::from(event.to_string()),
        Duration::from_secs(30),
    )
    .await
}

/// Reads the Keptn stream of `js` until `until` holds for the replies so far; returns them and
/// every message body read. The replies are built up one message at a time: rebuilding them
/// from every body after each new message made a wait cost the square of the stream's length.
pub async fn collect_replies(
    js: &async_nats::jetstream::Context,
    deadline: Duration,
    mut until: impl FnMut(&Replies) -> bool,
) -> anyhow::Result<(Replies, Vec<Value>)> {
    let mut replies = Replies::default();
    let bodies = test_harness::stream::collect_stream_json(js, "keptn", "", deadline, |bodies| {
        if let Some(newest) = bodies.last() {
            replies.push(newest.clone());
        }
        until(&replies)
    })
    .await?;
    Ok((replies, bodies))
}

/// Replies published by helm-service, indexed for assertions. Every reply collected is
/// checked against the Keptn spec's JSON schemas first
/// ([`test_harness::spec_schemas::assert_conformant`]), so every system test that observes a
/// reply also fails on a non-conformant one.
#[derive(Debug, Default, Clone)]
pub struct Replies {
    pub events: Vec<Value>,
}

impl Replies {
    pub fn from_stream_bodies(bodies: Vec<Value>) -> Self {
        let mut replies = Replies::default();
        for body in bodies {
            replies.push(body);
        }
        replies
    }

    /// Adds one message of the Keptn stream: kept (and checked against the spec) when it is
    /// one of helm-service's replies.
    pub fn push(&mut self, body: Value) {
        let is_reply = body["source"] == "helm-service"
            && body["type"]
                .as_str()
                .is_some_and(|t| !t.ends_with(".triggered"));
        if is_reply {
            test_harness::spec_schemas::assert_conformant(&body);
            self.events.push(body);
        }
    }

    /// Replies to `triggered_id` whose type ends with `.<phase>`.
    pub fn of(&self, triggered_id: &str, phase: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["triggeredid"] == triggered_id)
            .filter(|e| {
                e["type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with(&format!(".{phase}")))
            })
            .collect()
    }

    pub fn count(&self, phase: &str) -> usize {
        self.events
            .iter()
            .filter(|e| {
                e["type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with(&format!(".{phase}")))
            })
            .count()
    }
}
