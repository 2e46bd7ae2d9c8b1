//! The configuration file: one TOML document, every key optional, unknown keys rejected.
//!
//! Every default below is chosen so that `poplar serve` with no configuration at all is safe
//! and useful on a developer's machine (loopback only, TLS with a generated certificate,
//! plaintext passwords only from loopback) and each one is explained in docs/configuration.md.
//! [`Config::problems`] turns mistakes into sentences a mail administrator can act on.

mod checks;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where everything lives: `mail/` (maildrops), `users` (passwd-file), `tls/`.
    /// Default `./poplar-data`: a first run needs no root and no existing directories.
    pub data_dir: PathBuf,
    /// This server's host name, for the APOP timestamp and Maildir file names.
    /// Default: the system host name.
    pub hostname: Option<String>,
    /// `error`, `warn`, `info` (default: one line per session and per problem) or `debug`.
    pub log_level: LogLevel,
    /// The unprivileged user to run as. When `poplar` is started as root it binds its ports,
    /// loads the TLS key, makes the data directory this user's and then switches to it before
    /// serving anyone; `deliver` and `user` switch before touching files. Default: none (no
    /// switch, and a warning when running as root).
    pub user: Option<String>,
    /// The group to run as. Default: the primary group of `user`.
    pub group: Option<String>,
    /// Listening addresses.
    pub listen: Listen,
    /// TLS for STLS and implicit TLS.
    pub tls: TlsConfig,
    /// Authentication.
    pub auth: AuthConfig,
    /// Resource limits.
    pub limits: Limits,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// POP3 policy advertised in CAPA.
    pub pop3: Pop3Policy,
    /// What delivery (LMTP, `poplar deliver`) adds to messages.
    pub delivery: DeliveryConfig,
    /// Storage quotas, enforced when mail is delivered.
    pub quota: QuotaConfig,
    /// Where maildrops are kept: this machine's Maildir, or PostgreSQL shared by a cluster.
    pub store: StoreConfig,
    /// How log lines are written.
    pub log: LogConfig,
    /// Prometheus metrics and the health check.
    pub metrics: MetricsConfig,
    /// Demon's SDPS: host maildrops.
    pub sdps: SdpsConfig,
    /// Client autoconfiguration over HTTP (Thunderbird, Outlook, Apple).
    pub autoconfig: AutoconfigConfig,
    /// Settings for every user of a domain (`[domains."example.org"]`): quota, EXPIRE,
    /// LOGIN-DELAY, login mechanisms. Keys are compared case-insensitively in their IDNA
    /// ASCII form, so `bücher.example` and `xn--bcher-kva.example` are one domain.
    pub domains: std::collections::BTreeMap<String, DomainConfig>,
    /// Whether `serve` creates a user `demo` (and a welcome message) when the users file has
    /// none: set by the binary for the embedded default only, never from a file, so a
    /// configured server never invents an account.
    #[serde(skip)]
    pub demo_user: bool,
}

/// Storage quotas. A delivery that would take a maildrop past its quota is refused for the whole
/// message (LMTP `452 4.2.2`, `poplar deliver` exit 75), so the MTA keeps it queued and retries
/// while the user makes room. Usage is kept in the Maildir's `maildirsize` (Maildir++), which
/// Dovecot's `quota = maildir` shares.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Octets per maildrop (or with a K, M or G suffix); 0, the default, is no limit: what a
    /// user may keep is a site's decision, and the per-message limit
    /// (`limits.max_message_size`) already stops a single runaway message.
    #[serde(deserialize_with = "size", serialize_with = "write_size")]
    pub storage: u64,
    /// Messages per maildrop; 0, the default, is no limit.
    pub messages: u64,
    /// Refuse mail for a full maildrop permanently (LMTP `552 5.2.2`, exit 77: the sender gets
    /// a bounce at once) instead of temporarily. Default false: a full mailbox is usually
    /// emptied within the MTA's retry period (Postfix: 5 days), and no mail is lost meanwhile.
    pub permanent: bool,
    /// Quotas for particular users (`"alice@example.org" = { storage = "5G" }`) or domains
    /// (`"example.org" = { messages = 10000 }`); a limit left out is the default's.
    pub overrides: std::collections::BTreeMap<String, QuotaOverride>,
}

/// One user's or domain's quota.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaOverride {
    /// Octets (or K, M, G); 0 is no limit.
    pub storage: Option<Size>,
    /// Messages; 0 is no limit.
    pub messages: Option<u64>,
}

/// A size in octets, written as a number or with a K, M or G suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        size(d).map(Size)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        write_size(&self.0, s)
    }
}

impl QuotaConfig {
    /// The rules the store enforces.
    pub fn rules(&self) -> pop3_store::QuotaRules {
        let limit = |n: u64| (n > 0).then_some(n);
        let default = pop3_store::Quota {
            storage: limit(self.storage),
            messages: limit(self.messages),
        };
        pop3_store::QuotaRules {
            default,
            overrides: self
                .overrides
                .iter()
                .map(|(name, o)| {
                    let quota = pop3_store::Quota {
                        storage: o.storage.map_or(default.storage, |s| limit(s.0)),
                        messages: o.messages.map_or(default.messages, limit),
                    };
                    (override_key(name), quota)
                })
                .collect(),
            permanent: self.permanent,
            users: None,
        }
    }
}

/// Quotas from the users' Dovecot quota rules, current as the users are (file or database).
#[derive(Debug)]
struct UsersFileQuotas(pop3_auth::Users);

impl pop3_store::QuotaSource for UsersFileQuotas {
    fn quota(&self, user: &str) -> Option<pop3_store::Quota> {
        let (db, _) = self.0.current().ok()?;
        pop3_store::delivery::dovecot_quota(&db.get(user)?.quota_rules)
    }
}

