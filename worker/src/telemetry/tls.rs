//! TLS to an `https://` OTLP collector, configured by the standard variables:
//! `OTEL_EXPORTER_OTLP_CERTIFICATE`, a PEM CA bundle (then the only roots trusted; else the
//! system's, from `/etc/ssl/certs` or `SSL_CERT_FILE`/`SSL_CERT_DIR`), and for mutual TLS
//! `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` with `OTEL_EXPORTER_OTLP_CLIENT_KEY`; each has a
//! `_TRACES_` variant that wins over it, as the specification says.
//!
//! Which files apply is decided from the variables alone ([`TlsFiles::from_env`], unit
//! tested); the files are read and checked once, at start ([`TlsFiles::load`]), so a file
//! that cannot work stops the worker with the variable named rather than failing every
//! export. A handshake that fails later (a collector whose certificate is not trusted) is an
//! export failure like any other: counted, the spans dropped (`export.rs`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_otlp::tonic_types::transport::{ClientTlsConfig, Identity};
use rustls::RootCertStore;

use crate::pem;
use crate::secret::read_file;

/// A file named by one of the variables, with the variable that named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSetting {
    pub var: &'static str,
    pub path: PathBuf,
}

/// The TLS files the environment names for trace export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA bundle to trust instead of the system's roots.
    pub ca: Option<FileSetting>,
    /// Certificate (chain) and key presented for mutual TLS.
    pub client: Option<(FileSetting, FileSetting)>,
}

const CA: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
];
const CLIENT_CERTIFICATE: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
];
const CLIENT_KEY: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
    "OTEL_EXPORTER_OTLP_CLIENT_KEY",
];

impl TlsFiles {
    /// The files `set` (a variable's trimmed, non-empty value) names; a client certificate
    /// without its key, or a key without its certificate, is an error naming what is missing.
    pub fn from_env(set: impl Fn(&str) -> Option<String>) -> Result<TlsFiles, String> {
        let setting = |[traces, generic]: [&'static str; 2]| {
            [traces, generic].into_iter().find_map(|var| {
                set(var).map(|path| FileSetting {
                    var,
                    path: path.into(),
                })
            })
        };
        let client = match (setting(CLIENT_CERTIFICATE), setting(CLIENT_KEY)) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(given), None) | (None, Some(given)) => {
                let missing = if CLIENT_KEY.contains(&given.var) {
                    CLIENT_CERTIFICATE
                } else {
                    CLIENT_KEY
                };
                return Err(format!(
                    "{} is set without {} (or {}): mutual TLS needs both the client certificate and its key",
                    given.var, missing[0], missing[1]
                ));
            }
        };
        Ok(TlsFiles {
            ca: setting(CA),
            client,
        })
    }

    /// The first variable set, if any (they only apply to an `https://` endpoint).
    pub fn first_var(&self) -> Option<&'static str> {
        self.ca
            .as_ref()
            .or(self.client.as_ref().map(|(cert, _)| cert))
            .map(|setting| setting.var)
    }

    /// Reads and checks the files (the CA bundle, the client certificate and key, and that
    /// the two belong together); without a CA bundle, the system's roots, which must exist.
    pub fn load(&self, handshake_timeout: Duration) -> Result<ExportTls, String> {
        let roots = match &self.ca {
            Some(ca) => pem::roots(ca.var, &ca.path).map_err(|err| err.to_string())?,
            None => system_roots()?,
        };
        let grpc = ClientTlsConfig::new()
            .trust_anchors(roots.roots.iter().cloned())
            .timeout(handshake_timeout);
        let (https, grpc) = match &self.client {
            Some((cert, key)) => {
                let cert_text = read_file(cert.var, &cert.path).map_err(|e| e.to_string())?;
                let chain = pem::parse_certificates(cert.var, &cert.path, &cert_text)
                    .map_err(|e| e.to_string())?;
                let (private_key, key_text) =
                    pem::private_key(key.var, &key.path).map_err(|e| e.to_string())?;
                let https =
                    pem::client_config(roots, Some((chain, private_key))).map_err(|err| {
                        format!(
                            "{} and {} cannot be used together: {err}",
                            cert.var, key.var
                        )
                    })?;
                let identity = Identity::from_pem(cert_text, key_text.expose());
                (https, grpc.identity(identity))
            }
            None => {
                let https = pem::client_config(roots, None)
                    .map_err(|err| format!("the TLS client for the OTLP collector: {err}"))?;
                (https, grpc)
            }
        };
        Ok(ExportTls { grpc, https })
    }
}

