//! Micro-benchmarks of the codec, in bytes per second next to a plain copy of the same bytes:
//! the multi-line encoder on RETR's path (span copies) and on TOP's (line by line), the size
//! counter the store uses for messages without size hints, and the command parser.
//! Run with `cargo bench -p pop3-proto`.
#![allow(missing_docs, clippy::unwrap_used)]

use divan::counter::BytesCount;
use divan::{Bencher, black_box};
use pop3_proto::{MessageEncoder, SizeCounter, parse_command};

fn main() {
    divan::main();
}

/// A 1 MiB message of typical 72-octet CRLF lines, some starting with '.'.
fn message() -> Vec<u8> {
    let mut m = b"From: a@example.org\r\nSubject: benchmark\r\n\r\n".to_vec();
    let mut i = 0u32;
    while m.len() < 1 << 20 {
        let lead = if i.is_multiple_of(50) { "." } else { "" };
        m.extend_from_slice(
            format!("{lead}line {i:>8} of a message body, with some text to fill it up.\r\n")
                .as_bytes(),
        );
        i += 1;
    }
    m
}

/// Feeds the message in 256 KiB chunks, as the server reads it.
const CHUNK: usize = 256 * 1024;

#[divan::bench]
fn memcpy(bencher: Bencher<'_, '_>) {
    let msg = message();
    let mut out = Vec::with_capacity(msg.len() * 2);
    bencher.counter(BytesCount::of_slice(&msg)).bench_local(|| {
        out.clear();
        for chunk in msg.chunks(CHUNK) {
            out.extend_from_slice(black_box(chunk));
        }
        black_box(&out);
    });
}

/// Encodes the message with encoders made by `new`, chunk by chunk, into one buffer.
fn encode(bencher: Bencher<'_, '_>, new: fn() -> MessageEncoder) {
    let msg = message();
    let mut out = Vec::with_capacity(msg.len() * 2);
    bencher.counter(BytesCount::of_slice(&msg)).bench_local(|| {
        out.clear();
        let mut enc = new();
        for chunk in msg.chunks(CHUNK) {
            enc.encode(black_box(chunk), &mut out);
        }
        black_box(enc.finish(&mut out));
    });
}

#[divan::bench]
fn encode_retr(bencher: Bencher<'_, '_>) {
    encode(bencher, MessageEncoder::retr);
}

#[divan::bench]
fn encode_top_whole_message(bencher: Bencher<'_, '_>) {
    encode(bencher, || MessageEncoder::top(u64::MAX));
}

#[divan::bench]
fn size_counter(bencher: Bencher<'_, '_>) {
    let msg = message();
    bencher.counter(BytesCount::of_slice(&msg)).bench_local(|| {
        let mut c = SizeCounter::new();
        for chunk in msg.chunks(CHUNK) {
            c.update(black_box(chunk));
        }
        black_box(c.canonical_size())
    });
}

#[divan::bench]
fn parse_commands(bencher: Bencher<'_, '_>) {
    let lines: Vec<&[u8]> = vec![
        b"USER alice",
        b"PASS secret",
        b"STAT",
        b"LIST",
        b"UIDL 17",
        b"RETR 17",
        b"TOP 3 10",
        b"DELE 4",
        b"NOOP",
        b"RSET",
        b"CAPA",
        b"AUTH PLAIN AGFsaWNlAHNlY3JldA==",
        b"QUIT",
    ];
    let bytes: usize = lines.iter().map(|l| l.len() + 2).sum();
    bencher.counter(BytesCount::new(bytes)).bench_local(|| {
        for line in &lines {
            black_box(parse_command(black_box(line)).ok());
        }
    });
}
