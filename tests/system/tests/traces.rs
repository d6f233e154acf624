//! Traces of a deployment exported over OTLP, gRPC and HTTP/protobuf, to the harness' own
//! receiver (`test_harness::otlp`, decoding the official protobuf messages): the production
//! binary, real nats-server, real helm, kube-sim; in plain text and over TLS with a test CA
//! (mutual TLS for gRPC). And a collector that is not there, that never answers, or whose
//! certificate the worker does not trust: the worker deploys as promptly as without one and
//! counts the spans it drops.

use std::time::{Duration, Instant};

use kube_sim::Config as SimConfig;
use serde_json::json;
use system_tests::deploy_env::{deployment_event, example_chart, DeployEnv};
use test_harness::otlp::{ClientAuth, OtlpReceiver, ReceivedSpan, Transport};
use test_harness::pki::TestPki;

const WAIT: Duration = Duration::from_secs(90);
/// The sender's trace and span: the triggered event's `traceparent`.
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";

async fn env() -> anyhow::Result<DeployEnv> {
    let env = DeployEnv::start(SimConfig {
        rollout_delay: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await?;
    env.push_chart(("shop", "dev", "hello"), &example_chart())?;
    Ok(env)
}

#[tokio::test]
async fn a_deployment_is_one_trace_continuing_the_event_over_grpc() -> anyhow::Result<()> {
    let receiver = OtlpReceiver::start(Transport::Grpc).await?;
    a_deployment_is_one_trace_continuing_the_event(&receiver, "grpc", Vec::new()).await
}

#[tokio::test]
async fn a_deployment_is_one_trace_continuing_the_event_over_http() -> anyhow::Result<()> {
    let receiver = OtlpReceiver::start(Transport::HttpProtobuf).await?;
    a_deployment_is_one_trace_continuing_the_event(&receiver, "http", Vec::new()).await
}

/// gRPC over mutual TLS: the collector's certificate is checked against the test CA given in
/// the generic variable, and the worker presents its client certificate (the `_TRACES_` key
/// variable, to use both kinds).
#[tokio::test]
async fn a_deployment_is_one_trace_over_grpc_with_mutual_tls() -> anyhow::Result<()> {
    let pki = TestPki::generate("otlp-collector-ca")?;
    let receiver = OtlpReceiver::start_tls(Transport::Grpc, &pki, ClientAuth::Required).await?;
    let tls = vec![
        ("OTEL_EXPORTER_OTLP_CERTIFICATE".to_owned(), path(&pki.ca())),
        (
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE".to_owned(),
            path(&pki.client_cert()),
        ),
        (
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY".to_owned(),
            path(&pki.client_key()),
        ),
    ];
    a_deployment_is_one_trace_continuing_the_event(&receiver, "grpc over mTLS", tls).await?;
    assert_eq!(receiver.tls_handshake_failures(), 0);
    Ok(())
}

/// HTTP/protobuf over TLS: the collector's certificate is checked against the test CA.
#[tokio::test]
async fn a_deployment_is_one_trace_over_https() -> anyhow::Result<()> {
    let pki = TestPki::generate("otlp-collector-ca")?;
    let receiver = OtlpReceiver::start_tls(Transport::HttpProtobuf, &pki, ClientAuth::None).await?;
    let tls = vec![("OTEL_EXPORTER_OTLP_CERTIFICATE".to_owned(), path(&pki.ca()))];
    a_deployment_is_one_trace_continuing_the_event(&receiver, "https", tls).await?;
    assert_eq!(receiver.tls_handshake_failures(), 0);
    Ok(())
}

fn path(path: &std::path::Path) -> String {
    path.display().to_string()
}

async fn a_deployment_is_one_trace_continuing_the_event(
    receiver: &OtlpReceiver,
    transport: &str,
    tls: Vec<(String, String)>,
) -> anyhow::Result<()> {
    let env = env().await?;
    let mut spec = env.worker_spec();
    spec.env.extend(receiver.env("helm-service-under-test"));
    spec.env.extend(tls);
    let worker = env.start_worker(spec, "worker").await?;

    let mut event = deployment_event("traced", "hello", "direct", json!({}));
    event["traceparent"] = json!(format!("00-{TRACE_ID}-{PARENT_ID}-01"));
    let finished = env.deploy(&event, WAIT).await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");

    // The root span ends after the ack; it is exported within a second or so after.
    let spans = receiver
        .wait_for(Duration::from_secs(30), |spans| {
            spans
                .iter()
                .any(|s| s.name() == "event" && s.trace_id() == TRACE_ID)
        })
        .await
        .map_err(|err| err.context(worker.process.log_tail(60)))?;
    let trace: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id() == TRACE_ID).collect();
    let names: Vec<(&str, String)> = trace
        .iter()
        .map(|s| (s.name(), s.parent_span_id()))
        .collect();
    eprintln!(
        "{transport}: {} spans in the trace: {names:#?}",
        trace.len()
    );
    let one = |name: &str| -> &ReceivedSpan {
        let found: Vec<&&ReceivedSpan> = trace.iter().filter(|s| s.name() == name).collect();
        assert_eq!(found.len(), 1, "one {name:?} span: {names:?}");
        found[0]
    };
    let parent_of = |span: &ReceivedSpan| -> &str {
        trace
            .iter()
            .find(|s| s.span_id() == span.parent_span_id())
            .map_or("(outside the trace)", |s| s.name())
    };
    let root = one("event");
    assert_eq!(
        root.parent_span_id(),
        PARENT_ID,
        "the root continues the event"
    );
    assert_eq!(root.service, "helm-service-under-test");
    assert_eq!(parent_of(one("intake")), "event");
    let task = one("task");
    assert_eq!(parent_of(task), "event");
    assert_eq!(task.attribute("id").as_deref(), Some("traced"));
    assert_eq!(parent_of(one("lease wait")), "task");
    for step in ["step user-release", "step generated-release"] {
        assert_eq!(parent_of(one(step)), "task", "{step}");
    }
    let helm: Vec<&&ReceivedSpan> = trace
        .iter()
        .filter(|s| s.name().starts_with("helm "))
        .collect();
    assert!(
        helm.iter().any(|s| s.name() == "helm upgrade"
            && s.attribute("release").as_deref() == Some("shop-dev-hello")
            && s.attribute("namespace").as_deref() == Some("shop-dev")),
        "{names:?}"
    );
    for call in &helm {
        assert!(
            parent_of(call).starts_with("step "),
            "{} under a step",
            call.name()
        );
    }
    let rollouts: Vec<&&ReceivedSpan> = trace
        .iter()
        .filter(|s| s.name() == "rollout wait")
        .collect();
    assert!(!rollouts.is_empty(), "{names:?}");
    assert!(rollouts.iter().all(|s| parent_of(s).starts_with("step ")));
    // Every span of the trace hangs from the root.
    for span in &trace {
        if span.span_id() != root.span_id() {
            assert_ne!(
                parent_of(span),
                "(outside the trace)",
                "{} is in the tree",
                span.name()
            );
        }
    }
    // The replies carry the task span's traceparent.
    let expected = format!("00-{TRACE_ID}-{}-01", task.span_id());
    assert_eq!(finished["traceparent"], expected.as_str());
    let replies = env.env.replies().await?;
    assert_eq!(
        replies.of("traced", "started")[0]["traceparent"],
        expected.as_str()
    );
    Ok(())
}

#[tokio::test]
async fn a_collector_that_is_away_or_silent_slows_nothing_and_its_spans_are_counted_dropped(
) -> anyhow::Result<()> {
    let env = env().await?;
    // A port nobody listens on (bound, then closed), and one that accepts connections and
    // never answers (a hung collector: each export waits for its timeout, 2 s here).
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    };
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let silent_port = silent.local_addr()?.port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let cases = [
        ("grpc-closed", Transport::Grpc, closed),
        ("http-closed", Transport::HttpProtobuf, closed),
        ("grpc-silent", Transport::Grpc, silent_port),
        ("http-silent", Transport::HttpProtobuf, silent_port),
    ];
    // One service per worker, so none waits for a release another parked.
    for service in ["plain"].into_iter().chain(cases.iter().map(|c| c.0)) {
        env.push_chart(("shop", "dev", service), &example_chart())?;
    }
    // Baseline: the same deployment without traces.
    let plain = env.start_worker(env.worker_spec(), "plain").await?;
    let started = Instant::now();
    let finished = env
        .deploy(
            &deployment_event("plain", "plain", "direct", json!({})),
            WAIT,
        )
        .await?;
    let without = started.elapsed();
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    drop(plain);

    for (service, transport, port) in cases {
        let mut spec = env.worker_spec();
        spec.env.extend([
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                format!("http://127.0.0.1:{port}"),
            ),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL".to_owned(),
                transport.protocol().to_owned(),
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT".to_owned(), "2000".to_owned()),
        ]);
        let worker = env.start_worker(spec, service).await?;
        let started = Instant::now();
        let event = deployment_event(service, service, "direct", json!({}));
        let finished = env.deploy(&event, WAIT).await?;
        let with = started.elapsed();
        assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
        eprintln!("{service}: {with:?} with traces to nowhere, {without:?} without traces");
        // Generous, the machine is shared; but a worker that waited for its exports would
        // spend the export timeout more than once.
        assert!(
            with < without + Duration::from_secs(5),
            "{service}: {with:?} against {without:?}"
        );
        let dropped = spans_dropped_by_failed_exports(&worker).await?;
        eprintln!("{service}: {dropped} spans counted dropped");
        drop(worker);
    }
    holder.abort();
    Ok(())
}

