//! `dovecot-uidlist`: the index that maps Maildir files to permanent UIDs.
//!
//! Poplar uses Dovecot's own index file so that a Maildir can be served by Poplar and Dovecot at
//! the same time, or moved from one to the other, and both show the same UIDL for the same
//! message. Version 3 of the format is:
//!
//! ```text
//! 3 V<uidvalidity> N<next uid> G<mailbox guid> [<key><value> ...]
//! <uid> [<key><value> ...] :<base file name>
//! ```
//!
//! Dovecot's record keys are `S` (file size), `W` (virtual size), `P` (a POP3 UIDL that
//! overrides the default), `O` (POP3 order) and `G` (message GUID). Dovecot keeps every upper-case
//! key it does not know when it rewrites the file, so Poplar records its own: `X<octets>`, the
//! exact size RETR sends (Dovecot's virtual size leaves out the CRLF that an unterminated last
//! line gets, so it cannot serve as the POP3 size of such a message), and `V1`/`V0`, whether
//! RETR can send the file as it is. Knowing every size from the
//! index is what lets a large maildrop open without reading any message.
//!
//! UIDs only grow (`N` is never lowered), so a UID and therefore a UIDL is never reused.

/// Poplar's record key for the exact POP3 size.
pub const EXACT_SIZE_KEY: u8 = b'X';
/// Poplar's record key for whether a message goes on the wire as stored: `V1` when RETR sends
/// the file unchanged before the terminator (CRLF line ends, no line starting with '.', a
/// final CRLF), `V0` when it must be encoded; absent when nobody has looked.
pub const VERBATIM_KEY: u8 = b'V';
/// Dovecot's record key for a POP3 UIDL that overrides the default format.
pub const POP3_UIDL_KEY: u8 = b'P';

/// One message in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The permanent UID.
    pub uid: u32,
    /// Extension fields in file order, key and value.
    pub ext: Vec<(u8, String)>,
    /// The Maildir base name (no `:2,` flags).
    pub base: String,
}

impl Record {
    /// An extension field's value.
    pub fn ext(&self, key: u8) -> Option<&str> {
        self.ext
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets (or replaces) an extension field.
    pub fn set_ext(&mut self, key: u8, value: String) {
        match self.ext.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.ext.push((key, value)),
        }
    }

    /// Whether the message is known to go on the wire as stored (see [`VERBATIM_KEY`]).
    pub fn verbatim(&self) -> bool {
        self.ext(VERBATIM_KEY) == Some("1")
    }

    /// The exact POP3 size, if indexed.
    pub fn exact_size(&self) -> Option<u64> {
        self.ext(EXACT_SIZE_KEY)?.parse().ok()
    }
}

/// The whole index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Uidlist {
    /// UIDVALIDITY; part of the default UIDL, so it never changes for an existing index.
    pub uid_validity: u32,
    /// The next UID to assign.
    pub next_uid: u32,
    /// The mailbox GUID (32 hex digits).
    pub guid: String,
    /// Other header fields, kept verbatim (`P<format>` and anything newer).
    pub header_extra: Vec<String>,
    /// Records in ascending UID order.
    pub records: Vec<Record>,
}

impl Uidlist {
    /// An empty index for a new maildrop.
    pub fn new(uid_validity: u32, guid: String) -> Self {
        Self {
            uid_validity,
            next_uid: 1,
            guid,
            header_extra: Vec::new(),
            records: Vec::new(),
        }
    }

