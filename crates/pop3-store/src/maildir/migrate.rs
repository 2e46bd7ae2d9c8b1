//! Migration: reading the UIDLs another POP3 server shows for a Maildir, and importing messages
//! with those UIDLs pinned.
//!
//! Why: when a POP3 server is replaced, every message whose UIDL changes is downloaded again by
//! every client that leaves mail on the server. The UIDL a client has seen is whatever the old
//! server computed, so each source format is read the way that server reads it:
//!
//! - Dovecot: the `P` field of `dovecot-uidlist` (a UIDL saved by an earlier migration) if
//!   present, else `pop3_uidl_format` expanded with `%u` (UID), `%v` (UIDVALIDITY), `%f` (base
//!   file name) and `%g` (GUID: the `G` field, else the base file name), with Dovecot's
//!   modifiers (`%08Xu`: zero-padded to 8, in lower-case hex) and long names (`%{uid}`). `%m` is
//!   refused: Dovecot itself computes it only for mbox.
//! - Courier: `courierpop3dsizelist` (versions 2 and 3), whose UIDLs are `UID<n>-<uidvalidity>`.
//! - qpopper and others: the `X-UIDL:` header of each message.
//!
//! A message the old server never listed (delivered after its last session) has no UIDL to keep
//! and gets Poplar's own, like any new mail. [`MaildirStore::import_blocking`] copies messages in
//! and pins their UIDLs in the index (the `P` field, which Dovecot honours too) while holding the
//! session lock, so no POP3 session can list a message before its UIDL is pinned.

use super::uidlist::{POP3_UIDL_KEY, Uidlist};
use super::writer::{self, Folder, sync_dir, sync_in_parallel};
use super::{
    DotLock, MaildirStore, UIDLIST_LOCK, measure_unindexed, read_uidlist, scan, scan_reporting,
    served_uidl, session_lock, update_index, valid_uidl, write_uidlist,
};
use crate::StoreError;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// How the old server derived its UIDLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UidlScheme {
    /// Dovecot, with this `pop3_uidl_format` (its default is `%08Xu%08Xv`).
    Dovecot {
        /// The `pop3_uidl_format` setting.
        format: String,
    },
    /// Courier's `courierpop3dsizelist`.
    Courier,
    /// The `X-UIDL:` header of each message (qpopper).
    XUidl,
}

/// Dovecot's default `pop3_uidl_format`.
pub const DOVECOT_DEFAULT_FORMAT: &str = "%08Xu%08Xv";

/// A message of the source Maildir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMessage {
    /// The file.
    pub path: PathBuf,
    /// Its file name (base name and flags).
    pub name: String,
    /// Whether it is in `cur/` (else `new/`).
    pub in_cur: bool,
    /// Octets in the file as it was listed (0 if it has gone since).
    pub size: u64,
    /// The UIDL the old server shows for it, if it ever listed it.
    pub uidl: Option<String>,
}

/// A source Maildir as a migration reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceListing {
    /// Its messages, in the old server's order, with their UIDLs.
    pub messages: Vec<SourceMessage>,
    /// Entries of `new/` and `cur/` that are not message files (symbolic links, FIFOs,
    /// directories), and why: never read, never imported.
    pub refused: Vec<(PathBuf, &'static str)>,
}

