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
use pop3_store::StoreError;
use pop3_store::dotlock::DotLock;
use poplar_util::clock::asctime;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long to wait for another program's dot-lock before giving up (temporary failure).
const LOCK_WAIT: Duration = Duration::from_secs(60);

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The messages of the batch being received, in order: each message's token and its mboxrd
/// entry, ready in a temporary file, with the entry's length and hash.
type Batch = Arc<Mutex<Vec<Entry>>>;

/// One message converted to its mboxrd entry, waiting for [`Destination::sync`].
#[derive(Debug)]
struct Entry {
    token: String,
    file: File,
    len: u64,
    hash: u64,
}

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
            spool: crate::dest::Spool::new()?,
            batch: Arc::clone(&self.batch),
        }))
    }

    fn sync(&mut self) -> Result<(), FetchError> {
        let batch = std::mem::take(&mut *self.batch.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            return Ok(());
        }
        let io = |what: &str| FetchError::io(format!("{what} {}", self.path.display()));
        let lock_path = PathBuf::from(format!("{}.lock", self.path.display()));
        let lock = DotLock::acquire_pid(&lock_path, LOCK_WAIT).map_err(|e| match e {
            StoreError::LockTimeout { path } => FetchError::Busy(path),
            StoreError::Io { path, source } => {
                FetchError::io(format!("cannot lock {}", path.display()))(source)
            }
            other => FetchError::File {
                path: lock_path.clone(),
                why: other.to_string(),
            },
        })?;
        // A failure half-way through leaves the lock in place, as a crash would: the next
        // run takes it over as stale and cuts off what was torn.
        let appended = (|| {
            let mut file = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)
                .map_err(io("cannot open"))?;
            fcntl_lock(&file).map_err(io("cannot lock"))?;
            if lock.was_stale() {
                // A run of ours died while appending: nothing was appended since. Cut a torn
                // message off.
                cut_torn_tail(&file, &self.placements()).map_err(io("cannot repair"))?;
            }
            let mut offset = file.metadata().map_err(io("cannot read"))?.len();
            let mut side = String::new();
            for entry in &batch {
                let end = offset + entry.len;
                side.push_str(&format!(
                    "{} {offset} {end} {:016x}\n",
                    entry.token, entry.hash
                ));
                offset = end;
            }
            let side_path = self.side_file();
            let mut side_file =
                File::create(&side_path).map_err(io("cannot write the side file of"))?;
            side_file
                .write_all(side.as_bytes())
                .and_then(|()| side_file.sync_all())
                .map_err(io("cannot write the side file of"))?;
            for mut entry in batch {
                std::io::copy(&mut entry.file, &mut file).map_err(io("cannot append to"))?;
            }
            file.sync_all().map_err(io("cannot sync"))
        })();
        match appended {
            Ok(()) => Ok(()),
            Err(e) => {
                lock.abandon();
                Err(e)
            }
        }
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
    spool: crate::dest::Spool,
    batch: Batch,
}

impl MessageWriter for MboxWriter {
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.spool.write(chunk)
    }

    fn finish(self: Box<Self>) -> Result<(), FetchError> {
        use std::io::Seek;
        let io = |what: &'static str| FetchError::io(what);
        let mut message = self.spool.finish()?;
        let sender = return_path_of(&mut message).unwrap_or_else(|| "MAILER-DAEMON".into());
        message
            .rewind()
            .map_err(io("cannot read a temporary file"))?;
        let now = poplar_util::clock::unix_now();
        let entry = tempfile::tempfile().map_err(io("cannot create a temporary file ($TMPDIR)"))?;
        let mut converter = Mboxrd::new(std::io::BufWriter::new(entry), &sender, now)
            .map_err(io("cannot write a temporary file"))?;
        std::io::copy(&mut message, &mut converter).map_err(io("cannot write a temporary file"))?;
        let (out, len, hash) = converter
            .finish()
            .map_err(io("cannot write a temporary file"))?;
        let mut file = out
            .into_inner()
            .map_err(|e| io("cannot write a temporary file")(e.into_error()))?;
        file.rewind().map_err(io("cannot read a temporary file"))?;
        let mut batch = self.batch.lock().unwrap_or_else(|e| e.into_inner());
        batch.push(Entry {
            token: self.token,
            file,
            len,
            hash,
        });
        Ok(())
    }

    fn discard(self: Box<Self>) {}
}

