//! Maildrops in PostgreSQL, shared by every `poplar serve` node of a cluster: the same
//! `MailStore` as the Maildir backend, with the state in a database built for sharing it.
//!
//! - The **maildrop lock** is a session-level advisory lock (`pg_try_advisory_lock` on the
//!   maildrop's id) taken on one connection this node holds for all its sessions, so it dies
//!   with the node: a node killed outright releases every maildrop the moment PostgreSQL sees
//!   its connection close. Two sessions on one node are kept apart in memory (advisory locks
//!   are re-entrant within a connection). If that connection is lost, every session holding a
//!   lock through it fails its next store operation instead of working unlocked, and the next
//!   login opens a new one.
//! - Everything else goes through a **bounded pool** ([`PgStore::connect`]'s `pool_size`), held
//!   only for the length of a query: ten thousand sessions do not need ten thousand
//!   connections.
//! - A delivery is one transaction: the maildrop's UID counter, the message row with its UIDL
//!   (assigned there, once), and the body in chunks. QUIT's deletions are one transaction.
//!   Retrieval reads the body a chunk at a time, so memory does not grow with the message.
//!
//! Kept out of pop3-store so that the file backends' crate does no networking.

#![forbid(unsafe_code)]

pub mod schema;
pub mod shards;
mod tls;
pub mod users;

pub use schema::PgError;
pub use shards::PgCluster;

use pop3_store::{MailStore, Maildrop, MessageInfo, MessageSource, StoreError};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::io::AsyncReadExt;
use tokio_postgres::{Client, NoTls};

/// The error a failed query or connection becomes for the session: temporary for the client.
fn db(e: impl std::error::Error) -> StoreError {
    StoreError::Database(chain(&e))
}

/// Whether a failed connection may succeed later by itself: nothing listens yet, the network
/// is down, or PostgreSQL is starting up or shutting down (not a refused certificate, password
/// or database name, which need the operator).
fn unreachable(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind::*;
    let mut source = Some(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | NotFound
                    | TimedOut
                    | HostUnreachable
                    | NetworkUnreachable
                    | AddrNotAvailable
                    | UnexpectedEof
            )
        {
            return true;
        }
        if let Some(db) = cause.downcast_ref::<tokio_postgres::error::DbError>()
            && matches!(db.code().code(), "57P03" | "57P01" | "57P02")
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// An error with its causes, `outer: inner: innermost`: a failed TLS handshake says why.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// How a [`PgStore`] uses its database.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The CA certificate(s), PEM, that vouch for the database server. With it, or with
    /// `sslmode=require` in the URL, connections use TLS and the server's certificate is
    /// verified, name included (against the system's CA bundle when no file is given); a
    /// server that cannot show a trusted certificate is refused. Without either, connections
    /// are plain (a private network or a local socket).
    pub ca_file: Option<std::path::PathBuf>,
    /// Connections the pool may hold (locks take one more): a node's share of PostgreSQL's
    /// `max_connections`.
    pub pool_size: usize,
    /// Deliveries larger than this are refused.
    pub max_message_size: u64,
    /// Who may hold how much; checked in each delivery's transaction.
    pub quotas: pop3_store::QuotaRules,
}

impl Default for PgOptions {
    /// 16 connections: a two-core node's queries are short, and a PostgreSQL server's default
    /// `max_connections` of 100 then serves six nodes.
    fn default() -> Self {
        Self {
            ca_file: None,
            pool_size: 16,
            max_message_size: u64::MAX,
            quotas: pop3_store::QuotaRules::default(),
        }
    }
}

/// A store of maildrops in one PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: deadpool_postgres::Pool,
    config: tokio_postgres::Config,
    tls: Tls,
    /// The connection the node's maildrop locks live on, with its generation (a new one gets a
    /// new number, so a session can tell that the lock it took has gone with the old one).
    locks: tokio::sync::Mutex<Option<LockConnection>>,
    generation: std::sync::atomic::AtomicU64,
    /// The generation of the last lock connection that ended: sessions holding locks through
    /// it learn that they have lost them.
    lost: Arc<tokio::sync::watch::Sender<u64>>,
    /// Maildrops this node holds.
    held: Mutex<HashSet<i64>>,
    max_message_size: u64,
    quotas: pop3_store::QuotaRules,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("hosts", &self.inner.config.get_hosts())
            .field("dbname", &self.inner.config.get_dbname())
            .finish_non_exhaustive()
    }
}

/// How connections are secured.
#[derive(Clone)]
enum Tls {
    Plain,
    Verified(tokio_postgres_rustls::MakeRustlsConnect),
}

