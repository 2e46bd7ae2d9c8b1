//! Migration that keeps every UIDL, with real parts: Debian's Dovecot serves a Maildir, mpop and
//! fetchmail (keeping mail on the server) download it, `poplar migrate` moves it (from the
//! Maildir on disk, and live over POP3S), Poplar takes over the same address, and the same
//! clients download nothing again; a new message is then the only one they fetch. Courier's
//! `courierpop3dsizelist` and X-UIDL headers are read from Maildirs written in their formats.
//! The same moves into the PostgreSQL store, from disk and live.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;
#[path = "../../pop3-store-postgres/tests/pg/mod.rs"]
mod pg;

use common::dovecot::{Dovecot, uidls};
use common::{ServerBuilder, corpus};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The old server's world: its mail root (served by Dovecot as `nobody`) and the clients'
/// state directories.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("chmod").arg("755").arg(dir.path()));
        let world = World { dir };
        let maildir = world.old_maildir();
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(maildir.join(sub)).unwrap();
        }
        for (i, (_, m)) in corpus().into_iter().enumerate() {
            let (sub, flags) = if i % 3 == 0 {
                ("cur", ":2,S")
            } else {
                ("new", "")
            };
            let name = format!(
                "{}.M{i}P100.old.example,S={}{flags}",
                1_700_000_000 + i,
                m.len()
            );
            std::fs::write(maildir.join(sub).join(name), m).unwrap();
        }
        world.give_to_mail_user();
        world
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn old_root(&self) -> PathBuf {
        self.path().join("old")
    }

    fn old_maildir(&self) -> PathBuf {
        self.old_root().join("_default_/alice/Maildir")
    }

    fn give_to_mail_user(&self) {
        run(Command::new("chown")
            .args(["-R", "nobody:nogroup"])
            .arg(self.old_root()));
    }

    /// Adds a message to the old Maildir, as the old server's delivery agent would.
    fn deliver_old(&self, n: usize) {
        let name = format!("{}.M99P100.old.example", 1_800_000_000 + n);
        std::fs::write(
            self.old_maildir().join("new").join(name),
            format!("Subject: late {n}\r\n\r\narrived before the switch\r\n"),
        )
        .unwrap();
        self.give_to_mail_user();
    }

    /// A self-signed certificate for `localhost`, for Dovecot and then Poplar.
    fn certificate(&self) -> (PathBuf, PathBuf) {
        common::dovecot::certificate(self.path())
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How a client reaches the server: plain POP3 (Dovecot and Poplar both allow plaintext logins
/// from loopback) or POP3S with this certificate.
#[derive(Clone, Copy)]
enum Reach<'a> {
    Plain(u16),
    Pop3s(u16, &'a Path),
}

/// Runs mpop with keep on; returns how many messages it delivered in this run.
fn mpop(world: &World, reach: Reach<'_>) -> usize {
    let state = world.path().join("mpop");
    let maildir = state.join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let tls = match reach {
        Reach::Plain(port) => format!("tls off\nhost 127.0.0.1\nport {port}\n"),
        Reach::Pop3s(port, cert) => format!(
            "tls on\ntls_starttls off\ntls_trust_file {}\nhost localhost\nport {port}\n",
            cert.display()
        ),
    };
    let rc = state.join("mpoprc");
    let before = std::fs::read_dir(maildir.join("new")).unwrap().count();
    let (ok, text) = common::mpop(
        &rc,
        &format!(
            "account old\n{tls}user alice\npassword pw\nauth plain\nkeep on\n\
             uidls_file {}/uidls\ndelivery maildir {}\n",
            state.display(),
            maildir.display()
        ),
        "old",
    );
    assert!(ok, "mpop: {text}");
    std::fs::read_dir(maildir.join("new")).unwrap().count() - before
}

/// Runs fetchmail with keep and client-side UIDLs; returns how many messages it delivered.
fn fetchmail(world: &World, reach: Reach<'_>) -> usize {
    let home = world.path().join("fetchmail");
    let out_dir = home.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let (host, port, tls) = match reach {
        Reach::Plain(port) => ("127.0.0.1", port, "sslproto ''".to_owned()),
        Reach::Pop3s(port, cert) => (
            "localhost",
            port,
            format!("ssl sslcertck sslcertfile {}", cert.display()),
        ),
    };
    let before = std::fs::read_dir(&out_dir).unwrap().count();
    let ids = home.join("fetchids");
    let (code, text) = common::fetchmail(
        &home,
        &format!(
            "poll {host} service {port} protocol POP3 uidl auth password user alice password pw \
             is root keep {tls} mda \"cat > {}/m.$$\"\n",
            out_dir.display()
        ),
        &["-i".as_ref(), ids.as_os_str()],
    );
    // 0: mail delivered, 1: no mail.
    assert!(matches!(code, Some(0 | 1)), "fetchmail: {text}");
    std::fs::read_dir(&out_dir).unwrap().count() - before
}

/// A Poplar configuration (not started yet) with alice as a user.
fn poplar(world: &World) -> ServerBuilder {
    let b = ServerBuilder::new();
    let data = b.data_dir();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("users"), "alice:{PLAIN}pw\n").unwrap();
    let _ = world;
    b
}

/// Runs `poplar migrate` with these arguments (and the password on stdin); returns its output.
fn migrate(config: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new(common::BIN);
    cmd.arg("migrate")
        .args(args)
        .args(["--to", "alice", "--config", config.to_str().unwrap()]);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // A migration from disk never reads the password: it may be gone before it is written.
    let _ = std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"pw\n");
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "migrate {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Waits until nothing listens on `port` any more (Dovecot stops asynchronously).
fn wait_port_free(port: u16) {
    common::eventually(
        Duration::from_secs(10),
        "the old server's port to be free",
        || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .is_err()
                .then_some(())
        },
    );
}

