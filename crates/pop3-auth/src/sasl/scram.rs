//! SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677), with the -PLUS variants' channel binding
//! (`tls-exporter`, RFC 9266, and `tls-server-end-point`, RFC 5929).
//!
//! The server never needs the password: the stored keys (Dovecot's `{SCRAM-SHA-*}` scheme,
//! `iterations,salt,StoredKey,ServerKey`) suffice, or they are derived from a stored plaintext.
//! For an unknown user the server answers with a salt derived from the name (normalised as
//! logins are, so `Alice` and `alice` get one salt, as they would for a real user) and a server
//! secret, so the exchange looks the same as for a real user until the proof fails. Every
//! client-first costs the server exactly one PBKDF2 whatever the user has (a real derivation
//! from a stored plaintext, a dummy one for stored keys and unknown users), so the time to
//! server-first says nothing about the user either. Names and passwords are used as UTF-8
//! octets without SASLprep normalisation (as Dovecot does); ASCII is unaffected.

use super::{ChannelBinding, Directory, Failure, ServerMechanism, Step, authorize};
use crate::directory::{MechanismSecret, SecretKind};
use crate::error::AuthError;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The hash function of a SCRAM variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    /// SCRAM-SHA-1.
    Sha1,
    /// SCRAM-SHA-256.
    Sha256,
}

impl ScramHash {
    /// The mechanism name without and with -PLUS.
    pub fn mechanism(self, plus: bool) -> &'static str {
        match (self, plus) {
            (ScramHash::Sha1, false) => "SCRAM-SHA-1",
            (ScramHash::Sha1, true) => "SCRAM-SHA-1-PLUS",
            (ScramHash::Sha256, false) => "SCRAM-SHA-256",
            (ScramHash::Sha256, true) => "SCRAM-SHA-256-PLUS",
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC takes keys of any length; an error cannot occur, and an empty result would only
        // make the exchange fail.
        match self {
            ScramHash::Sha1 => Hmac::<Sha1>::new_from_slice(key)
                .map(|m| m.chain_update(data).finalize().into_bytes().to_vec())
                .unwrap_or_default(),
            ScramHash::Sha256 => Hmac::<Sha256>::new_from_slice(key)
                .map(|m| m.chain_update(data).finalize().into_bytes().to_vec())
                .unwrap_or_default(),
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// Hi() of RFC 5802: PBKDF2 with this hash's HMAC.
    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => {
                let mut out = [0u8; 20];
                pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out);
                out.to_vec()
            }
            ScramHash::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }
}

/// What a SCRAM server stores for a user.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    hash: ScramHash,
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ScramKeys({:?}, {} iterations, <redacted>)",
            self.hash, self.iterations
        )
    }
}

