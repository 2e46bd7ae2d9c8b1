//! Brute-force defence and user enumeration, observed from outside like an attacker would.
//! Delays are the feature under test here; the assertions use lower bounds (a sleep is never
//! shorter) and generous upper bounds, so machine load cannot make them flaky.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Client, ServerBuilder};
use std::time::{Duration, Instant};

fn server(extra: &[(&str, toml::Value)]) -> common::Server {
    let mut b = ServerBuilder::new();
    b.set("auth.failure_delay", "100ms");
    b.set("auth.penalty_cap", "800ms");
    b.set("auth.penalty_reset_after", "1500ms");
    b.set("auth.apop", true);
    for (k, v) in extra {
        b.set(k, v.clone());
    }
    let server = b.start();
    let add = server.poplar(&[
        "user",
        "add",
        "alice",
        "--password-stdin",
        "--schemes",
        "ARGON2ID,SCRAM-SHA-256,CRAM-MD5",
    ]);
    assert!(common::run_with_stdin(add, b"right-password\n").success());
    server
}

/// One failed USER/PASS from `local`, returning how long the reply took.
fn fail_from(server: &common::Server, local: &str, password: &str) -> Duration {
    let (mut c, _) = Client::connect_from(local, server.pop3);
    c.cmd("USER alice");
    let start = Instant::now();
    let reply = c.cmd(&format!("PASS {password}"));
    assert_eq!(reply, "-ERR [AUTH] Authentication failed");
    start.elapsed()
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap()
}

#[test]
fn penalty_grows_caps_and_resets() {
    let server = server(&[]);
    // Doubling from 100 ms to the 800 ms cap, per address and account.
    let curve: Vec<u64> = (0..6)
        .map(|i| ms(fail_from(&server, "127.0.0.1", &format!("guess{i}"))))
        .collect();
    for (got, want) in curve.iter().zip([100, 200, 400, 800, 800, 800]) {
        assert!(*got >= want && *got < want + 1000, "delays {curve:?}");
    }
    // The right password still works, and clears the account's penalty...
    let (mut c, _) = Client::connect_from("127.0.0.1", server.pop3);
    assert!(c.login("alice", "right-password").starts_with("+OK"));
    c.cmd("QUIT");
    // ...so a failure from a fresh address costs the base delay again,
    let fresh = ms(fail_from(&server, "127.0.0.2", "guess-a"));
    assert!((100..700).contains(&fresh), "{fresh}");
    // while the address that failed repeatedly is still at the cap.
    let penalised = ms(fail_from(&server, "127.0.0.1", "guess-b"));
    assert!(penalised >= 800, "{penalised}");
    // After a quiet period both are forgotten.
    std::thread::sleep(Duration::from_millis(1600));
    let rested = ms(fail_from(&server, "127.0.0.1", "guess-c"));
    assert!((100..700).contains(&rested), "{rested}");
    let logs = server.logs();
    assert!(logs.iter().any(|l| {
        l.contains("authentication failed: peer=127.0.0.1 user=\"alice\" mechanism=USER")
    }));
    assert!(
        !logs.iter().any(|l| l.contains("guess")),
        "a password reached the log"
    );
}

#[test]
fn the_same_wrong_password_retried_does_not_escalate() {
    let server = server(&[]);
    let delays: Vec<u64> = (0..5)
        .map(|_| ms(fail_from(&server, "127.0.0.1", "old-password")))
        .collect();
    assert!(delays.iter().all(|d| (100..700).contains(d)), "{delays:?}");
    // A different wrong password does.
    let next = ms(fail_from(&server, "127.0.0.1", "another"));
    assert!(next >= 200, "{next}");
}

#[test]
fn parallel_guesses_queue_and_the_owner_still_logs_in() {
    let server = server(&[]);
    let start = Instant::now();
    let guesses: Vec<_> = (0..6)
        .map(|i| {
            let addr = server.pop3;
            std::thread::spawn(move || {
                let (mut c, _) = Client::connect_from(&format!("127.0.0.{}", 10 + i), addr);
                c.cmd("USER alice");
                let reply = c.cmd(&format!("PASS parallel-guess-{i}"));
                assert_eq!(reply, "-ERR [AUTH] Authentication failed");
                start.elapsed()
            })
        })
        .collect();
    // Meanwhile the owner logs in from another address at once: penalties never delay a
    // correct login.
    std::thread::sleep(Duration::from_millis(50));
    let (mut c, _) = Client::connect_from("127.0.0.1", server.pop3);
    let t = Instant::now();
    assert!(
        c.login("alice", "right-password")
            .starts_with("+OK Logged in")
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "login took {:?}",
        t.elapsed()
    );
    c.cmd("QUIT");
    let mut finished: Vec<u64> = guesses.into_iter().map(|h| ms(h.join().unwrap())).collect();
    finished.sort_unstable();
    // Six parallel guesses against one account are answered one after another (100, 200,
    // 400, 800, 800, 800 ms queued), not all after the first delay.
    assert!(
        *finished.last().unwrap() >= 100 + 200 + 400 + 800 + 800,
        "{finished:?}"
    );
}

#[test]
fn trusted_networks_are_exempt() {
    let server = server(&[(
        "auth.trusted_networks",
        toml::Value::Array(vec!["127.0.0.3/32".into()]),
    )]);
    for i in 0..5 {
        let d = fail_from(&server, "127.0.0.3", &format!("trusted-guess{i}"));
        assert!(d < Duration::from_millis(100), "{d:?}");
    }
    assert!(fail_from(&server, "127.0.0.4", "untrusted") >= Duration::from_millis(100));
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

    let time = |user: &str| {
        let mut samples: Vec<Duration> = (0..7)
            .map(|_| {
                let (mut c, _) = Client::connect(server.pop3);
                c.cmd(&format!("USER {user}"));
                let t = Instant::now();
                c.cmd("PASS wrong-password");
                t.elapsed()
            })
            .collect();
        samples.sort_unstable();
        samples[3]
    };
    let (real, ghost) = (time("alice"), time("nobody"));
    let ratio = real.as_secs_f64() / ghost.as_secs_f64();
    assert!(
        (0.5..2.0).contains(&ratio),
        "median wrong password {real:?}, unknown user {ghost:?}"
    );
}
