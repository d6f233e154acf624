//! Processing one message, from intake to acknowledgement.
//!
//! The order of effects is what makes redelivery safe:
//! 1. the release is taken before anything is published or applied, and its record
//!    is read under it: a duplicate or redelivery of a completed event is acked
//!    without effects, an interrupted one continues where it stopped;
//! 2. `.started` is published, then recorded; steps are recorded as they complete;
//! 3. `.finished` is published, then the event is recorded completed as the release
//!    is handed back. Reply ids are derived from the triggered id and publishes carry
//!    them as `Nats-Msg-Id`, so whatever a crash between a publish and its record
//!    makes a redelivery send again is dropped by the stream's duplicate window;
//! 4. the message is acked last. Anything transient hands it back (nak) instead.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use contracts::envelope::KeptnEvent;
use contracts::reply::ReplyBuilder;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, info_span, warn, Instrument};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::dead_letter::{DeadLetter, DeadLetters, Origin};
use super::intake::{
    classify, DeadLetterReason, Intake, Task, TaskKind, MAX_ATTRIBUTE_BYTES, OWN_SOURCE,
};
use super::lease::{HeldLease, LeaseError, ReleaseLeases};
use super::pool::Place;
use crate::handler::{Decision, OtherLeases, Outcome, Registry, Steps, TaskError};
use crate::metrics::Metrics;
use crate::nats::publisher::{event_headers, Publisher};
use crate::progress;
use crate::telemetry::{self, traces};

/// Settings of message processing.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    pub stream: String,
    pub ack_wait: Duration,
    pub max_event_bytes: usize,
    pub max_deliveries: u32,
    /// Test hook: kill the process right after the step of this name is recorded.
    pub crash_after_step: Option<String>,
    /// Least time between two progress reports (`.status.changed`) of a task; `None`:
    /// none are sent (`progress.rs`).
    pub progress_interval: Option<Duration>,
}

/// Shared by all in-flight tasks of a replica.
pub struct Processor {
    pub config: ProcessorConfig,
    pub leases: ReleaseLeases,
    pub publisher: Publisher,
    pub dead_letters: DeadLetters,
    pub registry: Registry,
    pub metrics: Metrics,
}

/// How a message ends on this replica.
#[derive(Debug)]
enum Disposal {
    Ack,
    /// Hand back for redelivery after the delay.
    Nak {
        delay: Duration,
        reason: &'static str,
    },
}

/// How the work under a release ended, which decides how the record is handed back.
enum Ending {
    /// Answered: the event is recorded completed.
    Completed,
    /// A twin was completed before: nothing changes.
    Duplicate,
}

/// The reason of a [`Retry`] after a caught panic; also its nak metric label.
const PANIC: &str = "panic";

/// A failure that hands the message back.
struct Retry {
    reason: &'static str,
    detail: String,
}

impl Retry {
    fn new(reason: &'static str, detail: impl ToString) -> Self {
        Retry {
            reason,
            detail: detail.to_string(),
        }
    }
}

