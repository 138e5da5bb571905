//! The TLS acceptor completes a handshake with a rustls client over loopback TCP, for keys in
//! PKCS#8 (rcgen) and PKCS#1 RSA / SEC1 EC (openssl); bad files are named errors.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use riverbed_server::security::SecurityError;
use riverbed_server::tls::acceptor;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct Pem {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

/// The error of an acceptor that must not be built.
fn refused(r: Result<tokio_rustls::TlsAcceptor, SecurityError>) -> SecurityError {
    match r {
        Ok(_) => panic!("the acceptor was built"),
        Err(e) => e,
    }
}

/// A self-signed certificate for `localhost`, written as PEM files (PKCS#8 key).
fn self_signed(dir: &Path, name: &str) -> Result<Pem, Box<dyn std::error::Error>> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, ck.cert.pem())?;
    std::fs::write(&key, ck.key_pair.serialize_pem())?;
    Ok(Pem {
        cert,
        key,
        der: ck.cert.der().clone(),
    })
}

fn client_config(trusted: &CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).expect("a valid certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Serves one connection with `acceptor` (echoes `ping` as `pong`) and connects a client that
/// trusts `trusted`. Returns the client's result and the TLS version it negotiated.
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    trusted: &CertificateDer<'static>,
) -> Result<rustls::ProtocolVersion, Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        if &buf == b"ping" {
            tls.write_all(b"pong").await?;
        }
        tls.shutdown().await?;
        Ok::<_, std::io::Error>(())
    });
    let connector = tokio_rustls::TlsConnector::from(client_config(trusted));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let client = async {
        let mut tls = connector
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        tls.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"pong");
        let version = tls.get_ref().1.protocol_version().ok_or("no version")?;
        Ok::<_, Box<dyn std::error::Error>>(version)
    }
    .await;
    let served = server.await?;
    let version = client?;
    served?;
    Ok(version)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn handshake_with_a_self_signed_pkcs8_certificate() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pem = self_signed(dir.path(), "server")?;
    let acc = acceptor(&pem.cert, &pem.key)?;
    let version = runtime().block_on(handshake(acc, &pem.der))?;
    assert_eq!(version, rustls::ProtocolVersion::TLSv1_3);

    // A client that trusts another certificate refuses this server: the check is real.
    let other = self_signed(dir.path(), "other")?;
    let acc = acceptor(&pem.cert, &pem.key)?;
    let refused = runtime().block_on(handshake(acc, &other.der));
    assert!(refused.is_err());
    Ok(())
}

fn openssl(args: &[&str]) -> TestResult {
    let out = std::process::Command::new("openssl").args(args).output()?;
    if !out.status.success() {
        return Err(format!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

/// PKCS#1 (`BEGIN RSA PRIVATE KEY`) and SEC1 (`BEGIN EC PRIVATE KEY`) keys, as openssl writes.
#[test]
fn handshake_with_rsa_and_ec_keys_from_openssl() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let (rsa_key, ec_key) = (d("rsa.key"), d("ec.key"));
    let cases = [
        (
            "rsa",
            vec!["genrsa", "-traditional", "-out", &rsa_key, "2048"],
            "BEGIN RSA PRIVATE KEY",
        ),
        (
            "ec",
            vec![
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &ec_key,
            ],
            "BEGIN EC PRIVATE KEY",
        ),
    ];
    for (name, genkey, marker) in cases {
        openssl(&genkey)?;
        let key = dir.path().join(format!("{name}.key"));
        assert!(std::fs::read_to_string(&key)?.contains(marker), "{name}");
        let cert = dir.path().join(format!("{name}.crt"));
        openssl(&[
            "req",
            "-new",
            "-x509",
            "-key",
            &key.to_string_lossy(),
            "-out",
            &cert.to_string_lossy(),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])?;
        let der = rustls::pki_types::pem::PemObject::from_pem_file(&cert)?;
        let acc = acceptor(&cert, &key)?;
        runtime().block_on(handshake(acc, &der))?;
    }
    Ok(())
}

#[test]
fn bad_files_are_named_errors() -> TestResult {
    let dir = tempfile::tempdir()?;
    let a = self_signed(dir.path(), "a")?;
    let b = self_signed(dir.path(), "b")?;

    let e = refused(acceptor(&a.cert, &b.key));
    assert!(
        matches!(&e, SecurityError::Tls { what: "private key", path, .. } if path == &b.key),
        "{e}"
    );
    assert!(e.to_string().contains("does not fit"), "{e}");

    // The key where the certificate should be, and the reverse.
    let e = refused(acceptor(&a.key, &a.key));
    assert!(e.to_string().contains("BEGIN CERTIFICATE"), "{e}");
    let e = refused(acceptor(&a.cert, &a.cert));
    assert!(
        matches!(
            &e,
            SecurityError::Tls {
                what: "private key",
                ..
            }
        ),
        "{e}"
    );

    let missing = dir.path().join("missing.pem");
    let e = refused(acceptor(&missing, &a.key));
    assert!(
        matches!(&e, SecurityError::Unreadable { what: "TLS certificate", path, .. } if path == &missing),
        "{e}"
    );
    Ok(())
}
