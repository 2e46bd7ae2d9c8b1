//! Mail storage for Poplar.
//!
//! A POP3 session sees a *maildrop*: a numbered list of messages, each with an exact size and a
//! permanent unique id, fixed at login. [`MailStore::open`] locks the user's maildrop for the
//! session and returns that listing; [`Maildrop::read`] streams a message; [`Maildrop::commit`]
//! removes the messages deleted in the session, durably, and only those. Dropping a maildrop
//! without committing releases the lock and changes nothing, which is what a dropped connection
//! must do.
//!
//! The traits are async and lock-per-session so that a shared database (PostgreSQL, with the lock
//! held by the database session) can implement them as well as local files can. Backends:
//!
//! - [`maildir::MaildirStore`]: Maildir shared with Postfix, Dovecot and procmail, indexed in
//!   Dovecot's `dovecot-uidlist`;
//! - [`memory::MemoryStore`]: everything in memory, for tests.
//!
//! This crate knows nothing of the POP3 protocol beyond the definition of a message's size
//! (`pop3_proto::canonical`), which it must share with the code that sends the message.

#![forbid(unsafe_code)]

pub mod delivery;
pub mod dotlock;
mod error;
pub mod maildir;
pub mod memory;
mod name;

pub use error::StoreError;
pub use maildir::{MaildirStore, MessageReader, StoreLimits};
pub use memory::MemoryStore;
pub use name::{DEFAULT_DOMAIN, MailboxPath};

use std::future::Future;

/// A maildrop's storage limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// Octets, as stored (the files' sizes).
    pub storage: Option<u64>,
    /// Messages.
    pub messages: Option<u64>,
}

impl Quota {
    /// Whether neither limit is set.
    pub fn is_unlimited(&self) -> bool {
        self.storage.is_none() && self.messages.is_none()
    }
}

/// Who gets which [`Quota`]: a default, overrides per user or per domain, and whether a full
/// maildrop refuses mail for good (the sender gets a bounce) or for now (the MTA retries).
#[derive(Debug, Clone, Default)]
pub struct QuotaRules {
    /// Every user's quota unless overridden.
    pub default: Quota,
    /// Overrides for a user (`alice@example.org`) or a domain (`example.org`).
    pub overrides: std::collections::BTreeMap<String, Quota>,
    /// A full maildrop refuses delivery permanently rather than temporarily.
    pub permanent: bool,
    /// Quotas kept with the users themselves (a passwd-file's `userdb_quota_rule`), consulted
    /// first, at each delivery, so that edits to the users file apply at once.
    pub users: Option<std::sync::Arc<dyn QuotaSource>>,
}

/// What a maildrop holds, against which a [`Quota`] is checked (one rule for every store).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Octets stored.
    pub bytes: u64,
    /// Messages.
    pub messages: u64,
}

impl Usage {
    /// Whether `incoming` more octets in one more message fit in `quota`.
    pub fn admits(self, quota: Quota, incoming: u64) -> bool {
        quota
            .storage
            .is_none_or(|max| self.bytes.saturating_add(incoming) <= max)
            && quota
                .messages
                .is_none_or(|max| self.messages.saturating_add(1) <= max)
    }

    /// The refusal of a delivery that does not fit: what the maildrop holds against its
    /// limits, permanent or not as configured.
    pub fn refusal(self, quota: Quota, permanent: bool) -> StoreError {
        let mut parts = Vec::new();
        if let Some(max) = quota.storage {
            parts.push(format!("{} of {max} octets", self.bytes));
        }
        if let Some(max) = quota.messages {
            parts.push(format!("{} of {max} messages", self.messages));
        }
        StoreError::OverQuota {
            usage: parts.join(", "),
            permanent,
        }
    }
}

/// A per-user quota kept outside the configuration.
pub trait QuotaSource: Send + Sync + std::fmt::Debug {
    /// `user`'s own quota, if it has one.
    fn quota(&self, user: &str) -> Option<Quota>;
}

impl QuotaRules {
    /// `user`'s quota: its own (from [`QuotaRules::users`]), else the configuration's.
    pub fn quota_for(&self, user: &str) -> Quota {
        self.users
            .as_ref()
            .and_then(|source| source.quota(user))
            .or_else(|| per_user(&self.overrides, user).copied())
            .unwrap_or(self.default)
    }
}

