//! The Maildir backend.
//!
//! Layout: `<root>/<domain>/<user>/Maildir/{tmp,new,cur}`, the standard Maildir that Postfix's
//! virtual(8), procmail and Dovecot's LDA deliver into and Dovecot serves. Next to those
//! directories live:
//!
//! - `dovecot-uidlist`: the index of UIDs and sizes (see [`uidlist`]), shared with Dovecot;
//! - `dovecot-uidlist.lock`: the short-lived dot-lock for rewriting it (see [`crate::dotlock`]);
//! - `poplar-pop3.lock`: the POP3 session lock, an OS `flock` that belongs to the open file,
//!   so it disappears the instant the session's process or connection dies and can never go
//!   stale.
//!
//! Opening a maildrop reads the index and the two directory listings; message files are read
//! only when they are new to the index (to learn their size, from the `,W=` hint and one octet,
//! or by counting). The UIDL of a message is its Dovecot POP3 UIDL: the `P` field if the index
//! has one (kept from a migration), else `%08Xu%08Xv` (UID and UIDVALIDITY as 8 lower-case hex
//! digits each: Dovecot's `%X` prints lower case, as a live Dovecot 2.3 confirms), Dovecot's
//! default, so both servers show the same UIDL for the same message.
//!
//! Durability: a delivery is written to `tmp/`, fsynced, renamed into `new/`, and `new/` is
//! fsynced before success is reported. A commit unlinks the deleted files and fsyncs the
//! directories before it drops their index records; a crash in between leaves index records
//! without files, which the next open discards. The index itself is replaced by rename.

mod cache;
pub mod filename;
pub mod migrate;
mod quota;
mod retention;
pub mod uidlist;
pub mod untrusted;
pub mod writer;

use crate::dotlock::DotLock;
use crate::error::StoreError;
use crate::name::MailboxPath;
use crate::{MailStore, Maildrop, MessageInfo, QuotaRules};
use cache::{Entry, IndexCache, Indexed, Stamp};
use filename::{base, is_message, size_hints};
use pop3_proto::canonical::{SizeCounter, canonical_size_from_virtual};
use poplar_util::clock::unix_now;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use uidlist::{EXACT_SIZE_KEY, POP3_UIDL_KEY, Record, Uidlist};
use writer::{Folder, Writer, sync_dir};

const UIDLIST: &str = "dovecot-uidlist";
const UIDLIST_LOCK: &str = "dovecot-uidlist.lock";
const UIDLIST_TMP: &str = "dovecot-uidlist.tmp";
const SESSION_LOCK: &str = "poplar-pop3.lock";
const COPY_BUFFER: usize = 64 * 1024;
/// Below this many new messages per thread, measuring them is not worth another thread.
const PARALLEL_MEASURE_MIN: usize = 2000;

/// Maildrops in Maildir format under one root directory.
#[derive(Debug, Clone)]
pub struct MaildirStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    host: String,
    lock_timeout: Duration,
    deliveries: AtomicU64,
    limits: StoreLimits,
    quotas: QuotaRules,
    cache: Arc<IndexCache>,
}

/// Bounds on what one delivery or one session may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Deliveries larger than this many octets are refused ([`StoreError::MessageTooLarge`]).
    pub max_message_size: u64,
    /// A session's snapshot lists at most this many messages, the newest ones, so memory and
    /// login time stay bounded however large a maildrop grows; older messages appear in later
    /// sessions as these are deleted.
    pub max_snapshot_messages: usize,
}

impl Default for StoreLimits {
    /// No limits.
    fn default() -> Self {
        Self {
            max_message_size: u64::MAX,
            max_snapshot_messages: usize::MAX,
        }
    }
}

#[derive(Debug, Clone)]
struct Located {
    sub: Folder,
    name: String,
}

/// A successful delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The message's base file name (the same in every recipient's `new/`).
    pub base: String,
    /// Octets stored.
    pub size: u64,
}

