//! Client autoconfiguration: each document fetched with curl, parsed the way its clients parse
//! it (python's XML parser against Mozilla's and Microsoft's documented shapes, `plistlib` for
//! Apple's), then followed literally: the server, port, socket type and user name it gives are
//! used to log in with python's poplib and curl and retrieve a message. Hostile addresses are
//! escaped or refused, and a document never tells existing users from unknown ones.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{ServerBuilder, curl, python, tool};

struct Fixture {
    server: common::Server,
    http: String,
}

fn fixture() -> Fixture {
    let mut b = ServerBuilder::new();
    b.set("autoconfig.listen", "127.0.0.1:0");
    b.set(
        "autoconfig.domains",
        toml::Value::Array(vec!["example.org".into(), "bare.example".into()]),
    );
    // The test certificate is for localhost.
    b.set("autoconfig.public_host", "localhost");
    b.set("autoconfig.submission", "smtp.example.org:465");
    b.set("pop3.expire", 14);
    // A domain's own LOGIN-DELAY becomes its clients' check interval.
    let mut domains = toml::Table::new();
    domains.insert(
        "bare.example".into(),
        toml::from_str::<toml::Value>("login_delay = 300").unwrap(),
    );
    b.set("domains", toml::Value::Table(domains));
    let server = b.start();
    server.add_user("alice@example.org", "wonder land");
    server.add_user("bob", "builder");
    assert!(
        server
            .deliver(
                &["alice@example.org"],
                b"Subject: for alice\n\nhello alice\n"
            )
            .success()
    );
    assert!(
        server
            .deliver(&["bob"], b"Subject: for bob\n\nhello bob\n")
            .success()
    );
    let http = autoconfig_address(&server);
    Fixture { server, http }
}

/// The address the autoconfiguration listener bound, from the server's log.
fn autoconfig_address(server: &common::Server) -> String {
    let line = server.wait_for_log("client autoconfiguration for");
    let url = line.split("http://").nth(1).unwrap();
    url.split('/').next().unwrap().to_owned()
}

/// (HTTP status, body) of a request made with curl.
fn fetch(args: &[&str]) -> (u16, Vec<u8>) {
    let out = tool("curl")
        .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = out.stdout;
    let cut = text.iter().rposition(|&b| b == b'\n').unwrap();
    let status = std::str::from_utf8(&text[cut + 1..])
        .unwrap()
        .parse()
        .unwrap();
    (status, text[..cut].to_vec())
}

/// Python that logs in as a client following a document would, and prints the first
/// message's Subject: `how` is `pop3s` or `starttls`.
fn login_script(cert: &std::path::Path) -> String {
    format!(
        "import poplib, ssl\n\
         ctx = ssl.create_default_context(cafile={cert:?})\n\
         def subject(host, port, how, user, password):\n\
         \x20   if how == 'pop3s':\n\
         \x20       c = poplib.POP3_SSL(host, port, context=ctx)\n\
         \x20   else:\n\
         \x20       c = poplib.POP3(host, port)\n\
         \x20       c.stls(context=ctx)\n\
         \x20   c.user(user); c.pass_(password)\n\
         \x20   lines = c.retr(1)[1]\n\
         \x20   c.quit()\n\
         \x20   return [l.decode() for l in lines if l.startswith(b'Subject:')][0]\n",
        cert = cert.display().to_string()
    )
}

