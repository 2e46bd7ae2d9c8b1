//! Demon Internet's SDPS host maildrops: every address of a host name (`*@example.net`) is
//! delivered into one maildrop, the host's, together with the SMTP envelope, so that the host
//! owner can log in as `example.net` and distribute the mail by envelope (fetchmail's
//! `proto SDPS` multidrop, with `*ENV`), while each person logs in as `john@example.net` (or
//! `john+example.net`) and sees only what was delivered to their address.
//!
//! A message is stored once, as an ordinary Maildir file, however many recipients of the host
//! it had. The envelope goes into `poplar-envelopes` next to it: one line per delivery (`D`,
//! the file's base name, the sender, each recipient) and one per deleted copy (`X`, base name,
//! copy number), appended and fsynced before the message file is renamed into `new/` (or
//! before it is unlinked), so a crash at any instant leaves either a record without a file
//! (ignored) or a file whose record says what it is.
//!
//! Each recipient has their own copy of the message. The whole maildrop (`USER example.net`)
//! lists every copy not yet deleted, with the copy's recipient in `*ENV`, exactly as Demon's
//! service did and as every SDPS client expects (`*ENV` names one recipient: a message for
//! three people is three copies to distribute). A person's view lists only their own copies.
//! Each copy is sent with a `Delivered-To:` line naming its own recipient (and nobody else's)
//! before the stored message, as a local delivery agent writes it: the copies of one message
//! differ, so a multidrop client's duplicate filter (fetchmail drops consecutive messages with
//! identical headers) keeps them all.
//! Deleting a copy, through either, deletes that copy alone; the file goes when its last copy
//! does. So nobody's deletion ever takes mail from another recipient before they had it.
//!
//! Files without a record (delivered into the Maildir by something else) appear once in the
//! whole maildrop, with no envelope, and in no person's view.

use super::*;
use pop3_proto::Envelope;
use std::io::Write;

/// The envelope log in a host maildrop.
const ENVELOPES: &str = "poplar-envelopes";
/// Taken shared by deliveries appending to the log, exclusively by a session rewriting it.
const ENVELOPES_LOCK: &str = "poplar-envelopes.lock";
const ENVELOPES_TMP: &str = "poplar-envelopes.tmp";

/// What a session on a host maildrop sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostView {
    /// Every copy (the host owner, `USER example.net`).
    Whole,
    /// The copies delivered to this address (`USER john@example.net`), lower case.
    Recipient(String),
}

/// One message's envelope as recorded, with its copies already deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Recorded {
    pub sender: String,
    pub recipients: Vec<String>,
    pub deleted: Vec<bool>,
}

impl Recorded {
    fn all_deleted(&self) -> bool {
        self.deleted.iter().all(|d| *d)
    }
}

/// What a session's message number stands for in a host maildrop: a file of the snapshot and,
/// if it has a record, which recipient's copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CopyOf {
    pub file: usize,
    pub copy: Option<usize>,
    /// The `Delivered-To:` line sent before the stored message.
    pub trace: Option<Vec<u8>>,
}

/// The line a copy for `recipient` starts with (control characters dropped: one line only).
fn trace_line(recipient: &str) -> Vec<u8> {
    let clean: String = recipient.chars().filter(|c| !c.is_control()).collect();
    format!("Delivered-To: {clean}\r\n").into_bytes()
}

/// `%`, TAB, CR, LF and other control characters as `%XX`, so a field is one tab-free token.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '%' || c.is_control() {
            for b in c.to_string().bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn lock(dir: &Path, exclusive: bool) -> Result<File, StoreError> {
    let path = dir.join(ENVELOPES_LOCK);
    let file = lock_file(&path)?;
    // Blocking: both kinds are held for one append or one rewrite.
    let locked = if exclusive {
        file.lock()
    } else {
        file.lock_shared()
    };
    locked.map_err(|e| StoreError::io(&path, e))?;
    Ok(file)
}

/// Appends `lines` to the log in one write and makes them durable.
fn append(dir: &Path, lines: &str) -> Result<(), StoreError> {
    let _lock = lock(dir, false)?;
    let path = dir.join(ENVELOPES);
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| StoreError::io(&path, e))?;
    file.write_all(lines.as_bytes())
        .and_then(|()| file.sync_data())
        .map_err(|e| StoreError::io(&path, e))
}

