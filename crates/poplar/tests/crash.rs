//! Crash safety, proven by fault injection: the server (or `poplar deliver`) is killed with
//! SIGKILL at random moments during (a) a QUIT that removes 1000 messages, (b) deliveries and
//! (c) index rewrites; after a restart every message is either fully present or fully gone,
//! none is duplicated, the UIDLs of survivors are unchanged, and nothing acknowledged is lost.
//! Then faults of the file system: a full disk and a read-only data directory.
//!
//! `POPLAR_CRASH_TRIALS` sets the trials per scenario (default 10, the fast subset the README's
//! test command runs; docs/security.md gives the 100-trial command). `POPLAR_CRASH_SEED`
//! replays a run. The file-system cases mount a tmpfs and so need root; set
//! `POPLAR_SKIP_ROOT_TESTS=1` to skip them where that is impossible.

#![allow(clippy::unwrap_used, clippy::print_stderr, missing_docs)]

mod common;

use common::{BIN, Client, Rng, Server, ServerBuilder, crash_trials as trials};
use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// alice's Maildir under a data directory.
fn maildir(data: &Path) -> PathBuf {
    data.join("mail/_default_/alice/Maildir")
}

/// A message whose every octet says which it is, so a partial or mixed-up copy is detected.
fn message(id: usize, size: usize) -> Vec<u8> {
    let mut m =
        format!("Subject: message {id}\r\nMessage-ID: <{id}@crash.test>\r\n\r\n").into_bytes();
    let line = format!("body of message {id:>6} {}\r\n", "x".repeat(50));
    while m.len() + line.len() < size {
        m.extend_from_slice(line.as_bytes());
    }
    m.extend_from_slice(format!("END {id}\r\n").as_bytes());
    m
}

/// The id in a message's Subject.
fn id_of(m: &[u8]) -> usize {
    let text = String::from_utf8_lossy(&m[..m.len().min(64)]);
    text.strip_prefix("Subject: message ")
        .and_then(|r| r.split("\r\n").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a test message: {text:?}"))
}

/// Writes messages straight into `new/`, named as a delivery agent would.
fn drop_into_new(data: &Path, ids: std::ops::Range<usize>, size: usize) {
    let new = maildir(data).join("new");
    std::fs::create_dir_all(&new).unwrap();
    for id in ids {
        let m = message(id, size);
        let name = format!(
            "{}.M{id}P1.crash.test,S={},W={}",
            1_700_000_000 + id,
            m.len(),
            m.len()
        );
        std::fs::write(new.join(name), &m).unwrap();
    }
}

fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .args(["-a", "--"])
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Starts a server over an existing data directory.
fn server_on(data: &Path) -> Server {
    let mut b = ServerBuilder::new();
    b.set("data_dir", data.to_str().unwrap());
    b.start()
}

/// Logs in as alice, waiting out the moment a killed server's locks take to be recognised.
fn login(server: &Server) -> Client {
    let (mut c, _) = Client::connect(server.pop3);
    let r = c.login("alice", "wonderland");
    assert!(r.starts_with("+OK Logged in"), "{r}");
    c
}

/// alice's password is accepted but her maildrop cannot be opened: `[SYS/TEMP]`.
fn login_fails_temporarily(server: &Server) {
    let (mut c, _) = Client::connect(server.pop3);
    assert_eq!(c.cmd("USER alice"), "+OK Send your password");
    assert_eq!(
        c.cmd("PASS wonderland"),
        "-ERR [SYS/TEMP] Maildrop is temporarily unavailable; try again later"
    );
}

/// The maildrop as a client sees it: message number -> (UIDL, size).
fn listing(c: &mut Client) -> BTreeMap<usize, (String, usize)> {
    assert!(c.cmd("UIDL").starts_with("+OK"));
    let uidl = String::from_utf8(c.body()).unwrap();
    assert!(c.cmd("LIST").starts_with("+OK"));
    let list = String::from_utf8(c.body()).unwrap();
    let mut out = BTreeMap::new();
    for (u, l) in uidl.lines().zip(list.lines()) {
        let (n, uid) = u.split_once(' ').unwrap();
        let (n2, size) = l.split_once(' ').unwrap();
        assert_eq!(n, n2);
        out.insert(n.parse().unwrap(), (uid.to_owned(), size.parse().unwrap()));
    }
    out
}

/// Message files in `new/` and `cur/`.
fn files_in(maildir: &Path) -> usize {
    ["new", "cur"]
        .iter()
        .map(|d| std::fs::read_dir(maildir.join(d)).unwrap().count())
        .sum()
}

/// Checks the invariants every scenario shares and returns the UIDL -> message id map:
/// UIDLs are unique, every message is complete and is the message its UIDL always named.
fn check_maildrop(
    c: &mut Client,
    known: &BTreeMap<String, usize>,
    size: usize,
) -> BTreeMap<String, usize> {
    let now = listing(c);
    let mut seen = BTreeMap::new();
    for (n, (uidl, octets)) in &now {
        assert!(c.cmd(&format!("RETR {n}")).starts_with("+OK"));
        let body = c.body();
        let id = id_of(&body);
        assert_eq!(body, message(id, size), "message {id} is damaged");
        assert_eq!(*octets, body.len(), "LIST size of message {id}");
        assert!(
            seen.insert(uidl.clone(), id).is_none(),
            "UIDL {uidl} appears twice"
        );
        if let Some(&was) = known.get(uidl) {
            assert_eq!(was, id, "UIDL {uidl} now names another message");
        }
    }
    let ids: HashSet<usize> = seen.values().copied().collect();
    assert_eq!(ids.len(), seen.len(), "a message appears twice");
    seen
}

/// Prepares a data directory with alice and `count` messages, indexed by a first login.
/// Returns the directory (kept alive by the returned TempDir) and the UIDL -> id map.
fn template(count: usize, size: usize) -> (tempfile::TempDir, BTreeMap<String, usize>) {
    let b = ServerBuilder::new();
    let data = b.data_dir();
    drop_into_new(&data, 0..count, size);
    let server = b.start();
    server.add_user("alice", "wonderland");
    let mut c = login(&server);
    let known = check_maildrop(&mut c, &BTreeMap::new(), size);
    assert_eq!(known.len(), count);
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let (status, dir) = server.stop();
    assert!(status.success());
    (dir, known)
}

/// A fresh copy of a template's data directory.
fn trial_copy(template: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&template.join("data"), dir.path());
    let data = dir.path().join("data");
    (dir, data)
}

