//! Poplar's POP3 server: the part that touches sockets.
//!
//! [`Server::bind`] turns a [`Config`] and a [`MailStore`] into bound listeners; [`Server::serve`]
//! accepts connections until the shutdown future resolves. Each connection is a task running
//! [`connection`]'s driver around a `pop3_proto::ServerSession`. Around it this crate provides:
//!
//! - listeners for POP3 (with STLS, RFC 2595) and POP3S (implicit TLS, RFC 8314), rustls with
//!   the ring provider;
//! - a global connection cap (a semaphore permit moved into each task) and a per-address cap,
//!   both answered with `-ERR [SYS/TEMP]` instead of silence;
//! - back-off on accept errors (running out of file descriptors must not spin the CPU);
//! - graceful shutdown: stop accepting, tell idle sessions, let running commands (a RETR, a
//!   commit) finish, wait up to the grace period;
//! - [`Connector`]: connections that do not come through a listening socket (an in-process
//!   client, a stream whose peer a front end vouches for), under the same limits.
//!
//! Time is tokio's clock (`tokio::time::Instant`, `sleep`, `timeout`): penalties, the refusal
//! log, timeouts and LOGIN-DELAY read nothing else, so a test pauses and advances it.

#![forbid(unsafe_code)]

mod accept;
mod auth;
pub mod config;
mod connection;
mod error;
pub mod expire;
mod limits;
pub mod lmtp;
pub mod metrics;
mod penalty;
mod proxy;
mod registry;
pub mod tls;
mod zero_copy;

pub use zero_copy::retr_path;

pub use config::Config;
pub use error::ServerError;
pub use registry::{SessionInfo, Sessions};
pub use tls::TlsReloader;

use ipnet::IpNet;
use pop3_auth::Users;
use pop3_proto::{Capabilities, SessionConfig, Tls};
use pop3_store::MailStore;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// The version shown in IMPLEMENTATION.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The kind of listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// POP3, port 110 style, with STLS.
    Pop3,
    /// POP3 over implicit TLS, port 995 style.
    Pop3s,
    /// Kerberized POP, port 1109: GSSAPI is the only login.
    Kpop,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Pop3 => "POP3",
            Kind::Pop3s => "POP3S",
            Kind::Kpop => "KPOP",
        })
    }
}

#[derive(Debug)]
struct Settings {
    tls_handshake: Duration,
    idle_before_login: Duration,
    login: Duration,
    idle_after_login: Duration,
    write: Duration,
    shutdown_grace: Duration,
    plaintext_networks: Vec<IpNet>,
    /// Load balancers whose PROXY headers are believed (`listen.proxy_from`).
    proxy_from: Vec<IpNet>,
    max_bad_commands: u32,
    max_sasl_line: usize,
    max_connections: usize,
    apop: bool,
    /// Client certificates name users by common name (else by e-mail address).
    client_identity_cn: bool,
    /// RETR marks messages seen in the store.
    mark_seen: bool,
    /// Who has which retention period.
    expire: config::ExpirePolicy,
    /// The language of response texts until a client chooses with LANG.
    language: pop3_proto::Language,
}

/// State shared by every connection.
struct Shared<S: MailStore> {
    store: S,
    auth: auth::Authenticator,
    tls: Option<tls::TlsSlot>,
    capabilities: Arc<Capabilities>,
    settings: Settings,
    connections: Arc<Semaphore>,
    per_ip: Arc<limits::Slots<IpNet>>,
    per_user: Arc<limits::Slots<String>>,
    refusals: limits::RefusalLog,
    waiting: Arc<limits::Waiting>,
    shutdown: watch::Sender<bool>,
    sessions: Arc<registry::Registry>,
    lmtp: lmtp::LmtpSettings,
}

impl<S: MailStore> Shared<S> {
    /// The TLS material new handshakes use.
    fn current_tls(&self) -> Option<Arc<tls::TlsSetup>> {
        self.tls
            .as_ref()
            .map(|slot| Arc::clone(&slot.read().unwrap_or_else(PoisonError::into_inner)))
    }

    fn session_config(&self, kind: Kind, peer: IpAddr, conn: &auth::ConnInfo) -> SessionConfig {
        let tls = match (kind, &self.tls) {
            (Kind::Pop3s, _) => Tls::Active,
            (Kind::Pop3, Some(_)) => Tls::Available,
            (Kind::Pop3, None) | (Kind::Kpop, _) => Tls::Unavailable,
        };
        // KPOP is Kerberos or nothing: no passwords, no APOP, no TLS.
        let kerberos_only = kind == Kind::Kpop;
        let mut mechanisms = self.auth.mechanisms(conn);
        if kerberos_only {
            mechanisms.retain(|m| m.name == "GSSAPI");
        }
        SessionConfig {
            capabilities: Arc::clone(&self.capabilities),
            apop_timestamp: (self.settings.apop && !kerberos_only)
                .then(|| self.auth.unique_msg_id()),
            tls,
            plaintext_without_tls: !kerberos_only
                && self
                    .settings
                    .plaintext_networks
                    .iter()
                    .any(|n| n.contains(&peer)),
            mechanisms,
            max_bad_commands: self.settings.max_bad_commands,
            max_sasl_line: self.settings.max_sasl_line,
            language: self.settings.language,
        }
    }
}

