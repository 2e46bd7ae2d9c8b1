//! Accounts for `poplar fetch`, from `~/.config/poplar/fetch.toml` (or `--config`).
//!
//! ```toml
//! [[account]]
//! name = "work"                     # default: user@host
//! host = "mail.example.org"
//! tls = "implicit"                  # implicit (995) | starttls (110) | none (needs allow_insecure)
//! user = "alice"
//! password_command = "pass show mail/work"   # or password = "...", or ~/.netrc, or a prompt
//! to = "maildir:~/Maildir"          # several accounts may share one destination
//! keep = true
//! delete_after_days = 30
//! ```
//!
//! Every key but `host`, `user` and `to` is optional; defaults are those of the command line.
//! Sizes take the command line's forms (`10M`, `512K`, octets), timeouts seconds or `30s`,
//! `3m`.

use crate::conn::Timeouts;
use crate::dest::{Destination, Lmtp, Maildir, Mda};
use crate::mbox::Mbox;
use crate::trust::Trust;
use crate::{FetchError, Policy, TlsMode};
use poplar_util::units::{optional_duration, optional_size};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A password or token from the accounts file: never shown by `Debug`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// The configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchConfig {
    /// The accounts, fetched in parallel.
    #[serde(default)]
    pub account: Vec<AccountConfig>,
}

/// How an account's connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsSetting {
    /// TLS from the first octet (port 995).
    #[default]
    Implicit,
    /// STLS on port 110, required.
    Starttls,
    /// No TLS at all (only with `allow_insecure`).
    None,
}

/// One account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// A name for messages and for choosing accounts on the command line.
    pub name: Option<String>,
    /// The server.
    pub host: String,
    /// The port; default 995 (implicit) or 110.
    pub port: Option<u16>,
    /// Implicit TLS, STLS or none.
    #[serde(default)]
    pub tls: TlsSetting,
    /// Allows `tls = "none"`.
    #[serde(default)]
    pub allow_insecure: bool,
    /// The user name at the server.
    pub user: String,
    /// The password (better: `password_command`).
    pub password: Option<Password>,
    /// A command whose first line of output is the password (or OAuth token).
    pub password_command: Option<String>,
    /// The login mechanism; default `auto`, the strongest offered.
    pub auth: Option<String>,
    /// The CA (or self-signed) certificate to trust; default the system's.
    pub ca_file: Option<PathBuf>,
    /// Trust exactly the certificate with this SHA-256 fingerprint (`AB:CD:...`) instead.
    pub tls_fingerprint: Option<String>,
    /// The name the certificate must carry (and SNI); default `host`.
    pub server_name: Option<String>,
    /// The destination: `maildir:PATH` or `mbox:PATH`.
    pub to: Target,
    /// Leave messages on the server.
    #[serde(default)]
    pub keep: bool,
    /// With `keep`, delete on the server what was first fetched this many days ago.
    pub delete_after_days: Option<u32>,
    /// Leave messages larger than this on the server (octets, or `10M`).
    #[serde(default, deserialize_with = "optional_size")]
    pub max_size: Option<u64>,
    /// Delete messages larger than `max_size` on the server instead, unread.
    #[serde(default)]
    pub delete_too_large: bool,
    /// On the first run, fetch nothing and only remember what is there: old mail stays behind.
    #[serde(default)]
    pub only_new: bool,
    /// At most this many messages per run.
    pub max_messages: Option<usize>,
    /// At most this many octets per run (or `100M`).
    #[serde(default, deserialize_with = "optional_size")]
    pub max_bytes: Option<u64>,
    /// Go on although the server appears to have changed every UIDL.
    #[serde(default)]
    pub accept_uidl_reset: bool,
    /// The UIDL journal; default `~/.local/state/poplar/fetch/USER@HOST:PORT.journal`.
    pub journal: Option<PathBuf>,
    /// With `to = "lmtp:..."`: the recipient address; default the local user name (`$USER`).
    pub lmtp_recipient: Option<String>,
    /// How long to wait for the TCP connection; default 10 s.
    #[serde(default, deserialize_with = "optional_duration")]
    pub connect_timeout: Option<Duration>,
    /// How long to wait for the TLS handshake and the greeting; default 30 s.
    #[serde(default, deserialize_with = "optional_duration")]
    pub greeting_timeout: Option<Duration>,
    /// How long to wait for each later reply; default 180 s.
    #[serde(default, deserialize_with = "optional_duration")]
    pub timeout: Option<Duration>,
}

