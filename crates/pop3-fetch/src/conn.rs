//! A connection to a POP3 server: plain TCP, implicit TLS or STLS, every login mechanism
//! (through pop3-auth's client side), and a multi-line reader fast enough not to be the
//! bottleneck when a server sends gigabytes per second.
//!
//! It checks what it receives: [`Conn::cmd`] requires `+OK`, and [`Conn::body`] and
//! [`Conn::body_octets`] un-stuff a multi-line body so a caller can compare its length with LIST.

use crate::FetchError;
use crate::trust::{ServerTrust, Trust, Verdict};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use pop3_proto::client::{ClientSession, Follows, ServerCapabilities, Status, Unstuffer};
use pop3_proto::{Command, Secret};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

type Result<T> = std::result::Result<T, FetchError>;

/// How a connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP.
    None,
    /// TLS from the first octet (POP3S, RFC 8314).
    Implicit,
    /// Plain TCP upgraded with STLS (RFC 2595).
    Starttls,
}

/// How long the client waits for each step before giving up with an error that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The TCP connection (default 10 s: a reachable server answers in milliseconds; a host
    /// that is down or behind a firewall that drops packets would otherwise hold the client
    /// for the operating system's two minutes).
    pub connect: Duration,
    /// The TLS handshake and the greeting (default 30 s). A plain connection to a TLS port,
    /// or the reverse, waits here: both sides wait for the other to speak first.
    pub greeting: Duration,
    /// Every later reply, and each read inside a message (default 180 s, mpop's timeout: a
    /// server may take a while to open a large maildrop).
    pub reply: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            greeting: Duration::from_secs(30),
            reply: Duration::from_secs(180),
        }
    }
}

/// Where and how to connect.
#[derive(Clone)]
pub struct Dialer {
    /// The server's address.
    pub addr: SocketAddr,
    tls: Option<(TlsMode, TlsConnector, rustls_pki_types::ServerName<'static>)>,
    trust: Option<Arc<ServerTrust>>,
    timeouts: Timeouts,
    /// The server's name, for GSSAPI's service principal (`pop@HOST`).
    host: String,
}

impl Dialer {
    /// A dialer for `addr`; with TLS, the server's certificate must be trusted as `trust` says
    /// and carry the name `server_name` (also sent as SNI). Every connection makes a full
    /// handshake (no session resumption), as a new client would.
    pub fn new(addr: SocketAddr, mode: TlsMode, trust: &Trust, server_name: &str) -> Result<Self> {
        Self::build(addr, mode, trust, server_name, false)
    }

    /// A dialer for `--serverinfo`: any certificate is accepted, and whether it would have
    /// been trusted, and why not, is kept for [`Dialer::verdict`].
    pub fn inspecting(
        addr: SocketAddr,
        mode: TlsMode,
        trust: &Trust,
        server_name: &str,
    ) -> Result<Self> {
        Self::build(addr, mode, trust, server_name, true)
    }

    fn build(
        addr: SocketAddr,
        mode: TlsMode,
        trust: &Trust,
        server_name: &str,
        record_only: bool,
    ) -> Result<Self> {
        if mode == TlsMode::None {
            return Ok(Dialer {
                addr,
                tls: None,
                trust: None,
                timeouts: Timeouts::default(),
                host: server_name.to_owned(),
            });
        }
        let verifier = Arc::new(ServerTrust::new(trust, record_only)?);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| FetchError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::clone(&verifier) as _)
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        let name = rustls_pki_types::ServerName::try_from(server_name.to_owned())
            .map_err(|_| FetchError::Tls(format!("invalid server name {server_name:?}")))?;
        Ok(Dialer {
            addr,
            tls: Some((mode, TlsConnector::from(Arc::new(config)), name)),
            trust: Some(verifier),
            timeouts: Timeouts::default(),
            host: server_name.to_owned(),
        })
    }

    /// The same dialer with other timeouts.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// For a dialer made by [`Dialer::inspecting`]: whether the certificate of the last
    /// connection would have been trusted (and why), or why not.
    pub fn verdict(&self) -> Option<Verdict> {
        self.trust.as_ref().and_then(|t| t.recorded())
    }

