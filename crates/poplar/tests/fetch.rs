//! `poplar fetch` against the real server: byte-exact delivery into a Maildir over POP3S and
//! STLS, leave-on-server (a second run fetches nothing, a new message is the only one fetched),
//! deletion only after delivery, retention by days with a controlled clock, and SIGKILL at random
//! moments: afterwards every message is in the Maildir exactly once and, without --keep, gone
//! from the server.
#![allow(clippy::unwrap_used, clippy::print_stderr, missing_docs)]

mod common;

use common::{BIN, Client, Rng, ServerBuilder, canonical, corpus, crash_trials, eventually};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `poplar fetch URL --to DEST --journal JOURNAL EXTRA...`, the password to come on stdin.
fn fetch_to(url: &str, to: &str, journal: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["fetch", url, "--password-stdin", "--to", to])
        .arg("--journal")
        .arg(journal)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// [`fetch_to`] into `maildir` (a Maildir, or an mbox file when its name ends in `.mbox`),
/// trusting `cert`.
fn fetch_cmd(url: &str, maildir: &Path, journal: &Path, cert: &Path, extra: &[&str]) -> Command {
    let kind = if maildir.extension().is_some_and(|e| e == "mbox") {
        "mbox"
    } else {
        "maildir"
    };
    let mut cmd = fetch_to(
        url,
        &format!("{kind}:{}", maildir.display()),
        journal,
        extra,
    );
    cmd.arg("--ca-file").arg(cert);
    cmd
}

fn fetch(url: &str, maildir: &Path, journal: &Path, cert: &Path, extra: &[&str]) -> String {
    let out = run(fetch_cmd(url, maildir, journal, cert, extra), "pw");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "fetch {extra:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn run(mut cmd: Command, password: &str) -> Output {
    let mut child = cmd.spawn().unwrap();
    // A run that fails early may be gone before it reads the password.
    let _ = std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        format!("{password}\n").as_bytes(),
    );
    child.wait_with_output().unwrap()
}

/// The messages in a Maildir's new/ and cur/ (or in an mboxrd file, un-quoted and with CRLF
/// line ends again), by content.
fn stored(maildir: &Path) -> BTreeMap<Vec<u8>, usize> {
    let mut all = BTreeMap::new();
    if maildir.extension().is_some_and(|e| e == "mbox") {
        let text = std::fs::read(maildir).unwrap_or_default();
        let mut current: Option<Vec<u8>> = None;
        let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
        lines.pop(); // after the last newline
        for line in lines {
            if line.starts_with(b"From ") {
                if let Some(mut m) = current.take() {
                    m.truncate(m.len() - 2); // the blank separator line
                    *all.entry(m).or_insert(0) += 1;
                }
                current = Some(Vec::new());
                continue;
            }
            let m = current.as_mut().expect("mbox starts with a From line");
            let quotes = line.iter().take_while(|&&b| b == b'>').count();
            let line = if quotes > 0 && line[quotes..].starts_with(b"From ") {
                &line[1..]
            } else {
                line
            };
            m.extend_from_slice(line);
            m.extend_from_slice(b"\r\n");
        }
        if let Some(mut m) = current {
            m.truncate(m.len() - 2);
            *all.entry(m).or_insert(0) += 1;
        }
        return all;
    }
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(maildir.join(sub)) else {
            continue;
        };
        for e in entries {
            *all.entry(std::fs::read(e.unwrap().path()).unwrap())
                .or_insert(0) += 1;
        }
    }
    all
}

fn stat(server: &common::Server, user: &str) -> usize {
    stat_as(server, user, "pw")
}

#[test]
fn keep_then_delete_over_pop3s_and_stls_byte_exact() {
    let server = ServerBuilder::new().start();
    server.add_user("alice", "pw");
    let messages = corpus();
    for (_, m) in &messages {
        assert!(server.deliver(&["alice"], m).success());
    }
    let dir = tempfile::tempdir().unwrap();
    let (maildir, journal) = (dir.path().join("Mail"), dir.path().join("alice.journal"));
    let cert = server.cert();
    let pop3s = format!("pop3s://alice@localhost:{}", server.pop3s.port());
    let stls = format!("pop3://alice@localhost:{}", server.pop3.port());
    let n = messages.len();

    let out = fetch(&pop3s, &maildir, &journal, &cert, &["--keep"]);
    assert!(out.contains(&format!("{n} new of {n}")), "{out}");
    assert!(out.contains("0 deleted on the server"), "{out}");
    // Byte for byte what RETR sent: the canonical CRLF form of each stored message.
    let want: BTreeMap<Vec<u8>, usize> = messages.iter().map(|(_, m)| (canonical(m), 1)).collect();
    assert_eq!(stored(&maildir), want);
    // Leave on server: nothing new, then exactly the new message, over STLS this time.
    let out = fetch(&stls, &maildir, &journal, &cert, &["--keep"]);
    assert!(out.contains(&format!("0 new of {n}")), "{out}");
    // A "0 new" says why, and where the account's record is.
    assert!(
        out.contains(&format!(
            "{n} fetched by earlier runs of this account (recorded in {})",
            journal.display()
        )),
        "{out}"
    );
    assert!(
        server
            .deliver(&["alice"], b"Subject: late\r\n\r\nnew\r\n")
            .success()
    );
    let out = fetch(&stls, &maildir, &journal, &cert, &["--keep"]);
    assert!(out.contains(&format!("1 new of {}", n + 1)), "{out}");
    assert!(
        out.contains(&format!("{n} fetched by earlier runs")),
        "{out}"
    );
    assert_eq!(stat(&server, "alice"), n + 1);
    // Without --keep: nothing is fetched twice, and everything delivered is deleted.
    let out = fetch(&pop3s, &maildir, &journal, &cert, &[]);
    assert!(out.contains(&format!("0 new of {}", n + 1)), "{out}");
    assert!(
        out.contains(&format!("{} deleted on the server", n + 1)),
        "{out}"
    );
    assert_eq!(stat(&server, "alice"), 0);
    assert_eq!(stored(&maildir).values().sum::<usize>(), n + 1);
    assert!(stored(&maildir).values().all(|&c| c == 1));
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap(),
        "poplar-fetch-journal 1\n",
        "the journal forgets what the server no longer has"
    );
    // Into an mbox (mboxrd): the same messages, read back.
    for (_, m) in &messages {
        assert!(server.deliver(&["alice"], m).success());
    }
    let mbox = dir.path().join("inbox.mbox");
    let out = fetch(&pop3s, &mbox, &dir.path().join("mbox.journal"), &cert, &[]);
    assert!(
        out.contains(&format!("{n} new of {n}")) && out.contains("into mbox:"),
        "{out}"
    );
    assert_eq!(stored(&mbox), want);
}

