//! SDPS host maildrops on the Maildir store: one file per message, one copy per recipient,
//! views per address, and the deletion rule (a copy at a time; the file with its last copy).

#![allow(clippy::unwrap_used, missing_docs)]

use pop3_store::{MailStore, MaildirStore, Maildrop, MessageSource};

fn store(root: &std::path::Path) -> MaildirStore {
    MaildirStore::new(root, "test.example").with_sdps_hosts(&["Example.NET".to_owned()])
}

fn deliver(s: &MaildirStore, sender: &str, to: &[&str], body: &str) {
    let recipients: Vec<String> = to.iter().map(|t| (*t).to_owned()).collect();
    s.deliver_to_host_blocking("example.net", sender, &recipients, &mut body.as_bytes())
        .unwrap();
}

/// (recipient, UIDL) of each message a name sees.
async fn listing(s: &MaildirStore, name: &str) -> Vec<(String, String)> {
    let (_drop, list) = s.open(name).await.unwrap();
    list.into_iter()
        .map(|m| (m.envelope.map(|e| e.recipient).unwrap_or_default(), m.uidl))
        .collect()
}

fn files(root: &std::path::Path) -> usize {
    let dir = root.join("_default_/example.net/Maildir");
    ["new", "cur"]
        .iter()
        .map(|d| std::fs::read_dir(dir.join(d)).map_or(0, Iterator::count))
        .sum()
}

#[tokio::test]
async fn each_recipient_has_a_copy_and_deleting_one_never_takes_anothers() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path());
    deliver(
        &s,
        "carol@example.org",
        &["john@example.net"],
        "Subject: one\r\n\r\nfor john\r\n",
    );
    deliver(
        &s,
        "",
        &["mary@example.net", "John@Example.NET", "kim@example.net"],
        "Subject: all\r\n\r\nbcc\r\n",
    );
    assert_eq!(files(root.path()), 2, "stored once per message");

    let whole = listing(&s, "example.net").await;
    let recipients: Vec<&str> = whole.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        recipients,
        [
            "john@example.net",
            "mary@example.net",
            "john@example.net",
            "kim@example.net"
        ]
    );
    let john = listing(&s, "john@example.net").await;
    assert_eq!(john.len(), 2);
    assert_eq!(
        listing(&s, "JOHN+example.net").await,
        john,
        "john+host is john@host"
    );
    assert_eq!(listing(&s, "mary@example.net").await.len(), 1);
    assert!(listing(&s, "nobody@example.net").await.is_empty());
    // UIDLs: the file's own for one recipient, one per copy otherwise, the same in every view.
    let uidls: std::collections::HashSet<&String> = whole.iter().map(|(_, u)| u).collect();
    assert_eq!(uidls.len(), 4);
    assert!(john.iter().all(|c| whole.contains(c)));

    // John retrieves and deletes both of his: the shared message stays for mary and kim.
    let (mut drop, list) = s.open("john@example.net").await.unwrap();
    let body = drop.read(1).await.unwrap().read_to_end().await.unwrap();
    // Each copy names its own recipient, and only them.
    assert_eq!(
        body,
        b"Delivered-To: john@example.net\r\nSubject: all\r\n\r\nbcc\r\n"
    );
    assert_eq!(list[1].size, body.len() as u64);
    assert_eq!(list[1].envelope.as_ref().unwrap().sender, "");
    drop.commit(vec![0, 1]).await.unwrap();
    assert_eq!(
        files(root.path()),
        1,
        "john's own message is gone, the shared one is not"
    );
    assert!(listing(&s, "john@example.net").await.is_empty());
    assert_eq!(listing(&s, "mary@example.net").await.len(), 1);
    assert_eq!(listing(&s, "example.net").await.len(), 2);

    // The host owner deletes mary's copy; kim's remains until kim's is deleted too.
    let (drop, list) = s.open("example.net").await.unwrap();
    let marys = list
        .iter()
        .position(|m| m.envelope.as_ref().unwrap().recipient == "mary@example.net")
        .unwrap();
    drop.commit(vec![marys]).await.unwrap();
    assert_eq!(files(root.path()), 1);
    let (drop, list) = s.open("kim@example.net").await.unwrap();
    assert_eq!(list.len(), 1);
    drop.commit(vec![0]).await.unwrap();
    assert_eq!(files(root.path()), 0, "the last copy takes the file");
    assert!(listing(&s, "example.net").await.is_empty());
}

#[tokio::test]
async fn one_session_at_a_time_on_a_host_whatever_its_view() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path());
    deliver(&s, "a@b", &["john@example.net"], "x\r\n");
    let held = s.open("john@example.net").await.unwrap();
    for name in ["example.net", "john@example.net", "mary+example.net"] {
        assert!(
            matches!(s.open(name).await, Err(pop3_store::StoreError::InUse)),
            "{name}"
        );
    }
    drop(held);
    assert!(s.open("example.net").await.is_ok());
}

/// Mail put into the host's Maildir by another program has no envelope: the host owner sees
/// it, nobody's view does.
#[tokio::test]
async fn mail_without_an_envelope_is_the_host_owners() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path());
    s.deliver_blocking(&["example.net"], &mut &b"plain\r\n"[..])
        .unwrap();
    let whole = listing(&s, "example.net").await;
    assert_eq!(whole.len(), 1);
    assert_eq!(whole[0].0, "");
    assert!(listing(&s, "john@example.net").await.is_empty());
    let (drop, _) = s.open("example.net").await.unwrap();
    drop.commit(vec![0]).await.unwrap();
    assert_eq!(files(root.path()), 0);
}

/// A commit that recorded the last copy deleted but stopped before unlinking: the next session
/// finishes it.
#[tokio::test]
async fn an_interrupted_commit_is_finished_by_the_next_session() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path());
    deliver(&s, "a@b", &["john@example.net"], "x\r\n");
    let (_, list) = s.open("example.net").await.unwrap();
    let log = root
        .path()
        .join("_default_/example.net/Maildir/poplar-envelopes");
    let text = std::fs::read_to_string(&log).unwrap();
    let base = text.split('\t').nth(1).unwrap().to_owned();
    assert_eq!(list.len(), 1);
    std::fs::write(&log, format!("{text}X\t{base}\t0\n")).unwrap();
    assert!(listing(&s, "example.net").await.is_empty());
    assert_eq!(files(root.path()), 0);
}

/// A large copy (read from the file in chunks) starts with its Delivered-To line too, and its
/// size counts it.
#[tokio::test]
async fn large_copies_carry_their_trace_line_and_exact_size() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path());
    let body = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(200_000));
    deliver(&s, "a@b", &["kim@example.net", "lee@example.net"], &body);
    let (mut drop, list) = s.open("lee@example.net").await.unwrap();
    let got = drop.read(0).await.unwrap().read_to_end().await.unwrap();
    let expected = format!("Delivered-To: lee@example.net\r\n{body}");
    assert_eq!(got, expected.as_bytes());
    assert_eq!(list[0].size, expected.len() as u64);
}
