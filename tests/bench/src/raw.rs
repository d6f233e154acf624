//! Baseline (a): the least a correct JetStream responder has to do, with nothing else.
//!
//! One connection, a durable pull consumer of the same shape as the worker's (the
//! same five filter subjects: filtering costs the server per message, whatever
//! consumes), and up to `concurrency` messages in work at once, each in its own task: decode the event,
//! publish `.started` (with `Nats-Msg-Id`) and await its PubAck, publish `.finished`
//! likewise, then ack. Messages come from a prefetching `consumer.stream()`. No
//! ledger, no lease, no in-progress acks, no metrics, no logs.
//!
//! With [`RecordWrites`] it also does what a design with two durable writes per event
//! must (take a per-release KV record before replying, write it back after, both
//! compare-and-swap at a remembered revision), and nothing else: the floor such a
//! design cannot go below, measured on the same server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, message::PublishMessage};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::TRIGGERED;

/// Namespace of reply ids; like the worker, replies get deterministic v5 ids so a
/// retried publish would be dropped by the duplicate window.
const REPLY_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6d1c_0f6e_2b35_4b1e_9a57_4c1d_2c9e_0b11);

/// The running raw loop.
pub struct RawLoop {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    errors: Arc<AtomicU64>,
}

impl RawLoop {
    /// Creates the consumer (deliver new) and starts consuming; with `record_bucket`,
    /// each event also takes and hands back a record in that (new) KV bucket. With
    /// `single_filter` the consumer filters only the bench's event type (the method
    /// before the consumer shapes were made equal).
    pub async fn start(
        url: &str,
        stream: &str,
        consumer_name: &str,
        concurrency: usize,
        record_bucket: Option<&str>,
        single_filter: bool,
    ) -> anyhow::Result<RawLoop> {
        let client = async_nats::ConnectOptions::new()
            .name("raw-loop")
            .connect(url.split(',').collect::<Vec<_>>().as_slice())
            .await
            .with_context(|| format!("raw loop connecting to {url}"))?;
        let js = jetstream::new(client);
        let mut stream = js
            .get_stream(stream)
            .await
            .context("raw loop: getting the stream")?;
        // The records get the stream's replicas (a cluster run).
        let replicas = stream.info().await?.config.num_replicas;
        let records = match record_bucket {
            Some(bucket) => Some(Arc::new(RecordWrites::create(&js, bucket, replicas).await?)),
            None => None,
        };
        let consumer: consumer::PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(consumer_name.to_owned()),
                deliver_policy: consumer::DeliverPolicy::New,
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_deliver: -1,
                filter_subjects: if single_filter {
                    vec![TRIGGERED.to_owned()]
                } else {
                    worker::nats::topology::handled_subjects()
                },
                max_ack_pending: 10_000,
                ..Default::default()
            })
            .await
            .context("raw loop: creating the consumer")?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(concurrency)
            .messages()
            .await
            .context("raw loop: opening the pull stream")?;
        let stop = CancellationToken::new();
        let errors = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(consume(
            messages,
            js,
            records,
            concurrency,
            stop.clone(),
            errors.clone(),
        ));
        Ok(RawLoop { stop, task, errors })
    }

    /// Stops pulling, lets the tasks in work finish, and returns the number of
    /// messages that failed.
    pub async fn stop(self) -> anyhow::Result<u64> {
        self.stop.cancel();
        self.task.await.context("raw loop task panicked")?;
        Ok(self.errors.load(Ordering::SeqCst))
    }
}

