//! Logs and traces. `RUST_LOG` filters log lines as usual (default `info`); traces are
//! exported over OTLP when the standard `OTEL_*` variables say so (`traces.rs`), through a
//! bounded queue that never holds up the worker (`export.rs`).

pub mod export;
pub mod traces;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::LogFormat;

/// Whether spans are exported: set once by [`init`]. The processor reads it before doing
/// anything only traces need (reading an event's `traceparent` ahead of intake).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports traces.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
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
    let export = traces::trace_export(|name| std::env::var(name).ok())?;
    let provider = export.as_ref().map(traces::provider).transpose()?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(traces::tracer(provider))
            .with_filter(Targets::new().with_target("worker", Level::INFO))
    });
    // A second init (tests running several workers) keeps the first subscriber.
    if tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .is_ok()
    {
        EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    }
    if let Some(export) = &export {
        tracing::info!(
            protocol = ?export.protocol,
            service = %export.service_name,
            "exporting traces over OTLP"
        );
    }
    Ok(Telemetry { provider })
}
