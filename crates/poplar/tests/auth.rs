//! Authentication against the real binary: every mechanism with the real clients that use it
//! (curl, Perl Net::POP3, mpop, fetchmail, python), SCRAM -PLUS bound to the TLS connection,
//! EXTERNAL with a client certificate, OAuth tokens, and users files written by doveadm.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use common::{Client, Server, ServerBuilder, curl, run_with_stdin, tool};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use std::path::{Path, PathBuf};
use std::process::Command;

const ISSUER: &str = "https://idp.example.test";
const AUDIENCE: &str = "pop3.example.test";

/// A test CA with a client certificate for carol@example.org, and an ES256 token issuer.
struct Fixtures {
    dir: tempfile::TempDir,
    signer: EcdsaKeyPair,
}

impl Fixtures {
    fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
            KeyPair as RcKey, SanType,
        };
        let dir = tempfile::tempdir().unwrap();
        let ca_key = RcKey::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Poplar test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = RcKey::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "Carol");
        params
            .subject_alt_names
            .push(SanType::Rfc822Name("carol@example.org".try_into().unwrap()));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("client.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("client.key"), key.serialize_pem()).unwrap();
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let signer =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap();
        let point = signer.public_key().as_ref();
        let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig",
            "x": B64URL.encode(&point[1..33]), "y": B64URL.encode(&point[33..65])}]});
        std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
        Self { dir, signer }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn token(&self, user: &str, expires_in: i64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let header = serde_json::json!({"alg": "ES256", "kid": "k1", "typ": "JWT"});
        let claims = serde_json::json!({"iss": ISSUER, "aud": AUDIENCE, "exp": now + expires_in, "iat": now, "email": user});
        let input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let sig = self
            .signer
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", B64URL.encode(sig.as_ref()))
    }
}

/// A server with APOP, OAuth and client certificates enabled, every mechanism listed
/// explicitly (so each is offered although not every user can use it), and users:
/// alice (ARGON2ID + SCRAM-SHA-256 + SCRAM-SHA-1 + CRAM-MD5), mrose ({PLAIN}, for APOP),
/// carol@example.org (ARGON2ID only; logs in by certificate or token).
fn auth_server(fx: &Fixtures) -> Server {
    let mut b = ServerBuilder::new();
    b.set("auth.apop", true);
    list_every_mechanism(&mut b);
    b.set(
        "auth.oauth.jwks_file",
        fx.path("jwks.json").to_str().unwrap(),
    );
    b.set("auth.oauth.issuer", ISSUER);
    b.set("auth.oauth.audience", AUDIENCE);
    b.set("tls.client_ca", fx.path("ca.pem").to_str().unwrap());
    let server = b.start();
    add_user(
        &server,
        "alice",
        "wonderland1",
        "ARGON2ID,SCRAM-SHA-256,SCRAM-SHA-1,CRAM-MD5",
    );
    add_user(&server, "mrose", "tanstaaf", "PLAIN");
    add_user(&server, "carol@example.org", "carolpw", "ARGON2ID");
    for user in ["alice", "mrose", "carol@example.org"] {
        assert!(
            server
                .deliver(
                    &[user],
                    format!("Subject: for {user}\r\n\r\nhello {user}\r\n").as_bytes()
                )
                .success()
        );
    }
    server
}

/// Lists every mechanism in `auth.mechanisms`, as an administrator who wants each offered
/// although not every user can use it.
fn list_every_mechanism(b: &mut ServerBuilder) {
    let all = pop3_server::config::MECHANISMS;
    b.set(
        "auth.mechanisms",
        toml::Value::Array(all.iter().copied().map(toml::Value::from).collect()),
    );
}

fn add_user(server: &Server, name: &str, password: &str, schemes: &str) {
    server.add_user_with(name, password, &["--schemes", schemes]);
}

