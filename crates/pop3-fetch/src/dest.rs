//! Where fetched mail goes.
//!
//! A destination stores a message durably and can say afterwards whether a delivery it was
//! given a token for arrived: that answer is what lets a run that was killed between delivering
//! a message and recording it in the journal decide without guessing (see [`crate::journal`]).
//! Messages are stored exactly as RETR sent them, un-stuffed (CRLF line ends).

use crate::FetchError;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A place messages are delivered to.
pub trait Destination: Send {
    /// A new token naming the next delivery; recorded in the journal before it starts.
    fn token(&mut self) -> String;
    /// Starts storing a message under `token`.
    fn open(&mut self, token: &str) -> Result<Box<dyn MessageWriter>, FetchError>;
    /// Makes every finished delivery durable (the journal records them next).
    fn sync(&mut self) -> Result<(), FetchError>;
    /// Which of these tokens name messages the destination holds.
    fn holds(&self, tokens: &[String]) -> Result<HashSet<String>, FetchError>;
    /// For messages: `maildir:/path`.
    fn describe(&self) -> String;
}

/// One message being stored.
pub trait MessageWriter: Send {
    /// Appends octets of the message.
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()>;
    /// Completes the message; it is in place (and fsynced) when this returns.
    fn finish(self: Box<Self>) -> Result<(), FetchError>;
    /// Abandons the message, leaving nothing behind.
    fn discard(self: Box<Self>);
}

/// A Maildir: each message written to `tmp/`, fsynced, renamed into `new/`; `new/` is fsynced
/// by [`Destination::sync`] once per batch.
#[derive(Debug)]
pub struct Maildir {
    dir: PathBuf,
    host: String,
}

/// Tokens unique within this process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Maildir {
    /// The Maildir at `dir`, created (with `tmp`, `new`, `cur`) if missing.
    pub fn open(dir: &Path) -> Result<Self, FetchError> {
        for sub in ["tmp", "new", "cur"] {
            let path = dir.join(sub);
            fs::DirBuilder::new()
                .recursive(true)
                .create(&path)
                .map_err(FetchError::io(format!("cannot create {}", path.display())))?;
        }
        let host = fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().replace('/', "\\057").replace(':', "\\072"))
            .unwrap_or_else(|_| "localhost".into());
        Ok(Maildir {
            dir: dir.to_owned(),
            host,
        })
    }
}

impl Destination for Maildir {
    fn token(&mut self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!(
            "{}.M{}P{}Q{}.{}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            self.host
        )
    }

    fn open(&mut self, token: &str) -> Result<Box<dyn MessageWriter>, FetchError> {
        let tmp = self.dir.join("tmp").join(token);
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(FetchError::io(format!("cannot create {}", tmp.display())))?;
        Ok(Box::new(MaildirWriter {
            file,
            tmp,
            new: self.dir.join("new"),
            token: token.to_owned(),
            size: 0,
        }))
    }

    fn sync(&mut self) -> Result<(), FetchError> {
        let new = self.dir.join("new");
        File::open(&new)
            .and_then(|d| d.sync_all())
            .map_err(FetchError::io(format!("cannot sync {}", new.display())))
    }

    fn holds(&self, tokens: &[String]) -> Result<HashSet<String>, FetchError> {
        let wanted: HashSet<&str> = tokens.iter().map(String::as_str).collect();
        let mut found = HashSet::new();
        for sub in ["new", "cur"] {
            let path = self.dir.join(sub);
            let entries = fs::read_dir(&path)
                .map_err(FetchError::io(format!("cannot list {}", path.display())))?;
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                // The base name: up to the first ',' (size hints) or ':' (flags).
                let base = name.split([',', ':']).next().unwrap_or("");
                if wanted.contains(base) {
                    found.insert(base.to_owned());
                }
            }
        }
        Ok(found)
    }

    fn describe(&self) -> String {
        format!("maildir:{}", self.dir.display())
    }
}

struct MaildirWriter {
    file: File,
    tmp: PathBuf,
    new: PathBuf,
    token: String,
    size: u64,
}

impl MessageWriter for MaildirWriter {
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.size += chunk.len() as u64;
        self.file.write_all(chunk)
    }

    fn finish(self: Box<Self>) -> Result<(), FetchError> {
        let target = self.new.join(format!("{},S={}", self.token, self.size));
        let done = self
            .file
            .sync_all()
            .and_then(|()| fs::rename(&self.tmp, &target));
        if let Err(e) = done {
            let _ = fs::remove_file(&self.tmp);
            return Err(FetchError::io(format!("cannot store {}", target.display()))(e));
        }
        Ok(())
    }

    fn discard(self: Box<Self>) {
        let _ = fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maildir_delivers_and_knows_what_it_holds() {
        let d = tempfile::tempdir().unwrap();
        let mut m = Maildir::open(&d.path().join("Mail")).unwrap();
        let (a, b) = (m.token(), m.token());
        assert_ne!(a, b);
        let mut w = m.open(&a).unwrap();
        w.write(b"Subject: x\r\n\r\n").unwrap();
        w.write(b"body\r\n").unwrap();
        w.finish().unwrap();
        let w = m.open(&b).unwrap();
        w.discard();
        m.sync().unwrap();
        let held = m.holds(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(held, HashSet::from([a.clone()]));
        let stored = fs::read(d.path().join(format!("Mail/new/{a},S=20"))).unwrap();
        assert_eq!(stored, b"Subject: x\r\n\r\nbody\r\n");
        // Read by a mail program: moved to cur/ with flags, still found.
        fs::rename(
            d.path().join(format!("Mail/new/{a},S=20")),
            d.path().join(format!("Mail/cur/{a},S=20:2,S")),
        )
        .unwrap();
        assert_eq!(
            m.holds(std::slice::from_ref(&a)).unwrap(),
            HashSet::from([a])
        );
        assert_eq!(fs::read_dir(d.path().join("Mail/tmp")).unwrap().count(), 0);
    }
}
