//! The bounded change history that watches replay, like etcd's compacted revision log.
//!
//! Every write appends one event under the store's lock, so a watch that starts from a
//! resourceVersion sees exactly the writes after it. Only the newest events are kept; a
//! watch from before the oldest kept event gets `410 Expired`, which makes clients relist —
//! the behaviour informers and `kubectl get -w` must cope with on a real cluster.

use std::collections::VecDeque;
use std::time::Instant;

use serde_json::Value;

/// How many events are kept; older ones are compacted away.
pub const HISTORY_LIMIT: usize = 1000;

/// What happened to an object (the watch event `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One stored change.
#[derive(Debug, Clone)]
pub struct Event {
    /// The resourceVersion the write produced.
    pub revision: u64,
    /// When the write was stored (monotonic), so a test can measure from the moment the
    /// server held a state instead of from when the test got round to looking.
    pub at: Instant,
    pub kind: EventType,
    /// Storage group and plural of the object (shared across API versions).
    pub group: String,
    pub plural: String,
    pub namespace: String,
    /// The object after the write (for DELETED: the last state, with the deletion's revision).
    pub object: Value,
    /// The object before a MODIFIED write, so selector watches can turn a change that moves
    /// an object out of (into) their selection into DELETED (ADDED), as the real server does.
    pub previous: Option<Value>,
}

/// The kept events, oldest first.
#[derive(Debug, Default, Clone)]
pub struct History {
    events: VecDeque<Event>,
    /// The newest revision whose event was dropped; watches must start at or after it.
    compacted: u64,
}

/// A watch asked for a revision older than the history holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooOld {
    pub requested: u64,
    pub oldest: u64,
}

impl History {
    pub fn push(&mut self, event: Event) {
        if self.events.len() == HISTORY_LIMIT {
            if let Some(dropped) = self.events.pop_front() {
                self.compacted = dropped.revision;
            }
        }
        self.events.push_back(event);
    }

    /// Events after `revision`, oldest first.
    pub fn since(&self, revision: u64) -> Result<impl Iterator<Item = &Event>, TooOld> {
        if revision < self.compacted {
            return Err(TooOld {
                requested: revision,
                oldest: self.compacted + 1,
            });
        }
        // Revisions increase along the deque, so the first newer event is found by bisection.
        let first = self.events.partition_point(|e| e.revision <= revision);
        Ok(self.events.range(first..))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(revision: u64) -> Event {
        Event {
            revision,
            at: Instant::now(),
            kind: EventType::Added,
            group: String::new(),
            plural: "configmaps".into(),
            namespace: "default".into(),
            object: json!({}),
            previous: None,
        }
    }

    #[test]
    fn keeps_the_newest_events_and_refuses_older_starts() {
        let mut h = History::default();
        for r in 1..=(HISTORY_LIMIT as u64 + 10) {
            h.push(ev(r));
        }
        assert_eq!(
            h.since(5).err(),
            Some(TooOld {
                requested: 5,
                oldest: 11
            })
        );
        let from_10: Vec<u64> = h.since(10).unwrap().map(|e| e.revision).collect();
        assert_eq!(from_10.len(), HISTORY_LIMIT);
        assert_eq!(from_10[0], 11);
        assert_eq!(h.since(HISTORY_LIMIT as u64 + 10).unwrap().count(), 0);
    }
}
