//! Password schemes, in Dovecot's `{SCHEME}data` notation.
//!
//! Operators migrate to Poplar with their existing Dovecot passwd-file, so stored passwords are
//! read exactly as Dovecot writes them. New passwords are hashed with ARGON2ID (memory-hard, the
//! current OWASP recommendation) using the argon2 crate's defaults (19 MiB, 2 passes, 1 lane),
//! which take tens of milliseconds: slow enough to make offline guessing expensive, fast enough
//! for a login storm. Verification is constant-time where the scheme allows it.

use crate::error::AuthError;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;

/// The scheme Poplar writes for new passwords.
pub const DEFAULT_SCHEME: &str = "ARGON2ID";

/// Splits `{SCHEME}data` into the upper-cased scheme and the data. A value without a scheme
/// prefix is treated as Dovecot's passwd-file default, CRYPT.
pub fn split_scheme(stored: &str) -> (String, &str) {
    if let Some(rest) = stored.strip_prefix('{')
        && let Some(end) = rest.find('}')
    {
        return (rest[..end].to_ascii_uppercase(), &rest[end + 1..]);
    }
    ("CRYPT".to_owned(), stored)
}

/// Whether Poplar can verify passwords stored with this scheme.
pub fn is_supported(scheme: &str) -> bool {
    matches!(scheme, "PLAIN" | "CLEAR" | "ARGON2ID" | "ARGON2I")
}

/// The secret itself, when the scheme stores it in a plaintext-equivalent form (needed by APOP).
pub fn plaintext_equivalent(stored: &str) -> Option<&str> {
    let (scheme, data) = split_scheme(stored);
    matches!(scheme.as_str(), "PLAIN" | "CLEAR").then_some(data)
}

/// Checks `password` against a stored `{SCHEME}data` value.
pub fn verify(stored: &str, password: &[u8]) -> Result<bool, AuthError> {
    let (scheme, data) = split_scheme(stored);
    match scheme.as_str() {
        "PLAIN" | "CLEAR" => Ok(data.as_bytes().ct_eq(password).into()),
        "ARGON2ID" | "ARGON2I" => verify_argon2(&scheme, data, password),
        _ => Err(AuthError::UnsupportedScheme(scheme)),
    }
}

fn verify_argon2(scheme: &str, data: &str, password: &[u8]) -> Result<bool, AuthError> {
    let malformed = |reason: String| AuthError::MalformedHash {
        scheme: "ARGON2",
        reason,
    };
    let hash = PasswordHash::new(data).map_err(|e| malformed(e.to_string()))?;
    let algorithm = if scheme == "ARGON2ID" {
        Algorithm::Argon2id
    } else {
        Algorithm::Argon2i
    };
    if hash.algorithm != algorithm.ident() {
        return Err(malformed(format!(
            "{{{scheme}}} holds a {} hash",
            hash.algorithm
        )));
    }
    let params = Params::try_from(&hash).map_err(|e| malformed(e.to_string()))?;
    let version =
        Version::try_from(hash.version.unwrap_or(0x13)).map_err(|e| malformed(e.to_string()))?;
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return Err(malformed("no salt or no hash".into()));
    };
    let mut salt_bytes = [0u8; 64];
    let salt = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|e| malformed(e.to_string()))?;
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
        .map_err(|e| malformed(e.to_string()))?;
    Ok(computed.ct_eq(expected.as_bytes()).into())
}

thread_local! {
    /// Argon2's working memory (19 MiB with our parameters, 64 MiB with Dovecot's), kept per
    /// thread and reused: allocating it for every login costs thousands of page faults and
    /// leaves freed blocks scattered over the allocator's arenas.
    static ARGON2_MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Hashes a new password with the default scheme, returning `{ARGON2ID}$argon2id$...`.
pub fn hash_default(password: &[u8]) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| AuthError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Random(e.to_string()))?;
    let argon = Argon2::new(
        Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::default(),
    );
    let hash = argon
        .hash_password(password, &salt)
        .map_err(|e| AuthError::MalformedHash {
            scheme: "ARGON2",
            reason: e.to_string(),
        })?;
    Ok(format!("{{{DEFAULT_SCHEME}}}{hash}"))
}

/// A hash of a random password, verified against when a user does not exist so that unknown
/// users cost the same time as real ones (no user enumeration by timing).
pub fn decoy_hash() -> Result<String, AuthError> {
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|e| AuthError::Random(e.to_string()))?;
    hash_default(&random)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_clear() {
        assert!(verify("{PLAIN}tanstaaf", b"tanstaaf").unwrap());
        assert!(!verify("{PLAIN}tanstaaf", b"tanstaaF").unwrap());
        assert!(!verify("{PLAIN}tanstaaf", b"tanstaa").unwrap());
        assert!(verify("{CLEAR}with:colon", b"with:colon").unwrap());
        assert!(verify("{plain}lower", b"lower").unwrap());
    }

    #[test]
    fn argon2id_round_trip() {
        let stored = hash_default(b"correct horse").unwrap();
        assert!(stored.starts_with("{ARGON2ID}$argon2id$v=19$"));
        assert!(verify(&stored, b"correct horse").unwrap());
        assert!(!verify(&stored, b"wrong horse").unwrap());
        assert_ne!(
            stored,
            hash_default(b"correct horse").unwrap(),
            "salts must differ"
        );
    }

    #[test]
    fn dovecot_argon2_hashes() {
        // Produced by `doveadm pw -s ARGON2ID -p secret` and `-s ARGON2I` (Dovecot 2.3.19.1).
        let id = "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$qKSKwOp9Yd7tDN0x53aOyQ$WQN/07jAxLvBep+QFAynYIkPQ1DFsjI0iXwAspfcPF4";
        assert!(verify(id, b"secret").unwrap());
        assert!(!verify(id, b"Secret").unwrap());
        let i = "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$hrvD6xRHVKi2AnnOp2lWnw$TG1iWcYHp7ffLL8KMVNScSspzKfxc4iJqgG2/1uNHV4";
        assert!(verify(i, b"secret").unwrap());
    }

    #[test]
    fn scheme_errors() {
        assert!(
            matches!(verify("{MD5}abc", b"x"), Err(AuthError::UnsupportedScheme(s)) if s == "MD5")
        );
        assert!(
            matches!(verify("$6$salt$hash", b"x"), Err(AuthError::UnsupportedScheme(s)) if s == "CRYPT")
        );
        assert!(matches!(
            verify("{ARGON2ID}garbage", b"x"),
            Err(AuthError::MalformedHash { .. })
        ));
        let id = hash_default(b"x")
            .unwrap()
            .replace("{ARGON2ID}", "{ARGON2I}");
        assert!(matches!(
            verify(&id, b"x"),
            Err(AuthError::MalformedHash { .. })
        ));
    }
}
