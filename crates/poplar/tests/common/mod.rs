//! Test harness: the real `poplar` binary on loopback, a small blocking POP3 client, and the
//! message corpus.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::print_stderr)]

pub mod dovecot;
pub mod haproxy;
pub mod kdc;
pub mod postfix;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_poplar");

/// GET over HTTP/1.1: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (code, body.to_owned())
}

/// A loopback port nothing listens on (at the moment of asking).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Builds a configuration and starts a server.
pub struct ServerBuilder {
    table: toml::Table,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl ServerBuilder {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Self {
            table: toml::Table::new(),
            dir,
            env: Vec::new(),
        };
        let data = b.dir.path().join("data");
        b.set("data_dir", data.to_str().unwrap());
        b.set("hostname", "test.example");
        b.set(
            "listen.pop3",
            toml::Value::Array(vec!["127.0.0.1:0".into()]),
        );
        b.set(
            "listen.pop3s",
            toml::Value::Array(vec!["127.0.0.1:0".into()]),
        );
        // Tests need quick failures; the production defaults are 2 s doubling to 15 s.
        b.set("auth.failure_delay", "50ms");
        b.set("auth.penalty_cap", "200ms");
        b
    }

    /// Sets a dotted key, e.g. `set("limits.max_bad_commands", 3)`.
    pub fn set(&mut self, key: &str, value: impl Into<toml::Value>) -> &mut Self {
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().unwrap();
        let mut table = &mut self.table;
        for p in parts {
            table = table
                .entry(p)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .unwrap();
        }
        table.insert(last.to_owned(), value.into());
        self
    }

    /// Adds an LMTP listener on a free loopback port.
    pub fn lmtp(&mut self) -> &mut Self {
        self.set(
            "listen.lmtp",
            toml::Value::Array(vec!["127.0.0.1:0".into()]),
        )
    }

    /// Sets an environment variable for the server process.
    pub fn env(&mut self, key: &str, value: &str) -> &mut Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The data directory the server will use (to prepare it before `start`).
    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(self.table["data_dir"].as_str().unwrap())
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("poplar.toml")
    }

    pub fn write_config(&self) -> PathBuf {
        let path = self.config_path();
        std::fs::write(&path, toml::to_string(&self.table).unwrap()).unwrap();
        path
    }

    pub fn start(self) -> Server {
        let config = self.write_config();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config", config.to_str().unwrap()])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null());
        let running = spawn_server(cmd, true);
        Server {
            child: Some(running.child),
            pop3: running.pop3,
            pop3s: running.pop3s.unwrap(),
            dir: Some(self.dir),
            config,
            logs: running.logs,
        }
    }
}

/// A `poplar serve` process whose standard error is collected, with its bound addresses.
pub struct Running {
    pub child: Child,
    pub pop3: SocketAddr,
    pub pop3s: Option<SocketAddr>,
    pub logs: Arc<Mutex<Vec<String>>>,
}

/// Spawns `poplar serve ...` (standard error captured; the caller decides about standard
/// output) and waits for its "listening for POP3[S] on ADDR" log lines.
pub fn spawn_server(mut cmd: Command, with_pop3s: bool) -> Running {
    let mut child = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = Arc::new(Mutex::new(Vec::<String>::new()));
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let sink = Arc::clone(&logs);
    // Keep reading to the end, so the server never writes into a closed pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            sink.lock().unwrap().push(line);
        }
    });
    let (mut pop3, mut pop3s) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while pop3.is_none() || (with_pop3s && pop3s.is_none()) {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("server did not start: {:?}", logs.lock().unwrap()));
        let addr = |kind: &str| -> Option<SocketAddr> {
            let rest = line.split(&format!("listening for {kind} on ")).nth(1)?;
            // Text or JSON lines: the address ends at a space or a quote.
            rest.split([' ', '"']).next()?.trim().parse().ok()
        };
        pop3 = pop3.or_else(|| addr("POP3"));
        pop3s = pop3s.or_else(|| addr("POP3S"));
    }
    Running {
        child,
        pop3: pop3.unwrap(),
        pop3s,
        logs,
    }
}

