//! The index of a maildrop, kept in memory between sessions while the maildrop is unchanged, so
//! that opening it again costs three `stat` calls instead of listing two directories and parsing
//! the index file (about 200 ms for 100 000 messages; for the ten messages of a typical polling
//! client, a dozen system calls and a trip through the blocking thread pool, see
//! [`super::MaildirStore`]'s `open`).
//!
//! Whether a maildrop changed is read from the modification times of `new/` and `cur/` (every
//! delivery, removal and rename in Maildir changes one of them) and from the identity, size and
//! modification time of `dovecot-uidlist` (rewritten by rename, or appended to by Dovecot). A
//! change made in the same clock tick as the stamp was taken would leave the times equal, so a
//! stamp is trusted only when every time in it is at least [`SETTLED`] older than the moment it
//! was taken, as Dovecot does for its own Maildir syncing: any later change then sets a newer
//! time. At most [`MAX_MESSAGES`] messages are kept in all, each maildrop counting one more
//! (so empty ones are bounded too), the least recently opened maildrops making way.

use super::{Located, UIDLIST};
use crate::MessageInfo;
use crate::error::StoreError;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How old every time in a stamp must be for the stamp to be trusted.
pub(super) const SETTLED: Duration = Duration::from_secs(2);
/// At most this many messages are kept in all (about 200 bytes each: some 100 MiB).
pub(super) const MAX_MESSAGES: usize = 500_000;

/// A message of the maildrop: its UID, its base name and where its file is.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub uid: u32,
    pub base: String,
    pub location: Located,
    /// RETR sends the file unchanged (the index's `V1`).
    pub verbatim: bool,
}

/// Every message of a maildrop in index order, with what a session lists for it.
#[derive(Debug, Default)]
pub(super) struct Indexed {
    pub entries: Vec<Entry>,
    pub listing: Vec<MessageInfo>,
}

/// What the maildrop looked like: see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stamp {
    new: (i64, i64),
    cur: (i64, i64),
    /// Device, inode, size and modification time of the index file, if there is one.
    uidlist: Option<(u64, u64, u64, i64, i64)>,
    /// Whether every time above was settled when the stamp was taken.
    settled: bool,
}

impl Stamp {
    /// Takes the stamp of the Maildir at `dir`.
    pub(super) fn of(dir: &Path) -> Result<Self, StoreError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut newest = i64::MIN;
        let mut mtime = |m: &std::fs::Metadata| {
            newest = newest.max(m.mtime());
            (m.mtime(), m.mtime_nsec())
        };
        let meta = |sub: &str| {
            let path = dir.join(sub);
            std::fs::metadata(&path).map_err(|e| StoreError::io(&path, e))
        };
        let new = mtime(&meta("new")?);
        let cur = mtime(&meta("cur")?);
        let uidlist = match std::fs::metadata(dir.join(UIDLIST)) {
            Ok(m) => Some((m.dev(), m.ino(), m.size(), mtime(&m).0, m.mtime_nsec())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(StoreError::io(dir.join(UIDLIST), e)),
        };
        // Whole seconds, rounded so that a time less than SETTLED old is never settled.
        let settled =
            i64::try_from(now.saturating_sub(SETTLED).as_secs()).is_ok_and(|limit| newest < limit);
        Ok(Stamp {
            new,
            cur,
            uidlist,
            settled,
        })
    }
}

#[derive(Debug)]
struct Kept {
    stamp: Stamp,
    indexed: Arc<Indexed>,
}

impl Kept {
    /// What it counts against [`MAX_MESSAGES`].
    fn cost(&self) -> usize {
        self.indexed.entries.len() + 1
    }
}

/// Indexes of maildrops, by Maildir path.
#[derive(Debug)]
pub(super) struct IndexCache {
    inner: Mutex<Inner>,
}

impl Default for IndexCache {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                kept: lru::LruCache::unbounded(),
                messages: 0,
            }),
        }
    }
}

#[derive(Debug)]
struct Inner {
    /// Least recently opened first out.
    kept: lru::LruCache<PathBuf, Kept>,
    /// The sum of the kept entries' costs.
    messages: usize,
}

impl IndexCache {
    /// The kept index of `dir` if the maildrop still has exactly this stamp.
    pub(super) fn get(&self, dir: &Path, stamp: &Stamp) -> Option<Arc<Indexed>> {
        let mut inner = self.inner.lock().ok()?;
        let kept = inner.kept.get(dir)?;
        if kept.stamp != *stamp || !stamp.settled {
            return None;
        }
        Some(Arc::clone(&kept.indexed))
    }

