//! Where a server's users come from: its passwd-file ([`UserDbFile`]), or a table in the
//! cluster's database, held here as a [`UserReplica`] that the database's owner keeps current.
//!
//! The server answers every login from an in-memory [`UserDb`] either way: mechanisms offered
//! depend on what every user has stored, and an unknown name's decoy on the users' cost
//! classes, which a per-login query could not tell. A replica is filled with every record once
//! and then changed record by record as the database announces changes, so a node sees a new
//! user or password as soon as the database has it. This crate does no networking: whoever
//! follows the database (the PostgreSQL store) feeds the replica.

use crate::error::AuthError;
use crate::userdb::{UserDb, UserDbFile, UserRecord, Warning};
use std::collections::HashMap;
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
    records: HashMap<String, UserRecord>,
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
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.records = records.into_iter().map(|r| (r.name.clone(), r)).collect();
        state.loaded = true;
        state.rebuild();
    }

    /// Applies changed records: `(name, Some(record))` added or changed, `(name, None)` gone.
    pub fn apply(&self, changes: impl IntoIterator<Item = (String, Option<UserRecord>)>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, record) in changes {
            match record {
                Some(r) => state.records.insert(name, r),
                None => state.records.remove(&name),
            };
        }
        state.rebuild();
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.records.len()
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

impl Replica {
    fn rebuild(&mut self) {
        let (db, warnings) = UserDb::from_records(self.records.values());
        self.db = Arc::new(db);
        self.warnings = warnings;
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