/// A server with its listeners bound.
pub struct Server<S: MailStore> {
    shared: Arc<Shared<S>>,
    listeners: Vec<Listener>,
    lmtp_listeners: Vec<lmtp::listener::LmtpListener>,
}

/// Serves POP3 over streams that did not come through a listening socket, as if they had been
/// accepted from `peer` on a listener of the given kind: the same connection limits,
/// penalties, timeouts and session. Tests drive the server in process with it under tokio's
/// paused clock, with no kernel in between whose timing could race the clock.
pub struct Connector<S: MailStore> {
    shared: Arc<Shared<S>>,
}

impl<S: MailStore> Clone for Connector<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: MailStore> Connector<S> {
    /// Serves `stream` as a connection from `peer`.
    pub fn serve<IO>(&self, stream: IO, peer: SocketAddr, kind: Kind)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        accept::admit(&self.shared, stream, peer, kind, false);
    }

    /// A connection from `peer` over an in-memory pipe: the client's end.
    pub fn connect(&self, peer: SocketAddr, kind: Kind) -> tokio::io::DuplexStream {
        let (client, server) = tokio::io::duplex(64 * 1024);
        self.serve(server, peer, kind);
        client
    }
}

/// How busy a running server is ([`Server::status`]).
#[derive(Clone)]
pub struct Status {
    connections: Arc<Semaphore>,
    max_connections: usize,
    per_user: Arc<limits::Slots<String>>,
    penalties: Arc<penalty::Penalties>,
    shutdown: watch::Receiver<bool>,
    probe: StoreProbe,
    cache: Option<Arc<pop3_auth::cache::CredentialCache>>,
}

/// Asks the store whether it answers ([`MailStore::check`]), whatever its type.
type StoreProbe = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync,
>;

impl Status {
    /// Whether the server can serve a new session now: its listeners are bound (a `Server`
    /// exists only once all are), it is not shutting down, and the store answers. The error
    /// says why not.
    pub async fn ready(&self) -> Result<(), String> {
        if *self.shutdown.borrow() {
            return Err("shutting down".into());
        }
        (self.probe)()
            .await
            .map_err(|e| format!("the store does not answer: {e}"))
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.max_connections
            .saturating_sub(self.connections.available_permits())
    }

    /// Sessions logged in now.
    pub fn logged_in(&self) -> usize {
        self.per_user.total()
    }

    /// Logins answered from the credential cache, and the entries it holds (zeros without one).
    pub fn credential_cache(&self) -> (u64, usize) {
        self.cache.as_ref().map_or((0, 0), |c| (c.hits(), c.len()))
    }

    /// Addresses and accounts whose login attempts are delayed now after failures.
    pub fn penalties_in_force(&self) -> usize {
        self.penalties.in_force(tokio::time::Instant::now())
    }
}

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Status")
            .field("connections", &self.connections())
            .field("logged_in", &self.logged_in())
            .finish()
    }
}

/// A bound listening socket and how its connections are served.
struct Listener {
    kind: Kind,
    /// TLS handshakes on this listener ask for a client certificate (for EXTERNAL).
    client_certs: bool,
    socket: TcpListener,
}

impl<S: MailStore> Server<S> {
    /// Validates the configuration, loads TLS material (generating the self-signed default if
    /// needed), opens the user database and binds every listener.
    pub async fn bind(config: &Config, store: S) -> Result<Self, ServerError> {
        Self::bind_with_users(config, store, config.users_source()).await
    }

    /// [`Server::bind`] with the users file already open (shared with the store, see
    /// [`Config::maildir_store_with_users`]).
    pub async fn bind_with_users(
        config: &Config,
        store: S,
        users: Users,
    ) -> Result<Self, ServerError> {
        Self::bind_with_sockets(config, store, users, Vec::new()).await
    }