/// What delivery adds to a message. By default nothing: messages are stored as the MTA handed
/// them over (Postfix already adds its Received: line), with CRLF line ends.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Prepend `Return-Path: <sender>` (the envelope sender), as local delivery agents do.
    pub return_path: bool,
    /// Prepend `Delivered-To: recipient` (the envelope recipient), which also lets filters see
    /// which of a user's addresses a message came to.
    pub delivered_to: bool,
    /// Store line ends as CRLF, the way POP3 sends them (LMTP, `poplar deliver`, `poplar
    /// migrate` from a live server, the welcome message). Default true: RETR can then hand a
    /// message to the kernel unread (sendfile), and Dovecot, Courier and mail programs read
    /// such Maildir files (Dovecot's own `mail_save_crlf` writes them). `false` keeps the
    /// MTA's line ends (LF from `poplar deliver` under Postfix's pipe), for tools that expect
    /// them; RETR then encodes every message.
    pub save_crlf: bool,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            return_path: false,
            delivered_to: false,
            save_crlf: true,
        }
    }
}

impl DeliveryConfig {
    /// The header lines delivery adds.
    pub fn trace(&self) -> pop3_store::delivery::TraceHeaders {
        pop3_store::delivery::TraceHeaders {
            return_path: self.return_path,
            delivered_to: self.delivered_to,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./poplar-data"),
            hostname: None,
            log_level: LogLevel::Info,
            user: None,
            group: None,
            listen: Listen::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            pop3: Pop3Policy::default(),
            delivery: DeliveryConfig::default(),
            quota: QuotaConfig::default(),
            store: StoreConfig::default(),
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            sdps: SdpsConfig::default(),
            autoconfig: AutoconfigConfig::default(),
            domains: std::collections::BTreeMap::new(),
            demo_user: false,
        }
    }
}

/// Where maildrops are kept.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `"maildir"` (default: under `data_dir/mail`, shared with Postfix and Dovecot on one
    /// machine) or `"postgres"` (one database shared by every node of a cluster).
    pub backend: StoreBackend,
    /// With `postgres`: the database, as a libpq URL (`postgres://USER@HOST:PORT/DB`) or
    /// key=value string; several hosts with `target_session_attrs=read-write` follow a
    /// failover. Keep a password out of it: use `~/.pgpass` or a trusted local socket. A list
    /// of databases shards the users over them (the first also holds users and placements).
    pub url: Option<StoreUrls>,
    /// With `postgres`: the CA certificate(s), PEM, that vouch for the database server. Set,
    /// or with `sslmode=require` in `url`, connections use TLS and the server's certificate
    /// and name are verified (against the system's CA bundle when unset); unset and without
    /// `sslmode=require`, connections are plain, for a private network or a local socket.
    pub ca_file: Option<std::path::PathBuf>,
    /// With `postgres`: connections this node's pool may hold (one more holds its maildrop
    /// locks). Default 16: queries are short, and a PostgreSQL's default 100 connections then
    /// serve six nodes.
    pub pool_size: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Maildir,
            url: None,
            ca_file: None,
            pool_size: 16,
        }
    }
}

/// `store.url`: one database, or several shards.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum StoreUrls {
    /// One database.
    One(String),
    /// Shards, numbered from 0 in this order; the first holds users and placements.
    Shards(Vec<String>),
}

impl StoreUrls {
    /// Every database, in shard order.
    pub fn list(&self) -> Vec<&str> {
        match self {
            StoreUrls::One(url) => vec![url.as_str()],
            StoreUrls::Shards(urls) => urls.iter().map(String::as_str).collect(),
        }
    }
}

/// The kinds of store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// Maildir under `data_dir/mail`.
    Maildir,
    /// PostgreSQL at `store.url`.
    Postgres,
}

/// How log lines are written (their level is `log_level`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `"text"` (default: one readable line per event, as journald and log files want) or
    /// `"json"` (one JSON object per line, every field separate, for log shippers).
    pub format: LogFormat,
}

/// Kerberos 5 logins (RFC 4752 SASL GSSAPI).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GssapiConfig {
    /// The keytab holding the service principal's key (`pop/HOST@REALM`). Default: the
    /// Kerberos library's (`KRB5_KTNAME`, else `/etc/krb5.keytab`).
    pub keytab: Option<PathBuf>,
    /// The service part of the principal. Default `pop` (RFC 1939's KPOP and every client).
    #[serde(default = "default_gssapi_service")]
    pub service: String,
    /// The host part of the principal. Default: `hostname`.
    pub host: Option<String>,
    /// Principals (`name@REALM`) and the users they log in as, checked before the Kerberos
    /// library's own rule (by default: a principal of the default realm is the user of the
    /// same name without the realm).
    #[serde(default)]
    pub map: std::collections::BTreeMap<String, String>,
}

fn default_gssapi_service() -> String {
    "pop".into()
}

/// What one domain's users share (`[domains."example.org"]`). Each key left out follows the
/// server-wide setting; a user's own entry (users file, `*_overrides`) still wins.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DomainConfig {
    /// The domain's quota per user (`{ storage = "1G", messages = 10000 }`).
    pub quota: Option<QuotaOverride>,
    /// EXPIRE for the domain's users (`"never"` or days).
    pub expire: Option<ExpireSetting>,
    /// LOGIN-DELAY in seconds for the domain's users.
    pub login_delay: Option<u32>,
    /// How the domain's users may log in: SASL mechanism names, `USER` (USER/PASS) and `APOP`.
    /// Others are refused for them as failed logins (`[AUTH]`); unset: every method the server
    /// offers.
    pub mechanisms: Option<Vec<String>>,
}

