//! Password schemes, in Dovecot's `{SCHEME}data` notation.
//!
//! Operators migrate to Poplar with their existing Dovecot passwd-file, so stored passwords are
//! read exactly as Dovecot writes them (`doveadm pw -s SCHEME`): ARGON2ID, ARGON2I, BLF-CRYPT,
//! SHA512-CRYPT, SHA256-CRYPT, CRYPT (by its `$id$`), PBKDF2, SSHA512, SSHA256, SSHA, SMD5,
//! SHA512, SHA256, SHA1, PLAIN-MD5, LDAP-MD5, CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256, PLAIN and
//! CLEAR, with Dovecot's `.HEX`/`.B64` encoding suffixes. New passwords are hashed with ARGON2ID
//! using the argon2 crate's defaults (19 MiB, 2 passes, 1 lane).
//!
//! What is stored also decides which challenge-response mechanisms a user can use: APOP needs a
//! plaintext-equivalent (PLAIN/CLEAR), CRAM-MD5 needs the CRAM-MD5 states or the plaintext,
//! SCRAM needs that hash's SCRAM keys or the plaintext ([`Stored::mechanism_secret`]).
//! Comparisons are constant-time.

use crate::directory::{CramContextHandle, MechanismSecret, SecretKind};
use crate::error::AuthError;
use crate::hmac_md5::CramContext;
use crate::sasl::scram::{ScramHash, ScramKeys};
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// The scheme Poplar writes for new passwords.
pub const DEFAULT_SCHEME: &str = "ARGON2ID";

/// The schemes `poplar user add --schemes` can write.
pub const WRITABLE: &[&str] = &[
    "ARGON2ID",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1",
    "CRAM-MD5",
    "SHA512-CRYPT",
    "SHA256-CRYPT",
    "BLF-CRYPT",
    "PBKDF2",
    "SSHA512",
    "PLAIN",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Plain,
    Argon2id,
    Argon2i,
    BlfCrypt,
    Sha512Crypt,
    Sha256Crypt,
    Crypt,
    Pbkdf2,
    Salted(Hash),
    Unsalted(Hash),
    CramMd5,
    Scram(ScramHash),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl Hash {
    fn len(self) -> usize {
        match self {
            Hash::Md5 => 16,
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
            Hash::Sha512 => 64,
        }
    }

    fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            d.finalize().to_vec()
        }
        match self {
            Hash::Md5 => run::<Md5>(parts),
            Hash::Sha1 => run::<Sha1>(parts),
            Hash::Sha256 => run::<Sha256>(parts),
            Hash::Sha512 => run::<Sha512>(parts),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Hex,
    Base64,
}

/// A parsed stored password.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    scheme: Scheme,
    /// Name as written (upper-case), for messages.
    name: &'a str,
    encoding: Option<Encoding>,
    data: &'a str,
}

/// Splits `{SCHEME}data` into the upper-cased scheme and the data. A value without a scheme
/// prefix is Dovecot's passwd-file default, CRYPT.
pub fn split_scheme(stored: &str) -> (String, &str) {
    if let Some(rest) = stored.strip_prefix('{')
        && let Some(end) = rest.find('}')
    {
        return (rest[..end].to_ascii_uppercase(), &rest[end + 1..]);
    }
    ("CRYPT".to_owned(), stored)
}

