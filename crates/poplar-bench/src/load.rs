//! The loads `poplar-bench` puts on a server. Each one checks the replies as it goes (a load
//! that measured a server answering `-ERR` quickly would be worthless) and reports its figures
//! through [`Report`].

use super::ServerArgs;
use super::report::{Report, ms, percentile};
use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use pop3_fetch::Dialer;
use pop3_proto::Command;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// A password given on the command line: its `Debug` leaves it out.
#[derive(Clone)]
pub(crate) struct Password(pub(crate) String);

impl std::str::FromStr for Password {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Password(s.to_owned()))
    }
}

impl std::ops::Deref for Password {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One user's credentials.
#[derive(Debug, Args)]
pub(crate) struct Account {
    /// The user.
    #[arg(long)]
    user: String,
    /// The password.
    #[arg(long)]
    password: Password,
}

/// Full sessions in a loop, for `session` and alongside `hold`.
#[derive(Debug, Args)]
pub(crate) struct SessionLoad {
    /// Users are PREFIX0 .. PREFIX{N-1}; one connection per user.
    #[arg(long, default_value = "bench")]
    user_prefix: String,
    /// Number of users, i.e. concurrent connections.
    #[arg(long, default_value_t = 8)]
    users: usize,
    /// The users' password.
    #[arg(long)]
    password: Password,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[derive(Debug, Args)]
pub(crate) struct SessionArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    load: SessionLoad,
}

#[derive(Debug, Args)]
pub(crate) struct RetrArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Whose message is retrieved.
    #[command(flatten)]
    account: Account,
    /// Which message.
    #[arg(long, default_value_t = 1)]
    message: u32,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[derive(Debug, Args)]
pub(crate) struct IdleArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Users are PREFIX0 .. PREFIX{C-1}; one logged-in connection each.
    #[arg(long, default_value = "bench")]
    user_prefix: String,
    /// How many logged-in connections to hold.
    #[arg(long, default_value_t = 500)]
    connections: usize,
    /// The users' password.
    #[arg(long)]
    password: Password,
}

#[derive(Debug, Args)]
pub(crate) struct HoldArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// How many connections to hold without logging in (plain TCP, greeting read).
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// The fresh sessions timed while the connections are held.
    #[command(flatten)]
    load: SessionLoad,
}

#[derive(Debug, Args)]
pub(crate) struct OpenArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    account: Account,
    /// How many logins: the first opens the maildrop cold, the rest warm.
    #[arg(long, default_value_t = 3)]
    times: usize,
    /// Seconds between logins, as a client polling at intervals would leave (a server may
    /// trust what it knows about a maildrop only when it has been unchanged for a moment).
    #[arg(long, default_value_t = 3.0)]
    pause: f64,
}

