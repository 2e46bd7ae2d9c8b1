//! Whole-file `flock` locks that tell a lock held by someone else from one held for an instant
//! by a child process that has not yet reached `exec`.
//!
//! Why this exists: an `flock` belongs to the open file description, and `fork` shares every
//! description with the child until `exec` closes the close-on-exec ones. A process that drops
//! a lock and takes it again (a fetch journal reopened, a maildrop relocked by the next session)
//! while another of its threads is starting a program (a delivery command, a password command)
//! can find its own old lock still held for those microseconds. Reporting "busy" then would be
//! a false alarm, so a refused lock is asked for again for a short while before it counts.

use std::fs::{File, TryLockError};
use std::io;
use std::thread;
use std::time::{Duration, Instant};

/// How long a refused lock is retried: far longer than any fork-to-exec window, short enough
/// that a lock which is really held is reported promptly.
pub const PATIENCE: Duration = Duration::from_millis(250);

/// Takes an exclusive `flock` on `file` without blocking for long: `Ok(true)` when taken,
/// `Ok(false)` when another holder still has it after [`PATIENCE`].
pub fn try_exclusive(file: &File) -> io::Result<bool> {
    let deadline = Instant::now() + PATIENCE;
    let mut pause = Duration::from_millis(1);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(TryLockError::Error(e)) => return Err(e),
            Err(TryLockError::WouldBlock) if Instant::now() >= deadline => return Ok(false),
            Err(TryLockError::WouldBlock) => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(32));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_elsewhere_is_refused_and_released_is_taken() {
        let d = std::env::temp_dir().join(format!("poplar-flock-{}", std::process::id()));
        let open = || {
            File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&d)
                .unwrap()
        };
        let first = open();
        assert!(try_exclusive(&first).unwrap());
        let second = open();
        assert!(
            !try_exclusive(&second).unwrap(),
            "held by another description"
        );
        // Released while the second waits: taken within the patience.
        let waiter = thread::spawn(move || try_exclusive(&second).unwrap());
        thread::sleep(Duration::from_millis(20));
        drop(first);
        assert!(waiter.join().unwrap());
        std::fs::remove_file(&d).unwrap();
    }
}