#[test]
fn delete_after_days_with_a_controlled_clock_and_clear_errors() {
    let server = ServerBuilder::new().start();
    server.add_user("bob", "pw");
    assert!(
        server
            .deliver(&["bob"], b"Subject: 1\r\n\r\nold\r\n")
            .success()
    );
    let dir = tempfile::tempdir().unwrap();
    let (maildir, journal) = (dir.path().join("Mail"), dir.path().join("bob.journal"));
    let cert = server.cert();
    let url = format!("pop3s://bob@localhost:{}", server.pop3s.port());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let at = |days: u64| (now + days * 86_400).to_string();
    fetch(
        &url,
        &maildir,
        &journal,
        &cert,
        &["--keep", "--delete-after-days", "7", "--now", &at(0)],
    );
    assert!(
        server
            .deliver(&["bob"], b"Subject: 2\r\n\r\nnewer\r\n")
            .success()
    );
    let out = fetch(
        &url,
        &maildir,
        &journal,
        &cert,
        &["--keep", "--delete-after-days", "7", "--now", &at(5)],
    );
    assert!(
        out.contains("1 new of 2") && out.contains("0 deleted"),
        "{out}"
    );
    // Day 8: the first is due, the second (first fetched on day 5) is not.
    let out = fetch(
        &url,
        &maildir,
        &journal,
        &cert,
        &["--keep", "--delete-after-days", "7", "--now", &at(8)],
    );
    assert!(
        out.contains("0 new of 2") && out.contains("1 deleted"),
        "{out}"
    );
    assert_eq!(stat(&server, "bob"), 1);

    // A wrong password: exit 77 and a sentence saying what to do; nothing touched.
    let out = run(fetch_cmd(&url, &maildir, &journal, &cert, &[]), "wrong");
    assert_eq!(out.status.code(), Some(77), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("check the user name and password"), "{err}");
    // An untrusted certificate: nothing is sent, exit 78 (a local setting is wrong).
    let other = tempfile::tempdir().unwrap();
    let bogus = other.path().join("ca.pem");
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(&bogus, key.cert.pem()).unwrap();
    let out = run(fetch_cmd(&url, &maildir, &journal, &bogus, &[]), "pw");
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not trusted") && err.contains("--ca-file"),
        "{err}"
    );
    assert_eq!(stat(&server, "bob"), 1);
}

/// Writes `count` distinct messages straight into `user`'s Maildir on the server.
fn fill(server: &common::Server, user: &str, tag: &str, count: usize) -> Vec<Vec<u8>> {
    let new = server
        .data_dir()
        .join(format!("mail/_default_/{user}/Maildir/new"));
    std::fs::create_dir_all(&new).unwrap();
    (0..count)
        .map(|i| {
            let body = format!(
                "Subject: {tag} {i}\r\n\r\n{}\r\n",
                "x".repeat(200 + i % 700)
            )
            .into_bytes();
            std::fs::write(
                new.join(format!("{}.M{i}P1Q{tag}.test", 1_700_000_000 + i)),
                &body,
            )
            .unwrap();
            body
        })
        .collect()
}

#[test]
fn killed_at_any_moment_nothing_is_lost_or_duplicated() {
    let mut b = ServerBuilder::new();
    b.set("auth.failure_delay", "0s");
    let server = b.start();
    server.add_user("carol", "pw");
    let cert = server.cert();
    let url = format!("pop3s://carol@localhost:{}", server.pop3s.port());
    let mut rng = Rng::new("fetch");
    let trials = crash_trials();
    let (mut killed, mut finished_first, mut settled) = (0, 0, 0);
    // Calibrate: how long one uninterrupted run of 300 messages takes.
    let dir = tempfile::tempdir().unwrap();
    fill(&server, "carol", "calibrate", 300);
    let started = Instant::now();
    fetch(
        &url,
        &dir.path().join("M"),
        &dir.path().join("j"),
        &cert,
        &[],
    );
    let full = started.elapsed().max(Duration::from_millis(50));
    eprintln!("one run of 300 messages: {full:?}");
    for trial in 0..trials {
        let keep = trial % 2 == 1;
        let dir = tempfile::tempdir().unwrap();
        // Maildir and mbox in turn.
        let target = if trial % 4 < 2 { "Mail" } else { "inbox.mbox" };
        let (maildir, journal) = (dir.path().join(target), dir.path().join("j"));
        let tag = format!("t{trial}");
        let expected = fill(&server, "carol", &tag, 300);
        let flags: &[&str] = if keep { &["--keep"] } else { &[] };
        let mut child = fetch_cmd(&url, &maildir, &journal, &cert, flags)
            .spawn()
            .unwrap();
        let _ = std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"pw\n");
        std::thread::sleep(rng.below(full));
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        } else {
            finished_first += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        // The next run finishes the job; a third must find nothing to do. Until the server has
        // noticed that the killed client's connection is gone, it still holds the maildrop:
        // `[IN-USE]`, exit 75, and the run is simply tried again, as cron would.
        let out = eventually(Duration::from_secs(10), "the maildrop to be free", || {
            let out = run(fetch_cmd(&url, &maildir, &journal, &cert, flags), "pw");
            match out.status.code() {
                Some(0) => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
                Some(75) if String::from_utf8_lossy(&out.stderr).contains("IN-USE") => None,
                _ => panic!("trial {trial}: {out:?}"),
            }
        });
        if out.contains("of an interrupted run settled") {
            settled += 1;
        }
        let out = fetch(&url, &maildir, &journal, &cert, flags);
        assert!(out.contains("0 new of"), "trial {trial}: {out}");
        let got = stored(&maildir);
        for m in &expected {
            assert_eq!(
                got.get(m),
                Some(&1),
                "trial {trial} ({target}, keep {keep}): a message is missing or duplicated"
            );
        }
        assert_eq!(
            got.len(),
            expected.len(),
            "trial {trial}: unexpected messages"
        );
        let left = stat(&server, "carol");
        if keep {
            assert_eq!(left, 300, "trial {trial}");
            // Clean the server for the next trial.
            fetch(&url, &maildir, &journal, &cert, &[]);
        }
        assert_eq!(
            stat(&server, "carol"),
            0,
            "trial {trial}: left on the server"
        );
    }
    eprintln!(
        "{trials} trials: {killed} killed mid-run ({settled} left deliveries in doubt, settled by the next run), {finished_first} finished before the kill"
    );
    assert!(
        killed > 0 || trials < 4,
        "no trial was killed mid-run: the timing is off"
    );
}

