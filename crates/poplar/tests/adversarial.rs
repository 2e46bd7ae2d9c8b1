//! The adversarial suite: hostile input and resource abuse against the real `poplar` binary on
//! loopback. Every case checks that the server stays up and answers correctly afterwards, that
//! its file descriptors return to the baseline and its memory stays near it, and that the
//! seeded corpus is byte-identical on retrieval at the end.
//!
//! Figures (latency under attack, RSS and descriptors while connections are held) are printed;
//! run with `--nocapture` to see them. docs/security.md says how to run the suite.

#![allow(clippy::unwrap_used, clippy::print_stderr, missing_docs)]

mod common;

use base64::Engine as _;
use common::{Client, Server, ServerBuilder, canonical, corpus, eventually, tcp_from};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What the server process holds, read from /proc.
#[derive(Debug, Clone, Copy)]
struct Usage {
    fds: usize,
    rss_kib: u64,
}

fn usage(pid: u32) -> Usage {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    Usage { fds, rss_kib }
}

/// Memory the server may keep after an attack (allocator caches, grown buffers of idle worker
/// threads). A leak of per-connection state across the hundreds or thousands of connections
/// these tests make would exceed it many times over.
const RSS_SLACK_KIB: u64 = 48 * 1024;

/// A server with alice's maildrop seeded with the corpus and bob's with one small message.
struct Scene {
    server: Server,
    corpus: Vec<(&'static str, Vec<u8>)>,
    baseline: Usage,
}

impl Scene {
    fn start(configure: impl FnOnce(&mut ServerBuilder)) -> Scene {
        let mut b = ServerBuilder::new();
        configure(&mut b);
        let server = b.start();
        server.add_user("alice", "wonderland");
        server.add_user("bob", "builder");
        let corpus = corpus();
        for (_, m) in &corpus {
            assert!(server.deliver(&["alice"], m).success());
        }
        assert!(
            server
                .deliver(&["bob"], b"Subject: bob's\r\n\r\nhello bob\r\n")
                .success()
        );
        let scene = Scene {
            server,
            corpus,
            baseline: Usage { fds: 0, rss_kib: 0 },
        };
        // Warm up: the first sessions create the index and lock files and start worker threads.
        scene.normal_session();
        scene.session_as("bob", "builder");
        std::thread::sleep(Duration::from_millis(300));
        let baseline = usage(scene.server.pid());
        Scene { baseline, ..scene }
    }

    /// Logs in as alice, lists, retrieves the first message and quits; returns how long it took.
    fn normal_session(&self) -> Duration {
        let start = Instant::now();
        let (mut c, greeting) = Client::connect(self.server.pop3);
        assert!(greeting.starts_with("+OK"), "{greeting}");
        let r = c.login("alice", "wonderland");
        assert!(r.starts_with("+OK Logged in"), "{r}");
        assert!(c.cmd("LIST").starts_with("+OK"));
        c.body();
        assert!(c.cmd("RETR 1").starts_with("+OK"));
        assert_eq!(c.body(), canonical(&self.corpus[0].1));
        assert!(c.cmd("QUIT").starts_with("+OK"));
        assert!(c.closed_within(Duration::from_secs(5)));
        start.elapsed()
    }

    fn session_as(&self, user: &str, password: &str) {
        let (mut c, _) = Client::connect(self.server.pop3);
        let r = c.login(user, password);
        assert!(r.starts_with("+OK Logged in"), "{user}: {r}");
        assert!(c.cmd("QUIT").starts_with("+OK"));
        assert!(c.closed_within(Duration::from_secs(5)));
    }

    fn usage(&self) -> Usage {
        usage(self.server.pid())
    }

    /// The end of every case: the server is alive, its descriptors are back to the baseline,
    /// its memory is near it, and every corpus message is retrieved byte for byte.
    fn finish(self, case: &str) {
        self.finish_with_slack(case, RSS_SLACK_KIB);
    }

