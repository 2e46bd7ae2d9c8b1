//! The crate's one error type.

use std::path::PathBuf;
use thiserror::Error;

/// Errors that stop the server from starting or running.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is unusable (administrator's settings at fault).
    #[error("configuration: {0}")]
    Config(String),
    /// TLS material is missing, unreadable or inconsistent.
    #[error("TLS: {0}")]
    Tls(String),
    /// A listening address could not be bound (in use, or a privileged port without rights).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file or directory the server needs.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The user database.
    #[error(transparent)]
    Auth(#[from] pop3_auth::AuthError),
}