/// A user or domain key of an override table in the one form names are compared in.
pub fn override_key(key: &str) -> String {
    if key.contains('@') {
        pop3_auth::directory::normalize_name(key)
    } else {
        pop3_auth::directory::normalize_domain(key)
    }
}

/// Client autoconfiguration: the settings documents mail clients fetch over HTTP, served from
/// this configuration so they are always right. See docs/autoconfig.md.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoconfigConfig {
    /// Where to serve them (plain HTTP, behind the web server or load balancer that answers
    /// `https://autoconfig.DOMAIN`, `https://DOMAIN/.well-known/...` and
    /// `https://autodiscover.DOMAIN`). Default none: not served.
    pub listen: Option<SocketAddr>,
    /// The mail domains documents are given for; any other gets 404. Default none.
    pub domains: Vec<String>,
    /// The host name clients should connect to. Default `hostname`.
    pub public_host: Option<String>,
    /// The POP3S port clients use, when it differs from `listen.pop3s` (a load balancer in
    /// front). Default the first `listen.pop3s` port; none if there is no POP3S listener.
    pub pop3s_port: Option<u16>,
    /// The POP3 (STARTTLS) port clients use. Default the first `listen.pop3` port; none if
    /// there is none or TLS is off.
    pub pop3_port: Option<u16>,
    /// The SMTP submission server clients send through, `host:port`: port 465 means implicit
    /// TLS, any other STARTTLS (RFC 8314). Default `public_host:587`.
    pub submission: Option<String>,
    /// What clients show as the provider's name. Default the domain.
    pub display_name: Option<String>,
    /// A certificate (PEM, the signer's first, then its chain) to sign Apple profiles with, so
    /// devices show them as verified. Default none: profiles are unsigned.
    pub profile_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: P-256 or RSA).
    pub profile_key: Option<PathBuf>,
}

/// Demon Internet's SDPS: host names whose mail goes to one host maildrop.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SdpsConfig {
    /// Host names (`["example.net"]`): mail for every address at one goes to the maildrop of
    /// the user named like the host, with its envelope; `USER example.net` opens all of it,
    /// `USER john@example.net` (or `john+example.net`) john's copies. Default none.
    pub hosts: Vec<String>,
}

/// Where Prometheus scrapes `/metrics` and a load balancer asks `/healthz`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// The HTTP listener, e.g. `"127.0.0.1:9187"`. Default: none (no listener: nothing is
    /// exposed that the administrator did not ask for).
    pub listen: Option<SocketAddr>,
    /// Who may connect to it; others are closed before a byte is read. Default: loopback
    /// only, so a non-loopback `listen` needs the Prometheus servers' networks named here.
    pub allow_from: Vec<IpNet>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: None,
            allow_from: loopback_networks(),
        }
    }
}

/// 127.0.0.0/8 and ::1.
fn loopback_networks() -> Vec<IpNet> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// The shapes of a log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `2026-12-03T20:38:05Z  INFO session ended user=alice ...`.
    #[default]
    Text,
    /// `{"timestamp":...,"level":"INFO","fields":{"message":"session ended","user":"alice",...}}`.
    Json,
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// Plus one summary line per session.
    Info,
    /// Plus protocol details (never passwords).
    Debug,
}

/// Where to listen.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// POP3 with STLS (RFC 2595). Default `127.0.0.1:1110`: loopback and an unprivileged port,
    /// so a first run exposes nothing and needs no root. Production: `["0.0.0.0:110", "[::]:110"]`.
    pub pop3: Vec<SocketAddr>,
    /// POP3 over implicit TLS (RFC 8314). Default `127.0.0.1:1995`; production uses port 995.
    pub pop3s: Vec<SocketAddr>,
    /// Kerberized POP (MIT Athena's KPOP, TCP port 1109): POP3 whose only login is Kerberos 5
    /// through SASL GSSAPI (`[auth.gssapi]`), as fetchmail's `proto KPOP` expects; no USER, no
    /// PLAIN, no TLS. Default: none.
    pub kpop: Vec<SocketAddr>,
    /// LMTP intake (RFC 2033) for Postfix or Exim: `"unix:/path/to/socket"` or a loopback
    /// `"127.0.0.1:24"`. LMTP has no authentication, so only the local MTA may reach it.
    /// Default: none.
    pub lmtp: Vec<LmtpAddr>,
    /// Permissions of a unix LMTP socket, in octal. Default `"0660"`: the owner (the service
    /// user) and the socket's group may deliver, nobody else, since whoever can connect can
    /// deliver mail to any user.
    #[serde(deserialize_with = "octal_mode", serialize_with = "write_mode")]
    pub lmtp_socket_mode: u32,
    /// The group of a unix LMTP socket: the group the MTA runs in (`"postfix"` for Postfix's
    /// lmtp(8)). Default: the service user's group.
    pub lmtp_socket_group: Option<String>,
    /// Load balancers whose PROXY protocol headers (v1 or v2, HAProxy's `send-proxy` /
    /// `send-proxy-v2`) are believed on the POP3 and POP3S listeners, e.g. `["10.0.0.0/8"]`.
    /// A connection from these networks must start with a header, and the client address in
    /// it is the one penalties, limits, `auth.plaintext_networks` and logs use; a connection
    /// from anywhere else that starts with one is closed. Default: none, since a header from
    /// an untrusted peer would let anyone claim any address.
    pub proxy_from: Vec<ipnet::IpNet>,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            pop3: vec![SocketAddr::from(([127, 0, 0, 1], 1110))],
            pop3s: vec![SocketAddr::from(([127, 0, 0, 1], 1995))],
            kpop: Vec::new(),
            lmtp: Vec::new(),
            lmtp_socket_mode: 0o660,
            lmtp_socket_group: None,
            proxy_from: Vec::new(),
        }
    }
}

