//! The Maildir backend against a real directory tree.

#![allow(clippy::unwrap_used, missing_docs)]

use pop3_proto::canonical_size;
use pop3_store::maildir::uidlist::Uidlist;
use pop3_store::{MailStore, MaildirStore, Maildrop, MessageInfo, MessageSource, StoreError};
use std::fs;
use std::path::{Path, PathBuf};

/// A store keeping line ends as given, so that tests can compare stored bytes with what they
/// delivered (the default, CRLF, has its own test).
fn store() -> (tempfile::TempDir, MaildirStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = MaildirStore::new(dir.path().join("mail"), "testhost").with_save_crlf(false);
    (dir, store)
}

#[tokio::test]
async fn deliveries_are_stored_as_retr_sends_them_and_listed_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let store = MaildirStore::new(dir.path().join("mail"), "testhost");
    let messages: [&[u8]; 4] = [
        b"Subject: bare\n\nlf only\n",
        b"Subject: mixed\r\n\nlf and crlf\r\n",
        b"Subject: no newline\n\nlast line",
        b"Subject: dot\n\n.leading dot\n",
    ];
    for m in messages {
        deliver(&store, "alice", m);
    }
    let (mut drop, listing) = store.open("alice").await.unwrap();
    for (i, m) in messages.iter().enumerate() {
        let crlf: Vec<u8> = {
            let mut out = Vec::new();
            for (j, &b) in m.iter().enumerate() {
                if b == b'\n' && (j == 0 || m[j - 1] != b'\r') {
                    out.push(b'\r');
                }
                out.push(b);
            }
            out
        };
        assert_eq!(listing[i].size, canonical_size(m), "message {i}");
        assert_eq!(read_all(&mut drop, i).await, crlf, "message {i}");
    }
    // Small messages are read into memory whole: nothing to hand to the kernel.
    for i in 0..4 {
        assert!(drop.read(i).await.unwrap().verbatim_file().is_none());
    }
    drop.commit(Vec::new()).await.unwrap();
    let big = b"Subject: big\n\nline\n".repeat(10_000);
    deliver(&store, "alice", &big);
    let (mut session, listing) = store.open("alice").await.unwrap();
    let reader = session.read(4).await.unwrap();
    let file = reader
        .verbatim_file()
        .expect("a large message stored as sent");
    assert_eq!(file.metadata().unwrap().len(), listing[4].size);
    // Only the first two go on the wire as stored: the others need a final CRLF or stuffing.
    let list = Uidlist::parse(
        &fs::read_to_string(store.maildir_path("alice").unwrap().join("dovecot-uidlist")).unwrap(),
    )
    .0
    .unwrap();
    let flags: Vec<bool> = list.records.iter().map(|r| r.verbatim()).collect();
    assert_eq!(flags, [true, true, false, false, true]);
    session.commit(Vec::new()).await.unwrap();

    // Indexed by a Poplar that knew nothing of V: the name's hint still counts.
    let index = store.maildir_path("alice").unwrap().join("dovecot-uidlist");
    let mut list = list;
    for rec in &mut list.records {
        rec.ext.retain(|(key, _)| *key != b'V');
    }
    fs::write(&index, list.serialize()).unwrap();
    let fresh = MaildirStore::new(store.root(), "testhost");
    let (mut again, _) = fresh.open("alice").await.unwrap();
    assert!(again.read(4).await.unwrap().verbatim_file().is_some());
}

fn deliver(store: &MaildirStore, user: &str, msg: &[u8]) {
    store.deliver_blocking(&[user], &mut &msg[..]).unwrap();
    // Distinct arrival order even within one second.
    std::thread::sleep(std::time::Duration::from_millis(2));
}

/// Writes a file the way Postfix's virtual(8) does: no size hints in the name.
fn foreign_delivery(maildir: &Path, name: &str, msg: &[u8]) -> PathBuf {
    fs::create_dir_all(maildir.join("tmp")).unwrap();
    fs::create_dir_all(maildir.join("cur")).unwrap();
    fs::create_dir_all(maildir.join("new")).unwrap();
    let path = maildir.join("new").join(name);
    fs::write(&path, msg).unwrap();
    path
}

async fn read_all<M: Maildrop>(drop: &mut M, index: usize) -> Vec<u8> {
    drop.read(index).await.unwrap().read_to_end().await.unwrap()
}

fn uidls(listing: &[MessageInfo]) -> Vec<String> {
    listing.iter().map(|m| m.uidl.clone()).collect()
}