    /// Parses the file. Lines that cannot be understood are skipped and described in the
    /// returned warnings; the rest of the index stays usable.
    pub fn parse(text: &str) -> (Option<Self>, Vec<String>) {
        let mut warnings = Vec::new();
        let mut lines = text.lines();
        let Some(header) = lines.next() else {
            return (None, warnings);
        };
        let mut list = Uidlist::default();
        let mut fields = header.split(' ').filter(|f| !f.is_empty());
        let version = fields.next().unwrap_or("");
        match version {
            "3" => {
                for field in fields {
                    let (key, value) =
                        field.split_at(field.chars().next().map_or(0, char::len_utf8));
                    match key {
                        "V" => list.uid_validity = value.parse().unwrap_or(0),
                        "N" => list.next_uid = value.parse().unwrap_or(0),
                        "G" => list.guid = value.to_owned(),
                        _ => list.header_extra.push(field.to_owned()),
                    }
                }
            }
            "1" => {
                list.uid_validity = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                list.next_uid = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            }
            other => {
                warnings.push(format!("unsupported dovecot-uidlist version {other:?}"));
                return (None, warnings);
            }
        }
        if list.uid_validity == 0 {
            warnings.push("header has no UIDVALIDITY".to_owned());
            return (None, warnings);
        }
        let v3 = version == "3";
        for (i, line) in lines.enumerate() {
            match parse_record(line, v3) {
                Ok(rec) => {
                    if list.records.last().is_some_and(|last| last.uid >= rec.uid) {
                        warnings.push(format!(
                            "line {}: UID {} out of order, skipped",
                            i + 2,
                            rec.uid
                        ));
                        continue;
                    }
                    list.records.push(rec);
                }
                Err(why) => warnings.push(format!("line {}: {why}, skipped", i + 2)),
            }
        }
        let max = list.records.last().map_or(0, |r| r.uid);
        if list.next_uid <= max {
            list.next_uid = max.saturating_add(1);
        }
        list.next_uid = list.next_uid.max(1);
        (Some(list), warnings)
    }

    /// Serialises the index (always version 3).
    pub fn serialize(&self) -> String {
        let mut out = String::with_capacity(64 + self.records.len() * 80);
        out.push_str(&format!(
            "3 V{} N{} G{}",
            self.uid_validity, self.next_uid, self.guid
        ));
        for field in &self.header_extra {
            out.push(' ');
            out.push_str(field);
        }
        out.push('\n');
        for rec in &self.records {
            out.push_str(&rec.uid.to_string());
            for (key, value) in &rec.ext {
                out.push(' ');
                out.push(char::from(*key));
                out.push_str(value);
            }
            out.push_str(" :");
            out.push_str(&rec.base);
            out.push('\n');
        }
        out
    }

    /// Assigns the next UID.
    pub fn allocate_uid(&mut self) -> Option<u32> {
        let uid = self.next_uid;
        // UID 2^32-1 is reserved by Dovecot; a maildrop that exhausts UIDs needs a new index.
        if uid == u32::MAX {
            return None;
        }
        self.next_uid += 1;
        Some(uid)
    }
}

