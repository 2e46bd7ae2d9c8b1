//! Where fetched mail goes.
//!
//! A destination stores a message durably and can say afterwards whether a delivery it was
//! given a token for arrived: that answer is what lets a run that was killed between delivering
//! a message and recording it in the journal decide without guessing (see [`crate::journal`]).
//! Messages are stored exactly as RETR sent them, un-stuffed (CRLF line ends).

use crate::FetchError;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Completes the message; it is in place, durably, after the next [`Destination::sync`].
    fn finish(self: Box<Self>) -> Result<(), FetchError>;
    /// Abandons the message, leaving nothing behind.
    fn discard(self: Box<Self>);
}

/// A Maildir: each message is written to `tmp/`; [`Destination::sync`] then fsyncs the batch's
/// files (on several threads, so the disk takes the flushes together), renames them into `new/`
/// and fsyncs `new/`. A message is thus in `new/` only once its contents are on disk.
#[derive(Debug)]
pub struct Maildir {
    dir: PathBuf,
    host: String,
    /// Messages written to `tmp/` and waiting for [`Destination::sync`].
    written: Arc<Mutex<Vec<Written>>>,
}

/// A message in `tmp/`, complete but not yet durable or visible.
#[derive(Debug)]
struct Written {
    file: File,
    tmp: PathBuf,
    target: PathBuf,
}

/// Tokens unique within this process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Maildir {
    /// The Maildir at `dir`, created (with `tmp`, `new`, `cur`) if missing. A `tmp`, `new` or
    /// `cur` that is a symbolic link is refused: messages would be written where it points.
    pub fn open(dir: &Path) -> Result<Self, FetchError> {
        pop3_store::maildir::untrusted::check_subdirectories(dir).map_err(|e| {
            FetchError::File {
                path: dir.to_owned(),
                why: e.to_string(),
            }
        })?;
        for sub in ["tmp", "new", "cur"] {
            let path = dir.join(sub);
            fs::DirBuilder::new()
                .recursive(true)
                .create(&path)
                .map_err(FetchError::io(format!("cannot create {}", path.display())))?;
        }
        // The Maildir specification's escapes for '/' and ':' in a host name.
        let host = hostname().replace('/', "\\057").replace(':', "\\072");
        Ok(Maildir {
            dir: dir.to_owned(),
            host,
            written: Arc::default(),
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
            file: BufWriter::with_capacity(WRITE_BUFFER, file),
            tmp,
            new: self.dir.join("new"),
            token: token.to_owned(),
            size: 0,
            written: Arc::clone(&self.written),
        }))
    }

    fn sync(&mut self) -> Result<(), FetchError> {
        let batch = std::mem::take(&mut *self.written.lock().unwrap_or_else(|e| e.into_inner()));
        let result = sync_files(&batch).and_then(|()| {
            for w in &batch {
                fs::rename(&w.tmp, &w.target).map_err(FetchError::io(format!(
                    "cannot store {}",
                    w.target.display()
                )))?;
            }
            let new = self.dir.join("new");
            File::open(&new)
                .and_then(|d| d.sync_all())
                .map_err(FetchError::io(format!("cannot sync {}", new.display())))
        });
        if result.is_err() {
            for w in &batch {
                let _ = fs::remove_file(&w.tmp);
            }
        }
        result
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

/// The un-stuffer hands over a message line by line; writes go out in pieces this large.
const WRITE_BUFFER: usize = 256 * 1024;

struct MaildirWriter {
    file: BufWriter<File>,
    tmp: PathBuf,
    new: PathBuf,
    token: String,
    size: u64,
    written: Arc<Mutex<Vec<Written>>>,
}

/// fsyncs the files of a batch, on up to 8 threads.
fn sync_files(batch: &[Written]) -> Result<(), FetchError> {
    let per_thread = batch.len().div_ceil(8).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = batch
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk.iter().try_for_each(|w| {
                        w.file
                            .sync_all()
                            .map_err(FetchError::io(format!("cannot sync {}", w.tmp.display())))
                    })
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err(FetchError::Protocol("a sync thread panicked".into())))
        })
    })
}