#[test]
fn from_dovecot_with_every_transport_and_mechanism() {
    use common::dovecot::{Dovecot, certificate};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    assert!(
        Command::new("chmod")
            .arg("755")
            .arg(root)
            .status()
            .unwrap()
            .success()
    );
    let maildir = root.join("mail/_default_/alice/Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let messages = corpus();
    for (i, (_, m)) in messages.iter().enumerate() {
        std::fs::write(
            maildir.join(format!("new/{}.M{i}P1.old", 1_700_000_000 + i)),
            m,
        )
        .unwrap();
    }
    assert!(
        Command::new("chown")
            .args(["-R", "nobody:nogroup"])
            .arg(root.join("mail"))
            .status()
            .unwrap()
            .success()
    );
    let (cert, key) = certificate(root);
    let dovecot = Dovecot::start_with_tls(
        root,
        &root.join("mail"),
        "auth_mechanisms = plain login cram-md5 scram-sha-256 apop\n",
        Some((&cert, &key)),
    );
    let plain = format!("pop3://alice@localhost:{}", dovecot.port);
    let pop3s = format!("pop3s://alice@localhost:{}", dovecot.pop3s_port.unwrap());
    let cases: [(&str, &[&str]); 7] = [
        (&plain, &["--allow-insecure", "--auth", "CRAM-MD5"]),
        (&plain, &["--allow-insecure", "--auth", "SCRAM-SHA-256"]),
        (&plain, &["--allow-insecure", "--auth", "APOP"]),
        (&plain, &["--allow-insecure"]),
        (&plain, &["--auth", "USER"]),
        (&plain, &["--auth", "PLAIN"]),
        (&pop3s, &[]),
    ];
    let want: BTreeMap<Vec<u8>, usize> = messages.iter().map(|(_, m)| (canonical(m), 1)).collect();
    for (i, (url, flags)) in cases.iter().enumerate() {
        let case = root.join(format!("case{i}"));
        let mut args = vec!["--keep"];
        args.extend_from_slice(flags);
        let out = fetch(url, &case.join("Mail"), &case.join("j"), &cert, &args);
        let n = messages.len();
        assert!(
            out.contains(&format!("{n} new of {n}")),
            "{url} {flags:?}: {out}"
        );
        // Dovecot sends each stored message in the same canonical CRLF form as Poplar.
        assert_eq!(stored(&case.join("Mail")), want, "{url} {flags:?}");
        let again = fetch(url, &case.join("Mail"), &case.join("j"), &cert, &args);
        assert!(again.contains(&format!("0 new of {n}")), "{again}");
    }
    // Into an mbox (mboxrd), from Dovecot: the same messages, read back.
    let mbox = root.join("from-dovecot.mbox");
    let out = fetch(&pop3s, &mbox, &root.join("mbox.j"), &cert, &["--keep"]);
    assert!(out.contains("into mbox:"), "{out}");
    assert_eq!(stored(&mbox), want);
    // Plain POP3 without STLS refuses to send a password in clear.
    let case = root.join("clear");
    let out = run(
        fetch_cmd(
            &plain,
            &case.join("Mail"),
            &case.join("j"),
            &cert,
            &["--allow-insecure", "--auth", "USER"],
        ),
        "pw",
    );
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in clear"),
        "{out:?}"
    );
    drop(dovecot);
}