fn write_mode<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

/// A file mode written in octal, as a string (`"0660"`) or a number read as octal digits.
fn octal_mode<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    let text = match Raw::deserialize(d)? {
        Raw::Number(n) => n.to_string(),
        Raw::Text(t) => t,
    };
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid mode {text:?}: give octal permissions such as \"0660\""
            ))
        })
}

/// Where LMTP is served: a TCP address or a unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LmtpAddr {
    /// A TCP address (only loopback is accepted).
    Tcp(SocketAddr),
    /// A unix socket path.
    Unix(PathBuf),
}

impl std::str::FromStr for LmtpAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path, e.g. unix:/run/poplar/lmtp".into());
            }
            return Ok(LmtpAddr::Unix(PathBuf::from(path)));
        }
        s.parse().map(LmtpAddr::Tcp).map_err(|_| {
            format!("{s:?} is neither an address like 127.0.0.1:24 nor unix:/path/to/socket")
        })
    }
}

impl std::fmt::Display for LmtpAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LmtpAddr::Tcp(a) => write!(f, "{a}"),
            LmtpAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Serialize for LmtpAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LmtpAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// TLS settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Offer TLS (STLS and the POP3S listeners). Default true: passwords should never need to
    /// cross a network in the clear.
    pub enabled: bool,
    /// PEM certificate chain. Default: `DATA/tls/cert.pem`, generated self-signed (for
    /// `localhost` and `127.0.0.1`) on first start when neither `cert` nor `key` is set.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Default: `DATA/tls/key.pem`.
    pub key: Option<PathBuf>,
    /// Oldest TLS version accepted: `"1.2"` (default; RFC 8996 retired 1.0 and 1.1, and some
    /// phones and Outlook versions still lack 1.3) or `"1.3"`.
    pub min_version: TlsVersion,
    /// PEM file of the CAs whose client certificates are accepted for SASL EXTERNAL. Unset
    /// (default): no client certificates are requested. Set: they are requested but optional,
    /// so clients without one log in as usual.
    pub client_ca: Option<PathBuf>,
    /// Which part of a client certificate names the user: `"email"` (default: the first
    /// e-mail subjectAltName, else the subject's emailAddress) or `"cn"` (the subject's
    /// common name).
    pub client_identity: ClientIdentity,
    /// The listeners (addresses from `listen.pop3` and `listen.pop3s`) that request client
    /// certificates when `client_ca` is set. Default: all of them. Requesting one makes some
    /// clients show a certificate chooser, so a dedicated port for EXTERNAL is common.
    pub client_ca_listeners: Vec<SocketAddr>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            cert: None,
            key: None,
            min_version: TlsVersion::V1_2,
            client_ca: None,
            client_identity: ClientIdentity::Email,
            client_ca_listeners: Vec::new(),
        }
    }
}

/// Where a client certificate names its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientIdentity {
    /// The e-mail subjectAltName, or the subject's emailAddress.
    Email,
    /// The subject's common name.
    Cn,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum TlsVersion {
    /// TLS 1.2
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3
    #[serde(rename = "1.3")]
    V1_3,
}

/// Authentication settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The passwd-file (Dovecot format). Default `DATA/users`.
    pub users_file: Option<PathBuf>,
    /// How long a verified password is remembered (in memory, as a keyed hash) so the next
    /// login with it skips the password hash. Default 1 hour, as Dovecot's `auth_cache_ttl`:
    /// clients poll every few minutes with the same password, and with Argon2 each check costs
    /// about 16 ms of CPU. A changed password stops matching at once; a wrong one always pays
    /// the full check. `"0s"` turns the cache off.
    #[serde(deserialize_with = "duration", serialize_with = "write_duration")]
    pub cache_ttl: Duration,
    /// At most this many remembered logins (about 100 bytes each); the least recently used go
    /// first. Default 100 000. 0 turns the cache off.
    pub cache_size: usize,
    /// Appended to login names without a domain (`alice` logs in as `alice@example.org`), as
    /// Dovecot's `auth_default_realm`. Default none: names are taken as given.
    pub default_domain: Option<String>,
    /// Networks from which USER/PASS and AUTH PLAIN are allowed without TLS. Default: loopback
    /// only (`127.0.0.0/8`, `::1/128`), like Dovecot's secure networks; an empty list refuses
    /// plaintext logins on every unencrypted connection.
    pub plaintext_networks: Vec<IpNet>,
    /// Delay before answering a failed login. Default 2 s: slows password guessing a
    /// thousandfold while a user who mistyped barely notices.
    #[serde(deserialize_with = "duration", serialize_with = "write_duration")]
    pub failure_delay: Duration,
    /// Enable APOP (RFC 1939). Default false: APOP needs passwords stored in plaintext-equivalent
    /// form (`{PLAIN}`), and MD5 offers no protection a modern client needs; enable only for
    /// legacy clients that cannot use TLS.
    pub apop: bool,
    /// SASL mechanisms that may be offered. Default (unset): every mechanism Poplar
    /// implements, each offered only where it can work: CRAM-MD5 and SCRAM only when *every*
    /// user's stored password allows them (clients that pick the strongest mechanism offered
    /// would fail for the others), -PLUS only over TLS, OAuth only with `[auth.oauth]`,
    /// EXTERNAL only with a client certificate, plaintext ones only where plaintext logins are
    /// allowed. A list offers only those listed, challenge-response ones as soon as one user
    /// can use them; `check-config` then names the users who cannot.
    pub mechanisms: Option<Vec<String>>,
    /// Failed logins make the next failures from the same address (IPv6: the same /48) and for
    /// the same account wait longer: `failure_delay` doubling up to this cap. Default 15 s:
    /// a guesser gets a handful of tries a minute per account, a user who mistyped waits
    /// seconds. The same wrong password retried (a misconfigured client) does not escalate.
    #[serde(deserialize_with = "duration", serialize_with = "write_duration")]
    pub penalty_cap: Duration,
    /// How long without failures before an address's or account's penalty is forgotten.
    /// Default 10 minutes. A successful login clears the account's penalty at once.
    #[serde(deserialize_with = "duration", serialize_with = "write_duration")]
    pub penalty_reset_after: Duration,
    /// Networks exempt from failure delays and penalties, e.g. a webmail or proxy host that
    /// logs in on users' behalf. Default: none.
    pub trusted_networks: Vec<IpNet>,
    /// Master users: they log in with their own password and may name any other user as the
    /// authorization identity (PLAIN's authzid, SCRAM's `a=`, OAuth's user, EXTERNAL's
    /// authzid) to open that user's maildrop, e.g. for support or migration. Default: none;
    /// a request to act as another user is refused.
    pub master_users: Vec<String>,
    /// OAuth 2.0 bearer tokens (OAUTHBEARER, XOAUTH2), verified locally as JWTs.
    pub oauth: Option<OauthConfig>,
    /// Kerberos 5 (SASL GSSAPI, and the KPOP listener). Present: GSSAPI is offered.
    pub gssapi: Option<GssapiConfig>,
}