/// The system's CA certificates; none at all is an error (every handshake would fail).
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found
            .errors
            .first()
            .map(|err| format!(" ({err})"))
            .unwrap_or_default();
        return Err(format!(
            "the OTLP endpoint is https:// and no system CA certificates were found{why}: set OTEL_EXPORTER_OTLP_CERTIFICATE to the collector's CA bundle"
        ));
    }
    Ok(roots)
}

/// The TLS clients of both transports, made from checked files. No `Debug`: the gRPC side
/// holds the client key.
pub struct ExportTls {
    grpc: ClientTlsConfig,
    https: rustls::ClientConfig,
}

impl ExportTls {
    /// For the tonic (gRPC) exporter.
    pub fn grpc(&self) -> ClientTlsConfig {
        self.grpc.clone()
    }

    /// For the HTTP exporter (`http_client.rs`): hyper over rustls (HTTP/1.1), requests
    /// bounded by `timeout`.
    pub fn http_client(&self, timeout: Duration) -> Arc<dyn opentelemetry_http::HttpClient> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(self.https.clone())
            .https_only()
            .enable_http1()
            .build();
        Arc::new(opentelemetry_http::hyper::HyperClient::new(
            connector, timeout, None,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_harness::pki::TestPki;

    fn file(var: &'static str, path: impl Into<PathBuf>) -> FileSetting {
        FileSetting {
            var,
            path: path.into(),
        }
    }

    fn load(files: TlsFiles) -> Result<ExportTls, String> {
        files.load(Duration::from_secs(1))
    }

    #[test]
    fn the_files_are_checked_at_start_and_problems_name_the_variable() {
        let pki = TestPki::generate("otlp-test-ca").unwrap();
        let ca = || Some(file("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.ca()));
        let client = |key| {
            Some((
                file("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", pki.client_cert()),
                file("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", key),
            ))
        };
        assert!(load(TlsFiles {
            ca: ca(),
            client: None
        })
        .is_ok());
        assert!(load(TlsFiles {
            ca: ca(),
            client: client(pki.client_key()),
        })
        .is_ok());

        let missing = load(TlsFiles {
            ca: Some(file(
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                "/nonexistent/ca.pem",
            )),
            client: None,
        })
        .err()
        .unwrap();
        assert!(
            missing.starts_with(
                "cannot read OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE /nonexistent/ca.pem"
            ),
            "{missing}"
        );
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello\n").unwrap();
        let invalid = load(TlsFiles {
            ca: Some(file("OTEL_EXPORTER_OTLP_CERTIFICATE", &not_pem)),
            client: None,
        })
        .err()
        .unwrap();
        assert!(
            invalid.starts_with("OTEL_EXPORTER_OTLP_CERTIFICATE")
                && invalid.contains("holds no PEM certificate"),
            "{invalid}"
        );
        // A key file that holds no key: named, its content never repeated.
        let not_a_key = dir.path().join("client.key");
        std::fs::write(
            &not_a_key,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let bad_key = load(TlsFiles {
            ca: ca(),
            client: client(not_a_key),
        })
        .err()
        .unwrap();
        assert!(
            bad_key.starts_with("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY"),
            "{bad_key}"
        );
        assert!(!bad_key.contains("c2VjcmV0"), "{bad_key}");
        // A certificate with another certificate's key.
        let mismatch = load(TlsFiles {
            ca: ca(),
            client: client(pki.server_key()),
        })
        .err()
        .unwrap();
        assert!(
            mismatch.starts_with("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY cannot be used together"),
            "{mismatch}"
        );
        let key_text = std::fs::read_to_string(pki.server_key()).unwrap();
        let key_body = key_text.lines().nth(1).unwrap();
        assert!(!mismatch.contains(key_body), "{mismatch}");
    }
}