#[test]
fn accounts_from_a_config_file_consolidate_into_one_maildir() {
    let server = ServerBuilder::new().start();
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    for i in 0..5 {
        assert!(
            server
                .deliver(&["alice"], format!("Subject: a{i}\r\n\r\nx\r\n").as_bytes())
                .success()
        );
        assert!(
            server
                .deliver(&["bob"], format!("Subject: b{i}\r\n\r\ny\r\n").as_bytes())
                .success()
        );
    }
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    std::fs::write(
        h.join(".netrc"),
        "machine localhost login bob password pw-b\n",
    )
    .unwrap();
    let config = h.join("fetch.toml");
    std::fs::write(
        &config,
        format!(
            "[[account]]\nname = \"a\"\nhost = \"localhost\"\nport = {port}\nuser = \"alice\"\n\
             password_command = \"echo pw-a\"\nca_file = {cert:?}\nto = \"maildir:~/Mail\"\nkeep = true\n\
             [[account]]\nname = \"b\"\nhost = \"localhost\"\nport = {port}\nuser = \"bob\"\n\
             ca_file = {cert:?}\nto = \"maildir:~/Mail\"\n",
            port = server.pop3s.port(),
            cert = server.cert(),
        ),
    )
    .unwrap();
    let poplar = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("fetch")
            .args(args)
            .env("HOME", h)
            .env("XDG_STATE_HOME", h.join("state"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let out = poplar(&["--config", config.to_str().unwrap()]);
    assert!(
        out.contains("a: 5 new of 5") && out.contains("b: 5 new of 5"),
        "{out}"
    );
    assert_eq!(stored(&h.join("Mail")).len(), 10);
    // Accounts by name; alice keeps her mail, bob's was deleted.
    let out = poplar(&["--config", config.to_str().unwrap(), "a"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("a: 0 new of 5"), "{out}");
    assert_eq!(
        (
            stat_as(&server, "alice", "pw-a"),
            stat_as(&server, "bob", "pw-b")
        ),
        (5, 0)
    );
    // The journals live under XDG_STATE_HOME, one per account.
    assert_eq!(
        std::fs::read_dir(h.join("state/poplar/fetch"))
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "journal"))
            .count(),
        2
    );
    // Not on a terminal: no progress bar, only the summary lines.
    let quiet = Command::new(BIN)
        .args(["fetch", "--config", config.to_str().unwrap()])
        .env("HOME", h)
        .env("XDG_STATE_HOME", h.join("state"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(quiet.stderr.is_empty(), "{quiet:?}");
    // On a terminal (script(1) gives it one): one bar for both accounts together.
    for i in 0..3 {
        assert!(
            server
                .deliver(&["alice"], format!("Subject: c{i}\r\n\r\nz\r\n").as_bytes())
                .success()
        );
        assert!(
            server
                .deliver(&["bob"], format!("Subject: d{i}\r\n\r\nw\r\n").as_bytes())
                .success()
        );
    }
    let command = format!(
        "HOME={h} XDG_STATE_HOME={h}/state {BIN} fetch --config {c}",
        h = h.display(),
        c = config.display()
    );
    let tty = common::tool("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{screen}");
    assert!(
        screen.contains("6/6 messages") && screen.contains("(2 accounts)"),
        "{screen}"
    );
    assert!(
        screen.contains("[##############################]"),
        "{screen}"
    );
}

fn stat_as(server: &common::Server, user: &str, password: &str) -> usize {
    let (mut c, _) = Client::connect(server.pop3);
    assert!(c.login(user, password).starts_with("+OK"));
    let n = c.cmd("STAT").split(' ').nth(1).unwrap().parse().unwrap();
    c.cmd("QUIT");
    n
}

#[test]
fn the_daemon_never_polls_sooner_than_login_delay() {
    let mut b = ServerBuilder::new();
    b.set("pop3.login_delay", 2);
    let server = b.start();
    server.add_user("dora", "pw");
    assert!(
        server
            .deliver(&["dora"], b"Subject: 1\r\n\r\nx\r\n")
            .success()
    );
    let dir = tempfile::tempdir().unwrap();
    let url = format!("pop3s://dora@localhost:{}", server.pop3s.port());
    let mut cmd = fetch_cmd(
        &url,
        &dir.path().join("Mail"),
        &dir.path().join("j"),
        &server.cert(),
        &["--keep", "--daemon", "--interval", "1"],
    );
    let mut child = cmd.spawn().unwrap();
    let _ = std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"pw\n");
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(stdout) {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let (t1, first) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(
        first.contains("1 new of 1") && first.contains("next login in 2 s"),
        "{first}"
    );
    assert!(
        server
            .deliver(&["dora"], b"Subject: 2\r\n\r\ny\r\n")
            .success()
    );
    let (t2, second) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(second.contains("1 new of 2"), "{second}");
    // --interval 1, but the server asked for 2 s between logins.
    assert!(t2 - t1 >= Duration::from_millis(1900), "{:?}", t2 - t1);
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("LOGIN-DELAY"), "polled too soon: {err}");
}

#[test]
fn serverinfo_describes_tls_certificate_logins_and_policies() {
    use rustls_pki_types::pem::PemObject as _;
    let mut b = ServerBuilder::new();
    b.set("pop3.login_delay", 300);
    b.set("pop3.expire", 0);
    let server = b.start();
    let url = format!("pop3s://nobody@localhost:{}", server.pop3s.port());
    let out = Command::new(BIN)
        .args(["fetch", "--serverinfo", &url, "--ca-file"])
        .arg(server.cert())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let der = rustls_pki_types::CertificateDer::from_pem_file(server.cert()).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, &der);
    let fingerprint: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    for want in [
        "TLS:           TLSv1_3",
        &format!("SHA-256 {}", fingerprint.join(":")),
        "subject CN=",
        "Logins:",
        "EXPIRE:        0: every message retrieved is deleted",
        "LOGIN-DELAY:   300 s",
        "Capabilities:  TOP UIDL PIPELINING RESP-CODES",
    ] {
        assert!(text.contains(want), "{want:?} missing in:\n{text}");
    }
    // Nobody logged in: the server's log has no login.
    assert!(!server.logs().iter().any(|l| l.contains("user=nobody")));
}

#[test]
fn a_delivery_command_gets_each_message_and_its_sender() {
    let server = ServerBuilder::new().start();
    server.add_user("erin", "pw");
    let messages: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            format!("Return-Path: <s{i}@example.net>\r\nSubject: {i}\r\n\r\nbody {i}\r\n")
                .into_bytes()
        })
        .collect();
    for m in &messages {
        assert!(server.deliver(&["erin"], m).success());
    }
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let url = format!("pop3s://erin@localhost:{}", server.pop3s.port());
    let via = |mda: String, journal: &str| {
        let cert = server.cert();
        let cmd = fetch_to(
            &url,
            &mda,
            &dir.path().join(journal),
            &["--ca-file", cert.to_str().unwrap()],
        );
        run(cmd, "pw")
    };
    // A command that asks to try later: exit 75, nothing deleted, nothing recorded.
    let out = via("mda:cat > /dev/null; exit 75".into(), "j1");
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    assert_eq!(stat(&server, "erin"), 3);
    // A command that fails for good: exit 73 (EX_CANTCREAT), with the command named; the
    // messages stay on the server.
    let out = via("mda:cat > /dev/null; exit 1".into(), "j0");
    assert_eq!(out.status.code(), Some(73), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the delivery command") && err.contains("exit status: 1"),
        "{err}"
    );
    assert_eq!(stat(&server, "erin"), 3);
    let out = via(
        format!(
            "mda:cat > {d}/m.$$; echo %F >> {d}/senders",
            d = out_dir.display()
        ),
        "j2",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stat(&server, "erin"), 0);
    let mut got: Vec<Vec<u8>> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("m."))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    got.sort();
    assert_eq!(got, messages);
    let mut senders: Vec<String> = std::fs::read_to_string(out_dir.join("senders"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    senders.sort();
    assert_eq!(
        senders,
        ["s0@example.net", "s1@example.net", "s2@example.net"]
    );
}

#[test]
fn a_pinned_certificate_is_trusted_and_any_other_refused() {
    use rustls_pki_types::pem::PemObject as _;
    let server = ServerBuilder::new().start();
    server.add_user("fred", "pw");
    assert!(
        server
            .deliver(&["fred"], b"Subject: pin\r\n\r\nx\r\n")
            .success()
    );
    let der = rustls_pki_types::CertificateDer::from_pem_file(server.cert()).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, &der);
    let pin: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("pop3s://fred@localhost:{}", server.pop3s.port());
    let attempt = |fingerprint: &str, journal: &str| {
        let to = format!("maildir:{}", dir.path().join("M").display());
        let cmd = fetch_to(
            &url,
            &to,
            &dir.path().join(journal),
            &["--keep", "--tls-fingerprint", fingerprint],
        );
        run(cmd, "pw")
    };
    // No --ca-file: the self-signed certificate is trusted by its fingerprint alone.
    let out = attempt(&pin.join(":"), "j1");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 new of 1"));
    let mut wrong = pin.clone();
    wrong[0] = if wrong[0] == "00" {
        "01".into()
    } else {
        "00".into()
    };
    let out = attempt(&wrong.concat(), "j2");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("fingerprint is {}, not the pinned", pin.join(":"))),
        "{err}"
    );
    assert!(!attempt("12:34", "j3").status.success());
}