    /// Keeps the index made after `stamp` was taken, if the stamp can be trusted.
    pub(super) fn put(&self, dir: &Path, stamp: Stamp, indexed: &Arc<Indexed>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some(old) = inner.kept.pop(dir) {
            inner.messages -= old.cost();
        }
        let kept = Kept {
            stamp,
            indexed: Arc::clone(indexed),
        };
        let cost = kept.cost();
        if !kept.stamp.settled || cost > MAX_MESSAGES {
            return;
        }
        while inner.messages + cost > MAX_MESSAGES {
            let Some((_, old)) = inner.kept.pop_lru() else {
                break;
            };
            inner.messages -= old.cost();
        }
        inner.messages += cost;
        inner.kept.put(dir.to_owned(), kept);
    }

    /// Drops the kept index of `dir` (its maildrop is being changed).
    pub(super) fn forget(&self, dir: &Path) {
        if let Ok(mut inner) = self.inner.lock()
            && let Some(old) = inner.kept.pop(dir)
        {
            inner.messages -= old.cost();
        }
    }

    #[cfg(test)]
    fn kept(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap();
        (inner.kept.len(), inner.messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maildir::writer::Folder;

    fn indexed(n: usize) -> Arc<Indexed> {
        let entries = (0..n)
            .map(|i| Entry {
                uid: u32::try_from(i).unwrap() + 1,
                base: format!("m{i}"),
                location: Located {
                    sub: Folder::Cur,
                    name: format!("m{i}:2,"),
                },
                verbatim: false,
            })
            .collect();
        let listing = (0..n)
            .map(|i| MessageInfo {
                uidl: format!("u{i}"),
                size: 10,
                envelope: None,
            })
            .collect();
        Arc::new(Indexed { entries, listing })
    }

    fn stamp(settled: bool, t: i64) -> Stamp {
        Stamp {
            new: (t, 0),
            cur: (t, 0),
            uidlist: Some((1, 2, 3, t, 0)),
            settled,
        }
    }

    #[test]
    fn kept_only_for_the_same_settled_stamp() {
        let cache = IndexCache::default();
        let dir = Path::new("/m/a");
        cache.put(dir, stamp(true, 5), &indexed(10));
        assert!(cache.get(dir, &stamp(true, 5)).is_some());
        assert!(cache.get(dir, &stamp(true, 6)).is_none());
        assert!(cache.get(Path::new("/m/b"), &stamp(true, 5)).is_none());
        // Unsettled stamps are never stored, and storing one drops what was kept.
        cache.put(dir, stamp(false, 7), &indexed(10));
        assert!(cache.get(dir, &stamp(false, 7)).is_none());
        assert_eq!(cache.kept(), (0, 0));
        // Small and empty maildrops are kept, each counting one more than its messages.
        cache.put(dir, stamp(true, 8), &indexed(0));
        assert_eq!(cache.kept(), (1, 1));
    }

    #[test]
    fn the_least_recently_opened_make_way() {
        let cache = IndexCache::default();
        let n = MAX_MESSAGES / 2 - 1;
        cache.put(Path::new("/a"), stamp(true, 1), &indexed(n));
        cache.put(Path::new("/b"), stamp(true, 1), &indexed(n));
        assert!(cache.get(Path::new("/a"), &stamp(true, 1)).is_some());
        cache.put(Path::new("/c"), stamp(true, 1), &indexed(n));
        assert!(cache.get(Path::new("/a"), &stamp(true, 1)).is_some());
        assert!(cache.get(Path::new("/b"), &stamp(true, 1)).is_none());
        assert_eq!(cache.kept(), (2, 2 * (n + 1)));
        cache.forget(Path::new("/a"));
        assert_eq!(cache.kept(), (1, n + 1));
    }

    #[test]
    fn a_fresh_maildir_is_not_settled_and_an_old_one_is() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["new", "cur"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        assert!(!Stamp::of(dir.path()).unwrap().settled);
        let old = SystemTime::now() - Duration::from_secs(10);
        for sub in ["new", "cur"] {
            let f = std::fs::File::open(dir.path().join(sub)).unwrap();
            f.set_modified(old).unwrap();
        }
        let stamp = Stamp::of(dir.path()).unwrap();
        assert!(stamp.settled);
        assert_eq!(stamp, Stamp::of(dir.path()).unwrap());
        std::fs::write(dir.path().join("new/x"), "m").unwrap();
        assert_ne!(stamp, Stamp::of(dir.path()).unwrap());
    }
}
