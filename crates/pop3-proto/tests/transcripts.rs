//! Transcript tests: the RFC example dialogues and Poplar's own rules, replayed byte for byte
//! against the session state machine with an in-memory driver.

#![allow(clippy::unwrap_used, missing_docs)]

use pop3_proto::{
    AuthFailure, Capabilities, CommitFailure, Credentials, Envelope, Event, Expire,
    MaildropFailure, Mechanism, MessageMeta, Progress, ServerSession, SessionConfig, Tls,
    canonical_size,
};
use std::sync::Arc;

/// A driver that answers the session's events from memory.
struct Harness {
    session: ServerSession,
    users: Vec<(&'static str, &'static str)>,
    messages: Vec<(Vec<u8>, String)>,
    locked: bool,
    chunk: usize,
    committed: Option<Vec<usize>>,
    closed: bool,
    tls_started: usize,
    session_mechanisms: Vec<Mechanism>,
    envelopes: Vec<Option<Envelope>>,
}

impl Harness {
    fn new(config: SessionConfig) -> Self {
        Self {
            session: ServerSession::new(config),
            users: vec![("mrose", "tanstaaf"), ("alice", "secret word")],
            messages: Vec::new(),
            locked: false,
            chunk: 4096,
            committed: None,
            closed: false,
            tls_started: 0,
            session_mechanisms: vec![Mechanism::plaintext("PLAIN")],
            envelopes: Vec::new(),
        }
    }

    fn with_messages(mut self, messages: Vec<Vec<u8>>) -> Self {
        self.messages = messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| (m, format!("uid-{}", i + 1)))
            .collect();
        self
    }

    fn check(&self, user: &str, password: &[u8]) -> bool {
        self.users
            .iter()
            .any(|(u, p)| *u == user && p.as_bytes() == password)
    }

    /// Feeds `input`, answers events until the session wants input, returns what it wrote.
    fn send(&mut self, input: &[u8]) -> String {
        self.session.receive(input);
        let mut out = Vec::new();
        loop {
            match self.session.poll(&mut out).expect("poll") {
                Event::NeedInput => break,
                Event::Flush => {}
                Event::Close => {
                    self.closed = true;
                    break;
                }
                Event::Authenticate(Credentials::UserPass { user, password }) => {
                    if self.check(&user, password.expose()) {
                        self.session.auth_succeeded(user).unwrap();
                    } else {
                        self.session
                            .auth_failed(&mut out, AuthFailure::InvalidCredentials)
                            .unwrap();
                    }
                }
                Event::Authenticate(Credentials::Apop {
                    user,
                    timestamp,
                    digest,
                }) => {
                    // RFC 1939 section 7 test vector; the digest itself is checked in pop3-auth.
                    let good = user == "mrose"
                        && timestamp == "<1896.697170952@dbc.mtview.ca.us>"
                        && digest == "c4c9334bac560ecc979e58001b3e22fb";
                    if good {
                        self.session.auth_succeeded(user).unwrap();
                    } else {
                        self.session
                            .auth_failed(&mut out, AuthFailure::InvalidCredentials)
                            .unwrap();
                    }
                }
                Event::SaslStart {
                    mechanism,
                    initial_response,
                } => {
                    assert_eq!(mechanism, "PLAIN");
                    match initial_response {
                        Some(ir) => self.plain(&mut out, ir.expose()),
                        None => self.session.sasl_challenge(&mut out, b"").unwrap(),
                    }
                }
                Event::SaslResponse(data) => self.plain(&mut out, data.expose()),
                Event::SaslAbandoned => self.session.sasl_abandoned(&mut out).unwrap(),
                Event::OpenMaildrop { user } => {
                    if self.locked {
                        self.session
                            .maildrop_failed(&mut out, MaildropFailure::InUse)
                            .unwrap();
                    } else {
                        let metas = self
                            .messages
                            .iter()
                            .enumerate()
                            .map(|(i, (m, uidl))| MessageMeta {
                                size: canonical_size(m),
                                uidl: uidl.clone(),
                                envelope: self.envelopes.get(i).cloned().flatten().map(Box::new),
                            })
                            .collect();
                        self.session.maildrop_opened(&mut out, user, metas).unwrap();
                    }
                }
                Event::SendMessage(req) => {
                    let mut enc = self.session.message_start(&mut out).unwrap();
                    for piece in self.messages[req.index].0.chunks(self.chunk) {
                        if enc.encode(piece, &mut out) == Progress::Done {
                            break;
                        }
                    }
                    let n = self.session.message_end(&mut out, enc).unwrap();
                    if req.body_lines.is_none() {
                        assert_eq!(n, req.size);
                    }
                }
                Event::StartTls => {
                    self.tls_started += 1;
                    let mechanisms = self.session_mechanisms.clone();
                    self.session.tls_established(mechanisms).unwrap();
                }
                Event::Commit { deleted, .. } => {
                    self.committed = Some(deleted);
                    self.session.commit_done(&mut out, Ok(())).unwrap();
                }
            }
        }
        String::from_utf8(out).expect("utf8 output")
    }

    fn plain(&mut self, out: &mut Vec<u8>, data: &[u8]) {
        let parts: Vec<&[u8]> = data.split(|&b| b == 0).collect();
        match parts.as_slice() {
            [_, user, pass] if self.check(std::str::from_utf8(user).unwrap(), pass) => self
                .session
                .auth_succeeded(String::from_utf8(user.to_vec()).unwrap())
                .unwrap(),
            [_, _, _] => self
                .session
                .auth_failed(out, AuthFailure::InvalidCredentials)
                .unwrap(),
            _ => self
                .session
                .auth_failed(out, AuthFailure::Protocol)
                .unwrap(),
        }
    }

    /// Runs a transcript: consecutive `C:` lines are sent in one write (pipelined), then the
    /// following `S:` lines must be exactly what the server wrote.
    fn transcript(&mut self, script: &str) {
        let mut client = String::new();
        let mut expected = String::new();
        let mut first = true;
        let flush =
            |h: &mut Harness, client: &mut String, expected: &mut String, first: &mut bool| {
                if client.is_empty() && expected.is_empty() && !*first {
                    return;
                }
                let got = h.send(client.as_bytes());
                assert_eq!(got, *expected, "after sending {client:?}");
                client.clear();
                expected.clear();
                *first = false;
            };
        for line in script
            .lines()
            .map(str::trim_start)
            .filter(|l| !l.is_empty())
        {
            if let Some(c) = line.strip_prefix("C: ") {
                if !expected.is_empty() || first {
                    flush(self, &mut client, &mut expected, &mut first);
                }
                client.push_str(c);
                client.push_str("\r\n");
            } else if let Some(s) = line.strip_prefix("S: ") {
                expected.push_str(s);
                expected.push_str("\r\n");
            } else if line == "S:" {
                expected.push_str("\r\n");
            } else {
                panic!("bad transcript line {line:?}");
            }
        }
        flush(self, &mut client, &mut expected, &mut first);
    }
}