impl Processor {
    /// Processes one message to its end. `hard_stop` fires when shutdown's grace
    /// period is over: the task stops where it is and the message is handed back.
    /// `place` is the message's place in the pool; its slot is lent out while the task
    /// waits for a busy release.
    pub async fn process(
        self: Arc<Self>,
        message: jetstream::Message,
        hard_stop: CancellationToken,
        place: Place,
    ) {
        let started = Instant::now();
        let subject = message.subject.to_string();
        let type_label = type_label(&subject);
        let (stream_sequence, delivered) = message
            .info()
            .map(|info| (info.stream_sequence, info.delivered))
            .unwrap_or((0, 1));
        self.metrics.record_received(type_label, delivered > 1);
        self.metrics.in_flight.inc();

        let span = info_span!("event", subject = %subject, seq = stream_sequence, delivered);
        if telemetry::exporting() {
            // One trace per event, continuing the sender's (architecture.md §8.3).
            if let Some(parent) = traces::event_parent(&message.payload) {
                let _ = span.set_parent(parent);
            }
        }
        let work = async {
            let origin = Origin {
                subject: &subject,
                stream: &self.config.stream,
                stream_sequence,
                delivered,
            };
            let disposed = self
                .catching_panics(self.dispose(&message.payload, &origin, &hard_stop, &place))
                .await;
            match disposed {
                Ok(disposal) => disposal,
                Err(retry) if retry.reason == PANIC && delivered > i64::from(self.config.max_deliveries) => {
                    self.give_up_after_panics(&retry, &origin, &message.payload).await
                }
                Err(retry) => {
                    warn!(reason = retry.reason, error = %retry.detail, "handing the event back for redelivery");
                    Disposal::Nak {
                        delay: if hard_stop.is_cancelled() {
                            Duration::ZERO
                        } else {
                            redelivery_delay(delivered)
                        },
                        reason: retry.reason,
                    }
                }
            }
        }
        .instrument(span.clone());
        // The keep-alive runs alongside the work in this same task (no spawn per
        // message) and ends with it.
        let disposal = tokio::select! {
            disposal = work => disposal,
            never = keep_alive(&message, self.config.ack_wait) => match never {},
        };

        let _entered = span.enter();
        let settled = match &disposal {
            Disposal::Ack => message.ack().await,
            Disposal::Nak { delay, reason } => {
                self.metrics.record_nak(reason);
                message.ack_with(AckKind::Nak(Some(*delay))).await
            }
        };
        if let Err(err) = settled {
            // The server redelivers after the ack wait; the release record makes that harmless.
            warn!(error = %err, ?disposal, "could not settle message");
        }
        self.metrics.in_flight.dec();
        self.metrics
            .record_event_duration(type_label, started.elapsed());
    }