#[tokio::test]
async fn deliver_then_open_lists_exact_sizes_and_dovecot_uidls() {
    let (_t, store) = store();
    let messages: [&[u8]; 4] = [
        b"Subject: one\r\n\r\nbody\r\n",
        b"Subject: bare\n\nlf only\n",
        b"Subject: no newline\n\nlast line",
        b".\r\n..\r\n",
    ];
    for m in messages {
        deliver(&store, "alice", m);
    }
    let (mut drop, listing) = store.open("alice").await.unwrap();
    assert_eq!(listing.len(), 4);
    let list = Uidlist::parse(
        &fs::read_to_string(store.maildir_path("alice").unwrap().join("dovecot-uidlist")).unwrap(),
    )
    .0
    .unwrap();
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(listing[i].size, canonical_size(m), "message {i}");
        assert_eq!(
            read_all(&mut drop, i).await,
            *m,
            "stored bytes are exactly what was given"
        );
        assert_eq!(
            listing[i].uidl,
            format!("{:08x}{:08x}", i + 1, list.uid_validity)
        );
    }
    // Files carry Dovecot's size hints.
    let names: Vec<String> = fs::read_dir(store.maildir_path("alice").unwrap().join("new"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().any(|n| n.ends_with(",S=30,W=32")), "{names:?}");
}

#[tokio::test]
async fn foreign_files_without_hints_are_measured() {
    let (_t, store) = store();
    let maildir = store.maildir_path("bob@example.org").unwrap();
    assert!(maildir.ends_with("example.org/bob/Maildir"));
    foreign_delivery(&maildir, "1700000001.M1P1.mx", b"A: b\n\nline\n.dot\nend");
    foreign_delivery(&maildir, "1700000002.M1P1.mx,S=10,W=12", b"A: b\n\nxyzw");
    let (_d, listing) = store.open("bob@example.org").await.unwrap();
    assert_eq!(listing[0].size, canonical_size(b"A: b\n\nline\n.dot\nend"));
    // ,W= is trusted for the body and the last octet decides the final CRLF.
    assert_eq!(listing[1].size, 14);
}

#[tokio::test]
async fn second_open_uses_the_index_not_the_files() {
    let (_t, store) = store();
    deliver(&store, "alice", b"Subject: a\n\nshort\n");
    let (drop, first) = store.open("alice").await.unwrap();
    drop.commit(vec![]).await.unwrap();
    // Rewrite the file behind the index's back: the listing still comes from the index.
    let new = store.maildir_path("alice").unwrap().join("new");
    let file = fs::read_dir(&new).unwrap().next().unwrap().unwrap().path();
    fs::write(&file, vec![b'x'; 5000]).unwrap();
    let (_d, second) = store.open("alice").await.unwrap();
    assert_eq!(first, second);
}

#[tokio::test]
async fn uidls_are_stable_and_never_reused() {
    let (_t, store) = store();
    for i in 0..3 {
        deliver(&store, "alice", format!("Subject: {i}\n\n{i}\n").as_bytes());
    }
    let (drop, before) = store.open("alice").await.unwrap();
    drop.commit(vec![2]).await.unwrap();
    deliver(&store, "alice", b"Subject: new\n\nnew\n");
    let (drop, after) = store.open("alice").await.unwrap();
    assert_eq!(uidls(&after)[..2], uidls(&before)[..2]);
    assert_eq!(after.len(), 3);
    assert!(
        !uidls(&before).contains(&after[2].uidl),
        "UID of a deleted message reused"
    );
    drop.commit(vec![]).await.unwrap();
    // Restart: a new store object over the same directory sees the same UIDLs.
    let again = MaildirStore::new(store.root(), "otherhost");
    let (_d, reopened) = again.open("alice").await.unwrap();
    assert_eq!(uidls(&reopened), uidls(&after));
}

#[tokio::test]
async fn one_session_per_maildrop_and_the_lock_dies_with_the_session() {
    let (_t, store) = store();
    deliver(&store, "alice", b"x\n");
    let (first, _) = store.open("alice").await.unwrap();
    assert!(matches!(store.open("alice").await, Err(StoreError::InUse)));
    // Another user is not affected.
    store.open("bob").await.unwrap();
    drop(first);
    store.open("alice").await.unwrap();
}

