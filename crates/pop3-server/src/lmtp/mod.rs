//! LMTP intake (RFC 2033): how Postfix or Exim hands mail to Poplar.
//!
//! LMTP is SMTP without queueing: the server answers after DATA once per recipient, so an MTA
//! learns exactly which recipients have the message and keeps the rest queued. A recipient's
//! `250` is sent only after the message is durably in that maildrop (the store fsyncs the file
//! and the directory). Commands: LHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; extensions
//! PIPELINING, ENHANCEDSTATUSCODES (RFC 2034), 8BITMIME and SIZE (RFC 1870).
//!
//! [`Transaction`] is the protocol without I/O (a command line in, a reply out); [`serve`] is
//! the driver: it reads lines, spools the DATA (un-stuffed, size-capped) to a file under the
//! data directory and delivers it to each recipient.

pub(crate) mod listener;

use crate::Shared;
use crate::auth::Authenticator;
use pop3_auth::directory::normalize_name;
use pop3_store::{MailStore, StoreError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Longest command line accepted (RFC 5321 section 4.5.3.1.4: 512 octets; MTAs stay below).
const MAX_COMMAND: usize = 1000;
/// Recipients per transaction (RFC 5321 asks servers to accept at least 100).
const MAX_RECIPIENTS: usize = 1000;
/// A silent MTA is disconnected after this long (RFC 5321 section 4.5.3.2 suggests 5 minutes).
const IDLE: Duration = Duration::from_secs(300);
/// DATA is read in pieces of at most this many octets, whatever the line lengths.
const DATA_PIECE: usize = 64 * 1024;

/// What LMTP connections need from the server's configuration.
#[derive(Debug)]
pub(crate) struct LmtpSettings {
    /// The name in the greeting and the LHLO reply.
    pub host: String,
    /// The largest message accepted (`limits.max_message_size`).
    pub max_size: u64,
    /// Where DATA is spooled before delivery: `DATA/tmp`.
    pub spool_dir: PathBuf,
    /// Header lines added on delivery.
    pub headers: pop3_store::delivery::TraceHeaders,
}

/// What the driver must do after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this reply (complete lines, CRLF-terminated).
    Reply(String),
    /// Send `354` and receive the message.
    Data,
    /// Send this reply and close the connection.
    Close(String),
}

/// One LMTP session's protocol state.
#[derive(Debug)]
pub struct Transaction {
    host: String,
    max_size: u64,
    greeted: bool,
    sender: Option<String>,
    /// (address as given, user it is delivered to).
    recipients: Vec<(String, String)>,
    /// Commands refused as unknown, malformed or out of sequence.
    errors: u32,
}

/// Protocol errors after which the connection is closed: an MTA speaks LMTP without them, and
/// a peer that does not (a browser tricked into posting to the LMTP port, a scanner) must not
/// get to try line after line until one delivers something.
const MAX_ERRORS: u32 = 5;

/// `METHOD target HTTP/x.y`, the first line of an HTTP request.
fn is_http_request(line: &str) -> bool {
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or("");
    let version = line.rsplit(' ').next().unwrap_or("");
    matches!(
        method,
        "GET" | "POST" | "PUT" | "HEAD" | "OPTIONS" | "DELETE" | "PATCH" | "CONNECT" | "TRACE"
    ) && version.starts_with("HTTP/")
}

fn reply(code: &str, text: &str) -> Action {
    Action::Reply(format!("{code} {text}\r\n"))
}

/// The address inside `<...>` after `FROM:`/`TO:`, and the parameters after it.
fn path_and_params<'a>(arg: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let head = arg.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = arg[prefix.len()..].trim_start();
    let inner = rest.strip_prefix('<')?;
    let end = inner.find('>')?;
    Some((&inner[..end], inner[end + 1..].trim()))
}

impl Transaction {
    /// A session for a server called `host` that takes messages up to `max_size` octets.
    pub fn new(host: &str, max_size: u64) -> Self {
        Transaction {
            host: host.to_owned(),
            max_size,
            greeted: false,
            sender: None,
            recipients: Vec::new(),
            errors: 0,
        }
    }

    /// The greeting.
    pub fn greeting(&self) -> String {
        format!("220 {} LMTP Poplar ready\r\n", self.host)
    }

    /// The recipients of the message being received.
    pub fn recipients(&self) -> &[(String, String)] {
        &self.recipients
    }

    /// The envelope sender of the message being received (empty for bounces).
    pub fn sender(&self) -> Option<&str> {
        self.sender.as_deref()
    }

