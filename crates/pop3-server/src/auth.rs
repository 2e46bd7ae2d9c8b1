//! Authentication for the connection driver: which SASL mechanisms a connection offers, running
//! mechanism steps and password checks on dedicated hashing threads, failure penalties, the
//! LOGIN-DELAY policy, and the log line for failed logins.

use crate::config::{Config, MECHANISMS};
use crate::penalty::Penalties;
use pop3_auth::cache::CredentialCache;
use pop3_auth::directory::{LoginRules, SecretKind};
use pop3_auth::jwt::JwtVerifier;
use pop3_auth::sasl::cram_md5::CramMd5Server;
use pop3_auth::sasl::external::ExternalServer;
use pop3_auth::sasl::login::LoginServer;
use pop3_auth::sasl::oauth::{Flavor, OauthServer};
use pop3_auth::sasl::plain::PlainServer;
use pop3_auth::sasl::scram::{ScramHash, ScramServer};
use pop3_auth::sasl::{ChannelBinding, Failure, FailureKind, ServerMechanism, Step};
use pop3_auth::userdb::Decoy;
use pop3_auth::{UserDb, Users, Verdict, scheme};
use pop3_proto::{Mechanism, Secret};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// What decides which mechanisms a connection can use.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnInfo {
    /// The connection is encrypted.
    pub tls: bool,
    /// Channel binding data (TLS only).
    pub binding: Option<ChannelBinding>,
    /// The user a verified client certificate names (TLS with `tls.client_ca` only).
    pub client_identity: Option<String>,
}

/// Shared by all connections.
#[derive(Debug)]
pub(crate) struct Authenticator {
    users: Users,
    decoy: Arc<str>,
    hashing: HashPool,
    pub(crate) penalties: Arc<Penalties>,
    oauth: Option<Arc<JwtVerifier>>,
    /// Kerberos (`[auth.gssapi]`), in a build with the `gssapi` feature.
    #[cfg(feature = "gssapi")]
    gssapi: Option<pop3_auth::sasl::gssapi::GssapiSettings>,
    salt_key: Arc<[u8]>,
    /// Mechanisms the configuration lists explicitly (offered when some user can use them);
    /// `None`: automatic (challenge-response ones only when every user can).
    listed: Option<Vec<String>>,
    masters: Arc<[String]>,
    /// How login names become user names: the default domain, SDPS hosts (`john@host` and
    /// `john+host` log in with the host's entry unless they have their own).
    rules: Arc<LoginRules>,
    /// Verified credentials remembered for `auth.cache_ttl` (none when it is 0).
    cache: Option<Arc<CredentialCache>>,
    login_delay: u32,
    login_delay_overrides: BTreeMap<String, u32>,
    /// Login methods per domain (`[domains."d"] mechanisms`), upper case.
    domain_mechanisms: BTreeMap<String, Vec<String>>,
    last_login: Mutex<HashMap<String, Instant>>,
    hostname: String,
    counter: AtomicU64,
}

impl Authenticator {
    pub(crate) fn new(
        config: &Config,
        users: Users,
        decoy: String,
        salt_key: Vec<u8>,
        oauth: Option<JwtVerifier>,
    ) -> Self {
        // One hashing thread per core, at most 8: each keeps its Argon2 memory (19 MiB for
        // Poplar's hashes, 64 MiB for Dovecot's defaults) for reuse.
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        let auth = &config.auth;
        Self {
            users,
            decoy: decoy.into(),
            hashing: HashPool::new(cores.min(8)),
            penalties: Arc::new(Penalties::new(
                auth.failure_delay,
                auth.penalty_cap,
                auth.penalty_reset_after,
                auth.trusted_networks.clone(),
            )),
            oauth: oauth.map(Arc::new),
            #[cfg(feature = "gssapi")]
            gssapi: auth
                .gssapi
                .as_ref()
                .map(|g| pop3_auth::sasl::gssapi::GssapiSettings {
                    acceptor: format!(
                        "{}@{}",
                        g.service,
                        g.host.clone().unwrap_or_else(|| config.hostname())
                    ),
                    map: Arc::new(pop3_auth::sasl::gssapi::PrincipalMap {
                        explicit: g.map.clone(),
                    }),
                }),
            salt_key: salt_key.into(),
            listed: auth
                .mechanisms
                .as_ref()
                .map(|l| l.iter().map(|m| m.to_ascii_uppercase()).collect()),
            masters: auth
                .master_users
                .iter()
                .map(|m| pop3_auth::directory::normalize_name(m))
                .collect(),
            rules: Arc::new(config.login_rules()),
            cache: credential_cache(&config.auth),
            login_delay: config.pop3.login_delay,
            login_delay_overrides: config.login_delay_overrides(),
            domain_mechanisms: config.domain_mechanisms(),
            last_login: Mutex::new(HashMap::new()),
            hostname: config.hostname(),
            counter: AtomicU64::new(0),
        }
    }

