//! Least privilege and exposure: giving up root after binding, private file modes, and
//! certificate reloads on SIGHUP that leave running sessions alone.
//!
//! The privilege cases need root (as CI has); set `POPLAR_SKIP_ROOT_TESTS=1` to skip them
//! where that is impossible.

#![allow(clippy::unwrap_used, clippy::print_stderr, missing_docs)]

mod common;

use common::{Client, ServerBuilder, tls_config};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        common::skip_root_test("not running as root");
    }
    root
}

/// A free port below 1024, which only root may bind.
fn privileged_port() -> u16 {
    (600..1000)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .unwrap()
}

/// (uid, gid, supplementary groups) of a process.
fn credentials(pid: u32) -> (Vec<u32>, Vec<u32>, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ids = |key: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap()
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    };
    let groups = status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .unwrap()
        .trim()
        .to_owned();
    (ids("Uid:"), ids("Gid:"), groups)
}

fn id(flag: &str, name: &str) -> u32 {
    let out = Command::new("id").args([flag, name]).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Every path under `dir` with its owner and mode.
fn walk(dir: &Path, out: &mut Vec<(std::path::PathBuf, u32, u32, bool)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        out.push((
            entry.path(),
            meta.uid(),
            meta.permissions().mode() & 0o7777,
            meta.is_dir(),
        ));
        if meta.is_dir() {
            walk(&entry.path(), out);
        }
    }
}

#[test]
fn serve_as_root_binds_then_runs_as_the_configured_user() {
    if !is_root() {
        return;
    }
    let (nobody, nogroup) = (id("-u", "nobody"), id("-g", "nobody"));
    let port = privileged_port();
    let mut b = ServerBuilder::new();
    b.set("user", "nobody");
    let addr = format!("127.0.0.1:{port}");
    b.set(
        "listen.pop3",
        toml::Value::Array(vec![addr.as_str().into()]),
    );
    let data = b.data_dir();
    // Files root made before the first start, as an administrator would.
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("notes.txt"), "root's").unwrap();
    let server = b.start();
    assert_eq!(server.pop3, addr.parse::<SocketAddr>().unwrap());
    server.wait_for_log("gave up root privileges");
    let (uids, gids, groups) = credentials(server.pid());
    assert_eq!(
        uids, [nobody; 4],
        "real, effective, saved and file-system uid"
    );
    assert_eq!(gids, [nogroup; 4]);
    assert!(
        !groups.split_whitespace().any(|g| g == "0"),
        "still in group root: {groups}"
    );
    // `user add` and `deliver` run as root switch too, so the server can use their files.
    server.add_user("alice", "wonderland");
    assert!(
        server
            .deliver(&["alice"], b"Subject: hi\r\n\r\nfrom root's deliver\r\n")
            .success()
    );
    let (mut c, _) = Client::connect(server.pop3);
    let c2 = c.login("alice", "wonderland");
    assert!(
        c2.starts_with("+OK Logged in, maildrop has 1 message"),
        "{c2}"
    );
    assert!(c.cmd("RETR 1").starts_with("+OK"));
    assert_eq!(c.body(), b"Subject: hi\r\n\r\nfrom root's deliver\r\n");
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    // STLS still works: the key was loaded, and stays readable, after the switch.
    let (c, _) = Client::connect(server.pop3);
    let mut c = c.starttls(&server.cert());
    assert!(c.login("alice", "wonderland").starts_with("+OK Logged in"));
    drop(c);
    // Everything in the data directory is the user's and nobody else may read it.
    let mut all = Vec::new();
    walk(&data, &mut all);
    assert!(all.len() > 8, "{all:?}");
    for (path, uid, mode, dir) in &all {
        assert_eq!(*uid, nobody, "{} is not owned by nobody", path.display());
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", path.display());
        if *dir {
            assert_eq!(*mode, 0o700, "{}", path.display());
        }
    }
    // A SIGHUP reload reads the key as the unprivileged user.
    Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    server.wait_for_log("SIGHUP: reloaded the TLS certificate and key");
}

#[test]
fn root_without_a_user_warns_how_to_stop_running_as_root() {
    if !is_root() {
        return;
    }
    let server = ServerBuilder::new().start();
    let line = server.wait_for_log("running as root");
    assert!(line.contains("user = \"poplar\""), "{line}");
}

/// Starts `serve --config CONFIG`, which must refuse to start;
/// returns what it printed on standard error.
fn refused_start(config: &Path) -> String {
    let out = Command::new(common::BIN)
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    err
}

