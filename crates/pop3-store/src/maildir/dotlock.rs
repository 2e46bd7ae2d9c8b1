//! The `dovecot-uidlist.lock` dot-lock that serialises writers of the index.
//!
//! Dovecot (and Poplar) rewrite `dovecot-uidlist` only while holding this lock, which is a file
//! created exclusively next to it. Its content is `<pid>:<hostname>`. A lock left behind by a
//! process that died is recognised at once when that process ran on this host and is gone;
//! otherwise it is overridden after Dovecot's stale timeout of two minutes without a change.

use crate::error::StoreError;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Dovecot's MAILDIR_UIDLIST_LOCK_STALE_TIMEOUT.
const STALE_AFTER: Duration = Duration::from_secs(120);

/// A held dot-lock, removed when dropped.
#[derive(Debug)]
pub struct DotLock {
    path: PathBuf,
}

impl DotLock {
    /// Takes the lock, waiting up to `timeout` for another holder to release it.
    ///
    /// The owner line is written to a private file first and then hard-linked to the lock's
    /// name, as Dovecot does, so a lock never exists without saying whose it is: a process
    /// killed between creating the lock and writing to it would otherwise leave an empty lock
    /// that only the two-minute stale timeout could clear.
    pub fn acquire(path: &Path, host: &str, timeout: Duration) -> Result<Self, StoreError> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        let owner = format!("{}:{}", std::process::id(), host);
        // Unique per process and per call: threads of one process may lock at once.
        static ATTEMPTS: AtomicU64 = AtomicU64::new(0);
        let private = path.with_extension(format!(
            "lock.{}.{}.tmp",
            std::process::id(),
            ATTEMPTS.fetch_add(1, Ordering::Relaxed)
        ));
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&private)
            .and_then(|mut f| f.write_all(owner.as_bytes()))
            .map_err(|e| StoreError::io(&private, e))?;
        let result = loop {
            match fs::hard_link(&private, path) {
                Ok(()) => {
                    break Ok(DotLock {
                        path: path.to_owned(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if is_stale(path, host) {
                        tracing::warn!(lock = %path.display(), "removing stale index lock");
                        let _ = fs::remove_file(path);
                        continue;
                    }
                    if Instant::now() >= deadline {
                        break Err(StoreError::LockTimeout {
                            path: path.to_owned(),
                        });
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(e) => break Err(StoreError::io(path, e)),
            }
        };
        let _ = fs::remove_file(&private);
        result
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn is_stale(path: &Path, host: &str) -> bool {
    if let Ok(content) = fs::read_to_string(path)
        && let Some((pid, lock_host)) = content.trim().split_once(':')
        && lock_host == host
        && let Ok(pid) = pid.parse::<u32>()
    {
        return !Path::new(&format!("/proc/{pid}")).exists();
    }
    fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|t| SystemTime::now().duration_since(t).unwrap_or_default() > STALE_AFTER)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dovecot-uidlist.lock");
        let held = DotLock::acquire(&path, "h", Duration::from_secs(1)).unwrap();
        let again = DotLock::acquire(&path, "h", Duration::from_millis(50));
        assert!(matches!(again, Err(StoreError::LockTimeout { .. })));
        // The owner's private files are gone, whether the lock was taken or not.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["dovecot-uidlist.lock"]);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}:h", std::process::id())
        );
        drop(held);
        assert!(!path.exists());
        DotLock::acquire(&path, "h", Duration::from_millis(50)).unwrap();
    }

    #[test]
    fn lock_of_a_dead_local_process_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dovecot-uidlist.lock");
        // Above the kernel's largest PID (2^22), so never a running process.
        fs::write(&path, "4194305:h").unwrap();
        DotLock::acquire(&path, "h", Duration::from_millis(50)).unwrap();
        // A lock from another host is respected until it is old.
        fs::write(&path, "1:otherhost").unwrap();
        assert!(DotLock::acquire(&path, "h", Duration::from_millis(50)).is_err());
    }
}