/// Debian's (and most distributions') bundle of trusted CA certificates.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl Tls {
    /// TLS when a CA file is given or the URL requires it; plain otherwise.
    fn choose(config: &tokio_postgres::Config, ca_file: Option<&Path>) -> Result<Tls, PgError> {
        let required = config.get_ssl_mode() == tokio_postgres::config::SslMode::Require;
        if ca_file.is_none() && !required {
            return Ok(Tls::Plain);
        }
        let path = ca_file.unwrap_or(Path::new(SYSTEM_BUNDLE));
        let bad = |why: String| PgError::Config(format!("CA file {}: {why}", path.display()));
        use rustls_pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        let mut pinned = Vec::new();
        for cert in
            rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))?
        {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert.clone()).map_err(|e| bad(e.to_string()))?;
            pinned.push(cert);
        }
        if roots.is_empty() {
            return Err(bad("no certificate in it".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|e| bad(e.to_string()))?;
        // Only an explicitly given file may name the server's own certificate.
        let pinned = if ca_file.is_some() {
            pinned
        } else {
            Vec::new()
        };
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(tls::CaOrPinned { webpki, pinned }))
            .with_no_client_auth();
        Ok(Tls::Verified(
            tokio_postgres_rustls::MakeRustlsConnect::new(client),
        ))
    }
}

/// One connection to the database at `url`, secured as [`PgOptions::ca_file`] describes (for
/// `poplar db init` and other administration).
pub async fn connect_one(url: &str, ca_file: Option<&Path>) -> Result<Client, PgError> {
    let config: tokio_postgres::Config =
        url.parse().map_err(|e| PgError::Config(format!("{e}")))?;
    let tls = Tls::choose(&config, ca_file)?;
    connect(&config, &tls, Box::new(|_| {}), |_| {})
        .await
        .map_err(|e| PgError::Config(chain(&e)))
}

/// The connection the node's maildrop locks live on.
struct LockConnection {
    client: Client,
    /// A new connection gets a new number, so a session can tell that its lock went with the
    /// old one.
    generation: u64,
    lock: tokio_postgres::Statement,
    unlock: tokio_postgres::Statement,
}

/// What a connection's driver does with messages the server sends unasked (notifications).
type OnMessage = Box<dyn FnMut(tokio_postgres::AsyncMessage) + Send>;

/// Runs a connection until it ends, handing unasked messages to `on_message`.
async fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    mut on_message: OnMessage,
) -> Result<(), tokio_postgres::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(message)) => on_message(message),
            Some(Err(e)) => return Err(e),
            None => return Ok(()),
        }
    }
}

/// Opens a connection of its own (not from the pool), its driver running in a task that
/// hands notifications to `on_message` and calls `on_end` when the connection ends.
async fn connect(
    config: &tokio_postgres::Config,
    tls: &Tls,
    on_message: OnMessage,
    on_end: impl FnOnce(Result<(), tokio_postgres::Error>) + Send + 'static,
) -> Result<Client, tokio_postgres::Error> {
    match tls {
        Tls::Plain => {
            let (client, connection) = config.connect(NoTls).await?;
            tokio::spawn(async move { on_end(drive(connection, on_message).await) });
            Ok(client)
        }
        Tls::Verified(make) => {
            let (client, connection) = config.connect(make.clone()).await?;
            tokio::spawn(async move { on_end(drive(connection, on_message).await) });
            Ok(client)
        }
    }
}

/// Opens a connection for the node's locks, which announces on `lost` that connection
/// `generation` is gone when it ends.
async fn connect_for_locks(
    config: &tokio_postgres::Config,
    tls: &Tls,
    generation: u64,
    lost: Arc<tokio::sync::watch::Sender<u64>>,
) -> Result<Client, tokio_postgres::Error> {
    let announce = move |result: Result<(), tokio_postgres::Error>| {
        if let Err(e) = result {
            tracing::warn!("the connection holding this node's maildrop locks was lost: {e}");
        }
        lost.send_replace(generation);
    };
    connect(config, tls, Box::new(|_| {}), announce).await
}