#[test]
fn into_an_lmtp_server_byte_exact() {
    // Poplar's own LMTP listener as the destination: alice's mail fetched into bob's maildrop.
    let mut b = ServerBuilder::new();
    b.lmtp();
    let server = b.start();
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let messages = corpus();
    for (_, m) in &messages {
        assert!(server.deliver(&["alice"], m).success());
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("pop3s://alice@localhost:{}", server.pop3s.port());
    let cert = server.cert();
    let cmd = fetch_to(
        &url,
        &format!("lmtp:{}", server.lmtp_addr()),
        &dir.path().join("j"),
        &[
            "--lmtp-recipient",
            "bob@example.org",
            "--ca-file",
            cert.to_str().unwrap(),
        ],
    );
    let out = run(cmd, "pw");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stat(&server, "alice"), 0);
    // What bob's POP3 sends is what alice's sent: the canonical form, through LMTP and back.
    let (mut c, _) = Client::connect(server.pop3);
    assert!(c.login("bob", "pw").starts_with("+OK"));
    let mut got = BTreeMap::new();
    for n in 1..=messages.len() {
        assert!(c.cmd(&format!("RETR {n}")).starts_with("+OK"));
        *got.entry(c.body()).or_insert(0) += 1;
    }
    let want: BTreeMap<Vec<u8>, usize> = messages.iter().map(|(_, m)| (canonical(m), 1)).collect();
    assert_eq!(got, want);
}

