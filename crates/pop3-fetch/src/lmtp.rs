//! An LMTP client (RFC 2033): the `lmtp:` destination of `poplar fetch` and the LMTP load of
//! `poplar-bench` both speak through it.
//!
//! Blocking, over TCP or a unix socket, with a read timeout on every reply. The envelope is
//! pipelined (LHLO's PIPELINING is what every LMTP server offers); the message is sent
//! dot-stuffed and CRLF-terminated by the same encoder a POP3 server uses for RETR, chunk by
//! chunk, never whole. A reply other than the one expected is a [`FetchError::Delivery`]:
//! temporary for `4xx`, so the run is retried, permanent otherwise.

use crate::FetchError;
use pop3_proto::canonical::MessageEncoder;
use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

/// A byte stream to an LMTP server.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// Messages go out in pieces this large.
const CHUNK: usize = 256 * 1024;

/// A connection to an LMTP server, greeted and introduced (LHLO).
pub struct LmtpClient {
    io: BufReader<Box<dyn Stream>>,
    addr: String,
    out: Vec<u8>,
}

impl std::fmt::Debug for LmtpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmtpClient")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl LmtpClient {
    /// Connects to `addr` (`host:port`, or `unix:/path` for a unix socket), waits for the
    /// greeting and introduces itself as `name`. Each reply may take up to `timeout`.
    pub fn connect(addr: &str, name: &str, timeout: Duration) -> Result<Self, FetchError> {
        let io_error = |what: &str| FetchError::io(format!("LMTP {what} at {addr}"));
        let stream: Box<dyn Stream> = match addr.strip_prefix("unix:") {
            Some(path) => {
                let s = std::os::unix::net::UnixStream::connect(path)
                    .map_err(io_error("connection"))?;
                s.set_read_timeout(Some(timeout))
                    .map_err(io_error("connection"))?;
                Box::new(s)
            }
            None => {
                let s = std::net::TcpStream::connect(addr).map_err(io_error("connection"))?;
                s.set_read_timeout(Some(timeout))
                    .map_err(io_error("connection"))?;
                s.set_nodelay(true).map_err(io_error("connection"))?;
                Box::new(s)
            }
        };
        let mut client = LmtpClient {
            io: BufReader::new(stream),
            addr: addr.to_owned(),
            out: Vec::new(),
        };
        client.expect("220")?;
        client.send(format!("LHLO {name}\r\n").as_bytes())?;
        client.expect("250")?;
        Ok(client)
    }

    /// Delivers one message from `sender` (empty for the null sender) to `recipient`, reading
    /// its content (as a client holds it: CRLF lines, not dot-stuffed) from `content`. `Ok`
    /// once the server has accepted it for the recipient.
    pub fn deliver(
        &mut self,
        sender: &str,
        recipient: &str,
        content: &mut dyn Read,
    ) -> Result<(), FetchError> {
        let envelope = format!("MAIL FROM:<{sender}>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n");
        self.send(envelope.as_bytes())?;
        for code in ["250", "250", "354"] {
            self.expect(code)?;
        }
        let mut encoder = MessageEncoder::retr();
        let mut chunk = vec![0u8; CHUNK];
        loop {
            let n = match content.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(FetchError::io("cannot read the message")(e)),
            };
            let mut wire = std::mem::take(&mut self.out);
            wire.clear();
            encoder.encode(&chunk[..n], &mut wire);
            let sent = self.send(&wire);
            self.out = wire;
            sent?;
        }
        let mut wire = std::mem::take(&mut self.out);
        wire.clear();
        encoder.finish(&mut wire);
        let sent = self.send(&wire);
        self.out = wire;
        sent?;
        // One reply per recipient after DATA (RFC 2033 section 4.2): ours.
        self.expect("250")
    }

    /// Says goodbye (best effort: the deliveries are already acknowledged).
    pub fn quit(mut self) {
        if self.send(b"QUIT\r\n").is_ok() {
            let _ = self.reply();
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), FetchError> {
        let addr = &self.addr;
        self.io
            .get_mut()
            .write_all(bytes)
            .map_err(|e| FetchError::io(format!("LMTP write to {addr}"))(e))
    }

    /// One reply, all its lines (`250-...` continuations included), without the final CRLF.
    fn reply(&mut self) -> Result<String, FetchError> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            // A reply line is short; a server sending an endless one is cut off.
            let n = (&mut self.io)
                .take(4096)
                .read_line(&mut line)
                .map_err(FetchError::io(format!("LMTP reply from {}", self.addr)))?;
            if n == 0 {
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
    }

    fn expect(&mut self, code: &str) -> Result<(), FetchError> {
        let reply = self.reply()?;
        if reply.starts_with(code) {
            return Ok(());
        }
        Err(FetchError::Delivery {
            to: format!("the LMTP server at {}", self.addr),
            temporary: reply.starts_with('4'),
            reply,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-connection LMTP server that answers with `replies` in order, and returns all it
    /// received.
    fn server(replies: &'static [&'static str]) -> (String, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut received = Vec::new();
            s.write_all(b"220 lmtp ready\r\n").unwrap();
            let mut reader = BufReader::new(s.try_clone().unwrap());
            for reply in replies {
                // Answer once a line (or the end of DATA) has arrived.
                let mut line = Vec::new();
                reader.read_until(b'\n', &mut line).unwrap();
                received.extend_from_slice(&line);
                if line == b"DATA\r\n" {
                    s.write_all(b"354 go ahead\r\n").unwrap();
                    loop {
                        line.clear();
                        reader.read_until(b'\n', &mut line).unwrap();
                        received.extend_from_slice(&line);
                        if line == b".\r\n" {
                            break;
                        }
                    }
                }
                s.write_all(reply.as_bytes()).unwrap();
            }
            received
        });
        (addr, handle)
    }

    #[test]
    fn a_message_is_delivered_dot_stuffed() {
        let (addr, server) = server(&[
            "250-lmtp.example\r\n250 PIPELINING\r\n",
            "250 sender ok\r\n",
            "250 recipient ok\r\n",
            "250 2.0.0 delivered\r\n",
        ]);
        let mut c = LmtpClient::connect(&addr, "me", Duration::from_secs(5)).unwrap();
        c.deliver("a@b", "alice", &mut &b"Subject: x\r\n\r\n.dot\r\nend"[..])
            .unwrap();
        drop(c);
        let received = String::from_utf8(server.join().unwrap()).unwrap();
        assert_eq!(
            received,
            "LHLO me\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice>\r\nDATA\r\nSubject: x\r\n\r\n..dot\r\nend\r\n.\r\n"
        );
    }

    #[test]
    fn refusals_are_typed_temporary_or_permanent() {
        for (reply, temporary) in [("452 4.2.2 full\r\n", true), ("550 5.1.1 no\r\n", false)] {
            let replies: &'static [&'static str] =
                Box::leak(vec!["250 hi\r\n", "250 ok\r\n", reply].into_boxed_slice());
            let (addr, _server) = server(replies);
            let mut c = LmtpClient::connect(&addr, "me", Duration::from_secs(5)).unwrap();
            let e = c.deliver("", "alice", &mut &b"x"[..]).unwrap_err();
            assert!(
                matches!(&e, FetchError::Delivery { temporary: t, .. } if *t == temporary),
                "{e:?}"
            );
            assert_eq!(e.is_temporary(), temporary);
            assert!(e.to_string().contains(reply.trim_end()), "{e}");
        }
    }
}
