//! TLS to PostgreSQL with libpq's `sslmode` meanings, on `rustls`, so the
//! static binary needs neither OpenSSL nor a system certificate store.
//!
//! | sslmode | encrypts | verifies |
//! |---|---|---|
//! | `disable` | no | - |
//! | `allow`, `prefer` (default) | if the server offers it | nothing |
//! | `require` | yes | nothing, or the CA if `sslrootcert` is given (as libpq) |
//! | `verify-ca` | yes | the chain up to a trusted root |
//! | `verify-full` | yes | the chain and the host name |
//!
//! Trusted roots come from `sslrootcert` (a PEM file), else the built-in
//! web roots (`sslrootcert=system` asks for those explicitly). This module
//! only builds configurations; it never opens a connection.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// Parses libpq's names; asyncpg's `true`/`false` are `require` and
    /// `disable`, and `allow` is taken as `prefer`.
    pub fn parse(text: &str) -> Result<SslMode, String> {
        match text {
            "disable" | "false" => Ok(SslMode::Disable),
            "allow" | "prefer" => Ok(SslMode::Prefer),
            "require" | "true" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(format!(
                "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            )),
        }
    }

    /// The mode the `postgres` crate is told: it knows only whether TLS is
    /// off, optional or required; verification is this module's.
    pub fn negotiation(self) -> postgres::config::SslMode {
        match self {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            _ => postgres::config::SslMode::Require,
        }
    }
}

/// The TLS configuration for `mode`, or `None` when TLS is off. `root_cert`
/// is `sslrootcert`. Fails on an unreadable or empty root file.
pub fn client_config(
    mode: SslMode,
    root_cert: Option<&str>,
) -> Result<Option<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS set-up: {err}"))?;

    // libpq verifies the CA under `require` too when a root file is given.
    let roots = match (mode, root_cert) {
        (SslMode::Disable, _) => return Ok(None),
        (SslMode::Prefer, _) | (SslMode::Require, None) => None,
        (_, root_cert) => Some(Arc::new(load_roots(root_cert)?)),
    };
    let config = match (mode, roots) {
        (SslMode::VerifyFull, Some(roots)) => builder.with_root_certificates(roots),
        (_, Some(roots)) => {
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                .build()
                .map_err(|err| format!("TLS set-up: {err}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
        }
        (_, None) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider))),
    };
    Ok(Some(config.with_no_client_auth()))
}

/// The trusted roots: the PEM file named, or the built-in web roots.
fn load_roots(root_cert: Option<&str>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        None | Some("system") => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|err| format!("sslrootcert {path}: {err}"))?;
            for cert in certs {
                let cert = cert.map_err(|err| format!("sslrootcert {path}: {err}"))?;
                roots
                    .add(cert)
                    .map_err(|err| format!("sslrootcert {path}: {err}"))?;
            }
            if roots.is_empty() {
                return Err(format!("sslrootcert {path}: no certificate in the file"));
            }
        }
    }
    Ok(roots)
}

/// What a failed TLS verification means, in words, if `err` is one.
pub fn describe_verification(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source = Some(err);
    while let Some(err) = source {
        // The handshake's error comes wrapped in an `io::Error`, whose
        // `source()` skips the wrapped error itself.
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
        let rustls_error = inner
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .or_else(|| err.downcast_ref::<rustls::Error>());
        if let Some(rustls::Error::InvalidCertificate(problem)) = rustls_error {
            let what = match problem {
                CertificateError::UnknownIssuer => {
                    "the server's certificate is not signed by a trusted CA (see sslrootcert)"
                        .to_string()
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    "the server's certificate does not match the host name (verify-full)"
                        .to_string()
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "the server's certificate has expired".to_string()
                }
                other => format!("the server's certificate was refused: {other:?}"),
            };
            return Some(format!("TLS verification failed: {what}"));
        }
        source = err.source();
    }
    None
}

/// `require` without a root file: encrypt, trust any certificate, as libpq
/// does. The handshake's signatures are still checked.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name is not
/// checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain is checked before the name, so a name error means the
        // chain itself was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_and_asyncpg_names_parse() {
        assert_eq!(SslMode::parse("verify-full"), Ok(SslMode::VerifyFull));
        assert_eq!(SslMode::parse("true"), Ok(SslMode::Require));
        assert_eq!(SslMode::parse("allow"), Ok(SslMode::Prefer));
        assert!(SslMode::parse("sometimes").is_err());
    }

    #[test]
    fn a_missing_root_file_is_an_error_that_names_it() {
        let err = client_config(SslMode::VerifyFull, Some("/nonexistent/ca.pem")).unwrap_err();
        assert!(err.contains("sslrootcert /nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn disable_means_no_tls_and_the_others_build() {
        assert!(client_config(SslMode::Disable, None).unwrap().is_none());
        for mode in [
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            assert!(client_config(mode, None).unwrap().is_some(), "{mode:?}");
        }
    }
}
