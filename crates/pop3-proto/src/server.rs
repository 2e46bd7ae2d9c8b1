//! The server side of a POP3 session as a sans-I/O state machine.
//!
//! The driver (pop3-server, or a test) owns the socket, the clock, the user database and the
//! maildrop. It feeds received bytes in with [`ServerSession::receive`] and calls
//! [`ServerSession::poll`], which writes responses into the driver's output buffer and returns an
//! [`Event`]: either "read more input", "close", or a request the driver must answer through the
//! matching method before polling again (verify these credentials, open this maildrop, stream
//! message 3, start TLS, commit these deletions). Because nothing here performs I/O, every RFC
//! rule is testable without a socket and a transcript test can replay the RFC dialogues exactly.
//!
//! States follow RFC 1939: AUTHORIZATION (with SASL as its own sub-state, RFC 5034), then
//! TRANSACTION on a snapshot of the maildrop fixed at login, then UPDATE after QUIT. Commands are
//! answered strictly in order, so any number of pipelined commands (RFC 2449 PIPELINING) can sit
//! in the input buffer; responses accumulate in the output buffer and the driver flushes them when
//! it runs out of input.

use crate::capability::{CapaContext, Capabilities, Expire, Mechanism, usable};
use crate::command::{Command, Keyword, MessageNumber, ParseError, command_keyword, parse_command};
use crate::error::Error;
use crate::lang::{Language, Text};
use crate::line::{Frame, LineFramer};
use crate::response::{ResponseCode, err, ok};
use crate::{MessageEncoder, Secret};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::sync::Arc;

/// RFC 2449 section 4: a command line is at most 255 octets including CRLF.
pub const MAX_COMMAND_LINE: usize = 255;

/// When this much output is waiting, `poll` stops between commands and asks for a flush, so a
/// burst of pipelined commands cannot build an unbounded response buffer.
pub const FLUSH_THRESHOLD: usize = 64 * 1024;

/// TLS on this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// No TLS configured: STLS is not offered.
    Unavailable,
    /// TLS configured but not active: STLS is offered (RFC 2595).
    Available,
    /// The connection is encrypted (implicit TLS, RFC 8314, or after STLS).
    Active,
}

/// Settings for one session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// What CAPA advertises; shared by every session of a listener.
    pub capabilities: Arc<Capabilities>,
    /// The APOP timestamp (`<pid.clock@host>`), included in the greeting when APOP is enabled.
    pub apop_timestamp: Option<String>,
    /// TLS state of the connection at greeting time.
    pub tls: Tls,
    /// Plaintext logins (USER/PASS, PLAIN) are allowed without TLS on this connection, because
    /// the peer is on a network the configuration calls secure.
    pub plaintext_without_tls: bool,
    /// The SASL mechanisms this connection offers (plaintext ones are hidden where plaintext
    /// logins are refused). Replaced after STLS by [`ServerSession::tls_established`].
    pub mechanisms: Vec<Mechanism>,
    /// Invalid, unknown or out-of-state commands tolerated before the connection is closed.
    pub max_bad_commands: u32,
    /// Largest SASL response line (and AUTH command line) accepted, terminator included.
    pub max_sasl_line: usize,
    /// The language of response texts until the client chooses one with LANG, and the one
    /// `LANG *` selects (RFC 6856 section 4: the administrator's preferred language).
    pub language: Language,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            capabilities: Arc::new(Capabilities::default()),
            apop_timestamp: None,
            tls: Tls::Unavailable,
            plaintext_without_tls: false,
            mechanisms: vec![Mechanism::plaintext("PLAIN")],
            max_bad_commands: 10,
            max_sasl_line: 16 * 1024,
            language: Language::English,
        }
    }
}

/// Credentials to verify.
#[derive(Debug)]
pub enum Credentials {
    /// USER then PASS.
    UserPass {
        /// The name from USER.
        user: String,
        /// The PASS argument.
        password: Secret<Vec<u8>>,
    },
    /// APOP (RFC 1939 section 7): MD5 of the greeting timestamp followed by the shared secret.
    Apop {
        /// The mailbox name.
        user: String,
        /// The timestamp from this session's greeting.
        timestamp: String,
        /// The client's digest, lower-case hex.
        digest: String,
    },
}

/// A request to stream one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRequest {
    /// Index into the snapshot given to [`ServerSession::maildrop_opened`].
    pub index: usize,
    /// The size the snapshot reported for it.
    pub size: u64,
    /// `Some(n)` for `TOP msg n`, `None` for RETR.
    pub body_lines: Option<u64>,
}

