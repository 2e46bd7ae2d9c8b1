//! An mbox destination in the mboxrd format, locked as Debian's mail programs lock it.
//!
//! Format: each message is a `From ` line (`From sender date`), the message with LF line ends
//! and every line that matches `>*From ` given one more `>` (mboxrd, reversible), and an empty
//! line. Locking: a dot-lock `<mbox>.lock` (created with link(2), holding the owner's pid) and an
//! fcntl write lock on the mbox, as procmail, mutt, Postfix's local(8) and Dovecot use; both are
//! held while a batch is appended.
//!
//! Exactly once: appending to a file is not atomic, so each batch first records in a side file
//! (`.<mbox name>.poplar-append`, fsynced) where each of its messages will lie in the mbox and a
//! hash of it, then appends and fsyncs the mbox. [`Destination::holds`] checks a token against
//! that record and the bytes actually in the mbox. A run killed in the middle of an append leaves
//! its dot-lock behind, so nobody else appended after the torn message: the next batch (which
//! takes over the stale lock of a dead process) cuts the torn tail off before appending.

use crate::FetchError;
use crate::dest::{Destination, MessageWriter};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long to wait for another program's dot-lock before giving up (temporary failure).
const LOCK_WAIT: Duration = Duration::from_secs(60);

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The messages of the batch being received, in order: token and content (as RETR sent it).
type Batch = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// An mbox file.
#[derive(Debug)]
pub struct Mbox {
    path: PathBuf,
    batch: Batch,
}

impl Mbox {
    /// The mbox at `path` (created on first delivery).
    pub fn open(path: &Path) -> Result<Self, FetchError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)
                .map_err(FetchError::io(format!("cannot create {}", dir.display())))?;
        }
        Ok(Mbox {
            path: path.to_owned(),
            batch: Arc::default(),
        })
    }

    fn side_file(&self) -> PathBuf {
        let name = self
            .path
            .file_name()
            .map_or_else(|| "mbox".into(), |n| n.to_string_lossy().into_owned());
        self.path.with_file_name(format!(".{name}.poplar-append"))
    }

    /// The recorded placements: token to (start, end, hash).
    fn placements(&self) -> HashMap<String, (u64, u64, u64)> {
        let Ok(text) = fs::read_to_string(self.side_file()) else {
            return HashMap::new();
        };
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                match f[..] {
                    [t, s, e, h] => Some((
                        t.to_owned(),
                        (
                            s.parse().ok()?,
                            e.parse().ok()?,
                            u64::from_str_radix(h, 16).ok()?,
                        ),
                    )),
                    _ => None,
                }
            })
            .collect()
    }
}

impl Destination for Mbox {
    fn token(&mut self) -> String {
        format!(
            "mbox{}.{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn open(&mut self, token: &str) -> Result<Box<dyn MessageWriter>, FetchError> {
        Ok(Box::new(MboxWriter {
            token: token.to_owned(),
            content: Vec::new(),
            batch: Arc::clone(&self.batch),
        }))
    }

    fn sync(&mut self) -> Result<(), FetchError> {
        let batch = std::mem::take(&mut *self.batch.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            return Ok(());
        }
        let io = |what: &str| FetchError::io(format!("{what} {}", self.path.display()));
        let lock = DotLock::acquire(&self.path)?;
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(io("cannot open"))?;
        fcntl_lock(&file).map_err(io("cannot lock"))?;
        if lock.was_stale {
            // A run of ours died while appending: nothing was appended since. Cut a torn
            // message off.
            cut_torn_tail(&file, &self.placements()).map_err(io("cannot repair"))?;
        }
        let mut offset = file.metadata().map_err(io("cannot read"))?.len();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut entries = Vec::with_capacity(batch.len());
        let mut side = String::new();
        for (token, content) in &batch {
            let entry = mboxrd_entry(content, now);
            let end = offset + entry.len() as u64;
            side.push_str(&format!("{token} {offset} {end} {:016x}\n", fnv(&entry)));
            offset = end;
            entries.push(entry);
        }
        let side_path = self.side_file();
        let mut side_file =
            File::create(&side_path).map_err(io("cannot write the side file of"))?;
        side_file
            .write_all(side.as_bytes())
            .and_then(|()| side_file.sync_all())
            .map_err(io("cannot write the side file of"))?;
        for entry in &entries {
            file.write_all(entry).map_err(io("cannot append to"))?;
        }
        file.sync_all().map_err(io("cannot sync"))?;
        drop(file);
        lock.release();
        Ok(())
    }

    fn holds(&self, tokens: &[String]) -> Result<HashSet<String>, FetchError> {
        let placements = self.placements();
        let mut held = HashSet::new();
        let Ok(mut file) = File::open(&self.path) else {
            return Ok(held);
        };
        for token in tokens {
            let Some(&(start, end, hash)) = placements.get(token) else {
                continue;
            };
            let mut bytes = vec![0; usize::try_from(end - start).unwrap_or(0)];
            let read = file
                .seek(SeekFrom::Start(start))
                .and_then(|_| file.read_exact(&mut bytes));
            if read.is_ok() && fnv(&bytes) == hash {
                held.insert(token.clone());
            }
        }
        Ok(held)
    }

    fn describe(&self) -> String {
        format!("mbox:{}", self.path.display())
    }
}

struct MboxWriter {
    token: String,
    content: Vec<u8>,
    batch: Batch,
}

impl MessageWriter for MboxWriter {
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.content.extend_from_slice(chunk);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), FetchError> {
        let mut batch = self.batch.lock().unwrap_or_else(|e| e.into_inner());
        batch.push((self.token, self.content));
        Ok(())
    }

