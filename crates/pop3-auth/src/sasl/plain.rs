//! PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd` in one message.

use super::{Directory, Failure, ServerMechanism, Step, authorize, password_step};
use crate::directory::normalize_name;
use crate::error::AuthError;
use pop3_proto::Secret;

/// The decoded PLAIN message.
#[derive(Debug)]
pub struct PlainCredentials {
    /// The identity to act as; empty means "the same as `authcid`".
    pub authzid: String,
    /// The identity whose password is given.
    pub authcid: String,
    /// The password.
    pub password: Secret<Vec<u8>>,
}

/// Decodes a PLAIN message (RFC 4616 section 2).
pub fn parse_plain(message: &[u8]) -> Result<PlainCredentials, AuthError> {
    let malformed = AuthError::MalformedSasl;
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
        !self.authzid.is_empty() && normalize_name(&self.authzid) != normalize_name(&self.authcid)
    }
}

/// The server side.
#[derive(Debug, Default)]
pub struct PlainServer;

impl ServerMechanism for PlainServer {
    fn step(&mut self, dir: &dyn Directory, response: Option<&[u8]>) -> Step {
        let Some(message) = response else {
            return Step::Challenge(Vec::new());
        };
        match parse_plain(message) {
            Err(_) => Step::Failure(Failure::malformed("malformed PLAIN message")),
            Ok(c) => match password_step(dir, &c.authcid, c.password.expose()) {
                // A master user may name another user as the authorization identity.
                Step::Success { user } => authorize(dir, user, Some(&c.authzid)),
                other => other,
            },
        }
    }
}

/// The client message.
pub fn client_message(authzid: &str, user: &str, password: &[u8]) -> Secret<Vec<u8>> {
    let mut m = Vec::with_capacity(authzid.len() + user.len() + password.len() + 2);
    m.extend_from_slice(authzid.as_bytes());
    m.push(0);
    m.extend_from_slice(user.as_bytes());
    m.push(0);
    m.extend_from_slice(password);
    Secret::new(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::MechanismSecret;
    use crate::sasl::tests::TestDirectory;

    #[test]
    fn rfc4616_examples() {
        // RFC 4616 section 4: "\0tim\0tanstaaftanstaaf" and "Ursel\0Kurt\0xipj3plmq".
        let c = parse_plain(b"\0tim\0tanstaaftanstaaf").unwrap();
        assert_eq!((c.authzid.as_str(), c.authcid.as_str()), ("", "tim"));
        assert_eq!(c.password.expose(), b"tanstaaftanstaaf");
        assert!(!c.wants_other_identity());
        let c = parse_plain(b"Ursel\0Kurt\0xipj3plmq").unwrap();
        assert!(c.wants_other_identity());
        assert!(!parse_plain(b"TIM\0tim\0x").unwrap().wants_other_identity());
        assert_eq!(
            client_message("", "tim", b"tanstaaftanstaaf").expose(),
            b"\0tim\0tanstaaftanstaaf"
        );
    }

    #[test]
    fn server() {
        let dir = TestDirectory::with_secret(
            "tim",
            MechanismSecret::Plaintext(b"tanstaaftanstaaf".to_vec()),
        );
        assert_eq!(PlainServer.step(&dir, None), Step::Challenge(Vec::new()));
        assert_eq!(
            PlainServer.step(&dir, Some(b"\0tim\0tanstaaftanstaaf")),
            Step::Success { user: "tim".into() }
        );
        assert!(
            matches!(PlainServer.step(&dir, Some(b"\0tim\0wrong")), Step::Failure(f) if f.user.as_deref() == Some("tim"))
        );
        assert!(matches!(
            PlainServer.step(&dir, Some(b"bob\0tim\0tanstaaftanstaaf")),
            Step::Failure(_)
        ));
        let mut users =
            TestDirectory::with_secret("master", MechanismSecret::Plaintext(b"m".to_vec()));
        users.add("tim", MechanismSecret::Plaintext(b"t".to_vec()));
        assert_eq!(
            PlainServer.step(&users, Some(b"tim\0master\0m")),
            Step::Success { user: "tim".into() }
        );
        assert!(
            matches!(
                PlainServer.step(&users, Some(b"master\0tim\0t")),
                Step::Failure(_)
            ),
            "only masters"
        );
        assert!(
            matches!(
                PlainServer.step(&users, Some(b"ghost\0master\0m")),
                Step::Failure(_)
            ),
            "target must exist"
        );
        assert!(
            matches!(PlainServer.step(&dir, Some(b"garbage")), Step::Failure(f) if f.kind == super::super::FailureKind::Malformed)
        );
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
