//! Poplar's own POP3 client, for the load generator (`poplar bench`) and live migration
//! (`poplar migrate pop3s://...`): plain TCP, implicit TLS or STLS, every login mechanism
//! (through pop3-auth's client side), and a multi-line reader fast enough not to be the
//! bottleneck when a server sends gigabytes per second.
//!
//! It checks what it receives: every reply must be `+OK`, and [`Conn::body_octets`] and
//! [`Conn::body`] un-stuff a multi-line body so a caller can compare its length with LIST.

use anyhow::{Context, Result, bail, ensure};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How a connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TlsMode {
    /// Plain TCP.
    None,
    /// TLS from the first octet (POP3S, RFC 8314).
    Implicit,
    /// Plain TCP upgraded with STLS (RFC 2595).
    Starttls,
}

/// Where and how to connect.
#[derive(Clone)]
pub(crate) struct Dialer {
    pub addr: SocketAddr,
    tls: Option<(TlsMode, TlsConnector, rustls_pki_types::ServerName<'static>)>,
}

impl Dialer {
    /// A dialer for `addr`; with TLS, the server's certificate is verified for the name
    /// `server_name` against the CA certificates in `ca_file`, or the system's (Debian's
    /// ca-certificates bundle) without one. Every connection makes a full handshake (no session
    /// resumption), as a new client would.
    pub(crate) fn new(
        addr: SocketAddr,
        mode: TlsMode,
        ca_file: Option<&Path>,
        server_name: &str,
    ) -> Result<Self> {
        if mode == TlsMode::None {
            return Ok(Dialer { addr, tls: None });
        }
        let roots = match ca_file {
            Some(file) => pop3_server::tls::load_roots(file, "--ca-file")?,
            None => system_roots()?,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        let name = rustls_pki_types::ServerName::try_from(server_name.to_owned())
            .with_context(|| format!("invalid server name {server_name}"))?;
        Ok(Dialer {
            addr,
            tls: Some((mode, TlsConnector::from(Arc::new(config)), name)),
        })
    }

    /// Connects, secures the connection as configured and reads the greeting.
    pub(crate) async fn connect(&self) -> Result<(Conn, String)> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("cannot connect to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let Some((mode, connector, name)) = &self.tls else {
            let mut c = Conn::new(Stream::Plain(tcp));
            let greeting = c.status().await?.to_owned();
            return Ok((c, greeting));
        };
        if *mode == TlsMode::Implicit {
            let tls = connector.connect(name.clone(), tcp).await?;
            let mut c = Conn::new(Stream::Tls(Box::new(tls)));
            let greeting = c.status().await?.to_owned();
            return Ok((c, greeting));
        }
        let mut c = Conn::new(Stream::Plain(tcp));
        let greeting = c.status().await?.to_owned();
        c.cmd("STLS").await?;
        ensure!(
            c.reader.buffer().is_empty(),
            "the server sent data after its STLS reply"
        );
        let Stream::Plain(tcp) = c.reader.into_inner() else {
            unreachable!("STLS on a plain connection")
        };
        let tls = connector.connect(name.clone(), tcp).await?;
        Ok((Conn::new(Stream::Tls(Box::new(tls))), greeting))
    }
}

/// The system's trusted CA certificates.
fn system_roots() -> Result<rustls::RootCertStore> {
    use rustls_pki_types::pem::PemObject as _;
    const BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(BUNDLE)
        .with_context(|| format!("cannot read the system CA bundle {BUNDLE}; give --ca-file"))?
        .filter_map(Result::ok);
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(certs);
    ensure!(
        !roots.is_empty(),
        "no CA certificate in {BUNDLE}; give --ca-file"
    );
    Ok(roots)
}

/// A TCP connection, with or without TLS.
pub(crate) enum Stream {
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

/// A minimal POP3 client for measuring.
pub(crate) struct Conn {
    reader: BufReader<Stream>,
    line: String,
}

impl Conn {
    fn new(stream: Stream) -> Self {
        Conn {
            reader: BufReader::with_capacity(READ_BUFFER, stream),
            line: String::new(),
        }
    }