#[derive(Debug, Args)]
pub(crate) struct LoopbackArgs {
    /// How long each run lasts, in seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// How many runs; the best counts.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Append the figure to this file as JSON lines.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct LmtpArgs {
    /// The server's LMTP address (TCP).
    #[arg(long)]
    lmtp: std::net::SocketAddr,
    /// The recipient of every message.
    #[arg(long)]
    recipient: String,
    /// Concurrent LMTP connections.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Size of each message in octets.
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The server's name in the results.
    #[arg(long, default_value = "poplar")]
    label: String,
    /// Append the figures to this file as JSON lines.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Delivers one message per transaction on one connection until `deadline`, through the
/// client `poplar fetch --to lmtp:` uses; returns each transaction's time (MAIL to the
/// recipient's reply after DATA), every reply checked.
fn lmtp_connection(
    addr: std::net::SocketAddr,
    recipient: &str,
    message: &[u8],
    deadline: Instant,
) -> Result<Vec<Duration>> {
    let mut client =
        pop3_fetch::lmtp::LmtpClient::connect(&addr.to_string(), "bench", Duration::from_secs(60))?;
    let mut times = Vec::new();
    while Instant::now() < deadline {
        let t = Instant::now();
        client.deliver("bench@example.net", recipient, &mut &message[..])?;
        times.push(t.elapsed());
    }
    client.quit();
    Ok(times)
}

pub(crate) async fn lmtp(args: LmtpArgs) -> Result<ExitCode> {
    let mut message = b"From: bench@example.net\r\nSubject: LMTP benchmark\r\n\r\n".to_vec();
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    while message.len() + line.len() <= args.size {
        message.extend_from_slice(line);
    }
    let message = Arc::new(message);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    // One thread per connection: the client is blocking, like the destination it serves.
    let tasks: Vec<_> = (0..args.connections.max(1))
        .map(|_| {
            let (recipient, message) = (args.recipient.clone(), Arc::clone(&message));
            let addr = args.lmtp;
            tokio::task::spawn_blocking(move || {
                lmtp_connection(addr, &recipient, &message, deadline)
            })
        })
        .collect();
    let mut times = Vec::new();
    for t in tasks {
        times.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    times.sort();
    let case = format!("lmtp x{}", args.connections.max(1));
    let mut report = Report::new(&args.label, &case);
    report.more("deliveries", times.len() as f64);
    report.more("deliveries/s", times.len() as f64 / elapsed);
    report.less("delivery p50 ms", ms(percentile(&times, 50)));
    report.less("delivery p99 ms", ms(percentile(&times, 99)));
    report.emit(args.json.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    account: Account,
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
    #[command(flatten)]
    server: ServerArgs,
    /// The user to guess for.
    #[arg(long)]
    user: String,
    /// How many wrong passwords.
    #[arg(long, default_value_t = 50)]
    count: usize,
}

/// One complete session; returns the octets retrieved, each checked against LIST.
async fn one_session(dialer: &Dialer, user: &str, password: &str) -> Result<u64> {
    let (mut c, _) = dialer.connect().await?;
    c.user_pass(user, password).await?;
    c.cmd(&Command::Stat).await?;
    c.cmd(&Command::Uidl(None)).await?;
    c.lines().await?;
    c.cmd(&Command::List(None)).await?;
    let list = c.lines().await?;
    let mut retrieved = 0;
    for entry in &list {
        let mut parts = entry.split(' ');
        let (Some(n), Some(size)) = (parts.next(), parts.next()) else {
            bail!("bad LIST line {entry:?}")
        };
        let size: u64 = size.parse()?;
        c.cmd(&Command::Retr(n.parse()?)).await?;
        let octets = c.body_octets().await?;
        ensure!(
            octets == size,
            "RETR {n} of {user} sent {octets} octets, LIST said {size}"
        );
        retrieved += octets;
    }
    c.cmd(&Command::Quit).await?;
    Ok(retrieved)
}

/// What a run of sessions measured.
struct Sessions {
    latencies: Vec<Duration>,
    octets: u64,
    elapsed: Duration,
}

/// Runs the sessions `load` describes.
async fn run_sessions(dialer: &Dialer, load: &SessionLoad) -> Result<Sessions> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(load.seconds);
    let mut tasks = Vec::new();
    for i in 0..load.users {
        let user = format!("{}{i}", load.user_prefix);
        let password = load.password.clone();
        let dialer = dialer.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut octets = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                octets += one_session(&dialer, &user, &password).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok((latencies, octets))
        }));
    }
    let mut run = Sessions {
        latencies: Vec::new(),
        octets: 0,
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let (l, o) = task.await??;
        run.latencies.extend(l);
        run.octets += o;
    }
    run.elapsed = started.elapsed();
    run.latencies.sort();
    Ok(run)
}

