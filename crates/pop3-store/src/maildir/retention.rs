//! When each message was first retrieved, for retention periods counted from retrieval
//! (RFC 2449 `EXPIRE n`).
//!
//! Why a file of our own: neither Maildir nor Dovecot's index records retrieval times (the
//! seen flag says *that*, not *when*, and other programs set it too), and the retention rule must
//! never remove mail a POP3 client has not retrieved. `poplar-retrieved` in the Maildir holds one
//! line per retrieved message, `<unix seconds> <base name>`, appended when a session that
//! retrieved it ends with QUIT (a dropped session starts no clock). Only messages listed here can
//! ever be expired. The purge rewrites the file without the messages that are gone.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::StoreError;

pub(crate) const RETRIEVED: &str = "poplar-retrieved";

/// Base name to the time (Unix seconds) it was first retrieved.
pub(crate) type Retrieved = HashMap<String, u64>;

/// Reads the record; a missing file is an empty record, a malformed line is skipped.
pub(crate) fn read(dir: &Path) -> Result<Retrieved, StoreError> {
    let path = dir.join(RETRIEVED);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Retrieved::new()),
        Err(e) => return Err(StoreError::io(&path, e)),
    };
    let mut record = Retrieved::new();
    for line in text.lines() {
        let Some((secs, base)) = line.split_once(' ') else {
            continue;
        };
        let Ok(secs) = secs.parse::<u64>() else {
            continue;
        };
        record
            .entry(base.to_owned())
            .and_modify(|t| *t = (*t).min(secs))
            .or_insert(secs);
    }
    Ok(record)
}

/// Whether the Maildir has a record at all (a cheap test before locking it).
pub(crate) fn exists(dir: &Path) -> bool {
    dir.join(RETRIEVED).exists()
}

/// Appends the messages not yet recorded, retrieved at `now`. Called with the session lock held.
pub(crate) fn append<'a>(
    dir: &Path,
    bases: impl Iterator<Item = &'a str>,
    now: u64,
) -> Result<(), StoreError> {
    let known = read(dir)?;
    let mut lines = String::new();
    for base in bases.filter(|b| !known.contains_key(*b)) {
        lines.push_str(&format!("{now} {base}\n"));
    }
    if lines.is_empty() {
        return Ok(());
    }
    let path = dir.join(RETRIEVED);
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(lines.as_bytes()))
        .map_err(|e| StoreError::io(&path, e))
}

/// Replaces the record with `record` (by rename, so a crash leaves the old or the new one).
pub(crate) fn rewrite(dir: &Path, record: &Retrieved) -> Result<(), StoreError> {
    let path = dir.join(RETRIEVED);
    if record.is_empty() {
        return match fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(StoreError::io(&path, e)),
            _ => Ok(()),
        };
    }
    let mut entries: Vec<(&String, &u64)> = record.iter().collect();
    entries.sort_by_key(|&(base, secs)| (*secs, base.as_str()));
    let text: String = entries
        .into_iter()
        .map(|(base, secs)| format!("{secs} {base}\n"))
        .collect();
    let tmp = dir.join(format!("tmp/{RETRIEVED}.{}", std::process::id()));
    super::replace_file(&path, &tmp, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_retrieval_counts_and_the_record_round_trips() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("tmp")).unwrap();
        assert!(!exists(d.path()));
        append(d.path(), ["a", "b"].into_iter(), 100).unwrap();
        append(d.path(), ["b", "c"].into_iter(), 200).unwrap();
        let mut record = read(d.path()).unwrap();
        assert_eq!(record.len(), 3);
        assert_eq!((record["a"], record["b"], record["c"]), (100, 100, 200));
        // A line appended by hand with an earlier time wins; junk is skipped.
        fs::write(
            d.path().join(RETRIEVED),
            "300 a\nnonsense\n50 a\nx y\n200 c\n",
        )
        .unwrap();
        record = read(d.path()).unwrap();
        assert_eq!(record.len(), 2);
        assert_eq!(record["a"], 50);
        record.remove("a");
        rewrite(d.path(), &record).unwrap();
        assert_eq!(
            fs::read_to_string(d.path().join(RETRIEVED)).unwrap(),
            "200 c\n"
        );
        rewrite(d.path(), &Retrieved::new()).unwrap();
        assert!(!exists(d.path()));
    }
}
