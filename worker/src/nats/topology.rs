//! The JetStream objects the worker binds to at start-up.
//!
//! The Keptn stream is shared with the rest of the control plane: it is created only
//! when absent and never reconfigured. The durable consumer is ours: created at
//! "new messages only" (a fresh installation must not replay last month's events and
//! redeploy them), and its ack wait and filter are brought in line with the flags on
//! every start so an operator's change takes effect on rollout.
//!
//! Nothing the worker creates grows without bound ([`StorageLimits`]): the Keptn stream
//! gets limits when the worker creates it; the worker's own streams and buckets (dead
//! letters, release records, inventory, charts) get them at creation and are brought in
//! line with the flags on every start ([`enforce_limits`]).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use thiserror::Error;
use tracing::{info, warn};

use crate::pipeline::intake::TaskKind;

#[derive(Debug, Error)]
pub enum TopologyError {
    #[error("cannot bind the stream {stream:?}: {reason}")]
    Stream { stream: String, reason: String },
    #[error("cannot bind the durable consumer {consumer:?} on stream {stream:?}: {reason}")]
    Consumer {
        stream: String,
        consumer: String,
        reason: String,
    },
    #[error("cannot open the key-value bucket {bucket:?}: {reason}")]
    Bucket { bucket: String, reason: String },
}

/// The error's text, with what to do when the server lacks the storage a size limit reserves
/// (JetStream reserves each stream's `max_bytes` up front, and by default offers 75% of the
/// disk space that was free when it started).
fn reason(err: impl std::fmt::Display) -> String {
    let text = err.to_string();
    if text.contains("10047") || text.contains("insufficient storage") {
        format!(
            "{text}: the NATS server has less JetStream storage left than the size limits \
             helm-service reserves (--keptn-stream-max-bytes, --dead-letter-max-bytes, \
             --release-records-max-bytes, --inventory-max-bytes, --chart-bucket-max-bytes): \
             lower them, or give the server more (jetstream max_file_store)"
        )
    } else {
        text
    }
}

/// Whether a JetStream error says the stream (or bucket) does not exist.
fn is_not_found(err: &jetstream::context::GetStreamError) -> bool {
    matches!(
        err.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// The stream `name` when it exists, as it is (for reading: nothing is created or changed).
/// Only "not found" is `None`: a timeout or a refusal is an error, never shown to an
/// operator as "nothing there".
pub async fn existing_stream(
    js: &jetstream::Context,
    name: &str,
) -> Result<Option<jetstream::stream::Stream>, TopologyError> {
    match js.get_stream(name).await {
        Ok(stream) => Ok(Some(stream)),
        Err(err) if is_not_found(&err) => Ok(None),
        Err(err) => Err(TopologyError::Stream {
            stream: name.to_owned(),
            reason: err.to_string(),
        }),
    }
}

/// The key-value bucket `name` when it exists, as it is; as [`existing_stream`], only "not
/// found" is `None` (the client's own bucket lookup folds every failure into one kind).
pub async fn existing_bucket(
    js: &jetstream::Context,
    name: &str,
) -> Result<Option<kv::Store>, TopologyError> {
    let unavailable = |err: &dyn std::fmt::Display| TopologyError::Bucket {
        bucket: name.to_owned(),
        reason: err.to_string(),
    };
    if existing_stream(js, &format!("KV_{name}"))
        .await
        .map_err(|err| unavailable(&err))?
        .is_none()
    {
        return Ok(None);
    }
    js.get_key_value(name)
        .await
        .map(Some)
        .map_err(|err| unavailable(&err))
}

/// Age (`ZERO`: none) and size limit of one stream or bucket, and on how many servers of a
/// JetStream cluster it is kept (`--replicas`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub max_age: Duration,
    pub max_bytes: i64,
    /// JetStream replicas: 1 on a single server, 3 (or 5) on a cluster to survive losing
    /// servers.
    pub replicas: usize,
}

impl Limit {
    /// One replica; see [`with_replicas`](Self::with_replicas).
    pub fn new(max_age: Duration, max_bytes: u64) -> Self {
        Limit {
            max_age,
            max_bytes: i64::try_from(max_bytes).unwrap_or(i64::MAX),
            replicas: 1,
        }
    }

    pub fn with_replicas(self, replicas: usize) -> Self {
        Limit { replicas, ..self }
    }
}

/// The limits of everything the worker creates (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageLimits {
    /// Only when the worker creates the Keptn stream.
    pub keptn_stream: Limit,
    pub dead_letters: Limit,
    /// Its age limit is how long a release's record is kept after its last change.
    pub release_records: Limit,
    pub inventory: Limit,
    pub chart_bucket: Limit,
}

/// Names and settings of what the worker binds.
#[derive(Debug, Clone)]
pub struct TopologyConfig {
    pub stream: String,
    pub consumer: String,
    pub ack_wait: Duration,
    /// Prefix of our own buckets and streams.
    pub state_prefix: String,
    pub limits: StorageLimits,
}