    /// The largest message accepted, in octets.
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// Forgets the transaction (after DATA, RSET or LHLO).
    pub fn reset(&mut self) {
        self.sender = None;
        self.recipients.clear();
    }

    /// Handles one command line (without CRLF). `user_of` maps a recipient address to the
    /// user whose maildrop receives it, if there is one.
    pub fn command(&mut self, line: &str, user_of: impl Fn(&str) -> Option<String>) -> Action {
        // Cross-protocol requests: a web page can make a browser POST to this port, its body
        // lines read as LMTP commands. An HTTP request line ends the connection at once.
        if is_http_request(line) {
            return Action::Close("421 4.7.0 This is an LMTP server, not HTTP; closing\r\n".into());
        }
        let action = self.dispatch(line, user_of);
        if let Action::Reply(r) = &action
            && (r.starts_with("500")
                || r.starts_with("501")
                || r.starts_with("502")
                || r.starts_with("503"))
        {
            self.errors += 1;
            if self.errors >= MAX_ERRORS {
                return Action::Close(format!(
                    "{r}421 4.7.0 Too many errors; closing connection\r\n"
                ));
            }
        }
        action
    }

    fn dispatch(&mut self, line: &str, user_of: impl Fn(&str) -> Option<String>) -> Action {
        // A control character (a CR inside the line, NUL, ...) has no place in a command, and
        // echoed in a reply or a header line it could forge another one.
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return reply("501", "5.5.2 Control characters in the command");
        }
        let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
        match verb.to_ascii_uppercase().as_str() {
            "LHLO" => {
                if arg.trim().is_empty() {
                    return reply("501", "5.5.4 LHLO needs a host name");
                }
                self.reset();
                self.greeted = true;
                Action::Reply(format!(
                    "250-{}\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 SIZE {}\r\n",
                    self.host, self.max_size
                ))
            }
            "HELO" | "EHLO" => reply("500", "5.5.1 This is LMTP: say LHLO"),
            "MAIL" => self.mail(arg),
            "RCPT" => self.rcpt(arg, user_of),
            "DATA" => {
                if self.sender.is_none() {
                    reply("503", "5.5.1 Send MAIL first")
                } else if self.recipients.is_empty() {
                    reply("503", "5.5.1 No valid recipients")
                } else {
                    Action::Data
                }
            }
            "RSET" => {
                self.reset();
                reply("250", "2.0.0 OK")
            }
            "NOOP" => reply("250", "2.0.0 OK"),
            "QUIT" => Action::Close(format!("221 2.0.0 {} closing connection\r\n", self.host)),
            "VRFY" | "EXPN" => reply("502", "5.5.1 Not implemented; try RCPT"),
            _ => reply("500", "5.5.2 Unknown command"),
        }
    }

    fn mail(&mut self, arg: &str) -> Action {
        if !self.greeted {
            return reply("503", "5.5.1 Say LHLO first");
        }
        if self.sender.is_some() {
            return reply("503", "5.5.1 A transaction is already open; RSET first");
        }
        let Some((sender, params)) = path_and_params(arg, "FROM:") else {
            return reply("501", "5.5.4 Syntax: MAIL FROM:<address> [parameters]");
        };
        for param in params.split_whitespace() {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            match key.to_ascii_uppercase().as_str() {
                "SIZE" => match value.parse::<u64>() {
                    Ok(n) if n > self.max_size => {
                        return reply(
                            "552",
                            &format!(
                                "5.3.4 Message too large: the limit is {} octets",
                                self.max_size
                            ),
                        );
                    }
                    Ok(_) => {}
                    Err(_) => return reply("501", "5.5.4 SIZE needs a number"),
                },
                "BODY"
                    if value.eq_ignore_ascii_case("7BIT")
                        || value.eq_ignore_ascii_case("8BITMIME") => {}
                _ => return reply("555", &format!("5.5.4 Unsupported parameter {key}")),
            }
        }
        self.sender = Some(sender.to_owned());
        reply("250", "2.1.0 Sender OK")
    }

    fn rcpt(&mut self, arg: &str, user_of: impl Fn(&str) -> Option<String>) -> Action {
        if self.sender.is_none() {
            return reply("503", "5.5.1 Send MAIL first");
        }
        let Some((address, params)) = path_and_params(arg, "TO:") else {
            return reply("501", "5.5.4 Syntax: RCPT TO:<address>");
        };
        if let Some(param) = params.split_whitespace().next() {
            return reply("555", &format!("5.5.4 Unsupported parameter {param}"));
        }
        if self.recipients.len() >= MAX_RECIPIENTS {
            return reply(
                "452",
                "4.5.3 Too many recipients; send the rest in another transaction",
            );
        }
        match user_of(address) {
            Some(user) => {
                self.recipients.push((address.to_owned(), user));
                reply("250", &format!("2.1.5 <{address}> OK"))
            }
            None => reply("550", &format!("5.1.1 <{address}>: no such user here")),
        }
    }
}

