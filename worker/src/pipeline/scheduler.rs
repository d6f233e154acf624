//! The scheduler: pulls exactly as many messages as there are free slots.
//!
//! The pool ([`super::pool`]) holds the replica's slots and places. The pull loop waits
//! for a free slot (and a place), takes every other free one too, and issues one pull
//! request for that many messages; each delivered message takes one of those places and
//! slots into its task, and what a pull did not use goes back when it ends. So this
//! replica never asks for a message it has no slot for (which would burn its ack wait),
//! and a slot that frees up is refilled at once, by a new pull running alongside the open
//! ones. A task that waits for a busy release lends its slot out meanwhile, and tasks
//! get slots back before pulls do (see the pool).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{consumer, AckKind};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::pool::{Full, Pool, Reservation};
use super::processor::Processor;

pub type PullConsumer = consumer::Consumer<consumer::pull::Config>;

/// How long one pull request waits for messages before it is renewed; also bounds how
/// long shutdown waits for an idle pull to end.
const PULL_EXPIRY: Duration = Duration::from_secs(2);

/// Under load slots free up one at a time; waiting this long for a few more turns
/// many one-message pulls into fewer larger ones. Only a busy replica lingers: an idle
/// one has a pull open already, which takes new messages at once.
const REFILL_LINGER: Duration = Duration::from_millis(2);

pub struct Scheduler {
    consumer: PullConsumer,
    processor: Arc<Processor>,
    pool: Arc<Pool>,
    tracker: TaskTracker,
}

impl Scheduler {
    pub fn new(
        consumer: PullConsumer,
        processor: Arc<Processor>,
        concurrency: usize,
        tracker: TaskTracker,
    ) -> Self {
        processor.metrics.pool_capacity.set(concurrency as i64);
        let pool = Pool::new(concurrency, processor.metrics.waiting.clone());
        Scheduler {
            consumer,
            processor,
            pool,
            tracker,
        }
    }

    /// Pulls until `stop_pulling` fires. Tasks keep running on the tracker after this
    /// returns; `hard_stop` tells them the grace period is over.
    pub async fn run(self, stop_pulling: CancellationToken, hard_stop: CancellationToken) {
        let failures = Arc::new(std::sync::atomic::AtomicU32::new(0));
        loop {
            let mut reservation = tokio::select! {
                reservation = self.pool.reserve() => reservation,
                () = stop_pulling.cancelled() => break,
            };
            self.gather_more(&mut reservation).await;
            let pull = Pull {
                consumer: self.consumer.clone(),
                processor: self.processor.clone(),
                tracker: self.tracker.clone(),
                stop_pulling: stop_pulling.clone(),
                hard_stop: hard_stop.clone(),
                failures: failures.clone(),
            };
            self.tracker.spawn(pull.run(reservation));
        }
        info!("stopped pulling new messages");
    }

    /// Adds every free slot to `reservation`; lingers briefly for a quarter of the pool
    /// to be free, so a busy replica pulls in batches.
    async fn gather_more(&self, reservation: &mut Reservation) {
        let concurrency = self.pool.concurrency();
        let batch = (concurrency / 4).max(1);
        let linger = tokio::time::sleep(REFILL_LINGER);
        tokio::pin!(linger);
        while reservation.messages() < concurrency {
            match reservation.try_grow() {
                Ok(()) => {}
                Err(_) if reservation.messages() >= batch => break,
                // Places come back only as messages are settled.
                Err(Full::NoPlace) => break,
                Err(Full::NoSlot) => tokio::select! {
                    () = self.pool.slot_freed() => {}
                    () = &mut linger => break,
                },
            }
        }
    }
}

/// One pull request and the messages it delivers.
struct Pull {
    consumer: PullConsumer,
    processor: Arc<Processor>,
    tracker: TaskTracker,
    stop_pulling: CancellationToken,
    hard_stop: CancellationToken,
    /// Consecutive failed pulls across this replica, for backoff while NATS is away.
    failures: Arc<std::sync::atomic::AtomicU32>,
}

impl Pull {
    async fn run(self, mut reservation: Reservation) {
        use std::sync::atomic::Ordering;
        let wanted = reservation.messages();
        let batch = self
            .consumer
            .batch()
            .max_messages(wanted)
            .expires(PULL_EXPIRY)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(err) => {
                let failures = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
                let delay = Duration::from_millis(100 * 2u64.pow(failures.min(5)))
                    .min(Duration::from_secs(2));
                warn!(error = %err, retry_in = ?delay, "pull request failed");
                // Keep the reservation while backing off, so the loop does not spin (tasks
                // may still take its slots).
                tokio::select! {
                    () = tokio::time::sleep(delay) => {},
                    () = self.stop_pulling.cancelled() => {},
                }
                return;
            }
        };
        self.failures.store(0, Ordering::SeqCst);
        while let Some(item) = batch.next().await {
            match item {
                Ok(message) => {
                    let Some(place) = reservation.take() else {
                        // The server never sends more than asked; be safe anyway.
                        let _ = message.ack_with(AckKind::Nak(None)).await;
                        continue;
                    };
                    if self.stop_pulling.is_cancelled() {
                        // Arrived after shutdown began: give it to another replica now.
                        debug!("handing back a message that arrived during shutdown");
                        let _ = message.ack_with(AckKind::Nak(None)).await;
                        continue;
                    }
                    let processor = self.processor.clone();
                    let hard_stop = self.hard_stop.clone();
                    self.tracker
                        .spawn(async move { processor.process(message, hard_stop, place).await });
                }
                Err(err) => {
                    warn!(error = %err, "pull request ended with an error");
                    break;
                }
            }
        }
    }
}