    /// Whether Kerberos logins (GSSAPI) are configured and built in.
    pub(crate) fn kerberos(&self) -> bool {
        #[cfg(feature = "gssapi")]
        return self.gssapi.is_some();
        #[cfg(not(feature = "gssapi"))]
        false
    }

    /// Whether `user` has an entry (for the metrics' `unknown_user`; clients are never told).
    pub(crate) fn knows(&self, user: &str) -> bool {
        self.database().is_some_and(|db| db.get(user).is_some())
    }

    /// The current user database; `None` (and an error logged) when it cannot be read.
    pub(crate) fn database(&self) -> Option<Arc<UserDb>> {
        match self.users.current() {
            Ok((db, warnings)) => {
                for w in warnings {
                    tracing::warn!(line = w.line, "{}: {}", self.users.describe(), w.reason);
                }
                Some(db)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the {}; logins fail with [SYS/TEMP]", self.users.describe());
                None
            }
        }
    }

    /// The mechanisms a connection offers: allowed by the configuration and able to work with
    /// the stored passwords, the TLS state, the channel binding and the client certificate.
    /// A challenge-response mechanism (CRAM-MD5, SCRAM) needs a stored form per user: by
    /// default it is offered only when every user has one, because clients that pick the
    /// strongest mechanism offered (mpop, Thunderbird, `poplar fetch`) would otherwise fail
    /// for the others; a mechanism the configuration lists explicitly is offered when at least
    /// one user has one (`check-config` names the others). Recomputed from the current users
    /// file, so a change to it shows at the next connection.
    pub(crate) fn mechanisms(&self, conn: &ConnInfo) -> Vec<Mechanism> {
        let support = self.database().map(|db| db.support()).unwrap_or_default();
        let binding = conn.tls
            && conn
                .binding
                .as_ref()
                .is_some_and(ChannelBinding::is_available);
        let usable = |kind| match &self.listed {
            None => support.everyone(kind),
            Some(_) => support.someone(kind),
        };
        MECHANISMS
            .iter()
            .filter(|m| {
                self.listed
                    .as_ref()
                    .is_none_or(|l| l.iter().any(|a| a == *m))
            })
            .filter_map(|&name| {
                let works = match name {
                    "PLAIN" | "LOGIN" => true,
                    "CRAM-MD5" => usable(SecretKind::CramMd5),
                    "SCRAM-SHA-1" => usable(SecretKind::Scram(ScramHash::Sha1)),
                    "SCRAM-SHA-256" => usable(SecretKind::Scram(ScramHash::Sha256)),
                    "SCRAM-SHA-1-PLUS" => usable(SecretKind::Scram(ScramHash::Sha1)) && binding,
                    "SCRAM-SHA-256-PLUS" => usable(SecretKind::Scram(ScramHash::Sha256)) && binding,
                    "OAUTHBEARER" | "XOAUTH2" => self.oauth.is_some(),
                    "EXTERNAL" => conn.tls && conn.client_identity.is_some(),
                    "GSSAPI" => self.kerberos(),
                    _ => false,
                };
                // Passwords and bearer tokens are readable on the wire; the others are not.
                let plaintext = matches!(name, "PLAIN" | "LOGIN" | "OAUTHBEARER" | "XOAUTH2");
                works.then(|| {
                    if plaintext {
                        Mechanism::plaintext(name)
                    } else {
                        Mechanism::protected(name)
                    }
                })
            })
            .collect()
    }

