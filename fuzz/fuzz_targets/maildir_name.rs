//! Maildir file-name parsing: never panics, the base never contains the flag separator.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pop3_store::maildir::filename::{arrival_time, base, is_message, size_hints};

fuzz_target!(|name: &str| {
    let b = base(name);
    assert!(!b.contains(':'));
    let _ = size_hints(b);
    let _ = arrival_time(b);
    let _ = is_message(name);
    let _ = pop3_store::MailboxPath::parse(name);
});
