//! The client halves of the SASL mechanisms, behind one trait that mirrors the server's
//! ([`super::ServerMechanism`]): a driver (`poplar fetch`, `poplar migrate`) sends AUTH with the
//! initial response, answers each challenge with [`ClientMechanism::respond`], and on the
//! server's `+OK` asks [`ClientMechanism::finish`] whether the server proved itself (SCRAM's
//! mutual authentication). Every mechanism's two halves are tested against each other below.

use super::oauth::Flavor;
use super::scram::{ScramClient, ScramHash};
use crate::error::AuthError;

/// The client side of a SASL mechanism.
pub trait ClientMechanism: Send {
    /// The mechanism's name, as AUTH sends it.
    fn name(&self) -> &'static str;

    /// The initial response sent with AUTH (RFC 4422 section 3.3), or `None` when the server
    /// speaks first.
    fn initial_response(&mut self) -> Result<Option<Vec<u8>>, AuthError>;

    /// The response to a challenge (decoded).
    fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, AuthError>;

    /// The server said `+OK`: fails if it did not prove what the mechanism requires it to.
    fn finish(&self) -> Result<(), AuthError> {
        Ok(())
    }
}

/// What a client authenticates with.
#[derive(Debug, Clone, Copy)]
pub struct ClientCredentials<'a> {
    /// The server's host name (GSSAPI asks Kerberos for a ticket to `pop@HOST`).
    pub host: &'a str,
    /// The user name.
    pub user: &'a str,
    /// The password, or the access token for OAUTHBEARER and XOAUTH2.
    pub secret: &'a [u8],
    /// The connection's `tls-exporter` data (RFC 9266), for the -PLUS variants of SCRAM.
    pub tls_exporter: Option<&'a [u8]>,
    /// Accept SCRAM iteration counts below RFC 5802's 4096 (the user took the risk).
    pub allow_few_iterations: bool,
}

/// The client half of mechanism `name` (upper case, as CAPA lists it).
pub fn client(
    name: &str,
    credentials: &ClientCredentials<'_>,
) -> Result<Box<dyn ClientMechanism>, AuthError> {
    let c = credentials;
    Ok(match name {
        "PLAIN" => Box::new(Plain {
            message: Some(super::plain::client_message("", c.user, c.secret)),
        }),
        "LOGIN" => Box::new(Login {
            user: c.user.as_bytes().to_vec(),
            password: pop3_proto::Secret::new(c.secret.to_vec()),
            prompts: 0,
        }),
        "CRAM-MD5" => Box::new(CramMd5 {
            user: c.user.to_owned(),
            password: pop3_proto::Secret::new(c.secret.to_vec()),
        }),
        "SCRAM-SHA-1" | "SCRAM-SHA-256" | "SCRAM-SHA-1-PLUS" | "SCRAM-SHA-256-PLUS" => {
            let hash = if name.starts_with("SCRAM-SHA-1") {
                ScramHash::Sha1
            } else {
                ScramHash::Sha256
            };
            let plus = name.ends_with("-PLUS");
            let binding = match (plus, c.tls_exporter) {
                (false, _) => None,
                (true, Some(data)) => Some(("tls-exporter", data.to_vec())),
                (true, None) => {
                    return Err(AuthError::UnsupportedMechanism(format!(
                        "{name} needs TLS 1.3 (tls-exporter channel binding)"
                    )));
                }
            };
            let mut scram = ScramClient::new(hash, c.user, c.secret, binding, plus)?;
            if c.allow_few_iterations {
                scram = scram.allow_few_iterations();
            }
            Box::new(Scram {
                name: hash.mechanism(plus),
                client: scram,
                state: ScramState::Start,
            })
        }
        "OAUTHBEARER" | "XOAUTH2" => {
            let flavor = if name == "OAUTHBEARER" {
                Flavor::OauthBearer
            } else {
                Flavor::Xoauth2
            };
            let token = String::from_utf8_lossy(c.secret);
            Box::new(Oauth {
                flavor,
                message: Some(super::oauth::client_message(flavor, c.user, &token)),
            })
        }
        "EXTERNAL" => Box::new(External { sent: false }),
        #[cfg(feature = "gssapi")]
        "GSSAPI" => {
            // The user name is the authorization identity: empty, or one other than the
            // ticket's principal (which a server allows only to master users).
            let client = super::gssapi::GssapiClient::new(&format!("pop@{}", c.host), c.user)
                .map_err(AuthError::ServerRejected)?;
            Box::new(Gssapi { client })
        }
        other => {
            return Err(AuthError::UnsupportedMechanism(format!(
                "login mechanism {other} is not implemented"
            )));
        }
    })
}