    /// [`Scene::finish`] for a case whose attack grows the allocator's caches beyond
    /// [`RSS_SLACK_KIB`] (the case itself checks that repeating the attack does not grow them).
    fn finish_with_slack(mut self, case: &str, slack_kib: u64) {
        assert!(self.server.try_wait().is_none(), "{case}: the server died");
        let baseline = self.baseline;
        let settled = settled(&self);
        eprintln!(
            "{case}: baseline {} fds, {} KiB RSS; after {} fds, {} KiB RSS",
            baseline.fds, baseline.rss_kib, settled.fds, settled.rss_kib
        );
        assert!(
            settled.rss_kib <= baseline.rss_kib + slack_kib,
            "{case}: RSS grew from {} KiB to {} KiB",
            baseline.rss_kib,
            settled.rss_kib
        );
        let (mut c, _) = Client::connect(self.server.pop3);
        let r = c.login("alice", "wonderland");
        assert_eq!(
            r,
            format!(
                "+OK Logged in, maildrop has {} messages ({} octets)",
                self.corpus.len(),
                self.corpus
                    .iter()
                    .map(|(_, m)| canonical(m).len())
                    .sum::<usize>()
            ),
            "{case}"
        );
        for (i, (name, m)) in self.corpus.iter().enumerate() {
            assert!(c.cmd(&format!("RETR {}", i + 1)).starts_with("+OK"));
            assert!(c.body() == canonical(m), "{case}: {name} changed");
        }
        assert!(c.cmd("QUIT").starts_with("+OK"));
        let bob = self.bob_listing();
        assert_eq!(bob.len(), 1, "{case}: bob's maildrop changed");
    }