impl MaildirStore {
    /// Maildrops under `root` (usually `DATA/mail`). `host` names this machine in new file
    /// names and in index locks.
    pub fn new(root: impl Into<PathBuf>, host: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                root: root.into(),
                host: host.into(),
                lock_timeout: Duration::from_secs(10),
                deliveries: AtomicU64::new(0),
                limits: StoreLimits::default(),
                quotas: QuotaRules::default(),
                cache: Arc::new(IndexCache::default()),
            }),
        }
    }

    /// The same store with these limits.
    pub fn with_limits(self, limits: StoreLimits) -> Self {
        self.rebuilt(|inner| inner.limits = limits)
    }

    /// The same store with these quotas, enforced on delivery.
    pub fn with_quotas(self, quotas: QuotaRules) -> Self {
        self.rebuilt(|inner| inner.quotas = quotas)
    }

    fn rebuilt(self, change: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Inner {
            root: self.inner.root.clone(),
            host: self.inner.host.clone(),
            lock_timeout: self.inner.lock_timeout,
            deliveries: AtomicU64::new(self.inner.deliveries.load(Ordering::Relaxed)),
            limits: self.inner.limits,
            quotas: self.inner.quotas.clone(),
            cache: Arc::clone(&self.inner.cache),
        };
        change(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The limits messages and snapshots are held to.
    pub fn limits(&self) -> crate::StoreLimits {
        self.inner.limits
    }

    /// The host name used in new file names.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The Maildir of `user`, validated so it cannot lie outside the root.
    pub fn maildir_path(&self, user: &str) -> Result<PathBuf, StoreError> {
        Ok(MailboxPath::parse(user)?.maildir(&self.inner.root))
    }

    /// Opens and locks a maildrop (blocking; the async [`MailStore::open`] runs this on the
    /// blocking thread pool).
    pub fn open_blocking(&self, user: &str) -> Result<(MaildirDrop, Vec<MessageInfo>), StoreError> {
        let dir = self.maildir_path(user)?;
        writer::create_dirs(&dir)?;
        let lock = session_lock(&dir)?;
        clean_tmp(&dir.join("tmp"));
        let stamp = Stamp::of(&dir)?;
        let indexed = match self.inner.cache.get(&dir, &stamp) {
            Some(indexed) => indexed,
            None => {
                let indexed = Arc::new(self.index(&dir)?);
                self.inner.cache.put(&dir, stamp, &indexed);
                indexed
            }
        };
        let excess = indexed
            .listing
            .len()
            .saturating_sub(self.inner.limits.max_snapshot_messages);
        if excess > 0 {
            tracing::warn!(
                maildir = %dir.display(),
                messages = indexed.listing.len(),
                "maildrop exceeds limits.max_snapshot_messages; this session sees the newest {} and the {excess} oldest wait for a later session",
                indexed.listing.len() - excess
            );
        }
        let listing = indexed.listing[excess..].to_vec();
        let drop = MaildirDrop {
            dir,
            host: self.inner.host.clone(),
            lock_timeout: self.inner.lock_timeout,
            _lock: lock,
            indexed,
            first: excess,
            moved: HashMap::new(),
            cache: Arc::clone(&self.inner.cache),
        };
        Ok((drop, listing))
    }

    /// Reads the index and the directories, indexing new messages: every message in the
    /// maildrop, in index order, with its file and its listing.
    fn index(&self, dir: &Path) -> Result<Indexed, StoreError> {
        let mut files = scan(dir)?;
        let mut list = read_uidlist(dir)?;
        if needs_update(list.as_ref(), &files) {
            // Measure new messages before taking the index lock, so other writers (Dovecot's
            // LDA) are not kept waiting while message files are read.
            let mut sizes = HashMap::new();
            measure_unindexed(dir, list.as_ref(), &files, &mut sizes)?;
            let lock_path = dir.join(UIDLIST_LOCK);
            let _guard = DotLock::acquire(&lock_path, &self.inner.host, self.inner.lock_timeout)?;
            // Re-read and re-scan under the lock: another writer may have indexed or delivered
            // messages since, and records must only be dropped for files that are really gone.
            files = scan(dir)?;
            let fresh = read_uidlist(dir)?;
            measure_unindexed(dir, fresh.as_ref(), &files, &mut sizes)?;
            let mut updated = update_index(fresh, &files, &sizes)?;
            migrate::apply_pending(dir, &mut updated);
            write_uidlist(dir, &updated)?;
            list = Some(updated);
        }
        let list = list.unwrap_or_default();
        let mut entries = Vec::with_capacity(list.records.len());
        let mut listing = Vec::with_capacity(list.records.len());
        for rec in list.records {
            let (Some(location), Some(size)) = (files.remove(&rec.base), rec.exact_size()) else {
                continue;
            };
            let uidl = served_uidl(&rec, list.uid_validity);
            listing.push(MessageInfo { uidl, size });
            entries.push(Entry {
                uid: rec.uid,
                base: rec.base,
                location,
            });
        }
        Ok(Indexed { entries, listing })
    }

    /// Stores one message for every user in `users`: written once to the first user's `tmp/`,
    /// hard-linked (or copied) to the others, made durable and renamed into each `new/` (see
    /// [`writer`]) before returning. The bytes are stored exactly as read. A delivery that would
    /// take any recipient past its quota is refused for all before any maildrop sees it, so a
    /// retry cannot duplicate it for the recipients who had room.
    pub fn deliver_blocking(
        &self,
        users: &[&str],
        input: &mut dyn Read,
    ) -> Result<Delivery, StoreError> {
        let writers = users
            .iter()
            .map(|u| Writer::open(&self.maildir_path(u)?, &self.inner.host))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(first) = writers.first() else {
            return Err(StoreError::InvalidMailbox(String::new(), "no recipients"));
        };
        let mut draft = first.draft(&first.unique_base(), self.inner.limits.max_message_size)?;
        if let Err(e) = draft.copy_from(input) {
            draft.discard();
            return Err(e);
        }
        if draft.is_empty() {
            draft.discard();
            return Err(StoreError::EmptyMessage);
        }
        let written = draft.finish()?;
        let (base, size) = (written.name().to_owned(), written.size());
        let rules = &self.inner.quotas;
        let mut copies = Vec::with_capacity(writers.len());
        let result = (|| {
            for (w, user) in writers.iter().zip(users) {
                quota::check(w.dir(), rules.quota_for(user), size, rules.permanent)?;
            }
            for w in &writers[1..] {
                copies.push(w.adopt(&written)?);
            }
            Ok(())
        })();
        if let Err(e) = result {
            copies.into_iter().for_each(writer::Written::discard);
            written.discard();
            return Err(e);
        }
        for (w, message) in writers.iter().zip(std::iter::once(written).chain(copies)) {
            w.commit(vec![message], Folder::New)?;
            quota::record(w.dir(), i64::try_from(size).unwrap_or(i64::MAX), 1);
        }
        Ok(Delivery { base, size })
    }

    /// Stores one message for every user in `users`, each behind its own header lines:
    /// `headers(user, eol)` gives them, `eol` being the message's own line ending (that of its
    /// first line). The message is spooled once in the first user's `tmp/` (removed
    /// afterwards; a crash leaves it to the 36-hour clean-up) and delivered to each user as by
    /// [`MaildirStore::deliver_blocking`]. Returns the last delivery.
    pub fn deliver_each_blocking(
        &self,
        users: &[&str],
        input: &mut dyn Read,
        headers: &dyn Fn(&str, &str) -> String,
    ) -> Result<Delivery, StoreError> {
        let Some(first) = users.first() else {
            return Err(StoreError::InvalidMailbox(String::new(), "no recipients"));
        };
        let writer = Writer::open(&self.maildir_path(first)?, &self.inner.host)?;
        let mut draft = writer.draft(
            &format!("spool.{}", writer.unique_base()),
            self.inner.limits.max_message_size,
        )?;
        if let Err(e) = draft.copy_from(input) {
            draft.discard();
            return Err(e);
        }
        let spool = draft.finish()?;
        let result = (|| {
            let path = spool.path();
            let open = || File::open(path).map_err(|e| StoreError::io(path, e));
            let mut first_line = Vec::new();
            std::io::BufRead::read_until(
                &mut std::io::BufReader::new(open()?).take(64 * 1024),
                b'\n',
                &mut first_line,
            )
            .map_err(|e| StoreError::io(path, e))?;
            if first_line.is_empty() {
                return Err(StoreError::EmptyMessage);
            }
            let eol = if first_line.ends_with(b"\r\n") {
                "\r\n"
            } else {
                "\n"
            };
            let mut last = None;
            for user in users {
                let prefix = headers(user, eol);
                let mut message = prefix.as_bytes().chain(open()?);
                last = Some(self.deliver_blocking(&[user], &mut message)?);
            }
            last.ok_or(StoreError::EmptyMessage)
        })();
        spool.discard();
        result
    }
}

impl MailStore for MaildirStore {
    type Maildrop = MaildirDrop;

    async fn open(&self, user: &str) -> Result<(MaildirDrop, Vec<MessageInfo>), StoreError> {
        let store = self.clone();
        let user = user.to_owned();
        blocking(move || store.open_blocking(&user)).await
    }

    async fn deliver_file(
        &self,
        user: &str,
        prefix: &[u8],
        spool: &Path,
    ) -> Result<u64, StoreError> {
        let store = self.clone();
        let user = user.to_owned();
        let prefix = prefix.to_vec();
        let spool = spool.to_owned();
        blocking(move || {
            let file = File::open(&spool).map_err(|e| StoreError::io(&spool, e))?;
            let mut message = prefix.as_slice().chain(file);
            Ok(store.deliver_blocking(&[&user], &mut message)?.size)
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
}

/// An open, locked Maildir maildrop.
#[derive(Debug)]
pub struct MaildirDrop {
    dir: PathBuf,
    host: String,
    lock_timeout: Duration,
    /// The session lock; closing the file releases it.
    _lock: File,
    /// Every message in the maildrop (shared with the index cache); this session's snapshot is
    /// `entries[first..]`.
    indexed: Arc<Indexed>,
    first: usize,
    /// Messages found under another name since the open (renamed by another program).
    moved: HashMap<usize, Located>,
    cache: Arc<IndexCache>,
}

impl MaildirDrop {
    /// The message at this listing index of the session.
    fn entry(&self, index: usize) -> Option<&Entry> {
        self.indexed.entries.get(self.first.checked_add(index)?)
    }

    fn path_of(&self, index: usize) -> PathBuf {
        let loc = self
            .moved
            .get(&index)
            .or_else(|| self.entry(index).map(|e| &e.location))
            .expect("index checked by the caller");
        self.dir.join(loc.sub.dir()).join(&loc.name)
    }

    /// Finds a message again after another program renamed it (flags changed, new/ to cur/).
    fn relocate(&mut self, index: usize) -> Result<Option<PathBuf>, StoreError> {
        let files = scan(&self.dir)?;
        let Some(entry) = self.entry(index) else {
            return Ok(None);
        };
        match files.get(&entry.base) {
            Some(loc) => {
                self.moved.insert(index, loc.clone());
                Ok(Some(self.path_of(index)))
            }
            None => Ok(None),
        }
    }

    fn open_message(&mut self, index: usize) -> Result<File, StoreError> {
        if self.entry(index).is_none() {
            return Err(StoreError::MessageGone(index));
        }
        let path = self.path_of(index);
        match untrusted::open_message(&path, None) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == ErrorKind::NotFound => match self.relocate(index)? {
                Some(p) => untrusted::open_message(&p, None).map_err(|e| StoreError::io(&p, e)),
                None => Err(StoreError::MessageGone(index)),
            },
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    fn commit_blocking(mut self, deleted: Vec<usize>) -> Result<(), StoreError> {
        self.remove(deleted)
    }

    /// Removes the messages at these listing indices, durably, keeping the lock.
    fn remove(&mut self, deleted: Vec<usize>) -> Result<(), StoreError> {
        let total = deleted.len();
        let mut removed = HashSet::new();
        let mut failures = Vec::new();
        let quota_tracked = quota::tracked(&self.dir);
        let mut freed = 0u64;
        for index in deleted {
            let Some(entry) = self.entry(index) else {
                continue;
            };
            let uid = entry.uid;
            let path = self.path_of(index);
            if quota_tracked {
                freed += quota::stored_size(&entry.base, &path);
            }
            let outcome = match fs::remove_file(&path) {
                Err(e) if e.kind() == ErrorKind::NotFound => match self.relocate(index) {
                    Ok(Some(p)) => fs::remove_file(&p).map_err(|e| StoreError::io(&p, e)),
                    Ok(None) => Ok(()), // already removed by someone else: the goal is met
                    Err(e) => Err(e),
                },
                other => other.map_err(|e| StoreError::io(&path, e)),
            };
            match outcome {
                Ok(()) => {
                    removed.insert(uid);
                }
                Err(e) => failures.push(e),
            }
        }
        if !removed.is_empty() {
            // The directories changed, so the cached index is stale: free it now.
            self.cache.forget(&self.dir);
            if quota_tracked {
                let count = i64::try_from(removed.len()).unwrap_or(i64::MAX);
                quota::record(&self.dir, -i64::try_from(freed).unwrap_or(i64::MAX), -count);
            }
            sync_dir(&self.dir.join("cur"))?;
            sync_dir(&self.dir.join("new"))?;
            if let Err(e) = self.drop_records(&removed) {
                // The files are gone, which is what the client asked for; the next open drops
                // the dangling records.
                tracing::warn!(maildir = %self.dir.display(), error = %e, "index not updated after removing messages");
            }
        }
        if let Some(first) = failures.first() {
            return Err(StoreError::PartialCommit {
                failed: failures.len(),
                total,
                first: first.to_string(),
            });
        }
        Ok(())
    }

    fn drop_records(&self, removed: &HashSet<u32>) -> Result<(), StoreError> {
        let _guard = DotLock::acquire(&self.dir.join(UIDLIST_LOCK), &self.host, self.lock_timeout)?;
        if let Some(mut list) = read_uidlist(&self.dir)? {
            list.records.retain(|r| !removed.contains(&r.uid));
            write_uidlist(&self.dir, &list)?;
        }
        Ok(())
    }
}

impl Maildrop for MaildirDrop {
    type Reader = MessageReader;

    async fn read(&mut self, index: usize) -> Result<MessageReader, StoreError> {
        // Opening a file is a quick metadata operation, and so is reading a small one (from the
        // page cache, where a message about to be retrieved usually is): both happen here.
        // Larger files are read in chunks through tokio's blocking pool.
        let mut file = self.open_message(index)?;
        let io = |e| StoreError::io(self.path_of(index), e);
        let len = file.metadata().map_err(io)?.len();
        if len <= SMALL_MESSAGE {
            let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0) + 1);
            file.read_to_end(&mut bytes).map_err(io)?;
            return Ok(MessageReader::Memory(std::io::Cursor::new(bytes)));
        }
        Ok(MessageReader::File {
            file: Arc::new(file),
            offset: 0,
        })
    }

    async fn mark_seen(&mut self, index: usize) -> Result<(), StoreError> {
        // A rename is a quick metadata operation, like opening the file: done here.
        for _ in 0..2 {
            let Some(entry) = self.entry(index) else {
                return Ok(());
            };
            let location = self.moved.get(&index).unwrap_or(&entry.location);
            let Some(name) = filename::seen_name(&location.name, location.sub == Folder::Cur)
            else {
                return Ok(());
            };
            let from = self.path_of(index);
            let to = self.dir.join("cur").join(&name);
            match fs::rename(&from, &to) {
                Ok(()) => {
                    self.moved.insert(
                        index,
                        Located {
                            sub: Folder::Cur,
                            name,
                        },
                    );
                    return Ok(());
                }
                // Renamed by another program meanwhile: find it and try once more.
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    if self.relocate(index)?.is_none() {
                        return Ok(());
                    }
                }
                Err(e) => return Err(StoreError::io(&from, e)),
            }
        }
        Ok(())
    }

    async fn note_retrieved(&mut self, indices: &[usize]) -> Result<(), StoreError> {
        let bases: Vec<String> = indices
            .iter()
            .filter_map(|&i| self.entry(i).map(|e| e.base.clone()))
            .collect();
        let dir = self.dir.clone();
        blocking(move || retention::append(&dir, bases.iter().map(String::as_str), unix_now()))
            .await
    }

    async fn commit(self, deleted: Vec<usize>) -> Result<(), StoreError> {
        if deleted.is_empty() {
            // Nothing to remove: releasing the lock (closing a file) is all there is to do.
            return Ok(());
        }
        blocking(move || self.commit_blocking(deleted)).await
    }
}

/// Seconds since the Unix epoch.
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

impl MaildirStore {
    /// Removes from `user`'s maildrop the messages first retrieved at least `days` days before
    /// `now` (Unix seconds), or only lists them when `dry_run`. Messages never retrieved are
    /// never touched. Fails with [`StoreError::InUse`] while a POP3 session holds the maildrop.
    pub fn expire_blocking(
        &self,
        user: &str,
        days: u32,
        now: u64,
        dry_run: bool,
    ) -> Result<Vec<Expired>, StoreError> {
        let dir = self.maildir_path(user)?;
        if !retention::exists(&dir) {
            return Ok(Vec::new());
        }
        let (mut drop, listing) = self.open_blocking(user)?;
        let mut record = retention::read(&dir)?;
        let cutoff = now.saturating_sub(u64::from(days) * 86_400);
        let mut due = Vec::new();
        let mut expired = Vec::new();
        for (i, info) in listing.iter().enumerate() {
            let Some(entry) = drop.entry(i) else { continue };
            if let Some(&at) = record.get(&entry.base).filter(|&&at| at <= cutoff) {
                due.push(i);
                expired.push(Expired {
                    uidl: info.uidl.clone(),
                    size: info.size,
                    retrieved_at: at,
                });
            }
        }
        if dry_run {
            return Ok(expired);
        }
        let removed = if due.is_empty() {
            Ok(())
        } else {
            drop.remove(due)
        };
        // Keep only records of messages still in the maildrop (whatever removed the others).
        let present: HashSet<&str> = drop
            .indexed
            .entries
            .iter()
            .map(|e| e.base.as_str())
            .collect();
        let files = scan(&dir)?;
        record.retain(|base, _| present.contains(base.as_str()) && files.contains_key(base));
        retention::rewrite(&dir, &record)?;
        removed.map(|()| expired)
    }

    /// Every user with a maildrop under the root, by the names [`MailStore::open`] takes
    /// (`local@domain`, or `local` for the default domain).
    pub fn users_blocking(&self) -> Result<Vec<String>, StoreError> {
        let root = &self.inner.root;
        let mut users = Vec::new();
        let domains = match fs::read_dir(root) {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(users),
            Err(e) => return Err(StoreError::io(root, e)),
        };
        for domain in domains.flatten() {
            let Ok(domain_name) = domain.file_name().into_string() else {
                continue;
            };
            let Ok(locals) = fs::read_dir(domain.path()) else {
                continue;
            };
            for local in locals.flatten() {
                let Ok(local_name) = local.file_name().into_string() else {
                    continue;
                };
                if !local.path().join("Maildir").is_dir() {
                    continue;
                }
                let user = if domain_name == crate::DEFAULT_DOMAIN {
                    local_name
                } else {
                    format!("{local_name}@{domain_name}")
                };
                if MailboxPath::parse(&user).is_ok() {
                    users.push(user);
                }
            }
        }
        users.sort();
        Ok(users)
    }
}

/// Messages up to this size are read whole when opened, without a round trip through the
/// blocking thread pool (which costs more than reading 64 KiB from the page cache).
const SMALL_MESSAGE: u64 = 64 * 1024;

/// A message being retrieved: small ones already in memory, larger ones read from the file.
#[derive(Debug)]
pub enum MessageReader {
    /// The whole message, read when it was opened.
    Memory(std::io::Cursor<Vec<u8>>),
    /// The open file and the offset of the next chunk, read through tokio's blocking pool
    /// straight into the caller's buffer.
    File {
        /// The message file.
        file: Arc<File>,
        /// Where the next chunk starts.
        offset: u64,
    },
}

impl crate::MessageSource for MessageReader {
    async fn next_chunk(&mut self, mut buf: Vec<u8>) -> std::io::Result<Vec<u8>> {
        match self {
            MessageReader::Memory(c) => c.next_chunk(buf).await,
            MessageReader::File { file, offset } => {
                let file = Arc::clone(file);
                let at = *offset;
                let buf = tokio::task::spawn_blocking(move || {
                    crate::fill_from(&mut buf, |b| file.read_at(b, at)).map(|()| buf)
                })
                .await
                .map_err(std::io::Error::other)??;
                *offset += buf.len() as u64;
                Ok(buf)
            }
        }
    }
}

/// Dovecot's default `pop3_uidl_format = %08Xu%08Xv`. Its `%X` is lower-case hex; UIDLs are
/// compared byte for byte by clients, so the case matters for a migration.
/// The UIDL a record is served under: its pinned `P` field if valid, else the default.
fn served_uidl(rec: &Record, uid_validity: u32) -> String {
    match rec.ext(POP3_UIDL_KEY) {
        Some(p) if valid_uidl(p) => p.to_owned(),
        _ => default_uidl(rec.uid, uid_validity),
    }
}

fn default_uidl(uid: u32, uid_validity: u32) -> String {
    format!("{uid:08x}{uid_validity:08x}")
}

/// Whether `uidl` is a valid RFC 1939 unique-id: 1 to 70 characters in 0x21..0x7E.
pub fn valid_uidl(uidl: &str) -> bool {
    (1..=70).contains(&uidl.len()) && uidl.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn session_lock(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(SESSION_LOCK);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| StoreError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(StoreError::InUse),
        Err(fs::TryLockError::Error(e)) => Err(StoreError::io(&path, e)),
    }
}

/// Files in `tmp/` older than this are the remains of deliveries that died half-way (Dovecot
/// uses the same 36 hours); no delivery takes that long.
const TMP_ABANDONED_AFTER: Duration = Duration::from_secs(36 * 3600);

/// Removes abandoned files from `tmp/`. Best effort: a failure only leaves garbage behind.
fn clean_tmp(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let abandoned = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > TMP_ABANDONED_AFTER);
        if abandoned {
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "removed an abandoned delivery from tmp/")
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot remove an abandoned delivery from tmp/")
                }
            }
        }
    }
}

