//! Mail from a real Postfix (Debian's package, a private instance in a temporary directory)
//! over LMTP into Poplar, sent with swaks over SMTP and read back over POP3: delivered byte for
//! byte, unknown users bounced, temporary failures (including a full maildrop) deferred and
//! delivered on retry.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::postfix::Postfix;
use common::{Client, ServerBuilder, eventually, tool};
use std::time::Duration;

/// The messages in a maildrop, by POP3, each checked against its LIST size.
fn messages(server: &common::Server, user: &str, password: &str) -> Vec<Vec<u8>> {
    let (mut c, _) = Client::connect(server.pop3);
    assert!(c.login(user, password).starts_with("+OK"));
    let count: usize = c.cmd("STAT").split(' ').nth(1).unwrap().parse().unwrap();
    let mut out = Vec::new();
    for n in 1..=count {
        let size: usize = c
            .cmd(&format!("LIST {n}"))
            .split(' ')
            .nth(2)
            .unwrap()
            .parse()
            .unwrap();
        assert!(c.cmd(&format!("RETR {n}")).starts_with("+OK"));
        let body = c.body();
        assert_eq!(body.len(), size, "RETR {n} differs from LIST");
        out.push(body);
    }
    c.cmd("QUIT");
    out
}

#[test]
fn postfix_delivers_over_lmtp_bounces_unknown_users_and_retries_temporary_failures() {
    let mut b = ServerBuilder::new();
    b.lmtp();
    b.set("quota.overrides.dave.messages", 1);
    let server = b.start();
    server.add_user("alice", "wonderland");
    server.add_user("carol", "pass");
    server.add_user("dave", "pass");
    let lmtp = server.lmtp_addr();
    let postfix = Postfix::start(&format!("inet:{lmtp}"));
    let dir = tempfile::tempdir().unwrap();

    // A message with a leading dot, a lone dot and 8-bit text arrives byte for byte, under the
    // one Received: header Postfix adds.
    let body = "From: sender@example.org\r\nSubject: gr\u{fc}\u{df}e\r\n\r\n.leading dot\r\n.\r\n..two\r\nlast line";
    let file = dir.path().join("m1.eml");
    std::fs::write(&file, body).unwrap();
    postfix.send("alice@example.org", &file);
    let got = eventually(Duration::from_secs(20), "delivery to alice", || {
        let m = messages(&server, "alice", "wonderland");
        (!m.is_empty()).then_some(m)
    });
    assert_eq!(got.len(), 1);
    let text = String::from_utf8(got[0].clone()).unwrap();
    assert!(text.starts_with("Received: from client.test"), "{text}");
    assert!(text.ends_with(&format!("{body}\r\n")), "{text}");

    // An unknown user is refused by Poplar at RCPT, and Postfix bounces it.
    postfix.send("nobody@example.org", &file);
    eventually(Duration::from_secs(20), "the bounce", || {
        let log = postfix.log();
        (log.contains("<nobody@example.org>") && log.contains("status=bounced")).then_some(())
    });
    assert!(postfix.log().contains("550 5.1.1"), "{}", postfix.log());

    // carol's maildrop cannot be created (a file is in its way): a temporary failure, which
    // Postfix defers and delivers once the problem is gone.
    let carol = server.data_dir().join("mail/_default_/carol");
    std::fs::create_dir_all(carol.parent().unwrap()).unwrap();
    std::fs::write(&carol, "in the way").unwrap();
    postfix.send("carol@example.org", &file);
    eventually(Duration::from_secs(20), "the deferral", || {
        let log = postfix.log();
        (log.contains("to=<carol@example.org>") && log.contains("status=deferred")).then_some(())
    });
    assert!(postfix.log().contains("451 4.3.0"), "{}", postfix.log());
    std::fs::remove_file(&carol).unwrap();
    postfix.flush();
    let got = eventually(Duration::from_secs(20), "delivery to carol", || {
        let m = messages(&server, "carol", "pass");
        (!m.is_empty()).then_some(m)
    });
    assert_eq!(got.len(), 1);
    assert!(String::from_utf8_lossy(&got[0]).ends_with(&format!("{body}\r\n")));
    // alice still has exactly one message: nothing was delivered twice.
    assert_eq!(messages(&server, "alice", "wonderland").len(), 1);

    // dave may keep one message: the second is deferred with 452 4.2.2 (mailbox full) and
    // delivered once he has made room.
    postfix.send("dave@example.org", &file);
    eventually(Duration::from_secs(20), "dave's first message", || {
        (messages(&server, "dave", "pass").len() == 1).then_some(())
    });
    postfix.send("dave@example.org", &file);
    eventually(Duration::from_secs(20), "the over-quota deferral", || {
        let log = postfix.log();
        log.lines()
            .any(|l| {
                l.contains("to=<dave@example.org>")
                    && l.contains("status=deferred")
                    && l.contains("452 4.2.2")
            })
            .then_some(())
    });
    let (mut c, _) = Client::connect(server.pop3);
    assert!(c.login("dave", "pass").starts_with("+OK"));
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    postfix.flush();
    eventually(
        Duration::from_secs(20),
        "dave's second message after the retry",
        || (messages(&server, "dave", "pass").len() == 1).then_some(()),
    );
    let sent = |log: String| {
        log.lines()
            .filter(|l| l.contains("to=<dave@example.org>") && l.contains("status=sent"))
            .count()
    };
    assert_eq!(sent(postfix.log()), 2, "{}", postfix.log());
}

/// The README's own wiring: Postfix's lmtp(8), running as `postfix`, delivers over a unix
/// socket that only the service user and the socket's group may use (mode 0660, group
/// `postfix` by `listen.lmtp_socket_group`), while any other local user is refused.
#[test]
fn postfix_delivers_over_a_unix_socket_only_its_group_may_use() {
    let run = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        run.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let socket = run.path().join("lmtp");
    let mut b = ServerBuilder::new();
    b.set(
        "listen.lmtp",
        toml::Value::Array(vec![format!("unix:{}", socket.display()).into()]),
    );
    b.set("listen.lmtp_socket_group", "postfix");
    let server = b.start();
    server.add_user("alice", "wonderland");
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o660
    );
    let postfix_gid = nix::unistd::Group::from_name("postfix")
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), postfix_gid);
    // Another local user cannot connect.
    let out = tool("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .args([
            "python3",
            "-c",
            "import socket,sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])",
        ])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(!out.status.success(), "nobody connected to the LMTP socket");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    // Postfix can.
    let postfix = Postfix::start(&format!("unix:{}", socket.display()));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.eml");
    std::fs::write(&file, "Subject: over the socket\r\n\r\nhello").unwrap();
    postfix.send("alice@example.org", &file);
    let got = eventually(Duration::from_secs(20), "delivery over the socket", || {
        let m = messages(&server, "alice", "wonderland");
        (!m.is_empty()).then_some(m)
    });
    assert!(String::from_utf8_lossy(&got[0]).contains("Subject: over the socket"));
}