/// Reads what arrives until EOF, an error or `within`.
fn drain(c: Client, within: Duration) -> Vec<u8> {
    let mut tcp = c.into_tcp();
    tcp.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    let _ = tcp.read_to_end(&mut got);
    got
}

#[test]
fn killed_during_a_quit_that_removes_1000_messages() {
    const SIZE: usize = 2048;
    let (template_dir, known) = template(1000, SIZE);
    let mut rng = Rng::new("quit");
    // How long a full commit takes here, to spread the kills across it.
    let window = {
        let (_dir, data) = trial_copy(template_dir.path());
        let server = server_on(&data);
        let mut c = login(&server);
        let dele: String = (1..=1000).map(|n| format!("DELE {n}\r\n")).collect();
        c.send(dele.as_bytes());
        (0..1000).for_each(|_| assert!(c.line().starts_with("+OK")));
        let start = Instant::now();
        assert!(c.cmd("QUIT").starts_with("+OK"));
        let took = start.elapsed();
        eprintln!("quit: a 1000-message commit takes {took:?}");
        took * 3 / 2
    };
    let (mut acknowledged, mut gone, mut partial) = (0, 0, 0);
    for _ in 0..trials() {
        let (_dir, data) = trial_copy(template_dir.path());
        let server = server_on(&data);
        let mut c = login(&server);
        let dele: String = (1..=1000).map(|n| format!("DELE {n}\r\n")).collect();
        c.send(dele.as_bytes());
        (0..1000).for_each(|_| assert!(c.line().starts_with("+OK")));
        c.send(b"QUIT\r\n");
        std::thread::sleep(rng.below(window));
        let _keep = server.kill();
        let reply = drain(c, Duration::from_secs(5));
        let ok = reply.starts_with(b"+OK");
        let server = server_on(&data);
        let mut c = login(&server);
        let left = check_maildrop(&mut c, &known, SIZE);
        assert!(
            left.keys().all(|u| known.contains_key(u)),
            "a message came back with a new UIDL"
        );
        assert_eq!(
            files_in(&maildir(&data)),
            left.len(),
            "files the index does not show"
        );
        if ok {
            assert!(
                left.is_empty(),
                "QUIT was acknowledged but {} remain",
                left.len()
            );
            acknowledged += 1;
        }
        match left.len() {
            0 => gone += 1,
            1000 => {}
            _ => partial += 1,
        }
    }
    eprintln!(
        "quit: {} trials; {acknowledged} acknowledged before the kill, {gone} with all removed, {partial} part-way; every survivor intact with its UIDL",
        trials()
    );
}

