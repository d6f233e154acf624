//! The bounded queue between finished spans and the OTLP exporter.
//!
//! A span processor of our own rather than the SDK's batch processor, for two reasons the
//! worker cannot do without: every span that is not delivered is counted
//! (`helm_service_trace_spans_dropped_total`, by reason), and the exporter runs on a thread
//! of its own with a current-thread tokio runtime, so both OTLP transports (tonic, hyper)
//! work and nothing of the export ever runs on, or waits in, the worker's runtime.
//!
//! A finished span is handed over with a `try_send`: when the queue is full (the collector is
//! slow or away) the span is dropped and counted, never waited for. The thread sends what it
//! has every [`EXPORT_DELAY`] or once [`MAX_BATCH`] spans wait (only then is it woken: a
//! wake-up per span, a system call and a thread switch, was most of what tracing cost the
//! pipeline bench), each export bounded by the exporter's timeout; a batch that fails is
//! dropped and counted too (no retry queue: a collector that is down would only fill it).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use prometheus::{IntCounter, IntCounterVec, Opts};

/// Spans waiting for the exporter at most; further ones are dropped.
pub const QUEUE_CAPACITY: usize = 2048;
/// Spans sent in one export at most.
pub const MAX_BATCH: usize = 512;
/// Longest a finished span waits before it is sent.
pub const EXPORT_DELAY: Duration = Duration::from_secs(1);

/// Spans not delivered to the collector, by reason: `queue_full` (the exporter could not
/// keep up, or the collector is slow) or `export_failed` (the collector refused them or was
/// unreachable). Process-wide, like the exporter; every worker's registry shows it.
pub static SPANS_DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "helm_service_trace_spans_dropped_total",
            "Trace spans not delivered to the OTLP collector, by reason (queue_full, export_failed).",
        ),
        &["reason"],
    )
    .expect("valid metric")
});

/// Spans the collector accepted.
pub static SPANS_EXPORTED: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "helm_service_trace_spans_exported_total",
        "Trace spans delivered to the OTLP collector.",
    )
    .expect("valid metric")
});

/// What the export thread is asked besides spans.
enum Control {
    /// Export what is queued, then answer.
    Flush(mpsc::Sender<()>),
    /// Export what is queued, shut the exporter down, answer and end.
    Shutdown(mpsc::Sender<()>),
}

/// The span processor: hands finished spans to the export thread.
#[derive(Debug)]
pub struct QueueProcessor {
    spans: SyncSender<Box<SpanData>>,
    /// Spans queued and not yet taken by the thread: the thread is woken when a batch is
    /// full, not for every span (a wake-up is a system call and a thread switch).
    queued: Arc<AtomicUsize>,
    control: mpsc::Sender<Control>,
    thread: std::thread::Thread,
    /// How long a flush waits for the thread.
    patience: Duration,
}

impl QueueProcessor {
    /// Starts the export thread; `build` makes the exporter inside the thread's runtime
    /// (tonic needs one at construction). An exporter that cannot be built is an error here.
    pub fn start<E, B>(build: B, export_timeout: Duration) -> Result<QueueProcessor, String>
    where
        E: SpanExporter + 'static,
        B: FnOnce() -> Result<E, String> + Send + 'static,
    {
        let (spans, queue) = mpsc::sync_channel(QUEUE_CAPACITY);
        let (control, commands) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let (built_tx, built_rx) = mpsc::channel();
        let thread_queued = queued.clone();
        let handle = std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = built_tx.send(Err(format!("export thread runtime: {err}")));
                        return;
                    }
                };
                let exporter = {
                    let _entered = runtime.enter();
                    build()
                };
                match exporter {
                    Ok(exporter) => {
                        let _ = built_tx.send(Ok(()));
                        let inbox = Inbox {
                            spans: queue,
                            queued: thread_queued,
                            commands,
                        };
                        run(&runtime, exporter, &inbox, export_timeout);
                    }
                    Err(err) => {
                        let _ = built_tx.send(Err(err));
                    }
                }
            })
            .map_err(|err| format!("starting the export thread: {err}"))?;
        built_rx
            .recv()
            .map_err(|_| "the export thread ended while starting".to_owned())??;
        Ok(QueueProcessor {
            spans,
            queued,
            control,
            thread: handle.thread().clone(),
            patience: export_timeout + Duration::from_secs(1),
        })
    }

    /// Sends `control` to the thread, wakes it and waits for its answer up to `patience`.
    fn ask(
        &self,
        control: impl FnOnce(mpsc::Sender<()>) -> Control,
        patience: Duration,
    ) -> OTelSdkResult {
        let (done, answered) = mpsc::channel();
        self.control
            .send(control(done))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        self.thread.unpark();
        answered
            .recv_timeout(patience)
            .map_err(|_| OTelSdkError::Timeout(patience))
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        match self.spans.try_send(Box::new(span)) {
            Ok(()) => {
                if self.queued.fetch_add(1, Ordering::Relaxed) + 1 == MAX_BATCH {
                    self.thread.unpark();
                }
            }
            Err(TrySendError::Full(_)) => SPANS_DROPPED.with_label_values(&["queue_full"]).inc(),
            Err(TrySendError::Disconnected(_)) => {
                SPANS_DROPPED.with_label_values(&["shut_down"]).inc()
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Control::Flush, self.patience)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.ask(Control::Shutdown, timeout)
    }
}

