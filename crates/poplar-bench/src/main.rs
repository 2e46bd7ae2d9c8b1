//! `poplar-bench`: a load generator that checks the protocol while it measures, and the report
//! that compares servers (see docs/benchmarks.md and bench/compare.sh). A binary of its own,
//! not a subcommand of `poplar`: it is a tool for measuring any POP3 server, and what is
//! installed on a mail server should not carry it.
//!
//! Loads: `session` (full sessions in a loop), `retr` (one large message, repeatedly), `idle`
//! (logged-in connections held), `hold` (unauthenticated connections held while fresh sessions
//! are timed), `open` (logins of a huge maildrop, first and warm), `loopback` (raw TCP, the
//! machine's ceiling), `login` (each authentication mechanism), `penalty` (the failure-delay
//! curve) and `lmtp` (deliveries per second). Every load works against any POP3 server; `--server-pid` adds the server's CPU time
//! and memory, `--json` appends the figures for `poplar-bench table`. `fill` writes a large
//! maildrop through pop3-store's Maildir writer, as benchmark setup.

#![forbid(unsafe_code)]
// A command-line tool: its figures and errors go to stdout and stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod load;
mod report;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use pop3_fetch::{Dialer, TlsMode};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Poplar's load generator for POP3 and LMTP servers (see docs/benchmarks.md).
#[derive(Debug, Parser)]
#[command(name = "poplar-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("poplar-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Write N messages into a user's Maildir (benchmark setup).
    Fill(FillArgs),
    /// Run full sessions (login, STAT, UIDL, LIST, RETR all, QUIT) in a loop on N connections.
    Session(load::SessionArgs),
    /// RETR one (large) message repeatedly and report the throughput.
    Retr(load::RetrArgs),
    /// Hold C logged-in connections and report the server's memory per session.
    Idle(load::IdleArgs),
    /// Hold C connections without logging in while timing fresh sessions.
    Hold(load::HoldArgs),
    /// Time logins (the maildrop open) of one user, N times: the first, then warm.
    Open(load::OpenArgs),
    /// Raw loopback TCP throughput, the ceiling for `retr`.
    Loopback(load::LoopbackArgs),
    /// Deliver messages over LMTP in a loop on N connections (deliveries per second).
    Lmtp(load::LmtpArgs),
    /// Time logins with each authentication mechanism.
    Login(load::LoginArgs),
    /// Send wrong passwords and print how long each refusal took (the penalty curve).
    Penalty(load::PenaltyArgs),
    /// Render results (from --json) as the Markdown table of docs/benchmarks.md.
    Table(TableArgs),
}

/// The server under load and where the figures go; shared by every load.
/// How the load generator secures its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TlsArg {
    /// Plain TCP.
    None,
    /// TLS from the first octet (POP3S).
    Implicit,
    /// Plain TCP upgraded with STLS.
    Starttls,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ServerArgs {
    /// The server's address: its POP3 port, or its POP3S port with --tls implicit.
    #[arg(long, alias = "pop3")]
    server: SocketAddr,
    /// How to secure connections.
    #[arg(long, value_enum, default_value_t = TlsArg::None)]
    tls: TlsArg,
    /// CA (or self-signed) certificate to verify the server's certificate with.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The name the server's certificate must carry.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// The server's process id: the CPU time and memory of it and its descendants are reported.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The server's name in the results.
    #[arg(long, default_value = "poplar")]
    label: String,
    /// Append the figures to this file as JSON lines.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl ServerArgs {
    fn dialer(&self) -> Result<Dialer> {
        let mode = match self.tls {
            TlsArg::None => TlsMode::None,
            TlsArg::Implicit => TlsMode::Implicit,
            TlsArg::Starttls => TlsMode::Starttls,
        };
        let trust = pop3_fetch::Trust::from_settings(None, self.ca_file.as_deref())?;
        Ok(Dialer::new(self.server, mode, &trust, &self.server_name)?)
    }

    /// The name of a load in the results, e.g. `session tls`.
    fn case(&self, load: &str) -> String {
        let tls = match self.tls {
            TlsArg::None => "plain",
            TlsArg::Implicit => "tls",
            TlsArg::Starttls => "stls",
        };
        format!("{load} {tls}")
    }

    fn report(&self, case: &str) -> report::Report {
        report::Report::new(&self.label, case)
    }

    fn usage(&self) -> Option<report::Usage> {
        self.server_pid.and_then(report::tree_usage)
    }
}

#[derive(Debug, Args)]
pub(crate) struct TableArgs {
    /// The results file (JSON lines written by --json).
    results: PathBuf,
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

fn run(cmd: BenchCommand) -> Result<ExitCode> {
    let runtime = || tokio::runtime::Runtime::new().context("cannot start the async runtime");
    match cmd {
        BenchCommand::Fill(args) => fill(&args),
        BenchCommand::Session(args) => runtime()?.block_on(load::session(args)),
        BenchCommand::Retr(args) => runtime()?.block_on(load::retr(args)),
        BenchCommand::Idle(args) => runtime()?.block_on(load::idle(args)),
        BenchCommand::Hold(args) => runtime()?.block_on(load::hold(args)),
        BenchCommand::Open(args) => runtime()?.block_on(load::open(args)),
        BenchCommand::Loopback(args) => load::loopback(&args),
        BenchCommand::Lmtp(args) => runtime()?.block_on(load::lmtp(args)),
        BenchCommand::Login(args) => runtime()?.block_on(load::login(args)),
        BenchCommand::Penalty(args) => runtime()?.block_on(load::penalty(args)),
        BenchCommand::Table(args) => {
            let results = std::fs::read_to_string(&args.results)
                .with_context(|| format!("cannot read {}", args.results.display()))?;
            print!("{}", report::table(&results)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn fill(args: &FillArgs) -> Result<ExitCode> {
    use pop3_store::maildir::writer::{Folder, Writer};
    use std::io::Write as _;
    /// Messages made durable together (each holds a descriptor until committed).
    const BATCH: u64 = 256;
    let store = pop3_store::MaildirStore::new(args.data_dir.join("mail"), "bench");
    let writer = Writer::open(&store.maildir_path(&args.user)?, "bench")?;
    let line = "The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    let started = Instant::now();
    let mut batch = Vec::new();
    for i in 0..args.messages {
        let mut msg = format!("From: bench@example.org\r\nSubject: message {i}\r\n\r\n");
        while msg.len() + line.len() <= args.size {
            msg.push_str(line);
        }
        // Ends with a whole line, as every message that came through SMTP does.
        if let Some(pad) = args.size.checked_sub(msg.len() + 2) {
            msg.push_str(&"x".repeat(pad));
            msg.push_str("\r\n");
        }
        msg.truncate(args.size);
        let mut draft = writer.draft(&writer.unique_base(), u64::MAX)?;
        draft.write_all(msg.as_bytes())?;
        batch.push(draft.finish()?);
        if batch.len() as u64 == BATCH || i + 1 == args.messages {
            writer.commit(std::mem::take(&mut batch), Folder::New)?;
        }
    }
    println!(
        "wrote {} messages of {} octets to {} in {:.1?}",
        args.messages,
        args.size,
        writer.dir().display(),
        started.elapsed()
    );
    Ok(ExitCode::SUCCESS)
}
