//! `helm-service status`: what the workers are doing, per release, and what is queued.
//!
//! Reads, never writes: the release records (holder, parked, the event in progress and its
//! steps), the Keptn stream after the consumer's ack floor (the events waiting, see
//! `release_view`), the durable consumer's counts, the dead-letter stream's size and how many
//! of its letters were never replayed (the marks of `dead-letters replay`).

use anyhow::{anyhow, Context as _};
use async_nats::jetstream::{self, consumer, kv};
use chrono::{DateTime, Utc};
use clap::Args;
use futures::TryStreamExt;
use serde::Serialize;

use super::dead_letters::replayed_letters;
use super::release_view::{Backlog, RecordView, WaitingEvent};
use super::replay::not_replayed;
use super::table::{cell, Table};
use super::{print_json, read_stream, OperatorArgs, Output, READ_DEADLINE};
use crate::nats::topology::{
    existing_bucket, existing_stream, DEFAULT_CONSUMER, DEFAULT_KEPTN_STREAM,
};
use crate::pipeline::release_record::ReleaseRecord;

/// Events of the Keptn stream read after the ack floor at most.
pub const MAX_SCANNED_EVENTS: usize = 20_000;

/// Settings of `helm-service status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub common: OperatorArgs,

    /// The Keptn stream: the `--stream` of the workers.
    #[arg(long, env = "KEPTN_STREAM", default_value = DEFAULT_KEPTN_STREAM)]
    pub stream: String,

    /// The workers' durable consumer: their `--consumer`.
    #[arg(long = "consumer", env = "CONSUMER_NAME", default_value = DEFAULT_CONSUMER)]
    pub consumer: String,

    /// Every release with a record, also the idle ones.
    #[arg(long)]
    pub all: bool,
}

/// The workers' durable consumer.
#[derive(Debug, Serialize)]
pub struct ConsumerStatus {
    pub stream: String,
    pub name: String,
    /// Events not delivered to any replica yet.
    pub pending: u64,
    /// Events delivered and not settled (running or waiting for their release).
    pub ack_pending: usize,
    /// Of those, delivered more than once.
    pub redelivered: usize,
    /// Everything up to this stream sequence is settled.
    pub ack_floor: u64,
    /// The last stream sequence delivered.
    pub last_delivered: u64,
}

/// One release.
#[derive(Debug, Serialize)]
pub struct ReleaseStatus {
    /// The release key: `<namespace>.<user release>` (`<project>._.<service>` for a
    /// deletion across stages).
    pub release: String,
    /// When its record was last written (absent: no record).
    pub updated_at: Option<DateTime<Utc>>,
    /// The record, when this version can read it.
    #[serde(flatten)]
    pub record: RecordView,
    /// Why the record could not be read.
    pub unreadable: Option<String>,
    pub waiting: Vec<WaitingEvent>,
}

