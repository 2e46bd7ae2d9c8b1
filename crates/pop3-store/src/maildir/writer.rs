//! New messages into a Maildir: the one way every Poplar program writes them, whether the
//! server delivers (LMTP, `poplar deliver`), `poplar fetch --to maildir:` stores what it
//! downloaded, or `poplar migrate` brings a live server's mail.
//!
//! A message is written to `tmp/` under a unique base name, created anew (never through a link
//! someone planted) with mode 0600, while its sizes are counted: `,S=` the octets, `,W=` the
//! octets with every line ending in CRLF (Dovecot's virtual size). A draft may store line ends
//! as CRLF, as they go on the wire (Dovecot's `mail_save_crlf`; every Maildir reader accepts
//! both); a message stored exactly as RETR sends it (see [`SizeCounter::verbatim`]) says so
//! with `,V=1` in its name, so the index learns it without reading the file and RETR can hand
//! the file to the kernel ([`VERBATIM_HINT`]). Finished
//! messages are fsynced, a batch on several threads so the disk takes the flushes together,
//! then renamed into `new/` (or `cur/`), and that directory is fsynced: a message is visible
//! only once its contents are on disk, and a crash at any instant leaves either nothing or a
//! complete message (an abandoned `tmp/` file is removed by the next session after 36 hours).

use super::{filename, untrusted};
use crate::StoreError;
use pop3_proto::canonical::SizeCounter;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where a committed message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folder {
    /// `new/`: not yet seen by any mail program.
    New,
    /// `cur/`: seen (a migrated message that was already read).
    Cur,
}

impl Folder {
    pub(crate) fn dir(self) -> &'static str {
        match self {
            Folder::New => "new",
            Folder::Cur => "cur",
        }
    }
}

/// Messages written by this process, so that names made in the same microsecond differ.
static WRITTEN: AtomicU64 = AtomicU64::new(0);

/// A Maildir opened for new messages.
#[derive(Debug, Clone)]
pub struct Writer {
    dir: PathBuf,
    host: String,
}

impl Writer {
    /// The Maildir at `dir`, with `tmp`, `new` and `cur` created (mode 0700) if missing. One
    /// that is a symbolic link or not a directory is refused: messages would land wherever it
    /// points. `host` names this machine in new file names.
    pub fn open(dir: &Path, host: &str) -> Result<Self, StoreError> {
        create_dirs(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            host: host.to_owned(),
        })
    }

    /// The Maildir's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A base name no other message has: `SECS.M<usec>P<pid>Q<n>R<random>.HOST`.
    pub fn unique_base(&self) -> String {
        let mut random = [0u8; 4];
        // Without randomness the time, process and counter still make the name unique here.
        let _ = getrandom::fill(&mut random);
        filename::unique_base(
            &self.host,
            WRITTEN.fetch_add(1, Ordering::Relaxed),
            u32::from_le_bytes(random),
        )
    }

    /// Starts a message in `tmp/` under `base` (see [`Writer::unique_base`]); it may hold at
    /// most `limit` octets.
    pub fn draft(&self, base: &str, limit: u64) -> Result<Draft, StoreError> {
        let tmp = self.dir.join("tmp").join(base);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| StoreError::io(&tmp, e))?;
        Ok(Draft {
            file: BufWriter::with_capacity(WRITE_BUFFER, file),
            tmp,
            base: base.to_owned(),
            raw: 0,
            counter: SizeCounter::new(),
            limit,
            crlf: false,
            prev_cr: false,
            converted: Vec::new(),
        })
    }

    /// A finished message of another Maildir (on this machine) added to this one's `tmp/`
    /// under the same name: hard-linked, or copied where the two are on different file systems.
    pub fn adopt(&self, other: &Written) -> Result<Written, StoreError> {
        let tmp = self.dir.join("tmp").join(&other.name);
        if fs::hard_link(&other.tmp, &tmp).is_err() {
            untrusted::copy_message(&other.tmp, &tmp, None).map_err(|e| StoreError::io(&tmp, e))?;
        }
        let file = File::open(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        Ok(Written {
            file,
            tmp,
            name: other.name.clone(),
            raw: other.raw,
        })
    }

    /// Makes a batch of finished messages durable and visible: every file fsynced, each
    /// renamed into `folder`, the folder fsynced. On failure the batch's files that are still
    /// in `tmp/` are removed; messages already renamed stay (they are complete).
    pub fn commit(&self, batch: Vec<Written>, folder: Folder) -> Result<(), StoreError> {
        let target_dir = self.dir.join(folder.dir());
        let result = sync_in_parallel(&batch, |w| {
            w.file.sync_all().map_err(|e| StoreError::io(&w.tmp, e))
        })
        .and_then(|()| {
            for w in &batch {
                let target = target_dir.join(&w.name);
                fs::rename(&w.tmp, &target).map_err(|e| StoreError::io(&target, e))?;
            }
            sync_dir(&target_dir)
        });
        if result.is_err() {
            for w in &batch {
                let _ = fs::remove_file(&w.tmp);
            }
        }
        result
    }

    /// Which of these base names name messages in `new/` or `cur/` (a mail program may have
    /// moved a message to `cur/` and added flags; the base never changes).
    pub fn holds(&self, bases: &[String]) -> Result<HashSet<String>, StoreError> {
        let wanted: HashSet<&str> = bases.iter().map(String::as_str).collect();
        let mut found = HashSet::new();
        for sub in ["new", "cur"] {
            let path = self.dir.join(sub);
            let entries = fs::read_dir(&path).map_err(|e| StoreError::io(&path, e))?;
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                // Without the flags and the size hints.
                let base = filename::base(&name).split(',').next().unwrap_or("");
                if wanted.contains(base) {
                    found.insert(base.to_owned());
                }
            }
        }
        Ok(found)
    }
}

