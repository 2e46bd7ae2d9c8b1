//! The user database: a passwd-file in Dovecot's format.
//!
//! Each line is `user:{SCHEME}password[:uid:gid:gecos:home:shell:extra]`; `#` starts a comment.
//! Poplar reads the first two fields and, in the space-separated extra fields, any
//! `x-poplar-secret={SCHEME}data`: further forms of the same password written by
//! `poplar user add --schemes` (say SCRAM-SHA-256 keys and CRAM-MD5 states next to an ARGON2ID
//! hash), so one user can log in with every mechanism the stored forms allow. Everything else is
//! preserved, so an operator can point Poplar at the file Dovecot uses today. Login names are
//! lower-cased (ASCII) before lookup, like Dovecot's default `auth_username_format = %Lu`, so
//! `Alice` and `alice` are one user.
//!
//! A malformed line is skipped with a warning rather than failing the whole file: a typo in one
//! entry must not lock every user out, and a skipped line never grants access. Edits made by
//! `poplar user ...` take an exclusive lock, write a temporary file (mode 0600), fsync it and
//! rename it over the old one, so a crash never leaves a half-written users file.

use crate::cache::CredentialCache;
use crate::directory::{
    Directory, LoginRules, MechanismSecret, SecretKind, Verdict, normalize_name,
};
use crate::error::AuthError;
use crate::sasl::scram::ScramHash;
use crate::scheme::{self, Stored};
use pop3_proto::Secret;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use std::time::SystemTime;

/// Longest accepted user name, in octets.
pub const MAX_NAME_LEN: usize = 255;

/// The extra field that holds further forms of a user's password.
pub const EXTRA_SECRET: &str = "x-poplar-secret=";

/// One user.
#[derive(Debug, Clone)]
pub struct UserEntry {
    /// The stored `{SCHEME}data`, or `None` when the password field is empty (no password
    /// login possible).
    pub password: Option<Secret<String>>,
    /// Further forms of the password (`x-poplar-secret=` extra fields).
    pub extra: Vec<Secret<String>>,
    /// Dovecot quota rules from extra fields (`userdb_quota_rule=*:storage=1G`, `quota_rule=`,
    /// `userdb_quota_rule2=`, ...), as written; the server interprets them.
    pub quota_rules: Vec<String>,
}

impl UserEntry {
    /// A user from a passwd-file line's (or a table row's) fields, with its normalised name;
    /// `None`, with a warning, for a name that cannot be a user. Stored forms of unknown schemes
    /// are kept (they never verify) and reported.
    fn parse(
        line_no: usize,
        name: &str,
        password: &str,
        extra_field: &str,
        warnings: &mut Vec<Warning>,
    ) -> Option<(String, UserEntry)> {
        let name = normalize_name(name);
        if let Err(e) = validate_name(&name) {
            warnings.push(Warning {
                line: line_no,
                reason: e.to_string(),
            });
            return None;
        }
        let mut secrets: Vec<&str> = Vec::new();
        if !password.is_empty() {
            secrets.push(password);
        }
        secrets.extend(
            extra_field
                .split_whitespace()
                .filter_map(|f| f.strip_prefix(EXTRA_SECRET)),
        );
        for stored in &secrets {
            if !scheme::is_supported(stored) {
                let (scheme, _) = scheme::split_scheme(stored);
                warnings.push(Warning {
                    line: line_no,
                    reason: format!(
                        "user {name}: password scheme {{{scheme}}} is not supported; \
                         this user cannot log in with it until the password is reset"
                    ),
                });
            }
        }
        let quota_rules = extra_field
            .split_whitespace()
            .filter_map(|f| {
                let (key, value) = f.split_once('=')?;
                let key = key.strip_prefix("userdb_").unwrap_or(key);
                key.starts_with("quota_rule").then(|| value.to_owned())
            })
            .collect();
        let entry = UserEntry {
            quota_rules,
            password: (!password.is_empty()).then(|| Secret::new(password.to_owned())),
            extra: secrets
                .iter()
                .skip(usize::from(!password.is_empty()))
                .map(|s| Secret::new((*s).to_owned()))
                .collect(),
        };
        Some((name, entry))
    }

    /// The cost class of the primary (first supported) form, and that form.
    fn cost_class(&self) -> Option<(String, &str)> {
        let primary = self.secrets().find(|s| scheme::is_supported(s))?;
        let form = Stored::parse(primary).ok()?;
        Some((form.cost_class(), primary))
    }

