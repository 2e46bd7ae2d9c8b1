//! Poplar behind a real HAProxy (Debian's package) speaking the PROXY protocol, v2 and v1, over
//! POP3 and POP3S: clients' own addresses reach the logs and the penalties, real clients work
//! through it, and a header is believed only from `listen.proxy_from`.
//!
//! HAProxy connects to Poplar from 127.0.0.3, the one address in `proxy_from`; clients connect
//! to HAProxy from other loopback addresses, and to Poplar directly to try what an attacker
//! would.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{Client, ServerBuilder, tcp_from};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::haproxy::{Frontend, SOURCE as PROXY_SOURCE};

/// HAProxy in front of `server`: POP3 with a v2 header, POP3S (TLS passed through) with a v2
/// header, POP3 with v1.
struct Haproxy {
    _running: common::haproxy::Haproxy,
    v2: SocketAddr,
    tls: SocketAddr,
    v1: SocketAddr,
}

impl Haproxy {
    fn start(server: &common::Server) -> Self {
        let running = common::haproxy::Haproxy::start(&[
            Frontend {
                nodes: &[server.pop3],
                how: "send-proxy-v2",
            },
            Frontend {
                nodes: &[server.pop3s],
                how: "send-proxy-v2",
            },
            Frontend {
                nodes: &[server.pop3],
                how: "send-proxy",
            },
        ]);
        let [v2, tls, v1] = [running.fronts[0], running.fronts[1], running.fronts[2]];
        Haproxy {
            _running: running,
            v2,
            tls,
            v1,
        }
    }
}

fn server() -> common::Server {
    let mut b = ServerBuilder::new();
    b.set(
        "listen.proxy_from",
        toml::Value::Array(vec![format!("{PROXY_SOURCE}/32").into()]),
    );
    b.set("auth.failure_delay", "1s");
    b.set("auth.penalty_cap", "4s");
    let server = b.start();
    server.add_user("alice", "wonderland");
    assert!(
        server
            .deliver(&["alice"], b"Subject: hi\r\n\r\nthrough the balancer\r\n")
            .success()
    );
    server
}

/// The session summaries the server logged for `peer`.
fn sessions_from(server: &common::Server, peer: &str) -> usize {
    server
        .logs()
        .iter()
        .filter(|l| l.contains("session ended") && l.contains(&format!("peer={peer}:")))
        .count()
}

