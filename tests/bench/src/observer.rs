//! Watches the replies on core NATS subscriptions and stamps when each one arrives.
//!
//! Both systems under test publish their replies to JetStream, which is a core publish
//! on the reply's subject, so a plain subscription sees them as soon as the stream
//! has stored them; it does not depend on any consumer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::StreamExt;
use serde::Deserialize;

use crate::events::{FINISHED, STARTED};

/// The part of a reply the bench reads.
#[derive(Deserialize)]
struct ReplyView<'a> {
    #[serde(borrow)]
    triggeredid: std::borrow::Cow<'a, str>,
}

#[derive(Default)]
struct Seen {
    /// First arrival of a `.started` per triggered id.
    started: HashMap<String, Instant>,
    /// First arrival of a `.finished` per triggered id.
    finished: HashMap<String, Instant>,
    /// Replies seen again for an id already seen (at-least-once duplicates).
    duplicates: u64,
    /// Replies without a readable `triggeredid`.
    unreadable: u64,
}

/// Reply arrivals since the last [`Observer::begin_phase`].
pub struct Observer {
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _client: async_nats::Client,
}

/// Counts of one phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    pub duplicates: u64,
    pub unreadable: u64,
}

impl Observer {
    /// Subscribes to the started and finished subjects on its own connection and
    /// waits until the server has registered both subscriptions.
    pub async fn start(url: &str) -> anyhow::Result<Observer> {
        let client = async_nats::ConnectOptions::new()
            .name("bench-observer")
            .connect(url.split(',').collect::<Vec<_>>().as_slice())
            .await
            .with_context(|| format!("observer connecting to {url}"))?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut tasks = Vec::new();
        for (subject, finished) in [(STARTED, false), (FINISHED, true)] {
            let mut subscription = client
                .subscribe(subject)
                .await
                .with_context(|| format!("subscribing to {subject}"))?;
            let seen = seen.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(message) = subscription.next().await {
                    let now = Instant::now();
                    let view = serde_json::from_slice::<ReplyView>(&message.payload);
                    let mut seen = seen.lock().expect("observer lock");
                    let Ok(view) = view else {
                        seen.unreadable += 1;
                        continue;
                    };
                    let map = if finished {
                        &mut seen.finished
                    } else {
                        &mut seen.started
                    };
                    if map.contains_key(view.triggeredid.as_ref()) {
                        seen.duplicates += 1;
                    } else {
                        map.insert(view.triggeredid.into_owned(), now);
                    }
                }
            }));
        }
        // A flush round trip: the server has processed both SUBs when it answers.
        client
            .flush()
            .await
            .context("flushing the observer's subscriptions")?;
        Ok(Observer {
            seen,
            tasks,
            _client: client,
        })
    }

    /// Starts a phase: forgets the replies seen so far (the duplicate and unreadable
    /// counts keep adding up until [`take_tally`](Self::take_tally)). Call it only
    /// when no reply of an earlier phase can still arrive.
    pub fn begin_phase(&self) {
        let mut seen = self.seen.lock().expect("observer lock");
        seen.started.clear();
        seen.finished.clear();
    }

    /// The duplicate and unreadable counts since the last call; resets them.
    pub fn take_tally(&self) -> Tally {
        let mut seen = self.seen.lock().expect("observer lock");
        let tally = Tally {
            duplicates: seen.duplicates,
            unreadable: seen.unreadable,
        };
        seen.duplicates = 0;
        seen.unreadable = 0;
        tally
    }

    /// Waits until every id of this phase has a `.finished` (and a `.started` too
    /// when `started_too`), failing after `timeout`.
    ///
    /// Polls cheap counts only (the machine is shared with the systems under test);
    /// the ids are checked once at the end. Arrival times are stamped on receipt, so
    /// the polling interval does not affect any measurement.
    pub async fn wait_all(
        &self,
        ids: &[String],
        started_too: bool,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let end = Instant::now() + timeout;
        loop {
            let (finished, started) = {
                let seen = self.seen.lock().expect("observer lock");
                (seen.finished.len(), seen.started.len())
            };
            if finished >= ids.len() && (!started_too || started >= ids.len()) {
                break;
            }
            if Instant::now() >= end {
                bail!(
                    "after {timeout:?} only {finished}/{} finished and {started}/{} started replies were seen",
                    ids.len(),
                    ids.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let seen = self.seen.lock().expect("observer lock");
        let missing = ids
            .iter()
            .filter(|id| {
                !seen.finished.contains_key(*id) || (started_too && !seen.started.contains_key(*id))
            })
            .count();
        if missing > 0 {
            bail!(
                "{missing} of {} events lack a reply (replies to unknown ids arrived instead)",
                ids.len()
            );
        }
        Ok(())
    }

    /// When the last of `ids` was seen finished (call after [`wait_all`](Self::wait_all)).
    pub fn last_finished(&self, ids: &[String]) -> Option<Instant> {
        let seen = self.seen.lock().expect("observer lock");
        ids.iter()
            .filter_map(|id| seen.finished.get(id).copied())
            .max()
    }

    /// When `id`'s `.started` was seen.
    pub fn started_at(&self, id: &str) -> Option<Instant> {
        self.seen
            .lock()
            .expect("observer lock")
            .started
            .get(id)
            .copied()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
