//! A private Postfix for tests (Debian's package, an instance in a temporary directory) that
//! takes SMTP on a loopback port and delivers over LMTP: shared by the Postfix tests and the
//! cluster's.

use super::{eventually, free_port, tool};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A private Postfix instance that takes SMTP on a loopback port and delivers example.org over
/// LMTP to `lmtp` (see ../shared/recipes/postfix-lmtp.md for why each setting is there).
pub struct Postfix {
    dir: tempfile::TempDir,
    smtp_port: u16,
}

impl Postfix {
    pub fn start(lmtp: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pf-lmtp")
            .tempdir()
            .unwrap();
        let t = dir.path();
        std::fs::set_permissions(t, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(t.join("etc")).unwrap();
        std::fs::create_dir_all(t.join("spool")).unwrap();
        let smtp_port = free_port();
        let d = t.display();
        std::fs::write(
            t.join("etc/main.cf"),
            format!(
                "compatibility_level = 3.6\nqueue_directory = {d}/spool\ndata_directory = {d}/data\n\
                 mail_owner = postfix\nsetgid_group = postdrop\nmyhostname = mx.example.org\n\
                 mydomain = example.org\nmyorigin = $myhostname\nmydestination =\n\
                 local_recipient_maps =\nlocal_transport = error:5.1.1 local delivery disabled\n\
                 alias_maps =\nalias_database =\nrelay_domains =\nrelayhost =\n\
                 inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmynetworks = 127.0.0.0/8\n\
                 smtpd_relay_restrictions = reject_unauth_destination\nsmtpd_peername_lookup = no\n\
                 local_header_rewrite_clients =\nsmtp_dns_support_level = disabled\n\
                 lmtp_dns_support_level = disabled\nsmtp_host_lookup = native\n\
                 lmtp_host_lookup = native\nvirtual_mailbox_domains = example.org\n\
                 virtual_mailbox_maps = static:ok\nvirtual_alias_maps =\n\
                 virtual_transport = lmtp:{lmtp}\n\
                 default_transport = discard:outbound mail disabled in test instance\n\
                 maillog_file = {d}/maillog\nmaillog_file_prefixes = {d}\nbiff = no\n\
                 append_dot_mydomain = no\nin_flow_delay = 0\nqueue_run_delay = 1s\n\
                 minimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n\
                 maximal_queue_lifetime = 1h\nbounce_queue_lifetime = 1h\n"
            ),
        )
        .unwrap();
        let services = [
            format!("127.0.0.1:{smtp_port} inet n - n - - smtpd"),
            "pickup unix n - n 60 1 pickup".into(),
            "cleanup unix n - n - 0 cleanup".into(),
            "qmgr unix n - n 300 1 qmgr".into(),
            "rewrite unix - - n - - trivial-rewrite".into(),
            "bounce unix - - n - 0 bounce".into(),
            "defer unix - - n - 0 bounce".into(),
            "trace unix - - n - 0 bounce".into(),
            "verify unix - - n - 1 verify".into(),
            "flush unix n - n 1000? 0 flush".into(),
            "proxymap unix - - n - - proxymap".into(),
            "proxywrite unix - - n - 1 proxymap".into(),
            "smtp unix - - n - - smtp".into(),
            "relay unix - - n - - smtp".into(),
            "showq unix n - n - - showq".into(),
            "error unix - - n - - error".into(),
            "retry unix - - n - - error".into(),
            "discard unix - - n - - discard".into(),
            "lmtp unix - - n - - lmtp".into(),
            "anvil unix - - n - 1 anvil".into(),
            "scache unix - - n - 1 scache".into(),
            "postlog unix-dgram n - n - 1 postlogd".into(),
        ];
        std::fs::write(t.join("etc/master.cf"), services.join("\n") + "\n").unwrap();
        let status = tool("postfix")
            .args(["-c", t.join("etc").to_str().unwrap(), "start"])
            .status()
            .unwrap();
        assert!(status.success(), "postfix start");
        let pf = Postfix { dir, smtp_port };
        eventually(Duration::from_secs(20), "Postfix listening", || {
            std::net::TcpStream::connect(("127.0.0.1", smtp_port)).ok()
        });
        pf
    }

    pub fn etc(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    /// Sends a message with swaks; the file must not end with a newline (swaks adds CRLF).
    pub fn send(&self, to: &str, message: &Path) {
        let out = tool("swaks")
            .args(["--server", &format!("127.0.0.1:{}", self.smtp_port)])
            .args([
                "--helo",
                "client.test",
                "--from",
                "sender@example.org",
                "--to",
                to,
            ])
            .args(["--data", &format!("@{}", message.display())])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "swaks: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Retries every deferred message now.
    pub fn flush(&self) {
        let status = Command::new("postqueue")
            .args(["-c", self.etc().to_str().unwrap(), "-f"])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .args(["-c", self.etc().to_str().unwrap(), "stop"])
            .status();
    }
}
