//! LMTP intake (RFC 2033) against the real binary: per-recipient replies, pipelining, size
//! limits, byte-exact storage read back over POP3, a unix socket, and Python's smtplib.LMTP as
//! a real client.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{Client, ServerBuilder, canonical, eventually, tool};
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Reads one LMTP reply (all its lines); fails when the connection closed.
fn reply(r: &mut BufReader<TcpStream>) -> String {
    let reply = common::smtp_reply(r);
    assert!(!reply.is_empty(), "connection closed");
    reply
}

/// Connects to LMTP: the writing half, the reading half and the greeting.
fn connect(addr: &str) -> (TcpStream, BufReader<TcpStream>, String) {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let greeting = reply(&mut r);
    (w, r, greeting)
}

fn lmtp_server(extra: &[(&str, toml::Value)]) -> (common::Server, String) {
    let mut b = ServerBuilder::new();
    b.lmtp();
    b.set("limits.max_message_size", "1k");
    for (k, v) in extra {
        b.set(k, v.clone());
    }
    let server = b.start();
    server.add_user("alice", "wonderland");
    server.add_user("bob@example.org", "builder");
    let addr = server.lmtp_addr();
    (server, addr)
}

#[test]
fn pipelined_transaction_gets_one_reply_per_recipient_and_stores_bytes_exactly() {
    let (server, addr) = lmtp_server(&[]);
    let (mut w, mut r, greeting) = connect(&addr);
    assert!(greeting.starts_with("220 test.example LMTP"));
    // Everything up to DATA in one write (PIPELINING).
    w.write_all(
        b"LHLO mx.test\r\nMAIL FROM:<sender@example.net> SIZE=200 BODY=8BITMIME\r\n\
          RCPT TO:<alice@example.org>\r\nRCPT TO:<nobody@example.org>\r\n\
          RCPT TO:<bob@example.org>\r\nDATA\r\n",
    )
    .unwrap();
    let lhlo = reply(&mut r);
    for ext in ["PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SIZE 1024"] {
        assert!(lhlo.contains(ext), "{lhlo}");
    }
    assert!(reply(&mut r).starts_with("250 2.1.0"));
    assert!(reply(&mut r).starts_with("250 2.1.5 <alice@example.org>"));
    assert!(reply(&mut r).starts_with("550 5.1.1 <nobody@example.org>"));
    assert!(reply(&mut r).starts_with("250 2.1.5 <bob@example.org>"));
    assert!(reply(&mut r).starts_with("354"));
    let stored: &[u8] = "Subject: héllo\r\n\r\n.leading dot\r\n.\r\nbare\nlf\r\nno end".as_bytes();
    let mut wire = Vec::new();
    for line in stored.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
    }
    wire.extend_from_slice(b"\r\n.\r\n");
    w.write_all(&wire).unwrap();
    // One reply per accepted recipient, in RCPT order.
    assert!(reply(&mut r).starts_with("250 2.1.5 <alice@example.org> Delivered"));
    assert!(reply(&mut r).starts_with("250 2.1.5 <bob@example.org> Delivered"));
    // Larger than limits.max_message_size: refused at MAIL, or after DATA for each recipient.
    w.write_all(b"MAIL FROM:<s@x> SIZE=5000\r\n").unwrap();
    assert!(reply(&mut r).starts_with("552 5.3.4"));
    w.write_all(b"MAIL FROM:<s@x>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
        .unwrap();
    for _ in 0..3 {
        reply(&mut r);
    }
    w.write_all(&[b"x".repeat(2000), b"\r\n.\r\n".to_vec()].concat())
        .unwrap();
    assert!(reply(&mut r).starts_with("552 5.3.4"));
    w.write_all(b"HELO x\r\nRSET\r\nQUIT\r\n").unwrap();
    assert!(reply(&mut r).starts_with("500 5.5.1"));
    assert!(reply(&mut r).starts_with("250"));
    assert!(reply(&mut r).starts_with("221"));

    // The message reads back exactly: stored as sent (the "no end" line got the CRLF that ends
    // DATA), served in canonical form.
    let mut expected = stored.to_vec();
    expected.extend_from_slice(b"\r\n");
    for (user, password) in [("alice", "wonderland"), ("bob@example.org", "builder")] {
        let (mut c, _) = Client::connect(server.pop3);
        assert!(c.login(user, password).starts_with("+OK"));
        assert_eq!(
            c.cmd("STAT"),
            format!("+OK 1 {}", canonical(&expected).len())
        );
        assert!(c.cmd("RETR 1").starts_with("+OK"));
        assert_eq!(c.body(), canonical(&expected));
        c.cmd("QUIT");
    }
    // Spool files are removed.
    let tmp = server.data_dir().join("tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
}

#[test]
fn python_smtplib_delivers_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("lmtp.sock");
    let (server, _) = lmtp_server(&[(
        "listen.lmtp",
        toml::Value::Array(vec![format!("unix:{}", socket.display()).into()]),
    )]);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(
        mode & 0o777,
        0o660,
        "whoever can connect can deliver to anyone: owner and group only"
    );
    let script = format!(
        r#"
import smtplib
s = smtplib.LMTP({path:?})
code, _ = s.ehlo_or_helo_if_needed() or (0, b"")
refused = s.sendmail("sender@example.net", ["alice@example.org"], b"Subject: from python\r\n\r\nhello\r\n")
assert refused == {{}}, refused
s.quit()
print("sent")
"#,
        path = socket.to_str().unwrap()
    );
    let out = tool("python3").args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut c, _) = Client::connect(server.pop3);
    assert!(c.login("alice", "wonderland").starts_with("+OK"));
    assert!(c.cmd("RETR 1").starts_with("+OK"));
    assert_eq!(c.body(), b"Subject: from python\r\n\r\nhello\r\n");
}