/// Writes one message as an mboxrd entry, as it streams by: a From line, LF line ends, every
/// line matching `>*From ` given one more `>`, a final newline if the message lacks one, and a
/// blank line after. Its state is a count of `>` and at most five more octets, so a message of
/// any size, lines of any length included, goes through in constant memory. Counts and hashes
/// what it writes (see [`fnv`]).
pub struct Mboxrd<W: Write> {
    out: W,
    /// At the start of a line: the `>` seen so far and up to five octets after them, not yet
    /// written, until it is known whether the line reads `>*From `.
    prefix: Option<(u64, Vec<u8>)>,
    /// A CR not yet written: dropped if a LF follows.
    cr: bool,
    len: u64,
    hash: u64,
}

impl<W: Write> Mboxrd<W> {
    /// Starts an entry with the From line for `sender` at Unix time `now`.
    pub fn new(out: W, sender: &str, now: u64) -> std::io::Result<Self> {
        let mut m = Mboxrd {
            out,
            prefix: Some((0, Vec::new())),
            cr: false,
            len: 0,
            hash: FNV_START,
        };
        m.emit(format!("From {sender} {}\n", asctime(now)).as_bytes())?;
        Ok(m)
    }

    fn emit(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.len += bytes.len() as u64;
        self.hash = fnv_update(self.hash, bytes);
        self.out.write_all(bytes)
    }

    /// Writes what a line start held back, quoting it if it reads `>*From `.
    fn release_prefix(&mut self, from_line: bool) -> std::io::Result<()> {
        if let Some((quotes, pending)) = self.prefix.take() {
            if from_line {
                self.emit(b">")?;
            }
            for _ in 0..quotes {
                self.emit(b">")?;
            }
            self.emit(&pending)?;
        }
        Ok(())
    }

    fn end_line(&mut self) -> std::io::Result<()> {
        self.release_prefix(false)?;
        self.emit(b"\n")?;
        self.prefix = Some((0, Vec::new()));
        Ok(())
    }

    fn octet(&mut self, b: u8) -> std::io::Result<()> {
        if std::mem::take(&mut self.cr) {
            if b == b'\n' {
                return self.end_line();
            }
            self.release_prefix(false)?;
            self.emit(b"\r")?;
        }
        match b {
            b'\n' => self.end_line(),
            b'\r' => {
                self.cr = true;
                Ok(())
            }
            _ => match &mut self.prefix {
                Some((quotes, pending)) if pending.is_empty() && b == b'>' => {
                    *quotes += 1;
                    Ok(())
                }
                Some((_, pending)) if b"From "[pending.len()] == b => {
                    pending.push(b);
                    if pending.len() == 5 {
                        self.release_prefix(true)?;
                    }
                    Ok(())
                }
                Some(_) => {
                    self.release_prefix(false)?;
                    self.emit(&[b])
                }
                None => self.emit(&[b]),
            },
        }
    }

    /// Ends the entry; returns the writer, the entry's length and its hash.
    pub fn finish(mut self) -> std::io::Result<(W, u64, u64)> {
        // A final CR without LF ends the last line and is dropped, as a CR before a LF is.
        let cr = std::mem::take(&mut self.cr);
        let at_line_start = matches!(&self.prefix, Some((0, p)) if p.is_empty());
        if cr || !at_line_start {
            self.end_line()?;
        }
        self.emit(b"\n")?;
        self.out.flush()?;
        Ok((self.out, self.len, self.hash))
    }
}