/// Reads a source Maildir's messages, in the old server's order, with their UIDLs. Entries
/// that are not regular files are refused (see [`super::untrusted`]): whoever owns the source
/// could otherwise make the migration copy any file the migrating user can read.
pub fn read_source(dir: &Path, scheme: &UidlScheme) -> Result<SourceListing, StoreError> {
    if !super::is_maildir(dir) {
        return Err(StoreError::Source(format!(
            "{} is not a Maildir (no cur/ and new/)",
            dir.display()
        )));
    }
    let (mut files, refused) = scan_reporting(dir)?;
    let message = |loc: super::Located, uidl: Option<String>| {
        let path = dir.join(loc.sub.dir()).join(&loc.name);
        SourceMessage {
            size: fs::symlink_metadata(&path).map_or(0, |m| m.len()),
            path,
            name: loc.name,
            in_cur: loc.sub == Folder::Cur,
            uidl,
        }
    };
    let mut out = Vec::with_capacity(files.len());
    match scheme {
        UidlScheme::Dovecot { format } => {
            let template = Template::parse(format)?;
            let list = read_uidlist(dir)?.unwrap_or_else(|| Uidlist::new(0, String::new()));
            for rec in &list.records {
                let Some(loc) = files.remove(&rec.base) else {
                    continue;
                };
                let uidl = match rec.ext(POP3_UIDL_KEY) {
                    Some(saved) => saved.to_owned(),
                    None => template.expand(&Vars {
                        uid: rec.uid,
                        uid_validity: list.uid_validity,
                        base: &rec.base,
                        guid: rec.ext(b'G').unwrap_or(&rec.base),
                    }),
                };
                out.push(message(loc, Some(uidl)));
            }
        }
        UidlScheme::Courier => {
            let path = dir.join("courierpop3dsizelist");
            let text = fs::read_to_string(&path).map_err(|e| StoreError::io(&path, e))?;
            let entries = parse_courier(&text)
                .map_err(|why| StoreError::Source(format!("{}: {why}", path.display())))?;
            for (base, uidl) in entries {
                if let Some(loc) = files.remove(&base) {
                    out.push(message(loc, Some(uidl)));
                }
            }
        }
        UidlScheme::XUidl => {
            let mut all: Vec<(String, super::Located)> = files.drain().collect();
            all.sort_by_cached_key(|(b, _)| (super::filename::arrival_time(b), b.clone()));
            for (_, loc) in all {
                let path = dir.join(loc.sub.dir()).join(&loc.name);
                // A file swapped for a link since the listing is refused when opened.
                let uidl = match x_uidl(&path) {
                    Err(StoreError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::InvalidData =>
                    {
                        continue;
                    }
                    other => other?,
                };
                out.push(message(loc, uidl));
            }
        }
    }
    // Messages the old server never listed: new to every client, in arrival order.
    let mut rest: Vec<(String, super::Located)> = files.into_iter().collect();
    rest.sort_by_cached_key(|(b, _)| (super::filename::arrival_time(b), b.clone()));
    out.extend(rest.into_iter().map(|(_, loc)| message(loc, None)));
    Ok(SourceListing {
        messages: out,
        refused,
    })
}

/// `courierpop3dsizelist`: a header `/<version> <next uid> <uidvalidity>`, then per message
/// `<file name> <size> <uid>:<uidvalidity>[:<utf8>]`. Returns base name and UIDL per message.
fn parse_courier(text: &str) -> Result<Vec<(String, String)>, &'static str> {
    let mut lines = text.lines();
    let header = lines.next().ok_or("empty file")?;
    let version = header
        .strip_prefix('/')
        .and_then(|h| h.split(' ').next())
        .ok_or("no /<version> header: a courierpop3dsizelist older than Courier 0.43")?;
    if version != "2" && version != "3" {
        return Err("unknown courierpop3dsizelist version (2 and 3 are known)");
    }
    let mut out = Vec::new();
    for line in lines {
        // The file name may contain spaces: the last two fields are size and uid.
        let mut fields = line.rsplitn(3, ' ');
        let (Some(uid), Some(_size), Some(name)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let mut parts = uid.split(':');
        let (Some(n), Some(v)) = (parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(n), Ok(v)) = (n.parse::<u64>(), v.parse::<u64>()) else {
            continue;
        };
        if n == 0 {
            continue;
        }
        let uidl = if v == 0 {
            format!("UID{n}")
        } else {
            format!("UID{n}-{v}")
        };
        out.push((super::filename::base(name).to_owned(), uidl));
    }
    Ok(out)
}

/// The `X-UIDL:` header's value, if the message has one in its header section.
fn x_uidl(path: &Path) -> Result<Option<String>, StoreError> {
    let file = super::untrusted::open_message(path, None).map_err(|e| StoreError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| StoreError::io(path, e))?;
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if n == 0 || text.is_empty() {
            return Ok(None);
        }
        if let Some((name, value)) = text.split_once(':')
            && name.eq_ignore_ascii_case("X-UIDL")
        {
            return Ok(Some(value.trim().to_owned()));
        }
    }
}