#[test]
fn clients_download_nothing_again_after_an_on_disk_migration_from_dovecot() {
    let world = World::new();
    let dovecot = Dovecot::start(world.path(), &world.old_root(), "");
    let port = dovecot.port;
    let addr = ([127, 0, 0, 1], port).into();
    let messages = corpus().len();
    assert_eq!(mpop(&world, Reach::Plain(port)), messages);
    assert_eq!(fetchmail(&world, Reach::Plain(port)), messages);
    assert_eq!(mpop(&world, Reach::Plain(port)), 0);
    let old_uidls = uidls(addr, "alice", "pw");
    drop(dovecot);
    wait_port_free(port);

    let mut b = poplar(&world);
    b.set(
        "listen.pop3",
        toml::Value::Array(vec![format!("127.0.0.1:{port}").into()]),
    );
    let config = b.write_config();
    let source = format!("maildir:{}", world.old_maildir().display());
    let dry = migrate(&config, &[&source, "--dry-run"]);
    assert!(
        dry.contains(&format!("{messages} messages at the source, {messages} to import, 0 already here; 0 would be downloaded again")),
        "{dry}"
    );
    let done = migrate(&config, &[&source]);
    assert!(done.contains(&format!("{messages} imported")), "{done}");
    assert!(done.contains("messages/s"), "{done}");
    // Again: nothing to do.
    let again = migrate(&config, &[&source]);
    assert!(
        again.contains(&format!("0 imported, {messages} already here")),
        "{again}"
    );

    let server = b.start();
    assert_eq!(
        uidls(addr, "alice", "pw"),
        old_uidls,
        "Poplar shows other UIDLs"
    );
    assert_eq!(mpop(&world, Reach::Plain(port)), 0, "mpop downloaded again");
    assert_eq!(
        fetchmail(&world, Reach::Plain(port)),
        0,
        "fetchmail downloaded again"
    );
    assert!(
        server
            .deliver(&["alice"], b"Subject: new\r\n\r\nafter the switch\r\n")
            .success()
    );
    assert_eq!(mpop(&world, Reach::Plain(port)), 1);
    assert_eq!(fetchmail(&world, Reach::Plain(port)), 1);
    // The source was left as it was.
    assert_eq!(
        ["new", "cur"]
            .iter()
            .map(|s| std::fs::read_dir(world.old_maildir().join(s))
                .unwrap()
                .count())
            .sum::<usize>(),
        messages
    );
}