/// The setting for `user` in a table keyed by user or domain: the user's own entry, else its
/// domain's.
pub fn per_user<'a, T>(
    table: &'a std::collections::BTreeMap<String, T>,
    user: &str,
) -> Option<&'a T> {
    table.get(user).or_else(|| {
        user.rsplit_once('@')
            .and_then(|(_, domain)| table.get(&domain.to_ascii_lowercase()))
    })
}

/// One message in a maildrop listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// The permanent unique id (RFC 1939 UIDL: 1 to 70 printable ASCII characters).
    pub uidl: String,
    /// The exact number of octets RETR sends for it (its canonical CRLF form).
    pub size: u64,
    /// The envelope recorded at delivery, in SDPS host maildrops (boxed: most messages have
    /// none, and listings of 100 000 messages are cached).
    pub envelope: Option<Box<pop3_proto::Envelope>>,
}

/// A delivery's envelope for an SDPS host maildrop: the sender and the host's recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEnvelope {
    /// MAIL FROM, empty for a bounce.
    pub sender: String,
    /// The RCPT TO addresses at the host.
    pub recipients: Vec<String>,
}

/// A place maildrops live.
pub trait MailStore: Send + Sync + 'static {
    /// A locked, open maildrop.
    type Maildrop: Maildrop;

    /// Locks `user`'s maildrop for one session and lists it. The listing's order is the POP3
    /// message numbering. Returns [`StoreError::InUse`] if another session holds it.
    fn open(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<(Self::Maildrop, Vec<MessageInfo>), StoreError>> + Send;

    /// RFC 2449 LOGIN-DELAY where every node must see it (a shared store): records a login of
    /// `user` now unless the previous one was less than `delay` ago, and says whether it was
    /// recorded. `None`: this store keeps no such record, and the server's own memory decides
    /// (one machine serves every session).
    fn admit_login(
        &self,
        user: &str,
        delay: std::time::Duration,
    ) -> impl Future<Output = Result<Option<bool>, StoreError>> + Send {
        let _ = (user, delay);
        async { Ok(None) }
    }

    /// Whether the store answers now, for a health check (`/healthz`): the cheapest round trip
    /// that proves maildrops can be opened (the Maildir root readable, each database
    /// answering a query). The error says what is wrong.
    fn check(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores `prefix` (header lines delivery adds, often none) followed by the message held
    /// in the file `spool`, exactly as it is there, in `user`'s maildrop, durably: once this
    /// returns `Ok`, a crash cannot lose it. Returns the octets stored.
    fn deliver_file(
        &self,
        user: &str,
        prefix: &[u8],
        spool: &std::path::Path,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The SDPS host maildrop that mail for `address` goes to (its domain is a host name this
    /// store serves that way), if any. Stores without host maildrops have none.
    fn host_of(&self, address: &str) -> Option<String> {
        let _ = address;
        None
    }

    /// Stores a message for an SDPS host maildrop once, with its envelope, one copy per
    /// recipient; durable when it returns `Ok`, like [`deliver_file`](Self::deliver_file).
    /// Only called for hosts [`host_of`](Self::host_of) named.
    fn deliver_to_host(
        &self,
        host: &str,
        envelope: HostEnvelope,
        prefix: &[u8],
        spool: &std::path::Path,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let _ = (envelope, prefix, spool);
        let host = host.to_owned();
        async move {
            Err(StoreError::InvalidMailbox(
                host,
                "this store has no SDPS host maildrops",
            ))
        }
    }
}

/// A store that keeps retrieval times ([`Maildrop::note_retrieved`]) and removes the messages
/// a retention period (RFC 2449 `EXPIRE n`) has let go: what the retention purge runs on.
pub trait Retention: Clone + Send + Sync + 'static {
    /// The users whose maildrops hold retrieved messages, by the names [`MailStore::open`]
    /// takes (others have nothing a purge could remove).
    fn retaining_users(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Removes from `user`'s maildrop the messages first retrieved at least `days` days before
    /// `now` (Unix seconds), or only lists them when `dry_run`. Messages never retrieved are
    /// never touched. Fails with [`StoreError::InUse`] while a session holds the maildrop.
    fn expire(
        &self,
        user: &str,
        days: u32,
        now: u64,
        dry_run: bool,
    ) -> impl Future<Output = Result<Vec<Expired>, StoreError>> + Send;
}

/// A message removed (or, in a dry run, due for removal) by a retention period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// Its UIDL.
    pub uidl: String,
    /// Its size as POP3 lists it.
    pub size: u64,
    /// When it was first retrieved (Unix seconds).
    pub retrieved_at: u64,
}

/// An open maildrop, exclusively held by one session until it is committed or dropped.
pub trait Maildrop: Send + 'static {
    /// A message's stored bytes.
    type Reader: MessageSource;

    /// Opens message `index` (0-based, in listing order) for reading.
    fn read(
        &mut self,
        index: usize,
    ) -> impl Future<Output = Result<Self::Reader, StoreError>> + Send;

    /// Records that message `index` was retrieved, where the store keeps such a thing (a
    /// Maildir marks it seen, as IMAP servers sharing the maildrop expect). Best effort: a
    /// message that vanished meanwhile is not an error.
    fn mark_seen(&mut self, index: usize) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records that the messages at these listing indices were retrieved, now, where a
    /// retention period counts from retrieval (RFC 2449 `EXPIRE n`). Stores without retention
    /// need not keep anything.
    fn note_retrieved(
        &mut self,
        indices: &[usize],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = indices;
        async { Ok(()) }
    }

    /// Resolves if the lock on this maildrop is lost while the session holds it (a shared
    /// store's connection failed): another session may own the maildrop then, and this one
    /// must end without committing. A store whose lock cannot be lost never resolves it.
    /// The future borrows nothing, so a driver can wait on it beside its other work.
    fn lock_lost(&self) -> impl Future<Output = ()> + Send + 'static + use<Self> {
        std::future::pending()
    }

    /// Removes the messages at these listing indices durably, then releases the lock. Messages
    /// that arrived during the session are never touched.
    fn commit(self, deleted: Vec<usize>) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A message being retrieved, read in chunks into buffers the caller lends, so that a chunk
/// can go from the file to the socket without being copied in between.
pub trait MessageSource: Send + 'static {
    /// The file holding the message exactly as RETR sends it before the terminator (CRLF line
    /// ends, no line starting with '.', a final CRLF: see [`pop3_proto::SizeCounter::verbatim`]),
    /// from its first octet to its end, when the store knows it to be so and nothing was read
    /// yet. A server may then send the file's octets without reading them itself (sendfile);
    /// the message's listed size is the file's length. `None`: read it with
    /// [`next_chunk`](Self::next_chunk).
    fn verbatim_file(&self) -> Option<&std::fs::File> {
        None
    }

    /// Replaces the contents of `buf` with the next octets of the message, at most
    /// `buf.capacity()` of them (a capacity of 0 counts as 1); an empty result means the end.
    fn next_chunk(&mut self, buf: Vec<u8>)
    -> impl Future<Output = std::io::Result<Vec<u8>>> + Send;

    /// Reads the rest of the message into memory.
    fn read_to_end(mut self) -> impl Future<Output = std::io::Result<Vec<u8>>> + Send
    where
        Self: Sized,
    {
        async move {
            let mut all = Vec::new();
            let mut buf = Vec::with_capacity(64 * 1024);
            loop {
                buf = self.next_chunk(buf).await?;
                if buf.is_empty() {
                    return Ok(all);
                }
                all.extend_from_slice(&buf);
            }
        }
    }
}

/// A message held in memory.
impl MessageSource for std::io::Cursor<Vec<u8>> {
    async fn next_chunk(&mut self, mut buf: Vec<u8>) -> std::io::Result<Vec<u8>> {
        use std::io::Read as _;
        fill_from(&mut buf, |b| self.read(b))?;
        Ok(buf)
    }
}

/// Lets `read` fill `buf` up to its capacity, keeping what it read. The buffer's length is
/// set to its capacity first, zeroing only octets never written before.
pub(crate) fn fill_from(
    buf: &mut Vec<u8>,
    read: impl FnOnce(&mut [u8]) -> std::io::Result<usize>,
) -> std::io::Result<()> {
    let capacity = buf.capacity().max(1);
    buf.resize(capacity, 0);
    let n = read(buf)?;
    buf.truncate(n);
    Ok(())
}
