//! `poplar bench`: a load generator that checks the protocol while it measures.
//!
//! - `fill` writes a large maildrop directly (no fsync: setup for benchmarks only);
//! - `session` runs complete sessions (connect, USER/PASS, STAT, UIDL, LIST, RETR all, QUIT) in
//!   a loop on N connections, one user each, verifying that every RETR delivers exactly the
//!   octets LIST announced, and reports sessions/s, latency percentiles and the server's CPU
//!   time and memory from /proc;
//! - `open` times logins, e.g. of a 100 000-message maildrop, cold then warm.

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Write N messages straight into a user's Maildir (benchmark setup; no fsync).
    Fill(FillArgs),
    /// Run full sessions in a loop and report throughput, latency and server cost.
    Session(SessionArgs),
    /// Time logins (the maildrop open) of one user, N times.
    Open(OpenArgs),
    /// Time logins with each authentication mechanism.
    Login(LoginArgs),
    /// Send wrong passwords and print how long each refusal took (the penalty curve).
    Penalty(PenaltyArgs),
}

#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    /// The server's POP3 address.
    #[arg(long)]
    pop3: SocketAddr,
    /// The user.
    #[arg(long)]
    user: String,
    /// The password.
    #[arg(long)]
    password: String,
    /// Mechanisms to time (USER is USER/PASS, APOP is APOP).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "USER,PLAIN,LOGIN,CRAM-MD5,SCRAM-SHA-1,SCRAM-SHA-256,APOP"
    )]
    mechanisms: Vec<String>,
    /// Logins per mechanism.
    #[arg(long, default_value_t = 50)]
    times: usize,
}

#[derive(Debug, Args)]
pub(crate) struct PenaltyArgs {
    /// The server's POP3 address.
    #[arg(long)]
    pop3: SocketAddr,
    /// The user to guess for.
    #[arg(long)]
    user: String,
    /// How many wrong passwords.
    #[arg(long, default_value_t = 50)]
    count: usize,
}

#[derive(Debug, Args)]
pub(crate) struct FillArgs {
    /// The data directory of the server.
    #[arg(long)]
    data_dir: PathBuf,
    /// The user (the maildrop is created if missing; the user must be added separately).
    #[arg(long)]
    user: String,
    /// How many messages.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Size of each message in octets.
    #[arg(long, default_value_t = 4096)]
    size: usize,
}

#[derive(Debug, Args)]
pub(crate) struct SessionArgs {
    /// The server's POP3 address.
    #[arg(long)]
    pop3: SocketAddr,
    /// Users are PREFIX0 .. PREFIX{N-1}; one connection per user.
    #[arg(long, default_value = "bench")]
    user_prefix: String,
    /// Number of users, i.e. concurrent connections.
    #[arg(long, default_value_t = 8)]
    users: usize,
    /// The users' password.
    #[arg(long)]
    password: String,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The server's process id, to report its CPU time and memory.
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Debug, Args)]
pub(crate) struct OpenArgs {
    /// The server's POP3 address.
    #[arg(long)]
    pop3: SocketAddr,
    /// The user.
    #[arg(long)]
    user: String,
    /// The password.
    #[arg(long)]
    password: String,
    /// How many logins.
    #[arg(long, default_value_t = 3)]
    times: usize,
}