/// What the driver must do next.
#[derive(Debug)]
pub enum Event {
    /// Flush the output buffer and read more input.
    NeedInput,
    /// Flush the output buffer, then poll again (more commands are waiting).
    Flush,
    /// Verify credentials, then call [`ServerSession::auth_succeeded`] or
    /// [`ServerSession::auth_failed`].
    Authenticate(Credentials),
    /// Start a SASL exchange, then answer with [`ServerSession::sasl_challenge`],
    /// [`ServerSession::auth_succeeded`] or [`ServerSession::auth_failed`].
    SaslStart {
        /// The mechanism (one the session offered).
        mechanism: String,
        /// The decoded initial response, if the client sent one (RFC 4422 section 3.3).
        initial_response: Option<Secret<Vec<u8>>>,
    },
    /// The client's decoded response to the last challenge; answer as for `SaslStart`.
    SaslResponse(Secret<Vec<u8>>),
    /// The client abandoned the SASL exchange (`*`, RFC 5034) or answered with invalid base64:
    /// a failed attempt like any other (an abandoned exchange may already have shown the
    /// client something, such as a SCRAM salt). Apply the failure's penalty, then call
    /// [`ServerSession::sasl_abandoned`].
    SaslAbandoned,
    /// Lock and snapshot the user's maildrop, then call [`ServerSession::maildrop_opened`] or
    /// [`ServerSession::maildrop_failed`].
    OpenMaildrop {
        /// The authenticated user.
        user: String,
    },
    /// Stream a message: [`ServerSession::message_start`], the encoder, then
    /// [`ServerSession::message_end`]; or [`ServerSession::message_failed`] if it can't be read.
    SendMessage(MessageRequest),
    /// Flush the output buffer, discard any buffered input, negotiate TLS, then call
    /// [`ServerSession::tls_established`] (or close the connection if the handshake fails).
    StartTls,
    /// Enter UPDATE: remove these snapshot indices durably, then call
    /// [`ServerSession::commit_done`].
    Commit {
        /// Snapshot indices marked as deleted, ascending.
        deleted: Vec<usize>,
        /// Snapshot indices retrieved by RETR and not deleted, ascending: where a retention
        /// period applies (`EXPIRE n`, n > 0), their removal is due n days from now.
        retrieved: Vec<usize>,
    },
    /// Flush the output buffer and close the connection.
    Close,
}

/// Why authentication failed. Each maps to the truthful response code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// Wrong name or password (indistinguishable on the wire): `[AUTH]`.
    InvalidCredentials,
    /// The user must wait longer between logins (RFC 2449 LOGIN-DELAY): `[LOGIN-DELAY]`.
    LoginDelay,
    /// The server could not check the credentials (user database unreadable): `[SYS/TEMP]`.
    Temporary,
    /// The SASL exchange was malformed (not the user's password at fault).
    Protocol,
    /// The user already has as many connections as allowed: `[IN-USE]`.
    TooManyConnections,
}

/// Why the maildrop could not be opened after successful authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaildropFailure {
    /// Another session holds the maildrop lock: `[IN-USE]`.
    InUse,
    /// A temporary storage problem: `[SYS/TEMP]`.
    Temporary,
    /// A problem an administrator must fix: `[SYS/PERM]`.
    Permanent,
}

/// Why UPDATE did not fully succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitFailure {
    /// Some marked messages could not be removed; they remain and nothing else was lost.
    Partial,
}

/// One message in the snapshot taken at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    /// Canonical size in octets: exactly what RETR delivers after un-stuffing.
    pub size: u64,
    /// The unique-id (RFC 1939 section 7: 1 to 70 octets in 0x21..=0x7E).
    pub uidl: String,
    /// The envelope recorded at delivery (SDPS host maildrops), which `*ENV` reports.
    pub envelope: Option<Box<Envelope>>,
}

/// The SMTP envelope of one delivered copy of a message: who sent it and to which address it
/// was delivered (Demon's SDPS `*ENV`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// The envelope sender (MAIL FROM); empty for a bounce (`<>`).
    pub sender: String,
    /// The envelope recipient (RCPT TO) this copy was delivered to.
    pub recipient: String,
}

/// Counters for the session summary log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Commands received (valid or not).
    pub commands: u32,
    /// Commands refused as unknown, malformed or out of state.
    pub bad_commands: u32,
    /// Failed authentication attempts.
    pub auth_failures: u32,
    /// Messages sent by RETR.
    pub retr: u32,
    /// Canonical octets sent by RETR.
    pub retr_octets: u64,
    /// TOP commands answered.
    pub top: u32,
    /// Canonical octets sent by TOP.
    pub top_octets: u64,
    /// Messages marked for deletion when QUIT arrived.
    pub deleted: u32,
    /// Their total size.
    pub deleted_octets: u64,
    /// Whether UPDATE ran and succeeded.
    pub committed: bool,
}

/// Why a session ended, for the summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Still running.
    Open,
    /// The client sent QUIT.
    Quit,
    /// Too many bad commands.
    TooManyBadCommands,
    /// The inactivity timer expired.
    Timeout,
    /// The server is shutting down.
    Shutdown,
    /// Closed before login to make room at the connection limit.
    Evicted,
    /// Closed instead of answering a login attempt: its address has failed too often.
    TooManyFailures,
    /// The store lost the session's maildrop lock (a shared store's connection failed).
    MaildropLost,
    /// An administrator ended the session (`poplar kick`).
    Kicked,
}

#[derive(Debug)]
struct Snapshot {
    messages: Vec<MessageMeta>,
    deleted: Vec<bool>,
    /// Fully sent by RETR (for `EXPIRE 0`, which removes retrieved messages at QUIT).
    retrieved: Vec<bool>,
    live_count: usize,
    live_octets: u64,
}

impl Snapshot {
    fn new(messages: Vec<MessageMeta>) -> Self {
        let live_octets = messages.iter().map(|m| m.size).sum();
        Self {
            deleted: vec![false; messages.len()],
            retrieved: vec![false; messages.len()],
            live_count: messages.len(),
            live_octets,
            messages,
        }
    }