/// Lists `new/` and `cur/`: base name to location. Entries that are not regular files
/// (symbolic links, FIFOs, directories: see [`untrusted`]) are skipped with a warning.
fn scan(dir: &Path) -> Result<HashMap<String, Located>, StoreError> {
    let (files, refused) = scan_reporting(dir)?;
    for (path, why) in refused {
        tracing::warn!(file = %path.display(), "skipping {why}");
    }
    Ok(files)
}

/// Entries of a Maildir that are not message files, and why.
type Refused = Vec<(PathBuf, &'static str)>;

/// [`scan`], returning the entries it skips and why instead of logging them.
fn scan_reporting(dir: &Path) -> Result<(HashMap<String, Located>, Refused), StoreError> {
    let mut files = HashMap::new();
    let mut refused = Vec::new();
    for sub in [Folder::New, Folder::Cur] {
        let path = dir.join(sub.dir());
        let entries = fs::read_dir(&path).map_err(|e| StoreError::io(&path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&path, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                tracing::warn!(dir = %path.display(), "skipping a file name that is not UTF-8");
                continue;
            };
            if !is_message(&name) {
                continue;
            }
            // The entry's own type, not what a link points at.
            let file_type = entry.file_type().map_err(|e| StoreError::io(&path, e))?;
            if let Some(why) = untrusted::refusal(file_type) {
                refused.push((entry.path(), why));
                continue;
            }
            let key = base(&name).to_owned();
            // The same base in new/ and cur/ happens only mid-rename by another program; either
            // copy is the same message.
            files.entry(key).or_insert(Located { sub, name });
        }
    }
    Ok((files, refused))
}

fn read_uidlist(dir: &Path) -> Result<Option<Uidlist>, StoreError> {
    let path = dir.join(UIDLIST);
    let text = match fs::read(&path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(&path, e)),
    };
    let (list, warnings) = Uidlist::parse(&text);
    for w in warnings {
        tracing::warn!(index = %path.display(), "{w}");
    }
    Ok(list)
}