    /// Runs `work`, turning a panic in it into a hand-back: a bug met by one message must
    /// not leave it unsettled (redelivered only after the ack wait, again and again), its
    /// release held until the lease TTL, or the in-flight gauge up.
    async fn catching_panics<T>(
        &self,
        work: impl Future<Output = Result<T, Retry>>,
    ) -> Result<T, Retry> {
        match AssertUnwindSafe(work).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => {
                self.metrics.task_panics.inc();
                let message = panic_message(panic.as_ref());
                error!(panic = %message, "the task panicked (a bug): handing its message back");
                Err(Retry::new(PANIC, format!("the task panicked: {message}")))
            }
        }
    }

    /// A message that made the worker panic on every delivery, outside a task's own give-up
    /// path (which answers the event): recorded as a dead letter and acked, so it ends
    /// after `--max-deliveries` like any other failure. Handed back if even that fails.
    async fn give_up_after_panics(
        &self,
        retry: &Retry,
        origin: &Origin<'_>,
        payload: &[u8],
    ) -> Disposal {
        let detail = format!(
            "gave up after {} deliveries: {} (a bug in helm-service; see its logs)",
            origin.delivered, retry.detail
        );
        let event_id = event_id_of(payload);
        match self
            .dead_letter(
                DeadLetterReason::Exhausted,
                detail,
                origin,
                payload,
                event_id,
            )
            .await
        {
            Ok(disposal) => disposal,
            Err(failed) => Disposal::Nak {
                delay: redelivery_delay(origin.delivered),
                reason: failed.reason,
            },
        }
    }

    async fn dispose(
        &self,
        payload: &[u8],
        origin: &Origin<'_>,
        hard_stop: &CancellationToken,
        place: &Place,
    ) -> Result<Disposal, Retry> {
        // A message received by a pull whose slot a waiting task took: it waits its turn
        // (its message kept alive meanwhile).
        take_slot(place, hard_stop).await?;
        let intake = info_span!("intake")
            .in_scope(|| classify(origin.subject, payload, self.config.max_event_bytes));
        match intake {
            Intake::DeadLetter { reason, detail } => {
                self.dead_letter(reason, detail, origin, payload, event_id_of(payload))
                    .await
            }
            Intake::Ignore { reason } => {
                debug!(reason, "ignoring event");
                Ok(self.ignore(reason))
            }
            Intake::Reject {
                kind,
                event,
                reason,
            } => {
                info!(id = event.id(), %reason, "rejecting invalid event");
                self.answer_without_running(kind, &event, reason).await
            }
            Intake::Accept(task) => {
                let span = info_span!("task", id = task.event.id(), release = %task.release);
                self.run_task(&task, origin, payload, hard_stop, place)
                    .instrument(span)
                    .await
            }
        }
    }

    /// Acks an event this replica does not answer, counted by `reason`.
    fn ignore(&self, reason: &'static str) -> Disposal {
        self.metrics.record_ignored(reason);
        Disposal::Ack
    }

    async fn dead_letter(
        &self,
        reason: DeadLetterReason,
        detail: String,
        origin: &Origin<'_>,
        payload: &[u8],
        event_id: Option<String>,
    ) -> Result<Disposal, Retry> {
        warn!(reason = reason.as_str(), %detail, "dead-lettering message");
        let letter = DeadLetter::new(reason, detail, origin, payload, event_id);
        self.dead_letters
            .record(&letter)
            .await
            .map_err(|err| Retry::new("dead-letter-publish", err))?;
        self.metrics.record_dead_letter(reason.as_str());
        Ok(Disposal::Ack)
    }

    /// Answers an invalid or refused task with an errored finished, no `started`.
    /// Nothing is recorded (an invalid event may name no valid release): a duplicate
    /// is answered again under the same reply id, which the stream's duplicate
    /// window drops.
    async fn answer_without_running(
        &self,
        kind: TaskKind,
        event: &KeptnEvent,
        message: String,
    ) -> Result<Disposal, Retry> {
        self.publish_finished(kind, &replies(event), Outcome::errored(message))
            .await?;
        Ok(Disposal::Ack)
    }

    async fn run_task(
        &self,
        task: &Task,
        origin: &Origin<'_>,
        payload: &[u8],
        hard_stop: &CancellationToken,
        place: &Place,
    ) -> Result<Disposal, Retry> {
        let handler = self.registry.get(task.kind);
        match handler.decide(task) {
            Decision::Accept => {}
            // Deciding is pure, so a duplicate is declined again: nothing to record.
            Decision::Decline { reason } => {
                info!(reason, "task declined: not for helm-service, no reply");
                return Ok(self.ignore(reason));
            }
            Decision::Refuse { message } => {
                return self
                    .answer_without_running(task.kind, &task.event, message)
                    .await;
            }
        }
        // Waiting for a release another task holds, the task lends its slot to other
        // releases (no head-of-line blocking).
        let lend_slot = || place.lend_slot();
        let acquired = match self
            .leases
            .acquire_or_wait(
                task.release.lease_key(),
                task.event.id(),
                hard_stop,
                &lend_slot,
            )
            .instrument(info_span!("lease wait"))
            .await
        {
            Ok(acquired) => acquired,
            Err(err @ LeaseError::Cancelled(_)) => return Err(Retry::new("shutdown", err)),
            Err(err) => return Err(Retry::new("release", err)),
        };
        self.metrics
            .record_lease_wait(acquired.contended, acquired.waited);
        if acquired.contended {
            debug!(waited = ?acquired.waited, "release acquired after waiting");
        }
        let held = acquired.lease;
        let work = async {
            // A slot again before any work, first among all that want one; the lease is
            // kept fresh meanwhile.
            take_slot(place, hard_stop).await?;
            self.run_held(task, &held, origin, payload, place, hard_stop)
                .await
        };
        // Caught under the lease, so a panicking task hands its release back at once.
        let ending = held
            .hold_while(self.catching_panics(work))
            .await
            .unwrap_or_else(|lost| Err(Retry::new(transient_reason(hard_stop), lost)));
        match ending {
            // Parked, not freed: this replica's next event on the release (often
            // already queued behind this one) starts without a write.
            Ok(ending) => held
                .park(|record| match ending {
                    Ending::Completed => record.complete(task.event.id()),
                    Ending::Duplicate => {}
                })
                .await
                .map(|()| Disposal::Ack)
                .map_err(|err| Retry::new("release", err)),
            Err(retry) => {
                // The progress stays in the record for the next attempt.
                held.hand_back_unchanged().await;
                Err(retry)
            }
        }
    }

    /// The work done while holding the release. Its record is current: a duplicate
    /// finds its twin completed, a redelivery finds its own progress.
    async fn run_held(
        &self,
        task: &Task,
        held: &HeldLease,
        origin: &Origin<'_>,
        payload: &[u8],
        place: &Place,
        hard_stop: &CancellationToken,
    ) -> Result<Ending, Retry> {
        let id = task.event.id();
        let event_type = task.kind.event_type();
        if held.read(|record| record.is_completed(id)).await {
            info!("duplicate of a completed event, suppressed");
            self.metrics.duplicates_suppressed.inc();
            return Ok(Ending::Duplicate);
        }
        if origin.delivered > i64::from(self.config.max_deliveries) {
            let outcome = self.give_up(task, origin, payload).await;
            self.publish_finished(task.kind, &replies(&task.event), outcome)
                .await?;
            return Ok(Ending::Completed);
        }
        let started_published = held
            .read(|record| record.progress.get(id).is_some_and(|p| p.started_published))
            .await;
        // Built once: it copies what the replies echo from the event's data.
        let replies = replies(&task.event);
        if task.kind.sends_started() && !started_published {
            self.publish_event(&replies.started()).await?;
        }
        // Recorded in memory; the first step, a refresh or the hand-back writes it.
        // Until then a redelivery publishes `.started` again under the same id, which
        // the stream's duplicate window drops.
        held.change(|record| {
            let progress = record.progress_mut(id, event_type);
            progress.attempts += 1;
            progress.started_published |= task.kind.sends_started();
        })
        .await;

        let outcome = {
            let handler = self.registry.get(task.kind);
            let others = OtherLeases::new(&self.leases, id, place, hard_stop, &self.metrics);
            let mut steps = Steps::new(
                held,
                id,
                event_type,
                &self.metrics,
                others,
                self.config.crash_after_step.as_deref(),
            );
            // Reports go out beside the task, in this same task, and stop with it: none
            // follows `.finished`.
            let (reporter, reports) = progress::channel();
            let interval = self
                .config
                .progress_interval
                .filter(|_| task.kind.sends_started());
            let forwarding = async {
                match interval {
                    Some(interval) => {
                        progress::forward(
                            reports,
                            &replies,
                            &self.publisher,
                            &self.metrics,
                            interval,
                        )
                        .await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                outcome = progress::reporting_to(reporter, handler.run(task, &mut steps)) => outcome,
                never = forwarding => match never {},
                () = hard_stop.cancelled() => Err(TaskError::Transient("shutdown grace period is over".into())),
            }
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(TaskError::Failed(message)) => Outcome::errored(message),
            Err(TaskError::Transient(detail)) => {
                return Err(Retry::new(transient_reason(hard_stop), detail));
            }
        };
        // Published before the record says completed: a crash between the two makes a
        // redelivery publish it again under the same id, which the stream's duplicate
        // window drops.
        self.publish_finished(task.kind, &replies, outcome).await?;
        Ok(Ending::Completed)
    }

    /// After too many deliveries: a dead letter, and an errored outcome.
    async fn give_up(&self, task: &Task, origin: &Origin<'_>, payload: &[u8]) -> Outcome {
        let message = format!(
            "gave up after {} deliveries: the task kept failing for transient reasons (see helm-service logs and the dead-letter stream)",
            origin.delivered
        );
        error!(%message);
        if let Err(retry) = self
            .dead_letter(
                DeadLetterReason::Exhausted,
                message.clone(),
                origin,
                payload,
                Some(task.event.id().to_owned()),
            )
            .await
        {
            warn!(error = %retry.detail, "could not write the dead letter of an exhausted event");
        }
        Outcome::errored(message)
    }

    async fn publish_finished(
        &self,
        kind: TaskKind,
        replies: &ReplyBuilder,
        outcome: Outcome,
    ) -> Result<(), Retry> {
        let status = outcome.status.as_str();
        let result = outcome.result.map_or("none", |result| result.as_str());
        let message = outcome.message.clone();
        let finished = replies.finished(
            outcome.status,
            outcome.result,
            outcome.message,
            outcome.payload,
        );
        self.publish_event(&finished).await?;
        info!(%status, %result, reply = %message, "finished");
        self.metrics
            .record_finished(kind.event_type(), status, result);
        Ok(())
    }

    async fn publish_event(&self, event: &KeptnEvent) -> Result<(), Retry> {
        self.publisher
            .publish(
                event.ty(),
                event.id(),
                event_headers(event),
                Bytes::from(event.encode()),
            )
            .await
            .map(|_| ())
            .map_err(|err| Retry::new("publish", err))
    }
}

/// Takes a slot for the message (at once when it holds one); handed back when shutdown's
/// grace period ends first.
async fn take_slot(place: &Place, hard_stop: &CancellationToken) -> Result<(), Retry> {
    place
        .take_slot(hard_stop)
        .await
        .map_err(|stopped| Retry::new("shutdown", stopped))
}

/// Reply builder for a task event. Intake only accepts the handled task types, all of
/// the `sh.keptn.event.<task>.<phase>` form, so building one cannot fail.
/// With traces exported, the replies carry the `traceparent` of the span building them (the
/// task's), so whoever consumes them continues this trace.
fn replies(event: &KeptnEvent) -> ReplyBuilder {
    let replies =
        ReplyBuilder::new(event, OWN_SOURCE).expect("handled event types are Keptn task types");
    match traces::current_traceparent() {
        Some(traceparent) => replies.with_traceparent(traceparent),
        None => replies,
    }
}

/// The `id` of a message that is JSON with one, for dead letters (best effort; an id too
/// long to be one of ours, or holding control characters, is left out, the payload excerpt
/// shows it).
fn event_id_of(payload: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_owned))
        .filter(|id| id.len() <= MAX_ATTRIBUTE_BYTES && !id.chars().any(char::is_control))
}