#[test]
fn dovecot_uidl_formats_and_saved_uidls_are_kept() {
    for format in ["%f", "%g", "%v.%u", "UID%u-%v"] {
        let world = World::new();
        let dovecot = Dovecot::start(
            world.path(),
            &world.old_root(),
            &format!("pop3_uidl_format = {format}"),
        );
        let old = uidls(([127, 0, 0, 1], dovecot.port).into(), "alice", "pw");
        drop(dovecot);
        // A UIDL saved by an earlier migration (Dovecot's P field) wins over the format.
        let index = world.old_maildir().join("dovecot-uidlist");
        let text = std::fs::read_to_string(&index).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines[1] = lines[1].replacen(' ', " Psaved-by-an-old-migration ", 1);
        std::fs::write(&index, lines.join("\n") + "\n").unwrap();
        let b = poplar(&world);
        let config = b.write_config();
        let source = format!("maildir:{}", world.old_maildir().display());
        migrate(&config, &[&source, "--uidl-format", format]);
        let server = b.start();
        let mut expected = old.clone();
        expected[0] = "saved-by-an-old-migration".into();
        assert_eq!(
            uidls(server.pop3, "alice", "pw"),
            expected,
            "format {format}"
        );
    }
}

#[test]
fn live_migration_over_pop3s_is_incremental_and_keeps_uidls() {
    let world = World::new();
    let (cert, key) = world.certificate();
    let dovecot = Dovecot::start_with_tls(
        world.path(),
        &world.old_root(),
        "pop3_uidl_format = %f",
        Some((&cert, &key)),
    );
    let pop3s = dovecot.pop3s_port.unwrap();
    let messages = corpus().len();
    assert_eq!(mpop(&world, Reach::Pop3s(pop3s, &cert)), messages);
    assert_eq!(fetchmail(&world, Reach::Pop3s(pop3s, &cert)), messages);

    let mut b = poplar(&world);
    b.set("tls.cert", cert.to_str().unwrap());
    b.set("tls.key", key.to_str().unwrap());
    b.set(
        "listen.pop3s",
        toml::Value::Array(vec![format!("127.0.0.1:{pop3s}").into()]),
    );
    let config = b.write_config();
    let url = format!("pop3s://alice@localhost:{pop3s}");
    let ca = ["--password-stdin", "--ca-file", cert.to_str().unwrap()];
    let dry = migrate(&config, &[&[url.as_str(), "--dry-run"][..], &ca].concat());
    assert!(
        dry.contains(&format!("{messages} messages at the source, {messages} to import, 0 already here; 0 would be downloaded again")),
        "{dry}"
    );
    let done = migrate(&config, &[&[url.as_str()][..], &ca].concat());
    assert!(done.contains(&format!("{messages} imported")), "{done}");
    // Mail keeps arriving at the old server until the switch: a second run takes only that.
    world.deliver_old(1);
    let again = migrate(&config, &[&[url.as_str()][..], &ca].concat());
    assert!(
        again.contains(&format!("1 imported, {messages} already here")),
        "{again}"
    );
    let old_uidls = uidls(([127, 0, 0, 1], dovecot.port).into(), "alice", "pw");
    // The old server still has everything: migration deletes nothing.
    assert_eq!(old_uidls.len(), messages + 1);
    drop(dovecot);
    wait_port_free(pop3s);

    let server = b.start();
    assert_eq!(uidls(server.pop3, "alice", "pw"), old_uidls);
    // The message that arrived late was never fetched by the clients: it is the only new one.
    assert_eq!(mpop(&world, Reach::Pop3s(pop3s, &cert)), 1);
    assert_eq!(fetchmail(&world, Reach::Pop3s(pop3s, &cert)), 1);
    assert_eq!(mpop(&world, Reach::Pop3s(pop3s, &cert)), 0);
    assert!(
        server
            .deliver(&["alice"], b"Subject: new\r\n\r\nafter the switch\r\n")
            .success()
    );
    assert_eq!(mpop(&world, Reach::Pop3s(pop3s, &cert)), 1);
    assert_eq!(fetchmail(&world, Reach::Pop3s(pop3s, &cert)), 1);
}

