//! The crate's one error type.
//!
//! Protocol mistakes made by the *peer* never surface here: the session answers them on the
//! wire with `-ERR` (that is the protocol working as intended). What is left is the class rustls
//! calls "the caller misused the API": an answer method called when the session was not waiting
//! for that answer. Such a call is a bug in the driver, never something a client can provoke.

use thiserror::Error;

/// Errors returned by [`crate::ServerSession`] methods.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The driver answered an event the session was not waiting for (caller's fault).
    #[error("session misuse: {called} called while {state}")]
    UnexpectedAnswer {
        /// The method the driver called.
        called: &'static str,
        /// What the session was actually waiting for.
        state: &'static str,
    },
}
