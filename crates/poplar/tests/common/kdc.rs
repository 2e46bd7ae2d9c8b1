//! A throwaway MIT Kerberos KDC (Debian's krb5-kdc) for realm [`REALM`] on a loopback port,
//! with its database, configuration, keytabs and ticket caches in a temporary directory:
//! principals `alice` and `bob` (passwords `alicepw`, `bobpw`), the server's `pop/localhost`
//! (in `service.keytab`) and another service's `imap/localhost`. The allowed clock skew is 2 s
//! (instead of 5 minutes), so a ticket that expired a few seconds ago is refused as expired.

use super::{eventually, free_port, tool};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const REALM: &str = "POP3.TEST";

/// A running KDC, stopped when dropped.
pub struct Kdc {
    child: Child,
    dir: tempfile::TempDir,
}

impl Kdc {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let port = free_port();
        std::fs::write(
            d.join("krb5.conf"),
            format!(
                "[libdefaults]\n  default_realm = {REALM}\n  dns_lookup_kdc = false\n  dns_lookup_realm = false\n\
                 \x20 dns_canonicalize_hostname = false\n  rdns = false\n  udp_preference_limit = 1\n\
                 \x20 clockskew = 2\n\
                 [realms]\n  {REALM} = {{\n    kdc = 127.0.0.1:{port}\n  }}\n\
                 [domain_realm]\n  localhost = {REALM}\n"
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("kdc.conf"),
            format!(
                "[kdcdefaults]\n  kdc_listen = 127.0.0.1:{port}\n  kdc_tcp_listen = 127.0.0.1:{port}\n\
                 [realms]\n  {REALM} = {{\n    database_name = {db}\n    key_stash_file = {stash}\n\
                 \x20   acl_file = {acl}\n    max_life = 1h 0m 0s\n    max_renewable_life = 1h 0m 0s\n\
                 \x20   supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n  }}\n\
                 [logging]\n  kdc = FILE:{log}\n  default = FILE:{log}\n",
                db = d.join("principal").display(),
                stash = d.join("stash").display(),
                acl = d.join("kadm5.acl").display(),
                log = d.join("kdc.log").display(),
            ),
        )
        .unwrap();
        std::fs::write(d.join("kadm5.acl"), "").unwrap();
        let admin = |args: &[&str]| {
            let out = Self::env_of(d, tool(args[0]))
                .args(&args[1..])
                .output()
                .unwrap_or_else(|e| panic!("{} (Debian package krb5-kdc): {e}", args[0]));
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        admin(&[
            "kdb5_util",
            "-r",
            REALM,
            "create",
            "-s",
            "-P",
            "master-password-for-tests",
        ]);
        let keytab = d.join("service.keytab");
        for q in [
            "addprinc -pw alicepw alice".to_owned(),
            "addprinc -pw bobpw bob".to_owned(),
            "addprinc -randkey pop/localhost".to_owned(),
            "addprinc -randkey imap/localhost".to_owned(),
            format!("ktadd -k {} pop/localhost", keytab.display()),
        ] {
            admin(&["kadmin.local", "-r", REALM, "-q", &q]);
        }
        let child = Self::env_of(d, tool("krb5kdc"))
            .args(["-n", "-r", REALM])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("krb5kdc (Debian package krb5-kdc)");
        eventually(Duration::from_secs(10), "the KDC", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Self { child, dir }
    }

    fn env_of(dir: &Path, mut cmd: Command) -> Command {
        cmd.env("KRB5_CONFIG", dir.join("krb5.conf"))
            .env("KRB5_KDC_PROFILE", dir.join("kdc.conf"));
        cmd
    }

    /// The keytab holding `pop/localhost`.
    pub fn keytab(&self) -> PathBuf {
        self.dir.path().join("service.keytab")
    }

    /// The environment a process needs to use this realm with ticket cache `cache` (a name
    /// under the KDC's directory).
    pub fn env(&self, cache: &str) -> Vec<(String, String)> {
        vec![
            (
                "KRB5_CONFIG".into(),
                self.dir.path().join("krb5.conf").display().to_string(),
            ),
            (
                "KRB5CCNAME".into(),
                format!("FILE:{}", self.dir.path().join(cache).display()),
            ),
        ]
    }

    /// `kinit` as `principal` into ticket cache `cache`, for `lifetime` (e.g. `"1h"`).
    pub fn kinit(&self, principal: &str, password: &str, cache: &str, lifetime: &str) {
        let mut cmd = tool("kinit");
        cmd.envs(self.env(cache)).args(["-l", lifetime, principal]);
        let status = super::run_with_stdin(cmd, format!("{password}\n").as_bytes());
        assert!(status.success(), "kinit {principal}");
    }
}

impl Drop for Kdc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
