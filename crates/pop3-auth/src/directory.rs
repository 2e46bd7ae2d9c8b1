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
    /// The user name a login name (an authentication or authorization identity) stands for.
    fn canonical(&self, name: &str) -> String {
        normalize_name(name)
    }
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

/// Normalises a login name: ASCII lower case (Dovecot's `%Lu`), the old `user%domain` form as
/// `user@domain`, and the domain in its IDNA ASCII form (RFC 5891), so `anna@bücher.example`
/// and `anna@xn--bcher-kva.example` are one user. A domain IDNA refuses is only lower-cased
/// (it then matches nothing it should not).
pub fn normalize_name(name: &str) -> String {
    let (local, domain) = match name.rsplit_once('@') {
        Some(split) => split,
        None => match name.rsplit_once('%') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() => (local, domain),
            _ => return name.to_ascii_lowercase(),
        },
    };
    format!(
        "{}@{}",
        local.to_ascii_lowercase(),
        normalize_domain(domain)
    )
}

/// Whether `domain` is a host name IDNA accepts (UTS 46 with STD 3 rules).
pub fn valid_domain(domain: &str) -> bool {
    !domain.is_empty() && idna::domain_to_ascii_strict(domain).is_ok()
}

/// A domain name in the one form Poplar compares: IDNA ASCII (punycode), lower case.
pub fn normalize_domain(domain: &str) -> String {
    idna::domain_to_ascii(domain).unwrap_or_else(|_| domain.to_ascii_lowercase())
}

/// How login names become user names beyond [`normalize_name`]: a default domain for bare
/// names (`auth.default_domain`) and SDPS hosts (`john+host`, and `john@host` logging in with
/// the host's entry). Empty by default: names are taken as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginRules {
    /// SDPS host names, normalised.
    pub sdps_hosts: Vec<String>,
    /// Appended to names without a domain, normalised.
    pub default_domain: Option<String>,
}

impl LoginRules {
    /// Rules for these hosts and this default domain (both normalised here).
    pub fn new(sdps_hosts: &[String], default_domain: Option<&str>) -> Self {
        Self {
            sdps_hosts: sdps_hosts.iter().map(|h| normalize_domain(h)).collect(),
            default_domain: default_domain.map(normalize_domain),
        }
    }

    /// The user name a login name stands for.
    pub fn canonical(&self, name: &str) -> String {
        if let Some((login, _)) = self.sdps_login(name) {
            return login;
        }
        let name = normalize_name(name);
        // A host's own name, in whichever form it was written.
        if !name.contains('@') && !self.sdps_hosts.is_empty() {
            let host = normalize_domain(&name);
            if self.sdps_hosts.contains(&host) {
                return host;
            }
        }
        match &self.default_domain {
            Some(domain)
                if !name.is_empty() && !name.contains('@') && !self.sdps_hosts.contains(&name) =>
            {
                format!("{name}@{domain}")
            }
            _ => name,
        }
    }

    /// An SDPS login at one of the hosts: `john@example.net` or Demon's `john+example.net`, as
    /// `(john@example.net, example.net)`. `None` for the host itself and every other name.
    pub fn sdps_login(&self, name: &str) -> Option<(String, String)> {
        if self.sdps_hosts.is_empty() {
            return None;
        }
        let normal = normalize_name(name);
        let (local, host) = normal
            .rsplit_once('@')
            .or_else(|| normal.rsplit_once('+'))?;
        let host = normalize_domain(host);
        (!local.is_empty() && self.sdps_hosts.contains(&host))
            .then(|| (format!("{local}@{host}"), host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_case_with_idna_domains_and_the_percent_form() {
        assert_eq!(normalize_name("Alice"), "alice");
        assert_eq!(
            normalize_name("Anna@Bücher.Example"),
            "anna@xn--bcher-kva.example"
        );
        assert_eq!(
            normalize_name("anna@XN--BCHER-KVA.example"),
            "anna@xn--bcher-kva.example"
        );
        assert_eq!(
            normalize_name("anna%bücher.example"),
            "anna@xn--bcher-kva.example"
        );
        // A trailing or leading % is no domain; an @ wins over a %.
        assert_eq!(normalize_name("a%"), "a%");
        assert_eq!(normalize_name("%b"), "%b");
        assert_eq!(normalize_name("a%b@c.example"), "a%b@c.example");
        // A domain IDNA refuses matches only itself, lower-cased.
        assert_eq!(normalize_name("x@a_b"), "x@a_b");
        assert!(valid_domain("bücher.example") && !valid_domain("a_b") && !valid_domain(""));
    }

    #[test]
    fn login_rules_add_the_default_domain_and_read_sdps_forms() {
        let rules = LoginRules::new(&["Example.NET".into()], Some("Example.ORG"));
        assert_eq!(rules.canonical("alice"), "alice@example.org");
        assert_eq!(
            rules.canonical("alice@other.example"),
            "alice@other.example"
        );
        assert_eq!(
            rules.canonical("example.net"),
            "example.net",
            "a host stays itself"
        );
        assert_eq!(rules.canonical("john+example.net"), "john@example.net");
        assert_eq!(rules.canonical(""), "");
        assert_eq!(
            rules.sdps_login("JOHN@example.net"),
            Some(("john@example.net".into(), "example.net".into()))
        );
        assert_eq!(rules.sdps_login("example.net"), None);
        assert_eq!(rules.sdps_login("john@example.org"), None);
        assert_eq!(LoginRules::default().canonical("Alice"), "alice");
    }
}
