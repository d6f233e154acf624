//! `helm-service dead-letters list|show|replay`: what the worker could not process.
//!
//! A dead letter's id is its sequence in the dead-letter stream (`<prefix>-dlq`). A replay
//! sends the original event again under a new id that names the old one (`replay`); the
//! original comes from the record when it holds all of it, else from the source stream at the
//! sequence the record names (recognised by its SHA-256), so a payload larger than the
//! record's excerpt (64 KiB) is replayed whole while the Keptn stream still keeps it. What was
//! replayed is marked in the `<prefix>-dlq-replays` bucket, so a second replay is refused
//! unless forced.
//!
//! `list` reads the newest `--limit` letters only, starting where they begin (`read_newest`),
//! so a long stream is never held in memory. `show` hides the Helm values of an event
//! (`redact`) unless asked for them; a replay always sends the original.

use std::time::Duration;

use anyhow::{anyhow, Context as _};
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use futures::TryStreamExt;
use serde::Serialize;

use super::redact::shown_payload;
use super::replay::{next_replay, replay_event, Refusal, ReplayMark};
use super::table::{cell, Table};
use super::{print_json, read_newest, OperatorArgs, Output, READ_DEADLINE};
use crate::nats::publisher::{event_headers, Publisher};
use crate::nats::topology::{existing_bucket, existing_stream, open_bucket, StateNames};
use crate::pipeline::dead_letter::{DeadLetter, PAYLOAD_EXCERPT_BYTES};

/// How long one replay's publish may take, retries included.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(10);
/// Size limit of the replay marks' bucket (a mark is a few hundred bytes; marks also expire
/// with the dead letters, after the dead-letter stream's age limit).
const REPLAYS_MAX_BYTES: i64 = 16 * 1024 * 1024;

/// Settings of `helm-service dead-letters`.
#[derive(Debug, Args)]
pub struct DeadLettersArgs {
    #[command(flatten)]
    pub common: OperatorArgs,

    #[command(subcommand)]
    pub command: DeadLettersCommand,
}

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// List the newest dead letters, oldest first: id (the sequence in the dead-letter
    /// stream), reason, event id, when, replays, what was wrong.
    List {
        /// Only those of this reason (too-large, malformed, unaddressable, unhandled-type,
        /// invalid-data, exhausted).
        #[arg(long)]
        reason: Option<String>,
        /// List the newest N (0: all).
        #[arg(long, value_name = "N", default_value_t = DEFAULT_LIST_LIMIT)]
        limit: usize,
    },
    /// Show dead letters in full: the record (with its payload) and its replays. The Helm
    /// values of an event (`data.configurationChange.values`) show as "<redacted>".
    Show {
        /// Dead-letter ids, as `list` prints them.
        #[arg(required = true)]
        ids: Vec<u64>,
        /// Print the payload as it is, Helm values included: this reveals the secrets they
        /// hold (passwords, tokens) on the terminal.
        #[arg(long)]
        show_values: bool,
    },
    /// Send the original events of dead letters again, each under a new id whose `replayof`
    /// extension names the old one; for events that failed for a cause since fixed (e.g.
    /// exhausted while the cluster was unreachable). Exits non-zero if any was refused.
    Replay {
        /// Dead-letter ids, as `list` prints them.
        #[arg(required = true)]
        ids: Vec<u64>,
        /// Replay letters that were replayed before too.
        #[arg(long)]
        force: bool,
    },
}

/// Letters `list` prints unless told otherwise.
pub const DEFAULT_LIST_LIMIT: usize = 100;

/// What `list` prints (`-o json`).
#[derive(Debug, Serialize)]
pub struct Listing {
    /// The newest letters (of `--reason`), oldest first.
    pub letters: Vec<LetterSummary>,
    /// How many letters (of `--reason`) there are.
    pub total: u64,
    /// How many older ones are not listed (`--limit`).
    pub omitted: u64,
}