/// Local verification of OAuth access tokens.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OauthConfig {
    /// The identity provider's signing keys (a JWKS document saved from its `jwks_uri`).
    pub jwks_file: PathBuf,
    /// The `iss` claim tokens must carry.
    pub issuer: String,
    /// A value the `aud` claim must contain.
    pub audience: String,
    /// The claim that names the user. Default `email`.
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
}

fn default_user_claim() -> String {
    "email".to_owned()
}

/// Every SASL mechanism Poplar implements, in the order CAPA lists them (strongest first).
pub const MECHANISMS: &[&str] = &[
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-1",
    "CRAM-MD5",
    "GSSAPI",
    "EXTERNAL",
    "OAUTHBEARER",
    "XOAUTH2",
    "PLAIN",
    "LOGIN",
];

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            users_file: None,
            cache_ttl: Duration::from_secs(3600),
            cache_size: 100_000,
            default_domain: None,
            plaintext_networks: loopback_networks(),
            failure_delay: Duration::from_secs(2),
            apop: false,
            mechanisms: None,
            penalty_cap: Duration::from_secs(15),
            penalty_reset_after: Duration::from_secs(600),
            trusted_networks: Vec::new(),
            master_users: Vec::new(),
            oauth: None,
            gssapi: None,
        }
    }
}

/// Resource limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Connections served at once; more are answered `-ERR [SYS/TEMP]` and closed. Default
    /// 1000: far above what a small site needs, well below the default 1024-descriptor limit
    /// minus what the server itself uses. Raise together with `LimitNOFILE`.
    pub max_connections: usize,
    /// Connections at once from one IP address. Default 50: an office or a carrier-grade NAT
    /// puts many legitimate clients behind one address, while a single abuser cannot take more
    /// than 5% of the default total.
    pub max_connections_per_ip: usize,
    /// Connections at once that have authenticated as one user. Default 5: a user's phone,
    /// laptop and webmail, with room to spare. One session per maildrop is enforced anyway
    /// (`[IN-USE]`); this bounds connections that authenticated and linger, e.g. a client
    /// retrying in parallel after `[IN-USE]`.
    pub max_connections_per_user: usize,
    /// Unknown, malformed or out-of-state commands before the connection is closed. Default 10:
    /// real clients send at most a few (fetchmail's `LAST`), scanners send many.
    pub max_bad_commands: u32,
    /// Longest SASL response line in octets, CRLF included. Default 16384: OAuth bearer tokens
    /// from large identity providers reach several kilobytes; ordinary commands stay capped at
    /// RFC 2449's 255 octets regardless.
    pub max_sasl_line: usize,
    /// Largest message `poplar deliver` and LMTP accept, in octets (or with a K, M or G
    /// suffix), counted as stored: with `delivery.save_crlf`, with CRLF line ends, the form
    /// SMTP's SIZE counts (RFC 1870). Default 64 MiB: above every large provider's limit (25-50 MB after encoding), so no real
    /// message is refused, while one runaway or hostile sender cannot fill the disk with a
    /// single message. Larger messages are refused with exit code 65 (bounced).
    #[serde(deserialize_with = "size", serialize_with = "write_size")]
    pub max_message_size: u64,
    /// Messages one session lists. Default 100 000: a snapshot costs about 1 KiB of
    /// memory per message and reading it grows with the count, and no POP3 client downloads
    /// more in one session. A larger maildrop shows its newest messages (so new mail is never
    /// hidden); the oldest appear in later sessions as these are deleted.
    pub max_snapshot_messages: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1000,
            max_connections_per_ip: 50,
            max_connections_per_user: 5,
            max_bad_commands: 10,
            max_sasl_line: 16 * 1024,
            max_message_size: 64 << 20,
            max_snapshot_messages: 100_000,
        }
    }
}

