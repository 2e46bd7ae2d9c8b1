//! A throwaway PostgreSQL cluster for tests: Debian's server binaries, a temporary directory,
//! a free loopback port, fsync off; stopped and removed when dropped. As root (CI) it runs as
//! the `postgres` user, as PostgreSQL requires. Shared by pop3-store-postgres's tests and the
//! cluster tests of the `poplar` binary (included there by path).

#![allow(dead_code)]

use pop3_store_postgres::{PgOptions, PgStore};
use std::process::{Command, Stdio};

/// A throwaway PostgreSQL cluster.
pub(crate) struct Pg {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Pg {
    /// An empty directory and a free port, for a new cluster.
    fn place() -> Pg {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is not installed: scripts/test installs it (apt-get install postgresql)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("no PostgreSQL server binaries under /usr/lib/postgresql");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if is_root() {
            assert!(
                Command::new("chown")
                    .args(["postgres:", dir.path().to_str().unwrap()])
                    .status()
                    .unwrap()
                    .success()
            );
        }
        Pg { bin, dir, port }
    }

    /// A streaming-replication standby of `primary` (`pg_basebackup -R`), running.
    pub(crate) fn standby_of(primary: &Pg) -> Pg {
        let pg = Pg::place();
        let data = pg.dir.path().join("data");
        pg.run_as_postgres(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
                "-D",
                data.to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                // Checkpoint at once instead of spreading it over minutes.
                "-c",
                "fast",
            ],
        );
        pg.start_server();
        pg
    }

    /// Makes a standby the primary (`pg_ctl promote`).
    pub(crate) fn promote(&self) {
        let data = self.dir.path().join("data");
        self.run_as_postgres("pg_ctl", &["-D", data.to_str().unwrap(), "-w", "promote"]);
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// A cluster serving TLS with a certificate for 127.0.0.1 signed by a private CA (made by
    /// openssl, as an administrator would); returns it and the CA's PEM file.
    pub(crate) fn start_with_tls() -> (Pg, std::path::PathBuf) {
        let pg = Pg::start();
        pg.stop_server();
        let data = pg.dir.path().join("data");
        let (cert, key) = (data.join("server.crt"), data.join("server.key"));
        // A private CA and a server certificate it signs, as TLS for PostgreSQL is set up.
        let (ca, ca_key) = (pg.dir.path().join("ca.pem"), pg.dir.path().join("ca.key"));
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=Test CA",
            "-keyout",
            &path(&ca_key),
            "-out",
            &path(&ca),
        ]);
        let csr = pg.dir.path().join("server.csr");
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &path(&key),
            "-out",
            &path(&csr),
        ]);
        let ext = pg.dir.path().join("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            &path(&csr),
            "-CA",
            &path(&ca),
            "-CAkey",
            &path(&ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &path(&ext),
            "-out",
            &path(&cert),
        ]);
        pg.serve_tls(&cert, &key);
        (pg, ca)
    }

    /// A cluster serving TLS with a self-signed certificate for 127.0.0.1 made the way
    /// administrators usually make one (`openssl req -x509`, which OpenSSL 3 marks CA:TRUE);
    /// returns it and that certificate's PEM file.
    pub(crate) fn start_with_self_signed_tls() -> (Pg, std::path::PathBuf) {
        let pg = Pg::start();
        pg.stop_server();
        let data = pg.dir.path().join("data");
        let (cert, key) = (data.join("server.crt"), data.join("server.key"));
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let copy = pg.dir.path().join("self-signed.pem");
        std::fs::copy(&cert, &copy).unwrap();
        pg.serve_tls(&cert, &key);
        (pg, copy)
    }

    /// Restarts the stopped cluster serving TLS with `cert` and `key` (in its data directory).
    fn serve_tls(&self, cert: &std::path::Path, key: &std::path::Path) {
        let pg = self;
        let data = pg.dir.path().join("data");
        if is_root() {
            for f in [cert, key] {
                assert!(
                    Command::new("chown")
                        .arg("postgres:")
                        .arg(f)
                        .status()
                        .unwrap()
                        .success()
                );
            }
        }
        std::fs::write(data.join("postgresql.auto.conf"), "ssl = on\n").unwrap();
        if is_root() {
            assert!(
                Command::new("chown")
                    .arg("postgres:")
                    .arg(data.join("postgresql.auto.conf"))
                    .status()
                    .unwrap()
                    .success()
            );
        }
        pg.start_server();
    }

    pub(crate) fn start() -> Pg {
        let pg = Pg::place();
        let data = pg.dir.path().join("data");
        pg.run_as_postgres(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
        );
        pg.start_server();
        pg.run_as_postgres(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                "postgres",
                "pop3test",
            ],
        );
        pg
    }

    /// Starts the server on the cluster (again, after [`Pg::stop_server`]).
    pub(crate) fn start_server(&self) {
        let data = self.dir.path().join("data");
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.run_as_postgres(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "30",
                "-o",
                &options,
                "start",
            ],
        );
    }

    /// Stops the server as an administrator would (`pg_ctl stop -m fast`: connections are
    /// closed, committed transactions kept).
    pub(crate) fn stop_server(&self) {
        let data = self.dir.path().join("data");
        self.run_as_postgres(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
    }

    fn run_as_postgres(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd.args(args).stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// What Debian's `psql` prints for `sql` (unaligned, tuples only), as an operator would
    /// run it.
    pub(crate) fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-At", "-d", &self.url(), "-c", sql])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/pop3test", self.port)
    }

    pub(crate) async fn admin(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }

    pub(crate) async fn store(&self) -> PgStore {
        PgStore::connect(&self.url(), PgOptions::default())
            .await
            .unwrap()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let program = self.bin.join("pg_ctl");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let _ = cmd
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}