/// One dead letter as `list` prints it.
#[derive(Debug, Serialize)]
pub struct LetterSummary {
    /// Sequence in the dead-letter stream: what `show` and `replay` take.
    pub id: u64,
    pub reason: String,
    pub detail: String,
    pub event_id: Option<String>,
    /// Subject of the original message.
    pub subject: String,
    pub received_at: Option<DateTime<Utc>>,
    pub delivered: Option<i64>,
    pub payload_bytes: Option<usize>,
    /// How often it was replayed (0: never).
    pub replays: u32,
    /// The id of the event its last replay sent.
    pub last_replay_event_id: Option<String>,
}

/// One dead letter as `show` prints it (`-o json`: an array of these).
#[derive(Debug, Serialize)]
pub struct LetterDetail {
    pub id: u64,
    /// The record as the worker wrote it (`pipeline::dead_letter::DeadLetter`), its payload
    /// with the Helm values hidden unless `--show-values`.
    pub record: DeadLetter,
    /// Whether anything of `record.payload` is hidden.
    pub payload_redacted: bool,
    /// What is hidden, for the text output.
    #[serde(skip)]
    pub redaction: Option<String>,
    /// Its replays, if any.
    pub replay: Option<ReplayMark>,
}

impl LetterDetail {
    /// Letter `id` as shown: its payload redacted unless `show_values`.
    fn of(id: u64, mut record: DeadLetter, replay: Option<ReplayMark>, show_values: bool) -> Self {
        let mut redaction = None;
        if !show_values {
            let shown = shown_payload(&record.payload);
            redaction = shown.note();
            if shown.is_redacted() {
                record.payload = shown.text().to_owned();
            }
        }
        LetterDetail {
            id,
            record,
            payload_redacted: redaction.is_some(),
            redaction,
            replay,
        }
    }
}

/// What `replay` did with one dead letter (`-o json`: an array of these).
#[derive(Debug, Serialize)]
pub struct ReplayResult {
    pub id: u64,
    pub replayed: bool,
    /// The id of the original event.
    pub event_id: Option<String>,
    /// The id of the event sent, when replayed.
    pub replay_event_id: Option<String>,
    /// Which replay of the letter this was (1 for the first).
    pub replay: Option<u32>,
    /// Why it was not replayed.
    pub refused: Option<String>,
}

pub async fn run(args: DeadLettersArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let js = common.jetstream("dead-letters").await?;
    let letters = Letters::open(js, common.names()).await?;
    match args.command {
        DeadLettersCommand::List { reason, limit } => {
            let listed = letters.list(reason.as_deref(), limit).await?;
            match common.output {
                Output::Json => print_json(&listed),
                Output::Table => {
                    print!("{}", list_table(&listed));
                    Ok(())
                }
            }
        }
        DeadLettersCommand::Show { ids, show_values } => {
            let mut shown = Vec::new();
            for id in ids {
                let record = letters.get(id).await?;
                let replay = letters.mark(id).await?.map(|(mark, _)| mark);
                shown.push(LetterDetail::of(id, record, replay, show_values));
            }
            match common.output {
                Output::Json => print_json(&shown),
                Output::Table => {
                    for detail in &shown {
                        print!("{}", show_text(detail));
                    }
                    Ok(())
                }
            }
        }
        DeadLettersCommand::Replay { ids, force } => {
            let mut results = Vec::new();
            for id in ids {
                // One letter's failure (unknown id, NATS away) is reported beside the others'
                // results, so the letters already replayed are not left unaccounted for.
                results.push(match letters.replay(id, force).await {
                    Ok(result) => result,
                    Err(err) => ReplayResult {
                        id,
                        replayed: false,
                        event_id: None,
                        replay_event_id: None,
                        replay: None,
                        refused: Some(format!("{err:#}")),
                    },
                });
            }
            match common.output {
                Output::Json => print_json(&results)?,
                Output::Table => {
                    for result in &results {
                        match (&result.replay_event_id, &result.refused) {
                            (Some(new_id), _) => println!(
                                "dead letter {}: event {} replayed as event {new_id} (replay {})",
                                result.id,
                                result.event_id.as_deref().unwrap_or("?"),
                                result.replay.unwrap_or_default()
                            ),
                            (None, refused) => println!(
                                "dead letter {}: not replayed: {}",
                                result.id,
                                refused.as_deref().unwrap_or("")
                            ),
                        }
                    }
                }
            }
            let refused = results.iter().filter(|r| !r.replayed).count();
            anyhow::ensure!(refused == 0, "{refused} dead letter(s) not replayed");
            Ok(())
        }
    }
}

