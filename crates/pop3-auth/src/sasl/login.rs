//! LOGIN: the de-facto two-step mechanism (draft-murchison-sasl-login): the server asks
//! `Username:` then `Password:`, the client answers each. Outlook and many phones use it.

use super::{Directory, Failure, ServerMechanism, Step, password_step};

/// The server side.
#[derive(Debug, Default)]
pub struct LoginServer {
    user: Option<String>,
}

impl ServerMechanism for LoginServer {
    fn step(&mut self, dir: &dyn Directory, response: Option<&[u8]>) -> Step {
        match (&self.user, response) {
            // Some clients send the user name as an initial response.
            (None, None) => Step::Challenge(b"Username:".to_vec()),
            (None, Some(name)) => match std::str::from_utf8(name) {
                Ok(name) if !name.is_empty() && !name.contains('\0') => {
                    self.user = Some(name.to_owned());
                    Step::Challenge(b"Password:".to_vec())
                }
                _ => Step::Failure(Failure::malformed("bad LOGIN user name")),
            },
            (Some(user), Some(password)) => password_step(dir, user, password),
            (Some(_), None) => Step::Failure(Failure::malformed("no password")),
        }
    }
}

/// The client side: the answer to each server prompt.
pub fn client_response<'a>(prompt: &[u8], user: &'a [u8], password: &'a [u8]) -> &'a [u8] {
    if prompt.to_ascii_lowercase().starts_with(b"user") {
        user
    } else {
        password
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::MechanismSecret;
    use crate::sasl::tests::TestDirectory;

    #[test]
    fn exchange() {
        let dir = TestDirectory::with_secret("alice", MechanismSecret::Plaintext(b"pw".to_vec()));
        let mut s = LoginServer::default();
        assert_eq!(s.step(&dir, None), Step::Challenge(b"Username:".to_vec()));
        assert_eq!(client_response(b"Username:", b"alice", b"pw"), b"alice");
        assert_eq!(
            s.step(&dir, Some(b"alice")),
            Step::Challenge(b"Password:".to_vec())
        );
        assert_eq!(client_response(b"Password:", b"alice", b"pw"), b"pw");
        assert_eq!(
            s.step(&dir, Some(b"pw")),
            Step::Success {
                user: "alice".into()
            }
        );
        let mut s = LoginServer::default();
        assert_eq!(
            s.step(&dir, Some(b"alice")),
            Step::Challenge(b"Password:".to_vec())
        );
        assert!(matches!(s.step(&dir, Some(b"nope")), Step::Failure(_)));
        assert!(matches!(
            LoginServer::default().step(&dir, Some(b"")),
            Step::Failure(_)
        ));
    }
}