pub(crate) fn run(cmd: BenchCommand) -> Result<ExitCode> {
    match cmd {
        BenchCommand::Fill(args) => fill(&args),
        BenchCommand::Session(args) => runtime()?.block_on(session(args)),
        BenchCommand::Open(args) => runtime()?.block_on(open(args)),
        BenchCommand::Login(args) => runtime()?.block_on(login(args)),
        BenchCommand::Penalty(args) => runtime()?.block_on(penalty(args)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("cannot start the async runtime")
}

fn fill(args: &FillArgs) -> Result<ExitCode> {
    use pop3_store::maildir::filename::unique_base;
    let store = pop3_store::MaildirStore::new(args.data_dir.join("mail"), "bench");
    let dir = store.maildir_path(&args.user)?;
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let line = "The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    let started = Instant::now();
    for i in 0..args.messages {
        let mut msg = format!("From: bench@example.org\r\nSubject: message {i}\r\n\r\n");
        while msg.len() + line.len() <= args.size {
            msg.push_str(line);
        }
        msg.truncate(args.size);
        let mut counter = pop3_proto::SizeCounter::new();
        counter.update(msg.as_bytes());
        let name = format!(
            "{},S={},W={}",
            unique_base("bench", i, 0),
            msg.len(),
            counter.virtual_size()
        );
        std::fs::write(dir.join("new").join(name), &msg)?;
    }
    println!(
        "wrote {} messages of {} octets to {} in {:.1?}",
        args.messages,
        args.size,
        dir.display(),
        started.elapsed()
    );
    Ok(ExitCode::SUCCESS)
}

/// A minimal POP3 client for measuring.
struct Conn {
    reader: BufReader<TcpStream>,
    line: String,
}

impl Conn {
    async fn connect(addr: SocketAddr) -> Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let mut c = Conn {
            reader: BufReader::new(tcp),
            line: String::new(),
        };
        c.status().await?;
        Ok(c)
    }

    async fn status(&mut self) -> Result<&str> {
        self.line.clear();
        let n = self.reader.read_line(&mut self.line).await?;
        ensure!(n > 0, "server closed the connection");
        ensure!(
            self.line.starts_with("+OK"),
            "server said: {}",
            self.line.trim_end()
        );
        Ok(self.line.trim_end())
    }

    async fn cmd(&mut self, command: &str) -> Result<&str> {
        self.reader
            .get_mut()
            .write_all(format!("{command}\r\n").as_bytes())
            .await?;
        self.status().await
    }

    /// Sends a line and returns the reply, whatever it is.
    async fn exchange(&mut self, line: &str) -> Result<String> {
        self.reader
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await?;
        self.line.clear();
        let n = self.reader.read_line(&mut self.line).await?;
        ensure!(n > 0, "server closed the connection");
        Ok(self.line.trim_end().to_owned())
    }

    /// Logs in with a mechanism, using pop3-auth's client side. The greeting is needed for APOP.
    async fn login(
        &mut self,
        mechanism: &str,
        user: &str,
        password: &str,
        greeting: &str,
    ) -> Result<String> {
        use base64::Engine as _;
        use base64::engine::general_purpose::STANDARD as B64;
        use pop3_auth::sasl::scram::{ScramClient, ScramHash};
        let challenge = |reply: &str| -> Result<Vec<u8>> {
            let data = reply
                .strip_prefix("+ ")
                .ok_or_else(|| anyhow::anyhow!("expected a challenge, got {reply}"))?;
            Ok(B64.decode(data)?)
        };
        let (u, p) = (user.as_bytes(), password.as_bytes());
        Ok(match mechanism {
            "USER" => {
                self.exchange(&format!("USER {user}")).await?;
                self.exchange(&format!("PASS {password}")).await?
            }
            "APOP" => {
                let ts = greeting.rsplit(' ').next().unwrap_or("");
                self.exchange(&format!("APOP {user} {}", pop3_auth::apop::digest(ts, p)))
                    .await?
            }
            "PLAIN" => {
                let msg = pop3_auth::sasl::plain::client_message("", user, p);
                self.exchange(&format!("AUTH PLAIN {}", B64.encode(msg.expose())))
                    .await?
            }
            "LOGIN" => {
                let r = self.exchange("AUTH LOGIN").await?;
                let r = self
                    .exchange(&B64.encode(pop3_auth::sasl::login::client_response(
                        &challenge(&r)?,
                        u,
                        p,
                    )))
                    .await?;
                self.exchange(&B64.encode(pop3_auth::sasl::login::client_response(
                    &challenge(&r)?,
                    u,
                    p,
                )))
                .await?
            }
            "CRAM-MD5" => {
                let r = self.exchange("AUTH CRAM-MD5").await?;
                let response = pop3_auth::sasl::cram_md5::client_response(user, p, &challenge(&r)?);
                self.exchange(&B64.encode(response)).await?
            }
            "SCRAM-SHA-1" | "SCRAM-SHA-256" => {
                let hash = if mechanism == "SCRAM-SHA-1" {
                    ScramHash::Sha1
                } else {
                    ScramHash::Sha256
                };
                let mut client = ScramClient::new(hash, user, p, None, false)?;
                let r = self
                    .exchange(&format!(
                        "AUTH {mechanism} {}",
                        B64.encode(client.client_first())
                    ))
                    .await?;
                let r = self
                    .exchange(&B64.encode(client.client_final(&challenge(&r)?)?))
                    .await?;
                client.verify_server_final(&challenge(&r)?)?;
                self.exchange("").await?
            }
            other => bail!("bench login does not know mechanism {other}"),
        })
    }

    /// Reads a multi-line body; returns its un-stuffed octets and lines.
    async fn body(&mut self) -> Result<(u64, Vec<String>)> {
        let mut octets = 0u64;
        let mut lines = Vec::new();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = self.reader.read_until(b'\n', &mut buf).await?;
            ensure!(n > 0, "connection closed inside a multi-line response");
            if buf == b".\r\n" {
                return Ok((octets, lines));
            }
            let line = buf.strip_prefix(b".").unwrap_or(&buf);
            octets += line.len() as u64;
            if lines.len() < 1_000_000 && line.len() < 200 {
                lines.push(String::from_utf8_lossy(line).trim_end().to_owned());
            }
        }
    }
}

async fn one_session(addr: SocketAddr, user: &str, password: &str) -> Result<u64> {
    let mut c = Conn::connect(addr).await?;
    c.cmd(&format!("USER {user}")).await?;
    c.cmd(&format!("PASS {password}")).await?;
    c.cmd("STAT").await?;
    c.cmd("UIDL").await?;
    c.body().await?;
    c.cmd("LIST").await?;
    let (_, list) = c.body().await?;
    let mut retrieved = 0;
    for entry in &list {
        let mut parts = entry.split(' ');
        let (Some(n), Some(size)) = (parts.next(), parts.next()) else {
            bail!("bad LIST line {entry:?}")
        };
        let size: u64 = size.parse()?;
        c.cmd(&format!("RETR {n}")).await?;
        let (octets, _) = c.body().await?;
        ensure!(
            octets == size,
            "RETR {n} of {user} sent {octets} octets, LIST said {size}"
        );
        retrieved += octets;
    }
    c.cmd("QUIT").await?;
    Ok(retrieved)
}

