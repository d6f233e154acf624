//! Traces: `tracing` spans exported over OTLP, configured the standard way.
//!
//! Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set;
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (or `..._TRACES_PROTOCOL`) picks `grpc` or `http/protobuf`
//! (the default, as the OpenTelemetry specification says); `OTEL_SERVICE_NAME` names the
//! service (`helm-service` when unset); `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`
//! turn it off. An `https://` endpoint is reached over TLS, with the certificate variables of
//! the specification (`tls.rs`); those are refused with an `http://` one, which they cannot
//! secure. The exporter reads the endpoint, headers, timeout and compression variables
//! itself, with the specification's rules (an HTTP endpoint gets `/v1/traces` appended).
//!
//! One trace per event: the processor's `event` span is its root here, a child of the
//! triggered event's `traceparent` ([`remote_parent`]); replies carry the `traceparent` of
//! the span that sends them ([`current_traceparent`]). Only the worker's own spans are
//! exported (target `worker`, level info and above), whatever `RUST_LOG` says of logs.

use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
};
use opentelemetry::Context;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::export::QueueProcessor;
use super::http_client;
use super::tls::TlsFiles;

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// Trace export as the environment configures it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceExport {
    pub protocol: Protocol,
    /// `OTEL_SERVICE_NAME`, else `helm-service`.
    pub service_name: String,
    /// How long one export may take (`OTEL_EXPORTER_OTLP_TIMEOUT`, milliseconds; 10 s).
    pub timeout: Duration,
    /// The TLS files of an `https://` endpoint (`None` for `http://`).
    pub tls: Option<TlsFiles>,
}