    /// The index of a visible (existing, not deleted) message, or the -ERR text.
    fn visible(&self, n: MessageNumber) -> Result<usize, Text<'static>> {
        let idx = n as usize - 1;
        if idx >= self.messages.len() {
            return Err(Text::NoSuchMessageOf {
                messages: self.messages.len(),
            });
        }
        if self.deleted[idx] {
            return Err(Text::MessageIsDeleted(n));
        }
        Ok(idx)
    }

    fn visible_messages(&self) -> impl Iterator<Item = (usize, &MessageMeta)> {
        self.messages
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted[*i])
    }

    /// What is left: `(messages, octets)`.
    fn live(&self) -> (usize, u64) {
        (self.live_count, self.live_octets)
    }
}

#[derive(Debug)]
enum Phase {
    Authorization,
    /// A challenge was sent; the next line is the client's SASL response.
    Sasl,
    Transaction(Snapshot),
    /// QUIT arrived; the commit is under way. `left` messages will remain.
    Update {
        left: usize,
    },
    Closed(EndReason),
}

/// What the driver owes the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    Auth,
    OpenMaildrop,
    Message(MessageRequest),
    /// `message_start` was called; streaming is under way.
    Streaming(MessageRequest),
    StartTls,
    Commit,
}

impl Pending {
    fn describe(self) -> &'static str {
        match self {
            Pending::None => "no answer was expected",
            Pending::Auth => "waiting for an authentication result",
            Pending::OpenMaildrop => "waiting for the maildrop",
            Pending::Message(_) => "waiting for message_start or message_failed",
            Pending::Streaming(_) => "waiting for message_end",
            Pending::StartTls => "waiting for the TLS handshake",
            Pending::Commit => "waiting for the commit result",
        }
    }
}

/// A POP3 server session (one per connection).
#[derive(Debug)]
pub struct ServerSession {
    config: SessionConfig,
    phase: Phase,
    pending: Pending,
    queued: Option<Event>,
    framer: LineFramer,
    /// The name given by USER, waiting for PASS.
    user_hint: Option<String>,
    tls_active: bool,
    utf8: bool,
    /// The language of response texts (RFC 6856 LANG).
    lang: Language,
    greeted: bool,
    user: Option<String>,
    user_login_delay: Option<u32>,
    user_expire: Option<Expire>,
    stats: SessionStats,
    /// What to answer once the driver has dealt with an abandoned SASL exchange.
    abandoned: Option<Text<'static>>,
}

impl ServerSession {
    /// A new session; the greeting is written by the first [`poll`](Self::poll).
    pub fn new(config: SessionConfig) -> Self {
        Self {
            tls_active: config.tls == Tls::Active,
            lang: config.language,
            config,
            phase: Phase::Authorization,
            pending: Pending::None,
            queued: None,
            framer: LineFramer::new(),
            user_hint: None,
            utf8: false,
            greeted: false,
            user: None,
            abandoned: None,
            user_login_delay: None,
            user_expire: None,
            stats: SessionStats::default(),
        }
    }

    /// Sets the logged-in user's own LOGIN-DELAY (RFC 2449: CAPA after login shows it).
    pub fn set_user_login_delay(&mut self, seconds: u32) {
        self.user_login_delay = Some(seconds);
    }

    /// Sets the logged-in user's own EXPIRE policy (RFC 2449: CAPA after login shows it, and
    /// `EXPIRE 0` removes what the session retrieved).
    pub fn set_user_expire(&mut self, expire: Expire) {
        self.user_expire = Some(expire);
    }

    /// The retention policy in force for this session.
    fn expire(&self) -> Expire {
        self.user_expire.unwrap_or(self.config.capabilities.expire)
    }

    /// Hands received bytes to the session.
    pub fn receive(&mut self, data: &[u8]) {
        self.framer.push(data);
    }

    /// Bytes received but not yet processed.
    pub fn buffered_input(&self) -> usize {
        self.framer.buffered()
    }

    /// The authenticated user, once logged in.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Whether the session is in the TRANSACTION (or UPDATE) state.
    pub fn is_logged_in(&self) -> bool {
        matches!(self.phase, Phase::Transaction(_) | Phase::Update { .. })
    }

    /// Whether UTF-8 mode was enabled with the UTF8 command (RFC 6856).
    pub fn utf8_enabled(&self) -> bool {
        self.utf8
    }

    /// The language response texts are in now.
    pub fn language(&self) -> Language {
        self.lang
    }

    /// Whether the connection is encrypted.
    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// Counters for the summary line.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Why the session ended ([`EndReason::Open`] while it runs).
    pub fn end_reason(&self) -> EndReason {
        match self.phase {
            Phase::Closed(reason) => reason,
            _ => EndReason::Open,
        }
    }

    fn plaintext_allowed(&self) -> bool {
        self.tls_active || self.config.plaintext_without_tls
    }

    fn stls_offered(&self) -> bool {
        self.config.tls == Tls::Available && !self.tls_active
    }

