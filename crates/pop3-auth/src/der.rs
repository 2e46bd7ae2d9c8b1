//! Just enough DER to read a few things from X.509 certificates: the signature algorithm (for
//! `tls-server-end-point` channel binding, RFC 5929), a client certificate's e-mail address or
//! common name (for SASL EXTERNAL), and the names and validity a client shows about a server's
//! certificate (`poplar fetch --serverinfo`). Certificates reach this code only after webpki has
//! verified them (or to be shown); the reader is still bounds-checked throughout and returns
//! `None` on anything unexpected.

/// One tag-length-value element and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The elements of a constructed value, in order.
fn children(mut content: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (tag, value, rest) = tlv(content)?;
        content = rest;
        Some((tag, value))
    })
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;

const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_EMAIL: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01];
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

/// The parts of a certificate this module reads.
struct Certificate<'a> {
    tbs: &'a [u8],
    signature_algorithm: &'a [u8],
}

fn certificate(der: &[u8]) -> Option<Certificate<'_>> {
    let (SEQUENCE, cert, _) = tlv(der)? else {
        return None;
    };
    let mut parts = children(cert);
    let (SEQUENCE, tbs) = parts.next()? else {
        return None;
    };
    let (SEQUENCE, alg) = parts.next()? else {
        return None;
    };
    let (OID, oid) = children(alg).next()? else {
        return None;
    };
    Some(Certificate {
        tbs,
        signature_algorithm: oid,
    })
}

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

/// The `tls-server-end-point` hash for a certificate.
pub fn end_point_hash(der: &[u8]) -> EndPointHash {
    const SHA384_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
    const SHA512_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
    const ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
    const ECDSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
    match certificate(der).map(|c| c.signature_algorithm) {
        Some(SHA384_RSA | ECDSA_SHA384) => EndPointHash::Sha384,
        Some(SHA512_RSA | ECDSA_SHA512) => EndPointHash::Sha512,
        _ => EndPointHash::Sha256,
    }
}

/// Field `index` of a TBSCertificate, counting from the serial number: 0 serial, 1 signature,
/// 2 issuer, 3 validity, 4 subject.
fn tbs_field(tbs: &[u8], index: usize) -> Option<&[u8]> {
    let mut fields = children(tbs).peekable();
    // version [0] is optional.
    if fields.peek().is_some_and(|(tag, _)| *tag == 0xa0) {
        fields.next();
    }
    fields.nth(index).map(|(_, value)| value)
}

/// The subject's attribute with this OID (a UTF8String, PrintableString or IA5String).
fn subject_attribute<'a>(tbs: &'a [u8], oid: &[u8]) -> Option<&'a str> {
    name_attribute(tbs_field(tbs, 4)?, oid)
}

/// A Name's attribute with this OID.
fn name_attribute<'a>(name: &'a [u8], oid: &[u8]) -> Option<&'a str> {
    for (tag, rdn) in children(name) {
        if tag != SET {
            continue;
        }
        for (_, atv) in children(rdn) {
            let mut parts = children(atv);
            let (OID, this) = parts.next()? else { continue };
            if this == oid {
                let (_, value) = parts.next()?;
                return std::str::from_utf8(value).ok();
            }
        }
    }
    None
}

/// The first rfc822Name in the subjectAltName extension.
fn san_email(tbs: &[u8]) -> Option<&str> {
    let (_, extensions) = children(tbs).find(|(tag, _)| *tag == 0xa3)?;
    let (SEQUENCE, list, _) = tlv(extensions)? else {
        return None;
    };
    for (_, ext) in children(list) {
        let mut parts = children(ext);
        let (OID, id) = parts.next()? else { continue };
        if id != OID_SAN {
            continue;
        }
        // [critical BOOLEAN] then extnValue OCTET STRING containing GeneralNames.
        let (_, value) = parts.find(|(tag, _)| *tag == 0x04)?;
        let (SEQUENCE, names, _) = tlv(value)? else {
            return None;
        };
        return children(names)
            .find(|(tag, _)| *tag == 0x81)
            .and_then(|(_, v)| std::str::from_utf8(v).ok());
    }
    None
}

