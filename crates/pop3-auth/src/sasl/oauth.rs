//! OAUTHBEARER (RFC 7628) and XOAUTH2 (Google's and Microsoft's older form): the client sends an
//! OAuth 2.0 bearer token; the server checks it locally ([`crate::jwt`]) and takes the user from
//! it. On failure the server sends a JSON error as a challenge, the client acknowledges it, and
//! the exchange fails (RFC 7628 section 3.2.3).

use super::{Directory, Failure, ServerMechanism, Step, authorize};
use crate::jwt::JwtVerifier;
use std::sync::Arc;

/// Which message format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// RFC 7628: `n,a=user,^Ahost=...^Aport=...^Aauth=Bearer TOKEN^A^A`.
    OauthBearer,
    /// `user=USER^Aauth=Bearer TOKEN^A^A`.
    Xoauth2,
}

/// The user and token from a client message.
#[derive(Debug)]
pub struct BearerMessage {
    /// The authorization identity the client names, if any.
    pub user: Option<String>,
    /// The bearer token.
    pub token: pop3_proto::Secret<String>,
}

/// Parses a client message of either flavor.
pub fn parse(flavor: Flavor, message: &[u8]) -> Option<BearerMessage> {
    let text = std::str::from_utf8(message).ok()?;
    let (user, pairs) = match flavor {
        Flavor::OauthBearer => {
            let (gs2, rest) = text.split_once('\x01')?;
            let mut fields = gs2.split(',');
            let flag = fields.next()?;
            if flag != "n" && flag != "y" {
                return None;
            }
            let authzid = fields.next()?;
            if fields.next() != Some("") || fields.next().is_some() {
                return None;
            }
            let user = match authzid {
                "" => None,
                a => Some(
                    a.strip_prefix("a=")?
                        .replace("=2C", ",")
                        .replace("=3D", "="),
                ),
            };
            (user, rest)
        }
        Flavor::Xoauth2 => (None, text),
    };
    let pairs = pairs
        .strip_suffix("\x01\x01")
        .or_else(|| pairs.strip_suffix('\x01'))?;
    let mut user = user;
    let mut token = None;
    for pair in pairs.split('\x01') {
        let (key, value) = pair.split_once('=')?;
        match key {
            "auth" => {
                let (scheme, t) = value.split_once(' ')?;
                if !scheme.eq_ignore_ascii_case("Bearer") || t.is_empty() {
                    return None;
                }
                token = Some(t.trim().to_owned());
            }
            "user" if flavor == Flavor::Xoauth2 => user = Some(value.to_owned()),
            _ => {}
        }
    }
    Some(BearerMessage {
        user,
        token: pop3_proto::Secret::new(token?),
    })
}

/// The client message.
pub fn client_message(flavor: Flavor, user: &str, token: &str) -> Vec<u8> {
    match flavor {
        Flavor::OauthBearer => {
            let user = user.replace('=', "=3D").replace(',', "=2C");
            format!("n,a={user},\x01auth=Bearer {token}\x01\x01").into_bytes()
        }
        Flavor::Xoauth2 => format!("user={user}\x01auth=Bearer {token}\x01\x01").into_bytes(),
    }
}

#[derive(Debug)]
enum State {
    Start,
    /// The error challenge was sent; the next message (`^A` or empty) ends in failure.
    ErrorSent(Failure),
    Done,
}

/// The server side of OAUTHBEARER or XOAUTH2.
#[derive(Debug)]
pub struct OauthServer {
    flavor: Flavor,
    verifier: Arc<JwtVerifier>,
    now: u64,
    state: State,
}

impl OauthServer {
    /// A server checking tokens with `verifier` at Unix time `now`.
    pub fn new(flavor: Flavor, verifier: Arc<JwtVerifier>, now: u64) -> Self {
        Self {
            flavor,
            verifier,
            now,
            state: State::Start,
        }
    }

    fn error_challenge(&self) -> Vec<u8> {
        match self.flavor {
            Flavor::OauthBearer => br#"{"status":"invalid_token","schemes":"bearer"}"#.to_vec(),
            Flavor::Xoauth2 => br#"{"status":"401","schemes":"bearer"}"#.to_vec(),
        }
    }
}

