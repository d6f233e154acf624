//! An OTLP trace receiver for tests: what a collector does with the spans a process
//! exports, and nothing more. It listens on loopback over gRPC
//! (`opentelemetry.proto.collector.trace.v1.TraceService/Export`, served by tonic) or
//! HTTP/protobuf (`POST /v1/traces`, served by axum), decodes the official protobuf messages
//! (`opentelemetry-proto`) and keeps every span with its resource's `service.name`.
//!
//! With TLS ([`OtlpReceiver::start_tls`]) the same servers sit behind a TLS front on the
//! public port: it completes the handshake with the certificate of a [`TestPki`] (asking for
//! a client certificate signed by its CA, for mutual TLS), counts the handshakes that fail,
//! and relays the plain bytes to the server, whatever the transport.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;

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
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use crate::pki::TestPki;

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
    /// TLS handshakes that failed (the client did not trust us, or had no certificate).
    handshake_failures: AtomicU64,
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
    tls: bool,
    received: Arc<Received>,
    /// The server, and the TLS front when there is one.
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// How a TLS receiver authenticates clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Any client that trusts the server.
    None,
    /// Only clients presenting a certificate the test CA signed (mutual TLS).
    Required,
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
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        Self::serve(transport, listener, true)
    }

    /// A receiver that only counts the spans (see [`OtlpReceiver::span_count`]), on loopback
    /// port `port`: for a process whose environment had to name it before it could start.
    pub async fn counting_on(transport: Transport, port: u16) -> anyhow::Result<OtlpReceiver> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        Self::serve(transport, listener, false)
    }

    /// A receiver behind TLS (see the module docs), serving `pki`'s server certificate (for
    /// `127.0.0.1` and `localhost`) on a free loopback port; its [`endpoint`](Self::endpoint)
    /// is `https://`.
    pub async fn start_tls(
        transport: Transport,
        pki: &TestPki,
        client_auth: ClientAuth,
    ) -> anyhow::Result<OtlpReceiver> {
        let acceptor = tls_acceptor(pki, client_auth)?;
        let inner = TcpListener::bind(("127.0.0.1", 0)).await?;
        let inner_addr = inner.local_addr()?;
        let mut receiver = Self::serve(transport, inner, true)?;
        let front = TcpListener::bind(("127.0.0.1", 0)).await?;
        receiver.addr = front.local_addr()?;
        receiver.tls = true;
        let received = receiver.received.clone();
        receiver.tasks.push(tokio::spawn(async move {
            // Dropped with the task: the relays end with the receiver.
            let mut relays = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = front.accept() => {
                        let Ok((socket, _)) = accepted else { continue };
                        relays.spawn(relay(
                            acceptor.clone(),
                            socket,
                            inner_addr,
                            received.clone(),
                        ));
                    }
                    Some(_) = relays.join_next(), if !relays.is_empty() => {}
                }
            }
        }));
        Ok(receiver)
    }

    fn serve(
        transport: Transport,
        listener: TcpListener,
        keep: bool,
    ) -> anyhow::Result<OtlpReceiver> {
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
            tls: false,
            received,
            tasks: vec![server],
        })
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for it.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
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

    /// TLS handshakes that failed so far (always 0 without TLS).
    pub fn tls_handshake_failures(&self) -> u64 {
        self.received.handshake_failures.load(Ordering::Relaxed)
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

/// The TLS side of the front: the server certificate of `pki`, ALPN for both transports (h2
/// for gRPC, HTTP/1.1 for HTTP/protobuf), and with [`ClientAuth::Required`] the CA as the only
/// issuer of client certificates accepted.
fn tls_acceptor(
    pki: &TestPki,
    client_auth: ClientAuth,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_file_iter(pki.server_cert())
        .context("the server certificate")?
        .collect::<Result<Vec<_>, _>>()
        .context("the server certificate")?;
    let key = PrivateKeyDer::from_pem_file(pki.server_key()).context("the server key")?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Required => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(pki.ca()).context("the CA")? {
                roots.add(cert.context("the CA")?)?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// One TLS connection: the handshake (bounded; a failure counted), then its plain bytes to
/// and from the server until either side closes.
async fn relay(
    acceptor: tokio_rustls::TlsAcceptor,
    socket: TcpStream,
    server: SocketAddr,
    received: Arc<Received>,
) {
    let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(socket)).await;
    let Ok(Ok(mut tls)) = handshake else {
        received.handshake_failures.fetch_add(1, Ordering::Relaxed);
        received.arrived.notify_waiters();
        return;
    };
    let Ok(mut plain) = TcpStream::connect(server).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
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

    #[tokio::test]
    async fn receives_over_tls_and_counts_the_handshakes_that_fail() -> anyhow::Result<()> {
        let pki = TestPki::generate("otlp-receiver-test-ca")?;
        let http = OtlpReceiver::start_tls(Transport::HttpProtobuf, &pki, ClientAuth::None).await?;
        assert!(http.endpoint().starts_with("https://127.0.0.1:"));
        let trusting = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(pki.ca())?)?)
            .build()?;
        let response = trusting
            .post(format!("{}/v1/traces", http.endpoint()))
            .body(request("over https").encode_to_vec())
            .send()
            .await?;
        assert!(response.status().is_success());
        let spans = http
            .wait_for(Duration::from_secs(10), |s| !s.is_empty())
            .await?;
        assert_eq!(spans[0].name(), "over https");
        assert_eq!(http.tls_handshake_failures(), 0);
        // A client that does not trust the test CA.
        let refused = reqwest::Client::new()
            .post(format!("{}/v1/traces", http.endpoint()))
            .body(request("refused").encode_to_vec())
            .send()
            .await;
        assert!(refused.is_err());
        crate::wait::wait_until(
            "the failed handshake counted",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || async { (http.tls_handshake_failures() == 1).then_some(()) },
        )
        .await?;
        assert_eq!(http.spans().len(), 1);
        Ok(())
    }
}
