//! What authentication needs to know about users, whatever stores them: the [`Directory`]
//! mechanisms ask, its answers ([`Verdict`], [`MechanismSecret`]) and the one rule for user
//! names. The passwd-file database (`userdb`, with the password-hash crates behind the `server`
//! feature) is one implementation; the SASL client halves need none of it, so `poplar fetch`'s
//! crate builds without the server's hashes.

use crate::error::AuthError;
use crate::hmac_md5::CramContext;
use crate::sasl::scram::{ScramHash, ScramKeys};

/// What mechanisms may ask about users.
pub trait Directory: Sync {
    /// The secret `user` has for a challenge-response family, if the user exists and has one.
    fn secret(&self, user: &str, kind: SecretKind) -> Option<MechanismSecret>;
    /// Checks a password (slow: a password hash). Unknown users are [`Verdict::Invalid`] after
    /// the same amount of work.
    fn check_password(&self, user: &str, password: &[u8]) -> Result<Verdict, AuthError>;
    /// Whether `user` exists (for identities vouched for by a token or a certificate).
    fn exists(&self, user: &str) -> bool;
    /// Whether the authenticated `user` may act as `authzid` (a different, existing user):
    /// only configured master users may.
    fn may_act_as(&self, user: &str, authzid: &str) -> bool;
}

/// A secret a challenge-response mechanism can work with.
#[derive(Debug)]
pub enum MechanismSecret {
    /// The password itself (from PLAIN/CLEAR).
    Plaintext(Vec<u8>),
    /// HMAC-MD5 states for CRAM-MD5.
    CramMd5(Box<CramContextHandle>),
    /// SCRAM keys.
    Scram(ScramKeys),
}

/// An opaque CRAM-MD5 key (the HMAC-MD5 states), usable only to compute the MAC.
#[derive(Debug, Clone)]
pub struct CramContextHandle(pub(crate) CramContext);

/// The challenge-response families a stored secret can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// APOP.
    Apop,
    /// CRAM-MD5.
    CramMd5,
    /// SCRAM with this hash.
    Scram(ScramHash),
}

/// The result of checking a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The password is right; carries the canonical user name.
    Valid(String),
    /// Unknown user or wrong password (deliberately indistinguishable).
    Invalid,
}

/// Normalises a login name the way Dovecot's default `%Lu` does: ASCII lower case.
pub fn normalize_name(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// An SDPS login at one of `hosts`: `john@example.net` or Demon's `john+example.net`, as
/// `(john@example.net, example.net)`. `None` for the host itself and for every other name.
pub fn sdps_login(name: &str, hosts: &[String]) -> Option<(String, String)> {
    let name = name.to_lowercase();
    let (local, host) = name.rsplit_once('@').or_else(|| name.rsplit_once('+'))?;
    let host = hosts
        .iter()
        .find(|h| h.eq_ignore_ascii_case(host))?
        .to_lowercase();
    (!local.is_empty()).then(|| (format!("{local}@{host}"), host))
}