fn write_uidlist(dir: &Path, list: &Uidlist) -> Result<(), StoreError> {
    replace_file(
        &dir.join(UIDLIST),
        &dir.join(UIDLIST_TMP),
        list.serialize().as_bytes(),
    )?;
    sync_dir(dir)
}

/// Replaces `path` with `bytes` (mode 0600) by writing `tmp`, fsyncing it and renaming it over
/// `path`, so a crash leaves the old or the new contents, never a mixture. `tmp` is removed on
/// failure.
fn replace_file(path: &Path, tmp: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    untrusted::replace_file(path, tmp, bytes, 0o600).map_err(|e| StoreError::io(path, e))
}

/// Whether the index must be written: files it does not know, records without files, or
/// records without Poplar's exact size.
fn needs_update(list: Option<&Uidlist>, files: &HashMap<String, Located>) -> bool {
    let Some(list) = list else {
        return true;
    };
    let mut known = 0;
    for rec in &list.records {
        if !files.contains_key(&rec.base) || rec.exact_size().is_none() {
            return true;
        }
        known += 1;
    }
    known != files.len()
}

/// Adds to `sizes` the exact sizes of the files that neither the index nor `sizes` has.
fn measure_unindexed(
    dir: &Path,
    list: Option<&Uidlist>,
    files: &HashMap<String, Located>,
    sizes: &mut HashMap<String, u64>,
) -> Result<(), StoreError> {
    let indexed: HashSet<&str> = list
        .map(|l| {
            l.records
                .iter()
                .filter(|r| r.exact_size().is_some())
                .map(|r| r.base.as_str())
                .collect()
        })
        .unwrap_or_default();
    let todo: Vec<(&String, PathBuf)> = files
        .iter()
        .filter(|(key, _)| !indexed.contains(key.as_str()) && !sizes.contains_key(*key))
        .map(|(key, loc)| (key, dir.join(loc.sub.dir()).join(&loc.name)))
        .collect();
    // Each file costs an open, a stat and a one-octet read, mostly waiting on the kernel: a
    // first open of a large maildrop spreads them over the cores.
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(todo.len() / PARALLEL_MEASURE_MIN)
        .clamp(1, 8);
    let measure = |part: &[(&String, PathBuf)]| -> Result<Vec<(String, u64)>, StoreError> {
        let mut found = Vec::with_capacity(part.len());
        for (key, path) in part {
            match exact_size(path, key) {
                Ok(size) => found.push(((*key).clone(), size)),
                // Gone since the scan (expunged meanwhile): not part of this session.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(path, e)),
            }
        }
        Ok(found)
    };
    let parts: Vec<Result<Vec<(String, u64)>, StoreError>> = if threads == 1 {
        vec![measure(&todo)]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = todo
                .chunks(todo.len().div_ceil(threads))
                .map(|part| scope.spawn(move || measure(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(StoreError::Internal(
                            "a thread measuring messages panicked".into(),
                        ))
                    })
                })
                .collect()
        })
    };
    for part in parts {
        sizes.extend(part?);
    }
    Ok(())
}