#[tokio::test]
async fn commit_removes_only_marked_messages_and_spares_new_mail() {
    let (_t, store) = store();
    for i in 0..4 {
        deliver(&store, "alice", format!("Subject: {i}\n\n{i}\n").as_bytes());
    }
    let (drop, listing) = store.open("alice").await.unwrap();
    deliver(
        &store,
        "alice",
        b"Subject: during\n\narrived during the session\n",
    );
    drop.commit(vec![0, 2]).await.unwrap();
    let (mut d, after) = store.open("alice").await.unwrap();
    assert_eq!(
        uidls(&after)[..2],
        [listing[1].uidl.clone(), listing[3].uidl.clone()]
    );
    assert_eq!(after.len(), 3);
    assert_eq!(
        read_all(&mut d, 2).await,
        b"Subject: during\n\narrived during the session\n"
    );
}

#[tokio::test]
async fn dropping_without_commit_removes_nothing() {
    let (_t, store) = store();
    deliver(&store, "alice", b"keep me\n");
    let (drop, listing) = store.open("alice").await.unwrap();
    std::mem::drop(drop);
    let (_d, again) = store.open("alice").await.unwrap();
    assert_eq!(listing, again);
}

#[tokio::test]
async fn renamed_files_are_found_again() {
    let (_t, store) = store();
    deliver(&store, "alice", b"Subject: moved\n\nbody\n");
    let (mut drop, _) = store.open("alice").await.unwrap();
    // An IMAP client marks the message seen meanwhile: new/X becomes cur/X:2,S.
    let maildir = store.maildir_path("alice").unwrap();
    let entry = fs::read_dir(maildir.join("new"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let name = entry.file_name().into_string().unwrap();
    fs::rename(
        entry.path(),
        maildir.join("cur").join(format!("{name}:2,S")),
    )
    .unwrap();
    assert_eq!(read_all(&mut drop, 0).await, b"Subject: moved\n\nbody\n");
    drop.commit(vec![0]).await.unwrap();
    assert_eq!(fs::read_dir(maildir.join("cur")).unwrap().count(), 0);
}

#[tokio::test]
async fn externally_removed_files_leave_the_listing() {
    let (_t, store) = store();
    deliver(&store, "alice", b"one\n");
    deliver(&store, "alice", b"two\n");
    let (d, listing) = store.open("alice").await.unwrap();
    d.commit(vec![]).await.unwrap();
    let new = store.maildir_path("alice").unwrap().join("new");
    // Found by content: file names order by arrival only when compared as numbers.
    let first = fs::read_dir(&new)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| fs::read(p).unwrap() == b"one\n")
        .unwrap();
    fs::remove_file(first).unwrap();
    let (_d, after) = store.open("alice").await.unwrap();
    assert_eq!(after, listing[1..]);
}

#[tokio::test]
async fn dovecot_index_and_saved_uidls_are_honoured() {
    let (_t, store) = store();
    let maildir = store.maildir_path("carol").unwrap();
    foreign_delivery(&maildir, "1700000001.M1P1.mx,S=7,W=8", b"Hello\r\n");
    foreign_delivery(&maildir, "1700000002.M1P1.mx", b"World\n");
    foreign_delivery(&maildir, "1700000003.M1P1.mx", b"Late\n");
    fs::write(
        maildir.join("dovecot-uidlist"),
        "3 V1234 N20 G00112233445566778899aabbccddeeff\n\
         7 :1700000001.M1P1.mx,S=7,W=8\n\
         9 P0000000beef W6 :1700000002.M1P1.mx\n",
    )
    .unwrap();
    let (d, listing) = store.open("carol").await.unwrap();
    assert_eq!(
        uidls(&listing),
        ["00000007000004d2", "0000000beef", "00000014000004d2"]
    );
    d.commit(vec![]).await.unwrap();
    let text = fs::read_to_string(maildir.join("dovecot-uidlist")).unwrap();
    assert!(
        text.starts_with("3 V1234 N21 G00112233445566778899aabbccddeeff\n"),
        "{text}"
    );
    assert!(
        text.contains("9 P0000000beef W6 X7 :1700000002.M1P1.mx\n"),
        "{text}"
    );
}

#[tokio::test]
async fn one_delivery_reaches_every_recipient() {
    let (_t, store) = store();
    let d = store
        .deliver_blocking(&["a", "b@x.org"], &mut &b"shared\n"[..])
        .unwrap();
    assert_eq!(d.size, 7);
    for user in ["a", "b@x.org"] {
        let (mut drop, listing) = store.open(user).await.unwrap();
        assert_eq!(listing.len(), 1);
        assert_eq!(read_all(&mut drop, 0).await, b"shared\n");
        let tmp = store.maildir_path(user).unwrap().join("tmp");
        assert_eq!(
            fs::read_dir(tmp).unwrap().count(),
            0,
            "no leftovers in tmp/"
        );
    }
}

#[tokio::test]
async fn empty_and_invalid_deliveries_are_refused() {
    let (_t, store) = store();
    assert!(matches!(
        store.deliver_blocking(&["a"], &mut &b""[..]),
        Err(StoreError::EmptyMessage)
    ));
    assert_eq!(
        fs::read_dir(store.maildir_path("a").unwrap().join("tmp"))
            .unwrap()
            .count(),
        0
    );
    for bad in ["../b", "/etc/passwd", "a/../../b", "x@.."] {
        assert!(matches!(
            store.deliver_blocking(&[bad], &mut &b"x"[..]),
            Err(StoreError::InvalidMailbox(..))
        ));
        assert!(matches!(
            store.open(bad).await,
            Err(StoreError::InvalidMailbox(..))
        ));
    }
}

#[tokio::test]
async fn corrupt_index_lines_do_not_lose_other_uidls() {
    let (_t, store) = store();
    let maildir = store.maildir_path("dave").unwrap();
    foreign_delivery(&maildir, "1700000001.M1P1.mx", b"a\n");
    foreign_delivery(&maildir, "1700000002.M1P1.mx", b"b\n");
    fs::write(
        maildir.join("dovecot-uidlist"),
        "3 V99 N5 G0\n3 X2 :1700000001.M1P1.mx\ngarbage line\n4 X2 :1700000002.M1P1.mx\n",
    )
    .unwrap();
    let (_d, listing) = store.open("dave").await.unwrap();
    assert_eq!(uidls(&listing), ["0000000300000063", "0000000400000063"]);
}

#[tokio::test]
async fn a_failed_removal_is_reported_and_loses_nothing_else() {
    let (_t, store) = store();
    for i in 0..3 {
        deliver(&store, "alice", format!("Subject: {i}\n\n{i}\n").as_bytes());
    }
    let (drop, listing) = store.open("alice").await.unwrap();
    // Make message 2 impossible to unlink: its name is now a non-empty directory.
    let new = store.maildir_path("alice").unwrap().join("new");
    let victim = fs::read_dir(&new)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| fs::read(p).unwrap() == b"Subject: 1\n\n1\n")
        .unwrap();
    let saved = fs::read(&victim).unwrap();
    fs::remove_file(&victim).unwrap();
    fs::create_dir(&victim).unwrap();
    fs::write(victim.join("x"), b"").unwrap();
    let err = drop.commit(vec![0, 1, 2]).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::PartialCommit {
                failed: 1,
                total: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_temporary());
    // The others are gone; the failed one is still indexed and comes back once readable.
    fs::remove_dir_all(&victim).unwrap();
    fs::write(&victim, saved).unwrap();
    let (_d, after) = store.open("alice").await.unwrap();
    assert_eq!(after, listing[1..2]);
}