    fn bob_listing(&self) -> Vec<String> {
        let (mut c, _) = Client::connect(self.server.pop3);
        eventually(Duration::from_secs(10), "bob's maildrop unlocked", || {
            let r = c.login("bob", "builder");
            (!r.contains("[IN-USE]")).then_some(())
        });
        assert!(c.cmd("UIDL").starts_with("+OK"));
        let body = String::from_utf8(c.body()).unwrap();
        assert!(c.cmd("QUIT").starts_with("+OK"));
        body.lines().map(str::to_owned).collect()
    }
}

/// Sends `line` (CRLF added) and checks the one-line reply.
fn expect(c: &mut Client, line: &[u8], reply: &str) {
    let mut bytes = line.to_vec();
    bytes.extend_from_slice(b"\r\n");
    c.send(&bytes);
    let got = c.line();
    assert_eq!(got, reply, "reply to {:?}", String::from_utf8_lossy(line));
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[test]
fn malformed_and_out_of_place_commands_get_clear_errors() {
    let scene = Scene::start(|b| {
        b.set("limits.max_bad_commands", 10_000);
        b.set("auth.apop", true);
    });
    let addr = scene.server.pop3;

    // A 1 MiB line without CRLF is refused as soon as it is too long, the rest of it is
    // discarded, and the next line is read normally.
    let (mut c, _) = Client::connect(addr);
    c.send(&vec![b'A'; 1 << 20]);
    assert_eq!(c.line(), "-ERR Line too long");
    c.send(&vec![b'B'; 1 << 20]);
    c.send(b"\r\nCAPA\r\n");
    assert_eq!(c.line(), "+OK Capability list follows");
    c.body();

    // Over RFC 2449's 255 octets.
    let mut long = b"USER ".to_vec();
    long.extend(std::iter::repeat_n(b'a', 295));
    expect(&mut c, &long, "-ERR Line too long");

    // NUL refuses the whole command; nothing before the NUL is acted on.
    expect(
        &mut c,
        b"USER alice\0bob",
        "-ERR Command contains a NUL octet",
    );
    expect(&mut c, b"PASS wonderland", "-ERR Send USER first");
    expect(&mut c, b"USER alice", "+OK Send your password");
    expect(
        &mut c,
        b"PASS wonderland\0",
        "-ERR Command contains a NUL octet",
    );
    expect(&mut c, b"USER \xff\xfe", "-ERR Invalid name");
    expect(&mut c, b"USER", "-ERR Missing argument");
    expect(&mut c, b"USER ", "-ERR Missing argument");
    expect(&mut c, b"", "-ERR Empty command");
    expect(&mut c, b"\x16\x03\x01\x02\x10\x01", "-ERR Unknown command");
    expect(&mut c, b"LAST", "-ERR Unknown command");
    expect(&mut c, b"GET / HTTP/1.0", "-ERR Unknown command");

    // Bare LF ends a line too (real clients and scripts send it).
    c.send(b"NOOP\n");
    assert_eq!(c.line(), "-ERR NOOP is not valid before login");

    // Every transaction command before login, whatever its arguments.
    for cmd in [
        "STAT", "LIST", "LIST 1", "LIST x", "RETR 1", "RETR", "DELE 1", "NOOP", "RSET", "TOP 1 1",
        "TOP", "UIDL", "UIDL 1",
    ] {
        let keyword = cmd.split(' ').next().unwrap();
        expect(
            &mut c,
            cmd.as_bytes(),
            &format!("-ERR {keyword} is not valid before login"),
        );
    }

    // SASL abuse.
    expect(
        &mut c,
        b"AUTH PLAIN !!!!",
        "-ERR Invalid base64 in the initial response",
    );
    expect(&mut c, b"AUTH PLAIN", "+ ");
    expect(&mut c, b"*", "-ERR Authentication cancelled");
    expect(&mut c, b"AUTH PLAIN", "+ ");
    expect(&mut c, b"%%%%", "-ERR Invalid base64 in the SASL response");
    expect(
        &mut c,
        b"AUTH NOSUCH",
        "-ERR Unsupported authentication mechanism",
    );
    expect(&mut c, b"AUTH PL@IN", "-ERR Invalid SASL mechanism name");
    let mut huge = b"AUTH PLAIN ".to_vec();
    huge.extend(b64(&vec![b'x'; 75 * 1024]).bytes());
    assert!(huge.len() > 100 * 1024);
    expect(&mut c, &huge, "-ERR Line too long");
    // An authorization identity naming someone else, with alice's own password.
    let other = b64(b"bob\0alice\0wonderland");
    expect(
        &mut c,
        format!("AUTH PLAIN {other}").as_bytes(),
        "-ERR [AUTH] Authentication failed",
    );
    expect(
        &mut c,
        b"APOP alice 0123456789abcdef0123456789abcdef",
        "-ERR [AUTH] Authentication failed",
    );
    expect(&mut c, b"APOP alice xyz", "-ERR Invalid APOP digest");
    expect(&mut c, b"APOP alice", "-ERR Missing argument");
    drop(c);

    // After login: numeric edges, wrong-state commands, deletions.
    let (mut c, _) = Client::connect(addr);
    assert!(c.login("alice", "wonderland").starts_with("+OK Logged in"));
    let n = scene.corpus.len();
    for (cmd, reply) in [
        ("LIST 0", "-ERR No such message".to_owned()),
        ("LIST -1", "-ERR Invalid number".to_owned()),
        ("LIST +1", "-ERR Invalid number".to_owned()),
        ("LIST 0x1", "-ERR Invalid number".to_owned()),
        ("LIST 4294967296", "-ERR No such message".to_owned()),
        (
            "LIST 99999999999999999999",
            "-ERR No such message".to_owned(),
        ),
        (
            &format!("LIST {}", n + 1),
            format!("-ERR No such message, only {n} messages in maildrop"),
        ),
        ("LIST 1 2", "-ERR Too many arguments".to_owned()),
        ("RETR", "-ERR Missing argument".to_owned()),
        ("RETR 1 1", "-ERR Too many arguments".to_owned()),
        ("TOP 1", "-ERR Missing argument".to_owned()),
        ("TOP 1 -1", "-ERR Invalid number".to_owned()),
        ("TOP 0 1", "-ERR No such message".to_owned()),
        (
            "DELE 4294967295",
            format!("-ERR No such message, only {n} messages in maildrop"),
        ),
        (
            "UIDL 99999999999999999999",
            "-ERR No such message".to_owned(),
        ),
        ("STAT 1", "-ERR Too many arguments".to_owned()),
        ("USER bob", "-ERR USER is not valid after login".to_owned()),
        (
            "PASS builder",
            "-ERR PASS is not valid after login".to_owned(),
        ),
        (
            "APOP bob x",
            "-ERR APOP is not valid after login".to_owned(),
        ),
        (
            "AUTH PLAIN",
            "-ERR AUTH is not valid after login".to_owned(),
        ),
        ("AUTH", "-ERR AUTH is not valid after login".to_owned()),
        ("STLS", "-ERR STLS is not valid after login".to_owned()),
        ("UTF8", "-ERR UTF8 is not valid after login".to_owned()),
    ] {
        expect(&mut c, cmd.as_bytes(), &reply);
    }
    // A huge TOP count is the whole message; 0 is the header only.
    let first = canonical(&scene.corpus[0].1);
    for count in ["99999999999999999999", "4294967296"] {
        expect(
            &mut c,
            format!("TOP 1 {count}").as_bytes(),
            "+OK Top of message follows",
        );
        assert_eq!(c.body(), first);
    }
    expect(&mut c, b"DELE 1", "+OK Message 1 deleted");
    expect(&mut c, b"DELE 1", "-ERR Message 1 already deleted");
    expect(&mut c, b"RETR 1", "-ERR Message 1 is deleted");
    expect(&mut c, b"TOP 1 0", "-ERR Message 1 is deleted");
    expect(&mut c, b"LIST 1", "-ERR Message 1 is deleted");
    expect(&mut c, b"UIDL 1", "-ERR Message 1 is deleted");
    c.send(b"RSET\r\n");
    assert!(c.line().starts_with("+OK"));
    // 10 000 commands in one write, answered in order.
    let mut burst = Vec::new();
    for i in 0..10_000 {
        burst.extend_from_slice(if i % 2 == 0 { b"NOOP\r\n" } else { b"STAT\r\n" });
    }
    c.send(&burst);
    let stat = format!(
        "+OK {n} {}",
        scene
            .corpus
            .iter()
            .map(|(_, m)| canonical(m).len())
            .sum::<usize>()
    );
    for i in 0..10_000 {
        let line = c.line();
        if i % 2 == 0 {
            assert_eq!(line, "+OK", "reply {i}");
        } else {
            assert_eq!(line, stat, "reply {i}");
        }
    }
    // Leaving without QUIT deletes nothing.
    c.send(b"DELE 2\r\n");
    assert!(c.line().starts_with("+OK"));
    drop(c);
    scene.finish("malformed and out-of-place commands");
}

/// Every file under `dir`, with its length, so a test can tell what a session wrote.
fn files_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            }
            out.push((entry.path(), if meta.is_dir() { 0 } else { meta.len() }));
        }
    }
    out.sort();
    out
}