impl<'a> Stored<'a> {
    /// Parses a stored `{SCHEME}data` value.
    pub fn parse(stored: &'a str) -> Result<Self, AuthError> {
        let (name, data) = match stored.strip_prefix('{').and_then(|r| r.split_once('}')) {
            Some((name, data)) => (name, data),
            None => ("CRYPT", stored),
        };
        let upper = name.to_ascii_uppercase();
        let (base, encoding) = match upper.rsplit_once('.') {
            Some((b, "HEX")) => (b.to_owned(), Some(Encoding::Hex)),
            Some((b, "B64" | "BASE64")) => (b.to_owned(), Some(Encoding::Base64)),
            _ => (upper.clone(), None),
        };
        let scheme = match base.as_str() {
            "PLAIN" | "CLEAR" | "CLEARTEXT" => Scheme::Plain,
            "ARGON2ID" => Scheme::Argon2id,
            "ARGON2I" => Scheme::Argon2i,
            "BLF-CRYPT" => Scheme::BlfCrypt,
            "SHA512-CRYPT" => Scheme::Sha512Crypt,
            "SHA256-CRYPT" => Scheme::Sha256Crypt,
            "CRYPT" => Scheme::Crypt,
            "PBKDF2" => Scheme::Pbkdf2,
            "SSHA512" => Scheme::Salted(Hash::Sha512),
            "SSHA256" => Scheme::Salted(Hash::Sha256),
            "SSHA" => Scheme::Salted(Hash::Sha1),
            "SMD5" => Scheme::Salted(Hash::Md5),
            "SHA512" => Scheme::Unsalted(Hash::Sha512),
            "SHA256" => Scheme::Unsalted(Hash::Sha256),
            "SHA" | "SHA1" => Scheme::Unsalted(Hash::Sha1),
            "PLAIN-MD5" | "LDAP-MD5" => Scheme::Unsalted(Hash::Md5),
            "CRAM-MD5" | "HMAC-MD5" => Scheme::CramMd5,
            "SCRAM-SHA-1" => Scheme::Scram(ScramHash::Sha1),
            "SCRAM-SHA-256" => Scheme::Scram(ScramHash::Sha256),
            _ => return Err(AuthError::UnsupportedScheme(upper)),
        };
        let name = match scheme {
            Scheme::Plain => "PLAIN",
            _ => name,
        };
        Ok(Self {
            scheme,
            name,
            encoding,
            data,
        })
    }

    fn malformed(&self, reason: impl Into<String>) -> AuthError {
        AuthError::MalformedHash {
            scheme: self.name.to_owned(),
            reason: reason.into(),
        }
    }

    /// Whether checking a password against this form takes microseconds (plaintext and
    /// single-hash schemes) rather than the deliberate milliseconds of a password hash.
    pub fn is_fast(&self) -> bool {
        matches!(
            self.scheme,
            Scheme::Plain | Scheme::Salted(_) | Scheme::Unsalted(_) | Scheme::CramMd5
        )
    }

    /// What checking a password against this form costs, as a key: the scheme and its cost
    /// parameters (Argon2's memory, passes and lanes, bcrypt's cost, crypt's rounds, PBKDF2's
    /// iterations), without salt or hash. Two forms with the same key take the same time to
    /// check, which is what a decoy for an unknown user must match.
    pub fn cost_class(&self) -> String {
        let fields: Vec<&str> = self.data.split('$').collect();
        let params = match self.scheme {
            // $argon2id$v=19$m=19456,t=2,p=1$salt$hash
            Scheme::Argon2id | Scheme::Argon2i => fields.get(1..4).map(|f| f.join("$")),
            // $2y$10$saltandhash
            Scheme::BlfCrypt => fields.get(1..3).map(|f| f.join("$")),
            // $6$rounds=N$salt$hash or $6$salt$hash (5000 rounds)
            Scheme::Sha512Crypt | Scheme::Sha256Crypt | Scheme::Crypt => {
                let id = fields.get(1).copied().unwrap_or("");
                match fields.get(2) {
                    Some(r) if r.starts_with("rounds=") => Some(format!("{id}${r}")),
                    _ if id.starts_with('2') => fields.get(1..3).map(|f| f.join("$")),
                    _ => Some(id.to_owned()),
                }
            }
            // $1$salt$rounds$hex
            Scheme::Pbkdf2 => fields.get(3).map(|r| (*r).to_owned()),
            // iterations,salt,StoredKey,ServerKey
            Scheme::Scram(_) => self.data.split(',').next().map(str::to_owned),
            Scheme::Plain | Scheme::Salted(_) | Scheme::Unsalted(_) | Scheme::CramMd5 => None,
        };
        match params {
            Some(p) => format!("{} {p}", self.name.to_ascii_uppercase()),
            None => self.name.to_ascii_uppercase(),
        }
    }