    /// Reads a status line and requires `+OK`.
    pub(crate) async fn status(&mut self) -> Result<&str> {
        self.line.clear();
        let n = self.reader.read_line(&mut self.line).await?;
        ensure!(n > 0, "server closed the connection");
        ensure!(
            self.line.starts_with("+OK"),
            "server said: {}",
            self.line.trim_end()
        );
        Ok(self.line.trim_end())
    }

    /// Sends a command and requires `+OK`.
    pub(crate) async fn cmd(&mut self, command: &str) -> Result<&str> {
        self.send(command).await?;
        self.status().await
    }

    async fn send(&mut self, line: &str) -> Result<()> {
        let stream = self.reader.get_mut();
        stream.write_all(format!("{line}\r\n").as_bytes()).await?;
        stream.flush().await?;
        Ok(())
    }

    /// Sends a line and returns the reply, whatever it is.
    pub(crate) async fn exchange(&mut self, line: &str) -> Result<String> {
        self.send(line).await?;
        self.line.clear();
        let n = self.reader.read_line(&mut self.line).await?;
        ensure!(n > 0, "server closed the connection");
        Ok(self.line.trim_end().to_owned())
    }

    /// Logs in with a mechanism, using pop3-auth's client side, and returns the final reply.
    /// The greeting is needed for APOP.
    pub(crate) async fn login(
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
            let data = reply
                .strip_prefix("+ ")
                .ok_or_else(|| anyhow::anyhow!("expected a challenge, got {reply}"))?;
            Ok(B64.decode(data)?)
        };
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
            "SCRAM-SHA-1" | "SCRAM-SHA-256" => {
                let hash = if mechanism == "SCRAM-SHA-1" {
                    ScramHash::Sha1
                } else {
                    ScramHash::Sha256
                };
                let mut client = ScramClient::new(hash, user, p, None, false)?;
                let r = self
                    .exchange(&format!(
                        "AUTH {mechanism} {}",
                        B64.encode(client.client_first())
                    ))
                    .await?;
                let r = self
                    .exchange(&B64.encode(client.client_final(&challenge(&r)?)?))
                    .await?;
                client.verify_server_final(&challenge(&r)?)?;
                self.exchange("").await?
            }
            other => bail!("bench login does not know mechanism {other}"),
        })
    }

    /// USER/PASS; fails unless both are accepted.
    pub(crate) async fn user_pass(&mut self, user: &str, password: &str) -> Result<()> {
        let reply = self.login("USER", user, password, "").await?;
        ensure!(
            reply.starts_with("+OK"),
            "login as {user}: server said: {reply}"
        );
        Ok(())
    }

    /// Reads a short multi-line body (a listing) as lines, without their CRLF.
    pub(crate) async fn lines(&mut self) -> Result<Vec<String>> {
        let mut lines = Vec::new();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = self.reader.read_until(b'\n', &mut buf).await?;
            ensure!(n > 0, "connection closed inside a multi-line response");
            if buf == b".\r\n" {
                return Ok(lines);
            }
            let line = buf.strip_prefix(b".").unwrap_or(&buf);
            lines.push(String::from_utf8_lossy(line).trim_end().to_owned());
        }
    }

    /// Reads a multi-line body of any size and returns its length after un-stuffing, without
    /// keeping it.
    pub(crate) async fn body_octets(&mut self) -> Result<u64> {
        self.body_into(u64::MAX, |_| {}).await
    }

    /// Reads a multi-line body into `out`, un-stuffed; fails once it exceeds `limit` octets
    /// (the connection is then unusable).
    pub(crate) async fn body(&mut self, out: &mut Vec<u8>, limit: u64) -> Result<()> {
        self.body_into(limit, |content| out.extend_from_slice(content))
            .await
            .map(drop)
    }

    /// Reads a multi-line body, handing its un-stuffed content to `sink`; returns its length.
    async fn body_into(&mut self, limit: u64, mut sink: impl FnMut(&[u8])) -> Result<u64> {
        let mut unstuffer = Unstuffer::default();
        loop {
            let buf = self.reader.fill_buf().await?;
            ensure!(
                !buf.is_empty(),
                "connection closed inside a multi-line response"
            );
            let len = buf.len();
            let done = unstuffer.feed_into(buf, &mut sink);
            ensure!(
                unstuffer.octets <= limit,
                "the message is larger than {limit} octets"
            );
            match done {
                Some(used) => {
                    self.reader.consume(used);
                    return Ok(unstuffer.octets);
                }
                None => self.reader.consume(len),
            }
        }
    }
}

