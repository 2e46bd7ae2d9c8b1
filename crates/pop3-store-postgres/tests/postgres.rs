//! The PostgreSQL store against a real PostgreSQL (Debian's, started here in a temporary
//! directory on a free loopback port and removed afterwards): schema versions, deliveries,
//! listings and retrieval in chunks, QUIT's deletions, and the cluster-wide maildrop lock
//! between two "nodes" (two stores), including one whose connection dies.

#![allow(clippy::unwrap_used, missing_docs)]

mod pg;

use pg::Pg;
use pop3_store::{MailStore, Maildrop, MessageSource, StoreError};
use pop3_store_postgres::{PgError, PgOptions, PgStore, schema};
use std::time::{Duration, Instant};

async fn deliver(store: &PgStore, user: &str, prefix: &[u8], body: &[u8]) -> u64 {
    let spool = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(spool.path(), body).unwrap();
    store
        .deliver_file(user, prefix, spool.path())
        .await
        .unwrap()
}

/// A message read through `reader` with a buffer of `capacity` octets per call.
async fn read_all(mut reader: impl MessageSource, capacity: usize) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = Vec::with_capacity(capacity);
    loop {
        buf = reader.next_chunk(buf).await.unwrap();
        if buf.is_empty() {
            return all;
        }
        assert!(buf.len() <= capacity.max(1));
        all.extend_from_slice(&buf);
    }
}

#[tokio::test]
async fn the_schema_is_created_upgraded_and_checked() {
    let pg = Pg::start();
    let refused = PgStore::connect(&pg.url(), PgOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(refused, PgError::Outdated { found: 0 }));
    assert!(refused.to_string().contains("poplar db init"), "{refused}");
    let mut admin = pg.admin().await;
    assert_eq!(schema::init(&mut admin).await.unwrap(), 0);
    // Again: nothing to do, nothing lost.
    let store = pg.store().await;
    deliver(&store, "alice", b"", b"Subject: kept\r\n\r\nbody\r\n").await;
    assert_eq!(schema::init(&mut admin).await.unwrap(), schema::VERSION);
    assert_eq!(store.open("alice").await.unwrap().1.len(), 1);
    // A schema from a newer Poplar is refused too.
    admin
        .execute("UPDATE poplar_schema SET version = 99", &[])
        .await
        .unwrap();
    let newer = PgStore::connect(&pg.url(), PgOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(newer, PgError::Newer { found: 99 }), "{newer}");
}

#[tokio::test]
async fn deliveries_are_listed_streamed_and_deleted_only_at_commit() {
    let pg = Pg::start();
    schema::init(&mut pg.admin().await).await.unwrap();
    let store = pg.store().await;
    // Bare LFs count as CRLF in the size, and so does the CRLF RETR adds to an unterminated
    // last line; a 1 MiB body spans several chunks; a prefix (trace headers) is stored before
    // the file's octets.
    let small = b"Subject: one\n\nbare LF\nand no final line end".to_vec();
    let mut large = b"Subject: two\r\n\r\n".to_vec();
    while large.len() < 1 << 20 {
        large.extend_from_slice(b"The quick brown fox jumps over the lazy dog.\r\n");
    }
    assert_eq!(
        deliver(&store, "alice", b"", &small).await,
        small.len() as u64
    );
    deliver(&store, "alice", b"", &large).await;
    deliver(
        &store,
        "alice",
        b"Return-Path: <a@b>\r\n",
        b"Subject: three\r\n\r\n3\r\n",
    )
    .await;
    let (mut maildrop, listing) = store.open("alice").await.unwrap();
    assert_eq!(listing.len(), 3);
    assert_eq!(
        listing[0].size,
        small.len() as u64 + 3 + 2,
        "bare LFs sent as CRLF, the last line terminated"
    );
    assert_eq!(listing[1].size, large.len() as u64);
    let uidls: Vec<String> = listing.iter().map(|m| m.uidl.clone()).collect();
    assert!(uidls.iter().all(|u| (1..=70).contains(&u.len())));
    assert_eq!(
        uidls.iter().collect::<std::collections::HashSet<_>>().len(),
        3
    );
    assert_eq!(
        read_all(maildrop.read(1).await.unwrap(), 64 * 1024).await,
        large
    );
    assert_eq!(read_all(maildrop.read(0).await.unwrap(), 7).await, small);
    assert_eq!(
        read_all(maildrop.read(2).await.unwrap(), 4096).await,
        b"Return-Path: <a@b>\r\nSubject: three\r\n\r\n3\r\n"
    );
    assert!(matches!(
        maildrop.read(3).await,
        Err(StoreError::MessageGone(3))
    ));
    maildrop.note_retrieved(&[0, 1]).await.unwrap();
    // Mail arriving during the session is neither listed nor touched.
    deliver(&store, "alice", b"", b"Subject: four\r\n\r\n4\r\n").await;
    maildrop.commit(vec![0, 2]).await.unwrap();
    // Another node (a restarted one) sees the survivors under the same UIDLs.
    let other = pg.store().await;
    let (reopened, after) = other.open("alice").await.unwrap();
    assert_eq!(after.len(), 2);
    assert_eq!(after[0].uidl, uidls[1]);
    assert!(!uidls.contains(&after[1].uidl), "a UIDL was reused");
    reopened.commit(vec![]).await.unwrap();
    // An empty message and one over the limit are refused, and leave nothing behind.
    let spool = tempfile::NamedTempFile::new().unwrap();
    assert!(matches!(
        store.deliver_file("bob", b"", spool.path()).await,
        Err(StoreError::EmptyMessage)
    ));
    let limited = PgStore::connect(
        &pg.url(),
        PgOptions {
            max_message_size: 1000,
            ..PgOptions::default()
        },
    )
    .await
    .unwrap();
    std::fs::write(spool.path(), &large).unwrap();
    assert!(matches!(
        limited.deliver_file("bob", b"", spool.path()).await,
        Err(StoreError::MessageTooLarge { limit: 1000 })
    ));
    assert!(store.open("bob").await.unwrap().1.is_empty());
}

