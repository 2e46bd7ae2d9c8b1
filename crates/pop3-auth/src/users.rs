//! Where a server's users come from: its passwd-file ([`UserDbFile`]), or a table in the
//! cluster's database, held here as a [`UserReplica`] that the database's owner keeps current.
//!
//! The server answers every login from an in-memory [`UserDb`] either way: mechanisms offered
//! depend on what every user has stored, and an unknown name's decoy on the users' cost
//! classes, which a per-login query could not tell. A replica is filled with every record once
//! and then changed record by record as the database announces changes, so a node sees a new
//! user or password as soon as the database has it, at the cost of the change alone. This crate does no networking: whoever
//! follows the database (the PostgreSQL store) feeds the replica.

use crate::error::AuthError;
use crate::userdb::{UserDb, UserDbFile, UserRecord, Warning};
use std::sync::{Arc, Mutex, PoisonError};

/// The users a server authenticates.
#[derive(Debug, Clone)]
pub enum Users {
    /// A passwd-file, re-read when it changes.
    File(UserDbFile),
    /// A copy of a database table, kept current by the database's follower.
    Replica(UserReplica),
}

impl Users {
    /// The current database, with warnings about records that were skipped since the last
    /// call (to be logged once).
    pub fn current(&self) -> Result<(Arc<UserDb>, Vec<Warning>), AuthError> {
        match self {
            Users::File(file) => file.current(),
            Users::Replica(replica) => replica.current(),
        }
    }

    /// Where the users are, for messages: the file's path, or the database.
    pub fn describe(&self) -> String {
        match self {
            Users::File(file) => format!("users file {}", file.path().display()),
            Users::Replica(_) => "users table in the database".to_owned(),
        }
    }
}

/// The users of a database table as last announced.
#[derive(Debug, Clone, Default)]
pub struct UserReplica {
    state: Arc<Mutex<Replica>>,
}

#[derive(Debug, Default)]
struct Replica {
    db: Arc<UserDb>,
    /// Filled at least once: until then, logins fail temporarily rather than as unknown users.
    loaded: bool,
    /// Warnings of the last rebuild, not yet handed out.
    warnings: Vec<Warning>,
}

impl UserReplica {
    /// An empty replica, not yet loaded.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces every record (the first load, and after the follower lost track).
    pub fn replace(&self, records: impl IntoIterator<Item = UserRecord>) {
        let records: Vec<UserRecord> = records.into_iter().collect();
        let (db, warnings) = UserDb::from_records(&records);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.db = Arc::new(db);
        state.warnings = warnings;
        state.loaded = true;
    }

    /// Applies changed records: `(name, Some(record))` added or changed, `(name, None)` gone.
    /// Costs what the changes cost, not what the whole table would: logins that still hold
    /// the previous version keep it, and the new one shares every unchanged entry with it.
    pub fn apply(&self, changes: impl IntoIterator<Item = (String, Option<UserRecord>)>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut warnings = Vec::new();
        let db = Arc::make_mut(&mut state.db);
        for (name, record) in changes {
            match record {
                Some(r) => warnings.extend(db.upsert(&r)),
                None => db.remove(&name),
            }
        }
        state.warnings.extend(warnings);
    }

