//! The client side against any server: arbitrary bytes as the replies to a pipelined session
//! (greeting, login, CAPA, UIDL, LIST, RETR, DELE, QUIT) never panic the client session, the
//! status parser, the CAPA parser or the un-stuffer; and whatever the server's encoder sends,
//! split anywhere, the un-stuffer gives back exactly the message's canonical form.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pop3_proto::client::{ClientSession, Follows, ServerCapabilities, Status, Unstuffer};
use pop3_proto::{MessageEncoder, canonical_size};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split).max(1);

    // 1. The server's encoder and the client's un-stuffer are inverses.
    let mut wire = Vec::new();
    let mut enc = MessageEncoder::retr();
    enc.encode(rest, &mut wire);
    enc.finish(&mut wire);
    wire.extend_from_slice(b"+OK next");
    let mut u = Unstuffer::default();
    let mut content = Vec::new();
    let mut used = None;
    let mut offset = 0;
    for piece in wire.chunks(chunk) {
        if let Some(n) = u.feed(piece, |c| content.extend_from_slice(c)) {
            used = Some(offset + n);
            break;
        }
        offset += piece.len();
    }
    assert_eq!(used, Some(wire.len() - 8), "the terminator is found exactly");
    assert_eq!(content.len() as u64, canonical_size(rest));
    assert_eq!(u.octets(), content.len() as u64);

    // 2. Arbitrary replies to a pipelined session.
    let _ = ServerCapabilities::parse(String::from_utf8_lossy(rest).lines());
    let mut session = ClientSession::new();
    let mut out = Vec::new();
    for c in ["CAPA", "USER u", "PASS p", "UIDL", "LIST", "RETR 1", "DELE 1", "QUIT"] {
        // Commands that the phase does not allow yet are refused, never sent.
        let command = pop3_proto::parse_command(c.as_bytes()).expect("a valid command");
        let _ = session.command(&command, &mut out);
    }
    let mut input = rest;
    while !input.is_empty() {
        let Some(end) = input.iter().position(|&b| b == b'\n') else {
            break;
        };
        let line = &input[..=end];
        input = &input[end + 1..];
        if line.starts_with(b"+ ") {
            let _ = session.challenge();
            continue;
        }
        let Some(status) = Status::parse(line) else {
            continue;
        };
        match session.reply(&status) {
            Ok(Follows::Body) => {
                let mut u = Unstuffer::default();
                match u.feed(input, |_| {}) {
                    Some(n) => input = &input[n..],
                    None => break,
                }
            }
            Ok(Follows::End) | Err(_) => break,
            Ok(_) => {}
        }
    }
});
