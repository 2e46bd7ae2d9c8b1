//! What Poplar reads from X.509 certificates, through x509-parser: the signature's hash (for
//! `tls-server-end-point` channel binding, RFC 5929), a client certificate's e-mail address or
//! common name (SASL EXTERNAL), and what a person or a client needs to judge a server's
//! certificate: its names, validity, issuer and whether it is a CA certificate
//! (`poplar fetch --serverinfo`, trusting a self-signed certificate, `poplar check-config`).
//!
//! Certificates reach this code from the network before anything has verified them, so every
//! function answers `None` (or a safe default) on anything it cannot parse.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The hash RFC 5929 prescribes for `tls-server-end-point`: the certificate's signature hash,
/// with MD5 and SHA-1 (and unknown ones) replaced by SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndPointHash {
    /// SHA-256 (also for MD5, SHA-1 and unknown signature hashes).
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

fn parse(der: &[u8]) -> Option<X509Certificate<'_>> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Some(cert),
        _ => None,
    }
}

/// The `tls-server-end-point` hash for a certificate.
pub fn end_point_hash(der: &[u8]) -> EndPointHash {
    use x509_parser::oid_registry as oids;
    let Some(cert) = parse(der) else {
        return EndPointHash::Sha256;
    };
    let alg = &cert.signature_algorithm.algorithm;
    if *alg == oids::OID_PKCS1_SHA384WITHRSA || *alg == oids::OID_SIG_ECDSA_WITH_SHA384 {
        EndPointHash::Sha384
    } else if *alg == oids::OID_PKCS1_SHA512WITHRSA || *alg == oids::OID_SIG_ECDSA_WITH_SHA512 {
        EndPointHash::Sha512
    } else {
        EndPointHash::Sha256
    }
}

/// The user a client certificate names: its e-mail address (subjectAltName, else the
/// subject's emailAddress) or its subject common name.
pub fn client_identity(der: &[u8], use_cn: bool) -> Option<String> {
    let cert = parse(der)?;
    let subject = cert.subject();
    let found = if use_cn {
        subject.iter_common_name().next()?.as_str().ok()?.to_owned()
    } else {
        let san = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|n| match n {
                    GeneralName::RFC822Name(e) => Some((*e).to_owned()),
                    _ => None,
                })
            });
        match san {
            Some(e) => e,
            None => subject.iter_email().next()?.as_str().ok()?.to_owned(),
        }
    };
    (!found.is_empty() && !found.chars().any(char::is_control)).then_some(found)
}

/// What a client shows and checks about a server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The subject's common name.
    pub subject: Option<String>,
    /// The issuer's common name.
    pub issuer: Option<String>,
    /// The subjectAltName's DNS names and IP addresses, as text.
    pub names: Vec<String>,
    /// Valid from (Unix seconds).
    pub not_before: i64,
    /// Valid until (Unix seconds).
    pub not_after: i64,
    /// A CA certificate (basicConstraints CA:TRUE), as OpenSSL 3 makes self-signed ones.
    pub is_ca: bool,
    /// Issued by itself (subject and issuer are the same name).
    pub self_issued: bool,
}

impl CertSummary {
    /// Whether it is valid at `now` (Unix seconds).
    pub fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// Subject, issuer, names, validity and CA flag of a certificate.
pub fn summary(der: &[u8]) -> Option<CertSummary> {
    let cert = parse(der)?;
    let cn = |name: &x509_parser::x509::X509Name<'_>| {
        name.iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_owned)
    };
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    GeneralName::IPAddress(ip) => ip_text(ip),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let validity = cert.validity();
    Some(CertSummary {
        subject: cn(cert.subject()),
        issuer: cn(cert.issuer()),
        names,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        is_ca: cert.is_ca(),
        self_issued: cert.subject() == cert.issuer(),
    })
}

fn ip_text(octets: &[u8]) -> Option<String> {
    Some(match octets.len() {
        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(octets).ok()?).to_string(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(octets).ok()?).to_string(),
        _ => return None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, IsCa, KeyPair, SanType};

    pub(crate) fn cert(cn: &str, email: Option<&str>) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(e) = email {
            params
                .subject_alt_names
                .push(SanType::Rfc822Name(e.try_into().unwrap()));
        }
        params
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn identities() {
        let der = cert("Alice Example", Some("alice@example.org"));
        assert_eq!(
            client_identity(&der, false).as_deref(),
            Some("alice@example.org")
        );
        assert_eq!(
            client_identity(&der, true).as_deref(),
            Some("Alice Example")
        );
        assert_eq!(client_identity(&cert("bob", None), false), None);
        assert_eq!(
            client_identity(&cert("bob", None), true).as_deref(),
            Some("bob")
        );
        // rcgen signs with ECDSA P-256 SHA-256.
        assert_eq!(end_point_hash(&der), EndPointHash::Sha256);
        let s = summary(&der).unwrap();
        assert_eq!(s.subject.as_deref(), Some("Alice Example"));
        assert_eq!(s.issuer.as_deref(), Some("Alice Example"));
        assert!(s.self_issued && !s.is_ca);
        // rcgen's default validity: 1975 to 4096.
        assert_eq!(s.not_before, 157_766_400);
        assert_eq!(s.not_after, 67_090_118_400);
        assert!(s.valid_at(1_700_000_000));
    }

    #[test]
    fn names_and_ca_flag() {
        let mut params =
            CertificateParams::new(vec!["mail.example.org".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let der = params
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .to_vec();
        let s = summary(&der).unwrap();
        assert_eq!(s.names, ["mail.example.org", "127.0.0.1"]);
        assert!(s.is_ca);
    }

    #[test]
    fn garbage_never_panics() {
        let der = cert("x", Some("x@y"));
        for len in 0..der.len() {
            let _ = client_identity(&der[..len], false);
            let _ = end_point_hash(&der[..len]);
            let _ = summary(&der[..len]);
        }
        let mut flipped = der.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xff;
            let _ = client_identity(&flipped, false);
            let _ = client_identity(&flipped, true);
            let _ = summary(&flipped);
            flipped[i] ^= 0xff;
        }
        assert_eq!(summary(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
