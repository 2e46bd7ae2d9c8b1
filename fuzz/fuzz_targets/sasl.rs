//! SASL decoders and server mechanisms fed arbitrary client messages: PLAIN, LOGIN, CRAM-MD5,
//! SCRAM (both hashes, with and without channel binding), OAUTHBEARER/XOAUTH2 messages, and the
//! JWT verifier. None may panic or accept without the right secret.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pop3_auth::jwt::JwtVerifier;
use pop3_auth::sasl::cram_md5::CramMd5Server;
use pop3_auth::sasl::login::LoginServer;
use pop3_auth::sasl::oauth::{Flavor, parse};
use pop3_auth::sasl::plain::PlainServer;
use pop3_auth::sasl::scram::{ScramHash, ScramServer};
use pop3_auth::sasl::{ChannelBinding, ServerMechanism, Step};
use pop3_auth::userdb::Decoy;
use pop3_auth::UserDb;
use std::sync::OnceLock;

fn db() -> &'static UserDb {
    static DB: OnceLock<UserDb> = OnceLock::new();
    DB.get_or_init(|| UserDb::parse("alice:{PLAIN}secret\nbob:{CRAM-MD5}cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56\n").0)
}

fn verifier() -> &'static JwtVerifier {
    static V: OnceLock<JwtVerifier> = OnceLock::new();
    V.get_or_init(|| {
        let jwks = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
        JwtVerifier::from_jwks(jwks, "iss", "aud", "email").expect("test JWKS")
    })
}

fuzz_target!(|input: (u8, Vec<Vec<u8>>)| {
    let (which, messages) = input;
    let rules = pop3_auth::directory::LoginRules::default();
    let dir = db().directory(Decoy { fallback: "{PLAIN}decoy", key: b"k" }, &[], &rules);
    let binding = ChannelBinding { tls_exporter: Some(vec![1; 32]), tls_server_end_point: Some(vec![2; 32]) };
    let mut mechanism: Box<dyn ServerMechanism> = match which % 7 {
        0 => Box::new(PlainServer),
        1 => Box::new(LoginServer::default()),
        2 => Box::new(CramMd5Server::new("<1.2@fuzz>".into())),
        3 => Box::new(ScramServer::new(ScramHash::Sha1, false, None, b"k")),
        4 => Box::new(ScramServer::new(ScramHash::Sha256, true, Some(binding), b"k")),
        5 => {
            for m in &messages {
                let _ = parse(Flavor::OauthBearer, m);
                let _ = parse(Flavor::Xoauth2, m);
            }
            return;
        }
        _ => {
            for m in &messages {
                if let Ok(token) = std::str::from_utf8(m) {
                    assert!(verifier().verify(token, 1_800_000_000).is_err(), "a forged token verified");
                }
            }
            return;
        }
    };
    for m in messages.iter().take(8) {
        match mechanism.step(&dir, Some(m)) {
            Step::Challenge(_) => {}
            Step::Success { user } => {
                // Only PLAIN and LOGIN can succeed without the fuzzer knowing a secret, and only
                // with the right password.
                assert!(user == "alice" && which % 7 <= 1 && m.ends_with(b"secret"), "{user}");
                return;
            }
            Step::Failure(_) => return,
        }
    }
});