/// The values a Dovecot UIDL template refers to.
struct Vars<'a> {
    uid: u32,
    uid_validity: u32,
    base: &'a str,
    guid: &'a str,
}

/// A parsed `pop3_uidl_format`.
#[derive(Debug)]
struct Template(Vec<Piece>);

#[derive(Debug)]
enum Piece {
    Text(String),
    Var {
        var: char,
        zero_pad: bool,
        width: Option<usize>,
        hex: bool,
        lower: bool,
        upper: bool,
    },
}

impl Template {
    fn parse(format: &str) -> Result<Self, StoreError> {
        let bad = |why: String| StoreError::Source(format!("pop3_uidl_format {format:?}: {why}"));
        let mut pieces = Vec::new();
        let mut chars = format.chars().peekable();
        let mut text = String::new();
        while let Some(c) = chars.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            if chars.peek() == Some(&'%') {
                chars.next();
                text.push('%');
                continue;
            }
            let zero_pad = chars.next_if_eq(&'0').is_some();
            let mut digits = String::new();
            while let Some(d) = chars.next_if(char::is_ascii_digit) {
                digits.push(d);
            }
            let (mut hex, mut lower, mut upper) = (false, false, false);
            loop {
                match chars.peek() {
                    Some('X') => hex = true,
                    Some('L') => lower = true,
                    Some('U') => upper = true,
                    _ => break,
                }
                chars.next();
            }
            let var = match chars.next() {
                Some('{') => {
                    let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    match name.as_str() {
                        "uid" => 'u',
                        "uidvalidity" => 'v',
                        "filename" => 'f',
                        "guid" => 'g',
                        "md5" => 'm',
                        other => return Err(bad(format!("unknown variable %{{{other}}}"))),
                    }
                }
                Some(v) => v,
                None => return Err(bad("the format ends inside a %-variable".into())),
            };
            match var {
                'u' | 'v' | 'f' | 'g' => {}
                'm' => {
                    return Err(bad(
                        "%m (a header MD5) is only computed by Dovecot for mbox, not Maildir"
                            .into(),
                    ));
                }
                other => return Err(bad(format!("unknown variable %{other}"))),
            }
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Var {
                var,
                zero_pad,
                width: digits.parse().ok(),
                hex,
                lower,
                upper,
            });
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Template(pieces))
    }

    fn expand(&self, vars: &Vars<'_>) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                &Piece::Var {
                    var,
                    zero_pad,
                    width,
                    hex,
                    lower,
                    upper,
                } => {
                    let mut value = match var {
                        'u' => vars.uid.to_string(),
                        'v' => vars.uid_validity.to_string(),
                        'f' => vars.base.to_owned(),
                        _ => vars.guid.to_owned(),
                    };
                    if hex {
                        // Dovecot's %X reads the value as a decimal number and prints it in
                        // lower-case hexadecimal.
                        value = value.parse::<u64>().map_or(value, |n| format!("{n:x}"));
                    }
                    if lower {
                        value = value.to_lowercase();
                    }
                    if upper {
                        value = value.to_uppercase();
                    }
                    match width {
                        Some(w) if zero_pad => {
                            while value.len() < w {
                                value.insert(0, '0');
                            }
                        }
                        // Without 0, a width keeps the first characters.
                        Some(w) => value = value.chars().take(w).collect(),
                        None => {}
                    }
                    out.push_str(&value);
                }
            }
        }
        out
    }
}

