//! Everything the server does by the clock, tested under tokio's paused clock: failure delays
//! and their queue, penalties that reset, guessing rates with many connections, the timeouts,
//! LOGIN-DELAY and the refusal log.
//!
//! Why paused: these are minutes of schedule (the production delays double from 2 s to 15 s;
//! an idle session is closed after 10 minutes), which a real clock could only test shortened
//! and with windows wide enough for a loaded CI machine. Here the server runs in process over
//! the memory store, clients reach it through [`Connector`] over in-memory pipes (no kernel
//! whose timing could race the clock), and tokio advances time only when every task waits. So
//! each delay is measured exactly, with the production defaults, in milliseconds of real time.

#![allow(clippy::unwrap_used, missing_docs)]

use pop3_server::{Config, Connector, Kind, Server};
use pop3_store::MemoryStore;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::time::{Instant, sleep};

/// The log lines the server wrote (the test's thread is the runtime's only thread).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }
}

/// A server in process: alice and bob with `{PLAIN}` passwords (what is measured is the
/// schedule, not the hash), the production defaults unless `edit` changes them.
struct Lab {
    connector: Connector<MemoryStore>,
    config: Config,
    logs: Logs,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Also returns the guard that keeps the test's log capture in place.
async fn start(edit: impl FnOnce(&mut Config)) -> (Lab, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let log_guard = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("users"),
        "alice:{PLAIN}right-password\nbob:{PLAIN}bobs-password\n",
    )
    .unwrap();
    let mut config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    config.listen.pop3 = vec!["127.0.0.1:0".parse().unwrap()];
    config.listen.pop3s = vec![];
    config.tls.enabled = false;
    // Clients come from documentation and test networks here, not from loopback.
    config.auth.plaintext_networks = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
    edit(&mut config);
    let store = MemoryStore::new();
    store.deliver("alice", b"Subject: hello\r\n\r\nhi\r\n");
    let server = Server::bind(&config, store).await.unwrap();
    let connector = server.connector();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let lab = Lab {
        connector,
        config,
        logs,
        _dir: dir,
        _stop: stop,
    };
    (lab, log_guard)
}

struct Client {
    io: BufReader<DuplexStream>,
}

impl Lab {
    /// A connection from `ip` and the first line the server sent.
    async fn connect(&self, ip: &str, kind: Kind) -> (Client, String) {
        let ip: IpAddr = ip.parse().unwrap();
        let io = self.connector.connect(SocketAddr::new(ip, 40_000), kind);
        let mut c = Client {
            io: BufReader::new(io),
        };
        let first = if kind == Kind::Pop3 {
            c.line().await
        } else {
            String::new()
        };
        (c, first)
    }

    async fn pop3(&self, ip: &str) -> (Client, String) {
        self.connect(ip, Kind::Pop3).await
    }

    /// A session from `ip` logged in as `user`, and how long the login took.
    async fn logged_in(&self, ip: &str, user: &str, password: &str) -> (Client, Duration) {
        let (mut c, greeting) = self.pop3(ip).await;
        assert!(greeting.starts_with("+OK"), "{greeting}");
        let start = Instant::now();
        let reply = c.login(user, password).await;
        assert!(reply.starts_with("+OK Logged in"), "{reply}");
        (c, start.elapsed())
    }

    /// One failed USER/PASS for alice from `ip`: how long the answer took.
    async fn fail_from(&self, ip: &str, password: &str) -> Duration {
        let (mut c, greeting) = self.pop3(ip).await;
        assert!(greeting.starts_with("+OK"), "{greeting}");
        assert!(c.cmd("USER alice").await.starts_with("+OK"));
        let start = Instant::now();
        let reply = c.cmd(&format!("PASS {password}")).await;
        assert_eq!(reply, "-ERR [AUTH] Authentication failed");
        start.elapsed()
    }
}