    fn discard(self: Box<Self>) {}
}

/// A message as an mboxrd entry: From line, LF line ends, `>*From ` quoted, blank line after.
pub fn mboxrd_entry(message: &[u8], now: u64) -> Vec<u8> {
    let sender = return_path(message).unwrap_or_else(|| "MAILER-DAEMON".into());
    let mut out = format!("From {sender} {}\n", asctime(now)).into_bytes();
    out.reserve(message.len() + 2);
    let mut rest = message;
    while !rest.is_empty() {
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let quotes = line.iter().take_while(|&&b| b == b'>').count();
        if line[quotes..].starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
        out.push(b'\n');
        rest = next;
    }
    out.push(b'\n');
    out
}

/// The envelope sender from a `Return-Path:` header, if the message has one.
pub(crate) fn return_path(message: &[u8]) -> Option<String> {
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        let text = String::from_utf8_lossy(line);
        if let Some((name, value)) = text.split_once(':')
            && name.eq_ignore_ascii_case("Return-Path")
        {
            let addr = value.trim().trim_start_matches('<').trim_end_matches('>');
            return (!addr.is_empty() && !addr.contains(char::is_whitespace))
                .then(|| addr.to_owned());
        }
    }
    None
}

/// `Fri Nov 27 12:00:00 2026` (UTC), the date format of a From line.
fn asctime(secs: u64) -> String {
    let c = pop3_proto::date::civil(secs);
    let (h, m, s) = c.hms;
    format!(
        "{} {} {:2} {h:02}:{m:02}:{s:02} {}",
        c.weekday, c.month, c.day, c.year
    )
}

/// FNV-1a, 64 bits: enough to tell our bytes from anyone else's in the recorded place.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Cuts the mbox back to the end of the last complete recorded message when it ends inside a
/// recorded one (a torn append).
fn cut_torn_tail(
    file: &File,
    placements: &HashMap<String, (u64, u64, u64)>,
) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    if let Some(&(start, _, _)) = placements
        .values()
        .find(|&&(start, end, _)| start < len && len < end)
    {
        file.set_len(start)?;
        file.sync_all()?;
    }
    Ok(())
}