    /// Checks a password.
    pub fn verify(&self, password: &[u8]) -> Result<bool, AuthError> {
        match self.scheme {
            Scheme::Plain => Ok(self.data.as_bytes().ct_eq(password).into()),
            Scheme::Argon2id => self.verify_argon2(Algorithm::Argon2id, password),
            Scheme::Argon2i => self.verify_argon2(Algorithm::Argon2i, password),
            Scheme::BlfCrypt => self.verify_bcrypt(password),
            Scheme::Sha512Crypt | Scheme::Sha256Crypt => self.verify_sha_crypt(password),
            Scheme::Crypt => match self.data.get(..3) {
                Some("$2a" | "$2b" | "$2x" | "$2y") => self.verify_bcrypt(password),
                Some("$5$" | "$6$") => self.verify_sha_crypt(password),
                Some("$1$") => Err(AuthError::UnsupportedScheme(
                    "CRYPT (MD5-CRYPT, $1$)".into(),
                )),
                _ => Err(AuthError::UnsupportedScheme(
                    "CRYPT (DES or unknown)".into(),
                )),
            },
            Scheme::Pbkdf2 => self.verify_pbkdf2(password),
            Scheme::Salted(hash) => {
                let raw = self.decode(Encoding::Base64, |r| r.len() > hash.len())?;
                let (digest, salt) = raw.split_at(hash.len());
                Ok(hash.digest(&[password, salt]).ct_eq(digest).into())
            }
            Scheme::Unsalted(hash) => {
                let default = if self.name.eq_ignore_ascii_case("PLAIN-MD5") {
                    Encoding::Hex
                } else {
                    Encoding::Base64
                };
                let raw = self.decode(default, |r| r.len() == hash.len())?;
                Ok(hash.digest(&[password]).ct_eq(&raw).into())
            }
            Scheme::CramMd5 => {
                let stored = CramContext::from_hex(self.data)
                    .ok_or_else(|| self.malformed("not 64 hex digits"))?;
                Ok(CramContext::from_password(password)
                    .to_hex()
                    .as_bytes()
                    .ct_eq(stored.to_hex().as_bytes())
                    .into())
            }
            Scheme::Scram(hash) => {
                let keys = ScramKeys::parse(hash, self.data).ok_or_else(|| {
                    self.malformed("expected iterations,salt,StoredKey,ServerKey")
                })?;
                Ok(keys.check_password(password))
            }
        }
    }

    /// Decodes the data as hex or base64.
    fn decode_as(&self, encoding: Encoding) -> Option<Vec<u8>> {
        match encoding {
            Encoding::Hex => hex::decode(self.data).ok(),
            Encoding::Base64 => B64.decode(self.data).ok(),
        }
    }

    /// Decodes with the explicit `.HEX`/`.B64` suffix, else with the scheme's default encoding,
    /// else with the other one (Dovecot accepts both), keeping the first result `fits`.
    fn decode(
        &self,
        default: Encoding,
        fits: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<u8>, AuthError> {
        let other = match default {
            Encoding::Hex => Encoding::Base64,
            Encoding::Base64 => Encoding::Hex,
        };
        let order = match self.encoding {
            Some(e) => vec![e],
            None => vec![default, other],
        };
        order
            .iter()
            .find_map(|&e| self.decode_as(e).filter(|raw| fits(raw)))
            .ok_or_else(|| self.malformed("not valid base64 or hex of the right length"))
    }

    fn verify_argon2(&self, algorithm: Algorithm, password: &[u8]) -> Result<bool, AuthError> {
        let hash = PasswordHash::new(self.data).map_err(|e| self.malformed(e.to_string()))?;
        if hash.algorithm != algorithm.ident() {
            return Err(self.malformed(format!("holds a {} hash", hash.algorithm)));
        }
        let params = Params::try_from(&hash).map_err(|e| self.malformed(e.to_string()))?;
        let version = Version::try_from(hash.version.unwrap_or(0x13))
            .map_err(|e| self.malformed(e.to_string()))?;
        let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
            return Err(self.malformed("no salt or no hash"));
        };
        let mut salt_bytes = [0u8; 64];
        let salt = salt
            .decode_b64(&mut salt_bytes)
            .map_err(|e| self.malformed(e.to_string()))?;
        let mut computed = vec![0u8; expected.len()];
        let argon = Argon2::new(algorithm, version, params.clone());
        ARGON2_MEMORY
            .with_borrow_mut(|memory| {
                let blocks = params.block_count();
                if memory.len() < blocks {
                    memory.resize(blocks, Block::default());
                }
                argon.hash_password_into_with_memory(
                    password,
                    salt,
                    &mut computed,
                    &mut memory[..blocks],
                )
            })
            .map_err(|e| self.malformed(e.to_string()))?;
        Ok(computed.ct_eq(expected.as_bytes()).into())
    }

