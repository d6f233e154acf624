//! The operator CLI: what a person (or a script) asks a running installation.
//!
//! - `helm-service dead-letters list|show|replay` (`dead_letters`, its pure decisions in
//!   `replay`): what the worker could not process, and sending it again once the cause is
//!   fixed.
//!
//! - `helm-service status` (`status`): per release who holds it, the event in progress and
//!   its last step, the events waiting; the consumer's counts; the dead letters.
//! - `helm-service releases show` (`releases`): one service in one stage: its release record,
//!   its inventory entry, its Helm revisions.
//!
//! What they say about release records is decided in `release_view` (pure); what `show`
//! hides of a payload in `redact` (pure).
//!
//! Every command reaches NATS through the flags of `run` (`NatsArgs`) and finds helm-service's
//! streams and buckets by `--state-prefix`, as the worker does (`nats::topology::StateNames`).
//! `-o json` prints one JSON document whose field names are stable (README, "Operating it");
//! the default is tables for people.

pub mod dead_letters;
pub mod redact;
pub mod release_view;
pub mod releases;
pub mod replay;
pub mod status;
pub mod table;

use std::time::Duration;

use anyhow::{anyhow, Context as _};
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use futures::StreamExt;
use serde::Serialize;

use crate::nats::connect::NatsArgs;
use crate::nats::topology::{StateNames, DEFAULT_STATE_PREFIX};

/// How a command prints what it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Tables and lines for people.
    Table,
    /// One JSON document, field names stable (README, "Operating it").
    Json,
}

/// Flags every operator command takes.
#[derive(Debug, Clone, Args)]
pub struct OperatorArgs {
    #[command(flatten)]
    pub nats: NatsArgs,

    /// Prefix of helm-service's own buckets and streams: the `--state-prefix` of the workers.
    #[arg(long, env = "STATE_PREFIX", default_value = DEFAULT_STATE_PREFIX, global = true)]
    pub state_prefix: String,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

impl OperatorArgs {
    pub fn names(&self) -> StateNames<'_> {
        StateNames(&self.state_prefix)
    }

    /// One connection attempt over the seed list (the command reports and exits rather than
    /// wait), as `send` and `charts` make.
    pub async fn jetstream(&self, command: &str) -> anyhow::Result<jetstream::Context> {
        let client = self
            .nats
            .resolve()?
            .connect(&format!("helm-service {command}"))
            .await?;
        Ok(jetstream::new(client))
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("encoding the output as JSON")?;
    println!("{text}");
    Ok(())
}

/// How long reading a stream or bucket may take before a command gives up.
pub const READ_DEADLINE: Duration = Duration::from_secs(30);

/// A message read from a stream: (sequence, subject, payload).
pub type StreamMessage = (u64, String, Bytes);

/// The messages of `stream` on `filter_subjects` (empty: all) from `start`, oldest first, at
/// most `limit` of them (the flag says whether more were left). Read through an ordered
/// consumer: no acks, nothing left behind (the server removes it when idle), so reading never
/// disturbs the workers' consumer.
pub async fn read_stream(
    stream: &stream::Stream,
    filter_subjects: Vec<String>,
    start: consumer::DeliverPolicy,
    limit: usize,
) -> anyhow::Result<(Vec<StreamMessage>, bool)> {
    read_stream_skipping(stream, filter_subjects, start, 0, limit).await
}

/// [`read_stream`], passing over the first `skip` messages without keeping them.
async fn read_stream_skipping(
    stream: &stream::Stream,
    filter_subjects: Vec<String>,
    start: consumer::DeliverPolicy,
    skip: u64,
    limit: usize,
) -> anyhow::Result<(Vec<StreamMessage>, bool)> {
    let read = async {
        let mut consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subjects,
                deliver_policy: start,
                ..Default::default()
            })
            .await?;
        let mut read = Vec::new();
        if consumer.info().await?.num_pending == 0 {
            return Ok((read, false));
        }
        let mut skipped = 0;
        let mut messages = consumer.messages().await?;
        while let Some(message) = messages.next().await {
            let message = message?;
            let info = message.info()?;
            let (sequence, pending) = (info.stream_sequence, info.pending);
            if skipped < skip {
                skipped += 1;
            } else {
                read.push((
                    sequence,
                    message.subject.to_string(),
                    message.payload.clone(),
                ));
            }
            if pending == 0 {
                return Ok((read, false));
            }
            if read.len() >= limit {
                return Ok((read, true));
            }
        }
        Ok::<_, async_nats::Error>((read, false))
    };
    tokio::time::timeout(READ_DEADLINE, read)
        .await
        .map_err(|_| anyhow!("took more than {READ_DEADLINE:?}"))?
        .map_err(|err| anyhow!("{err}"))
}