/// A message to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportMessage {
    /// The file holding it.
    pub source: PathBuf,
    /// Move the file rather than copy it (it is a download in the target's `tmp/`).
    pub take: bool,
    /// The target file name (base name and flags); an existing base name is not imported again.
    pub name: String,
    /// Store in `cur/` (else `new/`).
    pub in_cur: bool,
    /// The UIDL to pin, or `None` for Poplar's own.
    pub uidl: Option<String>,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    /// Messages stored.
    pub imported: usize,
    /// Messages whose base name the maildrop already had (an earlier run).
    pub already_present: usize,
    /// UIDLs pinned by this run.
    pub pinned: usize,
    /// Messages already in the maildrop that served a UIDL an imported message brings, and so
    /// were given a new one (clients download them once more: a duplicate, never a loss).
    pub displaced: usize,
    /// Source files not imported, and why: not a regular file (a symbolic link, a FIFO), or
    /// larger than `limits.max_message_size`.
    pub refused: Vec<(PathBuf, String)>,
}

/// A message of a maildrop as a migration sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// The UIDL it is served under.
    pub uidl: String,
    /// Whether that UIDL is pinned (kept from another server) rather than made from its UID.
    pub pinned: bool,
}

impl MaildirStore {
    /// Imports messages into `user`'s maildrop with their UIDLs pinned, durably. Holds the
    /// session lock throughout ([`StoreError::InUse`] if a session is open), so no client lists
    /// a message before its UIDL is in place. A UIDL already pinned is never changed.
    pub fn import_blocking(
        &self,
        user: &str,
        messages: &[ImportMessage],
    ) -> Result<ImportOutcome, StoreError> {
        let dir = self.maildir_path(user)?;
        writer::create_dirs(&dir)?;
        let _session = session_lock(&dir)?;
        let present = scan(&dir)?;
        let mut outcome = ImportOutcome::default();
        let mut pins = HashMap::new();
        let mut staged = Vec::new();
        for m in messages {
            let base = super::filename::base(&m.name);
            if let Some(uidl) = &m.uidl {
                if !valid_uidl(uidl) {
                    return Err(StoreError::Source(format!(
                        "{uidl:?} is not a valid UIDL (1 to 70 printable ASCII characters)"
                    )));
                }
                pins.insert(base.to_owned(), uidl.clone());
            }
            if present.contains_key(base) {
                outcome.already_present += 1;
                if m.take {
                    let _ = fs::remove_file(&m.source);
                }
                continue;
            }
            let tmp = dir.join("tmp").join(&m.name);
            if m.take {
                fs::rename(&m.source, &tmp).map_err(|e| StoreError::io(&tmp, e))?;
            } else {
                let max = Some(self.inner.limits.max_message_size);
                // A leftover of an interrupted import (removing a link removes only the link).
                let _ = fs::remove_file(&tmp);
                match super::untrusted::copy_message(&m.source, &tmp, max) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                        tracing::warn!(file = %m.source.display(), "not imported: {e}");
                        outcome.refused.push((m.source.clone(), e.to_string()));
                        pins.remove(base);
                        continue;
                    }
                    Err(e) => return Err(StoreError::io(&m.source, e)),
                }
            }
            let sub = if m.in_cur { Folder::Cur } else { Folder::New };
            staged.push((tmp, dir.join(sub.dir()).join(&m.name)));
        }
        // Every file reaches the disk before any is renamed into place; the flushes run in
        // parallel, which lets the disk take them together instead of one round trip each.
        sync_in_parallel(&staged, |(tmp, _)| {
            File::open(tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| StoreError::io(tmp, e))
        })?;
        // The UIDLs are on disk before any message is visible, so that after a crash between
        // here and the index update whoever indexes the maildrop next pins them.
        write_pending(&dir, &pins)?;
        for (tmp, target) in &staged {
            fs::rename(tmp, target).map_err(|e| StoreError::io(target, e))?;
            outcome.imported += 1;
        }
        sync_dir(&dir.join("new"))?;
        sync_dir(&dir.join("cur"))?;
        let _index = DotLock::acquire(
            &dir.join(UIDLIST_LOCK),
            &self.inner.host,
            self.inner.lock_timeout,
        )?;
        let files = scan(&dir)?;
        let mut fresh = read_uidlist(&dir)?;
        // UIDs for the new messages are allocated past any imported UIDL of Poplar's own form.
        if let Some(list) = fresh.as_mut() {
            reserve_uids(list, pins.values().map(String::as_str));
        }
        let mut sizes = HashMap::new();
        measure_unindexed(&dir, fresh.as_ref(), &files, &mut sizes)?;
        let mut list = update_index(fresh, &files, &sizes)?;
        (outcome.pinned, outcome.displaced) = pin(&mut list, &pins);
        write_uidlist(&dir, &list)?;
        remove_pending(&dir);
        self.inner.cache.forget(&dir);
        Ok(outcome)
    }
}

