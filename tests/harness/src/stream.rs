//! Reading what is in a JetStream stream, for assertions.
//!
//! Both helpers read through an ephemeral *ordered* consumer (no acks, in-memory, removed by
//! the server when idle), so they never disturb the durable consumers under test.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use async_nats::jetstream::{self, consumer::pull::OrderedConfig, consumer::DeliverPolicy};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use tokio::time::Instant;

/// How long [`stream_messages`] may take before it gives up.
pub const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(10);

/// A stored message: subject, headers (empty when it has none) and payload.
pub type StoredMessage = (String, HeaderMap, Bytes);

/// The JSON body of a message; a body that is not JSON becomes a JSON string holding its
/// (lossily decoded) text, so that nothing in the stream is silently skipped.
pub fn body_json(payload: &[u8]) -> Value {
    serde_json::from_slice(payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()))
}

/// `""` and `">"` mean the whole stream (no filter).
fn ordered_config(filter_subject: &str) -> OrderedConfig {
    let filter_subject = match filter_subject {
        "" | ">" => String::new(),
        other => other.to_string(),
    };
    OrderedConfig {
        filter_subject,
        deliver_policy: DeliverPolicy::All,
        ..Default::default()
    }
}

/// Reads `stream` from its start, keeping messages on `filter_subject` (a subject with
/// wildcards; `""` or `">"` for all), and returns their JSON bodies (see [`body_json`]) as soon
/// as `until` returns true for what has been collected. Messages published while it runs are
/// read as they arrive.
///
/// Fails when `deadline` passes first; the error shows everything collected so far.
pub async fn collect_stream_json(
    js: &jetstream::Context,
    stream: &str,
    filter_subject: &str,
    deadline: Duration,
    mut until: impl FnMut(&[Value]) -> bool,
) -> anyhow::Result<Vec<Value>> {
    let end = Instant::now() + deadline;
    let mut collected = Vec::new();
    if until(&collected) {
        return Ok(collected);
    }
    let mut messages = tokio::time::timeout_at(end, async {
        let stream_handle = js
            .get_stream(stream)
            .await
            .with_context(|| format!("getting stream {stream}"))?;
        let consumer = stream_handle
            .create_consumer(ordered_config(filter_subject))
            .await
            .with_context(|| format!("creating an ordered consumer on {stream}"))?;
        consumer
            .messages()
            .await
            .with_context(|| format!("reading stream {stream}"))
    })
    .await
    .map_err(|_| anyhow!("timed out after {deadline:?} opening stream {stream}"))??;

    let mut last_error = None;
    loop {
        match tokio::time::timeout_at(end, messages.next()).await {
            Ok(Some(Ok(message))) => {
                collected.push(body_json(&message.payload));
                if until(&collected) {
                    return Ok(collected);
                }
            }
            // The ordered consumer recreates itself after errors (e.g. a server restart);
            // keep reading, and mention the error if the deadline passes.
            Ok(Some(Err(err))) => last_error = Some(err.to_string()),
            Ok(None) => bail!(
                "the ordered consumer on {stream} ({filter_subject}) ended; collected {}",
                show(&collected)
            ),
            Err(_) => bail!(
                "timed out after {deadline:?} reading {stream} ({filter_subject}){}; collected {}",
                last_error
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default(),
                show(&collected)
            ),
        }
    }
}

/// Every message on `filter_subject` (`""` or `">"` for all) that is in `stream` now, i.e. up to
/// its last sequence at the time of the call, in stream order.
pub async fn stream_messages(
    js: &jetstream::Context,
    stream: &str,
    filter_subject: &str,
) -> anyhow::Result<Vec<StoredMessage>> {
    let end = Instant::now() + SNAPSHOT_DEADLINE;
    let timed_out = || anyhow!("timed out after {SNAPSHOT_DEADLINE:?} reading stream {stream}");
    let mut stream_handle = tokio::time::timeout_at(end, js.get_stream(stream))
        .await
        .map_err(|_| timed_out())?
        .with_context(|| format!("getting stream {stream}"))?;
    let state = tokio::time::timeout_at(end, stream_handle.info())
        .await
        .map_err(|_| timed_out())?
        .with_context(|| format!("stream info of {stream}"))?
        .state
        .clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return Ok(out);
    }
    let last_sequence = state.last_sequence;
    let consumer = tokio::time::timeout_at(
        end,
        stream_handle.create_consumer(ordered_config(filter_subject)),
    )
    .await
    .map_err(|_| timed_out())?
    .with_context(|| format!("creating an ordered consumer on {stream}"))?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(out);
    }
    let mut messages = tokio::time::timeout_at(end, consumer.messages())
        .await
        .map_err(|_| timed_out())?
        .with_context(|| format!("reading stream {stream}"))?;
    loop {
        let message = match tokio::time::timeout_at(end, messages.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(err))) => return Err(anyhow!(err).context(format!("reading {stream}"))),
            Ok(None) => bail!("the ordered consumer on {stream} ended early"),
            Err(_) => bail!(
                "{}; read {} messages, up to sequence {last_sequence} expected",
                timed_out(),
                out.len()
            ),
        };
        let info = message
            .info()
            .map_err(|e| anyhow!("reading the metadata of a message from {stream}: {e}"))?;
        let (sequence, pending) = (info.stream_sequence, info.pending);
        if sequence > last_sequence {
            break;
        }
        let message = message.message;
        out.push((
            message.subject.to_string(),
            message.headers.unwrap_or_default(),
            message.payload,
        ));
        if sequence >= last_sequence || pending == 0 {
            break;
        }
    }
    Ok(out)
}

/// The JSON bodies (see [`body_json`]) of [`stream_messages`].
pub async fn stream_json(
    js: &jetstream::Context,
    stream: &str,
    filter_subject: &str,
) -> anyhow::Result<Vec<Value>> {
    Ok(stream_messages(js, stream, filter_subject)
        .await?
        .iter()
        .map(|(_, _, payload)| body_json(payload))
        .collect())
}

/// Collected values for an error message, capped so a big stream cannot flood the output.
fn show(values: &[Value]) -> String {
    const MAX_CHARS: usize = 16 * 1024;
    let mut text = format!("{} message(s):", values.len());
    for value in values {
        text.push_str("\n  ");
        text.push_str(&value.to_string());
        if text.len() > MAX_CHARS {
            let mut cut = MAX_CHARS;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str(" ...(truncated)");
            break;
        }
    }
    text
}