impl ServerMechanism for OauthServer {
    fn step(&mut self, dir: &dyn Directory, response: Option<&[u8]>) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Start => {
                let Some(message) = response else {
                    self.state = State::Start;
                    return Step::Challenge(Vec::new());
                };
                let Some(msg) = parse(self.flavor, message) else {
                    return Step::Failure(Failure::malformed("malformed bearer message"));
                };
                let outcome = match self.verifier.verify(msg.token.expose(), self.now) {
                    Ok(subject) => {
                        let user = dir.canonical(&subject);
                        if dir.exists(&user) {
                            // A named identity other than the token's needs a master user.
                            authorize(dir, user, msg.user.as_deref())
                        } else {
                            Step::Failure(Failure::invalid(
                                Some(user),
                                "token user is not in the users file",
                            ))
                        }
                    }
                    Err(e) => {
                        Step::Failure(Failure::invalid(msg.user, format!("token refused ({e:?})")))
                    }
                };
                match outcome {
                    Step::Failure(failure) => {
                        let challenge = self.error_challenge();
                        self.state = State::ErrorSent(failure);
                        Step::Challenge(challenge)
                    }
                    success => success,
                }
            }
            State::ErrorSent(failure) => Step::Failure(failure),
            State::Done => Step::Failure(Failure::malformed("unexpected message")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::MechanismSecret;
    use crate::jwt::tests::{AUDIENCE, ISSUER, Signer, claims};
    use crate::sasl::tests::TestDirectory;

    #[test]
    fn rfc7628_message_format() {
        // RFC 7628 section 4.1 (the token is opaque here).
        let m = parse(
            Flavor::OauthBearer,
            b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01",
        )
        .unwrap();
        assert_eq!(m.user.as_deref(), Some("user@example.com"));
        assert_eq!(
            m.token.expose(),
            "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
        );
        let m = parse(
            Flavor::Xoauth2,
            b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4\x01\x01",
        )
        .unwrap();
        assert_eq!(m.user.as_deref(), Some("someuser@example.com"));
        for bad in [
            &b""[..],
            b"n,,\x01auth=Basic x\x01\x01",
            b"p=tls-unique,,\x01auth=Bearer x\x01\x01",
            b"n,,\x01host=x\x01\x01",
        ] {
            assert!(parse(Flavor::OauthBearer, bad).is_none(), "{bad:?}");
        }
        assert!(
            parse(
                Flavor::OauthBearer,
                &client_message(Flavor::OauthBearer, "a,b@x", "T")
            )
            .is_some()
        );
    }

    #[test]
    fn server_accepts_and_refuses() {
        let signer = Signer::new();
        let verifier =
            Arc::new(JwtVerifier::from_jwks(&signer.jwks(), ISSUER, AUDIENCE, "email").unwrap());
        let dir = TestDirectory::with_secret(
            "alice@example.org",
            MechanismSecret::Plaintext(b"x".to_vec()),
        );
        let now = 1_800_000_000;
        let good = signer.token("ES256", "ec1", claims("Alice@example.org", now));
        for flavor in [Flavor::OauthBearer, Flavor::Xoauth2] {
            let mut s = OauthServer::new(flavor, verifier.clone(), now);
            let msg = client_message(flavor, "alice@example.org", &good);
            assert_eq!(
                s.step(&dir, Some(&msg)),
                Step::Success {
                    user: "alice@example.org".into()
                }
            );
            // Without an initial response the client gets an empty challenge first.
            let mut s = OauthServer::new(flavor, verifier.clone(), now);
            assert_eq!(s.step(&dir, None), Step::Challenge(Vec::new()));
            assert_eq!(
                s.step(&dir, Some(&msg)),
                Step::Success {
                    user: "alice@example.org".into()
                }
            );
            // A token for someone else, an expired token, a user not in the users file.
            let bad_tokens = [
                client_message(flavor, "bob@example.org", &good),
                client_message(
                    flavor,
                    "alice@example.org",
                    &signer.token("ES256", "ec1", claims("alice@example.org", now - 7200)),
                ),
                client_message(
                    flavor,
                    "carol@example.org",
                    &signer.token("ES256", "ec1", claims("carol@example.org", now)),
                ),
            ];
            for msg in bad_tokens {
                let mut s = OauthServer::new(flavor, verifier.clone(), now);
                let Step::Challenge(json) = s.step(&dir, Some(&msg)) else {
                    panic!("expected the error challenge")
                };
                assert!(String::from_utf8(json).unwrap().contains("\"status\""));
                assert!(matches!(s.step(&dir, Some(b"\x01")), Step::Failure(_)));
            }
        }
    }
}