/// The user whose maildrop an address names: the whole address if the users file has it,
/// otherwise its local part.
pub(crate) fn user_of(auth: &Authenticator, address: &str) -> Option<String> {
    let db = auth.database()?;
    if address.is_empty() {
        return None;
    }
    let canonical = auth.canonical(address);
    if db.get(&canonical).is_some() {
        return Some(canonical);
    }
    let (local, _) = address.rsplit_once('@')?;
    db.get(local).is_some().then(|| normalize_name(local))
}

/// The SDPS host maildrops among a transaction's recipients, each with its envelope; the
/// recipients as `canonical` names them (lower case, IDNA domain), the form logins have.
fn host_deliveries<S: MailStore>(
    store: &S,
    recipients: &[(String, String)],
    sender: Option<&str>,
    canonical: impl Fn(&str) -> String,
) -> Vec<(String, pop3_store::HostEnvelope)> {
    let mut hosts: Vec<(String, pop3_store::HostEnvelope)> = Vec::new();
    for (address, _) in recipients {
        let address = canonical(address);
        let Some(host) = store.host_of(&address) else {
            continue;
        };
        match hosts.iter_mut().find(|(h, _)| *h == host) {
            Some((_, envelope)) => envelope.recipients.push(address),
            None => hosts.push((
                host,
                pop3_store::HostEnvelope {
                    sender: sender.unwrap_or_default().to_owned(),
                    recipients: vec![address],
                },
            )),
        }
    }
    hosts
}

/// A host delivery's error again, for the next recipient it answers.
fn shared_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::MessageTooLarge { limit } => StoreError::MessageTooLarge { limit: *limit },
        StoreError::EmptyMessage => StoreError::EmptyMessage,
        StoreError::OverQuota { usage, permanent } => StoreError::OverQuota {
            usage: usage.clone(),
            permanent: *permanent,
        },
        other => StoreError::Internal(other.to_string()),
    }
}

/// The reply for one recipient after the message was stored for it (or not), counted in the
/// metrics by result.
fn delivered_reply(address: &str, result: &Result<u64, StoreError>) -> String {
    let (outcome, reply) = match result {
        Ok(_) => ("delivered", format!("250 2.1.5 <{address}> Delivered\r\n")),
        Err(StoreError::MessageTooLarge { limit }) => (
            "too_large",
            format!("552 5.3.4 <{address}> Message too large: the limit is {limit} octets\r\n"),
        ),
        Err(StoreError::EmptyMessage) => (
            "empty",
            format!("554 5.6.0 <{address}> The message is empty\r\n"),
        ),
        // RFC 3463 X.2.2: mailbox full.
        Err(StoreError::OverQuota { usage, permanent }) => {
            let (code, class) = if *permanent { ("552", 5) } else { ("452", 4) };
            (
                "over_quota",
                format!("{code} {class}.2.2 <{address}> Mailbox full ({usage})\r\n"),
            )
        }
        Err(StoreError::InvalidMailbox(..)) => (
            "no_mailbox",
            format!("550 5.1.1 <{address}> No such mailbox\r\n"),
        ),
        Err(_) => {
            crate::metrics::store_error("deliver");
            (
                "temporary",
                format!("451 4.3.0 <{address}> Temporary failure; try again later\r\n"),
            )
        }
    };
    crate::metrics::lmtp_delivery(outcome);
    reply
}

/// Removes spool files left by LMTP servers that are no longer running (killed in the middle
/// of a delivery: their MTA was never told `250` and will send the message again).
pub(crate) fn remove_stale_spools(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("lmtp."))
            .and_then(|rest| rest.split('.').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %entry.path().display(), "removed the spool of an interrupted LMTP delivery")
                }
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove a stale LMTP spool")
                }
            }
        }
    }
}

/// Names spool files uniquely within this process.
static SPOOLS: AtomicU64 = AtomicU64::new(0);

