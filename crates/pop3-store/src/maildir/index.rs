//! The index: `dovecot-uidlist`, read and written as Dovecot does, and the scan of `new/` and
//! `cur/` it is checked against. Messages new to the index are measured (from their `,W=`
//! hint and last octet, or by counting) and given the next UIDs; UIDLs are served from it.

use super::*;

/// The UIDL a record is served under: its pinned `P` field if valid, else the default.
pub(super) fn served_uidl(rec: &Record, uid_validity: u32) -> String {
    match rec.ext(POP3_UIDL_KEY) {
        Some(p) if valid_uidl(p) => p.to_owned(),
        _ => default_uidl(rec.uid, uid_validity),
    }
}

/// Dovecot's default `pop3_uidl_format = %08Xu%08Xv`. Its `%X` is lower-case hex; UIDLs are
/// compared byte for byte by clients, so the case matters for a migration.
pub(super) fn default_uidl(uid: u32, uid_validity: u32) -> String {
    format!("{uid:08x}{uid_validity:08x}")
}

/// Whether `uidl` is a valid RFC 1939 unique-id: 1 to 70 characters in 0x21..0x7E.
pub fn valid_uidl(uidl: &str) -> bool {
    (1..=70).contains(&uidl.len()) && uidl.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Lists `new/` and `cur/`: base name to location. Entries that are not regular files
/// (symbolic links, FIFOs, directories: see [`untrusted`]) are skipped with a warning.
pub(super) fn scan(dir: &Path) -> Result<HashMap<String, Located>, StoreError> {
    let (files, refused) = scan_reporting(dir)?;
    for (path, why) in refused {
        tracing::warn!(file = %path.display(), "skipping {why}");
    }
    Ok(files)
}

/// Entries of a Maildir that are not message files, and why.
pub(super) type Refused = Vec<(PathBuf, &'static str)>;

/// [`scan`], returning the entries it skips and why instead of logging them.
pub(super) fn scan_reporting(
    dir: &Path,
) -> Result<(HashMap<String, Located>, Refused), StoreError> {
    let mut files = HashMap::new();
    let mut refused = Vec::new();
    for sub in [Folder::New, Folder::Cur] {
        let path = dir.join(sub.dir());
        let entries = fs::read_dir(&path).map_err(|e| StoreError::io(&path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&path, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                tracing::warn!(dir = %path.display(), "skipping a file name that is not UTF-8");
                continue;
            };
            if !is_message(&name) {
                continue;
            }
            // The entry's own type, not what a link points at.
            let file_type = entry.file_type().map_err(|e| StoreError::io(&path, e))?;
            if let Some(why) = untrusted::refusal(file_type) {
                refused.push((entry.path(), why));
                continue;
            }
            let key = base(&name).to_owned();
            // The same base in new/ and cur/ happens only mid-rename by another program; either
            // copy is the same message.
            files.entry(key).or_insert(Located { sub, name });
        }
    }
    Ok((files, refused))
}

pub(super) fn read_uidlist(dir: &Path) -> Result<Option<Uidlist>, StoreError> {
    let path = dir.join(UIDLIST);
    let text = match fs::read(&path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(&path, e)),
    };
    let (list, warnings) = Uidlist::parse(&text);
    for w in warnings {
        tracing::warn!(index = %path.display(), "{w}");
    }
    Ok(list)
}

pub(super) fn write_uidlist(dir: &Path, list: &Uidlist) -> Result<(), StoreError> {
    replace_file(
        &dir.join(UIDLIST),
        &dir.join(UIDLIST_TMP),
        list.serialize().as_bytes(),
    )?;
    sync_dir(dir)
}

/// Replaces `path` with `bytes` (mode 0600) by writing `tmp`, fsyncing it and renaming it over
/// `path`, so a crash leaves the old or the new contents, never a mixture. `tmp` is removed on
/// failure.
pub(super) fn replace_file(path: &Path, tmp: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    untrusted::replace_file(path, tmp, bytes, 0o600).map_err(|e| StoreError::io(path, e))
}

/// Whether the index must be written: files it does not know, records without files, or
/// records without Poplar's exact size.
pub(super) fn needs_update(list: Option<&Uidlist>, files: &HashMap<String, Located>) -> bool {
    let Some(list) = list else {
        return true;
    };
    let mut known = 0;
    for rec in &list.records {
        if !files.contains_key(&rec.base) || rec.exact_size().is_none() {
            return true;
        }
        known += 1;
    }
    known != files.len()
}

/// Adds to `sizes` the exact sizes of the files that neither the index nor `sizes` has.
pub(super) fn measure_unindexed(
    dir: &Path,
    list: Option<&Uidlist>,
    files: &HashMap<String, Located>,
    sizes: &mut HashMap<String, u64>,
) -> Result<(), StoreError> {
    let indexed: HashSet<&str> = list
        .map(|l| {
            l.records
                .iter()
                .filter(|r| r.exact_size().is_some())
                .map(|r| r.base.as_str())
                .collect()
        })
        .unwrap_or_default();
    let todo: Vec<(&String, PathBuf)> = files
        .iter()
        .filter(|(key, _)| !indexed.contains(key.as_str()) && !sizes.contains_key(*key))
        .map(|(key, loc)| (key, dir.join(loc.sub.dir()).join(&loc.name)))
        .collect();
    // Each file costs an open, a stat and a one-octet read, mostly waiting on the kernel: a
    // first open of a large maildrop spreads them over the cores.
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(todo.len() / PARALLEL_MEASURE_MIN)
        .clamp(1, 8);
    let measure = |part: &[(&String, PathBuf)]| -> Result<Vec<(String, u64)>, StoreError> {
        let mut found = Vec::with_capacity(part.len());
        for (key, path) in part {
            match exact_size(path, key) {
                Ok(size) => found.push(((*key).clone(), size)),
                // Gone since the scan (expunged meanwhile): not part of this session.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(path, e)),
            }
        }
        Ok(found)
    };
    let parts: Vec<Result<Vec<(String, u64)>, StoreError>> = if threads == 1 {
        vec![measure(&todo)]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = todo
                .chunks(todo.len().div_ceil(threads))
                .map(|part| scope.spawn(move || measure(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(StoreError::Internal(
                            "a thread measuring messages panicked".into(),
                        ))
                    })
                })
                .collect()
        })
    };
    for part in parts {
        sizes.extend(part?);
    }
    Ok(())
}