    /// Processes buffered input, writing responses to `out`, until the driver has to act.
    pub fn poll(&mut self, out: &mut Vec<u8>) -> Result<Event, Error> {
        if self.pending != Pending::None {
            return Err(Error::UnexpectedAnswer {
                called: "poll",
                state: self.pending.describe(),
            });
        }
        if let Some(event) = self.queued.take() {
            if let Event::OpenMaildrop { .. } = event {
                self.pending = Pending::OpenMaildrop;
            }
            return Ok(event);
        }
        if !self.greeted {
            self.greeted = true;
            self.greet(out);
        }
        loop {
            if let Phase::Closed(_) = self.phase {
                return Ok(Event::Close);
            }
            if out.len() >= FLUSH_THRESHOLD {
                return Ok(Event::Flush);
            }
            let in_sasl = matches!(self.phase, Phase::Sasl);
            let cap = self.config.max_sasl_line.max(MAX_COMMAND_LINE);
            let parsed = match self.framer.next_line(cap) {
                None => return Ok(Event::NeedInput),
                Some(Frame::TooLong) => Err(LineError::TooLong),
                Some(Frame::Line(line)) if in_sasl => Ok(Input::Sasl(decode_sasl_line(line))),
                Some(Frame::Line(line)) if line.len() + 2 > MAX_COMMAND_LINE && !is_auth(line) => {
                    Err(LineError::TooLong)
                }
                Some(Frame::Line(line)) => parse_command(line)
                    .map(Input::Command)
                    .map_err(|e| LineError::Parse(e, command_keyword(line).map(Keyword::as_str))),
            };
            self.stats.commands += 1;
            let event = match parsed {
                Ok(Input::Sasl(response)) => self.on_sasl_response(response),
                Ok(Input::Command(cmd)) if self.is_logged_in() => self.on_transaction(out, cmd),
                Ok(Input::Command(cmd)) => self.on_authorization(out, cmd),
                Err(LineError::TooLong) => {
                    if in_sasl {
                        self.phase = Phase::Authorization;
                    }
                    self.bad_command(out, Text::LineTooLong);
                    None
                }
                Err(LineError::Parse(_, Some(keyword))) if !self.state_allows(keyword) => {
                    self.wrong_state(out, keyword);
                    None
                }
                Err(LineError::Parse(ParseError::NoSuchMessage, _)) if self.is_logged_in() => {
                    err(out, None, self.lang.text(Text::NoSuchMessage));
                    None
                }
                Err(LineError::Parse(e, _)) => {
                    self.bad_command(out, Text::Invalid(e));
                    None
                }
            };
            if let Some(event) = event {
                return Ok(event);
            }
        }
    }

    fn greet(&mut self, out: &mut Vec<u8>) {
        let greeting = self.lang.text(Text::Greeting);
        match &self.config.apop_timestamp {
            Some(ts) => ok(out, format_args!("{greeting} {ts}")),
            None => ok(out, greeting),
        }
    }

    fn bad_command(&mut self, out: &mut Vec<u8>, text: Text<'_>) {
        self.stats.bad_commands += 1;
        if self.stats.bad_commands >= self.config.max_bad_commands {
            err(out, None, self.lang.text(Text::TooManyBadCommands));
            self.phase = Phase::Closed(EndReason::TooManyBadCommands);
        } else {
            err(out, None, self.lang.text(text));
        }
    }

    /// Whether a command is valid in the current state (RFC 1939 sections 4-6): the
    /// authorization commands only before login, the transaction commands only after it.
    fn state_allows(&self, keyword: &str) -> bool {
        const AUTHORIZATION: [&str; 6] = ["USER", "PASS", "APOP", "AUTH", "STLS", "UTF8"];
        const TRANSACTION: [&str; 9] = [
            "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "*ENV",
        ];
        let only_in = if self.is_logged_in() {
            &AUTHORIZATION[..]
        } else {
            &TRANSACTION[..]
        };
        !only_in.contains(&keyword)
    }

    fn wrong_state(&mut self, out: &mut Vec<u8>, keyword: &str) {
        let logged_in = self.is_logged_in();
        self.bad_command(out, Text::WrongState { keyword, logged_in });
    }

    /// LANG (RFC 6856 section 4): list the languages, or switch to the one a range selects.
    fn on_lang(&mut self, out: &mut Vec<u8>, range: Option<String>) {
        let Some(range) = range else {
            ok(out, self.lang.text(Text::LanguagesFollow));
            for language in Language::ALL {
                write_line(out, format_args!("{} {}", language.tag(), language.name()));
            }
            out.extend_from_slice(b".\r\n");
            return;
        };
        let selected = if range == "*" {
            Ok(Some(self.config.language))
        } else {
            Language::matching(&range)
        };
        match selected {
            Ok(Some(language)) => {
                self.lang = language;
                let text = language.text(Text::LanguageChanged);
                ok(out, format_args!("{} {text}", language.tag()));
            }
            Ok(None) => err(out, None, self.lang.text(Text::NoSuchLanguage(&range))),
            Err(_) => err(out, None, self.lang.text(Text::InvalidLanguageRange)),
        }
    }