#[test]
fn capa_offers_what_can_work() {
    let fx = Fixtures::new();
    let server = auth_server(&fx);
    let sasl = Client::sasl_offered;
    let (mut c, _) = Client::connect(server.pop3);
    assert_eq!(
        sasl(&mut c),
        "SCRAM-SHA-256 SCRAM-SHA-1 CRAM-MD5 OAUTHBEARER XOAUTH2 PLAIN LOGIN"
    );
    let mut c = c.starttls(&server.cert());
    // TLS 1.3 with channel binding data: the -PLUS variants appear. No client certificate,
    // so no EXTERNAL.
    assert_eq!(
        sasl(&mut c),
        "SCRAM-SHA-256-PLUS SCRAM-SHA-256 SCRAM-SHA-1-PLUS SCRAM-SHA-1 CRAM-MD5 OAUTHBEARER XOAUTH2 PLAIN LOGIN"
    );
    let (mut c, _) = Client::connect_tls_as(
        server.pop3s,
        &server.cert(),
        &fx.path("client.pem"),
        &fx.path("client.key"),
    );
    assert!(sasl(&mut c).contains(
        "SCRAM-SHA-256-PLUS SCRAM-SHA-256 SCRAM-SHA-1-PLUS SCRAM-SHA-1 CRAM-MD5 EXTERNAL "
    ));

    // Where plaintext is refused, only mechanisms that hide the password are offered.
    let mut b = ServerBuilder::new();
    b.set("auth.plaintext_networks", toml::Value::Array(vec![]));
    let strict = b.start();
    add_user(&strict, "alice", "pw", "ARGON2ID,SCRAM-SHA-256");
    let (mut c, _) = Client::connect(strict.pop3);
    assert_eq!(sasl(&mut c), "SCRAM-SHA-256");
    // Users with only ARGON2ID hashes cannot do challenge-response at all.
    let plain = ServerBuilder::new().start();
    plain.add_user("bob", "pw");
    let (mut c, _) = Client::connect(plain.pop3);
    assert_eq!(sasl(&mut c), "PLAIN LOGIN");
    assert!(
        c.cmd("AUTH CRAM-MD5")
            .starts_with("-ERR Unsupported authentication mechanism")
    );
}

#[test]
fn curl_each_mechanism() {
    let fx = Fixtures::new();
    let server = auth_server(&fx);
    let url =
        |user: &str, pw: &str| format!("pop3://{user}:{pw}@127.0.0.1:{}/1", server.pop3.port());
    for mech in ["PLAIN", "LOGIN", "CRAM-MD5"] {
        let out = curl(&[
            "--login-options",
            &format!("AUTH={mech}"),
            &url("alice", "wonderland1"),
        ]);
        assert_eq!(out, b"Subject: for alice\r\n\r\nhello alice\r\n", "{mech}");
    }
    let out = curl(&["--login-options", "AUTH=+APOP", &url("mrose", "tanstaaf")]);
    assert_eq!(out, b"Subject: for mrose\r\n\r\nhello mrose\r\n");
    let out = curl(&[
        "--sasl-ir",
        "--login-options",
        "AUTH=PLAIN",
        "--cacert",
        server.cert().to_str().unwrap(),
        &format!(
            "pop3s://alice:wonderland1@localhost:{}/1",
            server.pop3s.port()
        ),
    ]);
    assert_eq!(out, b"Subject: for alice\r\n\r\nhello alice\r\n");
    // A wrong password is refused by every mechanism.
    for mech in ["PLAIN", "LOGIN", "CRAM-MD5"] {
        let out = tool("curl")
            .args([
                "-sS",
                "--login-options",
                &format!("AUTH={mech}"),
                &url("alice", "nope"),
            ])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{mech} accepted a wrong password");
    }
}

#[test]
fn perl_net_pop3_with_authen_sasl() {
    let fx = Fixtures::new();
    let server = auth_server(&fx);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/net_pop3.pl");
    for (mech, user, pw) in [
        ("PLAIN", "alice", "wonderland1"),
        ("LOGIN", "alice", "wonderland1"),
        ("CRAM-MD5", "alice", "wonderland1"),
        ("apop", "mrose", "tanstaaf"),
    ] {
        let out = tool("perl")
            .arg(&script)
            .args([&server.pop3.port().to_string(), mech, user, pw])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mech}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("{mech} ok: 1 messages")),
            "{stdout}"
        );
        let wrong = tool("perl")
            .arg(&script)
            .args([&server.pop3.port().to_string(), mech, user, "wrong"])
            .output()
            .unwrap();
        assert!(!wrong.status.success(), "{mech} accepted a wrong password");
    }
}