/// Per-release records written like the worker's fast path: compare-and-swap at the
/// revision this loop wrote last.
pub struct RecordWrites {
    store: jetstream::kv::Store,
    revisions: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl RecordWrites {
    async fn create(
        js: &jetstream::Context,
        bucket: &str,
        replicas: usize,
    ) -> anyhow::Result<RecordWrites> {
        let _ = js.delete_key_value(bucket).await;
        let store = js
            .create_key_value(jetstream::kv::Config {
                bucket: bucket.to_owned(),
                history: 1,
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .with_context(|| format!("raw loop: creating bucket {bucket}"))?;
        Ok(RecordWrites {
            store,
            revisions: Default::default(),
        })
    }

    async fn write(&self, key: &str, body: String) -> anyhow::Result<()> {
        let expected = self.revisions.lock().expect("revisions").get(key).copied();
        let revision = self
            .store
            .update(key, Bytes::from(body), expected.unwrap_or(0))
            .await
            .with_context(|| format!("raw loop: writing record {key}"))?;
        self.revisions
            .lock()
            .expect("revisions")
            .insert(key.to_owned(), revision);
        Ok(())
    }
}

async fn consume(
    mut messages: consumer::pull::Stream,
    js: jetstream::Context,
    records: Option<Arc<RecordWrites>>,
    concurrency: usize,
    stop: CancellationToken,
    errors: Arc<AtomicU64>,
) {
    let slots = Arc::new(Semaphore::new(concurrency));
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("semaphore never closes"),
            () = stop.cancelled() => break,
        };
        let next = tokio::select! {
            next = messages.next() => next,
            () = stop.cancelled() => break,
        };
        match next {
            Some(Ok(message)) => {
                tracker.spawn(handle(
                    js.clone(),
                    records.clone(),
                    message,
                    permit,
                    errors.clone(),
                ));
            }
            Some(Err(err)) => eprintln!("raw loop: pull error: {err}"),
            None => break,
        }
    }
    tracker.close();
    tracker.wait().await;
}

async fn handle(
    js: jetstream::Context,
    records: Option<Arc<RecordWrites>>,
    message: jetstream::Message,
    _permit: OwnedSemaphorePermit,
    errors: Arc<AtomicU64>,
) {
    if let Err(err) = respond(&js, records.as_deref(), &message).await {
        errors.fetch_add(1, Ordering::SeqCst);
        eprintln!("raw loop: {err:#}");
        let _ = message.ack_with(jetstream::AckKind::Nak(None)).await;
    }
}

#[derive(Deserialize)]
struct TriggeredView {
    id: String,
    #[serde(rename = "type")]
    ty: String,
    shkeptncontext: Option<String>,
    data: DataView,
}

#[derive(Deserialize)]
struct DataView {
    project: String,
    stage: String,
    service: String,
    #[serde(default)]
    labels: Map<String, Value>,
}

async fn respond(
    js: &jetstream::Context,
    records: Option<&RecordWrites>,
    message: &jetstream::Message,
) -> anyhow::Result<()> {
    let event: TriggeredView =
        serde_json::from_slice(&message.payload).context("decoding the event")?;
    let key = format!(
        "{}.{}.{}",
        event.data.project, event.data.stage, event.data.service
    );
    if let Some(records) = records {
        records
            .write(&key, json!({"holder": event.id}).to_string())
            .await?;
    }
    let task = event
        .ty
        .strip_suffix(".triggered")
        .context("not a triggered event")?;
    for phase in ["started", "finished"] {
        let (subject, id, payload) = reply(&event, task, phase);
        let publish = PublishMessage::build()
            .header("Content-Type", "application/cloudevents+json")
            .message_id(&id)
            .payload(payload);
        js.send_publish(subject, publish)
            .await
            .with_context(|| format!("publishing {phase}"))?
            .await
            .with_context(|| format!("awaiting the PubAck of {phase}"))?;
    }
    if let Some(records) = records {
        records
            .write(&key, json!({"completed": event.id}).to_string())
            .await?;
    }
    message
        .ack()
        .await
        .map_err(|err| anyhow::anyhow!("acking: {err}"))
}

/// `(subject, id, encoded event)` of one reply.
fn reply(event: &TriggeredView, task: &str, phase: &str) -> (String, String, Bytes) {
    let ty = format!("{task}.{phase}");
    let id = uuid::Uuid::new_v5(&REPLY_NAMESPACE, format!("{}/{phase}", event.id).as_bytes())
        .to_string();
    let mut data = json!({
        "project": event.data.project,
        "stage": event.data.stage,
        "service": event.data.service,
        "labels": event.data.labels,
        "status": "succeeded",
    });
    if phase == "finished" {
        data["result"] = json!("pass");
    }
    let body = json!({
        "specversion": "1.0",
        "id": id,
        "source": "raw-loop",
        "type": ty,
        "datacontenttype": "application/json",
        "time": chrono::Utc::now().to_rfc3339(),
        "shkeptncontext": event.shkeptncontext,
        "triggeredid": event.id,
        "shkeptnspecversion": "0.2.4",
        "data": data,
    });
    (ty, id, Bytes::from(body.to_string()))
}
