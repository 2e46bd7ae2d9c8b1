//! End-to-end tests: the real `poplar` binary on loopback, driven over TCP and TLS.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{BIN, Client, ServerBuilder, canonical, corpus, eventually, run_with_stdin};
use std::process::Command;
use std::time::{Duration, Instant};

fn server_with_alice() -> common::Server {
    let server = ServerBuilder::new().start();
    server.add_user("alice", "wonderland");
    server
}

#[test]
fn corpus_sizes_match_retrieved_octets_exactly() {
    let server = server_with_alice();
    let messages = corpus();
    for (_, m) in &messages {
        assert!(server.deliver(&["alice"], m).success());
    }
    let (mut c, greeting) = Client::connect(server.pop3);
    assert!(
        greeting.starts_with("+OK Poplar POP3 server ready"),
        "{greeting}"
    );
    assert!(
        c.login("alice", "wonderland")
            .starts_with("+OK Logged in, maildrop has 7 messages")
    );
    let total: usize = messages.iter().map(|(_, m)| canonical(m).len()).sum();
    assert_eq!(c.cmd("STAT"), format!("+OK 7 {total}"));
    assert!(c.cmd("LIST").starts_with("+OK 7 messages"));
    let list = String::from_utf8(c.body()).unwrap();
    for (i, (name, m)) in messages.iter().enumerate() {
        let expected = canonical(m);
        let line = list.lines().nth(i).unwrap();
        assert_eq!(
            line,
            format!("{} {}", i + 1, expected.len()),
            "LIST for {name}"
        );
        assert_eq!(
            c.cmd(&format!("RETR {}", i + 1)),
            format!("+OK {} octets", expected.len())
        );
        let got = c.body();
        assert_eq!(got.len(), expected.len(), "{name}: octets differ from LIST");
        assert!(got == expected, "{name}: retrieved bytes differ");
    }
    // TOP: the header, the blank line and n body lines.
    assert!(c.cmd("TOP 1 2").starts_with("+OK"));
    assert_eq!(
        c.body(),
        b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n"
    );
    assert!(c.cmd("TOP 7 0").starts_with("+OK"));
    assert_eq!(c.body(), b"Subject: no final newline\r\n\r\n");
    assert!(c.cmd("TOP 7 99999999").starts_with("+OK"));
    assert_eq!(c.body(), canonical(&messages[6].1));
    assert_eq!(
        c.cmd("QUIT"),
        "+OK Poplar POP3 server signing off (7 messages left)"
    );
    let line = server.wait_for_log("session ended");
    assert!(
        line.contains("user=\"alice\"") && line.contains("retr=7"),
        "{line}"
    );
}

#[test]
fn uidls_survive_deletion_and_restart() {
    let server = server_with_alice();
    for i in 0..4 {
        assert!(
            server
                .deliver(&["alice"], format!("Subject: {i}\n\n{i}\n").as_bytes())
                .success()
        );
    }
    let (mut c, _) = Client::connect(server.pop3);
    c.login("alice", "wonderland");
    assert!(c.cmd("UIDL").starts_with("+OK"));
    let before: Vec<String> = String::from_utf8(c.body())
        .unwrap()
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(before.len(), 4);
    assert!(
        before
            .iter()
            .all(|u| u.len() == 16 && u.bytes().all(|b| b.is_ascii_hexdigit()))
    );
    assert_eq!(c.cmd("DELE 2"), "+OK Message 2 deleted");
    assert_eq!(c.cmd("UIDL 2"), "-ERR Message 2 is deleted");
    assert_eq!(
        c.cmd("QUIT"),
        "+OK Poplar POP3 server signing off (3 messages left)"
    );
    let (status, dir) = server.stop();
    assert!(status.success());
    // A new server process over the same data: the same UIDLs, minus the deleted one.
    let mut b = ServerBuilder::new();
    b.set("data_dir", dir.path().join("data").to_str().unwrap());
    let server2 = b.start();
    let (mut c, _) = Client::connect(server2.pop3);
    c.login("alice", "wonderland");
    c.cmd("UIDL");
    let after: Vec<String> = String::from_utf8(c.body())
        .unwrap()
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(
        after,
        [before[0].clone(), before[2].clone(), before[3].clone()]
    );
}

#[test]
fn dele_rset_and_dropped_connections_remove_nothing() {
    let server = server_with_alice();
    for i in 0..3 {
        server.deliver(&["alice"], format!("Subject: {i}\n\nbody {i}\n").as_bytes());
    }
    let (mut c, _) = Client::connect(server.pop3);
    c.login("alice", "wonderland");
    assert_eq!(c.cmd("DELE 1"), "+OK Message 1 deleted");
    assert_eq!(c.cmd("DELE 1"), "-ERR Message 1 already deleted");
    assert_eq!(c.cmd("RETR 1"), "-ERR Message 1 is deleted");
    assert!(c.cmd("RSET").starts_with("+OK Maildrop has 3 messages"));
    assert_eq!(c.cmd("DELE 3"), "+OK Message 3 deleted");
    // Vanish without QUIT: nothing may be removed.
    drop(c);
    let (mut c, _) = Client::connect(server.pop3);
    let reply = eventually(Duration::from_secs(1), "the lock's release", || {
        let r = c.login("alice", "wonderland");
        (!r.contains("IN-USE")).then_some(r)
    });
    assert!(
        reply.starts_with("+OK Logged in, maildrop has 3 messages"),
        "{reply}"
    );
    assert_eq!(c.cmd("DELE 2"), "+OK Message 2 deleted");
    assert_eq!(
        c.cmd("QUIT"),
        "+OK Poplar POP3 server signing off (2 messages left)"
    );
    let (mut c, _) = Client::connect(server.pop3);
    assert!(
        c.login("alice", "wonderland")
            .starts_with("+OK Logged in, maildrop has 2 messages")
    );
    assert!(c.cmd("RETR 2").starts_with("+OK"));
    assert_eq!(c.body(), b"Subject: 2\r\n\r\nbody 2\r\n");
}

#[test]
fn second_session_gets_in_use_until_the_first_vanishes() {
    let server = server_with_alice();
    server.deliver(&["alice"], b"Subject: x\n\nx\n");
    let (mut first, _) = Client::connect(server.pop3);
    assert!(first.login("alice", "wonderland").starts_with("+OK"));
    let (mut second, _) = Client::connect(server.pop3);
    let reply = second.login("alice", "wonderland");
    assert!(reply.starts_with("-ERR [IN-USE]"), "{reply}");
    // The session stays usable in AUTHORIZATION.
    assert!(second.cmd("CAPA").starts_with("+OK"));
    second.body();
    // The first client is killed (no QUIT): the lock dies with its connection.
    drop(first);
    eventually(Duration::from_secs(1), "the lock's release", || {
        second
            .login("alice", "wonderland")
            .starts_with("+OK")
            .then_some(())
    });
}

