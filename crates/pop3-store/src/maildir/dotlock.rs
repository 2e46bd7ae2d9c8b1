//! The `dovecot-uidlist.lock` dot-lock that serialises writers of the index.
//!
//! Dovecot (and Poplar) rewrite `dovecot-uidlist` only while holding this lock, which is a file
//! created exclusively next to it. Its content is `<pid>:<hostname>`, the format Dovecot reads.
//! A lock left behind by a process that died is recognised at once when that process ran on
//! this host and is gone, or when the process now holding its PID started after the lock was
//! made: a PID is reused, and in a container the server is PID 1 again after every restart, so
//! "the PID is alive" alone would keep a maildrop locked for good. Whatever the PID says, a
//! lock unchanged for Dovecot's stale timeout of two minutes is overridden.

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
    let Ok(meta) = fs::metadata(path) else {
        // Gone: the next attempt takes it.
        return false;
    };
    let made = meta.modified().ok();
    let age = made
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default();
    if age > STALE_AFTER {
        return true;
    }
    if let Ok(content) = fs::read_to_string(path)
        && let Some((pid, lock_host)) = content.trim().split_once(':')
        && lock_host == host
        && let Ok(pid) = pid.parse::<u32>()
    {
        return match process_start(pid) {
            None => true,
            // A process younger than the lock did not make it: the PID was reused. Boot time is
            // known to the second, hence the margin.
            Some(started) => made.is_some_and(|m| started > m + Duration::from_secs(2)),
        };
    }
    false
}

/// When process `pid` started (`None`: there is no such process).
fn process_start(pid: u32) -> Option<SystemTime> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22, starttime, in clock ticks after boot; the fields are counted after the command
    // name, which is in parentheses and may contain anything.
    let after_name = stat.get(stat.rfind(')')? + 2..)?;
    let ticks: u64 = after_name.split(' ').nth(19)?.parse().ok()?;
    let hz = u64::try_from(nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??)
        .ok()
        .filter(|hz| *hz > 0)?;
    let boot: u64 = fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(boot)
            + Duration::from_millis(ticks * 1000 / hz),
    )
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

    fn set_age(path: &Path, age: Duration) {
        let file = fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    #[test]
    fn a_reused_pid_or_an_old_lock_does_not_hold_a_maildrop_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dovecot-uidlist.lock");
        // PID 1 has run since boot, long before this lock: a live holder, respected.
        fs::write(&path, "1:h").unwrap();
        set_age(&path, Duration::from_secs(30));
        assert!(!is_stale(&path, "h"));
        // The lock names a PID whose process started after the lock was made: not its holder.
        // (A container's server is PID 1 again after every restart.)
        let mut young = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        fs::write(&path, format!("{}:h", young.id())).unwrap();
        set_age(&path, Duration::from_secs(30));
        assert!(is_stale(&path, "h"));
        DotLock::acquire(&path, "h", Duration::from_millis(50)).unwrap();
        let _ = young.kill();
        let _ = young.wait();
        // Older than two minutes: stale, whoever holds the PID now.
        fs::write(&path, "1:h").unwrap();
        set_age(&path, Duration::from_secs(121));
        assert!(is_stale(&path, "h"));
        fs::write(&path, "1:otherhost").unwrap();
        set_age(&path, Duration::from_secs(121));
        assert!(is_stale(&path, "h"));
    }
}