    /// Connects, secures the connection as configured and reads the greeting, which must be
    /// `+OK`; returns the connection and the greeting's text (its APOP timestamp, if any).
    pub async fn connect(&self) -> Result<(Conn, String)> {
        let t = self.timeouts;
        let addr = self.addr;
        let tcp = within(
            t.connect,
            TcpStream::connect(addr),
            format!("connecting to {addr}"),
            "the host is down, or a firewall drops the connection; check the host name and port",
        )
        .await?
        .map_err(FetchError::io(format!("cannot connect to {addr}")))?;
        tcp.set_nodelay(true)
            .map_err(FetchError::io("setting TCP_NODELAY"))?;
        let Some((mode, connector, name)) = &self.tls else {
            let mut c = Conn::new(Stream::Plain(tcp), t.reply, &self.host);
            let greeting = c.greeting_within(t.greeting, addr, PLAIN_SILENCE).await?;
            return Ok((c, greeting));
        };
        if *mode == TlsMode::Implicit {
            let tls = self.handshake(connector, name, tcp).await?;
            let mut c = Conn::new(Stream::Tls(Box::new(tls)), t.reply, &self.host);
            let greeting = c.greeting_within(t.greeting, addr, TLS_SILENCE).await?;
            return Ok((c, greeting));
        }
        let mut c = Conn::new(Stream::Plain(tcp), t.reply, &self.host);
        let greeting = c.greeting_within(t.greeting, addr, PLAIN_SILENCE).await?;
        match c.command(&Command::Stls).await? {
            s if s.ok => {}
            s => {
                return Err(FetchError::Unsupported(format!(
                    "{addr} refuses STLS ({s}); without TLS the password would travel in clear"
                )));
            }
        }
        if !c.reader.buffer().is_empty() {
            return Err(FetchError::Protocol(
                "the server sent data after its STLS reply".into(),
            ));
        }
        let Conn {
            reader,
            mut session,
            ..
        } = c;
        let Stream::Plain(tcp) = reader.into_inner() else {
            unreachable!("STLS on a plain connection")
        };
        let tls = self.handshake(connector, name, tcp).await?;
        session.tls_established();
        let mut conn = Conn::new(Stream::Tls(Box::new(tls)), t.reply, &self.host);
        conn.session = session;
        Ok((conn, greeting))
    }

    async fn handshake(
        &self,
        connector: &TlsConnector,
        name: &rustls_pki_types::ServerName<'static>,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>> {
        let addr = self.addr;
        within(
            self.timeouts.greeting,
            connector.connect(name.clone(), tcp),
            format!("TLS handshake with {addr}"),
            "if this port speaks plain POP3 (usually 110), use pop3:// or tls = \"starttls\"",
        )
        .await?
        .map_err(|e| {
            if let Some(why) = crate::trust::distrust_of(&e) {
                return FetchError::Certificate {
                    server: format!("{} ({addr})", name.to_str()),
                    why: why.clone(),
                };
            }
            let text = e.to_string();
            if text.contains("InvalidContentType") || text.contains("corrupt message") {
                FetchError::Tls(format!(
                    "handshake with {addr}: the server answered in plain text; this port speaks \
                     plain POP3 (usually 110): use pop3:// or tls = \"starttls\""
                ))
            } else {
                FetchError::Tls(format!("handshake with {addr}: {text}"))
            }
        })
    }
}

/// What a silent plain connection usually means.
const PLAIN_SILENCE: &str = "a POP3S port (usually 995) waits for TLS first: use pop3s:// or \
                             tls = \"implicit\"";
/// What silence after a TLS handshake usually means.
const TLS_SILENCE: &str = "the server accepted TLS but sent no greeting; it may be overloaded";

/// Runs `step`, failing with [`FetchError::Timeout`] after `limit`.
async fn within<T>(
    limit: Duration,
    step: impl std::future::Future<Output = T>,
    what: String,
    hint: &'static str,
) -> Result<T> {
    tokio::time::timeout(limit, step)
        .await
        .map_err(|_| FetchError::Timeout {
            step: what,
            after: limit,
            hint,
        })
}

