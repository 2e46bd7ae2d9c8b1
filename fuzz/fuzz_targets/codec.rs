//! The multi-line encoder: what a client un-stuffs has exactly the canonical size, never holds a
//! bare LF or a lone ".", and TOP is a prefix of RETR; chunking never changes the bytes, and
//! RETR's span-copying path, its pass-through of unchanged chunks and TOP's line-by-line path
//! agree.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pop3_proto::{MessageEncoder, Progress, canonical_size};

fn encode(msg: &[u8], chunk: usize, lines: Option<u64>) -> Vec<u8> {
    let mut enc = match lines {
        Some(n) => MessageEncoder::top(n),
        None => MessageEncoder::retr(),
    };
    let mut out = Vec::new();
    for piece in msg.chunks(chunk) {
        if enc.encode(piece, &mut out) == Progress::Done {
            break;
        }
    }
    enc.finish(&mut out);
    out
}

fn unstuff(wire: &[u8]) -> Vec<u8> {
    assert!(wire.ends_with(b".\r\n"));
    let body = &wire[..wire.len() - 3];
    let mut out = Vec::new();
    for line in body.split_inclusive(|&b| b == b'\n') {
        assert!(line.ends_with(b"\r\n"), "bare LF on the wire");
        assert_ne!(line, b".\r\n", "terminator inside the body");
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}

/// RETR as the server sends it: chunks that need no change go out as they are.
fn passed_through(msg: &[u8], chunk: usize) -> Vec<u8> {
    let mut enc = MessageEncoder::retr();
    let mut out = Vec::new();
    for piece in msg.chunks(chunk) {
        if enc.pass_through(piece) {
            out.extend_from_slice(piece);
        } else {
            enc.encode(piece, &mut out);
        }
    }
    enc.finish(&mut out);
    out
}

fuzz_target!(|input: (u8, u8, &[u8])| {
    let (chunk, lines, msg) = input;
    let chunk = usize::from(chunk).max(1);
    let whole = encode(msg, chunk, None);
    assert_eq!(whole, encode(msg, msg.len().max(1), None));
    assert_eq!(whole, passed_through(msg, chunk));
    assert_eq!(whole, encode(msg, chunk, Some(u64::MAX)));
    let client = unstuff(&whole);
    assert_eq!(client.len() as u64, canonical_size(msg));
    let top = unstuff(&encode(msg, chunk, Some(u64::from(lines))));
    assert!(client.starts_with(&top));
});
