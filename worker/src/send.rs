//! `helm-service send`: publish one event and print its replies.

use std::io::Read;

use anyhow::Context as _;
use contracts::envelope::KeptnEvent;
use futures::StreamExt;

use crate::config::SendConfig;

pub async fn send(config: SendConfig) -> anyhow::Result<()> {
    let bytes = if config.file == "-" {
        let mut buffer = Vec::new();
        std::io::stdin().read_to_end(&mut buffer)?;
        buffer
    } else {
        std::fs::read(&config.file).with_context(|| format!("reading {}", config.file))?
    };
    let event = KeptnEvent::decode(&bytes)
        .with_context(|| format!("{} is not a valid CloudEvent", config.file))?;
    let client = config.nats.resolve()?.connect("helm-service send").await?;
    // Subscribe before publishing so no reply can be missed.
    let mut replies = client.subscribe("sh.keptn.event.>").await?;
    let js = async_nats::jetstream::new(client.clone());
    let ack = js
        .publish(event.ty().to_owned(), bytes.into())
        .await?
        .await
        .with_context(|| format!("no JetStream stream takes subject {}", event.ty()))?;
    eprintln!(
        "published {} {} (stream {} seq {})",
        event.ty(),
        event.id(),
        ack.stream,
        ack.sequence
    );
    if config.wait.is_zero() {
        return Ok(());
    }
    let waiting = async {
        while let Some(message) = replies.next().await {
            let Ok(reply) = serde_json::from_slice::<serde_json::Value>(&message.payload) else {
                continue;
            };
            if reply["triggeredid"] != event.id() {
                continue;
            }
            println!("{}", serde_json::to_string_pretty(&reply)?);
            if message.subject.ends_with(".finished") {
                return Ok(());
            }
        }
        anyhow::bail!("connection closed before the finished reply arrived")
    };
    tokio::time::timeout(config.wait, waiting)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no finished reply within {:?} (--wait); is helm-service running?",
                config.wait
            )
        })?
}
