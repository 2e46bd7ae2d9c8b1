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
//!   commit) finish, wait up to the grace period.

#![forbid(unsafe_code)]

mod auth;
pub mod config;
mod connection;
mod error;
pub mod expire;
mod limits;
pub mod lmtp;
mod penalty;
pub mod tls;

pub use config::Config;
pub use error::ServerError;

use ipnet::IpNet;
use pop3_auth::UserDbFile;
use pop3_proto::{Capabilities, SessionConfig, Tls};
use pop3_store::MailStore;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// The version shown in IMPLEMENTATION.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The kind of listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// POP3, port 110 style, with STLS.
    Pop3,
    /// POP3 over implicit TLS, port 995 style.
    Pop3s,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Pop3 => "POP3",
            Kind::Pop3s => "POP3S",
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
}

/// State shared by every connection.
struct Shared<S: MailStore> {
    store: S,
    auth: auth::Authenticator,
    tls: Option<TlsSlot>,
    capabilities: Arc<Capabilities>,
    settings: Settings,
    connections: Arc<Semaphore>,
    per_ip: Arc<limits::Slots<IpNet>>,
    per_user: Arc<limits::Slots<String>>,
    refusals: limits::RefusalLog,
    waiting: Arc<limits::Waiting>,
    shutdown: watch::Sender<bool>,
    lmtp: lmtp::LmtpSettings,
}

impl<S: MailStore> Shared<S> {
    /// The TLS material new handshakes use.
    fn current_tls(&self) -> Option<Arc<TlsSetup>> {
        self.tls
            .as_ref()
            .map(|slot| Arc::clone(&slot.read().unwrap_or_else(PoisonError::into_inner)))
    }

    fn session_config(&self, kind: Kind, peer: IpAddr, conn: &auth::ConnInfo) -> SessionConfig {
        let tls = match (kind, &self.tls) {
            (Kind::Pop3s, _) => Tls::Active,
            (Kind::Pop3, Some(_)) => Tls::Available,
            (Kind::Pop3, None) => Tls::Unavailable,
        };
        SessionConfig {
            capabilities: Arc::clone(&self.capabilities),
            apop_timestamp: self.settings.apop.then(|| self.auth.unique_msg_id()),
            tls,
            plaintext_without_tls: self
                .settings
                .plaintext_networks
                .iter()
                .any(|n| n.contains(&peer)),
            mechanisms: self.auth.mechanisms(conn),
            max_bad_commands: self.settings.max_bad_commands,
            max_sasl_line: self.settings.max_sasl_line,
        }
    }
}

/// The TLS acceptors and the certificate hash for channel binding.
#[derive(Clone)]
struct TlsSetup {
    /// For listeners that do not ask for client certificates.
    acceptor: TlsAcceptor,
    /// For listeners that ask for (optional) client certificates, when `tls.client_ca` is set.
    with_client_certs: Option<TlsAcceptor>,
    /// `tls-server-end-point` data.
    end_point: Vec<u8>,
}

/// Loads the certificate and key (generating the self-signed default if configured so) and
/// builds the acceptors; `None` when TLS is disabled.
fn load_tls(config: &Config) -> Result<Option<TlsSetup>, ServerError> {
    if !config.tls.enabled {
        return Ok(None);
    }
    let (cert, key, generated) = config.tls_files();
    if generated {
        let names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        if tls::ensure_self_signed(&cert, &key, &names)? {
            tracing::warn!(
                cert = %cert.display(),
                "generated a self-signed TLS certificate for localhost; clients will not \
                 trust it. Set tls.cert and tls.key for production"
            );
        }
    }
    let plain = tls::server_config(&cert, &key, config.tls.min_version, None)?;
    let with_client_certs = match &config.tls.client_ca {
        Some(ca) => Some(TlsAcceptor::from(
            tls::server_config(&cert, &key, config.tls.min_version, Some(ca))?.config,
        )),
        None => None,
    };
    Ok(Some(TlsSetup {
        acceptor: TlsAcceptor::from(plain.config),
        with_client_certs,
        end_point: plain.end_point,
    }))
}

/// The TLS material in use, replaceable while the server runs.
type TlsSlot = Arc<RwLock<Arc<TlsSetup>>>;

/// Reloads the certificate and key (on SIGHUP): new handshakes use the new ones, sessions
/// already running keep theirs.
pub struct TlsReloader {
    config: Config,
    slot: TlsSlot,
}

impl TlsReloader {
    /// Reads the files again. On an error the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), ServerError> {
        if let Some(setup) = load_tls(&self.config)? {
            *self.slot.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(setup);
        }
        Ok(())
    }
}

/// A server with its listeners bound.
pub struct Server<S: MailStore> {
    shared: Arc<Shared<S>>,
    listeners: Vec<Listener>,
    lmtp_listeners: Vec<LmtpListener>,
}

