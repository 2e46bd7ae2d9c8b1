//! Local verification of OAuth 2.0 bearer tokens that are JWTs (RFC 7519), for OAUTHBEARER and
//! XOAUTH2.
//!
//! Identity providers (Microsoft Entra, Google, Keycloak, ...) sign access tokens; their public
//! keys are published as a JWKS document (RFC 7517), which the operator saves to a file. A token
//! is accepted when its signature verifies with one of those keys (RS256 or ES256 only: `none`
//! and the HMAC algorithms are refused, so a public key can never be used as an HMAC secret),
//! its issuer and audience are the configured ones, it is not expired or not yet valid, and it
//! names a user in the configured claim.
//!
//! The `jsonwebtoken` crate parses the token, the JWKS entries and checks the signature; this
//! module decides which keys may be used (signing keys of type RSA of at least 2048 bits or EC
//! on P-256, matched to the token's algorithm and `kid`, honouring a key's own `alg`) and checks
//! the claims itself, because the clock is passed in: `jsonwebtoken` would read the system time.

use crate::error::AuthError;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use jsonwebtoken::jwk::{self, AlgorithmParameters, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::Value;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY: u64 = 60;

/// The smallest RSA modulus accepted, in octets (2048 bits, as RFC 7518 section 3.3 requires).
const MIN_RSA_MODULUS: usize = 256;

/// A usable key from the JWKS.
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    /// RS256 for an RSA key, ES256 for a P-256 key: the one algorithm it verifies.
    alg: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// What a token must satisfy, and the keys to check its signature.
#[derive(Debug, Clone)]
pub struct JwtVerifier {
    keys: Vec<Key>,
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

/// The key a JWKS entry gives, if it is one this verifier uses: a signing key (no `use`, or
/// `sig`), RSA of at least 2048 bits or EC on P-256, whose own `alg`, when it states one, is
/// the algorithm its type implies.
fn usable(entry: &jwk::Jwk) -> Option<Key> {
    if entry
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    let (alg, stated) = match &entry.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let n = B64URL.decode(&rsa.n).ok()?;
            let significant = n.iter().skip_while(|b| **b == 0).count();
            if significant < MIN_RSA_MODULUS {
                return None;
            }
            (Algorithm::RS256, KeyAlgorithm::RS256)
        }
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == jwk::EllipticCurve::P256 => {
            let coordinate = |c: &str| B64URL.decode(c).is_ok_and(|v| v.len() == 32);
            if !coordinate(&ec.x) || !coordinate(&ec.y) {
                return None;
            }
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        _ => return None,
    };
    if entry.common.key_algorithm.is_some_and(|a| a != stated) {
        return None;
    }
    Some(Key {
        kid: entry.common.key_id.clone(),
        alg,
        key: DecodingKey::from_jwk(entry).ok()?,
    })
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
        // Entry by entry, so that one key of a kind this crate does not know (an encryption
        // key, a new curve) does not make the whole document unusable.
        let keys: Vec<Key> = list
            .iter()
            .filter_map(|k| serde_json::from_value::<jwk::Jwk>(k.clone()).ok())
            .filter_map(|k| usable(&k))
            .collect();
        if keys.is_empty() {
            return Err(bad(
                "no usable key (RS256 with at least 2048 bits, or ES256 on P-256)",
            ));
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
        if token.split('.').count() != 3 {
            return Err(TokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| unparsed_header(token))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        let mut validation = Validation::new(header.alg);
        // The claims are checked below against the `now` given.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let candidates = self
            .keys
            .iter()
            .filter(|k| k.alg == header.alg && (header.kid.is_none() || k.kid == header.kid));
        let mut claims = None;
        let mut any = false;
        for k in candidates {
            any = true;
            match jsonwebtoken::decode::<Value>(token, &k.key, &validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) if *e.kind() == ErrorKind::InvalidSignature => {}
                // A part that does not decode fails for every key alike.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_)
                    ) =>
                {
                    return Err(TokenError::Malformed);
                }
                Err(_) => {}
            }
        }
        let Some(claims) = claims else {
            return Err(if any {
                TokenError::BadSignature
            } else {
                TokenError::UnknownKey
            });
        };
        self.check_claims(&claims, now)
    }

    /// The rules on a token whose signature verified.
    fn check_claims(&self, claims: &Value, now: u64) -> Result<String, TokenError> {
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

/// Why a header `jsonwebtoken` could not read was refused: a JSON header naming an algorithm
/// it does not know (`none`, say) is an unsupported algorithm, anything else malformed.
fn unparsed_header(token: &str) -> TokenError {
    let names_alg = token
        .split('.')
        .next()
        .and_then(|h| B64URL.decode(h).ok())
        .and_then(|raw| serde_json::from_slice::<Value>(&raw).ok())
        .is_some_and(|h| h.get("alg").is_some_and(Value::is_string));
    if names_alg {
        TokenError::UnsupportedAlgorithm
    } else {
        TokenError::Malformed
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};

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
            let mut header = serde_json::json!({"alg": alg, "kid": kid, "typ": "JWT"});
            if kid.is_empty() {
                header.as_object_mut().unwrap().remove("kid");
            }
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
    fn keys_are_matched_to_what_they_may_sign() {
        let s = Signer::new();
        let now = 1_800_000_000;
        let token = |alg, kid| s.token(alg, kid, claims("alice@example.org", now));
        let verifier = |edit: &dyn Fn(&mut Value)| {
            let mut jwks: Value = serde_json::from_str(&s.jwks()).unwrap();
            edit(&mut jwks);
            JwtVerifier::from_jwks(&jwks.to_string(), ISSUER, AUDIENCE, "email").unwrap()
        };
        let v = verifier(&|_| {});
        // Without a kid every key of the algorithm's type is tried.
        assert!(v.verify(&token("ES256", ""), now).is_ok());
        assert!(v.verify(&token("RS256", ""), now).is_ok());
        // An ES256 token naming the RSA key's kid finds no key: types are not mixed.
        assert_eq!(
            v.verify(&token("ES256", "rsa1"), now),
            Err(TokenError::UnknownKey)
        );
        // A key that says it is for encryption, or for another algorithm, is not used.
        let v = verifier(&|j| j["keys"][0]["use"] = "enc".into());
        assert_eq!(
            v.verify(&token("ES256", "ec1"), now),
            Err(TokenError::UnknownKey)
        );
        let v = verifier(&|j| j["keys"][1]["alg"] = "RS512".into());
        assert_eq!(
            v.verify(&token("RS256", "rsa1"), now),
            Err(TokenError::UnknownKey)
        );
        assert!(v.verify(&token("ES256", "ec1"), now).is_ok());
        // Keys this crate cannot read sit beside usable ones without spoiling the document.
        let v = verifier(&|j| {
            let keys = j["keys"].as_array_mut().unwrap();
            keys.push(serde_json::json!({"kty": "OKP", "crv": "X448", "x": "AA"}));
            keys.push(
                serde_json::json!({"kty": "RSA", "alg": "RSA-OAEP-512", "n": "AQAB", "e": "AQAB"}),
            );
        });
        assert!(v.verify(&token("RS256", "rsa1"), now).is_ok());
    }

    #[test]
    fn short_rsa_keys_and_other_curves_are_not_used() {
        let short = B64URL.encode([0xc5; 128]); // 1024 bits
        let coordinate = B64URL.encode([7; 48]);
        for jwks in [
            format!(r#"{{"keys":[{{"kty":"RSA","n":"{short}","e":"AQAB"}}]}}"#),
            format!(
                r#"{{"keys":[{{"kty":"EC","crv":"P-384","x":"{coordinate}","y":"{coordinate}"}}]}}"#
            ),
        ] {
            let refused = JwtVerifier::from_jwks(&jwks, ISSUER, AUDIENCE, "email").unwrap_err();
            assert!(refused.to_string().contains("2048"), "{refused}");
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
