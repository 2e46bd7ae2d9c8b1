//! Whether the client trusts a server's certificate, and why not in words that say what to do.
//!
//! Three sources of trust: the system's CA bundle; a PEM file given with `--ca-file` (CA
//! certificates, or the server's own certificate); or a pinned SHA-256 fingerprint. A chain
//! is verified by webpki as usual. A certificate from the CA file that is byte for byte the one
//! the server presents is trusted as that server's certificate whatever its basic constraints
//! say: OpenSSL 3's `openssl req -x509` marks self-signed certificates `CA:TRUE`, which webpki
//! refuses as a server certificate, yet that is how most small servers' certificates are made
//! (curl and mpop accept them the same way). Its names are still checked, falling back to the
//! subject's common name when it has no subjectAltName (as curl and mpop do, and as Debian's
//! Dovecot `mkcert.sh` makes them), and so is its validity.
//!
//! For `--serverinfo` the same judgement is made but recorded instead of enforced, so the
//! certificate of a server not trusted yet can be shown with its fingerprint.

use pop3_auth::cert::{self, CertSummary};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where trust in a server's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The system's CA bundle.
    System,
    /// The certificates in this PEM file: CAs, or the server's own certificate.
    CaFile(PathBuf),
    /// Exactly the certificate with this SHA-256 fingerprint.
    Pinned([u8; 32]),
}

impl Trust {
    /// The trust a pinned fingerprint (`AB:CD:...`), else a CA file, else the system's CAs give.
    pub fn from_settings(
        fingerprint: Option<&str>,
        ca_file: Option<&Path>,
    ) -> Result<Self, crate::FetchError> {
        Ok(match (fingerprint, ca_file) {
            (Some(text), _) => Trust::Pinned(parse_fingerprint(text).ok_or_else(|| {
                crate::FetchError::Unsupported(format!(
                    "the TLS fingerprint {text:?} is not 64 hex digits (SHA-256)"
                ))
            })?),
            (None, Some(file)) => Trust::CaFile(file.to_owned()),
            (None, None) => Trust::System,
        })
    }
}

/// Why a server's certificate is not trusted, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distrust(pub String);

impl std::fmt::Display for Distrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Distrust {}

/// The judgement of a certificate: trusted (and on what grounds) or not (and why).
pub type Verdict = Result<String, Distrust>;

/// Debian's (and most Linux distributions') bundle of trusted CA certificates.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `AB:CD:...`: a certificate's SHA-256 fingerprint as `openssl x509 -fingerprint -sha256`
/// prints it and `--tls-fingerprint` takes it.
pub fn fingerprint(der: &[u8]) -> String {
    fingerprint_text(&Sha256::digest(der).into())
}