/// A bound LMTP socket.
enum LmtpListener {
    Tcp(TcpListener),
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

/// LMTP connections served at once: an MTA opens a handful (Postfix's default destination
/// concurrency is 20); more means something is wrong, and they are told to come back.
const LMTP_MAX_CONNECTIONS: usize = 100;

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
        Self::bind_with_users(config, store, UserDbFile::new(config.users_file())).await
    }

    /// [`Server::bind`] with the users file already open (shared with the store, see
    /// [`Config::maildir_store_with_users`]).
    pub async fn bind_with_users(
        config: &Config,
        store: S,
        users: UserDbFile,
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
        let tls = load_tls(config)?.map(|setup| Arc::new(RwLock::new(Arc::new(setup))));
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
        };
        let mut listeners = Vec::new();
        for (kind, addrs) in [
            (Kind::Pop3, &config.listen.pop3),
            (Kind::Pop3s, &config.listen.pop3s),
        ] {
            for &addr in addrs {
                let listener = listen(addr).map_err(|source| ServerError::Bind { addr, source })?;
                let wanted = &config.tls.client_ca_listeners;
                let client_certs =
                    config.tls.client_ca.is_some() && (wanted.is_empty() || wanted.contains(&addr));
                listeners.push(Listener {
                    kind,
                    client_certs,
                    socket: listener,
                });
            }
        }
        let mut lmtp_listeners = Vec::new();
        for addr in &config.listen.lmtp {
            lmtp_listeners.push(bind_lmtp(addr, config)?);
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
            max_bad_commands: config.limits.max_bad_commands,
            max_sasl_line: config.limits.max_sasl_line,
            max_connections: config.limits.max_connections,
            apop: config.auth.apop,
            client_identity_cn: config.tls.client_identity == config::ClientIdentity::Cn,
            mark_seen: config.pop3.mark_seen,
            expire: config.expire_policy(),
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
                LmtpListener::Tcp(t) => t.local_addr().ok().map(|a| a.to_string()),
                LmtpListener::Unix(_, path) => Some(format!("unix:{}", path.display())),
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
            accept_tasks.push(tokio::spawn(accept_loop(Arc::clone(&shared), listener)));
        }
        let lmtp_slots = Arc::new(Semaphore::new(LMTP_MAX_CONNECTIONS));
        for listener in lmtp_listeners {
            accept_tasks.push(tokio::spawn(lmtp_accept_loop(
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

/// Connections the kernel may queue before `accept` (capped by `net.core.somaxconn`). The
/// usual default of 128 drops SYNs, and so costs clients a one-second retransmission, as soon
/// as a burst of connections arrives faster than one accept loop iteration.
const LISTEN_BACKLOG: u32 = 1024;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // A restarted server must not wait for the old connections' TIME_WAIT to pass.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Binds an LMTP listener. A unix socket left by an earlier run is replaced. The new one is
/// created with `listen.lmtp_socket_mode` (0660: whoever can connect can deliver to any user)
/// by setting the umask around `bind`, so there is no moment with other permissions and no
/// `chmod` by path that a planted link could redirect; its owner and group are then changed
/// without following links (`lchown`): the service user (when started as root) and
/// `listen.lmtp_socket_group`, else the service user's group.
fn bind_lmtp(addr: &config::LmtpAddr, config: &Config) -> Result<LmtpListener, ServerError> {
    match addr {
        config::LmtpAddr::Tcp(a) => listen(*a)
            .map(LmtpListener::Tcp)
            .map_err(|source| ServerError::Bind { addr: *a, source }),
        config::LmtpAddr::Unix(path) => {
            use nix::sys::stat::{Mode, umask};
            use std::os::unix::fs::FileTypeExt;
            let io = |source| ServerError::Io {
                path: path.clone(),
                source,
            };
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                std::fs::remove_file(path).map_err(io)?;
            }
            let mode = config.listen.lmtp_socket_mode & 0o777;
            let previous = umask(Mode::from_bits_truncate(!mode & 0o777));
            let bound = tokio::net::UnixListener::bind(path);
            umask(previous);
            let listener = bound.map_err(io)?;
            let (owner, group) = socket_owner(config)?;
            if owner.is_some() || group.is_some() {
                std::os::unix::fs::lchown(path, owner, group).map_err(io)?;
            }
            Ok(LmtpListener::Unix(listener, path.clone()))
        }
    }
}

/// Who should own a unix LMTP socket: the service user when running as root, and the group
/// the configuration names for it (else the service user's).
fn socket_owner(config: &Config) -> Result<(Option<u32>, Option<u32>), ServerError> {
    use nix::unistd::{Group, User};
    let root = nix::unistd::geteuid().is_root();
    let user = match (&config.user, root) {
        (Some(name), true) => Some(
            User::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| ServerError::Config(format!("user = {name:?}: no such user")))?,
        ),
        _ => None,
    };
    let group_name = config
        .listen
        .lmtp_socket_group
        .as_ref()
        .or(config.group.as_ref().filter(|_| root));
    let group = match group_name {
        Some(name) => Some(
            Group::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| {
                    ServerError::Config(format!(
                        "listen.lmtp_socket_group (or group) = {name:?}: no such group"
                    ))
                })?
                .gid
                .as_raw(),
        ),
        None => user.as_ref().map(|u| u.gid.as_raw()),
    };
    Ok((user.map(|u| u.uid.as_raw()), group))
}

async fn lmtp_accept_loop<S: MailStore>(
    shared: Arc<Shared<S>>,
    listener: LmtpListener,
    slots: Arc<Semaphore>,
) {
    loop {
        let accepted = match &listener {
            LmtpListener::Tcp(l) => l.accept().await.map(|(s, peer)| {
                let _ = s.set_nodelay(true);
                (LmtpStream::Tcp(s), peer.to_string())
            }),
            LmtpListener::Unix(l, path) => l
                .accept()
                .await
                .map(|(s, _)| (LmtpStream::Unix(s), format!("unix:{}", path.display()))),
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "LMTP accept failed; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            const BUSY: &[u8] = b"421 4.3.2 Too many LMTP connections; try again later\r\n";
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = match stream {
                    LmtpStream::Tcp(mut s) => s.write_all(BUSY).await,
                    LmtpStream::Unix(mut s) => s.write_all(BUSY).await,
                };
            });
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            match stream {
                LmtpStream::Tcp(s) => lmtp::serve(shared, s, peer).await,
                LmtpStream::Unix(s) => lmtp::serve(shared, s, peer).await,
            }
            drop(permit);
        });
    }
}

