//! The HTTP/protobuf exporter's client, and the cause of its failures.
//!
//! The OTLP exporter reports a request that did not complete as "HTTP export failed: network
//! error", whatever happened (a refused connection, an untrusted certificate). So the client
//! is ours: hyper as before, over rustls for `https://` (`tls.rs`), keeping the error of the
//! last request, with its chain of causes; and the exporter is wrapped so a failed export
//! carries it (`export.rs` logs it, at most once a minute).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;

use super::tls::ExportTls;

/// The error of the last request, when it failed.
type LastCause = Arc<Mutex<Option<String>>>;

/// An HTTP client that keeps the cause of its last failure.
#[derive(Debug)]
pub struct CauseKeeping {
    inner: Arc<dyn HttpClient>,
    cause: LastCause,
}

/// The client for the exporter (hyper; over rustls with `tls`, requests bounded by
/// `timeout`), and the cause it keeps, for [`WithCause`].
pub fn client(tls: Option<&ExportTls>, timeout: Duration) -> (CauseKeeping, LastCause) {
    let inner: Arc<dyn HttpClient> = match tls {
        Some(tls) => tls.http_client(timeout),
        None => {
            Arc::new(opentelemetry_http::hyper::HyperClient::with_default_connector(timeout, None))
        }
    };
    let cause = LastCause::default();
    (
        CauseKeeping {
            inner,
            cause: cause.clone(),
        },
        cause,
    )
}

#[async_trait]
impl HttpClient for CauseKeeping {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let sent = self.inner.send_bytes(request).await;
        *self.cause.lock().unwrap_or_else(|e| e.into_inner()) =
            sent.as_ref().err().map(|err| chain(err.as_ref()));
        sent
    }
}

/// `error` and its sources, `: ` between (the last repeats of one another left out).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.ends_with(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// The exporter, its failures with the cause its client kept.
#[derive(Debug)]
pub struct WithCause<E> {
    pub inner: E,
    pub cause: LastCause,
}

impl<E: SpanExporter> SpanExporter for WithCause<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.inner.export(batch).await.map_err(|err| {
            let cause = self.cause.lock().unwrap_or_else(|e| e.into_inner()).take();
            match (err, cause) {
                (OTelSdkError::InternalFailure(message), Some(cause)) => {
                    OTelSdkError::InternalFailure(format!("{message} ({cause})"))
                }
                (err, _) => err,
            }
        })
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_request_keeps_its_causes() {
        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (client, cause) = client(None, Duration::from_secs(5));
        let request = Request::post(format!("http://127.0.0.1:{port}/v1/traces"))
            .body(Bytes::from_static(b"spans"))
            .unwrap();
        assert!(client.send_bytes(request).await.is_err());
        let kept = cause.lock().unwrap().clone().unwrap();
        assert!(kept.contains("onnect"), "{kept}");
        assert!(kept.to_lowercase().contains("refused"), "{kept}");
    }
}