#[test]
fn hostile_user_names_reach_no_other_maildrop_and_no_file() {
    let scene = Scene::start(|b| {
        b.set("limits.max_bad_commands", 10_000);
        // Hundreds of failures: keep the (tested elsewhere) penalties short.
        b.set("auth.failure_delay", "1ms");
        b.set("auth.penalty_cap", "5ms");
    });
    let root = scene.server.dir().to_path_buf();
    let before = files_under(&root);
    let names: Vec<Vec<u8>> = [
        "../bob",
        "bob/../alice",
        "alice/../bob",
        "/etc/passwd",
        "../../../../etc/passwd",
        "alice%00",
        "alice%2f..%2fbob",
        "..",
        ".",
        "alice/",
        "bob\\..\\alice",
        "alice:bob",
        "*",
        "alice*",
        "~bob",
        "alice@",
        "bob@..",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .chain([
        b"alice\x01".to_vec(),
        b"alice\x7f".to_vec(),
        b"alice\x1b[2J".to_vec(),
        b"al\xffice".to_vec(),
        vec![b'a'; 240],
    ])
    .collect();
    for name in &names {
        for password in ["wonderland", "builder"] {
            let (mut c, _) = Client::connect(scene.server.pop3);
            let mut user = b"USER ".to_vec();
            user.extend_from_slice(name);
            user.extend_from_slice(b"\r\n");
            c.send(&user);
            let reply = c.line();
            if reply.starts_with("+OK") {
                let r = c.cmd(&format!("PASS {password}"));
                assert_eq!(
                    r,
                    "-ERR [AUTH] Authentication failed",
                    "{:?}",
                    String::from_utf8_lossy(name)
                );
            } else {
                assert_eq!(reply, "-ERR Invalid name");
            }
            // The same names through SASL PLAIN, as authentication and authorization identity.
            let mut creds = name.clone();
            creds.push(0);
            creds.extend_from_slice(name);
            creds.push(0);
            creds.extend_from_slice(password.as_bytes());
            let r = c.cmd(&format!("AUTH PLAIN {}", b64(&creds)));
            assert!(r.starts_with("-ERR"), "{r}");
            let mut creds = name.clone();
            creds.extend_from_slice(b"\0alice\0wonderland");
            let r = c.cmd(&format!("AUTH PLAIN {}", b64(&creds)));
            assert!(r.starts_with("-ERR"), "{r}");
        }
    }
    // A name the parser accepts as the authorization identity of alice's own login must not
    // open another maildrop either.
    let (mut c, _) = Client::connect(scene.server.pop3);
    let r = c.cmd(&format!("AUTH PLAIN {}", b64(b"../bob\0alice\0wonderland")));
    assert_eq!(r, "-ERR [AUTH] Authentication failed");
    drop(c);
    let after = files_under(&root);
    assert_eq!(before, after, "hostile names created or changed files");
    // Hundreds of failed logins later, no password, plain or base64, is in the log.
    let logs = scene.server.logs().join("\n");
    assert!(logs.contains("authentication failed"));
    for secret in ["wonderland", "builder", &b64(b"\0alice\0wonderland")[4..]] {
        assert!(!logs.contains(secret), "the log contains {secret:?}");
    }
    scene.finish("hostile user names");
}

#[test]
fn stls_cannot_be_abused() {
    let scene = Scene::start(|b| {
        b.set("timeouts.tls_handshake", "2s");
    });
    let cert = scene.server.cert();
    // Plaintext pipelined after STLS is discarded, never run inside TLS (CVE-2011-0411).
    let (mut c, _) = Client::connect(scene.server.pop3);
    c.send(b"STLS\r\nUSER alice\r\nPASS wonderland\r\nDELE 1\r\nQUIT\r\n");
    assert_eq!(c.line(), "+OK Begin TLS negotiation");
    let mut c = c.upgrade_after_stls(&cert);
    expect(&mut c, b"PASS wonderland", "-ERR Send USER first");
    // STLS inside TLS, on the upgraded connection and on implicit TLS.
    expect(&mut c, b"STLS", "-ERR TLS is already active");
    let (mut t, _) = Client::connect_tls(scene.server.pop3s, &cert);
    expect(&mut t, b"STLS", "-ERR TLS is already active");
    // After login, STLS is refused and the session goes on in plaintext.
    let (mut p, _) = Client::connect(scene.server.pop3);
    assert!(p.login("alice", "wonderland").starts_with("+OK"));
    expect(&mut p, b"STLS", "-ERR STLS is not valid after login");
    assert!(p.cmd("STAT").starts_with("+OK"));
    // A TLS ClientHello sent instead of STLS is garbage to a plaintext listener.
    let (mut g, _) = Client::connect(scene.server.pop3);
    g.send(b"\x16\x03\x01\x01\xa5\x01\x01\x02\xa1\x03\x03\r\n");
    assert_eq!(g.line(), "-ERR Unknown command");
    // STLS, then plaintext instead of a handshake: the connection is dropped (at the latest
    // when the handshake timeout expires).
    let (mut h, _) = Client::connect(scene.server.pop3);
    h.send(b"STLS\r\n");
    assert_eq!(h.line(), "+OK Begin TLS negotiation");
    h.send(b"USER alice\r\n");
    // At most a TLS alert comes back, then the end of the connection.
    let mut raw = h.into_tcp();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    raw.read_to_end(&mut rest).unwrap();
    assert!(rest.len() < 16 && rest.first() == Some(&0x15), "{rest:?}");
    drop((c, t, p, g));
    scene.finish("STLS abuse");
}

/// How many descriptors this process may open, after raising the soft limit to the hard one
/// (the server does the same for itself).
fn fd_limit() -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let limit = if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    usize::try_from(limit).unwrap_or(usize::MAX)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[test]
fn slowloris_does_not_starve_real_clients_and_is_cut_off_at_the_login_deadline() {
    let scene = Scene::start(|b| {
        b.set("timeouts.login", "4s");
        // The tricklers fill the server: real clients get in only by evicting one.
        b.set("limits.max_connections", 300);
    });
    let addr = scene.server.pop3;
    // 300 connections from six addresses, 50 each (the per-address cap), trickling one byte of
    // "CAPA\r\n" at a time so that the idle timer never fires.
    let mut tricklers: Vec<TcpStream> = (2..8)
        .flat_map(|i| hold(&format!("127.0.0.{i}"), addr, 50).0)
        .collect();
    // A 51st connection from a trickling address is served: the connection from that address
    // that waited longest without logging in gives way.
    let (_fifty_first, greeting) = Client::connect_from("127.0.0.2", addr);
    assert!(greeting.starts_with("+OK"), "{greeting}");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickle = {
        let stop = std::sync::Arc::clone(&stop);
        let mut streams: Vec<TcpStream> =
            tricklers.iter().map(|s| s.try_clone().unwrap()).collect();
        std::thread::spawn(move || {
            let pattern = b"CAPA\r\n";
            let mut i = 0;
            let mut sent = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for s in &mut streams {
                    if s.write_all(&pattern[i % pattern.len()..][..1]).is_ok() {
                        sent += 1;
                    }
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            sent
        })
    };
    let mut latencies: Vec<Duration> = (0..30).map(|_| scene.normal_session()).collect();
    let attacked = scene.usage();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let bytes = trickle.join().unwrap();
    latencies.sort();
    eprintln!(
        "slowloris: 300 trickling connections ({bytes} bytes sent); a normal session took p50 {:?}, max {:?}; server {} fds, {} KiB RSS",
        percentile(&latencies, 50),
        latencies.last().unwrap(),
        attacked.fds,
        attacked.rss_kib
    );
    // One trickler made room for the first real client (the others reused its slot); the
    // login deadline closes all the rest, although each kept sending.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut evicted = 0;
    for s in &mut tricklers {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("a trickler outlived the deadline: {e}"),
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    assert!(
                        Instant::now() < deadline,
                        "a trickler outlived the deadline"
                    );
                }
            }
        }
        evicted += usize::from(String::from_utf8_lossy(&got).contains("has not logged in"));
    }
    assert!(evicted >= 1, "no trickler made room for a real client");
    drop(tricklers);
    scene.server.wait_for_log("end=\"timeout\"");
    scene.finish("slowloris");
}

