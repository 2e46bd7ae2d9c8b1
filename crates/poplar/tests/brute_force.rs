//! Brute-force defence and user enumeration, observed from outside like an attacker would, on
//! the real binary. The schedule itself (delays, queues, resets, guessing rates with many
//! connections) is tested exactly under a paused clock in pop3-server's `tests/clock.rs` (and
//! smoke-tested on the real clock in `e2e.rs`); here, what only a real process can show: that
//! no reply and no amount of server CPU time tells an unknown name from a wrong password.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Client, ServerBuilder};
use std::time::Duration;

fn server(extra: &[(&str, toml::Value)]) -> common::Server {
    let mut b = ServerBuilder::new();
    b.set("auth.failure_delay", "100ms");
    b.set("auth.penalty_cap", "800ms");
    b.set("auth.apop", true);
    for (k, v) in extra {
        b.set(k, v.clone());
    }
    let server = b.start();
    server.add_user_with(
        "alice",
        "right-password",
        &["--schemes", "ARGON2ID,SCRAM-SHA-256,CRAM-MD5"],
    );
    server
}

/// Replies for an unknown user and for a wrong password are identical in every mechanism, and
/// take the same time (both check a password hash).
#[test]
fn unknown_users_and_wrong_passwords_look_the_same() {
    let server = server(&[(
        "auth.trusted_networks",
        toml::Value::Array(vec!["127.0.0.0/8".into()]),
    )]);
    let exchange = |user: &str| -> Vec<String> {
        let mut replies = Vec::new();
        let (mut c, greeting) = Client::connect(server.pop3);
        replies.push(c.cmd(&format!("USER {user}")));
        replies.push(c.cmd("PASS wrong-password"));
        replies.push(c.cmd(&format!(
            "AUTH PLAIN {}",
            B64.encode(format!("\0{user}\0wrong-password"))
        )));
        replies.push(c.cmd("AUTH LOGIN"));
        replies.push(c.sasl(user.as_bytes()));
        replies.push(c.sasl(b"wrong-password"));
        let challenge = c.cmd("AUTH CRAM-MD5");
        let challenge = B64.decode(challenge.strip_prefix("+ ").unwrap()).unwrap();
        replies.push(c.sasl(&pop3_auth::sasl::cram_md5::client_response(
            user,
            b"wrong-password",
            &challenge,
        )));
        let ts = greeting.rsplit(' ').next().unwrap();
        replies.push(c.cmd(&format!(
            "APOP {user} {}",
            pop3_auth::apop::digest(ts, b"wrong-password")
        )));
        // SCRAM: the server-first message has the same shape, then the same failure.
        let reply = c.cmd(&format!(
            "AUTH SCRAM-SHA-256 {}",
            B64.encode(format!("n,,n={user},r=clientnonce"))
        ));
        let first =
            String::from_utf8(B64.decode(reply.strip_prefix("+ ").unwrap()).unwrap()).unwrap();
        let salt_len = B64
            .decode(
                first
                    .split(",s=")
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap(),
            )
            .unwrap()
            .len();
        replies.push(format!(
            "salt {salt_len} octets, {}",
            first.rsplit(',').next().unwrap()
        ));
        let proof = B64.encode([0u8; 32]);
        let nonce = first.split(',').next().unwrap().strip_prefix("r=").unwrap();
        replies.push(c.sasl(format!("c=biws,r={nonce},p={proof}").as_bytes()));
        replies
    };
    let known = exchange("alice");
    let unknown = exchange("nobody");
    assert_eq!(known, unknown);
    assert!(
        known
            .iter()
            .filter(|r| r.starts_with("-ERR [AUTH] Authentication failed"))
            .count()
            >= 5,
        "{known:?}"
    );

    let work = |user: &str| {
        let (mut c, _) = Client::connect(server.pop3);
        c.cmd(&format!("USER {user}"));
        server.cpu_while(|| c.cmd("PASS wrong-password")).1
    };
    let [real, ghost] = median_of(7, [&|| work("alice"), &|| work("nobody")]);
    let ratio = real.as_secs_f64() / ghost.as_secs_f64();
    assert!(
        (0.5..2.0).contains(&ratio),
        "server CPU per wrong password {real:?}, per unknown user {ghost:?}"
    );
}

/// The median of `n` measurements of each of `fs`, taken in turn (a, b, c, a, b, c, ...).
fn median_of<const N: usize>(n: usize, fs: [&dyn Fn() -> Duration; N]) -> [Duration; N] {
    let mut samples: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::with_capacity(n));
    for _ in 0..n {
        for (s, f) in samples.iter_mut().zip(fs) {
            s.push(f());
        }
    }
    samples.map(|mut s| {
        s.sort_unstable();
        s[n / 2]
    })
}

