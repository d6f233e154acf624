//! `.finished` replies of helm-service, timed as they arrive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use futures::StreamExt;
use serde_json::Value;
use system_tests::deploy_env::DeployEnv;
use system_tests::events::publish;
use tokio::sync::Notify;

/// `.finished` replies of helm-service as they arrive (core subscription, so the arrival
/// time is not delayed by reading the stream), by `triggeredid`.
#[derive(Clone, Default)]
pub struct Finished {
    arrived: Arc<Mutex<HashMap<String, (Instant, Value)>>>,
    notify: Arc<Notify>,
}

impl Finished {
    pub async fn start(nats_url: &str) -> anyhow::Result<Finished> {
        let client = async_nats::connect(nats_url).await?;
        let mut subscription = client.subscribe("sh.keptn.event.*.finished").await?;
        client.flush().await?;
        let finished = Finished::default();
        let sink = finished.clone();
        tokio::spawn(async move {
            let _client = client;
            while let Some(message) = subscription.next().await {
                let at = Instant::now();
                let Ok(event) = serde_json::from_slice::<Value>(&message.payload) else {
                    continue;
                };
                if event["source"] != "helm-service" {
                    continue;
                }
                let Some(id) = event["triggeredid"].as_str().map(str::to_owned) else {
                    continue;
                };
                sink.arrived.lock().expect("lock").insert(id, (at, event));
                sink.notify.notify_waiters();
            }
        });
        Ok(finished)
    }

    /// The arrival time and body of the `.finished` reply to `id`.
    pub async fn wait(&self, id: &str, deadline: Duration) -> anyhow::Result<(Instant, Value)> {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(found) = self.arrived.lock().expect("lock").remove(id) {
                return Ok(found);
            }
            if tokio::time::timeout_at(end, notified).await.is_err() {
                bail!("no .finished for {id} within {deadline:?}");
            }
        }
    }

    /// Publishes `event` and returns (publish → `.finished`, the `.finished` body), failing
    /// unless it succeeded with `result`.
    pub async fn run(
        &self,
        env: &DeployEnv,
        event: &Value,
        result: &str,
        deadline: Duration,
    ) -> anyhow::Result<(Duration, Value)> {
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        let started = Instant::now();
        publish(&env.env.js, event).await?;
        let (at, finished) = self.wait(&id, deadline).await?;
        ensure!(
            finished["data"]["status"] == "succeeded" && finished["data"]["result"] == result,
            "{id} did not succeed with {result}: {finished:#}"
        );
        Ok((at.duration_since(started), finished))
    }
}
