//! A POP3 session's maildrop: the session lock, the snapshot it reads messages from, marking
//! messages seen, and the commit that removes what the session deleted.

use super::*;

/// Opens (creating, 0600) a file that exists to be `flock`ed.
pub(super) fn lock_file(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| StoreError::io(path, e))
}

/// The session lock if it is free now, without waiting: `None` when someone holds it.
pub(super) fn session_lock_now(dir: &Path) -> Result<Option<File>, StoreError> {
    let path = dir.join(SESSION_LOCK);
    let file = lock_file(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::io(&path, e)),
    }
}

/// Takes the POP3 session lock, an `flock` on `poplar-pop3.lock` that the kernel releases the
/// instant the file is closed, however the session ends. A lock still held after
/// [`poplar_util::flock::PATIENCE`] is `[IN-USE]`.
pub(super) fn session_lock(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(SESSION_LOCK);
    let file = lock_file(&path)?;
    match poplar_util::flock::try_exclusive(&file) {
        Ok(true) => Ok(file),
        Ok(false) => Err(StoreError::InUse),
        Err(e) => Err(StoreError::io(&path, e)),
    }
}

/// Files in `tmp/` older than this are the remains of deliveries that died half-way (Dovecot
/// uses the same 36 hours); no delivery takes that long.
pub(super) const TMP_ABANDONED_AFTER: Duration = Duration::from_secs(36 * 3600);

/// How often a maildrop's `tmp/` is looked at for abandoned files: files are abandoned only
/// after [`TMP_ABANDONED_AFTER`], so an hour late is soon enough, and the sessions of a client
/// polling every minute are spared a directory read each.
const TMP_CHECK_EVERY: u64 = 3600;

/// When a maildrop's `tmp/` was last looked at (Unix seconds), in slots by a hash of its path:
/// fixed memory however many maildrops there are. Maildrops sharing a slot share its hour, so
/// with more maildrops than slots one may wait a few hours longer; none waits forever, as the
/// first open after the slot's hour cleans.
static TMP_CHECKED: [std::sync::atomic::AtomicU64; 1 << 16] =
    [const { std::sync::atomic::AtomicU64::new(0) }; 1 << 16];

/// Whether `dir`'s `tmp/` is due to be looked at, now (Unix seconds); if so and `record`, records
/// that it was.
pub(super) fn tmp_check_due(dir: &Path, now: u64, record: bool) -> bool {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    use std::sync::atomic::Ordering;
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(dir);
    let [low, high, ..] = hash.to_le_bytes();
    let slot = &TMP_CHECKED[usize::from(u16::from_le_bytes([low, high]))];
    let last = slot.load(Ordering::Relaxed);
    now.saturating_sub(last) >= TMP_CHECK_EVERY
        && (!record
            || slot
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok())
}