    /// [`Server::bind_with_users`], serving POP3 and POP3S on `inherited` sockets (systemd
    /// socket activation) instead of binding `listen.pop3` and `listen.pop3s` itself, when
    /// there are any. Each socket serves the listener whose addresses have its port (so
    /// systemd's `ListenStream=995` is `pop3s = ["0.0.0.0:995", "[::]:995"]`); one whose port
    /// is in neither list is refused.
    pub async fn bind_with_sockets(
        config: &Config,
        store: S,
        users: Users,
        inherited: Vec<std::net::TcpListener>,
    ) -> Result<Self, ServerError> {
        let errors: Vec<String> = config
            .problems(false)
            .into_iter()
            .filter(|p| p.severity == config::Severity::Error)
            .map(|p| p.message)
            .collect();
        if !errors.is_empty() {
            return Err(ServerError::Config(errors.join(" ")));
        }
        let tls = tls::load_tls(config)?.map(|setup| Arc::new(RwLock::new(Arc::new(setup))));
        // Read now so that an unreadable file stops the start; what is wrong inside it is
        // reported by `Config::problems` (check-config, and `poplar serve` before it binds).
        users.current()?;
        let oauth = match &config.auth.oauth {
            None => None,
            Some(o) => {
                let text =
                    std::fs::read_to_string(&o.jwks_file).map_err(|source| ServerError::Io {
                        path: o.jwks_file.clone(),
                        source,
                    })?;
                Some(pop3_auth::jwt::JwtVerifier::from_jwks(
                    &text,
                    &o.issuer,
                    &o.audience,
                    &o.user_claim,
                )?)
            }
        };
        let authenticator = auth::Authenticator::new(
            config,
            users,
            auth::make_decoy().await?,
            auth::load_salt_key(&config.data_dir)?,
            oauth,
        );
        let capabilities = Capabilities {
            expire: config.pop3.expire,
            expire_per_user: config.expire_policy().varies(),
            login_delay: config.pop3.login_delay,
            login_delay_per_user: authenticator.login_delay_varies(),
            implementation: if config.pop3.show_version {
                format!("Poplar {VERSION}")
            } else {
                "Poplar".to_owned()
            },
            sdps: !config.sdps.hosts.is_empty(),
        };
        let wanted = &config.tls.client_ca_listeners;
        let client_certs = |addr: SocketAddr| {
            config.tls.client_ca.is_some()
                && (wanted.is_empty() || wanted.iter().any(|w| w.port() == addr.port()))
        };
        let mut listeners = Vec::new();
        if inherited.is_empty() {
            for (kind, addrs) in [
                (Kind::Pop3, &config.listen.pop3),
                (Kind::Pop3s, &config.listen.pop3s),
                (Kind::Kpop, &config.listen.kpop),
            ] {
                for &addr in addrs {
                    let listener = accept::listen(addr)
                        .map_err(|source| ServerError::Bind { addr, source })?;
                    listeners.push(Listener {
                        kind,
                        client_certs: client_certs(addr),
                        socket: listener,
                    });
                }
            }
        }
        for socket in inherited {
            let addr = socket.local_addr().map_err(|source| ServerError::Io {
                path: "(a socket from systemd)".into(),
                source,
            })?;
            let has_port = |addrs: &[SocketAddr]| addrs.iter().any(|a| a.port() == addr.port());
            let kind = if has_port(&config.listen.pop3s) {
                Kind::Pop3s
            } else if has_port(&config.listen.kpop) {
                Kind::Kpop
            } else if has_port(&config.listen.pop3) {
                Kind::Pop3
            } else {
                return Err(ServerError::Config(format!(
                    "systemd passed a socket on {addr}, but port {} is in neither listen.pop3 \
                     nor listen.pop3s: make poplar.socket's ListenStream= and [listen] agree",
                    addr.port()
                )));
            };
            socket
                .set_nonblocking(true)
                .map_err(|source| ServerError::Bind { addr, source })?;
            let socket = TcpListener::from_std(socket)
                .map_err(|source| ServerError::Bind { addr, source })?;
            listeners.push(Listener {
                kind,
                client_certs: client_certs(addr),
                socket,
            });
        }
        let mut lmtp_listeners = Vec::new();
        for addr in &config.listen.lmtp {
            lmtp_listeners.push(lmtp::listener::bind_lmtp(addr, config)?);
        }
        let spool_dir = config.data_dir.join("tmp");
        if !lmtp_listeners.is_empty() {
            std::fs::create_dir_all(&spool_dir).map_err(|source| ServerError::Io {
                path: spool_dir.clone(),
                source,
            })?;
            lmtp::remove_stale_spools(&spool_dir);
        }
        let settings = Settings {
            tls_handshake: config.timeouts.tls_handshake,
            idle_before_login: config.timeouts.idle_before_login,
            login: config.timeouts.login,
            idle_after_login: config.timeouts.idle_after_login,
            write: config.timeouts.write,
            shutdown_grace: config.timeouts.shutdown_grace,
            plaintext_networks: config.auth.plaintext_networks.clone(),
            proxy_from: config.listen.proxy_from.clone(),
            max_bad_commands: config.limits.max_bad_commands,
            max_sasl_line: config.limits.max_sasl_line,
            max_connections: config.limits.max_connections,
            apop: config.auth.apop,
            client_identity_cn: config.tls.client_identity == config::ClientIdentity::Cn,
            mark_seen: config.pop3.mark_seen,
            expire: config.expire_policy(),
            language: config.pop3.language,
        };
        let shared = Arc::new(Shared {
            store,
            auth: authenticator,
            tls,
            capabilities: Arc::new(capabilities),
            connections: Arc::new(Semaphore::new(settings.max_connections)),
            per_user: Arc::new(limits::Slots::new(config.limits.max_connections_per_user)),
            per_ip: Arc::new(limits::Slots::new(config.limits.max_connections_per_ip)),
            refusals: limits::RefusalLog::default(),
            waiting: Arc::default(),
            settings,
            shutdown: watch::channel(false).0,
            sessions: Arc::default(),
            lmtp: lmtp::LmtpSettings {
                host: config.hostname(),
                max_size: config.limits.max_message_size,
                spool_dir,
                headers: config.delivery.trace(),
            },
        });
        Ok(Self {
            shared,
            listeners,
            lmtp_listeners,
        })
    }

