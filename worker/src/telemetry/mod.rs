//! Logs and traces. `RUST_LOG` filters log lines as usual (default `info`); traces are
//! exported over OTLP when the standard `OTEL_*` variables say so (`traces.rs`), through a
//! bounded queue that never holds up the worker (`export.rs`).

pub mod export;
pub mod http_client;
pub mod tls;
pub mod traces;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::{dynamic_filter_fn, FilterExt, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::LogFormat;

/// Whether [`init`] installed the trace exporter. The processor asks [`exporting`] before
/// doing anything only traces need (reading an event's `traceparent` ahead of intake).
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// Export paused ([`pause_export`]).
static PAUSED: AtomicBool = AtomicBool::new(false);

/// Whether this process exports traces now.
pub fn exporting() -> bool {
    INSTALLED.load(Ordering::Relaxed) && !PAUSED.load(Ordering::Relaxed)
}

/// Stops (or resumes) making spans for export, with the exporter installed: the pipeline
/// bench compares a worker exporting traces with one that does not in one process. The
/// worker itself never pauses.
pub fn pause_export(paused: bool) {
    PAUSED.store(paused, Ordering::Relaxed);
}

/// What [`init`] set up; dropping it sends the spans still queued (bounded wait).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown_with_timeout(Duration::from_secs(3));
        }
    }
}

/// Sets up logging and, when the environment configures it, trace export. An `OTEL_*`
/// setting we cannot follow is an error (rather than a worker that silently exports nothing).
pub fn init(format: LogFormat) -> Result<Telemetry, String> {
    init_with(format, "info")
}

/// [`init`] with the log filter used when `RUST_LOG` is unset (the benches log errors only).
pub fn init_with(format: LogFormat, default_filter: &str) -> Result<Telemetry, String> {
    let export = traces::trace_export(|name| std::env::var(name).ok())?;
    let provider = export.as_ref().map(traces::provider).transpose()?;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    use std::io::IsTerminal;
    let logs = fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => logs.with_filter(filter).boxed(),
    };
    let spans =
        provider.as_ref().map(|provider| {
            // What a span costs is what the pipeline bench measures (BENCHMARKS.md, "Traces"),
            // so each span carries what it names and no more: no code location, target, thread
            // or idle/busy time (a clock read per poll of every instrumented future), and log
            // lines become span events only from warnings up. Entering a span does not make it
            // OpenTelemetry's current context (no other OpenTelemetry instrumentation runs
            // here), which saves a context switch per poll. The pause is asked for each span (a
            // dynamic filter): a plain `filter_fn` is asked once per call site and its answer
            // cached.
            tracing_opentelemetry::layer()
                .with_tracer(traces::tracer(provider))
                .with_tracked_inactivity(false)
                .with_threads(false)
                .with_location(false)
                .with_target(false)
                .with_context_activation(false)
                .with_filter(Targets::new().with_target("worker", Level::INFO).and(
                    dynamic_filter_fn(|metadata, _| {
                        (metadata.is_span() || *metadata.level() <= Level::WARN)
                            && !PAUSED.load(Ordering::Relaxed)
                    }),
                ))
        });
    // A second init (tests running several workers) keeps the first subscriber.
    if tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .is_ok()
    {
        INSTALLED.store(provider.is_some(), Ordering::Relaxed);
    }
    if let Some(export) = &export {
        tracing::info!(
            protocol = ?export.protocol,
            tls = export.tls.is_some(),
            service = %export.service_name,
            "exporting traces over OTLP"
        );
    }
    Ok(Telemetry { provider })
}
