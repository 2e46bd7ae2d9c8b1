//! SASL mechanisms, server side (RFC 4422), as small functions over the decoded payloads.
//!
//! The session state machine in pop3-proto handles the POP3 framing of RFC 5034 (the `+ `
//! continuations, base64, `*` to cancel); what arrives here is the decoded client message.
//! Mechanisms do not touch the user database themselves: they return the credentials to check,
//! so the (slow) password verification can run wherever the server schedules it.

use crate::error::AuthError;
use pop3_proto::Secret;

/// The decoded PLAIN message (RFC 4616).
#[derive(Debug)]
pub struct PlainCredentials {
    /// The identity to act as; empty means "the same as `authcid`".
    pub authzid: String,
    /// The identity whose password is given.
    pub authcid: String,
    /// The password.
    pub password: Secret<Vec<u8>>,
}

/// Decodes a PLAIN message: `[authzid] NUL authcid NUL passwd` (RFC 4616 section 2).
pub fn parse_plain(message: &[u8]) -> Result<PlainCredentials, AuthError> {
    let malformed = |why| AuthError::MalformedSasl(why);
    let mut parts = message.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(
            "PLAIN message does not have three NUL-separated fields",
        ));
    };
    if password.contains(&0) {
        return Err(malformed("PLAIN message has more than three fields"));
    }
    if authcid.is_empty() || password.is_empty() {
        return Err(malformed(
            "PLAIN message has an empty user name or password",
        ));
    }
    let text = |field: &[u8]| {
        String::from_utf8(field.to_vec()).map_err(|_| malformed("PLAIN identity is not UTF-8"))
    };
    Ok(PlainCredentials {
        authzid: text(authzid)?,
        authcid: text(authcid)?,
        password: Secret::new(password.to_vec()),
    })
}

impl PlainCredentials {
    /// Whether the client asks to act as somebody else than the user it authenticates as.
    /// Without a master-user rule such a request must be refused.
    pub fn wants_other_identity(&self) -> bool {
        !self.authzid.is_empty()
            && crate::userdb::normalize_name(&self.authzid)
                != crate::userdb::normalize_name(&self.authcid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4616_examples() {
        // RFC 4616 section 4: "\0tim\0tanstaaftanstaaf" and "Ursel\0Kurt\0xipj3plmq".
        let c = parse_plain(b"\0tim\0tanstaaftanstaaf").unwrap();
        assert_eq!((c.authzid.as_str(), c.authcid.as_str()), ("", "tim"));
        assert_eq!(c.password.expose(), b"tanstaaftanstaaf");
        assert!(!c.wants_other_identity());
        let c = parse_plain(b"Ursel\0Kurt\0xipj3plmq").unwrap();
        assert!(c.wants_other_identity());
        let c = parse_plain(b"TIM\0tim\0x").unwrap();
        assert!(!c.wants_other_identity());
    }

    #[test]
    fn malformed() {
        for bad in [
            &b""[..],
            b"tim",
            b"\0tim",
            b"\0\0pw",
            b"\0tim\0",
            b"\0tim\0a\0b",
            b"\0\xff\0x",
        ] {
            assert!(parse_plain(bad).is_err(), "{bad:?}");
        }
    }
}