    fn verify_bcrypt(&self, password: &[u8]) -> Result<bool, AuthError> {
        bcrypt::verify(password, self.data).map_err(|e| self.malformed(e.to_string()))
    }

    /// `$6$[rounds=N$]salt$hash` (SHA512-CRYPT) or `$5$...` (SHA256-CRYPT).
    fn verify_sha_crypt(&self, password: &[u8]) -> Result<bool, AuthError> {
        let mut parts = self.data.split('$');
        let (Some(""), Some(id)) = (parts.next(), parts.next()) else {
            return Err(self.malformed("does not start with $5$ or $6$"));
        };
        let mut next = parts.next().ok_or_else(|| self.malformed("no salt"))?;
        let mut rounds = 5000;
        if let Some(r) = next.strip_prefix("rounds=") {
            rounds = r.parse().map_err(|_| self.malformed("bad rounds"))?;
            next = parts.next().ok_or_else(|| self.malformed("no salt"))?;
        }
        let salt = next;
        let expected = parts.next().ok_or_else(|| self.malformed("no hash"))?;
        let computed = match id {
            "6" => sha_crypt::Sha512Params::new(rounds)
                .ok()
                .and_then(|p| sha_crypt::sha512_crypt_b64(password, salt.as_bytes(), &p).ok()),
            "5" => sha_crypt::Sha256Params::new(rounds)
                .ok()
                .and_then(|p| sha_crypt::sha256_crypt_b64(password, salt.as_bytes(), &p).ok()),
            _ => return Err(self.malformed("unknown crypt id")),
        }
        .ok_or_else(|| self.malformed("bad rounds or salt"))?;
        Ok(computed.as_bytes().ct_eq(expected.as_bytes()).into())
    }

    /// Dovecot's `$1$salt$rounds$hex`: PBKDF2-HMAC-SHA1 with the salt string as given.
    fn verify_pbkdf2(&self, password: &[u8]) -> Result<bool, AuthError> {
        let parts: Vec<&str> = self.data.split('$').collect();
        let ["", "1", salt, rounds, hex] = parts.as_slice() else {
            return Err(self.malformed("expected $1$salt$rounds$hex"));
        };
        let rounds: u32 = rounds.parse().map_err(|_| self.malformed("bad rounds"))?;
        let expected = Stored {
            encoding: Some(Encoding::Hex),
            data: hex,
            ..*self
        }
        .decode(Encoding::Hex, |r| !r.is_empty())?;
        let mut out = vec![0u8; expected.len()];
        pbkdf2::pbkdf2_hmac::<Sha1>(password, salt.as_bytes(), rounds, &mut out);
        Ok(out.ct_eq(&expected).into())
    }

    /// Which challenge-response families this stored value can serve.
    pub fn serves(&self, kind: SecretKind) -> bool {
        match (self.scheme, kind) {
            (Scheme::Plain, _) => true,
            (Scheme::CramMd5, SecretKind::CramMd5) => true,
            (Scheme::Scram(h), SecretKind::Scram(k)) => h == k,
            _ => false,
        }
    }

    /// The secret a challenge-response mechanism of `kind` works with, if this value has it.
    pub fn mechanism_secret(&self, kind: SecretKind) -> Option<MechanismSecret> {
        match (self.scheme, kind) {
            (Scheme::Plain, SecretKind::CramMd5) => Some(MechanismSecret::CramMd5(Box::new(
                CramContextHandle(CramContext::from_password(self.data.as_bytes())),
            ))),
            (Scheme::Plain, _) => Some(MechanismSecret::Plaintext(self.data.as_bytes().to_vec())),
            (Scheme::CramMd5, SecretKind::CramMd5) => CramContext::from_hex(self.data)
                .map(|c| MechanismSecret::CramMd5(Box::new(CramContextHandle(c)))),
            (Scheme::Scram(h), SecretKind::Scram(k)) if h == k => {
                ScramKeys::parse(h, self.data).map(MechanismSecret::Scram)
            }
            _ => None,
        }
    }
}