/// The PostgreSQL backend process holding the lock of `user`'s maildrop.
async fn lock_holder(admin: &tokio_postgres::Client, user: &str) -> Option<i32> {
    admin
        .query_opt(
            "SELECT l.pid FROM pg_locks l, poplar_maildrops m \
             WHERE l.locktype = 'advisory' AND l.granted AND m.name = $1 \
               AND l.objid::bigint = (m.id & 4294967295) AND l.classid::bigint = (m.id >> 32)",
            &[&user],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

#[tokio::test]
async fn one_session_per_maildrop_across_nodes_and_the_lock_dies_with_its_holder() {
    let pg = Pg::start();
    let admin = pg.admin().await;
    schema::init(&mut pg.admin().await).await.unwrap();
    let (node_a, node_b) = (pg.store().await, pg.store().await);
    deliver(&node_a, "alice", b"", b"Subject: x\r\n\r\nx\r\n").await;
    let (session, _) = node_a.open("alice").await.unwrap();
    // A held lock is not reported lost.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), session.lock_lost())
            .await
            .is_err()
    );
    assert!(matches!(node_a.open("alice").await, Err(StoreError::InUse)));
    assert!(matches!(node_b.open("alice").await, Err(StoreError::InUse)));
    // Other maildrops are not affected.
    node_b
        .open("bob")
        .await
        .unwrap()
        .0
        .commit(vec![])
        .await
        .unwrap();
    // A session that ends without QUIT releases the lock and deletes nothing.
    drop(session);
    let start = Instant::now();
    let (session_b, listing) = loop {
        match node_b.open("alice").await {
            Ok(opened) => break opened,
            Err(StoreError::InUse) if start.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(listing.len(), 1);
    // Node B dies: its connections close (here: are terminated). The maildrop is free for
    // node A at once, and B's session can no longer delete anything.
    let pid = lock_holder(&admin, "alice").await.unwrap();
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let died = Instant::now();
    let (session_a, _) = loop {
        match node_a.open("alice").await {
            Ok(opened) => break opened,
            Err(StoreError::InUse) if died.elapsed() < Duration::from_secs(2) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("after {:?}: {e}", died.elapsed()),
        }
    };
    eprintln!(
        "the maildrop was free {:?} after its holder died",
        died.elapsed()
    );
    // B's session learns it without asking.
    tokio::time::timeout(Duration::from_secs(5), session_b.lock_lost())
        .await
        .expect("the lost lock was not announced");
    let refused = session_b.commit(vec![0]).await.unwrap_err();
    assert!(matches!(refused, StoreError::Database(_)), "{refused}");
    assert!(refused.is_temporary());
    session_a.commit(vec![]).await.unwrap();
    assert_eq!(node_a.open("alice").await.unwrap().1.len(), 1);
    // Node B serves again once its next session opens a new lock connection.
    let (again, _) = node_b.open("bob").await.unwrap();
    again.commit(vec![]).await.unwrap();
}

/// With a CA file (or `sslmode=require`), connections use TLS and the server's certificate is
/// verified; a server whose certificate is not trusted is refused.
#[tokio::test]
async fn tls_to_the_database_is_verified() {
    let (pg, ca) = Pg::start_with_tls();
    schema::init(&mut pg.admin().await).await.unwrap();
    let with = |ca_file: Option<std::path::PathBuf>| PgOptions {
        ca_file,
        ..PgOptions::default()
    };
    let store = PgStore::connect(
        &format!("{}?sslmode=require", pg.url()),
        with(Some(ca.clone())),
    )
    .await
    .unwrap();
    deliver(&store, "alice", b"", b"Subject: tls\r\n\r\nsecret\r\n").await;
    let encrypted: i64 = pg
        .admin()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE s.ssl AND a.datname = 'pop3test'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted >= 1, "no TLS connection");
    // The system's CAs do not vouch for a private CA's certificate; another CA does not either.
    let untrusted = PgStore::connect(&format!("{}?sslmode=require", pg.url()), with(None))
        .await
        .unwrap_err();
    assert!(untrusted.to_string().contains("certificate"), "{untrusted}");
    let (_other, other_ca) = Pg::start_with_tls();
    let wrong = PgStore::connect(&pg.url(), with(Some(other_ca)))
        .await
        .unwrap_err();
    assert!(wrong.to_string().contains("certificate"), "{wrong}");
}

/// Waits until `check` holds for the replica's current users.
async fn until_users(
    replica: &pop3_auth::UserReplica,
    what: &str,
    check: impl Fn(&pop3_auth::UserDb) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok((db, _)) = replica.current()
            && check(&db)
        {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(5), "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn password(db: &pop3_auth::UserDb, name: &str) -> Option<String> {
    Some(db.get(name)?.password.as_ref()?.expose().clone())
}

/// Users live in `poplar_users`; every node's replica follows each change, whoever makes it
/// (this crate's functions or plain SQL), and reads the table again after losing its
/// connection, so a change made meanwhile is not missed.
#[tokio::test]
async fn every_node_follows_the_users_table() {
    use pop3_store_postgres::users;
    let pg = Pg::start();
    let admin = pg.admin().await;
    schema::init(&mut pg.admin().await).await.unwrap();
    let record = |name: &str, password: &str| pop3_auth::UserRecord {
        name: name.into(),
        password: password.into(),
        extra: String::new(),
    };
    users::add(&admin, &record("alice", "{PLAIN}one"))
        .await
        .unwrap();
    let (node_a, node_b) = (pg.store().await, pg.store().await);
    let (replica_a, replica_b) = (pop3_auth::UserReplica::new(), pop3_auth::UserReplica::new());
    node_a.follow_users(replica_a.clone()).await.unwrap();
    node_b.follow_users(replica_b.clone()).await.unwrap();
    assert_eq!(
        password(&replica_b.current().unwrap().0, "alice").unwrap(),
        "{PLAIN}one"
    );
    // Added, changed and removed through node A's connection: node B follows.
    let a_client = node_a.admin().await.unwrap();
    users::add(&a_client, &record("bob", "{PLAIN}b"))
        .await
        .unwrap();
    assert!(matches!(
        users::add(&a_client, &record("bob", "{PLAIN}again")).await,
        Err(PgError::UserExists(_))
    ));
    let took = until_users(&replica_b, "bob added", |db| db.get("bob").is_some()).await;
    eprintln!("a new user reached the other node after {took:?}");
    users::set_password(
        &a_client,
        "alice",
        &["{PLAIN}two".into(), "{CRAM-MD5}x".into()],
    )
    .await
    .unwrap();
    until_users(&replica_b, "alice's new password", |db| {
        password(db, "alice").as_deref() == Some("{PLAIN}two")
            && db.get("alice").unwrap().extra.len() == 1
    })
    .await;
    users::remove(&a_client, "bob").await.unwrap();
    assert!(matches!(
        users::remove(&a_client, "bob").await,
        Err(PgError::NoSuchUser(_))
    ));
    until_users(&replica_b, "bob removed", |db| db.get("bob").is_none()).await;
    // Plain SQL (a Dovecot admin's tool) counts too, TRUNCATE included.
    admin
        .execute(
            "INSERT INTO poplar_users (name, password) VALUES ('carol', '{PLAIN}c')",
            &[],
        )
        .await
        .unwrap();
    until_users(&replica_a, "carol by SQL", |db| db.get("carol").is_some()).await;
    admin.execute("TRUNCATE poplar_users", &[]).await.unwrap();
    until_users(&replica_a, "truncated", |db| db.is_empty()).await;
    // Node B's follower is cut off; a user added meanwhile is there once it is back.
    let listeners: Vec<i32> = admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
            &[&users::FOLLOWER],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(listeners.len(), 2, "one follower per node");
    for pid in listeners {
        admin
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
    }
    users::add(&admin, &record("dave", "{PLAIN}d"))
        .await
        .unwrap();
    until_users(&replica_b, "dave after reconnecting", |db| {
        db.get("dave").is_some()
    })
    .await;
    // Records a node cannot use are skipped with a warning, not served.
    admin
        .execute(
            "INSERT INTO poplar_users (name, password) VALUES ('../evil', '{PLAIN}x')",
            &[],
        )
        .await
        .unwrap();
    users::add(&admin, &record("erin", "{PLAIN}e"))
        .await
        .unwrap();
    until_users(&replica_a, "erin", |db| db.get("erin").is_some()).await;
    assert!(replica_a.current().unwrap().0.get("../evil").is_none());
}

/// A database at schema version 1 (before users) is upgraded in place, its mail kept.
#[tokio::test]
async fn a_version_1_database_is_upgraded_with_its_mail() {
    let pg = Pg::start();
    let mut admin = pg.admin().await;
    schema::init(&mut admin).await.unwrap();
    let store = pg.store().await;
    deliver(&store, "alice", b"", b"Subject: old\r\n\r\nkept\r\n").await;
    drop(store);
    admin
        .batch_execute(
            "DROP TABLE poplar_users; DROP FUNCTION poplar_users_changed(); \
             DROP INDEX poplar_messages_retrieved; \
             DROP INDEX poplar_messages_origin; ALTER TABLE poplar_messages DROP COLUMN origin; \
             DROP TABLE poplar_placements; DROP TABLE poplar_logins; ALTER TABLE poplar_maildrops DROP COLUMN moved_to; \
             UPDATE poplar_schema SET version = 1",
        )
        .await
        .unwrap();
    assert!(matches!(
        PgStore::connect(&pg.url(), PgOptions::default()).await,
        Err(PgError::Outdated { found: 1 })
    ));
    assert_eq!(schema::init(&mut admin).await.unwrap(), 1);
    let store = pg.store().await;
    assert_eq!(store.open("alice").await.unwrap().1.len(), 1);
    pop3_store_postgres::users::all(&admin).await.unwrap();
}

/// A database with a self-signed certificate made as administrators make them (`openssl req
/// -x509`, CA:TRUE under OpenSSL 3; Debian's snakeoil is the same kind): trusted when
/// `store.ca_file` is that very certificate, its name still checked; another self-signed
/// certificate, or the system's CAs, are refused.
#[tokio::test]
async fn a_self_signed_database_certificate_given_as_the_ca_file_is_trusted() {
    let (pg, cert) = Pg::start_with_self_signed_tls();
    schema::init(&mut pg.admin().await).await.unwrap();
    let with = |ca_file: Option<std::path::PathBuf>| PgOptions {
        ca_file,
        ..PgOptions::default()
    };
    let store = PgStore::connect(&pg.url(), with(Some(cert.clone())))
        .await
        .unwrap();
    deliver(&store, "alice", b"", b"Subject: tls\r\n\r\nsecret\r\n").await;
    assert_eq!(store.open("alice").await.unwrap().1.len(), 1);
    let untrusted = PgStore::connect(&format!("{}?sslmode=require", pg.url()), with(None))
        .await
        .unwrap_err();
    assert!(untrusted.to_string().contains("certificate"), "{untrusted}");
    let (_other, other_cert) = Pg::start_with_self_signed_tls();
    let wrong = PgStore::connect(&pg.url(), with(Some(other_cert)))
        .await
        .unwrap_err();
    assert!(wrong.to_string().contains("certificate"), "{wrong}");
    // The certificate names 127.0.0.1, not localhost.
    let misnamed = PgStore::connect(
        &pg.url().replace("127.0.0.1", "localhost"),
        with(Some(cert)),
    )
    .await
    .unwrap_err();
    assert!(misnamed.to_string().contains("certificate"), "{misnamed}");
}
