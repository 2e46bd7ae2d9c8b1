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

use crate::auth::{self, ConnInfo};
use crate::metrics::{self, LoginResult};
use crate::penalty::{Answer, Outcome};
use crate::{Kind, Shared, zero_copy};
use pop3_auth::sasl::{FailureKind, ServerMechanism, Step};
use pop3_proto::{
    AuthFailure, CommitFailure, Credentials, EndReason, Event, Expire, MaildropFailure,
    MessageEncoder, MessageMeta, MessageRequest, Progress, Secret, ServerSession,
};
use pop3_store::{MailStore, Maildrop, MessageSource, StoreError};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, timeout};

/// Message data is read and encoded in chunks of this size.
const CHUNK: usize = 256 * 1024;
/// Command input is read in pieces of this size (many pipelined commands fit).
const READ_BUFFER: usize = 4096;
/// Message chunks at least this large are sent as read when they need no change (smaller ones
/// are cheaper to copy into the output buffer than to write on their own).
const PASS_THROUGH: usize = 64 * 1024;

enum Driven<IO> {
    Closed,
    StartTls(IO),
}

pub(crate) struct Connection<S: MailStore> {
    shared: Arc<Shared<S>>,
    peer: SocketAddr,
    /// The listener it arrived on.
    kind: Kind,
    session: ServerSession,
    out: Vec<u8>,
    maildrop: Option<S::Maildrop>,
    shutdown: watch::Receiver<bool>,
    /// What the connection offers mechanisms (TLS, channel binding, client certificate).
    info: ConnInfo,
    /// The SASL exchange in progress: the mechanism and its name.
    sasl: Option<(Box<dyn ServerMechanism>, String)>,
    /// TLS handshakes ask for a client certificate on this listener.
    client_certs: bool,
    /// Counts this connection against its user's limit once it has authenticated.
    user_slot: Option<crate::limits::Slot<String>>,
    /// When an unauthenticated connection is closed however active it is (`timeouts.login`).
    login_deadline: Instant,
    /// Until login: this connection's place among the unauthenticated ones, which the accept
    /// loop may close to make room at the connection limit.
    waiting: Option<crate::limits::WaitingTicket>,
    /// Commands the session had received when the connection last took its place in that
    /// queue (each complete command moves it to the end).
    commands_seen: u32,
    /// This connection in the list `poplar who` shows, and its kick.
    registration: crate::registry::Registration,
    /// For the summary line: the TLS version, the login's mechanism, and the maildrop's
    /// messages and octets when it was opened.
    tls_version: Option<&'static str>,
    mechanism: Option<String>,
    maildrop_at_login: Option<(usize, u64)>,
}

/// Resolves when the connection is told to make room; never if it has logged in.
async fn evicted(waiting: &Option<crate::limits::WaitingTicket>) {
    match waiting {
        Some(ticket) => ticket.evicted().await,
        None => std::future::pending().await,
    }
}

/// Resolves when the open maildrop's lock is lost; never without one.
fn lock_lost<M: Maildrop>(maildrop: &Option<M>) -> impl Future<Output = ()> + Send + 'static {
    let lost = maildrop.as_ref().map(Maildrop::lock_lost);
    async move {
        match lost {
            Some(lost) => lost.await,
            None => std::future::pending().await,
        }
    }
}

/// Serves one accepted connection to its end and logs the session summary.
pub(crate) async fn handle<S: MailStore, IO: AsyncRead + AsyncWrite + Unpin + 'static>(
    shared: Arc<Shared<S>>,
    tcp: IO,
    peer: SocketAddr,
    kind: Kind,
    client_certs: bool,
    waiting: crate::limits::WaitingTicket,
) {
    let started = Instant::now();
    let shutdown = shared.shutdown.subscribe();
    let login_deadline = started + shared.settings.login;
    // A POP3S connection's session is replaced after the handshake, when TLS facts are known.
    let session = ServerSession::new(shared.session_config(kind, peer.ip(), &ConnInfo::default()));
    let registration = shared.sessions.register(peer, kind);
    let mut conn = Connection {
        shared,
        peer,
        kind,
        session,
        out: Vec::new(),
        maildrop: None,
        shutdown,
        info: ConnInfo::default(),
        sasl: None,
        client_certs,
        user_slot: None,
        login_deadline,
        waiting: Some(waiting),
        commands_seen: 0,
        registration,
        tls_version: None,
        mechanism: None,
        maildrop_at_login: None,
    };
    // Every line the session logs carries its number (text: `session{id=7}:`; JSON: "span").
    let span = tracing::info_span!("session", id = conn.registration.id());
    let result = tracing::Instrument::instrument(conn.run(tcp), span.clone()).await;
    span.in_scope(|| conn.summary(started, result.err()));
}