impl PgStore {
    /// Connects to the database at `url` (libpq's URL or key=value form, e.g. with several
    /// hosts and `target_session_attrs=read-write`) and checks that its schema is the one
    /// this build uses.
    pub async fn connect(url: &str, options: PgOptions) -> Result<Self, PgError> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|e| PgError::Config(format!("{e}")))?;
        let tls = Tls::choose(&config, options.ca_file.as_deref())?;
        let manager_config = deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Tls::Plain => {
                deadpool_postgres::Manager::from_config(config.clone(), NoTls, manager_config)
            }
            Tls::Verified(make) => deadpool_postgres::Manager::from_config(
                config.clone(),
                make.clone(),
                manager_config,
            ),
        };
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .build()
            .map_err(|e| PgError::Config(e.to_string()))?;
        let store = Self {
            inner: Arc::new(Inner {
                pool,
                config,
                tls,
                locks: tokio::sync::Mutex::new(None),
                generation: std::sync::atomic::AtomicU64::new(0),
                lost: Arc::new(tokio::sync::watch::Sender::new(0)),
                held: Mutex::new(HashSet::new()),
                max_message_size: options.max_message_size,
                quotas: options.quotas,
            }),
        };
        let client = store.inner.pool.get().await.map_err(|e| {
            if unreachable(&e) {
                PgError::Unreachable(chain(&e))
            } else {
                PgError::Config(chain(&e))
            }
        })?;
        schema::check(&client).await?;
        Ok(store)
    }

    /// A connection of its own, outside the pool, with its notifications handed to
    /// `on_message`.
    async fn connect_with(&self, on_message: OnMessage) -> Result<Client, PgError> {
        connect(&self.inner.config, &self.inner.tls, on_message, |_| {})
            .await
            .map_err(PgError::from)
    }

    /// A connection from the pool, for administration (`poplar user`, `poplar db`).
    pub async fn admin(&self) -> Result<deadpool_postgres::Object, PgError> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| PgError::Config(chain(&e)))
    }

    /// A query answered by this database (for [`MailStore::check`]).
    pub(crate) async fn check_here(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(db)?;
        Ok(())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.inner.pool.get().await.map_err(db)
    }

    /// The id of `user`'s maildrop, created if it does not exist yet, or the shard it was
    /// moved to. Every statement is prepared once per pooled connection (`prepare_cached`):
    /// one round trip per query.
    async fn maildrop_id(
        &self,
        client: &deadpool_postgres::Object,
        user: &str,
    ) -> Result<Here<i64>, StoreError> {
        let find = client
            .prepare_cached("SELECT id, moved_to FROM poplar_maildrops WHERE name = $1")
            .await
            .map_err(db)?;
        if let Some(row) = client.query_opt(&find, &[&user]).await.map_err(db)? {
            return Ok(match row.get::<_, Option<i32>>(1) {
                Some(shard) => Here::MovedTo(shard),
                None => Here::Yes(row.get(0)),
            });
        }
        let create = client
            .prepare_cached(
                "INSERT INTO poplar_maildrops (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id",
            )
            .await
            .map_err(db)?;
        match client.query_opt(&create, &[&user]).await.map_err(db)? {
            Some(row) => Ok(Here::Yes(row.get(0))),
            // Created by another node a moment ago.
            None => {
                let row = client.query_one(&find, &[&user]).await.map_err(db)?;
                Ok(match row.get::<_, Option<i32>>(1) {
                    Some(shard) => Here::MovedTo(shard),
                    None => Here::Yes(row.get(0)),
                })
            }
        }
    }

    /// Opens `user`'s maildrop in this database, or says which shard it was moved to.
    pub(crate) async fn open_here(
        &self,
        user: &str,
    ) -> Result<Here<(PgMaildrop, Vec<MessageInfo>)>, StoreError> {
        let client = self.client().await?;
        let id = match self.maildrop_id(&client, user).await? {
            Here::Yes(id) => id,
            Here::MovedTo(shard) => return Ok(Here::MovedTo(shard)),
        };
        let generation = self.lock(id).await?;
        let mut maildrop = PgMaildrop {
            lock: MaildropLock::new(self, id, generation),
            messages: Vec::new(),
            prefetched: std::collections::HashMap::new(),
        };
        // The maildrop's row comes with the listing: a move that finished while this session
        // waited for nothing shows here, under the lock, as the shard it went to.
        let list = client
            .prepare_cached(
                "SELECT d.moved_to, m.uid, m.uidl, m.size, m.octets FROM poplar_maildrops d \
                 LEFT JOIN poplar_messages m ON m.maildrop = d.id WHERE d.id = $1 ORDER BY m.uid",
            )
            .await
            .map_err(db)?;
        let rows = client.query(&list, &[&id]).await.map_err(db)?;
        if let Some(shard) = rows.first().and_then(|r| r.get::<_, Option<i32>>(0)) {
            drop(maildrop);
            return Ok(Here::MovedTo(shard));
        }
        let mut listing = Vec::with_capacity(rows.len());
        for row in rows {
            let Some(uid) = row.get::<_, Option<i64>>(1) else {
                continue;
            };
            let octets = u64::try_from(row.get::<_, i64>(4)).unwrap_or(0);
            let chunks = octets.div_ceil(schema::CHUNK as u64);
            maildrop.messages.push(Listed {
                uid,
                chunks: i32::try_from(chunks).unwrap_or(i32::MAX),
                octets,
            });
            listing.push(MessageInfo {
                uidl: row.get(2),
                size: u64::try_from(row.get::<_, i64>(3)).unwrap_or(0),
                envelope: None,
            });
        }
        Ok(Here::Yes((maildrop, listing)))
    }

    /// Stores a delivery in `user`'s maildrop in this database, or says which shard it was
    /// moved to.
    pub(crate) async fn deliver_here(
        &self,
        user: &str,
        prefix: &[u8],
        spool: &Path,
    ) -> Result<Here<u64>, StoreError> {
        let mut file = tokio::fs::File::open(spool)
            .await
            .map_err(|e| StoreError::io(spool, e))?;
        let mut client = self.client().await?;
        let id = match self.maildrop_id(&client, user).await? {
            Here::Yes(id) => id,
            Here::MovedTo(shard) => return Ok(Here::MovedTo(shard)),
        };
        let quota = Some(self.inner.quotas.quota_for(user));
        match self
            .write_message(&mut client, id, prefix, &mut file, quota, None)
            .await
        {
            Ok(octets) => Ok(Here::Yes(octets)),
            Err(WriteError::Moved(shard)) => Ok(Here::MovedTo(shard)),
            Err(WriteError::Read(e)) => Err(StoreError::io(spool, e)),
            Err(WriteError::Store(e)) => Err(e),
        }
    }

    /// Takes the cluster-wide lock of maildrop `id`; the generation of the connection it is on.
    async fn lock(&self, id: i64) -> Result<u64, StoreError> {
        if !self
            .inner
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id)
        {
            return Err(StoreError::InUse);
        }
        let taken = async {
            let mut slot = self.inner.locks.lock().await;
            if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
                let generation = self
                    .inner
                    .generation
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    + 1;
                let client = connect_for_locks(
                    &self.inner.config,
                    &self.inner.tls,
                    generation,
                    Arc::clone(&self.inner.lost),
                )
                .await
                .map_err(db)?;
                client
                    .batch_execute("SET application_name = 'poplar: maildrop locks'")
                    .await
                    .map_err(db)?;
                let lock = client
                    .prepare("SELECT pg_try_advisory_lock($1)")
                    .await
                    .map_err(db)?;
                let unlock = client
                    .prepare("SELECT pg_advisory_unlock($1)")
                    .await
                    .map_err(db)?;
                *slot = Some(LockConnection {
                    client,
                    generation,
                    lock,
                    unlock,
                });
            }
            let conn = slot
                .as_ref()
                .ok_or_else(|| StoreError::Database("no lock connection".into()))?;
            let got: bool = conn
                .client
                .query_one(&conn.lock, &[&id])
                .await
                .map_err(db)?
                .get(0);
            Ok::<_, StoreError>((got, conn.generation))
        }
        .await;
        match taken {
            Ok((true, generation)) => Ok(generation),
            other => {
                self.forget(id);
                match other {
                    Err(e) => Err(e),
                    _ => Err(StoreError::InUse),
                }
            }
        }
    }

    /// Whether the lock taken on connection `generation` is still held.
    async fn still_locked(&self, generation: u64) -> bool {
        let slot = self.inner.locks.lock().await;
        slot.as_ref()
            .is_some_and(|c| c.generation == generation && !c.client.is_closed())
    }

    /// Fails when a lock taken on connection `generation` has gone with it.
    async fn ensure_held(&self, generation: u64) -> Result<(), StoreError> {
        if self.still_locked(generation).await {
            Ok(())
        } else {
            Err(StoreError::Database(
                "the connection holding this maildrop's lock was lost; log in again".into(),
            ))
        }
    }

    /// Releases the lock of maildrop `id` taken on connection `generation`.
    async fn unlock(&self, id: i64, generation: u64) {
        {
            let slot = self.inner.locks.lock().await;
            if let Some(conn) = slot.as_ref()
                && conn.generation == generation
                && let Err(e) = conn.client.query_one(&conn.unlock, &[&id]).await
            {
                tracing::warn!("cannot release a maildrop lock: {e}");
            }
        }
        self.forget(id);
    }

    fn forget(&self, id: i64) {
        self.inner
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }
}

