//! A throwaway Dovecot from Debian's packages, for interoperability and migration tests.

use super::{free_port, tool};
use std::path::Path;
use std::process::Command;

/// A throwaway Dovecot (Debian's dovecot-core and dovecot-pop3d) on a loopback port, serving
/// the same Maildirs as Poplar, both as the unprivileged mail user `nobody`.
pub struct Dovecot {
    config: std::path::PathBuf,
    /// The POP3 port.
    pub port: u16,
    /// The POP3S port, when started with TLS.
    pub pop3s_port: Option<u16>,
}

impl Dovecot {
    /// Starts Dovecot with `extra` appended to its configuration (e.g. `pop3_uidl_format`).
    pub fn start(dir: &Path, mail_root: &Path, extra: &str) -> Self {
        Self::start_with_tls(dir, mail_root, extra, None)
    }

    /// Starts Dovecot, with POP3S on a second port when given a certificate and key.
    pub fn start_with_tls(
        dir: &Path,
        mail_root: &Path,
        extra: &str,
        tls: Option<(&Path, &Path)>,
    ) -> Self {
        let port = free_port();
        let pop3s_port = tls.map(|_| free_port());
        let ssl = match tls {
            Some((cert, key)) => format!(
                "ssl = yes\nssl_cert = <{}\nssl_key = <{}\n",
                cert.display(),
                key.display()
            ),
            None => "ssl = no\n".to_owned(),
        };
        let config = dir.join("dovecot.conf");
        std::fs::write(
            &config,
            format!(
                "base_dir = {d}/dovecot-run\nstate_dir = {d}/dovecot-state\nlog_path = {d}/dovecot.log\n\
                 {ssl}protocols = pop3\nlisten = 127.0.0.1\n\
                 mail_location = maildir:{m}/_default_/%u/Maildir\n\
                 disable_plaintext_auth = no\nauth_mechanisms = plain\n\
                 passdb {{\n  driver = static\n  args = password=pw\n}}\n\
                 userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={d}/home/%u\n}}\n\
                 service pop3-login {{\n  inet_listener pop3 {{\n    port = {port}\n  }}\n  inet_listener pop3s {{\n    port = {s}\n  }}\n}}\n{extra}\n",
                d = dir.display(),
                m = mail_root.display(),
                s = pop3s_port.unwrap_or(0),
            ),
        )
        .unwrap();
        let status = tool("dovecot").arg("-c").arg(&config).status().unwrap();
        assert!(status.success(), "dovecot did not start");
        let d = Dovecot {
            config,
            port,
            pop3s_port,
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return d;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("dovecot is not listening on {port}");
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("dovecot")
            .arg("-c")
            .arg(&self.config)
            .arg("stop")
            .status();
    }
}

/// Runs a command as the mail user, the way both servers would run in production.
pub fn as_mail_user(program: &str) -> Command {
    let mut cmd = tool("setpriv");
    cmd.args([
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        program,
    ]);
    cmd
}

/// UIDL listing from a POP3 server, by number.
pub fn uidls(addr: std::net::SocketAddr, user: &str, password: &str) -> Vec<String> {
    let (mut c, _) = super::Client::connect(addr);
    assert!(
        c.login(user, password).starts_with("+OK"),
        "login to {addr}"
    );
    assert!(c.cmd("UIDL").starts_with("+OK"));
    let list = String::from_utf8(c.body()).unwrap();
    assert!(c.cmd("QUIT").starts_with("+OK"));
    list.lines()
        .map(|l| l.split(' ').nth(1).unwrap().to_owned())
        .collect()
}

/// A self-signed end-entity certificate for `localhost` made by openssl in `dir`, readable by
/// Dovecot's unprivileged processes: (certificate, key).
pub fn certificate(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = tool("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        // An end-entity certificate: rustls refuses a CA certificate as a server's.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl req");
    let status = Command::new("chmod").arg("644").arg(&key).status().unwrap();
    assert!(status.success());
    (cert, key)
}
