//! The line framer fed in arbitrary chunks: lines never exceed the cap or contain LF, and the
//! buffer never holds more than one cap plus one chunk.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pop3_proto::line::{Frame, LineFramer};

fuzz_target!(|input: (u8, u16, &[u8])| {
    let (chunk, cap, data) = input;
    let chunk = usize::from(chunk).max(1);
    let cap = usize::from(cap % 2048).max(2);
    let mut framer = LineFramer::new();
    for piece in data.chunks(chunk) {
        framer.push(piece);
        while let Some(frame) = framer.next_line(cap) {
            if let Frame::Line(line) = frame {
                assert!(line.len() + 1 <= cap);
                assert!(!line.contains(&b'\n'));
            }
        }
        assert!(framer.buffered() <= cap + chunk);
    }
});
