//! Mail storage for Poplar.
//!
//! A POP3 session sees a *maildrop*: a numbered list of messages, each with an exact size and a
//! permanent unique id, fixed at login. [`MailStore::open`] locks the user's maildrop for the
//! session and returns that listing; [`Maildrop::read`] streams a message; [`Maildrop::commit`]
//! removes the messages deleted in the session, durably, and only those. Dropping a maildrop
//! without committing releases the lock and changes nothing, which is what a dropped connection
//! must do.
//!
//! The traits are async and lock-per-session so that a shared database (PostgreSQL, with the lock
//! held by the database session) can implement them as well as local files can. Backends:
//!
//! - [`maildir::MaildirStore`]: Maildir shared with Postfix, Dovecot and procmail, indexed in
//!   Dovecot's `dovecot-uidlist`;
//! - [`memory::MemoryStore`]: everything in memory, for tests.
//!
//! This crate knows nothing of the POP3 protocol beyond the definition of a message's size
//! (`pop3_proto::canonical`), which it must share with the code that sends the message.

#![forbid(unsafe_code)]

mod error;
pub mod maildir;
pub mod memory;
mod name;

pub use error::StoreError;
pub use maildir::{MaildirStore, MessageReader, StoreLimits};
pub use memory::MemoryStore;
pub use name::{DEFAULT_DOMAIN, MailboxPath};

use std::future::Future;
use tokio::io::AsyncRead;

/// One message in a maildrop listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// The permanent unique id (RFC 1939 UIDL: 1 to 70 printable ASCII characters).
    pub uidl: String,
    /// The exact number of octets RETR sends for it (its canonical CRLF form).
    pub size: u64,
}

/// A place maildrops live.
pub trait MailStore: Send + Sync + 'static {
    /// A locked, open maildrop.
    type Maildrop: Maildrop;

    /// Locks `user`'s maildrop for one session and lists it. The listing's order is the POP3
    /// message numbering. Returns [`StoreError::InUse`] if another session holds it.
    fn open(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<(Self::Maildrop, Vec<MessageInfo>), StoreError>> + Send;
}

/// An open maildrop, exclusively held by one session until it is committed or dropped.
pub trait Maildrop: Send + 'static {
    /// A message's stored bytes.
    type Reader: AsyncRead + Unpin + Send + 'static;

    /// Opens message `index` (0-based, in listing order) for reading.
    fn read(
        &mut self,
        index: usize,
    ) -> impl Future<Output = Result<Self::Reader, StoreError>> + Send;

    /// Removes the messages at these listing indices durably, then releases the lock. Messages
    /// that arrived during the session are never touched.
    fn commit(self, deleted: Vec<usize>) -> impl Future<Output = Result<(), StoreError>> + Send;
}