/// A single database's answer for a maildrop that lives elsewhere: `store.url` should list
/// every shard.
fn moved(user: &str, shard: i32) -> StoreError {
    StoreError::Database(format!(
        "{user}'s maildrop was moved to shard {shard}; store.url must list every shard"
    ))
}

impl MailStore for PgStore {
    type Maildrop = PgMaildrop;

    async fn check(&self) -> Result<(), StoreError> {
        self.check_here().await
    }

    async fn open(&self, user: &str) -> Result<(PgMaildrop, Vec<MessageInfo>), StoreError> {
        match self.open_here(user).await? {
            Here::Yes(opened) => Ok(opened),
            Here::MovedTo(shard) => Err(moved(user, shard)),
        }
    }

    async fn admit_login(
        &self,
        user: &str,
        delay: std::time::Duration,
    ) -> Result<Option<bool>, StoreError> {
        let client = self.client().await?;
        // Recorded only when the previous login is old enough: a compare-and-set, so two
        // nodes cannot both admit one user within the delay.
        let admit = client
            .prepare_cached(
                "INSERT INTO poplar_logins (name, at) VALUES ($1, now()) \
                 ON CONFLICT (name) DO UPDATE SET at = now() \
                 WHERE poplar_logins.at <= now() - make_interval(secs => $2) RETURNING 1",
            )
            .await
            .map_err(db)?;
        let rows = client
            .query(&admit, &[&user, &delay.as_secs_f64()])
            .await
            .map_err(db)?;
        Ok(Some(!rows.is_empty()))
    }

