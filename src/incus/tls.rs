//! TLS to a daemon on another machine: the client certificate cci presents,
//! how the server's certificate is checked (pinned by its exact bytes, as
//! `incus remote add` pins it, else the system's certificate authorities),
//! and a handshake that only reads the server's certificate (to show its
//! fingerprint before anything is trusted).
//!
//! Knows nothing about where certificates are stored (see `crate::remote`).

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Digest;

use super::error::{Error, Result};

/// The SHA-256 of a certificate's DER bytes, lowercase hex: what
/// `incus info` shows as `certificate_fingerprint` and what trust tokens carry.
pub fn fingerprint(der: &[u8]) -> String {
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A client certificate and its private key (PEM).
pub struct Identity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Parse a certificate chain and an unencrypted private key (SEC1,
    /// PKCS#8 or PKCS#1 PEM, as the `incus` CLI writes them).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Identity> {
        let certs = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Protocol(format!("reading the client certificate: {e}")))?;
        if certs.is_empty() {
            return Err(Error::Protocol(
                "the client certificate file holds no certificate".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
            Error::Protocol(format!(
                "reading the client key ({e}); a key protected by a password is not supported"
            ))
        })?;
        Ok(Identity { certs, key })
    }

    /// The fingerprint of the certificate presented.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.certs[0])
    }
}

/// How the server's certificate is checked.
pub enum ServerTrust {
    /// Exactly this certificate (DER), whatever name it carries.
    Pinned(Vec<u8>),
    /// The system's certificate authorities, with the usual name check.
    SystemRoots,
}

/// The server presented another certificate than the one pinned.
#[derive(Debug)]
pub struct Mismatch {
    /// The fingerprint pinned.
    pub expected: String,
    /// The fingerprint presented.
    pub got: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server's certificate (fingerprint {}) is not the one pinned ({})",
            self.got, self.expected
        )
    }
}

impl std::error::Error for Mismatch {}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How a server's certificate is taken: exactly the pinned one, or any
/// (kept, only to show it before the user decides; nothing is sent over
/// such a connection). Either way the handshake's signatures are checked
/// (proof that the server holds that certificate's key).
#[derive(Debug)]
enum Check {
    Pinned(Vec<u8>),
    Capture(Arc<Mutex<Option<Vec<u8>>>>),
}

#[derive(Debug)]
struct Verifier {
    check: Check,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match &self.check {
            Check::Pinned(der) if end_entity.as_ref() == der.as_slice() => {}
            Check::Pinned(der) => {
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Other(rustls::OtherError(Arc::new(Mismatch {
                        expected: fingerprint(der),
                        got: fingerprint(end_entity),
                    }))),
                ));
            }
            Check::Capture(seen) => {
                if let Ok(mut seen) = seen.lock() {
                    *seen = Some(end_entity.as_ref().to_vec());
                }
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The TLS settings for talking to a daemon: `trust` for its certificate,
/// `identity` presented as the client (None: anonymous, enough to read
/// `GET /1.0` as an untrusted caller).
pub fn client_config(
    identity: Option<&Identity>,
    trust: ServerTrust,
) -> Result<rustls::ClientConfig> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Protocol(format!("TLS settings: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match trust {
        ServerTrust::Pinned(der) => Arc::new(Verifier {
            check: Check::Pinned(der),
            algorithms,
        }),
        ServerTrust::SystemRoots => Arc::new(
            rustls_platform_verifier::Verifier::new(provider)
                .map_err(|e| Error::Protocol(format!("the system's certificates: {e}")))?,
        ),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match identity {
        Some(id) => builder
            .with_client_auth_cert(id.certs.clone(), id.key.clone_key())
            .map_err(|e| Error::Protocol(format!("the client certificate: {e}"))),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// Connect to `host:port`, complete a TLS handshake accepting any
/// certificate, and return the certificate (DER) the server presented.
pub async fn server_certificate(
    host: &str,
    port: u16,
    limit: std::time::Duration,
) -> Result<Vec<u8>> {
    let seen = Arc::new(Mutex::new(None));
    let provider = provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Protocol(format!("TLS settings: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier {
            check: Check::Capture(seen.clone()),
            algorithms: provider.signature_verification_algorithms,
        }))
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| Error::Protocol(format!("{host:?} is not a host name: {e}")))?;
    let work = async {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| Error::io(format!("connecting to {host}:{port}"), e))?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| Error::io(format!("TLS with {host}:{port}"), e))
    };
    match tokio::time::timeout(limit, work).await {
        Err(_) => Err(Error::Timeout {
            what: format!("{host}:{port} to answer"),
            seconds: limit.as_secs(),
        }),
        Ok(r) => {
            r?;
            let der = seen.lock().ok().and_then(|mut s| s.take());
            der.ok_or_else(|| Error::Protocol(format!("{host}:{port} showed no certificate")))
        }
    }
}