#[test]
fn mpop_each_mechanism() {
    let fx = Fixtures::new();
    let server = auth_server(&fx);
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let cases = [
        ("plain", "alice", "wonderland1", "off"),
        ("login", "alice", "wonderland1", "off"),
        ("cram-md5", "alice", "wonderland1", "off"),
        ("scram-sha-1", "alice", "wonderland1", "off"),
        ("scram-sha-256", "alice", "wonderland1", "off"),
        ("scram-sha-256", "alice", "wonderland1", "starttls"),
        ("apop", "mrose", "tanstaaf", "off"),
        ("user", "alice", "wonderland1", "starttls"),
    ];
    for (auth, user, pw, tls) in cases {
        let rc = dir.path().join("mpoprc");
        let tls_lines = match tls {
            "starttls" => format!(
                "tls on\ntls_starttls on\ntls_trust_file {}\nhost localhost\n",
                server.cert().display()
            ),
            _ => "tls off\nhost 127.0.0.1\n".to_owned(),
        };
        let (ok, text) = common::mpop(
            &rc,
            &format!(
                "account test\n{tls_lines}port {}\nuser {user}\npassword {pw}\nauth {auth}\nkeep on\nuidls_file {}/uidls-{auth}-{tls}\ndelivery maildir {}\n",
                server.pop3.port(),
                dir.path().display(),
                maildir.display()
            ),
            "test",
        );
        assert!(ok, "mpop auth {auth} ({tls}): {text}");
        assert!(
            text.contains("retrieving message 1 of 1"),
            "mpop auth {auth} ({tls}): {text}"
        );
    }
    assert_eq!(
        std::fs::read_dir(maildir.join("new")).unwrap().count(),
        cases.len()
    );
}

#[test]
fn fetchmail_cram_md5_and_password() {
    let fx = Fixtures::new();
    let server = auth_server(&fx);
    for auth in ["cram-md5", "password"] {
        let home = tempfile::tempdir().unwrap();
        let out_file = home.path().join("fetched.eml");
        let (code, text) = common::fetchmail(
            home.path(),
            &format!(
                "poll localhost service {} protocol POP3 auth {auth} user alice password wonderland1 is root keep fetchall \
                 sslproto TLS1.2+ sslcertck sslcertfile {} mda \"/bin/cat > {}\"\n",
                server.pop3.port(),
                server.cert().display(),
                out_file.display()
            ),
            &["-v".as_ref()],
        );
        assert_eq!(code, Some(0), "fetchmail --auth {auth}: {text}");
        // fetchmail adds its Received: header and hands the MDA LF line ends.
        let fetched = String::from_utf8(std::fs::read(&out_file).unwrap()).unwrap();
        assert!(fetched.starts_with("Received: from localhost"), "{fetched}");
        assert!(
            fetched.ends_with("\nSubject: for alice\n\nhello alice\n"),
            "{fetched}"
        );
    }
}