    /// What unknown names' passwords are checked against (see [`Decoy`]).
    fn decoy(&self) -> Decoy<'_> {
        Decoy {
            fallback: &self.decoy,
            key: &self.salt_key,
        }
    }

    /// A fresh `<random.clock@host>`: APOP timestamps and CRAM-MD5 challenges. RFC 1939
    /// suggests `<process-ID.clock@hostname>`, but a process ID and a connection count would
    /// tell anyone who connects how busy the server is and when it restarted; 64 random bits
    /// are as unique and say nothing. Letters, digits, dots and `@` only, so strict clients
    /// (mpop) accept it as a msg-id.
    pub(crate) fn unique_msg_id(&self) -> String {
        let mut random = [0u8; 8];
        if getrandom::fill(&mut random).is_err() {
            // Never the same twice even so.
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            random = (n ^ 0x9e37_79b9_7f4a_7c15).to_le_bytes();
        }
        let clock = poplar_util::clock::unix_now();
        let host: String = self
            .hostname
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
            .collect();
        format!("<{:016x}.{clock}@{host}>", u64::from_le_bytes(random))
    }

    /// Creates the server side of a mechanism for this connection.
    pub(crate) fn start(&self, name: &str, conn: &ConnInfo) -> Option<Box<dyn ServerMechanism>> {
        let binding = conn.binding.clone().filter(|_| conn.tls);
        let now = poplar_util::clock::unix_now();
        Some(match name {
            "PLAIN" => Box::new(PlainServer),
            "LOGIN" => Box::new(LoginServer::default()),
            "CRAM-MD5" => Box::new(CramMd5Server::new(self.unique_msg_id())),
            "SCRAM-SHA-1" => Box::new(ScramServer::new(
                ScramHash::Sha1,
                false,
                binding,
                &self.salt_key,
            )),
            "SCRAM-SHA-256" => Box::new(ScramServer::new(
                ScramHash::Sha256,
                false,
                binding,
                &self.salt_key,
            )),
            "SCRAM-SHA-1-PLUS" => Box::new(ScramServer::new(
                ScramHash::Sha1,
                true,
                binding,
                &self.salt_key,
            )),
            "SCRAM-SHA-256-PLUS" => Box::new(ScramServer::new(
                ScramHash::Sha256,
                true,
                binding,
                &self.salt_key,
            )),
            "OAUTHBEARER" => Box::new(OauthServer::new(
                Flavor::OauthBearer,
                self.oauth.clone()?,
                now,
            )),
            "XOAUTH2" => Box::new(OauthServer::new(Flavor::Xoauth2, self.oauth.clone()?, now)),
            "EXTERNAL" => Box::new(ExternalServer::new(conn.client_identity.clone())),
            #[cfg(feature = "gssapi")]
            "GSSAPI" => Box::new(pop3_auth::sasl::gssapi::GssapiServer::new(
                self.gssapi.clone()?,
            )),
            _ => return None,
        })
    }

    /// Runs one mechanism step on a hashing thread.
    pub(crate) async fn step(
        &self,
        mut mechanism: Box<dyn ServerMechanism>,
        input: Option<Secret<Vec<u8>>>,
    ) -> (Option<Box<dyn ServerMechanism>>, Step) {
        let Some(db) = self.database() else {
            return (None, Step::Failure(temporary()));
        };
        let decoy = Arc::clone(&self.decoy);
        let key = Arc::clone(&self.salt_key);
        let masters = Arc::clone(&self.masters);
        let rules = Arc::clone(&self.rules);
        let cache = self.cache.clone();
        let ran = self
            .hashing
            .run(move || {
                let decoy = Decoy {
                    fallback: &decoy,
                    key: &key,
                };
                let step = mechanism.step(
                    &match cache.as_deref() {
                        Some(cache) => db.directory(decoy, &masters, &rules).with_cache(cache),
                        None => db.directory(decoy, &masters, &rules),
                    },
                    input.as_ref().map(|s| s.expose().as_slice()),
                );
                (mechanism, step)
            })
            .await;
        match ran {
            Ok((mechanism, step)) => (Some(mechanism), step),
            Err(()) => {
                tracing::error!("password hashing thread is gone");
                (None, Step::Failure(temporary()))
            }
        }
    }

    /// USER/PASS.
    pub(crate) async fn password(&self, user: String, password: Secret<Vec<u8>>) -> Step {
        let Some(db) = self.database() else {
            return Step::Failure(temporary());
        };
        let (name, login) = db.login_entry(&user, &self.rules);
        let known = db.get(&name).is_some();
        // A fast scheme, or a password the cache remembers, is checked right here: handing it
        // to a hashing thread and back would cost more than the check.
        let remembered = self
            .cache
            .as_deref()
            .is_some_and(|c| db.cached(&name, password.expose(), c));
        let verdict = if remembered {
            Ok(Ok(Verdict::Valid(name)))
        } else if db.verifies_fast(&name, &self.decoy()) {
            Ok(db.verify(&name, password.expose(), &self.decoy()))
        } else {
            let decoy = Arc::clone(&self.decoy);
            let key = Arc::clone(&self.salt_key);
            let db = Arc::clone(&db);
            let cache = self.cache.clone();
            self.hashing
                .run(move || {
                    let decoy = Decoy {
                        fallback: &decoy,
                        key: &key,
                    };
                    db.verify_cached(&name, password.expose(), &decoy, cache.as_deref())
                })
                .await
        };
        match verdict {
            Ok(Ok(Verdict::Valid(_))) => Step::Success { user: login },
            Ok(Ok(Verdict::Invalid)) => Step::Failure(Failure {
                kind: FailureKind::InvalidCredentials,
                reason: if known {
                    "wrong password".into()
                } else {
                    "unknown user".into()
                },
                user: Some(user),
            }),
            Ok(Err(e)) => {
                tracing::error!(user = ?user, error = %e, "cannot check the password; fix this user's entry in the users file");
                Step::Failure(Failure {
                    kind: FailureKind::Temporary,
                    user: Some(user),
                    reason: "password cannot be checked".into(),
                })
            }
            Err(()) => Step::Failure(temporary()),
        }
    }

    /// APOP.
    pub(crate) fn apop(&self, user: &str, timestamp: &str, digest: &str) -> Step {
        let Some(db) = self.database() else {
            return Step::Failure(temporary());
        };
        let (entry, login) = db.login_entry(user, &self.rules);
        match db.verify_apop(&entry, timestamp, digest) {
            Verdict::Valid(_) => Step::Success { user: login },
            Verdict::Invalid => Step::Failure(Failure {
                kind: FailureKind::InvalidCredentials,
                user: Some(user.to_owned()),
                reason: match db.get(&entry) {
                    None => "unknown user".into(),
                    Some(u) if u.serves(SecretKind::Apop) => "wrong APOP digest".into(),
                    Some(_) => format!(
                        "no APOP secret (a {{PLAIN}} password) stored for {}",
                        pop3_auth::directory::normalize_name(user)
                    )
                    .into(),
                },
            }),
        }
    }

    /// The credential cache, if there is one (for the metrics).
    pub(crate) fn cache(&self) -> Option<Arc<CredentialCache>> {
        self.cache.clone()
    }

    /// The user name a login name or address stands for (default domain, IDNA, `user%domain`).
    pub(crate) fn canonical(&self, name: &str) -> String {
        self.rules.canonical(name)
    }

    /// Whether `user` may log in with `method` (a SASL mechanism, `USER` or `APOP`): its
    /// domain's `mechanisms` list, if it has one, names it.
    pub(crate) fn method_allowed(&self, user: &str, method: &str) -> bool {
        let Some((_, domain)) = user.rsplit_once('@') else {
            return true;
        };
        self.domain_mechanisms
            .get(domain)
            .is_none_or(|list| list.iter().any(|m| m.eq_ignore_ascii_case(method)))
    }

    /// The LOGIN-DELAY for a user: its own override, else its domain's, else the default.
    pub(crate) fn login_delay_for(&self, user: &str) -> u32 {
        crate::config::login_delay_for(&self.login_delay_overrides, self.login_delay, user)
    }

    /// RFC 2449 LOGIN-DELAY: whether `user` may log in now.
    pub(crate) fn login_allowed(&self, user: &str) -> bool {
        let delay = Duration::from_secs(self.login_delay_for(user).into());
        if delay.is_zero() {
            return true;
        }
        let last = self.last_login.lock().unwrap_or_else(|e| e.into_inner());
        last.get(user).is_none_or(|t| t.elapsed() >= delay)
    }

    /// Remembers a successful login (for LOGIN-DELAY).
    pub(crate) fn record_login(&self, user: &str) {
        if self.login_delay == 0 && self.login_delay_overrides.is_empty() {
            return;
        }
        let mut last = self.last_login.lock().unwrap_or_else(|e| e.into_inner());
        if last.len() > 100_000 {
            let longest = self
                .login_delay_overrides
                .values()
                .copied()
                .chain([self.login_delay])
                .max()
                .unwrap_or(0);
            last.retain(|_, t| t.elapsed() < Duration::from_secs(longest.into()));
        }
        last.insert(user.to_owned(), Instant::now());
    }

    /// Whether LOGIN-DELAY differs between users (CAPA then says `LOGIN-DELAY n USER`).
    pub(crate) fn login_delay_varies(&self) -> bool {
        !self.login_delay_overrides.is_empty()
    }
}

