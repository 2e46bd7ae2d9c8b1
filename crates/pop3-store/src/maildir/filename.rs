//! Maildir file names: parsing the parts Poplar needs and generating unique ones.
//!
//! A Maildir file name is `BASE[:2,FLAGS]`. The base is unique and never changes while the flags
//! part does (an IMAP client marking a message seen renames `x:2,` to `x:2,S`), so the base is
//! the message's identity. Inside the base, `,S=<octets>` (the file's size) and `,W=<octets>`
//! (its size with CRLF line ends, Dovecot's "virtual size") are hints written by the delivering
//! program so that nobody has to read the file to learn them.

use std::time::{SystemTime, UNIX_EPOCH};

/// The separator between the base name and the flags (`:` on every Unix Maildir).
pub const INFO_SEPARATOR: char = ':';

/// The base of a Maildir file name (everything before `:`).
pub fn base(name: &str) -> &str {
    name.split_once(INFO_SEPARATOR).map_or(name, |(b, _)| b)
}

/// The name a message file takes in `cur/` once it has been read: the same base with the
/// seen flag `S` among its flags (kept in ASCII order, as the Maildir convention asks).
/// `None` when the name is already that.
pub fn seen_name(name: &str, in_cur: bool) -> Option<String> {
    let (base, info) = name.split_once(INFO_SEPARATOR).unwrap_or((name, ""));
    let flags = info.strip_prefix("2,");
    if in_cur && flags.is_some_and(|f| f.contains('S')) {
        return None;
    }
    // Experimental or unknown info ("1,...") is replaced: only version 2 carries flags.
    let mut flags: Vec<char> = flags.unwrap_or("").chars().filter(|&c| c != 'S').collect();
    flags.push('S');
    flags.sort_unstable();
    flags.dedup();
    Some(format!(
        "{base}{INFO_SEPARATOR}2,{}",
        flags.into_iter().collect::<String>()
    ))
}

/// Whether a directory entry in `new/` or `cur/` is a message (not a dot file or temp file).
pub fn is_message(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains('/')
}

/// The `,S=` and `,W=` hints of a base name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SizeHints {
    /// `,S=`: the file's size in octets.
    pub physical: Option<u64>,
    /// `,W=`: the size with bare LF counted as CRLF (Dovecot's virtual size).
    pub virtual_size: Option<u64>,
}

/// Reads the size hints from a base name.
pub fn size_hints(base: &str) -> SizeHints {
    let mut hints = SizeHints::default();
    for field in base.split(',').skip(1) {
        let parse = |v: &str| v.parse::<u64>().ok();
        if let Some(v) = field.strip_prefix("S=") {
            hints.physical = parse(v);
        } else if let Some(v) = field.strip_prefix("W=") {
            hints.virtual_size = parse(v);
        }
    }
    hints
}

/// The delivery time a conventional name encodes, as (seconds, microseconds), for ordering new
/// messages by arrival. Names look like `SECS.M<usec>P<pid>...` (Poplar, Dovecot) or
/// `SECS.V<dev>I<ino>M<usec>.host` (Postfix); unknown shapes sort last.
pub fn arrival_time(base: &str) -> (u64, u64) {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let n = digits(base);
    let secs = base[..n].parse().unwrap_or(u64::MAX);
    let unique = base[n..]
        .strip_prefix('.')
        .and_then(|rest| rest.split('.').next())
        .unwrap_or("");
    let usecs = unique
        .find('M')
        .map(|i| &unique[i + 1..])
        .and_then(|rest| rest[..digits(rest)].parse().ok())
        .unwrap_or(0);
    (secs, usecs)
}

/// Makes a host name safe for a Maildir file name (the Maildir specification's escapes).
pub fn sanitize_host(host: &str) -> String {
    host.replace('/', "\\057").replace(':', "\\072")
}

/// A new unique base name: `SECS.M<usec>P<pid>Q<n>R<random>.HOST`.
pub fn unique_base(host: &str, counter: u64, random: u32) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}.M{}P{}Q{}R{:08x}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        counter,
        random,
        sanitize_host(host)
    )
}

#[cfg(test)]
mod tests {

    #[test]
    fn seen_names_keep_the_base_and_sort_the_flags() {
        assert_eq!(
            seen_name("1.M2.h,S=5", false).as_deref(),
            Some("1.M2.h,S=5:2,S")
        );
        assert_eq!(seen_name("1.M2.h:2,", true).as_deref(), Some("1.M2.h:2,S"));
        assert_eq!(
            seen_name("1.M2.h:2,FT", true).as_deref(),
            Some("1.M2.h:2,FST")
        );
        assert_eq!(seen_name("1.M2.h:2,RS", true), None);
        assert_eq!(
            seen_name("1.M2.h:2,S", false).as_deref(),
            Some("1.M2.h:2,S")
        );
    }
    use super::*;

    #[test]
    fn parts() {
        let n = "1700000000.M123P45.host,S=1234,W=1260:2,S";
        assert_eq!(base(n), "1700000000.M123P45.host,S=1234,W=1260");
        assert_eq!(
            size_hints(base(n)),
            SizeHints {
                physical: Some(1234),
                virtual_size: Some(1260)
            }
        );
        assert_eq!(size_hints("1.x.host"), SizeHints::default());
        assert_eq!(
            size_hints("1.x.host,S=12"),
            SizeHints {
                physical: Some(12),
                virtual_size: None
            }
        );
        assert_eq!(size_hints("1.x.host,S=,W=x"), SizeHints::default());
        assert_eq!(arrival_time(n), (1_700_000_000, 123));
        assert_eq!(
            arrival_time("1700000000.V801I2c4M99.mx"),
            (1_700_000_000, 99)
        );
        assert!(arrival_time("1.M99P1.h") < arrival_time("1.M100P1.h"));
        assert_eq!(arrival_time("abc").0, u64::MAX);
        assert!(is_message(n));
        assert!(!is_message(".nfs123"));
        assert_eq!(sanitize_host("a/b:c"), "a\\057b\\072c");
    }

    #[test]
    fn unique_names_differ() {
        let a = unique_base("h", 1, 7);
        let b = unique_base("h", 2, 7);
        assert_ne!(a, b);
        assert!(a.ends_with(".h"));
        assert!(!a.contains(INFO_SEPARATOR));
    }
}
