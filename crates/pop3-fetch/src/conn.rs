//! A connection to a POP3 server: plain TCP, implicit TLS or STLS, every login mechanism
//! (through pop3-auth's client side), and a multi-line reader fast enough not to be the
//! bottleneck when a server sends gigabytes per second.
//!
//! It checks what it receives: [`Conn::cmd`] requires `+OK`, and [`Conn::body`] and
//! [`Conn::body_octets`] un-stuff a multi-line body so a caller can compare its length with LIST.

use crate::FetchError;
use pop3_proto::client::{
    ClientSession, Follows, ReplyShape, ServerCapabilities, Status, Unstuffer,
};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
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

/// Where and how to connect.
#[derive(Clone)]
pub struct Dialer {
    /// The server's address.
    pub addr: SocketAddr,
    tls: Option<(TlsMode, TlsConnector, rustls_pki_types::ServerName<'static>)>,
}

impl Dialer {
    /// A dialer for `addr`; with TLS, the server's certificate is verified for the name
    /// `server_name` against the CA certificates in `ca_file`, or the system's (Debian's
    /// ca-certificates bundle) without one. Every connection makes a full handshake (no session
    /// resumption), as a new client would.
    pub fn new(
        addr: SocketAddr,
        mode: TlsMode,
        ca_file: Option<&Path>,
        server_name: &str,
    ) -> Result<Self> {
        if mode == TlsMode::None {
            return Ok(Dialer { addr, tls: None });
        }
        if mode == TlsMode::None {
            return Ok(Dialer { addr, tls: None });
        }
        let roots = match ca_file {
            Some(file) => roots_from(file, true)?,
            None => roots_from(Path::new(SYSTEM_BUNDLE), false)?,
        };
        let config = Self::builder()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self::finish(addr, mode, server_name, config)
    }

    /// A dialer that trusts exactly the server certificate whose SHA-256 fingerprint is
    /// `fingerprint` (certificate pinning: for a self-signed certificate, or to refuse any other
    /// certificate a CA might issue), instead of CA verification. The handshake's signatures are
    /// still verified against that certificate.
    pub fn pinned(
        addr: SocketAddr,
        mode: TlsMode,
        fingerprint: [u8; 32],
        server_name: &str,
    ) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(PinnedCertificate {
            fingerprint,
            provider,
        });
        let config = Self::builder()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Self::finish(addr, mode, server_name, config)
    }

