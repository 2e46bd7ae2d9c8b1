//! The client side of the protocol, without I/O: the client session ([`ClientSession`]: what
//! may be sent when, and which reply each pipelined command expects), status lines, multi-line
//! bodies and the CAPA list as a client must read them.
//!
//! Why here and not in the client: these are RFC rules (a status line's indicator and RFC 2449
//! response code, RFC 1939's dot-stuffing and terminator, RFC 2449's capability syntax) and
//! every POP3 client Poplar has (`poplar fetch`, `poplar migrate`, the load generator) must read
//! them the same way. Each piece takes bytes and returns values, so it is tested without a
//! socket, including against this crate's own server session.

use crate::capability::Expire;
use crate::command::{Command, EncodeError, Keyword};
use std::fmt;

/// A status line: `+OK ...` or `-ERR [CODE] ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// `+OK` (else `-ERR`).
    pub ok: bool,
    /// The RFC 2449 response code between brackets, as sent (`IN-USE`, `SYS/TEMP`, ...).
    pub code: Option<String>,
    /// The text after the indicator and code.
    pub text: String,
}

impl Status {
    /// Parses a status line (with or without its CRLF); `None` if it is neither `+OK` nor
    /// `-ERR`.
    pub fn parse(line: &[u8]) -> Option<Self> {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches(['\r', '\n']);
        let (ok, rest) = if let Some(rest) = strip_indicator(line, "+OK") {
            (true, rest)
        } else {
            (false, strip_indicator(line, "-ERR")?)
        };
        let rest = rest.trim_start_matches(' ');
        let (code, text) = match rest.strip_prefix('[').and_then(|r| r.split_once(']')) {
            Some((code, text)) if !code.is_empty() && !code.contains(' ') => (
                Some(code.to_ascii_uppercase()),
                text.trim_start_matches(' '),
            ),
            _ => (None, rest),
        };
        Some(Status {
            ok,
            code,
            text: text.to_owned(),
        })
    }

    /// Whether the code says to try again later rather than to change anything (RFC 2449
    /// `IN-USE` and `LOGIN-DELAY`, RFC 3206 `SYS/TEMP`).
    pub fn is_temporary(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some("IN-USE" | "LOGIN-DELAY" | "SYS/TEMP")
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.ok { "+OK" } else { "-ERR" })?;
        if let Some(code) = &self.code {
            write!(f, " [{code}]")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

/// `+OK` or `-ERR` followed by the end of the line or a space (case-insensitive, as some
/// servers answer `+ok`).
fn strip_indicator<'a>(line: &'a str, indicator: &str) -> Option<&'a str> {
    let head = line.get(..indicator.len())?;
    if !head.eq_ignore_ascii_case(indicator) {
        return None;
    }
    let rest = &line[indicator.len()..];
    (rest.is_empty() || rest.starts_with(' ')).then_some(rest)
}

/// What a reply to a command looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyShape {
    /// One status line.
    Single,
    /// A status line and, after `+OK`, a multi-line body (CAPA, LIST and UIDL without an
    /// argument, RETR, TOP).
    MultiLine,
    /// AUTH: `+ ` challenges until a status line (RFC 5034).
    Sasl,
}

/// What follows a status line the session has just been given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follows {
    /// Nothing: the reply is complete.
    Nothing,
    /// A multi-line body, up to its `.` line.
    Body,
    /// STLS was accepted: discard nothing, send nothing more, start the TLS handshake now.
    StartTls,
    /// QUIT was answered: the session is over.
    End,
}

/// The session's phase as the client sees it (RFC 1939 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientPhase {
    /// Before a successful login.
    Authorization,
    /// Logged in.
    Transaction,
    /// QUIT was sent.
    Closing,
}