/// The dead-letter stream and the replay marks of one installation.
struct Letters {
    js: jetstream::Context,
    stream: stream::Stream,
    stream_name: String,
    subject_prefix: String,
    replays_bucket: String,
}

impl Letters {
    async fn open(js: jetstream::Context, names: StateNames<'_>) -> anyhow::Result<Self> {
        let name = names.dead_letter_stream();
        let stream = existing_stream(&js, &name).await?.with_context(|| {
            format!(
                "no dead-letter stream {name}: has a worker with --state-prefix {} run on this \
                 NATS account?",
                names.0
            )
        })?;
        Ok(Letters {
            js,
            stream,
            stream_name: name,
            subject_prefix: names.dead_letter_subject_prefix(),
            replays_bucket: names.replays_bucket(),
        })
    }

    /// The newest `limit` records (of `reason`; 0: all), oldest first, with their replays.
    async fn list(&self, reason: Option<&str>, limit: usize) -> anyhow::Result<Listing> {
        let filter_subject = match reason {
            Some(reason) => format!("{}.{reason}", self.subject_prefix),
            None => format!("{}.>", self.subject_prefix),
        };
        let (records, total) = read_newest(&self.stream, vec![filter_subject], limit)
            .await
            .context("reading the dead letters")?;
        let bucket = self.marks_bucket().await?;
        let replayed = match &bucket {
            Some(bucket) => replayed_letters(bucket).await?,
            None => Vec::new(),
        };
        let mut letters = Vec::with_capacity(records.len());
        for (id, subject, payload) in records {
            // Only the listed letters' marks are read.
            let mark = match &bucket {
                Some(bucket) if replayed.binary_search(&id).is_ok() => {
                    read_mark(bucket, id).await?.map(|(mark, _)| mark)
                }
                _ => None,
            };
            letters.push(summary(
                id,
                &subject,
                &payload,
                &self.subject_prefix,
                mark.as_ref(),
            ));
        }
        Ok(Listing {
            omitted: total.saturating_sub(letters.len() as u64),
            total,
            letters,
        })
    }

    /// The record `id`.
    async fn get(&self, id: u64) -> anyhow::Result<DeadLetter> {
        let message = self
            .stream
            .get_raw_message(id)
            .await
            .with_context(|| format!("no dead letter {id} in stream {}", self.stream_name))?;
        anyhow::ensure!(
            message
                .subject
                .starts_with(&format!("{}.", self.subject_prefix)),
            "message {id} of stream {} is not a dead letter (subject {})",
            self.stream_name,
            message.subject
        );
        serde_json::from_slice(&message.payload)
            .with_context(|| format!("dead letter {id} is unreadable"))
    }

    /// The replay marks bucket, when it exists (nothing was ever replayed otherwise).
    async fn marks_bucket(&self) -> anyhow::Result<Option<kv::Store>> {
        Ok(existing_bucket(&self.js, &self.replays_bucket).await?)
    }

    /// The mark of letter `id` and its revision, if it was replayed.
    async fn mark(&self, id: u64) -> anyhow::Result<Option<(ReplayMark, u64)>> {
        let Some(bucket) = self.marks_bucket().await? else {
            return Ok(None);
        };
        read_mark(&bucket, id).await
    }