pub(crate) async fn session(args: SessionArgs) -> Result<ExitCode> {
    let dialer = args.server.dialer()?;
    let before = args.server.usage();
    let run = run_sessions(&dialer, &args.load).await?;
    let after = args.server.usage();
    let n = run.latencies.len();
    eprintln!(
        "{n} sessions on {} connections in {:.1?}; {:.1} MB retrieved, every RETR matched its LIST size",
        args.load.users,
        run.elapsed,
        run.octets as f64 / 1e6
    );
    let mut report = args.server.report(&args.server.case("session"));
    report.more("sessions/s", n as f64 / run.elapsed.as_secs_f64());
    report.less("session p50 ms", ms(percentile(&run.latencies, 50)));
    report.less("session p99 ms", ms(percentile(&run.latencies, 99)));
    if let (Some(b), Some(a)) = (before, after) {
        report.less(
            "server CPU s per 1000 sessions",
            (a.cpu_s - b.cpu_s) * 1000.0 / n.max(1) as f64,
        );
        report.less("server PSS MiB after", a.pss_kib as f64 / 1024.0);
    }
    report.emit(args.server.json.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn retr(args: RetrArgs) -> Result<ExitCode> {
    let dialer = args.server.dialer()?;
    let (mut c, _) = dialer.connect().await?;
    c.user_pass(&args.account.user, &args.account.password)
        .await?;
    let listed = c.cmd(&Command::List(Some(args.message))).await?;
    let size: u64 = listed
        .text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad LIST reply {listed:?}"))?;
    let before = args.server.usage();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut octets = 0u64;
    let mut times = 0;
    while Instant::now() < deadline {
        c.cmd(&Command::Retr(args.message)).await?;
        let got = c.body_octets().await?;
        ensure!(got == size, "RETR sent {got} octets, LIST said {size}");
        octets += got;
        times += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = args.server.usage();
    c.cmd(&Command::Quit).await?;
    eprintln!(
        "{times} RETRs of a {size}-octet message in {elapsed:.1} s, each matching its LIST size"
    );
    let mut report = args.server.report(&args.server.case("retr"));
    report.more("MB/s", octets as f64 / elapsed / 1e6);
    if let (Some(b), Some(a)) = (before, after) {
        report.less(
            "server CPU s per GB",
            (a.cpu_s - b.cpu_s) / (octets as f64 / 1e9),
        );
    }
    report.emit(args.server.json.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `f(i)` for i in 0..n with at most `parallel` running at once; results in order.
async fn in_parallel<T, F, Fut>(n: usize, parallel: usize, f: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let permit = Arc::clone(&gate).acquire_owned().await?;
        let fut = f(i);
        tasks.push(tokio::spawn(async move {
            let r = fut.await;
            drop(permit);
            r
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// Lets the server settle (freed memory, reaped processes) before it is measured.
const SETTLE: Duration = Duration::from_secs(2);

pub(crate) async fn idle(args: IdleArgs) -> Result<ExitCode> {
    poplar_util::host::raise_nofile_limit();
    let dialer = args.server.dialer()?;
    tokio::time::sleep(SETTLE).await;
    let before = args
        .server
        .usage()
        .context("--server-pid is needed to measure memory")?;
    let held = in_parallel(args.connections, 32, |i| {
        let dialer = dialer.clone();
        let user = format!("{}{i}", args.user_prefix);
        let password = args.password.clone();
        async move {
            let (mut c, _) = dialer.connect().await?;
            c.user_pass(&user, &password).await?;
            c.cmd(&Command::Stat).await?;
            anyhow::Ok(c)
        }
    })
    .await?;
    tokio::time::sleep(SETTLE).await;
    let during = args.server.usage().context("the server is gone")?;
    let n = held.len();
    let per_session = (during.pss_kib.saturating_sub(before.pss_kib)) as f64 / n as f64;
    eprintln!(
        "{n} logged-in sessions held: server PSS {} KiB before, {} KiB with them ({} processes)",
        before.pss_kib, during.pss_kib, during.processes
    );
    for mut c in held {
        c.cmd(&Command::Quit).await?;
    }
    let mut report = args.server.report(&args.server.case("idle"));
    report.less("KiB per session", per_session);
    report.emit(args.server.json.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn hold(args: HoldArgs) -> Result<ExitCode> {
    let available = poplar_util::host::raise_nofile_limit();
    ensure!(
        available > args.connections as u64 + 100,
        "this process may open only {available} files: raise the hard limit (ulimit -Hn) above \
         {} to hold {} connections",
        args.connections + 100,
        args.connections
    );
    let addr = args.server.server;
    let started = Instant::now();
    let held = in_parallel(args.connections, 256, move |_| async move {
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        let mut greeting = [0u8; 512];
        let n = tcp.read(&mut greeting).await?;
        ensure!(
            greeting[..n].starts_with(b"+OK"),
            "a held connection was refused: {}",
            String::from_utf8_lossy(&greeting[..n]).trim_end()
        );
        anyhow::Ok(tcp)
    })
    .await
    .context("cannot hold the connections (is the server's connection limit high enough?)")?;
    eprintln!(
        "{} connections held in {:.1?}",
        held.len(),
        started.elapsed()
    );
    let dialer = args.server.dialer()?;
    let usage = args.server.usage();
    let run = run_sessions(&dialer, &args.load).await?;
    drop(held);
    let mut report = args.server.report("hold");
    report.more("connections held", args.connections as f64);
    report.more(
        "sessions/s",
        run.latencies.len() as f64 / run.elapsed.as_secs_f64(),
    );
    report.less("session p50 ms", ms(percentile(&run.latencies, 50)));
    report.less("session p99 ms", ms(percentile(&run.latencies, 99)));
    if let Some(u) = usage {
        report.less("server PSS MiB while held", u.pss_kib as f64 / 1024.0);
    }
    report.emit(args.server.json.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn open(args: OpenArgs) -> Result<ExitCode> {
    let dialer = args.server.dialer()?;
    let mut opens = Vec::with_capacity(args.times);
    for i in 1..=args.times {
        if i > 1 {
            tokio::time::sleep(Duration::from_secs_f64(args.pause.max(0.0))).await;
        }
        let (mut c, _) = dialer.connect().await?;
        c.cmd(&Command::User(args.account.user.clone())).await?;
        // Login and the first listing: a server may defer reading the maildrop until asked.
        let t = Instant::now();
        let password = pop3_proto::Secret::new(args.account.password.as_bytes().to_vec());
        let reply = c.cmd(&Command::Pass(password)).await?;
        let login = t.elapsed();
        c.cmd(&Command::Uidl(None)).await?;
        let uidls = c.lines().await?;
        let open = t.elapsed();
        c.cmd(&Command::Quit).await?;
        eprintln!(
            "open {i}: {open:.2?}, of which login {login:.2?} ({reply}), then UIDL of {} messages",
            uidls.len()
        );
        opens.push(open);
    }
    let mut report = args.server.report("open");
    report.less("first login+UIDL ms", ms(opens[0]));
    if args.times > 1 {
        let mut warm = opens[1..].to_vec();
        warm.sort();
        report.less("warm login+UIDL ms", ms(percentile(&warm, 50)));
    }
    report.emit(args.server.json.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

/// Raw loopback TCP: one thread writes, this one reads, both with the buffers `retr` uses.
/// The best of `--runs` runs is the machine's ceiling: a run disturbed by other work on the
/// machine would make every server look closer to it than it is.
pub(crate) fn loopback(args: &LoopbackArgs) -> Result<ExitCode> {
    let mut best = 0f64;
    for _ in 0..args.runs.max(1) {
        let rate = loopback_once(Duration::from_secs(args.seconds))?;
        eprintln!("loopback run: {:.0} MB/s", rate / 1e6);
        best = best.max(rate);
    }
    let mut report = Report::new("poplar", "loopback");
    report.more("MB/s", best / 1e6);
    report.emit(args.json.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

/// Octets per second through one loopback TCP connection for `duration`.
fn loopback_once(duration: Duration) -> Result<f64> {
    const CHUNK: usize = 256 * 1024;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        let data = vec![b'x'; CHUNK];
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            s.write_all(&data)?;
        }
        Ok(())
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    let mut buf = vec![0u8; CHUNK];
    let started = Instant::now();
    let mut octets = 0u64;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        octets += n as u64;
    }
    let elapsed = started.elapsed().as_secs_f64();
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))??;
    Ok(octets as f64 / elapsed)
}

pub(crate) async fn login(args: LoginArgs) -> Result<ExitCode> {
    let dialer = args.server.dialer()?;
    let mut report = args.server.report(&args.server.case("login"));
    for mechanism in &args.mechanisms {
        let mut times = Vec::with_capacity(args.times);
        for _ in 0..args.times {
            let (mut c, greeting) = dialer.connect().await?;
            let start = Instant::now();
            let reply = c
                .login(
                    mechanism,
                    &args.account.user,
                    &args.account.password,
                    &greeting,
                )
                .await?;
            times.push(start.elapsed());
            ensure!(reply.ok, "{mechanism}: {reply}");
            c.cmd(&Command::Quit).await?;
        }
        times.sort();
        report.less(&format!("{mechanism} p50 ms"), ms(percentile(&times, 50)));
        report.less(&format!("{mechanism} p99 ms"), ms(percentile(&times, 99)));
    }
    report.emit(args.server.json.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn penalty(args: PenaltyArgs) -> Result<ExitCode> {
    let (mut c, _) = args.server.dialer()?.connect().await?;
    let mut curve = Vec::with_capacity(args.count);
    for i in 0..args.count {
        c.command(&Command::User(args.user.clone())).await?;
        let start = Instant::now();
        let wrong = format!("bench-wrong-{i}").into_bytes();
        let reply = c
            .command(&Command::Pass(pop3_proto::Secret::new(wrong)))
            .await?;
        ensure!(!reply.ok, "a wrong password was accepted: {reply}");
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
