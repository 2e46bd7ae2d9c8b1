//! Storage quotas, accounted in Maildir++'s `maildirsize` file.
//!
//! Why this file and not a database of our own: `maildirsize` is what Courier, Postfix's quota
//! patches and Dovecot's `quota = maildir` backend keep in the same Maildir, so a maildrop's
//! usage stays one number whichever of them delivers or removes mail. Its format: a first line
//! with the limits (`<bytes>S,<count>C`), then lines of `<bytes> <count>` changes, each appended
//! in one write by whoever delivered (positive) or removed (negative) messages. The sum of the
//! change lines is the usage.
//!
//! The file is rebuilt from the directories (sizes from the `,S=` hint, else the file's length)
//! when it is missing, when it has grown past 5120 octets (the Maildir++ rule), and before any
//! delivery is refused: a program that removed mail without appending its line must never make
//! Poplar refuse mail wrongly. A delivery that fits by the file's count is accepted without a
//! scan; two deliveries racing may overrun a quota by one message, as with every Maildir++ user.

use super::filename::{is_message, size_hints};
use crate::{Quota, StoreError, Usage};
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::Path;

const MAILDIRSIZE: &str = "maildirsize";
/// Maildir++: a `maildirsize` this long is rewritten as a single line.
const REBUILD_AT: u64 = 5120;

/// Refuses a delivery of `incoming` octets to the Maildir `dir` that would exceed `quota`.
pub(crate) fn check(
    dir: &Path,
    quota: Quota,
    incoming: u64,
    permanent: bool,
) -> Result<(), StoreError> {
    if quota.is_unlimited() {
        return Ok(());
    }
    let recorded = read(dir);
    let usage = match recorded {
        Some((usage, len)) if len < REBUILD_AT => usage,
        _ => rebuild(dir, quota)?,
    };
    if usage.admits(quota, incoming) {
        return Ok(());
    }
    // Refuse only on a fresh count: the file may be stale.
    let usage = if recorded.is_some_and(|(_, len)| len < REBUILD_AT) {
        rebuild(dir, quota)?
    } else {
        usage
    };
    if usage.admits(quota, incoming) {
        return Ok(());
    }
    Err(usage.refusal(quota, permanent))
}

/// Appends a change to `dir`'s `maildirsize`, if it has one. Best effort: a failure leaves the
/// file stale, which the next refusal's rebuild corrects.
pub(crate) fn record(dir: &Path, bytes: i64, messages: i64) {
    let path = dir.join(MAILDIRSIZE);
    let appended = OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{bytes} {messages}\n").as_bytes()));
    match appended {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            tracing::warn!(file = %path.display(), error = %e, "cannot update the quota file");
        }
        _ => {}
    }
}

/// Whether `dir` keeps a `maildirsize` to update.
pub(crate) fn tracked(dir: &Path) -> bool {
    dir.join(MAILDIRSIZE).exists()
}

/// The size a message file counts for: its `,S=` hint, else its length (0 if it is gone).
pub(crate) fn stored_size(base: &str, path: &Path) -> u64 {
    size_hints(base)
        .physical
        .unwrap_or_else(|| fs::metadata(path).map_or(0, |m| m.len()))
}

/// The usage `maildirsize` records and the file's length, if it exists and parses.
fn read(dir: &Path) -> Option<(Usage, u64)> {
    let text = fs::read_to_string(dir.join(MAILDIRSIZE)).ok()?;
    let mut lines = text.lines();
    lines.next()?;
    let (mut bytes, mut messages) = (0i64, 0i64);
    for line in lines {
        let mut fields = line.split_whitespace();
        let (Some(b), Some(m)) = (fields.next(), fields.next()) else {
            return None;
        };
        bytes = bytes.saturating_add(b.parse::<i64>().ok()?);
        messages = messages.saturating_add(m.parse::<i64>().ok()?);
    }
    let usage = Usage {
        bytes: u64::try_from(bytes).ok()?,
        messages: u64::try_from(messages).ok()?,
    };
    Some((usage, text.len() as u64))
}

