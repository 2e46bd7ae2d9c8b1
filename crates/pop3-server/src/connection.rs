//! One client connection: the driver between a socket and the sans-I/O session.
//!
//! It owns the socket, the output buffer and the open maildrop, and answers each
//! [`Event`] the session emits: it checks credentials (with the failure delay), opens and locks
//! the maildrop, streams messages from storage through the dot-stuffing encoder with
//! back-pressure (never more than one 64 KiB chunk in memory), performs the STLS upgrade and
//! commits deletions. Every read and write has a timeout. Responses are flushed when the session
//! runs out of input, so pipelined commands get their answers in one write.
//!
//! The plaintext and the TLS phases of a connection are different types: [`Connection::drive`]
//! is generic over the stream and returns the raw stream on STLS, the caller wraps it in TLS and
//! drives again.

use crate::auth::{self, Outcome};
use crate::{Kind, Shared};
use pop3_proto::{
    AuthFailure, CommitFailure, Credentials, EndReason, Event, MaildropFailure, MessageMeta,
    MessageRequest, Progress, Secret, ServerSession,
};
use pop3_store::{MailStore, Maildrop, StoreError};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::timeout;

/// Message data is read and encoded in chunks of this size.
const CHUNK: usize = 64 * 1024;
/// Command input is read in pieces of this size (many pipelined commands fit).
const READ_BUFFER: usize = 4096;

enum Driven<IO> {
    Closed,
    StartTls(IO),
}

pub(crate) struct Connection<S: MailStore> {
    shared: Arc<Shared<S>>,
    peer: SocketAddr,
    session: ServerSession,
    out: Vec<u8>,
    maildrop: Option<S::Maildrop>,
    shutdown: watch::Receiver<bool>,
}

/// Serves one accepted connection to its end and logs the session summary.
pub(crate) async fn handle<S: MailStore>(
    shared: Arc<Shared<S>>,
    tcp: TcpStream,
    peer: SocketAddr,
    kind: Kind,
) {
    let started = Instant::now();
    let session = ServerSession::new(shared.session_config(kind, peer.ip()));
    let shutdown = shared.shutdown.subscribe();
    let mut conn = Connection {
        shared,
        peer,
        session,
        out: Vec::new(),
        maildrop: None,
        shutdown,
    };
    let result = conn.run(tcp, kind).await;
    conn.summary(started, result.err());
}

impl<S: MailStore> Connection<S> {
    async fn run(&mut self, tcp: TcpStream, kind: Kind) -> io::Result<()> {
        let plain = match kind {
            Kind::Pop3s => {
                let tls = self.handshake(tcp).await?;
                self.drive(tls).await?;
                return Ok(());
            }
            Kind::Pop3 => tcp,
        };
        match self.drive(plain).await? {
            Driven::Closed => Ok(()),
            Driven::StartTls(tcp) => {
                let tls = self.handshake(tcp).await?;
                self.session.tls_established().map_err(misuse)?;
                self.drive(tls).await.map(|_| ())
            }
        }
    }