/// A collector behind TLS whose CA the worker was not given (only the system's roots are
/// trusted): every handshake fails, nothing is exported, and the worker goes on deploying,
/// counting the spans it drops; over both transports.
#[tokio::test]
async fn a_collector_whose_certificate_is_not_trusted_gets_nothing_and_the_worker_carries_on(
) -> anyhow::Result<()> {
    let pki = TestPki::generate("a-ca-nobody-trusts")?;
    let env = env().await?;
    for (service, transport) in [
        ("untrusted-grpc", Transport::Grpc),
        ("untrusted-http", Transport::HttpProtobuf),
    ] {
        env.push_chart(("shop", "dev", service), &example_chart())?;
        let receiver = OtlpReceiver::start_tls(transport, &pki, ClientAuth::None).await?;
        let mut spec = env.worker_spec();
        spec.env.extend(receiver.env(service));
        spec.env
            .push(("OTEL_EXPORTER_OTLP_TIMEOUT".to_owned(), "2000".to_owned()));
        let worker = env.start_worker(spec, service).await?;
        let first = deployment_event(&format!("{service}-1"), service, "direct", json!({}));
        let finished = env.deploy(&first, WAIT).await?;
        assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
        let dropped = spans_dropped_by_failed_exports(&worker)
            .await
            .map_err(|err| err.context(worker.process.log_tail(40)))?;
        // The handshake is what failed, and the worker still takes events.
        assert!(receiver.tls_handshake_failures() > 0, "{service}");
        let second = deployment_event(&format!("{service}-2"), service, "direct", json!({}));
        let finished = env.deploy(&second, WAIT).await?;
        assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
        let log = worker.process.log_tail(2000);
        let logged = log
            .lines()
            .find(|line| line.contains("could not export trace spans"))
            .map(str::to_owned);
        // With its cause, over HTTP too (the exporter itself says only "network error").
        let logged =
            logged.ok_or_else(|| anyhow::anyhow!("{service}: no failure logged: {log}"))?;
        assert!(
            logged.contains("invalid peer certificate: UnknownIssuer"),
            "{service}: {logged}"
        );
        eprintln!("{service}: {logged}");
        assert_eq!(receiver.requests(), 0, "{service}: nothing got through");
        assert!(receiver.spans().is_empty());
        eprintln!(
            "{service}: {dropped} spans counted dropped, {} handshakes refused",
            receiver.tls_handshake_failures()
        );
        drop(worker);
    }
    Ok(())
}

/// Waits (bounded) until `worker` counts spans dropped because their export failed; the count.
async fn spans_dropped_by_failed_exports(
    worker: &system_tests::worker_process::WorkerProcess,
) -> anyhow::Result<f64> {
    test_harness::wait::wait_until(
        "spans counted dropped",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let dropped = worker
                .metric("helm_service_trace_spans_dropped_total{reason=\"export_failed\"}")
                .await
                .ok()?;
            (dropped > 0.0).then_some(dropped)
        },
    )
    .await
}