/// What the export thread reads.
struct Inbox {
    spans: mpsc::Receiver<Box<SpanData>>,
    queued: Arc<AtomicUsize>,
    commands: mpsc::Receiver<Control>,
}

/// The export thread's loop (see the module docs): it sleeps until the next export is due
/// or it is woken (a full batch, a flush, shutdown), then takes what is queued.
fn run<E: SpanExporter>(
    runtime: &tokio::runtime::Runtime,
    exporter: E,
    inbox: &Inbox,
    export_timeout: Duration,
) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(MAX_BATCH);
    let mut due = Instant::now() + EXPORT_DELAY;
    let mut failures = FailureLog::default();
    let mut send = |batch: &mut Vec<SpanData>| {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::replace(batch, Vec::with_capacity(MAX_BATCH));
        let count = spans.len() as u64;
        let outcome = runtime
            .block_on(async { tokio::time::timeout(export_timeout, exporter.export(spans)).await });
        match outcome {
            Ok(Ok(())) => SPANS_EXPORTED.inc_by(count),
            Ok(Err(err)) => {
                SPANS_DROPPED
                    .with_label_values(&["export_failed"])
                    .inc_by(count);
                failures.note(&err.to_string());
            }
            Err(_) => {
                SPANS_DROPPED
                    .with_label_values(&["export_failed"])
                    .inc_by(count);
                failures.note(&format!("no answer within {export_timeout:?}"));
            }
        }
    };
    loop {
        std::thread::park_timeout(due.saturating_duration_since(Instant::now()));
        let mut disconnected = false;
        loop {
            match inbox.spans.try_recv() {
                Ok(span) => {
                    inbox.queued.fetch_sub(1, Ordering::Relaxed);
                    batch.push(*span);
                    if batch.len() >= MAX_BATCH {
                        send(&mut batch);
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        match inbox.commands.try_recv() {
            Ok(Control::Flush(done)) => {
                send(&mut batch);
                let _ = done.send(());
            }
            Ok(Control::Shutdown(done)) => {
                send(&mut batch);
                let _ = exporter.shutdown();
                let _ = done.send(());
                return;
            }
            Err(_) if disconnected => {
                send(&mut batch);
                return;
            }
            Err(_) => {}
        }
        if Instant::now() >= due {
            send(&mut batch);
            due = Instant::now() + EXPORT_DELAY;
        }
    }
}

/// Logs failed exports at most once a minute (a collector that is down fails every second).
#[derive(Default)]
struct FailureLog {
    last: Option<Instant>,
    since: u64,
}

impl FailureLog {
    fn note(&mut self, error: &str) {
        self.since += 1;
        if self
            .last
            .is_some_and(|last| last.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        // The exporter's error may quote the endpoint, user info and all.
        let error = crate::secret::redact_user_info(error);
        tracing::warn!(
            error,
            failed_exports = self.since,
            "could not export trace spans to the OTLP collector; they are dropped (helm_service_trace_spans_dropped_total)"
        );
        self.last = Some(Instant::now());
        self.since = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Tracer, TracerProvider};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use std::sync::{Arc, Mutex};

    /// An exporter that keeps what it gets, or hangs on every export.
    #[derive(Debug, Clone, Default)]
    struct Keeping {
        spans: Arc<Mutex<Vec<String>>>,
        hang: bool,
    }

    impl SpanExporter for Keeping {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if self.hang {
                std::future::pending::<()>().await;
            }
            self.spans
                .lock()
                .unwrap()
                .extend(batch.into_iter().map(|s| s.name.into_owned()));
            Ok(())
        }
    }

    #[test]
    fn spans_reach_the_exporter_on_flush() {
        let exporter = Keeping::default();
        let spans = exporter.spans.clone();
        let processor =
            QueueProcessor::start(move || Ok(exporter), Duration::from_secs(5)).unwrap();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("test");
        tracer.in_span("one", |_| {});
        tracer.in_span("two", |_| {});
        provider.force_flush().unwrap();
        assert_eq!(*spans.lock().unwrap(), ["one", "two"]);
        provider.shutdown().unwrap();
    }

    #[test]
    fn a_hanging_collector_never_blocks_ending_spans_and_drops_are_counted() {
        let exporter = Keeping {
            hang: true,
            ..Keeping::default()
        };
        let before = SPANS_DROPPED.with_label_values(&["queue_full"]).get();
        let processor =
            QueueProcessor::start(move || Ok(exporter), Duration::from_secs(3600)).unwrap();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("test");
        let started = Instant::now();
        // Enough to fill the queue and a batch held by the hanging export, and more.
        for _ in 0..(QUEUE_CAPACITY + MAX_BATCH + 1000) {
            tracer.in_span("s", |_| {});
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(10),
            "ending spans waited: {elapsed:?}"
        );
        let dropped = SPANS_DROPPED.with_label_values(&["queue_full"]).get() - before;
        assert!(dropped >= 1000, "{dropped} dropped");
        // Shutting down does not wait for the hanging export beyond its timeout either (the
        // thread is left behind; a test process ends soon).
        let asked = Instant::now();
        assert!(provider
            .shutdown_with_timeout(Duration::from_millis(200))
            .is_err());
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "{:?}",
            asked.elapsed()
        );
    }

    #[test]
    fn an_exporter_that_cannot_be_built_is_an_error_at_start() {
        let failed = QueueProcessor::start::<Keeping, _>(
            || Err("no such endpoint".into()),
            Duration::from_secs(1),
        );
        assert_eq!(failed.unwrap_err(), "no such endpoint");
    }
}
