//! Kerberos 5 with a real MIT KDC (Debian's krb5-kdc, started by the test): SASL GSSAPI on
//! the KPOP listener (port 1109 style, Kerberos the only login) and on the POP3 listener,
//! through fetchmail (`proto KPOP`, `auth gssapi`), mpop (`auth gssapi`), curl
//! (`AUTH=GSSAPI`) and `poplar fetch kpop://`, every message retrieved byte-exact; and the
//! bad cases (another service's ticket, an expired one, a principal with no user, garbage
//! tokens, a security layer Poplar does not offer, another identity) refused with `[AUTH]`,
//! after the failure delay, with no crash.
#![cfg(feature = "gssapi")]
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::kdc::Kdc;
use common::{ServerBuilder, tool};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

const MESSAGE: &[u8] = b"From: bob@example.org\r\nSubject: Kerberos\r\n\r\nLines:\r\n.starts with a dot\r\n\r\nend\r\n";

struct Setup {
    kdc: Kdc,
    server: common::Server,
    kpop: SocketAddr,
}

fn setup() -> Setup {
    let kdc = Kdc::start();
    let mut b = ServerBuilder::new();
    b.set("hostname", "localhost");
    b.set(
        "listen.kpop",
        toml::Value::Array(vec!["127.0.0.1:0".into()]),
    );
    b.set("auth.gssapi.keytab", kdc.keytab().to_str().unwrap());
    b.set("auth.failure_delay", "300ms");
    b.set("auth.penalty_cap", "300ms");
    for (k, v) in kdc.env("server-ccache") {
        b.env(&k, &v);
    }
    let server = b.start();
    let kpop = server
        .wait_for_log("listening for KPOP on ")
        .split("listening for KPOP on ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    server.add_user("alice", "a password Kerberos users never type");
    assert!(server.deliver(&["alice"], MESSAGE).success());
    Setup { kdc, server, kpop }
}

/// A command run as the holder of ticket cache `cache`.
fn as_user(kdc: &Kdc, cache: &str, program: &str) -> Command {
    let mut cmd = tool(program);
    cmd.envs(kdc.env(cache));
    cmd
}

/// Message 1 by curl, logging in with alice's ticket (curl names her principal as the identity
/// to act as).
fn curl_gssapi(kdc: &Kdc, url: &str) -> Vec<u8> {
    let out = as_user(kdc, "alice", "curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            "--login-options",
            "AUTH=GSSAPI",
            "-u",
        ])
        .arg(format!("alice@{}:", common::kdc::REALM))
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn real_clients_log_in_with_kerberos_and_retrieve_mail_byte_exact() {
    let s = setup();
    s.kdc.kinit("alice", "alicepw", "alice", "1h");
    let port = s.kpop.port().to_string();

    // CAPA on the KPOP listener: GSSAPI and nothing else to log in with.
    let capa = common::python(&format!(
        "import poplib\np = poplib.POP3('127.0.0.1', {port})\nprint(p.capa())\np.quit()"
    ));
    assert!(capa.contains("'SASL': ['GSSAPI']"), "{capa}");
    assert!(!capa.contains("'USER': []"), "{capa}");
    assert!(capa.contains("'UTF8': []"), "UTF8 without USER: {capa}");

    // poplar fetch kpop://
    let home = tempfile::tempdir().unwrap();
    let maildir = home.path().join("Maildir");
    let out = as_user(&s.kdc, "alice", common::BIN)
        .args(["fetch", &format!("kpop://localhost:{port}"), "--keep"])
        .arg("--to")
        .arg(format!("maildir:{}", maildir.display()))
        .arg("--journal")
        .arg(home.path().join("journal"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fetched: Vec<_> = std::fs::read_dir(maildir.join("new")).unwrap().collect();
    assert_eq!(fetched.len(), 1);
    assert_eq!(
        std::fs::read(fetched[0].as_ref().unwrap().path()).unwrap(),
        MESSAGE
    );

    // curl.
    assert_eq!(
        curl_gssapi(&s.kdc, &format!("pop3://localhost:{port}/1")),
        MESSAGE
    );

    // fetchmail, proto KPOP with auth gssapi, handing the message to an MDA.
    let fm = home.path().join("fetchmail.out");
    let (code, text) = common::fetchmail_with_env(
        home.path(),
        &format!(
            "poll localhost proto KPOP port {port} auth gssapi user alice is root sslproto '' keep\n  mda \"cat > {}\"\n",
            fm.display()
        ),
        &["-v".as_ref()],
        &s.kdc.env("alice"),
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("AUTH GSSAPI"), "{text}");
    // fetchmail adds its Received: line and writes LF line ends.
    let got = std::fs::read_to_string(&fm).unwrap();
    let body = String::from_utf8_lossy(MESSAGE).replace("\r\n", "\n");
    assert!(got.ends_with(&body), "{got:?}");

    // mpop, auth gssapi over the KPOP listener (tls off: Kerberos protects the login).
    let mp = home.path().join("mpop.out");
    let (ok, text) = common::mpop_with_env(
        &home.path().join("mpoprc"),
        &format!(
            "account k\nhost localhost\nport {port}\ntls off\nauth gssapi\nuser alice\nkeep on\ndelivery mda \"cat > {}\"\n",
            mp.display()
        ),
        "k",
        &s.kdc.env("alice"),
    );
    assert!(ok, "{text}");
    // mpop prepends its Received: header and, like fetchmail, hands the MDA LF line ends.
    let got = std::fs::read_to_string(&mp).unwrap();
    assert!(got.ends_with(&body), "{got:?}");

    // The POP3 listener offers GSSAPI too, beside the other logins.
    assert_eq!(
        curl_gssapi(
            &s.kdc,
            &format!("pop3://localhost:{}/1", s.server.pop3.port())
        ),
        MESSAGE
    );
    // Every login above was Kerberos (the last summary line may follow curl's exit).
    let sessions = common::eventually(Duration::from_secs(10), "five sessions", || {
        let sessions: Vec<String> = s
            .server
            .logs()
            .into_iter()
            .filter(|l| l.contains("session ended") && l.contains("user=\"alice\""))
            .collect();
        (sessions.len() >= 5).then_some(sessions)
    });
    assert!(
        sessions.iter().all(|l| l.contains("mechanism=\"GSSAPI\"")),
        "{sessions:?}"
    );
}

/// Bad Kerberos logins, driven by python's gssapi module (Debian's python3-gssapi) so each
/// token can be made wrong in its own way.
#[test]
fn bad_tickets_and_tokens_are_refused_with_auth_after_the_delay() {
    let s = setup();
    s.kdc.kinit("alice", "alicepw", "alice", "1h");
    s.kdc.kinit("bob", "bobpw", "bob", "1h");
    s.kdc.kinit("alice", "alicepw", "short", "4s");
    let script = r#"
import base64, gssapi, json, socket, sys, time
port = int(sys.argv[1])
case = sys.argv[2]

def connect():
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")
    f.readline()
    return s, f

def send(s, f, line):
    s.sendall(line.encode() + b"\r\n")
    return f.readline().decode().rstrip()

def b64(data):
    return base64.b64encode(data).decode() or "="

def context(service="pop@localhost"):
    name = gssapi.Name(service, gssapi.NameType.hostbased_service)
    return gssapi.SecurityContext(name=name, usage="initiate", mech=gssapi.MechType.kerberos)

def login(layer=1, authzid=b"", service="pop@localhost", wait=0):
    s, f = connect()
    ctx = context(service)
    token = ctx.step()
    time.sleep(wait)
    started = time.monotonic()
    reply = send(s, f, "AUTH GSSAPI " + b64(token))
    while reply.startswith("+ "):
        challenge = base64.b64decode(reply[2:])
        if not ctx.complete:
            out = ctx.step(challenge)
            reply = send(s, f, b64(out or b""))
            continue
        assert ctx.unwrap(challenge).message == b"\x01\x00\x00\x00"
        answer = bytes([layer]) + b"\x00\x10\x00" + authzid
        reply = send(s, f, b64(ctx.wrap(answer, False).message))
    took = time.monotonic() - started
    after = send(s, f, "STAT") if reply.startswith("+OK") else ""
    s.close()
    return {"reply": reply, "took": took, "stat": after}

if case == "good":
    print(json.dumps(login()))
elif case == "layer":
    print(json.dumps(login(layer=4)))
elif case == "authzid":
    print(json.dumps(login(authzid=b"root")))
elif case == "service":
    print(json.dumps(login(service="imap@localhost")))
elif case == "expired":
    print(json.dumps(login(wait=8)))
elif case == "garbage":
    out = []
    for token in [b"garbage", b"\x60\x82\xff\xff", b"\x00" * 5000, b""]:
        s, f = connect()
        started = time.monotonic()
        reply = send(s, f, "AUTH GSSAPI " + b64(token))
        if reply.startswith("+ "):
            reply = send(s, f, b64(b"\x60\x03\x06\x01\x00"))
        out.append({"reply": reply, "took": time.monotonic() - started})
        s.close()
    print(json.dumps(out))
"#;
    let run = |cache: &str, case: &str| -> serde_json::Value {
        let out = as_user(&s.kdc, cache, "/usr/bin/python3")
            .args(["-c", script, &s.kpop.port().to_string(), case])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let auth = |v: &serde_json::Value, what: &str| {
        let reply = v["reply"].as_str().unwrap();
        assert!(reply.starts_with("-ERR [AUTH]"), "{what}: {reply}");
        // Failures pay the failure delay, as wrong passwords do.
        assert!(v["took"].as_f64().unwrap() >= 0.25, "{what}: {v}");
    };

    // The python client itself works: the offer is "no layer, no buffer".
    let good = run("alice", "good");
    assert!(good["reply"].as_str().unwrap().starts_with("+OK"), "{good}");
    assert!(
        good["stat"].as_str().unwrap().starts_with("+OK 1 "),
        "{good}"
    );

    auth(&run("alice", "service"), "a ticket for imap/localhost");
    auth(&run("bob", "good"), "bob, who has no Poplar user");
    auth(&run("short", "expired"), "an expired ticket");
    let layer = run("alice", "layer");
    assert!(
        layer["reply"].as_str().unwrap().starts_with("-ERR"),
        "{layer}"
    );
    auth(&run("alice", "authzid"), "alice asking to act as root");
    for (i, v) in run("alice", "garbage")
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let reply = v["reply"].as_str().unwrap();
        assert!(reply.starts_with("-ERR"), "garbage {i}: {reply}");
    }
    // The logs name each real cause; the server is still serving.
    let logs = s.server.logs().join("\n");
    for cause in [
        "Kerberos refused the client's token",
        "who does not exist here",
        "only 0x01 (none, as offered) is supported",
        "not allowed to act as another user",
    ] {
        assert!(logs.contains(cause), "no {cause:?} in the log:\n{logs}");
    }
    let good = run("alice", "good");
    assert!(good["reply"].as_str().unwrap().starts_with("+OK"), "{good}");

    // Without a ticket, poplar fetch says what to do before it connects a login.
    let home = tempfile::tempdir().unwrap();
    let out = as_user(&s.kdc, "nobody-has-this-cache", common::BIN)
        .args(["fetch", &format!("kpop://localhost:{}", s.kpop.port())])
        .arg("--to")
        .arg(format!("maildir:{}", home.path().join("M").display()))
        .arg("--journal")
        .arg(home.path().join("journal"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("kinit"), "{text}");
}