impl MaildirStore {
    /// The UIDL `user`'s maildrop serves for each message, by base name, and whether it is
    /// pinned (locking it briefly, like a session: [`StoreError::InUse`] while one is open).
    pub fn served_uidls_blocking(&self, user: &str) -> Result<HashMap<String, Served>, StoreError> {
        let (drop, listing) = self.open_blocking(user)?;
        let dir = self.maildir_path(user)?;
        // The open brought the index up to date; the session lock keeps it so.
        let pinned: std::collections::HashSet<String> = read_uidlist(&dir)?
            .map(|list| {
                list.records
                    .into_iter()
                    .filter(|r| r.ext(POP3_UIDL_KEY).is_some_and(valid_uidl))
                    .map(|r| r.base)
                    .collect()
            })
            .unwrap_or_default();
        Ok(listing
            .into_iter()
            .enumerate()
            .filter_map(|(i, info)| {
                let base = drop.entry(i)?.base.clone();
                let served = Served {
                    pinned: pinned.contains(&base),
                    uidl: info.uidl,
                };
                Some((base, served))
            })
            .collect())
    }
}

/// UIDLs of an import in progress: `<base>\t<uidl>` lines, written before its messages appear.
const PENDING: &str = "poplar-import-pending";

/// Pins `pins` (base name to UIDL) on records that have no UIDL pinned yet; returns how many,
/// and how many other records were displaced.
///
/// Two messages must never share a UIDL. When another message of the maildrop already serves
/// a UIDL being imported (mail delivered here before the migration, whose index happens to have
/// the old server's UIDVALIDITY), the imported message keeps it, because clients that saw it
/// at the old server know it by that UIDL and would otherwise never download the other one:
/// it would be hidden from them. The other message gets a fresh UIDL of Poplar's form, from a
/// UID reserved for it, so clients download it once more: a duplicate, never a loss.
fn pin(list: &mut Uidlist, pins: &HashMap<String, String>) -> (usize, usize) {
    // Fresh UIDLs must not be ones being imported.
    reserve_uids(list, pins.values().map(String::as_str));
    let validity = list.uid_validity;
    let wanted: Vec<Option<String>> = list
        .records
        .iter()
        .map(|rec| {
            let has = rec.ext(POP3_UIDL_KEY).is_some_and(valid_uidl);
            (!has).then(|| pins.get(&rec.base).cloned()).flatten()
        })
        .collect();
    let mut owners: HashMap<String, usize> = list
        .records
        .iter()
        .zip(&wanted)
        .enumerate()
        .filter(|(_, (_, w))| w.is_none())
        .map(|(i, (rec, _))| (served_uidl(rec, validity), i))
        .collect();
    let (mut pinned, mut displaced) = (0, 0);
    for (i, uidl) in wanted.into_iter().enumerate() {
        let Some(uidl) = uidl else { continue };
        if let Some(other) = owners.remove(&uidl) {
            let fresh = format!("{:08x}{validity:08x}", list.next_uid);
            list.next_uid = list.next_uid.saturating_add(1);
            tracing::warn!(
                uidl,
                imported = list.records[i].base,
                existing = list.records[other].base,
                fresh,
                "a message already here served the UIDL of a message being imported; it gets a new UIDL (clients download it once more)"
            );
            list.records[other].set_ext(POP3_UIDL_KEY, fresh.clone());
            owners.insert(fresh, other);
            displaced += 1;
        }
        list.records[i].set_ext(POP3_UIDL_KEY, uidl.clone());
        owners.insert(uidl, i);
        pinned += 1;
    }
    reserve_imported(list);
    (pinned, displaced)
}