impl<S: MailStore> Connection<S> {
    async fn run<IO: AsyncRead + AsyncWrite + Unpin + 'static>(
        &mut self,
        tcp: IO,
    ) -> io::Result<()> {
        let kind = self.kind;
        let plain = match kind {
            Kind::Pop3s => {
                let tls = self.handshake(tcp).await?;
                self.session = ServerSession::new(self.shared.session_config(
                    kind,
                    self.peer.ip(),
                    &self.info,
                ));
                self.drive(tls).await?;
                return Ok(());
            }
            Kind::Pop3 | Kind::Kpop => tcp,
        };
        match self.drive(plain).await? {
            Driven::Closed => Ok(()),
            Driven::StartTls(tcp) => {
                let tls = self.handshake(tcp).await?;
                let mechanisms = self.shared.auth.mechanisms(&self.info);
                self.session.tls_established(mechanisms).map_err(misuse)?;
                self.registration.set_tls();
                self.drive(tls).await.map(|_| ())
            }
        }
    }

    async fn handshake<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        tcp: IO,
    ) -> io::Result<tokio_rustls::server::TlsStream<IO>> {
        let result = self.tls_handshake(tcp).await;
        metrics::tls_handshake(
            self.kind,
            result
                .is_ok()
                .then_some(self.tls_version.unwrap_or("other")),
        );
        result
    }

    async fn tls_handshake<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        tcp: IO,
    ) -> io::Result<tokio_rustls::server::TlsStream<IO>> {
        let setup = self
            .shared
            .current_tls()
            .ok_or_else(|| io::Error::other("TLS not configured"))?;
        let acceptor = match (&setup.with_client_certs, self.client_certs) {
            (Some(with_certs), true) => with_certs.clone(),
            _ => setup.acceptor.clone(),
        };
        let handshake = timeout(self.shared.settings.tls_handshake, acceptor.accept(tcp));
        let tls = tokio::select! {
            result = handshake => match result {
                Ok(result) => result?,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "TLS handshake timed out",
                    ));
                }
            },
            () = evicted(&self.waiting) => {
                metrics::evicted(self.kind);
                return Err(io::Error::other(
                    "closed during the TLS handshake to make room at the connection limit",
                ));
            }
        };
        let conn = tls.get_ref().1;
        self.tls_version = conn.protocol_version().map(|v| match v {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
            _ => "other",
        });
        self.info = ConnInfo {
            tls: true,
            binding: Some(crate::tls::channel_binding(conn, &setup.end_point)),
            client_identity: conn
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| {
                    pop3_auth::cert::client_identity(cert, self.shared.settings.client_identity_cn)
                }),
        };
        Ok(tls)
    }

    async fn drive<IO: AsyncRead + AsyncWrite + Unpin + 'static>(
        &mut self,
        mut io: IO,
    ) -> io::Result<Driven<IO>> {
        let mut input = [0u8; READ_BUFFER];
        loop {
            let event = self.session.poll(&mut self.out).map_err(misuse)?;
            match event {
                Event::NeedInput => {
                    self.flush(&mut io).await?;
                    let commands = self.session.stats().commands;
                    self.registration.set_commands(commands);
                    if commands != self.commands_seen
                        && let Some(ticket) = self.waiting.as_mut()
                    {
                        self.commands_seen = commands;
                        ticket.touch();
                    }
                    // Waiting for the client: keep an idle connection small after a large
                    // response.
                    self.out.shrink_to(READ_BUFFER);
                    let idle = if self.session.is_logged_in() {
                        self.shared.settings.idle_after_login
                    } else {
                        // Trickling bytes resets the idle timer but not the login deadline.
                        let left = self
                            .login_deadline
                            .saturating_duration_since(Instant::now());
                        self.shared.settings.idle_before_login.min(left)
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
                        () = evicted(&self.waiting) => {
                            metrics::evicted(self.kind);
                            self.session.evicted(&mut self.out).map_err(misuse)?;
                            continue;
                        }
                        () = self.registration.entry.kick.notified(), if self.session.is_logged_in() => {
                            tracing::info!(peer = %self.peer, "ended by the administrator (poplar kick); nothing deleted");
                            self.maildrop = None;
                            self.session.kicked(&mut self.out).map_err(misuse)?;
                            continue;
                        }
                        () = lock_lost(&self.maildrop) => {
                            tracing::warn!(peer = %self.peer, "the maildrop's lock was lost; ending the session without deleting anything");
                            self.maildrop = None;
                            self.session.maildrop_lost(&mut self.out).map_err(misuse)?;
                            continue;
                        }
                    };
                    match read {
                        Err(_) => self.session.timed_out(),
                        Ok(Ok(0)) => return Ok(Driven::Closed),
                        Ok(Ok(n))
                            if self.session.stats().commands == 0
                                && !self.session.is_logged_in()
                                && crate::proxy::looks_like_header(&input[..n]) =>
                        {
                            // A header now is from a peer outside listen.proxy_from (a
                            // trusted one's was read before the greeting): never believed.
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "a PROXY header from an address not in listen.proxy_from",
                            ));
                        }
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
                    let fingerprint = self
                        .shared
                        .auth
                        .penalties
                        .fingerprint(&user, password.expose());
                    let step = self.shared.auth.password(user, password).await;
                    self.conclude("USER", step, Some(fingerprint)).await?;
                }
                Event::Authenticate(Credentials::Apop {
                    user,
                    timestamp,
                    digest,
                }) => {
                    let step = self.shared.auth.apop(&user, &timestamp, &digest);
                    self.conclude("APOP", step, None).await?;
                }
                Event::SaslStart {
                    mechanism,
                    initial_response,
                } => {
                    match self.shared.auth.start(&mechanism, &self.info) {
                        Some(m) => {
                            self.sasl = Some((m, mechanism));
                            self.sasl_step(initial_response).await?;
                        }
                        None => {
                            // The session only starts mechanisms it offered; a configuration
                            // change between offer and use lands here.
                            metrics::login(&mechanism, LoginResult::Temporary);
                            self.session
                                .auth_failed(&mut self.out, AuthFailure::Temporary)
                                .map_err(misuse)?;
                        }
                    }
                }
                Event::SaslResponse(data) => self.sasl_step(Some(data)).await?,
                Event::SaslAbandoned => self.sasl_abandoned().await?,
                Event::OpenMaildrop { user } => self.open_maildrop(user).await?,
                Event::SendMessage(request) => self.send_message(&mut io, request).await?,
                Event::StartTls => {
                    self.flush(&mut io).await?;
                    return Ok(Driven::StartTls(io));
                }
                Event::Commit { deleted, retrieved } => self.commit(deleted, retrieved).await?,
            }
        }
    }

    async fn flush<IO: AsyncWrite + Unpin>(&mut self, io: &mut IO) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        write_within(io, &self.out, self.shared.settings.write).await?;
        self.out.clear();
        Ok(())
    }

    /// Feeds the client's response to the SASL mechanism in progress.
    async fn sasl_step(&mut self, input: Option<Secret<Vec<u8>>>) -> io::Result<()> {
        let Some((mechanism, name)) = self.sasl.take() else {
            return self
                .session
                .auth_failed(&mut self.out, AuthFailure::Protocol)
                .map_err(misuse);
        };
        // Fingerprint the response now (PLAIN's contains the password) and keep only the
        // number: retrying one wrong password must not escalate the penalty.
        let response_print = self.shared.auth.penalties.fingerprint(
            &name,
            input.as_ref().map_or(&[][..], |d| d.expose().as_slice()),
        );
        let (mechanism, step) = self.shared.auth.step(mechanism, input).await;
        if let (Some(m), Step::Challenge(_)) = (mechanism, &step) {
            self.sasl = Some((m, name.clone()));
        }
        let fingerprint = matches!(step, Step::Failure(_)).then_some(response_print);
        self.conclude(&name, step, fingerprint).await
    }

    /// Counts this connection for `user` (keeping the slot it already has for the same user).
    /// RFC 2449 LOGIN-DELAY: decided by the store where it keeps the record for every node (a
    /// cluster), else by this server's memory. A store that cannot be asked admits the login;
    /// opening the maildrop will say whether the store works.
    async fn login_allowed(&mut self, user: &str) -> bool {
        let delay = std::time::Duration::from_secs(self.shared.auth.login_delay_for(user).into());
        if delay.is_zero() {
            return true;
        }
        match self.shared.store.admit_login(user, delay).await {
            Ok(Some(admitted)) => admitted,
            Ok(None) => self.shared.auth.login_allowed(user),
            Err(e) => {
                metrics::store_error("login_delay");
                tracing::warn!(user, error = %e, "cannot check LOGIN-DELAY in the store; the login is admitted");
                true
            }
        }
    }

    fn take_user_slot(&mut self, user: &str) -> bool {
        if self.user_slot.as_ref().is_some_and(|s| s.key() == user) {
            return true;
        }
        self.user_slot = None;
        self.user_slot = self.shared.per_user.try_take(user.to_owned());
        self.user_slot.is_some()
    }

    /// A SASL exchange the client abandoned (`*`, or invalid base64) is a failed attempt: it
    /// pays the failure's penalty before the session says so.
    async fn sasl_abandoned(&mut self) -> io::Result<()> {
        let (user, name) = match self.sasl.take() {
            Some((mechanism, name)) => (
                mechanism
                    .claimed_user()
                    .map(pop3_auth::directory::normalize_name),
                name,
            ),
            None => (None, String::new()),
        };
        let ip = self.peer.ip();
        let answer = self.shared.auth.penalties.conclude(
            ip,
            user.as_deref(),
            Outcome::Failure { fingerprint: None },
            Instant::now(),
        );
        auth::log_failure(
            ip,
            user.as_deref().unwrap_or(""),
            &name,
            "the client abandoned the exchange",
            answer,
        );
        metrics::login(&name, penalised(answer, LoginResult::Protocol));
        if self.hold(answer).await? {
            self.session.sasl_abandoned(&mut self.out).map_err(misuse)?;
        }
        Ok(())
    }

    /// Waits until an attempt may be answered: `true` then; `false` if the connection was
    /// closed instead (the attempt refused, evicted to make room, or the server shutting
    /// down), the session told so.
    async fn hold(&mut self, answer: Answer) -> io::Result<bool> {
        let delay = match answer {
            Answer::After(delay) => delay,
            Answer::Close => {
                self.session.refuse_attempt(&mut self.out).map_err(misuse)?;
                return Ok(false);
            }
        };
        if delay.is_zero() {
            return Ok(true);
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(true),
            () = evicted(&self.waiting) => {
                metrics::evicted(self.kind);
                self.session.evicted(&mut self.out).map_err(misuse)?;
                Ok(false)
            }
            _ = self.shutdown.changed() => {
                self.session.shutting_down(&mut self.out);
                Ok(false)
            }
        }
    }

    /// Answers the session with the outcome of a step: a challenge, a login, or a failure,
    /// each in its turn (see `penalty`).
    async fn conclude(
        &mut self,
        mechanism: &str,
        step: Step,
        fingerprint: Option<u64>,
    ) -> io::Result<()> {
        let ip = self.peer.ip();
        let failure = match step {
            Step::Challenge(challenge) => {
                return self
                    .session
                    .sasl_challenge(&mut self.out, &challenge)
                    .map_err(misuse);
            }
            Step::Success { user } if !self.shared.auth.method_allowed(&user, mechanism) => {
                self.sasl = None;
                // As a wrong password: the client learns nothing it could not guess.
                let reason = format!(
                    "{mechanism} is not among the login methods of this user's domain ([domains] mechanisms)"
                );
                return Box::pin(self.conclude(
                    mechanism,
                    Step::Failure(pop3_auth::sasl::Failure {
                        kind: FailureKind::InvalidCredentials,
                        user: Some(user),
                        reason: reason.into(),
                    }),
                    fingerprint,
                ))
                .await;
            }
            Step::Success { user } => {
                self.sasl = None;
                let answer = self.shared.auth.penalties.conclude(
                    ip,
                    Some(&user),
                    Outcome::Success,
                    Instant::now(),
                );
                if answer == Answer::Close {
                    metrics::login(mechanism, LoginResult::Penalty);
                    tracing::info!(user = ?user, peer = %ip, "login attempt closed unanswered: too many failed logins from this address");
                }
                if !self.hold(answer).await? {
                    return Ok(());
                }
                if !self.login_allowed(&user).await {
                    metrics::login(mechanism, LoginResult::LoginDelay);
                    tracing::info!(user = ?user, peer = %ip, "login refused: LOGIN-DELAY not yet passed");
                    AuthFailure::LoginDelay
                } else if !self.take_user_slot(&user) {
                    metrics::login(mechanism, LoginResult::TooManyConnections);
                    tracing::info!(user = ?user, peer = %ip, "login refused: too many connections for this user");
                    AuthFailure::TooManyConnections
                } else {
                    self.mechanism = Some(mechanism.to_owned());
                    return self.session.auth_succeeded(user).map_err(misuse);
                }
            }
            Step::Failure(f) => {
                self.sasl = None;
                match f.kind {
                    FailureKind::Temporary => {
                        metrics::login(mechanism, LoginResult::Temporary);
                        AuthFailure::Temporary
                    }
                    kind => {
                        let user = f.user.as_deref().map(pop3_auth::directory::normalize_name);
                        let answer = self.shared.auth.penalties.conclude(
                            ip,
                            user.as_deref(),
                            Outcome::Failure { fingerprint },
                            Instant::now(),
                        );
                        auth::log_failure(
                            ip,
                            f.user.as_deref().unwrap_or(""),
                            mechanism,
                            &f.reason,
                            answer,
                        );
                        let result = match (kind, user) {
                            (FailureKind::InvalidCredentials, Some(user))
                                if !self.shared.auth.knows(&user) =>
                            {
                                LoginResult::UnknownUser
                            }
                            (FailureKind::InvalidCredentials, _) => LoginResult::BadPassword,
                            _ => LoginResult::Protocol,
                        };
                        metrics::login(mechanism, penalised(answer, result));
                        if !self.hold(answer).await? {
                            return Ok(());
                        }
                        if kind == FailureKind::InvalidCredentials {
                            AuthFailure::InvalidCredentials
                        } else {
                            AuthFailure::Protocol
                        }
                    }
                }
            }
        };
        self.session
            .auth_failed(&mut self.out, failure)
            .map_err(misuse)
    }

    async fn open_maildrop(&mut self, user: String) -> io::Result<()> {
        match self.shared.store.open(&user).await {
            Ok((maildrop, listing)) => {
                metrics::login(self.mechanism.as_deref().unwrap_or("-"), LoginResult::Ok);
                self.shared.auth.record_login(&user);
                self.registration.set_user(&user);
                self.maildrop_at_login =
                    Some((listing.len(), listing.iter().map(|m| m.size).sum()));
                self.session
                    .set_user_login_delay(self.shared.auth.login_delay_for(&user));
                self.session
                    .set_user_expire(self.shared.settings.expire.for_user(&user));
                self.maildrop = Some(maildrop);
                // Logged in: no longer among the connections that may be evicted.
                self.waiting = None;
                let messages = listing
                    .into_iter()
                    .map(|m| MessageMeta {
                        size: m.size,
                        uidl: m.uidl,
                        envelope: m.envelope,
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
                let result = if why == MaildropFailure::InUse {
                    LoginResult::InUse
                } else {
                    metrics::store_error("open");
                    LoginResult::Temporary
                };
                metrics::login(self.mechanism.as_deref().unwrap_or("-"), result);
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

    async fn send_message<IO: AsyncWrite + Unpin + 'static>(
        &mut self,
        io: &mut IO,
        request: MessageRequest,
    ) -> io::Result<()> {
        let started = Instant::now();
        let top = request.body_lines.is_some();
        if self.send(io, request).await? {
            metrics::message_sent(top, started.elapsed());
        }
        Ok(())
    }

    /// Sends the message (`true`), or tells the client it cannot be read (`false`).
    async fn send<IO: AsyncWrite + Unpin + 'static>(
        &mut self,
        io: &mut IO,
        request: MessageRequest,
    ) -> io::Result<bool> {
        let opened = match self.maildrop.as_mut() {
            Some(maildrop) => maildrop.read(request.index).await,
            None => Err(StoreError::MessageGone(request.index)),
        };
        let mut reader = match opened {
            Ok(reader) => reader,
            Err(e) => {
                metrics::store_error("read");
                tracing::warn!(user = ?self.session.user(), message = request.index + 1, error = %e, "cannot read a message");
                self.session.message_failed(&mut self.out).map_err(misuse)?;
                return Ok(false);
            }
        };
        let mut encoder = self.session.message_start(&mut self.out).map_err(misuse)?;
        if request.body_lines.is_none()
            && let Some(file) = reader.verbatim_file()
            && let Some(socket) = zero_copy::socket(io)
            // The listed size is the file's length (checked now: another program could have
            // replaced the file since the index was written).
            && file.metadata().is_ok_and(|m| m.len() == request.size)
            && encoder.sent_verbatim(request.size)
        {
            // The +OK line first, then the file.
            write_within(socket, &self.out, self.shared.settings.write).await?;
            self.out.clear();
            zero_copy::send_file(socket, file, request.size, self.shared.settings.write).await?;
            metrics::sent_zero_copy();
            return self.message_done(request, encoder).await;
        }
        // No larger than the message needs (plus one octet to see the end in the same read):
        // most messages are small, and a large buffer would cost a fresh mapping per message.
        let wanted = usize::try_from(request.size)
            .unwrap_or(CHUNK)
            .saturating_add(1);
        let mut chunk = Vec::with_capacity(wanted.clamp(READ_BUFFER, CHUNK));
        loop {
            // After "+OK" a read error can only end the connection: the client must not take a
            // truncated message for a whole one.
            chunk = reader.next_chunk(chunk).await?;
            if chunk.is_empty() {
                break;
            }
            // A large chunk that needs no change goes to the socket as it was read.
            if chunk.len() >= PASS_THROUGH && encoder.pass_through(&chunk) {
                self.flush(io).await?;
                write_within(io, &chunk, self.shared.settings.write).await?;
                continue;
            }
            let progress = encoder.encode(&chunk, &mut self.out);
            if self.out.len() >= CHUNK {
                self.flush(io).await?;
            }
            if progress == Progress::Done {
                break;
            }
        }
        self.message_done(request, encoder).await
    }

    /// Ends a message sent through `encoder`: the terminator, the seen flag, the size check.
    async fn message_done(
        &mut self,
        request: MessageRequest,
        encoder: MessageEncoder,
    ) -> io::Result<bool> {
        let sent = self
            .session
            .message_end(&mut self.out, encoder)
            .map_err(misuse)?;
        if request.body_lines.is_none()
            && self.shared.settings.mark_seen
            && let Some(maildrop) = self.maildrop.as_mut()
            && let Err(e) = maildrop.mark_seen(request.index).await
        {
            metrics::store_error("mark_seen");
            tracing::warn!(user = ?self.session.user(), message = request.index + 1, error = %e, "cannot mark a message seen");
        }
        if request.body_lines.is_none() && sent != request.size {
            tracing::error!(
                user = ?self.session.user(), message = request.index + 1, listed = request.size, sent,
                "message size differs from the index (a wrong ,W= hint in its file name?)"
            );
        }
        Ok(true)
    }

    async fn commit(&mut self, deleted: Vec<usize>, retrieved: Vec<usize>) -> io::Result<()> {
        let user = self.session.user().unwrap_or_default();
        let counts_days =
            matches!(self.shared.settings.expire.for_user(user), Expire::Days(n) if n > 0);
        let result = match self.maildrop.take() {
            Some(mut maildrop) => {
                if counts_days && !retrieved.is_empty() {
                    // The retention period starts now. Without the record the messages are
                    // kept longer, never removed early: a failure here only warrants a warning.
                    if let Err(e) = maildrop.note_retrieved(&retrieved).await {
                        metrics::store_error("note_retrieved");
                        tracing::warn!(user, error = %e, "cannot record retrieval times; these messages will not expire");
                    }
                }
                maildrop.commit(deleted).await
            }
            None => Ok(()),
        };
        let result = result.map_err(|e| {
            metrics::store_error("commit");
            tracing::error!(user = ?self.session.user(), error = %e, "UPDATE failed");
            CommitFailure::Partial
        });
        self.session
            .commit_done(&mut self.out, result)
            .map_err(misuse)
    }

    fn summary(&self, started: Instant, error: Option<io::Error>) {
        let listener = self.kind;
        let s = self.session.stats();
        // Like Dovecot's `del=N/M size=`: the maildrop before the session and after its QUIT.
        let (before, after) = match self.maildrop_at_login {
            Some((count, octets)) if s.committed => (
                format!("{count}/{octets}"),
                format!(
                    "{}/{}",
                    count.saturating_sub(s.deleted as usize),
                    octets.saturating_sub(s.deleted_octets)
                ),
            ),
            Some((count, octets)) => {
                let same = format!("{count}/{octets}");
                (same.clone(), same)
            }
            None => ("-".to_owned(), "-".to_owned()),
        };
        // In words for the log line, and as the metrics' `end` label.
        let (end, label) = match (self.session.end_reason(), &error) {
            (EndReason::Quit, _) => ("quit", "quit"),
            (EndReason::Timeout, _) => ("timeout", "timeout"),
            (EndReason::Shutdown, _) => ("shutdown", "shutdown"),
            (EndReason::Evicted, _) => ("evicted to make room", "evicted"),
            (EndReason::TooManyFailures, _) => {
                ("closed: too many failed logins", "too_many_failures")
            }
            (EndReason::MaildropLost, _) => ("the maildrop's lock was lost", "lock_lost"),
            (EndReason::Kicked, _) => ("ended by the administrator", "kicked"),
            (EndReason::TooManyBadCommands, _) => ("too many bad commands", "bad_commands"),
            (EndReason::Open, Some(_)) => ("error", "error"),
            (EndReason::Open, None) => ("disconnected", "disconnected"),
        };
        let took = started.elapsed();
        metrics::session_ended(listener, self.session.tls_active(), label, &s, took);
        tracing::info!(
            peer = %self.peer,
            listener = %listener,
            user = self.session.user().unwrap_or("-"),
            mechanism = self.mechanism.as_deref().unwrap_or("-"),
            tls = self.session.tls_active(),
            tls_version = self.tls_version.unwrap_or("-"),
            maildrop_before = before,
            maildrop_after = after,
            retr = s.retr,
            retr_octets = s.retr_octets,
            top = s.top,
            top_octets = s.top_octets,
            dele = s.deleted,
            dele_octets = s.deleted_octets,
            committed = s.committed,
            bad_commands = s.bad_commands,
            auth_failures = s.auth_failures,
            ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            end,
            error = error.as_ref().map(|e| e.to_string()),
            "session ended"
        );
    }
}

/// A failed attempt's metrics result, or `penalty` when it was closed unanswered.
fn penalised(answer: Answer, result: LoginResult) -> LoginResult {
    if answer == Answer::Close {
        LoginResult::Penalty
    } else {
        result
    }
}

fn misuse(e: pop3_proto::Error) -> io::Error {
    tracing::error!(error = %e, "bug: protocol driver misused the session");
    io::Error::other(e)
}

/// Writes `bytes` and flushes, giving up when the client has not taken them within `limit`.
async fn write_within<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    bytes: &[u8],
    limit: std::time::Duration,
) -> io::Result<()> {
    let write = async {
        io.write_all(bytes).await?;
        io.flush().await
    };
    match timeout(limit, write).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client stopped reading",
        )),
    }
}
