//! The LMTP protocol machine: any sequence of command lines gets well-formed replies (three
//! digits, CRLF-terminated, an enhanced status code after LHLO), DATA is only ever started
//! with a sender and at least one recipient, and recipients never exceed the limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pop3_server::lmtp::{Action, Transaction};

fuzz_target!(|input: &[u8]| {
    let mut t = Transaction::new("fuzz.test", 1000);
    for raw in input.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(raw);
        let line = line.trim_end_matches('\r');
        // Only users whose names start with 'a' exist.
        let action = t.command(line, |a| a.starts_with('a').then(|| a.to_owned()));
        match action {
            Action::Reply(r) | Action::Close(r) => {
                assert!(r.ends_with("\r\n"), "{r:?}");
                for l in r.split_terminator("\r\n") {
                    assert!(l.len() >= 4 && l.as_bytes()[..3].iter().all(u8::is_ascii_digit), "{l:?}");
                    assert!(matches!(l.as_bytes()[3], b' ' | b'-'), "{l:?}");
                    assert!(!l.contains('\r') && !l.contains('\n'));
                }
            }
            Action::Data => {
                assert!(t.sender().is_some());
                assert!(!t.recipients().is_empty());
                t.reset();
            }
        }
        assert!(t.recipients().len() <= 1000);
    }
});
