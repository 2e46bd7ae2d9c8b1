//! The user database: a passwd-file in Dovecot's format.
//!
//! Each line is `user:{SCHEME}password[:uid:gid:gecos:home:shell:extra]`; `#` starts a comment.
//! Poplar reads only the first two fields and preserves the rest, so an operator can point
//! Poplar at the file Dovecot uses today. Login names are lower-cased (ASCII) before lookup,
//! like Dovecot's default `auth_username_format = %Lu`, so `Alice` and `alice` are one user.
//!
//! A malformed line is skipped with a warning rather than failing the whole file: a typo in one
//! entry must not lock every user out, and a skipped line never grants access. Edits made by
//! `poplar user ...` take an exclusive lock, write a temporary file (mode 0600), fsync it and
//! rename it over the old one, so a crash never leaves a half-written users file.

use crate::error::AuthError;
use crate::scheme;
use pop3_proto::Secret;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Longest accepted user name, in octets.
pub const MAX_NAME_LEN: usize = 255;

/// One user.
#[derive(Debug, Clone)]
pub struct UserEntry {
    /// The stored `{SCHEME}data`, or `None` when the password field is empty (no password
    /// login possible).
    pub password: Option<Secret<String>>,
}

/// A parsed users file.
#[derive(Debug, Default)]
pub struct UserDb {
    users: HashMap<String, UserEntry>,
}

/// A line that was skipped while parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// The result of checking a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The password is right; carries the canonical user name.
    Valid(String),
    /// Unknown user or wrong password (deliberately indistinguishable).
    Invalid,
}

/// Normalises a login name the way Dovecot's default `%Lu` does: ASCII lower case.
pub fn normalize_name(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Checks that a name can be stored in a passwd-file and used as a mailbox name.
pub fn validate_name(name: &str) -> Result<(), AuthError> {
    let bad = |why| Err(AuthError::InvalidName(name.to_owned(), why));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("it is longer than 255 octets");
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("it contains white space or control characters");
    }
    if name.contains([':', '/', '\\', '%']) {
        return bad("it contains ':', '/', '\\' or '%'");
    }
    if name.starts_with(['.', '@', '-', '#']) || name.ends_with('@') {
        return bad("it starts with '.', '@', '-' or '#', or ends with '@'");
    }
    if name.matches('@').count() > 1 {
        return bad("it contains more than one '@'");
    }
    if name
        .split('@')
        .any(|part| part.starts_with('.') || part.ends_with('.') || part.contains(".."))
    {
        return bad("a part of it starts or ends with '.' or contains '..'");
    }
    Ok(())
}