/// The canonical size of a message file: from its `,W=` hint and its last octet when it has
/// one, otherwise by reading it.
fn exact_size(path: &Path, base: &str) -> std::io::Result<u64> {
    let mut file = untrusted::open_message(path, None)?;
    if let Some(virtual_size) = size_hints(base).virtual_size {
        let len = file.metadata()?.len();
        let last = if len == 0 {
            None
        } else {
            let mut octet = [0u8; 1];
            file.read_exact_at(&mut octet, len - 1)?;
            Some(octet[0])
        };
        return Ok(canonical_size_from_virtual(virtual_size, last));
    }
    let mut counter = SizeCounter::new();
    let mut buf = vec![0u8; COPY_BUFFER];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        counter.update(&buf[..n]);
    }
    Ok(counter.canonical_size())
}

/// Brings the index in line with the files: drops records whose file is gone, assigns UIDs to new
/// files in arrival order, and records exact sizes.
fn update_index(
    list: Option<Uidlist>,
    files: &HashMap<String, Located>,
    sizes: &HashMap<String, u64>,
) -> Result<Uidlist, StoreError> {
    let mut list = match list {
        Some(l) => l,
        None => Uidlist::new(new_uid_validity(), new_guid()?),
    };
    list.records.retain(|r| files.contains_key(&r.base));
    for rec in &mut list.records {
        if rec.exact_size().is_none()
            && let Some(size) = sizes.get(&rec.base)
        {
            rec.set_ext(EXACT_SIZE_KEY, size.to_string());
        }
    }
    let known: HashSet<&str> = list.records.iter().map(|r| r.base.as_str()).collect();
    let mut new: Vec<&String> = files
        .keys()
        .filter(|b| !known.contains(b.as_str()))
        .collect();
    new.sort_by_cached_key(|b| (filename::arrival_time(b), b.as_str()));
    let mut added = Vec::with_capacity(new.len());
    for b in new {
        let Some(size) = sizes.get(b) else { continue };
        let Some(uid) = list.allocate_uid() else {
            tracing::error!("maildrop has used up all 2^32 UIDs; new messages are not indexed");
            break;
        };
        added.push(Record {
            uid,
            ext: vec![(EXACT_SIZE_KEY, size.to_string())],
            base: b.clone(),
        });
    }
    list.records.extend(added);
    Ok(list)
}

fn new_uid_validity() -> u32 {
    let secs = unix_now();
    u32::try_from(secs).unwrap_or(u32::MAX).max(1)
}

fn new_guid() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Internal(e.to_string()))?;
    Ok(hex::encode(bytes))
}
