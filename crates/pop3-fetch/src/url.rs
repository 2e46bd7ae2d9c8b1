//! `pop3s://USER@HOST[:PORT]`, `pop3://USER@HOST[:PORT]` and `kpop://[USER@]HOST[:PORT]`: how
//! scripts name an account.
//!
//! `pop3s` is implicit TLS (RFC 8314, port 995); `pop3` is port 110 with STLS required (RFC
//! 2595), as in curl and RFC 2384; `kpop` is Kerberized POP (port 1109, no TLS, the login by
//! Kerberos 5 through SASL GSSAPI with the user's ticket). The user part may be percent-encoded (`alice%40example.org`);
//! it may be left out where no login happens (`--serverinfo`), and [`ServerUrl::require_user`]
//! checks it where one does.

use crate::TlsMode;
use std::fmt;

/// A server and user, from a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// Implicit TLS or STLS.
    pub tls: TlsMode,
    /// The user name, decoded; empty when the URL has none.
    pub user: String,
    /// The host name or address (what the certificate must name).
    pub host: String,
    /// The port.
    pub port: u16,
    /// `kpop://`: log in with Kerberos (GSSAPI), on a connection without TLS.
    pub kerberos: bool,
}

impl std::str::FromStr for ServerUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (tls, rest, default_port) = if let Some(rest) = text.strip_prefix("pop3s://") {
            (TlsMode::Implicit, rest, 995)
        } else if let Some(rest) = text.strip_prefix("pop3://") {
            (TlsMode::Starttls, rest, 110)
        } else if let Some(rest) = text.strip_prefix("kpop://") {
            (TlsMode::None, rest, 1109)
        } else {
            return Err(format!(
                "{text:?}: give pop3s://USER@HOST[:PORT], pop3://USER@HOST[:PORT] (STLS) or kpop://HOST[:PORT] (Kerberos)"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (user, hostport) = rest.rsplit_once('@').unwrap_or(("", rest));
        let user = percent_decode(user)?;
        let (host, port) = match hostport.rsplit_once(':') {
            // An IPv6 address in brackets contains colons of its own.
            Some((h, p)) if !p.contains(']') => (
                h,
                p.parse()
                    .map_err(|_| format!("{text:?}: invalid port {p:?}"))?,
            ),
            _ => (hostport, default_port),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(format!("{text:?}: no host"));
        }
        Ok(ServerUrl {
            kerberos: tls == TlsMode::None,
            tls,
            user,
            host,
            port,
        })
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.tls {
            TlsMode::Implicit => "pop3s",
            _ if self.kerberos => "kpop",
            _ => "pop3",
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.user.is_empty() {
            write!(f, "{scheme}://{host}:{}", self.port)
        } else {
            write!(f, "{scheme}://{}@{host}:{}", self.user, self.port)
        }
    }
}

impl ServerUrl {
    /// Fails unless the URL names a user, as a login needs.
    pub fn require_user(&self) -> Result<&str, String> {
        if self.user.is_empty() && !self.kerberos {
            Err(format!(
                "{self}: the URL needs the user name, {}://USER@HOST",
                if self.tls == TlsMode::Implicit {
                    "pop3s"
                } else {
                    "pop3"
                }
            ))
        } else {
            Ok(&self.user)
        }
    }
}

/// `%40` and friends.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad %-escape in {text:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u: ServerUrl = "pop3s://alice%40example.org@mail.example.org"
            .parse()
            .unwrap();
        assert_eq!(
            u,
            ServerUrl {
                tls: TlsMode::Implicit,
                user: "alice@example.org".into(),
                host: "mail.example.org".into(),
                port: 995,
                kerberos: false,
            }
        );
        let u: ServerUrl = "pop3://bob@[::1]:1110/".parse().unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (TlsMode::Starttls, "::1", 1110)
        );
        assert_eq!(u.to_string(), "pop3://bob@[::1]:1110");
        let u: ServerUrl = "pop3://bob@[::1]".parse().unwrap();
        assert_eq!(u.port, 110);
        let u: ServerUrl = "pop3s://mail.example.org:1995".parse().unwrap();
        assert_eq!((u.user.as_str(), u.port), ("", 1995));
        assert_eq!(u.to_string(), "pop3s://mail.example.org:1995");
        assert!(u.require_user().is_err());
        // Kerberized POP: port 1109, no TLS, no user needed (the ticket names it).
        let u: ServerUrl = "kpop://mail.example.org".parse().unwrap();
        assert_eq!((u.tls, u.port, u.kerberos), (TlsMode::None, 1109, true));
        assert!(u.require_user().is_ok());
        assert_eq!(u.to_string(), "kpop://mail.example.org:1109");
        for bad in [
            "imap://x@y",
            "pop3s://u@",
            "pop3s://u@h:port",
            "pop3s://%zz@h",
        ] {
            assert!(bad.parse::<ServerUrl>().is_err(), "{bad}");
        }
    }
}
