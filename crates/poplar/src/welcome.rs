//! The embedded default's first-run experience: a `demo` user with a random password (printed
//! once) and a welcome message describing the listeners and certificate actually in use, so a
//! newcomer can fetch mail with curl straight away.

use anyhow::{Context, Result};
use pop3_auth::{scheme, userdb::edit};
use pop3_server::Config;

/// Creates the demo user if there are no users at all; returns its password.
pub(crate) fn ensure_demo_user(config: &Config) -> Result<Option<String>> {
    let users = config.users_file();
    let (db, _) = pop3_auth::UserDb::load(&users)?;
    if !db.is_empty() {
        return Ok(None);
    }
    let password = random_password()?;
    edit::add(
        &users,
        "demo",
        &[scheme::hash_default(password.as_bytes())?],
    )?;
    say(format_args!(
        "Created user \"demo\" with password {password} (shown only this once)."
    ));
    Ok(Some(password))
}

/// Delivers the welcome message to the demo user, describing `listening` (the addresses bound).
pub(crate) fn deliver_welcome(
    config: &Config,
    listening: &[(pop3_server::Kind, std::net::SocketAddr)],
) -> Result<()> {
    let message = welcome_message(config, listening);
    config
        .maildir_store()
        .deliver_blocking(&["demo"], &mut message.as_bytes())
        .context("cannot deliver the welcome message")?;
    Ok(())
}

/// Tells the newcomer how to fetch the welcome message, once the real port is known.
pub(crate) fn print_hint(password: &str, pop3: std::net::SocketAddr) {
    let host = if pop3.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        pop3.ip().to_string()
    };
    say(format_args!(
        "Try: curl pop3://demo:{password}@{host}:{}/1",
        pop3.port()
    ));
}

/// A line for the person who started the server. Whoever reads standard output may have gone
/// (`poplar serve | head -1`, a closed terminal): the server must not stop for that.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn random_password() -> Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("random number generator: {e}"))?;
    Ok(bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect())
}

fn welcome_message(
    config: &Config,
    listening: &[(pop3_server::Kind, std::net::SocketAddr)],
) -> String {
    let now = poplar_util::clock::unix_now();
    let host = config.hostname();
    let mut listeners = String::new();
    for (kind, addr) in listening {
        let what = match kind {
            pop3_server::Kind::Pop3 if config.tls.enabled => "POP3 with STARTTLS",
            pop3_server::Kind::Pop3 => "POP3 (no TLS)     ",
            pop3_server::Kind::Pop3s => "POP3 over TLS     ",
            pop3_server::Kind::Kpop => "KPOP (Kerberos)   ",
        };
        listeners.push_str(&format!("   {what} {addr}\r\n"));
    }
    let (cert, _, generated) = config.tls_files();
    let certificate = if !config.tls.enabled {
        "TLS is switched off (tls.enabled = false): passwords travel in clear, which\r\n\
         Poplar allows only from auth.plaintext_networks.\r\n"
            .to_owned()
    } else if generated {
        format!(
            "The certificate is self-signed ({}, for localhost), so clients will\r\n\
             ask you to trust it. Set tls.cert and tls.key for a real one.\r\n",
            cert.display()
        )
    } else {
        format!("The certificate is {}.\r\n", cert.display())
    };
    format!(
        "Return-Path: <postmaster@{host}>\r\n\
         Date: {date}\r\n\
         From: Poplar <postmaster@{host}>\r\n\
         To: demo@{host}\r\n\
         Subject: Welcome to Poplar\r\n\
         Message-ID: <welcome.{now}@{host}>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         Hello,\r\n\
         \r\n\
         this message was delivered by Poplar to the demo maildrop, and you have just\r\n\
         retrieved it over POP3. Point any mail client at this server:\r\n\
         \r\n\
         {listeners}\
         \r\n\
         {certificate}\
         Add real users with `poplar user add NAME`, deliver mail with\r\n\
         `poplar deliver NAME < message`, and see docs/configuration.md for the rest.\r\n\
         Mail clients can fill in these settings themselves: set [autoconfig] and\r\n\
         publish what `poplar autoconfig dns --domain YOURS` prints (docs/autoconfig.md).\r\n\
         \r\n\
         -- Poplar\r\n",
        date = poplar_util::clock::rfc5322(now),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_url_safe() {
        let p = random_password().unwrap();
        assert_eq!(p.len(), 16);
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