#[test]
fn a_user_that_does_not_exist_is_refused_with_advice() {
    let mut b = ServerBuilder::new();
    b.set("user", "no-such-poplar-user");
    let config = b.write_config();
    let err = refused_start(&config);
    assert!(err.contains("no such user"), "{err}");
    assert!(err.contains("useradd"), "{err}");
}

/// A self-signed certificate and key for localhost, in PEM.
fn certificate(org: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, org);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Whether a TLS handshake with `addr` succeeds when only `cert` is trusted.
fn handshake_trusting(addr: SocketAddr, cert: &Path) -> bool {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(tls_config(cert), name).unwrap();
    while conn.is_handshaking() {
        if conn.complete_io(&mut tcp).is_err() {
            return false;
        }
    }
    true
}

#[test]
fn sighup_reloads_the_certificate_without_dropping_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (old_cert, old_key) = certificate("Old");
    let (new_cert, new_key) = certificate("New");
    let (trust_old, trust_new) = (dir.path().join("old.pem"), dir.path().join("new.pem"));
    std::fs::write(&trust_old, &old_cert).unwrap();
    std::fs::write(&trust_new, &new_cert).unwrap();
    std::fs::write(&cert, &old_cert).unwrap();
    std::fs::write(&key, &old_key).unwrap();
    let mut b = ServerBuilder::new();
    b.set("tls.cert", cert.to_str().unwrap());
    b.set("tls.key", key.to_str().unwrap());
    let server = b.start();
    server.add_user("alice", "wonderland");
    server.add_user("bob", "builder");
    // A session that must survive the reload, on implicit TLS and on STLS.
    let (mut running, _) = Client::connect_tls(server.pop3s, &trust_old);
    assert!(running.login("alice", "wonderland").starts_with("+OK"));
    let (upgraded, _) = Client::connect(server.pop3);
    let mut upgraded = upgraded.starttls(&trust_old);
    assert!(handshake_trusting(server.pop3s, &trust_old));
    assert!(!handshake_trusting(server.pop3s, &trust_new));

    // A renewal: new files, then SIGHUP.
    std::fs::write(&cert, &new_cert).unwrap();
    std::fs::write(&key, &new_key).unwrap();
    let hup = || {
        Command::new("kill")
            .args(["-HUP", &server.pid().to_string()])
            .status()
            .unwrap()
    };
    hup();
    server.wait_for_log("SIGHUP: reloaded the TLS certificate and key");
    assert!(handshake_trusting(server.pop3s, &trust_new));
    assert!(!handshake_trusting(server.pop3s, &trust_old));
    let (c, _) = Client::connect(server.pop3);
    let mut c = c.starttls(&trust_new);
    let r = c.login("bob", "builder");
    assert!(r.starts_with("+OK"), "{r}");
    drop(c);
    // The sessions from before carry on.
    assert!(running.cmd("STAT").starts_with("+OK"));
    assert!(upgraded.cmd("CAPA").starts_with("+OK"));

    // A broken renewal keeps the working certificate.
    std::fs::write(&key, "not a key").unwrap();
    hup();
    let line = server.wait_for_log("still using the previous certificate");
    assert!(line.contains("ERROR"), "{line}");
    assert!(handshake_trusting(server.pop3s, &trust_new));
}

