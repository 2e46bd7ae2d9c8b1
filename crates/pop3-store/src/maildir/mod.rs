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
mod index;
mod maildrop;
pub mod migrate;
mod purge;
mod quota;
mod retention;
pub mod sdps;
pub mod uidlist;
pub mod untrusted;
pub mod writer;

use crate::dotlock::DotLock;
use crate::error::StoreError;
use crate::name::MailboxPath;
use crate::{HostEnvelope, MailStore, Maildrop, MessageInfo, QuotaRules};
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
use uidlist::{EXACT_SIZE_KEY, POP3_UIDL_KEY, Record, Uidlist, VERBATIM_KEY};
use writer::{Folder, Writer, sync_dir};

pub use index::valid_uidl;
use index::*;
use maildrop::*;
pub use maildrop::{MaildirDrop, MessageReader};
pub use purge::Expired;

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
    /// SDPS host names (lower case) whose mail goes to one host maildrop.
    sdps_hosts: Vec<String>,
    /// Deliveries store bare LFs as CRLF.
    save_crlf: bool,
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

/// Whether `dir` looks like a Maildir: it has `cur/` and `new/` (`tmp/` is created on demand).
pub fn is_maildir(dir: &Path) -> bool {
    dir.join("cur").is_dir() && dir.join("new").is_dir()
}

#[derive(Debug, Clone)]
struct Located {
    sub: Folder,
    name: String,
}

/// How much an open may do: everything, or only what costs a few quick metadata calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    Quick,
    Thorough,
}