#[test]
fn thunderbird_autoconfig_is_followed_to_a_login_over_both_listeners() {
    let f = fixture();
    let url = format!(
        "http://{}/mail/config-v1.1.xml?emailaddress=alice%40example.org",
        f.http
    );
    let doc = curl(&[&url]);
    let doc_path = f.server.dir().join("config-v1.1.xml");
    std::fs::write(&doc_path, &doc).unwrap();
    // Mozilla's rules: clientConfig 1.1, one emailProvider whose id is the domain, domain,
    // displayName, and each incomingServer with hostname, port, socketType, authentication
    // and username; POP3S first.
    let out = python(&format!(
        "{login}\
         import xml.etree.ElementTree as ET\n\
         root = ET.parse({doc:?}).getroot()\n\
         assert root.tag == 'clientConfig' and root.get('version') == '1.1'\n\
         p = root.find('emailProvider')\n\
         assert p.get('id') == 'example.org' and p.findtext('domain') == 'example.org'\n\
         assert p.findtext('displayName')\n\
         servers = p.findall('incomingServer')\n\
         assert [s.get('type') for s in servers] == ['pop3', 'pop3'], servers\n\
         assert [s.findtext('socketType') for s in servers] == ['SSL', 'STARTTLS']\n\
         for s in servers:\n\
         \x20   for tag in ('hostname', 'port', 'socketType', 'authentication', 'username'):\n\
         \x20       assert s.findtext(tag), tag\n\
         \x20   assert [a.text for a in s.findall('authentication')] == ['password-cleartext']\n\
         \x20   o = s.find('pop3')\n\
         \x20   assert o.findtext('leaveMessagesOnServer') == 'true'\n\
         \x20   assert o.findtext('daysToLeaveMessagesOnServer') == '14'\n\
         \x20   assert o.find('checkInterval') is None\n\
         \x20   user = s.findtext('username').replace('%EMAILADDRESS%', 'alice@example.org')\n\
         \x20   how = 'pop3s' if s.findtext('socketType') == 'SSL' else 'starttls'\n\
         \x20   print(s.findtext('port'), subject(s.findtext('hostname'), int(s.findtext('port')), how, user, 'wonder land'))\n\
         o = p.find('outgoingServer')\n\
         assert o.get('type') == 'smtp' and o.findtext('port') == '465' and o.findtext('socketType') == 'SSL'\n",
        login = login_script(&f.server.cert()),
        doc = doc_path.display().to_string()
    ));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!("{} Subject: for alice", f.server.pop3s.port()),
            format!("{} Subject: for alice", f.server.pop3.port())
        ]
    );
    // curl follows it too, over POP3S.
    let fetched = curl(&[
        "--cacert",
        f.server.cert().to_str().unwrap(),
        "-u",
        "alice@example.org:wonder land",
        &format!("pop3s://localhost:{}/1", f.server.pop3s.port()),
    ]);
    assert!(String::from_utf8(fetched).unwrap().contains("hello alice"));

    // The well-known path, asked by host name without an address, gives the same document.
    let (status, same) = fetch(&[
        "-H",
        "Host: autoconfig.example.org",
        &format!(
            "http://{}/.well-known/autoconfig/mail/config-v1.1.xml",
            f.http
        ),
    ]);
    assert_eq!((status, same), (200, doc.clone()));
    // An unknown user of the domain gets exactly the same answer: nothing is revealed.
    let other = curl(&[&url.replace("alice", "nobody")]);
    assert_eq!(other, doc);

    // A domain whose users are bare names gets %EMAILLOCALPART%, and that logs bob in.
    let bare = curl(&[&format!(
        "http://{}/mail/config-v1.1.xml?emailaddress=bob%40bare.example",
        f.http
    )]);
    let text = String::from_utf8(bare).unwrap();
    assert!(
        text.contains("<username>%EMAILLOCALPART%</username>"),
        "{text}"
    );
    let out = python(&format!(
        "{}print(subject('localhost', {}, 'pop3s', 'bob', 'builder'))\n",
        login_script(&f.server.cert()),
        f.server.pop3s.port()
    ));
    assert_eq!(out.trim(), "Subject: for bob");
}