fn plaintext_ok() -> SessionConfig {
    SessionConfig {
        plaintext_without_tls: true,
        ..SessionConfig::default()
    }
}

/// A message whose canonical size is exactly `size` octets.
fn message_of_size(size: usize, tag: &str) -> Vec<u8> {
    let mut m = format!("Subject: {tag}\r\n\r\n").into_bytes();
    while m.len() + 2 < size {
        m.push(b'x');
    }
    m.extend_from_slice(b"\r\n");
    assert_eq!(m.len(), size);
    m
}

#[test]
fn rfc1939_section10_example_session() {
    let config = SessionConfig {
        apop_timestamp: Some("<1896.697170952@dbc.mtview.ca.us>".into()),
        ..plaintext_ok()
    };
    let m1 = message_of_size(120, "one");
    let m2 = message_of_size(200, "two");
    let mut h = Harness::new(config).with_messages(vec![m1.clone(), m2.clone()]);
    h.transcript(
        "S: +OK Poplar POP3 server ready <1896.697170952@dbc.mtview.ca.us>
         C: APOP mrose c4c9334bac560ecc979e58001b3e22fb
         S: +OK Logged in, maildrop has 2 messages (320 octets)
         C: STAT
         S: +OK 2 320
         C: LIST
         S: +OK 2 messages (320 octets)
         S: 1 120
         S: 2 200
         S: .",
    );
    let got = h.send(b"RETR 1\r\n");
    assert_eq!(
        got,
        format!("+OK 120 octets\r\n{}.\r\n", String::from_utf8(m1).unwrap())
    );
    h.transcript(
        "C: DELE 1
         S: +OK Message 1 deleted",
    );
    let got = h.send(b"RETR 2\r\n");
    assert_eq!(
        got,
        format!("+OK 200 octets\r\n{}.\r\n", String::from_utf8(m2).unwrap())
    );
    h.transcript(
        "C: DELE 2
         S: +OK Message 2 deleted
         C: QUIT
         S: +OK Poplar POP3 server signing off (maildrop empty)",
    );
    assert!(h.closed);
    assert_eq!(h.committed, Some(vec![0, 1]));
}