#[test]
fn courier_and_x_uidl_maildirs_keep_their_uidls() {
    let world = World::new();
    let maildir = world.old_maildir();
    // Courier 0.43+ lists "<file name> <size> <uid>:<uidvalidity>:<utf8>" after a version header.
    let mut names: Vec<String> = ["new", "cur"]
        .iter()
        .flat_map(|s| std::fs::read_dir(maildir.join(s)).unwrap())
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut list = String::from("/3 100 1600000000\n");
    // The last message is not in the list: Courier never showed it to a client.
    for (i, name) in names[..names.len() - 1].iter().enumerate() {
        list.push_str(&format!("{name} 100 {}:1600000000:0\n", 10 + i));
    }
    std::fs::write(maildir.join("courierpop3dsizelist"), list).unwrap();
    let b = poplar(&world);
    let config = b.write_config();
    let source = format!("maildir:{}", maildir.display());
    migrate(&config, &[&source]);
    let server = b.start();
    let got = uidls(server.pop3, "alice", "pw");
    assert_eq!(got.len(), names.len());
    for (i, uidl) in got[..names.len() - 1].iter().enumerate() {
        assert_eq!(uidl, &format!("UID{}-1600000000", 10 + i));
    }
    assert_eq!(
        got.last().unwrap().len(),
        16,
        "new mail gets Poplar's own UIDL"
    );
    drop(server);

    // qpopper's X-UIDL header.
    let world = World::new();
    let dir = world.old_maildir().join("new");
    for (i, uidl) in ["3f6a2b9c0000a1", "c0ffee-42"].iter().enumerate() {
        std::fs::write(
            dir.join(format!("1900000000.M{i}.q")),
            format!("X-UIDL: {uidl}\r\nSubject: {i}\r\n\r\nbody X-UIDL: not-a-header\r\n"),
        )
        .unwrap();
    }
    let b = poplar(&world);
    let config = b.write_config();
    let out = migrate(
        &config,
        &[
            &format!("maildir:{}", world.old_maildir().display()),
            "--format",
            "x-uidl",
        ],
    );
    assert!(out.contains("0 would be downloaded again"), "{out}");
    let server = b.start();
    let got = uidls(server.pop3, "alice", "pw");
    assert!(got.contains(&"3f6a2b9c0000a1".to_owned()), "{got:?}");
    assert!(got.contains(&"c0ffee-42".to_owned()), "{got:?}");
}

/// Sends one message to `rcpt` over LMTP at `addr`, as Postfix would.
fn lmtp_deliver(addr: &str, rcpt: &str, message: &str) {
    use std::io::Write;
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = std::io::BufReader::new(stream);
    assert!(common::smtp_reply(&mut r).starts_with("220"));
    for (command, want) in [
        ("LHLO mx.test".to_owned(), "250"),
        ("MAIL FROM:<sender@example.net>".to_owned(), "250"),
        (format!("RCPT TO:<{rcpt}>"), "250"),
        ("DATA".to_owned(), "354"),
        (format!("{message}\r\n."), "250"),
        ("QUIT".to_owned(), "221"),
    ] {
        write!(w, "{command}\r\n").unwrap();
        let reply = common::smtp_reply(&mut r);
        assert!(reply.starts_with(want), "{command}: {reply}");
    }
}