/// A new self-signed client certificate (ECDSA P-384, client use, ten
/// years, as the `incus` CLI makes them): (certificate PEM, key PEM).
pub fn new_client_certificate(common_name: &str) -> Result<(String, String)> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
    let failed = |e: rcgen::Error| Error::Protocol(format!("making a client certificate: {e}"));
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).map_err(failed)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    params
        .distinguished_name
        .push(DnType::OrganizationName, "cci");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    // From the start of last year (a clock a little behind still accepts
    // it) for ten years.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let year = 1970 + (secs / 31_556_952) as i32;
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
    let cert = params.self_signed(&key).map_err(failed)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The pinned-certificate mismatch somewhere in `err`'s chain, if that is
/// what failed.
pub fn mismatch_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Mismatch> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(m) = e.downcast_ref::<Mismatch>() {
            return Some(m);
        }
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|r| r as &(dyn std::error::Error + 'static));
        let tls = inner
            .and_then(|r| r.downcast_ref::<rustls::Error>())
            .or_else(|| e.downcast_ref::<rustls::Error>());
        if let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o))) = tls
            && let Some(m) = o.0.downcast_ref::<Mismatch>()
        {
            return Some(m);
        }
        next = inner.or_else(|| e.source());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_certificate_reads_back_and_has_a_stable_fingerprint() {
        let (cert, key) = new_client_certificate("me@here").unwrap();
        let id = Identity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        let fp = id.fingerprint();
        assert_eq!(fp.len(), 64);
        assert!(fp.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(fp, fingerprint(&id.certs[0]));
        client_config(Some(&id), ServerTrust::Pinned(id.certs[0].to_vec())).unwrap();
    }

    #[test]
    fn garbage_is_a_clear_error() {
        assert!(Identity::from_pem(b"nope", b"nope").is_err());
        let (cert, _) = new_client_certificate("x").unwrap();
        let err = Identity::from_pem(
            cert.as_bytes(),
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAA==\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("client key"), "{err}");
    }

    #[test]
    fn the_pinned_verifier_accepts_only_its_certificate() {
        let (a, _) = new_client_certificate("a").unwrap();
        let (b, _) = new_client_certificate("b").unwrap();
        let der = |p: &str| CertificateDer::from_pem_slice(p.as_bytes()).unwrap();
        let v = Verifier {
            check: Check::Pinned(der(&a).to_vec()),
            algorithms: provider().signature_verification_algorithms,
        };
        let name = ServerName::try_from("example.org").unwrap();
        assert!(
            v.verify_server_cert(&der(&a), &[], &name, &[], UnixTime::now())
                .is_ok()
        );
        let err = v
            .verify_server_cert(&der(&b), &[], &name, &[], UnixTime::now())
            .unwrap_err();
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, err);
        let m = mismatch_in(&io).expect("the mismatch is found in the chain");
        assert_eq!(m.got, fingerprint(&der(&b)));
    }
}
