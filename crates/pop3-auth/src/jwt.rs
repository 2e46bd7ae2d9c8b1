//! Local verification of OAuth 2.0 bearer tokens that are JWTs (RFC 7519), for OAUTHBEARER and
//! XOAUTH2.
//!
//! Identity providers (Microsoft Entra, Google, Keycloak, ...) sign access tokens; their public
//! keys are published as a JWKS document (RFC 7517), which the operator saves to a file. A token
//! is accepted when its signature verifies with one of those keys (RS256 or ES256 only: `none`
//! and the HMAC algorithms are refused, so a public key can never be used as an HMAC secret),
//! its issuer and audience are the configured ones, it is not expired or not yet valid, and it
//! names a user in the configured claim. The clock is passed in.

use crate::error::AuthError;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::Value;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY: u64 = 60;

#[derive(Debug, Clone)]
enum Key {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed P-256 point (0x04 || x || y).
    P256(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Jwk {
    kid: Option<String>,
    key: Key,
}

/// What a token must satisfy, and the keys to check its signature.
#[derive(Debug, Clone)]
pub struct JwtVerifier {
    keys: Vec<Jwk>,
    issuer: String,
    audience: String,
    user_claim: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    Malformed,
    /// Signed with an algorithm other than RS256 or ES256.
    UnsupportedAlgorithm,
    /// No key in the JWKS matches.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// `exp` is in the past (or missing).
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// `iss` is not the configured issuer.
    WrongIssuer,
    /// `aud` does not contain the configured audience.
    WrongAudience,
    /// The configured user claim is missing or not a string.
    NoUser,
    /// The user claim is `email` and the token says the address is not verified
    /// (`email_verified: false`): anyone could have registered it at the identity provider.
    UnverifiedEmail,
}

impl JwtVerifier {
    /// Reads a JWKS document. RSA keys and P-256 EC keys are used; others are skipped.
    pub fn from_jwks(
        jwks: &str,
        issuer: &str,
        audience: &str,
        user_claim: &str,
    ) -> Result<Self, AuthError> {
        let bad = |why: &str| AuthError::Config(format!("JWKS: {why}"));
        let doc: Value = serde_json::from_str(jwks).map_err(|e| bad(&e.to_string()))?;
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no \"keys\" array"))?;
        let b64 = |v: Option<&Value>| {
            v.and_then(Value::as_str)
                .and_then(|s| B64URL.decode(s).ok())
        };
        let mut keys = Vec::new();
        for k in list {
            if k.get("use")
                .and_then(Value::as_str)
                .is_some_and(|u| u != "sig")
            {
                continue;
            }
            let kid = k.get("kid").and_then(Value::as_str).map(str::to_owned);
            let key = match (
                k.get("kty").and_then(Value::as_str),
                k.get("crv").and_then(Value::as_str),
            ) {
                (Some("RSA"), _) => match (b64(k.get("n")), b64(k.get("e"))) {
                    (Some(n), Some(e)) => Key::Rsa { n, e },
                    _ => continue,
                },
                (Some("EC"), Some("P-256")) => match (b64(k.get("x")), b64(k.get("y"))) {
                    (Some(x), Some(y)) if x.len() == 32 && y.len() == 32 => {
                        let mut point = vec![4u8];
                        point.extend_from_slice(&x);
                        point.extend_from_slice(&y);
                        Key::P256(point)
                    }
                    _ => continue,
                },
                _ => continue,
            };
            keys.push(Jwk { kid, key });
        }
        if keys.is_empty() {
            return Err(bad("no usable RS256 or ES256 key"));
        }
        Ok(Self {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            user_claim: user_claim.to_owned(),
        })
    }