/// A TCP connection, with or without TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Read buffer: large enough that a multi-megabyte RETR costs few system calls.
const READ_BUFFER: usize = 256 * 1024;

/// What TLS was negotiated, as `--serverinfo` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsDetails {
    /// `TLSv1_3`, ...
    pub version: String,
    /// `TLS13_AES_256_GCM_SHA384`, ...
    pub cipher: String,
    /// The server's certificate chain, leaf first (DER).
    pub certificates: Vec<Vec<u8>>,
}

/// A connection to a POP3 server, after the greeting. Every command and reply goes through
/// pop3-proto's [`ClientSession`], which knows what may be sent when and what each reply looks
/// like; this type only moves the bytes.
pub struct Conn {
    reader: BufReader<Stream>,
    line_buf: Vec<u8>,
    line: String,
    session: ClientSession,
    /// What follows the last status line read.
    follows: Follows,
    /// How long to wait for each reply, or each read inside a multi-line one.
    reply_timeout: Duration,
    /// SCRAM may use fewer iterations than RFC 5802's minimum.
    weak_scram: bool,
    /// The server's name (GSSAPI's service principal is `pop@HOST`).
    host: String,
}

impl Conn {
    fn new(stream: Stream, reply_timeout: Duration, host: &str) -> Self {
        Conn {
            host: host.to_owned(),
            reader: BufReader::with_capacity(READ_BUFFER, stream),
            line_buf: Vec::new(),
            line: String::new(),
            session: ClientSession::new(),
            follows: Follows::Nothing,
            reply_timeout,
            weak_scram: false,
        }
    }

    /// Lets SCRAM logins accept a server's iteration count below RFC 5802's minimum of 4096
    /// (`--allow-insecure`).
    pub fn allow_weak_scram(&mut self, allow: bool) {
        self.weak_scram = allow;
    }

    /// Reads one line (without CRLF); fails if the connection closed.
    async fn read_line(&mut self) -> Result<&str> {
        // One buffer for every line of the connection: a status line per command is the hot
        // path of the load generator.
        self.line_buf.clear();
        within(
            self.reply_timeout,
            read_bounded_line(&mut self.reader, &mut self.line_buf),
            "waiting for the server's reply".into(),
            REPLY_SILENCE,
        )
        .await??;
        if self.line_buf.is_empty() {
            return Err(FetchError::Protocol(
                "the server closed the connection".into(),
            ));
        }
        self.line.clear();
        self.line.push_str(&String::from_utf8_lossy(&self.line_buf));
        Ok(self.line.trim_end_matches(['\r', '\n']))
    }

    /// Reads the status line answering the oldest command sent (or the greeting).
    pub async fn status(&mut self) -> Result<Status> {
        let line = self.read_line().await?;
        let status = Status::parse(line.as_bytes())
            .ok_or_else(|| FetchError::Protocol(format!("expected +OK or -ERR, got {line:?}")))?;
        self.follows = self.session.reply(&status).map_err(misuse)?;
        Ok(status)
    }

    /// Reads the greeting within `limit` (instead of the reply timeout).
    async fn greeting_within(
        &mut self,
        limit: Duration,
        addr: SocketAddr,
        hint: &'static str,
    ) -> Result<String> {
        let reply_timeout = std::mem::replace(&mut self.reply_timeout, Duration::MAX);
        let status = within(
            limit,
            self.status(),
            format!("waiting for the greeting of {addr}"),
            hint,
        )
        .await;
        self.reply_timeout = reply_timeout;
        Ok(require_ok(status??, "greeting")?.text)
    }

    /// Sends a command and reads its status line, whatever it is.
    pub async fn command(&mut self, command: &Command) -> Result<Status> {
        self.send_all(std::slice::from_ref(command)).await?;
        self.status().await
    }

    /// Sends a command and requires `+OK`.
    pub async fn cmd(&mut self, command: &Command) -> Result<Status> {
        let status = self.command(command).await?;
        // Only the keyword in the error: arguments may be secret (PASS, AUTH data).
        require_ok(status, command.keyword().as_str())
    }