fn fingerprint_text(digest: &[u8; 32]) -> String {
    digest
        .iter()
        .map(|b| hex::encode_upper([*b]))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses a SHA-256 fingerprint: 64 hex digits, colons allowed (`AB:CD:...`, as `openssl x509
/// -fingerprint -sha256` and `--serverinfo` print it).
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let digits: String = text.chars().filter(|c| *c != ':').collect();
    let mut out = [0u8; 32];
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

/// The verifier the client's TLS configuration uses.
#[derive(Debug)]
pub(crate) struct ServerTrust {
    /// Chain verification against CA certificates.
    roots: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    /// Certificates trusted as the server's own when presented exactly.
    exact: Vec<Vec<u8>>,
    pin: Option<[u8; 32]>,
    /// Where the trusted certificates came from, for messages.
    source: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// `--serverinfo`: accept every certificate and record the verdict here.
    recorded: Option<Mutex<Option<Verdict>>>,
}

impl ServerTrust {
    pub(crate) fn new(trust: &Trust, record_only: bool) -> Result<Self, crate::FetchError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (certs, source) = match trust {
            Trust::Pinned(pin) => {
                return Ok(Self {
                    roots: None,
                    exact: Vec::new(),
                    pin: Some(*pin),
                    source: "the pinned fingerprint".into(),
                    provider,
                    recorded: record_only.then(Mutex::default),
                });
            }
            Trust::System => (
                read_pem(Path::new(SYSTEM_BUNDLE), false)?,
                format!("the system's CA bundle ({SYSTEM_BUNDLE})"),
            ),
            Trust::CaFile(path) => (read_pem(path, true)?, path.display().to_string()),
        };
        let mut roots = rustls::RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(certs.iter().cloned());
        let roots = if added > 0 {
            Some(
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| crate::FetchError::Tls(e.to_string()))?,
            )
        } else {
            None
        };
        Ok(Self {
            roots,
            // Only a file the user named vouches for single certificates.
            exact: match trust {
                Trust::CaFile(_) => certs.iter().map(|c| c.to_vec()).collect(),
                _ => Vec::new(),
            },
            pin: None,
            source,
            provider,
            recorded: record_only.then(Mutex::default),
        })
    }

    /// The verdict recorded by the last handshake (`--serverinfo`).
    pub(crate) fn recorded(&self) -> Option<Verdict> {
        self.recorded
            .as_ref()
            .and_then(|r| r.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    fn judge(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        now: UnixTime,
    ) -> Verdict {
        let summary = cert::summary(end_entity);
        if let Some(pin) = self.pin {
            let seen: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
            return if seen == pin {
                Ok("pinned: its SHA-256 fingerprint is the one given".into())
            } else {
                Err(Distrust(format!(
                    "its SHA-256 fingerprint is {}, not the pinned {}: the server's certificate \
                     has changed (renewed?) or something is in between. Confirm the new \
                     fingerprint with the server's administrator, then give it with \
                     --tls-fingerprint (tls_fingerprint)",
                    fingerprint_text(&seen),
                    fingerprint_text(&pin)
                )))
            };
        }
        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        if self.exact.iter().any(|c| c == end_entity.as_ref()) {
            let Some(s) = &summary else {
                return Err(Distrust("the certificate cannot be parsed".into()));
            };
            check_names(end_entity, s, name)?;
            check_validity(s, now_secs)?;
            return Ok(format!("it is the certificate in {}", self.source));
        }
        let Some(roots) = &self.roots else {
            return Err(self.unknown_issuer(summary.as_ref(), end_entity));
        };
        match roots.verify_server_cert(end_entity, intermediates, name, &[], now) {
            Ok(_) => Ok(format!("its chain leads to a CA in {}", self.source)),
            Err(rustls::Error::InvalidCertificate(e)) => {
                Err(self.explain(&e, summary.as_ref(), end_entity, name, now_secs))
            }
            Err(e) => Err(Distrust(e.to_string())),
        }
    }

    fn unknown_issuer(&self, summary: Option<&CertSummary>, der: &[u8]) -> Distrust {
        let what = match summary {
            Some(s) if s.self_issued => format!(
                "it is self-signed ({}) and not in {}",
                describe(s),
                self.source
            ),
            Some(s) => format!(
                "it is issued by {} ({}), which is not a CA in {}",
                s.issuer
                    .as_deref()
                    .map_or("an unnamed issuer".into(), |i| format!("CN={i}")),
                describe(s),
                self.source
            ),
            None => format!("it is not signed by a CA in {}", self.source),
        };
        Distrust(format!(
            "{what}. Get the server's certificate (or its CA's) from the server's administrator \
             and give it with --ca-file (ca_file), or pin this one with --tls-fingerprint {} \
             after checking that fingerprint with the administrator",
            fingerprint(der)
        ))
    }

    fn explain(
        &self,
        error: &CertificateError,
        summary: Option<&CertSummary>,
        der: &[u8],
        name: &ServerName<'_>,
        now: i64,
    ) -> Distrust {
        use CertificateError as E;
        match error {
            E::UnknownIssuer | E::BadSignature => self.unknown_issuer(summary, der),
            E::NotValidForName | E::NotValidForNameContext { .. } => name_mismatch(summary, name),
            E::Expired
            | E::ExpiredContext { .. }
            | E::NotValidYet
            | E::NotValidYetContext { .. } => match summary.map(|s| check_validity(s, now)) {
                Some(Err(d)) => d,
                _ => Distrust(format!("{error:?}")),
            },
            E::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => {
                Distrust(format!(
                    "the server presents a CA certificate as its own ({}). If you trust it, \
                     give exactly this certificate with --ca-file (ca_file), or pin it with \
                     --tls-fingerprint {}",
                    summary.map_or_else(String::new, describe),
                    fingerprint(der)
                ))
            }
            other => Distrust(format!("{other:?}")),
        }
    }
}

/// `CN=..., names ..., valid until ...`.
fn describe(s: &CertSummary) -> String {
    let mut parts = Vec::new();
    if let Some(cn) = &s.subject {
        parts.push(format!("CN={cn}"));
    }
    if !s.names.is_empty() {
        parts.push(format!("names {}", s.names.join(", ")));
    }
    parts.push(format!(
        "valid until {}",
        poplar_util::clock::utc(s.not_after)
    ));
    parts.join(", ")
}

fn name_mismatch(summary: Option<&CertSummary>, name: &ServerName<'_>) -> Distrust {
    let names = match summary {
        Some(s) if !s.names.is_empty() => s.names.join(", "),
        Some(s) => s
            .subject
            .as_deref()
            .map_or_else(|| "no name at all".into(), |cn| format!("CN={cn} only")),
        None => "names that cannot be read".into(),
    };
    Distrust(format!(
        "it is for {names}, not for {}: connect with one of those names, or, if you know \
         this certificate belongs to this server, give --server-name NAME (server_name)",
        name.to_str()
    ))
}

/// RFC 6125 name checks for a certificate trusted as itself: the subjectAltName through
/// webpki, else (no DNS name in it) the subject's common name, as curl and mpop accept.
fn check_names(
    der: &CertificateDer<'_>,
    s: &CertSummary,
    name: &ServerName<'_>,
) -> Result<(), Distrust> {
    let by_san = webpki::EndEntityCert::try_from(der)
        .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(name).is_ok());
    if by_san {
        return Ok(());
    }
    let no_dns_names = s
        .names
        .iter()
        .all(|n| n.parse::<std::net::IpAddr>().is_ok());
    if let (ServerName::DnsName(dns), true, Some(cn)) = (name, no_dns_names, &s.subject)
        && dns_matches(cn, dns.as_ref())
    {
        return Ok(());
    }
    Err(name_mismatch(Some(s), name))
}

