//! Several `poplar serve` nodes on one PostgreSQL (Debian's, started by the test): `poplar db
//! init`, deliveries through any node seen by every node under the same UIDLs, `[IN-USE]`
//! across nodes, a node killed with SIGKILL releasing its maildrop at once, QUIT's deletions
//! seen everywhere, and real clients (mpop, fetchmail) keeping mail on the server through a
//! real HAProxy that spreads them over the nodes.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;
#[path = "../../pop3-store-postgres/tests/pg/mod.rs"]
mod pg;

use common::{BIN, Client, ServerBuilder, run_with_stdin};
use std::process::Command;
use std::time::{Duration, Instant};

fn node_builder(pg: &pg::Pg) -> ServerBuilder {
    let mut b = ServerBuilder::new();
    b.set("store.backend", "postgres");
    b.set("store.url", pg.url());
    b
}

fn db_init(config: &std::path::Path) -> String {
    let out = Command::new(BIN)
        .args(["db", "init", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "poplar db init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn uidls(c: &mut Client) -> Vec<String> {
    assert!(c.cmd("UIDL").starts_with("+OK"));
    String::from_utf8(c.body())
        .unwrap()
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap().to_owned())
        .collect()
}

/// Adds a user through `node` and waits until `node` has it: users live in the database, and a
/// node learns of a new one a few milliseconds after the command returns.
fn add_user(node: &common::Server, name: &str, password: &str) {
    node.add_user(name, password);
    common::eventually(Duration::from_secs(5), "the new user on the node", || {
        let (mut c, _) = Client::connect(node.pop3);
        let ok = c.login(name, password).starts_with("+OK");
        c.cmd("QUIT");
        ok.then_some(())
    });
}

fn login(node: &common::Server) -> (Client, String) {
    let (mut c, greeting) = Client::connect(node.pop3);
    assert!(greeting.starts_with("+OK"), "{greeting}");
    let reply = c.login("alice", "wonderland");
    (c, reply)
}

#[test]
fn three_nodes_share_one_postgres() {
    let pg = pg::Pg::start();
    let first = node_builder(&pg);
    // A node refuses a database without the schema, naming the command that makes it.
    let config = first.write_config();
    let out = Command::new(BIN)
        .args(["check-config", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && said.contains("poplar db init"),
        "{said}"
    );
    assert!(db_init(&config).contains("created Poplar's schema"));
    assert!(db_init(&config).contains("nothing to do"));
    let nodes: Vec<common::Server> = [first, node_builder(&pg), node_builder(&pg)]
        .into_iter()
        .map(ServerBuilder::start)
        .collect();
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    // Users live in the database: added through one node, known to all.
    add_user(a, "alice", "wonderland");
    assert!(
        !run_with_stdin(
            c.poplar(&["user", "add", "alice", "--password-stdin"]),
            b"x\n"
        )
        .success(),
        "a user added twice"
    );
    // Delivered through node A (poplar deliver, with a Return-Path from the envelope)...
    assert!(
        a.deliver(&["alice"], b"Subject: one\r\n\r\nfirst\r\n")
            .success()
    );
    assert!(
        a.deliver(&["alice"], b"Subject: two\n\nsecond, bare LF\n")
            .success()
    );
    // ...listed on B and C with the same UIDLs and sizes.
    let (mut on_b, reply) = login(b);
    assert!(reply.starts_with("+OK Logged in"), "{reply}");
    let seen = uidls(&mut on_b);
    assert_eq!(seen.len(), 2);
    assert!(on_b.cmd("LIST 2").ends_with(&format!(
        " {}",
        "Subject: two\r\n\r\nsecond, bare LF\r\n".len()
    )));
    assert!(on_b.cmd("RETR 2").starts_with("+OK"));
    assert_eq!(on_b.body(), b"Subject: two\r\n\r\nsecond, bare LF\r\n");
    // One session per maildrop across the cluster.
    let (_, refused) = login(c);
    assert!(refused.starts_with("-ERR [IN-USE]"), "{refused}");
    // Node B dies with the session open: its maildrop is free for C at once, and nothing of
    // B's session is applied.
    assert!(on_b.cmd("DELE 1").starts_with("+OK"));
    let mut nodes = nodes.into_iter();
    let (a, b, c) = (
        nodes.next().unwrap(),
        nodes.next().unwrap(),
        nodes.next().unwrap(),
    );
    b.kill();
    let died = Instant::now();
    let mut on_c = loop {
        let (client, reply) = login(&c);
        if reply.starts_with("+OK Logged in") {
            break client;
        }
        assert!(
            reply.starts_with("-ERR [IN-USE]") && died.elapsed() < Duration::from_secs(2),
            "after {:?}: {reply}",
            died.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "node killed with SIGKILL: maildrop free on another node after {:?}",
        died.elapsed()
    );
    assert_eq!(uidls(&mut on_c), seen, "a UIDL changed or a message went");
    // QUIT's deletions on C are seen by A.
    assert!(on_c.cmd("DELE 1").starts_with("+OK"));
    assert!(on_c.cmd("QUIT").starts_with("+OK"));
    let (mut on_a, reply) = login(&a);
    assert!(reply.starts_with("+OK Logged in"), "{reply}");
    assert_eq!(uidls(&mut on_a), seen[1..]);
    assert!(on_a.cmd("QUIT").starts_with("+OK"));
}

/// A database that cannot be reached is named by every command that needs it, and `deliver`
/// asks the MTA to retry. (`serve` waits for it: the next test.)
#[test]
fn an_unreachable_database_is_named_by_every_command() {
    let mut b = ServerBuilder::new();
    b.set("store.backend", "postgres");
    b.set("store.url", "postgres://poplar@127.0.0.1:1/none");
    b.set("pop3.expire", 30);
    let config = b.write_config();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .args(["--config", config.to_str().unwrap()])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            said.contains("database none on 127.0.0.1"),
            "{args:?}: {said}"
        );
        out.status.code()
    };
    run(&["check-config"]);
    run(&["user", "list"]);
    run(&["expire"]);
    run(&["migrate", "maildir:/nonexistent", "--to", "alice"]);
    assert_eq!(run(&["deliver", "alice"]), Some(75));
}

fn maildir(dir: &std::path::Path) -> std::path::PathBuf {
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    dir.to_owned()
}

fn count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

/// mpop and fetchmail keep mail on the server and poll through HAProxy, which sends each
/// connection to the next node: whichever node answers, nothing is downloaded twice and a new
/// message exactly once; every node logs the clients' own address from the PROXY v2 header.
#[test]
fn clients_keeping_mail_poll_any_node_through_haproxy() {
    let pg = pg::Pg::start();
    let nodes: Vec<common::Server> = (0..3)
        .map(|i| {
            let mut b = node_builder(&pg);
            b.set(
                "listen.proxy_from",
                toml::Value::Array(vec![format!("{}/32", common::haproxy::SOURCE).into()]),
            );
            if i == 0 {
                db_init(&b.write_config());
            }
            let node = b.start();
            if i == 0 {
                add_user(&node, "alice", "wonderland");
            }
            node
        })
        .collect();
    let pop3: Vec<std::net::SocketAddr> = nodes.iter().map(|n| n.pop3).collect();
    let proxy = common::haproxy::Haproxy::start(&[common::haproxy::Frontend {
        nodes: &pop3,
        how: "send-proxy-v2",
    }]);
    let front = proxy.fronts[0];
    for i in 0..3 {
        assert!(
            nodes[i % 3]
                .deliver(
                    &["alice"],
                    format!("Subject: {i}\r\n\r\nmessage {i}\r\n").as_bytes()
                )
                .success()
        );
    }
    let state = tempfile::tempdir().unwrap();
    let mpop_box = maildir(&state.path().join("mpop"));
    let mpop = |state: &std::path::Path| {
        let before = count(&mpop_box.join("new"));
        let (ok, text) = common::mpop(
            &state.join("mpoprc"),
            &format!(
                "account cluster\nhost 127.0.0.1\nport {}\ntls off\nuser alice\npassword wonderland\n\
                 auth user\nkeep on\nuidls_file {}/uidls\ndelivery maildir {}\n",
                front.port(),
                state.display(),
                mpop_box.display()
            ),
            "cluster",
        );
        assert!(ok, "mpop: {text}");
        count(&mpop_box.join("new")) - before
    };
    let fetchmail_out = state.path().join("fetchmail");
    std::fs::create_dir_all(&fetchmail_out).unwrap();
    let fetchmail = |home: &std::path::Path| {
        let before = count(&fetchmail_out);
        let ids = home.join("fetchids");
        let (code, text) = common::fetchmail(
            home,
            &format!(
                "poll 127.0.0.1 service {} protocol POP3 uidl auth password user alice password wonderland \
                 is root keep sslproto '' mda \"cat > {}/m.$$\"\n",
                front.port(),
                fetchmail_out.display()
            ),
            &["-i".as_ref(), ids.as_os_str()],
        );
        assert!(matches!(code, Some(0 | 1)), "fetchmail: {text}");
        count(&fetchmail_out) - before
    };
    // Three polls each: the first takes the three messages, the next two (on other nodes)
    // nothing.
    assert_eq!(
        [mpop(state.path()), mpop(state.path()), mpop(state.path())],
        [3, 0, 0]
    );
    assert_eq!(
        [
            fetchmail(state.path()),
            fetchmail(state.path()),
            fetchmail(state.path())
        ],
        [3, 0, 0]
    );
    // A new message, delivered through the third node, is downloaded once by each.
    assert!(
        nodes[2]
            .deliver(&["alice"], b"Subject: new\r\n\r\nfresh\r\n")
            .success()
    );
    assert_eq!([mpop(state.path()), mpop(state.path())], [1, 0]);
    assert_eq!([fetchmail(state.path()), fetchmail(state.path())], [1, 0]);
    // Python's poplib and curl through the balancer see the same maildrop, whichever node
    // serves them.
    let listed = common::python(&format!(
        "import poplib\n\
         p = poplib.POP3('127.0.0.1', {})\n\
         p.user('alice'); p.pass_('wonderland')\n\
         print(len(p.uidl()[1])); p.quit()\n",
        front.port()
    ));
    assert_eq!(listed.trim(), "4");
    let newest = common::curl(&[
        "--user",
        "alice:wonderland",
        &format!("pop3://127.0.0.1:{}/4", front.port()),
    ]);
    assert!(String::from_utf8_lossy(&newest).contains("fresh"));
    // Every node served some of these sessions, and logged the client as 127.0.0.1, never the
    // balancer's address.
    for node in &nodes {
        common::eventually(Duration::from_secs(10), "sessions logged", || {
            node.logs()
                .iter()
                .any(|l| l.contains("session ended") && l.contains("peer=127.0.0.1:"))
                .then_some(())
        });
        assert!(
            !node
                .logs()
                .iter()
                .any(|l| l.contains(&format!("peer={}:", common::haproxy::SOURCE))),
            "a node logged the balancer's address"
        );
    }
}

/// PostgreSQL stopped under a running node: logins and deliveries are refused as temporary
/// (`[SYS/TEMP]`, exit 75) so clients and the MTA retry, nothing acknowledged is lost, and the
/// node serves again by itself when the database is back.
#[test]
fn a_node_rides_out_postgresql_going_away() {
    let pg = pg::Pg::start();
    let mut b = node_builder(&pg);
    let metrics = format!("127.0.0.1:{}", common::free_port());
    b.set("metrics.listen", metrics.as_str());
    let metrics: std::net::SocketAddr = metrics.parse().unwrap();
    db_init(&b.write_config());
    let node = b.start();
    add_user(&node, "alice", "wonderland");
    assert!(
        node.deliver(&["alice"], b"Subject: before\r\n\r\nkept\r\n")
            .success()
    );
    // Four clients polling in a loop, as real ones would, while the database goes and comes
    // back: each reply is a success or a temporary failure, never anything else.
    for i in 0..4 {
        add_user(&node, &format!("load{i}"), "pw");
        assert!(
            node.deliver(&[&format!("load{i}")], b"Subject: load\r\n\r\nbody\r\n")
                .success()
        );
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pop3 = node.pop3;
    let load: Vec<_> = (0..4)
        .map(|i| {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let (mut ok, mut temporary) = (0, 0);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (mut c, _) = Client::connect(pop3);
                    let reply = c.login(&format!("load{i}"), "pw");
                    if reply.starts_with("+OK") {
                        // A session whose maildrop lock went with PostgreSQL is told
                        // -ERR [SYS/TEMP] and closed: `None` is that close seen first.
                        let ended = |r: &Option<String>| {
                            r.as_deref()
                                .is_none_or(|r| r.starts_with("-ERR [SYS/TEMP]"))
                        };
                        let stat = c.try_cmd("STAT");
                        if ended(&stat) {
                            temporary += 1;
                            continue;
                        }
                        assert!(
                            stat.as_deref().is_some_and(|r| r.starts_with("+OK")),
                            "{stat:?}"
                        );
                        let retr = c.try_cmd("RETR 1");
                        if ended(&retr) {
                            temporary += 1;
                            continue;
                        }
                        assert!(
                            retr.as_deref().is_some_and(|r| r.starts_with("+OK")),
                            "{retr:?}"
                        );
                        assert_eq!(c.body(), b"Subject: load\r\n\r\nbody\r\n");
                        let quit = c.try_cmd("QUIT");
                        assert!(
                            ended(&quit) || quit.as_deref().is_some_and(|r| r.starts_with("+OK")),
                            "{quit:?}"
                        );
                        ok += 1;
                    } else {
                        assert!(reply.starts_with("-ERR [SYS/TEMP]"), "{reply}");
                        temporary += 1;
                    }
                }
                (ok, temporary)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (mut held, reply) = login(&node);
    assert!(reply.starts_with("+OK Logged in"), "{reply}");
    assert!(held.cmd("DELE 1").starts_with("+OK"));
    pg.stop_server();
    // The open session lost its lock with the database connection: the node ends it at
    // once, unasked, without applying its deletion.
    let told = held.line();
    assert!(
        told.starts_with("-ERR [SYS/TEMP] Lost the lock on your maildrop"),
        "{told}"
    );
    assert!(held.closed_within(Duration::from_secs(5)));
    // The health check tells the load balancer.
    let (code, why) = common::http_get(metrics, "/healthz");
    assert_eq!(code, 503, "{why}");
    assert!(why.starts_with("the store does not answer"), "{why}");
    let (_, refused) = login(&node);
    assert!(refused.starts_with("-ERR [SYS/TEMP]"), "{refused}");
    assert_eq!(
        node.deliver(&["alice"], b"Subject: during\r\n\r\nretry\r\n")
            .code(),
        Some(75)
    );
    pg.start_server();
    common::eventually(Duration::from_secs(10), "healthy again", || {
        (common::http_get(metrics, "/healthz").0 == 200).then_some(())
    });
    let mut back = common::eventually(Duration::from_secs(10), "service back", || {
        let (c, reply) = login(&node);
        reply.starts_with("+OK Logged in").then_some(c)
    });
    assert!(
        back.cmd("STAT").starts_with("+OK 1 "),
        "the message was lost"
    );
    assert!(back.cmd("QUIT").starts_with("+OK"));
    assert!(
        node.deliver(&["alice"], b"Subject: after\r\n\r\nretried\r\n")
            .success()
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let outcomes: Vec<(u32, u32)> = load.into_iter().map(|t| t.join().unwrap()).collect();
    eprintln!(
        "polling clients while PostgreSQL went away: (sessions, temporary refusals) {outcomes:?}"
    );
    assert!(outcomes.iter().all(|&(ok, _)| ok > 0));
    assert!(
        outcomes.iter().map(|&(_, t)| t).sum::<u32>() > 0,
        "no client noticed"
    );
}

/// High availability: the node's `store.url` names a primary and its streaming standby with
/// `target_session_attrs=read-write`. The primary is stopped and the standby promoted; the
/// node serves again by itself, with every delivery it acknowledged before, and takes new ones.
#[test]
fn a_node_follows_a_failover_to_the_promoted_standby() {
    let primary = pg::Pg::start();
    db_init(&node_builder(&primary).write_config());
    let standby = pg::Pg::standby_of(&primary);
    let mut b = ServerBuilder::new();
    b.set("store.backend", "postgres");
    b.set(
        "store.url",
        format!(
            "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname=pop3test \
             target_session_attrs=read-write connect_timeout=2",
            primary.port(),
            standby.port()
        ),
    );
    let node = b.start();
    add_user(&node, "alice", "wonderland");
    for i in 0..2 {
        assert!(
            node.deliver(
                &["alice"],
                format!("Subject: {i}\r\n\r\nbefore\r\n").as_bytes()
            )
            .success()
        );
    }
    let (mut c, reply) = login(&node);
    assert!(reply.starts_with("+OK Logged in"), "{reply}");
    let seen = uidls(&mut c);
    assert!(c.cmd("QUIT").starts_with("+OK"));
    // Failover.
    primary.stop_server();
    let stopped = Instant::now();
    standby.promote();
    let mut back = common::eventually(Duration::from_secs(30), "service after failover", || {
        let (c, reply) = login(&node);
        reply.starts_with("+OK Logged in").then_some(c)
    });
    eprintln!(
        "failover: primary stopped, standby promoted, node serving again after {:?}",
        stopped.elapsed()
    );
    assert_eq!(uidls(&mut back), seen, "an acknowledged delivery was lost");
    assert!(back.cmd("QUIT").starts_with("+OK"));
    assert!(
        node.deliver(&["alice"], b"Subject: after\r\n\r\nnew primary\r\n")
            .success()
    );
    let (mut c, _) = login(&node);
    assert_eq!(uidls(&mut c).len(), 3);
}

/// Postfix may deliver to any node: LMTP into node A (python's smtplib.LMTP), retrieved from
/// node B, the return path as configured.
#[test]
fn lmtp_on_one_node_reaches_the_others() {
    let pg = pg::Pg::start();
    let mut first = node_builder(&pg);
    first.lmtp();
    first.set("delivery.return_path", true);
    db_init(&first.write_config());
    let mut second = node_builder(&pg);
    second.lmtp();
    let (a, b) = (first.start(), second.start());
    add_user(&a, "alice", "wonderland");
    let (host, port) = a
        .lmtp_addr()
        .rsplit_once(':')
        .map(|(h, p)| (h.to_owned(), p.to_owned()))
        .unwrap();
    let script = format!(
        "import smtplib\n\
         s = smtplib.LMTP({host:?}, {port})\n\
         refused = s.sendmail('sender@example.org', ['alice@example.org'], b'Subject: lmtp\\r\\n\\r\\nvia node A\\r\\n')\n\
         assert not refused, refused\n\
         s.quit()\n"
    );
    common::python(&script);
    let (mut c, reply) = login(&b);
    assert!(reply.starts_with("+OK Logged in"), "{reply}");
    assert!(c.cmd("RETR 1").starts_with("+OK"));
    assert_eq!(
        c.body(),
        b"Return-Path: <sender@example.org>\r\nSubject: lmtp\r\n\r\nvia node A\r\n"
    );
    assert!(c.cmd("QUIT").starts_with("+OK"));
    // Postfix, as a provider runs it, delivering to node B's LMTP: read on node A.
    let postfix = common::postfix::Postfix::start(&format!("inet:{}", b_lmtp(&b)));
    let message = a.dir().join("via-postfix.eml");
    std::fs::write(&message, "Subject: through postfix\r\n\r\nfrom the MTA").unwrap();
    postfix.send("alice@example.org", &message);
    let body = common::eventually(Duration::from_secs(20), "Postfix's delivery", || {
        let (mut c, _) = login(&a);
        let two = c.cmd("STAT").starts_with("+OK 2 ");
        let body = two.then(|| {
            assert!(c.cmd("RETR 2").starts_with("+OK"));
            c.body()
        });
        c.cmd("QUIT");
        body
    });
    assert!(
        String::from_utf8_lossy(&body).contains("from the MTA"),
        "{}",
        postfix.log()
    );
}

/// Node B of the LMTP test listens for LMTP too.
fn b_lmtp(b: &common::Server) -> String {
    b.lmtp_addr()
}

/// A node whose database is across a network: `sslmode=require` and the CA that signed the
/// database's certificate; `db init`, deliveries and sessions all travel over TLS.
#[test]
fn a_node_reaches_its_database_over_verified_tls() {
    let (pg, ca) = pg::Pg::start_with_tls();
    let mut b = ServerBuilder::new();
    b.set("store.backend", "postgres");
    b.set("store.url", format!("{}?sslmode=require", pg.url()));
    b.set("store.ca_file", ca.to_str().unwrap());
    assert!(db_init(&b.write_config()).contains("created Poplar's schema"));
    let node = b.start();
    add_user(&node, "alice", "wonderland");
    assert!(
        node.deliver(&["alice"], b"Subject: tls\r\n\r\nencrypted\r\n")
            .success()
    );
    let (mut c, reply) = login(&node);
    assert!(reply.starts_with("+OK Logged in"), "{reply}");
    assert!(c.cmd("RETR 1").starts_with("+OK"));
    assert_eq!(c.body(), b"Subject: tls\r\n\r\nencrypted\r\n");
    let check = std::process::Command::new(BIN)
        .args(["check-config", "--config", node.config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    // Every connection the node holds to the database is encrypted.
    let plain: i64 = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            pg.admin()
                .await
                .query_one(
                    "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                     WHERE NOT s.ssl AND a.datname = 'pop3test' AND a.pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap()
                .get(0)
        });
    assert_eq!(plain, 0, "a node connection is not encrypted");
}

/// Quotas on PostgreSQL as on Maildir: `[quota]` and the users file's own rules, checked in the
/// delivering transaction; a full maildrop defers mail (exit 75) until room is made.
#[test]
fn quotas_hold_on_postgres() {
    let pg = pg::Pg::start();
    let mut b = node_builder(&pg);
    b.set("quota.storage", "100");
    db_init(&b.write_config());
    let node = b.start();
    add_user(&node, "alice", "wonderland");
    let message = b"Subject: q\r\n\r\nforty octets of message body here\r\n";
    assert!(node.deliver(&["alice"], message).success());
    assert!(node.deliver(&["alice"], message).success());
    // A third would exceed 100 octets: deferred, not stored.
    assert_eq!(node.deliver(&["alice"], message).code(), Some(75));
    let (mut c, reply) = login(&node);
    assert!(reply.contains("2 messages"), "{reply}");
    // Room made at QUIT lets the next delivery in.
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert!(node.deliver(&["alice"], message).success());
}

/// A password changed or a user removed through one node counts on every node at once; a
/// Dovecot SQL passdb could read the same rows.
#[test]
fn user_changes_reach_every_node_at_once() {
    let pg = pg::Pg::start();
    let first = node_builder(&pg);
    db_init(&first.write_config());
    let (a, b) = (first.start(), node_builder(&pg).start());
    a.add_user("alice", "wonderland");
    let attempt = |node: &common::Server, password: &str| {
        let (mut c, _) = Client::connect(node.pop3);
        let reply = c.login("alice", password);
        if reply.starts_with("+OK") {
            assert!(c.cmd("QUIT").starts_with("+OK"));
        }
        reply
    };
    let added = Instant::now();
    common::eventually(Duration::from_secs(2), "the new user on node B", || {
        attempt(&b, "wonderland").starts_with("+OK").then_some(())
    });
    eprintln!(
        "user added on node A: logged in on node B after {:?}",
        added.elapsed()
    );
    assert!(
        run_with_stdin(
            a.poplar(&["user", "passwd", "alice", "--password-stdin"]),
            b"looking-glass\n"
        )
        .success()
    );
    let changed = Instant::now();
    common::eventually(Duration::from_secs(2), "the new password on node B", || {
        attempt(&b, "looking-glass")
            .starts_with("+OK")
            .then_some(())
    });
    eprintln!(
        "password changed on node A: valid on node B after {:?}",
        changed.elapsed()
    );
    assert!(attempt(&b, "wonderland").starts_with("-ERR"));
    let out = b.poplar(&["user", "list"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alice\n");
    let dovecot_row = pg.psql("SELECT name || ':' || left(password, 10) FROM poplar_users");
    assert!(dovecot_row.starts_with("alice:{ARGON2ID"), "{dovecot_row}");
    assert!(
        b.poplar(&["user", "del", "alice"])
            .status()
            .unwrap()
            .success()
    );
    common::eventually(Duration::from_secs(2), "alice gone on node A", || {
        attempt(&a, "looking-glass")
            .starts_with("-ERR")
            .then_some(())
    });
    // A Dovecot passwd-file moves in as it is: hashes, quota rules; bad lines are skipped.
    let passwd = a.dir().join("dovecot-users");
    std::fs::write(
        &passwd,
        "alice:{PLAIN}from-dovecot:1000:1000::/home/alice::userdb_quota_rule=*:storage=1G\n\
         ../evil:{PLAIN}x\n\
         bob:{SHA512-CRYPT}$6$rounds=5000$salt$hash\n",
    )
    .unwrap();
    let out = a
        .poplar(&["user", "import", passwd.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("imported 2 of 2"), "{said}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));
    common::eventually(Duration::from_secs(2), "imported alice on node B", || {
        attempt(&b, "from-dovecot").starts_with("+OK").then_some(())
    });
    assert_eq!(
        pg.psql("SELECT extra FROM poplar_users WHERE name = 'alice'"),
        "userdb_quota_rule=*:storage=1G\n"
    );
}

/// EXPIRE on PostgreSQL: a node records when messages are first retrieved, `poplar expire`
/// (and each node's hourly purge) removes them once the period has passed, never a message
/// not yet retrieved, and skips a maildrop in use on any node.
#[test]
fn retention_periods_expire_mail_on_postgres() {
    const DAY: u64 = 86_400;
    let pg = pg::Pg::start();
    let mut first = node_builder(&pg);
    first.set("pop3.expire", 2);
    db_init(&first.write_config());
    let a = first.start();
    add_user(&a, "alice", "wonderland");
    assert!(
        a.deliver(&["alice"], b"Subject: read\r\n\r\none\r\n")
            .success()
    );
    let (mut c, reply) = login(&a);
    assert!(reply.starts_with("+OK Logged in"), "{reply}");
    assert!(c.cmd("CAPA").starts_with("+OK"));
    assert!(String::from_utf8(c.body()).unwrap().contains("EXPIRE 2"));
    assert!(c.cmd("RETR 1").starts_with("+OK"));
    c.body();
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let retrieved = unix_now();
    assert!(
        a.deliver(&["alice"], b"Subject: unread\r\n\r\ntwo\r\n")
            .success()
    );
    let expire = |args: &[&str]| {
        let out = a.poplar(&[&["expire"], args].concat()).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let soon = (retrieved + DAY).to_string();
    assert!(expire(&["--as-of", &soon]).contains("0 messages"));
    let later = (retrieved + 3 * DAY).to_string();
    let said = expire(&["--dry-run", "--as-of", &later]);
    assert!(
        said.contains("1 messages") && said.contains("due for removal"),
        "{said}"
    );
    // In use on a node: skipped, left for the next run.
    let (mut holding, reply) = login(&a);
    assert!(reply.starts_with("+OK Logged in"), "{reply}");
    assert!(expire(&["--as-of", &later]).contains("in use by a POP3 session"));
    assert!(holding.cmd("QUIT").starts_with("+OK"));
    let said = expire(&["--as-of", &later]);
    assert!(
        said.contains("1 messages") && said.contains("removed"),
        "{said}"
    );
    let (mut c, _) = login(&a);
    assert!(c.cmd("RETR 1").starts_with("+OK"));
    assert!(String::from_utf8(c.body()).unwrap().contains("unread"));
    assert!(c.cmd("STAT").starts_with("+OK 1 "));
    assert!(c.cmd("QUIT").starts_with("+OK"));
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Users sharded over two PostgreSQL databases by the stable hash, and one moved between them
/// (and back) under mpop keeping mail on the server: nothing downloaded twice, every UIDL
/// kept, the move refused while a session is open, later mail following the user.
#[test]
fn users_spread_over_two_shards_and_move_between_them() {
    let (pg0, pg1) = (pg::Pg::start(), pg::Pg::start());
    let mut b = ServerBuilder::new();
    b.set("store.backend", "postgres");
    b.set(
        "store.url",
        toml::Value::Array(vec![pg0.url().into(), pg1.url().into()]),
    );
    let said = db_init(&b.write_config());
    assert_eq!(said.matches("created Poplar's schema").count(), 2, "{said}");
    let node = b.start();
    // By the hash: alice on shard 1, bob on shard 0.
    add_user(&node, "alice", "wonderland");
    add_user(&node, "bob", "builder");
    for i in 0..3 {
        for user in ["alice", "bob"] {
            let message = format!("Subject: {user} {i}\r\n\r\nmessage {i}\r\n");
            assert!(node.deliver(&[user], message.as_bytes()).success());
        }
    }
    assert_eq!(
        pg0.psql("SELECT name || '=' || shard FROM poplar_placements ORDER BY name"),
        "alice=1\nbob=0\n"
    );
    let held = |pg: &pg::Pg| {
        pg.psql(
            "SELECT d.name || '=' || count(m.uid) FROM poplar_maildrops d \
             LEFT JOIN poplar_messages m ON m.maildrop = d.id GROUP BY d.name ORDER BY d.name",
        )
    };
    assert_eq!(held(&pg0), "bob=3\n");
    assert_eq!(held(&pg1), "alice=3\n");

    let state = tempfile::tempdir().unwrap();
    let mpop_box = maildir(&state.path().join("mpop"));
    let mpop = || {
        let before = count(&mpop_box.join("new"));
        let (ok, text) = common::mpop(
            &state.path().join("mpoprc"),
            &format!(
                "account a\nhost 127.0.0.1\nport {}\ntls off\nuser alice\npassword wonderland\n\
                 auth user\nkeep on\nuidls_file {}/uidls\ndelivery maildir {}\n",
                node.pop3.port(),
                state.path().display(),
                mpop_box.display()
            ),
            "a",
        );
        assert!(ok, "mpop: {text}");
        count(&mpop_box.join("new")) - before
    };
    assert_eq!(mpop(), 3);
    let (mut c, reply) = login(&node);
    assert!(reply.starts_with("+OK Logged in"), "{reply}");
    let before = uidls(&mut c);
    let move_to = |shard: &str| move_to_user(&node, "alice", shard);
    let refused = move_to("0");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("in use"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let out = move_to("0");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("moved alice from shard 1 to shard 0: 3 messages"),
        "{said}"
    );
    assert_eq!(held(&pg0), "alice=3\nbob=3\n");
    assert_eq!(
        held(&pg1),
        "alice=0\n",
        "the old row stays as the mark of the move"
    );
    let (mut c, _) = login(&node);
    assert_eq!(uidls(&mut c), before, "a UIDL changed in the move");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert_eq!(mpop(), 0, "mpop downloaded again after the move");
    // New mail follows the user; so does a move back.
    assert!(
        node.deliver(&["alice"], b"Subject: after\r\n\r\nthe move\r\n")
            .success()
    );
    assert_eq!(held(&pg0), "alice=4\nbob=3\n");
    assert!(move_to("1").status.success());
    assert_eq!(held(&pg1), "alice=4\n");
    assert_eq!(mpop(), 1);
    assert_eq!(mpop(), 0);
    // Bob never moved.
    assert!(
        String::from_utf8_lossy(&move_to_user(&node, "bob", "0").stdout)
            .contains("nothing to move")
    );
}

fn move_to_user(node: &common::Server, user: &str, shard: &str) -> std::process::Output {
    node.poplar(&["db", "move-user", user, "--to", shard])
        .output()
        .unwrap()
}

/// QUIT's deletions are one transaction: a node killed while it carries them out leaves all
/// or none of them, and a restarted node serves every message left under the same UIDL. The
/// kill comes at a different moment after QUIT in each round.
#[test]
fn a_node_killed_during_quit_leaves_all_or_none_and_restarts_with_the_same_uidls() {
    const MESSAGES: usize = 60;
    let pg = pg::Pg::start();
    let first = node_builder(&pg);
    db_init(&first.write_config());
    let setup = first.start();
    let config = setup.config.clone();
    let serve = || {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config", config.to_str().unwrap()])
            .stdout(std::process::Stdio::null());
        Node(common::spawn_server(cmd, false))
    };
    let mut outcomes = Vec::new();
    for (round, pause_us) in [0u64, 300, 1000, 3000, 10_000].into_iter().enumerate() {
        let user = format!("user{round}");
        add_user(&setup, &user, "pw");
        for i in 0..MESSAGES {
            let message = format!("Subject: {i}\r\n\r\nmessage {i}\r\n");
            assert!(setup.deliver(&[&user], message.as_bytes()).success());
        }
        let mut node = serve();
        let (mut c, _) = Client::connect(node.0.pop3);
        assert!(c.login(&user, "pw").starts_with("+OK"));
        let before = uidls(&mut c);
        let mut commands = String::new();
        for n in 1..=MESSAGES / 2 {
            commands.push_str(&format!("DELE {n}\r\n"));
        }
        c.send(commands.as_bytes());
        for _ in 0..MESSAGES / 2 {
            assert!(c.line().starts_with("+OK"));
        }
        c.send(b"QUIT\r\n");
        std::thread::sleep(Duration::from_micros(pause_us));
        node.0.child.kill().unwrap();
        node.0.child.wait().unwrap();
        // The same configuration and database: a restarted node.
        let node = serve();
        let (mut c, _) = Client::connect(node.0.pop3);
        let reply = c.login(&user, "pw");
        assert!(reply.starts_with("+OK"), "{reply}");
        let after = uidls(&mut c);
        assert!(
            after.len() == MESSAGES || after.len() == MESSAGES / 2,
            "{} of {MESSAGES} messages left: part of QUIT's deletions applied",
            after.len()
        );
        assert_eq!(
            after[..],
            before[before.len() - after.len()..],
            "UIDLs changed"
        );
        c.cmd("QUIT");
        outcomes.push(after.len());
    }
    eprintln!("killed during QUIT: messages left of {MESSAGES} per round: {outcomes:?}");
}

/// A node started by hand, stopped when the test ends or fails (a node left running would
/// hold the test's output open).
struct Node(common::Running);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
    }
}

/// RFC 2449 LOGIN-DELAY holds across the cluster: a client that logged in on one node is
/// refused on another until the delay has passed, and only that user.
#[test]
fn login_delay_holds_on_every_node() {
    let pg = pg::Pg::start();
    let mut first = node_builder(&pg);
    first.set("pop3.login_delay", 2);
    db_init(&first.write_config());
    let mut second = node_builder(&pg);
    second.set("pop3.login_delay", 2);
    let (a, b) = (first.start(), second.start());
    a.add_user("alice", "wonderland");
    a.add_user("bob", "builder");
    // The first login anywhere is admitted (waiting for the new users to reach node A).
    common::eventually(Duration::from_secs(5), "alice's first login", || {
        let (mut c, reply) = login(&a);
        let ok = reply.starts_with("+OK Logged in");
        c.cmd("QUIT");
        ok.then_some(())
    });
    let logged_in = Instant::now();
    let (_, refused) = login(&b);
    assert!(refused.starts_with("-ERR [LOGIN-DELAY]"), "{refused}");
    let (mut c, _) = Client::connect(b.pop3);
    assert!(c.login("bob", "builder").starts_with("+OK Logged in"));
    c.cmd("QUIT");
    std::thread::sleep(Duration::from_secs(2).saturating_sub(logged_in.elapsed()));
    common::eventually(Duration::from_secs(5), "alice after the delay", || {
        let (mut c, reply) = login(&b);
        c.cmd("QUIT");
        reply.starts_with("+OK Logged in").then_some(())
    });
}

/// Hundreds of sessions logged in at once on a node need no more PostgreSQL connections than
/// its pool, one for the maildrop locks and one that follows the users table.
#[test]
fn many_sessions_share_a_bounded_pool() {
    const SESSIONS: usize = 300;
    let pg = pg::Pg::start();
    let mut b = node_builder(&pg);
    b.set("store.pool_size", 4);
    b.set("limits.max_connections_per_ip", 1000);
    db_init(&b.write_config());
    let node = b.start();
    let passwd = node.dir().join("many-users");
    let lines: String = (0..SESSIONS)
        .map(|i| format!("user{i}:{{PLAIN}}pw{i}\n"))
        .collect();
    std::fs::write(&passwd, lines).unwrap();
    assert!(
        node.poplar(&["user", "import", passwd.to_str().unwrap()])
            .status()
            .unwrap()
            .success()
    );
    for user in ["user0", "user1", "user2"] {
        assert!(
            node.deliver(&[user], b"Subject: hi\r\n\r\nhello\r\n")
                .success()
        );
    }
    let node_connections = || {
        pg.psql(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = 'pop3test' AND pid <> pg_backend_pid()",
        )
        .trim()
        .parse::<usize>()
        .unwrap()
    };
    let mut sessions = Vec::new();
    for i in 0..SESSIONS {
        let (mut c, _) = Client::connect(node.pop3);
        let reply = common::eventually(Duration::from_secs(5), "a login", || {
            let reply = c.login(&format!("user{i}"), &format!("pw{i}"));
            reply.starts_with("+OK").then_some(reply)
        });
        assert!(reply.starts_with("+OK Logged in"), "{reply}");
        sessions.push(c);
    }
    let used = node_connections();
    eprintln!("{SESSIONS} sessions logged in at once: {used} PostgreSQL connections");
    assert!(used <= 4 + 2, "{used} connections for a pool of 4");
    for mut c in sessions {
        assert!(c.cmd("STAT").starts_with("+OK"));
        assert!(c.cmd("QUIT").starts_with("+OK"));
    }
}

/// A node started while its database is down waits for it, saying so, and serves once it is
/// up; a database with no schema is refused at once (the operator's to fix).
#[test]
fn a_node_started_before_its_database_waits_for_it() {
    let pg = pg::Pg::start();
    let b = node_builder(&pg);
    let config = b.write_config();
    let out = Command::new(BIN)
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("poplar db init"));
    db_init(&config);
    pg.stop_server();
    let starting = std::thread::spawn(move || b.start());
    std::thread::sleep(Duration::from_secs(2));
    pg.start_server();
    let node = starting.join().unwrap();
    assert!(
        node.logs().iter().any(|l| l.contains("trying again in")),
        "{:?}",
        node.logs()
    );
    add_user(&node, "alice", "wonderland");
}
