//! CRAM-MD5 (RFC 2195): the server sends a unique challenge, the client answers
//! `user SP hex(HMAC-MD5(password, challenge))`. The server needs the password or Dovecot's
//! stored CRAM-MD5 states.

use super::{Directory, Failure, ServerMechanism, Step};
use crate::directory::{MechanismSecret, SecretKind};
use crate::hmac_md5::CramContext;
use subtle::ConstantTimeEq;

/// The server side.
#[derive(Debug)]
pub struct CramMd5Server {
    challenge: String,
    sent: bool,
}

impl CramMd5Server {
    /// A server with its challenge (unique per exchange, in msg-id form `<...@host>`).
    pub fn new(challenge: String) -> Self {
        Self {
            challenge,
            sent: false,
        }
    }
}

impl ServerMechanism for CramMd5Server {
    fn step(&mut self, dir: &dyn Directory, response: Option<&[u8]>) -> Step {
        if !self.sent {
            if response.is_some() {
                return Step::Failure(Failure::malformed("CRAM-MD5 takes no initial response"));
            }
            self.sent = true;
            return Step::Challenge(self.challenge.clone().into_bytes());
        }
        let Some(response) = response else {
            return Step::Failure(Failure::malformed("no response"));
        };
        let Some((user, digest)) = std::str::from_utf8(response)
            .ok()
            .and_then(|r| r.rsplit_once(' '))
        else {
            return Step::Failure(Failure::malformed("expected 'user digest'"));
        };
        if digest.len() != 32 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Step::Failure(Failure::malformed("digest is not 32 hex digits"));
        }
        let context = match dir.secret(user, SecretKind::CramMd5) {
            Some(MechanismSecret::CramMd5(c)) => Some(c.0),
            _ => None,
        };
        // Unknown users and users without a CRAM-MD5 secret do the same work as a wrong digest.
        let key = context
            .clone()
            .unwrap_or_else(|| CramContext::from_password(b"decoy"));
        let expected = hex::encode(key.mac(self.challenge.as_bytes()));
        let matches = bool::from(
            expected
                .as_bytes()
                .ct_eq(digest.to_ascii_lowercase().as_bytes()),
        );
        match (context.is_some(), matches) {
            (true, true) => Step::Success {
                user: dir.canonical(user),
            },
            (true, false) => Step::Failure(Failure::invalid(
                Some(user.to_owned()),
                "wrong CRAM-MD5 digest",
            )),
            (false, _) => Step::Failure(Failure::no_secret(dir, &dir.canonical(user), "CRAM-MD5")),
        }
    }
}

/// The client response to a challenge.
pub fn client_response(user: &str, password: &[u8], challenge: &[u8]) -> Vec<u8> {
    let mac = CramContext::from_password(password).mac(challenge);
    format!("{user} {}", hex::encode(mac)).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::tests::TestDirectory;

    const CHALLENGE: &str = "<1896.697170952@postoffice.reston.mci.net>";

    #[test]
    fn rfc2195_vector() {
        assert_eq!(
            client_response("tim", b"tanstaaftanstaaf", CHALLENGE.as_bytes()),
            b"tim b913a602c7eda7a495b4e6e7334d3890"
        );
        let dir = TestDirectory::with_secret(
            "tim",
            MechanismSecret::Plaintext(b"tanstaaftanstaaf".to_vec()),
        );
        let mut s = CramMd5Server::new(CHALLENGE.into());
        assert_eq!(
            s.step(&dir, None),
            Step::Challenge(CHALLENGE.as_bytes().to_vec())
        );
        assert_eq!(
            s.step(&dir, Some(b"tim b913a602c7eda7a495b4e6e7334d3890")),
            Step::Success { user: "tim".into() }
        );
    }

    #[test]
    fn failures() {
        let dir = TestDirectory::with_secret(
            "tim",
            MechanismSecret::Plaintext(b"tanstaaftanstaaf".to_vec()),
        );
        let run = |r: &[u8]| {
            let mut s = CramMd5Server::new(CHALLENGE.into());
            s.step(&dir, None);
            s.step(&dir, Some(r))
        };
        assert!(
            matches!(run(b"tim b913a602c7eda7a495b4e6e7334d3891"), Step::Failure(f) if f.user.as_deref() == Some("tim"))
        );
        assert!(matches!(
            run(b"bob b913a602c7eda7a495b4e6e7334d3890"),
            Step::Failure(_)
        ));
        assert!(matches!(run(b"tim"), Step::Failure(_)));
        assert!(matches!(run(b"tim xyz"), Step::Failure(_)));
        let mut s = CramMd5Server::new(CHALLENGE.into());
        assert!(matches!(s.step(&dir, Some(b"early")), Step::Failure(_)));
    }
}