/// `poplar serve` on its embedded defaults in `dir` (ephemeral loopback ports, no
/// configuration file), with the demo user's password from its first line of output.
pub fn serve_embedded(dir: &Path) -> (Running, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--pop3", "127.0.0.1:0", "--pop3s", "127.0.0.1:0"])
        .current_dir(dir)
        .env_remove("POPLAR_CONFIG")
        .stdout(Stdio::piped());
    let mut running = spawn_server(cmd, true);
    let mut first = String::new();
    BufReader::new(running.child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let password = demo_password(&first);
    (running, password)
}

/// The password in the line `serve` prints when it creates the demo user.
pub fn demo_password(line: &str) -> String {
    line.split("password ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no demo password in {line:?}"))
        .to_owned()
}

/// Runs mpop on the account `account` of the configuration `rc` (written with `contents`,
/// mode 0600 as mpop demands): whether it succeeded, and everything it printed.
pub fn mpop(rc: &Path, contents: &str, account: &str) -> (bool, String) {
    mpop_with_env(rc, contents, account, &[])
}

/// [`mpop`] with environment variables set (a Kerberos ticket cache, say).
pub fn mpop_with_env(
    rc: &Path,
    contents: &str,
    account: &str,
    env: &[(String, String)],
) -> (bool, String) {
    std::fs::write(rc, contents).unwrap();
    std::fs::set_permissions(rc, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = tool("mpop")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["-C", rc.to_str().unwrap(), account])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs fetchmail with the configuration `contents` (written to `HOME/fetchmailrc`, mode
/// 0600), its home, lock and pid file inside `home` (as root it would otherwise take
/// /var/run's, and tests run in parallel): its exit status, and everything it printed.
pub fn fetchmail(home: &Path, contents: &str, args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    fetchmail_with_env(home, contents, args, &[])
}

/// [`fetchmail`] with environment variables set (a Kerberos ticket cache, say).
pub fn fetchmail_with_env(
    home: &Path,
    contents: &str,
    args: &[&std::ffi::OsStr],
    env: &[(String, String)],
) -> (Option<i32>, String) {
    let rc = home.join("fetchmailrc");
    std::fs::write(&rc, contents).unwrap();
    std::fs::set_permissions(&rc, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = tool("fetchmail")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg("-f")
        .arg(&rc)
        .arg("--nosyslog")
        .args(args)
        .arg("--pidfile")
        .arg(home.join("fetchmail.pid"))
        .env("FETCHMAILHOME", home)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// `poplar check-config --config CONFIG`: whether it found nothing serve would refuse, and
/// what it printed (standard output and error).
pub fn check_config(config: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Retries `attempt` every 20 ms until it returns `Some`, failing after `within`.
pub fn eventually<T>(within: Duration, what: &str, mut attempt: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = attempt() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A program the tests need; fails (does not skip) when it is missing.
pub fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{name} is not installed; run scripts/test as root, or install it"
    );
    Command::new(name)
}

/// Runs a python3 script (`python3 -c`); panics unless it succeeds; returns what it printed.
pub fn python(script: &str) -> String {
    let out = tool("python3").args(["-c", script]).output().unwrap();
    assert!(
        out.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs curl quietly; panics unless it succeeds; returns what it printed.
pub fn curl(args: &[&str]) -> Vec<u8> {
    let out = tool("curl")
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub struct Server {
    child: Option<Child>,
    pub pop3: SocketAddr,
    pub pop3s: SocketAddr,
    dir: Option<tempfile::TempDir>,
    pub config: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    pub fn cert(&self) -> PathBuf {
        self.data_dir().join("tls/cert.pem")
    }

    pub fn poplar(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .args(["--config", self.config.to_str().unwrap()]);
        cmd
    }

    pub fn add_user(&self, name: &str, password: &str) {
        self.add_user_with(name, password, &[]);
    }

    /// `poplar user add NAME --password-stdin` with further arguments (e.g. `--schemes`).
    pub fn add_user_with(&self, name: &str, password: &str, more: &[&str]) {
        let mut args = vec!["user", "add", name, "--password-stdin"];
        args.extend_from_slice(more);
        let status = run_with_stdin(self.poplar(&args), format!("{password}\n").as_bytes());
        assert!(status.success(), "user add {name}");
    }

    pub fn deliver(&self, names: &[&str], message: &[u8]) -> ExitStatus {
        let mut args = vec!["deliver"];
        args.extend_from_slice(names);
        run_with_stdin(self.poplar(&args), message)
    }

    /// The file names in one subdirectory (`new`, `cur`, `tmp`) of `user`'s Maildir, sorted.
    pub fn maildir_files(&self, user: &str, sub: &str) -> Vec<String> {
        let dir = self
            .data_dir()
            .join("mail/_default_")
            .join(user)
            .join("Maildir")
            .join(sub);
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The LMTP address the server logged (`listen.lmtp`, see [`ServerBuilder::lmtp`]).
    pub fn lmtp_addr(&self) -> String {
        eventually(Duration::from_secs(10), "the LMTP listener", || {
            self.logs().iter().find_map(|l| {
                l.split("listening for LMTP on ")
                    .nth(1)
                    .map(|a| a.trim().to_owned())
            })
        })
    }

    /// Waits until a log line containing `needle` appears.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self.logs().into_iter().find(|l| l.contains(needle)) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?}: {:?}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The CPU time the server's threads have used so far (nanosecond counters of
    /// `/proc/PID/task/*/schedstat`). What a step costs the server, unlike how long it takes
    /// to answer, hardly changes with the load other tests put on the machine.
    pub fn cpu_time(&self) -> Duration {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).unwrap();
        let nanos: u64 = tasks
            .filter_map(|task| {
                let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
                stat.split(' ').next()?.parse::<u64>().ok()
            })
            .sum();
        Duration::from_nanos(nanos)
    }

    /// What `f` returns, and the server CPU time used while it ran (see [`Self::cpu_time`]).
    pub fn cpu_while<T>(&self, f: impl FnOnce() -> T) -> (T, Duration) {
        let before = self.cpu_time();
        let out = f();
        (out, self.cpu_time().saturating_sub(before))
    }

    /// SIGTERM, then wait for exit. The data directory outlives the server.
    pub fn stop(mut self) -> (ExitStatus, tempfile::TempDir) {
        let dir = self.dir.take().unwrap();
        let mut child = self.child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, dir);
            }
            assert!(Instant::now() < deadline, "server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would; the data directory outlives the server.
    pub fn kill(mut self) -> tempfile::TempDir {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        self.dir.take().unwrap()
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().unwrap().try_wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn run_with_stdin(mut cmd: Command, input: &[u8]) -> ExitStatus {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The command may refuse before reading its input (e.g. an unknown user): a broken pipe is
    // not an error here, the exit status tells.
    let _ = child.stdin.take().unwrap().write_all(input);
    child.wait().unwrap()
}

/// For a test that cannot run here because it needs root (`why` says what failed): fails,
/// unless `POPLAR_SKIP_ROOT_TESTS` asks to skip such tests explicitly.
pub fn skip_root_test(why: &str) {
    assert!(
        std::env::var_os("POPLAR_SKIP_ROOT_TESTS").is_some(),
        "{why}: this test needs root (set POPLAR_SKIP_ROOT_TESTS=1 to skip it)"
    );
    eprintln!("skipped: {why}");
}

/// A TCP connection from a chosen local address (e.g. 127.0.0.2) to `addr`.
pub fn tcp_from(local: &str, addr: SocketAddr) -> TcpStream {
    let local: std::net::IpAddr = local.parse().unwrap();
    let domain = if local.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None).unwrap();
    if local.is_ipv6() {
        // An address of a prefix routed to loopback (see `LocalPrefix`), not assigned to it.
        socket.set_freebind_v6(true).unwrap();
    }
    // The source port is chosen at connect time, per 4-tuple: a bind with port 0 would reserve
    // a port for this address alone and, with tens of thousands of earlier test connections
    // in TIME_WAIT, search the whole range for each one (seconds per thousand connections).
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::IpBindAddressNoPort,
        &true,
    )
    .unwrap();
    socket.bind(&SocketAddr::new(local, 0).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.into()
}

/// A small blocking POP3 client that does not interpret much, so tests see the wire.
pub struct Client {
    stream: Stream,
    buf: Vec<u8>,
}

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(b),
            Stream::Tls(s) => s.read(b),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(b),
            Stream::Tls(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

pub fn tls_config(cert: &Path) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn wrap_tls(tcp: TcpStream, cert: &Path) -> Stream {
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(tls_config(cert), name).unwrap();
    Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
}

impl Client {
    pub fn connect(addr: SocketAddr) -> (Self, String) {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = Client {
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
        };
        let greeting = c.line();
        (c, greeting)
    }

    /// Connects from a chosen local address (e.g. 127.0.0.2), to act as another client.
    pub fn connect_from(local: &str, addr: SocketAddr) -> (Self, String) {
        let tcp = tcp_from(local, addr);
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = Client {
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
        };
        let greeting = c.line();
        (c, greeting)
    }

    /// Implicit TLS with a client certificate (chain and key in PEM).
    pub fn connect_tls_as(
        addr: SocketAddr,
        cert: &Path,
        client_chain: &Path,
        client_key: &Path,
    ) -> (Self, String) {
        use rustls_pki_types::pem::PemObject;
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let chain = rustls_pki_types::CertificateDer::pem_file_iter(client_chain)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(client_key).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut c = Client {
            stream: Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))),
            buf: Vec::new(),
        };
        let greeting = c.line();
        (c, greeting)
    }

    /// Channel binding data of this TLS connection: (tls-exporter, negotiated version).
    pub fn tls_exporter(&self) -> Option<Vec<u8>> {
        match &self.stream {
            Stream::Tls(s) => s
                .conn
                .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
                .ok()
                .map(|v| v.to_vec()),
            Stream::Plain(_) => None,
        }
    }

    /// Sends a SASL response line (base64 of `data`) and returns the server's reply line.
    /// This end's address (as the server sees the client).
    pub fn local_addr(&self) -> SocketAddr {
        match &self.stream {
            Stream::Plain(tcp) => tcp.local_addr().unwrap(),
            Stream::Tls(tls) => tls.sock.local_addr().unwrap(),
        }
    }

    pub fn sasl(&mut self, data: &[u8]) -> String {
        use base64::Engine as _;
        let line = base64::engine::general_purpose::STANDARD.encode(data);
        self.cmd(&line)
    }

    pub fn connect_tls(addr: SocketAddr, cert: &Path) -> (Self, String) {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = Client {
            stream: wrap_tls(tcp, cert),
            buf: Vec::new(),
        };
        let greeting = c.line();
        (c, greeting)
    }

    /// STLS, then the TLS handshake.
    pub fn starttls(mut self, cert: &Path) -> Self {
        assert_eq!(self.cmd("STLS"), "+OK Begin TLS negotiation");
        self.upgrade_after_stls(cert)
    }

    /// The TLS handshake, after `+OK` to STLS was read.
    pub fn upgrade_after_stls(self, cert: &Path) -> Self {
        assert!(self.buf.is_empty(), "server sent data after +OK to STLS");
        let Stream::Plain(tcp) = self.stream else {
            panic!("already TLS")
        };
        Client {
            stream: wrap_tls(tcp, cert),
            buf: Vec::new(),
        }
    }

    /// The plain TCP connection underneath, for tests that misbehave at the socket level.
    pub fn into_tcp(self) -> TcpStream {
        match self.stream {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.sock,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        self.stream.flush().unwrap();
    }

    /// Sends a command and returns the status line; `None` when the server has closed the
    /// connection (the write fails or the answer never comes).
    pub fn try_cmd(&mut self, line: &str) -> Option<String> {
        let sent = self
            .stream
            .write_all(format!("{line}\r\n").as_bytes())
            .and_then(|()| self.stream.flush());
        sent.ok()?;
        self.try_line()
    }

    /// Sends a command, returns the status line.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.line()
    }

    /// Reads one line (without CRLF); panics on EOF.
    pub fn line(&mut self) -> String {
        self.try_line().expect("connection closed")
    }

    /// Reads one line, or `None` at EOF.
    pub fn try_line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
            let mut chunk = [0u8; 65536];
            let n = match self.stream.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                Err(e) => panic!("read: {e}"),
            };
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The SASL mechanisms CAPA lists now (empty when none), space-separated as sent.
    pub fn sasl_offered(&mut self) -> String {
        assert!(self.cmd("CAPA").starts_with("+OK"));
        let capa = String::from_utf8(self.body()).unwrap();
        capa.lines()
            .find_map(|l| l.strip_prefix("SASL "))
            .unwrap_or("")
            .to_owned()
    }

    /// Reads a multi-line body and undoes the dot-stuffing; returns the bytes a client keeps
    /// (every line with its CRLF).
    pub fn body(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                    if line == b".\r\n" {
                        return out;
                    }
                    out.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
                    continue;
                }
                break;
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk).unwrap();
            assert!(n > 0, "connection closed inside a multi-line response");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn login(&mut self, user: &str, password: &str) -> String {
        let r = self.cmd(&format!("USER {user}"));
        assert!(r.starts_with("+OK"), "{r}");
        self.cmd(&format!("PASS {password}"))
    }

    /// Whether the server closed the connection (EOF) within `wait`.
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        if let Stream::Plain(s) = &self.stream {
            s.set_read_timeout(Some(wait)).unwrap();
        }
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0))
            || matches!(self.stream.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
    }
}

/// The canonical form a client holds after RETR: bare LF as CRLF, a final line terminated.
pub fn canonical(stored: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored.len() + stored.len() / 20);
    let mut prev = 0u8;
    for &b in stored {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    if !stored.is_empty() && !stored.ends_with(b"\n") {
        if stored.ends_with(b"\r") {
            out.push(b'\n');
        } else {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// The messages the issue names: dots at line starts, a line that is only '.', bare LF, 8-bit
/// UTF-8 headers and body, a 5000-character line, an empty body, a 5 MiB base64 attachment and a
/// message without a final newline.
pub fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    use base64::Engine as _;
    let mut attachment = Vec::with_capacity(5 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while attachment.len() < 5 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        attachment.extend_from_slice(&x.to_le_bytes());
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(&attachment);
    let mut big = b"From: sender@example.org\r\nTo: user@example.org\r\nSubject: 5 MiB attachment\r\n\
        MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
        --b1\r\nContent-Type: text/plain\r\n\r\nSee attachment.\r\n\
        --b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        .to_vec();
    for line in b64.as_bytes().chunks(76) {
        big.extend_from_slice(line);
        big.extend_from_slice(b"\r\n");
    }
    big.extend_from_slice(b"--b1--\r\n");
    let mut long = b"Subject: a 5000-character line\r\n\r\n".to_vec();
    long.extend(std::iter::repeat_n(b'L', 5000));
    long.extend_from_slice(b"\r\nend\r\n");
    vec![
        ("dots", b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nafter a lone dot\r\n. \r\n".to_vec()),
        ("bare-lf", b"Subject: bare LF\n\nline one\nline two\n.\n".to_vec()),
        (
            "utf8",
            "Subject: Grüße aus Köln – ☃\r\nFrom: Jürgen Weiß <j@example.org>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nÄÖÜ äöü ß — 日本語 — ✓\r\n"
                .as_bytes()
                .to_vec(),
        ),
        ("long-line", long),
        ("empty-body", b"Subject: empty body\r\n\r\n".to_vec()),
        ("attachment", big),
        ("no-final-newline", b"Subject: no final newline\r\n\r\nlast line without newline".to_vec()),
    ]
}

/// Reads one SMTP/LMTP reply, all its lines (`250-...` continues, `250 ...` ends); empty when
/// the connection closed first.
pub fn smtp_reply(r: &mut impl BufRead) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return all;
        }
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return all;
        }
    }
}

/// Trials per crash scenario: `POPLAR_CRASH_TRIALS`, default 10 (the fast subset the README's
/// test command runs).
pub fn crash_trials() -> usize {
    std::env::var("POPLAR_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// A small deterministic generator, so a failing run can be replayed from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(scenario: &str) -> Rng {
        let seed: u64 = std::env::var("POPLAR_CRASH_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos()
                    .into()
            });
        eprintln!("{scenario}: POPLAR_CRASH_SEED={seed}");
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A duration in `[0, max)`.
    pub fn below(&mut self, max: Duration) -> Duration {
        let micros = u64::try_from(max.as_micros()).unwrap().max(1);
        Duration::from_micros(self.next() % micros)
    }
}
