//! The crate's one error type.

use pop3_proto::client::Status;
use std::path::PathBuf;
use thiserror::Error;

/// Errors from talking to a POP3 server.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The server could not be reached or the connection failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// TLS could not be set up (certificates, handshake).
    #[error("TLS: {0}")]
    Tls(String),
    /// The server answered `-ERR` where `+OK` was needed.
    #[error("{command}: the server said {status}")]
    Refused {
        /// The command, without arguments that could be secret.
        command: String,
        /// The server's status line.
        status: Status,
    },
    /// The server sent something that is not POP3, or closed the connection mid-response.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server lacks something required (STLS, UIDL, a login mechanism).
    #[error("{0}")]
    Unsupported(String),
    /// Another run holds this account's lock.
    #[error("another poplar fetch is fetching this account (it holds {0})")]
    Busy(PathBuf),
    /// A step took longer than its timeout: the server (or the network) is silent.
    #[error("{step}: nothing within {} s ({hint})", after.as_secs())]
    Timeout {
        /// What was being waited for.
        step: String,
        /// The timeout.
        after: std::time::Duration,
        /// What it usually means.
        hint: &'static str,
    },
    /// The server's certificate is not trusted (the server, or something in between, is at
    /// fault; or the trust settings are).
    #[error("the certificate of {server} is not trusted: {why}")]
    Certificate {
        /// The name checked and the address.
        server: String,
        /// Why, and what to do.
        why: crate::trust::Distrust,
    },
    /// A destination refused a message (an LMTP server's reply, a delivery command's exit
    /// status): `temporary` when trying again later may succeed (`4xx`, exit 75).
    #[error("{to} said {reply}")]
    Delivery {
        /// Who refused.
        to: String,
        /// What it answered.
        reply: String,
        /// Whether the refusal is temporary.
        temporary: bool,
    },
    /// A local file (certificate bundle) could not be used.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

impl FetchError {
    /// Wraps an I/O error with what was being done.
    pub fn io_at(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        Self::io(context)
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| FetchError::Io { context, source }
    }

    /// Whether trying again later may succeed: a network failure, a server that said
    /// `[IN-USE]`, `[LOGIN-DELAY]` or `[SYS/TEMP]`, or a temporary refusal by a destination.
    pub fn is_temporary(&self) -> bool {
        match self {
            FetchError::Io { .. } | FetchError::Busy(_) | FetchError::Timeout { .. } => true,
            FetchError::Refused { status, .. } => status.is_temporary(),
            FetchError::Delivery { temporary, .. } => *temporary,
            _ => false,
        }
    }
}