fn parse_record(line: &str, v3: bool) -> Result<Record, &'static str> {
    let (uid, rest) = line.split_once(' ').ok_or("no space after the UID")?;
    let uid: u32 = uid.parse().map_err(|_| "invalid UID")?;
    if uid == 0 || uid == u32::MAX {
        return Err("UID out of range");
    }
    let mut ext = Vec::new();
    let name = if v3 {
        let mut rest = rest.trim_start_matches(' ');
        loop {
            if let Some(name) = rest.strip_prefix(':') {
                break name;
            }
            let end = rest.find(' ').unwrap_or(rest.len());
            let field = &rest[..end];
            let Some(&key) = field.as_bytes().first() else {
                return Err("no ':' before the file name");
            };
            if !key.is_ascii_uppercase() {
                return Err("invalid extension field");
            }
            ext.push((key, field[1..].to_owned()));
            rest = rest[end..].trim_start_matches(' ');
        }
    } else {
        rest
    };
    // The base (the name before ":2,") is what identifies the file; a record whose base is
    // empty, names another directory or holds control characters cannot name a Maildir message
    // and would not survive being written back.
    let base = super::filename::base(name);
    if base.is_empty() || base.contains('/') || base.chars().any(char::is_control) {
        return Err("invalid file name");
    }
    Ok(Record {
        uid,
        ext,
        base: base.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The shape Dovecot 2.3 writes (header with GUID, W/S only when not in the file name).
    const DOVECOT: &str = "3 V1700000000 N5 Gb4ac9f2a1e3c5d6f7a8b9c0d1e2f3a4b\n\
        1 :1700000001.M1P10.host,S=100,W=102\n\
        3 W250 S240 :1700000003.M3P10.host\n\
        4 P00000004deadbeef :1700000004.M4P10.host:2,S\n";

    #[test]
    fn parses_dovecot_v3() {
        let (list, warnings) = Uidlist::parse(DOVECOT);
        assert!(warnings.is_empty(), "{warnings:?}");
        let list = list.unwrap();
        assert_eq!(list.uid_validity, 1_700_000_000);
        assert_eq!(list.next_uid, 5);
        assert_eq!(list.records.len(), 3);
        assert_eq!(list.records[1].ext(b'W'), Some("250"));
        assert_eq!(list.records[2].ext(POP3_UIDL_KEY), Some("00000004deadbeef"));
        assert_eq!(list.records[2].base, "1700000004.M4P10.host");
    }

    #[test]
    fn round_trips_and_keeps_unknown_fields() {
        let text = "3 V7 N9 Gabc Pfmt Znew\n2 W5 Q1 :a\n8 X17 :b\n";
        let (list, warnings) = Uidlist::parse(text);
        assert!(warnings.is_empty());
        assert_eq!(list.unwrap().serialize(), text);
    }

    #[test]
    fn version_1() {
        let (list, _) = Uidlist::parse("1 123 4\n1 a:2,\n3 b\n");
        let list = list.unwrap();
        assert_eq!((list.uid_validity, list.next_uid), (123, 4));
        assert_eq!(list.records[0].base, "a");
        assert!(list.serialize().starts_with("3 V123 N4 G\n"));
    }

    #[test]
    fn damage_is_contained() {
        let text = "3 V7 N2 G0\n1 :a\nzz :b\n5 lower :c\n4 :d\n3 :e\n6 :x/y\n9 :f\n";
        let (list, warnings) = Uidlist::parse(text);
        let list = list.unwrap();
        let uids: Vec<u32> = list.records.iter().map(|r| r.uid).collect();
        assert_eq!(uids, vec![1, 4, 9]);
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert_eq!(
            list.next_uid, 10,
            "next UID never goes below an existing one"
        );
        assert!(Uidlist::parse("3 N5\n").0.is_none());
        assert!(Uidlist::parse("").0.is_none());
        assert!(Uidlist::parse("7 V1\n").0.is_none());
    }

    #[test]
    fn uids_are_never_reused() {
        let mut list = Uidlist::new(1, "g".into());
        assert_eq!(list.allocate_uid(), Some(1));
        assert_eq!(list.allocate_uid(), Some(2));
        list.records.clear();
        let (reparsed, _) = Uidlist::parse(&list.serialize());
        assert_eq!(reparsed.unwrap().allocate_uid(), Some(3));
        list.next_uid = u32::MAX;
        assert_eq!(list.allocate_uid(), None);
    }

    /// Regression for fuzz/artifacts/uidlist/crash-904f5111: a version-1 record whose name is
    /// only flags (an empty base) was kept, and then vanished when the index was written back.
    #[test]
    fn records_that_cannot_be_written_back_are_skipped() {
        let text = "1 1 123 \n1 :1700000001.M1P1a\n3 b*124 \u{e}14 a\n4 name\r";
        let (list, warnings) = Uidlist::parse(text);
        let list = list.unwrap();
        assert!(list.records.is_empty(), "{:?}", list.records);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        let again = Uidlist::parse(&list.serialize()).0.unwrap();
        assert_eq!(again.records, list.records);
    }
}
