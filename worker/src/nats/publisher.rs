//! Publishing to JetStream with idempotency and patience.
//!
//! Every publish carries a `Nats-Msg-Id` derived from what it is (a reply id, a dead
//! letter's source sequence), so a retry after a lost PubAck, or a re-send by a
//! redelivered event, is dropped by the stream's duplicate window instead of landing
//! twice. Transient failures (server restarting, no responders) are retried with
//! backoff until the deadline.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, publish::PublishAck};
use async_nats::HeaderMap;
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use tracing::warn;

#[derive(Debug, thiserror::Error)]
#[error("publishing to {subject} failed: {reason}")]
pub struct PublishError {
    pub subject: String,
    pub reason: String,
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
        let attempt = || async {
            let publish = PublishMessage::build()
                .headers(headers.clone())
                .message_id(msg_id)
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
