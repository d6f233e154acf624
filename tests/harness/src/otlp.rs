//! An OTLP trace receiver for tests: what a collector does with the spans a process
//! exports, and nothing more. It listens on loopback over gRPC
//! (`opentelemetry.proto.collector.trace.v1.TraceService/Export`, served by tonic) or
//! HTTP/protobuf (`POST /v1/traces`, served by axum), decodes the official protobuf messages
//! (`opentelemetry-proto`) and keeps every span with its resource's `service.name`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The OTLP transport a receiver serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    HttpProtobuf,
}

impl Transport {
    /// The value of `OTEL_EXPORTER_OTLP_PROTOCOL` that selects it.
    pub fn protocol(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::HttpProtobuf => "http/protobuf",
        }
    }
}

/// A span as received, with the service that sent it.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub span: Span,
}

impl ReceivedSpan {
    pub fn name(&self) -> &str {
        &self.span.name
    }

    /// Lower-case hex, as in a `traceparent`.
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    /// Empty for a root span.
    pub fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    /// The string value of attribute `key`, if it has one.
    pub fn attribute(&self, key: &str) -> Option<String> {
        string_attribute(&self.span.attributes, key)
    }
}

#[derive(Default)]
struct Received {
    /// Whether spans are kept, or only counted (a bench receives hundreds of thousands).
    keep: bool,
    spans: Mutex<Vec<ReceivedSpan>>,
    count: std::sync::atomic::AtomicU64,
    /// Export requests taken, whether or not they held spans.
    requests: Mutex<u64>,
    arrived: Notify,
}

impl Received {
    fn take(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| string_attribute(&r.attributes, "service.name"))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                self.count.fetch_add(
                    scope.spans.len() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                if !self.keep {
                    continue;
                }
                spans.extend(scope.spans.into_iter().map(|span| ReceivedSpan {
                    service: service.clone(),
                    span,
                }));
            }
        }
        *self.requests.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.arrived.notify_waiters();
    }
}

/// A running receiver; stops when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    transport: Transport,
    received: Arc<Received>,
    server: JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct GrpcService(Arc<Received>);

#[tonic::async_trait]
impl TraceService for GrpcService {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl OtlpReceiver {
    /// Starts a receiver on a free loopback port.
    pub async fn start(transport: Transport) -> anyhow::Result<OtlpReceiver> {
        Self::serve(transport, 0, true).await
    }

    /// A receiver that only counts the spans (see [`OtlpReceiver::span_count`]), on loopback
    /// port `port`: for a process whose environment had to name it before it could start.
    pub async fn counting_on(transport: Transport, port: u16) -> anyhow::Result<OtlpReceiver> {
        Self::serve(transport, port, false).await
    }

    async fn serve(transport: Transport, port: u16, keep: bool) -> anyhow::Result<OtlpReceiver> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Received {
            keep,
            ..Received::default()
        });
        let server = match transport {
            Transport::Grpc => {
                let service = TraceServiceServer::new(GrpcService(received.clone()));
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                tokio::spawn(async move {
                    let _ = tonic::transport::Server::builder()
                        .add_service(service)
                        .serve_with_incoming(incoming)
                        .await;
                })
            }
            Transport::HttpProtobuf => {
                let state = received.clone();
                let app = axum::Router::new().route(
                    "/v1/traces",
                    axum::routing::post(move |body: Bytes| {
                        let state = state.clone();
                        async move { http_export(&state, &body) }
                    }),
                );
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                })
            }
        };
        Ok(OtlpReceiver {
            addr,
            transport,
            received,
            server,
        })
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The environment that makes a process export its traces here as `service`.
    pub fn env(&self, service: &str) -> Vec<(String, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), self.endpoint()),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL".into(),
                self.transport.protocol().into(),
            ),
            ("OTEL_SERVICE_NAME".into(), service.into()),
        ]
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received
            .spans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Spans received so far, kept or not.
    pub fn span_count(&self) -> u64 {
        self.received
            .count
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Export requests received so far.
    pub fn requests(&self) -> u64 {
        *self
            .received
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `until` holds for the spans received, up to `deadline`; the spans then.
    pub async fn wait_for(
        &self,
        deadline: Duration,
        mut until: impl FnMut(&[ReceivedSpan]) -> bool,
    ) -> anyhow::Result<Vec<ReceivedSpan>> {
        let give_up = tokio::time::Instant::now() + deadline;
        loop {
            let arrived = self.received.arrived.notified();
            let spans = self.spans();
            if until(&spans) {
                return Ok(spans);
            }
            if tokio::time::timeout_at(give_up, arrived).await.is_err() {
                let names: Vec<&str> = spans.iter().map(ReceivedSpan::name).collect();
                anyhow::bail!(
                    "the spans awaited did not arrive within {deadline:?}; received: {names:?}"
                );
            }
        }
    }
}

/// `POST /v1/traces`: a binary `ExportTraceServiceRequest` in, an empty response out.
fn http_export(received: &Received, body: &[u8]) -> axum::response::Response {
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            received.take(request);
            let response = ExportTraceServiceResponse {
                partial_success: None,
            };
            (
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                response.encode_to_vec(),
            )
                .into_response()
        }
        Err(err) => (StatusCode::BAD_REQUEST, err.to_string()).into_response(),
    }
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(AnyValue::StringValue(s)) => Some(s.clone()),
            Some(AnyValue::IntValue(i)) => Some(i.to_string()),
            Some(AnyValue::BoolValue(b)) => Some(b.to_string()),
            _ => None,
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

    fn request(name: &str) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        name: name.into(),
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        ..Span::default()
                    }],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    #[tokio::test]
    async fn receives_over_grpc_and_http() -> anyhow::Result<()> {
        let grpc = OtlpReceiver::start(Transport::Grpc).await?;
        let mut client = TraceServiceClient::connect(grpc.endpoint()).await?;
        client.export(request("over grpc")).await?;
        let spans = grpc
            .wait_for(Duration::from_secs(10), |s| !s.is_empty())
            .await?;
        assert_eq!(spans[0].name(), "over grpc");
        assert_eq!(spans[0].trace_id(), "01".repeat(16));

        let http = OtlpReceiver::start(Transport::HttpProtobuf).await?;
        let response = reqwest::Client::new()
            .post(format!("{}/v1/traces", http.endpoint()))
            .header("content-type", "application/x-protobuf")
            .body(request("over http").encode_to_vec())
            .send()
            .await?;
        assert!(response.status().is_success());
        let spans = http
            .wait_for(Duration::from_secs(10), |s| !s.is_empty())
            .await?;
        assert_eq!(spans[0].name(), "over http");
        let bad = reqwest::Client::new()
            .post(format!("{}/v1/traces", http.endpoint()))
            .body(vec![0xff, 0xff, 0xff])
            .send()
            .await?;
        assert_eq!(bad.status(), 400);
        Ok(())
    }
}
