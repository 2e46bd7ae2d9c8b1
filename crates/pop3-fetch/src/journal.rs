//! The UIDL journal: which of an account's messages have been delivered, and since when.
//!
//! Why a journal and not just a list: "never lose, never duplicate, even when killed" needs the
//! delivery of a message and the record that it was delivered to survive a crash together, and
//! no file system writes two files atomically. So the journal is an append-only log with an
//! *intent* record before each delivery:
//!
//! ```text
//! poplar-fetch-journal 1
//! P <uidl> <token>          about to deliver; <token> says where (the destination's name for it)
//! D <unix seconds> <uidl>   delivered (and when it was first delivered)
//! ```
//!
//! Each batch appends its `P` lines and fsyncs, delivers (each message fsynced by the
//! destination), then appends its `D` lines and fsyncs. A crash leaves at most one batch of `P`
//! without `D`; the next run asks the destination whether each token is there
//! ([`crate::dest::Destination::holds`]) and records `D` or forgets the intent. A torn last line
//! (a crash inside a write) is ignored. Once a run has seen the server's listing, the journal is
//! rewritten with only the UIDLs still on the server.

use crate::FetchError;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

const HEADER: &str = "poplar-fetch-journal 1";

/// An account's journal, open for appending.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    /// `<journal>.lock`, locked while the journal is open: one run per account at a time. The
    /// lock belongs to the open file, so it dies with the process.
    _lock: File,
    /// UIDL to the time it was first delivered.
    delivered: HashMap<String, u64>,
    /// Deliveries begun but not recorded as done: UIDL to token.
    pending: HashMap<String, String>,
}