/// The first line of each message a client stored, sorted: what it holds, not how many.
fn subjects_in(dir: &Path) -> Vec<String> {
    let mut subjects: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
            text.lines()
                .find(|l| l.starts_with("Subject:"))
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    subjects.sort();
    subjects
}

/// A target maildrop that received mail over LMTP before the migration, with an index whose
/// UIDVALIDITY is the old server's (both created in the same second): its first messages serve
/// the very UIDLs of the old server's first messages. The imported messages keep their UIDLs
/// (the clients know them by them) and the LMTP messages get new ones: the clients download
/// those once, and no message is hidden from any of them.
#[test]
fn a_migration_never_hides_a_message_behind_a_colliding_uidl() {
    let world = World::new();
    let (cert, key) = world.certificate();
    let dovecot = Dovecot::start_with_tls(world.path(), &world.old_root(), "", Some((&cert, &key)));
    let (port, pop3s) = (dovecot.port, dovecot.pop3s_port.unwrap());
    let messages = corpus().len();
    assert_eq!(mpop(&world, Reach::Plain(port)), messages);
    assert_eq!(fetchmail(&world, Reach::Plain(port)), messages);
    let old_uidls = uidls(([127, 0, 0, 1], port).into(), "alice", "pw");
    let source_index =
        std::fs::read_to_string(world.old_maildir().join("dovecot-uidlist")).unwrap();
    let validity = source_index
        .split_whitespace()
        .find_map(|f| f.strip_prefix('V'))
        .unwrap()
        .to_owned();

    // The new server, before the migration: its index has the same UIDVALIDITY, and two
    // messages arrive over LMTP.
    let mut b = poplar(&world);
    b.lmtp();
    let target = b.data_dir().join("mail/_default_/alice/Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(target.join(sub)).unwrap();
    }
    std::fs::write(
        target.join("dovecot-uidlist"),
        format!("3 V{validity} N1 G0123456789abcdef0123456789abcdef\n"),
    )
    .unwrap();
    let config = b.write_config();
    let early = b.start();
    for n in 1..=2 {
        lmtp_deliver(
            &early.lmtp_addr(),
            "alice",
            &format!("Subject: arrived early {n}\r\n\r\nbefore the migration"),
        );
    }
    let early_uidls = uidls(early.pop3, "alice", "pw");
    assert_eq!(
        early_uidls[..],
        old_uidls[..2],
        "the collision this test is about"
    );
    let (_, kept) = early.stop();
    let data_dir = kept.path().join("data");

    let url = format!("pop3s://alice@localhost:{pop3s}");
    let ca = ["--password-stdin", "--ca-file", cert.to_str().unwrap()];
    let dry = migrate(&config, &[&[url.as_str(), "--dry-run"][..], &ca].concat());
    assert!(
        dry.contains(&format!(
            "{messages} to import, 0 already here; 0 would be downloaded again"
        )),
        "{dry}"
    );
    assert!(
        dry.contains("2 message(s) already here had the UIDL of a message to import"),
        "{dry}"
    );
    let on_disk = format!("maildir:{}", world.old_maildir().display());
    let dry_disk = migrate(&config, &[&on_disk, "--dry-run"]);
    assert!(
        dry_disk.contains("2 message(s) already here had the UIDL"),
        "{dry_disk}"
    );
    let done = migrate(&config, &[&[url.as_str()][..], &ca].concat());
    assert!(done.contains(&format!("{messages} imported")), "{done}");
    let again = migrate(&config, &[&[url.as_str()][..], &ca].concat());
    assert!(
        again.contains(&format!("0 imported, {messages} already here")),
        "{again}"
    );
    drop(dovecot);
    wait_port_free(port);

    let mut b = ServerBuilder::new();
    b.set("data_dir", data_dir.to_str().unwrap());
    b.set(
        "listen.pop3",
        toml::Value::Array(vec![format!("127.0.0.1:{port}").into()]),
    );
    let server = b.start();
    let now = uidls(server.pop3, "alice", "pw");
    assert_eq!(now.len(), messages + 2);
    for uidl in &old_uidls {
        assert!(now.contains(uidl), "{uidl} was not kept: {now:?}");
    }
    // Each client fetches exactly the two messages it has never seen, and then holds every one.
    assert_eq!(mpop(&world, Reach::Plain(port)), 2);
    assert_eq!(fetchmail(&world, Reach::Plain(port)), 2);
    for held in [
        subjects_in(&world.path().join("mpop/Maildir/new")),
        subjects_in(&world.path().join("fetchmail/out")),
    ] {
        assert_eq!(held.len(), messages + 2);
        for n in 1..=2 {
            assert!(
                held.contains(&format!("Subject: arrived early {n}")),
                "{held:?}"
            );
        }
    }
}

