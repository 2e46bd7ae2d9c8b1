//! Poplar's POP3 client.
//!
//! The protocol rules a client follows live in `pop3_proto::client` (status lines, un-stuffing,
//! CAPA); this crate adds the sockets: plain TCP, implicit TLS (RFC 8314) or STLS (RFC 2595)
//! with rustls, and every login mechanism through pop3-auth's client side. `poplar migrate`,
//! `poplar-bench` and `poplar fetch` all connect through [`conn`].
//!
//! `poplar fetch` itself is [`fetch::fetch`]: one run for one account, delivering into a
//! [`dest::Destination`] exactly once thanks to the [`journal`], even when killed at any instant.

#![forbid(unsafe_code)]

pub mod config;
pub mod conn;
pub mod dest;
mod error;
pub mod fetch;
pub mod info;
pub mod journal;
pub mod lmtp;
pub mod mbox;
pub mod trust;
pub mod url;

pub use conn::{Conn, Dialer, Timeouts, TlsMode};
pub use error::FetchError;
pub use fetch::{Account, Auth, Policy, Summary, fetch};
pub use trust::Trust;
pub use url::ServerUrl;