/// Everything `status` prints (`-o json`).
#[derive(Debug, Serialize)]
pub struct Status {
    pub consumer: ConsumerStatus,
    /// Records in the dead-letter stream.
    pub dead_letters: u64,
    /// Of those, never replayed (`helm-service dead-letters replay`).
    pub dead_letters_not_replayed: u64,
    pub releases: Vec<ReleaseStatus>,
    /// Events of the Keptn stream read after the ack floor.
    pub scanned_events: usize,
    /// More were there than `status` reads ([`MAX_SCANNED_EVENTS`]): waiting lists are
    /// incomplete.
    pub scan_truncated: bool,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let js = common.jetstream("status").await?;
    let keptn = js
        .get_stream(&args.stream)
        .await
        .with_context(|| format!("no stream {} (--stream)", args.stream))?;
    let bound: Result<consumer::PullConsumer, _> = keptn.get_consumer(&args.consumer).await;
    let mut bound = bound.map_err(|err| anyhow!("{err}")).with_context(|| {
        format!(
            "no consumer {} on stream {}: has a worker run here (--consumer)?",
            args.consumer, args.stream
        )
    })?;
    let info = bound.info().await.context("reading the consumer")?.clone();
    let consumer = ConsumerStatus {
        stream: args.stream.clone(),
        name: args.consumer.clone(),
        pending: info.num_pending,
        ack_pending: info.num_ack_pending,
        redelivered: info.num_redelivered,
        ack_floor: info.ack_floor.stream_sequence,
        last_delivered: info.delivered.stream_sequence,
    };
    let (messages, scan_truncated) = read_stream(
        &keptn,
        Vec::new(),
        consumer::DeliverPolicy::ByStartSequence {
            start_sequence: consumer.ack_floor + 1,
        },
        MAX_SCANNED_EVENTS,
    )
    .await
    .with_context(|| format!("reading stream {}", args.stream))?;
    let backlog = Backlog::read(
        messages
            .iter()
            .map(|(seq, subject, payload)| (*seq, subject.as_str(), payload.as_ref())),
        consumer.last_delivered,
    );
    let records = read_records(&js, &common.names().release_records_bucket()).await?;
    let (dead_letters, dead_letters_not_replayed) = count_dead_letters(&js, common).await?;
    let status = Status {
        consumer,
        dead_letters,
        dead_letters_not_replayed,
        releases: releases(records, &backlog, args.all),
        scanned_events: messages.len(),
        scan_truncated,
    };
    match common.output {
        Output::Json => print_json(&status),
        Output::Table => {
            print!("{}", status_text(&status));
            Ok(())
        }
    }
}

/// The dead letters, and how many of them were never replayed.
async fn count_dead_letters(
    js: &jetstream::Context,
    common: &OperatorArgs,
) -> anyhow::Result<(u64, u64)> {
    let name = common.names().dead_letter_stream();
    let Some(stream) = existing_stream(js, &name).await? else {
        return Ok((0, 0));
    };
    let reading = || format!("reading the stream {name}");
    let mut state = stream.get_info().await.with_context(reading)?.state;
    if state.messages == 0 {
        return Ok((0, 0));
    }
    // Letters deleted between the first and the last (rare: by hand) are listed only on request.
    if state.deleted_count.unwrap_or(0) > 0 {
        state = stream
            .info_builder()
            .with_deleted(true)
            .fetch()
            .await
            .with_context(reading)?
            .info
            .state;
    }
    let marked = match existing_bucket(js, &common.names().replays_bucket()).await? {
        Some(bucket) => replayed_letters(&bucket).await?,
        None => Vec::new(),
    };
    let not_replayed = not_replayed(
        state.messages,
        state.first_sequence,
        state.last_sequence,
        state.deleted.as_deref().unwrap_or_default(),
        &marked,
    );
    Ok((state.messages, not_replayed))
}

/// A record as read: key, when written, the record (or why it is unreadable).
type ReadRecord = (String, DateTime<Utc>, Result<ReleaseRecord, String>);

/// Every release record.
pub async fn read_records(
    js: &jetstream::Context,
    bucket: &str,
) -> anyhow::Result<Vec<ReadRecord>> {
    let Some(store) = existing_bucket(js, bucket).await? else {
        return Ok(Vec::new());
    };
    let read = async {
        let keys: Vec<String> = store.keys().await?.try_collect().await?;
        let mut records = Vec::new();
        for key in keys {
            if let Some(record) = read_record(&store, &key).await? {
                records.push(record);
            }
        }
        Ok::<_, async_nats::Error>(records)
    };
    tokio::time::timeout(READ_DEADLINE, read)
        .await
        .map_err(|_| anyhow!("reading the bucket {bucket} took more than {READ_DEADLINE:?}"))?
        .map_err(|err| anyhow!("reading the bucket {bucket}: {err}"))
}