/// What [`MaildirStore::reindex_blocking`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reindexed {
    /// Messages read.
    pub messages: usize,
    /// Of those, the ones RETR can send as stored.
    pub verbatim: usize,
    /// Of those, the ones whose indexed size was wrong.
    pub sizes_corrected: usize,
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
                sdps_hosts: Vec::new(),
                save_crlf: true,
            }),
        }
    }

    /// The same store storing deliveries with their line ends as they arrive (`false`) or as
    /// CRLF, the way RETR sends them (`true`, the default; see [`writer`]).
    pub fn with_save_crlf(self, on: bool) -> Self {
        self.rebuilt(|inner| inner.save_crlf = on)
    }

    /// The same store with these limits.
    pub fn with_limits(self, limits: StoreLimits) -> Self {
        self.rebuilt(|inner| inner.limits = limits)
    }

    /// The same store with these quotas, enforced on delivery.
    pub fn with_quotas(self, quotas: QuotaRules) -> Self {
        self.rebuilt(|inner| inner.quotas = quotas)
    }

    /// Serves these host names as SDPS host maildrops (see [`sdps`]).
    pub fn with_sdps_hosts(self, hosts: &[String]) -> Self {
        let hosts = hosts.iter().map(|h| h.to_lowercase()).collect();
        self.rebuilt(|inner| inner.sdps_hosts = hosts)
    }

    /// The host maildrop and view a session name opens: the host itself (`example.net`), or a
    /// person's address at it (`john@example.net`); `None` for an ordinary maildrop.
    pub fn host_view(&self, user: &str) -> Option<(String, sdps::HostView)> {
        let hosts = &self.inner.sdps_hosts;
        let mut lower = user.to_lowercase();
        if hosts.contains(&lower) {
            return Some((lower, sdps::HostView::Whole));
        }
        // SDPS's own form, `john+example.net`, is `john@example.net`.
        if !lower.contains('@')
            && let Some((local, host)) = lower.rsplit_once('+')
            && hosts.iter().any(|h| h == host)
        {
            lower = format!("{local}@{host}");
        }
        let (_, host) = lower.rsplit_once('@')?;
        hosts
            .contains(&host.to_owned())
            .then(|| (host.to_owned(), sdps::HostView::Recipient(lower.clone())))
    }

    /// The SDPS host maildrop mail for `address` goes to, if its domain is a host.
    pub fn host_of(&self, address: &str) -> Option<String> {
        self.host_view(address).map(|(host, _)| host)
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
            sdps_hosts: self.inner.sdps_hosts.clone(),
            save_crlf: self.inner.save_crlf,
        };
        change(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Whether deliveries store line ends as CRLF ([`MaildirStore::with_save_crlf`]).
    pub fn saves_crlf(&self) -> bool {
        self.inner.save_crlf
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
        self.open_with(user, Pace::Thorough)?
            .ok_or_else(|| StoreError::Internal("a thorough open gave up".into()))
    }

    /// Opens a maildrop if that takes only quick metadata calls: its index is kept (see
    /// [`cache`]), its lock is free, `tmp/` is not due for a look, and it is no SDPS host
    /// maildrop. `None` otherwise: use [`MaildirStore::open_blocking`].
    pub fn open_quickly(
        &self,
        user: &str,
    ) -> Result<Option<(MaildirDrop, Vec<MessageInfo>)>, StoreError> {
        self.open_with(user, Pace::Quick)
    }

    fn open_with(
        &self,
        user: &str,
        pace: Pace,
    ) -> Result<Option<(MaildirDrop, Vec<MessageInfo>)>, StoreError> {
        let view = self.host_view(user);
        let quick = pace == Pace::Quick;
        if quick && view.is_some() {
            return Ok(None);
        }
        let dir = match &view {
            Some((host, _)) => self.maildir_path(host)?,
            None => self.maildir_path(user)?,
        };
        writer::create_dirs(&dir)?;
        let lock = if quick {
            match session_lock_now(&dir)? {
                Some(lock) => lock,
                None => return Ok(None),
            }
        } else {
            session_lock(&dir)?
        };
        if quick && tmp_check_due(&dir, unix_now(), false) {
            return Ok(None);
        }
        if !quick && tmp_check_due(&dir, unix_now(), true) {
            clean_tmp(&dir.join("tmp"));
        }
        let stamp = Stamp::of(&dir)?;
        let indexed = match self.inner.cache.get(&dir, &stamp) {
            Some(indexed) => indexed,
            None if quick => return Ok(None),
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
        let mut drop = MaildirDrop {
            dir,
            host: self.inner.host.clone(),
            lock_timeout: self.inner.lock_timeout,
            _lock: lock,
            indexed,
            first: excess,
            moved: HashMap::new(),
            cache: Arc::clone(&self.inner.cache),
            copies: None,
        };
        let Some((_, view)) = view else {
            return Ok(Some((drop, listing)));
        };
        let entries = &drop.indexed.entries[excess..];
        let viewed = sdps::view(&drop.dir, entries, &listing, &view)?;
        if !viewed.finished.is_empty() {
            // A commit that recorded the last copies deleted and then stopped: finish it.
            drop.remove(viewed.finished)?;
        }
        drop.copies = Some(viewed.copies);
        Ok(Some((drop, viewed.listing)))
    }

    /// Writes a new message into `w`'s `tmp/` (bounded by `limits.max_message_size`, refused
    /// when empty), fsynced, ready to be committed into `new/`.
    fn write_message(
        &self,
        w: &Writer,
        input: &mut dyn Read,
    ) -> Result<writer::Written, StoreError> {
        let mut draft = w
            .draft(&w.unique_base(), self.inner.limits.max_message_size)?
            .save_crlf(self.inner.save_crlf);
        if let Err(e) = draft.copy_from(input) {
            draft.discard();
            return Err(e);
        }
        if draft.is_empty() {
            draft.discard();
            return Err(StoreError::EmptyMessage);
        }
        draft.finish()
    }

    /// Delivers one message to an SDPS host maildrop for `recipients` (addresses at the host)
    /// with its envelope: stored once, one copy per recipient.
    pub fn deliver_to_host_blocking(
        &self,
        host: &str,
        sender: &str,
        recipients: &[String],
        input: &mut dyn Read,
    ) -> Result<Delivery, StoreError> {
        let w = Writer::open(&self.maildir_path(host)?, &self.inner.host)?;
        let written = self.write_message(&w, input)?;
        let (base, size) = (written.name().to_owned(), written.size());
        let rules = &self.inner.quotas;
        let recorded = quota::check(w.dir(), rules.quota_for(host), size, rules.permanent)
            .and_then(|()| sdps::record_delivery(w.dir(), &base, sender, recipients));
        if let Err(e) = recorded {
            written.discard();
            return Err(e);
        }
        w.commit(vec![written], Folder::New)?;
        quota::record(w.dir(), i64::try_from(size).unwrap_or(i64::MAX), 1);
        Ok(Delivery { base, size })
    }

    /// Reads every message of `user`'s maildrop and records in the index what RETR needs: its
    /// exact size (correcting any taken from a wrong `,W=` hint) and whether the file goes on
    /// the wire as it is (`V1`/`V0`), which mail stored by other programs, or before Poplar
    /// stored CRLF, does not say by itself. Takes the session lock, so it waits for no POP3
    /// session: [`StoreError::InUse`] while one holds the maildrop. A user without a Maildir
    /// yet has nothing to read.
    pub fn reindex_blocking(&self, user: &str) -> Result<Reindexed, StoreError> {
        let dir = match self.host_view(user) {
            Some((host, _)) => self.maildir_path(&host)?,
            None => self.maildir_path(user)?,
        };
        if !is_maildir(&dir) {
            // Nothing delivered yet: nothing to read.
            return Ok(Reindexed::default());
        }
        let _lock = session_lock(&dir)?;
        let indexed = self.index(&dir)?;
        let mut measured = HashMap::with_capacity(indexed.entries.len());
        for entry in &indexed.entries {
            let path = dir
                .join(entry.location.sub.dir())
                .join(&entry.location.name);
            let counter = match untrusted::open_message(&path, None) {
                Ok(mut file) => count(&mut file).map_err(|e| StoreError::io(&path, e))?,
                // Removed by another program meanwhile: the next open drops its record.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(&path, e)),
            };
            let verbatim = counter.verbatim();
            measured.insert(entry.base.as_str(), (counter.canonical_size(), verbatim));
        }
        let _guard = DotLock::acquire(
            &dir.join(UIDLIST_LOCK),
            &self.inner.host,
            self.inner.lock_timeout,
        )?;
        let mut list = read_uidlist(&dir)?.unwrap_or_default();
        let mut report = Reindexed::default();
        for rec in &mut list.records {
            let Some(&(size, verbatim)) = measured.get(rec.base.as_str()) else {
                continue;
            };
            report.messages += 1;
            report.verbatim += usize::from(verbatim);
            if rec.exact_size() != Some(size) {
                report.sizes_corrected += 1;
                rec.set_ext(EXACT_SIZE_KEY, size.to_string());
            }
            rec.set_ext(VERBATIM_KEY, if verbatim { "1" } else { "0" }.into());
        }
        write_uidlist(&dir, &list)?;
        self.inner.cache.forget(&dir);
        Ok(report)
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
            listing.push(MessageInfo {
                uidl,
                size,
                envelope: None,
            });
            entries.push(Entry {
                uid: rec.uid,
                // A record made by a program that knows nothing of V (an older Poplar): the
                // name's hint says it.
                verbatim: match rec.ext(VERBATIM_KEY) {
                    Some(v) => v == "1",
                    None => verbatim_hint(&rec.base),
                },
                base: rec.base,
                location,
            });
        }
        Ok(Indexed { entries, listing })
    }

    /// Stores one message for every user in `users`: written once to the first user's `tmp/`,
    /// hard-linked (or copied) to the others, made durable and renamed into each `new/` (see
    /// [`writer`]) before returning. The bytes are stored exactly as read, line ends as CRLF
    /// unless [`MaildirStore::with_save_crlf`] said otherwise. A delivery that would
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
        let written = self.write_message(first, input)?;
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
        let mut draft = writer
            .draft(
                &format!("spool.{}", writer.unique_base()),
                self.inner.limits.max_message_size,
            )?
            .save_crlf(self.inner.save_crlf);
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
        // A maildrop opened recently and unchanged since (a client polling) opens with a few
        // stat calls and a lock, done here like the read of a small message: a hand-off to the
        // blocking thread pool and back would cost more. Anything slower goes there.
        if let Some(opened) = self.open_quickly(user)? {
            return Ok(opened);
        }
        let store = self.clone();
        let user = user.to_owned();
        blocking(move || store.open_blocking(&user)).await
    }

    async fn check(&self) -> Result<(), StoreError> {
        let root = self.root().to_owned();
        blocking(move || match std::fs::read_dir(&root) {
            Ok(_) => Ok(()),
            // Nothing delivered yet: the root is made with the first maildrop, so its parent
            // must be there to make it in.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let parent = root.parent().unwrap_or(&root);
                std::fs::read_dir(parent)
                    .map(drop)
                    .map_err(|e| StoreError::io(parent, e))
            }
            Err(e) => Err(StoreError::io(&root, e)),
        })
        .await
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

    fn host_of(&self, address: &str) -> Option<String> {
        MaildirStore::host_of(self, address)
    }

    async fn deliver_to_host(
        &self,
        host: &str,
        envelope: HostEnvelope,
        prefix: &[u8],
        spool: &Path,
    ) -> Result<u64, StoreError> {
        let store = self.clone();
        let host = host.to_owned();
        let prefix = prefix.to_vec();
        let spool = spool.to_owned();
        blocking(move || {
            let file = File::open(&spool).map_err(|e| StoreError::io(&spool, e))?;
            let mut message = prefix.as_slice().chain(file);
            let (sender, recipients) = (&envelope.sender, &envelope.recipients);
            Ok(store
                .deliver_to_host_blocking(&host, sender, recipients, &mut message)?
                .size)
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