fn write_pending(dir: &Path, pins: &HashMap<String, String>) -> Result<(), StoreError> {
    let mut text = String::new();
    for (base, uidl) in pins {
        if base.contains(['\t', '\n']) {
            return Err(StoreError::Source(format!(
                "{base:?}: a file name with a tab or newline cannot be imported"
            )));
        }
        text.push_str(&format!("{base}\t{uidl}\n"));
    }
    let path = dir.join(PENDING);
    fs::write(&path, text)
        .and_then(|()| File::open(&path)?.sync_all())
        .map_err(|e| StoreError::io(&path, e))?;
    sync_dir(dir)
}

fn remove_pending(dir: &Path) {
    let path = dir.join(PENDING);
    if let Err(e) = fs::remove_file(&path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(file = %path.display(), error = %e, "cannot remove the import journal");
    }
}

/// Applies the UIDLs of an import that was interrupted (see [`PENDING`]) while indexing; called
/// by every index update, so no client can see such a message under another UIDL.
pub(super) fn apply_pending(dir: &Path, list: &mut Uidlist) {
    let Ok(text) = fs::read_to_string(dir.join(PENDING)) else {
        return;
    };
    let pins: HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, uidl)| valid_uidl(uidl))
        .map(|(b, u)| (b.to_owned(), u.to_owned()))
        .collect();
    let (pinned, displaced) = pin(list, &pins);
    tracing::info!(maildir = %dir.display(), pinned, displaced, "applied the UIDLs of an interrupted import");
}

/// Makes sure no future message gets a default UIDL equal to an imported one: an imported UIDL
/// that reads as `<uid><uidvalidity>` in this index's UIDVALIDITY moves the next UID past it.
fn reserve_imported(list: &mut Uidlist) {
    let pinned: Vec<String> = list
        .records
        .iter()
        .filter_map(|r| r.ext(POP3_UIDL_KEY).map(str::to_owned))
        .collect();
    reserve_uids(list, pinned.iter().map(String::as_str));
}