    /// Replays letter `id`: refusals are results, trouble reaching NATS is an error.
    async fn replay(&self, id: u64, force: bool) -> anyhow::Result<ReplayResult> {
        let record = self.get(id).await?;
        let refused = |refusal: Refusal| ReplayResult {
            id,
            replayed: false,
            event_id: record.event_id.clone(),
            replay_event_id: None,
            replay: None,
            refused: Some(refusal.to_string()),
        };
        let bucket = self.open_marks_bucket().await?;
        let mark = read_mark(&bucket, id).await?;
        let number = match next_replay(mark.as_ref().map(|(mark, _)| mark), force) {
            Ok(number) => number,
            Err(refusal) => return Ok(refused(refusal)),
        };
        let payload = match self.original_payload(&record).await {
            Ok(payload) => payload,
            Err(refusal) => return Ok(refused(refusal)),
        };
        let event = match replay_event(&record.subject, &payload, number) {
            Ok(event) => event,
            Err(refusal) => return Ok(refused(refusal)),
        };
        // Published before it is marked: a replay interrupted in between is repeated under
        // the same id, which the duplicate window and the release record drop.
        Publisher::new(self.js.clone(), PUBLISH_DEADLINE)
            .publish(
                &record.subject,
                event.id(),
                event_headers(&event),
                Bytes::from(event.encode()),
            )
            .await
            .with_context(|| format!("replaying dead letter {id}"))?;
        let marked = ReplayMark::after(
            mark.as_ref().map(|(mark, _)| mark),
            event.id().to_owned(),
            Utc::now(),
        );
        let value = Bytes::from(serde_json::to_vec(&marked).context("encoding the mark")?);
        let key = id.to_string();
        let written = match &mark {
            None => bucket
                .create(&key, value)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Some((_, revision)) => bucket
                .update(&key, value, *revision)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        written.map_err(|err| {
            anyhow!(
                "dead letter {id} was replayed as event {} but could not be marked (another \
                 replay of it at the same time?): {err}",
                event.id()
            )
        })?;
        Ok(ReplayResult {
            id,
            replayed: true,
            event_id: record.event_id.clone(),
            replay_event_id: Some(event.id().to_owned()),
            replay: Some(number),
            refused: None,
        })
    }

    /// The whole original payload: from the record, else from the source stream.
    async fn original_payload(&self, record: &DeadLetter) -> Result<Vec<u8>, Refusal> {
        if let Some(whole) = record.whole_payload() {
            return Ok(whole.to_vec());
        }
        let gone = |why: String| Refusal::PayloadGone {
            excerpt: PAYLOAD_EXCERPT_BYTES.min(record.payload_bytes),
            bytes: record.payload_bytes,
            stream: record.stream.clone(),
            sequence: record.stream_sequence,
            why,
        };
        let source = self
            .js
            .get_stream(&record.stream)
            .await
            .map_err(|err| gone(err.to_string()))?;
        let message = source
            .get_raw_message(record.stream_sequence)
            .await
            .map_err(|err| gone(err.to_string()))?;
        if record.is_payload(&message.payload) {
            Ok(message.payload.to_vec())
        } else {
            Err(gone("the message there now is another one".into()))
        }
    }

    /// The marks bucket, created with the first replay: its entries live as long as the dead
    /// letters (the dead-letter stream's age limit), on as many servers.
    async fn open_marks_bucket(&self) -> anyhow::Result<kv::Store> {
        if let Some(bucket) = self.marks_bucket().await? {
            return Ok(bucket);
        }
        let dead_letters = &self.stream.cached_info().config;
        let config = kv::Config {
            bucket: self.replays_bucket.clone(),
            description: "helm-service: dead letters replayed, by their sequence".into(),
            history: 1,
            max_age: dead_letters.max_age,
            max_bytes: REPLAYS_MAX_BYTES,
            num_replicas: dead_letters.num_replicas.max(1),
            storage: stream::StorageType::File,
            ..Default::default()
        };
        open_bucket(&self.js, config)
            .await
            .with_context(|| format!("creating the bucket {}", self.replays_bucket))
    }
}

/// The ids of the letters with a replay mark (the bucket's keys, without reading the marks),
/// sorted.
pub async fn replayed_letters(bucket: &kv::Store) -> anyhow::Result<Vec<u64>> {
    let keys = async {
        let keys: Vec<String> = bucket.keys().await?.try_collect().await?;
        Ok::<_, async_nats::Error>(keys)
    };
    let name = &bucket.name;
    let keys = tokio::time::timeout(READ_DEADLINE, keys)
        .await
        .map_err(|_| anyhow!("reading the bucket {name} took more than {READ_DEADLINE:?}"))?
        .map_err(|err| anyhow!("reading the bucket {name}: {err}"))?;
    let mut ids: Vec<u64> = keys.iter().filter_map(|key| key.parse().ok()).collect();
    ids.sort_unstable();
    Ok(ids)
}

async fn read_mark(bucket: &kv::Store, id: u64) -> anyhow::Result<Option<(ReplayMark, u64)>> {
    let entry = bucket
        .entry(id.to_string())
        .await
        .with_context(|| format!("reading the replay mark of dead letter {id}"))?;
    let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
        return Ok(None);
    };
    let mark = serde_json::from_slice(&entry.value)
        .with_context(|| format!("the replay mark of dead letter {id} is unreadable"))?;
    Ok(Some((mark, entry.revision)))
}