    async fn deliver_file(
        &self,
        user: &str,
        prefix: &[u8],
        spool: &Path,
    ) -> Result<u64, StoreError> {
        match self.deliver_here(user, prefix, spool).await? {
            Here::Yes(octets) => Ok(octets),
            Here::MovedTo(shard) => Err(moved(user, shard)),
        }
    }
}

/// Whether a maildrop lives in this database, or was moved to another shard.
pub(crate) enum Here<T> {
    /// It is here.
    Yes(T),
    /// It lives in shard `.0` of `store.url` now.
    MovedTo(i32),
}

/// Why [`PgStore::write_message`] failed.
enum WriteError {
    /// The maildrop was moved to this shard meanwhile: nothing was stored.
    Moved(i32),
    /// Reading the message failed.
    Read(std::io::Error),
    /// The store refused or failed.
    Store(StoreError),
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        WriteError::Store(e)
    }
}

/// A message imported from another server: where it came from and the UIDL its clients know.
#[derive(Debug, Clone, Copy)]
struct Origin<'a> {
    /// What identifies it at the source (a Maildir base name, or the source's UIDL), so that a
    /// repeated import skips it.
    key: &'a str,
    /// The UIDL to keep; `None`: a new one (the source's cannot be served).
    uidl: Option<&'a str>,
}

impl PgStore {
    /// Stores `prefix` and then what `body` holds in maildrop `id`, in one transaction: a UID
    /// from the counter, the UIDL (made from it, or the origin's), the chunks, the sizes. A
    /// `quota` is checked under the counter's row lock.
    async fn write_message(
        &self,
        client: &mut deadpool_postgres::Object,
        id: i64,
        prefix: &[u8],
        body: &mut (impl tokio::io::AsyncRead + Unpin + Send),
        quota: Option<pop3_store::Quota>,
        origin: Option<Origin<'_>>,
    ) -> Result<u64, WriteError> {
        let tx = client.transaction().await.map_err(db)?;
        // The row lock on the counter orders this maildrop's deliveries until commit.
        // A move holds this row while it copies; once it is done, the row says where to.
        let next = tx
            .prepare_cached(
                "UPDATE poplar_maildrops SET next_uid = next_uid + 1 WHERE id = $1 \
                 RETURNING next_uid - 1, uidvalidity, moved_to",
            )
            .await
            .map_err(db)?;
        let row = tx.query_one(&next, &[&id]).await.map_err(db)?;
        if let Some(shard) = row.get::<_, Option<i32>>(2) {
            return Err(WriteError::Moved(shard));
        }
        let (uid, uidvalidity): (i64, i64) = (row.get(0), row.get(1));
        // Dovecot's default UIDL form (%08Xu%08Xv, here in lower case), so that a client moved
        // between the two recognises the scheme; an import keeps the UIDL its clients know.
        let own = format!("{uid:08x}{uidvalidity:08x}");
        let uidl = match origin.and_then(|o| o.uidl) {
            Some(kept) => {
                // A message delivered here that happens to serve the same UIDL gives way
                // (its client downloads it once more: a duplicate, never a loss).
                let give_way = tx
                    .prepare_cached(
                        "UPDATE poplar_messages SET uidl = 'm' || to_hex(uid) || '.' || to_hex($3::bigint) \
                         WHERE maildrop = $1 AND uidl = $2",
                    )
                    .await
                    .map_err(db)?;
                tx.execute(&give_way, &[&id, &kept, &uidvalidity])
                    .await
                    .map_err(db)?;
                kept.to_owned()
            }
            None => own,
        };
        let message = tx
            .prepare_cached(
                "INSERT INTO poplar_messages (maildrop, uid, uidl, size, octets, origin) \
                 VALUES ($1, $2, $3, 0, 0, $4)",
            )
            .await
            .map_err(db)?;
        tx.execute(&message, &[&id, &uid, &uidl, &origin.map(|o| o.key)])
            .await
            .map_err(db)?;
        let insert_chunk = tx
            .prepare_cached(
                "INSERT INTO poplar_chunks (maildrop, uid, seq, data) VALUES ($1, $2, $3, $4)",
            )
            .await
            .map_err(db)?;
        let mut counter = pop3_proto::SizeCounter::new();
        let mut octets = 0u64;
        let mut seq = 0i32;
        let mut chunk = Vec::with_capacity(schema::CHUNK);
        chunk.extend_from_slice(prefix);
        loop {
            let before = chunk.len();
            chunk.resize(schema::CHUNK, 0);
            let n = body
                .read(&mut chunk[before..])
                .await
                .map_err(WriteError::Read)?;
            chunk.truncate(before + n);
            if chunk.len() < schema::CHUNK && n != 0 {
                continue;
            }
            if !chunk.is_empty() {
                octets += chunk.len() as u64;
                if octets > self.inner.max_message_size {
                    return Err(StoreError::MessageTooLarge {
                        limit: self.inner.max_message_size,
                    }
                    .into());
                }
                counter.update(&chunk);
                tx.execute(&insert_chunk, &[&id, &uid, &seq, &chunk])
                    .await
                    .map_err(db)?;
                seq += 1;
                chunk.clear();
            }
            if n == 0 {
                break;
            }
        }
        if octets == 0 {
            return Err(StoreError::EmptyMessage.into());
        }
        // Counted under the maildrop's counter lock, so deliveries to it cannot both squeeze
        // into the last room.
        if let Some(quota) = quota.filter(|q| !q.is_unlimited()) {
            let held = tx
                .prepare_cached(
                    "SELECT coalesce(sum(octets), 0)::bigint, count(*) FROM poplar_messages \
                     WHERE maildrop = $1 AND uid <> $2",
                )
                .await
                .map_err(db)?;
            let row = tx.query_one(&held, &[&id, &uid]).await.map_err(db)?;
            let usage = pop3_store::Usage {
                bytes: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
                messages: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
            };
            if !usage.admits(quota, octets) {
                return Err(usage.refusal(quota, self.inner.quotas.permanent).into());
            }
        }
        // What RETR sends: bare LFs as CRLF, and an unterminated last line terminated.
        let size = i64::try_from(counter.canonical_size()).map_err(db)?;
        let stored = i64::try_from(octets).map_err(db)?;
        let sizes = tx
            .prepare_cached(
                "UPDATE poplar_messages SET size = $3, octets = $4 WHERE maildrop = $1 AND uid = $2",
            )
            .await
            .map_err(db)?;
        tx.execute(&sizes, &[&id, &uid, &size, &stored])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(octets)
    }