#[test]
fn autodiscover_and_apple_profiles_are_followed_to_a_login() {
    let f = fixture();
    let request = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006\">\n<Request><EMailAddress>alice@example.org</EMailAddress>\n<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>";
    let doc = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: text/xml",
        "--data-binary",
        request,
        &format!("http://{}/Autodiscover/Autodiscover.xml", f.http),
    ]);
    let path = f.server.dir().join("autodiscover.xml");
    std::fs::write(&path, &doc).unwrap();
    // Microsoft's documented response: Autodiscover/Response/Account with AccountType email,
    // Action settings and one Protocol per service.
    let out = python(&format!(
        "{login}\
         import xml.etree.ElementTree as ET\n\
         A = '{{http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006}}'\n\
         R = '{{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}}'\n\
         root = ET.parse({doc:?}).getroot()\n\
         assert root.tag == A + 'Autodiscover'\n\
         account = root.find(R + 'Response').find(R + 'Account')\n\
         assert account.findtext(R + 'AccountType') == 'email' and account.findtext(R + 'Action') == 'settings'\n\
         protocols = {{p.findtext(R + 'Type'): p for p in account.findall(R + 'Protocol')}}\n\
         assert set(protocols) == {{'POP3', 'SMTP'}}, protocols\n\
         p = protocols['POP3']\n\
         assert p.findtext(R + 'SSL') == 'on' and p.findtext(R + 'SPA') == 'off'\n\
         how = 'pop3s' if p.findtext(R + 'Encryption') == 'SSL' else 'starttls'\n\
         print(subject(p.findtext(R + 'Server'), int(p.findtext(R + 'Port')), how, p.findtext(R + 'LoginName'), 'wonder land'))\n",
        login = login_script(&f.server.cert()),
        doc = path.display().to_string()
    ));
    assert_eq!(out.trim(), "Subject: for alice");

    let profile = curl(&[&format!(
        "http://{}/apple/mail.mobileconfig?email=alice%40example.org",
        f.http
    )]);
    let path = f.server.dir().join("mail.mobileconfig");
    std::fs::write(&path, &profile).unwrap();
    // The same profile whichever name the link gives the address, and on a second download
    // (its identifiers are fixed per address, so installing it again replaces it).
    let again = curl(&[&format!(
        "http://{}/apple/mail.mobileconfig?emailaddress=alice%40example.org",
        f.http
    )]);
    assert_eq!(again, profile);
    let out = python(&format!(
        "{login}\
         import plistlib\n\
         p = plistlib.load(open({doc:?}, 'rb'))\n\
         assert p['PayloadType'] == 'Configuration' and p['PayloadVersion'] == 1\n\
         m = p['PayloadContent'][0]\n\
         assert m['PayloadType'] == 'com.apple.mail.managed' and m['EmailAccountType'] == 'EmailTypePOP'\n\
         assert m['EmailAddress'] == 'alice@example.org' and m['IncomingMailServerUseSSL'] is True\n\
         assert m['OutgoingMailServerPortNumber'] == 465\n\
         print(subject(m['IncomingMailServerHostName'], m['IncomingMailServerPortNumber'], 'pop3s', m['IncomingMailServerUsername'], 'wonder land'))\n",
        login = login_script(&f.server.cert()),
        doc = path.display().to_string()
    ));
    assert_eq!(out.trim(), "Subject: for alice");
}

#[test]
fn hostile_addresses_are_escaped_or_refused() {
    let f = fixture();
    let hostile = "<a href=\"x\">&'@example.org";
    let encoded: String = hostile.bytes().map(|b| format!("%{b:02X}")).collect();
    // Echoed only escaped: each document still parses, and gives back the text as sent.
    let profile = curl(&[&format!(
        "http://{}/apple/mail.mobileconfig?email={encoded}",
        f.http
    )]);
    let path = f.server.dir().join("hostile.mobileconfig");
    std::fs::write(&path, &profile).unwrap();
    let out = python(&format!(
        "import plistlib\nm = plistlib.load(open({:?}, 'rb'))['PayloadContent'][0]\nprint(m['EmailAddress'])\n",
        path.display().to_string()
    ));
    assert_eq!(out.trim_end(), hostile);
    let xml_hostile = hostile
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let request = format!(
        "<Autodiscover><Request><EMailAddress>{xml_hostile}</EMailAddress></Request></Autodiscover>"
    );
    let doc = curl(&[
        "-X",
        "POST",
        "--data-binary",
        &request,
        &format!("http://{}/autodiscover/autodiscover.xml", f.http),
    ]);
    let path = f.server.dir().join("hostile.xml");
    std::fs::write(&path, &doc).unwrap();
    let out = python(&format!(
        "import xml.etree.ElementTree as ET\n\
         R = '{{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}}'\n\
         root = ET.parse({:?}).getroot()\n\
         print(root.find(R + 'Response').find(R + 'Account').find(R + 'Protocol').findtext(R + 'LoginName'))\n",
        path.display().to_string()
    ));
    assert_eq!(out.trim_end(), hostile);

    // Refused: CRLF, 10 KiB, no domain; an unknown domain is not found.
    let base = format!("http://{}/mail/config-v1.1.xml?emailaddress=", f.http);
    for (query, status) in [
        ("a%0D%0ABcc%3A%20x%40example.org".to_owned(), 400),
        (format!("{}%40example.org", "a".repeat(10 * 1024)), 400),
        ("nobody".to_owned(), 400),
        ("alice%40elsewhere.example".to_owned(), 404),
    ] {
        let (got, body) = fetch(&[&format!("{base}{query}")]);
        assert_eq!(got, status, "{query}: {}", String::from_utf8_lossy(&body));
    }
    let (got, _) = fetch(&[&format!("http://{}/nothing", f.http)]);
    assert_eq!(got, 404);
}