    /// The LMTP addresses served, as `addr` or `unix:path`.
    pub fn lmtp_addrs(&self) -> Vec<String> {
        self.lmtp_listeners
            .iter()
            .filter_map(|l| match l {
                lmtp::listener::LmtpListener::Tcp(t) => t.local_addr().ok().map(|a| a.to_string()),
                lmtp::listener::LmtpListener::Unix(_, path) => {
                    Some(format!("unix:{}", path.display()))
                }
            })
            .collect()
    }

    /// A handle that reloads the certificate and key; `None` when TLS is disabled.
    pub fn tls_reloader(&self, config: &Config) -> Option<TlsReloader> {
        self.shared.tls.as_ref().map(|slot| TlsReloader {
            config: config.clone(),
            slot: Arc::clone(slot),
        })
    }

    /// A handle that serves connections handed to it rather than accepted from a socket; it
    /// stays usable while [`Server::serve`] runs.
    pub fn connector(&self) -> Connector<S> {
        Connector {
            shared: Arc::clone(&self.shared),
        }
    }

    /// A handle that tells how busy the server is, usable while [`Server::serve`] runs (for
    /// systemd's STATUS= line).
    pub fn status(&self) -> Status {
        Status {
            connections: Arc::clone(&self.shared.connections),
            max_connections: self.shared.settings.max_connections,
            per_user: Arc::clone(&self.shared.per_user),
            penalties: Arc::clone(&self.shared.auth.penalties),
            cache: self.shared.auth.cache(),
            shutdown: self.shared.shutdown.subscribe(),
            probe: {
                let shared = Arc::clone(&self.shared);
                Arc::new(move || {
                    let shared = Arc::clone(&shared);
                    Box::pin(async move { shared.store.check().await.map_err(|e| e.to_string()) })
                })
            },
        }
    }

    /// The sessions running now, to list and to end (for the control socket).
    pub fn sessions(&self) -> Sessions {
        Sessions(Arc::clone(&self.shared.sessions))
    }

    /// The bound addresses (useful when a port was given as 0).
    pub fn local_addrs(&self) -> Vec<(Kind, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|l| l.socket.local_addr().ok().map(|a| (l.kind, a)))
            .collect()
    }

    /// Accepts connections until `shutdown` resolves, then lets sessions finish (up to the
    /// configured grace period).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let Server {
            shared,
            listeners,
            lmtp_listeners,
        } = self;
        let mut accept_tasks = Vec::new();
        for listener in listeners {
            accept_tasks.push(tokio::spawn(accept::accept_loop(
                Arc::clone(&shared),
                listener,
            )));
        }
        let lmtp_slots = Arc::new(Semaphore::new(lmtp::listener::LMTP_MAX_CONNECTIONS));
        for listener in lmtp_listeners {
            accept_tasks.push(tokio::spawn(lmtp::listener::lmtp_accept_loop(
                Arc::clone(&shared),
                listener,
                Arc::clone(&lmtp_slots),
            )));
        }
        shutdown.await;
        let grace = shared.settings.shutdown_grace;
        tracing::info!(
            "shutting down: no new connections; waiting up to {grace:?} for sessions to end"
        );
        let _ = shared.shutdown.send(true);
        for task in accept_tasks {
            task.abort();
        }
        let all = u32::try_from(shared.settings.max_connections).unwrap_or(u32::MAX);
        if tokio::time::timeout(grace, shared.connections.acquire_many(all))
            .await
            .is_err()
        {
            let running = shared.settings.max_connections - shared.connections.available_permits();
            tracing::warn!(
                "{running} sessions still running after {grace:?}; exiting anyway (no QUIT was half-applied: commits run to completion)"
            );
        }
    }
}