thread_local! {
    /// Argon2's working memory (19 MiB with our parameters, 64 MiB with Dovecot's), kept per
    /// thread and reused: allocating it for every login costs thousands of page faults and
    /// leaves freed blocks scattered over the allocator's arenas.
    static ARGON2_MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether Poplar can verify passwords stored with this `{SCHEME}` (CRYPT: by its `$id$`).
pub fn is_supported(stored: &str) -> bool {
    match Stored::parse(stored) {
        Ok(s) if s.scheme == Scheme::Crypt => {
            matches!(
                s.data.get(..3),
                Some("$2a" | "$2b" | "$2x" | "$2y" | "$5$" | "$6$")
            )
        }
        Ok(_) => true,
        Err(_) => false,
    }
}

/// Checks `password` against a stored `{SCHEME}data` value.
pub fn verify(stored: &str, password: &[u8]) -> Result<bool, AuthError> {
    Stored::parse(stored)?.verify(password)
}

/// The secret itself, when the scheme stores it in a plaintext-equivalent form (needed by APOP).
pub fn plaintext_equivalent(stored: &str) -> Option<&str> {
    Stored::parse(stored)
        .ok()
        .filter(|s| s.scheme == Scheme::Plain)
        .map(|s| s.data)
}

fn random<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(bytes)
}

/// Hashes a new password with `scheme` (one of [`WRITABLE`]), returning `{SCHEME}data`.
pub fn hash(scheme: &str, password: &[u8]) -> Result<String, AuthError> {
    let scheme = scheme.to_ascii_uppercase();
    let data = match scheme.as_str() {
        "ARGON2ID" => {
            let salt = SaltString::encode_b64(&random::<16>()?)
                .map_err(|e| AuthError::Internal(format!("Argon2 salt: {e}")))?;
            let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default());
            argon
                .hash_password(password, &salt)
                .map_err(|e| AuthError::MalformedHash {
                    scheme: scheme.clone(),
                    reason: e.to_string(),
                })?
                .to_string()
        }
        "SCRAM-SHA-256" => {
            ScramKeys::derive(ScramHash::Sha256, password, &random::<16>()?, 4096).to_string()
        }
        "SCRAM-SHA-1" => {
            ScramKeys::derive(ScramHash::Sha1, password, &random::<16>()?, 4096).to_string()
        }
        "CRAM-MD5" => CramContext::from_password(password).to_hex(),
        "SHA512-CRYPT" | "SHA256-CRYPT" => {
            const ALPHABET: &[u8] =
                b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
            let salt: String = random::<16>()?
                .iter()
                .map(|b| char::from(ALPHABET[usize::from(*b) % 64]))
                .collect();
            let rounds = 5000;
            let (id, hashed) = if scheme == "SHA512-CRYPT" {
                let p = sha_crypt::Sha512Params::new(rounds)
                    .map_err(|_| AuthError::Internal("SHA-crypt refused 5000 rounds".into()))?;
                (
                    "6",
                    sha_crypt::sha512_crypt_b64(password, salt.as_bytes(), &p),
                )
            } else {
                let p = sha_crypt::Sha256Params::new(rounds)
                    .map_err(|_| AuthError::Internal("SHA-crypt refused 5000 rounds".into()))?;
                (
                    "5",
                    sha_crypt::sha256_crypt_b64(password, salt.as_bytes(), &p),
                )
            };
            let hashed = hashed.map_err(|_| AuthError::Internal("SHA-crypt failed".into()))?;
            format!("${id}${salt}${hashed}")
        }
        "BLF-CRYPT" => bcrypt::hash_with_salt(password, 10, random::<16>()?)
            .map_err(|e| AuthError::MalformedHash {
                scheme: scheme.clone(),
                reason: e.to_string(),
            })?
            .format_for_version(bcrypt::Version::TwoY),
        "PBKDF2" => {
            const ALPHABET: &[u8] =
                b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
            let salt: String = random::<16>()?
                .iter()
                .map(|b| char::from(ALPHABET[usize::from(*b) % 64]))
                .collect();
            let rounds = 5000;
            let mut out = [0u8; 20];
            pbkdf2::pbkdf2_hmac::<Sha1>(password, salt.as_bytes(), rounds, &mut out);
            format!("$1${salt}${rounds}${}", hex::encode(out))
        }
        "SSHA512" => {
            let salt = random::<8>()?;
            let mut raw = Hash::Sha512.digest(&[password, &salt]);
            raw.extend_from_slice(&salt);
            B64.encode(raw)
        }
        "PLAIN" => String::from_utf8(password.to_vec()).map_err(|_| {
            AuthError::InvalidName("<password>".into(), "a {PLAIN} password must be UTF-8")
        })?,
        _ => return Err(AuthError::UnsupportedScheme(scheme)),
    };
    Ok(format!("{{{scheme}}}{data}"))
}