/// `poplar autoconfig dns` prints the records; `--check` asks a real DNS server (dnsmasq,
/// serving a zone with some records right, one missing and one wrong) and says which.
#[test]
fn dns_records_are_printed_and_checked_against_a_real_resolver() {
    let mut b = ServerBuilder::new();
    b.set(
        "autoconfig.domains",
        toml::Value::Array(vec!["example.org".into()]),
    );
    b.set("autoconfig.public_host", "mail.example.org");
    b.set("autoconfig.pop3s_port", 995);
    b.set("autoconfig.pop3_port", 110);
    let config = b.write_config();
    let poplar = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_poplar"))
            .args(["autoconfig", "dns", "--domain", "example.org", "--config"])
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    };
    let (code, printed) = poplar(&[]);
    assert_eq!(code, Some(0));
    let records: Vec<&str> = printed.lines().filter(|l| !l.starts_with(';')).collect();
    assert_eq!(
        records,
        [
            "_pop3s._tcp.example.org. 3600 IN SRV 0 1 995 mail.example.org.",
            "_pop3._tcp.example.org. 3600 IN SRV 10 1 110 mail.example.org.",
            "_submission._tcp.example.org. 3600 IN SRV 0 1 587 mail.example.org.",
            "_autodiscover._tcp.example.org. 3600 IN SRV 0 1 443 mail.example.org.",
            "autoconfig.example.org. 3600 IN CNAME mail.example.org.",
            "autodiscover.example.org. 3600 IN CNAME mail.example.org.",
        ]
    );

    let port = common::free_port();
    let mut dnsmasq = std::process::Command::new("/usr/sbin/dnsmasq")
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--user=root",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            &format!("--port={port}"),
            "--host-record=mail.example.org,127.0.0.1",
            "--srv-host=_pop3s._tcp.example.org,mail.example.org,995,0,1",
            "--srv-host=_pop3._tcp.example.org,mail.example.org,110,10,1",
            "--srv-host=_submission._tcp.example.org,mail.example.org,587,0,1",
            // Wrong port; and autodiscover.example.org is missing.
            "--srv-host=_autodiscover._tcp.example.org,mail.example.org,8443,0,1",
            "--cname=autoconfig.example.org,mail.example.org",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let resolver = format!("127.0.0.1:{port}");
    let checked = common::eventually(
        std::time::Duration::from_secs(10),
        "dnsmasq answering",
        || {
            let (code, out) = poplar(&["--check", "--resolver", &resolver]);
            (!out.contains("NOT CHECKED")).then_some((code, out))
        },
    );
    let _ = dnsmasq.kill();
    let _ = dnsmasq.wait();
    let (code, out) = checked;
    assert_eq!(code, Some(1), "{out}");
    for expected in [
        "_pop3s._tcp.example.org. 3600 IN SRV 0 1 995 mail.example.org.: ok",
        "_pop3._tcp.example.org. 3600 IN SRV 10 1 110 mail.example.org.: ok",
        "_submission._tcp.example.org. 3600 IN SRV 0 1 587 mail.example.org.: ok",
        "_autodiscover._tcp.example.org. 3600 IN SRV 0 1 443 mail.example.org.: DIFFERENT: found _autodiscover._tcp.example.org. 3600 IN SRV 0 1 8443 mail.example.org.",
        "autoconfig.example.org. 3600 IN CNAME mail.example.org.: ok",
        "autodiscover.example.org. 3600 IN CNAME mail.example.org.: MISSING",
        "; 2 record(s) to fix",
    ] {
        assert!(out.contains(expected), "{expected:?} not in:\n{out}");
    }
}

