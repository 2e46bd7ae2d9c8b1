//! Checking credentials for the connection driver: the user database (re-read when it
//! changes), password hashing off the async threads, the login-delay policy, and the log line
//! for failed logins.

use pop3_auth::{UserDbFile, Verdict, sasl, scheme};
use pop3_proto::Secret;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a credential check concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Good credentials for this canonical user name.
    Valid(String),
    /// Unknown user or wrong secret.
    Invalid,
    /// The server could not decide (users file unreadable, unsupported password scheme).
    Temporary,
}

/// Shared by all connections.
#[derive(Debug)]
pub(crate) struct Authenticator {
    users: UserDbFile,
    decoy: Arc<str>,
    hashing: HashPool,
    pub(crate) failure_delay: Duration,
    login_delay: Duration,
    last_login: Mutex<HashMap<String, Instant>>,
}

impl Authenticator {
    pub(crate) fn new(
        users: UserDbFile,
        decoy: String,
        failure_delay: Duration,
        login_delay: Duration,
    ) -> Self {
        // One hashing thread per core, at most 8: each keeps its Argon2 memory (19 MiB for
        // Poplar's hashes, 64 MiB for Dovecot's defaults) for reuse.
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        let cores = cores.min(8);
        Self {
            users,
            decoy: decoy.into(),
            hashing: HashPool::new(cores),
            failure_delay,
            login_delay,
            last_login: Mutex::new(HashMap::new()),
        }
    }

    fn database(&self) -> Option<Arc<pop3_auth::UserDb>> {
        match self.users.current() {
            Ok((db, warnings)) => {
                for w in warnings {
                    tracing::warn!(file = %self.users.path().display(), line = w.line, "users file: {}", w.reason);
                }
                Some(db)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the users file; logins fail with [SYS/TEMP]");
                None
            }
        }
    }

    /// USER/PASS and SASL PLAIN.
    pub(crate) async fn password(&self, user: String, password: Secret<Vec<u8>>) -> Outcome {
        let Some(db) = self.database() else {
            return Outcome::Temporary;
        };
        let decoy = Arc::clone(&self.decoy);
        let name = user.clone();
        let verdict = self
            .hashing
            .run(move || db.verify(&name, password.expose(), &decoy))
            .await;
        match verdict {
            Ok(Ok(Verdict::Valid(u))) => Outcome::Valid(u),
            Ok(Ok(Verdict::Invalid)) => Outcome::Invalid,
            Ok(Err(e)) => {
                tracing::error!(user = ?user, error = %e, "cannot check the password; fix this user's entry in the users file");
                Outcome::Temporary
            }
            Err(()) => {
                tracing::error!("password hashing thread is gone");
                Outcome::Temporary
            }
        }
    }

    /// APOP.
    pub(crate) fn apop(&self, user: &str, timestamp: &str, digest: &str) -> Outcome {
        let Some(db) = self.database() else {
            return Outcome::Temporary;
        };
        match db.verify_apop(user, timestamp, digest) {
            Verdict::Valid(u) => Outcome::Valid(u),
            Verdict::Invalid => Outcome::Invalid,
        }
    }

    /// Decodes a PLAIN message and checks it, returning the name tried and the outcome.
    /// Asking to act as another user is refused (there are no master users yet).
    pub(crate) async fn plain(&self, message: &[u8]) -> Result<(String, Outcome), &'static str> {
        let creds = sasl::parse_plain(message).map_err(|_| "malformed PLAIN message")?;
        let name = creds.authcid.clone();
        if creds.wants_other_identity() {
            return Ok((name, Outcome::Invalid));
        }
        Ok((name, self.password(creds.authcid, creds.password).await))
    }

    /// RFC 2449 LOGIN-DELAY: whether `user` may log in now.
    pub(crate) fn login_allowed(&self, user: &str) -> bool {
        if self.login_delay.is_zero() {
            return true;
        }
        let last = self.last_login.lock().unwrap_or_else(|e| e.into_inner());
        last.get(user)
            .is_none_or(|t| t.elapsed() >= self.login_delay)
    }

    /// Remembers a successful login for LOGIN-DELAY.
    pub(crate) fn record_login(&self, user: &str) {
        if self.login_delay.is_zero() {
            return;
        }
        let mut last = self.last_login.lock().unwrap_or_else(|e| e.into_inner());
        if last.len() > 100_000 {
            let delay = self.login_delay;
            last.retain(|_, t| t.elapsed() < delay);
        }
        last.insert(user.to_owned(), Instant::now());
    }
}

/// A few dedicated threads, one per core, that check password hashes.
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
pub(crate) fn log_failure(peer: IpAddr, user: &str, mechanism: &str, why: &str) {
    tracing::warn!(
        "authentication failed: peer={peer} user={user:?} mechanism={mechanism} reason={why}"
    );
}

/// A fresh decoy hash (computed once at startup, on a blocking thread).
pub(crate) async fn make_decoy() -> Result<String, pop3_auth::AuthError> {
    tokio::task::spawn_blocking(scheme::decoy_hash)
        .await
        .map_err(|e| pop3_auth::AuthError::Random(e.to_string()))?
}