/// CPU seconds (user + system) and current/peak RSS in KiB of a process, from /proc.
fn process_usage(pid: u32) -> Option<(f64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted after the command name; USER_HZ is 100 on Linux.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    };
    Some((ticks as f64 / 100.0, kib("VmRSS:")?, kib("VmHWM:")?))
}

async fn session(args: SessionArgs) -> Result<ExitCode> {
    let before = args.server_pid.and_then(process_usage);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.users {
        let user = format!("{}{i}", args.user_prefix);
        let password = args.password.clone();
        let addr = args.pop3;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut octets = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                octets += one_session(addr, &user, &password).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok((latencies, octets))
        }));
    }
    let mut latencies = Vec::new();
    let mut octets = 0;
    for task in tasks {
        let (l, o) = task.await??;
        latencies.extend(l);
        octets += o;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    // Percentile by rank: index = ceil(len * p / 100) - 1.
    let pct = |p: usize| {
        let rank = (latencies.len() * p).div_ceil(100).max(1);
        latencies.get(rank - 1).copied().unwrap_or_default()
    };
    let n = latencies.len();
    println!(
        "sessions: {n} in {elapsed:.1} s with {} connections: {:.0} sessions/s",
        args.users,
        n as f64 / elapsed
    );
    println!(
        "retrieved: {:.1} MB, every RETR matched its LIST size",
        octets as f64 / 1e6
    );
    println!(
        "latency per session: p50 {:.2?}, p99 {:.2?}",
        pct(50),
        pct(99)
    );
    if let (Some(pid), Some((cpu0, _, _))) = (args.server_pid, before)
        && let Some((cpu1, rss, peak)) = process_usage(pid)
    {
        let cpu = cpu1 - cpu0;
        println!(
            "server: {cpu:.2} CPU s ({:.2} s per 1000 sessions), RSS {rss} KiB now, peak {peak} KiB",
            cpu * 1000.0 / n.max(1) as f64
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn login(args: LoginArgs) -> Result<ExitCode> {
    println!(
        "{:<14} {:>6} {:>9} {:>9}",
        "mechanism", "logins", "p50", "p99"
    );
    for mechanism in &args.mechanisms {
        let mut times = Vec::with_capacity(args.times);
        for _ in 0..args.times {
            let tcp = TcpStream::connect(args.pop3).await?;
            tcp.set_nodelay(true)?;
            let mut c = Conn {
                reader: BufReader::new(tcp),
                line: String::new(),
            };
            let greeting = c.status().await?.to_owned();
            let start = Instant::now();
            let reply = c
                .login(mechanism, &args.user, &args.password, &greeting)
                .await?;
            times.push(start.elapsed());
            ensure!(reply.starts_with("+OK"), "{mechanism}: {reply}");
            c.cmd("QUIT").await?;
        }
        times.sort();
        let pct = |p: usize| times[(times.len() * p).div_ceil(100).max(1) - 1];
        println!(
            "{mechanism:<14} {:>6} {:>9.2?} {:>9.2?}",
            times.len(),
            pct(50),
            pct(99)
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn penalty(args: PenaltyArgs) -> Result<ExitCode> {
    let mut c = Conn::connect(args.pop3).await?;
    let mut curve = Vec::with_capacity(args.count);
    for i in 0..args.count {
        c.exchange(&format!("USER {}", args.user)).await?;
        let start = Instant::now();
        let reply = c.exchange(&format!("PASS bench-wrong-{i}")).await?;
        ensure!(
            reply.starts_with("-ERR"),
            "a wrong password was accepted: {reply}"
        );
        curve.push(start.elapsed().as_secs_f64());
    }
    let line: Vec<String> = curve.iter().map(|s| format!("{s:.1}")).collect();
    println!(
        "refusal delays in seconds, attempts 1..{}: {}",
        args.count,
        line.join(" ")
    );
    println!(
        "total {:.1} s for {} wrong passwords",
        curve.iter().sum::<f64>(),
        args.count
    );
    Ok(ExitCode::SUCCESS)
}

async fn open(args: OpenArgs) -> Result<ExitCode> {
    for i in 1..=args.times {
        let mut c = Conn::connect(args.pop3).await?;
        c.cmd(&format!("USER {}", args.user)).await?;
        let t = Instant::now();
        let reply = c.cmd(&format!("PASS {}", args.password)).await?.to_owned();
        let login = t.elapsed();
        let t = Instant::now();
        c.cmd("UIDL").await?;
        let (_, uidls) = c.body().await?;
        let uidl = t.elapsed();
        c.cmd("QUIT").await?;
        println!(
            "login {i}: {login:.2?} ({reply}); UIDL of {} messages: {uidl:.2?}",
            uidls.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