#[test]
fn only_new_large_messages_and_a_server_that_changed_every_uidl() {
    let server = ServerBuilder::new().start();
    server.add_user("gina", "pw");
    for i in 0..12 {
        assert!(
            server
                .deliver(&["gina"], format!("Subject: {i}\r\n\r\nold\r\n").as_bytes())
                .success()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let cert = server.cert();
    let url = format!("pop3s://gina@localhost:{}", server.pop3s.port());
    let (maildir, journal) = (dir.path().join("M"), dir.path().join("j"));
    // only_new: the first run remembers the 12 and fetches none; then only what arrives.
    let out = fetch(&url, &maildir, &journal, &cert, &["--keep", "--only-new"]);
    assert!(
        out.contains("0 new of 12") && out.contains("12 already there recorded as old"),
        "{out}"
    );
    let big = format!("Subject: big\r\n\r\n{}\r\n", "b".repeat(4000));
    assert!(server.deliver(&["gina"], big.as_bytes()).success());
    assert!(
        server
            .deliver(&["gina"], b"Subject: small\r\n\r\nnew\r\n")
            .success()
    );
    let out = fetch(
        &url,
        &maildir,
        &journal,
        &cert,
        &["--keep", "--only-new", "--max-size", "1K"],
    );
    assert!(
        out.contains("1 new of 14") && out.contains("1 too large"),
        "{out}"
    );
    assert_eq!(stat(&server, "gina"), 14, "kept, the large one too");
    let out = fetch(
        &url,
        &maildir,
        &journal,
        &cert,
        &["--keep", "--max-size", "1K", "--delete-too-large"],
    );
    assert!(
        out.contains("0 new of 14") && out.contains("1 deleted"),
        "{out}"
    );
    assert_eq!(stat(&server, "gina"), 13);
    assert_eq!(stored(&maildir).len(), 1);

    // The server loses its index (as after a migration that did not keep UIDLs): every UIDL
    // changes, and fetching would download all 13 again.
    // (A new UIDVALIDITY in the index: every default UIDL contains it.)
    let index = server
        .data_dir()
        .join("mail/_default_/gina/Maildir/dovecot-uidlist");
    let text = std::fs::read_to_string(&index).unwrap();
    let (header, rest) = text.split_once('\n').unwrap();
    let header: Vec<String> = header
        .split(' ')
        .map(|f| match f.strip_prefix('V') {
            Some(v) => format!("V{}", v.parse::<u64>().unwrap() + 1),
            None => f.to_owned(),
        })
        .collect();
    std::fs::write(&index, format!("{}\n{rest}", header.join(" "))).unwrap();
    let out = run(
        fetch_cmd(&url, &maildir, &journal, &cert, &["--keep"]),
        "pw",
    );
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("changed every UIDL") && err.contains("--accept-uidl-reset"),
        "{err}"
    );
    assert_eq!(stored(&maildir).len(), 1, "nothing fetched");
    let out = fetch(
        &url,
        &maildir,
        &journal,
        &cert,
        &["--keep", "--accept-uidl-reset"],
    );
    assert!(out.contains("13 new of 13"), "{out}");
}

/// An RFC 1939 server of the old school, as qpopper was: no CAPA, no PIPELINING, APOP only,
/// one command answered at a time. It records the commands it received.
fn old_server(messages: Vec<Vec<u8>>) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        let mut store: Vec<Option<Vec<u8>>> = messages.into_iter().map(Some).collect();
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut w = stream.try_clone().unwrap();
            let mut r = BufReader::new(stream);
            let ts = "<1896.697170952@old.example>";
            write!(w, "+OK old POP3 server ready {ts}\r\n").unwrap();
            let mut deleted = Vec::new();
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                let cmd = line.trim_end().to_owned();
                line.clear();
                seen.lock().unwrap().push(cmd.clone());
                // More input already waiting: the client did not wait for this answer.
                if !r.buffer().is_empty() {
                    seen.lock().unwrap().push("(pipelined)".into());
                }
                let mut parts = cmd.split(' ');
                let verb = parts.next().unwrap_or("").to_ascii_uppercase();
                let arg = parts.next().and_then(|n| n.parse::<usize>().ok());
                let live = |i: usize| store.get(i.wrapping_sub(1)).and_then(|m| m.as_ref());
                let reply = match (verb.as_str(), arg) {
                    ("APOP", _) if cmd.ends_with(&pop3_auth::apop::digest(ts, b"pw")) => {
                        "+OK maildrop locked\r\n".to_owned()
                    }
                    ("UIDL", None) | ("LIST", None) => {
                        let mut s = "+OK\r\n".to_owned();
                        for (i, m) in store.iter().enumerate() {
                            if let Some(m) = m {
                                if verb == "UIDL" {
                                    s.push_str(&format!("{} old-{}\r\n", i + 1, i + 1));
                                } else {
                                    s.push_str(&format!("{} {}\r\n", i + 1, m.len()));
                                }
                            }
                        }
                        s + ".\r\n"
                    }
                    ("RETR", Some(n)) if live(n).is_some() => {
                        let mut s = format!("+OK {} octets\r\n", live(n).unwrap().len());
                        for l in String::from_utf8_lossy(live(n).unwrap()).split_inclusive("\r\n") {
                            if l.starts_with('.') {
                                s.push('.');
                            }
                            s.push_str(l);
                        }
                        s + ".\r\n"
                    }
                    ("DELE", Some(n)) if live(n).is_some() => {
                        deleted.push(n - 1);
                        "+OK deleted\r\n".to_owned()
                    }
                    ("QUIT", _) => {
                        for &i in &deleted {
                            store[i] = None;
                        }
                        w.write_all(b"+OK bye\r\n").unwrap();
                        break;
                    }
                    _ => "-ERR unknown command\r\n".to_owned(),
                };
                w.write_all(reply.as_bytes()).unwrap();
            }
        }
    });
    (port, log)
}

#[test]
fn an_old_server_without_capa_or_pipelining_gets_one_command_at_a_time() {
    let messages: Vec<Vec<u8>> = (0..3)
        .map(|i| format!("Subject: {i}\r\n\r\n.dotted {i}\r\n").into_bytes())
        .collect();
    let (port, log) = old_server(messages.clone());
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("M");
    let url = format!("pop3://gus@127.0.0.1:{port}");
    let cmd = fetch_to(
        &url,
        &format!("maildir:{}", maildir.display()),
        &dir.path().join("j"),
        &["--allow-insecure"],
    );
    let out = run(cmd, "pw");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 new of 3"),
        "{out:?}"
    );
    let want: BTreeMap<Vec<u8>, usize> = messages.into_iter().map(|m| (m, 1)).collect();
    assert_eq!(stored(&maildir), want);
    // No password in clear: APOP, found in the greeting; CAPA refused, so nothing pipelined.
    let log = log.lock().unwrap().clone();
    assert!(log[1].starts_with("APOP gus "), "{log:?}");
    assert_eq!(log.iter().filter(|c| c.starts_with("RETR")).count(), 3);
    assert_eq!(log.last().map(String::as_str), Some("QUIT"));
    assert!(!log.iter().any(|c| c == "(pipelined)"), "{log:?}");
}

