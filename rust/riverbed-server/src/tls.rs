//! TLS for the broker's listener: rustls with the ring provider, a PEM certificate chain and its
//! private key (PKCS#8, PKCS#1 RSA or SEC1 EC), TLS 1.2 and 1.3, no client certificates.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::security::{read_file, SecurityError};

/// The acceptor that wraps each accepted TCP stream.
pub fn acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, SecurityError> {
    let cert_pem = read_file("TLS certificate", cert)?;
    let key_pem = read_file("TLS private key", key)?;
    let tls = |what: &'static str, path: &Path, reason: String| SecurityError::Tls {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            tls(
                "certificate",
                cert,
                format!("not a PEM certificate chain: {e}"),
            )
        })?;
    if chain.is_empty() {
        return Err(tls(
            "certificate",
            cert,
            "holds no `BEGIN CERTIFICATE` block (expected a PEM certificate chain, leaf first)"
                .into(),
        ));
    }
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        tls(
            "private key",
            key,
            format!("no usable PEM private key (PKCS#8, RSA or EC): {e}"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls("certificate", cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| {
            tls(
                "private key",
                key,
                format!("does not fit the certificate {}: {e}", cert.display()),
            )
        })?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