/// Moves the next UID past every UIDL in `uidls` that reads as `<uid><uidvalidity>` here.
fn reserve_uids<'a>(list: &mut Uidlist, uidls: impl Iterator<Item = &'a str>) {
    for uidl in uidls {
        if uidl.len() != 16 || !uidl.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let (uid, validity) = uidl.split_at(8);
        if u32::from_str_radix(validity, 16).ok() == Some(list.uid_validity)
            && let Ok(uid) = u32::from_str_radix(uid, 16)
            && uid >= list.next_uid
        {
            list.next_uid = uid.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars<'static> {
        Vars {
            uid: 4660,
            uid_validity: 1_700_000_000,
            base: "1700000000.M1P2.host,S=10",
            guid: "6c7f3a2b",
        }
    }

    #[test]
    fn dovecot_formats_expand_as_dovecot_does() {
        let cases = [
            ("%08Xu%08Xv", "000012346553f100"),
            ("%u.%v", "4660.1700000000"),
            ("%f", "1700000000.M1P2.host,S=10"),
            ("%g", "6c7f3a2b"),
            ("%Ug-%{uid}", "6C7F3A2B-4660"),
            ("UID%u-%v", "UID4660-1700000000"),
            ("%4f", "1700"),
            ("%%%u", "%4660"),
        ];
        for (format, want) in cases {
            assert_eq!(
                Template::parse(format).unwrap().expand(&vars()),
                want,
                "{format}"
            );
        }
        for bad in ["%m", "%{md5}", "%q", "%08X"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn courier_size_lists() {
        let text = "/3 5 1600000000\n1600000001.M1.host:2,S 120 1:1600000000:0\n\
                    1600000002.M2 two.host 99 2:1600000000:1\nbroken line\n\
                    1600000003.M3.host 7 3:0:0\n";
        assert_eq!(
            parse_courier(text).unwrap(),
            vec![
                (
                    "1600000001.M1.host".to_owned(),
                    "UID1-1600000000".to_owned()
                ),
                (
                    "1600000002.M2 two.host".to_owned(),
                    "UID2-1600000000".to_owned()
                ),
                ("1600000003.M3.host".to_owned(), "UID3".to_owned()),
            ]
        );
        assert!(parse_courier("msg 1 2\n").is_err());
        assert!(parse_courier("/9 1 1\n").is_err());
    }

    #[test]
    fn an_interrupted_import_still_pins_its_uidls() {
        let root = tempfile::tempdir().unwrap();
        let store = MaildirStore::new(root.path(), "host");
        let dir = store.maildir_path("alice").unwrap();
        writer::create_dirs(&dir).unwrap();
        // The import died after writing its journal and renaming the message into new/.
        let pins = HashMap::from([("1700000000.M1.old".to_owned(), "UID7-1600000000".to_owned())]);
        write_pending(&dir, &pins).unwrap();
        fs::write(
            dir.join("new/1700000000.M1.old"),
            b"Subject: x\r\n\r\ny\r\n",
        )
        .unwrap();
        let (_drop, listing) = store.open_blocking("alice").unwrap();
        assert_eq!(listing[0].uidl, "UID7-1600000000");
    }

    #[test]
    fn an_imported_uidl_wins_and_the_message_that_had_it_gets_a_fresh_one() {
        use super::super::uidlist::Record;
        let mut list = Uidlist::new(0x6553_f100, "g".into());
        list.next_uid = 4;
        let rec = |uid, base: &str| Record {
            uid,
            ext: vec![],
            base: base.into(),
        };
        list.records.push(rec(1, "old"));
        list.records.push(rec(2, "imported"));
        list.records.push(rec(3, "other"));
        let pins = HashMap::from([
            ("imported".to_owned(), "000000016553f100".to_owned()),
            ("other".to_owned(), "unique".to_owned()),
        ]);
        assert_eq!(pin(&mut list, &pins), (2, 1));
        assert_eq!(list.records[1].ext(POP3_UIDL_KEY), Some("000000016553f100"));
        assert_eq!(list.records[2].ext(POP3_UIDL_KEY), Some("unique"));
        // "old" served 000000016553f100 (UID 1): it now has a UID never given out before.
        assert_eq!(list.records[0].ext(POP3_UIDL_KEY), Some("000000046553f100"));
        assert_eq!(list.next_uid, 5);
        let served: std::collections::HashSet<String> = list
            .records
            .iter()
            .map(|r| served_uidl(r, list.uid_validity))
            .collect();
        assert_eq!(served.len(), 3, "no two messages share a UIDL");
        // Pinning again changes nothing.
        assert_eq!(pin(&mut list, &pins), (0, 0));
    }

    #[test]
    fn imported_uidls_that_look_like_poplars_push_the_next_uid_past_them() {
        let mut list = Uidlist::new(0x6553_f100, "g".into());
        list.next_uid = 3;
        let mut rec = super::super::uidlist::Record {
            uid: 1,
            ext: vec![],
            base: "a".into(),
        };
        rec.set_ext(POP3_UIDL_KEY, "000000096553f100".into());
        list.records.push(rec.clone());
        rec.set_ext(POP3_UIDL_KEY, "00000063deadbeef".into());
        list.records.push(rec);
        reserve_imported(&mut list);
        assert_eq!(list.next_uid, 10);
    }
}