/// Removes abandoned files from `tmp/`. Best effort: a failure only leaves garbage behind.
pub(super) fn clean_tmp(tmp: &Path) {
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

/// An open, locked Maildir maildrop.
#[derive(Debug)]
pub struct MaildirDrop {
    pub(super) dir: PathBuf,
    pub(super) host: String,
    pub(super) lock_timeout: Duration,
    /// The session lock; closing the file releases it.
    pub(super) _lock: File,
    /// Every message in the maildrop (shared with the index cache); this session's snapshot is
    /// `entries[first..]`.
    pub(super) indexed: Arc<Indexed>,
    pub(super) first: usize,
    /// Messages found under another name since the open (renamed by another program).
    pub(super) moved: HashMap<usize, Located>,
    pub(super) cache: Arc<IndexCache>,
    /// In an SDPS host maildrop, what each of the session's message numbers stands for; the
    /// indices below (`entry`, `path_of`, ...) are the files'.
    pub(super) copies: Option<Vec<sdps::CopyOf>>,
}

impl MaildirDrop {
    /// The file a session's message number stands for.
    fn file_of(&self, index: usize) -> usize {
        match &self.copies {
            Some(copies) => copies.get(index).map_or(usize::MAX, |c| c.file),
            None => index,
        }
    }

    /// The message at this listing index of the session.
    pub(super) fn entry(&self, index: usize) -> Option<&Entry> {
        self.indexed.entries.get(self.first.checked_add(index)?)
    }

    pub(super) fn path_of(&self, index: usize) -> PathBuf {
        let loc = self
            .moved
            .get(&index)
            .or_else(|| self.entry(index).map(|e| &e.location))
            .expect("index checked by the caller");
        self.dir.join(loc.sub.dir()).join(&loc.name)
    }

    /// Finds a message again after another program renamed it (flags changed, new/ to cur/).
    pub(super) fn relocate(&mut self, index: usize) -> Result<Option<PathBuf>, StoreError> {
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

    /// Opens the file of message `index`, with its length.
    pub(super) fn open_message(&mut self, index: usize) -> Result<(File, u64), StoreError> {
        if self.entry(index).is_none() {
            return Err(StoreError::MessageGone(index));
        }
        let path = self.path_of(index);
        match untrusted::open_measured(&path, None) {
            Ok(opened) => Ok(opened),
            Err(e) if e.kind() == ErrorKind::NotFound => match self.relocate(index)? {
                Some(p) => untrusted::open_measured(&p, None).map_err(|e| StoreError::io(&p, e)),
                None => Err(StoreError::MessageGone(index)),
            },
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    pub(super) fn commit_blocking(mut self, deleted: Vec<usize>) -> Result<(), StoreError> {
        let Some(copies) = self.copies.take() else {
            return self.remove(deleted);
        };
        let base = |file: usize| self.entry(file).map(|e| e.base.clone());
        let files = sdps::delete(&self.dir, &copies, &base, &deleted)?;
        let result = self.remove(files);
        let present: HashSet<String> = scan(&self.dir)?.into_keys().collect();
        if let Err(e) = sdps::compact(&self.dir, &present) {
            tracing::warn!(maildir = %self.dir.display(), error = %e, "envelope log not compacted");
        }
        result
    }

    /// Removes the messages at these listing indices, durably, keeping the lock.
    pub(super) fn remove(&mut self, deleted: Vec<usize>) -> Result<(), StoreError> {
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

    pub(super) fn drop_records(&self, removed: &HashSet<u32>) -> Result<(), StoreError> {
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
        // A copy in an SDPS host maildrop starts with its own Delivered-To line.
        let trace = self
            .copies
            .as_ref()
            .and_then(|c| c.get(index)?.trace.clone())
            .unwrap_or_default();
        let index = self.file_of(index);
        let (file, len) = self.open_message(index)?;
        if len <= SMALL_MESSAGE {
            // The length from the open's fstat: Maildir files never change once delivered, so
            // reading that much (not to the end, which costs two more calls) is the message.
            let mut bytes = trace;
            let start = bytes.len();
            bytes.resize(start + usize::try_from(len).unwrap_or(0), 0);
            let mut filled = 0;
            while start + filled < bytes.len() {
                match file.read_at(&mut bytes[start + filled..], filled as u64) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(StoreError::io(self.path_of(index), e)),
                }
            }
            bytes.truncate(start + filled);
            return Ok(MessageReader::Memory(std::io::Cursor::new(bytes)));
        }
        // The whole file is about to be read (by the kernel, for a verbatim message): start
        // reading ahead now. Only advice, so a failure changes nothing.
        let _ = nix::fcntl::posix_fadvise(
            &file,
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
        );
        let verbatim = trace.is_empty() && self.entry(index).is_some_and(|e| e.verbatim);
        Ok(MessageReader::File {
            head: trace,
            file: Arc::new(file),
            offset: 0,
            verbatim,
        })
    }

    async fn mark_seen(&mut self, index: usize) -> Result<(), StoreError> {
        // A rename is a quick metadata operation, like opening the file: done here.
        let index = self.file_of(index);
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
            .filter_map(|&i| self.entry(self.file_of(i)).map(|e| e.base.clone()))
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

/// Messages up to this size are read whole when opened, without a round trip through the
/// blocking thread pool (which costs more than reading 64 KiB from the page cache).
pub(super) const SMALL_MESSAGE: u64 = 64 * 1024;

/// A message being retrieved: small ones already in memory, larger ones read from the file.
#[derive(Debug)]
pub enum MessageReader {
    /// The whole message, read when it was opened.
    Memory(std::io::Cursor<Vec<u8>>),
    /// The open file and the offset of the next chunk, read through tokio's blocking pool
    /// straight into the caller's buffer.
    File {
        /// Octets sent before the file (an SDPS copy's Delivered-To line), then emptied.
        head: Vec<u8>,
        /// The message file.
        file: Arc<File>,
        /// Where the next chunk starts.
        offset: u64,
        /// The index says the file goes on the wire as it is.
        verbatim: bool,
    },
}

impl crate::MessageSource for MessageReader {
    fn verbatim_file(&self) -> Option<&File> {
        match self {
            MessageReader::File {
                file,
                offset: 0,
                verbatim: true,
                ..
            } => Some(file),
            _ => None,
        }
    }

    async fn next_chunk(&mut self, mut buf: Vec<u8>) -> std::io::Result<Vec<u8>> {
        match self {
            MessageReader::Memory(c) => c.next_chunk(buf).await,
            MessageReader::File { head, .. } if !head.is_empty() => {
                buf.clear();
                buf.append(head);
                Ok(buf)
            }
            MessageReader::File { file, offset, .. } => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmp_is_looked_at_once_an_hour_per_maildrop() {
        let dir = Path::new("/nonexistent/poplar-test/tmp-check");
        let now = 1_800_000_000;
        assert!(tmp_check_due(dir, now, false), "due, and only looked at");
        assert!(tmp_check_due(dir, now, true));
        assert!(!tmp_check_due(dir, now + 1, true));
        assert!(!tmp_check_due(dir, now + TMP_CHECK_EVERY - 1, true));
        assert!(tmp_check_due(dir, now + TMP_CHECK_EVERY, true));
    }
}
