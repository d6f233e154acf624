//! Prometheus metrics of the worker.
//!
//! One registry per worker instance (not the global default registry) so tests and
//! benchmarks can run several workers in one process without their numbers mixing.
//!
//! Metrics with labels are recorded through the `record_*` methods only, so the label names,
//! their order and their values are written once, here, next to their registration.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::helm::{HelmError, HelmObserver, Operation};

/// All metrics the pipeline records. Cheap to clone (the handles are reference counted).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Messages taken off the consumer, by event type (`invalid` when undecodable).
    events_received: IntCounterVec,
    /// Finished events published, by event type, status and result.
    events_finished: IntCounterVec,
    /// Messages acknowledged without a reply, by reason (own source, declined, ...).
    events_ignored: IntCounterVec,
    /// Wall time from taking a message to acking it, by event type.
    event_duration: HistogramVec,
    /// Tasks being processed right now on this replica.
    pub in_flight: IntGauge,
    /// Concurrency slots of this replica.
    pub pool_capacity: IntGauge,
    /// Tasks holding a message without a slot: waiting for a busy release, or for a slot.
    pub waiting: IntGauge,
    /// Messages delivered more than once, by event type.
    redeliveries: IntCounterVec,
    /// Duplicate or redelivered events whose effects had already happened.
    pub duplicates_suppressed: IntCounter,
    /// Tasks that panicked: a bug, caught so the message is handed back and the release freed.
    pub task_panics: IntCounter,
    /// Dead-letter records written, by reason.
    dead_letters: IntCounterVec,
    /// Tasks that had to wait for a release lease held elsewhere.
    lease_waits: IntCounter,
    /// Time spent waiting for release leases.
    lease_wait_seconds: Histogram,
    /// Messages handed back for redelivery (transient failure or shutdown), by reason.
    naks: IntCounterVec,
    /// Task steps completed, by step name.
    steps_completed: IntCounterVec,
    /// Steps skipped because the release record shows them done.
    steps_skipped: IntCounterVec,
    /// Duration of completed task steps (`user-release`, `update-primary`, ...), by step.
    step_seconds: HistogramVec,
    /// Messages waiting in the consumer (not yet delivered).
    pub consumer_pending: IntGauge,
    /// Messages delivered to some replica and not yet acknowledged.
    pub consumer_ack_pending: IntGauge,
    /// Duration of helm CLI calls, by operation and outcome.
    helm_operation_seconds: HistogramVec,
    /// helm processes this replica runs at once (its memory budget).
    pub helm_slots: IntGauge,
    /// Time helm calls waited for a helm process slot.
    helm_slot_wait_seconds: Histogram,
    /// Time from a release upgrade to its Deployments being ready, by outcome.
    rollout_seconds: HistogramVec,
    /// Deployments skipped because the same chart was deployed and healthy.
    pub unchanged_deployments: IntCounter,
    /// Releases found `pending-*` (a helm killed mid-operation) and recovered.
    pub pending_recoveries: IntCounter,
    /// Releases put back to their last good revision after a failed upgrade or rollout.
    pub restores: IntCounter,
    /// Progress reports (`<task>.status.changed`) sent or failed, by outcome.
    status_changed: IntCounterVec,
    /// NATS connection attempts that found the credential files unusable (rotation under way,
    /// a broken Secret) and used the last valid credentials.
    pub nats_credential_reload_failures: IntCounter,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reg = Registrar(&registry);
        Metrics {
            events_received: reg.counter_vec(
                "helm_service_events_received_total",
                "Messages taken off the consumer, by event type.",
                &["type"],
            ),
            events_finished: reg.counter_vec(
                "helm_service_events_finished_total",
                "Finished events published, by event type, status and result.",
                &["type", "status", "result"],
            ),
            events_ignored: reg.counter_vec(
                "helm_service_events_ignored_total",
                "Messages acknowledged without any reply, by reason.",
                &["reason"],
            ),
            event_duration: reg.histogram_vec(
                HistogramOpts::new(
                    "helm_service_event_duration_seconds",
                    "Time from taking a message to acknowledging it, by event type.",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0,
                ]),
                &["type"],
            ),
            in_flight: reg.gauge("helm_service_tasks_in_flight", "Tasks being processed now."),
            pool_capacity: reg.gauge(
                "helm_service_pool_capacity",
                "Concurrency slots of this replica.",
            ),
            waiting: reg.gauge(
                "helm_service_tasks_waiting",
                "Tasks in flight that hold no slot: waiting for a release another task holds, or for a slot.",
            ),
            redeliveries: reg.counter_vec(
                "helm_service_redeliveries_total",
                "Messages delivered more than once, by event type.",
                &["type"],
            ),
            duplicates_suppressed: reg.counter(
                "helm_service_duplicates_suppressed_total",
                "Duplicate or redelivered events whose effects had already happened.",
            ),
            task_panics: reg.counter(
                "helm_service_task_panics_total",
                "Tasks that panicked (a bug): each was handed back for redelivery, or dead-lettered after --max-deliveries.",
            ),
            dead_letters: reg.counter_vec(
                "helm_service_dead_letters_total",
                "Dead-letter records written, by reason.",
                &["reason"],
            ),
            lease_waits: reg.counter(
                "helm_service_lease_waits_total",
                "Tasks that waited for a release lease held by another task.",
            ),
            lease_wait_seconds: reg.histogram(
                HistogramOpts::new(
                    "helm_service_lease_wait_seconds",
                    "Time spent waiting for release leases.",
                )
                .buckets(vec![0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0]),
            ),
            naks: reg.counter_vec(
                "helm_service_naks_total",
                "Messages handed back for redelivery, by reason.",
                &["reason"],
            ),
            steps_completed: reg.counter_vec(
                "helm_service_steps_completed_total",
                "Task steps completed, by step.",
                &["step"],
            ),
            steps_skipped: reg.counter_vec(
                "helm_service_steps_skipped_total",
                "Task steps skipped because an earlier attempt completed them, by step.",
                &["step"],
            ),
            step_seconds: reg.histogram_vec(
                HistogramOpts::new(
                    "helm_service_step_seconds",
                    "Duration of completed task steps, by step.",
                )
                .buckets(vec![0.01, 0.05, 0.25, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0]),
                &["step"],
            ),
            consumer_pending: reg.gauge(
                "helm_service_consumer_pending",
                "Messages in the consumer not yet delivered to any replica.",
            ),
            consumer_ack_pending: reg.gauge(
                "helm_service_consumer_ack_pending",
                "Messages delivered and not yet acknowledged.",
            ),
            helm_operation_seconds: reg.histogram_vec(
                HistogramOpts::new(
                    "helm_service_helm_operation_seconds",
                    "Duration of helm CLI calls, by operation and outcome.",
                )
                .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0]),
                &["operation", "outcome"],
            ),
            helm_slots: reg.gauge(
                "helm_service_helm_slots",
                "helm processes this replica runs at once: --concurrency, or fewer when the memory budget holds fewer.",
            ),
            helm_slot_wait_seconds: reg.histogram(
                HistogramOpts::new(
                    "helm_service_helm_slot_wait_seconds",
                    "Time helm calls waited for a helm process slot (the memory budget).",
                )
                .buckets(vec![0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0]),
            ),
            rollout_seconds: reg.histogram_vec(
                HistogramOpts::new(
                    "helm_service_rollout_seconds",
                    "Time for a release's Deployments to become ready, by outcome.",
                )
                .buckets(vec![0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0]),
                &["outcome"],
            ),
            unchanged_deployments: reg.counter(
                "helm_service_unchanged_deployments_total",
                "Deployments skipped because the same chart was already deployed and healthy.",
            ),
            pending_recoveries: reg.counter(
                "helm_service_pending_recoveries_total",
                "Releases left pending by an interrupted helm operation and recovered.",
            ),
            restores: reg.counter(
                "helm_service_release_restores_total",
                "Releases put back to their last good revision after a failed upgrade or rollout.",
            ),
            status_changed: reg.counter_vec(
                "helm_service_status_changed_total",
                "Progress reports (<task>.status.changed) published (sent) or given up (failed), by outcome.",
                &["outcome"],
            ),
            nats_credential_reload_failures: reg.counter(
                "helm_service_nats_credential_reload_failures_total",
                "NATS connection attempts whose credential files could not be read or were invalid; each used the last valid credentials.",
            ),
            registry,
        }
        .with_trace_export_metrics()
    }

    /// The trace exporter's counters (process-wide, `telemetry::export`) on this registry too.
    fn with_trace_export_metrics(self) -> Self {
        let reg = Registrar(&self.registry);
        reg.register(crate::telemetry::export::SPANS_DROPPED.clone());
        reg.register(crate::telemetry::export::SPANS_EXPORTED.clone());
        self
    }

    /// A progress report published (`sent`) or given up (`failed`).
    pub fn record_status_changed(&self, outcome: &str) {
        self.status_changed.with_label_values(&[outcome]).inc();
    }

    /// A message taken off the consumer, of `event_type` (`invalid` when undecodable);
    /// `redelivered` when JetStream delivered it before.
    pub fn record_received(&self, event_type: &str, redelivered: bool) {
        self.events_received.with_label_values(&[event_type]).inc();
        if redelivered {
            self.redeliveries.with_label_values(&[event_type]).inc();
        }
    }

    /// A message of `event_type` settled, `elapsed` after it was taken.
    pub fn record_event_duration(&self, event_type: &str, elapsed: Duration) {
        self.event_duration
            .with_label_values(&[event_type])
            .observe(elapsed.as_secs_f64());
    }

    /// A finished event published.
    pub fn record_finished(&self, event_type: &str, status: &str, result: &str) {
        self.events_finished
            .with_label_values(&[event_type, status, result])
            .inc();
    }

    /// A message acknowledged without any reply.
    pub fn record_ignored(&self, reason: &str) {
        self.events_ignored.with_label_values(&[reason]).inc();
    }

    /// A message handed back for redelivery.
    pub fn record_nak(&self, reason: &str) {
        self.naks.with_label_values(&[reason]).inc();
    }

    /// A dead-letter record written.
    pub fn record_dead_letter(&self, reason: &str) {
        self.dead_letters.with_label_values(&[reason]).inc();
    }

    /// A release lease taken after `waited`; counted as a wait when another task held it
    /// (`contended`).
    pub fn record_lease_wait(&self, contended: bool, waited: Duration) {
        if contended {
            self.lease_waits.inc();
            self.lease_wait_seconds.observe(waited.as_secs_f64());
        }
    }

    /// A task step completed in `elapsed`.
    pub fn record_step(&self, step: &str, elapsed: Duration) {
        self.steps_completed.with_label_values(&[step]).inc();
        self.step_seconds
            .with_label_values(&[step])
            .observe(elapsed.as_secs_f64());
    }

    /// A task step skipped because an earlier attempt completed it.
    pub fn record_step_skipped(&self, step: &str) {
        self.steps_skipped.with_label_values(&[step]).inc();
    }

    /// A wait for a release's Deployments that ended after `elapsed`, `ready` or not.
    pub fn record_rollout(&self, ready: bool, elapsed: Duration) {
        let outcome = if ready { "ready" } else { "failed" };
        self.rollout_seconds
            .with_label_values(&[outcome])
            .observe(elapsed.as_secs_f64());
    }

    /// A helm call that ended after `elapsed`: outcome `ok` or the error's kind.
    pub fn record_helm(
        &self,
        operation: Operation,
        outcome: Result<(), &HelmError>,
        elapsed: Duration,
    ) {
        let outcome = match outcome {
            Ok(()) => "ok",
            Err(err) => err.label(),
        };
        self.helm_operation_seconds
            .with_label_values(&[operation.as_str(), outcome])
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition format served on `/metrics`.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Helm call durations on `/metrics`, by operation and outcome, and waits for helm slots.
impl HelmObserver for Metrics {
    fn observe(&self, operation: Operation, elapsed: Duration, outcome: Result<(), &HelmError>) {
        self.record_helm(operation, outcome, elapsed);
    }

    fn waited_for_slot(&self, waited: Duration) {
        self.helm_slot_wait_seconds.observe(waited.as_secs_f64());
    }
}

/// Creates and registers metrics; registration only fails on duplicate names, which
/// is a programming error caught by the unit test below.
struct Registrar<'a>(&'a Registry);

impl Registrar<'_> {
    fn register<M: prometheus::core::Collector + Clone + 'static>(&self, metric: M) -> M {
        self.0
            .register(Box::new(metric.clone()))
            .expect("metric names are unique");
        metric
    }
    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("valid metric"))
    }
    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }
    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("valid metric"))
    }
    fn histogram(&self, opts: HistogramOpts) -> Histogram {
        self.register(Histogram::with_opts(opts).expect("valid metric"))
    }
    fn histogram_vec(&self, opts: HistogramOpts, labels: &[&str]) -> HistogramVec {
        self.register(HistogramVec::new(opts, labels).expect("valid metric"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_metrics_register_and_render() {
        let metrics = Metrics::new();
        metrics.record_received("x", false);
        metrics.record_dead_letter("malformed");
        let text = metrics.render();
        assert!(text.contains("helm_service_events_received_total{type=\"x\"} 1"));
        assert!(text.contains("helm_service_dead_letters_total{reason=\"malformed\"} 1"));
        assert!(text.contains("helm_service_tasks_in_flight 0"));
        assert!(text.contains("helm_service_nats_credential_reload_failures_total 0"));
    }
}
