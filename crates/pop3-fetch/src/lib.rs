//! Poplar's POP3 client.
//!
//! The protocol rules a client follows live in `pop3_proto::client` (status lines, un-stuffing,
//! CAPA); this crate adds the sockets: plain TCP, implicit TLS (RFC 8314) or STLS (RFC 2595)
//! with rustls, and every login mechanism through pop3-auth's client side. `poplar migrate`,
//! `poplar bench` and `poplar fetch` all connect through [`conn`].

#![forbid(unsafe_code)]

pub mod conn;
mod error;

pub use conn::{Conn, Dialer, TlsMode};
pub use error::FetchError;