#[test]
fn tls_is_1_2_or_1_3_with_forward_secret_aead_suites_only() {
    let server = ServerBuilder::new().start();
    // OpenSSL (through Python) offers what rustls refuses: the server must answer each old
    // offer with a handshake failure of its own, not a client-side refusal.
    let script = r#"
import ssl, socket, sys, warnings
warnings.simplefilter("ignore")
port = int(sys.argv[1])
def attempt(minv, maxv, ciphers=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version, ctx.maximum_version = minv, maxv
    if ciphers:
        ctx.set_ciphers(ciphers)
    try:
        with socket.create_connection(("127.0.0.1", port)) as s, ctx.wrap_socket(s) as t:
            return "ok " + t.version() + " " + t.cipher()[0]
    except ssl.SSLError as e:
        return "refused " + e.reason
V = ssl.TLSVersion
print(attempt(V.TLSv1, V.TLSv1_1, "DEFAULT:@SECLEVEL=0"))
print(attempt(V.TLSv1_2, V.TLSv1_2, "AES128-SHA:AES256-SHA:AES128-SHA256:AES128-GCM-SHA256:DES-CBC3-SHA:@SECLEVEL=0"))
print(attempt(V.TLSv1_2, V.TLSv1_2, "ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA256:@SECLEVEL=0"))
print(attempt(V.TLSv1_2, V.TLSv1_2))
print(attempt(V.TLSv1_3, V.TLSv1_3))
"#;
    let out = Command::new("python3")
        .args(["-c", script, &server.pop3s.port().to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        5,
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for refused in &lines[..3] {
        assert_eq!(*refused, "refused SSLV3_ALERT_HANDSHAKE_FAILURE", "{text}");
    }
    assert!(lines[3].starts_with("ok TLSv1.2 ECDHE-"), "{text}");
    assert!(
        lines[3].contains("GCM") || lines[3].contains("CHACHA20"),
        "{text}"
    );
    assert!(lines[4].starts_with("ok TLSv1.3 TLS_"), "{text}");
}

/// `poplar serve` started by a shell that first runs `ulimits` (and the builder that owns its
/// directory).
fn serve_with_ulimit(ulimits: &str) -> (common::Running, ServerBuilder) {
    let b = ServerBuilder::new();
    let config = b.write_config();
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        &format!(
            "{ulimits}; exec '{}' serve --config '{}'",
            common::BIN,
            config.display()
        ),
    ])
    .stdout(std::process::Stdio::null());
    (common::spawn_server(cmd, true), b)
}

fn soft_nofile(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .nth(3)
        .unwrap()
        .to_owned()
}

#[test]
fn the_descriptor_limit_is_raised_or_its_shortage_reported() {
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let hard = hard.to_string();
    let (mut raised, _dir) = serve_with_ulimit("ulimit -Sn 256");
    assert_eq!(
        soft_nofile(raised.child.id()),
        hard,
        "soft limit not raised"
    );
    let _ = raised.child.kill();
    let _ = raised.child.wait();
    // Soft and hard both 512: not enough for the default 1000 connections.
    let (mut short, _dir2) = serve_with_ulimit("ulimit -n 512");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let warning = loop {
        let logs = short.logs.lock().unwrap().clone();
        if let Some(l) = logs
            .into_iter()
            .find(|l| l.contains("file descriptors are available"))
        {
            break l;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no descriptor warning"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(warning.contains("only 512"), "{warning}");
    assert!(warning.contains("LimitNOFILE"), "{warning}");
    let _ = short.child.kill();
    let _ = short.child.wait();
}

/// Started as root, the server works in a data directory the service user owns before it gives
/// up root. A compromised service account may have planted links there: root must never write,
/// chown or chmod through them (the temporary files it writes, the ownership it hands over).
#[test]
fn root_never_follows_links_the_service_user_planted() {
    if !is_root() {
        return;
    }
    let outside = tempfile::tempdir().unwrap();
    let victim = |name: &str| {
        let path = outside.path().join(name);
        std::fs::write(&path, "root's own file").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path
    };
    let (secret_victim, key_victim, chown_victim) =
        (victim("secret"), victim("key"), victim("chown"));
    let mut b = ServerBuilder::new();
    b.set("user", "nobody");
    let data = b.data_dir();
    let config = b.write_config();
    // A first start makes the data directory the service user's.
    let (_, kept) = b.start().stop();
    // What the service account then plants.
    std::fs::remove_file(data.join("auth-secret")).unwrap();
    std::os::unix::fs::symlink(&secret_victim, data.join("auth-secret.tmp")).unwrap();
    std::fs::remove_file(data.join("tls/key.pem")).unwrap();
    std::os::unix::fs::symlink(&key_victim, data.join("tls/key.pem.tmp")).unwrap();
    std::os::unix::fs::symlink(&chown_victim, data.join("planted")).unwrap();
    let mut cmd = Command::new(common::BIN);
    cmd.args(["serve", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null());
    let mut running = common::spawn_server(cmd, true);
    let _ = running.child.kill();
    let _ = running.child.wait();
    for path in [&secret_victim, &key_victim, &chown_victim] {
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            "root's own file",
            "{}",
            path.display()
        );
        assert_eq!(meta.uid(), 0, "{} was given away", path.display());
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o644,
            "{}",
            path.display()
        );
    }
    // The secret and the key were written anew in place of the links.
    assert_eq!(std::fs::read(data.join("auth-secret")).unwrap().len(), 32);
    assert!(
        std::fs::read_to_string(data.join("tls/key.pem"))
            .unwrap()
            .contains("PRIVATE KEY")
    );
    // A tls/ that is itself a link elsewhere is refused, and nothing is written there.
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::rename(data.join("tls"), data.join("tls.old")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), data.join("tls")).unwrap();
    let err = refused_start(&config);
    assert!(err.contains("is a symbolic link, not a directory"), "{err}");
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    drop(kept);
}