impl<W: Write> Write for Mboxrd<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            self.octet(b)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// A message as an mboxrd entry: From line, LF line ends, `>*From ` quoted, blank line after.
pub fn mboxrd_entry(message: &[u8], now: u64) -> Vec<u8> {
    let sender = return_path(message).unwrap_or_else(|| "MAILER-DAEMON".into());
    let Ok(mut m) = Mboxrd::new(Vec::with_capacity(message.len() + 64), &sender, now) else {
        return Vec::new();
    };
    let _ = m.write_all(message);
    m.finish().map(|(out, _, _)| out).unwrap_or_default()
}

/// The envelope sender from a `Return-Path:` header, if the message has one.
pub(crate) fn return_path(message: &[u8]) -> Option<String> {
    return_path_of(&mut &message[..])
}

/// [`return_path`] of a message read from `reader`: only its header section, and at most
/// 1 MiB of it.
pub(crate) fn return_path_of(reader: &mut impl Read) -> Option<String> {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(reader.take(1 << 20));
    let mut line = Vec::new();
    loop {
        line.clear();
        if lines.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            return None;
        }
        if let Some((name, value)) = text.split_once(':')
            && name.eq_ignore_ascii_case("Return-Path")
        {
            let addr = value.trim().trim_start_matches('<').trim_end_matches('>');
            return (!addr.is_empty() && !addr.contains(char::is_whitespace))
                .then(|| addr.to_owned());
        }
    }
}

/// FNV-1a, 64 bits: enough to tell our bytes from anyone else's in the recorded place.
fn fnv(bytes: &[u8]) -> u64 {
    fnv_update(FNV_START, bytes)
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv_update(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, line by line, over a whole message in memory.
    fn reference(message: &[u8], now: u64) -> Vec<u8> {
        let sender = return_path(message).unwrap_or_else(|| "MAILER-DAEMON".into());
        let mut out = format!("From {sender} {}\n", asctime(now)).into_bytes();
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

    #[test]
    fn the_streaming_converter_is_the_definition_in_any_chunks() {
        let pieces: [&[u8]; 12] = [
            b"From ",
            b">",
            b">>From x",
            b"\r\n",
            b"\n",
            b"\r",
            b"Fro",
            b"m ",
            b"text",
            b"Return-Path: <a@b>\r\n",
            b".",
            b"F",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let mut message = Vec::new();
            for _ in 0..(next() % 12) {
                message.extend_from_slice(pieces[usize::try_from(next() % 12).unwrap()]);
            }
            let want = reference(&message, 1_800_000_000);
            let sender = return_path(&message).unwrap_or_else(|| "MAILER-DAEMON".into());
            let mut m = Mboxrd::new(Vec::new(), &sender, 1_800_000_000).unwrap();
            let mut rest = &message[..];
            while !rest.is_empty() {
                let n = (usize::from(next() % 4 == 0) + (next() % 3) as usize + 1).min(rest.len());
                m.write_all(&rest[..n]).unwrap();
                rest = &rest[n..];
            }
            let (got, len, hash) = m.finish().unwrap();
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&message));
            assert_eq!((len, hash), (want.len() as u64, fnv(&want)));
        }
    }

    #[test]
    fn mboxrd_quoting_line_ends_and_the_from_line() {
        let msg = b"Return-Path: <a@b.example>\r\nSubject: x\r\n\r\nFrom here\r\n>From there\r\n>>From x\r\nFrom\r\nlast";
        let entry = mboxrd_entry(msg, 1_795_780_800);
        assert_eq!(
            String::from_utf8(entry).unwrap(),
            "From a@b.example Fri Nov 27 12:00:00 2026\nReturn-Path: <a@b.example>\nSubject: x\n\n>From here\n>>From there\n>>>From x\nFrom\nlast\n\n"
        );
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
