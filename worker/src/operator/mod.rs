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
//! What they say about release records is decided in `release_view` (pure).
//!
//! Every command reaches NATS through the flags of `run` (`NatsArgs`) and finds helm-service's
//! streams and buckets by `--state-prefix`, as the worker does (`nats::topology::StateNames`).
//! `-o json` prints one JSON document whose field names are stable (README, "Operating it");
//! the default is tables for people.

pub mod dead_letters;
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

/// The messages of `stream` on `filter_subjects` (empty: all) from `start`, oldest first, as
/// (sequence, subject, payload), at most `limit` of them (the flag says whether more were
/// left). Read through an ordered consumer: no acks, nothing left behind (the server removes
/// it when idle), so reading never disturbs the workers' consumer.
pub async fn read_stream(
    stream: &stream::Stream,
    filter_subjects: Vec<String>,
    start: consumer::DeliverPolicy,
    limit: usize,
) -> anyhow::Result<(Vec<(u64, String, Bytes)>, bool)> {
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
        let mut messages = consumer.messages().await?;
        while let Some(message) = messages.next().await {
            let message = message?;
            let info = message.info()?;
            let (sequence, pending) = (info.stream_sequence, info.pending);
            read.push((
                sequence,
                message.subject.to_string(),
                message.payload.clone(),
            ));
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