/// An accepted LMTP connection.
enum LmtpStream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept_loop<S: MailStore>(shared: Arc<Shared<S>>, listener: Listener) {
    let Listener {
        kind,
        client_certs,
        socket: listener,
    } = listener;
    let mut backoff = Duration::from_millis(5);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff = Duration::from_millis(5);
                accepted
            }
            Err(e) => {
                // Typically EMFILE: out of file descriptors. Wait rather than spin.
                tracing::warn!(error = %e, "accept failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ip = peer.ip().to_canonical();
        let peer = SocketAddr::new(ip, peer.port());
        let net = limits::client_net(ip);
        // At the per-address limit the longest-waiting unauthenticated connection from the
        // same address makes room, as at the global limit: many real clients share an address
        // (NAT), and connections that never log in must not lock them out.
        let (slot, evicted_for_address) = match shared.per_ip.try_take(net) {
            Some(slot) => (slot, false),
            None if shared.waiting.evict_oldest_from(net) => (shared.per_ip.take_over(net), true),
            None => {
                refuse(&shared.refusals, stream, kind, AT_ADDRESS_LIMIT);
                continue;
            }
        };
        let permit = Arc::clone(&shared.connections).try_acquire_owned().ok();
        // An eviction for the address also frees a global permit; otherwise, at the global
        // limit, the longest-waiting unauthenticated connection of all makes room.
        if permit.is_none() && !evicted_for_address && !shared.waiting.evict_oldest() {
            refuse(&shared.refusals, stream, kind, AT_LIMIT);
            continue;
        }
        // Queued here, not in the task, so the queue is in arrival order.
        let waiting = shared.waiting.enter(net);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let permit = match permit {
                Some(permit) => permit,
                None => {
                    let connections = Arc::clone(&shared.connections);
                    match tokio::time::timeout(EVICTION_WAIT, connections.acquire_owned()).await {
                        Ok(Ok(permit)) => permit,
                        _ => return refuse(&shared.refusals, stream, kind, AT_LIMIT),
                    }
                }
            };
            connection::handle(shared, stream, peer, kind, client_certs, waiting).await;
            drop((slot, permit));
        });
    }
}

const AT_ADDRESS_LIMIT: &str = "Too many connections from your address; try again shortly";
const AT_LIMIT: &str = "Server is at its connection limit; try again shortly";

/// How long a newcomer waits for the permit of the connection it evicted.
const EVICTION_WAIT: Duration = Duration::from_secs(2);

/// Tells a client it cannot be served (plaintext only: a POP3S client would not understand).
fn refuse(log: &limits::RefusalLog, mut stream: TcpStream, kind: Kind, text: &'static str) {
    log.record(stream.peer_addr().ok(), text);
    if kind == Kind::Pop3s {
        return;
    }
    tokio::spawn(async move {
        let line = format!("-ERR [SYS/TEMP] {text}\r\n");
        let _ =
            tokio::time::timeout(Duration::from_secs(2), stream.write_all(line.as_bytes())).await;
    });
}