/// Counts the messages in `new/` and `cur/` and rewrites `maildirsize` to say so.
pub(crate) fn rebuild(dir: &Path, quota: Quota) -> Result<Usage, StoreError> {
    let mut usage = Usage::default();
    for sub in ["new", "cur"] {
        let path = dir.join(sub);
        let entries = fs::read_dir(&path).map_err(|e| StoreError::io(&path, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|n| is_message(n)) else {
                continue;
            };
            // What a session would list: regular files only, not what a link points at.
            if entry
                .file_type()
                .map_or(true, |t| super::untrusted::refusal(t).is_some())
            {
                continue;
            }
            usage.bytes += stored_size(super::filename::base(name), &entry.path());
            usage.messages += 1;
        }
    }
    let definition = format!(
        "{}S,{}C\n{} {}\n",
        quota.storage.unwrap_or(0),
        quota.messages.unwrap_or(0),
        usage.bytes,
        usage.messages
    );
    let tmp = dir.join(format!("tmp/{MAILDIRSIZE}.{}", std::process::id()));
    super::replace_file(&dir.join(MAILDIRSIZE), &tmp, definition.as_bytes())?;
    Ok(usage)
}

/// "4.1 MB of 5 MB, 12 of 1000 messages" for the refusal.
#[cfg(test)]
mod tests {
    use super::*;

    fn maildir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for sub in ["tmp", "new", "cur"] {
            fs::create_dir(d.path().join(sub)).unwrap();
        }
        d
    }

    const Q: Quota = Quota {
        storage: Some(100),
        messages: Some(3),
    };

    #[test]
    fn counts_hints_and_file_lengths_and_refuses_past_the_limit() {
        let d = maildir();
        fs::write(d.path().join("new/1.a,S=40"), b"not forty octets").unwrap();
        fs::write(d.path().join("cur/2.b:2,S"), [b'x'; 50]).unwrap();
        assert_eq!(
            rebuild(d.path(), Q).unwrap(),
            Usage {
                bytes: 90,
                messages: 2
            }
        );
        check(d.path(), Q, 10, false).unwrap();
        let err = check(d.path(), Q, 11, false).unwrap_err();
        assert!(err.is_temporary());
        assert_eq!(
            err.to_string(),
            "over quota: 90 of 100 octets, 2 of 3 messages"
        );
        assert!(!check(d.path(), Q, 11, true).unwrap_err().is_temporary());
        assert_eq!(
            fs::read_to_string(d.path().join(MAILDIRSIZE)).unwrap(),
            "100S,3C\n90 2\n"
        );
    }

    #[test]
    fn appended_changes_count_and_a_stale_file_never_refuses() {
        let d = maildir();
        check(d.path(), Q, 1, false).unwrap(); // creates the file: 0 0
        record(d.path(), 60, 1);
        record(d.path(), 30, 1);
        assert_eq!(
            read(d.path()).unwrap().0,
            Usage {
                bytes: 90,
                messages: 2
            }
        );
        // No such files exist: the refusal's rebuild finds the maildrop empty and admits it.
        check(d.path(), Q, 50, false).unwrap();
        assert_eq!(read(d.path()).unwrap().0, Usage::default());
        record(d.path(), -5, -1); // a removal recorded by someone else after the rebuild
        assert!(read(d.path()).is_none(), "negative usage is not trusted");
        check(d.path(), Q, 50, false).unwrap();
    }

    #[test]
    fn message_count_limit_alone() {
        let d = maildir();
        for i in 0..3 {
            fs::write(d.path().join(format!("new/{i}.x")), b"m").unwrap();
        }
        let q = Quota {
            storage: None,
            messages: Some(3),
        };
        assert!(check(d.path(), q, 1, false).is_err());
        check(d.path(), Quota::default(), 1, false).unwrap();
        fs::remove_file(d.path().join("new/0.x")).unwrap();
        check(d.path(), q, 1_000_000, false).unwrap();
    }

    #[test]
    fn a_long_file_is_rewritten() {
        let d = maildir();
        check(d.path(), Q, 1, false).unwrap();
        for _ in 0..1000 {
            record(d.path(), 1, 1);
            record(d.path(), -1, -1);
        }
        check(d.path(), Q, 1, false).unwrap();
        assert_eq!(
            fs::read_to_string(d.path().join(MAILDIRSIZE)).unwrap(),
            "100S,3C\n0 0\n"
        );
    }
}