#[test]
fn a_hostile_server_cannot_make_the_client_hoard_memory() {
    use std::io::Write;
    // A greeting that never ends, then a server whose message is far larger than it says.
    for endless in [true, false] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let chunk = vec![b'x'; 64 * 1024];
            if endless {
                let _ = s.write_all(b"+OK ");
                for _ in 0..1024 {
                    if s.write_all(&chunk).is_err() {
                        return;
                    }
                }
                return;
            }
            let ts = "<1.2@hostile>";
            let mut r = std::io::BufReader::new(s.try_clone().unwrap());
            let _ = write!(s, "+OK hi {ts}\r\n");
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut r, &mut line).unwrap_or(0) > 0 {
                let reply: &[u8] = match line.split(' ').next().unwrap().trim() {
                    "APOP" => b"+OK\r\n",
                    "UIDL" => b"+OK\r\n1 a\r\n.\r\n",
                    "LIST" => b"+OK\r\n1 10\r\n.\r\n",
                    "RETR" => {
                        let _ = s.write_all(b"+OK\r\n");
                        for _ in 0..1024 {
                            if s.write_all(&chunk).is_err() {
                                return;
                            }
                        }
                        return;
                    }
                    _ => b"-ERR\r\n",
                };
                line.clear();
                let _ = s.write_all(reply);
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let cmd = fetch_to(
            &format!("pop3://u@127.0.0.1:{port}"),
            &format!("mbox:{}", dir.path().join("mbox").display()),
            &dir.path().join("j"),
            &["--allow-insecure"],
        );
        let out = run(cmd, "pw");
        assert_eq!(out.status.code(), Some(76), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let want = if endless {
            "longer than 65536 octets"
        } else {
            "larger than"
        };
        assert!(err.contains(want), "{err}");
        assert!(
            !dir.path().join("mbox").exists()
                || std::fs::read(dir.path().join("mbox")).unwrap().is_empty()
        );
    }
}

#[test]
fn every_step_has_a_timeout_that_names_it() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let to = format!("maildir:{}", dir.path().join("M").display());
    let timed = |url: &str, extra: &[&str]| {
        let started = std::time::Instant::now();
        let out = run(fetch_to(url, &to, &dir.path().join("j"), extra), "pw");
        (out, started.elapsed())
    };

    // A plain connection to a POP3S port: both sides wait for the other to speak first.
    let server = ServerBuilder::new().start();
    let (out, took) = timed(
        &format!("pop3://u@{}", server.pop3s),
        &["--greeting-timeout", "1", "--allow-insecure"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(
        err.contains("waiting for the greeting") && err.contains("use pop3s://"),
        "{err}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");

    // TLS to a plain POP3 port: refused at once, with the reason.
    let (out, _) = timed(
        &format!("pop3s://u@{}", server.pop3),
        &["--ca-file", server.cert().to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("answered in plain text") && err.contains("use pop3://"),
        "{err}"
    );

    // A server that greets and then says nothing more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let _ = s.write_all(b"+OK hi <1.2@silent>\r\n");
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(30));
                drop(s);
            });
        }
    });
    let (out, took) = timed(
        &format!("pop3://u@127.0.0.1:{port}"),
        &["--timeout", "1", "--allow-insecure"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(
        err.contains("waiting for the server's reply: nothing within 1 s"),
        "{err}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");

    // A host that does not answer the connection at all: a listener whose queue is full drops
    // further SYNs, as a firewall would.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let full = socket.local_addr().unwrap().as_socket().unwrap();
    let _queued: Vec<_> = (0..4)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&full, Duration::from_millis(200)).ok()
        })
        .collect();
    let (out, took) = timed(
        &format!("pop3://u@{full}"),
        &["--connect-timeout", "1", "--allow-insecure"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(
        err.contains(&format!("connecting to {full}: nothing within 1 s")),
        "{err}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// Runs `cmd` (with the password on stdin) and samples its peak resident memory (`VmHWM`) until
/// it exits: the output and the peak in KiB.
fn run_measured(mut cmd: Command, password: &str) -> (Output, u64) {
    let mut child = cmd.spawn().unwrap();
    let _ = std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        format!("{password}\n").as_bytes(),
    );
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = std::fs::read_to_string(&status_file)
            && let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kib);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (child.wait_with_output().unwrap(), peak)
}

/// A scripted server: greets with an APOP timestamp, accepts any APOP, and answers UIDL, LIST
/// and RETR with what `answer` writes (it gets the command and the socket).
fn scripted_server(answer: impl Fn(&str, &mut std::net::TcpStream) + Send + Sync + 'static) -> u16 {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer = std::sync::Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let answer = std::sync::Arc::clone(&answer);
            std::thread::spawn(move || {
                let mut r = std::io::BufReader::new(s.try_clone().unwrap());
                let _ = s.write_all(b"+OK hi <1.2@hostile>\r\n");
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    let cmd = line.trim_end().to_owned();
                    line.clear();
                    let verb = cmd.split(' ').next().unwrap_or("").to_ascii_uppercase();
                    match verb.as_str() {
                        "APOP" | "DELE" => {
                            let _ = s.write_all(b"+OK\r\n");
                        }
                        "QUIT" => {
                            let _ = s.write_all(b"+OK bye\r\n");
                            return;
                        }
                        "UIDL" | "LIST" | "RETR" => answer(&cmd, &mut s),
                        _ => {
                            let _ = s.write_all(b"-ERR no\r\n");
                        }
                    }
                }
            });
        }
    });
    port
}

/// Writes `octets` of message body (lines of 'x'), then optionally the terminator.
fn send_body(s: &mut std::net::TcpStream, octets: u64, terminate: bool) {
    use std::io::Write;
    let line = [vec![b'x'; 1022], b"\r\n".to_vec()].concat();
    let mut sent = 0;
    while sent < octets {
        if s.write_all(&line).is_err() {
            return;
        }
        sent += line.len() as u64;
    }
    if terminate {
        let _ = s.write_all(b".\r\n");
    }
}