/// A DNS name against a certificate's name: equal ignoring ASCII case, or a `*.` wildcard
/// standing for exactly one leftmost label.
fn dns_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    let pattern = pattern.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(label, parent)| !label.is_empty() && parent.eq_ignore_ascii_case(rest)),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

fn check_validity(s: &CertSummary, now: i64) -> Result<(), Distrust> {
    if now > s.not_after {
        return Err(Distrust(format!(
            "it expired on {}: the server's administrator must renew it",
            poplar_util::clock::utc(s.not_after)
        )));
    }
    if now < s.not_before {
        return Err(Distrust(format!(
            "it is not valid before {}: check this computer's clock",
            poplar_util::clock::utc(s.not_before)
        )));
    }
    Ok(())
}

/// The certificates of a PEM file. A file given explicitly must be entirely usable; the
/// system bundle may hold certificates that cannot be parsed, which are skipped.
fn read_pem(path: &Path, strict: bool) -> Result<Vec<CertificateDer<'static>>, crate::FetchError> {
    use rustls::pki_types::pem::PemObject as _;
    let bad = |why: String| crate::FetchError::File {
        path: path.to_owned(),
        why,
    };
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(format!("cannot read certificates: {e}")))?;
    let mut certs = Vec::new();
    for cert in iter {
        match cert {
            Ok(c) => certs.push(c),
            Err(e) if strict => return Err(bad(e.to_string())),
            Err(_) => {}
        }
    }
    if certs.is_empty() {
        return Err(bad(
            "no certificate in the file (PEM, -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

impl ServerCertVerifier for ServerTrust {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.judge(end_entity, intermediates, server_name, now);
        if let Some(slot) = &self.recorded {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(verdict);
            return Ok(ServerCertVerified::assertion());
        }
        match verdict {
            Ok(_) => Ok(ServerCertVerified::assertion()),
            Err(why) => Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(why)),
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The explanation behind a failed handshake, when it was the certificate.
pub(crate) fn distrust_of(error: &std::io::Error) -> Option<&Distrust> {
    let rustls::Error::InvalidCertificate(CertificateError::Other(other)) =
        error.get_ref()?.downcast_ref::<rustls::Error>()?
    else {
        return None;
    };
    other.0.downcast_ref::<Distrust>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_and_case() {
        assert!(dns_matches("Mail.Example.org", "mail.example.ORG"));
        assert!(dns_matches("*.example.org", "pop.example.org"));
        assert!(!dns_matches("*.example.org", "example.org"));
        assert!(!dns_matches("*.example.org", "a.b.example.org"));
        assert!(!dns_matches("mail.example.org", "mail.example.net"));
    }

    #[test]
    fn fingerprints_round_trip() {
        let text = fingerprint(b"anything");
        assert_eq!(text.len(), 95);
        let parsed = parse_fingerprint(&text).unwrap();
        assert_eq!(fingerprint_text(&parsed), text);
        assert_eq!(parse_fingerprint(&text.to_lowercase()), Some(parsed));
        assert_eq!(parse_fingerprint("AB:CD"), None);
    }
}
