//! The crate's one error type.

use std::path::PathBuf;
use thiserror::Error;

/// Errors from opening, reading, changing or delivering to a maildrop.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another session holds the maildrop lock (another client is logged in): retry later.
    #[error("maildrop is locked by another session")]
    InUse,
    /// A name that cannot be mapped safely to a maildrop (caller's input at fault).
    #[error("invalid mailbox name {0:?}: {1}")]
    InvalidMailbox(String, &'static str),
    /// An operating-system error on a file or directory.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The index lock (`dovecot-uidlist.lock`) stayed held by another process for too long.
    #[error("{path} is held by another process; gave up waiting")]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
    },
    /// The message disappeared from the maildrop (removed by another program).
    #[error("message {0} is no longer in the maildrop")]
    MessageGone(usize),
    /// Some messages marked for deletion could not be removed; the rest were.
    #[error("{failed} of {total} deleted messages could not be removed: {first}")]
    PartialCommit {
        /// How many removals failed.
        failed: usize,
        /// How many were requested.
        total: usize,
        /// The first failure.
        first: String,
    },
    /// A delivery with no message data.
    #[error("the message is empty")]
    EmptyMessage,
    /// A delivery larger than the configured maximum message size.
    #[error("the message is larger than the {limit}-octet limit")]
    MessageTooLarge {
        /// The limit, in octets.
        limit: u64,
    },
    /// The delivery would take the maildrop past its quota.
    #[error("over quota: {usage}")]
    OverQuota {
        /// What the maildrop holds against its limits, for the refusal.
        usage: String,
        /// The refusal is permanent (configured so) rather than temporary.
        permanent: bool,
    },
    /// A migration source that cannot be read as asked (a bad `pop3_uidl_format`, an unknown
    /// index version, an invalid UIDL).
    #[error("{0}")]
    Source(String),
    /// The shared database failed: unreachable, its connection lost, or a query refused (the
    /// database operator's to fix; temporary for the client, who may try again).
    #[error("database: {0}")]
    Database(String),
    /// A background task failed unexpectedly (a bug, or the runtime shutting down).
    #[error("internal error: {0}")]
    Internal(String),
}

impl StoreError {
    /// An operating-system error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether retrying later may succeed (`[SYS/TEMP]`, sysexits 75) as opposed to a problem
    /// that needs an administrator (`[SYS/PERM]`) or a different request.
    pub fn is_temporary(&self) -> bool {
        match self {
            StoreError::InUse
            | StoreError::LockTimeout { .. }
            | StoreError::PartialCommit { .. }
            | StoreError::Database(_)
            | StoreError::Internal(_) => true,
            StoreError::Io { source, .. } => source.kind() != std::io::ErrorKind::PermissionDenied,
            StoreError::OverQuota { permanent, .. } => !permanent,
            StoreError::InvalidMailbox(..)
            | StoreError::MessageGone(_)
            | StoreError::EmptyMessage
            | StoreError::Source(_)
            | StoreError::MessageTooLarge { .. } => false,
        }
    }
}
