//! SASL mechanisms (RFC 4422), server and client side, as small state machines.
//!
//! The POP3 framing (RFC 5034: `+ ` continuations, base64, `*` to cancel) lives in pop3-proto;
//! mechanisms here see decoded messages. A server mechanism is driven by
//! [`ServerMechanism::step`] with the client's response (`None` when AUTH carried no initial
//! response) and answers with a challenge, success or failure. It reads what it needs about
//! users through [`Directory`], which the user database implements; the steps are synchronous
//! and may be slow (PLAIN and LOGIN verify password hashes, SCRAM may run PBKDF2), so the server
//! runs them on its hashing threads. "Additional data with success" (SCRAM's server-final,
//! OAUTHBEARER's error) is sent as a final challenge and the mechanism completes on the client's
//! reply, the form POP3 clients and Dovecot use.
//!
//! Mechanisms: PLAIN (RFC 4616), LOGIN, CRAM-MD5 (RFC 2195), SCRAM-SHA-1/-256 and their -PLUS
//! variants (RFC 5802, 7677, 9266), OAUTHBEARER (RFC 7628), XOAUTH2, EXTERNAL (RFC 4422 appendix
//! A), and GSSAPI (RFC 4752, Kerberos 5; its Kerberos half with the `gssapi` feature). Each has
//! a client side for `poplar fetch`.

pub mod client;
pub mod cram_md5;
pub mod external;
pub mod gssapi;
pub mod login;
pub mod oauth;
pub mod plain;
pub mod scram;

use crate::directory::{Directory, Verdict};
use std::borrow::Cow;

/// The identity a successful authentication yields: `user` itself, or `authzid` when the client
/// asked for another identity and `user` is a master user allowed to take it.
pub(crate) fn authorize(dir: &dyn Directory, user: String, authzid: Option<&str>) -> Step {
    let user = dir.canonical(&user);
    match authzid.filter(|a| !a.is_empty()).map(|a| dir.canonical(a)) {
        None => Step::Success { user },
        Some(a) if a.is_empty() || a == user => Step::Success { user },
        Some(a) if dir.may_act_as(&user, &a) => Step::Success { user: a },
        Some(_) => Step::Failure(Failure::invalid(
            Some(user),
            "not allowed to act as another user",
        )),
    }
}

/// The result of one step.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this challenge and wait for the client's response.
    Challenge(Vec<u8>),
    /// Authenticated as this (canonical) user.
    Success {
        /// The user name.
        user: String,
    },
    /// Authentication failed.
    Failure(Failure),
}

/// Why a mechanism failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The class of failure, which decides the response code.
    pub kind: FailureKind,
    /// The user the client tried to authenticate as, when known (for logs and penalties).
    pub user: Option<String>,
    /// A short reason for the log (never a secret), naming the real cause: the client is
    /// answered the same whatever it is.
    pub reason: Cow<'static, str>,
}

/// Classes of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The credentials are wrong: `[AUTH]`.
    InvalidCredentials,
    /// The client broke the mechanism's syntax.
    Malformed,
    /// The server could not decide: `[SYS/TEMP]`.
    Temporary,
}

impl Failure {
    pub(crate) fn invalid(user: Option<String>, reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind: FailureKind::InvalidCredentials,
            user,
            reason: reason.into(),
        }
    }

    pub(crate) fn malformed(reason: &'static str) -> Self {
        Self {
            kind: FailureKind::Malformed,
            user: None,
            reason: reason.into(),
        }
    }

    /// The server could not decide (the users file unreadable, a hashing thread gone).
    pub fn temporary() -> Self {
        Self {
            kind: FailureKind::Temporary,
            user: None,
            reason: "server error".into(),
        }
    }

    /// Why a challenge-response mechanism found no secret for `user`: unknown, or known
    /// without a stored form this mechanism can use (CAPA offered it because other users
    /// have one). For the log only; the client is answered as for a wrong password.
    pub(crate) fn no_secret(dir: &dyn Directory, user: &str, mechanism: &str) -> Self {
        let reason = if dir.exists(user) {
            format!("no {mechanism} secret stored for {user}")
        } else {
            "unknown user".to_owned()
        };
        Self::invalid(Some(user.to_owned()), reason)
    }
}

