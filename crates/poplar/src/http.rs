//! The small HTTP/1.1 listeners `poplar serve` runs beside POP3: metrics and the health check
//! (`[metrics]`), client autoconfiguration (`[autoconfig]`). One accept loop for both: an
//! optional allow-list of networks, a bounded number of connections at once, a deadline for
//! each request's header and a limit on how long a kept-alive connection lives.

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A request's header must arrive within this.
const REQUEST_TIME: Duration = Duration::from_secs(10);
/// A kept-alive connection is closed after this, busy or not.
const CONNECTION_TIME: Duration = Duration::from_secs(300);

/// One listener's rules.
pub(crate) struct Listener {
    /// For the log: "metrics", "autoconfig".
    pub what: &'static str,
    /// Networks that may connect; `None`: everyone.
    pub allow_from: Option<Vec<ipnet::IpNet>>,
    /// Connections served at once; more wait in the kernel's queue.
    pub max_connections: usize,
}

/// Serves `handler` on `addr` under `rules`; returns the bound address.
pub(crate) async fn listen<H, F>(
    addr: SocketAddr,
    rules: Listener,
    handler: H,
) -> Result<SocketAddr>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {} on {addr}", rules.what))?;
    let bound = listener.local_addr()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(rules.max_connections));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "{} listener: accept failed", rules.what);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let ip = peer.ip().to_canonical();
            if let Some(allowed) = &rules.allow_from
                && !allowed.iter().any(|n| n.contains(&ip))
            {
                tracing::debug!(%peer, "{}: closed a connection from outside its allow_from", rules.what);
                continue;
            }
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let handler = handler.clone();
            let what = rules.what;
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let answer = handler(request);
                    async move { Ok::<_, std::convert::Infallible>(answer.await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(REQUEST_TIME)
                    .keep_alive(true)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_TIME, connection).await {
                    tracing::debug!(%peer, error = %e, "{what} connection failed");
                }
                drop(slot);
            });
        }
    });
    Ok(bound)
}

/// A response with this status and body.
pub(crate) fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

/// The same with a `Content-Type`.
pub(crate) fn typed(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = reply(status, body);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}