#[test]
fn plaintext_refused_without_tls_when_no_network_is_trusted() {
    let mut b = ServerBuilder::new();
    b.set("auth.plaintext_networks", toml::Value::Array(vec![]));
    let server = b.start();
    server.add_user("alice", "wonderland");
    let (mut c, _) = Client::connect(server.pop3);
    assert!(c.cmd("CAPA").starts_with("+OK"));
    let capa = String::from_utf8(c.body()).unwrap();
    assert!(
        capa.contains("STLS\r\n") && !capa.contains("\r\nUSER\r\n") && !capa.contains("SASL"),
        "{capa}"
    );
    assert!(
        c.cmd("USER alice")
            .starts_with("-ERR [AUTH] Plaintext authentication disallowed")
    );
    assert!(
        c.cmd("AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=")
            .starts_with("-ERR [AUTH]")
    );
    // After STLS the same credentials work, and CAPA changes.
    let mut c = c.starttls(&server.cert());
    assert!(c.cmd("CAPA").starts_with("+OK"));
    let capa = String::from_utf8(c.body()).unwrap();
    assert!(
        !capa.contains("STLS") && capa.contains("\r\nUSER\r\n") && capa.contains("SASL PLAIN"),
        "{capa}"
    );
    assert!(
        c.cmd("AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=")
            .starts_with("+OK Logged in")
    );
    assert_eq!(c.cmd("STLS"), "-ERR STLS is not valid after login");
    // Implicit TLS works too.
    let (mut s, greeting) = Client::connect_tls(server.pop3s, &server.cert());
    assert!(greeting.starts_with("+OK"));
    assert!(s.cmd("CAPA").starts_with("+OK"));
    let capa = String::from_utf8(s.body()).unwrap();
    assert!(!capa.contains("STLS") && capa.contains("USER"), "{capa}");
}

#[test]
fn plaintext_pipelined_after_stls_is_discarded() {
    let server = server_with_alice();
    let (mut c, _) = Client::connect(server.pop3);
    // CVE-2011-0411: commands injected in the same packet as STLS must not run inside TLS.
    c.send(b"USER alice\r\nSTLS\r\nPASS wonderland\r\nCAPA\r\n");
    assert_eq!(c.line(), "+OK Send your password");
    assert_eq!(c.line(), "+OK Begin TLS negotiation");
    let mut c = c.upgrade_after_stls(&server.cert());
    // Neither the injected PASS nor CAPA was answered, and USER from before TLS is forgotten.
    assert_eq!(c.cmd("PASS wonderland"), "-ERR Send USER first");
    assert!(c.login("alice", "wonderland").starts_with("+OK Logged in"));
}

#[test]
fn failed_login_is_delayed_and_the_connection_keeps_working() {
    let mut b = ServerBuilder::new();
    b.set("auth.failure_delay", "400ms");
    b.set("auth.penalty_cap", "400ms");
    let server = b.start();
    server.add_user("alice", "wonderland");
    let (mut c, _) = Client::connect(server.pop3);
    for user in ["alice", "nobody"] {
        c.cmd(&format!("USER {user}"));
        let start = Instant::now();
        let reply = c.cmd("PASS xyzzy-guess-42");
        assert!(
            start.elapsed() >= Duration::from_millis(400),
            "no delay for {user}"
        );
        // Same reply for unknown users and wrong passwords.
        assert_eq!(reply, "-ERR [AUTH] Authentication failed");
    }
    assert!(c.login("Alice", "wonderland").starts_with("+OK Logged in"));
    let line = server.wait_for_log("authentication failed");
    assert!(
        line.contains("peer=127.0.0.1")
            && line.contains("user=\"alice\"")
            && line.contains("mechanism=USER"),
        "{line}"
    );
    assert!(
        !server
            .logs()
            .iter()
            .any(|l| l.contains("xyzzy-guess-42") || l.contains("wonderland")),
        "password in the logs"
    );
}

#[test]
fn bad_commands_are_answered_then_the_connection_closes() {
    let mut b = ServerBuilder::new();
    b.set("limits.max_bad_commands", 3);
    let server = b.start();
    let (mut c, _) = Client::connect(server.pop3);
    assert_eq!(c.cmd("LAST"), "-ERR Unknown command");
    assert_eq!(
        c.cmd(&format!("USER {}", "a".repeat(300))),
        "-ERR Line too long"
    );
    assert_eq!(
        c.cmd("XYZZY"),
        "-ERR Too many invalid commands, closing connection"
    );
    assert!(c.closed_within(Duration::from_secs(5)));
}

#[test]
fn pipelined_session_in_one_write() {
    let server = server_with_alice();
    server.deliver(&["alice"], b"Subject: p\r\n\r\npipelined\r\n");
    let (mut c, _) = Client::connect(server.pop3);
    c.send(b"CAPA\r\nUSER alice\r\nPASS wonderland\r\nSTAT\r\nLIST 1\r\nRETR 1\r\nUIDL 1\r\nLAST\r\nNOOP\r\nQUIT\r\n");
    assert!(c.line().starts_with("+OK Capability"));
    let capa = String::from_utf8(c.body()).unwrap();
    assert!(capa.contains("PIPELINING"));
    assert_eq!(c.line(), "+OK Send your password");
    assert!(c.line().starts_with("+OK Logged in"));
    assert_eq!(c.line(), "+OK 1 25");
    assert_eq!(c.line(), "+OK 1 25");
    assert_eq!(c.line(), "+OK 25 octets");
    assert_eq!(c.body(), b"Subject: p\r\n\r\npipelined\r\n");
    assert!(c.line().starts_with("+OK 1 "));
    assert_eq!(c.line(), "-ERR Unknown command");
    assert_eq!(c.line(), "+OK");
    assert!(c.line().starts_with("+OK Poplar POP3 server signing off"));
}