    fn secrets(&self) -> impl Iterator<Item = &str> {
        self.password
            .iter()
            .chain(&self.extra)
            .map(|s| s.expose().as_str())
    }

    /// Whether any stored form serves a challenge-response family.
    pub fn serves(&self, kind: SecretKind) -> bool {
        self.secrets()
            .any(|s| Stored::parse(s).is_ok_and(|s| s.serves(kind)))
    }
}

/// How many users can complete each challenge-response mechanism with what is stored for
/// them (PLAIN, LOGIN and USER work for every supported scheme). CAPA offers such a mechanism
/// automatically only when every user can: clients that pick the strongest mechanism offered
/// would otherwise fail for the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MechanismSupport {
    /// Users with at least one password form.
    pub users: usize,
    /// Users with a plaintext-equivalent secret (APOP).
    pub apop: usize,
    /// Users with a CRAM-MD5 secret.
    pub cram_md5: usize,
    /// Users with a SCRAM-SHA-1 secret.
    pub scram_sha1: usize,
    /// Users with a SCRAM-SHA-256 secret.
    pub scram_sha256: usize,
}

impl MechanismSupport {
    /// What one user adds to the counts.
    fn of(entry: &UserEntry) -> Self {
        if entry.secrets().next().is_none() {
            return Self::default();
        }
        let one = |kind| usize::from(entry.serves(kind));
        Self {
            users: 1,
            apop: one(SecretKind::Apop),
            cram_md5: one(SecretKind::CramMd5),
            scram_sha1: one(SecretKind::Scram(ScramHash::Sha1)),
            scram_sha256: one(SecretKind::Scram(ScramHash::Sha256)),
        }
    }

    /// Adds (`add`) or takes away one user's counts.
    fn change(&mut self, by: Self, add: bool) {
        let apply = |total: &mut usize, n: usize| {
            *total = if add {
                *total + n
            } else {
                total.saturating_sub(n)
            }
        };
        apply(&mut self.users, by.users);
        apply(&mut self.apop, by.apop);
        apply(&mut self.cram_md5, by.cram_md5);
        apply(&mut self.scram_sha1, by.scram_sha1);
        apply(&mut self.scram_sha256, by.scram_sha256);
    }

    /// The users who can use a mechanism of this kind.
    pub fn count(&self, kind: SecretKind) -> usize {
        match kind {
            SecretKind::Apop => self.apop,
            SecretKind::CramMd5 => self.cram_md5,
            SecretKind::Scram(ScramHash::Sha1) => self.scram_sha1,
            SecretKind::Scram(ScramHash::Sha256) => self.scram_sha256,
        }
    }

    /// Every user with a password can use it (and there is at least one).
    pub fn everyone(&self, kind: SecretKind) -> bool {
        self.users > 0 && self.count(kind) == self.users
    }

    /// At least one user can use it.
    pub fn someone(&self, kind: SecretKind) -> bool {
        self.count(kind) > 0
    }
}

/// What the password given for a name that is not a user (or has no password) is checked
/// against, so that the check costs what a real user's costs and the answer's timing does not
/// tell the two apart.
#[derive(Debug, Clone, Copy)]
pub struct Decoy<'a> {
    /// Checked when no user has a password (a hash of a random password).
    pub fallback: &'a str,
    /// A server secret that picks, per name, which kind of stored password the name imitates:
    /// the same name always costs the same, across restarts, and over many names the costs
    /// are spread as the real users' are.
    pub key: &'a [u8],
}

/// A parsed users file, or the users of a database table. Cloning shares the entries, so a
/// replica changed while logins still read the previous version costs one table of pointers.
#[derive(Debug, Default, Clone)]
pub struct UserDb {
    users: HashMap<Arc<str>, Arc<UserEntry>>,
    support: MechanismSupport,
    /// By cost class of the users' primary forms: one real stored form of that class and the
    /// number of users in it (see [`Decoy`]).
    decoys: BTreeMap<String, (String, usize)>,
}

/// One user as a table row holds it: the passwd-file's first, second and eighth fields (the
/// rest of a passwd-file line, uid to shell, means nothing to Poplar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The login name, normalised.
    pub name: String,
    /// The primary stored form, `{SCHEME}data`; empty: no password login.
    pub password: String,
    /// Space-separated extra fields: `x-poplar-secret=` forms, quota rules, anything else.
    pub extra: String,
}