/// Timeouts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TLS handshake. Default 30 s: generous for a phone on a bad network, short enough that
    /// half-open handshakes do not pile up.
    #[serde(deserialize_with = "duration", serialize_with = "write_duration")]
    pub tls_handshake: Duration,
    /// Inactivity before login. Default 60 s: a client logs in within seconds; idle
    /// unauthenticated connections are how scanners hold resources.
    #[serde(deserialize_with = "duration", serialize_with = "write_duration")]
    pub idle_before_login: Duration,
    /// The whole time from connecting to logging in, however busy the client is. Default 2
    /// minutes: a person typing at telnet or a client with a few failed attempts fits; a
    /// slowloris client that trickles one byte at a time to reset `idle_before_login` is cut
    /// off, so unauthenticated connections cannot hold slots indefinitely.
    #[serde(deserialize_with = "duration", serialize_with = "write_duration")]
    pub login: Duration,
    /// Inactivity after login (RFC 1939's autologout timer). Default and minimum 10 minutes,
    /// as RFC 1939 section 3 requires.
    #[serde(deserialize_with = "duration", serialize_with = "write_duration")]
    pub idle_after_login: Duration,
    /// A single write to a client that stopped reading. Default 2 minutes.
    #[serde(deserialize_with = "duration", serialize_with = "write_duration")]
    pub write: Duration,
    /// On SIGTERM/SIGINT, how long to let running sessions finish before exiting. Default 10 s.
    #[serde(deserialize_with = "duration", serialize_with = "write_duration")]
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tls_handshake: Duration::from_secs(30),
            idle_before_login: Duration::from_secs(60),
            login: Duration::from_secs(120),
            idle_after_login: Duration::from_secs(600),
            write: Duration::from_secs(120),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// The retention policy and login pacing advertised to clients.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pop3Policy {
    /// RFC 2449 EXPIRE: `"never"` (default: Poplar never removes mail on its own, so clients
    /// may leave mail on the server), `0` (messages retrieved in a session are removed at its
    /// QUIT, as if deleted) or a number of days: messages are removed that many days after a
    /// session first retrieved them. Mail never retrieved is never removed.
    #[serde(deserialize_with = "expire", serialize_with = "write_expire")]
    pub expire: pop3_proto::Expire,
    /// EXPIRE for particular users or domains, overriding `expire`. CAPA then says
    /// `EXPIRE n USER` before login and the user's own value after.
    pub expire_overrides: std::collections::BTreeMap<String, ExpireSetting>,
    /// RFC 2449 LOGIN-DELAY in seconds: minimum time between two logins of one user, enforced
    /// and advertised. Default 0 (off, not advertised). ISPs use 300-900 to pace polling clients.
    pub login_delay: u32,
    /// LOGIN-DELAY for particular users (`"alice@example.org" = 900`) or domains
    /// (`"example.org" = 60`), overriding `login_delay`. CAPA then says `LOGIN-DELAY n USER`
    /// before login and the user's own value after.
    pub login_delay_overrides: std::collections::BTreeMap<String, u32>,
    /// Show the version in the IMPLEMENTATION capability (after login only). Default true.
    pub show_version: bool,
    /// Mark a message seen (`:2,S`, moved to `cur/`) once RETR has sent it, as Dovecot does,
    /// so webmail or an IMAP client on the same Maildir shows it as read. Default true.
    pub mark_seen: bool,
    /// The language of response texts (RFC 6856 LANG): `"en"` (default, what every client
    /// and every help page expects) or `"bg"`. Each client can switch with `LANG`; `LANG *`
    /// returns to this one.
    #[serde(with = "language")]
    pub language: pop3_proto::Language,
}

mod language {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<pop3_proto::Language, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }

    pub(super) fn serialize<S: Serializer>(
        l: &pop3_proto::Language,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(l.tag())
    }
}

impl Default for Pop3Policy {
    fn default() -> Self {
        Self {
            expire: pop3_proto::Expire::Never,
            expire_overrides: std::collections::BTreeMap::new(),
            login_delay: 0,
            login_delay_overrides: std::collections::BTreeMap::new(),
            show_version: true,
            mark_seen: true,
            language: pop3_proto::Language::English,
        }
    }
}

/// An EXPIRE value in the configuration: `"never"` or a number of days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpireSetting(pub pop3_proto::Expire);

impl<'de> Deserialize<'de> for ExpireSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        expire(d).map(ExpireSetting)
    }
}

impl Serialize for ExpireSetting {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        write_expire(&self.0, s)
    }
}

fn write_expire<S: Serializer>(e: &pop3_proto::Expire, s: S) -> Result<S::Ok, S::Error> {
    match e {
        pop3_proto::Expire::Never => s.serialize_str("never"),
        pop3_proto::Expire::Days(n) => s.serialize_u32(*n),
    }
}

/// Who has which retention period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpirePolicy {
    /// Everyone's, unless overridden.
    pub default: pop3_proto::Expire,
    /// Per user or domain.
    pub overrides: std::collections::BTreeMap<String, pop3_proto::Expire>,
}

impl ExpirePolicy {
    /// `user`'s retention period.
    pub fn for_user(&self, user: &str) -> pop3_proto::Expire {
        pop3_store::per_user(&self.overrides, user)
            .copied()
            .unwrap_or(self.default)
    }

    /// Whether some user's period differs from the default (CAPA's `USER` tag).
    pub fn varies(&self) -> bool {
        self.overrides.values().any(|e| *e != self.default)
    }

    /// Whether anyone has a period counted in days, so the purge has work to do.
    pub fn purges(&self) -> bool {
        std::iter::once(&self.default)
            .chain(self.overrides.values())
            .any(|e| matches!(e, pop3_proto::Expire::Days(n) if *n > 0))
    }
}

/// A configuration mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Errors stop `serve`; warnings are printed and the server starts.
    pub severity: Severity,
    /// What is wrong and what to do, in words for a mail administrator.
    pub message: String,
}