/// The cache of `auth.cache_ttl` and `auth.cache_size`; none when either is 0 (or the system
/// has no randomness for its key, which is logged).
fn credential_cache(auth: &crate::config::AuthConfig) -> Option<Arc<CredentialCache>> {
    let size = std::num::NonZeroUsize::new(auth.cache_size)?;
    if auth.cache_ttl.is_zero() {
        return None;
    }
    match CredentialCache::new(auth.cache_ttl, size) {
        Ok(cache) => Some(Arc::new(cache)),
        Err(e) => {
            tracing::warn!(error = %e, "no credential cache: every login pays its password hash");
            None
        }
    }
}

fn temporary() -> Failure {
    Failure::temporary()
}

/// A few dedicated threads, one per core, that check password hashes and run SASL steps.
///
/// Hashes are CPU-bound, so more threads than cores buy nothing; and ARGON2ID allocates 19 MiB
/// per check, which the C allocator keeps in the arena of the thread that freed it. On the
/// general blocking pool (hundreds of threads, also used for file reads) a login flood would
/// therefore grow memory towards threads x 19 MiB; here each hashing thread reuses one buffer
/// (see `pop3_auth::scheme`), memory is bounded by threads x the largest Argon2 memory cost, and
/// excess logins wait in the queue.
#[derive(Debug)]
struct HashPool {
    jobs: std::sync::mpsc::Sender<Job>,
}