/// GSSAPI (RFC 4752): the Kerberos context, then "no security layer".
#[cfg(feature = "gssapi")]
struct Gssapi {
    client: super::gssapi::GssapiClient,
}

#[cfg(feature = "gssapi")]
impl ClientMechanism for Gssapi {
    fn name(&self) -> &'static str {
        "GSSAPI"
    }

    fn initial_response(&mut self) -> Result<Option<Vec<u8>>, AuthError> {
        self.client
            .initial()
            .map(Some)
            .map_err(AuthError::ServerRejected)
    }

    fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, AuthError> {
        self.client
            .respond(challenge)
            .map_err(AuthError::ServerRejected)
    }
}

/// A challenge a mechanism has no answer for.
fn unexpected(mechanism: &'static str) -> AuthError {
    AuthError::ServerRejected(format!("{mechanism} expects no challenge here"))
}

/// PLAIN (RFC 4616): everything in the initial response.
struct Plain {
    message: Option<pop3_proto::Secret<Vec<u8>>>,
}

impl ClientMechanism for Plain {
    fn name(&self) -> &'static str {
        "PLAIN"
    }

    fn initial_response(&mut self) -> Result<Option<Vec<u8>>, AuthError> {
        Ok(self.message.take().map(|m| m.expose().clone()))
    }

    fn respond(&mut self, _challenge: &[u8]) -> Result<Vec<u8>, AuthError> {
        Err(unexpected("PLAIN"))
    }
}

/// LOGIN: the user name and the password, each when prompted.
struct Login {
    user: Vec<u8>,
    password: pop3_proto::Secret<Vec<u8>>,
    prompts: u8,
}

impl ClientMechanism for Login {
    fn name(&self) -> &'static str {
        "LOGIN"
    }

    fn initial_response(&mut self) -> Result<Option<Vec<u8>>, AuthError> {
        Ok(None)
    }

    fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, AuthError> {
        self.prompts += 1;
        if self.prompts > 2 {
            return Err(unexpected("LOGIN"));
        }
        Ok(super::login::client_response(challenge, &self.user, self.password.expose()).to_vec())
    }
}

/// CRAM-MD5 (RFC 2195): the server's challenge, answered with an HMAC of it.
struct CramMd5 {
    user: String,
    password: pop3_proto::Secret<Vec<u8>>,
}

impl ClientMechanism for CramMd5 {
    fn name(&self) -> &'static str {
        "CRAM-MD5"
    }

    fn initial_response(&mut self) -> Result<Option<Vec<u8>>, AuthError> {
        Ok(None)
    }

    fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, AuthError> {
        Ok(super::cram_md5::client_response(
            &self.user,
            self.password.expose(),
            challenge,
        ))
    }
}

#[derive(Debug, PartialEq, Eq)]
enum ScramState {
    Start,
    FinalSent,
    Verified,
}

/// SCRAM (RFC 5802, 7677, 9266): client-first, client-final, then the server's signature.
struct Scram {
    name: &'static str,
    client: ScramClient,
    state: ScramState,
}

impl ClientMechanism for Scram {
    fn name(&self) -> &'static str {
        self.name
    }

    fn initial_response(&mut self) -> Result<Option<Vec<u8>>, AuthError> {
        Ok(Some(self.client.client_first()))
    }

    fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, AuthError> {
        match self.state {
            ScramState::Start => {
                let last = self.client.client_final(challenge)?;
                self.state = ScramState::FinalSent;
                Ok(last)
            }
            // Server-final comes as a last challenge (RFC 5034's form of "additional data
            // with success"); it is answered with an empty response.
            ScramState::FinalSent => {
                self.client.verify_server_final(challenge)?;
                self.state = ScramState::Verified;
                Ok(Vec::new())
            }
            ScramState::Verified => Err(unexpected(self.name)),
        }
    }

    fn finish(&self) -> Result<(), AuthError> {
        if self.state == ScramState::Verified {
            Ok(())
        } else {
            Err(AuthError::ServerRejected(
                "the server accepted without proving it knows the password (no server-final)"
                    .into(),
            ))
        }
    }
}