/// A record as listed; one that is not a dead-letter record still shows, with its reason
/// from its subject.
fn summary(
    id: u64,
    subject: &str,
    payload: &[u8],
    subject_prefix: &str,
    mark: Option<&ReplayMark>,
) -> LetterSummary {
    let (replays, last_replay_event_id) = mark.map_or((0, None), |mark| {
        (mark.replays, Some(mark.last_event_id().to_owned()))
    });
    match serde_json::from_slice::<DeadLetter>(payload) {
        Ok(letter) => LetterSummary {
            id,
            reason: letter.reason,
            detail: letter.detail,
            event_id: letter.event_id,
            subject: letter.subject,
            received_at: Some(letter.received_at),
            delivered: Some(letter.delivered),
            payload_bytes: Some(letter.payload_bytes),
            replays,
            last_replay_event_id,
        },
        Err(err) => LetterSummary {
            id,
            reason: subject
                .strip_prefix(subject_prefix)
                .map(|r| r.trim_start_matches('.').to_owned())
                .unwrap_or_default(),
            detail: format!("unreadable record: {err}"),
            event_id: None,
            subject: String::new(),
            received_at: None,
            delivered: None,
            payload_bytes: None,
            replays,
            last_replay_event_id,
        },
    }
}

fn list_table(listed: &Listing) -> String {
    let mut table = Table::new(["ID", "REASON", "EVENT", "RECEIVED", "REPLAYS", "DETAIL"]);
    for letter in &listed.letters {
        table.row(vec![
            letter.id.to_string(),
            letter.reason.clone(),
            letter.event_id.clone().unwrap_or_else(|| "-".into()),
            letter.received_at.map_or_else(
                || "-".into(),
                |at| at.format("%Y-%m-%d %H:%M:%S").to_string(),
            ),
            letter.replays.to_string(),
            cell(&letter.detail, 100),
        ]);
    }
    let mut text = table.render();
    if listed.omitted > 0 {
        text.push_str(&format!(
            "showing the newest {} of {}; use --limit 0 for all\n",
            listed.letters.len(),
            listed.total
        ));
    }
    text
}

fn show_text(detail: &LetterDetail) -> String {
    let record = &detail.record;
    let mut text = format!(
        "dead letter {}\n  reason:     {}\n  detail:     {}\n  event:      {}\n  subject:    {}\n  \
         source:     {} sequence {}\n  delivered:  {}\n  received:   {}\n  payload:    {} bytes{}, sha256 {}\n",
        detail.id,
        record.reason,
        record.detail,
        record.event_id.as_deref().unwrap_or("-"),
        record.subject,
        record.stream,
        record.stream_sequence,
        record.delivered,
        record.received_at.to_rfc3339(),
        record.payload_bytes,
        if record.payload_truncated { " (the record keeps the first 64 KiB)" } else { "" },
        record.payload_sha256,
    );
    match &detail.replay {
        Some(mark) => text.push_str(&format!(
            "  replays:    {}, last as event {} at {}\n",
            mark.replays,
            mark.last_event_id(),
            mark.last_replayed_at.to_rfc3339()
        )),
        None => text.push_str("  replays:    0\n"),
    }
    if let Some(redaction) = &detail.redaction {
        text.push_str(&format!("  redacted:   {redaction}\n"));
    }
    text.push_str(&format!("{}\n\n", printable(&record.payload)));
    text
}