/// The newest `limit` messages of `stream` on `filter_subjects` (0: all), oldest first, and
/// how many there are in all. Memory holds `limit` messages however long the stream: the
/// read starts where the newest `limit` begin, found by counting ([`newest_start`]), not by
/// reading everything and keeping the end.
pub async fn read_newest(
    stream: &stream::Stream,
    filter_subjects: Vec<String>,
    limit: usize,
) -> anyhow::Result<(Vec<StreamMessage>, u64)> {
    let total = pending_from(stream, &filter_subjects, consumer::DeliverPolicy::All).await?;
    if total == 0 {
        return Ok((Vec::new(), 0));
    }
    let wanted = limit as u64;
    if limit == 0 || total <= wanted {
        let (read, _) = read_stream(
            stream,
            filter_subjects,
            consumer::DeliverPolicy::All,
            usize::MAX,
        )
        .await?;
        let total = total.max(read.len() as u64);
        return Ok((read, total));
    }
    let state = stream
        .get_info()
        .await
        .map_err(|err| anyhow!("reading the stream's state: {err}"))?
        .state;
    let mut start = first_probe(state.first_sequence, state.last_sequence, wanted);
    let mut probes = 0;
    let skip = loop {
        let pending = pending_from(
            stream,
            &filter_subjects,
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
        )
        .await?;
        match newest_start(state.first_sequence, wanted, start, pending, probes) {
            NewestStart::Read { skip } => break skip,
            NewestStart::Probe(earlier) => start = earlier,
        }
        probes += 1;
    };
    let (read, _) = read_stream_skipping(
        stream,
        filter_subjects,
        consumer::DeliverPolicy::ByStartSequence {
            start_sequence: start,
        },
        skip,
        limit,
    )
    .await?;
    Ok((read, total))
}

/// How many messages on `filter_subjects` lie at and after `start`: the pending count of a
/// consumer created there, which reads nothing (deleted again at once; the server would remove
/// it when idle anyway).
async fn pending_from(
    stream: &stream::Stream,
    filter_subjects: &[String],
    start: consumer::DeliverPolicy,
) -> anyhow::Result<u64> {
    let count = async {
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                deliver_policy: start,
                filter_subjects: filter_subjects.to_vec(),
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(10),
                memory_storage: true,
                ..Default::default()
            })
            .await?;
        let info = consumer.cached_info();
        let (pending, name) = (info.num_pending, info.name.clone());
        // Best effort: the server removes it once inactive.
        let _ = stream.delete_consumer(&name).await;
        Ok::<_, async_nats::Error>(pending)
    };
    tokio::time::timeout(READ_DEADLINE, count)
        .await
        .map_err(|_| anyhow!("counting messages took more than {READ_DEADLINE:?}"))?
        .map_err(|err| anyhow!("counting messages: {err}"))
}

/// What to do after counting the messages at and after a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewestStart {
    /// Count again from this earlier sequence: too few lie after the last one.
    Probe(u64),
    /// Read from the sequence counted, passing over the first `skip` messages.
    Read { skip: u64 },
}

