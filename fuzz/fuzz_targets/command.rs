//! The command parser and encoder: parsing never panics and refuses a line with NUL whole; a
//! parsed command the encoder accepts is encoded as one line that parses back to itself
//! (`parse(encode(c)) == c`), and a refused one writes nothing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pop3_proto::{ParseError, parse_command};

fuzz_target!(|line: &[u8]| {
    let parsed = parse_command(line);
    if line.contains(&0) {
        assert_eq!(parsed, Err(ParseError::ContainsNul));
    }
    let Ok(command) = parsed else {
        return;
    };
    let mut out = b"x".to_vec();
    match command.encode(&mut out) {
        Ok(()) => {
            let encoded = &out[1..];
            let body = encoded.strip_suffix(b"\r\n").expect("a command line ends in CRLF");
            assert!(!body.contains(&b'\n') && !body.contains(&b'\r'), "one line");
            assert_eq!(parse_command(body), Ok(command), "round trip");
        }
        Err(_) => assert_eq!(out, b"x", "nothing written"),
    }
});