    fn on_authorization(&mut self, out: &mut Vec<u8>, cmd: Command) -> Option<Event> {
        match cmd {
            Command::Capa => self.write_capa(out),
            Command::Quit => {
                ok(out, self.lang.text(Text::SigningOff));
                self.phase = Phase::Closed(EndReason::Quit);
            }
            Command::User(name) => {
                if self.plaintext_allowed() {
                    self.user_hint = Some(name);
                    ok(out, self.lang.text(Text::SendPassword));
                } else {
                    self.user_hint = None;
                    self.refuse_plaintext(out);
                }
            }
            Command::Pass(password) => match self.user_hint.take() {
                Some(user) => {
                    self.pending = Pending::Auth;
                    return Some(Event::Authenticate(Credentials::UserPass {
                        user,
                        password,
                    }));
                }
                None => self.bad_command(out, Text::SendUserFirst),
            },
            Command::Apop { user, digest } => {
                self.user_hint = None;
                match &self.config.apop_timestamp {
                    Some(ts) => {
                        let timestamp = ts.clone();
                        self.pending = Pending::Auth;
                        return Some(Event::Authenticate(Credentials::Apop {
                            user,
                            timestamp,
                            digest,
                        }));
                    }
                    None => self.bad_command(out, Text::ApopDisabled),
                }
            }
            Command::Auth {
                mechanism,
                initial_response,
            } => {
                self.user_hint = None;
                return self.on_auth(out, mechanism, initial_response);
            }
            Command::Stls => {
                if self.tls_active {
                    self.bad_command(out, Text::TlsAlreadyActive);
                } else if self.config.tls == Tls::Unavailable {
                    self.bad_command(out, Text::TlsUnavailable);
                } else {
                    // RFC 2595 section 4: forget what the client said before TLS, and never
                    // execute plaintext that was pipelined after STLS.
                    ok(out, self.lang.text(Text::BeginTls));
                    self.user_hint = None;
                    self.utf8 = false;
                    self.lang = self.config.language;
                    self.framer.clear();
                    self.pending = Pending::StartTls;
                    return Some(Event::StartTls);
                }
            }
            Command::Utf8 => {
                self.utf8 = true;
                ok(out, self.lang.text(Text::Utf8Enabled));
            }
            Command::Lang(range) => self.on_lang(out, range),
            cmd @ (Command::Stat
            | Command::List(_)
            | Command::Retr(_)
            | Command::Dele(_)
            | Command::Noop
            | Command::Rset
            | Command::Top(..)
            | Command::Env(_)
            | Command::Uidl(_)) => self.wrong_state(out, cmd.keyword().as_str()),
        }
        None
    }

    fn refuse_plaintext(&mut self, out: &mut Vec<u8>) {
        self.stats.auth_failures += 1;
        let text = Text::PlaintextDisallowed {
            stls_offered: self.stls_offered(),
        };
        err(out, Some(ResponseCode::Auth), self.lang.text(text));
    }