/// Serves one LMTP connection until QUIT, EOF, an idle timeout or an I/O error.
pub(crate) async fn serve<IO, S>(shared: Arc<Shared<S>>, io: IO, peer: String)
where
    IO: AsyncRead + AsyncWrite + Unpin,
    S: MailStore,
{
    let settings = &shared.lmtp;
    let (host, max_size, spool_dir) = (&settings.host, settings.max_size, &settings.spool_dir);
    let (store, auth) = (&shared.store, &shared.auth);
    let (read, mut write) = tokio::io::split(io);
    let mut reader = BufReader::new(read);
    let mut session = Transaction::new(host, max_size);
    let mut out = session.greeting();
    let mut delivered = 0u64;
    let result: std::io::Result<()> = async {
        loop {
            // Pipelined commands are answered in one write once the input is drained.
            if reader.buffer().is_empty() && !out.is_empty() {
                send(&mut write, &out).await?;
                out.clear();
            }
            let mut line = Vec::new();
            let n = tokio::time::timeout(
                IDLE,
                (&mut reader)
                    .take(MAX_COMMAND as u64 + 2)
                    .read_until(b'\n', &mut line),
            )
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "idle"))??;
            if n == 0 {
                return Ok(());
            }
            if !line.ends_with(b"\n") {
                // Too long: skip to the end of the line, then refuse it.
                skip_line(&mut reader).await?;
                out.push_str("500 5.5.6 Line too long\r\n");
                continue;
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\r', '\n']);
            // An address at an SDPS host goes to the host's maildrop, whoever it names.
            let host_of = |a: &str| store.host_of(&auth.canonical(a));
            match session.command(text, |a| host_of(a).or_else(|| user_of(auth, a))) {
                Action::Reply(r) => out.push_str(&r),
                Action::Close(r) => {
                    out.push_str(&r);
                    send(&mut write, &out).await?;
                    return Ok(());
                }
                Action::Data => {
                    out.push_str("354 2.0.0 Send the message, ending with <CRLF>.<CRLF>\r\n");
                    send(&mut write, &out).await?;
                    out.clear();
                    let spool = spool_dir.join(format!(
                        "lmtp.{}.{}",
                        std::process::id(),
                        SPOOLS.fetch_add(1, Ordering::Relaxed)
                    ));
                    let received = receive(&mut reader, &spool, session.max_size()).await;
                    let refusal = || match &received {
                        Ok(Some(0)) => Some(StoreError::EmptyMessage),
                        Ok(Some(_)) => None,
                        Ok(None) => Some(StoreError::MessageTooLarge {
                            limit: session.max_size(),
                        }),
                        Err(e) => Some(StoreError::Io {
                            path: spool.clone(),
                            source: std::io::Error::new(e.kind(), e.to_string()),
                        }),
                    };
                    // SDPS hosts first: the message once per host, with all its recipients
                    // there; each of them is answered with that one result.
                    let hosts = host_deliveries(
                        store,
                        session.recipients(),
                        session.sender(),
                        |a| auth.canonical(a),
                    );
                    let mut host_results = HashMap::new();
                    for (host, envelope) in hosts {
                        // No Delivered-To: the copies share one file, and one recipient must
                        // not learn who else had it; *ENV tells each their own.
                        let headers = pop3_store::delivery::TraceHeaders {
                            delivered_to: false,
                            ..settings.headers
                        };
                        let prefix = headers.lines(session.sender(), "", "\r\n");
                        let result = match refusal() {
                            Some(e) => Err(e),
                            None => {
                                store
                                    .deliver_to_host(&host, envelope, prefix.as_bytes(), &spool)
                                    .await
                            }
                        };
                        host_results.insert(host, result);
                    }
                    for (address, user) in session.recipients() {
                        // DATA arrives with CRLF line ends (RFC 5321 section 2.3.8).
                        let prefix = settings.headers.lines(session.sender(), address, "\r\n");
                        let result = match (host_results.get(user), refusal()) {
                            (Some(Ok(size)), _) => Ok(*size),
                            (Some(Err(e)), _) => Err(shared_error(e)),
                            (None, Some(e)) => Err(e),
                            (None, None) => store.deliver_file(user, prefix.as_bytes(), &spool).await,
                        };
                        match &result {
                            Ok(size) => {
                                delivered += 1;
                                tracing::info!(peer = %peer, user = %user, size, "delivered over LMTP");
                            }
                            Err(e) => {
                                tracing::warn!(peer = %peer, user = %user, error = %e, "LMTP delivery failed");
                            }
                        }
                        out.push_str(&delivered_reply(address, &result));
                    }
                    let _ = tokio::fs::remove_file(&spool).await;
                    session.reset();
                    // A connection that broke inside DATA cannot be answered.
                    received?;
                }
            }
        }
    }
    .await;
    match result {
        Ok(()) => tracing::info!(peer = %peer, delivered, "LMTP session ended"),
        Err(e) => tracing::info!(peer = %peer, delivered, error = %e, "LMTP session ended"),
    }
}