#[test]
fn rfc1939_command_examples() {
    let mut h = Harness::new(plaintext_ok())
        .with_messages(vec![message_of_size(120, "a"), message_of_size(200, "b")]);
    h.transcript(
        "S: +OK Poplar POP3 server ready
         C: USER mrose
         S: +OK Send your password
         C: PASS secret
         S: -ERR [AUTH] Authentication failed
         C: PASS tanstaaf
         S: -ERR Send USER first
         C: USER mrose
         S: +OK Send your password
         C: PASS tanstaaf
         S: +OK Logged in, maildrop has 2 messages (320 octets)
         C: LIST 2
         S: +OK 2 200
         C: LIST 3
         S: -ERR No such message, only 2 messages in maildrop
         C: UIDL
         S: +OK Unique-id listing follows
         S: 1 uid-1
         S: 2 uid-2
         S: .
         C: UIDL 2
         S: +OK 2 uid-2
         C: UIDL 3
         S: -ERR No such message, only 2 messages in maildrop
         C: TOP 100 3
         S: -ERR No such message, only 2 messages in maildrop
         C: DELE 1
         S: +OK Message 1 deleted
         C: DELE 1
         S: -ERR Message 1 already deleted
         C: RETR 1
         S: -ERR Message 1 is deleted
         C: LIST 1
         S: -ERR Message 1 is deleted
         C: STAT
         S: +OK 1 200
         C: LIST
         S: +OK 1 message (200 octets)
         S: 2 200
         S: .
         C: NOOP
         S: +OK
         C: RSET
         S: +OK Maildrop has 2 messages (320 octets)
         C: STAT
         S: +OK 2 320
         C: QUIT
         S: +OK Poplar POP3 server signing off (2 messages left)",
    );
    assert_eq!(h.committed, Some(vec![]));
}

#[test]
fn top_sends_header_and_body_lines() {
    let msg = b"From: a\r\nSubject: t\r\n\r\nl1\r\n.l2\r\nl3\r\n".to_vec();
    let mut h = Harness::new(plaintext_ok()).with_messages(vec![msg]);
    h.send(b"USER mrose\r\nPASS tanstaaf\r\n");
    h.transcript(
        "C: TOP 1 2
         S: +OK Top of message follows
         S: From: a
         S: Subject: t
         S:
         S: l1
         S: ..l2
         S: .
         C: TOP 1 0
         S: +OK Top of message follows
         S: From: a
         S: Subject: t
         S:
         S: .
         C: TOP 1 99999999999999999999
         S: +OK Top of message follows
         S: From: a
         S: Subject: t
         S:
         S: l1
         S: ..l2
         S: l3
         S: .
         C: TOP 1 -1
         S: -ERR Invalid number",
    );
}

#[test]
fn pipelined_commands_are_answered_in_order_in_one_batch() {
    let mut h = Harness::new(plaintext_ok())
        .with_messages(vec![message_of_size(50, "a"), message_of_size(60, "b")]);
    h.send(b"");
    let got = h.send(
        b"USER mrose\r\nPASS tanstaaf\r\nSTAT\r\nLAST\r\nUIDL 1\r\nDELE 2\r\nSTAT\r\nQUIT\r\n",
    );
    assert_eq!(
        got,
        "+OK Send your password\r\n\
         +OK Logged in, maildrop has 2 messages (110 octets)\r\n\
         +OK 2 110\r\n\
         -ERR Unknown command\r\n\
         +OK 1 uid-1\r\n\
         +OK Message 2 deleted\r\n\
         +OK 1 50\r\n\
         +OK Poplar POP3 server signing off (1 message left)\r\n"
    );
    assert_eq!(h.committed, Some(vec![1]));
}

#[test]
fn any_chunking_of_the_input_gives_the_same_output() {
    let messages = vec![
        b"Subject: a\n\n.leading dot\n.\nno final newline".to_vec(),
        vec![b'x'; 5000],
        Vec::new(),
    ];
    let input: &[u8] = b"CAPA\r\nUSER alice\r\nPASS secret word\r\nSTAT\nLIST\r\nUIDL\r\n\
        RETR 1\r\nTOP 1 1\r\nRETR 2\r\nRETR 3\r\nLAST\r\nDELE 1\r\nRSET\r\nDELE 3\r\nQUIT\r\n";
    let reference = {
        let mut h = Harness::new(plaintext_ok()).with_messages(messages.clone());
        h.send(input)
    };
    assert!(reference.ends_with("+OK Poplar POP3 server signing off (2 messages left)\r\n"));
    let mut size = 1;
    while size <= 512 {
        let mut h = Harness::new(plaintext_ok()).with_messages(messages.clone());
        h.chunk = size;
        let mut got = String::new();
        for piece in input.chunks(size) {
            got.push_str(&h.send(piece));
        }
        assert_eq!(got, reference, "chunk size {size}");
        assert_eq!(h.committed, Some(vec![2]));
        size *= 2;
    }
}

#[test]
fn capa_before_and_after_login() {
    let caps = Capabilities {
        expire: Expire::Days(30),
        login_delay: 300,
        implementation: "Poplar 9.9".into(),
        ..Capabilities::default()
    };
    let config = SessionConfig {
        capabilities: Arc::new(caps),
        tls: Tls::Available,
        ..plaintext_ok()
    };
    let mut h = Harness::new(config);
    h.transcript(
        "S: +OK Poplar POP3 server ready
         C: CAPA
         S: +OK Capability list follows
         S: TOP
         S: UIDL
         S: RESP-CODES
         S: AUTH-RESP-CODE
         S: PIPELINING
         S: USER
         S: SASL PLAIN
         S: STLS
         S: EXPIRE 30
         S: LOGIN-DELAY 300
         S: UTF8 USER
         S: LANG
         S: .
         C: USER mrose
         S: +OK Send your password
         C: PASS tanstaaf
         S: +OK Logged in, maildrop has 0 messages (0 octets)
         C: CAPA
         S: +OK Capability list follows
         S: TOP
         S: UIDL
         S: RESP-CODES
         S: AUTH-RESP-CODE
         S: PIPELINING
         S: EXPIRE 30
         S: LOGIN-DELAY 300
         S: UTF8 USER
         S: LANG
         S: IMPLEMENTATION Poplar 9.9
         S: .
         C: STLS
         S: -ERR STLS is not valid after login",
    );
}

