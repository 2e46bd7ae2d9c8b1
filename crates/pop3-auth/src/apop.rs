//! APOP (RFC 1939 section 7): the client proves it knows the shared secret by sending
//! MD5(timestamp || secret) for the timestamp in this session's greeting.
//!
//! The server must hold the secret in a plaintext-equivalent form (`{PLAIN}` or `{CLEAR}`), so
//! APOP is off by default; it exists for old clients that cannot use TLS. The digest comparison
//! is constant-time.

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// The lower-case hex digest a client should send.
pub fn digest(timestamp: &str, secret: &[u8]) -> String {
    let mut md5 = Md5::new();
    md5.update(timestamp.as_bytes());
    md5.update(secret);
    hex::encode(md5.finalize())
}

/// Checks a client's APOP digest (hex, any case).
pub fn verify(timestamp: &str, secret: &[u8], client_digest: &str) -> bool {
    let expected = digest(timestamp, secret);
    let given = client_digest.to_ascii_lowercase();
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1939_test_vector() {
        let ts = "<1896.697170952@dbc.mtview.ca.us>";
        assert_eq!(digest(ts, b"tanstaaf"), "c4c9334bac560ecc979e58001b3e22fb");
        assert!(verify(ts, b"tanstaaf", "c4c9334bac560ecc979e58001b3e22fb"));
        assert!(verify(ts, b"tanstaaf", "C4C9334BAC560ECC979E58001B3E22FB"));
        assert!(!verify(ts, b"tanstaaF", "c4c9334bac560ecc979e58001b3e22fb"));
        assert!(!verify(
            "<other@host>",
            b"tanstaaf",
            "c4c9334bac560ecc979e58001b3e22fb"
        ));
        assert!(!verify(ts, b"tanstaaf", "c4c9"));
    }
}