impl AccountConfig {
    /// The name used in messages.
    pub fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}@{}", self.user, self.host))
    }

    /// Whether the login is Kerberos (`auth = "GSSAPI"`): the user's ticket, no password.
    pub fn uses_kerberos(&self) -> bool {
        self.auth
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case("GSSAPI"))
    }

    /// The connection's security, checked against `allow_insecure` (Kerberos logins may go
    /// without TLS).
    pub fn tls_mode(&self) -> Result<TlsMode, FetchError> {
        Ok(match self.tls {
            TlsSetting::Implicit => TlsMode::Implicit,
            TlsSetting::Starttls => TlsMode::Starttls,
            // Kerberos proves who logs in without a password on the wire (KPOP's design);
            // the mail itself then travels unencrypted, as the user chose.
            TlsSetting::None if self.allow_insecure || self.uses_kerberos() => TlsMode::None,
            TlsSetting::None => {
                return Err(FetchError::File {
                    path: PathBuf::from(self.label()),
                    why: "tls = \"none\" needs allow_insecure = true".into(),
                });
            }
        })
    }

    /// Where trust in the server's certificate comes from: `tls_fingerprint`, else
    /// `ca_file`, else the system's CAs.
    pub fn trust(&self) -> Result<Trust, FetchError> {
        let ca_file = self.ca_file.as_deref().map(expand_home);
        Trust::from_settings(self.tls_fingerprint.as_deref(), ca_file.as_deref()).map_err(|e| {
            FetchError::File {
                path: PathBuf::from(self.label()),
                why: e.to_string(),
            }
        })
    }

    /// The timeouts, defaults filled in.
    pub fn timeouts(&self) -> Timeouts {
        let d = Timeouts::default();
        Timeouts {
            connect: self.connect_timeout.unwrap_or(d.connect),
            greeting: self.greeting_timeout.unwrap_or(d.greeting),
            reply: self.timeout.unwrap_or(d.reply),
        }
    }

    /// How to connect to `addr` (the resolved `host`).
    pub fn dialer(&self, addr: std::net::SocketAddr) -> Result<crate::Dialer, FetchError> {
        let name = self.server_name.as_deref().unwrap_or(&self.host);
        Ok(
            crate::Dialer::new(addr, self.tls_mode()?, &self.trust()?, name)?
                .with_timeouts(self.timeouts()),
        )
    }

    /// A dialer for `--serverinfo`: the certificate is judged and shown, not enforced.
    pub fn inspecting_dialer(
        &self,
        addr: std::net::SocketAddr,
    ) -> Result<crate::Dialer, FetchError> {
        let name = self.server_name.as_deref().unwrap_or(&self.host);
        Ok(
            crate::Dialer::inspecting(addr, self.tls_mode()?, &self.trust()?, name)?
                .with_timeouts(self.timeouts()),
        )
    }

    /// The LMTP recipient: `lmtp_recipient`, else `$USER`.
    pub fn recipient(&self) -> String {
        self.lmtp_recipient
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "root".into())
    }

    /// The port, by default the one of the TLS mode.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            TlsSetting::Implicit => 995,
            _ => 110,
        })
    }

    /// The fetch policy.
    pub fn policy(&self) -> Policy {
        Policy {
            keep: self.keep,
            delete_after_days: self.delete_after_days,
            max_size: self.max_size,
            delete_too_large: self.delete_too_large,
            only_new: self.only_new,
            max_messages: self.max_messages,
            max_bytes: self.max_bytes,
            accept_uidl_reset: self.accept_uidl_reset,
        }
    }

    /// The journal's path.
    pub fn journal_path(&self) -> Result<PathBuf, FetchError> {
        if let Some(p) = &self.journal {
            return Ok(expand_home(p));
        }
        let base = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .ok_or_else(|| FetchError::File {
                path: PathBuf::from("~"),
                why: "neither XDG_STATE_HOME nor HOME is set; give journal".into(),
            })?;
        let name: String = format!("{}@{}:{}", self.user, self.host, self.port())
            .chars()
            .map(|c| if c == '/' || c.is_control() { '_' } else { c })
            .collect();
        Ok(base.join("poplar/fetch").join(format!("{name}.journal")))
    }

    /// The password from `password_command`, `password` or `~/.netrc`, in that order; `None`
    /// if none has it (the caller may then prompt).
    pub fn password(&self) -> Result<Option<String>, FetchError> {
        if let Some(command) = &self.password_command {
            let out = std::process::Command::new("/bin/sh")
                .args(["-c", command])
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(FetchError::io(format!(
                    "cannot run password_command of {}",
                    self.label()
                )))?;
            if !out.status.success() {
                return Err(FetchError::File {
                    path: PathBuf::from(self.label()),
                    why: format!("password_command failed ({})", out.status),
                });
            }
            let text = String::from_utf8_lossy(&out.stdout);
            return Ok(Some(text.lines().next().unwrap_or("").to_owned()));
        }
        if let Some(p) = &self.password {
            return Ok(Some(p.0.clone()));
        }
        let netrc = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".netrc"));
        Ok(netrc
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|text| netrc_password(&text, &self.host, &self.user)))
    }
}