    /// Verifies a token at Unix time `now`; returns the user it names.
    pub fn verify(&self, token: &str, now: u64) -> Result<String, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let json = |part: &str| -> Result<Value, TokenError> {
            let raw = B64URL.decode(part).map_err(|_| TokenError::Malformed)?;
            serde_json::from_slice(&raw).map_err(|_| TokenError::Malformed)
        };
        let header = json(h)?;
        let signature = B64URL.decode(s).map_err(|_| TokenError::Malformed)?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(TokenError::Malformed)?;
        let kid = header.get("kid").and_then(Value::as_str);
        let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
        let candidates = self
            .keys
            .iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid);
        let mut any = false;
        let mut verified = false;
        for k in candidates {
            let ok = match (alg, &k.key) {
                ("RS256", Key::Rsa { n, e }) => RsaPublicKeyComponents { n, e }
                    .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, &signature)
                    .is_ok(),
                ("ES256", Key::P256(point)) => {
                    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                        .verify(signed, &signature)
                        .is_ok()
                }
                ("RS256" | "ES256", _) => continue,
                _ => return Err(TokenError::UnsupportedAlgorithm),
            };
            any = true;
            if ok {
                verified = true;
                break;
            }
        }
        if !any {
            return Err(if matches!(alg, "RS256" | "ES256") {
                TokenError::UnknownKey
            } else {
                TokenError::UnsupportedAlgorithm
            });
        }
        if !verified {
            return Err(TokenError::BadSignature);
        }
        let claims = json(p)?;
        let number = |name: &str| claims.get(name).and_then(Value::as_u64);
        match number("exp") {
            Some(exp) if exp + LEEWAY > now => {}
            _ => return Err(TokenError::Expired),
        }
        if number("nbf").is_some_and(|nbf| nbf > now + LEEWAY) {
            return Err(TokenError::NotYetValid);
        }
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(TokenError::WrongIssuer);
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(a)) => *a == self.audience,
            Some(Value::Array(list)) => list
                .iter()
                .any(|a| a.as_str() == Some(self.audience.as_str())),
            _ => false,
        };
        if !audience_ok {
            return Err(TokenError::WrongAudience);
        }
        if self.user_claim == "email" && claims.get("email_verified") == Some(&Value::Bool(false)) {
            return Err(TokenError::UnverifiedEmail);
        }
        claims
            .get(&self.user_claim)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(TokenError::NoUser)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair};

    pub(crate) const ISSUER: &str = "https://login.example.org";
    pub(crate) const AUDIENCE: &str = "pop3";

    /// Test keys: an ES256 key generated per run and the fixture RS256 key.
    pub(crate) struct Signer {
        ec: EcdsaKeyPair,
        rsa: RsaKeyPair,
    }

    impl Signer {
        pub(crate) fn new() -> Self {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .unwrap();
            let ec = EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                pkcs8.as_ref(),
                &rng,
            )
            .unwrap();
            let rsa =
                RsaKeyPair::from_pkcs8(include_bytes!("../tests/fixtures/rsa2048-test-key.pk8"))
                    .unwrap();
            Self { ec, rsa }
        }

        pub(crate) fn jwks(&self) -> String {
            let point = self.ec.public_key().as_ref();
            // RSAPublicKey ::= SEQUENCE { n INTEGER, e INTEGER }, as DER.
            let der = self.rsa.public().as_ref();
            let (n, rest) = der_integer(&der[4..]);
            let (e, _) = der_integer(rest);
            serde_json::json!({"keys": [
                {"kty": "EC", "crv": "P-256", "kid": "ec1", "use": "sig",
                 "x": B64URL.encode(&point[1..33]), "y": B64URL.encode(&point[33..65])},
                {"kty": "RSA", "kid": "rsa1", "n": B64URL.encode(n), "e": B64URL.encode(e)},
                {"kty": "oct", "k": "c2VjcmV0"}
            ]})
            .to_string()
        }

        pub(crate) fn token(&self, alg: &str, kid: &str, claims: Value) -> String {
            let header = serde_json::json!({"alg": alg, "kid": kid, "typ": "JWT"});
            let input = format!(
                "{}.{}",
                B64URL.encode(header.to_string()),
                B64URL.encode(claims.to_string())
            );
            let rng = SystemRandom::new();
            let sig = match alg {
                "ES256" => self
                    .ec
                    .sign(&rng, input.as_bytes())
                    .unwrap()
                    .as_ref()
                    .to_vec(),
                "RS256" => {
                    let mut sig = vec![0; self.rsa.public().modulus_len()];
                    self.rsa
                        .sign(
                            &signature::RSA_PKCS1_SHA256,
                            &rng,
                            input.as_bytes(),
                            &mut sig,
                        )
                        .unwrap();
                    sig
                }
                _ => b"not a signature".to_vec(),
            };
            format!("{input}.{}", B64URL.encode(sig))
        }
    }

    fn der_integer(input: &[u8]) -> (&[u8], &[u8]) {
        assert_eq!(input[0], 2);
        let (len, start) = match input[1] {
            l if l < 0x80 => (usize::from(l), 2),
            0x81 => (usize::from(input[2]), 3),
            _ => (usize::from(input[2]) << 8 | usize::from(input[3]), 4),
        };
        let mut value = &input[start..start + len];
        while value.first() == Some(&0) {
            value = &value[1..];
        }
        (value, &input[start + len..])
    }

    pub(crate) fn claims(user: &str, now: u64) -> Value {
        serde_json::json!({"iss": ISSUER, "aud": [AUDIENCE, "other"], "exp": now + 3600, "nbf": now - 10, "email": user})
    }

    #[test]
    fn accepts_valid_tokens_of_both_algorithms() {
        let s = Signer::new();
        let v = JwtVerifier::from_jwks(&s.jwks(), ISSUER, AUDIENCE, "email").unwrap();
        let now = 1_800_000_000;
        for (alg, kid) in [("ES256", "ec1"), ("RS256", "rsa1")] {
            assert_eq!(
                v.verify(&s.token(alg, kid, claims("alice@example.org", now)), now)
                    .as_deref(),
                Ok("alice@example.org")
            );
        }
    }

    #[test]
    fn refuses_what_it_must() {
        let s = Signer::new();
        let v = JwtVerifier::from_jwks(&s.jwks(), ISSUER, AUDIENCE, "email").unwrap();
        let now = 1_800_000_000;
        let with = |f: &dyn Fn(&mut Value)| {
            let mut c = claims("alice@example.org", now);
            f(&mut c);
            s.token("ES256", "ec1", c)
        };
        assert_eq!(
            v.verify(&with(&|c| c["exp"] = (now - 3600).into()), now),
            Err(TokenError::Expired)
        );
        assert_eq!(
            v.verify(
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
                now
            ),
            Err(TokenError::Expired)
        );
        assert_eq!(
            v.verify(&with(&|c| c["nbf"] = (now + 3600).into()), now),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(
            v.verify(&with(&|c| c["iss"] = "https://evil".into()), now),
            Err(TokenError::WrongIssuer)
        );
        assert_eq!(
            v.verify(&with(&|c| c["aud"] = "someone-else".into()), now),
            Err(TokenError::WrongAudience)
        );
        assert_eq!(
            v.verify(
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("email");
                }),
                now
            ),
            Err(TokenError::NoUser)
        );
        assert_eq!(
            v.verify(&with(&|c| c["email_verified"] = false.into()), now),
            Err(TokenError::UnverifiedEmail)
        );
        assert!(
            v.verify(&with(&|c| c["email_verified"] = true.into()), now)
                .is_ok()
        );
        // A token signed by another key, a tampered payload, and unsafe algorithms.
        let other = Signer::new();
        assert_eq!(
            v.verify(
                &other.token("ES256", "ec1", claims("alice@example.org", now)),
                now
            ),
            Err(TokenError::BadSignature)
        );
        let good = s.token("ES256", "ec1", claims("alice@example.org", now));
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged = B64URL.encode(claims("mallory@example.org", now).to_string());
        parts[1] = &forged;
        assert_eq!(
            v.verify(&parts.join("."), now),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            v.verify(&s.token("HS256", "ec1", claims("a", now)), now),
            Err(TokenError::UnsupportedAlgorithm)
        );
        assert_eq!(
            v.verify(&s.token("none", "ec1", claims("a", now)), now),
            Err(TokenError::UnsupportedAlgorithm)
        );
        assert_eq!(
            v.verify(&s.token("ES256", "nokey", claims("a", now)), now),
            Err(TokenError::UnknownKey)
        );
        for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert_eq!(v.verify(bad, now), Err(TokenError::Malformed));
        }
    }

    #[test]
    fn jwks_errors() {
        assert!(JwtVerifier::from_jwks("{}", ISSUER, AUDIENCE, "email").is_err());
        assert!(JwtVerifier::from_jwks("not json", ISSUER, AUDIENCE, "email").is_err());
        assert!(
            JwtVerifier::from_jwks(
                r#"{"keys":[{"kty":"oct","k":"x"}]}"#,
                ISSUER,
                AUDIENCE,
                "email"
            )
            .is_err()
        );
    }
}