    /// How many users it holds.
    pub fn len(&self) -> usize {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.db.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The current database; an error until the first load.
    pub fn current(&self) -> Result<(Arc<UserDb>, Vec<Warning>), AuthError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.loaded {
            return Err(AuthError::Unavailable(
                "the users table has not been read from the database yet".into(),
            ));
        }
        Ok((Arc::clone(&state.db), std::mem::take(&mut state.warnings)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, password: &str) -> UserRecord {
        UserRecord {
            name: name.into(),
            password: password.into(),
            extra: String::new(),
        }
    }

    #[test]
    fn a_replica_answers_only_once_loaded_and_follows_changes() {
        let replica = UserReplica::new();
        let users = Users::Replica(replica.clone());
        assert!(matches!(users.current(), Err(AuthError::Unavailable(_))));
        replica.replace([record("alice", "{PLAIN}a"), record("bob", "{PLAIN}b")]);
        let (db, _) = users.current().unwrap();
        assert_eq!(db.len(), 2);
        replica.apply([
            ("alice".to_owned(), None),
            ("carol".to_owned(), Some(record("carol", "{PLAIN}c"))),
            ("bob".to_owned(), Some(record("bob", "{PLAIN}new"))),
        ]);
        let (db, _) = users.current().unwrap();
        assert!(db.get("alice").is_none());
        assert!(db.get("carol").is_some());
        let bob = db.get("bob").unwrap();
        assert_eq!(bob.password.as_ref().unwrap().expose(), "{PLAIN}new");
    }

    /// Changes applied one by one give the database a fresh read of the same table gives:
    /// the same users, mechanism counts and decoys.
    #[test]
    fn changes_applied_equal_a_fresh_read() {
        use crate::directory::SecretKind;
        let forms = [
            "{PLAIN}p",
            "{CRAM-MD5}e02d374fde0dc75a17a557039a3a5338c7743304777dccd376f332bee68d2cf6",
            "{SSHA512}rHcm6Fh7MAnxTPAzh1YnwXCcWKzJVr11lr2XQm9umzzJ/5u5ljn/1u4apWa5kTWIvlDtuw2ktPuOqswKI3dY3Kxn5vg=",
            "",
        ];
        let record = |i: usize, f: usize| UserRecord {
            name: format!("user{i}"),
            password: forms[f % forms.len()].into(),
            extra: if f.is_multiple_of(3) {
                format!("x-poplar-secret={}", forms[1])
            } else {
                String::new()
            },
        };
        let replica = UserReplica::new();
        let mut table: std::collections::BTreeMap<usize, UserRecord> =
            (0..20).map(|i| (i, record(i, i))).collect();
        replica.replace(table.values().cloned());
        for step in 0..60usize {
            let i = (step * 7) % 25;
            let change = if step % 4 == 3 {
                table.remove(&i);
                None
            } else {
                let r = record(i, step);
                table.insert(i, r.clone());
                Some(r)
            };
            replica.apply([(format!("user{i}"), change)]);
            let (incremental, _) = replica.current().unwrap();
            let (fresh, _) = UserDb::from_records(table.values());
            assert_eq!(incremental.len(), fresh.len(), "step {step}");
            assert_eq!(incremental.support(), fresh.support(), "step {step}");
            for kind in [SecretKind::Apop, SecretKind::CramMd5] {
                assert_eq!(
                    incremental.lacking(kind),
                    fresh.lacking(kind),
                    "step {step}"
                );
            }
            let decoy = crate::userdb::Decoy {
                fallback: "{PLAIN}fallback",
                key: b"key",
            };
            for name in ["nobody", "x", "unknown-user"] {
                assert_eq!(
                    incremental.decoy_for(name, &decoy).split('}').next(),
                    fresh.decoy_for(name, &decoy).split('}').next(),
                    "step {step}"
                );
            }
        }
    }

    #[test]
    fn bad_records_are_skipped_with_a_warning_given_once() {
        let replica = UserReplica::new();
        replica.replace([record("../evil", "{PLAIN}x"), record("ok", "{NOSUCH}x")]);
        let (db, warnings) = replica.current().unwrap();
        assert_eq!(db.len(), 1);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(replica.current().unwrap().1.is_empty());
    }

    #[test]
    fn forms_replace_secrets_and_keep_other_fields() {
        let r = UserRecord::with_forms(
            "bob".into(),
            &["{ARGON2ID}h".into(), "{SCRAM-SHA-256}k".into()],
            "x-poplar-secret={CRAM-MD5}old userdb_quota_rule=*:storage=1G",
        );
        assert_eq!(r.password, "{ARGON2ID}h");
        assert_eq!(
            r.extra,
            "x-poplar-secret={SCRAM-SHA-256}k userdb_quota_rule=*:storage=1G"
        );
    }
}