impl TopologyConfig {
    pub fn names(&self) -> StateNames<'_> {
        StateNames(&self.state_prefix)
    }
    /// Name of the key-value bucket bound as [`Topology::release_records`].
    pub fn release_records_bucket(&self) -> String {
        self.names().release_records_bucket()
    }
    pub fn dead_letter_stream(&self) -> String {
        self.names().dead_letter_stream()
    }
    pub fn dead_letter_subject_prefix(&self) -> String {
        self.names().dead_letter_subject_prefix()
    }
}

/// Default of `--state-prefix`.
pub const DEFAULT_STATE_PREFIX: &str = "helm-service";
/// Default of `--stream`.
pub const DEFAULT_KEPTN_STREAM: &str = "keptn";
/// Default of `--consumer`.
pub const DEFAULT_CONSUMER: &str = "helm-service";

/// The names of the streams and buckets helm-service owns, from `--state-prefix`: what the
/// worker binds and the operator commands read.
#[derive(Debug, Clone, Copy)]
pub struct StateNames<'a>(pub &'a str);

impl StateNames<'_> {
    /// The release records (its wire name, `<prefix>-releases`, stays as deployed).
    pub fn release_records_bucket(self) -> String {
        format!("{}-releases", self.0)
    }
    /// What is deployed, per service and stage (`deploy::inventory`).
    pub fn inventory_bucket(self) -> String {
        format!("{}-inventory", self.0)
    }
    pub fn dead_letter_stream(self) -> String {
        format!("{}-dlq", self.0)
    }
    /// Subjects of dead-letter records: `<prefix>.dlq.<reason>`.
    pub fn dead_letter_subject_prefix(self) -> String {
        format!("{}.dlq", self.0)
    }
    /// Which dead letters were replayed (`helm-service dead-letters replay`), keyed by their
    /// sequence in the dead-letter stream.
    pub fn replays_bucket(self) -> String {
        format!("{}-dlq-replays", self.0)
    }
}

/// Everything bound.
pub struct Topology {
    pub consumer: consumer::Consumer<consumer::pull::Config>,
    pub release_records: kv::Store,
}

/// The consumer's filter: exactly the handled event types.
pub fn handled_subjects() -> Vec<String> {
    TaskKind::ALL
        .iter()
        .map(|kind| kind.event_type().to_owned())
        .collect()
}

pub async fn bind(
    js: &jetstream::Context,
    config: &TopologyConfig,
) -> Result<Topology, TopologyError> {
    let keptn_limit = config.limits.keptn_stream;
    let keptn = js
        .get_or_create_stream(stream::Config {
            name: config.stream.clone(),
            subjects: vec!["sh.keptn.>".into()],
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            max_age: keptn_limit.max_age,
            max_bytes: keptn_limit.max_bytes,
            num_replicas: keptn_limit.replicas,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        })
        .await
        .map_err(|err| TopologyError::Stream {
            stream: config.stream.clone(),
            reason: reason(err),
        })?;

    // Re-sent replies rely on the stream's duplicate window to be dropped; a window
    // shorter than a redelivery takes lets a crash produce a second copy.
    let window = keptn.cached_info().config.duplicate_window;
    if window < config.ack_wait * 2 {
        warn!(
            stream = %config.stream,
            duplicate_window = ?window,
            ack_wait = ?config.ack_wait,
            "the stream's duplicate window is shorter than two ack waits: a reply re-sent after a crash may appear twice"
        );
    }
    let consumer = bind_consumer(&keptn, config).await?;

    let dlq = config.dead_letter_stream();
    let dlq_limit = config.limits.dead_letters;
    let stream_error = |stream: &str| {
        let stream = stream.to_owned();
        move |reason: String| TopologyError::Stream { stream, reason }
    };
    js.get_or_create_stream(stream::Config {
        name: dlq.clone(),
        description: Some(
            "helm-service dead letters: messages it could not process, with the reason".into(),
        ),
        subjects: vec![format!("{}.>", config.dead_letter_subject_prefix())],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        max_age: dlq_limit.max_age,
        max_bytes: dlq_limit.max_bytes,
        num_replicas: dlq_limit.replicas,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    })
    .await
    .map_err(|err| stream_error(&dlq)(reason(err)))?;
    enforce_limits(js, &dlq, dlq_limit)
        .await
        .map_err(stream_error(&dlq))?;

    let limit = config.limits.release_records;
    let mut bucket = crate::pipeline::lease::ReleaseLeases::bucket_config(
        config.release_records_bucket(),
        limit.max_age,
    );
    bucket.max_bytes = limit.max_bytes;
    bucket.num_replicas = limit.replicas;
    let release_records = open_bucket(js, bucket).await?;
    enforce_limits(js, &release_records.stream_name, limit)
        .await
        .map_err(|reason| TopologyError::Bucket {
            bucket: release_records.name.clone(),
            reason,
        })?;
    Ok(Topology {
        consumer,
        release_records,
    })
}