/// Where counting starts for the newest `limit` (at least 1) messages of a stream whose
/// sequences run from `first` to `last`: exactly where they begin when no sequence in between
/// is missing.
pub fn first_probe(first: u64, last: u64, limit: u64) -> u64 {
    last.saturating_sub(limit.saturating_sub(1)).max(first)
}

/// After counting `pending` messages at and after `start` (the `probes`-th recount before):
/// read when there are enough (passing over the extra ones) or nothing earlier is left, else
/// count again from earlier. Sequences have gaps (messages deleted or expired, or on subjects
/// not read), so the first step back is the shortfall, and each further one twice the one
/// before: few recounts however sparse the stream, at the price of passing over some messages.
pub fn newest_start(first: u64, limit: u64, start: u64, pending: u64, probes: u32) -> NewestStart {
    if pending >= limit || start <= first {
        return NewestStart::Read {
            skip: pending.saturating_sub(limit),
        };
    }
    let step = (limit - pending).saturating_mul(1u64 << probes.min(62));
    NewestStart::Probe(start.saturating_sub(step).max(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the search over a stream holding `present` (sorted sequences), as the server
    /// would count, and returns where reading starts and how many it passes over.
    fn search(present: &[u64], limit: u64) -> (u64, u64, u32) {
        let (first, last) = (present[0], *present.last().unwrap());
        let mut start = first_probe(first, last, limit);
        let mut probes = 0;
        loop {
            let pending = present.iter().filter(|&&s| s >= start).count() as u64;
            match newest_start(first, limit, start, pending, probes) {
                NewestStart::Read { skip } => return (start, skip, probes),
                NewestStart::Probe(earlier) => {
                    assert!(earlier < start, "moves back");
                    start = earlier;
                }
            }
            probes += 1;
        }
    }

    /// The sequences a search reads: those from its start, less the ones passed over, at most
    /// `limit`.
    fn read(present: &[u64], limit: u64) -> Vec<u64> {
        let (start, skip, _) = search(present, limit);
        present
            .iter()
            .copied()
            .filter(|&s| s >= start)
            .skip(skip as usize)
            .take(limit as usize)
            .collect()
    }

    #[test]
    fn without_gaps_one_count_finds_the_newest() {
        let present: Vec<u64> = (1..=2345).collect();
        assert_eq!(search(&present, 100), (2246, 0, 0));
        assert_eq!(read(&present, 100), (2246..=2345).collect::<Vec<_>>());
        // Expired from the front: sequences start later.
        let present: Vec<u64> = (500..=600).collect();
        assert_eq!(read(&present, 1), vec![600]);
    }

    #[test]
    fn with_gaps_the_newest_are_still_found() {
        // Every other message deleted: half as many per sequence.
        let present: Vec<u64> = (1..=1000).filter(|s| s % 2 == 0).collect();
        assert_eq!(
            read(&present, 10),
            (982..=1000).step_by(2).collect::<Vec<_>>()
        );
        // A hole just before the newest.
        let present: Vec<u64> = (1..=50).chain(900..=905).collect();
        assert_eq!(
            read(&present, 10),
            vec![47, 48, 49, 50, 900, 901, 902, 903, 904, 905]
        );
        // Sparse: a subject that is one message in a thousand.
        let present: Vec<u64> = (1..=100_000).filter(|s| s % 1000 == 0).collect();
        let (_, skip, probes) = search(&present, 5);
        assert!(probes <= 20, "{probes} recounts");
        assert!(skip < 100, "passes over {skip}");
        assert_eq!(
            read(&present, 5),
            vec![96_000, 97_000, 98_000, 99_000, 100_000]
        );
    }

    #[test]
    fn fewer_than_the_limit_reads_from_the_first() {
        let present = [3, 9, 12];
        assert_eq!(search(&present, 10).0, 3);
        assert_eq!(read(&present, 10), vec![3, 9, 12]);
    }
}