impl Client {
    /// The next line without its CRLF; empty once the server has closed the connection.
    async fn line(&mut self) -> String {
        let mut line = String::new();
        match self.io.read_line(&mut line).await {
            Ok(_) => line.trim_end().to_owned(),
            Err(_) => String::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        // A connection the server closed fails the write; the next read says so.
        let _ = self.io.get_mut().write_all(bytes).await;
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.line().await
    }

    async fn login(&mut self, user: &str, password: &str) -> String {
        let reply = self.cmd(&format!("USER {user}")).await;
        if !reply.starts_with("+OK") {
            return reply;
        }
        self.cmd(&format!("PASS {password}")).await
    }

    /// How long until the server closes the connection, reading (and ignoring) what it sends.
    async fn closed_after(&mut self) -> Duration {
        let start = Instant::now();
        while !self.line().await.is_empty() {}
        start.elapsed()
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// The documented schedule: the base delay doubling per failure up to the cap.
fn schedule(config: &Config, failures: u32) -> Vec<Duration> {
    (0..failures)
        .map(|i| (config.auth.failure_delay * 2u32.pow(i.min(16))).min(config.auth.penalty_cap))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn failure_delays_double_to_the_cap_and_are_forgotten_after_a_quiet_period() {
    let (lab, _log) = start(|_| {}).await;
    let mut curve = Vec::new();
    for i in 0..6 {
        curve.push(lab.fail_from("192.0.2.1", &format!("guess{i}")).await);
    }
    // 2, 4, 8, 15, 15, 15 seconds with the defaults.
    assert_eq!(curve, schedule(&lab.config, 6));
    // The right password still works, and clears the account's penalty...
    let (mut c, _) = lab.logged_in("192.0.2.99", "alice", "right-password").await;
    c.cmd("QUIT").await;
    // ...so a failure from a fresh address costs the base delay again,
    let base = lab.config.auth.failure_delay;
    assert_eq!(lab.fail_from("192.0.2.2", "guess-a").await, base);
    // while the address that failed repeatedly is still at the cap.
    let cap = lab.config.auth.penalty_cap;
    assert_eq!(lab.fail_from("192.0.2.1", "guess-b").await, cap);
    // Just before the quiet period has passed it is still remembered; after it, forgotten.
    sleep(lab.config.auth.penalty_reset_after - cap - secs(1.0)).await;
    assert_eq!(lab.fail_from("192.0.2.1", "guess-c").await, cap);
    sleep(lab.config.auth.penalty_reset_after).await;
    assert_eq!(lab.fail_from("192.0.2.1", "guess-d").await, base);
    // The log names the address and the user, never the password.
    assert!(
        lab.logs
            .count("authentication failed: peer=192.0.2.1 user=\"alice\"")
            >= 6
    );
    assert_eq!(lab.logs.count("guess"), 0, "a password reached the log");
}

#[tokio::test(start_paused = true)]
async fn the_same_wrong_password_retried_does_not_escalate() {
    let (lab, _log) = start(|_| {}).await;
    let base = lab.config.auth.failure_delay;
    for _ in 0..5 {
        assert_eq!(lab.fail_from("192.0.2.1", "old-password").await, base);
    }
    // A different wrong password does.
    assert_eq!(lab.fail_from("192.0.2.1", "another").await, base * 2);
}

#[tokio::test(start_paused = true)]
async fn parallel_guesses_queue_one_delay_apart_and_the_owner_still_logs_in_at_once() {
    let (lab, _log) = start(|_| {}).await;
    let lab = Arc::new(lab);
    let start = Instant::now();
    let guesses: Vec<_> = (0..6)
        .map(|i| {
            let lab = Arc::clone(&lab);
            tokio::spawn(async move {
                lab.fail_from(&format!("192.0.2.{}", 10 + i), &format!("guess-{i}"))
                    .await;
                start.elapsed()
            })
        })
        .collect();
    // Let every guess arrive, then the owner logs in from an address of their own.
    sleep(secs(0.5)).await;
    let (_, took) = lab
        .logged_in("198.51.100.7", "alice", "right-password")
        .await;
    assert_eq!(
        took,
        Duration::ZERO,
        "penalties never delay a right password"
    );
    let mut finished = Vec::new();
    for g in guesses {
        finished.push(g.await.unwrap());
    }
    finished.sort();
    // Each from a new address, against one account: answered one after another, each a
    // further delay after the one before (2, 4, 8, 15, 15, 15 s later), not all after 2 s.
    let mut expected = Vec::new();
    let mut at = Duration::ZERO;
    for delay in schedule(&lab.config, 6) {
        at += delay;
        expected.push(at);
    }
    assert_eq!(finished, expected);
}

#[tokio::test(start_paused = true)]
async fn trusted_networks_are_exempt() {
    let (lab, _log) =
        start(|c| c.auth.trusted_networks = vec!["192.0.2.3/32".parse().unwrap()]).await;
    for i in 0..5 {
        assert_eq!(
            lab.fail_from("192.0.2.3", &format!("trusted-guess{i}"))
                .await,
            Duration::ZERO
        );
    }
    assert_eq!(
        lab.fail_from("192.0.2.4", "untrusted").await,
        lab.config.auth.failure_delay
    );
}

/// What fifty guessing connections saw.
#[derive(Debug, Default)]
struct Tally {
    /// Answers that say whether a guess was right (`+OK` or `-ERR [AUTH]`).
    verdicts: u32,
    /// Attempts closed unanswered, or connections refused.
    closed: u32,
}

/// Fifty connections guessing alice's password from `sources` (cycled) for `period`, each
/// guessing again the moment it has an answer and reconnecting 100 ms after it is closed.
async fn guess_in_parallel(lab: &Arc<Lab>, sources: &[String], period: Duration) -> Tally {
    let deadline = Instant::now() + period;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let lab = Arc::clone(lab);
            let ip = sources[i % sources.len()].clone();
            tokio::spawn(async move {
                let mut t = Tally::default();
                let mut n = 0;
                while Instant::now() < deadline {
                    let (mut c, greeting) = lab.pop3(&ip).await;
                    if greeting.starts_with("+OK") {
                        while Instant::now() < deadline {
                            n += 1;
                            if !c.cmd("USER alice").await.starts_with("+OK") {
                                break;
                            }
                            let reply = c.cmd(&format!("PASS guess-{i}-{n}")).await;
                            if reply.starts_with("-ERR [AUTH]") || reply.starts_with("+OK") {
                                t.verdicts += 1;
                                continue;
                            }
                            assert!(
                                reply.starts_with("-ERR [SYS/TEMP] Too many failed logins")
                                    || reply.contains("has not logged in")
                                    || reply.is_empty(),
                                "{reply}"
                            );
                            break;
                        }
                    }
                    t.closed += 1;
                    sleep(secs(0.1)).await;
                }
                t
            })
        })
        .collect();
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await.unwrap();
        all.verdicts += t.verdicts;
        all.closed += t.closed;
    }
    all
}

/// However many connections carry the guesses from one IPv4 address or one IPv6 /64, they get
/// no more verdicts than the schedule allows: with the defaults, a few while the delay grows,
/// then one per 15 s. docs/security.md quotes these figures.
#[tokio::test(start_paused = true)]
async fn fifty_connections_do_not_multiply_the_guessing_rate() {
    let (lab, _log) = start(|_| {}).await;
    let lab = Arc::new(lab);
    let minute = secs(60.0);
    // Verdicts the schedule allows in a minute: the growing delays, then one per cap; and
    // the answers to guesses still queued when the minute ends.
    let allowed = |period: Duration| {
        let mut at = Duration::ZERO;
        let mut n = 0;
        for delay in schedule(&lab.config, 1000) {
            at += delay;
            if at > period + lab.config.auth.penalty_cap * 4 {
                break;
            }
            n += 1;
        }
        n
    };
    let v4 = guess_in_parallel(&lab, &["192.0.2.9".to_owned()], minute).await;
    eprintln!("one IPv4 address, 50 connections, one minute: {v4:?}");
    assert!(v4.verdicts <= allowed(minute), "{v4:?}");
    assert!(v4.closed > 0, "{v4:?}");
    // The owner still logs in from another address at once.
    let (mut c, took) = lab
        .logged_in("198.51.100.7", "alice", "right-password")
        .await;
    assert_eq!(took, Duration::ZERO);
    c.cmd("QUIT").await;

    // Fifty hosts of one /64, against bob: one subscriber, one schedule.
    let hosts: Vec<String> = (1..=50).map(|i| format!("2001:db8:64::{i:x}")).collect();
    let (lab6, _log6) = start(|_| {}).await;
    let lab6 = Arc::new(lab6);
    let v6 = guess_in_parallel(&lab6, &hosts, minute).await;
    eprintln!("one IPv6 /64, 50 connections from 50 addresses, one minute: {v6:?}");
    assert!(v6.verdicts <= allowed(minute), "{v6:?}");
}

/// Connections are counted per /64: sixty idle ones from sixty addresses of one /64 hold at
/// most the per-address limit, the oldest giving way to the newest.
#[tokio::test(start_paused = true)]
async fn an_ipv6_slash_64_is_one_address_for_the_connection_limit() {
    let (lab, _log) = start(|_| {}).await;
    let per_ip = lab.config.limits.max_connections_per_ip;
    let mut idle = Vec::new();
    for i in 0..per_ip + 10 {
        let (c, greeting) = lab.pop3(&format!("2001:db8:64::{:x}", 100 + i)).await;
        assert!(greeting.starts_with("+OK"), "{greeting}");
        idle.push(c);
    }
    let mut gave_way = 0;
    for c in &mut idle {
        gave_way += usize::from(c.cmd("NOOP").await.contains("has not logged in"));
    }
    assert_eq!(gave_way, 10);
}

/// A connection waiting out a penalty is one that has not logged in: at the connection limit
/// it gives way to a newcomer like any other.
#[tokio::test(start_paused = true)]
async fn connections_waiting_out_a_penalty_make_room_for_real_logins() {
    let (lab, _log) = start(|c| c.limits.max_connections = 10).await;
    let lab = Arc::new(lab);
    let guessers: Vec<_> = (0..10)
        .map(|i| {
            let lab = Arc::clone(&lab);
            tokio::spawn(async move {
                let (mut c, _) = lab.pop3(&format!("192.0.2.{}", i + 1)).await;
                c.cmd(&format!("USER nobody{i}")).await;
                c.cmd(&format!("PASS waiting-{i}")).await
            })
        })
        .collect();
    // Every guess is in, waiting out its 2 s.
    sleep(secs(0.5)).await;
    for _ in 0..5 {
        let (mut c, greeting) = lab.pop3("198.51.100.7").await;
        assert!(greeting.starts_with("+OK"), "{greeting}");
        let t = Instant::now();
        assert!(
            c.login("bob", "bobs-password")
                .await
                .starts_with("+OK Logged in")
        );
        assert_eq!(t.elapsed(), Duration::ZERO);
        c.cmd("QUIT").await;
    }
    let mut evicted = 0;
    for g in guessers {
        evicted += usize::from(g.await.unwrap().contains("has not logged in"));
    }
    assert!(evicted >= 1);
}

#[tokio::test(start_paused = true)]
async fn idle_connections_are_closed_at_their_timeout_without_a_response() {
    let (lab, _log) = start(|_| {}).await;
    let (mut c, _) = lab.pop3("192.0.2.1").await;
    assert_eq!(
        c.closed_after().await,
        lab.config.timeouts.idle_before_login
    );
    // After login the RFC 1939 autologout timer (at least ten minutes), restarted by each
    // command.
    let (mut c, _) = lab.logged_in("192.0.2.1", "alice", "right-password").await;
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    sleep(secs(300.0)).await;
    assert!(c.cmd("NOOP").await.starts_with("+OK"));
    let idle = lab.config.timeouts.idle_after_login;
    assert!(idle >= secs(600.0));
    assert_eq!(c.closed_after().await, idle);
    // Closed without QUIT: the deletion was not applied (RFC 1939 section 3).
    let (mut c, _) = lab.pop3("192.0.2.1").await;
    assert!(
        c.login("alice", "right-password")
            .await
            .contains("1 message")
    );
    assert_eq!(lab.logs.count("end=\"timeout\""), 2);
}

/// Activity does not extend the login deadline: a client trickling a byte a second (so the
/// idle timer never fires) is closed when `timeouts.login` has passed since it connected.
#[tokio::test(start_paused = true)]
async fn the_login_deadline_closes_a_trickling_connection() {
    let (lab, _log) = start(|_| {}).await;
    let peer = SocketAddr::new("192.0.2.1".parse().unwrap(), 40_000);
    let (mut from_server, mut to_server) =
        tokio::io::split(lab.connector.connect(peer, Kind::Pop3));
    let start = Instant::now();
    let closed = tokio::spawn(async move {
        let mut everything = Vec::new();
        let _ = from_server.read_to_end(&mut everything).await;
        start.elapsed()
    });
    let pattern = b"CAPA\r\n";
    for i in 0.. {
        if closed.is_finished() {
            break;
        }
        let _ = to_server
            .write_all(&pattern[i % pattern.len()..][..1])
            .await;
        sleep(secs(1.0)).await;
    }
    assert_eq!(closed.await.unwrap(), lab.config.timeouts.login);
    assert_eq!(lab.logs.count("end=\"timeout\""), 1);
}

#[tokio::test(start_paused = true)]
async fn tls_handshakes_that_never_finish_time_out() {
    let (lab, _log) = start(|c| c.tls.enabled = true).await;
    let (mut silent, _) = lab.connect("192.0.2.1", Kind::Pop3s).await;
    assert_eq!(
        silent.closed_after().await,
        lab.config.timeouts.tls_handshake
    );
    assert_eq!(lab.logs.count("TLS handshake timed out"), 1);
    // STLS, then nothing.
    let (mut c, _) = lab.pop3("192.0.2.1").await;
    assert_eq!(c.cmd("STLS").await, "+OK Begin TLS negotiation");
    assert_eq!(c.closed_after().await, lab.config.timeouts.tls_handshake);
}

#[tokio::test(start_paused = true)]
async fn login_delay_is_enforced_for_exactly_its_length() {
    let (lab, _log) = start(|c| c.pop3.login_delay = 300).await;
    let (mut c, _) = lab.logged_in("192.0.2.1", "alice", "right-password").await;
    c.cmd("QUIT").await;
    let refused = "-ERR [LOGIN-DELAY] Logged in too recently; wait before logging in again";
    sleep(secs(299.0)).await;
    let (mut c, _) = lab.pop3("192.0.2.1").await;
    assert_eq!(c.login("alice", "right-password").await, refused);
    sleep(secs(1.0)).await;
    lab.logged_in("192.0.2.1", "alice", "right-password").await;
}

/// A flood of refusals is logged once per ten seconds, with the count of those not logged.
#[tokio::test(start_paused = true)]
async fn refusals_are_logged_once_per_window_with_a_count() {
    let (lab, _log) = start(|c| c.limits.max_connections_per_ip = 2).await;
    let mut sessions = Vec::new();
    for (user, password) in [("alice", "right-password"), ("bob", "bobs-password")] {
        let (mut c, _) = lab.pop3("192.0.2.2").await;
        assert!(c.login(user, password).await.starts_with("+OK"));
        sessions.push(c);
    }
    for _ in 0..200 {
        let (_, refused) = lab.pop3("192.0.2.2").await;
        assert_eq!(
            refused,
            "-ERR [SYS/TEMP] Too many connections from your address; try again shortly"
        );
    }
    assert_eq!(lab.logs.count("refused a connection"), 1);
    sleep(secs(10.0)).await;
    let (_, refused) = lab.pop3("192.0.2.2").await;
    assert!(refused.starts_with("-ERR [SYS/TEMP]"));
    assert_eq!(lab.logs.count("refused a connection"), 2);
    assert_eq!(lab.logs.count("refused 199 further connections"), 1);
    for c in &mut sessions {
        assert!(c.cmd("STAT").await.starts_with("+OK"));
    }
}