/// `text` with control characters other than line breaks and tabs escaped: a payload is
/// whatever a sender put there, and an escape sequence must not reach the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\t' => c.to_string(),
            c if c.is_control() => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::dead_letter::Origin;
    use crate::pipeline::intake::DeadLetterReason;

    fn letter(payload: &[u8]) -> DeadLetter {
        let origin = Origin {
            subject: "sh.keptn.event.deployment.triggered",
            stream: "keptn",
            stream_sequence: 7,
            delivered: 21,
        };
        DeadLetter::new(
            DeadLetterReason::Exhausted,
            "gave up after 21 deliveries".into(),
            &origin,
            payload,
            Some("e1".into()),
        )
    }

    #[test]
    fn listed_letters_carry_their_replays_and_unreadable_records_still_show() {
        let record = serde_json::to_vec(&letter(b"{}")).unwrap();
        let mark = ReplayMark::after(None, "r1".into(), Utc::now());
        let listed = summary(3, "hs.dlq.exhausted", &record, "hs.dlq", Some(&mark));
        assert_eq!((listed.id, listed.reason.as_str()), (3, "exhausted"));
        assert_eq!(listed.event_id.as_deref(), Some("e1"));
        assert_eq!(
            (listed.replays, listed.last_replay_event_id.as_deref()),
            (1, Some("r1"))
        );
        let odd = summary(4, "hs.dlq.malformed", b"not a record", "hs.dlq", None);
        assert_eq!(odd.reason, "malformed");
        assert!(
            odd.detail.starts_with("unreadable record"),
            "{}",
            odd.detail
        );
        let mut listing = Listing {
            letters: vec![listed, odd],
            total: 2,
            omitted: 0,
        };
        let table = list_table(&listing);
        assert!(table.starts_with("ID  REASON"), "{table}");
        assert!(table.contains("e1"), "{table}");
        assert!(!table.contains("showing"), "all listed: {table}");
        listing.total = 2345;
        listing.omitted = 2343;
        let table = list_table(&listing);
        assert!(
            table.ends_with("showing the newest 2 of 2345; use --limit 0 for all\n"),
            "{table}"
        );
    }

    #[test]
    fn a_shown_letter_hides_its_values_unless_asked_and_keeps_the_original_digest() {
        let payload = br#"{"id":"e1","data":{"configurationChange":{"values":{"db":{"password":"hunter2"}}}}}"#;
        let record = letter(payload);
        let hidden = LetterDetail::of(3, record.clone(), None, false);
        assert!(hidden.payload_redacted);
        assert!(!hidden.record.payload.contains("hunter2"));
        assert!(hidden.record.payload.contains(r#""password":"<redacted>""#));
        assert_eq!(hidden.record.payload_sha256, record.payload_sha256);
        let text = show_text(&hidden);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("redacted:") && text.contains("--show-values"),
            "{text}"
        );
        let json = serde_json::to_value(&hidden).unwrap();
        assert_eq!(json["payload_redacted"], true);
        assert!(json.get("redaction").is_none(), "{json}");
        assert!(!json.to_string().contains("hunter2"));

        let shown = LetterDetail::of(3, record.clone(), None, true);
        assert!(!shown.payload_redacted);
        assert_eq!(shown.record, record);
        assert!(show_text(&shown).contains("hunter2"));
        // Nothing to hide: as it is, no note.
        let plain = LetterDetail::of(4, letter(b"not an event"), None, false);
        assert!(!plain.payload_redacted);
        assert!(!show_text(&plain).contains("redacted:"));
    }

    #[test]
    fn a_shown_payload_cannot_drive_the_terminal() {
        let detail = LetterDetail::of(3, letter(b"{\"id\":\"e1\x1b[2J\"}\nnext line"), None, false);
        let text = show_text(&detail);
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(text.contains("\\u{1b}[2J"), "{text}");
        assert!(text.contains("\nnext line"), "line breaks stay");
        assert!(text.contains("replays:    0"));
    }
}
