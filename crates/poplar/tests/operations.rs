//! Running Poplar the way administrators do: a real Prometheus (Debian's package) scraping
//! `/metrics` while sessions happen, `/healthz` following the store, `poplar stats`, systemd
//! socket activation, journald priorities, and the hardening of the shipped unit.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{Client, ServerBuilder, free_port, http_get};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Prometheus server scraping `target` every second, with its data in a temporary directory.
struct Prometheus {
    child: Child,
    api: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: poplar\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={api}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus) must be installed: scripts/test installs it");
        let p = Self {
            child,
            api,
            _dir: dir,
        };
        common::eventually(Duration::from_secs(30), "Prometheus to answer", || {
            TcpStream::connect(api).ok()
        });
        p
    }

    /// Instant query: each series' labels (as `k=v,...`, sorted) and value.
    fn query(&self, expr: &str) -> BTreeMap<String, f64> {
        let mut encoded = String::new();
        for b in expr.bytes() {
            if b.is_ascii_alphanumeric() || b"_-.".contains(&b) {
                encoded.push(b as char);
            } else {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        let (code, body) = http_get(self.api, &format!("/api/v1/query?query={encoded}"));
        assert_eq!(code, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut out = BTreeMap::new();
        for series in json["data"]["result"].as_array().unwrap() {
            let labels = series["metric"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| !["__name__", "job", "instance"].contains(&k.as_str()))
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
                .collect::<Vec<_>>()
                .join(",");
            let value = series["value"][1].as_str().unwrap().parse().unwrap();
            out.insert(labels, value);
        }
        out
    }

    /// Waits until Prometheus has scraped the server after what happened before this call:
    /// the last sessions' totals are counted just after their QUIT is answered, and a scrape
    /// comes every second, so one taken 1.5 s later or more holds them.
    fn wait_for_fresh_scrape(&self) {
        let asked = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        common::eventually(Duration::from_secs(30), "a fresh scrape", || {
            let last = self.query("timestamp(up)").values().next().copied()?;
            (last >= asked + 1.5).then_some(())
        });
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn value(p: &Prometheus, expr: &str) -> f64 {
    p.query(expr).values().sum()
}

/// Every metric the server exports moves as sessions happen, as a real Prometheus sees it.
#[test]
fn prometheus_scrapes_every_metric_as_sessions_happen() {
    // A first server leaves a message retrieved 31 days ago: the next one's purge at start
    // expires it.
    let mut b = ServerBuilder::new();
    b.set("pop3.expire", 30);
    let data = b.data_dir();
    let first = b.start();
    first.add_user("alice", "wonderland");
    first.add_user("bob", "builder");
    first.add_user("carol", "singer");
    assert!(
        first
            .deliver(&["alice"], b"Subject: old\r\n\r\nold\r\n")
            .success()
    );
    {
        let (mut c, _) = Client::connect(first.pop3);
        assert!(c.login("alice", "wonderland").starts_with("+OK"));
        assert!(c.cmd("RETR 1").starts_with("+OK"));
        c.body();
        assert!(c.cmd("QUIT").starts_with("+OK"));
    }
    let record = data.join("mail/_default_/alice/Maildir/poplar-retrieved");
    let text = std::fs::read_to_string(&record).unwrap();
    let (secs, base) = text.trim_end().split_once(' ').unwrap();
    let old = secs.parse::<u64>().unwrap() - 31 * 86_400;
    std::fs::write(&record, format!("{old} {base}\n")).unwrap();
    let (_, _keep) = first.stop();

    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut b = ServerBuilder::new();
    b.set("data_dir", data.to_str().unwrap());
    b.set("pop3.expire", 30);
    b.set("metrics.listen", metrics.to_string());
    b.set(
        "pop3.login_delay_overrides",
        toml::Table::from_iter([("carol".to_owned(), toml::Value::Integer(300))]),
    );
    b.set(
        "quota.overrides",
        toml::from_str::<toml::Table>("bob = { messages = 1 }").unwrap(),
    );
    b.lmtp();
    let server = b.start();
    server.wait_for_log("retention purge done");
    let prometheus = Prometheus::start(metrics);

    // Mail arrives over LMTP: one delivered to alice, twice to bob (the second over quota).
    let lmtp = server.lmtp_addr();
    let (host, port) = lmtp.rsplit_once(':').unwrap();
    common::python(&format!(
        "import smtplib\n\
         c = smtplib.LMTP('{host}', {port})\n\
         for rcpt in ['alice', 'bob', 'alice', 'bob']:\n\
         \x20   try: c.sendmail('s@example.org', [rcpt], b'Subject: hi\\r\\n\\r\\nhello\\r\\n')\n\
         \x20   except smtplib.SMTPException as e: print(e)\n\
         c.quit()\n"
    ));
    // alice: RETR, TOP, DELE, QUIT over STLS; a second session finds the maildrop in use.
    let (c, _) = Client::connect(server.pop3);
    let mut c = c.starttls(&data.join("tls/cert.pem"));
    assert!(c.login("alice", "wonderland").starts_with("+OK"));
    let (mut second, _) = Client::connect(server.pop3);
    assert!(second.login("alice", "wonderland").contains("[IN-USE]"));
    second.cmd("QUIT");
    assert!(c.cmd("RETR 1").starts_with("+OK"));
    c.body();
    assert!(c.cmd("TOP 2 0").starts_with("+OK"));
    c.body();
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("BOGUS").starts_with("-ERR"));
    // A message that vanished from the Maildir under the session (message 2, only read by
    // TOP, so still in new/): a store error.
    for f in std::fs::read_dir(data.join("mail/_default_/alice/Maildir/new")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    assert!(c.cmd("RETR 2").starts_with("-ERR"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    // bob over POP3S; a bad password; an unknown user; carol twice within her LOGIN-DELAY.
    let (mut c, _) = Client::connect_tls(server.pop3s, &data.join("tls/cert.pem"));
    assert!(c.login("bob", "builder").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let (mut c, _) = Client::connect(server.pop3);
    assert!(c.login("bob", "wrong").contains("[AUTH]"));
    assert!(c.login("nobody", "wrong").contains("[AUTH]"));
    c.cmd("QUIT");
    for expected in ["+OK", "[LOGIN-DELAY]"] {
        let (mut c, _) = Client::connect(server.pop3);
        assert!(c.login("carol", "singer").contains(expected));
        c.cmd("QUIT");
    }
    // A TLS handshake that fails: plain text to the POP3S port.
    let mut junk = TcpStream::connect(server.pop3s).unwrap();
    junk.write_all(b"USER alice\r\n\r\n").unwrap();
    let _ = junk.read(&mut [0u8; 64]);
    prometheus.wait_for_fresh_scrape();

    let logins = prometheus.query("poplar_logins_total");
    for (labels, want) in [
        ("mechanism=USER,result=ok", 3.0),
        ("mechanism=USER,result=in_use", 1.0),
        ("mechanism=USER,result=bad_password", 1.0),
        ("mechanism=USER,result=unknown_user", 1.0),
        ("mechanism=USER,result=login_delay", 1.0),
    ] {
        assert_eq!(logins.get(labels), Some(&want), "{labels}: {logins:?}");
    }
    assert_eq!(
        value(&prometheus, "poplar_connections_total{listener=\"pop3\"}"),
        5.0
    );
    assert_eq!(
        value(&prometheus, "poplar_connections_total{listener=\"pop3s\"}"),
        2.0
    );
    assert_eq!(
        value(
            &prometheus,
            "poplar_tls_handshakes_total{listener=\"pop3\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &prometheus,
            "poplar_tls_handshakes_total{listener=\"pop3s\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&prometheus, "poplar_tls_handshake_failures_total"),
        1.0
    );
    assert_eq!(
        value(
            &prometheus,
            "poplar_messages_retrieved_total{command=\"RETR\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &prometheus,
            "poplar_messages_retrieved_total{command=\"TOP\"}"
        ),
        1.0
    );
    assert!(
        value(
            &prometheus,
            "poplar_retrieved_octets_total{command=\"RETR\"}"
        ) > 20.0
    );
    assert_eq!(value(&prometheus, "poplar_messages_deleted_total"), 1.0);
    assert!(value(&prometheus, "poplar_deleted_octets_total") > 20.0);
    assert_eq!(value(&prometheus, "poplar_message_send_seconds_count"), 2.0);
    assert_eq!(value(&prometheus, "poplar_bad_commands_total"), 1.0);
    assert!(value(&prometheus, "poplar_commands_total") >= 15.0);
    assert_eq!(
        value(
            &prometheus,
            "poplar_sessions_total{end=\"quit\",tls=\"yes\"}"
        ),
        2.0
    );
    assert!(value(&prometheus, "poplar_session_duration_seconds_count") >= 5.0);
    assert_eq!(
        value(&prometheus, "poplar_store_errors_total{operation=\"read\"}"),
        1.0
    );
    assert_eq!(
        value(
            &prometheus,
            "poplar_lmtp_deliveries_total{result=\"delivered\"}"
        ),
        3.0
    );
    assert_eq!(
        value(
            &prometheus,
            "poplar_lmtp_deliveries_total{result=\"over_quota\"}"
        ),
        1.0
    );
    assert_eq!(value(&prometheus, "poplar_quota_refusals_total"), 1.0);
    assert_eq!(value(&prometheus, "poplar_expire_removed_total"), 1.0);
    assert!(value(&prometheus, "poplar_penalties_in_force") >= 1.0);
    assert_eq!(
        prometheus.query("poplar_build_info").keys().next().unwrap(),
        &format!("store=maildir,version={}", env!("CARGO_PKG_VERSION"))
    );
    // The Grafana dashboard in dist/ charts every metric, and Prometheus accepts each of its
    // queries (Grafana's variables given values) and has data for it.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../dist/grafana-dashboard.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    for metric in pop3_server::metrics::METRICS {
        assert!(
            exprs.iter().any(|e| e.contains(metric.name)),
            "the dashboard does not chart {}",
            metric.name
        );
    }
    for expr in &exprs {
        let expr = expr
            .replace("$instance", ".*")
            .replace("$__rate_interval", "1m");
        // query() fails on anything but 200: a query Prometheus cannot parse is a 400.
        prometheus.query(&expr);
    }
    // Open connections and logged-in sessions are gauges of now.
    let (mut held, _) = Client::connect(server.pop3);
    assert!(held.login("bob", "builder").starts_with("+OK"));
    prometheus.wait_for_fresh_scrape();
    common::eventually(Duration::from_secs(10), "gauges", || {
        (value(&prometheus, "poplar_sessions_logged_in") == 1.0
            && value(&prometheus, "poplar_connections_open") >= 1.0)
            .then_some(())
    });
    held.cmd("QUIT");

    // At the connection limit the longest-waiting unauthenticated connection makes room, and
    // with only logged-in sessions a newcomer is refused.
    let (_, dir) = server.stop();
    let mut b = ServerBuilder::new();
    b.set("data_dir", data.to_str().unwrap());
    b.set("limits.max_connections", 2);
    let metrics2: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    b.set("metrics.listen", metrics2.to_string());
    let server = b.start();
    let (_idle, _) = Client::connect(server.pop3);
    let (mut a, _) = Client::connect(server.pop3);
    assert!(a.login("alice", "wonderland").starts_with("+OK"));
    let (mut bob, _) = Client::connect(server.pop3);
    assert!(bob.login("bob", "builder").starts_with("+OK"));
    let mut refused = TcpStream::connect(server.pop3).unwrap();
    let mut line = [0u8; 128];
    let n = refused.read(&mut line).unwrap();
    assert!(String::from_utf8_lossy(&line[..n]).contains("[SYS/TEMP]"));
    let text = common::eventually(Duration::from_secs(10), "eviction counted", || {
        let (_, text) = http_get(metrics2, "/metrics");
        text.contains("poplar_connections_evicted_total{listener=\"pop3\"} 1")
            .then_some(text)
    });
    assert!(
        text.contains("poplar_connections_refused_total{listener=\"pop3\"} 1"),
        "{text}"
    );
    drop(dir);
}

/// `/healthz` answers 200 while the store answers and 503, saying why, while it does not;
/// other paths and methods are refused; addresses outside `allow_from` are closed.
#[test]
fn healthz_follows_the_store_and_the_listener_admits_only_its_networks() {
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut b = ServerBuilder::new();
    b.set("metrics.listen", metrics.to_string());
    b.set(
        "metrics.allow_from",
        toml::Value::Array(vec!["127.0.0.1/32".into()]),
    );
    let server = b.start();
    server.add_user("alice", "wonderland");
    // Ready before anything was delivered, and after.
    assert_eq!(http_get(metrics, "/healthz"), (200, "ok\n".into()));
    assert!(
        server
            .deliver(&["alice"], b"Subject: 1\r\n\r\n1\r\n")
            .success()
    );
    assert_eq!(http_get(metrics, "/healthz"), (200, "ok\n".into()));
    // The Maildir root and the directory it lives in gone (a lost mount): not ready.
    let mail = server.data_dir();
    let away = server.dir().join("data.away");
    std::fs::rename(&mail, &away).unwrap();
    let (code, body) = http_get(metrics, "/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("the store does not answer"), "{body}");
    std::fs::rename(&away, &mail).unwrap();
    assert_eq!(http_get(metrics, "/healthz").0, 200);
    assert_eq!(http_get(metrics, "/nothing").0, 404);
    let mut s = TcpStream::connect(metrics).unwrap();
    write!(
        s,
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 405"), "{text}");
    // From 127.0.0.2, outside allow_from: closed without an answer.
    let mut outsider = common::tcp_from("127.0.0.2", metrics);
    outsider
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = write!(outsider, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = Vec::new();
    let _ = outsider.read_to_end(&mut buf);
    assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
    // A non-loopback listener without allow_from naming its scrapers is refused.
    let mut b = ServerBuilder::new();
    b.set("metrics.listen", "0.0.0.0:0");
    let out = Command::new(common::BIN)
        .args([
            "check-config",
            "--config",
            b.write_config().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("metrics.allow_from"), "{text}");
}

/// `poplar stats` says the running server's figures in words, and `--prometheus` gives the
/// exposition itself (with or without an HTTP listener).
#[test]
fn stats_in_words_from_the_control_socket() {
    let server = ServerBuilder::new().start();
    server.add_user("alice", "wonderland");
    let (mut c, _) = Client::connect(server.pop3);
    assert!(c.login("alice", "wonderland").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    // The session's totals are counted as it ends, just after its QUIT is answered.
    let words = common::eventually(Duration::from_secs(10), "the session counted", || {
        let out = server.poplar(&["stats"]).output().unwrap();
        assert!(out.status.success());
        let words = String::from_utf8(out.stdout).unwrap();
        words.contains("end quit").then_some(words)
    });
    assert!(
        words.contains("Login attempts, by mechanism and result:\n  1 (mechanism USER, result ok)"),
        "{words}"
    );
    assert!(words.contains("Sessions ended, by listener, TLS and how they ended:\n  1 (listener pop3, tls no, end quit)"), "{words}");
    let out = server.poplar(&["stats", "--prometheus"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("# TYPE poplar_logins_total counter"),
        "{text}"
    );
    assert!(
        text.contains("poplar_logins_total{mechanism=\"USER\",result=\"ok\"} 1"),
        "{text}"
    );
}

/// Socket activation as systemd does it (systemd-socket-activate, from systemd): the sockets
/// are bound before Poplar runs, the first connection starts it, and each socket serves the
/// listener whose port it has; a socket on a port the configuration does not list is refused.
#[test]
fn socket_activation_serves_the_sockets_systemd_hands_over() {
    let (pop3, pop3s) = (free_port(), free_port());
    let mut b = ServerBuilder::new();
    b.set(
        "listen.pop3",
        toml::Value::Array(vec![format!("127.0.0.1:{pop3}").into()]),
    );
    b.set(
        "listen.pop3s",
        toml::Value::Array(vec![format!("127.0.0.1:{pop3s}").into()]),
    );
    let config = b.write_config();
    let data = b.data_dir();
    let mut add = Command::new(common::BIN);
    add.args(["user", "add", "alice", "--password-stdin", "--config"])
        .arg(&config);
    assert!(common::run_with_stdin(add, b"wonderland\n").success());
    let mut activator = Command::new("systemd-socket-activate")
        .args([
            "-l",
            &format!("127.0.0.1:{pop3}"),
            "-l",
            &format!("127.0.0.1:{pop3s}"),
        ])
        .args([common::BIN, "serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate (Debian package systemd)");
    // Bound before Poplar runs: the first connection waits in the backlog and starts it.
    let addr: SocketAddr = format!("127.0.0.1:{pop3}").parse().unwrap();
    common::eventually(Duration::from_secs(20), "the socket", || {
        TcpStream::connect(addr).ok()
    });
    let (mut c, greeting) = Client::connect(addr);
    assert!(greeting.starts_with("+OK"), "{greeting}");
    assert!(c.login("alice", "wonderland").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let tls: SocketAddr = format!("127.0.0.1:{pop3s}").parse().unwrap();
    let (mut c, greeting) = Client::connect_tls(tls, &data.join("tls/cert.pem"));
    assert!(greeting.starts_with("+OK"), "{greeting}");
    assert!(c.login("alice", "wonderland").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let _ = Command::new("kill")
        .arg(activator.id().to_string())
        .status();
    let out = activator.wait_with_output_timeout();
    assert!(
        out.contains("socket activation: 2 listening socket(s) from systemd"),
        "{out}"
    );

    // A socket on a port [listen] does not name: refused, and the log says what to change.
    let other = free_port();
    let mut activator = Command::new("systemd-socket-activate")
        .args(["-l", &format!("127.0.0.1:{other}")])
        .args([common::BIN, "serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{other}").parse().unwrap();
    common::eventually(Duration::from_secs(20), "the socket", || {
        TcpStream::connect(addr).ok()
    });
    let out = activator.wait_with_output_timeout();
    assert!(
        out.contains("in neither listen.pop3 nor listen.pop3s"),
        "{out}"
    );
}

/// Collects a child's standard error once it exits (killing it after 20 s).
trait WaitWithTimeout {
    fn wait_with_output_timeout(&mut self) -> String;
}

impl WaitWithTimeout for Child {
    fn wait_with_output_timeout(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.kill();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut text = String::new();
        self.stderr
            .take()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    }
}

/// Under systemd (standard error is the journal, as `JOURNAL_STREAM` says), each line starts
/// with its level's syslog priority and carries no timestamp of its own; elsewhere lines
/// keep their timestamps and no prefix.
#[test]
fn journald_gets_a_priority_per_level() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let file = std::fs::File::create(&journal).unwrap();
    let meta = file.metadata().unwrap();
    let mut b = ServerBuilder::new();
    b.set(
        "listen.pop3",
        toml::Value::Array(vec!["127.0.0.1:0".into()]),
    );
    b.set("listen.pop3s", toml::Value::Array(vec![]));
    let config = b.write_config();
    let mut child = Command::new(common::BIN)
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&journal).unwrap();
    let line = common::eventually(Duration::from_secs(20), "listening", || {
        read()
            .lines()
            .find(|l| l.contains("listening for POP3 on"))
            .map(str::to_owned)
    });
    assert!(line.starts_with("<6> INFO listening for POP3 on"), "{line}");
    let addr: SocketAddr = line
        .split("listening for POP3 on ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    let (mut c, _) = Client::connect(addr);
    assert!(c.login("nobody", "secret-password").contains("[AUTH]"));
    c.cmd("QUIT");
    let text = common::eventually(Duration::from_secs(10), "the failure", || {
        let text = read();
        text.contains("session ended").then_some(text)
    });
    let failure = text
        .lines()
        .find(|l| l.contains("authentication failed"))
        .unwrap();
    assert!(failure.starts_with("<4> WARN "), "{failure}");
    assert!(!text.contains("secret-password"));
    for line in text.lines() {
        assert!(line.starts_with('<'), "every line has its priority: {line}");
    }
    let _ = child.kill();
    let _ = child.wait();
    // Without the journal: timestamps, no prefix.
    let server = ServerBuilder::new().start();
    let logs = server.logs();
    assert!(logs.iter().all(|l| !l.starts_with('<')), "{logs:?}");
    assert!(logs[0].starts_with("20"), "{logs:?}");
}

/// The shipped unit confines the service as far as a POP3 server that starts as root allows:
/// `systemd-analyze security` rates its exposure 3.0 or lower ("OK"; 10 is unconfined).
#[test]
fn the_service_unit_is_hardened() {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/../../dist/poplar.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=30", unit])
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let overall = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap();
    assert!(overall.contains("OK"), "{overall}");
    // The socket unit hands over exactly the ports the packaged configuration serves.
    let socket = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../dist/poplar.socket"
    ))
    .unwrap();
    let config: toml::Table = toml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../dist/poplar.toml"
        ))
        .unwrap(),
    )
    .unwrap();
    let ports = |key: &str| -> Vec<String> {
        config["listen"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().rsplit(':').next().unwrap().to_owned())
            .collect()
    };
    for port in ports("pop3").into_iter().chain(ports("pop3s")) {
        assert!(socket.contains(&format!("ListenStream={port}\n")), "{port}");
    }
}