/// OAUTHBEARER (RFC 7628) and XOAUTH2: the token in the initial response; a failure comes as
/// an error challenge, answered with the dummy response before the server's `-ERR`.
struct Oauth {
    flavor: Flavor,
    message: Option<Vec<u8>>,
}

impl ClientMechanism for Oauth {
    fn name(&self) -> &'static str {
        match self.flavor {
            Flavor::OauthBearer => "OAUTHBEARER",
            Flavor::Xoauth2 => "XOAUTH2",
        }
    }

    fn initial_response(&mut self) -> Result<Option<Vec<u8>>, AuthError> {
        Ok(self.message.take())
    }

    fn respond(&mut self, _error: &[u8]) -> Result<Vec<u8>, AuthError> {
        Ok(match self.flavor {
            // RFC 7628 section 3.2.3: %x01.
            Flavor::OauthBearer => vec![1],
            Flavor::Xoauth2 => Vec::new(),
        })
    }
}

/// EXTERNAL (RFC 4422 appendix A): the identity the TLS client certificate gives.
struct External {
    sent: bool,
}

impl ClientMechanism for External {
    fn name(&self) -> &'static str {
        "EXTERNAL"
    }

    fn initial_response(&mut self) -> Result<Option<Vec<u8>>, AuthError> {
        self.sent = true;
        Ok(Some(super::external::client_message("")))
    }

    fn respond(&mut self, _challenge: &[u8]) -> Result<Vec<u8>, AuthError> {
        Err(unexpected("EXTERNAL"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::MechanismSecret;
    use crate::sasl::tests::TestDirectory;
    use crate::sasl::{ChannelBinding, ServerMechanism, Step};

    /// Runs a client half against a server half in memory; returns the server's last step
    /// and whether the client was satisfied.
    fn run(
        client: &mut dyn ClientMechanism,
        server: &mut dyn ServerMechanism,
        dir: &TestDirectory,
    ) -> (Step, Result<(), AuthError>) {
        let initial = client.initial_response().unwrap();
        let mut step = server.step(dir, initial.as_deref());
        for _ in 0..10 {
            let Step::Challenge(challenge) = &step else {
                break;
            };
            match client.respond(challenge) {
                Ok(response) => step = server.step(dir, Some(&response)),
                Err(e) => return (step, Err(e)),
            }
        }
        let verdict = match &step {
            Step::Success { .. } => client.finish(),
            _ => Ok(()),
        };
        (step, verdict)
    }

    fn credentials<'a>(secret: &'a [u8], exporter: Option<&'a [u8]>) -> ClientCredentials<'a> {
        ClientCredentials {
            host: "localhost",
            user: "alice",
            secret,
            tls_exporter: exporter,
            allow_few_iterations: false,
        }
    }

    fn alice() -> TestDirectory {
        TestDirectory::with_secret("alice", MechanismSecret::Plaintext(b"wonderland".to_vec()))
    }

    fn succeeds(name: &str, server: &mut dyn ServerMechanism, exporter: Option<&[u8]>) {
        let dir = alice();
        let mut right = client(name, &credentials(b"wonderland", exporter)).unwrap();
        assert_eq!(right.name(), name);
        let (step, verdict) = run(right.as_mut(), server, &dir);
        assert_eq!(
            step,
            Step::Success {
                user: "alice".into()
            },
            "{name}"
        );
        verdict.unwrap();
    }

    fn fails(name: &str, server: &mut dyn ServerMechanism, exporter: Option<&[u8]>) {
        let dir = alice();
        let mut wrong = client(name, &credentials(b"looking-glass", exporter)).unwrap();
        let (step, _) = run(wrong.as_mut(), server, &dir);
        assert!(matches!(step, Step::Failure(_)), "{name}: {step:?}");
    }

    #[test]
    fn plain() {
        succeeds("PLAIN", &mut super::super::plain::PlainServer, None);
        fails("PLAIN", &mut super::super::plain::PlainServer, None);
    }

    #[test]
    fn login() {
        succeeds(
            "LOGIN",
            &mut super::super::login::LoginServer::default(),
            None,
        );
        fails(
            "LOGIN",
            &mut super::super::login::LoginServer::default(),
            None,
        );
    }

    #[test]
    fn cram_md5() {
        let server = || super::super::cram_md5::CramMd5Server::new("<1.2@test>".into());
        succeeds("CRAM-MD5", &mut server(), None);
        fails("CRAM-MD5", &mut server(), None);
    }

    #[test]
    fn scram_sha_1_and_256() {
        for (name, hash) in [
            ("SCRAM-SHA-1", ScramHash::Sha1),
            ("SCRAM-SHA-256", ScramHash::Sha256),
        ] {
            let server = || super::super::scram::ScramServer::new(hash, false, None, b"key");
            succeeds(name, &mut server(), None);
            fails(name, &mut server(), None);
        }
    }

    #[test]
    fn scram_plus_binds_the_channel() {
        let binding = ChannelBinding {
            tls_exporter: Some(vec![7; 32]),
            tls_server_end_point: None,
        };
        let server = || {
            super::super::scram::ScramServer::new(
                ScramHash::Sha256,
                true,
                Some(binding.clone()),
                b"key",
            )
        };
        succeeds("SCRAM-SHA-256-PLUS", &mut server(), Some(&[7; 32]));
        fails("SCRAM-SHA-256-PLUS", &mut server(), Some(&[7; 32]));
        // Another connection's binding data: a man in the middle.
        let dir = alice();
        let mut other = client(
            "SCRAM-SHA-256-PLUS",
            &credentials(b"wonderland", Some(&[8; 32])),
        )
        .unwrap();
        let (step, _) = run(other.as_mut(), &mut server(), &dir);
        assert!(matches!(step, Step::Failure(_)), "{step:?}");
        // Without TLS 1.3 there is no binding to offer.
        assert!(client("SCRAM-SHA-256-PLUS", &credentials(b"wonderland", None)).is_err());
    }

    #[test]
    fn a_scram_server_that_skips_its_proof_is_not_trusted() {
        let mut c = client("SCRAM-SHA-256", &credentials(b"wonderland", None)).unwrap();
        c.initial_response().unwrap();
        assert!(c.finish().is_err());
    }

    #[test]
    fn oauthbearer_and_xoauth2() {
        use crate::jwt::JwtVerifier;
        use crate::jwt::tests::{AUDIENCE, ISSUER, Signer, claims};
        let signer = Signer::new();
        let verifier = std::sync::Arc::new(
            JwtVerifier::from_jwks(&signer.jwks(), ISSUER, AUDIENCE, "email").unwrap(),
        );
        let dir = TestDirectory::with_secret(
            "alice@example.org",
            MechanismSecret::Plaintext(b"x".to_vec()),
        );
        let now = 1_800_000_000;
        let good = signer.token("ES256", "ec1", claims("alice@example.org", now));
        let stale = signer.token("ES256", "ec1", claims("alice@example.org", now - 86_400));
        for (name, flavor) in [
            ("OAUTHBEARER", Flavor::OauthBearer),
            ("XOAUTH2", Flavor::Xoauth2),
        ] {
            for (token, ok) in [(&good, true), (&stale, false)] {
                let mut server =
                    super::super::oauth::OauthServer::new(flavor, verifier.clone(), now);
                let creds = ClientCredentials {
                    host: "localhost",
                    user: "alice@example.org",
                    secret: token.as_bytes(),
                    tls_exporter: None,
                    allow_few_iterations: false,
                };
                let mut c = client(name, &creds).unwrap();
                let (step, verdict) = run(c.as_mut(), &mut server, &dir);
                assert_eq!(matches!(step, Step::Success { .. }), ok, "{name}: {step:?}");
                verdict.unwrap();
            }
        }
    }

    #[test]
    fn external() {
        let dir = alice();
        let mut server = super::super::external::ExternalServer::new(Some("alice".into()));
        let mut c = client("EXTERNAL", &credentials(b"", None)).unwrap();
        let (step, verdict) = run(c.as_mut(), &mut server, &dir);
        assert_eq!(
            step,
            Step::Success {
                user: "alice".into()
            }
        );
        verdict.unwrap();
        let mut anonymous = super::super::external::ExternalServer::new(None);
        let mut c = client("EXTERNAL", &credentials(b"", None)).unwrap();
        let (step, _) = run(c.as_mut(), &mut anonymous, &dir);
        assert!(matches!(step, Step::Failure(_)));
    }

    #[test]
    fn unknown_mechanisms_are_refused() {
        assert!(matches!(
            client("NTLM", &credentials(b"", None)),
            Err(AuthError::UnsupportedMechanism(_))
        ));
    }
}
