//! Where fetched mail goes.
//!
//! A destination stores a message durably and can say afterwards whether a delivery it was
//! given a token for arrived: that answer is what lets a run that was killed between delivering
//! a message and recording it in the journal decide without guessing (see [`crate::journal`]).
//! Messages are stored exactly as RETR sent them, un-stuffed (CRLF line ends).

use crate::FetchError;
use pop3_store::StoreError;
use pop3_store::maildir::writer::{Draft, Folder, Writer, Written};
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Tokens unique within this process, for destinations that do not name messages themselves.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Messages pass through in pieces this large.
const WRITE_BUFFER: usize = 256 * 1024;

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

/// A Maildir, written through the store's one Maildir writer ([`pop3_store::maildir::writer`]):
/// each message goes to `tmp/`, and [`Destination::sync`] fsyncs the batch's files together,
/// renames them into `new/` and fsyncs `new/`. A message is thus in `new/` only once its
/// contents are on disk. Tokens are the messages' base names.
#[derive(Debug)]
pub struct Maildir {
    writer: Writer,
    /// Messages written to `tmp/` and waiting for [`Destination::sync`].
    written: Arc<Mutex<Vec<Written>>>,
}

impl Maildir {
    /// The Maildir at `dir`, created (with `tmp`, `new`, `cur`) if missing. A `tmp`, `new` or
    /// `cur` that is a symbolic link is refused: messages would be written where it points.
    pub fn open(dir: &Path) -> Result<Self, FetchError> {
        let writer = Writer::open(dir, &poplar_util::host::name()).map_err(stored(dir))?;
        Ok(Maildir {
            writer,
            written: Arc::default(),
        })
    }
}

/// A store error as the client reports it: an I/O error as such (it may pass), anything else
/// as a problem with the destination.
fn stored(dir: &Path) -> impl Fn(StoreError) -> FetchError + '_ {
    move |e| match e {
        StoreError::Io { path, source } => FetchError::Io {
            context: path.display().to_string(),
            source,
        },
        other => FetchError::File {
            path: dir.to_owned(),
            why: other.to_string(),
        },
    }
}

impl Destination for Maildir {
    fn token(&mut self) -> String {
        self.writer.unique_base()
    }

    fn open(&mut self, token: &str) -> Result<Box<dyn MessageWriter>, FetchError> {
        // The body is bounded by the fetch's own limits (max_size) before it gets here.
        let draft = self
            .writer
            .draft(token, u64::MAX)
            .map_err(stored(self.writer.dir()))?;
        Ok(Box::new(MaildirMessage {
            draft,
            dir: self.writer.dir().to_owned(),
            written: Arc::clone(&self.written),
        }))
    }

    fn sync(&mut self) -> Result<(), FetchError> {
        let batch = std::mem::take(&mut *self.written.lock().unwrap_or_else(|e| e.into_inner()));
        self.writer
            .commit(batch, Folder::New)
            .map_err(stored(self.writer.dir()))
    }

    fn holds(&self, tokens: &[String]) -> Result<HashSet<String>, FetchError> {
        self.writer.holds(tokens).map_err(stored(self.writer.dir()))
    }

    fn describe(&self) -> String {
        format!("maildir:{}", self.writer.dir().display())
    }
}

struct MaildirMessage {
    draft: Draft,
    dir: PathBuf,
    written: Arc<Mutex<Vec<Written>>>,
}

impl MessageWriter for MaildirMessage {
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.draft.write_all(chunk)
    }

    fn finish(self: Box<Self>) -> Result<(), FetchError> {
        let written = self.draft.finish().map_err(stored(&self.dir))?;
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(written);
        Ok(())
    }

    fn discard(self: Box<Self>) {
        self.draft.discard();
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
            (Some(75), _) => Err(FetchError::Delivery {
                to: format!("the delivery command {command:?}"),
                reply: "exit 75: try again later".into(),
                temporary: true,
            }),
            _ => Err(FetchError::Delivery {
                to: format!("the delivery command {command:?}"),
                reply: format!("{status}"),
                temporary: false,
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
    fn deliver(&self, content: &mut File) -> Result<(), FetchError> {
        use std::io::Seek;
        let sender = crate::mbox::return_path_of(content).unwrap_or_default();
        content
            .rewind()
            .map_err(FetchError::io("cannot read a temporary file"))?;
        let mut client = crate::lmtp::LmtpClient::connect(
            &self.addr,
            &poplar_util::host::name(),
            std::time::Duration::from_secs(300),
        )?;
        client.deliver(&sender, &self.recipient, content)?;
        client.quit();
        Ok(())
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
