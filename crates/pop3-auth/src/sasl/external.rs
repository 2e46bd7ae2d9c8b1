//! EXTERNAL (RFC 4422 appendix A): the identity comes from outside SASL, here a verified TLS
//! client certificate. The client's message is the authorization identity it wants (empty for
//! "whatever the certificate says").

use super::{Directory, Failure, ServerMechanism, Step, authorize};

/// The server side, with the user name the certificate maps to (if any).
#[derive(Debug)]
pub struct ExternalServer {
    identity: Option<String>,
}

impl ExternalServer {
    /// `identity`: the user the connection's client certificate maps to.
    pub fn new(identity: Option<String>) -> Self {
        Self { identity }
    }
}

impl ServerMechanism for ExternalServer {
    fn step(&mut self, dir: &dyn Directory, response: Option<&[u8]>) -> Step {
        let Some(authzid) = response else {
            return Step::Challenge(Vec::new());
        };
        let Ok(authzid) = std::str::from_utf8(authzid) else {
            return Step::Failure(Failure::malformed("authorization identity is not UTF-8"));
        };
        let Some(identity) = &self.identity else {
            return Step::Failure(Failure::invalid(None, "no usable client certificate"));
        };
        let user = dir.canonical(identity);
        if !dir.exists(&user) {
            return Step::Failure(Failure::invalid(
                Some(user),
                "certificate user is not in the users file",
            ));
        }
        authorize(dir, user, Some(authzid))
    }
}

/// The client message: the authorization identity wanted, empty for "whatever my certificate
/// says".
pub fn client_message(authzid: &str) -> Vec<u8> {
    authzid.as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::MechanismSecret;
    use crate::sasl::tests::TestDirectory;

    #[test]
    fn identity_from_the_certificate() {
        let dir = TestDirectory::with_secret(
            "alice@example.org",
            MechanismSecret::Plaintext(b"x".to_vec()),
        );
        let mut s = ExternalServer::new(Some("Alice@example.org".into()));
        assert_eq!(s.step(&dir, None), Step::Challenge(Vec::new()));
        assert_eq!(
            s.step(&dir, Some(b"")),
            Step::Success {
                user: "alice@example.org".into()
            }
        );
        assert_eq!(
            ExternalServer::new(Some("alice@example.org".into()))
                .step(&dir, Some(b"alice@example.org")),
            Step::Success {
                user: "alice@example.org".into()
            }
        );
        assert!(matches!(
            ExternalServer::new(Some("alice@example.org".into())).step(&dir, Some(b"bob")),
            Step::Failure(_)
        ));
        assert!(matches!(
            ExternalServer::new(None).step(&dir, Some(b"")),
            Step::Failure(_)
        ));
        assert!(matches!(
            ExternalServer::new(Some("mallory".into())).step(&dir, Some(b"")),
            Step::Failure(_)
        ));
    }
}