/// The record under `key`, if there is one.
pub async fn read_record(
    store: &kv::Store,
    key: &str,
) -> Result<Option<ReadRecord>, async_nats::Error> {
    let Some(entry) = store.entry(key).await? else {
        return Ok(None);
    };
    if entry.operation != kv::Operation::Put {
        return Ok(None);
    }
    let written =
        DateTime::from_timestamp(entry.created.unix_timestamp(), entry.created.nanosecond())
            .unwrap_or_default();
    let record = serde_json::from_slice::<ReleaseRecord>(&entry.value).map_err(|e| e.to_string());
    Ok(Some((key.to_owned(), written, record)))
}

/// One row per release that is busy or has waiting events (`all`: every release).
fn releases(records: Vec<ReadRecord>, backlog: &Backlog, all: bool) -> Vec<ReleaseStatus> {
    let mut rows: Vec<ReleaseStatus> = records
        .into_iter()
        .map(|(key, written, record)| {
            let waiting = backlog.waiting_for(&key, record.as_ref().ok());
            let (record, unreadable) = match record {
                Ok(record) => (RecordView::of(&record), None),
                Err(err) => (RecordView::default(), Some(err)),
            };
            ReleaseStatus {
                release: key,
                updated_at: Some(written),
                record,
                unreadable,
                waiting,
            }
        })
        .collect();
    // Releases that have no record yet but events waiting.
    for key in backlog.events.keys() {
        if !rows.iter().any(|row| &row.release == key) {
            rows.push(ReleaseStatus {
                release: key.clone(),
                updated_at: None,
                record: RecordView::default(),
                unreadable: None,
                waiting: backlog.waiting_for(key, None),
            });
        }
    }
    rows.retain(|row| {
        all || row.record.is_busy() || !row.waiting.is_empty() || row.unreadable.is_some()
    });
    rows.sort_by(|a, b| a.release.cmp(&b.release));
    rows
}

fn status_text(status: &Status) -> String {
    let mut table = Table::new(["RELEASE", "STATE", "HOLDER", "EVENT", "STEP", "WAITING"]);
    for row in &status.releases {
        let record = &row.record;
        let state = match (&record.holder, record.reserved_for_waiter) {
            _ if row.unreadable.is_some() => "unreadable",
            (Some(holder), _) if holder.parked => "parked",
            (Some(_), _) => "running",
            (None, true) => "reserved",
            (None, false) if !record.interrupted.is_empty() => "interrupted",
            (None, false) => "free",
        };
        let running = record.in_progress.as_ref();
        table.row(vec![
            row.release.clone(),
            state.to_owned(),
            record
                .holder
                .as_ref()
                .map_or_else(|| "-".into(), |h| h.replica.clone()),
            running.map_or_else(|| "-".into(), |p| cell(&p.event_id, 40)),
            running
                .and_then(|p| p.last_step())
                .map_or_else(|| "-".into(), str::to_owned),
            match row.waiting.len() {
                0 => "-".to_owned(),
                n => format!(
                    "{n}: {}",
                    cell(
                        &row.waiting
                            .iter()
                            .map(|w| w.event_id.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        60
                    )
                ),
            },
        ]);
    }
    let consumer = &status.consumer;
    let mut text = if status.releases.is_empty() {
        "no release is busy and no event waits\n".to_owned()
    } else {
        table.render()
    };
    text.push_str(&format!(
        "\nconsumer {} on stream {}: {} pending, {} ack pending ({} redelivered), ack floor {}\n",
        consumer.name,
        consumer.stream,
        consumer.pending,
        consumer.ack_pending,
        consumer.redelivered,
        consumer.ack_floor
    ));
    text.push_str(&format!(
        "dead letters: {} ({} not replayed): helm-service dead-letters list\n",
        status.dead_letters, status.dead_letters_not_replayed
    ));
    if status.scan_truncated {
        text.push_str(&format!(
            "(only the first {} events after the ack floor were read: waiting lists are incomplete)\n",
            MAX_SCANNED_EVENTS
        ));
    }
    text
}
