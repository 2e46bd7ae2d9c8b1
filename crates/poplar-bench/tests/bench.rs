//! The load generator against a real Poplar server, briefly: every load runs, checks the
//! protocol, and writes figures that `poplar-bench table` turns into the comparison table. The
//! figures themselves are not judged here (benchmarks are not timed tests; see
//! docs/benchmarks.md). The server runs in this test's process, on the Maildir store, TLS and
//! LMTP as `poplar serve` runs them; `--server-pid` is this process.
#![allow(clippy::unwrap_used, missing_docs)]

use pop3_server::{Config, Server};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_poplar-bench");

fn bench(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "poplar-bench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A Poplar server on loopback ports (POP3, POP3S with its generated certificate, LMTP), with
/// `{PLAIN}` users, running on a thread of its own until dropped.
struct Lab {
    dir: tempfile::TempDir,
    pop3: SocketAddr,
    pop3s: SocketAddr,
    lmtp: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Lab {
    fn start(users: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let lines: String = users
            .iter()
            .map(|(u, p)| format!("{u}:{{PLAIN}}{p}\n"))
            .collect();
        std::fs::write(dir.path().join("users"), lines).unwrap();
        let mut config = Config::parse(
            "[listen]\npop3 = [\"127.0.0.1:0\"]\npop3s = [\"127.0.0.1:0\"]\nlmtp = [\"127.0.0.1:0\"]\n",
        )
        .unwrap();
        config.data_dir = dir.path().to_owned();
        let (addrs_tx, addrs_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let users = config.users_source();
                let store = config.maildir_store_with_users(&users);
                let server = Server::bind_with_users(&config, store, users)
                    .await
                    .unwrap();
                addrs_tx
                    .send((server.local_addrs(), server.lmtp_addrs()))
                    .unwrap();
                server
                    .serve(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        let (addrs, lmtp) = addrs_rx.recv().unwrap();
        let find = |kind| addrs.iter().find(|(k, _)| *k == kind).unwrap().1;
        Lab {
            pop3: find(pop3_server::Kind::Pop3),
            pop3s: find(pop3_server::Kind::Pop3s),
            lmtp: lmtp[0].clone(),
            dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("tls/cert.pem")
    }

    /// What a client sees after logging in as `user`: the reply to STAT.
    fn stat(&self, user: &str, password: &str) -> String {
        use std::io::{BufRead, BufReader, Write};
        let stream = std::net::TcpStream::connect(self.pop3).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let mut line = String::new();
        let mut reply = |command: &str| {
            if !command.is_empty() {
                writer
                    .write_all(format!("{command}\r\n").as_bytes())
                    .unwrap();
            }
            line.clear();
            reader.read_line(&mut line).unwrap();
            line.trim_end().to_owned()
        };
        assert!(reply("").starts_with("+OK"));
        assert!(reply(&format!("USER {user}")).starts_with("+OK"));
        assert!(reply(&format!("PASS {password}")).starts_with("+OK"));
        reply("STAT")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn every_load_runs_checks_and_reports() {
    let server = Lab::start(&[
        ("bench0", "benchpw"),
        ("bench1", "benchpw"),
        ("big", "benchpw"),
    ]);
    let data = server.data_dir().to_str().unwrap();
    for (user, messages, size) in [
        ("bench0", "3", "5000"),
        ("bench1", "3", "100"),
        ("big", "1", "3000000"),
    ] {
        bench(&[
            "fill",
            "--data-dir",
            data,
            "--user",
            user,
            "--messages",
            messages,
            "--size",
            size,
        ]);
    }
    let results = server.data_dir().join("results.jsonl");
    let plain = server.pop3.to_string();
    let tls = server.pop3s.to_string();
    let cert = server.cert();
    let pid = std::process::id().to_string();
    let common = ["--server-pid", &pid, "--json", results.to_str().unwrap()];
    let secure = ["--tls", "implicit", "--ca-file", cert.to_str().unwrap()];
    let run = |load: &str, server: &str, tls: bool, extra: &[&str]| {
        let mut args = vec![load, "--server", server];
        args.extend(common);
        if tls {
            args.extend(secure);
        }
        args.extend(extra);
        bench(&args)
    };
    let session = ["--users", "2", "--password", "benchpw", "--seconds", "1"];
    let out = run("session", &plain, false, &session);
    assert!(
        out.contains("session plain") && out.contains("sessions/s"),
        "{out}"
    );
    run("session", &tls, true, &session);
    let big = ["--user", "big", "--password", "benchpw", "--seconds", "1"];
    run("retr", &plain, false, &big);
    run("retr", &tls, true, &big);
    run(
        "idle",
        &plain,
        false,
        &["--connections", "2", "--password", "benchpw"],
    );
    run(
        "open",
        &plain,
        false,
        &[
            "--user",
            "bench0",
            "--password",
            "benchpw",
            "--times",
            "2",
            "--pause",
            "0",
        ],
    );
    run(
        "hold",
        &plain,
        false,
        &[
            "--connections",
            "20",
            "--users",
            "1",
            "--password",
            "benchpw",
            "--seconds",
            "1",
        ],
    );
    let records = std::fs::read_to_string(&results).unwrap();
    for line in records.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let value = r["value"].as_f64().unwrap();
        assert!(value.is_finite() && value >= 0.0, "{line}");
        assert_eq!(r["label"], "poplar");
    }
    let table = bench(&["table", results.to_str().unwrap()]);
    for row in [
        "| session plain | sessions/s |",
        "| session tls | sessions/s |",
        "| retr plain | MB/s |",
        "| retr tls | MB/s |",
        "| idle plain | KiB per session |",
        "| open | warm login+UIDL ms |",
        "| hold | session p99 ms |",
        "| open warm login+UIDL ms: ≤ 50.0 |",
    ] {
        assert!(table.contains(row), "{row} missing from\n{table}");
    }
}

#[test]
fn a_wrong_password_stops_the_load_with_the_servers_reply() {
    let server = Lab::start(&[("bench0", "benchpw")]);
    let out = Command::new(BIN)
        .args(["session", "--server", &server.pop3.to_string()])
        .args(["--users", "1", "--password", "wrong", "--seconds", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("login as bench0") && err.contains("-ERR"),
        "{err}"
    );
}

#[test]
fn the_lmtp_load_delivers_what_it_counts() {
    let server = Lab::start(&[("alice", "wonderland")]);
    let lmtp = server.lmtp.clone();
    let out = bench(&[
        "lmtp",
        "--lmtp",
        &lmtp,
        "--recipient",
        "alice@example.org",
        "--connections",
        "2",
        "--seconds",
        "1",
        "--size",
        "1000",
    ]);
    let figure = |name: &str| -> f64 {
        out.lines()
            .find(|l| l.ends_with(name))
            .and_then(|l| l.split_whitespace().nth(3))
            .unwrap()
            .parse()
            .unwrap()
    };
    let delivered = figure(" deliveries");
    assert!(delivered > 0.0 && figure(" deliveries/s") > 0.0, "{out}");
    // Every delivery the load counted is in the maildrop, and nothing else.
    assert_eq!(
        server
            .stat("alice", "wonderland")
            .split(' ')
            .nth(1)
            .unwrap(),
        delivered.to_string(),
        "{out}"
    );
}