/// A blocking fcntl write lock on the whole file, released when the file is closed.
fn fcntl_lock(file: &File) -> std::io::Result<()> {
    use nix::fcntl::{FcntlArg, fcntl};
    // F_WRLCK (1) and SEEK_SET (0) fit the C struct's short fields.
    let short = |v: i32| i16::try_from(v).unwrap_or_default();
    let lock = nix::libc::flock {
        l_type: short(nix::libc::F_WRLCK),
        l_whence: short(nix::libc::SEEK_SET),
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    fcntl(file, FcntlArg::F_SETLKW(&lock))
        .map(drop)
        .map_err(std::io::Error::from)
}

/// `<mbox>.lock`, made with link(2) from a unique file holding our pid, the way that is atomic
/// even over NFS. A lock whose pid is no longer running is stale and taken over.
struct DotLock {
    path: PathBuf,
    was_stale: bool,
}

impl DotLock {
    fn acquire(mbox: &Path) -> Result<Self, FetchError> {
        let path = PathBuf::from(format!("{}.lock", mbox.display()));
        let unique = PathBuf::from(format!(
            "{}.lock.{}.{}",
            mbox.display(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let io = FetchError::io(format!("cannot lock {}", mbox.display()));
        fs::write(&unique, format!("{}\n", std::process::id())).map_err(io)?;
        let deadline = Instant::now() + LOCK_WAIT;
        let mut was_stale = false;
        let result = loop {
            match fs::hard_link(&unique, &path) {
                Ok(()) => break Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if owner_is_gone(&path) {
                        // A dead process's lock: take it over (remove, then link again).
                        was_stale |= fs::read_to_string(&path).is_ok();
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    if Instant::now() > deadline {
                        break Err(FetchError::Busy(path.clone()));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => break Err(FetchError::io(format!("cannot lock {}", mbox.display()))(e)),
            }
        };
        let _ = fs::remove_file(&unique);
        result.map(|()| DotLock { path, was_stale })
    }

    fn release(self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether the pid in a dot-lock names no running process (an empty or unreadable lock counts
/// as alive: another program may be writing it right now).
fn owner_is_gone(lock: &Path) -> bool {
    fs::read_to_string(lock)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .is_some_and(|pid| !Path::new("/proc").join(pid.to_string()).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mboxrd_quoting_line_ends_and_the_from_line() {
        let msg = b"Return-Path: <a@b.example>\r\nSubject: x\r\n\r\nFrom here\r\n>From there\r\n>>From x\r\nFrom\r\nlast";
        let entry = mboxrd_entry(msg, 1_795_780_800);
        assert_eq!(
            String::from_utf8(entry).unwrap(),
            "From a@b.example Fri Nov 27 12:00:00 2026\nReturn-Path: <a@b.example>\nSubject: x\n\n>From here\n>>From there\n>>>From x\nFrom\nlast\n\n"
        );
        assert_eq!(asctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(asctime(951_782_400), "Tue Feb 29 00:00:00 2000");
    }

    #[test]
    fn batches_append_and_are_found_again_and_a_torn_tail_is_cut() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("inbox");
        let mut m = Mbox::open(&path).unwrap();
        let (a, b) = (m.token(), m.token());
        for (t, body) in [
            (&a, &b"Subject: 1\r\n\r\none\r\n"[..]),
            (&b, b"Subject: 2\r\n\r\ntwo\r\n"),
        ] {
            let mut w = m.open(t).unwrap();
            w.write(body).unwrap();
            w.finish().unwrap();
        }
        m.sync().unwrap();
        assert_eq!(m.holds(&[a.clone(), b.clone()]).unwrap().len(), 2);
        assert!(!path.with_extension("lock").exists());
        let whole = fs::read(&path).unwrap();
        // Someone else's message appended later does not make ours "held" twice, and a message
        // we never wrote is not held.
        assert!(m.holds(&["mbox0.0".into()]).unwrap().is_empty());
        // A run died in the middle of appending c: its dot-lock is still there.
        let c = m.token();
        let mut w = m.open(&c).unwrap();
        w.write(b"Subject: 3\r\n\r\nthree\r\n").unwrap();
        w.finish().unwrap();
        m.sync().unwrap();
        let full = fs::read(&path).unwrap();
        fs::write(&path, &full[..full.len() - 5]).unwrap();
        fs::write(format!("{}.lock", path.display()), "999999999\n").unwrap();
        assert!(m.holds(std::slice::from_ref(&c)).unwrap().is_empty());
        // The next batch takes the stale lock over, cuts the torn message and appends.
        let e = m.token();
        let mut w = m.open(&e).unwrap();
        w.write(b"Subject: 3\r\n\r\nthree\r\n").unwrap();
        w.finish().unwrap();
        m.sync().unwrap();
        let now = fs::read(&path).unwrap();
        assert_eq!(&now[..whole.len()], &whole[..]);
        assert_eq!(
            now.len(),
            full.len(),
            "the torn copy is gone, one whole copy follows"
        );
        assert!(m.holds(&[e]).unwrap().len() == 1);
    }
}