/// A destination named in a configuration or on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `maildir:PATH`.
    Maildir(PathBuf),
    /// `mbox:PATH` (mboxrd).
    Mbox(PathBuf),
    /// `mda:COMMAND`: a delivery command given each message on standard input.
    Mda(String),
    /// `lmtp:HOST:PORT` or `lmtp:unix:PATH`, for the account's `lmtp_recipient`.
    Lmtp(String),
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            Some(("maildir", path)) if !path.is_empty() => {
                Ok(Target::Maildir(expand_home(Path::new(path))))
            }
            Some(("mbox", path)) if !path.is_empty() => {
                Ok(Target::Mbox(expand_home(Path::new(path))))
            }
            Some(("mda", command)) if !command.trim().is_empty() => Ok(Target::Mda(command.into())),
            Some(("lmtp", addr)) if !addr.is_empty() => Ok(Target::Lmtp(addr.into())),
            _ => Err(format!(
                "{text:?}: give maildir:PATH, mbox:PATH, mda:COMMAND or lmtp:ADDR"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Target {
    /// Opens the destination; `recipient` is the LMTP recipient.
    pub fn open(&self, recipient: &str) -> Result<Box<dyn Destination>, FetchError> {
        Ok(match self {
            Target::Maildir(dir) => Box::new(Maildir::open(dir)?),
            Target::Mbox(path) => Box::new(Mbox::open(path)?),
            Target::Mda(command) => Box::new(Mda::new(command)),
            Target::Lmtp(addr) => Box::new(Lmtp::new(addr, recipient)),
        })
    }
}

/// `~/x` with the home directory.
fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_owned(),
    }
}

/// The password for `login` at `machine` in a `.netrc` (`machine`, `login`, `password` tokens;
/// `default` applies to any machine).
fn netrc_password(text: &str, machine: &str, login: &str) -> Option<String> {
    let mut tokens = text.split_whitespace();
    let mut current: Option<bool> = None;
    let (mut user, mut password): (Option<&str>, Option<&str>) = (None, None);
    let mut found = None;
    let mut finish = |matches: Option<bool>, user: Option<&str>, password: Option<&str>| {
        if matches == Some(true) && user.is_none_or(|u| u == login) && found.is_none() {
            found = password.map(str::to_owned);
        }
    };
    while let Some(token) = tokens.next() {
        match token {
            "machine" | "default" => {
                finish(current, user, password);
                user = None;
                password = None;
                current = Some(token == "default" || tokens.next() == Some(machine));
            }
            "login" => user = tokens.next(),
            "password" => password = tokens.next(),
            _ => {}
        }
    }
    finish(current, user, password);
    found
}

/// Reads the configuration file.
pub fn load(path: &Path) -> Result<FetchConfig, FetchError> {
    let text = std::fs::read_to_string(path)
        .map_err(FetchError::io(format!("cannot read {}", path.display())))?;
    toml::from_str(&text).map_err(|e| FetchError::File {
        path: path.to_owned(),
        why: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_parse_with_defaults() {
        let c: FetchConfig = toml::from_str(
            r#"
            [[account]]
            host = "a.example"
            user = "alice"
            password = "pw"
            to = "maildir:/tmp/m"
            keep = true
            [[account]]
            name = "b"
            host = "b.example"
            tls = "none"
            user = "bob"
            to = "mbox:/tmp/mbox"
            "#,
        )
        .unwrap();
        assert_eq!(c.account.len(), 2);
        assert_eq!(c.account[0].port(), 995);
        assert_eq!(c.account[0].label(), "alice@a.example");
        assert!(c.account[0].policy().keep);
        assert_eq!(c.account[1].port(), 110);
        assert!(
            c.account[1].tls_mode().is_err(),
            "none without allow_insecure"
        );
        assert!(
            toml::from_str::<FetchConfig>("[[account]]\nhost='h'\nuser='u'\nto='imap:x'").is_err()
        );
        assert!(
            toml::from_str::<FetchConfig>("[[account]]\nhost='h'\nuser='u'\nto='mbox:x'\nprot=1")
                .is_err()
        );
    }

    #[test]
    fn netrc_entries() {
        let netrc = "machine a.example login alice password one\n\
                     machine b.example login bob password two\ndefault login any password three\n";
        assert_eq!(
            netrc_password(netrc, "b.example", "bob").as_deref(),
            Some("two")
        );
        assert_eq!(netrc_password(netrc, "a.example", "bob").as_deref(), None);
        assert_eq!(
            netrc_password(netrc, "c.example", "any").as_deref(),
            Some("three")
        );
    }

    #[test]
    fn password_command_output() {
        let mut a: AccountConfig =
            toml::from_str::<FetchConfig>("[[account]]\nhost='h'\nuser='u'\nto='mbox:x'\npassword_command='printf \"s3cret\\\\nignored\"'").unwrap().account.remove(0);
        assert_eq!(a.password().unwrap().as_deref(), Some("s3cret"));
        a.password_command = Some("exit 3".into());
        assert!(a.password().is_err());
    }
}