/// The base-name field of a message stored exactly as RETR sends it, before the terminator
/// (other programs ignore fields they do not know, as they do Dovecot's `,W=`).
pub const VERBATIM_HINT: &str = ",V=1";

/// Writes go out in pieces this large.
const WRITE_BUFFER: usize = 256 * 1024;

/// A message being written to `tmp/`.
#[derive(Debug)]
pub struct Draft {
    file: BufWriter<File>,
    tmp: PathBuf,
    base: String,
    raw: u64,
    counter: SizeCounter,
    limit: u64,
    /// Store bare LFs as CRLF.
    crlf: bool,
    /// The last octet written was CR (a LF after it is no bare LF).
    prev_cr: bool,
    /// Reused for converted chunks.
    converted: Vec<u8>,
}

impl Write for Draft {
    /// Appends octets (bare LFs as CRLF when the draft stores CRLF); past the draft's limit,
    /// fails with [`io::ErrorKind::FileTooLarge`].
    fn write(&mut self, chunk: &[u8]) -> io::Result<usize> {
        let Some(&last) = chunk.last() else {
            return Ok(0);
        };
        let mut converted = std::mem::take(&mut self.converted);
        let stored = if self.crlf {
            converted.clear();
            to_crlf(chunk, self.prev_cr, &mut converted);
            converted.as_slice()
        } else {
            chunk
        };
        let raw = self.raw + stored.len() as u64;
        if raw > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("the message is larger than the {}-octet limit", self.limit),
            ));
        }
        self.file.write_all(stored)?;
        self.counter.update(stored);
        self.raw = raw;
        self.prev_cr = last == b'\r';
        self.converted = converted;
        Ok(chunk.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Appends `input` to `out` with every bare LF as CRLF; `prev_cr` says whether the octet before
/// `input` was CR.
fn to_crlf(input: &[u8], prev_cr: bool, out: &mut Vec<u8>) {
    out.reserve(input.len() + input.len() / 32);
    let mut span = 0;
    for lf in memchr::memchr_iter(b'\n', input) {
        let cr_before = match lf.checked_sub(1) {
            Some(before) => input[before] == b'\r',
            None => prev_cr,
        };
        if !cr_before {
            out.extend_from_slice(&input[span..lf]);
            out.push(b'\r');
            span = lf;
        }
    }
    out.extend_from_slice(&input[span..]);
}

impl Draft {
    /// Stores line ends as CRLF (see the module documentation): the octets stored, counted
    /// and limited are then the converted ones.
    pub fn save_crlf(mut self, on: bool) -> Self {
        self.crlf = on;
        self
    }

    /// Copies `input` to the end of the message. Past the limit:
    /// [`StoreError::MessageTooLarge`].
    pub fn copy_from(&mut self, input: &mut dyn io::Read) -> Result<u64, StoreError> {
        match io::copy(input, self) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::FileTooLarge => {
                Err(StoreError::MessageTooLarge { limit: self.limit })
            }
            Err(e) => Err(StoreError::io(&self.tmp, e)),
        }
    }

    /// Octets written so far.
    pub fn len(&self) -> u64 {
        self.raw
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.raw == 0
    }

    /// Completes the message: its name becomes `BASE,S=<octets>,W=<virtual octets>`, with
    /// [`VERBATIM_HINT`] after them when RETR sends the file unchanged. It is in place only
    /// after [`Writer::commit`].
    pub fn finish(self) -> Result<Written, StoreError> {
        let name = format!(
            "{},S={},W={}{}",
            self.base,
            self.raw,
            self.counter.virtual_size(),
            if self.counter.verbatim() {
                VERBATIM_HINT
            } else {
                ""
            }
        );
        let raw = self.raw;
        let tmp = self.tmp;
        match self.file.into_inner() {
            Ok(file) => Ok(Written {
                file,
                tmp,
                name,
                raw,
            }),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(StoreError::io(&tmp, e.into_error()))
            }
        }
    }

    /// Abandons the message, leaving nothing behind.
    pub fn discard(self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

/// A complete message in `tmp/`, not yet durable or visible.
#[derive(Debug)]
pub struct Written {
    file: File,
    tmp: PathBuf,
    name: String,
    raw: u64,
}

impl Written {
    /// The file name it takes in `new/` or `cur/`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it is now, in `tmp/`.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Its size in octets.
    pub fn size(&self) -> u64 {
        self.raw
    }

    /// Abandons the message.
    pub fn discard(self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Creates `dir/{tmp,new,cur}` (mode 0700) where missing; a subdirectory that is a link
/// elsewhere (another user's `new/`) or not a directory is refused, not followed.
pub(crate) fn create_dirs(dir: &Path) -> Result<(), StoreError> {
    // One lstat per subdirectory when they exist, as they do at every open but the first.
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true).mode(0o700);
    for sub in ["tmp", "new", "cur"] {
        let path = dir.join(sub);
        if !untrusted::subdirectory(&path).map_err(|e| StoreError::io(dir, e))? {
            builder
                .create(&path)
                .map_err(|e| StoreError::io(&path, e))?;
        }
    }
    Ok(())
}

/// fsyncs a directory, making the renames into it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// Runs `sync` on every item, on up to 8 threads: the disk takes flushes issued together in
/// fewer round trips than one after another.
pub(crate) fn sync_in_parallel<T: Sync>(
    items: &[T],
    sync: impl Fn(&T) -> Result<(), StoreError> + Sync,
) -> Result<(), StoreError> {
    const THREADS: usize = 8;
    if items.len() <= 1 {
        return items.iter().try_for_each(&sync);
    }
    let per_thread = items.len().div_ceil(THREADS);
    let sync = &sync;
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || chunk.iter().try_for_each(sync)))
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err(StoreError::Internal("a sync thread panicked".into())))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_visible_only_when_committed_and_named_with_their_sizes() {
        let d = tempfile::tempdir().unwrap();
        let w = Writer::open(&d.path().join("Maildir"), "host/a:b").unwrap();
        let (a, b) = (w.unique_base(), w.unique_base());
        assert_ne!(a, b);
        assert!(a.ends_with(".host\\057a\\072b"), "{a}");
        let mut draft = w.draft(&a, 1000).unwrap();
        draft.write_all(b"Subject: x\n\nbody").unwrap();
        let written = draft.finish().unwrap();
        // S: 16 octets as stored; W: with CRLF line ends, as Dovecot counts (no CRLF added to
        // the unterminated last line).
        assert_eq!(written.name(), format!("{a},S=16,W=18"));
        w.draft(&b, 1000).unwrap().discard();
        assert!(w.holds(&[a.clone(), b.clone()]).unwrap().is_empty());
        w.commit(vec![written], Folder::New).unwrap();
        assert_eq!(
            w.holds(&[a.clone(), b]).unwrap(),
            HashSet::from([a.clone()])
        );
        let stored = fs::read(d.path().join(format!("Maildir/new/{a},S=16,W=18"))).unwrap();
        assert_eq!(stored, b"Subject: x\n\nbody");
        // Read by a mail program: moved to cur/ with flags, still found by its base.
        fs::rename(
            d.path().join(format!("Maildir/new/{a},S=16,W=18")),
            d.path().join(format!("Maildir/cur/{a},S=16,W=18:2,S")),
        )
        .unwrap();
        assert_eq!(
            w.holds(std::slice::from_ref(&a)).unwrap(),
            HashSet::from([a])
        );
        assert_eq!(
            fs::read_dir(d.path().join("Maildir/tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn a_crlf_draft_stores_line_ends_as_sent_and_says_when_retr_needs_no_change() {
        let d = tempfile::tempdir().unwrap();
        let w = Writer::open(d.path(), "h").unwrap();
        let store = |pieces: &[&[u8]]| {
            let base = w.unique_base();
            let mut draft = w.draft(&base, 1000).unwrap().save_crlf(true);
            for piece in pieces {
                draft.write_all(piece).unwrap();
            }
            let written = draft.finish().unwrap();
            let name = written
                .name()
                .strip_prefix(base.as_str())
                .unwrap()
                .to_owned();
            (fs::read(written.path()).unwrap(), name)
        };
        // Bare LFs gain their CR, also where a CR ended the previous piece.
        assert_eq!(
            store(&[b"A: b\n\nline\r", b"\nend\n"]),
            (
                b"A: b\r\n\r\nline\r\nend\r\n".to_vec(),
                ",S=19,W=19,V=1".into()
            )
        );
        assert_eq!(
            store(&[b"x\r", b"y\n"]),
            (b"x\ry\r\n".to_vec(), ",S=5,W=5,V=1".into())
        );
        // Not verbatim: a line starting with '.', an unterminated last line.
        assert_eq!(
            store(&[b"A: b\n\n.dot\n"]),
            (b"A: b\r\n\r\n.dot\r\n".to_vec(), ",S=14,W=14".into())
        );
        assert_eq!(
            store(&[b"A: b\n\nend"]),
            (b"A: b\r\n\r\nend".to_vec(), ",S=11,W=11".into())
        );
        // The limit applies to what is stored.
        let mut draft = w.draft(&w.unique_base(), 4).unwrap().save_crlf(true);
        assert!(draft.write_all(b"a\nb\n").is_err());
        draft.discard();
    }

    #[test]
    fn a_draft_past_its_limit_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let w = Writer::open(d.path(), "h").unwrap();
        let mut draft = w.draft(&w.unique_base(), 10).unwrap();
        let e = draft.copy_from(&mut &b"0123456789A"[..]).unwrap_err();
        assert!(
            matches!(e, StoreError::MessageTooLarge { limit: 10 }),
            "{e}"
        );
        draft.discard();
        assert_eq!(fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_linked_subdirectory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let elsewhere = d.path().join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();
        let maildir = d.path().join("Mail");
        fs::create_dir_all(maildir.join("cur")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, maildir.join("tmp")).unwrap();
        let e = Writer::open(&maildir, "h").unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn a_message_is_adopted_by_a_second_maildir() {
        let d = tempfile::tempdir().unwrap();
        let (one, two) = (
            Writer::open(&d.path().join("one"), "h").unwrap(),
            Writer::open(&d.path().join("two"), "h").unwrap(),
        );
        let mut draft = one.draft(&one.unique_base(), 100).unwrap();
        draft.write_all(b"hello\r\n").unwrap();
        let first = draft.finish().unwrap();
        let second = two.adopt(&first).unwrap();
        assert_eq!(first.name(), second.name());
        let name = first.name().to_owned();
        one.commit(vec![first], Folder::New).unwrap();
        two.commit(vec![second], Folder::Cur).unwrap();
        assert_eq!(
            fs::read(d.path().join("one/new").join(&name)).unwrap(),
            b"hello\r\n"
        );
        assert_eq!(
            fs::read(d.path().join("two/cur").join(&name)).unwrap(),
            b"hello\r\n"
        );
    }
}