#[test]
fn lmtp_on_a_public_address_is_refused_at_start() {
    let mut b = ServerBuilder::new();
    b.set("listen.lmtp", toml::Value::Array(vec!["0.0.0.0:0".into()]));
    let config = b.write_config();
    let out = std::process::Command::new(common::BIN)
        .args(["check-config", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.contains("not a loopback address") && out.contains("LMTP has no authentication"),
        "{out}"
    );
}

#[test]
fn overlong_lines_and_broken_transfers_deliver_nothing_and_leave_nothing() {
    let (server, addr) = lmtp_server(&[]);
    let (mut w, mut r, _) = connect(&addr);
    w.write_all(format!("LHLO {}\r\nNOOP\r\n", "x".repeat(5000)).as_bytes())
        .unwrap();
    assert!(reply(&mut r).starts_with("500 5.5.6"));
    assert!(reply(&mut r).starts_with("250"), "the session goes on");
    // The connection drops in the middle of DATA: nothing is delivered.
    w.write_all(b"LHLO x\r\nMAIL FROM:<s@x>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
        .unwrap();
    for _ in 0..4 {
        reply(&mut r);
    }
    w.write_all(b"Subject: cut\r\n\r\nhalf a mess").unwrap();
    drop((w, r));
    eventually(Duration::from_secs(5), "the session to end", || {
        server
            .logs()
            .iter()
            .any(|l| l.contains("LMTP session ended") && l.contains("inside DATA"))
            .then_some(())
    });
    let (mut c, _) = Client::connect(server.pop3);
    assert!(c.login("alice", "wonderland").starts_with("+OK"));
    assert_eq!(c.cmd("STAT"), "+OK 0 0");
    let tmp = server.data_dir().join("tmp");
    assert_eq!(
        std::fs::read_dir(tmp).unwrap().count(),
        0,
        "spool left behind"
    );
}

#[test]
fn delivery_headers_are_added_only_when_configured_and_per_recipient() {
    let (server, addr) = lmtp_server(&[
        ("delivery.return_path", true.into()),
        ("delivery.delivered_to", true.into()),
    ]);
    let (mut w, mut r, _) = connect(&addr);
    w.write_all(
        b"LHLO x\r\nMAIL FROM:<sender@example.net>\r\nRCPT TO:<alice@example.org>\r\n\
          RCPT TO:<bob@example.org>\r\nDATA\r\nSubject: s\r\n\r\nbody\r\n.\r\nQUIT\r\n",
    )
    .unwrap();
    let mut all = String::new();
    for _ in 0..8 {
        all.push_str(&reply(&mut r));
    }
    assert!(
        all.ends_with("221 2.0.0 test.example closing connection\r\n"),
        "{all}"
    );
    let read = |user: &str, password: &str| {
        let (mut c, _) = Client::connect(server.pop3);
        assert!(c.login(user, password).starts_with("+OK"));
        let n = c
            .cmd("STAT")
            .split(' ')
            .nth(1)
            .unwrap()
            .parse::<usize>()
            .unwrap();
        assert!(c.cmd(&format!("RETR {n}")).starts_with("+OK"));
        String::from_utf8(c.body()).unwrap()
    };
    assert_eq!(
        read("alice", "wonderland"),
        "Return-Path: <sender@example.net>\r\nDelivered-To: alice@example.org\r\nSubject: s\r\n\r\nbody\r\n"
    );
    // Stored as it came (CRLF) and named as one RETR can send unchanged.
    let names: Vec<String> = ["new", "cur"]
        .iter()
        .flat_map(|sub| server.maildir_files("alice", sub))
        .collect();
    assert!(
        names.iter().all(|n| n.contains(",V=1")),
        "an LMTP delivery not stored as sent: {names:?}"
    );
    assert_eq!(
        read("bob@example.org", "builder"),
        "Return-Path: <sender@example.net>\r\nDelivered-To: bob@example.org\r\nSubject: s\r\n\r\nbody\r\n"
    );
    // poplar deliver does the same; its LF line ends are stored as CRLF (delivery.save_crlf).
    let mut deliver = server.poplar(&["deliver", "-f", "pipe@example.net", "alice"]);
    deliver.stdin(std::process::Stdio::piped());
    let status = common::run_with_stdin(deliver, b"Subject: lf\n\nbody\n");
    assert!(status.success());
    let stored = std::fs::read_dir(server.data_dir().join("mail/_default_/alice/Maildir/new"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .find(|m| m.ends_with(b"Subject: lf\r\n\r\nbody\r\n"))
        .unwrap();
    assert_eq!(
        stored,
        b"Return-Path: <pipe@example.net>\r\nDelivered-To: alice\r\nSubject: lf\r\n\r\nbody\r\n"
    );
    // The spool the message passed through is gone.
    let tmp = server.data_dir().join("mail/_default_/alice/Maildir/tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
}

#[test]
fn a_full_maildrop_refuses_mail_temporarily_or_permanently_until_room_is_made() {
    let overrides: toml::Table =
        toml::from_str("alice = { messages = 1 }\n\"example.org\" = { storage = \"200\" }\n")
            .unwrap();
    let (server, addr) = lmtp_server(&[("quota.overrides", overrides.into())]);
    let message = format!("Subject: q\r\n\r\n{}\r\n", "x".repeat(130));
    let send = |w: &mut TcpStream, r: &mut BufReader<TcpStream>| {
        w.write_all(
            format!(
                "MAIL FROM:<s@example.net>\r\nRCPT TO:<alice@example.org>\r\n\
                 RCPT TO:<bob@example.org>\r\nDATA\r\n{message}.\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        for _ in 0..4 {
            reply(r);
        }
        (reply(r), reply(r))
    };
    let (mut w, mut r, _) = connect(&addr);
    w.write_all(b"LHLO x\r\n").unwrap();
    reply(&mut r);
    let (alice, bob) = send(&mut w, &mut r);
    assert!(alice.starts_with("250 2.1.5"), "{alice}");
    assert!(bob.starts_with("250 2.1.5"), "{bob}");
    // alice may keep one message, bob's domain 200 octets: both are full now, for now.
    let (alice, bob) = send(&mut w, &mut r);
    assert_eq!(
        alice,
        "452 4.2.2 <alice@example.org> Mailbox full (1 of 1 messages)\r\n"
    );
    assert_eq!(
        bob,
        "452 4.2.2 <bob@example.org> Mailbox full (146 of 200 octets)\r\n"
    );
    // poplar deliver: exit 75 (try later), or 77 (bounce) when the refusal is permanent.
    let deliver = |config: &std::path::Path| {
        let mut cmd = common::tool(env!("CARGO_BIN_EXE_poplar"));
        cmd.args(["deliver", "--config", config.to_str().unwrap(), "alice"]);
        cmd.stdin(std::process::Stdio::piped());
        common::run_with_stdin(cmd, message.as_bytes()).code()
    };
    let config = server.dir().join("poplar.toml");
    assert_eq!(deliver(&config), Some(75));
    let mut table: toml::Table =
        toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    table["quota"]
        .as_table_mut()
        .unwrap()
        .insert("permanent".into(), true.into());
    let permanent = server.dir().join("permanent.toml");
    std::fs::write(&permanent, toml::to_string(&table).unwrap()).unwrap();
    assert_eq!(deliver(&permanent), Some(77));
    // Usage is kept in Maildir++'s maildirsize, which Dovecot's quota plugin shares.
    let maildir = server.data_dir().join("mail/_default_/alice/Maildir");
    assert_eq!(
        std::fs::read_to_string(maildir.join("maildirsize")).unwrap(),
        "0S,1C\n146 1\n"
    );
    // alice makes room over POP3; the next delivery is accepted.
    let (mut c, _) = Client::connect(server.pop3);
    assert!(c.login("alice", "wonderland").starts_with("+OK"));
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert!(
        std::fs::read_to_string(maildir.join("maildirsize"))
            .unwrap()
            .ends_with("146 1\n-146 -1\n")
    );
    let (alice, bob) = send(&mut w, &mut r);
    assert!(alice.starts_with("250 2.1.5"), "{alice}");
    assert!(bob.starts_with("452 4.2.2"), "{bob}");
}

#[test]
fn quota_rules_in_the_users_file_apply_at_once() {
    let (server, addr) = lmtp_server(&[]);
    server.add_user("ivy", "pw");
    let users = server.data_dir().join("users");
    let text = std::fs::read_to_string(&users).unwrap();
    let with_rule: String = text
        .lines()
        .map(|l| {
            if l.starts_with("ivy:") {
                format!("{l}::::::userdb_quota_rule=*:messages=1\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&users, &with_rule).unwrap();
    let deliver = |n: u32| {
        let (mut w, mut r, _) = connect(&addr);
        w.write_all(
            format!(
                "LHLO x\r\nMAIL FROM:<s@example.net>\r\nRCPT TO:<ivy@example.org>\r\nDATA\r\nSubject: {n}\r\n\r\nx\r\n.\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        for _ in 0..4 {
            reply(&mut r);
        }
        reply(&mut r)
    };
    assert!(deliver(1).starts_with("250 2.1.5"));
    assert!(
        deliver(2).starts_with("452 4.2.2"),
        "Dovecot's quota rule in the users file"
    );
    // The rule removed: the users file is re-read, the next delivery fits.
    std::fs::write(&users, text).unwrap();
    assert!(deliver(3).starts_with("250 2.1.5"));
}

/// A web page can make a browser POST to the LMTP port, with LMTP commands in the body. The
/// HTTP request line ends the connection before any of them is read, and a peer that keeps
/// sending what is not LMTP is cut off after a few errors.
#[test]
fn cross_protocol_requests_deliver_nothing() {
    let (server, addr) = lmtp_server(&[]);
    let (mut w, mut r, _) = connect(&addr);
    let body = "LHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\nSubject: forged\r\n\r\nvia a browser\r\n.\r\nQUIT\r\n";
    let _ = write!(
        w,
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let reply = reply(&mut r);
    assert!(reply.starts_with("421 4.7.0"), "{reply}");
    assert!(
        common::smtp_reply(&mut r).is_empty(),
        "the connection stays open"
    );
    // Garbage without an HTTP request line: five errors, then the connection ends.
    let (mut w, mut r, _) = connect(&addr);
    for i in 0..5 {
        let _ = write!(w, "Host: 127.0.0.{i}\r\n");
    }
    let mut all = String::new();
    loop {
        let line = common::smtp_reply(&mut r);
        if line.is_empty() {
            break;
        }
        all.push_str(&line);
    }
    assert!(all.contains("421 4.7.0 Too many errors"), "{all}");
    // Nothing reached alice.
    let (mut c, _) = Client::connect(server.pop3);
    assert!(
        c.login("alice", "wonderland")
            .contains("maildrop has 0 messages")
    );
}