    /// Opens `user`'s maildrop (created if needed) for `poplar migrate`, holding its
    /// cluster-wide lock until the import is dropped: no session changes it meanwhile.
    pub async fn import_to(&self, user: &str) -> Result<PgImport, StoreError> {
        match self.import_here(user).await? {
            Here::Yes(import) => Ok(import),
            Here::MovedTo(shard) => Err(moved(user, shard)),
        }
    }

    /// [`PgStore::import_to`] in this database, or the shard the maildrop was moved to.
    pub(crate) async fn import_here(&self, user: &str) -> Result<Here<PgImport>, StoreError> {
        let client = self.client().await?;
        let id = match self.maildrop_id(&client, user).await? {
            Here::Yes(id) => id,
            Here::MovedTo(shard) => return Ok(Here::MovedTo(shard)),
        };
        let generation = self.lock(id).await?;
        let import = PgImport {
            lock: MaildropLock::new(self, id, generation),
        };
        let row = client
            .query_one(
                "SELECT moved_to FROM poplar_maildrops WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(db)?;
        Ok(match row.get::<_, Option<i32>>(0) {
            Some(shard) => Here::MovedTo(shard),
            None => Here::Yes(import),
        })
    }
}

/// A maildrop being filled by `poplar migrate`, locked like a session.
pub struct PgImport {
    lock: MaildropLock,
}

/// A message a maildrop already holds, as an import sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The UIDL it is served under.
    pub uidl: String,
    /// Where an earlier import brought it from ([`PgImport::import`]'s `origin`); `None` for
    /// mail delivered here.
    pub origin: Option<String>,
}

impl PgImport {
    /// The messages the maildrop holds.
    pub async fn held(&self) -> Result<Vec<Held>, StoreError> {
        let client = self.lock.store.client().await?;
        let rows = client
            .query(
                "SELECT uidl, origin FROM poplar_messages WHERE maildrop = $1 ORDER BY uid",
                &[&self.lock.id],
            )
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| Held {
                uidl: r.get(0),
                origin: r.get(1),
            })
            .collect())
    }

    /// Stores what `message` holds durably under `uidl` (kept from the source; `None`: a new one), noting
    /// `origin` (what identifies it at the source) so that a repeated run can skip it. No quota
    /// applies: a migration brings what the user already had.
    pub async fn import(
        &self,
        origin: &str,
        uidl: Option<&str>,
        message: &mut (impl tokio::io::AsyncRead + Unpin + Send),
    ) -> Result<u64, StoreError> {
        self.lock.store.ensure_held(self.lock.generation).await?;
        let mut client = self.lock.store.client().await?;
        let origin = Origin { key: origin, uidl };
        self.lock
            .store
            .write_message(&mut client, self.lock.id, b"", message, None, Some(origin))
            .await
            .map_err(|e| match e {
                WriteError::Read(e) => StoreError::Internal(format!("reading the message: {e}")),
                WriteError::Store(e) => e,
                WriteError::Moved(shard) => moved("this user", shard),
            })
    }

    /// Releases the maildrop.
    pub async fn finish(self) {
        self.lock.release().await;
    }
}