/// Hashes a new password with the default scheme, returning `{ARGON2ID}$argon2id$...`.
pub fn hash_default(password: &[u8]) -> Result<String, AuthError> {
    hash(DEFAULT_SCHEME, password)
}

/// A hash of a random password, verified against when a user does not exist so that unknown
/// users cost the same time as real ones (no user enumeration by timing).
pub fn decoy_hash() -> Result<String, AuthError> {
    hash_default(&random::<32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line was printed by `doveadm pw -s SCHEME -p secret` (Dovecot 2.3.19.1).
    const DOVEADM: &[&str] = &[
        "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$qKSKwOp9Yd7tDN0x53aOyQ$WQN/07jAxLvBep+QFAynYIkPQ1DFsjI0iXwAspfcPF4",
        "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$hrvD6xRHVKi2AnnOp2lWnw$TG1iWcYHp7ffLL8KMVNScSspzKfxc4iJqgG2/1uNHV4",
        "{BLF-CRYPT}$2y$05$DOCcHnjUyyDJRt5NupSBneSmX3WRseN/ujz9FhFN4/GcRydUa1J52",
        "{SHA512-CRYPT}$6$5mIgSAOU8ReUI/eR$drOyTrGFqYT9JlCoT1Mjq7P4S0m/fCuxv.NIIY1EKoT.n1l/giTJwOtc0Jva/iZalYxfKyyj63C8jcs1ecQs0/",
        "{SHA256-CRYPT}$5$HE/mc2rEvz/irF8H$Um98isjNysN606jeUBMwffRzer2gvs81kopGPkRAsBC",
        "{CRYPT}$2y$05$B2AFR.83A/E4ehpzUJudWO9l0w0EdRGiIjHJ/yhqNUJ5K4RFYDVGe",
        "{PBKDF2}$1$Y7LJkHmRn.CdxsHs$5000$a9c9f9184de2004d528396603eddc5814fca0a0a",
        "{SSHA512}BoZC6FcN4XK764+saHH3ktm56aHGyKALWmn0HPAlPJhMAsDYozhe+XQaGcu29ETQH4MGYVWvoD+uCwRzbcPx6tpbhvg=",
        "{SSHA256}9zyxi+ePy6+5j6sGXsRhT3LGPUP401wSWFxytfE3mwr2Cu0Z",
        "{SSHA}PjNhQ+jq6vgzUYCOtGAEu5xLcRUaYYA4",
        "{CRAM-MD5}cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56",
        "{SCRAM-SHA-1}4096,Q9TDm7CK6yAaIyOE8wTUBw==,+xGEY8QIV/bE0qUZBjEBxryOTFE=,gcxE8VVRFwn7nASsayePEh47xp8=",
        "{SCRAM-SHA-256}4096,HoYULrsfB5opYkWNh8v1vg==,jyLxy3icn2uv35j/Oohe/x29U2lyeuBWySMaoGLmBKU=,lJyAubkeXHSillZv+R4zDU6ltWBHjj7k7VHXfWsWuzo=",
        "{PLAIN}secret",
        "{CLEAR}secret",
        "{SHA512}vSsar3708Jvp9Szi2NWZZ02Bqp1qRCFpbcTZPdBhnWgs5WtNZKnvCXdhztmeD2cmW192CF5bDufKRpayrW/isg==",
        "{SHA256}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=",
        "{SHA1}5en6G6MezRroT3XKqkdPOmY/BfQ=",
        "{PLAIN-MD5}5ebe2294ecd0e0f08eab7690d2a6ee69",
    ];

    #[test]
    fn every_doveadm_scheme_verifies() {
        for stored in DOVEADM {
            assert!(
                verify(stored, b"secret").unwrap(),
                "{stored} rejects the right password"
            );
            assert!(
                !verify(stored, b"Secret").unwrap(),
                "{stored} accepts a wrong password"
            );
            assert!(is_supported(stored), "{stored}");
        }
    }

    #[test]
    fn encodings_and_aliases() {
        // SHA256 of "secret" in hex, with Dovecot's .HEX suffix, and without it (auto-detected).
        let hex = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
        assert!(verify(&format!("{{SHA256.HEX}}{hex}"), b"secret").unwrap());
        assert!(verify(&format!("{{SHA256}}{hex}"), b"secret").unwrap());
        assert!(verify("{LDAP-MD5}Xr4ilOzQ4PCOq3aQ0qbuaQ==", b"secret").unwrap());
        assert!(verify("{plain}secret", b"secret").unwrap());
        assert!(verify("$6$5mIgSAOU8ReUI/eR$drOyTrGFqYT9JlCoT1Mjq7P4S0m/fCuxv.NIIY1EKoT.n1l/giTJwOtc0Jva/iZalYxfKyyj63C8jcs1ecQs0/", b"secret").unwrap());
    }

    #[test]
    fn every_writable_scheme_round_trips() {
        for scheme in WRITABLE {
            let stored = hash(scheme, "pässword".as_bytes()).unwrap();
            assert!(stored.starts_with(&format!("{{{scheme}}}")), "{stored}");
            assert!(verify(&stored, "pässword".as_bytes()).unwrap(), "{stored}");
            assert!(!verify(&stored, b"password").unwrap(), "{stored}");
        }
        assert_ne!(
            hash("ARGON2ID", b"x").unwrap(),
            hash("ARGON2ID", b"x").unwrap(),
            "salts differ"
        );
    }

    #[test]
    fn mechanism_secrets_follow_what_is_stored() {
        let kinds = [
            SecretKind::Apop,
            SecretKind::CramMd5,
            SecretKind::Scram(ScramHash::Sha1),
            SecretKind::Scram(ScramHash::Sha256),
        ];
        let serves = |stored: &str| kinds.map(|k| Stored::parse(stored).unwrap().serves(k));
        assert_eq!(serves("{PLAIN}x"), [true, true, true, true]);
        assert_eq!(serves(DOVEADM[10]), [false, true, false, false]);
        assert_eq!(serves(DOVEADM[11]), [false, false, true, false]);
        assert_eq!(serves(DOVEADM[12]), [false, false, false, true]);
        assert_eq!(serves(DOVEADM[0]), [false, false, false, false]);
        assert!(
            Stored::parse(DOVEADM[10])
                .unwrap()
                .mechanism_secret(SecretKind::CramMd5)
                .is_some()
        );
        assert!(
            Stored::parse(DOVEADM[0])
                .unwrap()
                .mechanism_secret(SecretKind::CramMd5)
                .is_none()
        );
    }

    #[test]
    fn unsupported_and_malformed() {
        assert!(matches!(
            verify("{MD5-CRYPT}$1$okxCKmmv$ymiFldsJQi0R7vVSvn7J.0", b"x"),
            Err(AuthError::UnsupportedScheme(_))
        ));
        assert!(matches!(
            verify("$1$okxCKmmv$ymiFldsJQi0R7vVSvn7J.0", b"x"),
            Err(AuthError::UnsupportedScheme(_))
        ));
        assert!(!is_supported("$1$okxCKmmv$ymiFldsJQi0R7vVSvn7J.0"));
        assert!(!is_supported("{DIGEST-MD5}x"));
        assert!(matches!(
            verify("{ARGON2ID}garbage", b"x"),
            Err(AuthError::MalformedHash { .. })
        ));
        assert!(matches!(
            verify("{SSHA}AAAA", b"x"),
            Err(AuthError::MalformedHash { .. })
        ));
        assert!(matches!(
            verify("{PBKDF2}$1$salt", b"x"),
            Err(AuthError::MalformedHash { .. })
        ));
        assert!(matches!(
            verify("{CRAM-MD5}abc", b"x"),
            Err(AuthError::MalformedHash { .. })
        ));
        let id = hash("ARGON2ID", b"x")
            .unwrap()
            .replace("{ARGON2ID}", "{ARGON2I}");
        assert!(matches!(
            verify(&id, b"x"),
            Err(AuthError::MalformedHash { .. })
        ));
    }
}