#[test]
fn python_apop_scram_and_oauthbearer() {
    let fx = Fixtures::new();
    let server = auth_server(&fx);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/sasl_raw.py");
    let good = fx.token("carol@example.org", 600);
    let expired = fx.token("carol@example.org", -600);
    let out = tool("python3")
        .arg(script)
        .args([
            "127.0.0.1",
            &server.pop3.port().to_string(),
            "alice",
            "wonderland1",
            "mrose",
            "tanstaaf",
            "carol@example.org",
            &good,
            &expired,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.logs().join("\n")
    );
    eprintln!("{}", stdout.trim());
}

#[test]
fn xoauth2_one_and_two_line_forms() {
    let fx = Fixtures::new();
    let server = auth_server(&fx);
    let message = pop3_auth::sasl::oauth::client_message(
        pop3_auth::sasl::oauth::Flavor::Xoauth2,
        "carol@example.org",
        &fx.token("carol@example.org", 600),
    );
    let (mut c, _) = Client::connect(server.pop3);
    assert!(
        c.cmd(&format!("AUTH XOAUTH2 {}", B64.encode(&message)))
            .starts_with("+OK Logged in")
    );
    c.cmd("QUIT");
    // Microsoft clients: AUTH XOAUTH2, then the token on its own line after "+ ".
    let (mut c, _) = Client::connect(server.pop3);
    assert_eq!(c.cmd("AUTH XOAUTH2"), "+ ");
    assert!(c.sasl(&message).starts_with("+OK Logged in"));
    c.cmd("QUIT");
    // A token for another user fails with Google's JSON error, then -ERR.
    let other = pop3_auth::sasl::oauth::client_message(
        pop3_auth::sasl::oauth::Flavor::Xoauth2,
        "alice",
        &fx.token("carol@example.org", 600),
    );
    let (mut c, _) = Client::connect(server.pop3);
    let reply = c.cmd(&format!("AUTH XOAUTH2 {}", B64.encode(&other)));
    let json = B64.decode(reply.strip_prefix("+ ").unwrap()).unwrap();
    assert_eq!(json, br#"{"status":"401","schemes":"bearer"}"#);
    assert!(c.sasl(b"").starts_with("-ERR [AUTH]"));
}

/// SCRAM-SHA-256-PLUS with both channel binding types, and a client bound to a different TLS
/// connection (a man in the middle) refused.
#[test]
fn scram_plus_binds_to_the_tls_connection() {
    use pop3_auth::sasl::scram::{ScramClient, ScramHash};
    let fx = Fixtures::new();
    let server = auth_server(&fx);
    let end_point = {
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::pem_file_iter(server.cert())
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        ring::digest::digest(&ring::digest::SHA256, &der)
            .as_ref()
            .to_vec()
    };
    let run = |binding: &str, tamper: bool| -> String {
        let (c, _) = Client::connect(server.pop3);
        let mut c = c.starttls(&server.cert());
        // The client completes its TLS handshake lazily: exchange something first.
        assert!(c.cmd("CAPA").starts_with("+OK"));
        c.body();
        let mut data = match binding {
            "tls-exporter" => c.tls_exporter().unwrap(),
            _ => end_point.clone(),
        };
        if tamper {
            data[0] ^= 1;
        }
        let mut scram = ScramClient::new(
            ScramHash::Sha256,
            "alice",
            b"wonderland1",
            Some((binding, data)),
            true,
        )
        .unwrap();
        let reply = c.cmd(&format!(
            "AUTH SCRAM-SHA-256-PLUS {}",
            B64.encode(scram.client_first())
        ));
        let Some(server_first) = reply.strip_prefix("+ ") else {
            return reply;
        };
        let server_first = B64.decode(server_first).unwrap();
        let reply = c.sasl(&scram.client_final(&server_first).unwrap());
        let Some(v) = reply.strip_prefix("+ ") else {
            return reply;
        };
        scram.verify_server_final(&B64.decode(v).unwrap()).unwrap();
        c.sasl(b"")
    };
    for binding in ["tls-exporter", "tls-server-end-point"] {
        let reply = run(binding, false);
        assert!(
            reply.starts_with("+OK Logged in"),
            "{binding}: {reply}\n{}",
            server.logs().join("\n")
        );
        assert!(
            run(binding, true).starts_with("-ERR [AUTH]"),
            "{binding} with foreign binding data"
        );
    }
}

#[test]
fn external_with_a_client_certificate() {
    let fx = Fixtures::new();
    let server = auth_server(&fx);
    let (mut c, _) = Client::connect_tls_as(
        server.pop3s,
        &server.cert(),
        &fx.path("client.pem"),
        &fx.path("client.key"),
    );
    assert!(
        c.cmd("AUTH EXTERNAL =")
            .starts_with("+OK Logged in, maildrop has 1 message")
    );
    c.cmd("QUIT");
    // Asking for another identity than the certificate's is refused.
    let (mut c, _) = Client::connect_tls_as(
        server.pop3s,
        &server.cert(),
        &fx.path("client.pem"),
        &fx.path("client.key"),
    );
    assert!(
        c.cmd(&format!("AUTH EXTERNAL {}", B64.encode("alice")))
            .starts_with("-ERR [AUTH]")
    );
    // Without a certificate EXTERNAL is not offered at all.
    let (mut c, _) = Client::connect_tls(server.pop3s, &server.cert());
    assert!(
        c.cmd("AUTH EXTERNAL =")
            .starts_with("-ERR Unsupported authentication mechanism")
    );
}

/// A users file written by `doveadm pw` for each scheme logs in unchanged, and challenge-
/// response mechanisms work where the stored form allows them.
#[test]
fn doveadm_users_file_logs_in_unchanged() {
    let schemes = [
        "ARGON2ID",
        "ARGON2I",
        "BLF-CRYPT",
        "SHA512-CRYPT",
        "SHA256-CRYPT",
        "PBKDF2",
        "SSHA512",
        "SSHA256",
        "SSHA",
        "CRAM-MD5",
        "SCRAM-SHA-1",
        "SCRAM-SHA-256",
        "PLAIN",
        "CLEAR",
    ];
    let mut b = ServerBuilder::new();
    list_every_mechanism(&mut b);
    let server = b.start();
    let mut users = String::new();
    for scheme in schemes {
        let out = tool("doveadm")
            .args(["pw", "-s", scheme, "-p", "dove pass"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "doveadm pw -s {scheme}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hash = String::from_utf8(out.stdout).unwrap();
        users.push_str(&format!(
            "u-{}:{}:1000:1000::/home/u::\n",
            scheme.to_ascii_lowercase(),
            hash.trim()
        ));
    }
    std::fs::write(server.data_dir().join("users"), &users).unwrap();
    for scheme in schemes {
        let user = format!("u-{}", scheme.to_ascii_lowercase());
        let (mut c, _) = Client::connect(server.pop3);
        assert!(
            c.login(&user, "dove pass").starts_with("+OK Logged in"),
            "{scheme}"
        );
        c.cmd("QUIT");
        let (mut c, _) = Client::connect(server.pop3);
        assert!(
            c.login(&user, "dove Pass").starts_with("-ERR [AUTH]"),
            "{scheme} accepted a wrong password"
        );
    }
    let cram = |user: &str| {
        let out = tool("curl")
            .args([
                "-sS",
                "--login-options",
                "AUTH=CRAM-MD5",
                &format!(
                    "pop3://{user}:dove%20pass@127.0.0.1:{}/",
                    server.pop3.port()
                ),
            ])
            .output()
            .unwrap();
        out.status.success()
    };
    assert!(cram("u-cram-md5") && cram("u-plain"));
    assert!(
        !cram("u-argon2id"),
        "CRAM-MD5 must not work without a CRAM-MD5 secret"
    );
    let scram = |user: &str, hash| {
        use pop3_auth::sasl::scram::ScramClient;
        let (mut c, _) = Client::connect(server.pop3);
        let mech = if hash == pop3_auth::sasl::scram::ScramHash::Sha1 {
            "SCRAM-SHA-1"
        } else {
            "SCRAM-SHA-256"
        };
        let mut s = ScramClient::new(hash, user, b"dove pass", None, false).unwrap();
        let reply = c.cmd(&format!("AUTH {mech} {}", B64.encode(s.client_first())));
        let Some(first) = reply.strip_prefix("+ ") else {
            return reply;
        };
        let reply = c.sasl(&s.client_final(&B64.decode(first).unwrap()).unwrap());
        match reply.strip_prefix("+ ") {
            Some(_) => c.sasl(b""),
            None => reply,
        }
    };
    use pop3_auth::sasl::scram::ScramHash;
    assert!(scram("u-scram-sha-256", ScramHash::Sha256).starts_with("+OK"));
    assert!(scram("u-scram-sha-1", ScramHash::Sha1).starts_with("+OK"));
    assert!(scram("u-clear", ScramHash::Sha256).starts_with("+OK"));
    assert!(scram("u-sha512-crypt", ScramHash::Sha256).starts_with("-ERR [AUTH]"));
    let _ = Command::new("true");
}

#[test]
fn master_users_may_act_as_others_and_nobody_else_may() {
    let mut b = ServerBuilder::new();
    b.set(
        "auth.master_users",
        toml::Value::Array(vec!["support".into()]),
    );
    list_every_mechanism(&mut b);
    let server = b.start();
    add_user(&server, "support", "master-pw", "ARGON2ID,SCRAM-SHA-256");
    add_user(&server, "alice", "alice-pw", "ARGON2ID,SCRAM-SHA-256");
    add_user(&server, "bob", "bob-pw", "ARGON2ID");
    assert!(
        server
            .deliver(&["alice"], b"Subject: a\r\n\r\nfor alice\r\n")
            .success()
    );
    let plain = |authzid: &str, user: &str, pw: &str| {
        let (mut c, _) = Client::connect(server.pop3);
        c.cmd(&format!(
            "AUTH PLAIN {}",
            B64.encode(format!("{authzid}\0{user}\0{pw}"))
        ))
    };
    assert!(
        plain("alice", "support", "master-pw").starts_with("+OK Logged in, maildrop has 1 message")
    );
    assert!(
        plain("alice", "bob", "bob-pw").starts_with("-ERR [AUTH]"),
        "an ordinary user acting as another"
    );
    assert!(
        plain("nobody", "support", "master-pw").starts_with("-ERR [AUTH]"),
        "the target must exist"
    );
    assert!(plain("alice", "support", "wrong").starts_with("-ERR [AUTH]"));
    // SCRAM's a= works the same way.
    use pop3_auth::sasl::scram::{ScramClient, ScramHash};
    let (mut c, _) = Client::connect(server.pop3);
    let mut s = ScramClient::new(ScramHash::Sha256, "support", b"master-pw", None, false)
        .unwrap()
        .authorize_as("alice");
    let reply = c.cmd(&format!(
        "AUTH SCRAM-SHA-256 {}",
        B64.encode(s.client_first())
    ));
    let reply = c.sasl(
        &s.client_final(&B64.decode(reply.strip_prefix("+ ").unwrap()).unwrap())
            .unwrap(),
    );
    s.verify_server_final(&B64.decode(reply.strip_prefix("+ ").unwrap()).unwrap())
        .unwrap();
    assert!(
        c.sasl(b"")
            .starts_with("+OK Logged in, maildrop has 1 message")
    );
}

#[test]
fn client_certificates_only_where_configured() {
    let fx = Fixtures::new();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string()
    };
    let (plain_port, cert_port) = (free(), free());
    let mut b = ServerBuilder::new();
    b.set(
        "listen.pop3s",
        toml::Value::Array(vec![plain_port.clone().into(), cert_port.clone().into()]),
    );
    b.set("tls.client_ca", fx.path("ca.pem").to_str().unwrap());
    b.set(
        "tls.client_ca_listeners",
        toml::Value::Array(vec![cert_port.clone().into()]),
    );
    let server = b.start();
    add_user(&server, "carol@example.org", "carolpw", "ARGON2ID");
    let offers_external = |addr: &str| {
        let (mut c, _) = Client::connect_tls_as(
            addr.parse().unwrap(),
            &server.cert(),
            &fx.path("client.pem"),
            &fx.path("client.key"),
        );
        assert!(c.cmd("CAPA").starts_with("+OK"));
        String::from_utf8(c.body()).unwrap().contains(" EXTERNAL ")
    };
    assert!(offers_external(&cert_port));
    assert!(
        !offers_external(&plain_port),
        "the other listener must not ask for certificates"
    );
}

/// `poplar fetch` logs in with SCRAM-SHA-256-PLUS (bound to the TLS 1.3 connection) and by
/// itself (auto, which prefers it: `choose_mechanism`'s unit test), with OAUTHBEARER and XOAUTH2
/// with a token as the password, and exits 77 when a token is refused.
#[test]
fn poplar_fetch_with_channel_binding_and_tokens() {
    let fx = Fixtures::new();
    let server = auth_server(&fx);
    let url = |user: &str| format!("pop3s://{user}@localhost:{}", server.pop3s.port());
    let fetch = |user: &str, password: &str, auth: Option<&str>| {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = std::process::Command::new(common::BIN);
        cmd.args([
            "fetch",
            &url(user),
            "--keep",
            "--password-stdin",
            "--ca-file",
        ])
        .arg(server.cert())
        .arg("--to")
        .arg(format!("maildir:{}", dir.path().join("M").display()))
        .arg("--journal")
        .arg(dir.path().join("j"));
        if let Some(a) = auth {
            cmd.args(["--auth", a]);
        }
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let _ = std::io::Write::write_all(
            &mut child.stdin.take().unwrap(),
            format!("{password}\n").as_bytes(),
        );
        child.wait_with_output().unwrap()
    };
    let ok = |out: std::process::Output| {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{out:?}");
        assert!(text.contains("1 new of 1"), "{text}");
    };
    ok(fetch("alice", "wonderland1", Some("SCRAM-SHA-256-PLUS")));
    ok(fetch("alice", "wonderland1", None));
    let token = fx.token("carol@example.org", 300);
    ok(fetch("carol@example.org", &token, Some("OAUTHBEARER")));
    ok(fetch("carol@example.org", &token, Some("XOAUTH2")));
    let expired = fx.token("carol@example.org", -600);
    let out = fetch("carol@example.org", &expired, Some("OAUTHBEARER"));
    assert_eq!(out.status.code(), Some(77), "{out:?}");
}

/// mpop with `auth on` (the strongest mechanism the server offers), for `user`, over STLS or
/// implicit TLS on `port`: whether it succeeded, and what it said.
fn mpop_auto(
    dir: &Path,
    cert: &Path,
    port: u16,
    implicit: bool,
    user: &str,
    pw: &str,
) -> (bool, String) {
    let tag = format!("{}-{port}", user.replace('@', "_"));
    let maildir = dir.join(format!("Maildir-{tag}"));
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let rc = dir.join(format!("mpoprc-{tag}"));
    common::mpop(
        &rc,
        &format!(
            "account test\nhost localhost\nport {port}\ntls on\ntls_starttls {}\n\
             tls_trust_file {}\nuser {user}\npassword {pw}\nauth on\nkeep on\n\
             uidls_file {}/uidls-{tag}\ndelivery maildir {}\n",
            if implicit { "off" } else { "on" },
            cert.display(),
            dir.display(),
            maildir.display()
        ),
        "test",
    )
}

/// The README's own setup: `poplar serve` on its embedded defaults, the demo user, a user added
/// with the default scheme and one added with `--schemes ARGON2ID,SCRAM-SHA-256,CRAM-MD5`.
/// Clients that pick the strongest mechanism offered (mpop's `auth on`, curl) must log every one
/// of them in, over STLS and POP3S: CAPA offers SCRAM and CRAM-MD5 only once every user can use
/// them, and says so as soon as the users file changes.
#[test]
fn automatic_mechanism_choice_works_for_every_user_of_a_mixed_store() {
    let dir = tempfile::tempdir().unwrap();
    let (mut running, demo_pw) = common::serve_embedded(dir.path());
    let (pop3, pop3s) = (running.pop3, running.pop3s.unwrap());
    let user = |args: &[&str], pw: &str| {
        let mut c = Command::new(common::BIN);
        c.arg("user")
            .args(args)
            .arg("--password-stdin")
            .current_dir(dir.path());
        assert!(
            run_with_stdin(c, format!("{pw}\n").as_bytes()).success(),
            "{args:?}"
        );
    };
    user(&["add", "alice@example.org"], "alice-pw");
    user(
        &["add", "bob", "--schemes", "ARGON2ID,SCRAM-SHA-256,CRAM-MD5"],
        "bob-pw",
    );
    let sasl = || Client::connect(pop3).0.sasl_offered();
    assert_eq!(
        sasl(),
        "PLAIN LOGIN",
        "only some users have SCRAM and CRAM-MD5 forms"
    );
    let cert = dir.path().join("poplar-data/tls/cert.pem");
    let users = [
        ("demo", demo_pw.as_str()),
        ("alice@example.org", "alice-pw"),
        ("bob", "bob-pw"),
    ];
    for (name, pw) in users {
        for (port, implicit) in [(pop3.port(), false), (pop3s.port(), true)] {
            let (ok, text) = mpop_auto(dir.path(), &cert, port, implicit, name, pw);
            assert!(ok, "mpop {name} port {port}: {text}");
        }
        let who = name.replace('@', "%40");
        for url in [
            format!("pop3://{who}:{pw}@localhost:{}/", pop3.port()),
            format!("pop3s://{who}:{pw}@localhost:{}/", pop3s.port()),
        ] {
            curl(&["--ssl-reqd", "--cacert", cert.to_str().unwrap(), &url]);
        }
    }
    // Once every user has the forms, the mechanisms are offered, without a restart.
    user(
        &[
            "passwd",
            "alice@example.org",
            "--schemes",
            "ARGON2ID,SCRAM-SHA-256,CRAM-MD5",
        ],
        "alice-pw",
    );
    user(
        &[
            "passwd",
            "demo",
            "--schemes",
            "ARGON2ID,SCRAM-SHA-256,CRAM-MD5",
        ],
        &demo_pw,
    );
    assert_eq!(sasl(), "SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN");
    for (name, pw) in users {
        let (ok, text) = mpop_auto(dir.path(), &cert, pop3s.port(), true, name, pw);
        assert!(ok, "mpop {name} with SCRAM offered: {text}");
    }
    let _ = running.child.kill();
    let _ = running.child.wait();
}

/// With mechanisms listed explicitly, a user without the stored form gets the answer of a
/// wrong password while the log names the real cause, and `poplar fetch` falls back once to a
/// mechanism that works, saying so.
#[test]
fn a_missing_stored_form_is_logged_as_such_and_the_client_falls_back() {
    let fx = Fixtures::new();
    let server = auth_server(&fx);
    let (mut c, _) = Client::connect(server.pop3);
    let mut scram = pop3_auth::sasl::scram::ScramClient::new(
        pop3_auth::sasl::scram::ScramHash::Sha256,
        "carol@example.org",
        b"carolpw",
        None,
        false,
    )
    .unwrap();
    let reply = c.cmd(&format!(
        "AUTH SCRAM-SHA-256 {}",
        B64.encode(scram.client_first())
    ));
    let first = B64.decode(reply.strip_prefix("+ ").unwrap()).unwrap();
    let reply = c.sasl(&scram.client_final(&first).unwrap());
    assert_eq!(reply, "-ERR [AUTH] Authentication failed");
    let line = server.wait_for_log("no SCRAM-SHA-256 secret stored for carol@example.org");
    assert!(line.contains("mechanism=SCRAM-SHA-256"), "{line}");
    let (mut c, _) = Client::connect(server.pop3);
    let digest = pop3_auth::sasl::cram_md5::client_response("nobody", b"x", b"<1@h>");
    c.cmd("AUTH CRAM-MD5");
    assert!(c.sasl(&digest).starts_with("-ERR [AUTH]"));
    server.wait_for_log("reason=\"unknown user\"");

    let dir = tempfile::tempdir().unwrap();
    let out = {
        let mut cmd = Command::new(common::BIN);
        cmd.args([
            "fetch",
            &format!(
                "pop3s://carol%40example.org@localhost:{}",
                server.pop3s.port()
            ),
        ])
        .args([
            "--password-stdin",
            "--keep",
            "--ca-file",
            server.cert().to_str().unwrap(),
        ])
        .arg("--to")
        .arg(format!("maildir:{}", dir.path().join("M").display()))
        .arg("--journal")
        .arg(dir.path().join("j"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"carolpw\n").unwrap();
        child.wait_with_output().unwrap()
    };
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("1 new of 1"), "{stdout}");
    assert!(
        stderr.contains("the server refused SCRAM-SHA-256-PLUS")
            && stderr.contains("logged in with PLAIN instead"),
        "{stderr}"
    );
}

/// The credential cache (`auth.cache_ttl`): a second login with the same password is answered
/// from it (USER/PASS and PLAIN alike), a wrong password never is, a changed password stops
/// the old one at once, and with the cache off nothing is remembered. Counted in the metrics.
#[test]
fn the_credential_cache_remembers_only_the_current_right_password() {
    for cache_on in [true, false] {
        let mut b = ServerBuilder::new();
        if !cache_on {
            b.set("auth.cache_ttl", "0s");
        }
        let server = b.start();
        server.add_user("alice", "old password");
        let hits = || {
            let out = server.poplar(&["stats", "--prometheus"]).output().unwrap();
            let text = String::from_utf8(out.stdout).unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("poplar_credential_cache_hits_total "))
                .map_or(0, |v| v.trim().parse::<u64>().unwrap())
        };
        let login = |password: &str| {
            let (mut c, _) = Client::connect(server.pop3);
            let ok = c.login("alice", password).starts_with("+OK");
            c.cmd("QUIT");
            ok
        };
        let plain = |password: &str| {
            let (mut c, _) = Client::connect(server.pop3);
            let token = B64.encode(format!("\0alice\0{password}"));
            let ok = c.cmd(&format!("AUTH PLAIN {token}")).starts_with("+OK");
            c.cmd("QUIT");
            ok
        };
        assert!(login("old password"));
        assert!(login("old password"));
        assert!(plain("old password"));
        assert!(!login("wrong password"));
        assert!(!plain("wrong password"));
        let expected = if cache_on { 2 } else { 0 };
        assert_eq!(hits(), expected, "cache on: {cache_on}");
        // A new password: the old one no longer works, from the very next login.
        let status = run_with_stdin(
            server.poplar(&["user", "passwd", "alice", "--password-stdin"]),
            b"new password\n",
        );
        assert!(status.success());
        assert!(!login("old password"));
        assert!(login("new password"));
        assert!(login("new password"));
        assert_eq!(hits(), expected + u64::from(cache_on));
    }
}