/// Writes replies, giving up on an MTA that has not taken them within [`IDLE`].
async fn send<W: AsyncWrite + Unpin>(write: &mut W, replies: &str) -> std::io::Result<()> {
    let written = async {
        write.write_all(replies.as_bytes()).await?;
        write.flush().await
    };
    tokio::time::timeout(IDLE, written)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "the MTA stopped reading"))?
}

/// Discards input up to and including the next LF.
async fn skip_line<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> std::io::Result<()> {
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(i) = memchr::memchr(b'\n', buf) {
            reader.consume(i + 1);
            return Ok(());
        }
        let n = buf.len();
        reader.consume(n);
    }
}

/// Reads a DATA body up to `.` CRLF into `spool`, undoing the dot-stuffing; the bytes are
/// otherwise kept exactly as sent. Returns the octets stored, or `None` when the message was
/// larger than `max_size` (it is then read to the end and discarded).
async fn receive<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    spool: &Path,
    max_size: u64,
) -> std::io::Result<Option<u64>> {
    let mut file = tokio::io::BufWriter::with_capacity(
        256 * 1024,
        tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(spool)
            .await?,
    );
    let mut size = 0u64;
    let mut too_large = false;
    let mut line_start = true;
    let mut piece = Vec::with_capacity(DATA_PIECE);
    loop {
        piece.clear();
        let n = tokio::time::timeout(
            IDLE,
            (&mut *reader)
                .take(DATA_PIECE as u64)
                .read_until(b'\n', &mut piece),
        )
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "idle in DATA"))??;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed inside DATA",
            ));
        }
        let mut body: &[u8] = &piece;
        if line_start {
            if body == b".\r\n" || body == b".\n" {
                break;
            }
            body = body.strip_prefix(b".").unwrap_or(body);
        }
        line_start = piece.ends_with(b"\n");
        size += body.len() as u64;
        if size > max_size {
            too_large = true;
        }
        if !too_large {
            file.write_all(body).await?;
        }
    }
    file.flush().await?;
    Ok((!too_large).then_some(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(address: &str) -> Option<String> {
        ["alice", "bob"]
            .contains(&address.split('@').next().unwrap_or(""))
            .then(|| address.split('@').next().unwrap_or("").to_owned())
    }

    fn text(a: Action) -> String {
        match a {
            Action::Reply(r) | Action::Close(r) => r,
            Action::Data => "DATA".into(),
        }
    }

    #[test]
    fn the_rfc_2033_example_dialogue() {
        // RFC 2033 section 4.2, with this server's texts.
        let mut t = Transaction::new("foo.edu", 1000);
        assert!(t.greeting().starts_with("220 foo.edu LMTP"));
        let lhlo = text(t.command("LHLO foo.edu", known));
        assert!(
            lhlo.starts_with("250-foo.edu\r\n250-PIPELINING\r\n"),
            "{lhlo}"
        );
        assert!(lhlo.ends_with("250 SIZE 1000\r\n"), "{lhlo}");
        assert!(text(t.command("MAIL FROM:<chris@bar.com>", known)).starts_with("250 2.1.0"));
        assert!(text(t.command("RCPT TO:<pat@foo.edu>", known)).starts_with("550 5.1.1"));
        assert!(text(t.command("RCPT TO:<alice@foo.edu>", known)).starts_with("250 2.1.5"));
        assert!(text(t.command("RCPT TO:<bob@foo.edu>", known)).starts_with("250 2.1.5"));
        assert_eq!(t.command("DATA", known), Action::Data);
        assert_eq!(t.recipients().len(), 2);
        assert!(text(t.command("QUIT", known)).starts_with("221 2.0.0"));
    }

    #[test]
    fn http_and_repeated_errors_end_the_session() {
        let mut t = Transaction::new("h", 1000);
        for line in [
            "POST /lmtp HTTP/1.1",
            "GET / HTTP/1.0",
            "CONNECT 127.0.0.1:24 HTTP/1.1",
        ] {
            assert!(
                matches!(t.command(line, known), Action::Close(r) if r.starts_with("421 4.7.0")),
                "{line}"
            );
        }
        // A command that merely starts like one is a command.
        assert!(!is_http_request("POST office"));
        let mut t = Transaction::new("h", 1000);
        for _ in 0..MAX_ERRORS - 1 {
            assert!(matches!(t.command("XYZZY", known), Action::Reply(_)));
        }
        assert!(
            matches!(t.command("XYZZY", known), Action::Close(r) if r.contains("421 4.7.0 Too many errors"))
        );
        // Unknown recipients are not errors of the protocol: an MTA sends many.
        let mut t = Transaction::new("h", 1000);
        t.command("LHLO x", known);
        t.command("MAIL FROM:<a@b>", known);
        for _ in 0..20 {
            assert!(
                matches!(t.command("RCPT TO:<nobody@h>", known), Action::Reply(r) if r.starts_with("550"))
            );
        }
    }

    #[test]
    fn order_syntax_and_parameters_are_enforced() {
        let mut t = Transaction::new("h", 1000);
        assert!(text(t.command("MAIL FROM:<a@b>", known)).starts_with("503"));
        assert!(text(t.command("EHLO x", known)).starts_with("500 5.5.1"));
        assert!(text(t.command("LHLO", known)).starts_with("501"));
        t.command("lhlo x", known);
        assert!(text(t.command("RCPT TO:<alice@h>", known)).starts_with("503"));
        assert!(text(t.command("DATA", known)).starts_with("503"));
        assert!(text(t.command("MAIL FROM:a@b", known)).starts_with("501"));
        assert!(text(t.command("MAIL FROM:<a@b> SIZE=1001", known)).starts_with("552 5.3.4"));
        assert!(text(t.command("MAIL FROM:<a@b> SIZE=x", known)).starts_with("501"));
        assert!(text(t.command("MAIL FROM:<a@b> RET=FULL", known)).starts_with("555"));
        assert!(text(t.command("mail from: <> SIZE=10 BODY=8BITMIME", known)).starts_with("250"));
        assert!(text(t.command("MAIL FROM:<a@b>", known)).starts_with("503"));
        assert!(text(t.command("DATA", known)).starts_with("503 5.5.1 No valid"));
        assert!(text(t.command("RCPT TO:<alice@h> NOTIFY=NEVER", known)).starts_with("555"));
        assert!(text(t.command("RCPT TO:<>", known)).starts_with("550"));
        assert!(text(t.command("rcpt to:<alice@h>", known)).starts_with("250"));
        assert!(text(t.command("RSET", known)).starts_with("250"));
        assert!(text(t.command("DATA", known)).starts_with("503 5.5.1 Send MAIL"));
        assert!(text(t.command("NOOP", known)).starts_with("250"));
        assert!(text(t.command("VRFY alice", known)).starts_with("502"));
        assert!(text(t.command("XYZZY", known)).starts_with("500 5.5.2"));
        // Found by the fuzz target: a CR inside a line was echoed into the reply.
        t.command("MAIL FROM:<a@b>", known);
        assert!(text(t.command("RCPT TO:<alice\r250 forged@h>", known)).starts_with("501 5.5.2"));
        assert!(text(t.command("NOOP\0", known)).starts_with("501 5.5.2"));
    }

    #[tokio::test]
    async fn data_is_unstuffed_kept_byte_exact_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let wire: &[u8] = b"Subject: x\r\n\r\n..leading dot\r\n..\r\nbare\nlf\r\n.\r\nQUIT\r\n";
        let mut reader = BufReader::new(wire);
        let spool = dir.path().join("a");
        assert_eq!(receive(&mut reader, &spool, 1000).await.unwrap(), Some(40));
        assert_eq!(
            std::fs::read(&spool).unwrap(),
            b"Subject: x\r\n\r\n.leading dot\r\n.\r\nbare\nlf\r\n".as_slice()
        );
        let mut rest = String::new();
        reader.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "QUIT\r\n");
        let mut reader = BufReader::new(wire);
        assert_eq!(
            receive(&mut reader, &dir.path().join("b"), 10)
                .await
                .unwrap(),
            None
        );
        let mut reader = BufReader::new(&b"no end\r\n"[..]);
        assert!(
            receive(&mut reader, &dir.path().join("c"), 10)
                .await
                .is_err()
        );
    }
}