    /// Sends several commands in one write (RFC 2449 PIPELINING); their replies are then read
    /// in order.
    pub async fn send_all(&mut self, commands: &[Command]) -> Result<()> {
        let mut wire = Vec::new();
        for c in commands {
            self.session.command(c, &mut wire).map_err(misuse)?;
        }
        self.write(&wire).await
    }

    async fn write(&mut self, wire: &[u8]) -> Result<()> {
        let stream = self.reader.get_mut();
        stream
            .write_all(wire)
            .await
            .map_err(FetchError::io("writing to the server"))?;
        stream
            .flush()
            .await
            .map_err(FetchError::io("writing to the server"))
    }

    /// Reads the reply to AUTH or to a SASL response: a `+ ` challenge (decoded) or the
    /// final status line.
    async fn sasl_reply(&mut self) -> Result<SaslReply> {
        let line = self.read_line().await?.to_owned();
        if let Some(data) = line.strip_prefix("+ ").or((line == "+").then_some("")) {
            self.session.challenge().map_err(misuse)?;
            let challenge = B64.decode(data.trim_end()).map_err(|_| {
                FetchError::Protocol(format!("invalid base64 in the challenge {line:?}"))
            })?;
            return Ok(SaslReply::Challenge(challenge));
        }
        let status = Status::parse(line.as_bytes()).ok_or_else(|| {
            FetchError::Protocol(format!("expected +OK, -ERR or a challenge, got {line:?}"))
        })?;
        self.follows = self.session.reply(&status).map_err(misuse)?;
        Ok(SaslReply::Done(status))
    }