#[test]
fn connection_caps_answer_clearly() {
    let mut b = ServerBuilder::new();
    b.set("limits.max_connections_per_ip", 2);
    let server = b.start();
    server.add_user("alice", "wonderland");
    server.add_user("bob", "builder");
    // Two sessions logged in from one address: a third connection finds none that has not
    // logged in to give way, and is refused.
    let (mut a, _) = Client::connect(server.pop3);
    assert!(a.login("alice", "wonderland").starts_with("+OK"));
    let (mut b, _) = Client::connect(server.pop3);
    assert!(b.login("bob", "builder").starts_with("+OK"));
    let (_, refused) = Client::connect(server.pop3);
    assert_eq!(
        refused,
        "-ERR [SYS/TEMP] Too many connections from your address; try again shortly"
    );
    drop(a);
    eventually(Duration::from_secs(2), "the slot's release", || {
        Client::connect(server.pop3)
            .1
            .starts_with("+OK")
            .then_some(())
    });
}

#[test]
fn shutdown_tells_clients_and_applies_no_half_update() {
    let server = server_with_alice();
    server.deliver(&["alice"], b"Subject: keep\n\nkeep\n");
    let (mut c, _) = Client::connect(server.pop3);
    c.login("alice", "wonderland");
    assert_eq!(c.cmd("DELE 1"), "+OK Message 1 deleted");
    let (status, dir) = server.stop();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        c.line(),
        "-ERR [SYS/TEMP] Server shutting down; try again shortly"
    );
    let maildir = dir.path().join("data/mail/_default_/alice/Maildir");
    let new = std::fs::read_dir(maildir.join("new")).unwrap().count();
    assert_eq!(
        new, 1,
        "a message marked in an unfinished session was removed"
    );
}

#[test]
fn users_cli_round_trip() {
    let server = ServerBuilder::new().start();
    let users = |s: &common::Server| {
        let out = s.poplar(&["user", "list"]).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    server.add_user("Bob@Example.org", "first");
    assert_eq!(users(&server), "bob@example.org\n");
    let status = run_with_stdin(
        server.poplar(&["user", "add", "bob@example.org", "--password-stdin"]),
        b"x\n",
    );
    assert!(!status.success(), "duplicate user accepted");
    for bad in ["../evil", "a b", "x:y", ""] {
        let status = run_with_stdin(
            server.poplar(&["user", "add", bad, "--password-stdin"]),
            b"x\n",
        );
        assert!(!status.success(), "{bad:?} accepted");
    }
    let (mut c, _) = Client::connect(server.pop3);
    assert!(c.login("bob@example.org", "first").starts_with("+OK"));
    c.cmd("QUIT");
    assert!(
        run_with_stdin(
            server.poplar(&["user", "passwd", "bob@example.org", "--password-stdin"]),
            b"second\n"
        )
        .success()
    );
    let (mut c, _) = Client::connect(server.pop3);
    assert!(
        c.login("bob@example.org", "first")
            .starts_with("-ERR [AUTH]")
    );
    assert!(c.login("bob@example.org", "second").starts_with("+OK"));
    c.cmd("QUIT");
    let out = server
        .poplar(&["user", "del", "bob@example.org"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("the maildrop was kept")
    );
    assert_eq!(users(&server), "");
    let (mut c, _) = Client::connect(server.pop3);
    assert!(
        c.login("bob@example.org", "second")
            .starts_with("-ERR [AUTH]")
    );
    let stored = std::fs::read_to_string(server.data_dir().join("users")).unwrap_or_default();
    assert!(!stored.contains("second"));
}

#[test]
fn deliver_exit_codes_follow_sysexits() {
    let mut b = ServerBuilder::new();
    b.set("limits.max_message_size", "1K");
    let server = b.start();
    server.add_user("alice", "wonderland");
    let code = |names: &[&str], msg: &[u8]| server.deliver(names, msg).code();
    assert_eq!(code(&["alice"], b"Subject: ok\n\nok\n"), Some(0));
    // Counted as stored, with CRLF line ends (an LF message of 1024 octets is larger).
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    big.resize(1025, b'x');
    assert_eq!(
        code(&["alice"], &big),
        Some(65),
        "over limits.max_message_size"
    );
    big.truncate(1024);
    assert_eq!(
        code(&["alice"], &big),
        Some(0),
        "at limits.max_message_size"
    );
    assert_eq!(code(&["nobody"], b"Subject: x\n\nx\n"), Some(67));
    assert_eq!(code(&["alice", "nobody"], b"Subject: x\n\nx\n"), Some(67));
    assert_eq!(code(&["alice"], b""), Some(65));
    // Storage failure: the mail directory is a file, so nothing can be written.
    let mail = server.data_dir().join("mail");
    std::fs::rename(&mail, server.data_dir().join("mail.moved")).unwrap();
    std::fs::write(&mail, b"not a directory").unwrap();
    assert_eq!(code(&["alice"], b"Subject: x\n\nx\n"), Some(75));
    std::fs::remove_file(&mail).unwrap();
    std::fs::rename(server.data_dir().join("mail.moved"), &mail).unwrap();
    let (mut c, _) = Client::connect(server.pop3);
    assert!(
        c.login("alice", "wonderland")
            .starts_with("+OK Logged in, maildrop has 2 messages ")
    );
}

#[test]
fn check_config_explains_problems() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, format!("data_dir = {:?}\n", dir.path().join("data"))).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config", good.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("configuration OK") && text.contains("no users"),
        "{text}"
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[timeouts]\nidle_after_login = \"1m\"\n[tls]\ncert = \"/nonexistent.pem\"\nkey = \"/nonexistent.key\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text.contains("RFC 1939 requires at least 10 minutes"),
        "{text}"
    );
    assert!(
        text.contains("cannot read the TLS certificate /nonexistent.pem"),
        "{text}"
    );
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[listen]\npop = []\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config", typo.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(err.contains("unknown field `pop`"), "{err}");
}