/// What the client session refuses: a command that cannot be sent (the driver's or its
/// input's fault: caught before a byte leaves), or a server reply out of turn (the server's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The command cannot be encoded as itself (see [`Command::encode`]).
    Unsendable(Keyword, EncodeError),
    /// The command is not valid in this phase of the session (RFC 1939 sections 4 and 5).
    WrongPhase(Keyword, ClientPhase),
    /// Nothing may be sent between STLS's `+OK` and the end of the TLS handshake (RFC 2595).
    TlsPending,
    /// A SASL response with no AUTH exchange in progress.
    NoExchange,
    /// A SASL response with CR or LF in it.
    ResponseLineBreak,
    /// The server sent a `+ ` challenge while no AUTH exchange was in progress.
    UnexpectedChallenge,
    /// The server sent a status line no command was waiting for.
    UnexpectedReply(Status),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unsendable(k, e) => write!(f, "{k}: {e}"),
            ClientError::WrongPhase(k, phase) => write!(f, "{k} is not valid {phase}"),
            ClientError::TlsPending => {
                f.write_str("no command may be sent between STLS and the TLS handshake")
            }
            ClientError::NoExchange => f.write_str("a SASL response without AUTH"),
            ClientError::ResponseLineBreak => f.write_str("CR or LF inside a SASL response"),
            ClientError::UnexpectedChallenge => {
                f.write_str("the server sent a SASL challenge while no AUTH was in progress")
            }
            ClientError::UnexpectedReply(status) => {
                write!(f, "the server sent a reply nothing was sent for: {status}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

impl fmt::Display for ClientPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientPhase::Authorization => "before login",
            ClientPhase::Transaction => "after login",
            ClientPhase::Closing => "after QUIT",
        })
    }
}

/// The client half of a POP3 session, without I/O: it writes commands, remembers in order the
/// reply each one expects (so any number may be pipelined, RFC 2449), and follows the phases.
/// It refuses what would be a protocol error on the client's side: a line with CR or LF in it
/// (command injection through a user name), a command longer than RFC 2449's 255 octets, a
/// transaction command before login, anything after QUIT or after STLS until the handshake.
#[derive(Debug)]
pub struct ClientSession {
    phase: ClientPhase,
    /// Replies expected, oldest first: the command's keyword (`None`: the greeting) and shape.
    expected: std::collections::VecDeque<(Option<Keyword>, ReplyShape)>,
    /// STLS was sent and accepted: nothing may be sent until [`Self::tls_established`].
    tls_pending: bool,
}

impl Default for ClientSession {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientSession {
    /// A session waiting for the server's greeting.
    pub fn new() -> Self {
        let mut expected = std::collections::VecDeque::new();
        expected.push_back((None, ReplyShape::Single));
        ClientSession {
            phase: ClientPhase::Authorization,
            expected,
            tls_pending: false,
        }
    }

    /// The current phase.
    pub fn phase(&self) -> ClientPhase {
        self.phase
    }

    /// The reply expected next: the command's keyword (`None` for the greeting) and shape.
    pub fn next_reply(&self) -> Option<(Option<Keyword>, ReplyShape)> {
        self.expected.front().copied()
    }

    /// Writes `command` to `out` and records the reply it expects.
    pub fn command(&mut self, command: &Command, out: &mut Vec<u8>) -> Result<(), ClientError> {
        let keyword = command.keyword();
        if self.tls_pending {
            return Err(ClientError::TlsPending);
        }
        let allowed = match self.phase {
            ClientPhase::Closing => false,
            ClientPhase::Authorization => keyword.before_login(),
            ClientPhase::Transaction => keyword.after_login(),
        };
        if !allowed {
            return Err(ClientError::WrongPhase(keyword, self.phase));
        }
        let shape = match command {
            Command::Capa | Command::Retr(_) | Command::Top(..) | Command::Env(_) => {
                ReplyShape::MultiLine
            }
            Command::List(None) | Command::Uidl(None) | Command::Lang(None) => {
                ReplyShape::MultiLine
            }
            // A bare AUTH lists the mechanisms (a multi-line reply on most servers).
            Command::Auth {
                mechanism: None, ..
            } => ReplyShape::MultiLine,
            Command::Auth { .. } => ReplyShape::Sasl,
            _ => ReplyShape::Single,
        };
        command
            .encode(out)
            .map_err(|e| ClientError::Unsendable(keyword, e))?;
        if keyword == Keyword::Quit {
            self.phase = ClientPhase::Closing;
        }
        self.expected.push_back((Some(keyword), shape));
        Ok(())
    }