    /// The `tls-exporter` channel binding (RFC 9266) of a TLS 1.3 connection, for the SCRAM
    /// -PLUS mechanisms.
    pub fn tls_exporter(&self) -> Option<Vec<u8>> {
        let Stream::Tls(tls) = self.reader.get_ref() else {
            return None;
        };
        let (_, session) = tls.get_ref();
        if session.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
            return None;
        }
        session
            .export_keying_material(vec![0; 32], b"EXPORTER-Channel-Binding", None)
            .ok()
    }

    /// The negotiated TLS parameters, if the connection is encrypted.
    pub fn tls_details(&self) -> Option<TlsDetails> {
        let Stream::Tls(tls) = self.reader.get_ref() else {
            return None;
        };
        let (_, session) = tls.get_ref();
        Some(TlsDetails {
            version: session
                .protocol_version()
                .map_or_else(String::new, |v| format!("{v:?}")),
            cipher: session
                .negotiated_cipher_suite()
                .map_or_else(String::new, |c| format!("{:?}", c.suite())),
            certificates: session
                .peer_certificates()
                .unwrap_or_default()
                .iter()
                .map(|c| c.to_vec())
                .collect(),
        })
    }

    /// CAPA (RFC 2449); a server without it has no capabilities worth knowing.
    pub async fn capabilities(&mut self) -> Result<ServerCapabilities> {
        if !self.command(&Command::Capa).await?.ok {
            return Ok(ServerCapabilities::default());
        }
        let lines = self.lines().await?;
        Ok(ServerCapabilities::parse(lines.iter().map(String::as_str)))
    }

    /// Logs in with `mechanism` (`USER` for USER/PASS, `APOP`, or a SASL mechanism driven by
    /// its client half in pop3-auth) and returns the final status line, whatever it says. The
    /// greeting is needed for APOP.
    pub async fn login(
        &mut self,
        mechanism: &str,
        user: &str,
        password: &str,
        greeting: &str,
    ) -> Result<Status> {
        let secret = || Secret::new(password.as_bytes().to_vec());
        match mechanism {
            "USER" => {
                let status = self.command(&Command::User(user.to_owned())).await?;
                if !status.ok {
                    return Ok(status);
                }
                self.command(&Command::Pass(secret())).await
            }
            "APOP" => {
                let timestamp = greeting.rsplit(' ').next().unwrap_or("");
                let digest = pop3_auth::apop::digest(timestamp, password.as_bytes());
                self.command(&Command::Apop {
                    user: user.to_owned(),
                    digest,
                })
                .await
            }
            name => self.authenticate(name, user, password.as_bytes()).await,
        }
    }

    /// AUTH with a SASL mechanism (RFC 5034): the initial response with the command, each
    /// challenge answered by the mechanism's client half, and on `+OK` the mechanism's check
    /// that the server proved itself.
    async fn authenticate(&mut self, name: &str, user: &str, secret: &[u8]) -> Result<Status> {
        use pop3_auth::sasl::client::{ClientCredentials, client};
        let exporter = self.tls_exporter();
        let credentials = ClientCredentials {
            host: &self.host,
            user,
            secret,
            tls_exporter: exporter.as_deref(),
            allow_few_iterations: self.weak_scram,
        };
        let sasl = |e: pop3_auth::AuthError| match e {
            pop3_auth::AuthError::UnsupportedMechanism(why) => FetchError::Unsupported(why),
            other => FetchError::Protocol(format!("{name}: {other}")),
        };
        let mut mechanism = client(name, &credentials).map_err(sasl)?;
        // An empty initial response is sent as "=" (RFC 5034 section 4).
        let initial = mechanism.initial_response().map_err(sasl)?.map(|ir| {
            Secret::new(if ir.is_empty() {
                b"=".to_vec()
            } else {
                B64.encode(ir).into_bytes()
            })
        });
        let mut wire = Vec::new();
        self.session
            .command(
                &Command::Auth {
                    mechanism: Some(mechanism.name().to_owned()),
                    initial_response: initial,
                },
                &mut wire,
            )
            .map_err(misuse)?;
        loop {
            self.write(&wire).await?;
            match self.sasl_reply().await? {
                SaslReply::Done(status) => {
                    if status.ok {
                        mechanism.finish().map_err(sasl)?;
                    }
                    return Ok(status);
                }
                SaslReply::Challenge(challenge) => {
                    let response = mechanism.respond(&challenge).map_err(sasl)?;
                    wire.clear();
                    self.session
                        .sasl_response(&B64.encode(response), &mut wire)
                        .map_err(misuse)?;
                }
            }
        }
    }

    /// USER/PASS; fails unless both are accepted.
    pub async fn user_pass(&mut self, user: &str, password: &str) -> Result<()> {
        self.log_in("USER", user, password, "").await
    }

    /// Logs in with a mechanism ([`Conn::login`]) and requires the final `+OK`.
    pub async fn log_in(
        &mut self,
        mechanism: &str,
        user: &str,
        password: &str,
        greeting: &str,
    ) -> Result<()> {
        let status = self.login(mechanism, user, password, greeting).await?;
        require_ok(status, &format!("login as {user} ({mechanism})")).map(drop)
    }

    /// Reads a short multi-line body (a listing) as lines, without their CRLF.
    pub async fn lines(&mut self) -> Result<Vec<String>> {
        self.expect_body()?;
        let mut lines = Vec::new();
        let mut buf = Vec::new();
        let mut total = 0usize;
        loop {
            buf.clear();
            within(
                self.reply_timeout,
                read_bounded_line(&mut self.reader, &mut buf),
                "reading a listing from the server".into(),
                REPLY_SILENCE,
            )
            .await??;
            if buf.is_empty() {
                return Err(truncated());
            }
            if buf == b".\r\n" {
                return Ok(lines);
            }
            total += buf.len();
            if lines.len() >= MAX_LISTING || total > MAX_LISTING_BYTES {
                return Err(FetchError::Protocol(format!(
                    "a listing of more than {MAX_LISTING} lines or {} MiB",
                    MAX_LISTING_BYTES >> 20
                )));
            }
            let line = buf.strip_prefix(b".").unwrap_or(&buf);
            lines.push(String::from_utf8_lossy(line).trim_end().to_owned());
        }
    }

    /// Reads a multi-line body of any size and returns its length after un-stuffing, without
    /// keeping it.
    pub async fn body_octets(&mut self) -> Result<u64> {
        self.body_into(u64::MAX, |_| {}).await
    }

    /// Reads a multi-line body into `out`, un-stuffed; fails once it exceeds `limit` octets
    /// (the connection is then unusable).
    pub async fn body(&mut self, out: &mut Vec<u8>, limit: u64) -> Result<()> {
        self.body_into(limit, |content| out.extend_from_slice(content))
            .await
            .map(drop)
    }

    /// Reads a multi-line body, handing its un-stuffed content to `sink`; returns its length.
    pub async fn body_into(&mut self, limit: u64, mut sink: impl FnMut(&[u8])) -> Result<u64> {
        self.expect_body()?;
        let mut unstuffer = Unstuffer::default();
        let limit_per_read = self.reply_timeout;
        loop {
            let buf = within(
                limit_per_read,
                self.reader.fill_buf(),
                "reading a message from the server".into(),
                REPLY_SILENCE,
            )
            .await?
            .map_err(FetchError::io("reading from the server"))?;
            if buf.is_empty() {
                return Err(truncated());
            }
            let len = buf.len();
            let done = unstuffer.feed(buf, &mut sink);
            if unstuffer.octets() > limit {
                return Err(FetchError::Protocol(format!(
                    "the message is larger than {limit} octets"
                )));
            }
            match done {
                Some(used) => {
                    self.reader.consume(used);
                    return Ok(unstuffer.octets());
                }
                None => self.reader.consume(len),
            }
        }
    }
}