/// What a panic said, when it said it with a string (as `panic!` and `expect` do).
fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// Metric label of a subject: the handled type, or `other` (bounded cardinality).
fn type_label(subject: &str) -> &'static str {
    TaskKind::from_event_type(subject)
        .map(TaskKind::event_type)
        .unwrap_or("other")
}

/// Why a task that stopped for a transient reason is handed back: `shutdown` once the
/// grace period is over, else `transient` (a metric label).
fn transient_reason(hard_stop: &CancellationToken) -> &'static str {
    if hard_stop.is_cancelled() {
        "shutdown"
    } else {
        "transient"
    }
}

/// Backoff between deliveries of an event failing for transient reasons.
fn redelivery_delay(delivered: i64) -> Duration {
    let exponent = u32::try_from(delivered.clamp(1, 7) - 1).unwrap_or(0);
    Duration::from_millis(500 * 2u64.pow(exponent)).min(Duration::from_secs(30))
}

/// Sends in-progress acks every third of the ack wait, so a long task (or one waiting
/// for its release lease) is not redelivered while it runs.
async fn keep_alive(message: &jetstream::Message, ack_wait: Duration) -> std::convert::Infallible {
    let period = ack_wait / 3;
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        interval.tick().await;
        if let Err(err) = message.ack_with(AckKind::Progress).await {
            warn!(error = %err, "in-progress ack failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redelivery_backoff_grows_and_is_capped() {
        assert_eq!(redelivery_delay(1), Duration::from_millis(500));
        assert_eq!(redelivery_delay(2), Duration::from_secs(1));
        assert_eq!(redelivery_delay(100), Duration::from_secs(30));
    }

    #[test]
    fn metric_labels_are_bounded() {
        assert_eq!(
            type_label("sh.keptn.event.deployment.triggered"),
            "sh.keptn.event.deployment.triggered"
        );
        assert_eq!(type_label("anything.else"), "other");
    }
}
