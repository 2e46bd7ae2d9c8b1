//! The load generator against a real server, briefly: every load runs, checks the protocol,
//! and writes figures that `poplar bench table` turns into the comparison table. The figures
//! themselves are not judged here (benchmarks are not timed tests; see docs/benchmarks.md).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{BIN, ServerBuilder};
use std::process::Command;

fn bench(args: &[&str]) -> String {
    let out = Command::new(BIN).arg("bench").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "poplar bench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_load_runs_checks_and_reports() {
    let server = ServerBuilder::new().start();
    let data = server.data_dir();
    let data = data.to_str().unwrap();
    for user in ["bench0", "bench1", "big"] {
        server.add_user_with(user, "benchpw", &["--schemes", "PLAIN"]);
    }
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
    let results = server.dir().join("results.jsonl");
    let plain = server.pop3.to_string();
    let tls = server.pop3s.to_string();
    let cert = server.cert();
    let pid = server.pid().to_string();
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
    let server = ServerBuilder::new().start();
    let out = Command::new(BIN)
        .args(["bench", "session", "--server", &server.pop3.to_string()])
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
    let mut b = ServerBuilder::new();
    b.lmtp();
    let server = b.start();
    server.add_user("alice", "wonderland");
    let lmtp = server.lmtp_addr();
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
    let (mut c, _) = common::Client::connect(server.pop3);
    assert!(c.login("alice", "wonderland").starts_with("+OK"));
    // Every delivery the load counted is in the maildrop, and nothing else.
    assert_eq!(
        c.cmd("STAT").split(' ').nth(1).unwrap(),
        delivered.to_string(),
        "{out}"
    );
}
