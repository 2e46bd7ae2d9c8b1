//! Authentication for Poplar.
//!
//! - [`directory`]: what authentication asks about users, whatever stores them;
//! - `userdb` (feature `server`): the passwd-file user database in Dovecot's format, reloaded
//!   when it changes, and the edits behind `poplar user ...`; `users` (feature `server`):
//!   where a server's users come from, that file or a replica of a database table;
//! - `scheme` (feature `server`): password schemes as `doveadm pw` writes them, constant-time
//!   checks and the decoys that make unknown users cost what real ones cost;
//! - [`sasl`]: SASL mechanisms, server and client halves, over decoded messages;
//! - `cache` (feature `server`): verified credentials remembered in memory for a while;
//! - [`apop`]: the APOP digest (RFC 1939 section 7); [`cert`]: what X.509 certificates say;
//!   [`jwt`]: OAuth bearer tokens checked against a JWKS.
//!
//! The crate knows nothing of mail storage and performs no network I/O. Without the `server`
//! feature it builds without the password-hash crates (Argon2, bcrypt, SHA-crypt): the client
//! in `pop3-fetch` needs none of them.

#![forbid(unsafe_code)]

pub mod apop;
#[cfg(feature = "server")]
pub mod cache;
pub mod cert;
pub mod directory;
mod error;
mod hmac_md5;
pub mod jwt;
pub mod sasl;
#[cfg(feature = "server")]
pub mod scheme;
#[cfg(feature = "server")]
pub mod userdb;
#[cfg(feature = "server")]
pub mod users;

pub use directory::Verdict;
pub use error::AuthError;
#[cfg(feature = "server")]
pub use userdb::{UserDb, UserDbFile, UserRecord};
#[cfg(feature = "server")]
pub use users::{UserReplica, Users};
