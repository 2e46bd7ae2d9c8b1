//! Accepting POP3 and POP3S connections: the listening sockets, PROXY headers from trusted
//! load balancers (see [`crate::proxy`]), the per-address and global connection limits (at
//! either, the connection that has waited longest without logging in gives way to the
//! newcomer), refusals answered with `-ERR [SYS/TEMP]` instead of silence, and back-off when
//! `accept` fails (running out of descriptors must not spin the CPU).

use crate::{Kind, Listener, Shared, connection, limits, proxy};
use pop3_proto::{Language, Text};
use pop3_store::MailStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// Connections the kernel may queue before `accept` (capped by `net.core.somaxconn`). The
/// usual default of 128 drops SYNs, and so costs clients a one-second retransmission, as soon
/// as a burst of connections arrives faster than one accept loop iteration.
const LISTEN_BACKLOG: i32 = 1024;

pub(crate) fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        // `[::]:110` means IPv6 only, so that it can be listed next to `0.0.0.0:110` (as the
        // production example does): a dual-stack socket would hold the IPv4 port too, and
        // the second bind would fail with "address in use".
        socket.set_only_v6(true)?;
    }
    // A restarted server must not wait for the old connections' TIME_WAIT to pass.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

pub(crate) async fn accept_loop<S: MailStore>(shared: Arc<Shared<S>>, listener: Listener) {
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
        let from = peer.ip().to_canonical();
        if shared.settings.proxy_from.iter().any(|n| n.contains(&from)) {
            // Behind a load balancer: the client's address comes in the PROXY header, read in
            // a task of its own so that a slow proxy holds up nobody else.
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut stream = stream;
                let header =
                    tokio::time::timeout(proxy::HEADER_WAIT, proxy::read_header(&mut stream)).await;
                match header {
                    Ok(Ok(client)) => {
                        admit(&shared, stream, client.unwrap_or(peer), kind, client_certs);
                    }
                    Ok(Err(e)) => tracing::warn!(%peer, "closed a connection from a proxy: {e}"),
                    Err(_) => tracing::warn!(
                        %peer,
                        "closed a connection from a proxy: no PROXY header within {:?}",
                        proxy::HEADER_WAIT
                    ),
                }
            });
            continue;
        }
        admit(&shared, stream, peer, kind, client_certs);
    }
}

/// Takes a connection from `peer` in, or refuses it: the connection limits (where the
/// longest-waiting unauthenticated connection makes room), then the session in a task of its
/// own. TCP connections come here from [`accept_loop`], in-process ones from
/// [`crate::Connector`].
pub(crate) fn admit<S, IO>(
    shared: &Arc<Shared<S>>,
    stream: IO,
    peer: SocketAddr,
    kind: Kind,
    client_certs: bool,
) where
    S: MailStore,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    crate::metrics::connection_accepted(kind);
    let ip = peer.ip().to_canonical();
    let peer = SocketAddr::new(ip, peer.port());
    let net = limits::client_net(ip);
    // At the per-address limit the longest-waiting unauthenticated connection from the
    // same address makes room, as at the global limit: many real clients share an address
    // (NAT), and connections that never log in must not lock them out.
    let (slot, evicted_for_address) = match shared.per_ip.try_take(net) {
        Some(slot) => (slot, false),
        None if shared.waiting.evict_oldest_from(net) => (shared.per_ip.take_over(net), true),
        None => return refuse(shared, stream, peer, kind, Text::AtAddressLimit),
    };
    let permit = Arc::clone(&shared.connections).try_acquire_owned().ok();
    // An eviction for the address also frees a global permit; otherwise, at the global
    // limit, the longest-waiting unauthenticated connection of all makes room.
    if permit.is_none() && !evicted_for_address && !shared.waiting.evict_oldest() {
        return refuse(shared, stream, peer, kind, Text::AtConnectionLimit);
    }
    // Queued here, not in the task, so the queue is in arrival order.
    let waiting = shared.waiting.enter(net);
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let permit = match permit {
            Some(permit) => permit,
            None => {
                let connections = Arc::clone(&shared.connections);
                match tokio::time::timeout(EVICTION_WAIT, connections.acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    _ => return refuse(&shared, stream, peer, kind, Text::AtConnectionLimit),
                }
            }
        };
        connection::handle(shared, stream, peer, kind, client_certs, waiting).await;
        drop((slot, permit));
    });
}

/// How long a newcomer waits for the permit of the connection it evicted.
const EVICTION_WAIT: Duration = Duration::from_secs(2);

/// Tells a client it cannot be served (plaintext only: a POP3S client would not understand).
/// The log says why in English; the client reads it in the server's configured language.
fn refuse<S, IO>(
    shared: &Shared<S>,
    mut stream: IO,
    peer: SocketAddr,
    kind: Kind,
    text: Text<'static>,
) where
    S: MailStore,
    IO: AsyncWrite + Unpin + Send + 'static,
{
    crate::metrics::connection_refused(kind);
    let reason = Language::English.text(text).to_string();
    shared
        .refusals
        .record(peer, &reason, tokio::time::Instant::now());
    if kind == Kind::Pop3s {
        return;
    }
    let line = format!(
        "-ERR [SYS/TEMP] {}\r\n",
        shared.settings.language.text(text)
    );
    tokio::spawn(async move {
        let _ =
            tokio::time::timeout(Duration::from_secs(2), stream.write_all(line.as_bytes())).await;
    });
}