/// Opens `n` connections from `local` and reads each greeting.
///
/// Connects in batches well under the listen backlog: a burst of thousands overflows the
/// kernel's accept queue, which then drops handshakes for the client to retry a second or more
/// later, and the test would measure TCP's retransmission timer rather than the server.
fn hold(local: &str, addr: std::net::SocketAddr, n: usize) -> (Vec<TcpStream>, Duration) {
    let start = Instant::now();
    let mut held: Vec<TcpStream> = Vec::with_capacity(n);
    while held.len() < n {
        let batch = (n - held.len()).min(256);
        let from = held.len();
        held.extend((0..batch).map(|_| tcp_from(local, addr)));
        for s in &mut held[from..] {
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut greeting = [0u8; 64];
            let got = s.read(&mut greeting).unwrap();
            assert!(greeting[..got].starts_with(b"+OK"), "connection refused");
        }
    }
    (held, start.elapsed())
}

/// Waits until the server holds no more descriptors than `baseline`, and says what it holds.
fn settled(scene: &Scene) -> Usage {
    let baseline = scene.baseline.fds;
    eventually(
        Duration::from_secs(20),
        "descriptors back to baseline",
        || {
            let now = scene.usage();
            (now.fds <= baseline).then_some(now)
        },
    )
}

/// Where no connection can give way (every one from the address has logged in), a newcomer is
/// refused clearly, and a burst of refusals is logged once, not once each.
#[test]
fn refusals_are_answered_and_logged_once() {
    let scene = Scene::start(|b| {
        b.set("limits.max_connections_per_ip", 2);
    });
    let addr = scene.server.pop3;
    let mut sessions = Vec::new();
    for (user, password) in [("alice", "wonderland"), ("bob", "builder")] {
        let (mut c, _) = Client::connect_from("127.0.0.2", addr);
        assert!(c.login(user, password).starts_with("+OK"));
        sessions.push(c);
    }
    for _ in 0..200 {
        let (_, refused) = Client::connect_from("127.0.0.2", addr);
        assert_eq!(
            refused,
            "-ERR [SYS/TEMP] Too many connections from your address; try again shortly"
        );
    }
    let logged = scene
        .server
        .logs()
        .iter()
        .filter(|l| l.contains("refused a connection"))
        .count();
    assert!(logged <= 2, "{logged} refusals logged one by one");
    // The logged-in sessions were never touched.
    for c in &mut sessions {
        assert!(c.cmd("STAT").starts_with("+OK"));
        assert!(c.cmd("QUIT").starts_with("+OK"));
    }
    drop(sessions);
    scene.finish("refusals");
}

