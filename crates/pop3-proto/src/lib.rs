//! Sans-I/O POP3.
//!
//! This crate is the protocol and nothing else: bytes in, events and bytes out. It has no
//! sockets, no files, no async runtime and no clock, so every rule of RFC 1939 and its extensions
//! (RFC 2449 CAPA, RFC 3206 response codes, RFC 2595 STLS, RFC 5034 SASL, RFC 6856 UTF8 and
//! LANG) can be tested by feeding it bytes, and the server (pop3-server) and any other driver
//! reuse exactly the same logic.
//!
//! - [`line`] frames input into bounded lines;
//! - [`command`] parses a line into a [`Command`];
//! - [`server`] is the session state machine that turns commands into responses and [`Event`]s;
//! - [`canonical`] defines a message's canonical size and streams it dot-stuffed;
//! - [`response`] and [`capability`] hold the response codes and the CAPA list;
//! - [`lang`] holds every response text, once per language (RFC 6856 LANG);
//! - [`client`] reads what a server sends: status lines, multi-line bodies, CAPA.

#![forbid(unsafe_code)]

pub mod canonical;
pub mod capability;
pub mod client;
pub mod command;
mod error;
pub mod lang;
pub mod line;
pub mod response;
mod secret;
pub mod server;

pub use canonical::{MessageEncoder, Progress, SizeCounter, canonical_size};
pub use capability::{Capabilities, Expire, Mechanism};
pub use command::{Command, ParseError, parse_command};
pub use error::Error;
pub use lang::{Language, Text};
pub use response::ResponseCode;
pub use secret::Secret;
pub use server::{
    AuthFailure, CommitFailure, Credentials, EndReason, Envelope, Event, MaildropFailure,
    MessageMeta, MessageRequest, ServerSession, SessionConfig, SessionStats, Tls,
};