#[test]
fn plaintext_refused_on_insecure_connection_until_stls() {
    let config = SessionConfig {
        tls: Tls::Available,
        ..SessionConfig::default()
    };
    let mut h = Harness::new(config);
    h.transcript(
        "S: +OK Poplar POP3 server ready
         C: CAPA
         S: +OK Capability list follows
         S: TOP
         S: UIDL
         S: RESP-CODES
         S: AUTH-RESP-CODE
         S: PIPELINING
         S: STLS
         S: EXPIRE NEVER
         S: UTF8 USER
         S: LANG
         S: .
         C: USER mrose
         S: -ERR [AUTH] Plaintext authentication disallowed on non-secure connections; use STLS first
         C: PASS tanstaaf
         S: -ERR Send USER first
         C: AUTH PLAIN AG1yb3NlAHRhbnN0YWFm
         S: -ERR [AUTH] Plaintext authentication disallowed on non-secure connections; use STLS first
         C: AUTH
         S: +OK Supported mechanisms follow
         S: .
         C: STLS
         S: +OK Begin TLS negotiation
         C: CAPA
         S: +OK Capability list follows
         S: TOP
         S: UIDL
         S: RESP-CODES
         S: AUTH-RESP-CODE
         S: PIPELINING
         S: USER
         S: SASL PLAIN
         S: EXPIRE NEVER
         S: UTF8 USER
         S: LANG
         S: .
         C: STLS
         S: -ERR TLS is already active
         C: AUTH PLAIN AG1yb3NlAHRhbnN0YWFm
         S: +OK Logged in, maildrop has 0 messages (0 octets)",
    );
    assert_eq!(h.tls_started, 1);
}

#[test]
fn plaintext_pipelined_after_stls_is_never_executed() {
    let config = SessionConfig {
        tls: Tls::Available,
        ..plaintext_ok()
    };
    let mut h = Harness::new(config);
    h.send(b"");
    // The CVE-2011-0411 pattern: commands injected in the same packet as STLS.
    let got = h.send(b"USER mrose\r\nSTLS\r\nUSER mrose\r\nPASS tanstaaf\r\n");
    assert_eq!(
        got,
        "+OK Send your password\r\n+OK Begin TLS negotiation\r\n"
    );
    assert_eq!(h.session.buffered_input(), 0);
    // The USER given before STLS is forgotten (RFC 2595 section 4).
    assert_eq!(h.send(b"PASS tanstaaf\r\n"), "-ERR Send USER first\r\n");
    assert!(!h.session.is_logged_in());
}

#[test]
fn stls_without_tls_configured() {
    let mut h = Harness::new(plaintext_ok());
    h.transcript(
        "S: +OK Poplar POP3 server ready
         C: STLS
         S: -ERR TLS is not available on this server",
    );
}

#[test]
fn sasl_plain_exchanges() {
    let mut h = Harness::new(plaintext_ok());
    h.transcript(
        "S: +OK Poplar POP3 server ready
         C: AUTH
         S: +OK Supported mechanisms follow
         S: PLAIN
         S: .
         C: AUTH CRAM-MD5
         S: -ERR Unsupported authentication mechanism
         C: AUTH PLAIN
         S: + 
         C: *
         S: -ERR Authentication cancelled
         C: AUTH PLAIN
         S: + 
         C: not base64!
         S: -ERR Invalid base64 in the SASL response
         C: AUTH PLAIN %%%
         S: -ERR Invalid base64 in the initial response
         C: AUTH PLAIN AG1yb3NlAHdyb25n
         S: -ERR [AUTH] Authentication failed
         C: AUTH PLAIN =
         S: -ERR Authentication exchange failed
         C: AUTH PLAIN
         S: + 
         C: AG1yb3NlAHRhbnN0YWFm
         S: +OK Logged in, maildrop has 0 messages (0 octets)
         C: AUTH PLAIN AG1yb3NlAHRhbnN0YWFm
         S: -ERR AUTH is not valid after login",
    );
    assert_eq!(h.session.stats().auth_failures, 5);
}