/// Whatever a server sends, `poplar fetch` holds neither a message nor a listing beyond a
/// bound in memory: messages go to a temporary file whatever the destination, a message larger
/// than `max_size` (256 MiB by default) is never downloaded, a body larger than announced is
/// cut off, and a listing stops at a million lines or 64 MiB. docs/security.md states the bound.
#[test]
fn a_hostile_server_cannot_exhaust_the_clients_memory() {
    use std::io::Write;
    const BOUND_KIB: u64 = 200 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let mut case = 0;
    let mut fetch = |port: u16, to: &str| {
        case += 1;
        let to = match to {
            "mbox" => format!("mbox:{}", dir.path().join(format!("mbox{case}")).display()),
            "mda" => format!(
                "mda:cat > {}",
                dir.path().join(format!("mda{case}")).display()
            ),
            _ => format!("maildir:{}", dir.path().join(format!("M{case}")).display()),
        };
        let cmd = fetch_to(
            &format!("pop3://u@127.0.0.1:{port}"),
            &to,
            &dir.path().join(format!("j{case}")),
            &["--allow-insecure", "--keep"],
        );
        run_measured(cmd, "pw")
    };
    let mut peaks = Vec::new();

    // A message announced as 100 GB: left on the server, never downloaded (were it asked
    // for, the server would send a gigabyte).
    let port = scripted_server(|cmd, s| match cmd {
        "UIDL" => drop(s.write_all(b"+OK\r\n1 huge\r\n.\r\n")),
        "LIST" => drop(s.write_all(b"+OK\r\n1 100000000000\r\n.\r\n")),
        _ => {
            let _ = s.write_all(b"+OK\r\n");
            send_body(s, 1 << 30, false);
        }
    });
    let (out, peak) = fetch(port, "mbox");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("1 too large"),
        "{out:?}"
    );
    peaks.push(("LIST 1 100000000000", peak));

    // A message announced as 10 octets that goes on for a gigabyte: cut off at 2 x 10 + 1 MiB.
    let port = scripted_server(|cmd, s| match cmd {
        "UIDL" => drop(s.write_all(b"+OK\r\n1 liar\r\n.\r\n")),
        "LIST" => drop(s.write_all(b"+OK\r\n1 10\r\n.\r\n")),
        _ => {
            let _ = s.write_all(b"+OK\r\n");
            send_body(s, 1 << 30, false);
        }
    });
    for to in ["mbox", "mda"] {
        let (out, peak) = fetch(port, to);
        assert_eq!(out.status.code(), Some(76), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("larger than"),
            "{out:?}"
        );
        peaks.push(("a 10-octet message of 1 GB", peak));
    }

    // Endless UIDL lines: the listing stops at its cap.
    let port = scripted_server(|cmd, s| {
        if cmd == "UIDL" {
            let _ = s.write_all(b"+OK\r\n");
            for n in 1u64.. {
                let line = format!("{n} {}\r\n", "u".repeat(60));
                if s.write_all(line.as_bytes()).is_err() {
                    return;
                }
            }
        }
        let _ = s.write_all(b"-ERR\r\n");
    });
    let (out, peak) = fetch(port, "maildir");
    assert_eq!(out.status.code(), Some(76), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a listing of more than"),
        "{out:?}"
    );
    peaks.push(("a UIDL flood", peak));

    // A real 100 MiB message into an mbox and to a delivery command: streamed, not held.
    let port = scripted_server(|cmd, s| match cmd {
        "UIDL" => drop(s.write_all(b"+OK\r\n1 big\r\n.\r\n")),
        "LIST" => drop(s.write_all(format!("+OK\r\n1 {}\r\n.\r\n", 100 << 20).as_bytes())),
        _ => {
            let _ = s.write_all(b"+OK\r\n");
            send_body(s, 100 << 20, true);
        }
    });
    for to in ["mbox", "mda"] {
        let (out, peak) = fetch(port, to);
        assert!(out.status.success(), "{out:?}");
        peaks.push(("a 100 MiB message", peak));
    }
    // LF line ends in an mbox: one octet fewer for each of its 102 400 lines.
    let mbox = std::fs::metadata(dir.path().join(format!("mbox{}", case - 1))).unwrap();
    assert!(mbox.len() > (100 << 20) - 102_400, "{}", mbox.len());
    eprintln!("peak RSS of poplar fetch (KiB): {peaks:?}");
    for (what, peak) in peaks {
        assert!(peak < BOUND_KIB, "{what}: {peak} KiB");
    }
}

/// Mistakes in the command line or the accounts file are settings to fix: exit 78, with the
/// cause said once; and no configuration structure prints a password in its debug form.
#[test]
fn setting_mistakes_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let fetch_with = |args: &[&str]| {
        Command::new(BIN)
            .arg("fetch")
            .args(args)
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = fetch_with(&["pop3s://u@localhost", "--no-such-option"]);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let out = fetch_with(&["pop3s://u@localhost"]);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--to maildir:PATH"));
    let accounts = dir.path().join("fetch.toml");
    std::fs::write(
        &accounts,
        "[[account]]\nhost = \"h\"\nuser = \"u\"\npassword = \"hunter2\"\nto = \"maildir:/tmp/x\"\nmax_size = \"10M\"\nmax_bytes = \"ten\"\n",
    )
    .unwrap();
    let out = fetch_with(&["--config", accounts.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid size \"ten\""), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let parsed: pop3_fetch::config::FetchConfig = toml::from_str(
        "[[account]]\nhost = \"h\"\nuser = \"u\"\npassword = \"hunter2\"\nto = \"maildir:/tmp/x\"\nmax_size = \"10M\"\n",
    )
    .unwrap();
    assert_eq!(parsed.account[0].max_size, Some(10 << 20));
    let debug = format!("{parsed:?}");
    assert!(
        !debug.contains("hunter2") && debug.contains("redacted"),
        "{debug}"
    );
}