/// Checks alice's maildrop after deliveries of which some were killed: every message complete,
/// none twice, every acknowledged one present, each stored as RETR sends it. Returns how many
/// killed ones are present.
fn check_deliveries(
    server: &Server,
    data: &Path,
    acknowledged: &[usize],
    killed: &[usize],
    size: usize,
) -> usize {
    let mut c = login(server);
    let present: HashSet<usize> = check_maildrop(&mut c, &BTreeMap::new(), size)
        .into_values()
        .collect();
    for id in acknowledged {
        assert!(
            present.contains(id),
            "delivery {id} was acknowledged but is missing"
        );
    }
    let survived = killed.iter().filter(|id| present.contains(id)).count();
    let stored_as_sent = ["cur", "new"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(maildir(data).join(sub)).unwrap())
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().contains(",V=1")
        })
        .count();
    assert_eq!(
        stored_as_sent,
        acknowledged.len() + survived,
        "every delivery is stored as RETR sends it"
    );
    survived
}

#[test]
fn killed_during_deliveries() {
    const SIZE: usize = 256 * 1024;
    let b = ServerBuilder::new();
    let data = b.data_dir();
    let server = b.start();
    server.add_user("alice", "wonderland");
    let config = server.config.clone();
    let deliver = |id: usize| {
        let mut child = Command::new(BIN)
            .args(["deliver", "--config", config.to_str().unwrap(), "alice"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            // Every other message comes with LF line ends, as from Postfix's pipe: stored with
            // CRLF (delivery.save_crlf), so every message below is sent by sendfile.
            let mut m = message(id, SIZE);
            if id % 2 == 1 {
                m.retain(|&b| b != b'\r');
            }
            // A killed reader makes this fail; that is the point.
            let _ = stdin.write_all(&m);
        });
        (child, writer)
    };
    let mut rng = Rng::new("deliver");
    // The quickest of a few undisturbed deliveries: kills spread over [0, that) land at every
    // stage, from start-up through writing and fsync to the rename.
    let window = (0..5)
        .map(|id| {
            let start = Instant::now();
            let (mut child, writer) = deliver(id);
            assert!(child.wait().unwrap().success());
            writer.join().unwrap();
            start.elapsed()
        })
        .min()
        .unwrap();
    eprintln!("deliver: one 256 KiB delivery takes {window:?}");
    let mut acknowledged: Vec<usize> = (0..5).collect();
    let mut killed = Vec::new();
    for id in 5..5 + trials() * 3 {
        let (mut child, writer) = deliver(id);
        // Every third delivery runs undisturbed, the others are killed at a random moment.
        if id % 3 != 0 {
            std::thread::sleep(rng.below(window));
            let _ = child.kill();
        }
        let status = child.wait().unwrap();
        writer.join().unwrap();
        if status.success() {
            acknowledged.push(id);
        } else {
            killed.push(id);
        }
    }
    let survived = check_deliveries(&server, &data, &acknowledged, &killed, SIZE);
    let stray = std::fs::read_dir(maildir(&data).join("tmp"))
        .unwrap()
        .count();
    eprintln!(
        "deliver: {} deliveries, {} acknowledged (all present), {} killed ({survived} of them complete in the maildrop, the rest absent; {stray} files left in tmp/)",
        trials() * 3 + 5,
        acknowledged.len(),
        killed.len()
    );
}

