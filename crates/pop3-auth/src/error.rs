//! The crate's one error type.

use std::path::PathBuf;
use thiserror::Error;

/// Errors from the user database and password handling.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The users file could not be read or written (operator's environment at fault).
    #[error("cannot access the users file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line of the users file is malformed (operator's data at fault).
    #[error("{path} line {line}: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A stored password uses a scheme Poplar does not implement (operator's data at fault).
    #[error("password scheme {{{0}}} is not supported")]
    UnsupportedScheme(String),
    /// A stored hash of a known scheme is malformed (operator's data at fault).
    #[error("malformed {scheme} password hash: {reason}")]
    MalformedHash {
        /// The scheme.
        scheme: String,
        /// What is wrong.
        reason: String,
    },
    /// A user name that cannot be stored in a passwd-file (caller's input at fault).
    #[error("invalid user name {0:?}: {1}")]
    InvalidName(String, &'static str),
    /// `user add` for a user that exists, or `passwd`/`del` for one that does not.
    #[error("{0}")]
    UserExists(String),
    /// The user does not exist.
    #[error("no such user {0:?}")]
    NoSuchUser(String),
    /// A SASL client message that does not follow its mechanism's syntax (peer at fault).
    #[error("malformed SASL message: {0}")]
    MalformedSasl(&'static str),
    /// The server answered a SASL exchange with an error or a wrong proof (client side).
    #[error("the server rejected the authentication: {0}")]
    ServerRejected(String),
    /// An authentication setting is unusable, e.g. a JWKS file (operator's settings at fault).
    #[error("{0}")]
    Config(String),
    /// The operating system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(String),
}
