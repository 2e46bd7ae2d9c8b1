//! Virtual domains: a default domain for bare names, the `user%domain` login form, domain names
//! compared case-insensitively in their IDNA form (UTF-8 and punycode are one domain), one
//! `[domains."d"]` table for a domain's quota, EXPIRE, LOGIN-DELAY and login methods, and
//! `poplar user list --domain`, through python's poplib and `poplar` itself.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{ServerBuilder, python};

fn domains() -> toml::Value {
    let table = |s: &str| -> toml::Value { toml::from_str(s).unwrap() };
    let mut domains = toml::Table::new();
    domains.insert(
        "BÜCHER.example".into(),
        table("quota = { messages = 1 }\nexpire = 5\n"),
    );
    domains.insert(
        "other.example".into(),
        table("login_delay = 60\nmechanisms = [\"PLAIN\"]\n"),
    );
    toml::Value::Table(domains)
}

fn poplib(port: u16, body: &str) -> String {
    python(&format!(
        "import poplib, base64\n\
         def session(user, password):\n\
         \x20   c = poplib.POP3('127.0.0.1', {port})\n\
         \x20   c.user(user)\n\
         \x20   try:\n\
         \x20       return c, c.pass_(password).decode()\n\
         \x20   except poplib.error_proto as e:\n\
         \x20       return c, user + ': ' + e.args[0].decode()\n\
         def raw(c, line):\n\
         \x20   try:\n\
         \x20       return c._shortcmd(line).decode()\n\
         \x20   except poplib.error_proto as e:\n\
         \x20       return e.args[0].decode() if isinstance(e.args[0], bytes) else e.args[0]\n\
         {body}"
    ))
}