/// Whoever owns the source Maildir cannot make a migration read other files: a link to the
/// users file, a link to /dev/zero, a FIFO and an oversized file are each refused and
/// reported, the real messages are imported, and nothing of the users file reaches a maildrop.
#[test]
fn a_hostile_source_maildir_cannot_make_the_migration_read_other_files() {
    let world = World::new();
    let mut b = poplar(&world);
    b.set("limits.max_message_size", "8M");
    let users = b.data_dir().join("users");
    std::fs::write(&users, "alice:{PLAIN}pw\ncarol:{PLAIN}carols-secret\n").unwrap();
    let new = world.old_maildir().join("new");
    std::os::unix::fs::symlink(&users, new.join("1800000001.M1.evil")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", new.join("1800000002.M2.evil")).unwrap();
    let fifo = new.join("1800000003.M3.evil");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(new.join("1800000004.M4.big"), vec![b'x'; 9 << 20]).unwrap();
    let config = b.write_config();
    let source = format!("maildir:{}", world.old_maildir().display());
    let messages = corpus().len();
    let run = |extra: &[&str]| {
        let out = Command::new(common::BIN)
            .arg("migrate")
            .arg(&source)
            .args(["--to", "carol", "--format", "x-uidl", "--config"])
            .arg(&config)
            .args(extra)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dry = run(&["--dry-run"]);
    assert!(
        dry.contains("4 file(s) of the source were refused"),
        "{dry}"
    );
    let done = run(&[]);
    for (name, why) in [
        ("M1.evil", "a symbolic link"),
        ("M2.evil", "a symbolic link"),
        ("M3.evil", "a FIFO"),
        ("M4.big", "more than limits.max_message_size"),
    ] {
        assert!(
            done.lines()
                .any(|l| l.starts_with("refused") && l.contains(name) && l.contains(why)),
            "{name}: {done}"
        );
    }
    assert!(done.contains(&format!("{messages} imported")), "{done}");
    let server = b.start();
    let (mut c, _) = common::Client::connect(server.pop3);
    assert!(
        c.login("carol", "carols-secret")
            .starts_with(&format!("+OK Logged in, maildrop has {messages} "))
    );
    for n in 1..=messages {
        assert!(c.cmd(&format!("RETR {n}")).starts_with("+OK"));
        let body = String::from_utf8_lossy(&c.body()).into_owned();
        assert!(
            !body.contains("{PLAIN}"),
            "message {n} holds the users file"
        );
    }
    c.cmd("QUIT");
}

/// A Dovecot installation moves into the PostgreSQL store, one command per user: alice from the
/// Maildir on disk, bob live over POP3S (incrementally); clients that kept mail at Dovecot
/// download nothing again from the PostgreSQL node, and a repeated run imports nothing.
#[test]
fn an_installation_moves_from_dovecot_into_postgresql_keeping_every_uidl() {
    let world = World::new();
    let (cert, key) = world.certificate();
    let dovecot = Dovecot::start_with_tls(world.path(), &world.old_root(), "", Some((&cert, &key)));
    let (port, pop3s) = (dovecot.port, dovecot.pop3s_port.unwrap());
    let addr = ([127, 0, 0, 1], port).into();
    let messages = corpus().len();
    assert_eq!(mpop(&world, Reach::Plain(port)), messages);
    assert_eq!(fetchmail(&world, Reach::Plain(port)), messages);
    let old_uidls = uidls(addr, "alice", "pw");

    let pg = pg::Pg::start();
    let mut b = ServerBuilder::new();
    b.set("store.backend", "postgres");
    b.set("store.url", pg.url());
    b.set("tls.cert", cert.to_str().unwrap());
    b.set("tls.key", key.to_str().unwrap());
    let config = b.write_config();
    let poplar = |args: &[&str], input: &[u8]| {
        let mut cmd = Command::new(common::BIN);
        cmd.args(args).args(["--config", config.to_str().unwrap()]);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let _ = std::io::Write::write_all(&mut child.stdin.take().unwrap(), input);
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "poplar {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    poplar(&["db", "init"], b"");
    poplar(&["user", "add", "alice", "--password-stdin"], b"pw\n");
    poplar(&["user", "add", "bob", "--password-stdin"], b"pw\n");
    // Alice from the Maildir on disk.
    let source = format!("maildir:{}", world.old_maildir().display());
    let dry = poplar(&["migrate", &source, "--to", "alice", "--dry-run"], b"");
    assert!(
        dry.contains(&format!("{messages} messages at the source, {messages} to import, 0 already here; 0 would be downloaded again")),
        "{dry}"
    );
    let done = poplar(&["migrate", &source, "--to", "alice"], b"");
    assert!(done.contains(&format!("{messages} imported")), "{done}");
    let again = poplar(&["migrate", &source, "--to", "alice"], b"");
    assert!(
        again.contains(&format!("0 imported, {messages} already here")),
        "{again}"
    );
    // Bob's clients know alice's mail under Dovecot's UIDLs too (the live source logs in as
    // alice): migrated live, then once more after mail arrived at the old server.
    let url = format!("pop3s://alice@localhost:{pop3s}");
    let live = |extra: &[&str]| {
        let args = [
            &["migrate", url.as_str(), "--to", "bob", "--password-stdin"][..],
            &["--ca-file", cert.to_str().unwrap()],
            extra,
        ]
        .concat();
        poplar(&args, b"pw\n")
    };
    assert!(live(&[]).contains(&format!("{messages} imported")));
    world.deliver_old(1);
    let again = live(&[]);
    assert!(
        again.contains(&format!("1 imported, {messages} already here")),
        "{again}"
    );
    let old_uidls_now = uidls(addr, "alice", "pw");
    drop(dovecot);
    wait_port_free(port);

    b.set(
        "listen.pop3",
        toml::Value::Array(vec![format!("127.0.0.1:{port}").into()]),
    );
    let server = b.start();
    assert_eq!(
        uidls(addr, "bob", "pw"),
        old_uidls_now,
        "bob's UIDLs changed"
    );
    assert_eq!(
        uidls(addr, "alice", "pw"),
        old_uidls,
        "alice's UIDLs changed"
    );
    assert_eq!(mpop(&world, Reach::Plain(port)), 0, "mpop downloaded again");
    assert_eq!(
        fetchmail(&world, Reach::Plain(port)),
        0,
        "fetchmail downloaded again"
    );
    assert!(
        server
            .deliver(&["alice"], b"Subject: new\r\n\r\nafter the switch\r\n")
            .success()
    );
    assert_eq!(mpop(&world, Reach::Plain(port)), 1);
    assert_eq!(fetchmail(&world, Reach::Plain(port)), 1);
}