#[test]
fn clients_behind_haproxy_are_seen_with_their_own_addresses() {
    let server = server();
    let proxy = Haproxy::start(&server);
    // v2, plain POP3, from 127.0.0.5.
    let (mut c, greeting) = Client::connect_from("127.0.0.5", proxy.v2);
    assert!(greeting.starts_with("+OK"), "{greeting}");
    assert!(c.login("alice", "wonderland").starts_with("+OK Logged in"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    // v1 from 127.0.0.6.
    let (mut c, _) = Client::connect_from("127.0.0.6", proxy.v1);
    assert!(c.cmd("CAPA").starts_with("+OK"));
    c.body();
    assert!(c.cmd("QUIT").starts_with("+OK"));
    // v2 in front of TLS (HAProxy passes TLS through): the client's address is 127.0.0.1.
    let (mut t, greeting) = Client::connect_tls(proxy.tls, &server.cert());
    assert!(greeting.starts_with("+OK"), "{greeting}");
    assert!(t.login("alice", "wonderland").starts_with("+OK Logged in"));
    assert!(t.cmd("QUIT").starts_with("+OK"));
    // Real clients through the balancer: curl over POP3 and python's poplib over POP3S.
    let listing = common::curl(&[&format!(
        "pop3://alice:wonderland@127.0.0.1:{}/",
        proxy.v2.port()
    )]);
    assert!(
        String::from_utf8_lossy(&listing).starts_with("1 "),
        "{listing:?}"
    );
    let script = format!(
        "import poplib, ssl\n\
         ctx = ssl.create_default_context(cafile={cert:?})\n\
         ctx.check_hostname = False\n\
         p = poplib.POP3_SSL('127.0.0.1', {port}, context=ctx)\n\
         p.user('alice'); p.pass_('wonderland')\n\
         print(p.stat()[0]); p.quit()\n",
        cert = server.cert().to_str().unwrap(),
        port = proxy.tls.port()
    );
    let printed = common::python(&script);
    assert_eq!(printed.trim(), "1");

    common::eventually(Duration::from_secs(10), "every session logged", || {
        (sessions_from(&server, "127.0.0.5") == 1
            && sessions_from(&server, "127.0.0.6") == 1
            && sessions_from(&server, "127.0.0.1") >= 3)
            .then_some(())
    });
    assert_eq!(
        sessions_from(&server, PROXY_SOURCE),
        0,
        "a session was logged with the balancer's address"
    );
}

/// One failed login, and how long its answer took.
fn fail(addr: SocketAddr, from: &str, user: &str) -> Duration {
    let (mut c, _) = Client::connect_from(from, addr);
    assert!(c.cmd(&format!("USER {user}")).starts_with("+OK"));
    let start = Instant::now();
    assert_eq!(c.cmd("PASS wrong"), "-ERR [AUTH] Authentication failed");
    start.elapsed()
}

/// Penalties follow the client's address, not the balancer's: a guesser behind it slows down,
/// a neighbour behind the same balancer does not.
#[test]
fn penalties_follow_the_address_in_the_header() {
    let server = server();
    let proxy = Haproxy::start(&server);
    // Different unknown names, so that only the address's record can escalate.
    assert!(fail(proxy.v2, "127.0.0.7", "nobody-a") >= Duration::from_secs(1));
    let second = fail(proxy.v2, "127.0.0.7", "nobody-b");
    assert!(second >= Duration::from_secs(2), "{second:?}");
    let neighbour = fail(proxy.v1, "127.0.0.8", "nobody-c");
    assert!(
        neighbour >= Duration::from_secs(1) && neighbour < Duration::from_millis(1900),
        "the neighbour paid for the guesser: {neighbour:?}"
    );
    let logs = server.logs();
    assert!(
        logs.iter()
            .any(|l| l.contains("authentication failed: peer=127.0.0.8"))
    );
}

/// Reads until the server closes the connection; what it sent.
fn until_closed(mut s: std::net::TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn headers_are_believed_only_from_proxy_from_and_required_there() {
    let server = server();
    // From an address outside proxy_from, a header claiming another client is not believed:
    // the connection is closed, no session runs as 203.0.113.9.
    for header in [
        &b"PROXY TCP4 203.0.113.9 127.0.0.1 4000 110\r\n"[..],
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xcb\x00\x71\x09\x7f\x00\x00\x01\x0f\xa0\x00\x6e",
    ] {
        let mut s = tcp_from("127.0.0.9", server.pop3);
        let mut greeting = [0u8; 64];
        let n = s.read(&mut greeting).unwrap();
        assert!(greeting[..n].starts_with(b"+OK"));
        s.write_all(header).unwrap();
        let after = until_closed(s);
        assert!(!after.contains("+OK"), "{after:?}");
    }
    // From the balancer's address, a connection without a header, or with a malformed one,
    // is closed before any greeting.
    for first in [
        &b"CAPA\r\n"[..],
        b"PROXY TCP4 not-an-address 127.0.0.1 1 2\r\n",
        b"PROXY TCP4 192.0.2.1 127.0.0.1 99999 110\r\n",
    ] {
        let mut s = tcp_from(PROXY_SOURCE, server.pop3);
        s.write_all(first).unwrap();
        assert_eq!(until_closed(s), "", "{first:?}");
    }
    // A proper one from there is served as the client it names.
    let mut s = tcp_from(PROXY_SOURCE, server.pop3);
    s.write_all(b"PROXY TCP4 198.51.100.4 127.0.0.1 4321 110\r\n")
        .unwrap();
    let mut greeting = [0u8; 64];
    let n = s.read(&mut greeting).unwrap();
    assert!(greeting[..n].starts_with(b"+OK"));
    s.write_all(b"USER alice\r\nPASS wonderland\r\n").unwrap();
    let after = until_closed_after_quit(s);
    // 198.51.100.4 is not in auth.plaintext_networks: no password in the clear from there.
    assert!(after.contains("-ERR"), "{after:?}");
    let logs = server.wait_for_log("peer=198.51.100.4:4321");
    assert!(logs.contains("session ended"), "{logs}");
    assert!(
        server
            .logs()
            .iter()
            .any(|l| l.contains("not in listen.proxy_from")),
        "the untrusted header was not logged"
    );
    assert!(
        !server.logs().iter().any(|l| l.contains("203.0.113.9")),
        "an untrusted header's address reached the logs"
    );
}

fn until_closed_after_quit(mut s: std::net::TcpStream) -> String {
    s.write_all(b"QUIT\r\n").unwrap();
    until_closed(s)
}
