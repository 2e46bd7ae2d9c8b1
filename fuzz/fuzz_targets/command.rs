//! The command parser: never panics; a line with NUL is always refused whole.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pop3_proto::{ParseError, parse_command};

fuzz_target!(|line: &[u8]| {
    let parsed = parse_command(line);
    if line.contains(&0) {
        assert_eq!(parsed, Err(ParseError::ContainsNul));
    }
});
