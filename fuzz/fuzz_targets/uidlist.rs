//! The dovecot-uidlist parser: never panics, and what it parses survives a round trip through
//! the serializer unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pop3_store::maildir::uidlist::Uidlist;

fuzz_target!(|text: &str| {
    let (parsed, _) = Uidlist::parse(text);
    if let Some(list) = parsed {
        let again = Uidlist::parse(&list.serialize()).0.expect("a serialized index parses");
        assert_eq!(again.records, list.records);
        assert_eq!((again.uid_validity, again.next_uid), (list.uid_validity, list.next_uid));
        assert!(list.records.windows(2).all(|w| w[0].uid < w[1].uid));
        assert!(list.records.last().is_none_or(|r| r.uid < list.next_uid));
    }
});
