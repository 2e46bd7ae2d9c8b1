//! RFC 2449 EXPIRE as real policy: advertised per user, retrieval recorded at QUIT, messages
//! removed N days after retrieval by `poplar expire` and by the server's own purge, `EXPIRE 0`
//! at the end of the session, and mail never retrieved never removed.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{Client, ServerBuilder};
use std::time::{SystemTime, UNIX_EPOCH};

const DAY: u64 = 86_400;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn policy(b: &mut ServerBuilder) {
    b.set("pop3.expire", 30);
    let overrides: toml::Table =
        toml::from_str("zero = 0\nkeeper = \"never\"\n\"example.org\" = 7\n").unwrap();
    b.set("pop3.expire_overrides", overrides);
}

/// Capability lines after `CAPA`.
fn capa(c: &mut Client) -> Vec<String> {
    assert!(c.cmd("CAPA").starts_with("+OK"));
    let body = String::from_utf8(c.body()).unwrap();
    body.lines().map(str::to_owned).collect()
}

fn stat(server: &common::Server, user: &str) -> usize {
    let (mut c, _) = Client::connect(server.pop3);
    assert!(c.login(user, "pw").starts_with("+OK"));
    let n = c.cmd("STAT").split(' ').nth(1).unwrap().parse().unwrap();
    c.cmd("QUIT");
    n
}

/// Logs in, RETRs these messages, and ends with QUIT (or drops the connection).
fn retrieve(server: &common::Server, user: &str, which: &[usize], quit: bool) -> Vec<String> {
    let (mut c, _) = Client::connect(server.pop3);
    assert!(c.login(user, "pw").starts_with("+OK"));
    let after = capa(&mut c);
    for n in which {
        assert!(c.cmd(&format!("RETR {n}")).starts_with("+OK"));
        c.body();
    }
    if quit {
        assert!(c.cmd("QUIT").starts_with("+OK"));
    }
    after
}

fn expire(server: &common::Server, args: &[&str]) -> String {
    let mut all = vec!["expire"];
    all.extend_from_slice(args);
    let out = server.poplar(&all).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn retrieved_mail_expires_after_its_period_and_unretrieved_mail_never_does() {
    let mut b = ServerBuilder::new();
    policy(&mut b);
    let server = b.start();
    for user in ["alice", "zero", "keeper", "bob@example.org"] {
        server.add_user(user, "pw");
        for i in 1..=3 {
            let message = format!("Subject: {i}\r\n\r\nfor {user}\r\n");
            assert!(server.deliver(&[user], message.as_bytes()).success());
        }
    }
    // Before login the default, tagged USER because it varies; after login the user's own.
    let (mut c, _) = Client::connect(server.pop3);
    assert!(capa(&mut c).contains(&"EXPIRE 30 USER".to_owned()));
    drop(c);
    let after = retrieve(&server, "alice", &[1, 2], true);
    assert!(after.contains(&"EXPIRE 30".to_owned()), "{after:?}");
    // A session that retrieves message 3 but never says QUIT starts no clock.
    retrieve(&server, "alice", &[3], false);
    let keeper = retrieve(&server, "keeper", &[1, 2, 3], true);
    assert!(keeper.contains(&"EXPIRE NEVER".to_owned()), "{keeper:?}");
    retrieve(&server, "bob@example.org", &[1], true);

    // EXPIRE 0: what the session retrieved is gone at its QUIT, the rest stays.
    let zero = retrieve(&server, "zero", &[2], true);
    assert!(zero.contains(&"EXPIRE 0".to_owned()), "{zero:?}");
    assert_eq!(stat(&server, "zero"), 2);

    // Not yet due: nothing happens.
    let t = now();
    let out = expire(&server, &["--as-of", &(t + 6 * DAY).to_string()]);
    assert!(out.contains("0 messages (0 octets) removed"), "{out}");
    // A dry run a month on names the two due messages of alice and bob's one, removes nothing.
    let month = (t + 31 * DAY).to_string();
    let out = expire(&server, &["--dry-run", "--as-of", &month]);
    assert!(out.contains("3 messages"), "{out}");
    assert!(out.contains("due for removal"), "{out}");
    assert_eq!(stat(&server, "alice"), 3);
    // A maildrop in use is skipped and reported.
    let (mut busy, _) = Client::connect(server.pop3);
    assert!(busy.login("alice", "pw").starts_with("+OK"));
    let out = expire(&server, &["--as-of", &month]);
    assert!(
        out.contains("in use by a POP3 session, to be done next time: alice"),
        "{out}"
    );
    busy.cmd("QUIT");
    let out = expire(&server, &["--as-of", &month]);
    assert!(out.contains("2 messages"), "{out}");
    assert!(out.contains("expired: retrieved 30+ days ago"), "{out}");
    // Message 3 was never retrieved in a session that ended with QUIT: it stays, forever.
    assert_eq!(stat(&server, "alice"), 1);
    let far = (t + 10_000 * DAY).to_string();
    expire(&server, &["--as-of", &far]);
    assert_eq!(stat(&server, "alice"), 1);
    assert_eq!(stat(&server, "keeper"), 3);
    assert_eq!(stat(&server, "bob@example.org"), 2);
    assert_eq!(stat(&server, "zero"), 2);
}

#[test]
fn the_server_purges_on_its_own() {
    let mut b = ServerBuilder::new();
    policy(&mut b);
    let server = b.start();
    server.add_user("alice", "pw");
    for i in 1..=2 {
        assert!(
            server
                .deliver(&["alice"], format!("Subject: {i}\r\n\r\nx\r\n").as_bytes())
                .success()
        );
    }
    retrieve(&server, "alice", &[1], true);
    // Pretend the retrieval was 31 days ago, then restart the server: it purges at start.
    let record = server
        .data_dir()
        .join("mail/_default_/alice/Maildir/poplar-retrieved");
    let text = std::fs::read_to_string(&record).unwrap();
    let (secs, base) = text.trim_end().split_once(' ').unwrap();
    let old = secs.parse::<u64>().unwrap() - 31 * DAY;
    std::fs::write(&record, format!("{old} {base}\n")).unwrap();
    let data = server.data_dir();
    let (_, dir) = server.stop();
    let mut b = ServerBuilder::new();
    policy(&mut b);
    b.set("data_dir", data.to_str().unwrap());
    let server = b.start();
    server.wait_for_log("retention purge done");
    assert!(
        server
            .logs()
            .iter()
            .any(|l| l.contains("expired: retrieved 30+ days ago"))
    );
    assert_eq!(stat(&server, "alice"), 1);
    assert!(
        !record.exists(),
        "the record of removed messages is dropped"
    );
    drop(dir);
}