#[test]
fn long_sasl_lines_are_accepted_up_to_their_own_cap() {
    let config = SessionConfig {
        max_sasl_line: 1024,
        ..plaintext_ok()
    };
    let mut h = Harness::new(config);
    h.send(b"");
    let ir = "A".repeat(600);
    // A 600-character initial response is over 255 octets but within the SASL cap.
    let got = h.send(format!("AUTH PLAIN {ir}\r\n").as_bytes());
    assert_eq!(got, "-ERR Authentication exchange failed\r\n");
    // Other commands keep the RFC 2449 limit.
    let got = h.send(format!("USER {}\r\n", "a".repeat(300)).as_bytes());
    assert_eq!(got, "-ERR Line too long\r\n");
    let got = h.send(format!("AUTH PLAIN {}\r\n", "A".repeat(2000)).as_bytes());
    assert_eq!(got, "-ERR Line too long\r\n");
    assert_eq!(
        h.send(b"NOOP\r\n"),
        "-ERR NOOP is not valid before login\r\n"
    );
}

#[test]
fn a_command_in_the_wrong_state_gets_the_state_error_whatever_its_arguments() {
    let mut h = Harness::new(plaintext_ok());
    h.transcript(
        "S: +OK Poplar POP3 server ready
         C: RETR x
         S: -ERR RETR is not valid before login
         C: TOP 1
         S: -ERR TOP is not valid before login
         C: USER mrose
         S: +OK Send your password
         C: PASS tanstaaf
         S: +OK Logged in, maildrop has 0 messages (0 octets)
         C: APOP a b
         S: -ERR APOP is not valid after login
         C: USER
         S: -ERR USER is not valid after login
         C: RETR x
         S: -ERR Invalid number",
    );
}

#[test]
fn maildrop_in_use() {
    let mut h = Harness::new(plaintext_ok());
    h.locked = true;
    h.transcript(
        "S: +OK Poplar POP3 server ready
         C: USER mrose
         S: +OK Send your password
         C: PASS tanstaaf
         S: -ERR [IN-USE] Maildrop is locked by another POP3 session; try again later
         C: STAT
         S: -ERR STAT is not valid before login",
    );
    h.locked = false;
    h.transcript(
        "C: USER mrose
         S: +OK Send your password
         C: PASS tanstaaf
         S: +OK Logged in, maildrop has 0 messages (0 octets)",
    );
}

#[test]
fn bad_commands_are_tolerated_up_to_the_limit() {
    let config = SessionConfig {
        max_bad_commands: 3,
        ..plaintext_ok()
    };
    let mut h = Harness::new(config);
    h.transcript(
        "S: +OK Poplar POP3 server ready
         C: LAST
         S: -ERR Unknown command
         C: STAT
         S: -ERR STAT is not valid before login
         C: CAPA
         S: +OK Capability list follows
         S: TOP
         S: UIDL
         S: RESP-CODES
         S: AUTH-RESP-CODE
         S: PIPELINING
         S: USER
         S: SASL PLAIN
         S: EXPIRE NEVER
         S: UTF8 USER
         S: LANG
         S: .
         C: NOOP
         S: -ERR Too many invalid commands, closing connection",
    );
    assert!(h.closed);
    // Nothing after the close is processed.
    assert_eq!(h.send(b"QUIT\r\n"), "");
}

#[test]
fn noop_before_login_counts_as_bad_but_capa_does_not() {
    let config = SessionConfig {
        max_bad_commands: 2,
        ..plaintext_ok()
    };
    let mut h = Harness::new(config);
    h.send(b"");
    for _ in 0..5 {
        assert!(
            h.send(b"CAPA\r\n")
                .starts_with("+OK Capability list follows")
        );
    }
    assert_eq!(h.send(b"LAST\r\n"), "-ERR Unknown command\r\n");
    assert!(!h.closed);
}

#[test]
fn numeric_edges() {
    let mut h = Harness::new(plaintext_ok()).with_messages(vec![message_of_size(20, "a")]);
    h.send(b"USER mrose\r\nPASS tanstaaf\r\n");
    h.transcript(
        "C: RETR 0
         S: -ERR No such message
         C: RETR 2
         S: -ERR No such message, only 1 message in maildrop
         C: RETR 4294967296
         S: -ERR No such message
         C: RETR 99999999999999999999
         S: -ERR No such message
         C: DELE -1
         S: -ERR Invalid number
         C: LIST 1 1
         S: -ERR Too many arguments
         C: list 1
         S: +OK 1 20",
    );
}

#[test]
fn nul_in_a_command_refuses_the_whole_line() {
    let mut h = Harness::new(plaintext_ok());
    h.send(b"");
    assert_eq!(
        h.send(b"USER mrose\0evil\r\n"),
        "-ERR Command contains a NUL octet\r\n"
    );
    assert_eq!(h.send(b"PASS tanstaaf\r\n"), "-ERR Send USER first\r\n");
}

#[test]
fn utf8_command_and_names() {
    let mut h = Harness::new(plaintext_ok());
    h.transcript(
        "S: +OK Poplar POP3 server ready
         C: UTF8
         S: +OK UTF8 enabled
         C: USER jürgen
         S: +OK Send your password",
    );
    assert!(h.session.utf8_enabled());
}

