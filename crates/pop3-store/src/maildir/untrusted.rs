//! Files in directories that others can write.
//!
//! A Maildir is written by more than Poplar: Postfix and Dovecot, the user's own tools, and, for
//! a migration source, whoever owned the old server's mail. Whoever can write `new/` can put a
//! symbolic link there (`new/x -> /var/lib/poplar/users`), a FIFO, a device or a directory, and
//! a server that opens it as a message would read, as its own user, whatever the link points
//! at, or hang on the FIFO, or fill the disk copying `/dev/zero`. So a message file is opened
//! only as itself: never through a symbolic link (`O_NOFOLLOW`), never blocking on a FIFO
//! (`O_NONBLOCK`, which regular files ignore), and accepted only if the open descriptor is a
//! regular file (checked on the descriptor, so a swap after a directory listing changes
//! nothing), no larger than a limit when one is given. Directory listings skip such entries
//! with the reason, so a maildrop with one never lists it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Why a directory entry is not a message file, or `None` if it may be one (a regular file, as
/// the listing says without following links).
pub fn refusal(file_type: std::fs::FileType) -> Option<&'static str> {
    if file_type.is_file() {
        None
    } else if file_type.is_symlink() {
        Some("a symbolic link, not a message file")
    } else if file_type.is_dir() {
        Some("a directory, not a message file")
    } else {
        Some("a FIFO, socket or device, not a message file")
    }
}

/// Opens `path` for reading as a message file: a regular file reached without following a
/// symbolic link, of at most `max` octets when given.
pub fn open_message(path: &Path, max: Option<u64>) -> io::Result<File> {
    open_measured(path, max).map(|(file, _)| file)
}

/// [`open_message`], also returning the file's length (from the same `fstat`).
pub fn open_measured(path: &Path, max: Option<u64>) -> io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a symbolic link, not a message file",
                )
            } else {
                e
            }
        })?;
    let meta = file.metadata()?;
    if let Some(why) = refusal(meta.file_type()) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, why));
    }
    if let Some(max) = max
        && meta.len() > max
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} octets, more than the limit of {max} (limits.max_message_size)",
                meta.len()
            ),
        ));
    }
    Ok((file, meta.len()))
}

/// Copies the message file `from` (opened as [`open_message`] does) to a new file `to`, which
/// must not exist (so a link planted under that name is never written through); returns the
/// octets copied. The copy is not synced.
pub fn copy_message(from: &Path, to: &Path, max: Option<u64>) -> io::Result<u64> {
    let mut source = open_message(from, max)?;
    let mut target = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    let mut copied = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = source.read(&mut buf)?;
        if n == 0 {
            return Ok(copied);
        }
        copied += n as u64;
        // The file may grow after it was measured.
        if max.is_some_and(|max| copied > max) {
            drop(target);
            let _ = std::fs::remove_file(to);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "grew past the size limit while being copied",
            ));
        }
        target.write_all(&buf[..n])?;
    }
}

/// Replaces `path` with `bytes` (file mode `mode`) by writing `tmp`, fsyncing it and renaming
/// it over `path`, so a crash leaves the old or the new contents, never a mixture. `tmp` is
/// created new (whatever was at that name, a link included, is removed first, never written
/// through) and not through a symbolic link, so a process running as root cannot be made to
/// write where a link planted by the directory's owner points. `tmp` is removed on failure.
pub fn replace_file(path: &Path, tmp: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    match std::fs::remove_file(tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        // rename replaces a link at `path` itself, never what it points at.
        .and_then(|()| std::fs::rename(tmp, path));
    written.inspect_err(|_| {
        let _ = std::fs::remove_file(tmp);
    })
}

/// Fails unless `dir` is a real directory, not a symbolic link to one elsewhere.
pub fn check_real_dir(dir: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.file_type().is_dir() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is {}, not a directory: refusing to write through it",
                dir.display(),
                if meta.file_type().is_symlink() {
                    "a symbolic link"
                } else {
                    "a file"
                }
            ),
        ))
    }
}

/// Fails unless each of `dir`'s `tmp`, `new` and `cur` is a real directory, not a symbolic
/// link to one elsewhere (through which files would be created or read there).
pub fn check_subdirectories(dir: &Path) -> io::Result<()> {
    for sub in ["tmp", "new", "cur"] {
        subdirectory(&dir.join(sub))?;
    }
    Ok(())
}

/// Whether `path`, a Maildir's subdirectory, exists (`false` when missing); one that is a
/// symbolic link or not a directory is an error.
pub fn subdirectory(path: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_dir() => Ok(true),
        Ok(m) => {
            let what = if m.file_type().is_symlink() {
                "a symbolic link"
            } else {
                "not a directory"
            };
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is {what}: refusing to use it as part of a Maildir",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_messages() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::write(&real, b"Subject: x\r\n\r\nbody\r\n").unwrap();
        std::os::unix::fs::symlink(&real, d.path().join("link")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.path().join("zero")).unwrap();
        std::fs::create_dir(d.path().join("dir")).unwrap();
        let fifo = d.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        assert!(open_message(&real, None).is_ok());
        assert!(open_message(&real, Some(5)).is_err(), "over the limit");
        for (name, why) in [
            ("link", "symbolic link"),
            ("zero", "symbolic link"),
            ("dir", "directory"),
            ("fifo", "FIFO"),
        ] {
            let e = open_message(&d.path().join(name), None).unwrap_err();
            assert!(e.to_string().contains(why), "{name}: {e}");
        }
        // The copy never writes through a link planted under the target name.
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join("planted")).unwrap();
        assert!(copy_message(&real, &d.path().join("planted"), None).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(
            copy_message(&real, &d.path().join("copy"), None).unwrap(),
            20
        );
        let maildir = d.path().join("m");
        std::fs::create_dir_all(maildir.join("cur")).unwrap();
        std::os::unix::fs::symlink("/etc", maildir.join("new")).unwrap();
        assert!(check_subdirectories(&maildir).is_err());
        // replace_file never writes through a link at its temporary name.
        let target = d.path().join("secret");
        std::os::unix::fs::symlink(&victim, d.path().join("secret.tmp")).unwrap();
        replace_file(&target, &d.path().join("secret.tmp"), b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert!(check_real_dir(d.path()).is_ok());
        assert!(check_real_dir(&d.path().join("zero")).is_err());
    }
}