#[test]
fn default_domain_percent_form_idna_and_per_domain_settings() {
    let mut b = ServerBuilder::new();
    b.set("auth.default_domain", "example.org");
    b.set("domains", domains());
    let server = b.start();
    server.add_user("alice", "wonderland");
    server.add_user("anna@bücher.example", "bücherwurm");
    server.add_user("bob@Other.Example", "builder");

    // The users file holds the canonical names; the list filters by domain in either form.
    let list = |args: &[&str]| {
        let mut all = vec!["user", "list"];
        all.extend_from_slice(args);
        let out = server.poplar(&all).output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let everyone = list(&[]);
    for name in [
        "alice@example.org",
        "anna@xn--bcher-kva.example",
        "bob@other.example",
    ] {
        assert!(everyone.lines().any(|l| l == name), "{name} in {everyone}");
    }
    assert_eq!(
        list(&["--domain", "Bücher.EXAMPLE"]),
        "anna@xn--bcher-kva.example\n"
    );
    assert_eq!(
        list(&["--domain", "xn--bcher-kva.example"]),
        "anna@xn--bcher-kva.example\n"
    );
    assert_eq!(list(&["--domain", "example.org"]), "alice@example.org\n");

    // Every way of writing a name reaches the same maildrop.
    let out = poplib(
        server.pop3.port(),
        "for user, pw in [('alice', 'wonderland'), ('ALICE@example.org', 'wonderland'),\n\
         \x20                ('alice%example.org', 'wonderland'), ('anna@bücher.example', 'bücherwurm'),\n\
         \x20                ('anna@XN--BCHER-KVA.example', 'bücherwurm'), ('anna%Bücher.Example', 'bücherwurm')]:\n\
         \x20   c, r = session(user, pw)\n\
         \x20   assert r.startswith('+OK'), (user, r)\n\
         \x20   print(user, c.stat()[0])\n\
         \x20   c.quit()\n",
    );
    assert_eq!(out.lines().count(), 6, "{out}");

    // The domain's quota: one message for anna, the second is refused (temporary: 75).
    let deliver = |to: &str| server.deliver(&[to], b"Subject: hi\n\nthere\n");
    assert!(deliver("anna@BÜCHER.example").success());
    assert_eq!(deliver("anna@xn--bcher-kva.example").code(), Some(75));
    assert!(deliver("alice").success());
    assert!(deliver("alice").success(), "no quota for example.org");
    // Retrieved byte-exact through another spelling of the same user.
    let (mut c, _) = common::Client::connect(server.pop3);
    assert!(
        c.login("anna%Bücher.example", "bücherwurm")
            .starts_with("+OK")
    );
    assert!(c.cmd("RETR 1").starts_with("+OK"));
    assert_eq!(c.body(), b"Subject: hi\r\n\r\nthere\r\n");
    c.cmd("QUIT");

    // The domain's EXPIRE and LOGIN-DELAY: tagged USER before login, the user's own after.
    let out = poplib(
        server.pop3.port(),
        "c = poplib.POP3('127.0.0.1', PORT)\n\
         print(sorted(k + ' ' + ' '.join(v) for k, v in c.capa().items() if k in ('EXPIRE', 'LOGIN-DELAY')))\n\
         c.user('anna@bücher.example'); c.pass_('bücherwurm')\n\
         print(sorted(k + ' ' + ' '.join(v) for k, v in c.capa().items() if k in ('EXPIRE', 'LOGIN-DELAY')))\n\
         c.quit()\n"
            .replace("PORT", &server.pop3.port().to_string())
            .as_str(),
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "['EXPIRE NEVER USER', 'LOGIN-DELAY 0 USER']",
            "['EXPIRE 5']"
        ]
    );

    // other.example logs in with PLAIN only: USER/PASS with the right password is refused as
    // a failed login; AUTH PLAIN works, once per LOGIN-DELAY.
    let out = poplib(
        server.pop3.port(),
        "c, r = session('bob@other.example', 'builder')\n\
         print(r)\n\
         c.close()\n\
         token = base64.b64encode(b'\\0bob@other.example\\0builder').decode()\n\
         c = poplib.POP3('127.0.0.1', PORT)\n\
         print(raw(c, 'AUTH PLAIN ' + token))\n\
         print(sorted(k + ' ' + ' '.join(v) for k, v in c.capa().items() if k == 'LOGIN-DELAY'))\n\
         c.quit()\n\
         c = poplib.POP3('127.0.0.1', PORT)\n\
         print(raw(c, 'AUTH PLAIN ' + token))\n"
            .replace("PORT", &server.pop3.port().to_string())
            .as_str(),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].ends_with("-ERR [AUTH] Authentication failed"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("+OK"),
        "{out}\n{}",
        server.logs().join("\n")
    );
    assert_eq!(lines[2], "['LOGIN-DELAY 60']");
    assert!(lines[3].starts_with("-ERR [LOGIN-DELAY]"), "{out}");
    let log = server.logs().join("\n");
    assert!(log.contains("USER is not among the login methods"), "{log}");
}

/// `check-config` catches one domain written twice (UTF-8 and punycode), a domain set in two
/// places, an unknown login method, and bare users a default domain would hide.
#[test]
fn check_config_explains_domain_mistakes() {
    let mut b = ServerBuilder::new();
    b.set("auth.default_domain", "example.org");
    let mut domains = toml::Table::new();
    for (k, v) in [
        ("bücher.example", "expire = 5"),
        ("XN--BCHER-KVA.example", "login_delay = 5"),
        (
            "other.example",
            "expire = 1\nmechanisms = [\"PLAIN\", \"CARRIER-PIGEON\"]",
        ),
    ] {
        domains.insert(k.into(), toml::from_str::<toml::Value>(v).unwrap());
    }
    b.set("domains", toml::Value::Table(domains));
    b.set(
        "pop3.expire_overrides",
        toml::from_str::<toml::Value>("\"other.example\" = 3").unwrap(),
    );
    let config = b.write_config();
    std::fs::create_dir_all(b.data_dir()).unwrap();
    std::fs::write(b.data_dir().join("users"), "legacy:{PLAIN}x\n").unwrap();
    let (ok, text) = common::check_config(&config);
    assert!(!ok, "{text}");
    for needle in [
        "are the same domain (xn--bcher-kva.example)",
        "other.example is set both in [domains.\"other.example\"] and in pop3.expire_overrides",
        "CARRIER-PIGEON is not a login method",
        "cannot log in: legacy",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
}