/// The user a client certificate names: its e-mail address (subjectAltName, else the
/// subject's emailAddress) or its subject common name.
pub fn client_identity(der: &[u8], use_cn: bool) -> Option<String> {
    let cert = certificate(der)?;
    let found = if use_cn {
        subject_attribute(cert.tbs, OID_CN)
    } else {
        san_email(cert.tbs).or_else(|| subject_attribute(cert.tbs, OID_EMAIL))
    };
    found
        .filter(|s| !s.is_empty() && !s.chars().any(char::is_control))
        .map(str::to_owned)
}

/// What a client shows about a server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The subject's common name.
    pub subject: Option<String>,
    /// The issuer's common name.
    pub issuer: Option<String>,
    /// Valid from (`YYYY-MM-DD HH:MM:SS UTC`).
    pub not_before: String,
    /// Valid until.
    pub not_after: String,
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950-2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as
/// `YYYY-MM-DD HH:MM:SS UTC`; `None` unless it is made of the digits it should be.
fn der_time(tag: u8, value: &[u8]) -> Option<String> {
    let digits = match tag {
        0x17 => 12,
        0x18 => 14,
        _ => return None,
    };
    let d = value.get(..digits)?;
    if !d.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let d = std::str::from_utf8(d).ok()?;
    let full = if tag == 0x17 {
        let century = if d[..2] >= *"50" { "19" } else { "20" };
        format!("{century}{d}")
    } else {
        d.to_owned()
    };
    Some(format!(
        "{}-{}-{} {}:{}:{} UTC",
        &full[..4],
        &full[4..6],
        &full[6..8],
        &full[8..10],
        &full[10..12],
        &full[12..14]
    ))
}

/// Subject, issuer and validity of a certificate.
pub fn summary(der: &[u8]) -> Option<CertSummary> {
    let cert = certificate(der)?;
    let name = |index| {
        tbs_field(cert.tbs, index)
            .and_then(|n| name_attribute(n, OID_CN))
            .map(str::to_owned)
    };
    let mut validity = children(tbs_field(cert.tbs, 3)?);
    let mut time = || {
        let (tag, value) = validity.next()?;
        der_time(tag, value)
    };
    Some(CertSummary {
        subject: name(4),
        issuer: name(2),
        not_before: time()?,
        not_after: time()?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

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
        assert_eq!(s.issuer.as_deref(), Some("Alice Example"), "self-signed");
        // rcgen's default validity: 1975 to 4096.
        assert_eq!(s.not_before, "1975-01-01 00:00:00 UTC");
        assert_eq!(s.not_after, "4096-01-01 00:00:00 UTC");
    }

    #[test]
    fn times() {
        assert_eq!(
            der_time(0x17, b"991231235959Z").as_deref(),
            Some("1999-12-31 23:59:59 UTC")
        );
        assert_eq!(
            der_time(0x17, b"491231235959Z").as_deref(),
            Some("2049-12-31 23:59:59 UTC")
        );
        assert_eq!(
            der_time(0x18, b"40960101000000Z").as_deref(),
            Some("4096-01-01 00:00:00 UTC")
        );
        // Found by the certificate fuzz target: a multi-octet character where digits belong
        // made the formatter slice inside it.
        assert_eq!(der_time(0x18, "4096\u{2cb}0101000000Z".as_bytes()), None);
        assert_eq!(der_time(0x18, b"4096"), None);
        assert_eq!(der_time(0x04, b"40960101000000Z"), None);
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
            flipped[i] ^= 0xff;
        }
        assert_eq!(tlv(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(tlv(&[0x30, 0x85, 0, 0, 0, 0, 1]), None);
    }
}