impl MessageWriter for MaildirWriter {
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.size += chunk.len() as u64;
        self.file.write_all(chunk)
    }

    fn finish(self: Box<Self>) -> Result<(), FetchError> {
        let target = self.new.join(format!("{},S={}", self.token, self.size));
        match self.file.into_inner() {
            Ok(file) => {
                let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
                written.push(Written {
                    file,
                    tmp: self.tmp,
                    target,
                });
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&self.tmp);
                Err(FetchError::io(format!(
                    "cannot write {}",
                    self.tmp.display()
                ))(e.into_error()))
            }
        }
    }

    fn discard(self: Box<Self>) {
        let _ = fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_maildir_whose_subdirectory_is_a_link_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let elsewhere = d.path().join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();
        let maildir = d.path().join("Mail");
        fs::create_dir_all(maildir.join("cur")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, maildir.join("tmp")).unwrap();
        let Err(e) = Maildir::open(&maildir) else {
            panic!("a linked tmp/ was accepted");
        };
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

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

/// A message on its way to a destination that takes it whole, kept in an anonymous temporary
/// file (in `$TMPDIR`; the system removes it when it is closed, even if the process dies),
/// never in memory: whatever a server sends, the client's memory does not grow with it.
pub struct Spool {
    file: BufWriter<File>,
}

impl Spool {
    /// An empty spool.
    pub fn new() -> Result<Self, FetchError> {
        let file = tempfile::tempfile().map_err(FetchError::io(
            "cannot create a temporary file for a message ($TMPDIR)",
        ))?;
        Ok(Spool {
            file: BufWriter::with_capacity(WRITE_BUFFER, file),
        })
    }

    /// Appends octets.
    pub fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.file.write_all(chunk)
    }

    /// The complete message, read from its start.
    pub fn finish(self) -> Result<File, FetchError> {
        use std::io::Seek;
        let mut file = self
            .file
            .into_inner()
            .map_err(|e| FetchError::io("cannot write a temporary file")(e.into_error()))?;
        file.rewind()
            .map_err(FetchError::io("cannot read a temporary file"))?;
        Ok(file)
    }
}

/// A destination that takes each message whole and cannot be asked afterwards whether it has
/// it (a delivery command, an LMTP server): at least once, not exactly once, as docs/fetch.md
/// says. This holds no tokens, so a run killed after handing a message over but before the
/// journal recorded it hands that message over again.
pub trait Handover: Send + Sync + Clone + 'static {
    /// Delivers one message (as RETR sent it, read from `message`); `Ok` only once the
    /// receiver has accepted it.
    fn hand_over(&self, message: &mut File) -> Result<(), FetchError>;
    /// For messages.
    fn describe(&self) -> String;
}

/// A [`Handover`] as a [`Destination`].
#[derive(Debug)]
pub struct AtLeastOnce<H>(pub H);

impl<H: Handover> Destination for AtLeastOnce<H> {
    fn token(&mut self) -> String {
        format!(
            "h{}.{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn open(&mut self, _token: &str) -> Result<Box<dyn MessageWriter>, FetchError> {
        Ok(Box::new(Spooled {
            to: self.0.clone(),
            spool: Spool::new()?,
        }))
    }

    fn sync(&mut self) -> Result<(), FetchError> {
        Ok(())
    }

    fn holds(&self, _tokens: &[String]) -> Result<HashSet<String>, FetchError> {
        Ok(HashSet::new())
    }

    fn describe(&self) -> String {
        self.0.describe()
    }
}

/// A message spooled whole, then handed over.
struct Spooled<H> {
    to: H,
    spool: Spool,
}

impl<H: Handover> MessageWriter for Spooled<H> {
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.spool.write(chunk)
    }

    fn finish(self: Box<Self>) -> Result<(), FetchError> {
        let mut message = self.spool.finish()?;
        self.to.hand_over(&mut message)
    }

    fn discard(self: Box<Self>) {}
}

/// A delivery command (`mda:COMMAND`, run by `/bin/sh -c`), given each message on standard input;
/// `%F` in the command becomes the sender from the message's `Return-Path:` (shell-quoted), as
/// in fetchmail. Exit status 0 is success, 75 a temporary failure, anything else stops the run.
#[derive(Debug, Clone)]
pub struct Mda {
    command: String,
}

impl Mda {
    /// A destination running `command` per message.
    pub fn new(command: &str) -> AtLeastOnce<Self> {
        AtLeastOnce(Mda {
            command: command.to_owned(),
        })
    }
}

impl Handover for Mda {
    fn hand_over(&self, message: &mut File) -> Result<(), FetchError> {
        use std::io::Seek;
        use std::process::{Command, Stdio};
        let sender = crate::mbox::return_path_of(message).unwrap_or_default();
        message
            .rewind()
            .map_err(FetchError::io("cannot read a temporary file"))?;
        let quoted = format!("'{}'", sender.replace('\'', "'\\''"));
        let command = self.command.replace("%F", &quoted);
        let mut child = Command::new("/bin/sh")
            .args(["-c", &command])
            .stdin(Stdio::piped())
            .spawn()
            .map_err(FetchError::io(format!("cannot run {command:?}")))?;
        let written = child
            .stdin
            .take()
            .map(|mut stdin| std::io::copy(message, &mut stdin).map(drop));
        let status = child
            .wait()
            .map_err(FetchError::io(format!("cannot run {command:?}")))?;
        match (status.code(), written) {
            (Some(0), Some(Ok(()))) => Ok(()),
            (Some(75), _) => Err(FetchError::Io {
                context: format!("{command:?} asks to try later (exit 75)"),
                source: std::io::Error::other("temporary failure"),
            }),
            _ => Err(FetchError::File {
                path: PathBuf::from(&self.command),
                why: format!("the delivery command failed ({status})"),
            }),
        }
    }