#[tokio::test]
async fn deliveries_abandoned_in_tmp_are_cleaned_after_36_hours() {
    let (t, store) = store();
    deliver(&store, "alice", b"Subject: kept\r\n\r\nx\r\n");
    let tmp = store.maildir_path("alice").unwrap().join("tmp");
    let old = tmp.join("1700000000.M1P1.dead");
    let recent = tmp.join("1700000001.M2P2.writing");
    for path in [&old, &recent] {
        fs::write(path, b"partial").unwrap();
    }
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(48 * 3600);
    fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();
    let (_drop, listing) = store.open("alice").await.unwrap();
    assert_eq!(listing.len(), 1);
    assert!(!old.exists(), "an abandoned delivery stays in tmp/");
    assert!(recent.exists(), "a delivery in progress was removed");
    drop(t);
}

#[tokio::test]
async fn limits_bound_message_size_and_snapshot_length() {
    let (t, store) = store();
    let store = store.with_limits(pop3_store::StoreLimits {
        max_message_size: 100,
        max_snapshot_messages: 3,
    });
    let too_big = [b'x'; 101];
    assert!(matches!(
        store.deliver_blocking(&["alice"], &mut &too_big[..]),
        Err(StoreError::MessageTooLarge { limit: 100 })
    ));
    let tmp = store.maildir_path("alice").unwrap().join("tmp");
    assert_eq!(
        fs::read_dir(&tmp).unwrap().count(),
        0,
        "a refused message stayed in tmp/"
    );
    for i in 0..5 {
        deliver(
            &store,
            "alice",
            format!("Subject: {i}\r\n\r\n{i}\r\n").as_bytes(),
        );
    }
    // The newest three, in order; the oldest two wait.
    let (mut maildrop, listing) = store.open("alice").await.unwrap();
    assert_eq!(listing.len(), 3);
    assert_eq!(read_all(&mut maildrop, 0).await, b"Subject: 2\r\n\r\n2\r\n");
    assert_eq!(read_all(&mut maildrop, 2).await, b"Subject: 4\r\n\r\n4\r\n");
    maildrop.commit(vec![0, 1, 2]).await.unwrap();
    let (mut maildrop, listing) = store.open("alice").await.unwrap();
    assert_eq!(listing.len(), 2);
    assert_eq!(read_all(&mut maildrop, 0).await, b"Subject: 0\r\n\r\n0\r\n");
    drop(t);
}

