//! Demon's SDPS end to end: Postfix delivers a host's mail over LMTP into its host maildrop,
//! fetchmail (`proto SDPS`, multidrop) distributes it by envelope alone, people read their own
//! copies through `john@host` and `john+host`, `*ENV` has the shape getmail and fetchmail
//! read, and no deletion takes a copy from another recipient.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::postfix::Postfix;
use common::{Client, ServerBuilder, eventually};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

fn stat(server: &common::Server, user: &str, password: &str) -> Result<usize, String> {
    let (mut c, _) = Client::connect(server.pop3);
    let reply = c.login(user, password);
    if !reply.starts_with("+OK") {
        return Err(reply);
    }
    let n = c.cmd("STAT").split(' ').nth(1).unwrap().parse().unwrap();
    c.cmd("QUIT");
    Ok(n)
}

/// Runs fetchmail in SDPS multidrop mode against the host maildrop; the MDA files each
/// message under the local user fetchmail chose for it.
fn fetchmail_sdps(server: &common::Server, out: &Path, keep: bool) -> String {
    let home = tempfile::tempdir().unwrap();
    let mda = home.path().join("mda.sh");
    std::fs::write(
        &mda,
        format!(
            "#!/bin/sh\nf=$(mktemp \"{}/$1.XXXXXX\")\ncat > \"$f\"\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&mda, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (code, text) = common::fetchmail(
        home.path(),
        &format!(
            "poll localhost service {} proto SDPS no dns localdomains example.org \
             user \"example.org\" there with password \"host secret\" is * here \
             {} fetchall sslproto TLS1.2+ sslcertck sslcertfile {} mda \"{} %T\"\n",
            server.pop3.port(),
            if keep { "keep" } else { "nokeep" },
            server.cert().display(),
            mda.display()
        ),
        &["-v".as_ref()],
    );
    assert_eq!(code, Some(0), "fetchmail: {text}");
    text
}

/// What fetchmail handed each local user: user -> subjects.
fn distributed(out: &Path) -> BTreeMap<String, Vec<String>> {
    let mut by_user: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(out).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        // The MDA names files `%T.XXXXXX`; %T is the address fetchmail chose.
        let address = name.rsplit_once('.').unwrap().0;
        let user = address.split('@').next().unwrap().to_owned();
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let subject = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap()
            .to_owned();
        by_user.entry(user).or_default().push(subject);
    }
    by_user.values_mut().for_each(|v| v.sort());
    by_user
}