    fn on_auth(
        &mut self,
        out: &mut Vec<u8>,
        mechanism: Option<String>,
        initial_response: Option<Secret<Vec<u8>>>,
    ) -> Option<Event> {
        let plaintext_allowed = self.plaintext_allowed();
        let Some(mechanism) = mechanism else {
            // The old form Outlook sends: list the mechanisms.
            ok(out, self.lang.text(Text::MechanismsFollow));
            for m in usable(&self.config.mechanisms, plaintext_allowed) {
                out.extend_from_slice(m.name.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b".\r\n");
            return None;
        };
        match self.config.mechanisms.iter().find(|m| m.name == mechanism) {
            None => {
                self.bad_command(out, Text::UnsupportedMechanism);
                return None;
            }
            Some(m) if m.plaintext && !plaintext_allowed => {
                self.refuse_plaintext(out);
                return None;
            }
            Some(_) => {}
        }
        let initial_response = match initial_response.map(|ir| decode_sasl(ir.expose())) {
            None => None,
            Some(Ok(data)) => Some(data),
            Some(Err(())) => {
                self.stats.auth_failures += 1;
                err(out, None, self.lang.text(Text::InvalidInitialResponse));
                return None;
            }
        };
        self.pending = Pending::Auth;
        Some(Event::SaslStart {
            mechanism,
            initial_response,
        })
    }

    fn on_sasl_response(
        &mut self,
        response: Result<Secret<Vec<u8>>, SaslLineError>,
    ) -> Option<Event> {
        self.pending = Pending::Auth;
        let text = match response {
            Ok(data) => return Some(Event::SaslResponse(data)),
            Err(SaslLineError::Cancelled) => Text::AuthCancelled,
            Err(SaslLineError::Invalid) => Text::InvalidSaslResponse,
        };
        self.abandoned = Some(text);
        Some(Event::SaslAbandoned)
    }

    fn on_transaction(&mut self, out: &mut Vec<u8>, cmd: Command) -> Option<Event> {
        let expire = self.expire();
        let lang = self.lang;
        let Phase::Transaction(snap) = &mut self.phase else {
            // UPDATE: nothing can be read until commit_done, which closes the session.
            return None;
        };
        match cmd {
            Command::Stat => ok(
                out,
                format_args!("{} {}", snap.live_count, snap.live_octets),
            ),
            Command::List(None) => {
                let (messages, octets) = snap.live();
                ok(out, lang.text(Text::Listing { messages, octets }));
                for (i, m) in snap.visible_messages() {
                    write_line(out, format_args!("{} {}", i + 1, m.size));
                }
                out.extend_from_slice(b".\r\n");
            }
            Command::List(Some(n)) => match snap.visible(n) {
                Ok(i) => ok(out, format_args!("{n} {}", snap.messages[i].size)),
                Err(text) => err(out, None, lang.text(text)),
            },
            Command::Uidl(None) => {
                ok(out, lang.text(Text::UidlFollows));
                for (i, m) in snap.visible_messages() {
                    write_line(out, format_args!("{} {}", i + 1, m.uidl));
                }
                out.extend_from_slice(b".\r\n");
            }
            Command::Uidl(Some(n)) => match snap.visible(n) {
                Ok(i) => ok(out, format_args!("{n} {}", snap.messages[i].uidl)),
                Err(text) => err(out, None, lang.text(text)),
            },
            Command::Retr(n) => {
                return request_message(snap, &mut self.pending, out, lang, n, None);
            }
            Command::Top(n, lines) => {
                let pending = &mut self.pending;
                return request_message(snap, pending, out, lang, n, Some(lines));
            }
            Command::Dele(n) => match snap.visible(n) {
                Ok(i) => {
                    snap.deleted[i] = true;
                    snap.live_count -= 1;
                    snap.live_octets -= snap.messages[i].size;
                    ok(out, lang.text(Text::MessageDeleted(n)));
                }
                Err(_) if (n as usize) <= snap.messages.len() => {
                    err(out, None, lang.text(Text::AlreadyDeleted(n)));
                }
                Err(text) => err(out, None, lang.text(text)),
            },
            Command::Rset => {
                snap.deleted.iter_mut().for_each(|d| *d = false);
                snap.live_count = snap.messages.len();
                snap.live_octets = snap.messages.iter().map(|m| m.size).sum();
                let (messages, octets) = snap.live();
                ok(out, lang.text(Text::MaildropHas { messages, octets }));
            }
            Command::Quit => {
                // RFC 2449 section 6.7: with EXPIRE 0, retrieved messages go at the end of the
                // session as if deleted.
                let expire_now = expire == Expire::Days(0);
                let (deleted, retrieved): (Vec<usize>, Vec<usize>) = (0..snap.messages.len())
                    .filter(|&i| snap.deleted[i] || snap.retrieved[i])
                    .partition(|&i| snap.deleted[i] || expire_now);
                self.stats.deleted = u32::try_from(deleted.len()).unwrap_or(u32::MAX);
                self.stats.deleted_octets = deleted.iter().map(|&i| snap.messages[i].size).sum();
                let left = snap.messages.len() - deleted.len();
                self.phase = Phase::Update { left };
                self.pending = Pending::Commit;
                return Some(Event::Commit { deleted, retrieved });
            }
            Command::Noop => ok(out, ""),
            Command::Capa => self.write_capa(out),
            Command::Lang(range) => self.on_lang(out, range),
            Command::Env(n) => match snap.visible(n) {
                Ok(i) => match &snap.messages[i].envelope {
                    // Demon's layout: the number, the UIDL, the sender, the recipient.
                    Some(envelope) => {
                        ok(out, lang.text(Text::EnvelopeFollows));
                        let clean = |s: &str| s.chars().filter(|c| !c.is_control()).collect();
                        let lines: [String; 4] = [
                            n.to_string(),
                            snap.messages[i].uidl.clone(),
                            clean(&envelope.sender),
                            clean(&envelope.recipient),
                        ];
                        for line in lines {
                            if line.starts_with('.') {
                                out.push(b'.');
                            }
                            write_line(out, format_args!("{line}"));
                        }
                        out.extend_from_slice(b".\r\n");
                    }
                    None => err(out, None, lang.text(Text::NoEnvelope(n))),
                },
                Err(text) => err(out, None, lang.text(text)),
            },
            cmd @ (Command::User(_)
            | Command::Pass(_)
            | Command::Apop { .. }
            | Command::Auth { .. }
            | Command::Stls
            | Command::Utf8) => self.wrong_state(out, cmd.keyword().as_str()),
        }
        None
    }

    fn write_capa(&self, out: &mut Vec<u8>) {
        ok(out, self.lang.text(Text::CapaFollows));
        let ctx = CapaContext {
            logged_in: self.is_logged_in(),
            plaintext_allowed: self.plaintext_allowed(),
            stls_offered: self.stls_offered() && !self.is_logged_in(),
            mechanisms: &self.config.mechanisms,
            user_login_delay: self.user_login_delay,
            user_expire: self.user_expire,
        };
        self.config.capabilities.write(ctx, out);
        out.extend_from_slice(b".\r\n");
    }

    fn expect(&self, called: &'static str, ok: bool) -> Result<(), Error> {
        if ok { Ok(()) } else { Err(self.misuse(called)) }
    }

    /// Answers `Authenticate`/`SaslStart`/`SaslResponse`: the credentials are good. The next
    /// poll returns [`Event::OpenMaildrop`].
    pub fn auth_succeeded(&mut self, user: String) -> Result<(), Error> {
        self.expect("auth_succeeded", self.pending == Pending::Auth)?;
        self.pending = Pending::None;
        self.phase = Phase::Authorization;
        self.queued = Some(Event::OpenMaildrop { user });
        Ok(())
    }

    /// Answers `Authenticate`/`SaslStart`/`SaslResponse`: authentication failed. The session
    /// returns to the AUTHORIZATION state and stays usable (the driver applies any delay first).
    pub fn auth_failed(&mut self, out: &mut Vec<u8>, why: AuthFailure) -> Result<(), Error> {
        self.expect("auth_failed", self.pending == Pending::Auth)?;
        self.pending = Pending::None;
        self.phase = Phase::Authorization;
        self.stats.auth_failures += 1;
        let (code, text) = match why {
            AuthFailure::InvalidCredentials => (Some(ResponseCode::Auth), Text::AuthFailed),
            AuthFailure::LoginDelay => (Some(ResponseCode::LoginDelay), Text::LoginDelay),
            AuthFailure::Temporary => (Some(ResponseCode::SysTemp), Text::AuthTemporary),
            AuthFailure::Protocol => (None, Text::AuthProtocol),
            AuthFailure::TooManyConnections => {
                (Some(ResponseCode::InUse), Text::TooManyConnections)
            }
        };
        err(out, code, self.lang.text(text));
        Ok(())
    }

    /// Answers `SaslAbandoned`: `-ERR` saying why, back in AUTHORIZATION.
    pub fn sasl_abandoned(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        self.expect("sasl_abandoned", self.pending == Pending::Auth)?;
        let text = self.abandoned.take().unwrap_or(Text::AuthCancelled);
        self.pending = Pending::None;
        self.phase = Phase::Authorization;
        self.stats.auth_failures += 1;
        err(out, None, self.lang.text(text));
        Ok(())
    }

    /// Answers a login attempt (any pending authentication) by closing the session with
    /// `-ERR [SYS/TEMP]`: the address has failed so often that the attempt's turn is too far
    /// away. Says nothing about the credentials. Only valid before login.
    pub fn refuse_attempt(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        self.expect("refuse_attempt", !self.is_logged_in())?;
        self.abandoned = None;
        self.stats.auth_failures += 1;
        self.close_temporarily(out, Text::TooManyFailures, EndReason::TooManyFailures);
        Ok(())
    }

    /// Answers `SaslStart`/`SaslResponse` with a server challenge (`+ base64`).
    pub fn sasl_challenge(&mut self, out: &mut Vec<u8>, challenge: &[u8]) -> Result<(), Error> {
        self.expect("sasl_challenge", self.pending == Pending::Auth)?;
        self.pending = Pending::None;
        self.phase = Phase::Sasl;
        out.extend_from_slice(b"+ ");
        out.extend_from_slice(BASE64.encode(challenge).as_bytes());
        out.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// Answers `OpenMaildrop`: the session enters TRANSACTION on this snapshot.
    pub fn maildrop_opened(
        &mut self,
        out: &mut Vec<u8>,
        user: String,
        messages: Vec<MessageMeta>,
    ) -> Result<(), Error> {
        self.expect("maildrop_opened", self.pending == Pending::OpenMaildrop)?;
        self.pending = Pending::None;
        let snap = Snapshot::new(messages);
        let (messages, octets) = snap.live();
        ok(out, self.lang.text(Text::LoggedIn { messages, octets }));
        self.user = Some(user);
        self.phase = Phase::Transaction(snap);
        Ok(())
    }

    /// Answers `OpenMaildrop`: the maildrop is unavailable; back to AUTHORIZATION.
    pub fn maildrop_failed(
        &mut self,
        out: &mut Vec<u8>,
        why: MaildropFailure,
    ) -> Result<(), Error> {
        self.expect("maildrop_failed", self.pending == Pending::OpenMaildrop)?;
        self.pending = Pending::None;
        self.phase = Phase::Authorization;
        let (code, text) = match why {
            MaildropFailure::InUse => (ResponseCode::InUse, Text::MaildropInUse),
            MaildropFailure::Temporary => (ResponseCode::SysTemp, Text::MaildropTemporary),
            MaildropFailure::Permanent => (ResponseCode::SysPerm, Text::MaildropPermanent),
        };
        err(out, Some(code), self.lang.text(text));
        Ok(())
    }

    /// Answers `SendMessage`: the message is readable. Writes the `+OK` line and returns the
    /// encoder to stream the stored bytes through.
    pub fn message_start(&mut self, out: &mut Vec<u8>) -> Result<MessageEncoder, Error> {
        let Pending::Message(req) = self.pending else {
            return Err(self.misuse("message_start"));
        };
        self.pending = Pending::Streaming(req);
        Ok(match req.body_lines {
            None => {
                ok(out, self.lang.text(Text::Octets(req.size)));
                MessageEncoder::retr()
            }
            Some(lines) => {
                ok(out, self.lang.text(Text::TopFollows));
                MessageEncoder::top(lines)
            }
        })
    }

    /// Ends a message started with [`message_start`](Self::message_start): writes the
    /// terminator and returns the canonical octets sent. For RETR the driver should compare them
    /// with the request's `size` (a mismatch means the store's size index is wrong).
    pub fn message_end(
        &mut self,
        out: &mut Vec<u8>,
        encoder: MessageEncoder,
    ) -> Result<u64, Error> {
        let Pending::Streaming(req) = self.pending else {
            return Err(self.misuse("message_end"));
        };
        self.pending = Pending::None;
        let octets = encoder.finish(out);
        if req.body_lines.is_none() {
            if let Phase::Transaction(snap) = &mut self.phase {
                snap.retrieved[req.index] = true;
            }
            self.stats.retr += 1;
            self.stats.retr_octets += octets;
        } else {
            self.stats.top += 1;
            self.stats.top_octets += octets;
        }
        Ok(octets)
    }

    /// Answers `SendMessage`: the message could not be read (nothing was sent yet).
    pub fn message_failed(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        let Pending::Message(req) = self.pending else {
            return Err(self.misuse("message_failed"));
        };
        self.pending = Pending::None;
        let text = Text::MessageUnreadable(req.index + 1);
        err(out, Some(ResponseCode::SysTemp), self.lang.text(text));
        Ok(())
    }

    fn misuse(&self, called: &'static str) -> Error {
        Error::UnexpectedAnswer {
            called,
            state: self.pending.describe(),
        }
    }

    /// Answers `StartTls`: the handshake completed. CAPA no longer lists STLS, plaintext
    /// logins become allowed, and `mechanisms` (which may now include channel-binding and
    /// certificate mechanisms) replace the plaintext connection's list.
    pub fn tls_established(&mut self, mechanisms: Vec<Mechanism>) -> Result<(), Error> {
        self.expect("tls_established", self.pending == Pending::StartTls)?;
        self.pending = Pending::None;
        self.tls_active = true;
        self.config.mechanisms = mechanisms;
        self.framer.clear();
        Ok(())
    }

    /// Answers `Commit`: writes the final reply; the next poll returns [`Event::Close`].
    pub fn commit_done(
        &mut self,
        out: &mut Vec<u8>,
        result: Result<(), CommitFailure>,
    ) -> Result<(), Error> {
        self.expect("commit_done", self.pending == Pending::Commit)?;
        let Phase::Update { left } = self.phase else {
            return Err(self.misuse("commit_done"));
        };
        self.pending = Pending::None;
        self.phase = Phase::Closed(EndReason::Quit);
        match result {
            Ok(()) => {
                self.stats.committed = true;
                ok(out, self.lang.text(Text::SignedOff { left }));
            }
            Err(CommitFailure::Partial) => err(
                out,
                Some(ResponseCode::SysTemp),
                self.lang.text(Text::CommitPartial),
            ),
        }
        Ok(())
    }

    /// The inactivity timer expired. RFC 1939 section 3: the session ends without UPDATE and
    /// without a response. Any pending request is abandoned.
    pub fn timed_out(&mut self) {
        self.pending = Pending::None;
        self.phase = Phase::Closed(EndReason::Timeout);
    }

    /// The server is at its connection limit and this unauthenticated connection has waited
    /// longest: tells the client and ends the session. Only valid before login.
    pub fn evicted(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        self.expect("evicted", !self.is_logged_in())?;
        self.close_temporarily(out, Text::Evicted, EndReason::Evicted);
        Ok(())
    }

    /// The server is shutting down: tells the client and ends the session without UPDATE.
    pub fn shutting_down(&mut self, out: &mut Vec<u8>) {
        self.close_temporarily(out, Text::ShuttingDown, EndReason::Shutdown);
    }

    /// The store lost this session's maildrop lock, so another session may hold the maildrop
    /// now: tells the client and ends the session without UPDATE. Only valid after login.
    pub fn maildrop_lost(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        self.expect("maildrop_lost", self.is_logged_in())?;
        self.close_temporarily(out, Text::MaildropLost, EndReason::MaildropLost);
        Ok(())
    }

    /// An administrator ended the session: `-ERR [SYS/TEMP]`, and nothing is deleted (the
    /// driver drops the maildrop without committing).
    pub fn kicked(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        self.expect("kicked", self.is_logged_in())?;
        self.close_temporarily(out, Text::Kicked, EndReason::Kicked);
        Ok(())
    }

    /// Abandons any pending request, answers `-ERR [SYS/TEMP] text` and ends the session.
    fn close_temporarily(&mut self, out: &mut Vec<u8>, text: Text<'_>, why: EndReason) {
        self.pending = Pending::None;
        err(out, Some(ResponseCode::SysTemp), self.lang.text(text));
        self.phase = Phase::Closed(why);
    }
}

/// Validates `RETR n` / `TOP n lines` against the snapshot and asks the driver for the message.
fn request_message(
    snap: &Snapshot,
    pending: &mut Pending,
    out: &mut Vec<u8>,
    lang: Language,
    n: MessageNumber,
    body_lines: Option<u64>,
) -> Option<Event> {
    match snap.visible(n) {
        Ok(index) => {
            let request = MessageRequest {
                index,
                size: snap.messages[index].size,
                body_lines,
            };
            *pending = Pending::Message(request);
            Some(Event::SendMessage(request))
        }
        Err(text) => {
            err(out, None, lang.text(text));
            None
        }
    }
}

enum Input {
    Command(Command),
    Sasl(Result<Secret<Vec<u8>>, SaslLineError>),
}

enum LineError {
    TooLong,
    /// The error, and the keyword if the line starts with a known command.
    Parse(ParseError, Option<&'static str>),
}

enum SaslLineError {
    Cancelled,
    Invalid,
}

fn is_auth(line: &[u8]) -> bool {
    line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"AUTH ")
}

fn decode_sasl_line(line: &[u8]) -> Result<Secret<Vec<u8>>, SaslLineError> {
    if line == b"*" {
        return Err(SaslLineError::Cancelled);
    }
    decode_sasl(line).map_err(|()| SaslLineError::Invalid)
}

/// Decodes a base64 SASL payload; `=` alone is the empty response (RFC 4422 section 3.3).
fn decode_sasl(data: &[u8]) -> Result<Secret<Vec<u8>>, ()> {
    if data == b"=" {
        return Ok(Secret::new(Vec::new()));
    }
    BASE64.decode(data).map(Secret::new).map_err(|_| ())
}

fn write_line(out: &mut Vec<u8>, args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = out.write_fmt(args);
    out.extend_from_slice(b"\r\n");
}