#[test]
fn killed_during_an_index_rewrite() {
    const SIZE: usize = 1024;
    // 500 messages indexed, then 500 more arrive: the next login rewrites the index.
    let (template_dir, known) = template(500, SIZE);
    drop_into_new(&template_dir.path().join("data"), 500..1000, SIZE);
    let mut rng = Rng::new("index");
    let window = {
        let (_dir, data) = trial_copy(template_dir.path());
        let server = server_on(&data);
        let (mut c, _) = Client::connect(server.pop3);
        let start = Instant::now();
        assert!(c.login("alice", "wonderland").starts_with("+OK Logged in"));
        assert!(c.cmd("UIDL").starts_with("+OK"));
        c.body();
        let took = start.elapsed();
        eprintln!("index: login and UIDL with 500 new messages take {took:?}");
        took * 3 / 2
    };
    let mut shown = 0;
    for _ in 0..trials() {
        let (_dir, data) = trial_copy(template_dir.path());
        let server = server_on(&data);
        let (mut c, _) = Client::connect(server.pop3);
        c.send(b"USER alice\r\nPASS wonderland\r\nUIDL\r\n");
        std::thread::sleep(rng.below(window));
        let _keep = server.kill();
        // UIDLs the killed server showed (complete lines only) must never change.
        let got = drain(c, Duration::from_secs(5));
        let text = String::from_utf8_lossy(&got);
        let mut promised = BTreeMap::new();
        if let Some(listing) = text.split("+OK ").nth(3) {
            for line in listing.split("\r\n").skip(1) {
                if let Some((n, u)) = line.split_once(' ')
                    && let Ok(n) = n.parse::<usize>()
                    && text.contains(&format!("{line}\r\n"))
                {
                    promised.insert(n, u.to_owned());
                }
            }
        }
        shown += usize::from(!promised.is_empty());
        let server = server_on(&data);
        let mut c = login(&server);
        let now = check_maildrop(&mut c, &known, SIZE);
        assert_eq!(now.len(), 1000, "messages lost or duplicated");
        let by_number = listing(&mut c);
        for (n, uidl) in &promised {
            assert_eq!(&by_number[n].0, uidl, "message {n} changed its UIDL");
        }
        assert_eq!(files_in(&maildir(&data)), 1000);
    }
    eprintln!(
        "index: {} trials, {shown} killed after UIDLs were shown; all 1000 messages present once, old UIDLs unchanged",
        trials()
    );
}

/// Runs a command as root, for mounting.
fn sh(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", cmd])
        .status()
        .unwrap()
        .success()
}

/// A tmpfs of `size` mounted at `dir` (unmounted on drop), or `None` where tests may skip.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        if sh(&format!(
            "mount -t tmpfs -o size={size},mode=0700 tmpfs '{}'",
            dir.display()
        )) {
            return Some(Tmpfs(dir.to_owned()));
        }
        common::skip_root_test("cannot mount a tmpfs");
        None
    }

    fn remount(&self, how: &str) {
        assert!(sh(&format!(
            "mount -o remount,{how} '{}'",
            self.0.display()
        )));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = sh(&format!("umount -l '{}'", self.0.display()));
    }
}

/// Fills the file system under `dir` with a ballast file until it is full.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("ballast");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    path
}

#[test]
fn a_full_disk_gives_temporary_errors_and_loses_nothing() {
    const SIZE: usize = 64 * 1024;
    let b = ServerBuilder::new();
    let data = b.data_dir();
    let Some(_fs) = Tmpfs::mount(&data, "4m") else {
        return;
    };
    let mut server = b.start();
    server.add_user("alice", "wonderland");
    // Deliveries succeed until the disk is full; then they fail with EX_TEMPFAIL (75), so the
    // MTA retries later, and leave nothing behind.
    let mut delivered = Vec::new();
    let code = loop {
        let id = delivered.len();
        let status = server.deliver(&["alice"], &message(id, SIZE));
        if !status.success() {
            break status.code();
        }
        delivered.push(id);
        assert!(id < 200, "the 4 MiB file system never filled");
    };
    assert_eq!(code, Some(75));
    assert_eq!(
        std::fs::read_dir(maildir(&data).join("tmp"))
            .unwrap()
            .count(),
        0,
        "a failed delivery left a file in tmp/"
    );
    // With not an octet free, indexing the new messages fails: a temporary error, not a crash.
    let ballast = fill(&data);
    login_fails_temporarily(&server);
    std::fs::remove_file(&ballast).unwrap();
    let mut c = login(&server);
    let present = check_maildrop(&mut c, &BTreeMap::new(), SIZE);
    assert_eq!(present.len(), delivered.len());
    assert!(c.cmd("QUIT").starts_with("+OK"));
    // Full again: deleting still works, since removing files needs no space.
    let ballast = fill(&data);
    let mut c = login(&server);
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    std::fs::remove_file(&ballast).unwrap();
    let mut c = login(&server);
    assert_eq!(listing(&mut c).len(), delivered.len() - 1);
    assert!(server.try_wait().is_none(), "the server died");
}