/// A server mechanism.
pub trait ServerMechanism: Send + std::fmt::Debug {
    /// Processes the client's next message (`None`: AUTH without an initial response).
    fn step(&mut self, dir: &dyn Directory, response: Option<&[u8]>) -> Step;

    /// The user the client has named so far, if the exchange has got that far (for the
    /// penalty of an exchange the client abandons).
    fn claimed_user(&self) -> Option<&str> {
        None
    }
}

/// Channel binding data of a TLS connection (RFC 5929, RFC 9266).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelBinding {
    /// `tls-exporter`: the TLS exporter value (TLS 1.3, or 1.2 with extended master secret).
    pub tls_exporter: Option<Vec<u8>>,
    /// `tls-server-end-point`: the hash of the server's certificate.
    pub tls_server_end_point: Option<Vec<u8>>,
}

impl ChannelBinding {
    /// The data for a channel binding type name.
    pub fn data(&self, name: &str) -> Option<&[u8]> {
        match name {
            "tls-exporter" => self.tls_exporter.as_deref(),
            "tls-server-end-point" => self.tls_server_end_point.as_deref(),
            _ => None,
        }
    }

    /// Whether there is any binding data.
    pub fn is_available(&self) -> bool {
        self.tls_exporter.is_some() || self.tls_server_end_point.is_some()
    }
}

/// Checks a password through the directory and turns the verdict into a step.
pub(crate) fn password_step(dir: &dyn Directory, user: &str, password: &[u8]) -> Step {
    match dir.check_password(user, password) {
        Ok(Verdict::Valid(user)) => Step::Success { user },
        Ok(Verdict::Invalid) => Step::Failure(Failure::invalid(
            Some(user.to_owned()),
            "wrong password or unknown user",
        )),
        Err(_) => Step::Failure(Failure {
            kind: FailureKind::Temporary,
            user: Some(user.to_owned()),
            reason: "password cannot be checked".into(),
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::directory::{MechanismSecret, SecretKind};
    use crate::error::AuthError;
    use std::collections::HashMap;

    /// An in-memory directory: secrets by user, passwords checked against plaintext secrets.
    #[derive(Debug, Default)]
    pub(crate) struct TestDirectory {
        users: HashMap<String, MechanismSecret>,
    }

    impl TestDirectory {
        pub(crate) fn with_secret(user: &str, secret: MechanismSecret) -> Self {
            let mut users = HashMap::new();
            users.insert(user.to_owned(), secret);
            Self { users }
        }

        pub(crate) fn add(&mut self, user: &str, secret: MechanismSecret) {
            self.users.insert(user.to_owned(), secret);
        }
    }

    impl Directory for TestDirectory {
        fn secret(&self, user: &str, kind: SecretKind) -> Option<MechanismSecret> {
            match (self.users.get(user)?, kind) {
                (MechanismSecret::Plaintext(p), SecretKind::CramMd5) => Some(
                    MechanismSecret::CramMd5(Box::new(crate::directory::CramContextHandle(
                        crate::hmac_md5::CramContext::from_password(p),
                    ))),
                ),
                (MechanismSecret::Plaintext(p), _) => Some(MechanismSecret::Plaintext(p.clone())),
                (MechanismSecret::Scram(k), SecretKind::Scram(_)) => {
                    Some(MechanismSecret::Scram(k.clone()))
                }
                (MechanismSecret::CramMd5(c), SecretKind::CramMd5) => {
                    Some(MechanismSecret::CramMd5(c.clone()))
                }
                _ => None,
            }
        }

        fn check_password(&self, user: &str, password: &[u8]) -> Result<Verdict, AuthError> {
            Ok(match self.users.get(user) {
                Some(MechanismSecret::Plaintext(p)) if p == password => {
                    Verdict::Valid(user.to_owned())
                }
                _ => Verdict::Invalid,
            })
        }

        fn exists(&self, user: &str) -> bool {
            self.users.contains_key(user)
        }

        fn may_act_as(&self, user: &str, authzid: &str) -> bool {
            user == "master" && self.exists(authzid)
        }
    }
}
