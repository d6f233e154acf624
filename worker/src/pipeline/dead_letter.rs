//! Dead letters: messages the worker could not process, kept with the reason.
//!
//! Records go to `<prefix>.dlq.<reason>` in a stream of their own so an operator can
//! list, inspect and replay them. The original stays in the Keptn stream too; the
//! record names its sequence. Payloads are copied up to a cap so one huge poison
//! message cannot fill the dead-letter stream.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::intake::DeadLetterReason;
use crate::nats::publisher::{headers, PublishError, Publisher};

/// Bytes of the original payload copied into a record.
pub const PAYLOAD_EXCERPT_BYTES: usize = 64 * 1024;

/// One dead-letter record, as JSON in the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub reason: String,
    /// What was wrong, in words an operator can act on.
    pub detail: String,
    pub subject: String,
    pub stream: String,
    pub stream_sequence: u64,
    pub delivered: i64,
    pub received_at: DateTime<Utc>,
    /// The event id when the message was a readable CloudEvent.
    pub event_id: Option<String>,
    pub payload_bytes: usize,
    pub payload_sha256: String,
    pub payload_truncated: bool,
    /// The payload as text (lossy for non-UTF-8), up to [`PAYLOAD_EXCERPT_BYTES`].
    pub payload: String,
}

/// Where a message came from.
pub struct Origin<'a> {
    pub subject: &'a str,
    pub stream: &'a str,
    pub stream_sequence: u64,
    pub delivered: i64,
}

impl DeadLetter {
    pub fn new(
        reason: DeadLetterReason,
        detail: String,
        origin: &Origin<'_>,
        payload: &[u8],
        event_id: Option<String>,
    ) -> Self {
        let excerpt = &payload[..payload.len().min(PAYLOAD_EXCERPT_BYTES)];
        DeadLetter {
            reason: reason.as_str().to_owned(),
            detail,
            subject: origin.subject.to_owned(),
            stream: origin.stream.to_owned(),
            stream_sequence: origin.stream_sequence,
            delivered: origin.delivered,
            received_at: Utc::now(),
            event_id,
            payload_bytes: payload.len(),
            payload_sha256: sha256_hex(payload),
            payload_truncated: excerpt.len() < payload.len(),
            payload: String::from_utf8_lossy(excerpt).into_owned(),
        }
    }
}

impl DeadLetter {
    /// The original payload, when the record holds all of it: not cut, and text that is the
    /// payload byte for byte (a payload that is not UTF-8 was stored lossily; its digest tells).
    pub fn whole_payload(&self) -> Option<&[u8]> {
        let bytes = self.payload.as_bytes();
        (!self.payload_truncated && self.is_payload(bytes)).then_some(bytes)
    }

    /// Whether `bytes` are the original payload (their SHA-256 is the recorded one): how a
    /// copy read back from the source stream is recognised.
    pub fn is_payload(&self, bytes: &[u8]) -> bool {
        sha256_hex(bytes) == self.payload_sha256
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes dead-letter records.
#[derive(Clone)]
pub struct DeadLetters {
    publisher: Publisher,
    subject_prefix: String,
}

impl DeadLetters {
    pub fn new(publisher: Publisher, subject_prefix: String) -> Self {
        DeadLetters {
            publisher,
            subject_prefix,
        }
    }

    /// Publishes a record; one record per source message, however often it is
    /// redelivered (the message id is its stream sequence).
    pub async fn record(&self, letter: &DeadLetter) -> Result<(), PublishError> {
        let subject = format!("{}.{}", self.subject_prefix, letter.reason);
        let msg_id = format!("dlq-{}-{}", letter.stream, letter.stream_sequence);
        let body = Bytes::from(serde_json::to_vec(letter).expect("dead letters serialize"));
        let headers = headers([("Content-Type", "application/json")]);
        self.publisher
            .publish(&subject, &msg_id, headers, body)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_payloads_are_cut_but_fingerprinted() {
        let payload = vec![b'x'; PAYLOAD_EXCERPT_BYTES + 10];
        let origin = Origin {
            subject: "sh.keptn.event.deployment.triggered",
            stream: "keptn",
            stream_sequence: 7,
            delivered: 1,
        };
        let letter = DeadLetter::new(
            DeadLetterReason::TooLarge,
            "big".into(),
            &origin,
            &payload,
            None,
        );
        assert!(letter.payload_truncated);
        assert_eq!(letter.payload.len(), PAYLOAD_EXCERPT_BYTES);
        assert_eq!(letter.payload_bytes, PAYLOAD_EXCERPT_BYTES + 10);
        assert_eq!(letter.payload_sha256.len(), 64);
        assert_eq!(letter.reason, "too-large");
        assert_eq!(
            letter.whole_payload(),
            None,
            "cut: only the source stream has it"
        );
        assert!(letter.is_payload(&payload));
        assert!(!letter.is_payload(&payload[1..]));
    }

    #[test]
    fn a_whole_payload_is_given_back_only_when_it_is_the_original_byte_for_byte() {
        let origin = Origin {
            subject: "s",
            stream: "keptn",
            stream_sequence: 1,
            delivered: 21,
        };
        let reason = DeadLetterReason::Exhausted;
        let text = br#"{"id":"x"}"#;
        let letter = DeadLetter::new(reason, "d".into(), &origin, text, None);
        assert_eq!(letter.whole_payload(), Some(&text[..]));
        let binary = [0xff, 0xfe, b'{'];
        let letter = DeadLetter::new(reason, "d".into(), &origin, &binary, None);
        assert_eq!(letter.whole_payload(), None, "stored lossily");
    }
}
