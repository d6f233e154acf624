//! PEM files of TLS clients (NATS, the OTLP exporter): CA bundles, client certificates and
//! their keys, read and checked when the worker starts, any problem named by the flag or
//! variable that gave the file and its path, never by its content.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::secret::{read_file, Secret, SecretFileError};

/// The certificates of a PEM file; at least one.
pub fn certificates(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, SecretFileError> {
    parse_certificates(flag, path, &read_file(flag, path)?)
}

/// [`certificates`] of the `text` read from `path`, for a client that also takes the text.
pub fn parse_certificates(
    flag: &'static str,
    path: &Path,
    text: &str,
) -> Result<Vec<CertificateDer<'static>>, SecretFileError> {
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| invalid(flag, path, "is not a PEM file"))?;
    if certs.is_empty() {
        return Err(invalid(flag, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// The roots of a CA bundle: every certificate of it must be usable as one.
pub fn roots(flag: &'static str, path: &Path) -> Result<RootCertStore, SecretFileError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(flag, path)? {
        roots.add(cert).map_err(|err| {
            invalid(
                flag,
                path,
                &format!("holds a certificate that cannot be a CA: {err}"),
            )
        })?;
    }
    Ok(roots)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1; RSA, ECDSA or EdDSA), and the file's text, which some
/// clients take as such.
pub fn private_key(
    flag: &'static str,
    path: &Path,
) -> Result<(PrivateKeyDer<'static>, Secret), SecretFileError> {
    let text = read_file(flag, path)?;
    let key = PrivateKeyDer::from_pem_slice(text.as_bytes())
        .map_err(|_| invalid(flag, path, "holds no PEM private key"))?;
    rustls::crypto::ring::sign::any_supported_type(&key).map_err(|err| {
        invalid(
            flag,
            path,
            &format!("holds a private key that cannot be used: {err}"),
        )
    })?;
    Ok((key, Secret::new(text)))
}

/// A client configuration trusting `roots` and, for mutual TLS, presenting `client` (chain
/// and key): the check that they belong together, made now rather than at the first
/// handshake. Always ring, the one crypto provider of the build.
pub fn client_config(
    roots: RootCertStore,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<ClientConfig, rustls::Error> {
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
    match client {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key),
        None => Ok(builder.with_no_client_auth()),
    }
}

fn invalid(flag: &'static str, path: &Path, problem: &str) -> SecretFileError {
    SecretFileError::Invalid {
        flag,
        path: path.to_owned(),
        problem: problem.to_owned(),
    }
}