/// A maildrop's cluster-wide lock held by a session or an import: released by
/// [`MaildropLock::release`], or, when dropped unreleased (a dropped connection, an interrupted
/// import), in a task of its own, nothing else done.
struct MaildropLock {
    store: PgStore,
    id: i64,
    generation: u64,
    open: bool,
}

impl MaildropLock {
    fn new(store: &PgStore, id: i64, generation: u64) -> Self {
        Self {
            store: store.clone(),
            id,
            generation,
            open: true,
        }
    }

    async fn release(mut self) {
        self.open = false;
        self.store.unlock(self.id, self.generation).await;
    }
}

impl Drop for MaildropLock {
    fn drop(&mut self) {
        if self.open {
            let (store, id, generation) = (self.store.clone(), self.id, self.generation);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { store.unlock(id, generation).await });
            } else {
                store.forget(id);
            }
        }
    }
}

impl pop3_store::Retention for PgStore {
    async fn retaining_users(&self) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT d.name FROM poplar_maildrops d WHERE EXISTS \
                 (SELECT 1 FROM poplar_messages m WHERE m.maildrop = d.id AND m.retrieved IS NOT NULL) \
                 ORDER BY d.name",
            )
            .await
            .map_err(db)?;
        let rows = client.query(&select, &[]).await.map_err(db)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Under the maildrop's cluster-wide lock, like a session: a maildrop in use on any node
    /// is skipped ([`StoreError::InUse`]) and purged at the next run.
    async fn expire(
        &self,
        user: &str,
        days: u32,
        now: u64,
        dry_run: bool,
    ) -> Result<Vec<pop3_store::Expired>, StoreError> {
        let client = self.client().await?;
        let find = client
            .prepare_cached("SELECT id FROM poplar_maildrops WHERE name = $1")
            .await
            .map_err(db)?;
        let Some(row) = client.query_opt(&find, &[&user]).await.map_err(db)? else {
            return Ok(Vec::new());
        };
        let id: i64 = row.get(0);
        let generation = self.lock(id).await?;
        let cutoff = i64::try_from(now.saturating_sub(u64::from(days) * 86_400)).map_err(db)?;
        let result = async {
            let statement = if dry_run {
                "SELECT uidl, size, extract(epoch FROM retrieved)::bigint FROM poplar_messages \
                 WHERE maildrop = $1 AND retrieved <= to_timestamp($2) ORDER BY uid"
            } else {
                "DELETE FROM poplar_messages WHERE maildrop = $1 AND retrieved <= to_timestamp($2) \
                 RETURNING uidl, size, extract(epoch FROM retrieved)::bigint"
            };
            let statement = client.prepare_cached(statement).await.map_err(db)?;
            let rows = client
                .query(&statement, &[&id, &(cutoff as f64)])
                .await
                .map_err(db)?;
            Ok(rows
                .iter()
                .map(|r| pop3_store::Expired {
                    uidl: r.get(0),
                    size: u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
                    retrieved_at: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
                })
                .collect())
        }
        .await;
        self.unlock(id, generation).await;
        result
    }
}

/// A message of a session's listing.
#[derive(Debug, Clone, Copy)]
struct Listed {
    uid: i64,
    /// Body chunks stored.
    chunks: i32,
    octets: u64,
}

/// At most this many octets of small messages (one chunk each) are fetched with the one
/// being read, in one query: a client retrieving its new mail then costs one round trip per
/// batch instead of one per message, and a session holds at most this much ahead.
const PREFETCH: u64 = 256 * 1024;

/// A maildrop locked for one session.
pub struct PgMaildrop {
    lock: MaildropLock,
    /// The session's listing, in order.
    messages: Vec<Listed>,
    /// Bodies of small messages fetched ahead, by listing index (see [`PREFETCH`]).
    prefetched: std::collections::HashMap<usize, Vec<u8>>,
}

impl PgMaildrop {
    fn uid(&self, index: usize) -> Result<i64, StoreError> {
        self.messages
            .get(index)
            .map(|m| m.uid)
            .ok_or(StoreError::MessageGone(index))
    }

    /// Fetches the body of single-chunk message `index` and of the single-chunk messages after
    /// it, up to [`PREFETCH`] octets, in one query.
    async fn prefetch(&mut self, index: usize) -> Result<(), StoreError> {
        let mut budget = 0u64;
        let batch: Vec<usize> = (index..self.messages.len())
            .take_while(|&i| {
                let m = self.messages[i];
                budget += m.octets;
                i == index || (m.chunks == 1 && budget <= PREFETCH)
            })
            .filter(|&i| self.messages[i].chunks == 1 && !self.prefetched.contains_key(&i))
            .collect();
        let uids: Vec<i64> = batch.iter().map(|&i| self.messages[i].uid).collect();
        let client = self.lock.store.client().await?;
        let select = client
            .prepare_cached(
                "SELECT uid, data FROM poplar_chunks WHERE maildrop = $1 AND uid = ANY($2) AND seq = 0",
            )
            .await
            .map_err(db)?;
        for row in client
            .query(&select, &[&self.lock.id, &uids])
            .await
            .map_err(db)?
        {
            let uid: i64 = row.get(0);
            if let Some(&i) = batch.iter().find(|&&i| self.messages[i].uid == uid) {
                self.prefetched.insert(i, row.get(1));
            }
        }
        Ok(())
    }