type Job = Box<dyn FnOnce() + Send>;

impl HashPool {
    fn new(threads: usize) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("poplar-hash-{i}"))
                .spawn(move || {
                    loop {
                        let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        Self { jobs }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| ())?;
        rx.await.map_err(|_| ())
    }
}

/// The log line fail2ban-style tools match: address, user and mechanism, never a secret. The
/// user name is attacker-controlled, so it is logged escaped.
pub(crate) fn log_failure(
    peer: IpAddr,
    user: &str,
    mechanism: &str,
    why: &str,
    answer: crate::penalty::Answer,
) {
    match answer {
        crate::penalty::Answer::After(delay) => tracing::warn!(
            "authentication failed: peer={peer} user={user:?} mechanism={mechanism} reason={why:?} delay_ms={}",
            delay.as_millis()
        ),
        crate::penalty::Answer::Close => tracing::warn!(
            "authentication failed: peer={peer} user={user:?} mechanism={mechanism} reason={why:?} closed unanswered (too many failed logins from this address)"
        ),
    }
}

/// A fresh decoy hash (computed once at startup, on a blocking thread).
pub(crate) async fn make_decoy() -> Result<String, pop3_auth::AuthError> {
    tokio::task::spawn_blocking(scheme::decoy_hash)
        .await
        .map_err(|e| pop3_auth::AuthError::Internal(format!("the decoy hash: {e}")))?
}

/// The server secret behind SCRAM's fake salts: `DATA/auth-secret`, 32 random octets created on
/// first start (mode 0600), so the salt shown for an unknown name is the same across restarts
/// and does not reveal that the name is unknown.
pub(crate) fn load_salt_key(data_dir: &std::path::Path) -> Result<Vec<u8>, crate::ServerError> {
    let path = data_dir.join("auth-secret");
    let io = |e| crate::ServerError::Io {
        path: path.clone(),
        source: e,
    };
    match std::fs::read(&path) {
        Ok(key) if key.len() >= 32 => return Ok(key),
        Ok(_) => tracing::warn!(file = %path.display(), "auth secret too short; making a new one"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut key = vec![0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| crate::ServerError::Config(format!("random number generator: {e}")))?;
    // Written by root before it gives up privileges, in a directory the service user owns.
    pop3_store::maildir::untrusted::replace_file(&path, &path.with_extension("tmp"), &key, 0o600)
        .map_err(io)?;
    Ok(key)
}