#[test]
fn check_config_explains_autoconfig_mistakes() {
    let mut b = ServerBuilder::new();
    b.set("autoconfig.listen", "127.0.0.1:0");
    b.set("autoconfig.submission", "mail.example.org");
    let config = b.write_config();
    let (ok, text) = common::check_config(&config);
    assert!(!ok, "{text}");
    assert!(text.contains("autoconfig.domains is empty"), "{text}");
    assert!(text.contains("give host:port"), "{text}");
}

/// With `profile_cert` and `profile_key`, the Apple profile is a CMS SignedData that openssl
/// verifies against the certificate and whose content is the profile; for P-256 and RSA keys.
/// A key that is not the certificate's is refused by check-config.
#[test]
fn apple_profiles_are_signed_when_a_key_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str, newkey: &[&str]| {
        let (cert, key) = (
            dir.path().join(format!("{name}.crt")),
            dir.path().join(format!("{name}.key")),
        );
        let status = tool("openssl")
            .args([
                "req",
                "-x509",
                "-nodes",
                "-days",
                "30",
                "-subj",
                "/CN=Profile signer",
            ])
            .args(newkey)
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        (cert, key)
    };
    let ec = make(
        "ec",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
    );
    let rsa = make("rsa", &["-newkey", "rsa:2048"]);
    for (cert, key) in [&ec, &rsa] {
        let mut b = ServerBuilder::new();
        b.set("autoconfig.listen", "127.0.0.1:0");
        b.set(
            "autoconfig.domains",
            toml::Value::Array(vec!["example.org".into()]),
        );
        b.set("autoconfig.public_host", "localhost");
        b.set("autoconfig.profile_cert", cert.to_str().unwrap());
        b.set("autoconfig.profile_key", key.to_str().unwrap());
        let server = b.start();
        let http = autoconfig_address(&server);
        let signed = curl(&[&format!(
            "http://{http}/apple/mail.mobileconfig?email=alice%40example.org"
        )]);
        let signed_path = dir.path().join("signed.mobileconfig");
        let plist_path = dir.path().join("verified.plist");
        std::fs::write(&signed_path, &signed).unwrap();
        let out = tool("openssl")
            .args(["cms", "-verify", "-inform", "DER", "-purpose", "any", "-in"])
            .arg(&signed_path)
            .arg("-CAfile")
            .arg(cert)
            .arg("-out")
            .arg(&plist_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let address = python(&format!(
            "import plistlib\nprint(plistlib.load(open({:?}, 'rb'))['PayloadContent'][0]['EmailAddress'])\n",
            plist_path.display().to_string()
        ));
        assert_eq!(address.trim(), "alice@example.org");
    }

    // The RSA key with the EC certificate: refused before anything is served.
    let mut b = ServerBuilder::new();
    b.set("autoconfig.listen", "127.0.0.1:0");
    b.set(
        "autoconfig.domains",
        toml::Value::Array(vec!["example.org".into()]),
    );
    b.set("autoconfig.profile_cert", ec.0.to_str().unwrap());
    b.set("autoconfig.profile_key", rsa.1.to_str().unwrap());
    let config = b.write_config();
    let (ok, text) = common::check_config(&config);
    assert!(!ok, "{text}");
    assert!(
        text.contains("is not the key of the first certificate"),
        "{text}"
    );
}