    /// Fails when the lock this session took has gone with its connection: another node may
    /// hold the maildrop now.
    async fn ensure_locked(&self) -> Result<(), StoreError> {
        self.lock.store.ensure_held(self.lock.generation).await
    }
}

impl Maildrop for PgMaildrop {
    type Reader = PgReader;

    async fn read(&mut self, index: usize) -> Result<PgReader, StoreError> {
        let Listed { uid, chunks, .. } = *self
            .messages
            .get(index)
            .ok_or(StoreError::MessageGone(index))?;
        self.ensure_locked().await?;
        if chunks == 1 && !self.prefetched.contains_key(&index) {
            self.prefetch(index).await?;
        }
        let (chunk, seq) = match self.prefetched.remove(&index) {
            Some(body) => (body, 1),
            None => (Vec::new(), 0),
        };
        Ok(PgReader {
            store: self.lock.store.clone(),
            maildrop: self.lock.id,
            uid,
            chunks,
            seq,
            chunk,
            pos: 0,
            done: false,
        })
    }

    async fn mark_seen(&mut self, _index: usize) -> Result<(), StoreError> {
        // No other mail program shares these maildrops; retrieval times are `note_retrieved`'s.
        Ok(())
    }

    async fn note_retrieved(&mut self, indices: &[usize]) -> Result<(), StoreError> {
        let uids: Vec<i64> = indices.iter().filter_map(|i| self.uid(*i).ok()).collect();
        if uids.is_empty() {
            return Ok(());
        }
        let client = self.lock.store.client().await?;
        let note = client
            .prepare_cached(
                "UPDATE poplar_messages SET retrieved = now() \
                 WHERE maildrop = $1 AND uid = ANY($2) AND retrieved IS NULL",
            )
            .await
            .map_err(db)?;
        client
            .execute(&note, &[&self.lock.id, &uids])
            .await
            .map_err(db)?;
        Ok(())
    }

    fn lock_lost(&self) -> impl Future<Output = ()> + Send + 'static + use<> {
        let mut lost = self.lock.store.inner.lost.subscribe();
        let generation = self.lock.generation;
        async move {
            // A later lock connection exists only once this one has ended. A store dropped
            // meanwhile (the sender gone) ends the wait too.
            let _ = lost.wait_for(|gone| *gone >= generation).await;
        }
    }

    async fn commit(self, deleted: Vec<usize>) -> Result<(), StoreError> {
        let uids: Vec<i64> = deleted.iter().filter_map(|i| self.uid(*i).ok()).collect();
        let result = async {
            if uids.is_empty() {
                return Ok(());
            }
            self.ensure_locked().await?;
            let client = self.lock.store.client().await?;
            let delete = client
                .prepare_cached("DELETE FROM poplar_messages WHERE maildrop = $1 AND uid = ANY($2)")
                .await
                .map_err(db)?;
            client
                .execute(&delete, &[&self.lock.id, &uids])
                .await
                .map_err(db)?;
            Ok(())
        }
        .await;
        // A session that ends without QUIT (a dropped connection) deletes nothing: dropping
        // the maildrop releases the lock.
        self.lock.release().await;
        result
    }
}

/// A message being read from the database a chunk at a time.
pub struct PgReader {
    store: PgStore,
    maildrop: i64,
    uid: i64,
    /// How many chunks the body has: the reader never asks for one past the last.
    chunks: i32,
    seq: i32,
    chunk: Vec<u8>,
    pos: usize,
    done: bool,
}

impl MessageSource for PgReader {
    async fn next_chunk(&mut self, mut buf: Vec<u8>) -> std::io::Result<Vec<u8>> {
        buf.clear();
        if self.pos == self.chunk.len() && !self.done && self.seq < self.chunks {
            let client = self.store.client().await.map_err(std::io::Error::other)?;
            let select = client
                .prepare_cached(
                    "SELECT data FROM poplar_chunks WHERE maildrop = $1 AND uid = $2 AND seq = $3",
                )
                .await
                .map_err(std::io::Error::other)?;
            let row = client
                .query_opt(&select, &[&self.maildrop, &self.uid, &self.seq])
                .await
                .map_err(std::io::Error::other)?;
            match row {
                Some(row) => {
                    self.chunk = row.get(0);
                    self.pos = 0;
                    self.seq += 1;
                }
                None => self.done = true,
            }
        }
        let want = buf.capacity().max(1);
        let end = (self.pos + want).min(self.chunk.len());
        buf.extend_from_slice(&self.chunk[self.pos..end]);
        self.pos = end;
        Ok(buf)
    }
}