impl UserDb {
    /// Parses the text of a users file. Malformed lines are skipped and reported.
    pub fn parse(text: &str) -> (Self, Vec<Warning>) {
        let mut users = HashMap::new();
        let mut warnings = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let mut fields = line.split(':');
            let (Some(name), Some(password)) = (fields.next(), fields.next()) else {
                warnings.push(Warning {
                    line: line_no,
                    reason: "no ':' after the user name".into(),
                });
                continue;
            };
            let name = normalize_name(name);
            if let Err(e) = validate_name(&name) {
                warnings.push(Warning {
                    line: line_no,
                    reason: e.to_string(),
                });
                continue;
            }
            let password = if password.is_empty() {
                None
            } else {
                let (scheme, _) = scheme::split_scheme(password);
                if !scheme::is_supported(&scheme) {
                    warnings.push(Warning {
                        line: line_no,
                        reason: format!(
                            "user {name}: password scheme {{{scheme}}} is not supported; \
                             this user cannot log in until the password is reset"
                        ),
                    });
                }
                Some(Secret::new(password.to_owned()))
            };
            if users.contains_key(&name) {
                warnings.push(Warning {
                    line: line_no,
                    reason: format!("user {name} is listed again; the first entry is used"),
                });
                continue;
            }
            users.insert(name, UserEntry { password });
        }
        (Self { users }, warnings)
    }

    /// Reads and parses a users file. A missing file is an empty database.
    pub fn load(path: &Path) -> Result<(Self, Vec<Warning>), AuthError> {
        match fs::read_to_string(path) {
            Ok(text) => Ok(Self::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
            Err(source) => Err(AuthError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Looks up a user by login name (normalised first).
    pub fn get(&self, name: &str) -> Option<&UserEntry> {
        self.users.get(&normalize_name(name))
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Checks a password. For an unknown user (or one without a password) the `decoy` hash is
    /// verified instead, so both cases take the same time as a wrong password.
    pub fn verify(&self, name: &str, password: &[u8], decoy: &str) -> Result<Verdict, AuthError> {
        let key = normalize_name(name);
        match self.users.get(&key).and_then(|u| u.password.as_ref()) {
            Some(stored) => Ok(if scheme::verify(stored.expose(), password)? {
                Verdict::Valid(key)
            } else {
                Verdict::Invalid
            }),
            None => {
                let _ = scheme::verify(decoy, password);
                Ok(Verdict::Invalid)
            }
        }
    }
}

impl UserDb {
    /// Checks an APOP digest. Users whose password is not stored in a plaintext-equivalent
    /// scheme cannot use APOP; they, and unknown users, get the same answer as a wrong digest.
    pub fn verify_apop(&self, name: &str, timestamp: &str, digest: &str) -> Verdict {
        let key = normalize_name(name);
        let secret = self
            .users
            .get(&key)
            .and_then(|u| u.password.as_ref())
            .and_then(|p| scheme::plaintext_equivalent(p.expose()));
        match secret {
            Some(secret) if crate::apop::verify(timestamp, secret.as_bytes(), digest) => {
                Verdict::Valid(key)
            }
            Some(_) => Verdict::Invalid,
            None => {
                // Same work as a real check.
                let _ = crate::apop::verify(timestamp, b"decoy", digest);
                Verdict::Invalid
            }
        }
    }
}

/// A users file that is re-read whenever it changes on disk, so `poplar user add` takes effect
/// on a running server without a restart.
#[derive(Debug)]
pub struct UserDbFile {
    path: PathBuf,
    state: Mutex<Option<(FileStamp, Arc<UserDb>)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

impl UserDbFile {
    /// Watches the users file at `path` (it need not exist yet).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            state: Mutex::new(None),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current database, re-read if the file changed since the last call. Warnings from a
    /// re-read are returned so the caller can log them once.
    pub fn current(&self) -> Result<(Arc<UserDb>, Vec<Warning>), AuthError> {
        let stamp = match fs::metadata(&self.path) {
            Ok(m) => FileStamp {
                ino: m.ino(),
                len: m.len(),
                mtime: m.modified().ok(),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileStamp {
                ino: 0,
                len: 0,
                mtime: None,
            },
            Err(source) => {
                return Err(AuthError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, db)) = state.as_ref()
            && *seen == stamp
        {
            return Ok((Arc::clone(db), Vec::new()));
        }
        let (db, warnings) = UserDb::load(&self.path)?;
        let db = Arc::new(db);
        *state = Some((stamp, Arc::clone(&db)));
        Ok((db, warnings))
    }
}

/// Editing the users file, as `poplar user add/passwd/del/list` do.
pub mod edit {
    use super::*;

    /// Adds a user with an already hashed password (`{SCHEME}data`).
    pub fn add(path: &Path, name: &str, stored: &str) -> Result<(), AuthError> {
        let name = normalize_name(name);
        validate_name(&name)?;
        rewrite(path, |lines| {
            if lines.iter().any(|l| line_user(l) == Some(&name)) {
                return Err(AuthError::UserExists(format!("user {name} already exists")));
            }
            lines.push(format!("{name}:{stored}"));
            Ok(())
        })
    }

    /// Replaces a user's password, keeping the other fields of the line.
    pub fn set_password(path: &Path, name: &str, stored: &str) -> Result<(), AuthError> {
        let name = normalize_name(name);
        rewrite(path, |lines| {
            let line = lines
                .iter_mut()
                .find(|l| line_user(l) == Some(&name))
                .ok_or_else(|| AuthError::NoSuchUser(name.clone()))?;
            let rest: Vec<&str> = line.splitn(3, ':').collect();
            *line = match rest.as_slice() {
                [user, _, tail] => format!("{user}:{stored}:{tail}"),
                [user, ..] => format!("{user}:{stored}"),
                [] => format!("{name}:{stored}"),
            };
            Ok(())
        })
    }

    /// Removes a user's line.
    pub fn remove(path: &Path, name: &str) -> Result<(), AuthError> {
        let name = normalize_name(name);
        rewrite(path, |lines| {
            let before = lines.len();
            lines.retain(|l| line_user(l) != Some(&name));
            if lines.len() == before {
                return Err(AuthError::NoSuchUser(name.clone()));
            }
            Ok(())
        })
    }

    /// The user names in file order.
    pub fn list(path: &Path) -> Result<Vec<String>, AuthError> {
        let text = read_or_empty(path)?;
        Ok(text
            .lines()
            .filter_map(line_user)
            .map(str::to_owned)
            .collect())
    }

    fn line_user(line: &str) -> Option<&str> {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            return None;
        }
        line.split_once(':').map(|(u, _)| u)
    }

    fn read_or_empty(path: &Path) -> Result<String, AuthError> {
        match fs::read_to_string(path) {
            Ok(t) => Ok(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(AuthError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Locks, reads, applies `change` to the lines, writes a temporary file and renames it.
    fn rewrite(
        path: &Path,
        change: impl FnOnce(&mut Vec<String>) -> Result<(), AuthError>,
    ) -> Result<(), AuthError> {
        let io = |source| AuthError::Io {
            path: path.to_owned(),
            source,
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io)?;
        let lock_path = path.with_extension("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io)?;
        lock.lock().map_err(io)?;
        let mut lines: Vec<String> = read_or_empty(path)?.lines().map(str::to_owned).collect();
        change(&mut lines)?;
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let result = (|| {
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)?;
            for line in &lines {
                f.write_all(line.as_bytes())?;
                f.write_all(b"\n")?;
            }
            f.sync_all()?;
            fs::rename(&tmp, path)?;
            File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# Poplar users
alice:{PLAIN}wonderland::::::
Bob@Example.org:{PLAIN}builder:1000:1000::/home/bob::userdb_quota_rule=*:storage=1G

nopass:
broken line without colon
carol:{SHA512-CRYPT}$6$abc$def
alice:{PLAIN}again
../evil:{PLAIN}x
";

    #[test]
    fn parses_dovecot_lines_and_skips_bad_ones() {
        let (db, warnings) = UserDb::parse(FILE);
        assert_eq!(db.len(), 4);
        assert!(db.get("alice").is_some());
        assert!(
            db.get("ALICE").is_some(),
            "names are case-insensitive like Dovecot's %Lu"
        );
        assert!(db.get("bob@example.org").is_some());
        assert!(db.get("nopass").unwrap().password.is_none());
        let lines: Vec<usize> = warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, vec![6, 7, 8, 9], "{warnings:?}");
        assert!(warnings[1].reason.contains("SHA512-CRYPT"));
    }

    #[test]
    fn verify_does_not_distinguish_unknown_users() {
        let (db, _) = UserDb::parse(FILE);
        let decoy = scheme::decoy_hash().unwrap();
        assert_eq!(
            db.verify("Alice", b"wonderland", &decoy).unwrap(),
            Verdict::Valid("alice".into())
        );
        assert_eq!(
            db.verify("alice", b"nope", &decoy).unwrap(),
            Verdict::Invalid
        );
        assert_eq!(
            db.verify("nobody", b"nope", &decoy).unwrap(),
            Verdict::Invalid
        );
        assert_eq!(db.verify("nopass", b"", &decoy).unwrap(), Verdict::Invalid);
        assert!(db.verify("carol", b"x", &decoy).is_err());
    }

    #[test]
    fn apop_needs_a_plaintext_equivalent_secret() {
        let (db, _) = UserDb::parse("mrose:{PLAIN}tanstaaf\nhashed:{ARGON2ID}$argon2id$x\n");
        let ts = "<1896.697170952@dbc.mtview.ca.us>";
        let good = "c4c9334bac560ecc979e58001b3e22fb";
        assert_eq!(
            db.verify_apop("mrose", ts, good),
            Verdict::Valid("mrose".into())
        );
        assert_eq!(
            db.verify_apop("mrose", ts, &"0".repeat(32)),
            Verdict::Invalid
        );
        assert_eq!(db.verify_apop("hashed", ts, good), Verdict::Invalid);
        assert_eq!(db.verify_apop("nobody", ts, good), Verdict::Invalid);
    }

    #[test]
    fn name_rules() {
        for good in [
            "alice",
            "bob@example.org",
            "a.b+tag@x.y",
            "jürgen",
            "u_1-2=3",
        ] {
            validate_name(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        let long = "a".repeat(256);
        for bad in [
            "",
            "../bob",
            "bob/../alice",
            "/etc/passwd",
            "alice%00",
            "alice\0",
            "a b",
            "a:b",
            ".hidden",
            "a@b@c",
            "a..b",
            "alice@",
            "@x",
            "a\u{7}",
            long.as_str(),
            "bob@.x",
            "-rf",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn edits_are_atomic_and_preserve_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        fs::write(
            &path,
            "# comment\nbob:{PLAIN}x:1000:1000::/home/bob::extra=1\n",
        )
        .unwrap();
        edit::add(&path, "Alice", "{PLAIN}one").unwrap();
        assert!(matches!(
            edit::add(&path, "alice", "{PLAIN}two"),
            Err(AuthError::UserExists(_))
        ));
        edit::set_password(&path, "bob", "{PLAIN}y").unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "# comment\nbob:{PLAIN}y:1000:1000::/home/bob::extra=1\nalice:{PLAIN}one\n"
        );
        assert_eq!(edit::list(&path).unwrap(), vec!["bob", "alice"]);
        edit::remove(&path, "bob").unwrap();
        assert!(matches!(
            edit::remove(&path, "bob"),
            Err(AuthError::NoSuchUser(_))
        ));
        assert_eq!(edit::list(&path).unwrap(), vec!["alice"]);
        let mode = fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            edit::add(&path, "../x", "{PLAIN}x"),
            Err(AuthError::InvalidName(..))
        ));
    }

    #[test]
    fn file_is_reloaded_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let watched = UserDbFile::new(path.clone());
        assert!(watched.current().unwrap().0.is_empty());
        edit::add(&path, "alice", "{PLAIN}a").unwrap();
        assert_eq!(watched.current().unwrap().0.len(), 1);
        edit::add(&path, "bob", "{PLAIN}b").unwrap();
        assert_eq!(watched.current().unwrap().0.len(), 2);
    }
}
