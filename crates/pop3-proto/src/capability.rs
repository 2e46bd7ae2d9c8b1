//! What the server advertises in reply to CAPA (RFC 2449) and how.
//!
//! The list is computed for the session's current state and connection: `USER` and the
//! plaintext SASL mechanisms only where plaintext logins are allowed, `STLS` only while TLS is
//! available but not yet active (and only before login, RFC 2595), `IMPLEMENTATION` only after
//! login so that anonymous scanners do not learn the version. Everything listed works.

use std::fmt;

/// The server's message retention policy, advertised as `EXPIRE` (RFC 2449 section 6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expire {
    /// Messages are never removed by the server; clients may leave mail on it.
    #[default]
    Never,
    /// Messages are removed this many days after first being retrieved (0: at the end of the
    /// session that retrieved them).
    Days(u32),
}

impl fmt::Display for Expire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expire::Never => f.write_str("NEVER"),
            Expire::Days(n) => write!(f, "{n}"),
        }
    }
}

/// A SASL mechanism the server offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mechanism {
    /// The registered name, upper-case (e.g. `PLAIN`).
    pub name: String,
    /// The mechanism reveals the password to an eavesdropper, so it is only offered where
    /// plaintext logins are allowed (TLS, or a network configured as secure).
    pub plaintext: bool,
}

impl Mechanism {
    /// A mechanism that sends the password in the clear.
    pub fn plaintext(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            plaintext: true,
        }
    }

    /// A mechanism that does not expose the password.
    pub fn protected(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            plaintext: false,
        }
    }
}

/// Per-listener settings the session advertises and enforces.
#[derive(Debug, Clone)]
pub struct Capabilities {
    /// `EXPIRE` policy (default `NEVER`).
    pub expire: Expire,
    /// The policy may differ per user; adds the `USER` tag before login.
    pub expire_per_user: bool,
    /// `LOGIN-DELAY` seconds; omitted when 0.
    pub login_delay: u32,
    /// The login delay may differ per user; adds the `USER` tag before login.
    pub login_delay_per_user: bool,
    /// `IMPLEMENTATION` text, shown after login only.
    pub implementation: String,
    /// Host maildrops are served: `*ENV` answers with the recorded envelope, advertised as the
    /// implementation extension `X-SDPS` (RFC 2449 keeps capability names that start with `X`
    /// for private extensions).
    pub sdps: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            expire: Expire::Never,
            expire_per_user: false,
            login_delay: 0,
            login_delay_per_user: false,
            implementation: String::from("Poplar"),
            sdps: false,
        }
    }
}

/// The connection facts that decide what is listed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CapaContext<'a> {
    pub logged_in: bool,
    pub plaintext_allowed: bool,
    pub stls_offered: bool,
    /// The mechanisms this connection offers, before the plaintext filter.
    pub mechanisms: &'a [Mechanism],
    /// The logged-in user's own LOGIN-DELAY, if it differs from the default.
    pub user_login_delay: Option<u32>,
    /// The logged-in user's own EXPIRE, if set.
    pub user_expire: Option<Expire>,
}

/// The mechanisms usable on a connection: plaintext ones only where plaintext is allowed.
pub(crate) fn usable(
    mechanisms: &[Mechanism],
    plaintext_allowed: bool,
) -> impl Iterator<Item = &Mechanism> {
    mechanisms
        .iter()
        .filter(move |m| plaintext_allowed || !m.plaintext)
}

impl Capabilities {
    /// Writes the capability lines (without the `+OK` line and the terminator).
    pub(crate) fn write(&self, ctx: CapaContext<'_>, out: &mut Vec<u8>) {
        use std::io::Write;
        out.extend_from_slice(b"TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n");
        if !ctx.logged_in {
            if ctx.plaintext_allowed {
                out.extend_from_slice(b"USER\r\n");
            }
            let mut mechs = usable(ctx.mechanisms, ctx.plaintext_allowed).peekable();
            if mechs.peek().is_some() {
                out.extend_from_slice(b"SASL");
                for m in mechs {
                    out.push(b' ');
                    out.extend_from_slice(m.name.as_bytes());
                }
                out.extend_from_slice(b"\r\n");
            }
            if ctx.stls_offered {
                out.extend_from_slice(b"STLS\r\n");
            }
        }
        let user_tag = |per_user: bool| {
            if per_user && !ctx.logged_in {
                " USER"
            } else {
                ""
            }
        };
        // RFC 2449 sections 6.5 and 6.7: before login the default (with USER when it varies),
        // after login the user's own value.
        let expire = match ctx.user_expire {
            Some(own) if ctx.logged_in => own,
            _ => self.expire,
        };
        let _ = write!(
            out,
            "EXPIRE {}{}\r\n",
            expire,
            user_tag(self.expire_per_user)
        );
        let delay = if ctx.logged_in {
            ctx.user_login_delay.unwrap_or(self.login_delay)
        } else {
            self.login_delay
        };
        if delay > 0 || (self.login_delay_per_user && !ctx.logged_in) {
            let tag = user_tag(self.login_delay_per_user);
            let _ = write!(out, "LOGIN-DELAY {delay}{tag}\r\n");
        }
        // RFC 6856: the USER argument says USER/PASS take UTF-8; where USER can never be used
        // (no plaintext and no STLS, as on a KPOP listener) it would promise nothing.
        if ctx.logged_in || ctx.plaintext_allowed || ctx.stls_offered {
            out.extend_from_slice(b"UTF8 USER\r\n");
        } else {
            out.extend_from_slice(b"UTF8\r\n");
        }
        out.extend_from_slice(b"LANG\r\n");
        if self.sdps {
            out.extend_from_slice(b"X-SDPS\r\n");
        }
        if ctx.logged_in {
            let _ = write!(out, "IMPLEMENTATION {}\r\n", self.implementation);
        }
    }
}
