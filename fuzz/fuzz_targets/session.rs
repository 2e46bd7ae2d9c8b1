//! The whole server session state machine fed arbitrary client bytes in arbitrary chunks, with
//! a driver answering every event from memory: no panic, no misuse error, bounded output per
//! command, and the session always either waits for input or closes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pop3_proto::{
    AuthFailure, Credentials, Event, MessageMeta, Progress, ServerSession, SessionConfig, Tls,
    canonical_size,
};

const MESSAGES: [&[u8]; 3] = [b"Subject: a\r\n\r\nbody\r\n.\r\n", b"x", b""];

fuzz_target!(|input: (u8, bool, &[u8])| {
    let (chunk, tls, data) = input;
    let config = SessionConfig {
        tls: if tls { Tls::Available } else { Tls::Unavailable },
        plaintext_without_tls: true,
        apop_timestamp: Some("<1.2.3@fuzz>".into()),
        ..SessionConfig::default()
    };
    let mut session = ServerSession::new(config);
    let mut out = Vec::new();
    for piece in data.chunks(usize::from(chunk).max(1)) {
        session.receive(piece);
        loop {
            out.clear();
            let event = session.poll(&mut out).expect("the driver answered every event");
            match event {
                Event::NeedInput | Event::Close => break,
                Event::Flush => {}
                Event::Authenticate(Credentials::UserPass { password, .. }) => {
                    if password.expose() == b"ok" {
                        session.auth_succeeded("user".into()).unwrap();
                    } else {
                        session.auth_failed(&mut out, AuthFailure::InvalidCredentials).unwrap();
                    }
                }
                Event::Authenticate(Credentials::Apop { .. }) => {
                    session.auth_failed(&mut out, AuthFailure::InvalidCredentials).unwrap();
                }
                Event::SaslStart { initial_response: None, .. } => {
                    session.sasl_challenge(&mut out, b"").unwrap();
                }
                Event::SaslStart { initial_response: Some(r), .. } | Event::SaslResponse(r) => {
                    if r.expose() == b"\0user\0ok" {
                        session.auth_succeeded("user".into()).unwrap();
                    } else {
                        session.auth_failed(&mut out, AuthFailure::Protocol).unwrap();
                    }
                }
                Event::SaslAbandoned => session.sasl_abandoned(&mut out).unwrap(),
                Event::OpenMaildrop { user } => {
                    let metas = MESSAGES
                        .iter()
                        .enumerate()
                        .map(|(i, m)| MessageMeta {
                            size: canonical_size(m),
                            uidl: format!("u{i}"),
                            // Every other message has an envelope, so *ENV takes both paths.
                            envelope: (i % 2 == 0).then(|| Box::new(pop3_proto::Envelope {
                                sender: "s@x".into(),
                                recipient: format!("r{i}@x"),
                            })),
                        })
                        .collect();
                    session.maildrop_opened(&mut out, user, metas).unwrap();
                }
                Event::SendMessage(req) => {
                    let mut enc = session.message_start(&mut out).unwrap();
                    if enc.encode(MESSAGES[req.index], &mut out) == Progress::More {}
                    let sent = session.message_end(&mut out, enc).unwrap();
                    if req.body_lines.is_none() {
                        assert_eq!(sent, req.size);
                    }
                }
                Event::StartTls => session.tls_established(vec![]).unwrap(),
                Event::Commit { deleted, .. } => {
                    assert!(deleted.iter().all(|&i| i < MESSAGES.len()));
                    session.commit_done(&mut out, Ok(())).unwrap();
                }
            }
            // A status line is at most 512 octets (RFC 2449 section 4).
            if let Some(first) = out.split(|&b| b == b'\n').next() {
                assert!(first.len() < 512);
            }
        }
    }
});
