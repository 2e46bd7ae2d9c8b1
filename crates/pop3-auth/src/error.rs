//! The crate's one error type.

use std::path::PathBuf;
use thiserror::Error;

/// Everything that can go wrong in authentication, grouped by the role that meets it, each
/// variant saying whose fault it is: the operator's (files and settings), the caller's (a
/// command line's input), the peer's (what the other side of a SASL exchange sent), or no
/// one's in particular (the system).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AuthError {
    // The users file and its passwords (the server, `poplar user`).
    /// The users file could not be read or written (the operator's environment).
    #[error("cannot access the users file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line of the users file is malformed (the operator's data).
    #[error("{path} line {line}: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A stored password uses a scheme Poplar does not implement (the operator's data).
    #[error("password scheme {{{0}}} is not supported")]
    UnsupportedScheme(String),
    /// A stored hash of a known scheme is malformed (the operator's data).
    #[error("malformed {scheme} password hash: {reason}")]
    MalformedHash {
        /// The scheme.
        scheme: String,
        /// What is wrong.
        reason: String,
    },
    /// An authentication setting is unusable, e.g. a JWKS file (the operator's settings).
    #[error("{0}")]
    Config(String),

    // Editing users (`poplar user`).
    /// A user name that cannot be stored in a passwd-file (the caller's input).
    #[error("invalid user name {0:?}: {1}")]
    InvalidName(String, &'static str),
    /// `user add` for a name that is taken (the caller's input).
    #[error("user {0} already exists")]
    UserExists(String),
    /// `passwd` or `del` for a name that is not a user (the caller's input).
    #[error("no such user {0:?}")]
    NoSuchUser(String),

    // SASL exchanges, either side.
    /// A SASL message that does not follow its mechanism's syntax (the peer: a client
    /// talking to the server, or a server answering `poplar fetch`).
    #[error("malformed SASL message: {0}")]
    MalformedSasl(&'static str),
    /// A mechanism this side cannot use: unknown, or needing what the connection lacks
    /// (channel binding without TLS 1.3): the choice of mechanism is at fault.
    #[error("{0}")]
    UnsupportedMechanism(String),
    /// The server answered a SASL exchange with an error or a wrong proof (the server
    /// `poplar fetch` talks to).
    #[error("the server rejected the authentication: {0}")]
    ServerRejected(String),

    // The system.
    /// The users are kept elsewhere (a database) and cannot be consulted now: logins fail
    /// temporarily until they can.
    #[error("users unavailable: {0}")]
    Unavailable(String),
    /// The operating system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(String),
    /// A hashing task could not finish, or a hash library refused parameters Poplar chose (a
    /// bug or the runtime shutting down; nobody's input).
    #[error("internal error: {0}")]
    Internal(String),
}
