//! How a node decides that it reaches its real database over TLS: a certificate chain to a CA
//! in `store.ca_file` (or the system's bundle), as libpq's `sslmode=verify-full` does; or the
//! very certificate `store.ca_file` holds, presented by the server as its own. The second is
//! how small installations run: Debian's PostgreSQL uses the machine's self-signed "snakeoil"
//! certificate, and `openssl req -x509` (OpenSSL 3) marks such a certificate as a CA, which a
//! chain check refuses as a server's own ("CaUsedAsEndEntity"). A pinned certificate is still
//! checked for the host name and its validity period, and the handshake's signatures are
//! checked as always.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error, SignatureScheme};
use std::sync::Arc;

/// A chain to a trusted CA, or exactly a certificate of the CA file.
#[derive(Debug)]
pub(crate) struct CaOrPinned {
    pub(crate) webpki: Arc<rustls::client::WebPkiServerVerifier>,
    /// The certificates of an explicitly given `store.ca_file`.
    pub(crate) pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for CaOrPinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let refused = match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => return Ok(verified),
            Err(e) => e,
        };
        if !self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Err(refused);
        }
        // The file's own certificate: its names and dates still count.
        let summary = pop3_auth::cert::summary(end_entity).ok_or(Error::InvalidCertificate(
            rustls::CertificateError::BadEncoding,
        ))?;
        let now_s = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        if now_s > summary.not_after {
            return Err(Error::InvalidCertificate(rustls::CertificateError::Expired));
        }
        if now_s < summary.not_before {
            return Err(Error::InvalidCertificate(
                rustls::CertificateError::NotValidYet,
            ));
        }
        webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?
            .verify_is_valid_for_subject_name(server_name)
            .map_err(|_| Error::InvalidCertificate(rustls::CertificateError::NotValidForName))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
