//! The operator CLI: what a person (or a script) asks a running installation.
//!
//! - `helm-service dead-letters list|show|replay` (`dead_letters`, its pure decisions in
//!   `replay`): what the worker could not process, and sending it again once the cause is
//!   fixed.
//!
//! Every command reaches NATS through the flags of `run` (`NatsArgs`) and finds helm-service's
//! streams and buckets by `--state-prefix`, as the worker does (`nats::topology::StateNames`).
//! `-o json` prints one JSON document whose field names are stable (README, "Operating it");
//! the default is tables for people.

pub mod dead_letters;
pub mod replay;
pub mod table;

use anyhow::Context as _;
use async_nats::jetstream;
use clap::{Args, ValueEnum};
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