/// The README's first command, `poplar serve` with no configuration, on its default ports when
/// they are free (else on free ports): the welcome message must be retrievable by curl and
/// python3 poplib over plain POP3, STLS and POP3S.
#[test]
fn embedded_default_serves_the_welcome_message_to_real_clients() {
    let dir = tempfile::tempdir().unwrap();
    let defaults_free = ["127.0.0.1:1110", "127.0.0.1:1995"]
        .iter()
        .all(|a| std::net::TcpListener::bind(a).is_ok());
    let mut cmd = Command::new(BIN);
    cmd.arg("serve");
    if !defaults_free {
        cmd.args(["--pop3", "127.0.0.1:0", "--pop3s", "127.0.0.1:0"]);
    }
    cmd.current_dir(dir.path())
        .stdout(std::process::Stdio::piped());
    let mut running = common::spawn_server(cmd, true);
    let (pop3, pop3s) = (running.pop3, running.pop3s.unwrap());
    use std::io::BufRead;
    let mut stdout = std::io::BufReader::new(running.child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let password = common::demo_password(&first);
    let mut hint = String::new();
    stdout.read_line(&mut hint).unwrap();
    if defaults_free {
        assert_eq!((pop3.port(), pop3s.port()), (1110, 1995));
    }
    assert_eq!(
        hint.trim(),
        format!(
            "Try: curl pop3://demo:{password}@127.0.0.1:{}/1",
            pop3.port()
        )
    );
    let cert = dir.path().join("poplar-data/tls/cert.pem");
    assert!(dir.path().join("poplar-data/tls/key.pem").exists());
    let curl = |args: &[&str]| String::from_utf8(common::curl(args)).unwrap();
    let cert_arg = cert.to_str().unwrap();
    let plain = curl(&[&format!(
        "pop3://demo:{password}@127.0.0.1:{}/1",
        pop3.port()
    )]);
    assert!(plain.contains("Subject: Welcome to Poplar"), "{plain}");
    let stls = curl(&[
        "--ssl-reqd",
        "--cacert",
        cert_arg,
        &format!("pop3://demo:{password}@localhost:{}/1", pop3.port()),
    ]);
    let tls = curl(&[
        "--cacert",
        cert_arg,
        &format!("pop3s://demo:{password}@localhost:{}/1", pop3s.port()),
    ]);
    assert_eq!(stls, plain);
    assert_eq!(tls, plain);
    let script = format!(
        r#"
import poplib, ssl
ctx = ssl.create_default_context(cafile={cert:?})
p = poplib.POP3("localhost", {port}); p.stls(context=ctx); p.user("demo"); p.pass_({password:?})
a = b"\r\n".join(p.retr(1)[1]); p.quit()
s = poplib.POP3_SSL("localhost", {sport}, context=ctx); s.user("demo"); s.pass_({password:?})
b = b"\r\n".join(s.retr(1)[1]); s.quit()
assert a == b and b"Welcome to Poplar" in a, (a, b)
print("ok")
"#,
        cert = cert_arg,
        port = pop3.port(),
        sport = pop3s.port(),
    );
    common::python(&script);
    // The first start says nothing the demo user contradicts a moment later.
    let logs = running.logs.lock().unwrap().join("\n");
    assert!(!logs.contains("nobody can log in"), "{logs}");
    let _ = running.child.kill();
    let _ = running.child.wait();
}

#[test]
fn login_delay_is_advertised_and_enforced() {
    let mut b = ServerBuilder::new();
    b.set("pop3.login_delay", 300);
    let server = b.start();
    server.add_user("alice", "wonderland");
    let (mut c, _) = Client::connect(server.pop3);
    assert!(c.cmd("CAPA").starts_with("+OK"));
    assert!(
        String::from_utf8(c.body())
            .unwrap()
            .contains("\r\nLOGIN-DELAY 300\r\n")
    );
    assert!(c.login("alice", "wonderland").starts_with("+OK Logged in"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let (mut c, _) = Client::connect(server.pop3);
    assert_eq!(
        c.login("alice", "wonderland"),
        "-ERR [LOGIN-DELAY] Logged in too recently; wait before logging in again"
    );
    // A wrong password is still just a wrong password.
    assert!(c.login("alice", "nope").starts_with("-ERR [AUTH]"));
}

#[test]
fn apop_when_enabled() {
    let mut b = ServerBuilder::new();
    b.set("auth.apop", true);
    let server = b.start();
    std::fs::write(
        server.data_dir().join("users"),
        "mrose:{PLAIN}tanstaaf\nhashed:{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$AAAA\n",
    )
    .unwrap();
    let (mut c, greeting) = Client::connect(server.pop3);
    let timestamp = greeting.rsplit(' ').next().unwrap().to_owned();
    assert!(
        timestamp.starts_with('<') && timestamp.ends_with('>') && timestamp.contains('@'),
        "{greeting}"
    );
    assert!(
        !timestamp.contains('='),
        "mpop rejects timestamps containing '='"
    );
    let (_, second) = Client::connect(server.pop3);
    assert_ne!(
        second.rsplit(' ').next().unwrap(),
        timestamp,
        "timestamps must be unique per connection"
    );
    let wrong = pop3_auth::apop::digest(&timestamp, b"wrong");
    assert_eq!(
        c.cmd(&format!("APOP mrose {wrong}")),
        "-ERR [AUTH] Authentication failed"
    );
    let right = pop3_auth::apop::digest(&timestamp, b"tanstaaf");
    assert!(
        c.cmd(&format!("APOP mrose {right}"))
            .starts_with("+OK Logged in")
    );
    assert!(c.cmd("QUIT").starts_with("+OK"));
    // A user whose password is hashed cannot use APOP, and gets the same answer.
    let (mut c, greeting) = Client::connect(server.pop3);
    let ts = greeting.rsplit(' ').next().unwrap().to_owned();
    let digest = pop3_auth::apop::digest(&ts, b"anything");
    assert_eq!(
        c.cmd(&format!("APOP hashed {digest}")),
        "-ERR [AUTH] Authentication failed"
    );
    // curl's APOP.
    assert!(
        server
            .deliver(&["mrose"], b"Subject: apop\r\n\r\nvia APOP\r\n")
            .success()
    );
    let out = common::curl(&[
        "--login-options",
        "AUTH=+APOP",
        &format!("pop3://mrose:tanstaaf@127.0.0.1:{}/1", server.pop3.port()),
    ]);
    assert_eq!(out, b"Subject: apop\r\n\r\nvia APOP\r\n");
}

#[test]
fn global_connection_cap_makes_room_by_closing_the_longest_unauthenticated_connection() {
    let mut b = ServerBuilder::new();
    b.set("limits.max_connections", 2);
    let server = b.start();
    server.add_user("alice", "wonderland");
    server.add_user("bob", "builder");
    let (mut idle, _) = Client::connect(server.pop3);
    let (mut alice, _) = Client::connect(server.pop3);
    assert!(
        alice
            .login("alice", "wonderland")
            .starts_with("+OK Logged in")
    );
    // At the limit, a newcomer is served and the connection that waited longest without
    // logging in is told why it is closed.
    let (mut bob, greeting) = Client::connect(server.pop3);
    assert!(greeting.starts_with("+OK"), "{greeting}");
    assert_eq!(
        idle.line(),
        "-ERR [SYS/TEMP] Server is at its connection limit and this connection has not logged in; try again shortly"
    );
    assert!(idle.closed_within(Duration::from_secs(5)));
    assert!(bob.login("bob", "builder").starts_with("+OK Logged in"));
    server.wait_for_log("end=\"evicted to make room\"");
    // With everyone logged in, nobody can be evicted: the newcomer is refused.
    let (mut c, refused) = Client::connect(server.pop3);
    assert_eq!(
        refused,
        "-ERR [SYS/TEMP] Server is at its connection limit; try again shortly"
    );
    assert!(c.closed_within(Duration::from_secs(5)));
    assert!(alice.cmd("STAT").starts_with("+OK"));
    assert!(bob.cmd("STAT").starts_with("+OK"));
}

#[test]
fn connections_per_user_are_limited() {
    let mut b = ServerBuilder::new();
    b.set("limits.max_connections_per_user", 2);
    let server = b.start();
    server.add_user("alice", "wonderland");
    let (mut first, _) = Client::connect(server.pop3);
    assert!(
        first
            .login("alice", "wonderland")
            .starts_with("+OK Logged in")
    );
    // The second authenticates, finds the maildrop locked, and lingers.
    let (mut second, _) = Client::connect(server.pop3);
    assert!(
        second
            .login("alice", "wonderland")
            .starts_with("-ERR [IN-USE] Maildrop is locked")
    );
    let (mut third, _) = Client::connect(server.pop3);
    assert_eq!(
        third.login("alice", "wonderland"),
        "-ERR [IN-USE] Too many connections for this user; close some and try again"
    );
    // Once one goes away, the slot is free again.
    drop(second);
    eventually(
        Duration::from_secs(2),
        "the user's slot to be freed",
        || {
            third
                .login("alice", "wonderland")
                .contains("Maildrop is locked")
                .then_some(())
        },
    );
}

#[test]
fn retr_marks_messages_seen_for_imap_clients_unless_configured_off() {
    let server = server_with_alice();
    for m in [
        &b"Subject: one\r\n\r\n1\r\n"[..],
        b"Subject: two\r\n\r\n2\r\n",
    ] {
        assert!(server.deliver(&["alice"], m).success());
    }
    let session = |commands: &[&str]| {
        let (mut c, _) = Client::connect(server.pop3);
        assert!(c.login("alice", "wonderland").starts_with("+OK"));
        assert!(c.cmd("UIDL").starts_with("+OK"));
        let uidls = c.body();
        for cmd in commands {
            assert!(c.cmd(cmd).starts_with("+OK"));
            c.body();
        }
        c.cmd("QUIT");
        uidls
    };
    let before = session(&["RETR 1", "TOP 2 0", "RETR 1"]);
    // RETR moved message 1 to cur/ with the seen flag; TOP left message 2 alone.
    assert_eq!(server.maildir_files("alice", "new").len(), 1);
    let cur = server.maildir_files("alice", "cur");
    assert_eq!(cur.len(), 1);
    assert!(cur[0].ends_with(":2,S"), "{cur:?}");
    // Same UIDLs, and the moved message still reads back.
    assert_eq!(session(&["RETR 1", "RETR 2"]), before);
    assert_eq!(server.maildir_files("alice", "new").len(), 0);

    let mut b = ServerBuilder::new();
    b.set("pop3.mark_seen", false);
    let off = b.start();
    off.add_user("alice", "wonderland");
    assert!(
        off.deliver(&["alice"], b"Subject: x\r\n\r\nx\r\n")
            .success()
    );
    let (mut c, _) = Client::connect(off.pop3);
    assert!(c.login("alice", "wonderland").starts_with("+OK"));
    assert!(c.cmd("RETR 1").starts_with("+OK"));
    c.body();
    c.cmd("QUIT");
    assert_eq!(off.maildir_files("alice", "cur").len(), 0);
    assert_eq!(off.maildir_files("alice", "new").len(), 1);
}

/// A maildrop is read as itself: a symbolic link planted in `new/` (by anyone who can write
/// the Maildir: a shell user, another delivery agent) is never listed or read, and a `new/`
/// that is itself a link to another user's maildrop makes the server refuse the maildrop
/// rather than serve the other one.
#[test]
fn links_planted_in_a_maildir_are_never_followed() {
    let server = server_with_alice();
    server.add_user("bob", "builder");
    assert!(
        server
            .deliver(&["alice"], b"Subject: real\r\n\r\nreal mail\r\n")
            .success()
    );
    assert!(
        server
            .deliver(&["bob"], b"Subject: bob's\r\n\r\nfor bob only\r\n")
            .success()
    );
    let mail = server.data_dir().join("mail/_default_");
    std::os::unix::fs::symlink(
        server.data_dir().join("users"),
        mail.join("alice/Maildir/new/1800000000.M1.planted"),
    )
    .unwrap();
    let (mut c, _) = Client::connect(server.pop3);
    let reply = c.login("alice", "wonderland");
    assert!(
        reply.starts_with("+OK Logged in, maildrop has 1 message "),
        "{reply}"
    );
    assert!(c.cmd("RETR 2").starts_with("-ERR No such message"));
    c.cmd("QUIT");
    server.wait_for_log("skipping a symbolic link, not a message file");

    let bob_new = mail.join("bob/Maildir/new");
    let alice_new = mail.join("alice/Maildir/new");
    std::fs::rename(&alice_new, mail.join("alice/Maildir/new.moved")).unwrap();
    std::os::unix::fs::symlink(&bob_new, &alice_new).unwrap();
    let (mut c, _) = Client::connect(server.pop3);
    let reply = c.login("alice", "wonderland");
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "{reply}");
    server.wait_for_log("is a symbolic link: refusing to use it as part of a Maildir");
}

/// `_default_` is the directory of names without a domain, not a domain a name may give:
/// `alice@_default_` is no second name for alice's maildrop, whether added with `poplar user
/// add` or written into the users file by hand.
#[test]
fn the_internal_domain_is_no_alias() {
    let server = server_with_alice();
    assert!(
        server
            .deliver(&["alice"], b"Subject: private\r\n\r\nalice's\r\n")
            .success()
    );
    let add = server.poplar(&["user", "add", "alice@_default_", "--password-stdin"]);
    assert!(!common::run_with_stdin(add, b"other\n").success());
    let users = server.data_dir().join("users");
    let mut text = std::fs::read_to_string(&users).unwrap();
    text.push_str("alice@_default_:{PLAIN}other\n");
    std::fs::write(&users, text).unwrap();
    let (mut c, _) = Client::connect(server.pop3);
    assert!(
        c.login("alice@_default_", "other")
            .starts_with("-ERR [AUTH]")
    );
    server.wait_for_log("the domain _default_ is reserved");
}

/// APOP timestamps and CRAM-MD5 challenges are unique and tell nothing: no process ID, no count
/// of connections served.
#[test]
fn challenges_reveal_nothing_about_the_server() {
    let mut b = ServerBuilder::new();
    b.set("auth.apop", true);
    b.set(
        "auth.mechanisms",
        toml::Value::Array(vec!["CRAM-MD5".into()]),
    );
    let server = b.start();
    server.add_user_with("alice", "wonderland", &["--schemes", "ARGON2ID,CRAM-MD5"]);
    let pid = server.pid().to_string();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..3 {
        let (mut c, greeting) = Client::connect(server.pop3);
        let stamp = greeting.rsplit(' ').next().unwrap().to_owned();
        let challenge = c.cmd("AUTH CRAM-MD5");
        let challenge = String::from_utf8(
            base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                challenge.strip_prefix("+ ").unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        for id in [&stamp, &challenge] {
            let inner = id.strip_prefix('<').unwrap().strip_suffix(">").unwrap();
            let (random, rest) = inner.split_once('.').unwrap();
            assert_eq!(random.len(), 16, "{id}");
            assert!(random.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
            assert!(rest.ends_with("@test.example"), "{id}");
            assert!(!id.contains(&format!("<{pid}.")), "{id} names the process");
            assert!(seen.insert(id.clone()), "{id} repeated");
        }
    }
}

/// Every file under `dir`, for checking that a command created nothing.
fn tree(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The administrator's first hour: the configuration is found where administrators look for it,
/// a command that writes says which one and where, `check-config` checks everything `serve`
/// would and writes nothing, `--dump` shows every default, and `serve` refuses a wrong
/// configuration with exit 78 before it creates anything.
#[test]
fn configuration_is_found_checked_and_shown_without_side_effects() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().join("somewhere");
    std::fs::create_dir_all(&cwd).unwrap();
    let poplar = |args: &[&str], env: Option<&std::path::Path>| {
        let mut cmd = Command::new(BIN);
        cmd.args(args).current_dir(&cwd).env_remove("POPLAR_CONFIG");
        if let Some(path) = env {
            cmd.env("POPLAR_CONFIG", path);
        }
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let _ = std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"pw\n");
        child.wait_with_output().unwrap()
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    // Nothing named: the embedded default, and check-config creates nothing.
    let out = poplar(&["check-config"], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("the embedded defaults"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("(created on first start)"),
        "{}",
        text(&out)
    );
    assert!(tree(&cwd).is_empty(), "check-config wrote {:?}", tree(&cwd));
    // `user add` there says what it is about to do.
    let out = poplar(&["user", "add", "alice", "--password-stdin"], None);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("the embedded defaults")
            && said.contains(&format!(
                "data directory: {}",
                cwd.join("poplar-data").display()
            ))
            && said.contains("created now"),
        "{said}"
    );

    // $POPLAR_CONFIG is used when --config is not given, -c is short for --config.
    let data = dir.path().join("data");
    let config = dir.path().join("poplar.toml");
    std::fs::write(
        &config,
        format!("data_dir = {:?}\nuser = \"no-such-user-here\"\n", data),
    )
    .unwrap();
    let out = poplar(&["check-config"], Some(&config));
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(text(&out).contains("$POPLAR_CONFIG"), "{}", text(&out));
    assert!(
        text(&out).contains("user = \"no-such-user-here\": no such user"),
        "{}",
        text(&out)
    );
    assert!(!data.exists(), "check-config created the data directory");
    // serve refuses the same configuration before it creates anything, with exit 78.
    let out = poplar(&["serve", "-c", config.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(
        text(&out).contains("nothing was started or created"),
        "{}",
        text(&out)
    );
    assert!(
        !data.exists(),
        "serve created the data directory of a wrong configuration"
    );

    // --dump: every default filled in, in the units administrators write.
    std::fs::write(
        &config,
        format!("data_dir = {:?}\n[limits]\nmax_connections = 200\n", data),
    )
    .unwrap();
    let out = poplar(
        &["check-config", "--dump", "-c", config.to_str().unwrap()],
        None,
    );
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{dump}");
    for line in [
        "max_connections = 200",
        "max_connections_per_ip = 50",
        "failure_delay = \"2s\"",
        "max_message_size = \"64M\"",
        "lmtp_socket_mode = \"0660\"",
        "users_file = ",
        "hostname = ",
    ] {
        assert!(dump.contains(line), "{line}: {dump}");
    }
    let reparsed: toml::Table = dump.parse().unwrap();
    assert!(
        reparsed.contains_key("timeouts"),
        "the dump is a configuration file itself"
    );

    // An error names its cause once.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = poplar(
        &["serve", "-c", config.to_str().unwrap(), "--pop3", &addr],
        None,
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(said.matches("Address already in use").count(), 1, "{said}");
}

/// The welcome message of the embedded default says where the server actually listens and
/// which certificate it actually uses.
#[test]
fn the_welcome_message_describes_what_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let (mut running, password) = common::serve_embedded(dir.path());
    let (pop3, pop3s) = (running.pop3, running.pop3s.unwrap());
    let (mut c, _) = Client::connect(pop3);
    assert!(c.login("demo", &password).starts_with("+OK"));
    assert!(c.cmd("RETR 1").starts_with("+OK"));
    let welcome = String::from_utf8(c.body()).unwrap();
    let line_with = |addr: std::net::SocketAddr| {
        welcome
            .lines()
            .find(|l| l.ends_with(&addr.to_string()))
            .unwrap_or("")
            .to_owned()
    };
    assert!(line_with(pop3).contains("POP3 with STARTTLS"), "{welcome}");
    assert!(line_with(pop3s).contains("POP3 over TLS"), "{welcome}");
    assert!(
        welcome.contains("poplar-data/tls/cert.pem, for localhost"),
        "{welcome}"
    );
    let _ = running.child.kill();
    let _ = running.child.wait();
}

/// `poplar completions` prints scripts the shells accept, and a reader that stops early is no
/// error; `poplar man` writes pages man(1) can format.
#[test]
fn completions_and_manual_pages() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(common::BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("poplar") && script.contains("move-user"),
            "{shell}"
        );
        if shell == "bash" {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("poplar.bash");
            std::fs::write(&file, &script).unwrap();
            assert!(
                Command::new("bash")
                    .arg("-n")
                    .arg(&file)
                    .status()
                    .unwrap()
                    .success()
            );
        }
    }
    let mut early = Command::new(common::BIN)
        .args(["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(early.stdout.take());
    let out = early.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::BIN)
        .args(["man", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let page = dir.path().join("poplar.toml.5");
    let formatted = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(&page)
        .output()
        .unwrap();
    assert!(formatted.status.success());
    assert!(
        formatted.stderr.is_empty(),
        "groff warns: {}",
        String::from_utf8_lossy(&formatted.stderr)
    );
}

/// Under systemd (`Type=notify`), `poplar serve` says READY=1 once listening, keeps STATUS=
/// current, pings the watchdog when `WatchdogSec=` is set, announces a SIGHUP reload with
/// RELOADING=1 (and the monotonic time) and READY=1 after it, and STOPPING=1 at SIGTERM. The
/// test is systemd here: a datagram socket named by NOTIFY_SOCKET.
#[test]
fn systemd_hears_ready_status_watchdog_reload_and_stop() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut b = ServerBuilder::new();
    b.env("NOTIFY_SOCKET", path.to_str().unwrap());
    b.env("WATCHDOG_USEC", "200000");
    let server = b.start();
    let mut seen = Vec::new();
    let until = |want: &str, seen: &mut Vec<String>| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !seen
            .iter()
            .any(|m: &String| m.lines().any(|l| l.starts_with(want)))
        {
            assert!(Instant::now() < deadline, "never {want}: {seen:?}");
            let mut buf = [0u8; 4096];
            if let Ok(n) = socket.recv(&mut buf) {
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    };
    until("READY=1", &mut seen);
    until("STATUS=serving: ", &mut seen);
    until("WATCHDOG=1", &mut seen);
    // STATUS= follows the sessions.
    server.add_user("alice", "wonderland");
    let (mut c, _) = Client::connect(server.pop3);
    assert!(c.login("alice", "wonderland").starts_with("+OK"));
    seen.clear();
    until("STATUS=serving: 1 connections, 1 logged in", &mut seen);
    assert!(c.cmd("QUIT").starts_with("+OK"));
    seen.clear();
    assert!(
        Command::new("kill")
            .args(["-HUP", &server.pid().to_string()])
            .status()
            .unwrap()
            .success()
    );
    until("RELOADING=1", &mut seen);
    let reload = seen
        .iter()
        .find(|m| m.contains("RELOADING=1"))
        .unwrap()
        .clone();
    assert!(reload.contains("MONOTONIC_USEC="), "{reload}");
    seen.retain(|m| {
        !m.contains("RELOADING=1") && !m.starts_with("WATCHDOG") && !m.starts_with("STATUS")
    });
    until("READY=1", &mut seen);
    seen.clear();
    let (status, _dir) = server.stop();
    assert!(status.success());
    until("STOPPING=1", &mut seen);
}

/// `log.format = "json"`: every line a JSON object with the level and the event's fields
/// apart, the session summary among them, and the password nowhere.
#[test]
fn json_logs_carry_each_field_apart_and_no_secret() {
    let mut b = ServerBuilder::new();
    b.set("log.format", "json");
    let server = b.start();
    server.add_user("alice", "s3cret-in-json");
    let (mut c, _) = Client::connect(server.pop3);
    assert!(c.login("alice", "wrong-password").starts_with("-ERR"));
    assert!(c.login("alice", "s3cret-in-json").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let summary = eventually(Duration::from_secs(10), "the session summary", || {
        server
            .logs()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["fields"]["message"] == "session ended" && v["fields"]["user"] == "alice")
    });
    assert_eq!(summary["level"], "INFO");
    let logs = server.logs();
    for line in &logs {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            value["timestamp"].is_string() && value["level"].is_string(),
            "{line}"
        );
        assert!(
            !line.contains("s3cret-in-json") && !line.contains("wrong-password"),
            "{line}"
        );
    }
}

/// `poplar who` lists a live session with its address and listener; `poplar kick` ends it
/// with `-ERR [SYS/TEMP]`, its deletion not applied, and the user can log in again.
#[test]
fn who_shows_sessions_and_kick_ends_them_with_nothing_deleted() {
    let server = ServerBuilder::new().start();
    server.add_user("alice", "wonderland");
    assert!(
        server
            .deliver(&["alice"], b"Subject: keep\r\n\r\nme\r\n")
            .success()
    );
    let (mut c, _) = Client::connect(server.pop3);
    assert!(c.login("alice", "wonderland").starts_with("+OK"));
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    let out = server.poplar(&["who"]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let local = c.local_addr().to_string();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("alice ") && l.contains(&local) && l.contains("POP3")),
        "{table}"
    );
    let json = server.poplar(&["who", "alice", "--json"]).output().unwrap();
    let session: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&json.stdout)
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(session["user"], "alice");
    assert_eq!(session["peer"], local);
    let out = server.poplar(&["kick", "alice"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("ended 1 session"));
    let told = c.line();
    assert!(told.starts_with("-ERR [SYS/TEMP]"), "{told}");
    assert!(c.closed_within(Duration::from_secs(5)));
    let (mut again, _) = Client::connect(server.pop3);
    let reply = eventually(Duration::from_secs(5), "a new login", || {
        let r = again.login("alice", "wonderland");
        r.starts_with("+OK").then_some(r)
    });
    assert!(
        reply.contains("1 message"),
        "the kicked session's DELE was applied: {reply}"
    );
    let none = server.poplar(&["who", "bob"]).output().unwrap();
    assert!(String::from_utf8_lossy(&none.stdout).contains("0 session(s)"));
}

/// The session summary says which listener, TLS version and mechanism, the maildrop's
/// messages/octets before and after (like Dovecot's `del=`/`size=`), and the client's address
/// with its port; every line of a session, the failed login among them, carries its number.
#[test]
fn the_session_summary_tells_the_whole_story() {
    let server = ServerBuilder::new().start();
    server.add_user("alice", "wonderland");
    for body in ["one", "two"] {
        let message = format!("Subject: {body}\r\n\r\n{body}\r\n");
        assert!(server.deliver(&["alice"], message.as_bytes()).success());
    }
    let (mut c, _) = Client::connect_tls(server.pop3s, &server.cert());
    let port = c.local_addr().port();
    assert!(c.login("alice", "not it").starts_with("-ERR"));
    assert!(c.login("alice", "wonderland").starts_with("+OK"));
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let summary = eventually(Duration::from_secs(10), "the summary", || {
        server
            .logs()
            .into_iter()
            .find(|l| l.contains("session ended") && l.contains(&format!(":{port}")))
    });
    let size = |body: &str| format!("Subject: {body}\r\n\r\n{body}\r\n").len();
    for field in [
        "listener=POP3S".to_owned(),
        "tls_version=\"TLSv1.3\"".to_owned(),
        "mechanism=\"USER\"".to_owned(),
        format!("maildrop_before=\"2/{}\"", size("one") + size("two")),
        format!("maildrop_after=\"1/{}\"", size("two")),
        format!("peer=127.0.0.1:{port}"),
    ] {
        assert!(summary.contains(&field), "{field} not in {summary}");
    }
    let id = summary
        .split("session{id=")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap_or_else(|| panic!("no session number in {summary}"))
        .to_owned();
    let logs = server.logs();
    assert!(
        logs.iter()
            .any(|l| l.contains("authentication failed")
                && l.contains(&format!("session{{id={id}}}"))),
        "the failed login does not name session {id}: {logs:?}"
    );
}

/// Listing commands speak JSON on request (`user list`, `check-config --dump`, `expire`), and
/// a reader that stops early (`| head -1`) ends a listing quietly, without a panic.
#[test]
fn listings_in_json_and_a_reader_that_stops_early() {
    let mut b = ServerBuilder::new();
    b.set("pop3.expire", 30);
    let config = b.write_config();
    let poplar = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .args(["--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let passwd: String = (0..20_000)
        .map(|i| format!("user{i}:{{PLAIN}}pw\n"))
        .collect();
    std::fs::create_dir_all(b.data_dir()).unwrap();
    std::fs::write(b.data_dir().join("users"), passwd).unwrap();
    let listed: Vec<serde_json::Value> = poplar(&["user", "list", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 20_000);
    assert_eq!(listed[0]["user"], "user0");
    let dump: serde_json::Value =
        serde_json::from_str(&poplar(&["check-config", "--dump", "--json"])).unwrap();
    assert_eq!(dump["pop3"]["expire"], 30);
    let report: serde_json::Value =
        serde_json::from_str(&poplar(&["expire", "--dry-run", "--json"])).unwrap();
    assert_eq!(report["messages"], 0);
    assert_eq!(report["dry_run"], true);
    // `poplar user list | head -1`.
    let mut list = Command::new(BIN)
        .args(["user", "list", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(list.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert_eq!(first, "user0\n");
    let out = list.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

/// `poplar reload` does what SIGHUP does and says how it went: success, or the reason a
/// broken certificate was refused (exit 1), the server serving on with the previous one.
#[test]
fn reload_over_the_control_socket_reports_its_outcome() {
    let server = ServerBuilder::new().start();
    let out = server.poplar(&["reload"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("reloaded the TLS certificate"));
    let trusted = server.dir().join("trusted.pem");
    std::fs::copy(server.cert(), &trusted).unwrap();
    std::fs::write(server.cert(), "not a certificate\n").unwrap();
    let out = server.poplar(&["reload"]).output().unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("still using the previous certificate"),
        "{said}"
    );
    let (_, greeting) = Client::connect_tls(server.pop3s, &trusted);
    assert!(greeting.starts_with("+OK"), "{greeting}");
}

/// Deliveries are stored with CRLF line ends; one that RETR can send as stored goes out by
/// sendfile, byte for byte what the same message stored with LF by another program gives;
/// `poplar reindex` teaches the index about mail it did not deliver.
#[test]
fn messages_stored_as_sent_go_out_unread_and_the_same_as_lf_stored_ones() {
    let server = server_with_alice();
    let mut lf = b"Subject: large\n\n".to_vec();
    for i in 0..4000 {
        lf.extend_from_slice(format!("line {i}: some text to make the message large\n").as_bytes());
    }
    let crlf = canonical(&lf);
    assert!(server.deliver(&["alice"], &lf).success());
    let maildir = server.data_dir().join("mail/_default_/alice/Maildir");
    let delivered = server.maildir_files("alice", "new");
    assert_eq!(delivered.len(), 1);
    let name = &delivered[0];
    let size = crlf.len();
    assert!(name.ends_with(&format!(",S={size},W={size},V=1")), "{name}");
    assert!(
        std::fs::read(maildir.join("new").join(name)).unwrap() == crlf,
        "not stored with CRLF"
    );
    // The same message stored by another program with LF, and once more with CRLF but no
    // hint in its name, as an older delivery would be.
    std::fs::write(maildir.join("new/1700000000.M1P1.other"), &lf).unwrap();
    std::fs::write(maildir.join("new/1700000001.M1P1.other"), &crlf).unwrap();

    let zero_copy = || {
        let out = server.poplar(&["stats", "--prometheus"]).output().unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("poplar_messages_sent_zero_copy_total "))
            .map_or(0, |v| v.trim().parse::<u64>().unwrap())
    };
    let retrieve_all = || {
        let (mut c, _) = Client::connect(server.pop3);
        assert!(c.login("alice", "wonderland").starts_with("+OK"));
        assert_eq!(c.cmd("STAT"), format!("+OK 3 {}", 3 * size));
        let mut got = Vec::new();
        for n in 1..=3 {
            assert_eq!(c.cmd(&format!("RETR {n}")), format!("+OK {size} octets"));
            got.push(c.body());
        }
        // TOP keeps the encoder, whatever the file.
        assert!(c.cmd("TOP 1 1").starts_with("+OK"));
        assert_eq!(
            c.body(),
            b"Subject: large\r\n\r\nline 0: some text to make the message large\r\n"
        );
        assert!(c.cmd("QUIT").starts_with("+OK"));
        got
    };
    let before = zero_copy();
    for message in retrieve_all() {
        assert!(message == crlf, "a message differs from its canonical form");
    }
    assert_eq!(
        zero_copy() - before,
        1,
        "only the hinted delivery is known to be verbatim"
    );

    // Reindexed, the CRLF file written by the other program is sent unread too.
    let out = server.poplar(&["reindex", "alice"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("alice: 3 messages, 2 sent as stored, 0 sizes corrected"),
        "{said}"
    );
    let before = zero_copy();
    for message in retrieve_all() {
        assert!(message == crlf, "a message differs from its canonical form");
    }
    assert_eq!(zero_copy() - before, 2);
    // A maildrop in use is left for later, with a non-zero exit.
    let (mut c, _) = Client::connect(server.pop3);
    assert!(c.login("alice", "wonderland").starts_with("+OK"));
    let out = server.poplar(&["reindex", "alice"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("in use by a POP3 session"));
    drop(c);
    // Every user of the users file, one without mail among them.
    server.add_user("bob", "builder");
    let out = server.poplar(&["reindex", "--all"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("bob: 0 messages"), "{said}");
    assert!(
        said.contains("2 maildrops, 3 messages, 2 sent as stored, 0 sizes corrected, 0 not done"),
        "{said}"
    );
}