/// The canonical size of a message file: from its `,W=` hint and its last octet when it has
/// one, otherwise by reading it.
pub(super) fn exact_size(path: &Path, base: &str) -> std::io::Result<u64> {
    let mut file = untrusted::open_message(path, None)?;
    if let Some(virtual_size) = size_hints(base).virtual_size {
        let len = file.metadata()?.len();
        let last = if len == 0 {
            None
        } else {
            let mut octet = [0u8; 1];
            file.read_exact_at(&mut octet, len - 1)?;
            Some(octet[0])
        };
        return Ok(canonical_size_from_virtual(virtual_size, last));
    }
    Ok(count(&mut file)?.canonical_size())
}

/// Reads a message file to its end through a [`SizeCounter`].
pub(super) fn count(file: &mut File) -> std::io::Result<SizeCounter> {
    let mut counter = SizeCounter::new();
    let mut buf = vec![0u8; COPY_BUFFER];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(counter);
        }
        counter.update(&buf[..n]);
    }
}

/// Whether a base name carries the writer's [`writer::VERBATIM_HINT`] (trusted as the size
/// hints are: it is written by the program that stored the octets).
pub(super) fn verbatim_hint(base: &str) -> bool {
    base.split(',')
        .skip(1)
        .any(|field| field == &writer::VERBATIM_HINT[1..])
}

/// Brings the index in line with the files: drops records whose file is gone, assigns UIDs to new
/// files in arrival order, and records exact sizes.
pub(super) fn update_index(
    list: Option<Uidlist>,
    files: &HashMap<String, Located>,
    sizes: &HashMap<String, u64>,
) -> Result<Uidlist, StoreError> {
    let mut list = match list {
        Some(l) => l,
        None => Uidlist::new(new_uid_validity(), new_guid()?),
    };
    list.records.retain(|r| files.contains_key(&r.base));
    for rec in &mut list.records {
        if rec.exact_size().is_none()
            && let Some(size) = sizes.get(&rec.base)
        {
            rec.set_ext(EXACT_SIZE_KEY, size.to_string());
            // Indexed first by another program (Dovecot), which knows nothing of the hint.
            if verbatim_hint(&rec.base) && rec.ext(VERBATIM_KEY).is_none() {
                rec.set_ext(VERBATIM_KEY, "1".into());
            }
        }
    }
    let known: HashSet<&str> = list.records.iter().map(|r| r.base.as_str()).collect();
    let mut new: Vec<&String> = files
        .keys()
        .filter(|b| !known.contains(b.as_str()))
        .collect();
    new.sort_by_cached_key(|b| (filename::arrival_time(b), b.as_str()));
    let mut added = Vec::with_capacity(new.len());
    for b in new {
        let Some(size) = sizes.get(b) else { continue };
        let Some(uid) = list.allocate_uid() else {
            tracing::error!("maildrop has used up all 2^32 UIDs; new messages are not indexed");
            break;
        };
        let mut ext = vec![(EXACT_SIZE_KEY, size.to_string())];
        if verbatim_hint(b) {
            ext.push((VERBATIM_KEY, "1".into()));
        }
        added.push(Record {
            uid,
            ext,
            base: b.clone(),
        });
    }
    list.records.extend(added);
    Ok(list)
}

pub(super) fn new_uid_validity() -> u32 {
    let secs = unix_now();
    u32::try_from(secs).unwrap_or(u32::MAX).max(1)
}

pub(super) fn new_guid() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Internal(e.to_string()))?;
    Ok(hex::encode(bytes))
}