/// Many real users share one address (NAT, carrier-grade NAT, a proxy). Connections from it
/// that never log in, trickling bytes or idle, each re-opened a quarter to three quarters of a
/// second after it is closed (as slowloris-style tools re-open lost sockets), must not lock out
/// a real client behind the same address: at the per-address limit the connection that waited
/// longest without logging in gives way, and a client that sends its commands promptly is
/// never the one that has waited longest.
#[test]
fn one_address_cannot_lock_out_the_clients_behind_it() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let scene = Scene::start(|_| {});
    let addr = scene.server.pop3;
    // Unloaded, for comparison.
    let mut quiet: Vec<Duration> = (0..10).map(|_| scene.normal_session()).collect();
    quiet.sort();
    let stop = Arc::new(AtomicBool::new(false));
    let (opened, evicted) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let attackers: Vec<_> = (0..600u64)
        .map(|i| {
            let (stop, opened, evicted) = (stop.clone(), opened.clone(), evicted.clone());
            let trickle = i < 100;
            std::thread::spawn(move || {
                let mut rng = common::Rng(i + 1);
                let mut first = true;
                while !stop.load(Ordering::Relaxed) {
                    if !first {
                        let pause = 250 + rng.next() % 500;
                        std::thread::sleep(Duration::from_millis(pause));
                    }
                    first = false;
                    let Ok(mut s) = TcpStream::connect(addr) else {
                        continue;
                    };
                    opened.fetch_add(1, Ordering::Relaxed);
                    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                    let pattern = b"CAPA\r\n";
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    // Held until the server closes it: idle, or one byte of CAPA every 50 ms.
                    for i in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match s.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => break,
                        }
                        if trickle && s.write_all(&pattern[i % pattern.len()..][..1]).is_err() {
                            break;
                        }
                    }
                    if String::from_utf8_lossy(&got).contains("has not logged in") {
                        evicted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // Let the storm fill the address's 50 slots and churn.
    std::thread::sleep(Duration::from_secs(2));
    let before = (
        opened.load(Ordering::Relaxed),
        evicted.load(Ordering::Relaxed),
    );
    let mut loaded: Vec<Duration> = (0..50).map(|_| scene.normal_session()).collect();
    let during = (
        opened.load(Ordering::Relaxed) - before.0,
        evicted.load(Ordering::Relaxed) - before.1,
    );
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    loaded.sort();
    eprintln!(
        "shared address: 100 trickling and 500 idle connections from the client's own address \
         ({} opened, {} evicted while 50 normal sessions ran); a normal session took p50 {:?}, \
         max {:?} (unloaded: p50 {:?}, max {:?})",
        during.0,
        during.1,
        percentile(&loaded, 50),
        loaded.last().unwrap(),
        percentile(&quiet, 50),
        quiet.last().unwrap(),
    );
    assert!(during.1 > 50, "the storm did churn: {during:?}");
    // Every session above succeeded (normal_session asserts each step), none waited out a
    // timeout or a retry.
    assert!(
        *loaded.last().unwrap() < Duration::from_secs(5),
        "{loaded:?}"
    );
    scene.finish("shared address");
}

#[test]
fn thousands_of_connections_are_held_or_refused_clearly() {
    let wanted = 5000;
    let n = wanted.min(fd_limit().saturating_sub(200) / 2);
    if n < wanted {
        eprintln!("connections: descriptor limit allows only {n} connections, not {wanted}");
    }
    let scene = Scene::start(|b| {
        // Room for the held connections, a normal client and one straggler: the server frees
        // a slot a moment after the client sees the connection close.
        b.set("limits.max_connections", i64::try_from(n + 2).unwrap());
        b.set("limits.max_connections_per_ip", i64::try_from(n).unwrap());
        // One malloc arena, so that RSS measures what the server holds rather than which
        // threads happened to allocate (glibc keeps up to eight arenas per core).
        b.env("MALLOC_ARENA_MAX", "1");
    });
    let addr = scene.server.pop3;
    let (mut held, opened) = hold("127.0.0.2", addr, n);
    // One more from the same address: the oldest of those held gives way.
    let (newcomer, greeting) = Client::connect_from("127.0.0.2", addr);
    assert!(greeting.starts_with("+OK"), "{greeting}");
    let mut oldest = held.remove(0);
    let mut evicted = String::new();
    oldest.read_to_string(&mut evicted).unwrap();
    assert!(evicted.contains("has not logged in"), "{evicted:?}");
    drop(newcomer);
    let loaded = scene.usage();
    // A normal client from another address still gets the last slot, quickly.
    let mut latencies: Vec<Duration> = (0..10).map(|_| scene.normal_session()).collect();
    latencies.sort();
    // With the last slots taken, a newcomer is still served: the connection that waited
    // longest without logging in (the first one held) is closed to make room.
    let (mut c, _) = eventually(Duration::from_secs(5), "a free slot", || {
        let (c, greeting) = Client::connect(addr);
        greeting.starts_with("+OK").then_some((c, greeting))
    });
    assert!(c.login("bob", "builder").starts_with("+OK"));
    let (d, _) = eventually(Duration::from_secs(5), "a free slot", || {
        let (c, greeting) = Client::connect_from("127.0.0.3", addr);
        greeting.starts_with("+OK").then_some((c, greeting))
    });
    let (_e, greeting) = Client::connect_from("127.0.0.4", addr);
    assert!(greeting.starts_with("+OK"), "{greeting}");
    // That took the last free slot; the next newcomer makes the oldest held give way.
    let (_f, greeting) = Client::connect_from("127.0.0.5", addr);
    assert!(greeting.starts_with("+OK"), "{greeting}");
    let mut oldest = held.remove(0);
    let mut evicted = String::new();
    oldest.read_to_string(&mut evicted).unwrap();
    assert!(
        evicted.starts_with("-ERR [SYS/TEMP] Server is at its connection limit"),
        "{evicted:?}"
    );
    drop((held, c, d, _e, _f));
    // The allocator keeps the flood's memory for reuse, so RSS stays at its high-water mark;
    // later floods must reuse that memory, not add to it. A leak of 1 KiB per connection would
    // add 20 MiB over the next four floods.
    let mut after = vec![settled(&scene).rss_kib];
    for local in ["127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8"] {
        let (held, _) = hold(local, addr, n);
        drop(held);
        after.push(settled(&scene).rss_kib);
    }
    eprintln!(
        "connections: {n} held (opened in {opened:?}); server {} fds, {} KiB RSS ({} KiB per connection); a normal session took p50 {:?}, max {:?}; RSS after each of 5 floods (KiB): {after:?}",
        loaded.fds,
        loaded.rss_kib,
        loaded.rss_kib.saturating_sub(scene.baseline.rss_kib) / n as u64,
        percentile(&latencies, 50),
        latencies.last().unwrap(),
    );
    assert!(
        after[4] <= after[0] + 4 * 1024,
        "repeated floods keep growing RSS: {after:?} KiB"
    );
    // The high-water mark of 5000 connections (9 KiB each) stays with the allocator.
    scene.finish_with_slack("thousands of connections", 64 * 1024);
}

#[test]
fn disconnects_in_the_middle_of_a_large_retr_lose_and_leak_nothing() {
    let scene = Scene::start(|_| {});
    let server = &scene.server;
    server.add_user("carol", "large");
    let big: Vec<u8> = {
        let mut m = b"Subject: 20 MiB\r\n\r\n".to_vec();
        let mut line = 0u64;
        while m.len() < 20 << 20 {
            m.extend_from_slice(format!("line {line:>10} {}\r\n", "x".repeat(60)).as_bytes());
            line += 1;
        }
        m
    };
    assert!(server.deliver(&["carol"], &big).success());
    let listing = |c: &mut Client| -> String {
        assert!(c.cmd("UIDL 1").starts_with("+OK"));
        c.cmd("LIST 1")
    };
    let mut first = None;
    for i in 0..100 {
        let (mut c, _) = Client::connect(server.pop3);
        eventually(Duration::from_secs(10), "carol's maildrop unlocked", || {
            let r = c.login("carol", "large");
            (!r.contains("[IN-USE]")).then_some(())
        });
        let l = listing(&mut c);
        assert_eq!(*first.get_or_insert_with(|| l.clone()), l);
        c.send(
            format!(
                "RETR 1\r\nDELE 1\r\n{}",
                if i % 2 == 0 { "" } else { "QUIT\r\n" }
            )
            .as_bytes(),
        );
        // Read a little, then vanish without reading the rest (or the QUIT reply).
        let mut raw = c.into_tcp();
        let mut buf = vec![0u8; 64 * 1024 * (1 + i % 8)];
        let _ = raw.read(&mut buf);
    }
    let (mut c, _) = Client::connect(server.pop3);
    eventually(Duration::from_secs(10), "carol's maildrop unlocked", || {
        let r = c.login("carol", "large");
        (!r.contains("[IN-USE]")).then_some(())
    });
    assert_eq!(first.unwrap(), listing(&mut c));
    assert!(c.cmd("RETR 1").starts_with("+OK"));
    assert!(c.body() == big, "the large message changed");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    scene.finish("disconnects mid-RETR");
}

#[test]
fn tls_handshakes_that_never_finish_are_dropped() {
    let scene = Scene::start(|b| {
        b.set("timeouts.tls_handshake", "2s");
    });
    let server = &scene.server;
    // From several addresses, to stay under the per-address cap of 50.
    let from = |i: usize| format!("127.0.0.{}", 10 + i / 40);
    let mut stalled = Vec::new();
    for i in 0..150 {
        let mut s = tcp_from(&from(i), server.pop3s);
        match i % 3 {
            // Nothing at all.
            0 => {}
            // Half a TLS record header.
            1 => s.write_all(b"\x16\x03\x01").unwrap(),
            // A record header promising more than is sent.
            _ => s
                .write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
                .unwrap(),
        }
        stalled.push(s);
    }
    for i in 150..190 {
        let (mut c, _) = Client::connect_from(&from(i), server.pop3);
        assert_eq!(c.cmd("STLS"), "+OK Begin TLS negotiation");
        stalled.push(c.into_tcp());
    }
    // Meanwhile real TLS clients are served.
    let start = Instant::now();
    let (mut t, greeting) = Client::connect_tls(server.pop3s, &server.cert());
    assert!(greeting.starts_with("+OK"));
    assert!(t.login("alice", "wonderland").starts_with("+OK Logged in"));
    assert!(t.cmd("QUIT").starts_with("+OK"));
    let took = start.elapsed();
    let during = scene.usage();
    eprintln!(
        "stalled handshakes: 190 held; a TLS session took {took:?}; server {} fds, {} KiB RSS",
        during.fds, during.rss_kib
    );
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "a stalled handshake got data or stayed open");
    }
    drop(stalled);
    scene.finish("stalled TLS handshakes");
}
