//! The idempotency ledger: what has been done for each triggered event.
//!
//! Keyed by the triggered event id in a JetStream KV bucket shared by all replicas.
//! A redelivered or duplicated event reads its entry and continues from there: replies
//! already published are not published again and steps already done are skipped.
//!
//! Every write is a compare-and-swap on the revision read before, so two holders of
//! the same entry (which the release lease should prevent) cannot overwrite each
//! other silently: the loser gets [`LedgerError::Conflict`] and hands the message back.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What the ledger knows about one triggered event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Event type, for operators reading the bucket.
    pub event_type: String,
    /// Times a replica began working on this event.
    pub attempts: u32,
    /// The `.started` event was published (PubAck received).
    pub started_published: bool,
    /// Steps completed, with the output each step returned.
    pub steps: BTreeMap<String, StepRecord>,
    /// The `.finished` event as published (the stream acknowledged it).
    pub finished: Option<String>,
    /// Set when the event was acknowledged without any reply (e.g. declined).
    pub no_reply: bool,
    pub updated_at: Option<DateTime<Utc>>,
}

impl LedgerEntry {
    /// True when nothing is left to do for the event.
    pub fn is_complete(&self) -> bool {
        self.no_reply || self.finished.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub output: serde_json::Value,
    pub completed_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger entry {key} was changed by another worker (expected revision {expected})")]
    Conflict { key: String, expected: u64 },
    #[error("ledger entry {key} is unreadable: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    #[error("ledger bucket unavailable: {0}")]
    Store(String),
}

/// Handle on the ledger bucket.
#[derive(Clone)]
pub struct Ledger {
    store: kv::Store,
}

/// One event's entry as read, with the revision the next write must match.
#[derive(Debug, Clone)]
pub struct LedgerRecord {
    pub key: String,
    pub entry: LedgerEntry,
    /// 0 when the entry does not exist yet.
    revision: u64,
}

impl Ledger {
    pub fn new(store: kv::Store) -> Self {
        Ledger { store }
    }

    /// Bucket settings: one revision per key, entries forgotten after `ttl`.
    pub fn bucket_config(bucket: String, ttl: Duration) -> kv::Config {
        kv::Config {
            bucket,
            description: "helm-service idempotency ledger, keyed by triggered event id".into(),
            history: 1,
            max_age: ttl,
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        }
    }

    /// Reads the entry of an event, or a fresh one when the event is new.
    pub async fn load(
        &self,
        event_id: &str,
        event_type: &str,
    ) -> Result<LedgerRecord, LedgerError> {
        let key = ledger_key(event_id);
        let entry = self
            .store
            .entry(key.as_str())
            .await
            .map_err(|err| LedgerError::Store(err.to_string()))?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let parsed = serde_json::from_slice(&entry.value).map_err(|source| {
                    LedgerError::Corrupt {
                        key: key.clone(),
                        source,
                    }
                })?;
                Ok(LedgerRecord {
                    key,
                    entry: parsed,
                    revision: entry.revision,
                })
            }
            // A deleted entry's tombstone has a revision a create must match.
            Some(entry) => Ok(LedgerRecord {
                key,
                entry: LedgerEntry::new(event_type),
                revision: entry.revision,
            }),
            None => Ok(LedgerRecord {
                key,
                entry: LedgerEntry::new(event_type),
                revision: 0,
            }),
        }
    }

    /// Writes `record.entry` if nobody wrote since it was read.
    pub async fn save(&self, record: &mut LedgerRecord) -> Result<(), LedgerError> {
        record.entry.updated_at = Some(Utc::now());
        let value =
            Bytes::from(serde_json::to_vec(&record.entry).expect("ledger entries serialize"));
        match self
            .store
            .update(record.key.as_str(), value, record.revision)
            .await
        {
            Ok(revision) => {
                record.revision = revision;
                Ok(())
            }
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Err(LedgerError::Conflict {
                    key: record.key.clone(),
                    expected: record.revision,
                })
            }
            Err(err) => Err(LedgerError::Store(err.to_string())),
        }
    }
}

impl LedgerEntry {
    fn new(event_type: &str) -> Self {
        LedgerEntry {
            event_type: event_type.to_owned(),
            ..Default::default()
        }
    }
}

/// KV keys allow `[-/_=.a-zA-Z0-9]`; event ids are usually UUIDs and are used as they
/// are so operators can look them up. Any other id is hashed; hashed keys carry a `.`,
/// which plain ones never do, so the two cannot collide.
pub fn ledger_key(event_id: &str) -> String {
    let plain = !event_id.is_empty()
        && event_id.len() <= 128
        && event_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if plain {
        event_id.to_owned()
    } else {
        let digest = Sha256::digest(event_id.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256.{hex}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_ids_are_kept_readable() {
        assert_eq!(
            ledger_key("c4d3a334-6cb9-4e8c-a372-7e0b45942f53"),
            "c4d3a334-6cb9-4e8c-a372-7e0b45942f53"
        );
    }

    #[test]
    fn other_ids_are_hashed_without_collisions() {
        let odd = ledger_key("a b/c");
        assert!(odd.starts_with("sha256."));
        assert_ne!(odd, ledger_key("a b/d"));
        assert!(ledger_key("").starts_with("sha256."));
        assert!(ledger_key(&"x".repeat(500)).starts_with("sha256."));
    }

    #[test]
    fn completeness() {
        let mut entry = LedgerEntry::new("t");
        assert!(!entry.is_complete());
        entry.finished = Some("{}".into());
        assert!(entry.is_complete());
        let declined = LedgerEntry {
            no_reply: true,
            ..LedgerEntry::new("t")
        };
        assert!(declined.is_complete());
    }
}