/// Records a delivery: called with the message still in `tmp/`.
pub(super) fn record_delivery(
    dir: &Path,
    base: &str,
    sender: &str,
    recipients: &[String],
) -> Result<(), StoreError> {
    let mut line = format!("D\t{}\t{}", escape(base), escape(sender));
    for r in recipients {
        line.push('\t');
        line.push_str(&escape(&r.to_lowercase()));
    }
    line.push('\n');
    append(dir, &line)
}

/// Records deleted copies: called before any file is unlinked.
fn record_deleted(dir: &Path, copies: &[(String, usize)]) -> Result<(), StoreError> {
    let lines: String = copies
        .iter()
        .map(|(base, k)| format!("X\t{}\t{k}\n", escape(base)))
        .collect();
    append(dir, &lines)
}

/// The recorded envelopes by base name. A torn last line (a crash mid-append) and anything
/// else unreadable is skipped.
pub(super) fn read(dir: &Path) -> Result<HashMap<String, Recorded>, StoreError> {
    let path = dir.join(ENVELOPES);
    let text = match fs::read(&path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(StoreError::io(&path, e)),
    };
    let mut recorded: HashMap<String, Recorded> = HashMap::new();
    for line in text.split_terminator('\n') {
        let mut fields = line.split('\t');
        match (fields.next(), fields.next(), fields.next()) {
            (Some("D"), Some(base), Some(sender)) => {
                let recipients: Vec<String> = fields.map(unescape).collect();
                if recipients.is_empty() {
                    continue;
                }
                let deleted = vec![false; recipients.len()];
                recorded.insert(
                    unescape(base),
                    Recorded {
                        sender: unescape(sender),
                        recipients,
                        deleted,
                    },
                );
            }
            (Some("X"), Some(base), Some(k)) => {
                if let (Some(r), Ok(k)) = (recorded.get_mut(&unescape(base)), k.parse::<usize>())
                    && let Some(d) = r.deleted.get_mut(k)
                {
                    *d = true;
                }
            }
            _ => {}
        }
    }
    Ok(recorded)
}

/// The UIDL of copy `k` of a message with `copies` copies: the file's own for a message with one
/// recipient (so Dovecot on the same Maildir agrees), else the file's with `.k` after it.
fn copy_uidl(uidl: &str, k: usize, copies: usize) -> String {
    if copies == 1 {
        return uidl.to_owned();
    }
    let suffix = format!(".{k}");
    let keep = uidl.len().min(70 - suffix.len());
    format!("{}{suffix}", &uidl[..keep])
}

/// A host maildrop as one session sees it.
pub(super) struct Viewed {
    /// What each message number stands for.
    pub copies: Vec<CopyOf>,
    /// The listing the session is given.
    pub listing: Vec<MessageInfo>,
    /// Files whose copies are all deleted (a commit that stopped before unlinking them).
    pub finished: Vec<usize>,
}

/// The session's listing of a host maildrop: the copies `view` sees, and the files whose
/// copies are all deleted (an interrupted commit) for removal.
pub(super) fn view(
    dir: &Path,
    entries: &[Entry],
    listing: &[MessageInfo],
    view: &HostView,
) -> Result<Viewed, StoreError> {
    let recorded = read(dir)?;
    let mut copies = Vec::new();
    let mut infos = Vec::new();
    let mut finished = Vec::new();
    for (file, (entry, info)) in entries.iter().zip(listing).enumerate() {
        let Some(record) = recorded.get(&entry.base) else {
            if *view == HostView::Whole {
                copies.push(CopyOf {
                    file,
                    copy: None,
                    trace: None,
                });
                infos.push(info.clone());
            }
            continue;
        };
        if record.all_deleted() {
            finished.push(file);
            continue;
        }
        for (k, recipient) in record.recipients.iter().enumerate() {
            let mine = match view {
                HostView::Whole => true,
                HostView::Recipient(address) => recipient == address,
            };
            if record.deleted[k] || !mine {
                continue;
            }
            let trace = trace_line(recipient);
            let size = info.size + trace.len() as u64;
            copies.push(CopyOf {
                file,
                copy: Some(k),
                trace: Some(trace),
            });
            infos.push(MessageInfo {
                uidl: copy_uidl(&info.uidl, k, record.recipients.len()),
                size,
                envelope: Some(Box::new(Envelope {
                    sender: record.sender.clone(),
                    recipient: recipient.clone(),
                })),
            });
        }
    }
    Ok(Viewed {
        copies,
        listing: infos,
        finished,
    })
}