#[test]
fn quit_before_login_does_not_commit() {
    let mut h = Harness::new(plaintext_ok());
    h.transcript(
        "S: +OK Poplar POP3 server ready
         C: QUIT
         S: +OK Poplar POP3 server signing off",
    );
    assert!(h.closed);
    assert_eq!(h.committed, None);
}

#[test]
fn timeout_ends_without_update_or_response() {
    let mut h = Harness::new(plaintext_ok()).with_messages(vec![message_of_size(20, "a")]);
    h.send(b"USER mrose\r\nPASS tanstaaf\r\nDELE 1\r\n");
    h.session.timed_out();
    let mut out = Vec::new();
    assert!(matches!(h.session.poll(&mut out).unwrap(), Event::Close));
    assert!(out.is_empty());
    assert_eq!(h.committed, None);
}

#[test]
fn commit_failure_is_reported_as_sys_temp() {
    let mut session = ServerSession::new(plaintext_ok());
    let mut out = Vec::new();
    session.receive(b"USER a\r\nPASS b\r\n");
    assert!(matches!(
        session.poll(&mut out).unwrap(),
        Event::Authenticate(_)
    ));
    session.auth_succeeded("a".into()).unwrap();
    assert!(matches!(
        session.poll(&mut out).unwrap(),
        Event::OpenMaildrop { .. }
    ));
    let meta = MessageMeta {
        size: 3,
        uidl: "x".into(),
        envelope: None,
    };
    session
        .maildrop_opened(&mut out, "a".into(), vec![meta])
        .unwrap();
    session.receive(b"DELE 1\r\nQUIT\r\n");
    out.clear();
    let Event::Commit { deleted, .. } = session.poll(&mut out).unwrap() else {
        panic!()
    };
    assert_eq!(deleted, vec![0]);
    session
        .commit_done(&mut out, Err(CommitFailure::Partial))
        .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "+OK Message 1 deleted\r\n-ERR [SYS/TEMP] Some deleted messages were not removed; they will be offered again\r\n"
    );
    assert!(!session.stats().committed);
}

#[test]
fn answering_out_of_turn_is_an_error_not_a_panic() {
    let mut session = ServerSession::new(plaintext_ok());
    let mut out = Vec::new();
    assert!(session.auth_succeeded("x".into()).is_err());
    assert!(session.message_start(&mut out).is_err());
    assert!(session.commit_done(&mut out, Ok(())).is_err());
    session.receive(b"USER a\r\nPASS b\r\n");
    assert!(matches!(
        session.poll(&mut out).unwrap(),
        Event::Authenticate(_)
    ));
    assert!(session.poll(&mut out).is_err());
    assert!(
        session
            .maildrop_opened(&mut out, "a".into(), vec![])
            .is_err()
    );
}

#[test]
fn auth_failure_texts_use_truthful_codes() {
    for (why, text) in [
        (
            AuthFailure::Temporary,
            "-ERR [SYS/TEMP] Authentication is temporarily unavailable; try again later\r\n",
        ),
        (
            AuthFailure::LoginDelay,
            "-ERR [LOGIN-DELAY] Logged in too recently; wait before logging in again\r\n",
        ),
    ] {
        let mut session = ServerSession::new(plaintext_ok());
        let mut out = Vec::new();
        session.receive(b"USER a\r\nPASS b\r\n");
        assert!(matches!(
            session.poll(&mut out).unwrap(),
            Event::Authenticate(_)
        ));
        out.clear();
        session.auth_failed(&mut out, why).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), text);
    }
}

#[test]
fn plaintext_mechanisms_hidden_but_protected_ones_listed() {
    let config = SessionConfig {
        mechanisms: vec![
            Mechanism::plaintext("PLAIN"),
            Mechanism::protected("SCRAM-SHA-256"),
        ],
        ..SessionConfig::default()
    };
    let mut h = Harness::new(config);
    let got = h.send(b"CAPA\r\n");
    assert!(got.contains("\r\nSASL SCRAM-SHA-256\r\n"), "{got}");
    assert!(!got.contains("\r\nUSER\r\n"));
}

#[test]
fn expire_zero_removes_retrieved_messages_at_quit() {
    let caps = Capabilities {
        expire: Expire::Days(0),
        ..Capabilities::default()
    };
    let config = SessionConfig {
        capabilities: Arc::new(caps),
        ..plaintext_ok()
    };
    let mut h = Harness::new(config).with_messages(vec![
        message_of_size(30, "a"),
        message_of_size(30, "b"),
        message_of_size(30, "c"),
    ]);
    h.send(b"USER mrose\r\nPASS tanstaaf\r\nRETR 1\r\nTOP 2 0\r\nDELE 3\r\n");
    assert_eq!(
        h.send(b"QUIT\r\n"),
        "+OK Poplar POP3 server signing off (1 message left)\r\n"
    );
    assert_eq!(h.committed, Some(vec![0, 2]));
}