    fn describe(&self) -> String {
        format!("mda:{}", self.command)
    }
}

/// An LMTP server (RFC 2033) on `host:port` or `unix:/path`, given each message for one
/// recipient, e.g. a local Dovecot, Cyrus or Poplar's own LMTP listener. The message is sent as
/// received (dot-stuffed on the wire), with `Return-Path:` as the envelope sender; a `4xx` reply
/// is a temporary failure (exit 75), a `5xx` stops the run with the server's reply.
#[derive(Debug, Clone)]
pub struct Lmtp {
    addr: String,
    recipient: String,
}

impl Lmtp {
    /// Deliveries to `recipient` over LMTP at `addr`.
    pub fn new(addr: &str, recipient: &str) -> AtLeastOnce<Self> {
        AtLeastOnce(Lmtp {
            addr: addr.to_owned(),
            recipient: recipient.to_owned(),
        })
    }
    fn connect(&self) -> std::io::Result<Box<dyn Stream>> {
        let timeout = Some(std::time::Duration::from_secs(300));
        Ok(match self.addr.strip_prefix("unix:") {
            Some(path) => {
                let s = std::os::unix::net::UnixStream::connect(path)?;
                s.set_read_timeout(timeout)?;
                Box::new(s)
            }
            None => {
                let s = std::net::TcpStream::connect(&self.addr)?;
                s.set_read_timeout(timeout)?;
                Box::new(s)
            }
        })
    }

    fn deliver(&self, content: &mut File) -> Result<(), FetchError> {
        use std::io::{BufRead, BufReader};
        let io = |what: &str| FetchError::io(format!("LMTP {what} at {}", self.addr));
        let stream = self.connect().map_err(io("connection"))?;
        let mut reader = BufReader::new(stream);
        let reply = |reader: &mut BufReader<Box<dyn Stream>>| -> Result<String, FetchError> {
            let mut all = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).map_err(io("reply"))? == 0 {
                    return Err(FetchError::Protocol(format!(
                        "the LMTP server at {} closed the connection",
                        self.addr
                    )));
                }
                all.push_str(&line);
                if line.as_bytes().get(3) != Some(&b'-') {
                    return Ok(all.trim_end().to_owned());
                }
            }
        };
        let expect = |r: String, code: &str| -> Result<(), FetchError> {
            if r.starts_with(code) {
                return Ok(());
            }
            let text = format!("the LMTP server at {} said {r:?}", self.addr);
            Err(if r.starts_with('4') {
                FetchError::Io {
                    context: text,
                    source: std::io::Error::other("temporary failure"),
                }
            } else {
                FetchError::Protocol(text)
            })
        };
        expect(reply(&mut reader)?, "220")?;
        let sender = {
            use std::io::Seek;
            let sender = crate::mbox::return_path_of(content).unwrap_or_default();
            content
                .rewind()
                .map_err(FetchError::io("cannot read a temporary file"))?;
            sender
        };
        let mut wire = format!(
            "LHLO {}\r\nMAIL FROM:<{sender}>\r\nRCPT TO:<{}>\r\nDATA\r\n",
            hostname(),
            self.recipient
        )
        .into_bytes();
        let send = |reader: &mut BufReader<Box<dyn Stream>>, bytes: &[u8]| {
            reader.get_mut().write_all(bytes).map_err(io("write"))
        };
        send(&mut reader, &wire)?;
        for code in ["250", "250", "250", "354"] {
            expect(reply(&mut reader)?, code)?;
        }
        // Dot-stuffed and CRLF-terminated as a POP3 server sends it, chunk by chunk.
        let mut encoder = pop3_proto::canonical::MessageEncoder::retr();
        let mut chunk = vec![0u8; WRITE_BUFFER];
        loop {
            use std::io::Read;
            let n = content
                .read(&mut chunk)
                .map_err(FetchError::io("cannot read a temporary file"))?;
            if n == 0 {
                break;
            }
            wire.clear();
            encoder.encode(&chunk[..n], &mut wire);
            send(&mut reader, &wire)?;
        }
        wire.clear();
        encoder.finish(&mut wire);
        wire.extend_from_slice(b"QUIT\r\n");
        send(&mut reader, &wire)?;
        // One reply per recipient (RFC 2033): ours.
        expect(reply(&mut reader)?, "250")
    }
}

impl Handover for Lmtp {
    fn hand_over(&self, message: &mut File) -> Result<(), FetchError> {
        self.deliver(message)
    }

    fn describe(&self) -> String {
        format!("lmtp:{} for <{}>", self.addr, self.recipient)
    }
}

/// A connected LMTP client, plain or over a unix socket.
trait Stream: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> Stream for T {}

/// This machine's name, for LHLO and Maildir file names.
fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