/// Default export timeout of the specification.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the standard variables through `var` (see the module docs): `None` when traces
/// are off, an error naming the variable when one is set to something we cannot do.
pub fn trace_export(var: impl Fn(&str) -> Option<String>) -> Result<Option<TraceExport>, String> {
    let set = |name: &str| {
        var(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let endpoint =
        set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let disabled = set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    let Some(endpoint) = endpoint.filter(|_| !disabled) else {
        return Ok(None);
    };
    let files = TlsFiles::from_env(set)?;
    let tls = if endpoint.starts_with("https://") {
        Some(files)
    } else if endpoint.starts_with("http://") {
        if let Some(var) = files.first_var() {
            return Err(format!(
                "{var} is set but the OTLP endpoint {:?} is plain text: use an https:// endpoint",
                crate::secret::redact_user_info(&endpoint)
            ));
        }
        None
    } else {
        return Err(format!(
            "OTLP endpoint {:?}: expected an http:// or https:// URL",
            crate::secret::redact_user_info(&endpoint)
        ));
    };
    let (name, protocol) = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
        Some(p) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", Some(p)),
        None => (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            set("OTEL_EXPORTER_OTLP_PROTOCOL"),
        ),
    };
    let protocol = match protocol.as_deref() {
        None | Some("http/protobuf") => Protocol::HttpProtobuf,
        Some("grpc") => Protocol::Grpc,
        Some(other) => {
            return Err(format!(
                "{name}={other:?} is not supported: use \"grpc\" or \"http/protobuf\""
            ))
        }
    };
    let timeout = match set("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
        .or_else(|| set("OTEL_EXPORTER_OTLP_TIMEOUT"))
    {
        None => DEFAULT_TIMEOUT,
        Some(ms) => ms
            .parse::<u64>()
            .ok()
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis)
            .ok_or_else(|| format!("OTEL_EXPORTER_OTLP_TIMEOUT={ms:?}: expected milliseconds"))?,
    };
    Ok(Some(TraceExport {
        protocol,
        service_name: set("OTEL_SERVICE_NAME").unwrap_or_else(|| "helm-service".into()),
        timeout,
        tls,
    }))
}

/// The tracer provider exporting to the configured collector (its export thread started);
/// the TLS files, if any, are read and checked here, at start.
pub fn provider(export: &TraceExport) -> Result<SdkTracerProvider, String> {
    let tls = export
        .tls
        .as_ref()
        .map(|files| files.load(export.timeout))
        .transpose()?;
    let resource = Resource::builder()
        .with_service_name(export.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let (protocol, timeout, exporter_resource) =
        (export.protocol, export.timeout, resource.clone());
    let processor = QueueProcessor::start(
        move || {
            use opentelemetry_sdk::trace::SpanExporter as _;
            let builder = opentelemetry_otlp::SpanExporter::builder();
            // gRPC errors carry their causes already; the HTTP client keeps them.
            let (built, cause) = match protocol {
                Protocol::Grpc => {
                    let builder = builder.with_tonic().with_timeout(timeout);
                    let built = match &tls {
                        Some(tls) => builder.with_tls_config(tls.grpc()).build(),
                        None => builder.build(),
                    };
                    (built, Default::default())
                }
                Protocol::HttpProtobuf => {
                    let (client, cause) = http_client::client(tls.as_ref(), timeout);
                    let built = builder
                        .with_http()
                        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                        .with_timeout(timeout)
                        .with_http_client(client)
                        .build();
                    (built, cause)
                }
            };
            let inner = built.map_err(|err| format!("the OTLP trace exporter: {err}"))?;
            let mut exporter = http_client::WithCause { inner, cause };
            exporter.set_resource(&exporter_resource);
            Ok(exporter)
        },
        timeout,
    )?;
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}

/// The tracer the `tracing` layer records with.
pub fn tracer(provider: &SdkTracerProvider) -> opentelemetry_sdk::trace::Tracer {
    provider.tracer("helm-service")
}

/// The remote parent a W3C `traceparent` names (with `tracestate`, when valid), or `None`
/// when it is not one (`contracts::trace_context`).
pub fn remote_parent(traceparent: &str, tracestate: Option<&str>) -> Option<Context> {
    if !contracts::trace_context::is_valid_traceparent(traceparent) {
        return None;
    }
    let trace_id = TraceId::from_hex(&traceparent[3..35]).ok()?;
    let span_id = SpanId::from_hex(&traceparent[36..52]).ok()?;
    let flags = u8::from_str_radix(&traceparent[53..55], 16).ok()?;
    let state = tracestate
        .filter(|s| contracts::trace_context::is_valid_tracestate(s))
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let context = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        state,
    );
    Some(Context::new().with_remote_span_context(context))
}

/// The remote parent named by a CloudEvent's `traceparent` (and `tracestate`) in its JSON,
/// read ahead of intake so the event's root span can start as its child. Anything that is
/// not such an event has none; intake judges it later.
pub fn event_parent(payload: &[u8]) -> Option<Context> {
    #[derive(serde::Deserialize)]
    struct TraceAttributes<'a> {
        #[serde(borrow)]
        traceparent: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        tracestate: Option<std::borrow::Cow<'a, str>>,
    }
    let attributes: TraceAttributes = serde_json::from_slice(payload).ok()?;
    remote_parent(
        attributes.traceparent.as_deref()?,
        attributes.tracestate.as_deref(),
    )
}