/// What a reply that does not come usually means.
const REPLY_SILENCE: &str = "the server or the network stalled; try again later";

/// The longest line accepted in a status reply or a listing. RFC 2449 caps responses at 512
/// octets; this is far more generous, and still keeps a hostile server from exhausting memory.
const MAX_LINE: u64 = 64 * 1024;
/// The most lines a listing (CAPA, UIDL, LIST) may have: a million messages (Poplar serves at
/// most 100 000 per session by default).
const MAX_LISTING: usize = 1_000_000;
/// The most octets a listing may have: a million UIDLs of Poplar's or Dovecot's form fit in
/// a third of it; with [`MAX_LISTING`] it bounds what a hostile server can make the client hold.
const MAX_LISTING_BYTES: usize = 64 << 20;

/// Reads one line (with its LF) into `buf`, at most [`MAX_LINE`] octets; `buf` stays empty at
/// the end of the stream.
async fn read_bounded_line(reader: &mut BufReader<Stream>, buf: &mut Vec<u8>) -> Result<()> {
    (&mut *reader)
        .take(MAX_LINE + 1)
        .read_until(b'\n', buf)
        .await
        .map_err(FetchError::io("reading from the server"))?;
    if buf.len() as u64 > MAX_LINE {
        return Err(FetchError::Protocol(format!(
            "the server sent a line longer than {MAX_LINE} octets"
        )));
    }
    Ok(())
}

impl Conn {
    /// A multi-line body may be read only right after the `+OK` that announces one.
    fn expect_body(&mut self) -> Result<()> {
        match std::mem::replace(&mut self.follows, Follows::Nothing) {
            Follows::Body => Ok(()),
            other => Err(FetchError::Protocol(format!(
                "no multi-line body follows the last reply ({other:?})"
            ))),
        }
    }
}

/// `status` if it is `+OK`, else the refusal of `what` (a command keyword, or what was being
/// done).
pub fn require_ok(status: Status, what: &str) -> Result<Status> {
    if status.ok {
        Ok(status)
    } else {
        Err(FetchError::Refused {
            command: what.to_owned(),
            status,
        })
    }
}

/// A command the client session refused to send, or a reply it did not expect.
fn misuse(e: pop3_proto::client::ClientError) -> FetchError {
    FetchError::Protocol(e.to_string())
}

/// What answers AUTH or a SASL response.
enum SaslReply {
    /// A `+ ` challenge, decoded.
    Challenge(Vec<u8>),
    /// The final status line.
    Done(Status),
}

fn truncated() -> FetchError {
    FetchError::Protocol("the connection closed inside a multi-line response".into())
}
