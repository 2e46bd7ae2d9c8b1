//! Maildir file-name and mailbox-name parsing: never panics, the base never contains the flag
//! separator, and a mailbox path that parses never leaves the mail root.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pop3_store::maildir::filename::{arrival_time, base, is_message, size_hints};
use std::path::{Component, Path};

fuzz_target!(|name: &str| {
    let b = base(name);
    assert!(!b.contains(':'));
    let _ = size_hints(b);
    let _ = arrival_time(b);
    let _ = is_message(name);
    if let Ok(path) = pop3_store::MailboxPath::parse(name) {
        let root = Path::new("/srv/mail");
        let dir = path.maildir(root);
        let rest = dir.strip_prefix(root).expect("a maildir under the root");
        assert!(
            rest.components().all(|c| matches!(c, Component::Normal(_))),
            "{name:?} maps to {}",
            dir.display()
        );
        assert_eq!(rest.components().count(), 3, "{name:?} maps to {}", dir.display());
    }
});