#[test]
fn pipelined_bursts_ask_for_a_flush_instead_of_growing_output() {
    let messages = (0..2000)
        .map(|i| message_of_size(40, &i.to_string()))
        .collect();
    let mut h = Harness::new(plaintext_ok()).with_messages(messages);
    h.send(b"USER mrose\r\nPASS tanstaaf\r\n");
    h.session.receive(&b"LIST\r\n".repeat(200));
    let mut out = Vec::new();
    let mut flushes = 0;
    let mut largest = 0;
    loop {
        match h.session.poll(&mut out).unwrap() {
            Event::Flush => {
                flushes += 1;
                largest = largest.max(out.len());
                out.clear();
            }
            Event::NeedInput => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(flushes > 10);
    // One LIST of 2000 messages is ~20 KB, so a flush is requested within one response of 64 KiB.
    assert!(largest < 64 * 1024 + 25_000, "{largest}");
}

#[test]
fn login_delay_per_user_is_tagged_before_and_exact_after_login() {
    let caps = Capabilities {
        login_delay: 300,
        login_delay_per_user: true,
        ..Capabilities::default()
    };
    let config = SessionConfig {
        capabilities: Arc::new(caps),
        ..plaintext_ok()
    };
    let mut h = Harness::new(config);
    let before = h.send(b"CAPA\r\n");
    assert!(before.contains("\r\nLOGIN-DELAY 300 USER\r\n"), "{before}");
    h.send(b"USER mrose\r\nPASS tanstaaf\r\n");
    h.session.set_user_login_delay(900);
    let after = h.send(b"CAPA\r\n");
    assert!(after.contains("\r\nLOGIN-DELAY 900\r\n"), "{after}");
}

/// The client side of this crate and the server side, run against each other in memory: the
/// client session writes a pipelined batch as `poplar fetch` sends it and says which replies
/// carry a body; the replies, parsed with `Status`, `ServerCapabilities` and the `Unstuffer`,
/// give back every message in its canonical form.
#[test]
fn client_pieces_read_the_servers_pipelined_answers() {
    use pop3_proto::client::{
        ClientPhase, ClientSession, Follows, ServerCapabilities, Status, Unstuffer,
    };
    let messages = vec![
        b"Subject: a\r\n\r\n.dot\r\n..two\r\n.\r\nend".to_vec(),
        b"Subject: b\n\nbare\nlf\n".to_vec(),
    ];
    let mut h = Harness::new(plaintext_ok()).with_messages(messages.clone());
    let mut client = ClientSession::new();
    let greeting = h.send(b"");
    assert_eq!(
        client.reply(&Status::parse(greeting.as_bytes()).unwrap()),
        Ok(Follows::Nothing)
    );
    let mut batch = Vec::new();
    for c in ["USER alice", "PASS secret word"] {
        let command = pop3_proto::parse_command(c.as_bytes()).unwrap();
        client.command(&command, &mut batch).unwrap();
    }
    let login = h.send(&batch);
    for line in login.lines() {
        client
            .reply(&Status::parse(line.as_bytes()).unwrap())
            .unwrap();
    }
    assert_eq!(client.phase(), ClientPhase::Transaction);
    let mut batch = Vec::new();
    for c in ["CAPA", "UIDL", "LIST", "RETR 1", "RETR 2", "DELE 1", "QUIT"] {
        let command = pop3_proto::parse_command(c.as_bytes()).unwrap();
        client.command(&command, &mut batch).unwrap();
    }
    let wire = h.send(&batch).into_bytes();
    let mut rest = &wire[..];
    let mut status = |rest: &mut &[u8]| {
        let end = rest.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        let s = Status::parse(&rest[..end]).unwrap();
        *rest = &rest[end..];
        let follows = client.reply(&s).unwrap();
        (s.ok, follows)
    };
    let body = |rest: &mut &[u8]| {
        let mut content = Vec::new();
        let used = Unstuffer::default()
            .feed(rest, |c| content.extend_from_slice(c))
            .unwrap();
        *rest = &rest[used..];
        content
    };
    assert_eq!(status(&mut rest), (true, Follows::Body));
    let capa = String::from_utf8(body(&mut rest)).unwrap();
    let caps = ServerCapabilities::parse(capa.lines());
    assert!(caps.uidl && caps.pipelining && caps.top);
    assert_eq!(status(&mut rest), (true, Follows::Body));
    assert_eq!(
        String::from_utf8(body(&mut rest)).unwrap(),
        "1 uid-1\r\n2 uid-2\r\n"
    );
    assert_eq!(status(&mut rest), (true, Follows::Body));
    let sizes: Vec<u64> = String::from_utf8(body(&mut rest))
        .unwrap()
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(status(&mut rest), (true, Follows::Body));
        let got = body(&mut rest);
        assert_eq!(got.len() as u64, sizes[i], "LIST size is what RETR sends");
        assert_eq!(got.len() as u64, canonical_size(m));
    }
    assert_eq!(status(&mut rest), (true, Follows::Nothing), "DELE");
    assert_eq!(status(&mut rest), (true, Follows::End), "QUIT");
    assert!(rest.is_empty());
    assert_eq!(h.committed, Some(vec![0]));
}

/// RFC 6856 section 4: LANG lists the languages, switches every text (never a response code or
/// protocol data), refuses what it cannot match and keeps the language it had; `*` is the
/// configured default; STLS forgets the choice like everything else said before TLS.
#[test]
fn lang_switches_every_text_and_nothing_else() {
    let m1 = message_of_size(120, "one");
    let mut h = Harness::new(plaintext_ok()).with_messages(vec![m1]);
    h.transcript(
        "S: +OK Poplar POP3 server ready
         C: LANG
         S: +OK Language listing follows
         S: en English
         S: bg Български
         S: .
         C: LANG bg-BG
         S: +OK bg Отговорите вече са на български
         C: LANG de
         S: -ERR Няма език, отговарящ на de; LANG показва наличните езици
         C: LANG en_US
         S: -ERR Това не е езиков етикет; задайте например bg или en
         C: USER mrose
         S: +OK Изпратете паролата си
         C: PASS wrong
         S: -ERR [AUTH] Неуспешно удостоверяване
         C: USER mrose
         S: +OK Изпратете паролата си
         C: PASS tanstaaf
         S: +OK Влязохте, в пощенската кутия има 1 съобщение (120 октета)
         C: STAT
         S: +OK 1 120
         C: LIST 1
         S: +OK 1 120
         C: LIST 2
         S: -ERR Няма такова съобщение, в пощенската кутия има само 1 съобщение
         C: DELE 1
         S: +OK Съобщение 1 е изтрито
         C: RETR 1
         S: -ERR Съобщение 1 е маркирано за изтриване
         C: USER x
         S: -ERR USER не е валидна команда след влизане
         C: LANG EN
         S: +OK en Responses are now in English
         C: RSET
         S: +OK Maildrop has 1 message (120 octets)
         C: LANG *
         S: +OK en Responses are now in English
         C: QUIT
         S: +OK Poplar POP3 server signing off (1 message left)",
    );
}

#[test]
fn the_configured_language_greets_and_lang_star_returns_to_it() {
    let config = SessionConfig {
        language: pop3_proto::Language::Bulgarian,
        ..plaintext_ok()
    };
    let mut h = Harness::new(config);
    h.transcript(
        "S: +OK POP3 сървърът Poplar е готов
         C: LANG en
         S: +OK en Responses are now in English
         C: NOOP
         S: -ERR NOOP is not valid before login
         C: LANG *
         S: +OK bg Отговорите вече са на български
         C: QUIT
         S: +OK POP3 сървърът Poplar приключва",
    );
}

/// Demon's SDPS `*ENV n`: the number, the UIDL, the envelope sender (empty for a bounce) and
/// the recipient, as fetchmail (status line then four) and getmail (`lines[2]`, `lines[3]`)
/// read it; `-ERR` for deleted, unknown or envelope-less messages and before login.
#[test]
fn sdps_env_reports_the_recorded_envelope() {
    let config = SessionConfig {
        capabilities: Arc::new(Capabilities {
            sdps: true,
            ..Capabilities::default()
        }),
        ..plaintext_ok()
    };
    let mut h = Harness::new(config).with_messages(vec![
        message_of_size(100, "one"),
        message_of_size(100, "two"),
        message_of_size(100, "three"),
    ]);
    h.envelopes = vec![
        Some(Envelope {
            sender: "carol@example.org".into(),
            recipient: "john@example.net".into(),
        }),
        Some(Envelope {
            sender: String::new(),
            recipient: ".odd@example.net".into(),
        }),
        None,
    ];
    h.transcript(
        "S: +OK Poplar POP3 server ready
         C: *ENV 1
         S: -ERR *ENV is not valid before login
         C: USER mrose
         S: +OK Send your password
         C: PASS tanstaaf
         S: +OK Logged in, maildrop has 3 messages (300 octets)
         C: *ENV 1
         S: +OK Envelope follows
         S: 1
         S: uid-1
         S: carol@example.org
         S: john@example.net
         S: .
         C: *env 2
         S: +OK Envelope follows
         S: 2
         S: uid-2
         S:
         S: ..odd@example.net
         S: .
         C: *ENV 3
         S: -ERR No envelope was recorded for message 3
         C: *ENV 4
         S: -ERR No such message, only 3 messages in maildrop
         C: DELE 1
         S: +OK Message 1 deleted
         C: *ENV 1
         S: -ERR Message 1 is deleted
         C: *ENV
         S: -ERR Missing argument
         C: CAPA
         S: +OK Capability list follows
         S: TOP
         S: UIDL
         S: RESP-CODES
         S: AUTH-RESP-CODE
         S: PIPELINING
         S: EXPIRE NEVER
         S: UTF8 USER
         S: LANG
         S: X-SDPS
         S: IMPLEMENTATION Poplar
         S: .",
    );
}