#[test]
fn fetchmail_distributes_a_host_maildrop_by_envelope_and_views_keep_their_copies() {
    let mut b = ServerBuilder::new();
    b.lmtp();
    b.set("sdps.hosts", toml::Value::Array(vec!["example.org".into()]));
    let server = b.start();
    server.add_user("example.org", "host secret");
    server.add_user("mary@example.org", "mary's own");
    let postfix = Postfix::start(&format!("inet:{}", server.lmtp_addr()));
    let dir = tempfile::tempdir().unwrap();
    // Headers name none of the recipients: only the envelope can tell them apart.
    let bcc = dir.path().join("bcc.eml");
    std::fs::write(
        &bcc,
        "From: sender@example.org\r\nTo: undisclosed-recipients:;\r\nSubject: for all three\r\n\r\nhello",
    )
    .unwrap();
    let own = dir.path().join("own.eml");
    std::fs::write(
        &own,
        "From: sender@example.org\r\nTo: undisclosed-recipients:;\r\nSubject: for john\r\n\r\njust you",
    )
    .unwrap();
    postfix.send("john@example.org,mary@example.org,kim@example.org", &bcc);
    postfix.send("john@example.org", &own);
    eventually(
        Duration::from_secs(30),
        "four copies in the host maildrop",
        || (stat(&server, "example.org", "host secret") == Ok(4)).then_some(()),
    );
    let log = postfix.log();
    assert_eq!(log.matches("status=sent").count(), 4, "{log}");
    // Stored once per message, with its envelope beside it.
    let maildir = server.data_dir().join("mail/_default_/example.org/Maildir");
    let files = std::fs::read_dir(maildir.join("new")).unwrap().count();
    assert_eq!(files, 2);

    // Views: the host's password opens any person's, unless they have their own.
    assert_eq!(stat(&server, "john@example.org", "host secret"), Ok(2));
    assert_eq!(stat(&server, "JOHN+example.org", "host secret"), Ok(2));
    assert_eq!(stat(&server, "kim@example.org", "host secret"), Ok(1));
    assert_eq!(stat(&server, "mary@example.org", "mary's own"), Ok(1));
    let refused = stat(&server, "mary@example.org", "host secret").unwrap_err();
    assert!(refused.starts_with("-ERR [AUTH]"), "{refused}");
    assert_eq!(stat(&server, "nobody@example.org", "host secret"), Ok(0));

    // Byte-exact: kim's copy is the stored file after kim's own Delivered-To line.
    let stored = std::fs::read_dir(maildir.join("new"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .find(|m| String::from_utf8_lossy(m).contains("for all three"))
        .unwrap();
    let (mut c, _) = Client::connect(server.pop3);
    assert!(c.login("kim@example.org", "host secret").starts_with("+OK"));
    assert!(c.cmd("RETR 1").starts_with("+OK"));
    let mut expected = b"Delivered-To: kim@example.org\r\n".to_vec();
    expected.extend_from_slice(&common::canonical(&stored));
    assert_eq!(c.body(), expected);
    c.cmd("QUIT");

    // *ENV as getmail reads it (python poplib's _longcmd: lines[2] sender, lines[3] recipient)
    // for every copy in the whole maildrop.
    let envelopes = common::python(&format!(
        "import poplib\n\
         c = poplib.POP3('127.0.0.1', {port})\n\
         assert 'X-SDPS' in c.capa(), c.capa()\n\
         c.user('example.org'); c.pass_('host secret')\n\
         n = c.stat()[0]\n\
         for i in range(1, n + 1):\n\
         \x20   resp, lines, _ = c._longcmd('*ENV %d' % i)\n\
         \x20   assert resp.startswith(b'+OK'), resp\n\
         \x20   assert lines[0] == str(i).encode(), lines\n\
         \x20   assert lines[1] == c.uidl(i).split()[2], lines\n\
         \x20   print(lines[2].decode(), lines[3].decode())\n\
         c.quit()\n",
        port = server.pop3.port()
    ));
    let mut pairs: Vec<&str> = envelopes.lines().collect();
    pairs.sort_unstable();
    assert_eq!(
        pairs,
        [
            "sender@example.org john@example.org",
            "sender@example.org john@example.org",
            "sender@example.org kim@example.org",
            "sender@example.org mary@example.org",
        ]
    );

    // fetchmail, keeping the mail, hands each copy to its recipient: john gets both, mary and
    // kim the one addressed to all three.
    let first = tempfile::tempdir().unwrap();
    fetchmail_sdps(&server, first.path(), true);
    let expected = |rows: &[(&str, &[&str])]| -> BTreeMap<String, Vec<String>> {
        rows.iter()
            .map(|(u, s)| ((*u).to_owned(), s.iter().map(|s| (*s).to_owned()).collect()))
            .collect()
    };
    assert_eq!(
        distributed(first.path()),
        expected(&[
            ("john", &["for all three", "for john"]),
            ("kim", &["for all three"]),
            ("mary", &["for all three"]),
        ])
    );

    // John deletes both of his through his view: the shared message stays for mary and kim.
    let (mut c, _) = Client::connect(server.pop3);
    assert!(
        c.login("john+example.org", "host secret")
            .starts_with("+OK")
    );
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("DELE 2").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert_eq!(stat(&server, "john@example.org", "host secret"), Ok(0));
    assert_eq!(stat(&server, "mary@example.org", "mary's own"), Ok(1));
    assert_eq!(stat(&server, "example.org", "host secret"), Ok(2));
    assert_eq!(
        std::fs::read_dir(maildir.join("new")).unwrap().count()
            + std::fs::read_dir(maildir.join("cur")).unwrap().count(),
        1
    );

    // fetchmail again, deleting: mary's and kim's copies, then nothing is left.
    let second = tempfile::tempdir().unwrap();
    fetchmail_sdps(&server, second.path(), false);
    assert_eq!(
        distributed(second.path()),
        expected(&[("kim", &["for all three"]), ("mary", &["for all three"])])
    );
    assert_eq!(stat(&server, "example.org", "host secret"), Ok(0));
    let left = std::fs::read_dir(maildir.join("new")).unwrap().count()
        + std::fs::read_dir(maildir.join("cur")).unwrap().count();
    assert_eq!(left, 0, "the last copy takes the file");
}

/// `poplar deliver` (Postfix's pipe(8) or procmail) takes host addresses too: once per host with
/// the envelope, while ordinary names get their own copy as before.
#[test]
fn poplar_deliver_records_the_envelope_for_host_addresses() {
    let mut b = ServerBuilder::new();
    b.set("sdps.hosts", toml::Value::Array(vec!["example.net".into()]));
    let server = b.start();
    server.add_user("example.net", "host secret");
    server.add_user("alice", "wonderland");
    let mut cmd = server.poplar(&[
        "deliver",
        "-f",
        "",
        "Kim@example.net",
        "lee+example.net",
        "alice",
    ]);
    let status = common::run_with_stdin(
        {
            cmd.arg("--");
            cmd
        },
        b"Subject: a bounce\n\nundeliverable\n",
    );
    assert!(status.success());
    assert_eq!(stat(&server, "alice", "wonderland"), Ok(1));
    assert_eq!(stat(&server, "lee@example.net", "host secret"), Ok(1));
    let envelopes = common::python(&format!(
        "import poplib\n\
         c = poplib.POP3('127.0.0.1', {port})\n\
         c.user('example.net'); c.pass_('host secret')\n\
         for i in (1, 2):\n\
         \x20   resp, lines, _ = c._longcmd('*ENV %d' % i)\n\
         \x20   print(repr(lines[2].decode()), lines[3].decode())\n\
         print(c.retr(1)[1][0].decode())\n\
         c.quit()\n",
        port = server.pop3.port()
    ));
    assert_eq!(
        envelopes.lines().collect::<Vec<_>>(),
        [
            "'' kim@example.net",
            "'' lee@example.net",
            "Delivered-To: kim@example.net"
        ]
    );
}

/// A host named in UTF-8 is the same host in punycode: deliveries to either form land in one
/// host maildrop, and its people log in with either form.
#[test]
fn an_idna_host_is_one_host_in_either_form() {
    let mut b = ServerBuilder::new();
    b.set(
        "sdps.hosts",
        toml::Value::Array(vec!["Bücher.example".into()]),
    );
    let server = b.start();
    server.add_user("bücher.example", "host secret");
    assert!(
        server
            .deliver(&["anna@BÜCHER.example"], b"Subject: one\n\nutf-8\n")
            .success()
    );
    assert!(
        server
            .deliver(
                &["anna@xn--bcher-kva.example"],
                b"Subject: two\n\npunycode\n"
            )
            .success()
    );
    assert_eq!(stat(&server, "anna@bücher.example", "host secret"), Ok(2));
    assert_eq!(
        stat(&server, "anna+XN--BCHER-KVA.example", "host secret"),
        Ok(2)
    );
    assert_eq!(stat(&server, "xn--bcher-kva.example", "host secret"), Ok(2));
}