/// Counts the octets of a dot-stuffed multi-line body (RFC 1939, section 3) as it streams by.
#[derive(Debug)]
pub(crate) struct Unstuffer {
    /// Octets of the body after un-stuffing, so far.
    pub octets: u64,
    /// The next octet starts a line.
    line_start: bool,
    /// Octets of a possible terminator seen at the start of a line: 1 after ".", 2 after ".\r".
    dot: u8,
}

impl Default for Unstuffer {
    fn default() -> Self {
        Unstuffer {
            octets: 0,
            line_start: true,
            dot: 0,
        }
    }
}

impl Unstuffer {
    /// Consumes `buf`, handing every octet of content to `sink` as it goes; returns how many
    /// octets of `buf` were used when the terminating ".CRLF" ends within it.
    pub(crate) fn feed_into(&mut self, buf: &[u8], mut sink: impl FnMut(&[u8])) -> Option<usize> {
        let mut i = 0;
        while i < buf.len() {
            match self.dot {
                1 if buf[i] == b'\r' => {
                    self.dot = 2;
                    i += 1;
                    continue;
                }
                2 if buf[i] == b'\n' => return Some(i + 1),
                // ".\r" then something else: the dot was stuffing, the CR is content.
                2 => {
                    self.octets += 1;
                    sink(b"\r");
                    self.dot = 0;
                    self.line_start = false;
                }
                // The dot was stuffing; what follows is content.
                1 => {
                    self.dot = 0;
                    self.line_start = false;
                }
                _ => {}
            }
            if self.line_start && buf[i] == b'.' {
                self.dot = 1;
                i += 1;
                continue;
            }
            match memchr::memchr(b'\n', &buf[i..]) {
                Some(k) => {
                    self.octets += k as u64 + 1;
                    sink(&buf[i..=i + k]);
                    i += k + 1;
                    self.line_start = true;
                }
                None => {
                    self.octets += (buf.len() - i) as u64;
                    sink(&buf[i..]);
                    self.line_start = false;
                    i = buf.len();
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::Unstuffer;

    /// Feeds `wire` in pieces of `step` octets; returns (octets, octets of `wire` used).
    fn count(wire: &[u8], step: usize) -> (u64, usize) {
        let mut u = Unstuffer::default();
        let mut used = 0;
        for chunk in wire.chunks(step) {
            if let Some(n) = u.feed_into(chunk, |_| {}) {
                return (u.octets, used + n);
            }
            used += chunk.len();
        }
        panic!("no terminator in {wire:?}");
    }

    #[test]
    fn counts_unstuffed_octets_across_any_split() {
        let body: &[u8] = b"Subject: x\r\n\r\n.hidden\r\n..two\r\n.\rodd\r\nlast\r\n";
        let mut wire = Vec::new();
        let mut encoder = pop3_proto::MessageEncoder::retr();
        encoder.encode(body, &mut wire);
        encoder.finish(&mut wire);
        wire.extend_from_slice(b"+OK next");
        for step in 1..wire.len() {
            assert_eq!(
                count(&wire, step),
                (body.len() as u64, wire.len() - 8),
                "step {step}"
            );
            let mut u = Unstuffer::default();
            let mut content = Vec::new();
            for chunk in wire.chunks(step) {
                if u.feed_into(chunk, |c| content.extend_from_slice(c))
                    .is_some()
                {
                    break;
                }
            }
            assert_eq!(content, body, "step {step}");
        }
    }

    #[test]
    fn an_empty_body_is_just_the_terminator() {
        assert_eq!(count(b".\r\n", 1), (0, 3));
        assert_eq!(count(b".\r\n", 3), (0, 3));
    }
}