/// Sets the modification time of the Maildir's directories and index ten seconds back, as if
/// nothing had touched the maildrop for a while (a settled maildrop whose index may be kept).
fn settle(maildir: &Path) {
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
    for name in ["new", "cur", "dovecot-uidlist"] {
        fs::File::open(maildir.join(name))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
}

/// Opens, lists and closes; returns the listing.
async fn listing(store: &MaildirStore, user: &str) -> Vec<MessageInfo> {
    let (drop, listing) = store.open(user).await.unwrap();
    drop.commit(Vec::new()).await.unwrap();
    listing
}

#[tokio::test]
async fn a_kept_index_is_never_stale() {
    let (_t, store) = store();
    let maildir = store.maildir_path("big").unwrap();
    for i in 0..1200 {
        foreign_delivery(
            &maildir,
            &format!("1700000000.M{i}P1.other,S=20"),
            format!("Subject: {i:>8}\r\n\r\n").as_bytes(),
        );
    }
    let first = listing(&store, "big").await;
    assert_eq!(first.len(), 1200);
    settle(&maildir);
    // Opened once more to be kept, then served from memory: the same listing as a store that
    // never saw this maildrop.
    assert_eq!(listing(&store, "big").await, first);
    assert_eq!(listing(&store, "big").await, first);
    let fresh = MaildirStore::new(store.root(), "testhost");
    assert_eq!(listing(&fresh, "big").await, first);

    // A delivery by another program appears in the next session.
    foreign_delivery(&maildir, "1700000001.Mnew.other", b"Subject: new\r\n\r\n");
    let after = listing(&store, "big").await;
    assert_eq!(after.len(), 1201);
    settle(&maildir);
    assert_eq!(listing(&store, "big").await, after);

    // Another program moves messages to cur/ and flags them (as Dovecot's IMAP does): still
    // listed, still readable.
    let cur = maildir.join("cur");
    for entry in fs::read_dir(maildir.join("new")).unwrap().take(700) {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        fs::rename(&path, cur.join(format!("{name}:2,S"))).unwrap();
    }
    let (mut drop, renamed) = store.open("big").await.unwrap();
    assert_eq!(renamed, after);
    for i in [0, 600, 1199, 1200] {
        assert!(!read_all(&mut drop, i).await.is_empty());
    }
    drop.commit(Vec::new()).await.unwrap();
    settle(&maildir);
    assert_eq!(listing(&store, "big").await, after);

    // Another program removes a file: gone from the next listing.
    let gone = fs::read_dir(&cur).unwrap().next().unwrap().unwrap().path();
    fs::remove_file(gone).unwrap();
    assert_eq!(listing(&store, "big").await.len(), 1200);

    // Deletions by a session take effect in the next one, whatever was kept.
    settle(&maildir);
    let (drop, before) = store.open("big").await.unwrap();
    drop.commit(vec![0, 1, 2]).await.unwrap();
    let (drop, now) = store.open("big").await.unwrap();
    assert_eq!(now, before[3..]);
    drop.commit(Vec::new()).await.unwrap();

    // Dovecot appending to the index in place (same file, same second) is seen too: here a
    // migrated UIDL for the last message, added by rewriting the index with an extra field.
    settle(&maildir);
    let kept = listing(&store, "big").await;
    let index = maildir.join("dovecot-uidlist");
    let text = fs::read_to_string(&index).unwrap();
    let last = text.lines().last().unwrap().to_owned();
    let (uid, rest) = last.split_once(' ').unwrap();
    let edited = text.replace(&last, &format!("{uid} Pmigrated-uidl {rest}"));
    fs::write(&index, edited).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
    fs::File::open(&index).unwrap().set_modified(old).unwrap();
    let seen = listing(&store, "big").await;
    assert_eq!(seen.last().unwrap().uidl, "migrated-uidl");
    assert_eq!(seen[..seen.len() - 1], kept[..kept.len() - 1]);
}

#[tokio::test]
async fn a_settled_maildrop_is_served_from_the_kept_index() {
    let (_t, store) = store();
    let maildir = store.maildir_path("big").unwrap();
    for i in 0..1000 {
        foreign_delivery(&maildir, &format!("1700000000.M{i}P1.other"), b"x\r\n");
    }
    listing(&store, "big").await;
    settle(&maildir);
    let kept = listing(&store, "big").await;
    // A file slipped in with new/'s time turned back (what only a change in the same clock
    // tick as the stamp could do) is not seen by the store that kept the index, which shows
    // the index was kept; a store without it sees the file. Such a tick is never trusted.
    let new = maildir.join("new");
    let before = fs::metadata(&new).unwrap().modified().unwrap();
    foreign_delivery(&maildir, "1700000001.Mhidden.other", b"x\r\n");
    fs::File::open(&new).unwrap().set_modified(before).unwrap();
    assert_eq!(listing(&store, "big").await, kept);
    let fresh = MaildirStore::new(store.root(), "testhost");
    assert_eq!(listing(&fresh, "big").await.len(), 1001);
}

#[tokio::test]
async fn a_first_open_of_thousands_of_messages_measures_each_exactly() {
    let (_t, store) = store();
    let maildir = store.maildir_path("many").unwrap();
    let bodies: [&[u8]; 4] = [b"a\r\nb\r\n", b"bare\nlf\n", b"no newline", b"ends in cr\r"];
    // Enough to be measured on several threads; with and without size hints.
    for i in 0..4500 {
        let body = bodies[i % 4];
        let hints = if i % 3 == 0 {
            let mut c = pop3_proto::SizeCounter::new();
            c.update(body);
            format!(",S={},W={}", body.len(), c.virtual_size())
        } else {
            String::new()
        };
        foreign_delivery(
            &maildir,
            &format!("1700000000.M{i:05}P1.other{hints}"),
            body,
        );
    }
    let (drop, listing) = store.open("many").await.unwrap();
    assert_eq!(listing.len(), 4500);
    let mut sizes: Vec<u64> = listing.iter().map(|m| m.size).collect();
    let mut expected: Vec<u64> = (0..4500).map(|i| canonical_size(bodies[i % 4])).collect();
    sizes.sort_unstable();
    expected.sort_unstable();
    assert_eq!(sizes, expected);
    drop.commit(Vec::new()).await.unwrap();
}

#[tokio::test]
async fn an_unchanged_maildrop_opens_quickly_and_a_changed_or_busy_one_does_not() {
    let (_t, store) = store();
    for i in 0..3 {
        deliver(
            &store,
            "alice",
            format!("Subject: {i}\r\n\r\n{i}\r\n").as_bytes(),
        );
    }
    let maildir = store.maildir_path("alice").unwrap();
    assert!(
        store.open_quickly("alice").unwrap().is_none(),
        "never indexed"
    );
    let (first, listing) = store.open("alice").await.unwrap();
    first.commit(Vec::new()).await.unwrap();
    settle(&maildir);
    // Indexed again with settled times: now kept.
    store
        .open("alice")
        .await
        .unwrap()
        .0
        .commit(Vec::new())
        .await
        .unwrap();
    let (mut quick, again) = store
        .open_quickly("alice")
        .unwrap()
        .expect("an unchanged maildrop opens without reading its index");
    assert_eq!(again, listing);
    assert_eq!(read_all(&mut quick, 2).await, b"Subject: 2\r\n\r\n2\r\n");
    // Held by that session: not quickly, and [IN-USE] the thorough way.
    assert!(store.open_quickly("alice").unwrap().is_none());
    assert!(matches!(store.open("alice").await, Err(StoreError::InUse)));
    quick.commit(Vec::new()).await.unwrap();
    // A delivery changes new/: the kept index is not used, and the new message is listed.
    deliver(&store, "alice", b"Subject: 3\r\n\r\n3\r\n");
    assert!(store.open_quickly("alice").unwrap().is_none());
    let (_drop, after) = store.open("alice").await.unwrap();
    assert_eq!(after.len(), 4);
    assert_eq!(after[..3], listing[..]);
}