/// How serious a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing; the server runs.
    Warning,
    /// The server refuses to start.
    Error,
}

impl Config {
    /// Parses a configuration file's text.
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The users file path.
    pub fn users_file(&self) -> PathBuf {
        self.auth
            .users_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("users"))
    }

    /// The users file as a source of users (a PostgreSQL store's users come from its
    /// database instead; the binary sets that up).
    pub fn users_source(&self) -> pop3_auth::Users {
        pop3_auth::Users::File(pop3_auth::UserDbFile::new(self.users_file()))
    }

    /// The mail root (`DATA/mail`).
    pub fn mail_root(&self) -> PathBuf {
        self.data_dir.join("mail")
    }

    /// The Maildir store under [`Config::mail_root`], with the configured limits and quotas.
    pub fn maildir_store(&self) -> pop3_store::MaildirStore {
        self.maildir_store_with_users(&self.users_source())
    }

    /// The same, reading per-user quota rules through `users` (shared with the server's
    /// authentication, so the users file is parsed and held once).
    pub fn maildir_store_with_users(&self, users: &pop3_auth::Users) -> pop3_store::MaildirStore {
        pop3_store::MaildirStore::new(self.mail_root(), self.hostname())
            .with_limits(pop3_store::StoreLimits {
                max_message_size: self.limits.max_message_size,
                max_snapshot_messages: self.limits.max_snapshot_messages,
            })
            .with_quotas(self.quota_rules_with_users(users))
            .with_save_crlf(self.delivery.save_crlf)
            // In the form user names have (IDNA ASCII), as the logins compare them.
            .with_sdps_hosts(&self.login_rules().sdps_hosts)
    }

    /// The quota rules of `[quota]` with the users file's own rules first (read through
    /// `users`, so edits apply at once): what every store enforces.
    pub fn quota_rules_with_users(&self, users: &pop3_auth::Users) -> pop3_store::QuotaRules {
        let mut rules = self.quota.rules();
        for (domain, settings) in &self.domains {
            if let Some(o) = &settings.quota {
                let limit = |n: u64| (n > 0).then_some(n);
                let quota = pop3_store::Quota {
                    storage: o.storage.map_or(rules.default.storage, |s| limit(s.0)),
                    messages: o.messages.map_or(rules.default.messages, limit),
                };
                rules.overrides.entry(override_key(domain)).or_insert(quota);
            }
        }
        pop3_store::QuotaRules {
            users: Some(std::sync::Arc::new(UsersFileQuotas(users.clone()))),
            ..rules
        }
    }

    /// Certificate and key paths, and whether they are the generated self-signed pair.
    pub fn tls_files(&self) -> (PathBuf, PathBuf, bool) {
        let dir = self.data_dir.join("tls");
        match (&self.tls.cert, &self.tls.key) {
            (None, None) => (dir.join("cert.pem"), dir.join("key.pem"), true),
            (cert, key) => (
                cert.clone().unwrap_or_else(|| dir.join("cert.pem")),
                key.clone().unwrap_or_else(|| dir.join("key.pem")),
                false,
            ),
        }
    }

    /// The host name to announce.
    pub fn hostname(&self) -> String {
        self.hostname
            .clone()
            .unwrap_or_else(poplar_util::host::name)
    }

    /// Who has which retention period (`pop3.expire`, `pop3.expire_overrides` and the
    /// domains' `expire`).
    pub fn expire_policy(&self) -> ExpirePolicy {
        let own = self.pop3.expire_overrides.iter().map(|(k, v)| (k, v.0));
        ExpirePolicy {
            default: self.pop3.expire,
            overrides: self.with_domains(own, |d| d.expire.map(|e| e.0)),
        }
    }

    /// LOGIN-DELAY per user or domain (`pop3.login_delay_overrides` and the domains').
    pub fn login_delay_overrides(&self) -> std::collections::BTreeMap<String, u32> {
        let own = self.pop3.login_delay_overrides.iter().map(|(k, v)| (k, *v));
        self.with_domains(own, |d| d.login_delay)
    }

    /// An override table with its keys normalised and the domains' values added.
    fn with_domains<'a, T>(
        &'a self,
        own: impl Iterator<Item = (&'a String, T)>,
        of_domain: impl Fn(&DomainConfig) -> Option<T>,
    ) -> std::collections::BTreeMap<String, T> {
        let mut table: std::collections::BTreeMap<String, T> =
            own.map(|(k, v)| (override_key(k), v)).collect();
        for (domain, settings) in &self.domains {
            if let Some(value) = of_domain(settings) {
                table.entry(override_key(domain)).or_insert(value);
            }
        }
        table
    }

    /// How login names become user names (`auth.default_domain`, `sdps.hosts`).
    pub fn login_rules(&self) -> pop3_auth::directory::LoginRules {
        pop3_auth::directory::LoginRules::new(&self.sdps.hosts, self.auth.default_domain.as_deref())
    }

    /// The login methods each domain allows (`[domains."d"] mechanisms`), upper case.
    pub fn domain_mechanisms(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        self.domains
            .iter()
            .filter_map(|(d, s)| {
                let list = s.mechanisms.as_ref()?;
                Some((
                    override_key(d),
                    list.iter().map(|m| m.to_ascii_uppercase()).collect(),
                ))
            })
            .collect()
    }

    /// The LOGIN-DELAY for `user`.
    pub fn login_delay_for(&self, user: &str) -> u32 {
        login_delay_for(&self.login_delay_overrides(), self.pop3.login_delay, user)
    }
}