/// A users file as a migrated site has it: Poplar's own ARGON2ID, SHA512-CRYPT imported from
/// Dovecot, a {PLAIN} user, and SCRAM keys for some. Over many names, those that are no user
/// cost the server the work real users cost, spread over the stored schemes as the users are;
/// no one scheme's cost singles out the unknown names. SCRAM does the same work for its first
/// challenge for stored keys, a stored plaintext and an unknown name, and gives `Alice` and
/// `alice` one salt. Work is the server's CPU time: on an idle server it is what the answer's
/// delay consists of, and unlike the delay it does not vary with the other tests' load.
#[test]
fn existing_and_unknown_names_cannot_be_told_apart_by_timing() {
    let server = server(&[
        (
            "auth.trusted_networks",
            toml::Value::Array(vec!["127.0.0.0/8".into()]),
        ),
        (
            "auth.mechanisms",
            toml::Value::Array(vec!["SCRAM-SHA-256".into(), "PLAIN".into()]),
        ),
    ]);
    let sha512 = common::tool("doveadm")
        .args(["pw", "-s", "SHA512-CRYPT", "-p", "imported-pw"])
        .output()
        .unwrap();
    assert!(sha512.status.success());
    let users = server.data_dir().join("users");
    let mut text = std::fs::read_to_string(&users).unwrap();
    text.push_str(&format!(
        "imported:{}\nplain:{{PLAIN}}plain-pw\n",
        String::from_utf8(sha512.stdout).unwrap().trim()
    ));
    std::fs::write(&users, text).unwrap();
    let addr = server.pop3;
    let wrong = |user: &str| {
        let user = user.to_owned();
        let server = &server;
        move || {
            let (mut c, _) = Client::connect(addr);
            c.cmd(&format!("USER {user}"));
            let (reply, cpu) = server.cpu_while(|| c.cmd("PASS wrong-password"));
            assert!(reply.starts_with("-ERR [AUTH]"), "{reply}");
            cpu
        }
    };
    let names = ["alice", "imported", "plain"];
    let references = || median_of(7, [&wrong(names[0]), &wrong(names[1]), &wrong(names[2])]);
    // The unknown names, each timed with the users' schemes around it.
    let before = references();
    let unknown: Vec<(String, Duration)> = (0..45)
        .map(|i| {
            let name = format!("nobody{i}");
            let [d] = median_of(3, [&wrong(&name)]);
            (name, d)
        })
        .collect();
    let after = references();
    let classes: Vec<(&str, Duration)> = names
        .into_iter()
        .zip(before.iter().zip(after).map(|(b, a)| (*b).min(a)))
        .collect();
    eprintln!("wrong password, server CPU per stored scheme: {classes:?}");
    // Each unknown name behaves like one of the users, and the users' schemes are all
    // imitated in proportion (one user each: a third of the names each).
    let nearest = |d: Duration| {
        classes
            .iter()
            .min_by(|a, b| {
                let da = (a.1.as_secs_f64().ln() - d.as_secs_f64().ln()).abs();
                let db = (b.1.as_secs_f64().ln() - d.as_secs_f64().ln()).abs();
                da.total_cmp(&db)
            })
            .unwrap()
    };
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    // Sub-millisecond timings on a shared two-core machine: another test's burst can stretch
    // the samples of a name; such a name is timed again. A leak would make every name stray.
    let mut strays = Vec::new();
    let ratio = |d: Duration| d.as_secs_f64() / nearest(d).1.as_secs_f64();
    for (name, mut d) in unknown {
        if !(0.4..2.5).contains(&ratio(d)) {
            d = median_of(7, [&wrong(&name)])[0];
        }
        let (class, like) = nearest(d);
        if !(0.4..2.5).contains(&ratio(d)) {
            strays.push(format!("{name}: {d:?}, nearest {class} {like:?}"));
        }
        *counts.entry(class).or_default() += 1;
    }
    eprintln!("45 unknown names cost what these users cost: {counts:?}; strays: {strays:?}");
    assert!(strays.len() <= 4, "{strays:#?}");
    for (class, _) in &classes {
        let n = counts.get(class).copied().unwrap_or(0);
        assert!((5..=30).contains(&n), "{counts:?}");
    }

    // SCRAM: the work to server-first, and the salt.
    server.add_user_with("keys", "keys-pw", &["--schemes", "SCRAM-SHA-256"]);
    let first = |user: &str| {
        let (mut c, _) = Client::connect(server.pop3);
        let (reply, elapsed) = server.cpu_while(|| {
            c.cmd(&format!(
                "AUTH SCRAM-SHA-256 {}",
                B64.encode(format!("n,,n={user},r=clientnonce"))
            ))
        });
        let msg =
            String::from_utf8(B64.decode(reply.strip_prefix("+ ").unwrap()).unwrap()).unwrap();
        let salt = msg
            .split(",s=")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .to_owned();
        (elapsed, salt)
    };
    let names = ["keys", "plain", "nobody"];
    let times = median_of(
        9,
        [&|| first(names[0]).0, &|| first(names[1]).0, &|| {
            first(names[2]).0
        }],
    );
    let scram: Vec<(&str, Duration)> = names.into_iter().zip(times).collect();
    eprintln!("SCRAM-SHA-256 server-first, server CPU: {scram:?}");
    let (lo, hi) = scram
        .iter()
        .fold((Duration::MAX, Duration::ZERO), |(lo, hi), (_, d)| {
            (lo.min(*d), hi.max(*d))
        });
    assert!(hi.as_secs_f64() / lo.as_secs_f64() < 1.5, "{scram:?}");
    for user in ["plain", "nobody"] {
        assert_eq!(first(user).1, first(&user.to_uppercase()).1, "{user}");
    }
    // An exchange cancelled after server-first is a failure like any other: it is penalised.
    let (mut c, _) = Client::connect_from("127.1.0.1", server.pop3);
    let _ = c.cmd(&format!(
        "AUTH SCRAM-SHA-256 {}",
        B64.encode("n,,n=nobody,r=abc")
    ));
    assert_eq!(c.cmd("*"), "-ERR Authentication cancelled");
    server.wait_for_log("reason=\"the client abandoned the exchange\"");
}
