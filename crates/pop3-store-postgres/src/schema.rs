//! The database schema and its versions. `poplar db init` runs [`init`]: it creates the tables
//! on an empty database and upgrades an older schema step by step, each step in a transaction
//! of its own, and does nothing on a current one, so it is safe to run on every deployment. A
//! server refuses a schema it does not know ([`check`]) with a message naming the command.
//!
//! Per message: its maildrop, a UID from the maildrop's counter (never reused), the UIDL
//! assigned with it in the delivering transaction, the exact size RETR sends (the canonical
//! CRLF form's octets), the stored octets, when it arrived and was retrieved, its envelope; the
//! body in chunks of [`CHUNK`] octets, so that a retrieval streams and memory stays bounded.

use tokio_postgres::Client;

/// The schema version this build writes and reads.
pub const VERSION: i32 = 2;

/// Octets per stored body chunk: large enough that a 100 MiB message is 400 rows, small enough
/// that one in memory costs little.
pub const CHUNK: usize = 256 * 1024;

/// Each version's statements, applied in order from the database's version to [`VERSION`].
const STEPS: [&str; 2] = [
    r#"
CREATE TABLE poplar_maildrops (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    next_uid    bigint NOT NULL DEFAULT 1,
    -- Part of every UIDL, so that a maildrop deleted and created again never repeats one.
    uidvalidity bigint NOT NULL DEFAULT (extract(epoch from now())::bigint)
);
CREATE TABLE poplar_messages (
    maildrop      bigint NOT NULL REFERENCES poplar_maildrops (id) ON DELETE CASCADE,
    uid           bigint NOT NULL,
    uidl          text NOT NULL,
    size          bigint NOT NULL,
    octets        bigint NOT NULL,
    received      timestamptz NOT NULL DEFAULT now(),
    retrieved     timestamptz,
    envelope_from text,
    envelope_to   text,
    PRIMARY KEY (maildrop, uid),
    UNIQUE (maildrop, uidl)
);
CREATE TABLE poplar_chunks (
    maildrop bigint NOT NULL,
    uid      bigint NOT NULL,
    seq      integer NOT NULL,
    data     bytea NOT NULL,
    PRIMARY KEY (maildrop, uid, seq),
    FOREIGN KEY (maildrop, uid) REFERENCES poplar_messages (maildrop, uid) ON DELETE CASCADE
);
"#,
    r#"
-- Version 2: users, imports' origins, sharding, and an index for the retention purge. The passwd-file's password field and extra fields; a Dovecot SQL passdb
-- can read the same rows (password_query = SELECT name AS user, password FROM poplar_users
-- WHERE name = '%Lu'). Every change is announced, so that nodes follow at once.
CREATE TABLE poplar_users (
    name     text PRIMARY KEY,
    password text NOT NULL DEFAULT '',
    extra    text NOT NULL DEFAULT ''
);
CREATE FUNCTION poplar_users_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('poplar_users', '');
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('poplar_users', OLD.name);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('poplar_users', NEW.name);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER poplar_users_changed AFTER INSERT OR UPDATE OR DELETE ON poplar_users
    FOR EACH ROW EXECUTE FUNCTION poplar_users_changed();
CREATE TRIGGER poplar_users_truncated AFTER TRUNCATE ON poplar_users
    FOR EACH STATEMENT EXECUTE FUNCTION poplar_users_changed();
-- Where `poplar migrate` brought a message from (a Maildir base name, the source's UIDL), so
-- that a repeated run skips it; NULL for mail delivered here.
ALTER TABLE poplar_messages ADD COLUMN origin text;
CREATE UNIQUE INDEX poplar_messages_origin ON poplar_messages (maildrop, origin)
    WHERE origin IS NOT NULL;
-- Sharding. A maildrop moved to another shard by `poplar db move-user` leaves its row behind
-- with the shard it went to, so that a node or a delivery that still looked here follows it.
ALTER TABLE poplar_maildrops ADD COLUMN moved_to integer;
-- Which shard holds each user's maildrop (read in the first database of store.url only),
-- recorded when a maildrop is first created there, so that adding a shard moves nobody.
CREATE TABLE poplar_placements (
    name  text PRIMARY KEY,
    shard integer NOT NULL
);
-- RFC 2449 LOGIN-DELAY: each user's last admitted login, for every node (first database).
CREATE TABLE poplar_logins (
    name text PRIMARY KEY,
    at   timestamptz NOT NULL
);
-- The retention purge looks for retrieved messages only.
CREATE INDEX poplar_messages_retrieved ON poplar_messages (maildrop, retrieved)
    WHERE retrieved IS NOT NULL;
"#,
];

/// What can go wrong in this crate outside the store's own operations (which answer with
/// `pop3_store::StoreError`): setting up the database and reaching it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// A connection URL that cannot be used (the operator's setting).
    #[error("store.url: {0}")]
    Config(String),
    /// The database cannot be reached now (not running yet, network down): may work later.
    #[error("store.url: {0}")]
    Unreachable(String),
    /// The database has no Poplar schema, or an older one (the operator's to run).
    #[error(
        "the database has schema version {found}, this Poplar needs {VERSION}: run `poplar db init --config FILE` (it creates or upgrades the schema and keeps every message)"
    )]
    Outdated {
        /// The version found (0: none).
        found: i32,
    },
    /// The database was set up by a newer Poplar (the operator's: upgrade this node).
    #[error(
        "the database has schema version {found}, newer than this Poplar knows ({VERSION}): upgrade this node's poplar"
    )]
    Newer {
        /// The version found.
        found: i32,
    },
    /// `poplar user add` for a name that is taken (the caller's input).
    #[error("user {0} already exists")]
    UserExists(String),
    /// `poplar user passwd|del` for a name that is not a user (the caller's input).
    #[error("no such user {0:?}")]
    NoSuchUser(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
}

/// The schema version of the database behind `client` (0 when it has none).
pub async fn version(client: &Client) -> Result<i32, tokio_postgres::Error> {
    let exists = client
        .query_one("SELECT to_regclass('poplar_schema') IS NOT NULL", &[])
        .await?
        .get::<_, bool>(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_opt("SELECT version FROM poplar_schema", &[])
        .await?;
    Ok(row.map_or(0, |r| r.get(0)))
}

/// Creates or upgrades the schema to [`VERSION`]; returns the version found before. Several
/// nodes running it at once are serialised by a transaction-level advisory lock.
pub async fn init(client: &mut Client) -> Result<i32, PgError> {
    let tx = client.transaction().await?;
    // One initialiser at a time (the key spells "POPLAR").
    tx.execute("SELECT pg_advisory_xact_lock(88301579813202)", &[])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS poplar_schema (version integer NOT NULL)")
        .await?;
    let found: i32 = tx
        .query_opt("SELECT version FROM poplar_schema", &[])
        .await?
        .map_or(0, |r| r.get(0));
    if found > VERSION {
        return Err(PgError::Newer { found });
    }
    for (i, step) in STEPS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        tx.batch_execute(step).await?;
        tracing::info!("database schema upgraded to version {}", i + 1);
    }
    tx.execute("DELETE FROM poplar_schema", &[]).await?;
    tx.execute(
        "INSERT INTO poplar_schema (version) VALUES ($1)",
        &[&VERSION],
    )
    .await?;
    tx.commit().await?;
    Ok(found)
}

/// Fails unless the database has exactly the schema this build uses.
pub async fn check(client: &Client) -> Result<(), PgError> {
    match version(client).await? {
        VERSION => Ok(()),
        found if found > VERSION => Err(PgError::Newer { found }),
        found => Err(PgError::Outdated { found }),
    }
}