/// A session's deletions in a host maildrop: records the deleted copies, then returns the
/// files that have no copy left (to be unlinked by the caller). Compacts the log when most of
/// it describes messages that are gone.
pub(super) fn delete(
    dir: &Path,
    copies: &[CopyOf],
    bases: &dyn Fn(usize) -> Option<String>,
    deleted: &[usize],
) -> Result<Vec<usize>, StoreError> {
    let mut files = std::collections::BTreeSet::new();
    let mut recorded_copies = Vec::new();
    for &index in deleted {
        let Some(c) = copies.get(index) else {
            continue;
        };
        match (c.copy, bases(c.file)) {
            (Some(k), Some(base)) => recorded_copies.push((base, k)),
            (None, _) => {
                files.insert(c.file);
            }
            (Some(_), None) => {}
        }
    }
    if !recorded_copies.is_empty() {
        record_deleted(dir, &recorded_copies)?;
        let recorded = read(dir)?;
        for c in copies {
            if let Some(base) = bases(c.file)
                && recorded.get(&base).is_some_and(Recorded::all_deleted)
            {
                files.insert(c.file);
            }
        }
    }
    Ok(files.into_iter().collect())
}

/// Rewrites the log without the records of messages no longer in the Maildir, when those are
/// most of it. The session lock keeps other sessions out; the exclusive log lock keeps
/// deliveries from appending to the file being replaced.
pub(super) fn compact(dir: &Path, present: &HashSet<String>) -> Result<(), StoreError> {
    let _lock = lock(dir, true)?;
    let recorded = read(dir)?;
    let live: Vec<(&String, &Recorded)> = recorded
        .iter()
        .filter(|(base, r)| present.contains(*base) && !r.all_deleted())
        .collect();
    if live.len() * 2 + 64 > recorded.len() {
        return Ok(());
    }
    let mut text = String::new();
    for (base, r) in live {
        text.push_str(&format!("D\t{}\t{}", escape(base), escape(&r.sender)));
        for rcpt in &r.recipients {
            text.push('\t');
            text.push_str(&escape(rcpt));
        }
        text.push('\n');
        for (k, _) in r.deleted.iter().enumerate().filter(|(_, d)| **d) {
            text.push_str(&format!("X\t{}\t{k}\n", escape(base)));
        }
    }
    let tmp = dir.join(ENVELOPES_TMP);
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(ENVELOPES))
    };
    write().map_err(|e| StoreError::io(&tmp, e))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_survive_escaping() {
        for s in ["", "a@b", "%41", "tab\there", "line\r\nbreak", "ünï@ex"] {
            assert_eq!(unescape(&escape(s)), s);
            assert!(!escape(s).contains(['\t', '\n', '\r']));
        }
    }

    #[test]
    fn the_log_folds_deliveries_and_deletions_and_skips_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let rcpts = |r: &[&str]| r.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        record_delivery(dir.path(), "m1", "", &rcpts(&["John@Example.net"])).unwrap();
        record_delivery(dir.path(), "m2", "a@b", &rcpts(&["x@h", "y@h"])).unwrap();
        record_deleted(dir.path(), &[("m2".into(), 1), ("m9".into(), 0)]).unwrap();
        append(dir.path(), "D\tm3\tsender").unwrap(); // torn: no recipients, no newline
        let r = read(dir.path()).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r["m1"].recipients, ["john@example.net"]);
        assert_eq!(r["m1"].sender, "");
        assert_eq!(r["m2"].deleted, [false, true]);
    }

    #[test]
    fn copy_uidls_stay_within_70_octets() {
        assert_eq!(copy_uidl("abc", 0, 1), "abc");
        assert_eq!(copy_uidl("abc", 2, 3), "abc.2");
        assert_eq!(copy_uidl(&"u".repeat(70), 12, 13).len(), 70);
    }
}