impl UserRecord {
    /// `name` with the forms of one password (`{SCHEME}data`, the first primary, the others
    /// as `x-poplar-secret=` fields) and the other fields of `previous_extra` kept.
    pub fn with_forms(name: String, forms: &[String], previous_extra: &str) -> Self {
        let mut extra: Vec<&str> = Vec::new();
        let secrets: Vec<String> = forms
            .iter()
            .skip(1)
            .map(|f| format!("{EXTRA_SECRET}{f}"))
            .collect();
        extra.extend(secrets.iter().map(String::as_str));
        extra.extend(
            previous_extra
                .split_whitespace()
                .filter(|f| !f.starts_with(EXTRA_SECRET)),
        );
        Self {
            name,
            password: forms.first().cloned().unwrap_or_default(),
            extra: extra.join(" "),
        }
    }
}

/// A line that was skipped while parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
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
        .rsplit_once('@')
        .is_some_and(|(_, domain)| domain.eq_ignore_ascii_case("_default_"))
    {
        return bad("the domain _default_ is reserved for names without a domain");
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
        let (records, mut warnings) = Self::lines(text);
        let (db, more) = Self::build(records);
        warnings.extend(more);
        (db, warnings)
    }

    /// The records of a users file's text, as a table would hold them (`poplar user import`),
    /// with their line numbers; lines without a password field are reported.
    pub fn records(text: &str) -> (Vec<(usize, UserRecord)>, Vec<Warning>) {
        let (lines, warnings) = Self::lines(text);
        let records = lines
            .into_iter()
            .map(|(line, name, password, extra)| {
                (
                    line,
                    UserRecord {
                        name: normalize_name(name),
                        password: password.to_owned(),
                        extra: extra.to_owned(),
                    },
                )
            })
            .collect();
        (records, warnings)
    }

    /// A users file's entries: (line, name, password field, extra fields).
    #[allow(clippy::type_complexity)]
    fn lines(text: &str) -> (Vec<(usize, &str, &str, &str)>, Vec<Warning>) {
        let mut records = Vec::new();
        let mut warnings = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            // The eighth field, the extra fields, is the rest of the line: it may hold ':' itself
            // (`userdb_quota_rule=*:storage=1G`).
            let mut fields = line.splitn(8, ':');
            let (Some(name), Some(password)) = (fields.next(), fields.next()) else {
                warnings.push(Warning {
                    line: i + 1,
                    reason: "no ':' after the user name".into(),
                });
                continue;
            };
            let extra = fields.nth(5).unwrap_or("");
            records.push((i + 1, name, password, extra));
        }
        (records, warnings)
    }

    /// The database of `records` as a table holds them (a user's name, password field and
    /// extra fields, as in the passwd-file). Records that cannot be used are skipped with a
    /// warning (line 0).
    pub fn from_records<'a>(
        records: impl IntoIterator<Item = &'a UserRecord>,
    ) -> (Self, Vec<Warning>) {
        Self::build(
            records
                .into_iter()
                .map(|r| (0, r.name.as_str(), r.password.as_str(), r.extra.as_str())),
        )
    }

    /// The database of (line, name, password field, extra fields) records; of a name listed
    /// twice, the first counts.
    fn build<'a>(
        records: impl IntoIterator<Item = (usize, &'a str, &'a str, &'a str)>,
    ) -> (Self, Vec<Warning>) {
        let mut db = Self::default();
        let mut warnings = Vec::new();
        for (line_no, name, password, extra_field) in records {
            let Some((name, entry)) =
                UserEntry::parse(line_no, name, password, extra_field, &mut warnings)
            else {
                continue;
            };
            if db.users.contains_key(name.as_str()) {
                warnings.push(Warning {
                    line: line_no,
                    reason: format!("user {name} is listed again; the first entry is used"),
                });
                continue;
            }
            db.insert(name, entry);
        }
        (db, warnings)
    }

    /// Adds or replaces a user from a table's record (a replica following changes); returns
    /// what is wrong with the record (an unusable one is not added, and an earlier entry of
    /// that name is removed).
    pub fn upsert(&mut self, record: &UserRecord) -> Vec<Warning> {
        let mut warnings = Vec::new();
        let parsed = UserEntry::parse(
            0,
            &record.name,
            &record.password,
            &record.extra,
            &mut warnings,
        );
        self.remove(&record.name);
        if let Some((name, entry)) = parsed {
            self.insert(name, entry);
        }
        warnings
    }

    /// Removes a user (a replica following changes).
    pub fn remove(&mut self, name: &str) {
        if let Some(old) = self.users.remove(normalize_name(name).as_str()) {
            self.support.change(MechanismSupport::of(&old), false);
            if let Some((class, _)) = old.cost_class()
                && let Some(counted) = self.decoys.get_mut(&class)
            {
                counted.1 = counted.1.saturating_sub(1);
                if counted.1 == 0 {
                    self.decoys.remove(&class);
                }
            }
        }
    }

    /// Adds a user that is not there yet, with its counts.
    fn insert(&mut self, name: String, entry: UserEntry) {
        self.support.change(MechanismSupport::of(&entry), true);
        if let Some((class, primary)) = entry.cost_class() {
            self.decoys
                .entry(class)
                .or_insert_with(|| (primary.to_owned(), 0))
                .1 += 1;
        }
        self.users.insert(name.into(), Arc::new(entry));
    }

    /// The users with a password who cannot use a mechanism of this kind, sorted (what
    /// `check-config` lists when such a mechanism is offered anyway).
    pub fn lacking(&self, kind: SecretKind) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .users
            .iter()
            .filter(|(_, u)| u.secrets().next().is_some() && !u.serves(kind))
            .map(|(n, _)| &**n)
            .collect();
        names.sort_unstable();
        names
    }

    /// The stored form an unknown `name`'s password is checked against (see [`Decoy`]).
    pub fn decoy_for<'a>(&'a self, name: &str, decoy: &Decoy<'a>) -> &'a str {
        use hmac::{Hmac, Mac};
        let total: usize = self.decoys.values().map(|(_, n)| n).sum();
        if total == 0 {
            return decoy.fallback;
        }
        let Ok(mac) = Hmac::<sha2::Sha256>::new_from_slice(decoy.key) else {
            return decoy.fallback;
        };
        let digest = mac
            .chain_update(b"decoy\0")
            .chain_update(normalize_name(name).as_bytes())
            .finalize()
            .into_bytes();
        let mut pick = [0u8; 8];
        pick.copy_from_slice(&digest[..8]);
        let mut left = u64::from_le_bytes(pick) % total as u64;
        for (stored, n) in self.decoys.values() {
            if left < *n as u64 {
                return stored;
            }
            left -= *n as u64;
        }
        decoy.fallback
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
        self.users
            .get(normalize_name(name).as_str())
            .map(Arc::as_ref)
    }

    /// Every user name (normalised), in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(|k| k.as_ref())
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Which challenge-response mechanisms the stored data allows for at least one user.
    pub fn support(&self) -> MechanismSupport {
        self.support
    }

    /// Checks a password against the user's stored forms, the primary one first. For an
    /// unknown user (or one without a password) a decoy form is checked instead and its result
    /// thrown away ([`UserDb::decoy_for`]), so both cases take the time of a wrong password.
    pub fn verify(
        &self,
        name: &str,
        password: &[u8],
        decoy: &Decoy<'_>,
    ) -> Result<Verdict, AuthError> {
        let key = normalize_name(name);
        let Some(user) = self
            .users
            .get(key.as_str())
            .filter(|u| u.secrets().next().is_some())
        else {
            let _ = scheme::verify(self.decoy_for(&key, decoy), password);
            return Ok(Verdict::Invalid);
        };
        let mut first_error = None;
        for stored in user.secrets() {
            match scheme::verify(stored, password) {
                Ok(true) => return Ok(Verdict::Valid(key)),
                Ok(false) => return Ok(Verdict::Invalid),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(Verdict::Invalid), Err)
    }

    /// Whether `cache` remembers this password as verified for this user's current stored
    /// forms (microseconds: an HMAC and a lookup).
    pub fn cached(&self, name: &str, password: &[u8], cache: &CredentialCache) -> bool {
        let key = normalize_name(name);
        self.users.get(key.as_str()).is_some_and(|u| {
            let stored: Vec<&str> = u.secrets().collect();
            !stored.is_empty() && cache.hit(&key, &stored, password, Instant::now())
        })
    }

    /// [`verify`](Self::verify) through `cache`: a password it remembers for the user's
    /// current stored forms is accepted at once; a verified one is remembered.
    pub fn verify_cached(
        &self,
        name: &str,
        password: &[u8],
        decoy: &Decoy<'_>,
        cache: Option<&CredentialCache>,
    ) -> Result<Verdict, AuthError> {
        let Some(cache) = cache else {
            return self.verify(name, password, decoy);
        };
        if self.cached(name, password, cache) {
            return Ok(Verdict::Valid(normalize_name(name)));
        }
        let verdict = self.verify(name, password, decoy)?;
        if let Verdict::Valid(key) = &verdict
            && let Some(user) = self.users.get(key.as_str())
        {
            let stored: Vec<&str> = user.secrets().collect();
            cache.remember(key, &stored, password, Instant::now());
        }
        Ok(verdict)
    }

    /// Whether [`verify`](Self::verify) for this name takes microseconds: every stored form
    /// uses a fast scheme (see [`Stored::is_fast`]); for a name that is not a user, its decoy
    /// does. Such checks need not wait for a hashing thread.
    pub fn verifies_fast(&self, name: &str, decoy: &Decoy<'_>) -> bool {
        let fast = |s: &str| Stored::parse(s).is_ok_and(|f| f.is_fast());
        match self
            .users
            .get(normalize_name(name).as_str())
            .filter(|u| u.secrets().next().is_some())
        {
            Some(u) => u.secrets().all(fast),
            None => fast(self.decoy_for(name, decoy)),
        }
    }

    /// A view for SASL mechanisms, with the decoy used for unknown users, the master users
    /// (who may act as any other user) and the SDPS hosts (whose people log in with the host's
    /// password unless they have their own).
    pub fn directory<'a>(
        &'a self,
        decoy: Decoy<'a>,
        masters: &'a [String],
        rules: &'a LoginRules,
    ) -> UserDirectory<'a> {
        UserDirectory {
            db: self,
            decoy,
            masters,
            rules,
            cache: None,
        }
    }

    /// For a login name, `(the entry whose credentials it uses, the name the session gets)`.
    /// Usually both are the normalised name; an SDPS login (`john@example.net`,
    /// `john+example.net`) without an entry of its own uses the host's entry and keeps the
    /// person's address as its name.
    pub fn login_entry(&self, name: &str, rules: &LoginRules) -> (String, String) {
        match rules.sdps_login(name) {
            Some((login, _)) if self.get(&login).is_some() => (login.clone(), login),
            Some((login, host)) => (host, login),
            None => {
                let name = rules.canonical(name);
                (name.clone(), name)
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
            .get(key.as_str())
            .and_then(|u| u.secrets().find_map(scheme::plaintext_equivalent));
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

/// The user database as SASL mechanisms see it.
#[derive(Debug, Clone, Copy)]
pub struct UserDirectory<'a> {
    db: &'a UserDb,
    decoy: Decoy<'a>,
    masters: &'a [String],
    rules: &'a LoginRules,
    cache: Option<&'a CredentialCache>,
}

impl<'a> UserDirectory<'a> {
    /// Password checks (PLAIN, LOGIN) go through `cache`.
    pub fn with_cache(self, cache: &'a CredentialCache) -> Self {
        Self {
            cache: Some(cache),
            ..self
        }
    }
}

impl Directory for UserDirectory<'_> {
    fn secret(&self, user: &str, kind: SecretKind) -> Option<MechanismSecret> {
        let (entry, _) = self.db.login_entry(user, self.rules);
        let entry = self.db.users.get(entry.as_str())?;
        // Prefer a form made for the mechanism over deriving one from a plaintext.
        let forms: Vec<Stored<'_>> = entry
            .secrets()
            .filter_map(|s| Stored::parse(s).ok())
            .collect();
        forms
            .iter()
            .filter(|s| s.serves(kind))
            .find_map(|s| match s.mechanism_secret(kind) {
                Some(MechanismSecret::Plaintext(_)) => None,
                other => other,
            })
            .or_else(|| forms.iter().find_map(|s| s.mechanism_secret(kind)))
    }

    fn check_password(&self, user: &str, password: &[u8]) -> Result<Verdict, AuthError> {
        let (entry, login) = self.db.login_entry(user, self.rules);
        Ok(
            match self
                .db
                .verify_cached(&entry, password, &self.decoy, self.cache)?
            {
                Verdict::Valid(_) => Verdict::Valid(login),
                Verdict::Invalid => Verdict::Invalid,
            },
        )
    }

    fn exists(&self, user: &str) -> bool {
        let (entry, _) = self.db.login_entry(user, self.rules);
        self.db.get(&entry).is_some()
    }

    fn may_act_as(&self, user: &str, authzid: &str) -> bool {
        let user = normalize_name(user);
        self.masters.iter().any(|m| normalize_name(m) == user) && self.exists(authzid)
    }

    fn canonical(&self, name: &str) -> String {
        self.rules.canonical(name)
    }
}

/// A users file that is re-read whenever it changes on disk, so `poplar user add` takes effect
/// on a running server without a restart. Clones share one parsed copy (authentication and
/// the quota rules read the same file).
#[derive(Debug, Clone)]
pub struct UserDbFile {
    path: PathBuf,
    state: Arc<Mutex<Option<Loaded>>>,
}

/// The database as last read, and the file's stamp then.
type Loaded = (FileStamp, Arc<UserDb>);

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
            state: Arc::new(Mutex::new(None)),
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

    /// Adds a user with already hashed forms of one password (`{SCHEME}data`): the first goes
    /// in the password field, the others in `x-poplar-secret=` extra fields.
    pub fn add(path: &Path, name: &str, forms: &[String]) -> Result<(), AuthError> {
        let name = normalize_name(name);
        validate_name(&name)?;
        rewrite(path, |lines| {
            if lines.iter().any(|l| line_user(l) == Some(&name)) {
                return Err(AuthError::UserExists(name.to_owned()));
            }
            lines.push(compose(&name, forms));
            Ok(())
        })
    }

    /// Replaces a user's password forms, keeping the line's other fields.
    pub fn set_password(path: &Path, name: &str, forms: &[String]) -> Result<(), AuthError> {
        let name = normalize_name(name);
        rewrite(path, |lines| {
            let line = lines
                .iter_mut()
                .find(|l| line_user(l) == Some(&name))
                .ok_or_else(|| AuthError::NoSuchUser(name.clone()))?;
            *line = compose(line, forms);
            Ok(())
        })
    }

    /// A passwd-file line from an existing line (or just a user name) with its password forms
    /// replaced: the first form in field 2, the rest as `x-poplar-secret=` extra fields; uid,
    /// gid, gecos, home, shell and other extra fields are kept. Short lines stay short.
    fn compose(line: &str, forms: &[String]) -> String {
        let mut fields: Vec<String> = line.splitn(8, ':').map(str::to_owned).collect();
        let extra_field = if fields.len() == 8 {
            fields.pop().unwrap_or_default()
        } else {
            String::new()
        };
        fields.resize(7, String::new());
        let record = UserRecord::with_forms(String::new(), forms, &extra_field);
        fields[1] = record.password;
        if !record.extra.is_empty() {
            fields.push(record.extra);
        }
        while fields.len() > 2 && fields.last().is_some_and(String::is_empty) {
            fields.pop();
        }
        fields.join(":")
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
carol:{MD5-CRYPT}$1$okxCKmmv$ymiFldsJQi0R7vVSvn7J.0
alice:{PLAIN}again
../evil:{PLAIN}x
";

    #[test]
    fn dovecot_quota_rules_are_kept_with_their_colons() {
        let (db, warnings) = UserDb::parse(
            "bob:{PLAIN}x:1000:1000::/home/bob::userdb_quota_rule=*:storage=1G userdb_quota_rule2=Trash:ignore quota_rule=*:messages=10\n",
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            db.get("bob").unwrap().quota_rules,
            ["*:storage=1G", "Trash:ignore", "*:messages=10"]
        );
    }

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
        assert!(warnings[1].reason.contains("MD5-CRYPT"));
    }

    const KEY: &[u8] = b"a server secret of some length...";

    #[test]
    fn verify_does_not_distinguish_unknown_users() {
        let (db, _) = UserDb::parse(FILE);
        let fallback = scheme::decoy_hash().unwrap();
        let decoy = Decoy {
            fallback: &fallback,
            key: KEY,
        };
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
    fn only_users_stored_with_fast_schemes_verify_fast() {
        let (db, _) = UserDb::parse(
            "p:{PLAIN}pw\ns:{SSHA256}c29tZWhhc2hzb21lc2FsdHNvbWVoYXNoc29tZXNhbHQxMjM0\n\
             a:{ARGON2ID}$argon2id$x\nmixed:{PLAIN}pw::::::x-poplar-secret={ARGON2ID}$argon2id$x\n",
        );
        let decoy = Decoy {
            fallback: "{ARGON2ID}$argon2id$fallback",
            key: KEY,
        };
        assert!(db.verifies_fast("p", &decoy));
        assert!(db.verifies_fast("S", &decoy));
        assert!(!db.verifies_fast("a", &decoy));
        assert!(!db.verifies_fast("mixed", &decoy));
        // A name that is no user takes its decoy's path: slow among slow users, fast among
        // fast ones.
        let (slow, _) = UserDb::parse(
            "a:{ARGON2ID}$argon2id$x
b:{ARGON2ID}$argon2id$y
",
        );
        assert!(!slow.verifies_fast("nobody", &decoy));
        let (fast, _) = UserDb::parse(
            "p:{PLAIN}pw
q:{PLAIN}qw
",
        );
        assert!(fast.verifies_fast("nobody", &decoy));
        assert!(
            !UserDb::default().verifies_fast("nobody", &decoy),
            "the fallback"
        );
    }

    #[test]
    fn decoys_imitate_the_users_cost_classes_in_proportion() {
        // Three Argon2 users with Poplar's parameters, one with Dovecot's, and six imported
        // SHA512-CRYPT users: unknown names must spread over those classes as the users do,
        // each name always to the same one.
        let mut file = String::new();
        for i in 0..3 {
            let form = scheme::hash("ARGON2ID", format!("pw{i}").as_bytes()).unwrap();
            file.push_str(&format!("argon{i}:{form}\n"));
        }
        file.push_str("dovecot:{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdHNhbHQ$aGFzaA\n");
        for i in 0..6 {
            let form = scheme::hash("SHA512-CRYPT", format!("pw{i}").as_bytes()).unwrap();
            file.push_str(&format!("imported{i}:{form}\n"));
        }
        let (db, warnings) = UserDb::parse(&file);
        assert!(warnings.is_empty(), "{warnings:?}");
        let decoy = Decoy {
            fallback: "{PLAIN}x",
            key: KEY,
        };
        let class = |stored: &str| Stored::parse(stored).unwrap().cost_class();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for i in 0..10_000 {
            let name = format!("nobody{i}");
            let chosen = db.decoy_for(&name, &decoy);
            assert_eq!(
                chosen,
                db.decoy_for(&name.to_uppercase(), &decoy),
                "stable per name"
            );
            *seen.entry(class(chosen)).or_default() += 1;
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        let share = |prefix: &str, m: &str| {
            seen.iter()
                .filter(|(c, _)| c.starts_with(prefix) && c.contains(m))
                .map(|(_, n)| *n)
                .sum::<usize>()
        };
        // Expected 3000, 1000 and 6000 of 10 000.
        assert!(
            (2700..3300).contains(&share("ARGON2ID", "m=19456")),
            "{seen:?}"
        );
        assert!(
            (800..1200).contains(&share("ARGON2ID", "m=65536")),
            "{seen:?}"
        );
        assert!(
            (5600..6400).contains(&share("SHA512-CRYPT", "")),
            "{seen:?}"
        );
        let other = Decoy {
            fallback: "{PLAIN}x",
            key: b"another server's secret........",
        };
        let differs = (0..100)
            .filter(|i| {
                let n = format!("nobody{i}");
                class(db.decoy_for(&n, &decoy)) != class(db.decoy_for(&n, &other))
            })
            .count();
        assert!(differs > 10, "the choice depends on the server's secret");
    }

    #[test]
    fn mechanism_support_counts_users_with_a_password() {
        let (db, _) = UserDb::parse(
            "a:{ARGON2ID}$argon2id$x::::::x-poplar-secret={SCRAM-SHA-256}4096,c2FsdA==,a2V5,a2V5\n\
             p:{PLAIN}pw\nh:{SHA512-CRYPT}$6$salt$hash\nnopass:\n",
        );
        let s = db.support();
        assert_eq!(s.users, 3, "nopass cannot log in at all and does not count");
        assert_eq!(s.count(SecretKind::Scram(ScramHash::Sha256)), 2);
        assert_eq!(s.count(SecretKind::CramMd5), 1);
        assert!(!s.everyone(SecretKind::CramMd5) && s.someone(SecretKind::CramMd5));
        assert_eq!(db.lacking(SecretKind::Scram(ScramHash::Sha256)), ["h"]);
        assert_eq!(db.lacking(SecretKind::Apop), ["a", "h"]);
        let (all, _) = UserDb::parse("p:{PLAIN}pw\nq:{PLAIN}qw\n");
        assert!(all.support().everyone(SecretKind::Scram(ScramHash::Sha1)));
        assert!(!UserDb::default().support().everyone(SecretKind::Apop));
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
            "alice@_default_",
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
        edit::add(&path, "Alice", &["{PLAIN}one".into()]).unwrap();
        assert!(matches!(
            edit::add(&path, "alice", &["{PLAIN}two".into()]),
            Err(AuthError::UserExists(_))
        ));
        edit::set_password(&path, "bob", &["{PLAIN}y".into()]).unwrap();
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
            edit::add(&path, "../x", &["{PLAIN}x".into()]),
            Err(AuthError::InvalidName(..))
        ));
    }

    #[test]
    fn several_forms_of_one_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let forms: Vec<String> = ["ARGON2ID", "SCRAM-SHA-256", "CRAM-MD5"]
            .iter()
            .map(|s| scheme::hash(s, b"pw").unwrap())
            .collect();
        edit::add(&path, "alice", &forms).unwrap();
        fs::write(
            &path,
            fs::read_to_string(&path).unwrap() + "bob:{PLAIN}x:1000:1000::/home/bob::quota=1G\n",
        )
        .unwrap();
        edit::set_password(&path, "bob", &forms).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let bob = text.lines().find(|l| l.starts_with("bob:")).unwrap();
        assert!(
            bob.contains(":1000:1000::/home/bob::x-poplar-secret={SCRAM-SHA-256}"),
            "{bob}"
        );
        assert!(bob.ends_with(" quota=1G"), "{bob}");
        let (db, warnings) = UserDb::parse(&text);
        assert!(warnings.is_empty(), "{warnings:?}");
        let fallback = scheme::decoy_hash().unwrap();
        let decoy = Decoy {
            fallback: &fallback,
            key: KEY,
        };
        for user in ["alice", "bob"] {
            assert_eq!(
                db.verify(user, b"pw", &decoy).unwrap(),
                Verdict::Valid(user.into())
            );
            let u = db.get(user).unwrap();
            assert!(
                u.serves(SecretKind::CramMd5) && u.serves(SecretKind::Scram(ScramHash::Sha256))
            );
            assert!(!u.serves(SecretKind::Scram(ScramHash::Sha1)) && !u.serves(SecretKind::Apop));
        }
        let support = db.support();
        assert_eq!(
            (
                support.cram_md5,
                support.scram_sha256,
                support.scram_sha1,
                support.apop
            ),
            (2, 2, 0, 0)
        );
        let rules = LoginRules::default();
        let dir = db.directory(decoy, &[], &rules);
        assert!(matches!(
            dir.secret("alice", SecretKind::Scram(ScramHash::Sha256)),
            Some(MechanismSecret::Scram(_))
        ));
        assert!(
            dir.secret("alice", SecretKind::Scram(ScramHash::Sha1))
                .is_none()
        );
        // A plaintext user can serve everything, derived on the fly.
        let (db, _) = UserDb::parse("p:{PLAIN}pw\n");
        assert_eq!(
            db.support(),
            MechanismSupport {
                users: 1,
                apop: 1,
                cram_md5: 1,
                scram_sha1: 1,
                scram_sha256: 1
            }
        );
    }

    #[test]
    fn file_is_reloaded_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let watched = UserDbFile::new(path.clone());
        assert!(watched.current().unwrap().0.is_empty());
        edit::add(&path, "alice", &["{PLAIN}a".into()]).unwrap();
        assert_eq!(watched.current().unwrap().0.len(), 1);
        edit::add(&path, "bob", &["{PLAIN}b".into()]).unwrap();
        assert_eq!(watched.current().unwrap().0.len(), 2);
    }
}
