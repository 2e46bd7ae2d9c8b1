//! Interoperability with real clients from Debian packages: python3 poplib and curl.
//! `scripts/test` (the README's test command) installs them; these tests fail (not skip) when a client is missing.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::dovecot::{Dovecot, as_mail_user, uidls};
use common::{ServerBuilder, canonical, corpus, curl, tool};
use std::path::Path;
use std::process::Command;

fn server_with_corpus() -> (common::Server, tempfile::TempDir) {
    let server = ServerBuilder::new().start();
    server.add_user("alice", "wonder land");
    let dir = tempfile::tempdir().unwrap();
    for (i, (_, m)) in corpus().into_iter().enumerate() {
        assert!(server.deliver(&["alice"], &m).success());
        std::fs::write(dir.path().join(format!("{:02}.eml", i + 1)), m).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    (server, dir)
}

#[test]
fn python_poplib() {
    let (server, corpus_dir) = server_with_corpus();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/poplib_suite.py");
    let out = tool("python3")
        .arg(script)
        .args([
            "localhost",
            &server.pop3.port().to_string(),
            &server.pop3s.port().to_string(),
        ])
        .arg(server.cert())
        .args(["alice", "wonder land"])
        .arg(corpus_dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "poplib suite failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        server.logs().join("\n")
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
    eprintln!("{}", stdout.trim());
}

#[test]
fn curl_plain_stls_pop3s_and_sasl() {
    let (server, _corpus_dir) = server_with_corpus();
    let messages = corpus();
    let cert = server.cert();
    let cert = cert.to_str().unwrap();
    let plain = format!(
        "pop3://alice:wonder%20land@127.0.0.1:{}",
        server.pop3.port()
    );
    let stls = format!(
        "pop3://alice:wonder%20land@localhost:{}",
        server.pop3.port()
    );
    let pop3s = format!(
        "pop3s://alice:wonder%20land@localhost:{}",
        server.pop3s.port()
    );
    // Listing: "N size" lines.
    let list = String::from_utf8(curl(&[&format!("{plain}/")])).unwrap();
    let expected: String = messages
        .iter()
        .enumerate()
        .map(|(i, (_, m))| format!("{} {}\r\n", i + 1, canonical(m).len()))
        .collect();
    assert_eq!(list, expected);
    // Retrieval: dot-stuffing undone, bytes exact, over each transport.
    for (i, (name, m)) in messages.iter().enumerate() {
        let n = i + 1;
        assert!(
            curl(&[&format!("{plain}/{n}")]) == canonical(m),
            "pop3:// {name}"
        );
    }
    for (i, (name, m)) in messages.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let n = i + 1;
        assert!(
            curl(&["--ssl-reqd", "--cacert", cert, &format!("{stls}/{n}")]) == canonical(m),
            "STLS {name}"
        );
        assert!(
            curl(&["--cacert", cert, &format!("{pop3s}/{n}")]) == canonical(m),
            "pop3s:// {name}"
        );
    }
    // SASL PLAIN, with and without the initial response.
    for extra in [
        &["--login-options", "AUTH=PLAIN"][..],
        &["--login-options", "AUTH=PLAIN", "--sasl-ir"][..],
    ] {
        let mut args: Vec<&str> = extra.to_vec();
        let url = format!("{plain}/3");
        args.push(&url);
        assert!(curl(&args) == canonical(&messages[2].1));
    }
    // A wrong password fails cleanly.
    let out = tool("curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            &format!("pop3://alice:wrong@127.0.0.1:{}/", server.pop3.port()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // A custom command: DELE with -I (no body expected), then the message is gone.
    curl(&["-I", "-X", "DELE 1", &format!("{plain}/")]);
    let list = String::from_utf8(curl(&[&format!("{plain}/")])).unwrap();
    assert_eq!(list.lines().count(), messages.len() - 1, "{list}");
}

#[test]
fn dovecot_and_poplar_share_a_maildir_with_the_same_uidls() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = root.join("data");
    std::fs::create_dir_all(data.join("mail")).unwrap();
    std::fs::write(data.join("users"), "alice:{PLAIN}pw\n").unwrap();
    let config = root.join("poplar.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[listen]\npop3 = [\"127.0.0.1:0\"]\npop3s = []\n[tls]\nenabled = false\n[auth]\nfailure_delay = \"50ms\"\n",
            data
        ),
    )
    .unwrap();
    assert!(
        Command::new("chmod")
            .arg("755")
            .arg(root)
            .status()
            .unwrap()
            .success()
    );
    assert!(
        Command::new("chown")
            .args(["-R", "nobody:nogroup"])
            .arg(&data)
            .status()
            .unwrap()
            .success()
    );
    let deliver = |msg: &[u8]| {
        let mut cmd = as_mail_user(common::BIN);
        cmd.args(["deliver", "alice", "--config"]).arg(&config);
        assert!(common::run_with_stdin(cmd, msg).success());
    };
    for i in 1..=3 {
        deliver(format!("Subject: {i}\r\n\r\nmessage {i}\r\n").as_bytes());
    }
    // Poplar, as the mail user.
    let mut cmd = as_mail_user(common::BIN);
    cmd.args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null());
    let mut running = common::spawn_server(cmd, false);
    let poplar = running.pop3;
    let dovecot = Dovecot::start(root, &data.join("mail"), "");
    let dovecot_addr: std::net::SocketAddr = ([127, 0, 0, 1], dovecot.port).into();

    // Poplar indexes first; Dovecot must show the same UIDLs.
    let first = uidls(poplar, "alice", "pw");
    assert_eq!(first.len(), 3);
    assert_eq!(
        uidls(dovecot_addr, "alice", "pw"),
        first,
        "Dovecot shows other UIDLs"
    );
    // Dovecot indexes a new message first; Poplar must agree.
    deliver(b"Subject: 4\r\n\r\nindexed by Dovecot first\r\n");
    let second = uidls(dovecot_addr, "alice", "pw");
    assert_eq!(second.len(), 4);
    assert_eq!(
        uidls(poplar, "alice", "pw"),
        second,
        "Poplar shows other UIDLs"
    );
    // A deletion through Poplar is seen by Dovecot; the other UIDLs do not change.
    let (mut c, _) = common::Client::connect(poplar);
    c.login("alice", "pw");
    assert_eq!(c.cmd("DELE 2"), "+OK Message 2 deleted");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let expected: Vec<String> = [0, 2, 3].iter().map(|&i| second[i].clone()).collect();
    assert_eq!(uidls(dovecot_addr, "alice", "pw"), expected);
    assert_eq!(uidls(poplar, "alice", "pw"), expected);

    // Large messages stored the way RETR sends them (CRLF, Poplar sends them by sendfile) and
    // one that needs dot-stuffing: both servers list the same sizes and send the same octets.
    let mut big = b"Subject: big\n\n".to_vec();
    for i in 0..6000 {
        big.extend_from_slice(
            format!("line {i} of a message delivered with LF line ends\n").as_bytes(),
        );
    }
    deliver(&big);
    let mut dotted = big.clone();
    dotted.extend_from_slice(b".a line starting with a dot\n");
    deliver(&dotted);
    let stored: Vec<String> = std::fs::read_dir(data.join("mail/_default_/alice/Maildir/new"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        stored.iter().any(|n| n.ends_with(",V=1")),
        "no delivery was stored as sent: {stored:?}"
    );
    let everything = |addr| {
        let (mut c, _) = common::Client::connect(addr);
        assert!(c.login("alice", "pw").starts_with("+OK"));
        assert!(c.cmd("LIST").starts_with("+OK"));
        let list = String::from_utf8(c.body()).unwrap();
        let messages: Vec<(String, Vec<u8>)> = list
            .lines()
            .map(|l| {
                let (n, size) = l.split_once(' ').unwrap();
                assert!(c.cmd(&format!("RETR {n}")).starts_with("+OK"));
                (size.to_owned(), c.body())
            })
            .collect();
        assert!(c.cmd("QUIT").starts_with("+OK"));
        messages
    };
    let from_poplar = everything(poplar);
    assert_eq!(from_poplar.len(), 5);
    assert_eq!(from_poplar[3].1, common::canonical(&big));
    assert_eq!(from_poplar[4].1, common::canonical(&dotted));
    for (size, message) in &from_poplar {
        assert_eq!(size, &message.len().to_string());
    }
    assert!(
        everything(dovecot_addr) == from_poplar,
        "Dovecot lists or sends something else"
    );
    let _ = running.child.kill();
    let _ = running.child.wait();
}

/// RFC 6856 LANG with python's poplib sending raw commands: every response a client can
/// provoke, in English and Bulgarian (same statuses, codes and numbers; Bulgarian text
/// Cyrillic), on a server whose configured language is English and on one whose is Bulgarian.
#[test]
fn lang_through_python_poplib() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/lang_suite.py");
    for default in ["en", "bg"] {
        let mut builder = ServerBuilder::new();
        builder.set("pop3.language", default);
        // The walk makes a dozen mistakes on purpose in one session.
        builder.set("limits.max_bad_commands", 20);
        let server = builder.start();
        server.add_user("alice", "wonder land");
        assert!(server.deliver(&["alice"], &corpus()[0].1).success());
        let out = tool("python3")
            .arg(&script)
            .args(["127.0.0.1", &server.pop3.port().to_string()])
            .args(["alice", "wonder land", default])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "LANG suite (default {default}) failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("default {default}: {}", stdout.trim());
    }
}