/// The `traceparent` of the current `tracing` span, when it is exported (`None` with traces
/// off, or outside any exported span).
pub fn current_traceparent() -> Option<String> {
    if !super::exporting() {
        return None;
    }
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::tls::FileSetting;
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Option<TraceExport>, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        trace_export(|name| vars.get(name).cloned())
    }

    #[test]
    fn the_standard_variables_turn_traces_on_and_pick_the_transport() {
        assert_eq!(from(&[]), Ok(None));
        assert_eq!(from(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]), Ok(None));
        let on = from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")])
            .unwrap()
            .unwrap();
        assert_eq!(
            on,
            TraceExport {
                protocol: Protocol::HttpProtobuf,
                service_name: "helm-service".into(),
                timeout: Duration::from_secs(10),
                tls: None,
            }
        );
        let grpc = from(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://collector:4317",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "helm-service-eu"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(grpc.protocol, Protocol::Grpc);
        assert_eq!(grpc.service_name, "helm-service-eu");
        assert_eq!(grpc.timeout, Duration::from_millis(2500));
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert_eq!(from(&[endpoint, ("OTEL_SDK_DISABLED", "true")]), Ok(None));
        assert_eq!(
            from(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]),
            Ok(None)
        );
        let json = from(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).unwrap_err();
        assert!(json.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{json}");
        assert!(from(&[endpoint, ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]).is_err());
        let neither = from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4318")]).unwrap_err();
        assert!(neither.contains("https://"), "{neither}");
        // User info in the endpoint is never repeated.
        let secret =
            from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://user:s3cret@c:4318")]).unwrap_err();
        assert!(!secret.contains("s3cret"), "{secret}");
    }

    fn setting(var: &'static str, path: &str) -> Option<FileSetting> {
        Some(FileSetting {
            var,
            path: path.into(),
        })
    }

    #[test]
    fn an_https_endpoint_takes_the_certificate_variables_the_traces_ones_first() {
        let https = ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318");
        // The system's roots: no files.
        let plain = from(&[https]).unwrap().unwrap();
        assert_eq!(plain.tls, Some(TlsFiles::default()));
        let ca = from(&[https, ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem")])
            .unwrap()
            .unwrap();
        assert_eq!(
            ca.tls.unwrap().ca,
            setting("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem")
        );
        let both = from(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://collector:4317",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/generic/ca.pem"),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces/ca.pem"),
            (
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                "/generic/client.pem",
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
                "/traces/client.pem",
            ),
            // Each variable on its own: the generic key with the traces certificate.
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", " /generic/client.key "),
            ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", ""),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(both.protocol, Protocol::Grpc);
        assert_eq!(
            both.tls,
            Some(TlsFiles {
                ca: setting("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces/ca.pem"),
                client: Some((
                    setting(
                        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
                        "/traces/client.pem"
                    )
                    .unwrap(),
                    setting("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/generic/client.key").unwrap(),
                )),
            })
        );
        // Half of mutual TLS is a mistake, named.
        let no_key = from(&[
            https,
            (
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
                "/client.pem",
            ),
        ])
        .unwrap_err();
        assert!(
            no_key.starts_with("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE is set without OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY (or OTEL_EXPORTER_OTLP_CLIENT_KEY)"),
            "{no_key}"
        );
        let no_cert = from(&[https, ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/client.key")]).unwrap_err();
        assert!(
            no_cert.contains("without OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE"),
            "{no_cert}"
        );
        // Certificates cannot secure a plain-text endpoint: refused, not ignored.
        let plain_text = from(&[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://user:s3cret@collector:4318",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/ca.pem"),
        ])
        .unwrap_err();
        assert!(
            plain_text.starts_with("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE is set")
                && plain_text.contains("https://")
                && !plain_text.contains("s3cret"),
            "{plain_text}"
        );
        // Turned off, nothing is checked.
        assert_eq!(
            from(&[
                https,
                ("OTEL_SDK_DISABLED", "true"),
                ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k")
            ]),
            Ok(None)
        );
    }

    #[test]
    fn a_traceparent_becomes_the_remote_parent() {
        let parent = remote_parent(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            Some("congo=t61rcWkgMzE"),
        )
        .unwrap();
        let span = parent.span();
        let context = span.span_context();
        assert_eq!(
            context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(context.span_id().to_string(), "b7ad6b7169203331");
        assert!(context.is_sampled() && context.is_remote());
        assert_eq!(context.trace_state().get("congo"), Some("t61rcWkgMzE"));
        assert!(remote_parent("00-abc-def-01", None).is_none());
        let event = br#"{"id": "1", "data": {"traceparent": "x"},
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}"#;
        let parent = event_parent(event).unwrap();
        assert_eq!(
            parent.span().span_context().span_id().to_string(),
            "b7ad6b7169203331"
        );
        assert!(event_parent(br#"{"id": "1"}"#).is_none());
        assert!(event_parent(b"not json").is_none());
        let unsampled = remote_parent(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
            None,
        )
        .unwrap();
        assert!(!unsampled.span().span_context().is_sampled());
    }
}
