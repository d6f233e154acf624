//! The worker's trace export (`telemetry`) against the harness' OTLP receiver, in process:
//! spans of the `worker` target reach it with their parent taken from a `traceparent`,
//! others do not. One test per process (it installs the global subscriber).

use std::time::Duration;

use test_harness::otlp::{OtlpReceiver, Transport};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use worker::config::LogFormat;
use worker::telemetry::{self, traces};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_spans_reach_the_collector_as_children_of_the_event() -> anyhow::Result<()> {
    let receiver = OtlpReceiver::start(Transport::Grpc).await?;
    for (name, value) in receiver.env("in-process") {
        // SAFETY: set before anything else of this process reads the environment.
        unsafe { std::env::set_var(name, value) };
    }
    let _telemetry = telemetry::init(LogFormat::Text).map_err(anyhow::Error::msg)?;
    assert!(telemetry::exporting());
    let span = tracing::info_span!(target: "worker::pipeline::processor", "event");
    span.set_parent(
        traces::remote_parent(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            None,
        )
        .unwrap(),
    )?;
    let traceparent = span.in_scope(|| {
        let _other = tracing::info_span!(target: "kube_client", "not ours").entered();
        tracing::info_span!(target: "worker::handler::steps", "step")
            .in_scope(traces::current_traceparent)
    });
    drop(span);
    // A pause holds and ends whatever a call site saw first (the bench relies on it).
    telemetry::pause_export(true);
    probe("paused");
    telemetry::pause_export(false);
    probe("resumed");
    telemetry::pause_export(true);
    probe("paused again");
    telemetry::pause_export(false);
    let spans = receiver
        .wait_for(Duration::from_secs(20), |spans| spans.len() >= 3)
        .await?;
    let names: Vec<&str> = spans.iter().map(|s| s.name()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let probes: Vec<Option<String>> = spans
        .iter()
        .filter(|s| s.name() == "probe")
        .map(|s| s.attribute("when"))
        .collect();
    assert_eq!(probes, [Some("resumed".to_owned())]);
    let event = spans.iter().find(|s| s.name() == "event").unwrap();
    let step = spans.iter().find(|s| s.name() == "step").unwrap();
    assert_eq!(event.parent_span_id(), "b7ad6b7169203331");
    assert_eq!(event.trace_id(), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(step.parent_span_id(), event.span_id());
    assert_eq!(event.service, "in-process");
    assert_eq!(
        traceparent,
        Some(format!(
            "00-0af7651916cd43dd8448eb211c80319c-{}-01",
            step.span_id()
        ))
    );
    Ok(())
}

/// One call site, entered before, during and after a pause.
fn probe(when: &str) {
    tracing::info_span!(target: "worker::probe", "probe", when).in_scope(|| {});
}