impl Journal {
    /// Opens (or creates) the journal at `path`, reading what it records; fails with
    /// [`FetchError::Busy`] while another run has it open.
    pub fn open(path: &Path) -> Result<Self, FetchError> {
        let io = |what: &str| FetchError::io(format!("{what} {}", path.display()));
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io("cannot create the directory of"))?;
        }
        let lock_path = path.with_extension("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(FetchError::io(format!(
                "cannot open {}",
                lock_path.display()
            )))?;
        match poplar_util::flock::try_exclusive(&lock) {
            Ok(true) => {}
            Ok(false) => return Err(FetchError::Busy(lock_path)),
            Err(e) => {
                return Err(FetchError::io(format!(
                    "cannot lock {}",
                    lock_path.display()
                ))(e));
            }
        }
        let text = match fs::read(path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io("cannot read")(e)),
        };
        // A line without its newline was torn by a crash: it never happened.
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        let mut delivered = HashMap::new();
        let mut pending = HashMap::new();
        let mut lines = text[..whole].lines();
        match lines.next() {
            None => {}
            Some(HEADER) => {}
            Some(_) => {
                return Err(FetchError::File {
                    path: path.to_owned(),
                    why: "not a poplar fetch journal (unknown first line); move it away".into(),
                });
            }
        }
        for line in lines {
            let fields: Vec<&str> = line.split(' ').collect();
            match fields[..] {
                ["P", uidl, token] => {
                    pending.insert(uidl.to_owned(), token.to_owned());
                }
                ["D", secs, uidl] => {
                    pending.remove(uidl);
                    let secs = secs.parse().unwrap_or(0);
                    delivered.entry(uidl.to_owned()).or_insert(secs);
                }
                ["F", uidl] => {
                    pending.remove(uidl);
                }
                _ => {}
            }
        }
        // Cut a torn last line off, so that what is appended next starts on a line of its own.
        if whole < text.len() {
            OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(whole as u64).and_then(|()| f.sync_all()))
                .map_err(io("cannot repair"))?;
        }
        let mut journal = Journal {
            path: path.to_owned(),
            file: Self::append_handle(path)?,
            _lock: lock,
            delivered,
            pending,
        };
        if whole == 0 {
            journal.append(&format!("{HEADER}\n"))?;
        }
        Ok(journal)
    }

    fn append_handle(path: &Path) -> Result<File, FetchError> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(FetchError::io(format!("cannot open {}", path.display())))
    }

    /// Appends `text` and waits until it is on disk.
    fn append(&mut self, text: &str) -> Result<(), FetchError> {
        let io = FetchError::io(format!("cannot write {}", self.path.display()));
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(io)
    }

    /// When `uidl` was first delivered, if it was.
    pub fn delivered(&self, uidl: &str) -> Option<u64> {
        self.delivered.get(uidl).copied()
    }

    /// How many UIDLs are recorded as delivered.
    pub fn len(&self) -> usize {
        self.delivered.len()
    }

    /// Whether nothing is recorded as delivered.
    pub fn is_empty(&self) -> bool {
        self.delivered.is_empty()
    }

    /// Deliveries begun by a run that did not finish them: UIDL and token.
    pub fn pending(&self) -> Vec<(String, String)> {
        self.pending
            .iter()
            .map(|(u, t)| (u.clone(), t.clone()))
            .collect()
    }

    /// Records the intent to deliver these messages (UIDL, token), durably.
    pub fn begin(&mut self, batch: &[(String, String)]) -> Result<(), FetchError> {
        let text: String = batch.iter().map(|(u, t)| format!("P {u} {t}\n")).collect();
        self.append(&text)?;
        for (u, t) in batch {
            self.pending.insert(u.clone(), t.clone());
        }
        Ok(())
    }

    /// Records these messages as delivered at `now`, durably.
    pub fn done<'a>(
        &mut self,
        uidls: impl IntoIterator<Item = &'a str>,
        now: u64,
    ) -> Result<(), FetchError> {
        let uidls: Vec<&str> = uidls.into_iter().collect();
        let text: String = uidls.iter().map(|u| format!("D {now} {u}\n")).collect();
        self.append(&text)?;
        for u in uidls {
            self.pending.remove(u);
            self.delivered.entry(u.to_owned()).or_insert(now);
        }
        Ok(())
    }

    /// Forgets an intent whose message never arrived at the destination.
    pub fn abandon(&mut self, uidl: &str) -> Result<(), FetchError> {
        self.append(&format!("F {uidl}\n"))?;
        self.pending.remove(uidl);
        Ok(())
    }

    /// Rewrites the journal with only the delivered UIDLs for which `keep` is true (those still
    /// on the server), atomically. Pending intents are kept.
    pub fn compact(&mut self, keep: impl Fn(&str) -> bool) -> Result<(), FetchError> {
        self.delivered.retain(|u, _| keep(u));
        let mut entries: Vec<(&String, &u64)> = self.delivered.iter().collect();
        entries.sort_by_key(|&(u, t)| (*t, u.as_str()));
        let mut text = format!("{HEADER}\n");
        for (u, t) in entries {
            text.push_str(&format!("D {t} {u}\n"));
        }
        for (u, t) in &self.pending {
            text.push_str(&format!("P {u} {t}\n"));
        }
        let tmp = self.path.with_extension("tmp");
        let io = FetchError::io(format!("cannot rewrite {}", self.path.display()));
        let written = File::create(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
            .and_then(|()| fs::rename(&tmp, &self.path))
            .and_then(|()| match self.path.parent() {
                Some(dir) => File::open(dir).and_then(|d| d.sync_all()),
                None => Ok(()),
            });
        written.map_err(io)?;
        self.file = Self::append_handle(&self.path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening_and_torn_lines_are_ignored() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("acct/journal");
        let mut j = Journal::open(&path).unwrap();
        assert!(j.is_empty());
        j.begin(&[("u1".into(), "t1".into()), ("u2".into(), "t2".into())])
            .unwrap();
        j.done(["u1"], 100).unwrap();
        drop(j);
        // A crash in the middle of writing a line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"D 200 u2").unwrap();
        drop(f);
        let mut j = Journal::open(&path).unwrap();
        assert_eq!(j.delivered("u1"), Some(100));
        assert_eq!(j.delivered("u2"), None);
        assert_eq!(j.pending(), vec![("u2".to_owned(), "t2".to_owned())]);
        j.abandon("u2").unwrap();
        j.done(["u3"], 300).unwrap();
        drop(j);
        let mut j = Journal::open(&path).unwrap();
        assert_eq!(
            j.delivered("u3"),
            Some(300),
            "the torn line was cut, not joined"
        );
        j.compact(|u| u != "u1").unwrap();
        drop(j);
        let j = Journal::open(&path).unwrap();
        assert_eq!(
            (j.delivered("u1"), j.delivered("u3"), j.pending().len()),
            (None, Some(300), 0)
        );
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{HEADER}\nD 300 u3\n")
        );
    }

    #[test]
    fn one_run_per_account() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("j.journal");
        let first = Journal::open(&path).unwrap();
        assert!(matches!(Journal::open(&path), Err(FetchError::Busy(_))));
        drop(first);
        Journal::open(&path).unwrap();
    }

    #[test]
    fn a_foreign_file_is_not_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("j");
        fs::write(&path, "something else\n").unwrap();
        assert!(Journal::open(&path).is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), "something else\n");
    }
}