impl ScramKeys {
    /// Derives the keys from a password.
    pub fn derive(hash: ScramHash, password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let salted = hash.salted_password(password, salt, iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        Self {
            hash,
            iterations,
            salt: salt.to_vec(),
            stored_key: hash.hash(&client_key),
            server_key: hash.hmac(&salted, b"Server Key"),
        }
    }

    /// Parses Dovecot's `iterations,salt,StoredKey,ServerKey` (base64 fields).
    pub fn parse(hash: ScramHash, data: &str) -> Option<Self> {
        let mut parts = data.split(',');
        let iterations = parts.next()?.parse().ok().filter(|&i| i > 0)?;
        let salt = B64.decode(parts.next()?).ok()?;
        let stored_key = B64.decode(parts.next()?).ok()?;
        let server_key = B64.decode(parts.next()?).ok()?;
        let len = hash.hash(b"").len();
        if parts.next().is_some() || stored_key.len() != len || server_key.len() != len {
            return None;
        }
        Some(Self {
            hash,
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// Checks a password against the keys (how USER/PASS works for SCRAM-only users).
    pub fn check_password(&self, password: &[u8]) -> bool {
        let other = Self::derive(self.hash, password, &self.salt, self.iterations);
        other.stored_key.ct_eq(&self.stored_key).into()
    }
}

impl std::fmt::Display for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{},{},{},{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(&self.stored_key),
            B64.encode(&self.server_key)
        )
    }
}

/// Iterations for keys derived on the fly (plaintext users, unknown users); Dovecot's default.
const ITERATIONS: u32 = 4096;

/// RFC 5802 `saslname` decoding: `=2C` is `,`, `=3D` is `=`; any other `=` is an error.
fn decode_name(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i + 1..i + 3) {
            Some("2C") => out.push(','),
            Some("3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    (!out.is_empty()).then_some(out)
}

/// RFC 5802 `saslname` encoding.
fn encode_name(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

fn printable_nonce(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Fresh 24-character nonce.
fn new_nonce() -> Result<String, AuthError> {
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(B64.encode(bytes))
}

#[derive(Debug)]
enum ServerState {
    Start,
    /// server-first sent; waiting for client-final.
    First {
        user: String,
        authzid: Option<String>,
        keys: ScramKeys,
        /// The keys are the user's own (not a stand-in for a user without them).
        real: bool,
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    /// server-final sent; waiting for the client's empty acknowledgement.
    Final {
        user: String,
        authzid: Option<String>,
    },
    Done,
}

/// The server side of SCRAM.
#[derive(Debug)]
pub struct ScramServer {
    hash: ScramHash,
    plus: bool,
    /// Channel binding data of this connection, if it has any (TLS).
    binding: Option<ChannelBinding>,
    /// Key for deriving stable fake salts (unknown users) and salts for plaintext users.
    salt_key: Vec<u8>,
    server_nonce: Option<String>,
    state: ServerState,
}

impl ScramServer {
    /// A server for `SCRAM-<hash>[-PLUS]`. `binding` is the connection's channel binding data
    /// (present on TLS); `salt_key` is a server secret for deterministic fake salts.
    pub fn new(
        hash: ScramHash,
        plus: bool,
        binding: Option<ChannelBinding>,
        salt_key: &[u8],
    ) -> Self {
        Self {
            hash,
            plus,
            binding,
            salt_key: salt_key.to_vec(),
            server_nonce: None,
            state: ServerState::Start,
        }
    }

    /// Uses a fixed server nonce (tests with RFC vectors).
    pub fn with_nonce(mut self, nonce: &str) -> Self {
        self.server_nonce = Some(nonce.to_owned());
        self
    }

    fn derived_salt(&self, purpose: &str, user: &str) -> Vec<u8> {
        let mut input = purpose.as_bytes().to_vec();
        input.push(0);
        input.extend_from_slice(user.as_bytes());
        ScramHash::Sha256.hmac(&self.salt_key, &input)[..16].to_vec()
    }

    /// The keys to check the proof with, and whether they are the user's own. Exactly one
    /// PBKDF2 of [`ITERATIONS`] runs whatever the user has, so the time this takes does not
    /// tell stored keys, a stored plaintext and an unknown user apart.
    fn keys_for(&self, dir: &dyn Directory, name: &str) -> (ScramKeys, bool) {
        match dir.secret(name, SecretKind::Scram(self.hash)) {
            Some(MechanismSecret::Scram(keys)) => {
                let _equal_work =
                    self.hash
                        .salted_password(b"", &self.derived_salt("plain", name), ITERATIONS);
                (keys, true)
            }
            Some(MechanismSecret::Plaintext(pw)) => (
                ScramKeys::derive(
                    self.hash,
                    &pw,
                    &self.derived_salt("plain", name),
                    ITERATIONS,
                ),
                true,
            ),
            _ => (
                ScramKeys::derive(
                    self.hash,
                    b"",
                    &self.derived_salt("unknown", name),
                    ITERATIONS,
                ),
                false,
            ),
        }
    }

    fn client_first(&mut self, dir: &dyn Directory, msg: &[u8]) -> Result<Step, Failure> {
        let msg = std::str::from_utf8(msg)
            .map_err(|_| Failure::malformed("client-first is not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = msg
            .split_once(',')
            .ok_or(Failure::malformed("no GS2 header"))?;
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(Failure::malformed("no GS2 header"))?;
        let gs2_header = format!("{flag},{authzid},");
        match flag {
            "n" if !self.plus => {}
            // The client could bind but believes we cannot; if we can, this is a downgrade.
            "y" if !self.plus && self.binding.is_none() => {}
            "y" => return Err(Failure::invalid(None, "channel binding downgrade detected")),
            f if f.starts_with("p=") => {
                let wanted = &f[2..];
                let ok = self.plus
                    && self
                        .binding
                        .as_ref()
                        .is_some_and(|b| b.data(wanted).is_some());
                if !ok {
                    return Err(Failure::invalid(None, "unsupported channel binding"));
                }
            }
            _ => return Err(Failure::malformed("bad channel binding flag")),
        }
        let authzid = match authzid {
            "" => None,
            a => Some(
                a.strip_prefix("a=")
                    .and_then(decode_name)
                    .ok_or(Failure::malformed("bad authzid"))?,
            ),
        };
        let mut attrs = bare.split(',');
        let user = attrs
            .next()
            .and_then(|a| a.strip_prefix("n="))
            .and_then(decode_name)
            .ok_or(Failure::malformed("no user name"))?;
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .filter(|n| printable_nonce(n))
            .ok_or(Failure::malformed("no nonce"))?;
        if bare.starts_with("m=") {
            return Err(Failure::malformed("mandatory extensions are not supported"));
        }
        let server_nonce = match &self.server_nonce {
            Some(n) => n.clone(),
            None => new_nonce().map_err(|_| Failure::temporary())?,
        };
        let nonce = format!("{client_nonce}{server_nonce}");
        let (keys, real) = self.keys_for(dir, &dir.canonical(&user));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&keys.salt),
            keys.iterations
        );
        let challenge = server_first.clone().into_bytes();
        self.state = ServerState::First {
            user,
            authzid,
            keys,
            real,
            gs2_header,
            client_first_bare: bare.to_owned(),
            server_first,
            nonce,
        };
        Ok(Step::Challenge(challenge))
    }

    fn client_final(&mut self, dir: &dyn Directory, msg: &[u8]) -> Result<Step, Failure> {
        let ServerState::First {
            user,
            authzid,
            keys,
            real,
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, ServerState::Done)
        else {
            return Err(Failure::malformed("unexpected message"));
        };
        let fail = |why| Failure::invalid(Some(user.clone()), why);
        let msg = std::str::from_utf8(msg)
            .map_err(|_| Failure::malformed("client-final is not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(Failure::malformed("no proof"))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(Failure::malformed("no channel binding"))?;
        let their_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(Failure::malformed("no nonce"))?;
        if their_nonce.as_bytes().ct_eq(nonce.as_bytes()).unwrap_u8() == 0 {
            return Err(fail("nonce mismatch"));
        }
        let mut expected_binding = gs2_header.clone().into_bytes();
        if let Some(cb_type) = gs2_header
            .strip_prefix("p=")
            .and_then(|r| r.split(',').next())
        {
            match self.binding.as_ref().and_then(|b| b.data(cb_type)) {
                Some(data) => expected_binding.extend_from_slice(data),
                None => return Err(fail("unsupported channel binding")),
            }
        }
        let given = B64
            .decode(binding)
            .map_err(|_| Failure::malformed("bad channel binding encoding"))?;
        if given.ct_eq(&expected_binding).unwrap_u8() == 0 {
            return Err(fail("channel binding mismatch"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| Failure::malformed("bad proof encoding"))?;
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = self.hash.hmac(&keys.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(fail("wrong proof length"));
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        if self
            .hash
            .hash(&client_key)
            .ct_eq(&keys.stored_key)
            .unwrap_u8()
            == 0
            || !real
        {
            if !real {
                return Err(Failure::no_secret(
                    dir,
                    &dir.canonical(&user),
                    self.hash.mechanism(false),
                ));
            }
            return Err(fail("wrong password"));
        }
        let server_signature = self.hash.hmac(&keys.server_key, auth_message.as_bytes());
        self.state = ServerState::Final { user, authzid };
        Ok(Step::Challenge(
            format!("v={}", B64.encode(server_signature)).into_bytes(),
        ))
    }
}

impl ServerMechanism for ScramServer {
    fn step(&mut self, dir: &dyn Directory, response: Option<&[u8]>) -> Step {
        let result = match (&self.state, response) {
            // SCRAM is client-first: without an initial response, send an empty challenge.
            (ServerState::Start, None) => return Step::Challenge(Vec::new()),
            (ServerState::Start, Some(msg)) => self.client_first(dir, msg),
            (ServerState::First { .. }, Some(msg)) => self.client_final(dir, msg),
            (ServerState::Final { user, authzid }, Some(b"")) => {
                let (user, authzid) = (user.clone(), authzid.clone());
                self.state = ServerState::Done;
                Ok(authorize(dir, user, authzid.as_deref()))
            }
            _ => Err(Failure::malformed("unexpected SCRAM message")),
        };
        result.unwrap_or_else(Step::Failure)
    }

    fn claimed_user(&self) -> Option<&str> {
        match &self.state {
            ServerState::First { user, .. } | ServerState::Final { user, .. } => Some(user),
            _ => None,
        }
    }
}

/// The fewest PBKDF2 iterations a client accepts unless told otherwise: RFC 5802's minimum. A
/// server (or a man in the middle of a connection without TLS) asking for fewer would make an
/// overheard exchange cheap to attack offline.
pub const MIN_ITERATIONS: u32 = 4096;

/// The most PBKDF2 iterations a client computes: over three times OWASP's 600 000 for
/// PBKDF2-SHA-256, about a second; a hostile server asking for billions would hold the client
/// for hours.
pub const MAX_ITERATIONS: u32 = 2_000_000;

/// The client side of SCRAM.
#[derive(Debug)]
pub struct ScramClient {
    /// Accept fewer than [`MIN_ITERATIONS`] (the user said the risk is theirs).
    allow_few_iterations: bool,
    hash: ScramHash,
    user: String,
    password: pop3_proto::Secret<Vec<u8>>,
    /// Channel binding type and data, when the client binds (-PLUS).
    binding: Option<(String, Vec<u8>)>,
    nonce: String,
    gs2_header: String,
    client_first_bare: String,
    expected_server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    /// A client for `user`. `binding` is the connection's channel binding (type, data) when it
    /// has one; `plus` says whether the -PLUS variant is being used. With binding data but
    /// without -PLUS the client sends flag `y` ("I could bind, you did not offer it"), which
    /// lets a server that does offer -PLUS detect a downgrade.
    pub fn new(
        hash: ScramHash,
        user: &str,
        password: &[u8],
        binding: Option<(&str, Vec<u8>)>,
        plus: bool,
    ) -> Result<Self, AuthError> {
        Ok(Self::with_nonce(
            hash,
            user,
            password,
            binding,
            plus,
            &new_nonce()?,
        ))
    }

    /// A client with a fixed nonce (tests with RFC vectors).
    pub fn with_nonce(
        hash: ScramHash,
        user: &str,
        password: &[u8],
        binding: Option<(&str, Vec<u8>)>,
        plus: bool,
        nonce: &str,
    ) -> Self {
        let gs2_header = match (&binding, plus) {
            (Some((name, _)), true) => format!("p={name},,"),
            (Some(_), false) => "y,,".to_owned(),
            (None, _) => "n,,".to_owned(),
        };
        let client_first_bare = format!("n={},r={nonce}", encode_name(user));
        Self {
            allow_few_iterations: false,
            hash,
            user: user.to_owned(),
            password: pop3_proto::Secret::new(password.to_vec()),
            binding: binding.filter(|_| plus).map(|(n, d)| (n.to_owned(), d)),
            nonce: nonce.to_owned(),
            gs2_header,
            client_first_bare,
            expected_server_signature: None,
        }
    }

    /// Accepts a server's iteration count below [`MIN_ITERATIONS`].
    pub fn allow_few_iterations(mut self) -> Self {
        self.allow_few_iterations = true;
        self
    }

    /// Asks to act as `authzid` (allowed by servers only for master users).
    pub fn authorize_as(mut self, authzid: &str) -> Self {
        let flag = self.gs2_header.split(',').next().unwrap_or("n").to_owned();
        self.gs2_header = format!("{flag},a={},", encode_name(authzid));
        self
    }

    /// The client-first message (sent as the initial response).
    pub fn client_first(&self) -> Vec<u8> {
        format!("{}{}", self.gs2_header, self.client_first_bare).into_bytes()
    }

    /// Answers server-first with client-final.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, AuthError> {
        let bad = |why| AuthError::MalformedSasl(why);
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| bad("server-first is not UTF-8"))?;
        let mut attrs = server_first.split(',');
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(bad("no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(bad("server nonce does not extend ours"));
        }
        let salt = attrs
            .next()
            .and_then(|a| a.strip_prefix("s="))
            .and_then(|s| B64.decode(s).ok())
            .ok_or(bad("no salt"))?;
        let iterations: u32 = attrs
            .next()
            .and_then(|a| a.strip_prefix("i="))
            .and_then(|i| i.parse().ok())
            .filter(|&i| i > 0)
            .ok_or(bad("no iteration count"))?;
        if iterations < MIN_ITERATIONS && !self.allow_few_iterations {
            return Err(bad(
                "the server asks for fewer than 4096 PBKDF2 iterations (RFC 5802's minimum), which makes an overheard exchange cheap to attack; allow it with --allow-insecure",
            ));
        }
        if iterations > MAX_ITERATIONS {
            return Err(bad(
                "the server asks for more than 2 000 000 PBKDF2 iterations: seconds to hours of work for this client, more than any server needs",
            ));
        }
        let mut cbind = self.gs2_header.clone().into_bytes();
        if let Some((_, data)) = &self.binding {
            cbind.extend_from_slice(data);
        }
        let without_proof = format!("c={},r={nonce}", B64.encode(cbind));
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let salted = self
            .hash
            .salted_password(self.password.expose(), &salt, iterations);
        let client_key = self.hash.hmac(&salted, b"Client Key");
        let stored_key = self.hash.hash(&client_key);
        let signature = self.hash.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = self.hash.hmac(&salted, b"Server Key");
        self.expected_server_signature = Some(self.hash.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks server-final: the server proved it knows the keys.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), AuthError> {
        let text = std::str::from_utf8(server_final)
            .map_err(|_| AuthError::MalformedSasl("server-final is not UTF-8"))?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(AuthError::ServerRejected(e.to_owned()));
        }
        let v = text
            .strip_prefix("v=")
            .and_then(|v| B64.decode(v.split(',').next()?).ok());
        match (v, &self.expected_server_signature) {
            (Some(v), Some(expected)) if bool::from(v.ct_eq(expected)) => Ok(()),
            _ => Err(AuthError::ServerRejected(format!(
                "server signature for {} is wrong",
                self.user
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::tests::TestDirectory;

    #[test]
    fn the_client_bounds_the_iteration_count() {
        let first = |i: u64| format!("r=abcdefSERVER,s=QSXCR+Q6sek8bf92,i={i}").into_bytes();
        let client =
            || ScramClient::with_nonce(ScramHash::Sha256, "u", b"p", None, false, "abcdef");
        for (i, ok) in [(4095, false), (4096, true), (2_000_001, false)] {
            let result = client().client_final(&first(i));
            assert_eq!(result.is_ok(), ok, "i={i}: {result:?}");
        }
        let e = client().client_final(&first(1)).unwrap_err().to_string();
        assert!(e.contains("--allow-insecure"), "{e}");
        assert!(
            client()
                .allow_few_iterations()
                .client_final(&first(1))
                .is_ok()
        );
        assert!(
            client()
                .allow_few_iterations()
                .client_final(&first(4_294_967_295))
                .is_err(),
            "never hours of work"
        );
    }

    #[test]
    fn rfc5802_sha1_vector() {
        let mut client = ScramClient::with_nonce(
            ScramHash::Sha1,
            "user",
            b"pencil",
            None,
            false,
            "fyko+d2lbbFgONRv9qkxdawL",
        );
        assert_eq!(
            client.client_first(),
            b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
        );
        let server_first =
            b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096";
        let client_final = client.client_final(server_first).unwrap();
        assert_eq!(
            client_final,
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        client
            .verify_server_final(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")
            .unwrap();
        assert!(client.verify_server_final(b"v=AAAA").is_err());

        // The server side with keys derived the same way reproduces the exchange.
        let salt = B64.decode("QSXCR+Q6sek8bf92").unwrap();
        let keys = ScramKeys::derive(ScramHash::Sha1, b"pencil", &salt, 4096);
        let dir = TestDirectory::with_secret("user", MechanismSecret::Scram(keys));
        let mut server =
            ScramServer::new(ScramHash::Sha1, false, None, b"k").with_nonce("3rfcNHYJY1ZVvWVs7j");
        assert_eq!(server.step(&dir, None), Step::Challenge(Vec::new()));
        assert_eq!(
            server.step(&dir, Some(&client.client_first())),
            Step::Challenge(server_first.to_vec())
        );
        assert_eq!(
            server.step(&dir, Some(&client_final)),
            Step::Challenge(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=".to_vec())
        );
        assert_eq!(
            server.step(&dir, Some(b"")),
            Step::Success {
                user: "user".into()
            }
        );
    }

    #[test]
    fn rfc7677_sha256_vector() {
        let mut client = ScramClient::with_nonce(
            ScramHash::Sha256,
            "user",
            b"pencil",
            None,
            false,
            "rOprNGfwEbeRWgbNEkqO",
        );
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        assert_eq!(
            client.client_final(server_first).unwrap(),
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        client
            .verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
    }

    fn run(server: &mut ScramServer, client: &mut ScramClient, dir: &TestDirectory) -> Step {
        match server.step(dir, Some(&client.client_first())) {
            Step::Challenge(first) => {
                let Ok(fin) = client.client_final(&first) else {
                    return Step::Failure(Failure::malformed("client"));
                };
                match server.step(dir, Some(&fin)) {
                    Step::Challenge(v) => {
                        client.verify_server_final(&v).unwrap();
                        server.step(dir, Some(b""))
                    }
                    other => other,
                }
            }
            other => other,
        }
    }

    #[test]
    fn plaintext_users_and_wrong_passwords() {
        let dir =
            TestDirectory::with_secret("alice", MechanismSecret::Plaintext(b"secret".to_vec()));
        for hash in [ScramHash::Sha1, ScramHash::Sha256] {
            let mut s = ScramServer::new(hash, false, None, b"k");
            let mut c = ScramClient::new(hash, "alice", b"secret", None, false).unwrap();
            assert_eq!(
                run(&mut s, &mut c, &dir),
                Step::Success {
                    user: "alice".into()
                }
            );
            let mut s = ScramServer::new(hash, false, None, b"k");
            let mut c = ScramClient::new(hash, "alice", b"wrong", None, false).unwrap();
            assert!(
                matches!(run(&mut s, &mut c, &dir), Step::Failure(f) if f.user.as_deref() == Some("alice"))
            );
        }
    }

    #[test]
    fn unknown_users_get_a_stable_fake_salt() {
        let dir = TestDirectory::default();
        let first = |name: &str| {
            let mut s = ScramServer::new(ScramHash::Sha256, false, None, b"server secret");
            match s.step(&dir, Some(format!("n,,n={name},r=abc").as_bytes())) {
                Step::Challenge(c) => String::from_utf8(c)
                    .unwrap()
                    .split(",s=")
                    .nth(1)
                    .unwrap()
                    .to_owned(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            first("ghost"),
            first("ghost"),
            "the salt must not reveal that the user is unknown"
        );
        assert_ne!(first("ghost"), first("phantom"));
        let mut s = ScramServer::new(ScramHash::Sha256, false, None, b"k");
        let mut c = ScramClient::new(ScramHash::Sha256, "ghost", b"x", None, false).unwrap();
        assert!(matches!(run(&mut s, &mut c, &dir), Step::Failure(_)));
    }

    #[test]
    fn channel_binding() {
        let dir =
            TestDirectory::with_secret("alice", MechanismSecret::Plaintext(b"secret".to_vec()));
        let binding = ChannelBinding {
            tls_exporter: Some(vec![7; 32]),
            tls_server_end_point: Some(vec![9; 32]),
        };
        for cb in ["tls-exporter", "tls-server-end-point"] {
            let data = binding.data(cb).unwrap().to_vec();
            let mut s = ScramServer::new(ScramHash::Sha256, true, Some(binding.clone()), b"k");
            let mut c = ScramClient::new(
                ScramHash::Sha256,
                "alice",
                b"secret",
                Some((cb, data)),
                true,
            )
            .unwrap();
            assert_eq!(
                run(&mut s, &mut c, &dir),
                Step::Success {
                    user: "alice".into()
                },
                "{cb}"
            );
            // A client bound to another TLS connection (a man in the middle) fails.
            let mut s = ScramServer::new(ScramHash::Sha256, true, Some(binding.clone()), b"k");
            let mut c = ScramClient::new(
                ScramHash::Sha256,
                "alice",
                b"secret",
                Some((cb, vec![1; 32])),
                true,
            )
            .unwrap();
            assert!(
                matches!(run(&mut s, &mut c, &dir), Step::Failure(_)),
                "{cb}"
            );
        }
        // Flag "y" on a connection where the server could bind: downgrade, refused.
        let mut s = ScramServer::new(ScramHash::Sha256, false, Some(binding.clone()), b"k");
        assert!(matches!(
            s.step(&dir, Some(b"y,,n=alice,r=abc")),
            Step::Failure(_)
        ));
        // Flag "y" without TLS is fine.
        let mut s = ScramServer::new(ScramHash::Sha256, false, None, b"k");
        assert!(matches!(
            s.step(&dir, Some(b"y,,n=alice,r=abc")),
            Step::Challenge(_)
        ));
        // -PLUS without binding data, or "n" with -PLUS: refused.
        let mut s = ScramServer::new(ScramHash::Sha256, true, Some(binding), b"k");
        assert!(matches!(
            s.step(&dir, Some(b"n,,n=alice,r=abc")),
            Step::Failure(_)
        ));
    }

    #[test]
    fn names_and_malformed_messages() {
        assert_eq!(decode_name("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(decode_name("a=2"), None);
        assert_eq!(encode_name("a,b=c"), "a=2Cb=3Dc");
        let dir = TestDirectory::default();
        for bad in [
            &b""[..],
            b"n",
            b"n,,",
            b"x,,n=a,r=b",
            b"n,,n=a",
            b"n,,r=b,n=a",
            b"n,,n=a,r=",
            b"n,a=x=zz,n=a,r=b",
            b"n,,m=1,n=a,r=b",
        ] {
            let mut s = ScramServer::new(ScramHash::Sha1, false, None, b"k");
            assert!(
                matches!(s.step(&dir, Some(bad)), Step::Failure(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // An authorization identity for another user is decided after the proof: refused for
        // ordinary users, granted to master users.
        let mut dir =
            TestDirectory::with_secret("alice", MechanismSecret::Plaintext(b"s".to_vec()));
        dir.add("master", MechanismSecret::Plaintext(b"m".to_vec()));
        let mut s = ScramServer::new(ScramHash::Sha1, false, None, b"k");
        let mut c = ScramClient::new(ScramHash::Sha1, "alice", b"s", None, false)
            .unwrap()
            .authorize_as("master");
        assert!(matches!(run(&mut s, &mut c, &dir), Step::Failure(_)));
        let mut s = ScramServer::new(ScramHash::Sha1, false, None, b"k");
        let mut c = ScramClient::new(ScramHash::Sha1, "master", b"m", None, false)
            .unwrap()
            .authorize_as("alice");
        assert_eq!(
            run(&mut s, &mut c, &dir),
            Step::Success {
                user: "alice".into()
            }
        );
    }

    #[test]
    fn keys_round_trip_dovecot_format() {
        let stored = "4096,HoYULrsfB5opYkWNh8v1vg==,jyLxy3icn2uv35j/Oohe/x29U2lyeuBWySMaoGLmBKU=,lJyAubkeXHSillZv+R4zDU6ltWBHjj7k7VHXfWsWuzo=";
        let keys = ScramKeys::parse(ScramHash::Sha256, stored).unwrap();
        assert_eq!(keys.to_string(), stored);
        assert!(keys.check_password(b"secret"));
        assert!(
            ScramKeys::parse(ScramHash::Sha1, stored).is_none(),
            "SHA-256 keys are not SHA-1 keys"
        );
    }
}
