//! Authentication for Poplar.
//!
//! - [`userdb`]: the passwd-file user database in Dovecot's format, reloaded when it changes,
//!   and the edits behind `poplar user ...`;
//! - [`scheme`]: password schemes (`{ARGON2ID}`, `{ARGON2I}`, `{PLAIN}`, `{CLEAR}`), constant-time
//!   checks and a decoy hash so unknown users cost the same as real ones;
//! - [`sasl`]: SASL mechanisms as functions over decoded messages (PLAIN for now);
//! - [`apop`]: the APOP digest check (RFC 1939 section 7).
//!
//! The crate knows nothing of mail storage and performs no network I/O.

#![forbid(unsafe_code)]

pub mod apop;
pub mod cert;
mod error;
mod hmac_md5;
pub mod jwt;
pub mod sasl;
pub mod scheme;
pub mod userdb;

pub use error::AuthError;
pub use userdb::{UserDb, UserDbFile, Verdict};
