//! Publishing to JetStream with idempotency and patience.
//!
//! Every publish carries a `Nats-Msg-Id` derived from what it is (a reply id, a dead
//! letter's source sequence), so a retry after a lost PubAck, or a re-send by a
//! redelivered event, is dropped by the stream's duplicate window instead of landing
//! twice. Transient failures (server restarting, no responders) are retried with
//! backoff until the deadline.
//!
//! Headers are built only through the client's fallible parsers ([`headers`]): its
//! infallible conversions panic on a line break, and some values (a copied `traceparent`)
//! come from events.

use std::time::Duration;

use async_nats::header::{HeaderName, HeaderValue, NATS_MESSAGE_ID};
use async_nats::jetstream::{self, message::PublishMessage, publish::PublishAck};
use async_nats::HeaderMap;
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use contracts::envelope::KeptnEvent;
use tracing::warn;

#[derive(Debug, thiserror::Error)]
#[error("publishing to {subject} failed: {reason}")]
pub struct PublishError {
    pub subject: String,
    pub reason: String,
}

/// Headers from `(name, value)` pairs; a pair NATS cannot carry (a line break in the value,
/// an empty name, say) is left out with a warning instead of panicking in the client. A name
/// given twice keeps its last value.
pub fn headers<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        match (name.parse::<HeaderName>(), value.parse::<HeaderValue>()) {
            (Ok(parsed), Ok(value)) if !name.is_empty() => headers.insert(parsed, value),
            _ => warn!(
                header = ?name,
                "left out a header NATS cannot carry (control characters in it)"
            ),
        }
    }
    headers
}

/// The headers of a Keptn event we publish: its content type and, when it has one, its
/// `traceparent` (the one attribute copied from an incoming event into a header; intake
/// lets through only values of the W3C grammar, so it is never left out).
pub fn event_headers(event: &KeptnEvent) -> HeaderMap {
    let content_type = ("Content-Type", "application/cloudevents+json");
    let traceparent = event.traceparent().map(|value| ("traceparent", value));
    headers([content_type].into_iter().chain(traceparent))
}

#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
    /// Total time one publish may take, retries included.
    deadline: Duration,
}

impl Publisher {
    pub fn new(js: jetstream::Context, deadline: Duration) -> Self {
        Publisher { js, deadline }
    }

    /// Publishes and waits for the stream's acknowledgement.
    pub async fn publish(
        &self,
        subject: &str,
        msg_id: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<PublishAck, PublishError> {
        let msg_id: HeaderValue = msg_id.parse().map_err(|_| PublishError {
            subject: subject.to_owned(),
            reason: format!("message id {msg_id:?} cannot be a NATS header value"),
        })?;
        let attempt = || async {
            let publish = PublishMessage::build()
                .headers(headers.clone())
                .header(NATS_MESSAGE_ID, msg_id.clone())
                .payload(payload.clone());
            let ack_future = self
                .js
                .send_publish(subject.to_owned(), publish)
                .await
                .map_err(|err| err.to_string())?;
            ack_future.await.map_err(|err| err.to_string())
        };
        // The usual case, without setting up the retry machinery.
        match attempt().await {
            Ok(ack) => return Ok(ack),
            Err(err) => warn!(%subject, error = %err, "publish failed, retrying"),
        }
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(2))
            .with_total_delay(Some(self.deadline))
            .without_max_times();
        attempt
            .retry(backoff)
            .notify(|err, delay| {
                warn!(%subject, error = %err, retry_in = ?delay, "publish failed, retrying");
            })
            .await
            .map_err(|reason| PublishError {
                subject: subject.to_owned(),
                reason,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_leave_out_what_nats_cannot_carry_instead_of_panicking() {
        let built = headers([
            ("Content-Type", "application/json"),
            ("traceparent", "00-abc\r\nX-Injected: 1"),
            ("tracestate", "a=1\n"),
            ("Bad:Name", "value"),
            ("", "empty name"),
            ("Bad Name", "value"),
        ]);
        assert_eq!(
            built.get("Content-Type").map(|v| v.as_str()),
            Some("application/json")
        );
        assert!(built.get("traceparent").is_none());
        assert!(built.get("tracestate").is_none());
        assert_eq!(built.iter().count(), 1);
    }
}
