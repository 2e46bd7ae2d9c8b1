//! The LMTP sockets: binding them (a unix socket with the mode and group the configuration
//! gives, never through a planted link), accepting at most [`LMTP_MAX_CONNECTIONS`] at once,
//! and handing each connection to [`super::serve`].

use crate::{Config, ServerError, Shared, accept::listen, config};
use pop3_store::MailStore;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// A bound LMTP socket.
pub(crate) enum LmtpListener {
    Tcp(TcpListener),
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

/// LMTP connections served at once: an MTA opens a handful (Postfix's default destination
/// concurrency is 20); more means something is wrong, and they are told to come back.
pub(crate) const LMTP_MAX_CONNECTIONS: usize = 100;

/// Binds an LMTP listener. A unix socket left by an earlier run is replaced. The new one is
/// created with `listen.lmtp_socket_mode` (0660: whoever can connect can deliver to any user)
/// by setting the umask around `bind`, so there is no moment with other permissions and no
/// `chmod` by path that a planted link could redirect; its owner and group are then changed
/// without following links (`lchown`): the service user (when started as root) and
/// `listen.lmtp_socket_group`, else the service user's group.
pub(crate) fn bind_lmtp(
    addr: &config::LmtpAddr,
    config: &Config,
) -> Result<LmtpListener, ServerError> {
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

pub(crate) async fn lmtp_accept_loop<S: MailStore>(
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
                LmtpStream::Tcp(s) => super::serve(shared, s, peer).await,
                LmtpStream::Unix(s) => super::serve(shared, s, peer).await,
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
