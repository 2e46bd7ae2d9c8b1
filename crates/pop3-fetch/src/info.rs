//! `poplar fetch --serverinfo`: what a server offers, before trusting it with an account.
//!
//! Connects as a fetch would, reads the greeting and CAPA without logging in, and describes
//! them in words: TLS version and cipher, the certificate's names, validity and SHA-256
//! fingerprint, whether a fetch would trust it (and if not, why and what to do), the login
//! mechanisms and which of them would protect a password on this connection, and what EXPIRE
//! and LOGIN-DELAY mean for a client that keeps mail on the server. It is made for the moment
//! a certificate is not trusted yet, so the certificate is judged but never refused here.

use crate::FetchError;
use crate::conn::Dialer;
use pop3_proto::Expire;
use std::fmt::Write as _;

/// Connects with a dialer made by [`Dialer::inspecting`], reads the greeting and CAPA, sends
/// QUIT and returns the description.
pub async fn server_info(dialer: &Dialer, encrypted: bool) -> Result<String, FetchError> {
    let (mut conn, greeting) = dialer.connect().await?;
    let caps = conn.capabilities().await?;
    let tls = conn.tls_details();
    let _ = conn.command(&pop3_proto::Command::Quit).await;
    let mut out = String::new();
    let _ = writeln!(out, "Server:        {}", dialer.addr);
    let _ = writeln!(out, "Greeting:      +OK {greeting}");
    match &tls {
        Some(t) => {
            let _ = writeln!(out, "TLS:           {}, {}", t.version, t.cipher);
            if let Some(leaf) = t.certificates.first() {
                if let Some(s) = pop3_auth::cert::summary(leaf) {
                    let name = |n: Option<String>| n.unwrap_or_else(|| "(no common name)".into());
                    let _ = writeln!(out, "Certificate:   subject CN={}", name(s.subject));
                    if !s.names.is_empty() {
                        let _ = writeln!(out, "               names {}", s.names.join(", "));
                    }
                    let issuer = if s.self_issued {
                        "itself (self-signed)".to_owned()
                    } else {
                        format!("CN={}", name(s.issuer))
                    };
                    let _ = writeln!(out, "               issued by {issuer}");
                    let _ = writeln!(
                        out,
                        "               valid {} to {}",
                        poplar_util::clock::utc(s.not_before),
                        poplar_util::clock::utc(s.not_after)
                    );
                }
                let _ = writeln!(
                    out,
                    "               SHA-256 {}",
                    crate::trust::fingerprint(leaf)
                );
                let _ = writeln!(
                    out,
                    "               chain of {} certificate(s)",
                    t.certificates.len()
                );
                match dialer.verdict() {
                    Some(Ok(why)) => {
                        let _ = writeln!(out, "Trusted:       yes: {why}");
                    }
                    Some(Err(why)) => {
                        let _ = writeln!(out, "Trusted:       NO: {why}");
                    }
                    None => {}
                }
            }
        }
        None => {
            let _ = writeln!(
                out,
                "TLS:           none: everything, the password included, travels in clear"
            );
        }
    }
    let mut mechanisms = caps.sasl.clone();
    if greeting.contains('<') {
        mechanisms.push("APOP".into());
    }
    if caps.user {
        mechanisms.push("USER".into());
    }
    let safe: Vec<&String> = mechanisms
        .iter()
        .filter(|m| {
            encrypted
                || matches!(
                    m.as_str(),
                    "SCRAM-SHA-256" | "SCRAM-SHA-1" | "CRAM-MD5" | "APOP"
                )
                || m.ends_with("-PLUS")
        })
        .collect();
    let _ = writeln!(out, "Logins:        {}", mechanisms.join(" "));
    let _ = writeln!(
        out,
        "               usable here without exposing the password: {}",
        if safe.is_empty() {
            "none".to_owned()
        } else {
            safe.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        }
    );
    let mut other = Vec::new();
    for (on, name) in [
        (caps.top, "TOP"),
        (caps.uidl, "UIDL"),
        (caps.pipelining, "PIPELINING"),
        (caps.resp_codes, "RESP-CODES"),
        (caps.stls, "STLS"),
        (caps.utf8, "UTF8"),
    ] {
        if on {
            other.push(name);
        }
    }
    let _ = writeln!(out, "Capabilities:  {}", other.join(" "));
    if !caps.uidl {
        let _ = writeln!(
            out,
            "               no UIDL: mail cannot be left on this server safely"
        );
    }
    let per_user = |tagged: bool| {
        if tagged {
            " (may differ per user; shown after login)"
        } else {
            ""
        }
    };
    match caps.expire {
        Some((Expire::Never, tagged)) => {
            let _ = writeln!(
                out,
                "EXPIRE:        NEVER: the server keeps mail until a client deletes it{}",
                per_user(tagged)
            );
        }
        Some((Expire::Days(0), tagged)) => {
            let _ = writeln!(
                out,
                "EXPIRE:        0: every message retrieved is deleted at the end of the session; --keep has no effect{}",
                per_user(tagged)
            );
        }
        Some((Expire::Days(n), tagged)) => {
            let _ = writeln!(
                out,
                "EXPIRE:        {n}: retrieved messages are deleted by the server {n} days later{}",
                per_user(tagged)
            );
        }
        None => {
            let _ = writeln!(out, "EXPIRE:        not stated");
        }
    }
    match caps.login_delay {
        Some((n, tagged)) => {
            let _ = writeln!(
                out,
                "LOGIN-DELAY:   {n} s: logins of one user must be at least this far apart; --daemon waits as long{}",
                per_user(tagged)
            );
        }
        None => {
            let _ = writeln!(out, "LOGIN-DELAY:   none");
        }
    }
    if let Some(i) = &caps.implementation {
        let _ = writeln!(out, "Software:      {i}");
    }
    Ok(out)
}