#[test]
fn a_read_only_data_dir_gives_temporary_errors_and_loses_nothing() {
    const SIZE: usize = 4096;
    let b = ServerBuilder::new();
    let data = b.data_dir();
    let Some(fs) = Tmpfs::mount(&data, "16m") else {
        return;
    };
    let mut server = b.start();
    server.add_user("alice", "wonderland");
    for id in 0..5 {
        assert!(server.deliver(&["alice"], &message(id, SIZE)).success());
    }
    let mut c = login(&server);
    let before = listing(&mut c);
    assert!(c.cmd("QUIT").starts_with("+OK"));
    fs.remount("ro");
    let status = server.deliver(&["alice"], &message(99, SIZE));
    assert_eq!(status.code(), Some(75), "delivery to a read-only maildir");
    login_fails_temporarily(&server);
    fs.remount("rw");
    let mut c = login(&server);
    assert_eq!(listing(&mut c), before);
    check_maildrop(&mut c, &BTreeMap::new(), SIZE);
    assert!(server.try_wait().is_none(), "the server died");
}

/// Starts a server with an LMTP listener over an existing data directory; returns it and the
/// LMTP address.
fn lmtp_server_on(data: &Path) -> (Server, String) {
    let mut b = ServerBuilder::new();
    b.set("data_dir", data.to_str().unwrap());
    b.lmtp();
    let server = b.start();
    let addr = server.lmtp_addr();
    (server, addr)
}

/// Delivers message `id` over LMTP; true when the server acknowledged it after DATA.
fn lmtp_deliver(addr: &str, id: usize, size: usize) -> bool {
    use std::io::BufReader;
    let attempt = || -> std::io::Result<bool> {
        let stream = std::net::TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut w = stream.try_clone()?;
        let mut r = BufReader::new(stream);
        // The last of `n` replies ("" when the connection closed first).
        let replies = |n: usize, r: &mut BufReader<std::net::TcpStream>| {
            let mut last = String::new();
            for _ in 0..n {
                last = common::smtp_reply(r);
            }
            Ok::<_, std::io::Error>(last)
        };
        replies(1, &mut r)?;
        w.write_all(
            b"LHLO crash.test\r\nMAIL FROM:<s@x>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n",
        )?;
        let data = replies(4, &mut r)?;
        if !data.starts_with("354") {
            eprintln!("lmtp delivery {id}: {data:?}");
            return Ok(false);
        }
        w.write_all(&message(id, size))?;
        w.write_all(b".\r\n")?;
        Ok(replies(1, &mut r)?.starts_with("250"))
    };
    attempt().unwrap_or_else(|e| {
        eprintln!("lmtp delivery {id}: {e}");
        false
    })
}

#[test]
fn lmtp_server_killed_during_deliveries() {
    const SIZE: usize = 256 * 1024;
    let b = ServerBuilder::new();
    let data = b.data_dir();
    let server = b.start();
    server.add_user("alice", "wonderland");
    // The data directory lives in the first server's directory: keep it.
    let (_, _data_home) = server.stop();
    let (mut server, mut addr) = lmtp_server_on(&data);
    let window = (0..3)
        .map(|id| {
            let start = Instant::now();
            assert!(lmtp_deliver(&addr, id, SIZE));
            start.elapsed()
        })
        .min()
        .unwrap();
    eprintln!("lmtp: one 256 KiB delivery takes {window:?}");
    let mut rng = Rng::new("lmtp");
    let mut acknowledged: Vec<usize> = (0..3).collect();
    let mut killed = Vec::new();
    for id in 3..3 + trials() {
        let target = addr.clone();
        let sender = std::thread::spawn(move || lmtp_deliver(&target, id, SIZE));
        std::thread::sleep(rng.below(window * 2));
        let _keep = server.kill();
        if sender.join().unwrap() {
            acknowledged.push(id);
        } else {
            killed.push(id);
        }
        (server, addr) = lmtp_server_on(&data);
    }
    let survived = check_deliveries(&server, &data, &acknowledged, &killed, SIZE);
    let spools = std::fs::read_dir(data.join("tmp")).unwrap().count();
    assert_eq!(
        spools, 0,
        "spools of killed servers are removed at the next start"
    );
    eprintln!(
        "lmtp: {} deliveries, {} acknowledged (all present), {} cut by the kill ({survived} of them complete in the maildrop, the rest absent); no partial message, no spool left",
        trials() + 3,
        acknowledged.len(),
        killed.len()
    );
}