/// LOGIN-DELAY lookup: the user's own override, else its domain's, else `default`.
pub(crate) fn login_delay_for(
    overrides: &std::collections::BTreeMap<String, u32>,
    default: u32,
    user: &str,
) -> u32 {
    pop3_store::per_user(overrides, user)
        .copied()
        .unwrap_or(default)
}

use poplar_util::units::{duration, size, write_duration, write_size};

fn expire<'de, D: Deserializer<'de>>(d: D) -> Result<pop3_proto::Expire, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Days(u32),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Days(n) => Ok(pop3_proto::Expire::Days(n)),
        Raw::Text(t) if t.eq_ignore_ascii_case("never") => Ok(pop3_proto::Expire::Never),
        Raw::Text(t) => Err(serde::de::Error::custom(format!(
            "invalid expire {t:?}: use \"never\" or a number of days"
        ))),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn empty_file_is_the_embedded_default() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.listen.pop3, vec!["127.0.0.1:1110".parse().unwrap()]);
        assert_eq!(c.listen.pop3s, vec!["127.0.0.1:1995".parse().unwrap()]);
        assert_eq!(c.users_file(), PathBuf::from("./poplar-data/users"));
        assert!(c.tls_files().2);
        assert!(
            c.auth
                .plaintext_networks
                .iter()
                .any(|n| n.contains(&"127.0.0.1".parse::<std::net::IpAddr>().unwrap()))
        );
        assert!(
            c.auth
                .plaintext_networks
                .iter()
                .any(|n| n.contains(&"::1".parse::<std::net::IpAddr>().unwrap()))
        );
        assert!(
            !c.auth
                .plaintext_networks
                .iter()
                .any(|n| n.contains(&"10.0.0.1".parse::<std::net::IpAddr>().unwrap()))
        );
        assert!(c.problems(false).is_empty(), "{:?}", c.problems(false));
    }

    #[test]
    fn full_file() {
        let c = Config::parse(
            r#"
            data_dir = "/var/lib/poplar"
            hostname = "mail.example.org"
            log_level = "debug"
            [listen]
            pop3 = ["0.0.0.0:110", "[::]:110"]
            pop3s = ["0.0.0.0:995"]
            [tls]
            cert = "/etc/ssl/mail.pem"
            key = "/etc/ssl/mail.key"
            min_version = "1.3"
            [auth]
            plaintext_networks = []
            failure_delay = "500ms"
            [limits]
            max_connections = 5000
            [timeouts]
            idle_after_login = "15m"
            idle_before_login = 30
            [pop3]
            expire = 0
            login_delay = 300
            [pop3.login_delay_overrides]
            "example.org" = 60
            "boss@example.org" = 0
            [pop3.expire_overrides]
            "Example.ORG" = 30
            "keeper@example.org" = "never"
            "#,
        )
        .unwrap();
        assert_eq!(c.listen.pop3.len(), 2);
        assert_eq!(c.tls.min_version, TlsVersion::V1_3);
        assert!(c.auth.plaintext_networks.is_empty());
        assert_eq!(c.auth.failure_delay, Duration::from_millis(500));
        assert_eq!(c.timeouts.idle_after_login, Duration::from_secs(900));
        assert_eq!(c.timeouts.idle_before_login, Duration::from_secs(30));
        assert_eq!(c.pop3.expire, pop3_proto::Expire::Days(0));
        assert_eq!(c.login_delay_for("boss@example.org"), 0);
        assert_eq!(c.login_delay_for("alice@example.org"), 60);
        assert_eq!(c.login_delay_for("bob@other.org"), 300);
        assert_eq!(c.login_delay_for("local"), 300);
        let expire = c.expire_policy();
        assert_eq!(
            expire.for_user("alice@example.org"),
            pop3_proto::Expire::Days(30)
        );
        assert_eq!(
            expire.for_user("keeper@example.org"),
            pop3_proto::Expire::Never
        );
        assert_eq!(expire.for_user("local"), pop3_proto::Expire::Days(0));
        assert!(expire.varies() && expire.purges());
        assert_eq!(
            c.tls_files(),
            (
                PathBuf::from("/etc/ssl/mail.pem"),
                PathBuf::from("/etc/ssl/mail.key"),
                false
            )
        );
        assert!(c.problems(false).is_empty());
    }

    #[test]
    fn mistakes_are_explained() {
        let e = Config::parse("[listen]\npop = [\"127.0.0.1:110\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `pop`"), "{e}");
        let e = Config::parse("[auth]\nfailure_delay = \"2 weeks\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid duration"), "{e}");
        let c = Config::parse(
            "[timeouts]\nidle_after_login = \"1m\"\n[tls]\nenabled = false\n[auth]\nplaintext_networks = [\"0.0.0.0/0\"]\n[pop3]\nexpire = 30\n",
        )
        .unwrap();
        let problems = c.problems(false);
        let text: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert!(
            text.iter()
                .any(|m| m.contains("RFC 1939 requires at least 10 minutes")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|m| m.contains("implicit-TLS listeners need TLS")),
            "{text:?}"
        );
        assert!(text.iter().any(|m| m.contains("from anywhere")), "{text:?}");
        assert!(!text.iter().any(|m| m.contains("pop3.expire")), "{text:?}");
        let c = Config::parse("[auth]\nmechanisms = [\"PLAIN\", \"NTLM\"]\nfailure_delay = \"5s\"\npenalty_cap = \"1s\"\n").unwrap();
        let text: Vec<String> = c.problems(false).into_iter().map(|p| p.message).collect();
        assert!(
            text.iter()
                .any(|m| m.contains("\"NTLM\", which Poplar does not implement")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|m| m.contains("penalty_cap must be at least")),
            "{text:?}"
        );
    }
}