async fn bind_consumer(
    keptn: &stream::Stream,
    config: &TopologyConfig,
) -> Result<consumer::Consumer<consumer::pull::Config>, TopologyError> {
    let err = |reason: String| TopologyError::Consumer {
        stream: config.stream.clone(),
        consumer: config.consumer.clone(),
        reason,
    };
    let wanted = consumer::pull::Config {
        durable_name: Some(config.consumer.clone()),
        description: Some(
            "helm-service: Keptn tasks to deploy, release, roll back, scale and delete".into(),
        ),
        deliver_policy: consumer::DeliverPolicy::New,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        // Redelivery is bounded by the worker itself (--max-deliveries), which then
        // answers the event; a server-side limit would drop it silently.
        max_deliver: -1,
        filter_subjects: handled_subjects(),
        max_ack_pending: 10_000,
        ..Default::default()
    };
    let existing = match keptn
        .get_consumer::<consumer::pull::Config>(&config.consumer)
        .await
    {
        Ok(existing) => existing,
        Err(_) => {
            info!(consumer = %config.consumer, "creating durable consumer at new messages");
            match keptn.create_consumer(wanted.clone()).await {
                Ok(created) => return ensure_filtered(created, &wanted).map_err(err),
                // Another replica may have created it meanwhile: bind that one.
                Err(create_err) => keptn
                    .get_consumer::<consumer::pull::Config>(&config.consumer)
                    .await
                    .map_err(|_| err(create_err.to_string()))?,
            }
        }
    };
    let current = &existing.cached_info().config;
    let wanted_filters = filters(&wanted.filter_subject, &wanted.filter_subjects);
    if current.ack_wait == wanted.ack_wait
        && filters(&current.filter_subject, &current.filter_subjects) == wanted_filters
    {
        return Ok(existing);
    }
    info!(consumer = %config.consumer, "updating consumer settings to match flags");
    // The deliver policy of an existing consumer cannot change; keep its own.
    let updated = consumer::pull::Config {
        deliver_policy: current.deliver_policy,
        ..wanted.clone()
    };
    let updated = keptn
        .update_consumer(updated)
        .await
        .map_err(|e| err(e.to_string()))?;
    ensure_filtered(updated, &wanted).map_err(err)
}

/// A consumer's filter subjects (the single and the multi-subject field), in a
/// comparable order.
fn filters(single: &str, many: &[String]) -> Vec<String> {
    let mut filters = many.to_vec();
    if !single.is_empty() {
        filters.push(single.to_owned());
    }
    filters.sort();
    filters
}

/// Servers older than 2.10 silently drop `filter_subjects` and would deliver every
/// Keptn event to us; refuse to run on such a consumer.
fn ensure_filtered(
    bound: consumer::Consumer<consumer::pull::Config>,
    wanted: &consumer::pull::Config,
) -> Result<consumer::Consumer<consumer::pull::Config>, String> {
    let bound_config = &bound.cached_info().config;
    if filters(&bound_config.filter_subject, &bound_config.filter_subjects)
        == filters(&wanted.filter_subject, &wanted.filter_subjects)
    {
        Ok(bound)
    } else {
        Err("the server did not keep the consumer's filter subjects: helm-service needs nats-server 2.10 or newer".into())
    }
}

/// Brings the age and size limits and the replicas of `stream` (one the worker owns, or the
/// stream behind one of its buckets) in line with `limit`, leaving the rest of its
/// configuration as it is. They are set when the worker creates it; this makes an operator's
/// later change of the flags take effect on the next start (JetStream moves a stream to more
/// or fewer replicas in place).
pub async fn enforce_limits(
    js: &jetstream::Context,
    stream: &str,
    limit: Limit,
) -> Result<(), String> {
    let bound = js
        .get_stream(stream)
        .await
        .map_err(|err| format!("reading stream {stream}: {err}"))?;
    // Fetched with the stream: no second request.
    let current = bound.cached_info().config.clone();
    if current.max_age == limit.max_age
        && current.max_bytes == limit.max_bytes
        && current.num_replicas.max(1) == limit.replicas
    {
        return Ok(());
    }
    info!(
        %stream,
        max_age = ?limit.max_age,
        max_bytes = limit.max_bytes,
        replicas = limit.replicas,
        "bringing the stream's limits and replicas in line with the flags"
    );
    js.update_stream(stream::Config {
        max_age: limit.max_age,
        max_bytes: limit.max_bytes,
        num_replicas: limit.replicas,
        ..current
    })
    .await
    .map(|_| ())
    .map_err(|err| format!("updating the limits of stream {stream}: {}", reason(err)))
}

/// Opens a KV bucket, creating it when absent (racing replicas may both try).
pub async fn open_bucket(
    js: &jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, TopologyError> {
    let bucket = config.bucket.clone();
    if let Ok(store) = js.get_key_value(&bucket).await {
        return Ok(store);
    }
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        // Another replica may have created it between our two calls.
        Err(create_err) => js
            .get_key_value(&bucket)
            .await
            .map_err(|_| TopologyError::Bucket {
                bucket: bucket.clone(),
                reason: reason(create_err),
            }),
    }
}