    async fn handshake(
        &mut self,
        tcp: TcpStream,
    ) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        let acceptor = self
            .shared
            .tls
            .clone()
            .ok_or_else(|| io::Error::other("TLS not configured"))?;
        match timeout(self.shared.settings.tls_handshake, acceptor.accept(tcp)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            )),
        }
    }

    async fn drive<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut io: IO,
    ) -> io::Result<Driven<IO>> {
        let mut input = [0u8; READ_BUFFER];
        loop {
            let event = self.session.poll(&mut self.out).map_err(misuse)?;
            match event {
                Event::NeedInput => {
                    self.flush(&mut io).await?;
                    let idle = if self.session.is_logged_in() {
                        self.shared.settings.idle_after_login
                    } else {
                        self.shared.settings.idle_before_login
                    };
                    if *self.shutdown.borrow() {
                        self.session.shutting_down(&mut self.out);
                        continue;
                    }
                    let read = tokio::select! {
                        r = timeout(idle, io.read(&mut input)) => r,
                        _ = self.shutdown.changed() => {
                            self.session.shutting_down(&mut self.out);
                            continue;
                        }
                    };
                    match read {
                        Err(_) => self.session.timed_out(),
                        Ok(Ok(0)) => return Ok(Driven::Closed),
                        Ok(Ok(n)) => self.session.receive(&input[..n]),
                        Ok(Err(e)) => return Err(e),
                    }
                }
                Event::Flush => self.flush(&mut io).await?,
                Event::Close => {
                    self.flush(&mut io).await?;
                    let _ = timeout(self.shared.settings.write, io.shutdown()).await;
                    return Ok(Driven::Closed);
                }
                Event::Authenticate(Credentials::UserPass { user, password }) => {
                    let outcome = self.shared.auth.password(user.clone(), password).await;
                    self.finish_auth(&user, "USER", outcome).await?;
                }
                Event::Authenticate(Credentials::Apop {
                    user,
                    timestamp,
                    digest,
                }) => {
                    let outcome = self.shared.auth.apop(&user, &timestamp, &digest);
                    self.finish_auth(&user, "APOP", outcome).await?;
                }
                Event::SaslStart {
                    mechanism: _,
                    initial_response: None,
                } => {
                    // PLAIN is the only mechanism offered: it starts with an empty challenge.
                    self.session
                        .sasl_challenge(&mut self.out, b"")
                        .map_err(misuse)?;
                }
                Event::SaslStart {
                    mechanism: _,
                    initial_response: Some(data),
                }
                | Event::SaslResponse(data) => self.sasl_plain(data).await?,
                Event::OpenMaildrop { user } => self.open_maildrop(user).await?,
                Event::SendMessage(request) => self.send_message(&mut io, request).await?,
                Event::StartTls => {
                    self.flush(&mut io).await?;
                    return Ok(Driven::StartTls(io));
                }
                Event::Commit { deleted } => self.commit(deleted).await?,
            }
        }
    }

    async fn flush<IO: AsyncWrite + Unpin>(&mut self, io: &mut IO) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let write = async {
            io.write_all(&self.out).await?;
            io.flush().await
        };
        match timeout(self.shared.settings.write, write).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client stopped reading",
                ));
            }
        }
        self.out.clear();
        // Keep an idle connection small after a large response.
        self.out.shrink_to(READ_BUFFER);
        Ok(())
    }

    async fn finish_auth(
        &mut self,
        attempted: &str,
        mechanism: &str,
        outcome: Outcome,
    ) -> io::Result<()> {
        let failure = match outcome {
            Outcome::Valid(user) if self.shared.auth.login_allowed(&user) => {
                return self.session.auth_succeeded(user).map_err(misuse);
            }
            Outcome::Valid(user) => {
                tracing::info!(user = ?user, peer = %self.peer.ip(), "login refused: LOGIN-DELAY not yet passed");
                AuthFailure::LoginDelay
            }
            Outcome::Invalid => {
                auth::log_failure(self.peer.ip(), attempted, mechanism, "invalid credentials");
                tokio::time::sleep(self.shared.auth.failure_delay).await;
                AuthFailure::InvalidCredentials
            }
            Outcome::Temporary => AuthFailure::Temporary,
        };
        self.session
            .auth_failed(&mut self.out, failure)
            .map_err(misuse)
    }

    async fn sasl_plain(&mut self, data: Secret<Vec<u8>>) -> io::Result<()> {
        match self.shared.auth.plain(data.expose()).await {
            Ok((name, outcome)) => self.finish_auth(&name, "PLAIN", outcome).await,
            Err(why) => {
                auth::log_failure(self.peer.ip(), "", "PLAIN", why);
                tokio::time::sleep(self.shared.auth.failure_delay).await;
                self.session
                    .auth_failed(&mut self.out, AuthFailure::Protocol)
                    .map_err(misuse)
            }
        }
    }

    async fn open_maildrop(&mut self, user: String) -> io::Result<()> {
        match self.shared.store.open(&user).await {
            Ok((maildrop, listing)) => {
                self.shared.auth.record_login(&user);
                self.maildrop = Some(maildrop);
                let messages = listing
                    .into_iter()
                    .map(|m| MessageMeta {
                        size: m.size,
                        uidl: m.uidl,
                    })
                    .collect();
                tracing::debug!(user = ?user, peer = %self.peer, "logged in");
                self.session
                    .maildrop_opened(&mut self.out, user, messages)
                    .map_err(misuse)
            }
            Err(e) => {
                let why = match &e {
                    StoreError::InUse => MaildropFailure::InUse,
                    e if e.is_temporary() => MaildropFailure::Temporary,
                    _ => MaildropFailure::Permanent,
                };
                if why == MaildropFailure::InUse {
                    tracing::info!(user = ?user, peer = %self.peer, "maildrop in use by another session");
                } else {
                    tracing::error!(user = ?user, error = %e, "cannot open the maildrop");
                }
                self.session
                    .maildrop_failed(&mut self.out, why)
                    .map_err(misuse)
            }
        }
    }

    async fn send_message<IO: AsyncWrite + Unpin>(
        &mut self,
        io: &mut IO,
        request: MessageRequest,
    ) -> io::Result<()> {
        let opened = match self.maildrop.as_mut() {
            Some(maildrop) => maildrop.read(request.index).await,
            None => Err(StoreError::MessageGone(request.index)),
        };
        let mut reader = match opened {
            Ok(reader) => reader,
            Err(e) => {
                tracing::warn!(user = ?self.session.user(), message = request.index + 1, error = %e, "cannot read a message");
                return self.session.message_failed(&mut self.out).map_err(misuse);
            }
        };
        let mut encoder = self.session.message_start(&mut self.out).map_err(misuse)?;
        let mut chunk = vec![0u8; CHUNK];
        loop {
            // After "+OK" a read error can only end the connection: the client must not take a
            // truncated message for a whole one.
            let n = reader.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            let progress = encoder.encode(&chunk[..n], &mut self.out);
            if self.out.len() >= CHUNK {
                self.flush(io).await?;
            }
            if progress == Progress::Done {
                break;
            }
        }
        let sent = self
            .session
            .message_end(&mut self.out, encoder)
            .map_err(misuse)?;
        if request.body_lines.is_none() && sent != request.size {
            tracing::error!(
                user = ?self.session.user(), message = request.index + 1, listed = request.size, sent,
                "message size differs from the index (a wrong ,W= hint in its file name?)"
            );
        }
        Ok(())
    }

    async fn commit(&mut self, deleted: Vec<usize>) -> io::Result<()> {
        let result = match self.maildrop.take() {
            Some(maildrop) => maildrop.commit(deleted).await,
            None => Ok(()),
        };
        let result = result.map_err(|e| {
            tracing::error!(user = ?self.session.user(), error = %e, "UPDATE failed");
            CommitFailure::Partial
        });
        self.session
            .commit_done(&mut self.out, result)
            .map_err(misuse)
    }

    fn summary(&self, started: Instant, error: Option<io::Error>) {
        let s = self.session.stats();
        let end = match (self.session.end_reason(), &error) {
            (EndReason::Quit, _) => "quit",
            (EndReason::Timeout, _) => "timeout",
            (EndReason::Shutdown, _) => "shutdown",
            (EndReason::TooManyBadCommands, _) => "too many bad commands",
            (EndReason::Open, Some(_)) => "error",
            (EndReason::Open, None) => "disconnected",
        };
        tracing::info!(
            peer = %self.peer,
            user = self.session.user().unwrap_or("-"),
            tls = self.session.tls_active(),
            retr = s.retr,
            retr_octets = s.retr_octets,
            top = s.top,
            top_octets = s.top_octets,
            dele = s.deleted,
            dele_octets = s.deleted_octets,
            committed = s.committed,
            bad_commands = s.bad_commands,
            auth_failures = s.auth_failures,
            ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            end,
            error = error.as_ref().map(|e| e.to_string()),
            "session ended"
        );
    }
}

fn misuse(e: pop3_proto::Error) -> io::Error {
    tracing::error!(error = %e, "bug: protocol driver misused the session");
    io::Error::other(e)
}
