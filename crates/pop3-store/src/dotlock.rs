//! Dot-locks: a file `<name>.lock` created next to what it protects, the convention older than
//! `fcntl` that Dovecot uses for `dovecot-uidlist` and mail programs use for mbox files. Poplar
//! takes two kinds, with one implementation:
//!
//! - the index lock `dovecot-uidlist.lock`, content `<pid>:<hostname>` as Dovecot writes and
//!   reads it ([`DotLock::acquire`]);
//! - an mbox's `<mbox>.lock`, content `<pid>` as procmail, mutt and Postfix's local(8) write it
//!   ([`DotLock::acquire_pid`]).
//!
//! The owner line is written to a private file first and then hard-linked to the lock's name
//! (atomic even over NFS), so a lock never exists without saying whose it is. A lock left
//! behind by a process that died is recognised at once when that process ran on this host and
//! is gone, or when the process now holding its PID started after the lock was made: a PID is
//! reused, and in a container the server is PID 1 again after every restart, so "the PID is
//! alive" alone would keep a lock for good. Whatever the PID says, a lock unchanged for longer
//! than its stale timeout is overridden (Dovecot's two minutes for the index).

use crate::error::StoreError;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Dovecot's MAILDIR_UIDLIST_LOCK_STALE_TIMEOUT.
const STALE_AFTER: Duration = Duration::from_secs(120);

/// An mbox lock is held for a whole batch of appends, which may take long on a slow disk; a
/// lock this old whose holder seems alive is still overridden (procmail's default is 1024 s).
const MBOX_STALE_AFTER: Duration = Duration::from_secs(1024);

/// A held dot-lock, removed when dropped.
#[derive(Debug)]
pub struct DotLock {
    path: PathBuf,
    was_stale: bool,
}

/// What a lock file says about its owner.
#[derive(Debug, Clone, Copy)]
enum Owner<'a> {
    /// `<pid>:<host>` (Dovecot's index lock).
    PidAndHost(&'a str),
    /// `<pid>` and a newline (the mbox convention; always this host).
    Pid,
}

impl DotLock {
    /// Takes the index lock at `path` for this process on `host`, waiting up to `timeout` for
    /// another holder to release it.
    pub fn acquire(path: &Path, host: &str, timeout: Duration) -> Result<Self, StoreError> {
        Self::take(path, Owner::PidAndHost(host), STALE_AFTER, timeout)
    }

    /// Takes an mbox's dot-lock (`path` is the lock's own name, `<mbox>.lock`), waiting up to
    /// `timeout`.
    pub fn acquire_pid(path: &Path, timeout: Duration) -> Result<Self, StoreError> {
        Self::take(path, Owner::Pid, MBOX_STALE_AFTER, timeout)
    }

    /// Leaves the lock file in place, as a process that dies holding it would: whoever takes
    /// the lock next finds it stale and knows that what it protects may be half-written.
    /// (This process remembers it: a lock it abandoned is stale to it at once, although its
    /// PID is alive.)
    pub fn abandon(self) {
        abandoned().push(self.path.clone());
        std::mem::forget(self);
    }

    /// Whether a stale lock (its holder died) was taken over: what it protected may have been
    /// left half-written.
    pub fn was_stale(&self) -> bool {
        self.was_stale
    }

    fn take(
        path: &Path,
        owner: Owner<'_>,
        stale_after: Duration,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        let mut was_stale = false;
        let owner_line = match owner {
            Owner::PidAndHost(host) => format!("{}:{}", std::process::id(), host),
            Owner::Pid => format!("{}\n", std::process::id()),
        };
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
            .and_then(|mut f| f.write_all(owner_line.as_bytes()))
            .map_err(|e| StoreError::io(&private, e))?;
        let result = loop {
            match fs::hard_link(&private, path) {
                Ok(()) => {
                    break Ok(DotLock {
                        path: path.to_owned(),
                        was_stale,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if is_stale(path, owner, stale_after) {
                        tracing::warn!(lock = %path.display(), "removing a stale lock");
                        let _ = fs::remove_file(path);
                        was_stale = true;
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

/// Locks this process abandoned and has not taken again.
fn abandoned() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    static ABANDONED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    ABANDONED.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_stale(path: &Path, owner: Owner<'_>, stale_after: Duration) -> bool {
    {
        let mut abandoned = abandoned();
        if let Some(i) = abandoned.iter().position(|p| p == path) {
            abandoned.swap_remove(i);
            return true;
        }
    }
    let Ok(meta) = fs::metadata(path) else {
        // Gone: the next attempt takes it.
        return false;
    };
    let made = meta.modified().ok();
    let age = made
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default();
    if age > stale_after {
        return true;
    }
    let Ok(content) = fs::read_to_string(path) else {
        return false;
    };
    // Only a local holder can be checked; an empty lock is being written right now.
    let local_pid = match owner {
        Owner::PidAndHost(host) => content
            .trim()
            .split_once(':')
            .filter(|(_, lock_host)| *lock_host == host)
            .map(|(pid, _)| pid),
        Owner::Pid => Some(content.trim()),
    };
    if let Some(Ok(pid)) = local_pid.map(str::parse::<u32>) {
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
    fn an_mbox_lock_says_its_pid_and_an_abandoned_one_is_taken_over_as_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.lock");
        let held = DotLock::acquire_pid(&path, Duration::from_secs(1)).unwrap();
        assert!(!held.was_stale());
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        // Held by this process, not abandoned: others wait.
        assert!(DotLock::acquire_pid(&path, Duration::from_millis(50)).is_err());
        held.abandon();
        assert!(path.exists());
        let again = DotLock::acquire_pid(&path, Duration::from_millis(50)).unwrap();
        assert!(again.was_stale());
        drop(again);
        assert!(!path.exists());
        // A dead process's lock, as procmail or mutt would leave it.
        fs::write(&path, "4194305\n").unwrap();
        assert!(
            DotLock::acquire_pid(&path, Duration::from_millis(50))
                .unwrap()
                .was_stale()
        );
    }

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
        assert!(!is_stale(&path, Owner::PidAndHost("h"), STALE_AFTER));
        // The lock names a PID whose process started after the lock was made: not its holder.
        // (A container's server is PID 1 again after every restart.)
        let mut young = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        fs::write(&path, format!("{}:h", young.id())).unwrap();
        set_age(&path, Duration::from_secs(30));
        assert!(is_stale(&path, Owner::PidAndHost("h"), STALE_AFTER));
        DotLock::acquire(&path, "h", Duration::from_millis(50)).unwrap();
        let _ = young.kill();
        let _ = young.wait();
        // Older than two minutes: stale, whoever holds the PID now.
        fs::write(&path, "1:h").unwrap();
        set_age(&path, Duration::from_secs(121));
        assert!(is_stale(&path, Owner::PidAndHost("h"), STALE_AFTER));
        fs::write(&path, "1:otherhost").unwrap();
        set_age(&path, Duration::from_secs(121));
        assert!(is_stale(&path, Owner::PidAndHost("h"), STALE_AFTER));
    }
}