    fn builder() -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| FetchError::Tls(e.to_string()))
    }

    fn finish(
        addr: SocketAddr,
        mode: TlsMode,
        server_name: &str,
        mut config: rustls::ClientConfig,
    ) -> Result<Self> {
        if mode == TlsMode::None {
            return Ok(Dialer { addr, tls: None });
        }
        config.resumption = rustls::client::Resumption::disabled();
        let name = rustls_pki_types::ServerName::try_from(server_name.to_owned())
            .map_err(|_| FetchError::Tls(format!("invalid server name {server_name:?}")))?;
        Ok(Dialer {
            addr,
            tls: Some((mode, TlsConnector::from(Arc::new(config)), name)),
        })
    }

    /// Connects, secures the connection as configured and reads the greeting, which must be
    /// `+OK`; returns the connection and the greeting's text (its APOP timestamp, if any).
    pub async fn connect(&self) -> Result<(Conn, String)> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(FetchError::io(format!("cannot connect to {}", self.addr)))?;
        tcp.set_nodelay(true)
            .map_err(FetchError::io("setting TCP_NODELAY"))?;
        let handshake =
            |e: std::io::Error| FetchError::Tls(format!("handshake with {}: {e}", self.addr));
        let Some((mode, connector, name)) = &self.tls else {
            let mut c = Conn::new(Stream::Plain(tcp));
            let greeting = c.greeting().await?;
            return Ok((c, greeting));
        };
        if *mode == TlsMode::Implicit {
            let tls = connector
                .connect(name.clone(), tcp)
                .await
                .map_err(handshake)?;
            let mut c = Conn::new(Stream::Tls(Box::new(tls)));
            let greeting = c.greeting().await?;
            return Ok((c, greeting));
        }
        let mut c = Conn::new(Stream::Plain(tcp));
        let greeting = c.greeting().await?;
        match c.command("STLS").await? {
            s if s.ok => {}
            s => {
                return Err(FetchError::Unsupported(format!(
                    "{} refuses STLS ({s}); without TLS the password would travel in clear",
                    self.addr
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
        let tls = connector
            .connect(name.clone(), tcp)
            .await
            .map_err(handshake)?;
        session.tls_established();
        let mut conn = Conn::new(Stream::Tls(Box::new(tls)));
        conn.session = session;
        Ok((conn, greeting))
    }
}

/// Parses a SHA-256 fingerprint: 64 hex digits, colons allowed (`AB:CD:...`, as `openssl x509
/// -fingerprint -sha256` and `--serverinfo` print it).
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Certificate pinning: the server's certificate must have this SHA-256 fingerprint.
#[derive(Debug)]
struct PinnedCertificate {
    fingerprint: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use sha2::Digest as _;
        if sha2::Sha256::digest(end_entity.as_ref()).as_slice() == self.fingerprint {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the certificate's SHA-256 fingerprint is not the pinned one".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Debian's (and most Linux distributions') bundle of trusted CA certificates.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Trusted CA certificates from a PEM file. A file given explicitly must be entirely usable;
/// the system bundle may hold certificates rustls cannot parse, which are skipped.
fn roots_from(path: &Path, strict: bool) -> Result<rustls::RootCertStore> {
    use rustls_pki_types::pem::PemObject as _;
    let bad = |why: String| FetchError::File {
        path: path.to_owned(),
        why,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(format!("cannot read CA certificates: {e}")))?;
    if strict {
        for cert in certs {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
    } else {
        roots.add_parsable_certificates(certs.filter_map(std::result::Result::ok));
    }
    if roots.is_empty() {
        return Err(bad("no CA certificate in the file".into()));
    }
    Ok(roots)
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
}

impl Conn {
    fn new(stream: Stream) -> Self {
        Conn {
            reader: BufReader::with_capacity(READ_BUFFER, stream),
            line_buf: Vec::new(),
            line: String::new(),
            session: ClientSession::new(),
            follows: Follows::Nothing,
        }
    }

    /// Reads one line (without CRLF); fails if the connection closed.
    async fn read_line(&mut self) -> Result<&str> {
        // One buffer for every line of the connection: a status line per command is the hot
        // path of the load generator.
        self.line_buf.clear();
        read_bounded_line(&mut self.reader, &mut self.line_buf).await?;
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

    async fn greeting(&mut self) -> Result<String> {
        let status = self.status().await?;
        Ok(require_ok(status, "greeting")?.text)
    }

    /// Sends a command and reads its status line, whatever it is.
    pub async fn command(&mut self, command: &str) -> Result<Status> {
        self.send(command).await?;
        self.status().await
    }

    /// Sends a command and requires `+OK`.
    pub async fn cmd(&mut self, command: &str) -> Result<Status> {
        let status = self.command(command).await?;
        // Only the keyword in the error: arguments may be secret (PASS, AUTH data).
        require_ok(status, command.split(' ').next().unwrap_or(""))
    }

    async fn send(&mut self, line: &str) -> Result<()> {
        self.send_all(&[line.to_owned()]).await
    }

    /// Sends several commands in one write (RFC 2449 PIPELINING); their replies are then read
    /// in order.
    pub async fn send_all(&mut self, commands: &[String]) -> Result<()> {
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

    /// Sends a command, or a SASL response while AUTH is in progress, and returns the reply
    /// line as sent: a status line, or a `+ ` challenge.
    pub async fn exchange(&mut self, line: &str) -> Result<String> {
        let mut wire = Vec::new();
        match self.session.next_reply() {
            Some((_, ReplyShape::Sasl)) => self.session.sasl_response(line, &mut wire),
            _ => self.session.command(line, &mut wire),
        }
        .map_err(misuse)?;
        self.write(&wire).await?;
        let reply = self.read_line().await?.to_owned();
        if reply.starts_with("+ ") || reply == "+" {
            self.session.challenge().map_err(misuse)?;
        } else {
            let status = Status::parse(reply.as_bytes()).ok_or_else(|| {
                FetchError::Protocol(format!("expected +OK, -ERR or a challenge, got {reply:?}"))
            })?;
            self.follows = self.session.reply(&status).map_err(misuse)?;
        }
        Ok(reply)
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
        if !self.command("CAPA").await?.ok {
            return Ok(ServerCapabilities::default());
        }
        let lines = self.lines().await?;
        Ok(ServerCapabilities::parse(lines.iter().map(String::as_str)))
    }

    /// Logs in with a mechanism, using pop3-auth's client side, and returns the final reply.
    /// The greeting is needed for APOP.
    pub async fn login(
        &mut self,
        mechanism: &str,
        user: &str,
        password: &str,
        greeting: &str,
    ) -> Result<String> {
        use base64::Engine as _;
        use base64::engine::general_purpose::STANDARD as B64;
        use pop3_auth::sasl::scram::{ScramClient, ScramHash};
        let challenge = |reply: &str| -> Result<Vec<u8>> {
            let refused = || FetchError::Refused {
                command: format!("AUTH {mechanism}"),
                status: Status::parse(reply.as_bytes()).unwrap_or(Status {
                    ok: false,
                    code: None,
                    text: reply.to_owned(),
                }),
            };
            let data = reply.strip_prefix("+ ").ok_or_else(refused)?;
            B64.decode(data)
                .map_err(|_| FetchError::Protocol(format!("invalid base64 in {reply:?}")))
        };
        let sasl = |e: pop3_auth::AuthError| FetchError::Protocol(format!("{mechanism}: {e}"));
        let (u, p) = (user.as_bytes(), password.as_bytes());
        Ok(match mechanism {
            "USER" => {
                self.exchange(&format!("USER {user}")).await?;
                self.exchange(&format!("PASS {password}")).await?
            }
            "APOP" => {
                let ts = greeting.rsplit(' ').next().unwrap_or("");
                self.exchange(&format!("APOP {user} {}", pop3_auth::apop::digest(ts, p)))
                    .await?
            }
            "PLAIN" => {
                let msg = pop3_auth::sasl::plain::client_message("", user, p);
                self.exchange(&format!("AUTH PLAIN {}", B64.encode(msg.expose())))
                    .await?
            }
            "LOGIN" => {
                let mut reply = self.exchange("AUTH LOGIN").await?;
                for _ in 0..2 {
                    let response =
                        pop3_auth::sasl::login::client_response(&challenge(&reply)?, u, p);
                    reply = self.exchange(&B64.encode(response)).await?;
                }
                reply
            }
            "CRAM-MD5" => {
                let r = self.exchange("AUTH CRAM-MD5").await?;
                let response = pop3_auth::sasl::cram_md5::client_response(user, p, &challenge(&r)?);
                self.exchange(&B64.encode(response)).await?
            }
            "SCRAM-SHA-1" | "SCRAM-SHA-256" | "SCRAM-SHA-1-PLUS" | "SCRAM-SHA-256-PLUS" => {
                let hash = if mechanism.starts_with("SCRAM-SHA-1") {
                    ScramHash::Sha1
                } else {
                    ScramHash::Sha256
                };
                let plus = mechanism.ends_with("-PLUS");
                let binding = if plus {
                    let data = self.tls_exporter().ok_or_else(|| {
                        FetchError::Unsupported(format!(
                            "{mechanism} needs TLS 1.3 (tls-exporter channel binding)"
                        ))
                    })?;
                    Some(("tls-exporter", data))
                } else {
                    None
                };
                let mut client = ScramClient::new(hash, user, p, binding, plus).map_err(sasl)?;
                let r = self
                    .exchange(&format!(
                        "AUTH {mechanism} {}",
                        B64.encode(client.client_first())
                    ))
                    .await?;
                let last = client.client_final(&challenge(&r)?).map_err(sasl)?;
                let r = self.exchange(&B64.encode(last)).await?;
                client.verify_server_final(&challenge(&r)?).map_err(sasl)?;
                self.exchange("").await?
            }
            "OAUTHBEARER" | "XOAUTH2" => {
                use pop3_auth::sasl::oauth::{Flavor, client_message};
                let flavor = if mechanism == "OAUTHBEARER" {
                    Flavor::OauthBearer
                } else {
                    Flavor::Xoauth2
                };
                // The password is the access token.
                let msg = client_message(flavor, user, password);
                let reply = self
                    .exchange(&format!("AUTH {mechanism} {}", B64.encode(msg)))
                    .await?;
                match reply.strip_prefix("+ ") {
                    // A failure comes as an error challenge first (RFC 7628 section 3.2.2):
                    // answer with the dummy response, then read the -ERR.
                    Some(_) => {
                        let dummy = if flavor == Flavor::OauthBearer {
                            "AQ=="
                        } else {
                            ""
                        };
                        self.exchange(dummy).await?
                    }
                    None => reply,
                }
            }
            other => {
                return Err(FetchError::Unsupported(format!(
                    "login mechanism {other} is not implemented"
                )));
            }
        })
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
        let reply = self.login(mechanism, user, password, greeting).await?;
        let status = Status::parse(reply.as_bytes()).unwrap_or(Status {
            ok: false,
            code: None,
            text: reply,
        });
        require_ok(status, &format!("login as {user} ({mechanism})")).map(drop)
    }

    /// Reads a short multi-line body (a listing) as lines, without their CRLF.
    pub async fn lines(&mut self) -> Result<Vec<String>> {
        self.expect_body()?;
        let mut lines = Vec::new();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            read_bounded_line(&mut self.reader, &mut buf).await?;
            if buf.is_empty() {
                return Err(truncated());
            }
            if buf == b".\r\n" {
                return Ok(lines);
            }
            if lines.len() >= MAX_LISTING {
                return Err(FetchError::Protocol(format!(
                    "a listing of more than {MAX_LISTING} lines"
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
        loop {
            let buf = self
                .reader
                .fill_buf()
                .await
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

/// The longest line accepted in a status reply or a listing. RFC 2449 caps responses at 512
/// octets; this is far more generous, and still keeps a hostile server from exhausting memory.
const MAX_LINE: u64 = 64 * 1024;
/// The most lines a listing (CAPA, UIDL, LIST) may have: ten million messages.
const MAX_LISTING: usize = 10_000_000;

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
    FetchError::Protocol(e.0)
}

fn truncated() -> FetchError {
    FetchError::Protocol("the connection closed inside a multi-line response".into())
}
