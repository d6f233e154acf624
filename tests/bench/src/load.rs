//! The two load phases, identical for both systems under test.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use futures::{StreamExt, TryStreamExt};

use crate::events::{Triggered, TRIGGERED};
use crate::observer::Observer;

/// Publishes in flight at once during the throughput phase.
const PUBLISH_WINDOW: usize = 256;

/// Result of the throughput phase.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub events: usize,
    /// First publish to the last `.finished` seen.
    pub elapsed: Duration,
    /// First publish to the last PubAck of the triggered events.
    pub publish_elapsed: Duration,
}

impl Throughput {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

/// Publishes all events as fast as the stream acknowledges them (a window of
/// [`PUBLISH_WINDOW`] unacknowledged publishes) and waits for every `.finished`.
pub async fn throughput(
    js: &jetstream::Context,
    observer: &Observer,
    events: Vec<Triggered>,
    timeout: Duration,
) -> anyhow::Result<Throughput> {
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    observer.begin_phase();
    let started = Instant::now();
    futures::stream::iter(events)
        .map(|event| async move {
            js.publish(TRIGGERED, event.payload)
                .await
                .context("publishing a triggered event")?
                .await
                .context("awaiting the PubAck of a triggered event")?;
            Ok::<_, anyhow::Error>(())
        })
        .buffer_unordered(PUBLISH_WINDOW)
        .try_collect::<()>()
        .await?;
    let publish_elapsed = started.elapsed();
    observer
        .wait_all(&ids, false, timeout)
        .await
        .context("throughput phase")?;
    let last = observer
        .last_finished(&ids)
        .context("no finished reply seen")?;
    Ok(Throughput {
        events: ids.len(),
        elapsed: last.duration_since(started),
        publish_elapsed,
    })
}

/// Publishes the events one every `1/rate` seconds and returns, per event, the time
/// from just before its publish to the arrival of its `.started`.
pub async fn latency(
    js: &jetstream::Context,
    observer: &Observer,
    events: Vec<Triggered>,
    rate: u32,
    timeout: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    observer.begin_phase();
    let mut sent = Vec::with_capacity(events.len());
    let mut acks = Vec::with_capacity(events.len());
    for event in events {
        ticker.tick().await;
        let at = Instant::now();
        let ack = js
            .publish(TRIGGERED, event.payload)
            .await
            .context("publishing a triggered event")?;
        acks.push(tokio::spawn(ack.into_future()));
        sent.push((event.id, at));
    }
    for ack in acks {
        ack.await
            .context("PubAck task panicked")?
            .context("awaiting the PubAck of a triggered event")?;
    }
    let ids: Vec<String> = sent.iter().map(|(id, _)| id.clone()).collect();
    observer
        .wait_all(&ids, true, timeout)
        .await
        .context("latency phase")?;
    sent.iter()
        .map(|(id, at)| {
            observer
                .started_at(id)
                .map(|seen| seen.saturating_duration_since(*at))
                .with_context(|| format!("no started reply for {id}"))
        })
        .collect()
}