    /// Writes a SASL response line (base64, or `*` to cancel) while AUTH awaits one.
    pub fn sasl_response(&mut self, line: &str, out: &mut Vec<u8>) -> Result<(), ClientError> {
        if self.next_reply().map(|(_, s)| s) != Some(ReplyShape::Sasl) {
            return Err(ClientError::NoExchange);
        }
        if line.contains(['\r', '\n']) {
            return Err(ClientError::ResponseLineBreak);
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// A `+ ` challenge arrived: it must be for an AUTH in progress.
    pub fn challenge(&mut self) -> Result<(), ClientError> {
        match self.next_reply() {
            Some((_, ReplyShape::Sasl)) => Ok(()),
            _ => Err(ClientError::UnexpectedChallenge),
        }
    }

    /// The status line that answers the oldest command; says what follows it.
    pub fn reply(&mut self, status: &Status) -> Result<Follows, ClientError> {
        let (keyword, shape) = self
            .expected
            .pop_front()
            .ok_or_else(|| ClientError::UnexpectedReply(status.clone()))?;
        if status.ok {
            match keyword {
                Some(Keyword::Pass | Keyword::Apop) => self.phase = ClientPhase::Transaction,
                Some(Keyword::Auth) if shape == ReplyShape::Sasl => {
                    self.phase = ClientPhase::Transaction;
                }
                Some(Keyword::Stls) => {
                    self.tls_pending = true;
                    return Ok(Follows::StartTls);
                }
                _ => {}
            }
        }
        Ok(match (keyword, shape, status.ok) {
            (Some(Keyword::Quit), ..) => Follows::End,
            (_, ReplyShape::MultiLine, true) => Follows::Body,
            _ => Follows::Nothing,
        })
    }

    /// The TLS handshake after STLS completed: commands may be sent again.
    pub fn tls_established(&mut self) {
        self.tls_pending = false;
    }
}

/// Undoes the dot-stuffing of a multi-line body as it streams by (RFC 1939 section 3) and finds
/// its terminating `.CRLF`, whatever the split of the input.
#[derive(Debug)]
pub struct Unstuffer {
    /// Octets of content so far.
    octets: u64,
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
    /// Octets of content (after un-stuffing) so far.
    pub fn octets(&self) -> u64 {
        self.octets
    }

    /// Consumes `buf`, handing every octet of content to `sink` as it goes; returns how many
    /// octets of `buf` were used when the terminating `.CRLF` ends within it (the rest belongs
    /// to the next response).
    pub fn feed(&mut self, buf: &[u8], mut sink: impl FnMut(&[u8])) -> Option<usize> {
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

/// What a server's CAPA list says (RFC 2449), as far as a client acts on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerCapabilities {
    /// `TOP`.
    pub top: bool,
    /// `UIDL`.
    pub uidl: bool,
    /// `USER`: USER/PASS is offered.
    pub user: bool,
    /// `STLS` (RFC 2595).
    pub stls: bool,
    /// `PIPELINING`.
    pub pipelining: bool,
    /// `RESP-CODES`.
    pub resp_codes: bool,
    /// `UTF8` (RFC 6856).
    pub utf8: bool,
    /// The `SASL` mechanisms, upper-cased.
    pub sasl: Vec<String>,
    /// `EXPIRE`, and whether it was tagged `USER` (it may differ after login).
    pub expire: Option<(Expire, bool)>,
    /// `LOGIN-DELAY` seconds, and whether it was tagged `USER`.
    pub login_delay: Option<(u32, bool)>,
    /// `IMPLEMENTATION`.
    pub implementation: Option<String>,
}

impl ServerCapabilities {
    /// Reads the lines of a CAPA body (without the `+OK` line and terminator); unknown
    /// capabilities are ignored, as RFC 2449 requires.
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let mut caps = ServerCapabilities::default();
        for line in lines {
            let mut words = line.split_whitespace();
            let Some(name) = words.next() else { continue };
            let args: Vec<&str> = words.collect();
            let tagged_user = args.get(1).is_some_and(|a| a.eq_ignore_ascii_case("USER"));
            match name.to_ascii_uppercase().as_str() {
                "TOP" => caps.top = true,
                "UIDL" => caps.uidl = true,
                "USER" => caps.user = true,
                "STLS" => caps.stls = true,
                "PIPELINING" => caps.pipelining = true,
                "RESP-CODES" => caps.resp_codes = true,
                "UTF8" => caps.utf8 = true,
                "SASL" => caps.sasl = args.iter().map(|m| m.to_ascii_uppercase()).collect(),
                "EXPIRE" => {
                    let value = match args.first() {
                        Some(v) if v.eq_ignore_ascii_case("NEVER") => Some(Expire::Never),
                        Some(v) => v.parse().ok().map(Expire::Days),
                        None => None,
                    };
                    caps.expire = value.map(|e| (e, tagged_user));
                }
                "LOGIN-DELAY" => {
                    caps.login_delay = args
                        .first()
                        .and_then(|v| v.parse().ok())
                        .map(|d| (d, tagged_user));
                }
                "IMPLEMENTATION" => caps.implementation = Some(args.join(" ")),
                _ => {}
            }
        }
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let s = Status::parse(b"-ERR [IN-USE] Maildrop is locked\r\n").unwrap();
        assert_eq!(
            (s.ok, s.code.as_deref(), s.text.as_str()),
            (false, Some("IN-USE"), "Maildrop is locked")
        );
        assert!(s.is_temporary());
        assert_eq!(s.to_string(), "-ERR [IN-USE] Maildrop is locked");
        let s = Status::parse(b"+OK").unwrap();
        assert!(s.ok && s.code.is_none() && s.text.is_empty());
        let s = Status::parse(b"+ok 2 320").unwrap();
        assert_eq!(s.text, "2 320");
        // A bracket that is not a code stays text.
        let s = Status::parse(b"-ERR [not a code] x").unwrap();
        assert_eq!((s.code, s.text.as_str()), (None, "[not a code] x"));
        assert!(!Status::parse(b"-ERR [AUTH] bad").unwrap().is_temporary());
        for bad in [&b"+OKAY"[..], b"OK", b"", b"* OK imap"] {
            assert!(Status::parse(bad).is_none(), "{bad:?}");
        }
    }

    /// Feeds `wire` in pieces of `step` octets; returns the content and the octets used.
    fn unstuff(wire: &[u8], step: usize) -> (Vec<u8>, usize) {
        let mut u = Unstuffer::default();
        let mut content = Vec::new();
        let mut used = 0;
        for chunk in wire.chunks(step) {
            if let Some(n) = u.feed(chunk, |c| content.extend_from_slice(c)) {
                assert_eq!(u.octets(), content.len() as u64);
                return (content, used + n);
            }
            used += chunk.len();
        }
        panic!("no terminator in {wire:?}");
    }

    #[test]
    fn unstuffing_inverts_the_servers_encoder_across_any_split() {
        let body: &[u8] = b"Subject: x\r\n\r\n.hidden\r\n..two\r\n.\rodd\r\nlast\r\n";
        let mut wire = Vec::new();
        let mut encoder = crate::MessageEncoder::retr();
        encoder.encode(body, &mut wire);
        encoder.finish(&mut wire);
        wire.extend_from_slice(b"+OK next");
        for step in 1..wire.len() {
            assert_eq!(
                unstuff(&wire, step),
                (body.to_vec(), wire.len() - 8),
                "step {step}"
            );
        }
        assert_eq!(unstuff(b".\r\n", 1), (Vec::new(), 3));
    }

    /// A command as a line would parse.
    fn cmd(line: &str) -> Command {
        crate::parse_command(line.as_bytes()).unwrap()
    }

    #[test]
    fn the_client_session_tracks_pipelined_replies_and_phases() {
        let mut c = ClientSession::new();
        let mut out = Vec::new();
        let ok = |text: &str| Status::parse(format!("+OK {text}").as_bytes()).unwrap();
        assert!(
            c.command(&cmd("RETR 1"), &mut out).is_err(),
            "before the greeting and login"
        );
        assert_eq!(c.reply(&ok("ready")).unwrap(), Follows::Nothing);
        assert_eq!(
            c.command(&Command::User("a\r\nDELE 1".into()), &mut out),
            Err(ClientError::Unsendable(
                Keyword::User,
                EncodeError::LineBreak
            )),
            "injection"
        );
        assert_eq!(
            c.command(&Command::User("u".repeat(300)), &mut out),
            Err(ClientError::Unsendable(Keyword::User, EncodeError::TooLong))
        );
        assert!(out.is_empty(), "nothing of a refused command is written");
        c.command(&cmd("CAPA"), &mut out).unwrap();
        c.command(&cmd("USER alice"), &mut out).unwrap();
        c.command(&cmd("PASS secret"), &mut out).unwrap();
        assert_eq!(out, b"CAPA\r\nUSER alice\r\nPASS secret\r\n");
        assert_eq!(c.reply(&ok("")).unwrap(), Follows::Body);
        assert_eq!(c.reply(&ok("")).unwrap(), Follows::Nothing);
        assert_eq!(c.phase(), ClientPhase::Authorization);
        assert_eq!(c.reply(&ok("logged in")).unwrap(), Follows::Nothing);
        assert_eq!(c.phase(), ClientPhase::Transaction);
        assert!(
            c.command(&cmd("STLS"), &mut out).is_err(),
            "STLS after login"
        );
        for line in ["UIDL", "LIST 1", "RETR 1", "DELE 1", "QUIT"] {
            c.command(&cmd(line), &mut out).unwrap();
        }
        let err = Status::parse(b"-ERR no such message").unwrap();
        assert_eq!(c.reply(&ok("")).unwrap(), Follows::Body);
        assert_eq!(c.reply(&ok("1 20")).unwrap(), Follows::Nothing);
        assert_eq!(
            c.reply(&err).unwrap(),
            Follows::Nothing,
            "no body after -ERR"
        );
        assert_eq!(c.reply(&ok("")).unwrap(), Follows::Nothing);
        assert_eq!(c.reply(&ok("bye")).unwrap(), Follows::End);
        assert!(c.command(&cmd("NOOP"), &mut out).is_err(), "after QUIT");
        assert!(c.reply(&ok("")).is_err(), "a reply nothing was sent for");
    }

    #[test]
    fn stls_and_sasl() {
        let mut c = ClientSession::new();
        let mut out = Vec::new();
        let ok = Status::parse(b"+OK").unwrap();
        c.reply(&ok).unwrap();
        c.command(&cmd("STLS"), &mut out).unwrap();
        assert_eq!(c.reply(&ok).unwrap(), Follows::StartTls);
        assert!(
            c.command(&cmd("CAPA"), &mut out).is_err(),
            "nothing before the handshake"
        );
        c.tls_established();
        assert!(c.sasl_response("AAAA", &mut out).is_err(), "no AUTH yet");
        c.command(&cmd("AUTH SCRAM-SHA-256 biws"), &mut out)
            .unwrap();
        c.challenge().unwrap();
        c.sasl_response("Yz1iaXdz", &mut out).unwrap();
        c.challenge().unwrap();
        c.sasl_response("", &mut out).unwrap();
        assert_eq!(c.reply(&ok).unwrap(), Follows::Nothing);
        assert_eq!(c.phase(), ClientPhase::Transaction);
        assert!(c.challenge().is_err());
    }

    #[test]
    fn capabilities_as_poplar_and_dovecot_send_them() {
        let mut session = crate::ServerSession::new(crate::SessionConfig::default());
        let mut out = Vec::new();
        session.poll(&mut out).unwrap();
        out.clear();
        session.receive(b"CAPA\r\n");
        session.poll(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().skip(1).take_while(|l| *l != ".").collect();
        let caps = ServerCapabilities::parse(lines);
        assert!(caps.top && caps.uidl && caps.pipelining && caps.resp_codes);
        assert_eq!(caps.expire, Some((Expire::Never, false)));
        let dovecot = "CAPA\nTOP\nUIDL\nRESP-CODES\nPIPELINING\nAUTH-RESP-CODE\nSTLS\nUSER\n\
                       SASL PLAIN login\nEXPIRE 30 USER\nLOGIN-DELAY 900\n";
        let caps = ServerCapabilities::parse(dovecot.lines());
        assert!(caps.stls && caps.user);
        assert_eq!(caps.sasl, ["PLAIN", "LOGIN"]);
        assert_eq!(caps.expire, Some((Expire::Days(30), true)));
        assert_eq!(caps.login_delay, Some((900, false)));
    }
}
